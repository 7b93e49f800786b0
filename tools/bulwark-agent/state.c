/* state.c: one simulated device: its plausible hardware profile and inventory, the inventory
 * deltas sent at check-in, and its state directory (key.pem, cert.pem, ca.pem, server-ca.pem,
 * device.json) that lets `run` continue where the last run stopped. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

#define STATE_FORMAT   1
#define MAX_STATE_FILE (8u * 1024 * 1024)

struct model {
	const char *model, *manufacturer;
};

static const struct model android_models[] = {
    {"Pixel 8", "Google"},   {"Pixel 7a", "Google"}, {"SM-S911B", "samsung"},
    {"SM-A546B", "samsung"}, {"XQ-DQ72", "Sony"},    {"CPH2449", "OnePlus"},
};
static const struct model ios_models[] = {
    {"iPhone15,4", "Apple"}, {"iPhone15,2", "Apple"}, {"iPhone14,5", "Apple"}, {"iPhone14,7", "Apple"}};

struct app {
	const char *id, *name, *version;
};

static const struct app android_apps[] = {
    {"com.android.chrome", "Chrome", "124.0.6367.82"},
    {"com.google.android.gm", "Gmail", "2024.04.07.623431532"},
    {"com.google.android.apps.maps", "Maps", "11.125.0101"},
    {"com.microsoft.teams", "Microsoft Teams", "1416/1.0.0.2024081401"},
    {"com.microsoft.office.outlook", "Outlook", "4.2418.1"},
    {"com.whatsapp", "WhatsApp", "2.24.9.78"},
    {"com.spotify.music", "Spotify", "8.9.36.616"},
    {"com.google.android.apps.authenticator2", "Authenticator", "6.0"},
    {"com.slack", "Slack", "24.04.10.0"},
    {"com.android.vending", "Google Play Store", "40.6.31"},
};
static const struct app ios_apps[] = {
    {"com.apple.mobilesafari", "Safari", "17.4"},
    {"com.apple.mobilemail", "Mail", "17.4"},
    {"com.microsoft.skype.teams", "Microsoft Teams", "6.8.0"},
    {"com.microsoft.Office.Outlook", "Outlook", "4.2418.0"},
    {"net.whatsapp.WhatsApp", "WhatsApp", "24.9.78"},
    {"com.tinyspeck.chatlyio", "Slack", "24.04.10"},
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static void set_string(json_t *o, const char *key, const char *value)
{
	json_object_set_new(o, key, json_string(value));
}

json_t *bwa_device_new(const struct bwa_profile *p)
{
	bool ios = p->platform && strcmp(p->platform, "ios") == 0;
	const struct model *m = ios ? &ios_models[bwa_random_u64() % COUNT(ios_models)]
	                            : &android_models[bwa_random_u64() % COUNT(android_models)];
	json_t *d = json_object();
	char imei[16], mac[18], serial[13], phone[16], token[256];

	set_string(d, "platform", p->platform ? p->platform : "android");
	set_string(d, "os_version", p->os_version ? p->os_version : ios ? "17.4" : "14");
	set_string(d, "model", p->model ? p->model : m->model);
	set_string(d, "manufacturer", p->manufacturer ? p->manufacturer : m->manufacturer);
	if (!p->serial) {
		/* Samsung-like "R5CT" + 8, or Apple-like 12 characters. */
		if (ios) {
			bwa_random_alnum(serial, 12, true);
		} else {
			memcpy(serial, "R5CT", 4);
			bwa_random_alnum(serial + 4, 8, true);
		}
	}
	set_string(d, "serial", p->serial ? p->serial : serial);
	bwa_random_imei(imei);
	set_string(d, "imei", p->imei ? p->imei : imei);
	json_object_set_new(d, "meid", p->meid ? json_string(p->meid) : json_null());
	bwa_random_mac(mac);
	set_string(d, "wifi_mac", p->wifi_mac ? p->wifi_mac : mac);
	snprintf(phone, sizeof phone, "+1555%07llu", (unsigned long long)(bwa_random_u64() % 10000000u));
	set_string(d, "phone_number", p->phone ? p->phone : phone);
	set_string(d, "agent_version", BWA_AGENT_VERSION);
	if (p->push || p->push_provider || p->push_token) {
		const char *provider = p->push_provider ? p->push_provider : ios ? "apns" : "fcm";

		if (p->push_token)
			snprintf(token, sizeof token, "%s", p->push_token);
		else
			bwa_push_token(provider, token, sizeof token);
		json_object_set_new(d, "push", json_pack("{s:s,s:s}", "provider", provider, "token", token));
	}
	return d;
}

json_t *bwa_inventory_new(const char *platform)
{
	bool ios = platform && strcmp(platform, "ios") == 0;
	const struct app *apps = ios ? ios_apps : android_apps;
	size_t napps = ios ? COUNT(ios_apps) : COUNT(android_apps);
	json_t *inv = json_object(), *list = json_array();
	char bssid[18];

	for (size_t i = 0; i < napps; i++)
		json_array_append_new(list, json_pack("{s:s,s:s,s:s}", "id", apps[i].id, "name", apps[i].name,
		                                      "version", apps[i].version));
	json_object_set_new(inv, "apps", list);
	if (ios)
		json_object_set_new(
		    inv, "settings",
		    json_pack("{s:b,s:b,s:s}", "passcode", 1, "encryption", 1, "passcode_type", "alphanumeric"));
	else
		json_object_set_new(inv, "settings",
		                    json_pack("{s:b,s:b,s:b,s:s,s:b}", "usb_debugging", 0, "developer_options", 0,
		                              "unknown_sources", 0, "screen_lock", "pin", "encryption", 1));
	bwa_random_mac(bssid);
	bssid[1] = '0'; /* a vendor (globally administered) access point address */
	json_object_set_new(
	    inv, "wifi",
	    json_pack("{s:s,s:s,s:s}", "ssid", "Corp-WiFi", "security", "wpa2-enterprise", "bssid", bssid));
	if (ios)
		json_object_set_new(inv, "root", json_pack("{s:b}", "jailbroken", 0));
	else
		json_object_set_new(inv, "root",
		                    json_pack("{s:b,s:b,s:s}", "rooted", 0, "su_binary", 0, "verified_boot", "green"));
	json_object_set_new(inv, "ca_certificates", json_array());
	return inv;
}

/* The app in `apps` with this id, or NULL. */
static json_t *find_app(json_t *apps, const char *id)
{
	size_t i;
	json_t *a;

	json_array_foreach(apps, i, a)
	{
		const char *aid = json_string_value(json_object_get(a, "id"));

		if (aid && strcmp(aid, id) == 0)
			return a;
	}
	return NULL;
}

json_t *bwa_inventory_delta(json_t *current, json_t *reported)
{
	json_t *d, *cur_apps, *rep_apps, *added, *removed, *cur_set, *rep_set, *changed, *v;
	const char *key;
	size_t i;

	if (!json_is_object(reported)) {
		d = json_deep_copy(current);
		json_object_set_new(d, "full", json_true());
		return d;
	}
	d = json_object();
	json_object_set_new(d, "full", json_false());
	cur_apps = json_object_get(current, "apps");
	rep_apps = json_object_get(reported, "apps");
	added = json_array();
	removed = json_array();
	json_array_foreach(cur_apps, i, v)
	{
		const char *id = json_string_value(json_object_get(v, "id"));
		json_t *old = id ? find_app(rep_apps, id) : NULL;

		if (id && (!old || !json_equal(old, v)))
			json_array_append(added, v); /* a new app or a new version of one */
	}
	json_array_foreach(rep_apps, i, v)
	{
		const char *id = json_string_value(json_object_get(v, "id"));

		if (id && !find_app(cur_apps, id))
			json_array_append_new(removed, json_string(id));
	}
	if (json_array_size(added))
		json_object_set(d, "apps_added", added);
	if (json_array_size(removed))
		json_object_set(d, "apps_removed", removed);
	json_decref(added);
	json_decref(removed);

	/* Settings: only the keys whose values changed (null for a key that disappeared). */
	cur_set = json_object_get(current, "settings");
	rep_set = json_object_get(reported, "settings");
	changed = json_object();
	json_object_foreach(cur_set, key, v)
	{
		json_t *old = json_object_get(rep_set, key);

		if (!old || !json_equal(old, v))
			json_object_set(changed, key, v);
	}
	json_object_foreach(rep_set, key, v)
	{
		if (!json_object_get(cur_set, key))
			json_object_set_new(changed, key, json_null());
	}
	if (json_object_size(changed))
		json_object_set(d, "settings", changed);
	json_decref(changed);

	/* Everything else (wifi, root, ca_certificates, ...) is sent whole when it changed. */
	json_object_foreach(current, key, v)
	{
		if (strcmp(key, "apps") == 0 || strcmp(key, "settings") == 0)
			continue;
		if (!json_equal(v, json_object_get(reported, key)))
			json_object_set(d, key, v);
	}
	if (json_object_size(d) == 1) {
		json_decref(d);
		return NULL;
	}
	return d;
}

static int save_doc(const char *dir, json_t *doc, bool durable, bw_error *err)
{
	char *path = bwa_path(dir, "device.json");
	char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
	int rc;

	if (!text) {
		free(path);
		return bw_error_set(err, BW_E_NOMEM, "cannot encode the device state");
	}
	rc = bwa_write_file(path, text, strlen(text), 0600, durable, err);
	free(text);
	free(path);
	return rc;
}

static int write_pem(const char *dir, const char *name, const char *pem, mode_t mode, bool durable, bw_error *err)
{
	char *path = bwa_path(dir, name);
	int rc = bwa_write_file(path, pem, strlen(pem), mode, durable, err);

	free(path);
	return rc;
}

int bwa_state_write_new(const char *dir, const char *server, const char *server_ca_pem, const char *key_pem,
                        json_t *answer, json_t *device, bool durable, bw_error *err)
{
	const char *cert = json_string_value(json_object_get(answer, "certificate"));
	const char *ca = json_string_value(json_object_get(answer, "ca"));
	json_t *doc, *interval = json_object_get(answer, "checkin_interval");
	const char *platform = json_string_value(json_object_get(device, "platform"));
	char *old;
	int rc;

	if ((rc = bwa_mkdir_private(dir, err)) != BW_OK)
		return rc;
	/* A state left by an earlier device is replaced: remove its device.json first, so that a
	 * crash half-way never pairs the old identity with the new key. */
	old = bwa_path(dir, "device.json");
	if (unlink(old) != 0 && errno != ENOENT) {
		rc = bw_error_set(err, BW_E_IO, "cannot remove %s: %s", old, strerror(errno));
		free(old);
		return rc;
	}
	free(old);
	if ((rc = write_pem(dir, "key.pem", key_pem, 0600, durable, err)) != BW_OK ||
	    (rc = write_pem(dir, "cert.pem", cert, 0644, durable, err)) != BW_OK)
		return rc;
	if (ca && (rc = write_pem(dir, "ca.pem", ca, 0644, durable, err)) != BW_OK)
		return rc;
	if (server_ca_pem && (rc = write_pem(dir, "server-ca.pem", server_ca_pem, 0644, durable, err)) != BW_OK)
		return rc;

	doc = json_object();
	json_object_set_new(doc, "format", json_integer(STATE_FORMAT));
	json_object_set(doc, "device_id", json_object_get(answer, "device_id"));
	set_string(doc, "server", server);
	json_object_set_new(doc, "server_ca", server_ca_pem ? json_string("server-ca.pem") : json_null());
	json_object_set_new(doc, "status", json_string("active"));
	json_object_set_new(doc, "enrolled_at", json_integer(bwa_now()));
	json_object_set(doc, "cert_not_after", json_object_get(answer, "not_after"));
	json_object_set_new(doc, "checkin_interval",
	                    json_integer(json_is_integer(interval) ? json_integer_value(interval) : 300));
	json_object_set(doc, "device", device);
	json_object_set(doc, "reported_device", device); /* the server has it from the enrollment */
	json_object_set_new(doc, "inventory", bwa_inventory_new(platform));
	json_object_set_new(doc, "reported_inventory", json_null());
	json_object_set_new(doc, "policy_version", json_null());
	json_object_set_new(doc, "policy_etag", json_null());
	json_object_set_new(doc, "reported_policy_version", json_null());
	json_object_set_new(doc, "pending_results", json_array());
	json_object_set_new(doc, "done_commands", json_array());
	json_object_set_new(doc, "pending_batches", json_array());
	json_object_set_new(doc, "last_batch", json_null());
	json_object_set_new(doc, "last_checkin", json_null());
	rc = save_doc(dir, doc, durable, err);
	json_decref(doc);
	return rc;
}

bool bwa_state_exists(const char *dir)
{
	char *path = bwa_path(dir, "device.json");
	bool ok = access(path, F_OK) == 0;

	free(path);
	return ok;
}

static void ensure(json_t *doc, const char *key, json_t *(*make)(void))
{
	if (!json_object_get(doc, key))
		json_object_set_new(doc, key, make());
}

int bwa_state_load(const char *dir, struct bwa_state *st, bw_error *err)
{
	char *path = bwa_path(dir, "device.json");
	char *text = NULL;
	json_error_t jerr;
	json_t *doc;
	int rc;

	memset(st, 0, sizeof *st);
	rc = bwa_read_file(path, MAX_STATE_FILE, &text, NULL, err);
	if (rc == BW_E_NOTFOUND) {
		bw_error_set(err, rc, "%s holds no enrolled device (no device.json); run bulwark-agent enroll first",
		             dir);
		free(path);
		return rc;
	}
	if (rc != BW_OK) {
		free(path);
		return rc;
	}
	doc = json_loads(text, 0, &jerr);
	free(text);
	if (!json_is_object(doc) || !json_is_string(json_object_get(doc, "device_id")) ||
	    !json_is_string(json_object_get(doc, "server")) || !json_is_object(json_object_get(doc, "inventory"))) {
		rc = bw_error_set(err, BW_E_INVALID, "%s is not a bulwark-agent state file%s%s", path, doc ? "" : ": ",
		                  doc ? "" : jerr.text);
		json_decref(doc);
		free(path);
		return rc;
	}
	free(path);
	ensure(doc, "pending_results", json_array);
	ensure(doc, "done_commands", json_array);
	ensure(doc, "pending_batches", json_array);
	ensure(doc, "device", json_object);
	ensure(doc, "reported_device", json_object);
	st->dir = bwa_xstrdup(dir);
	st->doc = doc;
	return BW_OK;
}

int bwa_state_save(struct bwa_state *st, bw_error *err)
{
	/* The device's memory of results and batch ids must survive a crash: fsync it. */
	return save_doc(st->dir, st->doc, true, err);
}

void bwa_state_free(struct bwa_state *st)
{
	free(st->dir);
	json_decref(st->doc);
	memset(st, 0, sizeof *st);
}
