/* host/services/store_policies.h: the storage interface for groups and policies (issue "Policies
 * and groups", schema version 4): the group tree, the versioned policy documents of each group
 * (in their protected form: secrets only as verifiers or ciphertexts) and the per-device delivery
 * state. Implemented for SQLite in store_policies.c; same threading rules as store.h. */
#ifndef BW_STORE_POLICIES_H
#define BW_STORE_POLICIES_H

#include "store.h"

#define BW_GROUP_DEFAULT_ID 1 /* "default": the root, created by the migration */
#define BW_GROUP_NAME_MAX   128
#define BW_GROUP_DESC_MAX   1024

struct bw_group_row {
	int64_t id;
	int64_t parent_id; /* 0 for the root */
	int64_t created_at;
	int64_t policy_version; /* current document's number; 0 = none */
	char name[BW_GROUP_NAME_MAX + 1];
	char description[BW_GROUP_DESC_MAX + 1];
};

/* Every group, parents before children is NOT guaranteed (ordered by id). */
int bw_store_group_scan(bw_store *st, void (*fn)(const struct bw_group_row *g, void *arg), void *arg, bw_error *err);
/* BW_E_EXISTS for a taken name; the caller checks the name's syntax and that the parent exists. */
int bw_store_group_create(bw_store *st, const char *name, int64_t parent_id, const char *description, int64_t now,
                          int64_t *id_out, bw_error *err);
/* Changes what is given (NULL / -1 keep). A rename also renames the group in devices and
 * enrollment keys, in the same transaction. BW_E_EXISTS for a taken name. */
int bw_store_group_update(bw_store *st, int64_t id, const char *old_name, const char *new_name, int64_t parent_id,
                          const char *description, bw_error *err);
/* Deletes a group and its versions; its devices, enrollment keys and subgroups move to
 * (move_to_id, move_to_name) first, in the same transaction. */
int bw_store_group_delete(bw_store *st, int64_t id, const char *name, int64_t move_to_id, const char *move_to_name,
                          bw_error *err);

/* Active devices per group name ("" counted as "default"): {"name": count}. New reference. */
int bw_store_group_device_counts(bw_store *st, json_t **out, bw_error *err);

/* Appends version `version` of a group's document (JSON object text, stored form) and makes it
 * the group's current one. BW_E_EXISTS when that number is taken (a concurrent writer). */
int bw_store_policy_version_add(bw_store *st, int64_t group_id, int64_t version, const char *document,
                                const char *author, const char *summary, int64_t now, bw_error *err);
/* {"version","author","at","summary","document"(parsed)}; BW_E_NOTFOUND. New reference. */
int bw_store_policy_version_get(bw_store *st, int64_t group_id, int64_t version, json_t **out, bw_error *err);
/* Versions newest first, without documents: [{"version","author","at","summary"}], at most
 * `limit` (1..1000) older than `before` (0 = newest). New reference. */
int bw_store_policy_history(bw_store *st, int64_t group_id, int64_t before, size_t limit, json_t **out, bw_error *err);

/* ---- per-device delivery state */
struct bw_policy_state_row {
	char device_id[37];
	char assigned_version[33];
	char applied_version[33];
	int64_t assigned_at, resent_at, applied_at;
	bool out_of_sync;
};
int bw_store_policy_state_put(bw_store *st, const struct bw_policy_state_row *r, bw_error *err);
int bw_store_policy_state_scan(bw_store *st, void (*fn)(const struct bw_policy_state_row *r, void *arg), void *arg,
                               bw_error *err);

#endif
