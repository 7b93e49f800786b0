/* tests/unit/test_tls.c: the listener TLS policy and certificate generation
 * (host/services/tls.c): generated CA and server certificate, reissue, refused certificates,
 * and in-memory handshakes (BIO pairs) for protocol versions, cipher suites and resumption. */
#include "testutil.h"

#include "tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct fx {
	char *dir;
	char ca[512], ca_key[512], cert[512], key[512];
	struct bw_tls_paths paths;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	f->dir = bw_test_tmpdir("tls");
	snprintf(f->ca, sizeof f->ca, "%s/ca.pem", f->dir);
	snprintf(f->ca_key, sizeof f->ca_key, "%s/ca.key", f->dir);
	snprintf(f->cert, sizeof f->cert, "%s/server.pem", f->dir);
	snprintf(f->key, sizeof f->key, "%s/server.key", f->dir);
	f->paths = (struct bw_tls_paths){f->ca, f->ca_key, f->cert, f->key};
	bw_error err = {0};
	const char *extra[] = {"bulwark.example", "192.0.2.5"};
	if (bw_tls_generate(&f->paths, "localhost", extra, 2, false, &err) != BW_OK) {
		fprintf(stderr, "bw_tls_generate: %s\n", err.message);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	bw_test_rmtree(f->dir);
	free(f->dir);
	free(f);
	return 0;
}

static X509 *load_cert(const char *path)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(x);
	return x;
}

static char *serial_hex(X509 *x)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	char *h = BN_bn2hex(bn);
	BN_free(bn);
	char *s = strdup(h);
	OPENSSL_free(h);
	return s;
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	static char buf[16384];
	size_t n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	return strdup(buf);
}

static void assert_mode(const char *path, mode_t want)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, want);
}

static bool has_san(X509 *x, int type, const void *data, size_t len)
{
	GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	bool found = false;
	for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && !found; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
		if (g->type != type)
			continue;
		const ASN1_STRING *s = type == GEN_DNS ? g->d.dNSName : g->d.iPAddress;
		found = (size_t)ASN1_STRING_length(s) == len && memcmp(ASN1_STRING_get0_data(s), data, len) == 0;
	}
	GENERAL_NAMES_free(names);
	return found;
}

static bool verifies(X509 *cert, X509 *ca)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_add_cert(store, ca);
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509_STORE_CTX_init(ctx, store, cert, NULL);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
	bool ok = X509_verify_cert(ctx) == 1;
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return ok;
}

static void test_generate(void **state)
{
	struct fx *f = *state;
	assert_mode(f->ca_key, 0600);
	assert_mode(f->key, 0600);
	assert_mode(f->ca, 0644);
	assert_mode(f->cert, 0644);
	/* No temporary files left behind. */
	char tmp[600];
	snprintf(tmp, sizeof tmp, "%s/server.key.tmp-%ld", f->dir, (long)getpid());
	assert_int_not_equal(access(tmp, F_OK), 0);

	X509 *ca = load_cert(f->ca), *cert = load_cert(f->cert);
	/* CA: CA:TRUE, self-signed, SHA-256, EC P-256. */
	assert_true(X509_get_extension_flags(ca) & EXFLAG_CA);
	assert_int_equal(X509_check_ca(ca), 1);
	/* Server: not a CA, signed by the CA with SHA-256, EC P-256 key. */
	assert_false(X509_get_extension_flags(cert) & EXFLAG_CA);
	X509 *both[] = {ca, cert};
	for (int i = 0; i < 2; i++) {
		int md = 0, pk = 0;
		assert_int_equal(X509_get_signature_info(both[i], &md, &pk, NULL, NULL), 1);
		assert_int_equal(md, NID_sha256);
		assert_int_equal(pk, EVP_PKEY_EC);
		EVP_PKEY *k = X509_get0_pubkey(both[i]);
		char group[64] = "";
		assert_int_equal(EVP_PKEY_get_group_name(k, group, sizeof group, NULL), 1);
		assert_string_equal(group, "prime256v1");
		assert_int_equal(X509_get_version(both[i]), 2); /* v3 */
	}
	assert_true(verifies(cert, ca));
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(cert), X509_get_subject_name(ca)), 0);

	/* SANs: localhost, 127.0.0.1, ::1 and the extra names. */
	unsigned char v4[4], v6[16], ex4[4];
	inet_pton(AF_INET, "127.0.0.1", v4);
	inet_pton(AF_INET6, "::1", v6);
	inet_pton(AF_INET, "192.0.2.5", ex4);
	assert_true(has_san(cert, GEN_DNS, "localhost", 9));
	assert_true(has_san(cert, GEN_IPADD, v4, 4));
	assert_true(has_san(cert, GEN_IPADD, v6, 16));
	assert_true(has_san(cert, GEN_DNS, "bulwark.example", 15));
	assert_true(has_san(cert, GEN_IPADD, ex4, 4));
	assert_false(has_san(cert, GEN_DNS, "192.0.2.5", 9)); /* IP literals are IP SANs, not DNS */
	assert_int_equal(X509_check_host(cert, "localhost", 0, 0, NULL), 1);
	assert_int_equal(X509_check_ip_asc(cert, "::1", 0), 1);
	assert_int_equal(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
	assert_int_equal(X509_check_host(cert, "evil.example", 0, 0, NULL), 0);

	/* Validity: the server certificate lasts 397 days, the CA about 10 years. */
	int days = 0, secs = 0;
	assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(cert)), 1);
	assert_true(days >= 396 && days <= 397);
	assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(ca)), 1);
	assert_true(days >= 3640 && days <= 3650);

	char *cn = bw_tls_common_name(f->cert, NULL);
	assert_string_equal(cn, "localhost");
	free(cn);
	X509_free(ca);
	X509_free(cert);

	bw_error err = {0};
	assert_int_equal(bw_tls_check_certificate(f->cert, &err), BW_OK);
	assert_int_equal(bw_tls_check_certificate(f->ca, &err), BW_OK);
	SSL_CTX *ctx = bw_tls_server_ctx_new(f->cert, f->key, &err);
	assert_non_null(ctx);
	SSL_CTX_free(ctx);
}

static void test_generate_keeps_existing_and_reissues(void **state)
{
	struct fx *f = *state;
	char *ca_before = slurp(f->ca), *cert_before = slurp(f->cert), *ca_key_before = slurp(f->ca_key);
	X509 *old = load_cert(f->cert);
	char *old_serial = serial_hex(old);
	bw_error err = {0};
	/* Without reissue, existing files are kept as they are. */
	assert_int_equal(bw_tls_generate(&f->paths, "localhost", NULL, 0, false, &err), BW_OK);
	char *cert_same = slurp(f->cert);
	assert_string_equal(cert_same, cert_before);
	free(cert_same);

	/* Reissue with the common name read back from the certificate: same CA, new serial. */
	char *cn = bw_tls_common_name(f->cert, &err);
	assert_non_null(cn);
	assert_int_equal(bw_tls_generate(&f->paths, cn, NULL, 0, true, &err), BW_OK);
	char *ca_after = slurp(f->ca), *ca_key_after = slurp(f->ca_key), *cert_after = slurp(f->cert);
	assert_string_equal(ca_after, ca_before);
	assert_string_equal(ca_key_after, ca_key_before);
	assert_string_not_equal(cert_after, cert_before);
	X509 *fresh = load_cert(f->cert), *ca = load_cert(f->ca);
	char *new_serial = serial_hex(fresh);
	assert_string_not_equal(new_serial, old_serial);
	char *cn2 = bw_tls_common_name(f->cert, &err);
	assert_string_equal(cn2, cn);
	assert_true(verifies(fresh, ca));
	assert_mode(f->key, 0600);
	/* The new key matches the new certificate. */
	SSL_CTX *ctx = bw_tls_server_ctx_new(f->cert, f->key, &err);
	assert_non_null(ctx);
	SSL_CTX_free(ctx);

	free(cn);
	free(cn2);
	free(new_serial);
	free(old_serial);
	X509_free(old);
	X509_free(fresh);
	X509_free(ca);
	free(ca_before);
	free(cert_before);
	free(ca_key_before);
	free(ca_after);
	free(ca_key_after);
	free(cert_after);
}

/* Writes a self-signed certificate for `key` (signed with `md`, valid from now+from_s to
 * now+to_s) and the key itself into dir/<name>.pem and dir/<name>.key. */
static void write_selfsigned(const char *dir, const char *name, EVP_PKEY *key, const EVP_MD *md, long from_s, long to_s,
                             char *cert_path, char *key_path, size_t len)
{
	X509 *x = X509_new();
	ASN1_INTEGER_set(X509_get_serialNumber(x), 4242);
	X509_set_version(x, 2);
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), to_s);
	X509_set_pubkey(x, key);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"localhost", -1, -1, 0);
	X509_set_issuer_name(x, n);
	assert_true(X509_sign(x, key, md) > 0);
	snprintf(cert_path, len, "%s/%s.pem", dir, name);
	snprintf(key_path, len, "%s/%s.key", dir, name);
	FILE *fp = fopen(cert_path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_X509(fp, x), 1);
	fclose(fp);
	fp = fopen(key_path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(fp);
	X509_free(x);
}

static void expect_refused(const char *cert, const char *key, const char *what)
{
	bw_error err = {0};
	SSL_CTX *ctx = bw_tls_server_ctx_new(cert, key, &err);
	if (ctx)
		fail_msg("%s accepted", cert);
	assert_int_equal(err.code, BW_E_TLS);
	if (!strstr(err.message, what) || !strstr(err.message, cert))
		fail_msg("message for %s: %s (wanted '%s' and the file name)", cert, err.message, what);
}

static void test_refusals(void **state)
{
	struct fx *f = *state;
	char cert[600], key[600];

	EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
	assert_non_null(rsa1024);
	write_selfsigned(f->dir, "rsa1024", rsa1024, EVP_sha256(), 0, 86400, cert, key, sizeof cert);
	expect_refused(cert, key, "1024 bits");
	bw_error err = {0};
	assert_int_equal(bw_tls_check_certificate(cert, &err), BW_E_TLS);
	EVP_PKEY_free(rsa1024);

	EVP_PKEY *ec = EVP_EC_gen("P-256");
	write_selfsigned(f->dir, "sha1", ec, EVP_sha1(), 0, 86400, cert, key, sizeof cert);
	expect_refused(cert, key, "SHA1");
	write_selfsigned(f->dir, "expired", ec, EVP_sha256(), -10 * 86400, -86400, cert, key, sizeof cert);
	expect_refused(cert, key, "expired");
	/* The same key and digest with a valid date is accepted: the refusals above are about
	 * what they say. */
	write_selfsigned(f->dir, "fine", ec, EVP_sha256(), -60, 86400, cert, key, sizeof cert);
	SSL_CTX *ok = bw_tls_server_ctx_new(cert, key, &err);
	assert_non_null(ok);
	SSL_CTX_free(ok);
	EVP_PKEY_free(ec);

	/* Key mismatch: the server certificate with the CA's key. */
	expect_refused(f->cert, f->ca_key, "does not match");

	/* Not a certificate, and a missing file. */
	char *junk = bw_test_write(f->dir, "junk.pem", "not a certificate\n");
	expect_refused(junk, f->key, "not a PEM certificate");
	free(junk);
	char missing[600];
	snprintf(missing, sizeof missing, "%s/missing.pem", f->dir);
	bw_error_clear(&err);
	assert_null(bw_tls_server_ctx_new(missing, f->key, &err));
	assert_int_equal(err.code, BW_E_IO);
	assert_non_null(strstr(err.message, missing));
	/* A key file that is not a key. */
	char *badkey = bw_test_write(f->dir, "bad.key", "nope\n");
	bw_error_clear(&err);
	assert_null(bw_tls_server_ctx_new(f->cert, badkey, &err));
	assert_int_equal(err.code, BW_E_TLS);
	assert_non_null(strstr(err.message, badkey));
	free(badkey);
}

/* ---- handshakes in memory */

struct hs {
	SSL *client, *server;
	int client_err, server_err; /* SSL_get_error of a failed side, 0 when none */
	unsigned long server_reason;
};

static SSL_CTX *client_ctx(const struct fx *f, int min_v, int max_v, const char *ciphers)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	assert_non_null(c);
	if (min_v < TLS1_2_VERSION) {
		/* Let the client really offer old versions, so the server is what refuses them. */
		SSL_CTX_set_security_level(c, 0);
		assert_int_equal(SSL_CTX_set_cipher_list(c, "DEFAULT:@SECLEVEL=0"), 1);
	}
	SSL_CTX_set_min_proto_version(c, min_v);
	SSL_CTX_set_max_proto_version(c, max_v);
	if (ciphers)
		assert_int_equal(SSL_CTX_set_cipher_list(c, ciphers), 1);
	assert_int_equal(SSL_CTX_load_verify_locations(c, f->ca, NULL), 1);
	SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT);
	return c;
}

/* Runs a handshake between a new client and server SSL over a BIO pair; true when both
 * sides completed it. The SSL objects stay in *h for inspection (free with hs_free). */
static bool handshake(SSL_CTX *cctx, SSL_CTX *sctx, SSL_SESSION *resume, struct hs *h)
{
	memset(h, 0, sizeof *h);
	h->client = SSL_new(cctx);
	h->server = SSL_new(sctx);
	assert_non_null(h->client);
	assert_non_null(h->server);
	BIO *cb = NULL, *sb = NULL;
	assert_int_equal(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
	SSL_set_bio(h->client, cb, cb);
	SSL_set_bio(h->server, sb, sb);
	SSL_set_connect_state(h->client);
	SSL_set_accept_state(h->server);
	SSL_set_tlsext_host_name(h->client, "localhost");
	SSL_set1_host(h->client, "localhost");
	if (resume)
		assert_int_equal(SSL_set_session(h->client, resume), 1);
	ERR_clear_error();
	bool c_done = false, s_done = false;
	for (int i = 0; i < 50 && !(c_done && s_done); i++) {
		if (!c_done) {
			int rc = SSL_do_handshake(h->client);
			if (rc == 1)
				c_done = true;
			else {
				int e = SSL_get_error(h->client, rc);
				if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
					h->client_err = e;
					break;
				}
			}
		}
		if (!s_done) {
			int rc = SSL_do_handshake(h->server);
			if (rc == 1)
				s_done = true;
			else {
				int e = SSL_get_error(h->server, rc);
				if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
					h->server_err = e;
					h->server_reason = ERR_GET_REASON(ERR_peek_error());
					break;
				}
			}
		}
	}
	ERR_clear_error();
	return c_done && s_done;
}

static void hs_free(struct hs *h)
{
	/* A connection freed without close_notify has its session dropped from the caches, so
	 * close cleanly (as a well-behaved peer does) before freeing. */
	if (SSL_is_init_finished(h->client) && SSL_is_init_finished(h->server)) {
		SSL_shutdown(h->client);
		SSL_shutdown(h->server);
	}
	SSL_free(h->client);
	SSL_free(h->server);
	h->client = h->server = NULL;
}

static SSL_CTX *server_ctx(const struct fx *f)
{
	bw_error err = {0};
	SSL_CTX *s = bw_tls_server_ctx_new(f->cert, f->key, &err);
	if (!s)
		fail_msg("server ctx: %s", err.message);
	return s;
}

static void test_protocol_versions(void **state)
{
	struct fx *f = *state;
	SSL_CTX *sctx = server_ctx(f);
	struct hs h;

	/* A client limited to TLS 1.1 is refused by the server. */
	SSL_CTX *old = client_ctx(f, TLS1_VERSION, TLS1_1_VERSION, NULL);
	assert_false(handshake(old, sctx, NULL, &h));
	assert_int_equal(h.server_err, SSL_ERROR_SSL);
	assert_int_equal(h.server_reason, SSL_R_UNSUPPORTED_PROTOCOL);
	hs_free(&h);
	SSL_CTX_free(old);

	/* TLS 1.3 works. */
	SSL_CTX *v13 = client_ctx(f, TLS1_3_VERSION, TLS1_3_VERSION, NULL);
	assert_true(handshake(v13, sctx, NULL, &h));
	assert_int_equal(SSL_version(h.server), TLS1_3_VERSION);
	assert_int_equal(SSL_get_verify_result(h.client), X509_V_OK);
	hs_free(&h);
	SSL_CTX_free(v13);

	/* TLS 1.2 with the client's default suites negotiates an ECDHE suite. */
	SSL_CTX *v12 = client_ctx(f, TLS1_2_VERSION, TLS1_2_VERSION, NULL);
	assert_true(handshake(v12, sctx, NULL, &h));
	assert_int_equal(SSL_version(h.server), TLS1_2_VERSION);
	const char *name = SSL_CIPHER_get_name(SSL_get_current_cipher(h.server));
	if (strncmp(name, "ECDHE-", 6) != 0)
		fail_msg("negotiated %s", name);
	hs_free(&h);
	SSL_CTX_free(v12);

	/* A TLS 1.2 client that offers only RSA key exchange or DHE suites gets nowhere. */
	SSL_CTX *noecdhe = client_ctx(f, TLS1_2_VERSION, TLS1_2_VERSION,
	                              "AES128-GCM-SHA256:AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256");
	assert_false(handshake(noecdhe, sctx, NULL, &h));
	assert_int_equal(h.server_err, SSL_ERROR_SSL);
	assert_int_equal(h.server_reason, SSL_R_NO_SHARED_CIPHER);
	hs_free(&h);
	SSL_CTX_free(noecdhe);

	/* Old CBC/SHA-1 ECDHE suites are not offered either. */
	SSL_CTX *cbc = client_ctx(f, TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA");
	assert_false(handshake(cbc, sctx, NULL, &h));
	hs_free(&h);
	SSL_CTX_free(cbc);
	SSL_CTX_free(sctx);
}

static void test_server_cipher_list(void **state)
{
	struct fx *f = *state;
	SSL_CTX *sctx = server_ctx(f);
	SSL *s = SSL_new(sctx);
	STACK_OF(SSL_CIPHER) *list = SSL_get_ciphers(s);
	assert_non_null(list);
	int n12 = 0, n13 = 0;
	for (int i = 0; i < sk_SSL_CIPHER_num(list); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(list, i);
		const char *name = SSL_CIPHER_get_name(c);
		if (SSL_CIPHER_get_kx_nid(c) == NID_kx_any) { /* a TLS 1.3 suite */
			n13++;
			continue;
		}
		n12++;
		if (!strstr(name, "ECDHE") || SSL_CIPHER_get_kx_nid(c) != NID_kx_ecdhe)
			fail_msg("TLS 1.2 suite without ECDHE offered: %s", name);
		if (!strstr(name, "GCM") && !strstr(name, "CHACHA20"))
			fail_msg("TLS 1.2 suite without AEAD offered: %s", name);
	}
	assert_true(n12 >= 2);
	assert_int_equal(n13, 3);
	/* Compression and renegotiation are off; TLS 1.2 is the minimum. */
	assert_true(SSL_CTX_get_options(sctx) & SSL_OP_NO_COMPRESSION);
	assert_true(SSL_CTX_get_options(sctx) & SSL_OP_NO_RENEGOTIATION);
	assert_int_equal(SSL_CTX_get_min_proto_version(sctx), TLS1_2_VERSION);
	SSL_free(s);
	SSL_CTX_free(sctx);
}

static void test_rsa_server_policy(void **state)
{
	/* With an RSA certificate, the RSA key exchange suites would be usable by the key type
	 * alone; the policy must still refuse them and accept ECDHE-RSA. */
	struct fx *f = *state;
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	assert_non_null(rsa);
	struct fx rf = *f;
	write_selfsigned(f->dir, "rsa2048", rsa, EVP_sha256(), -60, 86400, rf.cert, rf.key, sizeof rf.cert);
	snprintf(rf.ca, sizeof rf.ca, "%s", rf.cert); /* self-signed: trust itself */
	EVP_PKEY_free(rsa);
	SSL_CTX *sctx = server_ctx(&rf);
	struct hs h;
	SSL_CTX *plain = client_ctx(&rf, TLS1_2_VERSION, TLS1_2_VERSION, "AES128-GCM-SHA256:AES256-GCM-SHA384");
	assert_false(handshake(plain, sctx, NULL, &h));
	assert_int_equal(h.server_reason, SSL_R_NO_SHARED_CIPHER);
	hs_free(&h);
	SSL_CTX_free(plain);
	SSL_CTX *ecdhe = client_ctx(&rf, TLS1_2_VERSION, TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256");
	assert_true(handshake(ecdhe, sctx, NULL, &h));
	assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(h.client)), "ECDHE-RSA-AES128-GCM-SHA256");
	hs_free(&h);
	SSL_CTX_free(ecdhe);
	SSL_CTX_free(sctx);
}

static void test_resumption(void **state)
{
	struct fx *f = *state;
	SSL_CTX *sctx = server_ctx(f);
	struct hs h;

	/* TLS 1.2: the saved session resumes on a second connection. */
	SSL_CTX *c12 = client_ctx(f, TLS1_2_VERSION, TLS1_2_VERSION, NULL);
	assert_true(handshake(c12, sctx, NULL, &h));
	assert_int_equal(SSL_session_reused(h.client), 0);
	SSL_SESSION *sess = SSL_get1_session(h.client);
	assert_non_null(sess);
	hs_free(&h);
	assert_true(handshake(c12, sctx, sess, &h));
	assert_int_equal(SSL_session_reused(h.client), 1);
	assert_int_equal(SSL_session_reused(h.server), 1);
	hs_free(&h);
	SSL_SESSION_free(sess);
	SSL_CTX_free(c12);

	/* TLS 1.3: tickets arrive after the handshake; read once to receive them. */
	SSL_CTX *c13 = client_ctx(f, TLS1_3_VERSION, TLS1_3_VERSION, NULL);
	assert_true(handshake(c13, sctx, NULL, &h));
	assert_int_equal(SSL_write(h.server, "x", 1), 1);
	char b;
	assert_int_equal(SSL_read(h.client, &b, 1), 1);
	sess = SSL_get1_session(h.client);
	assert_true(SSL_SESSION_is_resumable(sess));
	hs_free(&h);
	assert_true(handshake(c13, sctx, sess, &h));
	assert_int_equal(SSL_session_reused(h.client), 1);
	hs_free(&h);
	SSL_SESSION_free(sess);
	SSL_CTX_free(c13);
	SSL_CTX_free(sctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_generate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_generate_keeps_existing_and_reissues, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_protocol_versions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_server_cipher_list, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rsa_server_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_resumption, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
