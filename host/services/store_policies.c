/* host/services/store_policies.c: the SQLite implementation of store_policies.h (schema version 4):
 * groups, versioned policy documents and per-device policy delivery state. Parameterised SQL only;
 * statements are cached in the store handle's slots from P_SLOT_BASE (store_devices.c uses the
 * slots below it). Changes that touch several tables run in one transaction. */
#include "store_policies.h"

#include "store_sqlite_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA_POLICIES 4
#define P_SLOT_BASE     120
#define DOC_MAX         (4 * 1024 * 1024)
#define AUTHOR_MAX      256
#define SUMMARY_MAX     1024
#define VERSION_TEXT    32

enum pstmt {
	P_BEGIN,
	P_COMMIT,
	P_ROLLBACK,
	P_SAVEPOINT,
	P_RELEASE,
	P_ROLLBACK_TO,
	P_GROUP_SCAN,
	P_GROUP_INSERT,
	P_GROUP_RENAME,
	P_GROUP_PARENT,
	P_GROUP_DESC,
	P_DEVICES_REGROUP,
	P_KEYS_REGROUP,
	P_GROUP_REPARENT,
	P_GROUP_DELETE,
	P_VERSIONS_DELETE,
	P_VERSION_INSERT,
	P_GROUP_SET_VERSION,
	P_VERSION_GET,
	P_HISTORY,
	P_STATE_PUT,
	P_STATE_SCAN,
	P_GROUP_COUNTS,
	P__COUNT
};
_Static_assert(P_SLOT_BASE + P__COUNT <= BW_STORE_EXT_STMTS, "store_sqlite_internal.h: raise BW_STORE_EXT_STMTS");

static const char *const psql[P__COUNT] = {
    [P_BEGIN] = "BEGIN IMMEDIATE",
    [P_COMMIT] = "COMMIT",
    [P_ROLLBACK] = "ROLLBACK",
    [P_SAVEPOINT] = "SAVEPOINT bw_store_policies",
    [P_RELEASE] = "RELEASE bw_store_policies",
    [P_ROLLBACK_TO] = "ROLLBACK TO bw_store_policies",
    [P_GROUP_SCAN] = "SELECT id, coalesce(parent_id, 0), created_at, policy_version, name, description"
                     " FROM groups ORDER BY id",
    [P_GROUP_INSERT] = "INSERT INTO groups (name, parent_id, description, created_at) VALUES (?1, ?2, ?3, ?4)",
    [P_GROUP_RENAME] = "UPDATE groups SET name = ?2 WHERE id = ?1",
    [P_GROUP_PARENT] = "UPDATE groups SET parent_id = ?2 WHERE id = ?1 AND id <> 1",
    [P_GROUP_DESC] = "UPDATE groups SET description = ?2 WHERE id = ?1",
    [P_DEVICES_REGROUP] = "UPDATE devices SET group_name = ?2 WHERE group_name = ?1",
    [P_KEYS_REGROUP] = "UPDATE enrollment_keys SET group_name = ?2 WHERE group_name = ?1",
    [P_GROUP_REPARENT] = "UPDATE groups SET parent_id = ?2 WHERE parent_id = ?1",
    [P_GROUP_DELETE] = "DELETE FROM groups WHERE id = ?1 AND id <> 1",
    [P_VERSIONS_DELETE] = "DELETE FROM policy_versions WHERE group_id = ?1",
    [P_VERSION_INSERT] = "INSERT INTO policy_versions (group_id, version, document, author, created_at, summary)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [P_GROUP_SET_VERSION] = "UPDATE groups SET policy_version = ?2 WHERE id = ?1",
    [P_VERSION_GET] = "SELECT version, author, created_at, summary, document FROM policy_versions"
                      " WHERE group_id = ?1 AND version = ?2",
    [P_HISTORY] = "SELECT version, author, created_at, summary FROM policy_versions"
                  " WHERE group_id = ?1 AND (?2 = 0 OR version < ?2) ORDER BY version DESC LIMIT ?3",
    [P_STATE_PUT] = "INSERT INTO device_policy_state (device_id, assigned_version, assigned_at, resent_at,"
                    " applied_version, applied_at, out_of_sync) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    " ON CONFLICT (device_id) DO UPDATE SET assigned_version = ?2, assigned_at = ?3,"
                    " resent_at = ?4, applied_version = ?5, applied_at = ?6, out_of_sync = ?7",
    [P_STATE_SCAN] = "SELECT s.device_id, s.assigned_version, s.assigned_at, s.resent_at, s.applied_version,"
                     " s.applied_at, s.out_of_sync FROM device_policy_state s",
    [P_GROUP_COUNTS] = "SELECT group_name, count(*) FROM devices WHERE status = 'active' GROUP BY group_name",
};

static int pstmt(bw_store *st, enum pstmt id, sqlite3_stmt **out, bw_error *err)
{
	return bw_store_sql_stmt(st, P_SLOT_BASE + (unsigned)id, psql[id], out, err);
}

#define CHECK_POL(st)                                                                                                  \
	do {                                                                                                           \
		if (!bw_store_sql_db(st))                                                                              \
			return bw_error_set(err, BW_E_INVALID, "store: no open database");                             \
		if (bw_store_schema_version(st) < SCHEMA_POLICIES)                                                     \
			return bw_error_set(err, BW_E_STATE, "store: schema %d has no policy tables (needs %d)",       \
			                    bw_store_schema_version(st), SCHEMA_POLICIES);                             \
	} while (0)

/* ---- transactions: BEGIN IMMEDIATE, or a savepoint inside the caller's transaction */

static int exec_stmt(bw_store *st, enum pstmt id, bw_error *err, const char *what)
{
	sqlite3_stmt *s;
	int ret = pstmt(st, id, &s, err);
	return ret ? ret : bw_store_sql_run(st, s, NULL, err, what);
}

static int tx_begin(bw_store *st, bool *own, bw_error *err)
{
	*own = sqlite3_get_autocommit(bw_store_sql_db(st)) != 0;
	return exec_stmt(st, *own ? P_BEGIN : P_SAVEPOINT, err, "starting a transaction");
}

static int tx_end(bw_store *st, bool own, int ret, bw_error *err)
{
	if (!ret)
		ret = exec_stmt(st, own ? P_COMMIT : P_RELEASE, err, "committing");
	if (ret) {
		if (own) {
			if (!sqlite3_get_autocommit(bw_store_sql_db(st)))
				exec_stmt(st, P_ROLLBACK, NULL, "rolling back");
		} else {
			exec_stmt(st, P_ROLLBACK_TO, NULL, "rolling back");
			exec_stmt(st, P_RELEASE, NULL, "rolling back");
		}
	}
	return ret;
}

/* Runs one bound statement; a UNIQUE violation becomes BW_E_EXISTS naming `what`. */
static int run(bw_store *st, sqlite3_stmt *s, bw_error *err, const char *what)
{
	int rc = SQLITE_OK;
	int ret = bw_store_sql_run(st, s, &rc, err, what);
	if (ret && (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY))
		return bw_error_set(err, BW_E_EXISTS, "%s: already exists", what);
	if (ret && rc == SQLITE_CONSTRAINT_FOREIGNKEY)
		return bw_error_set(err, BW_E_NOTFOUND, "%s: refers to a group or device that does not exist", what);
	return ret;
}

static int run_tt(bw_store *st, enum pstmt id, const char *a, const char *b, bw_error *err, const char *what)
{
	sqlite3_stmt *s;
	int ret = pstmt(st, id, &s, err);
	if (!ret)
		ret = bw_store_sql_bind(st, s, err, "tt", a, b);
	return ret ? ret : run(st, s, err, what);
}

static int run_it(bw_store *st, enum pstmt id, int64_t a, const char *b, bw_error *err, const char *what)
{
	sqlite3_stmt *s;
	int ret = pstmt(st, id, &s, err);
	if (!ret)
		ret = bw_store_sql_bind(st, s, err, "it", a, b);
	return ret ? ret : run(st, s, err, what);
}

static int run_i(bw_store *st, enum pstmt id, int64_t a, bw_error *err, const char *what)
{
	sqlite3_stmt *s;
	int ret = pstmt(st, id, &s, err);
	if (!ret)
		ret = bw_store_sql_bind(st, s, err, "i", a);
	return ret ? ret : run(st, s, err, what);
}

static int run_ii(bw_store *st, enum pstmt id, int64_t a, int64_t b, bw_error *err, const char *what)
{
	sqlite3_stmt *s;
	int ret = pstmt(st, id, &s, err);
	if (!ret)
		ret = bw_store_sql_bind(st, s, err, "ii", a, b);
	return ret ? ret : run(st, s, err, what);
}

/* ---- groups */

static int check_group_name(const char *name, bw_error *err)
{
	return bw_store_sql_check_name(name, 1, BW_GROUP_NAME_MAX, true, "group name", err);
}

int bw_store_group_scan(bw_store *st, void (*fn)(const struct bw_group_row *g, void *arg), void *arg, bw_error *err)
{
	CHECK_POL(st);
	sqlite3_stmt *s;
	int ret = pstmt(st, P_GROUP_SCAN, &s, err);
	if (ret)
		return ret;
	struct bw_group_row *g = malloc(sizeof *g);
	if (!g) {
		bw_store_sql_end(s);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		memset(g, 0, sizeof *g);
		g->id = sqlite3_column_int64(s, 0);
		g->parent_id = sqlite3_column_int64(s, 1);
		g->created_at = sqlite3_column_int64(s, 2);
		g->policy_version = sqlite3_column_int64(s, 3);
		bw_store_sql_col_copy(s, 4, g->name, sizeof g->name);
		bw_store_sql_col_copy(s, 5, g->description, sizeof g->description);
		fn(g, arg);
	}
	if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "reading the groups");
	bw_store_sql_end(s);
	free(g);
	return ret;
}

int bw_store_group_create(bw_store *st, const char *name, int64_t parent_id, const char *description, int64_t now,
                          int64_t *id_out, bw_error *err)
{
	CHECK_POL(st);
	int ret = check_group_name(name, err);
	if (!ret)
		ret = bw_store_sql_check_name(description ? description : "", 0, BW_GROUP_DESC_MAX, false,
		                              "group description", err);
	if (ret)
		return ret;
	if (parent_id <= 0)
		return bw_error_set(err, BW_E_INVALID, "group %s: needs a parent group", name);
	sqlite3_stmt *s;
	if ((ret = pstmt(st, P_GROUP_INSERT, &s, err)) ||
	    (ret = bw_store_sql_bind(st, s, err, "titi", name, parent_id, description ? description : "", now)))
		return ret;
	ret = run(st, s, err, "creating the group");
	if (ret == BW_E_EXISTS)
		return bw_error_set(err, BW_E_EXISTS, "a group named %s already exists", name);
	if (!ret && id_out)
		*id_out = sqlite3_last_insert_rowid(bw_store_sql_db(st));
	return ret;
}

int bw_store_group_update(bw_store *st, int64_t id, const char *old_name, const char *new_name, int64_t parent_id,
                          const char *description, bw_error *err)
{
	CHECK_POL(st);
	int ret = BW_OK;
	if (new_name && (ret = check_group_name(new_name, err)))
		return ret;
	if (description &&
	    (ret = bw_store_sql_check_name(description, 0, BW_GROUP_DESC_MAX, false, "group description", err)))
		return ret;
	if (new_name && (!old_name || id == BW_GROUP_DEFAULT_ID))
		return bw_error_set(err, BW_E_INVALID, "the default group cannot be renamed");
	bool own;
	if ((ret = tx_begin(st, &own, err)))
		return ret;
	if (new_name && strcmp(new_name, old_name) != 0) {
		ret = run_it(st, P_GROUP_RENAME, id, new_name, err, "renaming the group");
		if (ret == BW_E_EXISTS)
			ret = bw_error_set(err, BW_E_EXISTS, "a group named %s already exists", new_name);
		if (!ret)
			ret = run_tt(st, P_DEVICES_REGROUP, old_name, new_name, err, "renaming the group of devices");
		if (!ret)
			ret = run_tt(st, P_KEYS_REGROUP, old_name, new_name, err, "renaming the group of keys");
		/* "default" is also spelled "" by devices; only the root is called that, and it is never renamed */
	}
	if (!ret && parent_id > 0)
		ret = run_ii(st, P_GROUP_PARENT, id, parent_id, err, "moving the group");
	if (!ret && description)
		ret = run_it(st, P_GROUP_DESC, id, description, err, "describing the group");
	return tx_end(st, own, ret, err);
}

int bw_store_group_delete(bw_store *st, int64_t id, const char *name, int64_t move_to_id, const char *move_to_name,
                          bw_error *err)
{
	CHECK_POL(st);
	if (id == BW_GROUP_DEFAULT_ID)
		return bw_error_set(err, BW_E_INVALID, "the default group cannot be deleted");
	if (!name || !move_to_name || move_to_id <= 0 || move_to_id == id)
		return bw_error_set(err, BW_E_INVALID, "deleting group %s: needs another group to move its members to",
		                    name ? name : "?");
	bool own;
	int ret = tx_begin(st, &own, err);
	if (ret)
		return ret;
	/* The root is stored for devices both as "default" and as "": either way it stays the root. */
	ret = run_tt(st, P_DEVICES_REGROUP, name, move_to_name, err, "moving the devices of the group");
	if (!ret)
		ret = run_tt(st, P_KEYS_REGROUP, name, move_to_name, err, "moving the enrollment keys of the group");
	if (!ret)
		ret = run_ii(st, P_GROUP_REPARENT, id, move_to_id, err, "moving the subgroups of the group");
	if (!ret)
		ret = run_i(st, P_VERSIONS_DELETE, id, err, "deleting the policy versions");
	if (!ret) {
		sqlite3_stmt *s;
		if (!(ret = pstmt(st, P_GROUP_DELETE, &s, err)) && !(ret = bw_store_sql_bind(st, s, err, "i", id)))
			ret = run(st, s, err, "deleting the group");
		if (!ret && sqlite3_changes(bw_store_sql_db(st)) == 0)
			ret = bw_error_set(err, BW_E_NOTFOUND, "no group %s", name);
	}
	return tx_end(st, own, ret, err);
}

/* ---- versions */

int bw_store_policy_version_add(bw_store *st, int64_t group_id, int64_t version, const char *document,
                                const char *author, const char *summary, int64_t now, bw_error *err)
{
	CHECK_POL(st);
	if (version <= 0)
		return bw_error_set(err, BW_E_INVALID, "policy version must be positive");
	if (!document || strlen(document) > DOC_MAX || !bw_store_sql_utf8_valid(document, strlen(document)))
		return bw_error_set(err, BW_E_INVALID, "policy document: missing, not UTF-8 or larger than %d bytes",
		                    DOC_MAX);
	char *a = bw_store_sql_clean_text(author ? author : "", AUTHOR_MAX);
	char *sm = bw_store_sql_clean_text(summary ? summary : "", SUMMARY_MAX);
	if (!a || !sm) {
		free(a);
		free(sm);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	bool own;
	int ret = tx_begin(st, &own, err);
	if (!ret) {
		sqlite3_stmt *s;
		if (!(ret = pstmt(st, P_VERSION_INSERT, &s, err)) &&
		    !(ret = bw_store_sql_bind(st, s, err, "iittit", group_id, version, document, a, now, sm)))
			ret = run(st, s, err, "storing the policy version");
		if (ret == BW_E_EXISTS)
			ret = bw_error_set(err, BW_E_EXISTS, "policy version %lld of this group already exists",
			                   (long long)version);
		if (!ret)
			ret = run_ii(st, P_GROUP_SET_VERSION, group_id, version, err, "making the version current");
		ret = tx_end(st, own, ret, err);
	}
	free(a);
	free(sm);
	return ret;
}

int bw_store_policy_version_get(bw_store *st, int64_t group_id, int64_t version, json_t **out, bw_error *err)
{
	CHECK_POL(st);
	*out = NULL;
	sqlite3_stmt *s;
	int ret = pstmt(st, P_VERSION_GET, &s, err);
	if (ret || (ret = bw_store_sql_bind(st, s, err, "ii", group_id, version)))
		return ret;
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(s, 4);
		json_error_t jerr;
		json_t *doc = text ? json_loads(text, 0, &jerr) : NULL;
		if (!json_is_object(doc)) {
			json_decref(doc);
			ret =
			    bw_error_set(err, BW_E_DB, "policy version %lld: the stored document is not a JSON object",
			                 (long long)version);
		} else {
			*out = json_pack("{s:I, s:o, s:I, s:o, s:o}", "version", (json_int_t)sqlite3_column_int64(s, 0),
			                 "author", bw_store_sql_col_json(s, 1), "at",
			                 (json_int_t)sqlite3_column_int64(s, 2), "summary", bw_store_sql_col_json(s, 3),
			                 "document", doc);
			if (!*out)
				ret = bw_error_set(err, BW_E_NOMEM, "out of memory");
		}
	} else if (rc == SQLITE_DONE) {
		ret = bw_error_set(err, BW_E_NOTFOUND, "no policy version %lld", (long long)version);
	} else {
		ret = bw_store_sql_fail(st, rc, err, "reading a policy version");
	}
	bw_store_sql_end(s);
	return ret;
}

int bw_store_policy_history(bw_store *st, int64_t group_id, int64_t before, size_t limit, json_t **out, bw_error *err)
{
	CHECK_POL(st);
	*out = NULL;
	if (limit == 0 || limit > 1000)
		return bw_error_set(err, BW_E_INVALID, "limit must be 1 to 1000");
	sqlite3_stmt *s;
	int ret = pstmt(st, P_HISTORY, &s, err);
	if (ret || (ret = bw_store_sql_bind(st, s, err, "iii", group_id, before, (int64_t)limit)))
		return ret;
	static const struct bw_col_map map[] = {
	    {"version", BW_COL_INT}, {"author", BW_COL_TEXT}, {"at", BW_COL_INT}, {"summary", BW_COL_TEXT}};
	return bw_store_sql_list(st, s, map, 4, out, err, "reading the policy history");
}

/* ---- delivery state */

int bw_store_policy_state_put(bw_store *st, const struct bw_policy_state_row *r, bw_error *err)
{
	CHECK_POL(st);
	int ret = bw_store_sql_check_id(r->device_id, "device id", err);
	if (ret)
		return ret;
	sqlite3_stmt *s;
	if ((ret = pstmt(st, P_STATE_PUT, &s, err)) ||
	    (ret =
	         bw_store_sql_bind(st, s, err, "ttiitii", r->device_id, r->assigned_version, r->assigned_at,
	                           r->resent_at, r->applied_version, r->applied_at, (int64_t)(r->out_of_sync ? 1 : 0))))
		return ret;
	ret = run(st, s, err, "storing the policy state of a device");
	return ret == BW_E_NOTFOUND ? bw_error_set(err, BW_E_NOTFOUND, "no device %s", r->device_id) : ret;
}

int bw_store_policy_state_scan(bw_store *st, void (*fn)(const struct bw_policy_state_row *r, void *arg), void *arg,
                               bw_error *err)
{
	CHECK_POL(st);
	sqlite3_stmt *s;
	int ret = pstmt(st, P_STATE_SCAN, &s, err);
	if (ret)
		return ret;
	struct bw_policy_state_row r;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		memset(&r, 0, sizeof r);
		bw_store_sql_col_copy(s, 0, r.device_id, sizeof r.device_id);
		bw_store_sql_col_copy(s, 1, r.assigned_version, sizeof r.assigned_version);
		r.assigned_at = sqlite3_column_int64(s, 2);
		r.resent_at = sqlite3_column_int64(s, 3);
		bw_store_sql_col_copy(s, 4, r.applied_version, sizeof r.applied_version);
		r.applied_at = sqlite3_column_int64(s, 5);
		r.out_of_sync = sqlite3_column_int(s, 6) != 0;
		fn(&r, arg);
	}
	if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "reading the policy states");
	bw_store_sql_end(s);
	return ret;
}

int bw_store_group_device_counts(bw_store *st, json_t **out, bw_error *err)
{
	CHECK_POL(st);
	*out = NULL;
	sqlite3_stmt *s;
	int ret = pstmt(st, P_GROUP_COUNTS, &s, err);
	if (ret)
		return ret;
	json_t *o = json_object();
	int rc = SQLITE_NOMEM;
	while (o && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *g = (const char *)sqlite3_column_text(s, 0);
		const char *name = g && g[0] ? g : "default"; /* "" is how devices spell the default group */
		json_int_t n = (json_int_t)sqlite3_column_int64(s, 1) + json_integer_value(json_object_get(o, name));
		json_object_set_new(o, name, json_integer(n));
	}
	if (rc == SQLITE_NOMEM)
		ret = bw_error_set(err, BW_E_NOMEM, "out of memory");
	else if (rc != SQLITE_DONE)
		ret = bw_store_sql_fail(st, rc, err, "counting the devices of groups");
	bw_store_sql_end(s);
	if (ret)
		json_decref(o);
	else
		*out = o;
	return ret;
}
