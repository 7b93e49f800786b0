/* host/core/plugin_api.c: the host services table (struct bw_host_api) given to plugins:
 * each entry checks its arguments and the lifecycle phase, then calls a host service. */
#include "crypto.h"
#include "devices.h"
#include "loader.h"
#include "log.h"
#include "policies.h"
#include "registry.h"
#include "router.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct bw_timer {
	struct event *ev;
	struct bw_plugin_ctx *ctx;
	void (*cb)(void *);
	void *arg;
	bool repeat;
	uint64_t repeat_ms;
	struct bw_timer *prev, *next;
};

static void api_log(bw_plugin_ctx *ctx, int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bw_logv(level, ctx ? ctx->name : "plugin", fmt, ap);
	va_end(ap);
}

static void timer_unlink(struct bw_timer *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		t->ctx->timers = t->next;
	if (t->next)
		t->next->prev = t->prev;
	event_free(t->ev);
	free(t);
}

static void timer_fire(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct bw_timer *t = arg;
	void (*cb)(void *) = t->cb;
	void *cbarg = t->arg;
	if (t->repeat) {
		/* Re-armed before the callback runs, so the callback may cancel it. */
		struct timeval tv = {(time_t)(t->repeat_ms / 1000), (suseconds_t)(t->repeat_ms % 1000) * 1000};
		event_add(t->ev, &tv);
	} else {
		timer_unlink(t); /* one-shot: freed before the callback, which must not cancel it */
	}
	cb(cbarg);
}

static bw_timer *api_timer_add(bw_plugin_ctx *ctx, uint64_t after_ms, uint64_t repeat_ms, void (*cb)(void *), void *arg)
{
	if (!ctx || !cb || ctx->state == BW_PS_FAILED || ctx->state == BW_PS_STOPPED)
		return NULL;
	struct bw_timer *t = calloc(1, sizeof *t);
	if (!t)
		return NULL;
	t->ctx = ctx;
	t->cb = cb;
	t->arg = arg;
	t->repeat = repeat_ms > 0;
	t->repeat_ms = repeat_ms;
	t->ev = event_new(ctx->host->base, -1, 0, timer_fire, t);
	if (!t->ev) {
		free(t);
		return NULL;
	}
	t->next = ctx->timers;
	if (t->next)
		t->next->prev = t;
	ctx->timers = t;
	struct timeval tv = {(time_t)(after_ms / 1000), (suseconds_t)(after_ms % 1000) * 1000};
	event_add(t->ev, &tv);
	return t;
}

static void api_timer_cancel(bw_timer *t)
{
	if (t)
		timer_unlink(t);
}

static int api_event_subscribe(bw_plugin_ctx *ctx, const char *topic, bw_event_fn cb, void *arg, bw_error *err)
{
	if (!ctx || !ctx->in_init)
		return bw_error_set(err, BW_E_STATE, "event subscriptions may be added only during init");
	return bw_events_subscribe(ctx->host->events, ctx, topic, cb, arg, err);
}

static int api_event_emit(bw_plugin_ctx *ctx, const char *topic, json_t *payload, bw_error *err)
{
	if (!ctx) {
		json_decref(payload);
		return bw_error_set(err, BW_E_INVALID, "no plugin context");
	}
	return bw_events_emit(ctx->host->events, topic, payload, err);
}

static int api_capability_register(bw_plugin_ctx *ctx, const char *kind, const void *ops, size_t ops_size,
                                   void *ops_arg, bw_error *err)
{
	static const char *const kinds[] = {"push",  "directory",     "scanner",        "bridge",
	                                    "rules", "mdm_connector", "mail_connector", NULL};
	if (!ctx || !ctx->in_init)
		return bw_error_set(err, BW_E_STATE, "capabilities may be registered only during init");
	bool known = false;
	for (size_t i = 0; kind && kinds[i] && !known; i++)
		known = strcmp(kinds[i], kind) == 0;
	if (!known)
		return bw_error_set(err, BW_E_INVALID, "unknown capability kind '%s'", kind ? kind : "(null)");
	if (!ops || ops_size < sizeof(uint32_t))
		return bw_error_set(err, BW_E_INVALID, "capability '%s': operations table missing", kind);
	struct bw_capability cap = {.ops = ops, .ops_size = ops_size, .ops_arg = ops_arg, .ctx = ctx};
	snprintf(cap.kind, sizeof cap.kind, "%s", kind);
	return bw_plugins_capability_add(ctx->host->plugins, &cap, err);
}

struct plugin_route {
	struct bw_plugin_ctx *ctx;
	void (*handler)(bw_http_req *, void *);
	void *arg;
	struct plugin_route *next;
};

/* Route trampolines live as long as the process (routes are registered once, at init). */
static struct plugin_route *g_routes;

static void route_trampoline(struct bw_http_req *req, void *arg)
{
	struct plugin_route *pr = arg;
	if (pr->ctx->state != BW_PS_RUNNING) {
		char msg[160];
		snprintf(msg, sizeof msg, "plugin %s is not running (%s)", pr->ctx->name,
		         bw_plugin_state_name(pr->ctx->state));
		bw_req_reply_error(req, 503, "unavailable", msg);
		return;
	}
	pr->handler(req, pr->arg);
}

static int api_route_add(bw_plugin_ctx *ctx, const struct bw_route *route, bw_error *err)
{
	if (!ctx || !ctx->in_init)
		return bw_error_set(err, BW_E_STATE, "routes may be added only during init");
	if (!route || route->size < sizeof(struct bw_route) || !route->handler || !route->method || !route->path ||
	    !route->listener)
		return bw_error_set(err, BW_E_INVALID, "incomplete route");
	bool admin = strcmp(route->listener, "admin") == 0;
	if (!admin && strcmp(route->listener, "agent") != 0)
		return bw_error_set(err, BW_E_INVALID, "route listener must be \"admin\" or \"agent\"");
	if (route->path[0] == '/' || strstr(route->path, "..") || strlen(route->path) > 200)
		return bw_error_set(err, BW_E_INVALID, "route path '%s' must be relative, without '..'", route->path);
	/* Agent routes always need a valid device certificate (the router's device authenticator);
	 * req_principal is then the device id. min_role applies to admin routes only. */
	int role = admin ? route->min_role : BW_ROLE_READONLY;
	if (role < BW_ROLE_READONLY || role > BW_ROLE_ADMIN)
		return bw_error_set(err, BW_E_INVALID, "admin routes need min_role BW_ROLE_READONLY or BW_ROLE_ADMIN");
	struct plugin_route *pr = calloc(1, sizeof *pr);
	if (!pr)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	pr->ctx = ctx;
	pr->handler = route->handler;
	pr->arg = route->arg;
	char pattern[300];
	snprintf(pattern, sizeof pattern, admin ? "/api/v1/plugins/%s/%s" : "/agent/v1/plugins/%s/%s", ctx->name,
	         route->path);
	int rc = bw_router_add(admin ? ctx->host->admin_router : ctx->host->agent_router, route->method, pattern, role,
	                       route_trampoline, pr, ctx, err);
	if (rc != BW_OK) {
		free(pr);
		return rc;
	}
	pr->next = g_routes;
	g_routes = pr;
	return BW_OK;
}

static const char *api_req_method(bw_http_req *req)
{
	return req->route ? req->route->method : "";
}

static const char *api_req_path(bw_http_req *req)
{
	const char *p = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req->ev));
	return p ? p : "/";
}

static const char *api_req_principal(bw_http_req *req)
{
	return req->principal;
}

static int api_req_role(bw_http_req *req)
{
	return req->role;
}

static bw_http_call *api_http_send(bw_plugin_ctx *ctx, const struct bw_http_request *r, bw_http_done_fn done, void *arg,
                                   bw_error *err)
{
	if (!ctx || ctx->in_init) {
		bw_error_set(err, BW_E_STATE, "outbound calls may start only after init (in start or later)");
		return NULL;
	}
	return bw_http_client_send(ctx->host->http, r, done, arg, err);
}

static int api_record_put(bw_plugin_ctx *ctx, const char *collection, const char *key, json_t *value, bw_error *err)
{
	if (!value)
		return bw_error_set(err, BW_E_INVALID, "record value is NULL");
	char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text)
		return bw_error_set(err, BW_E_INVALID, "record value cannot be encoded");
	int rc = bw_store_record_put(ctx->host->store, ctx->name, collection, key, text, (int64_t)time(NULL), err);
	free(text);
	return rc;
}

static int api_record_get(bw_plugin_ctx *ctx, const char *collection, const char *key, json_t **out, bw_error *err)
{
	char *text = NULL;
	*out = NULL;
	int rc = bw_store_record_get(ctx->host->store, ctx->name, collection, key, &text, err);
	if (rc != BW_OK)
		return rc;
	*out = json_loads(text, JSON_DECODE_ANY, NULL);
	free(text);
	return *out ? BW_OK : bw_error_set(err, BW_E_DB, "record %s/%s is not valid JSON", collection, key);
}

static int api_record_delete(bw_plugin_ctx *ctx, const char *collection, const char *key, bw_error *err)
{
	return bw_store_record_delete(ctx->host->store, ctx->name, collection, key, err);
}

static int api_record_list(bw_plugin_ctx *ctx, const char *collection, const char *after_key, size_t limit,
                           json_t **out, bw_error *err)
{
	return bw_store_record_list(ctx->host->store, ctx->name, collection, after_key, limit, out, err);
}

static int api_work_submit(bw_plugin_ctx *ctx, void (*work)(void *), void (*done)(void *), void *arg, bw_error *err)
{
	return bw_workq_submit(ctx->host->workq, work, done, arg, err);
}

static bw_metric *api_metric_new(bw_plugin_ctx *ctx, int kind, const char *name, const char *help, const char *label,
                                 const double *buckets, size_t nbuckets, bw_error *err)
{
	char full[256];
	if (!name || (size_t)snprintf(full, sizeof full, "bulwark_%s_%s", ctx->name, name) >= sizeof full) {
		bw_error_set(err, BW_E_INVALID, "metric name missing or too long");
		return NULL;
	}
	return bw_metric_new(ctx->host->metrics, kind, full, help, label, buckets, nbuckets, err);
}

static int64_t g_clock_offset_ms;

static int64_t api_clock_now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000 + g_clock_offset_ms;
}

static void api_health_set(bw_plugin_ctx *ctx, bool degraded, const char *detail)
{
	ctx->degraded = degraded;
	snprintf(ctx->detail, sizeof ctx->detail, "%s", detail ? detail : "");
}

static int api_device_get(bw_plugin_ctx *ctx, const char *device_id, json_t **out, bw_error *err)
{
	*out = NULL;
	if (!device_id || !bw_uuid_valid(device_id))
		return bw_error_set(err, BW_E_INVALID, "device id must be a UUID");
	int rc = bw_store_device_json(ctx->host->store, device_id, out, err);
	if (rc != BW_OK)
		return rc;
	/* Fresher last-seen time and the derived out_of_sync status, as the admin API shows them. */
	struct bw_reg_device *d = bw_registry_find(ctx->host->registry, device_id);
	json_t *ls = json_object_get(*out, "last_seen");
	int64_t seen = json_is_integer(ls) ? json_integer_value(ls) : 0;
	if (d && d->last_seen > seen)
		json_object_set_new(*out, "last_seen", json_integer(seen = d->last_seen));
	const char *st = json_string_value(json_object_get(*out, "status"));
	if (st && strcmp(st, "active") == 0 &&
	    seen < (int64_t)time(NULL) - ctx->host->settings.agent.out_of_sync_after_ms / 1000)
		json_object_set_new(*out, "status", json_string("out_of_sync"));
	/* The effective policy in its admin form (secrets only as "password_set"): rules read it. */
	bw_policies *pol = bw_policies_of(ctx->host);
	json_t *policy = NULL;
	if (pol && bw_policy_device_effective(pol, device_id, &policy, NULL) == BW_OK)
		json_object_set_new(*out, "policy", policy);
	return BW_OK;
}

static int api_device_list(bw_plugin_ctx *ctx, const char *after_id, size_t limit, json_t **out, bw_error *err)
{
	*out = NULL;
	if (limit == 0 || limit > 1000)
		return bw_error_set(err, BW_E_INVALID, "limit must be 1 to 1000");
	struct bw_device_filter f = {.after_id = after_id, .limit = limit};
	json_t *list = NULL;
	int rc = bw_store_device_list(ctx->host->store, &f, &list, err);
	if (rc != BW_OK)
		return rc;
	json_t *ids = json_array();
	size_t i;
	json_t *d;
	json_array_foreach(list, i, d)
	{
		json_array_append(ids, json_object_get(d, "id"));
	}
	json_decref(list);
	*out = ids;
	return BW_OK;
}

static int api_command_queue(bw_plugin_ctx *ctx, const char *device_id, const char *type, json_t *params,
                             char id_out[37], bw_error *err)
{
	bool merged = false;
	char by[80];
	snprintf(by, sizeof by, "plugin:%s", ctx->name);
	return bw_command_queue(ctx->host, device_id, type, params, 0, by, id_out, &merged, err);
}

static const struct bw_host_api g_api = {
    .size = sizeof(struct bw_host_api),
    .abi_major = BW_ABI_MAJOR,
    .abi_minor = BW_ABI_MINOR,
    .log = api_log,
    .timer_add = api_timer_add,
    .timer_cancel = api_timer_cancel,
    .event_subscribe = api_event_subscribe,
    .event_emit = api_event_emit,
    .capability_register = api_capability_register,
    .route_add = api_route_add,
    .req_method = api_req_method,
    .req_path = api_req_path,
    .req_query = bw_req_query,
    .req_header = bw_req_header,
    .req_body = bw_req_body,
    .req_json = bw_req_json,
    .req_principal = api_req_principal,
    .req_role = api_req_role,
    .respond_json = bw_req_reply_json,
    .respond_error = bw_req_reply_error,
    .http_send = api_http_send,
    .http_cancel = bw_http_call_cancel,
    .record_put = api_record_put,
    .record_get = api_record_get,
    .record_delete = api_record_delete,
    .record_list = api_record_list,
    .work_submit = api_work_submit,
    .metric_new = api_metric_new,
    .metric_add = bw_metric_add,
    .metric_set = bw_metric_set,
    .metric_observe = bw_metric_observe,
    .uuid_new = bw_uuid_new,
    .clock_now_ms = api_clock_now_ms,
    .health_set = api_health_set,
    .device_get = api_device_get,
    .device_list = api_device_list,
    .command_queue = api_command_queue,
};

const struct bw_host_api *bw_host_api_table(void)
{
	return &g_api;
}

void bw_plugin_ctx_release(struct bw_plugin_ctx *ctx)
{
	while (ctx->timers)
		timer_unlink(ctx->timers);
	if (ctx->host && ctx->host->events)
		bw_events_unsubscribe_owner(ctx->host->events, ctx);
}
