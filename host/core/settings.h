/* host/core/settings.h: the host's own settings (config sections server, listen, tls, database,
 * log, limits, admin), declared as field tables like a plugin's so one validator and one
 * documentation generator serve both. */
#ifndef BW_SETTINGS_H
#define BW_SETTINGS_H

#include "config.h"

struct bw_settings {
	struct {
		char *var_dir;
		char *plugin_dir;
		int64_t workers;
		int64_t shutdown_timeout_ms;
	} server;
	struct {
		struct bw_strings agent;
		struct bw_strings admin;
	} listen;
	struct {
		char *certificate, *key, *ca, *ca_key;
		bool generate;
		struct bw_strings names;
	} tls;
	struct {
		char *path;
	} database;
	struct {
		char *level, *format;
	} log;
	struct {
		int64_t max_header_bytes, max_body_bytes, max_connections, request_timeout_ms;
	} limits;
	struct {
		int64_t session_ttl_ms;
		int64_t max_failures_per_account, max_failures_per_address, failure_window_ms;
		bool metrics_require_auth;
	} admin;
	struct {
		char *device_ca, *device_ca_key;
		int64_t cert_validity_ms, renew_before_ms, checkin_interval_ms, ack_timeout_ms, out_of_sync_after_ms,
		    events_retention_ms, command_ttl_ms, policy_timeout_ms;
		struct bw_strings trusted_proxies;
	} agent;
};

struct bw_settings_section {
	const char *name;
	const char *title;
	const struct bw_config_field *fields;
	size_t offset; /* of the section's struct in struct bw_settings */
};

/* The host's sections, ended by a NULL name. */
extern const struct bw_settings_section bw_settings_sections[];

/* Validates and fills every host section, then applies defaults that depend on others
 * (database path and TLS files under var_dir, listeners). BW_E_CONFIG with file:line. */
int bw_settings_load(const bw_config *cfg, struct bw_settings *s, bw_error *err);
void bw_settings_free(struct bw_settings *s);
bool bw_settings_is_host_section(const char *name);

#endif
