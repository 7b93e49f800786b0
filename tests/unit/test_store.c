/* tests/unit/test_store.c: the SQLite store (host/services/store_sqlite.c): migrations and their
 * refusals, administrators, tokens, the audit log, plugin records and online backups. */
#include "testutil.h"

#include "crypto.h"
#include "store.h"
#include "store_devices.h"

#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef BW_SOURCE_DIR
#define BW_SOURCE_DIR "."
#endif
#define FIXTURE_V1 BW_SOURCE_DIR "/tests/fixtures/db/schema-v1.sql"
#define FIXTURE_V2 BW_SOURCE_DIR "/tests/fixtures/db/schema-v2.sql"

#define HASH_A "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
#define HASH_B "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define HASH_C "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define HASH_D "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
#define HASH_E "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"

struct ctx {
	char *dir;
	char path[1024];
	bw_store *st;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof *c);
	assert_non_null(c);
	c->dir = bw_test_tmpdir("store");
	snprintf(c->path, sizeof c->path, "%s/bulwark.db", c->dir);
	*state = c;
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

/* Opens c->path with the store, asserting success. */
static bw_store *open_ok(struct ctx *c)
{
	bw_error err = {0};
	bw_store *st = bw_store_open(c->path, &err);
	if (!st)
		fail_msg("bw_store_open: %s", err.message);
	return st;
}

/* Runs SQL on a plain SQLite connection (not the store). */
static void raw_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		fail_msg("raw_exec: %s", msg ? msg : "?");
	sqlite3_free(msg);
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static int64_t raw_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	int64_t v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return v;
}

static char *raw_text(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	char *v = strdup((const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	sqlite3_close(db);
	assert_non_null(v);
	return v;
}

static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	long n = ftell(f);
	assert_true(n >= 0);
	rewind(f);
	char *buf = malloc((size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	if (len)
		*len = (size_t)n;
	return buf;
}

static bool file_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

/* Asserts that the database file has exactly the bytes `before`. */
static void assert_file_bytes(const char *path, const char *before, size_t before_len)
{
	size_t n;
	char *now = read_all(path, &n);
	assert_int_equal(n, before_len);
	assert_memory_equal(now, before, n);
	free(now);
}

/* ---- opening and migrations */

static void test_fresh_database_gets_latest(void **state)
{
	struct ctx *c = *state;
	assert_int_equal(bw_store_schema_latest(), 4);
	c->st = open_ok(c);
	assert_int_equal(bw_store_schema_version(c->st), bw_store_schema_latest());
	assert_int_equal(bw_store_ping(c->st, NULL), BW_OK);

	struct stat sb;
	assert_int_equal(stat(c->path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(raw_int(c->path, "PRAGMA user_version"), 4);
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM sqlite_schema WHERE name IN ('admins', "
	                                  "'plugin_records', 'tokens', 'audit_log')"),
	                 4);
	/* WAL is recorded in the file header (bytes 18 and 19 are 2) */
	sqlite3 *db;
	sqlite3_stmt *s;
	assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(s), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(s, 0), "wal");
	sqlite3_finalize(s);
	sqlite3_close(db);

	/* a second open finds the latest schema and changes nothing */
	bw_store_close(c->st);
	c->st = open_ok(c);
	assert_int_equal(bw_store_schema_version(c->st), 4);
}

static void test_open_step_by_step(void **state)
{
	struct ctx *c = *state;
	bw_error err = {0};
	c->st = bw_store_open_version(c->path, 1, &err);
	assert_non_null(c->st);
	assert_int_equal(bw_store_schema_version(c->st), 1);
	bw_store_close(c->st);
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'tokens'"), 0);
	c->st = open_ok(c);
	assert_int_equal(bw_store_schema_version(c->st), 4);
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'tokens'"), 1);

	assert_null(bw_store_open_version(c->path, 5, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_null(bw_store_open_version(c->path, -1, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_null(bw_store_open(NULL, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_null(bw_store_open("", &err));
	assert_int_equal(err.code, BW_E_INVALID);
}

static void load_fixture(const char *db_path, const char *sql_path)
{
	char *sql = read_all(sql_path, NULL);
	raw_exec(db_path, sql);
	free(sql);
}

/* The rows every fixture (version 1 and later) holds. */
static void check_v1_rows(bw_store *st)
{
	bw_error err = {0};
	/* administrators survive, with working password hashes */
	struct bw_admin a;
	assert_int_equal(bw_store_admin_get(st, "alice", &a, &err), BW_OK);
	assert_string_equal(a.id, "6f1c2a4e-8d3b-4f7a-9c21-5e0b7d9a3f10");
	assert_string_equal(a.role, "administrator");
	assert_false(a.disabled);
	assert_true(bw_password_verify("fixture-alice-password", a.password_hash));
	assert_false(bw_password_verify("fixture-bob-password", a.password_hash));
	bw_admin_clear(&a);
	assert_int_equal(bw_store_admin_get(st, "bob", &a, &err), BW_OK);
	assert_string_equal(a.role, "readonly");
	assert_true(bw_password_verify("fixture-bob-password", a.password_hash));
	bw_admin_clear(&a);
	int64_t n;
	assert_int_equal(bw_store_admin_count(st, NULL, &n, &err), BW_OK);
	assert_int_equal(n, 2);

	/* records survive */
	char *v = NULL;
	assert_int_equal(bw_store_record_get(st, "example_hello", "greetings", "fr", &v, &err), BW_OK);
	assert_string_equal(v, "{\"text\":\"bonjour\",\"count\":1}");
	free(v);
	json_t *list = NULL;
	assert_int_equal(bw_store_record_list(st, "scan_ssl", "hosts", NULL, 10, &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "key")), "mail.example.com:443");
	assert_int_equal(json_array_size(json_object_get(json_array_get(list, 0), "value")), 2);
	json_decref(list);
}

/* The tables of version 3 (devices) exist after an upgrade and work next to the old rows. */
static void check_v3_tables(struct ctx *c)
{
	assert_int_equal(raw_int(c->path,
	                         "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
	                         "('devices', 'device_inventory', 'enrollment_keys', 'invitations', 'outbox', "
	                         "'allowlist', 'settings', 'enrollment_refusals', 'commands', 'device_events', "
	                         "'device_event_batches', 'revoked_certs')"),
	                 12);
	bw_error err = {0};
	json_t *d = json_pack("{s:s, s:s}", "platform", "android", "os_version", "14");
	assert_int_equal(bw_store_device_create(c->st, "dev-1", d, "sales", "key", "0a", 1800000000, 1700000000, &err),
	                 BW_OK);
	json_decref(d);
	struct bw_device dev;
	assert_int_equal(bw_store_device_get(c->st, "dev-1", &dev, &err), BW_OK);
	assert_string_equal(dev.group_name, "sales");
	assert_int_equal(bw_store_key_create(c->st, "k1", HASH_E, "K7Q2", "sales", 1, 0, "alice", 1700000000, &err),
	                 BW_OK);
	char group[129];
	assert_int_equal(bw_store_key_use(c->st, HASH_E, 1700000001, group, &err), BW_OK);
	assert_int_equal(bw_store_key_use(c->st, HASH_E, 1700000002, group, &err), BW_E_DENIED);
	/* the command queue's foreign key to devices */
	assert_int_equal(bw_store_command_create(c->st, "c1", "dev-1", "lock", NULL, 0, 0, "alice", 1700000000, &err),
	                 BW_OK);
	assert_int_equal(bw_store_command_create(c->st, "c2", "dev-9", "lock", NULL, 0, 0, "alice", 1700000000, &err),
	                 BW_E_NOTFOUND);
	assert_int_equal(bw_store_setting_set(c->st, "allowlist.enabled", "true", &err), BW_OK);
}

static void test_upgrade_from_v1_fixture(void **state)
{
	struct ctx *c = *state;
	load_fixture(c->path, FIXTURE_V1);
	assert_int_equal(raw_int(c->path, "PRAGMA user_version"), 1);

	c->st = open_ok(c);
	assert_int_equal(bw_store_schema_version(c->st), bw_store_schema_latest());
	check_v1_rows(c->st);

	/* and the tables of version 2 work with the old rows */
	bw_error err = {0};
	assert_int_equal(
	    bw_store_token_create(c->st, "t1", "alice", "session", NULL, "administrator", HASH_A, 100, 0, &err), BW_OK);
	struct bw_token_info ti;
	assert_int_equal(bw_store_token_find(c->st, HASH_A, 200, &ti, &err), BW_OK);
	assert_string_equal(ti.admin_name, "alice");
	assert_int_equal(bw_store_audit_add(c->st, 1, "alice", NULL, "upgrade", NULL, "success", NULL, &err), BW_OK);
	check_v3_tables(c); /* v1 -> v3 */
}

static void test_open_v2_fixture(void **state)
{
	struct ctx *c = *state;
	load_fixture(c->path, FIXTURE_V2);
	assert_int_equal(raw_int(c->path, "PRAGMA user_version"), 2);
	c->st = open_ok(c);
	assert_int_equal(bw_store_schema_version(c->st), bw_store_schema_latest());
	check_v1_rows(c->st);
	bw_error err = {0};
	char h[65];
	struct bw_token_info ti;
	bw_token_hash("fixture-token-alice", h);
	assert_int_equal(bw_store_token_find(c->st, h, 1800000000, &ti, &err), BW_OK);
	assert_string_equal(ti.admin_name, "alice");
	assert_string_equal(ti.kind, "api");
	assert_string_equal(ti.name, "ci");
	assert_string_equal(ti.role, "administrator");
	bw_token_hash("fixture-token-bob", h);
	assert_int_equal(bw_store_token_find(c->st, h, 1700001000, &ti, &err), BW_OK);
	assert_string_equal(ti.role, "readonly");
	assert_int_equal(bw_store_token_find(c->st, h, 1700003800, &ti, &err), BW_E_NOTFOUND);
	json_t *page = NULL;
	assert_int_equal(bw_store_audit_add(c->st, 1700000500, "alice", NULL, "x", NULL, "success", NULL, &err), BW_OK);
	assert_int_equal(bw_store_audit_list(c->st, 0, 10, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 3);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(page, 0), "id")), 3);
	assert_string_equal(json_string_value(json_object_get(json_array_get(page, 1), "detail")),
	                    "{\"reason\":\"password\"}");
	json_decref(page);
	/* the cascade of version 2 still holds */
	assert_int_equal(bw_store_admin_delete(c->st, "alice", &err), BW_OK);
	bw_token_hash("fixture-token-alice", h);
	assert_int_equal(bw_store_token_find(c->st, h, 1800000000, &ti, &err), BW_E_NOTFOUND);
	check_v3_tables(c); /* v2 -> v3 */
}

/* A step that fails leaves the database at the previous version, with nothing of the step. */
static void test_failed_migration_rolls_back(void **state)
{
	struct ctx *c = *state;
	load_fixture(c->path, FIXTURE_V1);
	/* a stray table that step 2 would create: the step fails half-way */
	raw_exec(c->path, "CREATE TABLE audit_log (x)");
	bw_error err = {0};
	assert_null(bw_store_open(c->path, &err));
	assert_int_equal(err.code, BW_E_DB);
	assert_non_null(strstr(err.message, "from schema 1 to 2"));
	assert_non_null(strstr(err.message, "audit_log"));
	assert_int_equal(raw_int(c->path, "PRAGMA user_version"), 1);
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM sqlite_schema WHERE name = 'tokens'"), 0);
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM admins"), 2);
	assert_true(file_exists(c->path)); /* an existing database is never removed */
}

static void test_newer_schema_refused_untouched(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_store_close(c->st);
	c->st = NULL;
	raw_exec(c->path, "PRAGMA user_version = 5");
	char wal[1100];
	snprintf(wal, sizeof wal, "%s-wal", c->path);
	assert_false(file_exists(wal)); /* everything is in the main file */
	size_t len;
	char *before = read_all(c->path, &len);

	bw_error err = {0};
	assert_null(bw_store_open(c->path, &err));
	assert_int_equal(err.code, BW_E_DB);
	assert_non_null(strstr(err.message, "database schema version 5 is newer than this build supports (4)"));
	assert_non_null(strstr(err.message, "upgrade Bulwark or restore a backup"));
	assert_file_bytes(c->path, before, len);
	assert_int_equal(raw_int(c->path, "PRAGMA user_version"), 5);
	free(before);

	/* a rollback-journal database: even the WAL switch would change its header */
	char other[1100];
	snprintf(other, sizeof other, "%s/newer.db", c->dir);
	raw_exec(other, "CREATE TABLE admins (id TEXT); INSERT INTO admins VALUES ('x'); PRAGMA user_version = 99");
	before = read_all(other, &len);
	assert_null(bw_store_open(other, &err));
	assert_int_equal(err.code, BW_E_DB);
	assert_non_null(strstr(err.message, "schema version 99 is newer than this build supports (4)"));
	assert_file_bytes(other, before, len);
	free(before);
}

static void test_foreign_database_refused(void **state)
{
	struct ctx *c = *state;
	raw_exec(c->path, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers "
	                  "(name) VALUES ('acme')");
	size_t len;
	char *before = read_all(c->path, &len);
	bw_error err = {0};
	assert_null(bw_store_open(c->path, &err));
	assert_int_equal(err.code, BW_E_DB);
	assert_non_null(strstr(err.message, "not a Bulwark database"));
	assert_non_null(strstr(err.message, "customers"));
	assert_file_bytes(c->path, before, len);
	free(before);

	/* a version without the tables Bulwark creates */
	char other[1100];
	snprintf(other, sizeof other, "%s/other.db", c->dir);
	raw_exec(other, "CREATE TABLE t (x); PRAGMA user_version = 1");
	assert_null(bw_store_open(other, &err));
	assert_int_equal(err.code, BW_E_DB);
	assert_non_null(strstr(err.message, "not a Bulwark database"));

	/* not a database at all */
	char *junk = bw_test_write(c->dir, "junk.db",
	                           "this is not an SQLite database, just some text that is long "
	                           "enough to fill a header of one hundred bytes or so .........");
	assert_null(bw_store_open(junk, &err));
	assert_int_equal(err.code, BW_E_DB);
	assert_non_null(strstr(err.message, junk));
	free(junk);

	/* a directory that does not exist: the file is not created, the error names it */
	snprintf(other, sizeof other, "%s/missing/dir/x.db", c->dir);
	assert_null(bw_store_open(other, &err));
	assert_int_equal(err.code, BW_E_IO);
	assert_non_null(strstr(err.message, "missing/dir/x.db"));
}

/* ---- administrators */

static void test_admins(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	assert_int_equal(bw_store_admin_create(c->st, "id-alice", "alice", "$scrypt$hash-a", "administrator", &err),
	                 BW_OK);
	assert_int_equal(bw_store_admin_create(c->st, "id-bob", "bob", "$scrypt$hash-b", "readonly", &err), BW_OK);

	assert_int_equal(bw_store_admin_create(c->st, "id-other", "alice", "h", "readonly", &err), BW_E_EXISTS);
	assert_non_null(strstr(err.message, "alice"));
	assert_null(strstr(err.message, "$scrypt$"));
	assert_int_equal(bw_store_admin_create(c->st, "id-bob", "carol", "h", "readonly", &err), BW_E_EXISTS);
	assert_int_equal(bw_store_admin_create(c->st, "id-c", "carol", "h", "root", &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "role"));
	assert_int_equal(bw_store_admin_create(c->st, "id-c", "", "h", "readonly", &err), BW_E_INVALID);
	assert_int_equal(bw_store_admin_create(c->st, "id-c", "a\nb", "h", "readonly", &err), BW_E_INVALID);
	assert_int_equal(bw_store_admin_create(c->st, "id-c", "bad\xff", "h", "readonly", &err), BW_E_INVALID);
	assert_int_equal(bw_store_admin_create(c->st, "id c", "carol", "h", "readonly", &err), BW_E_INVALID);
	assert_int_equal(bw_store_admin_create(c->st, "id-c", "carol", "", "readonly", &err), BW_E_INVALID);
	char name[200];
	memset(name, 'n', 129);
	name[129] = '\0';
	assert_int_equal(bw_store_admin_create(c->st, "id-c", name, "h", "readonly", &err), BW_E_INVALID);
	name[128] = '\0';
	assert_int_equal(bw_store_admin_create(c->st, "id-long", name, "h", "readonly", &err), BW_OK);
	assert_int_equal(bw_store_admin_create(c->st, "id-u", "Zoë Ångström", "h", "readonly", &err), BW_OK);

	struct bw_admin a;
	assert_int_equal(bw_store_admin_get(c->st, "alice", &a, &err), BW_OK);
	assert_string_equal(a.id, "id-alice");
	assert_string_equal(a.name, "alice");
	assert_string_equal(a.role, "administrator");
	assert_string_equal(a.password_hash, "$scrypt$hash-a");
	assert_false(a.disabled);
	assert_true(a.created_at > 1600000000);
	bw_admin_clear(&a);
	assert_null(a.password_hash);
	assert_int_equal(bw_store_admin_get(c->st, name, &a, &err), BW_OK);
	assert_string_equal(a.name, name);
	bw_admin_clear(&a);
	assert_int_equal(bw_store_admin_get(c->st, "nobody", &a, &err), BW_E_NOTFOUND);
	assert_null(a.password_hash);
	assert_int_equal(bw_store_admin_get(c->st, "ALICE", &a, &err), BW_E_NOTFOUND);

	json_t *list = NULL;
	assert_int_equal(bw_store_admin_list(c->st, &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 4);
	/* byte order of the names: 'Z' < 'a' */
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "name")), "Zoë Ångström");
	json_t *first = json_array_get(list, 1);
	assert_string_equal(json_string_value(json_object_get(first, "name")), "alice");
	assert_string_equal(json_string_value(json_object_get(first, "role")), "administrator");
	assert_true(json_is_integer(json_object_get(first, "created_at")));
	assert_true(json_is_false(json_object_get(first, "disabled")));
	assert_null(json_object_get(first, "password_hash"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 2), "name")), "bob");
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 3), "name")), name);
	json_decref(list);

	int64_t n = -1;
	assert_int_equal(bw_store_admin_count(c->st, NULL, &n, &err), BW_OK);
	assert_int_equal(n, 4);
	assert_int_equal(bw_store_admin_count(c->st, "administrator", &n, &err), BW_OK);
	assert_int_equal(n, 1);
	assert_int_equal(bw_store_admin_count(c->st, "readonly", &n, &err), BW_OK);
	assert_int_equal(n, 3);
	assert_int_equal(bw_store_admin_count(c->st, "root", &n, &err), BW_E_INVALID);

	/* changes */
	assert_int_equal(bw_store_admin_set_role(c->st, "bob", "administrator", &err), BW_OK);
	assert_int_equal(bw_store_admin_set_role(c->st, "bob", "god", &err), BW_E_INVALID);
	assert_int_equal(bw_store_admin_set_disabled(c->st, "bob", true, &err), BW_OK);
	assert_int_equal(bw_store_admin_set_password(c->st, "bob", "$scrypt$new", &err), BW_OK);
	assert_int_equal(bw_store_admin_get(c->st, "bob", &a, &err), BW_OK);
	assert_string_equal(a.role, "administrator");
	assert_true(a.disabled);
	assert_string_equal(a.password_hash, "$scrypt$new");
	bw_admin_clear(&a);
	assert_int_equal(bw_store_admin_set_role(c->st, "nobody", "readonly", &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_admin_set_disabled(c->st, "nobody", true, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_admin_set_password(c->st, "nobody", "x", &err), BW_E_NOTFOUND);
	assert_non_null(strstr(err.message, "nobody"));

	/* delete */
	assert_int_equal(bw_store_admin_delete(c->st, "bob", &err), BW_OK);
	assert_int_equal(bw_store_admin_delete(c->st, "bob", &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_admin_count(c->st, NULL, &n, &err), BW_OK);
	assert_int_equal(n, 3);
}

static void test_admin_delete_cascades_tokens(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	assert_int_equal(bw_store_admin_create(c->st, "id-a", "alice", "h", "administrator", &err), BW_OK);
	assert_int_equal(bw_store_admin_create(c->st, "id-b", "bob", "h", "administrator", &err), BW_OK);
	assert_int_equal(
	    bw_store_token_create(c->st, "t1", "alice", "session", NULL, "administrator", HASH_A, 1, 0, &err), BW_OK);
	assert_int_equal(bw_store_token_create(c->st, "t2", "alice", "api", "ci", "readonly", HASH_B, 1, 0, &err),
	                 BW_OK);
	assert_int_equal(bw_store_token_create(c->st, "t3", "bob", "api", "ops", "readonly", HASH_C, 1, 0, &err),
	                 BW_OK);
	assert_int_equal(bw_store_admin_delete(c->st, "alice", &err), BW_OK);
	struct bw_token_info ti;
	assert_int_equal(bw_store_token_find(c->st, HASH_A, 2, &ti, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_token_find(c->st, HASH_B, 2, &ti, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_token_find(c->st, HASH_C, 2, &ti, &err), BW_OK);
	json_t *list = NULL;
	assert_int_equal(bw_store_token_list(c->st, NULL, &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 1);
	json_decref(list);
	bw_store_close(c->st);
	c->st = NULL;
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM tokens"), 1);
}

static void test_injection_strings_stored_literally(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	const char *names[] = {
	    "x'); DROP TABLE admins;--",
	    "Robert'); DELETE FROM admins WHERE ('1'='1",
	    "\" OR 1=1 --",
	    "name; ATTACH DATABASE '/tmp/evil.db' AS evil;",
	};
	size_t n = sizeof names / sizeof names[0];
	char id[16];
	for (size_t i = 0; i < n; i++) {
		snprintf(id, sizeof id, "id-%zu", i);
		assert_int_equal(bw_store_admin_create(c->st, id, names[i], "h'); --", "readonly", &err), BW_OK);
	}
	for (size_t i = 0; i < n; i++) {
		struct bw_admin a;
		assert_int_equal(bw_store_admin_get(c->st, names[i], &a, &err), BW_OK);
		assert_string_equal(a.name, names[i]);
		assert_string_equal(a.password_hash, "h'); --");
		bw_admin_clear(&a);
	}
	int64_t count;
	assert_int_equal(bw_store_admin_count(c->st, NULL, &count, &err), BW_OK);
	assert_int_equal(count, (int64_t)n);
	assert_int_equal(bw_store_admin_get(c->st, "' OR '1'='1", &(struct bw_admin){0}, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_admin_delete(c->st, "' OR '1'='1", &err), BW_E_NOTFOUND);

	assert_int_equal(
	    bw_store_record_put(c->st, "p", "c'; DROP TABLE plugin_records;--", "k' OR '1'='1", "\"v'\"", 1, &err),
	    BW_OK);
	char *v = NULL;
	assert_int_equal(bw_store_record_get(c->st, "p", "c'; DROP TABLE plugin_records;--", "k' OR '1'='1", &v, &err),
	                 BW_OK);
	assert_string_equal(v, "\"v'\"");
	free(v);
	assert_int_equal(bw_store_record_get(c->st, "p", "c'; DROP TABLE plugin_records;--", "k", &v, &err),
	                 BW_E_NOTFOUND);
	assert_int_equal(
	    bw_store_audit_add(c->st, 1, "'); DROP TABLE audit_log;--", NULL, "login", NULL, "failure", NULL, &err),
	    BW_OK);
	bw_store_close(c->st);
	c->st = NULL;
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM sqlite_schema WHERE name IN ('admins', "
	                                  "'plugin_records', 'tokens', 'audit_log')"),
	                 4);
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM audit_log WHERE actor = "
	                                  "'''); DROP TABLE audit_log;--'"),
	                 1);
}

/* ---- tokens */

static void test_tokens(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	const int64_t now = 1700000000;
	assert_int_equal(bw_store_admin_create(c->st, "id-a", "alice", "h", "administrator", &err), BW_OK);
	assert_int_equal(bw_store_admin_create(c->st, "id-b", "bob", "h", "readonly", &err), BW_OK);

	/* alice: a session (expires in 100 s) and a read-only API token; bob: an API token that
	 * claims more than bob has */
	assert_int_equal(
	    bw_store_token_create(c->st, "s1", "alice", "session", NULL, "administrator", HASH_A, now, now + 100, &err),
	    BW_OK);
	assert_int_equal(bw_store_token_create(c->st, "a1", "alice", "api", "ci", "readonly", HASH_B, now, 0, &err),
	                 BW_OK);
	assert_int_equal(
	    bw_store_token_create(c->st, "a2", "bob", "api", "deploy", "administrator", HASH_C, now + 1, 0, &err),
	    BW_OK);
	assert_int_equal(
	    bw_store_token_create(c->st, "x1", "alice", "session", NULL, "administrator", HASH_D, now, now - 1, &err),
	    BW_OK);

	/* refusals */
	assert_int_equal(bw_store_token_create(c->st, "z1", "nobody", "api", "n", "readonly", HASH_E, now, 0, &err),
	                 BW_E_NOTFOUND);
	assert_non_null(strstr(err.message, "nobody"));
	assert_int_equal(bw_store_token_create(c->st, "z1", "alice", "api", "dup", "readonly", HASH_A, now, 0, &err),
	                 BW_E_EXISTS);
	assert_null(strstr(err.message, HASH_A));
	assert_int_equal(bw_store_token_create(c->st, "a1", "alice", "api", "dup", "readonly", HASH_E, now, 0, &err),
	                 BW_E_EXISTS);
	char raw[BW_TOKEN_LEN + 1];
	assert_int_equal(bw_token_new(raw, &err), BW_OK);
	assert_int_equal(bw_store_token_create(c->st, "z1", "alice", "api", "raw", "readonly", raw, now, 0, &err),
	                 BW_E_INVALID);
	assert_null(strstr(err.message, raw));
	assert_int_equal(bw_store_token_create(c->st, "z1", "alice", "cookie", "k", "readonly", HASH_E, now, 0, &err),
	                 BW_E_INVALID);
	assert_int_equal(bw_store_token_create(c->st, "z1", "alice", "api", "k", "owner", HASH_E, now, 0, &err),
	                 BW_E_INVALID);
	assert_int_equal(bw_store_token_create(c->st, "z1", "alice", "api", "k", "readonly", HASH_E, now, -5, &err),
	                 BW_E_INVALID);

	/* find */
	struct bw_token_info ti;
	assert_int_equal(bw_store_token_find(c->st, HASH_A, now + 50, &ti, &err), BW_OK);
	assert_string_equal(ti.id, "s1");
	assert_string_equal(ti.kind, "session");
	assert_string_equal(ti.name, "");
	assert_string_equal(ti.admin_name, "alice");
	assert_string_equal(ti.role, "administrator");
	assert_int_equal(ti.expires_at, now + 100);
	assert_int_equal(bw_store_token_find(c->st, HASH_A, now + 100, &ti, &err), BW_E_NOTFOUND); /* expiry instant */
	assert_int_equal(bw_store_token_find(c->st, HASH_A, now + 101, &ti, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_token_find(c->st, HASH_D, now, &ti, &err), BW_E_NOTFOUND); /* already expired */
	assert_int_equal(bw_store_token_find(c->st, HASH_E, now, &ti, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_token_find(c->st, "short", now, &ti, &err), BW_E_INVALID);

	assert_int_equal(bw_store_token_find(c->st, HASH_B, now + 1000000, &ti, &err), BW_OK); /* never expires */
	assert_string_equal(ti.role, "readonly");
	assert_string_equal(ti.name, "ci");
	assert_int_equal(ti.expires_at, 0);

	/* the lower of the token's role and the owner's role */
	assert_int_equal(bw_store_token_find(c->st, HASH_C, now, &ti, &err), BW_OK);
	assert_string_equal(ti.admin_name, "bob");
	assert_string_equal(ti.role, "readonly");
	assert_int_equal(bw_store_admin_set_role(c->st, "bob", "administrator", &err), BW_OK);
	assert_int_equal(bw_store_token_find(c->st, HASH_C, now, &ti, &err), BW_OK);
	assert_string_equal(ti.role, "administrator");
	assert_int_equal(bw_store_admin_set_role(c->st, "alice", "readonly", &err), BW_OK);
	assert_int_equal(bw_store_token_find(c->st, HASH_A, now, &ti, &err), BW_OK);
	assert_string_equal(ti.role, "readonly");
	assert_int_equal(bw_store_admin_set_role(c->st, "alice", "administrator", &err), BW_OK);

	/* a disabled owner's tokens do not work, and work again once re-enabled */
	assert_int_equal(bw_store_admin_set_disabled(c->st, "alice", true, &err), BW_OK);
	assert_int_equal(bw_store_token_find(c->st, HASH_A, now, &ti, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_token_find(c->st, HASH_B, now, &ti, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_admin_set_disabled(c->st, "alice", false, &err), BW_OK);
	assert_int_equal(bw_store_token_find(c->st, HASH_A, now, &ti, &err), BW_OK);

	/* touch */
	assert_int_equal(bw_store_token_touch(c->st, "a1", now + 30, &err), BW_OK);
	assert_int_equal(bw_store_token_touch(c->st, "a1", now + 20, &err), BW_OK); /* never goes back */
	assert_int_equal(bw_store_token_touch(c->st, "nope", now, &err), BW_E_NOTFOUND);

	/* list */
	json_t *list = NULL;
	assert_int_equal(bw_store_token_list(c->st, "api", &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 2);
	json_t *t = json_array_get(list, 0);
	assert_string_equal(json_string_value(json_object_get(t, "id")), "a1");
	assert_string_equal(json_string_value(json_object_get(t, "name")), "ci");
	assert_string_equal(json_string_value(json_object_get(t, "owner")), "alice");
	assert_string_equal(json_string_value(json_object_get(t, "role")), "readonly");
	assert_int_equal(json_integer_value(json_object_get(t, "created_at")), now);
	assert_int_equal(json_integer_value(json_object_get(t, "expires_at")), 0);
	assert_int_equal(json_integer_value(json_object_get(t, "last_used_at")), now + 30);
	assert_null(json_object_get(t, "token_hash"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "id")), "a2");
	json_decref(list);
	assert_int_equal(bw_store_token_list(c->st, "session", &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 2);
	json_decref(list);
	assert_int_equal(bw_store_token_list(c->st, NULL, &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 4);
	json_decref(list);
	assert_int_equal(bw_store_token_list(c->st, "bogus", &list, &err), BW_E_INVALID);
	assert_null(list);

	/* purge removes expired tokens only */
	assert_int_equal(bw_store_token_purge_expired(c->st, now + 100, &err), BW_OK);
	assert_int_equal(bw_store_token_list(c->st, NULL, &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 2); /* a1, a2: never expire */
	json_decref(list);

	/* delete */
	assert_int_equal(bw_store_token_delete(c->st, "a1", &err), BW_OK);
	assert_int_equal(bw_store_token_delete(c->st, "a1", &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_token_find(c->st, HASH_B, now, &ti, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_token_delete_hash(c->st, HASH_C, &err), BW_OK);
	assert_int_equal(bw_store_token_delete_hash(c->st, HASH_C, &err), BW_E_NOTFOUND);
	assert_null(strstr(err.message, HASH_C));
	assert_int_equal(bw_store_token_list(c->st, NULL, &list, &err), BW_OK);
	assert_int_equal(json_array_size(list), 0);
	json_decref(list);
}

/* ---- audit log */

static void test_audit(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	char target[32];
	for (int i = 1; i <= 25; i++) {
		snprintf(target, sizeof target, "device-%d", i);
		assert_int_equal(bw_store_audit_add(c->st, 1000 + i, "alice", i % 2 ? "127.0.0.1" : NULL, "device.wipe",
		                                    target, "success", i == 25 ? "{\"reason\":\"lost\"}" : NULL, &err),
		                 BW_OK);
	}
	json_t *page = NULL;
	assert_int_equal(bw_store_audit_list(c->st, 0, 10, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 10);
	json_t *e = json_array_get(page, 0);
	int64_t top = json_integer_value(json_object_get(e, "id"));
	assert_int_equal(json_integer_value(json_object_get(e, "at")), 1025);
	assert_string_equal(json_string_value(json_object_get(e, "actor")), "alice");
	assert_string_equal(json_string_value(json_object_get(e, "address")), "127.0.0.1");
	assert_string_equal(json_string_value(json_object_get(e, "action")), "device.wipe");
	assert_string_equal(json_string_value(json_object_get(e, "target")), "device-25");
	assert_string_equal(json_string_value(json_object_get(e, "outcome")), "success");
	assert_string_equal(json_string_value(json_object_get(e, "detail")), "{\"reason\":\"lost\"}");
	assert_true(json_is_null(json_object_get(json_array_get(page, 1), "address")));
	assert_true(json_is_null(json_object_get(json_array_get(page, 1), "detail")));
	/* newest first, contiguous */
	for (size_t i = 1; i < 10; i++)
		assert_int_equal(json_integer_value(json_object_get(json_array_get(page, i), "id")), top - (int64_t)i);
	int64_t last = json_integer_value(json_object_get(json_array_get(page, 9), "id"));
	json_decref(page);

	assert_int_equal(bw_store_audit_list(c->st, last, 10, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 10);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(page, 0), "id")), last - 1);
	last = json_integer_value(json_object_get(json_array_get(page, 9), "id"));
	json_decref(page);
	assert_int_equal(bw_store_audit_list(c->st, last, 10, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 5);
	assert_string_equal(json_string_value(json_object_get(json_array_get(page, 4), "target")), "device-1");
	last = json_integer_value(json_object_get(json_array_get(page, 4), "id"));
	json_decref(page);
	assert_int_equal(bw_store_audit_list(c->st, last, 10, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 0);
	json_decref(page);

	assert_int_equal(bw_store_audit_list(c->st, 0, 0, &page, &err), BW_E_INVALID);
	assert_null(page);
	assert_int_equal(bw_store_audit_list(c->st, 0, 1001, &page, &err), BW_E_INVALID);
	assert_int_equal(bw_store_audit_list(c->st, 0, 1000, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 25);
	json_decref(page);
	assert_int_equal(bw_store_audit_add(c->st, 1, "a", NULL, NULL, NULL, "success", NULL, &err), BW_E_INVALID);
	assert_int_equal(bw_store_audit_add(c->st, 1, "a", NULL, "x", NULL, "", NULL, &err), BW_E_INVALID);

	/* an audit entry is never refused for its content: long values are cut, bad bytes replaced */
	char *big = malloc(10001);
	assert_non_null(big);
	memset(big, 'd', 10000);
	big[10000] = '\0';
	assert_int_equal(bw_store_audit_add(c->st, 2000, "evil\xff\xfename", NULL, "login", big, "failure", big, &err),
	                 BW_OK);
	free(big);
	assert_int_equal(bw_store_audit_list(c->st, 0, 1, &page, &err), BW_OK);
	e = json_array_get(page, 0);
	assert_string_equal(json_string_value(json_object_get(e, "actor")), "evil??name");
	assert_int_equal(strlen(json_string_value(json_object_get(e, "target"))), 256);
	assert_int_equal(strlen(json_string_value(json_object_get(e, "detail"))), 4096);
	json_decref(page);
	/* a cut never splits a character: "a" then 2-byte characters, so byte 256 is mid-character */
	char multi[600] = "a";
	for (int i = 0; i < 200; i++)
		strcat(multi, "\xc3\xa9"); /* é */
	assert_int_equal(bw_store_audit_add(c->st, 2002, "a", NULL, "x", multi, "ok", NULL, &err), BW_OK);
	assert_int_equal(bw_store_audit_list(c->st, 0, 1, &page, &err), BW_OK);
	const char *cut = json_string_value(json_object_get(json_array_get(page, 0), "target"));
	assert_non_null(cut);
	assert_int_equal(strlen(cut), 255);
	assert_null(strchr(cut, '?'));
	assert_memory_equal(cut, multi, 255);
	json_decref(page);
}

/* ---- plugin records */

/* With automatic checkpoints off, the WAL grows until bw_store_checkpoint (run by bulwarkd on a
 * work-queue thread) copies it back; nothing is lost, and the data stays readable throughout. */
static void test_checkpoint_off_the_writer(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	assert_int_equal(bw_store_set_autocheckpoint(c->st, false, &err), BW_OK);
	char key[32];
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof key, "k%04d", i);
		assert_int_equal(
		    bw_store_record_put(c->st, "p", "c", key, "{\"v\":\"0123456789abcdef0123456789\"}", 1, &err),
		    BW_OK);
	}
	char wal[1100];
	snprintf(wal, sizeof wal, "%s-wal", c->path);
	struct stat st;
	assert_int_equal(stat(wal, &st), 0);
	/* Past SQLite's default 1000-page automatic checkpoint: it did not run. */
	int frames = 0, done = 0;
	assert_int_equal(bw_store_checkpoint(c->path, &frames, &done, &err), BW_OK);
	if (frames < 1000)
		fail_msg("only %d WAL frames", frames);
	assert_int_equal(done, frames);
	/* Nothing new: a second checkpoint finds the same frames, all already copied. */
	assert_int_equal(bw_store_checkpoint(c->path, &frames, &done, &err), BW_OK);
	assert_int_equal(done, frames);
	char *text = NULL;
	assert_int_equal(bw_store_record_get(c->st, "p", "c", "k1999", &text, &err), BW_OK);
	free(text);
	/* A missing database is an error, not a silent success. */
	char missing[1100];
	snprintf(missing, sizeof missing, "%s/none/x.db", c->dir);
	assert_int_equal(bw_store_checkpoint(missing, NULL, NULL, &err), BW_E_DB);
	bw_store_checkpoint_close();
}

static void test_records(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	char *v = NULL;
	assert_int_equal(bw_store_record_put(c->st, "p1", "devices", "d1", "{\"os\":\"android\"}", 10, &err), BW_OK);
	assert_int_equal(bw_store_record_get(c->st, "p1", "devices", "d1", &v, &err), BW_OK);
	assert_string_equal(v, "{\"os\":\"android\"}");
	free(v);
	assert_int_equal(bw_store_record_put(c->st, "p1", "devices", "d1", "{\"os\":\"ios\"}", 11, &err), BW_OK);
	assert_int_equal(bw_store_record_get(c->st, "p1", "devices", "d1", &v, &err), BW_OK);
	assert_string_equal(v, "{\"os\":\"ios\"}");
	free(v);
	/* namespaces are separate */
	assert_int_equal(bw_store_record_get(c->st, "p2", "devices", "d1", &v, &err), BW_E_NOTFOUND);
	assert_null(v);
	assert_int_equal(bw_store_record_get(c->st, "p1", "other", "d1", &v, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_record_get(c->st, "p1", "devices", "d2", &v, &err), BW_E_NOTFOUND);
	assert_non_null(strstr(err.message, "d2"));

	/* any JSON value; invalid JSON refused and not stored */
	const char *ok[] = {"42", "\"text\"", "null", "true", "[1,2,3]", " {\"a\": [] } "};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		assert_int_equal(bw_store_record_put(c->st, "p1", "values", ok[i], ok[i], 1, &err), BW_OK);
	const char *bad[] = {"", "{", "{\"a\":1,}", "'single'", "{\"a\":1,\"a\":2}", "[1] [2]", "nul", "{\"a\":NaN}"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(bw_store_record_put(c->st, "p1", "bad", "k", bad[i], 1, &err), BW_E_INVALID);
		assert_non_null(strstr(err.message, "JSON"));
	}
	assert_int_equal(bw_store_record_get(c->st, "p1", "bad", "k", &v, &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_record_put(c->st, "p1", "bad", "k", NULL, 1, &err), BW_E_INVALID);

	/* size limits on names and values */
	char key[200];
	memset(key, 'k', 129);
	key[129] = '\0';
	assert_int_equal(bw_store_record_put(c->st, "p1", "devices", key, "1", 1, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "key"));
	assert_int_equal(bw_store_record_put(c->st, "p1", key, "k", "1", 1, &err), BW_E_INVALID);
	assert_int_equal(bw_store_record_get(c->st, "p1", "devices", key, &v, &err), BW_E_INVALID);
	key[128] = '\0';
	assert_int_equal(bw_store_record_put(c->st, "p1", "long", key, "1", 1, &err), BW_OK);
	assert_int_equal(bw_store_record_put(c->st, "p1", "devices", "", "1", 1, &err), BW_E_INVALID);
	assert_int_equal(bw_store_record_put(c->st, "p1", "", "k", "1", 1, &err), BW_E_INVALID);
	assert_int_equal(bw_store_record_put(c->st, "", "c", "k", "1", 1, &err), BW_E_INVALID);
	assert_int_equal(bw_store_record_put(c->st, "p1", "c", "bad\xc3", "1", 1, &err), BW_E_INVALID);
	size_t big_len = BW_STORE_RECORD_VALUE_MAX + 1;
	char *big = malloc(big_len + 1);
	assert_non_null(big);
	big[0] = '"';
	memset(big + 1, 'x', big_len - 2);
	big[big_len - 1] = '"';
	big[big_len] = '\0';
	assert_int_equal(bw_store_record_put(c->st, "p1", "c", "big", big, 1, &err), BW_E_LIMIT);
	/* exactly the limit is accepted */
	big[big_len - 2] = '"';
	big[big_len - 1] = '\0';
	assert_int_equal(bw_store_record_put(c->st, "p1", "c", "big", big, 1, &err), BW_OK);
	free(big);

	/* delete */
	assert_int_equal(bw_store_record_delete(c->st, "p1", "devices", "d1", &err), BW_OK);
	assert_int_equal(bw_store_record_delete(c->st, "p1", "devices", "d1", &err), BW_E_NOTFOUND);
	assert_int_equal(bw_store_record_get(c->st, "p1", "devices", "d1", &v, &err), BW_E_NOTFOUND);
}

static void test_record_list_paging(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	char key[16], val[32];
	/* inserted out of order; listed in key order */
	for (int i = 24; i >= 0; i--) {
		snprintf(key, sizeof key, "k%02d", i);
		snprintf(val, sizeof val, "{\"n\":%d}", i);
		assert_int_equal(bw_store_record_put(c->st, "plug", "things", key, val, i, &err), BW_OK);
	}
	assert_int_equal(bw_store_record_put(c->st, "plug", "others", "k00", "1", 1, &err), BW_OK);
	assert_int_equal(bw_store_record_put(c->st, "plug2", "things", "k05", "1", 1, &err), BW_OK);

	json_t *page = NULL;
	const char *after = NULL;
	char after_buf[16];
	int seen = 0, pages = 0;
	for (;;) {
		assert_int_equal(bw_store_record_list(c->st, "plug", "things", after, 10, &page, &err), BW_OK);
		size_t n = json_array_size(page);
		if (n == 0) {
			json_decref(page);
			break;
		}
		pages++;
		for (size_t i = 0; i < n; i++) {
			json_t *e = json_array_get(page, i);
			snprintf(key, sizeof key, "k%02d", seen);
			assert_string_equal(json_string_value(json_object_get(e, "key")), key);
			assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "value"), "n")), seen);
			seen++;
		}
		snprintf(after_buf, sizeof after_buf, "%s",
		         json_string_value(json_object_get(json_array_get(page, n - 1), "key")));
		after = after_buf;
		json_decref(page);
	}
	assert_int_equal(seen, 25);
	assert_int_equal(pages, 3);

	assert_int_equal(bw_store_record_list(c->st, "plug", "things", "k23", 1000, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 1);
	json_decref(page);
	assert_int_equal(bw_store_record_list(c->st, "plug", "things", "", 2, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(page, 0), "key")), "k00");
	json_decref(page);
	assert_int_equal(bw_store_record_list(c->st, "plug", "things", "zzz", 5, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 0);
	json_decref(page);
	assert_int_equal(bw_store_record_list(c->st, "plug", "things", NULL, 0, &page, &err), BW_E_INVALID);
	assert_null(page);
	assert_int_equal(bw_store_record_list(c->st, "plug", "things", NULL, 1001, &page, &err), BW_E_INVALID);
	assert_int_equal(bw_store_record_list(c->st, "plug", "", NULL, 10, &page, &err), BW_E_INVALID);
	assert_int_equal(bw_store_record_list(c->st, "nobody", "things", NULL, 10, &page, &err), BW_OK);
	assert_int_equal(json_array_size(page), 0);
	json_decref(page);
}

/* ---- backup */

static bool no_temp_files(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *e;
	bool clean = true;
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".tmp-"))
			clean = false;
	closedir(d);
	return clean;
}

struct writer {
	bw_store *st;
	int steps;
	int inserted;
};

/* Between backup steps, another connection keeps writing. */
static bool write_between_steps(int remaining, int total, void *arg)
{
	struct writer *w = arg;
	assert_true(remaining >= 0 && remaining <= total);
	w->steps++;
	char key[32];
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof key, "during-%d", w->inserted++);
		bw_error err = {0};
		assert_int_equal(bw_store_record_put(w->st, "bk", "during", key, "{\"x\":1}", 1, &err), BW_OK);
	}
	return true;
}

/* Fills the database with `rows` records of about 2 KiB in one transaction. */
static void bulk_fill(const char *path, int rows)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	assert_int_equal(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_stmt *s;
	assert_int_equal(
	    sqlite3_prepare_v2(db, "INSERT INTO plugin_records VALUES ('bk', 'bulk', ?1, ?2, 1)", -1, &s, NULL),
	    SQLITE_OK);
	char key[32], val[2100];
	memset(val, 'v', sizeof val);
	val[0] = '"';
	val[2048] = '"';
	val[2049] = '\0';
	for (int i = 0; i < rows; i++) {
		snprintf(key, sizeof key, "row-%06d", i);
		sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(s, 2, val, -1, SQLITE_STATIC);
		assert_int_equal(sqlite3_step(s), SQLITE_DONE);
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
	assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void test_backup_while_writing(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bw_error err = {0};
	assert_int_equal(bw_store_admin_create(c->st, "id-a", "alice", "h", "administrator", &err), BW_OK);
	bulk_fill(c->path, 3000); /* about 6 MiB: many steps of 64 pages */

	struct writer w = {.st = open_ok(c)}; /* a second connection */
	char dest[1100];
	snprintf(dest, sizeof dest, "%s/backup.db", c->dir);
	assert_int_equal(bw_store_backup_ex(c->path, dest, 64, write_between_steps, &w, &err), BW_OK);
	assert_true(w.steps > 10);
	assert_true(w.inserted > 50);
	/* the server's connection keeps working too */
	assert_int_equal(bw_store_record_put(c->st, "bk", "after", "k", "1", 1, &err), BW_OK);
	bw_store_close(w.st);

	struct stat sb;
	assert_int_equal(stat(dest, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_true(no_temp_files(c->dir));

	/* the copy opens as a Bulwark database and holds the rows as of the backup's start */
	char *check = raw_text(dest, "PRAGMA integrity_check");
	assert_string_equal(check, "ok");
	free(check);
	bw_store *copy = bw_store_open(dest, &err);
	assert_non_null(copy);
	assert_int_equal(bw_store_schema_version(copy), 4);
	struct bw_admin a;
	assert_int_equal(bw_store_admin_get(copy, "alice", &a, &err), BW_OK);
	bw_admin_clear(&a);
	char *v = NULL;
	assert_int_equal(bw_store_record_get(copy, "bk", "bulk", "row-002999", &v, &err), BW_OK);
	assert_int_equal(strlen(v), 2049);
	free(v);
	bw_store_close(copy);
	assert_int_equal(raw_int(dest, "SELECT count(*) FROM plugin_records WHERE collection = 'bulk'"), 3000);
	assert_int_equal(raw_int(dest, "SELECT count(*) FROM plugin_records WHERE collection = 'during'"), 0);
	assert_int_equal(raw_int(c->path, "SELECT count(*) FROM plugin_records WHERE collection = 'during'"),
	                 w.inserted);

	/* a second backup replaces the first and now includes the later rows */
	assert_int_equal(bw_store_backup(c->path, dest, &err), BW_OK);
	assert_int_equal(raw_int(dest, "SELECT count(*) FROM plugin_records WHERE collection = 'during'"), w.inserted);
	assert_true(no_temp_files(c->dir));
}

struct bg_writer {
	char *path;
	volatile int stop;
	int inserted;
	int failures;
};

static void *bg_write(void *arg)
{
	struct bg_writer *w = arg;
	bw_error err = {0};
	bw_store *st = bw_store_open(w->path, &err);
	if (!st) {
		w->failures++;
		return NULL;
	}
	char key[32];
	while (!__atomic_load_n(&w->stop, __ATOMIC_RELAXED)) {
		snprintf(key, sizeof key, "bg-%d", w->inserted);
		if (bw_store_record_put(st, "bk", "bg", key, "[1,2,3]", 1, &err) == BW_OK)
			w->inserted++;
		else
			w->failures++;
	}
	bw_store_close(st);
	return NULL;
}

static void test_backup_with_writer_thread(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bulk_fill(c->path, 500);
	struct bg_writer w = {.path = c->path};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, bg_write, &w), 0);
	char dest[1100];
	snprintf(dest, sizeof dest, "%s/bg-backup.db", c->dir);
	bw_error err = {0};
	for (int i = 0; i < 5; i++) {
		assert_int_equal(bw_store_backup_ex(c->path, dest, 16, NULL, NULL, &err), BW_OK);
		assert_int_equal(raw_int(dest, "SELECT count(*) FROM plugin_records WHERE collection = 'bulk'"), 500);
	}
	__atomic_store_n(&w.stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	assert_int_equal(w.failures, 0);
	assert_true(w.inserted > 0);
	assert_int_equal(raw_int(dest, "PRAGMA user_version"), 4);
	assert_true(no_temp_files(c->dir));
}

static bool cancel_at_second_step(int remaining, int total, void *arg)
{
	(void)remaining, (void)total;
	return ++*(int *)arg < 2;
}

static void test_backup_refusals(void **state)
{
	struct ctx *c = *state;
	c->st = open_ok(c);
	bulk_fill(c->path, 200);
	bw_error err = {0};
	char dest[1100];
	snprintf(dest, sizeof dest, "%s/cancelled.db", c->dir);
	int calls = 0;
	assert_int_equal(bw_store_backup_ex(c->path, dest, 8, cancel_at_second_step, &calls, &err), BW_E_CANCELLED);
	assert_false(file_exists(dest));
	assert_true(no_temp_files(c->dir));

	assert_int_equal(bw_store_backup(c->path, c->path, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "database itself"));
	snprintf(dest, sizeof dest, "%s/nothere.db", c->dir);
	assert_int_equal(bw_store_backup(dest, c->dir, &err), BW_E_NOTFOUND);
	assert_non_null(strstr(err.message, "nothere.db"));
	snprintf(dest, sizeof dest, "%s/no/such/dir/b.db", c->dir);
	assert_int_equal(bw_store_backup(c->path, dest, &err), BW_E_IO);
	assert_int_equal(bw_store_backup(NULL, dest, &err), BW_E_INVALID);

	/* an existing file at the destination is replaced */
	char *old = bw_test_write(c->dir, "old.db", "old contents");
	assert_int_equal(bw_store_backup(c->path, old, &err), BW_OK);
	assert_int_equal(raw_int(old, "SELECT count(*) FROM plugin_records"), 200);
	free(old);
}

static void test_null_and_closed(void **state)
{
	(void)state;
	bw_error err = {0};
	int64_t n;
	json_t *j = NULL;
	bw_store_close(NULL);
	assert_int_equal(bw_store_schema_version(NULL), -1);
	assert_int_equal(bw_store_ping(NULL, &err), BW_E_INVALID);
	assert_int_equal(bw_store_admin_count(NULL, NULL, &n, &err), BW_E_INVALID);
	assert_int_equal(bw_store_admin_list(NULL, &j, &err), BW_E_INVALID);
	assert_int_equal(bw_store_record_put(NULL, "p", "c", "k", "1", 1, &err), BW_E_INVALID);
	bw_admin_clear(NULL);
}

static void test_memory_database(void **state)
{
	(void)state;
	bw_error err = {0};
	bw_store *st = bw_store_open(":memory:", &err);
	assert_non_null(st);
	assert_int_equal(bw_store_schema_version(st), 4);
	assert_int_equal(bw_store_record_put(st, "p", "c", "k", "1", 1, &err), BW_OK);
	bw_store_close(st);
	assert_false(file_exists(":memory:"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_fresh_database_gets_latest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_step_by_step, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upgrade_from_v1_fixture, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_v2_fixture, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_migration_rolls_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema_refused_untouched, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_foreign_database_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_admins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_admin_delete_cascades_tokens, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_injection_strings_stored_literally, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_records, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_record_list_paging, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_while_writing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_with_writer_thread, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_backup_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_checkpoint_off_the_writer, setup, teardown),
	    cmocka_unit_test(test_null_and_closed),
	    cmocka_unit_test(test_memory_database),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
