/* commands.c: what each bulwarkctl command asks the admin API and how it shows the answer. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api.h"
#include "commands.h"
#include "http.h"
#include "output.h"
#include "prompt.h"
#include "session.h"

#define MAX_DURATION_S  (10LL * 366 * 86400)
#define MAX_AUDIT_LIMIT 100000
#define SQLITE_MAGIC    "SQLite format 3" /* 15 characters and the NUL: 16 bytes */

/* ---- argument checks ---- */

static bool valid_role(const char *role)
{
	return strcmp(role, "administrator") == 0 || strcmp(role, "readonly") == 0;
}

/* A path segment: non-empty, not "." or ".." (which URL normalisation would eat). */
int bwctl_check_segment(const char *what, const char *value)
{
	if (!value[0] || strcmp(value, ".") == 0 || strcmp(value, "..") == 0)
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid %s '%s'", what, value);
	return BWCTL_EXIT_OK;
}

bool bwctl_parse_duration(const char *s, long long *seconds)
{
	long long v = 0, unit = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (*p - '0');
		if (v > MAX_DURATION_S)
			return false;
	}
	switch (*p) {
	case '\0':
	case 's':
		break;
	case 'm':
		unit = 60;
		break;
	case 'h':
		unit = 3600;
		break;
	case 'd':
		unit = 86400;
		break;
	case 'w':
		unit = 7 * 86400;
		break;
	default:
		return false;
	}
	if (*p && p[1])
		return false;
	if (v == 0 || v > MAX_DURATION_S / unit)
		return false;
	*seconds = v * unit;
	return true;
}

/* ---- shared helpers ---- */

static const char *str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : "";
}

/* Copy of a server string fit for the terminal. */
char *bwctl_clean(const char *s)
{
	char *c = bwctl_xstrdup(s);

	bwctl_sanitize(c);
	return c;
}

/* A time from obj[key] in local time with the zone name, for one-line messages. */
static char *zoned_time(const json_t *obj, const char *key, const char *if_null)
{
	const char *t = json_string_value(json_object_get(obj, key));
	char buf[64];

	if (!t || !t[0])
		return bwctl_xstrdup(if_null);
	bwctl_format_time(t, true, buf, sizeof buf);
	return bwctl_xstrdup(buf);
}

int bwctl_unexpected(const struct bwctl_ctx *ctx, const char *what)
{
	return bwctl_fail(BWCTL_EXIT_FAIL, "unexpected answer from %s: %s", ctx->server, what);
}

int bwctl_get_json(struct bwctl_ctx *ctx, const char *path, struct bwctl_reply *reply)
{
	struct bwctl_call call = {.method = "GET", .path = path, .flags = BWCTL_API_AUTH};

	return bwctl_api_call(ctx, &call, reply);
}

/* The objects of `list` as a table, one row each built by `row`; other items are skipped. */
void bwctl_list_table(const json_t *list, int ncols, const char *const *headers, bwctl_row_fn row)
{
	struct bwctl_table *t = bwctl_table_new(ncols, headers);
	const json_t *item;
	size_t i;

	json_array_foreach(list, i, item)
	{
		char *cells[16];

		if (!json_is_object(item))
			continue;
		row(item, cells);
		bwctl_table_add_owned(t, cells);
	}
	bwctl_table_print(t, stdout);
	bwctl_table_free(t);
}

int bwctl_reply_list(const struct bwctl_ctx *ctx, struct bwctl_reply *reply, const char *const *keys, bool bare,
                     const char *missing, const json_t **list)
{
	*list = bare && json_is_array(reply->json) ? reply->json : NULL;
	for (const char *const *k = keys; !*list && *k; k++)
		if (json_is_array(json_object_get(reply->json, *k)))
			*list = json_object_get(reply->json, *k);
	if (!*list) {
		char what[128];

		snprintf(what, sizeof what, "no \"%s\" list", keys[0]);
		bwctl_reply_free(reply);
		return bwctl_unexpected(ctx, missing ? missing : what);
	}
	return BWCTL_EXIT_OK;
}

int bwctl_get_list(struct bwctl_ctx *ctx, const char *path, const char *const *keys, bool bare, const char *missing,
                   struct bwctl_reply *reply, const json_t **list)
{
	int rc = bwctl_get_json(ctx, path, reply);

	if (rc != BWCTL_EXIT_OK) {
		bwctl_reply_free(reply);
		return rc;
	}
	return bwctl_reply_list(ctx, reply, keys, bare, missing, list);
}

int bwctl_list_print(struct bwctl_ctx *ctx, const char *path, const char *const *keys, bool bare, const char *missing,
                     int ncols, const char *const *headers, bwctl_row_fn row)
{
	struct bwctl_reply reply;
	const json_t *list;
	int rc = bwctl_get_list(ctx, path, keys, bare, missing, &reply, &list);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (ctx->json)
		bwctl_print_json(reply.json);
	else
		bwctl_list_table(list, ncols, headers, row);
	bwctl_reply_free(&reply);
	return BWCTL_EXIT_OK;
}

int bwctl_list_command(struct bwctl_ctx *ctx, const char *path, const char *list_key, int ncols,
                       const char *const *headers, bwctl_row_fn row)
{
	const char *const keys[] = {list_key, NULL};

	return bwctl_list_print(ctx, path, keys, false, NULL, ncols, headers, row);
}

/* bwctl_list_command of `path` (freed here) with "limit=N" added for --limit (`limit`, checked: 1..max). */
static int list_limited(struct bwctl_ctx *ctx, char *path, const char *limit, long max, const char *list_key, int ncols,
                        const char *const *headers, bwctl_row_fn row)
{
	char n[24];
	long v = 0;
	int rc = limit ? bwctl_parse_limit_opt(limit, max, &v) : BWCTL_EXIT_OK;

	if (rc == BWCTL_EXIT_OK) {
		snprintf(n, sizeof n, "%ld", v);
		bwctl_query_add(&path, "limit", limit ? n : NULL);
		rc = bwctl_list_command(ctx, path, list_key, ncols, headers, row);
	}
	free(path);
	return rc;
}

/* DELETE `path`; prints "<done> <name><tail>" (control characters cleaned) unless --json. */
static int delete_at(struct bwctl_ctx *ctx, const char *path, const char *done, const char *name, const char *tail)
{
	struct bwctl_call call = {.method = "DELETE", .path = path, .flags = BWCTL_API_AUTH};
	struct bwctl_reply reply;
	int rc = bwctl_api_call(ctx, &call, &reply);

	if (rc == BWCTL_EXIT_OK && !ctx->json) {
		char *c = bwctl_clean(name);

		printf("%s %s%s\n", done, c, tail);
		free(c);
	}
	bwctl_reply_free(&reply);
	return rc;
}

/* Simple DELETE of one object; prints `done` (with the name) unless --json. */
static int delete_command(struct bwctl_ctx *ctx, const char *collection, const char *what, const char *name,
                          const char *done)
{
	int rc = bwctl_check_segment(what, name);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	char *escaped = bwctl_http_escape(name);
	char *path = bwctl_xasprintf("/api/v1/%s/%s", collection, escaped);

	rc = delete_at(ctx, path, done, name, "");
	free(path);
	free(escaped);
	return rc;
}

/* Password from the environment variable `env`, else the terminal (asked twice when `confirm`). */
static int get_password(const char *env, const char *prompt, bool confirm, char *buf, size_t size)
{
	const char *v = getenv(env);
	bw_error err;

	if (v) {
		if (!v[0])
			return bwctl_fail(BWCTL_EXIT_FAIL, "%s is set but empty", env);
		if (strlen(v) >= size)
			return bwctl_fail(BWCTL_EXIT_FAIL, "the password in %s is too long (at most %zu bytes)", env,
			                  size - 1);
		memcpy(buf, v, strlen(v) + 1);
		return BWCTL_EXIT_OK;
	}
	if (bwctl_prompt_password(prompt, buf, size, &err) != BW_OK)
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s (or set %s)", err.message, env);
	if (!buf[0])
		return bwctl_fail(BWCTL_EXIT_FAIL, "no password given");
	if (confirm) {
		char *again = bwctl_xmalloc(size);
		int rc = BWCTL_EXIT_OK;

		if (bwctl_prompt_password("Repeat the password: ", again, size, &err) != BW_OK)
			rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s", err.message);
		else if (strcmp(buf, again) != 0)
			rc = bwctl_fail(BWCTL_EXIT_FAIL, "the passwords do not match");
		explicit_bzero(again, size);
		free(again);
		if (rc != BWCTL_EXIT_OK)
			explicit_bzero(buf, size);
		return rc;
	}
	return BWCTL_EXIT_OK;
}

/* ---- login, logout, whoami ---- */

int bwctl_cmd_login(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_call call = {.method = "POST", .path = "/api/v1/session"};
	struct bwctl_reply reply = {0};
	struct bwctl_session s = {0};
	char password[BWCTL_PASSWORD_MAX], when[64];
	char *prompt, *cuser, *crole;
	json_t *body;
	bw_error err;
	int rc;

	if (!args->user || !args->user[0])
		return bwctl_fail(BWCTL_EXIT_USAGE, "login needs --user NAME");
	cuser = bwctl_clean(args->user);
	prompt = bwctl_xasprintf("Password for %s at %s: ", cuser, ctx->server);
	free(cuser);
	rc = get_password("BULWARK_PASSWORD", prompt, false, password, sizeof password);
	free(prompt);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	body = json_pack("{s:s, s:s}", "user", args->user, "password", password);
	explicit_bzero(password, sizeof password);
	if (!body)
		return bwctl_fail(BWCTL_EXIT_FAIL, "cannot build the login request (is the user name valid UTF-8?)");
	call.body = body;
	rc = bwctl_api_call(ctx, &call, &reply);
	json_decref(body);
	if (rc != BWCTL_EXIT_OK)
		goto out;

	if (!json_is_string(json_object_get(reply.json, "token")) || !str(reply.json, "token")[0]) {
		rc = bwctl_unexpected(ctx, "no \"token\" in the session");
		goto out;
	}
	s.token = (char *)str(reply.json, "token");
	s.user = (char *)(str(reply.json, "user")[0] ? str(reply.json, "user") : args->user);
	s.role = (char *)str(reply.json, "role");
	s.expires_at = (char *)json_string_value(json_object_get(reply.json, "expires_at"));
	if (bwctl_session_save(ctx->server, &s, &err) != BW_OK) {
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "logged in, but cannot save the session: %s", err.message);
		goto out;
	}
	if (ctx->json) {
		json_t *shown = json_deep_copy(reply.json);

		json_object_del(shown, "token"); /* the saved token is never printed */
		bwctl_print_json(shown);
		json_decref(shown);
		goto out;
	}
	cuser = bwctl_clean(s.user);
	crole = bwctl_clean(s.role[0] ? s.role : "unknown role");
	if (s.expires_at) {
		bwctl_format_time(s.expires_at, true, when, sizeof when);
		printf("Logged in as %s (%s) until %s\n", cuser, crole, when);
	} else {
		printf("Logged in as %s (%s)\n", cuser, crole);
	}
	free(cuser);
	free(crole);
out:
	bwctl_reply_free(&reply);
	return rc;
}

int bwctl_cmd_logout(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_call call = {
	    .method = "DELETE", .path = "/api/v1/session", .flags = BWCTL_API_AUTH | BWCTL_API_RAW_ERROR};
	struct bwctl_reply reply;
	bool from_session, removed = false;
	bw_error err;
	int rc;

	(void)args;
	rc = bwctl_api_need_token(ctx);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	from_session = ctx->token_source == BWCTL_TOKEN_SESSION;
	rc = bwctl_api_call(ctx, &call, &reply);
	/* 401: the session was already dead on the server, which is what logging out wants. */
	if (rc == BWCTL_EXIT_OK && reply.status != 401 && (reply.status < 200 || reply.status >= 300))
		rc = bwctl_api_fail(ctx, &reply, true);
	bwctl_reply_free(&reply);

	/* Forget the saved session even when the server could not be told: the user asked to be out. */
	if (from_session && bwctl_session_remove(ctx->server, &removed, &err) != BW_OK) {
		bwctl_fail(BWCTL_EXIT_FAIL, "cannot remove the saved session: %s", err.message);
		return rc != BWCTL_EXIT_OK ? rc : BWCTL_EXIT_FAIL;
	}
	if (rc != BWCTL_EXIT_OK) {
		if (removed)
			bwctl_warn(
			    "the saved session was removed, but the server may still accept it until it expires");
		return rc;
	}
	if (!ctx->json)
		printf("Logged out of %s\n", ctx->server);
	return BWCTL_EXIT_OK;
}

static void print_field(const char *label, const char *value)
{
	printf("%-10s%s\n", label, value);
}

int bwctl_cmd_whoami(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply;
	char *user, *role, *auth, *expires;
	int rc = bwctl_get_json(ctx, "/api/v1/whoami", &reply);

	(void)args;
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (!json_is_string(json_object_get(reply.json, "user"))) {
		rc = bwctl_unexpected(ctx, "no \"user\"");
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
		goto out;
	}
	user = bwctl_cell(reply.json, "user", "-");
	role = bwctl_cell(reply.json, "role", "-");
	auth = bwctl_cell(reply.json, "auth", "-");
	expires = zoned_time(reply.json, "expires_at", "never");
	print_field("User:", user);
	print_field("Role:", role);
	print_field("Auth:", auth);
	print_field("Expires:", expires);
	print_field("Server:", ctx->server);
	free(user);
	free(role);
	free(auth);
	free(expires);
out:
	bwctl_reply_free(&reply);
	return rc;
}

/* ---- health, plugins ---- */

static void health_plugin_row(const json_t *p, char **cells)
{
	cells[0] = bwctl_cell(p, "name", "-");
	cells[1] = bwctl_cell(p, "version", "-");
	cells[2] = bwctl_cell(p, "state", "-");
	cells[3] = bwctl_cell(p, "required", "-");
	cells[4] = bwctl_cell(p, "detail", "-");
}

int bwctl_cmd_health(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"NAME", "VERSION", "STATE", "REQUIRED", "DETAIL"};
	struct bwctl_call call = {.method = "GET", .path = "/healthz", .flags = BWCTL_API_RAW_ERROR};
	struct bwctl_reply reply;
	const json_t *plugins, *db;
	const char *status;
	char *status_c;
	int rc = bwctl_api_call(ctx, &call, &reply);

	(void)args;
	if (rc != BWCTL_EXIT_OK)
		goto out;
	status = json_string_value(json_object_get(reply.json, "status"));
	/* A failing server answers 503 with the same document: show it rather than an error. */
	if (!status) {
		rc = reply.status >= 200 && reply.status < 300 ? bwctl_unexpected(ctx, "no \"status\" in /healthz")
		                                               : bwctl_api_fail(ctx, &reply, false);
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		char buf[128], *version = bwctl_cell(reply.json, "version", "-");
		const json_t *uptime = json_object_get(reply.json, "uptime_s");

		status_c = bwctl_clean(status);
		print_field("Status:", status_c);
		print_field("Version:", version);
		free(status_c);
		free(version);
		if (json_is_integer(uptime)) {
			bwctl_format_duration(json_integer_value(uptime), buf, sizeof buf);
			print_field("Uptime:", buf);
		}
		db = json_object_get(reply.json, "database");
		if (json_is_object(db)) {
			char *dbs = bwctl_cell(db, "status", "-"), *schema = bwctl_cell(db, "schema_version", "?");

			snprintf(buf, sizeof buf, "%s (schema version %s)", dbs, schema);
			print_field("Database:", buf);
			free(dbs);
			free(schema);
		}
		plugins = json_object_get(reply.json, "plugins");
		if (json_is_array(plugins) && json_array_size(plugins) > 0) {
			putchar('\n');
			bwctl_list_table(plugins, 5, headers, health_plugin_row);
		}
	}
	if (strcmp(status, "ok") != 0) {
		status_c = bwctl_clean(status);
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s is %s (HTTP %ld)", ctx->server, status_c, reply.status);
		free(status_c);
	}
out:
	bwctl_reply_free(&reply);
	return rc;
}

static void plugin_row(const json_t *p, char **cells)
{
	cells[0] = bwctl_cell(p, "name", "-");
	cells[1] = bwctl_cell(p, "version", "-");
	cells[2] = bwctl_cell(p, "state", "-");
	cells[3] = bwctl_cell(p, "required", "-");
	cells[4] = bwctl_cell(p, "capabilities", "-");
	cells[5] = bwctl_cell(p, "detail", "-");
}

int bwctl_cmd_plugins(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"NAME", "VERSION", "STATE", "REQUIRED", "CAPABILITIES", "DETAIL"};

	(void)args;
	return bwctl_list_command(ctx, "/api/v1/plugins", "plugins", 6, headers, plugin_row);
}

/* ---- admins ---- */

int bwctl_cmd_admins_add(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_call call = {.method = "POST", .path = "/api/v1/admins", .flags = BWCTL_API_AUTH};
	struct bwctl_reply reply = {0};
	const char *name = args->pos[0], *role = args->role ? args->role : "readonly";
	char password[BWCTL_PASSWORD_MAX], *prompt, *cname;
	json_t *body;
	int rc;

	if (!name[0])
		return bwctl_fail(BWCTL_EXIT_USAGE, "the admin name is empty");
	if (!valid_role(role))
		return bwctl_fail(BWCTL_EXIT_USAGE, "unknown role '%s' (use administrator or readonly)", role);
	/* Fail on "not logged in" before asking for a password that could not be used. */
	rc = bwctl_api_need_token(ctx);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	cname = bwctl_clean(name);
	prompt = bwctl_xasprintf("New password for %s: ", cname);
	rc = get_password("BULWARK_NEW_PASSWORD", prompt, true, password, sizeof password);
	free(prompt);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	body = json_pack("{s:s, s:s, s:s}", "name", name, "password", password, "role", role);
	explicit_bzero(password, sizeof password);
	if (!body) {
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "cannot build the request (is the name valid UTF-8?)");
		goto out;
	}
	call.body = body;
	rc = bwctl_api_call(ctx, &call, &reply);
	json_decref(body);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		char *r = bwctl_cell(reply.json, "role", role);

		printf("Created admin %s (%s)\n", cname, r);
		free(r);
	}
out:
	bwctl_reply_free(&reply);
	free(cname);
	return rc;
}

static void admin_row(const json_t *a, char **cells)
{
	cells[0] = bwctl_cell(a, "name", "-");
	cells[1] = bwctl_cell(a, "role", "-");
	cells[2] = bwctl_cell_time(a, "created_at", "-");
	cells[3] = bwctl_cell(a, "disabled", "no");
}

int bwctl_cmd_admins_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"NAME", "ROLE", "CREATED", "DISABLED"};

	(void)args;
	return bwctl_list_command(ctx, "/api/v1/admins", "admins", 4, headers, admin_row);
}

int bwctl_cmd_admins_remove(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return delete_command(ctx, "admins", "admin name", args->pos[0], "Removed admin");
}

/* ---- tokens ---- */

int bwctl_cmd_tokens_create(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_call call = {.method = "POST", .path = "/api/v1/tokens", .flags = BWCTL_API_AUTH};
	struct bwctl_reply reply = {0};
	const char *name = args->pos[0];
	long long expires_in = 0;
	json_t *body;
	int rc;

	if (!name[0])
		return bwctl_fail(BWCTL_EXIT_USAGE, "the token name is empty");
	if (args->role && !valid_role(args->role))
		return bwctl_fail(BWCTL_EXIT_USAGE, "unknown role '%s' (use administrator or readonly)", args->role);
	if (args->expires && !bwctl_parse_duration(args->expires, &expires_in))
		return bwctl_fail(BWCTL_EXIT_USAGE,
		                  "invalid --expires '%s': use a positive number with s, m, h, d or w (e.g. 30d, 12h, "
		                  "90m, 3600s), at most ten years",
		                  args->expires);
	body = json_pack("{s:s}", "name", name);
	if (body && args->role)
		json_object_set_new(body, "role", json_string(args->role));
	if (body && args->expires)
		json_object_set_new(body, "expires_in", json_integer(expires_in));
	if (!body)
		return bwctl_fail(BWCTL_EXIT_FAIL, "cannot build the request (is the name valid UTF-8?)");
	call.body = body;
	rc = bwctl_api_call(ctx, &call, &reply);
	json_decref(body);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (!json_is_string(json_object_get(reply.json, "token"))) {
		rc = bwctl_unexpected(ctx, "no \"token\" in the new token");
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		char *cname = bwctl_cell(reply.json, "name", name), *id = bwctl_cell(reply.json, "id", "?");
		char *role = bwctl_cell(reply.json, "role", "-");
		char *expires = zoned_time(reply.json, "expires_at", "never");

		printf("Created token %s (id %s, role %s, expires %s):\n", cname, id, role, expires);
		/* The one place a token is printed: it was just created and cannot be shown again. */
		printf("%s\n", str(reply.json, "token"));
		free(cname);
		free(id);
		free(role);
		free(expires);
	}
	fflush(stdout);
	bwctl_warn("store this token now (e.g. in a password manager): it cannot be shown again");
out:
	bwctl_reply_free(&reply);
	return rc;
}

static void token_row(const json_t *t, char **cells)
{
	cells[0] = bwctl_cell(t, "id", "-");
	cells[1] = bwctl_cell(t, "name", "-");
	cells[2] = bwctl_cell(t, "owner", "-");
	cells[3] = bwctl_cell(t, "role", "-");
	cells[4] = bwctl_cell_time(t, "created_at", "-");
	cells[5] = bwctl_cell_time(t, "expires_at", "never");
	cells[6] = bwctl_cell_time(t, "last_used_at", "never");
}

int bwctl_cmd_tokens_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "NAME", "OWNER", "ROLE", "CREATED", "EXPIRES", "LAST USED"};

	(void)args;
	return bwctl_list_command(ctx, "/api/v1/tokens", "tokens", 7, headers, token_row);
}

int bwctl_cmd_tokens_revoke(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return delete_command(ctx, "tokens", "token id", args->pos[0], "Revoked token");
}

/* ---- db backup ---- */

struct backup {
	int fd;
	const char *tmp;
	unsigned char head[16];
	size_t head_len;
	unsigned long long total;
};

static bool backup_sink(void *arg, const char *data, size_t len, bw_error *err)
{
	struct backup *b = arg;

	if (b->head_len < sizeof b->head) {
		size_t n = sizeof b->head - b->head_len;

		if (n > len)
			n = len;
		memcpy(b->head + b->head_len, data, n);
		b->head_len += n;
		/* Stop early rather than download something that is not a database. */
		if (memcmp(b->head, SQLITE_MAGIC, b->head_len) != 0) {
			bw_error_set(err, BW_E_REMOTE, "the server's answer is not an SQLite database");
			return false;
		}
	}
	while (len > 0) {
		ssize_t n = write(b->fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			bw_error_set(err, BW_E_IO, "cannot write %s: %s", b->tmp, strerror(errno));
			return false;
		}
		data += n;
		len -= (size_t)n;
		b->total += (unsigned long long)n;
	}
	return true;
}

/* Creates FILE.tmp (mode 0600) without following links; replaces a stale one of ours left behind
 * by an interrupted backup. */
static int open_backup_tmp(const char *tmp, int *fd)
{
	const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;
	struct stat st;

	*fd = open(tmp, flags, 0600);
	if (*fd < 0 && errno == EEXIST && lstat(tmp, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
	    unlink(tmp) == 0)
		*fd = open(tmp, flags, 0600);
	if (*fd < 0 && errno == EEXIST)
		return bwctl_fail(BWCTL_EXIT_FAIL,
		                  "cannot create %s: it already exists and is not a file of yours; remove it", tmp);
	if (*fd < 0)
		return bwctl_fail(BWCTL_EXIT_FAIL, "cannot create %s: %s", tmp, strerror(errno));
	return BWCTL_EXIT_OK;
}

static void sync_parent_dir(const char *file)
{
	char *dir = bwctl_xstrdup(file), *slash = strrchr(dir, '/');
	int fd;

	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	free(dir);
}

int bwctl_cmd_db_backup(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct backup b = {.fd = -1};
	struct bwctl_call call = {
	    .method = "GET",
	    .path = "/api/v1/db/backup",
	    .flags = BWCTL_API_AUTH,
	    .accept = "application/vnd.sqlite3, application/json;q=0.5",
	    .long_transfer = true,
	    .sink = backup_sink,
	    .sink_arg = &b,
	};
	struct bwctl_reply reply = {0};
	const char *file = args->pos[0];
	char *tmp = NULL, *cfile = NULL;
	bool keep_tmp = false;
	int rc;

	if (!file[0])
		return bwctl_fail(BWCTL_EXIT_USAGE, "the backup file name is empty");
	rc = bwctl_api_need_token(ctx);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	tmp = bwctl_xasprintf("%s.tmp", file);
	b.tmp = tmp;
	rc = open_backup_tmp(tmp, &b.fd);
	if (rc != BWCTL_EXIT_OK) {
		keep_tmp = true; /* not ours */
		goto out;
	}
	rc = bwctl_api_call(ctx, &call, &reply);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (b.head_len < sizeof b.head || memcmp(b.head, SQLITE_MAGIC, sizeof b.head) != 0) {
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "the server's answer is not an SQLite database (%llu bytes)", b.total);
		goto out;
	}
	if (fsync(b.fd) != 0 || close(b.fd) != 0) {
		b.fd = -1;
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	b.fd = -1;
	if (rename(tmp, file) != 0) {
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "cannot rename %s to %s: %s", tmp, file, strerror(errno));
		goto out;
	}
	keep_tmp = true; /* it is the backup now */
	sync_parent_dir(file);
	if (ctx->json) {
		json_t *o = json_pack("{s:s, s:I}", "file", file, "size", (json_int_t)b.total);

		if (o)
			bwctl_print_json(o);
		json_decref(o);
	} else {
		cfile = bwctl_clean(file);
		printf("Saved the database backup to %s (%llu bytes)\n", cfile, b.total);
	}
out:
	if (b.fd >= 0)
		close(b.fd);
	if (!keep_tmp)
		unlink(tmp);
	bwctl_reply_free(&reply);
	free(cfile);
	free(tmp);
	return rc;
}

/* ---- audit ---- */

static void audit_row(const json_t *e, char **cells)
{
	cells[0] = bwctl_cell(e, "id", "-");
	cells[1] = bwctl_cell_time(e, "at", "-");
	cells[2] = bwctl_cell(e, "actor", "-");
	cells[3] = bwctl_cell(e, "address", "-");
	cells[4] = bwctl_cell(e, "action", "-");
	cells[5] = bwctl_cell(e, "target", "-");
	cells[6] = bwctl_cell(e, "outcome", "-");
	cells[7] = bwctl_cell(e, "detail", "-");
}

int bwctl_cmd_audit(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID",     "TIME",   "ACTOR",   "ADDRESS",
	                                      "ACTION", "TARGET", "OUTCOME", "DETAIL"};
	return list_limited(ctx, bwctl_xstrdup("/api/v1/audit"), args->limit, MAX_AUDIT_LIMIT, "entries", 8, headers,
	                    audit_row);
}

/* ---- devices and enrollment ---- */

#define MAX_DEVICE_LIST_LIMIT 1000
#define MAX_KEY_USES          1000000000LL

/* The first of `keys` present in obj, as a cell (the store may name a field either way). */
char *bwctl_cell_any(const json_t *obj, const char *const *keys, const char *if_null)
{
	for (; *keys; keys++)
		if (json_object_get(obj, *keys) && !json_is_null(json_object_get(obj, *keys)))
			return bwctl_cell(obj, *keys, if_null);
	return bwctl_xstrdup(if_null);
}

static char *cell_time_any(const json_t *obj, const char *const *keys, const char *if_null)
{
	for (; *keys; keys++)
		if (json_object_get(obj, *keys) && !json_is_null(json_object_get(obj, *keys)))
			return bwctl_cell_time(obj, *keys, if_null);
	return bwctl_xstrdup(if_null);
}

static const char *const group_keys[] = {"group", "group_name", NULL};

int bwctl_parse_limit_opt(const char *value, long max, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(value, &end, 10);
	if (errno || end == value || *end || value[0] < '0' || value[0] > '9' || *out < 1 || *out > max)
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid --limit '%s': use a number from 1 to %ld", value, max);
	return BWCTL_EXIT_OK;
}

/* A growing query string: "?a=1&b=2", values URL-encoded. */
void bwctl_query_add(char **path, const char *name, const char *value)
{
	char *escaped, *next;

	if (!value)
		return;
	escaped = bwctl_http_escape(value);
	next = bwctl_xasprintf("%s%c%s=%s", *path, strchr(*path, '?') ? '&' : '?', name, escaped);
	bwctl_secure_free(escaped);
	free(*path);
	*path = next;
}

/* A call with a JSON body (may be NULL) whose 2xx answer is handed back. */
int bwctl_send_json(struct bwctl_ctx *ctx, const char *method, const char *path, const json_t *body,
                    struct bwctl_reply *reply)
{
	struct bwctl_call call = {.method = method, .path = path, .body = body, .flags = BWCTL_API_AUTH};

	return bwctl_api_call(ctx, &call, reply);
}

/* "/api/v1/<collection>/<escaped id><suffix>" after checking the id is a usable segment. */
int bwctl_object_path(const char *collection, const char *what, const char *id, const char *suffix, char **path)
{
	char *escaped;
	int rc = bwctl_check_segment(what, id);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	escaped = bwctl_http_escape(id);
	*path = bwctl_xasprintf("/api/v1/%s/%s%s", collection, escaped, suffix);
	bwctl_secure_free(escaped);
	return BWCTL_EXIT_OK;
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Every top-level field of an object as "key: value", sorted; times in local time. */
void bwctl_print_object(const json_t *obj)
{
	const char *key;
	const json_t *value;
	size_t width = 0, n = json_object_size(obj), i = 0;
	const char **keys = bwctl_xmalloc(sizeof *keys * (n ? n : 1));

	json_object_foreach((json_t *)obj, key, value)
	{
		keys[i++] = key;
		if (strlen(key) > width)
			width = strlen(key);
	}
	qsort(keys, n, sizeof *keys, cmp_keys);
	for (i = 0; i < n; i++) {
		size_t len = strlen(keys[i]);
		bool is_time = strcmp(keys[i], "at") == 0 || strcmp(keys[i], "last_seen") == 0 ||
		               strcmp(keys[i], "cert_not_after") == 0 ||
		               (len > 3 && strcmp(keys[i] + len - 3, "_at") == 0);
		char *k = bwctl_clean(keys[i]);
		char *v = is_time ? bwctl_cell_time(obj, keys[i], "-") : bwctl_cell(obj, keys[i], "-");

		printf("%s:%*s %s\n", k, (int)(width - len), "", v);
		free(k);
		free(v);
	}
	free(keys);
}

int bwctl_get_object(struct bwctl_ctx *ctx, const char *path, const char *not_object, struct bwctl_reply *reply)
{
	int rc = bwctl_get_json(ctx, path, reply);

	if (rc == BWCTL_EXIT_OK && !json_is_object(reply->json))
		rc = bwctl_unexpected(ctx, not_object);
	if (rc != BWCTL_EXIT_OK)
		bwctl_reply_free(reply);
	return rc;
}

/* GET one object and show it as a block (or --json). */
int bwctl_show_command(struct bwctl_ctx *ctx, const char *collection, const char *what, const char *id)
{
	struct bwctl_reply reply;
	char *path;
	int rc = bwctl_object_path(collection, what, id, "", &path);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	rc = bwctl_get_object(ctx, path, "not a JSON object", &reply);
	free(path);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (ctx->json)
		bwctl_print_json(reply.json);
	else
		bwctl_print_object(reply.json);
	bwctl_reply_free(&reply);
	return BWCTL_EXIT_OK;
}

/* ---- enrollment keys ---- */

int bwctl_cmd_keys_create(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply = {0};
	long long expires_in = 0, uses = 0;
	json_t *body;
	int rc;

	if (args->group && (strlen(args->group) > 128 || strpbrk(args->group, "\t\r\n")))
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid --group: use 1 to 128 characters on one line");
	if (args->uses) {
		char *end;

		errno = 0;
		uses = strtoll(args->uses, &end, 10);
		if (errno || end == args->uses || *end || args->uses[0] < '0' || args->uses[0] > '9' || uses < 1 ||
		    uses > MAX_KEY_USES)
			return bwctl_fail(BWCTL_EXIT_USAGE, "invalid --uses '%s': use a number from 1 to %lld",
			                  args->uses, MAX_KEY_USES);
	}
	if (args->expires && !bwctl_parse_duration(args->expires, &expires_in))
		return bwctl_fail(BWCTL_EXIT_USAGE,
		                  "invalid --expires '%s': use a positive number with s, m, h, d or w (e.g. 30d, 12h, "
		                  "90m, 3600s), at most ten years",
		                  args->expires);
	body = json_object();
	if (args->group)
		json_object_set_new(body, "group", json_string(args->group));
	if (args->uses)
		json_object_set_new(body, "max_uses", json_integer(uses));
	if (args->expires)
		json_object_set_new(body, "expires_in", json_integer(expires_in));
	if (args->group && !json_object_get(body, "group")) {
		json_decref(body);
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid --group: not valid UTF-8");
	}
	rc = bwctl_send_json(ctx, "POST", "/api/v1/enrollment/keys", body, &reply);
	json_decref(body);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (!json_is_string(json_object_get(reply.json, "key"))) {
		rc = bwctl_unexpected(ctx, "no \"key\" in the new enrollment key");
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		char *id = bwctl_cell(reply.json, "id", "?"), *group = bwctl_cell(reply.json, "group", "none");
		char *max = bwctl_cell(reply.json, "max_uses", "unlimited");
		char *expires = zoned_time(reply.json, "expires_at", "never");
		char *key = bwctl_clean(str(reply.json, "key"));

		printf("Created enrollment key (id %s, group %s, uses %s, expires %s):\n", id, group, max, expires);
		/* The one place the key is shown: only its digest is stored. */
		printf("%s\n", key);
		free(id);
		free(group);
		free(max);
		free(expires);
		free(key);
	}
	fflush(stdout);
	bwctl_warn("hand out or store this key now: it cannot be shown again");
out:
	bwctl_reply_free(&reply);
	return rc;
}

static void key_row(const json_t *k, char **cells)
{
	static const char *const revoked_keys[] = {"revoked_at", "revoked", NULL};

	cells[0] = bwctl_cell(k, "id", "-");
	cells[1] = bwctl_cell(k, "prefix", "-");
	cells[2] = bwctl_cell_any(k, group_keys, "-");
	cells[3] = bwctl_cell(k, "uses", "0");
	cells[4] = bwctl_cell(k, "max_uses", "unlimited");
	cells[5] = bwctl_cell_time(k, "created_at", "-");
	cells[6] = bwctl_cell_time(k, "expires_at", "never");
	cells[7] = cell_time_any(k, revoked_keys, "no");
}

int bwctl_cmd_keys_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID",       "PREFIX",  "GROUP",   "USES",
	                                      "MAX USES", "CREATED", "EXPIRES", "REVOKED"};

	(void)args;
	return bwctl_list_command(ctx, "/api/v1/enrollment/keys", "keys", 8, headers, key_row);
}

int bwctl_cmd_keys_revoke(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return delete_command(ctx, "enrollment/keys", "key id", args->pos[0], "Revoked enrollment key");
}

/* ---- invitations and outbox ---- */

int bwctl_cmd_invitations_create(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply = {0};
	const char *email = args->pos[0];
	long long expires_in = 0;
	json_t *body;
	int rc;

	if (!email[0] || !strchr(email, '@'))
		return bwctl_fail(BWCTL_EXIT_USAGE, "'%s' is not an e-mail address", email);
	if (args->expires && !bwctl_parse_duration(args->expires, &expires_in))
		return bwctl_fail(BWCTL_EXIT_USAGE,
		                  "invalid --expires '%s': use a positive number with s, m, h, d or w (e.g. 7d, 12h)",
		                  args->expires);
	body = json_pack("{s:s}", "email", email);
	if (!body)
		return bwctl_fail(BWCTL_EXIT_USAGE, "the e-mail address is not valid UTF-8");
	if (args->expires)
		json_object_set_new(body, "expires_in", json_integer(expires_in));
	rc = bwctl_send_json(ctx, "POST", "/api/v1/enrollment/invitations", body, &reply);
	json_decref(body);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		char *id = bwctl_cell(reply.json, "id", "?"), *to = bwctl_cell(reply.json, "email", email);
		char *expires = zoned_time(reply.json, "expires_at", "never");

		printf("Invited %s (id %s, expires %s); the message is in the outbox\n", to, id, expires);
		free(id);
		free(to);
		free(expires);
	}
out:
	bwctl_reply_free(&reply);
	return rc;
}

static void invitation_row(const json_t *i, char **cells)
{
	static const char *const used_keys[] = {"used_at", "used", NULL};

	cells[0] = bwctl_cell(i, "id", "-");
	cells[1] = bwctl_cell(i, "email", "-");
	cells[2] = bwctl_cell_time(i, "created_at", "-");
	cells[3] = bwctl_cell_time(i, "expires_at", "never");
	cells[4] = cell_time_any(i, used_keys, "no");
}

int bwctl_cmd_invitations_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "EMAIL", "CREATED", "EXPIRES", "USED"};

	(void)args;
	return bwctl_list_command(ctx, "/api/v1/enrollment/invitations", "invitations", 5, headers, invitation_row);
}

static void outbox_row(const json_t *m, char **cells)
{
	static const char *const to_keys[] = {"to", "recipient", "email", NULL};
	static const char *const sent_keys[] = {"sent_at", "status", NULL};

	cells[0] = bwctl_cell(m, "id", "-");
	cells[1] = bwctl_cell_any(m, to_keys, "-");
	cells[2] = bwctl_cell(m, "subject", "-");
	cells[3] = bwctl_cell_time(m, "created_at", "-");
	cells[4] = cell_time_any(m, sent_keys, "not yet");
}

int bwctl_cmd_outbox(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "TO", "SUBJECT", "CREATED", "SENT"};

	(void)args;
	return bwctl_list_command(ctx, "/api/v1/enrollment/outbox", "messages", 5, headers, outbox_row);
}

/* ---- allowlist ---- */

static int check_kind(const char *kind)
{
	if (strcmp(kind, "imei") != 0 && strcmp(kind, "meid") != 0 && strcmp(kind, "wifi_mac") != 0)
		return bwctl_fail(BWCTL_EXIT_USAGE, "unknown kind '%s' (use imei, meid or wifi_mac)", kind);
	return BWCTL_EXIT_OK;
}

int bwctl_cmd_allowlist_add(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply = {0};
	const char *kind = args->pos[0], *value = args->pos[1];
	json_t *body;
	int rc = check_kind(kind);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	body = json_pack("{s:s, s:s}", "kind", kind, "value", value);
	if (body && args->note)
		json_object_set_new(body, "note", json_string(args->note));
	if (!body || (args->note && !json_object_get(body, "note"))) {
		json_decref(body);
		return bwctl_fail(BWCTL_EXIT_USAGE, "the value or note is not valid UTF-8");
	}
	rc = bwctl_send_json(ctx, "POST", "/api/v1/enrollment/allowlist", body, &reply);
	json_decref(body);
	if (rc == BWCTL_EXIT_OK) {
		if (ctx->json) {
			bwctl_print_json(reply.json);
		} else {
			char *v = bwctl_cell(reply.json, "value", value), *k = bwctl_clean(kind);

			printf("Added %s %s to the allowlist\n", k, v);
			free(v);
			free(k);
		}
	}
	bwctl_reply_free(&reply);
	return rc;
}

int bwctl_cmd_allowlist_remove(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	const char *kind = args->pos[0], *value = args->pos[1];
	int rc = check_kind(kind);

	if (rc == BWCTL_EXIT_OK)
		rc = bwctl_check_segment("value", value);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	char *escaped = bwctl_http_escape(value);
	char *path = bwctl_xasprintf("/api/v1/enrollment/allowlist/%s/%s", kind, escaped);
	char *done = bwctl_xasprintf("Removed %s", kind);

	rc = delete_at(ctx, path, done, value, " from the allowlist");
	free(done);
	free(path);
	bwctl_secure_free(escaped);
	return rc;
}

static void allowlist_row(const json_t *e, char **cells)
{
	cells[0] = bwctl_cell(e, "kind", "-");
	cells[1] = bwctl_cell(e, "value", "-");
	cells[2] = bwctl_cell(e, "note", "-");
	cells[3] = bwctl_cell_time(e, "created_at", "-");
}

int bwctl_cmd_allowlist_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"KIND", "VALUE", "NOTE", "ADDED"};
	struct bwctl_reply reply;
	const json_t *entries;
	int rc = bwctl_get_json(ctx, "/api/v1/enrollment/allowlist", &reply);

	(void)args;
	if (rc != BWCTL_EXIT_OK)
		goto out;
	entries = json_object_get(reply.json, "entries");
	if (!json_is_array(entries) || !json_is_boolean(json_object_get(reply.json, "enabled"))) {
		rc = bwctl_unexpected(ctx, "no \"enabled\" and \"entries\" in the allowlist");
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		printf("Allowlist: %s\n\n", json_is_true(json_object_get(reply.json, "enabled"))
		                                ? "enabled (only listed devices may enroll)"
		                                : "disabled (any device with a valid key or invitation may enroll)");
		bwctl_list_table(entries, 4, headers, allowlist_row);
	}
out:
	bwctl_reply_free(&reply);
	return rc;
}

static int allowlist_set(struct bwctl_ctx *ctx, bool on)
{
	struct bwctl_reply reply;
	json_t *body = json_pack("{s:b}", "enabled", on);
	int rc = bwctl_send_json(ctx, "PUT", "/api/v1/enrollment/allowlist/enabled", body, &reply);

	json_decref(body);
	if (rc == BWCTL_EXIT_OK) {
		if (ctx->json)
			bwctl_print_json(reply.json);
		else if (on)
			printf("Allowlist enabled: only devices on the list may enroll\n");
		else
			printf("Allowlist disabled: devices enroll without being on the list\n");
	}
	bwctl_reply_free(&reply);
	return rc;
}

int bwctl_cmd_allowlist_enable(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	(void)args;
	return allowlist_set(ctx, true);
}

int bwctl_cmd_allowlist_disable(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	(void)args;
	return allowlist_set(ctx, false);
}

static void refusal_row(const json_t *r, char **cells)
{
	cells[0] = bwctl_cell_time(r, "at", "-");
	cells[1] = bwctl_cell(r, "address", "-");
	cells[2] = bwctl_cell(r, "reason", "-");
	cells[3] = bwctl_cell(r, "detail", "-");
}

int bwctl_cmd_refusals(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"TIME", "ADDRESS", "REASON", "DETAIL"};
	return list_limited(ctx, bwctl_xstrdup("/api/v1/enrollment/refusals"), args->limit, MAX_DEVICE_LIST_LIMIT,
	                    "refusals", 4, headers, refusal_row);
}

/* ---- devices ---- */

static void device_row(const json_t *d, char **cells)
{
	cells[0] = bwctl_cell(d, "id", "-");
	cells[1] = bwctl_cell(d, "platform", "-");
	cells[2] = bwctl_cell(d, "status", "-");
	cells[3] = bwctl_cell(d, "os_version", "-");
	cells[4] = bwctl_cell(d, "model", "-");
	cells[5] = bwctl_cell_any(d, group_keys, "-");
	cells[6] = bwctl_cell_time(d, "last_seen", "never");
}

int bwctl_cmd_devices_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "PLATFORM", "STATUS", "OS", "MODEL", "GROUP", "LAST SEEN"};
	char *path;

	if (args->platform && strcmp(args->platform, "android") != 0 && strcmp(args->platform, "ios") != 0)
		return bwctl_fail(BWCTL_EXIT_USAGE, "unknown platform '%s' (use android or ios)", args->platform);
	if (args->status && strcmp(args->status, "active") != 0 && strcmp(args->status, "unregistered") != 0 &&
	    strcmp(args->status, "wiped") != 0)
		return bwctl_fail(BWCTL_EXIT_USAGE, "unknown status '%s' (use active, unregistered or wiped)",
		                  args->status);
	if (args->os && !strchr("<>=", args->os[0]))
		return bwctl_fail(BWCTL_EXIT_USAGE,
		                  "invalid --os '%s': use an operator (<, <=, =, >=, >) and a version, e.g. \">=12.1\"",
		                  args->os);
	path = bwctl_xstrdup("/api/v1/devices");
	bwctl_query_add(&path, "platform", args->platform);
	bwctl_query_add(&path, "status", args->status);
	bwctl_query_add(&path, "group", args->group);
	bwctl_query_add(&path, "os", args->os);
	return list_limited(ctx, path, args->limit, MAX_DEVICE_LIST_LIMIT, "devices", 7, headers, device_row);
}

int bwctl_cmd_devices_show(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return bwctl_show_command(ctx, "devices", "device id", args->pos[0]);
}

static int queue_command(struct bwctl_ctx *ctx, const char *device, const char *type)
{
	struct bwctl_reply reply = {0};
	char *path;
	json_t *body;
	int rc = bwctl_object_path("devices", "device id", device, "/commands", &path);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	body = json_pack("{s:s}", "type", type);
	rc = bwctl_send_json(ctx, "POST", path, body, &reply);
	json_decref(body);
	free(path);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (!json_is_string(json_object_get(reply.json, "id"))) {
		rc = bwctl_unexpected(ctx, "no \"id\" for the queued command");
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		char *id = bwctl_clean(str(reply.json, "id")), *dev = bwctl_clean(device);

		if (json_is_true(json_object_get(reply.json, "merged")))
			printf("Merged with the open %s command %s for device %s\n", type, id, dev);
		else
			printf("Queued %s for device %s: command %s\n", type, dev, id);
		free(id);
		free(dev);
	}
out:
	bwctl_reply_free(&reply);
	return rc;
}

int bwctl_cmd_devices_lock(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return queue_command(ctx, args->pos[0], "lock");
}

int bwctl_cmd_devices_wipe(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return queue_command(ctx, args->pos[0], "wipe");
}

int bwctl_cmd_devices_locate(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return queue_command(ctx, args->pos[0], "locate");
}

int bwctl_cmd_devices_scan(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return queue_command(ctx, args->pos[0], "scan");
}

int bwctl_cmd_devices_update(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return queue_command(ctx, args->pos[0], "update");
}

int bwctl_cmd_devices_sync(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return queue_command(ctx, args->pos[0], "sync_policy");
}

int bwctl_cmd_devices_unenroll(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply = {0};
	char *path;
	int rc = bwctl_object_path("devices", "device id", args->pos[0], "/unenroll", &path);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	rc = bwctl_send_json(ctx, "POST", path, NULL, &reply);
	free(path);
	if (rc == BWCTL_EXIT_OK) {
		if (ctx->json) {
			bwctl_print_json(reply.json);
		} else {
			char *dev = bwctl_clean(args->pos[0]);

			printf("Unenrolled device %s (its certificate is revoked)\n", dev);
			free(dev);
		}
	}
	bwctl_reply_free(&reply);
	return rc;
}

/* ---- commands ---- */

static void command_row(const json_t *c, char **cells)
{
	static const char *const state_keys[] = {"state", "status", NULL};

	cells[0] = bwctl_cell(c, "id", "-");
	cells[1] = bwctl_cell(c, "type", "-");
	cells[2] = bwctl_cell_any(c, state_keys, "-");
	cells[3] = bwctl_cell(c, "created_by", "-");
	cells[4] = bwctl_cell_time(c, "created_at", "-");
	cells[5] = bwctl_cell_time(c, "expires_at", "-");
	cells[6] = bwctl_cell(c, "error", "-");
}

int bwctl_cmd_commands_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "TYPE", "STATE", "BY", "CREATED", "EXPIRES", "ERROR"};
	char *path;
	int rc = bwctl_object_path("devices", "device id", args->pos[0], "/commands", &path);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	rc = bwctl_list_command(ctx, path, "commands", 7, headers, command_row);
	free(path);
	return rc;
}

int bwctl_cmd_commands_show(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return bwctl_show_command(ctx, "commands", "command id", args->pos[0]);
}

int bwctl_cmd_commands_cancel(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return delete_command(ctx, "commands", "command id", args->pos[0], "Cancelled command");
}

/* ---- device event logs ---- */

static bool time_arg_ok(const char *s)
{
	time_t t;

	if (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s))
		return strlen(s) <= 12;
	return bwctl_parse_rfc3339(s, &t);
}

static void event_row(const json_t *e, char **cells)
{
	static const char *const device_keys[] = {"device_id", "device", NULL};

	cells[0] = bwctl_cell(e, "id", "-");
	cells[1] = bwctl_cell_time(e, "at", "-");
	cells[2] = bwctl_cell_any(e, device_keys, "-");
	cells[3] = bwctl_cell(e, "type", "-");
	cells[4] = bwctl_cell(e, "data", "-");
}

int bwctl_cmd_logs(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "TIME", "DEVICE", "TYPE", "DATA"};
	char *path;

	if (args->since && !time_arg_ok(args->since))
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid --since '%s': use Unix seconds or an RFC 3339 time",
		                  args->since);
	if (args->until && !time_arg_ok(args->until))
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid --until '%s': use Unix seconds or an RFC 3339 time",
		                  args->until);
	path = bwctl_xstrdup("/api/v1/logs");
	bwctl_query_add(&path, "device", args->device);
	bwctl_query_add(&path, "type", args->type);
	bwctl_query_add(&path, "since", args->since);
	bwctl_query_add(&path, "until", args->until);
	return list_limited(ctx, path, args->limit, MAX_DEVICE_LIST_LIMIT, "events", 5, headers, event_row);
}
