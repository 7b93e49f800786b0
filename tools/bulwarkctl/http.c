/* http.c: bulwarkctl's HTTPS client on the libcurl easy interface. Every request verifies the
 * server certificate, requires TLS 1.2 or newer, speaks only https, never follows redirects and
 * is bounded by timeouts; failures become one-line messages that say what went wrong. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "bwctl.h"
#include "http.h"

#define CONNECT_TIMEOUT_S 10L
#define TOTAL_TIMEOUT_S   60L
#define LONG_TIMEOUT_S    3600L /* backups of large databases */
#define STALL_TIMEOUT_S   120L  /* ... but give up when no data flows for this long */
#define MAX_ERROR_BODY    (64u * 1024)

struct xfer {
	CURL *curl;
	const struct bwctl_http_request *req;
	struct bwctl_http_response *resp;
	bw_error *err;
	bool sink_failed;
	bool too_big;
};

int bwctl_http_global_init(bw_error *err)
{
	CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);

	if (rc != CURLE_OK)
		return bw_error_set(err, BW_E_INTERNAL, "cannot initialise libcurl: %s", curl_easy_strerror(rc));
	return BW_OK;
}

void bwctl_http_global_cleanup(void)
{
	curl_global_cleanup();
}

static bool buffer_append(struct xfer *x, const char *data, size_t len, size_t limit)
{
	struct bwctl_http_response *r = x->resp;

	if (len > limit || r->body_len > limit - len) {
		x->too_big = true;
		return false;
	}
	r->body = bwctl_xrealloc(r->body, r->body_len + len + 1);
	memcpy(r->body + r->body_len, data, len);
	r->body_len += len;
	r->body[r->body_len] = '\0';
	return true;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nmemb;

	if (x->req->sink) {
		long status = 0;

		curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
		if (status >= 200 && status < 300) {
			if (!x->req->sink(x->req->sink_arg, data, len, x->err)) {
				x->sink_failed = true;
				return 0;
			}
			return len;
		}
		/* An error answer to a streaming request: keep it to read the error envelope. */
		return buffer_append(x, data, len, MAX_ERROR_BODY) ? len : 0;
	}
	return buffer_append(x, data, len, BWCTL_HTTP_MAX_BODY) ? len : 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * nmemb;
	static const char name[] = "retry-after:";

	/* A new status line (e.g. after 100 Continue) starts a new header block. */
	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
		x->resp->retry_after = -1;
	if (len > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
		char value[32];
		size_t n = len - (sizeof name - 1);
		const char *p = data + sizeof name - 1;
		char *end;
		long v;

		if (n >= sizeof value)
			n = sizeof value - 1;
		memcpy(value, p, n);
		value[n] = '\0';
		errno = 0;
		v = strtol(value, &end, 10);
		while (isspace((unsigned char)*end))
			end++;
		/* Only the delta-seconds form; an HTTP date is rare and merely loses the hint. */
		if (errno == 0 && end != value && *end == '\0' && v >= 0)
			x->resp->retry_after = v;
	}
	return len;
}

/* Turns a libcurl failure into a message; sets transport_error for network and TLS problems. */
static int describe_failure(struct xfer *x, CURLcode rc, const char *errbuf)
{
	const struct bwctl_http_request *req = x->req;
	const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);
	long os_errno = 0;

	if (rc == CURLE_WRITE_ERROR && x->sink_failed)
		return x->err ? x->err->code : BW_E_IO; /* the sink already said why */
	if (rc == CURLE_WRITE_ERROR && x->too_big)
		return bw_error_set(x->err, BW_E_LIMIT, "the response from %s is too large (over %u MiB)", req->server,
		                    BWCTL_HTTP_MAX_BODY / (1024 * 1024));
	x->resp->transport_error = true;
	switch (rc) {
	case CURLE_COULDNT_RESOLVE_HOST:
		return bw_error_set(x->err, BW_E_IO, "cannot resolve the host of %s: %s", req->server, detail);
	case CURLE_COULDNT_CONNECT:
		curl_easy_getinfo(x->curl, CURLINFO_OS_ERRNO, &os_errno);
		return bw_error_set(x->err, BW_E_IO, "cannot connect to %s: %s", req->server,
		                    os_errno ? strerror((int)os_errno) : detail);
	case CURLE_OPERATION_TIMEDOUT:
		return bw_error_set(x->err, BW_E_TIMEOUT, "timed out talking to %s: %s", req->server, detail);
	case CURLE_PEER_FAILED_VERIFICATION:
		return bw_error_set(x->err, BW_E_TLS,
		                    "certificate of %s not trusted: %s (name the CA that signed it with --ca FILE)",
		                    req->server, detail);
	case CURLE_SSL_CACERT_BADFILE:
		return bw_error_set(x->err, BW_E_TLS, "cannot use CA file %s: %s",
		                    req->ca_file ? req->ca_file : "(system store)", detail);
	case CURLE_SSL_CONNECT_ERROR:
		return bw_error_set(x->err, BW_E_TLS, "TLS handshake with %s failed: %s", req->server, detail);
	case CURLE_UNSUPPORTED_PROTOCOL:
		return bw_error_set(x->err, BW_E_INVALID, "cannot use %s: %s", req->server, detail);
	default:
		return bw_error_set(x->err, BW_E_IO, "request to %s failed: %s", req->server, detail);
	}
}

/* Sets the options that carry the transport policy; returns the first failing option's code. */
static CURLcode set_policy(CURL *curl, const struct bwctl_http_request *req)
{
	CURLcode rc = CURLE_OK;

#define SET(opt, val)                                                                                                  \
	do {                                                                                                           \
		if (rc == CURLE_OK)                                                                                    \
			rc = curl_easy_setopt(curl, opt, val);                                                         \
	} while (0)
#if LIBCURL_VERSION_NUM >= 0x075500
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
#else
	SET(CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS);
	SET(CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS);
#endif
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (req->ca_file) {
		/* Trust only the named CA, not the system store as well. */
		SET(CURLOPT_CAINFO, req->ca_file);
		SET(CURLOPT_CAPATH, (char *)NULL);
	}
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_S);
	if (req->long_transfer) {
		SET(CURLOPT_TIMEOUT, LONG_TIMEOUT_S);
		SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
		SET(CURLOPT_LOW_SPEED_TIME, STALL_TIMEOUT_S);
	} else {
		SET(CURLOPT_TIMEOUT, TOTAL_TIMEOUT_S);
	}
	SET(CURLOPT_USERAGENT, "bulwarkctl/" BWCTL_VERSION);
#undef SET
	return rc;
}

int bwctl_http_perform(const struct bwctl_http_request *req, struct bwctl_http_response *resp, bw_error *err)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *headers = NULL, *h;
	struct xfer x = {.req = req, .resp = resp, .err = err};
	char *url = NULL, *auth = NULL, *accept = NULL;
	CURLcode rc;
	int ret = BW_OK;

	memset(resp, 0, sizeof *resp);
	resp->retry_after = -1;
	resp->body = bwctl_xstrdup("");
	x.curl = curl_easy_init();
	if (!x.curl)
		return bw_error_set(err, BW_E_NOMEM, "cannot create a libcurl handle");

	url = bwctl_xasprintf("%s%s", req->server, req->path);
	accept = bwctl_xasprintf("Accept: %s", req->accept ? req->accept : "application/json");
	h = curl_slist_append(headers, accept);
	if (h) {
		headers = h;
		h = curl_slist_append(headers, "Expect:"); /* small bodies: no 100-continue round trip */
	}
	if (h && req->body)
		h = curl_slist_append(headers, "Content-Type: application/json");
	if (h && req->token) {
		auth = bwctl_xasprintf("Authorization: Bearer %s", req->token);
		h = curl_slist_append(headers, auth);
	}
	if (!h) {
		ret = bw_error_set(err, BW_E_NOMEM, "cannot build the request headers");
		goto out;
	}

	rc = set_policy(x.curl, req);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(x.curl, CURLOPT_URL, url);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(x.curl, CURLOPT_ERRORBUFFER, errbuf);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(x.curl, CURLOPT_HTTPHEADER, headers);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(x.curl, CURLOPT_WRITEFUNCTION, on_body);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(x.curl, CURLOPT_WRITEDATA, &x);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(x.curl, CURLOPT_HEADERFUNCTION, on_header);
	if (rc == CURLE_OK)
		rc = curl_easy_setopt(x.curl, CURLOPT_HEADERDATA, &x);
	if (rc == CURLE_OK && strcmp(req->method, "GET") == 0) {
		rc = curl_easy_setopt(x.curl, CURLOPT_HTTPGET, 1L);
	} else if (rc == CURLE_OK && (strcmp(req->method, "POST") == 0 || req->body)) {
		rc = curl_easy_setopt(x.curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(req->body ? req->body_len : 0));
		if (rc == CURLE_OK)
			rc = curl_easy_setopt(x.curl, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		/* PUT with a body: sent like a POST body under another method name. */
		if (rc == CURLE_OK && strcmp(req->method, "POST") != 0)
			rc = curl_easy_setopt(x.curl, CURLOPT_CUSTOMREQUEST, req->method);
	} else if (rc == CURLE_OK) {
		rc = curl_easy_setopt(x.curl, CURLOPT_CUSTOMREQUEST, req->method);
	}
	if (rc != CURLE_OK) {
		ret = bw_error_set(err, BW_E_INTERNAL, "cannot set up the request to %s: %s", req->server,
		                   curl_easy_strerror(rc));
		goto out;
	}

	rc = curl_easy_perform(x.curl);
	if (rc != CURLE_OK) {
		ret = describe_failure(&x, rc, errbuf);
		goto out;
	}
	curl_easy_getinfo(x.curl, CURLINFO_RESPONSE_CODE, &resp->status);

out:
	curl_slist_free_all(headers);
	curl_easy_cleanup(x.curl);
	free(url);
	free(accept);
	bwctl_secure_free(auth);
	return ret;
}

void bwctl_http_response_free(struct bwctl_http_response *resp)
{
	if (!resp)
		return;
	bwctl_secure_free(resp->body);
	resp->body = NULL;
	resp->body_len = 0;
}

char *bwctl_http_escape(const char *segment)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(segment);
	char *out = bwctl_xmalloc(3 * n + 1), *o = out;

	for (const unsigned char *p = (const unsigned char *)segment; *p; p++) {
		/* RFC 3986 unreserved characters, ASCII only whatever the locale. */
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		    *p == '.' || *p == '_' || *p == '~') {
			*o++ = (char)*p;
		} else {
			*o++ = '%';
			*o++ = hex[*p >> 4];
			*o++ = hex[*p & 15];
		}
	}
	*o = '\0';
	return out;
}
