/* host/policy/policy_doc.h: the policy document: validation and normalisation of every section, defaults,
 * section-level inheritance, the feature-lock catalog, diffs, and the admin / stored / device forms of secrets.
 * The field reference is docs/policies.md; the JSON Schema is docs/policy.schema.json. */
#ifndef BW_POLICY_DOC_H
#define BW_POLICY_DOC_H

#include "secrets.h"

#include <bulwark/errors.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Most errors bw_policy_validate lists. */
#define BW_POLICY_MAX_ERRORS 100

/* Validates a group's policy document (any subset of sections). On success *out is a new, normalised
 * document (entries normalised, defaults NOT filled in) and BW_OK. On failure BW_E_INVALID and *errors is a
 * new array of {"field": "web_protection.lists.android.block[3]", "entry": "<the bad value as text>",
 * "message": "..."} (all errors, capped at 100), err->message summarises the first. */
int bw_policy_validate(json_t *doc, json_t **out, json_t **errors, bw_error *err);
/* The full default policy (every section, defaults filled in); new reference. */
json_t *bw_policy_defaults(void);
/* Section-level merge for inheritance: returns a new document = base with each section present in `over`
 * replaced by over's section (whole-section override). */
json_t *bw_policy_merge(json_t *base, json_t *over);
/* The feature-lock catalog: array of {"id","label","platforms":{"android":{"min_os":"10"},"ios":{"min_os":"15",
 * "supervised":true}}}; new reference. */
json_t *bw_policy_feature_catalog(void);
/* Differences between two documents: array of {"path": "password.min_length", "from": old|null, "to": new|null};
 * secret fields shown as "(changed)" never the value. New reference. */
json_t *bw_policy_diff(json_t *from, json_t *to);
/* Turns a validated admin document into the stored form: uninstall password -> verifier (salted PBKDF2-SHA256,
 * >= 210000 iterations), Wi-Fi secrets -> {"enc": "<base64 of nonce|ciphertext|tag>"} with the secrets key.
 * `previous` (stored form of the last version, may be NULL) lets "password_set": true with no new password keep
 * the old verifier/ciphertext. New reference in *out. */
int bw_policy_protect(bw_secrets *s, json_t *doc, json_t *previous, json_t **out, bw_error *err);
/* Stored form -> admin view (verifier and ciphertexts replaced by "password_set": true). New reference. */
json_t *bw_policy_redact(json_t *stored);
/* Stored form -> device form (Wi-Fi secrets decrypted; uninstall verifier kept). New reference. */
int bw_policy_for_device(bw_secrets *s, json_t *stored, json_t **out, bw_error *err);

/* ---- additions beyond the design note ---- */

/* Fills every field missing from each section PRESENT in `doc` with its default (nested objects too, and each
 * Wi-Fi network), so a device never receives a partial section; sections absent from `doc` stay absent.
 * bw_policy_for_device applies it. New reference. */
json_t *bw_policy_complete(json_t *doc);
/* The default value of one section ("malware_scan", ...) or NULL for an unknown name; new reference. */
json_t *bw_policy_section_default(const char *section);
/* True when `name` is a top-level section key. */
bool bw_policy_section_known(const char *name);
/* True when `id` is a feature-lock catalog item. */
bool bw_policy_feature_known(const char *id);

/* Web-protection list entry: validates and normalises one URL / host / wildcard host / IPv4 / IPv6 entry
 * (rules in docs/policies.md). BW_OK and *out (caller frees) or BW_E_INVALID and a reason in why[]. */
int bw_policy_url_normalize(const char *entry, char **out, char *why, size_t why_len);
/* SMS sender / call-filter number entry: phone numbers (separators removed, optional leading '+', optional
 * trailing '*' prefix wildcard) and, when allow_alnum, alphanumeric sender ids. Same conventions. */
int bw_policy_phone_normalize(const char *entry, bool allow_alnum, char **out, char *why, size_t why_len);
/* App package id: Android package name or iOS bundle id. */
bool bw_policy_package_id_valid(const char *id, char *why, size_t why_len);

#endif
