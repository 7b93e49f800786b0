/* tests/unit/test_normalize.c: table-driven tests of the device identifier normalisation
 * (IMEI, MEID, Wi-Fi MAC), enrollment key validation and dotted-version comparison
 * (host/agent/normalize.c). */
#include "testutil.h"

#include "devices.h"

#include <stdio.h>
#include <string.h>

struct norm_case {
	const char *in;
	const char *out; /* NULL: must be refused */
};

static void check_cases(const char *what, bool (*fn)(const char *, char *), size_t outsize,
                        const struct norm_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char out[32];
		memset(out, 'X', sizeof out);
		bool ok = fn(cases[i].in, out);
		if (ok != (cases[i].out != NULL))
			fail_msg("%s case %zu (\"%s\"): expected %s, got %s", what, i,
			         cases[i].in ? cases[i].in : "(null)", cases[i].out ? "accepted" : "refused",
			         ok ? "accepted" : "refused");
		if (ok) {
			assert_string_equal(out, cases[i].out);
			assert_int_equal(strlen(out), outsize - 1);
		}
	}
}

static bool imei(const char *in, char *out)
{
	return bw_normalize_imei(in, out);
}
static bool meid(const char *in, char *out)
{
	return bw_normalize_meid(in, out);
}
static bool mac(const char *in, char *out)
{
	return bw_normalize_mac(in, out);
}

static void test_imei(void **state)
{
	(void)state;
	static const struct norm_case cases[] = {
	    {"490154203237518", "490154203237518"},
	    {"35-209900-176148-1", "352099001761481"},
	    {"35 209900 176148 1", "352099001761481"},
	    {"35/209900/176148/1", "352099001761481"},
	    {" 352099001761481 ", "352099001761481"},
	    {"000000000000000", "000000000000000"}, /* Luhn sum 0 */
	    {"490154203237517", NULL},              /* check digit wrong */
	    {"490154203237519", NULL},
	    {"352099001761482", NULL},
	    {"49015420323751", NULL},   /* 14 digits */
	    {"4901542032375188", NULL}, /* 16 digits */
	    {"49015420323751a", NULL},
	    {"490154203237518\n", NULL},
	    {"49015420.3237518", NULL},
	    {"", NULL},
	    {"   ", NULL},
	    {NULL, NULL},
	    {"\xd9\xa4\x39\x30\x31\x35\x34\x32\x30\x33\x32\x33\x37\x35\x31\x38", NULL}, /* Arabic-Indic digit */
	};
	check_cases("imei", imei, 16, cases, sizeof cases / sizeof cases[0]);
}

static void test_meid(void **state)
{
	(void)state;
	static const struct norm_case cases[] = {
	    {"A0000000002329", "a0000000002329"},
	    {"a0000000002329", "a0000000002329"},
	    {"A0 000000 002329", "a0000000002329"},
	    {"A0-000000-002329", "a0000000002329"},
	    {"99000012345678", "99000012345678"},
	    {"AbCdEf01234567", "abcdef01234567"},
	    {"A000000000232", NULL},   /* 13 */
	    {"A00000000023290", NULL}, /* 15 */
	    {"G0000000002329", NULL},
	    {"A0:00000000:2329", NULL},
	    {"A0/000000/002329", NULL},
	    {"", NULL},
	    {NULL, NULL},
	};
	check_cases("meid", meid, 15, cases, sizeof cases / sizeof cases[0]);
}

static void test_mac(void **state)
{
	(void)state;
	static const struct norm_case cases[] = {
	    {"02:00:00:aa:bb:cc", "02:00:00:aa:bb:cc"},
	    {"02:00:00:AA:BB:CC", "02:00:00:aa:bb:cc"},
	    {"02-00-00-aa-BB-cc", "02:00:00:aa:bb:cc"},
	    {"020000AABBCC", "02:00:00:aa:bb:cc"},
	    {"020000aabbcc", "02:00:00:aa:bb:cc"},
	    {"  02:00:00:aa:bb:cc\t", "02:00:00:aa:bb:cc"},
	    {"ff:ff:ff:ff:ff:ff", "ff:ff:ff:ff:ff:ff"},
	    {"02:00:00-aa:bb:cc", NULL}, /* mixed separators */
	    {"02.00.00.aa.bb.cc", NULL},
	    {"0200.00aa.bbcc", NULL},
	    {"02:00:00:aa:bb", NULL},
	    {"02:00:00:aa:bb:cc:dd", NULL},
	    {"02:00:00:aa:bb:cg", NULL},
	    {"2:00:00:aa:bb:cc", NULL},
	    {"02:00:00:aa:bb:c", NULL},
	    {"020000aabbc", NULL},
	    {"020000aabbccd", NULL},
	    {"02 00 00 aa bb cc", NULL},
	    {"02:00 00:aa:bb:cc", NULL},
	    {"", NULL},
	    {NULL, NULL},
	};
	check_cases("mac", mac, 18, cases, sizeof cases / sizeof cases[0]);
}

static void test_enrollment_key(void **state)
{
	(void)state;
	static const struct {
		const char *key;
		bool valid;
	} cases[] = {
	    {"K7Q2-9XHD-M3PA", true},
	    {"k7q2-9xhd-m3pa", true},
	    {"K7Q29XHD", true},                                                           /* 8: the shortest */
	    {"K7Q29XH", false},                                                           /* 7 */
	    {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", true},   /* 64 */
	    {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false}, /* 65 */
	    {"K7Q2 9XHD M3PA", false},
	    {"K7Q2_9XHD_M3PA", false},
	    {"K7Q2/9XHD/M3PA", false},
	    {"K7Q2-9XHD-M3PA\n", false},
	    {"K7Q2-9XHD-M3P\xc3\x84", false},      /* U+00C4 */
	    {"K7Q2-9XHD-M3PA\xef\xbc\xa1", false}, /* full-width A */
	    {"K7Q2.9XHD.M3PA", false},
	    {"K7Q2+9XHD+M3PA", false},
	    {"' OR 1=1 --", false},
	    {"", false},
	    {NULL, false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		if (bw_enrollment_key_valid(cases[i].key) != cases[i].valid)
			fail_msg("key case %zu (\"%s\"): expected %s", i, cases[i].key ? cases[i].key : "(null)",
			         cases[i].valid ? "valid" : "invalid");
}

static void test_version_compare(void **state)
{
	(void)state;
	static const struct {
		const char *a, *b;
		int expect;
	} cases[] = {
	    {"12", "12.0", 0},
	    {"12.0", "12.0.0", 0},
	    {"12", "12.0.0", 0},
	    {"12.1", "12.0.9", 1},
	    {"12.0.9", "12.1", -1},
	    {"9", "10", -1},
	    {"10", "9", 1},
	    {"2.10", "2.9", 1},
	    {"1.01", "1.1", 0}, /* numeric, not text */
	    {"007", "7", 0},
	    {"12.1", "12.1.1", -1},
	    {"14", "13.99.99", 1},
	    {"12.1.3-beta", "12.1.3", 1}, /* a vendor suffix sorts after the plain version */
	    {"12.1.3", "12.1.3-beta", -1},
	    {"12.1.3-beta", "12.1.4", -1},
	    {"12.1.3-beta", "12.1.3-beta", 0},
	    {"12.1.3-beta", "12.1.3-rc1", -1},
	    {"12.1.3-beta", "12.1.3.0", 1},
	    {"123456789012345678901234567890", "123456789012345678901234567891", -1}, /* no overflow */
	    {"99999999999999999999", "1", 1},
	    {"", "", 0},
	    {NULL, "", 0},
	    {NULL, NULL, 0},
	    {"", "0", -1}, /* not a version: before every version */
	    {"garbage", "0", -1},
	    {"1", "garbage", 1},
	    {"abc", "abd", -1},
	    {"", "abc", -1},
	    {"v12", "12", -1},
	    {"12.", "12", 1},
	    {"12..1", "12", 1},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int got = bw_version_compare(cases[i].a, cases[i].b);
		int back = bw_version_compare(cases[i].b, cases[i].a);
		if (got != cases[i].expect || back != -cases[i].expect)
			fail_msg("version case %zu: compare(\"%s\", \"%s\") = %d (reverse %d), expected %d", i,
			         cases[i].a ? cases[i].a : "(null)", cases[i].b ? cases[i].b : "(null)", got, back,
			         cases[i].expect);
	}
}

/* The comparison must be a total order, or sorting and range filters disagree. */
static void test_version_transitive(void **state)
{
	(void)state;
	static const char *const v[] = {"",     "abc",    "9",    "10",         "10.0",        "10.0.1",
	                                "10.1", "10.1-a", "12.1", "12.1.3",     "12.1.3-beta", "12.1.3-rc1",
	                                "12.2", "100",    "12.",  "12.1.3.0.0", "0",           "0.0.0"};
	size_t n = sizeof v / sizeof v[0];
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++)
			for (size_t k = 0; k < n; k++) {
				int ij = bw_version_compare(v[i], v[j]), jk = bw_version_compare(v[j], v[k]);
				int ik = bw_version_compare(v[i], v[k]);
				if (ij <= 0 && jk <= 0 && ik > 0)
					fail_msg("not transitive: %s <= %s <= %s but %s > %s", v[i], v[j], v[k], v[i],
					         v[k]);
			}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_imei),
	    cmocka_unit_test(test_meid),
	    cmocka_unit_test(test_mac),
	    cmocka_unit_test(test_enrollment_key),
	    cmocka_unit_test(test_version_compare),
	    cmocka_unit_test(test_version_transitive),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
