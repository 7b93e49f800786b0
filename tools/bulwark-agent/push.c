/* push.c: push wake-ups for a simulated device. `run --push-sim URL` makes up a token of the
 * provider's shape, registers it with the push simulator (tests/sims/) together with the URL of a
 * tiny HTTP listener on 127.0.0.1, and the run loop waits on that listener instead of sleeping: a
 * POST /wake from the simulator (a push for this token was accepted) ends the wait at once. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define WAKE_MAX_REQUEST 16384 /* headers and body of one wake-up request */
#define WAKE_READ_MS     2000  /* a client that sends nothing for this long is dropped */

void bwa_push_token(const char *provider, char *out, size_t size)
{
	static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char raw[160];

	bwa_random(raw, sizeof raw);
	if (provider && strcmp(provider, "apns") == 0) {
		/* APNs device tokens: 32 bytes, sent as 64 hex digits. */
		size_t n = 0;

		for (size_t i = 0; i < 32 && n + 2 < size; i++)
			n += (size_t)snprintf(out + n, size - n, "%02x", raw[i]);
		return;
	}
	/* FCM registration tokens: an 11-character instance id, ":APA91b", then base64url text. */
	{
		size_t n = 0;

		for (size_t i = 0; i < 11 && n + 1 < size; i++)
			out[n++] = b64url[raw[i] % 64];
		for (const char *p = ":APA91b"; *p && n + 1 < size; p++)
			out[n++] = *p;
		for (size_t i = 11; i < 145 && n + 1 < size; i++)
			out[n++] = b64url[raw[i] % 64];
		out[n] = '\0';
	}
}

int bwa_wake_listen(struct bwa_wake *w, bw_error *err)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
	socklen_t len = sizeof sa;
	int fd, one = 1;

	w->fd = -1;
	w->port = 0;
	w->wakes = 0;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return bw_error_set(err, BW_E_IO, "wake-up listener: socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		int e = errno;

		close(fd);
		return bw_error_set(err, BW_E_IO, "wake-up listener on 127.0.0.1: %s", strerror(e));
	}
	w->fd = fd;
	w->port = ntohs(sa.sin_port);
	return BW_OK;
}

void bwa_wake_close(struct bwa_wake *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
}

static void reply(int fd, int status, const char *reason, const char *body)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf,
	                 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
	                 "Connection: close\r\n\r\n%s",
	                 status, reason, strlen(body), body);

	if (n > 0 && (size_t)n < sizeof buf && send(fd, buf, (size_t)n, MSG_NOSIGNAL) < 0)
		bwa_warn("wake-up listener: cannot answer: %s", strerror(errno));
}

/* Reads one request (headers and Content-Length body) with a deadline; the length read, or -1. */
static ssize_t read_request(int fd, char *buf, size_t size)
{
	size_t n = 0, want = 0;
	double end = bwa_mono() + WAKE_READ_MS / 1000.0;

	while (n + 1 < size) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		double left = end - bwa_mono();
		ssize_t r;
		char *hend;

		if (left <= 0 || bwa_stop)
			return -1;
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		r = recv(fd, buf + n, size - 1 - n, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r <= 0)
			return n ? (ssize_t)n : -1;
		n += (size_t)r;
		buf[n] = '\0';
		hend = strstr(buf, "\r\n\r\n");
		if (hend) {
			const char *cl = strcasestr(buf, "\r\nContent-Length:");

			want = (size_t)(hend + 4 - buf);
			if (cl && cl < hend)
				want += strtoul(cl + 17, NULL, 10);
			if (n >= want)
				return (ssize_t)n;
		}
	}
	return -1; /* too large */
}

/* Answers one connection; true when it was POST /wake. */
static bool serve_one(struct bwa_wake *w)
{
	char buf[WAKE_MAX_REQUEST];
	int fd = accept4(w->fd, NULL, NULL, SOCK_CLOEXEC);
	ssize_t n;
	bool woken = false;

	if (fd < 0)
		return false;
	n = read_request(fd, buf, sizeof buf);
	if (n < 0) {
		reply(fd, 400, "Bad Request", "{\"error\":\"incomplete or oversized request\"}");
	} else if (strncmp(buf, "POST /wake ", 11) == 0 || strncmp(buf, "POST /wake?", 11) == 0) {
		reply(fd, 200, "OK", "{\"woken\":true}");
		woken = true;
		w->wakes++;
	} else if (strncmp(buf, "GET /wake ", 10) == 0) {
		reply(fd, 405, "Method Not Allowed", "{\"error\":\"POST /wake\"}");
	} else {
		reply(fd, 404, "Not Found", "{\"error\":\"not found\"}");
	}
	close(fd);
	return woken;
}

bool bwa_wake_poll(struct bwa_wake *w, double seconds)
{
	struct pollfd p;
	int r;

	if (seconds < 0)
		seconds = 0;
	if (w->fd < 0) {
		struct timespec ts = {.tv_sec = (time_t)seconds,
		                      .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};

		if (!bwa_stop)
			nanosleep(&ts, NULL);
		return false;
	}
	p.fd = w->fd;
	p.events = POLLIN;
	r = poll(&p, 1, (int)(seconds * 1000));
	if (r <= 0 || bwa_stop)
		return false;
	return serve_one(w);
}

static size_t discard(char *data, size_t size, size_t nmemb, void *arg)
{
	char *buf = arg;
	size_t len = size * nmemb, have = strlen(buf);

	/* Keeps the start of the answer for an error message. */
	if (have < 255) {
		size_t n = len < 255 - have ? len : 255 - have;

		memcpy(buf + have, data, n);
		buf[have + n] = '\0';
	}
	return len;
}

int bwa_push_register(const char *sim_url, const char *ca, const char *token, const char *wake_url, bw_error *err)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdrs = NULL;
	json_t *body = json_pack("{s:s,s:s}", "token", token, "wake_url", wake_url);
	char *text = json_dumps(body, JSON_COMPACT), *url = NULL, answer[256] = "", errbuf[CURL_ERROR_SIZE] = "";
	long status = 0;
	size_t n = strlen(sim_url);
	bool https = strncmp(sim_url, "https://", 8) == 0;
	CURLcode rc;
	int ret = BW_OK;

	json_decref(body);
	while (n && sim_url[n - 1] == '/')
		n--;
	url = bwa_xasprintf("%.*s/_sim/register", (int)n, sim_url);
	if (!c || !text) {
		ret = bw_error_set(err, BW_E_NOMEM, "push simulator: cannot prepare the request");
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, https ? "https" : "http");
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, answer);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (https) {
		/* The APNs simulator speaks HTTP/2 only: offer it by ALPN, HTTP/1.1 otherwise. */
		curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
		if (ca)
			curl_easy_setopt(c, CURLOPT_CAINFO, ca);
	}
	rc = curl_easy_perform(c);
	if (rc != CURLE_OK) {
		ret = bw_error_set(err, BW_E_IO, "push simulator %s: %s", url,
		                   errbuf[0] ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300) {
		bwa_sanitize(answer);
		ret = bw_error_set(err, BW_E_REMOTE, "push simulator %s answered %ld: %s", url, status, answer);
	}
out:
	curl_slist_free_all(hdrs);
	if (c)
		curl_easy_cleanup(c);
	free(text);
	free(url);
	return ret;
}
