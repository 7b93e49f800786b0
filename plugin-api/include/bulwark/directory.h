/* bulwark/directory.h: the "directory" capability (an LDAP / Active Directory connector),
 * registered with host->capability_register(ctx, "directory", &ops, sizeof ops, arg, err)
 * during init. The host uses it for administrator login with directory credentials and for
 * device enrollment by directory credentials. Sync, listings and diagnostics are the plugin's
 * own admin routes (/api/v1/plugins/<name>/...). */
#ifndef BULWARK_DIRECTORY_H
#define BULWARK_DIRECTORY_H

#include <bulwark/errors.h>
#include <jansson.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* rc: BW_OK; BW_E_DENIED when the directory refuses (message says why: "wrong user name or
 * password", "account disabled", "account locked", "password expired"); BW_E_NOTFOUND when no
 * such user; BW_E_TIMEOUT / BW_E_IO / BW_E_TLS when the directory cannot be reached or
 * trusted. `user` (borrowed, NULL unless BW_OK):
 *   {"guid": objectGUID as a UUID string, "login": sAMAccountName or uid, "upn", "display_name",
 *    "mail", "dn", "manager": DN or null, "groups": [group DNs, nested ones included],
 *    "admin_role": "administrator" | "readonly" | null (from the configured group mapping),
 *    "device_group": the mapped device group or null} */
typedef void (*bw_dir_auth_done_fn)(int rc, const char *message, json_t *user, void *arg);

struct bw_directory_ops {
	uint32_t size; /* sizeof(struct bw_directory_ops) */
	/* Checks credentials by binding as the user (blocking work runs on the work queue).
	 * `login` is user@domain (UPN), DOMAIN\user or a bare sAMAccountName. `done` runs exactly
	 * once on the loop thread unless authenticate() itself fails (BW_E_INVALID for an empty
	 * login or password, BW_E_STATE when not started). Never logs the password. Loop thread. */
	int (*authenticate)(void *arg, const char *login, const char *password, bw_dir_auth_done_fn done,
	                    void *done_arg, bw_error *err);
};

#ifdef __cplusplus
}
#endif
#endif
