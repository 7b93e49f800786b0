/* tests/unit/fcm_test.c: unit tests of the pure parts of push_fcm (plugins/push_fcm/fcm_core.c): service-account
 * files (good, missing, malformed, wrong key), the RS256 JWT assertion checked against the public key of a key
 * generated here, access-token refresh timing with a simulated clock, token endpoint answers, the classification
 * of FCM answers from error.details[].errorCode, backoff bounds (full jitter) and Retry-After. */
#include "testutil.h"

#include "fcm_core.h"

#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static EVP_PKEY *g_key;  /* RSA 2048, generated once */
static char *g_key_pem;  /* its PKCS#8 PEM */
static char *g_key_json; /* g_key_pem as a JSON string (with \n escapes) */

static char *pem_of(EVP_PKEY *k)
{
	BIO *b = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
	char *data;
	long n = BIO_get_mem_data(b, &data);
	/* the BIO's buffer is not NUL-terminated: copy exactly n bytes (strndup may read further) */
	char *out = malloc((size_t)n + 1);
	assert_non_null(out);
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	BIO_free(b);
	return out;
}

static int setup_all(void **state)
{
	(void)state;
	g_key = EVP_RSA_gen(2048);
	if (!g_key)
		return -1;
	g_key_pem = pem_of(g_key);
	json_t *s = json_string(g_key_pem);
	g_key_json = json_dumps(s, JSON_ENCODE_ANY);
	json_decref(s);
	return 0;
}

static int teardown_all(void **state)
{
	(void)state;
	EVP_PKEY_free(g_key);
	free(g_key_pem);
	free(g_key_json);
	return 0;
}

/* A service-account JSON text with the test key; `extra` is inserted verbatim (", \"k\": v" pairs). */
static char *sa_text(const char *extra, bool with_project)
{
	char *out = NULL;
	int n = asprintf(&out,
	                 "{\"type\": \"service_account\", %s\"private_key_id\": \"k1\", \"private_key\": %s, "
	                 "\"client_email\": \"pusher@proj.iam.gserviceaccount.com\", "
	                 "\"token_uri\": \"https://127.0.0.1:9/token\"%s}",
	                 with_project ? "\"project_id\": \"proj-1\", " : "", g_key_json, extra ? extra : "");
	assert_true(n > 0);
	return out;
}

static void test_b64url_roundtrip(void **state)
{
	(void)state;
	const unsigned char data[] = {0xfb, 0xff, 0x00, 0x3e, 0x3f, 'a', 'b'};
	for (size_t len = 0; len <= sizeof data; len++) {
		char *e = fcm_b64url(data, len);
		assert_non_null(e);
		assert_null(strpbrk(e, "+/="));
		size_t dl = 99;
		unsigned char *d = fcm_b64url_decode(e, strlen(e), &dl);
		assert_non_null(d);
		assert_int_equal(dl, len);
		assert_memory_equal(d, data, len);
		free(d);
		free(e);
	}
	size_t dl;
	assert_null(fcm_b64url_decode("a", 1, &dl));
	assert_null(fcm_b64url_decode("ab*d", 4, &dl));
}

static void test_sa_load_good(void **state)
{
	(void)state;
	char *dir = bw_test_tmpdir("fcm");
	char *text = sa_text(NULL, true);
	char *path = bw_test_write(dir, "sa.json", text);
	struct fcm_sa sa;
	bw_error err;
	bw_error_clear(&err);
	assert_int_equal(fcm_sa_load(path, "service_account_file", &sa, &err), BW_OK);
	assert_string_equal(sa.client_email, "pusher@proj.iam.gserviceaccount.com");
	assert_string_equal(sa.token_uri, "https://127.0.0.1:9/token");
	assert_string_equal(sa.project_id, "proj-1");
	assert_string_equal(sa.private_key_id, "k1");
	assert_non_null(sa.key);
	fcm_sa_free(&sa);
	/* token_uri and project_id are optional: the default token endpoint, no project. */
	char *t2;
	assert_true(asprintf(&t2, "{\"client_email\": \"a@b\", \"private_key\": %s}", g_key_json) > 0);
	assert_int_equal(fcm_sa_parse(t2, strlen(t2), "x.json", "service_account_file", &sa, &err), BW_OK);
	assert_string_equal(sa.token_uri, FCM_DEFAULT_TOKEN_URI);
	assert_null(sa.project_id);
	fcm_sa_free(&sa);
	free(t2);
	free(path);
	free(text);
	bw_test_rmtree(dir);
	free(dir);
}

/* Every refusal is a config error naming the setting and the file, and never quotes the key. */
static void expect_sa_error(const char *text, const char *needle)
{
	struct fcm_sa sa;
	bw_error err;
	bw_error_clear(&err);
	assert_int_equal(fcm_sa_parse(text, strlen(text), "/etc/sa.json", "service_account_file", &sa, &err),
	                 BW_E_CONFIG);
	assert_non_null(strstr(err.message, "service_account_file /etc/sa.json"));
	if (!strstr(err.message, needle))
		fail_msg("'%s' not in '%s'", needle, err.message);
	assert_null(strstr(err.message, "PRIVATE KEY"));
	assert_null(sa.key);
	assert_null(sa.client_email);
}

static void test_sa_errors(void **state)
{
	(void)state;
	expect_sa_error("{not json", "not valid JSON");
	expect_sa_error("[1, 2]", "not a JSON object");
	char *t;
	assert_true(asprintf(&t, "{\"private_key\": %s}", g_key_json) > 0);
	expect_sa_error(t, "\"client_email\"");
	free(t);
	expect_sa_error("{\"client_email\": \"a@b\"}", "\"private_key\"");
	expect_sa_error("{\"client_email\": \"a@b\", \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nAAAA\\n\"}",
	                "not a PEM private key");
	expect_sa_error("{\"client_email\": 5, \"private_key\": \"x\"}", "\"client_email\" must be");
	assert_true(asprintf(&t, "{\"type\": \"authorized_user\", \"client_email\": \"a@b\", \"private_key\": %s}",
	                     g_key_json) > 0);
	expect_sa_error(t, "service_account");
	free(t);
	/* An EC key is not what RS256 needs. */
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	assert_non_null(ec);
	char *pem = pem_of(ec);
	json_t *js = json_string(pem);
	char *q = json_dumps(js, JSON_ENCODE_ANY);
	assert_true(asprintf(&t, "{\"client_email\": \"a@b\", \"private_key\": %s}", q) > 0);
	expect_sa_error(t, "RSA key");
	free(t);
	free(q);
	json_decref(js);
	free(pem);
	EVP_PKEY_free(ec);

	/* Files: missing, empty, a directory. */
	struct fcm_sa sa;
	bw_error err;
	char *dir = bw_test_tmpdir("fcm");
	char missing[1100];
	snprintf(missing, sizeof missing, "%s/none.json", dir);
	assert_int_equal(fcm_sa_load(missing, "service_account_file", &sa, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "service_account_file"));
	assert_non_null(strstr(err.message, missing));
	assert_non_null(strstr(err.message, "No such file"));
	char *empty = bw_test_write(dir, "empty.json", "");
	assert_int_equal(fcm_sa_load(empty, "service_account_file", &sa, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "empty"));
	assert_int_equal(fcm_sa_load(dir, "service_account_file", &sa, &err), BW_E_CONFIG);
	assert_int_equal(fcm_sa_load(NULL, "service_account_file", &sa, &err), BW_E_CONFIG);
	free(empty);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_jwt_build_verify(void **state)
{
	(void)state;
	char *text = sa_text(NULL, true);
	struct fcm_sa sa;
	bw_error err;
	assert_int_equal(fcm_sa_parse(text, strlen(text), "sa.json", "service_account_file", &sa, &err), BW_OK);
	free(text);
	char *jwt = fcm_jwt_build(&sa, "https://127.0.0.1:9/token", 1700000000, &err);
	assert_non_null(jwt);
	assert_null(strpbrk(jwt, "+/= "));

	/* Verify with the public half only, as the token endpoint does. */
	BIO *b = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PUBKEY(b, g_key), 1);
	EVP_PKEY *pub = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
	BIO_free(b);
	assert_non_null(pub);
	json_t *claims = NULL;
	assert_int_equal(fcm_jwt_verify(jwt, pub, &claims, &err), BW_OK);
	assert_string_equal(json_string_value(json_object_get(claims, "iss")), "pusher@proj.iam.gserviceaccount.com");
	assert_string_equal(json_string_value(json_object_get(claims, "scope")),
	                    "https://www.googleapis.com/auth/firebase.messaging");
	assert_string_equal(json_string_value(json_object_get(claims, "aud")), "https://127.0.0.1:9/token");
	assert_int_equal(json_integer_value(json_object_get(claims, "iat")), 1700000000);
	assert_int_equal(json_integer_value(json_object_get(claims, "exp")), 1700000000 + 3600);
	json_decref(claims);

	/* The header: RS256, typ JWT, kid = private_key_id. */
	size_t hl;
	unsigned char *h = fcm_b64url_decode(jwt, (size_t)(strchr(jwt, '.') - jwt), &hl);
	json_t *hdr = json_loadb((const char *)h, hl, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(hdr, "alg")), "RS256");
	assert_string_equal(json_string_value(json_object_get(hdr, "typ")), "JWT");
	assert_string_equal(json_string_value(json_object_get(hdr, "kid")), "k1");
	json_decref(hdr);
	free(h);

	/* A changed claim or signature, or another key, does not verify. */
	char *other_aud = fcm_jwt_build(&sa, "https://evil.example/token", 1700000000, &err);
	assert_non_null(other_aud);
	char *bad = malloc(strlen(jwt) + strlen(other_aud) + 1);
	/* other_aud's header and claims with jwt's signature */
	size_t signed_len = (size_t)(strrchr(other_aud, '.') - other_aud);
	memcpy(bad, other_aud, signed_len);
	strcpy(bad + signed_len, strrchr(jwt, '.'));
	assert_int_equal(fcm_jwt_verify(bad, pub, &claims, &err), BW_E_DENIED);
	assert_null(claims);
	free(other_aud);
	strcpy(bad, jwt);
	size_t n = strlen(bad);
	bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A';
	assert_int_equal(fcm_jwt_verify(bad, pub, &claims, &err), BW_E_DENIED);
	EVP_PKEY *other = EVP_RSA_gen(2048);
	assert_int_equal(fcm_jwt_verify(jwt, other, &claims, &err), BW_E_DENIED);
	assert_int_equal(fcm_jwt_verify("a.b", pub, &claims, &err), BW_E_INVALID);
	EVP_PKEY_free(other);
	free(bad);

	/* The form body carries the grant type and the assertion as is. */
	char *body = fcm_token_request_body(jwt);
	assert_non_null(body);
	assert_true(strncmp(body, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=", 75) ==
	            0);
	assert_string_equal(strstr(body, "assertion=") + 10, jwt);
	free(body);
	free(jwt);
	EVP_PKEY_free(pub);
	fcm_sa_free(&sa);
}

/* The cache logic of the plugin (token_usable) replayed against a simulated clock. */
struct sim_cache {
	bool have;
	int64_t refresh_at;
	int fetches;
};

static void sim_use(struct sim_cache *c, int64_t now, int64_t expires_in, int64_t margin)
{
	if (!c->have || now >= c->refresh_at) {
		c->have = true;
		c->refresh_at = fcm_token_refresh_at(now, expires_in, margin);
		c->fetches++;
	}
}

static void test_token_refresh_timing(void **state)
{
	(void)state;
	/* An hour's token with a 5-minute margin is replaced after 55 minutes. */
	assert_int_equal(fcm_token_refresh_at(1000, 3600, 300000), 1000 + 3300000);
	/* A short life: at most half of it is margin. */
	assert_int_equal(fcm_token_refresh_at(0, 60, 300000), 30000);
	assert_int_equal(fcm_token_refresh_at(0, 1, 300000), 500);
	assert_int_equal(fcm_token_refresh_at(0, 3600, 0), 3600000);
	assert_int_equal(fcm_token_refresh_at(5, 0, 300000), 5);

	/* Sends every 10 s for 3 hours with hour-long tokens: one fetch per 55 minutes. */
	struct sim_cache c = {0};
	int64_t t0 = 1700000000000LL;
	for (int64_t t = t0; t < t0 + 3 * 3600000; t += 10000)
		sim_use(&c, t, 3600, 300000);
	assert_int_equal(c.fetches, 4); /* at 0, 55, 110 and 165 minutes */
	/* Just before the refresh point the token is still used; at it, it is not. */
	struct sim_cache d = {0};
	sim_use(&d, t0, 3600, 300000);
	sim_use(&d, t0 + 3300000 - 1, 3600, 300000);
	assert_int_equal(d.fetches, 1);
	sim_use(&d, t0 + 3300000, 3600, 300000);
	assert_int_equal(d.fetches, 2);
}

static void test_token_parse(void **state)
{
	(void)state;
	char *tok;
	int64_t ei;
	bw_error err;
	const char *good = "{\"access_token\":\"ya29.abc\",\"expires_in\":3599,\"token_type\":\"Bearer\"}";
	assert_int_equal(fcm_token_parse(good, strlen(good), &tok, &ei, &err), BW_OK);
	assert_string_equal(tok, "ya29.abc");
	assert_int_equal(ei, 3599);
	free(tok);
	const char *noexp = "{\"access_token\":\"t\"}";
	assert_int_equal(fcm_token_parse(noexp, strlen(noexp), &tok, &ei, &err), BW_OK);
	assert_int_equal(ei, 3600);
	free(tok);
	const char *bads[] = {"{\"expires_in\":10}",
	                      "{\"access_token\":\"t\",\"token_type\":\"MAC\"}",
	                      "{\"access_token\":\"t\",\"expires_in\":-5}",
	                      "{\"access_token\":\"t\",\"expires_in\":\"x\"}",
	                      "{\"access_token\":\"a b\"}",
	                      "nonsense",
	                      "{\"access_token\":\"\"}"};
	for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
		assert_int_equal(fcm_token_parse(bads[i], strlen(bads[i]), &tok, &ei, &err), BW_E_REMOTE);
		assert_null(tok);
	}
	char out[256];
	const char *e = "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid JWT Signature.\"}";
	fcm_token_error(400, e, strlen(e), out, sizeof out);
	assert_string_equal(out, "HTTP 400 invalid_grant (Invalid JWT Signature.)");
	const char *e2 = "{\"error\":\"invalid_scope\"}";
	fcm_token_error(400, e2, strlen(e2), out, sizeof out);
	assert_string_equal(out, "HTTP 400 invalid_scope");
	fcm_token_error(503, "<html>", 6, out, sizeof out);
	assert_string_equal(out, "HTTP 503");
	const char *e3 = "{\"error\":\"x\\ny\"}";
	fcm_token_error(400, e3, strlen(e3), out, sizeof out);
	assert_string_equal(out, "HTTP 400 x?y");
}

static char *fcm_error(int code, const char *status, const char *error_code)
{
	char *out;
	int n = asprintf(&out,
	                 "{\"error\":{\"code\":%d,\"message\":\"m\",\"status\":\"%s\",\"details\":[{\"@type\":"
	                 "\"type.googleapis.com/google.rpc.BadRequest\",\"fieldViolations\":[]},"
	                 "{\"@type\":\"type.googleapis.com/google.firebase.fcm.v1.FcmError\",\"errorCode\":\"%s\"}]}}",
	                 code, status, error_code);
	assert_true(n > 0);
	return out;
}

static void expect_class(long status, const char *body, enum fcm_action act, const char *reason)
{
	char r[FCM_REASON_MAX];
	enum fcm_action got = fcm_classify(status, body, body ? strlen(body) : 0, r, sizeof r);
	if (got != act || strcmp(r, reason) != 0)
		fail_msg("status %ld body %s: got %d '%s', want %d '%s'", status, body ? body : "(none)", got, r, act,
		         reason);
}

static void test_classify(void **state)
{
	(void)state;
	expect_class(200, "{\"name\":\"projects/p/messages/1\"}", FCM_ACT_SENT, "");
	struct {
		int code;
		const char *status, *ec;
		enum fcm_action act;
	} cases[] = {
	    {404, "NOT_FOUND", "UNREGISTERED", FCM_ACT_TOKEN_INVALID},
	    {400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", FCM_ACT_FAIL},
	    {403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", FCM_ACT_FAIL},
	    {429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", FCM_ACT_RETRY},
	    {503, "UNAVAILABLE", "UNAVAILABLE", FCM_ACT_RETRY},
	    {500, "INTERNAL", "INTERNAL", FCM_ACT_RETRY},
	    {401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", FCM_ACT_FAIL},
	    {400, "INVALID_ARGUMENT", "UNSPECIFIED_ERROR", FCM_ACT_FAIL},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *b = fcm_error(cases[i].code, cases[i].status, cases[i].ec);
		expect_class(cases[i].code, b, cases[i].act, cases[i].ec);
		free(b);
	}
	/* Without an FcmError detail, the canonical status decides; without that, the HTTP status. */
	expect_class(401,
	             "{\"error\":{\"code\":401,\"message\":\"Request had invalid authentication credentials.\","
	             "\"status\":\"UNAUTHENTICATED\"}}",
	             FCM_ACT_REAUTH, "UNAUTHENTICATED");
	expect_class(503, "{\"error\":{\"code\":503,\"status\":\"UNAVAILABLE\"}}", FCM_ACT_RETRY, "UNAVAILABLE");
	expect_class(401, NULL, FCM_ACT_REAUTH, "HTTP 401");
	expect_class(503, "<html>busy</html>", FCM_ACT_RETRY, "HTTP 503");
	expect_class(429, "", FCM_ACT_RETRY, "HTTP 429");
	expect_class(502, NULL, FCM_ACT_RETRY, "HTTP 502");
	expect_class(400, "{}", FCM_ACT_FAIL, "HTTP 400");
	expect_class(404, "{\"error\":{\"details\":[{\"@type\":\"other\",\"errorCode\":\"UNREGISTERED\"}]}}",
	             FCM_ACT_FAIL, "HTTP 404");
	/* Remote text is made printable before it is used. */
	expect_class(400, "{\"error\":{\"status\":\"BAD\\nTHING\"}}", FCM_ACT_FAIL, "BAD?THING");
}

static void test_backoff_bounds(void **state)
{
	(void)state;
	const uint64_t base = 1000, cap = 60000;
	const uint32_t rs[] = {0, 1, 999, 1000, 1001, 12345, 0x7fffffff, 0xffffffff};
	for (unsigned retry = 0; retry < 40; retry++) {
		uint64_t ceil = base << (retry < 10 ? retry : 10);
		if (ceil > cap)
			ceil = cap;
		for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++) {
			uint64_t d = fcm_backoff_ms(retry, base, cap, rs[i]);
			assert_true(d <= ceil);
		}
		/* Full jitter reaches both ends of [0, ceil]. */
		assert_int_equal(fcm_backoff_ms(retry, base, cap, 0), 0);
		assert_int_equal(fcm_backoff_ms(retry, base, cap, (uint32_t)ceil), ceil);
	}
	/* Random values spread over the range. */
	srand(7);
	uint64_t lo = UINT64_MAX, hi = 0;
	for (int i = 0; i < 2000; i++) {
		uint64_t d = fcm_backoff_ms(2, 100, 10000, (uint32_t)rand());
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	assert_true(lo < 50 && hi > 350 && hi <= 400);
	assert_true(fcm_backoff_ms(100, 1, 5, 0xffffffff) <= 5);
}

static void test_retry_after(void **state)
{
	(void)state;
	int64_t now = 1700000000;
	assert_int_equal(fcm_retry_after_ms("5", now, 60000), 5000);
	assert_int_equal(fcm_retry_after_ms(" 0 ", now, 60000), 0);
	assert_int_equal(fcm_retry_after_ms("120", now, 60000), 60000);
	assert_int_equal(fcm_retry_after_ms("99999999999999999999", now, 60000), -1);
	assert_int_equal(fcm_retry_after_ms("18446744073709551", now, 60000), 60000);
	assert_int_equal(fcm_retry_after_ms(NULL, now, 60000), -1);
	assert_int_equal(fcm_retry_after_ms("", now, 60000), -1);
	assert_int_equal(fcm_retry_after_ms("soon", now, 60000), -1);
	assert_int_equal(fcm_retry_after_ms("5s", now, 60000), -1);
	assert_int_equal(fcm_retry_after_ms("-3", now, 60000), -1);
	/* HTTP dates: 1700000000 is Tue, 14 Nov 2023 22:13:20 GMT. */
	assert_int_equal(fcm_retry_after_ms("Tue, 14 Nov 2023 22:13:30 GMT", now, 60000), 10000);
	assert_int_equal(fcm_retry_after_ms("Tue, 14 Nov 2023 22:13:00 GMT", now, 60000), 0);
	assert_int_equal(fcm_retry_after_ms("Tue, 14 Nov 2023 23:13:30 GMT", now, 60000), 60000);
}

static void test_message_json(void **state)
{
	(void)state;
	struct bw_push_message m = {.size = sizeof m,
	                            .device_id = "dev-1",
	                            .token = "tok:ABC_def-1",
	                            .reason = "command",
	                            .command_id = "cmd-9",
	                            .high_priority = true};
	char *text = fcm_message_json(&m, 3600);
	json_t *j = json_loads(text, 0, NULL);
	assert_non_null(j);
	json_t *msg = json_object_get(j, "message");
	assert_int_equal(json_object_size(j), 1);
	assert_string_equal(json_string_value(json_object_get(msg, "token")), "tok:ABC_def-1");
	json_t *data = json_object_get(msg, "data");
	assert_string_equal(json_string_value(json_object_get(data, "reason")), "command");
	assert_string_equal(json_string_value(json_object_get(data, "command_id")), "cmd-9");
	assert_string_equal(json_string_value(json_object_get(data, "device_id")), "dev-1");
	json_t *android = json_object_get(msg, "android");
	assert_string_equal(json_string_value(json_object_get(android, "priority")), "HIGH");
	assert_string_equal(json_string_value(json_object_get(android, "ttl")), "3600s");
	assert_null(json_object_get(msg, "notification"));
	json_decref(j);
	free(text);
	/* Normal priority, the message's own TTL, no command: no command_id key (FCM data values are strings). */
	struct bw_push_message m2 = {.size = sizeof m2, .token = "t", .reason = "policy", .ttl_s = 60};
	text = fcm_message_json(&m2, 3600);
	j = json_loads(text, 0, NULL);
	msg = json_object_get(j, "message");
	data = json_object_get(msg, "data");
	assert_null(json_object_get(data, "command_id"));
	assert_null(json_object_get(data, "device_id"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(msg, "android"), "priority")), "NORMAL");
	assert_string_equal(json_string_value(json_object_get(json_object_get(msg, "android"), "ttl")), "60s");
	json_decref(j);
	free(text);

	char name[64];
	const char *ok = "{\"name\":\"projects/p/messages/0:123\"}";
	assert_true(fcm_message_name(ok, strlen(ok), name, sizeof name));
	assert_string_equal(name, "projects/p/messages/0:123");
	assert_false(fcm_message_name("{}", 2, name, sizeof name));
}

static void test_token_valid(void **state)
{
	(void)state;
	assert_true(fcm_token_valid("dQw4w9WgXcQ:APA91bH-x_y.z"));
	assert_false(fcm_token_valid(""));
	assert_false(fcm_token_valid(NULL));
	assert_false(fcm_token_valid("a b"));
	assert_false(fcm_token_valid("a\"b"));
	assert_false(fcm_token_valid("a/b"));
	char *big = malloc(FCM_TOKEN_MAX_LEN + 2);
	memset(big, 'a', FCM_TOKEN_MAX_LEN);
	big[FCM_TOKEN_MAX_LEN] = '\0';
	assert_true(fcm_token_valid(big));
	big[FCM_TOKEN_MAX_LEN] = 'a';
	big[FCM_TOKEN_MAX_LEN + 1] = '\0';
	assert_false(fcm_token_valid(big));
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64url_roundtrip),
	    cmocka_unit_test(test_sa_load_good),
	    cmocka_unit_test(test_sa_errors),
	    cmocka_unit_test(test_jwt_build_verify),
	    cmocka_unit_test(test_token_refresh_timing),
	    cmocka_unit_test(test_token_parse),
	    cmocka_unit_test(test_classify),
	    cmocka_unit_test(test_backoff_bounds),
	    cmocka_unit_test(test_retry_after),
	    cmocka_unit_test(test_message_json),
	    cmocka_unit_test(test_token_valid),
	};
	return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
