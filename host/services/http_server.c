/* host/services/http_server.c: evhttp over OpenSSL bufferevents, with the changes the
 * performance notes found necessary (TCP_NODELAY on the listener, one TLS record per response,
 * changelist epoll set on the base by the caller), response headers formatted here rather than
 * by evhttp, responses written in the loop pass that produced them (docs/benchmarks.md), and a
 * connection limit. */
#include "http_server.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BOUND 8

struct bw_http_server {
	struct event_base *base;
	char name[32];
	struct evhttp *http;
	SSL_CTX *ctx;
	struct bw_http_limits limits;
	struct evconnlistener *listeners[MAX_BOUND];
	struct evhttp_bound_socket *bound[MAX_BOUND];
	size_t nbound;
	size_t connections;
	bool paused;   /* listeners disabled because of the connection limit */
	bool stopping; /* stop_accepting was called */
	bool freed;    /* bw_http_server_free was called; the last connection to go frees srv */
	int port;
};

/* SSL ex_data slot whose free callback tells us a connection went away: evhttp frees the
 * bufferevent (and with it the SSL) when it drops a connection, and 2.1 has no other hook. */
static int g_conn_slot = -1;
/* Per-connection data for request handlers (e.g. the identity of a device certificate),
 * freed with free() when the connection goes. */
static int g_user_slot = -1;

static void user_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	free(ptr);
}

static void conn_gone(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)ad, (void)idx, (void)argl, (void)argp;
	bw_http_server *srv = ptr;
	if (!srv)
		return;
	/* evhttp frees connections without SSL_shutdown, and SSL_free then evicts the session
	 * from the server cache, so session-ID resumption would never work. Mark the connection
	 * closed (as nginx does); a connection that failed lost its session at the fatal alert. */
	SSL_set_shutdown(parent, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	srv->connections--;
	if (srv->freed) {
		if (srv->connections == 0)
			free(srv);
		return;
	}
	if (srv->paused && !srv->stopping && srv->connections < srv->limits.max_connections) {
		srv->paused = false;
		for (size_t i = 0; i < srv->nbound; i++)
			evconnlistener_enable(srv->listeners[i]);
	}
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
	bw_http_server *srv = arg;
	SSL *ssl = SSL_new(srv->ctx);
	if (!ssl)
		return NULL;
	/* fd -1: evhttp sets the accepted socket on the bufferevent itself. No BEV_OPT_DEFER_CALLBACKS:
	 * evhttp does not need it (its own socket bufferevents run without), and deferring costs a
	 * queue round per callback. */
	struct bufferevent *bev =
	    bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		SSL_free(ssl);
		return NULL;
	}
	/* Clients often close without close_notify; that is not an error for us. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	SSL_set_ex_data(ssl, g_conn_slot, srv);
	srv->connections++;
	if (srv->connections >= srv->limits.max_connections && !srv->paused) {
		srv->paused = true;
		for (size_t i = 0; i < srv->nbound; i++)
			evconnlistener_disable(srv->listeners[i]);
		bw_log_warn("http", "%s listener: %zu connections open, not accepting more until one closes", srv->name,
		            srv->connections);
	}
	return bev;
}

static void apply_limits(bw_http_server *srv)
{
	evhttp_set_max_headers_size(srv->http, (ev_ssize_t)srv->limits.max_header_bytes);
	evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->limits.max_body_bytes);
	evhttp_set_timeout(srv->http, srv->limits.timeout_s > 0 ? srv->limits.timeout_s : 30);
}

bw_http_server *bw_http_server_new(struct event_base *base, const char *name, SSL_CTX *ctx,
                                   const struct bw_http_limits *limits, bw_error *err)
{
	if (g_conn_slot < 0)
		g_conn_slot = SSL_get_ex_new_index(0, NULL, NULL, NULL, conn_gone);
	if (g_user_slot < 0)
		g_user_slot = SSL_get_ex_new_index(0, NULL, NULL, NULL, user_gone);
	bw_http_server *srv = calloc(1, sizeof *srv);
	if (!srv || !(srv->http = evhttp_new(base))) {
		free(srv);
		bw_error_set(err, BW_E_NOMEM, "cannot create the %s HTTP server", name);
		return NULL;
	}
	srv->base = base;
	snprintf(srv->name, sizeof srv->name, "%s", name);
	srv->ctx = ctx;
	SSL_CTX_up_ref(ctx);
	srv->limits = *limits;
	apply_limits(srv);
	evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	                                          EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD);
	evhttp_set_bevcb(srv->http, bev_cb, srv);
	return srv;
}

void bw_http_server_free(bw_http_server *srv)
{
	if (!srv)
		return;
	srv->stopping = true;
	evhttp_free(srv->http); /* frees bound sockets, listeners and connections */
	SSL_CTX_free(srv->ctx);
	/* libevent finalizes freed connections later, in the loop or in event_base_free, and
	 * only then frees their SSL (calling conn_gone): with connections still open, the last
	 * conn_gone frees srv. */
	if (srv->connections == 0)
		free(srv);
	else
		srv->freed = true;
}

static int parse_address(const char *address, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon = strrchr(address, ':');
	if (!colon || colon == address || !colon[1])
		return -1;
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -1;
	size_t hl = (size_t)(colon - address);
	if (hl >= sizeof host)
		return -1;
	memcpy(host, address, hl);
	host[hl] = '\0';
	memset(ss, 0, sizeof *ss);
	if (host[0] == '[') {
		size_t n = strlen(host);
		if (n < 3 || host[n - 1] != ']')
			return -1;
		host[n - 1] = '\0';
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
			return -1;
		*len = sizeof *s6;
		return 0;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	s4->sin_family = AF_INET;
	s4->sin_port = htons((uint16_t)port);
	if (strcmp(host, "*") == 0)
		s4->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (strcmp(host, "localhost") == 0)
		s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
		return -1;
	*len = sizeof *s4;
	return 0;
}

int bw_http_server_listen(bw_http_server *srv, const char *address, bw_error *err)
{
	if (srv->nbound >= MAX_BOUND)
		return bw_error_set(err, BW_E_LIMIT, "%s listener: at most %d addresses", srv->name, MAX_BOUND);
	struct sockaddr_storage ss;
	socklen_t len;
	if (parse_address(address, &ss, &len) != 0)
		return bw_error_set(err, BW_E_CONFIG,
		                    "%s listener: cannot parse address '%s' (use host:port or [v6]:port)", srv->name,
		                    address);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bw_error_set(err, BW_E_IO, "%s listener %s: socket: %s", srv->name, address, strerror(errno));
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	/* Accepted sockets inherit TCP_NODELAY on Linux: no Nagle stalls between header and body. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 1024) != 0) {
		int e = errno;
		close(fd);
		if (e == EADDRINUSE)
			return bw_error_set(err, BW_E_IO,
			                    "%s listener: address %s is already in use (another bulwarkd or another "
			                    "service is listening there)",
			                    srv->name, address);
		return bw_error_set(err, BW_E_IO, "%s listener: cannot listen on %s: %s", srv->name, address,
		                    strerror(e));
	}
	struct evconnlistener *l =
	    evconnlistener_new(srv->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!l) {
		close(fd);
		return bw_error_set(err, BW_E_IO, "%s listener %s: cannot create listener", srv->name, address);
	}
	struct evhttp_bound_socket *b = evhttp_bind_listener(srv->http, l);
	if (!b) {
		evconnlistener_free(l);
		return bw_error_set(err, BW_E_IO, "%s listener %s: cannot bind HTTP", srv->name, address);
	}
	if (srv->nbound == 0) {
		struct sockaddr_storage got;
		socklen_t gl = sizeof got;
		getsockname(fd, (struct sockaddr *)&got, &gl);
		srv->port = ntohs(got.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&got)->sin6_port
		                                            : ((struct sockaddr_in *)&got)->sin_port);
	}
	srv->listeners[srv->nbound] = l;
	srv->bound[srv->nbound++] = b;
	return BW_OK;
}

int bw_http_server_port(const bw_http_server *srv)
{
	return srv->port;
}

void bw_http_server_set_handler(bw_http_server *srv, void (*cb)(struct evhttp_request *, void *), void *arg)
{
	evhttp_set_gencb(srv->http, cb, arg);
}

void bw_http_server_set_tls(bw_http_server *srv, SSL_CTX *ctx)
{
	SSL_CTX_up_ref(ctx);
	SSL_CTX_free(srv->ctx);
	srv->ctx = ctx;
}

void bw_http_server_set_limits(bw_http_server *srv, const struct bw_http_limits *limits)
{
	srv->limits = *limits;
	apply_limits(srv);
}

void bw_http_server_stop_accepting(bw_http_server *srv)
{
	srv->stopping = true;
	for (size_t i = 0; i < srv->nbound; i++)
		evhttp_del_accept_socket(srv->http, srv->bound[i]);
	srv->nbound = 0;
}

size_t bw_http_server_connections(const bw_http_server *srv)
{
	return srv->connections;
}

/* ---- responses */

/* Writes the output buffer in this loop pass. The OpenSSL bufferevent writes only once epoll
 * reports the socket writable: two epoll_ctl calls (add, then remove EPOLLOUT) and one more loop
 * pass per response. Running its write callback now writes at once, and the add and the remove
 * cancel out in the changelist. If the socket is full, the write event simply stays pending. */
static void write_now(struct bufferevent *bev)
{
	if (event_pending(&bev->ev_write, EV_WRITE, NULL))
		event_active(&bev->ev_write, EV_WRITE, 1);
}

/* The general path: evhttp builds the header; the merged buffer makes one TLS record. */
static void send_merged(struct evhttp_request *req, int status, struct evbuffer *body)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
	evhttp_send_reply(req, status, NULL, body);
	if (!bev)
		return;
	/* evhttp wrote the header and the body as two chunks; one contiguous chunk makes the
	 * OpenSSL bufferevent emit one TLS record and one write(). */
	evbuffer_pullup(bufferevent_get_output(bev), -1);
	write_now(bev);
}

/* The Date header, formatted once a second rather than by evhttp for every response. */
static const char *http_date(void)
{
	static _Thread_local char buf[64]; /* room for any int the compiler can imagine */
	static _Thread_local time_t at;
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t now = time(NULL);
	if (now != at || !buf[0]) {
		struct tm tm;
		gmtime_r(&now, &tm);
		snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
		         months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
		at = now;
	}
	return buf;
}

static void set_common_headers(struct evhttp_request *req, const char *content_type)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Content-Type", content_type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Date", http_date());
}

/* Reason phrases for the statuses the direct path answers; others take the general path. */
static const char *reason_phrase(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 413:
		return "Payload Too Large";
	case 429:
		return "Too Many Requests";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	default:
		return NULL;
	}
}

static char *put(char *p, const void *s, size_t n)
{
	if (n)
		memcpy(p, s, n);
	return p + n;
}

/* The direct path: the whole response (status line, headers, body) formatted with memcpy into
 * one chunk of the connection's output buffer, then handed back to evhttp exactly as
 * evhttp_send() would. evhttp's own header building (printf per header line, a strdup'ed copy
 * of every header, the Date and Content-Length lookups) was about a quarter of the CPU of a
 * small keep-alive response (docs/benchmarks.md). This relies on evhttp's behaviour in
 * libevent 2.1 (checked against 2.1.12): evhttp_send_reply_end() on a non-chunked request whose
 * output is pending completes the request once the output is written. Anything unusual (other
 * libevent versions, HTTP/1.0, HEAD, bodiless statuses, Connection headers, a chunked request,
 * headers that evhttp would otherwise set itself) takes the general path. Returns whether it
 * sent the response. */
static bool send_direct(struct evhttp_request *req, int status, const char *content_type, const void *body, size_t len,
                        const void *tail, size_t tail_len)
{
#if LIBEVENT_VERSION_NUMBER >= 0x02010000 && LIBEVENT_VERSION_NUMBER < 0x02020000
	static int supported = -1;
	if (supported < 0) {
		ev_uint32_t v = event_get_version_number();
		supported = v >= 0x02010000 && v < 0x02020000;
	}
	const char *reason = reason_phrase(status);
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
	/* content_type may come from a plugin: evhttp_add_header drops values with CR or LF, so
	 * leave those to it rather than write them into the header. */
	if (!supported || !reason || !bev || req->major != 1 || req->minor != 1 || req->chunked ||
	    (req->flags & EVHTTP_PROXY_REQUEST) || evhttp_request_get_command(req) == EVHTTP_REQ_HEAD ||
	    strpbrk(content_type, "\r\n"))
		return false;
	const char *connection = evhttp_find_header(evhttp_request_get_input_headers(req), "Connection");
	if (connection && evutil_ascii_strcasecmp(connection, "keep-alive") != 0)
		return false;
	struct evbuffer *out = bufferevent_get_output(bev);
	if (evbuffer_get_length(out) != 0)
		return false;

	static const char fixed[] = "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nDate: ";
	const char *date = http_date();
	char clen[24];
	int clen_n = snprintf(clen, sizeof clen, "%zu", len + tail_len);
	size_t total = sizeof "HTTP/1.1 200 \r\nContent-Type: \r\n" - 1 + strlen(reason) + strlen(content_type) +
	               sizeof fixed - 1 + strlen(date) + sizeof "\r\nContent-Length: \r\n\r\n" - 1 + (size_t)clen_n +
	               len + tail_len;
	struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
	struct evkeyval *h;
	for (h = headers->tqh_first; h; h = h->next.tqe_next) {
		if (!evutil_ascii_strcasecmp(h->key, "Content-Length") ||
		    !evutil_ascii_strcasecmp(h->key, "Transfer-Encoding") ||
		    !evutil_ascii_strcasecmp(h->key, "Connection") || !evutil_ascii_strcasecmp(h->key, "Date"))
			return false;
		total += strlen(h->key) + strlen(h->value) + 4;
	}

	struct evbuffer_iovec v;
	if (evbuffer_reserve_space(out, (ev_ssize_t)total, &v, 1) != 1 || v.iov_len < total)
		return false;
	char code[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10), (char)('0' + status % 10),
	                ' '};
	char *p = v.iov_base;
	p = put(p, "HTTP/1.1 ", 9);
	p = put(p, code, 4);
	p = put(p, reason, strlen(reason));
	p = put(p, "\r\nContent-Type: ", 16);
	p = put(p, content_type, strlen(content_type));
	p = put(p, "\r\n", 2);
	p = put(p, fixed, sizeof fixed - 1);
	p = put(p, date, strlen(date));
	p = put(p, "\r\n", 2);
	for (h = headers->tqh_first; h; h = h->next.tqe_next) {
		p = put(p, h->key, strlen(h->key));
		p = put(p, ": ", 2);
		p = put(p, h->value, strlen(h->value));
		p = put(p, "\r\n", 2);
	}
	p = put(p, "Content-Length: ", 16);
	p = put(p, clen, (size_t)clen_n);
	p = put(p, "\r\n\r\n", 4);
	p = put(p, body, len);
	p = put(p, tail, tail_len);
	v.iov_len = (size_t)(p - (char *)v.iov_base);
	evbuffer_commit_space(out, &v, 1);

	/* What evhttp_send() does after building the header: completion callback, the read
	 * callback off while writing (reading stays on to notice a close), writing on. */
	evhttp_send_reply_end(req);
	bufferevent_data_cb write_cb;
	bufferevent_event_cb event_cb;
	void *cb_arg;
	bufferevent_getcb(bev, NULL, &write_cb, &event_cb, &cb_arg);
	bufferevent_setcb(bev, NULL, write_cb, event_cb, cb_arg);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	write_now(bev);
	return true;
#else
	(void)req, (void)status, (void)content_type, (void)body, (void)len, (void)tail, (void)tail_len;
	return false;
#endif
}

/* body + tail as one response body (tail: the newline after JSON). */
static void reply(struct evhttp_request *req, int status, const char *content_type, const void *body, size_t len,
                  const void *tail, size_t tail_len)
{
	if (send_direct(req, status, content_type, body, len, tail, tail_len))
		return;
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	if (len)
		evbuffer_add(out, body, len);
	if (tail_len)
		evbuffer_add(out, tail, tail_len);
	set_common_headers(req, content_type);
	send_merged(req, status, NULL);
}

void bw_http_reply_buffer(struct evhttp_request *req, int status, const char *content_type, struct evbuffer *body)
{
	size_t len = body ? evbuffer_get_length(body) : 0;
	const void *data = len ? (const void *)evbuffer_pullup(body, -1) : "";
	reply(req, status, content_type, data ? data : "", data ? len : 0, "", 0);
	if (body)
		evbuffer_drain(body, evbuffer_get_length(body));
}

void bw_http_reply_bytes(struct evhttp_request *req, int status, const char *content_type, const void *data, size_t len)
{
	reply(req, status, content_type, data, len, "", 0);
}

void bw_http_reply_json(struct evhttp_request *req, int status, json_t *body)
{
	char *s = body && status != 204 ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (status == 204)
		reply(req, status, "application/json", "", 0, "", 0);
	else
		reply(req, status, "application/json", s ? s : "", s ? strlen(s) : 0, "\n", 1);
	free(s);
}

void bw_http_reply_error(struct evhttp_request *req, int status, const char *code, const char *message)
{
	bw_http_reply_json(req, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", message));
}

const char *bw_http_peer(struct evhttp_request *req, char *buf, size_t len)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	const struct sockaddr *sa = conn ? evhttp_connection_get_addr(conn) : NULL;
	buf[0] = '\0';
	if (sa && sa->sa_family == AF_INET && len >= INET_ADDRSTRLEN) {
		/* By hand: inet_ntop goes through sprintf, a visible cost on every request. */
		const unsigned char *a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		char *p = buf;
		for (int i = 0; i < 4; i++) {
			if (a[i] >= 100)
				*p++ = (char)('0' + a[i] / 100);
			if (a[i] >= 10)
				*p++ = (char)('0' + a[i] / 10 % 10);
			*p++ = (char)('0' + a[i] % 10);
			*p++ = i < 3 ? '.' : '\0';
		}
	} else if (sa && sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)len);
	else if (sa && sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)len);
	else
		snprintf(buf, len, "unknown");
	return buf;
}

static SSL *request_ssl(struct evhttp_request *req)
{
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	struct bufferevent *bev = conn ? evhttp_connection_get_bufferevent(conn) : NULL;
	return bev ? bufferevent_openssl_get_ssl(bev) : NULL;
}

X509 *bw_http_peer_cert(struct evhttp_request *req)
{
	SSL *ssl = request_ssl(req);
	/* With SSL_VERIFY_PEER, a certificate that is present has passed chain verification. */
	return ssl && SSL_get_verify_result(ssl) == X509_V_OK ? SSL_get0_peer_certificate(ssl) : NULL;
}

void *bw_http_conn_data(struct evhttp_request *req)
{
	SSL *ssl = request_ssl(req);
	return ssl && g_user_slot >= 0 ? SSL_get_ex_data(ssl, g_user_slot) : NULL;
}

void bw_http_conn_set_data(struct evhttp_request *req, void *data)
{
	SSL *ssl = request_ssl(req);
	if (!ssl || g_user_slot < 0) {
		free(data);
		return;
	}
	free(SSL_get_ex_data(ssl, g_user_slot));
	SSL_set_ex_data(ssl, g_user_slot, data);
}
