/* tests/unit/test_secrets.c: the policy secrets key file (creation, modes, refusals), AES-256-GCM round trips and
 * tamper detection, base64 helpers and PBKDF2-SHA256 verifiers (host/policy/secrets.c). */
#include "testutil.h"

#include "secrets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *path_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = malloc(n);
	assert_non_null(p);
	snprintf(p, n, "%s/%s", a, b);
	return p;
}

static void test_b64_vectors(void **state)
{
	(void)state;
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
		char *e = bw_b64_encode((const unsigned char *)plain[i], strlen(plain[i]));
		assert_non_null(e);
		assert_string_equal(e, enc[i]);
		free(e);
		size_t n = 99;
		unsigned char *d = bw_b64_decode(enc[i], &n);
		assert_non_null(d);
		assert_int_equal(n, strlen(plain[i]));
		assert_memory_equal(d, plain[i], n);
		free(d);
	}
	static const char *const bad[] = {"Zg=", "Z===", "Zm9v\n", "Zm 9", "Zg==Zg==", "=Zg=", "Zm9*"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		size_t n = 0;
		unsigned char *d = bw_b64_decode(bad[i], &n);
		if (d)
			fail_msg("malformed base64 accepted: %s", bad[i]);
	}
}

static void test_key_created_with_modes(void **state)
{
	(void)state;
	char *dir = bw_test_tmpdir("p1sec");
	char *keydir = path_join(dir, "var/keys");
	char *key = path_join(keydir, "policy.key");
	bw_error err = {0};
	bw_secrets *s = bw_secrets_open(key, &err);
	assert_non_null(s);
	struct stat st;
	assert_int_equal(stat(keydir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	assert_int_equal(stat(key, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	FILE *f = fopen(key, "r");
	assert_non_null(f);
	char buf[128] = {0};
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	assert_int_equal(n, 65);
	assert_int_equal(strspn(buf, "0123456789abcdef"), 64);

	/* A second open reads the same key: what one encrypts, the other decrypts. */
	bw_secrets *s2 = bw_secrets_open(key, &err);
	assert_non_null(s2);
	char *ct = NULL, *pt = NULL;
	assert_int_equal(bw_secrets_encrypt(s, "correct horse", &ct, &err), BW_OK);
	assert_int_equal(bw_secrets_decrypt(s2, ct, &pt, &err), BW_OK);
	assert_string_equal(pt, "correct horse");
	free(ct);
	free(pt);
	bw_secrets_free(s);
	bw_secrets_free(s2);
	free(key);
	free(keydir);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_key_refusals(void **state)
{
	(void)state;
	bw_error err = {0};
	assert_null(bw_secrets_open(NULL, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_null(bw_secrets_open("", &err));

	char *dir = bw_test_tmpdir("p1sec");
	char *key = path_join(dir, "policy.key");
	bw_secrets *s = bw_secrets_open(key, &err);
	assert_non_null(s);
	bw_secrets_free(s);

	/* group- or other-readable key files are refused, naming the file and the fix */
	static const mode_t loose[] = {0640, 0604, 0660, 0644};
	for (size_t i = 0; i < sizeof loose / sizeof loose[0]; i++) {
		assert_int_equal(chmod(key, loose[i]), 0);
		bw_error_clear(&err);
		assert_null(bw_secrets_open(key, &err));
		assert_int_equal(err.code, BW_E_CONFIG);
		assert_non_null(strstr(err.message, "policy.key"));
		assert_non_null(strstr(err.message, "chmod 600"));
	}
	assert_int_equal(chmod(key, 0600), 0);

	/* malformed content */
	char *bad = path_join(dir, "bad.key");
	FILE *f = fopen(bad, "w");
	assert_non_null(f);
	fputs("not a key\n", f);
	fclose(f);
	assert_int_equal(chmod(bad, 0600), 0);
	assert_null(bw_secrets_open(bad, &err));
	assert_int_equal(err.code, BW_E_CONFIG);
	assert_non_null(strstr(err.message, "malformed"));

	/* a symlink is not followed */
	char *link_path = path_join(dir, "link.key");
	assert_int_equal(symlink(key, link_path), 0);
	assert_null(bw_secrets_open(link_path, &err));
	assert_int_equal(err.code, BW_E_IO);

	/* a directory writable by others could let them swap the key */
	char *open_dir = path_join(dir, "open");
	assert_int_equal(mkdir(open_dir, 0700), 0);
	assert_int_equal(chmod(open_dir, 0777), 0);
	char *k2 = path_join(open_dir, "policy.key");
	assert_null(bw_secrets_open(k2, &err));
	assert_int_equal(err.code, BW_E_CONFIG);
	assert_non_null(strstr(err.message, "writable"));

	/* a path whose directory is a file */
	char *under_file = path_join(bad, "policy.key");
	assert_null(bw_secrets_open(under_file, &err));
	assert_int_not_equal(err.code, BW_OK);

	free(under_file);
	free(k2);
	free(open_dir);
	free(link_path);
	free(bad);
	free(key);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_encrypt_decrypt(void **state)
{
	(void)state;
	char *dir = bw_test_tmpdir("p1sec");
	char *key = path_join(dir, "keys/policy.key");
	char *key2 = path_join(dir, "other/policy.key");
	bw_error err = {0};
	bw_secrets *s = bw_secrets_open(key, &err);
	bw_secrets *other = bw_secrets_open(key2, &err);
	assert_non_null(s);
	assert_non_null(other);

	static const char *const plains[] = {"", "x", "wifi-passphrase-01", "日本語のパスワード", "a b\tc"};
	for (size_t i = 0; i < sizeof plains / sizeof plains[0]; i++) {
		char *c1 = NULL, *c2 = NULL, *p = NULL;
		assert_int_equal(bw_secrets_encrypt(s, plains[i], &c1, &err), BW_OK);
		assert_int_equal(bw_secrets_encrypt(s, plains[i], &c2, &err), BW_OK);
		assert_string_not_equal(c1, c2); /* random nonce */
		size_t n = 0;
		unsigned char *raw = bw_b64_decode(c1, &n);
		assert_non_null(raw);
		assert_int_equal(n, 12 + strlen(plains[i]) + 16);
		if (strlen(plains[i]) >= 8) /* short ones may occur in base64 by chance */
			assert_null(strstr(c1, plains[i]));
		free(raw);
		assert_int_equal(bw_secrets_decrypt(s, c1, &p, &err), BW_OK);
		assert_string_equal(p, plains[i]);
		free(p);
		p = NULL;
		/* another key cannot decrypt */
		assert_int_equal(bw_secrets_decrypt(other, c1, &p, &err), BW_E_INVALID);
		assert_null(p);
		assert_non_null(strstr(err.message, "cannot be decrypted"));
		free(c1);
		free(c2);
	}

	/* every single-bit flip is detected */
	char *ct = NULL;
	assert_int_equal(bw_secrets_encrypt(s, "tamper me", &ct, &err), BW_OK);
	size_t n = 0;
	unsigned char *raw = bw_b64_decode(ct, &n);
	for (size_t i = 0; i < n; i++) {
		raw[i] ^= 0x01;
		char *t = bw_b64_encode(raw, n);
		char *p = NULL;
		assert_int_equal(bw_secrets_decrypt(s, t, &p, &err), BW_E_INVALID);
		assert_null(p);
		free(t);
		raw[i] ^= 0x01;
	}
	/* truncated, malformed */
	char *shortb = bw_b64_encode(raw, 20);
	char *p = NULL;
	assert_int_equal(bw_secrets_decrypt(s, shortb, &p, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "length"));
	assert_int_equal(bw_secrets_decrypt(s, "not base64!", &p, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "base64"));
	assert_int_equal(bw_secrets_encrypt(NULL, "x", &ct, &err), BW_E_INVALID);

	/* over-long plaintext refused */
	char *big = malloc(BW_SECRET_MAX_PLAIN + 2);
	memset(big, 'a', BW_SECRET_MAX_PLAIN + 1);
	big[BW_SECRET_MAX_PLAIN + 1] = '\0';
	char *bc = NULL;
	assert_int_equal(bw_secrets_encrypt(s, big, &bc, &err), BW_E_LIMIT);
	assert_null(bc);
	free(big);

	free(shortb);
	free(raw);
	free(ct);
	bw_secrets_free(s);
	bw_secrets_free(other);
	free(key);
	free(key2);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_verifier(void **state)
{
	(void)state;
	bw_error err = {0};
	json_t *v1 = NULL, *v2 = NULL;
	assert_int_equal(bw_verifier_make("s3cret-Uninstall", &v1, &err), BW_OK);
	assert_int_equal(bw_verifier_make("s3cret-Uninstall", &v2, &err), BW_OK);
	assert_string_equal(json_string_value(json_object_get(v1, "algorithm")), "pbkdf2-sha256");
	assert_true(json_integer_value(json_object_get(v1, "iterations")) >= 210000);
	size_t n = 0;
	unsigned char *salt = bw_b64_decode(json_string_value(json_object_get(v1, "salt")), &n);
	assert_non_null(salt);
	assert_int_equal(n, 16);
	free(salt);
	unsigned char *hash = bw_b64_decode(json_string_value(json_object_get(v1, "hash")), &n);
	assert_non_null(hash);
	assert_int_equal(n, 32);
	free(hash);
	assert_int_equal(json_object_size(v1), 4);
	/* salted: same password, different verifiers */
	assert_string_not_equal(json_string_value(json_object_get(v1, "salt")),
	                        json_string_value(json_object_get(v2, "salt")));
	assert_string_not_equal(json_string_value(json_object_get(v1, "hash")),
	                        json_string_value(json_object_get(v2, "hash")));
	char *dump = json_dumps(v1, 0);
	assert_null(strstr(dump, "s3cret"));
	free(dump);

	assert_true(bw_verifier_check(v1, "s3cret-Uninstall"));
	assert_true(bw_verifier_check(v2, "s3cret-Uninstall"));
	assert_false(bw_verifier_check(v1, "s3cret-uninstall"));
	assert_false(bw_verifier_check(v1, ""));
	assert_false(bw_verifier_check(v1, NULL));
	assert_false(bw_verifier_check(NULL, "x"));

	/* altered or malformed verifiers never match */
	json_t *c = json_deep_copy(v1);
	json_object_set_new(c, "iterations", json_integer(210001));
	assert_false(bw_verifier_check(c, "s3cret-Uninstall"));
	json_object_set_new(c, "iterations", json_integer(10)); /* too weak to be trusted */
	assert_false(bw_verifier_check(c, "s3cret-Uninstall"));
	json_decref(c);
	c = json_deep_copy(v1);
	json_object_set_new(c, "algorithm", json_string("sha1"));
	assert_false(bw_verifier_check(c, "s3cret-Uninstall"));
	json_decref(c);
	c = json_deep_copy(v1);
	json_object_set_new(c, "hash", json_string("@@@@"));
	assert_false(bw_verifier_check(c, "s3cret-Uninstall"));
	json_decref(c);
	c = json_deep_copy(v1);
	json_object_del(c, "salt");
	assert_false(bw_verifier_check(c, "s3cret-Uninstall"));
	json_decref(c);

	assert_int_equal(bw_verifier_make(NULL, &c, &err), BW_E_INVALID);
	json_decref(v1);
	json_decref(v2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64_vectors),  cmocka_unit_test(test_key_created_with_modes),
	    cmocka_unit_test(test_key_refusals), cmocka_unit_test(test_encrypt_decrypt),
	    cmocka_unit_test(test_verifier),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
