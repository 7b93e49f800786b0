/* host/policy/secrets.h: policy secrets: the AES-256-GCM key file kept apart from the database, encryption of
 * Wi-Fi secrets at rest, and salted PBKDF2-SHA256 verifiers for the uninstall-protection password. */
#ifndef BW_POLICY_SECRETS_H
#define BW_POLICY_SECRETS_H

#include <bulwark/errors.h>
#include <jansson.h>
#include <stdbool.h>

typedef struct bw_secrets bw_secrets;

/* PBKDF2-SHA256 parameters of new verifiers (OWASP 2023 minimum for PBKDF2-HMAC-SHA256). */
#define BW_VERIFIER_ITERATIONS 210000
#define BW_VERIFIER_SALT_LEN   16
#define BW_VERIFIER_HASH_LEN   32
/* Longest plaintext bw_secrets_encrypt accepts (bytes). */
#define BW_SECRET_MAX_PLAIN 4096

/* Opens (or creates, mode 0600, in a directory separate from the database: <var_dir>/keys/policy.key by
 * default) the 256-bit key. Refuses a key file readable by group/others. */
bw_secrets *bw_secrets_open(const char *key_path, bw_error *err);
void bw_secrets_free(bw_secrets *s);
int bw_secrets_encrypt(bw_secrets *s, const char *plain, char **b64_out, bw_error *err); /* AES-256-GCM, random nonce */
int bw_secrets_decrypt(bw_secrets *s, const char *b64, char **plain_out, bw_error *err);
int bw_verifier_make(const char *password, json_t **out, bw_error *err); /* {"algorithm","iterations","salt","hash"} */
bool bw_verifier_check(json_t *verifier, const char *password);

/* Base64 (standard alphabet, padded) helpers shared by the policy code. Caller frees. Decoding is strict:
 * no whitespace, correct padding; returns NULL on malformed input. */
char *bw_b64_encode(const unsigned char *data, size_t len);
unsigned char *bw_b64_decode(const char *text, size_t *len_out);

#endif
