/* plugins/push_fcm/fcm_core.c: the pure parts of the FCM push provider (see fcm_core.h): service-account file,
 * RS256 JWT assertion, token cache timing, message bodies, answer classification, retry delays. No host calls,
 * no clocks of its own, no logging: nothing here can leak a key into a log line. */
#include "fcm_core.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

/* ---- base64url */

char *fcm_b64url(const unsigned char *data, size_t len)
{
	size_t cap = 4 * ((len + 2) / 3) + 1;
	char *out = malloc(cap);
	if (!out)
		return NULL;
	int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	if (n < 0) {
		free(out);
		return NULL;
	}
	size_t w = 0;
	for (int i = 0; i < n; i++) {
		char c = out[i];
		if (c == '=')
			break;
		out[w++] = c == '+' ? '-' : c == '/' ? '_' : c;
	}
	out[w] = '\0';
	return out;
}

unsigned char *fcm_b64url_decode(const char *text, size_t len, size_t *out_len)
{
	while (len > 0 && text[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return NULL;
	size_t padded = (len + 3) / 4 * 4;
	char *tmp = malloc(padded + 1);
	unsigned char *out = malloc(padded / 4 * 3 + 1);
	if (!tmp || !out)
		goto bad;
	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			goto bad;
		tmp[i] = c;
	}
	for (size_t i = len; i < padded; i++)
		tmp[i] = '=';
	tmp[padded] = '\0';
	int n = padded ? EVP_DecodeBlock(out, (unsigned char *)tmp, (int)padded) : 0;
	if (n < 0)
		goto bad;
	size_t pad = padded - len;
	*out_len = (size_t)n - pad;
	out[*out_len] = '\0';
	free(tmp);
	return out;
bad:
	free(tmp);
	free(out);
	return NULL;
}

/* ---- service account */

static int sa_string(json_t *root, const char *name, bool required, char **out, const char *path, const char *setting,
                     bw_error *err)
{
	json_t *v = json_object_get(root, name);
	if (!v) {
		if (required)
			return bw_error_set(err, BW_E_CONFIG, "%s %s: the service-account file has no \"%s\"", setting,
			                    path, name);
		return BW_OK;
	}
	if (!json_is_string(v) || json_string_length(v) == 0)
		return bw_error_set(err, BW_E_CONFIG, "%s %s: \"%s\" must be a non-empty string", setting, path, name);
	if (!(*out = strdup(json_string_value(v))))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	return BW_OK;
}

int fcm_sa_parse(const char *text, size_t len, const char *path, const char *setting, struct fcm_sa *out, bw_error *err)
{
	memset(out, 0, sizeof *out);
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return bw_error_set(err, BW_E_CONFIG, "%s %s: not valid JSON (line %d: %s)", setting, path, jerr.line,
		                    jerr.text);
	int rc = BW_OK;
	if (!json_is_object(root)) {
		rc = bw_error_set(err, BW_E_CONFIG, "%s %s: not a JSON object", setting, path);
		goto out;
	}
	json_t *type = json_object_get(root, "type");
	if (type && (!json_is_string(type) || strcmp(json_string_value(type), "service_account") != 0)) {
		rc = bw_error_set(err, BW_E_CONFIG, "%s %s: \"type\" is not \"service_account\"", setting, path);
		goto out;
	}
	char *pem = NULL;
	if ((rc = sa_string(root, "client_email", true, &out->client_email, path, setting, err)) != BW_OK ||
	    (rc = sa_string(root, "private_key", true, &pem, path, setting, err)) != BW_OK ||
	    (rc = sa_string(root, "token_uri", false, &out->token_uri, path, setting, err)) != BW_OK ||
	    (rc = sa_string(root, "project_id", false, &out->project_id, path, setting, err)) != BW_OK ||
	    (rc = sa_string(root, "private_key_id", false, &out->private_key_id, path, setting, err)) != BW_OK) {
		free(pem);
		goto out;
	}
	if (!out->token_uri && !(out->token_uri = strdup(FCM_DEFAULT_TOKEN_URI))) {
		free(pem);
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto out;
	}
	BIO *bio = BIO_new_mem_buf(pem, -1);
	out->key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
	BIO_free(bio);
	OPENSSL_cleanse(pem, strlen(pem));
	free(pem);
	ERR_clear_error();
	if (!out->key) {
		rc = bw_error_set(err, BW_E_CONFIG, "%s %s: \"private_key\" is not a PEM private key", setting, path);
		goto out;
	}
	if (EVP_PKEY_get_base_id(out->key) != EVP_PKEY_RSA || EVP_PKEY_get_bits(out->key) < 2048) {
		rc = bw_error_set(err, BW_E_CONFIG, "%s %s: \"private_key\" must be an RSA key of at least 2048 bits",
		                  setting, path);
		goto out;
	}
out:
	json_decref(root);
	if (rc != BW_OK)
		fcm_sa_free(out);
	return rc;
}

int fcm_sa_load(const char *path, const char *setting, struct fcm_sa *out, bw_error *err)
{
	memset(out, 0, sizeof *out);
	if (!path || !*path)
		return bw_error_set(err, BW_E_CONFIG, "%s: not set (the Firebase service-account JSON file)", setting);
	FILE *f = fopen(path, "rb");
	if (!f)
		return bw_error_set(err, BW_E_CONFIG, "%s %s: cannot open: %s", setting, path, strerror(errno));
	struct stat st;
	if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
		fclose(f);
		return bw_error_set(err, BW_E_CONFIG, "%s %s: not a regular file", setting, path);
	}
	char *buf = malloc(FCM_SA_MAX_BYTES + 1);
	if (!buf) {
		fclose(f);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	size_t n = fread(buf, 1, FCM_SA_MAX_BYTES + 1, f);
	int bad = ferror(f);
	fclose(f);
	int rc;
	if (bad)
		rc = bw_error_set(err, BW_E_CONFIG, "%s %s: cannot read the file", setting, path);
	else if (n > FCM_SA_MAX_BYTES)
		rc = bw_error_set(err, BW_E_CONFIG, "%s %s: larger than %d bytes", setting, path, FCM_SA_MAX_BYTES);
	else if (n == 0)
		rc = bw_error_set(err, BW_E_CONFIG, "%s %s: the file is empty", setting, path);
	else
		rc = fcm_sa_parse(buf, n, path, setting, out, err);
	OPENSSL_cleanse(buf, n < FCM_SA_MAX_BYTES ? n : FCM_SA_MAX_BYTES);
	free(buf);
	return rc;
}

void fcm_sa_free(struct fcm_sa *sa)
{
	free(sa->client_email);
	free(sa->token_uri);
	free(sa->project_id);
	free(sa->private_key_id);
	EVP_PKEY_free(sa->key);
	memset(sa, 0, sizeof *sa);
}

/* ---- JWT */

static char *b64url_json(json_t *v)
{
	char *text = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text)
		return NULL;
	char *out = fcm_b64url((const unsigned char *)text, strlen(text));
	free(text);
	return out;
}

char *fcm_jwt_build(const struct fcm_sa *sa, const char *aud, int64_t now_s, bw_error *err)
{
	json_t *hdr = json_pack("{s:s, s:s}", "alg", "RS256", "typ", "JWT");
	json_t *claims = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", sa->client_email, "scope", FCM_SCOPE, "aud", aud,
	                           "iat", (json_int_t)now_s, "exp", (json_int_t)(now_s + FCM_JWT_LIFETIME_S));
	if (hdr && sa->private_key_id)
		json_object_set_new(hdr, "kid", json_string(sa->private_key_id));
	char *h = hdr ? b64url_json(hdr) : NULL;
	char *c = claims ? b64url_json(claims) : NULL;
	json_decref(hdr);
	json_decref(claims);
	char *jwt = NULL, *sig64 = NULL;
	unsigned char *sig = NULL;
	EVP_MD_CTX *md = NULL;
	if (!h || !c) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto out;
	}
	size_t signing_len = strlen(h) + 1 + strlen(c);
	jwt = malloc(signing_len + 1 + 4 * ((size_t)EVP_PKEY_get_size(sa->key) + 2) / 3 + 2);
	if (!jwt) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto out;
	}
	snprintf(jwt, signing_len + 1, "%s.%s", h, c);
	size_t siglen = 0;
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, sa->key) != 1 ||
	    EVP_DigestSign(md, NULL, &siglen, (const unsigned char *)jwt, signing_len) != 1 ||
	    !(sig = malloc(siglen)) || EVP_DigestSign(md, sig, &siglen, (const unsigned char *)jwt, signing_len) != 1 ||
	    !(sig64 = fcm_b64url(sig, siglen))) {
		ERR_clear_error();
		bw_error_set(err, BW_E_INTERNAL, "cannot sign the OAuth assertion with the service-account key");
		free(jwt);
		jwt = NULL;
		goto out;
	}
	jwt[signing_len] = '.';
	strcpy(jwt + signing_len + 1, sig64);
out:
	/* Leave no stale entries on this thread's OpenSSL error queue: libcurl reports the queue's first error for
	 * a later TLS failure on the same (loop) thread. */
	ERR_clear_error();
	EVP_MD_CTX_free(md);
	free(sig);
	free(sig64);
	free(h);
	free(c);
	return jwt;
}

int fcm_jwt_verify(const char *jwt, EVP_PKEY *key, json_t **claims, bw_error *err)
{
	*claims = NULL;
	const char *d1 = strchr(jwt, '.');
	const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	if (!d1 || !d2 || strchr(d2 + 1, '.'))
		return bw_error_set(err, BW_E_INVALID, "a JWT has three dot-separated parts");
	size_t hl, cl, sl;
	unsigned char *h = fcm_b64url_decode(jwt, (size_t)(d1 - jwt), &hl);
	unsigned char *c = fcm_b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &cl);
	unsigned char *s = fcm_b64url_decode(d2 + 1, strlen(d2 + 1), &sl);
	json_t *hdr = h ? json_loadb((const char *)h, hl, 0, NULL) : NULL;
	json_t *cj = c ? json_loadb((const char *)c, cl, 0, NULL) : NULL;
	int rc = BW_OK;
	EVP_MD_CTX *md = NULL;
	if (!hdr || !cj || !s || !json_is_object(cj)) {
		rc = bw_error_set(err, BW_E_INVALID, "the JWT is not base64url JSON");
		goto out;
	}
	const char *alg = json_string_value(json_object_get(hdr, "alg"));
	if (!alg || strcmp(alg, "RS256") != 0) {
		rc = bw_error_set(err, BW_E_INVALID, "the JWT is not RS256");
		goto out;
	}
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestVerify(md, s, sl, (const unsigned char *)jwt, (size_t)(d2 - jwt)) != 1) {
		ERR_clear_error();
		rc = bw_error_set(err, BW_E_DENIED, "the JWT signature does not verify");
		goto out;
	}
	*claims = json_incref(cj);
out:
	EVP_MD_CTX_free(md);
	json_decref(hdr);
	json_decref(cj);
	free(h);
	free(c);
	free(s);
	return rc;
}

char *fcm_token_request_body(const char *jwt)
{
	/* The assertion is base64url and dots: nothing to percent-encode. */
	static const char prefix[] = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
	size_t n = sizeof prefix + strlen(jwt);
	char *body = malloc(n);
	if (body)
		snprintf(body, n, "%s%s", prefix, jwt);
	return body;
}

/* ---- token cache */

int64_t fcm_token_refresh_at(int64_t obtained_ms, int64_t expires_in_s, int64_t margin_ms)
{
	if (expires_in_s <= 0)
		return obtained_ms;
	int64_t life = expires_in_s * 1000;
	int64_t m = margin_ms < life / 2 ? margin_ms : life / 2;
	if (m < 0)
		m = 0;
	return obtained_ms + life - m;
}

int fcm_token_parse(const char *body, size_t len, char **access_token, int64_t *expires_in_s, bw_error *err)
{
	*access_token = NULL;
	*expires_in_s = 0;
	json_t *root = json_loadb(body, len, 0, NULL);
	int rc = BW_OK;
	json_t *at = json_object_get(root, "access_token");
	json_t *ei = json_object_get(root, "expires_in");
	json_t *tt = json_object_get(root, "token_type");
	if (!json_is_object(root) || !json_is_string(at) || json_string_length(at) == 0 ||
	    json_string_length(at) > 8192) {
		rc = bw_error_set(err, BW_E_REMOTE, "the token endpoint's answer has no access_token");
		goto out;
	}
	if (tt && (!json_is_string(tt) || strcasecmp(json_string_value(tt), "Bearer") != 0)) {
		rc = bw_error_set(err, BW_E_REMOTE, "the token endpoint's token_type is not Bearer");
		goto out;
	}
	for (const char *p = json_string_value(at); *p; p++)
		if (*p <= 0x20 || *p >= 0x7f) {
			rc = bw_error_set(err, BW_E_REMOTE, "the token endpoint's access_token has bad characters");
			goto out;
		}
	/* expires_in is optional in RFC 6749; Google always sends it. Assume an hour when it is absent. */
	int64_t e = 3600;
	if (json_is_integer(ei))
		e = json_integer_value(ei);
	else if (ei) {
		rc = bw_error_set(err, BW_E_REMOTE, "the token endpoint's expires_in is not an integer");
		goto out;
	}
	if (e <= 0 || e > 86400 * 7) {
		rc = bw_error_set(err, BW_E_REMOTE, "the token endpoint's expires_in (%lld) is out of range",
		                  (long long)e);
		goto out;
	}
	if (!(*access_token = strdup(json_string_value(at)))) {
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto out;
	}
	*expires_in_s = e;
out:
	json_decref(root);
	return rc;
}

/* Copies printable ASCII only: remote text goes into logs and API answers. */
static void copy_printable(char *out, size_t outsz, const char *in, size_t max)
{
	size_t w = 0;
	for (size_t i = 0; i < max && in[i] && w + 1 < outsz; i++)
		out[w++] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
	out[w] = '\0';
}

void fcm_token_error(long status, const char *body, size_t len, char *out, size_t outsz)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	const char *e = json_string_value(json_object_get(root, "error"));
	const char *d = json_string_value(json_object_get(root, "error_description"));
	char es[64], ds[160];
	if (e) {
		copy_printable(es, sizeof es, e, 63);
		if (d) {
			copy_printable(ds, sizeof ds, d, 159);
			snprintf(out, outsz, "HTTP %ld %s (%s)", status, es, ds);
		} else {
			snprintf(out, outsz, "HTTP %ld %s", status, es);
		}
	} else {
		snprintf(out, outsz, "HTTP %ld", status);
	}
	json_decref(root);
}

/* ---- messages */

bool fcm_token_valid(const char *token)
{
	if (!token)
		return false;
	size_t n = 0;
	for (const char *p = token; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '-' || c == ':' || c == '.'))
			return false;
		if (n >= FCM_TOKEN_MAX_LEN)
			return false;
	}
	return n > 0;
}

char *fcm_message_json(const struct bw_push_message *msg, uint32_t default_ttl_s)
{
	json_t *data = json_object();
	json_object_set_new(data, "reason", json_string(msg->reason && *msg->reason ? msg->reason : "command"));
	if (msg->command_id && *msg->command_id)
		json_object_set_new(data, "command_id", json_string(msg->command_id));
	if (msg->device_id && *msg->device_id)
		json_object_set_new(data, "device_id", json_string(msg->device_id));
	char ttl[32];
	snprintf(ttl, sizeof ttl, "%us", msg->ttl_s ? msg->ttl_s : default_ttl_s);
	json_t *root = json_pack("{s:{s:s, s:o, s:{s:s, s:s}}}", "message", "token", msg->token, "data", data,
	                         "android", "priority", msg->high_priority ? "HIGH" : "NORMAL", "ttl", ttl);
	if (!root)
		return NULL;
	char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(root);
	return text;
}

bool fcm_message_name(const char *body, size_t len, char *out, size_t outsz)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	const char *name = json_string_value(json_object_get(root, "name"));
	bool ok = name && *name;
	if (ok)
		copy_printable(out, outsz, name, 200);
	json_decref(root);
	return ok;
}

static enum fcm_action classify_code(const char *code, long status)
{
	if (strcmp(code, "UNREGISTERED") == 0)
		return FCM_ACT_TOKEN_INVALID;
	if (strcmp(code, "QUOTA_EXCEEDED") == 0 || strcmp(code, "UNAVAILABLE") == 0 || strcmp(code, "INTERNAL") == 0)
		return FCM_ACT_RETRY;
	if (strcmp(code, "UNAUTHENTICATED") == 0 || (status == 401 && strcmp(code, "THIRD_PARTY_AUTH_ERROR") != 0))
		return FCM_ACT_REAUTH;
	/* INVALID_ARGUMENT, SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR, UNSPECIFIED_ERROR, PERMISSION_DENIED, ... */
	return FCM_ACT_FAIL;
}

enum fcm_action fcm_classify(long status, const char *body, size_t len, char *reason, size_t reason_size)
{
	if (status >= 200 && status <= 299) {
		if (reason_size)
			reason[0] = '\0';
		return FCM_ACT_SENT;
	}
	json_t *root = body && len ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *error = json_object_get(root, "error");
	const char *code = NULL;
	json_t *details = json_object_get(error, "details");
	size_t i;
	json_t *d;
	json_array_foreach(details, i, d)
	{
		const char *type = json_string_value(json_object_get(d, "@type"));
		const char *ec = json_string_value(json_object_get(d, "errorCode"));
		if (ec && type && strcmp(type, "type.googleapis.com/google.firebase.fcm.v1.FcmError") == 0) {
			code = ec;
			break;
		}
	}
	/* Without an FcmError detail, the canonical status ("UNAVAILABLE", "UNAUTHENTICATED") says the same. */
	if (!code)
		code = json_string_value(json_object_get(error, "status"));
	enum fcm_action act;
	if (code && *code) {
		copy_printable(reason, reason_size, code, 64);
		act = classify_code(reason, status);
	} else {
		snprintf(reason, reason_size, "HTTP %ld", status);
		if (status == 401)
			act = FCM_ACT_REAUTH;
		else if (status == 429 || status == 500 || status == 502 || status == 503 || status == 504)
			act = FCM_ACT_RETRY;
		else
			act = FCM_ACT_FAIL;
	}
	json_decref(root);
	return act;
}

/* ---- retries */

uint64_t fcm_backoff_ms(unsigned retry, uint64_t base_ms, uint64_t cap_ms, uint32_t rnd)
{
	uint64_t d = base_ms ? base_ms : 1;
	for (unsigned i = 0; i < retry && d < cap_ms; i++)
		d *= 2;
	if (d > cap_ms)
		d = cap_ms;
	return (uint64_t)rnd % (d + 1);
}

int64_t fcm_retry_after_ms(const char *value, int64_t now_s, uint64_t cap_ms)
{
	if (!value)
		return -1;
	while (*value == ' ' || *value == '\t')
		value++;
	if (!*value)
		return -1;
	int64_t ms;
	if (*value >= '0' && *value <= '9') {
		char *end = NULL;
		errno = 0;
		unsigned long long s = strtoull(value, &end, 10);
		while (end && (*end == ' ' || *end == '\t'))
			end++;
		if (errno || !end || *end)
			return -1;
		if (s > cap_ms / 1000)
			return (int64_t)cap_ms;
		ms = (int64_t)s * 1000;
	} else {
		struct tm tm;
		memset(&tm, 0, sizeof tm);
		const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
		if (!end || *end)
			return -1;
		int64_t when = (int64_t)timegm(&tm);
		ms = when <= now_s ? 0 : (when - now_s) * 1000;
	}
	return ms > (int64_t)cap_ms ? (int64_t)cap_ms : ms;
}
