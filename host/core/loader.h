/* host/core/loader.h: loading, verifying and driving plugins through their lifecycle
 * (load -> verify -> init -> start -> stop -> fini -> unload). */
#ifndef BW_LOADER_H
#define BW_LOADER_H

#include "host.h"

#include <bulwark/plugin.h>
#include <ltdl.h>

enum bw_plugin_state {
	BW_PS_LOADED = 0,
	BW_PS_INITIALIZED,
	BW_PS_RUNNING,
	BW_PS_FAILED,
	BW_PS_STOPPED,
};

struct bw_timer;

struct bw_plugin_ctx {
	struct bw_host *host;
	char name[65];
	const struct bw_plugin *desc;
	lt_dlhandle handle;
	void *instance;
	bool required;
	int state;
	bool in_init;
	char error[640];
	char detail[256];
	bool degraded;
	json_t *capabilities; /* array of kind names */
	struct bw_timer *timers;
};

struct bw_capability {
	char kind[32];
	const void *ops;
	size_t ops_size;
	void *ops_arg;
	struct bw_plugin_ctx *ctx;
};

const char *bw_plugin_state_name(int state);

/* Opens `<dir>/<name>.so` and verifies it. Refusals (BW_E_ABI, BW_E_DENIED, BW_E_NOTFOUND,
 * BW_E_INVALID) name the file and the reason: relative directory, file or directory writable
 * by group or others or owned by someone other than root or us, not a regular file, dlopen
 * failure, missing descriptor symbol, descriptor too small, other ABI major, newer minor, a
 * name that differs from the file's. */
int bw_plugin_open(const char *dir, const char *name, lt_dlhandle *handle, const struct bw_plugin **desc,
                   bw_error *err);

bw_plugins *bw_plugins_new(struct bw_host *host);
void bw_plugins_free(bw_plugins *ps); /* fini + unload what is left */

/* Opens every enabled plugin and fills its settings. A required plugin that fails makes this
 * fail; others are marked failed (reported in /healthz) and skipped. */
int bw_plugins_load(bw_plugins *ps, const bw_config *cfg, const char *dir, bw_error *err);
/* Checks the config sections against host sections and loaded plugins (unknown = error). */
int bw_plugins_check_sections(bw_plugins *ps, const bw_config *cfg, bw_error *err);
int bw_plugins_init(bw_plugins *ps, bw_error *err);
int bw_plugins_start(bw_plugins *ps, bw_error *err);
/* Calls stop in reverse order; returns true when every plugin has stopped (false: some
 * answered BW_E_BUSY; call again later). */
bool bw_plugins_stop(bw_plugins *ps);
void bw_plugins_fini(bw_plugins *ps);

size_t bw_plugins_count(const bw_plugins *ps);
struct bw_plugin_ctx *bw_plugins_at(bw_plugins *ps, size_t i);
/* [{"name","version","description","state","required","capabilities","detail","error"}], new ref. */
json_t *bw_plugins_json(bw_plugins *ps);
size_t bw_plugins_failed(const bw_plugins *ps);

/* Capabilities registered by kind, in registration order. */
size_t bw_plugins_capability_count(bw_plugins *ps, const char *kind);
const struct bw_capability *bw_plugins_capability(bw_plugins *ps, const char *kind, size_t i);
int bw_plugins_capability_add(bw_plugins *ps, const struct bw_capability *cap, bw_error *err);

/* The host services table handed to plugins (plugin_api.c). */
const struct bw_host_api *bw_host_api_table(void);
/* Cancels a plugin's timers and subscriptions (before fini). */
void bw_plugin_ctx_release(struct bw_plugin_ctx *ctx);

#endif
