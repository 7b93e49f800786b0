/* host/services/store_sqlite.c: the SQLite implementation of store.h: opening (WAL, foreign keys,
 * busy timeout, mode 0600), schema migrations keyed on PRAGMA user_version, administrators,
 * tokens, the audit log, plugin records and online backups. Every value is bound to a prepared
 * statement; no SQL is ever built from data. */
#include "store.h"

#include "log.h"
#include "store_sqlite_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS   5000
#define BACKUP_STEP_PAGES 1024
#define AUDIT_FIELD_MAX   256
#define AUDIT_DETAIL_MAX  4096
#define HASH_MAX          512

/* ---- schema migrations
 *
 * migrations[i] takes the database from schema i to schema i + 1. Each step runs in its own
 * BEGIN IMMEDIATE transaction together with the user_version update, so a step is applied
 * completely or not at all. Rules for new steps: append only, never edit a released step, and
 * add a fixture of the previous version to tests/fixtures/db/ (see its README). A step that has
 * to rebuild a table must follow https://sqlite.org/lang_altertable.html#otheralter (foreign keys
 * cannot be switched off inside the transaction). */
static const char *const migrations[] = {
    /* 1: administrators and plugin records */
    "CREATE TABLE admins ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL UNIQUE,"
    " password_hash TEXT NOT NULL,"
    " role TEXT NOT NULL CHECK (role IN ('administrator', 'readonly')),"
    " created_at INTEGER NOT NULL,"
    " disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)));"
    "CREATE TABLE plugin_records ("
    " plugin TEXT NOT NULL,"
    " collection TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " value TEXT NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (plugin, collection, key)) WITHOUT ROWID;",

    /* 2: sessions and API tokens (hashes only), the audit log */
    "CREATE TABLE tokens ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " admin_id TEXT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,"
    " kind TEXT NOT NULL CHECK (kind IN ('session', 'api')),"
    " name TEXT NOT NULL DEFAULT '',"
    " role TEXT NOT NULL CHECK (role IN ('administrator', 'readonly')),"
    " token_hash TEXT NOT NULL UNIQUE,"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL DEFAULT 0,"
    " last_used_at INTEGER NOT NULL DEFAULT 0);"
    /* the cascade from admins looks tokens up by owner; purges by expiry */
    "CREATE INDEX tokens_admin_id ON tokens(admin_id);"
    "CREATE INDEX tokens_expires_at ON tokens(expires_at) WHERE expires_at <> 0;"
    "CREATE TABLE audit_log ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " at INTEGER NOT NULL,"
    " actor TEXT,"
    " address TEXT,"
    " action TEXT NOT NULL,"
    " target TEXT,"
    " outcome TEXT NOT NULL,"
    " detail TEXT);"
    "CREATE INDEX audit_log_at ON audit_log(at);",

    /* 3: devices (store_devices.c). Tables keyed by text are WITHOUT ROWID, except those whose
     * rows can be large (inventory snapshots, mail bodies): SQLite advises rowid tables there.
     * The inventory lives beside the registry row so that the frequent last_seen updates do
     * not rewrite a snapshot of many kilobytes. */
    "CREATE TABLE devices ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " platform TEXT NOT NULL CHECK (platform IN ('android', 'ios')),"
    " status TEXT NOT NULL CHECK (status IN ('active', 'unregistered', 'wiped')),"
    " group_name TEXT NOT NULL DEFAULT '',"
    " owner TEXT NOT NULL DEFAULT '',"
    " cert_serial TEXT NOT NULL,"
    " cert_not_after INTEGER NOT NULL,"
    " enrolled_at INTEGER NOT NULL,"
    " last_seen INTEGER NOT NULL DEFAULT 0,"
    " status_changed_at INTEGER NOT NULL,"
    " enroll_method TEXT NOT NULL,"
    " os_version TEXT,"
    /* zero-padded numeric parts: compares as text like the dotted version (see store_devices.c) */
    " os_version_key TEXT,"
    " model TEXT,"
    " manufacturer TEXT,"
    " serial TEXT,"
    " imei TEXT,"
    " meid TEXT,"
    " wifi_mac TEXT,"
    " phone_number TEXT,"
    " agent_version TEXT,"
    " push_provider TEXT,"
    " push_token TEXT) WITHOUT ROWID;"
    /* filtered, id-paged listings: (filter, id) serves "filter = ? AND id > ? ORDER BY id" */
    "CREATE INDEX devices_status ON devices(status, id);"
    "CREATE INDEX devices_platform ON devices(platform, id);"
    "CREATE INDEX devices_group ON devices(group_name, id);"
    "CREATE INDEX devices_os ON devices(os_version_key, id);"
    "CREATE TABLE device_inventory ("
    " device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
    " inventory TEXT NOT NULL,"
    " inventory_at INTEGER NOT NULL);"
    "CREATE TABLE enrollment_keys ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " key_hash TEXT NOT NULL UNIQUE,"
    " prefix TEXT NOT NULL,"
    " group_name TEXT NOT NULL DEFAULT '',"
    " max_uses INTEGER NOT NULL DEFAULT 0 CHECK (max_uses >= 0),"
    " uses INTEGER NOT NULL DEFAULT 0,"
    " expires_at INTEGER NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),"
    " created_by TEXT,"
    " created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE invitations ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " email TEXT NOT NULL,"
    " code_hash TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL DEFAULT 0,"
    " used_at INTEGER NOT NULL DEFAULT 0,"
    " created_by TEXT,"
    " created_at INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX invitations_email ON invitations(email, code_hash);"
    "CREATE TABLE outbox ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " to_addr TEXT NOT NULL,"
    " subject TEXT NOT NULL,"
    " body TEXT NOT NULL,"
    " created_at INTEGER NOT NULL,"
    " sent_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE allowlist ("
    " kind TEXT NOT NULL CHECK (kind IN ('imei', 'meid', 'wifi_mac')),"
    " value TEXT NOT NULL,"
    " note TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL,"
    " PRIMARY KEY (kind, value)) WITHOUT ROWID;"
    "CREATE TABLE settings ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE enrollment_refusals ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " at INTEGER NOT NULL,"
    " address TEXT,"
    " reason TEXT NOT NULL,"
    " detail TEXT);"
    "CREATE TABLE commands ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
    " type TEXT NOT NULL,"
    " params TEXT NOT NULL DEFAULT '{}',"
    " priority INTEGER NOT NULL DEFAULT 0,"
    " state TEXT NOT NULL CHECK (state IN ('queued', 'sent', 'acknowledged', 'completed', 'failed', 'expired',"
    " 'cancelled')),"
    " created_by TEXT,"
    " created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL DEFAULT 0,"
    " sent_at INTEGER NOT NULL DEFAULT 0,"
    " acked_at INTEGER NOT NULL DEFAULT 0,"
    " completed_at INTEGER NOT NULL DEFAULT 0,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " result TEXT,"
    " error TEXT) WITHOUT ROWID;"
    /* delivery to one device; the partial indexes hold open commands only, so the pending set,
     * the queue statistics and expiry cost what is open, not the whole history */
    "CREATE INDEX commands_device ON commands(device_id, state, priority DESC, created_at);"
    "CREATE INDEX commands_open ON commands(device_id, created_at)"
    " WHERE state IN ('queued', 'sent', 'acknowledged');"
    "CREATE INDEX commands_open_expiry ON commands(expires_at)"
    " WHERE state IN ('queued', 'sent', 'acknowledged') AND expires_at <> 0;"
    "CREATE TABLE device_events ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " device_id TEXT NOT NULL,"
    " batch_id TEXT NOT NULL,"
    " type TEXT NOT NULL,"
    " at INTEGER NOT NULL,"
    " data TEXT,"
    " received_at INTEGER NOT NULL);"
    "CREATE INDEX device_events_device ON device_events(device_id, at);"
    "CREATE INDEX device_events_type ON device_events(type, at);"
    "CREATE INDEX device_events_at ON device_events(at);"
    "CREATE TABLE device_event_batches ("
    " device_id TEXT NOT NULL,"
    " batch_id TEXT NOT NULL,"
    " received_at INTEGER NOT NULL,"
    " PRIMARY KEY (device_id, batch_id)) WITHOUT ROWID;"
    "CREATE INDEX device_event_batches_received ON device_event_batches(received_at);"
    "CREATE TABLE revoked_certs ("
    " serial TEXT PRIMARY KEY NOT NULL,"
    " device_id TEXT,"
    " reason TEXT,"
    " revoked_at INTEGER NOT NULL) WITHOUT ROWID;",

    /* 4: groups and policies (store_policies.c). Devices and enrollment keys keep naming their
     * group (group_name; '' means "default"): every name already in use becomes a group under
     * "default" (id 1, the root, which can be neither deleted nor renamed). A group's
     * policy_version is the number of its current document in policy_versions (0: none,
     * everything inherited). Documents are stored in their protected form: secrets as verifiers
     * or ciphertexts only (policy_doc.h). */
    "CREATE TABLE groups ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " parent_id INTEGER REFERENCES groups(id),"
    " description TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL,"
    " policy_version INTEGER NOT NULL DEFAULT 0,"
    " CHECK ((id = 1) = (parent_id IS NULL)));"
    "CREATE INDEX groups_parent ON groups(parent_id);"
    "INSERT INTO groups (id, name, parent_id, created_at)"
    " VALUES (1, 'default', NULL, CAST(strftime('%s', 'now') AS INTEGER));"
    "INSERT OR IGNORE INTO groups (name, parent_id, created_at)"
    " SELECT DISTINCT group_name, 1, CAST(strftime('%s', 'now') AS INTEGER) FROM"
    " (SELECT group_name FROM devices UNION SELECT group_name FROM enrollment_keys)"
    " WHERE group_name <> '' ORDER BY group_name;"
    "UPDATE devices SET group_name = 'default' WHERE group_name = '';"
    "CREATE TABLE policy_versions ("
    " group_id INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,"
    " version INTEGER NOT NULL CHECK (version > 0),"
    " document TEXT NOT NULL,"
    " author TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL,"
    " summary TEXT NOT NULL DEFAULT '',"
    " PRIMARY KEY (group_id, version));"
    /* delivery state: the version last assigned (queued) and the one the device reported */
    "CREATE TABLE device_policy_state ("
    " device_id TEXT PRIMARY KEY NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
    " assigned_version TEXT NOT NULL DEFAULT '',"
    " assigned_at INTEGER NOT NULL DEFAULT 0,"
    " resent_at INTEGER NOT NULL DEFAULT 0,"
    " applied_version TEXT NOT NULL DEFAULT '',"
    " applied_at INTEGER NOT NULL DEFAULT 0,"
    " out_of_sync INTEGER NOT NULL DEFAULT 0 CHECK (out_of_sync IN (0, 1))) WITHOUT ROWID;"
    /* the owner's name and e-mail from the directory (enrollment by directory credentials) */
    "ALTER TABLE devices ADD COLUMN owner_name TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE devices ADD COLUMN owner_email TEXT NOT NULL DEFAULT '';",
};

#define SCHEMA_LATEST ((int)(sizeof migrations / sizeof migrations[0]))

/* ---- prepared statements, prepared on first use and kept for the handle's life */
enum stmt_id {
	S_PING,
	S_ADMIN_INSERT,
	S_ADMIN_GET,
	S_ADMIN_LIST,
	S_ADMIN_DELETE,
	S_ADMIN_COUNT,
	S_ADMIN_COUNT_ROLE,
	S_ADMIN_SET_DISABLED,
	S_ADMIN_SET_ROLE,
	S_ADMIN_SET_PASSWORD,
	S_TOKEN_INSERT,
	S_TOKEN_FIND,
	S_TOKEN_TOUCH,
	S_TOKEN_LIST,
	S_TOKEN_DELETE,
	S_TOKEN_DELETE_HASH,
	S_TOKEN_PURGE,
	S_AUDIT_INSERT,
	S_AUDIT_LIST,
	S_RECORD_PUT,
	S_RECORD_GET,
	S_RECORD_DELETE,
	S_RECORD_LIST,
	S__COUNT
};

static const char *const stmt_sql[S__COUNT] = {
    [S_PING] = "SELECT count(*) FROM sqlite_schema",
    [S_ADMIN_INSERT] = "INSERT INTO admins (id, name, password_hash, role, created_at, disabled)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, 0)",
    [S_ADMIN_GET] = "SELECT id, name, role, created_at, disabled, password_hash FROM admins WHERE name = ?1",
    [S_ADMIN_LIST] = "SELECT name, role, created_at, disabled FROM admins ORDER BY name",
    [S_ADMIN_DELETE] = "DELETE FROM admins WHERE name = ?1",
    [S_ADMIN_COUNT] = "SELECT count(*) FROM admins",
    [S_ADMIN_COUNT_ROLE] = "SELECT count(*) FROM admins WHERE role = ?1",
    [S_ADMIN_SET_DISABLED] = "UPDATE admins SET disabled = ?2 WHERE name = ?1",
    [S_ADMIN_SET_ROLE] = "UPDATE admins SET role = ?2 WHERE name = ?1",
    [S_ADMIN_SET_PASSWORD] = "UPDATE admins SET password_hash = ?2 WHERE name = ?1",
    [S_TOKEN_INSERT] = "INSERT INTO tokens (id, admin_id, kind, name, role, token_hash, created_at, expires_at,"
                       " last_used_at) SELECT ?1, id, ?3, ?4, ?5, ?6, ?7, ?8, 0 FROM admins WHERE name = ?2",
    [S_TOKEN_FIND] = "SELECT t.id, t.kind, t.name, a.name, t.role, a.role, t.expires_at"
                     " FROM tokens t JOIN admins a ON a.id = t.admin_id"
                     " WHERE t.token_hash = ?1 AND (t.expires_at = 0 OR t.expires_at > ?2) AND a.disabled = 0",
    [S_TOKEN_TOUCH] = "UPDATE tokens SET last_used_at = max(last_used_at, ?2) WHERE id = ?1",
    [S_TOKEN_LIST] = "SELECT t.id, t.kind, t.name, a.name, t.role, t.created_at, t.expires_at, t.last_used_at"
                     " FROM tokens t JOIN admins a ON a.id = t.admin_id"
                     " WHERE ?1 IS NULL OR t.kind = ?1 ORDER BY t.created_at, t.id",
    [S_TOKEN_DELETE] = "DELETE FROM tokens WHERE id = ?1",
    [S_TOKEN_DELETE_HASH] = "DELETE FROM tokens WHERE token_hash = ?1",
    [S_TOKEN_PURGE] = "DELETE FROM tokens WHERE expires_at <> 0 AND expires_at <= ?1",
    [S_AUDIT_INSERT] = "INSERT INTO audit_log (at, actor, address, action, target, outcome, detail)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [S_AUDIT_LIST] = "SELECT id, at, actor, address, action, target, outcome, detail FROM audit_log"
                     " WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
    [S_RECORD_PUT] = "INSERT INTO plugin_records (plugin, collection, key, value, updated_at)"
                     " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (plugin, collection, key)"
                     " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    [S_RECORD_GET] = "SELECT value FROM plugin_records WHERE plugin = ?1 AND collection = ?2 AND key = ?3",
    [S_RECORD_DELETE] = "DELETE FROM plugin_records WHERE plugin = ?1 AND collection = ?2 AND key = ?3",
    [S_RECORD_LIST] = "SELECT key, value FROM plugin_records WHERE plugin = ?1 AND collection = ?2 AND key > ?3"
                      " ORDER BY key LIMIT ?4",
};

struct bw_store {
	sqlite3 *db;
	char *path;
	int version;
	sqlite3_stmt *stmts[S__COUNT];
	sqlite3_stmt *ext_stmts[BW_STORE_EXT_STMTS]; /* slots of store_devices.c */
};

int bw_store_schema_latest(void)
{
	return SCHEMA_LATEST;
}

/* ---- errors */

/* Formats "<what>: <sqlite message>" and maps the SQLite code to a bw_status. */
__attribute__((format(printf, 4, 5))) static int db_fail(sqlite3 *db, int rc, bw_error *err, const char *fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	int code = BW_E_DB;
	switch (rc & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		code = BW_E_BUSY;
		break;
	case SQLITE_NOMEM:
		code = BW_E_NOMEM;
		break;
	default:
		break;
	}
	const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
	return bw_error_set(err, code, "%s: %s (SQLite code %d)", what, msg, rc);
}

/* ---- input checks */

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 when invalid. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	if (c < 0x80)
		return 1;
	size_t len;
	unsigned min;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2, min = 0x80;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3, min = 0x800;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4, min = 0x10000;
	else
		return 0;
	if (n < len)
		return 0;
	unsigned cp = c & (0x3f >> (len - 1));
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static bool utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq(p + i, n - i);
		if (!l)
			return false;
		i += l;
	}
	return true;
}

/* A short UTF-8 string of min..max bytes; `human` names also refuse control characters
 * (they end up in logs and consoles). */
static int check_name(const char *s, size_t min, size_t max, bool human, const char *field, bw_error *err)
{
	if (!s)
		return min ? bw_error_set(err, BW_E_INVALID, "%s: missing", field) : BW_OK;
	size_t n = strlen(s);
	if (n < min)
		return bw_error_set(err, BW_E_INVALID, "%s: must not be empty", field);
	if (n > max)
		return bw_error_set(err, BW_E_INVALID, "%s: longer than %zu bytes", field, max);
	if (!utf8_valid(s, n))
		return bw_error_set(err, BW_E_INVALID, "%s: not valid UTF-8", field);
	if (human)
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
				return bw_error_set(err, BW_E_INVALID, "%s: contains a control character", field);
	return BW_OK;
}

/* Object ids: 1..36 characters of [A-Za-z0-9._-] (UUIDs in practice). */
static int check_id(const char *id, const char *field, bw_error *err)
{
	size_t n = id ? strlen(id) : 0;
	if (n == 0 || n > 36)
		return bw_error_set(err, BW_E_INVALID, "%s: must be 1..36 characters", field);
	for (size_t i = 0; i < n; i++) {
		char c = id[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
		      c == '_' || c == '.'))
			return bw_error_set(err, BW_E_INVALID, "%s: contains a character other than A-Z a-z 0-9 . _ -",
			                    field);
	}
	return BW_OK;
}

static int check_role(const char *role, bw_error *err)
{
	if (role && (strcmp(role, "administrator") == 0 || strcmp(role, "readonly") == 0))
		return BW_OK;
	return bw_error_set(err, BW_E_INVALID, "role: must be \"administrator\" or \"readonly\"");
}

static int check_kind(const char *kind, bw_error *err)
{
	if (kind && (strcmp(kind, "session") == 0 || strcmp(kind, "api") == 0))
		return BW_OK;
	return bw_error_set(err, BW_E_INVALID, "token kind: must be \"session\" or \"api\"");
}

/* The store keeps SHA-256 digests only: refusing anything else keeps a raw token from ever
 * being written by mistake. The value itself never appears in a message. */
static int check_token_hash(const char *h, bw_error *err)
{
	size_t n = h ? strlen(h) : 0;
	bool ok = n == 64;
	for (size_t i = 0; ok && i < n; i++)
		ok = (h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f');
	return ok ? BW_OK : bw_error_set(err, BW_E_INVALID, "token hash: must be 64 lower-case hex characters");
}

static int check_password_hash(const char *h, bw_error *err)
{
	size_t n = h ? strlen(h) : 0;
	if (n == 0 || n > HASH_MAX)
		return bw_error_set(err, BW_E_INVALID, "password hash: must be 1..%d bytes", HASH_MAX);
	return BW_OK;
}

#define CHECK_STORE(st)                                                                                                \
	do {                                                                                                           \
		if (!(st) || !(st)->db)                                                                                \
			return bw_error_set(err, BW_E_INVALID, "store: no open database");                             \
	} while (0)

/* ---- statements */

static int stmt_get(bw_store *st, enum stmt_id id, sqlite3_stmt **out, bw_error *err)
{
	*out = NULL;
	if (!st->stmts[id]) {
		int rc = sqlite3_prepare_v3(st->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st->stmts[id], NULL);
		if (rc != SQLITE_OK) {
			st->stmts[id] = NULL;
			return db_fail(st->db, rc, err, "preparing statement %d on %s", (int)id, st->path);
		}
	}
	*out = st->stmts[id];
	return BW_OK;
}

/* Ends one use: resets the statement (ending its read transaction) and drops the bindings,
 * which point into the caller's strings (SQLITE_STATIC). */
static void stmt_end(sqlite3_stmt *s)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
}

/* Binds parameters 1..n from `types`: 't' text (NULL binds SQL NULL), 'i' int64_t. */
static int bind_v(bw_store *st, sqlite3_stmt *s, bw_error *err, const char *types, va_list ap)
{
	int rc = SQLITE_OK;
	for (int i = 0; types[i] && rc == SQLITE_OK; i++) {
		if (types[i] == 't') {
			const char *v = va_arg(ap, const char *);
			rc = v ? sqlite3_bind_text(s, i + 1, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, i + 1);
		} else {
			rc = sqlite3_bind_int64(s, i + 1, va_arg(ap, int64_t));
		}
	}
	if (rc != SQLITE_OK) {
		int ret = db_fail(st->db, rc, err, "binding a statement parameter");
		stmt_end(s);
		return ret;
	}
	return BW_OK;
}

static int bind(bw_store *st, sqlite3_stmt *s, bw_error *err, const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	int ret = bind_v(st, s, err, types, ap);
	va_end(ap);
	return ret;
}

/* Runs a statement that returns no rows. *sqlite_rc (optional) receives the step result. */
static int run(bw_store *st, sqlite3_stmt *s, int *sqlite_rc, bw_error *err, const char *what)
{
	int rc = sqlite3_step(s);
	int ret = BW_OK;
	if (sqlite_rc)
		*sqlite_rc = rc;
	if (rc != SQLITE_DONE)
		ret = db_fail(st->db, rc, err, "%s", what);
	stmt_end(s);
	return ret;
}

/* Copies a text column into a fixed buffer (truncating; the columns are length-checked on input). */
static void col_copy(sqlite3_stmt *s, int i, char *dst, size_t size)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	snprintf(dst, size, "%s", t ? (const char *)t : "");
}

/* A text column as a JSON string (null for SQL NULL). Invalid UTF-8, which only a file edited
 * by hand can contain, is shown with '?' in place of the bad bytes. */
static json_t *col_json(sqlite3_stmt *s, int i)
{
	if (sqlite3_column_type(s, i) == SQLITE_NULL)
		return json_null();
	const char *t = (const char *)sqlite3_column_text(s, i);
	size_t n = (size_t)sqlite3_column_bytes(s, i);
	if (!t)
		return NULL;
	json_t *j = json_stringn(t, n);
	if (j)
		return j;
	char *copy = malloc(n + 1);
	if (!copy)
		return NULL;
	for (size_t k = 0; k < n;) {
		size_t l = utf8_seq((const unsigned char *)t + k, n - k);
		if (l == 0 || memchr(t + k, '\0', l)) {
			copy[k++] = '?';
		} else {
			memcpy(copy + k, t + k, l);
			k += l;
		}
	}
	j = json_stringn(copy, n);
	free(copy);
	return j;
}

bool bw_store_sql_jset(json_t *o, const char *key, json_t *v)
{
	return v && json_object_set_new(o, key, v) == 0;
}
json_t *bw_store_sql_col_parsed(sqlite3_stmt *s, int i)
{
	if (sqlite3_column_type(s, i) == SQLITE_NULL)
		return json_null();
	const char *t = (const char *)sqlite3_column_text(s, i);
	json_t *v = t ? json_loadb(t, (size_t)sqlite3_column_bytes(s, i), JSON_DECODE_ANY, NULL) : NULL;
	return v ? v : col_json(s, i);
}

json_t *bw_store_sql_row_json(sqlite3_stmt *s, const struct bw_col_map *m, size_t n)
{
	json_t *o = json_object();
	for (size_t i = 0; o && i < n; i++) {
		if (!m[i].key)
			continue;
		json_t *v = NULL;
		switch (m[i].kind) {
		case BW_COL_TEXT:
			v = col_json(s, (int)i);
			break;
		case BW_COL_INT:
			v = json_integer(sqlite3_column_int64(s, (int)i));
			break;
		case BW_COL_BOOL:
			v = json_boolean(sqlite3_column_int(s, (int)i) != 0);
			break;
		case BW_COL_JSON:
			v = bw_store_sql_col_parsed(s, (int)i);
			break;
		}
		if (!bw_store_sql_jset(o, m[i].key, v)) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

int bw_store_sql_list(bw_store *st, sqlite3_stmt *s, const struct bw_col_map *m, size_t n, json_t **out, bw_error *err,
                      const char *what)
{
	json_t *arr = json_array();
	int rc = SQLITE_NOMEM, ret = BW_OK;
	while (arr && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		json_t *o = bw_store_sql_row_json(s, m, n);
		if (!o || json_array_append_new(arr, o)) {
			json_decref(o);
			rc = SQLITE_NOMEM;
			break;
		}
	}
	if (rc == SQLITE_NOMEM)
		ret = bw_error_set(err, BW_E_NOMEM, "%s: out of memory", what);
	else if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "%s", what);
	bw_store_sql_end(s);
	if (ret)
		json_decref(arr);
	else
		*out = arr;
	return ret;
}

/* BW_E_NOTFOUND "no <what> <name>" when the last statement changed no row. */
static int changes_or_notfound(bw_store *st, bw_error *err, const char *what, const char *name)
{
	if (sqlite3_changes(st->db) > 0)
		return BW_OK;
	if (!*name)
		return bw_error_set(err, BW_E_NOTFOUND, "no %s", what);
	return bw_error_set(err, BW_E_NOTFOUND, "no %s\"%.128s\"", what, name);
}

/* ---- opening and migrations */

static int query_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			*out = sqlite3_column_int64(s, 0);
			rc = SQLITE_OK;
		}
	}
	if (rc != SQLITE_OK) {
		/* keep the step's message: finalize would otherwise be the last API call to set it */
		sqlite3_finalize(s);
		return rc;
	}
	return sqlite3_finalize(s);
}

/* Is this file ours? Version 0 must hold no tables (a new or foreign file), a later version
 * must have the admins table that step 1 creates. Nothing is written. */
static int check_identity(sqlite3 *db, const char *path, int version, bw_error *err)
{
	const char *sql = version == 0 ? "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite!_%' ESCAPE '!'"
	                                 " ORDER BY name LIMIT 1"
	                               : "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'admins'";
	sqlite3_stmt *s = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
	if (rc != SQLITE_OK)
		return db_fail(db, rc, err, "reading the schema of %s", path);
	char first[128] = "";
	rc = sqlite3_step(s);
	bool found = rc == SQLITE_ROW;
	if (found)
		col_copy(s, 0, first, sizeof first);
	else if (rc != SQLITE_DONE) {
		int ret = db_fail(db, rc, err, "reading the schema of %s", path);
		sqlite3_finalize(s);
		return ret;
	}
	sqlite3_finalize(s);
	if (version == 0 && found)
		return bw_error_set(err, BW_E_DB,
		                    "%s is not a Bulwark database: it has no schema version but already contains "
		                    "\"%s\"; refusing to modify it",
		                    path, first);
	if (version > 0 && !found)
		return bw_error_set(err, BW_E_DB,
		                    "%s is not a Bulwark database: schema version %d but no admins table; refusing "
		                    "to modify it",
		                    path, version);
	return BW_OK;
}

static int exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* One migration step, from v - 1 to v, in its own transaction. */
static int migrate_step(bw_store *st, int v, bw_error *err)
{
	bw_log_info("store", "migrating database from schema %d to %d", v - 1, v);
	int rc = exec(st->db, "BEGIN IMMEDIATE");
	if (rc != SQLITE_OK)
		return db_fail(st->db, rc, err, "migrating %s from schema %d to %d: starting the transaction", st->path,
		               v - 1, v);
	/* Another process may have migrated between our first read and our write lock. */
	int64_t cur = 0;
	rc = query_int(st->db, "PRAGMA user_version", &cur);
	if (rc == SQLITE_OK && cur != v - 1 && cur < v) {
		exec(st->db, "ROLLBACK");
		return bw_error_set(err, BW_E_DB, "migrating %s to schema %d: found schema %lld meanwhile", st->path, v,
		                    (long long)cur);
	}
	if (rc == SQLITE_OK && cur == v - 1) {
		rc = exec(st->db, migrations[v - 1]);
		if (rc == SQLITE_OK) {
			/* PRAGMA takes no parameters; v is this file's own constant, not data. */
			char pragma[48];
			snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v);
			rc = exec(st->db, pragma);
		}
	}
	if (rc == SQLITE_OK)
		rc = exec(st->db, "COMMIT");
	if (rc != SQLITE_OK) {
		int ret = db_fail(st->db, rc, err, "migrating %s from schema %d to %d", st->path, v - 1, v);
		if (!sqlite3_get_autocommit(st->db))
			exec(st->db, "ROLLBACK");
		return ret;
	}
	return BW_OK;
}

static int migrate(bw_store *st, int from, int target, bw_error *err)
{
	for (int v = from + 1; v <= target; v++) {
		int ret = migrate_step(st, v, err);
		if (ret)
			return ret;
	}
	return BW_OK;
}

void bw_store_close(bw_store *st)
{
	if (!st)
		return;
	for (int i = 0; i < S__COUNT; i++)
		sqlite3_finalize(st->stmts[i]);
	for (int i = 0; i < BW_STORE_EXT_STMTS; i++)
		sqlite3_finalize(st->ext_stmts[i]);
	if (st->db) {
		if (st->version == SCHEMA_LATEST)
			exec(st->db, "PRAGMA optimize"); /* cheap; keeps the planner's statistics fresh */
		if (sqlite3_close(st->db) != SQLITE_OK) {
			bw_log_warn("store", "closing %s: %s", st->path, sqlite3_errmsg(st->db));
			sqlite3_close_v2(st->db);
		}
	}
	free(st->path);
	free(st);
}

bw_store *bw_store_open_version(const char *path, int target, bw_error *err)
{
	if (!path || !*path) {
		bw_error_set(err, BW_E_INVALID, "database path: missing");
		return NULL;
	}
	if (target < 0 || target > SCHEMA_LATEST) {
		bw_error_set(err, BW_E_INVALID, "schema version %d: this build knows 0..%d", target, SCHEMA_LATEST);
		return NULL;
	}
	bool memory = strcmp(path, ":memory:") == 0;
	bool created = false;
	if (!memory) {
		/* Create a new file ourselves so that it is 0600 from the first byte on; SQLite gives
		 * its -wal and -shm files the database's mode. */
		int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd >= 0) {
			close(fd);
			created = true;
		} else if (errno != EEXIST) {
			bw_error_set(err, BW_E_IO, "creating database %s: %s", path, strerror(errno));
			return NULL;
		}
	}

	bw_store *st = calloc(1, sizeof *st);
	if (!st || !(st->path = strdup(path))) {
		free(st);
		bw_error_set(err, BW_E_NOMEM, "opening database %s: out of memory", path);
		goto fail_unlink;
	}
	int rc = sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		db_fail(st->db, rc, err, "opening database %s", path);
		goto fail;
	}
	sqlite3_extended_result_codes(st->db, 1);
	sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
	/* Hardening: no writable_schema tricks, no functions with side effects from schema code. */
	sqlite3_db_config(st->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(st->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);

	/* Read-only checks first: a database we must refuse is left exactly as it was (even
	 * journal_mode=WAL would rewrite its header). */
	int64_t version = 0;
	rc = query_int(st->db, "PRAGMA user_version", &version);
	if (rc != SQLITE_OK) {
		db_fail(st->db, rc, err, "reading the schema version of %s", path);
		goto fail;
	}
	if (version < 0) {
		bw_error_set(err, BW_E_DB, "database %s has an invalid schema version %lld", path, (long long)version);
		goto fail;
	}
	if (version > SCHEMA_LATEST) {
		bw_error_set(err, BW_E_DB,
		             "database schema version %lld is newer than this build supports (%d); upgrade Bulwark or "
		             "restore a backup (%s)",
		             (long long)version, SCHEMA_LATEST, path);
		goto fail;
	}
	if (check_identity(st->db, path, (int)version, err) != BW_OK)
		goto fail;

	sqlite3_stmt *s = NULL;
	rc = sqlite3_prepare_v2(st->db, "PRAGMA journal_mode = WAL", -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *mode = (const char *)sqlite3_column_text(s, 0);
		if (!memory && (!mode || strcmp(mode, "wal") != 0))
			bw_log_warn("store", "%s: WAL journal unavailable, using \"%s\"", path, mode ? mode : "?");
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		db_fail(st->db, rc, err, "setting WAL mode on %s", path);
	sqlite3_finalize(s);
	if (rc != SQLITE_OK)
		goto fail;
	rc = exec(st->db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON");
	if (rc != SQLITE_OK) {
		db_fail(st->db, rc, err, "setting pragmas on %s", path);
		goto fail;
	}
	int64_t fk = 0;
	if (query_int(st->db, "PRAGMA foreign_keys", &fk) != SQLITE_OK || fk != 1) {
		bw_error_set(err, BW_E_DB, "%s: this SQLite cannot enforce foreign keys", path);
		goto fail;
	}

	if (migrate(st, (int)version, target, err) != BW_OK)
		goto fail;
	rc = query_int(st->db, "PRAGMA user_version", &version);
	if (rc != SQLITE_OK) {
		db_fail(st->db, rc, err, "reading the schema version of %s", path);
		goto fail;
	}
	st->version = (int)version;
	return st;

fail:
	bw_store_close(st);
fail_unlink:
	if (created)
		unlink(path);
	return NULL;
}

bw_store *bw_store_open(const char *path, bw_error *err)
{
	return bw_store_open_version(path, SCHEMA_LATEST, err);
}

int bw_store_schema_version(bw_store *st)
{
	return st ? st->version : -1;
}

int bw_store_ping(bw_store *st, bw_error *err)
{
	CHECK_STORE(st);
	sqlite3_stmt *s;
	int ret = stmt_get(st, S_PING, &s, err);
	if (ret)
		return ret;
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW)
		ret = db_fail(st->db, rc, err, "pinging %s", st->path);
	stmt_end(s);
	return ret;
}

/* ---- administrators */

void bw_admin_clear(struct bw_admin *a)
{
	if (!a)
		return;
	if (a->password_hash) {
		explicit_bzero(a->password_hash, strlen(a->password_hash));
		free(a->password_hash);
	}
	memset(a, 0, sizeof *a);
}

int bw_store_admin_create(bw_store *st, const char *id, const char *name, const char *password_hash, const char *role,
                          bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	if ((ret = check_id(id, "administrator id", err)) || (ret = check_name(name, 1, 128, true, "name", err)) ||
	    (ret = check_password_hash(password_hash, err)) || (ret = check_role(role, err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_ADMIN_INSERT, &s, err)) ||
	    (ret = bind(st, s, err, "tttti", id, name, password_hash, role, (int64_t)time(NULL))))
		return ret;
	int rc;
	ret = run(st, s, &rc, err, "creating an administrator");
	if (rc == SQLITE_CONSTRAINT_UNIQUE)
		return bw_error_set(err, BW_E_EXISTS, "administrator \"%s\" already exists", name);
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "an administrator with id %s already exists", id);
	return ret;
}

int bw_store_admin_get(bw_store *st, const char *name, struct bw_admin *out, bw_error *err)
{
	memset(out, 0, sizeof *out);
	CHECK_STORE(st);
	if (!name)
		return bw_error_set(err, BW_E_INVALID, "name: missing");
	sqlite3_stmt *s;
	int ret;
	if ((ret = stmt_get(st, S_ADMIN_GET, &s, err)) || (ret = bind(st, s, err, "t", name)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		col_copy(s, 0, out->id, sizeof out->id);
		col_copy(s, 1, out->name, sizeof out->name);
		col_copy(s, 2, out->role, sizeof out->role);
		out->created_at = sqlite3_column_int64(s, 3);
		out->disabled = sqlite3_column_int(s, 4) != 0;
		const char *h = (const char *)sqlite3_column_text(s, 5);
		out->password_hash = strdup(h ? h : "");
		if (!out->password_hash)
			ret = bw_error_set(err, BW_E_NOMEM, "reading administrator: out of memory");
	} else if (rc == SQLITE_DONE) {
		ret = bw_error_set(err, BW_E_NOTFOUND, "no administrator named \"%.128s\"", name);
	} else {
		ret = db_fail(st->db, rc, err, "reading an administrator");
	}
	stmt_end(s);
	if (ret)
		bw_admin_clear(out);
	return ret;
}

int bw_store_admin_list(bw_store *st, json_t **out, bw_error *err)
{
	static const struct bw_col_map map[] = {
	    {"name", BW_COL_TEXT}, {"role", BW_COL_TEXT}, {"created_at", BW_COL_INT}, {"disabled", BW_COL_BOOL}};
	*out = NULL;
	CHECK_STORE(st);
	sqlite3_stmt *s;
	int ret = stmt_get(st, S_ADMIN_LIST, &s, err);
	return ret ? ret : bw_store_sql_list(st, s, map, 4, out, err, "listing administrators");
}

int bw_store_admin_delete(bw_store *st, const char *name, bw_error *err)
{
	CHECK_STORE(st);
	if (!name)
		return bw_error_set(err, BW_E_INVALID, "name: missing");
	sqlite3_stmt *s;
	int ret;
	if ((ret = stmt_get(st, S_ADMIN_DELETE, &s, err)) || (ret = bind(st, s, err, "t", name)) ||
	    (ret = run(st, s, NULL, err, "deleting an administrator")))
		return ret;
	return changes_or_notfound(st, err, "administrator named ", name);
}

int bw_store_admin_count(bw_store *st, const char *role, int64_t *count, bw_error *err)
{
	*count = 0;
	CHECK_STORE(st);
	int ret;
	if (role && (ret = check_role(role, err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, role ? S_ADMIN_COUNT_ROLE : S_ADMIN_COUNT, &s, err)) ||
	    (role && (ret = bind(st, s, err, "t", role))))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*count = sqlite3_column_int64(s, 0);
	else
		ret = db_fail(st->db, rc, err, "counting administrators");
	stmt_end(s);
	return ret;
}

static int admin_update(bw_store *st, enum stmt_id id, const char *name, const char *types, const char *text,
                        int64_t num, bw_error *err)
{
	sqlite3_stmt *s;
	int ret;
	if (!name)
		return bw_error_set(err, BW_E_INVALID, "name: missing");
	if ((ret = stmt_get(st, id, &s, err)))
		return ret;
	ret = types[1] == 't' ? bind(st, s, err, "tt", name, text) : bind(st, s, err, "ti", name, num);
	if (ret || (ret = run(st, s, NULL, err, "changing an administrator")))
		return ret;
	return changes_or_notfound(st, err, "administrator named ", name);
}

int bw_store_admin_set_disabled(bw_store *st, const char *name, bool disabled, bw_error *err)
{
	CHECK_STORE(st);
	return admin_update(st, S_ADMIN_SET_DISABLED, name, "ti", NULL, disabled ? 1 : 0, err);
}

int bw_store_admin_set_role(bw_store *st, const char *name, const char *role, bw_error *err)
{
	CHECK_STORE(st);
	int ret = check_role(role, err);
	return ret ? ret : admin_update(st, S_ADMIN_SET_ROLE, name, "tt", role, 0, err);
}

int bw_store_admin_set_password(bw_store *st, const char *name, const char *password_hash, bw_error *err)
{
	CHECK_STORE(st);
	int ret = check_password_hash(password_hash, err);
	return ret ? ret : admin_update(st, S_ADMIN_SET_PASSWORD, name, "tt", password_hash, 0, err);
}

/* ---- tokens */

int bw_store_token_create(bw_store *st, const char *id, const char *admin_name, const char *kind, const char *name,
                          const char *role, const char *token_hash, int64_t created_at, int64_t expires_at,
                          bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	if ((ret = check_id(id, "token id", err)) || (ret = check_name(admin_name, 1, 128, true, "owner", err)) ||
	    (ret = check_kind(kind, err)) || (ret = check_name(name, 0, 128, true, "token name", err)) ||
	    (ret = check_role(role, err)) || (ret = check_token_hash(token_hash, err)))
		return ret;
	if (created_at < 0 || expires_at < 0)
		return bw_error_set(err, BW_E_INVALID, "token times: must not be negative");
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_TOKEN_INSERT, &s, err)) ||
	    (ret = bind(st, s, err, "ttttttii", id, admin_name, kind, name ? name : "", role, token_hash, created_at,
	                expires_at)))
		return ret;
	int rc;
	ret = run(st, s, &rc, err, "creating a token");
	if (rc == SQLITE_CONSTRAINT_UNIQUE) /* never name the hash */
		return bw_error_set(err, BW_E_EXISTS, "creating a token: this token is already stored");
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "a token with id %s already exists", id);
	if (ret)
		return ret;
	return changes_or_notfound(st, err, "administrator (to own the token) named ", admin_name);
}

static int role_rank(const char *role)
{
	return strcmp(role, "administrator") == 0 ? 2 : strcmp(role, "readonly") == 0 ? 1 : 0;
}

int bw_store_token_find(bw_store *st, const char *token_hash, int64_t now, struct bw_token_info *out, bw_error *err)
{
	memset(out, 0, sizeof *out);
	CHECK_STORE(st);
	int ret;
	if ((ret = check_token_hash(token_hash, err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_TOKEN_FIND, &s, err)) || (ret = bind(st, s, err, "ti", token_hash, now)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		char token_role[32], admin_role[32];
		col_copy(s, 0, out->id, sizeof out->id);
		col_copy(s, 1, out->kind, sizeof out->kind);
		col_copy(s, 2, out->name, sizeof out->name);
		col_copy(s, 3, out->admin_name, sizeof out->admin_name);
		col_copy(s, 4, token_role, sizeof token_role);
		col_copy(s, 5, admin_role, sizeof admin_role);
		out->expires_at = sqlite3_column_int64(s, 6);
		/* The owner may have been demoted since the token was made. */
		snprintf(out->role, sizeof out->role, "%s",
		         role_rank(admin_role) < role_rank(token_role) ? admin_role : token_role);
	} else if (rc == SQLITE_DONE) {
		ret = bw_error_set(err, BW_E_NOTFOUND, "no live token matches");
	} else {
		ret = db_fail(st->db, rc, err, "looking up a token");
	}
	stmt_end(s);
	if (ret)
		memset(out, 0, sizeof *out);
	return ret;
}

int bw_store_token_touch(bw_store *st, const char *id, int64_t now, bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = check_id(id, "token id", err)) || (ret = stmt_get(st, S_TOKEN_TOUCH, &s, err)) ||
	    (ret = bind(st, s, err, "ti", id, now)) || (ret = run(st, s, NULL, err, "marking a token used")))
		return ret;
	return changes_or_notfound(st, err, "token with id ", id);
}

int bw_store_token_list(bw_store *st, const char *kind, json_t **out, bw_error *err)
{
	static const struct bw_col_map map[] = {{"id", BW_COL_TEXT},        {"kind", BW_COL_TEXT},
	                                        {"name", BW_COL_TEXT},      {"owner", BW_COL_TEXT},
	                                        {"role", BW_COL_TEXT},      {"created_at", BW_COL_INT},
	                                        {"expires_at", BW_COL_INT}, {"last_used_at", BW_COL_INT}};
	*out = NULL;
	CHECK_STORE(st);
	int ret;
	if (kind && (ret = check_kind(kind, err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_TOKEN_LIST, &s, err)) || (ret = bind(st, s, err, "t", kind)))
		return ret;
	return bw_store_sql_list(st, s, map, 8, out, err, "listing tokens");
}

int bw_store_token_delete(bw_store *st, const char *id, bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = check_id(id, "token id", err)) || (ret = stmt_get(st, S_TOKEN_DELETE, &s, err)) ||
	    (ret = bind(st, s, err, "t", id)) || (ret = run(st, s, NULL, err, "deleting a token")))
		return ret;
	return changes_or_notfound(st, err, "token with id ", id);
}

int bw_store_token_delete_hash(bw_store *st, const char *token_hash, bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = check_token_hash(token_hash, err)) || (ret = stmt_get(st, S_TOKEN_DELETE_HASH, &s, err)) ||
	    (ret = bind(st, s, err, "t", token_hash)) || (ret = run(st, s, NULL, err, "deleting a token")))
		return ret;
	return changes_or_notfound(st, err, "such token", "");
}

int bw_store_token_purge_expired(bw_store *st, int64_t now, bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_TOKEN_PURGE, &s, err)) || (ret = bind(st, s, err, "i", now)) ||
	    (ret = run(st, s, NULL, err, "purging expired tokens")))
		return ret;
	int n = sqlite3_changes(st->db);
	if (n > 0)
		bw_log_debug("store", "purged %d expired token(s)", n);
	return BW_OK;
}

/* ---- audit log */

/* Copies an audit field: invalid UTF-8 bytes become '?', and long values are cut at a
 * character boundary (an audit entry is never refused for its content). */
static char *audit_field(const char *in, size_t max)
{
	if (!in)
		return NULL;
	size_t n = strlen(in);
	char *out = malloc(n + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n;) {
		size_t l = utf8_seq((const unsigned char *)in + i, n - i);
		if (!l) {
			out[i++] = '?';
		} else {
			memcpy(out + i, in + i, l);
			i += l;
		}
	}
	if (n > max) {
		n = max;
		while (n > 0 && ((unsigned char)out[n] & 0xc0) == 0x80)
			n--;
	}
	out[n] = '\0';
	return out;
}

int bw_store_audit_add(bw_store *st, int64_t at, const char *actor, const char *address, const char *action,
                       const char *target, const char *outcome, const char *detail, bw_error *err)
{
	CHECK_STORE(st);
	if (!action || !*action)
		return bw_error_set(err, BW_E_INVALID, "audit action: missing");
	if (!outcome || !*outcome)
		return bw_error_set(err, BW_E_INVALID, "audit outcome: missing");
	const char *in[6] = {actor, address, action, target, outcome, detail};
	char *f[6];
	bool oom = false;
	for (int i = 0; i < 6; i++) {
		f[i] = audit_field(in[i], i == 5 ? AUDIT_DETAIL_MAX : AUDIT_FIELD_MAX);
		oom |= in[i] && !f[i];
	}
	int ret;
	sqlite3_stmt *s;
	if (oom)
		ret = bw_error_set(err, BW_E_NOMEM, "adding an audit entry: out of memory");
	else if (!(ret = stmt_get(st, S_AUDIT_INSERT, &s, err)) &&
	         !(ret = bind(st, s, err, "itttttt", at, f[0], f[1], f[2], f[3], f[4], f[5])))
		ret = run(st, s, NULL, err, "adding an audit entry");
	for (int i = 0; i < 6; i++)
		free(f[i]);
	return ret;
}

int bw_store_audit_list(bw_store *st, int64_t before_id, size_t limit, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_STORE(st);
	if (limit < 1 || limit > BW_STORE_LIST_MAX)
		return bw_error_set(err, BW_E_INVALID, "audit list limit: must be 1..%d", BW_STORE_LIST_MAX);
	int ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_AUDIT_LIST, &s, err)) ||
	    (ret = bind(st, s, err, "ii", before_id > 0 ? before_id : INT64_MAX, (int64_t)limit)))
		return ret;
	static const struct bw_col_map map[] = {
	    {"id", BW_COL_INT},      {"at", BW_COL_INT},      {"actor", BW_COL_TEXT},   {"address", BW_COL_TEXT},
	    {"action", BW_COL_TEXT}, {"target", BW_COL_TEXT}, {"outcome", BW_COL_TEXT}, {"detail", BW_COL_TEXT}};
	return bw_store_sql_list(st, s, map, 8, out, err, "listing the audit log");
}

/* ---- plugin records */

static int check_record_names(const char *plugin, const char *collection, const char *key, bw_error *err)
{
	int ret;
	if ((ret = check_name(plugin, 1, BW_STORE_NAME_MAX, false, "record plugin", err)) ||
	    (ret = check_name(collection, 1, BW_STORE_NAME_MAX, false, "record collection", err)) ||
	    (key && (ret = check_name(key, 1, BW_STORE_NAME_MAX, false, "record key", err))))
		return ret;
	return BW_OK;
}

int bw_store_record_put(bw_store *st, const char *plugin, const char *collection, const char *key,
                        const char *json_text, int64_t now, bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	if (!key)
		return bw_error_set(err, BW_E_INVALID, "record key: missing");
	if ((ret = check_record_names(plugin, collection, key, err)))
		return ret;
	if (!json_text)
		return bw_error_set(err, BW_E_INVALID, "record value: missing");
	size_t n = strlen(json_text);
	if (n > BW_STORE_RECORD_VALUE_MAX)
		return bw_error_set(err, BW_E_LIMIT, "record value: %zu bytes, more than the limit of %d", n,
		                    BW_STORE_RECORD_VALUE_MAX);
	json_error_t jerr;
	json_t *v = json_loadb(json_text, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!v)
		return bw_error_set(err, BW_E_INVALID, "record value: not valid JSON (line %d, column %d: %s)",
		                    jerr.line, jerr.column, jerr.text);
	json_decref(v);
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_RECORD_PUT, &s, err)) ||
	    (ret = bind(st, s, err, "tttti", plugin, collection, key, json_text, now)))
		return ret;
	return run(st, s, NULL, err, "storing a record");
}

int bw_store_record_get(bw_store *st, const char *plugin, const char *collection, const char *key, char **json_text,
                        bw_error *err)
{
	*json_text = NULL;
	CHECK_STORE(st);
	int ret;
	if (!key)
		return bw_error_set(err, BW_E_INVALID, "record key: missing");
	if ((ret = check_record_names(plugin, collection, key, err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_RECORD_GET, &s, err)) || (ret = bind(st, s, err, "ttt", plugin, collection, key)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(s, 0);
		*json_text = strdup(t ? t : "null");
		if (!*json_text)
			ret = bw_error_set(err, BW_E_NOMEM, "reading a record: out of memory");
	} else if (rc == SQLITE_DONE) {
		ret =
		    bw_error_set(err, BW_E_NOTFOUND, "no record \"%.128s\" in collection \"%.128s\"", key, collection);
	} else {
		ret = db_fail(st->db, rc, err, "reading a record");
	}
	stmt_end(s);
	return ret;
}

int bw_store_record_delete(bw_store *st, const char *plugin, const char *collection, const char *key, bw_error *err)
{
	CHECK_STORE(st);
	int ret;
	if (!key)
		return bw_error_set(err, BW_E_INVALID, "record key: missing");
	if ((ret = check_record_names(plugin, collection, key, err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = stmt_get(st, S_RECORD_DELETE, &s, err)) ||
	    (ret = bind(st, s, err, "ttt", plugin, collection, key)) ||
	    (ret = run(st, s, NULL, err, "deleting a record")))
		return ret;
	if (sqlite3_changes(st->db) > 0)
		return BW_OK;
	return bw_error_set(err, BW_E_NOTFOUND, "no record \"%.128s\" in collection \"%.128s\"", key, collection);
}

int bw_store_record_list(bw_store *st, const char *plugin, const char *collection, const char *after_key, size_t limit,
                         json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_STORE(st);
	int ret;
	if (after_key && !*after_key) /* "" = from the start, like NULL */
		after_key = NULL;
	if ((ret = check_record_names(plugin, collection, after_key, err)))
		return ret;
	if (limit < 1 || limit > BW_STORE_LIST_MAX)
		return bw_error_set(err, BW_E_INVALID, "record list limit: must be 1..%d", BW_STORE_LIST_MAX);
	sqlite3_stmt *s;
	/* Keys are never empty, so "after ''" starts at the first key. */
	if ((ret = stmt_get(st, S_RECORD_LIST, &s, err)) ||
	    (ret = bind(st, s, err, "ttti", plugin, collection, after_key ? after_key : "", (int64_t)limit)))
		return ret;
	json_t *arr = json_array();
	int rc = SQLITE_NOMEM;
	while (arr && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(s, 1);
		json_t *v = t ? json_loadb(t, (size_t)sqlite3_column_bytes(s, 1), JSON_DECODE_ANY, NULL) : NULL;
		if (!v && t) {
			ret = bw_error_set(err, BW_E_DB,
			                   "listing records: the stored value of a record in \"%.128s\" is "
			                   "not valid JSON",
			                   collection);
			break;
		}
		json_t *o = json_object(), *k = col_json(s, 0);
		if (!o || !k || !v) {
			json_decref(o);
			json_decref(k);
			json_decref(v);
			rc = SQLITE_NOMEM;
			break;
		}
		if (!bw_store_sql_jset(o, "key", k) || !bw_store_sql_jset(o, "value", v) ||
		    json_array_append_new(arr, o)) {
			json_decref(o);
			rc = SQLITE_NOMEM;
			break;
		}
	}
	if (!ret && rc == SQLITE_NOMEM)
		ret = bw_error_set(err, BW_E_NOMEM, "listing records: out of memory");
	else if (!ret && rc != SQLITE_DONE)
		ret = db_fail(st->db, rc, err, "listing records");
	stmt_end(s);
	if (ret)
		json_decref(arr);
	else
		*out = arr;
	return ret;
}

/* ---- backup */

static int fsync_path(const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return rc;
}

int bw_store_backup_ex(const char *db_path, const char *dest_path, int step_pages, bw_store_backup_progress_fn progress,
                       void *arg, bw_error *err)
{
	if (!db_path || !*db_path || !dest_path || !*dest_path)
		return bw_error_set(err, BW_E_INVALID, "backup: database and destination paths are required");
	if (step_pages < 0)
		return bw_error_set(err, BW_E_INVALID, "backup: step_pages must not be negative");
	if (step_pages == 0)
		step_pages = BACKUP_STEP_PAGES;
	struct stat ss, ds;
	if (stat(db_path, &ss) != 0)
		return bw_error_set(err, errno == ENOENT ? BW_E_NOTFOUND : BW_E_IO, "backup: database %s: %s", db_path,
		                    strerror(errno));
	if (stat(dest_path, &ds) == 0 && ds.st_dev == ss.st_dev && ds.st_ino == ss.st_ino)
		return bw_error_set(err, BW_E_INVALID, "backup: destination %s is the database itself", dest_path);

	size_t tl = strlen(dest_path) + sizeof ".tmp-XXXXXX";
	char *tmp = malloc(tl);
	if (!tmp)
		return bw_error_set(err, BW_E_NOMEM, "backup: out of memory");
	snprintf(tmp, tl, "%s.tmp-XXXXXX", dest_path);
	int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
	if (fd < 0) {
		int ret = bw_error_set(err, BW_E_IO, "backup: creating a temporary file next to %s: %s", dest_path,
		                       strerror(errno));
		free(tmp);
		return ret;
	}
	fchmod(fd, 0600);
	close(fd);

	sqlite3 *src = NULL, *dst = NULL;
	sqlite3_backup *b = NULL;
	int ret = BW_OK;
	int rc = sqlite3_open_v2(db_path, &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		ret = db_fail(src, rc, err, "backup: opening %s read-only", db_path);
		goto out;
	}
	sqlite3_busy_timeout(src, BUSY_TIMEOUT_MS);
	rc = sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		ret = db_fail(dst, rc, err, "backup: opening %s", tmp);
		goto out;
	}
	sqlite3_busy_timeout(dst, BUSY_TIMEOUT_MS);

	/* Pin one snapshot of the source: the backup steps then read inside this read transaction,
	 * so writes from other connections (WAL) neither block the copy nor restart it. */
	int64_t ignored;
	rc = exec(src, "BEGIN");
	if (rc == SQLITE_OK)
		rc = query_int(src, "SELECT count(*) FROM sqlite_schema", &ignored);
	if (rc != SQLITE_OK) {
		ret = db_fail(src, rc, err, "backup: reading %s", db_path);
		goto out;
	}
	b = sqlite3_backup_init(dst, "main", src, "main");
	if (!b) {
		ret = db_fail(dst, sqlite3_errcode(dst), err, "backup: starting the copy of %s", db_path);
		goto out;
	}
	int busy = 0;
	for (;;) {
		rc = sqlite3_backup_step(b, step_pages);
		if (rc == SQLITE_DONE)
			break;
		if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
			if (++busy > 200) /* about 10 s on top of the busy timeout */
				break;
			sqlite3_sleep(50);
			continue;
		}
		if (rc != SQLITE_OK)
			break;
		busy = 0;
		if (progress && !progress(sqlite3_backup_remaining(b), sqlite3_backup_pagecount(b), arg)) {
			ret = bw_error_set(err, BW_E_CANCELLED, "backup of %s cancelled", db_path);
			break;
		}
	}
	if (!ret && rc != SQLITE_DONE)
		ret = db_fail(NULL, rc, err, "backup: copying %s", db_path);
	rc = sqlite3_backup_finish(b);
	b = NULL;
	if (!ret && rc != SQLITE_OK)
		ret = db_fail(dst, rc, err, "backup: finishing the copy of %s", db_path);
	exec(src, "COMMIT");
	if (ret)
		goto out;

	/* Make sure what we are about to install opens and is sound. */
	sqlite3_stmt *qc = NULL;
	rc = sqlite3_prepare_v2(dst, "PRAGMA quick_check", -1, &qc, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(qc)) == SQLITE_ROW) {
		const char *r = (const char *)sqlite3_column_text(qc, 0);
		if (!r || strcmp(r, "ok") != 0)
			ret = bw_error_set(err, BW_E_DB, "backup: the copy of %s failed its check: %.200s", db_path,
			                   r ? r : "?");
		rc = SQLITE_OK;
	}
	if (!ret && rc != SQLITE_OK)
		ret = db_fail(dst, rc, err, "backup: checking the copy of %s", db_path);
	sqlite3_finalize(qc);
	if (ret)
		goto out;
	rc = sqlite3_close(dst);
	if (rc != SQLITE_OK) {
		ret = db_fail(dst, rc, err, "backup: closing %s", tmp);
		goto out;
	}
	dst = NULL;
	if (fsync_path(tmp, O_RDONLY) != 0) {
		ret = bw_error_set(err, BW_E_IO, "backup: syncing %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (rename(tmp, dest_path) != 0) {
		ret = bw_error_set(err, BW_E_IO, "backup: renaming %s to %s: %s", tmp, dest_path, strerror(errno));
		goto out;
	}
	/* Persist the rename too. */
	char *slash = strrchr(tmp, '/');
	if (slash == tmp)
		fsync_path("/", O_RDONLY | O_DIRECTORY);
	else if (slash) {
		*slash = '\0';
		fsync_path(tmp, O_RDONLY | O_DIRECTORY);
	} else {
		fsync_path(".", O_RDONLY | O_DIRECTORY);
	}
	tmp[0] = '\0';

out:
	if (b)
		sqlite3_backup_finish(b);
	if (dst)
		sqlite3_close(dst);
	if (src)
		sqlite3_close(src);
	if (tmp[0]) {
		unlink(tmp);
		/* the destination connection's rollback journal, if a failure left one */
		size_t jl = strlen(tmp) + sizeof "-journal";
		char *j = malloc(jl);
		if (j) {
			snprintf(j, jl, "%s-journal", tmp);
			unlink(j);
			free(j);
		}
	}
	free(tmp);
	if (!ret)
		bw_log_info("store", "backed up %s to %s", db_path, dest_path);
	return ret;
}

int bw_store_set_autocheckpoint(bw_store *st, bool automatic, bw_error *err)
{
	int rc = exec(st->db, automatic ? "PRAGMA wal_autocheckpoint = 1000" : "PRAGMA wal_autocheckpoint = 0");
	return rc == SQLITE_OK ? BW_OK : db_fail(st->db, rc, err, "setting wal_autocheckpoint");
}

static pthread_mutex_t g_ckpt_mu = PTHREAD_MUTEX_INITIALIZER;
static sqlite3 *g_ckpt_db;
static char *g_ckpt_path;

int bw_store_checkpoint(const char *db_path, int *wal_frames, int *checkpointed, bw_error *err)
{
	int rc = BW_OK;
	pthread_mutex_lock(&g_ckpt_mu);
	if (g_ckpt_db && (!g_ckpt_path || strcmp(g_ckpt_path, db_path) != 0)) {
		sqlite3_close_v2(g_ckpt_db);
		g_ckpt_db = NULL;
	}
	if (!g_ckpt_db) {
		free(g_ckpt_path);
		g_ckpt_path = strdup(db_path);
		int orc = sqlite3_open_v2(db_path, &g_ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL);
		if (orc != SQLITE_OK || !g_ckpt_path) {
			rc = bw_error_set(err, BW_E_DB, "checkpoint: cannot open %s: %s", db_path,
			                  g_ckpt_db ? sqlite3_errmsg(g_ckpt_db) : "out of memory");
			sqlite3_close_v2(g_ckpt_db);
			g_ckpt_db = NULL;
			goto out;
		}
		sqlite3_busy_timeout(g_ckpt_db, 1000);
		/* A connection sees the WAL only once it has read the database. */
		if (sqlite3_exec(g_ckpt_db, "SELECT count(*) FROM sqlite_master", NULL, NULL, NULL) != SQLITE_OK) {
			rc = bw_error_set(err, BW_E_DB, "checkpoint: cannot read %s: %s", db_path,
			                  sqlite3_errmsg(g_ckpt_db));
			sqlite3_close_v2(g_ckpt_db);
			g_ckpt_db = NULL;
			goto out;
		}
	}
	int nlog = 0, nckpt = 0;
	int crc = sqlite3_wal_checkpoint_v2(g_ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
	/* BUSY: another checkpoint is running; PASSIVE copies what it can and tries next time. */
	if (crc != SQLITE_OK && crc != SQLITE_BUSY)
		rc = bw_error_set(err, BW_E_DB, "checkpoint of %s: %s", db_path, sqlite3_errmsg(g_ckpt_db));
	else if (nlog < 0)
		rc = bw_error_set(err, BW_E_DB, "checkpoint of %s: the database is not in WAL mode", db_path);
	if (wal_frames)
		*wal_frames = nlog;
	if (checkpointed)
		*checkpointed = nckpt;
out:
	pthread_mutex_unlock(&g_ckpt_mu);
	return rc;
}

void bw_store_checkpoint_close(void)
{
	pthread_mutex_lock(&g_ckpt_mu);
	sqlite3_close_v2(g_ckpt_db);
	g_ckpt_db = NULL;
	free(g_ckpt_path);
	g_ckpt_path = NULL;
	pthread_mutex_unlock(&g_ckpt_mu);
}

int bw_store_backup(const char *db_path, const char *dest_path, bw_error *err)
{
	return bw_store_backup_ex(db_path, dest_path, 0, NULL, NULL, err);
}

/* ---- for the other store files (store_sqlite_internal.h) */

sqlite3 *bw_store_sql_db(bw_store *st)
{
	return st ? st->db : NULL;
}

const char *bw_store_sql_path(bw_store *st)
{
	return st && st->path ? st->path : "";
}

int bw_store_sql_stmt(bw_store *st, unsigned slot, const char *sql, sqlite3_stmt **out, bw_error *err)
{
	*out = NULL;
	if (slot >= BW_STORE_EXT_STMTS)
		return bw_error_set(err, BW_E_INTERNAL, "statement slot %u: only %d slots", slot, BW_STORE_EXT_STMTS);
	if (!st->ext_stmts[slot]) {
		int rc = sqlite3_prepare_v3(st->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st->ext_stmts[slot], NULL);
		if (rc != SQLITE_OK) {
			st->ext_stmts[slot] = NULL;
			return db_fail(st->db, rc, err, "preparing statement %u on %s", slot, st->path);
		}
	}
	*out = st->ext_stmts[slot];
	return BW_OK;
}

void bw_store_sql_end(sqlite3_stmt *s)
{
	stmt_end(s);
}

int bw_store_sql_bind(bw_store *st, sqlite3_stmt *s, bw_error *err, const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	int ret = bind_v(st, s, err, types, ap);
	va_end(ap);
	return ret;
}

int bw_store_sql_run(bw_store *st, sqlite3_stmt *s, int *sqlite_rc, bw_error *err, const char *what)
{
	return run(st, s, sqlite_rc, err, what);
}

int bw_store_sql_fail(bw_store *st, int rc, bw_error *err, const char *fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return db_fail(st ? st->db : NULL, rc, err, "%s", what);
}

void bw_store_sql_col_copy(sqlite3_stmt *s, int i, char *dst, size_t size)
{
	col_copy(s, i, dst, size);
}

json_t *bw_store_sql_col_json(sqlite3_stmt *s, int i)
{
	return col_json(s, i);
}

int bw_store_sql_check_name(const char *s, size_t min, size_t max, bool human, const char *field, bw_error *err)
{
	return check_name(s, min, max, human, field, err);
}

int bw_store_sql_check_id(const char *id, const char *field, bw_error *err)
{
	return check_id(id, field, err);
}

bool bw_store_sql_utf8_valid(const char *s, size_t n)
{
	return utf8_valid(s, n);
}

char *bw_store_sql_clean_text(const char *in, size_t max)
{
	return audit_field(in, max);
}
