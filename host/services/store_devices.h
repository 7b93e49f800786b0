/* host/services/store_devices.h: the storage interface for devices (issue "Devices"): the
 * registry, enrollment keys, invitations and their outbox, the device allowlist, enrollment
 * refusals, commands, device event logs and revoked certificates. Implemented for SQLite in
 * store_devices.c (schema version 3); same threading rules as store.h (loop thread). */
#ifndef BW_STORE_DEVICES_H
#define BW_STORE_DEVICES_H

#include "store.h"

/* ---- devices */
struct bw_device {
	char id[37];
	char platform[16];    /* "android", "ios" */
	char status[16];      /* "active", "unregistered", "wiped" */
	char cert_serial[41]; /* hex */
	int64_t cert_not_after, enrolled_at, last_seen;
	int64_t inventory_at; /* 0 = no inventory yet */
	char group_name[129];
	char owner[129];
};

/* Creates a device from the enrollment's "device" object (borrowed; fields as in
 * docs/agent-protocol.md, already validated and normalised by the caller). */
int bw_store_device_create(bw_store *st, const char *id, json_t *device, const char *group_name,
                           const char *enroll_method, const char *cert_serial, int64_t cert_not_after, int64_t now,
                           bw_error *err);
int bw_store_device_get(bw_store *st, const char *id, struct bw_device *out, bw_error *err); /* BW_E_NOTFOUND */
/* Full record as JSON (registry fields, inventory snapshot, timestamps); new reference. */
int bw_store_device_json(bw_store *st, const char *id, json_t **out, bw_error *err);
/* Updates registry fields present in `fields` (os_version, push.provider/token, agent_version, ...). */
int bw_store_device_update(bw_store *st, const char *id, json_t *fields, bw_error *err);
int bw_store_device_set_status(bw_store *st, const char *id, const char *status, int64_t now, bw_error *err);
int bw_store_device_set_cert(bw_store *st, const char *id, const char *serial, int64_t not_after, bw_error *err);
/* Sets last_seen for many devices in one transaction (coalesced by the caller). */
int bw_store_device_touch_many(bw_store *st, const char *const *ids, const int64_t *seen, size_t n, bw_error *err);
/* Replaces the inventory snapshot (JSON object text) and its time. */
int bw_store_device_set_inventory(bw_store *st, const char *id, const char *inventory_json, int64_t now, bw_error *err);
/* Filtered listing. Filters (all optional, NULL = any): platform, status, group, os_op ("<", "<=",
 * "=", ">=", ">") with os_version (compared as dotted versions: "12" = "12.0" = "12.0.0"). Paged
 * by id: after_id, limit (1..1000). Array of device summaries; new reference. */
struct bw_device_filter {
	const char *platform, *status, *group, *os_op, *os_version, *after_id;
	size_t limit;
};
int bw_store_device_list(bw_store *st, const struct bw_device_filter *f, json_t **out, bw_error *err);
int bw_store_device_count(bw_store *st, int64_t *count, bw_error *err);
/* Calls fn for every device (id, status, cert serial, last_seen): used at start to build the
 * in-memory registry. */
int bw_store_device_scan(bw_store *st, void (*fn)(const struct bw_device *d, void *arg), void *arg, bw_error *err);

/* ---- enrollment keys: only SHA-256 hashes of keys are stored, with a short prefix to show */
int bw_store_key_create(bw_store *st, const char *id, const char *key_hash, const char *prefix, const char *group_name,
                        int64_t max_uses /* 0 = unlimited */, int64_t expires_at /* 0 = never */,
                        const char *created_by, int64_t now, bw_error *err);
/* Uses the key once (atomically: uses < max_uses, not expired, not revoked). BW_E_NOTFOUND for
 * an unknown key; BW_E_DENIED with the reason ("expired", "used up", "revoked") otherwise.
 * Returns the key's group. */
int bw_store_key_use(bw_store *st, const char *key_hash, int64_t now, char group_out[129], bw_error *err);
int bw_store_key_list(bw_store *st, json_t **out, bw_error *err);
int bw_store_key_revoke(bw_store *st, const char *id, bw_error *err);

/* ---- invitations (several per address allowed) and the mail outbox */
int bw_store_invitation_create(bw_store *st, const char *id, const char *email, const char *code_hash,
                               int64_t expires_at, const char *created_by, int64_t now, bw_error *err);
/* Uses an invitation once: matching email (case-insensitive) and code hash, unused, not expired. */
int bw_store_invitation_use(bw_store *st, const char *email, const char *code_hash, int64_t now, bw_error *err);
int bw_store_invitation_list(bw_store *st, json_t **out, bw_error *err);
int bw_store_outbox_add(bw_store *st, const char *id, const char *to, const char *subject, const char *body,
                        int64_t now, bw_error *err);
int bw_store_outbox_list(bw_store *st, json_t **out, bw_error *err);

/* ---- allowlist: kind "imei", "meid" or "wifi_mac", values normalised by the caller */
int bw_store_allowlist_add(bw_store *st, const char *kind, const char *value, const char *note, int64_t now,
                           bw_error *err);
int bw_store_allowlist_remove(bw_store *st, const char *kind, const char *value, bw_error *err);
int bw_store_allowlist_list(bw_store *st, json_t **out, bw_error *err);
bool bw_store_allowlist_contains(bw_store *st, const char *kind, const char *value);
int bw_store_setting_get(bw_store *st, const char *name, char **value, bw_error *err); /* BW_E_NOTFOUND */
int bw_store_setting_set(bw_store *st, const char *name, const char *value, bw_error *err);
int bw_store_refusal_add(bw_store *st, int64_t at, const char *address, const char *reason, const char *detail,
                         bw_error *err);
int bw_store_refusal_list(bw_store *st, size_t limit, json_t **out, bw_error *err);

/* ---- commands: states queued -> sent -> acknowledged -> completed | failed | expired | cancelled */
int bw_store_command_create(bw_store *st, const char *id, const char *device_id, const char *type,
                            const char *params_json, int priority, int64_t expires_at, const char *created_by,
                            int64_t now, bw_error *err);
/* Pending for delivery: queued, or sent and not acknowledged since before `resend_before`;
 * not expired. Highest priority first, then oldest. Marks them sent (sent_at = now,
 * attempts + 1). Array of {"id","type","params","expires_at"}; new reference. */
int bw_store_command_take(bw_store *st, const char *device_id, int64_t now, int64_t resend_before, size_t limit,
                          json_t **out, bw_error *err);
/* Records the device's result. BW_E_NOTFOUND when the command is not this device's. */
int bw_store_command_result(bw_store *st, const char *device_id, const char *id, const char *status,
                            const char *result_json, const char *error, int64_t now, bw_error *err);
int bw_store_command_cancel(bw_store *st, const char *id, int64_t now, bw_error *err); /* BW_E_STATE when final */
int bw_store_command_get(bw_store *st, const char *id, json_t **out, bw_error *err);
int bw_store_command_list(bw_store *st, const char *device_id, json_t **out, bw_error *err);
/* Open (queued/sent/acknowledged) commands of a device, and of one type (for merging). */
int bw_store_command_open_count(bw_store *st, const char *device_id, const char *type /* NULL = any */, int64_t *count,
                                bw_error *err);
/* Marks commands past expires_at as expired; returns how many. */
int bw_store_command_expire(bw_store *st, int64_t now, int64_t *expired, bw_error *err);
/* Device ids with open commands (to rebuild the in-memory pending set at start). */
int bw_store_command_pending_devices(bw_store *st, void (*fn)(const char *device_id, void *arg), void *arg,
                                     bw_error *err);
/* Queue depth and age of the oldest open command, for /metrics. */
int bw_store_command_stats(bw_store *st, int64_t now, int64_t *open, int64_t *oldest_age, bw_error *err);

/* ---- device event logs, idempotent per (device, batch) */
/* Stores a batch (array of {"type","at","data"}); *duplicate = true and nothing stored when the
 * batch id was seen for this device. */
int bw_store_events_add(bw_store *st, const char *device_id, const char *batch_id, json_t *events, int64_t now,
                        bool *duplicate, bw_error *err);
struct bw_event_query {
	const char *device_id, *type;
	int64_t since, until; /* 0 = open */
	int64_t before_id;    /* paging, 0 = newest */
	size_t limit;
};
int bw_store_events_query(bw_store *st, const struct bw_event_query *q, json_t **out, bw_error *err);
int bw_store_events_purge(bw_store *st, int64_t older_than, int64_t *purged, bw_error *err);

/* ---- revoked device certificates */
int bw_store_cert_revoke(bw_store *st, const char *serial, const char *device_id, const char *reason, int64_t now,
                         bw_error *err);
int bw_store_cert_revoked_scan(bw_store *st, void (*fn)(const char *serial, void *arg), void *arg, bw_error *err);

#endif
