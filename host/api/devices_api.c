/* host/api/devices_api.c: device administration on the admin listener: enrollment keys,
 * invitations (with the mail they produce in the outbox), the device allowlist, enrollment
 * refusals, the device registry, commands and device event logs. Reads need the readonly
 * role, changes the administrator role; every change is audited. */
#include "devices_api.h"

#include "crypto.h"
#include "devices.h"
#include "log.h"
#include "policies.h"
#include "registry.h"
#include "router.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEY_ALPHABET       "ABCDEFGHIJKLMNOPQRSTUVWXYZ23456789"
#define KEY_ALPHABET_LEN   34
#define KEY_TEXT_LEN       14 /* XXXX-XXXX-XXXX */
#define MAX_KEY_USES       1000000000LL
#define MAX_KEY_TTL_S      315360000LL /* ten years */
#define MIN_TTL_S          60LL
#define INVITE_DEFAULT_TTL (7LL * 86400)
#define INVITE_MAX_TTL_S   (90LL * 86400) /* an 8-digit code should not live long */
#define MAX_COMMAND_TTL_S  (365LL * 86400)
#define MAX_PARAMS_BYTES   16384
#define MAX_TIME_S         253402300799LL /* 9999-12-31T23:59:59Z */
#define DEFAULT_LIST_LIMIT 100
#define MAX_LIST_LIMIT     1000
#define MAX_GROUP_LEN      128
#define MAX_NOTE_LEN       256
#define MAX_EMAIL_LEN      254
#define MAX_EVENT_TYPE_LEN 64

static void bad_request(struct bw_http_req *req, const char *message)
{
	bw_req_reply_error(req, 400, "bad_request", message);
}

/* Never show a stored secret digest, whatever the store hands back. "No group" and "unlimited"
 * are stored as "" and 0; the API shows null, as in the answer that created the key. */
static void strip_hashes(json_t *list)
{
	size_t i;
	json_t *item;
	json_array_foreach(list, i, item)
	{
		json_object_del(item, "key_hash");
		json_object_del(item, "code_hash");
		json_object_del(item, "hash");
		json_t *g = json_object_get(item, "group"), *m = json_object_get(item, "max_uses");
		if (json_is_string(g) && json_string_length(g) == 0)
			json_object_set_new(item, "group", json_null());
		if (json_is_integer(m) && json_integer_value(m) == 0)
			json_object_set_new(item, "max_uses", json_null());
	}
}

/* ---- JSON input */

static bool has_control(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

/* A string field of 1..maxlen bytes without control characters; NULL when absent (or null
 * when optional). Replies 400 and sets *failed otherwise. */
static const char *str_field(json_t *o, const char *key, size_t maxlen, bool required, struct bw_http_req *req,
                             bool *failed)
{
	json_t *v = json_object_get(o, key);
	char msg[200];
	if (!v || (!required && json_is_null(v))) {
		if (required) {
			snprintf(msg, sizeof msg, "field '%s' is required", key);
			bad_request(req, msg);
			*failed = true;
		}
		return NULL;
	}
	if (!json_is_string(v)) {
		snprintf(msg, sizeof msg, "field '%s' must be a string", key);
		bad_request(req, msg);
		*failed = true;
		return NULL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (n == 0 || n > maxlen || strlen(s) != n) {
		snprintf(msg, sizeof msg, "field '%s' must be 1 to %zu characters", key, maxlen);
		bad_request(req, msg);
		*failed = true;
		return NULL;
	}
	if (has_control(s)) {
		snprintf(msg, sizeof msg, "field '%s' must not contain control characters", key);
		bad_request(req, msg);
		*failed = true;
		return NULL;
	}
	return s;
}

/* An optional integer field in [min, max]; absent or null leaves *out unchanged. */
static void int_field(json_t *o, const char *key, int64_t min, int64_t max, const char *unit, int64_t *out,
                      struct bw_http_req *req, bool *failed)
{
	json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v))
		return;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
		char msg[200];
		snprintf(msg, sizeof msg, "field '%s' must be an integer%s from %lld to %lld", key, unit,
		         (long long)min, (long long)max);
		bad_request(req, msg);
		*failed = true;
		return;
	}
	*out = json_integer_value(v);
}

static json_t *body_or_reply(struct bw_http_req *req, bool empty_ok)
{
	size_t len;
	bw_req_body(req, &len);
	if (len == 0 && empty_ok)
		return json_object();
	json_t *body;
	bw_error err = {0};
	if (bw_req_json(req, &body, &err) != BW_OK) {
		bw_req_reply_error(req, 400, "invalid_json", err.message);
		return NULL;
	}
	return body;
}

/* ---- query parameters */

static bool query_limit(struct bw_http_req *req, size_t *limit)
{
	const char *l = bw_req_query(req, "limit");
	char *end = NULL;
	*limit = DEFAULT_LIST_LIMIT;
	if (!l)
		return true;
	errno = 0;
	long v = strtol(l, &end, 10);
	if (errno || end == l || *end || l[0] < '0' || l[0] > '9' || v < 1 || v > MAX_LIST_LIMIT) {
		bad_request(req, "limit must be an integer from 1 to 1000");
		return false;
	}
	*limit = (size_t)v;
	return true;
}

static bool uuid_param(struct bw_http_req *req, const char *value, const char *what)
{
	if (bw_uuid_valid(value))
		return true;
	char msg[128];
	snprintf(msg, sizeof msg, "%s must be a UUID", what);
	bad_request(req, msg);
	return false;
}

/* Unix seconds, or RFC 3339 ("2025-06-01T12:00:00Z", fractions and offsets allowed). */
static int two(const char *p)
{
	return p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' ? (p[0] - '0') * 10 + (p[1] - '0') : -1;
}

static bool parse_time(const char *s, int64_t *out)
{
	if (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s)) {
		if (strlen(s) > 12)
			return false;
		long long v = strtoll(s, NULL, 10);
		if (v > MAX_TIME_S)
			return false;
		*out = v;
		return true;
	}
	if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
	    s[16] != ':')
		return false;
	int y1 = two(s), y2 = two(s + 2), mon = two(s + 5), day = two(s + 8), hh = two(s + 11), mm = two(s + 14),
	    ss = two(s + 17);
	if (y1 < 0 || y2 < 0 || mon < 1 || mon > 12 || day < 1 || day > 31 || hh < 0 || hh > 23 || mm < 0 || mm > 59 ||
	    ss < 0 || ss > 60)
		return false;
	const char *p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	int offset = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if ((*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':') {
		int oh = two(p + 1), om = two(p + 4);
		if (oh < 0 || oh > 23 || om < 0 || om > 59)
			return false;
		offset = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return false;
	}
	if (*p)
		return false;
	struct tm tm = {0};
	tm.tm_year = y1 * 100 + y2 - 1900;
	tm.tm_mon = mon - 1;
	tm.tm_mday = day;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	time_t t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != day) /* timegm normalises 31 April to 1 May */
		return false;
	int64_t v = (int64_t)t - offset;
	if (v < 0 || v > MAX_TIME_S)
		return false;
	*out = v;
	return true;
}

/* ---- random secrets */

/* 12 characters of [A-Z2-9] in groups of four; uniform (rejection sampling). */
static int key_generate(char out[KEY_TEXT_LEN + 1], bw_error *err)
{
	unsigned char buf[32];
	size_t used = sizeof buf, n = 0;
	while (n < 12) {
		if (used == sizeof buf) {
			if (RAND_bytes(buf, sizeof buf) != 1)
				return bw_error_set(err, BW_E_RANDOM, "the system could not supply random bytes");
			used = 0;
		}
		unsigned char b = buf[used++];
		if (b >= 256 / KEY_ALPHABET_LEN * KEY_ALPHABET_LEN)
			continue;
		out[n + n / 4] = KEY_ALPHABET[b % KEY_ALPHABET_LEN];
		n++;
	}
	out[4] = out[9] = '-';
	out[KEY_TEXT_LEN] = '\0';
	OPENSSL_cleanse(buf, sizeof buf);
	return BW_OK;
}

/* Eight decimal digits, uniform. */
static int code_generate(char out[9], bw_error *err)
{
	for (;;) {
		unsigned char b[4];
		if (RAND_bytes(b, sizeof b) != 1)
			return bw_error_set(err, BW_E_RANDOM, "the system could not supply random bytes");
		uint32_t v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
		OPENSSL_cleanse(b, sizeof b);
		if (v >= 4000000000u) /* 40 * 10^8: keeps the digits uniform */
			continue;
		snprintf(out, 9, "%08u", (unsigned)(v % 100000000u));
		return BW_OK;
	}
}

/* ---- enrollment keys */

static void post_key(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *body = body_or_reply(req, true);
	if (!body)
		return;
	bool failed = false;
	int64_t max_uses = 0, expires_in = 0;
	const char *group = str_field(body, "group", MAX_GROUP_LEN, false, req, &failed);
	if (!failed)
		int_field(body, "max_uses", 1, MAX_KEY_USES, "", &max_uses, req, &failed);
	if (!failed)
		int_field(body, "expires_in", MIN_TTL_S, MAX_KEY_TTL_S, " number of seconds", &expires_in, req,
		          &failed);
	if (failed) {
		json_decref(body);
		return;
	}
	char group_buf[MAX_GROUP_LEN + 1] = "";
	if (group)
		snprintf(group_buf, sizeof group_buf, "%s", group);
	json_decref(body);

	char key[KEY_TEXT_LEN + 1], hash[65], id[37], prefix[5];
	bw_error err = {0};
	/* A key's group exists before any device joins it (created under default when new). */
	bw_policies *pol = bw_policies_of(req->host);
	if (pol && bw_group_ensure(pol, group_buf, "named by an enrollment key", &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	if (key_generate(key, &err) != BW_OK || bw_uuid_new(id, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_token_hash(key, hash);
	memcpy(prefix, key, 4);
	prefix[4] = '\0';
	int64_t now = (int64_t)time(NULL);
	int64_t expires_at = expires_in ? now + expires_in : 0;
	if (bw_store_key_create(req->host->store, id, hash, prefix, group_buf, max_uses, expires_at, req->principal,
	                        now, &err) != BW_OK) {
		OPENSSL_cleanse(key, sizeof key);
		bw_req_audit(req, req->principal, "enrollment_key.create", id, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	char detail[200];
	snprintf(detail, sizeof detail, "prefix %s%s%s", prefix, group_buf[0] ? " group " : "", group_buf);
	bw_req_audit(req, req->principal, "enrollment_key.create", id, "success", detail);
	bw_req_reply_json(req, 201,
	                  json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "id", id, "key", key, "prefix", prefix, "group",
	                            group_buf[0] ? json_string(group_buf) : json_null(), "max_uses",
	                            max_uses ? json_integer(max_uses) : json_null(), "expires_at",
	                            bw_json_time(expires_at)));
	OPENSSL_cleanse(key, sizeof key);
}

static void get_keys(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *list;
	bw_error err = {0};
	if (bw_store_key_list(req->host->store, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	strip_hashes(list);
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "keys", list));
}

static void delete_key(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *id = req->params[0];
	if (!uuid_param(req, id, "enrollment key id"))
		return;
	bw_error err = {0};
	if (bw_store_key_revoke(req->host->store, id, &err) != BW_OK) {
		if (err.code != BW_E_NOTFOUND)
			bw_req_audit(req, req->principal, "enrollment_key.revoke", id, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "enrollment_key.revoke", id, "success", NULL);
	bw_req_reply_json(req, 204, NULL);
}

/* ---- invitations and the outbox */

/* Deliberately simple: a mail server decides what it accepts; this refuses what is surely
 * not an address and anything that could break a mail header. */
static const char *email_problem(const char *e)
{
	size_t len = strlen(e);
	const char *at = strchr(e, '@');
	if (len > MAX_EMAIL_LEN)
		return "field 'email' must be at most 254 characters";
	for (const unsigned char *p = (const unsigned char *)e; *p; p++)
		if (*p <= 0x20 || *p == 0x7f)
			return "field 'email' must not contain spaces or control characters";
	if (!at || strchr(at + 1, '@'))
		return "field 'email' must contain exactly one '@'";
	if (at == e)
		return "field 'email' needs a local part before the '@'";
	if (!at[1])
		return "field 'email' needs a domain after the '@'";
	if (at[1] == '.' || e[len - 1] == '.' || strstr(at, ".."))
		return "field 'email' has a malformed domain";
	return NULL;
}

/* Where devices reach the server: the first agent listener; a wildcard address is replaced by
 * the first extra TLS name, else the host name. */
static void agent_url(const struct bw_host *h, char *buf, size_t size)
{
	const char *addr = h->settings.listen.agent.count ? h->settings.listen.agent.items[0] : "0.0.0.0:8443";
	const char *colon = strrchr(addr, ':');
	const char *port = colon ? colon + 1 : "8443";
	size_t hostlen = colon ? (size_t)(colon - addr) : strlen(addr);
	char host[256];
	snprintf(host, sizeof host, "%.*s", (int)hostlen, addr);
	if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0 || strcmp(host, "*") == 0 || !host[0]) {
		if (h->settings.tls.names.count)
			snprintf(host, sizeof host, "%s", h->settings.tls.names.items[0]);
		else if (gethostname(host, sizeof host) != 0 || !host[0])
			snprintf(host, sizeof host, "localhost");
		host[sizeof host - 1] = '\0';
		if (strchr(host, ':') && host[0] != '[') { /* a bare IPv6 address in tls.names */
			char tmp[256];
			snprintf(tmp, sizeof tmp, "[%.*s]", (int)sizeof tmp - 3, host);
			snprintf(host, sizeof host, "%s", tmp);
		}
	}
	snprintf(buf, size, "https://%s:%s", host, port);
}

static void post_invitation(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *body = body_or_reply(req, false);
	if (!body)
		return;
	bool failed = false;
	int64_t expires_in = INVITE_DEFAULT_TTL;
	const char *email = str_field(body, "email", 1024, true, req, &failed);
	if (!failed)
		int_field(body, "expires_in", MIN_TTL_S, INVITE_MAX_TTL_S, " number of seconds", &expires_in, req,
		          &failed);
	if (failed) {
		json_decref(body);
		return;
	}
	const char *problem = email_problem(email);
	if (problem) {
		json_decref(body);
		bad_request(req, problem);
		return;
	}
	char addr[MAX_EMAIL_LEN + 1];
	snprintf(addr, sizeof addr, "%s", email);
	json_decref(body);

	char id[37], msg_id[37], code[9], hash[65], url[300], when[32];
	bw_error err = {0};
	if (code_generate(code, &err) != BW_OK || bw_uuid_new(id, &err) != BW_OK ||
	    bw_uuid_new(msg_id, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_token_hash(code, hash);
	int64_t now = (int64_t)time(NULL), expires_at = now + expires_in;
	if (bw_store_invitation_create(req->host->store, id, addr, hash, expires_at, req->principal, now, &err) !=
	    BW_OK) {
		OPENSSL_cleanse(code, sizeof code);
		bw_req_audit(req, req->principal, "invitation.create", id, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	agent_url(req->host, url, sizeof url);
	json_t *exp_text = bw_json_time(expires_at);
	snprintf(when, sizeof when, "%s", json_string_value(exp_text));
	json_decref(exp_text);
	char *text = NULL;
	int n = asprintf(&text,
	                 "Hello,\n\n"
	                 "you are invited to enroll your mobile device with Bulwark, your organisation's mobile\n"
	                 "security service.\n\n"
	                 "1. Install the Bulwark agent on the device.\n"
	                 "2. Choose \"Enroll with an invitation\" and enter:\n\n"
	                 "   Server:          %s\n"
	                 "   E-mail address:  %s\n"
	                 "   Invitation code: %s\n\n"
	                 "The code can be used once and expires at %s (UTC).\n"
	                 "If you did not expect this message, ignore it.\n",
	                 url, addr, code, when);
	OPENSSL_cleanse(code, sizeof code);
	if (n < 0) {
		bw_req_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	int rc =
	    bw_store_outbox_add(req->host->store, msg_id, addr, "Enroll your device with Bulwark", text, now, &err);
	OPENSSL_cleanse(text, (size_t)n);
	free(text);
	if (rc != BW_OK) {
		bw_req_audit(req, req->principal, "invitation.create", id, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "invitation.create", id, "success", addr);
	bw_req_reply_json(
	    req, 201, json_pack("{s:s, s:s, s:o}", "id", id, "email", addr, "expires_at", bw_json_time(expires_at)));
}

static void get_invitations(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *list;
	bw_error err = {0};
	if (bw_store_invitation_list(req->host->store, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	strip_hashes(list);
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "invitations", list));
}

static void get_outbox(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *list;
	bw_error err = {0};
	if (bw_store_outbox_list(req->host->store, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "messages", list));
}

/* ---- allowlist */

static const char *kind_label(const char *kind)
{
	return strcmp(kind, "imei") == 0 ? "IMEI" : strcmp(kind, "meid") == 0 ? "MEID" : "Wi-Fi MAC";
}

/* Normalises `value` for `kind`; on failure writes why into msg. */
static bool allowlist_value(const char *kind, const char *value, char out[18], char *msg, size_t size)
{
	size_t digits = 0;
	if (strcmp(kind, "imei") == 0) {
		if (bw_normalize_imei(value, out))
			return true;
		for (const char *p = value; *p; p++) {
			if (*p == ' ' || *p == '-' || *p == '/')
				continue;
			if (*p < '0' || *p > '9') {
				snprintf(msg, size, "IMEI may contain only digits (spaces, '-' and '/' are ignored)");
				return false;
			}
			digits++;
		}
		if (digits != 15)
			snprintf(msg, size, "IMEI must have 15 digits, not %zu", digits);
		else
			snprintf(msg, size, "IMEI check digit is wrong");
		return false;
	}
	if (strcmp(kind, "meid") == 0) {
		if (bw_normalize_meid(value, out))
			return true;
		for (const char *p = value; *p; p++) {
			if (*p == ' ' || *p == '-')
				continue;
			if (!strchr("0123456789abcdefABCDEF", *p)) {
				snprintf(msg, size,
				         "MEID may contain only hexadecimal digits (spaces and '-' are ignored)");
				return false;
			}
			digits++;
		}
		snprintf(msg, size, "MEID must have 14 hexadecimal digits, not %zu", digits);
		return false;
	}
	if (bw_normalize_mac(value, out))
		return true;
	snprintf(
	    msg, size,
	    "Wi-Fi MAC must be 12 hexadecimal digits written as aa:bb:cc:dd:ee:ff, aa-bb-cc-dd-ee-ff or aabbccddeeff");
	return false;
}

static bool kind_valid(const char *kind)
{
	return strcmp(kind, "imei") == 0 || strcmp(kind, "meid") == 0 || strcmp(kind, "wifi_mac") == 0;
}

static void get_allowlist(struct bw_http_req *req, void *arg)
{
	(void)arg;
	char *value = NULL;
	bw_error err = {0};
	bool enabled = false;
	if (bw_store_setting_get(req->host->store, "allowlist_enabled", &value, &err) == BW_OK) {
		enabled = strcmp(value, "1") == 0;
		free(value);
	} else if (err.code != BW_E_NOTFOUND) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	json_t *list;
	if (bw_store_allowlist_list(req->host->store, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:b, s:o}", "enabled", enabled, "entries", list));
}

static void post_allowlist(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *body = body_or_reply(req, false);
	if (!body)
		return;
	bool failed = false;
	const char *kind = str_field(body, "kind", 16, true, req, &failed);
	const char *value = failed ? NULL : str_field(body, "value", 64, true, req, &failed);
	const char *note = failed ? NULL : str_field(body, "note", MAX_NOTE_LEN, false, req, &failed);
	if (failed) {
		json_decref(body);
		return;
	}
	char norm[18], msg[200], k[16], note_buf[MAX_NOTE_LEN + 1];
	if (!kind_valid(kind)) {
		json_decref(body);
		bad_request(req, "field 'kind' must be \"imei\", \"meid\" or \"wifi_mac\"");
		return;
	}
	if (!allowlist_value(kind, value, norm, msg, sizeof msg)) {
		json_decref(body);
		bad_request(req, msg);
		return;
	}
	snprintf(k, sizeof k, "%s", kind);
	snprintf(note_buf, sizeof note_buf, "%s", note ? note : "");
	json_decref(body);
	int64_t now = (int64_t)time(NULL);
	bw_error err = {0};
	char target[40];
	snprintf(target, sizeof target, "%s:%s", k, norm);
	if (bw_store_allowlist_add(req->host->store, k, norm, note_buf, now, &err) != BW_OK) {
		if (err.code == BW_E_EXISTS) {
			snprintf(msg, sizeof msg, "%s %s is already on the allowlist", kind_label(k), norm);
			bw_req_reply_error(req, 409, "conflict", msg);
			return;
		}
		bw_req_audit(req, req->principal, "allowlist.add", target, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "allowlist.add", target, "success", note_buf);
	bw_req_reply_json(req, 201,
	                  json_pack("{s:s, s:s, s:s, s:o}", "kind", k, "value", norm, "note", note_buf, "created_at",
	                            bw_json_time(now)));
}

static void delete_allowlist(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *kind = req->params[0], *value = req->params[1];
	char norm[18], msg[200], target[40];
	if (!kind_valid(kind)) {
		bad_request(req, "kind must be \"imei\", \"meid\" or \"wifi_mac\"");
		return;
	}
	if (strlen(value) > 64 || !allowlist_value(kind, value, norm, msg, sizeof msg)) {
		bad_request(req, strlen(value) > 64 ? "value is too long" : msg);
		return;
	}
	bw_error err = {0};
	snprintf(target, sizeof target, "%s:%s", kind, norm);
	if (bw_store_allowlist_remove(req->host->store, kind, norm, &err) != BW_OK) {
		if (err.code == BW_E_NOTFOUND) {
			snprintf(msg, sizeof msg, "%s %s is not on the allowlist", kind_label(kind), norm);
			bw_req_reply_error(req, 404, "not_found", msg);
			return;
		}
		bw_req_audit(req, req->principal, "allowlist.remove", target, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "allowlist.remove", target, "success", NULL);
	bw_req_reply_json(req, 204, NULL);
}

static void put_allowlist_enabled(struct bw_http_req *req, void *arg)
{
	(void)arg;
	json_t *body = body_or_reply(req, false);
	if (!body)
		return;
	json_t *v = json_object_get(body, "enabled");
	if (!json_is_boolean(v)) {
		json_decref(body);
		bad_request(req, v ? "field 'enabled' must be true or false" : "field 'enabled' is required");
		return;
	}
	bool on = json_is_true(v);
	json_decref(body);
	bw_error err = {0};
	const char *action = on ? "allowlist.enable" : "allowlist.disable";
	if (bw_store_setting_set(req->host->store, "allowlist_enabled", on ? "1" : "0", &err) != BW_OK) {
		bw_req_audit(req, req->principal, action, "allowlist", "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, action, "allowlist", "success", NULL);
	bw_req_reply_json(req, 200, json_pack("{s:b}", "enabled", on));
}

static void get_refusals(struct bw_http_req *req, void *arg)
{
	(void)arg;
	size_t limit;
	if (!query_limit(req, &limit))
		return;
	json_t *list;
	bw_error err = {0};
	if (bw_store_refusal_list(req->host->store, limit, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "refusals", list));
}

/* ---- devices */

/* A version for the os filter: digits and dots, optionally a vendor suffix. */
static bool version_text_valid(const char *v)
{
	size_t n = strlen(v);
	if (n == 0 || n > 32 || v[0] < '0' || v[0] > '9')
		return false;
	for (const char *p = v; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '.' ||
		      *p == '-' || *p == '+' || *p == '_'))
			return false;
	return true;
}

/* The registry holds last-seen times fresher than the database (they are written in batches),
 * and "out of sync" is derived from them: an active device not seen within
 * agent.out_of_sync_after is shown as out_of_sync. */
static void apply_seen(struct bw_host *h, json_t *dev, int64_t now)
{
	const char *id = json_string_value(json_object_get(dev, "id"));
	struct bw_reg_device *d = id ? bw_registry_find(h->registry, id) : NULL;
	json_t *ls = json_object_get(dev, "last_seen");
	int64_t seen = json_is_integer(ls) ? json_integer_value(ls) : 0;
	if (d && d->last_seen > seen) {
		seen = d->last_seen;
		json_object_set_new(dev, "last_seen", json_integer(seen));
	}
	const char *status = json_string_value(json_object_get(dev, "status"));
	if (status && strcmp(status, "active") == 0 && seen < now - h->settings.agent.out_of_sync_after_ms / 1000)
		json_object_set_new(dev, "status", json_string("out_of_sync"));
}

static void get_devices(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_device_filter f = {0};
	f.platform = bw_req_query(req, "platform");
	f.status = bw_req_query(req, "status");
	f.group = bw_req_query(req, "group");
	f.after_id = bw_req_query(req, "after");
	const char *os = bw_req_query(req, "os");
	char op[3] = "";
	if (f.platform && strcmp(f.platform, "android") != 0 && strcmp(f.platform, "ios") != 0) {
		bad_request(req, "platform must be \"android\" or \"ios\"");
		return;
	}
	if (f.status && strcmp(f.status, "active") != 0 && strcmp(f.status, "unregistered") != 0 &&
	    strcmp(f.status, "wiped") != 0 && strcmp(f.status, "out_of_sync") != 0) {
		bad_request(req, "status must be \"active\", \"out_of_sync\", \"unregistered\" or \"wiped\"");
		return;
	}
	/* out_of_sync is derived from active devices; filtered after reading a page of them. */
	const char *want = f.status;
	if (want && (strcmp(want, "out_of_sync") == 0 || strcmp(want, "active") == 0))
		f.status = "active";
	if (f.group && (!f.group[0] || strlen(f.group) > MAX_GROUP_LEN || has_control(f.group))) {
		bad_request(req, "group must be 1 to 128 characters without control characters");
		return;
	}
	if (f.after_id && !uuid_param(req, f.after_id, "after (a device id)"))
		return;
	if (os) {
		size_t oplen = (os[0] == '<' || os[0] == '>') ? (os[1] == '=' ? 2 : 1) : os[0] == '=' ? 1 : 0;
		if (oplen == 0 || !version_text_valid(os + oplen)) {
			bad_request(req,
			            "os must be an operator (<, <=, =, >=, >) followed by a version, e.g. os=>=12.1");
			return;
		}
		memcpy(op, os, oplen);
		op[oplen] = '\0';
		f.os_op = op;
		f.os_version = os + oplen;
	}
	if (!query_limit(req, &f.limit))
		return;
	json_t *list;
	bw_error err = {0};
	if (bw_store_device_list(req->host->store, &f, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	json_t *next = json_null();
	if (json_array_size(list) == f.limit) {
		json_t *last = json_object_get(json_array_get(list, f.limit - 1), "id");
		if (json_is_string(last)) {
			json_decref(next);
			next = json_copy(last);
		}
	}
	int64_t now = (int64_t)time(NULL);
	for (size_t i = 0; i < json_array_size(list);) {
		json_t *d = json_array_get(list, i);
		apply_seen(req->host, d, now);
		if (want && strcmp(json_string_value(json_object_get(d, "status")), want) != 0)
			json_array_remove(list, i);
		else
			i++;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o, s:o}", "devices", list, "next_after", next));
}

static void get_device(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *id = req->params[0];
	if (!uuid_param(req, id, "device id"))
		return;
	json_t *dev;
	bw_error err = {0};
	if (bw_store_device_json(req->host->store, id, &dev, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	apply_seen(req->host, dev, (int64_t)time(NULL));
	bw_json_times_to_text(dev);
	bw_req_reply_json(req, 200, dev);
}

static void post_device_command(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *dev = req->params[0];
	if (!uuid_param(req, dev, "device id"))
		return;
	json_t *body = body_or_reply(req, false);
	if (!body)
		return;
	bool failed = false;
	int64_t ttl = 0;
	const char *type = str_field(body, "type", 32, true, req, &failed);
	if (!failed)
		int_field(body, "ttl", MIN_TTL_S, MAX_COMMAND_TTL_S, " number of seconds", &ttl, req, &failed);
	json_t *params = json_object_get(body, "params");
	if (!failed && params && !json_is_null(params) && !json_is_object(params)) {
		bad_request(req, "field 'params' must be an object");
		failed = true;
	}
	if (!failed && json_is_object(params)) {
		char *text = json_dumps(params, JSON_COMPACT);
		size_t len = text ? strlen(text) : 0;
		free(text);
		if (!text || len > MAX_PARAMS_BYTES) {
			bad_request(req, "field 'params' is too large (at most 16384 bytes as JSON)");
			failed = true;
		}
	}
	if (failed) {
		json_decref(body);
		return;
	}
	char cmd_id[37] = "", type_buf[33], detail[200];
	bool merged = false;
	bw_error err = {0};
	snprintf(type_buf, sizeof type_buf, "%s", type);
	int rc = bw_command_queue(req->host, dev, type_buf, json_is_object(params) ? params : NULL, ttl, req->principal,
	                          cmd_id, &merged, &err);
	json_decref(body);
	if (rc != BW_OK) {
		if (err.code != BW_E_INVALID && err.code != BW_E_NOTFOUND) {
			snprintf(detail, sizeof detail, "%s: %.100s", type_buf, err.message);
			bw_req_audit(req, req->principal, "command.queue", dev, "failure", detail);
		}
		if (err.code == BW_E_LIMIT) {
			char msg[200];
			snprintf(msg, sizeof msg,
			         "device %s already has %d open commands; wait for them to finish or cancel some", dev,
			         BW_COMMAND_QUEUE_MAX);
			bw_req_reply_error(req, 409, "queue_full", msg);
			return;
		}
		bw_req_reply_bw_error(req, &err);
		return;
	}
	snprintf(detail, sizeof detail, "%s %s%s", type_buf, cmd_id, merged ? " (merged)" : "");
	bw_req_audit(req, req->principal, "command.queue", dev, "success", detail);
	bw_req_reply_json(req, 201, json_pack("{s:s, s:b}", "id", cmd_id, "merged", merged));
}

static void get_device_commands(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *dev = req->params[0];
	if (!uuid_param(req, dev, "device id"))
		return;
	struct bw_device d;
	json_t *list;
	bw_error err = {0};
	if (bw_store_device_get(req->host->store, dev, &d, &err) != BW_OK ||
	    bw_store_command_list(req->host->store, dev, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	bw_req_reply_json(req, 200, json_pack("{s:o}", "commands", list));
}

static void get_command(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *id = req->params[0];
	if (!uuid_param(req, id, "command id"))
		return;
	json_t *cmd;
	bw_error err = {0};
	if (bw_store_command_get(req->host->store, id, &cmd, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(cmd);
	bw_req_reply_json(req, 200, cmd);
}

static void delete_command(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *id = req->params[0];
	if (!uuid_param(req, id, "command id"))
		return;
	bw_error err = {0};
	if (bw_store_command_cancel(req->host->store, id, (int64_t)time(NULL), &err) != BW_OK) {
		if (err.code == BW_E_STATE) {
			bw_req_audit(req, req->principal, "command.cancel", id, "failure", err.message);
			bw_req_reply_error(req, 409, "conflict",
			                   err.message[0] ? err.message : "the command is already final");
			return;
		}
		if (err.code != BW_E_NOTFOUND)
			bw_req_audit(req, req->principal, "command.cancel", id, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "command.cancel", id, "success", NULL);
	bw_req_reply_json(req, 204, NULL);
}

static void post_unenroll(struct bw_http_req *req, void *arg)
{
	(void)arg;
	const char *id = req->params[0];
	if (!uuid_param(req, id, "device id"))
		return;
	char reason[200];
	snprintf(reason, sizeof reason, "unenrolled by %s", req->principal);
	bw_error err = {0};
	if (bw_device_unregister(req->host, id, "unregistered", reason, &err) != BW_OK) {
		if (err.code != BW_E_NOTFOUND)
			bw_req_audit(req, req->principal, "device.unenroll", id, "failure", err.message);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_audit(req, req->principal, "device.unenroll", id, "success", NULL);
	bw_req_reply_json(req, 200, json_pack("{s:s, s:s}", "id", id, "status", "unregistered"));
}

/* ---- device event logs */

static bool event_type_valid(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > MAX_EVENT_TYPE_LEN)
		return false;
	for (const char *p = t; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.'))
			return false;
	return true;
}

static void get_logs(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_event_query q = {0};
	q.device_id = bw_req_query(req, "device");
	q.type = bw_req_query(req, "type");
	const char *since = bw_req_query(req, "since"), *until = bw_req_query(req, "until");
	const char *before = bw_req_query(req, "before");
	if (q.device_id && !uuid_param(req, q.device_id, "device"))
		return;
	if (q.type && !event_type_valid(q.type)) {
		bad_request(req, "type must be 1 to 64 characters of a-z, 0-9, '_' and '.' (e.g. malware_found)");
		return;
	}
	if (since && !parse_time(since, &q.since)) {
		bad_request(req, "since must be Unix seconds or an RFC 3339 time (e.g. 2025-06-01T12:00:00Z)");
		return;
	}
	if (until && !parse_time(until, &q.until)) {
		bad_request(req, "until must be Unix seconds or an RFC 3339 time (e.g. 2025-06-01T12:00:00Z)");
		return;
	}
	if (since && until && q.since > q.until) {
		bad_request(req, "since must not be later than until");
		return;
	}
	if (before) {
		char *end = NULL;
		errno = 0;
		long long v = strtoll(before, &end, 10);
		if (errno || end == before || *end || before[0] < '0' || before[0] > '9' || v < 1) {
			bad_request(req, "before must be a positive entry id");
			return;
		}
		q.before_id = v;
	}
	if (!query_limit(req, &q.limit))
		return;
	json_t *list;
	bw_error err = {0};
	if (bw_store_events_query(req->host->store, &q, &list, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_json_times_to_text(list);
	json_t *next = json_null();
	if (json_array_size(list) == q.limit) {
		json_t *last = json_object_get(json_array_get(list, q.limit - 1), "id");
		if (json_is_integer(last)) {
			json_decref(next);
			next = json_copy(last);
		}
	}
	bw_req_reply_json(req, 200, json_pack("{s:o, s:o}", "events", list, "next_before", next));
}

int bw_devices_api_register(struct bw_host *h, bw_error *err)
{
	static const struct bw_route_def routes[] = {
	    {"POST", "/api/v1/enrollment/keys", BW_ROLE_ADMIN, post_key},
	    {"GET", "/api/v1/enrollment/keys", BW_ROLE_READONLY, get_keys},
	    {"DELETE", "/api/v1/enrollment/keys/{id}", BW_ROLE_ADMIN, delete_key},
	    {"POST", "/api/v1/enrollment/invitations", BW_ROLE_ADMIN, post_invitation},
	    {"GET", "/api/v1/enrollment/invitations", BW_ROLE_READONLY, get_invitations},
	    /* The outbox holds invitation codes in clear until a mailer sends them. */
	    {"GET", "/api/v1/enrollment/outbox", BW_ROLE_ADMIN, get_outbox},
	    {"GET", "/api/v1/enrollment/allowlist", BW_ROLE_READONLY, get_allowlist},
	    {"POST", "/api/v1/enrollment/allowlist", BW_ROLE_ADMIN, post_allowlist},
	    {"PUT", "/api/v1/enrollment/allowlist/enabled", BW_ROLE_ADMIN, put_allowlist_enabled},
	    {"DELETE", "/api/v1/enrollment/allowlist/{kind}/{value}", BW_ROLE_ADMIN, delete_allowlist},
	    {"GET", "/api/v1/enrollment/refusals", BW_ROLE_READONLY, get_refusals},
	    {"GET", "/api/v1/devices", BW_ROLE_READONLY, get_devices},
	    {"GET", "/api/v1/devices/{id}", BW_ROLE_READONLY, get_device},
	    {"POST", "/api/v1/devices/{id}/commands", BW_ROLE_ADMIN, post_device_command},
	    {"GET", "/api/v1/devices/{id}/commands", BW_ROLE_READONLY, get_device_commands},
	    {"POST", "/api/v1/devices/{id}/unenroll", BW_ROLE_ADMIN, post_unenroll},
	    {"GET", "/api/v1/commands/{id}", BW_ROLE_READONLY, get_command},
	    {"DELETE", "/api/v1/commands/{id}", BW_ROLE_ADMIN, delete_command},
	    {"GET", "/api/v1/logs", BW_ROLE_READONLY, get_logs},
	};
	return bw_router_add_all(h->admin_router, routes, sizeof routes / sizeof routes[0], err);
}
