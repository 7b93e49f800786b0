/* host/agent/agent_api.c: the agent protocol v1 (docs/agent-protocol.md) on the agent
 * listener: device authentication by client certificate, enrollment, check-in, command
 * results, event uploads, unenrollment, policy fetch and certificate renewal. */
#include "agent_api.h"

#include "crypto.h"
#include "device_ca.h"
#include "loader.h"
#include "log.h"
#include "policies.h"
#include "registry.h"
#include "router.h"

#include <bulwark/directory.h>
#include <event2/http.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

/* Identity of the certificate a TLS connection presented, computed once per connection. */
struct conn_identity {
	char device_id[37];
	char serial[41];
};

static const char *or_dash(const char *s)
{
	return s ? s : "-";
}

static bool peer_is_trusted_proxy(struct bw_http_req *req)
{
	const struct bw_strings *p = &req->host->settings.agent.trusted_proxies;
	for (size_t i = 0; i < p->count; i++)
		if (strcmp(p->items[i], req->peer) == 0)
			return true;
	return false;
}

/* RFC 9440: Client-Cert: :<base64 DER>: */
static X509 *cert_from_header(const char *value)
{
	size_t n = value ? strlen(value) : 0;
	if (n < 3 || n > 16384 || value[0] != ':' || value[n - 1] != ':')
		return NULL;
	unsigned char *der = malloc(n);
	if (!der)
		return NULL;
	int len = EVP_DecodeBlock(der, (const unsigned char *)value + 1, (int)(n - 2));
	X509 *x = NULL;
	if (len > 0) {
		/* EVP_DecodeBlock counts padding bytes as data: trim them. */
		if (n >= 4 && value[n - 2] == '=')
			len -= value[n - 3] == '=' ? 2 : 1;
		const unsigned char *p = der;
		x = d2i_X509(NULL, &p, len);
	}
	free(der);
	return x;
}

static int device_auth(struct bw_http_req *req, int min_role)
{
	(void)min_role;
	struct bw_host *h = req->host;
	struct conn_identity id_buf, *id = bw_http_conn_data(req->ev);
	if (!id) {
		X509 *cert = bw_http_peer_cert(req->ev);
		if (cert) {
			id = calloc(1, sizeof *id);
			if (!id || !bw_device_ca_identify(h->device_ca, cert, false, id->device_id, id->serial)) {
				free(id);
				return 401;
			}
			bw_http_conn_set_data(req->ev, id);
		} else {
			/* Only a configured proxy may vouch for a certificate it terminated. */
			const char *hdr = bw_req_header(req, "Client-Cert");
			if (!hdr || !peer_is_trusted_proxy(req))
				return 401;
			X509 *x = cert_from_header(hdr);
			bool ok = x && bw_device_ca_identify(h->device_ca, x, true, id_buf.device_id, id_buf.serial);
			X509_free(x);
			if (!ok)
				return 401;
			id = &id_buf;
		}
	}
	struct bw_reg_device *d = bw_registry_find(h->registry, id->device_id);
	if (!d || d->status != BW_DEV_ACTIVE || strcmp(d->serial, id->serial) != 0)
		return 401; /* unknown, unenrolled, wiped, or a certificate replaced by renewal */
	memcpy(req->principal, id->device_id, sizeof id->device_id);
	req->role = BW_ROLE_READONLY;
	return 0;
}

/* ---- input helpers */

static bool opt_string(json_t *o, const char *key, size_t max, const char **out, char *why, size_t wl)
{
	json_t *v = json_object_get(o, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_string(v) || json_string_length(v) > max ||
	    strlen(json_string_value(v)) != json_string_length(v)) {
		snprintf(why, wl, "device.%s must be a string of at most %zu characters", key, max);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

/* Validates and normalises the "device" object of an enrollment or check-in into `out`. */
static bool device_fields(json_t *dev, bool enrolling, json_t *out, char *why, size_t wl)
{
	static const struct {
		const char *key;
		size_t max;
	} plain[] = {{"os_version", 32}, {"model", 128},       {"manufacturer", 128},
	             {"serial", 128},    {"phone_number", 32}, {"agent_version", 32}};
	if (!json_is_object(dev)) {
		snprintf(why, wl, "device must be an object");
		return false;
	}
	const char *s;
	if (enrolling) {
		if (!opt_string(dev, "platform", 16, &s, why, wl))
			return false;
		if (!s || (strcmp(s, "android") != 0 && strcmp(s, "ios") != 0)) {
			snprintf(why, wl, "device.platform must be \"android\" or \"ios\"");
			return false;
		}
		json_object_set_new(out, "platform", json_string(s));
	}
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
		if (!opt_string(dev, plain[i].key, plain[i].max, &s, why, wl))
			return false;
		if (s)
			json_object_set_new(out, plain[i].key, json_string(s));
	}
	char norm[20];
	if (!opt_string(dev, "imei", 32, &s, why, wl))
		return false;
	if (s && enrolling) {
		if (!bw_normalize_imei(s, norm)) {
			snprintf(why, wl, "device.imei must be 15 digits with a valid check digit");
			return false;
		}
		json_object_set_new(out, "imei", json_string(norm));
	}
	if (!opt_string(dev, "meid", 32, &s, why, wl))
		return false;
	if (s && enrolling) {
		if (!bw_normalize_meid(s, norm)) {
			snprintf(why, wl, "device.meid must be 14 hexadecimal digits");
			return false;
		}
		json_object_set_new(out, "meid", json_string(norm));
	}
	if (!opt_string(dev, "wifi_mac", 32, &s, why, wl))
		return false;
	if (s && enrolling) {
		if (!bw_normalize_mac(s, norm)) {
			snprintf(why, wl, "device.wifi_mac must be a MAC address (aa:bb:cc:dd:ee:ff)");
			return false;
		}
		json_object_set_new(out, "wifi_mac", json_string(norm));
	}
	json_t *push = json_object_get(dev, "push");
	if (push && !json_is_null(push)) {
		const char *prov = json_string_value(json_object_get(push, "provider"));
		const char *tok = json_string_value(json_object_get(push, "token"));
		if (!json_is_object(push) || !prov || !tok || (strcmp(prov, "fcm") != 0 && strcmp(prov, "apns") != 0) ||
		    strlen(tok) == 0 || strlen(tok) > 4096) {
			snprintf(why, wl, "device.push must be {\"provider\": \"fcm\"|\"apns\", \"token\": string}");
			return false;
		}
		json_object_set_new(out, "push", json_pack("{s:s, s:s}", "provider", prov, "token", tok));
	}
	return true;
}

static void refuse(struct bw_http_req *req, const char *reason, const char *detail, const char *message)
{
	bw_error err = {0};
	if (bw_store_refusal_add(req->host->store, (int64_t)time(NULL), req->peer, reason, detail, &err) != BW_OK)
		bw_log_error("enroll", "cannot record a refusal: %s", err.message);
	bw_log_warn("enroll", "refused enrollment from %s: %s (%s)", req->peer, reason, detail ? detail : "");
	bw_req_reply_error(req, 403, "enrollment_refused", message);
}

static bool allowlist_allows(struct bw_host *h, json_t *dev)
{
	char *on = NULL;
	bool enabled =
	    bw_store_setting_get(h->store, "allowlist_enabled", &on, NULL) == BW_OK && on && strcmp(on, "1") == 0;
	free(on);
	if (!enabled)
		return true;
	static const char *const kinds[] = {"imei", "meid", "wifi_mac"};
	for (size_t i = 0; i < 3; i++) {
		const char *v = json_string_value(json_object_get(dev, kinds[i]));
		if (v && bw_store_allowlist_contains(h->store, kinds[i], v))
			return true;
	}
	return false;
}

/* Creates the enrolled device, answers 201 with its certificate and tells the rest of the host. */
static void enroll_register(struct bw_http_req *req, const char *id, json_t *dev, const char *group, const char *method,
                            const char *cert, const char *serial, int64_t not_after, int64_t now)
{
	struct bw_host *h = req->host;
	bw_error err = {0};
	if (bw_store_device_create(h->store, id, dev, group[0] ? group : NULL, method, serial, not_after, now, &err) !=
	    BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	struct bw_device d = {.cert_not_after = not_after, .enrolled_at = now, .last_seen = now};
	snprintf(d.id, sizeof d.id, "%s", id);
	snprintf(d.status, sizeof d.status, "active");
	snprintf(d.cert_serial, sizeof d.cert_serial, "%s", serial);
	bw_registry_put(h->registry, &d);
	bw_metric_add(h->m.enrollments, method, 1);
	bw_log_info("enroll", "enrolled device %s (%s) by %s from %s", id,
	            json_string_value(json_object_get(dev, "platform")), method, req->peer);
	bw_events_emit(h->events, "device.enrolled",
	               json_pack("{s:s, s:O, s:s, s:s?}", "device_id", id, "platform", json_object_get(dev, "platform"),
	                         "method", method, "group", group[0] ? group : NULL),
	               NULL);
	bw_req_reply_json(req, 201,
	                  json_pack("{s:s, s:s, s:s, s:I, s:I}", "device_id", id, "certificate", cert, "ca",
	                            bw_device_ca_pem(h->device_ca), "not_after", (json_int_t)not_after,
	                            "checkin_interval", (json_int_t)(h->settings.agent.checkin_interval_ms / 1000)));
}

/* Enrollment by directory credentials: the directory plugin binds as the user (on its work
 * queue); the device is owned by that user and joins the device group its directory groups map
 * to. Nothing is issued before the directory said yes. */
struct dir_enroll {
	struct bw_http_req *req;
	json_t *dev;
	char *csr;
	char user[257];
};

static void enroll_directory_done(int rc, const char *message, json_t *user, void *arg)
{
	struct dir_enroll *e = arg;
	struct bw_http_req *req = e->req;
	struct bw_host *h = req->host;
	char detail[400];
	char *cert = NULL;
	if (rc == BW_E_DENIED || rc == BW_E_NOTFOUND) {
		snprintf(detail, sizeof detail, "user %s: %s", e->user,
		         rc == BW_E_NOTFOUND ? "no such user"
		         : message           ? message
		                             : "refused");
		bool wrong = rc == BW_E_NOTFOUND || !message || strstr(message, "password");
		refuse(req, "directory_refused", detail, wrong ? "wrong user name or password" : message);
		goto out;
	}
	if (rc != BW_OK) {
		snprintf(detail, sizeof detail, "the directory cannot be reached: %s",
		         message ? message : "no reason given");
		bw_req_reply_error(req, 503, "directory_unavailable", detail);
		goto out;
	}
	const char *upn = json_string_value(json_object_get(user, "upn"));
	const char *login = json_string_value(json_object_get(user, "login"));
	const char *name = json_string_value(json_object_get(user, "display_name"));
	const char *mail = json_string_value(json_object_get(user, "mail"));
	const char *dgroup = json_string_value(json_object_get(user, "device_group"));
	json_object_set_new(e->dev, "owner", json_string(upn && *upn ? upn : login && *login ? login : e->user));
	if (name && *name)
		json_object_set_new(e->dev, "owner_name", json_string(name));
	if (mail && *mail)
		json_object_set_new(e->dev, "owner_email", json_string(mail));
	char id[37], serial[41], group[129];
	snprintf(group, sizeof group, "%s", dgroup ? dgroup : "");
	int64_t not_after = 0;
	bw_error err = {0};
	bw_policies *pol = bw_policies_of(h);
	if (pol && bw_group_ensure(pol, group, "named by the directory's group mapping", &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		goto out;
	}
	if (bw_uuid_new(id, &err) != BW_OK ||
	    bw_device_ca_issue(h->device_ca, e->csr, id, h->settings.agent.cert_validity_ms / 1000, &cert, serial,
	                       &not_after, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		goto out;
	}
	enroll_register(req, id, e->dev, group, "directory", cert, serial, not_after, (int64_t)time(NULL));
out:
	free(cert);
	json_decref(e->dev);
	free(e->csr);
	free(e);
}

static void enroll_directory(struct bw_http_req *req, const char *user, const char *password, const char *csr,
                             json_t *dev)
{
	void *arg = NULL;
	const struct bw_directory_ops *ops = NULL;
	struct bw_host *h = req->host;
	if (bw_plugins_capability_count(h->plugins, "directory") > 0) {
		const struct bw_capability *c = bw_plugins_capability(h->plugins, "directory", 0);
		if (c->ops_size >= sizeof *ops) {
			ops = c->ops;
			arg = c->ops_arg;
		}
	}
	if (!ops || !ops->authenticate) {
		bw_req_reply_error(req, 501, "not_implemented",
		                   "enrollment by directory credentials needs a directory plugin; none is configured");
		return;
	}
	struct dir_enroll *e = calloc(1, sizeof *e);
	if (!e || !(e->csr = strdup(csr))) {
		free(e);
		bw_req_reply_error(req, 503, "unavailable", "out of memory");
		return;
	}
	e->req = req;
	e->dev = json_incref(dev);
	snprintf(e->user, sizeof e->user, "%s", user);
	bw_error err = {0};
	if (ops->authenticate(arg, user, password, enroll_directory_done, e, &err) != BW_OK) {
		if (err.code == BW_E_INVALID)
			refuse(req, "directory_refused", err.message, "wrong user name or password");
		else
			bw_req_reply_bw_error(req, &err);
		json_decref(e->dev);
		free(e->csr);
		free(e);
	}
}

/* ---- POST /agent/v1/enroll */

static void post_enroll(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_host *h = req->host;
	json_t *body = NULL, *dev = json_object();
	bw_error err = {0};
	char why[300] = "";
	char group[129] = "";
	char *cert = NULL;
	if (bw_req_json(req, &body, &err) != BW_OK) {
		bw_req_reply_error(req, 400, "invalid_json", err.message);
		goto out;
	}
	const char *method = json_string_value(json_object_get(body, "method"));
	const char *csr = json_string_value(json_object_get(body, "csr"));
	if (!method || (strcmp(method, "key") && strcmp(method, "invitation") && strcmp(method, "directory"))) {
		bw_req_reply_error(req, 400, "bad_request", "method must be \"key\", \"invitation\" or \"directory\"");
		goto out;
	}
	if (!csr) {
		bw_req_reply_error(req, 400, "bad_request", "csr (a PEM certificate request) is required");
		goto out;
	}
	if (!device_fields(json_object_get(body, "device"), true, dev, why, sizeof why)) {
		bw_req_reply_error(req, 400, "bad_request", why);
		goto out;
	}
	const char *key = NULL, *email = NULL, *code = NULL, *user = NULL, *password = NULL;
	if (strcmp(method, "key") == 0) {
		key = json_string_value(json_object_get(body, "key"));
		if (!key || !bw_enrollment_key_valid(key)) {
			bw_req_reply_error(
			    req, 400, "bad_request",
			    "key must be 8 to 64 characters of A-Z, a-z, 0-9 and '-' (as the administrator "
			    "gave it)");
			goto out;
		}
	} else if (strcmp(method, "invitation") == 0) {
		email = json_string_value(json_object_get(body, "email"));
		code = json_string_value(json_object_get(body, "code"));
		if (!email || !code || strlen(email) > 254 || strlen(code) > 64) {
			bw_req_reply_error(req, 400, "bad_request", "email and code (strings) are required");
			goto out;
		}
	} else {
		user = json_string_value(json_object_get(body, "user"));
		password = json_string_value(json_object_get(body, "password"));
		if (!user || !password || !*user || !*password || strlen(user) > 256 || strlen(password) > 1024) {
			bw_req_reply_error(req, 400, "bad_request", "user and password (strings) are required");
			goto out;
		}
	}
	if (!allowlist_allows(h, dev)) {
		char detail[200];
		snprintf(detail, sizeof detail, "imei=%s meid=%s wifi_mac=%s",
		         or_dash(json_string_value(json_object_get(dev, "imei"))),
		         or_dash(json_string_value(json_object_get(dev, "meid"))),
		         or_dash(json_string_value(json_object_get(dev, "wifi_mac"))));
		refuse(req, "not_on_allowlist", detail, "this device is not on the administrator's device list");
		goto out;
	}
	if (user) {
		enroll_directory(req, user, password, csr, dev);
		OPENSSL_cleanse((void *)password, strlen(password));
		goto out;
	}
	/* The CSR is checked (by issuing) before the key or invitation is used, so that a refused
	 * request never consumes a use. */
	char id[37], serial[41];
	int64_t not_after = 0;
	if (bw_uuid_new(id, &err) != BW_OK ||
	    bw_device_ca_issue(h->device_ca, csr, id, h->settings.agent.cert_validity_ms / 1000, &cert, serial,
	                       &not_after, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		goto out;
	}
	int64_t now = (int64_t)time(NULL);
	char hash[65];
	if (key) {
		/* Keys are issued in upper case; a user typing them in lower case means the same key. */
		char upper[65];
		size_t i = 0;
		for (; i < sizeof upper - 1 && key[i]; i++)
			upper[i] = (char)(key[i] >= 'a' && key[i] <= 'z' ? key[i] - 'a' + 'A' : key[i]);
		upper[i] = '\0';
		bw_token_hash(upper, hash);
		if (bw_store_key_use(h->store, hash, now, group, &err) != BW_OK) {
			if (err.code == BW_E_NOTFOUND)
				refuse(req, "unknown_key", NULL, "unknown enrollment key");
			else if (err.code == BW_E_DENIED)
				refuse(req, "key_refused", err.message, err.message);
			else
				bw_req_reply_bw_error(req, &err);
			goto out;
		}
	} else {
		bw_token_hash(code, hash);
		if (bw_store_invitation_use(h->store, email, hash, now, &err) != BW_OK) {
			if (err.code == BW_E_NOTFOUND || err.code == BW_E_DENIED)
				refuse(req, "invitation_refused", email, "unknown, used or expired invitation");
			else
				bw_req_reply_bw_error(req, &err);
			goto out;
		}
	}
	enroll_register(req, id, dev, group, method, cert, serial, not_after, now);
out:
	free(cert);
	json_decref(body);
	json_decref(dev);
}

/* ---- POST /agent/v1/checkin */

/* Applies an inventory report: a full snapshot replaces, a delta merges into the stored one. */
static void apply_inventory(struct bw_http_req *req, struct bw_reg_device *d, json_t *inv, bool *asked_full)
{
	struct bw_host *h = req->host;
	bool full = json_is_true(json_object_get(inv, "full"));
	json_t *snap = NULL;
	if (!full) {
		if (!d->has_inventory) {
			*asked_full = true; /* a delta without a base is useless: ask for everything */
			return;
		}
		json_t *rec = NULL;
		if (bw_store_device_json(h->store, d->id, &rec, NULL) == BW_OK)
			snap = json_deep_copy(json_object_get(rec, "inventory"));
		json_decref(rec);
	}
	if (!json_is_object(snap)) {
		json_decref(snap);
		snap = json_object();
	}
	json_t *changes = json_array();
	const char *key;
	json_t *v;
	json_object_foreach(inv, key, v)
	{
		if (strcmp(key, "full") == 0)
			continue;
		if (strcmp(key, "apps_added") == 0 || strcmp(key, "apps_removed") == 0) {
			json_t *apps = json_object_get(snap, "apps");
			if (!json_is_array(apps)) {
				apps = json_array();
				json_object_set_new(snap, "apps", apps);
			}
			size_t i, j;
			json_t *a, *b;
			json_array_foreach(v, i, a)
			{
				const char *aid = json_is_string(a) ? json_string_value(a)
				                                    : json_string_value(json_object_get(a, "id"));
				for (j = 0; aid && j < json_array_size(apps);) {
					b = json_array_get(apps, j);
					const char *bid = json_string_value(json_object_get(b, "id"));
					if (bid && strcmp(aid, bid) == 0)
						json_array_remove(apps, j);
					else
						j++;
				}
				if (strcmp(key, "apps_added") == 0 && json_is_object(a))
					json_array_append(apps, a);
			}
		} else if (strcmp(key, "apps") == 0 && full) {
			json_object_set(snap, "apps", v);
		} else if (strcmp(key, "settings") == 0 && json_is_object(v) &&
		           json_is_object(json_object_get(snap, key))) {
			json_object_update(json_object_get(snap, key), v);
		} else {
			json_object_set(snap, key, v);
		}
		json_array_append_new(changes, json_string(key));
	}
	char *text = json_dumps(snap, JSON_COMPACT);
	bw_error err = {0};
	if (text && bw_store_device_set_inventory(h->store, d->id, text, (int64_t)time(NULL), &err) == BW_OK) {
		d->has_inventory = true;
		bw_events_emit(h->events, "device.inventory_changed",
		               json_pack("{s:s, s:b, s:O}", "device_id", d->id, "full", full, "changes", changes),
		               NULL);
	} else {
		bw_log_error("checkin", "cannot store the inventory of %s: %s", d->id, err.message);
	}
	free(text);
	json_decref(changes);
	json_decref(snap);
}

#define MAX_INVENTORY_BYTES (512 * 1024)

static bool apps_valid(json_t *a, bool ids_only)
{
	if (!json_is_array(a) || json_array_size(a) > 10000)
		return false;
	size_t i;
	json_t *x;
	json_array_foreach(a, i, x)
	{
		if (ids_only ? !json_is_string(x) : (!json_is_object(x) || !json_is_string(json_object_get(x, "id"))))
			return false;
	}
	return true;
}

/* Checks the shape of an inventory report (docs/agent-protocol.md) before anything is stored. */
static bool inventory_valid(json_t *inv, char *why, size_t wl)
{
	const char *key;
	json_t *v;
	json_object_foreach(inv, key, v)
	{
		bool ok;
		if (strcmp(key, "full") == 0)
			ok = json_is_boolean(v);
		else if (strcmp(key, "apps") == 0 || strcmp(key, "apps_added") == 0)
			ok = apps_valid(v, false);
		else if (strcmp(key, "apps_removed") == 0)
			ok = apps_valid(v, true);
		else if (strcmp(key, "settings") == 0 || strcmp(key, "root") == 0)
			ok = json_is_object(v);
		else if (strcmp(key, "wifi") == 0)
			ok = json_is_object(v) || json_is_null(v);
		else if (strcmp(key, "ca_certificates") == 0)
			ok = json_is_array(v);
		else {
			snprintf(why, wl, "inventory.%s is not a known inventory field", key);
			return false;
		}
		if (!ok) {
			snprintf(
			    why, wl,
			    "inventory.%s has the wrong type (full: boolean; apps, apps_added: arrays of objects with "
			    "a "
			    "string id; apps_removed: array of ids; settings, root: objects; wifi: object or null; "
			    "ca_certificates: array)",
			    key);
			return false;
		}
	}
	return true;
}

static void post_checkin(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_host *h = req->host;
	struct bw_reg_device *d = bw_registry_find(h->registry, req->principal);
	int64_t now = (int64_t)time(NULL);
	size_t len;
	const char *raw = bw_req_body(req, &len);
	bool asked_full = !d->has_inventory;
	json_t *body = NULL;
	if (len > 0 && !(len == 2 && raw[0] == '{' && raw[1] == '}')) {
		bw_error err = {0};
		if (bw_req_json(req, &body, &err) != BW_OK) {
			bw_req_reply_error(req, 400, "invalid_json", err.message);
			return;
		}
		json_t *inv = json_object_get(body, "inventory");
		json_t *dev = json_object_get(body, "device");
		if ((inv && !json_is_object(inv)) || (dev && !json_is_object(dev))) {
			json_decref(body);
			bw_req_reply_error(req, 400, "bad_request", "inventory and device must be objects");
			return;
		}
		char why[200] = "";
		json_t *pvj = json_object_get(body, "policy_version");
		if (pvj && !json_is_null(pvj) && (!json_is_string(pvj) || json_string_length(pvj) > 64))
			snprintf(why, sizeof why, "policy_version must be a string of at most 64 characters");
		else if (inv)
			inventory_valid(inv, why, sizeof why);
		if (why[0]) {
			json_decref(body);
			bw_req_reply_error(req, 400, "bad_request", why);
			return;
		}
		if (inv && len > MAX_INVENTORY_BYTES) {
			json_decref(body);
			bw_req_reply_error(req, 413, "too_large", "an inventory report is limited to 512 KiB");
			return;
		}
		if (dev) {
			json_t *fields = json_object();
			if (!device_fields(dev, false, fields, why, sizeof why)) {
				json_decref(fields);
				json_decref(body);
				bw_req_reply_error(req, 400, "bad_request", why);
				return;
			}
			if (json_object_size(fields) &&
			    bw_store_device_update(h->store, d->id, fields, &err) != BW_OK) {
				bw_log_error("checkin", "cannot update device %s: %s", d->id, err.message);
			} else if (json_object_size(fields)) {
				json_t *keys = json_array();
				const char *k;
				json_t *v;
				json_object_foreach(fields, k, v)
				{
					json_array_append_new(keys, json_string(k));
				}
				/* Registry fields changed (OS version, push token, ...): rules may depend on them. */
				bw_events_emit(h->events, "device.updated",
				               json_pack("{s:s, s:o}", "device_id", d->id, "fields", keys), NULL);
			}
			json_decref(fields);
		}
		if (inv) {
			asked_full = false;
			apply_inventory(req, d, inv, &asked_full);
			d = bw_registry_find(h->registry, req->principal);
		}
	}
	bw_registry_seen(h->registry, d, now);
	/* policy: the version the device reports having applied, and the one it should run */
	bw_policies *pol = bw_policies_of(h);
	const char *applied = json_string_value(json_object_get(body, "policy_version"));
	if (pol && applied)
		bw_policy_device_applied(pol, d->id, applied);
	const char *policy_version = pol ? bw_policy_device_version(pol, d->id) : NULL;
	json_t *commands = NULL;
	if (d->pending) {
		bw_error err = {0};
		int64_t resend_before = now - h->settings.agent.ack_timeout_ms / 1000;
		if (bw_store_command_take(h->store, d->id, now, resend_before, 20, &commands, &err) != BW_OK)
			bw_log_error("checkin", "cannot read commands of %s: %s", d->id, err.message);
		int64_t open = 0;
		if (bw_store_command_open_count(h->store, d->id, NULL, &open, NULL) == BW_OK && open == 0)
			d->pending = false;
	}
	bool renew = d->cert_not_after - now < h->settings.agent.renew_before_ms / 1000;
	bw_metric_add(h->m.checkins, NULL, 1);
	bw_events_emit(h->events, "device.checkin", json_pack("{s:s}", "device_id", d->id), NULL);
	json_decref(body);
	bw_req_reply_json(req, 200,
	                  json_pack("{s:o, s:s?, s:{s:s}, s:I, s:b}", "commands", commands ? commands : json_array(),
	                            "inventory_request", asked_full ? "full" : NULL, "policy", "version",
	                            policy_version ? policy_version : "0", "checkin_interval",
	                            (json_int_t)(h->settings.agent.checkin_interval_ms / 1000), "renew_certificate",
	                            renew));
}

/* ---- POST /agent/v1/commands/{id}/result */

static void post_result(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_host *h = req->host;
	const char *cid = req->params[0];
	json_t *body = NULL, *cmd = NULL;
	bw_error err = {0};
	if (!bw_uuid_valid(cid)) {
		bw_req_reply_error(req, 404, "not_found", "no such command for this device");
		return;
	}
	if (bw_req_json(req, &body, &err) != BW_OK) {
		bw_req_reply_error(req, 400, "invalid_json", err.message);
		return;
	}
	const char *status = json_string_value(json_object_get(body, "status"));
	json_t *result = json_object_get(body, "result");
	json_t *error = json_object_get(body, "error");
	char *rtext = NULL;
	if (!status || (strcmp(status, "acknowledged") && strcmp(status, "completed") && strcmp(status, "failed"))) {
		bw_req_reply_error(req, 400, "bad_request",
		                   "status must be \"acknowledged\", \"completed\" or \"failed\"");
		goto out;
	}
	if ((result && !json_is_object(result) && !json_is_null(result)) || (error && !json_is_string(error))) {
		bw_req_reply_error(req, 400, "bad_request", "result must be an object and error a string");
		goto out;
	}
	rtext = result && json_is_object(result) ? json_dumps(result, JSON_COMPACT) : NULL;
	if (rtext && strlen(rtext) > 65536) {
		bw_req_reply_error(req, 413, "too_large", "a command result is limited to 64 KiB");
		goto out;
	}
	if (bw_store_command_result(h->store, req->principal, cid, status, rtext,
	                            error ? json_string_value(error) : NULL, (int64_t)time(NULL), &err) != BW_OK) {
		if (err.code == BW_E_NOTFOUND)
			bw_req_reply_error(req, 404, "not_found", "no such command for this device");
		else
			bw_req_reply_bw_error(req, &err);
		goto out;
	}
	const char *type = "";
	if (bw_store_command_get(h->store, cid, &cmd, NULL) == BW_OK)
		type = or_dash(json_string_value(json_object_get(cmd, "type")));
	if (strcmp(status, "acknowledged") != 0) {
		bw_events_emit(h->events, "command.completed",
		               json_pack("{s:s, s:s, s:s, s:s}", "device_id", req->principal, "command_id", cid, "type",
		                         type, "status", status),
		               NULL);
		if (strcmp(status, "completed") == 0 &&
		    (strcmp(type, "wipe") == 0 || strcmp(type, "enterprise_wipe") == 0))
			bw_device_unregister(h, req->principal, "wiped", "wipe completed", NULL);
	}
	bw_req_reply_json(req, 200, json_pack("{s:s, s:s}", "id", cid, "status", status));
out:
	free(rtext);
	json_decref(body);
	json_decref(cmd);
}

/* ---- POST /agent/v1/events */

static void post_events(struct bw_http_req *req, void *arg)
{
	(void)arg;
	static const char *const types[] = {"malware_found", "web_blocked",   "sms_filtered",
	                                    "call_filtered", "scan_finished", "policy_applied"};
	json_t *body = NULL;
	bw_error err = {0};
	if (bw_req_json(req, &body, &err) != BW_OK) {
		bw_req_reply_error(req, 400, "invalid_json", err.message);
		return;
	}
	const char *batch = json_string_value(json_object_get(body, "batch_id"));
	json_t *events = json_object_get(body, "events");
	char why[200] = "";
	if (!batch || !bw_uuid_valid(batch))
		snprintf(why, sizeof why, "batch_id must be a lower-case UUID");
	else if (!json_is_array(events) || json_array_size(events) == 0 || json_array_size(events) > 500)
		snprintf(why, sizeof why, "events must be an array of 1 to 500 events");
	size_t i;
	json_t *e;
	json_array_foreach(events, i, e)
	{
		if (why[0])
			break;
		const char *t = json_string_value(json_object_get(e, "type"));
		json_t *at = json_object_get(e, "at"), *data = json_object_get(e, "data");
		bool known = false;
		for (size_t k = 0; t && k < sizeof types / sizeof types[0]; k++)
			known |= strcmp(t, types[k]) == 0;
		if (!json_is_object(e) || !known)
			snprintf(why, sizeof why,
			         "events[%zu].type must be one of malware_found, web_blocked, sms_filtered, "
			         "call_filtered, scan_finished, policy_applied",
			         i);
		else if (!json_is_integer(at) || json_integer_value(at) < 0)
			snprintf(why, sizeof why, "events[%zu].at must be Unix seconds (an integer)", i);
		else if (data && !json_is_object(data))
			snprintf(why, sizeof why, "events[%zu].data must be an object", i);
	}
	if (why[0]) {
		json_decref(body);
		bw_req_reply_error(req, 400, "bad_request", why);
		return;
	}
	bool dup = false;
	if (bw_store_events_add(req->host->store, req->principal, batch, events, (int64_t)time(NULL), &dup, &err) !=
	    BW_OK) {
		json_decref(body);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	size_t n = json_array_size(events);
	json_decref(body);
	bw_req_reply_json(req, 200, json_pack("{s:I, s:b}", "stored", (json_int_t)(dup ? 0 : n), "duplicate", dup));
}

/* ---- POST /agent/v1/unenroll, GET /agent/v1/policy, POST /agent/v1/certificate */

static void post_unenroll(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_error err = {0};
	if (bw_device_unregister(req->host, req->principal, "unregistered", "unenrolled by the device", &err) !=
	    BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_reply_json(req, 200, json_pack("{s:s}", "status", "unregistered"));
}

/* If-None-Match holds the ETag (or a list of them, or "*"): the device already has this version. */
static bool etag_matches(const char *inm, const char *etag)
{
	if (!inm)
		return false;
	if (strcmp(inm, "*") == 0)
		return true;
	size_t n = strlen(etag);
	for (const char *p = strstr(inm, etag); p; p = strstr(p + 1, etag)) {
		char after = p[n];
		if (after == '\0' || after == ',' || after == ' ')
			return true;
	}
	return false;
}

static void get_policy(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bw_policies *p = bw_policies_of(req->host);
	json_t *doc = NULL;
	bw_error err = {0};
	if (!p) {
		bw_req_reply_error(req, 503, "unavailable", "the policy service is not running");
		return;
	}
	const char *version = bw_policy_device_version(p, req->principal);
	if (!version) {
		bw_req_reply_error(req, 404, "not_found", "no policy for this device");
		return;
	}
	char etag[BW_POLICY_VERSION_LEN + 3];
	snprintf(etag, sizeof etag, "\"%s\"", version);
	evhttp_add_header(evhttp_request_get_output_headers(req->ev), "ETag", etag);
	if (etag_matches(bw_req_header(req, "If-None-Match"), etag)) {
		bw_req_reply_json(req, 304, NULL);
		return;
	}
	if (bw_policy_device_document(p, req->principal, &doc, &err) != BW_OK) {
		bw_req_reply_bw_error(req, &err);
		return;
	}
	bw_req_reply_json(req, 200, doc);
}

static void post_certificate(struct bw_http_req *req, void *arg)
{
	(void)arg;
	struct bw_host *h = req->host;
	json_t *body = NULL;
	char *cert = NULL;
	bw_error err = {0};
	if (bw_req_json(req, &body, &err) != BW_OK) {
		bw_req_reply_error(req, 400, "invalid_json", err.message);
		return;
	}
	const char *csr = json_string_value(json_object_get(body, "csr"));
	char serial[41];
	int64_t not_after = 0, now = (int64_t)time(NULL);
	if (bw_device_ca_issue(h->device_ca, csr, req->principal, h->settings.agent.cert_validity_ms / 1000, &cert,
	                       serial, &not_after, &err) != BW_OK ||
	    bw_store_device_set_cert(h->store, req->principal, serial, not_after, &err) != BW_OK) {
		json_decref(body);
		bw_req_reply_bw_error(req, &err);
		return;
	}
	struct bw_reg_device *d = bw_registry_find(h->registry, req->principal);
	bw_store_cert_revoke(h->store, d->serial, d->id, "renewed", now, NULL);
	/* The old certificate stops working now: only the current serial is accepted. */
	snprintf(d->serial, sizeof d->serial, "%s", serial);
	d->cert_not_after = not_after;
	bw_log_info("devices", "device %s renewed its certificate", d->id);
	bw_req_reply_json(req, 200, json_pack("{s:s, s:I}", "certificate", cert, "not_after", (json_int_t)not_after));
	free(cert);
	json_decref(body);
}

int bw_agent_api_register(struct bw_host *h, bw_error *err)
{
	static const struct bw_route_def routes[] = {
	    {"POST", "/agent/v1/enroll", BW_ROLE_NONE, post_enroll},
	    {"POST", "/agent/v1/checkin", BW_ROLE_READONLY, post_checkin},
	    {"POST", "/agent/v1/commands/{id}/result", BW_ROLE_READONLY, post_result},
	    {"POST", "/agent/v1/events", BW_ROLE_READONLY, post_events},
	    {"POST", "/agent/v1/unenroll", BW_ROLE_READONLY, post_unenroll},
	    {"GET", "/agent/v1/policy", BW_ROLE_READONLY, get_policy},
	    {"POST", "/agent/v1/certificate", BW_ROLE_READONLY, post_certificate},
	};
	bw_router_set_auth(h->agent_router, device_auth);
	return bw_router_add_all(h->agent_router, routes, sizeof routes / sizeof routes[0], err);
}
