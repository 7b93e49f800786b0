/* host/core/config.h: the configuration file: Lua evaluated in a sandbox, then validated
 * section by section against typed field tables (the host's own and each plugin's). */
#ifndef BW_CONFIG_H
#define BW_CONFIG_H

#include <bulwark/errors.h>
#include <bulwark/plugin.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct bw_config bw_config;

/* One entry of `plugins = { "name", { "name2", required = true } }`. */
struct bw_plugin_entry {
	const char *name;
	bool required;
	const char *file; /* where it was listed */
	int line;
};

/* A top-level key of the file (every top-level key except `plugins` is a section table). */
struct bw_config_section {
	const char *name;
	const char *file;
	int line;
};

/* Evaluates `path` and the files it includes. Sandbox: no io, os, require, debug, load of
 * bytecode, dofile/loadfile; the helpers `include "glob"`, `env "NAME"` and `file "path"` are
 * provided. Errors (syntax, runtime, a section set twice, a non-table section, env unset,
 * unreadable file) come back as BW_E_CONFIG with "file:line: message". */
bw_config *bw_config_load(const char *path, bw_error *err);
void bw_config_free(bw_config *cfg);

/* Absolute directory of the main config file; relative paths are resolved against it. */
const char *bw_config_base_dir(const bw_config *cfg);
/* Absolute path of the main config file. */
const char *bw_config_path(const bw_config *cfg);

size_t bw_config_plugin_count(const bw_config *cfg);
const struct bw_plugin_entry *bw_config_plugin(const bw_config *cfg, size_t i);

size_t bw_config_section_count(const bw_config *cfg);
const struct bw_config_section *bw_config_section_at(const bw_config *cfg, size_t i);
bool bw_config_has_section(const bw_config *cfg, const char *name);
/* "file:line" of `section.key` (of the section when key is NULL or absent; the main file
 * when the section is absent), for errors found after bw_config_apply. Returns buf. */
const char *bw_config_where(const bw_config *cfg, const char *section, const char *key, char *buf, size_t len);

/* Fills `instance` from section `section` using `fields` (defaults for what is absent, also
 * when the section is absent). Errors, BW_E_CONFIG, "file:line: section.key: reason":
 * unknown key, wrong type, missing required setting, out of bounds, bad duration. On error
 * the instance is left with whatever was filled; call bw_config_fields_free anyway. */
int bw_config_apply(const bw_config *cfg, const char *section, const struct bw_config_field *fields, void *instance,
                    bw_error *err);
/* Frees the strings and lists that bw_config_apply stored in `instance`. */
void bw_config_fields_free(const struct bw_config_field *fields, void *instance);

/* Parses a duration ("250ms", "30s", "5m", "2h", "1d", or a plain number of seconds) into ms. */
int bw_duration_parse(const char *text, int64_t *out_ms);

/* Markdown reference for a field table: a heading `### title`, then a table of key, type,
 * default, required and doc. Caller frees. */
char *bw_config_fields_markdown(const char *section, const char *title, const struct bw_config_field *fields);

#endif
