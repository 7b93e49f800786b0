/* host/services/crypto.h: identifiers and secrets: UUIDs, bearer tokens, password hashes. */
#ifndef BW_CRYPTO_H
#define BW_CRYPTO_H

#include <bulwark/errors.h>
#include <stdbool.h>
#include <stddef.h>

/* Random (version 4) UUID from OpenSSL's RNG, lower-case text. Never all-zero: a zero result
 * is drawn again; RNG failure is BW_E_RANDOM, never a silent fallback. */
int bw_uuid_new(char out[37], bw_error *err);
bool bw_uuid_valid(const char *text);

/* 32 random bytes as base64url without padding (43 characters). */
#define BW_TOKEN_LEN 43
int bw_token_new(char out[BW_TOKEN_LEN + 1], bw_error *err);
/* SHA-256 of `token`, lower-case hex (64 characters): what the database stores. */
void bw_token_hash(const char *token, char out[65]);

/* scrypt (OpenSSL EVP_PBE_scrypt) with a 16-byte random salt; the result carries its
 * parameters: "$scrypt$ln=15,r=8,p=1$<salt b64>$<hash b64>". Slow on purpose (tens of ms):
 * call from the work queue. Caller frees *out. */
int bw_password_hash(const char *password, char **out, bw_error *err);
/* Constant-time comparison; false for a malformed stored value. */
bool bw_password_verify(const char *password, const char *stored);
/* Lowers the cost for tests only (ln >= 10); 0 restores the default. */
void bw_password_set_test_cost(int ln);

/* Constant-time string equality for secrets of equal length. */
bool bw_secret_equal(const char *a, const char *b);

#endif
