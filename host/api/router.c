/* host/api/router.c: routing, authentication and answering for one listener. */
#include "router.h"

#include "crypto.h"
#include "log.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct bw_router {
	struct bw_host *host;
	int (*auth)(struct bw_http_req *req, int min_role); /* NULL = bearer tokens */
	char listener[16];
	struct bw_route_entry *routes;
};

json_t *bw_json_time(int64_t t)
{
	if (t <= 0)
		return json_null();
	char buf[32];
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(buf);
}

/* Store times are Unix seconds; the API shows RFC 3339 (0 = never/none = null). Only the top
 * level of an object: nested data (inventory, event data) is the device's own. */
static bool is_time_key(const char *key)
{
	size_t n = strlen(key);
	return strcmp(key, "at") == 0 || strcmp(key, "last_seen") == 0 || strcmp(key, "cert_not_after") == 0 ||
	       (n > 3 && strcmp(key + n - 3, "_at") == 0);
}

void bw_json_times_to_text(json_t *v)
{
	if (json_is_array(v)) {
		size_t i;
		json_t *item;
		json_array_foreach(v, i, item)
		{
			bw_json_times_to_text(item);
		}
		return;
	}
	if (!json_is_object(v))
		return;
	const char *key;
	json_t *val;
	json_object_foreach(v, key, val)
	{
		if (json_is_integer(val) && is_time_key(key))
			json_object_set_new(v, key, bw_json_time(json_integer_value(val)));
	}
}

void bw_req_audit(struct bw_http_req *req, const char *actor, const char *action, const char *target,
                  const char *outcome, const char *detail)
{
	bw_error err = {0};
	if (bw_store_audit_add(req->host->store, (int64_t)time(NULL), actor ? actor : "", req->peer, action,
	                       target ? target : "", outcome, detail ? detail : "", &err) != BW_OK)
		bw_log_error("audit", "cannot write audit entry %s/%s: %s", action, outcome, err.message);
	bw_log_info("audit", "%s %s by %s from %s: %s%s%s", action, target ? target : "", actor ? actor : "-",
	            req->peer, outcome, detail && *detail ? " " : "", detail ? detail : "");
}

const char *bw_role_name(int role)
{
	switch (role) {
	case BW_ROLE_ADMIN:
		return "administrator";
	case BW_ROLE_READONLY:
		return "readonly";
	default:
		return "none";
	}
}

int bw_role_parse(const char *name)
{
	if (name && strcmp(name, "administrator") == 0)
		return BW_ROLE_ADMIN;
	if (name && strcmp(name, "readonly") == 0)
		return BW_ROLE_READONLY;
	return BW_ROLE_NONE;
}

bw_router *bw_router_new(struct bw_host *host, const char *listener)
{
	bw_router *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->host = host;
	snprintf(r->listener, sizeof r->listener, "%s", listener);
	return r;
}

void bw_router_set_auth(bw_router *r, int (*auth)(struct bw_http_req *req, int min_role))
{
	r->auth = auth;
}

void bw_router_free(bw_router *r)
{
	if (!r)
		return;
	for (struct bw_route_entry *e = r->routes, *n; e; e = n) {
		n = e->next;
		free(e->method);
		free(e->pattern);
		free(e);
	}
	free(r);
}

int bw_router_add(bw_router *r, const char *method, const char *pattern, int min_role, bw_handler_fn fn, void *arg,
                  const void *owner, bw_error *err)
{
	for (struct bw_route_entry *e = r->routes; e; e = e->next)
		if (strcmp(e->method, method) == 0 && strcmp(e->pattern, pattern) == 0)
			return bw_error_set(err, BW_E_EXISTS, "route %s %s already exists on the %s listener", method,
			                    pattern, r->listener);
	struct bw_route_entry *e = calloc(1, sizeof *e);
	if (!e || !(e->method = strdup(method)) || !(e->pattern = strdup(pattern))) {
		if (e)
			free(e->method);
		free(e);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	e->min_role = min_role;
	e->fn = fn;
	e->arg = arg;
	e->owner = owner;
	struct bw_route_entry **pp = &r->routes;
	while (*pp)
		pp = &(*pp)->next;
	*pp = e;
	return BW_OK;
}

int bw_router_add_all(bw_router *r, const struct bw_route_def *defs, size_t n, bw_error *err)
{
	for (size_t i = 0; i < n; i++) {
		int rc = bw_router_add(r, defs[i].method, defs[i].path, defs[i].min_role, defs[i].fn, NULL, NULL, err);
		if (rc != BW_OK)
			return rc;
	}
	return BW_OK;
}

/* Matches `path` against `pattern` segment by segment; {x} captures one non-empty segment. */
static bool match(const char *pattern, const char *path, struct bw_http_req *req, bool capture)
{
	const char *p = pattern, *s = path;
	size_t n = 0;
	while (*p && *s) {
		if (*p == '{') {
			const char *pe = strchr(p, '}');
			const char *se = strchr(s, '/');
			if (!se)
				se = s + strlen(s);
			if (!pe || se == s || n >= 4)
				return false;
			if (capture) {
				char *raw = strndup(s, (size_t)(se - s));
				req->params[n] = raw ? evhttp_uridecode(raw, 0, NULL) : NULL;
				free(raw);
			}
			n++;
			p = pe + 1;
			s = se;
			continue;
		}
		if (*p != *s)
			return false;
		p++, s++;
	}
	if (*p || *s)
		return false;
	if (capture)
		req->nparams = n;
	return true;
}

static const char *method_name(enum evhttp_cmd_type t)
{
	switch (t) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	default:
		return "OTHER";
	}
}

static void req_free(struct bw_http_req *req)
{
	for (size_t i = 0; i < req->nparams; i++)
		free(req->params[i]);
	if (req->query) {
		evhttp_clear_headers(req->query);
		free(req->query);
	}
	free(req);
}

static void finish(struct bw_http_req *req, int status)
{
	struct bw_host *h = req->host;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double secs = (double)(now.tv_sec - req->start.tv_sec) + (double)(now.tv_nsec - req->start.tv_nsec) / 1e9;
	static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
	int c = status / 100 - 1;
	bw_metric_add(h->m.requests, classes[c >= 0 && c < 5 ? c : 4], 1);
	bw_metric_observe(h->m.duration, NULL, secs);
	h->inflight--;
	req_free(req);
}

void bw_req_reply_json(struct bw_http_req *req, int status, json_t *body)
{
	bw_http_reply_json(req->ev, status, body);
	finish(req, status);
}

void bw_req_reply_error(struct bw_http_req *req, int status, const char *code, const char *message)
{
	bw_http_reply_error(req->ev, status, code, message);
	finish(req, status);
}

void bw_req_reply_bytes(struct bw_http_req *req, int status, const char *content_type, const void *data, size_t len)
{
	bw_http_reply_bytes(req->ev, status, content_type, data, len);
	finish(req, status);
}

void bw_req_reply_file(struct bw_http_req *req, int status, const char *content_type, int fd, off_t size)
{
	struct evbuffer *b = evbuffer_new();
	if (evbuffer_add_file(b, fd, 0, size) != 0) {
		evbuffer_free(b);
		bw_req_reply_error(req, 500, "internal", "cannot send the file");
		return;
	}
	struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
	evhttp_add_header(h, "Content-Type", content_type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_send_reply(req->ev, status, NULL, b);
	evbuffer_free(b);
	finish(req, status);
}

void bw_req_reply_bw_error(struct bw_http_req *req, const bw_error *err)
{
	int status = 500;
	const char *code = "internal";
	switch (err->code) {
	case BW_E_INVALID:
		status = 400, code = "bad_request";
		break;
	case BW_E_NOTFOUND:
		status = 404, code = "not_found";
		break;
	case BW_E_EXISTS:
		status = 409, code = "conflict";
		break;
	case BW_E_DENIED:
		status = 403, code = "forbidden";
		break;
	case BW_E_LIMIT:
		status = 429, code = "limit";
		break;
	case BW_E_STATE:
		status = 409, code = "conflict";
		break;
	case BW_E_NOTIMPL:
		status = 501, code = "not_implemented";
		break;
	case BW_E_BUSY:
	case BW_E_TIMEOUT:
		status = 503, code = "unavailable";
		break;
	default:
		break;
	}
	if (status >= 500)
		bw_log_error("api", "%s: %s", code, err->message);
	bw_req_reply_error(req, status, code, err->message);
}

const char *bw_req_query(struct bw_http_req *req, const char *name)
{
	if (!req->query) {
		req->query = calloc(1, sizeof *req->query);
		if (!req->query)
			return NULL;
		req->query->tqh_first = NULL;
		req->query->tqh_last = &req->query->tqh_first;
		const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req->ev));
		if (q && evhttp_parse_query_str(q, req->query) != 0)
			evhttp_clear_headers(req->query);
	}
	return evhttp_find_header(req->query, name);
}

const char *bw_req_header(struct bw_http_req *req, const char *name)
{
	return evhttp_find_header(evhttp_request_get_input_headers(req->ev), name);
}

const void *bw_req_body(struct bw_http_req *req, size_t *len)
{
	struct evbuffer *b = evhttp_request_get_input_buffer(req->ev);
	*len = evbuffer_get_length(b);
	if (*len == 0)
		return "";
	return evbuffer_pullup(b, -1);
}

int bw_req_json(struct bw_http_req *req, json_t **out, bw_error *err)
{
	size_t len;
	const void *body = bw_req_body(req, &len);
	*out = NULL;
	if (len == 0)
		return bw_error_set(err, BW_E_INVALID, "request body is empty; a JSON object is required");
	json_error_t je;
	json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!j)
		return bw_error_set(err, BW_E_INVALID, "malformed JSON at line %d, column %d: %s", je.line, je.column,
		                    je.text);
	if (!json_is_object(j)) {
		json_decref(j);
		return bw_error_set(err, BW_E_INVALID, "the request body must be a JSON object");
	}
	*out = j;
	return BW_OK;
}

/* Bearer token -> principal and role. Returns 0 or an HTTP status to answer with. */
static int authenticate(struct bw_http_req *req, int min_role)
{
	const char *h = bw_req_header(req, "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7) != 0 || !h[7])
		return 401;
	const char *token = h + 7;
	if (strlen(token) > 256)
		return 401;
	char hash[65];
	bw_token_hash(token, hash);
	struct bw_token_info ti;
	bw_error err = {0};
	int64_t now = (int64_t)time(NULL);
	if (bw_store_token_find(req->host->store, hash, now, &ti, &err) != BW_OK) {
		if (err.code != BW_E_NOTFOUND)
			bw_log_error("api", "token lookup failed: %s", err.message);
		return err.code == BW_E_NOTFOUND ? 401 : 500;
	}
	snprintf(req->principal, sizeof req->principal, "%s", ti.admin_name);
	snprintf(req->auth_kind, sizeof req->auth_kind, "%s", strcmp(ti.kind, "api") == 0 ? "token" : "session");
	snprintf(req->token_id, sizeof req->token_id, "%s", ti.id);
	req->token_expires_at = ti.expires_at;
	req->role = bw_role_parse(ti.role);
	bw_store_token_touch(req->host->store, ti.id, now, NULL);
	return req->role >= min_role ? 0 : 403;
}

void bw_router_dispatch(struct evhttp_request *ev, void *arg)
{
	bw_router *r = arg;
	struct bw_http_req *req = calloc(1, sizeof *req);
	if (!req) {
		bw_http_reply_error(ev, 503, "unavailable", "out of memory");
		return;
	}
	req->ev = ev;
	req->host = r->host;
	r->host->inflight++;
	clock_gettime(CLOCK_MONOTONIC, &req->start);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(ev));
	if (!path || !*path)
		path = "/";
	const char *method = method_name(evhttp_request_get_command(ev));
	bool path_known = false;
	const struct bw_route_entry *found = NULL;
	for (const struct bw_route_entry *e = r->routes; e; e = e->next) {
		if (!match(e->pattern, path, req, false))
			continue;
		path_known = true;
		if (strcmp(e->method, method) == 0 || (strcmp(method, "HEAD") == 0 && strcmp(e->method, "GET") == 0)) {
			found = e;
			break;
		}
	}
	if (!found) {
		if (path_known)
			bw_req_reply_error(req, 405, "method_not_allowed", "method not allowed for this path");
		else
			bw_req_reply_error(req, 404, "not_found", "no such endpoint");
		return;
	}
	match(found->pattern, path, req, true);
	for (size_t i = 0; i < req->nparams; i++)
		if (!req->params[i]) {
			bw_req_reply_error(req, 400, "bad_request", "malformed percent-encoding in the path");
			return;
		}
	req->route = found;
	bw_http_peer(ev, req->peer, sizeof req->peer);
	if (found->min_role > BW_ROLE_NONE) {
		int status = r->auth ? r->auth(req, found->min_role) : authenticate(req, found->min_role);
		if (status == 401 && r->auth) {
			bw_req_reply_error(
			    req, 401, "unauthenticated",
			    "a valid device certificate is required (missing, unknown, expired or revoked)");
			return;
		}
		if (status == 401) {
			evhttp_add_header(evhttp_request_get_output_headers(ev), "WWW-Authenticate", "Bearer");
			bw_req_reply_error(req, 401, "unauthorized",
			                   "a valid session or API token is required (Authorization: Bearer ...)");
			return;
		}
		if (status == 403) {
			bw_req_reply_error(req, 403, "forbidden", "your role does not allow this request");
			return;
		}
		if (status) {
			bw_req_reply_error(req, 500, "internal", "authentication failed; see the server log");
			return;
		}
	}
	found->fn(req, found->arg);
}
