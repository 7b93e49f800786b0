/* tests/unit/test_store_devices.c: the device storage (host/services/store_devices.c, schema 3):
 * the registry and its filters, enrollment keys, invitations, the outbox, the allowlist,
 * settings, refusals, commands, event logs, revoked certificates, the upgrade of the v1 and v2
 * fixtures, and the query plans of the hot statements with 100,000 devices (plans, not speed). */
#include "testutil.h"

#include "store_devices.h"
#include "store_sqlite_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BW_SOURCE_DIR
#define BW_SOURCE_DIR "."
#endif
#define FIXTURE_V1 BW_SOURCE_DIR "/tests/fixtures/db/schema-v1.sql"
#define FIXTURE_V2 BW_SOURCE_DIR "/tests/fixtures/db/schema-v2.sql"

#define T0 1700000000 /* a base time for the tests */

struct ctx {
	char *dir;
	char path[1024];
	bw_store *st;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	assert_non_null(c);
	c->dir = bw_test_tmpdir("store-devices");
	snprintf(c->path, sizeof c->path, "%s/bulwark.db", c->dir);
	*state = c;
	return 0;
}

/* setup, plus a store at the latest schema */
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
	bw_store_close(c->st);
	bw_test_rmtree(c->dir);
	free(c->dir);
	free(c);
	return 0;
}

/* ---- helpers */

static void ok(int rc, const bw_error *err, const char *what)
{
	if (rc != BW_OK)
		fail_msg("%s: code %d: %s", what, rc, err->message);
}

/* A 64-character digest made of one repeated hex character. */
static const char *digest(char c)
{
	static char buf[8][65];
	static int next;
	char *h = buf[next++ % 8];
	memset(h, c, 64);
	h[64] = '\0';
	return h;
}

static void add_device(bw_store *st, const char *id, const char *platform, const char *os, const char *group,
                       int64_t now)
{
	json_t *d = json_object();
	json_object_set_new(d, "platform", json_string(platform));
	if (os)
		json_object_set_new(d, "os_version", json_string(os));
	bw_error err = {0};
	int rc = bw_store_device_create(st, id, d, group, "key", "0A1B2C", T0 + 86400 * 365, now, &err);
	json_decref(d);
	ok(rc, &err, id);
}

static void exec_sql(bw_store *st, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(bw_store_sql_db(st), sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg ? msg : "?");
	sqlite3_free(msg);
}

static int64_t query_int(bw_store *st, const char *sql)
{
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_prepare_v2(bw_store_sql_db(st), sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return v;
}

static const char *jstr(json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static int64_t jint(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* The ids of a listing joined by ',' (into a static buffer). */
static const char *ids_of(json_t *arr)
{
	static char buf[4096];
	buf[0] = '\0';
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v)
	{
		if (i)
			strcat(buf, ",");
		strcat(buf, jstr(v, "id"));
	}
	return buf;
}

static void load_fixture(const char *db_path, const char *sql_path)
{
	FILE *f = fopen(sql_path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	rewind(f);
	char *sql = malloc((size_t)n + 1);
	assert_non_null(sql);
	assert_int_equal(fread(sql, 1, (size_t)n, f), (size_t)n);
	sql[n] = '\0';
	fclose(f);
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	free(sql);
}

/* ---- devices */

static void test_device_create_get_json(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:n, s:s, s:s, s:s, s:{s:s, s:s}, s:s}", "platform",
	                      "android", "os_version", "14", "model", "Pixel 8", "manufacturer", "Google", "serial",
	                      "R5CT1234", "imei", "490154203237518", "meid", "wifi_mac", "02:00:00:aa:bb:cc",
	                      "phone_number", "+15551234567", "agent_version", "1.0.0", "push", "provider", "fcm",
	                      "token", "tok-123", "future_field", "ignored");
	assert_non_null(d);
	ok(bw_store_device_create(c->st, "dev-1", d, "sales", "key", "0a1b2c", T0 + 1000, T0, &err), &err, "create");
	assert_int_equal(bw_store_device_create(c->st, "dev-1", d, "sales", "key", "0a1b2c", T0 + 1000, T0, &err),
	                 BW_E_EXISTS);
	assert_non_null(strstr(err.message, "dev-1"));

	struct bw_device dev;
	ok(bw_store_device_get(c->st, "dev-1", &dev, &err), &err, "get");
	assert_string_equal(dev.id, "dev-1");
	assert_string_equal(dev.platform, "android");
	assert_string_equal(dev.status, "active");
	assert_string_equal(dev.cert_serial, "0a1b2c");
	assert_int_equal(dev.cert_not_after, T0 + 1000);
	assert_int_equal(dev.enrolled_at, T0);
	assert_int_equal(dev.last_seen, T0);
	assert_string_equal(dev.group_name, "sales");
	assert_string_equal(dev.owner, "");
	assert_int_equal(bw_store_device_get(c->st, "dev-2", &dev, &err), BW_E_NOTFOUND);
	assert_non_null(strstr(err.message, "dev-2"));
	assert_string_equal(dev.id, "");

	json_t *j = NULL;
	ok(bw_store_device_json(c->st, "dev-1", &j, &err), &err, "json");
	assert_string_equal(jstr(j, "model"), "Pixel 8");
	assert_string_equal(jstr(j, "manufacturer"), "Google");
	assert_string_equal(jstr(j, "os_version"), "14");
	assert_string_equal(jstr(j, "imei"), "490154203237518");
	assert_true(json_is_null(json_object_get(j, "meid")));
	assert_string_equal(jstr(j, "wifi_mac"), "02:00:00:aa:bb:cc");
	assert_string_equal(jstr(j, "phone_number"), "+15551234567");
	assert_string_equal(jstr(j, "group"), "sales");
	assert_string_equal(jstr(j, "enroll_method"), "key");
	assert_string_equal(jstr(json_object_get(j, "push"), "provider"), "fcm");
	assert_string_equal(jstr(json_object_get(j, "push"), "token"), "tok-123");
	assert_true(json_is_null(json_object_get(j, "inventory")));
	assert_int_equal(jint(j, "inventory_at"), 0);
	assert_int_equal(jint(j, "status_changed_at"), T0);
	assert_null(json_object_get(j, "future_field"));
	json_decref(j);
	assert_int_equal(bw_store_device_json(c->st, "nope", &j, &err), BW_E_NOTFOUND);
	assert_null(j);
	json_decref(d);

	/* refusals name the field */
	static const struct {
		const char *json, *field;
	} bad[] = {
	    {"{\"platform\":\"windows\"}", "device.platform"},
	    {"{}", "device.platform"},
	    {"{\"platform\":\"ios\",\"imei\":\"12345\"}", "device.imei"},
	    {"{\"platform\":\"ios\",\"meid\":\"A0000000000000\"}", "device.meid"},
	    {"{\"platform\":\"ios\",\"wifi_mac\":\"02-00-00-aa-bb-cc\"}", "device.wifi_mac"},
	    {"{\"platform\":\"ios\",\"model\":42}", "device.model"},
	    {"{\"platform\":\"ios\",\"model\":\"a\\nb\"}", "device.model"},
	    {"{\"platform\":\"ios\",\"push\":{\"token\":\"x\"}}", "device.push.provider"},
	    {"{\"platform\":\"ios\",\"push\":\"fcm\"}", "device.push"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *b = json_loads(bad[i].json, 0, NULL);
		assert_non_null(b);
		assert_int_equal(bw_store_device_create(c->st, "dev-bad", b, NULL, "key", "01", 1, T0, &err),
		                 BW_E_INVALID);
		if (!strstr(err.message, bad[i].field))
			fail_msg("%s: message \"%s\" does not name %s", bad[i].json, err.message, bad[i].field);
		json_decref(b);
	}
	char long_model[200];
	memset(long_model, 'm', sizeof long_model - 1);
	long_model[sizeof long_model - 1] = '\0';
	json_t *b = json_pack("{s:s, s:s}", "platform", "ios", "model", long_model);
	assert_int_equal(bw_store_device_create(c->st, "dev-bad", b, NULL, "key", "01", 1, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "device.model: longer than 128"));
	assert_int_equal(bw_store_device_create(c->st, "bad id!", b, NULL, "key", "01", 1, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "device id"));
	json_object_del(b, "model");
	assert_int_equal(bw_store_device_create(c->st, "dev-bad", b, NULL, "Key!", "01", 1, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "enroll method"));
	assert_int_equal(bw_store_device_create(c->st, "dev-bad", b, NULL, "key", "xyz", 1, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "certificate serial"));
	assert_int_equal(bw_store_device_create(c->st, "dev-bad", NULL, NULL, "key", "01", 1, T0, &err), BW_E_INVALID);
	json_decref(b);
	int64_t n;
	ok(bw_store_device_count(c->st, &n, &err), &err, "count");
	assert_int_equal(n, 1);
}

static void test_device_update_status_cert_inventory(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	add_device(c->st, "dev-1", "android", "13", NULL, T0);

	json_t *f = json_pack("{s:s, s:s, s:{s:s, s:s}, s:s, s:s, s:i}", "os_version", "14.1", "agent_version", "1.1.0",
	                      "push", "provider", "fcm", "token", "new-token", "owner", "alice@example.com", "group",
	                      "field", "battery", 50);
	ok(bw_store_device_update(c->st, "dev-1", f, &err), &err, "update");
	json_decref(f);
	json_t *j = NULL;
	ok(bw_store_device_json(c->st, "dev-1", &j, &err), &err, "json");
	assert_string_equal(jstr(j, "os_version"), "14.1");
	assert_string_equal(jstr(j, "agent_version"), "1.1.0");
	assert_string_equal(jstr(j, "owner"), "alice@example.com");
	assert_string_equal(jstr(j, "group"), "field");
	assert_string_equal(jstr(json_object_get(j, "push"), "token"), "new-token");
	json_decref(j);
	/* the sortable key follows the version */
	assert_int_equal(query_int(c->st, "SELECT os_version_key = '0000000014.0000000001' FROM devices"), 1);

	/* only present fields change; null clears */
	f = json_pack("{s:s, s:n, s:n}", "model", "Pixel 9", "push", "owner");
	ok(bw_store_device_update(c->st, "dev-1", f, &err), &err, "update 2");
	json_decref(f);
	ok(bw_store_device_json(c->st, "dev-1", &j, &err), &err, "json");
	assert_string_equal(jstr(j, "model"), "Pixel 9");
	assert_string_equal(jstr(j, "os_version"), "14.1");
	assert_string_equal(jstr(j, "owner"), "");
	assert_true(json_is_null(json_object_get(j, "push")));
	json_decref(j);
	f = json_pack("{s:n}", "os_version");
	ok(bw_store_device_update(c->st, "dev-1", f, &err), &err, "update 3");
	json_decref(f);
	assert_int_equal(query_int(c->st, "SELECT os_version_key IS NULL AND os_version IS NULL FROM devices"), 1);

	f = json_pack("{s:s}", "model", "x");
	assert_int_equal(bw_store_device_update(c->st, "dev-2", f, &err), BW_E_NOTFOUND);
	json_decref(f);
	f = json_pack("{s:s}", "imei", "not-an-imei");
	assert_int_equal(bw_store_device_update(c->st, "dev-1", f, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "device.imei"));
	json_decref(f);

	/* status: the change time moves only on a change */
	ok(bw_store_device_set_status(c->st, "dev-1", "unregistered", T0 + 10, &err), &err, "status");
	ok(bw_store_device_set_status(c->st, "dev-1", "unregistered", T0 + 20, &err), &err, "status again");
	struct bw_device dev;
	ok(bw_store_device_get(c->st, "dev-1", &dev, &err), &err, "get");
	assert_string_equal(dev.status, "unregistered");
	ok(bw_store_device_json(c->st, "dev-1", &j, &err), &err, "json");
	assert_int_equal(jint(j, "status_changed_at"), T0 + 10);
	json_decref(j);
	assert_int_equal(bw_store_device_set_status(c->st, "dev-1", "lost", T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "status"));
	assert_int_equal(bw_store_device_set_status(c->st, "dev-9", "wiped", T0, &err), BW_E_NOTFOUND);

	/* certificate */
	ok(bw_store_device_set_cert(c->st, "dev-1", "ff01", T0 + 5000, &err), &err, "cert");
	ok(bw_store_device_get(c->st, "dev-1", &dev, &err), &err, "get");
	assert_string_equal(dev.cert_serial, "ff01");
	assert_int_equal(dev.cert_not_after, T0 + 5000);
	assert_int_equal(bw_store_device_set_cert(c->st, "dev-9", "ff01", 1, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_device_set_cert(c->st, "dev-1", "", 1, &err), BW_E_INVALID);
	assert_int_equal(bw_store_device_set_cert(c->st, "dev-1", "ff", -1, &err), BW_E_INVALID);

	/* inventory: replaced as a whole */
	ok(bw_store_device_set_inventory(c->st, "dev-1", "{\"apps\":[\"a\",\"b\"]}", T0 + 30, &err), &err, "inv");
	ok(bw_store_device_set_inventory(c->st, "dev-1", "{\"apps\":[\"c\"],\"root\":{\"rooted\":false}}", T0 + 40,
	                                 &err),
	   &err, "inv 2");
	ok(bw_store_device_json(c->st, "dev-1", &j, &err), &err, "json");
	json_t *inv = json_object_get(j, "inventory");
	assert_int_equal(json_array_size(json_object_get(inv, "apps")), 1);
	assert_true(json_is_false(json_object_get(json_object_get(inv, "root"), "rooted")));
	assert_int_equal(jint(j, "inventory_at"), T0 + 40);
	json_decref(j);
	assert_int_equal(bw_store_device_set_inventory(c->st, "dev-1", "{\"apps\":", T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "inventory: not valid JSON"));
	assert_int_equal(bw_store_device_set_inventory(c->st, "dev-1", "[1,2]", T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "inventory: must be a JSON object"));
	assert_int_equal(bw_store_device_set_inventory(c->st, "dev-9", "{}", T0, &err), BW_E_NOTFOUND);
	assert_non_null(strstr(err.message, "dev-9"));
	assert_int_equal(bw_store_device_set_inventory(c->st, "dev-1", NULL, T0, &err), BW_E_INVALID);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_inventory"), 1);
}

static void test_touch_many(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	enum { N = 1000 };
	static char idbuf[N][16];
	const char *ids[N + 1];
	int64_t seen[N + 1];
	exec_sql(c->st, "BEGIN");
	for (int i = 0; i < N; i++) {
		snprintf(idbuf[i], sizeof idbuf[i], "dev-%04d", i);
		add_device(c->st, idbuf[i], "android", "14", NULL, T0);
		ids[i] = idbuf[i];
		seen[i] = T0 + 100 + i;
	}
	exec_sql(c->st, "COMMIT");
	ids[N] = "dev-unknown"; /* ignored */
	seen[N] = T0 + 5;

	ok(bw_store_device_touch_many(c->st, ids, seen, N + 1, &err), &err, "touch");
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM devices WHERE last_seen = 1700000100 + "
	                                  "CAST(substr(id, 5) AS INTEGER)"),
	                 N);
	assert_true(sqlite3_get_autocommit(bw_store_sql_db(c->st)));

	/* an older time never moves last_seen back */
	int64_t older = T0 + 1;
	ok(bw_store_device_touch_many(c->st, ids, &older, 1, &err), &err, "touch older");
	struct bw_device d;
	ok(bw_store_device_get(c->st, "dev-0000", &d, &err), &err, "get");
	assert_int_equal(d.last_seen, T0 + 100);

	/* a malformed id refuses the whole call before anything is written */
	const char *bad[2] = {"dev-0001", "bad id"};
	int64_t later[2] = {T0 + 9000, T0 + 9000};
	assert_int_equal(bw_store_device_touch_many(c->st, bad, later, 2, &err), BW_E_INVALID);
	ok(bw_store_device_get(c->st, "dev-0001", &d, &err), &err, "get");
	assert_int_equal(d.last_seen, T0 + 101);
	ok(bw_store_device_touch_many(c->st, NULL, NULL, 0, &err), &err, "touch none");
	assert_int_equal(bw_store_device_touch_many(c->st, NULL, later, 1, &err), BW_E_INVALID);

	/* inside the caller's transaction: a savepoint, undone with it */
	exec_sql(c->st, "BEGIN");
	ok(bw_store_device_touch_many(c->st, bad, later, 1, &err), &err, "touch in tx");
	assert_false(sqlite3_get_autocommit(bw_store_sql_db(c->st)));
	exec_sql(c->st, "ROLLBACK");
	ok(bw_store_device_get(c->st, "dev-0001", &d, &err), &err, "get");
	assert_int_equal(d.last_seen, T0 + 101);
}

/* The os filter compares dotted versions: "12" = "12.0" = "12.0.0", 9 < 10. */
static void test_list_os_versions(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	static const struct {
		const char *id, *os;
	} devs[] = {
	    {"a", "9.1"},       {"b", "10"},   {"c", "12"},        {"d", "12.0"},     {"e", "12.0.1"}, {"f", "12.0.0"},
	    {"g", "12.1-beta"}, {"h", "12.1"}, {"i", "1.2.3.4.5"}, {"j", "Tiramisu"}, {"k", NULL},     {"l", "012.00"},
	};
	for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++)
		add_device(c->st, devs[i].id, "android", devs[i].os, NULL, T0);
	static const struct {
		const char *op, *version, *expect;
	} cases[] = {
	    {"=", "12", "c,d,f,l"},
	    {"=", "12.0", "c,d,f,l"},
	    {"=", "12.0.0", "c,d,f,l"},
	    {"=", "12.0.1", "e"},
	    {"<", "12", "a,b,i"},
	    {"<", "10", "a,i"},
	    {"<=", "9.1", "a,i"},
	    {">", "9.1", "b,c,d,e,f,g,h,l"},
	    {">=", "10", "b,c,d,e,f,g,h,l"},
	    {">", "12", "e,g,h"},
	    {">", "12.0", "e,g,h"},
	    {">=", "12.0.1", "e,g,h"},
	    {"<", "12.1", "a,b,c,d,e,f,i,l"},
	    {"<=", "12.1", "a,b,c,d,e,f,h,i,l"}, /* 12.1-beta sorts after 12.1 and before 12.1.1 */
	    {">", "12.1", "g"},
	    {"<", "12.1.1", "a,b,c,d,e,f,g,h,i,l"},
	    {"=", "1.2.3.4.5", "i"},
	    {">", "100", ""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct bw_device_filter f = {.os_op = cases[i].op, .os_version = cases[i].version, .limit = 100};
		json_t *list = NULL;
		ok(bw_store_device_list(c->st, &f, &list, &err), &err, "list");
		if (strcmp(ids_of(list), cases[i].expect) != 0)
			fail_msg("os %s %s: got \"%s\", expected \"%s\"", cases[i].op, cases[i].version, ids_of(list),
			         cases[i].expect);
		json_decref(list);
	}
	/* refusals */
	json_t *list = NULL;
	struct bw_device_filter f = {.os_op = "~", .os_version = "12", .limit = 10};
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "operator"));
	f.os_op = "=";
	f.os_version = "latest";
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "os filter version"));
	f.os_version = NULL;
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	f.os_op = NULL;
	f.os_version = "12";
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	assert_null(list);
}

static void scan_count(const struct bw_device *d, void *arg)
{
	assert_true(d->id[0] != '\0');
	assert_true(strcmp(d->platform, "android") == 0 || strcmp(d->platform, "ios") == 0);
	++*(int *)arg;
}

static void test_list_filters_paging(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	char id[16];
	for (int i = 0; i < 25; i++) {
		snprintf(id, sizeof id, "d%02d", i);
		add_device(c->st, id, i % 2 ? "ios" : "android", i % 3 ? "14" : "17.2", i < 10 ? "sales" : NULL,
		           T0 + i);
	}
	ok(bw_store_device_set_status(c->st, "d03", "wiped", T0, &err), &err, "status");
	ok(bw_store_device_set_status(c->st, "d04", "unregistered", T0, &err), &err, "status");

	json_t *list = NULL;
	struct bw_device_filter f = {.platform = "ios", .limit = 100};
	ok(bw_store_device_list(c->st, &f, &list, &err), &err, "platform");
	assert_string_equal(ids_of(list), "d01,d03,d05,d07,d09,d11,d13,d15,d17,d19,d21,d23");
	json_t *first = json_array_get(list, 0);
	assert_string_equal(jstr(first, "platform"), "ios");
	assert_string_equal(jstr(first, "os_version"), "14");
	assert_int_equal(jint(first, "enrolled_at"), T0 + 1);
	assert_non_null(json_object_get(first, "last_seen"));
	json_decref(list);

	f = (struct bw_device_filter){.status = "active", .group = "sales", .limit = 100};
	ok(bw_store_device_list(c->st, &f, &list, &err), &err, "status+group");
	assert_string_equal(ids_of(list), "d00,d01,d02,d05,d06,d07,d08,d09");
	json_decref(list);

	f = (struct bw_device_filter){
	    .group = "default", .platform = "android", .os_op = ">=", .os_version = "17", .limit = 100};
	ok(bw_store_device_list(c->st, &f, &list, &err), &err, "default group+android+os"); /* no group = default */
	assert_string_equal(ids_of(list), "d12,d18,d24");
	json_decref(list);

	f = (struct bw_device_filter){
	    .status = "wiped", .platform = "ios", .group = "sales", .os_op = "=", .os_version = "17.2.0", .limit = 100};
	ok(bw_store_device_list(c->st, &f, &list, &err), &err, "all filters");
	assert_string_equal(ids_of(list), "d03");
	json_decref(list);

	/* paging by id */
	f = (struct bw_device_filter){.limit = 10};
	char pages[3][4096];
	for (int p = 0; p < 3; p++) {
		ok(bw_store_device_list(c->st, &f, &list, &err), &err, "page");
		snprintf(pages[p], sizeof pages[p], "%s", ids_of(list));
		static char after[37];
		snprintf(after, sizeof after, "%s", jstr(json_array_get(list, json_array_size(list) - 1), "id"));
		f.after_id = after;
		assert_int_equal(json_array_size(list), p < 2 ? 10 : 5);
		json_decref(list);
	}
	assert_string_equal(pages[0], "d00,d01,d02,d03,d04,d05,d06,d07,d08,d09");
	assert_string_equal(pages[2], "d20,d21,d22,d23,d24");
	f.after_id = "d24";
	ok(bw_store_device_list(c->st, &f, &list, &err), &err, "past the end");
	assert_int_equal(json_array_size(list), 0);
	json_decref(list);

	/* refusals */
	f = (struct bw_device_filter){.limit = 0};
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "limit"));
	f.limit = 1001;
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	f = (struct bw_device_filter){.platform = "symbian", .limit = 1};
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	f = (struct bw_device_filter){.status = "gone", .limit = 1};
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	f = (struct bw_device_filter){.after_id = "x'; DROP TABLE devices; --", .limit = 1};
	assert_int_equal(bw_store_device_list(c->st, &f, &list, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "after_id"));
	assert_int_equal(bw_store_device_list(c->st, NULL, &list, &err), BW_E_INVALID);

	int64_t n = 0;
	ok(bw_store_device_count(c->st, &n, &err), &err, "count");
	assert_int_equal(n, 25);
	int seen = 0;
	ok(bw_store_device_scan(c->st, scan_count, &seen, &err), &err, "scan");
	assert_int_equal(seen, 25);
	assert_int_equal(bw_store_device_scan(c->st, NULL, NULL, &err), BW_E_INVALID);
}

/* ---- enrollment keys */

static void test_keys(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	char group[129];
	ok(bw_store_key_create(c->st, "k1", digest('1'), "K7Q2", "sales", 3, 0, "alice", T0, &err), &err, "k1");
	ok(bw_store_key_create(c->st, "k2", digest('2'), "AB12", NULL, 0, T0 + 100, "alice", T0 + 1, &err), &err, "k2");
	ok(bw_store_key_create(c->st, "k3", digest('3'), "CD34", "ops", 0, 0, NULL, T0 + 2, &err), &err, "k3");

	/* three uses, then used up */
	for (int i = 0; i < 3; i++) {
		ok(bw_store_key_use(c->st, digest('1'), T0 + 10, group, &err), &err, "use k1");
		assert_string_equal(group, "sales");
	}
	assert_int_equal(bw_store_key_use(c->st, digest('1'), T0 + 10, group, &err), BW_E_DENIED);
	assert_non_null(strstr(err.message, "used up"));
	assert_string_equal(group, "");
	assert_null(strstr(err.message, digest('1')));

	/* unlimited until it expires (at expires_at exactly, it has) */
	for (int i = 0; i < 5; i++)
		ok(bw_store_key_use(c->st, digest('2'), T0 + 99, group, &err), &err, "use k2");
	assert_string_equal(group, "");
	assert_int_equal(bw_store_key_use(c->st, digest('2'), T0 + 100, group, &err), BW_E_DENIED);
	assert_non_null(strstr(err.message, "expired"));

	/* revoked */
	ok(bw_store_key_use(c->st, digest('3'), T0, group, &err), &err, "use k3");
	ok(bw_store_key_revoke(c->st, "k3", &err), &err, "revoke");
	ok(bw_store_key_revoke(c->st, "k3", &err), &err, "revoke again");
	assert_int_equal(bw_store_key_use(c->st, digest('3'), T0, group, &err), BW_E_DENIED);
	assert_non_null(strstr(err.message, "revoked"));
	assert_int_equal(bw_store_key_revoke(c->st, "k9", &err), BW_E_NOTFOUND);

	/* unknown, malformed */
	assert_int_equal(bw_store_key_use(c->st, digest('9'), T0, group, &err), BW_E_NOTFOUND);
	assert_null(strstr(err.message, digest('9')));
	assert_int_equal(bw_store_key_use(c->st, "K7Q2-9XHD-M3PA", T0, group, &err), BW_E_INVALID);
	assert_null(strstr(err.message, "K7Q2"));
	assert_int_equal(bw_store_key_use(c->st, NULL, T0, group, &err), BW_E_INVALID);

	/* creation refusals: the hash never shows */
	assert_int_equal(bw_store_key_create(c->st, "k4", digest('1'), "K7Q2", NULL, 0, 0, NULL, T0, &err),
	                 BW_E_EXISTS);
	assert_null(strstr(err.message, digest('1')));
	assert_int_equal(bw_store_key_create(c->st, "k1", digest('4'), "K7Q2", NULL, 0, 0, NULL, T0, &err),
	                 BW_E_EXISTS);
	assert_non_null(strstr(err.message, "k1"));
	assert_int_equal(bw_store_key_create(c->st, "k4", "ABC", "K7Q2", NULL, 0, 0, NULL, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "key hash"));
	assert_int_equal(bw_store_key_create(c->st, "k4", digest('4'), "", NULL, 0, 0, NULL, T0, &err), BW_E_INVALID);
	assert_int_equal(bw_store_key_create(c->st, "k4", digest('4'), "P", NULL, -1, 0, NULL, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "max uses"));

	json_t *list = NULL;
	ok(bw_store_key_list(c->st, &list, &err), &err, "list");
	assert_string_equal(ids_of(list), "k1,k2,k3");
	json_t *k1 = json_array_get(list, 0);
	assert_int_equal(jint(k1, "uses"), 3);
	assert_int_equal(jint(k1, "max_uses"), 3);
	assert_string_equal(jstr(k1, "prefix"), "K7Q2");
	assert_string_equal(jstr(k1, "group"), "sales");
	assert_string_equal(jstr(k1, "created_by"), "alice");
	assert_true(json_is_true(json_object_get(json_array_get(list, 2), "revoked")));
	assert_int_equal(jint(json_array_get(list, 1), "uses"), 5);
	char *dump = json_dumps(list, 0);
	assert_null(strstr(dump, digest('1')));
	assert_null(strstr(dump, "hash"));
	free(dump);
	json_decref(list);
}

/* ---- invitations and outbox */

static void test_invitations_outbox(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	/* two invitations for one address, made with different case */
	ok(bw_store_invitation_create(c->st, "i1", "Bob@Example.COM", digest('a'), T0 + 1000, "alice", T0, &err), &err,
	   "i1");
	ok(bw_store_invitation_create(c->st, "i2", "bob@example.com", digest('b'), T0 + 1000, "alice", T0 + 1, &err),
	   &err, "i2");
	ok(bw_store_invitation_create(c->st, "i3", "carol@example.com", digest('c'), T0 + 50, NULL, T0 + 2, &err), &err,
	   "i3");
	assert_int_equal(bw_store_invitation_create(c->st, "i1", "x@example.com", digest('d'), 0, NULL, T0, &err),
	                 BW_E_EXISTS);
	assert_int_equal(bw_store_invitation_create(c->st, "i4", "not-an-address", digest('d'), 0, NULL, T0, &err),
	                 BW_E_INVALID);
	assert_non_null(strstr(err.message, "e-mail"));
	assert_int_equal(bw_store_invitation_create(c->st, "i4", "x@example.com", "code", 0, NULL, T0, &err),
	                 BW_E_INVALID);
	assert_null(strstr(err.message, "code\""));

	/* each usable once, with its own code, whatever the case of the address */
	ok(bw_store_invitation_use(c->st, "BOB@example.com", digest('b'), T0 + 10, &err), &err, "use i2");
	assert_int_equal(bw_store_invitation_use(c->st, "bob@example.com", digest('b'), T0 + 11, &err), BW_E_DENIED);
	assert_non_null(strstr(err.message, "used"));
	assert_null(strstr(err.message, digest('b')));
	ok(bw_store_invitation_use(c->st, "bob@EXAMPLE.com", digest('a'), T0 + 12, &err), &err, "use i1");
	assert_int_equal(bw_store_invitation_use(c->st, "bob@example.com", digest('a'), T0 + 13, &err), BW_E_DENIED);
	/* the wrong code, or another address's code */
	assert_int_equal(bw_store_invitation_use(c->st, "bob@example.com", digest('c'), T0, &err), BW_E_NOTFOUND);
	assert_null(strstr(err.message, digest('c')));
	/* expired */
	assert_int_equal(bw_store_invitation_use(c->st, "carol@example.com", digest('c'), T0 + 50, &err), BW_E_DENIED);
	assert_non_null(strstr(err.message, "expired"));
	assert_int_equal(bw_store_invitation_use(c->st, "carol", digest('c'), T0, &err), BW_E_INVALID);

	json_t *list = NULL;
	ok(bw_store_invitation_list(c->st, &list, &err), &err, "list");
	assert_string_equal(ids_of(list), "i1,i2,i3");
	assert_string_equal(jstr(json_array_get(list, 0), "email"), "bob@example.com");
	assert_int_equal(jint(json_array_get(list, 0), "used_at"), T0 + 12);
	assert_int_equal(jint(json_array_get(list, 1), "used_at"), T0 + 10);
	assert_int_equal(jint(json_array_get(list, 2), "used_at"), 0);
	char *dump = json_dumps(list, 0);
	assert_null(strstr(dump, digest('a')));
	free(dump);
	json_decref(list);

	/* outbox */
	ok(bw_store_outbox_add(c->st, "m1", "bob@example.com", "Your invitation", "Code: 1234\n", T0, &err), &err,
	   "m1");
	ok(bw_store_outbox_add(c->st, "m2", "carol@example.com", "Hello", "", T0 + 1, &err), &err, "m2");
	assert_int_equal(bw_store_outbox_add(c->st, "m1", "bob@example.com", "s", "b", T0, &err), BW_E_EXISTS);
	assert_int_equal(bw_store_outbox_add(c->st, "m3", "bob", "s", "b", T0, &err), BW_E_INVALID);
	assert_int_equal(bw_store_outbox_add(c->st, "m3", "bob@example.com", "a\r\nBcc: x@y", "b", T0, &err),
	                 BW_E_INVALID);
	assert_non_null(strstr(err.message, "mail subject"));
	assert_int_equal(bw_store_outbox_add(c->st, "m3", "bob@example.com", "s", NULL, T0, &err), BW_E_INVALID);
	ok(bw_store_outbox_list(c->st, &list, &err), &err, "outbox");
	assert_string_equal(ids_of(list), "m1,m2");
	assert_string_equal(jstr(json_array_get(list, 0), "to"), "bob@example.com");
	assert_string_equal(jstr(json_array_get(list, 0), "subject"), "Your invitation");
	assert_string_equal(jstr(json_array_get(list, 0), "body"), "Code: 1234\n");
	assert_int_equal(jint(json_array_get(list, 1), "sent_at"), 0);
	json_decref(list);
}

/* ---- allowlist, settings, refusals */

static void test_allowlist_settings_refusals(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	ok(bw_store_allowlist_add(c->st, "imei", "490154203237518", "Bob's phone", T0, &err), &err, "imei");
	ok(bw_store_allowlist_add(c->st, "meid", "a0000000000001", NULL, T0, &err), &err, "meid");
	ok(bw_store_allowlist_add(c->st, "wifi_mac", "02:00:00:aa:bb:cc", "", T0, &err), &err, "mac");
	assert_int_equal(bw_store_allowlist_add(c->st, "imei", "490154203237518", NULL, T0, &err), BW_E_EXISTS);
	assert_int_equal(bw_store_allowlist_add(c->st, "serial", "1234", NULL, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "allowlist kind"));
	assert_int_equal(bw_store_allowlist_add(c->st, "wifi_mac", "02:00:00:AA:BB:CC", NULL, T0, &err), BW_E_INVALID);
	assert_int_equal(bw_store_allowlist_add(c->st, "imei", "49015420323751", NULL, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "15 digits"));

	assert_true(bw_store_allowlist_contains(c->st, "imei", "490154203237518"));
	assert_true(bw_store_allowlist_contains(c->st, "wifi_mac", "02:00:00:aa:bb:cc"));
	assert_false(bw_store_allowlist_contains(c->st, "meid", "490154203237518"));
	assert_false(bw_store_allowlist_contains(c->st, "imei", "490154203237519"));
	assert_false(bw_store_allowlist_contains(c->st, "imei", NULL));
	assert_false(bw_store_allowlist_contains(NULL, "imei", "490154203237518"));

	json_t *list = NULL;
	ok(bw_store_allowlist_list(c->st, &list, &err), &err, "list");
	assert_int_equal(json_array_size(list), 3);
	assert_string_equal(jstr(json_array_get(list, 0), "kind"), "imei");
	assert_string_equal(jstr(json_array_get(list, 0), "note"), "Bob's phone");
	assert_string_equal(jstr(json_array_get(list, 2), "value"), "02:00:00:aa:bb:cc");
	json_decref(list);
	ok(bw_store_allowlist_remove(c->st, "imei", "490154203237518", &err), &err, "remove");
	assert_false(bw_store_allowlist_contains(c->st, "imei", "490154203237518"));
	assert_int_equal(bw_store_allowlist_remove(c->st, "imei", "490154203237518", &err), BW_E_NOTFOUND);

	/* settings */
	char *v = NULL;
	assert_int_equal(bw_store_setting_get(c->st, "allowlist.enabled", &v, &err), BW_E_NOTFOUND);
	assert_null(v);
	ok(bw_store_setting_set(c->st, "allowlist.enabled", "true", &err), &err, "set");
	ok(bw_store_setting_set(c->st, "allowlist.enabled", "false", &err), &err, "set again");
	ok(bw_store_setting_get(c->st, "allowlist.enabled", &v, &err), &err, "get");
	assert_string_equal(v, "false");
	free(v);
	assert_int_equal(bw_store_setting_set(c->st, "", "x", &err), BW_E_INVALID);
	assert_int_equal(bw_store_setting_set(c->st, "n", NULL, &err), BW_E_INVALID);

	/* refusals: newest first; hostile bytes are cleaned, not refused */
	ok(bw_store_refusal_add(c->st, T0, "192.0.2.1", "unknown key", NULL, &err), &err, "r1");
	ok(bw_store_refusal_add(c->st, T0 + 1, "192.0.2.2", "bad imei", "imei \xff\xfe", &err), &err, "r2");
	ok(bw_store_refusal_add(c->st, T0 + 2, NULL, "allowlist", "{\"imei\":\"1\"}", &err), &err, "r3");
	assert_int_equal(bw_store_refusal_add(c->st, T0, NULL, "", NULL, &err), BW_E_INVALID);
	ok(bw_store_refusal_list(c->st, 2, &list, &err), &err, "refusals");
	assert_int_equal(json_array_size(list), 2);
	assert_string_equal(jstr(json_array_get(list, 0), "reason"), "allowlist");
	assert_true(json_is_null(json_object_get(json_array_get(list, 0), "address")));
	assert_string_equal(jstr(json_array_get(list, 1), "detail"), "imei ??");
	assert_int_equal(jint(json_array_get(list, 1), "at"), T0 + 1);
	json_decref(list);
	assert_int_equal(bw_store_refusal_list(c->st, 0, &list, &err), BW_E_INVALID);

	/* the table keeps the newest 10,000 */
	exec_sql(c->st, "BEGIN");
	for (int i = 0; i < 10005; i++)
		ok(bw_store_refusal_add(c->st, T0 + 10 + i, "192.0.2.9", "flood", NULL, &err), &err, "flood");
	exec_sql(c->st, "COMMIT");
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM enrollment_refusals"), 10000);
	assert_int_equal(query_int(c->st, "SELECT min(at) FROM enrollment_refusals"), T0 + 15);
}

/* ---- commands */

static void collect_id(const char *id, void *arg)
{
	strcat(arg, id);
	strcat(arg, ";");
}

static void test_commands(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	add_device(c->st, "dev-1", "android", "14", NULL, T0);
	add_device(c->st, "dev-2", "ios", "17", NULL, T0);

	ok(bw_store_command_create(c->st, "c-low", "dev-1", "locate", NULL, 0, 0, "alice", T0, &err), &err, "c-low");
	ok(bw_store_command_create(c->st, "c-lock", "dev-1", "lock", "{\"message\":\"hi\"}", 10, 0, "alice", T0 + 1,
	                           &err),
	   &err, "c-lock");
	ok(bw_store_command_create(c->st, "c-scan", "dev-1", "scan", "{}", 0, T0 + 500, NULL, T0 + 2, &err), &err,
	   "c-scan");
	ok(bw_store_command_create(c->st, "c-old", "dev-1", "update", NULL, 5, T0 + 50, NULL, T0 + 3, &err), &err,
	   "c-old");
	ok(bw_store_command_create(c->st, "c-2", "dev-2", "wipe", NULL, 0, 0, NULL, T0 + 4, &err), &err, "c-2");
	/* refusals */
	assert_int_equal(bw_store_command_create(c->st, "c-x", "dev-9", "lock", NULL, 0, 0, NULL, T0, &err),
	                 BW_E_NOTFOUND);
	assert_non_null(strstr(err.message, "dev-9"));
	assert_int_equal(bw_store_command_create(c->st, "c-low", "dev-1", "lock", NULL, 0, 0, NULL, T0, &err),
	                 BW_E_EXISTS);
	assert_int_equal(bw_store_command_create(c->st, "c-x", "dev-1", "lock", "{bad", 0, 0, NULL, T0, &err),
	                 BW_E_INVALID);
	assert_non_null(strstr(err.message, "command params"));
	assert_int_equal(bw_store_command_create(c->st, "c-x", "dev-1", "lock", "[1]", 0, 0, NULL, T0, &err),
	                 BW_E_INVALID);
	assert_int_equal(bw_store_command_create(c->st, "c-x", "dev-1", "Lock It", NULL, 0, 0, NULL, T0, &err),
	                 BW_E_INVALID);
	assert_non_null(strstr(err.message, "command type"));

	int64_t n = 0, age = 0;
	ok(bw_store_command_open_count(c->st, "dev-1", NULL, &n, &err), &err, "open");
	assert_int_equal(n, 4);
	ok(bw_store_command_open_count(c->st, "dev-1", "lock", &n, &err), &err, "open lock");
	assert_int_equal(n, 1);
	ok(bw_store_command_open_count(c->st, "dev-1", "wipe", &n, &err), &err, "open wipe");
	assert_int_equal(n, 0);

	/* take at T0+100: c-old has expired (not delivered); highest priority first, then oldest */
	json_t *taken = NULL;
	ok(bw_store_command_take(c->st, "dev-1", T0 + 100, T0 + 100 - 60, 10, &taken, &err), &err, "take");
	assert_string_equal(ids_of(taken), "c-lock,c-low,c-scan");
	assert_string_equal(jstr(json_object_get(json_array_get(taken, 0), "params"), "message"), "hi");
	assert_string_equal(jstr(json_array_get(taken, 0), "type"), "lock");
	assert_int_equal(jint(json_array_get(taken, 2), "expires_at"), T0 + 500);
	json_decref(taken);
	json_t *cmd = NULL;
	ok(bw_store_command_get(c->st, "c-lock", &cmd, &err), &err, "get");
	assert_string_equal(jstr(cmd, "state"), "sent");
	assert_int_equal(jint(cmd, "sent_at"), T0 + 100);
	assert_int_equal(jint(cmd, "attempts"), 1);
	assert_int_equal(jint(cmd, "priority"), 10);
	assert_string_equal(jstr(cmd, "device_id"), "dev-1");
	assert_string_equal(jstr(cmd, "created_by"), "alice");
	json_decref(cmd);

	/* not taken again until the resend time passes; the limit applies */
	ok(bw_store_command_take(c->st, "dev-1", T0 + 130, T0 + 130 - 60, 10, &taken, &err), &err, "take again");
	assert_int_equal(json_array_size(taken), 0);
	json_decref(taken);
	ok(bw_store_command_result(c->st, "dev-1", "c-low", "acknowledged", NULL, NULL, T0 + 140, &err), &err, "ack");
	ok(bw_store_command_take(c->st, "dev-1", T0 + 200, T0 + 200 - 60, 1, &taken, &err), &err, "resend");
	assert_string_equal(ids_of(taken), "c-lock");
	json_decref(taken);
	ok(bw_store_command_take(c->st, "dev-1", T0 + 200, T0 + 200 - 60, 10, &taken, &err), &err, "resend rest");
	assert_string_equal(ids_of(taken), "c-scan"); /* c-low is acknowledged: not resent */
	json_decref(taken);
	ok(bw_store_command_get(c->st, "c-lock", &cmd, &err), &err, "get");
	assert_int_equal(jint(cmd, "attempts"), 2);
	json_decref(cmd);

	/* results */
	assert_int_equal(bw_store_command_result(c->st, "dev-2", "c-lock", "completed", NULL, NULL, T0, &err),
	                 BW_E_NOTFOUND);
	assert_int_equal(bw_store_command_result(c->st, "dev-1", "c-none", "completed", NULL, NULL, T0, &err),
	                 BW_E_NOTFOUND);
	assert_int_equal(bw_store_command_result(c->st, "dev-1", "c-lock", "done", NULL, NULL, T0, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "status"));
	assert_int_equal(bw_store_command_result(c->st, "dev-1", "c-lock", "completed", "{x", NULL, T0, &err),
	                 BW_E_INVALID);
	ok(bw_store_command_result(c->st, "dev-1", "c-low", "completed", "{\"latitude\":35.68}", NULL, T0 + 210, &err),
	   &err, "completed");
	ok(bw_store_command_result(c->st, "dev-1", "c-low", "completed", "{\"latitude\":35.68}", NULL, T0 + 220, &err),
	   &err, "completed again");
	ok(bw_store_command_result(c->st, "dev-1", "c-low", "acknowledged", NULL, NULL, T0 + 230, &err), &err,
	   "late ack");
	assert_int_equal(bw_store_command_result(c->st, "dev-1", "c-low", "failed", NULL, "x", T0 + 230, &err),
	                 BW_E_STATE);
	assert_non_null(strstr(err.message, "completed"));
	ok(bw_store_command_get(c->st, "c-low", &cmd, &err), &err, "get");
	assert_string_equal(jstr(cmd, "state"), "completed");
	assert_int_equal(jint(cmd, "acked_at"), T0 + 140);
	assert_int_equal(jint(cmd, "completed_at"), T0 + 210);
	assert_true(json_real_value(json_object_get(json_object_get(cmd, "result"), "latitude")) > 35.6);
	json_decref(cmd);
	ok(bw_store_command_result(c->st, "dev-1", "c-lock", "failed", NULL, "screen lock disabled", T0 + 240, &err),
	   &err, "failed");
	ok(bw_store_command_get(c->st, "c-lock", &cmd, &err), &err, "get");
	assert_string_equal(jstr(cmd, "state"), "failed");
	assert_string_equal(jstr(cmd, "error"), "screen lock disabled");
	assert_true(json_is_null(json_object_get(cmd, "result")));
	assert_int_equal(jint(cmd, "acked_at"), T0 + 240);
	json_decref(cmd);

	/* cancel */
	ok(bw_store_command_cancel(c->st, "c-2", T0 + 250, &err), &err, "cancel");
	assert_int_equal(bw_store_command_cancel(c->st, "c-2", T0 + 250, &err), BW_E_STATE);
	assert_non_null(strstr(err.message, "cancelled"));
	assert_int_equal(bw_store_command_cancel(c->st, "c-lock", T0 + 250, &err), BW_E_STATE);
	assert_int_equal(bw_store_command_cancel(c->st, "c-none", T0 + 250, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_command_result(c->st, "dev-2", "c-2", "completed", NULL, NULL, T0, &err), BW_E_STATE);
	ok(bw_store_command_take(c->st, "dev-2", T0 + 300, T0 + 240, 10, &taken, &err), &err, "take cancelled");
	assert_int_equal(json_array_size(taken), 0);
	json_decref(taken);

	/* statistics and the pending set: c-scan (sent) and c-old (queued, past expiry) are open */
	char pending[256] = "";
	ok(bw_store_command_pending_devices(c->st, collect_id, pending, &err), &err, "pending");
	assert_string_equal(pending, "dev-1;");
	ok(bw_store_command_stats(c->st, T0 + 300, &n, &age, &err), &err, "stats");
	assert_int_equal(n, 2);
	assert_int_equal(age, 300 - 2);

	/* expiry */
	int64_t expired = -1;
	ok(bw_store_command_expire(c->st, T0 + 300, &expired, &err), &err, "expire");
	assert_int_equal(expired, 1); /* c-old */
	ok(bw_store_command_get(c->st, "c-old", &cmd, &err), &err, "get");
	assert_string_equal(jstr(cmd, "state"), "expired");
	json_decref(cmd);
	ok(bw_store_command_expire(c->st, T0 + 500, &expired, &err), &err, "expire 2");
	assert_int_equal(expired, 1); /* c-scan: sent, expires at T0 + 500 */
	ok(bw_store_command_expire(c->st, T0 + 9999, &expired, &err), &err, "expire 3");
	assert_int_equal(expired, 0);
	assert_int_equal(bw_store_command_result(c->st, "dev-1", "c-scan", "completed", NULL, NULL, T0, &err),
	                 BW_E_STATE);
	ok(bw_store_command_stats(c->st, T0 + 600, &n, &age, &err), &err, "stats");
	assert_int_equal(n, 0);
	assert_int_equal(age, 0);
	pending[0] = '\0';
	ok(bw_store_command_pending_devices(c->st, collect_id, pending, &err), &err, "pending");
	assert_string_equal(pending, "");

	/* listing: newest first */
	json_t *list = NULL;
	ok(bw_store_command_list(c->st, "dev-1", &list, &err), &err, "list");
	assert_string_equal(ids_of(list), "c-old,c-scan,c-lock,c-low");
	json_decref(list);
	ok(bw_store_command_list(c->st, "dev-9", &list, &err), &err, "list none");
	assert_int_equal(json_array_size(list), 0);
	json_decref(list);
	assert_int_equal(bw_store_command_get(c->st, "c-none", &cmd, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_command_take(c->st, "dev-1", T0, T0, 0, &taken, &err), BW_E_INVALID);
	assert_int_equal(bw_store_command_open_count(c->st, "dev-1", "Bad Type", &n, &err), BW_E_INVALID);
}

/* ---- events */

static void test_events(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	bool dup = true;
	json_t *ev = json_pack("[{s:s, s:i, s:{s:s}}, {s:s, s:i}, {s:s, s:i, s:[i,i]}]", "type", "malware_found", "at",
	                       T0 + 10, "data", "app", "com.bad", "type", "scan_finished", "at", T0 + 20, "type",
	                       "web_blocked", "at", T0 + 5, "data", 1, 2);
	ok(bw_store_events_add(c->st, "dev-1", "batch-1", ev, T0 + 30, &dup, &err), &err, "add");
	assert_false(dup);
	ok(bw_store_events_add(c->st, "dev-1", "batch-1", ev, T0 + 31, &dup, &err), &err, "add again");
	assert_true(dup);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_events"), 3);
	/* the same batch id from another device is another batch */
	ok(bw_store_events_add(c->st, "dev-2", "batch-1", ev, T0 + 32, &dup, &err), &err, "other device");
	assert_false(dup);
	json_decref(ev);
	ev = json_pack("[{s:s, s:i}]", "type", "malware_found", "at", T0 + 1000);
	ok(bw_store_events_add(c->st, "dev-1", "batch-2", ev, T0 + 1001, &dup, &err), &err, "add 2");
	json_decref(ev);

	/* refusals store nothing, not even the batch id */
	static const char *const bad[] = {
	    "[{\"type\":\"x\",\"at\":-1}]",
	    "[{\"type\":\"x\",\"at\":253402300800}]",
	    "[{\"type\":\"x\",\"at\":\"1700000000\"}]",
	    "[{\"type\":\"Bad Type\",\"at\":1}]",
	    "[{\"at\":1}]",
	    "[{\"type\":\"ok\",\"at\":1}, 5]",
	    "{\"type\":\"x\"}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *b = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		assert_int_equal(bw_store_events_add(c->st, "dev-1", "batch-bad", b, T0, &dup, &err), BW_E_INVALID);
		json_decref(b);
	}
	json_t *big = json_array();
	for (int i = 0; i < 501; i++)
		json_array_append_new(big, json_pack("{s:s, s:i}", "type", "scan_finished", "at", T0));
	assert_int_equal(bw_store_events_add(c->st, "dev-1", "batch-bad", big, T0, &dup, &err), BW_E_LIMIT);
	json_decref(big);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_event_batches WHERE batch_id = 'batch-bad'"), 0);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_events"), 7);
	/* an empty batch is fine (and remembered) */
	json_t *empty = json_array();
	ok(bw_store_events_add(c->st, "dev-1", "batch-empty", empty, T0, &dup, &err), &err, "empty");
	ok(bw_store_events_add(c->st, "dev-1", "batch-empty", empty, T0, &dup, &err), &err, "empty again");
	assert_true(dup);
	json_decref(empty);

	/* queries: newest first by event time */
	json_t *out = NULL;
	struct bw_event_query q = {.device_id = "dev-1", .limit = 100};
	ok(bw_store_events_query(c->st, &q, &out, &err), &err, "by device");
	assert_int_equal(json_array_size(out), 4);
	assert_int_equal(jint(json_array_get(out, 0), "at"), T0 + 1000);
	assert_int_equal(jint(json_array_get(out, 3), "at"), T0 + 5);
	json_t *e1 = json_array_get(out, 2);
	assert_string_equal(jstr(e1, "type"), "malware_found");
	assert_string_equal(jstr(json_object_get(e1, "data"), "app"), "com.bad");
	assert_string_equal(jstr(e1, "batch_id"), "batch-1");
	assert_int_equal(jint(e1, "received_at"), T0 + 30);
	assert_true(json_is_null(json_object_get(json_array_get(out, 1), "data")));
	json_decref(out);

	q = (struct bw_event_query){.type = "malware_found", .limit = 100};
	ok(bw_store_events_query(c->st, &q, &out, &err), &err, "by type");
	assert_int_equal(json_array_size(out), 3);
	json_decref(out);
	q = (struct bw_event_query){.device_id = "dev-1", .type = "malware_found", .limit = 100};
	ok(bw_store_events_query(c->st, &q, &out, &err), &err, "by device and type");
	assert_int_equal(json_array_size(out), 2);
	json_decref(out);
	q = (struct bw_event_query){.since = T0 + 10, .until = T0 + 1000, .limit = 100};
	ok(bw_store_events_query(c->st, &q, &out, &err), &err, "time range");
	assert_int_equal(json_array_size(out), 4); /* at +10 and +20, twice (dev-1, dev-2); +1000 excluded */
	json_decref(out);

	/* paging with before_id: all 7 events in pages of 3, no repeats */
	q = (struct bw_event_query){.limit = 3};
	int total = 0;
	int64_t last_at = INT64_MAX;
	for (int page = 0; page < 4; page++) {
		ok(bw_store_events_query(c->st, &q, &out, &err), &err, "page");
		size_t i;
		json_t *e;
		json_array_foreach(out, i, e)
		{
			assert_true(jint(e, "at") <= last_at);
			last_at = jint(e, "at");
			total++;
		}
		if (json_array_size(out))
			q.before_id = jint(json_array_get(out, json_array_size(out) - 1), "id");
		json_decref(out);
	}
	assert_int_equal(total, 7);

	/* equal times across a page boundary: the (at, id) cursor neither repeats nor skips */
	ev = json_array();
	for (int i = 0; i < 5; i++)
		json_array_append_new(
		    ev, json_pack("{s:s, s:i, s:i}", "type", "scan_finished", "at", T0 + 2000, "data", i));
	ok(bw_store_events_add(c->st, "dev-3", "batch-3", ev, T0 + 2001, &dup, &err), &err, "add 3");
	json_decref(ev);
	q = (struct bw_event_query){.device_id = "dev-3", .limit = 2};
	char order[64] = "";
	for (int page = 0; page < 3; page++) {
		ok(bw_store_events_query(c->st, &q, &out, &err), &err, "page");
		size_t i;
		json_t *e;
		json_array_foreach(out, i, e)
		{
			size_t n = strlen(order);
			snprintf(order + n, sizeof order - n, "%lld", (long long)jint(e, "data"));
		}
		q.before_id = jint(json_array_get(out, json_array_size(out) - 1), "id");
		json_decref(out);
	}
	assert_string_equal(order, "43210"); /* same time: newest id first */
	exec_sql(c->st, "DELETE FROM device_events WHERE device_id = 'dev-3'");
	exec_sql(c->st, "DELETE FROM device_event_batches WHERE device_id = 'dev-3'");

	q.before_id = 999999;
	assert_int_equal(bw_store_events_query(c->st, &q, &out, &err), BW_E_NOTFOUND);
	q = (struct bw_event_query){.limit = 0};
	assert_int_equal(bw_store_events_query(c->st, &q, &out, &err), BW_E_INVALID);
	assert_int_equal(bw_store_events_query(c->st, NULL, &out, &err), BW_E_INVALID);

	/* purge by event time, batch ids of the same age with them */
	int64_t purged = 0;
	ok(bw_store_events_purge(c->st, T0 + 15, &purged, &err), &err, "purge");
	assert_int_equal(purged, 4); /* +5 and +10, two devices */
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_events"), 3);
	ok(bw_store_events_purge(c->st, T0 + 100, &purged, &err), &err, "purge 2");
	assert_int_equal(purged, 2);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM device_event_batches"), 1); /* batch-2 */
}

/* ---- revoked certificates */

static void collect_serial(const char *serial, void *arg)
{
	strcat(arg, serial);
	strcat(arg, ";");
}

static void test_revoked_certs(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	ok(bw_store_cert_revoke(c->st, "0a1b", "dev-1", "unenrolled", T0, &err), &err, "revoke");
	ok(bw_store_cert_revoke(c->st, "0a1b", "dev-1", "again", T0 + 1, &err), &err, "revoke again");
	ok(bw_store_cert_revoke(c->st, "FF00", NULL, NULL, T0, &err), &err, "revoke 2");
	assert_int_equal(bw_store_cert_revoke(c->st, "not hex", NULL, NULL, T0, &err), BW_E_INVALID);
	assert_int_equal(bw_store_cert_revoke(c->st, "01", "bad id", NULL, T0, &err), BW_E_INVALID);
	char serials[256] = "";
	ok(bw_store_cert_revoked_scan(c->st, collect_serial, serials, &err), &err, "scan");
	assert_string_equal(serials, "0a1b;FF00;");
	assert_int_equal(query_int(c->st, "SELECT revoked_at FROM revoked_certs WHERE serial = '0a1b'"), T0);
	assert_int_equal(bw_store_cert_revoked_scan(c->st, NULL, NULL, &err), BW_E_INVALID);
}

/* ---- schema */

/* The device tables work on an upgraded database, next to its old rows. */
static void check_v3_works(bw_store *st)
{
	bw_error err = {0};
	assert_int_equal(bw_store_schema_version(st), bw_store_schema_latest());
	add_device(st, "dev-up", "ios", "17.4", "g", T0);
	char group[129];
	ok(bw_store_key_create(st, "k", digest('e'), "PFX", "g", 1, 0, "alice", T0, &err), &err, "key");
	ok(bw_store_key_use(st, digest('e'), T0, group, &err), &err, "use");
	ok(bw_store_command_create(st, "c", "dev-up", "lock", NULL, 0, 0, "alice", T0, &err), &err, "command");
	json_t *taken = NULL;
	ok(bw_store_command_take(st, "dev-up", T0, T0, 10, &taken, &err), &err, "take");
	assert_int_equal(json_array_size(taken), 1);
	json_decref(taken);
	struct bw_admin a;
	ok(bw_store_admin_get(st, "alice", &a, &err), &err, "old admin");
	bw_admin_clear(&a);
	char *v = NULL;
	ok(bw_store_record_get(st, "example_hello", "greetings", "fr", &v, &err), &err, "old record");
	free(v);
}

static void test_upgrade_v1_to_v3(void **state)
{
	struct ctx *c = *state;
	load_fixture(c->path, FIXTURE_V1);
	bw_error err = {0};
	c->st = bw_store_open(c->path, &err);
	if (!c->st)
		fail_msg("open: %s", err.message);
	check_v3_works(c->st);
}

static void test_upgrade_v2_to_v3(void **state)
{
	struct ctx *c = *state;
	load_fixture(c->path, FIXTURE_V2);
	bw_error err = {0};
	/* at version 2 the device functions refuse cleanly */
	c->st = bw_store_open_version(c->path, 2, &err);
	assert_non_null(c->st);
	int64_t n;
	assert_int_equal(bw_store_device_count(c->st, &n, &err), BW_E_STATE);
	assert_non_null(strstr(err.message, "schema 2"));
	assert_false(bw_store_allowlist_contains(c->st, "imei", "490154203237518"));
	bw_store_close(c->st);
	c->st = bw_store_open(c->path, &err);
	if (!c->st)
		fail_msg("open: %s", err.message);
	check_v3_works(c->st);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM tokens"), 2);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM audit_log"), 2);
}

/* A failing step 3 leaves version 2 exactly as it was. */
static void test_failed_step_3_rolls_back(void **state)
{
	struct ctx *c = *state;
	load_fixture(c->path, FIXTURE_V2);
	sqlite3 *db;
	assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "CREATE TABLE revoked_certs (x)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	bw_error err = {0};
	assert_null(bw_store_open(c->path, &err));
	assert_int_equal(err.code, BW_E_DB);
	assert_non_null(strstr(err.message, "from schema 2 to 3"));
	c->st = bw_store_open_version(c->path, 2, &err);
	assert_non_null(c->st);
	assert_int_equal(bw_store_schema_version(c->st), 2);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM sqlite_schema WHERE name IN ('devices', 'commands')"),
	                 0);
	assert_int_equal(query_int(c->st, "SELECT count(*) FROM admins"), 2);
}

static void test_null_store(void **state)
{
	(void)state;
	bw_error err = {0};
	int64_t n;
	json_t *j = NULL;
	char g[129];
	struct bw_device d;
	assert_int_equal(bw_store_device_count(NULL, &n, &err), BW_E_INVALID);
	assert_int_equal(bw_store_device_get(NULL, "x", &d, &err), BW_E_INVALID);
	assert_int_equal(bw_store_key_use(NULL, digest('1'), 0, g, &err), BW_E_INVALID);
	assert_int_equal(bw_store_key_list(NULL, &j, &err), BW_E_INVALID);
	assert_null(j);
}

/* ---- query plans at scale: assert plans, not speed */

/* The EXPLAIN QUERY PLAN details of sql, one per line. */
static void plan_of(sqlite3 *db, const char *sql, char *out, size_t size)
{
	char q[4096];
	snprintf(q, sizeof q, "EXPLAIN QUERY PLAN %s", sql);
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(db, q, -1, &s, NULL) != SQLITE_OK)
		fail_msg("explain %s: %s", sql, sqlite3_errmsg(db));
	out[0] = '\0';
	while (sqlite3_step(s) == SQLITE_ROW) {
		size_t n = strlen(out);
		snprintf(out + n, size - n, "%s\n", (const char *)sqlite3_column_text(s, 3));
	}
	sqlite3_finalize(s);
}

/* The store's one cached statement whose SQL contains `needle`. */
static const char *cached_sql(sqlite3 *db, const char *needle)
{
	const char *found = NULL;
	for (sqlite3_stmt *s = sqlite3_next_stmt(db, NULL); s; s = sqlite3_next_stmt(db, s)) {
		const char *sql = sqlite3_sql(s);
		if (sql && strstr(sql, needle)) {
			if (found)
				fail_msg("two cached statements contain \"%s\"", needle);
			found = sql;
		}
	}
	if (!found)
		fail_msg("no cached statement contains \"%s\"", needle);
	return found;
}

static void expect_plan(sqlite3 *db, const char *needle, const char *want)
{
	const char *sql = cached_sql(db, needle);
	char plan[2048];
	plan_of(db, sql, plan, sizeof plan);
	if (!strstr(plan, want) || strstr(plan, "SCAN "))
		fail_msg("%s\nplan:\n%swanted \"%s\" and no SCAN", sql, plan, want);
}

static void test_scale_query_plans(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	enum { N = 100000 };
	json_t *d = json_pack("{s:s, s:s, s:s}", "platform", "android", "os_version", "14", "model", "Pixel");
	char id[37];
	/* room for the whole bulk transaction, so that it does not spill pages to the WAL midway */
	exec_sql(c->st, "PRAGMA cache_size = -65536");
	exec_sql(c->st, "BEGIN");
	for (int i = 0; i < N; i++) {
		snprintf(id, sizeof id, "%08x-0000-4000-8000-%012d", (unsigned)i * 2654435761u, i);
		json_object_set_new(d, "platform", json_string(i % 3 ? "android" : "ios"));
		int rc =
		    bw_store_device_create(c->st, id, d, i % 10 ? "" : "sales", "key", "0a", T0 + 999999, T0, &err);
		if (rc)
			fail_msg("create %d: %s", i, err.message);
	}
	exec_sql(c->st, "COMMIT");
	json_decref(d);
	int64_t n;
	ok(bw_store_device_count(c->st, &n, &err), &err, "count");
	assert_int_equal(n, N);

	/* use every statement once so that it is cached, then let the planner see real statistics */
	char group[129];
	struct bw_device dev;
	json_t *j = NULL;
	ok(bw_store_key_create(c->st, "k", digest('1'), "P", NULL, 0, 0, NULL, T0, &err), &err, "key");
	ok(bw_store_key_use(c->st, digest('1'), T0, group, &err), &err, "key use");
	assert_int_equal(bw_store_key_use(c->st, digest('2'), T0, group, &err), BW_E_NOTFOUND);
	ok(bw_store_key_list(c->st, &j, &err), &err, "key list");
	json_decref(j);
	ok(bw_store_key_revoke(c->st, "k", &err), &err, "key revoke");
	ok(bw_store_device_get(c->st, id, &dev, &err), &err, "get");
	ok(bw_store_device_json(c->st, id, &j, &err), &err, "json");
	json_decref(j);
	json_t *fields = json_pack("{s:s}", "os_version", "15");
	ok(bw_store_device_update(c->st, id, fields, &err), &err, "update");
	json_decref(fields);
	ok(bw_store_device_set_status(c->st, id, "active", T0, &err), &err, "status");
	ok(bw_store_device_set_cert(c->st, id, "0b", T0 + 99, &err), &err, "cert");
	const char *ids[1] = {id};
	int64_t seen[1] = {T0 + 5};
	ok(bw_store_device_touch_many(c->st, ids, seen, 1, &err), &err, "touch");
	ok(bw_store_device_set_inventory(c->st, id, "{}", T0, &err), &err, "inventory");
	int count = 0;
	ok(bw_store_device_scan(c->st, scan_count, &count, &err), &err, "scan");
	assert_int_equal(count, N);
	ok(bw_store_command_create(c->st, "c1", id, "lock", NULL, 0, T0 + 10, NULL, T0, &err), &err, "command");
	ok(bw_store_command_create(c->st, "c2", id, "scan", NULL, 0, 0, NULL, T0, &err), &err, "command 2");
	ok(bw_store_command_take(c->st, id, T0, T0, 10, &j, &err), &err, "take");
	json_decref(j);
	ok(bw_store_command_result(c->st, id, "c1", "acknowledged", NULL, NULL, T0, &err), &err, "result");
	ok(bw_store_command_open_count(c->st, id, "lock", &n, &err), &err, "open count");
	ok(bw_store_command_expire(c->st, T0, &n, &err), &err, "expire");
	ok(bw_store_command_cancel(c->st, "c2", T0, &err), &err, "cancel");
	ok(bw_store_command_get(c->st, "c2", &j, &err), &err, "command get");
	json_decref(j);
	ok(bw_store_command_list(c->st, id, &j, &err), &err, "command list");
	json_decref(j);
	char pending[64] = "";
	ok(bw_store_command_pending_devices(c->st, collect_id, pending, &err), &err, "pending");
	int64_t age;
	ok(bw_store_command_stats(c->st, T0, &n, &age, &err), &err, "stats");
	ok(bw_store_invitation_create(c->st, "i", "a@b.c", digest('3'), 0, NULL, T0, &err), &err, "invitation");
	ok(bw_store_invitation_use(c->st, "a@b.c", digest('3'), T0, &err), &err, "invitation use");
	assert_int_equal(bw_store_invitation_use(c->st, "a@b.c", digest('3'), T0, &err), BW_E_DENIED);
	ok(bw_store_invitation_list(c->st, &j, &err), &err, "invitation list");
	json_decref(j);
	ok(bw_store_outbox_add(c->st, "m", "a@b.c", "s", "b", T0, &err), &err, "outbox");
	ok(bw_store_outbox_list(c->st, &j, &err), &err, "outbox list");
	json_decref(j);
	assert_false(bw_store_allowlist_contains(c->st, "imei", "490154203237518"));
	ok(bw_store_allowlist_add(c->st, "imei", "490154203237518", NULL, T0, &err), &err, "allow");
	ok(bw_store_allowlist_list(c->st, &j, &err), &err, "allow list");
	json_decref(j);
	ok(bw_store_allowlist_remove(c->st, "imei", "490154203237518", &err), &err, "allow remove");
	ok(bw_store_setting_set(c->st, "s", "v", &err), &err, "setting");
	char *v = NULL;
	ok(bw_store_setting_get(c->st, "s", &v, &err), &err, "setting get");
	free(v);
	ok(bw_store_refusal_add(c->st, T0, NULL, "r", NULL, &err), &err, "refusal");
	exec_sql(c->st, "UPDATE sqlite_sequence SET seq = 20000 WHERE name = 'enrollment_refusals'");
	ok(bw_store_refusal_add(c->st, T0, NULL, "r", NULL, &err), &err, "refusal trim");
	ok(bw_store_refusal_list(c->st, 10, &j, &err), &err, "refusal list");
	json_decref(j);
	ok(bw_store_cert_revoke(c->st, "0a", id, "test", T0, &err), &err, "revoke");
	char serials[64] = "";
	ok(bw_store_cert_revoked_scan(c->st, collect_serial, serials, &err), &err, "revoked scan");
	json_t *ev = json_pack("[{s:s, s:i}, {s:s, s:i}]", "type", "scan_finished", "at", T0, "type", "web_blocked",
	                       "at", T0 + 1);
	bool dup;
	ok(bw_store_events_add(c->st, id, "b1", ev, T0, &dup, &err), &err, "events");
	json_decref(ev);
	struct bw_event_query qs[] = {
	    {.device_id = id, .limit = 10},
	    {.type = "scan_finished", .limit = 10},
	    {.device_id = id, .type = "web_blocked", .limit = 10},
	    {.since = T0, .until = T0 + 1, .limit = 10},
	};
	for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
		ok(bw_store_events_query(c->st, &qs[i], &j, &err), &err, "events query");
		if (i == 0) {
			qs[0].before_id = jint(json_array_get(j, 0), "id");
			json_decref(j);
			ok(bw_store_events_query(c->st, &qs[i], &j, &err), &err, "events query page");
		}
		json_decref(j);
	}
	ok(bw_store_events_purge(c->st, T0 - 1, &n, &err), &err, "purge");
	/* every combination of list filters */
	static const char *const ops[] = {NULL, "<", "<=", "=", ">=", ">"};
	for (unsigned mask = 0; mask < 8; mask++)
		for (unsigned op = 0; op < 6; op++) {
			struct bw_device_filter f = {.platform = mask & 1 ? "ios" : NULL,
			                             .status = mask & 2 ? "active" : NULL,
			                             .group = mask & 4 ? "sales" : NULL,
			                             .os_op = ops[op],
			                             .os_version = op ? "14" : NULL,
			                             .after_id = id,
			                             .limit = 10};
			ok(bw_store_device_list(c->st, &f, &j, &err), &err, "list");
			json_decref(j);
		}
	exec_sql(c->st, "ANALYZE");

	sqlite3 *db = bw_store_sql_db(c->st);
	/* the hot paths: enrollment, check-in, command delivery and results */
	expect_plan(db, "UPDATE enrollment_keys SET uses", "USING INDEX sqlite_autoindex_enrollment_keys");
	expect_plan(db, "FROM enrollment_keys WHERE key_hash", "USING INDEX sqlite_autoindex_enrollment_keys");
	expect_plan(db, "group_name, owner FROM devices WHERE id = ?1", "SEARCH devices USING PRIMARY KEY (id=?)");
	expect_plan(db, "owner_email FROM devices WHERE id = ?1", "SEARCH devices USING PRIMARY KEY (id=?)");
	expect_plan(db, "FROM device_inventory WHERE device_id = ?1",
	            "USING INDEX sqlite_autoindex_device_inventory_1");
	expect_plan(db, "SET last_seen", "SEARCH devices USING PRIMARY KEY (id=?)");
	expect_plan(db, "SELECT id, type, params, expires_at FROM commands",
	            "SEARCH commands USING INDEX commands_device (device_id=? AND state=?)");
	expect_plan(db, "SET state = 'sent'", "SEARCH commands USING PRIMARY KEY (id=?)");
	expect_plan(db, "SELECT device_id, state FROM commands", "SEARCH commands USING PRIMARY KEY (id=?)");
	expect_plan(db, "SELECT count(*) FROM commands INDEXED BY commands_device",
	            "USING INDEX commands_device (device_id=?");
	expect_plan(db, "SET state = 'expired'", "USING INDEX commands_open_expiry (expires_at<?)");
	expect_plan(db, "UPDATE invitations", "INDEX invitations_email (email=? AND code_hash=?)");
	expect_plan(db, "SELECT 1 FROM allowlist", "SEARCH allowlist USING PRIMARY KEY (kind=? AND value=?)");
	expect_plan(db, "WHERE device_id = ?1 AND at",
	            "SEARCH device_events USING INDEX device_events_device (device_id=?");
	expect_plan(db, "device_events_type WHERE type = ?2",
	            "SEARCH device_events USING INDEX device_events_type (type=?");
	expect_plan(db, "FROM devices WHERE id > ?1 AND group_name = ?4 ORDER",
	            "USING INDEX devices_group (group_name=?");

	/* and no statement with a WHERE clause scans a table (the partial index of open commands
	 * holds only what is open) */
	int checked = 0;
	for (sqlite3_stmt *s = sqlite3_next_stmt(db, NULL); s; s = sqlite3_next_stmt(db, s)) {
		const char *sql = sqlite3_sql(s);
		if (!sql || !strstr(sql, "WHERE"))
			continue;
		char plan[2048];
		plan_of(db, sql, plan, sizeof plan);
		if (strstr(plan, "SCAN ") && !strstr(sql, "INDEXED BY commands_open "))
			fail_msg("%s\nscans:\n%s", sql, plan);
		checked++;
	}
	assert_true(checked > 70);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_device_create_get_json, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_device_update_status_cert_inventory, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_touch_many, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_list_os_versions, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_list_filters_paging, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_keys, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_invitations_outbox, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_allowlist_settings_refusals, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_commands, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_events, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_revoked_certs, setup_open, teardown),
	    cmocka_unit_test_setup_teardown(test_upgrade_v1_to_v3, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upgrade_v2_to_v3, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_step_3_rolls_back, setup, teardown),
	    cmocka_unit_test(test_null_store),
	    cmocka_unit_test_setup_teardown(test_scale_query_plans, setup_open, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
