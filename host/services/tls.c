/* host/services/tls.c: listener TLS policy and self-signed certificate generation (OpenSSL 3). */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *ssl_err(void)
{
	static __thread char buf[256];
	unsigned long e = ERR_get_error();
	if (!e)
		return "unknown OpenSSL error";
	ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	return buf;
}

static X509 *read_cert(const char *path, bw_error *err)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		bw_error_set(err, BW_E_IO, "cannot open certificate %s: %s", path, strerror(errno));
		return NULL;
	}
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		bw_error_set(err, BW_E_TLS, "%s is not a PEM certificate: %s", path, ssl_err());
	return x;
}

static int check_x509(X509 *x, const char *path, bw_error *err)
{
	int md_nid = 0, pk_nid = 0;
	if (!X509_get_signature_info(x, &md_nid, &pk_nid, NULL, NULL))
		return bw_error_set(err, BW_E_TLS, "%s: cannot read the signature algorithm", path);
	if (md_nid == NID_sha1 || md_nid == NID_md5 || md_nid == NID_md5_sha1 || md_nid == NID_undef)
		return bw_error_set(err, BW_E_TLS, "%s: signed with %s; only SHA-2 signatures are accepted", path,
		                    md_nid == NID_undef ? "an unknown digest" : OBJ_nid2sn(md_nid));
	EVP_PKEY *pk = X509_get0_pubkey(x);
	if (!pk)
		return bw_error_set(err, BW_E_TLS, "%s: no public key", path);
	if (EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) < 2048)
		return bw_error_set(err, BW_E_TLS, "%s: RSA key of %d bits; at least 2048 are required", path,
		                    EVP_PKEY_get_bits(pk));
	if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0)
		return bw_error_set(err, BW_E_TLS, "%s: certificate expired", path);
	return BW_OK;
}

int bw_tls_check_certificate(const char *cert_file, bw_error *err)
{
	X509 *x = read_cert(cert_file, err);
	if (!x)
		return err ? err->code : BW_E_TLS;
	int rc = check_x509(x, cert_file, err);
	X509_free(x);
	return rc;
}

SSL_CTX *bw_tls_server_ctx_new(const char *cert_file, const char *key_file, bw_error *err)
{
	if (bw_tls_check_certificate(cert_file, err) != BW_OK)
		return NULL;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		bw_error_set(err, BW_E_TLS, "SSL_CTX_new: %s", ssl_err());
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	/* No compression, no renegotiation; the client picks among our suites (Mozilla intermediate). */
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	if (!SSL_CTX_set_cipher_list(ctx, BW_TLS12_CIPHERS) ||
	    !SSL_CTX_set_ciphersuites(ctx,
	                              "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") ||
	    !SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384")) {
		bw_error_set(err, BW_E_TLS, "cannot set TLS suites: %s", ssl_err());
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* Resumption: server-side session cache for TLS 1.2 and tickets (TLS 1.2 and 1.3). */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, 20000);
	SSL_CTX_set_timeout(ctx, 7200);
	static const unsigned char sid_ctx[] = "bulwark";
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
		bw_error_set(err, BW_E_TLS, "cannot load certificate chain %s: %s", cert_file, ssl_err());
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
		/* OpenSSL already compares the key with the certificate here: say so plainly. */
		unsigned long e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH) {
			ERR_clear_error();
			bw_error_set(err, BW_E_TLS, "private key %s does not match certificate %s", key_file,
			             cert_file);
		} else {
			bw_error_set(err, BW_E_TLS, "cannot load private key %s: %s", key_file, ssl_err());
		}
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		bw_error_set(err, BW_E_TLS, "private key %s does not match certificate %s", key_file, cert_file);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* ---- generation */

static EVP_PKEY *new_p256_key(bw_error *err)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	if (!k)
		bw_error_set(err, BW_E_TLS, "cannot generate an EC P-256 key: %s", ssl_err());
	return k;
}

static int write_atomically(const char *path, mode_t mode, int (*writer)(FILE *, void *), void *obj, bw_error *err)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return bw_error_set(err, BW_E_IO, "cannot create %s: %s", tmp, strerror(errno));
	fchmod(fd, mode);
	FILE *f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		unlink(tmp);
		return bw_error_set(err, BW_E_IO, "cannot write %s: %s", tmp, strerror(errno));
	}
	int ok = writer(f, obj);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ok = 0;
	fclose(f);
	if (!ok || rename(tmp, path) != 0) {
		unlink(tmp);
		return bw_error_set(err, BW_E_IO, "cannot write %s", path);
	}
	return BW_OK;
}

static int write_key(FILE *f, void *k)
{
	return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}

static int write_cert(FILE *f, void *x)
{
	return PEM_write_X509(f, x);
}

static EVP_PKEY *read_key(const char *path, bw_error *err)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		bw_error_set(err, BW_E_IO, "cannot open key %s: %s", path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (!k)
		bw_error_set(err, BW_E_TLS, "%s is not a PEM private key: %s", path, ssl_err());
	return k;
}

int bw_x509_add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ex)
		return 0;
	int ok = X509_add_ext(cert, ex, -1);
	X509_EXTENSION_free(ex);
	return ok;
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, long days, bool ca,
                       const char *san, bw_error *err)
{
	X509 *x = X509_new();
	unsigned char serial[16];
	if (!x || RAND_bytes(serial, sizeof serial) != 1) {
		X509_free(x);
		bw_error_set(err, BW_E_RANDOM, "cannot draw a certificate serial: %s", ssl_err());
		return NULL;
	}
	serial[0] &= 0x7f; /* positive */
	BIGNUM *bn = BN_bin2bn(serial, sizeof serial, NULL);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	BN_free(bn);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), days * 86400L);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"Bulwark", -1, -1, 0);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	X509 *iss = issuer ? issuer : x;
	int ok = 1;
	if (ca) {
		ok &= bw_x509_add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
		ok &= bw_x509_add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		ok &= bw_x509_add_ext(x, iss, NID_basic_constraints, "critical,CA:FALSE");
		ok &= bw_x509_add_ext(x, iss, NID_key_usage, "critical,digitalSignature");
		ok &= bw_x509_add_ext(x, iss, NID_ext_key_usage, "serverAuth");
		ok &= bw_x509_add_ext(x, iss, NID_subject_alt_name, san);
	}
	ok &= bw_x509_add_ext(x, iss, NID_subject_key_identifier, "hash");
	if (issuer)
		ok &= bw_x509_add_ext(x, iss, NID_authority_key_identifier, "keyid:always");
	if (!ok || !X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256())) {
		bw_error_set(err, BW_E_TLS, "cannot build certificate for %s: %s", cn, ssl_err());
		X509_free(x);
		return NULL;
	}
	return x;
}

char *bw_tls_common_name(const char *cert_file, bw_error *err)
{
	X509 *x = read_cert(cert_file, err);
	if (!x)
		return NULL;
	char cn[256] = "";
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
	X509_free(x);
	return strdup(cn);
}

int bw_tls_generate(const struct bw_tls_paths *p, const char *common_name, const char *const *extra_names,
                    size_t n_extra, bool reissue, bw_error *err)
{
	int rc = BW_OK;
	EVP_PKEY *ca_key = NULL, *key = NULL;
	X509 *ca = NULL, *cert = NULL;
	bool have_ca = access(p->ca_cert, F_OK) == 0 && access(p->ca_key, F_OK) == 0;
	bool have_cert = access(p->cert, F_OK) == 0 && access(p->key, F_OK) == 0;
	if (have_cert && !reissue)
		return BW_OK;
	if (have_ca) {
		if (!(ca = read_cert(p->ca_cert, err)) || !(ca_key = read_key(p->ca_key, err))) {
			rc = err ? err->code : BW_E_TLS;
			goto out;
		}
	} else {
		if (!(ca_key = new_p256_key(err)) ||
		    !(ca = make_cert(ca_key, "Bulwark local CA", NULL, NULL, 3650, true, NULL, err))) {
			rc = err ? err->code : BW_E_TLS;
			goto out;
		}
		if ((rc = write_atomically(p->ca_key, 0600, write_key, ca_key, err)) != BW_OK ||
		    (rc = write_atomically(p->ca_cert, 0644, write_cert, ca, err)) != BW_OK)
			goto out;
	}
	char san[4096];
	size_t off = (size_t)snprintf(san, sizeof san, "DNS:localhost,IP:127.0.0.1,IP:::1");
	if (common_name && strcmp(common_name, "localhost") != 0) {
		unsigned char tmp[16];
		bool ip = inet_pton(AF_INET, common_name, tmp) == 1 || inet_pton(AF_INET6, common_name, tmp) == 1;
		off += (size_t)snprintf(san + off, sizeof san - off, ",%s:%s", ip ? "IP" : "DNS", common_name);
	}
	for (size_t i = 0; i < n_extra && off < sizeof san; i++) {
		unsigned char tmp[16];
		const char *n = extra_names[i];
		bool ip = inet_pton(AF_INET, n, tmp) == 1 || inet_pton(AF_INET6, n, tmp) == 1;
		off += (size_t)snprintf(san + off, sizeof san - off, ",%s:%s", ip ? "IP" : "DNS", n);
	}
	if (off >= sizeof san) {
		rc = bw_error_set(err, BW_E_INVALID, "too many certificate names");
		goto out;
	}
	if (!(key = new_p256_key(err)) ||
	    !(cert = make_cert(key, common_name ? common_name : "localhost", ca, ca_key, 397, false, san, err))) {
		rc = err ? err->code : BW_E_TLS;
		goto out;
	}
	if ((rc = write_atomically(p->key, 0600, write_key, key, err)) != BW_OK ||
	    (rc = write_atomically(p->cert, 0644, write_cert, cert, err)) != BW_OK)
		goto out;
out:
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
	X509_free(ca);
	X509_free(cert);
	return rc;
}

int bw_tls_server_ctx_require_client_ca(SSL_CTX *ctx, X509 *ca, bw_error *err)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
	X509_NAME *name = X509_NAME_dup(X509_get_subject_name(ca));
	if (!store || !names || !name || X509_STORE_add_cert(store, ca) != 1 || !sk_X509_NAME_push(names, name)) {
		X509_NAME_free(name);
		sk_X509_NAME_pop_free(names, X509_NAME_free);
		return bw_error_set(err, BW_E_TLS, "cannot trust the device CA: %s", ssl_err());
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	X509_VERIFY_PARAM_set_purpose(SSL_CTX_get0_param(ctx), X509_PURPOSE_SSL_CLIENT);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_verify_depth(ctx, 2);
	return BW_OK;
}
