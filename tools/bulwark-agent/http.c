/* http.c: the single-device HTTPS client of bulwark-agent (enroll, run, unenroll) on one reused
 * libcurl easy handle, so that a check-in cycle keeps one keep-alive mTLS connection. It verifies
 * the server, requires TLS 1.2+, never follows redirects, and applies the retry rules of
 * docs/agent-protocol.md in bwa_http_call(). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent.h"

#define CONNECT_TIMEOUT_S 10L
#define TOTAL_TIMEOUT_S   60L

struct xfer {
	struct bwa_response *resp;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	struct bwa_response *r = x->resp;
	size_t len = size * nmemb;

	if (len > BWA_MAX_BODY || r->body_len > BWA_MAX_BODY - len) {
		r->too_big = true;
		return 0;
	}
	r->body = bwa_xrealloc(r->body, r->body_len + len + 1);
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	r->body[r->body_len] = '\0';
	return len;
}

/* Copies a header's value (trimmed) when the line starts with `name` (lower case, with ':'). */
static bool header_value(const char *line, size_t len, const char *name, char *out, size_t out_size)
{
	size_t n = strlen(name);

	if (len <= n || strncasecmp(line, name, n) != 0)
		return false;
	line += n;
	len -= n;
	while (len && (*line == ' ' || *line == '\t')) {
		line++;
		len--;
	}
	while (len && isspace((unsigned char)line[len - 1]))
		len--;
	if (len >= out_size)
		len = out_size - 1;
	memcpy(out, line, len);
	out[len] = '\0';
	return true;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nmemb;
	char value[128];

	/* A new status line (after 100 Continue) starts a new header block. */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0) {
		x->resp->retry_after = -1;
		x->resp->etag[0] = '\0';
	}
	if (header_value(data, len, "retry-after:", value, sizeof value)) {
		char *end;
		long v;

		errno = 0;
		v = strtol(value, &end, 10);
		/* Only delta-seconds; an HTTP date merely loses the hint (the backoff applies). */
		if (errno == 0 && end != value && *end == '\0' && v >= 0)
			x->resp->retry_after = v > BWA_RETRY_AFTER_CAP ? BWA_RETRY_AFTER_CAP : v;
	} else {
		header_value(data, len, "etag:", x->resp->etag, sizeof x->resp->etag);
	}
	return len;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)arg;
	(void)dltotal;
	(void)dlnow;
	(void)ultotal;
	(void)ulnow;
	return bwa_stop ? 1 : 0; /* aborts the transfer on SIGINT/SIGTERM */
}

int bwa_http_init(struct bwa_http *h, const struct bwa_http_config *cfg, bw_error *err)
{
	memset(h, 0, sizeof *h);
	h->cfg = *cfg;
	h->curl = curl_easy_init();
	if (!h->curl)
		return bw_error_set(err, BW_E_INTERNAL, "cannot create a libcurl handle");
	curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h->curl, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h->curl, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYHOST, 2L);
	if (cfg->ca_file)
		curl_easy_setopt(h->curl, CURLOPT_CAINFO, cfg->ca_file);
	if (cfg->cert_file) {
		curl_easy_setopt(h->curl, CURLOPT_SSLCERT, cfg->cert_file);
		curl_easy_setopt(h->curl, CURLOPT_SSLCERTTYPE, "PEM");
		curl_easy_setopt(h->curl, CURLOPT_SSLKEY, cfg->key_file);
		curl_easy_setopt(h->curl, CURLOPT_SSLKEYTYPE, "PEM");
	}
	curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	curl_easy_setopt(h->curl, CURLOPT_TIMEOUT, TOTAL_TIMEOUT_S);
	curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h->curl, CURLOPT_USERAGENT, "bulwark-agent/" BWA_VERSION);
	curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(h->curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h->curl, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h->curl, CURLOPT_HEADERFUNCTION, on_header);
	return BW_OK;
}

void bwa_http_cleanup(struct bwa_http *h)
{
	if (h->curl)
		curl_easy_cleanup(h->curl);
	h->curl = NULL;
}

void bwa_http_reconnect(struct bwa_http *h)
{
	/* A new client certificate needs a full handshake: a resumed TLS session would present the
	 * old certificate again, which the server refuses after a renewal. */
	curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 1L);
	curl_easy_setopt(h->curl, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	/* With room for one connection only, the new connection evicts the old one from curl's
	 * pool, so no later request goes out over the old certificate's connection. */
	curl_easy_setopt(h->curl, CURLOPT_MAXCONNECTS, 1L);
}

void bwa_response_free(struct bwa_response *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof *r);
	r->retry_after = -1;
}

/* Turns a libcurl failure into a message. BW_E_TLS marks problems a retry cannot fix (untrusted
 * server, unusable local files); BW_E_IO and BW_E_TIMEOUT are worth retrying. */
static int describe_failure(struct bwa_http *h, CURLcode rc, bw_error *err)
{
	const char *server = h->cfg.server;
	const char *detail = h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc);
	long os_errno = 0;

	switch (rc) {
	case CURLE_ABORTED_BY_CALLBACK:
		return bw_error_set(err, BW_E_CANCELLED, "interrupted");
	case CURLE_COULDNT_RESOLVE_HOST:
		return bw_error_set(err, BW_E_IO, "cannot resolve the host of %s: %s", server, detail);
	case CURLE_COULDNT_CONNECT:
		curl_easy_getinfo(h->curl, CURLINFO_OS_ERRNO, &os_errno);
		return bw_error_set(err, BW_E_IO, "cannot connect to %s: %s", server,
		                    os_errno ? strerror((int)os_errno) : detail);
	case CURLE_OPERATION_TIMEDOUT:
		return bw_error_set(err, BW_E_TIMEOUT, "timed out talking to %s: %s", server, detail);
	case CURLE_PEER_FAILED_VERIFICATION:
		return bw_error_set(err, BW_E_TLS, "certificate of %s not trusted: %s (name its CA with --ca FILE)",
		                    server, detail);
	case CURLE_SSL_CACERT_BADFILE:
		return bw_error_set(err, BW_E_TLS, "cannot use CA file %s: %s",
		                    h->cfg.ca_file ? h->cfg.ca_file : "(system store)", detail);
	case CURLE_SSL_CERTPROBLEM:
		return bw_error_set(err, BW_E_TLS, "cannot use the device certificate %s: %s",
		                    h->cfg.cert_file ? h->cfg.cert_file : "", detail);
	case CURLE_WRITE_ERROR:
		return bw_error_set(err, BW_E_LIMIT, "the answer of %s is too large (over %u bytes)", server,
		                    BWA_MAX_BODY);
	case CURLE_SSL_CONNECT_ERROR:
		return bw_error_set(err, BW_E_IO, "TLS handshake with %s failed: %s", server, detail);
	default:
		return bw_error_set(err, BW_E_IO, "request to %s failed: %s", server, detail);
	}
}

int bwa_http_once(struct bwa_http *h, const char *method, const char *path, json_t *body, const char *if_none_match,
                  struct bwa_response *resp, bw_error *err)
{
	struct curl_slist *headers = NULL;
	struct xfer x = {resp};
	char *url = bwa_xasprintf("%s%s", h->cfg.server, path);
	char *text = NULL;
	CURLcode rc;
	int ret = BW_OK;

	memset(resp, 0, sizeof *resp);
	resp->retry_after = -1;
	h->errbuf[0] = '\0';
	headers = curl_slist_append(headers, "Accept: application/json");
	curl_easy_setopt(h->curl, CURLOPT_URL, url);
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text) {
			ret = bw_error_set(err, BW_E_NOMEM, "cannot encode the request body");
			goto out;
		}
		headers = curl_slist_append(headers, "Content-Type: application/json");
		curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
		curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(text));
		curl_easy_setopt(h->curl, CURLOPT_COPYPOSTFIELDS, text);
		curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, strcmp(method, "POST") == 0 ? NULL : method);
	} else {
		curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
		curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, strcmp(method, "GET") == 0 ? NULL : method);
	}
	if (if_none_match) {
		char *line = bwa_xasprintf("If-None-Match: %s", if_none_match);

		headers = curl_slist_append(headers, line);
		free(line);
	}
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, &x);
	rc = curl_easy_perform(h->curl);
	curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, 0L);
	if (rc != CURLE_OK) {
		ret = describe_failure(h, rc, err);
		goto out;
	}
	curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &resp->status);
	if (resp->body && resp->body_len) {
		json_t *j = json_loadb(resp->body, resp->body_len, 0, NULL);

		if (json_is_object(j))
			resp->json = j;
		else
			json_decref(j);
	}
out:
	curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
	curl_slist_free_all(headers);
	free(text);
	free(url);
	return ret;
}

void bwa_response_describe(const struct bwa_response *r, char *buf, size_t size)
{
	json_t *e = r->json ? json_object_get(r->json, "error") : NULL;
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));

	if (code || msg) {
		snprintf(buf, size, "%ld %s: %s", r->status, code ? code : "error", msg ? msg : "(no message)");
	} else if (r->body && r->body_len) {
		snprintf(buf, size, "%ld: %.200s", r->status, r->body);
	} else {
		snprintf(buf, size, "%ld (empty answer)", r->status);
	}
	bwa_sanitize(buf);
}

double bwa_backoff_delay(unsigned attempt)
{
	double cap = BWA_BACKOFF_BASE_S;

	for (unsigned i = 0; i < attempt && cap < BWA_BACKOFF_CAP_S; i++)
		cap *= 2;
	if (cap > BWA_BACKOFF_CAP_S)
		cap = BWA_BACKOFF_CAP_S;
	/* Full jitter: uniform over [0, cap), so that a fleet retrying together spreads out. */
	return cap * bwa_random_unit();
}

enum bwa_outcome bwa_http_call(struct bwa_http *h, const char *what, const char *method, const char *path, json_t *body,
                               const char *if_none_match, struct bwa_response *resp, bw_error *err)
{
	for (unsigned attempt = 0;; attempt++) {
		char why[600];
		int rc = bwa_http_once(h, method, path, body, if_none_match, resp, err);
		enum bwa_outcome give_up;
		double delay;

		if (rc == BW_E_CANCELLED || bwa_stop) {
			bw_error_set(err, BW_E_CANCELLED, "%s: interrupted", what);
			return BWA_CANCELLED;
		}
		if (rc == BW_OK) {
			long s = resp->status;

			if ((s >= 200 && s < 300) || s == 304)
				return BWA_DONE;
			bwa_response_describe(resp, why, sizeof why);
			if (s == 401) {
				bw_error_set(err, BW_E_DENIED,
				             "%s: the server no longer accepts this device's certificate (%s); "
				             "enroll again to continue",
				             what, why);
				return BWA_NOAUTH;
			}
			if (s != 429 && s < 500) {
				bw_error_set(err, BW_E_REMOTE, "%s refused: %s", what, why);
				return BWA_REFUSED;
			}
			give_up = BWA_FAILING;
			delay = (s == 429 || s == 503) && resp->retry_after >= 0 ? (double)resp->retry_after
			                                                         : bwa_backoff_delay(attempt);
		} else if (rc == BW_E_TLS || rc == BW_E_LIMIT || rc == BW_E_NOMEM) {
			snprintf(why, sizeof why, "%s", err ? err->message : "failed");
			bw_error_set(err, rc, "%s: %s", what, why);
			return BWA_UNREACHABLE; /* a retry cannot fix these */
		} else {
			snprintf(why, sizeof why, "%s", err ? err->message : "failed");
			give_up = BWA_UNREACHABLE;
			delay = bwa_backoff_delay(attempt);
		}
		if (h->cfg.retries >= 0 && attempt >= (unsigned long)h->cfg.retries) {
			bw_error_set(err, rc == BW_OK ? BW_E_REMOTE : rc, "%s: %s%s", what, why,
			             attempt ? " (retries used up)" : "");
			return give_up;
		}
		bwa_warn("%s: %s; retrying in %.1f s", what, why, delay);
		bwa_response_free(resp);
		if (!bwa_sleep(delay)) {
			bw_error_set(err, BW_E_CANCELLED, "%s: interrupted", what);
			return BWA_CANCELLED;
		}
	}
}

int bwa_exit_for(enum bwa_outcome o)
{
	switch (o) {
	case BWA_DONE:
		return BWA_EXIT_OK;
	case BWA_NOAUTH:
		return BWA_EXIT_NOAUTH;
	case BWA_UNREACHABLE:
	case BWA_FAILING:
		return BWA_EXIT_UNREACHABLE;
	case BWA_REFUSED:
	case BWA_CANCELLED:
	default:
		return BWA_EXIT_FAIL;
	}
}
