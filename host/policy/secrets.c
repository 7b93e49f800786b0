/* host/policy/secrets.c: the policy secrets key file (256-bit, hex text, mode 0600 in a 0700 directory apart from
 * the database), AES-256-GCM encryption of Wi-Fi secrets at rest, and PBKDF2-SHA256 password verifiers. */
#include "secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_LEN   32
#define NONCE_LEN 12
#define TAG_LEN   16
/* Binds ciphertexts to their use: a blob made for something else with the same key does not decrypt here. */
#define SECRETS_AAD "bulwark-policy-secret-v1"
/* Accepted iteration counts of stored verifiers: the floor keeps weak verifiers out, the cap bounds CPU. */
#define VERIFIER_MIN_ITER 100000
#define VERIFIER_MAX_ITER 10000000

struct bw_secrets {
	unsigned char key[KEY_LEN];
};

char *bw_b64_encode(const unsigned char *data, size_t len)
{
	if (len > (size_t)1 << 28)
		return NULL;
	size_t out_len = 4 * ((len + 2) / 3);
	char *out = malloc(out_len + 1);
	if (!out)
		return NULL;
	int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	if (n < 0 || (size_t)n != out_len) {
		free(out);
		return NULL;
	}
	out[out_len] = '\0';
	return out;
}

static int b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

unsigned char *bw_b64_decode(const char *text, size_t *len_out)
{
	if (!text)
		return NULL;
	size_t n = strlen(text);
	if (n % 4 != 0 || n > (size_t)1 << 28)
		return NULL;
	size_t pad = 0;
	if (n >= 1 && text[n - 1] == '=')
		pad++;
	if (n >= 2 && text[n - 2] == '=')
		pad++;
	unsigned char *out = malloc(n / 4 * 3 + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)text[i + k];
			bool last_group = i + 4 == n;
			if (c == '=' && last_group && (size_t)k >= 4 - pad) {
				v[k] = 0;
				continue;
			}
			v[k] = b64_val(c);
			if (v[k] < 0) {
				free(out);
				return NULL;
			}
		}
		unsigned triple = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
		out[o++] = (unsigned char)(triple >> 16);
		if (!(i + 4 == n && pad >= 2))
			out[o++] = (unsigned char)(triple >> 8);
		if (!(i + 4 == n && pad >= 1))
			out[o++] = (unsigned char)triple;
	}
	*len_out = o;
	return out;
}

/* Creates every missing directory of `dir` with mode 0700. */
static int mkdir_p(const char *dir, bw_error *err)
{
	char buf[4096];
	size_t n = strlen(dir);
	if (n == 0 || n >= sizeof buf)
		return bw_error_set(err, BW_E_INVALID, "secrets: key directory path is empty or too long");
	memcpy(buf, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char saved = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, 0700) != 0 && errno != EEXIST)
			return bw_error_set(err, BW_E_IO, "secrets: cannot create key directory %s: %s", buf,
			                    strerror(errno));
		buf[i] = saved;
	}
	return BW_OK;
}

static int parse_hex_key(const char *text, size_t len, unsigned char key[KEY_LEN])
{
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		len--;
	if (len != 2 * KEY_LEN)
		return -1;
	for (size_t i = 0; i < KEY_LEN; i++) {
		unsigned v = 0;
		for (int k = 0; k < 2; k++) {
			char c = text[2 * i + (size_t)k];
			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				v |= (unsigned)(c - 'A' + 10);
			else
				return -1;
		}
		key[i] = (unsigned char)v;
	}
	return 0;
}

static int read_key(const char *path, unsigned char key[KEY_LEN], bw_error *err)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return bw_error_set(err, errno == ENOENT ? BW_E_NOTFOUND : BW_E_IO,
		                    "secrets: cannot open key file %s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return bw_error_set(err, BW_E_IO, "secrets: cannot stat key file %s: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return bw_error_set(err, BW_E_CONFIG, "secrets: key file %s is not a regular file", path);
	}
	if (st.st_mode & 077) {
		close(fd);
		return bw_error_set(
		    err, BW_E_CONFIG,
		    "secrets: key file %s is accessible by group or others (mode %03o); run chmod 600 on it", path,
		    (unsigned)(st.st_mode & 0777));
	}
	if (st.st_uid != geteuid()) {
		close(fd);
		return bw_error_set(err, BW_E_CONFIG,
		                    "secrets: key file %s is owned by uid %u, not by this user (uid %u)", path,
		                    (unsigned)st.st_uid, (unsigned)geteuid());
	}
	char buf[128];
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	int rc = BW_OK;
	if (n < 0)
		rc = bw_error_set(err, BW_E_IO, "secrets: cannot read key file %s: %s", path, strerror(errno));
	else if (parse_hex_key(buf, (size_t)n, key) != 0)
		rc = bw_error_set(err, BW_E_CONFIG, "secrets: key file %s is malformed (expected 64 hex digits)", path);
	OPENSSL_cleanse(buf, sizeof buf);
	return rc;
}

/* Writes a new random key to a temporary file and links it into place, so a concurrent opener never reads a
 * half-written key and two creators agree on one key (the loser of link() reads the winner's). */
static int create_key(const char *path, bw_error *err)
{
	unsigned char key[KEY_LEN];
	if (RAND_bytes(key, sizeof key) != 1)
		return bw_error_set(err, BW_E_RANDOM, "secrets: the system could not supply randomness for a new key");
	char hex[2 * KEY_LEN + 2];
	for (size_t i = 0; i < KEY_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", key[i]);
	hex[2 * KEY_LEN] = '\n';
	hex[2 * KEY_LEN + 1] = '\0';
	OPENSSL_cleanse(key, sizeof key);

	char tmp[4200];
	int tn = snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	if (tn < 0 || (size_t)tn >= sizeof tmp) {
		OPENSSL_cleanse(hex, sizeof hex);
		return bw_error_set(err, BW_E_INVALID, "secrets: key file path is too long");
	}
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		OPENSSL_cleanse(hex, sizeof hex);
		return bw_error_set(err, BW_E_IO, "secrets: cannot create key file %s: %s", tmp, strerror(errno));
	}
	size_t len = strlen(hex);
	ssize_t w = write(fd, hex, len);
	OPENSSL_cleanse(hex, sizeof hex);
	int rc = BW_OK;
	if (w != (ssize_t)len || fsync(fd) != 0)
		rc = bw_error_set(err, BW_E_IO, "secrets: cannot write key file %s: %s", tmp,
		                  w < 0 ? strerror(errno) : "short write");
	if (close(fd) != 0 && rc == BW_OK)
		rc = bw_error_set(err, BW_E_IO, "secrets: cannot write key file %s: %s", tmp, strerror(errno));
	if (rc == BW_OK && link(tmp, path) != 0 && errno != EEXIST)
		rc = bw_error_set(err, BW_E_IO, "secrets: cannot install key file %s: %s", path, strerror(errno));
	unlink(tmp);
	return rc;
}

bw_secrets *bw_secrets_open(const char *key_path, bw_error *err)
{
	if (!key_path || !*key_path) {
		bw_error_set(err, BW_E_INVALID, "secrets: no key file path given");
		return NULL;
	}
	if (key_path[strlen(key_path) - 1] == '/') {
		bw_error_set(err, BW_E_INVALID, "secrets: key file path %s names a directory", key_path);
		return NULL;
	}
	/* The directory: created 0700 when missing; an existing one writable by others could let them swap the key. */
	const char *slash = strrchr(key_path, '/');
	if (slash && slash != key_path) {
		char dir[4096];
		size_t dn = (size_t)(slash - key_path);
		if (dn >= sizeof dir) {
			bw_error_set(err, BW_E_INVALID, "secrets: key file path is too long");
			return NULL;
		}
		memcpy(dir, key_path, dn);
		dir[dn] = '\0';
		struct stat st;
		if (stat(dir, &st) != 0) {
			if (mkdir_p(dir, err) != BW_OK)
				return NULL;
		} else if (!S_ISDIR(st.st_mode)) {
			bw_error_set(err, BW_E_CONFIG, "secrets: %s (key directory) is not a directory", dir);
			return NULL;
		} else if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
			bw_error_set(
			    err, BW_E_CONFIG,
			    "secrets: key directory %s is writable by group or others (mode %03o); use chmod 700", dir,
			    (unsigned)(st.st_mode & 0777));
			return NULL;
		}
	}
	bw_secrets *s = calloc(1, sizeof *s);
	if (!s) {
		bw_error_set(err, BW_E_NOMEM, "secrets: out of memory");
		return NULL;
	}
	bw_error rerr = {0};
	int rc = read_key(key_path, s->key, &rerr);
	if (rc == BW_E_NOTFOUND) {
		rc = create_key(key_path, err);
		if (rc == BW_OK)
			rc = read_key(key_path, s->key, err);
	} else if (rc != BW_OK && err) {
		*err = rerr;
	}
	if (rc != BW_OK) {
		bw_secrets_free(s);
		return NULL;
	}
	return s;
}

void bw_secrets_free(bw_secrets *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s->key, sizeof s->key);
	free(s);
}

int bw_secrets_encrypt(bw_secrets *s, const char *plain, char **b64_out, bw_error *err)
{
	if (!s || !plain || !b64_out)
		return bw_error_set(err, BW_E_INVALID, "secrets: encrypt needs a key, a plaintext and an output");
	*b64_out = NULL;
	size_t plen = strlen(plain);
	if (plen > BW_SECRET_MAX_PLAIN)
		return bw_error_set(err, BW_E_LIMIT, "secrets: secret longer than %d bytes", BW_SECRET_MAX_PLAIN);
	size_t blob_len = NONCE_LEN + plen + TAG_LEN;
	unsigned char *blob = malloc(blob_len);
	if (!blob)
		return bw_error_set(err, BW_E_NOMEM, "secrets: out of memory");
	int rc = BW_OK;
	EVP_CIPHER_CTX *ctx = NULL;
	if (RAND_bytes(blob, NONCE_LEN) != 1) {
		rc = bw_error_set(err, BW_E_RANDOM, "secrets: the system could not supply randomness for a nonce");
		goto out;
	}
	ctx = EVP_CIPHER_CTX_new();
	int n = 0, fin = 0;
	if (!ctx || EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, s->key, blob) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &n, (const unsigned char *)SECRETS_AAD, (int)strlen(SECRETS_AAD)) != 1 ||
	    EVP_EncryptUpdate(ctx, blob + NONCE_LEN, &n, (const unsigned char *)plain, (int)plen) != 1 ||
	    EVP_EncryptFinal_ex(ctx, blob + NONCE_LEN + n, &fin) != 1 || (size_t)(n + fin) != plen ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, blob + NONCE_LEN + plen) != 1) {
		rc = bw_error_set(err, BW_E_INTERNAL, "secrets: AES-256-GCM encryption failed");
		goto out;
	}
	*b64_out = bw_b64_encode(blob, blob_len);
	if (!*b64_out)
		rc = bw_error_set(err, BW_E_NOMEM, "secrets: out of memory");
out:
	EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(blob, blob_len);
	free(blob);
	return rc;
}

int bw_secrets_decrypt(bw_secrets *s, const char *b64, char **plain_out, bw_error *err)
{
	if (!s || !b64 || !plain_out)
		return bw_error_set(err, BW_E_INVALID, "secrets: decrypt needs a key, a ciphertext and an output");
	*plain_out = NULL;
	size_t blob_len = 0;
	unsigned char *blob = bw_b64_decode(b64, &blob_len);
	if (!blob)
		return bw_error_set(err, BW_E_INVALID, "secrets: encrypted secret is not valid base64");
	if (blob_len < NONCE_LEN + TAG_LEN || blob_len - NONCE_LEN - TAG_LEN > BW_SECRET_MAX_PLAIN) {
		free(blob);
		return bw_error_set(err, BW_E_INVALID, "secrets: encrypted secret has a bad length");
	}
	size_t clen = blob_len - NONCE_LEN - TAG_LEN;
	char *plain = malloc(clen + 1);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int rc = BW_OK, n = 0, fin = 0;
	if (!plain || !ctx) {
		rc = bw_error_set(err, BW_E_NOMEM, "secrets: out of memory");
		goto out;
	}
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, s->key, blob) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &n, (const unsigned char *)SECRETS_AAD, (int)strlen(SECRETS_AAD)) != 1 ||
	    EVP_DecryptUpdate(ctx, (unsigned char *)plain, &n, blob + NONCE_LEN, (int)clen) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, blob + NONCE_LEN + clen) != 1 ||
	    EVP_DecryptFinal_ex(ctx, (unsigned char *)plain + n, &fin) != 1 || (size_t)(n + fin) != clen) {
		rc = bw_error_set(err, BW_E_INVALID,
		                  "secrets: encrypted secret cannot be decrypted (wrong key file or corrupted data)");
		goto out;
	}
	plain[clen] = '\0';
	if (memchr(plain, '\0', clen)) {
		rc = bw_error_set(err, BW_E_INVALID, "secrets: decrypted secret contains a NUL byte");
		goto out;
	}
	*plain_out = plain;
	plain = NULL;
out:
	if (plain) {
		OPENSSL_cleanse(plain, clen + 1);
		free(plain);
	}
	EVP_CIPHER_CTX_free(ctx);
	free(blob);
	return rc;
}

int bw_verifier_make(const char *password, json_t **out, bw_error *err)
{
	if (!password || !out)
		return bw_error_set(err, BW_E_INVALID, "verifier: a password is required");
	*out = NULL;
	unsigned char salt[BW_VERIFIER_SALT_LEN], hash[BW_VERIFIER_HASH_LEN];
	if (RAND_bytes(salt, sizeof salt) != 1)
		return bw_error_set(err, BW_E_RANDOM, "verifier: the system could not supply randomness for a salt");
	if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof salt, BW_VERIFIER_ITERATIONS, EVP_sha256(),
	                      sizeof hash, hash) != 1)
		return bw_error_set(err, BW_E_INTERNAL, "verifier: PBKDF2-SHA256 failed");
	char *s64 = bw_b64_encode(salt, sizeof salt);
	char *h64 = bw_b64_encode(hash, sizeof hash);
	OPENSSL_cleanse(hash, sizeof hash);
	json_t *v = NULL;
	if (s64 && h64)
		v = json_pack("{s:s, s:i, s:s, s:s}", "algorithm", "pbkdf2-sha256", "iterations",
		              (json_int_t)BW_VERIFIER_ITERATIONS, "salt", s64, "hash", h64);
	free(s64);
	free(h64);
	if (!v)
		return bw_error_set(err, BW_E_NOMEM, "verifier: out of memory");
	*out = v;
	return BW_OK;
}

bool bw_verifier_check(json_t *verifier, const char *password)
{
	if (!json_is_object(verifier) || !password)
		return false;
	const char *alg = json_string_value(json_object_get(verifier, "algorithm"));
	json_t *it = json_object_get(verifier, "iterations");
	const char *s64 = json_string_value(json_object_get(verifier, "salt"));
	const char *h64 = json_string_value(json_object_get(verifier, "hash"));
	if (!alg || strcmp(alg, "pbkdf2-sha256") != 0 || !json_is_integer(it) || !s64 || !h64)
		return false;
	json_int_t iter = json_integer_value(it);
	if (iter < VERIFIER_MIN_ITER || iter > VERIFIER_MAX_ITER)
		return false;
	size_t slen = 0, hlen = 0;
	unsigned char *salt = bw_b64_decode(s64, &slen);
	unsigned char *want = bw_b64_decode(h64, &hlen);
	bool ok = false;
	unsigned char got[BW_VERIFIER_HASH_LEN];
	if (salt && want && slen >= 8 && slen <= 64 && hlen == sizeof got &&
	    PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)slen, (int)iter, EVP_sha256(), sizeof got,
	                      got) == 1)
		ok = CRYPTO_memcmp(got, want, sizeof got) == 0;
	OPENSSL_cleanse(got, sizeof got);
	free(salt);
	free(want);
	return ok;
}
