/* plugins/compliance_lua/plugin.c: the compliance_lua plugin: evaluates the Lua compliance rules (engine.h)
 * against devices when they enroll, change inventory or status, and periodically over the whole fleet;
 * keeps per-device results in the record store, emits compliance.changed / compliance.action events, queues
 * "command:<type>" actions, serves the rules and results under /api/v1/plugins/compliance_lua/, and offers
 * the "rules" capability (bulwark/rules.h).
 *
 * Threads: evaluation runs on the host's work queue, never on the loop. The loop reads the device and builds
 * the engine's device view, then submits a job; the job's `work` takes an engine (one lua_State) from a small
 * pool shared by the workers, reloading it when the rule set changed, and evaluates; `done` (loop) stores the
 * results, emits events and runs actions. At most MAX_INFLIGHT jobs run at once; the other devices wait in a
 * FIFO that holds each device id once (and a device is never evaluated by two jobs at once). */
#include "engine.h"

#include <bulwark/plugin.h>
#include <bulwark/rules.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SWEEP_PAGE     500
#define SWEEP_TICK_MS  100
#define MAX_DIR_FILES  1000
#define NAME_MAX_LEN   100
#define RESULTS_PAGE   100
#define RULES_LIST_MAX 1000
#define MAX_INFLIGHT   8      /* jobs on the work queue at once (2 x the default 4 workers) */
#define QUEUE_MAX      100000 /* device ids waiting; beyond this an event is dropped (the sweep catches up) */
#define QUEUE_BUCKETS  4096
#define DEVICE_ID_MAX  64

/* The sources of one rule set, in load order. Immutable once built; reference counted on the loop thread
 * only (jobs take a reference at submit and drop it in `done`), so workers read it without a lock. */
struct rule_src {
	char *name;
	char *text;
	size_t len;
};

struct ruleset {
	int refs;
	uint64_t gen; /* changes with every rule set: pooled engines built from another one are reloaded */
	size_t n;
	struct rule_src *v;
};

/* A pooled engine: one lua_State, used by one worker at a time. */
struct pooled {
	bw_rules_engine *eng; /* NULL when its last load failed */
	uint64_t gen;
	struct pooled *next;
};

/* What jobs share with the plugin. It outlives the plugin instance when fini comes while jobs are still on the
 * work queue (the host runs their `done` after fini): `refs` counts the plugin and every job (loop thread
 * only); `closed` tells a late `done` that the instance is gone. */
struct shared {
	pthread_mutex_t mu; /* guards `idle` */
	struct pooled *idle;
	struct bw_rules_limits lim;
	int refs;
	bool closed;
	struct cl *c;
};

struct job {
	struct shared *sh;
	struct ruleset *rs;
	char id[DEVICE_ID_MAX];
	json_t *view; /* the device view: a deep copy, only this job touches it */
	json_t *out;  /* from work: [{"id", "verdict", "message", "actions"}], NULL on failure */
	char error[600];
	bool again; /* the device changed while this job ran: evaluate it again */
};

struct qnode {
	struct qnode *next, *hnext;
	char id[DEVICE_ID_MAX];
};

/* Device ids waiting for a job: a FIFO with a hash set, so that a device is queued once. */
struct devq {
	struct qnode *head, *tail;
	struct qnode *buckets[QUEUE_BUCKETS];
	size_t len;
};

struct rule_file {
	char *name; /* base name, e.g. "usb.lua": the engine's chunk name (Lua cuts long chunk names) */
	char *path;
	char *text;
	size_t len;
};

struct cl {
	const struct bw_host_api *host;
	bw_plugin_ctx *ctx;
	/* settings */
	char *rules_dir;
	int64_t interval_ms;
	int64_t instruction_budget;
	int64_t memory_limit;
	/* state */
	struct bw_rules_limits lim;
	bw_rules_engine *eng; /* the current rule set on the loop: for listing and validation, not evaluation */
	struct ruleset *rs;   /* the current rule set's sources, for the workers' engines */
	uint64_t gen;
	struct shared *sh;
	struct devq q;
	struct job *inflight[MAX_INFLIGHT];
	size_t ninflight;
	bool stopping;
	struct rule_file *files; /* from rules_dir, in name order */
	size_t nfiles;
	bw_timer *interval_timer;
	bw_timer *tick_timer; /* one-shot; NULL once fired */
	bool sweeping;
	char sweep_after[DEVICE_ID_MAX];
	bw_metric *evaluations;
	bw_metric *changes;
	bw_metric *queued;
};

static const struct bw_config_field cl_fields[] = {
    {BW_FIELD_PATH, "rules_dir", NULL, offsetof(struct cl, rules_dir),
     "Directory of *.lua rule files loaded at start, in name order (none by default).", 0, 0, 0},
    {BW_FIELD_DURATION, "interval", "\"1h\"", offsetof(struct cl, interval_ms),
     "How often every device is evaluated again.", 0, 1000, 7 * 86400000LL},
    {BW_FIELD_INT, "instruction_budget", "100000", offsetof(struct cl, instruction_budget),
     "Lua instructions one rule may use for one device.", 0, 1000, 100000000},
    {BW_FIELD_INT, "memory_limit", "33554432", offsetof(struct cl, memory_limit),
     "Bytes the Lua state of all loaded rules may hold.", 0, 1048576, 1073741824},
    BW_FIELD_END};

/* ---- rule sets */

static void files_free(struct cl *c)
{
	for (size_t i = 0; i < c->nfiles; i++) {
		free(c->files[i].name);
		free(c->files[i].path);
		free(c->files[i].text);
	}
	free(c->files);
	c->files = NULL;
	c->nfiles = 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_lua_name(const char *n)
{
	size_t l = strlen(n);
	return n[0] != '.' && l > 4 && strcmp(n + l - 4, ".lua") == 0;
}

static int read_all(const char *path, char **out, size_t *len, bw_error *err)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return bw_error_set(err, BW_E_IO, "%s: cannot open the rule file: %s", path, strerror(errno));
	char *buf = malloc(BW_RULES_MAX_FILE + 1);
	if (!buf) {
		fclose(f);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	size_t n = fread(buf, 1, BW_RULES_MAX_FILE, f);
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		free(buf);
		return bw_error_set(err, BW_E_IO, "%s: cannot read the rule file", path);
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return BW_OK;
}

/* Reads every *.lua of rules_dir into memory, so that rebuilding the engine after an API change uses the same
 * files as the start did. */
static int files_read(struct cl *c, bw_error *err)
{
	DIR *d = opendir(c->rules_dir);
	if (!d)
		return bw_error_set(err, BW_E_CONFIG, "rules_dir %s: %s", c->rules_dir, strerror(errno));
	char **names = NULL;
	size_t n = 0;
	int rc = BW_OK;
	struct dirent *de;
	while (rc == BW_OK && (de = readdir(d)) != NULL) {
		if (!is_lua_name(de->d_name))
			continue;
		char **nn = n < MAX_DIR_FILES ? realloc(names, (n + 1) * sizeof *names) : NULL;
		if (!nn) {
			rc = bw_error_set(err, BW_E_LIMIT, "rules_dir %s: more than %d rule files or out of memory",
			                  c->rules_dir, MAX_DIR_FILES);
			break;
		}
		names = nn;
		if (!(names[n] = strdup(de->d_name)))
			rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		else
			n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof *names, cmp_str);
	if (rc == BW_OK && n && !(c->files = calloc(n, sizeof *c->files)))
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (rc == BW_OK) {
			struct rule_file *f = &c->files[c->nfiles];
			size_t pl = strlen(c->rules_dir) + strlen(names[i]) + 2;
			f->path = malloc(pl);
			if (!f->path) {
				rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
			} else {
				snprintf(f->path, pl, "%s/%s", c->rules_dir, names[i]);
				f->name = names[i];
				names[i] = NULL;
				c->nfiles++;
				rc = read_all(f->path, &f->text, &f->len, err);
			}
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

static const struct rule_file *dir_file(const struct cl *c, const char *name)
{
	for (size_t i = 0; i < c->nfiles; i++)
		if (strcmp(c->files[i].name, name) == 0)
			return &c->files[i];
	return NULL;
}

static void ruleset_unref(struct ruleset *rs)
{
	if (!rs || --rs->refs > 0)
		return;
	for (size_t i = 0; i < rs->n; i++) {
		free(rs->v[i].name);
		free(rs->v[i].text);
	}
	free(rs->v);
	free(rs);
}

static int ruleset_add(struct ruleset *rs, size_t *cap, const char *name, const char *text, size_t len, bw_error *err)
{
	if (rs->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct rule_src *nv = realloc(rs->v, nc * sizeof *nv);
		if (!nv)
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		rs->v = nv;
		*cap = nc;
	}
	struct rule_src *s = &rs->v[rs->n];
	s->name = strdup(name);
	s->text = malloc(len + 1);
	if (!s->name || !s->text) {
		free(s->name);
		free(s->text);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	memcpy(s->text, text, len);
	s->text[len] = '\0';
	s->len = len;
	rs->n++;
	return BW_OK;
}

/* The sources of a rule set: the rules_dir files, the enabled stored rules, and optionally `add` (a new or
 * replaced stored file) and a changed enabled flag for `toggle`. Loop thread (reads the record store). */
static struct ruleset *ruleset_collect(struct cl *c, const char *add_name, const char *add_src, const char *toggle,
                                       bool toggle_on, bw_error *err)
{
	struct ruleset *rs = calloc(1, sizeof *rs);
	if (!rs) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	rs->refs = 1;
	size_t cap = 0;
	int rc = BW_OK;
	for (size_t i = 0; i < c->nfiles && rc == BW_OK; i++)
		rc = ruleset_add(rs, &cap, c->files[i].name, c->files[i].text, c->files[i].len, err);
	char after[NAME_MAX_LEN + 1] = "";
	while (rc == BW_OK) {
		json_t *list = NULL;
		rc = c->host->record_list(c->ctx, "rules", after[0] ? after : NULL, 100, &list, err);
		if (rc != BW_OK)
			break;
		size_t i;
		json_t *it;
		json_array_foreach(list, i, it)
		{
			const char *key = json_string_value(json_object_get(it, "key"));
			json_t *v = json_object_get(it, "value");
			const char *src = json_string_value(json_object_get(v, "source"));
			snprintf(after, sizeof after, "%s", key ? key : "");
			if (!key || !src || (add_name && strcmp(key, add_name) == 0))
				continue;
			bool on = json_is_true(json_object_get(v, "enabled"));
			if (toggle && strcmp(key, toggle) == 0)
				on = toggle_on;
			if (on && (rc = ruleset_add(rs, &cap, key, src, strlen(src), err)) != BW_OK)
				break;
		}
		size_t got = json_array_size(list);
		json_decref(list);
		if (got < 100)
			break;
	}
	if (rc == BW_OK && add_name)
		rc = ruleset_add(rs, &cap, add_name, add_src, strlen(add_src), err);
	if (rc != BW_OK) {
		ruleset_unref(rs);
		return NULL;
	}
	rs->gen = ++c->gen;
	return rs;
}

/* An engine loaded with a rule set. Any thread: touches nothing but `rs` (immutable) and the new engine. */
static bw_rules_engine *engine_load(const struct ruleset *rs, const struct bw_rules_limits *lim, bw_error *err)
{
	bw_rules_engine *e = bw_rules_engine_new(lim, err);
	if (!e)
		return NULL;
	for (size_t i = 0; i < rs->n; i++)
		if (bw_rules_load_string(e, rs->v[i].name, rs->v[i].text, rs->v[i].len, err) != BW_OK) {
			bw_rules_engine_free(e);
			return NULL;
		}
	return e;
}

/* A rule set and its loop-side engine (which also validates it: duplicate ids, errors). */
static bw_rules_engine *engine_build(struct cl *c, const char *add_name, const char *add_src, const char *toggle,
                                     bool toggle_on, struct ruleset **rs_out, bw_error *err)
{
	struct ruleset *rs = ruleset_collect(c, add_name, add_src, toggle, toggle_on, err);
	if (!rs)
		return NULL;
	bw_rules_engine *e = engine_load(rs, &c->lim, err);
	if (!e) {
		ruleset_unref(rs);
		return NULL;
	}
	*rs_out = rs;
	return e;
}

/* ---- the engine pool (shared with the workers) */

static struct shared *shared_new(struct cl *c)
{
	struct shared *sh = calloc(1, sizeof *sh);
	if (!sh || pthread_mutex_init(&sh->mu, NULL) != 0) {
		free(sh);
		return NULL;
	}
	sh->lim = c->lim;
	sh->refs = 1;
	sh->c = c;
	return sh;
}

/* Loop thread. The last reference goes when no job is left, so no worker holds an engine any more. */
static void shared_unref(struct shared *sh)
{
	if (!sh || --sh->refs > 0)
		return;
	while (sh->idle) {
		struct pooled *p = sh->idle;
		sh->idle = p->next;
		bw_rules_engine_free(p->eng);
		free(p);
	}
	pthread_mutex_destroy(&sh->mu);
	free(sh);
}

/* Worker thread: evaluates into job->out (the engine's results copied, since the engine goes back to the pool
 * and may be reloaded before `done` runs). */
static void evaluate_into(bw_rules_engine *e, struct job *j)
{
	size_t n = bw_rules_count(e);
	struct bw_rule_result *res = calloc(n ? n : 1, sizeof *res);
	if (!res) {
		snprintf(j->error, sizeof j->error, "out of memory");
		return;
	}
	if (bw_rules_evaluate(e, j->view, res, n) != BW_OK) {
		snprintf(j->error, sizeof j->error, "the device view is not a JSON object");
		free(res);
		return;
	}
	json_t *out = json_array();
	for (size_t i = 0; out && i < n; i++) {
		const struct bw_rule_info *r = res[i].rule;
		json_t *acts = json_array();
		for (size_t k = 0; acts && k < r->nactions; k++)
			json_array_append_new(acts, json_string(r->actions[k]));
		json_t *o = json_pack("{s:s, s:s, s:s, s:o*}", "id", r->id, "verdict",
		                      bw_rule_verdict_name(res[i].verdict), "message", res[i].message, "actions", acts);
		if (!o || json_array_append_new(out, o) != 0) {
			json_decref(out);
			out = NULL;
		}
	}
	free(res);
	if (!out)
		snprintf(j->error, sizeof j->error, "out of memory");
	j->out = out;
}

/* Worker thread: take an engine (or make one), reload it if the rule set changed, evaluate, give it back. */
static void job_work(void *arg)
{
	struct job *j = arg;
	struct shared *sh = j->sh;
	pthread_mutex_lock(&sh->mu);
	struct pooled *p = sh->idle;
	if (p)
		sh->idle = p->next;
	pthread_mutex_unlock(&sh->mu);
	if (!p && !(p = calloc(1, sizeof *p))) {
		snprintf(j->error, sizeof j->error, "out of memory");
		return;
	}
	if (!p->eng || p->gen != j->rs->gen) {
		bw_error err = {0};
		bw_rules_engine_free(p->eng);
		p->eng = engine_load(j->rs, &sh->lim, &err);
		p->gen = j->rs->gen;
		if (!p->eng)
			snprintf(j->error, sizeof j->error, "cannot load the rules: %s", err.message);
	}
	if (p->eng)
		evaluate_into(p->eng, j);
	pthread_mutex_lock(&sh->mu);
	p->next = sh->idle;
	sh->idle = p;
	pthread_mutex_unlock(&sh->mu);
}

/* ---- evaluation */

static void copy_field(json_t *dst, const char *dkey, json_t *src, const char *skey)
{
	json_t *v = json_object_get(src, skey);
	if (v && !json_is_null(v))
		json_object_set(dst, dkey, v);
}

static void copy_bool(json_t *dst, const char *dkey, json_t *src, const char *skey)
{
	json_t *v = json_object_get(src, skey);
	if (json_is_boolean(v))
		json_object_set(dst, dkey, v);
}

/* The engine's device view (docs/rules.md) from the device record device_get returns (the inventory as the
 * agent sends it: settings.encryption, settings.screen_lock "pin"/"none", iOS settings.passcode, root.*). */
static json_t *device_view(json_t *dev)
{
	json_t *v = json_object();
	static const char *const top[] = {"platform", "os_version", "model", "manufacturer",
	                                  "serial",   "group",      "owner", "last_seen"};
	for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
		copy_field(v, top[i], dev, top[i]);
	json_t *inv = json_object_get(dev, "inventory");
	json_t *set = json_object_get(inv, "settings"), *root = json_object_get(inv, "root");
	copy_bool(v, "usb_debugging", set, "usb_debugging");
	copy_bool(v, "developer_options", set, "developer_options");
	copy_bool(v, "unknown_sources", set, "unknown_sources");
	copy_bool(v, "encrypted", set, "encryption");
	copy_bool(v, "encrypted", set, "encrypted");
	json_t *sl = json_object_get(set, "screen_lock");
	if (json_is_boolean(sl))
		json_object_set(v, "screen_lock", sl);
	else if (json_is_string(sl))
		json_object_set_new(
		    v, "screen_lock",
		    json_boolean(json_string_length(sl) > 0 && strcmp(json_string_value(sl), "none") != 0));
	else if (json_is_boolean(json_object_get(set, "passcode")))
		json_object_set(v, "screen_lock", json_object_get(set, "passcode"));
	copy_bool(v, "rooted", root, "rooted");
	if (json_is_true(json_object_get(root, "su_binary")))
		json_object_set_new(v, "rooted", json_true());
	copy_bool(v, "jailbroken", root, "jailbroken");
	json_t *apps = json_array(), *a;
	size_t i;
	json_array_foreach(json_object_get(inv, "apps"), i, a)
	{
		if (!json_is_string(json_object_get(a, "id")))
			continue;
		json_t *o = json_object();
		copy_field(o, "id", a, "id");
		copy_field(o, "version", a, "version");
		copy_field(o, "signer_sha256", a, "signer_sha256");
		json_array_append_new(apps, o);
	}
	json_object_set_new(v, "apps", apps);
	json_t *wifi = json_object_get(inv, "wifi");
	if (json_is_object(wifi)) {
		json_t *w = json_object();
		copy_field(w, "ssid", wifi, "ssid");
		copy_field(w, "bssid", wifi, "bssid");
		copy_field(w, "security", wifi, "security");
		json_object_set_new(v, "wifi", w);
	}
	/* The effective policy of the device's group (admin form: secrets only as "password_set"). */
	json_t *policy = json_object_get(dev, "policy");
	if (json_is_object(policy))
		json_object_set(v, "policy", policy);
	/* No host service reports findings yet (scanner plugins will). */
	json_object_set_new(v, "findings", json_array());
	return v;
}

static void emit(struct cl *c, const char *topic, json_t *payload)
{
	bw_error err = {0};
	if (c->host->event_emit(c->ctx, topic, payload, &err) != BW_OK)
		c->host->log(c->ctx, BW_LOG_WARN, "cannot emit %s: %s", topic, err.message);
}

/* Runs a failing rule's actions: each becomes a compliance.action event; command:<type> is also queued. */
static void run_actions(struct cl *c, const char *dev_id, const char *rule_id, json_t *actions)
{
	size_t i;
	json_t *a;
	json_array_foreach(actions, i, a)
	{
		const char *act = json_string_value(a);
		if (!act)
			continue;
		emit(c, "compliance.action",
		     json_pack("{s:s, s:s, s:s}", "device_id", dev_id, "rule_id", rule_id, "action", act));
		if (strncmp(act, "command:", 8) == 0) {
			char id[37];
			bw_error err = {0};
			if (c->host->command_queue(c->ctx, dev_id, act + 8, NULL, id, &err) != BW_OK)
				c->host->log(c->ctx, BW_LOG_WARN, "rule %s: cannot queue %s for %s: %s", rule_id,
				             act + 8, dev_id, err.message);
			else
				c->host->log(c->ctx, BW_LOG_INFO, "rule %s: queued %s (%s) for %s", rule_id, act + 8,
				             id, dev_id);
		}
	}
}

/* Loop thread: stores one device's results (`out` from a job), emits the changes, runs the actions. */
static void store_results(struct cl *c, const char *dev_id, json_t *out)
{
	bw_error err = {0};
	c->host->metric_add(c->evaluations, NULL, 1);
	json_t *prev = NULL;
	c->host->record_get(c->ctx, "results", dev_id, &prev, NULL);
	json_t *prules = json_object_get(prev, "rules");
	int64_t now = c->host->clock_now_ms() / 1000;
	bool compliant = true;
	size_t i;
	json_t *r;
	json_array_foreach(out, i, r)
	{
		const char *v = json_string_value(json_object_get(r, "verdict"));
		if (v && strcmp(v, "fail") == 0)
			compliant = false;
	}
	json_t *rules = json_object();
	json_array_foreach(out, i, r)
	{
		const char *rid = json_string_value(json_object_get(r, "id"));
		const char *to = json_string_value(json_object_get(r, "verdict"));
		const char *msg = json_string_value(json_object_get(r, "message"));
		if (!rid || !to)
			continue;
		json_t *p = json_object_get(prules, rid);
		const char *from = json_string_value(json_object_get(p, "verdict"));
		json_t *since = json_object_get(p, "since");
		bool same = from && strcmp(from, to) == 0;
		json_object_set_new(
		    rules, rid,
		    json_pack("{s:s, s:s, s:I, s:I}", "verdict", to, "message", msg ? msg : "", "since",
		              (json_int_t)(same && json_is_integer(since) ? json_integer_value(since) : now),
		              "evaluated_at", (json_int_t)now));
		bool quiet = strcmp(to, "pass") == 0 || strcmp(to, "not_applicable") == 0;
		/* A first evaluation that passes is not a change worth an event. */
		if (same || (!from && quiet))
			continue;
		c->host->metric_add(c->changes, to, 1);
		emit(c, "compliance.changed",
		     json_pack("{s:s, s:s, s:s?, s:s, s:b}", "device_id", dev_id, "rule_id", rid, "from", from, "to",
		               to, "compliant", compliant));
		if (strcmp(to, "fail") == 0)
			run_actions(c, dev_id, rid, json_object_get(r, "actions"));
	}
	json_decref(prev);
	json_t *val =
	    json_pack("{s:b, s:o, s:I}", "compliant", compliant, "rules", rules, "evaluated_at", (json_int_t)now);
	if (c->host->record_put(c->ctx, "results", dev_id, val, &err) != BW_OK)
		c->host->log(c->ctx, BW_LOG_WARN, "cannot store the results of %s: %s", dev_id, err.message);
	json_decref(val);
}

/* ---- the device queue (loop thread) */

static size_t q_hash(const char *s)
{
	size_t h = 2166136261u;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h % QUEUE_BUCKETS;
}

static bool q_has(const struct devq *q, const char *id)
{
	for (const struct qnode *n = q->buckets[q_hash(id)]; n; n = n->hnext)
		if (strcmp(n->id, id) == 0)
			return true;
	return false;
}

/* Pops the oldest id into out; false when empty. */
static bool q_pop(struct devq *q, char out[DEVICE_ID_MAX])
{
	struct qnode *n = q->head;
	if (!n)
		return false;
	q->head = n->next;
	if (!q->head)
		q->tail = NULL;
	for (struct qnode **pp = &q->buckets[q_hash(n->id)]; *pp; pp = &(*pp)->hnext)
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	q->len--;
	memcpy(out, n->id, DEVICE_ID_MAX);
	free(n);
	return true;
}

static void q_clear(struct devq *q)
{
	char id[DEVICE_ID_MAX];
	while (q_pop(q, id)) {
	}
}

static void publish_queue_len(struct cl *c)
{
	if (c->queued)
		c->host->metric_set(c->queued, NULL, (double)c->q.len);
}

static void job_done(void *arg);

static void job_free(struct job *j)
{
	json_decref(j->view);
	json_decref(j->out);
	ruleset_unref(j->rs);
	shared_unref(j->sh);
	free(j);
}

/* Reads the device and submits its job. Unknown, unregistered and wiped devices are skipped. */
static void dispatch(struct cl *c, const char *dev_id)
{
	json_t *dev = NULL;
	bw_error err = {0};
	if (c->host->device_get(c->ctx, dev_id, &dev, &err) != BW_OK) {
		if (err.code != BW_E_NOTFOUND)
			c->host->log(c->ctx, BW_LOG_WARN, "cannot read device %s: %s", dev_id, err.message);
		return;
	}
	const char *st = json_string_value(json_object_get(dev, "status"));
	if (st && (strcmp(st, "unregistered") == 0 || strcmp(st, "wiped") == 0)) {
		json_decref(dev);
		return;
	}
	json_t *view = device_view(dev);
	json_decref(dev);
	/* A deep copy: the view shares no value with the host's JSON, so the worker is its only user. */
	json_t *copy = json_deep_copy(view);
	json_decref(view);
	struct job *j = copy ? calloc(1, sizeof *j) : NULL;
	if (!j) {
		json_decref(copy);
		c->host->log(c->ctx, BW_LOG_WARN, "cannot evaluate %s: out of memory", dev_id);
		return;
	}
	snprintf(j->id, sizeof j->id, "%s", dev_id);
	j->view = copy;
	j->sh = c->sh;
	j->rs = c->rs;
	c->sh->refs++;
	c->rs->refs++;
	if (c->host->work_submit(c->ctx, job_work, job_done, j, &err) != BW_OK) {
		c->host->log(c->ctx, BW_LOG_WARN, "cannot evaluate %s: %s", dev_id, err.message);
		job_free(j);
		return;
	}
	c->inflight[c->ninflight++] = j;
}

/* Starts jobs for queued devices while fewer than MAX_INFLIGHT run. */
static void pump(struct cl *c)
{
	char id[DEVICE_ID_MAX];
	while (!c->stopping && c->ninflight < MAX_INFLIGHT && q_pop(&c->q, id))
		dispatch(c, id);
	publish_queue_len(c);
}

/* Queues a device for evaluation, once: a device already queued keeps its place; a device being evaluated is
 * queued again when its job is done (its data may have changed since the job read it). */
static void enqueue(struct cl *c, const char *dev_id)
{
	if (c->stopping || !dev_id)
		return;
	size_t l = strlen(dev_id);
	if (l == 0 || l >= DEVICE_ID_MAX) {
		c->host->log(c->ctx, BW_LOG_WARN, "device id of %zu bytes ignored", l);
		return;
	}
	for (size_t i = 0; i < c->ninflight; i++)
		if (strcmp(c->inflight[i]->id, dev_id) == 0) {
			c->inflight[i]->again = true;
			return;
		}
	if (q_has(&c->q, dev_id))
		return;
	struct qnode *n = c->q.len < QUEUE_MAX ? calloc(1, sizeof *n) : NULL;
	if (!n) {
		c->host->log(c->ctx, BW_LOG_WARN, "evaluation queue full (%zu devices): %s left to the next sweep",
		             c->q.len, dev_id);
		return;
	}
	memcpy(n->id, dev_id, l + 1);
	size_t b = q_hash(dev_id);
	n->hnext = c->q.buckets[b];
	c->q.buckets[b] = n;
	if (c->q.tail)
		c->q.tail->next = n;
	else
		c->q.head = n;
	c->q.tail = n;
	c->q.len++;
}

/* Loop thread: the job's results are stored, unless the rule set changed meanwhile (then the device is
 * evaluated again with the new one). After fini (`closed`) only the job is freed. */
static void job_done(void *arg)
{
	struct job *j = arg;
	struct shared *sh = j->sh;
	struct cl *c = sh->closed ? NULL : sh->c;
	if (c) {
		for (size_t i = 0; i < c->ninflight; i++)
			if (c->inflight[i] == j) {
				c->inflight[i] = c->inflight[--c->ninflight];
				break;
			}
		if (j->rs->gen != c->rs->gen)
			j->again = true;
		else if (j->out)
			store_results(c, j->id, j->out);
		else
			c->host->log(c->ctx, BW_LOG_WARN, "cannot evaluate %s: %s", j->id, j->error);
		if (j->again)
			enqueue(c, j->id);
		pump(c);
	}
	job_free(j);
}

static void on_device_event(const char *topic, json_t *payload, void *arg)
{
	(void)topic;
	struct cl *c = arg;
	const char *id = json_string_value(json_object_get(payload, "device_id"));
	if (id) {
		enqueue(c, id);
		pump(c);
	}
}

/* ---- the fleet sweep: one page per tick into the queue, while the queue is short */

static void sweep_tick(void *arg)
{
	struct cl *c = arg;
	c->tick_timer = NULL; /* one-shot: freed by the host after this call */
	if (c->stopping) {
		c->sweeping = false;
		return;
	}
	if (c->q.len < SWEEP_PAGE) {
		json_t *ids = NULL;
		bw_error err = {0};
		if (c->host->device_list(c->ctx, c->sweep_after[0] ? c->sweep_after : NULL, SWEEP_PAGE, &ids, &err) !=
		    BW_OK) {
			c->host->log(c->ctx, BW_LOG_WARN, "periodic evaluation stopped: %s", err.message);
			c->sweeping = false;
			return;
		}
		size_t i;
		json_t *id;
		json_array_foreach(ids, i, id)
		{
			enqueue(c, json_string_value(id));
			snprintf(c->sweep_after, sizeof c->sweep_after, "%s", json_string_value(id));
		}
		size_t got = json_array_size(ids);
		json_decref(ids);
		pump(c);
		if (got < SWEEP_PAGE) {
			c->sweeping = false;
			return;
		}
	}
	/* More pages, or a queue still long: look again at the next tick. */
	c->tick_timer = c->host->timer_add(c->ctx, SWEEP_TICK_MS, 0, sweep_tick, c);
	if (!c->tick_timer)
		c->sweeping = false;
}

/* Starts a sweep. `restart`: a sweep already running starts again from the first device (the rule set
 * changed, so the devices it already passed must be evaluated again). */
static void sweep_begin(struct cl *c, bool restart)
{
	if (c->stopping)
		return;
	if (c->sweeping) {
		if (restart)
			c->sweep_after[0] = '\0';
		return;
	}
	c->sweeping = true;
	c->sweep_after[0] = '\0';
	c->tick_timer = c->host->timer_add(c->ctx, 0, 0, sweep_tick, c);
	if (!c->tick_timer)
		c->sweeping = false;
}

static void sweep_start(void *arg)
{
	sweep_begin(arg, false);
}

/* ---- routes */

static bool valid_name(const char *n)
{
	size_t l = strlen(n);
	if (l < 5 || l > NAME_MAX_LEN || !is_lua_name(n))
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '-' || *p == '.'))
			return false;
	return true;
}

/* The path segment after `prefix` up to the next '/' (or the end), copied into out. */
static bool path_segment(struct cl *c, bw_http_req *req, const char *prefix, char *out, size_t size)
{
	const char *p = strstr(c->host->req_path(req), prefix);
	if (!p)
		return false;
	p += strlen(prefix);
	size_t l = strcspn(p, "/");
	if (l == 0 || l >= size)
		return false;
	memcpy(out, p, l);
	out[l] = '\0';
	return true;
}

static json_t *rule_json(const struct bw_rule_info *r, const char *file, bool enabled)
{
	json_t *pl = json_array();
	if (!r->platforms || (r->platforms & BW_RULE_ANDROID))
		json_array_append_new(pl, json_string("android"));
	if (!r->platforms || (r->platforms & BW_RULE_IOS))
		json_array_append_new(pl, json_string("ios"));
	json_t *acts = json_array();
	for (size_t i = 0; i < r->nactions; i++)
		json_array_append_new(acts, json_string(r->actions[i]));
	return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:b}", "id", r->id, "title", r->title, "description",
	                 r->description ? r->description : "", "severity", r->severity, "platforms", pl, "actions",
	                 acts, "source", file, "enabled", enabled);
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');
	return s ? s + 1 : p;
}

/* GET rules: the loaded rules, then the rules of disabled stored files (read through a scratch engine). */
static void get_rules(bw_http_req *req, void *arg)
{
	struct cl *c = arg;
	json_t *out = json_array();
	for (size_t i = 0; i < bw_rules_count(c->eng); i++) {
		const struct bw_rule_info *r = bw_rules_info(c->eng, i);
		json_array_append_new(out, rule_json(r, base_name(r->source), true));
	}
	json_t *list = NULL;
	bw_error err = {0};
	if (c->host->record_list(c->ctx, "rules", NULL, RULES_LIST_MAX, &list, &err) != BW_OK) {
		json_decref(out);
		c->host->respond_error(req, 500, "internal", err.message);
		return;
	}
	size_t i;
	json_t *it;
	json_array_foreach(list, i, it)
	{
		json_t *v = json_object_get(it, "value");
		const char *key = json_string_value(json_object_get(it, "key"));
		const char *src = json_string_value(json_object_get(v, "source"));
		if (!key || !src || json_is_true(json_object_get(v, "enabled")))
			continue;
		bw_rules_engine *e = bw_rules_engine_new(&c->lim, NULL);
		if (e && bw_rules_load_string(e, key, src, strlen(src), NULL) == BW_OK)
			for (size_t k = 0; k < bw_rules_count(e); k++)
				json_array_append_new(out, rule_json(bw_rules_info(e, k), key, false));
		bw_rules_engine_free(e);
	}
	json_decref(list);
	c->host->respond_json(req, 200, json_pack("{s:o}", "rules", out));
}

/* The workers' engines reload from `rs` at their next job (its generation differs). */
static void swap_engine(struct cl *c, bw_rules_engine *e, struct ruleset *rs)
{
	bw_rules_engine_free(c->eng);
	c->eng = e;
	ruleset_unref(c->rs);
	c->rs = rs;
	sweep_begin(c, true); /* results follow the new rule set */
}

/* POST rules {"name": "file.lua", "source": "..."}: validated alone, then with every other rule (duplicate ids),
 * before it is stored; stored rules are enabled. */
static void post_rules(bw_http_req *req, void *arg)
{
	struct cl *c = arg;
	json_t *body;
	bw_error err = {0};
	if (c->host->req_json(req, &body, &err) != BW_OK) {
		c->host->respond_error(req, 400, "invalid_json", err.message);
		return;
	}
	const char *name = json_string_value(json_object_get(body, "name"));
	const char *src = json_string_value(json_object_get(body, "source"));
	if (!name || !valid_name(name) || !src) {
		json_decref(body);
		c->host->respond_error(
		    req, 400, "bad_request",
		    "'name' must be a file name [A-Za-z0-9_.-] ending in .lua (at most 100 bytes) and "
		    "'source' a string");
		return;
	}
	if (dir_file(c, name)) {
		json_decref(body);
		c->host->respond_error(req, 409, "conflict", "a rule file of that name is in rules_dir");
		return;
	}
	bw_rules_engine *scratch = bw_rules_engine_new(&c->lim, &err);
	if (!scratch || bw_rules_load_string(scratch, name, src, strlen(src), &err) != BW_OK) {
		bw_rules_engine_free(scratch);
		json_decref(body);
		c->host->respond_error(req, 400, "invalid_rule", err.message);
		return;
	}
	bw_rules_engine_free(scratch);
	struct ruleset *rs = NULL;
	bw_rules_engine *e = engine_build(c, name, src, NULL, false, &rs, &err);
	if (!e) {
		json_decref(body);
		c->host->respond_error(req, 400, "invalid_rule", err.message);
		return;
	}
	json_t *val = json_pack("{s:s, s:b}", "source", src, "enabled", 1);
	if (c->host->record_put(c->ctx, "rules", name, val, &err) != BW_OK) {
		json_decref(val);
		json_decref(body);
		bw_rules_engine_free(e);
		ruleset_unref(rs);
		c->host->respond_error(req, 500, "internal", err.message);
		return;
	}
	json_decref(val);
	swap_engine(c, e, rs);
	c->host->log(c->ctx, BW_LOG_INFO, "rule file %s saved by %s", name, c->host->req_principal(req));
	c->host->respond_json(req, 201, json_pack("{s:s, s:b}", "name", name, "enabled", 1));
	json_decref(body);
}

/* PUT rules/{name}/enabled {"enabled": bool}: only for rule files stored through the API. */
static void put_enabled(bw_http_req *req, void *arg)
{
	struct cl *c = arg;
	char name[NAME_MAX_LEN + 1];
	if (!path_segment(c, req, "/rules/", name, sizeof name) || !valid_name(name)) {
		c->host->respond_error(req, 404, "not_found", "no such rule file");
		return;
	}
	json_t *body, *stored = NULL;
	bw_error err = {0};
	if (c->host->req_json(req, &body, &err) != BW_OK) {
		c->host->respond_error(req, 400, "invalid_json", err.message);
		return;
	}
	json_t *en = json_object_get(body, "enabled");
	if (!json_is_boolean(en)) {
		json_decref(body);
		c->host->respond_error(req, 400, "bad_request", "'enabled' must be true or false");
		return;
	}
	bool on = json_is_true(en);
	json_decref(body);
	if (c->host->record_get(c->ctx, "rules", name, &stored, &err) != BW_OK) {
		c->host->respond_error(req, 404, "not_found",
		                       dir_file(c, name) ? "rule files from rules_dir are always enabled"
		                                         : "no rule file of that name was stored through the API");
		return;
	}
	struct ruleset *rs = NULL;
	bw_rules_engine *e = engine_build(c, NULL, NULL, name, on, &rs, &err);
	if (!e) {
		json_decref(stored);
		c->host->respond_error(req, 400, "invalid_rule", err.message);
		return;
	}
	json_object_set_new(stored, "enabled", json_boolean(on));
	if (c->host->record_put(c->ctx, "rules", name, stored, &err) != BW_OK) {
		json_decref(stored);
		bw_rules_engine_free(e);
		ruleset_unref(rs);
		c->host->respond_error(req, 500, "internal", err.message);
		return;
	}
	json_decref(stored);
	swap_engine(c, e, rs);
	c->host->respond_json(req, 200, json_pack("{s:s, s:b}", "name", name, "enabled", on));
}

/* GET results/{device_id} */
static void get_device_results(bw_http_req *req, void *arg)
{
	struct cl *c = arg;
	char id[64];
	json_t *v = NULL;
	bw_error err = {0};
	if (!path_segment(c, req, "/results/", id, sizeof id) ||
	    c->host->record_get(c->ctx, "results", id, &v, &err) != BW_OK) {
		c->host->respond_error(req, 404, "not_found", "no results for that device");
		return;
	}
	json_object_set_new(v, "device_id", json_string(id));
	c->host->respond_json(req, 200, v);
}

/* GET results?rule=ID[&after=DEVICE_ID][&limit=N]: the devices failing the rule among one page of stored
 * results (limit, default 100, at most 1000); "next" is the cursor for the following page, null at the end. */
static void get_results(bw_http_req *req, void *arg)
{
	struct cl *c = arg;
	const char *rule = c->host->req_query(req, "rule");
	const char *after = c->host->req_query(req, "after");
	const char *lim = c->host->req_query(req, "limit");
	long limit = lim ? strtol(lim, NULL, 10) : RESULTS_PAGE;
	if (!rule || !*rule || limit < 1 || limit > 1000) {
		c->host->respond_error(req, 400, "bad_request", "'rule' is required and 'limit' must be 1 to 1000");
		return;
	}
	json_t *list = NULL;
	bw_error err = {0};
	if (c->host->record_list(c->ctx, "results", after && *after ? after : NULL, (size_t)limit, &list, &err) !=
	    BW_OK) {
		c->host->respond_error(req, 400, "bad_request", err.message);
		return;
	}
	json_t *devs = json_array(), *it;
	size_t i;
	const char *last = NULL;
	json_array_foreach(list, i, it)
	{
		last = json_string_value(json_object_get(it, "key"));
		json_t *r = json_object_get(json_object_get(json_object_get(it, "value"), "rules"), rule);
		const char *verdict = json_string_value(json_object_get(r, "verdict"));
		if (verdict && strcmp(verdict, "fail") == 0)
			json_array_append_new(devs, json_pack("{s:s, s:O, s:O}", "device_id", last, "message",
			                                      json_object_get(r, "message"), "since",
			                                      json_object_get(r, "since")));
	}
	json_t *next = json_array_size(list) == (size_t)limit && last ? json_string(last) : json_null();
	json_decref(list);
	c->host->respond_json(req, 200, json_pack("{s:s, s:o, s:o}", "rule", rule, "devices", devs, "next", next));
}

/* ---- the "rules" capability (loop thread) */

static int cap_evaluate(void *arg, const char *device_id, bw_error *err)
{
	struct cl *c = arg;
	if (c->stopping)
		return bw_error_set(err, BW_E_STATE, "compliance_lua is stopping");
	if (!device_id || !*device_id || strlen(device_id) >= DEVICE_ID_MAX)
		return bw_error_set(err, BW_E_NOTFOUND, "no such device");
	json_t *dev = NULL;
	int rc = c->host->device_get(c->ctx, device_id, &dev, err);
	json_decref(dev);
	if (rc != BW_OK)
		return rc;
	enqueue(c, device_id);
	pump(c);
	return BW_OK;
}

static int cap_results(void *arg, const char *device_id, json_t **out, bw_error *err)
{
	struct cl *c = arg;
	*out = NULL;
	if (!device_id || !*device_id || strlen(device_id) >= DEVICE_ID_MAX)
		return bw_error_set(err, BW_E_NOTFOUND, "no results for that device");
	int rc = c->host->record_get(c->ctx, "results", device_id, out, err);
	if (rc == BW_E_NOTFOUND)
		return bw_error_set(err, BW_E_NOTFOUND, "device %s was never evaluated", device_id);
	return rc;
}

static const struct bw_rules_ops cl_rules_ops = {
    .size = sizeof(struct bw_rules_ops),
    .evaluate = cap_evaluate,
    .results = cap_results,
};

/* ---- lifecycle */

static void cl_free(struct cl *c)
{
	q_clear(&c->q);
	bw_rules_engine_free(c->eng);
	c->eng = NULL;
	ruleset_unref(c->rs);
	c->rs = NULL;
	/* Jobs still on the work queue keep the pool; their `done` sees `closed` and touches nothing of c. */
	if (c->sh) {
		c->sh->closed = true;
		shared_unref(c->sh);
		c->sh = NULL;
	}
	c->ninflight = 0;
	files_free(c);
}

static int cl_init(bw_plugin_ctx *ctx, const struct bw_host_api *host, void *instance, bw_error *err)
{
	struct cl *c = instance;
	c->host = host;
	c->ctx = ctx;
	if (!BW_HOST_HAS(host, command_queue))
		return bw_error_set(err, BW_E_ABI, "compliance_lua needs a host with plugin ABI 1.1 (devices)");
	c->lim.instructions = (long)c->instruction_budget;
	c->lim.memory_bytes = (size_t)c->memory_limit;
	int rc = BW_OK;
	if (!(c->sh = shared_new(c))) {
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto fail;
	}
	if (c->rules_dir && (rc = files_read(c, err)) != BW_OK)
		goto fail;
	if (!(c->eng = engine_build(c, NULL, NULL, NULL, false, &c->rs, err))) {
		rc = err->code ? err->code : BW_E_INTERNAL;
		goto fail;
	}
	c->evaluations =
	    host->metric_new(ctx, BW_METRIC_COUNTER, "evaluations_total", "Device evaluations.", NULL, NULL, 0, err);
	c->changes = host->metric_new(ctx, BW_METRIC_COUNTER, "changes_total", "Rule verdict changes, by new verdict.",
	                              "verdict", NULL, 0, err);
	c->queued = host->metric_new(ctx, BW_METRIC_GAUGE, "queued_devices", "Devices waiting for an evaluation job.",
	                             NULL, NULL, 0, err);
	if (!c->evaluations || !c->changes || !c->queued) {
		rc = err->code;
		goto fail;
	}
	if ((rc = host->capability_register(ctx, "rules", &cl_rules_ops, sizeof cl_rules_ops, c, err)) != BW_OK)
		goto fail;
	static const char *const topics[] = {"device.enrolled", "device.updated", "device.inventory_changed",
	                                     "device.status_changed"};
	for (size_t i = 0; i < sizeof topics / sizeof topics[0]; i++)
		if ((rc = host->event_subscribe(ctx, topics[i], on_device_event, c, err)) != BW_OK)
			goto fail;
	const struct bw_route routes[] = {
	    {sizeof(struct bw_route), "admin", "GET", "rules", BW_ROLE_READONLY, get_rules, c},
	    {sizeof(struct bw_route), "admin", "POST", "rules", BW_ROLE_ADMIN, post_rules, c},
	    {sizeof(struct bw_route), "admin", "PUT", "rules/{name}/enabled", BW_ROLE_ADMIN, put_enabled, c},
	    {sizeof(struct bw_route), "admin", "GET", "results", BW_ROLE_READONLY, get_results, c},
	    {sizeof(struct bw_route), "admin", "GET", "results/{device_id}", BW_ROLE_READONLY, get_device_results, c},
	};
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if ((rc = host->route_add(ctx, &routes[i], err)) != BW_OK)
			goto fail;
	host->log(ctx, BW_LOG_INFO, "%zu rules loaded (%zu files from rules_dir)", bw_rules_count(c->eng), c->nfiles);
	return BW_OK;
fail:
	cl_free(c);
	return rc;
}

static int cl_start(bw_plugin_ctx *ctx, void *instance, bw_error *err)
{
	struct cl *c = instance;
	/* A first sweep soon after start (rules may have changed while the server was down), then every interval. */
	c->interval_timer = c->host->timer_add(ctx, 1000, (uint64_t)c->interval_ms, sweep_start, c);
	if (!c->interval_timer)
		return bw_error_set(err, BW_E_INTERNAL, "cannot start the evaluation timer");
	return BW_OK;
}

/* Drops the queue and waits (BW_E_BUSY) for the jobs in flight, whose results are still stored. */
static int cl_stop(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	struct cl *c = instance;
	c->stopping = true;
	if (c->interval_timer)
		c->host->timer_cancel(c->interval_timer);
	if (c->tick_timer)
		c->host->timer_cancel(c->tick_timer);
	c->interval_timer = c->tick_timer = NULL;
	c->sweeping = false;
	q_clear(&c->q);
	publish_queue_len(c);
	return c->ninflight ? BW_E_BUSY : BW_OK;
}

static void cl_fini(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	cl_free(instance);
}

BW_PLUGIN_DEFINE(compliance_lua) = {
    BW_PLUGIN_HEADER,
    .name = "compliance_lua",
    .version = "1.1.0",
    .description = "Compliance rules in Lua: per-device verdicts, change events, actions",
    .instance_size = sizeof(struct cl),
    .fields = cl_fields,
    .init = cl_init,
    .start = cl_start,
    .stop = cl_stop,
    .fini = cl_fini,
};
