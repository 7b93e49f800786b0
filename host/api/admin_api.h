/* host/api/admin_api.h: the host's own admin endpoints (/healthz, /metrics, /api/v1/...). */
#ifndef BW_ADMIN_API_H
#define BW_ADMIN_API_H

#include "host.h"

int bw_admin_api_register(struct bw_host *h, bw_error *err);
/* Re-checks the database and rebuilds the cached /healthz body (called every second). */
void bw_admin_api_refresh_health(struct bw_host *h);
void bw_admin_api_free(void);

#endif
