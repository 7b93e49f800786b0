/* host/services/http_client.c: outbound HTTP for the host and plugins. One libcurl multi handle per
 * client, driven by the libevent loop (socket and timer callbacks, no threads, no sleeping): HTTP/2
 * multiplexing over kept-alive connections, TLS verification always on (TLS 1.2+), per-attempt
 * timeouts, bounded responses, and retries with exponential backoff and jitter that honour
 * Retry-After.
 *
 * Lifetime rules: `done` runs exactly once per call, on the loop thread, never from inside
 * bw_http_client_send. The call handle is invalid once `done` has returned; calling
 * bw_http_call_cancel on it from inside its own `done` is a harmless no-op (the call is already
 * finished), calling it afterwards is a use after free. bw_http_client_free may be called from
 * inside a `done` callback: the client is then torn down when the callback returns.
 *
 * Trust: ca_file is added to the system store (CURLOPT_CAINFO; libcurl keeps its compiled-in
 * CA path), matching "extra trust anchor" in bulwark/host.h. */
#include "http_client.h"

#include "log.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <event2/event_struct.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#ifndef BW_VERSION
#define BW_VERSION "dev"
#endif

#define LOG_COMP               "http"
#define DEFAULT_MAX_CALLS      10000
#define DEFAULT_TIMEOUT_MS     30000u
#define MAX_CONNECT_TIMEOUT_MS 10000u
#define DEFAULT_BACKOFF_MS     500u
#define DEFAULT_BACKOFF_MAX_MS 60000u
#define DEFAULT_MAX_RESPONSE   ((size_t)8 << 20)
#define MAX_REQUEST_BODY       ((size_t)64 << 20)
#define MAX_URL_LEN            8192
#define MAX_REQ_HEADERS        100
#define MAX_REQ_HEADER_LEN     8192
#define MAX_RESP_HEADERS       256
#define MAX_RESP_HEADER_BYTES  (256 * 1024)
#define MAX_HOST_CONNECTIONS   6
#define EASY_POOL_MAX          128  /* finished easy handles kept for reuse */
#define MAX_H2_STREAMS         1000 /* per HTTP/2 connection (the server's SETTINGS may lower it): APNs allows 1000 */

enum call_state {
	CALL_RUNNING, /* an easy handle is in the multi handle */
	CALL_WAITING, /* waiting on the retry timer */
	CALL_IN_DONE  /* unlinked, its done callback is running */
};

/* A response header: "name\0value\0" at these offsets of the call's hbuf (one buffer for all of them, reused
 * by the next attempt: no malloc per header). */
struct resp_header {
	size_t name;
	size_t value;
};

/* A socket curl asked us to watch. */
struct sock_ctx {
	struct event ev;
	curl_socket_t fd;
	bw_http_client *client;
	struct sock_ctx *prev, *next;
};

struct bw_http_call {
	bw_http_client *client;
	struct bw_http_call *prev, *next;
	enum call_state state;
	bw_http_done_fn done;
	void *arg;

	/* Copies of the request. */
	char *method;
	char *url;
	char *safe_url; /* scheme://host[:port]/path: no userinfo or query, safe for messages */
	bool is_https;
	bool loopback;
	bool idempotent;
	bool head;
	bool send_body; /* use POSTFIELDS (body present or a method that carries one) */
	struct curl_slist *req_headers;
	char *body;
	size_t body_len;
	uint32_t timeout_ms;
	uint32_t max_retries;
	uint32_t backoff_ms;
	uint32_t backoff_max_ms;
	char *ca_file;
	char *client_cert;
	char *client_key;
	bool http2;
	bool retry_non_idempotent;
	long verify_result; /* X509_V_OK (0), or why the peer's certificate was refused */
	size_t max_response_bytes;

	/* The current attempt. */
	CURL *easy;
	unsigned attempts;
	struct event retry_ev;
	char errbuf[CURL_ERROR_SIZE];
	bool too_large;       /* body exceeded max_response_bytes */
	bool headers_too_big; /* header count or bytes exceeded */
	char *resp_body;
	size_t resp_len;
	size_t resp_cap;
	struct resp_header *hdrs;
	size_t nhdrs;
	size_t hdrs_cap;
	size_t hdr_bytes;
	char *hbuf;
	size_t hlen;
	size_t hcap;
};

struct bw_http_client {
	struct event_base *base;
	CURLM *multi;
	struct event timer_ev; /* curl's single timeout */
	size_t max_calls;
	size_t ncalls;
	struct bw_http_call *calls;
	struct sock_ctx *socks;
	int depth;  /* > 0 while one of our event callbacks runs */
	bool dying; /* bw_http_client_free was called from inside a callback */
	/* The origin ("scheme://authority") of the last URL curl's parser accepted, with what url_check derived
	 * from it: a URL to the same origin skips the parser (a push service gets thousands of calls a second to
	 * one origin, and parsing was ~6% of the loop). */
	char *origin;
	size_t origin_len;
	char *origin_safe; /* scheme://host[:port], no userinfo */
	bool origin_https;
	bool origin_loopback;
	/* Finished easy handles, reset, for the next attempts: a new handle per request allocated and freed curl's
	 * 16 KiB transfer buffer each time (the largest malloc/free share of the push benchmark). */
	CURL *pool[EASY_POOL_MAX];
	size_t npool;
};

static pthread_once_t g_curl_once = PTHREAD_ONCE_INIT;
static CURLcode g_curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
	g_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void check_multi_info(bw_http_client *c);
static void client_destroy(bw_http_client *c);

/* ---- easy handles */

static CURL *easy_get(bw_http_client *c)
{
	return c->npool > 0 ? c->pool[--c->npool] : curl_easy_init();
}

/* Takes a handle that is not (or no longer) in the multi handle. curl_easy_reset puts every option back to its
 * default, so nothing of one request (headers, client certificate, body) carries over to the next. */
static void easy_put(bw_http_client *c, CURL *e)
{
	if (c->npool < EASY_POOL_MAX && !c->dying) {
		curl_easy_reset(e);
		c->pool[c->npool++] = e;
	} else {
		curl_easy_cleanup(e);
	}
}

/* ---- client entry/exit around event callbacks, so a done callback may free the client */

static void client_enter(bw_http_client *c)
{
	c->depth++;
}

static void client_leave(bw_http_client *c)
{
	if (--c->depth == 0 && c->dying)
		client_destroy(c);
}

/* ---- call list */

static void call_link(bw_http_client *c, struct bw_http_call *call)
{
	call->prev = NULL;
	call->next = c->calls;
	if (c->calls)
		c->calls->prev = call;
	c->calls = call;
	c->ncalls++;
}

static void call_unlink(struct bw_http_call *call)
{
	bw_http_client *c = call->client;
	if (call->prev)
		call->prev->next = call->next;
	else
		c->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	call->prev = call->next = NULL;
	c->ncalls--;
}

static void resp_reset(struct bw_http_call *call)
{
	call->nhdrs = 0;
	call->hdr_bytes = 0;
	call->hlen = 0;
	call->resp_len = 0;
	call->too_large = false;
	call->headers_too_big = false;
	call->errbuf[0] = '\0';
}

static void call_free(struct bw_http_call *call)
{
	if (!call)
		return;
	resp_reset(call);
	free(call->hdrs);
	free(call->hbuf);
	free(call->resp_body);
	free(call->method);
	free(call->url);
	free(call->safe_url);
	free(call->req_headers); /* one block, see headers_copy */
	free(call->body);
	free(call->ca_file);
	free(call->client_cert);
	free(call->client_key);
	free(call);
}

/* Removes the call's easy handle and retry timer, without touching the list. */
static void call_stop(struct bw_http_call *call)
{
	if (call->easy) {
		curl_multi_remove_handle(call->client->multi, call->easy);
		easy_put(call->client, call->easy);
		call->easy = NULL;
	}
	if (call->state == CALL_WAITING)
		evtimer_del(&call->retry_ev);
}

/* ---- libcurl <-> libevent glue */

static void sock_event_cb(evutil_socket_t fd, short events, void *arg)
{
	struct sock_ctx *sc = arg;
	bw_http_client *c = sc->client; /* sc may be freed by socket_action */
	int flags = 0, running = 0;
	if (events & EV_READ)
		flags |= CURL_CSELECT_IN;
	if (events & EV_WRITE)
		flags |= CURL_CSELECT_OUT;
	client_enter(c);
	curl_multi_socket_action(c->multi, fd, flags, &running);
	check_multi_info(c);
	client_leave(c);
}

static void timer_event_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd, (void)events;
	bw_http_client *c = arg;
	int running = 0;
	client_enter(c);
	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi_info(c);
	client_leave(c);
}

static void sock_ctx_remove(bw_http_client *c, struct sock_ctx *sc)
{
	event_del(&sc->ev);
	if (sc->prev)
		sc->prev->next = sc->next;
	else
		c->socks = sc->next;
	if (sc->next)
		sc->next->prev = sc->prev;
	free(sc);
}

static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)easy;
	bw_http_client *c = userp;
	struct sock_ctx *sc = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (sc)
			sock_ctx_remove(c, sc);
		return 0;
	}
	if (!sc) {
		sc = calloc(1, sizeof *sc);
		if (!sc)
			return -1;
		sc->fd = s;
		sc->client = c;
		sc->next = c->socks;
		if (c->socks)
			c->socks->prev = sc;
		c->socks = sc;
		curl_multi_assign(c->multi, s, sc);
	} else {
		event_del(&sc->ev);
	}
	short kind = EV_PERSIST;
	if (what & CURL_POLL_IN)
		kind |= EV_READ;
	if (what & CURL_POLL_OUT)
		kind |= EV_WRITE;
	if (event_assign(&sc->ev, c->base, s, kind, sock_event_cb, sc) != 0 || event_add(&sc->ev, NULL) != 0)
		return -1;
	return 0;
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	(void)multi;
	bw_http_client *c = userp;
	if (timeout_ms < 0) {
		evtimer_del(&c->timer_ev);
		return 0;
	}
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	return evtimer_add(&c->timer_ev, &tv) == 0 ? 0 : -1;
}

/* ---- per-attempt data callbacks */

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct bw_http_call *call = userdata;
	size_t n = size * nmemb;
	if (n > call->max_response_bytes - call->resp_len) {
		call->too_large = true;
		return 0; /* != n: curl aborts with CURLE_WRITE_ERROR */
	}
	if (call->resp_len + n + 1 > call->resp_cap) {
		/* Small first: most answers (push services, APIs) are tens of bytes, and a 16 KiB block per call cost
		 * a measurable share of the loop in malloc/free (push benchmark). */
		size_t cap = call->resp_cap ? call->resp_cap : 256;
		while (cap < call->resp_len + n + 1)
			cap *= 2;
		if (cap > call->max_response_bytes + 1)
			cap = call->max_response_bytes + 1;
		char *nb = realloc(call->resp_body, cap);
		if (!nb)
			return 0;
		call->resp_body = nb;
		call->resp_cap = cap;
	}
	memcpy(call->resp_body + call->resp_len, ptr, n);
	call->resp_len += n;
	return n;
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct bw_http_call *call = userdata;
	size_t n = size * nitems, len = n;
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
		/* A new status line: keep only the headers of the last (final) response. */
		call->nhdrs = 0;
		call->hdr_bytes = 0;
		call->hlen = 0;
		return n;
	}
	const char *colon = memchr(buf, ':', len);
	if (!colon || colon == buf)
		return n; /* blank line ending the block, or not a header */
	size_t nlen = (size_t)(colon - buf);
	while (nlen > 0 && (buf[nlen - 1] == ' ' || buf[nlen - 1] == '\t'))
		nlen--;
	const char *v = colon + 1, *end = buf + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t vlen = (size_t)(end - v);
	if (call->nhdrs >= MAX_RESP_HEADERS || call->hdr_bytes + nlen + vlen > MAX_RESP_HEADER_BYTES) {
		call->headers_too_big = true;
		return 0;
	}
	if (call->nhdrs == call->hdrs_cap) {
		size_t cap = call->hdrs_cap ? call->hdrs_cap * 2 : 16;
		struct resp_header *nh = realloc(call->hdrs, cap * sizeof *nh);
		if (!nh)
			return 0;
		call->hdrs = nh;
		call->hdrs_cap = cap;
	}
	size_t need = call->hlen + nlen + vlen + 2;
	if (need > call->hcap) {
		size_t cap = call->hcap ? call->hcap : 256;
		while (cap < need)
			cap *= 2;
		char *nb = realloc(call->hbuf, cap);
		if (!nb)
			return 0;
		call->hbuf = nb;
		call->hcap = cap;
	}
	char *s = call->hbuf + call->hlen;
	memcpy(s, buf, nlen);
	s[nlen] = '\0';
	memcpy(s + nlen + 1, v, vlen);
	s[nlen + 1 + vlen] = '\0';
	call->hdrs[call->nhdrs].name = call->hlen;
	call->hdrs[call->nhdrs].value = call->hlen + nlen + 1;
	call->hlen = need;
	call->nhdrs++;
	call->hdr_bytes += nlen + vlen;
	return n;
}

static const char *call_header(const struct bw_http_call *call, const char *name)
{
	for (size_t i = 0; i < call->nhdrs; i++)
		if (strcasecmp(call->hbuf + call->hdrs[i].name, name) == 0)
			return call->hbuf + call->hdrs[i].value;
	return NULL;
}

static const char *response_header(const struct bw_http_response *res, const char *name)
{
	if (!res || !res->priv || !name)
		return NULL;
	return call_header(res->priv, name);
}

/* ---- attempts */

static int call_start_attempt(struct bw_http_call *call, bw_error *err)
{
	bw_http_client *c = call->client;
	resp_reset(call);
	CURL *e = easy_get(c);
	if (!e)
		return bw_error_set(err, BW_E_NOMEM, "http: cannot create a curl handle for %s", call->safe_url);
	CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                                                  \
	do {                                                                                                           \
		if (rc == CURLE_OK)                                                                                    \
			rc = curl_easy_setopt(e, opt, val);                                                            \
	} while (0)
	SET(CURLOPT_PRIVATE, (void *)call);
	SET(CURLOPT_URL, call->url);
	SET(CURLOPT_PROTOCOLS_STR, call->is_https ? "https" : "http");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_ERRORBUFFER, call->errbuf);
	SET(CURLOPT_USERAGENT, "bulwark/" BW_VERSION);
	SET(CURLOPT_TIMEOUT_MS, (long)call->timeout_ms);
	SET(CURLOPT_CONNECTTIMEOUT_MS,
	    (long)(call->timeout_ms < MAX_CONNECT_TIMEOUT_MS ? call->timeout_ms : MAX_CONNECT_TIMEOUT_MS));
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, (void *)call);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, (void *)call);
	SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)call->max_response_bytes);
	/* TLS: verification is not configurable, on purpose. */
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (call->ca_file)
		SET(CURLOPT_CAINFO, call->ca_file);
	if (call->client_cert) {
		SET(CURLOPT_SSLCERT, call->client_cert);
		SET(CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (call->client_key) {
		SET(CURLOPT_SSLKEY, call->client_key);
		SET(CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (call->loopback)
		SET(CURLOPT_PROXY, ""); /* a proxy from the environment makes no sense for loopback */
	SET(CURLOPT_HTTP_VERSION, call->http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
	if (call->http2)
		SET(CURLOPT_PIPEWAIT, 1L); /* wait for a connection that can multiplex rather than open another */
	if (call->req_headers)
		SET(CURLOPT_HTTPHEADER, call->req_headers);
	if (call->head) {
		SET(CURLOPT_NOBODY, 1L);
	} else if (call->send_body) {
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
		SET(CURLOPT_POSTFIELDS, call->body ? call->body : "");
		if (strcmp(call->method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, call->method);
	} else if (strcmp(call->method, "GET") == 0) {
		SET(CURLOPT_HTTPGET, 1L);
	} else {
		SET(CURLOPT_CUSTOMREQUEST, call->method);
	}
#undef SET
	if (rc != CURLE_OK) {
		curl_easy_cleanup(e);
		return bw_error_set(err, BW_E_INTERNAL, "http: cannot configure the request to %s: %s", call->safe_url,
		                    curl_easy_strerror(rc));
	}
	CURLMcode mrc = curl_multi_add_handle(c->multi, e);
	if (mrc != CURLM_OK) {
		curl_easy_cleanup(e);
		return bw_error_set(err, mrc == CURLM_OUT_OF_MEMORY ? BW_E_NOMEM : BW_E_INTERNAL,
		                    "http: cannot start the request to %s: %s", call->safe_url,
		                    curl_multi_strerror(mrc));
	}
	call->easy = e;
	call->state = CALL_RUNNING;
	call->attempts++;
	return BW_OK;
}

/* Unlinks the call, runs its done callback once, frees it. */
static void call_finish(struct bw_http_call *call, int error, const char *message, long status, long version,
                        bool retryable)
{
	call_unlink(call);
	call->state = CALL_IN_DONE;
	if (!call->resp_body) {
		call->resp_body = malloc(1);
		call->resp_cap = call->resp_body ? 1 : 0;
	}
	if (call->resp_body)
		call->resp_body[call->resp_len] = '\0';
	struct bw_http_response res = {
	    .error = error,
	    .error_message = message ? message : "",
	    .status = status,
	    .body = call->resp_body ? call->resp_body : "",
	    .body_len = call->resp_body ? call->resp_len : 0,
	    .attempts = call->attempts,
	    .http_version = version,
	    .priv = call,
	    .header = response_header,
	    .retryable = retryable,
	};
	call->done(&res, call->arg);
	call_free(call);
}

/* True when curl's error text reports a TLS alert from the peer (OpenSSL: "... alert ..."). */
static bool tls_alert(const struct bw_http_call *call)
{
	return strstr(call->errbuf, " alert ") != NULL;
}

/* Classifies a finished transfer: the bw error code, and whether another attempt may help. */
static int classify_curl_error(const struct bw_http_call *call, CURLcode rc, bool *retryable)
{
	*retryable = false;
	if (call->too_large || call->headers_too_big || rc == CURLE_FILESIZE_EXCEEDED)
		return BW_E_LIMIT;
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		*retryable = true;
		return BW_E_TIMEOUT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_INVALIDCERTSTATUS:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED:
	case CURLE_SSL_ENGINE_INITFAILED:
	case CURLE_SSL_CLIENTCERT:
	case CURLE_USE_SSL_FAILED:
		return BW_E_TLS; /* certificates and configuration: trying again cannot help */
	case CURLE_SSL_CONNECT_ERROR:
		/* A TLS alert means the peer refused us (no client certificate, no common version), and
		 * a verify result means we refused the peer: final. Otherwise the handshake was cut
		 * short, e.g. by a server restarting. */
		*retryable = !tls_alert(call) && call->verify_result == 0;
		return BW_E_TLS;
	case CURLE_RECV_ERROR:
		if (tls_alert(call))
			return BW_E_TLS; /* TLS 1.3 reports a refused client certificate on the first read */
		*retryable = true;
		return BW_E_IO;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		*retryable = true;
		return BW_E_IO;
	case CURLE_OUT_OF_MEMORY:
		return BW_E_NOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL:
		return BW_E_INVALID;
	default:
		return BW_E_IO;
	}
}

static bool status_retryable(long status)
{
	return status == 429 || (status >= 500 && status <= 599 && status != 501);
}

/* Delay before retry number `n` (0 = first retry): Retry-After when the server sent a usable one,
 * else min(cap, base * 2^n) with jitter in [delay/2, delay]; both capped by backoff_max_ms. */
static uint64_t retry_delay_ms(const struct bw_http_call *call, unsigned n, bool use_retry_after)
{
	uint64_t cap = call->backoff_max_ms;
	const char *ra = use_retry_after ? call_header(call, "Retry-After") : NULL;
	if (ra && *ra) {
		char *endp = NULL;
		if (ra[0] >= '0' && ra[0] <= '9') {
			unsigned long long secs = strtoull(ra, &endp, 10);
			if (endp && *endp == '\0') {
				if (secs > cap / 1000)
					return cap; /* also keeps secs * 1000 from overflowing */
				return secs * 1000 < cap ? secs * 1000 : cap;
			}
		} else {
			time_t when = curl_getdate(ra, NULL);
			if (when != (time_t)-1) {
				time_t now = time(NULL);
				if (when <= now)
					return 0;
				uint64_t ms = (uint64_t)(when - now) * 1000;
				return ms < cap ? ms : cap;
			}
		}
	}
	uint64_t delay = call->backoff_ms;
	for (unsigned i = 0; i < n && delay < cap; i++)
		delay *= 2;
	if (delay > cap)
		delay = cap;
	uint32_t r = 0;
	uint64_t lo = delay / 2, span = delay - lo;
	if (span > 0 && RAND_bytes((unsigned char *)&r, sizeof r) == 1)
		return lo + (uint64_t)r % (span + 1);
	return delay;
}

static void retry_timer_cb(evutil_socket_t fd, short events, void *arg)
{
	(void)fd, (void)events;
	struct bw_http_call *call = arg;
	bw_http_client *c = call->client;
	bw_error err;
	client_enter(c);
	if (call_start_attempt(call, &err) != BW_OK)
		call_finish(call, err.code, err.message, 0, 0, false);
	client_leave(c);
}

static long map_http_version(long v)
{
	switch (v) {
	case CURL_HTTP_VERSION_1_0:
	case CURL_HTTP_VERSION_1_1:
		return 1;
	case CURL_HTTP_VERSION_2_0:
		return 2;
	case CURL_HTTP_VERSION_3:
		return 3;
	default:
		return 0;
	}
}

static void call_attempt_done(struct bw_http_call *call, CURLcode rc)
{
	bw_http_client *c = call->client;
	long status = 0, version = 0;
	curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(call->easy, CURLINFO_HTTP_VERSION, &version);
	version = map_http_version(version);
	/* OpenSSL may report a failed chain as an odd library error ("asn1 encoding routines"), and
	 * curl then as a plain connect error: the verify result tells a certificate problem apart. */
	call->verify_result = 0;
	if (rc != CURLE_OK)
		curl_easy_getinfo(call->easy, CURLINFO_SSL_VERIFYRESULT, &call->verify_result);
	curl_multi_remove_handle(c->multi, call->easy);
	easy_put(c, call->easy);
	call->easy = NULL;

	bool retryable;
	int error = BW_OK;
	if (rc == CURLE_OK) {
		retryable = status_retryable(status);
	} else {
		error = classify_curl_error(call, rc, &retryable);
		status = 0;
	}
	bool allowed = call->idempotent || call->retry_non_idempotent;
	if (retryable && allowed && call->attempts <= call->max_retries) {
		uint64_t delay = retry_delay_ms(call, call->attempts - 1, rc == CURLE_OK);
		if (rc == CURLE_OK)
			bw_log_debug(LOG_COMP, "%s %s answered %ld, retry %u in %llu ms", call->method, call->safe_url,
			             status, call->attempts, (unsigned long long)delay);
		else
			bw_log_debug(LOG_COMP, "%s %s failed (%s), retry %u in %llu ms", call->method, call->safe_url,
			             call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc), call->attempts,
			             (unsigned long long)delay);
		struct timeval tv = {.tv_sec = (time_t)(delay / 1000), .tv_usec = (suseconds_t)(delay % 1000) * 1000};
		call->state = CALL_WAITING;
		if (evtimer_add(&call->retry_ev, &tv) == 0)
			return;
		call->state = CALL_RUNNING; /* cannot wait: report this attempt's outcome */
	}
	if (error == BW_OK) {
		call_finish(call, BW_OK, NULL, status, version, retryable);
		return;
	}
	char msg[CURL_ERROR_SIZE + 512];
	const char *why = call->errbuf[0] ? call->errbuf : curl_easy_strerror(rc);
	char limit[96];
	if (call->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
		snprintf(limit, sizeof limit, "the response body exceeds max_response_bytes (%zu)",
		         call->max_response_bytes);
		why = limit;
	} else if (call->headers_too_big) {
		why = "the response headers exceed the header limit";
	}
	char verify[160] = "";
	if (call->verify_result != 0) /* name the certificate problem, not only OpenSSL's error */
		snprintf(verify, sizeof verify, " (server certificate: %s)",
		         X509_verify_cert_error_string(call->verify_result));
	if (call->attempts > 1)
		snprintf(msg, sizeof msg, "%s %s: %s%s (after %u attempts)", call->method, call->safe_url, why, verify,
		         call->attempts);
	else
		snprintf(msg, sizeof msg, "%s %s: %s%s", call->method, call->safe_url, why, verify);
	call_finish(call, error, msg, 0, version, retryable);
}

static void check_multi_info(bw_http_client *c)
{
	CURLMsg *msg;
	int left;
	while (!c->dying && (msg = curl_multi_info_read(c->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURLcode rc = msg->data.result;
		char *priv = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		if (priv)
			call_attempt_done((struct bw_http_call *)(void *)priv, rc);
	}
}

/* ---- request validation */

static bool host_is_loopback(const char *host)
{
	if (strcasecmp(host, "localhost") == 0)
		return true;
	char buf[INET6_ADDRSTRLEN + 2];
	size_t len = strlen(host);
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']' && len - 2 < sizeof buf) {
		memcpy(buf, host + 1, len - 2);
		buf[len - 2] = '\0';
		struct in6_addr a6;
		if (inet_pton(AF_INET6, buf, &a6) != 1)
			return false;
		if (IN6_IS_ADDR_LOOPBACK(&a6))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
	}
	struct in_addr a4;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

static void origin_remember(bw_http_client *c, const char *url, const char *safe_url, size_t path_len, bool https,
                            bool loopback);

/* Parses the URL with curl's own parser (the same one the transfer uses) and checks the scheme. */
static int url_check_full(struct bw_http_call *call, const char *url, bw_error *err)
{
	if (!url || !*url)
		return bw_error_set(err, BW_E_INVALID, "http: request url is missing");
	if (strlen(url) > MAX_URL_LEN)
		return bw_error_set(err, BW_E_INVALID, "http: request url is longer than %d bytes", MAX_URL_LEN);
	CURLU *u = curl_url();
	if (!u)
		return bw_error_set(err, BW_E_NOMEM, "http: out of memory parsing the request url");
	char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL;
	int rc = BW_OK;
	CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
	if (uc != CURLUE_OK) {
		rc = bw_error_set(err, BW_E_INVALID, "http: request url is malformed (%s)", curl_url_strerror(uc));
		goto out;
	}
	if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
		rc = bw_error_set(err, BW_E_INVALID, "http: request url has no scheme or host");
		goto out;
	}
	curl_url_get(u, CURLUPART_PORT, &port, 0);
	curl_url_get(u, CURLUPART_PATH, &path, 0);
	call->is_https = strcasecmp(scheme, "https") == 0;
	call->loopback = host_is_loopback(host);
	if (!call->is_https && strcasecmp(scheme, "http") != 0) {
		rc = bw_error_set(err, BW_E_INVALID, "http: url scheme \"%s\" is not allowed (https only)", scheme);
		goto out;
	}
	if (!call->is_https && !call->loopback) {
		rc = bw_error_set(err, BW_E_INVALID,
		                  "http: plain http to %s is refused: use https (http is for loopback only)", host);
		goto out;
	}
	size_t n = strlen(scheme) + strlen(host) + (port ? strlen(port) : 0) + (path ? strlen(path) : 0) + 8;
	call->safe_url = malloc(n);
	call->url = strdup(url);
	if (!call->safe_url || !call->url) {
		rc = bw_error_set(err, BW_E_NOMEM, "http: out of memory copying the request url");
		goto out;
	}
	snprintf(call->safe_url, n, "%s://%s%s%s%s", scheme, host, port ? ":" : "", port ? port : "",
	         path ? path : "/");
	origin_remember(call->client, url, call->safe_url, path ? strlen(path) : 1, call->is_https, call->loopback);
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_free(path);
	curl_url_cleanup(u);
	return rc;
}

/* Length of "scheme://authority" at the start of url, or 0 when it does not look like one. */
static size_t origin_length(const char *url)
{
	const char *sep = strstr(url, "://");
	if (!sep || sep == url || sep - url > 16)
		return 0;
	return (size_t)(sep + 3 - url) + strcspn(sep + 3, "/?#");
}

/* Remembers the origin of a URL curl's parser accepted (safe_url minus its path is the safe origin). */
static void origin_remember(bw_http_client *c, const char *url, const char *safe_url, size_t path_len, bool https,
                            bool loopback)
{
	size_t olen = origin_length(url), slen = strlen(safe_url);
	if (olen == 0 || path_len > slen)
		return;
	if (c->origin && c->origin_len == olen && memcmp(c->origin, url, olen) == 0)
		return;
	char *o = strndup(url, olen), *so = strndup(safe_url, slen - path_len);
	if (!o || !so) {
		free(o);
		free(so);
		return;
	}
	free(c->origin);
	free(c->origin_safe);
	c->origin = o;
	c->origin_len = olen;
	c->origin_safe = so;
	c->origin_https = https;
	c->origin_loopback = loopback;
}

/* The same checks as url_check_full for a URL whose origin curl's parser accepted last time: only the rest
 * (path, query, fragment) is new, and it must be plain (no spaces, controls or backslashes; else the full
 * parser decides). */
static int url_check(struct bw_http_call *call, const char *url, bw_error *err)
{
	bw_http_client *c = call->client;
	size_t len = url ? strnlen(url, MAX_URL_LEN + 1) : 0;
	if (c->origin && len <= MAX_URL_LEN && len >= c->origin_len && memcmp(url, c->origin, c->origin_len) == 0 &&
	    (url[c->origin_len] == '/' || url[c->origin_len] == '\0')) {
		const char *rest = url + c->origin_len;
		bool plain = true;
		for (const unsigned char *p = (const unsigned char *)rest; *p && plain; p++)
			plain = *p > 0x20 && *p != 0x7f && *p != '\\';
		if (plain) {
			size_t plen = strcspn(rest, "?#"), olen = strlen(c->origin_safe);
			call->safe_url = malloc(olen + plen + 2);
			call->url = strdup(url);
			if (!call->safe_url || !call->url)
				return bw_error_set(err, BW_E_NOMEM, "http: out of memory copying the request url");
			memcpy(call->safe_url, c->origin_safe, olen);
			if (plen == 0)
				call->safe_url[olen++] = '/';
			memcpy(call->safe_url + olen, rest, plen);
			call->safe_url[olen + plen] = '\0';
			call->is_https = c->origin_https;
			call->loopback = c->origin_loopback;
			return BW_OK;
		}
	}
	return url_check_full(call, url, err);
}

static bool is_tchar(int ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
	       (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool header_name_is(const char *h, const char *name)
{
	size_t n = strlen(name);
	return strncasecmp(h, name, n) == 0 && (h[n] == ':' || h[n] == ';' || h[n] == ' ');
}

/* Checks the request headers and copies them into one allocation laid out as a curl_slist (nodes, then the
 * strings): curl only reads the list, and one block instead of two mallocs per header matters at push rates.
 * Freed with free(), not curl_slist_free_all. */
static int headers_copy(struct bw_http_call *call, const char *const *headers, bw_error *err)
{
	bool has_ct = false, has_expect = false;
	size_t count = 0, bytes = 0;
	for (const char *const *h = headers; h && *h; h++, count++) {
		if (count >= MAX_REQ_HEADERS)
			return bw_error_set(err, BW_E_LIMIT, "http: more than %d request headers", MAX_REQ_HEADERS);
		size_t len = strnlen(*h, MAX_REQ_HEADER_LEN + 1), i = 0;
		if (len > MAX_REQ_HEADER_LEN)
			return bw_error_set(err, BW_E_LIMIT, "http: request header %zu is longer than %d bytes", count,
			                    MAX_REQ_HEADER_LEN);
		while (i < len && is_tchar((unsigned char)(*h)[i]))
			i++;
		if (i == 0 || ((*h)[i] != ':' && (*h)[i] != ';') || strpbrk(*h, "\r\n"))
			return bw_error_set(err, BW_E_INVALID,
			                    "http: request header %zu is not a single \"Name: value\" line", count);
		has_ct |= header_name_is(*h, "Content-Type");
		has_expect |= header_name_is(*h, "Expect");
		bytes += len + 1;
	}
	/* No 100-continue round trip; no form-urlencoded type invented by curl for a body. */
	const char *extra[2] = {has_expect ? NULL : "Expect:", (has_ct || !call->send_body) ? NULL : "Content-Type:"};
	size_t n = count;
	for (int i = 0; i < 2; i++)
		if (extra[i]) {
			bytes += strlen(extra[i]) + 1;
			n++;
		}
	if (n == 0)
		return BW_OK;
	struct curl_slist *nodes = malloc(n * sizeof *nodes + bytes);
	if (!nodes)
		return bw_error_set(err, BW_E_NOMEM, "http: out of memory copying request headers");
	char *str = (char *)(nodes + n);
	size_t k = 0;
	for (size_t j = 0; j < count + 2; j++) {
		const char *h = j < count ? headers[j] : extra[j - count];
		if (!h)
			continue;
		size_t len = strlen(h) + 1;
		memcpy(str, h, len);
		nodes[k].data = str;
		nodes[k].next = k + 1 < n ? &nodes[k + 1] : NULL;
		str += len;
		k++;
	}
	call->req_headers = nodes;
	return BW_OK;
}

static char *dup_opt(const char *s, bool *oom)
{
	if (!s)
		return NULL;
	char *d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

/* ---- public API */

bw_http_client *bw_http_client_new(struct event_base *base, const struct bw_http_client_limits *limits, bw_error *err)
{
	if (!base) {
		bw_error_set(err, BW_E_INVALID, "http: event base is missing");
		return NULL;
	}
	pthread_once(&g_curl_once, curl_init_once);
	if (g_curl_init_rc != CURLE_OK) {
		bw_error_set(err, BW_E_INTERNAL, "http: curl_global_init failed: %s",
		             curl_easy_strerror(g_curl_init_rc));
		return NULL;
	}
	bw_http_client *c = calloc(1, sizeof *c);
	if (!c) {
		bw_error_set(err, BW_E_NOMEM, "http: out of memory creating the client");
		return NULL;
	}
	c->base = base;
	c->max_calls = limits && limits->max_calls ? limits->max_calls : DEFAULT_MAX_CALLS;
	c->multi = curl_multi_init();
	if (!c->multi) {
		free(c);
		bw_error_set(err, BW_E_NOMEM, "http: cannot create a curl multi handle");
		return NULL;
	}
	evtimer_assign(&c->timer_ev, base, timer_event_cb, c);
	CURLMcode m = curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
	if (m == CURLM_OK)
		m = curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, (void *)c);
	if (m == CURLM_OK)
		m = curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	if (m == CURLM_OK)
		m = curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, (void *)c);
	if (m == CURLM_OK)
		m = curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	if (m == CURLM_OK)
		m = curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MAX_HOST_CONNECTIONS);
	/* curl's default of 100 streams would open a second connection to a push service at the 101st push in
	 * flight; one connection carries them all. */
	if (m == CURLM_OK)
		m = curl_multi_setopt(c->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, (long)MAX_H2_STREAMS);
	if (m != CURLM_OK) {
		curl_multi_cleanup(c->multi);
		free(c);
		bw_error_set(err, BW_E_INTERNAL, "http: cannot configure the curl multi handle: %s",
		             curl_multi_strerror(m));
		return NULL;
	}
	return c;
}

static void client_destroy(bw_http_client *c)
{
	while (c->calls) {
		struct bw_http_call *call = c->calls;
		call_stop(call);
		call_unlink(call);
		call_free(call);
	}
	while (c->npool > 0)
		curl_easy_cleanup(c->pool[--c->npool]);
	curl_multi_cleanup(c->multi); /* may still report sockets being removed */
	while (c->socks)
		sock_ctx_remove(c, c->socks);
	evtimer_del(&c->timer_ev);
	free(c->origin);
	free(c->origin_safe);
	free(c);
}

void bw_http_client_free(bw_http_client *c)
{
	if (!c)
		return;
	if (c->depth > 0) {
		/* Inside one of our callbacks: stop every call now, free the rest on the way out. */
		while (c->calls) {
			struct bw_http_call *call = c->calls;
			call_stop(call);
			call_unlink(call);
			call_free(call);
		}
		c->dying = true;
		return;
	}
	client_destroy(c);
}

bw_http_call *bw_http_client_send(bw_http_client *c, const struct bw_http_request *req, bw_http_done_fn done, void *arg,
                                  bw_error *err)
{
	if (!c || !req || !done) {
		bw_error_set(err, BW_E_INVALID, "http: client, request and done callback are required");
		return NULL;
	}
	if (req->size < sizeof(struct bw_http_request)) {
		bw_error_set(err, BW_E_INVALID, "http: request.size is %u, expected at least %zu", req->size,
		             sizeof(struct bw_http_request));
		return NULL;
	}
	if (c->dying) {
		bw_error_set(err, BW_E_STATE, "http: the client is being freed");
		return NULL;
	}
	if (c->ncalls >= c->max_calls) {
		bw_error_set(err, BW_E_LIMIT, "http: too many calls in flight (limit %zu)", c->max_calls);
		return NULL;
	}
	if (req->body_len > MAX_REQUEST_BODY) {
		bw_error_set(err, BW_E_LIMIT, "http: request body of %zu bytes exceeds the %zu byte limit",
		             req->body_len, MAX_REQUEST_BODY);
		return NULL;
	}
	if (req->body_len > 0 && !req->body) {
		bw_error_set(err, BW_E_INVALID, "http: request body is NULL but body_len is %zu", req->body_len);
		return NULL;
	}
	const char *method = req->method ? req->method : (req->body_len > 0 ? "POST" : "GET");
	size_t mlen = strnlen(method, 33), i = 0;
	while (i < mlen && is_tchar((unsigned char)method[i]))
		i++;
	if (mlen == 0 || mlen > 32 || i != mlen) {
		bw_error_set(err, BW_E_INVALID, "http: request method is not a valid HTTP method token");
		return NULL;
	}

	struct bw_http_call *call = calloc(1, sizeof *call);
	if (!call) {
		bw_error_set(err, BW_E_NOMEM, "http: out of memory creating a call");
		return NULL;
	}
	call->client = c;
	call->done = done;
	call->arg = arg;
	if (url_check(call, req->url, err) != BW_OK)
		goto fail;
	bool oom = false;
	call->method = dup_opt(method, &oom);
	call->ca_file = dup_opt(req->ca_file, &oom);
	call->client_cert = dup_opt(req->client_cert, &oom);
	call->client_key = dup_opt(req->client_key, &oom);
	if (req->body_len > 0) {
		call->body = malloc(req->body_len);
		if (call->body)
			memcpy(call->body, req->body, req->body_len);
		else
			oom = true;
		call->body_len = req->body_len;
	}
	if (oom) {
		bw_error_set(err, BW_E_NOMEM, "http: out of memory copying the request");
		goto fail;
	}
	call->head = strcmp(method, "HEAD") == 0;
	call->send_body = !call->head && (req->body_len > 0 || strcmp(method, "POST") == 0 ||
	                                  strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0);
	static const char *const idempotent[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
	for (size_t k = 0; k < sizeof idempotent / sizeof idempotent[0]; k++)
		call->idempotent |= strcmp(method, idempotent[k]) == 0;
	if (headers_copy(call, req->headers, err) != BW_OK)
		goto fail;
	call->timeout_ms = req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS;
	call->max_retries = req->max_retries;
	call->backoff_ms = req->backoff_ms ? req->backoff_ms : DEFAULT_BACKOFF_MS;
	call->backoff_max_ms = req->backoff_max_ms ? req->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
	call->http2 = req->http2;
	call->retry_non_idempotent = req->retry_non_idempotent;
	call->max_response_bytes = req->max_response_bytes ? req->max_response_bytes : DEFAULT_MAX_RESPONSE;
	evtimer_assign(&call->retry_ev, c->base, retry_timer_cb, call);
	if (call_start_attempt(call, err) != BW_OK)
		goto fail;
	call_link(c, call);
	return call;
fail:
	call_free(call);
	return NULL;
}

void bw_http_call_cancel(bw_http_call *call)
{
	if (!call || call->state == CALL_IN_DONE)
		return; /* inside its own done callback: already finished, freed when done returns */
	call_stop(call);
	call_unlink(call);
	call_free(call);
}

size_t bw_http_client_pending(const bw_http_client *c)
{
	return c ? c->ncalls : 0;
}
