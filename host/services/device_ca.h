/* host/services/device_ca.h: the device CA: created at first start, it issues each enrolled
 * device's client certificate (ECDSA P-256, CN = device id) from the device's CSR. */
#ifndef BW_DEVICE_CA_H
#define BW_DEVICE_CA_H

#include <bulwark/errors.h>
#include <openssl/x509.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct bw_device_ca bw_device_ca;

/* Loads the CA, or creates it (ECDSA P-256, SHA-256, 10 years; key file mode 0600) when
 * `create` is set and neither file exists. A key file readable by group or others is refused. */
bw_device_ca *bw_device_ca_open(const char *cert_path, const char *key_path, bool create, bw_error *err);
void bw_device_ca_free(bw_device_ca *ca);

/* Verifies the PEM CSR (its signature, an EC P-256 key) and issues a client certificate for
 * `device_id` valid `validity_s` seconds. *cert_pem is malloc'd; serial is lower-case hex. */
int bw_device_ca_issue(bw_device_ca *ca, const char *csr_pem, const char *device_id, int64_t validity_s,
                       char **cert_pem, char serial[41], int64_t *not_after, bw_error *err);

const char *bw_device_ca_pem(const bw_device_ca *ca); /* the CA certificate, PEM */
X509 *bw_device_ca_cert(const bw_device_ca *ca);      /* borrowed */

/* Device id (CN) and serial (hex) of a certificate issued by this CA; false when the
 * certificate is not one of ours (wrong issuer or signature, expired, no CN). */
bool bw_device_ca_identify(const bw_device_ca *ca, X509 *cert, bool check_chain, char device_id[37], char serial[41]);

#endif
