/* host/agent/devices.h: the device side of the host: the in-memory registry that keeps the
 * check-in path off the database (status, certificate, pending commands, coalesced last-seen
 * times), command queueing, and the enrollment rules shared by the agent and admin APIs. */
#ifndef BW_DEVICES_H
#define BW_DEVICES_H

#include "host.h"
#include "store_devices.h"

#define BW_COMMAND_QUEUE_MAX 100 /* open commands per device */

typedef struct bw_registry bw_registry;

/* Loads every device, the revoked serials and the devices with open commands. */
bw_registry *bw_registry_new(struct bw_host *h, bw_error *err);
/* Flushes pending last-seen times, then frees. */
void bw_registry_free(bw_registry *r);

/* Queues a command for a device (admin API, rules, plugins). Validates the type (lock, wipe,
 * enterprise_wipe, locate, scan, update, sync_policy) and params (an object or NULL); merges a
 * repeated locate/scan/update/sync_policy with the open one of the same type (returns its id);
 * BW_E_LIMIT when the device has BW_COMMAND_QUEUE_MAX open commands; BW_E_NOTFOUND for an
 * unknown device and BW_E_STATE for an unregistered one. Emits "command.queued". `ttl_s` 0 =
 * the default (7 days). */
int bw_command_queue(struct bw_host *h, const char *device_id, const char *type, json_t *params, int64_t ttl_s,
                     const char *created_by, char id_out[37], bool *merged, bw_error *err);

/* Device status changes from the admin side (unenroll from the console, wipe completed):
 * revokes the certificate at once and emits "device.status_changed". */
int bw_device_unregister(struct bw_host *h, const char *device_id, const char *status, const char *reason,
                         bw_error *err);

/* Normalisation shared by enrollment and the allowlist API. Each returns false when the value
 * is malformed. IMEI: 15 digits (spaces, dashes and slashes ignored) with a valid Luhn check
 * digit. MEID: 14 hex digits (spaces and dashes ignored), lower-case. MAC: 12 hex digits with
 * ':' or '-' or no separators, any case, normalised to "aa:bb:cc:dd:ee:ff". */
bool bw_normalize_imei(const char *in, char out[16]);
bool bw_normalize_meid(const char *in, char out[15]);
bool bw_normalize_mac(const char *in, char out[18]);
/* An enrollment key: 8..64 characters of [A-Za-z0-9-]. */
bool bw_enrollment_key_valid(const char *key);
/* Compares dotted versions numerically ("12" == "12.0" == "12.0.0" < "12.1"); a vendor suffix
 * after the numbers ("12.1.3-beta") compares after the plain version. */
int bw_version_compare(const char *a, const char *b);

#endif
