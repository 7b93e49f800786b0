/* host/agent/push_wake.c: wakes devices through the "push" capability. Every "command.queued"
 * event (policy changes queue sync_policy, so they arrive here too) sends one wake-up through
 * the provider named by the device's push token, at most one in flight per device (a command
 * queued meanwhile sends one more afterwards, so no wake-up is lost and a burst of commands costs
 * two pushes, not one per command). A token the provider calls invalid is remembered (by its
 * SHA-256, in the host's own record namespace) and never used again until the device reports
 * another one; "push.token_invalid" tells subscribers. Admin routes: the push test and the list
 * of flagged devices. */
#include "push_wake.h"

#include "crypto.h"
#include "loader.h"
#include "log.h"
#include "router.h"
#include "store_devices.h"

#include <bulwark/push.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The host's own namespace in the record store: ':' never appears in a plugin name. */
#define NS          "bulwarkd:push"
#define COLL_BAD    "invalid_tokens"
#define ST_INFLIGHT 1
#define ST_AGAIN    2

struct bw_push_wake {
	struct bw_host *h;
	json_t *state; /* device id -> ST_* bits */
	struct job *jobs;
	bw_metric *wakeups;
};

/* One send in flight, owned by the waker until the provider answers. */
struct job {
	bw_push_wake *w;
	struct bw_http_req *req; /* push test: answered when done */
	char device_id[37];
	char provider[32];
	char token_hash[65];
	struct job *next, **pprev;
};

static const struct bw_push_ops *provider_ops(struct bw_host *h, const char *provider, void **arg)
{
	size_t n = bw_plugins_capability_count(h->plugins, "push");
	for (size_t i = 0; i < n; i++) {
		const struct bw_capability *c = bw_plugins_capability(h->plugins, "push", i);
		const struct bw_push_ops *ops = c->ops;
		if (c->ops_size >= sizeof *ops && ops->provider && ops->send && strcmp(ops->provider, provider) == 0) {
			*arg = c->ops_arg;
			return ops;
		}
	}
	return NULL;
}

static const char *outcome_name(int o)
{
	return o == BW_PUSH_SENT ? "sent" : o == BW_PUSH_TOKEN_INVALID ? "token_invalid" : "failed";
}

/* The device's push provider and token, or BW_E_NOTFOUND with a reason. */
static int device_push(struct bw_host *h, const char *device_id, char provider[32], char **token, bw_error *err)
{
	json_t *dev = NULL;
	int rc = bw_store_device_json(h->store, device_id, &dev, err);
	if (rc != BW_OK)
		return rc;
	json_t *push = json_object_get(dev, "push");
	const char *p = json_string_value(json_object_get(push, "provider"));
	const char *t = json_string_value(json_object_get(push, "token"));
	const char *status = json_string_value(json_object_get(dev, "status"));
	if (status && strcmp(status, "active") != 0 && strcmp(status, "out_of_sync") != 0)
		rc = bw_error_set(err, BW_E_STATE, "device %s is %s", device_id, status);
	else if (!p || !t || !*t)
		rc = bw_error_set(err, BW_E_NOTFOUND, "device %s has not registered a push token", device_id);
	else {
		snprintf(provider, 32, "%s", p);
		*token = strdup(t);
		if (!*token)
			rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	json_decref(dev);
	return rc;
}

/* The recorded invalid token of a device, if it is still the device's current token. */
static bool token_flagged(struct bw_host *h, const char *device_id, const char *token_hash)
{
	char *text = NULL;
	if (bw_store_record_get(h->store, NS, COLL_BAD, device_id, &text, NULL) != BW_OK)
		return false;
	json_t *v = json_loads(text, 0, NULL);
	free(text);
	const char *hash = json_string_value(json_object_get(v, "token_sha256"));
	bool same = hash && strcmp(hash, token_hash) == 0;
	json_decref(v);
	return same;
}

static void flag_token(struct bw_host *h, const struct job *j, const char *reason)
{
	int64_t now = (int64_t)time(NULL);
	json_t *v = json_pack("{s:s, s:s, s:s, s:I}", "token_sha256", j->token_hash, "provider", j->provider, "reason",
	                      reason ? reason : "", "at", (json_int_t)now);
	char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
	bw_error err = {0};
	if (!text || bw_store_record_put(h->store, NS, COLL_BAD, j->device_id, text, now, &err) != BW_OK)
		bw_log_error("push", "cannot record the invalid push token of device %s: %s", j->device_id,
		             text ? err.message : "out of memory");
	free(text);
	json_decref(v);
	bw_log_warn("push", "device %s: the %s push token is invalid (%s); no more pushes until it registers another",
	            j->device_id, j->provider, reason ? reason : "no reason given");
	bw_events_emit(h->events, "push.token_invalid",
	               json_pack("{s:s, s:s, s:s}", "device_id", j->device_id, "provider", j->provider, "reason",
	                         reason ? reason : ""),
	               NULL);
}

static void job_unlink(struct job *j)
{
	if (j->pprev) {
		*j->pprev = j->next;
		if (j->next)
			j->next->pprev = j->pprev;
		j->pprev = NULL;
	}
}

static int start_push(bw_push_wake *w, struct bw_http_req *req, const char *device_id, const char *reason,
                      const char *command_id, bool high, bw_error *err);

static void push_done(const struct bw_push_result *res, void *arg)
{
	struct job *j = arg;
	bw_push_wake *w = j->w;
	struct bw_host *h = w->h;
	job_unlink(j);
	bw_metric_add(w->wakeups, outcome_name(res->outcome), 1);
	if (res->outcome == BW_PUSH_TOKEN_INVALID)
		flag_token(h, j, res->reason);
	else if (res->outcome == BW_PUSH_FAILED)
		bw_log_warn("push", "device %s: %s push failed after %u attempt(s): %s", j->device_id, j->provider,
		            res->attempts, res->reason ? res->reason : "no reason given");
	if (j->req) {
		bw_req_reply_json(j->req, 200,
		                  json_pack("{s:s, s:s, s:s?, s:I, s:I, s:s?}", "device_id", j->device_id, "outcome",
		                            outcome_name(res->outcome), "reason", res->reason, "status",
		                            (json_int_t)res->status, "attempts", (json_int_t)res->attempts, "id",
		                            res->id));
	} else {
		json_t *st = json_object_get(w->state, j->device_id);
		bool again = st && (json_integer_value(st) & ST_AGAIN) && res->outcome != BW_PUSH_TOKEN_INVALID;
		json_object_del(w->state, j->device_id);
		if (again && start_push(w, NULL, j->device_id, "command", NULL, true, NULL) != BW_OK)
			json_object_del(w->state, j->device_id);
	}
	free(j);
}

static int start_push(bw_push_wake *w, struct bw_http_req *req, const char *device_id, const char *reason,
                      const char *command_id, bool high, bw_error *err)
{
	struct bw_host *h = w->h;
	bw_error local = {0};
	if (!err)
		err = &local;
	char provider[32];
	char *token = NULL;
	int rc = device_push(h, device_id, provider, &token, err);
	if (rc != BW_OK)
		return rc;
	struct job *j = calloc(1, sizeof *j);
	if (!j) {
		free(token);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	j->w = w;
	j->req = req;
	snprintf(j->device_id, sizeof j->device_id, "%s", device_id);
	snprintf(j->provider, sizeof j->provider, "%s", provider);
	bw_token_hash(token, j->token_hash);
	void *arg = NULL;
	const struct bw_push_ops *ops = provider_ops(h, provider, &arg);
	if (!ops)
		rc = bw_error_set(err, BW_E_NOTFOUND, "no push plugin for provider '%s' is configured", provider);
	else if (token_flagged(h, device_id, j->token_hash))
		rc = bw_error_set(err, BW_E_STATE,
		                  "the device's %s push token was reported invalid; waiting for a new one", provider);
	if (rc == BW_OK) {
		struct bw_push_message m = {.size = sizeof m,
		                            .device_id = device_id,
		                            .token = token,
		                            .reason = reason,
		                            .command_id = command_id,
		                            .high_priority = high};
		if (!req)
			json_object_set_new(w->state, device_id, json_integer(ST_INFLIGHT));
		/* Linked before send: a provider may answer synchronously (a refusal it reports through done). */
		j->next = w->jobs;
		if (w->jobs)
			w->jobs->pprev = &j->next;
		w->jobs = j;
		j->pprev = &w->jobs;
		rc = ops->send(arg, &m, push_done, j, err);
		if (rc != BW_OK) {
			job_unlink(j);
			if (!req)
				json_object_del(w->state, device_id);
		}
	}
	OPENSSL_cleanse(token, strlen(token));
	free(token);
	if (rc != BW_OK)
		free(j);
	return rc;
}

static void on_command_queued(const char *topic, json_t *payload, void *arg)
{
	(void)topic;
	bw_push_wake *w = arg;
	const char *id = json_string_value(json_object_get(payload, "device_id"));
	const char *cmd = json_string_value(json_object_get(payload, "command_id"));
	const char *type = json_string_value(json_object_get(payload, "type"));
	if (!id)
		return;
	json_t *st = json_object_get(w->state, id);
	if (st) { /* one in flight: one more after it */
		json_object_set_new(w->state, id, json_integer(json_integer_value(st) | ST_AGAIN));
		return;
	}
	bw_error err = {0};
	const char *reason = type && strcmp(type, "sync_policy") == 0 ? "policy" : "command";
	if (start_push(w, NULL, id, reason, cmd, true, &err) != BW_OK && err.code != BW_E_NOTFOUND)
		bw_log_debug("push", "device %s not woken: %s", id, err.message);
}

bw_push_wake *bw_push_wake_new(struct bw_host *h, bw_error *err)
{
	bw_push_wake *w = calloc(1, sizeof *w);
	if (!w || !(w->state = json_object())) {
		free(w);
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	w->h = h;
	w->wakeups =
	    bw_metric_new(h->metrics, BW_METRIC_COUNTER, "bulwark_push_wakeups_total",
	                  "Device wake-ups by final outcome (sent, token_invalid, failed).", "outcome", NULL, 0, NULL);
	if (bw_events_subscribe(h->events, w, "command.queued", on_command_queued, w, err) != BW_OK) {
		json_decref(w->state);
		free(w);
		return NULL;
	}
	return w;
}

void bw_push_wake_free(bw_push_wake *w)
{
	if (!w)
		return;
	bw_events_unsubscribe_owner(w->h->events, w);
	/* The providers are gone (fini ran): whatever they did not finish never will. */
	for (struct job *j = w->jobs, *next; j; j = next) {
		next = j->next;
		if (j->req)
			bw_req_reply_error(j->req, 503, "unavailable", "the server is stopping");
		free(j);
	}
	json_decref(w->state);
	free(w);
}

/* ---- admin routes */

/* POST /api/v1/devices/{id}/push-test: one wake-up now; answers the provider's final outcome. */
static void post_push_test(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_host *h = req->host;
	const char *id = req->params[0];
	if (!h->push) {
		bw_req_reply_error(req, 503, "unavailable", "push is not running yet");
		return;
	}
	bw_error err = {0};
	if (!bw_uuid_valid(id)) {
		bw_req_reply_error(req, 400, "bad_request", "device id must be a UUID");
		return;
	}
	bw_req_audit(req, req->principal, "push.test", id, "requested", NULL);
	if (start_push(h->push, req, id, "test", NULL, true, &err) != BW_OK) {
		if (err.code == BW_E_NOTFOUND || err.code == BW_E_STATE)
			bw_req_reply_error(req, err.code == BW_E_NOTFOUND ? 404 : 409,
			                   err.code == BW_E_NOTFOUND ? "not_found" : "conflict", err.message);
		else
			bw_req_reply_bw_error(req, &err);
	}
}

/* GET /api/v1/push/invalid-tokens: devices whose push token a provider reported invalid. */
static void get_invalid_tokens(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_host *h = req->host;
	const char *after = bw_req_query(req, "after");
	json_t *list = NULL;
	bw_error err = {0};
	if (bw_store_record_list(h->store, NS, COLL_BAD, after && *after ? after : NULL, BW_STORE_LIST_MAX, &list,
	                         &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	json_t *out = json_array();
	size_t i;
	json_t *item;
	json_array_foreach(list, i, item)
	{
		json_t *v = json_object_get(item, "value");
		const char *dev = json_string_value(json_object_get(item, "key"));
		/* Only devices still holding that token: one that registered a new token is fine again. */
		char provider[32];
		char *token = NULL;
		if (!dev || device_push(h, dev, provider, &token, NULL) != BW_OK)
			continue;
		char hash[65];
		bw_token_hash(token, hash);
		free(token);
		const char *bad = json_string_value(json_object_get(v, "token_sha256"));
		if (!bad || strcmp(bad, hash) != 0)
			continue;
		json_array_append_new(out,
		                      json_pack("{s:s, s:O, s:O, s:o}", "device_id", dev, "provider",
		                                json_object_get(v, "provider"), "reason", json_object_get(v, "reason"),
		                                "at", bw_json_time(json_integer_value(json_object_get(v, "at")))));
	}
	json_decref(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "devices", out));
}

int bw_push_wake_routes(struct bw_host *h, bw_error *err)
{
	static const struct bw_route_def routes[] = {
	    {"POST", "/api/v1/devices/{id}/push-test", BW_ROLE_ADMIN, post_push_test},
	    {"GET", "/api/v1/push/invalid-tokens", BW_ROLE_READONLY, get_invalid_tokens},
	};
	return bw_router_add_all(h->admin_router, routes, sizeof routes / sizeof routes[0], err);
}
