/* host/api/admin_api.h: the host's own admin endpoints (/healthz, /metrics, /api/v1/...). */
#ifndef BW_ADMIN_API_H
#define BW_ADMIN_API_H

#include "host.h"

int bw_admin_api_register(struct bw_host *h, bw_error *err);
/* Re-checks the database and rebuilds the cached /healthz body (called every second). */
void bw_admin_api_refresh_health(struct bw_host *h);
void bw_admin_api_free(void);

/* Creates a session for an authenticated administrator, audits the login and answers 201. */
struct bw_http_req;
void bw_admin_session_issue(struct bw_http_req *req, const char *name, const char *role);

/* The stored password hash of administrators who log in through the directory (never a valid
 * hash, so a local password can never match). */
#define BW_DIRECTORY_ACCOUNT "!directory"
/* True when a directory plugin is configured. */
bool bw_directory_available(struct bw_host *h);
/* Starts a login with directory credentials (directory_login.c); answers the request later.
 * `password` is copied by the plugin and may be wiped after the call. */
void bw_directory_login(struct bw_http_req *req, const char *user, const char *password);

#endif
