/* host/services/store_sqlite_internal.h: what the other SQLite store files (store_devices.c) and
 * the store's unit tests need from store_sqlite.c: the connection, a statement cache with slots
 * owned by the caller, and the binding, stepping, column, row-to-JSON and input-check helpers. Not a public
 * interface: nothing outside host/services/store_*.c and tests/unit/test_store*.c includes it. */
#ifndef BW_STORE_SQLITE_INTERNAL_H
#define BW_STORE_SQLITE_INTERNAL_H

#include "store.h"

#include <sqlite3.h>

/* Statement slots available to other files (store_devices.c uses 0..its own count - 1). */
#define BW_STORE_EXT_STMTS 160

/* The connection of an open store (NULL when st is NULL or closed). */
sqlite3 *bw_store_sql_db(bw_store *st);
const char *bw_store_sql_path(bw_store *st);

/* The cached statement of `slot`, prepared (persistent) from `sql` on first use and kept until
 * bw_store_close. A slot always holds the same SQL. */
int bw_store_sql_stmt(bw_store *st, unsigned slot, const char *sql, sqlite3_stmt **out, bw_error *err);
/* Ends one use of a statement: reset and clear its bindings. */
void bw_store_sql_end(sqlite3_stmt *s);
/* Binds parameters 1..n from `types`: 't' text (NULL binds SQL NULL; SQLITE_STATIC, so the
 * string must live until bw_store_sql_end), 'i' int64_t. Ends the statement on failure. */
int bw_store_sql_bind(bw_store *st, sqlite3_stmt *s, bw_error *err, const char *types, ...);
/* Steps a statement that returns no rows, then ends it; *sqlite_rc (optional) gets the result. */
int bw_store_sql_run(bw_store *st, sqlite3_stmt *s, int *sqlite_rc, bw_error *err, const char *what);
/* "<what>: <SQLite message> (SQLite code N)", mapped to BW_E_DB, BW_E_BUSY or BW_E_NOMEM. */
int bw_store_sql_fail(bw_store *st, int rc, bw_error *err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Columns: text into a fixed buffer (truncated), text as a JSON string (null for NULL). */
void bw_store_sql_col_copy(sqlite3_stmt *s, int i, char *dst, size_t size);
json_t *bw_store_sql_col_json(sqlite3_stmt *s, int i);

/* Sets o[key] = v (stolen); false when v is NULL or the set fails. */
bool bw_store_sql_jset(json_t *o, const char *key, json_t *v);
/* A stored JSON text parsed, null for NULL; text that does not parse (a file edited by hand) is
 * returned as a string rather than failing a listing. */
json_t *bw_store_sql_col_parsed(sqlite3_stmt *s, int i);
/* Rows to JSON objects by a column map, one entry per result column in order (NULL key: skip). */
enum bw_col_kind { BW_COL_TEXT, BW_COL_INT, BW_COL_BOOL, BW_COL_JSON };
struct bw_col_map {
	const char *key;
	enum bw_col_kind kind;
};
json_t *bw_store_sql_row_json(sqlite3_stmt *s, const struct bw_col_map *m, size_t n);
/* Steps a bound statement to the end, one object per row, into a new array; ends the statement.
 * Errors say "<what>: ...". */
int bw_store_sql_list(bw_store *st, sqlite3_stmt *s, const struct bw_col_map *m, size_t n, json_t **out, bw_error *err,
                      const char *what);

/* Input checks with BW_E_INVALID messages naming `field`: a UTF-8 string of min..max bytes
 * (human: no control characters; NULL passes when min is 0), and an object id (1..36 of
 * [A-Za-z0-9._-]). */
int bw_store_sql_check_name(const char *s, size_t min, size_t max, bool human, const char *field, bw_error *err);
int bw_store_sql_check_id(const char *id, const char *field, bw_error *err);
bool bw_store_sql_utf8_valid(const char *s, size_t n);
/* A copy with invalid UTF-8 bytes as '?', cut at a character boundary to at most max bytes
 * (for logged text that must never be refused, like audit fields). NULL in, NULL out. */
char *bw_store_sql_clean_text(const char *in, size_t max);

#endif
