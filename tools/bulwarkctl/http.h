/* http.h: bulwarkctl's HTTPS client, a thin wrapper over the libcurl easy interface that
 * enforces the transport policy (verified TLS 1.2+, https only, no redirects, timeouts). */
#ifndef BWCTL_HTTP_H
#define BWCTL_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <bulwark/errors.h>

#define BWCTL_HTTP_MAX_BODY (16u * 1024 * 1024) /* largest buffered (JSON) response */

/* Receives a 2xx response body piece by piece; returns false (after filling err) to abort. */
typedef bool (*bwctl_http_sink_fn)(void *arg, const char *data, size_t len, bw_error *err);

struct bwctl_http_request {
	const char *server;  /* base URL, e.g. https://127.0.0.1:8444 */
	const char *ca_file; /* NULL: system trust store */
	const char *method;  /* "GET", "POST", "PUT" or "DELETE" */
	const char *path;    /* starts with '/', already URL-encoded */
	const char *token;   /* NULL: no Authorization header */
	const char *body;    /* JSON request body, or NULL */
	size_t body_len;
	const char *accept; /* NULL: application/json */
	bool long_transfer; /* backups: long total timeout, abort only when the transfer stalls */
	bwctl_http_sink_fn sink;
	void *sink_arg;
};

struct bwctl_http_response {
	long status;
	char *body; /* NUL-terminated; empty when a 2xx body went to the sink */
	size_t body_len;
	long retry_after;     /* seconds from a Retry-After header, or -1 */
	bool transport_error; /* on failure: true = network/TLS problem, false = local or response problem */
};

/* Call once before any request, and the cleanup once at exit. */
int bwctl_http_global_init(bw_error *err);
void bwctl_http_global_cleanup(void);

/* Performs one request. BW_OK means an HTTP response arrived (whatever its status); failures fill
 * `err` with a one-line message naming the server. Free the response with bwctl_http_response_free
 * in both cases. */
int bwctl_http_perform(const struct bwctl_http_request *req, struct bwctl_http_response *resp, bw_error *err);
void bwctl_http_response_free(struct bwctl_http_response *resp);

/* URL-encodes one path segment; free with bwctl_secure_free. */
char *bwctl_http_escape(const char *segment);

#endif
