/* host/api/directory_login.c: administrator login with directory credentials. The "directory"
 * capability checks the password by binding as the user; the role comes from the user's
 * (nested) groups at every login. A directory account is an admins row whose password hash is
 * BW_DIRECTORY_ACCOUNT, created at the first login and kept so that sessions, tokens and the
 * audit log name it; disabling it locally still locks it out. */
#include "admin_api.h"
#include "auth.h"
#include "crypto.h"
#include "loader.h"
#include "log.h"
#include "router.h"

#include <bulwark/directory.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct bw_directory_ops *directory_ops(struct bw_host *h, void **arg)
{
	if (!h->plugins || bw_plugins_capability_count(h->plugins, "directory") == 0)
		return NULL;
	const struct bw_capability *c = bw_plugins_capability(h->plugins, "directory", 0);
	const struct bw_directory_ops *ops = c->ops;
	if (c->ops_size < sizeof *ops || !ops->authenticate)
		return NULL;
	*arg = c->ops_arg;
	return ops;
}

bool bw_directory_available(struct bw_host *h)
{
	void *arg;
	return directory_ops(h, &arg) != NULL;
}

struct dir_login {
	struct bw_http_req *req;
	char typed[129];
};

static void fail(struct bw_http_req *req, const char *typed, int status, const char *code, const char *message,
                 const char *audit_detail, bool count)
{
	struct bw_host *h = req->host;
	if (count) {
		struct bw_auth_limits lim = {h->settings.admin.max_failures_per_account,
		                             h->settings.admin.max_failures_per_address,
		                             h->settings.admin.failure_window_ms};
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		bw_auth_failure(h->auth, &lim, typed, req->peer, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
		bw_metric_add(h->m.login_failures, NULL, 1);
	}
	bw_req_audit(req, typed, "login", typed, status >= 500 ? "error" : "failure", audit_detail);
	bw_req_reply_error(req, status, code, message);
}

static void login_done(int rc, const char *message, json_t *user, void *arg)
{
	struct dir_login *l = arg;
	struct bw_http_req *req = l->req;
	struct bw_host *h = req->host;
	char detail[300];
	const char *why = message && *message ? message : "no reason given";
	if (rc == BW_E_DENIED || rc == BW_E_NOTFOUND) {
		snprintf(detail, sizeof detail, "directory: %s", rc == BW_E_NOTFOUND ? "no such user" : why);
		/* A wrong password stays vague; a disabled or locked account is named, as the directory said. */
		bool wrong = rc == BW_E_NOTFOUND || strstr(why, "password") != NULL;
		fail(req, l->typed, 401, "bad_credentials", wrong ? "wrong user name or password" : why, detail, true);
		goto out;
	}
	if (rc != BW_OK) {
		snprintf(detail, sizeof detail, "directory unavailable: %s", why);
		fail(req, l->typed, 503, "directory_unavailable", detail, detail, false);
		goto out;
	}
	const char *role = json_string_value(json_object_get(user, "admin_role"));
	const char *upn = json_string_value(json_object_get(user, "upn"));
	const char *login = json_string_value(json_object_get(user, "login"));
	if (!role || bw_role_parse(role) == BW_ROLE_NONE) {
		fail(req, l->typed, 403, "forbidden", "this directory account is not in an administrator group",
		     "directory: no administrator group", true);
		goto out;
	}
	/* One account per directory user, whatever form was typed: the UPN, lower-cased. */
	char name[129];
	snprintf(name, sizeof name, "%s", upn && *upn ? upn : login && *login ? login : l->typed);
	for (char *p = name; *p; p++)
		*p = (char)tolower((unsigned char)*p);
	struct bw_admin a = {0};
	bw_error err = {0};
	int found = bw_store_admin_get(h->store, name, &a, &err);
	if (found == BW_OK && (!a.password_hash || strcmp(a.password_hash, BW_DIRECTORY_ACCOUNT) != 0)) {
		fail(req, l->typed, 409, "conflict",
		     "a local administrator has the same name as this directory account",
		     "directory: name taken by a local account", true);
	} else if (found == BW_OK && a.disabled) {
		fail(req, l->typed, 401, "bad_credentials", "account disabled in bulwark", "account disabled", true);
	} else if (found != BW_OK && err.code != BW_E_NOTFOUND) {
		bw_req_reply_bw_error(req, &err);
	} else {
		char id[37];
		int ret = found == BW_OK ? bw_store_admin_set_role(h->store, name, role, &err)
		          : bw_uuid_new(id, &err) == BW_OK
		              ? bw_store_admin_create(h->store, id, name, BW_DIRECTORY_ACCOUNT, role, &err)
		              : err.code;
		if (ret != BW_OK)
			bw_req_reply_bw_error(req, &err);
		else {
			if (found != BW_OK)
				bw_log_info("auth", "directory account %s logged in for the first time (role %s)", name,
				            role);
			bw_admin_session_issue(req, name, role);
		}
	}
	bw_admin_clear(&a);
out:
	free(l);
}

void bw_directory_login(struct bw_http_req *req, const char *user, const char *password)
{
	void *arg = NULL;
	const struct bw_directory_ops *ops = directory_ops(req->host, &arg);
	struct dir_login *l = calloc(1, sizeof *l);
	if (!ops || !l) {
		free(l);
		bw_req_reply_error(req, 503, "unavailable",
		                   ops ? "out of memory" : "no directory plugin is configured");
		return;
	}
	l->req = req;
	snprintf(l->typed, sizeof l->typed, "%s", user);
	bw_error err = {0};
	if (ops->authenticate(arg, user, password, login_done, l, &err) != BW_OK) {
		if (err.code == BW_E_INVALID)
			fail(req, l->typed, 401, "bad_credentials", "wrong user name or password", err.message, true);
		else
			bw_req_reply_bw_error(req, &err);
		free(l);
	}
}
