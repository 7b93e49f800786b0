/* plugins/dir_ldap/dlutil.h: the pure parts of the dir_ldap plugin (no LDAP connection, no host): login
 * parsing, RFC 4514 / RFC 4515 escaping, GUID formatting, range attribute names, userAccountControl bits,
 * group mapping, Active Directory bind diagnostics and LDAP time values. Unit-tested in tests/unit/ldap_test.c. */
#ifndef BW_DLUTIL_H
#define BW_DLUTIL_H

#include <bulwark/errors.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BW_DL_LOGIN_MAX 256 /* bytes of a login name (UPN, DOMAIN\user or sAMAccountName) */

enum bw_dl_login_kind { BW_DL_LOGIN_UPN = 1, BW_DL_LOGIN_DOMAIN = 2, BW_DL_LOGIN_BARE = 3 };

/* A login split into its parts; `user` is the sAMAccountName / uid part (the local part of a UPN),
 * `domain` the NetBIOS domain (DOMAIN\user) or the UPN suffix (user@suffix), empty for a bare name. */
struct bw_dl_login {
	int kind;
	char user[BW_DL_LOGIN_MAX + 1];
	char domain[BW_DL_LOGIN_MAX + 1];
	char full[BW_DL_LOGIN_MAX + 1]; /* the whole UPN for BW_DL_LOGIN_UPN, else == user */
};

/* Parses user@domain, DOMAIN\user or a bare name. Refuses empty parts, control characters, more than one
 * separator and names longer than BW_DL_LOGIN_MAX (BW_E_INVALID naming the problem). */
int bw_dl_login_parse(const char *login, struct bw_dl_login *out, bw_error *err);

/* RFC 4515 filter value escaping: '*', '(', ')', '\' and NUL become \2a \28 \29 \5c \00; other bytes
 * (UTF-8 included) are kept. `len` bytes of `in`; returns a malloc'ed string, NULL when out of memory. */
char *bw_dl_filter_escape(const char *in, size_t len);

/* RFC 4514 attribute value escaping for building a DN: ',', '+', '"', '\', '<', '>', ';', '=' are
 * backslash-escaped, a leading '#' or space and a trailing space too, NUL as \00. malloc'ed or NULL. */
char *bw_dl_dn_escape(const char *in);

/* objectGUID (16 bytes, AD byte order: the first three fields little-endian) as the standard GUID
 * string "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (lower case). BW_E_INVALID unless len == 16. */
int bw_dl_guid_format(const unsigned char *bin, size_t len, char out[37], bw_error *err);

/* Checks and lower-cases a textual UUID (entryUUID) into out. */
bool bw_dl_uuid_normalize(const char *in, size_t len, char out[37]);

/* An attribute description with range options: "member;range=0-1499" gives base "member", start 0,
 * end 1499; "member;range=1500-*" gives end -1 (the last chunk). False when `desc` is not `base` with
 * a range option (case-insensitive base match). */
bool bw_dl_range_parse(const char *desc, const char *base, long *start, long *end);

/* userAccountControl bits. */
#define BW_DL_UAC_ACCOUNTDISABLE   0x2u
#define BW_DL_UAC_LOCKOUT          0x10u
#define BW_DL_UAC_NORMAL_ACCOUNT   0x200u
#define BW_DL_UAC_DONT_EXPIRE      0x10000u
#define BW_DL_UAC_PASSWORD_EXPIRED 0x800000u

/* Parses a decimal userAccountControl value (AD sends it as a signed 32-bit decimal). */
bool bw_dl_uac_parse(const char *s, size_t len, uint32_t *out);
bool bw_dl_uac_disabled(uint32_t uac);

/* One "DirectoryGroup=DeviceGroup" mapping: split at the last '=' (a directory group may be a DN with '=');
 * both sides trimmed and non-empty; the device group is [A-Za-z0-9 _.-]{1,64}. */
struct bw_dl_group_map {
	char *dir_group;
	char *device_group;
};
int bw_dl_group_map_parse(const char *s, struct bw_dl_group_map *out, bw_error *err);
void bw_dl_group_map_free(struct bw_dl_group_map *m);

/* True when `name` (a group DN or CN from the configuration) designates the group with DN `dn` and
 * name `cn`: a case-insensitive match against either, with spaces after commas in DNs ignored. */
bool bw_dl_group_matches(const char *name, const char *dn, const char *cn);

/* The AD bind diagnostic "... AcceptSecurityContext error, data 775, v3839": the hex code after "data "
 * (0x775 here), or -1 when there is none. */
long bw_dl_ad_diag_code(const char *diag);
/* A clear reason for an AD bind diagnostic code ("account locked", ...), NULL for an unknown code. */
const char *bw_dl_ad_diag_reason(long code);

/* The first RDN value of a DN ("CN=Domain Admins,CN=Users,..." gives "Domain Admins"), unescaped, into
 * out; false when the DN has no "attr=value" first part or it does not fit. */
bool bw_dl_dn_first_value(const char *dn, char *out, size_t size);

/* LDAP GeneralizedTime ("20240131120000Z", "20240131120000.5Z", "20240131120000+0100") to Unix seconds. */
bool bw_dl_gentime_parse(const char *s, int64_t *out);
/* Unix seconds as GeneralizedTime "YYYYMMDDHHMMSSZ" (UTC). */
void bw_dl_gentime_format(int64_t t, char out[16]);

/* A non-negative decimal integer (uSNChanged, lockoutTime) of `len` bytes; false when not one. */
bool bw_dl_uint_parse(const char *s, size_t len, uint64_t *out);

#endif
