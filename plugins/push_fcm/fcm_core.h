/* plugins/push_fcm/fcm_core.h: the pure parts of the FCM push provider, kept apart from the plugin glue so that
 * the unit test (tests/unit/fcm_test.c) can drive them without a host: the service-account file, the RS256 JWT
 * assertion of the OAuth2 service-account flow, the access-token cache timing (every function takes "now"
 * as an argument: the clock is injectable), the HTTP v1 message body, the classification of FCM answers
 * from error.details[].errorCode, and the retry delays (exponential backoff with full jitter, Retry-After). */
#ifndef BW_FCM_CORE_H
#define BW_FCM_CORE_H

#include <bulwark/errors.h>
#include <bulwark/push.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FCM_SCOPE             "https://www.googleapis.com/auth/firebase.messaging"
#define FCM_DEFAULT_TOKEN_URI "https://oauth2.googleapis.com/token"
#define FCM_JWT_LIFETIME_S    3600
#define FCM_SA_MAX_BYTES      (64 * 1024)
#define FCM_TOKEN_MAX_LEN     4096
#define FCM_REASON_MAX        256

/* The fields of a Google service-account JSON file that the flow needs. */
struct fcm_sa {
	char *client_email;
	char *token_uri;      /* FCM_DEFAULT_TOKEN_URI when the file has none */
	char *project_id;     /* NULL when the file has none */
	char *private_key_id; /* the JWT header's kid, or NULL */
	EVP_PKEY *key;        /* the RSA private key */
};

/* Reads and checks a service-account file. Every message names `setting` and the file, never the key. */
int fcm_sa_load(const char *path, const char *setting, struct fcm_sa *out, bw_error *err);
/* The same for JSON text already in memory (`path` only for messages). */
int fcm_sa_parse(const char *text, size_t len, const char *path, const char *setting, struct fcm_sa *out,
                 bw_error *err);
void fcm_sa_free(struct fcm_sa *sa);

/* base64url without padding; returns a malloc'd string or NULL. */
char *fcm_b64url(const unsigned char *data, size_t len);
/* Decodes base64url (padding optional) into a malloc'd buffer (NUL-terminated), or NULL when malformed. */
unsigned char *fcm_b64url_decode(const char *text, size_t len, size_t *out_len);

/* The signed assertion {iss: client_email, scope, aud, iat: now_s, exp: now_s + 3600}, RS256, kid when known.
 * Returns a malloc'd JWT or NULL (err filled). */
char *fcm_jwt_build(const struct fcm_sa *sa, const char *aud, int64_t now_s, bw_error *err);
/* Checks an RS256 JWT's signature with `key` (public or private); *claims (new reference) when valid. */
int fcm_jwt_verify(const char *jwt, EVP_PKEY *key, json_t **claims, bw_error *err);

/* The form body POSTed to the token endpoint (malloc'd). */
char *fcm_token_request_body(const char *jwt);

/* ---- access-token cache timing */
/* When a token obtained at `obtained_ms` that lives `expires_in_s` should be replaced: `margin_ms` before it
 * expires, but never later than half-way through a short life (so that a 60 s token is not refreshed on every
 * send when the margin is 5 minutes). */
int64_t fcm_token_refresh_at(int64_t obtained_ms, int64_t expires_in_s, int64_t margin_ms);
/* Parses a token endpoint success body: access_token and expires_in (token_type must be Bearer when present). */
int fcm_token_parse(const char *body, size_t len, char **access_token, int64_t *expires_in_s, bw_error *err);
/* A short description of a token endpoint refusal: "invalid_grant (Invalid JWT Signature.)", or "HTTP 503". */
void fcm_token_error(long status, const char *body, size_t len, char *out, size_t outsz);

/* ---- messages */
/* A registration token the plugin accepts: 1..4096 of [A-Za-z0-9_:.-]. */
bool fcm_token_valid(const char *token);
/* The messages:send body: {"message":{"token","data":{"reason","command_id","device_id"},"android":{"priority",
 * "ttl":"<n>s"}}}. malloc'd JSON text. */
char *fcm_message_json(const struct bw_push_message *msg, uint32_t default_ttl_s);
/* The "name" of a success answer ("projects/p/messages/123") into out; false when missing. */
bool fcm_message_name(const char *body, size_t len, char *out, size_t outsz);

enum fcm_action {
	FCM_ACT_SENT = 0,          /* 2xx */
	FCM_ACT_TOKEN_INVALID = 1, /* UNREGISTERED */
	FCM_ACT_FAIL = 2,          /* refused for good (INVALID_ARGUMENT, SENDER_ID_MISMATCH, ...) */
	FCM_ACT_RETRY = 3,         /* QUOTA_EXCEEDED, UNAVAILABLE, INTERNAL (or 429 / 500 / 503 without details) */
	FCM_ACT_REAUTH = 4         /* 401: the access token was refused, get a new one */
};
/* Classifies an answer of the messages endpoint; `reason` gets the FCM errorCode (or the error status, or
 * "HTTP <n>"). */
enum fcm_action fcm_classify(long status, const char *body, size_t len, char *reason, size_t reason_size);

/* ---- retries */
/* Full jitter: a delay in [0, min(cap, base * 2^retry)] picked with `rnd`. retry is 0 for the first retry. */
uint64_t fcm_backoff_ms(unsigned retry, uint64_t base_ms, uint64_t cap_ms, uint32_t rnd);
/* Retry-After (delta seconds or an HTTP date) in ms from `now_s`, capped at cap_ms; -1 when absent/unusable. */
int64_t fcm_retry_after_ms(const char *value, int64_t now_s, uint64_t cap_ms);

#endif
