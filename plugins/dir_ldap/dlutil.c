/* plugins/dir_ldap/dlutil.c: the pure helpers of the dir_ldap plugin (see dlutil.h): no LDAP, no host calls,
 * so that they are unit-tested alone. */
#include "dlutil.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static void copy_part(char *dst, const char *src, size_t len)
{
	memcpy(dst, src, len);
	dst[len] = '\0';
}

int bw_dl_login_parse(const char *login, struct bw_dl_login *out, bw_error *err)
{
	memset(out, 0, sizeof *out);
	if (!login || !*login)
		return bw_error_set(err, BW_E_INVALID, "login: empty");
	size_t len = strlen(login);
	if (len > BW_DL_LOGIN_MAX)
		return bw_error_set(err, BW_E_INVALID, "login: %zu bytes, more than %d", len, BW_DL_LOGIN_MAX);
	if (has_ctl(login))
		return bw_error_set(err, BW_E_INVALID, "login: contains control characters");
	const char *at = strchr(login, '@'), *bs = strchr(login, '\\');
	if (at && bs)
		return bw_error_set(err, BW_E_INVALID, "login: use either user@domain or DOMAIN\\user, not both");
	if (at) {
		if (strchr(at + 1, '@'))
			return bw_error_set(err, BW_E_INVALID, "login: more than one '@'");
		if (at == login || !at[1])
			return bw_error_set(err, BW_E_INVALID, "login: user@domain needs both parts");
		out->kind = BW_DL_LOGIN_UPN;
		copy_part(out->user, login, (size_t)(at - login));
		copy_part(out->domain, at + 1, strlen(at + 1));
		copy_part(out->full, login, len);
		return BW_OK;
	}
	if (bs) {
		if (strchr(bs + 1, '\\'))
			return bw_error_set(err, BW_E_INVALID, "login: more than one '\\'");
		if (bs == login || !bs[1])
			return bw_error_set(err, BW_E_INVALID, "login: DOMAIN\\user needs both parts");
		out->kind = BW_DL_LOGIN_DOMAIN;
		copy_part(out->domain, login, (size_t)(bs - login));
		copy_part(out->user, bs + 1, strlen(bs + 1));
		copy_part(out->full, out->user, strlen(out->user));
		return BW_OK;
	}
	out->kind = BW_DL_LOGIN_BARE;
	copy_part(out->user, login, len);
	copy_part(out->full, login, len);
	return BW_OK;
}

char *bw_dl_filter_escape(const char *in, size_t len)
{
	char *out = malloc(len * 3 + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];
		if (ch == '*' || ch == '(' || ch == ')' || ch == '\\' || ch == 0) {
			static const char hex[] = "0123456789abcdef";
			*o++ = '\\';
			*o++ = hex[ch >> 4];
			*o++ = hex[ch & 15];
		} else {
			*o++ = (char)ch;
		}
	}
	*o = '\0';
	return out;
}

char *bw_dl_dn_escape(const char *in)
{
	size_t len = strlen(in);
	char *out = malloc(len * 3 + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		char ch = in[i];
		bool lead = i == 0 && (ch == '#' || ch == ' ');
		bool trail = i == len - 1 && ch == ' ';
		if (lead || trail || strchr(",+\"\\<>;=", ch))
			*o++ = '\\';
		*o++ = ch;
	}
	*o = '\0';
	return out;
}

int bw_dl_guid_format(const unsigned char *b, size_t len, char out[37], bw_error *err)
{
	if (!b || len != 16)
		return bw_error_set(err, BW_E_INVALID, "objectGUID: %zu bytes, expected 16", b ? len : 0);
	/* Data1 (4 bytes), Data2 and Data3 (2 bytes each) are little-endian; Data4 is a byte array. */
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[3], b[2], b[1],
	         b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	return BW_OK;
}

bool bw_dl_uuid_normalize(const char *in, size_t len, char out[37])
{
	if (!in || len != 36)
		return false;
	for (size_t i = 0; i < 36; i++) {
		char ch = in[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (ch != '-')
				return false;
		} else if (!isxdigit((unsigned char)ch)) {
			return false;
		}
		out[i] = (char)tolower((unsigned char)ch);
	}
	out[36] = '\0';
	return true;
}

static bool parse_long(const char *s, const char **end, long *out)
{
	if (!isdigit((unsigned char)*s))
		return false;
	long v = 0;
	for (; isdigit((unsigned char)*s); s++) {
		if (v > 100000000L)
			return false;
		v = v * 10 + (*s - '0');
	}
	*end = s;
	*out = v;
	return true;
}

bool bw_dl_range_parse(const char *desc, const char *base, long *start, long *end)
{
	size_t bl = strlen(base);
	if (strncasecmp(desc, base, bl) != 0 || strncasecmp(desc + bl, ";range=", 7) != 0)
		return false;
	const char *p = desc + bl + 7, *q;
	long s, e = -1;
	if (!parse_long(p, &q, &s) || *q != '-')
		return false;
	p = q + 1;
	if (*p == '*') {
		q = p + 1;
	} else if (!parse_long(p, &q, &e) || e < s) {
		return false;
	}
	/* Other options may follow the range (";binary" never does for member, but stay strict). */
	if (*q)
		return false;
	*start = s;
	*end = e;
	return true;
}

bool bw_dl_uac_parse(const char *s, size_t len, uint32_t *out)
{
	if (!s || len == 0 || len > 11)
		return false;
	char buf[12];
	memcpy(buf, s, len);
	buf[len] = '\0';
	char *e;
	long long v = strtoll(buf, &e, 10);
	if (*e || e == buf || v < -2147483648LL || v > 4294967295LL)
		return false;
	*out = (uint32_t)v;
	return true;
}

bool bw_dl_uac_disabled(uint32_t uac)
{
	return (uac & BW_DL_UAC_ACCOUNTDISABLE) != 0;
}

static char *trimmed_dup(const char *s, size_t len)
{
	while (len && isspace((unsigned char)*s)) {
		s++;
		len--;
	}
	while (len && isspace((unsigned char)s[len - 1]))
		len--;
	char *o = malloc(len + 1);
	if (o) {
		memcpy(o, s, len);
		o[len] = '\0';
	}
	return o;
}

int bw_dl_group_map_parse(const char *s, struct bw_dl_group_map *out, bw_error *err)
{
	memset(out, 0, sizeof *out);
	const char *eq = s ? strrchr(s, '=') : NULL;
	if (!eq)
		return bw_error_set(err, BW_E_CONFIG,
		                    "group_map entry \"%.200s\": expected \"DirectoryGroup=DeviceGroup\"", s ? s : "");
	out->dir_group = trimmed_dup(s, (size_t)(eq - s));
	out->device_group = trimmed_dup(eq + 1, strlen(eq + 1));
	if (!out->dir_group || !out->device_group) {
		bw_dl_group_map_free(out);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	int rc = BW_OK;
	size_t dl = strlen(out->device_group);
	if (!*out->dir_group)
		rc = bw_error_set(err, BW_E_CONFIG, "group_map entry \"%.200s\": the directory group is empty", s);
	else if (dl == 0 || dl > 64)
		rc = bw_error_set(err, BW_E_CONFIG,
		                  "group_map entry \"%.200s\": the device group must be 1 to 64 characters", s);
	for (size_t i = 0; rc == BW_OK && i < dl; i++) {
		char ch = out->device_group[i];
		if (!isalnum((unsigned char)ch) && !strchr(" _.-", ch))
			rc = bw_error_set(
			    err, BW_E_CONFIG,
			    "group_map entry \"%.200s\": the device group may use only A-Z a-z 0-9 space _ . -", s);
	}
	if (rc != BW_OK)
		bw_dl_group_map_free(out);
	return rc;
}

void bw_dl_group_map_free(struct bw_dl_group_map *m)
{
	free(m->dir_group);
	free(m->device_group);
	m->dir_group = m->device_group = NULL;
}

/* Compares two DNs case-insensitively, ignoring spaces right after a ',' (a common difference between how
 * administrators write DNs and how servers return them). */
static bool dn_equal(const char *a, const char *b)
{
	while (*a && *b) {
		if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
			return false;
		bool comma = *a == ',';
		a++;
		b++;
		if (comma) {
			while (*a == ' ')
				a++;
			while (*b == ' ')
				b++;
		}
	}
	return *a == *b;
}

bool bw_dl_group_matches(const char *name, const char *dn, const char *cn)
{
	if (!name || !*name)
		return false;
	if (cn && strcasecmp(name, cn) == 0)
		return true;
	return dn && dn_equal(name, dn);
}

long bw_dl_ad_diag_code(const char *diag)
{
	if (!diag)
		return -1;
	for (const char *p = diag; (p = strstr(p, "data ")) != NULL; p += 5) {
		if (p != diag && isalnum((unsigned char)p[-1]))
			continue;
		const char *h = p + 5;
		size_t n = 0;
		while (n < 8 && isxdigit((unsigned char)h[n]))
			n++;
		if (n == 0 || isalnum((unsigned char)h[n]))
			continue;
		return strtol(h, NULL, 16);
	}
	return -1;
}

const char *bw_dl_ad_diag_reason(long code)
{
	switch (code) {
	case 0x525:
		return "no such user";
	case 0x52e:
		return "wrong user name or password";
	case 0x530:
		return "logon not permitted at this time";
	case 0x531:
		return "logon not permitted from this workstation";
	case 0x532:
		return "password expired";
	case 0x533:
		return "account disabled";
	case 0x701:
		return "account expired";
	case 0x773:
		return "password must be changed";
	case 0x775:
		return "account locked";
	default:
		return NULL;
	}
}

bool bw_dl_dn_first_value(const char *dn, char *out, size_t size)
{
	if (!dn || size == 0)
		return false;
	const char *eq = strchr(dn, '=');
	if (!eq || eq == dn)
		return false;
	size_t o = 0;
	for (const char *p = eq + 1; *p; p++) {
		char ch = *p;
		if (ch == ',' || ch == '+')
			break;
		if (ch == '\\' && p[1]) {
			if (isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
				char hx[3] = {p[1], p[2], 0};
				ch = (char)strtol(hx, NULL, 16);
				p += 2;
			} else {
				ch = *++p;
			}
		}
		if (o + 1 >= size)
			return false;
		out[o++] = ch;
	}
	out[o] = '\0';
	return o > 0;
}

static bool digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool bw_dl_gentime_parse(const char *s, int64_t *out)
{
	if (!s || strlen(s) < 11)
		return false;
	int Y, M, D, h, m = 0, sec = 0;
	if (!digits(s, 4, &Y) || !digits(s + 4, 2, &M) || !digits(s + 6, 2, &D) || !digits(s + 8, 2, &h))
		return false;
	const char *p = s + 10;
	if (isdigit((unsigned char)*p)) {
		if (!digits(p, 2, &m))
			return false;
		p += 2;
		if (isdigit((unsigned char)*p)) {
			if (!digits(p, 2, &sec))
				return false;
			p += 2;
		}
	}
	if (*p == '.' || *p == ',') {
		p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
	}
	int off = 0;
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int oh, om = 0;
		if (!digits(p + 1, 2, &oh))
			return false;
		const char *q = p + 3;
		if (isdigit((unsigned char)*q)) {
			if (!digits(q, 2, &om))
				return false;
			q += 2;
		}
		off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p = q;
	} else {
		return false;
	}
	if (*p || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
		return false;
	struct tm tm = {.tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D, .tm_hour = h, .tm_min = m, .tm_sec = sec};
	*out = (int64_t)timegm(&tm) - off;
	return true;
}

void bw_dl_gentime_format(int64_t t, char out[16])
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, 16, "%Y%m%d%H%M%SZ", &tm);
}

bool bw_dl_uint_parse(const char *s, size_t len, uint64_t *out)
{
	if (!s || len == 0 || len > 20)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		uint64_t nv = v * 10 + (uint64_t)(s[i] - '0');
		if (nv / 10 != v)
			return false;
		v = nv;
	}
	*out = v;
	return true;
}
