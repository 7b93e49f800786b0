/* bench_rules.c: bw-rules-bench: rule evaluations per second of the sandboxed engine (device view built per
 * device, instruction budget and memory cap on) against plain Lua running the same 10 checks on the same
 * devices (each device converted to a Lua table, the checks called with lua_pcall, no sandbox, no budget),
 * measured in the same run. Also the rate of the shipped example rules (which use the C helpers).
 * Usage: bw-rules-bench [DEVICES (100000)] [RULES_DIR (scripts/rules)] [ROUNDS (3)] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lualib.h>

#include "engine.h"

/* Plain field access and Lua logic only, so that plain Lua can run the very same text. */
static const char bench_rules[] =
    "rule { id = 'b-os', title = 't', severity = 'high', check = function(d) return d.os_version >= '12' end }\n"
    "rule { id = 'b-root', title = 't', severity = 'high', check = function(d) return not d.rooted and not "
    "d.jailbroken end }\n"
    "rule { id = 'b-usb', title = 't', severity = 'low', check = function(d) return d.usb_debugging ~= true end }\n"
    "rule { id = 'b-enc', title = 't', severity = 'low', check = function(d) return d.encrypted == true end }\n"
    "rule { id = 'b-lock', title = 't', severity = 'low', check = function(d) return d.screen_lock == true end }\n"
    "rule { id = 'b-seen', title = 't', severity = 'low', check = function(d) return 1767225600 - d.last_seen < "
    "30 * 86400 end }\n"
    "rule { id = 'b-dev', title = 't', severity = 'low', check = function(d) return not d.developer_options end "
    "}\n"
    "rule { id = 'b-src', title = 't', severity = 'low', check = function(d) return not d.unknown_sources end }\n"
    "rule { id = 'b-app', title = 't', severity = 'low', check = function(d)\n"
    "  for _, a in ipairs(d.apps) do if a.id == 'com.example.torrent' then return false end end return true end }\n"
    "rule { id = 'b-wifi', title = 't', severity = 'low', check = function(d) return d.wifi == nil or "
    "d.wifi.security ~= 'open' end }\n";

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static json_t *make_device(unsigned i)
{
	char os[16], serial[32];
	snprintf(os, sizeof os, "%u.%u", 9 + i % 7, i % 4);
	snprintf(serial, sizeof serial, "SN%08u", i);
	json_t *apps = json_array();
	for (unsigned a = 0; a < 8; a++) {
		char id[48];
		snprintf(id, sizeof id, a == 7 && i % 50 == 0 ? "com.example.torrent" : "com.example.app%u", a);
		json_array_append_new(apps,
		                      json_pack("{s:s,s:s,s:s}", "id", id, "version", "1.2.3", "signer_sha256",
		                                "f0fd6c5b410f25cb25c3b53346c8972fae30f8ee7411df910480ad6b2d60db83"));
	}
	json_t *findings = json_array();
	json_array_append_new(findings,
	                      json_pack("{s:s,s:s,s:I}", "type", i % 10 ? "web_blocked" : "malware", "severity", "high",
	                                "at", (json_int_t)(1767225600 - (i % 20) * 86400)));
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:b,s:b,s:b,s:b,s:b,s:b,s:b,s:o,s:o,s:o}", "platform",
	                 i % 3 ? "android" : "ios", "os_version", os, "model", "Pixel 8", "manufacturer", "Google",
	                 "serial", serial, "group", i % 2 ? "sales" : "field", "owner", "user@example.com", "last_seen",
	                 (json_int_t)(1767225600 - (i % 40) * 86400), "rooted", i % 97 == 0, "jailbroken", 0,
	                 "developer_options", i % 5 == 0, "usb_debugging", i % 7 == 0, "unknown_sources", 0,
	                 "encrypted", i % 11 != 0, "screen_lock", 1, "apps", apps, "wifi",
	                 json_pack("{s:s,s:s,s:s}", "ssid", "corp", "bssid", "02:00:00:aa:bb:cc", "security",
	                           i % 13 ? "wpa3" : "open"),
	                 "findings", findings);
}

/* Plain Lua: the device converted eagerly to tables, as a straightforward embedding would. */
static void push_plain(lua_State *L, json_t *v)
{
	const char *k;
	json_t *x;
	size_t i;
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		lua_createtable(L, 0, (int)json_object_size(v));
		json_object_foreach(v, k, x)
		{
			push_plain(L, x);
			lua_setfield(L, -2, k);
		}
		break;
	case JSON_ARRAY:
		lua_createtable(L, (int)json_array_size(v), 0);
		json_array_foreach(v, i, x)
		{
			push_plain(L, x);
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		break;
	case JSON_STRING:
		lua_pushlstring(L, json_string_value(v), json_string_length(v));
		break;
	case JSON_INTEGER:
		lua_pushinteger(L, (lua_Integer)json_integer_value(v));
		break;
	case JSON_REAL:
		lua_pushnumber(L, json_real_value(v));
		break;
	case JSON_TRUE:
	case JSON_FALSE:
		lua_pushboolean(L, json_is_true(v));
		break;
	default:
		lua_pushnil(L);
	}
}

static double run_plain(json_t **devs, unsigned n, long *passes)
{
	lua_State *L = luaL_newstate();
	luaL_openlibs(L);
	lua_newtable(L);
	lua_setglobal(L, "RULES");
	if (luaL_dostring(L, "function rule(r) RULES[#RULES + 1] = r.check end") || luaL_dostring(L, bench_rules)) {
		fprintf(stderr, "plain: %s\n", lua_tostring(L, -1));
		exit(1);
	}
	lua_getglobal(L, "RULES");
	int rules = lua_gettop(L), nr = (int)lua_rawlen(L, rules);
	double t0 = now_s();
	for (unsigned i = 0; i < n; i++) {
		push_plain(L, devs[i]);
		for (int r = 1; r <= nr; r++) {
			lua_rawgeti(L, rules, r);
			lua_pushvalue(L, -2);
			if (lua_pcall(L, 1, 1, 0) == LUA_OK)
				*passes += lua_toboolean(L, -1);
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	double dt = now_s() - t0;
	lua_close(L);
	return (double)n * nr / dt;
}

static double run_engine(bw_rules_engine *e, json_t **devs, unsigned n, long *passes, long *errors)
{
	size_t nr = bw_rules_count(e);
	struct bw_rule_result *res = calloc(nr, sizeof *res);
	double t0 = now_s();
	for (unsigned i = 0; i < n; i++) {
		bw_rules_evaluate(e, devs[i], res, nr);
		for (size_t r = 0; r < nr; r++) {
			*passes += res[r].verdict == BW_RULE_PASS;
			*errors += res[r].verdict == BW_RULE_ERROR;
		}
	}
	double dt = now_s() - t0;
	free(res);
	return (double)n * (double)nr / dt;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 100000;
	const char *dir = argc > 2 ? argv[2] : "scripts/rules";
	int rounds = argc > 3 ? atoi(argv[3]) : 3;
	if (n == 0 || rounds < 1 || rounds > 50) {
		fprintf(stderr, "usage: bw-rules-bench [DEVICES] [RULES_DIR] [ROUNDS]\n");
		return 2;
	}
	json_t **devs = malloc(n * sizeof *devs);
	for (unsigned i = 0; i < n; i++)
		devs[i] = make_device(i);

	bw_error err;
	bw_rules_engine *e = bw_rules_engine_new(NULL, &err), *ex = bw_rules_engine_new(NULL, &err);
	if (!e || !ex || bw_rules_load_string(e, "bench.lua", bench_rules, strlen(bench_rules), &err) != BW_OK) {
		fprintf(stderr, "bw-rules-bench: %s\n", err.message);
		return 1;
	}
	bw_rules_set_now(e, 1767225600);
	bw_rules_set_now(ex, 1767225600);
	static const char *const examples[] = {"min_os_version.lua", "rooted.lua",   "usb_debugging.lua",
	                                       "malware_recent.lua", "not_seen.lua", "encryption.lua",
	                                       "blocked_apps.lua"};
	for (size_t i = 0; i < 7; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, examples[i]);
		if (bw_rules_load_file(ex, path, &err) != BW_OK) {
			fprintf(stderr, "bw-rules-bench: %s\n", err.message);
			return 1;
		}
	}
	double plain[50] = {0}, sandbox[50] = {0}, ratio[50] = {0}, shipped[50] = {0};
	long pp = 0, sp = 0, se = 0, xp = 0, xe = 0;
	for (int r = 0; r < rounds; r++) {
		pp = sp = se = xp = xe = 0;
		plain[r] = run_plain(devs, n, &pp);
		sandbox[r] = run_engine(e, devs, n, &sp, &se);
		ratio[r] = sandbox[r] / plain[r];
		shipped[r] = run_engine(ex, devs, n, &xp, &xe);
	}
	if (pp != sp || se != 0 || xe != 0) {
		fprintf(stderr,
		        "bw-rules-bench: verdicts differ: plain %ld passes, sandbox %ld passes %ld errors, "
		        "examples %ld errors\n",
		        pp, sp, se, xe);
		return 1;
	}
	qsort(plain, (size_t)rounds, sizeof(double), cmp_double);
	qsort(sandbox, (size_t)rounds, sizeof(double), cmp_double);
	qsort(ratio, (size_t)rounds, sizeof(double), cmp_double);
	qsort(shipped, (size_t)rounds, sizeof(double), cmp_double);
	int m = rounds / 2;
	printf("devices: %u, rules: 10, rounds: %d (medians), budget %ld instructions, memory cap %u MiB\n", n, rounds,
	       BW_RULES_DEFAULT_INSTRUCTIONS, BW_RULES_DEFAULT_MEMORY / (1024 * 1024));
	printf("sandboxed engine:        %12.0f evaluations/s\n", sandbox[m]);
	printf("plain Lua (same checks): %12.0f evaluations/s\n", plain[m]);
	printf("ratio sandboxed/plain:   %12.2f\n", ratio[m]);
	printf("shipped examples (7):    %12.0f evaluations/s\n", shipped[m]);
	printf("goal >= 1000000 evaluations/s per core: %s\n", sandbox[m] >= 1e6 ? "met" : "NOT met");
	bw_rules_engine_free(e);
	bw_rules_engine_free(ex);
	for (unsigned i = 0; i < n; i++)
		json_decref(devs[i]);
	free(devs);
	return 0;
}
