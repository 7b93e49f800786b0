/* tests/unit/apns_test.c: unit tests of the push_apns core (plugins/push_apns/apns_core.c): the ES256 provider
 * token (structure, signature, kid/iss/iat) and its refresh rules driven by an injected clock (reuse, 50-minute
 * refresh, the 20-minute floor, ExpiredProviderToken handling), the classification of every documented APNs
 * status/reason, error bodies, the topic and expiry read from a certificate's subject UID, request headers and
 * bodies, and input checks. */
#include "apns_core.h"
#include "testutil.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KID  "ABC123DEFG"
#define TEAM "DEF123GHIJ"
#define MIN  (60LL * 1000)
#define T0   1700000000000LL

static EVP_PKEY *gen_p256(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	return k;
}

static size_t b64url_dec(const char *in, size_t n, unsigned char *out)
{
	char buf[1024];
	assert_true(n + 4 < sizeof buf);
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		buf[m++] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	while (m % 4)
		buf[m++] = '=';
	buf[m] = '\0';
	int len = EVP_DecodeBlock(out, (const unsigned char *)buf, (int)m);
	assert_true(len >= 0);
	size_t pad = 0;
	while (pad < m && buf[m - 1 - pad] == '=')
		pad++;
	return (size_t)len - pad;
}

/* Splits a JWT, checks the header and signature with `key`, returns the claims (new reference). */
static json_t *jwt_check(const char *tok, EVP_PKEY *key)
{
	const char *d1 = strchr(tok, '.');
	assert_non_null(d1);
	const char *d2 = strchr(d1 + 1, '.');
	assert_non_null(d2);
	assert_null(strchr(d2 + 1, '.'));
	assert_null(strchr(tok, '='));
	unsigned char buf[512];
	size_t n = b64url_dec(tok, (size_t)(d1 - tok), buf);
	json_t *h = json_loadb((const char *)buf, n, 0, NULL);
	assert_non_null(h);
	assert_string_equal(json_string_value(json_object_get(h, "alg")), "ES256");
	assert_string_equal(json_string_value(json_object_get(h, "kid")), KID);
	json_decref(h);
	n = b64url_dec(d1 + 1, (size_t)(d2 - d1 - 1), buf);
	json_t *c = json_loadb((const char *)buf, n, 0, NULL);
	assert_non_null(c);
	unsigned char sig[64];
	assert_int_equal(b64url_dec(d2 + 1, strlen(d2 + 1), sig), 64);
	ECDSA_SIG *s = ECDSA_SIG_new();
	ECDSA_SIG_set0(s, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
	unsigned char *der = NULL;
	int dlen = i2d_ECDSA_SIG(s, &der);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key), 1);
	assert_int_equal(EVP_DigestVerify(md, der, (size_t)dlen, (const unsigned char *)tok, (size_t)(d2 - tok)), 1);
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	ECDSA_SIG_free(s);
	return c;
}

static void test_jwt_structure_and_signature(void **state)
{
	(void)state;
	EVP_PKEY *key = gen_p256();
	EVP_PKEY_up_ref(key);
	struct apns_jwt j;
	bw_error err = {0};
	assert_int_equal(apns_jwt_init(&j, key, KID, TEAM, &err), BW_OK);
	const char *tok = apns_jwt_get(&j, T0 + 999, &err);
	assert_non_null(tok);
	json_t *c = jwt_check(tok, key);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), TEAM);
	assert_int_equal(json_integer_value(json_object_get(c, "iat")), T0 / 1000);
	assert_int_equal(json_object_size(c), 2);
	json_decref(c);
	/* A signature made with another key does not verify. */
	EVP_PKEY *other = gen_p256();
	char tok2[APNS_JWT_MAX];
	assert_int_equal(apns_jwt_sign(other, KID, TEAM, T0 / 1000, tok2, sizeof tok2, &err), BW_OK);
	const char *d2 = strrchr(tok2, '.');
	unsigned char sig[64];
	b64url_dec(d2 + 1, strlen(d2 + 1), sig);
	ECDSA_SIG *s = ECDSA_SIG_new();
	ECDSA_SIG_set0(s, BN_bin2bn(sig, 32, NULL), BN_bin2bn(sig + 32, 32, NULL));
	unsigned char *der = NULL;
	int dlen = i2d_ECDSA_SIG(s, &der);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key);
	assert_int_not_equal(EVP_DigestVerify(md, der, (size_t)dlen, (const unsigned char *)tok2, (size_t)(d2 - tok2)),
	                     1);
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	ECDSA_SIG_free(s);
	EVP_PKEY_free(other);
	EVP_PKEY_free(key);
	apns_jwt_free(&j);
}

static void test_jwt_refresh_timing(void **state)
{
	(void)state;
	struct apns_jwt j;
	bw_error err = {0};
	assert_int_equal(apns_jwt_init(&j, gen_p256(), KID, TEAM, &err), BW_OK);
	char first[APNS_JWT_MAX];
	snprintf(first, sizeof first, "%s", apns_jwt_get(&j, T0, &err));
	assert_int_equal(j.gen, 1);
	/* Reused until it is 50 minutes old. */
	assert_string_equal(apns_jwt_get(&j, T0 + 1, &err), first);
	assert_string_equal(apns_jwt_get(&j, T0 + 20 * MIN, &err), first);
	assert_string_equal(apns_jwt_get(&j, T0 + 50 * MIN - 1, &err), first);
	assert_int_equal(j.gen, 1);
	const char *t2 = apns_jwt_get(&j, T0 + 50 * MIN, &err);
	assert_string_not_equal(t2, first);
	assert_int_equal(j.gen, 2);
	assert_int_equal(j.issued_ms, T0 + 50 * MIN);
	/* Every refresh is at least 20 minutes after the previous one over a long run. */
	int64_t last = j.issued_ms;
	uint64_t gen = j.gen;
	for (int64_t t = T0 + 50 * MIN; t < T0 + 24 * 60 * MIN; t += 7 * 1000) {
		apns_jwt_get(&j, t, &err);
		if (j.gen != gen) {
			assert_true(j.issued_ms - last >= APNS_JWT_FLOOR_MS);
			assert_true(j.issued_ms - last <= APNS_JWT_REFRESH_MS + 7000);
			last = j.issued_ms;
			gen = j.gen;
		}
	}
	apns_jwt_free(&j);
}

static void test_jwt_expired_provider_token(void **state)
{
	(void)state;
	struct apns_jwt j;
	bw_error err = {0};
	assert_int_equal(apns_jwt_init(&j, gen_p256(), KID, TEAM, &err), BW_OK);
	apns_jwt_get(&j, T0, &err);
	uint64_t g1 = j.gen;
	/* APNs calls a 10-minute-old token expired: the floor forbids a new one, no retry; it is stale. */
	assert_false(apns_jwt_expired(&j, g1, T0 + 10 * MIN));
	assert_true(j.stale);
	assert_int_equal(apns_jwt_get(&j, T0 + 19 * MIN, &err) != NULL, 1);
	assert_int_equal(j.gen, g1);
	/* Once the floor allows it, the stale token is replaced before its 50 minutes. */
	apns_jwt_get(&j, T0 + 20 * MIN, &err);
	assert_int_equal(j.gen, g1 + 1);
	assert_false(j.stale);
	/* A push that used the previous token is retried with the current one, no new signing. */
	uint64_t g2 = j.gen;
	assert_true(apns_jwt_expired(&j, g1, T0 + 21 * MIN));
	assert_false(j.stale);
	assert_int_equal(j.gen, g2);
	/* Expired at 30 minutes: old enough, retried; the next get signs a new one at once. */
	assert_true(apns_jwt_expired(&j, g2, T0 + 41 * MIN));
	apns_jwt_get(&j, T0 + 41 * MIN, &err);
	assert_int_equal(j.gen, g2 + 1);
	assert_int_equal(j.issued_ms, T0 + 41 * MIN);
	/* A clock that jumps back more than a minute re-signs (iat would be in the future). */
	apns_jwt_get(&j, T0 + 30 * MIN, &err);
	assert_int_equal(j.gen, g2 + 2);
	apns_jwt_free(&j);
}

static void test_jwt_init_errors(void **state)
{
	(void)state;
	struct apns_jwt j;
	bw_error err = {0};
	assert_int_equal(apns_jwt_init(&j, gen_p256(), "short", TEAM, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "key_id"));
	assert_int_equal(apns_jwt_init(&j, gen_p256(), KID, "team-lower", &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "team_id"));
	assert_int_equal(apns_jwt_init(&j, EVP_EC_gen("P-384"), KID, TEAM, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "P-256"));
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	assert_int_equal(apns_jwt_init(&j, rsa, KID, TEAM, &err), BW_E_CONFIG);
}

static void test_key_load(void **state)
{
	(void)state;
	char *dir = bw_test_tmpdir("apns");
	bw_error err = {0};
	EVP_PKEY *k = NULL;
	char missing[512];
	snprintf(missing, sizeof missing, "%s/nope.p8", dir);
	assert_int_equal(apns_key_load(missing, "key_file", &k, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "key_file"));
	assert_non_null(strstr(err.message, "nope.p8"));
	char *junk =
	    bw_test_write(dir, "junk.p8", "-----BEGIN PRIVATE KEY-----\nnot base64 !!\n-----END PRIVATE KEY-----\n");
	assert_int_equal(apns_key_load(junk, "key_file", &k, &err), BW_E_CONFIG);
	assert_null(strstr(err.message, "not base64")); /* the content never goes into a message */
	assert_null(k);
	/* A real PKCS#8 key (.p8 format) loads. */
	EVP_PKEY *g = gen_p256();
	char path[512];
	snprintf(path, sizeof path, "%s/AuthKey.p8", dir);
	FILE *f = fopen(path, "w");
	PEM_write_PKCS8PrivateKey(f, g, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	assert_int_equal(apns_key_load(path, "key_file", &k, &err), BW_OK);
	assert_int_equal(EVP_PKEY_eq(k, g), 1);
	EVP_PKEY_free(k);
	EVP_PKEY_free(g);
	free(junk);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_classify(void **state)
{
	(void)state;
	assert_int_equal(apns_classify(200, NULL), APNS_ACT_SENT);
	assert_int_equal(apns_classify(410, "Unregistered"), APNS_ACT_TOKEN_INVALID);
	assert_int_equal(apns_classify(410, "ExpiredToken"), APNS_ACT_TOKEN_INVALID);
	assert_int_equal(apns_classify(400, "BadDeviceToken"), APNS_ACT_TOKEN_INVALID);
	assert_int_equal(apns_classify(403, "ExpiredProviderToken"), APNS_ACT_REFRESH);
	assert_int_equal(apns_classify(429, "TooManyRequests"), APNS_ACT_RETRY);
	assert_int_equal(apns_classify(429, "TooManyProviderTokenUpdates"), APNS_ACT_RETRY);
	assert_int_equal(apns_classify(500, "InternalServerError"), APNS_ACT_RETRY);
	assert_int_equal(apns_classify(503, "ServiceUnavailable"), APNS_ACT_RETRY);
	assert_int_equal(apns_classify(503, "Shutdown"), APNS_ACT_RETRY);
	assert_int_equal(apns_classify(502, NULL), APNS_ACT_RETRY);
	assert_int_equal(apns_classify(400, "IdleTimeout"), APNS_ACT_RETRY);
	static const char *const fail400[] = {"BadCollapseId",    "BadExpirationDate", "BadMessageId",
	                                      "BadPriority",      "BadTopic",          "DeviceTokenNotForTopic",
	                                      "DuplicateHeaders", "InvalidPushType",   "MissingDeviceToken",
	                                      "MissingTopic",     "PayloadEmpty",      "TopicDisallowed"};
	for (size_t i = 0; i < sizeof fail400 / sizeof fail400[0]; i++)
		assert_int_equal(apns_classify(400, fail400[i]), APNS_ACT_FAIL);
	static const char *const fail403[] = {
	    "BadCertificate",          "BadCertificateEnvironment", "Forbidden",
	    "InvalidProviderToken",    "MissingProviderToken",      "UnrelatedKeyIdInToken",
	    "BadEnvironmentKeyInToken"};
	for (size_t i = 0; i < sizeof fail403 / sizeof fail403[0]; i++)
		assert_int_equal(apns_classify(403, fail403[i]), APNS_ACT_FAIL);
	assert_int_equal(apns_classify(404, "BadPath"), APNS_ACT_FAIL);
	assert_int_equal(apns_classify(405, "MethodNotAllowed"), APNS_ACT_FAIL);
	assert_int_equal(apns_classify(413, "PayloadTooLarge"), APNS_ACT_FAIL);
	assert_int_equal(apns_classify(401, NULL), APNS_ACT_FAIL);
	/* Only BadDeviceToken among the 400s invalidates a token: a topic mismatch is our configuration. */
	assert_int_equal(apns_classify(400, "DeviceTokenNotForTopic"), APNS_ACT_FAIL);
}

static void test_reason_parse(void **state)
{
	(void)state;
	char r[80];
	const char *b = "{\"reason\":\"Unregistered\",\"timestamp\":1700000000000}";
	apns_reason_parse(b, strlen(b), 410, r, sizeof r);
	assert_string_equal(r, "Unregistered");
	apns_reason_parse("", 0, 502, r, sizeof r);
	assert_string_equal(r, "HTTP_502");
	b = "<html>bad gateway</html>";
	apns_reason_parse(b, strlen(b), 502, r, sizeof r);
	assert_string_equal(r, "HTTP_502");
	b = "{\"reason\":\"Bad reason\\nInjected: 1\"}";
	apns_reason_parse(b, strlen(b), 400, r, sizeof r);
	assert_string_equal(r, "HTTP_400");
	b = "{\"reason\":42}";
	apns_reason_parse(b, strlen(b), 400, r, sizeof r);
	assert_string_equal(r, "HTTP_400");
	assert_string_equal(apns_reason_label("TooManyRequests"), "TooManyRequests");
	assert_string_equal(apns_reason_label("HTTP_502"), "other");
	assert_string_equal(apns_reason_label(NULL), "other");
}

/* Writes a self-signed certificate with the given subject UID (NULL: none), valid for `days`, and its key. */
static void make_cert(const char *dir, const char *uid, long days, char **cert_path, char **key_path)
{
	EVP_PKEY *k = gen_p256();
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), -86400);
	X509_gmtime_adj(X509_getm_notAfter(x), days * 86400);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"APNS test", -1, -1, 0);
	if (uid)
		X509_NAME_add_entry_by_NID(n, NID_userId, MBSTRING_ASC, (const unsigned char *)uid, -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	X509_sign(x, k, EVP_sha256());
	char p[512];
	snprintf(p, sizeof p, "%s/%s.pem", dir, uid ? uid : "nouid");
	FILE *f = fopen(p, "w");
	PEM_write_X509(f, x);
	fclose(f);
	*cert_path = strdup(p);
	snprintf(p, sizeof p, "%s/%s.key", dir, uid ? uid : "nouid");
	f = fopen(p, "w");
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	*key_path = strdup(p);
	X509_free(x);
	EVP_PKEY_free(k);
}

static void test_cert_topic_and_expiry(void **state)
{
	(void)state;
	char *dir = bw_test_tmpdir("apns");
	char *c1, *k1, *c2, *k2;
	make_cert(dir, "com.apple.mgmt.External.1f0e2c4a-6d8b-4f3e-9a7c-5b1d2e3f4a5b", 365, &c1, &k1);
	make_cert(dir, NULL, 10, &c2, &k2);
	char topic[APNS_TOPIC_MAX];
	int64_t na = 0;
	bw_error err = {0};
	assert_int_equal(apns_cert_info(c1, topic, sizeof topic, &na, &err), BW_OK);
	assert_string_equal(topic, "com.apple.mgmt.External.1f0e2c4a-6d8b-4f3e-9a7c-5b1d2e3f4a5b");
	int64_t now = (int64_t)time(NULL);
	assert_true(na > now + 364 * 86400 && na < now + 366 * 86400);
	assert_int_equal(apns_cert_info(c2, topic, sizeof topic, &na, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "UID"));
	assert_int_equal(apns_cert_info("/nonexistent/cert.pem", topic, sizeof topic, &na, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "/nonexistent/cert.pem"));
	/* The key must belong to the certificate. */
	assert_int_equal(apns_cert_key_check(c1, k1, &err), BW_OK);
	assert_int_equal(apns_cert_key_check(c1, k2, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "not the key"));
	/* Expiry stages: warnings 30, 7 and 1 days before, -1 once expired. */
	assert_int_equal(apns_expiry_stage(now + 31 * 86400, now), 0);
	assert_int_equal(apns_expiry_stage(now + 30 * 86400, now), 30);
	assert_int_equal(apns_expiry_stage(now + 8 * 86400, now), 30);
	assert_int_equal(apns_expiry_stage(now + 7 * 86400, now), 7);
	assert_int_equal(apns_expiry_stage(now + 2 * 86400, now), 7);
	assert_int_equal(apns_expiry_stage(now + 86400, now), 1);
	assert_int_equal(apns_expiry_stage(now + 1, now), 1);
	assert_int_equal(apns_expiry_stage(now, now), -1);
	assert_int_equal(apns_expiry_stage(now - 100, now), -1);
	free(c1), free(k1), free(c2), free(k2);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_token_and_magic(void **state)
{
	(void)state;
	assert_true(apns_token_valid("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"));
	assert_true(apns_token_valid("ABCDEF0123456789"));
	assert_false(apns_token_valid(NULL));
	assert_false(apns_token_valid(""));
	assert_false(apns_token_valid("0011"));              /* too short */
	assert_false(apns_token_valid("00112233445566778")); /* odd */
	assert_false(apns_token_valid("0011223344556677/x"));
	assert_false(apns_token_valid("00112233445566778899aabbccddeeffg0"));
	char long_tok[APNS_TOKEN_MAX + 3];
	memset(long_tok, 'a', sizeof long_tok - 1);
	long_tok[sizeof long_tok - 1] = '\0';
	assert_false(apns_token_valid(long_tok));
	assert_true(apns_magic_valid("5D7F7A4B-2C1E-4B3A-9F0E-1A2B3C4D5E6F"));
	assert_false(apns_magic_valid(""));
	assert_false(apns_magic_valid("a\"b"));
	assert_false(apns_magic_valid("a b"));
}

static void test_headers(void **state)
{
	(void)state;
	struct apns_hdr_in in = {.bearer = "aaa.bbb.ccc",
	                         .topic = "com.example.app",
	                         .push_type = "background",
	                         .priority = 5,
	                         .expiration_s = 1700003600,
	                         .apns_id = "123e4567-e89b-12d3-a456-426614174000",
	                         .collapse_id = "bulwark-wake"};
	struct apns_headers h;
	bw_error err = {0};
	assert_int_equal(apns_headers_build(&in, &h, &err), BW_OK);
	const char *want[] = {"authorization: bearer aaa.bbb.ccc",
	                      "apns-topic: com.example.app",
	                      "apns-push-type: background",
	                      "apns-id: 123e4567-e89b-12d3-a456-426614174000",
	                      "apns-collapse-id: bulwark-wake",
	                      "apns-priority: 5",
	                      "apns-expiration: 1700003600",
	                      "content-type: application/json",
	                      NULL};
	for (size_t i = 0; want[i]; i++) {
		assert_non_null(h.v[i]);
		assert_string_equal(h.v[i], want[i]);
	}
	assert_null(h.v[8]);
	/* Certificate auth: no authorization header; MDM without collapse id. */
	struct apns_hdr_in mdm = {.topic = "com.apple.mgmt.External.x", .push_type = "mdm", .priority = 10};
	assert_int_equal(apns_headers_build(&mdm, &h, &err), BW_OK);
	assert_string_equal(h.v[0], "apns-topic: com.apple.mgmt.External.x");
	assert_string_equal(h.v[1], "apns-push-type: mdm");
	assert_string_equal(h.v[2], "apns-priority: 10");
	assert_string_equal(h.v[3], "apns-expiration: 0");
	for (size_t i = 0; h.v[i]; i++)
		assert_null(strstr(h.v[i], "authorization"));
	in.priority = 7;
	assert_int_equal(apns_headers_build(&in, &h, &err), BW_E_INVALID);
	in.priority = 10;
	in.collapse_id = "0123456789012345678901234567890123456789012345678901234567890123456789";
	assert_int_equal(apns_headers_build(&in, &h, &err), BW_E_INVALID);
	in.collapse_id = NULL;
	in.topic = "bad\r\ninjected: 1";
	assert_int_equal(apns_headers_build(&in, &h, &err), BW_E_INVALID);
}

static void test_bodies(void **state)
{
	(void)state;
	size_t n = 0;
	char *b = apns_body_mdm("5D7F7A4B-2C1E", &n);
	assert_string_equal(b, "{\"mdm\":\"5D7F7A4B-2C1E\"}");
	assert_int_equal(n, strlen(b));
	free(b);
	b = apns_body_wake("command", "c-1", "d-1", &n);
	json_t *j = json_loads(b, 0, NULL);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "aps"), "content-available")), 1);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "bulwark"), "reason")), "command");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "bulwark"), "command_id")), "c-1");
	json_decref(j);
	free(b);
	/* Quotes, backslashes, control and non-ASCII bytes cannot break the JSON. */
	b = apns_body_wake("te\"st\\\n\x01", NULL, "d\xc3\xa9", &n);
	j = json_loads(b, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "bulwark"), "reason")),
	                    "te\"st\\\n\x01");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "bulwark"), "device_id")), "d??");
	assert_null(json_object_get(json_object_get(j, "bulwark"), "command_id"));
	json_decref(j);
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jwt_structure_and_signature),
	    cmocka_unit_test(test_jwt_refresh_timing),
	    cmocka_unit_test(test_jwt_expired_provider_token),
	    cmocka_unit_test(test_jwt_init_errors),
	    cmocka_unit_test(test_key_load),
	    cmocka_unit_test(test_classify),
	    cmocka_unit_test(test_reason_parse),
	    cmocka_unit_test(test_cert_topic_and_expiry),
	    cmocka_unit_test(test_token_and_magic),
	    cmocka_unit_test(test_headers),
	    cmocka_unit_test(test_bodies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
