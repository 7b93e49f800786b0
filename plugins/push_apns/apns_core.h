/* plugins/push_apns/apns_core.h: the pure parts of the APNs provider, unit-tested without a host: the ES256
 * provider token (JWT) and its refresh rules with an injectable clock, the classification of APNs answers,
 * the topic and expiry read from a push certificate, request headers and bodies, input checks. */
#ifndef BW_APNS_CORE_H
#define BW_APNS_CORE_H

#include <bulwark/errors.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APNS_JWT_REFRESH_MS (50LL * 60 * 1000) /* a token is replaced once it is this old */
#define APNS_JWT_FLOOR_MS   (20LL * 60 * 1000) /* and never before it is this old (Apple's limit) */
#define APNS_JWT_MAX        512
#define APNS_TOKEN_MIN      16 /* hex digits of a device token */
#define APNS_TOKEN_MAX      200
#define APNS_TOPIC_MAX      256
#define APNS_REASON_MAX     64
#define APNS_MAGIC_MAX      128

/* Loads a PEM private key (.p8 PKCS#8 for token auth, or a certificate's key); the file content is never put in
 * an error message. `what` names the setting in messages. */
int apns_key_load(const char *path, const char *what, EVP_PKEY **out, bw_error *err);

/* The provider token. `gen` grows with every new token, so a push answered ExpiredProviderToken can tell whether
 * it used the current token. */
struct apns_jwt {
	EVP_PKEY *key; /* EC P-256; owned */
	char kid[16];
	char team[16];
	char token[APNS_JWT_MAX];
	bool have;
	bool stale;        /* APNs called the current token expired: replace it as soon as the floor allows */
	int64_t issued_ms; /* iat of the current token, in ms */
	uint64_t gen;
};

/* Checks kid/team (10 characters, A-Z0-9) and takes ownership of `key` (also on failure). */
int apns_jwt_init(struct apns_jwt *j, EVP_PKEY *key, const char *kid, const char *team, bw_error *err);
void apns_jwt_free(struct apns_jwt *j);
/* The current token, signing a new one when there is none, when it is APNS_JWT_REFRESH_MS old, or when it is
 * stale and at least APNS_JWT_FLOOR_MS old. NULL on a signing failure. */
const char *apns_jwt_get(struct apns_jwt *j, int64_t now_ms, bw_error *err);
/* A push sent with token generation `used_gen` was answered 403 ExpiredProviderToken. True when it may be retried:
 * a newer token exists already, or the current one is old enough to be replaced (it is marked stale, the next
 * apns_jwt_get signs a new one). False when the current token is younger than the floor: APNs and this host
 * disagree about the time; the token is marked stale and replaced once the floor allows. */
bool apns_jwt_expired(struct apns_jwt *j, uint64_t used_gen, int64_t now_ms);
/* Signs a token for the given time without touching the cache (the building block of apns_jwt_get). */
int apns_jwt_sign(EVP_PKEY *key, const char *kid, const char *team, int64_t iat_s, char *out, size_t outsz,
                  bw_error *err);

/* What to do with an answer. */
enum apns_action {
	APNS_ACT_SENT = 0,
	APNS_ACT_TOKEN_INVALID, /* 410 (Unregistered, ExpiredToken), 400 BadDeviceToken */
	APNS_ACT_RETRY,         /* 429, 5xx, 400 IdleTimeout: later, with backoff */
	APNS_ACT_REFRESH,       /* 403 ExpiredProviderToken: new provider token, then once more */
	APNS_ACT_FAIL           /* everything else: never retried */
};
enum apns_action apns_classify(long status, const char *reason);
/* The "reason" of an APNs error body {"reason": "...", "timestamp": ...}, restricted to [A-Za-z0-9_]; when there
 * is none, "HTTP_<status>". */
void apns_reason_parse(const char *body, size_t len, long status, char *out, size_t outsz);
/* `reason` when it is one of Apple's documented reasons (a bounded metric label), else "other". */
const char *apns_reason_label(const char *reason);

/* The topic (subject UID, OID 0.9.2342.19200300.100.1.1) and notAfter of the first certificate in a PEM file. */
int apns_cert_info(const char *path, char *topic, size_t topic_sz, int64_t *not_after_s, bw_error *err);
/* Checks that `key_path` (or the cert file itself when NULL) holds the certificate's private key. */
int apns_cert_key_check(const char *cert_path, const char *key_path, bw_error *err);

/* Expiry stage: 0 more than 30 days left, 30, 7, 1 (days or fewer left), -1 expired. */
int apns_expiry_stage(int64_t not_after_s, int64_t now_s);

/* Device token: hex, APNS_TOKEN_MIN..APNS_TOKEN_MAX digits. PushMagic: 1..128 of [A-Za-z0-9-]. */
bool apns_token_valid(const char *token);
bool apns_magic_valid(const char *magic);

/* Request headers; NULL members are left out. The bearer token goes into "authorization: bearer ...". */
struct apns_hdr_in {
	const char *bearer;
	const char *topic;
	const char *push_type;
	int priority;
	int64_t expiration_s; /* 0 = deliver once or not at all */
	const char *apns_id;
	const char *collapse_id;
};
#define APNS_MAX_HEADERS 9
struct apns_headers {
	char buf[APNS_JWT_MAX + 1024];
	const char *v[APNS_MAX_HEADERS + 1]; /* NULL-terminated */
};
int apns_headers_build(const struct apns_hdr_in *in, struct apns_headers *out, bw_error *err);

/* Bodies: {"mdm":"<magic>"} for MDM pushes; {"aps":{"content-available":1},"bulwark":{...}} for app wake-ups.
 * Caller frees. */
char *apns_body_mdm(const char *magic, size_t *len);
char *apns_body_wake(const char *reason, const char *command_id, const char *device_id, size_t *len);

#endif
