/* tests/unit/test_policies.c: groups and policies: the schema 4 migration (groups created for the names
 * devices and keys already used), the storage of groups, versions and delivery states
 * (host/services/store_policies.c), and the policy service (host/policy/policies.c) on a minimal host:
 * the tree with its cycle and depth checks, section-level inheritance, versions and diffs, device moves
 * queueing sync_policy, and the applied / pending / out_of_sync lifecycle with the timeout check. */
#include "testutil.h"

#include "devices.h"
#include "policies.h"
#include "registry.h"
#include "store_devices.h"
#include "store_policies.h"
#include "store_sqlite_internal.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define T0 1700000000

struct ctx {
	char *dir;
	char path[1024];
	bw_store *st;
	struct bw_host h;
	bw_policies *p;
};

static void ok(int rc, const bw_error *err, const char *what)
{
	if (rc != BW_OK)
		fail_msg("%s: code %d: %s", what, rc, err->message);
}

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	assert_non_null(c);
	c->dir = bw_test_tmpdir("policies");
	snprintf(c->path, sizeof c->path, "%s/bulwark.db", c->dir);
	*state = c;
	return 0;
}

static int setup_open(void **state)
{
	setup(state);
	struct ctx *c = *state;
	bw_error err = {0};
	c->st = bw_store_open(c->path, &err);
	if (!c->st)
		fail_msg("bw_store_open: %s", err.message);
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	bw_policies_free(c->p);
	bw_registry_free(c->h.registry);
	bw_events_free(c->h.events);
	if (c->h.base)
		event_base_free(c->h.base);
	bw_store_close(c->st);
	bw_test_rmtree(c->dir);
	free(c->dir);
	free(c);
	return 0;
}

static void add_device(bw_store *st, const char *id, const char *group)
{
	bw_error err = {0};
	json_t *dev = json_pack("{s:s, s:s}", "platform", "android", "os_version", "14");
	ok(bw_store_device_create(st, id, dev, group, "key", "0a", T0 + 86400 * 365, T0, &err), &err, "device");
	json_decref(dev);
}

static int64_t query_int(bw_store *st, const char *sql)
{
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_prepare_v2(bw_store_sql_db(st), sql, -1, &s, NULL), SQLITE_OK);
	int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
	sqlite3_finalize(s);
	return v;
}

static void collect_group(const struct bw_group_row *g, void *arg)
{
	json_t *o = arg;
	json_object_set_new(o, g->name,
	                    json_pack("{s:I, s:I, s:I}", "id", (json_int_t)g->id, "parent", (json_int_t)g->parent_id,
	                              "version", (json_int_t)g->policy_version));
}

static json_t *groups(bw_store *st)
{
	json_t *o = json_object();
	bw_error err = {0};
	ok(bw_store_group_scan(st, collect_group, o, &err), &err, "scan");
	return o;
}

static int64_t gint(json_t *groups_obj, const char *name, const char *key)
{
	json_t *g = json_object_get(groups_obj, name);
	if (!g)
		fail_msg("no group %s", name);
	return json_integer_value(json_object_get(g, key));
}

/* ---- migration */

static void test_migration_creates_groups_for_used_names(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	c->st = bw_store_open_version(c->path, 3, &err);
	assert_non_null(c->st);
	/* Rows as schema 3 wrote them (today's statements name columns that schema 3 lacks). */
	static const char *const v3_rows =
	    "INSERT INTO devices (id, platform, status, enroll_method, cert_serial, cert_not_after, enrolled_at,"
	    " last_seen, status_changed_at, group_name) VALUES"
	    " ('d1', 'android', 'active', 'key', '0a', 1731536000, 1700000000, 1700000000, 1700000000, 'sales'),"
	    " ('d2', 'android', 'active', 'key', '0b', 1731536000, 1700000000, 1700000000, 1700000000, ''),"
	    " ('d3', 'android', 'active', 'key', '0c', 1731536000, 1700000000, 1700000000, 1700000000, 'default'),"
	    " ('d4', 'android', 'active', 'key', '0d', 1731536000, 1700000000, 1700000000, 1700000000, 'sales')";
	assert_int_equal(sqlite3_exec(bw_store_sql_db(c->st), v3_rows, NULL, NULL, NULL), SQLITE_OK);
	ok(bw_store_key_create(c->st, "k1", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "AAAA",
	                       "eng", 0, 0, "alice", T0, &err),
	   &err, "key");
	bw_store_close(c->st);
	c->st = bw_store_open(c->path, &err);
	assert_non_null(c->st);
	assert_int_equal(bw_store_schema_version(c->st), 4);
	json_t *g = groups(c->st);
	assert_int_equal(json_object_size(g), 3);
	assert_int_equal(gint(g, "default", "id"), BW_GROUP_DEFAULT_ID);
	assert_int_equal(gint(g, "default", "parent"), 0);
	assert_int_equal(gint(g, "sales", "parent"), BW_GROUP_DEFAULT_ID);
	assert_int_equal(gint(g, "eng", "parent"), BW_GROUP_DEFAULT_ID);
	assert_int_equal(gint(g, "eng", "version"), 0);
	json_decref(g);
	/* the old rows are untouched */
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM devices WHERE group_name = 'sales'"), 2);
	json_t *counts = NULL;
	ok(bw_store_group_device_counts(c->st, &counts, &err), &err, "counts");
	assert_int_equal(json_integer_value(json_object_get(counts, "sales")), 2);
	assert_int_equal(json_integer_value(json_object_get(counts, "default")), 2); /* "" and "default" */
	json_decref(counts);
}

#ifndef BW_SOURCE_DIR
#define BW_SOURCE_DIR "."
#endif

/* tests/fixtures/db/schema-v3.sql (a released version 3 database) upgrades to 4 with its rows. */
static void test_v3_fixture_upgrades(void **state)
{
	struct ctx *c = *state;
	FILE *f = fopen(BW_SOURCE_DIR "/tests/fixtures/db/schema-v3.sql", "r");
	assert_non_null(f);
	char *sql = calloc(1, 1 << 20);
	assert_non_null(sql);
	size_t n = fread(sql, 1, (1 << 20) - 1, f);
	fclose(f);
	assert_true(n > 0);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("loading the fixture: %s", msg);
	sqlite3_close(db);
	free(sql);
	bw_error err = {0};
	c->st = bw_store_open(c->path, &err);
	if (!c->st)
		fail_msg("open: %s", err.message);
	assert_int_equal(bw_store_schema_version(c->st), 4);
	json_t *g = groups(c->st);
	assert_int_equal(json_object_size(g), 3); /* default, eng (a key's), sales (a device's) */
	assert_int_equal(gint(g, "default", "id"), BW_GROUP_DEFAULT_ID);
	assert_int_equal(gint(g, "eng", "parent"), BW_GROUP_DEFAULT_ID);
	assert_int_equal(gint(g, "sales", "parent"), BW_GROUP_DEFAULT_ID);
	json_decref(g);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM devices"), 3);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_inventory"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM enrollment_keys WHERE group_name = 'eng'"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM commands"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_events"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM revoked_certs"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM policy_versions"), 0);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_policy_state"), 0);
	/* and the new tables work next to the old rows */
	int64_t id = 0;
	ok(bw_store_group_create(c->st, "new", BW_GROUP_DEFAULT_ID, NULL, T0, &id, &err), &err, "group");
	g = groups(c->st);
	ok(bw_store_group_update(c->st, gint(g, "sales", "id"), "sales", "field-sales", -1, NULL, &err), &err,
	   "rename");
	json_decref(g);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM devices WHERE group_name = 'field-sales'"), 1);
}

static void test_store_functions_need_schema_4(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	c->st = bw_store_open_version(c->path, 3, &err);
	assert_non_null(c->st);
	int64_t id = 0;
	assert_int_equal(bw_store_group_create(c->st, "x", 1, NULL, T0, &id, &err), BW_E_STATE);
	assert_non_null(strstr(err.message, "needs 4"));
}

/* ---- storage */

static void test_store_groups(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	int64_t a = 0, b = 0;
	ok(bw_store_group_create(c->st, "a", 1, "first", T0, &a, &err), &err, "a");
	ok(bw_store_group_create(c->st, "b", a, NULL, T0, &b, &err), &err, "b");
	assert_true(a > 1 && b > a);
	assert_int_equal(bw_store_group_create(c->st, "a", 1, NULL, T0, NULL, &err), BW_E_EXISTS);
	assert_non_null(strstr(err.message, "a group named a already exists"));
	assert_int_equal(bw_store_group_create(c->st, "", 1, NULL, T0, NULL, &err), BW_E_INVALID);
	assert_int_equal(bw_store_group_create(c->st, "c\x01", 1, NULL, T0, NULL, &err), BW_E_INVALID);
	assert_int_equal(bw_store_group_create(c->st, "orphan", 0, NULL, T0, NULL, &err), BW_E_INVALID);
	assert_int_equal(bw_store_group_create(c->st, "dangling", 999, NULL, T0, NULL, &err), BW_E_NOTFOUND);

	add_device(c->st, "d1", "a");
	ok(bw_store_key_create(c->st, "k1", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "BBBB",
	                       "a", 0, 0, "alice", T0, &err),
	   &err, "key");
	/* rename: devices and keys follow, in one transaction */
	ok(bw_store_group_update(c->st, a, "a", "a2", -1, "renamed", &err), &err, "rename");
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM devices WHERE group_name = 'a2'"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM enrollment_keys WHERE group_name = 'a2'"), 1);
	assert_int_equal(bw_store_group_update(c->st, b, "b", "a2", -1, NULL, &err), BW_E_EXISTS);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM groups WHERE name = 'b'"), 1); /* rolled back */
	assert_int_equal(bw_store_group_update(c->st, 1, "default", "root", -1, NULL, &err), BW_E_INVALID);
	/* move b to the root, then back */
	ok(bw_store_group_update(c->st, b, "b", NULL, 1, NULL, &err), &err, "move");
	assert_int_equal(query_int(c->st, "SELECT parent_id FROM groups WHERE name = 'b'"), 1);
	ok(bw_store_group_update(c->st, b, "b", NULL, a, NULL, &err), &err, "move back");

	/* delete a2: its device, key and subgroup b move to default */
	ok(bw_store_policy_version_add(c->st, a, 1, "{}", "alice", "", T0, &err), &err, "version");
	ok(bw_store_group_delete(c->st, a, "a2", 1, "default", &err), &err, "delete");
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM devices WHERE group_name = 'default'"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM enrollment_keys WHERE group_name = 'default'"), 1);
	assert_int_equal(query_int(c->st, "SELECT parent_id FROM groups WHERE name = 'b'"), 1);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM policy_versions"), 0);
	assert_int_equal(bw_store_group_delete(c->st, 1, "default", b, "b", &err), BW_E_INVALID);
	assert_int_equal(bw_store_group_delete(c->st, 999, "ghost", 1, "default", &err), BW_E_NOTFOUND);
}

static void collect_state(const struct bw_policy_state_row *r, void *arg)
{
	json_t *o = arg;
	json_object_set_new(o, r->device_id,
	                    json_pack("{s:s, s:s, s:I, s:b}", "assigned", r->assigned_version, "applied",
	                              r->applied_version, "applied_at", (json_int_t)r->applied_at, "oos",
	                              r->out_of_sync));
}

static void test_store_versions_and_states(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	int64_t g = 0;
	ok(bw_store_group_create(c->st, "g", 1, NULL, T0, &g, &err), &err, "group");
	ok(bw_store_policy_version_add(c->st, g, 1, "{\"password\":{\"min_length\":8}}", "alice", "password", T0, &err),
	   &err, "v1");
	ok(bw_store_policy_version_add(c->st, g, 2, "{}", "bob", "password", T0 + 5, &err), &err, "v2");
	assert_int_equal(bw_store_policy_version_add(c->st, g, 2, "{}", "bob", "", T0, &err), BW_E_EXISTS);
	assert_int_equal(bw_store_policy_version_add(c->st, g, 0, "{}", "bob", "", T0, &err), BW_E_INVALID);
	assert_int_equal(bw_store_policy_version_add(c->st, 999, 1, "{}", "bob", "", T0, &err), BW_E_NOTFOUND);
	assert_int_equal(query_int(c->st, "SELECT policy_version FROM groups WHERE name = 'g'"), 2);
	json_t *v = NULL;
	ok(bw_store_policy_version_get(c->st, g, 1, &v, &err), &err, "get");
	assert_int_equal(json_integer_value(json_object_get(v, "version")), 1);
	assert_string_equal(json_string_value(json_object_get(v, "author")), "alice");
	assert_int_equal(json_integer_value(json_object_get(v, "at")), T0);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(json_object_get(v, "document"), "password"),
	                                                    "min_length")),
	                 8);
	json_decref(v);
	assert_int_equal(bw_store_policy_version_get(c->st, g, 3, &v, &err), BW_E_NOTFOUND);
	json_t *h = NULL;
	ok(bw_store_policy_history(c->st, g, 0, 10, &h, &err), &err, "history");
	assert_int_equal(json_array_size(h), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(h, 0), "version")), 2);
	assert_null(json_object_get(json_array_get(h, 0), "document"));
	json_decref(h);
	ok(bw_store_policy_history(c->st, g, 2, 10, &h, &err), &err, "history before");
	assert_int_equal(json_array_size(h), 1);
	json_decref(h);
	assert_int_equal(bw_store_policy_history(c->st, g, 0, 0, &h, &err), BW_E_INVALID);

	add_device(c->st, "d1", "g");
	struct bw_policy_state_row r = {.assigned_at = T0, .resent_at = T0, .applied_at = T0 + 1};
	snprintf(r.device_id, sizeof r.device_id, "d1");
	snprintf(r.assigned_version, sizeof r.assigned_version, "aaaa");
	snprintf(r.applied_version, sizeof r.applied_version, "bbbb");
	ok(bw_store_policy_state_put(c->st, &r, &err), &err, "state");
	r.out_of_sync = true;
	snprintf(r.applied_version, sizeof r.applied_version, "aaaa");
	ok(bw_store_policy_state_put(c->st, &r, &err), &err, "state again");
	snprintf(r.device_id, sizeof r.device_id, "nobody");
	assert_int_equal(bw_store_policy_state_put(c->st, &r, &err), BW_E_NOTFOUND);
	json_t *states = json_object();
	ok(bw_store_policy_state_scan(c->st, collect_state, states, &err), &err, "scan");
	assert_int_equal(json_object_size(states), 1);
	json_t *s1 = json_object_get(states, "d1");
	assert_string_equal(json_string_value(json_object_get(s1, "applied")), "aaaa");
	assert_true(json_is_true(json_object_get(s1, "oos")));
	json_decref(states);
}

/* ---- the service on a minimal host */

static int setup_service(void **state)
{
	setup_open(state);
	struct ctx *c = *state;
	bw_error err = {0};
	struct bw_host *h = &c->h;
	h->base = event_base_new();
	h->store = c->st;
	h->events = bw_events_new(h->base, 10000);
	h->settings.server.var_dir = c->dir;
	h->settings.agent.policy_timeout_ms = 2000;
	h->settings.agent.command_ttl_ms = 7LL * 86400 * 1000;
	assert_non_null(h->base);
	assert_non_null(h->events);
	if (!(h->registry = bw_registry_new(h, &err)))
		fail_msg("registry: %s", err.message);
	if (!(c->p = bw_policies_new(h, &err)))
		fail_msg("bw_policies_new: %s", err.message);
	return 0;
}

static int teardown_service(void **state)
{
	struct ctx *c = *state;
	c->h.settings.server.var_dir = NULL; /* borrowed from c->dir */
	return teardown(state);
}

static void enroll(struct ctx *c, const char *id, const char *group)
{
	add_device(c->st, id, group);
	struct bw_device d = {.cert_not_after = T0 + 86400 * 365, .enrolled_at = T0, .last_seen = T0};
	snprintf(d.id, sizeof d.id, "%s", id);
	snprintf(d.status, sizeof d.status, "active");
	snprintf(d.cert_serial, sizeof d.cert_serial, "0a");
	assert_int_equal(bw_registry_put(c->h.registry, &d), BW_OK);
}

static json_t *eff(struct ctx *c, const char *group)
{
	json_t *o = NULL;
	bw_error err = {0};
	ok(bw_policy_effective(c->p, group, &o, &err), &err, group);
	return o;
}

static int64_t eff_int(struct ctx *c, const char *group, const char *section, const char *field)
{
	json_t *o = eff(c, group);
	int64_t v = json_integer_value(json_object_get(json_object_get(json_object_get(o, "policy"), section), field));
	json_decref(o);
	return v;
}

static void put(struct ctx *c, const char *group, const char *doc_text)
{
	json_t *doc = json_loads(doc_text, 0, NULL), *res = NULL, *errors = NULL;
	assert_non_null(doc);
	bw_error err = {0};
	int rc = bw_policy_put(c->p, group, doc, "tester", &res, &errors, &err);
	if (rc)
		fail_msg("put %s: %s", doc_text, err.message);
	json_decref(res);
	json_decref(errors);
	json_decref(doc);
}

static size_t open_syncs(struct ctx *c, const char *device)
{
	int64_t n = 0;
	bw_error err = {0};
	ok(bw_store_command_open_count(c->st, device, "sync_policy", &n, &err), &err, "open count");
	return (size_t)n;
}

static const char *state_of(struct ctx *c, const char *device, json_t **keep)
{
	json_t *st = NULL;
	bw_error err = {0};
	ok(bw_policy_status(c->p, NULL, NULL, &st, &err), &err, "status");
	size_t i;
	json_t *d;
	const char *found = NULL;
	json_array_foreach(json_object_get(st, "devices"), i, d)
	{
		if (strcmp(json_string_value(json_object_get(d, "device_id")), device) == 0)
			found = json_string_value(json_object_get(d, "state"));
	}
	*keep = st;
	return found;
}

static void test_tree_rules(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	ok(bw_group_create(c->p, "a", NULL, "top", &err), &err, "a");
	ok(bw_group_create(c->p, "b", "a", NULL, &err), &err, "b");
	ok(bw_group_create(c->p, "c", "b", NULL, &err), &err, "c");
	assert_int_equal(bw_group_create(c->p, "a", NULL, NULL, &err), BW_E_EXISTS);
	assert_int_equal(bw_group_create(c->p, "x/y", NULL, NULL, &err), BW_E_INVALID);
	assert_int_equal(bw_group_create(c->p, "x", "nope", NULL, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_group_update(c->p, "a", NULL, "c", NULL, &err), BW_E_STATE);
	assert_non_null(strstr(err.message, "cycle"));
	assert_int_equal(bw_group_update(c->p, "a", NULL, "a", NULL, &err), BW_E_STATE);
	assert_int_equal(bw_group_update(c->p, "default", "root", NULL, NULL, &err), BW_E_STATE);
	assert_int_equal(bw_group_update(c->p, "default", NULL, "a", NULL, &err), BW_E_STATE);
	assert_int_equal(bw_group_delete(c->p, "default", NULL, &err), BW_E_STATE);
	assert_int_equal(bw_group_delete(c->p, "a", NULL, &err), BW_E_STATE);
	assert_non_null(strstr(err.message, "1 subgroups"));
	assert_int_equal(bw_group_delete(c->p, "a", "c", &err), BW_E_STATE); /* into its own subtree */
	ok(bw_group_update(c->p, "c", "c2", "a", "moved", &err), &err, "rename+move");
	json_t *g = NULL;
	ok(bw_group_get(c->p, "a", &g, &err), &err, "get");
	assert_int_equal(json_array_size(json_object_get(g, "children")), 2);
	json_decref(g);
	ok(bw_group_delete(c->p, "a", "default", &err), &err, "delete");
	ok(bw_group_get(c->p, "b", &g, &err), &err, "get b");
	assert_string_equal(json_string_value(json_object_get(g, "parent")), "default");
	json_decref(g);
	/* depth limit */
	char name[32], parent[32] = "default";
	int made = 0;
	for (int i = 0; i < BW_GROUP_DEPTH_MAX + 2; i++) {
		snprintf(name, sizeof name, "deep%d", i);
		if (bw_group_create(c->p, name, parent, NULL, &err) != BW_OK) {
			assert_int_equal(err.code, BW_E_INVALID);
			assert_non_null(strstr(err.message, "levels deep"));
			break;
		}
		made++;
		snprintf(parent, sizeof parent, "%s", name);
	}
	assert_int_equal(made, BW_GROUP_DEPTH_MAX);
}

static void test_inheritance_and_versions(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	ok(bw_group_create(c->p, "top", NULL, NULL, &err), &err, "top");
	ok(bw_group_create(c->p, "sub", "top", NULL, &err), &err, "sub");
	json_t *e0 = eff(c, "sub");
	char v0[32];
	snprintf(v0, sizeof v0, "%s", json_string_value(json_object_get(e0, "version")));
	json_decref(e0);
	put(c, "top", "{\"password\": {\"required\": true, \"min_length\": 8}, \"call_filter\": {\"enabled\": true}}");
	put(c, "sub", "{\"password\": {\"required\": true, \"min_length\": 12}}");
	assert_int_equal(eff_int(c, "top", "password", "min_length"), 8);
	assert_int_equal(eff_int(c, "sub", "password", "min_length"), 12);
	json_t *e = eff(c, "sub");
	assert_true(
	    json_is_true(json_object_get(json_object_get(json_object_get(e, "policy"), "call_filter"), "enabled")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(e, "sources"), "call_filter")), "top");
	assert_string_equal(json_string_value(json_object_get(json_object_get(e, "sources"), "password")), "sub");
	assert_string_equal(json_string_value(json_object_get(json_object_get(e, "sources"), "wifi")), "defaults");
	assert_string_not_equal(json_string_value(json_object_get(e, "version")), v0);
	json_decref(e);

	/* history, versions, diff */
	put(c, "sub", "{\"password\": {\"required\": true, \"min_length\": 14}}");
	json_t *h = NULL, *d = NULL, *v = NULL;
	ok(bw_policy_history(c->p, "sub", 0, 10, &h, &err), &err, "history");
	assert_int_equal(json_array_size(json_object_get(h, "versions")), 2);
	assert_int_equal(json_integer_value(json_object_get(h, "current")), 2);
	assert_string_equal(
	    json_string_value(json_object_get(json_array_get(json_object_get(h, "versions"), 0), "author")), "tester");
	json_decref(h);
	ok(bw_policy_diff_versions(c->p, "sub", 1, 2, &d, &err), &err, "diff");
	json_t *ch = json_array_get(json_object_get(d, "changes"), 0);
	assert_string_equal(json_string_value(json_object_get(ch, "path")), "password.min_length");
	assert_int_equal(json_integer_value(json_object_get(ch, "from")), 12);
	assert_int_equal(json_integer_value(json_object_get(ch, "to")), 14);
	json_decref(d);
	assert_int_equal(bw_policy_diff_versions(c->p, "sub", 1, 7, &d, &err), BW_E_NOTFOUND);
	ok(bw_policy_version(c->p, "sub", 1, &v, &err), &err, "version 1");
	assert_string_equal(json_string_value(json_object_get(v, "summary")), "password");
	json_decref(v);

	/* an invalid document: the validator's errors, nothing stored */
	json_t *bad = json_pack("{s:{}}", "no_such_section"), *res = NULL, *errors = NULL;
	assert_int_equal(bw_policy_put(c->p, "sub", bad, "tester", &res, &errors, &err), BW_E_INVALID);
	assert_true(json_array_size(errors) >= 1);
	assert_null(res);
	json_decref(errors);
	json_decref(bad);
	ok(bw_policy_history(c->p, "sub", 0, 10, &h, &err), &err, "history");
	assert_int_equal(json_integer_value(json_object_get(h, "current")), 2);
	json_decref(h);

	/* the service reloads what it stored */
	bw_policies_free(c->p);
	c->p = bw_policies_new(&c->h, &err);
	assert_non_null(c->p);
	assert_int_equal(eff_int(c, "sub", "password", "min_length"), 14);
	assert_int_equal(eff_int(c, "top", "password", "min_length"), 8);
}

static void test_delivery_lifecycle(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	ok(bw_group_create(c->p, "g1", NULL, NULL, &err), &err, "g1");
	ok(bw_group_create(c->p, "g2", NULL, NULL, &err), &err, "g2");
	put(c, "g2", "{\"privacy\": {\"ios_malicious_profile_scan\": true}}");
	enroll(c, "dev-1", "g1");
	const char *v1 = bw_policy_device_version(c->p, "dev-1");
	assert_non_null(v1);
	assert_int_equal(strlen(v1), BW_POLICY_VERSION_LEN);
	assert_null(bw_policy_device_version(c->p, "no-such-device"));
	char cur[32];
	snprintf(cur, sizeof cur, "%s", v1);
	json_t *keep = NULL;
	assert_string_equal(state_of(c, "dev-1", &keep), "pending");
	json_decref(keep);
	assert_int_equal(open_syncs(c, "dev-1"), 0); /* a new device gets its version in the check-in answer */
	bw_policy_device_applied(c->p, "dev-1", cur);
	assert_string_equal(state_of(c, "dev-1", &keep), "applied");
	json_decref(keep);

	/* the device document */
	json_t *doc = NULL;
	ok(bw_policy_device_document(c->p, "dev-1", &doc, &err), &err, "document");
	assert_string_equal(json_string_value(json_object_get(doc, "version")), cur);
	assert_non_null(json_object_get(json_object_get(doc, "policy"), "password"));
	json_decref(doc);

	/* moving it: new version, sync_policy queued, pending */
	json_t *mv = NULL;
	ok(bw_policy_device_move(c->p, "dev-1", "g2", &mv, &err), &err, "move");
	assert_string_not_equal(json_string_value(json_object_get(mv, "policy_version")), cur);
	json_decref(mv);
	assert_int_equal(open_syncs(c, "dev-1"), 1);
	assert_string_equal(state_of(c, "dev-1", &keep), "pending");
	json_decref(keep);
	struct bw_device rec;
	ok(bw_store_device_get(c->st, "dev-1", &rec, &err), &err, "device");
	assert_string_equal(rec.group_name, "g2");
	assert_int_equal(bw_policy_device_move(c->p, "dev-1", "nope", &mv, &err), BW_E_NOTFOUND);

	/* the device takes and completes the command without reporting: the timeout re-queues it */
	json_t *taken = NULL;
	ok(bw_store_command_take(c->st, "dev-1", T0, 0, 10, &taken, &err), &err, "take");
	const char *cid = json_string_value(json_object_get(json_array_get(taken, 0), "id"));
	ok(bw_store_command_result(c->st, "dev-1", cid, "completed", NULL, NULL, T0, &err), &err, "result");
	json_decref(taken);
	assert_int_equal(open_syncs(c, "dev-1"), 0);
	int64_t now = (int64_t)time(NULL);
	assert_int_equal(bw_policy_check_timeouts(c->p, now), 0); /* not yet */
	assert_int_equal(bw_policy_check_timeouts(c->p, now + 3), 1);
	assert_int_equal(open_syncs(c, "dev-1"), 1);
	assert_string_equal(state_of(c, "dev-1", &keep), "out_of_sync");
	json_decref(keep);
	/* the clock restarted: nothing again until another period passed */
	assert_int_equal(bw_policy_check_timeouts(c->p, now + 4), 0);
	assert_int_equal(bw_policy_check_timeouts(c->p, now + 6), 1);
	assert_int_equal(open_syncs(c, "dev-1"), 1); /* merged with the open one */

	/* it reports the current version: applied, and the timer leaves it alone */
	const char *v2 = bw_policy_device_version(c->p, "dev-1");
	bw_policy_device_applied(c->p, "dev-1", v2);
	assert_string_equal(state_of(c, "dev-1", &keep), "applied");
	json_decref(keep);
	assert_int_equal(bw_policy_check_timeouts(c->p, now + 60), 0);

	/* a policy change of its group: pending again; devices of other groups are not touched */
	enroll(c, "dev-2", "g1");
	bw_policy_device_applied(c->p, "dev-2", bw_policy_device_version(c->p, "dev-2"));
	put(c, "g2", "{\"privacy\": {\"ios_malicious_profile_scan\": false}}");
	assert_string_equal(state_of(c, "dev-1", &keep), "pending");
	json_decref(keep);
	assert_string_equal(state_of(c, "dev-2", &keep), "applied");
	json_decref(keep);
	assert_int_equal(open_syncs(c, "dev-2"), 0);

	/* a sync_policy result naming the version counts as a report too (command.completed) */
	put(c, "g2", "{\"sms_filter\": {\"enabled\": true}}");
	assert_string_equal(state_of(c, "dev-1", &keep), "pending");
	json_decref(keep);
	ok(bw_store_command_take(c->st, "dev-1", T0, 0, 10, &taken, &err), &err, "take 2");
	char cid2[37];
	snprintf(cid2, sizeof cid2, "%s", json_string_value(json_object_get(json_array_get(taken, 0), "id")));
	json_decref(taken);
	char result[64];
	snprintf(result, sizeof result, "{\"policy_version\":\"%s\"}", bw_policy_device_version(c->p, "dev-1"));
	ok(bw_store_command_result(c->st, "dev-1", cid2, "completed", result, NULL, T0, &err), &err, "result 2");
	bw_events_emit(c->h.events, "command.completed",
	               json_pack("{s:s, s:s, s:s, s:s}", "device_id", "dev-1", "command_id", cid2, "type",
	                         "sync_policy", "status", "completed"),
	               NULL);
	bw_events_flush(c->h.events);
	assert_string_equal(state_of(c, "dev-1", &keep), "applied");
	json_decref(keep);

	/* status filters */
	json_t *st = NULL;
	ok(bw_policy_status(c->p, "g1", "applied", &st, &err), &err, "status");
	assert_int_equal(json_array_size(json_object_get(st, "devices")), 1);
	json_decref(st);
	assert_int_equal(bw_policy_status(c->p, NULL, "bogus", &st, &err), BW_E_INVALID);
	assert_int_equal(bw_policy_status(c->p, "nope", NULL, &st, &err), BW_E_NOTFOUND);

	/* the state survives a restart of the service */
	bw_policies_free(c->p);
	c->p = bw_policies_new(&c->h, &err);
	assert_non_null(c->p);
	assert_string_equal(state_of(c, "dev-2", &keep), "applied");
	json_decref(keep);
	assert_string_equal(state_of(c, "dev-1", &keep), "applied");
	json_decref(keep);
	put(c, "g2", "{\"sms_filter\": {\"enabled\": false}}");
	assert_string_equal(state_of(c, "dev-1", &keep), "pending");
	json_decref(keep);

	/* an unregistered device is left out */
	ok(bw_device_unregister(&c->h, "dev-2", "unregistered", "test", &err), &err, "unregister");
	assert_null(state_of(c, "dev-2", &keep));
	json_decref(keep);
	/* the key file lives apart from the database, mode 0600 */
	char key[1200];
	snprintf(key, sizeof key, "%s/keys/policy.key", c->dir);
	struct stat sb;
	assert_int_equal(stat(key, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_migration_creates_groups_for_used_names, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_v3_fixture_upgrades, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_store_functions_need_schema_4, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_store_groups, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_store_versions_and_states, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_tree_rules, setup_service, teardown_service),
	    cmocka_unit_test_setup_teardown(test_inheritance_and_versions, setup_service, teardown_service),
	    cmocka_unit_test_setup_teardown(test_delivery_lifecycle, setup_service, teardown_service),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
