/* tests/unit/test_http_client.c: the outbound HTTP client against servers running in this process on
 * the same event loop (libevent evhttp, plain on 127.0.0.1 and ::1, TLS through bufferevent_openssl
 * with certificates generated here), plus nghttpd for HTTP/2 when it is installed. */
#include "testutil.h"

#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- certificates, generated once per run */

struct certs {
	char *dir;
	char *cert, *key;             /* server: SAN IP:127.0.0.1, IP:::1, DNS:localhost */
	char *other_cert, *other_key; /* an unrelated self-signed pair: the wrong CA, and the client cert */
};
static struct certs g_certs;

static void add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	assert_non_null(ext);
	assert_int_equal(X509_add_ext(x, ext, -1), 1);
	X509_EXTENSION_free(ext);
}

/* A self-signed EC P-256 certificate like `openssl req -x509` makes, written as PEM files. */
static void make_cert(const char *cn, char **cert_path, char **key_path)
{
	EVP_PKEY *pk = EVP_EC_gen("P-256");
	assert_non_null(pk);
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	uint32_t serial;
	assert_int_equal(RAND_bytes((unsigned char *)&serial, sizeof serial), 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(serial >> 1) + 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	add_ext(x, NID_basic_constraints, "critical,CA:TRUE");
	add_ext(x, NID_subject_key_identifier, "hash");
	add_ext(x, NID_authority_key_identifier, "keyid:always");
	add_ext(x, NID_subject_alt_name, "IP:127.0.0.1,IP:::1,DNS:localhost");
	assert_true(X509_sign(x, pk, EVP_sha256()) > 0);

	char path[1024];
	snprintf(path, sizeof path, "%s/%s.crt", g_certs.dir, cn);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	*cert_path = strdup(path);
	snprintf(path, sizeof path, "%s/%s.key", g_certs.dir, cn);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	*key_path = strdup(path);
	X509_free(x);
	EVP_PKEY_free(pk);
}

static int group_setup(void **state)
{
	(void)state;
	signal(SIGPIPE, SIG_IGN);
	g_certs.dir = bw_test_tmpdir("httpc");
	make_cert("server", &g_certs.cert, &g_certs.key);
	make_cert("other", &g_certs.other_cert, &g_certs.other_key);
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	bw_test_rmtree(g_certs.dir);
	free(g_certs.dir);
	free(g_certs.cert);
	free(g_certs.key);
	free(g_certs.other_cert);
	free(g_certs.other_key);
	return 0;
}

/* ---- the in-process servers */

struct fx {
	struct event_base *base;
	struct evhttp *http, *http6, *https;
	SSL_CTX *ssl_ctx, *ssl_ctx_mtls;
	bool require_client_cert;
	int port, port6, tls_port;
	int hang_fd, hang_port; /* listens, never accepts: requests to it never get an answer */
	bw_http_client *client;
	/* server behaviour */
	int hits;
	int fail_times;          /* /flaky fails this many times ... */
	int fail_status;         /* ... with this status ... */
	const char *retry_after; /* ... and this Retry-After ("date+2" = an HTTP-date 2 s ahead) */
	size_t big_size;
};

static void server_handler(struct evhttp_request *req, void *arg)
{
	struct fx *fx = arg;
	fx->hits++;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct evbuffer *buf = evbuffer_new();
	assert_non_null(buf);
	if (!path)
		path = "/";
	if (strcmp(path, "/hello") == 0) {
		evhttp_add_header(out, "X-Test", "yes");
		evbuffer_add_printf(buf, "hello world");
		evhttp_send_reply(req, 200, "OK", buf);
	} else if (strcmp(path, "/echo") == 0) {
		static const struct {
			enum evhttp_cmd_type cmd;
			const char *name;
		} cmds[] = {{EVHTTP_REQ_GET, "GET"},        {EVHTTP_REQ_POST, "POST"},   {EVHTTP_REQ_PUT, "PUT"},
		            {EVHTTP_REQ_DELETE, "DELETE"},  {EVHTTP_REQ_PATCH, "PATCH"}, {EVHTTP_REQ_HEAD, "HEAD"},
		            {EVHTTP_REQ_OPTIONS, "OPTIONS"}};
		const char *m = "?";
		for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
			if (cmds[i].cmd == evhttp_request_get_command(req))
				m = cmds[i].name;
		const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
		const char *token = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Token");
		evhttp_add_header(out, "X-Method", m);
		evhttp_add_header(out, "X-Content-Type", ct ? ct : "none");
		evhttp_add_header(out, "X-Token", token ? token : "none");
		evbuffer_add_buffer(buf, evhttp_request_get_input_buffer(req));
		evhttp_send_reply(req, 200, "OK", buf);
	} else if (strcmp(path, "/flaky") == 0) {
		if (fx->hits <= fx->fail_times) {
			if (fx->retry_after && strcmp(fx->retry_after, "date+2") == 0) {
				char date[64];
				time_t when = time(NULL) + 2;
				struct tm tm;
				gmtime_r(&when, &tm);
				strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
				evhttp_add_header(out, "Retry-After", date);
			} else if (fx->retry_after) {
				evhttp_add_header(out, "Retry-After", fx->retry_after);
			}
			evbuffer_add_printf(buf, "failing");
			evhttp_send_reply(req, fx->fail_status, "Failing", buf);
		} else {
			evbuffer_add_printf(buf, "ok after %d", fx->hits);
			evhttp_send_reply(req, 200, "OK", buf);
		}
	} else if (strcmp(path, "/big") == 0 || strcmp(path, "/bigchunked") == 0) {
		char *data = malloc(fx->big_size);
		assert_non_null(data);
		memset(data, 'x', fx->big_size);
		evbuffer_add(buf, data, fx->big_size);
		free(data);
		if (strcmp(path, "/big") == 0) {
			evhttp_send_reply(req, 200, "OK", buf); /* with Content-Length */
		} else {
			evhttp_send_reply_start(req, 200, "OK"); /* chunked: size unknown up front */
			evhttp_send_reply_chunk(req, buf);
			evhttp_send_reply_end(req);
		}
	} else if (strcmp(path, "/manyheaders") == 0) {
		for (int i = 0; i < 300; i++) {
			char name[32];
			snprintf(name, sizeof name, "X-H-%d", i);
			evhttp_add_header(out, name, "v");
		}
		evhttp_send_reply(req, 200, "OK", buf);
	} else if (strcmp(path, "/whoami") == 0) {
		struct bufferevent *bev = evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		X509 *peer = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
		evhttp_add_header(out, "X-Client-Cert", peer ? "yes" : "no");
		X509_free(peer);
		evhttp_send_reply(req, 200, "OK", buf);
	} else {
		evhttp_send_reply(req, 404, "Not Found", buf);
	}
	evbuffer_free(buf);
}

static struct bufferevent *tls_bevcb(struct event_base *base, void *arg)
{
	struct fx *fx = arg;
	SSL *ssl = SSL_new(fx->require_client_cert ? fx->ssl_ctx_mtls : fx->ssl_ctx);
	assert_non_null(ssl);
	struct bufferevent *bev =
	    bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(bev);
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static int bound_port(struct evhttp_bound_socket *bs)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof ss;
	assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &len), 0);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static struct evhttp *server_new(struct fx *fx, const char *addr, int *port)
{
	struct evhttp *h = evhttp_new(fx->base);
	assert_non_null(h);
	evhttp_set_gencb(h, server_handler, fx);
	evhttp_set_allowed_methods(h, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                  EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD | EVHTTP_REQ_OPTIONS);
	struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(h, addr, 0);
	if (!bs) {
		evhttp_free(h);
		return NULL;
	}
	*port = bound_port(bs);
	return h;
}

static SSL_CTX *server_ssl_ctx(bool mtls)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	assert_int_equal(SSL_CTX_use_certificate_file(ctx, g_certs.cert, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, g_certs.key, SSL_FILETYPE_PEM), 1);
	if (mtls) {
		assert_int_equal(SSL_CTX_load_verify_locations(ctx, g_certs.other_cert, NULL), 1);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	return ctx;
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof *fx);
	assert_non_null(fx);
	fx->base = event_base_new();
	assert_non_null(fx->base);
	fx->http = server_new(fx, "127.0.0.1", &fx->port);
	assert_non_null(fx->http);
	fx->http6 = server_new(fx, "::1", &fx->port6); /* NULL when the host has no IPv6 loopback */
	fx->ssl_ctx = server_ssl_ctx(false);
	fx->ssl_ctx_mtls = server_ssl_ctx(true);
	fx->https = server_new(fx, "127.0.0.1", &fx->tls_port);
	assert_non_null(fx->https);
	evhttp_set_bevcb(fx->https, tls_bevcb, fx);

	fx->hang_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fx->hang_fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(bind(fx->hang_fd, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(listen(fx->hang_fd, 64), 0);
	socklen_t len = sizeof sa;
	assert_int_equal(getsockname(fx->hang_fd, (struct sockaddr *)&sa, &len), 0);
	fx->hang_port = ntohs(sa.sin_port);

	bw_error err = {0};
	fx->client = bw_http_client_new(fx->base, NULL, &err);
	assert_non_null(fx->client);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	bw_http_client_free(fx->client);
	evhttp_free(fx->http);
	if (fx->http6)
		evhttp_free(fx->http6);
	evhttp_free(fx->https);
	SSL_CTX_free(fx->ssl_ctx);
	SSL_CTX_free(fx->ssl_ctx_mtls);
	close(fx->hang_fd);
	event_base_free(fx->base);
	free(fx);
	return 0;
}

/* ---- client side helpers */

struct result {
	int calls;
	int *total; /* shared counter for batches, or NULL */
	int error;
	char message[700];
	long status;
	char *body;
	size_t body_len;
	unsigned attempts;
	long version;
	bool retryable;
	char x_test[32], x_test_upper[32], x_method[16], x_ctype[64], x_token[32], x_client_cert[8];
	bool missing_header_is_null;
	struct timespec start;
	long elapsed_ms;
	/* re-entrancy tests */
	bw_http_call *self;           /* cancel this from inside done */
	bw_http_client **free_client; /* free this client from inside done */
};

static long ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (long)(t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

static void copy_header(const struct bw_http_response *res, const char *name, char *dst, size_t n)
{
	const char *v = res->header(res, name);
	snprintf(dst, n, "%s", v ? v : "");
}

static void on_done(const struct bw_http_response *res, void *arg)
{
	struct result *r = arg;
	r->calls++;
	if (r->total)
		(*r->total)++;
	r->elapsed_ms = ms_since(&r->start);
	r->error = res->error;
	snprintf(r->message, sizeof r->message, "%s", res->error_message ? res->error_message : "(null)");
	r->status = res->status;
	r->attempts = res->attempts;
	r->version = res->http_version;
	r->retryable = res->retryable;
	free(r->body);
	r->body = malloc(res->body_len + 1);
	assert_non_null(r->body);
	assert_non_null(res->body);
	assert_int_equal(res->body[res->body_len], '\0');
	memcpy(r->body, res->body, res->body_len + 1);
	r->body_len = res->body_len;
	copy_header(res, "x-test", r->x_test, sizeof r->x_test);
	copy_header(res, "X-TEST", r->x_test_upper, sizeof r->x_test_upper);
	copy_header(res, "X-Method", r->x_method, sizeof r->x_method);
	copy_header(res, "X-Content-Type", r->x_ctype, sizeof r->x_ctype);
	copy_header(res, "X-Token", r->x_token, sizeof r->x_token);
	copy_header(res, "X-Client-Cert", r->x_client_cert, sizeof r->x_client_cert);
	r->missing_header_is_null = res->header(res, "X-Not-There") == NULL;
	if (r->self)
		bw_http_call_cancel(r->self); /* documented: a no-op inside its own done */
	if (r->free_client) {
		bw_http_client_free(*r->free_client);
		*r->free_client = NULL;
	}
}

static void result_clear(struct result *r)
{
	free(r->body);
	memset(r, 0, sizeof *r);
}

static void deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
	(void)fd, (void)ev;
	*(bool *)arg = true;
}

/* Runs the loop until *counter reaches target or max_ms passed (a safety net, not a speed check). */
static void run_until(struct fx *fx, const int *counter, int target, int max_ms)
{
	bool expired = false;
	struct event *t = evtimer_new(fx->base, deadline_cb, &expired);
	assert_non_null(t);
	struct timeval tv = {.tv_sec = max_ms / 1000, .tv_usec = (max_ms % 1000) * 1000};
	evtimer_add(t, &tv);
	while (*counter < target && !expired)
		event_base_loop(fx->base, EVLOOP_ONCE);
	event_free(t);
}

static void run_for(struct fx *fx, int ms)
{
	int never = 0;
	run_until(fx, &never, 1, ms);
}

static struct bw_http_request req_new(const char *url)
{
	struct bw_http_request r = {.size = sizeof r, .url = url};
	return r;
}

static bw_http_call *send_ok(bw_http_client *c, const struct bw_http_request *rq, struct result *r)
{
	clock_gettime(CLOCK_MONOTONIC, &r->start);
	bw_error err = {0};
	bw_http_call *call = bw_http_client_send(c, rq, on_done, r, &err);
	if (!call)
		print_message("send refused: %s\n", err.message);
	assert_non_null(call);
	return call;
}

/* Sends and runs the loop until done ran. */
static void call_sync(struct fx *fx, const struct bw_http_request *rq, struct result *r)
{
	send_ok(fx->client, rq, r);
	assert_int_equal(r->calls, 0); /* never called from inside send */
	run_until(fx, &r->calls, 1, 20000);
	if (r->calls != 1)
		print_message("no answer; last message: %s\n", r->message);
	assert_int_equal(r->calls, 1);
}

/* ---- tests */

static void test_get_ok(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", fx->port);
	struct bw_http_request rq = req_new(url);
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "hello world");
	assert_int_equal(r.body_len, 11);
	assert_string_equal(r.x_test, "yes");
	assert_string_equal(r.x_test_upper, "yes");
	assert_true(r.missing_header_is_null);
	assert_int_equal(r.attempts, 1);
	assert_int_equal(r.version, 1);
	assert_int_equal(bw_http_client_pending(fx->client), 0);

	/* "localhost" is loopback too, and a 404 is a received status: error stays BW_OK. */
	snprintf(url, sizeof url, "http://localhost:%d/nothing-here", fx->port);
	rq = req_new(url);
	rq.max_retries = 3;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 404);
	assert_int_equal(r.attempts, 1);
	assert_false(r.retryable);
	result_clear(&r);
}

static void test_post_echo(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", fx->port);
	const char *headers[] = {"Content-Type: application/json", "X-Token: abc", NULL};
	char body[] = "{\"a\":1}";
	struct bw_http_request rq = req_new(url);
	rq.headers = headers;
	rq.body = body;
	rq.body_len = strlen(body);
	struct result r = {0};
	send_ok(fx->client, &rq, &r);
	/* Everything was copied at send: scribbling over the caller's buffers changes nothing. */
	memset(body, '#', strlen(body));
	headers[1] = "X-Token: changed";
	memset(url, 0, sizeof url);
	run_until(fx, &r.calls, 1, 20000);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.x_method, "POST"); /* method NULL + body = POST */
	assert_string_equal(r.x_ctype, "application/json");
	assert_string_equal(r.x_token, "abc");
	assert_string_equal(r.body, "{\"a\":1}");

	/* Binary body with a NUL byte, PUT, no Content-Type: none is invented. */
	snprintf(url, sizeof url, "http://127.0.0.1:%d/echo", fx->port);
	const unsigned char bin[] = {1, 0, 2, 0, 3};
	rq = req_new(url);
	rq.method = "PUT";
	rq.body = bin;
	rq.body_len = sizeof bin;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.x_method, "PUT");
	assert_string_equal(r.x_ctype, "none");
	assert_int_equal(r.body_len, sizeof bin);
	assert_memory_equal(r.body, bin, sizeof bin);

	/* DELETE without a body; HEAD gets headers and no body. */
	rq = req_new(url);
	rq.method = "DELETE";
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.x_method, "DELETE");
	rq.method = "HEAD";
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.x_method, "HEAD");
	assert_int_equal(r.body_len, 0);
	result_clear(&r);
}

static void test_retry_503_then_200(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 1;
	fx->fail_status = 503;
	struct bw_http_request rq = req_new(url);
	rq.max_retries = 3;
	rq.backoff_ms = 10;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 2);
	assert_int_equal(fx->hits, 2);
	assert_string_equal(r.body, "ok after 2");
	result_clear(&r);
}

static void test_retry_after_seconds(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 1;
	fx->fail_status = 429;
	fx->retry_after = "1";
	struct bw_http_request rq = req_new(url);
	rq.max_retries = 2;
	rq.backoff_ms = 10; /* would retry after ~10 ms without Retry-After */
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 2);
	assert_true(r.elapsed_ms >= 900); /* the server's Retry-After was honoured */
	result_clear(&r);
}

static void test_retry_after_date(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 1;
	fx->fail_status = 503;
	fx->retry_after = "date+2";
	struct bw_http_request rq = req_new(url);
	rq.max_retries = 1;
	rq.backoff_ms = 10;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 2);
	assert_true(r.elapsed_ms >= 900); /* an HTTP-date 2 s ahead (1 s resolution) */
	result_clear(&r);
}

static void test_retry_after_capped(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 1;
	fx->fail_status = 503;
	fx->retry_after = "30";
	struct bw_http_request rq = req_new(url);
	rq.max_retries = 1;
	rq.backoff_ms = 10;
	rq.backoff_max_ms = 200;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.attempts, 2);
	/* Behaviour, not speed: an uncapped Retry-After would have waited 30 s. */
	assert_true(r.elapsed_ms < 15000);
	result_clear(&r);
}

static void test_retries_exhausted(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 100;
	fx->fail_status = 503;
	struct bw_http_request rq = req_new(url);
	rq.max_retries = 2;
	rq.backoff_ms = 10;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_OK); /* a status was received */
	assert_int_equal(r.status, 503);
	assert_true(r.retryable); /* a later try may pass: the caller may retry it after its own delay */
	assert_int_equal(r.attempts, 3);
	assert_int_equal(fx->hits, 3);
	assert_string_equal(r.body, "failing");

	/* 501 means "never going to work": not retried. */
	fx->hits = 0;
	fx->fail_status = 501;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 501);
	assert_int_equal(r.attempts, 1);
	assert_int_equal(fx->hits, 1);
	result_clear(&r);
}

static void test_post_not_retried(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 100;
	fx->fail_status = 503;
	struct bw_http_request rq = req_new(url);
	rq.method = "POST";
	rq.body = "x";
	rq.body_len = 1;
	rq.max_retries = 2;
	rq.backoff_ms = 10;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 503);
	assert_int_equal(r.attempts, 1);
	assert_int_equal(fx->hits, 1);

	/* PATCH neither. */
	fx->hits = 0;
	rq.method = "PATCH";
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.attempts, 1);
	assert_int_equal(fx->hits, 1);

	/* The caller says the POST is safe to repeat. */
	fx->hits = 0;
	rq.method = "POST";
	rq.retry_non_idempotent = true;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 503);
	assert_int_equal(r.attempts, 3);
	assert_int_equal(fx->hits, 3);
	result_clear(&r);
}

static void test_timeout(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hang", fx->hang_port);
	struct bw_http_request rq = req_new(url);
	rq.timeout_ms = 300;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_E_TIMEOUT);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.attempts, 1);
	assert_non_null(strstr(r.message, "127.0.0.1"));
	assert_true(r.elapsed_ms >= 250);

	/* Timeouts are retried for idempotent methods. */
	rq.max_retries = 1;
	rq.backoff_ms = 10;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_E_TIMEOUT);
	assert_int_equal(r.attempts, 2);
	assert_non_null(strstr(r.message, "after 2 attempts"));
	result_clear(&r);
}

static void test_connection_refused(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/x", bw_test_free_port());
	struct bw_http_request rq = req_new(url);
	rq.max_retries = 2;
	rq.backoff_ms = 10;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_E_IO);
	assert_int_equal(r.status, 0);
	assert_true(r.retryable);
	assert_int_equal(r.attempts, 3);
	assert_true(strlen(r.message) > 0);
	result_clear(&r);
}

static void test_tls_ok(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "https://127.0.0.1:%d/hello", fx->tls_port);
	struct bw_http_request rq = req_new(url);
	rq.ca_file = g_certs.cert;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	if (r.error != BW_OK)
		print_message("tls: %s\n", r.message);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "hello world");

	/* By name, asking for HTTP/2 from a server that only speaks HTTP/1.1 (ALPN falls back). */
	snprintf(url, sizeof url, "https://localhost:%d/hello", fx->tls_port);
	rq = req_new(url);
	rq.ca_file = g_certs.cert;
	rq.http2 = true;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.version, 1);
	result_clear(&r);
}

static void test_tls_wrong_ca(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "https://127.0.0.1:%d/hello", fx->tls_port);
	struct bw_http_request rq = req_new(url);
	rq.ca_file = g_certs.other_cert;
	rq.max_retries = 3;
	rq.backoff_ms = 10;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_E_TLS);
	assert_int_equal(r.attempts, 1); /* verification failures are final */
	assert_false(r.retryable);
	assert_int_equal(r.status, 0);
	assert_int_equal(fx->hits, 0);
	assert_true(strlen(r.message) > 0);

	/* The system store does not know our self-signed certificate either. */
	rq.ca_file = NULL;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_E_TLS);
	assert_int_equal(r.attempts, 1);
	result_clear(&r);
}

static void test_tls_client_cert(void **state)
{
	struct fx *fx = *state;
	fx->require_client_cert = true;
	char url[128];
	snprintf(url, sizeof url, "https://127.0.0.1:%d/whoami", fx->tls_port);
	struct bw_http_request rq = req_new(url);
	rq.ca_file = g_certs.cert;
	rq.max_retries = 2;
	rq.backoff_ms = 10;
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_E_TLS); /* the server insists on a certificate: final */
	assert_int_equal(r.attempts, 1);
	assert_false(r.retryable);
	assert_int_equal(fx->hits, 0);

	rq.client_cert = g_certs.other_cert;
	rq.client_key = g_certs.other_key;
	result_clear(&r);
	call_sync(fx, &rq, &r);
	if (r.error != BW_OK)
		print_message("mtls: %s\n", r.message);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.x_client_cert, "yes");
	result_clear(&r);
}

static void expect_refused(struct fx *fx, const struct bw_http_request *rq, int code)
{
	bw_error err = {0};
	struct result r = {0};
	bw_http_call *call = bw_http_client_send(fx->client, rq, on_done, &r, &err);
	assert_null(call);
	assert_int_equal(err.code, code);
	assert_true(strlen(err.message) > 0);
	assert_int_equal(bw_http_client_pending(fx->client), 0);
	run_for(fx, 20);
	assert_int_equal(r.calls, 0);
}

static void test_refused_up_front(void **state)
{
	struct fx *fx = *state;
	static const char *const bad_urls[] = {
	    "http://example.com/",      /* plain http off loopback */
	    "http://10.0.0.1:8080/",    /* same, by address */
	    "http://[2001:db8::1]/",    /* same, IPv6 */
	    "http://127.0.0.1.nip.io/", /* a name that merely looks like loopback */
	    "ftp://127.0.0.1/file",     /* other schemes */
	    "file:///etc/passwd",
	    "not a url",
	    "https://",
	    "",
	    "https://exa mple.com/",
	    "https://example.com/\r\nX-Injected: 1",
	};
	for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
		struct bw_http_request rq = req_new(bad_urls[i]);
		expect_refused(fx, &rq, BW_E_INVALID);
	}
	struct bw_http_request rq = req_new(NULL);
	expect_refused(fx, &rq, BW_E_INVALID);

	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", fx->port);
	const char *crlf[] = {"X-A: 1\r\nX-Injected: 2", NULL};
	rq = req_new(url);
	rq.headers = crlf;
	expect_refused(fx, &rq, BW_E_INVALID);
	const char *noname[] = {": value", NULL};
	rq.headers = noname;
	expect_refused(fx, &rq, BW_E_INVALID);
	rq = req_new(url);
	rq.method = "GET /x HTTP/1.1\r\n";
	expect_refused(fx, &rq, BW_E_INVALID);
	rq = req_new(url);
	rq.size = 8; /* a struct from nowhere */
	expect_refused(fx, &rq, BW_E_INVALID);
	rq = req_new(url);
	rq.body_len = 10; /* no body pointer */
	expect_refused(fx, &rq, BW_E_INVALID);

	bw_error err = {0};
	rq = req_new(url);
	assert_null(bw_http_client_send(fx->client, &rq, NULL, NULL, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_null(bw_http_client_send(NULL, &rq, on_done, NULL, &err));
	assert_null(bw_http_client_new(NULL, NULL, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_int_equal(fx->hits, 0);
}

/* Calls to the origin of the previous accepted URL skip curl's URL parser: the same refusals still hold for
 * what follows the origin, and messages still show scheme://host:port/path without userinfo or query. */
static void test_same_origin_fast_path(void **state)
{
	struct fx *fx = *state;
	char url[256];
	for (int round = 0; round < 2; round++) { /* the first parses fully, the second takes the fast path */
		snprintf(url, sizeof url, "http://user:secret1@127.0.0.1:%d/big?q=secret2#frag", fx->port);
		fx->big_size = 4096;
		struct bw_http_request rq = req_new(url);
		rq.max_response_bytes = 100;
		struct result r = {0};
		call_sync(fx, &rq, &r);
		assert_int_equal(r.error, BW_E_LIMIT);
		char want[128];
		snprintf(want, sizeof want, "GET http://127.0.0.1:%d/big: ", fx->port);
		assert_non_null(strstr(r.message, want));
		assert_null(strstr(r.message, "secret"));
		assert_null(strstr(r.message, "frag"));
		result_clear(&r);
	}
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", fx->port);
	struct bw_http_request rq = req_new(url);
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.status, 200);
	result_clear(&r);
	/* Same origin, bad rest: the full parser decides (and refuses). */
	const char *bad_rest[] = {"/he llo", "/x\r\nX-Injected: 1", "/a\\b", "/\x7f"};
	for (size_t i = 0; i < sizeof bad_rest / sizeof bad_rest[0]; i++) {
		snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fx->port, bad_rest[i]);
		rq = req_new(url);
		bw_error err = {0};
		bw_http_call *call = bw_http_client_send(fx->client, &rq, on_done, &r, &err);
		if (call) { /* curl may accept some of them; then the call must behave normally */
			run_until(fx, &r.calls, 1, 20000);
			assert_int_equal(r.calls, 1);
			result_clear(&r);
		} else {
			assert_int_equal(err.code, BW_E_INVALID);
		}
	}
	/* The same origin spelled as a prefix of another authority is another origin. */
	snprintf(url, sizeof url, "http://127.0.0.1:%d0/x", fx->port);
	rq = req_new(url);
	bw_error err = {0};
	bw_http_call *call = bw_http_client_send(fx->client, &rq, on_done, &r, &err);
	if (call) {
		run_until(fx, &r.calls, 1, 20000);
		assert_int_not_equal(r.status, 200);
		result_clear(&r);
	}
	/* An origin refused up front is never remembered. */
	rq = req_new("http://example.com/a");
	expect_refused(fx, &rq, BW_E_INVALID);
	rq = req_new("http://example.com/b");
	expect_refused(fx, &rq, BW_E_INVALID);
}

static void test_oversized_response(void **state)
{
	struct fx *fx = *state;
	char url[128];
	fx->big_size = 2 << 20;
	const char *paths[] = {"/big", "/bigchunked"};
	for (int i = 0; i < 2; i++) {
		fx->hits = 0;
		snprintf(url, sizeof url, "http://127.0.0.1:%d%s", fx->port, paths[i]);
		struct bw_http_request rq = req_new(url);
		rq.max_response_bytes = 1 << 20;
		rq.max_retries = 2;
		rq.backoff_ms = 10;
		struct result r = {0};
		call_sync(fx, &rq, &r);
		assert_int_equal(r.error, BW_E_LIMIT);
		assert_int_equal(r.attempts, 1); /* retrying cannot make it smaller */
		assert_int_equal(fx->hits, 1);
		assert_true(strlen(r.message) > 0);

		/* Exactly at the limit is fine. */
		rq.max_response_bytes = fx->big_size;
		result_clear(&r);
		call_sync(fx, &rq, &r);
		assert_int_equal(r.error, BW_OK);
		assert_int_equal(r.status, 200);
		assert_int_equal(r.body_len, fx->big_size);
		assert_int_equal(r.body[0], 'x');
		assert_int_equal(r.body[fx->big_size - 1], 'x');
		result_clear(&r);
	}

	/* Too many response headers is a limit too. */
	snprintf(url, sizeof url, "http://127.0.0.1:%d/manyheaders", fx->port);
	struct bw_http_request rq = req_new(url);
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_E_LIMIT);
	assert_non_null(strstr(r.message, "header"));
	result_clear(&r);
}

static void test_cancel(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hang", fx->hang_port);
	struct bw_http_request rq = req_new(url);
	rq.timeout_ms = 400;
	struct result r = {0};
	bw_http_call *call = send_ok(fx->client, &rq, &r);
	assert_int_equal(bw_http_client_pending(fx->client), 1);
	run_for(fx, 100);
	bw_http_call_cancel(call);
	assert_int_equal(bw_http_client_pending(fx->client), 0);
	run_for(fx, 700); /* past the timeout: done must still never run */
	assert_int_equal(r.calls, 0);

	/* Cancel while waiting for a retry. */
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 100;
	fx->fail_status = 503;
	rq = req_new(url);
	rq.max_retries = 5;
	rq.backoff_ms = 300;
	call = send_ok(fx->client, &rq, &r);
	run_until(fx, &fx->hits, 1, 10000);
	assert_int_equal(fx->hits, 1);
	run_for(fx, 50);
	assert_int_equal(bw_http_client_pending(fx->client), 1);
	bw_http_call_cancel(call);
	assert_int_equal(bw_http_client_pending(fx->client), 0);
	run_for(fx, 800);
	assert_int_equal(r.calls, 0);
	assert_int_equal(fx->hits, 1);

	/* Cancel right after send, before the loop ran at all. */
	rq = req_new(url);
	call = send_ok(fx->client, &rq, &r);
	bw_http_call_cancel(call);
	run_for(fx, 100);
	assert_int_equal(r.calls, 0);
	bw_http_call_cancel(NULL);
	result_clear(&r);
}

static void test_reentrancy(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", fx->port);
	struct bw_http_request rq = req_new(url);

	/* Cancelling a call from inside its own done callback is harmless. */
	struct result r = {0};
	r.self = send_ok(fx->client, &rq, &r);
	run_until(fx, &r.calls, 1, 20000);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.status, 200);
	run_for(fx, 50);
	assert_int_equal(r.calls, 1);
	result_clear(&r);

	/* Freeing the client from inside a done callback, with other calls still in flight. */
	char hang[128];
	snprintf(hang, sizeof hang, "http://127.0.0.1:%d/hang", fx->hang_port);
	struct bw_http_request rq_hang = req_new(hang);
	struct result others[3] = {{0}};
	for (int i = 0; i < 3; i++)
		send_ok(fx->client, &rq_hang, &others[i]);
	r.free_client = &fx->client;
	send_ok(fx->client, &rq, &r);
	run_until(fx, &r.calls, 1, 20000);
	assert_int_equal(r.calls, 1);
	assert_null(fx->client);
	run_for(fx, 100);
	for (int i = 0; i < 3; i++)
		assert_int_equal(others[i].calls, 0);
	result_clear(&r);
}

static void test_free_with_calls(void **state)
{
	struct fx *fx = *state;
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hang", fx->hang_port);
	struct bw_http_request rq = req_new(url);
	struct result r[4] = {{0}};
	for (int i = 0; i < 3; i++)
		send_ok(fx->client, &rq, &r[i]);
	snprintf(url, sizeof url, "http://127.0.0.1:%d/flaky", fx->port);
	fx->fail_times = 100;
	fx->fail_status = 503;
	struct bw_http_request rq2 = req_new(url);
	rq2.max_retries = 5;
	rq2.backoff_ms = 5000;
	send_ok(fx->client, &rq2, &r[3]);
	run_until(fx, &fx->hits, 1, 10000); /* the last one now waits on its retry timer */
	run_for(fx, 50);
	assert_int_equal(bw_http_client_pending(fx->client), 4);
	bw_http_client_free(fx->client); /* ASan checks nothing leaks */
	fx->client = NULL;
	run_for(fx, 100);
	for (int i = 0; i < 4; i++)
		assert_int_equal(r[i].calls, 0);
}

static void test_max_calls(void **state)
{
	struct fx *fx = *state;
	bw_error err = {0};
	struct bw_http_client_limits lim = {.max_calls = 2};
	bw_http_client *c = bw_http_client_new(fx->base, &lim, &err);
	assert_non_null(c);
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%d/hang", fx->hang_port);
	struct bw_http_request rq = req_new(url);
	struct result r[3] = {{0}};
	bw_http_call *a = send_ok(c, &rq, &r[0]);
	send_ok(c, &rq, &r[1]);
	assert_int_equal(bw_http_client_pending(c), 2);
	assert_null(bw_http_client_send(c, &rq, on_done, &r[2], &err));
	assert_int_equal(err.code, BW_E_LIMIT);
	bw_http_call_cancel(a);
	assert_int_equal(bw_http_client_pending(c), 1);
	send_ok(c, &rq, &r[2]);
	assert_int_equal(bw_http_client_pending(c), 2);
	bw_http_client_free(c);
	for (int i = 0; i < 3; i++)
		assert_int_equal(r[i].calls, 0);
}

static void test_ipv6(void **state)
{
	struct fx *fx = *state;
	if (!fx->http6)
		skip(); /* no IPv6 loopback on this host */
	char url[128];
	snprintf(url, sizeof url, "http://[::1]:%d/hello", fx->port6);
	struct bw_http_request rq = req_new(url);
	struct result r = {0};
	call_sync(fx, &rq, &r);
	assert_int_equal(r.error, BW_OK);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "hello world");
	result_clear(&r);
}

/* Finds an executable on PATH (or in /usr/sbin, where Debian puts nghttpd). */
static char *find_program(const char *name)
{
	const char *path = getenv("PATH");
	char *copy = strdup(path && *path ? path : "/usr/bin:/bin");
	assert_non_null(copy);
	char buf[1024], *save = NULL;
	for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		snprintf(buf, sizeof buf, "%s/%s", dir, name);
		if (access(buf, X_OK) == 0) {
			free(copy);
			return strdup(buf);
		}
	}
	free(copy);
	snprintf(buf, sizeof buf, "/usr/sbin/%s", name);
	return access(buf, X_OK) == 0 ? strdup(buf) : NULL;
}

static bool port_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {
	    .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return ok;
}

static void test_http2_nghttpd(void **state)
{
	struct fx *fx = *state;
	char *prog = find_program("nghttpd");
	if (!prog) {
		print_message("nghttpd not installed (package nghttp2-server): skipping the HTTP/2 test\n");
		skip();
	}
	char *dir = bw_test_tmpdir("h2");
	free(bw_test_write(dir, "hello.txt", "hello h2\n"));
	int port = bw_test_free_port();
	char portstr[16];
	snprintf(portstr, sizeof portstr, "%d", port);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		execl(prog, "nghttpd", "-a", "127.0.0.1", "-d", dir, portstr, g_certs.key, g_certs.cert, (char *)NULL);
		_exit(127);
	}
	bool up = false;
	for (int i = 0; i < 200 && !up; i++) {
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid)
			break; /* it exited */
		up = port_accepts(port);
		if (!up)
			usleep(25000);
	}
	if (!up) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
		fail_msg("nghttpd did not start on port %d", port);
	}

	char url[128];
	snprintf(url, sizeof url, "https://127.0.0.1:%d/hello.txt", port);
	struct bw_http_request rq = req_new(url);
	rq.http2 = true;
	rq.ca_file = g_certs.cert;
	enum { N = 20 };
	struct result r[N];
	memset(r, 0, sizeof r);
	int total = 0;
	for (int i = 0; i < N; i++) {
		r[i].total = &total;
		send_ok(fx->client, &rq, &r[i]);
	}
	assert_int_equal(bw_http_client_pending(fx->client), N);
	run_until(fx, &total, N, 20000);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	assert_int_equal(total, N);
	for (int i = 0; i < N; i++) {
		if (r[i].error != BW_OK)
			print_message("h2 call %d: %s\n", i, r[i].message);
		assert_int_equal(r[i].error, BW_OK);
		assert_int_equal(r[i].status, 200);
		assert_int_equal(r[i].version, 2);
		assert_string_equal(r[i].body, "hello h2\n");
		result_clear(&r[i]);
	}
	bw_test_rmtree(dir);
	free(dir);
	free(prog);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_get_ok, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_post_echo, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_503_then_200, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_after_seconds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_after_date, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retry_after_capped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retries_exhausted, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_post_not_retried, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_ok, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_wrong_ca, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tls_client_cert, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_up_front, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_oversized_response, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_same_origin_fast_path, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reentrancy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_free_with_calls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_max_calls, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ipv6, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_http2_nghttpd, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
