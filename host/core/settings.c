/* host/core/settings.c: field tables and defaults of the host's own settings. */
#include "settings.h"

#include "log.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(type, key, def, st, member, doc, flags, min, max)                                                            \
	{                                                                                                              \
		type, key, def, offsetof(st, member), doc, flags, min, max                                             \
	}

typedef __typeof__(((struct bw_settings *)0)->server) server_t;
typedef __typeof__(((struct bw_settings *)0)->listen) listen_t;
typedef __typeof__(((struct bw_settings *)0)->tls) tls_t;
typedef __typeof__(((struct bw_settings *)0)->database) database_t;
typedef __typeof__(((struct bw_settings *)0)->log) log_t;
typedef __typeof__(((struct bw_settings *)0)->limits) limits_t;
typedef __typeof__(((struct bw_settings *)0)->admin) admin_t;
typedef __typeof__(((struct bw_settings *)0)->agent) agent_t;

static const struct bw_config_field server_fields[] = {
    F(BW_FIELD_PATH, "var_dir", "\"/var/lib/bulwark\"", server_t, var_dir,
      "Directory for the database, generated TLS files and the initial administrator password.", 0, 0, 0),
    F(BW_FIELD_PATH, "plugin_dir", "\"" BW_DEFAULT_PLUGIN_DIR "\"", server_t, plugin_dir,
      "The only directory plugins are loaded from (by absolute path; it must not be writable by group or others).", 0,
      0, 0),
    F(BW_FIELD_INT, "workers", "4", server_t, workers, "Threads of the work queue for blocking calls.", 0, 1, 64),
    F(BW_FIELD_DURATION, "shutdown_timeout", "\"10s\"", server_t, shutdown_timeout_ms,
      "How long a graceful shutdown waits for requests and plugins to drain.", 0, 0, 600000),
    BW_FIELD_END};

static const struct bw_config_field listen_fields[] = {
    F(BW_FIELD_STRINGS, "agent", "{\"0.0.0.0:8443\", \"[::]:8443\"}", listen_t, agent,
      "Agent listener addresses: \"host:port\" or \"[v6]:port\".", 0, 0, 0),
    F(BW_FIELD_STRINGS, "admin", "{\"127.0.0.1:8444\", \"[::1]:8444\"}", listen_t, admin,
      "Admin listener addresses (REST API, /healthz, /metrics); keep them private.", 0, 0, 0),
    BW_FIELD_END};

static const struct bw_config_field tls_fields[] = {
    F(BW_FIELD_PATH, "certificate", NULL, tls_t, certificate,
      "Server certificate chain (PEM); default <var_dir>/tls/server.pem.", 0, 0, 0),
    F(BW_FIELD_PATH, "key", NULL, tls_t, key, "Server private key (PEM); default <var_dir>/tls/server.key.", 0, 0, 0),
    F(BW_FIELD_PATH, "ca", NULL, tls_t, ca, "CA certificate clients trust (PEM); default <var_dir>/tls/ca.pem.", 0, 0,
      0),
    F(BW_FIELD_PATH, "ca_key", NULL, tls_t, ca_key,
      "CA private key used to generate certificates; default <var_dir>/tls/ca.key.", 0, 0, 0),
    F(BW_FIELD_BOOL, "generate", "false", tls_t, generate,
      "Create a self-signed ECDSA P-256 CA and server certificate when the files are missing.", 0, 0, 0),
    F(BW_FIELD_STRINGS, "names", NULL, tls_t, names,
      "Extra DNS names or IP addresses for a generated server certificate (localhost, 127.0.0.1 and ::1 are always "
      "in).",
      0, 0, 0),
    BW_FIELD_END};

static const struct bw_config_field database_fields[] = {
    F(BW_FIELD_PATH, "path", NULL, database_t, path, "SQLite database file; default <var_dir>/bulwark.db.", 0, 0, 0),
    BW_FIELD_END};

static const struct bw_config_field log_fields[] = {
    F(BW_FIELD_STRING, "level", "\"info\"", log_t, level, "error, warn, info or debug (changes on SIGHUP).", 0, 0, 0),
    F(BW_FIELD_STRING, "format", "\"text\"", log_t, format, "text or json (one JSON object per line).", 0, 0, 0),
    BW_FIELD_END};

static const struct bw_config_field limits_fields[] = {
    F(BW_FIELD_INT, "max_header_bytes", "16384", limits_t, max_header_bytes,
      "Largest request header block accepted (bytes).", 0, 1024, 1048576),
    F(BW_FIELD_INT, "max_body_bytes", "1048576", limits_t, max_body_bytes, "Largest request body accepted (bytes).", 0,
      1024, 1073741824),
    F(BW_FIELD_INT, "max_connections", "10000", limits_t, max_connections,
      "Open connections per listener; past it the listener stops accepting until one closes.", 0, 1, 1000000),
    F(BW_FIELD_DURATION, "request_timeout", "\"30s\"", limits_t, request_timeout_ms,
      "Idle and read timeout of a connection.", 0, 1000, 3600000),
    BW_FIELD_END};

static const struct bw_config_field admin_fields[] = {
    F(BW_FIELD_DURATION, "session_ttl", "\"12h\"", admin_t, session_ttl_ms, "Lifetime of a login session token.", 0,
      60000, 2592000000),
    F(BW_FIELD_INT, "max_failures_per_account", "5", admin_t, max_failures_per_account,
      "Failed logins for one account within failure_window before further attempts are refused.", 0, 1, 1000),
    F(BW_FIELD_INT, "max_failures_per_address", "20", admin_t, max_failures_per_address,
      "Failed logins from one client address within failure_window before further attempts are refused.", 0, 1, 100000),
    F(BW_FIELD_DURATION, "failure_window", "\"15m\"", admin_t, failure_window_ms,
      "Window over which failed logins are counted.", 0, 1000, 86400000),
    F(BW_FIELD_BOOL, "metrics_require_auth", "false", admin_t, metrics_require_auth,
      "Require a session or API token (read-only is enough) for GET /metrics.", 0, 0, 0),
    BW_FIELD_END};

static const struct bw_config_field agent_fields[] = {
    F(BW_FIELD_PATH, "device_ca", NULL, agent_t, device_ca,
      "Device CA certificate (created at first start); default <var_dir>/tls/device-ca.pem.", 0, 0, 0),
    F(BW_FIELD_PATH, "device_ca_key", NULL, agent_t, device_ca_key,
      "Device CA private key (mode 0600); default <var_dir>/tls/device-ca.key.", 0, 0, 0),
    F(BW_FIELD_DURATION, "cert_validity", "\"365d\"", agent_t, cert_validity_ms,
      "Lifetime of a device certificate issued at enrollment or renewal.", 0, 3600000, 315360000000),
    F(BW_FIELD_DURATION, "renew_before", "\"30d\"", agent_t, renew_before_ms,
      "Devices are asked to renew their certificate this long before it expires.", 0, 0, 315360000000),
    F(BW_FIELD_DURATION, "checkin_interval", "\"5m\"", agent_t, checkin_interval_ms, "How often devices check in.", 0,
      10000, 86400000),
    F(BW_FIELD_DURATION, "ack_timeout", "\"10m\"", agent_t, ack_timeout_ms,
      "A command sent and not acknowledged within this time is delivered again.", 0, 1000, 604800000),
    F(BW_FIELD_DURATION, "out_of_sync_after", "\"7d\"", agent_t, out_of_sync_after_ms,
      "A device not seen for this long is shown as out of sync.", 0, 60000, 31536000000),
    F(BW_FIELD_DURATION, "events_retention", "\"90d\"", agent_t, events_retention_ms,
      "Device event logs older than this are purged (checked hourly).", 0, 3600000, 315360000000),
    F(BW_FIELD_DURATION, "command_ttl", "\"7d\"", agent_t, command_ttl_ms, "Default expiry of a queued command.", 0,
      60000, 31536000000),
    F(BW_FIELD_DURATION, "policy_timeout", "\"1h\"", agent_t, policy_timeout_ms,
      "A device that has not applied its current policy this long after it was sent is shown as out of sync and "
      "gets sync_policy again (and again after each further period).",
      0, 1000, 31536000000),
    F(BW_FIELD_STRINGS, "trusted_proxies", "{}", agent_t, trusted_proxies,
      "Addresses of TLS-terminating proxies allowed to pass a device certificate in the Client-Cert header (RFC 9440).",
      0, 0, 0),
    BW_FIELD_END};

const struct bw_settings_section bw_settings_sections[] = {
    {"server", "Server (`server`)", server_fields, offsetof(struct bw_settings, server)},
    {"listen", "Listeners (`listen`)", listen_fields, offsetof(struct bw_settings, listen)},
    {"tls", "TLS (`tls`)", tls_fields, offsetof(struct bw_settings, tls)},
    {"database", "Database (`database`)", database_fields, offsetof(struct bw_settings, database)},
    {"log", "Logging (`log`)", log_fields, offsetof(struct bw_settings, log)},
    {"limits", "Limits (`limits`)", limits_fields, offsetof(struct bw_settings, limits)},
    {"admin", "Administration (`admin`)", admin_fields, offsetof(struct bw_settings, admin)},
    {"agent", "Devices and the agent protocol (`agent`)", agent_fields, offsetof(struct bw_settings, agent)},
    {NULL, NULL, NULL, 0}};

bool bw_settings_is_host_section(const char *name)
{
	for (const struct bw_settings_section *s = bw_settings_sections; s->name; s++)
		if (strcmp(s->name, name) == 0)
			return true;
	return false;
}

static char *under(const char *dir, const char *name)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s", dir, name) < 0)
		return NULL;
	return p;
}

int bw_settings_load(const bw_config *cfg, struct bw_settings *s, bw_error *err)
{
	memset(s, 0, sizeof *s);
	for (const struct bw_settings_section *sec = bw_settings_sections; sec->name; sec++) {
		int rc = bw_config_apply(cfg, sec->name, sec->fields, (char *)s + sec->offset, err);
		if (rc != BW_OK)
			return rc;
	}
	char where[300];
	if (bw_log_level_parse(s->log.level) < 0)
		return bw_error_set(err, BW_E_CONFIG, "%s: log.level: expected error, warn, info or debug, got '%s'",
		                    bw_config_where(cfg, "log", "level", where, sizeof where), s->log.level);
	if (strcmp(s->log.format, "text") != 0 && strcmp(s->log.format, "json") != 0)
		return bw_error_set(err, BW_E_CONFIG, "%s: log.format: expected text or json, got '%s'",
		                    bw_config_where(cfg, "log", "format", where, sizeof where), s->log.format);
	if (s->listen.agent.count == 0 || s->listen.admin.count == 0)
		return bw_error_set(err, BW_E_CONFIG,
		                    "%s: listen: the agent and admin listeners need at least one address each",
		                    bw_config_path(cfg));
	const char *v = s->server.var_dir;
	if (!s->tls.certificate)
		s->tls.certificate = under(v, "tls/server.pem");
	if (!s->tls.key)
		s->tls.key = under(v, "tls/server.key");
	if (!s->tls.ca)
		s->tls.ca = under(v, "tls/ca.pem");
	if (!s->tls.ca_key)
		s->tls.ca_key = under(v, "tls/ca.key");
	if (!s->database.path)
		s->database.path = under(v, "bulwark.db");
	if (!s->agent.device_ca)
		s->agent.device_ca = under(v, "tls/device-ca.pem");
	if (!s->agent.device_ca_key)
		s->agent.device_ca_key = under(v, "tls/device-ca.key");
	if (!s->tls.certificate || !s->tls.key || !s->tls.ca || !s->tls.ca_key || !s->database.path ||
	    !s->agent.device_ca || !s->agent.device_ca_key)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	return BW_OK;
}

void bw_settings_free(struct bw_settings *s)
{
	for (const struct bw_settings_section *sec = bw_settings_sections; sec->name; sec++)
		bw_config_fields_free(sec->fields, (char *)s + sec->offset);
	memset(s, 0, sizeof *s);
}
