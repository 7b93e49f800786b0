/* pki.c: the device's keys and identities: ECDSA P-256 keys, PKCS#10 requests, certificate
 * parsing, and random but valid hardware identifiers (Luhn-checked IMEI, local MAC). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "agent.h"

/* The newest OpenSSL error as text (empty when the queue is empty). */
static const char *ossl_reason(char *buf, size_t size)
{
	unsigned long e = ERR_get_error();

	buf[0] = '\0';
	if (e)
		ERR_error_string_n(e, buf, size);
	ERR_clear_error();
	return buf;
}

EVP_PKEY *bwa_key_generate(bw_error *err)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	char why[256];

	if (!k)
		bw_error_set(err, BW_E_INTERNAL, "cannot generate an ECDSA P-256 key: %s",
		             ossl_reason(why, sizeof why));
	return k;
}

static char *bio_to_string(BIO *b)
{
	char *data;
	long n = BIO_get_mem_data(b, &data);
	char *s = bwa_xmalloc((size_t)n + 1);

	memcpy(s, data, (size_t)n);
	s[n] = '\0';
	return s;
}

char *bwa_key_pem(EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *s = NULL;

	if (b && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1)
		s = bio_to_string(b);
	BIO_free(b);
	if (!s) {
		fputs("bulwark-agent: cannot encode a private key\n", stderr);
		exit(BWA_EXIT_FAIL);
	}
	return s;
}

char *bwa_csr_pem(EVP_PKEY *key, bw_error *err)
{
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = X509_NAME_new();
	BIO *b = BIO_new(BIO_s_mem());
	char *s = NULL, why[256];

	/* The server ignores the subject and names the certificate after the new device id. */
	if (!req || !name || !b || X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"bulwark-agent", -1, -1, 0) !=
	        1 ||
	    X509_REQ_set_subject_name(req, name) != 1 || X509_REQ_set_pubkey(req, key) != 1 ||
	    X509_REQ_sign(req, key, EVP_sha256()) <= 0 || PEM_write_bio_X509_REQ(b, req) != 1)
		bw_error_set(err, BW_E_INTERNAL, "cannot build a certificate request: %s",
		             ossl_reason(why, sizeof why));
	else
		s = bio_to_string(b);
	BIO_free(b);
	X509_NAME_free(name);
	X509_REQ_free(req);
	return s;
}

EVP_PKEY *bwa_key_parse(const char *pem, bw_error *err)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
	char why[256];

	BIO_free(b);
	if (!k)
		bw_error_set(err, BW_E_INVALID, "not a PEM private key: %s", ossl_reason(why, sizeof why));
	return k;
}

X509 *bwa_cert_parse(const char *pem, bw_error *err)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *c = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
	char why[256];

	BIO_free(b);
	if (!c)
		bw_error_set(err, BW_E_INVALID, "not a PEM certificate: %s", ossl_reason(why, sizeof why));
	return c;
}

int bwa_cert_info(X509 *cert, char *cn, size_t cn_size, int64_t *not_after, bw_error *err)
{
	const ASN1_TIME *na = X509_get0_notAfter(cert);
	struct tm tm;

	if (cn && cn_size) {
		int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, (int)cn_size);

		if (n < 0)
			cn[0] = '\0';
	}
	if (not_after) {
		if (!na || ASN1_TIME_to_tm(na, &tm) != 1)
			return bw_error_set(err, BW_E_INVALID, "certificate has no readable notAfter");
		*not_after = (int64_t)timegm(&tm);
	}
	return BW_OK;
}

void bwa_random_imei(char out[16])
{
	/* A TAC-like prefix of a real GSMA range, then random digits, then the Luhn check digit. */
	unsigned char r[12];
	int sum = 0;

	out[0] = '3';
	out[1] = '5';
	bwa_random(r, sizeof r);
	for (int i = 0; i < 12; i++)
		out[2 + i] = (char)('0' + r[i] % 10);
	/* Luhn over the 14 payload digits: every second digit from the right one is doubled. */
	for (int i = 0; i < 14; i++) {
		int d = out[i] - '0';

		if (i % 2 == 1) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	out[14] = (char)('0' + (10 - sum % 10) % 10);
	out[15] = '\0';
}

void bwa_random_mac(char out[18])
{
	unsigned char m[6];

	bwa_random(m, sizeof m);
	/* Locally administered, unicast: what Android's MAC randomisation reports. */
	m[0] = (unsigned char)((m[0] & 0xfc) | 0x02);
	snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
}

void bwa_random_alnum(char *out, size_t len, bool upper_only)
{
	static const char all[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz";
	size_t alphabet = upper_only ? 36 : 62;

	for (size_t i = 0; i < len; i++)
		out[i] = all[bwa_random_u64() % alphabet];
	out[len] = '\0';
}
