/* host/api/auth.h: failed-login accounting per account and per client address (fixed windows,
 * bounded memory), used to refuse further login attempts for a while. */
#ifndef BW_AUTH_H
#define BW_AUTH_H

#include <stdint.h>

typedef struct bw_auth bw_auth;

struct bw_auth_limits {
	int64_t per_account, per_address, window_ms;
};

bw_auth *bw_auth_new(void);
void bw_auth_free(bw_auth *a);
/* Milliseconds until another attempt is allowed, 0 when allowed now. */
int64_t bw_auth_blocked(bw_auth *a, const struct bw_auth_limits *l, const char *account, const char *address,
                        int64_t now_ms);
void bw_auth_failure(bw_auth *a, const struct bw_auth_limits *l, const char *account, const char *address,
                     int64_t now_ms);
/* A successful login clears the account's failures (not the address's). */
void bw_auth_success(bw_auth *a, const char *account);

#endif
