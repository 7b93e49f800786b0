/* host/services/tls.h: TLS policy for listeners (TLS 1.2/1.3, ECDHE-only suites, resumption)
 * and the self-signed CA + server certificate the demo setup and tests use. */
#ifndef BW_TLS_H
#define BW_TLS_H

#include <bulwark/errors.h>
#include <openssl/ssl.h>
#include <stdbool.h>

/* Mozilla "intermediate" TLS 1.2 suites, ECDHE only (no RSA key exchange, no DHE). */
#define BW_TLS12_CIPHERS                                                                                               \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"                     \
	"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* A server context: certificate chain and key from PEM files. Refuses a certificate signed
 * with SHA-1 or MD5, an RSA key under 2048 bits, a key that does not match, and an expired
 * certificate (with a message naming the file). */
SSL_CTX *bw_tls_server_ctx_new(const char *cert_file, const char *key_file, bw_error *err);

/* Asks clients for a certificate issued by `ca` (optional: a client without one still
 * connects, for enrollment; a client with a certificate that does not verify is refused in
 * the handshake). */
int bw_tls_server_ctx_require_client_ca(SSL_CTX *ctx, X509 *ca, bw_error *err);

/* Checks one certificate file against the policy above without building a context. */
int bw_tls_check_certificate(const char *cert_file, bw_error *err);

/* Adds an X.509v3 extension in OpenSSL's config syntax ("critical,CA:FALSE"); 1 on success. */
int bw_x509_add_ext(X509 *cert, X509 *issuer, int nid, const char *value);

struct bw_tls_paths {
	const char *ca_cert, *ca_key, *cert, *key;
};

/* Creates what is missing: a CA (ECDSA P-256, SHA-256, 10 years) and a server certificate
 * signed by it (ECDSA P-256, SHA-256, 397 days) for `common_name` with SANs localhost,
 * 127.0.0.1, ::1 and `extra_names` (DNS names or IP literals). With `reissue`, the server
 * certificate is issued again with the same common name, keeping the CA. Keys are written
 * with mode 0600, certificates 0644, atomically. */
int bw_tls_generate(const struct bw_tls_paths *paths, const char *common_name, const char *const *extra_names,
                    size_t n_extra, bool reissue, bw_error *err);

/* The common name of a certificate file, for reissuing with the same name. Caller frees. */
char *bw_tls_common_name(const char *cert_file, bw_error *err);

#endif
