/* host/services/http_client.h: outbound HTTP on libcurl multi driven by the libevent loop:
 * HTTP/2 multiplexing, TLS verification always on, per-attempt timeout, retries with
 * exponential backoff and full jitter that honour Retry-After. */
#ifndef BW_HTTP_CLIENT_H
#define BW_HTTP_CLIENT_H

#include <bulwark/host.h>
#include <event2/event.h>

typedef struct bw_http_client bw_http_client;

struct bw_http_client_limits {
	size_t max_calls; /* calls in flight or waiting to retry; 0 = 10000 */
};

bw_http_client *bw_http_client_new(struct event_base *base, const struct bw_http_client_limits *limits, bw_error *err);
/* Cancels every call still in flight (their done callbacks are not called) and frees. */
void bw_http_client_free(bw_http_client *c);

/* Starts a call; see struct bw_http_request in bulwark/host.h. `done` runs exactly once on the
 * loop thread unless the call is cancelled first. Refused up front (NULL + err): missing or
 * malformed URL, a scheme other than https (http is allowed to loopback hosts only), too many
 * calls (BW_E_LIMIT). Retries: on network errors, timeouts, 429 and 5xx, up to max_retries,
 * but POST/PATCH only when retry_non_idempotent is set; delay = min(cap, base * 2^n) with full
 * jitter, or Retry-After (seconds or HTTP date) when the server sent one, capped. */
bw_http_call *bw_http_client_send(bw_http_client *c, const struct bw_http_request *req, bw_http_done_fn done, void *arg,
                                  bw_error *err);
void bw_http_call_cancel(bw_http_call *call);

/* Calls in flight or waiting to retry. */
size_t bw_http_client_pending(const bw_http_client *c);

#endif
