/* plugins/dir_ldap/ldapc.h: the LDAP side of dir_ldap (OpenLDAP libldap): TLS connections with a small pool,
 * user authentication with group resolution, the sync fetch (paged results, range retrieval, incremental by
 * uSNChanged or modifyTimestamp) and the connection test. Everything here blocks and runs on the host's work
 * queue only; nothing calls the host table. */
#ifndef BW_LDAPC_H
#define BW_LDAPC_H

#include "dirmodel.h"
#include "dlutil.h"

#include <bulwark/errors.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum dl_schema { DL_SCHEMA_AD = 1, DL_SCHEMA_RFC2307BIS = 2 };

/* The validated settings, copied (immutable while the plugin runs, read by workers). */
struct dl_cfg {
	char **urls;
	size_t nurls;
	bool starttls, insecure;
	char *ca_file;
	char *bind_dn, *bind_password;
	char *base_dn, *user_filter, *group_filter; /* filters always in parentheses */
	int schema;
	char *domain, *upn_suffix;
	char **admin_groups, **readonly_groups;
	size_t nadmin_groups, nreadonly_groups;
	struct bw_dl_group_map *group_map;
	size_t ngroup_map;
	int64_t connect_timeout_ms, timeout_ms;
	size_t page_size, pool_size, max_users, max_groups, max_members;
};

struct dl_pool;

/* Idle connections kept for reuse (at most cfg->pool_size). `cfg` must outlive the pool. */
struct dl_pool *dl_pool_new(const struct dl_cfg *cfg);
void dl_pool_free(struct dl_pool *p);

/* The outcome of one authentication: rc and message as bulwark/directory.h describes; `user` a new
 * reference when rc == BW_OK. */
struct dl_auth_result {
	int rc;
	char message[512];
	json_t *user;
};

/* Worker thread. Finds the user with the service account, binds as the user, resolves the groups (nested
 * ones included) and the admin role / device group. Never logs or copies the password. */
void dl_authenticate(struct dl_pool *p, const char *login, const char *password, struct dl_auth_result *out);

/* Progress of a running sync, read by the loop thread (under mu), written by the worker. */
struct dl_progress {
	pthread_mutex_t mu;
	char phase[32];
	size_t users, groups;
	atomic_bool cancel; /* set by the loop when the plugin stops: the worker gives up between pages */
};

struct dl_change {
	char kind[8]; /* "user" / "group" */
	char guid[37];
	char *name;
	const char *change; /* "added", "updated", "removed" */
};

#define DL_CHANGES_MAX 200

/* What a sync produced: the new directory, the differences to the old one and the next watermark. */
struct dl_sync_result {
	int rc;
	char error[512];
	bool full;          /* the mode actually used (an incremental sync may turn into a full one) */
	struct dl_dir *dir; /* new reference, NULL on failure */
	char watermark[32]; /* highestCommittedUSN (AD) or a GeneralizedTime (others) */
	size_t added, updated, removed, disabled;
	struct dl_change changes[DL_CHANGES_MAX];
	size_t nchanges;
	bool *user_changed, *group_changed;     /* per entry of `dir`: to be written to the store */
	char **removed_users, **removed_groups; /* guids to delete from the store */
	size_t nremoved_users, nremoved_groups;
};

/* Worker thread. `old` (read-only, may be NULL) is the directory of the previous sync; `watermark` its
 * watermark ("" or full = true for a full sync). Opens its own connection. Fills `res`. */
void dl_sync_fetch(const struct dl_cfg *cfg, const struct dl_dir *old, bool full, const char *watermark,
                   struct dl_progress *prog, struct dl_sync_result *res);
void dl_sync_result_clear(struct dl_sync_result *res);

/* Worker thread: connect to the first reachable URL, report TLS details, bind as the service account and
 * count the users under base_dn. A new JSON object as the POST test route answers it. */
json_t *dl_test(const struct dl_cfg *cfg);

/* The admin role and device group that the configuration gives to a member of the groups (dns[i], cns[i]). */
const char *dl_role_for(const struct dl_cfg *cfg, char *const *dns, char *const *cns, size_t n);
const char *dl_device_group_for(const struct dl_cfg *cfg, char *const *dns, char *const *cns, size_t n);

/* One-time libldap initialisation on the loop thread (before any worker uses it). */
void dl_ldap_global_init(void);

#endif
