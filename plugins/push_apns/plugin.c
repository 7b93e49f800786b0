/* plugins/push_apns/plugin.c: the push_apns plugin: the "push" capability for Apple Push Notification service.
 *
 * Transport: every push is one HTTP/2 POST to <endpoint>/3/device/<token> through host->http_send (libcurl multi),
 * which multiplexes all of them over one long-lived connection per origin (curl's connection cache; PIPEWAIT makes
 * a new request wait for the connection that can multiplex rather than open another). Authentication is either a
 * provider token (ES256 JWT, apns_core.c) in the authorization header, or a TLS client certificate (MDM pushes,
 * topic = the certificate's subject UID).
 *
 * Flow: send() checks and queues a message (bounded FIFO); pump() starts queued pushes while fewer than
 * max_inflight are active; each answer is classified (apns_classify) into sent / token invalid / retry later /
 * refresh the provider token and retry / failed. The plugin does its own retries (http_send gets max_retries 0)
 * because the decision depends on APNs' reason. A lost connection (transport error) also sets a plugin-wide
 * reconnect backoff: no push starts before it ends, so a dead endpoint is not hammered.
 *
 * Certificate / key reload: POST /api/v1/plugins/push_apns/reload, and a timer that compares the files' mtime,
 * size and inode every `reload_check`. A new certificate for another topic than the one remembered in the record
 * store is refused unless allow_topic_change (or {"force": true} on the route). Because curl reuses a connection
 * only for the same client certificate path, each reload uses a new spelling of the same path (dir/././file), so
 * new pushes go over a new connection with the new certificate while the old one drains.
 *
 * Secrets: no key, JWT or device token is ever logged; http errors are logged without the request URL (which holds
 * the device token). */
#include "apns_core.h"

#include <bulwark/plugin.h>
#include <bulwark/push.h>

#include <errno.h>
#include <openssl/rand.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROD_URL        "https://api.push.apple.com"
#define SANDBOX_URL     "https://api.sandbox.push.apple.com"
#define EXPIRY_CHECK_MS (3600LL * 1000)
#define BENCH_MAX       10000000
#define URL_MAX         512

struct push {
	struct apns *a;
	struct push *next;          /* queue */
	struct push *aprev, *anext; /* active list */
	char url[URL_MAX];
	char id[37];
	char reason[APNS_REASON_MAX + 16];
	char device_id[64];
	char *body;
	size_t body_len;
	bool mdm;
	int priority;
	int64_t expiration_s;
	unsigned attempts;
	unsigned retries;
	bool refreshed; /* already retried once after ExpiredProviderToken */
	uint64_t jwt_gen;
	long status;
	int64_t started_ms;
	bw_http_call *call;
	bw_timer *timer;
	bw_push_done_fn done;
	void *done_arg;
};

struct file_stamp {
	bool have;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime;
};

struct bench {
	bw_http_req *req;
	int64_t count, submitted, sent, failed;
	int64_t t0_ms;
	char token[APNS_TOKEN_MAX + 1];
};

struct apns {
	/* settings */
	char *endpoint;
	char *ca_file;
	char *key_file;
	char *key_id;
	char *team_id;
	char *topic_setting;
	char *cert_file;
	bool allow_topic_change;
	char *collapse_id;
	int64_t ttl_ms;
	int64_t timeout_ms;
	int64_t max_retries;
	int64_t backoff_ms;
	int64_t backoff_max_ms;
	int64_t queue_size;
	int64_t max_inflight;
	int64_t reload_check_ms;
	int64_t connections;

	/* state */
	const struct bw_host_api *host;
	bw_plugin_ctx *ctx;
	struct bw_push_ops ops;
	char base_url[256];
	bool cert_mode;
	struct apns_jwt jwt;
	char topic[APNS_TOPIC_MAX];
	int64_t not_after_s;
	int expiry_stage;
	uint64_t cert_gen;
	char ca_paths[16][4096]; /* ca_file spelled once per connection lane (see pick_ca) */
	uint64_t lane_next;
	char cert_path[4096]; /* the spelling of cert_file for the current generation */
	char key_path[4096];
	struct file_stamp cert_stamp, key_stamp;
	char reload_error[512];
	char auth_error[APNS_REASON_MAX + 16]; /* the last push refused for our credentials, until one is sent */
	bool started, stopping;
	struct push *qhead, *qtail;
	size_t qlen;
	struct push *active;
	size_t nactive;
	bool pumping, repump;
	unsigned conn_failures;
	int64_t conn_until_ms;
	bw_timer *pump_timer;
	bw_timer *expiry_timer;
	bw_timer *reload_timer;
	bool warned_h1;
	int64_t clock_warned_ms;
	struct bench *bench;
	unsigned char rnd[4096]; /* random bytes for apns-id, refilled 256 ids at a time */
	size_t rnd_used;
	bw_metric *m_sent, *m_failed, *m_retries, *m_latency, *m_queue, *m_inflight;
};

static const struct bw_config_field apns_fields[] = {
    {BW_FIELD_STRING, "endpoint", "\"production\"", offsetof(struct apns, endpoint),
     "APNs server: \"production\", \"sandbox\", or an https:// URL (tests, proxies).", 0, 0, 0},
    {BW_FIELD_PATH, "ca_file", NULL, offsetof(struct apns, ca_file),
     "Extra CA certificate (PEM) trusted for the endpoint, e.g. a test server's CA.", 0, 0, 0},
    {BW_FIELD_PATH, "key_file", NULL, offsetof(struct apns, key_file),
     "Token auth: the .p8 signing key. Certificate auth: the certificate's private key (PEM), when it is not in "
     "cert_file.",
     0, 0, 0},
    {BW_FIELD_STRING, "key_id", NULL, offsetof(struct apns, key_id),
     "Token auth: the 10-character key identifier (JWT header kid).", 0, 0, 0},
    {BW_FIELD_STRING, "team_id", NULL, offsetof(struct apns, team_id),
     "Token auth: the 10-character team identifier (JWT claim iss).", 0, 0, 0},
    {BW_FIELD_STRING, "topic", NULL, offsetof(struct apns, topic_setting),
     "Token auth: the apns-topic (the app's bundle identifier).", 0, 0, 0},
    {BW_FIELD_PATH, "cert_file", NULL, offsetof(struct apns, cert_file),
     "Certificate auth (MDM): the push certificate (PEM); its subject UID is the topic. Selects certificate auth.", 0,
     0, 0},
    {BW_FIELD_BOOL, "allow_topic_change", "false", offsetof(struct apns, allow_topic_change),
     "Accept a certificate for another topic than the one devices enrolled with (they must enroll again).", 0, 0, 0},
    {BW_FIELD_STRING, "collapse_id", "\"bulwark-wake\"", offsetof(struct apns, collapse_id),
     "apns-collapse-id of app wake-ups (empty: none); several wake-ups collapse into one.", 0, 0, 0},
    {BW_FIELD_DURATION, "ttl", "\"1d\"", offsetof(struct apns, ttl_ms),
     "Default apns-expiration: how long APNs keeps an undelivered push.", 0, 0, 30LL * 86400000},
    {BW_FIELD_DURATION, "timeout", "\"10s\"", offsetof(struct apns, timeout_ms), "Timeout of one request.", 0, 100,
     300000},
    {BW_FIELD_INT, "max_retries", "5", offsetof(struct apns, max_retries),
     "Retries of one push after 429, 5xx or a lost connection.", 0, 0, 50},
    {BW_FIELD_DURATION, "backoff", "\"1s\"", offsetof(struct apns, backoff_ms),
     "First retry (and reconnect) delay; doubles each time, with jitter.", 0, 1, 3600000},
    {BW_FIELD_DURATION, "backoff_max", "\"60s\"", offsetof(struct apns, backoff_max_ms),
     "Longest retry (and reconnect) delay.", 0, 1, 86400000},
    {BW_FIELD_INT, "queue_size", "10000", offsetof(struct apns, queue_size),
     "Pushes waiting to be sent; beyond it send() answers BW_E_LIMIT.", 0, 1, 10000000},
    {BW_FIELD_INT, "max_inflight", "1000", offsetof(struct apns, max_inflight),
     "Pushes being sent (or waiting for a retry) at once.", 0, 1, 100000},
    {BW_FIELD_DURATION, "reload_check", "\"60s\"", offsetof(struct apns, reload_check_ms),
     "How often the certificate/key files are checked for changes (0: only POST .../reload).", 0, 0, 86400000},
    {BW_FIELD_INT, "connections", "1", offsetof(struct apns, connections),
     "HTTP/2 connections to the endpoint; pushes are spread over them round robin.", 0, 1, 16},
    BW_FIELD_END};

static void pump(struct apns *a);
static void attempt(struct push *p);
static void update_health(struct apns *a);

/* ---- helpers */

static int64_t now_ms(struct apns *a)
{
	return a->host->clock_now_ms();
}

static uint64_t backoff_delay(struct apns *a, unsigned n)
{
	uint64_t d = (uint64_t)a->backoff_ms, cap = (uint64_t)a->backoff_max_ms;
	for (unsigned i = 0; i < n && d < cap; i++)
		d *= 2;
	if (d > cap)
		d = cap;
	uint32_t r = 0;
	uint64_t lo = d / 2;
	if (d - lo > 0 && RAND_bytes((unsigned char *)&r, sizeof r) == 1)
		return lo + r % (d - lo + 1);
	return d;
}

static void fmt_date(int64_t t, char *out, size_t n)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static bool stamp_read(const char *path, struct file_stamp *s)
{
	struct stat st;
	memset(s, 0, sizeof *s);
	if (!path || stat(path, &st) != 0)
		return false;
	s->have = true;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->size = st.st_size;
	s->mtime = st.st_mtim;
	return true;
}

static bool stamp_same(const struct file_stamp *x, const struct file_stamp *y)
{
	return x->have == y->have && x->dev == y->dev && x->ino == y->ino && x->size == y->size &&
	       x->mtime.tv_sec == y->mtime.tv_sec && x->mtime.tv_nsec == y->mtime.tv_nsec;
}

/* The same file under a different spelling per generation ("dir/./././file"): curl matches connections by the
 * client certificate's path string, so a reloaded certificate gets a fresh connection. */
static void path_variant(const char *path, uint64_t gen, char *out, size_t n)
{
	const char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	unsigned k = (unsigned)(gen % 16);
	if (dirlen + 2 * k + strlen(path + dirlen) + 1 > n) {
		snprintf(out, n, "%s", path);
		return;
	}
	memcpy(out, path, dirlen);
	size_t o = dirlen;
	for (unsigned i = 0; i < k; i++) {
		out[o++] = '.';
		out[o++] = '/';
	}
	snprintf(out + o, n - o, "%s", path + dirlen);
}

/* A random (v4) UUID for apns-id. The bytes come from OpenSSL's RNG in blocks: one RAND_bytes call per push
 * showed in the benchmark's profile. */
static int new_apns_id(struct apns *a, char out[37], bw_error *err)
{
	if (a->rnd_used == 0 || a->rnd_used + 16 > sizeof a->rnd) {
		if (RAND_bytes(a->rnd, sizeof a->rnd) != 1)
			return bw_error_set(err, BW_E_RANDOM, "the system could not supply random bytes for apns-id");
		a->rnd_used = 0;
	}
	unsigned char *u = a->rnd + a->rnd_used;
	a->rnd_used += 16;
	u[6] = (unsigned char)((u[6] & 0x0f) | 0x40);
	u[8] = (unsigned char)((u[8] & 0x3f) | 0x80);
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[u[i] >> 4];
		out[o++] = hex[u[i] & 15];
	}
	out[o] = '\0';
	OPENSSL_cleanse(u, 16);
	return BW_OK;
}

/* ---- push lifetime */

static void push_free(struct push *p)
{
	free(p->body);
	free(p);
}

static void active_unlink(struct apns *a, struct push *p)
{
	if (p->aprev)
		p->aprev->anext = p->anext;
	else
		a->active = p->anext;
	if (p->anext)
		p->anext->aprev = p->aprev;
	p->aprev = p->anext = NULL;
	a->nactive--;
}

static const char *outcome_name(int o)
{
	return o == BW_PUSH_SENT ? "sent" : o == BW_PUSH_TOKEN_INVALID ? "token_invalid" : "failed";
}

/* Reasons that say our credentials are refused (not this device): shown in /healthz until a push is sent. */
static bool is_auth_reason(const char *r)
{
	static const char *const auth[] = {"InvalidProviderToken",      "MissingProviderToken",
	                                   "ExpiredProviderToken",      "BadCertificate",
	                                   "BadCertificateEnvironment", "Forbidden",
	                                   "UnrelatedKeyIdInToken",     "BadEnvironmentKeyInToken",
	                                   "TopicDisallowed",           "BadTopic",
	                                   "DeviceTokenNotForTopic",    "auth"};
	for (size_t i = 0; i < sizeof auth / sizeof auth[0]; i++)
		if (strcmp(r, auth[i]) == 0)
			return true;
	return false;
}

/* Reports the final outcome of an active push and frees it. */
static void push_finish(struct push *p, int outcome, const char *reason)
{
	struct apns *a = p->a;
	active_unlink(a, p);
	if (p->timer) {
		a->host->timer_cancel(p->timer);
		p->timer = NULL;
	}
	double secs = (double)(now_ms(a) - p->started_ms) / 1000.0;
	if (outcome == BW_PUSH_SENT) {
		a->host->metric_add(a->m_sent, NULL, 1);
		if (a->auth_error[0]) {
			a->auth_error[0] = '\0';
			update_health(a);
		}
	} else {
		if (reason && is_auth_reason(reason) && strcmp(a->auth_error, reason) != 0) {
			snprintf(a->auth_error, sizeof a->auth_error, "%s", reason);
			update_health(a);
		}
		a->host->metric_add(a->m_failed, apns_reason_label(reason), 1);
		a->host->log(a->ctx, outcome == BW_PUSH_TOKEN_INVALID ? BW_LOG_INFO : BW_LOG_WARN,
		             "push %s to device %s: %s (%s, status %ld, %u attempts)", p->id,
		             p->device_id[0] ? p->device_id : "-", outcome_name(outcome), reason ? reason : "-",
		             p->status, p->attempts);
	}
	a->host->metric_observe(a->m_latency, NULL, secs < 0 ? 0 : secs);
	a->host->metric_set(a->m_inflight, NULL, (double)a->nactive);
	struct bw_push_result res = {
	    .outcome = outcome,
	    .reason = outcome == BW_PUSH_SENT ? NULL : reason,
	    .status = p->status,
	    .attempts = p->attempts,
	    .id = p->id[0] ? p->id : NULL,
	};
	if (p->done)
		p->done(&res, p->done_arg);
	push_free(p);
	pump(a);
}

static void retry_timer_cb(void *arg)
{
	struct push *p = arg;
	p->timer = NULL;
	struct apns *a = p->a;
	int64_t now = now_ms(a);
	if (a->conn_until_ms > now) { /* still reconnecting: wait for the end of the backoff */
		p->timer = a->host->timer_add(a->ctx, (uint64_t)(a->conn_until_ms - now), 0, retry_timer_cb, p);
		if (p->timer)
			return;
	}
	attempt(p);
}

/* Schedules another attempt, or fails the push when the retries are used up. */
static void push_retry(struct push *p, uint64_t delay_ms)
{
	struct apns *a = p->a;
	if (a->stopping || p->retries >= (unsigned)a->max_retries) {
		push_finish(p, BW_PUSH_FAILED, p->reason);
		return;
	}
	p->retries++;
	a->host->metric_add(a->m_retries, NULL, 1);
	p->timer = a->host->timer_add(a->ctx, delay_ms, 0, retry_timer_cb, p);
	if (!p->timer)
		push_finish(p, BW_PUSH_FAILED, p->reason);
}

/* The message of an http error without its "METHOD URL: " prefix, since the URL holds the device token; a message
 * that still contains the token is withheld. */
static const char *strip_url(const char *msg, const char *url)
{
	const char *m = msg ? msg : "";
	const char *d = strstr(m, "/3/device/");
	if (d) {
		const char *c = strstr(d, ": ");
		m = c ? c + 2 : "";
	}
	const char *slash = strrchr(url, '/');
	const char *token = slash ? slash + 1 : "";
	if (*token && strstr(m, token))
		return "(details withheld: they contain the device token)";
	return m;
}

static void http_done(const struct bw_http_response *res, void *arg)
{
	struct push *p = arg;
	struct apns *a = p->a;
	p->call = NULL;
	if (res->error != BW_OK && !res->retryable) {
		/* An untrusted certificate, a refused client certificate, a TLS configuration error: trying
		 * again cannot help, and every push would fail the same way. */
		snprintf(p->reason, sizeof p->reason, "transport");
		p->status = 0;
		a->host->log(a->ctx, BW_LOG_ERROR, "APNs cannot be used (not retried): %s",
		             strip_url(res->error_message, p->url));
		push_finish(p, BW_PUSH_FAILED, p->reason);
		return;
	}
	if (res->error != BW_OK) {
		/* No answer: the connection is gone or never came. Back off every push, not just this one. */
		snprintf(p->reason, sizeof p->reason, "transport");
		p->status = 0;
		a->conn_failures++;
		uint64_t d = backoff_delay(a, a->conn_failures - 1);
		int64_t until = now_ms(a) + (int64_t)d;
		if (until > a->conn_until_ms) {
			a->conn_until_ms = until;
			a->host->log(a->ctx, BW_LOG_WARN, "no answer from APNs (%s); reconnecting in %llu ms",
			             strip_url(res->error_message, p->url), (unsigned long long)d);
		}
		push_retry(p, d);
		return;
	}
	a->conn_failures = 0;
	a->conn_until_ms = 0;
	if (res->http_version != 2 && !a->warned_h1) {
		a->warned_h1 = true;
		a->host->log(a->ctx, BW_LOG_WARN, "the APNs endpoint answered over HTTP/%ld, not HTTP/2",
		             res->http_version);
	}
	p->status = res->status;
	const char *rid = res->header ? res->header(res, "apns-id") : NULL;
	if (rid && strlen(rid) == 36)
		snprintf(p->id, sizeof p->id, "%s", rid);
	if (res->status == 200) {
		p->reason[0] = '\0';
		push_finish(p, BW_PUSH_SENT, NULL);
		return;
	}
	apns_reason_parse(res->body, res->body_len, res->status, p->reason, sizeof p->reason);
	switch (apns_classify(res->status, p->reason)) {
	case APNS_ACT_SENT:
		push_finish(p, BW_PUSH_SENT, NULL);
		return;
	case APNS_ACT_TOKEN_INVALID:
		push_finish(p, BW_PUSH_TOKEN_INVALID, p->reason);
		return;
	case APNS_ACT_RETRY: {
		const char *ra = res->header ? res->header(res, "retry-after") : NULL;
		uint64_t d = backoff_delay(a, p->retries);
		if (ra && *ra >= '0' && *ra <= '9') {
			uint64_t s = strtoull(ra, NULL, 10);
			if (s <= (uint64_t)a->backoff_max_ms / 1000)
				d = s * 1000 > d ? s * 1000 : d;
			else
				d = (uint64_t)a->backoff_max_ms;
		}
		push_retry(p, d);
		return;
	}
	case APNS_ACT_REFRESH:
		if (!a->cert_mode && !p->refreshed && apns_jwt_expired(&a->jwt, p->jwt_gen, now_ms(a))) {
			p->refreshed = true;
			a->host->log(a->ctx, BW_LOG_INFO, "APNs called the provider token expired: signing a new one");
			attempt(p);
			return;
		}
		if (!a->cert_mode && !p->refreshed) {
			int64_t t = now_ms(a);
			if (t - a->clock_warned_ms > 60000) {
				a->clock_warned_ms = t;
				a->host->log(
				    a->ctx, BW_LOG_WARN,
				    "APNs called a provider token expired that is less than 20 minutes old: check "
				    "this host's clock; a new token is signed once it is 20 minutes old");
			}
		}
		push_finish(p, BW_PUSH_FAILED, p->reason);
		return;
	case APNS_ACT_FAIL:
	default:
		push_finish(p, BW_PUSH_FAILED, p->reason);
		return;
	}
}

/* Sends (or sends again) one active push. */
static void attempt(struct push *p)
{
	struct apns *a = p->a;
	bw_error err = {0};
	const char *bearer = NULL;
	if (!a->cert_mode) {
		bearer = apns_jwt_get(&a->jwt, now_ms(a), &err);
		if (!bearer) {
			snprintf(p->reason, sizeof p->reason, "auth");
			a->host->log(a->ctx, BW_LOG_ERROR, "cannot sign a provider token: %s", err.message);
			push_finish(p, BW_PUSH_FAILED, p->reason);
			return;
		}
		p->jwt_gen = a->jwt.gen;
	}
	struct apns_hdr_in hin = {
	    .bearer = bearer,
	    .topic = a->topic,
	    .push_type = p->mdm ? "mdm" : "background",
	    .priority = p->priority,
	    .expiration_s = p->expiration_s,
	    .apns_id = p->id,
	    .collapse_id = p->mdm ? NULL : a->collapse_id,
	};
	struct apns_headers h;
	if (apns_headers_build(&hin, &h, &err) != BW_OK) {
		snprintf(p->reason, sizeof p->reason, "invalid");
		push_finish(p, BW_PUSH_FAILED, p->reason);
		return;
	}
	struct bw_http_request req = {
	    .size = sizeof req,
	    .method = "POST",
	    .url = p->url,
	    .headers = h.v,
	    .body = p->body,
	    .body_len = p->body_len,
	    .timeout_ms = (uint32_t)a->timeout_ms,
	    .max_retries = 0,
	    .ca_file = a->connections > 1 ? a->ca_paths[a->lane_next++ % (uint64_t)a->connections] : a->ca_file,
	    .client_cert = a->cert_mode ? a->cert_path : NULL,
	    .client_key = a->cert_mode ? a->key_path : NULL,
	    .http2 = true,
	    .max_response_bytes = 65536,
	};
	p->attempts++;
	p->call = a->host->http_send(a->ctx, &req, http_done, p, &err);
	OPENSSL_cleanse(h.buf, sizeof h.buf);
	if (!p->call) {
		snprintf(p->reason, sizeof p->reason, "transport");
		a->host->log(a->ctx, BW_LOG_WARN, "cannot start a push request: %s", strip_url(err.message, p->url));
		if (err.code == BW_E_LIMIT || err.code == BW_E_NOMEM)
			push_retry(p, backoff_delay(a, p->retries));
		else
			push_finish(p, BW_PUSH_FAILED, p->reason);
	}
}

static void pump_timer_cb(void *arg)
{
	struct apns *a = arg;
	a->pump_timer = NULL;
	pump(a);
}

/* Starts queued pushes while there is room; re-entrant calls (from done callbacks) only ask for another pass. */
static void pump(struct apns *a)
{
	if (a->pumping) {
		a->repump = true;
		return;
	}
	a->pumping = true;
	do {
		a->repump = false;
		while (a->qhead && a->nactive < (size_t)a->max_inflight && !a->stopping) {
			int64_t now = now_ms(a);
			if (a->conn_until_ms > now) {
				if (!a->pump_timer)
					a->pump_timer = a->host->timer_add(a->ctx, (uint64_t)(a->conn_until_ms - now),
					                                   0, pump_timer_cb, a);
				break;
			}
			struct push *p = a->qhead;
			a->qhead = p->next;
			if (!a->qhead)
				a->qtail = NULL;
			a->qlen--;
			p->next = NULL;
			p->anext = a->active;
			if (a->active)
				a->active->aprev = p;
			a->active = p;
			a->nactive++;
			attempt(p);
		}
	} while (a->repump);
	a->pumping = false;
	a->host->metric_set(a->m_queue, NULL, (double)a->qlen);
	a->host->metric_set(a->m_inflight, NULL, (double)a->nactive);
}

/* ---- the capability */

static int apns_send(void *arg, const struct bw_push_message *msg, bw_push_done_fn done, void *done_arg, bw_error *err)
{
	struct apns *a = arg;
	if (!a->started || a->stopping)
		return bw_error_set(err, BW_E_STATE, "push_apns is not running");
	if (!msg || msg->size < offsetof(struct bw_push_message, ttl_s) + sizeof msg->ttl_s || !done)
		return bw_error_set(err, BW_E_INVALID, "push message or callback missing");
	if (!apns_token_valid(msg->token))
		return bw_error_set(err, BW_E_INVALID, "APNs device token must be %d to %d hex digits", APNS_TOKEN_MIN,
		                    APNS_TOKEN_MAX);
	if (msg->push_magic && !apns_magic_valid(msg->push_magic))
		return bw_error_set(err, BW_E_INVALID, "PushMagic must be 1 to %d characters of A-Z, a-z, 0-9 and -",
		                    APNS_MAGIC_MAX);
	if (a->qlen >= (size_t)a->queue_size)
		return bw_error_set(err, BW_E_LIMIT, "push_apns queue is full (%zu pushes)", a->qlen);
	struct push *p = calloc(1, sizeof *p);
	if (!p)
		return bw_error_set(err, BW_E_NOMEM, "out of memory queueing a push");
	p->a = a;
	p->mdm = msg->push_magic != NULL;
	p->body = p->mdm ? apns_body_mdm(msg->push_magic, &p->body_len)
	                 : apns_body_wake(msg->reason, msg->command_id, msg->device_id, &p->body_len);
	if (!p->body || new_apns_id(a, p->id, err) != BW_OK) {
		push_free(p);
		return err && err->code ? err->code : bw_error_set(err, BW_E_NOMEM, "out of memory building a push");
	}
	snprintf(p->url, sizeof p->url, "%s/3/device/%s", a->base_url, msg->token);
	if (msg->device_id)
		snprintf(p->device_id, sizeof p->device_id, "%s", msg->device_id);
	/* Background (content-available) pushes must use priority 5; MDM pushes follow the caller. */
	p->priority = p->mdm && msg->high_priority ? 10 : 5;
	int64_t ttl_s = msg->ttl_s ? (int64_t)msg->ttl_s : a->ttl_ms / 1000;
	p->started_ms = now_ms(a);
	p->expiration_s = ttl_s > 0 ? p->started_ms / 1000 + ttl_s : 0;
	p->done = done;
	p->done_arg = done_arg;
	if (a->qtail)
		a->qtail->next = p;
	else
		a->qhead = p;
	a->qtail = p;
	a->qlen++;
	pump(a);
	return BW_OK;
}

/* ---- certificate / key (re)loading */

/* Reads the credentials. Certificate auth: topic and expiry from cert_file, key match, the topic rule; token auth:
 * the .p8 key. On success the new state replaces the old one. `force` accepts a topic change. */
static int load_credentials(struct apns *a, bool force, bool *changed, bw_error *err)
{
	*changed = false;
	if (a->cert_mode) {
		char topic[APNS_TOPIC_MAX];
		int64_t not_after = 0;
		int rc = apns_cert_info(a->cert_file, topic, sizeof topic, &not_after, err);
		if (rc == BW_OK)
			rc = apns_cert_key_check(a->cert_file, a->key_file, err);
		if (rc != BW_OK)
			return rc;
		/* The topic devices enrolled with is remembered: another one breaks every enrollment. */
		json_t *rec = NULL;
		bw_error gerr = {0};
		const char *known = NULL;
		if (a->host->record_get(a->ctx, "state", "topic", &rec, &gerr) == BW_OK)
			known = json_string_value(json_object_get(rec, "topic"));
		else if (gerr.code != BW_E_NOTFOUND) {
			rc = bw_error_set(err, BW_E_DB, "cannot read the remembered topic: %s", gerr.message);
			json_decref(rec);
			return rc;
		}
		bool topic_changed = known && strcmp(known, topic) != 0;
		if (topic_changed && !force && !a->allow_topic_change) {
			rc =
			    bw_error_set(err, BW_E_STATE,
			                 "cert_file %s is for topic \"%s\" but devices are enrolled with topic \"%s\": "
			                 "refused (every device would have to enroll again); set allow_topic_change = "
			                 "true or reload with {\"force\": true} to switch",
			                 a->cert_file, topic, known);
			json_decref(rec);
			return rc;
		}
		if (topic_changed)
			a->host->log(
			    a->ctx, BW_LOG_WARN,
			    "APNs topic changes from \"%s\" to \"%s\": devices enrolled with the old topic must enroll "
			    "again",
			    known, topic);
		json_decref(rec);
		if (!known || topic_changed) {
			json_t *v = json_pack("{s:s,s:I}", "topic", topic, "since", (json_int_t)(now_ms(a) / 1000));
			rc = v ? a->host->record_put(a->ctx, "state", "topic", v, err)
			       : bw_error_set(err, BW_E_NOMEM, "out of memory");
			json_decref(v);
			if (rc != BW_OK)
				return rc;
		}
		*changed = a->cert_gen == 0 || not_after != a->not_after_s || topic_changed;
		snprintf(a->topic, sizeof a->topic, "%s", topic);
		a->not_after_s = not_after;
		a->cert_gen++;
		path_variant(a->cert_file, a->cert_gen, a->cert_path, sizeof a->cert_path);
		path_variant(a->key_file ? a->key_file : a->cert_file, a->cert_gen, a->key_path, sizeof a->key_path);
		a->expiry_stage = -2; /* log the stage of the new certificate */
	} else {
		EVP_PKEY *k = NULL;
		int rc = apns_key_load(a->key_file, "key_file", &k, err);
		if (rc != BW_OK)
			return rc;
		struct apns_jwt nj;
		rc = apns_jwt_init(&nj, k, a->key_id, a->team_id, err);
		if (rc != BW_OK)
			return rc;
		/* A reload keeps the current token (and its age) when the key is the same. */
		if (a->jwt.key && EVP_PKEY_eq(a->jwt.key, nj.key) == 1) {
			apns_jwt_free(&nj);
		} else {
			*changed = true;
			uint64_t gen = a->jwt.gen;
			apns_jwt_free(&a->jwt);
			a->jwt = nj;
			a->jwt.gen = gen; /* pushes in flight see a newer generation after the first signing */
		}
		snprintf(a->topic, sizeof a->topic, "%s", a->topic_setting);
	}
	stamp_read(a->cert_mode ? a->cert_file : a->key_file, &a->cert_stamp);
	stamp_read(a->cert_mode && a->key_file ? a->key_file : NULL, &a->key_stamp);
	a->reload_error[0] = '\0';
	return BW_OK;
}

static int reload(struct apns *a, bool force, bool *changed, bw_error *err)
{
	int rc = load_credentials(a, force, changed, err);
	if (rc != BW_OK) {
		snprintf(a->reload_error, sizeof a->reload_error, "%s", err->message);
		a->host->log(a->ctx, BW_LOG_ERROR, "reload refused, keeping the current credentials: %s", err->message);
	} else if (*changed) {
		if (a->cert_mode) {
			char d[32];
			fmt_date(a->not_after_s, d, sizeof d);
			a->host->log(a->ctx, BW_LOG_INFO, "certificate loaded: topic %s, expires %s", a->topic, d);
		} else {
			a->host->log(a->ctx, BW_LOG_INFO, "token signing key loaded (key %s, team %s)", a->jwt.kid,
			             a->jwt.team);
		}
	}
	update_health(a);
	return rc;
}

static void reload_timer_cb(void *arg)
{
	struct apns *a = arg;
	struct file_stamp c, k;
	stamp_read(a->cert_mode ? a->cert_file : a->key_file, &c);
	stamp_read(a->cert_mode && a->key_file ? a->key_file : NULL, &k);
	if (stamp_same(&c, &a->cert_stamp) && stamp_same(&k, &a->key_stamp))
		return;
	a->host->log(a->ctx, BW_LOG_INFO, "credential files changed: reloading");
	bw_error err = {0};
	bool changed = false;
	if (reload(a, false, &changed, &err) != BW_OK) {
		/* Do not retry the same files every tick; the next change (or the route) tries again. */
		a->cert_stamp = c;
		a->key_stamp = k;
	}
}

/* ---- health */

static void update_health(struct apns *a)
{
	char detail[512];
	bool degraded = false;
	if (a->cert_mode) {
		int64_t now_s = now_ms(a) / 1000;
		int stage = apns_expiry_stage(a->not_after_s, now_s);
		char d[32];
		fmt_date(a->not_after_s, d, sizeof d);
		long days = (long)((a->not_after_s - now_s) / 86400);
		if (stage == -1) {
			degraded = true;
			snprintf(detail, sizeof detail, "certificate for %s EXPIRED on %s", a->topic, d);
		} else if (stage > 0) {
			snprintf(detail, sizeof detail, "certificate for %s expires %s (in %ld days): renew it",
			         a->topic, d, days);
		} else {
			snprintf(detail, sizeof detail, "certificate for %s expires %s (in %ld days)", a->topic, d,
			         days);
		}
		if (stage != a->expiry_stage) {
			if (stage == -1)
				a->host->log(a->ctx, BW_LOG_ERROR,
				             "the APNs certificate for %s expired on %s: pushes fail", a->topic, d);
			else if (stage > 0)
				a->host->log(
				    a->ctx, BW_LOG_WARN,
				    "the APNs certificate for %s expires %s, in %ld days (less than %d): renew it",
				    a->topic, d, days, stage);
			a->expiry_stage = stage;
		}
	} else {
		snprintf(detail, sizeof detail, "token auth (key %s, team %s), topic %s", a->jwt.kid, a->jwt.team,
		         a->topic);
	}
	if (a->auth_error[0]) {
		size_t n = strlen(detail);
		snprintf(detail + n, sizeof detail - n, "; APNs refuses the credentials: %s", a->auth_error);
		degraded = true;
	}
	if (a->reload_error[0]) {
		size_t n = strlen(detail);
		snprintf(detail + n, sizeof detail - n, "; last reload refused: %.200s", a->reload_error);
		degraded = true;
	}
	a->host->health_set(a->ctx, degraded, detail);
}

static void expiry_timer_cb(void *arg)
{
	update_health(arg);
}

/* ---- admin routes */

static json_t *result_json(const struct bw_push_result *res)
{
	return json_pack("{s:s,s:s?,s:I,s:I,s:s?}", "outcome", outcome_name(res->outcome), "reason", res->reason,
	                 "status", (json_int_t)res->status, "attempts", (json_int_t)res->attempts, "id", res->id);
}

static void route_send_done(const struct bw_push_result *res, void *arg)
{
	bw_http_req *req = ((void **)arg)[0];
	const struct bw_host_api *host = ((void **)arg)[1];
	free(arg);
	host->respond_json(req, 200, result_json(res));
}

static void route_send(bw_http_req *req, void *arg)
{
	struct apns *a = arg;
	json_t *body = NULL;
	bw_error err = {0};
	if (a->host->req_json(req, &body, &err) != BW_OK) {
		a->host->respond_error(req, 400, "invalid_json", err.message);
		return;
	}
	const char *token = json_string_value(json_object_get(body, "token"));
	json_t *jm = json_object_get(body, "push_magic"), *jr = json_object_get(body, "reason");
	json_t *jh = json_object_get(body, "high_priority");
	if (!token || (jm && !json_is_string(jm)) || (jr && !json_is_string(jr)) || (jh && !json_is_boolean(jh))) {
		json_decref(body);
		a->host->respond_error(req, 400, "invalid",
		                       "expected {\"token\": hex, \"push_magic\"?: string, \"reason\"?: string, "
		                       "\"high_priority\"?: bool}");
		return;
	}
	struct bw_push_message msg = {
	    .size = sizeof msg,
	    .token = token,
	    .push_magic = json_string_value(jm),
	    .reason = jr ? json_string_value(jr) : "test",
	    .high_priority = jh ? json_is_true(jh) : true,
	};
	void **ctx = malloc(2 * sizeof *ctx);
	if (!ctx) {
		json_decref(body);
		a->host->respond_error(req, 500, "internal", "out of memory");
		return;
	}
	ctx[0] = req;
	ctx[1] = (void *)a->host;
	int rc = apns_send(a, &msg, route_send_done, ctx, &err);
	json_decref(body);
	if (rc != BW_OK) {
		free(ctx);
		a->host->respond_error(req,
		                       rc == BW_E_LIMIT   ? 429
		                       : rc == BW_E_STATE ? 503
		                                          : 400,
		                       rc == BW_E_LIMIT   ? "queue_full"
		                       : rc == BW_E_STATE ? "unavailable"
		                                          : "invalid",
		                       err.message);
	}
}

static void route_reload(bw_http_req *req, void *arg)
{
	struct apns *a = arg;
	size_t blen = 0;
	a->host->req_body(req, &blen);
	bool force = false;
	if (blen > 0) {
		json_t *body = NULL;
		bw_error jerr = {0};
		if (a->host->req_json(req, &body, &jerr) != BW_OK) {
			a->host->respond_error(req, 400, "invalid_json", jerr.message);
			return;
		}
		json_t *f = json_object_get(body, "force");
		if (f && !json_is_boolean(f)) {
			json_decref(body);
			a->host->respond_error(req, 400, "invalid", "force must be true or false");
			return;
		}
		force = json_is_true(f);
		json_decref(body);
	}
	bw_error err = {0};
	bool changed = false;
	int rc = reload(a, force, &changed, &err);
	if (rc != BW_OK) {
		a->host->respond_error(req, rc == BW_E_STATE ? 409 : 400,
		                       rc == BW_E_STATE ? "topic_change" : "invalid_config", err.message);
		return;
	}
	json_t *out = json_pack("{s:b,s:b,s:s,s:s}", "reloaded", 1, "changed", changed, "auth",
	                        a->cert_mode ? "certificate" : "token", "topic", a->topic);
	if (out && a->cert_mode) {
		char d[32];
		fmt_date(a->not_after_s, d, sizeof d);
		json_object_set_new(out, "expires_at", json_string(d));
	}
	a->host->respond_json(req, 200, out);
}

static void route_status(bw_http_req *req, void *arg)
{
	struct apns *a = arg;
	json_t *out = json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:I}", "auth", a->cert_mode ? "certificate" : "token",
	                        "topic", a->topic, "endpoint", a->base_url, "queue", (json_int_t)a->qlen, "inflight",
	                        (json_int_t)a->nactive, "queue_size", (json_int_t)a->queue_size, "max_inflight",
	                        (json_int_t)a->max_inflight);
	if (out && a->cert_mode) {
		char d[32];
		fmt_date(a->not_after_s, d, sizeof d);
		json_object_set_new(out, "expires_at", json_string(d));
	}
	if (out && a->reload_error[0])
		json_object_set_new(out, "reload_error", json_string(a->reload_error));
	a->host->respond_json(req, 200, out);
}

static void bench_fill(struct apns *a);

static void bench_done(const struct bw_push_result *res, void *arg)
{
	struct apns *a = arg;
	struct bench *b = a->bench;
	if (!b)
		return;
	if (res->outcome == BW_PUSH_SENT)
		b->sent++;
	else
		b->failed++;
	if (b->sent + b->failed == b->count) {
		double secs = (double)(now_ms(a) - b->t0_ms) / 1000.0;
		if (secs <= 0)
			secs = 0.001;
		a->bench = NULL;
		a->host->respond_json(b->req, 200,
		                      json_pack("{s:I,s:I,s:I,s:f,s:f}", "count", (json_int_t)b->count, "sent",
		                                (json_int_t)b->sent, "failed", (json_int_t)b->failed, "seconds", secs,
		                                "per_second", (double)b->count / secs));
		free(b);
		return;
	}
	bench_fill(a);
}

static void bench_fill(struct apns *a)
{
	struct bench *b = a->bench;
	while (b && b->submitted < b->count && a->qlen < (size_t)a->queue_size) {
		struct bw_push_message msg = {.size = sizeof msg, .token = b->token, .reason = "bench"};
		bw_error err = {0};
		if (apns_send(a, &msg, bench_done, a, &err) != BW_OK)
			break;
		b->submitted++;
	}
}

static void route_bench(bw_http_req *req, void *arg)
{
	struct apns *a = arg;
	json_t *body = NULL;
	bw_error err = {0};
	if (a->host->req_json(req, &body, &err) != BW_OK) {
		a->host->respond_error(req, 400, "invalid_json", err.message);
		return;
	}
	json_t *jc = json_object_get(body, "count");
	const char *token = json_string_value(json_object_get(body, "token"));
	if (!json_is_integer(jc) || json_integer_value(jc) < 1 || json_integer_value(jc) > BENCH_MAX ||
	    (token && !apns_token_valid(token))) {
		json_decref(body);
		a->host->respond_error(req, 400, "invalid", "expected {\"count\": 1..10000000, \"token\"?: hex}");
		return;
	}
	if (a->bench || !a->started || a->stopping) {
		json_decref(body);
		a->host->respond_error(req, 409, "busy", "a bench is running or the plugin is not running");
		return;
	}
	struct bench *b = calloc(1, sizeof *b);
	if (!b) {
		json_decref(body);
		a->host->respond_error(req, 500, "internal", "out of memory");
		return;
	}
	b->req = req;
	b->count = json_integer_value(jc);
	snprintf(b->token, sizeof b->token, "%s",
	         token ? token : "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
	json_decref(body);
	b->t0_ms = now_ms(a);
	a->bench = b;
	bench_fill(a);
}

/* ---- lifecycle */

static int resolve_endpoint(struct apns *a, bw_error *err)
{
	const char *e = a->endpoint ? a->endpoint : "production";
	if (strcmp(e, "production") == 0)
		e = PROD_URL;
	else if (strcmp(e, "sandbox") == 0 || strcmp(e, "development") == 0)
		e = SANDBOX_URL;
	else if (strncmp(e, "https://", 8) != 0)
		return bw_error_set(err, BW_E_CONFIG,
		                    "endpoint must be \"production\", \"sandbox\" or an https:// URL, not \"%s\"", e);
	size_t n = strlen(e);
	while (n > 8 && e[n - 1] == '/')
		n--;
	if (n >= sizeof a->base_url || strpbrk(e, " \t\r\n?#"))
		return bw_error_set(err, BW_E_CONFIG, "endpoint is too long or has spaces, a query or a fragment");
	memcpy(a->base_url, e, n);
	a->base_url[n] = '\0';
	return BW_OK;
}

static int init_inner(struct apns *a, bw_plugin_ctx *ctx, const struct bw_host_api *host, bw_error *err);

/* The host does not call fini after a failed init, so what init allocated is freed here. */
static int apns_init(bw_plugin_ctx *ctx, const struct bw_host_api *host, void *instance, bw_error *err)
{
	struct apns *a = instance;
	int rc = init_inner(a, ctx, host, err);
	if (rc != BW_OK)
		apns_jwt_free(&a->jwt);
	return rc;
}

static int init_inner(struct apns *a, bw_plugin_ctx *ctx, const struct bw_host_api *host, bw_error *err)
{
	a->host = host;
	a->ctx = ctx;
	int rc = resolve_endpoint(a, err);
	if (rc != BW_OK)
		return rc;
	/* Several connections: curl keeps one multiplexed connection per TLS configuration, and the CA file's path is
	 * part of it; lane i hands curl the same CA file spelled differently ("dir/./file"), so it opens one
	 * connection per lane. Without ca_file that is the system bundle (curl's default CAINFO). */
	if (a->connections > 1) {
		const char *ca = a->ca_file;
		static const char *const bundles[] = {"/etc/ssl/certs/ca-certificates.crt",
		                                      "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"};
		for (size_t i = 0; !ca && i < sizeof bundles / sizeof bundles[0]; i++)
			if (access(bundles[i], R_OK) == 0)
				ca = bundles[i];
		if (!ca)
			return bw_error_set(err, BW_E_CONFIG,
			                    "connections > 1 needs ca_file (no system CA bundle found)");
		for (int64_t i = 0; i < a->connections; i++)
			path_variant(ca, (uint64_t)i, a->ca_paths[i], sizeof a->ca_paths[i]);
	}
	if (a->ca_file) {
		FILE *f = fopen(a->ca_file, "r");
		if (!f)
			return bw_error_set(err, BW_E_CONFIG, "ca_file: cannot read %s: %s", a->ca_file,
			                    strerror(errno));
		fclose(f);
	}
	if (a->backoff_max_ms < a->backoff_ms)
		return bw_error_set(err, BW_E_CONFIG, "backoff_max must not be shorter than backoff");
	if (a->collapse_id && strlen(a->collapse_id) > 64)
		return bw_error_set(err, BW_E_CONFIG, "collapse_id must be at most 64 bytes");
	a->cert_mode = a->cert_file != NULL;
	if (a->cert_mode) {
		if (a->key_id || a->team_id || a->topic_setting)
			return bw_error_set(
			    err, BW_E_CONFIG,
			    "cert_file selects certificate auth (the topic is the certificate's UID): key_id, "
			    "team_id and topic (token auth) must not be set as well");
	} else {
		if (!a->key_file)
			return bw_error_set(
			    err, BW_E_CONFIG,
			    "set key_file, key_id, team_id and topic (token auth) or cert_file (certificate "
			    "auth)");
		if (!a->key_id || !a->team_id || !a->topic_setting || !*a->topic_setting)
			return bw_error_set(err, BW_E_CONFIG, "token auth needs key_id, team_id and topic");
		if (strlen(a->topic_setting) >= APNS_TOPIC_MAX)
			return bw_error_set(err, BW_E_CONFIG, "topic is too long");
	}
	a->expiry_stage = -2;
	bool changed = false;
	rc = load_credentials(a, false, &changed, err);
	if (rc != BW_OK)
		return rc;

	a->m_sent =
	    host->metric_new(ctx, BW_METRIC_COUNTER, "sent_total", "Pushes accepted by APNs.", NULL, NULL, 0, err);
	a->m_failed =
	    host->metric_new(ctx, BW_METRIC_COUNTER, "failed_total",
	                     "Pushes not delivered (token invalid or failed), by APNs reason.", "reason", NULL, 0, err);
	a->m_retries =
	    host->metric_new(ctx, BW_METRIC_COUNTER, "retries_total", "Push requests sent again.", NULL, NULL, 0, err);
	a->m_latency = host->metric_new(ctx, BW_METRIC_HISTOGRAM, "latency_seconds",
	                                "Time from queueing a push to its final outcome.", NULL, NULL, 0, err);
	a->m_queue = host->metric_new(ctx, BW_METRIC_GAUGE, "queue", "Pushes waiting to be sent.", NULL, NULL, 0, err);
	a->m_inflight = host->metric_new(ctx, BW_METRIC_GAUGE, "inflight", "Pushes being sent or waiting for a retry.",
	                                 NULL, NULL, 0, err);
	if (!a->m_sent || !a->m_failed || !a->m_retries || !a->m_latency || !a->m_queue || !a->m_inflight)
		return err->code ? err->code : BW_E_INTERNAL;

	a->ops.size = sizeof a->ops;
	a->ops.provider = "apns";
	a->ops.send = apns_send;
	rc = host->capability_register(ctx, "push", &a->ops, sizeof a->ops, a, err);
	if (rc != BW_OK)
		return rc;
	static const struct {
		const char *method, *path;
		int role;
		void (*fn)(bw_http_req *, void *);
	} routes[] = {
	    {"POST", "send", BW_ROLE_ADMIN, route_send},
	    {"POST", "reload", BW_ROLE_ADMIN, route_reload},
	    {"POST", "bench", BW_ROLE_ADMIN, route_bench},
	    {"GET", "status", BW_ROLE_READONLY, route_status},
	};
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
		struct bw_route r = {.size = sizeof r,
		                     .listener = "admin",
		                     .method = routes[i].method,
		                     .path = routes[i].path,
		                     .min_role = routes[i].role,
		                     .handler = routes[i].fn,
		                     .arg = a};
		rc = host->route_add(ctx, &r, err);
		if (rc != BW_OK)
			return rc;
	}
	a->expiry_timer = host->timer_add(ctx, EXPIRY_CHECK_MS, EXPIRY_CHECK_MS, expiry_timer_cb, a);
	if (a->reload_check_ms > 0)
		a->reload_timer = host->timer_add(ctx, (uint64_t)a->reload_check_ms, (uint64_t)a->reload_check_ms,
		                                  reload_timer_cb, a);
	update_health(a);
	return BW_OK;
}

static int apns_start(bw_plugin_ctx *ctx, void *instance, bw_error *err)
{
	(void)ctx, (void)err;
	struct apns *a = instance;
	a->started = true;
	a->host->log(a->ctx, BW_LOG_INFO, "ready: %s auth, topic %s, endpoint %s",
	             a->cert_mode ? "certificate" : "token", a->topic, a->base_url);
	return BW_OK;
}

/* Fails every push that is not waiting for an HTTP answer; true when none is left. */
static bool drain(struct apns *a)
{
	while (a->qhead) {
		struct push *p = a->qhead;
		a->qhead = p->next;
		a->qlen--;
		p->next = NULL;
		/* Make it active so that push_finish can account for it. */
		p->anext = a->active;
		if (a->active)
			a->active->aprev = p;
		a->active = p;
		a->nactive++;
		snprintf(p->reason, sizeof p->reason, "stopping");
		push_finish(p, BW_PUSH_FAILED, p->reason);
	}
	a->qtail = NULL;
	bool again = true;
	while (again) {
		again = false;
		for (struct push *p = a->active; p; p = p->anext)
			if (!p->call) { /* waiting on a retry timer */
				if (!p->reason[0])
					snprintf(p->reason, sizeof p->reason, "stopping");
				push_finish(p, BW_PUSH_FAILED, p->reason);
				again = true;
				break;
			}
	}
	return a->active == NULL;
}

static int apns_stop(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	struct apns *a = instance;
	a->stopping = true;
	if (a->pump_timer) {
		a->host->timer_cancel(a->pump_timer);
		a->pump_timer = NULL;
	}
	return drain(a) ? BW_OK : BW_E_BUSY;
}

static void apns_fini(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	struct apns *a = instance;
	if (a->host) {
		/* The host released this plugin's timers before fini: forget them, never cancel them. */
		a->pump_timer = a->expiry_timer = a->reload_timer = NULL;
		for (struct push *p = a->active; p; p = p->anext)
			p->timer = NULL;
		a->stopping = true;
		drain(a);
		while (a->active) {
			struct push *p = a->active;
			if (p->call) {
				a->host->http_cancel(p->call);
				p->call = NULL;
			}
			snprintf(p->reason, sizeof p->reason, "stopping");
			push_finish(p, BW_PUSH_FAILED, p->reason);
		}
	}
	free(a->bench); /* its request was answered by the host at shutdown */
	a->bench = NULL;
	apns_jwt_free(&a->jwt);
}

BW_PLUGIN_DEFINE(push_apns) = {
    BW_PLUGIN_HEADER,
    .name = "push_apns",
    .version = "1.0.0",
    .description = "Apple Push Notification service provider (HTTP/2, token or certificate auth)",
    .instance_size = sizeof(struct apns),
    .fields = apns_fields,
    .init = apns_init,
    .start = apns_start,
    .stop = apns_stop,
    .fini = apns_fini,
};
