/* tests/unit/test_policy_doc.c: the policy document (host/policy/policy_*.c): table-driven good and bad entries
 * for every section, URL/host, phone and package-id normalisation, error collection and its cap, defaults,
 * merge, completion, the feature-lock catalog, the secrets forms (protect, redact, device) and diffs. */
#include "testutil.h"

#include "policy_doc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *text)
{
	json_error_t je;
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
	if (!v)
		fail_msg("bad test JSON (%s): %s", je.text, text);
	return v;
}

static char *dump(json_t *v)
{
	return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_SORT_KEYS);
}

/* ---- URL / host entries ---- */

struct norm_case {
	const char *in;
	const char *want; /* normalised form, or NULL: refused */
	const char *why;  /* substring of the reason when refused */
};

static const struct norm_case url_cases[] = {
    /* hosts */
    {"example.com", "example.com", NULL},
    {"EXAMPLE.Com", "example.com", NULL},
    {"example.com.", "example.com", NULL},
    {"sub.example.co.uk", "sub.example.co.uk", NULL},
    {"localhost", "localhost", NULL},
    {"xn--bcher-kva.example", "xn--bcher-kva.example", NULL},
    {"bücher.example", "bücher.example", NULL},
    {"my_host.corp.example", "my_host.corp.example", NULL},
    {"a-b.example", "a-b.example", NULL},
    {"*.example.com", "*.example.com", NULL},
    {"*.EXAMPLE.com:8443", "*.example.com:8443", NULL},
    {"https://*.example.com/login", "https://*.example.com/login", NULL},
    /* URLs with scheme, port, path, query */
    {"http://example.com", "http://example.com", NULL},
    {"HTTP://Example.COM/Path/To?Q=1", "http://example.com/Path/To?Q=1", NULL},
    {"https://example.com:443/", "https://example.com", NULL},
    {"http://example.com:80/a", "http://example.com/a", NULL},
    {"https://example.com:8443/a", "https://example.com:8443/a", NULL},
    {"http://example.com:443/", "http://example.com:443", NULL},
    {"example.com:8080", "example.com:8080", NULL},
    {"example.com/path", "example.com/path", NULL},
    {"example.com/", "example.com", NULL},
    {"example.com?x=1&y=2", "example.com?x=1&y=2", NULL},
    {"example.com/a#frag", "example.com/a", NULL},
    {"https://example.com/a%20b", "https://example.com/a%20b", NULL},
    {"https://example.com/r?u=http://evil.example/", "https://example.com/r?u=http://evil.example/", NULL},
    {"example.com/a://b", "example.com/a://b", NULL},
    {"https://example.com/日本", "https://example.com/日本", NULL},
    /* IPv4 */
    {"192.0.2.1", "192.0.2.1", NULL},
    {"http://192.0.2.1:8080/x", "http://192.0.2.1:8080/x", NULL},
    {"0.0.0.0", "0.0.0.0", NULL},
    {"255.255.255.255", "255.255.255.255", NULL},
    /* IPv6, bare and bracketed */
    {"::1", "[::1]", NULL},
    {"2001:DB8::1", "[2001:db8::1]", NULL},
    {"2001:db8:0:0:0:0:0:1", "[2001:db8::1]", NULL},
    {"[::1]", "[::1]", NULL},
    {"[2001:db8::1]:8443", "[2001:db8::1]:8443", NULL},
    {"http://[2001:db8::1]/path", "http://[2001:db8::1]/path", NULL},
    {"https://[::ffff:192.0.2.1]:443/", "https://[::ffff:192.0.2.1]", NULL},
    /* refused */
    {"", NULL, "empty"},
    {"exa mple.com", NULL, "space"},
    {" example.com", NULL, "space"},
    {"example.com\t", NULL, "control"},
    {"example.com\x01", NULL, "control"},
    {"ftp://example.com", NULL, "unsupported scheme \"ftp\""},
    {"javascript://x", NULL, "unsupported scheme"},
    {"file:///etc/passwd", NULL, "unsupported scheme"},
    {"1http://example.com", NULL, "bad scheme"},
    {"http://", NULL, "empty host"},
    {"http:///path", NULL, "empty host"},
    {"example..com", NULL, "empty label"},
    {".example.com", NULL, "empty label"},
    {"example.com..", NULL, "empty label"},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", NULL, "longer than 63"},
    {"-example.com", NULL, "hyphen"},
    {"example-.com", NULL, "hyphen"},
    {"exa!mple.com", NULL, "invalid character '!'"},
    {"example.com:0", NULL, "bad port"},
    {"example.com:65536", NULL, "bad port"},
    {"example.com:", NULL, "bad port"},
    {"example.com:http", NULL, "bad port"},
    {"example.com:123456", NULL, "bad port"},
    {"http://example.com:-1/", NULL, "bad port"},
    {"www.*.example.com", NULL, "wildcard"},
    {"*example.com", NULL, "wildcard"},
    {"foo*.example.com", NULL, "wildcard"},
    {"*", NULL, "wildcard"},
    {"*.*.example.com", NULL, "wildcard"},
    {"*.192.0.2.1", NULL, "wildcard"},
    {"256.1.1.1", NULL, "IPv4"},
    {"1.2.3", NULL, "IPv4"},
    {"1.2.3.4.5", NULL, "IPv4"},
    {"01.2.3.4", NULL, "IPv4"},
    {"example.123", NULL, "IPv4"},
    {"2001:db8::g", NULL, "IPv6"},
    {"1:2:3:4:5:6:7:8:9", NULL, "IPv6"},
    {"[2001:db8::1", NULL, "missing ']'"},
    {"[example.com]", NULL, "IPv6"},
    {"[::1]x", NULL, "after ']'"},
    {"[::1]:99999", NULL, "bad port"},
    {"http://::1/", NULL, "brackets"},
    {"::1/path", NULL, "brackets"},
    {"[fe80::1%eth0]", NULL, "zone"},
    {"user:pw@example.com", NULL, "user"},
    {"http://user@example.com/", NULL, "user"},
    {"example.com/a b", NULL, "space"},
    {"example.com/<script>", NULL, "invalid character '<'"},
    {"example.com/a%zz", NULL, "percent"},
    {"example.com/a%2", NULL, "percent"},
    {"exa\\mple.com", NULL, "invalid character"},
    {"\xff\xfe.example", NULL, "UTF-8"},
    {"http//example.com", NULL, "scheme missing"},
};

static void test_url_entries(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof url_cases / sizeof url_cases[0]; i++) {
		const struct norm_case *t = &url_cases[i];
		char why[200] = "", *out = NULL;
		int rc = bw_policy_url_normalize(t->in, &out, why, sizeof why);
		if (t->want) {
			if (rc != BW_OK)
				fail_msg("URL entry \"%s\" refused: %s", t->in, why);
			if (strcmp(out, t->want) != 0)
				fail_msg("URL entry \"%s\" -> \"%s\", want \"%s\"", t->in, out, t->want);
			/* normalising is idempotent */
			char *again = NULL;
			assert_int_equal(bw_policy_url_normalize(out, &again, why, sizeof why), BW_OK);
			assert_string_equal(again, out);
			free(again);
		} else {
			if (rc == BW_OK)
				fail_msg("bad URL entry \"%s\" accepted as \"%s\"", t->in, out);
			if (!strstr(why, t->why))
				fail_msg("URL entry \"%s\": reason \"%s\" lacks \"%s\"", t->in, why, t->why);
			assert_null(out);
		}
		free(out);
	}
}

static void test_url_limits(void **state)
{
	(void)state;
	char why[200], *out = NULL;
	/* host of exactly 253 bytes passes, 254 does not */
	char host[300] = "";
	for (int i = 0; i < 3; i++) {
		memset(host + strlen(host), 'a', 63);
		strcat(host, ".");
	}
	memset(host + strlen(host), 'b', 61);
	assert_int_equal(strlen(host), 253);
	assert_int_equal(bw_policy_url_normalize(host, &out, why, sizeof why), BW_OK);
	free(out);
	strcat(host, "d");
	assert_int_equal(bw_policy_url_normalize(host, &out, why, sizeof why), BW_E_INVALID);
	assert_non_null(strstr(why, "253"));
	/* a label of exactly 63 passes */
	char lab[80];
	memset(lab, 'x', 63);
	strcpy(lab + 63, ".example");
	assert_int_equal(bw_policy_url_normalize(lab, &out, why, sizeof why), BW_OK);
	free(out);
	/* over-long entries */
	char *big = malloc(3000);
	strcpy(big, "https://example.com/");
	memset(big + 20, 'p', 2500);
	big[2520] = '\0';
	assert_int_equal(bw_policy_url_normalize(big, &out, why, sizeof why), BW_E_INVALID);
	assert_non_null(strstr(why, "2048"));
	free(big);
	assert_int_equal(bw_policy_url_normalize(NULL, &out, why, sizeof why), BW_E_INVALID);
}

static const struct norm_case phone_cases[] = {
    {"+81 90-1234-5678", "+819012345678", NULL},
    {"(03) 1234.5678", "0312345678", NULL},
    {"110", "110", NULL},
    {"+8190*", "+8190*", NULL},
    {"0120*", "0120*", NULL},
    {"AMAZON", "AMAZON", NULL},
    {"Bank-JP", "Bank-JP", NULL},
    {"", NULL, "empty"},
    {"12", NULL, "fewer than 3"},
    {"123456789012345678901", NULL, "more than 20"},
    {"+81+90", NULL, "'+'"},
    {"81*90", NULL, "'*'"},
    {"*", NULL, "no digits"},
    {"090#1234", NULL, "invalid character '#'"},
    {" 0901234", NULL, "space"},
    {"0901\n234", NULL, "control"},
    {"THIS-SENDER-IS-TOO-LONG", NULL, "longer than 20"},
    {"Shop!", NULL, "invalid character '!'"},
};

static void test_phone_entries(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof phone_cases / sizeof phone_cases[0]; i++) {
		const struct norm_case *t = &phone_cases[i];
		char why[200] = "", *out = NULL;
		int rc = bw_policy_phone_normalize(t->in, true, &out, why, sizeof why);
		if (t->want) {
			if (rc != BW_OK)
				fail_msg("sender \"%s\" refused: %s", t->in, why);
			assert_string_equal(out, t->want);
		} else {
			if (rc == BW_OK)
				fail_msg("bad sender \"%s\" accepted as \"%s\"", t->in, out);
			if (!strstr(why, t->why))
				fail_msg("sender \"%s\": reason \"%s\" lacks \"%s\"", t->in, why, t->why);
		}
		free(out);
	}
	char why[200], *out = NULL;
	assert_int_equal(bw_policy_phone_normalize("AMAZON", false, &out, why, sizeof why), BW_E_INVALID);
	assert_non_null(strstr(why, "letters"));
}

static void test_package_ids(void **state)
{
	(void)state;
	static const char *const good[] = {"com.example.app", "jp.co.example.mobile_2", "com.apple.mobilesafari",
	                                   "com.example.my-app", "a.b"};
	static const struct {
		const char *id, *why;
	} bad[] = {{"", "empty"},
	           {"app", "two segments"},
	           {"com..example", "empty segment"},
	           {".com.example", "empty segment"},
	           {"com.example.", "empty segment"},
	           {"com.exa mple", "invalid character ' '"},
	           {"com/example", "invalid character '/'"},
	           {"com.example.*", "invalid character '*'"}};
	char why[200];
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (!bw_policy_package_id_valid(good[i], why, sizeof why))
			fail_msg("package id %s refused: %s", good[i], why);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (bw_policy_package_id_valid(bad[i].id, why, sizeof why))
			fail_msg("bad package id \"%s\" accepted", bad[i].id);
		if (!strstr(why, bad[i].why))
			fail_msg("package id \"%s\": reason \"%s\" lacks \"%s\"", bad[i].id, why, bad[i].why);
	}
	char longid[300];
	memset(longid, 'a', 256);
	longid[3] = '.';
	longid[256] = '\0';
	assert_false(bw_policy_package_id_valid(longid, why, sizeof why));
}

/* ---- section documents ---- */

struct doc_case {
	const char *doc;
	const char *field; /* NULL: valid; else the field path of the (first) error */
	const char *msg;   /* substring of that error's message */
	const char *entry; /* NULL or the expected "entry" text */
};

static const struct doc_case doc_cases[] = {
    /* whole document */
    {"{}", NULL, NULL, NULL},
    {"[]", "", "must be a JSON object", NULL},
    {"{\"bogus\": {}}", "bogus", "unknown section", "bogus"},
    {"{\"password\": 3}", "password", "must be an object", "3"},

    /* malware_scan */
    {"{\"malware_scan\": {\"realtime\": false}}", NULL, NULL, NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"frequency\": \"daily\", \"time\": \"23:59\"}}}", NULL,
     NULL, NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"frequency\": \"weekly\", \"time\": \"00:00\","
     " \"days\": [\"sun\", \"mon\"], \"scope\": \"apps_only\"}}}",
     NULL, NULL, NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": false}}}", NULL, NULL, NULL},
    {"{\"malware_scan\": {\"realtime\": \"yes\"}}", "malware_scan.realtime", "true or false", "yes"},
    {"{\"malware_scan\": {\"turbo\": true}}", "malware_scan.turbo", "unknown field", "turbo"},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"time\": \"02:00\"}}}",
     "malware_scan.scheduled.frequency", "required when scheduled scans are enabled", ""},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"frequency\": \"daily\"}}}",
     "malware_scan.scheduled.time", "required", ""},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"frequency\": \"weekly\", \"time\": \"01:00\"}}}",
     "malware_scan.scheduled.days", "at least one day", NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"frequency\": \"weekly\", \"time\": \"01:00\","
     " \"days\": []}}}",
     "malware_scan.scheduled.days", "at least one day", "[]"},
    {"{\"malware_scan\": {\"scheduled\": {\"enabled\": false, \"frequency\": \"weekly\", \"days\": []}}}",
     "malware_scan.scheduled.days", "at least one day", NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"frequency\": \"daily\", \"days\": [\"mon\"]}}}",
     "malware_scan.scheduled.days", "only to weekly", NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"frequency\": \"weekly\", \"days\": [\"mon\", \"mon\"]}}}",
     "malware_scan.scheduled.days[1]", "duplicate", "mon"},
    {"{\"malware_scan\": {\"scheduled\": {\"frequency\": \"weekly\", \"days\": [\"monday\"]}}}",
     "malware_scan.scheduled.days[0]", "must be a day", "monday"},
    {"{\"malware_scan\": {\"scheduled\": {\"frequency\": \"monthly\"}}}", "malware_scan.scheduled.frequency",
     "one of: daily, weekly", "monthly"},
    {"{\"malware_scan\": {\"scheduled\": {\"time\": \"24:00\"}}}", "malware_scan.scheduled.time", "00:00 to 23:59",
     "24:00"},
    {"{\"malware_scan\": {\"scheduled\": {\"time\": \"12:60\"}}}", "malware_scan.scheduled.time", "HH:MM", NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"time\": \"1200\"}}}", "malware_scan.scheduled.time", "HH:MM", NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"time\": \"12:5\"}}}", "malware_scan.scheduled.time", "HH:MM", NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"time\": \"-1:00\"}}}", "malware_scan.scheduled.time", "HH:MM", NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"time\": 1200}}}", "malware_scan.scheduled.time", "HH:MM", "1200"},
    {"{\"malware_scan\": {\"scheduled\": {\"scope\": \"everything\"}}}", "malware_scan.scheduled.scope", "one of",
     NULL},
    {"{\"malware_scan\": {\"scheduled\": {\"days\": \"mon\"}}}", "malware_scan.scheduled.days", "array", NULL},

    /* web_protection */
    {"{\"web_protection\": {\"enabled\": true, \"level\": \"high\", \"lists\": {\"android\": {\"block\": "
     "[\"evil.example\", \"*.phish.example\", \"http://[2001:db8::1]:8080/x\", \"192.0.2.1\", \"::1\"], "
     "\"allow\": [\"https://intranet.example/\"]}, \"ios\": {\"block\": [\"https://evil.example/path?q=1\"]}}}}",
     NULL, NULL, NULL},
    {"{\"web_protection\": {\"level\": \"extreme\"}}", "web_protection.level", "low, medium, high", "extreme"},
    {"{\"web_protection\": {\"lists\": {\"windows\": {}}}}", "web_protection.lists.windows", "unknown field", NULL},
    {"{\"web_protection\": {\"lists\": {\"ios\": {\"block\": [\"ok.example\", \"bad..example\"]}}}}",
     "web_protection.lists.ios.block[1]", "empty label", "bad..example"},
    {"{\"web_protection\": {\"lists\": {\"android\": {\"allow\": [\"ftp://x.example\"]}}}}",
     "web_protection.lists.android.allow[0]", "unsupported scheme", "ftp://x.example"},
    {"{\"web_protection\": {\"lists\": {\"android\": {\"block\": [42]}}}}", "web_protection.lists.android.block[0]",
     "must be a string", "42"},
    {"{\"web_protection\": {\"lists\": {\"android\": {\"block\": [\"a.example\"], \"allow\": [\"A.example\"]}}}}",
     "web_protection.lists.android.allow[0]", "also in the block list", "A.example"},
    {"{\"web_protection\": {\"lists\": {\"android\": {\"block\": \"a.example\"}}}}",
     "web_protection.lists.android.block", "array", NULL},

    /* sms_filter */
    {"{\"sms_filter\": {\"enabled\": true, \"mode\": \"allow_list\", \"senders\": [\"+81 90 1234 5678\", "
     "\"AMAZON\", \"0120*\"]}}",
     NULL, NULL, NULL},
    {"{\"sms_filter\": {\"mode\": \"whitelist\"}}", "sms_filter.mode", "block_list, allow_list", "whitelist"},
    {"{\"sms_filter\": {\"senders\": [\"+81+3\"]}}", "sms_filter.senders[0]", "'+'", "+81+3"},
    {"{\"sms_filter\": {\"senders\": [\"ok1234\", \"\"]}}", "sms_filter.senders[1]", "empty", ""},
    {"{\"sms_filter\": {\"senders\": [\"123\\u00004\"]}}", "sms_filter.senders[0]", "NUL", "123"},
    {"{\"sms_filter\": {\"senders\": [\"123\\n4\"]}}", "sms_filter.senders[0]", "control", "123\n4"},
    {"{\"web_protection\": {\"lists\": {\"ios\": {\"allow\": [\"a.example\\u0000.evil\"]}}}}",
     "web_protection.lists.ios.allow[0]", "NUL", NULL},

    /* call_filter */
    {"{\"call_filter\": {\"enabled\": true, \"mode\": \"block_list\", \"numbers\": [\"03-1234-5678\"], "
     "\"block_unknown\": true}}",
     NULL, NULL, NULL},
    {"{\"call_filter\": {\"numbers\": [\"CALLME\"]}}", "call_filter.numbers[0]", "letters", "CALLME"},
    {"{\"call_filter\": {\"block_unknown\": 1}}", "call_filter.block_unknown", "true or false", "1"},
    {"{\"call_filter\": {\"mode\": \"block\"}}", "call_filter.mode", "one of", "block"},

    /* password */
    {"{\"password\": {\"required\": true, \"min_length\": 8, \"complexity\": {\"lower\": true, \"upper\": true, "
     "\"digit\": true, \"symbol\": true}, \"min_classes\": 3, \"max_failed_attempts\": 5, \"failed_action\": "
     "\"wipe\", \"auto_lock_minutes\": 1440, \"history\": 50}}",
     NULL, NULL, NULL},
    {"{\"password\": {\"min_length\": 4, \"max_failed_attempts\": 0, \"auto_lock_minutes\": 0, \"history\": 0}}", NULL,
     NULL, NULL},
    {"{\"password\": {\"min_length\": 3}}", "password.min_length", "4 to 64", "3"},
    {"{\"password\": {\"min_length\": 65}}", "password.min_length", "4 to 64", "65"},
    {"{\"password\": {\"min_length\": 6.5}}", "password.min_length", "integer", "6.5"},
    {"{\"password\": {\"min_classes\": 5}}", "password.min_classes", "0 to 4", "5"},
    {"{\"password\": {\"max_failed_attempts\": 101}}", "password.max_failed_attempts", "0 to 100", "101"},
    {"{\"password\": {\"auto_lock_minutes\": 1441}}", "password.auto_lock_minutes", "0 to 1440", NULL},
    {"{\"password\": {\"history\": -1}}", "password.history", "0 to 50", "-1"},
    {"{\"password\": {\"failed_action\": \"explode\"}}", "password.failed_action", "lock, wipe", NULL},
    {"{\"password\": {\"failed_action\": \"wipe\", \"max_failed_attempts\": 0}}", "password.max_failed_attempts",
     "wipe", "0"},
    {"{\"password\": {\"complexity\": {\"emoji\": true}}}", "password.complexity.emoji", "unknown field", NULL},
    {"{\"password\": {\"complexity\": {\"lower\": \"yes\"}}}", "password.complexity.lower", "true or false", NULL},

    /* uninstall_protection */
    {"{\"uninstall_protection\": {\"enabled\": true, \"password\": \"rem0ve-me\"}}", NULL, NULL, NULL},
    {"{\"uninstall_protection\": {\"enabled\": true, \"password_set\": true}}", NULL, NULL, NULL},
    {"{\"uninstall_protection\": {\"enabled\": false}}", NULL, NULL, NULL},
    {"{\"uninstall_protection\": {\"enabled\": true}}", "uninstall_protection.password", "required", ""},
    {"{\"uninstall_protection\": {\"password\": \"abc\"}}", "uninstall_protection.password", "4 to 64", "(hidden)"},
    {"{\"uninstall_protection\": {\"password\": 1234}}", "uninstall_protection.password", "string", "(hidden)"},
    {"{\"uninstall_protection\": {\"password\": \"tab\\tbed\"}}", "uninstall_protection.password", "control",
     "(hidden)"},
    {"{\"uninstall_protection\": {\"verifier\": {}}}", "uninstall_protection.verifier", "unknown field", NULL},
    {"{\"uninstall_protection\": \"my-Secret\"}", "uninstall_protection", "object", "(hidden)"},
    {"{\"wifi\": {\"networks\": [\"my-Secret\"]}}", "wifi.networks[0]", "object", "(hidden)"},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_enterprise\", \"eap\": \"pw\"}]}}",
     "wifi.networks[0].eap", "object", "(hidden)"},

    /* feature_lock */
    {"{\"feature_lock\": {\"items\": {\"camera\": \"block\", \"bluetooth\": \"allow\", \"usb_storage\": "
     "\"block\"}}}",
     NULL, NULL, NULL},
    {"{\"feature_lock\": {\"items\": {\"teleport\": \"block\"}}}", "feature_lock.items.teleport", "unknown feature",
     "teleport"},
    {"{\"feature_lock\": {\"items\": {\"camera\": \"off\"}}}", "feature_lock.items.camera", "\"block\" or", "off"},
    {"{\"feature_lock\": {\"items\": [\"camera\"]}}", "feature_lock.items", "object", NULL},

    /* wifi */
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"Guest\", \"security\": \"open\"}, {\"ssid\": \"Corp\", "
     "\"hidden\": true, \"security\": \"wpa2_personal\", \"password\": \"correct horse\"}, {\"ssid\": \"Hex\", "
     "\"security\": \"wpa3_personal\", \"password\": "
     "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}, {\"ssid\": \"Ent\", \"security\": "
     "\"wpa2_enterprise\", \"eap\": {\"method\": \"peap\", \"identity\": \"alice\", \"password\": \"pw\"}}, "
     "{\"ssid\": \"EntTLS\", \"security\": \"wpa3_enterprise\", \"eap\": {\"method\": \"tls\", \"identity\": "
     "\"dev1\"}}]}}",
     NULL, NULL, NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"Corp\", \"security\": \"wpa2_personal\", \"password_set\": true}]}}",
     NULL, NULL, NULL},
    {"{\"wifi\": {\"networks\": [{\"security\": \"open\"}]}}", "wifi.networks[0].ssid", "required", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"\", \"security\": \"open\"}]}}", "wifi.networks[0].ssid", "1 to 32",
     NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"123456789012345678901234567890123\", \"security\": \"open\"}]}}",
     "wifi.networks[0].ssid", "1 to 32", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\"}]}}", "wifi.networks[0].security", "required", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wep\"}]}}", "wifi.networks[0].security", "one of",
     "wep"},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_personal\"}]}}", "wifi.networks[0].password",
     "required", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_personal\", \"password\": \"short\"}]}}",
     "wifi.networks[0].password", "8 to 63", "(hidden)"},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_personal\", \"password\": "
     "\"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeXX\"}]}}",
     "wifi.networks[0].password", "64 hex", "(hidden)"},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"open\", \"password\": \"12345678\"}]}}",
     "wifi.networks[0].password", "not used", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_enterprise\"}]}}", "wifi.networks[0].eap",
     "required", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_enterprise\", \"eap\": {\"method\": "
     "\"peap\", \"identity\": \"a\"}}]}}",
     "wifi.networks[0].eap.password", "required for EAP-PEAP", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_enterprise\", \"eap\": {\"method\": "
     "\"tls\", \"identity\": \"a\", \"password\": \"x\"}}]}}",
     "wifi.networks[0].eap.password", "client certificate", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_enterprise\", \"eap\": {\"method\": "
     "\"md5\", \"identity\": \"a\"}}]}}",
     "wifi.networks[0].eap.method", "one of", "md5"},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_enterprise\", \"eap\": {\"method\": "
     "\"ttls\", \"password\": \"x\"}}]}}",
     "wifi.networks[0].eap.identity", "required", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_personal\", \"password\": \"12345678\", "
     "\"eap\": {\"method\": \"tls\", \"identity\": \"a\"}}]}}",
     "wifi.networks[0].eap", "only used with enterprise", NULL},
    {"{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"open\"}, {\"ssid\": \"A\", \"security\": "
     "\"open\"}]}}",
     "wifi.networks[1].ssid", "duplicate SSID", "A"},

    /* app_control */
    {"{\"app_control\": {\"enabled\": false, \"allowed\": [\"com.example.mail\"], \"blocked\": "
     "[\"com.bad.game\"], \"required\": [\"com.example.vpn\"]}}",
     NULL, NULL, NULL},
    {"{\"app_control\": {\"enabled\": false, \"blocked\": [\"not a package\"]}}", "app_control.blocked[0]",
     "invalid character", "not a package"},
    {"{\"app_control\": {\"enabled\": \"false\"}}", "app_control.enabled", "true or false", "false"},
    {"{\"app_control\": {\"allowed\": [\"com.x.y\"], \"blocked\": [\"com.x.y\"]}}", "app_control.blocked[0]",
     "also in the allowed list", "com.x.y"},
    {"{\"app_control\": {\"required\": [\"com.x.y\"], \"blocked\": [\"com.x.y\"]}}", "app_control.blocked[0]",
     "also in the required list", "com.x.y"},

    /* updates */
    {"{\"updates\": {\"patterns\": {\"mode\": \"scheduled\", \"frequency\": \"weekly\", \"time\": \"03:30\", "
     "\"days\": [\"sat\"], \"window_minutes\": 120}, \"agent\": {\"mode\": \"manual\"}}}",
     NULL, NULL, NULL},
    {"{\"updates\": {\"patterns\": {\"mode\": \"scheduled\", \"frequency\": \"daily\"}}}", "updates.patterns.time",
     "required when mode is scheduled", NULL},
    {"{\"updates\": {\"agent\": {\"mode\": \"auto\"}}}", "updates.agent.mode", "scheduled, manual", "auto"},
    {"{\"updates\": {\"agent\": {\"window_minutes\": 1441}}}", "updates.agent.window_minutes", "0 to 1440", NULL},
    {"{\"updates\": {\"policies\": {}}}", "updates.policies", "unknown field", NULL},

    /* privacy */
    {"{\"privacy\": {\"ios_malicious_profile_scan\": true}}", NULL, NULL, NULL},
    {"{\"privacy\": {\"ios_malicious_profile_scan\": null}}", "privacy.ios_malicious_profile_scan", "true or false",
     "null"},
    {"{\"privacy\": {\"share_location\": true}}", "privacy.share_location", "unknown field", NULL},
};

static void test_sections_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof doc_cases / sizeof doc_cases[0]; i++) {
		const struct doc_case *t = &doc_cases[i];
		json_t *doc = parse(t->doc), *out = NULL, *errors = NULL;
		bw_error err = {0};
		int rc = bw_policy_validate(doc, &out, &errors, &err);
		if (!t->field) {
			if (rc != BW_OK) {
				char *d = dump(errors);
				fail_msg("case %zu refused: %s\n  doc: %s\n  errors: %s", i, err.message, t->doc, d);
			}
			assert_null(errors);
			assert_true(json_is_object(out));
			/* the output validates again and is stable */
			json_t *out2 = NULL;
			assert_int_equal(bw_policy_validate(out, &out2, NULL, &err), BW_OK);
			assert_true(json_equal(out, out2));
			json_decref(out2);
		} else {
			if (rc != BW_E_INVALID)
				fail_msg("case %zu accepted: %s", i, t->doc);
			assert_null(out);
			assert_true(json_array_size(errors) >= 1);
			json_t *e0 = json_array_get(errors, 0);
			const char *field = json_string_value(json_object_get(e0, "field"));
			const char *msg = json_string_value(json_object_get(e0, "message"));
			const char *entry = json_string_value(json_object_get(e0, "entry"));
			assert_non_null(entry);
			if (strcmp(field, t->field) != 0 || !strstr(msg, t->msg) ||
			    (t->entry && strcmp(entry, t->entry) != 0)) {
				char *d = dump(errors);
				fail_msg("case %zu: %s\n  want field %s, message ~%s, entry %s\n  got %s", i, t->doc,
				         t->field, t->msg, t->entry ? t->entry : "(any)", d);
			}
			assert_non_null(strstr(err.message, t->field));
		}
		json_decref(out);
		json_decref(errors);
		json_decref(doc);
	}
}

static void test_normalisation(void **state)
{
	(void)state;
	json_t *doc = parse("{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"frequency\": \"weekly\","
	                    " \"time\": \"7:05\", \"days\": [\"sun\", \"wed\", \"mon\"]}},"
	                    " \"web_protection\": {\"lists\": {\"ios\": {\"block\": [\"HTTPS://Evil.Example:443/\","
	                    " \"evil.example\", \"https://evil.example\", \"::1\", \"[::1]\"]}}},"
	                    " \"sms_filter\": {\"senders\": [\"+81 3 1234\", \"+8131234\"]},"
	                    " \"app_control\": {\"enabled\": false, \"allowed\": [\"com.a.b\", \"com.a.b\"]}}");
	json_t *out = NULL, *errors = NULL;
	bw_error err = {0};
	assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_OK);
	char *d = dump(out);
	json_t *want =
	    parse("{\"app_control\": {\"allowed\": [\"com.a.b\"], \"enabled\": false},"
	          " \"malware_scan\": {\"scheduled\": {\"days\": [\"mon\", \"wed\", \"sun\"], \"enabled\": true,"
	          " \"frequency\": \"weekly\", \"time\": \"07:05\"}},"
	          " \"sms_filter\": {\"senders\": [\"+8131234\"]},"
	          " \"web_protection\": {\"lists\": {\"ios\": {\"block\": [\"https://evil.example\","
	          " \"evil.example\", \"[::1]\"]}}}}");
	char *w = dump(want);
	assert_string_equal(d, w);
	/* defaults are NOT filled in by validation */
	assert_null(json_object_get(out, "password"));
	assert_null(json_object_get(json_object_get(out, "web_protection"), "level"));
	free(d);
	free(w);
	json_decref(want);
	json_decref(out);
	json_decref(doc);
}

static void test_errors_collected_and_capped(void **state)
{
	(void)state;
	/* every bad entry is reported, each with its own path */
	json_t *doc = parse("{\"web_protection\": {\"lists\": {\"android\": {\"block\": [\"good.example\", \"bad..x\","
	                    " \"also good.example\", \"ok.example\", \"x:0\"]}}}, \"password\": {\"min_length\": 1},"
	                    " \"nope\": 1}");
	json_t *out = NULL, *errors = NULL;
	bw_error err = {0};
	assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_E_INVALID);
	assert_int_equal(json_array_size(errors), 5);
	const char *fields[5];
	for (size_t i = 0; i < 5; i++)
		fields[i] = json_string_value(json_object_get(json_array_get(errors, i), "field"));
	assert_string_equal(fields[0], "web_protection.lists.android.block[1]");
	assert_string_equal(fields[1], "web_protection.lists.android.block[2]");
	assert_string_equal(fields[2], "web_protection.lists.android.block[4]");
	assert_string_equal(fields[3], "password.min_length");
	assert_string_equal(fields[4], "nope");
	assert_non_null(strstr(err.message, "5 errors"));
	json_decref(errors);
	json_decref(doc);

	/* 300 bad entries: 100 listed, the count is in the message */
	json_t *list = json_array();
	for (int i = 0; i < 300; i++) {
		char e[32];
		snprintf(e, sizeof e, "bad%d..example", i);
		json_array_append_new(list, json_string(e));
	}
	doc = json_pack("{s:{s:{s:{s:o}}}}", "web_protection", "lists", "ios", "block", list);
	assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_E_INVALID);
	assert_int_equal(json_array_size(errors), BW_POLICY_MAX_ERRORS);
	assert_non_null(strstr(err.message, "300 errors"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(errors, 99), "entry")), "bad99..example");
	json_decref(errors);
	json_decref(doc);

	/* list size limits */
	list = json_array();
	for (int i = 0; i < 5001; i++)
		json_array_append_new(list, json_string("x.example"));
	doc = json_pack("{s:{s:{s:{s:o}}}}", "web_protection", "lists", "android", "allow", list);
	assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_E_INVALID);
	assert_int_equal(json_array_size(errors), 1);
	assert_non_null(
	    strstr(json_string_value(json_object_get(json_array_get(errors, 0), "message")), "at most 5000"));
	json_decref(errors);
	json_decref(doc);

	/* 5000 distinct entries pass */
	list = json_array();
	for (int i = 0; i < 5000; i++) {
		char e[32];
		snprintf(e, sizeof e, "h%d.example", i);
		json_array_append_new(list, json_string(e));
	}
	doc = json_pack("{s:{s:{s:{s:o}}}}", "web_protection", "lists", "android", "block", list);
	assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_OK);
	assert_int_equal(
	    json_array_size(json_object_get(
	        json_object_get(json_object_get(json_object_get(out, "web_protection"), "lists"), "android"), "block")),
	    5000);
	json_decref(out);
	json_decref(doc);

	static const struct {
		const char *section, *list;
		int max;
	} limits[] = {{"sms_filter", "senders", 1000},
	              {"call_filter", "numbers", 1000},
	              {"app_control", "allowed", 1000},
	              {"app_control", "blocked", 1000},
	              {"app_control", "required", 1000}};
	for (size_t k = 0; k < sizeof limits / sizeof limits[0]; k++) {
		list = json_array();
		for (int i = 0; i <= limits[k].max; i++)
			json_array_append_new(list, json_string("123"));
		doc = json_pack("{s:{s:o}}", limits[k].section, limits[k].list, list);
		assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_E_INVALID);
		assert_non_null(strstr(err.message, "at most"));
		json_decref(errors);
		json_decref(doc);
	}
	list = json_array();
	for (int i = 0; i < 51; i++) {
		char ssid[16];
		snprintf(ssid, sizeof ssid, "n%d", i);
		json_array_append_new(list, json_pack("{s:s, s:s}", "ssid", ssid, "security", "open"));
	}
	doc = json_pack("{s:{s:o}}", "wifi", "networks", list);
	assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "at most 50"));
	json_decref(errors);
	json_decref(doc);
}

static void test_app_control_flag_kept(void **state)
{
	(void)state;
	/* enabled false is kept as given (the lists too), and lists are still validated */
	json_t *doc = parse("{\"app_control\": {\"enabled\": false, \"blocked\": [\"com.bad.app\"]}}");
	json_t *out = NULL, *errors = NULL;
	bw_error err = {0};
	assert_int_equal(bw_policy_validate(doc, &out, &errors, &err), BW_OK);
	json_t *ac = json_object_get(out, "app_control");
	assert_true(json_is_false(json_object_get(ac, "enabled")));
	assert_string_equal(json_string_value(json_array_get(json_object_get(ac, "blocked"), 0)), "com.bad.app");
	json_t *dev = NULL;
	assert_int_equal(bw_policy_for_device(NULL, out, &dev, &err), BW_OK);
	assert_true(json_is_false(json_object_get(json_object_get(dev, "app_control"), "enabled")));
	json_decref(dev);
	json_decref(out);
	json_decref(doc);
}

/* ---- defaults, merge, completion, catalog ---- */

static void test_defaults(void **state)
{
	(void)state;
	json_t *d = bw_policy_defaults();
	assert_non_null(d);
	static const char *const sections[] = {
	    "malware_scan", "web_protection", "sms_filter",  "call_filter", "password", "uninstall_protection",
	    "feature_lock", "wifi",           "app_control", "updates",     "privacy"};
	assert_int_equal(json_object_size(d), 11);
	for (size_t i = 0; i < 11; i++) {
		assert_true(json_is_object(json_object_get(d, sections[i])));
		assert_true(bw_policy_section_known(sections[i]));
		json_t *s = bw_policy_section_default(sections[i]);
		assert_true(json_equal(s, json_object_get(d, sections[i])));
		json_decref(s);
	}
	assert_null(bw_policy_section_default("nope"));
	assert_false(bw_policy_section_known("nope"));
	/* privacy: the malicious iOS profile scan is off by default */
	assert_true(json_is_false(json_object_get(json_object_get(d, "privacy"), "ios_malicious_profile_scan")));
	assert_true(json_is_false(json_object_get(json_object_get(d, "app_control"), "enabled")));
	/* the defaults are a valid document, unchanged by normalisation */
	json_t *out = NULL, *errors = NULL;
	bw_error err = {0};
	assert_int_equal(bw_policy_validate(d, &out, &errors, &err), BW_OK);
	assert_true(json_equal(out, d));
	/* and complete */
	json_t *c = bw_policy_complete(d);
	assert_true(json_equal(c, d));
	json_decref(c);
	json_decref(out);
	json_decref(d);
}

static void test_merge_and_complete(void **state)
{
	(void)state;
	json_t *base = bw_policy_defaults();
	json_t *parent = parse("{\"password\": {\"required\": true, \"min_length\": 10}, \"privacy\": "
	                       "{\"ios_malicious_profile_scan\": true}}");
	json_t *child = parse("{\"password\": {\"required\": false}}");
	json_t *m1 = bw_policy_merge(base, parent);
	json_t *m2 = bw_policy_merge(m1, child);
	/* whole-section override: the child's password section replaces the parent's */
	assert_true(json_equal(json_object_get(m2, "password"), json_object_get(child, "password")));
	assert_true(json_is_true(json_object_get(json_object_get(m2, "privacy"), "ios_malicious_profile_scan")));
	assert_true(json_equal(json_object_get(m2, "wifi"), json_object_get(base, "wifi")));
	/* inputs untouched */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(m1, "password"), "min_length")), 10);
	json_t *dflt = bw_policy_defaults();
	assert_true(json_equal(base, dflt));
	json_decref(dflt);
	json_t *m0 = bw_policy_merge(NULL, child);
	assert_true(json_equal(m0, child));
	json_decref(m0);

	/* completion fills each present section, not absent ones */
	json_t *c = bw_policy_complete(m2);
	json_t *pw = json_object_get(c, "password");
	assert_true(json_is_false(json_object_get(pw, "required")));
	assert_int_equal(json_integer_value(json_object_get(pw, "min_length")), 6);
	assert_true(json_is_object(json_object_get(pw, "complexity")));
	json_decref(c);
	json_t *partial =
	    parse("{\"malware_scan\": {\"scheduled\": {\"enabled\": true, \"frequency\": \"weekly\","
	          " \"time\": \"03:00\", \"days\": [\"tue\"]}}, \"wifi\": {\"networks\": [{\"ssid\": \"G\","
	          " \"security\": \"open\"}]}}");
	c = bw_policy_complete(partial);
	assert_null(json_object_get(c, "password"));
	json_t *sch = json_object_get(json_object_get(c, "malware_scan"), "scheduled");
	assert_string_equal(json_string_value(json_object_get(sch, "scope")), "all");
	assert_string_equal(json_string_value(json_object_get(sch, "frequency")), "weekly");
	assert_true(json_is_true(json_object_get(json_object_get(c, "malware_scan"), "realtime")));
	json_t *net = json_array_get(json_object_get(json_object_get(c, "wifi"), "networks"), 0);
	assert_true(json_is_false(json_object_get(net, "hidden")));
	assert_true(json_is_true(json_object_get(net, "auto_join")));
	json_decref(c);
	json_decref(partial);
	json_decref(m1);
	json_decref(m2);
	json_decref(child);
	json_decref(parent);
	json_decref(base);
}

static void test_feature_catalog(void **state)
{
	(void)state;
	json_t *cat = bw_policy_feature_catalog();
	assert_true(json_array_size(cat) >= 12);
	static const char *const must[] = {"camera",      "bluetooth",        "wifi",         "screen_capture",
	                                   "usb_storage", "tethering",        "microphone",   "location",
	                                   "nfc",         "app_installation", "factory_reset"};
	for (size_t k = 0; k < sizeof must / sizeof must[0]; k++)
		assert_true(bw_policy_feature_known(must[k]));
	assert_false(bw_policy_feature_known("teleport"));
	assert_false(bw_policy_feature_known(NULL));
	json_t *seen = json_object();
	size_t i;
	json_t *it;
	json_array_foreach(cat, i, it)
	{
		const char *id = json_string_value(json_object_get(it, "id"));
		assert_non_null(id);
		assert_null(json_object_get(seen, id));
		json_object_set_new(seen, id, json_true());
		assert_true(bw_policy_feature_known(id));
		assert_non_null(json_string_value(json_object_get(it, "label")));
		json_t *plat = json_object_get(it, "platforms");
		assert_true(json_object_size(plat) >= 1);
		json_t *a = json_object_get(plat, "android"), *ios = json_object_get(plat, "ios");
		if (a)
			assert_non_null(json_string_value(json_object_get(a, "min_os")));
		if (ios) {
			assert_non_null(json_string_value(json_object_get(ios, "min_os")));
			assert_true(json_is_boolean(json_object_get(ios, "supervised")));
		}
		/* every catalog item is accepted by validation */
		json_t *doc = json_pack("{s:{s:{s:s}}}", "feature_lock", "items", id, "block");
		json_t *out = NULL;
		bw_error err = {0};
		assert_int_equal(bw_policy_validate(doc, &out, NULL, &err), BW_OK);
		json_decref(out);
		json_decref(doc);
	}
	/* supervised hints as the reference product gives them for iOS 13 */
	json_array_foreach(cat, i, it)
	{
		const char *id = json_string_value(json_object_get(it, "id"));
		json_t *ios = json_object_get(json_object_get(it, "platforms"), "ios");
		if (strcmp(id, "app_installation") == 0 || strcmp(id, "bluetooth") == 0)
			assert_true(json_is_true(json_object_get(ios, "supervised")));
		if (strcmp(id, "camera") == 0) {
			assert_true(json_is_false(json_object_get(ios, "supervised")));
			assert_non_null(json_object_get(json_object_get(it, "platforms"), "android"));
		}
		if (strcmp(id, "microphone") == 0)
			assert_null(ios);
	}
	json_decref(seen);
	json_decref(cat);
}

/* ---- secrets: protect, redact, device form ---- */

static bw_secrets *open_secrets(char **dir)
{
	*dir = bw_test_tmpdir("p1pol");
	char path[512];
	snprintf(path, sizeof path, "%s/keys/policy.key", *dir);
	bw_error err = {0};
	bw_secrets *s = bw_secrets_open(path, &err);
	if (!s)
		fail_msg("secrets: %s", err.message);
	return s;
}

static const char *const admin_doc =
    "{\"uninstall_protection\": {\"enabled\": true, \"password\": \"Un1nstall-Secret\"},"
    " \"wifi\": {\"networks\": [{\"ssid\": \"Corp\", \"security\": \"wpa2_personal\", \"password\": \"wifi-Secret-1\"},"
    " {\"ssid\": \"Ent\", \"security\": \"wpa2_enterprise\", \"eap\": {\"method\": \"peap\", \"identity\": \"alice\","
    " \"password\": \"eap-Secret-2\"}}, {\"ssid\": \"Guest\", \"security\": \"open\"}]},"
    " \"password\": {\"required\": true}}";

static void assert_no_secret_text(json_t *v)
{
	char *d = dump(v);
	assert_null(strstr(d, "Un1nstall-Secret"));
	assert_null(strstr(d, "wifi-Secret-1"));
	assert_null(strstr(d, "eap-Secret-2"));
	free(d);
}

static void test_protect_redact_device(void **state)
{
	(void)state;
	char *dir = NULL;
	bw_secrets *s = open_secrets(&dir);
	json_t *in = parse(admin_doc), *valid = NULL, *errors = NULL, *stored = NULL;
	bw_error err = {0};
	assert_int_equal(bw_policy_validate(in, &valid, &errors, &err), BW_OK);
	assert_int_equal(bw_policy_protect(s, valid, NULL, &stored, &err), BW_OK);
	assert_no_secret_text(stored);

	/* stored: a verifier, ciphertexts */
	json_t *up = json_object_get(stored, "uninstall_protection");
	json_t *ver = json_object_get(up, "verifier");
	assert_true(json_is_object(ver));
	assert_null(json_object_get(up, "password"));
	assert_true(bw_verifier_check(ver, "Un1nstall-Secret"));
	assert_false(bw_verifier_check(ver, "wrong"));
	json_t *nets = json_object_get(json_object_get(stored, "wifi"), "networks");
	const char *enc0 =
	    json_string_value(json_object_get(json_object_get(json_array_get(nets, 0), "password"), "enc"));
	assert_non_null(enc0);
	char *plain = NULL;
	assert_int_equal(bw_secrets_decrypt(s, enc0, &plain, &err), BW_OK);
	assert_string_equal(plain, "wifi-Secret-1");
	free(plain);
	/* protecting a stored form again changes nothing */
	json_t *again = NULL;
	assert_int_equal(bw_policy_protect(s, stored, NULL, &again, &err), BW_OK);
	assert_true(json_equal(again, stored));
	json_decref(again);

	/* admin view: only password_set, never the verifier's hash or salt */
	json_t *red = bw_policy_redact(stored);
	assert_no_secret_text(red);
	char *rd = dump(red);
	assert_null(strstr(rd, json_string_value(json_object_get(ver, "hash"))));
	assert_null(strstr(rd, json_string_value(json_object_get(ver, "salt"))));
	assert_null(strstr(rd, "verifier"));
	assert_null(strstr(rd, enc0));
	free(rd);
	assert_true(json_is_true(json_object_get(json_object_get(red, "uninstall_protection"), "password_set")));
	json_t *rnets = json_object_get(json_object_get(red, "wifi"), "networks");
	assert_true(json_is_true(json_object_get(json_array_get(rnets, 0), "password_set")));
	assert_null(json_object_get(json_array_get(rnets, 0), "password"));
	assert_true(json_is_true(json_object_get(json_object_get(json_array_get(rnets, 1), "eap"), "password_set")));
	assert_null(json_object_get(json_array_get(rnets, 2), "password_set"));
	/* redacting an admin input (clear passwords) hides them too */
	json_t *red_in = bw_policy_redact(valid);
	assert_no_secret_text(red_in);
	json_decref(red_in);
	json_t *plain_up = parse("{\"uninstall_protection\": {\"enabled\": false}}");
	json_t *red_none = bw_policy_redact(plain_up);
	json_decref(plain_up);
	assert_true(json_is_false(json_object_get(json_object_get(red_none, "uninstall_protection"), "password_set")));
	json_decref(red_none);

	/* the redacted view, sent back unchanged, validates and keeps the stored secrets */
	json_t *back = NULL, *stored2 = NULL;
	assert_int_equal(bw_policy_validate(red, &back, &errors, &err), BW_OK);
	assert_int_equal(bw_policy_protect(s, back, stored, &stored2, &err), BW_OK);
	assert_true(json_equal(stored2, stored));
	json_decref(stored2);
	/* without a previous version there is nothing to keep */
	assert_int_equal(bw_policy_protect(s, back, NULL, &stored2, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "password_set"));
	assert_null(stored2);
	json_decref(back);

	/* device form: Wi-Fi secrets in clear, the uninstall verifier kept */
	json_t *dev = NULL;
	assert_int_equal(bw_policy_for_device(s, stored, &dev, &err), BW_OK);
	json_t *dnets = json_object_get(json_object_get(dev, "wifi"), "networks");
	assert_string_equal(json_string_value(json_object_get(json_array_get(dnets, 0), "password")), "wifi-Secret-1");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(json_array_get(dnets, 1), "eap"), "password")),
	    "eap-Secret-2");
	assert_true(json_equal(json_object_get(json_object_get(dev, "uninstall_protection"), "verifier"), ver));
	char *dd = dump(dev);
	assert_null(strstr(dd, "Un1nstall-Secret"));
	assert_null(strstr(dd, "password_set"));
	free(dd);
	/* device form is complete */
	assert_int_equal(json_integer_value(json_object_get(json_object_get(dev, "password"), "min_length")), 6);
	json_decref(dev);

	/* a device form needs the key; another key cannot decrypt */
	assert_int_equal(bw_policy_for_device(NULL, stored, &dev, &err), BW_E_INVALID);
	char *dir2 = NULL;
	bw_secrets *other = open_secrets(&dir2);
	assert_int_equal(bw_policy_for_device(other, stored, &dev, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "wifi.networks[0].password"));
	assert_null(dev);
	bw_secrets_free(other);
	bw_test_rmtree(dir2);
	free(dir2);
	/* protecting Wi-Fi secrets needs the key */
	assert_int_equal(bw_policy_protect(NULL, valid, NULL, &stored2, &err), BW_E_INVALID);

	json_decref(red);
	json_decref(stored);
	json_decref(valid);
	json_decref(in);
	bw_secrets_free(s);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_protect_keeps_by_ssid(void **state)
{
	(void)state;
	char *dir = NULL;
	bw_secrets *s = open_secrets(&dir);
	bw_error err = {0};
	json_t *v1 =
	    parse("{\"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_personal\", \"password\":"
	          " \"aaaaaaaa\"}, {\"ssid\": \"B\", \"security\": \"wpa2_personal\", \"password\": "
	          "\"bbbbbbbb\"}]}, \"uninstall_protection\": {\"enabled\": true, \"password\": \"first-pw\"}}");
	json_t *st1 = NULL, *st2 = NULL, *dev = NULL;
	assert_int_equal(bw_policy_protect(s, v1, NULL, &st1, &err), BW_OK);
	/* the networks are reordered, B keeps its password, A gets a new one; uninstall password changes */
	json_t *v2 =
	    parse("{\"wifi\": {\"networks\": [{\"ssid\": \"B\", \"security\": \"wpa2_personal\", "
	          "\"password_set\": true}, {\"ssid\": \"A\", \"security\": \"wpa2_personal\", \"password\": "
	          "\"a2a2a2a2\"}]}, \"uninstall_protection\": {\"enabled\": true, \"password\": \"second-pw\"}}");
	assert_int_equal(bw_policy_protect(s, v2, st1, &st2, &err), BW_OK);
	assert_int_equal(bw_policy_for_device(s, st2, &dev, &err), BW_OK);
	json_t *nets = json_object_get(json_object_get(dev, "wifi"), "networks");
	assert_string_equal(json_string_value(json_object_get(json_array_get(nets, 0), "password")), "bbbbbbbb");
	assert_string_equal(json_string_value(json_object_get(json_array_get(nets, 1), "password")), "a2a2a2a2");
	json_t *ver = json_object_get(json_object_get(st2, "uninstall_protection"), "verifier");
	assert_true(bw_verifier_check(ver, "second-pw"));
	assert_false(bw_verifier_check(ver, "first-pw"));

	/* diff of the stored forms: secrets only as "(changed)" */
	json_t *diff = bw_policy_diff(st1, st2);
	char *d = dump(diff);
	assert_null(strstr(d, "a2a2a2a2"));
	assert_null(strstr(d, "aaaaaaaa"));
	assert_null(strstr(d, "second-pw"));
	assert_null(strstr(d, "enc"));
	assert_null(strstr(d, "hash"));
	free(d);
	bool saw_uninstall = false;
	size_t i;
	json_t *e;
	json_array_foreach(diff, i, e)
	{
		const char *p = json_string_value(json_object_get(e, "path"));
		if (strcmp(p, "uninstall_protection.password") == 0) {
			saw_uninstall = true;
			assert_string_equal(json_string_value(json_object_get(e, "to")), "(changed)");
		}
	}
	assert_true(saw_uninstall);
	json_decref(diff);

	/* password_set for an SSID that had no stored password */
	json_t *v3 = parse("{\"wifi\": {\"networks\": [{\"ssid\": \"C\", \"security\": \"wpa2_personal\", "
	                   "\"password_set\": true}]}}");
	json_t *st3 = NULL;
	assert_int_equal(bw_policy_protect(s, v3, st2, &st3, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "wifi.networks[0]"));
	assert_null(st3);
	json_decref(v3);

	json_decref(dev);
	json_decref(st1);
	json_decref(st2);
	json_decref(v1);
	json_decref(v2);
	bw_secrets_free(s);
	bw_test_rmtree(dir);
	free(dir);
}

/* ---- diff ---- */

static json_t *find_path(json_t *diff, const char *path)
{
	size_t i;
	json_t *e;
	json_array_foreach(diff, i, e)
	{
		if (strcmp(json_string_value(json_object_get(e, "path")), path) == 0)
			return e;
	}
	return NULL;
}

static void test_diff(void **state)
{
	(void)state;
	json_t *a = parse("{\"password\": {\"required\": true, \"min_length\": 6}, \"web_protection\": {\"lists\": "
	                  "{\"ios\": {\"block\": [\"a.example\", \"b.example\"]}}}, \"privacy\": "
	                  "{\"ios_malicious_profile_scan\": false}, \"wifi\": {\"networks\": [{\"ssid\": \"A\", "
	                  "\"security\": \"wpa2_personal\", \"password\": \"old-pass\"}]}}");
	json_t *b =
	    parse("{\"password\": {\"required\": true, \"min_length\": 8}, \"web_protection\": {\"lists\": "
	          "{\"ios\": {\"block\": [\"b.example\", \"c.example\"]}}}, \"call_filter\": {\"enabled\": true},"
	          " \"wifi\": {\"networks\": [{\"ssid\": \"A\", \"security\": \"wpa2_personal\", \"password\": "
	          "\"new-pass\"}, {\"ssid\": \"B\", \"security\": \"wpa2_personal\", \"password\": \"b-pass\"}]}}");
	json_t *d = bw_policy_diff(a, b);
	char *text = dump(d);
	assert_null(strstr(text, "old-pass"));
	assert_null(strstr(text, "new-pass"));
	assert_null(strstr(text, "b-pass"));
	free(text);

	json_t *e = find_path(d, "password.min_length");
	assert_non_null(e);
	assert_int_equal(json_integer_value(json_object_get(e, "from")), 6);
	assert_int_equal(json_integer_value(json_object_get(e, "to")), 8);
	assert_null(find_path(d, "password.required"));
	e = find_path(d, "web_protection.lists.ios.block");
	assert_non_null(e);
	assert_string_equal(json_string_value(json_array_get(json_object_get(e, "added"), 0)), "c.example");
	assert_string_equal(json_string_value(json_array_get(json_object_get(e, "removed"), 0)), "a.example");
	e = find_path(d, "privacy.ios_malicious_profile_scan");
	assert_non_null(e);
	assert_true(json_is_false(json_object_get(e, "from")));
	assert_true(json_is_null(json_object_get(e, "to")));
	e = find_path(d, "call_filter.enabled");
	assert_non_null(e);
	assert_true(json_is_null(json_object_get(e, "from")));
	assert_true(json_is_true(json_object_get(e, "to")));
	e = find_path(d, "wifi.networks[0].password");
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "from")), "(changed)");
	assert_string_equal(json_string_value(json_object_get(e, "to")), "(changed)");
	e = find_path(d, "wifi.networks[1].password");
	assert_non_null(e);
	assert_true(json_is_null(json_object_get(e, "from")));
	assert_string_equal(json_string_value(json_object_get(e, "to")), "(changed)");
	assert_non_null(find_path(d, "wifi.networks[1].ssid"));
	json_decref(d);

	/* equal documents: no differences; redacted vs redacted with the same secrets: none either */
	d = bw_policy_diff(a, a);
	assert_int_equal(json_array_size(d), 0);
	json_decref(d);
	json_t *ra = bw_policy_redact(a), *rb = bw_policy_redact(a);
	d = bw_policy_diff(ra, rb);
	assert_int_equal(json_array_size(d), 0);
	json_decref(d);
	/* from nothing */
	d = bw_policy_diff(NULL, b);
	assert_non_null(find_path(d, "password.min_length"));
	text = dump(d);
	assert_null(strstr(text, "new-pass"));
	free(text);
	json_decref(d);
	/* a section replaced by a non-object value is shown whole, secrets masked */
	json_t *c = parse("{\"wifi\": 1}");
	d = bw_policy_diff(a, c);
	text = dump(d);
	assert_null(strstr(text, "old-pass"));
	free(text);
	json_decref(d);
	json_decref(c);
	json_decref(ra);
	json_decref(rb);
	json_decref(a);
	json_decref(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_url_entries),
	    cmocka_unit_test(test_url_limits),
	    cmocka_unit_test(test_phone_entries),
	    cmocka_unit_test(test_package_ids),
	    cmocka_unit_test(test_sections_table),
	    cmocka_unit_test(test_normalisation),
	    cmocka_unit_test(test_errors_collected_and_capped),
	    cmocka_unit_test(test_app_control_flag_kept),
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_merge_and_complete),
	    cmocka_unit_test(test_feature_catalog),
	    cmocka_unit_test(test_protect_redact_device),
	    cmocka_unit_test(test_protect_keeps_by_ssid),
	    cmocka_unit_test(test_diff),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
