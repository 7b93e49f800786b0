/* host/api/policies_api.h: groups and policies on the admin listener (docs/openapi.yaml). */
#ifndef BW_POLICIES_API_H
#define BW_POLICIES_API_H

#include "host.h"

/* Registers /api/v1/groups..., /api/v1/policies/... and PATCH /api/v1/devices/{id}. Needs the
 * policy service (bw_policies_new) to exist when requests arrive. */
int bw_policies_api_register(struct bw_host *h, bw_error *err);

#endif
