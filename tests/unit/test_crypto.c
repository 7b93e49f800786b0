/* tests/unit/test_crypto.c: UUIDs, bearer tokens, token digests, scrypt password hashes and
 * constant-time comparison (host/services/crypto.c). */
#include "testutil.h"

#include "crypto.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UUID_DRAWS 10000

static int cmp_str(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static void test_uuid_format_and_uniqueness(void **state)
{
	(void)state;
	char(*ids)[37] = calloc(UUID_DRAWS, sizeof *ids);
	assert_non_null(ids);
	for (int i = 0; i < UUID_DRAWS; i++) {
		bw_error err = {0};
		assert_int_equal(bw_uuid_new(ids[i], &err), BW_OK);
		const char *u = ids[i];
		assert_int_equal(strlen(u), 36);
		for (int k = 0; k < 36; k++) {
			if (k == 8 || k == 13 || k == 18 || k == 23)
				assert_int_equal(u[k], '-');
			else
				assert_non_null(strchr("0123456789abcdef", u[k]));
		}
		assert_int_equal(u[14], '4');           /* version 4 */
		assert_non_null(strchr("89ab", u[19])); /* RFC 4122 variant */
		assert_string_not_equal(u, "00000000-0000-0000-0000-000000000000");
		assert_true(bw_uuid_valid(u));
	}
	qsort(ids, UUID_DRAWS, sizeof *ids, cmp_str);
	for (int i = 1; i < UUID_DRAWS; i++)
		assert_string_not_equal(ids[i - 1], ids[i]);
	free(ids);
}

static void test_uuid_valid_cases(void **state)
{
	(void)state;
	assert_true(bw_uuid_valid("6f1c2a4e-8d3b-4f7a-9c21-5e0b7d9a3f10"));
	assert_true(bw_uuid_valid("00000000-0000-0000-0000-000000000001"));
	assert_false(bw_uuid_valid("00000000-0000-0000-0000-000000000000"));  /* all zero */
	assert_false(bw_uuid_valid("6F1C2A4E-8D3B-4F7A-9C21-5E0B7D9A3F10"));  /* not canonical */
	assert_false(bw_uuid_valid("6f1c2a4e-8d3b-4f7a-9c21-5e0b7d9a3f1"));   /* short */
	assert_false(bw_uuid_valid("6f1c2a4e-8d3b-4f7a-9c21-5e0b7d9a3f100")); /* long */
	assert_false(bw_uuid_valid("6f1c2a4e8-d3b-4f7a-9c21-5e0b7d9a3f10"));  /* hyphen moved */
	assert_false(bw_uuid_valid("6f1c2a4e-8d3b-4f7a-9c21-5e0b7d9a3g10"));  /* not hex */
	assert_false(bw_uuid_valid("6f1c2a4e-8d3b-4f7a-9c21 5e0b7d9a3f10"));  /* space */
	assert_false(bw_uuid_valid("{6f1c2a4e-8d3b-4f7a-9c21-5e0b7d9a3f1}"));
	assert_false(bw_uuid_valid(""));
	assert_false(bw_uuid_valid(NULL));
}

static bool token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static void test_token_format_and_uniqueness(void **state)
{
	(void)state;
	enum { N = 2000 };
	char(*t)[BW_TOKEN_LEN + 1] = calloc(N, sizeof *t);
	assert_non_null(t);
	bool seen_url_char = false;
	for (int i = 0; i < N; i++) {
		bw_error err = {0};
		assert_int_equal(bw_token_new(t[i], &err), BW_OK);
		assert_int_equal(strlen(t[i]), BW_TOKEN_LEN);
		for (int k = 0; k < BW_TOKEN_LEN; k++) {
			assert_true(token_char(t[i][k]));
			seen_url_char |= t[i][k] == '-' || t[i][k] == '_';
		}
		/* 256 bits = 42 full characters + 4 bits: the last character's low 2 bits are zero */
		assert_non_null(strchr("AEIMQUYcgkosw048", t[i][BW_TOKEN_LEN - 1]));
	}
	assert_true(seen_url_char); /* base64url, not standard base64 (2000 * 43 chars make this certain) */
	qsort(t, N, sizeof *t, cmp_str);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(t[i - 1], t[i]);
	free(t);
}

static void test_token_hash_vectors(void **state)
{
	(void)state;
	char h[65];
	bw_token_hash("abc", h);
	assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	bw_token_hash("", h);
	assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	char tok[BW_TOKEN_LEN + 1], h2[65];
	assert_int_equal(bw_token_new(tok, NULL), BW_OK);
	bw_token_hash(tok, h);
	bw_token_hash(tok, h2);
	assert_int_equal(strlen(h), 64);
	assert_string_equal(h, h2);
}

static void test_password_roundtrip(void **state)
{
	(void)state;
	bw_password_set_test_cost(10);
	bw_error err = {0};
	char *a = NULL, *b = NULL;
	assert_int_equal(bw_password_hash("correct horse battery staple", &a, &err), BW_OK);
	assert_int_equal(bw_password_hash("correct horse battery staple", &b, &err), BW_OK);
	assert_non_null(a);
	assert_true(strncmp(a, "$scrypt$ln=10,r=8,p=1$", 22) == 0);
	/* salt 16 bytes = 22 chars, key 32 bytes = 43 chars, no padding */
	assert_int_equal(strlen(a), 22 + 22 + 1 + 43);
	assert_null(strchr(a + 22, '=')); /* no padding in salt or key */
	assert_string_not_equal(a, b);    /* fresh salt each time */
	assert_true(bw_password_verify("correct horse battery staple", a));
	assert_true(bw_password_verify("correct horse battery staple", b));
	assert_false(bw_password_verify("correct horse battery stapl", a));
	assert_false(bw_password_verify("Correct horse battery staple", a));
	assert_false(bw_password_verify("", a));
	assert_false(bw_password_verify(NULL, a));
	assert_false(bw_password_verify("correct horse battery staple", NULL));
	free(a);
	free(b);
	bw_password_set_test_cost(0);
}

/* Flips one character of `s` at `pos` to another valid base64 character. */
static void flip(char *s, size_t pos)
{
	s[pos] = s[pos] == 'A' ? 'B' : 'A';
}

static void test_password_tampered(void **state)
{
	(void)state;
	bw_password_set_test_cost(10);
	char *h = NULL;
	assert_int_equal(bw_password_hash("s3cret-pass", &h, NULL), BW_OK);
	assert_true(bw_password_verify("s3cret-pass", h));
	size_t n = strlen(h);
	char *t = malloc(n + 8);
	assert_non_null(t);

	/* a character of the salt, of the hash, the last character of each */
	size_t salt_at = 22, hash_at = 22 + 22 + 1;
	size_t positions[] = {salt_at, salt_at + 10, salt_at + 21, hash_at, hash_at + 20, n - 1};
	for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
		strcpy(t, h);
		flip(t, positions[i]);
		assert_false(bw_password_verify("s3cret-pass", t));
	}
	/* other parameters than the ones used */
	strcpy(t, h);
	t[12] = '1'; /* ln=10 -> ln=11 */
	assert_false(bw_password_verify("s3cret-pass", t));
	strcpy(t, h);
	t[16] = '4'; /* r=8 -> r=4 */
	assert_false(bw_password_verify("s3cret-pass", t));
	strcpy(t, h);
	t[20] = '2'; /* p=1 -> p=2 */
	assert_false(bw_password_verify("s3cret-pass", t));
	/* truncated, extended */
	strcpy(t, h);
	t[n - 1] = '\0';
	assert_false(bw_password_verify("s3cret-pass", t));
	strcpy(t, h);
	strcat(t, "A");
	assert_false(bw_password_verify("s3cret-pass", t));
	strcpy(t, h);
	strcat(t, "=");
	assert_false(bw_password_verify("s3cret-pass", t));
	/* the last salt character carries 4 unused bits: a non-canonical spelling is refused */
	strcpy(t, h);
	const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	int v = (int)(strchr(alpha, t[salt_at + 21]) - alpha);
	t[salt_at + 21] = alpha[v | 1];
	if (t[salt_at + 21] == h[salt_at + 21])
		t[salt_at + 21] = alpha[v | 2];
	assert_false(bw_password_verify("s3cret-pass", t));
	free(t);
	free(h);
	bw_password_set_test_cost(0);
}

static void test_password_malformed(void **state)
{
	(void)state;
	const char *salt = "6n/9eNopqJKs3BTohQt5dw";
	const char *key = "Ak3VjG+VKeKMuA9Y7/m98Redw6eEBHdsvBraEp2RUHQ";
	const char *params[] = {
	    "ln=9,r=8,p=1",
	    "ln=21,r=8,p=1",
	    "ln=010,r=8,p=1",
	    "ln=,r=8,p=1",
	    "ln=10,r=0,p=1",
	    "ln=10,r=33,p=1",
	    "ln=10,r=8,p=0",
	    "ln=10,r=8,p=17",
	    "ln=10,r=8",
	    "ln=10,p=1,r=8",
	    "ln=1x,r=8,p=1",
	    "ln=-10,r=8,p=1",
	    "n=10,r=8,p=1",
	    "ln=10,r=8,p=1,",
	    "LN=10,r=8,p=1",
	    "ln=10,r=08,p=1",
	    "",
	    "ln=100,r=8,p=1",
	};
	char buf[256];
	for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
		snprintf(buf, sizeof buf, "$scrypt$%s$%s$%s", params[i], salt, key);
		assert_false(bw_password_verify("fixture-alice-password", buf));
	}
	/* the well-formed original verifies, so the cases above fail for their parameters */
	snprintf(buf, sizeof buf, "$scrypt$ln=10,r=8,p=1$%s$%s", salt, key);
	assert_true(bw_password_verify("fixture-alice-password", buf));

	const char *other[] = {
	    "",
	    "$scrypt$",
	    "scrypt$ln=10,r=8,p=1$6n/9eNopqJKs3BTohQt5dw$Ak3VjG+VKeKMuA9Y7/m98Redw6eEBHdsvBraEp2RUHQ",
	    "$bcrypt$ln=10,r=8,p=1$6n/9eNopqJKs3BTohQt5dw$Ak3VjG+VKeKMuA9Y7/m98Redw6eEBHdsvBraEp2RUHQ",
	    "$scrypt$ln=10,r=8,p=1$6n/9eNopqJKs3BTohQt5dw",
	    "$scrypt$ln=10,r=8,p=1$$Ak3VjG+VKeKMuA9Y7/m98Redw6eEBHdsvBraEp2RUHQ",
	    "$scrypt$ln=10,r=8,p=1$6n/9eNopqJKs3BTohQt5dw$",
	    "$scrypt$ln=10,r=8,p=1$6n/9eNopqJKs3BTohQt5dw==$Ak3VjG+VKeKMuA9Y7/m98Redw6eEBHdsvBraEp2RUHQ=",
	    "$scrypt$ln=10,r=8,p=1$6n_9eNopqJKs3BTohQt5dw$Ak3VjG-VKeKMuA9Y7_m98Redw6eEBHdsvBraEp2RUHQ",
	    "$scrypt$ln=10,r=8,p=1$6n/9eNopqJKs3BTohQt5dw$Ak3VjG+VKeKMuA9Y7/m98Redw6eEBHdsvBraEp2RUHQ$x",
	    "plain-text-password",
	};
	for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
		assert_false(bw_password_verify("fixture-alice-password", other[i]));

	/* in bounds, but needing more than the 64 MiB memory limit: refused without a result */
	snprintf(buf, sizeof buf, "$scrypt$ln=20,r=32,p=16$%s$%s", salt, key);
	assert_false(bw_password_verify("fixture-alice-password", buf));
}

static void test_password_refused_inputs(void **state)
{
	(void)state;
	bw_password_set_test_cost(10);
	bw_error err = {0};
	char *h = (char *)"untouched";
	assert_int_equal(bw_password_hash("", &h, &err), BW_E_INVALID);
	assert_null(h);
	assert_int_equal(err.code, BW_E_INVALID);
	assert_non_null(strstr(err.message, "empty"));
	assert_int_equal(bw_password_hash(NULL, &h, &err), BW_E_INVALID);

	char *big = malloc(1026);
	assert_non_null(big);
	memset(big, 'x', 1025);
	big[1025] = '\0';
	assert_int_equal(bw_password_hash(big, &h, &err), BW_E_INVALID);
	assert_null(h);
	assert_non_null(strstr(err.message, "1024"));
	big[1024] = '\0'; /* exactly the limit is fine */
	assert_int_equal(bw_password_hash(big, &h, &err), BW_OK);
	assert_true(bw_password_verify(big, h));
	big[1024] = 'x';
	assert_false(bw_password_verify(big, h));
	free(h);
	free(big);

	/* out-of-range test costs are ignored */
	bw_password_set_test_cost(5);
	assert_int_equal(bw_password_hash("pw", &h, &err), BW_OK);
	assert_true(strncmp(h, "$scrypt$ln=10,", 14) == 0);
	free(h);
	bw_password_set_test_cost(0);
}

static void test_password_default_cost(void **state)
{
	(void)state;
	bw_password_set_test_cost(0);
	char *h = NULL;
	bw_error err = {0};
	assert_int_equal(bw_password_hash("default-cost", &h, &err), BW_OK);
	assert_true(strncmp(h, "$scrypt$ln=15,r=8,p=1$", 22) == 0);
	assert_true(bw_password_verify("default-cost", h));
	free(h);
}

static void test_secret_equal(void **state)
{
	(void)state;
	assert_true(bw_secret_equal("abcdef", "abcdef"));
	assert_true(bw_secret_equal("", ""));
	assert_false(bw_secret_equal("abcdef", "abcdeg"));
	assert_false(bw_secret_equal("abcdef", "bbcdef"));
	assert_false(bw_secret_equal("abcdef", "abcde"));
	assert_false(bw_secret_equal("abc", "abcdef"));
	assert_false(bw_secret_equal("", "a"));
	assert_false(bw_secret_equal(NULL, "a"));
	assert_false(bw_secret_equal("a", NULL));
	assert_false(bw_secret_equal(NULL, NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_uuid_format_and_uniqueness),  cmocka_unit_test(test_uuid_valid_cases),
	    cmocka_unit_test(test_token_format_and_uniqueness), cmocka_unit_test(test_token_hash_vectors),
	    cmocka_unit_test(test_password_roundtrip),          cmocka_unit_test(test_password_tampered),
	    cmocka_unit_test(test_password_malformed),          cmocka_unit_test(test_password_refused_inputs),
	    cmocka_unit_test(test_password_default_cost),       cmocka_unit_test(test_secret_equal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
