/* host/policy/policy_url.c: parsers and normalisers of policy list entries: web-protection URL/host entries,
 * SMS sender and call-filter numbers, and app package ids (rules documented in docs/policies.md). */
#include "policy_doc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define URL_MAX_LEN   2048
#define HOST_MAX_LEN  253
#define LABEL_MAX_LEN 63
#define PHONE_MAX_LEN 32
#define PHONE_MIN_DIG 3
#define PHONE_MAX_DIG 20
#define ALNUM_MAX_LEN 20
#define PKG_MAX_LEN   255

static int fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t why_len, const char *fmt, ...)
{
	if (why && why_len) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return BW_E_INVALID;
}

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned c = s[i];
		size_t len;
		unsigned min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			len = 2;
			min = 0x80;
			c &= 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			len = 3;
			min = 0x800;
			c &= 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			len = 4;
			min = 0x10000;
			c &= 0x07;
		} else {
			return false;
		}
		if (i + len > n)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			c = (c << 6) | (s[i + k] & 0x3F);
		}
		if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
			return false;
		i += len;
	}
	return true;
}

/* Printable form of a byte for messages. */
static const char *show_char(unsigned char c, char buf[8])
{
	if (c < 0x20 || c == 0x7f)
		snprintf(buf, 8, "0x%02x", c);
	else
		snprintf(buf, 8, "'%c'", c);
	return buf;
}

static int check_host_name(char *host, bool *is_ipv4, char *why, size_t why_len)
{
	size_t n = strlen(host);
	*is_ipv4 = false;
	if (n == 0)
		return fail(why, why_len, "empty host");
	if (host[n - 1] == '.') /* a fully qualified name: the trailing dot is dropped */
		host[--n] = '\0';
	if (n == 0)
		return fail(why, why_len, "empty label in host");
	if (n > HOST_MAX_LEN)
		return fail(why, why_len, "host longer than %d bytes", HOST_MAX_LEN);
	for (size_t i = 0; i < n; i++)
		host[i] = (char)tolower((unsigned char)host[i]);

	/* A numeric last label means an IPv4 address: no top-level domain is all digits. */
	const char *last = strrchr(host, '.');
	last = last ? last + 1 : host;
	bool numeric_last = *last && strspn(last, "0123456789") == strlen(last);
	if (numeric_last) {
		if (host[0] == '*')
			return fail(why, why_len, "a wildcard cannot be used with an IP address");
		unsigned parts = 0;
		const char *p = host;
		while (*p) {
			size_t dl = strspn(p, "0123456789");
			if (dl == 0 || dl > 3 || (dl > 1 && p[0] == '0') || atoi(p) > 255)
				return fail(why, why_len, "bad IPv4 address");
			parts++;
			p += dl;
			if (*p == '.')
				p++;
			else if (*p)
				return fail(why, why_len, "bad IPv4 address");
			if (p[-1] == '.' && !*p)
				return fail(why, why_len, "bad IPv4 address");
		}
		if (parts != 4)
			return fail(why, why_len, "bad IPv4 address (needs four numbers 0-255)");
		*is_ipv4 = true;
		return BW_OK;
	}
	size_t labels = 0;
	for (char *lab = host;;) {
		char *dot = strchr(lab, '.');
		size_t ll = dot ? (size_t)(dot - lab) : strlen(lab);
		if (ll == 0)
			return fail(why, why_len, "empty label in host");
		if (ll > LABEL_MAX_LEN)
			return fail(why, why_len, "host label longer than %d bytes", LABEL_MAX_LEN);
		if (memchr(lab, '*', ll)) {
			if (ll != 1 || labels != 0)
				return fail(why, why_len,
				            "a wildcard must be the whole leftmost label, as in *.example.com");
			if (!dot)
				return fail(why, why_len, "a wildcard needs a domain after it, as in *.example.com");
		} else {
			for (size_t i = 0; i < ll; i++) {
				unsigned char c = (unsigned char)lab[i];
				char cb[8];
				if (!(isalnum(c) || c == '-' || c == '_' || c >= 0x80))
					return fail(why, why_len, "invalid character %s in host", show_char(c, cb));
			}
			if (lab[0] == '-' || lab[ll - 1] == '-')
				return fail(why, why_len, "host label starts or ends with a hyphen");
		}
		labels++;
		if (!dot)
			break;
		lab = dot + 1;
	}
	return BW_OK;
}

static int check_ipv6(const char *text, char *canon, size_t canon_len, char *why, size_t why_len)
{
	struct in6_addr a;
	if (strchr(text, '%'))
		return fail(why, why_len, "IPv6 zone ids (%%...) are not allowed");
	if (*text == '\0' || strlen(text) > 45 || inet_pton(AF_INET6, text, &a) != 1)
		return fail(why, why_len, "bad IPv6 address");
	if (!inet_ntop(AF_INET6, &a, canon, (socklen_t)canon_len))
		return fail(why, why_len, "bad IPv6 address");
	return BW_OK;
}

static int check_port(const char *p, size_t n, long *port, char *why, size_t why_len)
{
	if (n == 0 || n > 5 || strspn(p, "0123456789") < n)
		return fail(why, why_len, "bad port (must be a number from 1 to 65535)");
	long v = 0;
	for (size_t i = 0; i < n; i++)
		v = v * 10 + (p[i] - '0');
	if (v < 1 || v > 65535)
		return fail(why, why_len, "bad port %ld (must be from 1 to 65535)", v);
	*port = v;
	return BW_OK;
}

/* Path, query: any non-space printable character or UTF-8, except the ones RFC 3986 never allows; %XX checked. */
static int check_path(const char *p, size_t n, char *why, size_t why_len)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		char cb[8];
		if (c && strchr("\"<>\\^`{|}", c))
			return fail(why, why_len, "invalid character %s in path or query", show_char(c, cb));
		if (c == '%' && !(i + 2 < n && isxdigit((unsigned char)p[i + 1]) && isxdigit((unsigned char)p[i + 2])))
			return fail(why, why_len, "bad percent-encoding in path or query");
	}
	return BW_OK;
}

int bw_policy_url_normalize(const char *entry, char **out, char *why, size_t why_len)
{
	if (out)
		*out = NULL;
	if (!entry || !*entry)
		return fail(why, why_len, "empty entry");
	size_t n = strlen(entry);
	if (n > URL_MAX_LEN)
		return fail(why, why_len, "entry longer than %d bytes", URL_MAX_LEN);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)entry[i];
		if (c < 0x20 || c == 0x7f)
			return fail(why, why_len, "contains a control character (0x%02x)", c);
		if (c == ' ')
			return fail(why, why_len, "contains a space");
	}
	if (!utf8_valid((const unsigned char *)entry, n))
		return fail(why, why_len, "not valid UTF-8");

	char scheme[16] = "";
	const char *rest = entry;
	const char *sep = strstr(entry, "://");
	if (sep) {
		size_t sl = (size_t)(sep - entry);
		bool ok = sl > 0 && isalpha((unsigned char)entry[0]);
		for (size_t i = 0; ok && i < sl; i++)
			ok = isalnum((unsigned char)entry[i]) || strchr("+.-", entry[i]);
		/* "://" inside a path (example.com/a://b) is not a scheme */
		const char *first_slash = strpbrk(entry, "/?#");
		if (first_slash && first_slash < sep)
			ok = false, sep = NULL;
		if (sep) {
			if (!ok || sl >= sizeof scheme)
				return fail(why, why_len, "bad scheme");
			for (size_t i = 0; i < sl; i++)
				scheme[i] = (char)tolower((unsigned char)entry[i]);
			scheme[sl] = '\0';
			if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)
				return fail(why, why_len, "unsupported scheme \"%s\" (only http and https)", scheme);
			rest = sep + 3;
		}
	}
	size_t alen = strcspn(rest, "/?#");
	const char *tail = rest + alen;
	if (memchr(rest, '@', alen))
		return fail(why, why_len, "user name or password (user@host) is not allowed");

	char host[URL_MAX_LEN + 1];
	char v6[64] = "";
	long port = 0;
	bool is_v6 = false, is_v4 = false;
	if (alen > 0 && rest[0] == '[') {
		const char *close = memchr(rest, ']', alen);
		if (!close)
			return fail(why, why_len, "missing ']' after an IPv6 address");
		size_t il = (size_t)(close - rest - 1);
		char inner[64];
		if (il >= sizeof inner)
			return fail(why, why_len, "bad IPv6 address");
		memcpy(inner, rest + 1, il);
		inner[il] = '\0';
		if (check_ipv6(inner, v6, sizeof v6, why, why_len) != BW_OK)
			return BW_E_INVALID;
		is_v6 = true;
		const char *after = close + 1;
		size_t left = alen - (size_t)(after - rest);
		if (left > 0) {
			if (after[0] != ':')
				return fail(why, why_len, "unexpected characters after ']'");
			if (check_port(after + 1, left - 1, &port, why, why_len) != BW_OK)
				return BW_E_INVALID;
		}
	} else {
		size_t colons = 0;
		for (size_t i = 0; i < alen; i++)
			colons += rest[i] == ':';
		if (colons >= 2) {
			/* A bare IPv6 literal is only unambiguous as the whole entry. */
			if (scheme[0] || *tail)
				return fail(why, why_len,
				            "an IPv6 address with a scheme, port or path must be in brackets, as in "
				            "http://[2001:db8::1]:8080/");
			char inner[64];
			if (alen >= sizeof inner)
				return fail(why, why_len, "bad IPv6 address");
			memcpy(inner, rest, alen);
			inner[alen] = '\0';
			if (check_ipv6(inner, v6, sizeof v6, why, why_len) != BW_OK)
				return BW_E_INVALID;
			is_v6 = true;
		} else {
			const char *colon = memchr(rest, ':', alen);
			size_t hl = colon ? (size_t)(colon - rest) : alen;
			memcpy(host, rest, hl);
			host[hl] = '\0';
			if (colon && check_port(colon + 1, alen - hl - 1, &port, why, why_len) != BW_OK)
				return BW_E_INVALID;
			if (check_host_name(host, &is_v4, why, why_len) != BW_OK)
				return BW_E_INVALID;
		}
	}

	/* Path and query; the fragment never reaches a server, so it is dropped. */
	size_t pl = strcspn(tail, "#");
	if (!scheme[0] && tail[0] == '/' && tail[1] == '/')
		return fail(why, why_len, "path starts with \"//\" (a scheme missing its ':'?)");
	if (check_path(tail, pl, why, why_len) != BW_OK)
		return BW_E_INVALID;
	if (pl == 1 && tail[0] == '/')
		pl = 0; /* "example.com/" is "example.com" */
	if ((strcmp(scheme, "http") == 0 && port == 80) || (strcmp(scheme, "https") == 0 && port == 443))
		port = 0;

	size_t cap = n + 64;
	char *res = malloc(cap);
	if (!res)
		return fail(why, why_len, "out of memory");
	int w = snprintf(res, cap, "%s%s", scheme, scheme[0] ? "://" : "");
	if (is_v6)
		w += snprintf(res + w, cap - (size_t)w, "[%s]", v6);
	else
		w += snprintf(res + w, cap - (size_t)w, "%s", host);
	if (port)
		w += snprintf(res + w, cap - (size_t)w, ":%ld", port);
	snprintf(res + w, cap - (size_t)w, "%.*s", (int)pl, tail);
	(void)is_v4;
	if (out)
		*out = res;
	else
		free(res);
	return BW_OK;
}

int bw_policy_phone_normalize(const char *entry, bool allow_alnum, char **out, char *why, size_t why_len)
{
	if (out)
		*out = NULL;
	if (!entry || !*entry)
		return fail(why, why_len, "empty entry");
	size_t n = strlen(entry);
	if (n > PHONE_MAX_LEN)
		return fail(why, why_len, "entry longer than %d bytes", PHONE_MAX_LEN);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)entry[i];
		if (c < 0x20 || c == 0x7f)
			return fail(why, why_len, "contains a control character (0x%02x)", c);
	}
	if (entry[0] == ' ' || entry[n - 1] == ' ')
		return fail(why, why_len, "leading or trailing space");
	bool has_alpha = false;
	for (size_t i = 0; i < n; i++)
		has_alpha |= isalpha((unsigned char)entry[i]) != 0;
	if (has_alpha) {
		if (!allow_alnum)
			return fail(why, why_len, "letters are not allowed in a phone number");
		if (n > ALNUM_MAX_LEN)
			return fail(why, why_len, "alphanumeric sender id longer than %d characters", ALNUM_MAX_LEN);
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)entry[i];
			char cb[8];
			if (!(isalnum(c) || strchr(" ._&-", c)))
				return fail(why, why_len, "invalid character %s in sender id", show_char(c, cb));
		}
		if (out && !(*out = strdup(entry)))
			return fail(why, why_len, "out of memory");
		return BW_OK;
	}
	char buf[PHONE_MAX_LEN + 1];
	size_t o = 0, digits = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)entry[i];
		char cb[8];
		if (isdigit(c)) {
			buf[o++] = (char)c;
			digits++;
		} else if (c == '+') {
			if (o != 0)
				return fail(why, why_len, "'+' is only allowed at the start");
			buf[o++] = '+';
		} else if (c == '*') {
			if (i != n - 1)
				return fail(why, why_len, "'*' (prefix wildcard) is only allowed at the end");
			buf[o++] = '*';
		} else if (!strchr(" -().", c)) {
			return fail(why, why_len, "invalid character %s in phone number", show_char(c, cb));
		}
	}
	buf[o] = '\0';
	bool wildcard = o > 0 && buf[o - 1] == '*';
	if (digits == 0)
		return fail(why, why_len, "no digits in phone number");
	if (!wildcard && digits < PHONE_MIN_DIG)
		return fail(why, why_len, "phone number has fewer than %d digits", PHONE_MIN_DIG);
	if (digits > PHONE_MAX_DIG)
		return fail(why, why_len, "phone number has more than %d digits", PHONE_MAX_DIG);
	if (out && !(*out = strdup(buf)))
		return fail(why, why_len, "out of memory");
	return BW_OK;
}

bool bw_policy_package_id_valid(const char *id, char *why, size_t why_len)
{
	if (!id || !*id)
		return fail(why, why_len, "empty package id"), false;
	size_t n = strlen(id);
	if (n > PKG_MAX_LEN)
		return fail(why, why_len, "package id longer than %d characters", PKG_MAX_LEN), false;
	size_t segs = 0, seglen = 0;
	for (size_t i = 0; i <= n; i++) {
		unsigned char c = (unsigned char)id[i];
		if (c == '.' || c == '\0') {
			if (seglen == 0)
				return fail(why, why_len, "empty segment in package id"), false;
			segs++;
			seglen = 0;
			continue;
		}
		char cb[8];
		if (!(isalnum(c) || c == '_' || c == '-'))
			return fail(why, why_len, "invalid character %s in package id (letters, digits, '_', '-', '.')",
			            show_char(c, cb)),
			       false;
		seglen++;
	}
	if (segs < 2)
		return fail(why, why_len, "package id needs at least two segments, as in com.example.app"), false;
	return true;
}
