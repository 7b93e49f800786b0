/* host/api/policies_api.c: the admin API of groups and policies: the group tree (create, rename,
 * move with a cycle check, delete with move_to), each group's policy document (validated, versioned,
 * history, versions, diffs), effective policies, the feature-lock catalog, per-device delivery
 * status and moving a device to another group. Reads need the readonly role, changes the
 * administrator role; every change is audited (never with a secret: summaries name sections). */
#include "policies_api.h"

#include "crypto.h"
#include "policies.h"
#include "policy_doc.h"
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_LIMIT 100
#define MAX_LIMIT     1000
#define DESC_MAX      1024

static bw_policies *service(struct bw_http_req *req)
{
	bw_policies *p = bw_policies_of(req->host);
	if (!p)
		bw_req_reply_error(req, 503, "unavailable", "the policy service is not running");
	return p;
}

static void bad_request(struct bw_http_req *req, const char *message)
{
	bw_req_reply_error(req, 400, "bad_request", message);
}

/* Only the listed members, each a string (or null where allowed). */
static bool body_fields(struct bw_http_req *req, json_t *body, const char *const *allowed, size_t n)
{
	const char *key;
	json_t *v;
	json_object_foreach(body, key, v)
	{
		size_t i = 0;
		while (i < n && strcmp(allowed[i], key) != 0)
			i++;
		char msg[300];
		if (i == n) {
			snprintf(msg, sizeof msg, "unknown field '%.128s'", key);
			bad_request(req, msg);
			return false;
		}
		if (!json_is_string(v) && !json_is_null(v)) {
			snprintf(msg, sizeof msg, "%s must be a string", key);
			bad_request(req, msg);
			return false;
		}
		if (json_is_string(v) && strlen(json_string_value(v)) != json_string_length(v)) {
			snprintf(msg, sizeof msg, "%s must not contain NUL characters", key);
			bad_request(req, msg);
			return false;
		}
	}
	return true;
}

static bool int_query(struct bw_http_req *req, const char *name, int64_t min, int64_t max, int64_t def, int64_t *out)
{
	const char *s = bw_req_query(req, name);
	*out = def;
	if (!s)
		return true;
	char *end = NULL;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || s[0] < '0' || s[0] > '9' || v < min || v > max) {
		char msg[160];
		snprintf(msg, sizeof msg, "%s must be an integer from %lld to %lld", name, (long long)min,
		         (long long)max);
		bad_request(req, msg);
		return false;
	}
	*out = v;
	return true;
}

static void audit(struct bw_http_req *req, const char *action, const char *target, const bw_error *err,
                  const char *detail)
{
	bw_req_audit(req, req->principal, action, target, err ? "failure" : "success",
	             err      ? err->message
	             : detail ? detail
	                      : "");
}

/* A change that failed: audited, then answered with the service's error. */
static void reply_failure(struct bw_http_req *req, const char *action, const char *target, const bw_error *err)
{
	audit(req, action, target, err, NULL);
	bw_req_reply_bw_error(req, err);
}

/* The request's JSON object, holding only the allowed members when allowed is given; NULL when a 400
 * was sent. */
static json_t *read_body(struct bw_http_req *req, const char *const *allowed, size_t n)
{
	json_t *body = NULL;
	bw_error err = {0};
	if (bw_req_json(req, &body, &err) != BW_OK) {
		bw_req_reply_error(req, 400, "invalid_json", err.message);
		return NULL;
	}
	if (allowed && !body_fields(req, body, allowed, n)) {
		json_decref(body);
		return NULL;
	}
	return body;
}

/* Answers a read: 200 with o, or the service's error (rc). The timestamps in member `times` of o (o
 * itself for "", none for NULL) become text. */
static void reply_read(struct bw_http_req *req, int rc, json_t *o, const bw_error *err, const char *times)
{
	if (rc != BW_OK) {
		bw_req_reply_bw_error(req, err);
		return;
	}
	if (times)
		bw_json_times_to_text(*times ? json_object_get(o, times) : o);
	bw_req_reply_json(req, 200, o);
}

/* ---- groups */

/* Answers with the group as it is now (after a change, under its new name). */
static void reply_group(struct bw_http_req *req, bw_policies *p, const char *name, int status)
{
	json_t *g = NULL;
	bw_error err = {0};
	if (bw_group_get(p, name, &g, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(g);
	bw_req_reply_json(req, status, g);
}

struct group_fields {
	const char *name, *parent, *desc;
};

/* The body of POST (create: name required) or PATCH (at least one member) /groups; the strings in f
 * live as long as the returned body. NULL when a 400 was sent. */
static json_t *group_body(struct bw_http_req *req, bool create, struct group_fields *f)
{
	static const char *const allowed[] = {"name", "parent", "description"};
	json_t *body = read_body(req, allowed, 3);
	if (!body)
		return NULL;
	f->name = json_string_value(json_object_get(body, "name"));
	f->parent = json_string_value(json_object_get(body, "parent"));
	f->desc = json_string_value(json_object_get(body, "description"));
	const char *why = NULL;
	if (create && !f->name)
		why = "name (a string) is required";
	else if (!create && !f->name && !f->parent && !f->desc)
		why = "give at least one of name, parent, description";
	else if (f->desc && strlen(f->desc) > DESC_MAX)
		why = "description must be at most 1024 bytes";
	if (why) {
		bad_request(req, why);
		json_decref(body);
		return NULL;
	}
	return body;
}

static void get_groups(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *list = NULL;
	bw_error err = {0};
	if (!p)
		return;
	int rc = bw_group_list(p, &list, &err);
	reply_read(req, rc, rc == BW_OK ? json_pack("{s:o}", "groups", list) : NULL, &err, "groups");
}

static void get_group(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	if (p)
		reply_group(req, p, req->params[0], 200);
}

static void post_group(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	struct group_fields f;
	bw_error err = {0};
	json_t *body = p ? group_body(req, true, &f) : NULL;
	if (!body)
		return;
	if (bw_group_create(p, f.name, f.parent, f.desc, &err) != BW_OK) {
		reply_failure(req, "group.create", f.name, &err);
	} else {
		char detail[200];
		snprintf(detail, sizeof detail, "parent %.150s", f.parent ? f.parent : "default");
		audit(req, "group.create", f.name, NULL, detail);
		reply_group(req, p, f.name, 201);
	}
	json_decref(body);
}

static void patch_group(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	struct group_fields f;
	bw_error err = {0};
	json_t *body = p ? group_body(req, false, &f) : NULL;
	if (!body)
		return;
	const char *target = req->params[0];
	if (bw_group_update(p, target, f.name, f.parent, f.desc, &err) != BW_OK) {
		reply_failure(req, "group.update", target, &err);
	} else {
		char detail[400];
		snprintf(detail, sizeof detail, "%s%.150s%s%.150s%s", f.name ? "name " : "", f.name ? f.name : "",
		         f.parent ? " parent " : "", f.parent ? f.parent : "", f.desc ? " description" : "");
		audit(req, "group.update", target, NULL, detail);
		reply_group(req, p, f.name ? f.name : target, 200);
	}
	json_decref(body);
}

static void delete_group(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	bw_error err = {0};
	if (!p)
		return;
	const char *move_to = bw_req_query(req, "move_to");
	if (bw_group_delete(p, req->params[0], move_to, &err) != BW_OK) {
		reply_failure(req, "group.delete", req->params[0], &err);
		return;
	}
	char detail[200] = "";
	if (move_to)
		snprintf(detail, sizeof detail, "members moved to %.150s", move_to);
	audit(req, "group.delete", req->params[0], NULL, detail);
	bw_req_reply_json(req, 204, NULL);
}

/* ---- policy documents */

static void get_policy(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *o = NULL;
	bw_error err = {0};
	if (!p)
		return;
	int rc = bw_policy_get_own(p, req->params[0], &o, &err);
	reply_read(req, rc, o, &err, "");
}

/* Validation errors name the field and the bad entry; a secret entry is never echoed. */
static void hide_secret_entries(json_t *errors)
{
	size_t i;
	json_t *e;
	json_array_foreach(errors, i, e)
	{
		/* uninstall_protection.password, wifi.networks[i].password, ...eap.password (the validator hides
		 * them too: this is a second line of defence) */
		const char *f = json_string_value(json_object_get(e, "field"));
		size_t n = f ? strlen(f) : 0;
		if (n >= 9 && strcmp(f + n - 9, ".password") == 0 && json_object_get(e, "entry"))
			json_object_set_new(e, "entry", json_string("(hidden)"));
	}
}

static void put_policy(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *result = NULL, *errors = NULL;
	bw_error err = {0};
	json_t *body = p ? read_body(req, NULL, 0) : NULL;
	if (!body)
		return;
	/* {"policy": {...}} is accepted as well as the bare document ("policy" is no section name). */
	json_t *doc = body;
	if (json_object_size(body) == 1 && json_is_object(json_object_get(body, "policy")))
		doc = json_object_get(body, "policy");
	const char *group = req->params[0];
	if (bw_policy_put(p, group, doc, req->principal, &result, &errors, &err) != BW_OK) {
		audit(req, "policy.set", group, &err, NULL);
		if (err.code == BW_E_INVALID && errors) {
			hide_secret_entries(errors);
			bw_req_reply_json(req, 422,
			                  json_pack("{s:{s:s, s:s, s:o}}", "error", "code", "invalid_policy", "message",
			                            err.message, "details", errors));
			errors = NULL;
		} else {
			bw_req_reply_bw_error(req, &err);
		}
	} else {
		char detail[1200];
		snprintf(detail, sizeof detail, "version %lld: %s",
		         (long long)json_integer_value(json_object_get(result, "version")),
		         json_string_value(json_object_get(result, "summary")));
		audit(req, "policy.set", group, NULL, detail);
		bw_req_reply_json(req, 200, result);
	}
	json_decref(errors);
	json_decref(body);
}

static void get_effective(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *o = NULL;
	bw_error err = {0};
	if (!p)
		return;
	int rc = bw_policy_effective(p, req->params[0], &o, &err);
	reply_read(req, rc, o, &err, NULL);
}

static void get_history(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *o = NULL;
	bw_error err = {0};
	int64_t limit, before;
	if (!p || !int_query(req, "limit", 1, MAX_LIMIT, DEFAULT_LIMIT, &limit) ||
	    !int_query(req, "before", 1, INT64_MAX, 0, &before))
		return;
	int rc = bw_policy_history(p, req->params[0], before, (size_t)limit, &o, &err);
	reply_read(req, rc, o, &err, "versions");
}

static bool version_param(struct bw_http_req *req, const char *s, int64_t min, int64_t *out)
{
	char *end = NULL;
	errno = 0;
	long long v = s ? strtoll(s, &end, 10) : -1;
	if (!s || errno || end == s || *end || s[0] < '0' || s[0] > '9' || v < min) {
		char msg[120];
		snprintf(msg, sizeof msg, "a version must be an integer of at least %lld", (long long)min);
		bad_request(req, msg);
		return false;
	}
	*out = v;
	return true;
}

static void get_version(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *o = NULL;
	bw_error err = {0};
	int64_t n;
	if (!p || !version_param(req, req->params[1], 1, &n))
		return;
	int rc = bw_policy_version(p, req->params[0], n, &o, &err);
	reply_read(req, rc, o, &err, "");
}

static void get_diff(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *o = NULL;
	bw_error err = {0};
	int64_t from, to;
	if (!p)
		return;
	const char *fs = bw_req_query(req, "from"), *ts = bw_req_query(req, "to");
	if (!fs || !ts) {
		bad_request(req, "from and to (version numbers; 0 = the empty document) are required");
		return;
	}
	if (!version_param(req, fs, 0, &from) || !version_param(req, ts, 0, &to))
		return;
	int rc = bw_policy_diff_versions(p, req->params[0], from, to, &o, &err);
	reply_read(req, rc, o, &err, NULL);
}

static void get_catalog(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *c = bw_policy_feature_catalog();
	if (!c) {
		bw_req_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	bw_req_reply_json(req, 200, json_pack("{s:o}", "items", c));
}

static void get_status(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = service(req);
	json_t *o = NULL;
	bw_error err = {0};
	if (!p)
		return;
	int rc = bw_policy_status(p, bw_req_query(req, "group"), bw_req_query(req, "state"), &o, &err);
	reply_read(req, rc, o, &err, "devices");
}

/* ---- devices */

static void patch_device(struct bw_http_req *req, void *arg)
{
	(void)arg;
	static const char *const allowed[] = {"group"};
	bw_policies *p = service(req);
	json_t *o = NULL;
	bw_error err = {0};
	if (!p)
		return;
	const char *id = req->params[0];
	if (!bw_uuid_valid(id)) {
		bad_request(req, "device id must be a UUID");
		return;
	}
	json_t *body = read_body(req, allowed, 1);
	if (!body)
		return;
	const char *group = json_string_value(json_object_get(body, "group"));
	if (!group) {
		bad_request(req, "group (a group name) is required");
	} else if (bw_policy_device_move(p, id, group, &o, &err) != BW_OK) {
		reply_failure(req, "device.move", id, &err);
	} else {
		char detail[200];
		snprintf(detail, sizeof detail, "group %.150s", group);
		audit(req, "device.move", id, NULL, detail);
		bw_req_reply_json(req, 200, o);
	}
	json_decref(body);
}

int bw_policies_api_register(struct bw_host *h, bw_error *err)
{
	static const struct bw_route_def routes[] = {
	    {"GET", "/api/v1/groups", BW_ROLE_READONLY, get_groups},
	    {"POST", "/api/v1/groups", BW_ROLE_ADMIN, post_group},
	    {"GET", "/api/v1/groups/{name}", BW_ROLE_READONLY, get_group},
	    {"PATCH", "/api/v1/groups/{name}", BW_ROLE_ADMIN, patch_group},
	    {"DELETE", "/api/v1/groups/{name}", BW_ROLE_ADMIN, delete_group},
	    {"GET", "/api/v1/groups/{name}/policy", BW_ROLE_READONLY, get_policy},
	    {"PUT", "/api/v1/groups/{name}/policy", BW_ROLE_ADMIN, put_policy},
	    {"GET", "/api/v1/groups/{name}/policy/effective", BW_ROLE_READONLY, get_effective},
	    {"GET", "/api/v1/groups/{name}/policy/history", BW_ROLE_READONLY, get_history},
	    {"GET", "/api/v1/groups/{name}/policy/versions/{n}", BW_ROLE_READONLY, get_version},
	    {"GET", "/api/v1/groups/{name}/policy/diff", BW_ROLE_READONLY, get_diff},
	    {"GET", "/api/v1/policies/catalog", BW_ROLE_READONLY, get_catalog},
	    {"GET", "/api/v1/policies/status", BW_ROLE_READONLY, get_status},
	    {"PATCH", "/api/v1/devices/{id}", BW_ROLE_ADMIN, patch_device},
	};
	return bw_router_add_all(h->admin_router, routes, sizeof routes / sizeof routes[0], err);
}
