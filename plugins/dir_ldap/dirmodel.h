/* plugins/dir_ldap/dirmodel.h: the synced directory held in memory by dir_ldap: users and groups keyed by
 * their stable GUID (objectGUID or entryUUID), the nested group graph, the difference between two syncs and
 * the JSON form kept in the record store and shown by the API. Pure code (no LDAP, no host). */
#ifndef BW_DIRMODEL_H
#define BW_DIRMODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dl_user {
	char guid[37];
	char *dn, *login, *upn, *display_name, *mail, *manager; /* NULL when absent */
	bool disabled, locked;
	size_t *groups; /* indexes into the dir's groups: every group the user is in, nested ones included */
	size_t ngroups;
};

struct dl_group {
	char guid[37];
	char *dn, *name;
	char **members; /* member DNs as read (range retrieval included), at most the configured maximum */
	size_t nmembers;
	bool truncated; /* more members than max_members: the rest were not read */
	size_t *nested; /* indexes of member groups */
	size_t nnested;
	char *device_group; /* from group_map, or NULL */
};

/* One synced directory: immutable once built (shared read-only by the loop and a sync worker);
 * reference counted on the loop thread. Users and groups sorted by guid. */
struct dl_dir {
	int refs;
	struct dl_user *users;
	size_t nusers, users_cap;
	struct dl_group *groups;
	size_t ngroups, groups_cap;
};

struct dl_dir *dl_dir_new(void);
void dl_dir_unref(struct dl_dir *d);
void dl_user_clear(struct dl_user *u);
void dl_group_clear(struct dl_group *g);
/* Appends (moves) u / g into d; false when out of memory (u / g then still belong to the caller). */
bool dl_dir_add_user(struct dl_dir *d, struct dl_user *u);
bool dl_dir_add_group(struct dl_dir *d, struct dl_group *g);
/* Sorts by guid, drops duplicate guids (keeps the first), and computes the group graph: every user's
 * groups (transitively) and every group's nested groups. False when out of memory. */
bool dl_dir_finish(struct dl_dir *d);
const struct dl_user *dl_dir_user(const struct dl_dir *d, const char *guid);
const struct dl_group *dl_dir_group(const struct dl_dir *d, const char *guid);
/* Index of the first user / group whose guid is > after (0 for NULL). */
size_t dl_dir_users_after(const struct dl_dir *d, const char *after);
size_t dl_dir_groups_after(const struct dl_dir *d, const char *after);

/* Deep copies (for an incremental sync that keeps unchanged entries). */
bool dl_user_copy(struct dl_user *dst, const struct dl_user *src);
bool dl_group_copy(struct dl_group *dst, const struct dl_group *src);

/* True when the stored fields differ (the graph fields are derived and not compared). */
bool dl_user_differs(const struct dl_user *a, const struct dl_user *b);
bool dl_group_differs(const struct dl_group *a, const struct dl_group *b);

/* The record-store form (no derived fields) and back. from_json returns false for a malformed record. */
json_t *dl_user_to_record(const struct dl_user *u);
bool dl_user_from_record(const char *guid, json_t *rec, struct dl_user *u);
json_t *dl_group_to_record(const struct dl_group *g);
bool dl_group_from_record(const char *guid, json_t *rec, struct dl_group *g);

/* The API form: users with their group names, groups with member count and nested group names. */
json_t *dl_user_to_api(const struct dl_dir *d, const struct dl_user *u);
json_t *dl_group_to_api(const struct dl_dir *d, const struct dl_group *g);

/* A DN reduced for comparison: ASCII lower case, spaces after ',' / '+' and around '=' dropped. */
char *dl_dn_key(const char *dn);

#endif
