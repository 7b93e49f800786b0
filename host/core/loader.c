/* host/core/loader.c: plugin loading (libltdl, local symbols, absolute paths only), ABI and
 * permission checks, settings, and the lifecycle calls in order. */
#include "loader.h"

#include "log.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_PLUGINS  64
#define MAX_CAPS     128
#define MAX_INSTANCE (1u << 20)

/* The v1 descriptor ends with fini; anything smaller cannot be a v1 descriptor. */
#define BW_PLUGIN_V1_SIZE (offsetof(struct bw_plugin, fini) + sizeof(void (*)(void)))

struct bw_plugins {
	struct bw_host *host;
	struct bw_plugin_ctx *items[MAX_PLUGINS];
	size_t n;
	struct bw_capability caps[MAX_CAPS];
	size_t ncaps;
};

const char *bw_plugin_state_name(int state)
{
	static const char *const names[] = {"loaded", "initialized", "running", "failed", "stopped"};
	return state >= 0 && state <= BW_PS_STOPPED ? names[state] : "unknown";
}

static bool name_valid(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len > 64)
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	return true;
}

static int check_owner_mode(const char *what, const char *path, const struct stat *st, bw_error *err)
{
	if (st->st_uid != 0 && st->st_uid != geteuid())
		return bw_error_set(err, BW_E_DENIED,
		                    "refusing plugin %s %s: owned by uid %u, not by root or the service user (uid %u)",
		                    what, path, (unsigned)st->st_uid, (unsigned)geteuid());
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return bw_error_set(
		    err, BW_E_DENIED, "refusing plugin %s %s: writable by %s (mode %04o); run chmod go-w on it", what,
		    path, (st->st_mode & S_IWOTH) ? "others" : "group", (unsigned)(st->st_mode & 07777));
	return BW_OK;
}

static pthread_once_t g_ltdl_once = PTHREAD_ONCE_INIT;
static void ltdl_init_once(void)
{
	lt_dlinit();
	/* Never search: every plugin is opened by absolute path. */
	lt_dlsetsearchpath("");
}

int bw_plugin_open(const char *dir, const char *name, lt_dlhandle *handle, const struct bw_plugin **desc, bw_error *err)
{
	*handle = NULL;
	*desc = NULL;
	if (!name_valid(name))
		return bw_error_set(err, BW_E_INVALID, "invalid plugin name '%s' (use a-z, 0-9 and _)", name);
	if (!dir || dir[0] != '/')
		return bw_error_set(err, BW_E_DENIED, "plugin directory '%s' is not an absolute path", dir ? dir : "");
	char path[PATH_MAX];
	if ((size_t)snprintf(path, sizeof path, "%s/%s.so", dir, name) >= sizeof path)
		return bw_error_set(err, BW_E_INVALID, "plugin path too long");
	struct stat st;
	if (stat(dir, &st) != 0)
		return bw_error_set(err, BW_E_NOTFOUND, "plugin directory %s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return bw_error_set(err, BW_E_INVALID, "plugin directory %s is not a directory", dir);
	int rc = check_owner_mode("directory", dir, &st, err);
	if (rc != BW_OK)
		return rc;
	if (lstat(path, &st) != 0)
		return bw_error_set(err, BW_E_NOTFOUND, "plugin %s: %s (is '%s' built and in the plugin directory?)",
		                    path, strerror(errno), name);
	if (!S_ISREG(st.st_mode))
		return bw_error_set(err, BW_E_DENIED,
		                    "refusing plugin %s: not a regular file (symbolic links are refused)", path);
	if ((rc = check_owner_mode("file", path, &st, err)) != BW_OK)
		return rc;

	pthread_once(&g_ltdl_once, ltdl_init_once);
	lt_dladvise advise;
	lt_dladvise_init(&advise);
	lt_dladvise_local(&advise); /* plugins never see each other's symbols */
	lt_dlhandle h = lt_dlopenadvise(path, advise);
	lt_dladvise_destroy(&advise);
	if (!h)
		return bw_error_set(err, BW_E_INVALID, "cannot load plugin %s: %s", path, lt_dlerror());
	char sym[96];
	snprintf(sym, sizeof sym, "bw_plugin_%s", name);
	const struct bw_plugin *d = lt_dlsym(h, sym);
	if (!d) {
		lt_dlclose(h);
		return bw_error_set(err, BW_E_ABI, "plugin %s does not export the descriptor symbol %s", path, sym);
	}
	if (d->size < BW_PLUGIN_V1_SIZE) {
		unsigned sz = d->size;
		lt_dlclose(h);
		return bw_error_set(err, BW_E_ABI, "plugin %s: descriptor is %u bytes, smaller than the %zu of ABI v1",
		                    path, sz, (size_t)BW_PLUGIN_V1_SIZE);
	}
	if (d->abi_major != BW_ABI_MAJOR) {
		unsigned ma = d->abi_major, mi = d->abi_minor;
		lt_dlclose(h);
		return bw_error_set(err, BW_E_ABI,
		                    "plugin %s was built for plugin ABI %u.%u; this host implements ABI %d.%d (major "
		                    "versions must match)",
		                    path, ma, mi, BW_ABI_MAJOR, BW_ABI_MINOR);
	}
	if (d->abi_minor > BW_ABI_MINOR) {
		unsigned ma = d->abi_major, mi = d->abi_minor;
		lt_dlclose(h);
		return bw_error_set(err, BW_E_ABI,
		                    "plugin %s needs plugin ABI %u.%u, newer than this host's %d.%d; upgrade Bulwark",
		                    path, ma, mi, BW_ABI_MAJOR, BW_ABI_MINOR);
	}
	if (!d->name || strcmp(d->name, name) != 0 || !d->init || d->instance_size > MAX_INSTANCE) {
		lt_dlclose(h);
		return bw_error_set(
		    err, BW_E_ABI,
		    "plugin %s: invalid descriptor (name must be '%s', init is required, instance at most "
		    "%u bytes)",
		    path, name, MAX_INSTANCE);
	}
	*handle = h;
	*desc = d;
	return BW_OK;
}

bw_plugins *bw_plugins_new(struct bw_host *host)
{
	bw_plugins *ps = calloc(1, sizeof *ps);
	if (ps)
		ps->host = host;
	return ps;
}

static void ctx_free(struct bw_plugin_ctx *c)
{
	if (!c)
		return;
	bw_plugin_ctx_release(c);
	if (c->desc && c->instance && c->desc->fields)
		bw_config_fields_free(c->desc->fields, c->instance);
	free(c->instance);
	if (c->handle)
		lt_dlclose(c->handle);
	json_decref(c->capabilities);
	free(c);
}

static void mark_failed(struct bw_plugin_ctx *c, const char *msg)
{
	c->state = BW_PS_FAILED;
	snprintf(c->error, sizeof c->error, "%s", msg);
	bw_log_error("loader", "plugin %s failed%s: %s", c->name, c->required ? " (required)" : "", msg);
}

int bw_plugins_load(bw_plugins *ps, const bw_config *cfg, const char *dir, bw_error *err)
{
	size_t n = bw_config_plugin_count(cfg);
	if (n > MAX_PLUGINS)
		return bw_error_set(err, BW_E_LIMIT, "at most %d plugins may be enabled", MAX_PLUGINS);
	for (size_t i = 0; i < n; i++) {
		const struct bw_plugin_entry *e = bw_config_plugin(cfg, i);
		struct bw_plugin_ctx *c = calloc(1, sizeof *c);
		if (!c)
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		c->host = ps->host;
		snprintf(c->name, sizeof c->name, "%s", e->name);
		c->required = e->required;
		c->capabilities = json_array();
		ps->items[ps->n++] = c;
		bw_error perr = {0};
		if (bw_plugin_open(dir, e->name, &c->handle, &c->desc, &perr) != BW_OK) {
			mark_failed(c, perr.message);
			if (c->required)
				return bw_error_set(err, perr.code, "required plugin %s: %s", c->name, perr.message);
			continue;
		}
		c->instance = calloc(1, c->desc->instance_size ? c->desc->instance_size : 1);
		if (!c->instance)
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		if (c->desc->fields && bw_config_apply(cfg, c->name, c->desc->fields, c->instance, &perr) != BW_OK) {
			mark_failed(c, perr.message);
			if (c->required)
				return bw_error_set(err, BW_E_CONFIG, "%s", perr.message);
			continue;
		}
		c->state = BW_PS_LOADED;
		bw_log_info("loader", "loaded plugin %s %s (ABI %u.%u)", c->name,
		            c->desc->version ? c->desc->version : "", c->desc->abi_major, c->desc->abi_minor);
	}
	return BW_OK;
}

int bw_plugins_check_sections(bw_plugins *ps, const bw_config *cfg, bw_error *err)
{
	(void)ps;
	for (size_t i = 0; i < bw_config_section_count(cfg); i++) {
		const struct bw_config_section *s = bw_config_section_at(cfg, i);
		if (bw_settings_is_host_section(s->name))
			continue;
		/* Checked against the config's own plugin list, so that a reloaded file that enables
		 * a new plugin and configures it is judged as a restart would judge it. */
		bool known = false;
		for (size_t k = 0; k < bw_config_plugin_count(cfg) && !known; k++)
			known = strcmp(bw_config_plugin(cfg, k)->name, s->name) == 0;
		if (!known)
			return bw_error_set(err, BW_E_CONFIG,
			                    "%s:%d: unknown setting '%s': not a host section and not an enabled plugin "
			                    "(add it to plugins = { ... } to configure it)",
			                    s->file, s->line, s->name);
	}
	return BW_OK;
}

int bw_plugins_init(bw_plugins *ps, bw_error *err)
{
	for (size_t i = 0; i < ps->n; i++) {
		struct bw_plugin_ctx *c = ps->items[i];
		if (c->state != BW_PS_LOADED)
			continue;
		bw_error perr = {0};
		c->in_init = true;
		int rc = c->desc->init(c, bw_host_api_table(), c->instance, &perr);
		c->in_init = false;
		if (rc != BW_OK) {
			char msg[600];
			snprintf(msg, sizeof msg, "init failed (%s): %s", bw_status_name(rc),
			         perr.message[0] ? perr.message : "no message");
			bw_plugin_ctx_release(c);
			mark_failed(c, msg);
			if (c->required)
				return bw_error_set(err, rc, "required plugin %s: %s", c->name, msg);
			continue;
		}
		c->state = BW_PS_INITIALIZED;
	}
	return BW_OK;
}

int bw_plugins_start(bw_plugins *ps, bw_error *err)
{
	for (size_t i = 0; i < ps->n; i++) {
		struct bw_plugin_ctx *c = ps->items[i];
		if (c->state != BW_PS_INITIALIZED)
			continue;
		bw_error perr = {0};
		int rc = c->desc->start ? c->desc->start(c, c->instance, &perr) : BW_OK;
		if (rc != BW_OK) {
			char msg[600];
			snprintf(msg, sizeof msg, "start failed (%s): %s", bw_status_name(rc),
			         perr.message[0] ? perr.message : "no message");
			/* Its init succeeded, so it owes a fini; bw_plugins_fini skips failed plugins. */
			bw_plugin_ctx_release(c);
			if (c->desc->fini)
				c->desc->fini(c, c->instance);
			mark_failed(c, msg);
			if (c->required)
				return bw_error_set(err, rc, "required plugin %s: %s", c->name, msg);
			continue;
		}
		c->state = BW_PS_RUNNING;
		bw_log_info("loader", "plugin %s running", c->name);
	}
	return BW_OK;
}

bool bw_plugins_stop(bw_plugins *ps)
{
	bool all = true;
	for (size_t i = ps->n; i-- > 0;) {
		struct bw_plugin_ctx *c = ps->items[i];
		if (c->state != BW_PS_RUNNING && c->state != BW_PS_INITIALIZED)
			continue;
		int rc = c->desc->stop ? c->desc->stop(c, c->instance) : BW_OK;
		if (rc == BW_E_BUSY) {
			all = false;
			continue;
		}
		c->state = BW_PS_STOPPED;
		bw_log_info("loader", "plugin %s stopped", c->name);
	}
	return all;
}

void bw_plugins_fini(bw_plugins *ps)
{
	for (size_t i = ps->n; i-- > 0;) {
		struct bw_plugin_ctx *c = ps->items[i];
		if (!c->desc || c->state == BW_PS_LOADED)
			continue;
		/* Failed plugins got their fini (if any was owed) when they failed. */
		bw_plugin_ctx_release(c);
		if (c->desc->fini && c->instance && c->state != BW_PS_FAILED)
			c->desc->fini(c, c->instance);
		if (c->state != BW_PS_FAILED)
			c->state = BW_PS_STOPPED;
	}
}

void bw_plugins_free(bw_plugins *ps)
{
	if (!ps)
		return;
	for (size_t i = ps->n; i-- > 0;)
		ctx_free(ps->items[i]);
	free(ps);
}

size_t bw_plugins_count(const bw_plugins *ps)
{
	return ps->n;
}

struct bw_plugin_ctx *bw_plugins_at(bw_plugins *ps, size_t i)
{
	return i < ps->n ? ps->items[i] : NULL;
}

size_t bw_plugins_failed(const bw_plugins *ps)
{
	size_t n = 0;
	for (size_t i = 0; i < ps->n; i++)
		n += ps->items[i]->state == BW_PS_FAILED;
	return n;
}

json_t *bw_plugins_json(bw_plugins *ps)
{
	json_t *a = json_array();
	for (size_t i = 0; i < ps->n; i++) {
		struct bw_plugin_ctx *c = ps->items[i];
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:O, s:b}", "name", c->name, "version",
		                      c->desc && c->desc->version ? c->desc->version : "", "description",
		                      c->desc && c->desc->description ? c->desc->description : "", "state",
		                      bw_plugin_state_name(c->state), "required", c->required, "capabilities",
		                      c->capabilities, "degraded", c->degraded);
		json_object_set_new(o, "detail", c->detail[0] ? json_string(c->detail) : json_null());
		json_object_set_new(o, "error", c->error[0] ? json_string(c->error) : json_null());
		json_array_append_new(a, o);
	}
	return a;
}

size_t bw_plugins_capability_count(bw_plugins *ps, const char *kind)
{
	size_t n = 0;
	for (size_t i = 0; i < ps->ncaps; i++)
		n += strcmp(ps->caps[i].kind, kind) == 0 && ps->caps[i].ctx->state == BW_PS_RUNNING;
	return n;
}

const struct bw_capability *bw_plugins_capability(bw_plugins *ps, const char *kind, size_t idx)
{
	for (size_t i = 0; i < ps->ncaps; i++)
		if (strcmp(ps->caps[i].kind, kind) == 0 && ps->caps[i].ctx->state == BW_PS_RUNNING && idx-- == 0)
			return &ps->caps[i];
	return NULL;
}

int bw_plugins_capability_add(bw_plugins *ps, const struct bw_capability *cap, bw_error *err)
{
	if (ps->ncaps >= MAX_CAPS)
		return bw_error_set(err, BW_E_LIMIT, "too many capabilities (%d)", MAX_CAPS);
	ps->caps[ps->ncaps++] = *cap;
	json_array_append_new(cap->ctx->capabilities, json_string(cap->kind));
	return BW_OK;
}
