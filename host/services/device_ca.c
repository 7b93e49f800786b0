/* host/services/device_ca.c: the device CA (OpenSSL 3): creation, CSR checks, issuing. */
#include "device_ca.h"

#include "tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct bw_device_ca {
	X509 *cert;
	EVP_PKEY *key;
	char *pem;
	X509_STORE *store;
};

static const char *ossl_err(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return "unknown OpenSSL error";
	ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	return buf;
}

static int set_random_serial(X509 *x, char hex_out[41])
{
	unsigned char serial[16];
	if (RAND_bytes(serial, sizeof serial) != 1)
		return 0;
	serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x10); /* positive, fixed length */
	BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
	int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	if (hex_out) {
		for (size_t i = 0; i < sizeof serial; i++)
			snprintf(hex_out + 2 * i, 3, "%02x", serial[i]);
	}
	return ok;
}

/* The PEM text of a certificate, NUL-terminated, malloc'd (BIO memory is not terminated). */
static char *cert_pem_text(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out = NULL;
	if (b && PEM_write_bio_X509(b, x)) {
		long len = BIO_get_mem_data(b, &data);
		if (len > 0 && (out = malloc((size_t)len + 1))) {
			memcpy(out, data, (size_t)len);
			out[len] = '\0';
		}
	}
	BIO_free(b);
	return out;
}

static int write_private(const char *path, int (*fn)(FILE *, void *), void *obj, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return 0;
	FILE *f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		return 0;
	}
	int ok = fn(f, obj) && fflush(f) == 0 && fsync(fd) == 0;
	fclose(f);
	if (!ok)
		unlink(path);
	return ok;
}

static int pem_key(FILE *f, void *k)
{
	return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}

static int pem_cert(FILE *f, void *x)
{
	return PEM_write_X509(f, x);
}

static int create_ca(const char *cert_path, const char *key_path, bw_error *err)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	int rc = BW_OK;
	if (!key || !x || !set_random_serial(x, NULL)) {
		rc = bw_error_set(err, BW_E_TLS, "cannot create the device CA: %s", ossl_err());
		goto out;
	}
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400);
	X509_set_pubkey(x, key);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Bulwark", -1, -1, 0);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"Bulwark device CA", -1, -1, 0);
	X509_set_issuer_name(x, n);
	if (!bw_x509_add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    !bw_x509_add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    !bw_x509_add_ext(x, x, NID_subject_key_identifier, "hash") || !X509_sign(x, key, EVP_sha256())) {
		rc = bw_error_set(err, BW_E_TLS, "cannot sign the device CA: %s", ossl_err());
		goto out;
	}
	if (!write_private(key_path, pem_key, key, 0600)) {
		rc = bw_error_set(err, BW_E_IO, "cannot write %s: %s", key_path, strerror(errno));
		goto out;
	}
	if (!write_private(cert_path, pem_cert, x, 0644)) {
		rc = bw_error_set(err, BW_E_IO, "cannot write %s: %s", cert_path, strerror(errno));
		unlink(key_path);
	}
out:
	EVP_PKEY_free(key);
	X509_free(x);
	return rc;
}

bw_device_ca *bw_device_ca_open(const char *cert_path, const char *key_path, bool create, bw_error *err)
{
	struct stat st;
	bool have_cert = stat(cert_path, &st) == 0, have_key = stat(key_path, &st) == 0;
	if (!have_cert && !have_key && create && create_ca(cert_path, key_path, err) != BW_OK)
		return NULL;
	if (stat(key_path, &st) != 0) {
		bw_error_set(err, BW_E_IO, "device CA key %s: %s", key_path, strerror(errno));
		return NULL;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		bw_error_set(err, BW_E_DENIED,
		             "device CA key %s is readable by group or others (mode %04o); chmod 600 it", key_path,
		             (unsigned)(st.st_mode & 07777));
		return NULL;
	}
	bw_device_ca *ca = calloc(1, sizeof *ca);
	FILE *cf = ca ? fopen(cert_path, "r") : NULL;
	if (cf) {
		ca->cert = PEM_read_X509(cf, NULL, NULL, NULL);
		fclose(cf);
	}
	FILE *kf = ca ? fopen(key_path, "r") : NULL;
	if (kf) {
		ca->key = PEM_read_PrivateKey(kf, NULL, NULL, NULL);
		fclose(kf);
	}
	if (!ca || !ca->cert || !ca->key || X509_check_private_key(ca->cert, ca->key) != 1) {
		bw_error_set(err, BW_E_TLS,
		             "cannot load the device CA from %s and %s (missing, unreadable or not a pair)", cert_path,
		             key_path);
		bw_device_ca_free(ca);
		return NULL;
	}
	ca->pem = cert_pem_text(ca->cert);
	ca->store = X509_STORE_new();
	if (!ca->pem || !ca->store) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		bw_device_ca_free(ca);
		return NULL;
	}
	X509_STORE_add_cert(ca->store, ca->cert);
	return ca;
}

void bw_device_ca_free(bw_device_ca *ca)
{
	if (!ca)
		return;
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	X509_STORE_free(ca->store);
	free(ca->pem);
	free(ca);
}

const char *bw_device_ca_pem(const bw_device_ca *ca)
{
	return ca->pem;
}

X509 *bw_device_ca_cert(const bw_device_ca *ca)
{
	return ca->cert;
}

int bw_device_ca_issue(bw_device_ca *ca, const char *csr_pem, const char *device_id, int64_t validity_s,
                       char **cert_pem, char serial[41], int64_t *not_after, bw_error *err)
{
	*cert_pem = NULL;
	if (!csr_pem || strlen(csr_pem) > 16384)
		return bw_error_set(err, BW_E_INVALID, "csr: a PEM certificate request of at most 16 KiB is required");
	BIO *in = BIO_new_mem_buf(csr_pem, -1);
	X509_REQ *req = in ? PEM_read_bio_X509_REQ(in, NULL, NULL, NULL) : NULL;
	BIO_free(in);
	ERR_clear_error();
	if (!req)
		return bw_error_set(err, BW_E_INVALID, "csr: not a PEM certificate request");
	int rc = BW_OK;
	X509 *x = NULL;
	EVP_PKEY *pk = X509_REQ_get0_pubkey(req);
	char group[32] = "";
	size_t glen = 0;
	if (!pk || !EVP_PKEY_is_a(pk, "EC") ||
	    !EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof group, &glen) ||
	    strcmp(group, "prime256v1") != 0) {
		rc = bw_error_set(err, BW_E_INVALID, "csr: the key must be ECDSA P-256");
		goto out;
	}
	if (X509_REQ_verify(req, pk) != 1) {
		rc = bw_error_set(err, BW_E_INVALID, "csr: the signature does not verify");
		goto out;
	}
	x = X509_new();
	if (!x || !set_random_serial(x, serial)) {
		rc = bw_error_set(err, BW_E_RANDOM, "cannot draw a serial: %s", ossl_err());
		goto out;
	}
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -300);
	X509_gmtime_adj(X509_getm_notAfter(x), (long)validity_s);
	X509_set_pubkey(x, pk);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "O", MBSTRING_UTF8, (const unsigned char *)"Bulwark devices", -1, -1, 0);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)device_id, -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(ca->cert));
	if (!bw_x509_add_ext(x, ca->cert, NID_basic_constraints, "critical,CA:FALSE") ||
	    !bw_x509_add_ext(x, ca->cert, NID_key_usage, "critical,digitalSignature") ||
	    !bw_x509_add_ext(x, ca->cert, NID_ext_key_usage, "clientAuth") ||
	    !bw_x509_add_ext(x, ca->cert, NID_authority_key_identifier, "keyid:always") ||
	    !X509_sign(x, ca->key, EVP_sha256())) {
		rc = bw_error_set(err, BW_E_TLS, "cannot issue the device certificate: %s", ossl_err());
		goto out;
	}
	*cert_pem = cert_pem_text(x);
	const ASN1_TIME *na = X509_get0_notAfter(x);
	struct tm tm;
	ASN1_TIME_to_tm(na, &tm);
	*not_after = (int64_t)timegm(&tm);
	if (!*cert_pem)
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
out:
	X509_REQ_free(req);
	X509_free(x);
	return rc;
}

bool bw_device_ca_identify(const bw_device_ca *ca, X509 *cert, bool check_chain, char device_id[37], char serial[41])
{
	if (!cert)
		return false;
	if (check_chain) {
		X509_STORE_CTX *ctx = X509_STORE_CTX_new();
		bool ok = ctx && X509_STORE_CTX_init(ctx, ca->store, cert, NULL) == 1 &&
		          X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) == 1 && X509_verify_cert(ctx) == 1;
		X509_STORE_CTX_free(ctx);
		if (!ok)
			return false;
	}
	int len = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, device_id, 37);
	if (len != 36)
		return false;
	const ASN1_INTEGER *sn = X509_get0_serialNumber(cert);
	BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	BN_free(bn);
	if (!hex || strlen(hex) > 40) {
		OPENSSL_free(hex);
		return false;
	}
	size_t i = 0;
	for (; hex[i]; i++)
		serial[i] = (char)((hex[i] >= 'A' && hex[i] <= 'F') ? hex[i] - 'A' + 'a' : hex[i]);
	serial[i] = '\0';
	OPENSSL_free(hex);
	return true;
}
