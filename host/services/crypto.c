/* host/services/crypto.c: identifiers and secrets on OpenSSL 3: random UUIDs, bearer tokens and
 * their SHA-256 digests, scrypt password hashes, constant-time comparison. */
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* scrypt parameters: the default cost, and the bounds a stored hash may carry. The bounds keep
 * a corrupted or hostile stored value from making one verification arbitrarily expensive. */
#define PW_LN_DEFAULT   15
#define PW_LN_MIN       10
#define PW_LN_MAX       20
#define PW_R            8
#define PW_R_MAX        32
#define PW_P            1
#define PW_P_MAX        16
#define PW_SALT_LEN     16
#define PW_KEY_LEN      32
#define PW_MAXMEM       (64u * 1024 * 1024)
#define PW_MAX_PASSWORD 1024

static int g_test_ln; /* 0 = default cost; accessed atomically (hashing runs on work-queue threads) */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Base64 without padding; `out` must hold 4 * ceil(n / 3) + 1 bytes. */
static void b64_encode(const char *alphabet, const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		size_t left = n - i;
		if (left > 1)
			v |= (uint32_t)in[i + 1] << 8;
		if (left > 2)
			v |= in[i + 2];
		out[o++] = alphabet[(v >> 18) & 63];
		out[o++] = alphabet[(v >> 12) & 63];
		if (left > 1)
			out[o++] = alphabet[(v >> 6) & 63];
		if (left > 2)
			out[o++] = alphabet[v & 63];
	}
	out[o] = '\0';
}

static int b64_std_value(char c)
{
	const char *p = c ? strchr(b64_std, c) : NULL;
	return p ? (int)(p - b64_std) : -1;
}

/* Decodes exactly `len` characters of unpadded standard base64 into exactly `n` bytes. The
 * encoding must be canonical (unused low bits zero) so that a stored value has one spelling. */
static bool b64_decode_exact(const char *in, size_t len, unsigned char *out, size_t n)
{
	if (len != (n * 4 + 2) / 3)
		return false;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64_std_value(in[i]);
		if (v < 0)
			return false;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return o == n && acc == 0;
}

static int random_fail(bw_error *err, const char *what)
{
	char buf[256];
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, buf, sizeof buf);
	else
		snprintf(buf, sizeof buf, "no OpenSSL error reported");
	ERR_clear_error();
	return bw_error_set(err, BW_E_RANDOM, "%s: the random number generator failed: %s", what, buf);
}

int bw_uuid_new(char out[37], bw_error *err)
{
	unsigned char b[16];
	bool drawn = false;
	out[0] = '\0';
	/* An all-zero draw means a broken RNG rather than bad luck; draw again, then give up. */
	for (int tries = 0; tries < 3 && !drawn; tries++) {
		if (RAND_bytes(b, sizeof b) != 1)
			return random_fail(err, "UUID");
		for (size_t i = 0; i < sizeof b; i++)
			if (b[i])
				drawn = true;
	}
	if (!drawn)
		return bw_error_set(err, BW_E_RANDOM, "UUID: the random number generator returned only zeros");
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < sizeof b; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 15];
	}
	out[o] = '\0';
	return BW_OK;
}

/* The canonical text form only (lower-case), so that an id has one spelling in the database. */
bool bw_uuid_valid(const char *text)
{
	if (!text || strlen(text) != 36)
		return false;
	bool nonzero = false;
	for (size_t i = 0; i < 36; i++) {
		char c = text[i];
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return false;
		} else if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {
			if (c != '0')
				nonzero = true;
		} else {
			return false;
		}
	}
	return nonzero;
}

int bw_token_new(char out[BW_TOKEN_LEN + 1], bw_error *err)
{
	unsigned char b[32];
	char buf[45];
	out[0] = '\0';
	if (RAND_bytes(b, sizeof b) != 1)
		return random_fail(err, "token");
	b64_encode(b64_url, b, sizeof b, buf);
	OPENSSL_cleanse(b, sizeof b);
	memcpy(out, buf, BW_TOKEN_LEN + 1);
	OPENSSL_cleanse(buf, sizeof buf);
	return BW_OK;
}

void bw_token_hash(const char *token, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	static const char hex[] = "0123456789abcdef";
	out[0] = '\0';
	if (!token || EVP_Digest(token, strlen(token), md, &n, EVP_sha256(), NULL) != 1 || n != 32) {
		/* Cannot happen with a working libcrypto; an empty hash matches no stored token. */
		ERR_clear_error();
		return;
	}
	for (unsigned int i = 0; i < n; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

void bw_password_set_test_cost(int ln)
{
	if (ln == 0 || (ln >= PW_LN_MIN && ln <= PW_LN_MAX))
		__atomic_store_n(&g_test_ln, ln, __ATOMIC_RELAXED);
}

static bool scrypt_derive(const char *password, size_t len, const unsigned char *salt, int ln, int r, int p,
                          unsigned char key[PW_KEY_LEN])
{
	int ok = EVP_PBE_scrypt(password, len, salt, PW_SALT_LEN, (uint64_t)1 << ln, (uint64_t)r, (uint64_t)p,
	                        PW_MAXMEM, key, PW_KEY_LEN);
	if (ok != 1)
		ERR_clear_error();
	return ok == 1;
}

int bw_password_hash(const char *password, char **out, bw_error *err)
{
	*out = NULL;
	size_t len = password ? strlen(password) : 0;
	if (len == 0)
		return bw_error_set(err, BW_E_INVALID, "password: must not be empty");
	if (len > PW_MAX_PASSWORD)
		return bw_error_set(err, BW_E_INVALID, "password: longer than %d bytes", PW_MAX_PASSWORD);
	int ln = __atomic_load_n(&g_test_ln, __ATOMIC_RELAXED);
	if (ln == 0)
		ln = PW_LN_DEFAULT;

	unsigned char salt[PW_SALT_LEN], key[PW_KEY_LEN];
	if (RAND_bytes(salt, sizeof salt) != 1)
		return random_fail(err, "password salt");
	if (!scrypt_derive(password, len, salt, ln, PW_R, PW_P, key))
		return bw_error_set(err, BW_E_INTERNAL, "password: scrypt failed (ln=%d, r=%d, p=%d)", ln, PW_R, PW_P);
	char salt64[32], key64[48];
	b64_encode(b64_std, salt, sizeof salt, salt64);
	b64_encode(b64_std, key, sizeof key, key64);
	OPENSSL_cleanse(key, sizeof key);
	char buf[160];
	int n = snprintf(buf, sizeof buf, "$scrypt$ln=%d,r=%d,p=%d$%s$%s", ln, PW_R, PW_P, salt64, key64);
	OPENSSL_cleanse(key64, sizeof key64);
	if (n < 0 || (size_t)n >= sizeof buf)
		return bw_error_set(err, BW_E_INTERNAL, "password: encoded hash too long");
	*out = strdup(buf);
	OPENSSL_cleanse(buf, sizeof buf);
	if (!*out)
		return bw_error_set(err, BW_E_NOMEM, "password: out of memory");
	return BW_OK;
}

/* Parses "<prefix><decimal>" with 1..2 digits and no leading zero; advances *s. */
static bool parse_param(const char **s, const char *prefix, int *value)
{
	size_t pl = strlen(prefix);
	if (strncmp(*s, prefix, pl) != 0)
		return false;
	const char *p = *s + pl;
	int v = 0, digits = 0;
	while (*p >= '0' && *p <= '9' && digits < 3) {
		v = v * 10 + (*p - '0');
		p++;
		digits++;
	}
	if (digits == 0 || digits > 2 || (digits > 1 && (*s)[pl] == '0'))
		return false;
	*value = v;
	*s = p;
	return true;
}

bool bw_password_verify(const char *password, const char *stored)
{
	if (!password || !stored)
		return false;
	size_t len = strlen(password);
	if (len == 0 || len > PW_MAX_PASSWORD)
		return false;

	const char *s = stored;
	int ln, r, p;
	if (strncmp(s, "$scrypt$", 8) != 0)
		return false;
	s += 8;
	if (!parse_param(&s, "ln=", &ln) || !parse_param(&s, ",r=", &r) || !parse_param(&s, ",p=", &p) || *s != '$')
		return false;
	if (ln < PW_LN_MIN || ln > PW_LN_MAX || r < 1 || r > PW_R_MAX || p < 1 || p > PW_P_MAX)
		return false;
	s++;
	const char *dollar = strchr(s, '$');
	if (!dollar)
		return false;
	unsigned char salt[PW_SALT_LEN], want[PW_KEY_LEN], got[PW_KEY_LEN];
	if (!b64_decode_exact(s, (size_t)(dollar - s), salt, sizeof salt))
		return false;
	const char *h = dollar + 1;
	if (!b64_decode_exact(h, strlen(h), want, sizeof want))
		return false;
	/* Parameters needing more than PW_MAXMEM fail here and verify as false. */
	if (!scrypt_derive(password, len, salt, ln, r, p, got))
		return false;
	bool same = CRYPTO_memcmp(got, want, sizeof got) == 0;
	OPENSSL_cleanse(got, sizeof got);
	OPENSSL_cleanse(want, sizeof want);
	return same;
}

bool bw_secret_equal(const char *a, const char *b)
{
	if (!a || !b)
		return false;
	size_t la = strlen(a), lb = strlen(b);
	if (la != lb) /* lengths are not secret: tokens and digests have fixed sizes */
		return false;
	return CRYPTO_memcmp(a, b, la) == 0;
}
