/* bulwark/plugin.h: the plugin descriptor, its lifecycle and its typed settings table (ABI v1).
 *
 * A plugin is a shared object `<name>.so` in the configured plugin directory that exports
 * exactly one symbol, the const descriptor `bw_plugin_<name>` (use BW_PLUGIN_DEFINE).
 * The host refuses a descriptor whose abi_major differs from its own, whose abi_minor is
 * newer than its own, or whose size is smaller than the v1 descriptor.
 *
 * Lifecycle: load -> verify -> init -> start -> ... -> stop -> fini -> unload.
 *   init:  gets the validated settings in a host-allocated, zeroed instance of
 *          `instance_size` bytes; may register capabilities, routes, timers and event
 *          subscriptions (only here). Must not open network connections yet.
 *   start: after every plugin's init; open connections, start work.
 *   stop:  drain; return BW_E_BUSY to ask for more time (the host asks again, up to its
 *          shutdown deadline, then calls fini anyway).
 *   fini:  free what the plugin allocated; the host frees the instance and its settings. */
#ifndef BULWARK_PLUGIN_H
#define BULWARK_PLUGIN_H

#include <bulwark/errors.h>
#include <bulwark/host.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BW_ABI_MAJOR 1
#define BW_ABI_MINOR 2 /* 1.1: device_get, device_list, command_queue; 1.2: bw_http_response.retryable */

#if defined(__GNUC__)
#define BW_EXPORT __attribute__((visibility("default")))
#else
#define BW_EXPORT
#endif

/* Types of settings; the host converts the config value and stores it at `offset` in the
 * instance struct, with the C type given here. Strings are owned by the host. */
enum bw_field_type {
	BW_FIELD_STRING = 1,   /* char *            a string */
	BW_FIELD_INT = 2,      /* int64_t           an integer (min/max checked when min < max) */
	BW_FIELD_BOOL = 3,     /* bool              true or false */
	BW_FIELD_DOUBLE = 4,   /* double            a number */
	BW_FIELD_STRINGS = 5,  /* struct bw_strings a list of strings */
	BW_FIELD_SECRET = 6,   /* char *            a string that is never logged; write env "NAME" or file "path" */
	BW_FIELD_DURATION = 7, /* int64_t (ms)      seconds as a number, or "500ms", "30s", "5m", "2h", "1d" */
	BW_FIELD_PATH = 8      /* char *            a file path; relative paths are resolved against the config file */
};

#define BW_FIELD_REQUIRED 0x1u /* the setting must be present */

struct bw_strings {
	size_t count;
	char **items;
};

struct bw_config_field {
	uint32_t type;             /* enum bw_field_type */
	const char *key;           /* setting name; NULL ends the table */
	const char *default_value; /* textual default in config syntax ("42", "true", "\"text\"", "30s"), or NULL */
	size_t offset;             /* offsetof(instance struct, member) */
	const char *doc;           /* one sentence for the generated reference */
	uint32_t flags;            /* BW_FIELD_REQUIRED */
	int64_t min, max;          /* bounds for INT and DURATION (in ms) when min < max */
};

#define BW_FIELD_END                                                                                                   \
	{                                                                                                              \
		0, NULL, NULL, 0, NULL, 0, 0, 0                                                                        \
	}

struct bw_plugin {
	uint16_t abi_major; /* BW_ABI_MAJOR the plugin was built with */
	uint16_t abi_minor; /* BW_ABI_MINOR the plugin was built with */
	uint32_t size;      /* sizeof(struct bw_plugin) the plugin was built with */
	const char *name;   /* must equal the file name without .so: [a-z0-9_]{1,64} */
	const char *version;
	const char *description;
	size_t instance_size;                 /* bytes the host allocates (zeroed) per instance */
	const struct bw_config_field *fields; /* settings table, ended by BW_FIELD_END; may be NULL */
	int (*init)(bw_plugin_ctx *ctx, const struct bw_host_api *host, void *instance, bw_error *err);
	int (*start)(bw_plugin_ctx *ctx, void *instance, bw_error *err); /* may be NULL */
	int (*stop)(bw_plugin_ctx *ctx, void *instance);                 /* may be NULL; BW_OK or BW_E_BUSY */
	void (*fini)(bw_plugin_ctx *ctx, void *instance);                /* may be NULL */
};

/* Defines the exported descriptor; use once per plugin:
 *   BW_PLUGIN_DEFINE(example_hello) = { .name = "example_hello", ... };
 * (abi fields and size are filled in by the macro's designated initialisers below). */
#define BW_PLUGIN_DEFINE(id) BW_EXPORT const struct bw_plugin bw_plugin_##id
#define BW_PLUGIN_HEADER     .abi_major = BW_ABI_MAJOR, .abi_minor = BW_ABI_MINOR, .size = sizeof(struct bw_plugin)

#ifdef __cplusplus
}
#endif
#endif
