/* host/api/admin_api.c: health, metrics, login sessions, administrators, API tokens, audit
 * log and online backup on the admin listener. */
#include "admin_api.h"

#include "auth.h"
#include "crypto.h"
#include "loader.h"
#include "log.h"
#include "router.h"
#include "store_devices.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* /healthz is answered from a cached body rebuilt every second: it is polled by load
 * balancers and monitors, and must stay cheap. */
static char *g_health_body;
static size_t g_health_len;
static int g_health_status = 200;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void bw_admin_api_refresh_health(struct bw_host *h)
{
	bw_error err = {0};
	h->health.db_ok = bw_store_ping(h->store, &err) == BW_OK;
	snprintf(h->health.db_error, sizeof h->health.db_error, "%s", h->health.db_ok ? "" : err.message);
	json_t *plugins = bw_plugins_json(h->plugins);
	bool degraded = false;
	size_t i;
	json_t *p;
	json_array_foreach(plugins, i, p)
	{
		const char *state = json_string_value(json_object_get(p, "state"));
		if (strcmp(state, "running") != 0 || json_is_true(json_object_get(p, "degraded")))
			degraded = true;
		json_object_del(p, "description");
		json_object_del(p, "capabilities");
	}
	const char *status = !h->health.db_ok ? "failing" : degraded ? "degraded" : "ok";
	json_t *db = json_pack("{s:s, s:i}", "status", h->health.db_ok ? "ok" : "failing", "schema_version",
	                       h->store ? bw_store_schema_version(h->store) : 0);
	if (!h->health.db_ok)
		json_object_set_new(db, "error", json_string(h->health.db_error));
	json_t *body = json_pack("{s:s, s:s, s:I, s:o, s:o}", "status", status, "version", BW_VERSION, "uptime_s",
	                         (json_int_t)(time(NULL) - h->started_at), "database", db, "plugins", plugins);
	free(g_health_body);
	g_health_body = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	g_health_len = g_health_body ? strlen(g_health_body) : 0;
	g_health_status = h->health.db_ok ? 200 : 503;
}

void bw_admin_api_free(void)
{
	free(g_health_body);
	g_health_body = NULL;
}

static void get_healthz(struct bw_http_req *req, void *arg)
{
	(void)arg;
	if (!g_health_body)
		bw_admin_api_refresh_health(req->host);
	bw_req_reply_bytes(req, g_health_status, "application/json", g_health_body, g_health_len);
}

static void refresh_gauges(struct bw_host *h)
{
	bw_metric_set(h->m.connections, "admin", (double)bw_http_server_connections(h->admin_srv));
	if (h->agent_srv)
		bw_metric_set(h->m.connections, "agent", (double)bw_http_server_connections(h->agent_srv));
	bw_metric_set(h->m.inflight, NULL, (double)h->inflight);
	bw_metric_set(h->m.workq_pending, NULL, (double)bw_workq_pending(h->workq));
	bw_metric_set(h->m.events_dropped, NULL, (double)bw_events_dropped(h->events));
	bw_metric_set(h->m.plugins_failed, NULL, (double)bw_plugins_failed(h->plugins));
	bw_metric_set(h->m.uptime, NULL, (double)(time(NULL) - h->started_at));
	int64_t open = 0, oldest = 0;
	if (bw_store_command_stats(h->store, (int64_t)time(NULL), &open, &oldest, NULL) == BW_OK) {
		bw_metric_set(h->m.commands_open, NULL, (double)open);
		bw_metric_set(h->m.commands_oldest, NULL, (double)oldest);
	}
}

static void get_metrics(struct bw_http_req *req, void *arg)
{
	(void)arg;
	refresh_gauges(req->host);
	struct evbuffer *b = evbuffer_new();
	bw_metrics_render(req->host->metrics, b);
	size_t len = evbuffer_get_length(b);
	bw_req_reply_bytes(req, 200, "text/plain; version=0.0.4; charset=utf-8", evbuffer_pullup(b, -1), len);
	evbuffer_free(b);
}

/* /metrics may need a token (admin.metrics_require_auth): checked here, since the route's
 * role is fixed at registration and the setting changes on SIGHUP. */
static void get_metrics_maybe_auth(struct bw_http_req *req, void *arg)
{
	if (req->host->settings.admin.metrics_require_auth) {
		const char *hdr = bw_req_header(req, "Authorization");
		struct bw_token_info ti;
		char hash[65];
		if (!hdr || strncasecmp(hdr, "Bearer ", 7) != 0 || strlen(hdr + 7) > 256 ||
		    (bw_token_hash(hdr + 7, hash),
		     bw_store_token_find(req->host->store, hash, time(NULL), &ti, NULL)) != BW_OK) {
			bw_req_reply_error(req, 401, "unauthorized", "a valid token is required for /metrics");
			return;
		}
	}
	get_metrics(req, arg);
}

/* ---- helpers for JSON input */

static const char *str_field(json_t *o, const char *key, size_t maxlen, bool required, struct bw_http_req *req,
                             bool *failed)
{
	json_t *v = json_object_get(o, key);
	char msg[200];
	if (!v) {
		if (required) {
			snprintf(msg, sizeof msg, "field '%s' is required", key);
			bw_req_reply_error(req, 400, "bad_request", msg);
			*failed = true;
		}
		return NULL;
	}
	if (!json_is_string(v)) {
		snprintf(msg, sizeof msg, "field '%s' must be a string", key);
		bw_req_reply_error(req, 400, "bad_request", msg);
		*failed = true;
		return NULL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n == 0 || n > maxlen || strlen(s) != n) {
		snprintf(msg, sizeof msg, "field '%s' must be 1 to %zu characters", key, maxlen);
		bw_req_reply_error(req, 400, "bad_request", msg);
		*failed = true;
		return NULL;
	}
	return s;
}

static bool admin_name_valid(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || len > 64)
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
		      *p == '_' || *p == '-' || *p == '@'))
			return false;
	return true;
}

static json_t *body_or_reply(struct bw_http_req *req)
{
	json_t *body;
	bw_error err = {0};
	if (bw_req_json(req, &body, &err) != BW_OK) {
		bw_req_reply_error(req, 400, "invalid_json", err.message);
		return NULL;
	}
	return body;
}

/* ---- login */

void bw_admin_session_issue(struct bw_http_req *req, const char *name, const char *role)
{
	struct bw_host *h = req->host;
	char token[BW_TOKEN_LEN + 1], id[37], hash[65];
	bw_error err = {0};
	if (bw_token_new(token, &err) != BW_OK || bw_uuid_new(id, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_token_hash(token, hash);
	int64_t now = (int64_t)time(NULL);
	int64_t exp = now + h->settings.admin.session_ttl_ms / 1000;
	if (bw_store_token_create(h->store, id, name, "session", "login", role, hash, now, exp, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_auth_success(h->auth, name);
	bw_req_audit(req, name, "login", name, "success", NULL);
	bw_req_reply_json(req, 201,
	                  json_pack("{s:s, s:o, s:s, s:s}", "token", token, "expires_at", bw_json_time(exp), "user",
	                            name, "role", role));
	OPENSSL_cleanse(token, sizeof token);
}

/* Used when the account does not exist, so that a miss costs the same scrypt as a hit. */
static char *g_dummy_hash;

struct login_job {
	struct bw_http_req *req;
	char user[129];
	char *password;
	char *stored_hash;
	bool disabled, found, ok;
	char role[32];
};

static void login_work(void *arg)
{
	struct login_job *j = arg;
	j->ok = bw_password_verify(j->password, j->stored_hash ? j->stored_hash : g_dummy_hash) && j->found;
	OPENSSL_cleanse(j->password, strlen(j->password));
}

static void login_done(void *arg)
{
	struct login_job *j = arg;
	struct bw_http_req *req = j->req;
	struct bw_host *h = req->host;
	struct bw_auth_limits lim = {h->settings.admin.max_failures_per_account,
	                             h->settings.admin.max_failures_per_address, h->settings.admin.failure_window_ms};
	if (!j->ok || j->disabled) {
		bw_auth_failure(h->auth, &lim, j->user, req->peer, now_ms());
		bw_metric_add(h->m.login_failures, NULL, 1);
		bw_req_audit(req, j->user, "login", j->user, "failure",
		             !j->found     ? "unknown account"
		             : j->disabled ? "account disabled"
		                           : "wrong password");
		bw_req_reply_error(req, 401, "bad_credentials", "wrong user name or password");
		goto out;
	}
	bw_admin_session_issue(req, j->user, j->role);
out:
	free(j->password);
	free(j->stored_hash);
	free(j);
}

static void post_session(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_host *h = req->host;
	json_t *body = body_or_reply(req);
	if (!body)
		return;
	bool failed = false;
	const char *user = str_field(body, "user", 128, true, req, &failed);
	const char *password = failed ? NULL : str_field(body, "password", 1024, true, req, &failed);
	if (failed) {
		json_decref(body);
		return;
	}
	struct bw_auth_limits lim = {h->settings.admin.max_failures_per_account,
	                             h->settings.admin.max_failures_per_address, h->settings.admin.failure_window_ms};
	int64_t wait = bw_auth_blocked(h->auth, &lim, user, req->peer, now_ms());
	if (wait > 0) {
		char secs[32];
		snprintf(secs, sizeof secs, "%lld", (long long)((wait + 999) / 1000));
		evhttp_add_header(evhttp_request_get_output_headers(req->ev), "Retry-After", secs);
		bw_req_audit(req, user, "login", user, "rate_limited", NULL);
		json_decref(body);
		bw_req_reply_error(req, 429, "rate_limited", "too many failed logins; try again later");
		return;
	}
	struct login_job *j = calloc(1, sizeof *j);
	if (!j || !(j->password = strdup(password))) {
		free(j);
		json_decref(body);
		bw_req_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	j->req = req;
	snprintf(j->user, sizeof j->user, "%s", user);
	json_t *pw = json_object_get(body, "password");
	OPENSSL_cleanse((void *)json_string_value(pw), json_string_length(pw));
	json_decref(body);
	struct bw_admin a = {0};
	bw_error err = {0};
	int found = bw_store_admin_get(h->store, j->user, &a, &err);
	/* Accounts of the directory, and names no local account has, are the directory's to check. */
	if (bw_directory_available(h) &&
	    ((found == BW_OK && a.password_hash && strcmp(a.password_hash, BW_DIRECTORY_ACCOUNT) == 0) ||
	     (found != BW_OK && err.code == BW_E_NOTFOUND))) {
		bw_admin_clear(&a);
		bw_directory_login(req, j->user, j->password);
		OPENSSL_cleanse(j->password, strlen(j->password));
		free(j->password);
		free(j);
		return;
	}
	if (found == BW_OK) {
		j->found = true;
		j->disabled = a.disabled;
		j->stored_hash = a.password_hash;
		a.password_hash = NULL;
		snprintf(j->role, sizeof j->role, "%s", a.role);
	} else if (err.code != BW_E_NOTFOUND) {
		bw_admin_clear(&a);
		free(j->password);
		free(j);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_admin_clear(&a);
	if (bw_workq_submit(h->workq, login_work, login_done, j, &err) != BW_OK) {
		free(j->password);
		free(j->stored_hash);
		free(j);
		bw_req_reply_error(req, 503, "unavailable", err.message);
	}
}

static void delete_session(struct bw_http_req *req, void *arg)
{
	(void)arg;
	if (strcmp(req->auth_kind, "session") != 0) {
		bw_req_reply_error(req, 400, "bad_request",
		                   "this is an API token; revoke it with DELETE /api/v1/tokens/{id}");
		return;
	}
	bw_error err = {0};
	if (bw_store_token_delete(req->host->store, req->token_id, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "logout", req->principal, "success", NULL);
	bw_req_reply_json(req, 204, NULL);
}

static void get_whoami(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_req_reply_json(req, 200,
	                  json_pack("{s:s, s:s, s:s, s:o}", "user", req->principal, "role", bw_role_name(req->role),
	                            "auth", req->auth_kind, "expires_at", bw_json_time(req->token_expires_at)));
}

static void get_plugins(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_req_reply_json(req, 200, json_pack("{s:o}", "plugins", bw_plugins_json(req->host->plugins)));
}

/* ---- administrators */

static void get_admins(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *list;
	bw_error err = {0};
	if (bw_store_admin_list(req->host->store, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "admins", list));
}

struct hash_job {
	struct bw_http_req *req;
	char name[129], role[32];
	char *password, *hash;
	bw_error err;
};

static void hash_work(void *arg)
{
	struct hash_job *j = arg;
	bw_password_hash(j->password, &j->hash, &j->err);
	OPENSSL_cleanse(j->password, strlen(j->password));
}

static void hash_done(void *arg)
{
	struct hash_job *j = arg;
	struct bw_http_req *req = j->req;
	char id[37];
	if (!j->hash || bw_uuid_new(id, &j->err) != BW_OK ||
	    bw_store_admin_create(req->host->store, id, j->name, j->hash, j->role, &j->err) != BW_OK) {
		bw_req_audit(req, req->principal, "admin.add", j->name, "failure", j->err.message);
		bw_req_reply_bw_error(req, &j->err);
	} else {
		bw_req_audit(req, req->principal, "admin.add", j->name, "success", j->role);
		bw_req_reply_json(req, 201,
		                  json_pack("{s:s, s:s, s:o}", "name", j->name, "role", j->role, "created_at",
		                            bw_json_time((int64_t)time(NULL))));
	}
	free(j->password);
	free(j->hash);
	free(j);
}

static void post_admins(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *body = body_or_reply(req);
	if (!body)
		return;
	bool failed = false;
	const char *name = str_field(body, "name", 64, true, req, &failed);
	const char *password = failed ? NULL : str_field(body, "password", 1024, true, req, &failed);
	const char *role = failed ? NULL : str_field(body, "role", 32, false, req, &failed);
	if (failed) {
		json_decref(body);
		return;
	}
	const char *err = NULL;
	if (!admin_name_valid(name))
		err = "field 'name' may contain only letters, digits, '.', '_', '-' and '@' (1 to 64)";
	else if (strlen(password) < 12)
		err = "field 'password' must be at least 12 characters";
	else if (role && bw_role_parse(role) == BW_ROLE_NONE)
		err = "field 'role' must be \"administrator\" or \"readonly\"";
	if (err) {
		json_decref(body);
		bw_req_reply_error(req, 400, "bad_request", err);
		return;
	}
	struct hash_job *j = calloc(1, sizeof *j);
	if (!j || !(j->password = strdup(password))) {
		free(j);
		json_decref(body);
		bw_req_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	j->req = req;
	snprintf(j->name, sizeof j->name, "%s", name);
	snprintf(j->role, sizeof j->role, "%s", role ? role : "readonly"); /* least privilege by default */
	json_decref(body);
	bw_error e = {0};
	if (bw_workq_submit(req->host->workq, hash_work, hash_done, j, &e) != BW_OK) {
		free(j->password);
		free(j);
		bw_req_reply_error(req, 503, "unavailable", e.message);
	}
}

static void delete_admin(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *name = req->params[0];
	struct bw_host *h = req->host;
	if (strcmp(name, req->principal) == 0) {
		bw_req_reply_error(req, 409, "conflict", "you cannot remove your own account");
		return;
	}
	struct bw_admin a = {0};
	bw_error err = {0};
	if (bw_store_admin_get(h->store, name, &a, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bool is_admin = strcmp(a.role, "administrator") == 0;
	bw_admin_clear(&a);
	int64_t admins = 0;
	if (is_admin && bw_store_admin_count(h->store, "administrator", &admins, &err) == BW_OK && admins <= 1) {
		bw_req_reply_error(req, 409, "conflict", "cannot remove the last administrator");
		return;
	}
	if (bw_store_admin_delete(h->store, name, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "admin.remove", name, "success", NULL);
	bw_req_reply_json(req, 204, NULL);
}

/* ---- API tokens */

static void get_tokens(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *list;
	bw_error err = {0};
	if (bw_store_token_list(req->host->store, "api", &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "tokens", list));
}

static void post_tokens(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *body = body_or_reply(req);
	if (!body)
		return;
	bool failed = false;
	const char *name = str_field(body, "name", 64, true, req, &failed);
	const char *role = failed ? NULL : str_field(body, "role", 32, false, req, &failed);
	if (failed) {
		json_decref(body);
		return;
	}
	json_t *exp = json_object_get(body, "expires_in");
	int r = role ? bw_role_parse(role) : req->role;
	const char *bad = NULL;
	if (r == BW_ROLE_NONE)
		bad = "field 'role' must be \"administrator\" or \"readonly\"";
	else if (r > req->role)
		bad = "a token cannot have more rights than its creator";
	else if (exp && !json_is_null(exp) &&
	         (!json_is_integer(exp) || json_integer_value(exp) < 60 || json_integer_value(exp) > 315360000))
		bad = "field 'expires_in' must be an integer number of seconds from 60 to 315360000";
	if (bad) {
		json_decref(body);
		bw_req_reply_error(req, 400, "bad_request", bad);
		return;
	}
	char token[BW_TOKEN_LEN + 1], id[37], hash[65], tname[65];
	snprintf(tname, sizeof tname, "%s", name);
	int64_t now = (int64_t)time(NULL);
	int64_t expires = exp && json_is_integer(exp) ? now + json_integer_value(exp) : 0;
	json_decref(body);
	bw_error err = {0};
	if (bw_token_new(token, &err) != BW_OK || bw_uuid_new(id, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_token_hash(token, hash);
	if (bw_store_token_create(req->host->store, id, req->principal, "api", tname, bw_role_name(r), hash, now,
	                          expires, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "token.create", id, "success", tname);
	bw_req_reply_json(req, 201,
	                  json_pack("{s:s, s:s, s:s, s:s, s:o}", "id", id, "name", tname, "role", bw_role_name(r),
	                            "token", token, "expires_at", bw_json_time(expires)));
	OPENSSL_cleanse(token, sizeof token);
}

static void delete_token(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_error err = {0};
	if (!bw_uuid_valid(req->params[0])) {
		bw_req_reply_error(req, 400, "bad_request", "token id must be a UUID");
		return;
	}
	if (bw_store_token_delete(req->host->store, req->params[0], &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "token.revoke", req->params[0], "success", NULL);
	bw_req_reply_json(req, 204, NULL);
}

/* ---- audit */

static void get_audit(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *l = bw_req_query(req, "limit"), *b = bw_req_query(req, "before");
	char *end = NULL;
	long limit = l ? strtol(l, &end, 10) : 100;
	if ((l && (*end || limit < 1 || limit > 1000))) {
		bw_req_reply_error(req, 400, "bad_request", "limit must be an integer from 1 to 1000");
		return;
	}
	long long before = b ? strtoll(b, &end, 10) : 0;
	if (b && (*end || before < 0)) {
		bw_req_reply_error(req, 400, "bad_request", "before must be a non-negative entry id");
		return;
	}
	json_t *list;
	bw_error err = {0};
	if (bw_store_audit_list(req->host->store, before, (size_t)limit, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "entries", list));
}

/* ---- backup */

struct backup_job {
	struct bw_http_req *req;
	char *db_path;
	char tmp[4096];
	bw_error err;
	int rc;
};

static void backup_work(void *arg)
{
	struct backup_job *j = arg;
	j->rc = bw_store_backup(j->db_path, j->tmp, &j->err);
}

static void backup_done(void *arg)
{
	struct backup_job *j = arg;
	struct bw_http_req *req = j->req;
	if (j->rc != BW_OK) {
		bw_req_audit(req, req->principal, "db.backup", "", "failure", j->err.message);
		bw_req_reply_bw_error(req, &j->err);
	} else {
		int fd = open(j->tmp, O_RDONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) != 0) {
			if (fd >= 0)
				close(fd);
			bw_req_reply_error(req, 500, "internal", "backup file vanished");
		} else {
			bw_req_audit(req, req->principal, "db.backup", "", "success", NULL);
			/* The file is unlinked now; the open descriptor keeps it until it is sent. */
			unlink(j->tmp);
			bw_req_reply_file(req, 200, "application/vnd.sqlite3", fd, st.st_size);
		}
	}
	unlink(j->tmp);
	free(j->db_path);
	free(j);
}

static void get_backup(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct backup_job *j = calloc(1, sizeof *j);
	if (!j || !(j->db_path = strdup(req->host->settings.database.path))) {
		free(j);
		bw_req_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	j->req = req;
	char id[37];
	bw_error err = {0};
	if (bw_uuid_new(id, &err) != BW_OK) {
		free(j->db_path);
		free(j);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	snprintf(j->tmp, sizeof j->tmp, "%s/backup-%s.db", req->host->settings.server.var_dir, id);
	if (bw_workq_submit(req->host->workq, backup_work, backup_done, j, &err) != BW_OK) {
		free(j->db_path);
		free(j);
		bw_req_reply_error(req, 503, "unavailable", err.message);
	}
}

int bw_admin_api_register(struct bw_host *h, bw_error *err)
{
	if (!g_dummy_hash && bw_password_hash("bulwark-dummy-password", &g_dummy_hash, err) != BW_OK)
		return err->code;
	static const struct bw_route_def routes[] = {
	    {"GET", "/healthz", BW_ROLE_NONE, get_healthz},
	    {"GET", "/metrics", BW_ROLE_NONE, get_metrics_maybe_auth},
	    {"POST", "/api/v1/session", BW_ROLE_NONE, post_session},
	    {"DELETE", "/api/v1/session", BW_ROLE_READONLY, delete_session},
	    {"GET", "/api/v1/whoami", BW_ROLE_READONLY, get_whoami},
	    {"GET", "/api/v1/plugins", BW_ROLE_READONLY, get_plugins},
	    {"GET", "/api/v1/admins", BW_ROLE_READONLY, get_admins},
	    {"POST", "/api/v1/admins", BW_ROLE_ADMIN, post_admins},
	    {"DELETE", "/api/v1/admins/{name}", BW_ROLE_ADMIN, delete_admin},
	    {"GET", "/api/v1/tokens", BW_ROLE_ADMIN, get_tokens},
	    {"POST", "/api/v1/tokens", BW_ROLE_ADMIN, post_tokens},
	    {"DELETE", "/api/v1/tokens/{id}", BW_ROLE_ADMIN, delete_token},
	    {"GET", "/api/v1/audit", BW_ROLE_READONLY, get_audit},
	    {"GET", "/api/v1/db/backup", BW_ROLE_ADMIN, get_backup},
	};
	return bw_router_add_all(h->admin_router, routes, sizeof routes / sizeof routes[0], err);
}
