/* plugins/push_fcm/plugin.c: the push_fcm plugin: the "push" capability for Firebase Cloud Messaging (HTTP v1
 * messages:send) with the OAuth2 service-account flow, plus an admin route that sends one test push.
 *
 * Flow: send() copies the message into a FIFO and schedules a 0 ms "kick" timer (so that done never runs
 * inside send()). The kick pumps the FIFO while fewer than inflight_max requests are out: each message needs
 * a usable access token; when there is none (or it is due for refresh) one token request is started and the
 * FIFO waits for it. Answers are classified from error.details[].errorCode (fcm_core.c): retries go back to
 * the FIFO after a backoff timer (full jitter, or Retry-After), 401 gets one new access token, the rest is
 * final. Everything runs on the loop thread; the host's HTTP client does the transport (HTTP/2 when the
 * server offers it) and is asked for no retries of its own, so that every attempt is classified here. */
#include "fcm_core.h"

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

#define SETTING_SA "service_account_file"

enum msg_state { M_QUEUED, M_INFLIGHT, M_BACKOFF };

struct fcm;

struct fcm_msg {
	struct fcm_msg *prev, *next; /* every pending message (for stop) */
	struct fcm_msg *qnext;       /* the FIFO of messages waiting to be sent */
	struct fcm *f;
	enum msg_state state;
	char *body;      /* the messages:send JSON */
	char label[200]; /* "push #<n> to device <id>", for logs: never the registration token */
	bw_push_done_fn done;
	void *done_arg;
	unsigned attempts;
	unsigned retries;
	bool reauthed;      /* one new access token after a 401, no more */
	uint64_t token_gen; /* the access token the last attempt used */
	int64_t start_ms;
	long last_status;
	bw_http_call *call;
	bw_timer *timer;
};

struct fcm {
	const struct bw_host_api *host;
	bw_plugin_ctx *ctx;
	/* settings */
	char *sa_file;
	char *project_setting;
	char *endpoint;
	char *token_uri_setting;
	char *ca_file;
	int64_t ttl_ms;
	int64_t queue_max;
	int64_t inflight_max;
	int64_t retry_max;
	int64_t backoff_ms;
	int64_t backoff_max_ms;
	int64_t timeout_ms;
	int64_t refresh_margin_ms;
	/* derived */
	struct fcm_sa sa;
	char *project_id;
	char *token_uri;
	char *send_url;
	/* access token */
	char *access_token;
	char *auth_header; /* "Authorization: Bearer ..." */
	int64_t token_expires_ms;
	int64_t token_refresh_ms;
	uint64_t token_gen;
	bw_http_call *token_call;
	bw_timer *token_timer; /* backoff before the next token request */
	unsigned token_failures;
	/* messages */
	struct fcm_msg *all;
	struct fcm_msg *qhead, *qtail;
	size_t npending, nqueued, ninflight;
	uint64_t seq;
	bw_timer *kick_timer;
	bool started, stopping;
	/* metrics */
	bw_metric *m_sent, *m_failed, *m_retries, *m_latency, *m_queue, *m_inflight, *m_token_refresh;
};

static const struct bw_config_field fcm_fields[] = {
    {BW_FIELD_PATH, SETTING_SA, NULL, offsetof(struct fcm, sa_file),
     "Firebase service-account JSON file (client_email, private_key, token_uri, project_id).", BW_FIELD_REQUIRED, 0, 0},
    {BW_FIELD_STRING, "project_id", NULL, offsetof(struct fcm, project_setting),
     "Firebase project id (default: project_id of the service-account file).", 0, 0, 0},
    {BW_FIELD_STRING, "endpoint", "\"https://fcm.googleapis.com\"", offsetof(struct fcm, endpoint),
     "Base URL of the FCM HTTP v1 API (https).", 0, 0, 0},
    {BW_FIELD_STRING, "token_uri", NULL, offsetof(struct fcm, token_uri_setting),
     "OAuth2 token endpoint (https; default: token_uri of the service-account file).", 0, 0, 0},
    {BW_FIELD_PATH, "ca_file", NULL, offsetof(struct fcm, ca_file),
     "Extra trusted CA certificate (PEM) for the endpoint and the token endpoint, e.g. a test simulator's.", 0, 0, 0},
    {BW_FIELD_DURATION, "ttl", "\"1h\"", offsetof(struct fcm, ttl_ms),
     "How long FCM may hold a wake-up when the message does not say (android.ttl).", 0, 0, 28LL * 86400000},
    {BW_FIELD_INT, "queue_max", "10000", offsetof(struct fcm, queue_max),
     "Messages waiting (to be sent or retried) before send() refuses with a limit error.", 0, 1, 1000000},
    {BW_FIELD_INT, "inflight_max", "1000", offsetof(struct fcm, inflight_max), "Requests to FCM in flight at once.", 0,
     1, 100000},
    {BW_FIELD_INT, "retry_max", "5", offsetof(struct fcm, retry_max),
     "Retries of one message after QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL or a network error.", 0, 0, 50},
    {BW_FIELD_DURATION, "backoff", "\"1s\"", offsetof(struct fcm, backoff_ms),
     "Base of the exponential backoff between retries (full jitter).", 0, 1, 3600000},
    {BW_FIELD_DURATION, "backoff_max", "\"60s\"", offsetof(struct fcm, backoff_max_ms),
     "Longest wait before one retry; also caps Retry-After.", 0, 1, 86400000},
    {BW_FIELD_DURATION, "timeout", "\"30s\"", offsetof(struct fcm, timeout_ms),
     "Time limit of one request to FCM or to the token endpoint.", 0, 100, 600000},
    {BW_FIELD_DURATION, "token_refresh_margin", "\"5m\"", offsetof(struct fcm, refresh_margin_ms),
     "How long before its expiry the access token is replaced (at most half its lifetime).", 0, 0, 3600000},
    BW_FIELD_END};

/* ---- helpers */

static uint32_t rnd32(void)
{
	uint32_t r = 0;
	if (RAND_bytes((unsigned char *)&r, sizeof r) != 1)
		r = (uint32_t)time(NULL) * 2654435761u;
	return r;
}

static void fmt_time(int64_t ms, char *out, size_t n)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A bounded metric label for a final reason. */
static const char *reason_label(const char *reason)
{
	static const char *const known[] = {"UNREGISTERED",           "INVALID_ARGUMENT", "SENDER_ID_MISMATCH",
	                                    "QUOTA_EXCEEDED",         "UNAVAILABLE",      "INTERNAL",
	                                    "THIRD_PARTY_AUTH_ERROR", "UNAUTHENTICATED",  NULL};
	if (!reason)
		return "other";
	for (size_t i = 0; known[i]; i++)
		if (strcmp(reason, known[i]) == 0)
			return known[i];
	if (strncmp(reason, "oauth:", 6) == 0)
		return "oauth";
	if (strncmp(reason, "transport:", 10) == 0)
		return "transport";
	if (strcmp(reason, "stopping") == 0)
		return "stopping";
	return "other";
}

static void publish_gauges(struct fcm *f)
{
	f->host->metric_set(f->m_queue, NULL, (double)f->nqueued);
	f->host->metric_set(f->m_inflight, NULL, (double)f->ninflight);
}

static void pump(struct fcm *f);

/* Network errors, timeouts and dropped connections may pass; certificate problems and alerts will not
 * (the host tells which: bw_http_response.retryable, ABI 1.2). */
static bool transport_retryable(const struct bw_http_response *res)
{
	return res->retryable;
}

static void kick_cb(void *arg)
{
	struct fcm *f = arg;
	f->kick_timer = NULL;
	pump(f);
}

/* Pumps the FIFO from a fresh loop turn (never from inside send() or a done callback chain). */
static void kick(struct fcm *f)
{
	if (f->kick_timer || f->stopping)
		return;
	f->kick_timer = f->host->timer_add(f->ctx, 0, 0, kick_cb, f);
	if (!f->kick_timer)
		f->host->log(f->ctx, BW_LOG_ERROR, "cannot schedule the send queue (timer)");
}

static void q_push(struct fcm *f, struct fcm_msg *m, bool front)
{
	m->state = M_QUEUED;
	m->qnext = NULL;
	if (front) {
		m->qnext = f->qhead;
		f->qhead = m;
		if (!f->qtail)
			f->qtail = m;
	} else {
		if (f->qtail)
			f->qtail->qnext = m;
		else
			f->qhead = m;
		f->qtail = m;
	}
	f->nqueued++;
}

static struct fcm_msg *q_pop(struct fcm *f)
{
	struct fcm_msg *m = f->qhead;
	if (!m)
		return NULL;
	f->qhead = m->qnext;
	if (!f->qhead)
		f->qtail = NULL;
	m->qnext = NULL;
	f->nqueued--;
	return m;
}

static void msg_free(struct fcm_msg *m)
{
	free(m->body);
	free(m);
}

/* Reports the final outcome and forgets the message. It must not be in the FIFO. */
static void finish(struct fcm_msg *m, int outcome, const char *reason, const char *id)
{
	struct fcm *f = m->f;
	if (m->prev)
		m->prev->next = m->next;
	else
		f->all = m->next;
	if (m->next)
		m->next->prev = m->prev;
	f->npending--;
	if (m->state == M_BACKOFF)
		f->nqueued--;
	if (outcome == BW_PUSH_SENT) {
		f->host->metric_add(f->m_sent, NULL, 1);
		f->host->metric_observe(f->m_latency, NULL, (double)(f->host->clock_now_ms() - m->start_ms) / 1000.0);
	} else {
		f->host->metric_add(f->m_failed, reason_label(reason), 1);
	}
	publish_gauges(f);
	struct bw_push_result res = {
	    .outcome = outcome, .reason = reason, .status = m->last_status, .attempts = m->attempts, .id = id};
	bw_push_done_fn done = m->done;
	void *arg = m->done_arg;
	msg_free(m);
	done(&res, arg);
}

/* ---- retries */

static void backoff_cb(void *arg)
{
	struct fcm_msg *m = arg;
	struct fcm *f = m->f;
	m->timer = NULL;
	f->nqueued--; /* q_push counts it again */
	q_push(f, m, false);
	kick(f);
}

/* Retries `m` after a backoff (or Retry-After), or fails it when its retries are used up. */
static void retry_or_fail(struct fcm_msg *m, const char *reason, const struct bw_http_response *res)
{
	struct fcm *f = m->f;
	if (f->stopping || (int64_t)m->retries >= f->retry_max) {
		if (!f->stopping)
			f->host->log(f->ctx, BW_LOG_WARN, "%s failed after %u attempts: %s", m->label, m->attempts,
			             reason);
		finish(m, BW_PUSH_FAILED, reason, NULL);
		return;
	}
	int64_t delay = -1;
	if (res && res->header)
		delay = fcm_retry_after_ms(res->header(res, "Retry-After"), f->host->clock_now_ms() / 1000,
		                           (uint64_t)f->backoff_max_ms);
	if (delay < 0)
		delay =
		    (int64_t)fcm_backoff_ms(m->retries, (uint64_t)f->backoff_ms, (uint64_t)f->backoff_max_ms, rnd32());
	m->retries++;
	f->host->metric_add(f->m_retries, NULL, 1);
	f->host->log(f->ctx, BW_LOG_DEBUG, "%s: %s, retry %u in %lld ms", m->label, reason, m->retries,
	             (long long)delay);
	m->state = M_BACKOFF;
	f->nqueued++;
	m->timer = f->host->timer_add(f->ctx, (uint64_t)delay, 0, backoff_cb, m);
	if (!m->timer) {
		finish(m, BW_PUSH_FAILED, reason, NULL);
		return;
	}
	publish_gauges(f);
}

/* ---- access token */

static void token_fetch(struct fcm *f);

static void token_clear(struct fcm *f)
{
	if (f->access_token)
		OPENSSL_cleanse(f->access_token, strlen(f->access_token));
	if (f->auth_header)
		OPENSSL_cleanse(f->auth_header, strlen(f->auth_header));
	free(f->access_token);
	free(f->auth_header);
	f->access_token = f->auth_header = NULL;
}

static bool token_usable(struct fcm *f)
{
	return f->auth_header && f->host->clock_now_ms() < f->token_refresh_ms;
}

/* Fails every message waiting in the FIFO (they wait for the token that cannot be had). The FIFO is taken
 * first: a done callback that sends again queues for the next token request, not for this failure. */
static void fail_queued(struct fcm *f, const char *reason)
{
	struct fcm_msg *m = f->qhead;
	f->qhead = f->qtail = NULL;
	while (m) {
		struct fcm_msg *next = m->qnext;
		m->qnext = NULL;
		f->nqueued--;
		finish(m, BW_PUSH_FAILED, reason, NULL);
		m = next;
	}
}

static void token_timer_cb(void *arg)
{
	struct fcm *f = arg;
	f->token_timer = NULL;
	token_fetch(f);
}

static void token_done(const struct bw_http_response *res, void *arg)
{
	struct fcm *f = arg;
	f->token_call = NULL;
	char why[640];
	bool retryable;
	if (res->error != BW_OK) {
		snprintf(why, sizeof why, "oauth: token endpoint unreachable: %s", res->error_message);
		retryable = transport_retryable(res);
	} else if (res->status == 200) {
		char *tok = NULL;
		int64_t expires_in = 0;
		bw_error err;
		bw_error_clear(&err);
		if (fcm_token_parse(res->body, res->body_len, &tok, &expires_in, &err) == BW_OK) {
			token_clear(f);
			size_t n = strlen(tok) + sizeof "Authorization: Bearer ";
			f->auth_header = malloc(n);
			if (!f->auth_header) {
				free(tok);
				snprintf(why, sizeof why, "oauth: out of memory");
				retryable = false;
				goto failed;
			}
			snprintf(f->auth_header, n, "Authorization: Bearer %s", tok);
			f->access_token = tok;
			int64_t now = f->host->clock_now_ms();
			f->token_expires_ms = now + expires_in * 1000;
			f->token_refresh_ms = fcm_token_refresh_at(now, expires_in, f->refresh_margin_ms);
			f->token_gen++;
			f->token_failures = 0;
			f->host->metric_add(f->m_token_refresh, "ok", 1);
			char until[32], detail[256];
			fmt_time(f->token_expires_ms, until, sizeof until);
			snprintf(detail, sizeof detail, "project %s: access token valid until %s", f->project_id,
			         until);
			f->host->health_set(f->ctx, false, detail);
			f->host->log(f->ctx, BW_LOG_INFO, "access token obtained for %s, valid for %lld s",
			             f->sa.client_email, (long long)expires_in);
			kick(f);
			return;
		}
		snprintf(why, sizeof why, "oauth: %s", err.message);
		retryable = false;
	} else {
		char desc[FCM_REASON_MAX];
		fcm_token_error(res->status, res->body, res->body_len, desc, sizeof desc);
		snprintf(why, sizeof why, "oauth: token endpoint refused the assertion: %s", desc);
		retryable = res->status == 429 || res->status >= 500;
	}
failed:
	f->host->metric_add(f->m_token_refresh, "failed", 1);
	if (retryable && (int64_t)f->token_failures < f->retry_max && !f->stopping) {
		uint64_t delay =
		    fcm_backoff_ms(f->token_failures, (uint64_t)f->backoff_ms, (uint64_t)f->backoff_max_ms, rnd32());
		f->token_failures++;
		f->host->log(f->ctx, BW_LOG_WARN, "%s; trying again in %llu ms", why, (unsigned long long)delay);
		f->token_timer = f->host->timer_add(f->ctx, delay, 0, token_timer_cb, f);
		if (f->token_timer)
			return;
	}
	f->token_failures = 0;
	f->host->log(f->ctx, BW_LOG_ERROR, "%s (service account %s, token endpoint %s)", why, f->sa.client_email,
	             f->token_uri);
	char detail[512];
	/* a /healthz detail is short by design: long parts are cut */
	snprintf(detail, sizeof detail, "project %.120s: no access token: %.360s", f->project_id, why + 7);
	f->host->health_set(f->ctx, true, detail);
	fail_queued(f, why);
	publish_gauges(f);
}

/* Starts the one token request (no-op when one is running or waiting for its backoff). */
static void token_fetch(struct fcm *f)
{
	if (f->token_call || f->token_timer || f->stopping)
		return;
	bw_error err;
	bw_error_clear(&err);
	char *jwt = fcm_jwt_build(&f->sa, f->token_uri, f->host->clock_now_ms() / 1000, &err);
	char *body = jwt ? fcm_token_request_body(jwt) : NULL;
	if (jwt) {
		OPENSSL_cleanse(jwt, strlen(jwt));
		free(jwt);
	}
	if (!body) {
		char why[600];
		snprintf(why, sizeof why, "oauth: %s", err.code ? err.message : "out of memory");
		f->host->log(f->ctx, BW_LOG_ERROR, "%s", why);
		fail_queued(f, why);
		publish_gauges(f);
		return;
	}
	static const char *const headers[] = {"Content-Type: application/x-www-form-urlencoded",
	                                      "Accept: application/json", NULL};
	struct bw_http_request req = {
	    .size = sizeof req,
	    .method = "POST",
	    .url = f->token_uri,
	    .headers = headers,
	    .body = body,
	    .body_len = strlen(body),
	    .timeout_ms = (uint32_t)f->timeout_ms,
	    .max_retries = 0,
	    .ca_file = f->ca_file,
	    .http2 = true,
	    .max_response_bytes = 65536,
	};
	f->token_call = f->host->http_send(f->ctx, &req, token_done, f, &err);
	OPENSSL_cleanse(body, strlen(body));
	free(body);
	if (!f->token_call) {
		char why[600];
		snprintf(why, sizeof why, "oauth: cannot call the token endpoint: %s", err.message);
		f->host->log(f->ctx, BW_LOG_ERROR, "%s", why);
		f->host->health_set(f->ctx, true, why);
		fail_queued(f, why);
		publish_gauges(f);
	}
}

/* ---- sending */

static void send_done(const struct bw_http_response *res, void *arg)
{
	struct fcm_msg *m = arg;
	struct fcm *f = m->f;
	m->call = NULL;
	f->ninflight--;
	kick(f); /* a slot is free */
	char reason[FCM_REASON_MAX + 32];
	if (res->error != BW_OK) {
		m->last_status = 0;
		snprintf(reason, sizeof reason, "transport: %s (%s)", res->error_message, bw_status_name(res->error));
		if (transport_retryable(res)) {
			retry_or_fail(m, reason, NULL);
		} else {
			f->host->log(f->ctx, BW_LOG_WARN, "%s failed: %s", m->label, reason);
			finish(m, BW_PUSH_FAILED, reason, NULL);
		}
		return;
	}
	m->last_status = res->status;
	char name[256];
	switch (fcm_classify(res->status, res->body, res->body_len, reason, sizeof reason)) {
	case FCM_ACT_SENT:
		if (!fcm_message_name(res->body, res->body_len, name, sizeof name))
			name[0] = '\0';
		f->host->log(f->ctx, BW_LOG_DEBUG, "%s accepted (%s)", m->label, name[0] ? name : "no name");
		finish(m, BW_PUSH_SENT, NULL, name[0] ? name : NULL);
		return;
	case FCM_ACT_TOKEN_INVALID:
		f->host->log(f->ctx, BW_LOG_INFO, "%s: FCM says the registration token is gone (%s)", m->label, reason);
		finish(m, BW_PUSH_TOKEN_INVALID, reason, NULL);
		return;
	case FCM_ACT_FAIL:
		f->host->log(f->ctx, BW_LOG_WARN, "%s refused by FCM: HTTP %ld %s", m->label, res->status, reason);
		finish(m, BW_PUSH_FAILED, reason, NULL);
		return;
	case FCM_ACT_RETRY:
		retry_or_fail(m, reason, res);
		return;
	case FCM_ACT_REAUTH:
		if (m->reauthed || f->stopping) {
			f->host->log(f->ctx, BW_LOG_WARN, "%s: FCM refused a fresh access token (HTTP %ld %s)",
			             m->label, res->status, reason);
			finish(m, BW_PUSH_FAILED, "UNAUTHENTICATED", NULL);
			return;
		}
		m->reauthed = true;
		if (m->token_gen == f->token_gen && f->auth_header) {
			f->host->log(f->ctx, BW_LOG_INFO, "FCM refused the access token (HTTP 401); getting a new one");
			token_clear(f);
		}
		q_push(f, m, true);
		publish_gauges(f);
		return;
	}
}

static void dispatch(struct fcm *f, struct fcm_msg *m)
{
	const char *headers[] = {f->auth_header, "Content-Type: application/json; charset=UTF-8", NULL};
	struct bw_http_request req = {
	    .size = sizeof req,
	    .method = "POST",
	    .url = f->send_url,
	    .headers = headers,
	    .body = m->body,
	    .body_len = strlen(m->body),
	    .timeout_ms = (uint32_t)f->timeout_ms,
	    .max_retries = 0,
	    .ca_file = f->ca_file,
	    .http2 = true,
	    .max_response_bytes = 65536,
	};
	bw_error err;
	bw_error_clear(&err);
	m->state = M_INFLIGHT;
	m->token_gen = f->token_gen;
	m->attempts++;
	f->ninflight++;
	m->call = f->host->http_send(f->ctx, &req, send_done, m, &err);
	if (!m->call) {
		f->ninflight--;
		char reason[600];
		snprintf(reason, sizeof reason, "transport: %s", err.message);
		if (err.code == BW_E_LIMIT || err.code == BW_E_NOMEM)
			retry_or_fail(m, reason, NULL);
		else
			finish(m, BW_PUSH_FAILED, reason, NULL);
	}
}

static void pump(struct fcm *f)
{
	while (!f->stopping && f->qhead && (int64_t)f->ninflight < f->inflight_max) {
		if (!token_usable(f)) {
			token_fetch(f);
			break;
		}
		dispatch(f, q_pop(f));
	}
	publish_gauges(f);
}

static int fcm_send(void *arg, const struct bw_push_message *msg, bw_push_done_fn done, void *done_arg, bw_error *err)
{
	struct fcm *f = arg;
	if (!f->started || f->stopping)
		return bw_error_set(err, BW_E_STATE, "push_fcm is %s", f->stopping ? "stopping" : "not started");
	if (!msg || msg->size < offsetof(struct bw_push_message, ttl_s) + sizeof msg->ttl_s || !done)
		return bw_error_set(err, BW_E_INVALID, "push message or callback missing");
	if (!fcm_token_valid(msg->token))
		return bw_error_set(err, BW_E_INVALID,
		                    "token: not an FCM registration token (1 to %d characters of A-Z a-z 0-9 _ : . -)",
		                    FCM_TOKEN_MAX_LEN);
	if ((int64_t)f->nqueued >= f->queue_max)
		return bw_error_set(err, BW_E_LIMIT, "push_fcm queue is full (%zu messages waiting, queue_max)",
		                    f->nqueued);
	struct fcm_msg *m = calloc(1, sizeof *m);
	if (!m || !(m->body = fcm_message_json(msg, (uint32_t)(f->ttl_ms / 1000)))) {
		if (m)
			msg_free(m);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	m->f = f;
	f->seq++;
	int n = snprintf(m->label, sizeof m->label, "push #%llu%s", (unsigned long long)f->seq,
	                 msg->device_id && *msg->device_id ? " to device " : "");
	/* The device id is caller input: printable ASCII only, so that it cannot forge log lines. */
	for (const char *p = msg->device_id; p && *p && (size_t)n + 1 < sizeof m->label && n < 150; p++)
		m->label[n++] = (*p > 0x20 && *p < 0x7f) ? *p : '?';
	m->label[n] = '\0';
	m->done = done;
	m->done_arg = done_arg;
	m->start_ms = f->host->clock_now_ms();
	m->next = f->all;
	if (f->all)
		f->all->prev = m;
	f->all = m;
	f->npending++;
	q_push(f, m, false);
	publish_gauges(f);
	kick(f);
	return BW_OK;
}

static const struct bw_push_ops fcm_ops = {
    .size = sizeof(struct bw_push_ops),
    .provider = "fcm",
    .send = fcm_send,
};

/* ---- admin route: POST /api/v1/plugins/push_fcm/send {"token", "reason"?, "device_id"?, "command_id"?,
 * "high_priority"?, "ttl"?} -> the final outcome. */

struct route_call {
	struct fcm *f;
	bw_http_req *req;
};

static void route_done(const struct bw_push_result *res, void *arg)
{
	struct route_call *rc = arg;
	static const char *const names[] = {"sent", "token_invalid", "failed"};
	json_t *out =
	    json_pack("{s:s, s:s?, s:I, s:I, s:s?}", "outcome",
	              res->outcome >= 0 && res->outcome <= 2 ? names[res->outcome] : "failed", "reason", res->reason,
	              "status", (json_int_t)res->status, "attempts", (json_int_t)res->attempts, "id", res->id);
	if (out && !json_object_get(out, "reason"))
		json_object_set_new(out, "reason", json_null());
	if (out && !json_object_get(out, "id"))
		json_object_set_new(out, "id", json_null());
	rc->f->host->respond_json(rc->req, 200, out);
	free(rc);
}

static void route_send(bw_http_req *req, void *arg)
{
	struct fcm *f = arg;
	json_t *body = NULL;
	bw_error err;
	bw_error_clear(&err);
	if (f->host->req_json(req, &body, &err) != BW_OK) {
		f->host->respond_error(req, 400, "bad_request", err.message);
		return;
	}
	json_t *tok = json_object_get(body, "token"), *reason = json_object_get(body, "reason");
	json_t *dev = json_object_get(body, "device_id"), *cmd = json_object_get(body, "command_id");
	json_t *hp = json_object_get(body, "high_priority"), *ttl = json_object_get(body, "ttl");
	const char *bad =
	    !json_is_string(tok)                ? "token must be a string"
	    : reason && !json_is_string(reason) ? "reason must be a string"
	    : dev && !json_is_string(dev)       ? "device_id must be a string"
	    : cmd && !json_is_string(cmd)       ? "command_id must be a string"
	    : hp && !json_is_boolean(hp)        ? "high_priority must be true or false"
	    : ttl && (!json_is_integer(ttl) || json_integer_value(ttl) < 0 || json_integer_value(ttl) > 28 * 86400)
	        ? "ttl must be seconds from 0 to 2419200"
	        : NULL;
	if (!bad && ((reason && json_string_length(reason) > 64) || (dev && json_string_length(dev) > 128) ||
	             (cmd && json_string_length(cmd) > 128)))
		bad = "reason (64), device_id and command_id (128) are too long";
	if (bad) {
		json_decref(body);
		f->host->respond_error(req, 400, "bad_request", bad);
		return;
	}
	struct bw_push_message msg = {
	    .size = sizeof msg,
	    .device_id = dev ? json_string_value(dev) : NULL,
	    .token = json_string_value(tok),
	    .reason = reason ? json_string_value(reason) : "test",
	    .command_id = cmd ? json_string_value(cmd) : NULL,
	    .high_priority = hp ? json_is_true(hp) : true,
	    .ttl_s = ttl ? (uint32_t)json_integer_value(ttl) : 0,
	};
	struct route_call *call = malloc(sizeof *call);
	int rc = call ? BW_OK : bw_error_set(&err, BW_E_NOMEM, "out of memory");
	if (call) {
		call->f = f;
		call->req = req;
		rc = fcm_send(f, &msg, route_done, call, &err);
		if (rc != BW_OK)
			free(call);
	}
	json_decref(body);
	if (rc != BW_OK)
		f->host->respond_error(req,
		                       rc == BW_E_INVALID ? 400
		                       : rc == BW_E_LIMIT ? 429
		                                          : 503,
		                       bw_status_name(rc), err.message);
}

/* ---- lifecycle */

static void fcm_free(struct fcm *f)
{
	/* Only reached with nothing in flight (after stop) or before start: no callbacks are owed. */
	while (f->all) {
		struct fcm_msg *m = f->all;
		f->all = m->next;
		msg_free(m);
	}
	f->qhead = f->qtail = NULL;
	token_clear(f);
	fcm_sa_free(&f->sa);
	free(f->project_id);
	free(f->token_uri);
	free(f->send_url);
	f->project_id = f->token_uri = f->send_url = NULL;
}

static bool url_ok(const char *u)
{
	return u && strncmp(u, "https://", 8) == 0 && u[8] && !strpbrk(u, " \t\r\n\"'<>\\");
}

static bool project_ok(const char *p)
{
	size_t n = 0;
	for (; p[n]; n++) {
		char c = p[n];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '.' || c == ':' || c == '_'))
			return false;
	}
	return n > 0 && n <= 100;
}

static int fcm_init(bw_plugin_ctx *ctx, const struct bw_host_api *host, void *instance, bw_error *err)
{
	struct fcm *f = instance;
	f->host = host;
	f->ctx = ctx;
	int rc = fcm_sa_load(f->sa_file, SETTING_SA, &f->sa, err);
	if (rc != BW_OK)
		return rc;
	struct stat st;
	if (stat(f->sa_file, &st) == 0 && (st.st_mode & 0077))
		host->log(ctx, BW_LOG_WARN,
		          "%s %s is readable by group or others (mode %04o): it holds a private key, "
		          "make it 0600",
		          SETTING_SA, f->sa_file, (unsigned)(st.st_mode & 07777));
	if (f->ca_file && access(f->ca_file, R_OK) != 0) {
		rc = bw_error_set(err, BW_E_CONFIG, "ca_file %s: cannot read: %s", f->ca_file, strerror(errno));
		goto fail;
	}
	const char *project = f->project_setting && *f->project_setting ? f->project_setting : f->sa.project_id;
	if (!project) {
		rc = bw_error_set(err, BW_E_CONFIG, "project_id: not set, and %s %s has no \"project_id\"", SETTING_SA,
		                  f->sa_file);
		goto fail;
	}
	if (!project_ok(project)) {
		rc = bw_error_set(err, BW_E_CONFIG, "project_id: \"%s\" is not a Firebase project id", project);
		goto fail;
	}
	const char *tu = f->token_uri_setting && *f->token_uri_setting ? f->token_uri_setting : f->sa.token_uri;
	if (!url_ok(tu)) {
		rc = bw_error_set(err, BW_E_CONFIG, "token_uri: \"%s\" must be an https:// URL%s", tu,
		                  f->token_uri_setting ? "" : " (from the service-account file)");
		goto fail;
	}
	if (!url_ok(f->endpoint)) {
		rc = bw_error_set(err, BW_E_CONFIG, "endpoint: \"%s\" must be an https:// URL", f->endpoint);
		goto fail;
	}
	if (f->backoff_max_ms < f->backoff_ms) {
		rc = bw_error_set(err, BW_E_CONFIG, "backoff_max must not be shorter than backoff");
		goto fail;
	}
	size_t el = strlen(f->endpoint);
	while (el > 8 && f->endpoint[el - 1] == '/')
		el--;
	size_t n = el + strlen(project) + sizeof "/v1/projects//messages:send";
	f->project_id = strdup(project);
	f->token_uri = strdup(tu);
	f->send_url = malloc(n);
	if (!f->project_id || !f->token_uri || !f->send_url) {
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto fail;
	}
	snprintf(f->send_url, n, "%.*s/v1/projects/%s/messages:send", (int)el, f->endpoint, project);

	struct {
		bw_metric **m;
		int kind;
		const char *name, *help, *label;
	} metrics[] = {
	    {&f->m_sent, BW_METRIC_COUNTER, "sent_total", "Messages accepted by FCM.", NULL},
	    {&f->m_failed, BW_METRIC_COUNTER, "failed_total",
	     "Messages not delivered, by reason (UNREGISTERED = token invalid).", "reason"},
	    {&f->m_retries, BW_METRIC_COUNTER, "retries_total", "Retries of messages (backoff or Retry-After).", NULL},
	    {&f->m_latency, BW_METRIC_HISTOGRAM, "latency_seconds",
	     "From send() to FCM's acceptance, retries included.", NULL},
	    {&f->m_queue, BW_METRIC_GAUGE, "queue", "Messages waiting to be sent or retried.", NULL},
	    {&f->m_inflight, BW_METRIC_GAUGE, "in_flight", "Requests to FCM in flight.", NULL},
	    {&f->m_token_refresh, BW_METRIC_COUNTER, "token_refreshes_total", "Access token requests, by result.",
	     "result"},
	};
	for (size_t i = 0; i < sizeof metrics / sizeof metrics[0]; i++) {
		*metrics[i].m = host->metric_new(ctx, metrics[i].kind, metrics[i].name, metrics[i].help,
		                                 metrics[i].label, NULL, 0, err);
		if (!*metrics[i].m) {
			rc = err && err->code ? err->code : BW_E_INTERNAL;
			goto fail;
		}
	}
	if ((rc = host->capability_register(ctx, "push", &fcm_ops, sizeof fcm_ops, f, err)) != BW_OK)
		goto fail;
	const struct bw_route route = {sizeof(struct bw_route), "admin", "POST", "send", BW_ROLE_ADMIN, route_send, f};
	if ((rc = host->route_add(ctx, &route, err)) != BW_OK)
		goto fail;
	char detail[256];
	snprintf(detail, sizeof detail, "project %s: no access token yet", f->project_id);
	host->health_set(ctx, false, detail);
	host->log(ctx, BW_LOG_INFO, "project %s, endpoint %s, service account %s", f->project_id, f->send_url,
	          f->sa.client_email);
	return BW_OK;
fail:
	fcm_free(f);
	return rc;
}

static int fcm_start(bw_plugin_ctx *ctx, void *instance, bw_error *err)
{
	(void)ctx, (void)err;
	struct fcm *f = instance;
	f->started = true;
	return BW_OK;
}

/* Fails what is still queued or in flight ("stopping"): a wake-up that cannot be sent now is of no use later,
 * the device checks in by itself. */
static int fcm_stop(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	struct fcm *f = instance;
	if (f->stopping)
		return BW_OK;
	f->stopping = true;
	if (f->kick_timer)
		f->host->timer_cancel(f->kick_timer);
	if (f->token_timer)
		f->host->timer_cancel(f->token_timer);
	if (f->token_call)
		f->host->http_cancel(f->token_call);
	f->kick_timer = f->token_timer = NULL;
	f->token_call = NULL;
	while (f->qhead)
		finish(q_pop(f), BW_PUSH_FAILED, "stopping", NULL);
	while (f->all) {
		struct fcm_msg *m = f->all;
		if (m->call) {
			f->host->http_cancel(m->call);
			m->call = NULL;
			f->ninflight--;
		}
		if (m->timer) {
			f->host->timer_cancel(m->timer);
			m->timer = NULL;
		}
		finish(m, BW_PUSH_FAILED, "stopping", NULL);
	}
	publish_gauges(f);
	return BW_OK;
}

static void fcm_fini(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	fcm_free(instance);
}

BW_PLUGIN_DEFINE(push_fcm) = {
    BW_PLUGIN_HEADER,
    .name = "push_fcm",
    .version = "1.0.0",
    .description = "Firebase Cloud Messaging (HTTP v1) wake-ups: the push capability for provider \"fcm\"",
    .instance_size = sizeof(struct fcm),
    .fields = fcm_fields,
    .init = fcm_init,
    .start = fcm_start,
    .stop = fcm_stop,
    .fini = fcm_fini,
};
