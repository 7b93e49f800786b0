/* host/api/devices_api.h: the device administration endpoints of the admin listener:
 * enrollment keys, invitations and their outbox, the device allowlist, enrollment refusals,
 * devices, commands and device event logs (docs/openapi.yaml). */
#ifndef BW_DEVICES_API_H
#define BW_DEVICES_API_H

#include "host.h"

/* Adds the routes to h->admin_router. */
int bw_devices_api_register(struct bw_host *h, bw_error *err);

#endif
