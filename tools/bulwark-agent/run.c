/* run.c: `bulwark-agent run`, `unenroll`, `status` and `simulate-schedule`: one enrolled device's
 * life. A cycle posts results and event batches left over from an earlier cycle, checks in (full
 * inventory the first time or when asked, deltas afterwards), executes the commands it receives
 * (acknowledged, then completed), follows policy changes, renews its certificate when told, and
 * uploads events. Between cycles the device runs the applied policy's scheduled malware scans on
 * its (simulated) clock and, with a push simulator, wakes up early when a push arrives.
 * Everything the device must not forget (results, batch ids, what the server already has) is in
 * device.json, written before the request that depends on it. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define MAX_APPS_CHANGES  64
#define MAX_EVENTS_FILE   (16u * 1024 * 1024)
#define EVENTS_PER_BATCH  500   /* the server's limit per batch */
#define DONE_REMEMBERED   100   /* final results kept to answer a re-delivered command */
#define MAX_SCANS_AT_ONCE 10000 /* scheduled scans emitted by one clock step or simulate-schedule */
#define WAIT_SLICE_S      0.2   /* how often a waiting device looks at its clock */

struct run_opts {
	const char *dir, *ca, *server, *events_file, *os_version;
	const char *install[MAX_APPS_CHANGES];
	size_t ninstall;
	const char *remove[MAX_APPS_CHANGES];
	size_t nremove;
	int usb, devopts, rooted; /* -1: unchanged */
	bool once, drop_ack, repeat_batch, renew;
	double interval; /* < 0: the server's */
	long retries;    /* -2: the default */
	/* push wake-ups */
	const char *push_sim, *push_sim_ca, *push_provider, *push_token;
	/* the simulated clock: clock_start + real seconds since the start * clock_speed */
	bool has_clock_start;
	int64_t clock_start;
	double clock_speed;
};

struct runner {
	const struct run_opts *o;
	struct bwa_state st;
	struct bwa_http http;
	char *server, *cert_path, *key_path, *ca_path;
	bool stopped; /* wiped or unenrolled during this run */
	bool refused; /* a request was refused (exit 1 with --once) */
	int fatal;    /* exit status that ends the run (401, unreachable), 0 = none */
	struct bwa_wake wake;
	struct bwa_schedule sched; /* of the applied policy */
	int64_t clock_start;       /* simulated Unix seconds at mono_start */
	double mono_start;
	int64_t sched_done; /* scheduled scans up to this simulated time were emitted */
};

static json_t *doc(struct runner *r)
{
	return r->st.doc;
}

static const char *str_or(const char *s, const char *dflt)
{
	return s ? s : dflt;
}

static const char *doc_str(struct runner *r, const char *key)
{
	return json_string_value(json_object_get(r->st.doc, key));
}

static int save(struct runner *r)
{
	bw_error err = {0};

	if (bwa_state_save(&r->st, &err) != BW_OK) {
		bwa_warn("%s", err.message);
		r->fatal = BWA_EXIT_FAIL;
		return -1;
	}
	return 0;
}

static void format_time(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(buf, size, "%Y-%m-%d %H:%M UTC", &tm))
		snprintf(buf, size, "%lld", (long long)t);
}

/* Applies the outcome of a request to the run: 0 to go on (done, or refused and logged), -1 to
 * end the cycle (401, unreachable, interrupted). */
static int outcome(struct runner *r, enum bwa_outcome o, const bw_error *err)
{
	switch (o) {
	case BWA_DONE:
		return 0;
	case BWA_REFUSED:
		bwa_warn("%s", err->message);
		r->refused = true;
		return 0;
	case BWA_NOAUTH:
		bwa_fail(0, "%s", err->message);
		r->fatal = BWA_EXIT_NOAUTH;
		return -1;
	case BWA_CANCELLED:
		return -1;
	case BWA_UNREACHABLE:
	case BWA_FAILING:
	default:
		bwa_fail(0, "%s", err->message);
		if (!r->fatal)
			r->fatal = BWA_EXIT_UNREACHABLE;
		return -1;
	}
}

/* Command ids go into a URL path: only plain characters. */
static bool id_ok(const char *id)
{
	size_t n = id ? strlen(id) : 0;

	if (n == 0 || n > 128)
		return false;
	return strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.") == n;
}

static json_t *find_by_id(json_t *arr, const char *key, const char *id)
{
	size_t i;
	json_t *v;

	json_array_foreach(arr, i, v)
	{
		const char *vid = json_string_value(json_object_get(v, key));

		if (vid && strcmp(vid, id) == 0)
			return v;
	}
	return NULL;
}

static bool is_final(const char *status)
{
	return status && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0);
}

/* ---- results */

static int post_results(struct runner *r)
{
	json_t *pending = json_object_get(doc(r), "pending_results");

	while (json_array_size(pending) > 0) {
		json_t *item = json_incref(json_array_get(pending, 0));
		const char *id = json_string_value(json_object_get(item, "id"));
		const char *type = json_string_value(json_object_get(item, "type"));
		const char *status = json_string_value(json_object_get(item, "status"));
		json_t *body = json_pack("{s:s}", "status", status ? status : "failed");
		struct bwa_response resp = {0};
		bw_error err = {0};
		enum bwa_outcome o;
		char *path, *what;

		if (json_object_get(item, "result"))
			json_object_set(body, "result", json_object_get(item, "result"));
		if (json_object_get(item, "error"))
			json_object_set(body, "error", json_object_get(item, "error"));
		path = bwa_xasprintf("/agent/v1/commands/%s/result", id ? id : "");
		what =
		    bwa_xasprintf("command %s %s: %s result", id ? id : "?", type ? type : "?", status ? status : "?");
		o = bwa_http_call(&r->http, what, "POST", path, body, NULL, &resp, &err);
		free(path);
		free(what);
		json_decref(body);
		bwa_response_free(&resp);
		if (o == BWA_DONE) {
			const char *error = json_string_value(json_object_get(item, "error"));

			bwa_say("command %s %s: %s%s%s%s", id, type ? type : "?", status, error ? " (" : "",
			        error ? error : "", error ? ")" : "");
		}
		if (outcome(r, o, &err) != 0) {
			json_decref(item);
			return -1;
		}
		if (is_final(status) && id && !find_by_id(json_object_get(doc(r), "done_commands"), "id", id)) {
			json_t *done = json_object_get(doc(r), "done_commands");

			json_array_append(done, item);
			while (json_array_size(done) > DONE_REMEMBERED)
				json_array_remove(done, 0);
		}
		json_array_remove(pending, 0);
		json_decref(item);
		if (save(r) != 0)
			return -1;
	}
	return 0;
}

static int queue_result(struct runner *r, const char *id, const char *type, const char *status, json_t *result,
                        const char *error)
{
	json_t *item = json_pack("{s:s,s:s,s:s}", "id", id, "type", type, "status", status);

	if (result)
		json_object_set(item, "result", result);
	if (error)
		json_object_set_new(item, "error", json_string(error));
	json_array_append_new(json_object_get(doc(r), "pending_results"), item);
	return save(r);
}

/* ---- events */

static void queue_batch(struct runner *r, json_t *events)
{
	char id[37];

	bwa_uuid(id);
	json_array_append_new(json_object_get(doc(r), "pending_batches"),
	                      json_pack("{s:s,s:O}", "batch_id", id, "events", events));
}

static void queue_event(struct runner *r, const char *type, json_t *data)
{
	json_t *events = json_pack("[{s:s,s:I,s:o}]", "type", type, "at", (json_int_t)bwa_now(), "data", data);

	queue_batch(r, events);
	json_decref(events);
}

static int post_batches(struct runner *r)
{
	json_t *pending = json_object_get(doc(r), "pending_batches");

	while (json_array_size(pending) > 0) {
		json_t *batch = json_incref(json_array_get(pending, 0));
		const char *id = json_string_value(json_object_get(batch, "batch_id"));
		size_t n = json_array_size(json_object_get(batch, "events"));
		struct bwa_response resp = {0};
		bw_error err = {0};
		char *what = bwa_xasprintf("events batch %s", id ? id : "?");
		enum bwa_outcome o =
		    bwa_http_call(&r->http, what, "POST", "/agent/v1/events", batch, NULL, &resp, &err);

		free(what);
		if (o == BWA_DONE) {
			bool dup = json_is_true(json_object_get(resp.json, "duplicate"));

			bwa_say("events batch %s: %zu event%s %s", id, n, n == 1 ? "" : "s",
			        dup ? "already stored (duplicate)" : "stored");
			json_object_set(doc(r), "last_batch", batch);
		}
		bwa_response_free(&resp);
		if (outcome(r, o, &err) != 0) {
			json_decref(batch);
			return -1;
		}
		json_array_remove(pending, 0);
		json_decref(batch);
		if (save(r) != 0)
			return -1;
	}
	return 0;
}

/* Reads --events FILE (an array of events, or {"events": [...]}) into batches of at most 500,
 * each with a new batch id, saved before anything is sent so that a retry reuses the ids. */
static int queue_events_file(struct runner *r, const char *path)
{
	char *text = NULL;
	bw_error err = {0};
	json_error_t jerr;
	json_t *root, *events, *ev, *chunk = NULL;
	size_t i, nbatches = 0;

	if (bwa_read_file(path, MAX_EVENTS_FILE, &text, NULL, &err) != BW_OK)
		return bwa_fail(BWA_EXIT_USAGE, "run: --events: %s", err.message);
	root = json_loads(text, 0, &jerr);
	free(text);
	if (!root)
		return bwa_fail(BWA_EXIT_USAGE, "run: --events: %s:%d: %s", path, jerr.line, jerr.text);
	events = json_is_array(root) ? root : json_object_get(root, "events");
	if (!json_is_array(events) || json_array_size(events) == 0) {
		json_decref(root);
		return bwa_fail(BWA_EXIT_USAGE,
		                "run: --events: %s must hold a non-empty array of events (or {\"events\": [...]})",
		                path);
	}
	json_array_foreach(events, i, ev)
	{
		json_t *e;

		if (!json_is_object(ev) || !json_is_string(json_object_get(ev, "type"))) {
			json_decref(root);
			json_decref(chunk);
			return bwa_fail(BWA_EXIT_USAGE,
			                "run: --events: event %zu in %s is not an object with a \"type\"", i, path);
		}
		e = json_deep_copy(ev);
		if (!json_object_get(e, "at"))
			json_object_set_new(e, "at", json_integer(bwa_now()));
		if (!json_object_get(e, "data"))
			json_object_set_new(e, "data", json_object());
		if (!chunk)
			chunk = json_array();
		json_array_append_new(chunk, e);
		if (json_array_size(chunk) == EVENTS_PER_BATCH) {
			queue_batch(r, chunk);
			json_decref(chunk);
			chunk = NULL;
			nbatches++;
		}
	}
	if (chunk) {
		queue_batch(r, chunk);
		json_decref(chunk);
		nbatches++;
	}
	bwa_say("events: %zu event%s from %s queued in %zu batch%s", json_array_size(events),
	        json_array_size(events) == 1 ? "" : "s", path, nbatches, nbatches == 1 ? "" : "es");
	json_decref(root);
	return save(r) == 0 ? 0 : BWA_EXIT_FAIL;
}

/* ---- policy and certificate */

/* An ETag value without W/ and quotes. */
static void etag_version(const char *etag, char *out, size_t size)
{
	size_t n;

	if (strncmp(etag, "W/", 2) == 0)
		etag += 2;
	if (*etag == '"')
		etag++;
	n = strnlen(etag, size - 1);
	memcpy(out, etag, n);
	out[n] = '\0';
	if (n && out[n - 1] == '"')
		out[n - 1] = '\0';
}

/* Fetches the policy; `want` is the version the check-in announced (may be NULL). */
static int sync_policy(struct runner *r, const char *want, char *why, size_t why_size)
{
	const char *etag = doc_str(r, "policy_etag");
	struct bwa_response resp = {0};
	bw_error err = {0};
	enum bwa_outcome o = bwa_http_call(&r->http, "policy", "GET", "/agent/v1/policy", NULL, etag, &resp, &err);
	char version[128];

	if (o != BWA_DONE) {
		snprintf(why, why_size, "%s", err.message);
		bwa_response_free(&resp);
		outcome(r, o, &err);
		return -1;
	}
	if (resp.status == 304) {
		const char *cur = doc_str(r, "policy_version");

		bwa_say("policy: version %s is current", cur ? cur : want ? want : "?");
		if (want && !cur)
			json_object_set_new(doc(r), "policy_version", json_string(want));
		bwa_response_free(&resp);
		return save(r);
	}
	if (resp.etag[0])
		etag_version(resp.etag, version, sizeof version);
	else if (json_is_string(json_object_get(resp.json, "version")))
		snprintf(version, sizeof version, "%s", json_string_value(json_object_get(resp.json, "version")));
	else
		snprintf(version, sizeof version, "%s", want ? want : "unknown");
	{
		json_t *pol = json_object_get(resp.json, "policy"), *stored;
		char *path = bwa_path(r->st.dir, "policy.json"), *text;
		bw_error werr = {0};
		struct bwa_schedule sched;
		char desc[160];

		if (!json_is_object(pol)) {
			/* Not the documented {"version", "policy"}: keep whatever object came. */
			pol = resp.json ? json_deep_copy(resp.json) : json_object();
			json_object_del(pol, "version");
		} else {
			json_incref(pol);
		}
		if (bwa_schedule_from_policy(pol, &sched, &werr) != BW_OK) {
			/* Applied all the same (a real agent keeps the rest of the policy); no scheduled scans. */
			bwa_warn("policy %s: %s; no scheduled scans", version, werr.message);
			memset(&sched, 0, sizeof sched);
		}
		stored = json_pack("{s:s,s:s?,s:I,s:o}", "version", version, "etag", resp.etag[0] ? resp.etag : NULL,
		                   "fetched_at", (json_int_t)bwa_now(), "policy", pol);
		text = json_dumps(stored, JSON_INDENT(2) | JSON_SORT_KEYS);
		/* policy.json before device.json: a crash in between fetches the policy again. */
		if (!text || bwa_write_file(path, text, strlen(text), 0600, true, &werr) != BW_OK) {
			snprintf(why, why_size, "cannot record the policy: %s", text ? werr.message : "out of memory");
			bwa_warn("%s", why);
			free(text);
			free(path);
			json_decref(stored);
			bwa_response_free(&resp);
			return -1;
		}
		free(text);
		free(path);
		json_decref(stored);
		r->sched = sched;
		bwa_schedule_describe(&sched, desc, sizeof desc);
		json_object_set_new(doc(r), "policy_version", json_string(version));
		json_object_set_new(doc(r), "policy_etag", resp.etag[0] ? json_string(resp.etag) : json_null());
		queue_event(r, "policy_applied", json_pack("{s:s}", "version", version));
		bwa_say("policy: applied version %s (scheduled scan: %s)", version, desc);
	}
	bwa_response_free(&resp);
	return save(r);
}

/* ---- the simulated clock and the scheduled scans */

static int64_t sim_now(struct runner *r)
{
	double speed = r->o->clock_speed > 0 ? r->o->clock_speed : 1;

	return r->clock_start + (int64_t)((bwa_mono() - r->mono_start) * speed);
}

/* Loads the schedule of the applied policy (policy.json) at the start of a run. */
static void schedule_load(struct runner *r)
{
	json_t *pol = NULL;
	bw_error err = {0};

	memset(&r->sched, 0, sizeof r->sched);
	if (bwa_policy_load(r->st.dir, &pol, &err) != BW_OK) {
		bwa_warn("%s", err.message);
		return;
	}
	if (pol && bwa_schedule_from_policy(json_object_get(pol, "policy"), &r->sched, &err) != BW_OK) {
		bwa_warn("the applied policy: %s; no scheduled scans", err.message);
		memset(&r->sched, 0, sizeof r->sched);
	}
	json_decref(pol);
}

/* The scheduled scan_finished events in [from, to] into `events` (at most `max`); their count. */
static size_t schedule_events(struct runner *r, const struct bwa_schedule *s, int64_t from, int64_t to,
                              const char *version, json_t *events, size_t max)
{
	size_t napps = r ? json_array_size(json_object_get(json_object_get(doc(r), "inventory"), "apps")) : 0;
	size_t n = 0;
	char desc[160];

	bwa_schedule_describe(s, desc, sizeof desc);
	for (int64_t t = bwa_schedule_next(s, from); t >= 0 && t <= to; t = bwa_schedule_next(s, t + 1)) {
		char when[32];

		if (n == max) {
			bwa_warn("more than %zu scheduled scans at once; the rest are skipped", max);
			break;
		}
		bwa_rfc3339(t, when);
		json_array_append_new(events, json_pack("{s:s,s:I,s:o}", "type", "scan_finished", "at", (json_int_t)t,
		                                        "data", bwa_schedule_event_data(s, t, version, napps)));
		bwa_say("scheduled scan at %s (%s)", when, desc);
		n++;
	}
	return n;
}

/* Queues events in batches of at most 500 (ids saved before anything is sent). */
static void queue_events(struct runner *r, json_t *events)
{
	size_t i = 0, n = json_array_size(events);

	while (i < n) {
		json_t *chunk = json_array();

		for (size_t k = 0; k < EVENTS_PER_BATCH && i < n; k++, i++)
			json_array_append(chunk, json_array_get(events, i));
		queue_batch(r, chunk);
		json_decref(chunk);
	}
}

/* Emits the scans scheduled since the last call, up to the simulated now, and posts them. */
static int scheduled_scans(struct runner *r)
{
	int64_t now = sim_now(r);
	json_t *events;

	if (now <= r->sched_done)
		return 0;
	if (!r->sched.enabled) {
		r->sched_done = now;
		return 0;
	}
	events = json_array();
	schedule_events(r, &r->sched, r->sched_done + 1, now, doc_str(r, "policy_version"), events, MAX_SCANS_AT_ONCE);
	r->sched_done = now;
	if (json_array_size(events) == 0) {
		json_decref(events);
		return 0;
	}
	queue_events(r, events);
	json_decref(events);
	if (save(r) != 0)
		return -1;
	return post_batches(r);
}

static int renew_certificate(struct runner *r)
{
	bw_error err = {0};
	EVP_PKEY *key = bwa_key_generate(&err);
	char *csr = key ? bwa_csr_pem(key, &err) : NULL;
	char *key_pem = NULL, *cert_new = NULL, *key_new = NULL;
	struct bwa_response resp = {0};
	X509 *cert = NULL;
	json_t *body;
	enum bwa_outcome o;
	int ret = -1;

	if (!csr) {
		bwa_warn("certificate renewal: %s", err.message);
		EVP_PKEY_free(key);
		return -1;
	}
	body = json_pack("{s:s}", "csr", csr);
	o = bwa_http_call(&r->http, "certificate renewal", "POST", "/agent/v1/certificate", body, NULL, &resp, &err);
	json_decref(body);
	if (o != BWA_DONE) {
		outcome(r, o, &err);
		goto out;
	}
	cert = bwa_cert_parse(str_or(json_string_value(json_object_get(resp.json, "certificate")), ""), &err);
	if (!cert || X509_check_private_key(cert, key) != 1) {
		bwa_warn("certificate renewal: the answer holds no certificate for the new key");
		r->refused = true;
		goto out;
	}
	{
		const char *pem = json_string_value(json_object_get(resp.json, "certificate"));
		int64_t not_after = 0;
		char when[64];

		key_pem = bwa_key_pem(key);
		cert_new = bwa_path(r->st.dir, "cert.pem.new");
		key_new = bwa_path(r->st.dir, "key.pem.new");
		bwa_cert_info(cert, NULL, 0, &not_after, NULL);
		/* Both new files first, then the renames: a crash leaves either pair usable. */
		if (bwa_write_file(key_new, key_pem, strlen(key_pem), 0600, true, &err) != BW_OK ||
		    bwa_write_file(cert_new, pem, strlen(pem), 0644, true, &err) != BW_OK) {
			bwa_warn("certificate renewal: %s", err.message);
			r->fatal = BWA_EXIT_FAIL;
			goto out;
		}
		if (rename(key_new, r->key_path) != 0 || rename(cert_new, r->cert_path) != 0) {
			bwa_warn("certificate renewal: cannot install the new certificate: %s", strerror(errno));
			r->fatal = BWA_EXIT_FAIL;
			goto out;
		}
		json_object_set_new(doc(r), "cert_not_after", json_integer(not_after));
		bwa_http_reconnect(&r->http);
		format_time(not_after, when, sizeof when);
		bwa_say("certificate: renewed, valid until %s", when);
		ret = save(r);
	}
out:
	if (key_pem) {
		OPENSSL_cleanse(key_pem, strlen(key_pem));
		free(key_pem);
	}
	free(cert_new);
	free(key_new);
	free(csr);
	X509_free(cert);
	EVP_PKEY_free(key);
	bwa_response_free(&resp);
	return ret;
}

/* ---- commands */

struct place {
	double lat, lon;
};

static const struct place places[] = {
    {35.6812, 139.7671},  {48.8566, 2.3522},  {40.7128, -74.0060},  {52.5200, 13.4050},
    {-33.8688, 151.2093}, {51.5072, -0.1276}, {-23.5505, -46.6333}, {1.3521, 103.8198},
};

static double round6(double v)
{
	return round(v * 1e6) / 1e6;
}

static json_t *locate(struct runner *r)
{
	json_t *home = json_object_get(doc(r), "home");
	double lat, lon;

	if (!json_is_object(home)) {
		const struct place *p = &places[bwa_random_u64() % (sizeof places / sizeof places[0])];

		home = json_pack("{s:f,s:f}", "latitude", p->lat, "longitude", p->lon);
		json_object_set_new(doc(r), "home", home);
	}
	/* Within about a kilometre of the device's home, as a phone moving around town would be. */
	lat = json_real_value(json_object_get(home, "latitude")) + (bwa_random_unit() - 0.5) * 0.02;
	lon = json_real_value(json_object_get(home, "longitude")) + (bwa_random_unit() - 0.5) * 0.02;
	return json_pack("{s:f,s:f,s:I,s:I}", "latitude", round6(lat), "longitude", round6(lon), "accuracy",
	                 (json_int_t)(5 + bwa_random_u64() % 46), "located_at", (json_int_t)bwa_now());
}

/* Executes one command; fills status and result or error. */
static void execute(struct runner *r, const char *id, const char *type, const char **status, json_t **result,
                    char *error, size_t error_size)
{
	int64_t now = bwa_now();

	*status = "completed";
	*result = NULL;
	if (strcmp(type, "lock") == 0) {
		*result = json_pack("{s:I}", "locked_at", (json_int_t)now);
		json_object_set_new(doc(r), "locked_at", json_integer(now));
	} else if (strcmp(type, "locate") == 0) {
		*result = locate(r);
	} else if (strcmp(type, "wipe") == 0 || strcmp(type, "enterprise_wipe") == 0) {
		*result = json_pack("{s:I}", "wiped_at", (json_int_t)now);
		json_object_set_new(doc(r), "status", json_string("wiped"));
		json_object_set_new(doc(r), "wiped_at", json_integer(now));
		json_object_set_new(doc(r), "wipe_type", json_string(type));
		r->stopped = true;
	} else if (strcmp(type, "scan") == 0) {
		size_t napps = json_array_size(json_object_get(json_object_get(doc(r), "inventory"), "apps"));

		*result = json_pack("{s:i,s:I}", "threats", 0, "scanned_apps", (json_int_t)napps);
		queue_event(
		    r, "scan_finished",
		    json_pack("{s:i,s:I,s:s}", "threats", 0, "scanned_apps", (json_int_t)napps, "command_id", id));
	} else if (strcmp(type, "update") == 0) {
		*result = json_pack("{s:s}", "agent_version", BWA_AGENT_VERSION);
	} else if (strcmp(type, "sync_policy") == 0) {
		if (sync_policy(r, NULL, error, error_size) != 0) {
			*status = "failed";
			return;
		}
		*result = json_pack("{s:O?}", "policy_version", json_object_get(doc(r), "policy_version"));
	} else {
		*status = "failed";
		snprintf(error, error_size, "unsupported command type %s", type);
	}
}

static int handle_command(struct runner *r, json_t *cmd)
{
	const char *id = json_string_value(json_object_get(cmd, "id"));
	const char *type = json_string_value(json_object_get(cmd, "type"));
	json_t *done, *result = NULL;
	const char *status;
	char error[600] = "";
	bool posted;
	int rc;

	if (!id_ok(id) || !type) {
		bwa_warn("checkin: ignoring a command without a usable id and type");
		r->refused = true;
		return 0;
	}
	if (r->o->drop_ack) {
		bwa_say("command %s %s: received; acknowledgement dropped (--drop-ack)", id, type);
		return 0;
	}
	done = find_by_id(json_object_get(doc(r), "done_commands"), "id", id);
	if (done) {
		/* Delivered again: our result was lost on the way. Same result, no second execution. */
		bwa_say("command %s %s: delivered again; re-sending its result", id, type);
		json_array_append_new(json_object_get(doc(r), "pending_results"), json_deep_copy(done));
		return save(r) == 0 ? post_results(r) : -1;
	}
	if (find_by_id(json_object_get(doc(r), "pending_results"), "id", id))
		return 0; /* its result is already waiting to be posted */
	if (queue_result(r, id, type, "acknowledged", NULL, NULL) != 0)
		return -1;
	/* Executed even when the acknowledgement could not be posted: the device got the command.
	 * Its results then wait in device.json for the next cycle. */
	posted = post_results(r) == 0;
	if (!posted && (r->fatal == BWA_EXIT_NOAUTH || bwa_stop))
		return -1;
	execute(r, id, type, &status, &result, error, sizeof error);
	rc = queue_result(r, id, type, status, result, error[0] ? error : NULL);
	json_decref(result);
	if (rc != 0 || !posted)
		return -1;
	return post_results(r);
}

/* ---- check-in */

static json_t *device_delta(struct runner *r)
{
	json_t *cur = json_object_get(doc(r), "device"), *rep = json_object_get(doc(r), "reported_device");
	static const char *const keys[] = {"os_version", "push", "agent_version", "phone_number"};
	json_t *d = json_object();

	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		json_t *v = json_object_get(cur, keys[i]);

		if (v && !json_equal(v, json_object_get(rep, keys[i])))
			json_object_set(d, keys[i], v);
	}
	if (json_object_size(d) == 0) {
		json_decref(d);
		return NULL;
	}
	return d;
}

static void describe_inventory(json_t *inv, char *buf, size_t size)
{
	const char *key;
	json_t *v;
	size_t off;

	if (!inv) {
		snprintf(buf, size, "no inventory changes");
		return;
	}
	if (json_is_true(json_object_get(inv, "full"))) {
		snprintf(buf, size, "full inventory (%zu apps)", json_array_size(json_object_get(inv, "apps")));
		return;
	}
	off = (size_t)snprintf(buf, size, "inventory changes:");
	json_object_foreach(inv, key, v)
	{
		if (off >= size || strcmp(key, "full") == 0)
			continue;
		if (json_is_array(v) && (strcmp(key, "apps_added") == 0 || strcmp(key, "apps_removed") == 0))
			off += (size_t)snprintf(buf + off, size - off, " %s %zu", key, json_array_size(v));
		else
			off += (size_t)snprintf(buf + off, size - off, " %s", key);
	}
}

static int checkin(struct runner *r, bool *again)
{
	json_t *body = json_object(), *inv, *dev, *answer, *cmds, *cmd, *pol, *interval, *pv;
	const char *req, *want = NULL;
	struct bwa_response resp = {0};
	bw_error err = {0};
	enum bwa_outcome o;
	char invdesc[256], pvbuf[64];
	bool sent_full;
	size_t i;

	*again = false;
	inv = bwa_inventory_delta(json_object_get(doc(r), "inventory"), json_object_get(doc(r), "reported_inventory"));
	dev = device_delta(r);
	pv = json_object_get(doc(r), "policy_version");
	if (inv)
		json_object_set(body, "inventory", inv);
	if (dev)
		json_object_set(body, "device", dev);
	if (json_is_string(pv) && !json_equal(pv, json_object_get(doc(r), "reported_policy_version")))
		json_object_set(body, "policy_version", pv);
	sent_full = inv && json_is_true(json_object_get(inv, "full"));
	describe_inventory(inv, invdesc, sizeof invdesc);
	if (dev) {
		const char *k;
		json_t *v;
		size_t off = strlen(invdesc);

		off += (size_t)snprintf(invdesc + off, sizeof invdesc - off, ", device changes:");
		json_object_foreach(dev, k, v)
		{
			if (off < sizeof invdesc)
				off += (size_t)snprintf(invdesc + off, sizeof invdesc - off, " %s", k);
		}
	}
	o = bwa_http_call(&r->http, "checkin", "POST", "/agent/v1/checkin", body, NULL, &resp, &err);
	json_decref(body);
	if (o != BWA_DONE) {
		json_decref(inv);
		json_decref(dev);
		bwa_response_free(&resp);
		return outcome(r, o, &err);
	}
	/* The server has what we sent. */
	if (inv)
		json_object_set_new(doc(r), "reported_inventory", json_deep_copy(json_object_get(doc(r), "inventory")));
	json_object_set_new(doc(r), "reported_device", json_deep_copy(json_object_get(doc(r), "device")));
	if (json_is_string(pv))
		json_object_set(doc(r), "reported_policy_version", pv);
	json_object_set_new(doc(r), "last_checkin", json_integer(bwa_now()));
	json_decref(inv);
	json_decref(dev);
	answer = resp.json ? resp.json : json_object();
	if (!resp.json) {
		bwa_warn("checkin: the answer is not a JSON object");
		r->refused = true;
		resp.json = answer;
	}
	interval = json_object_get(answer, "checkin_interval");
	if (json_is_integer(interval) && json_integer_value(interval) > 0)
		json_object_set(doc(r), "checkin_interval", interval);
	cmds = json_object_get(answer, "commands");
	bwa_say("checkin: ok, %s, %zu command%s", invdesc, json_array_size(cmds),
	        json_array_size(cmds) == 1 ? "" : "s");
	req = json_string_value(json_object_get(answer, "inventory_request"));
	if (req && strcmp(req, "full") == 0) {
		json_object_set_new(doc(r), "reported_inventory", json_null());
		if (!sent_full) {
			bwa_say("checkin: the server asks for the full inventory");
			*again = true;
		}
	}
	if (save(r) != 0)
		goto fail;
	json_array_foreach(cmds, i, cmd)
	{
		if (r->stopped)
			break;
		if (handle_command(r, cmd) != 0)
			goto fail;
	}
	if (r->stopped) {
		bwa_response_free(&resp);
		return 0;
	}
	pol = json_object_get(json_object_get(answer, "policy"), "version");
	if (json_is_string(pol)) {
		want = json_string_value(pol);
	} else if (json_is_integer(pol)) {
		snprintf(pvbuf, sizeof pvbuf, "%lld", (long long)json_integer_value(pol));
		want = pvbuf;
	}
	if (want && (!doc_str(r, "policy_version") || strcmp(want, doc_str(r, "policy_version")) != 0)) {
		char why[600];

		if (sync_policy(r, want, why, sizeof why) != 0 && r->fatal)
			goto fail;
	}
	if (json_is_true(json_object_get(answer, "renew_certificate")) && renew_certificate(r) != 0 && r->fatal)
		goto fail;
	bwa_response_free(&resp);
	return 0;
fail:
	bwa_response_free(&resp);
	return -1;
}

/* ---- simulated changes (`run` options) */

static const char *app_name(const char *id)
{
	const char *dot = strrchr(id, '.');

	return dot && dot[1] ? dot + 1 : id;
}

static int apply_changes(struct runner *r)
{
	json_t *inv = json_object_get(doc(r), "inventory"), *dev = json_object_get(doc(r), "device");
	json_t *settings = json_object_get(inv, "settings"), *apps = json_object_get(inv, "apps");
	bool changed = false;

	if (!json_is_object(settings)) {
		settings = json_object();
		json_object_set_new(inv, "settings", settings);
	}
	if (!json_is_array(apps)) {
		apps = json_array();
		json_object_set_new(inv, "apps", apps);
	}
	if (r->o->usb >= 0) {
		json_object_set_new(settings, "usb_debugging", json_boolean(r->o->usb));
		bwa_say("change: usb_debugging %s", r->o->usb ? "on" : "off");
		changed = true;
	}
	if (r->o->devopts >= 0) {
		json_object_set_new(settings, "developer_options", json_boolean(r->o->devopts));
		bwa_say("change: developer_options %s", r->o->devopts ? "on" : "off");
		changed = true;
	}
	if (r->o->rooted >= 0) {
		json_t *root = json_object_get(inv, "root");
		bool ios = json_object_get(root, "jailbroken") != NULL;

		if (!json_is_object(root)) {
			root = json_object();
			json_object_set_new(inv, "root", root);
		}
		json_object_set_new(root, ios ? "jailbroken" : "rooted", json_boolean(r->o->rooted));
		if (!ios)
			json_object_set_new(root, "su_binary", json_boolean(r->o->rooted));
		bwa_say("change: %s %s", ios ? "jailbroken" : "rooted", r->o->rooted ? "yes" : "no");
		changed = true;
	}
	for (size_t i = 0; i < r->o->ninstall; i++) {
		char *id = bwa_xstrdup(r->o->install[i]);
		char *colon = strchr(id, ':');
		const char *version = "1.0";
		json_t *app;

		if (colon) {
			*colon = '\0';
			version = colon + 1;
		}
		app = find_by_id(apps, "id", id);
		if (app) {
			json_object_set_new(app, "version", json_string(version));
		} else {
			json_array_append_new(
			    apps, json_pack("{s:s,s:s,s:s}", "id", id, "name", app_name(id), "version", version));
		}
		bwa_say("change: app %s %s %s", id, app ? "updated to" : "installed,", version);
		free(id);
		changed = true;
	}
	for (size_t i = 0; i < r->o->nremove; i++) {
		size_t j;
		json_t *app;
		bool found = false;

		json_array_foreach(apps, j, app)
		{
			const char *aid = json_string_value(json_object_get(app, "id"));

			if (aid && strcmp(aid, r->o->remove[i]) == 0) {
				json_array_remove(apps, j);
				found = true;
				break;
			}
		}
		if (found) {
			bwa_say("change: app %s removed", r->o->remove[i]);
			changed = true;
		} else {
			bwa_warn("--remove-app %s: no such app on this device", r->o->remove[i]);
		}
	}
	if (r->o->os_version) {
		json_object_set_new(dev, "os_version", json_string(r->o->os_version));
		bwa_say("change: os_version %s", r->o->os_version);
		changed = true;
	}
	return changed ? save(r) : 0;
}

/* ---- the run */

static int runner_open(struct runner *r, const char *dir, const char *ca, const char *server, long retries)
{
	bw_error err = {0};
	const char *saved_ca;
	char *url;

	r->wake.fd = -1;
	if (bwa_state_load(dir, &r->st, &err) != BW_OK)
		return bwa_fail(err.code == BW_E_NOTFOUND ? BWA_EXIT_USAGE : BWA_EXIT_FAIL, "%s", err.message);
	url = bwa_server_url(server ? server : doc_str(r, "server"), &err);
	if (!url)
		return bwa_fail(BWA_EXIT_USAGE, "%s", err.message);
	r->server = url;
	r->cert_path = bwa_path(dir, "cert.pem");
	r->key_path = bwa_path(dir, "key.pem");
	saved_ca = doc_str(r, "server_ca");
	if (ca) {
		r->ca_path = bwa_xstrdup(ca);
	} else if (saved_ca) {
		r->ca_path = saved_ca[0] == '/' ? bwa_xstrdup(saved_ca) : bwa_path(dir, saved_ca);
		if (access(r->ca_path, R_OK) != 0) {
			bwa_warn("the saved server CA %s is unreadable (%s); using the system trust store", r->ca_path,
			         strerror(errno));
			free(r->ca_path);
			r->ca_path = NULL;
		}
	}
	if (access(r->cert_path, R_OK) != 0 || access(r->key_path, R_OK) != 0)
		return bwa_fail(BWA_EXIT_FAIL, "%s: the device certificate or key (cert.pem, key.pem) is missing", dir);
	if (bwa_http_init(&r->http,
	                  &(struct bwa_http_config){.server = r->server,
	                                            .ca_file = r->ca_path,
	                                            .cert_file = r->cert_path,
	                                            .key_file = r->key_path,
	                                            .retries = retries},
	                  &err) != BW_OK)
		return bwa_fail(BWA_EXIT_FAIL, "%s", err.message);
	return BWA_EXIT_OK;
}

static void runner_close(struct runner *r)
{
	bwa_wake_close(&r->wake);
	bwa_http_cleanup(&r->http);
	bwa_state_free(&r->st);
	free(r->server);
	free(r->cert_path);
	free(r->key_path);
	free(r->ca_path);
}

/* One cycle; r->fatal and r->stopped tell whether the run must end. */
static void cycle(struct runner *r, bool first)
{
	bool again = false;

	if (first && r->o->renew && renew_certificate(r) != 0 && r->fatal)
		return;
	if (post_results(r) != 0 || post_batches(r) != 0)
		return;
	if (checkin(r, &again) != 0)
		return;
	if (again && !r->stopped && checkin(r, &again) != 0)
		return;
	if (post_results(r) == 0)
		post_batches(r);
	if (!r->fatal && !r->stopped)
		scheduled_scans(r);
}

/* Waits for the next cycle: until `seconds` passed or a push wakes the device; meanwhile the
 * scheduled scans follow the simulated clock. False when a stop signal arrived. */
static bool wait_next(struct runner *r, double seconds)
{
	double end = bwa_mono() + seconds;

	while (!bwa_stop) {
		double left = end - bwa_mono();

		if (left <= 0)
			return true;
		if (bwa_wake_poll(&r->wake, left > WAIT_SLICE_S ? WAIT_SLICE_S : left)) {
			bwa_say("woken by push");
			return true;
		}
		if (!bwa_stop && scheduled_scans(r) != 0 && r->fatal == BWA_EXIT_NOAUTH)
			return true;
	}
	return false;
}

/* --push-sim: a token of the provider's shape, the wake-up listener, and the registration with
 * the simulator. The token goes to the server with the next check-in (device.push). */
static int push_setup(struct runner *r)
{
	const struct run_opts *o = r->o;
	char token[256], *wake_url;
	bw_error err = {0};
	int rc;

	if (o->push_token)
		snprintf(token, sizeof token, "%s", o->push_token);
	else
		bwa_push_token(o->push_provider, token, sizeof token);
	if (bwa_wake_listen(&r->wake, &err) != BW_OK)
		return bwa_fail(BWA_EXIT_FAIL, "run: %s", err.message);
	wake_url = bwa_xasprintf("http://127.0.0.1:%d/wake", r->wake.port);
	rc = bwa_push_register(o->push_sim, o->push_sim_ca, token, wake_url, &err);
	if (rc != BW_OK) {
		free(wake_url);
		return bwa_fail(rc == BW_E_REMOTE ? BWA_EXIT_FAIL : BWA_EXIT_UNREACHABLE, "run: %s", err.message);
	}
	json_object_set_new(json_object_get(doc(r), "device"), "push",
	                    json_pack("{s:s,s:s}", "provider", o->push_provider, "token", token));
	bwa_say("push: %s token registered with %s; wake-ups on %s", o->push_provider, o->push_sim, wake_url);
	free(wake_url);
	return save(r) == 0 ? BWA_EXIT_OK : BWA_EXIT_FAIL;
}

static void usage_run(FILE *f)
{
	fputs("usage: bulwark-agent run --state DIR [--once] [--interval S] [--ca FILE] [--server URL]\n"
	      "         [--retries N] [--drop-ack] [--events FILE.json] [--repeat-batch] [--renew]\n"
	      "         [--set-usb-debugging on|off] [--set-developer-options on|off] [--set-rooted on|off]\n"
	      "         [--install-app ID[:VERSION]]... [--remove-app ID]... [--os-version V]\n"
	      "         [--push-sim URL --push-provider apns|fcm [--push-sim-ca FILE] [--push-token T]]\n"
	      "         [--clock-start TIME] [--clock-speed X]\n",
	      f);
}

enum {
	O_STATE = 1000,
	O_CA,
	O_SERVER,
	O_ONCE,
	O_INTERVAL,
	O_RETRIES,
	O_DROP_ACK,
	O_EVENTS,
	O_REPEAT,
	O_RENEW,
	O_USB,
	O_DEVOPTS,
	O_ROOTED,
	O_INSTALL,
	O_REMOVE,
	O_OS,
	O_JSON,
	O_PUSH_SIM,
	O_PUSH_SIM_CA,
	O_PUSH_PROVIDER,
	O_PUSH_TOKEN,
	O_CLOCK_START,
	O_CLOCK_SPEED,
	O_FROM,
	O_TO,
	O_POLICY,
	O_DRY_RUN,
	O_HELP
};

static int parse_onoff_opt(const char *name, const char *v, int *out)
{
	bool b;

	if (!bwa_parse_onoff(v, &b))
		return bwa_fail(BWA_EXIT_USAGE, "run: --%s must be on or off", name);
	*out = b;
	return 0;
}

int bwa_cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"state", required_argument, NULL, O_STATE},
	    {"ca", required_argument, NULL, O_CA},
	    {"server", required_argument, NULL, O_SERVER},
	    {"once", no_argument, NULL, O_ONCE},
	    {"interval", required_argument, NULL, O_INTERVAL},
	    {"retries", required_argument, NULL, O_RETRIES},
	    {"drop-ack", no_argument, NULL, O_DROP_ACK},
	    {"events", required_argument, NULL, O_EVENTS},
	    {"repeat-batch", no_argument, NULL, O_REPEAT},
	    {"renew", no_argument, NULL, O_RENEW},
	    {"set-usb-debugging", required_argument, NULL, O_USB},
	    {"set-developer-options", required_argument, NULL, O_DEVOPTS},
	    {"set-rooted", required_argument, NULL, O_ROOTED},
	    {"install-app", required_argument, NULL, O_INSTALL},
	    {"remove-app", required_argument, NULL, O_REMOVE},
	    {"os-version", required_argument, NULL, O_OS},
	    {"push-sim", required_argument, NULL, O_PUSH_SIM},
	    {"push-sim-ca", required_argument, NULL, O_PUSH_SIM_CA},
	    {"push-provider", required_argument, NULL, O_PUSH_PROVIDER},
	    {"push-token", required_argument, NULL, O_PUSH_TOKEN},
	    {"clock-start", required_argument, NULL, O_CLOCK_START},
	    {"clock-speed", required_argument, NULL, O_CLOCK_SPEED},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	struct run_opts o = {.usb = -1, .devopts = -1, .rooted = -1, .interval = -1, .retries = -2, .clock_speed = 1};
	struct runner r = {0};
	int c, ret;
	bool first = true;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_STATE:
			o.dir = optarg;
			break;
		case O_CA:
			o.ca = optarg;
			break;
		case O_SERVER:
			o.server = optarg;
			break;
		case O_ONCE:
			o.once = true;
			break;
		case O_INTERVAL:
			if (!bwa_parse_seconds(optarg, 0.1, 86400, &o.interval))
				return bwa_fail(BWA_EXIT_USAGE, "run: --interval must be seconds from 0.1 to 86400");
			break;
		case O_RETRIES:
			if (!bwa_parse_long(optarg, -1, 1000000, &o.retries))
				return bwa_fail(BWA_EXIT_USAGE, "run: --retries must be a number (-1 = unlimited)");
			break;
		case O_DROP_ACK:
			o.drop_ack = true;
			break;
		case O_EVENTS:
			o.events_file = optarg;
			break;
		case O_REPEAT:
			o.repeat_batch = true;
			break;
		case O_RENEW:
			o.renew = true;
			break;
		case O_USB:
			if (parse_onoff_opt("set-usb-debugging", optarg, &o.usb))
				return BWA_EXIT_USAGE;
			break;
		case O_DEVOPTS:
			if (parse_onoff_opt("set-developer-options", optarg, &o.devopts))
				return BWA_EXIT_USAGE;
			break;
		case O_ROOTED:
			if (parse_onoff_opt("set-rooted", optarg, &o.rooted))
				return BWA_EXIT_USAGE;
			break;
		case O_INSTALL:
			if (o.ninstall == MAX_APPS_CHANGES || !*optarg || *optarg == ':')
				return bwa_fail(BWA_EXIT_USAGE,
				                "run: --install-app takes ID[:VERSION], at most %d times",
				                MAX_APPS_CHANGES);
			o.install[o.ninstall++] = optarg;
			break;
		case O_REMOVE:
			if (o.nremove == MAX_APPS_CHANGES || !*optarg)
				return bwa_fail(BWA_EXIT_USAGE, "run: --remove-app takes an app id, at most %d times",
				                MAX_APPS_CHANGES);
			o.remove[o.nremove++] = optarg;
			break;
		case O_OS:
			o.os_version = optarg;
			break;
		case O_PUSH_SIM:
			if (strncmp(optarg, "http://", 7) != 0 && strncmp(optarg, "https://", 8) != 0)
				return bwa_fail(BWA_EXIT_USAGE, "run: --push-sim must be an http:// or https:// URL");
			o.push_sim = optarg;
			break;
		case O_PUSH_SIM_CA:
			o.push_sim_ca = optarg;
			break;
		case O_PUSH_PROVIDER:
			if (strcmp(optarg, "apns") != 0 && strcmp(optarg, "fcm") != 0)
				return bwa_fail(BWA_EXIT_USAGE, "run: --push-provider must be apns or fcm");
			o.push_provider = optarg;
			break;
		case O_PUSH_TOKEN:
			if (!*optarg || strlen(optarg) > 255 || strpbrk(optarg, " \t\r\n\"\\"))
				return bwa_fail(BWA_EXIT_USAGE,
				                "run: --push-token must be 1 to 255 printable characters");
			o.push_token = optarg;
			break;
		case O_CLOCK_START:
			if (!bwa_parse_time(optarg, &o.clock_start))
				return bwa_fail(BWA_EXIT_USAGE,
				                "run: --clock-start must be Unix seconds or an RFC 3339 time "
				                "(2026-12-01T08:00:00Z)");
			o.has_clock_start = true;
			break;
		case O_CLOCK_SPEED:
			if (!bwa_parse_seconds(optarg, 0.001, 1e7, &o.clock_speed))
				return bwa_fail(
				    BWA_EXIT_USAGE,
				    "run: --clock-speed must be simulated seconds per second, 0.001 to 10000000");
			break;
		case 'h':
		case O_HELP:
			usage_run(stdout);
			return BWA_EXIT_OK;
		case ':':
			return bwa_fail(BWA_EXIT_USAGE, "run: option %s needs a value", argv[optind - 1]);
		default:
			return bwa_fail(BWA_EXIT_USAGE, "run: unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bwa_fail(BWA_EXIT_USAGE, "run: unexpected argument %s", argv[optind]);
	if (!o.dir) {
		usage_run(stderr);
		return bwa_fail(BWA_EXIT_USAGE, "run: --state DIR is required");
	}
	if (o.push_sim && !o.push_provider)
		return bwa_fail(BWA_EXIT_USAGE, "run: --push-sim needs --push-provider apns|fcm");
	if (!o.push_sim && (o.push_provider || o.push_sim_ca || o.push_token))
		return bwa_fail(BWA_EXIT_USAGE,
		                "run: --push-provider, --push-sim-ca and --push-token need --push-sim URL");
	if (o.retries == -2)
		o.retries = o.once ? 4 : -1;
	r.o = &o;
	r.wake.fd = -1;
	if ((ret = runner_open(&r, o.dir, o.ca, o.server, o.retries)) != BWA_EXIT_OK) {
		runner_close(&r);
		return ret;
	}
	{
		const char *status = doc_str(&r, "status");

		if (status && strcmp(status, "active") != 0) {
			char when[64];
			json_t *t =
			    json_object_get(doc(&r), strcmp(status, "wiped") == 0 ? "wiped_at" : "unenrolled_at");

			format_time(json_integer_value(t), when, sizeof when);
			post_results(&r); /* results of the wipe that could not be posted then */
			ret =
			    bwa_fail(BWA_EXIT_FAIL, "device %s was %s on %s; enroll again to use this state directory",
			             doc_str(&r, "device_id"), status, when);
			runner_close(&r);
			return ret;
		}
	}
	if (apply_changes(&r) != 0) {
		runner_close(&r);
		return BWA_EXIT_FAIL;
	}
	r.mono_start = bwa_mono();
	r.clock_start = o.has_clock_start ? o.clock_start : bwa_now();
	r.sched_done = r.clock_start - 1; /* a scan scheduled at the very start is due */
	schedule_load(&r);
	if (o.has_clock_start) {
		char when[32], desc[160];

		bwa_rfc3339(r.clock_start, when);
		bwa_schedule_describe(&r.sched, desc, sizeof desc);
		bwa_say("clock: simulated time starts at %s, %g simulated seconds per second (scheduled scan: %s)",
		        when, o.clock_speed, desc);
	}
	if (o.push_sim && (ret = push_setup(&r)) != BWA_EXIT_OK) {
		runner_close(&r);
		return ret;
	}
	if (o.events_file && (ret = queue_events_file(&r, o.events_file)) != 0) {
		runner_close(&r);
		return ret;
	}
	if (o.repeat_batch) {
		json_t *last = json_object_get(doc(&r), "last_batch");

		if (!json_is_object(last)) {
			runner_close(&r);
			return bwa_fail(BWA_EXIT_USAGE, "run: --repeat-batch: this device has sent no event batch yet");
		}
		bwa_say("events: re-sending batch %s", json_string_value(json_object_get(last, "batch_id")));
		json_array_append(json_object_get(doc(&r), "pending_batches"), last);
		if (save(&r) != 0) {
			runner_close(&r);
			return BWA_EXIT_FAIL;
		}
	}
	for (;;) {
		double wait;

		cycle(&r, first);
		first = false;
		if (r.fatal == BWA_EXIT_NOAUTH || r.stopped || bwa_stop)
			break;
		if (o.once)
			break;
		/* Not --once: a failed cycle is retried at the next interval (requests already
		 * retried with backoff; only non-retryable failures get here). */
		r.fatal = 0;
		r.refused = false;
		wait = o.interval >= 0 ? o.interval
		                       : (double)json_integer_value(json_object_get(doc(&r), "checkin_interval"));
		if (wait < 1 && o.interval < 0)
			wait = 300;
		if (!wait_next(&r, wait))
			break;
	}
	if (r.stopped) {
		const char *status = doc_str(&r, "status");

		bwa_say("device %s: %s; stopping", doc_str(&r, "device_id"), status ? status : "stopped");
		ret = r.fatal ? r.fatal : BWA_EXIT_OK;
	} else if (r.fatal) {
		ret = r.fatal;
	} else if (bwa_stop) {
		ret = BWA_EXIT_OK;
	} else {
		ret = r.refused ? BWA_EXIT_FAIL : BWA_EXIT_OK;
	}
	runner_close(&r);
	return ret;
}

/* ---- unenroll and status */

static int simple_options(const char *cmd, int argc, char **argv, const char **dir, const char **ca,
                          const char **server, long *retries, bool *json)
{
	static const struct option opts[] = {
	    {"state", required_argument, NULL, O_STATE},
	    {"ca", required_argument, NULL, O_CA},
	    {"server", required_argument, NULL, O_SERVER},
	    {"retries", required_argument, NULL, O_RETRIES},
	    {"json", no_argument, NULL, O_JSON},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_STATE:
			*dir = optarg;
			break;
		case O_CA:
			*ca = optarg;
			break;
		case O_SERVER:
			*server = optarg;
			break;
		case O_RETRIES:
			if (!retries || !bwa_parse_long(optarg, -1, 1000000, retries))
				return bwa_fail(BWA_EXIT_USAGE, "%s: bad or unexpected --retries", cmd);
			break;
		case O_JSON:
			if (!json)
				return bwa_fail(BWA_EXIT_USAGE, "%s: unknown option --json", cmd);
			*json = true;
			break;
		case 'h':
		case O_HELP:
			printf("usage: bulwark-agent %s --state DIR%s\n", cmd,
			       json ? " [--json]" : " [--ca FILE] [--server URL] [--retries N]");
			return -1;
		case ':':
			return bwa_fail(BWA_EXIT_USAGE, "%s: option %s needs a value", cmd, argv[optind - 1]);
		default:
			return bwa_fail(BWA_EXIT_USAGE, "%s: unknown option %s", cmd, argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bwa_fail(BWA_EXIT_USAGE, "%s: unexpected argument %s", cmd, argv[optind]);
	if (!*dir)
		return bwa_fail(BWA_EXIT_USAGE, "%s: --state DIR is required", cmd);
	return 0;
}

int bwa_cmd_unenroll(int argc, char **argv)
{
	const char *dir = NULL, *ca = NULL, *server = NULL;
	long retries = 0;
	struct run_opts o = {.interval = -1};
	struct runner r = {0};
	struct bwa_response resp = {0};
	bw_error err = {0};
	json_t *body;
	enum bwa_outcome out;
	int ret = simple_options("unenroll", argc, argv, &dir, &ca, &server, &retries, NULL);

	if (ret)
		return ret < 0 ? BWA_EXIT_OK : ret;
	o.dir = dir;
	r.o = &o;
	if ((ret = runner_open(&r, dir, ca, server, retries)) != BWA_EXIT_OK) {
		runner_close(&r);
		return ret;
	}
	body = json_object();
	out = bwa_http_call(&r.http, "unenroll", "POST", "/agent/v1/unenroll", body, NULL, &resp, &err);
	json_decref(body);
	bwa_response_free(&resp);
	if (out == BWA_DONE) {
		json_object_set_new(doc(&r), "status", json_string("unenrolled"));
		json_object_set_new(doc(&r), "unenrolled_at", json_integer(bwa_now()));
		ret = save(&r) == 0 ? BWA_EXIT_OK : BWA_EXIT_FAIL;
		bwa_say("unenrolled device %s", doc_str(&r, "device_id"));
	} else {
		ret = bwa_fail(bwa_exit_for(out), "%s", err.message);
	}
	runner_close(&r);
	return ret;
}

int bwa_cmd_status(int argc, char **argv)
{
	const char *dir = NULL, *ca = NULL, *server = NULL;
	bool json = false;
	struct bwa_state st = {0};
	bw_error err = {0};
	int ret = simple_options("status", argc, argv, &dir, &ca, &server, NULL, &json);
	json_t *d, *inv;
	char when[64];

	if (ret)
		return ret < 0 ? BWA_EXIT_OK : ret;
	if (ca || server)
		return bwa_fail(BWA_EXIT_USAGE, "status: reads only the state directory (no --ca or --server)");
	if (bwa_state_load(dir, &st, &err) != BW_OK)
		return bwa_fail(err.code == BW_E_NOTFOUND ? BWA_EXIT_USAGE : BWA_EXIT_FAIL, "%s", err.message);
	d = st.doc;
	if (json) {
		json_dumpf(d, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		putchar('\n');
		bwa_state_free(&st);
		return BWA_EXIT_OK;
	}
	inv = json_object_get(d, "inventory");
	printf("device          %s\n", json_string_value(json_object_get(d, "device_id")));
	printf("server          %s\n", json_string_value(json_object_get(d, "server")));
	printf("status          %s\n", json_string_value(json_object_get(d, "status"))
	                                   ? json_string_value(json_object_get(d, "status"))
	                                   : "active");
	printf("platform        %s %s (%s %s)\n",
	       str_or(json_string_value(json_object_get(json_object_get(d, "device"), "platform")), "?"),
	       str_or(json_string_value(json_object_get(json_object_get(d, "device"), "os_version")), "?"),
	       str_or(json_string_value(json_object_get(json_object_get(d, "device"), "manufacturer")), "?"),
	       str_or(json_string_value(json_object_get(json_object_get(d, "device"), "model")), "?"));
	format_time(json_integer_value(json_object_get(d, "cert_not_after")), when, sizeof when);
	printf("certificate     valid until %s\n", when);
	if (json_is_integer(json_object_get(d, "last_checkin"))) {
		format_time(json_integer_value(json_object_get(d, "last_checkin")), when, sizeof when);
		printf("last check-in   %s\n", when);
	} else {
		printf("last check-in   never\n");
	}
	printf("policy          %s\n", str_or(json_string_value(json_object_get(d, "policy_version")), "none"));
	printf("apps            %zu\n", json_array_size(json_object_get(inv, "apps")));
	printf("pending         %zu results, %zu event batches\n",
	       json_array_size(json_object_get(d, "pending_results")),
	       json_array_size(json_object_get(d, "pending_batches")));
	bwa_state_free(&st);
	return BWA_EXIT_OK;
}

/* ---- simulate-schedule */

static void usage_simulate(FILE *f)
{
	fputs("usage: bulwark-agent simulate-schedule --state DIR --from TIME --to TIME [--policy FILE]\n"
	      "         [--dry-run] [--ca FILE] [--server URL] [--retries N]\n"
	      "       bulwark-agent simulate-schedule --policy FILE --from TIME --to TIME --dry-run\n"
	      "TIME: Unix seconds or RFC 3339 (2026-12-01T00:00:00Z); the range is [from, to).\n",
	      f);
}

int bwa_cmd_simulate_schedule(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"state", required_argument, NULL, O_STATE},   {"ca", required_argument, NULL, O_CA},
	    {"server", required_argument, NULL, O_SERVER}, {"retries", required_argument, NULL, O_RETRIES},
	    {"from", required_argument, NULL, O_FROM},     {"to", required_argument, NULL, O_TO},
	    {"policy", required_argument, NULL, O_POLICY}, {"dry-run", no_argument, NULL, O_DRY_RUN},
	    {"help", no_argument, NULL, O_HELP},           {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *ca = NULL, *server = NULL, *policy_file = NULL;
	bool dry_run = false, has_from = false, has_to = false;
	long retries = 4;
	int64_t from = 0, to = 0;
	struct run_opts o = {.interval = -1, .clock_speed = 1};
	struct runner r = {0};
	struct bwa_schedule sched;
	json_t *pol = NULL, *doc_pol = NULL, *events = NULL;
	char *version = NULL, desc[160], a[32], b[32];
	bw_error err = {0};
	size_t n;
	int c, ret = BWA_EXIT_OK;

	r.wake.fd = -1;
	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_STATE:
			dir = optarg;
			break;
		case O_CA:
			ca = optarg;
			break;
		case O_SERVER:
			server = optarg;
			break;
		case O_RETRIES:
			if (!bwa_parse_long(optarg, -1, 1000000, &retries))
				return bwa_fail(BWA_EXIT_USAGE,
				                "simulate-schedule: --retries must be a number (-1 = unlimited)");
			break;
		case O_FROM:
		case O_TO:
			if (!bwa_parse_time(optarg, c == O_FROM ? &from : &to))
				return bwa_fail(BWA_EXIT_USAGE,
				                "simulate-schedule: --%s must be Unix seconds or an RFC 3339 time "
				                "(2026-12-01T00:00:00Z)",
				                c == O_FROM ? "from" : "to");
			*(c == O_FROM ? &has_from : &has_to) = true;
			break;
		case O_POLICY:
			policy_file = optarg;
			break;
		case O_DRY_RUN:
			dry_run = true;
			break;
		case 'h':
		case O_HELP:
			usage_simulate(stdout);
			return BWA_EXIT_OK;
		case ':':
			return bwa_fail(BWA_EXIT_USAGE, "simulate-schedule: option %s needs a value", argv[optind - 1]);
		default:
			return bwa_fail(BWA_EXIT_USAGE, "simulate-schedule: unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bwa_fail(BWA_EXIT_USAGE, "simulate-schedule: unexpected argument %s", argv[optind]);
	if (!has_from || !has_to) {
		usage_simulate(stderr);
		return bwa_fail(BWA_EXIT_USAGE, "simulate-schedule: --from and --to are required");
	}
	if (to <= from)
		return bwa_fail(BWA_EXIT_USAGE, "simulate-schedule: --to must be later than --from");
	if (!dir && !(policy_file && dry_run))
		return bwa_fail(BWA_EXIT_USAGE,
		                "simulate-schedule: --state DIR is required (or --policy FILE with --dry-run)");
	if (!dir && (ca || server))
		return bwa_fail(BWA_EXIT_USAGE, "simulate-schedule: --ca and --server need --state DIR");

	if (policy_file) {
		if (bwa_policy_read_file(policy_file, &doc_pol, &err) != BW_OK)
			return bwa_fail(err.code == BW_E_INVALID ? BWA_EXIT_FAIL : BWA_EXIT_USAGE,
			                "simulate-schedule: --policy: %s", err.message);
	}
	if (dir) {
		o.dir = dir;
		r.o = &o;
		if (dry_run) {
			if (bwa_state_load(dir, &r.st, &err) != BW_OK) {
				ret = bwa_fail(err.code == BW_E_NOTFOUND ? BWA_EXIT_USAGE : BWA_EXIT_FAIL, "%s",
				               err.message);
				goto out;
			}
		} else if ((ret = runner_open(&r, dir, ca, server, retries)) != BWA_EXIT_OK) {
			goto out;
		}
		if (!doc_pol) {
			if (bwa_policy_load(dir, &pol, &err) != BW_OK) {
				ret = bwa_fail(BWA_EXIT_FAIL, "simulate-schedule: %s", err.message);
				goto out;
			}
			if (!pol) {
				ret = bwa_fail(
				    BWA_EXIT_FAIL,
				    "simulate-schedule: %s: no policy applied yet (bulwark-agent run fetches it)", dir);
				goto out;
			}
			doc_pol = json_incref(json_object_get(pol, "policy"));
			if (json_is_string(json_object_get(pol, "version")))
				version = bwa_xstrdup(json_string_value(json_object_get(pol, "version")));
		}
	}
	if (bwa_schedule_from_policy(doc_pol, &sched, &err) != BW_OK) {
		ret = bwa_fail(BWA_EXIT_FAIL, "simulate-schedule: the policy: %s", err.message);
		goto out;
	}
	bwa_schedule_describe(&sched, desc, sizeof desc);
	bwa_rfc3339(from, a);
	bwa_rfc3339(to, b);
	events = json_array();
	n = schedule_events(dir ? &r : NULL, &sched, from, to - 1, version, events, MAX_SCANS_AT_ONCE);
	bwa_say("%zu scheduled scan%s from %s to %s (scheduled scan: %s)", n, n == 1 ? "" : "s", a, b, desc);
	if (dry_run || n == 0)
		goto out;
	queue_events(&r, events);
	if (save(&r) != 0 || post_batches(&r) != 0)
		ret = r.fatal ? r.fatal : BWA_EXIT_FAIL;
	else if (r.refused)
		ret = BWA_EXIT_FAIL;
out:
	json_decref(events);
	json_decref(doc_pol);
	json_decref(pol);
	free(version);
	if (r.st.doc || r.server)
		runner_close(&r);
	return ret;
}
