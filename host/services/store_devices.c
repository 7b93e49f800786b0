/* host/services/store_devices.c: the SQLite implementation of store_devices.h (schema version 3):
 * the device registry and inventory, enrollment keys, invitations and the mail outbox, the
 * allowlist, settings, enrollment refusals, commands, device event logs and revoked certificates.
 *
 * Every statement is prepared once and cached in the store handle (store_sqlite_internal.h), every
 * lookup on a hot path (device get, key use, command take, check-in touches) is an index search,
 * and the functions that write several rows do so in one transaction (a savepoint when the caller
 * already has one open). Only SHA-256 digests of keys and invitation codes are stored; they never
 * appear in a message. */
#include "store_devices.h"

#include "log.h"
#include "store_sqlite_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_DEVICES       3
#define DEV_TEXT_MAX         128
#define DEV_VERSION_MAX      64
#define PHONE_MAX            32
#define PUSH_TOKEN_MAX       4096
#define SMALL_JSON_MAX       (64 * 1024)
#define INVENTORY_MAX        (1024 * 1024)
#define EMAIL_MAX            254
#define SUBJECT_MAX          998
#define MAIL_BODY_MAX        (1024 * 1024)
#define SETTING_VALUE_MAX    (64 * 1024)
#define ERROR_TEXT_MAX       1024
#define EVENTS_PER_BATCH_MAX 500
#define TOUCH_MAX            100000
#define REFUSALS_KEEP        10000 /* newest refusals kept: a flood of bad enrollments stays bounded */
#define REFUSAL_FIELD_MAX    256
#define REFUSAL_DETAIL_MAX   1024
#define PURGE_CHUNK          10000 /* rows per purge transaction, so other connections get turns */
#define OSKEY_PART_DIGITS    10
#define OSKEY_PARTS_MAX      16
#define OSKEY_MAX            (OSKEY_PARTS_MAX * (OSKEY_PART_DIGITS + 1) + DEV_VERSION_MAX + 2)
#define TIME_MAX             INT64_C(253402300799) /* 9999-12-31: bounds device-supplied times */
#define OPEN_STATES          "('queued', 'sent', 'acknowledged')"

/* ---- statements */

enum dstmt {
	D_BEGIN,
	D_COMMIT,
	D_ROLLBACK,
	D_SAVEPOINT,
	D_RELEASE,
	D_ROLLBACK_TO,
	D_DEVICE_INSERT,
	D_DEVICE_GET,
	D_DEVICE_JSON,
	D_DEVICE_UPDATE,
	D_DEVICE_STATUS,
	D_DEVICE_CERT,
	D_DEVICE_TOUCH,
	D_INVENTORY_PUT,
	D_INVENTORY_GET,
	D_DEVICE_COUNT,
	D_DEVICE_SCAN,
	D_KEY_INSERT,
	D_KEY_USE,
	D_KEY_STATE,
	D_KEY_LIST,
	D_KEY_REVOKE,
	D_INV_INSERT,
	D_INV_USE,
	D_INV_STATE,
	D_INV_LIST,
	D_OUTBOX_INSERT,
	D_OUTBOX_LIST,
	D_ALLOW_INSERT,
	D_ALLOW_DELETE,
	D_ALLOW_CONTAINS,
	D_ALLOW_LIST,
	D_SETTING_GET,
	D_SETTING_SET,
	D_REFUSAL_INSERT,
	D_REFUSAL_TRIM,
	D_REFUSAL_LIST,
	D_CMD_INSERT,
	D_CMD_TAKE,
	D_CMD_MARK_SENT,
	D_CMD_STATE,
	D_CMD_RESULT,
	D_CMD_CANCEL,
	D_CMD_GET,
	D_CMD_LIST,
	D_CMD_OPEN_COUNT,
	D_CMD_EXPIRE,
	D_CMD_PENDING,
	D_CMD_STATS,
	D_BATCH_INSERT,
	D_EVENT_INSERT,
	D_EVENT_AT,
	D_EVENT_PURGE,
	D_BATCH_PURGE,
	D_CERT_REVOKE,
	D_CERT_SCAN,
	D__FIXED,
	/* device listings: one statement per combination of filters (see device_list_sql) */
	D_LIST_BASE = D__FIXED,
	D_EVQ_BASE = D_LIST_BASE + 8 * 6,
	D__COUNT = D_EVQ_BASE + 4
};
_Static_assert(D__COUNT <= BW_STORE_EXT_STMTS, "store_sqlite_internal.h: raise BW_STORE_EXT_STMTS");

/* Registry fields taken from the enrollment's and the check-in's "device" object, in the order
 * of the parameters of D_DEVICE_INSERT and D_DEVICE_UPDATE. */
enum dev_field {
	F_OS,
	F_MODEL,
	F_MANUFACTURER,
	F_SERIAL,
	F_IMEI,
	F_MEID,
	F_MAC,
	F_PHONE,
	F_AGENT,
	F_OWNER,
	F_GROUP,
	F_OWNER_NAME,
	F_OWNER_EMAIL,
	NF
};
enum dev_kind { K_TEXT, K_IMEI, K_MEID, K_MAC };
static const struct {
	const char *key;
	size_t max;
	enum dev_kind kind;
} dev_fields[NF] = {
    [F_OS] = {"os_version", DEV_VERSION_MAX, K_TEXT},
    [F_MODEL] = {"model", DEV_TEXT_MAX, K_TEXT},
    [F_MANUFACTURER] = {"manufacturer", DEV_TEXT_MAX, K_TEXT},
    [F_SERIAL] = {"serial", DEV_TEXT_MAX, K_TEXT},
    [F_IMEI] = {"imei", 15, K_IMEI},
    [F_MEID] = {"meid", 14, K_MEID},
    [F_MAC] = {"wifi_mac", 17, K_MAC},
    [F_PHONE] = {"phone_number", PHONE_MAX, K_TEXT},
    [F_AGENT] = {"agent_version", DEV_VERSION_MAX, K_TEXT},
    [F_OWNER] = {"owner", DEV_TEXT_MAX, K_TEXT},
    [F_GROUP] = {"group", DEV_TEXT_MAX, K_TEXT},
    [F_OWNER_NAME] = {"owner_name", DEV_TEXT_MAX, K_TEXT},
    [F_OWNER_EMAIL] = {"owner_email", 254, K_TEXT},
};

#define DEVICE_COLS                                                                                                    \
	"id, platform, status, group_name, owner, cert_serial, cert_not_after, enrolled_at, last_seen, "               \
	"status_changed_at, enroll_method, os_version, model, manufacturer, serial, imei, meid, wifi_mac, "            \
	"phone_number, agent_version, push_provider, push_token, owner_name, owner_email"
#define STRUCT_COLS "id, platform, status, cert_serial, cert_not_after, enrolled_at, last_seen, group_name, owner"
#define SUMMARY_COLS                                                                                                   \
	"id, platform, status, group_name, owner, os_version, model, manufacturer, agent_version, enrolled_at, "       \
	"last_seen, cert_not_after"
#define COMMAND_COLS                                                                                                   \
	"id, device_id, type, params, priority, state, created_by, created_at, expires_at, sent_at, acked_at, "        \
	"completed_at, attempts, result, error"
#define EVENT_COLS "id, device_id, batch_id, type, at, data, received_at"
/* "col = ?flag ? ?value : col": one cached UPDATE serves every subset of fields */
#define UPD(col, flag, val) " " col " = CASE WHEN ?" flag " THEN ?" val " ELSE " col " END,"
#define DEVICE_UPDATE_SET                                                                                              \
	UPD("os_version", "2", "3")                                                                                    \
	UPD("os_version_key", "2", "4")                                                                                \
	UPD("model", "5", "6")                                                                                         \
	UPD("manufacturer", "7", "8")                                                                                  \
	UPD("serial", "9", "10")                                                                                       \
	UPD("imei", "11", "12")                                                                                        \
	UPD("meid", "13", "14")                                                                                        \
	UPD("wifi_mac", "15", "16")                                                                                    \
	UPD("phone_number", "17", "18")                                                                                \
	UPD("agent_version", "19", "20")                                                                               \
	UPD("owner", "21", "22")                                                                                       \
	UPD("group_name", "23", "24")                                                                                  \
	UPD("owner_name", "25", "26")                                                                                  \
	UPD("owner_email", "27", "28")                                                                                 \
	UPD("push_provider", "29", "30")                                                                               \
	" push_token = CASE WHEN ?29 THEN ?31 ELSE push_token END"

/* INDEXED BY pins the statements of the hot paths and of the periodic jobs to their index:
 * statistics gathered while a table was small (PRAGMA optimize at close) would otherwise let the
 * planner choose a scan that becomes a full-table scan as the table grows. Primary-key and unique
 * lookups need no pin. */
static const char *const dsql[D__FIXED] = {
    [D_BEGIN] = "BEGIN IMMEDIATE",
    [D_COMMIT] = "COMMIT",
    [D_ROLLBACK] = "ROLLBACK",
    [D_SAVEPOINT] = "SAVEPOINT bw_store_devices",
    [D_RELEASE] = "RELEASE bw_store_devices",
    [D_ROLLBACK_TO] = "ROLLBACK TO bw_store_devices",
    [D_DEVICE_INSERT] = "INSERT INTO devices (id, platform, status, enroll_method, cert_serial, cert_not_after,"
                        " enrolled_at, last_seen, status_changed_at, os_version_key, push_provider, push_token,"
                        " os_version, model, manufacturer, serial, imei, meid, wifi_mac, phone_number,"
                        " agent_version, owner, group_name, owner_name, owner_email)"
                        " VALUES (?1, ?2, 'active', ?3, ?4, ?5, ?6, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,"
                        " ?15, ?16, ?17, ?18, coalesce(?19, ''), coalesce(?20, ''), coalesce(?21, ''),"
                        " coalesce(?22, ''))",
    [D_DEVICE_GET] = "SELECT " STRUCT_COLS " FROM devices WHERE id = ?1",
    [D_DEVICE_JSON] = "SELECT " DEVICE_COLS " FROM devices WHERE id = ?1",
    [D_DEVICE_UPDATE] = "UPDATE devices SET" DEVICE_UPDATE_SET " WHERE id = ?1",
    [D_DEVICE_STATUS] = "UPDATE devices SET status_changed_at = CASE WHEN status <> ?2 THEN ?3"
                        " ELSE status_changed_at END, status = ?2 WHERE id = ?1",
    [D_DEVICE_CERT] = "UPDATE devices SET cert_serial = ?2, cert_not_after = ?3 WHERE id = ?1",
    /* never moves backwards, and skips the write when nothing changes */
    [D_DEVICE_TOUCH] = "UPDATE devices SET last_seen = ?2 WHERE id = ?1 AND last_seen < ?2",
    [D_INVENTORY_PUT] = "INSERT INTO device_inventory (device_id, inventory, inventory_at) VALUES (?1, ?2, ?3)"
                        " ON CONFLICT (device_id) DO UPDATE SET inventory = excluded.inventory,"
                        " inventory_at = excluded.inventory_at",
    [D_INVENTORY_GET] = "SELECT inventory, inventory_at FROM device_inventory WHERE device_id = ?1",
    [D_DEVICE_COUNT] = "SELECT count(*) FROM devices",
    [D_DEVICE_SCAN] = "SELECT " STRUCT_COLS " FROM devices",
    [D_KEY_INSERT] = "INSERT INTO enrollment_keys (id, key_hash, prefix, group_name, max_uses, uses, expires_at,"
                     " revoked, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, 0, ?7, ?8)",
    /* one statement checks and counts: two enrollments can never both take the last use */
    [D_KEY_USE] = "UPDATE enrollment_keys SET uses = uses + 1 WHERE key_hash = ?1 AND revoked = 0"
                  " AND (expires_at = 0 OR expires_at > ?2) AND (max_uses = 0 OR uses < max_uses)"
                  " RETURNING group_name",
    [D_KEY_STATE] = "SELECT revoked, expires_at, uses, max_uses FROM enrollment_keys WHERE key_hash = ?1",
    [D_KEY_LIST] = "SELECT id, prefix, group_name, max_uses, uses, expires_at, revoked, created_by, created_at"
                   " FROM enrollment_keys ORDER BY created_at, id",
    [D_KEY_REVOKE] = "UPDATE enrollment_keys SET revoked = 1 WHERE id = ?1",
    [D_INV_INSERT] = "INSERT INTO invitations (id, email, code_hash, expires_at, used_at, created_by, created_at)"
                     " VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
    [D_INV_USE] = "UPDATE invitations SET used_at = ?3 WHERE id = (SELECT id FROM invitations"
                  " INDEXED BY invitations_email WHERE email = ?1"
                  " AND code_hash = ?2 AND used_at = 0 AND (expires_at = 0 OR expires_at > ?3)"
                  " ORDER BY created_at, id LIMIT 1)",
    [D_INV_STATE] = "SELECT max(used_at <> 0) FROM invitations INDEXED BY invitations_email"
                    " WHERE email = ?1 AND code_hash = ?2",
    [D_INV_LIST] = "SELECT id, email, expires_at, used_at, created_by, created_at FROM invitations"
                   " ORDER BY created_at, id",
    [D_OUTBOX_INSERT] = "INSERT INTO outbox (id, to_addr, subject, body, created_at, sent_at)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, 0)",
    [D_OUTBOX_LIST] = "SELECT id, to_addr, subject, body, created_at, sent_at FROM outbox ORDER BY created_at, id",
    [D_ALLOW_INSERT] = "INSERT INTO allowlist (kind, value, note, created_at) VALUES (?1, ?2, ?3, ?4)",
    [D_ALLOW_DELETE] = "DELETE FROM allowlist WHERE kind = ?1 AND value = ?2",
    [D_ALLOW_CONTAINS] = "SELECT 1 FROM allowlist WHERE kind = ?1 AND value = ?2",
    [D_ALLOW_LIST] = "SELECT kind, value, note, created_at FROM allowlist ORDER BY kind, value",
    [D_SETTING_GET] = "SELECT value FROM settings WHERE name = ?1",
    [D_SETTING_SET] = "INSERT INTO settings (name, value) VALUES (?1, ?2)"
                      " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    [D_REFUSAL_INSERT] = "INSERT INTO enrollment_refusals (at, address, reason, detail) VALUES (?1, ?2, ?3, ?4)",
    /* ids are consecutive (AUTOINCREMENT, no other deletes): each insert drops the one row that
     * left the window; an equality stays a key lookup whatever the statistics say */
    [D_REFUSAL_TRIM] = "DELETE FROM enrollment_refusals WHERE id = ?1",
    [D_REFUSAL_LIST] = "SELECT id, at, address, reason, detail FROM enrollment_refusals ORDER BY id DESC LIMIT ?1",
    [D_CMD_INSERT] = "INSERT INTO commands (id, device_id, type, params, priority, state, created_by, created_at,"
                     " expires_at) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8)",
    /* "state IN" keeps both states on the index (device_id, state, ...) */
    [D_CMD_TAKE] = "SELECT id, type, params, expires_at FROM commands INDEXED BY commands_device WHERE device_id = ?1"
                   " AND state IN ('queued', 'sent') AND (state = 'queued' OR sent_at < ?3)"
                   " AND (expires_at = 0 OR expires_at > ?2) ORDER BY priority DESC, created_at, id LIMIT ?4",
    [D_CMD_MARK_SENT] = "UPDATE commands SET state = 'sent', sent_at = ?2, attempts = attempts + 1 WHERE id = ?1",
    [D_CMD_STATE] = "SELECT device_id, state FROM commands WHERE id = ?1",
    [D_CMD_RESULT] = "UPDATE commands SET state = ?3, acked_at = CASE WHEN acked_at = 0 THEN ?4 ELSE acked_at END,"
                     " completed_at = CASE WHEN ?3 IN ('completed', 'failed') THEN ?4 ELSE completed_at END,"
                     " result = ?5, error = ?6 WHERE id = ?1 AND state = ?2",
    [D_CMD_CANCEL] = "UPDATE commands SET state = 'cancelled', completed_at = ?2 WHERE id = ?1"
                     " AND state IN " OPEN_STATES,
    [D_CMD_GET] = "SELECT " COMMAND_COLS " FROM commands WHERE id = ?1",
    [D_CMD_LIST] = "SELECT " COMMAND_COLS " FROM commands INDEXED BY commands_device WHERE device_id = ?1"
                   " ORDER BY created_at DESC, id DESC LIMIT ?2",
    [D_CMD_OPEN_COUNT] = "SELECT count(*) FROM commands INDEXED BY commands_device WHERE device_id = ?1"
                         " AND state IN " OPEN_STATES " AND (?2 IS NULL OR type = ?2)",
    /* the terms match the partial index commands_open_expiry */
    [D_CMD_EXPIRE] = "UPDATE commands INDEXED BY commands_open_expiry SET state = 'expired', completed_at = ?1"
                     " WHERE state IN " OPEN_STATES " AND expires_at <> 0 AND expires_at <= ?1",
    [D_CMD_PENDING] = "SELECT DISTINCT device_id FROM commands INDEXED BY commands_open WHERE state IN " OPEN_STATES,
    [D_CMD_STATS] = "SELECT count(*), min(created_at) FROM commands INDEXED BY commands_open"
                    " WHERE state IN " OPEN_STATES,
    [D_BATCH_INSERT] = "INSERT INTO device_event_batches (device_id, batch_id, received_at) VALUES (?1, ?2, ?3)"
                       " ON CONFLICT DO NOTHING",
    [D_EVENT_INSERT] = "INSERT INTO device_events (device_id, batch_id, type, at, data, received_at)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [D_EVENT_AT] = "SELECT at FROM device_events WHERE id = ?1",
    /* a chunk: the oldest rows up to the time of the ?2-th oldest (a few more on equal times) */
    [D_EVENT_PURGE] = "DELETE FROM device_events INDEXED BY device_events_at WHERE at < ?1 AND at <= coalesce("
                      "(SELECT at FROM device_events INDEXED BY device_events_at WHERE at < ?1 ORDER BY at"
                      " LIMIT 1 OFFSET ?2), ?1)",
    [D_BATCH_PURGE] = "DELETE FROM device_event_batches INDEXED BY device_event_batches_received"
                      " WHERE received_at < ?1 AND received_at <= coalesce((SELECT received_at"
                      " FROM device_event_batches INDEXED BY device_event_batches_received WHERE received_at < ?1"
                      " ORDER BY received_at LIMIT 1 OFFSET ?2), ?1)",
    [D_CERT_REVOKE] = "INSERT INTO revoked_certs (serial, device_id, reason, revoked_at) VALUES (?1, ?2, ?3, ?4)"
                      " ON CONFLICT (serial) DO NOTHING",
    [D_CERT_SCAN] = "SELECT serial FROM revoked_certs",
};

static int dstmt(bw_store *st, enum dstmt id, sqlite3_stmt **out, bw_error *err)
{
	return bw_store_sql_stmt(st, (unsigned)id, dsql[id], out, err);
}

/* The device functions need the tables of schema 3 (a store opened at an older version for
 * tests or fixtures has none). */
#define CHECK_DEV(st)                                                                                                  \
	do {                                                                                                           \
		if (!bw_store_sql_db(st))                                                                              \
			return bw_error_set(err, BW_E_INVALID, "store: no open database");                             \
		if (bw_store_schema_version(st) < SCHEMA_DEVICES)                                                      \
			return bw_error_set(err, BW_E_STATE, "store: schema %d has no device tables (needs %d)",       \
			                    bw_store_schema_version(st), SCHEMA_DEVICES);                              \
	} while (0)

/* ---- transactions: BEGIN IMMEDIATE, or a savepoint inside the caller's transaction */

static int exec_stmt(bw_store *st, enum dstmt id, bw_error *err, const char *what)
{
	sqlite3_stmt *s;
	int ret = dstmt(st, id, &s, err);
	return ret ? ret : bw_store_sql_run(st, s, NULL, err, what);
}

static int tx_begin(bw_store *st, bool *own, bw_error *err)
{
	*own = sqlite3_get_autocommit(bw_store_sql_db(st)) != 0;
	return exec_stmt(st, *own ? D_BEGIN : D_SAVEPOINT, err, "starting a transaction");
}

static void tx_rollback(bw_store *st, bool own)
{
	if (own) {
		if (!sqlite3_get_autocommit(bw_store_sql_db(st)))
			exec_stmt(st, D_ROLLBACK, NULL, "rolling back");
	} else {
		exec_stmt(st, D_ROLLBACK_TO, NULL, "rolling back");
		exec_stmt(st, D_RELEASE, NULL, "rolling back");
	}
}

/* Commits, or on failure (ret != 0, or the commit fails) rolls back; returns ret or the commit's
 * error. */
static int tx_end(bw_store *st, bool own, int ret, bw_error *err)
{
	if (!ret)
		ret = exec_stmt(st, own ? D_COMMIT : D_RELEASE, err, "committing");
	if (ret)
		tx_rollback(st, own);
	return ret;
}

/* ---- helpers */

static bool is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* Short machine names (enroll methods, command and event types, push providers). */
static int check_word(const char *s, size_t max, bool dots, const char *field, bw_error *err)
{
	size_t n = s ? strlen(s) : 0;
	if (n == 0 || n > max)
		return bw_error_set(err, BW_E_INVALID, "%s: must be 1..%zu characters", field, max);
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || (dots && c == '.')))
			return bw_error_set(err, BW_E_INVALID, "%s: only a-z, 0-9 and _%s are allowed", field,
			                    dots ? " and ." : "");
	}
	return BW_OK;
}

static int check_digest(const char *h, const char *field, bw_error *err)
{
	if (h && strlen(h) == 64 && is_lower_hex(h, 64))
		return BW_OK;
	return bw_error_set(err, BW_E_INVALID, "%s: must be 64 lower-case hex characters", field);
}

static int check_serial(const char *s, bw_error *err)
{
	size_t n = s ? strlen(s) : 0;
	bool ok = n >= 1 && n <= 40;
	for (size_t i = 0; ok && i < n; i++)
		ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F');
	return ok ? BW_OK : bw_error_set(err, BW_E_INVALID, "certificate serial: must be 1..40 hex characters");
}

static int check_time(int64_t t, const char *field, bw_error *err)
{
	return t >= 0 ? BW_OK : bw_error_set(err, BW_E_INVALID, "%s: must not be negative", field);
}

/* JSON text of at most max bytes; `object` requires an object. */
static int check_json(const char *text, size_t max, bool object, const char *field, bw_error *err)
{
	size_t n = strlen(text);
	if (n > max)
		return bw_error_set(err, BW_E_LIMIT, "%s: %zu bytes, more than the limit of %zu", field, n, max);
	json_error_t jerr;
	json_t *v = json_loadb(text, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!v)
		return bw_error_set(err, BW_E_INVALID, "%s: not valid JSON (line %d, column %d: %s)", field, jerr.line,
		                    jerr.column, jerr.text);
	bool ok = !object || json_is_object(v);
	json_decref(v);
	return ok ? BW_OK : bw_error_set(err, BW_E_INVALID, "%s: must be a JSON object", field);
}

/* Normalised identifier values (as in host/agent/devices.h): IMEI 15 digits, MEID 14 lower-case
 * hex digits, MAC "aa:bb:cc:dd:ee:ff". */
static bool identifier_valid(enum dev_kind kind, const char *v)
{
	size_t n = strlen(v);
	switch (kind) {
	case K_IMEI:
		if (n != 15)
			return false;
		for (size_t i = 0; i < n; i++)
			if (v[i] < '0' || v[i] > '9')
				return false;
		return true;
	case K_MEID:
		return n == 14 && is_lower_hex(v, n);
	case K_MAC:
		if (n != 17)
			return false;
		for (size_t i = 0; i < n; i++)
			if (i % 3 == 2 ? v[i] != ':' : !is_lower_hex(v + i, 1))
				return false;
		return true;
	default:
		return true;
	}
}

static const char *identifier_shape(enum dev_kind kind)
{
	return kind == K_IMEI ? "15 digits" : kind == K_MEID ? "14 lower-case hex digits" : "aa:bb:cc:dd:ee:ff";
}

/* A sortable form of a dotted version: each numeric part zero-padded to 10 digits, trailing
 * zero parts dropped (so "12" = "12.0" = "12.0.0"), and any remaining text after a '-' (so
 * "12.1-beta" sorts after "12.1" and before "12.1.1" and "12.2"). As text these keys compare
 * like the versions; the os filter of bw_store_device_list compares them through an index.
 * False when the version does not start with a digit. */
static bool os_version_key(const char *v, char out[OSKEY_MAX])
{
	const char *p = v;
	size_t o = 0, keep = 0;
	int parts = 0;
	while (*p >= '0' && *p <= '9' && parts < OSKEY_PARTS_MAX) {
		while (*p == '0')
			p++;
		const char *e = p;
		while (*e >= '0' && *e <= '9')
			e++;
		size_t nd = (size_t)(e - p);
		if (parts)
			out[o++] = '.';
		if (nd > OSKEY_PART_DIGITS) {
			memset(out + o, '9', OSKEY_PART_DIGITS); /* beyond any real version: saturate */
		} else {
			memset(out + o, '0', OSKEY_PART_DIGITS - nd);
			memcpy(out + o + OSKEY_PART_DIGITS - nd, p, nd);
		}
		o += OSKEY_PART_DIGITS;
		parts++;
		if (nd || keep == 0)
			keep = o;
		p = e;
		if (p[0] == '.' && p[1] >= '0' && p[1] <= '9')
			p++;
		else
			break;
	}
	if (!parts)
		return false;
	o = keep;
	if (*p) {
		out[o++] = '-';
		size_t rest = strlen(p);
		if (rest > DEV_VERSION_MAX)
			rest = DEV_VERSION_MAX;
		memcpy(out + o, p, rest);
		o += rest;
	}
	out[o] = '\0';
	return true;
}

/* Binds an array of text values to consecutive parameters from `first`. */
static int bind_texts(sqlite3_stmt *s, int first, const char *const *v, size_t n)
{
	int rc = SQLITE_OK;
	for (size_t i = 0; i < n && rc == SQLITE_OK; i++)
		rc = v[i] ? sqlite3_bind_text(s, first + (int)i, v[i], -1, SQLITE_STATIC)
		          : sqlite3_bind_null(s, first + (int)i);
	return rc;
}

/* Runs a statement with no result rows; BW_E_NOTFOUND "no <what> with id <id>" when it changed
 * nothing. */
static int run_changed(bw_store *st, sqlite3_stmt *s, bw_error *err, const char *what, const char *object,
                       const char *id)
{
	int ret = bw_store_sql_run(st, s, NULL, err, what);
	if (!ret && sqlite3_changes(bw_store_sql_db(st)) == 0)
		ret = bw_error_set(err, BW_E_NOTFOUND, "no %s with id %s", object, id);
	return ret;
}

/* ---- devices */

struct dev_values {
	const char *v[NF];
	bool present[NF];
	bool push_present;
	const char *push_provider, *push_token;
	char os_key[OSKEY_MAX];
	bool os_key_set;
};

/* Reads the registry fields of a "device" object (borrowed strings). Unknown members are
 * ignored: agents may send more than this version stores. null clears a field. */
static int dev_values_read(json_t *obj, bool with_group, struct dev_values *dv, bw_error *err)
{
	memset(dv, 0, sizeof *dv);
	if (!json_is_object(obj))
		return bw_error_set(err, BW_E_INVALID, "device: must be a JSON object");
	for (int f = 0; f < NF; f++) {
		if (f == F_GROUP && !with_group)
			continue;
		json_t *j = json_object_get(obj, dev_fields[f].key);
		if (!j)
			continue;
		dv->present[f] = true;
		if (json_is_null(j))
			continue;
		if (!json_is_string(j))
			return bw_error_set(err, BW_E_INVALID, "device.%s: must be a string", dev_fields[f].key);
		const char *s = json_string_value(j);
		char field[48];
		snprintf(field, sizeof field, "device.%s", dev_fields[f].key);
		int ret = bw_store_sql_check_name(s, 0, dev_fields[f].max, true, field, err);
		if (ret)
			return ret;
		if (!identifier_valid(dev_fields[f].kind, s))
			return bw_error_set(err, BW_E_INVALID, "device.%s: must be %s", dev_fields[f].key,
			                    identifier_shape(dev_fields[f].kind));
		dv->v[f] = s;
	}
	if (dv->v[F_OS])
		dv->os_key_set = os_version_key(dv->v[F_OS], dv->os_key);
	json_t *push = json_object_get(obj, "push");
	if (push) {
		dv->push_present = true;
		if (!json_is_null(push)) {
			if (!json_is_object(push))
				return bw_error_set(err, BW_E_INVALID, "device.push: must be an object or null");
			json_t *p = json_object_get(push, "provider"), *t = json_object_get(push, "token");
			if (!json_is_string(p))
				return bw_error_set(err, BW_E_INVALID, "device.push.provider: must be a string");
			if (t && !json_is_null(t) && !json_is_string(t))
				return bw_error_set(err, BW_E_INVALID, "device.push.token: must be a string");
			dv->push_provider = json_string_value(p);
			dv->push_token = json_string_value(t);
			int ret = check_word(dv->push_provider, 32, false, "device.push.provider", err);
			if (!ret && dv->push_token)
				ret = bw_store_sql_check_name(dv->push_token, 1, PUSH_TOKEN_MAX, true,
				                              "device.push.token", err);
			if (ret)
				return ret;
		}
	}
	return BW_OK;
}

static int check_platform(const char *p, bw_error *err)
{
	if (p && (strcmp(p, "android") == 0 || strcmp(p, "ios") == 0))
		return BW_OK;
	return bw_error_set(err, BW_E_INVALID, "device.platform: must be \"android\" or \"ios\"");
}

static int check_status(const char *s, bw_error *err)
{
	if (s && (strcmp(s, "active") == 0 || strcmp(s, "unregistered") == 0 || strcmp(s, "wiped") == 0))
		return BW_OK;
	return bw_error_set(err, BW_E_INVALID, "device status: must be \"active\", \"unregistered\" or \"wiped\"");
}

int bw_store_device_create(bw_store *st, const char *id, json_t *device, const char *group_name,
                           const char *enroll_method, const char *cert_serial, int64_t cert_not_after, int64_t now,
                           bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	struct dev_values dv;
	if ((ret = bw_store_sql_check_id(id, "device id", err)) || (ret = dev_values_read(device, false, &dv, err)))
		return ret;
	json_t *pj = json_object_get(device, "platform");
	const char *platform = json_string_value(pj);
	if ((ret = check_platform(platform, err)) ||
	    (ret = bw_store_sql_check_name(group_name, 0, DEV_TEXT_MAX, true, "group", err)) ||
	    (ret = check_word(enroll_method, 32, false, "enroll method", err)) ||
	    (ret = check_serial(cert_serial, err)) || (ret = check_time(cert_not_after, "certificate expiry", err)) ||
	    (ret = check_time(now, "now", err)))
		return ret;
	dv.v[F_GROUP] = group_name && *group_name ? group_name : "default"; /* every device is in a group */
	sqlite3_stmt *s;
	if ((ret = dstmt(st, D_DEVICE_INSERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ttttiit", id, platform, enroll_method, cert_serial, cert_not_after,
	                             now, dv.os_key_set ? dv.os_key : NULL)))
		return ret;
	const char *push[2] = {dv.push_provider, dv.push_token};
	int rc = bind_texts(s, 8, push, 2);
	if (rc == SQLITE_OK)
		rc = bind_texts(s, 10, dv.v, NF);
	if (rc != SQLITE_OK) {
		ret = bw_store_sql_fail(st, rc, err, "creating a device: binding");
		bw_store_sql_end(s);
		return ret;
	}
	ret = bw_store_sql_run(st, s, &rc, err, "creating a device");
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "a device with id %s already exists", id);
	return ret;
}

static void device_from_row(sqlite3_stmt *s, struct bw_device *d)
{
	memset(d, 0, sizeof *d);
	bw_store_sql_col_copy(s, 0, d->id, sizeof d->id);
	bw_store_sql_col_copy(s, 1, d->platform, sizeof d->platform);
	bw_store_sql_col_copy(s, 2, d->status, sizeof d->status);
	bw_store_sql_col_copy(s, 3, d->cert_serial, sizeof d->cert_serial);
	d->cert_not_after = sqlite3_column_int64(s, 4);
	d->enrolled_at = sqlite3_column_int64(s, 5);
	d->last_seen = sqlite3_column_int64(s, 6);
	bw_store_sql_col_copy(s, 7, d->group_name, sizeof d->group_name);
	bw_store_sql_col_copy(s, 8, d->owner, sizeof d->owner);
}

int bw_store_device_get(bw_store *st, const char *id, struct bw_device *out, bw_error *err)
{
	memset(out, 0, sizeof *out);
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(id, "device id", err)) || (ret = dstmt(st, D_DEVICE_GET, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "t", id)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		device_from_row(s, out);
	else if (rc == SQLITE_DONE)
		ret = bw_error_set(err, BW_E_NOTFOUND, "no device with id %s", id);
	else
		ret = bw_store_sql_fail(st, rc, err, "reading a device");
	bw_store_sql_end(s);
	return ret;
}

static const struct bw_col_map device_map[] = {
    {"id", BW_COL_TEXT},
    {"platform", BW_COL_TEXT},
    {"status", BW_COL_TEXT},
    {"group", BW_COL_TEXT},
    {"owner", BW_COL_TEXT},
    {"cert_serial", BW_COL_TEXT},
    {"cert_not_after", BW_COL_INT},
    {"enrolled_at", BW_COL_INT},
    {"last_seen", BW_COL_INT},
    {"status_changed_at", BW_COL_INT},
    {"enroll_method", BW_COL_TEXT},
    {"os_version", BW_COL_TEXT},
    {"model", BW_COL_TEXT},
    {"manufacturer", BW_COL_TEXT},
    {"serial", BW_COL_TEXT},
    {"imei", BW_COL_TEXT},
    {"meid", BW_COL_TEXT},
    {"wifi_mac", BW_COL_TEXT},
    {"phone_number", BW_COL_TEXT},
    {"agent_version", BW_COL_TEXT},
    {NULL, BW_COL_TEXT} /* push */,
    {NULL, BW_COL_TEXT},
    {"owner_name", BW_COL_TEXT},
    {"owner_email", BW_COL_TEXT},
};

/* Adds "inventory" (null when none) and "inventory_at" (0) to a device's JSON. */
static int device_json_inventory(bw_store *st, const char *id, json_t *o, bw_error *err)
{
	sqlite3_stmt *s;
	int ret;
	if ((ret = dstmt(st, D_INVENTORY_GET, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "t", id)))
		return ret;
	int rc = sqlite3_step(s);
	bool found = rc == SQLITE_ROW;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "reading a device's inventory");
	else if (!bw_store_sql_jset(o, "inventory", found ? bw_store_sql_col_parsed(s, 0) : json_null()) ||
	         !bw_store_sql_jset(o, "inventory_at", json_integer(found ? sqlite3_column_int64(s, 1) : 0)))
		ret = bw_error_set(err, BW_E_NOMEM, "reading a device: out of memory");
	bw_store_sql_end(s);
	return ret;
}

int bw_store_device_json(bw_store *st, const char *id, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(id, "device id", err)) || (ret = dstmt(st, D_DEVICE_JSON, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "t", id)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		json_t *o = bw_store_sql_row_json(s, device_map, sizeof device_map / sizeof device_map[0]);
		json_t *push = json_null();
		if (o && sqlite3_column_type(s, 20) != SQLITE_NULL) {
			json_decref(push);
			push = json_object();
			if (push && (!bw_store_sql_jset(push, "provider", bw_store_sql_col_json(s, 20)) ||
			             !bw_store_sql_jset(push, "token", bw_store_sql_col_json(s, 21)))) {
				json_decref(push);
				push = NULL;
			}
		}
		if (!o || !bw_store_sql_jset(o, "push", push)) {
			json_decref(o);
			ret = bw_error_set(err, BW_E_NOMEM, "reading a device: out of memory");
		} else {
			*out = o;
		}
	} else if (rc == SQLITE_DONE) {
		ret = bw_error_set(err, BW_E_NOTFOUND, "no device with id %s", id);
	} else {
		ret = bw_store_sql_fail(st, rc, err, "reading a device");
	}
	bw_store_sql_end(s);
	if (!ret && (ret = device_json_inventory(st, id, *out, err))) {
		json_decref(*out);
		*out = NULL;
	}
	return ret;
}

int bw_store_device_update(bw_store *st, const char *id, json_t *fields, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	struct dev_values dv;
	if ((ret = bw_store_sql_check_id(id, "device id", err)) || (ret = dev_values_read(fields, true, &dv, err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = dstmt(st, D_DEVICE_UPDATE, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "t", id)))
		return ret;
	/* ?2,?3 os_version, ?4 its key; then (flag, value) pairs from ?5; push ?29..?31 */
	int rc = sqlite3_bind_int(s, 2, dv.present[F_OS]);
	if (rc == SQLITE_OK)
		rc = dv.v[F_OS] ? sqlite3_bind_text(s, 3, dv.v[F_OS], -1, SQLITE_STATIC) : sqlite3_bind_null(s, 3);
	if (rc == SQLITE_OK)
		rc = dv.os_key_set ? sqlite3_bind_text(s, 4, dv.os_key, -1, SQLITE_STATIC) : sqlite3_bind_null(s, 4);
	for (int f = F_MODEL; f < NF && rc == SQLITE_OK; f++) {
		int p = 5 + 2 * (f - F_MODEL);
		rc = sqlite3_bind_int(s, p, dv.present[f]);
		/* owner and group are never NULL: null clears them to "" */
		const char *v = dv.v[f] ? dv.v[f] : (f == F_OWNER || f == F_GROUP || f >= F_OWNER_NAME) ? "" : NULL;
		if (rc == SQLITE_OK)
			rc = v ? sqlite3_bind_text(s, p + 1, v, -1, SQLITE_STATIC) : sqlite3_bind_null(s, p + 1);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(s, 29, dv.push_present);
	const char *push[2] = {dv.push_provider, dv.push_token};
	if (rc == SQLITE_OK)
		rc = bind_texts(s, 30, push, 2);
	if (rc != SQLITE_OK) {
		ret = bw_store_sql_fail(st, rc, err, "updating a device: binding");
		bw_store_sql_end(s);
		return ret;
	}
	return run_changed(st, s, err, "updating a device", "device", id);
}

int bw_store_device_set_status(bw_store *st, const char *id, const char *status, int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(id, "device id", err)) || (ret = check_status(status, err)) ||
	    (ret = dstmt(st, D_DEVICE_STATUS, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tti", id, status, now)))
		return ret;
	return run_changed(st, s, err, "changing a device's status", "device", id);
}

int bw_store_device_set_cert(bw_store *st, const char *id, const char *serial, int64_t not_after, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(id, "device id", err)) || (ret = check_serial(serial, err)) ||
	    (ret = check_time(not_after, "certificate expiry", err)) || (ret = dstmt(st, D_DEVICE_CERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tti", id, serial, not_after)))
		return ret;
	return run_changed(st, s, err, "changing a device's certificate", "device", id);
}

int bw_store_device_touch_many(bw_store *st, const char *const *ids, const int64_t *seen, size_t n, bw_error *err)
{
	CHECK_DEV(st);
	if (n == 0)
		return BW_OK;
	if (!ids || !seen)
		return bw_error_set(err, BW_E_INVALID, "device touches: missing ids or times");
	if (n > TOUCH_MAX)
		return bw_error_set(err, BW_E_LIMIT, "device touches: %zu in one call, more than %d", n, TOUCH_MAX);
	int ret;
	for (size_t i = 0; i < n; i++)
		if ((ret = bw_store_sql_check_id(ids[i], "device id", err)))
			return ret;
	sqlite3_stmt *s;
	bool own;
	if ((ret = dstmt(st, D_DEVICE_TOUCH, &s, err)) || (ret = tx_begin(st, &own, err)))
		return ret;
	/* Unknown ids (a device removed meanwhile) change nothing and are not an error. */
	for (size_t i = 0; i < n && !ret; i++)
		if (!(ret = bw_store_sql_bind(st, s, err, "ti", ids[i], seen[i])))
			ret = bw_store_sql_run(st, s, NULL, err, "marking devices seen");
	return tx_end(st, own, ret, err);
}

int bw_store_device_set_inventory(bw_store *st, const char *id, const char *inventory_json, int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	if ((ret = bw_store_sql_check_id(id, "device id", err)))
		return ret;
	if (!inventory_json)
		return bw_error_set(err, BW_E_INVALID, "inventory: missing");
	sqlite3_stmt *s;
	if ((ret = check_json(inventory_json, INVENTORY_MAX, true, "inventory", err)) ||
	    (ret = dstmt(st, D_INVENTORY_PUT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tti", id, inventory_json, now)))
		return ret;
	int rc;
	ret = bw_store_sql_run(st, s, &rc, err, "storing an inventory");
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return bw_error_set(err, BW_E_NOTFOUND, "no device with id %s", id);
	return ret;
}

static const char *const os_ops[] = {"<", "<=", "=", ">=", ">"};

/* SQL of the listing for one combination of filters: bit 0 platform, 1 status, 2 group, and
 * the os operator (0 = none, 1..5). Built only from the constant fragments below, so that
 * each condition is a plain "column op ?" the planner can serve from its index. */
static void device_list_sql(unsigned mask, unsigned op, char *buf, size_t size)
{
	snprintf(buf, size, "SELECT " SUMMARY_COLS " FROM devices WHERE id > ?1%s%s%s%s%s%s ORDER BY id LIMIT ?6",
	         mask & 1 ? " AND platform = ?2" : "", mask & 2 ? " AND status = ?3" : "",
	         mask & 4 ? " AND group_name = ?4" : "", op ? " AND os_version_key " : "", op ? os_ops[op - 1] : "",
	         op ? " ?5" : "");
}

static const struct bw_col_map summary_map[] = {
    {"id", BW_COL_TEXT},         {"platform", BW_COL_TEXT},     {"status", BW_COL_TEXT},
    {"group", BW_COL_TEXT},      {"owner", BW_COL_TEXT},        {"os_version", BW_COL_TEXT},
    {"model", BW_COL_TEXT},      {"manufacturer", BW_COL_TEXT}, {"agent_version", BW_COL_TEXT},
    {"enrolled_at", BW_COL_INT}, {"last_seen", BW_COL_INT},     {"cert_not_after", BW_COL_INT},
};

int bw_store_device_list(bw_store *st, const struct bw_device_filter *f, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	if (!f)
		return bw_error_set(err, BW_E_INVALID, "device filter: missing");
	if (f->limit < 1 || f->limit > BW_STORE_LIST_MAX)
		return bw_error_set(err, BW_E_INVALID, "device list limit: must be 1..%d", BW_STORE_LIST_MAX);
	int ret;
	if ((f->platform && (ret = check_platform(f->platform, err))) ||
	    (f->status && (ret = check_status(f->status, err))) ||
	    (ret = bw_store_sql_check_name(f->group, 0, DEV_TEXT_MAX, true, "group filter", err)))
		return ret;
	const char *after = f->after_id && *f->after_id ? f->after_id : "";
	if (*after && (ret = bw_store_sql_check_id(after, "after_id", err)))
		return ret;
	unsigned op = 0;
	char key[OSKEY_MAX];
	if (f->os_op || f->os_version) {
		if (!f->os_op || !f->os_version)
			return bw_error_set(err, BW_E_INVALID, "os filter: needs both an operator and a version");
		for (unsigned i = 0; i < 5 && !op; i++)
			if (strcmp(f->os_op, os_ops[i]) == 0)
				op = i + 1;
		if (!op)
			return bw_error_set(err, BW_E_INVALID, "os filter operator: must be <, <=, =, >= or >");
		if (strlen(f->os_version) > DEV_VERSION_MAX || !os_version_key(f->os_version, key))
			return bw_error_set(err, BW_E_INVALID,
			                    "os filter version: must be a dotted version of at most %d characters "
			                    "starting with a digit",
			                    DEV_VERSION_MAX);
	}
	unsigned mask = (f->platform ? 1u : 0) | (f->status ? 2u : 0) | (f->group ? 4u : 0);
	char sql[768];
	device_list_sql(mask, op, sql, sizeof sql);
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_stmt(st, D_LIST_BASE + mask * 6 + op, sql, &s, err)))
		return ret;
	int rc = sqlite3_bind_text(s, 1, after, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && f->platform)
		rc = sqlite3_bind_text(s, 2, f->platform, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && f->status)
		rc = sqlite3_bind_text(s, 3, f->status, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && f->group)
		rc = sqlite3_bind_text(s, 4, f->group, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && op)
		rc = sqlite3_bind_text(s, 5, key, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(s, 6, (int64_t)f->limit);
	if (rc != SQLITE_OK) {
		ret = bw_store_sql_fail(st, rc, err, "listing devices: binding");
		bw_store_sql_end(s);
		return ret;
	}
	return bw_store_sql_list(st, s, summary_map, sizeof summary_map / sizeof summary_map[0], out, err,
	                         "listing devices");
}

int bw_store_device_count(bw_store *st, int64_t *count, bw_error *err)
{
	*count = 0;
	CHECK_DEV(st);
	sqlite3_stmt *s;
	int ret = dstmt(st, D_DEVICE_COUNT, &s, err);
	if (ret)
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*count = sqlite3_column_int64(s, 0);
	else
		ret = bw_store_sql_fail(st, rc, err, "counting devices");
	bw_store_sql_end(s);
	return ret;
}

int bw_store_device_scan(bw_store *st, void (*fn)(const struct bw_device *d, void *arg), void *arg, bw_error *err)
{
	CHECK_DEV(st);
	if (!fn)
		return bw_error_set(err, BW_E_INVALID, "device scan: missing callback");
	sqlite3_stmt *s;
	int ret = dstmt(st, D_DEVICE_SCAN, &s, err);
	if (ret)
		return ret;
	int rc;
	struct bw_device d;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		device_from_row(s, &d);
		fn(&d, arg);
	}
	if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "reading the devices");
	bw_store_sql_end(s);
	return ret;
}

/* ---- enrollment keys */

int bw_store_key_create(bw_store *st, const char *id, const char *key_hash, const char *prefix, const char *group_name,
                        int64_t max_uses, int64_t expires_at, const char *created_by, int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	if ((ret = bw_store_sql_check_id(id, "key id", err)) || (ret = check_digest(key_hash, "key hash", err)) ||
	    (ret = bw_store_sql_check_name(prefix, 1, 16, true, "key prefix", err)) ||
	    (ret = bw_store_sql_check_name(group_name, 0, DEV_TEXT_MAX, true, "group", err)) ||
	    (ret = check_time(max_uses, "max uses", err)) || (ret = check_time(expires_at, "key expiry", err)) ||
	    (ret = bw_store_sql_check_name(created_by, 0, DEV_TEXT_MAX, true, "created by", err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = dstmt(st, D_KEY_INSERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ttttiiti", id, key_hash, prefix, group_name ? group_name : "",
	                             max_uses, expires_at, created_by, now)))
		return ret;
	int rc;
	ret = bw_store_sql_run(st, s, &rc, err, "creating an enrollment key");
	if (rc == SQLITE_CONSTRAINT_UNIQUE) /* never name the hash */
		return bw_error_set(err, BW_E_EXISTS, "creating an enrollment key: this key is already stored");
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "an enrollment key with id %s already exists", id);
	return ret;
}

int bw_store_key_use(bw_store *st, const char *key_hash, int64_t now, char group_out[129], bw_error *err)
{
	if (group_out)
		group_out[0] = '\0';
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = check_digest(key_hash, "key hash", err)) || (ret = dstmt(st, D_KEY_USE, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ti", key_hash, now)))
		return ret;
	int rc = sqlite3_step(s);
	bool used = rc == SQLITE_ROW;
	if (used && group_out)
		bw_store_sql_col_copy(s, 0, group_out, 129);
	if (used)
		rc = sqlite3_step(s); /* RETURNING: the change is done when the statement is */
	if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "using an enrollment key");
	bw_store_sql_end(s);
	if (ret || used) {
		if (ret && group_out)
			group_out[0] = '\0';
		return ret;
	}

	/* Refused: say why. */
	if ((ret = dstmt(st, D_KEY_STATE, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "t", key_hash)))
		return ret;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		bool revoked = sqlite3_column_int(s, 0) != 0;
		int64_t expires_at = sqlite3_column_int64(s, 1);
		if (revoked)
			ret = bw_error_set(err, BW_E_DENIED, "enrollment key revoked");
		else if (expires_at != 0 && expires_at <= now)
			ret = bw_error_set(err, BW_E_DENIED, "enrollment key expired");
		else
			ret = bw_error_set(err, BW_E_DENIED, "enrollment key used up");
	} else if (rc == SQLITE_DONE) {
		ret = bw_error_set(err, BW_E_NOTFOUND, "unknown enrollment key");
	} else {
		ret = bw_store_sql_fail(st, rc, err, "reading an enrollment key");
	}
	bw_store_sql_end(s);
	return ret;
}

int bw_store_key_list(bw_store *st, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	static const struct bw_col_map m[] = {
	    {"id", BW_COL_TEXT},      {"prefix", BW_COL_TEXT},     {"group", BW_COL_TEXT},
	    {"max_uses", BW_COL_INT}, {"uses", BW_COL_INT},        {"expires_at", BW_COL_INT},
	    {"revoked", BW_COL_BOOL}, {"created_by", BW_COL_TEXT}, {"created_at", BW_COL_INT},
	};
	sqlite3_stmt *s;
	int ret = dstmt(st, D_KEY_LIST, &s, err);
	return ret ? ret : bw_store_sql_list(st, s, m, sizeof m / sizeof m[0], out, err, "listing enrollment keys");
}

int bw_store_key_revoke(bw_store *st, const char *id, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(id, "key id", err)) || (ret = dstmt(st, D_KEY_REVOKE, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "t", id)))
		return ret;
	return run_changed(st, s, err, "revoking an enrollment key", "enrollment key", id);
}

/* ---- invitations and the outbox */

/* An e-mail address lower-cased (ASCII; SQLite's lower() would do the same) into out. */
static int email_norm(const char *in, char out[EMAIL_MAX + 1], const char *field, bw_error *err)
{
	int ret = bw_store_sql_check_name(in, 3, EMAIL_MAX, true, field, err);
	if (ret)
		return ret;
	const char *at = strchr(in, '@');
	if (!at || at == in || !at[1] || strchr(at + 1, '@') || strchr(in, ' '))
		return bw_error_set(err, BW_E_INVALID, "%s: not an e-mail address", field);
	size_t i = 0;
	for (; in[i]; i++)
		out[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
	out[i] = '\0';
	return BW_OK;
}

int bw_store_invitation_create(bw_store *st, const char *id, const char *email, const char *code_hash,
                               int64_t expires_at, const char *created_by, int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	char addr[EMAIL_MAX + 1];
	if ((ret = bw_store_sql_check_id(id, "invitation id", err)) ||
	    (ret = email_norm(email, addr, "invitation e-mail", err)) ||
	    (ret = check_digest(code_hash, "invitation code hash", err)) ||
	    (ret = check_time(expires_at, "invitation expiry", err)) ||
	    (ret = bw_store_sql_check_name(created_by, 0, DEV_TEXT_MAX, true, "created by", err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = dstmt(st, D_INV_INSERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tttiti", id, addr, code_hash, expires_at, created_by, now)))
		return ret;
	int rc;
	ret = bw_store_sql_run(st, s, &rc, err, "creating an invitation");
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "an invitation with id %s already exists", id);
	return ret;
}

int bw_store_invitation_use(bw_store *st, const char *email, const char *code_hash, int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	char addr[EMAIL_MAX + 1];
	sqlite3_stmt *s;
	if ((ret = email_norm(email, addr, "invitation e-mail", err)) ||
	    (ret = check_digest(code_hash, "invitation code hash", err)) || (ret = dstmt(st, D_INV_USE, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tti", addr, code_hash, now)) ||
	    (ret = bw_store_sql_run(st, s, NULL, err, "using an invitation")))
		return ret;
	if (sqlite3_changes(bw_store_sql_db(st)) > 0)
		return BW_OK;
	if ((ret = dstmt(st, D_INV_STATE, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "tt", addr, code_hash)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) == SQLITE_NULL)
		ret = bw_error_set(err, BW_E_NOTFOUND, "no invitation for %s with this code", addr);
	else if (rc == SQLITE_ROW)
		ret = bw_error_set(err, BW_E_DENIED, "invitation %s", sqlite3_column_int(s, 0) ? "used" : "expired");
	else
		ret = bw_store_sql_fail(st, rc, err, "reading an invitation");
	bw_store_sql_end(s);
	return ret;
}

int bw_store_invitation_list(bw_store *st, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	static const struct bw_col_map m[] = {
	    {"id", BW_COL_TEXT},     {"email", BW_COL_TEXT},      {"expires_at", BW_COL_INT},
	    {"used_at", BW_COL_INT}, {"created_by", BW_COL_TEXT}, {"created_at", BW_COL_INT},
	};
	sqlite3_stmt *s;
	int ret = dstmt(st, D_INV_LIST, &s, err);
	return ret ? ret : bw_store_sql_list(st, s, m, sizeof m / sizeof m[0], out, err, "listing invitations");
}

int bw_store_outbox_add(bw_store *st, const char *id, const char *to, const char *subject, const char *body,
                        int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	char addr[EMAIL_MAX + 1];
	if ((ret = bw_store_sql_check_id(id, "mail id", err)) || (ret = email_norm(to, addr, "mail recipient", err)) ||
	    (ret = bw_store_sql_check_name(subject, 1, SUBJECT_MAX, true, "mail subject", err)) ||
	    (ret = bw_store_sql_check_name(body, 0, MAIL_BODY_MAX, false, "mail body", err)))
		return ret;
	if (!body)
		return bw_error_set(err, BW_E_INVALID, "mail body: missing");
	sqlite3_stmt *s;
	if ((ret = dstmt(st, D_OUTBOX_INSERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tttti", id, to, subject, body, now)))
		return ret;
	int rc;
	ret = bw_store_sql_run(st, s, &rc, err, "adding a mail to the outbox");
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "a mail with id %s already exists", id);
	return ret;
}

int bw_store_outbox_list(bw_store *st, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	static const struct bw_col_map m[] = {
	    {"id", BW_COL_TEXT},   {"to", BW_COL_TEXT},        {"subject", BW_COL_TEXT},
	    {"body", BW_COL_TEXT}, {"created_at", BW_COL_INT}, {"sent_at", BW_COL_INT},
	};
	sqlite3_stmt *s;
	int ret = dstmt(st, D_OUTBOX_LIST, &s, err);
	return ret ? ret : bw_store_sql_list(st, s, m, sizeof m / sizeof m[0], out, err, "listing the outbox");
}

/* ---- allowlist, settings, refusals */

static int check_allow(const char *kind, const char *value, bw_error *err)
{
	enum dev_kind k;
	if (kind && strcmp(kind, "imei") == 0)
		k = K_IMEI;
	else if (kind && strcmp(kind, "meid") == 0)
		k = K_MEID;
	else if (kind && strcmp(kind, "wifi_mac") == 0)
		k = K_MAC;
	else
		return bw_error_set(err, BW_E_INVALID, "allowlist kind: must be \"imei\", \"meid\" or \"wifi_mac\"");
	if (!value || !identifier_valid(k, value))
		return bw_error_set(err, BW_E_INVALID, "allowlist %s: must be %s", kind, identifier_shape(k));
	return BW_OK;
}

int bw_store_allowlist_add(bw_store *st, const char *kind, const char *value, const char *note, int64_t now,
                           bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = check_allow(kind, value, err)) ||
	    (ret = bw_store_sql_check_name(note, 0, DEV_TEXT_MAX * 2, true, "allowlist note", err)) ||
	    (ret = dstmt(st, D_ALLOW_INSERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ttti", kind, value, note ? note : "", now)))
		return ret;
	int rc;
	ret = bw_store_sql_run(st, s, &rc, err, "adding to the allowlist");
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "%s %s is already on the allowlist", kind, value);
	return ret;
}

int bw_store_allowlist_remove(bw_store *st, const char *kind, const char *value, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = check_allow(kind, value, err)) || (ret = dstmt(st, D_ALLOW_DELETE, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tt", kind, value)) ||
	    (ret = bw_store_sql_run(st, s, NULL, err, "removing from the allowlist")))
		return ret;
	if (sqlite3_changes(bw_store_sql_db(st)) == 0)
		return bw_error_set(err, BW_E_NOTFOUND, "%s %s is not on the allowlist", kind, value);
	return BW_OK;
}

int bw_store_allowlist_list(bw_store *st, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	static const struct bw_col_map m[] = {
	    {"kind", BW_COL_TEXT}, {"value", BW_COL_TEXT}, {"note", BW_COL_TEXT}, {"created_at", BW_COL_INT}};
	sqlite3_stmt *s;
	int ret = dstmt(st, D_ALLOW_LIST, &s, err);
	return ret ? ret : bw_store_sql_list(st, s, m, sizeof m / sizeof m[0], out, err, "listing the allowlist");
}

/* False for malformed values, and on database errors (logged): an allowlist check never lets a
 * device in by mistake. */
bool bw_store_allowlist_contains(bw_store *st, const char *kind, const char *value)
{
	bw_error e = {0}, *err = &e;
	sqlite3_stmt *s;
	int ret;
	if (!bw_store_sql_db(st) || bw_store_schema_version(st) < SCHEMA_DEVICES || check_allow(kind, value, NULL))
		return false;
	if ((ret = dstmt(st, D_ALLOW_CONTAINS, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "tt", kind, value))) {
		bw_log_warn("store", "allowlist lookup: %s", e.message);
		return false;
	}
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
		bw_store_sql_fail(st, rc, err, "allowlist lookup");
		bw_log_warn("store", "%s", e.message);
	}
	bw_store_sql_end(s);
	return rc == SQLITE_ROW;
}

int bw_store_setting_get(bw_store *st, const char *name, char **value, bw_error *err)
{
	*value = NULL;
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_name(name, 1, BW_STORE_NAME_MAX, true, "setting name", err)) ||
	    (ret = dstmt(st, D_SETTING_GET, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "t", name)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(s, 0);
		if (!(*value = strdup(t ? t : "")))
			ret = bw_error_set(err, BW_E_NOMEM, "reading a setting: out of memory");
	} else if (rc == SQLITE_DONE) {
		ret = bw_error_set(err, BW_E_NOTFOUND, "no setting \"%s\"", name);
	} else {
		ret = bw_store_sql_fail(st, rc, err, "reading a setting");
	}
	bw_store_sql_end(s);
	return ret;
}

int bw_store_setting_set(bw_store *st, const char *name, const char *value, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_name(name, 1, BW_STORE_NAME_MAX, true, "setting name", err)) ||
	    (ret = bw_store_sql_check_name(value, 0, SETTING_VALUE_MAX, false, "setting value", err)))
		return ret;
	if (!value)
		return bw_error_set(err, BW_E_INVALID, "setting value: missing");
	if ((ret = dstmt(st, D_SETTING_SET, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "tt", name, value)))
		return ret;
	return bw_store_sql_run(st, s, NULL, err, "storing a setting");
}

/* Refusal fields come from refused (possibly hostile) requests: they are cleaned and cut, never
 * refused, like audit entries. */
int bw_store_refusal_add(bw_store *st, int64_t at, const char *address, const char *reason, const char *detail,
                         bw_error *err)
{
	CHECK_DEV(st);
	if (!reason || !*reason)
		return bw_error_set(err, BW_E_INVALID, "refusal reason: missing");
	char *a = bw_store_sql_clean_text(address, REFUSAL_FIELD_MAX),
	     *r = bw_store_sql_clean_text(reason, REFUSAL_FIELD_MAX),
	     *d = bw_store_sql_clean_text(detail, REFUSAL_DETAIL_MAX);
	int ret;
	sqlite3_stmt *s;
	if (!r || (address && !a) || (detail && !d))
		ret = bw_error_set(err, BW_E_NOMEM, "recording a refusal: out of memory");
	else if (!(ret = dstmt(st, D_REFUSAL_INSERT, &s, err)) &&
	         !(ret = bw_store_sql_bind(st, s, err, "ittt", at, a, r, d)) &&
	         !(ret = bw_store_sql_run(st, s, NULL, err, "recording a refusal"))) {
		int64_t last = sqlite3_last_insert_rowid(bw_store_sql_db(st));
		if (last > REFUSALS_KEEP && !(ret = dstmt(st, D_REFUSAL_TRIM, &s, err)) &&
		    !(ret = bw_store_sql_bind(st, s, err, "i", last - REFUSALS_KEEP)))
			ret = bw_store_sql_run(st, s, NULL, err, "trimming old refusals");
	}
	free(a);
	free(r);
	free(d);
	return ret;
}

int bw_store_refusal_list(bw_store *st, size_t limit, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	if (limit < 1 || limit > BW_STORE_LIST_MAX)
		return bw_error_set(err, BW_E_INVALID, "refusal list limit: must be 1..%d", BW_STORE_LIST_MAX);
	static const struct bw_col_map m[] = {
	    {"id", BW_COL_INT},      {"at", BW_COL_INT},      {"address", BW_COL_TEXT},
	    {"reason", BW_COL_TEXT}, {"detail", BW_COL_TEXT},
	};
	sqlite3_stmt *s;
	int ret;
	if ((ret = dstmt(st, D_REFUSAL_LIST, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "i", (int64_t)limit)))
		return ret;
	return bw_store_sql_list(st, s, m, sizeof m / sizeof m[0], out, err, "listing enrollment refusals");
}

/* ---- commands */

static bool state_open(const char *s)
{
	return strcmp(s, "queued") == 0 || strcmp(s, "sent") == 0 || strcmp(s, "acknowledged") == 0;
}

int bw_store_command_create(bw_store *st, const char *id, const char *device_id, const char *type,
                            const char *params_json, int priority, int64_t expires_at, const char *created_by,
                            int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	if (!params_json)
		params_json = "{}";
	if ((ret = bw_store_sql_check_id(id, "command id", err)) ||
	    (ret = bw_store_sql_check_id(device_id, "device id", err)) ||
	    (ret = check_word(type, 32, false, "command type", err)) ||
	    (ret = check_json(params_json, SMALL_JSON_MAX, true, "command params", err)) ||
	    (ret = check_time(expires_at, "command expiry", err)) ||
	    (ret = bw_store_sql_check_name(created_by, 0, DEV_TEXT_MAX, true, "created by", err)))
		return ret;
	sqlite3_stmt *s;
	if ((ret = dstmt(st, D_CMD_INSERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ttttitii", id, device_id, type, params_json, (int64_t)priority,
	                             created_by, now, expires_at)))
		return ret;
	int rc;
	ret = bw_store_sql_run(st, s, &rc, err, "queueing a command");
	if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return bw_error_set(err, BW_E_NOTFOUND, "no device with id %s", device_id);
	if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
		return bw_error_set(err, BW_E_EXISTS, "a command with id %s already exists", id);
	return ret;
}

int bw_store_command_take(bw_store *st, const char *device_id, int64_t now, int64_t resend_before, size_t limit,
                          json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	int ret;
	if ((ret = bw_store_sql_check_id(device_id, "device id", err)))
		return ret;
	if (limit < 1 || limit > BW_STORE_LIST_MAX)
		return bw_error_set(err, BW_E_INVALID, "command take limit: must be 1..%d", BW_STORE_LIST_MAX);
	static const struct bw_col_map m[] = {
	    {"id", BW_COL_TEXT}, {"type", BW_COL_TEXT}, {"params", BW_COL_JSON}, {"expires_at", BW_COL_INT}};
	sqlite3_stmt *sel, *mark;
	bool own;
	if ((ret = dstmt(st, D_CMD_TAKE, &sel, err)) || (ret = dstmt(st, D_CMD_MARK_SENT, &mark, err)) ||
	    (ret = tx_begin(st, &own, err)))
		return ret;
	json_t *arr = NULL;
	if (!(ret = bw_store_sql_bind(st, sel, err, "tiii", device_id, now, resend_before, (int64_t)limit)))
		ret = bw_store_sql_list(st, sel, m, sizeof m / sizeof m[0], &arr, err, "taking commands");
	size_t i;
	json_t *c;
	json_array_foreach(arr, i, c)
	{
		if (ret)
			break;
		if (!(ret = bw_store_sql_bind(st, mark, err, "ti", json_string_value(json_object_get(c, "id")), now)))
			ret = bw_store_sql_run(st, mark, NULL, err, "marking a command sent");
	}
	ret = tx_end(st, own, ret, err);
	if (ret)
		json_decref(arr);
	else
		*out = arr;
	return ret;
}

/* The state and device of a command; BW_E_NOTFOUND when absent or (device_id given) another
 * device's. */
static int command_state(bw_store *st, const char *id, const char *device_id, char state[16], bw_error *err)
{
	sqlite3_stmt *s;
	int ret;
	if ((ret = dstmt(st, D_CMD_STATE, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "t", id)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *dev = (const char *)sqlite3_column_text(s, 0);
		if (device_id && (!dev || strcmp(dev, device_id) != 0))
			ret = bw_error_set(err, BW_E_NOTFOUND, "no command %s for this device", id);
		else
			bw_store_sql_col_copy(s, 1, state, 16);
	} else if (rc == SQLITE_DONE) {
		ret = bw_error_set(err, BW_E_NOTFOUND, "no command %s%s", id, device_id ? " for this device" : "");
	} else {
		ret = bw_store_sql_fail(st, rc, err, "reading a command");
	}
	bw_store_sql_end(s);
	return ret;
}

int bw_store_command_result(bw_store *st, const char *device_id, const char *id, const char *status,
                            const char *result_json, const char *error, int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	if ((ret = bw_store_sql_check_id(device_id, "device id", err)) ||
	    (ret = bw_store_sql_check_id(id, "command id", err)))
		return ret;
	bool ack = status && strcmp(status, "acknowledged") == 0;
	if (!ack && !(status && (strcmp(status, "completed") == 0 || strcmp(status, "failed") == 0)))
		return bw_error_set(err, BW_E_INVALID,
		                    "command result status: must be \"acknowledged\", \"completed\" or \"failed\"");
	if ((result_json && (ret = check_json(result_json, SMALL_JSON_MAX, false, "command result", err))) ||
	    (ret = bw_store_sql_check_name(error, 0, ERROR_TEXT_MAX, false, "command error", err)))
		return ret;
	char state[16];
	if ((ret = command_state(st, id, device_id, state, err)))
		return ret;
	if (!state_open(state)) {
		/* a repeated final result, or an acknowledgement arriving late, changes nothing */
		if (strcmp(state, status) == 0 ||
		    (ack && (strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0)))
			return BW_OK;
		return bw_error_set(err, BW_E_STATE, "command %s is already %s", id, state);
	}
	if (ack && strcmp(state, "acknowledged") == 0)
		return BW_OK;
	sqlite3_stmt *s;
	if ((ret = dstmt(st, D_CMD_RESULT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tttitt", id, state, status, now, ack ? NULL : result_json,
	                             ack ? NULL : error)) ||
	    (ret = bw_store_sql_run(st, s, NULL, err, "recording a command result")))
		return ret;
	if (sqlite3_changes(bw_store_sql_db(st)) == 0) /* changed by another connection meanwhile */
		return bw_error_set(err, BW_E_STATE, "command %s changed meanwhile; try again", id);
	return BW_OK;
}

int bw_store_command_cancel(bw_store *st, const char *id, int64_t now, bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(id, "command id", err)) || (ret = dstmt(st, D_CMD_CANCEL, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ti", id, now)) ||
	    (ret = bw_store_sql_run(st, s, NULL, err, "cancelling a command")))
		return ret;
	if (sqlite3_changes(bw_store_sql_db(st)) > 0)
		return BW_OK;
	char state[16];
	if ((ret = command_state(st, id, NULL, state, err)))
		return ret;
	return bw_error_set(err, BW_E_STATE, "command %s is already %s", id, state);
}

static const struct bw_col_map command_map[] = {
    {"id", BW_COL_TEXT},        {"device_id", BW_COL_TEXT}, {"type", BW_COL_TEXT},       {"params", BW_COL_JSON},
    {"priority", BW_COL_INT},   {"state", BW_COL_TEXT},     {"created_by", BW_COL_TEXT}, {"created_at", BW_COL_INT},
    {"expires_at", BW_COL_INT}, {"sent_at", BW_COL_INT},    {"acked_at", BW_COL_INT},    {"completed_at", BW_COL_INT},
    {"attempts", BW_COL_INT},   {"result", BW_COL_JSON},    {"error", BW_COL_TEXT},
};

int bw_store_command_get(bw_store *st, const char *id, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(id, "command id", err)) || (ret = dstmt(st, D_CMD_GET, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "t", id)))
		return ret;
	json_t *arr = NULL;
	if ((ret = bw_store_sql_list(st, s, command_map, sizeof command_map / sizeof command_map[0], &arr, err,
	                             "reading a command")))
		return ret;
	if (json_array_size(arr) == 0)
		ret = bw_error_set(err, BW_E_NOTFOUND, "no command %s", id);
	else
		*out = json_incref(json_array_get(arr, 0));
	json_decref(arr);
	return ret;
}

/* The device's newest commands first, at most BW_STORE_LIST_MAX. */
int bw_store_command_list(bw_store *st, const char *device_id, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(device_id, "device id", err)) || (ret = dstmt(st, D_CMD_LIST, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ti", device_id, (int64_t)BW_STORE_LIST_MAX)))
		return ret;
	return bw_store_sql_list(st, s, command_map, sizeof command_map / sizeof command_map[0], out, err,
	                         "listing commands");
}

int bw_store_command_open_count(bw_store *st, const char *device_id, const char *type, int64_t *count, bw_error *err)
{
	*count = 0;
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = bw_store_sql_check_id(device_id, "device id", err)) ||
	    (type && (ret = check_word(type, 32, false, "command type", err))) ||
	    (ret = dstmt(st, D_CMD_OPEN_COUNT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "tt", device_id, type)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*count = sqlite3_column_int64(s, 0);
	else
		ret = bw_store_sql_fail(st, rc, err, "counting open commands");
	bw_store_sql_end(s);
	return ret;
}

int bw_store_command_expire(bw_store *st, int64_t now, int64_t *expired, bw_error *err)
{
	if (expired)
		*expired = 0;
	CHECK_DEV(st);
	sqlite3_stmt *s;
	int ret;
	if ((ret = dstmt(st, D_CMD_EXPIRE, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "i", now)) ||
	    (ret = bw_store_sql_run(st, s, NULL, err, "expiring commands")))
		return ret;
	if (expired)
		*expired = sqlite3_changes(bw_store_sql_db(st));
	return BW_OK;
}

int bw_store_command_pending_devices(bw_store *st, void (*fn)(const char *device_id, void *arg), void *arg,
                                     bw_error *err)
{
	CHECK_DEV(st);
	if (!fn)
		return bw_error_set(err, BW_E_INVALID, "pending devices: missing callback");
	sqlite3_stmt *s;
	int ret = dstmt(st, D_CMD_PENDING, &s, err);
	if (ret)
		return ret;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(s, 0);
		if (id)
			fn(id, arg);
	}
	if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "reading the devices with open commands");
	bw_store_sql_end(s);
	return ret;
}

int bw_store_command_stats(bw_store *st, int64_t now, int64_t *open, int64_t *oldest_age, bw_error *err)
{
	*open = 0;
	*oldest_age = 0;
	CHECK_DEV(st);
	sqlite3_stmt *s;
	int ret = dstmt(st, D_CMD_STATS, &s, err);
	if (ret)
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*open = sqlite3_column_int64(s, 0);
		if (sqlite3_column_type(s, 1) != SQLITE_NULL) {
			int64_t age = now - sqlite3_column_int64(s, 1);
			*oldest_age = age > 0 ? age : 0;
		}
	} else {
		ret = bw_store_sql_fail(st, rc, err, "reading the command queue statistics");
	}
	bw_store_sql_end(s);
	return ret;
}

/* ---- device events */

int bw_store_events_add(bw_store *st, const char *device_id, const char *batch_id, json_t *events, int64_t now,
                        bool *duplicate, bw_error *err)
{
	if (duplicate)
		*duplicate = false;
	CHECK_DEV(st);
	int ret;
	if ((ret = bw_store_sql_check_id(device_id, "device id", err)) ||
	    (ret = bw_store_sql_check_id(batch_id, "batch id", err)))
		return ret;
	if (!json_is_array(events))
		return bw_error_set(err, BW_E_INVALID, "events: must be an array");
	size_t n = json_array_size(events);
	if (n > EVENTS_PER_BATCH_MAX)
		return bw_error_set(err, BW_E_LIMIT, "events: %zu in one batch, more than %d", n, EVENTS_PER_BATCH_MAX);

	/* Check everything and serialise the data before writing anything. */
	char **data = calloc(n ? n : 1, sizeof *data);
	if (!data)
		return bw_error_set(err, BW_E_NOMEM, "storing events: out of memory");
	for (size_t i = 0; i < n && !ret; i++) {
		json_t *e = json_array_get(events, i);
		json_t *type = json_object_get(e, "type"), *at = json_object_get(e, "at"),
		       *d = json_object_get(e, "data");
		char field[48];
		snprintf(field, sizeof field, "events[%zu].type", i);
		if (!json_is_object(e))
			ret = bw_error_set(err, BW_E_INVALID, "events[%zu]: must be an object", i);
		else if (!json_is_string(type))
			ret = bw_error_set(err, BW_E_INVALID, "%s: must be a string", field);
		else
			ret = check_word(json_string_value(type), 64, true, field, err);
		if (ret)
			break;
		if (!json_is_integer(at) || json_integer_value(at) < 0 || json_integer_value(at) > TIME_MAX)
			ret = bw_error_set(err, BW_E_INVALID, "events[%zu].at: must be a time in seconds, 0..%lld", i,
			                   (long long)TIME_MAX);
		else if (d && !json_is_null(d)) {
			data[i] = json_dumps(d, JSON_COMPACT | JSON_ENCODE_ANY);
			if (!data[i])
				ret = bw_error_set(err, BW_E_NOMEM, "storing events: out of memory");
			else if (strlen(data[i]) > SMALL_JSON_MAX)
				ret = bw_error_set(err, BW_E_LIMIT, "events[%zu].data: more than %d bytes", i,
				                   SMALL_JSON_MAX);
		}
	}
	sqlite3_stmt *bs, *es;
	bool own = false, began = false;
	if (!ret && !(ret = dstmt(st, D_BATCH_INSERT, &bs, err)) && !(ret = dstmt(st, D_EVENT_INSERT, &es, err)) &&
	    !(ret = tx_begin(st, &own, err))) {
		began = true;
		if (!(ret = bw_store_sql_bind(st, bs, err, "tti", device_id, batch_id, now)))
			ret = bw_store_sql_run(st, bs, NULL, err, "storing an event batch");
	}
	bool dup = began && !ret && sqlite3_changes(bw_store_sql_db(st)) == 0;
	for (size_t i = 0; began && !dup && i < n && !ret; i++) {
		json_t *e = json_array_get(events, i);
		if (!(ret = bw_store_sql_bind(st, es, err, "tttiti", device_id, batch_id,
		                              json_string_value(json_object_get(e, "type")),
		                              (int64_t)json_integer_value(json_object_get(e, "at")), data[i], now)))
			ret = bw_store_sql_run(st, es, NULL, err, "storing an event");
	}
	if (began)
		ret = tx_end(st, own, ret, err);
	for (size_t i = 0; i < n; i++)
		free(data[i]);
	free(data);
	if (!ret && duplicate)
		*duplicate = dup;
	return ret;
}

/* SQL of the event query: bit 0 device, bit 1 type. Newest first by event time, then id; the
 * cursor (at, id) of before_id continues a page. Each shape has its own index (device_id, at),
 * (type, at) or (at), which also gives the order. */
static void events_sql(unsigned mask, char *buf, size_t size)
{
	snprintf(buf, size,
	         "SELECT " EVENT_COLS " FROM device_events INDEXED BY %s WHERE %s%sat >= ?3 AND at < ?4"
	         " AND (at, id) < (?5, ?6) ORDER BY at DESC, id DESC LIMIT ?7",
	         mask & 1   ? "device_events_device"
	         : mask & 2 ? "device_events_type"
	                    : "device_events_at",
	         mask & 1 ? "device_id = ?1 AND " : "", mask & 2 ? "type = ?2 AND " : "");
}

int bw_store_events_query(bw_store *st, const struct bw_event_query *q, json_t **out, bw_error *err)
{
	*out = NULL;
	CHECK_DEV(st);
	if (!q)
		return bw_error_set(err, BW_E_INVALID, "event query: missing");
	int ret;
	if ((q->device_id && (ret = bw_store_sql_check_id(q->device_id, "device id", err))) ||
	    (q->type && (ret = check_word(q->type, 64, true, "event type", err))))
		return ret;
	if (q->limit < 1 || q->limit > BW_STORE_LIST_MAX)
		return bw_error_set(err, BW_E_INVALID, "event query limit: must be 1..%d", BW_STORE_LIST_MAX);
	if (q->since < 0 || q->until < 0 || q->before_id < 0)
		return bw_error_set(err, BW_E_INVALID, "event query: since, until and before_id must not be negative");
	int64_t cur_at = INT64_MAX, cur_id = INT64_MAX;
	sqlite3_stmt *s;
	if (q->before_id > 0) {
		if ((ret = dstmt(st, D_EVENT_AT, &s, err)) || (ret = bw_store_sql_bind(st, s, err, "i", q->before_id)))
			return ret;
		int rc = sqlite3_step(s);
		if (rc == SQLITE_ROW) {
			cur_at = sqlite3_column_int64(s, 0);
			cur_id = q->before_id;
		} else if (rc == SQLITE_DONE) {
			ret = bw_error_set(err, BW_E_NOTFOUND, "before_id: no event %lld (purged?)",
			                   (long long)q->before_id);
		} else {
			ret = bw_store_sql_fail(st, rc, err, "reading an event");
		}
		bw_store_sql_end(s);
		if (ret)
			return ret;
	}
	unsigned mask = (q->device_id ? 1u : 0) | (q->type ? 2u : 0);
	char sql[512];
	events_sql(mask, sql, sizeof sql);
	if ((ret = bw_store_sql_stmt(st, D_EVQ_BASE + mask, sql, &s, err)))
		return ret;
	int rc = SQLITE_OK;
	if (q->device_id)
		rc = sqlite3_bind_text(s, 1, q->device_id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && q->type)
		rc = sqlite3_bind_text(s, 2, q->type, -1, SQLITE_STATIC);
	/* The cursor also bounds the index range, so a deep page does not step over the earlier ones. */
	int64_t upper = q->until ? q->until : INT64_MAX;
	if (cur_at < upper - 1)
		upper = cur_at + 1;
	int64_t nums[] = {q->since, upper, cur_at, cur_id, (int64_t)q->limit};
	for (int i = 0; i < 5 && rc == SQLITE_OK; i++)
		rc = sqlite3_bind_int64(s, 3 + i, nums[i]);
	if (rc != SQLITE_OK) {
		ret = bw_store_sql_fail(st, rc, err, "querying events: binding");
		bw_store_sql_end(s);
		return ret;
	}
	static const struct bw_col_map m[] = {
	    {"id", BW_COL_INT}, {"device_id", BW_COL_TEXT}, {"batch_id", BW_COL_TEXT},   {"type", BW_COL_TEXT},
	    {"at", BW_COL_INT}, {"data", BW_COL_JSON},      {"received_at", BW_COL_INT},
	};
	return bw_store_sql_list(st, s, m, sizeof m / sizeof m[0], out, err, "querying events");
}

/* Deletes in chunks (each its own transaction unless the caller has one open), so a large purge
 * does not hold the write lock for long. */
static int purge_chunks(bw_store *st, enum dstmt id, int64_t older_than, int64_t *count, bw_error *err)
{
	sqlite3_stmt *s;
	int ret = dstmt(st, id, &s, err);
	for (int n = PURGE_CHUNK; !ret && n >= PURGE_CHUNK;) {
		if ((ret = bw_store_sql_bind(st, s, err, "ii", older_than, (int64_t)PURGE_CHUNK - 1)) ||
		    (ret = bw_store_sql_run(st, s, NULL, err, "purging old events")))
			break;
		n = sqlite3_changes(bw_store_sql_db(st));
		if (count)
			*count += n;
	}
	return ret;
}

int bw_store_events_purge(bw_store *st, int64_t older_than, int64_t *purged, bw_error *err)
{
	if (purged)
		*purged = 0;
	CHECK_DEV(st);
	/* Batch ids are kept as long as events of the same age, so a retried batch is still known
	 * while its events could be. */
	int ret = purge_chunks(st, D_EVENT_PURGE, older_than, purged, err);
	if (!ret)
		ret = purge_chunks(st, D_BATCH_PURGE, older_than, NULL, err);
	if (!ret && purged && *purged)
		bw_log_debug("store", "purged %lld device event(s)", (long long)*purged);
	return ret;
}

/* ---- revoked certificates */

int bw_store_cert_revoke(bw_store *st, const char *serial, const char *device_id, const char *reason, int64_t now,
                         bw_error *err)
{
	CHECK_DEV(st);
	int ret;
	sqlite3_stmt *s;
	if ((ret = check_serial(serial, err)) ||
	    (device_id && (ret = bw_store_sql_check_id(device_id, "device id", err))) ||
	    (ret = bw_store_sql_check_name(reason, 0, REFUSAL_FIELD_MAX, true, "revocation reason", err)) ||
	    (ret = dstmt(st, D_CERT_REVOKE, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "ttti", serial, device_id, reason, now)))
		return ret;
	/* revoking again keeps the first record */
	return bw_store_sql_run(st, s, NULL, err, "revoking a certificate");
}

int bw_store_cert_revoked_scan(bw_store *st, void (*fn)(const char *serial, void *arg), void *arg, bw_error *err)
{
	CHECK_DEV(st);
	if (!fn)
		return bw_error_set(err, BW_E_INVALID, "revoked certificates: missing callback");
	sqlite3_stmt *s;
	int ret = dstmt(st, D_CERT_SCAN, &s, err);
	if (ret)
		return ret;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *serial = (const char *)sqlite3_column_text(s, 0);
		if (serial)
			fn(serial, arg);
	}
	if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "reading the revoked certificates");
	bw_store_sql_end(s);
	return ret;
}
