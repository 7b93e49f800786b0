/* bulwark/host.h: the host services table (struct bw_host_api) that a plugin reaches the host through.
 *
 * ABI rules: the table is append-only. Its first field is its size; a plugin built against a
 * newer minor version must check `host->size` (BW_HOST_HAS(host, field)) before calling a
 * function added after the minor it needs. Nothing is ever removed or reordered.
 *
 * Threads: every function here must be called on the loop thread (the thread that calls the
 * plugin's init/start/callbacks), except the metric update functions, `log` and `uuid_new`,
 * which are thread-safe and may be called from work-queue functions.
 *
 * JSON ownership (jansson): "borrowed" means the callee does not keep or free the reference;
 * "stolen" means the callee takes the reference (it calls json_decref when done, also on
 * failure); "new reference" means the caller must json_decref what it receives. */
#ifndef BULWARK_HOST_H
#define BULWARK_HOST_H

#include <bulwark/errors.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bw_plugin_ctx bw_plugin_ctx; /* one per loaded plugin instance, owned by the host */
typedef struct bw_timer bw_timer;           /* a timer, owned by the host */
typedef struct bw_metric bw_metric;         /* a metric, owned by the host */
typedef struct bw_http_call bw_http_call;   /* an outbound HTTP call in flight */
typedef struct bw_http_req bw_http_req;     /* an inbound request handled by a plugin route */

enum bw_log_level { BW_LOG_ERROR = 0, BW_LOG_WARN = 1, BW_LOG_INFO = 2, BW_LOG_DEBUG = 3 };

enum bw_metric_kind { BW_METRIC_COUNTER = 1, BW_METRIC_GAUGE = 2, BW_METRIC_HISTOGRAM = 3 };

/* Roles, ordered: a route that needs BW_ROLE_READONLY also admits administrators. */
enum bw_role { BW_ROLE_NONE = 0, BW_ROLE_READONLY = 1, BW_ROLE_ADMIN = 2 };

/* A route served by a plugin. Admin routes live under /api/v1/plugins/<plugin>/<path>,
 * agent routes under /agent/v1/plugins/<plugin>/<path>. The host authenticates the caller
 * (admin listener: a session or API token with at least `min_role`; agent listener: a valid
 * device certificate, whatever min_role says, and req_principal is then the device id) before
 * the handler runs. */
struct bw_route {
	uint32_t size;        /* sizeof(struct bw_route) */
	const char *listener; /* "admin" or "agent" */
	const char *method;   /* "GET", "POST", "PUT", "DELETE" */
	const char *path;     /* relative path, e.g. "hello"; no leading slash */
	int min_role;         /* enum bw_role (admin listener) */
	/* Must answer exactly once through respond_*; may do so later from the loop thread
	 * (the request stays valid until answered or until the client goes away, see req_gone). */
	void (*handler)(bw_http_req *req, void *arg);
	void *arg;
};

/* An outbound HTTP request. All pointers are borrowed and copied by http_send. */
struct bw_http_request {
	uint32_t size;              /* sizeof(struct bw_http_request) */
	const char *method;         /* "GET", "POST", ... (NULL = GET, or POST when body is set) */
	const char *url;            /* https://... (http:// only to loopback) */
	const char *const *headers; /* NULL-terminated "Name: value" strings, or NULL */
	const void *body;
	size_t body_len;
	uint32_t timeout_ms;       /* per attempt; 0 = 30000 */
	uint32_t max_retries;      /* retries after the first attempt for 429, 5xx, network errors */
	uint32_t backoff_ms;       /* first retry delay; doubles each retry, with jitter; 0 = 500 */
	uint32_t backoff_max_ms;   /* cap of one delay (also caps Retry-After); 0 = 60000 */
	const char *ca_file;       /* extra trust anchor (PEM), or NULL for the system store */
	const char *client_cert;   /* PEM client certificate file, or NULL */
	const char *client_key;    /* PEM key for client_cert, or NULL */
	bool http2;                /* ask for HTTP/2 (multiplexed over one connection per origin) */
	bool retry_non_idempotent; /* retry POST as well (the caller knows the call is safe to repeat) */
	size_t max_response_bytes; /* 0 = 8 MiB */
};

/* The outcome of an outbound request, valid only during the done callback. */
struct bw_http_response {
	int error; /* BW_OK when an HTTP status was received, else BW_E_TIMEOUT, BW_E_TLS, BW_E_IO, ... */
	const char *error_message; /* set when error != BW_OK */
	long status;               /* HTTP status, 0 when none */
	const char *body;          /* NUL-terminated for convenience; body_len excludes the NUL */
	size_t body_len;
	unsigned attempts; /* how many attempts were made */
	long http_version; /* 1 or 2 */
	const void *priv;  /* host-internal, for header() */
	/* Value of a response header (case-insensitive), or NULL. */
	const char *(*header)(const struct bw_http_response *res, const char *name);
	/* ABI 1.2: whether another attempt may succeed: timeouts, dropped or reset connections (also
	 * during TLS), 429 and 5xx (except 501). False for certificate, trust and TLS configuration
	 * errors, alerts from the peer, limits and other statuses. Set after the host's own retries. */
	bool retryable;
};

typedef void (*bw_event_fn)(const char *topic, json_t *payload /* borrowed */, void *arg);
typedef void (*bw_http_done_fn)(const struct bw_http_response *res, void *arg);

struct bw_host_api {
	size_t size; /* sizeof(struct bw_host_api) of the host that built it */
	uint16_t abi_major;
	uint16_t abi_minor;

	/* ---- log: lines are prefixed with the plugin's name; never pass secrets. */
	void (*log)(bw_plugin_ctx *ctx, int level, const char *fmt, ...)
#if defined(__GNUC__)
	    __attribute__((format(printf, 3, 4)))
#endif
	    ;

	/* ---- timers: cb runs on the loop thread after `after_ms`, then every `repeat_ms` (0 = once).
	 * A one-shot timer is freed by the host after it fired; cancel it before that, never after. */
	bw_timer *(*timer_add)(bw_plugin_ctx *ctx, uint64_t after_ms, uint64_t repeat_ms, void (*cb)(void *arg),
	                       void *arg);
	void (*timer_cancel)(bw_timer *timer);

	/* ---- event bus: topics are dotted names ("device.enrolled"); a subscription to "device.*"
	 * matches every topic under "device.", "*" matches all. Subscribers run on the loop thread,
	 * after the emitter returned. emit steals `payload` (may be NULL). */
	int (*event_subscribe)(bw_plugin_ctx *ctx, const char *topic, bw_event_fn cb, void *arg, bw_error *err);
	int (*event_emit)(bw_plugin_ctx *ctx, const char *topic, json_t *payload, bw_error *err);

	/* ---- capabilities: during init only. `ops` points to a kind-specific operations table
	 * (see the capability headers) that must stay valid until fini; ops_size is its sizeof. */
	int (*capability_register)(bw_plugin_ctx *ctx, const char *kind, const void *ops, size_t ops_size,
	                           void *ops_arg, bw_error *err);

	/* ---- routes: during init only; the route struct is copied. */
	int (*route_add)(bw_plugin_ctx *ctx, const struct bw_route *route, bw_error *err);

	/* ---- inbound request accessors (valid until the request is answered) */
	const char *(*req_method)(bw_http_req *req);
	const char *(*req_path)(bw_http_req *req);                    /* full path without query */
	const char *(*req_query)(bw_http_req *req, const char *name); /* decoded value or NULL */
	const char *(*req_header)(bw_http_req *req, const char *name);
	const void *(*req_body)(bw_http_req *req, size_t *len);
	/* Parses the body as a JSON object; on failure answers nothing and fills err. New reference. */
	int (*req_json)(bw_http_req *req, json_t **out, bw_error *err);
	const char *(*req_principal)(bw_http_req *req); /* admin name (admin listener) */
	int (*req_role)(bw_http_req *req);
	void (*respond_json)(bw_http_req *req, int status, json_t *body /* stolen */);
	void (*respond_error)(bw_http_req *req, int status, const char *code, const char *message);

	/* ---- outbound HTTP (libcurl multi on the loop): `done` is called exactly once on the loop
	 * thread, unless http_cancel was called first. Returns NULL and fills err when the request
	 * is refused up front (bad URL, queue full). */
	bw_http_call *(*http_send)(bw_plugin_ctx *ctx, const struct bw_http_request *req, bw_http_done_fn done,
	                           void *arg, bw_error *err);
	void (*http_cancel)(bw_http_call *call);

	/* ---- record store, namespaced per plugin: collection and key are short strings
	 * (1..128 bytes), values JSON (borrowed on put; new reference on get). */
	int (*record_put)(bw_plugin_ctx *ctx, const char *collection, const char *key, json_t *value, bw_error *err);
	int (*record_get)(bw_plugin_ctx *ctx, const char *collection, const char *key, json_t **out, bw_error *err);
	int (*record_delete)(bw_plugin_ctx *ctx, const char *collection, const char *key, bw_error *err);
	/* Keys in order after `after_key` (NULL = from the start), at most `limit` (<= 1000).
	 * *out is a new reference to an array of {"key":..., "value":...}. */
	int (*record_list)(bw_plugin_ctx *ctx, const char *collection, const char *after_key, size_t limit,
	                   json_t **out, bw_error *err);

	/* ---- work queue: `work` runs on a worker thread (it may block; it must not call the host
	 * table except log/metrics/uuid); `done` then runs on the loop thread. */
	int (*work_submit)(bw_plugin_ctx *ctx, void (*work)(void *arg), void (*done)(void *arg), void *arg,
	                   bw_error *err);

	/* ---- metrics: exported as bulwark_<plugin>_<name>. `label` names one optional label
	 * (NULL for none); updates then pass its value. Buckets for histograms (NULL = default
	 * latency buckets in seconds). Thread-safe updates. */
	bw_metric *(*metric_new)(bw_plugin_ctx *ctx, int kind, const char *name, const char *help, const char *label,
	                         const double *buckets, size_t nbuckets, bw_error *err);
	void (*metric_add)(bw_metric *m, const char *label_value, double v);     /* counter, gauge */
	void (*metric_set)(bw_metric *m, const char *label_value, double v);     /* gauge */
	void (*metric_observe)(bw_metric *m, const char *label_value, double v); /* histogram */

	/* ---- identifiers: random (v4) UUID from OpenSSL's RNG, never all-zero. */
	int (*uuid_new)(char out[37], bw_error *err);

	/* ---- clock: Unix time in milliseconds (the host's clock, which tests can shift). */
	int64_t (*clock_now_ms)(void);

	/* ---- plugin state for /healthz: a short detail shown next to the plugin (e.g. a
	 * certificate's expiry), and whether the plugin is degraded. The string is copied. */
	void (*health_set)(bw_plugin_ctx *ctx, bool degraded, const char *detail);

	/* ---- ABI 1.1: devices (check BW_HOST_HAS before use when built for 1.0 hosts too) */
	/* The device record: registry fields, "status" (active, out_of_sync, unregistered, wiped),
	 * "last_seen" (Unix seconds), "group", "owner", and "inventory" (the latest snapshot, see
	 * docs/agent-protocol.md). New reference. BW_E_NOTFOUND for an unknown id. */
	int (*device_get)(bw_plugin_ctx *ctx, const char *device_id, json_t **out, bw_error *err);
	/* Device ids in id order after `after_id` (NULL = from the start), at most `limit` (<= 1000):
	 * a new reference to an array of strings. For periodic work over the whole fleet. */
	int (*device_list)(bw_plugin_ctx *ctx, const char *after_id, size_t limit, json_t **out, bw_error *err);
	/* Queues a device command (lock, wipe, enterprise_wipe, locate, scan, update, sync_policy);
	 * `params` borrowed (an object or NULL); the new (or merged) command's id in id_out. */
	int (*command_queue)(bw_plugin_ctx *ctx, const char *device_id, const char *type, json_t *params,
	                     char id_out[37], bw_error *err);
};

/* True when the host table is large enough to contain `field`. */
#define BW_HOST_HAS(host, field)                                                                                       \
	((host)->size >= offsetof(struct bw_host_api, field) + sizeof((host)->field) && (host)->field != NULL)

#ifdef __cplusplus
}
#endif
#endif
