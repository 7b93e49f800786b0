/* tests/unit/rules_test.c: the compliance rules engine: the shipped example rules on fixture devices,
 * version comparison, rule declaration checks, helpers, the device view, error locations, and the
 * sandbox against every escape attempt we could think of. (Named rules_test.c, not test_*.c: it links
 * bw_rules_engine, which the generic unit-test glob does not.) */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"

#ifndef BW_SOURCE_DIR
#define BW_SOURCE_DIR "."
#endif

#define NOW 1767225600 /* 2026-01-01T00:00:00Z: the fixtures are dated against it */

static json_t *load_device(const char *name)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/tests/fixtures/devices/%s", BW_SOURCE_DIR, name);
	json_error_t jerr;
	json_t *d = json_load_file(path, 0, &jerr);
	if (!d)
		fail_msg("%s: %s", path, jerr.text);
	return d;
}

static bw_rules_engine *new_engine(size_t mem, long instr)
{
	struct bw_rules_limits lim = {.memory_bytes = mem, .instructions = instr};
	bw_error err;
	bw_rules_engine *e = bw_rules_engine_new(&lim, &err);
	if (!e)
		fail_msg("engine: %s", err.message);
	bw_rules_set_now(e, NOW);
	return e;
}

static void load_ok(bw_rules_engine *e, const char *name, const char *text)
{
	bw_error err;
	bw_error_clear(&err);
	int rc = bw_rules_load_string(e, name, text, strlen(text), &err);
	if (rc != BW_OK)
		fail_msg("load %s: %s", name, err.message);
}

static void load_fails(const char *text, const char *expect)
{
	bw_rules_engine *e = new_engine(0, 0);
	load_ok(e, "keep.lua",
	        "rule { id = 'keep', title = 'k', severity = 'low', check = function() return true end }");
	bw_error err;
	bw_error_clear(&err);
	int rc = bw_rules_load_string(e, "bad.lua", text, strlen(text), &err);
	if (rc == BW_OK || !strstr(err.message, expect))
		fail_msg("expected a load error containing '%s', got rc %d: '%s'\n  for: %s", expect, rc, err.message,
		         text);
	assert_int_equal(bw_rules_count(e), 1); /* nothing of the bad file was kept */
	bw_rules_engine_free(e);
}

/* ---- the shipped examples on the fixtures ---- */

static const char *const example_files[] = {"min_os_version.lua", "rooted.lua",   "usb_debugging.lua",
                                            "malware_recent.lua", "not_seen.lua", "encryption.lua",
                                            "blocked_apps.lua"};

static void test_examples(void **state)
{
	(void)state;
	bw_rules_engine *e = new_engine(0, 0);
	for (size_t i = 0; i < 7; i++) {
		char path[1024];
		bw_error err;
		snprintf(path, sizeof path, "%s/scripts/rules/%s", BW_SOURCE_DIR, example_files[i]);
		if (bw_rules_load_file(e, path, &err) != BW_OK)
			fail_msg("%s", err.message);
	}
	assert_int_equal(bw_rules_count(e), 7);
	assert_string_equal(bw_rules_info(e, 0)->id, "min-os-version");
	assert_string_equal(bw_rules_info(e, 0)->severity, "high");
	assert_int_equal(bw_rules_info(e, 0)->platforms, BW_RULE_ANDROID | BW_RULE_IOS);
	assert_int_equal(bw_rules_info(e, 3)->nactions, 3);
	assert_string_equal(bw_rules_info(e, 3)->actions[2], "command:scan");
	assert_null(bw_rules_info(e, 7));

	static const struct {
		const char *device;
		const char *verdicts; /* per rule in load order: P pass, F fail, N not applicable */
	} cases[] = {
	    {"android_compliant.json", "PPPPPPP"},
	    {"android_noncompliant.json", "FFFFFFF"},
	    {"ios_compliant.json", "PPNPPPP"},
	    {"ios_noncompliant.json", "FFNPFPF"},
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		json_t *d = load_device(cases[c].device);
		struct bw_rule_result res[7];
		assert_int_equal(bw_rules_evaluate(e, d, res, 7), BW_OK);
		for (size_t i = 0; i < 7; i++) {
			char want = cases[c].verdicts[i];
			enum bw_rule_verdict v = want == 'P'   ? BW_RULE_PASS
			                         : want == 'F' ? BW_RULE_FAIL
			                                       : BW_RULE_NOT_APPLICABLE;
			if (res[i].verdict != v)
				fail_msg("%s, rule %s: got %s (%s), want %c", cases[c].device, res[i].rule->id,
				         bw_rule_verdict_name(res[i].verdict), res[i].message, want);
		}
		if (c == 1) {
			assert_string_equal(res[0].message, "OS 11.0.0_r48 is older than 12");
			assert_string_equal(res[1].message, "the device is rooted");
			assert_string_equal(res[3].message, "2 malware finding(s) in the last 7 days");
			assert_string_equal(res[4].message, "last seen 40 days ago");
			assert_string_equal(res[6].message, "blocked app installed: com.example.torrent");
		}
		if (c == 3)
			assert_string_equal(res[4].message, "the device has never checked in");
		json_decref(d);
	}
	bw_rules_engine_free(e);
}

/* ---- version comparison ---- */

static void test_versions(void **state)
{
	(void)state;
	static const struct {
		const char *a, *b;
		int cmp; /* 2: invalid */
	} cases[] = {
	    {"12", "12", 0},
	    {"12", "12.0", 0},
	    {"12", "12.0.0", 0},
	    {"12.0.1", "12", 1},
	    {"12.1", "12.0.1", 1},
	    {"12.1.3", "12.1.10", -1},
	    {"9", "10", -1},
	    {"10", "9.9.9", 1},
	    {"12.1.3-samsung", "12.1.3", 0},
	    {"11.0.0_r48", "12", -1},
	    {"15.7.9 (19H365)", "16", -1},
	    {"17.1.2", "16", 1},
	    {"v2.3", "2.3.0", 0},
	    {" 14", "14", 0},
	    {"14.", "14", 0},
	    {"1.2.3.4.5", "1.2.3.4.6", -1},
	    {"2023.10", "2023.9", 1},
	    {"", "1", 2},
	    {"abc", "1", 2},
	    {"1", "beta", 2},
	    {"1234567890", "1", 2},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int out = 99;
		int rc = bw_rules_version_cmp(cases[i].a, cases[i].b, &out);
		if (cases[i].cmp == 2) {
			if (rc != BW_E_INVALID)
				fail_msg("'%s' vs '%s': expected invalid", cases[i].a, cases[i].b);
			continue;
		}
		if (rc != BW_OK || out != cases[i].cmp)
			fail_msg("'%s' vs '%s': got rc %d cmp %d, want %d", cases[i].a, cases[i].b, rc, out,
			         cases[i].cmp);
		/* the symmetric case */
		assert_int_equal(bw_rules_version_cmp(cases[i].b, cases[i].a, &out), BW_OK);
		assert_int_equal(out, -cases[i].cmp);
	}
	/* The Lua helpers agree, and accept numbers. */
	bw_rules_engine *e = new_engine(0, 0);
	load_ok(e, "v.lua",
	        "rule { id = 'v', title = 'v', severity = 'low', check = function(d)\n"
	        "  assert(version_ge('12.0.1', '12') and version_lt('12', '12.0.1') and version_eq('12', '12.0'))\n"
	        "  assert(version_gt(12.5, '12.4.9') and version_le('1.0', 1) and version_cmp('3', '2.9') == 1)\n"
	        "  assert(version_cmp('2', '2.0.0') == 0 and version_cmp('1.9', '2') == -1)\n"
	        "  return true end }\n"
	        "rule { id = 'bad', title = 'b', severity = 'low', check = function(d)\n"
	        "  return version_ge(d.nothing, '12') end }\n"
	        "rule { id = 'bad2', title = 'b', severity = 'low', check = function(d)\n"
	        "  return version_ge('beta', '12') end }\n");
	json_t *d = json_pack("{s:s}", "platform", "android");
	struct bw_rule_result r[3];
	bw_rules_evaluate(e, d, r, 3);
	assert_int_equal(r[0].verdict, BW_RULE_PASS);
	assert_int_equal(r[1].verdict, BW_RULE_ERROR);
	assert_string_equal(r[1].message, "v.lua:7: version_ge: argument 1 must be a version string, not nil");
	assert_int_equal(r[2].verdict, BW_RULE_ERROR);
	assert_string_equal(r[2].message,
	                    "v.lua:9: version_ge: 'beta' is not a version (expected digits like \"12.1.3\")");
	json_decref(d);
	bw_rules_engine_free(e);
}

/* ---- declarations ---- */

static void test_declarations(void **state)
{
	(void)state;
	load_fails("rule { id = 'Bad_Id', title = 't', severity = 'low', check = function() return true end }",
	           "bad.lua:1: rule: id 'Bad_Id' is not valid");
	load_fails("rule { id = 'keep', title = 't', severity = 'low', check = function() return true end }",
	           "rule keep: the id is already used (keep.lua:1)");
	load_fails("rule { id = 'a', title = 't', severity = 'urgent', check = function() return true end }",
	           "'severity' must be one of");
	load_fails("rule { id = 'a', title = '', severity = 'low', check = function() return true end }", "'title'");
	load_fails("rule { id = 'a', title = 't', severity = 'low', check = true }", "'check' must be a function");
	load_fails("rule { id = 'a', title = 't', severity = 'low', platforms = {'windows'}, check = function() end }",
	           "unknown platform 'windows'");
	load_fails("rule { id = 'a', title = 't', severity = 'low', actions = {'reboot'}, check = function() end }",
	           "unknown action 'reboot'");
	load_fails("rule { id = 'a', title = 't', severity = 'low', actions = {'command:'}, check = function() end }",
	           "unknown action 'command:'");
	load_fails("rule { id = 'a', title = 't', severity = 'low', platform = {'ios'}, check = function() end }",
	           "unknown field 'platform'");
	load_fails("rule { id = 'a', title = 't', description = 42, severity = 'low', check = function() end }",
	           "'description' must be a string");
	load_fails("local x = 1\n", "the file declares no rule");
	load_fails("rule { id = 'a', title = 't', severity = 'low', check = function() return true end }\n"
	           "rule { id = 'b', title = 't' severity = 'low' }\n",
	           "bad.lua:2:");
	/* One good and one bad rule: neither is kept (load_fails checks the count). */
	load_fails("rule { id = 'good', title = 't', severity = 'low', check = function() return true end }\n\n"
	           "rule { id = 'b', title = 't', severity = 'low' }\n",
	           "bad.lua:3: rule b: 'check'");
	load_fails("error('boom')", "bad.lua:1: boom");
	load_fails("while true do end", "instruction budget");
	load_fails("\x1bLua\x54\x00", "binary");
	load_fails("rule 'x'", "bad argument #1 to 'rule'");

	bw_rules_engine *e = new_engine(0, 0);
	load_ok(e, "ok.lua",
	        "rule { id = 'x-1', title = 'T', description = 'Why it matters', severity = 'critical', platforms = "
	        "{'ios'},\n"
	        "  actions = {'notify', 'mark_noncompliant', 'block_mail', 'command:lock'}, check = function() "
	        "return true end }\n");
	const struct bw_rule_info *ri = bw_rules_info(e, 0);
	assert_string_equal(ri->source, "ok.lua");
	assert_string_equal(ri->description, "Why it matters");
	assert_int_equal(ri->line, 1); /* where rule { starts */
	assert_int_equal(ri->platforms, BW_RULE_IOS);
	assert_int_equal(ri->nactions, 4);
	assert_string_equal(ri->actions[3], "command:lock");
	bw_error err;
	assert_int_equal(bw_rules_load_file(e, "/nonexistent/x.lua", &err), BW_E_IO);
	bw_rules_engine_free(e);
}

/* ---- helpers and the view ---- */

static void test_helpers(void **state)
{
	(void)state;
	bw_rules_engine *e = new_engine(0, 0);
	load_ok(e, "h.lua",
	        "rule { id = 'h', title = 'h', severity = 'low', check = function(d)\n"
	        "  assert(has_app(d, 'com.example.mail') and has_app('com.example.mail'))\n"
	        "  assert(not has_app(d, 'com.nope'))\n"
	        "  assert(app_version(d, 'com.example.mail') == '3.2.1' and app_version('com.nope') == nil)\n"
	        "  assert(count_findings('malware') == 1 and count_findings(d, 'malware', 7) == 0)\n"
	        "  assert(count_findings('malware', 30) == 1 and count_findings() == 2)\n"
	        "  assert(count_findings('*', 1) == 1 and count_findings(d, 'web_blocked', 1) == 1)\n"
	        "  assert(in_group(d, 'sales') and in_group('sales') and not in_group('hr'))\n"
	        "  assert(is_android(d) and not is_ios() and platform_is('android'))\n"
	        "  assert(days_since(d.last_seen) > 0.04 and days_since(d.last_seen) < 0.05)\n"
	        "  assert(#d.apps == 2 and d.apps[1].id == 'com.android.chrome' and d.apps[3] == nil)\n"
	        "  assert(d.wifi.ssid == 'corp' and d.findings[1].at == 1765000000 and d.rooted == false)\n"
	        "  local n = 0 for i, a in ipairs(d.apps) do n = n + i end assert(n == 3)\n"
	        "  local keys = 0 for k, v in pairs(d) do keys = keys + 1 end assert(keys == 18)\n"
	        "  local ids = {} for _, a in pairs(d.apps) do ids[#ids + 1] = a.id end\n"
	        "  assert(table.concat(ids, ',') == 'com.android.chrome,com.example.mail')\n"
	        "  assert(tostring(d) == 'device view' and d.nothing == nil and d[1] == nil)\n"
	        "  assert(string.upper('a') == 'A' and ('x'):rep(3) == 'xxx' and math.max(1, 2) == 2)\n"
	        "  assert(utf8.len('h\\u{e9}') == 2 and select('#', 1, 2) == 2)\n"
	        "  print('ignored')\n"
	        "  return true end }\n"
	        "rule { id = 'ds', title = 'd', severity = 'low', check = function(d) return days_since(nil) end }\n");
	json_t *d = load_device("android_compliant.json");
	struct bw_rule_result r[2];
	bw_rules_evaluate(e, d, r, 2);
	if (r[0].verdict != BW_RULE_PASS)
		fail_msg("helpers: %s", r[0].message);
	assert_int_equal(r[1].verdict, BW_RULE_ERROR);
	assert_string_equal(r[1].message, "h.lua:22: days_since: argument 1 must be a Unix time (number), not nil");
	json_decref(d);
	bw_rules_engine_free(e);
}

/* ---- errors and their locations ---- */

static void test_error_lines(void **state)
{
	(void)state;
	bw_rules_engine *e = new_engine(0, 0);
	load_ok(e, "lines.lua",
	        "local function helper(x)\n"                                            /* 1 */
	        "  return x.field > 1\n"                                                /* 2 */
	        "end\n"                                                                 /* 3 */
	        "rule { id = 'a', title = 'a', severity = 'low', check = function(d)\n" /* 4 */
	        "  return helper(d)\n"                                                  /* 5 */
	        "end }\n"                                                               /* 6 */
	        "rule { id = 'b', title = 'b', severity = 'low', check = function(d)\n" /* 7 */
	        "  error('custom failure')\n"                                           /* 8 */
	        "end }\n"                                                               /* 9 */
	        "rule { id = 'c', title = 'c', severity = 'low', check = function(d)\n" /* 10 */
	        "  error({})\n"                                                         /* 11 */
	        "end }\n"                                                               /* 12 */
	        "rule { id = 'd', title = 'd', severity = 'low', check = function(d)\n" /* 13 */
	        "  return nil\n"                                                        /* 14 */
	        "end }\n"                                                               /* 15 */
	        "rule { id = 'e', title = 'e', severity = 'low', check = function(d)\n" /* 16 */
	        "  error('no position', 0)\n"                                           /* 17 */
	        "end }\n"                                                               /* 18 */
	        "rule { id = 'f', title = 'f', severity = 'low', check = function(d)\n" /* 19 */
	        "  return d.os_version .. nothing\n"                                    /* 20 */
	        "end }\n"                                                               /* 21 */
	        "rule { id = 'g', title = 'g', severity = 'low', check = function(d)\n" /* 22 */
	        "  return false, 'reason given'\n"                                      /* 23 */
	        "end }\n");                                                             /* 24 */
	json_t *d = json_pack("{s:s,s:s}", "platform", "ios", "os_version", "17");
	struct bw_rule_result r[7];
	assert_int_equal(bw_rules_count(e), 7);
	bw_rules_evaluate(e, d, r, 7);
	for (int i = 0; i < 6; i++)
		assert_int_equal(r[i].verdict, BW_RULE_ERROR);
	assert_string_equal(r[0].message, "lines.lua:2: attempt to compare number with nil");
	assert_string_equal(r[1].message, "lines.lua:8: custom failure");
	assert_string_equal(r[2].message, "lines.lua:11: error raised with a table value instead of a message");
	assert_string_equal(r[3].message, "lines.lua:13: rule d: check returned nil instead of a boolean");
	assert_string_equal(r[4].message, "lines.lua:17: no position");
	assert_string_equal(r[5].message, "lines.lua:20: attempt to concatenate a nil value (global 'nothing')");
	assert_int_equal(r[6].verdict, BW_RULE_FAIL);
	assert_string_equal(r[6].message, "reason given");
	json_decref(d);
	bw_rules_engine_free(e);
}

/* ---- the sandbox ---- */

/* Each attack is the body of a check. It must end in an error containing `expect`; a canary rule after it
 * must still pass, and the engine must still evaluate normally afterwards. */
static const struct attack {
	const char *body;
	const char *expect;
} attacks[] = {
    {"os.execute('touch /tmp/rules-pwned')", "global 'os'"},
    {"return io.open('/etc/passwd')", "global 'io'"},
    {"return require('os')", "global 'require'"},
    {"return load('\\27Lua')", "global 'load'"},
    {"return loadstring('return 1')", "global 'loadstring'"},
    {"return dofile('/etc/passwd')", "global 'dofile'"},
    {"return loadfile('/etc/passwd')", "global 'loadfile'"},
    {"return string.dump(print)", "field 'dump'"},
    {"return ('x').dump(print)", "field 'dump'"},
    {"return debug.getregistry()", "global 'debug'"},
    {"return package.loaded", "global 'package'"},
    {"collectgarbage('stop')", "global 'collectgarbage'"},
    {"return _G.os", "global '_G'"},
    {"return _ENV.os.execute", "global 'os'"},
    {"return getmetatable('').__index", "global 'getmetatable'"},
    {"setmetatable({}, {__gc = function() while true do end end})", "global 'setmetatable'"},
    {"return rawset(string, 'upper', nil)", "global 'rawset'"},
    {"return rawget(d, 'x')", "global 'rawget'"},
    {"pcall(function() while true do end end) return true", "global 'pcall'"},
    {"xpcall(function() end, print) return true", "global 'xpcall'"},
    {"local co = coroutine.wrap(function() while true do end end) co()", "global 'coroutine'"},
    {"while true do end", "instruction budget of 100000 exceeded"},
    {"local i = 0 repeat i = i + 1 until false", "instruction budget"},
    {"local function f(n) return f(n + 1) + 1 end return f(1)", "attack23.lua:2: instruction budget"},
    {"local t = {} for i = 1, 1e9 do t[i] = i end", "instruction budget"},
    {"return string.rep('x', 2^40)", "exceed the memory limit"},
    {"return ('x'):rep(1e9, ',')", "exceed the memory limit"},
    {"local s = ('x'):rep(4e6) while true do s = s .. s end", "instruction budget"},
    {"local s = ('x'):rep(1e5) local n = 0 while true do n = n + #s:upper() end", "instruction budget"},
    {"return ('a'):rep(20000):find('.-.-.-.-b')", "too complex"},
    {"return table.unpack({}, 1, 1e8)", "instruction budget"},
    {"d.rooted = false", "the device view is read-only (cannot set 'rooted')"},
    {"d.apps[1].id = 'x'", "the device view is read-only"},
    {"d.apps[3] = {}", "the device view is read-only"},
    {"version_ge = function() return true end", "cannot assign the global 'version_ge'"},
    {"x = 1", "cannot assign the global 'x'"},
    {"string.upper = nil", "'upper' is read-only"},
    {"math.pi = 3", "'pi' is read-only"},
    {"table.insert = print", "'insert' is read-only"},
    {"rule { id = 'late', title = 't', severity = 'low', check = function() return true end }",
     "rule{} can only be called when a rule file is loaded"},
    {"return next(string)", "boolean"}, /* the proxy is empty: next(string) is nil, not a boolean */
    {"return math.randomseed(1)", "field 'randomseed'"},
};

static void test_sandbox(void **state)
{
	(void)state;
	size_t n = sizeof attacks / sizeof attacks[0];
	bw_rules_engine *e = new_engine(16u * 1024 * 1024, 100000);
	/* The canary re-checks, every time, what the attacks try to break. */
	static const char canary[] =
	    "rule { id = 'canary', title = 'c', severity = 'low', check = function(d)\n"
	    "  return string.upper('a') == 'A' and version_ge('12', '11') and d.rooted == false and x == nil\n"
	    "    and math.pi > 3.14 and table.insert ~= print and os == nil\n"
	    "end }\n";
	for (size_t i = 0; i < n; i++) {
		char name[32], text[1024];
		snprintf(name, sizeof name, "attack%zu.lua", i);
		snprintf(text, sizeof text,
		         "rule { id = 'attack-%zu', title = 't', severity = 'low', check = function(d)\n%s\nend }\n", i,
		         attacks[i].body);
		load_ok(e, name, text);
	}
	load_ok(e, "canary.lua", canary);
	json_t *d = load_device("android_compliant.json");
	struct bw_rule_result *r = calloc(n + 1, sizeof *r);
	assert_non_null(r);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(bw_rules_evaluate(e, d, r, n + 1), BW_OK);
		for (size_t i = 0; i < n; i++) {
			if (r[i].verdict != BW_RULE_ERROR || !strstr(r[i].message, attacks[i].expect))
				fail_msg("attack %zu (%s): got %s '%s', want an error containing '%s'", i,
				         attacks[i].body, bw_rule_verdict_name(r[i].verdict), r[i].message,
				         attacks[i].expect);
		}
		if (r[n].verdict != BW_RULE_PASS)
			fail_msg("canary: %s %s", bw_rule_verdict_name(r[n].verdict), r[n].message);
	}
	/* The memory cap held, and what the bombs allocated was given back. */
	assert_true(bw_rules_memory(e) < 16u * 1024 * 1024);
	free(r);
	json_decref(d);
	bw_rules_engine_free(e);
	assert_false(access("/tmp/rules-pwned", F_OK) == 0);
}

/* A view kept by a rule stops working once its evaluation has ended (it points into freed JSON). */
static void test_stale_view(void **state)
{
	(void)state;
	bw_rules_engine *e = new_engine(0, 0);
	load_ok(e, "stash.lua",
	        "local kept\n"
	        "rule { id = 'stash', title = 's', severity = 'low', check = function(d)\n"
	        "  if kept then return kept.os_version == 'x' end\n"
	        "  kept = d return true end }\n");
	struct bw_rule_result r;
	json_t *d = load_device("android_compliant.json");
	bw_rules_evaluate(e, d, &r, 1);
	assert_int_equal(r.verdict, BW_RULE_PASS);
	json_decref(d);
	d = load_device("ios_compliant.json");
	bw_rules_evaluate(e, d, &r, 1);
	assert_int_equal(r.verdict, BW_RULE_ERROR);
	assert_string_equal(r.message, "stash.lua:3: a device view was used after its evaluation ended");
	json_decref(d);
	assert_int_equal(bw_rules_evaluate(e, NULL, &r, 1), BW_E_INVALID);
	json_t *arr = json_array();
	assert_int_equal(bw_rules_evaluate(e, arr, &r, 1), BW_E_INVALID);
	json_decref(arr);
	bw_rules_engine_free(e);
}

/* A table bomb under a large budget runs into the memory cap instead; the next rule still runs. */
static void test_memory_cap(void **state)
{
	(void)state;
	bw_rules_engine *e = new_engine(4u * 1024 * 1024, 1000000000L);
	load_ok(e, "bomb.lua",
	        "rule { id = 'bomb', title = 'b', severity = 'low', check = function(d)\n"
	        "  local t = {} for i = 1, 1e8 do t[i] = {i} end return true end }\n"
	        "rule { id = 'after', title = 'a', severity = 'low', check = function(d)\n"
	        "  local t = {} for i = 1, 1000 do t[i] = {i} end return #t == 1000 end }\n"
	        "rule { id = 'deep', title = 'd', severity = 'low', check = function(d)\n"
	        "  local function f(n) return f(n + 1) + 1 end return f(1) end }\n");
	json_t *d = json_object();
	struct bw_rule_result r[3];
	for (int round = 0; round < 3; round++) {
		bw_rules_evaluate(e, d, r, 3);
		assert_int_equal(r[2].verdict, BW_RULE_ERROR);
		if (!strstr(r[2].message, "stack overflow") && !strstr(r[2].message, "not enough memory"))
			fail_msg("deep: %s", r[2].message);
		assert_int_equal(r[0].verdict, BW_RULE_ERROR);
		if (!strstr(r[0].message, "not enough memory"))
			fail_msg("bomb: %s", r[0].message);
		assert_int_equal(r[1].verdict, BW_RULE_PASS);
	}
	json_decref(d);
	bw_rules_engine_free(e);
	/* A cap too small for the sandbox itself is an error, not a crash. */
	struct bw_rules_limits lim = {.memory_bytes = 1024};
	bw_error err;
	assert_null(bw_rules_engine_new(&lim, &err));
	assert_int_equal(err.code, BW_E_NOMEM);
}

/* Rules in one file cannot see another file's globals, and file globals are frozen after loading. */
static void test_isolation(void **state)
{
	(void)state;
	bw_rules_engine *e = new_engine(0, 0);
	load_ok(
	    e, "a.lua",
	    "limit = '12'\nfunction too_old(d) return version_lt(d.os_version, limit) end\n"
	    "rule { id = 'a', title = 'a', severity = 'low', check = function(d) return not too_old(d) end }\n"
	    "rule { id = 'a2', title = 'a', severity = 'low', check = function(d) limit = '99' return true end }\n");
	load_ok(e, "b.lua",
	        "rule { id = 'b', title = 'b', severity = 'low', check = function(d) return limit == nil and too_old "
	        "== nil end }\n");
	json_t *d = json_pack("{s:s,s:s}", "platform", "android", "os_version", "13");
	struct bw_rule_result r[3];
	for (int round = 0; round < 2; round++) {
		bw_rules_evaluate(e, d, r, 3);
		assert_int_equal(r[0].verdict, BW_RULE_PASS);
		assert_int_equal(r[1].verdict, BW_RULE_ERROR);
		assert_non_null(strstr(r[1].message, "cannot assign the global 'limit'"));
		assert_int_equal(r[2].verdict, BW_RULE_PASS);
	}
	json_decref(d);
	bw_rules_engine_free(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_examples),   cmocka_unit_test(test_versions),    cmocka_unit_test(test_declarations),
	    cmocka_unit_test(test_helpers),    cmocka_unit_test(test_error_lines), cmocka_unit_test(test_sandbox),
	    cmocka_unit_test(test_stale_view), cmocka_unit_test(test_memory_cap),  cmocka_unit_test(test_isolation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
