/* host/policy/policy_catalog.c: the feature-lock catalog: every lockable device feature with the platforms it
 * applies to, the first OS version that supports it and, for iOS, whether it needs a supervised device. The
 * API returns it as hints for the console (docs/policies.md has the same table). */
#include "policy_doc.h"

#include <string.h>

struct feature {
	const char *id;
	const char *label;
	const char *android_min; /* NULL: not available on Android */
	const char *ios_min;     /* NULL: not available on iOS */
	bool ios_supervised;
	const char *note; /* NULL or a short hint */
};

/* Android minimums are the API level of the DevicePolicyManager / UserManager restriction; iOS ones those of
 * the Restrictions payload key. iOS 13 moved several restrictions to supervised-only (marked in the note). */
static const struct feature features[] = {
    {"camera", "Camera", "5.0", "4.0", false, NULL},
    {"bluetooth", "Bluetooth", "8.0", "10.0", true, "iOS: blocks changing Bluetooth settings"},
    {"wifi", "Wi-Fi settings", "5.0", "13.0", true, "iOS: keeps Wi-Fi switched on"},
    {"screen_capture", "Screen capture and recording", "5.0", "9.0", false, NULL},
    {"usb_storage", "USB storage and file transfer", "5.0", "13.0", true, "iOS: Files app access to USB drives"},
    {"sd_card", "External storage (SD card)", "5.0", NULL, false, NULL},
    {"tethering", "Tethering and personal hotspot", "5.0", "12.2", true, NULL},
    {"microphone", "Microphone", "5.0", NULL, false, NULL},
    {"location", "Location settings", "9.0", NULL, false, NULL},
    {"nfc", "NFC", "5.0", "14.2", true, NULL},
    {"app_installation", "App installation", "5.0", "13.0", true, "iOS 13 made this restriction supervised-only"},
    {"app_removal", "App removal", "5.0", "6.0", true, NULL},
    {"unknown_sources", "Apps from unknown sources", "5.0", NULL, false, NULL},
    {"developer_options", "Developer options and USB debugging", "5.0", NULL, false, NULL},
    {"factory_reset", "Factory reset (erase all content)", "5.1", "8.0", true, NULL},
    {"vpn_configuration", "VPN configuration", "5.0", "11.0", true, NULL},
    {"account_modification", "Account changes", "5.0", "7.0", true, NULL},
    {"mobile_data_settings", "Mobile data settings", "5.0", "7.0", true, NULL},
    {"data_roaming", "Data roaming", "7.0", NULL, false, NULL},
    {"airdrop", "AirDrop", NULL, "7.0", true, NULL},
    {"host_pairing", "Pairing with computers", NULL, "7.0", true, NULL},
    {"cloud_backup", "Cloud backup", NULL, "5.0", false, NULL},
    {"siri", "Siri", NULL, "5.0", false, NULL},
    {"in_app_purchases", "In-app purchases", NULL, "4.0", false, NULL},
    {"web_browser", "Safari", NULL, "13.0", true, "iOS 13 made this restriction supervised-only"},
    {"video_calls", "FaceTime", NULL, "13.0", true, "iOS 13 made this restriction supervised-only"},
    {"itunes_store", "iTunes Store", NULL, "13.0", true, "iOS 13 made this restriction supervised-only"},
};

json_t *bw_policy_feature_catalog(void)
{
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	for (size_t i = 0; i < sizeof features / sizeof features[0]; i++) {
		const struct feature *f = &features[i];
		json_t *plat = json_object();
		if (f->android_min)
			json_object_set_new(plat, "android", json_pack("{s:s}", "min_os", f->android_min));
		if (f->ios_min)
			json_object_set_new(
			    plat, "ios",
			    json_pack("{s:s, s:b}", "min_os", f->ios_min, "supervised", f->ios_supervised));
		json_t *item = json_pack("{s:s, s:s, s:o}", "id", f->id, "label", f->label, "platforms", plat);
		if (item && f->note)
			json_object_set_new(item, "note", json_string(f->note));
		if (!item || json_array_append_new(arr, item) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

bool bw_policy_feature_known(const char *id)
{
	if (!id)
		return false;
	for (size_t i = 0; i < sizeof features / sizeof features[0]; i++)
		if (strcmp(features[i].id, id) == 0)
			return true;
	return false;
}
