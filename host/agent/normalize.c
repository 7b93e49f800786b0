/* host/agent/normalize.c: normalisation and validation of device identifiers (IMEI, MEID, Wi-Fi
 * MAC), enrollment keys, and the dotted-version comparison used by device filters. Shared by
 * enrollment (agent side) and the allowlist/device admin API, so both store the same form. */
#include "devices.h"

#include <string.h>

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool bw_normalize_imei(const char *in, char out[16])
{
	size_t n = 0;
	if (!in)
		return false;
	for (const char *p = in; *p; p++) {
		if (*p == ' ' || *p == '-' || *p == '/')
			continue; /* how IMEIs are printed on boxes and in settings screens */
		if (!is_digit(*p) || n == 15)
			return false;
		out[n++] = *p;
	}
	if (n != 15)
		return false;
	out[15] = '\0';
	/* Luhn: from the right, every second digit before the check digit is doubled. */
	int sum = 0;
	for (int i = 0; i < 15; i++) {
		int d = out[i] - '0';
		if (i % 2 == 1) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return sum % 10 == 0;
}

bool bw_normalize_meid(const char *in, char out[15])
{
	size_t n = 0;
	if (!in)
		return false;
	for (const char *p = in; *p; p++) {
		if (*p == ' ' || *p == '-')
			continue;
		int v = hex_value(*p);
		if (v < 0 || n == 14)
			return false;
		out[n++] = "0123456789abcdef"[v];
	}
	if (n != 14)
		return false;
	out[14] = '\0';
	return true;
}

bool bw_normalize_mac(const char *in, char out[18])
{
	if (!in)
		return false;
	/* Surrounding blanks come from copy and paste; inner ones are an error. */
	while (*in == ' ' || *in == '\t')
		in++;
	size_t len = strlen(in);
	while (len > 0 && (in[len - 1] == ' ' || in[len - 1] == '\t'))
		len--;
	char sep = 0;
	if (len == 17) {
		sep = in[2];
		if (sep != ':' && sep != '-')
			return false;
	} else if (len != 12) {
		return false;
	}
	size_t step = sep ? 3 : 2;
	for (size_t i = 0; i < 6; i++) {
		const char *p = in + i * step;
		int hi = hex_value(p[0]), lo = hex_value(p[1]);
		if (hi < 0 || lo < 0)
			return false;
		if (sep && i < 5 && p[2] != sep)
			return false; /* mixed separators */
		out[i * 3] = "0123456789abcdef"[hi];
		out[i * 3 + 1] = "0123456789abcdef"[lo];
		out[i * 3 + 2] = i < 5 ? ':' : '\0';
	}
	return true;
}

bool bw_enrollment_key_valid(const char *key)
{
	if (!key)
		return false;
	size_t n = 0;
	for (const char *p = key; *p; p++, n++) {
		char c = *p;
		if (n >= 64 || !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '-'))
			return false;
	}
	return n >= 8;
}

/* The numeric part of a version: digit runs separated by single dots. Returns where the
 * suffix starts. */
static const char *numeric_end(const char *v)
{
	const char *p = v;
	while (is_digit(*p)) {
		while (is_digit(*p))
			p++;
		if (p[0] == '.' && is_digit(p[1]))
			p++;
		else
			break;
	}
	return p;
}

/* Compares the next components of two numeric parts (a missing component is 0), as digit
 * strings so that any length compares correctly. Advances both. */
static int component_compare(const char **pa, const char *ea, const char **pb, const char *eb)
{
	const char *a = *pa, *b = *pb;
	const char *a_end = a, *b_end = b;
	while (a_end < ea && is_digit(*a_end))
		a_end++;
	while (b_end < eb && is_digit(*b_end))
		b_end++;
	while (a < a_end && *a == '0')
		a++;
	while (b < b_end && *b == '0')
		b++;
	size_t la = (size_t)(a_end - a), lb = (size_t)(b_end - b);
	int r = la < lb ? -1 : la > lb ? 1 : 0;
	if (r == 0 && la > 0) {
		int c = memcmp(a, b, la);
		r = c < 0 ? -1 : c > 0 ? 1 : 0;
	}
	*pa = a_end < ea ? a_end + 1 : a_end; /* skip the dot */
	*pb = b_end < eb ? b_end + 1 : b_end;
	return r;
}

static int sign(int v)
{
	return v < 0 ? -1 : v > 0 ? 1 : 0;
}

int bw_version_compare(const char *a, const char *b)
{
	if (!a)
		a = "";
	if (!b)
		b = "";
	bool va = is_digit(a[0]), vb = is_digit(b[0]);
	/* Strings that are not versions sort before every version, among themselves as text. */
	if (!va || !vb)
		return va == vb ? sign(strcmp(a, b)) : va ? 1 : -1;
	const char *ea = numeric_end(a), *eb = numeric_end(b);
	const char *pa = a, *pb = b;
	while (pa < ea || pb < eb) {
		int r = component_compare(&pa, ea, &pb, eb);
		if (r)
			return r;
	}
	/* Equal numbers: the plain version first, then suffixes as text ("-beta" < "-rc1"). */
	if (!*ea || !*eb)
		return *ea ? 1 : *eb ? -1 : 0;
	return sign(strcmp(ea, eb));
}
