/* host/api/router.h: request routing for one listener: path patterns with {params}, method
 * matching (404 / 405), bearer-token authentication and role checks before a handler runs,
 * and the per-request object that handlers (host and plugin) answer through. */
#ifndef BW_ROUTER_H
#define BW_ROUTER_H

#include "host.h"

#include <bulwark/host.h>

/* struct bw_http_req is the opaque bw_http_req of the plugin API. */
struct bw_http_req {
	struct evhttp_request *ev;
	struct bw_host *host;
	const struct bw_route_entry *route;
	char *params[4]; /* decoded {param} values in order */
	size_t nparams;
	struct evkeyvalq *query; /* parsed on first use */
	char peer[64];
	int role;
	char principal[129];
	char auth_kind[16]; /* "session" or "token" */
	char token_id[37];
	int64_t token_expires_at;
	struct timespec start;
};

typedef void (*bw_handler_fn)(struct bw_http_req *req, void *arg);

struct bw_route_entry {
	char *method;
	char *pattern; /* "/api/v1/admins/{name}" */
	int min_role;
	bw_handler_fn fn;
	void *arg;
	const void *owner; /* plugin ctx or NULL for the host */
	struct bw_route_entry *next;
};

bw_router *bw_router_new(struct bw_host *host, const char *listener);
void bw_router_free(bw_router *r);
/* A host route, for tables registered with bw_router_add_all. */
struct bw_route_def {
	const char *method, *path;
	int min_role;
	bw_handler_fn fn;
};
int bw_router_add_all(bw_router *r, const struct bw_route_def *defs, size_t n, bw_error *err);
/* Replaces bearer-token authentication for routes with min_role > NONE: `auth` returns 0, or
 * the HTTP status to refuse with (401 means "no valid credential"). The agent listener uses
 * it for device certificates (it fills req->principal with the device id). */
void bw_router_set_auth(bw_router *r, int (*auth)(struct bw_http_req *req, int min_role));
int bw_router_add(bw_router *r, const char *method, const char *pattern, int min_role, bw_handler_fn fn, void *arg,
                  const void *owner, bw_error *err);
/* The evhttp callback. */
void bw_router_dispatch(struct evhttp_request *ev, void *router);

/* Answers and frees the request. `body` is stolen. */
void bw_req_reply_json(struct bw_http_req *req, int status, json_t *body);
void bw_req_reply_error(struct bw_http_req *req, int status, const char *code, const char *message);
void bw_req_reply_bytes(struct bw_http_req *req, int status, const char *content_type, const void *data, size_t len);
/* Answers with a file's contents (sent from the kernel page cache); takes the fd. */
void bw_req_reply_file(struct bw_http_req *req, int status, const char *content_type, int fd, off_t size);
/* Maps a bw_error to a status and envelope (invalid->400, notfound->404, exists->409, ...). */
void bw_req_reply_bw_error(struct bw_http_req *req, const bw_error *err);

const char *bw_req_query(struct bw_http_req *req, const char *name);
const char *bw_req_header(struct bw_http_req *req, const char *name);
const void *bw_req_body(struct bw_http_req *req, size_t *len);
/* Parses the body as a JSON object (400-worthy errors name the line and column). New ref. */
int bw_req_json(struct bw_http_req *req, json_t **out, bw_error *err);

/* RFC 3339 UTC text of Unix seconds, or JSON null for 0 (never/none). New reference. */
json_t *bw_json_time(int64_t t);
/* Converts the integer times of an object's top level (keys "at", "last_seen",
 * "cert_not_after" and "*_at"), or of each object of an array, to bw_json_time. */
void bw_json_times_to_text(json_t *v);
/* Writes an audit entry (actor, the request's peer address, action, target, outcome, detail)
 * to the store and the log. Never pass secrets. */
void bw_req_audit(struct bw_http_req *req, const char *actor, const char *action, const char *target,
                  const char *outcome, const char *detail);

const char *bw_role_name(int role);
int bw_role_parse(const char *name); /* BW_ROLE_NONE when unknown */

#endif
