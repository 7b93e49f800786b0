/* host/policy/policies.h: the policy service: the group tree (in memory, persisted through
 * store_policies.h), each group's versioned policy document, the effective policy of a group
 * (defaults, then each ancestor's sections from the root down: a section present in a subgroup's
 * document replaces the inherited one whole), and per-device delivery (assigned / applied
 * versions, pending, out of sync, sync_policy re-queued after agent.policy_timeout).
 *
 * Everything runs on the loop thread. There is one service per host (bw_policies_of). */
#ifndef BW_POLICIES_H
#define BW_POLICIES_H

#include "host.h"

typedef struct bw_policies bw_policies;

#define BW_POLICY_VERSION_LEN 16 /* hex characters of a delivery version */
#define BW_GROUPS_MAX         10000
#define BW_GROUP_DEPTH_MAX    32

/* Loads groups, documents and delivery states, opens the secrets key (<var_dir>/keys/policy.key)
 * and starts the timeout timer. */
bw_policies *bw_policies_new(struct bw_host *h, bw_error *err);
void bw_policies_free(bw_policies *p);
/* The service of a host (NULL before bw_policies_new or after free). */
bw_policies *bw_policies_of(const struct bw_host *h);

/* ---- groups. Group objects: {"name","parent" (null for default),"description","policy_version",
 * "created_at"}. */
int bw_group_list(bw_policies *p, json_t **out, bw_error *err);
/* One group, with "children" (names) and "devices" (active devices directly in it). */
int bw_group_get(bw_policies *p, const char *name, json_t **out, bw_error *err);
/* `parent` NULL = "default". BW_E_INVALID bad name, BW_E_NOTFOUND parent, BW_E_EXISTS name taken. */
int bw_group_create(bw_policies *p, const char *name, const char *parent, const char *description, bw_error *err);
/* Creates `name` under "default" unless it exists (a group named by an enrollment key or by the
 * directory's group mapping); `why` becomes its description and a log line. */
int bw_group_ensure(bw_policies *p, const char *name, const char *why, bw_error *err);
/* Rename and/or move under another parent (NULL keeps). BW_E_STATE for the default group or a
 * cycle (moving under itself or a descendant). A move queues sync_policy where the effective
 * policy changes. */
int bw_group_update(bw_policies *p, const char *name, const char *new_name, const char *parent, const char *description,
                    bw_error *err);
/* BW_E_STATE (with the reason) for the default group, or one with devices or subgroups and no
 * move_to. */
int bw_group_delete(bw_policies *p, const char *name, const char *move_to, bw_error *err);

/* ---- policy documents */
/* {"group","version","policy" (admin view; {} = none),"author","at","summary"}. */
int bw_policy_get_own(bw_policies *p, const char *group, json_t **out, bw_error *err);
/* Validates, protects and stores `doc` as the group's next version. BW_E_INVALID with *errors
 * (the validator's list; caller frees) for an invalid document. On success *result is
 * {"group","version","summary","effective_version"}. */
int bw_policy_put(bw_policies *p, const char *group, json_t *doc, const char *author, json_t **result, json_t **errors,
                  bw_error *err);
/* {"group","version" (delivery version),"policy" (admin view),"sources": {section: group or
 * "defaults"}}. */
int bw_policy_effective(bw_policies *p, const char *group, json_t **out, bw_error *err);
int bw_policy_history(bw_policies *p, const char *group, int64_t before, size_t limit, json_t **out, bw_error *err);
int bw_policy_version(bw_policies *p, const char *group, int64_t version, json_t **out, bw_error *err);
/* Changes between two versions of a group (0 = the empty document). */
int bw_policy_diff_versions(bw_policies *p, const char *group, int64_t from, int64_t to, json_t **out, bw_error *err);

/* ---- devices */
/* Moves a device to a group (BW_E_NOTFOUND for either); queues sync_policy when its effective
 * policy changes. *out: {"id","group","policy_version"}. */
int bw_policy_device_move(bw_policies *p, const char *device_id, const char *group, json_t **out, bw_error *err);
/* The delivery version of a device's effective policy (NULL when the device is unknown). The
 * pointer is valid until the next policy change. */
const char *bw_policy_device_version(bw_policies *p, const char *device_id);
/* The device form of a device's effective policy ({"version","policy"}; Wi-Fi secrets in clear,
 * uninstall verifier), for GET /agent/v1/policy. */
int bw_policy_device_document(bw_policies *p, const char *device_id, json_t **out, bw_error *err);
/* The admin view of a device's effective policy (for rules). */
int bw_policy_device_effective(bw_policies *p, const char *device_id, json_t **out, bw_error *err);
/* A device reports the version it applied (check-in "policy_version", sync_policy result). */
void bw_policy_device_applied(bw_policies *p, const char *device_id, const char *version);
/* Per-device delivery state: [{"device_id","group","state","current_version","assigned_version",
 * "applied_version","assigned_at","applied_at"}] filtered by group and state (NULL = any). */
int bw_policy_status(bw_policies *p, const char *group, const char *state, json_t **out, bw_error *err);
/* Runs the timeout check now (the timer calls it; tests call it directly). Returns how many
 * devices got sync_policy again. */
size_t bw_policy_check_timeouts(bw_policies *p, int64_t now);

#endif
