/* host/policy/policies.c: the policy service (policies.h): groups and their documents in memory,
 * effective policies with section-level inheritance, delivery versions, per-device delivery state,
 * sync_policy queueing on changes and the timer that re-queues it for devices that stay pending
 * past agent.policy_timeout (so that no device is ever stuck "pending").
 *
 * The check-in path only reads memory: the device's group (by id), the group's cached delivery
 * version. Documents are kept in their stored (protected) form; the admin view (redacted) and the
 * device form (Wi-Fi secrets decrypted) are derived from it and cached per group. */
#include "policies.h"

#include "devices.h"
#include "log.h"
#include "policy_doc.h"
#include "registry.h"
#include "secrets.h"
#include "store_devices.h"
#include "store_policies.h"

#include <errno.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct group {
	int64_t id, parent_id, created_at, version_no;
	char name[BW_GROUP_NAME_MAX + 1];
	char *description;
	json_t *doc;        /* own document, stored form; NULL = none (inherits everything) */
	json_t *eff;        /* effective policy, stored form */
	json_t *sources;    /* section -> name of the group that gives it, or "defaults" */
	json_t *admin_eff;  /* cache: bw_policy_redact(eff) */
	json_t *device_doc; /* cache: bw_policy_for_device(eff) */
	char version[BW_POLICY_VERSION_LEN + 1];
	uint32_t vidx; /* the version's index in bw_policies.vers */
};

/* One device's delivery state, kept small (about 80 bytes; a fleet of 100,000 devices costs some 10 MB):
 * versions are indexes into the table of versions the service ever computed. */
struct dev {
	char id[37];
	bool out_of_sync;
	uint32_t group_id;
	uint32_t assigned, applied; /* VER_NONE, VER_UNKNOWN (a version this server never made) or a version */
	int64_t assigned_at, resent_at, applied_at;
};

enum { VER_NONE = 0, VER_UNKNOWN = 1 };

struct bw_policies {
	struct bw_host *h;
	bw_secrets *sec;
	json_t *defaults;
	struct group **g;
	size_t ng, gcap;
	struct dev *d; /* dense, in load / enrollment order; never shrinks (devices are never deleted) */
	size_t dcap, dn;
	uint32_t *ix; /* open addressing on the id: 0 = empty, else index in d + 1 */
	size_t icap;
	char (*vers)[BW_POLICY_VERSION_LEN + 1]; /* interned versions; 0 = "", 1 = unknown */
	size_t nvers, vcap;
	struct event *timer;
};

static bw_policies *g_instance;

bw_policies *bw_policies_of(const struct bw_host *h)
{
	return g_instance && g_instance->h == h ? g_instance : NULL;
}

/* ---- groups in memory */

/* p->g is ordered by id (loaded so, new groups get higher ids, removal keeps the order): the check-in
 * path and the timer find a device's group by binary search. */
static size_t group_index(const bw_policies *p, int64_t id)
{
	size_t lo = 0, hi = p->ng;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (p->g[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < p->ng && p->g[lo]->id == id ? lo : p->ng;
}

static struct group *group_by_id(bw_policies *p, int64_t id)
{
	size_t i = group_index(p, id);
	return i < p->ng ? p->g[i] : NULL;
}

/* "" is how devices without a group spell "default". */
static struct group *group_by_name(bw_policies *p, const char *name)
{
	if (!name)
		return NULL;
	if (!name[0])
		return group_by_id(p, BW_GROUP_DEFAULT_ID);
	for (size_t i = 0; i < p->ng; i++)
		if (strcmp(p->g[i]->name, name) == 0)
			return p->g[i];
	return NULL;
}

static void group_free(struct group *g)
{
	if (!g)
		return;
	free(g->description);
	json_decref(g->doc);
	json_decref(g->eff);
	json_decref(g->sources);
	json_decref(g->admin_eff);
	json_decref(g->device_doc);
	free(g);
}

static int group_add(bw_policies *p, const struct bw_group_row *row, json_t *doc)
{
	if (p->ng == p->gcap) {
		size_t ncap = p->gcap ? p->gcap * 2 : 16;
		struct group **ng = realloc(p->g, ncap * sizeof *ng);
		if (!ng)
			return BW_E_NOMEM;
		p->g = ng;
		p->gcap = ncap;
	}
	struct group *g = calloc(1, sizeof *g);
	if (!g || !(g->description = strdup(row->description))) {
		free(g);
		return BW_E_NOMEM;
	}
	g->id = row->id;
	g->parent_id = row->parent_id;
	g->created_at = row->created_at;
	g->version_no = row->policy_version;
	snprintf(g->name, sizeof g->name, "%s", row->name);
	g->doc = doc ? json_incref(doc) : NULL;
	size_t at = p->ng; /* keep the order by id (new ids are the highest: normally the end) */
	while (at > 0 && p->g[at - 1]->id > g->id)
		at--;
	memmove(&p->g[at + 1], &p->g[at], (p->ng - at) * sizeof *p->g);
	p->g[at] = g;
	p->ng++;
	return BW_OK;
}

static void group_remove(bw_policies *p, struct group *g)
{
	for (size_t i = 0; i < p->ng; i++)
		if (p->g[i] == g) {
			memmove(&p->g[i], &p->g[i + 1], (p->ng - i - 1) * sizeof *p->g);
			p->ng--;
			break;
		}
	group_free(g);
}

/* Depth of a group (the root is 0); -1 on a broken chain. */
static int group_depth(bw_policies *p, const struct group *g)
{
	int d = 0;
	while (g && g->parent_id) {
		g = group_by_id(p, g->parent_id);
		if (++d > BW_GROUP_DEPTH_MAX * 4)
			return -1;
	}
	return g ? d : -1;
}

static bool is_descendant_or_self(bw_policies *p, const struct group *maybe, const struct group *of)
{
	for (int n = 0; maybe && n <= BW_GROUP_DEPTH_MAX * 4; n++) {
		if (maybe == of)
			return true;
		maybe = maybe->parent_id ? group_by_id(p, maybe->parent_id) : NULL;
	}
	return false;
}

/* Height of the subtree under g (g alone = 0). */
static int subtree_height(bw_policies *p, const struct group *g, int guard)
{
	int h = 0;
	if (guard > BW_GROUP_DEPTH_MAX * 4)
		return h;
	for (size_t i = 0; i < p->ng; i++)
		if (p->g[i]->parent_id == g->id) {
			int c = 1 + subtree_height(p, p->g[i], guard + 1);
			if (c > h)
				h = c;
		}
	return h;
}

/* ---- effective policies */

static void version_of(json_t *doc, char out[BW_POLICY_VERSION_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	char *text = json_dumps(doc, JSON_SORT_KEYS | JSON_COMPACT);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (!text || !EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha256(), NULL) || mdlen < 8) {
		snprintf(out, BW_POLICY_VERSION_LEN + 1, "0000000000000000");
		free(text);
		return;
	}
	free(text);
	for (size_t i = 0; i < BW_POLICY_VERSION_LEN / 2; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[BW_POLICY_VERSION_LEN] = '\0';
}

/* The index of a version the service computed (added when new). */
static uint32_t vers_intern(bw_policies *p, const char *v)
{
	for (size_t i = 2; i < p->nvers; i++)
		if (strcmp(p->vers[i], v) == 0)
			return (uint32_t)i;
	if (p->nvers == p->vcap) {
		size_t ncap = p->vcap * 2;
		void *nv = realloc(p->vers, ncap * sizeof *p->vers);
		if (!nv)
			return VER_UNKNOWN;
		p->vers = nv;
		p->vcap = ncap;
	}
	snprintf(p->vers[p->nvers], sizeof p->vers[0], "%s", v);
	return (uint32_t)p->nvers++;
}

/* The index of a version a device or the database names: "" none, unknown when this server never made it
 * (then it is not the current version of any group, whatever it says). */
static uint32_t vers_find(const bw_policies *p, const char *v)
{
	if (!v || !v[0])
		return VER_NONE;
	for (size_t i = 2; i < p->nvers; i++)
		if (strcmp(p->vers[i], v) == 0)
			return (uint32_t)i;
	return VER_UNKNOWN;
}

static const char *vers_text(const bw_policies *p, uint32_t i)
{
	return i < p->nvers ? p->vers[i] : "?";
}

/* Defaults, then every ancestor's sections from the root down. The version hashes the stored form
 * (ciphertexts and verifiers, never a secret in clear), so it changes with any change, secrets
 * included, and is the same for every group with the same effective policy. */
static void group_compute(bw_policies *p, struct group *g)
{
	struct group *chain[BW_GROUP_DEPTH_MAX * 4 + 2] = {0};
	size_t n = 0;
	for (struct group *c = g; c && n < sizeof chain / sizeof chain[0];
	     c = c->parent_id ? group_by_id(p, c->parent_id) : NULL)
		chain[n++] = c;
	json_t *eff = json_deep_copy(p->defaults), *sources = json_object();
	const char *key;
	json_t *v;
	json_object_foreach(p->defaults, key, v)
	{
		json_object_set_new(sources, key, json_string("defaults"));
	}
	while (n-- > 0) {
		struct group *c = chain[n];
		if (!c->doc || json_object_size(c->doc) == 0)
			continue;
		json_t *merged = bw_policy_merge(eff, c->doc);
		if (merged) {
			json_decref(eff);
			eff = merged;
		}
		json_object_foreach(c->doc, key, v)
		{
			json_object_set_new(sources, key, json_string(c->name));
		}
	}
	/* A section given in part is completed from the defaults (what devices receive, and rules see). */
	json_t *full = bw_policy_complete(eff);
	if (full) {
		json_decref(eff);
		eff = full;
	}
	json_decref(g->eff);
	json_decref(g->sources);
	json_decref(g->admin_eff);
	json_decref(g->device_doc);
	g->admin_eff = g->device_doc = NULL;
	g->eff = eff;
	g->sources = sources;
	version_of(eff, g->version);
	g->vidx = vers_intern(p, g->version);
}

static void recompute(bw_policies *p)
{
	for (size_t i = 0; i < p->ng; i++)
		group_compute(p, p->g[i]);
}

static json_t *group_admin_eff(struct group *g)
{
	if (!g->admin_eff)
		g->admin_eff = bw_policy_redact(g->eff);
	return g->admin_eff;
}

/* ---- devices (open addressing on the id) */

static uint64_t hash_id(const char *id)
{
	uint64_t h = 1469598103934665603ull;
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ull;
	return h;
}

/* The slot of `id` in the index: its entry (*found) or the free slot where it goes. */
static uint32_t *dev_slot(const bw_policies *p, uint32_t *ix, size_t cap, const char *id, bool *found)
{
	for (size_t i = hash_id(id) & (cap - 1);; i = (i + 1) & (cap - 1)) {
		if (!ix[i]) {
			*found = false;
			return &ix[i];
		}
		if (strcmp(p->d[ix[i] - 1].id, id) == 0) {
			*found = true;
			return &ix[i];
		}
	}
}

static int dev_grow(bw_policies *p)
{
	if (p->dn == p->dcap) {
		size_t ncap = p->dcap ? p->dcap * 2 : 1024;
		struct dev *nd = realloc(p->d, ncap * sizeof *nd);
		if (!nd)
			return BW_E_NOMEM;
		p->d = nd;
		p->dcap = ncap;
	}
	if ((p->dn + 1) * 10 >= p->icap * 7) {
		size_t ncap = p->icap ? p->icap * 2 : 2048;
		uint32_t *ni = calloc(ncap, sizeof *ni);
		if (!ni)
			return BW_E_NOMEM;
		for (size_t i = 0; i < p->dn; i++) {
			bool f;
			*dev_slot(p, ni, ncap, p->d[i].id, &f) = (uint32_t)(i + 1);
		}
		free(p->ix);
		p->ix = ni;
		p->icap = ncap;
	}
	return BW_OK;
}

static struct dev *dev_find(bw_policies *p, const char *id)
{
	bool found;
	uint32_t *slot = dev_slot(p, p->ix, p->icap, id, &found);
	return found ? &p->d[*slot - 1] : NULL;
}

/* Adds a device (or finds it). The pointers of other entries may move. */
static struct dev *dev_insert(bw_policies *p, const char *id, int64_t group_id)
{
	struct dev *d = dev_find(p, id);
	if (!d) {
		if (p->dn >= UINT32_MAX - 1 || dev_grow(p) != BW_OK)
			return NULL;
		bool found;
		uint32_t *slot = dev_slot(p, p->ix, p->icap, id, &found);
		d = &p->d[p->dn];
		memset(d, 0, sizeof *d);
		snprintf(d->id, sizeof d->id, "%s", id);
		*slot = (uint32_t)++p->dn;
	}
	d->group_id = (uint32_t)group_id;
	return d;
}

static struct group *dev_group(bw_policies *p, const struct dev *d)
{
	struct group *g = group_by_id(p, d->group_id);
	return g ? g : group_by_id(p, BW_GROUP_DEFAULT_ID);
}

static void dev_persist(bw_policies *p, const struct dev *d)
{
	struct bw_policy_state_row r = {.assigned_at = d->assigned_at,
	                                .resent_at = d->resent_at,
	                                .applied_at = d->applied_at,
	                                .out_of_sync = d->out_of_sync};
	snprintf(r.device_id, sizeof r.device_id, "%s", d->id);
	snprintf(r.assigned_version, sizeof r.assigned_version, "%s",
	         d->assigned > VER_UNKNOWN ? vers_text(p, d->assigned) : "");
	snprintf(r.applied_version, sizeof r.applied_version, "%s",
	         d->applied > VER_UNKNOWN ? vers_text(p, d->applied) : "");
	bw_error err = {0};
	if (bw_store_policy_state_put(p->h->store, &r, &err) != BW_OK)
		bw_log_warn("policies", "cannot store the policy state of device %s: %s", d->id, err.message);
}

static bool dev_active(bw_policies *p, const struct dev *d)
{
	struct bw_reg_device *r = p->h->registry ? bw_registry_find(p->h->registry, d->id) : NULL;
	return r && r->status == BW_DEV_ACTIVE;
}

/* The device's entry; a device enrolled since the start is read from the store once. */
static struct dev *dev_get(bw_policies *p, const char *id)
{
	struct dev *d = dev_find(p, id);
	if (d)
		return d;
	struct bw_device rec;
	if (bw_store_device_get(p->h->store, id, &rec, NULL) != BW_OK)
		return NULL;
	struct group *g = group_by_name(p, rec.group_name);
	if (!g)
		g = group_by_id(p, BW_GROUP_DEFAULT_ID);
	if (!(d = dev_insert(p, id, g->id)))
		return NULL;
	/* A new device gets its policy with its first check-in answer: assigned now, no command. Not written
	 * yet (enrollment stays one write): a device without a state row is "assigned at start" on reload. */
	d->assigned = g->vidx;
	d->assigned_at = d->resent_at = (int64_t)time(NULL);
	return d;
}

static void queue_sync(bw_policies *p, struct dev *d)
{
	char cid[37];
	bool merged = false;
	bw_error err = {0};
	if (bw_command_queue(p->h, d->id, "sync_policy", NULL, 0, "policy", cid, &merged, &err) != BW_OK)
		bw_log_warn("policies", "cannot queue sync_policy for device %s: %s", d->id, err.message);
}

/* After any change to groups or documents: every active device whose effective version is not the
 * one it was assigned gets the new one and (unless it already runs it) a sync_policy command;
 * "policy.changed" is emitted for every group whose version changed. `old` holds the versions of
 * the groups before the change (id, version), `nold` of them. */
struct old_version {
	int64_t id;
	char version[BW_POLICY_VERSION_LEN + 1];
};

static struct old_version *snapshot(bw_policies *p, size_t *n)
{
	struct old_version *o = calloc(p->ng ? p->ng : 1, sizeof *o);
	*n = 0;
	if (!o)
		return NULL;
	for (size_t i = 0; i < p->ng; i++) {
		o[i].id = p->g[i]->id;
		memcpy(o[i].version, p->g[i]->version, sizeof o[i].version);
	}
	*n = p->ng;
	return o;
}

static void reconcile(bw_policies *p, struct old_version *old, size_t nold, bool notify)
{
	int64_t now = (int64_t)time(NULL);
	size_t *counts = calloc(p->ng ? p->ng : 1, sizeof *counts);
	for (size_t i = 0; i < p->dn; i++) {
		struct dev *d = &p->d[i];
		if (!dev_active(p, d))
			continue;
		struct group *g = dev_group(p, d);
		if (d->assigned == g->vidx)
			continue;
		d->assigned = g->vidx;
		d->assigned_at = d->resent_at = now;
		d->out_of_sync = false;
		dev_persist(p, d);
		if (d->applied != g->vidx)
			queue_sync(p, d);
		size_t k = group_index(p, g->id);
		if (counts && k < p->ng)
			counts[k]++;
		if (notify)
			/* Rules read the effective policy (d.policy): let them look again. */
			bw_events_emit(p->h->events, "device.updated",
			               json_pack("{s:s, s:[s]}", "device_id", d->id, "fields", "policy"), NULL);
	}
	for (size_t k = 0; notify && k < p->ng; k++) {
		struct group *g = p->g[k];
		bool changed = true;
		for (size_t j = 0; j < nold; j++)
			if (old[j].id == g->id) {
				changed = strcmp(old[j].version, g->version) != 0;
				break;
			}
		if (changed)
			bw_events_emit(p->h->events, "policy.changed",
			               json_pack("{s:s, s:s, s:I}", "group", g->name, "version", g->version, "devices",
			                         (json_int_t)(counts ? counts[k] : 0)),
			               NULL);
	}
	free(counts);
}

static void changed(bw_policies *p, struct old_version *old, size_t nold)
{
	recompute(p);
	reconcile(p, old, nold, true);
	free(old);
}

/* ---- the timeout timer */

size_t bw_policy_check_timeouts(bw_policies *p, int64_t now)
{
	int64_t timeout = p->h->settings.agent.policy_timeout_ms / 1000;
	if (timeout < 1)
		timeout = 1;
	size_t n = 0;
	for (size_t i = 0; i < p->dn; i++) {
		struct dev *d = &p->d[i];
		if (!dev_active(p, d))
			continue;
		struct group *g = dev_group(p, d);
		if (d->applied == g->vidx)
			continue;
		int64_t since = d->resent_at > d->assigned_at ? d->resent_at : d->assigned_at;
		if (now - since < timeout)
			continue;
		/* Pending too long: shown as out of sync, and the command goes out again (a new one when
		 * the last was completed without the device reporting the version). */
		if (!d->out_of_sync)
			bw_log_info("policies", "device %s has not applied policy %s within %lld s: out of sync", d->id,
			            g->version, (long long)timeout);
		d->out_of_sync = true;
		d->resent_at = now;
		dev_persist(p, d);
		queue_sync(p, d);
		n++;
	}
	return n;
}

/* A device enrolled since the start joins the delivery state at once (so that one that never
 * checks in is still shown, and still gets sync_policy after the timeout). */
static void on_enrolled(const char *topic, json_t *payload, void *arg)
{
	(void)topic;
	const char *id = json_string_value(json_object_get(payload, "device_id"));
	if (id)
		dev_get(arg, id);
}

/* A completed sync_policy may carry the version the device applied ({"policy_version": V}). */
static void on_command_completed(const char *topic, json_t *payload, void *arg)
{
	(void)topic;
	bw_policies *p = arg;
	const char *type = json_string_value(json_object_get(payload, "type"));
	const char *status = json_string_value(json_object_get(payload, "status"));
	const char *dev = json_string_value(json_object_get(payload, "device_id"));
	const char *cid = json_string_value(json_object_get(payload, "command_id"));
	if (!type || strcmp(type, "sync_policy") != 0 || !status || strcmp(status, "completed") != 0 || !dev || !cid)
		return;
	json_t *cmd = NULL;
	if (bw_store_command_get(p->h->store, cid, &cmd, NULL) != BW_OK)
		return;
	const char *dev_of = json_string_value(json_object_get(cmd, "device_id"));
	const char *v = json_string_value(json_object_get(json_object_get(cmd, "result"), "policy_version"));
	if (v && dev_of && strcmp(dev_of, dev) == 0)
		bw_policy_device_applied(p, dev, v);
	json_decref(cmd);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	bw_policy_check_timeouts(arg, (int64_t)time(NULL));
}

/* ---- loading */

struct load_ctx {
	bw_policies *p;
	int rc;
	bw_error *err;
};

static void load_group(const struct bw_group_row *row, void *arg)
{
	struct load_ctx *c = arg;
	if (c->rc)
		return;
	json_t *doc = NULL;
	if (row->policy_version > 0) {
		json_t *v = NULL;
		if (bw_store_policy_version_get(c->p->h->store, row->id, row->policy_version, &v, c->err) != BW_OK) {
			c->rc = c->err->code;
			return;
		}
		doc = json_incref(json_object_get(v, "document"));
		json_decref(v);
	}
	if (group_add(c->p, row, doc) != BW_OK)
		c->rc = bw_error_set(c->err, BW_E_NOMEM, "out of memory");
	json_decref(doc);
}

static void load_device(const struct bw_device *dev, void *arg)
{
	struct load_ctx *c = arg;
	struct group *g = group_by_name(c->p, dev->group_name);
	if (!g)
		g = group_by_id(c->p, BW_GROUP_DEFAULT_ID);
	struct dev *d = dev_insert(c->p, dev->id, g->id);
	if (!d) {
		c->rc = BW_E_NOMEM;
		return;
	}
	/* Until its state is read: assigned now (a device without a state row never had a change). */
	d->assigned = g->vidx;
	d->assigned_at = d->resent_at = (int64_t)time(NULL);
}

static void load_state(const struct bw_policy_state_row *r, void *arg)
{
	struct load_ctx *c = arg;
	struct dev *d = dev_find(c->p, r->device_id);
	if (!d)
		return;
	d->assigned = vers_find(c->p, r->assigned_version);
	d->applied = vers_find(c->p, r->applied_version);
	d->assigned_at = r->assigned_at;
	d->resent_at = r->resent_at;
	d->applied_at = r->applied_at;
	d->out_of_sync = r->out_of_sync;
}

static char *key_path(const char *var_dir)
{
	char *dir = NULL, *path = NULL;
	if (asprintf(&dir, "%s/keys", var_dir) < 0)
		return NULL;
	/* The key lives apart from the database (its own directory, 0700): a copy of the database or of
	 * a backup alone reveals no Wi-Fi secret. */
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		bw_log_warn("policies", "cannot create %s: %s", dir, strerror(errno));
	if (asprintf(&path, "%s/policy.key", dir) < 0)
		path = NULL;
	free(dir);
	return path;
}

bw_policies *bw_policies_new(struct bw_host *h, bw_error *err)
{
	bw_policies *p = calloc(1, sizeof *p);
	if (!p) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	p->h = h;
	char *kp = key_path(h->settings.server.var_dir);
	if (!kp) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto fail;
	}
	p->sec = bw_secrets_open(kp, err);
	free(kp);
	if (!p->sec)
		goto fail;
	p->vcap = 64;
	p->nvers = 2;
	if (!(p->vers = calloc(p->vcap, sizeof *p->vers)) || !(p->defaults = bw_policy_defaults()) ||
	    dev_grow(p) != BW_OK) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto fail;
	}
	snprintf(p->vers[VER_UNKNOWN], sizeof p->vers[0], "unknown");
	struct load_ctx c = {p, BW_OK, err};
	if (bw_store_group_scan(h->store, load_group, &c, err) != BW_OK || c.rc)
		goto fail;
	if (!group_by_id(p, BW_GROUP_DEFAULT_ID)) {
		bw_error_set(err, BW_E_DB, "the database has no default group (id %d)", BW_GROUP_DEFAULT_ID);
		goto fail;
	}
	recompute(p);
	if (bw_store_device_scan(h->store, load_device, &c, err) != BW_OK || c.rc ||
	    bw_store_policy_state_scan(h->store, load_state, &c, err) != BW_OK) {
		if (c.rc == BW_E_NOMEM)
			bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto fail;
	}
	g_instance = p;
	if (bw_events_subscribe(h->events, p, "device.enrolled", on_enrolled, p, err) != BW_OK ||
	    bw_events_subscribe(h->events, p, "command.completed", on_command_completed, p, err) != BW_OK)
		goto fail;
	/* A build with other defaults (or a database edited offline) changes versions: deliver them. */
	reconcile(p, NULL, 0, false);
	int64_t tick_ms = h->settings.agent.policy_timeout_ms / 4;
	if (tick_ms < 1000)
		tick_ms = 1000;
	if (tick_ms > 60000)
		tick_ms = 60000;
	p->timer = event_new(h->base, -1, EV_PERSIST, timer_cb, p);
	struct timeval tv = {tick_ms / 1000, (tick_ms % 1000) * 1000};
	if (!p->timer || event_add(p->timer, &tv) != 0) {
		bw_error_set(err, BW_E_NOMEM, "cannot start the policy timer");
		goto fail;
	}
	bw_log_info("policies", "%zu groups, %zu devices", p->ng, p->dn);
	return p;
fail:
	bw_policies_free(p);
	return NULL;
}

void bw_policies_free(bw_policies *p)
{
	if (!p)
		return;
	if (g_instance == p)
		g_instance = NULL;
	if (p->h && p->h->events)
		bw_events_unsubscribe_owner(p->h->events, p);
	if (p->timer)
		event_free(p->timer);
	for (size_t i = 0; i < p->ng; i++)
		group_free(p->g[i]);
	free(p->g);
	free(p->d);
	free(p->ix);
	free(p->vers);
	json_decref(p->defaults);
	bw_secrets_free(p->sec);
	free(p);
}

/* ---- groups API */

static int name_valid(const char *name, const char *field, bw_error *err)
{
	size_t n = name ? strlen(name) : 0;
	if (n < 1 || n > BW_GROUP_NAME_MAX)
		return bw_error_set(err, BW_E_INVALID, "%s must be 1 to %d characters", field, BW_GROUP_NAME_MAX);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f || name[i] == '/')
			return bw_error_set(err, BW_E_INVALID, "%s must not contain '/' or control characters", field);
	/* UTF-8 is checked by the store */
	return BW_OK;
}

static struct group *need_group(bw_policies *p, const char *name, bw_error *err)
{
	struct group *g = name && name[0] ? group_by_name(p, name) : NULL;
	if (!g)
		bw_error_set(err, BW_E_NOTFOUND, "no group named '%s'", name ? name : "");
	return g;
}

static json_t *group_json(bw_policies *p, const struct group *g)
{
	struct group *parent = g->parent_id ? group_by_id(p, g->parent_id) : NULL;
	return json_pack("{s:s, s:o, s:s, s:I, s:s, s:I}", "name", g->name, "parent",
	                 parent ? json_string(parent->name) : json_null(), "description", g->description,
	                 "policy_version", (json_int_t)g->version_no, "effective_version", g->version, "created_at",
	                 (json_int_t)g->created_at);
}

/* Active devices per group name, from the store (devices enrolled a moment ago included). */
static json_t *device_counts(bw_policies *p)
{
	json_t *counts = NULL;
	bw_error err = {0};
	if (bw_store_group_device_counts(p->h->store, &counts, &err) != BW_OK) {
		bw_log_warn("policies", "cannot count the devices of groups: %s", err.message);
		counts = json_object();
	}
	return counts;
}

static size_t count_devices(json_t *counts, const struct group *g)
{
	return (size_t)json_integer_value(json_object_get(counts, g->name));
}

int bw_group_list(bw_policies *p, json_t **out, bw_error *err)
{
	(void)err;
	json_t *arr = json_array();
	/* by name, so that listings are stable */
	struct group **sorted = malloc((p->ng ? p->ng : 1) * sizeof *sorted);
	if (!arr || !sorted) {
		json_decref(arr);
		free(sorted);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	memcpy(sorted, p->g, p->ng * sizeof *sorted);
	for (size_t i = 1; i < p->ng; i++)
		for (size_t j = i; j > 0 && strcmp(sorted[j - 1]->name, sorted[j]->name) > 0; j--) {
			struct group *t = sorted[j];
			sorted[j] = sorted[j - 1];
			sorted[j - 1] = t;
		}
	json_t *counts = device_counts(p);
	for (size_t i = 0; i < p->ng; i++) {
		json_t *o = group_json(p, sorted[i]);
		json_object_set_new(o, "devices", json_integer((json_int_t)count_devices(counts, sorted[i])));
		json_array_append_new(arr, o);
	}
	json_decref(counts);
	free(sorted);
	*out = arr;
	return BW_OK;
}

int bw_group_get(bw_policies *p, const char *name, json_t **out, bw_error *err)
{
	struct group *g = need_group(p, name, err);
	if (!g)
		return err->code;
	json_t *o = group_json(p, g), *children = json_array();
	for (size_t i = 0; i < p->ng; i++)
		if (p->g[i]->parent_id == g->id)
			json_array_append_new(children, json_string(p->g[i]->name));
	json_object_set_new(o, "children", children);
	json_t *counts = device_counts(p);
	json_object_set_new(o, "devices", json_integer((json_int_t)count_devices(counts, g)));
	json_decref(counts);
	*out = o;
	return BW_OK;
}

int bw_group_create(bw_policies *p, const char *name, const char *parent, const char *description, bw_error *err)
{
	int rc = name_valid(name, "name", err);
	if (rc)
		return rc;
	if (p->ng >= BW_GROUPS_MAX)
		return bw_error_set(err, BW_E_LIMIT, "at most %d groups", BW_GROUPS_MAX);
	if (group_by_name(p, name))
		return bw_error_set(err, BW_E_EXISTS, "a group named '%s' already exists", name);
	struct group *par = need_group(p, parent ? parent : "default", err);
	if (!par)
		return err->code;
	if (group_depth(p, par) + 1 > BW_GROUP_DEPTH_MAX)
		return bw_error_set(err, BW_E_INVALID, "groups nest at most %d levels deep", BW_GROUP_DEPTH_MAX);
	struct bw_group_row row = {.parent_id = par->id, .created_at = (int64_t)time(NULL)};
	snprintf(row.name, sizeof row.name, "%s", name);
	snprintf(row.description, sizeof row.description, "%s", description ? description : "");
	if ((rc = bw_store_group_create(p->h->store, name, par->id, row.description, row.created_at, &row.id, err)))
		return rc;
	if (group_add(p, &row, NULL) != BW_OK)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	/* A new group inherits its parent's policy: no device is in it yet, nothing to deliver. */
	group_compute(p, group_by_id(p, row.id));
	return BW_OK;
}

int bw_group_ensure(bw_policies *p, const char *name, const char *why, bw_error *err)
{
	if (!name || !*name || group_by_name(p, name))
		return BW_OK;
	int rc = bw_group_create(p, name, NULL, why, err);
	if (rc == BW_OK)
		bw_log_info("policies", "created group '%s' under default (%s)", name, why);
	return rc;
}

int bw_group_update(bw_policies *p, const char *name, const char *new_name, const char *parent, const char *description,
                    bw_error *err)
{
	struct group *g = need_group(p, name, err);
	if (!g)
		return err->code;
	int rc;
	if (new_name && strcmp(new_name, g->name) != 0) {
		if (g->id == BW_GROUP_DEFAULT_ID)
			return bw_error_set(err, BW_E_STATE, "the default group cannot be renamed");
		if ((rc = name_valid(new_name, "name", err)))
			return rc;
		if (group_by_name(p, new_name))
			return bw_error_set(err, BW_E_EXISTS, "a group named '%s' already exists", new_name);
	} else {
		new_name = NULL;
	}
	struct group *par = NULL;
	if (parent) {
		if (g->id == BW_GROUP_DEFAULT_ID)
			return bw_error_set(err, BW_E_STATE, "the default group is the root: it cannot be moved");
		if (!(par = need_group(p, parent, err)))
			return err->code;
		if (is_descendant_or_self(p, par, g))
			return bw_error_set(err, BW_E_STATE,
			                    "cannot move group '%s' under '%s': that would make a cycle (it is %s)",
			                    g->name, par->name, par == g ? "the group itself" : "one of its subgroups");
		if (group_depth(p, par) + 1 + subtree_height(p, g, 0) > BW_GROUP_DEPTH_MAX)
			return bw_error_set(err, BW_E_INVALID, "groups nest at most %d levels deep",
			                    BW_GROUP_DEPTH_MAX);
		if (par->id == g->parent_id)
			par = NULL;
	}
	char *desc = NULL;
	if (description && !(desc = strdup(description)))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	if ((rc = bw_store_group_update(p->h->store, g->id, g->name, new_name, par ? par->id : -1, description, err))) {
		free(desc);
		return rc;
	}
	if (new_name) {
		bw_log_info("policies", "group '%s' renamed to '%s'", g->name, new_name);
		snprintf(g->name, sizeof g->name, "%s", new_name);
		recompute(p); /* sources name groups */
	}
	if (desc) {
		free(g->description);
		g->description = desc;
	}
	if (par) {
		size_t nold;
		struct old_version *old = snapshot(p, &nold);
		g->parent_id = par->id;
		changed(p, old, nold);
	}
	return BW_OK;
}

int bw_group_delete(bw_policies *p, const char *name, const char *move_to, bw_error *err)
{
	struct group *g = need_group(p, name, err);
	if (!g)
		return err->code;
	if (g->id == BW_GROUP_DEFAULT_ID)
		return bw_error_set(err, BW_E_STATE, "the default group cannot be deleted");
	json_t *counts = device_counts(p);
	size_t children = 0, devices = count_devices(counts, g);
	json_decref(counts);
	for (size_t i = 0; i < p->ng; i++)
		children += p->g[i]->parent_id == g->id;
	struct group *to = NULL;
	if (move_to) {
		if (!(to = need_group(p, move_to, err)))
			return err->code;
		if (is_descendant_or_self(p, to, g))
			return bw_error_set(err, BW_E_STATE, "cannot move the members of '%s' to '%s': it is %s",
			                    g->name, to->name, to == g ? "the group itself" : "one of its subgroups");
	} else if (children || devices) {
		return bw_error_set(err, BW_E_STATE,
		                    "group '%s' has %zu devices and %zu subgroups: move them first or give move_to",
		                    g->name, devices, children);
	} else {
		to = group_by_id(p, g->parent_id);
	}
	if (!to)
		return bw_error_set(err, BW_E_INTERNAL, "group '%s' has no parent", g->name);
	if (children && group_depth(p, to) + subtree_height(p, g, 0) > BW_GROUP_DEPTH_MAX)
		return bw_error_set(err, BW_E_INVALID, "groups nest at most %d levels deep", BW_GROUP_DEPTH_MAX);
	int rc = bw_store_group_delete(p->h->store, g->id, g->name, to->id, to->name, err);
	if (rc)
		return rc;
	size_t nold;
	struct old_version *old = snapshot(p, &nold);
	for (size_t i = 0; i < p->dn; i++)
		if (p->d[i].group_id == g->id)
			p->d[i].group_id = (uint32_t)to->id;
	for (size_t i = 0; i < p->ng; i++)
		if (p->g[i]->parent_id == g->id)
			p->g[i]->parent_id = to->id;
	bw_log_info("policies", "group '%s' deleted (%zu devices and %zu subgroups moved to '%s')", g->name, devices,
	            children, to->name);
	group_remove(p, g);
	changed(p, old, nold);
	return BW_OK;
}

/* ---- documents */

int bw_policy_get_own(bw_policies *p, const char *group, json_t **out, bw_error *err)
{
	struct group *g = need_group(p, group, err);
	if (!g)
		return err->code;
	json_t *o = json_pack("{s:s, s:I}", "group", g->name, "version", (json_int_t)g->version_no);
	if (g->version_no > 0) {
		json_t *v = NULL;
		if (bw_store_policy_version_get(p->h->store, g->id, g->version_no, &v, err) != BW_OK) {
			json_decref(o);
			return err->code;
		}
		json_object_set(o, "author", json_object_get(v, "author"));
		json_object_set(o, "at", json_object_get(v, "at"));
		json_object_set(o, "summary", json_object_get(v, "summary"));
		json_decref(v);
	}
	json_object_set_new(o, "policy", g->doc ? bw_policy_redact(g->doc) : json_object());
	*out = o;
	return BW_OK;
}

/* The sections whose stored form differs, as "a, b" ("no changes" when none). */
static char *summary_of(json_t *before, json_t *after)
{
	size_t cap = 256, len = 0;
	char *s = calloc(1, cap);
	if (!s)
		return NULL;
	json_t *keys = json_object();
	const char *k;
	json_t *v;
	json_object_foreach(before, k, v)
	{
		json_object_set_new(keys, k, json_true());
	}
	json_object_foreach(after, k, v)
	{
		json_object_set_new(keys, k, json_true());
	}
	/* sorted, so the summary does not depend on hash order */
	const char **names = malloc((json_object_size(keys) + 1) * sizeof *names);
	size_t n = 0;
	json_object_foreach(keys, k, v)
	{
		if (names && !json_equal(json_object_get(before, k), json_object_get(after, k)))
			names[n++] = k;
	}
	for (size_t i = 1; names && i < n; i++)
		for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			const char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	for (size_t i = 0; names && i < n; i++) {
		size_t need = len + strlen(names[i]) + 3;
		if (need > cap) {
			char *ns = realloc(s, cap = need * 2);
			if (!ns)
				break;
			s = ns;
		}
		len += (size_t)sprintf(s + len, "%s%s", i ? ", " : "", names[i]);
	}
	if (n == 0 || !names)
		snprintf(s, cap, "no changes");
	free(names);
	json_decref(keys);
	return s;
}

int bw_policy_put(bw_policies *p, const char *group, json_t *doc, const char *author, json_t **result, json_t **errors,
                  bw_error *err)
{
	*result = NULL;
	*errors = NULL;
	struct group *g = need_group(p, group, err);
	if (!g)
		return err->code;
	json_t *norm = NULL, *stored = NULL;
	int rc = bw_policy_validate(doc, &norm, errors, err);
	if (rc != BW_OK)
		return rc;
	if ((rc = bw_policy_protect(p->sec, norm, g->doc, &stored, err)) != BW_OK) {
		json_decref(norm);
		return rc;
	}
	json_decref(norm);
	json_t *empty = json_object();
	char *summary = summary_of(g->doc ? g->doc : empty, stored);
	json_decref(empty);
	char *text = json_dumps(stored, JSON_SORT_KEYS | JSON_COMPACT);
	int64_t next = g->version_no + 1;
	if (!summary || !text)
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
	else
		rc = bw_store_policy_version_add(p->h->store, g->id, next, text, author, summary, (int64_t)time(NULL),
		                                 err);
	free(text);
	if (rc) {
		free(summary);
		json_decref(stored);
		return rc;
	}
	size_t nold;
	struct old_version *old = snapshot(p, &nold);
	json_decref(g->doc);
	g->doc = stored;
	g->version_no = next;
	changed(p, old, nold);
	bw_log_info("policies", "group '%s': policy version %lld by %s (%s)", g->name, (long long)next,
	            author ? author : "-", summary);
	*result = json_pack("{s:s, s:I, s:s, s:s}", "group", g->name, "version", (json_int_t)next, "summary", summary,
	                    "effective_version", g->version);
	free(summary);
	return BW_OK;
}

int bw_policy_effective(bw_policies *p, const char *group, json_t **out, bw_error *err)
{
	struct group *g = need_group(p, group, err);
	if (!g)
		return err->code;
	json_t *pol = group_admin_eff(g);
	if (!pol)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	*out = json_pack("{s:s, s:s, s:O, s:O}", "group", g->name, "version", g->version, "policy", pol, "sources",
	                 g->sources);
	return *out ? BW_OK : bw_error_set(err, BW_E_NOMEM, "out of memory");
}

int bw_policy_history(bw_policies *p, const char *group, int64_t before, size_t limit, json_t **out, bw_error *err)
{
	struct group *g = need_group(p, group, err);
	if (!g)
		return err->code;
	json_t *list = NULL;
	int rc = bw_store_policy_history(p->h->store, g->id, before, limit, &list, err);
	if (rc)
		return rc;
	*out = json_pack("{s:s, s:I, s:o}", "group", g->name, "current", (json_int_t)g->version_no, "versions", list);
	return BW_OK;
}

static int version_doc(bw_policies *p, struct group *g, int64_t n, json_t **meta, json_t **doc, bw_error *err)
{
	*meta = NULL;
	*doc = NULL;
	if (n == 0) {
		*doc = json_object();
		return BW_OK;
	}
	if (n < 0)
		return bw_error_set(err, BW_E_INVALID, "version must be a positive number");
	int rc = bw_store_policy_version_get(p->h->store, g->id, n, meta, err);
	if (rc == BW_E_NOTFOUND)
		return bw_error_set(err, BW_E_NOTFOUND, "group '%s' has no policy version %lld", g->name, (long long)n);
	if (rc)
		return rc;
	*doc = bw_policy_redact(json_object_get(*meta, "document"));
	json_object_del(*meta, "document");
	return BW_OK;
}

int bw_policy_version(bw_policies *p, const char *group, int64_t version, json_t **out, bw_error *err)
{
	struct group *g = need_group(p, group, err);
	if (!g)
		return err->code;
	if (version <= 0)
		return bw_error_set(err, BW_E_INVALID, "version must be a positive number");
	json_t *meta, *doc;
	int rc = version_doc(p, g, version, &meta, &doc, err);
	if (rc)
		return rc;
	json_object_set_new(meta, "group", json_string(g->name));
	json_object_set_new(meta, "policy", doc);
	*out = meta;
	return BW_OK;
}

int bw_policy_diff_versions(bw_policies *p, const char *group, int64_t from, int64_t to, json_t **out, bw_error *err)
{
	struct group *g = need_group(p, group, err);
	if (!g)
		return err->code;
	json_t *m1, *d1, *m2, *d2;
	int rc = version_doc(p, g, from, &m1, &d1, err);
	if (rc)
		return rc;
	if ((rc = version_doc(p, g, to, &m2, &d2, err))) {
		json_decref(m1);
		json_decref(d1);
		return rc;
	}
	json_t *changes = bw_policy_diff(d1, d2);
	*out = json_pack("{s:s, s:I, s:I, s:o}", "group", g->name, "from", (json_int_t)from, "to", (json_int_t)to,
	                 "changes", changes ? changes : json_array());
	json_decref(m1);
	json_decref(d1);
	json_decref(m2);
	json_decref(d2);
	return BW_OK;
}

/* ---- devices */

int bw_policy_device_move(bw_policies *p, const char *device_id, const char *group, json_t **out, bw_error *err)
{
	struct group *g = need_group(p, group, err);
	if (!g)
		return err->code;
	struct dev *d = dev_get(p, device_id);
	if (!d)
		return bw_error_set(err, BW_E_NOTFOUND, "no device %s", device_id);
	json_t *fields = json_pack("{s:s}", "group", g->name);
	int rc = bw_store_device_update(p->h->store, device_id, fields, err);
	json_decref(fields);
	if (rc)
		return rc;
	struct group *from = dev_group(p, d);
	if (from != g) {
		d->group_id = (uint32_t)g->id;
		/* One device changes; groups keep their versions. */
		reconcile(p, NULL, 0, false);
		bw_events_emit(p->h->events, "device.updated",
		               json_pack("{s:s, s:[s]}", "device_id", device_id, "fields", "group"), NULL);
		bw_events_emit(p->h->events, "policy.changed",
		               json_pack("{s:s, s:s, s:i, s:s}", "group", g->name, "version", g->version, "devices", 1,
		                         "device_id", device_id),
		               NULL);
		bw_log_info("policies", "device %s moved from group '%s' to '%s'", device_id, from->name, g->name);
	}
	*out = json_pack("{s:s, s:s, s:s}", "id", device_id, "group", g->name, "policy_version", g->version);
	return BW_OK;
}

const char *bw_policy_device_version(bw_policies *p, const char *device_id)
{
	struct dev *d = dev_get(p, device_id);
	return d ? dev_group(p, d)->version : NULL;
}

int bw_policy_device_document(bw_policies *p, const char *device_id, json_t **out, bw_error *err)
{
	struct dev *d = dev_get(p, device_id);
	if (!d)
		return bw_error_set(err, BW_E_NOTFOUND, "no device %s", device_id);
	struct group *g = dev_group(p, d);
	if (!g->device_doc) {
		int rc = bw_policy_for_device(p->sec, g->eff, &g->device_doc, err);
		if (rc)
			return rc;
	}
	*out = json_pack("{s:s, s:O}", "version", g->version, "policy", g->device_doc);
	return *out ? BW_OK : bw_error_set(err, BW_E_NOMEM, "out of memory");
}

int bw_policy_device_effective(bw_policies *p, const char *device_id, json_t **out, bw_error *err)
{
	struct dev *d = dev_get(p, device_id);
	if (!d)
		return bw_error_set(err, BW_E_NOTFOUND, "no device %s", device_id);
	json_t *pol = group_admin_eff(dev_group(p, d));
	if (!pol)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	*out = json_deep_copy(pol);
	return BW_OK;
}

void bw_policy_device_applied(bw_policies *p, const char *device_id, const char *version)
{
	struct dev *d = dev_get(p, device_id);
	if (!d || !version)
		return;
	struct group *g = dev_group(p, d);
	/* the usual answers first: the current version, or the one it reported last time */
	uint32_t v = strcmp(version, g->version) == 0 ? g->vidx
	             : d->applied > VER_UNKNOWN && strcmp(version, vers_text(p, d->applied)) == 0
	                 ? d->applied
	                 : vers_find(p, version);
	bool now_current = v == g->vidx;
	if (d->applied == v && !(now_current && d->out_of_sync))
		return;
	d->applied = v;
	d->applied_at = (int64_t)time(NULL);
	if (now_current)
		d->out_of_sync = false;
	dev_persist(p, d);
	if (now_current)
		bw_log_debug("policies", "device %s applied policy %s", d->id, version);
}

static const char *dev_state(bw_policies *p, const struct dev *d, const struct group *g, int64_t now)
{
	if (d->applied == g->vidx)
		return "applied";
	if (d->out_of_sync || now - d->assigned_at >= p->h->settings.agent.policy_timeout_ms / 1000)
		return "out_of_sync";
	return "pending";
}

static int cmp_dev(const void *a, const void *b)
{
	return strcmp((*(const struct dev *const *)a)->id, (*(const struct dev *const *)b)->id);
}

int bw_policy_status(bw_policies *p, const char *group, const char *state, json_t **out, bw_error *err)
{
	struct group *only = NULL;
	if (group && !(only = need_group(p, group, err)))
		return err->code;
	if (state && strcmp(state, "applied") && strcmp(state, "pending") && strcmp(state, "out_of_sync"))
		return bw_error_set(err, BW_E_INVALID, "state must be \"applied\", \"pending\" or \"out_of_sync\"");
	struct dev **list = malloc((p->dn ? p->dn : 1) * sizeof *list);
	if (!list)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	size_t n = 0;
	for (size_t i = 0; i < p->dn; i++)
		if (dev_active(p, &p->d[i]) && (!only || dev_group(p, &p->d[i]) == only))
			list[n++] = &p->d[i];
	qsort(list, n, sizeof *list, cmp_dev);
	int64_t now = (int64_t)time(NULL);
	json_t *arr = json_array(),
	       *counts = json_pack("{s:i, s:i, s:i}", "applied", 0, "pending", 0, "out_of_sync", 0);
	for (size_t i = 0; i < n; i++) {
		struct dev *d = list[i];
		struct group *g = dev_group(p, d);
		const char *st = dev_state(p, d, g, now);
		json_object_set_new(counts, st, json_integer(json_integer_value(json_object_get(counts, st)) + 1));
		if (state && strcmp(state, st) != 0)
			continue;
		json_array_append_new(arr,
		                      json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?, s:I, s:I, s:I}", "device_id", d->id,
		                                "group", g->name, "state", st, "current_version", g->version,
		                                "assigned_version", d->assigned ? vers_text(p, d->assigned) : NULL,
		                                "applied_version", d->applied ? vers_text(p, d->applied) : NULL,
		                                "assigned_at", (json_int_t)d->assigned_at, "resent_at",
		                                (json_int_t)d->resent_at, "applied_at", (json_int_t)d->applied_at));
	}
	free(list);
	*out = json_pack("{s:o, s:o}", "devices", arr, "counts", counts);
	return BW_OK;
}
