/* host/services/store.h: the storage interface. All SQL of the host lives behind it, in
 * store_sqlite.c (SQLite, WAL, prepared statements only), so that another backend (PostgreSQL,
 * for several hosts sharing one database) can implement the same functions later.
 *
 * Threads: a bw_store handle is used from one thread at a time (the loop thread). Backups open
 * their own connection and may run on a worker thread. Times are Unix seconds. */
#ifndef BW_STORE_H
#define BW_STORE_H

#include <bulwark/errors.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bw_store bw_store;

/* The newest schema version this build knows. */
int bw_store_schema_latest(void);

/* Opens (creating when absent) the database at `path`, sets WAL, foreign keys and busy
 * timeout, and migrates it to the latest schema in one transaction per step, logging each
 * step. A database whose version is newer than this build's is refused (BW_E_DB, message
 * names both versions); the file is left untouched. */
bw_store *bw_store_open(const char *path, bw_error *err);
void bw_store_close(bw_store *st);
int bw_store_schema_version(bw_store *st);
/* A cheap query proving the database answers (for /healthz). */
int bw_store_ping(bw_store *st, bw_error *err);

/* Online backup (sqlite3_backup_*) of the database at `db_path` into `dest_path` (created
 * with mode 0600, replaced atomically), using its own connections: safe while the server
 * writes. May run on any thread. */
int bw_store_backup(const char *db_path, const char *dest_path, bw_error *err);

/* Additions (store_sqlite.c). */

/* Like bw_store_open, but migrates at most up to `target_version` (0..latest): for tests and
 * for making the schema fixtures in tests/fixtures/db/. A newer database is not downgraded. */
bw_store *bw_store_open_version(const char *path, int target_version, bw_error *err);

/* Backup progress: called between steps with the pages still to copy and the total; return
 * false to cancel (the backup then fails with BW_E_CANCELLED and leaves dest_path untouched). */
typedef bool (*bw_store_backup_progress_fn)(int remaining, int total, void *arg);
/* bw_store_backup with a progress callback (may be NULL) and `step_pages` pages per step
 * (0 = 1024). The whole copy reads one snapshot of the source, so it finishes even while
 * other connections keep writing, and the backup is consistent as of its start. */
int bw_store_backup_ex(const char *db_path, const char *dest_path, int step_pages, bw_store_backup_progress_fn progress,
                       void *arg, bw_error *err);

/* WAL checkpoints. By default SQLite checkpoints inside whichever write fills the WAL, with an
 * fdatasync on the caller's thread. bulwarkd turns that off for its loop-thread handle and
 * calls bw_store_checkpoint from a work-queue thread instead (PASSIVE: never waits for
 * readers or writers). The checkpoint connection is private to the process, opened on first
 * use, and closed by bw_store_checkpoint_close. */
int bw_store_set_autocheckpoint(bw_store *st, bool automatic, bw_error *err);
int bw_store_checkpoint(const char *db_path, int *wal_frames, int *checkpointed, bw_error *err);
void bw_store_checkpoint_close(void);

/* ---- administrators */
struct bw_admin {
	char id[37];
	char name[129];
	char role[32]; /* "administrator" or "readonly" */
	int64_t created_at;
	bool disabled;
	char *password_hash; /* owned; freed by bw_admin_clear */
};
void bw_admin_clear(struct bw_admin *a);

int bw_store_admin_create(bw_store *st, const char *id, const char *name, const char *password_hash, const char *role,
                          bw_error *err); /* BW_E_EXISTS when the name is taken */
int bw_store_admin_get(bw_store *st, const char *name, struct bw_admin *out, bw_error *err); /* BW_E_NOTFOUND */
/* Array of {"name","role","created_at","disabled"}; new reference. */
int bw_store_admin_list(bw_store *st, json_t **out, bw_error *err);
int bw_store_admin_delete(bw_store *st, const char *name, bw_error *err); /* also deletes its tokens */
int bw_store_admin_count(bw_store *st, const char *role /* NULL = all */, int64_t *count, bw_error *err);
/* Additions: change one administrator (BW_E_NOTFOUND when there is no such name). The count
 * above includes disabled administrators. */
int bw_store_admin_set_disabled(bw_store *st, const char *name, bool disabled, bw_error *err);
int bw_store_admin_set_role(bw_store *st, const char *name, const char *role, bw_error *err);
int bw_store_admin_set_password(bw_store *st, const char *name, const char *password_hash, bw_error *err);

/* ---- tokens (sessions and API tokens): only SHA-256 hashes of tokens are stored */
struct bw_token_info {
	char id[37];
	char kind[16]; /* "session" or "api" */
	char name[129];
	char admin_name[129];
	char role[32];      /* the token's role (an API token may have less than its owner) */
	int64_t expires_at; /* 0 = never */
};
int bw_store_token_create(bw_store *st, const char *id, const char *admin_name, const char *kind, const char *name,
                          const char *role, const char *token_hash, int64_t created_at, int64_t expires_at,
                          bw_error *err);
/* Finds a live token (not expired at `now`, owner not disabled) by hash; BW_E_NOTFOUND
 * otherwise. The role returned is the lower of the token's and its owner's current role. */
int bw_store_token_find(bw_store *st, const char *token_hash, int64_t now, struct bw_token_info *out, bw_error *err);
/* Marks last use (coalesced by the caller; cheap). */
int bw_store_token_touch(bw_store *st, const char *id, int64_t now, bw_error *err);
/* API tokens, array of {"id","name","owner","role","created_at","expires_at","last_used_at"}. */
int bw_store_token_list(bw_store *st, const char *kind, json_t **out, bw_error *err);
int bw_store_token_delete(bw_store *st, const char *id, bw_error *err); /* BW_E_NOTFOUND */
int bw_store_token_delete_hash(bw_store *st, const char *token_hash, bw_error *err);
int bw_store_token_purge_expired(bw_store *st, int64_t now, bw_error *err);

/* ---- audit log */
int bw_store_audit_add(bw_store *st, int64_t at, const char *actor, const char *address, const char *action,
                       const char *target, const char *outcome, const char *detail, bw_error *err);
/* Newest first; entries with id < before_id when before_id > 0. Array of
 * {"id","at","actor","address","action","target","outcome","detail"}. */
int bw_store_audit_list(bw_store *st, int64_t before_id, size_t limit, json_t **out, bw_error *err);

/* ---- plugin records (the namespaced store of the host API) */
/* Plugin, collection and key are 1..BW_STORE_NAME_MAX bytes of UTF-8; a value is JSON text of
 * at most BW_STORE_RECORD_VALUE_MAX bytes (BW_E_LIMIT beyond); a list takes 1..1000 entries.
 * Token and record deletes return BW_E_NOTFOUND when nothing matched. */
#define BW_STORE_NAME_MAX         128
#define BW_STORE_RECORD_VALUE_MAX (1024 * 1024)
#define BW_STORE_LIST_MAX         1000
int bw_store_record_put(bw_store *st, const char *plugin, const char *collection, const char *key,
                        const char *json_text, int64_t now, bw_error *err);
int bw_store_record_get(bw_store *st, const char *plugin, const char *collection, const char *key,
                        char **json_text /* caller frees */, bw_error *err); /* BW_E_NOTFOUND */
int bw_store_record_delete(bw_store *st, const char *plugin, const char *collection, const char *key,
                           bw_error *err); /* BW_E_NOTFOUND */
/* Array of {"key","value"} (value parsed JSON) in key order after after_key. */
int bw_store_record_list(bw_store *st, const char *plugin, const char *collection, const char *after_key, size_t limit,
                         json_t **out, bw_error *err);

#endif
