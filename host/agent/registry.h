/* host/agent/registry.h: the registry's per-device record and lookups (agent fast path). */
#ifndef BW_REGISTRY_H
#define BW_REGISTRY_H

#include "devices.h"

enum { BW_DEV_ACTIVE = 0, BW_DEV_UNREGISTERED = 1, BW_DEV_WIPED = 2 };

struct bw_reg_device {
	char id[37];
	char serial[41]; /* the current certificate; any other serial for this id is refused */
	uint8_t status;
	bool pending;       /* may have open commands: the check-in asks the store */
	bool has_inventory; /* the server holds an inventory snapshot */
	bool dirty;         /* last_seen not yet written */
	bool out_of_sync;   /* active, but not seen within agent.out_of_sync_after */
	int64_t last_seen;
	int64_t cert_not_after;
};

/* Adds or updates a device (after enrollment, renewal, status change). */
int bw_registry_put(bw_registry *r, const struct bw_device *dev);
struct bw_reg_device *bw_registry_find(bw_registry *r, const char *id);
/* Records a check-in time; written to the database in batches every 2 seconds. */
void bw_registry_seen(bw_registry *r, struct bw_reg_device *d, int64_t now);
size_t bw_registry_count(const bw_registry *r);
/* Marks active devices not seen since `before` as out of sync (and emits
 * device.status_changed once per change); returns how many changed. */
size_t bw_registry_mark_out_of_sync(bw_registry *r, int64_t before);

#endif
