/* tests/unit/ldap_test.c: unit tests of the pure parts of the dir_ldap plugin: login parsing, RFC 4515 filter and
 * RFC 4514 DN escaping, objectGUID formatting, range attributes, userAccountControl bits, group mapping, AD bind
 * diagnostics, LDAP time values, and the synced directory model (UTF-8 names across a re-import, nested
 * groups with a cycle, record round trips, paging). */
#include "testutil.h"

#include "dirmodel.h"
#include "dlutil.h"

#include <stdlib.h>
#include <string.h>

static void test_login_parse(void **state)
{
	(void)state;
	struct bw_dl_login l;
	bw_error err = {0};
	assert_int_equal(bw_dl_login_parse("jdoe@corp.example.com", &l, &err), BW_OK);
	assert_int_equal(l.kind, BW_DL_LOGIN_UPN);
	assert_string_equal(l.user, "jdoe");
	assert_string_equal(l.domain, "corp.example.com");
	assert_string_equal(l.full, "jdoe@corp.example.com");

	assert_int_equal(bw_dl_login_parse("CORP\\jdoe", &l, &err), BW_OK);
	assert_int_equal(l.kind, BW_DL_LOGIN_DOMAIN);
	assert_string_equal(l.domain, "CORP");
	assert_string_equal(l.user, "jdoe");
	assert_string_equal(l.full, "jdoe");

	assert_int_equal(bw_dl_login_parse("jdoe", &l, &err), BW_OK);
	assert_int_equal(l.kind, BW_DL_LOGIN_BARE);
	assert_string_equal(l.user, "jdoe");

	/* UTF-8 names are fine. */
	assert_int_equal(bw_dl_login_parse("j\xc3\xb6rg@example.com", &l, &err), BW_OK);
	assert_string_equal(l.user, "j\xc3\xb6rg");

	static const char *const bad[] = {"",        "@example.com",           "jdoe@",  "a@b@c",   "CORP\\", "\\jdoe",
	                                  "A\\B\\c", "CORP\\jdoe@example.com", "jd\noe", "jdoe\x7f"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bw_error_clear(&err);
		assert_int_equal(bw_dl_login_parse(bad[i], &l, &err), BW_E_INVALID);
		assert_true(strncmp(err.message, "login:", 6) == 0);
	}
	assert_int_equal(bw_dl_login_parse(NULL, &l, &err), BW_E_INVALID);
	char lng[BW_DL_LOGIN_MAX + 2];
	memset(lng, 'a', sizeof lng - 1);
	lng[sizeof lng - 1] = '\0';
	assert_int_equal(bw_dl_login_parse(lng, &l, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "more than"));
	lng[BW_DL_LOGIN_MAX] = '\0';
	assert_int_equal(bw_dl_login_parse(lng, &l, &err), BW_OK);
}

static void test_filter_escape(void **state)
{
	(void)state;
	char *e = bw_dl_filter_escape("a*b(c)d\\e", 9);
	assert_string_equal(e, "a\\2ab\\28c\\29d\\5ce");
	free(e);
	/* An injection attempt stays a literal value. */
	e = bw_dl_filter_escape("*)(uid=*", 8);
	assert_string_equal(e, "\\2a\\29\\28uid=\\2a");
	free(e);
	/* NUL bytes inside the value and UTF-8 (kept as is, RFC 4515 allows it). */
	e = bw_dl_filter_escape("a\0b", 3);
	assert_string_equal(e, "a\\00b");
	free(e);
	e = bw_dl_filter_escape("Zo\xc3\xab", 4);
	assert_string_equal(e, "Zo\xc3\xab");
	free(e);
	e = bw_dl_filter_escape("", 0);
	assert_string_equal(e, "");
	free(e);
}

static void test_dn_escape(void **state)
{
	(void)state;
	char *e = bw_dl_dn_escape("Smith, John");
	assert_string_equal(e, "Smith\\, John");
	free(e);
	e = bw_dl_dn_escape("#lead and trail ");
	assert_string_equal(e, "\\#lead and trail\\ ");
	free(e);
	e = bw_dl_dn_escape(" a+b=c<d>e;f\"g\\");
	assert_string_equal(e, "\\ a\\+b\\=c\\<d\\>e\\;f\\\"g\\\\");
	free(e);
	/* Escaping and reading back the first RDN value gives the original. */
	char dn[256], back[128];
	e = bw_dl_dn_escape("Smith, John+x");
	snprintf(dn, sizeof dn, "CN=%s,OU=People,DC=example,DC=com", e);
	free(e);
	assert_true(bw_dl_dn_first_value(dn, back, sizeof back));
	assert_string_equal(back, "Smith, John+x");
}

static void test_dn_first_value(void **state)
{
	(void)state;
	char v[64];
	assert_true(bw_dl_dn_first_value("CN=Domain Admins,CN=Users,DC=corp,DC=example", v, sizeof v));
	assert_string_equal(v, "Domain Admins");
	assert_true(bw_dl_dn_first_value("cn=caf\\c3\\a9,ou=g,dc=x", v, sizeof v));
	assert_string_equal(v, "caf\xc3\xa9");
	assert_false(bw_dl_dn_first_value("no equals sign", v, sizeof v));
	assert_false(bw_dl_dn_first_value("CN=,DC=x", v, sizeof v));
	assert_false(bw_dl_dn_first_value("CN=a very long value,DC=x", v, 5));
}

static void test_guid_format(void **state)
{
	(void)state;
	/* AD stores {f5d9f2a1-3c4b-4d5e-8f6a-7b8c9d0e1f2a} with the first three fields little-endian. */
	const unsigned char bin[16] = {0xa1, 0xf2, 0xd9, 0xf5, 0x4b, 0x3c, 0x5e, 0x4d,
	                               0x8f, 0x6a, 0x7b, 0x8c, 0x9d, 0x0e, 0x1f, 0x2a};
	char out[37];
	bw_error err = {0};
	assert_int_equal(bw_dl_guid_format(bin, 16, out, &err), BW_OK);
	assert_string_equal(out, "f5d9f2a1-3c4b-4d5e-8f6a-7b8c9d0e1f2a");
	assert_int_equal(bw_dl_guid_format(bin, 15, out, &err), BW_E_INVALID);
	assert_non_null(strstr(err.message, "15 bytes"));
	assert_int_equal(bw_dl_guid_format(NULL, 16, out, &err), BW_E_INVALID);

	assert_true(bw_dl_uuid_normalize("6F1A2B3C-0000-1000-8000-00AABBCCDDEE", 36, out));
	assert_string_equal(out, "6f1a2b3c-0000-1000-8000-00aabbccddee");
	assert_false(bw_dl_uuid_normalize("6f1a2b3c-0000-1000-8000-00aabbccddeg", 36, out));
	assert_false(bw_dl_uuid_normalize("6f1a2b3c00000-1000-8000-00aabbccddee", 36, out));
	assert_false(bw_dl_uuid_normalize("6f1a2b3c-0000-1000-8000", 23, out));
}

static void test_range_parse(void **state)
{
	(void)state;
	long s, e;
	assert_true(bw_dl_range_parse("member;range=0-1499", "member", &s, &e));
	assert_int_equal(s, 0);
	assert_int_equal(e, 1499);
	assert_true(bw_dl_range_parse("member;range=1500-*", "member", &s, &e));
	assert_int_equal(s, 1500);
	assert_int_equal(e, -1);
	assert_true(bw_dl_range_parse("Member;Range=3000-4499", "member", &s, &e));
	assert_int_equal(s, 3000);
	assert_int_equal(e, 4499);
	static const char *const bad[] = {"member",
	                                  "member;range=",
	                                  "member;range=5-1",
	                                  "member;range=0-",
	                                  "member;range=-1-5",
	                                  "memberOf;range=0-1",
	                                  "members;range=0-1",
	                                  "member;range=0-1;x",
	                                  "member;range=a-b"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(bw_dl_range_parse(bad[i], "member", &s, &e));
}

static void test_uac(void **state)
{
	(void)state;
	uint32_t u;
	assert_true(bw_dl_uac_parse("512", 3, &u));
	assert_false(bw_dl_uac_disabled(u));
	assert_true(bw_dl_uac_parse("514", 3, &u));
	assert_true(bw_dl_uac_disabled(u));
	assert_true(bw_dl_uac_parse("66050", 5, &u)); /* NORMAL | DONT_EXPIRE | ACCOUNTDISABLE */
	assert_true(bw_dl_uac_disabled(u));
	assert_int_equal(u & BW_DL_UAC_DONT_EXPIRE, BW_DL_UAC_DONT_EXPIRE);
	assert_true(bw_dl_uac_parse("66048", 5, &u));
	assert_false(bw_dl_uac_disabled(u));
	/* AD sends the high bit as a negative number. */
	assert_true(bw_dl_uac_parse("-2147483134", 11, &u));
	assert_int_equal(u, 0x80000202u);
	assert_true(bw_dl_uac_disabled(u));
	assert_false(bw_dl_uac_parse("abc", 3, &u));
	assert_false(bw_dl_uac_parse("", 0, &u));
	assert_false(bw_dl_uac_parse("5120000000000", 13, &u));
	/* Only `len` bytes count (values are not NUL-terminated). */
	assert_true(bw_dl_uac_parse("514XYZ", 3, &u));
	assert_int_equal(u, 514);
}

static void test_group_map(void **state)
{
	(void)state;
	struct bw_dl_group_map m;
	bw_error err = {0};
	assert_int_equal(bw_dl_group_map_parse("Sales = Sales Phones", &m, &err), BW_OK);
	assert_string_equal(m.dir_group, "Sales");
	assert_string_equal(m.device_group, "Sales Phones");
	bw_dl_group_map_free(&m);
	/* A DN on the left: split at the last '='. */
	assert_int_equal(bw_dl_group_map_parse("CN=Field Staff,OU=Groups,DC=corp,DC=example=field", &m, &err), BW_OK);
	assert_string_equal(m.dir_group, "CN=Field Staff,OU=Groups,DC=corp,DC=example");
	assert_string_equal(m.device_group, "field");
	bw_dl_group_map_free(&m);
	static const char *const bad[] = {
	    "no separator", "=devices", "Sales=", "Sales=  ", "Sales=bad/name", "Sales=x;drop"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bw_error_clear(&err);
		assert_int_equal(bw_dl_group_map_parse(bad[i], &m, &err), BW_E_CONFIG);
		assert_non_null(strstr(err.message, "group_map"));
		assert_null(m.dir_group);
	}
	char lng[128];
	snprintf(lng, sizeof lng, "G=%065d", 0);
	assert_int_equal(bw_dl_group_map_parse(lng, &m, &err), BW_E_CONFIG);
	assert_int_equal(bw_dl_group_map_parse(NULL, &m, &err), BW_E_CONFIG);
}

static void test_group_matches(void **state)
{
	(void)state;
	const char *dn = "CN=Domain Admins,CN=Users,DC=corp,DC=example";
	assert_true(bw_dl_group_matches("Domain Admins", dn, "Domain Admins"));
	assert_true(bw_dl_group_matches("domain admins", dn, "Domain Admins"));
	assert_true(bw_dl_group_matches("cn=domain admins, cn=users, dc=corp, dc=example", dn, "Domain Admins"));
	assert_false(bw_dl_group_matches("Domain", dn, "Domain Admins"));
	assert_false(bw_dl_group_matches("CN=Domain Admins,CN=Users,DC=corp", dn, "Domain Admins"));
	assert_false(bw_dl_group_matches("", dn, "Domain Admins"));
}

static void test_ad_diag(void **state)
{
	(void)state;
	assert_int_equal(bw_dl_ad_diag_code(
	                     "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v3839"),
	                 0x775);
	assert_int_equal(bw_dl_ad_diag_code(
	                     "80090308: LdapErr: DSID-0C090439, comment: AcceptSecurityContext error, data 52e, v4563"),
	                 0x52e);
	assert_int_equal(bw_dl_ad_diag_code("... AcceptSecurityContext error, data 533, v893"), 0x533);
	assert_int_equal(bw_dl_ad_diag_code("data 532, v1db1"), 0x532);
	assert_int_equal(bw_dl_ad_diag_code("metadata 775, x"), -1);
	assert_int_equal(bw_dl_ad_diag_code("no code here"), -1);
	assert_int_equal(bw_dl_ad_diag_code(NULL), -1);
	assert_int_equal(bw_dl_ad_diag_code(""), -1);
	assert_string_equal(bw_dl_ad_diag_reason(0x775), "account locked");
	assert_string_equal(bw_dl_ad_diag_reason(0x533), "account disabled");
	assert_string_equal(bw_dl_ad_diag_reason(0x532), "password expired");
	assert_string_equal(bw_dl_ad_diag_reason(0x701), "account expired");
	assert_string_equal(bw_dl_ad_diag_reason(0x52e), "wrong user name or password");
	assert_null(bw_dl_ad_diag_reason(0x123));
	assert_null(bw_dl_ad_diag_reason(-1));
}

static void test_gentime(void **state)
{
	(void)state;
	int64_t t;
	assert_true(bw_dl_gentime_parse("20240131120000Z", &t));
	assert_int_equal(t, 1706702400);
	assert_true(bw_dl_gentime_parse("20240131120000.123Z", &t));
	assert_int_equal(t, 1706702400);
	assert_true(bw_dl_gentime_parse("20240131130000+0100", &t));
	assert_int_equal(t, 1706702400);
	assert_true(bw_dl_gentime_parse("2024013112Z", &t));
	assert_int_equal(t, 1706702400);
	static const char *const bad[] = {"",
	                                  "2024",
	                                  "20241331120000Z",
	                                  "20240131120000",
	                                  "20240131120000Q",
	                                  "20240131120000Zjunk",
	                                  "000001010000Z0"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_false(bw_dl_gentime_parse(bad[i], &t));
	char buf[16];
	bw_dl_gentime_format(1706702400, buf);
	assert_string_equal(buf, "20240131120000Z");
	uint64_t u;
	assert_true(bw_dl_uint_parse("133500000000000000", 18, &u));
	assert_true(u == 133500000000000000ULL);
	assert_false(bw_dl_uint_parse("99999999999999999999", 20, &u));
	assert_false(bw_dl_uint_parse("-1", 2, &u));
	assert_false(bw_dl_uint_parse("", 0, &u));
}

/* ---- the directory model */

static void mk_user(struct dl_user *u, const char *guid, const char *login, const char *dn, const char *name)
{
	memset(u, 0, sizeof *u);
	snprintf(u->guid, sizeof u->guid, "%s", guid);
	u->login = strdup(login);
	u->dn = strdup(dn);
	u->display_name = name ? strdup(name) : NULL;
	u->mail = strdup("x@example.com");
}

static void mk_group(struct dl_group *g, const char *guid, const char *name, const char *dn, const char *const *members,
                     size_t n)
{
	memset(g, 0, sizeof *g);
	snprintf(g->guid, sizeof g->guid, "%s", guid);
	g->name = strdup(name);
	g->dn = strdup(dn);
	g->members = calloc(n ? n : 1, sizeof *g->members);
	for (size_t i = 0; i < n; i++)
		g->members[g->nmembers++] = strdup(members[i]);
}

#define G1 "00000000-0000-0000-0000-000000000001"
#define G2 "00000000-0000-0000-0000-000000000002"
#define G3 "00000000-0000-0000-0000-000000000003"
#define U1 "10000000-0000-0000-0000-000000000001"
#define U2 "10000000-0000-0000-0000-000000000002"
#define U3 "10000000-0000-0000-0000-000000000003"

/* Display names with non-ASCII characters: Zoë Ångström, 王小明, Ørjan Ñúñez. */
static const char *const names[] = {"Zo\xc3\xab \xc3\x85ngstr\xc3\xb6m", "\xe7\x8e\x8b\xe5\xb0\x8f\xe6\x98\x8e",
                                    "\xc3\x98rjan \xc3\x91\xc3\xba\xc3\xb1"
                                    "ez"};

static struct dl_dir *sample_dir(void)
{
	struct dl_dir *d = dl_dir_new();
	struct dl_user u;
	struct dl_group g;
	/* Added out of order: finish sorts by guid. */
	mk_user(&u, U2, "wang", "CN=Wang,OU=People,DC=x", names[1]);
	assert_true(dl_dir_add_user(d, &u));
	mk_user(&u, U1, "zoe", "CN=Zoe,OU=People,DC=x", names[0]);
	assert_true(dl_dir_add_user(d, &u));
	mk_user(&u, U3, "orjan", "CN=Orjan,OU=People,DC=x", names[2]);
	assert_true(dl_dir_add_user(d, &u));
	/* G1 has zoe (DN written differently) and G2; G2 has G3; G3 has G1 (a cycle) and wang. */
	const char *m1[] = {"cn=zoe, ou=people, dc=x", "CN=G2,OU=Groups,DC=x"};
	const char *m2[] = {"CN=G3,OU=Groups,DC=x"};
	const char *m3[] = {"CN=G1,OU=Groups,DC=x", "CN=Wang,OU=People,DC=x"};
	mk_group(&g, G3, "G3", "CN=G3,OU=Groups,DC=x", m3, 2);
	assert_true(dl_dir_add_group(d, &g));
	mk_group(&g, G1, "G1", "CN=G1,OU=Groups,DC=x", m1, 2);
	assert_true(dl_dir_add_group(d, &g));
	mk_group(&g, G2, "G2", "CN=G2,OU=Groups,DC=x", m2, 1);
	assert_true(dl_dir_add_group(d, &g));
	assert_true(dl_dir_finish(d));
	return d;
}

static json_t *names_of(json_t *api, const char *key)
{
	return json_object_get(api, key);
}

static bool has_name(json_t *arr, const char *n)
{
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) if (strcmp(json_string_value(v), n) == 0) return true;
	return false;
}

static void test_model_graph(void **state)
{
	(void)state;
	struct dl_dir *d = sample_dir();
	assert_int_equal(d->nusers, 3);
	assert_string_equal(d->users[0].guid, U1);
	assert_string_equal(d->groups[0].guid, G1);
	const struct dl_user *zoe = dl_dir_user(d, U1), *wang = dl_dir_user(d, U2), *orjan = dl_dir_user(d, U3);
	assert_non_null(zoe);
	/* zoe is in G1 directly, and G1 is in G3 (G3 lists G1), G3 is in G2, G2 is in G1 (cycle): all three. */
	json_t *api = dl_user_to_api(d, zoe);
	json_t *gs = names_of(api, "groups");
	assert_int_equal(json_array_size(gs), 3);
	assert_true(has_name(gs, "G1") && has_name(gs, "G2") && has_name(gs, "G3"));
	assert_string_equal(json_string_value(json_object_get(api, "display_name")), names[0]);
	json_decref(api);
	api = dl_user_to_api(d, wang);
	assert_int_equal(json_array_size(names_of(api, "groups")), 3);
	json_decref(api);
	api = dl_user_to_api(d, orjan);
	assert_int_equal(json_array_size(names_of(api, "groups")), 0);
	json_decref(api);
	api = dl_group_to_api(d, dl_dir_group(d, G1));
	assert_int_equal(json_integer_value(json_object_get(api, "members")), 2);
	assert_int_equal(json_array_size(names_of(api, "nested_groups")), 1);
	assert_true(has_name(names_of(api, "nested_groups"), "G2"));
	json_decref(api);
	assert_null(dl_dir_user(d, "ffffffff-0000-0000-0000-000000000000"));
	/* Paging by guid. */
	assert_int_equal(dl_dir_users_after(d, NULL), 0);
	assert_int_equal(dl_dir_users_after(d, U1), 1);
	assert_int_equal(dl_dir_users_after(d, U3), 3);
	assert_int_equal(dl_dir_users_after(d, "0"), 0);
	assert_int_equal(dl_dir_groups_after(d, G2), 2);
	dl_dir_unref(d);
}

/* Import, store (JSON text as in the record store), load, re-import: names byte-identical and no change. */
static void test_model_reimport_utf8(void **state)
{
	(void)state;
	struct dl_dir *d = sample_dir();
	struct dl_dir *loaded = dl_dir_new();
	for (size_t i = 0; i < d->nusers; i++) {
		json_t *rec = dl_user_to_record(&d->users[i]);
		char *text = json_dumps(rec, JSON_COMPACT);
		json_decref(rec);
		json_t *back = json_loads(text, 0, NULL);
		free(text);
		struct dl_user u;
		assert_true(dl_user_from_record(d->users[i].guid, back, &u));
		json_decref(back);
		assert_string_equal(u.display_name, d->users[i].display_name);
		assert_false(dl_user_differs(&u, &d->users[i]));
		assert_true(dl_dir_add_user(loaded, &u));
	}
	for (size_t i = 0; i < d->ngroups; i++) {
		json_t *rec = dl_group_to_record(&d->groups[i]);
		struct dl_group g;
		assert_true(dl_group_from_record(d->groups[i].guid, rec, &g));
		json_decref(rec);
		assert_false(dl_group_differs(&g, &d->groups[i]));
		assert_true(dl_dir_add_group(loaded, &g));
	}
	assert_true(dl_dir_finish(loaded));
	/* A second import of the same directory (copies, as an incremental sync keeps unchanged entries). */
	struct dl_dir *again = dl_dir_new();
	for (size_t i = 0; i < loaded->nusers; i++) {
		struct dl_user u;
		assert_true(dl_user_copy(&u, &loaded->users[i]));
		assert_true(dl_dir_add_user(again, &u));
	}
	assert_true(dl_dir_finish(again));
	for (size_t i = 0; i < 3; i++) {
		assert_false(dl_user_differs(&again->users[i], &d->users[i]));
		json_t *api = dl_user_to_api(again, &again->users[i]);
		const char *dn = json_string_value(json_object_get(api, "display_name"));
		assert_non_null(dn);
		assert_string_equal(dn, d->users[i].display_name);
		json_decref(api);
	}
	/* A changed display name is seen as a change. */
	free(again->users[0].display_name);
	again->users[0].display_name = strdup("Zoe Angstrom");
	assert_true(dl_user_differs(&again->users[0], &d->users[0]));
	/* Invalid UTF-8 is shown as null, never as mangled text. */
	free(again->users[1].display_name);
	again->users[1].display_name = strdup("bad \xff\xfe");
	json_t *rec = dl_user_to_record(&again->users[1]);
	assert_true(json_is_null(json_object_get(rec, "display_name")));
	json_decref(rec);
	/* Malformed records are refused. */
	struct dl_user u;
	json_t *badrec = json_pack("{s:i}", "login", 5);
	assert_false(dl_user_from_record(U1, badrec, &u));
	assert_false(dl_user_from_record("short", json_object_get(badrec, "x"), &u));
	json_decref(badrec);
	dl_dir_unref(again);
	dl_dir_unref(loaded);
	dl_dir_unref(d);
}

static void test_model_big_group(void **state)
{
	(void)state;
	/* 20,000 members of ~60 bytes: more than the record store takes, so the record is cut and says so. */
	struct dl_group g;
	memset(&g, 0, sizeof g);
	snprintf(g.guid, sizeof g.guid, "%s", G1);
	g.name = strdup("Everyone");
	g.dn = strdup("CN=Everyone,DC=x");
	g.members = calloc(20000, sizeof *g.members);
	for (size_t i = 0; i < 20000; i++) {
		char m[96];
		snprintf(m, sizeof m, "CN=User number %05zu,OU=People,OU=Staff,DC=corp,DC=example,DC=com", i);
		g.members[g.nmembers++] = strdup(m);
	}
	json_t *rec = dl_group_to_record(&g);
	char *text = json_dumps(rec, JSON_COMPACT);
	assert_true(strlen(text) < 1024 * 1024);
	assert_true(json_is_true(json_object_get(rec, "truncated")));
	assert_true(json_array_size(json_object_get(rec, "members")) < 20000);
	free(text);
	json_decref(rec);
	/* Duplicated guids (a directory that returned an entry twice) are dropped. */
	struct dl_dir *d = dl_dir_new();
	assert_true(dl_dir_add_group(d, &g));
	struct dl_group g2;
	const char *m[] = {"CN=a,DC=x"};
	mk_group(&g2, G1, "dup", "CN=dup,DC=x", m, 1);
	assert_true(dl_dir_add_group(d, &g2));
	assert_true(dl_dir_finish(d));
	assert_int_equal(d->ngroups, 1);
	dl_dir_unref(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_login_parse),
	    cmocka_unit_test(test_filter_escape),
	    cmocka_unit_test(test_dn_escape),
	    cmocka_unit_test(test_dn_first_value),
	    cmocka_unit_test(test_guid_format),
	    cmocka_unit_test(test_range_parse),
	    cmocka_unit_test(test_uac),
	    cmocka_unit_test(test_group_map),
	    cmocka_unit_test(test_group_matches),
	    cmocka_unit_test(test_ad_diag),
	    cmocka_unit_test(test_gentime),
	    cmocka_unit_test(test_model_graph),
	    cmocka_unit_test(test_model_reimport_utf8),
	    cmocka_unit_test(test_model_big_group),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
