/* loadnet.c: the check-in engine of `bulwark-agent load`: one thread per --threads, each with its
 * own epoll loop and SSL_CTX, driving its share of the connections. A connection is a
 * non-blocking socket (with a TLS session presenting one device's certificate, or plain TCP),
 * sends the same prebuilt HTTP/1.1 request again as soon as the previous answer is complete
 * (keep-alive, one request in flight), and records each request's latency. libcurl multi was
 * measured at about three times wrk's CPU per request, which made the client the bottleneck; this
 * engine costs about what wrk costs. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "load.h"

#define HDR_MAX      (8 * 1024) /* per connection: answer heads are small */
#define LINE_MAX_LEN 128
#define READ_BUF     (16 * 1024)
#define RETRY_DELAY  100000000ull /* ns before re-opening a connection after an error */
#define TICK_MS      50
#define MAX_EVENTS   256

/* ---- histogram */

static unsigned hist_bucket(uint64_t us)
{
	unsigned msb, shift;

	if (us < (2u << BWA_HIST_SUB_BITS))
		return (unsigned)us;
	if (us >= (1ull << 40))
		us = (1ull << 40) - 1;
	msb = 63u - (unsigned)__builtin_clzll(us);
	shift = msb - BWA_HIST_SUB_BITS;
	return (shift << BWA_HIST_SUB_BITS) + (unsigned)(us >> shift);
}

static double hist_value(unsigned b)
{
	unsigned shift, m;

	if (b < (2u << BWA_HIST_SUB_BITS))
		return b;
	shift = (b >> BWA_HIST_SUB_BITS) - 1;
	m = b - (shift << BWA_HIST_SUB_BITS);
	/* The middle of the bucket's range. */
	return ((double)((uint64_t)m << shift) + (double)(((uint64_t)(m + 1) << shift) - 1)) / 2;
}

void bwa_hist_add(struct bwa_hist *h, uint64_t us)
{
	h->counts[hist_bucket(us)]++;
	h->total++;
	h->sum_us += us;
	if (us > h->max_us)
		h->max_us = us;
}

void bwa_hist_merge(struct bwa_hist *into, const struct bwa_hist *from)
{
	for (unsigned i = 0; i < BWA_HIST_BUCKETS; i++)
		into->counts[i] += from->counts[i];
	into->total += from->total;
	into->sum_us += from->sum_us;
	if (from->max_us > into->max_us)
		into->max_us = from->max_us;
}

double bwa_hist_percentile_ms(const struct bwa_hist *h, double pct)
{
	uint64_t rank, seen = 0;

	if (h->total == 0)
		return 0;
	rank = (uint64_t)((pct / 100.0) * (double)h->total + 0.999999);
	if (rank < 1)
		rank = 1;
	for (unsigned i = 0; i < BWA_HIST_BUCKETS; i++) {
		seen += h->counts[i];
		if (seen >= rank) {
			double v = hist_value(i);

			return (v > (double)h->max_us ? (double)h->max_us : v) / 1000.0;
		}
	}
	return (double)h->max_us / 1000.0;
}

/* ---- target */

int bwa_load_target_init(struct bwa_load_target *t, const char *url, const char *extra_path, const char *body,
                         const char *ca_file, bw_error *err)
{
	const char *p, *host_end, *path;
	struct addrinfo hints, *ai = NULL;
	size_t hlen;
	int rc;

	memset(t, 0, sizeof *t);
	if (strncmp(url, "https://", 8) == 0) {
		t->tls = true;
		p = url + 8;
	} else if (strncmp(url, "http://", 7) == 0) {
		p = url + 7;
	} else {
		return bw_error_set(err, BW_E_INVALID, "URL %s must start with https:// or http://", url);
	}
	if (strpbrk(url, " \t\r\n#?"))
		return bw_error_set(err, BW_E_INVALID, "URL %s must not contain spaces, a query or a fragment", url);
	if (*p == '[') {
		host_end = strchr(p, ']');
		if (!host_end)
			return bw_error_set(err, BW_E_INVALID, "URL %s: unterminated [IPv6 address]", url);
		hlen = (size_t)(host_end - p - 1);
		if (hlen == 0 || hlen >= sizeof t->host)
			return bw_error_set(err, BW_E_INVALID, "URL %s: bad host", url);
		memcpy(t->host, p + 1, hlen);
		p = host_end + 1;
	} else {
		hlen = strcspn(p, ":/");
		if (hlen == 0 || hlen >= sizeof t->host)
			return bw_error_set(err, BW_E_INVALID, "URL %s: bad host", url);
		memcpy(t->host, p, hlen);
		p += hlen;
	}
	if (*p == ':') {
		size_t plen = strcspn(p + 1, "/");
		long port;
		char buf[8];

		if (plen == 0 || plen >= sizeof buf)
			return bw_error_set(err, BW_E_INVALID, "URL %s: bad port", url);
		memcpy(buf, p + 1, plen);
		buf[plen] = '\0';
		if (!bwa_parse_long(buf, 1, 65535, &port))
			return bw_error_set(err, BW_E_INVALID, "URL %s: bad port", url);
		snprintf(t->port, sizeof t->port, "%ld", port);
		p += 1 + plen;
	} else {
		snprintf(t->port, sizeof t->port, "%s", t->tls ? "443" : "80");
	}
	path = *p ? p : "/";
	if (extra_path) {
		size_t n = strlen(path);

		while (n && path[n - 1] == '/')
			n--;
		t->path = bwa_xasprintf("%.*s%s", (int)n, path, extra_path);
	} else {
		t->path = bwa_xstrdup(path);
	}
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	rc = getaddrinfo(t->host, t->port, &hints, &ai);
	if (rc != 0 || !ai) {
		bw_error_set(err, BW_E_IO, "cannot resolve %s: %s", t->host, gai_strerror(rc));
		bwa_load_target_free(t);
		return BW_E_IO;
	}
	memcpy(&t->addr, ai->ai_addr, ai->ai_addrlen);
	t->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	t->ca_file = ca_file;
	{
		bool v6 = strchr(t->host, ':') != NULL;
		bool default_port = strcmp(t->port, t->tls ? "443" : "80") == 0;
		char hostport[300];

		snprintf(hostport, sizeof hostport, "%s%s%s%s%s", v6 ? "[" : "", t->host, v6 ? "]" : "",
		         default_port ? "" : ":", default_port ? "" : t->port);
		if (body)
			t->request = bwa_xasprintf("POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: bulwark-agent/%s\r\n"
			                           "Accept: application/json\r\nContent-Type: application/json\r\n"
			                           "Content-Length: %zu\r\n\r\n%s",
			                           t->path, hostport, BWA_VERSION, strlen(body), body);
		else
			t->request = bwa_xasprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: bulwark-agent/%s\r\n"
			                           "Accept: */*\r\n\r\n",
			                           t->path, hostport, BWA_VERSION);
		t->request_len = strlen(t->request);
	}
	return BW_OK;
}

void bwa_load_target_free(struct bwa_load_target *t)
{
	free(t->path);
	free(t->request);
	t->path = t->request = NULL;
}

/* ---- response parser: just enough HTTP/1.1 to find where each answer ends */

enum phase { P_HEAD, P_BODY, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_CRLF, P_TRAILER, P_UNTIL_CLOSE, P_DONE };

struct parser {
	enum phase phase;
	int status;
	bool close;   /* the server will close after this answer */
	bool got_any; /* some byte of this answer arrived */
	uint64_t left;
	size_t hlen, llen;
	char head[HDR_MAX];
	char line[LINE_MAX_LEN];
};

static void parser_reset(struct parser *p)
{
	p->phase = P_HEAD;
	p->status = 0;
	p->close = false;
	p->got_any = false;
	p->left = 0;
	p->hlen = p->llen = 0;
}

/* Case-insensitive search of a token in a header value. */
static bool has_token(const char *v, size_t n, const char *token)
{
	size_t tn = strlen(token);

	for (size_t i = 0; i + tn <= n; i++)
		if (strncasecmp(v + i, token, tn) == 0)
			return true;
	return false;
}

/* Parses the complete head in p->head[0..hlen) (ending with CRLF CRLF). */
static int parse_head(struct parser *p)
{
	const char *s = p->head, *end = p->head + p->hlen, *line_end;
	bool chunked = false, have_length = false, http10;
	uint64_t length = 0;

	if (p->hlen < 12 || strncmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ')
		return -1;
	http10 = s[7] == '0';
	if (s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
		return -1;
	p->status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
	p->close = http10;
	line_end = memchr(s, '\n', (size_t)(end - s));
	while (line_end && line_end + 1 < end) {
		const char *h = line_end + 1, *colon, *v;
		size_t vn;

		line_end = memchr(h, '\n', (size_t)(end - h));
		if (!line_end)
			break;
		colon = memchr(h, ':', (size_t)(line_end - h));
		if (!colon)
			continue;
		v = colon + 1;
		vn = (size_t)(line_end - v);
		if ((size_t)(colon - h) == 14 && strncasecmp(h, "content-length", 14) == 0) {
			char *e;

			while (vn && (*v == ' ' || *v == '\t')) {
				v++;
				vn--;
			}
			length = strtoull(v, &e, 10);
			if (e == v)
				return -1;
			have_length = true;
		} else if ((size_t)(colon - h) == 17 && strncasecmp(h, "transfer-encoding", 17) == 0) {
			chunked = has_token(v, vn, "chunked");
		} else if ((size_t)(colon - h) == 10 && strncasecmp(h, "connection", 10) == 0) {
			if (has_token(v, vn, "close"))
				p->close = true;
			else if (has_token(v, vn, "keep-alive"))
				p->close = false;
		}
	}
	if ((p->status >= 100 && p->status < 200) || p->status == 204 || p->status == 304) {
		p->phase = P_DONE;
	} else if (chunked) {
		p->phase = P_CHUNK_SIZE;
		p->llen = 0;
	} else if (have_length) {
		p->left = length;
		p->phase = length ? P_BODY : P_DONE;
	} else {
		p->phase = P_UNTIL_CLOSE;
		p->close = true;
	}
	return 0;
}

/* Feeds bytes; returns 1 when an answer is complete (*used = bytes consumed), 0 when more
 * are needed, -1 on a malformed answer. */
static int parser_feed(struct parser *p, const char *d, size_t n, size_t *used)
{
	size_t i = 0;

	if (n)
		p->got_any = true;
	while (i < n) {
		switch (p->phase) {
		case P_HEAD: {
			size_t take = n - i, from = p->hlen > 3 ? p->hlen - 3 : 0;
			char *end;

			if (take > HDR_MAX - p->hlen)
				take = HDR_MAX - p->hlen;
			memcpy(p->head + p->hlen, d + i, take);
			p->hlen += take;
			end = memmem(p->head + from, p->hlen - from, "\r\n\r\n", 4);
			if (!end) {
				if (p->hlen == HDR_MAX)
					return -1;
				i += take;
				break;
			}
			/* Only the bytes up to the end of the head belong to it. */
			{
				size_t head_len = (size_t)(end - p->head) + 4;

				i += take - (p->hlen - head_len);
				p->hlen = head_len;
			}
			if (parse_head(p) != 0)
				return -1;
			if (p->status >= 100 && p->status < 200 && p->status != 101) {
				p->phase = P_HEAD; /* an interim answer: the real one follows */
				p->hlen = 0;
			}
			break;
		}
		case P_BODY: {
			uint64_t take = n - i;

			if (take > p->left)
				take = p->left;
			p->left -= take;
			i += (size_t)take;
			if (p->left == 0)
				p->phase = P_DONE;
			break;
		}
		case P_CHUNK_SIZE:
		case P_TRAILER: {
			char c = d[i++];

			if (c != '\n') {
				if (p->llen >= LINE_MAX_LEN - 1)
					return -1;
				p->line[p->llen++] = c;
				break;
			}
			if (p->llen && p->line[p->llen - 1] == '\r')
				p->llen--;
			p->line[p->llen] = '\0';
			if (p->phase == P_TRAILER) {
				if (p->llen == 0)
					p->phase = P_DONE;
			} else {
				char *e;
				unsigned long long size = strtoull(p->line, &e, 16);

				if (e == p->line)
					return -1;
				p->left = size;
				p->phase = size ? P_CHUNK_DATA : P_TRAILER;
			}
			p->llen = 0;
			break;
		}
		case P_CHUNK_DATA: {
			uint64_t take = n - i;

			if (take > p->left)
				take = p->left;
			p->left -= take;
			i += (size_t)take;
			if (p->left == 0) {
				p->phase = P_CHUNK_CRLF;
				p->llen = 0;
			}
			break;
		}
		case P_CHUNK_CRLF:
			if (d[i] == '\n')
				p->phase = P_CHUNK_SIZE;
			else if (d[i] != '\r')
				return -1;
			i++;
			break;
		case P_UNTIL_CLOSE:
			i = n;
			break;
		case P_DONE:
			break;
		}
		if (p->phase == P_DONE) {
			*used = i;
			return 1;
		}
	}
	*used = i;
	return 0;
}

/* ---- connections */

enum cstate { C_WAIT, C_CONNECTING, C_HANDSHAKE, C_SEND, C_RECV };

struct worker;

struct conn {
	struct worker *w;
	int fd;
	SSL *ssl;
	enum cstate st;
	uint32_t ev;
	size_t dev; /* index into the worker's devices */
	uint64_t t_start, wake_at;
	size_t woff;
	unsigned long nreq; /* answers received on this connection */
	struct parser p;
};

struct worker {
	const struct bwa_load_params *prm;
	struct bwa_load_counters *cnt;
	struct bwa_hist *hist;
	char (*first_error)[256];
	SSL_CTX *ctx;
	int ep;
	struct conn *conns;
	size_t nconns;
	struct bwa_load_device **devs; /* this worker's share */
	size_t ndevs, next_dev;
	uint64_t measure_from, end_at;
	char buf[READ_BUF];
};

static atomic_bool stop_all;

static inline void bump(_Atomic uint64_t *c)
{
	/* Only the owning thread writes; a plain load and store avoid a locked instruction. */
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

static void set_interest(struct conn *c, uint32_t ev)
{
	struct epoll_event e = {.events = ev, .data.ptr = c};

	if (c->ev == ev)
		return;
	epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &e);
	c->ev = ev;
}

static void conn_close(struct conn *c, bool keep_session)
{
	if (c->ssl) {
		if (keep_session && c->w->devs) {
			SSL_SESSION *s = SSL_get1_session(c->ssl);
			struct bwa_load_device *d = c->w->devs[c->dev];

			if (s && SSL_SESSION_is_resumable(s)) {
				SSL_SESSION_free(d->session);
				d->session = s;
			} else {
				SSL_SESSION_free(s);
			}
		}
		if (keep_session)
			SSL_shutdown(c->ssl); /* close_notify, best effort: the socket is non-blocking */
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->ev = 0;
}

static void record_error(struct conn *c, enum bwa_load_err kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void record_error(struct conn *c, enum bwa_load_err kind, const char *fmt, ...)
{
	struct worker *w = c->w;

	ERR_clear_error();
	bump(&w->cnt->errors[kind]);
	if (!w->first_error[kind][0]) {
		va_list ap;

		va_start(ap, fmt);
		vsnprintf(w->first_error[kind], sizeof w->first_error[kind], fmt, ap);
		va_end(ap);
	}
	conn_close(c, false);
	c->st = C_WAIT;
	c->wake_at = bwa_mono_ns() + RETRY_DELAY;
}

static void ssl_error_text(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();

	if (e)
		ERR_error_string_n(e, buf, size);
	else
		snprintf(buf, size, "%s", errno ? strerror(errno) : "connection closed");
}

static void conn_open(struct conn *c, uint64_t now);
static void conn_send(struct conn *c);

static void conn_handshake(struct conn *c)
{
	int r = SSL_connect(c->ssl);

	if (r == 1) {
		bump(&c->w->cnt->connections);
		if (SSL_session_reused(c->ssl))
			bump(&c->w->cnt->resumed);
		c->st = C_SEND;
		conn_send(c);
		return;
	}
	switch (SSL_get_error(c->ssl, r)) {
	case SSL_ERROR_WANT_READ:
		set_interest(c, EPOLLIN);
		return;
	case SSL_ERROR_WANT_WRITE:
		set_interest(c, EPOLLOUT);
		return;
	default: {
		char why[200];
		long vr = SSL_get_verify_result(c->ssl);

		ssl_error_text(why, sizeof why);
		if (vr != X509_V_OK)
			record_error(c, BWA_LE_TLS, "TLS handshake: server certificate: %s",
			             X509_verify_cert_error_string(vr));
		else
			record_error(c, BWA_LE_TLS, "TLS handshake: %s", why);
	}
	}
}

static void conn_start_request(struct conn *c, uint64_t now)
{
	c->t_start = now;
	c->woff = 0;
	parser_reset(&c->p);
	c->st = C_SEND;
	conn_send(c);
}

static void conn_send(struct conn *c)
{
	const struct bwa_load_target *t = c->w->prm->target;

	if (c->ssl) {
		int r = SSL_write(c->ssl, t->request, (int)t->request_len);

		if (r > 0) {
			c->st = C_RECV;
			set_interest(c, EPOLLIN);
			return;
		}
		switch (SSL_get_error(c->ssl, r)) {
		case SSL_ERROR_WANT_READ:
			set_interest(c, EPOLLIN);
			return;
		case SSL_ERROR_WANT_WRITE:
			set_interest(c, EPOLLOUT);
			return;
		default: {
			char why[200];

			ssl_error_text(why, sizeof why);
			record_error(c, BWA_LE_IO, "sending: %s", why);
			return;
		}
		}
	}
	while (c->woff < t->request_len) {
		ssize_t n = send(c->fd, t->request + c->woff, t->request_len - c->woff, MSG_NOSIGNAL);

		if (n > 0) {
			c->woff += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			set_interest(c, EPOLLOUT);
			return;
		}
		record_error(c, BWA_LE_IO, "sending: %s", strerror(errno));
		return;
	}
	c->st = C_RECV;
	set_interest(c, EPOLLIN);
}

static void on_answer(struct conn *c, uint64_t now)
{
	struct worker *w = c->w;
	const struct bwa_load_params *prm = w->prm;
	int s = c->p.status;

	c->nreq++;
	bump(&w->cnt->requests);
	if (now >= w->measure_from && now <= w->end_at) {
		bump(&w->cnt->measured);
		bwa_hist_add(w->hist, (now - c->t_start) / 1000);
		if (s >= 200 && s < 300)
			bump(&w->cnt->s2xx);
		else if (s < 400)
			bump(&w->cnt->s3xx);
		else if (s < 500)
			bump(&w->cnt->s4xx);
		else
			bump(&w->cnt->s5xx);
		if (s == 401)
			bump(&w->cnt->s401);
		if (s == 429)
			bump(&w->cnt->s429);
	}
	if (now >= w->end_at || atomic_load_explicit(&stop_all, memory_order_relaxed))
		return;
	if (c->p.close || (prm->reconnect_every && c->nreq >= prm->reconnect_every)) {
		conn_close(c, !c->p.close || c->p.phase == P_DONE);
		if (prm->reconnect_every && w->ndevs)
			c->dev = w->next_dev++ % w->ndevs; /* the next device takes this connection */
		conn_open(c, now);
		return;
	}
	conn_start_request(c, now);
}

static void conn_recv(struct conn *c)
{
	for (;;) {
		int n;
		size_t used;

		if (c->ssl) {
			n = SSL_read(c->ssl, c->w->buf, READ_BUF);
			if (n <= 0) {
				int e = SSL_get_error(c->ssl, n);

				if (e == SSL_ERROR_WANT_READ) {
					set_interest(c, EPOLLIN);
					return;
				}
				if (e == SSL_ERROR_WANT_WRITE) {
					set_interest(c, EPOLLOUT);
					return;
				}
				if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0))
					n = 0; /* closed (with or without close_notify) */
				else {
					char why[200];

					ssl_error_text(why, sizeof why);
					record_error(c, BWA_LE_IO, "receiving: %s", why);
					return;
				}
			}
		} else {
			ssize_t r = recv(c->fd, c->w->buf, READ_BUF, 0);

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				set_interest(c, EPOLLIN);
				return;
			}
			if (r < 0) {
				record_error(c, BWA_LE_IO, "receiving: %s", strerror(errno));
				return;
			}
			n = (int)r;
		}
		if (n == 0) {
			uint64_t now = bwa_mono_ns();

			if (c->p.phase == P_UNTIL_CLOSE) {
				c->p.close = true;
				c->p.phase = P_DONE;
				on_answer(c, now);
			} else if (!c->p.got_any && c->nreq > 0) {
				/* The server closed an idle keep-alive connection as we reused it: the
				 * request never reached it. Re-open and send again. */
				bump(&c->w->cnt->server_closed);
				conn_close(c, false);
				conn_open(c, c->t_start);
			} else {
				record_error(c, BWA_LE_IO, "the server closed the connection %s",
				             c->p.got_any ? "in the middle of an answer" : "without answering");
			}
			return;
		}
		switch (parser_feed(&c->p, c->w->buf, (size_t)n, &used)) {
		case 1:
			if (used < (size_t)n) {
				record_error(c, BWA_LE_PARSE, "unexpected bytes after an answer");
				return;
			}
			on_answer(c, bwa_mono_ns());
			return;
		case 0:
			break;
		default:
			record_error(c, BWA_LE_PARSE, "malformed HTTP answer (status %d)", c->p.status);
			return;
		}
	}
}

static void conn_open(struct conn *c, uint64_t now)
{
	const struct bwa_load_target *t = c->w->prm->target;
	struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
	int one = 1;

	c->t_start = now; /* the first request's latency includes connecting and the handshake */
	c->nreq = 0;
	c->woff = 0;
	parser_reset(&c->p);
	c->fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		record_error(c, BWA_LE_CONNECT, "socket: %s", strerror(errno));
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(c->fd, (const struct sockaddr *)&t->addr, t->addrlen) != 0 && errno != EINPROGRESS) {
		record_error(c, BWA_LE_CONNECT, "connect to %s port %s: %s", t->host, t->port, strerror(errno));
		return;
	}
	if (epoll_ctl(c->w->ep, EPOLL_CTL_ADD, c->fd, &e) != 0) {
		record_error(c, BWA_LE_CONNECT, "epoll: %s", strerror(errno));
		return;
	}
	c->ev = EPOLLOUT;
	c->st = C_CONNECTING;
}

static void conn_connected(struct conn *c)
{
	const struct bwa_load_target *t = c->w->prm->target;
	int soerr = 0;
	socklen_t len = sizeof soerr;

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0 || soerr) {
		record_error(c, BWA_LE_CONNECT, "connect to %s port %s: %s", t->host, t->port, strerror(soerr));
		return;
	}
	if (!t->tls) {
		c->st = C_SEND;
		bump(&c->w->cnt->connections);
		conn_send(c);
		return;
	}
	c->ssl = SSL_new(c->w->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
		record_error(c, BWA_LE_TLS, "cannot create a TLS session");
		return;
	}
	SSL_set_connect_state(c->ssl);
	{
		struct in6_addr a6;
		struct in_addr a4;

		if (inet_pton(AF_INET, t->host, &a4) == 1 || inet_pton(AF_INET6, t->host, &a6) == 1) {
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), t->host);
		} else {
			SSL_set_tlsext_host_name(c->ssl, t->host);
			SSL_set1_host(c->ssl, t->host);
		}
	}
	if (c->w->devs) {
		struct bwa_load_device *d = c->w->devs[c->dev];

		if (SSL_use_certificate(c->ssl, d->cert) != 1 || SSL_use_PrivateKey(c->ssl, d->key) != 1) {
			record_error(c, BWA_LE_TLS, "device %s: cannot use its certificate and key", d->id);
			return;
		}
		if (d->session)
			SSL_set_session(c->ssl, d->session);
	}
	c->st = C_HANDSHAKE;
	conn_handshake(c);
}

static void conn_event(struct conn *c)
{
	switch (c->st) {
	case C_CONNECTING:
		conn_connected(c);
		break;
	case C_HANDSHAKE:
		conn_handshake(c);
		break;
	case C_SEND:
		conn_send(c);
		break;
	case C_RECV:
		conn_recv(c);
		break;
	case C_WAIT:
		break;
	}
}

static SSL_CTX *make_ctx(const struct bwa_load_target *t, char *why, size_t size)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

	if (!ctx) {
		snprintf(why, size, "cannot create a TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (t->ca_file ? SSL_CTX_load_verify_locations(ctx, t->ca_file, NULL) != 1
	               : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		unsigned long e = ERR_get_error();

		snprintf(why, size, "cannot load the CA %s: %s", t->ca_file ? t->ca_file : "(system store)",
		         e ? ERR_reason_error_string(e) : "unknown error");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
	return ctx;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	uint64_t next_tick = 0;

	for (size_t i = 0; i < w->nconns; i++)
		conn_open(&w->conns[i], bwa_mono_ns());
	while (!atomic_load_explicit(&stop_all, memory_order_relaxed)) {
		uint64_t now = bwa_mono_ns();
		int n, wait_ms = TICK_MS;

		if (now >= w->end_at)
			break;
		if (w->end_at - now < (uint64_t)TICK_MS * 1000000u)
			wait_ms = (int)((w->end_at - now) / 1000000u) + 1;
		n = epoll_wait(w->ep, evs, MAX_EVENTS, wait_ms);
		for (int i = 0; i < n; i++)
			conn_event(evs[i].data.ptr);
		now = bwa_mono_ns();
		if (now < next_tick)
			continue;
		next_tick = now + (uint64_t)TICK_MS * 1000000u;
		/* Timeouts, and connections waiting to be re-opened after an error. */
		for (size_t i = 0; i < w->nconns; i++) {
			struct conn *c = &w->conns[i];

			if (c->st == C_WAIT) {
				if (now >= c->wake_at)
					conn_open(c, now);
			} else if (now - c->t_start > (uint64_t)(w->prm->timeout * 1e9)) {
				record_error(c, BWA_LE_TIMEOUT, "no answer within %.0f s", w->prm->timeout);
			}
		}
	}
	for (size_t i = 0; i < w->nconns; i++)
		conn_close(&w->conns[i], false);
	return NULL;
}

int bwa_load_run(const struct bwa_load_params *p, struct bwa_load_result *res, bw_error *err)
{
	unsigned nt = p->threads;
	struct worker *ws;
	pthread_t *tids;
	struct bwa_load_counters *cnts;
	struct bwa_hist *hists;
	char(*errors)[BWA_LE_COUNT][256];
	uint64_t start, measure_from, end_at, last_req = 0;
	double last_t;
	int rc = BW_OK;
	unsigned started = 0;

	memset(res, 0, sizeof *res);
	if (p->devices && p->ndevices < nt)
		nt = (unsigned)p->ndevices;
	if (nt > p->connections)
		nt = p->connections;
	ws = bwa_xcalloc(nt, sizeof *ws);
	tids = bwa_xcalloc(nt, sizeof *tids);
	cnts = bwa_xcalloc(nt, sizeof *cnts);
	hists = bwa_xcalloc(nt, sizeof *hists);
	errors = bwa_xcalloc(nt, sizeof *errors);
	atomic_store(&stop_all, false);
	for (unsigned t = 0; t < nt; t++)
		ws[t].ep = -1;
	start = bwa_mono_ns();
	measure_from = start + (uint64_t)(p->warmup * 1e9);
	end_at = measure_from + (uint64_t)(p->duration * 1e9);
	for (unsigned t = 0; t < nt; t++) {
		struct worker *w = &ws[t];
		char why[300];

		w->prm = p;
		w->cnt = &cnts[t];
		w->hist = &hists[t];
		w->first_error = errors[t];
		w->measure_from = measure_from;
		w->end_at = end_at;
		w->ep = epoll_create1(EPOLL_CLOEXEC);
		if (w->ep < 0) {
			rc = bw_error_set(err, BW_E_IO, "epoll_create1: %s", strerror(errno));
			break;
		}
		if (p->target->tls && !(w->ctx = make_ctx(p->target, why, sizeof why))) {
			rc = bw_error_set(err, BW_E_TLS, "%s", why);
			break;
		}
		/* Connections and devices dealt round-robin, so each thread owns its devices. */
		w->nconns = p->connections / nt + (t < p->connections % nt);
		w->conns = bwa_xcalloc(w->nconns, sizeof *w->conns);
		if (p->devices) {
			w->ndevs = p->ndevices / nt + (t < p->ndevices % nt);
			w->devs = bwa_xcalloc(w->ndevs, sizeof *w->devs);
			for (size_t i = 0; i < w->ndevs; i++)
				w->devs[i] = &p->devices[t + i * nt];
			w->next_dev = w->nconns;
		}
		for (size_t i = 0; i < w->nconns; i++) {
			w->conns[i].w = w;
			w->conns[i].fd = -1;
			w->conns[i].dev = w->ndevs ? i % w->ndevs : 0;
		}
	}
	for (unsigned t = 0; rc == BW_OK && t < nt; t++) {
		if (pthread_create(&tids[t], NULL, worker_main, &ws[t]) != 0) {
			rc = bw_error_set(err, BW_E_INTERNAL, "cannot start a load thread");
			atomic_store(&stop_all, true);
			break;
		}
		started++;
	}
	/* Progress once a second until the end (or a stop signal). */
	last_t = bwa_mono();
	while (rc == BW_OK) {
		uint64_t now = bwa_mono_ns(), reqs = 0, errs = 0, conns = 0;
		double t;

		if (now >= end_at + 20000000u)
			break;
		if (bwa_stop) {
			res->interrupted = true;
			atomic_store(&stop_all, true);
			break;
		}
		if (!bwa_sleep(now + 1000000000u > end_at ? (double)(end_at - now) / 1e9 + 0.03 : 1.0))
			continue;
		t = bwa_mono();
		for (unsigned i = 0; i < nt; i++) {
			reqs += atomic_load(&cnts[i].requests);
			conns += atomic_load(&cnts[i].connections);
			for (int k = 0; k < BWA_LE_COUNT; k++)
				errs += atomic_load(&cnts[i].errors[k]);
		}
		if (p->progress && bwa_mono_ns() < end_at)
			fprintf(stderr, "load: %4.0f s%s, %8.0f requests/s, %llu connections opened, %llu errors\n",
			        (double)(bwa_mono_ns() - start) / 1e9, bwa_mono_ns() < measure_from ? " (warm-up)" : "",
			        (double)(reqs - last_req) / (t - last_t), (unsigned long long)conns,
			        (unsigned long long)errs);
		last_req = reqs;
		last_t = t;
	}
	for (unsigned t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	{
		uint64_t now = bwa_mono_ns();
		uint64_t until = now < end_at ? now : end_at;

		res->elapsed = until > measure_from ? (double)(until - measure_from) / 1e9 : 0;
	}
	for (unsigned t = 0; t < nt; t++) {
		struct bwa_load_counters *a = &res->totals, *b = &cnts[t];

#define ADD(f) atomic_store(&a->f, atomic_load(&a->f) + atomic_load(&b->f))
		ADD(requests);
		ADD(measured);
		ADD(s2xx);
		ADD(s3xx);
		ADD(s4xx);
		ADD(s5xx);
		ADD(s401);
		ADD(s429);
		ADD(connections);
		ADD(resumed);
		ADD(server_closed);
		for (int k = 0; k < BWA_LE_COUNT; k++) {
			ADD(errors[k]);
			if (!res->first_error[k][0] && errors[t][k][0])
				memcpy(res->first_error[k], errors[t][k], sizeof res->first_error[k]);
		}
#undef ADD
		bwa_hist_merge(&res->hist, &hists[t]);
		if (ws[t].ep >= 0)
			close(ws[t].ep);
		SSL_CTX_free(ws[t].ctx);
		free(ws[t].conns);
		free(ws[t].devs);
	}
	free(ws);
	free(tids);
	free(cnts);
	free(hists);
	free(errors);
	return rc;
}
