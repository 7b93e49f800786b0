/* tests/unit/test_config.c: the configuration loader: the sandbox, includes and helpers, the
 * conversion with file:line, field tables applied to an instance, durations and the markdown. */
#include "testutil.h"

#include "config.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef BW_SOURCE_DIR
#define BW_SOURCE_DIR "."
#endif

#define MAX_FILES  6
#define MAX_EXPECT 3

struct tfile {
	const char *name;
	const char *content;
};

/* One field of each type. */
struct fake {
	char *str;
	int64_t num;
	bool flag;
	double ratio;
	struct bw_strings list;
	char *secret;
	int64_t wait_ms;
	char *path;
};

static const struct bw_config_field fake_fields[] = {
    {BW_FIELD_STRING, "str", "\"default text\"", offsetof(struct fake, str), "A string.", 0, 0, 0},
    {BW_FIELD_INT, "num", "42", offsetof(struct fake, num), "An integer.", 0, 1, 100},
    {BW_FIELD_BOOL, "flag", "true", offsetof(struct fake, flag), "A flag.", 0, 0, 0},
    {BW_FIELD_DOUBLE, "ratio", "0.5", offsetof(struct fake, ratio), "A ratio.", 0, 0, 0},
    {BW_FIELD_STRINGS, "list", "{\"a\", \"b\"}", offsetof(struct fake, list), "A list.", 0, 0, 0},
    {BW_FIELD_SECRET, "secret", NULL, offsetof(struct fake, secret), "A secret.", BW_FIELD_REQUIRED, 0, 0},
    {BW_FIELD_DURATION, "wait", "\"30s\"", offsetof(struct fake, wait_ms), "A wait.", 0, 1000, 3600000},
    {BW_FIELD_PATH, "path", "\"data/file.db\"", offsetof(struct fake, path), "A path.", 0, 0, 0},
    BW_FIELD_END};

static const char *fake_known = "(known: str, num, flag, ratio, list, secret, wait, path)";

/* ------------------------------------------------------------------------------------------ */
/* helpers */

static void mkdirs_for(const char *dir, const char *name)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	for (char *p = path + strlen(dir) + 1; (p = strchr(p, '/')); p++) {
		*p = '\0';
		mkdir(path, 0700);
		*p = '/';
	}
}

/* Writes the files into a fresh tmpdir; returns its realpath (caller frees, then rmtree). */
static char *setup_files(const struct tfile *files)
{
	char *dir = bw_test_tmpdir("config");
	char *real = realpath(dir, NULL);
	assert_non_null(real);
	free(dir);
	for (size_t i = 0; i < MAX_FILES && files[i].name; i++) {
		mkdirs_for(real, files[i].name);
		free(bw_test_write(real, files[i].name, files[i].content));
	}
	return real;
}

static bw_config *load_in(const char *dir, const char *name, bw_error *err)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	return bw_config_load(path, err);
}

/* Loads dir/main.lua expecting failure; checks the code, that the message begins with the directory
 * (full paths) and contains every expected substring. */
static void expect_load_error(const char *what, const struct tfile *files, const char *const *expect)
{
	char *dir = setup_files(files);
	bw_error err = {0};
	bw_config *cfg = load_in(dir, "main.lua", &err);
	if (cfg || err.code != BW_E_CONFIG)
		fail_msg("%s: expected a config error, got code %d (%s)", what, err.code, err.message);
	if (strncmp(err.message, dir, strlen(dir)) != 0)
		fail_msg("%s: message does not start with the full path %s: %s", what, dir, err.message);
	for (size_t i = 0; i < MAX_EXPECT && expect[i]; i++)
		if (!strstr(err.message, expect[i]))
			fail_msg("%s: expected \"%s\" in: %s", what, expect[i], err.message);
	bw_test_rmtree(dir);
	free(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* a valid configuration */

static void test_full_fixture(void **state)
{
	(void)state;
	setenv("BW_TEST_HELLO_SECRET", "env-secret-value", 1);
	bw_error err = {0};
	bw_config *cfg = bw_config_load(BW_SOURCE_DIR "/tests/fixtures/config/full/bulwark.lua", &err);
	if (!cfg)
		fail_msg("load: %s", err.message);
	char *dir = realpath(BW_SOURCE_DIR "/tests/fixtures/config/full", NULL);
	assert_non_null(dir);
	char main_path[PATH_MAX], early_path[PATH_MAX], late_path[PATH_MAX];
	snprintf(main_path, sizeof main_path, "%s/bulwark.lua", dir);
	snprintf(early_path, sizeof early_path, "%s/conf.d/10-early.lua", dir);
	snprintf(late_path, sizeof late_path, "%s/conf.d/20-late.lua", dir);
	assert_string_equal(bw_config_base_dir(cfg), dir);
	assert_string_equal(bw_config_path(cfg), main_path);

	/* plugins */
	assert_int_equal(bw_config_plugin_count(cfg), 2);
	const struct bw_plugin_entry *p0 = bw_config_plugin(cfg, 0), *p1 = bw_config_plugin(cfg, 1);
	assert_string_equal(p0->name, "example_hello");
	assert_false(p0->required);
	assert_string_equal(p0->file, main_path);
	assert_int_equal(p0->line, 7);
	assert_string_equal(p1->name, "push_apns");
	assert_true(p1->required);
	assert_int_equal(p1->line, 8);
	assert_null(bw_config_plugin(cfg, 2));

	/* sections in assignment order, with the line where each starts */
	static const struct {
		const char *name;
		int line;
		int file; /* 0 main, 1 early, 2 late */
	} want[] = {{"server", 2, 0},         {"listen", 3, 0}, {"tls", 4, 0}, {"log", 5, 0},
	            {"example_hello", 10, 0}, {"early", 2, 1},  {"late", 2, 2}};
	const char *files[] = {main_path, early_path, late_path};
	assert_int_equal(bw_config_section_count(cfg), sizeof want / sizeof want[0]);
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		const struct bw_config_section *s = bw_config_section_at(cfg, i);
		assert_string_equal(s->name, want[i].name);
		assert_int_equal(s->line, want[i].line);
		assert_string_equal(s->file, files[want[i].file]);
		assert_true(bw_config_has_section(cfg, want[i].name));
	}
	assert_null(bw_config_section_at(cfg, 99));
	assert_false(bw_config_has_section(cfg, "plugins"));
	assert_false(bw_config_has_section(cfg, "push_apns"));

	/* the plugin's section: env and file helpers */
	struct hello {
		char *greeting;
		int64_t interval_ms;
		char *secret;
		char *token;
		int64_t count;
	} h = {0};
	static const struct bw_config_field hello_fields[] = {
	    {BW_FIELD_STRING, "greeting", "\"Hi\"", offsetof(struct hello, greeting), "Greeting.", 0, 0, 0},
	    {BW_FIELD_DURATION, "interval", "\"1m\"", offsetof(struct hello, interval_ms), "Interval.", 0, 0, 0},
	    {BW_FIELD_SECRET, "secret", NULL, offsetof(struct hello, secret), "Secret.", BW_FIELD_REQUIRED, 0, 0},
	    {BW_FIELD_SECRET, "token", NULL, offsetof(struct hello, token), "Token.", 0, 0, 0},
	    {BW_FIELD_INT, "count", "3", offsetof(struct hello, count), "Count.", 0, 0, 0},
	    BW_FIELD_END};
	if (bw_config_apply(cfg, "example_hello", hello_fields, &h, &err) != BW_OK)
		fail_msg("apply: %s", err.message);
	assert_string_equal(h.greeting, "Hello");
	assert_int_equal(h.interval_ms, 300000);
	assert_string_equal(h.secret, "env-secret-value");
	assert_string_equal(h.token, "s3cr3t-token"); /* trailing newlines stripped */
	assert_int_equal(h.count, 3);
	bw_config_fields_free(hello_fields, &h);
	assert_null(h.greeting);
	assert_null(h.secret);

	/* paths resolved against the config directory, lists */
	struct host {
		char *var_dir, *plugin_dir, *cert, *key;
		struct bw_strings agent, admin;
	} hs = {0};
	static const struct bw_config_field server_fields[] = {
	    {BW_FIELD_PATH, "var_dir", NULL, offsetof(struct host, var_dir), "", 0, 0, 0},
	    {BW_FIELD_PATH, "plugin_dir", NULL, offsetof(struct host, plugin_dir), "", 0, 0, 0},
	    BW_FIELD_END};
	static const struct bw_config_field tls_fields[] = {
	    {BW_FIELD_PATH, "certificate", NULL, offsetof(struct host, cert), "", 0, 0, 0},
	    {BW_FIELD_PATH, "key", NULL, offsetof(struct host, key), "", 0, 0, 0},
	    BW_FIELD_END};
	static const struct bw_config_field listen_fields[] = {
	    {BW_FIELD_STRINGS, "agent", NULL, offsetof(struct host, agent), "", 0, 0, 0},
	    {BW_FIELD_STRINGS, "admin", NULL, offsetof(struct host, admin), "", 0, 0, 0},
	    BW_FIELD_END};
	assert_int_equal(bw_config_apply(cfg, "server", server_fields, &hs, &err), BW_OK);
	assert_int_equal(bw_config_apply(cfg, "tls", tls_fields, &hs, &err), BW_OK);
	assert_int_equal(bw_config_apply(cfg, "listen", listen_fields, &hs, &err), BW_OK);
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s/../var", dir);
	assert_string_equal(hs.var_dir, buf);
	snprintf(buf, sizeof buf, "%s/../var/tls/server.pem", dir);
	assert_string_equal(hs.cert, buf);
	assert_string_equal(hs.key, "/etc/bulwark/server.key");
	assert_int_equal(hs.agent.count, 2);
	assert_string_equal(hs.agent.items[0], "0.0.0.0:8443");
	assert_string_equal(hs.agent.items[1], "[::]:8443");
	assert_int_equal(hs.admin.count, 1);
	assert_string_equal(hs.admin.items[0], "127.0.0.1:8444");
	bw_config_fields_free(server_fields, &hs);
	bw_config_fields_free(tls_fields, &hs);
	bw_config_fields_free(listen_fields, &hs);
	assert_null(hs.agent.items);
	assert_int_equal(hs.agent.count, 0);

	/* included files: sorted order, file relative to the included file, reading earlier sections */
	struct inc {
		bool saw;
		char *data;
		double ratio;
		char *greeting;
		int64_t timeout_ms;
	} e = {0}, l = {0};
	static const struct bw_config_field early_fields[] = {
	    {BW_FIELD_BOOL, "saw_late", NULL, offsetof(struct inc, saw), "", 0, 0, 0},
	    {BW_FIELD_STRING, "data", NULL, offsetof(struct inc, data), "", 0, 0, 0},
	    {BW_FIELD_DOUBLE, "ratio", NULL, offsetof(struct inc, ratio), "", 0, 0, 0},
	    BW_FIELD_END};
	static const struct bw_config_field late_fields[] = {
	    {BW_FIELD_BOOL, "saw_early", NULL, offsetof(struct inc, saw), "", 0, 0, 0},
	    {BW_FIELD_STRING, "greeting_copy", NULL, offsetof(struct inc, greeting), "", 0, 0, 0},
	    {BW_FIELD_DURATION, "timeout", NULL, offsetof(struct inc, timeout_ms), "", 0, 0, 0},
	    BW_FIELD_END};
	assert_int_equal(bw_config_apply(cfg, "early", early_fields, &e, &err), BW_OK);
	assert_int_equal(bw_config_apply(cfg, "late", late_fields, &l, &err), BW_OK);
	assert_false(e.saw);
	assert_string_equal(e.data, "from conf.d");
	assert_true(e.ratio == 8.0);
	assert_true(l.saw);
	assert_string_equal(l.greeting, "Hello");
	assert_int_equal(l.timeout_ms, 1500);
	bw_config_fields_free(early_fields, &e);
	bw_config_fields_free(late_fields, &l);

	free(dir);
	bw_config_free(cfg);
	unsetenv("BW_TEST_HELLO_SECRET");
}

/* ------------------------------------------------------------------------------------------ */
/* load errors, table-driven: each writes main.lua (and more) into a tmpdir */

struct load_case {
	const char *what;
	struct tfile files[MAX_FILES];
	const char *expect[MAX_EXPECT];
};

static const struct load_case load_cases[] = {
    /* Lua errors come back with the full path and the right line */
    {"syntax error", {{"main.lua", "server = {\n  a = 1\n  b = 2\n}\n"}}, {"main.lua:3:", "'}' expected"}},
    {"syntax error in include",
     {{"main.lua", "include \"conf.d/*.lua\"\n"}, {"conf.d/a.lua", "\n\nx = = 1\n"}},
     {"conf.d/a.lua:3:", "unexpected symbol"}},
    {"runtime error",
     {{"main.lua", "local x = nil\nlocal y = x.field\n"}},
     {"main.lua:2: attempt to index a nil value"}},
    {"error()", {{"main.lua", "\nerror(\"boom\")\n"}}, {"main.lua:2: boom"}},
    {"error() level 0", {{"main.lua", "\n\nerror(\"bare\", 0)\n"}}, {"main.lua:3: bare"}},
    {"error() with a table", {{"main.lua", "error({})\n"}}, {"main.lua:1: error raised with a table value"}},
    {"unknown global", {{"main.lua", "x = { a = undefined_thing.b }\n"}}, {"main.lua:1:", "undefined_thing"}},
    /* top-level keys */
    {"section is a string", {{"main.lua", "log = \"info\"\n"}}, {"main.lua:1: section 'log' must be a table"}},
    {"section is a number", {{"main.lua", "a = {}\nb = 5\n"}}, {"main.lua:2: section 'b' must be a table, got number"}},
    {"section is nil", {{"main.lua", "a = nil\n"}}, {"main.lua:1: section 'a' must be a table, got nil"}},
    {"section set twice",
     {{"main.lua", "log = {}\n\nlog = {\n  level = 'x',\n}\n"}},
     {"main.lua:5: section 'log' is already set at ", "/main.lua:1"}},
    {"section set twice via include",
     {{"main.lua", "log = {}\ninclude \"conf.d/*.lua\"\n"}, {"conf.d/a.lua", "-- again\nlog = {}\n"}},
     {"conf.d/a.lua:2: section 'log' is already set at ", "/main.lua:1"}},
    {"plugins set twice", {{"main.lua", "plugins = {}\nplugins = {}\n"}}, {"main.lua:2: 'plugins' is already set at"}},
    {"plugins not a table", {{"main.lua", "plugins = \"a\"\n"}}, {"main.lua:1: 'plugins' must be a list"}},
    {"built-in name", {{"main.lua", "string = {}\n"}}, {"main.lua:1: 'string' is a built-in name"}},
    {"helper name", {{"main.lua", "\ninclude = { x = 1 }\n"}}, {"main.lua:2: 'include' is a built-in name"}},
    {"non-name key", {{"main.lua", "_ENV[1] = {}\n"}}, {"main.lua:1: top-level keys must be names"}},
    {"list section", {{"main.lua", "x = { \"a\", \"b\" }\n"}}, {"main.lua:1: section 'x' must contain named settings"}},
    /* values */
    {"mixed table", {{"main.lua", "x = {\n  a = { 1, b = 2 },\n}\n"}}, {"main.lua:2: x.a: a table cannot mix"}},
    {"list with holes", {{"main.lua", "x = { a = { 1, nil, 3 } }\n"}}, {"main.lua:1: x.a: a list has holes"}},
    {"function value",
     {{"main.lua", "x = {\n\n  f = tostring,\n}\n"}},
     {"main.lua:3: x.f: a setting cannot hold a function"}},
    {"nested function", {{"main.lua", "x = { a = { b = { tostring } } }\n"}}, {"x.a.b[1]: a setting cannot hold"}},
    {"table contains itself",
     {{"main.lua", "local t = {}\nt.t = t\nx = { t = t }\n"}},
     {"main.lua:3: x.t", "nested too deeply"}},
    {"not a number", {{"main.lua", "x = { a = 0/0 }\n"}}, {"main.lua:1: x.a: not a finite number"}},
    {"NUL in text", {{"main.lua", "x = { a = \"a\\0b\" }\n"}}, {"x.a: text contains a NUL byte"}},
    {"bad key type", {{"main.lua", "x = { a = { [true] = 1 } }\n"}}, {"x.a: table keys must be names"}},
    /* helpers */
    {"env unset",
     {{"main.lua", "x = {\n  a = env \"BW_TEST_SURELY_UNSET_VARIABLE\",\n}\n"}},
     {"main.lua:2: environment variable BW_TEST_SURELY_UNSET_VARIABLE is not set"}},
    {"env without a name", {{"main.lua", "x = { a = env() }\n"}}, {"main.lua:1:", "bad argument #1 to 'env'"}},
    {"file unreadable",
     {{"main.lua", "x = { a = file \"missing.txt\" }\n"}},
     {"main.lua:1: file \"missing.txt\": cannot read ", "/missing.txt: No such file or directory"}},
    {"file is a directory",
     {{"main.lua", "x = { a = file \"conf.d\" }\n"}, {"conf.d/a.txt", "x"}},
     {"main.lua:1: file \"conf.d\"", "not a regular file"}},
    {"include missing file",
     {{"main.lua", "\ninclude \"nope.lua\"\n"}},
     {"main.lua:2: include \"nope.lua\": cannot read ", "No such file or directory"}},
    {"include cycle",
     {{"main.lua", "include \"a.lua\"\n"}, {"a.lua", "x = {}\ninclude \"main.lua\"\n"}},
     {"a.lua:2: include \"main.lua\": include cycle: ", "/main.lua is already being evaluated"}},
    {"include itself by glob", {{"main.lua", "include \"*.lua\"\n"}}, {"main.lua:1:", "include cycle"}},
    {"include a binary chunk",
     {{"main.lua", "include \"bin.lua\"\n"}, {"bin.lua", "\x1bLuaT"}},
     {"bin.lua: attempt to load a binary chunk (mode is 't')"}},
    /* plugins */
    {"invalid plugin name",
     {{"main.lua", "plugins = { \"Bad-Name\" }\n"}},
     {"main.lua:1: plugins[1]: invalid plugin name \"Bad-Name\""}},
    {"empty plugin name", {{"main.lua", "plugins = { \"ok\", \"\" }\n"}}, {"plugins[2]: invalid plugin name \"\""}},
    {"plugin name too long",
     {{"main.lua", "plugins = { \"a1234567890123456789012345678901234567890123456789012345678901234\" }\n"}},
     {"plugins[1]: invalid plugin name"}},
    {"duplicate plugin",
     {{"main.lua", "plugins = {\n  \"a\",\n  { \"a\", required = true },\n}\n"}},
     {"main.lua:3: plugins[2]: plugin 'a' is listed twice (also at ", "/main.lua:2)"}},
    {"duplicate plugin on separate lines",
     {{"main.lua", "plugins = {\n  \"b\",\n  \"a\",\n  \"a\",\n}\n"}},
     {"main.lua:4: plugins[3]: plugin 'a' is listed twice (also at ", "/main.lua:3)"}},
    {"unknown key in plugin entry",
     {{"main.lua", "plugins = { { \"a\", optional = true } }\n"}},
     {"main.lua:1: plugins[1]: unknown key 'optional' in a plugin entry (known: required)"}},
    {"two names in plugin entry",
     {{"main.lua", "plugins = { { \"a\", \"b\" } }\n"}},
     {"plugins[1]: a plugin entry is"}},
    {"required not boolean",
     {{"main.lua", "plugins = { { \"a\", required = \"yes\" } }\n"}},
     {"plugins[1].required: expected true or false, got string"}},
    {"plugin entry number", {{"main.lua", "plugins = { 5 }\n"}}, {"plugins[1]: expected a plugin name", "got number"}},
    {"plugin entry without name",
     {{"main.lua", "plugins = { { required = true } }\n"}},
     {"plugins[1]: the entry has no plugin name"}},
    {"plugins with names", {{"main.lua", "plugins = { a = true }\n"}}, {"main.lua:1: plugins: must be a list"}},
    /* sandbox escapes */
    {"os.execute", {{"main.lua", "os.execute(\"touch /tmp/bw-config-escaped\")\n"}}, {"main.lua:1:", "global 'os'"}},
    {"io.open", {{"main.lua", "local f = io.open(\"/etc/passwd\")\n"}}, {"main.lua:1:", "global 'io'"}},
    {"require", {{"main.lua", "local os = require(\"os\")\n"}}, {"main.lua:1:", "global 'require'"}},
    {"string.dump", {{"main.lua", "local b = string.dump(function() end)\n"}}, {"main.lua:1:", "field 'dump'"}},
    {"load", {{"main.lua", "local f = load(\"return 1\")\n"}}, {"main.lua:1:", "global 'load'"}},
    {"load of a dumped chunk",
     {{"main.lua", "local f = load(string.dump(tostring), nil, \"b\")\n"}},
     {"main.lua:1: attempt to call a nil value"}},
    {"loadstring", {{"main.lua", "loadstring(\"x = {}\")()\n"}}, {"main.lua:1:", "global 'loadstring'"}},
    {"dofile", {{"main.lua", "dofile(\"/etc/passwd\")\n"}}, {"main.lua:1:", "global 'dofile'"}},
    {"loadfile", {{"main.lua", "local f = loadfile(\"/etc/passwd\")\n"}}, {"main.lua:1:", "global 'loadfile'"}},
    {"collectgarbage", {{"main.lua", "collectgarbage()\n"}}, {"main.lua:1:", "global 'collectgarbage'"}},
    {"debug", {{"main.lua", "debug.sethook()\n"}}, {"main.lua:1:", "global 'debug'"}},
    {"package", {{"main.lua", "package.loadlib(\"libc.so.6\", \"system\")\n"}}, {"main.lua:1:", "global 'package'"}},
    {"coroutine", {{"main.lua", "coroutine.wrap(tostring)\n"}}, {"main.lua:1:", "global 'coroutine'"}},
    {"setmetatable", {{"main.lua", "setmetatable(_ENV, nil)\n"}}, {"main.lua:1:", "global 'setmetatable'"}},
    {"getmetatable", {{"main.lua", "local m = getmetatable(\"\")\n"}}, {"main.lua:1:", "global 'getmetatable'"}},
    {"rawset", {{"main.lua", "rawset(_ENV, \"x\", {})\n"}}, {"main.lua:1:", "global 'rawset'"}},
    {"pcall", {{"main.lua", "pcall(error, \"x\")\n"}}, {"main.lua:1:", "global 'pcall'"}},
    {"_G", {{"main.lua", "_G.x = {}\n"}}, {"main.lua:1:", "global '_G'"}},
    {"memory bomb: string.rep",
     {{"main.lua", "local a = string.rep(\"x\", 10 * 1024 * 1024)\nlocal b = string.rep(\"y\", 10 * 1024 * 1024)\n"}},
     {"main.lua: the configuration used more than the memory limit of 16 MiB"}},
    {"memory bomb: doubling",
     {{"main.lua", "local s = \"x\"\nwhile true do s = s .. s end\n"}},
     {"memory limit of 16 MiB"}},
    {"memory bomb: table growth",
     {{"main.lua", "local t = {}\nfor i = 1, 1e9 do t[i] = tostring(i) .. \"-padding-padding\" end\n"}},
     {"memory limit of 16 MiB"}},
    {"table.move", {{"main.lua", "table.move({}, 1, 2^62, 2)\n"}}, {"main.lua:1:", "field 'move'"}},
    {"string.rep too large",
     {{"main.lua", "\nlocal s = string.rep(\"ab\", 2^40)\n"}},
     {"main.lua:2: string.rep: the result would exceed the memory limit"}},
    {"endless loop", {{"main.lua", "x = {}\nwhile true do end\n"}}, {"main.lua:2: configuration took too long"}},
    {"endless loop in an include",
     {{"main.lua", "include \"loop.lua\"\n"}, {"loop.lua", "local n = 0\n\nwhile true do n = n + 1 end\n"}},
     {"loop.lua:3: configuration took too long"}},
    {"endless recursion", {{"main.lua", "local function f(n) return f(n + 1) + 1 end\nf(1)\n"}}, {"main.lua"}},
};

static void test_load_errors(void **state)
{
	(void)state;
	unsetenv("BW_TEST_SURELY_UNSET_VARIABLE");
	for (size_t i = 0; i < sizeof load_cases / sizeof load_cases[0]; i++)
		expect_load_error(load_cases[i].what, load_cases[i].files, load_cases[i].expect);
	assert_int_equal(access("/tmp/bw-config-escaped", F_OK), -1);
}

static void test_missing_main_file(void **state)
{
	(void)state;
	bw_error err = {0};
	assert_null(bw_config_load("/nonexistent/bulwark-test.lua", &err));
	assert_int_equal(err.code, BW_E_CONFIG);
	assert_non_null(strstr(err.message, "/nonexistent/bulwark-test.lua"));
	assert_non_null(strstr(err.message, "No such file or directory"));
	assert_null(bw_config_load(NULL, &err));
	assert_int_equal(err.code, BW_E_INVALID);

	/* the main file is a directory */
	struct tfile files[MAX_FILES] = {{"main.lua/x", "x"}};
	char *dir = setup_files(files);
	assert_null(load_in(dir, "main.lua", &err));
	assert_int_equal(err.code, BW_E_CONFIG);
	assert_non_null(strstr(err.message, "main.lua"));
	bw_test_rmtree(dir);
	free(dir);
}

/* file "x": the 64 KiB limit and trailing newlines */
static void test_file_helper_limits(void **state)
{
	(void)state;
	struct tfile files[MAX_FILES] = {{"main.lua", "big = { a = file \"big.txt\" }\n"},
	                                 {"exact.lua", "ok = { a = file \"exact.txt\", b = file \"crlf.txt\" }\n"},
	                                 {"crlf.txt", "abc\r\n\n"}};
	char *dir = setup_files(files);
	char *big = malloc(70001), *exact = malloc(65537);
	assert_non_null(big);
	assert_non_null(exact);
	memset(big, 'a', 70000);
	big[70000] = '\0';
	memset(exact, 'b', 65536);
	exact[65535] = '\n';
	exact[65536] = '\0';
	free(bw_test_write(dir, "big.txt", big));
	free(bw_test_write(dir, "exact.txt", exact));

	bw_error err = {0};
	assert_null(load_in(dir, "main.lua", &err));
	assert_int_equal(err.code, BW_E_CONFIG);
	assert_non_null(strstr(err.message, "main.lua:1: file \"big.txt\": "));
	assert_non_null(strstr(err.message, "larger than 64 KiB"));

	bw_config *cfg = load_in(dir, "exact.lua", &err);
	if (!cfg)
		fail_msg("%s", err.message);
	struct {
		char *a, *b;
	} v = {0};
	static const struct bw_config_field f[] = {{BW_FIELD_STRING, "a", NULL, 0, "", 0, 0, 0},
	                                           {BW_FIELD_STRING, "b", NULL, sizeof(char *), "", 0, 0, 0},
	                                           BW_FIELD_END};
	assert_int_equal(bw_config_apply(cfg, "ok", f, &v, &err), BW_OK);
	assert_int_equal(strlen(v.a), 65535);
	assert_string_equal(v.b, "abc");
	bw_config_fields_free(f, &v);
	bw_config_free(cfg);
	free(big);
	free(exact);
	bw_test_rmtree(dir);
	free(dir);
}

/* include: sorted order, paths relative to the including file, directories skipped, depth limit */
static void test_include(void **state)
{
	(void)state;
	struct tfile files[MAX_FILES] = {{"main.lua", "include \"conf.d/*.lua\"\ninclude \"none/*.lua\"\n"},
	                                 {"conf.d/20-b.lua", "b = { saw_a = a ~= nil, saw_c = c ~= nil }\n"},
	                                 {"conf.d/10-a.lua", "a = { saw_b = b ~= nil }\ninclude \"sub/*.lua\"\n"},
	                                 {"conf.d/sub/30-c.lua", "\nc = {\n  data = file \"../data.txt\",\n}\n"},
	                                 {"conf.d/data.txt", "relative to conf.d/sub\n"},
	                                 {"conf.d/15-dir.lua/ignored", "this is a directory matched by the glob"}};
	char *dir = setup_files(files);
	bw_error err = {0};
	bw_config *cfg = load_in(dir, "main.lua", &err);
	if (!cfg)
		fail_msg("%s", err.message);
	assert_int_equal(bw_config_section_count(cfg), 3);
	const char *order[] = {"a", "c", "b"};
	const char *file[] = {"/conf.d/10-a.lua", "/conf.d/sub/30-c.lua", "/conf.d/20-b.lua"};
	int lines[] = {1, 2, 1};
	for (size_t i = 0; i < 3; i++) {
		const struct bw_config_section *s = bw_config_section_at(cfg, i);
		char want[PATH_MAX];
		snprintf(want, sizeof want, "%s%s", dir, file[i]);
		assert_string_equal(s->name, order[i]);
		assert_string_equal(s->file, want);
		assert_int_equal(s->line, lines[i]);
	}
	struct incl {
		bool x, y;
		char *data;
	} v = {0};
	static const struct bw_config_field fb[] = {
	    {BW_FIELD_BOOL, "saw_a", NULL, offsetof(struct incl, x), "", 0, 0, 0},
	    {BW_FIELD_BOOL, "saw_c", NULL, offsetof(struct incl, y), "", 0, 0, 0},
	    BW_FIELD_END};
	assert_int_equal(bw_config_apply(cfg, "b", fb, &v, &err), BW_OK);
	assert_true(v.x);
	assert_true(v.y);
	static const struct bw_config_field fa[] = {
	    {BW_FIELD_BOOL, "saw_b", NULL, offsetof(struct incl, x), "", 0, 0, 0}, BW_FIELD_END};
	assert_int_equal(bw_config_apply(cfg, "a", fa, &v, &err), BW_OK);
	assert_false(v.x);
	static const struct bw_config_field fc[] = {
	    {BW_FIELD_STRING, "data", NULL, offsetof(struct incl, data), "", 0, 0, 0}, BW_FIELD_END};
	assert_int_equal(bw_config_apply(cfg, "c", fc, &v, &err), BW_OK);
	assert_string_equal(v.data, "relative to conf.d/sub");
	bw_config_fields_free(fc, &v);
	bw_config_free(cfg);
	bw_test_rmtree(dir);
	free(dir);
}

static void test_include_depth(void **state)
{
	(void)state;
	/* main -> d1 -> ... -> d8 is fine; one more level is refused */
	for (int levels = 8; levels <= 9; levels++) {
		char *dir = setup_files((struct tfile[MAX_FILES]){{"main.lua", "include \"d1.lua\"\n"}});
		for (int i = 1; i <= levels; i++) {
			char name[32], body[64];
			snprintf(name, sizeof name, "d%d.lua", i);
			if (i < levels)
				snprintf(body, sizeof body, "s%d = {}\ninclude \"d%d.lua\"\n", i, i + 1);
			else
				snprintf(body, sizeof body, "s%d = {}\n", i);
			free(bw_test_write(dir, name, body));
		}
		bw_error err = {0};
		bw_config *cfg = load_in(dir, "main.lua", &err);
		if (levels == 8) {
			if (!cfg)
				fail_msg("%s", err.message);
			assert_int_equal(bw_config_section_count(cfg), 8);
			bw_config_free(cfg);
		} else {
			assert_null(cfg);
			assert_int_equal(err.code, BW_E_CONFIG);
			assert_non_null(
			    strstr(err.message, "d8.lua:2: include \"d9.lua\": includes are nested too deeply"));
		}
		bw_test_rmtree(dir);
		free(dir);
	}
}

/* Lua shortens file names longer than 60 characters; messages must still carry the full path. */
static void test_long_paths(void **state)
{
	(void)state;
	const char *name = "a-rather-long-directory-name-0123456789/and-another-long-directory-name-0123456789/"
	                   "main.lua";
	struct tfile files[MAX_FILES] = {{name, "x = {}\n\nlocal y = nil + 1\n"}};
	char *dir = setup_files(files);
	char want[PATH_MAX * 2];
	snprintf(want, sizeof want, "%s/%s:3: ", dir, name);
	bw_error err = {0};
	assert_null(load_in(dir, name, &err));
	if (strncmp(err.message, want, strlen(want)) != 0)
		fail_msg("expected \"%s\" at the start of: %s", want, err.message);
	assert_null(strstr(err.message, "..."));
	bw_test_rmtree(dir);
	free(dir);
}

static void cleanup_dir(char *dir);

/* What stays available: string (with a guarded rep), table, math, utf8, print as a no-op. */
static void test_sandbox_allowed(void **state)
{
	(void)state;
	struct tfile files[MAX_FILES] = {{"main.lua", "print(\"ignored\")\n"
	                                              "local parts = { (\"x\"):rep(3), string.rep(\"\", 2^62), "
	                                              "string.upper(\"ab\"), utf8.char(233) }\n"
	                                              "s = {\n"
	                                              "  text = table.concat(parts, \",\"),\n"
	                                              "  n = math.floor(7.9) + #parts,\n"
	                                              "  list = { string.format(\"%02d\", 5), tostring(type(next)) },\n"
	                                              "}\n"}};
	char *dir = setup_files(files);
	bw_error err = {0};
	bw_config *cfg = load_in(dir, "main.lua", &err);
	if (!cfg)
		fail_msg("%s", err.message);
	struct fake f = {0};
	static const struct bw_config_field fl[] = {
	    {BW_FIELD_STRING, "text", NULL, offsetof(struct fake, str), "", 0, 0, 0},
	    {BW_FIELD_INT, "n", NULL, offsetof(struct fake, num), "", 0, 0, 0},
	    {BW_FIELD_STRINGS, "list", NULL, offsetof(struct fake, list), "", 0, 0, 0},
	    BW_FIELD_END};
	if (bw_config_apply(cfg, "s", fl, &f, &err) != BW_OK)
		fail_msg("%s", err.message);
	assert_string_equal(f.str, "xxx,,AB,\xc3\xa9");
	assert_int_equal(f.num, 11);
	assert_int_equal(f.list.count, 2);
	assert_string_equal(f.list.items[0], "05");
	assert_string_equal(f.list.items[1], "function");
	bw_config_fields_free(fl, &f);
	bw_config_free(cfg);
	cleanup_dir(dir);
}

/* ------------------------------------------------------------------------------------------ */
/* apply */

static bw_config *load_text(const char *text, char **dir_out)
{
	struct tfile files[MAX_FILES] = {{"main.lua", text}};
	char *dir = setup_files(files);
	bw_error err = {0};
	bw_config *cfg = load_in(dir, "main.lua", &err);
	if (!cfg)
		fail_msg("load: %s", err.message);
	*dir_out = dir;
	return cfg;
}

static void cleanup_dir(char *dir)
{
	bw_test_rmtree(dir);
	free(dir);
}

static void test_apply_all_types(void **state)
{
	(void)state;
	char *dir;
	bw_config *cfg = load_text("fake = {\n"
	                           "  str = \"text\",\n"
	                           "  num = 2.0, -- an integral float is an integer\n"
	                           "  flag = false,\n"
	                           "  ratio = 3,\n"
	                           "  list = { \"x\", \"y\", \"z\" },\n"
	                           "  secret = \"hunter2\",\n"
	                           "  wait = 90,\n"
	                           "  path = \"/abs/file\",\n"
	                           "}\n"
	                           "other = { secret = \"s\", wait = 1.25, list = {}, path = \"rel/x\" }\n",
	                           &dir);
	struct fake f = {0};
	bw_error err = {0};
	if (bw_config_apply(cfg, "fake", fake_fields, &f, &err) != BW_OK)
		fail_msg("%s", err.message);
	assert_string_equal(f.str, "text");
	assert_int_equal(f.num, 2);
	assert_false(f.flag);
	assert_true(f.ratio == 3.0);
	assert_int_equal(f.list.count, 3);
	assert_string_equal(f.list.items[2], "z");
	assert_string_equal(f.secret, "hunter2");
	assert_int_equal(f.wait_ms, 90000);
	assert_string_equal(f.path, "/abs/file");
	bw_config_fields_free(fake_fields, &f);
	assert_null(f.str);
	assert_null(f.secret);
	assert_null(f.path);
	assert_null(f.list.items);

	/* defaults for what is absent; an empty list is a list */
	if (bw_config_apply(cfg, "other", fake_fields, &f, &err) != BW_OK)
		fail_msg("%s", err.message);
	assert_string_equal(f.str, "default text");
	assert_int_equal(f.num, 42);
	assert_true(f.flag);
	assert_true(f.ratio == 0.5);
	assert_int_equal(f.list.count, 0);
	assert_int_equal(f.wait_ms, 1250);
	char want[PATH_MAX];
	snprintf(want, sizeof want, "%s/rel/x", dir);
	assert_string_equal(f.path, want);
	bw_config_fields_free(fake_fields, &f);

	/* an absent section: only defaults; a field with neither value nor default is zeroed */
	static const struct bw_config_field opt[] = {
	    {BW_FIELD_STRING, "s", NULL, offsetof(struct fake, str), "", 0, 0, 0},
	    {BW_FIELD_STRINGS, "l", "{\"a\", 'b c',}", offsetof(struct fake, list), "", 0, 0, 0},
	    {BW_FIELD_PATH, "p", "\"data/file.db\"", offsetof(struct fake, path), "", 0, 0, 0},
	    {BW_FIELD_DURATION, "w", "5m", offsetof(struct fake, wait_ms), "", 0, 0, 0},
	    {BW_FIELD_INT, "n", " -7 ", offsetof(struct fake, num), "", 0, 0, 0},
	    {BW_FIELD_DOUBLE, "r", "1e3", offsetof(struct fake, ratio), "", 0, 0, 0},
	    {BW_FIELD_BOOL, "b", "false", offsetof(struct fake, flag), "", 0, 0, 0},
	    {BW_FIELD_SECRET, "x", "bare text", offsetof(struct fake, secret), "", 0, 0, 0},
	    BW_FIELD_END};
	memset(&f, 0, sizeof f);
	f.flag = true;
	assert_int_equal(bw_config_apply(cfg, "absent", opt, &f, &err), BW_OK);
	assert_null(f.str);
	assert_int_equal(f.list.count, 2);
	assert_string_equal(f.list.items[0], "a");
	assert_string_equal(f.list.items[1], "b c");
	snprintf(want, sizeof want, "%s/data/file.db", dir);
	assert_string_equal(f.path, want);
	assert_int_equal(f.wait_ms, 300000);
	assert_int_equal(f.num, -7);
	assert_true(f.ratio == 1000.0);
	assert_false(f.flag);
	assert_string_equal(f.secret, "bare text");
	bw_config_fields_free(opt, &f);

	/* an empty field table accepts an empty section and refuses any key */
	static const struct bw_config_field none[] = {BW_FIELD_END};
	assert_int_equal(bw_config_apply(cfg, "absent", none, &f, &err), BW_OK);
	assert_int_equal(bw_config_apply(cfg, "other", NULL, &f, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "unknown setting (this section has no settings)"));

	bw_config_free(cfg);
	cleanup_dir(dir);
}

static void test_apply_bad_defaults(void **state)
{
	(void)state;
	char *dir;
	bw_config *cfg = load_text("x = {}\n", &dir);
	static const char *const bad[] = {"\"unterminated", "{\"a\" \"b\"}", "{\"a\"", "\"a\" trailing", "  "};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct bw_config_field f[] = {{BW_FIELD_STRINGS, "l", bad[i], offsetof(struct fake, list), "", 0, 0, 0},
		                              BW_FIELD_END};
		struct fake v = {0};
		bw_error err = {0};
		if (bw_config_apply(cfg, "x", f, &v, &err) != BW_E_INTERNAL)
			fail_msg("default %s accepted (%s)", bad[i], err.message);
		assert_non_null(strstr(err.message, "x.l: invalid default value"));
		bw_config_fields_free(f, &v);
	}
	/* a default of the wrong type */
	struct bw_config_field f[] = {{BW_FIELD_BOOL, "b", "42", offsetof(struct fake, flag), "", 0, 0, 0},
	                              BW_FIELD_END};
	struct fake v = {0};
	bw_error err = {0};
	assert_int_equal(bw_config_apply(cfg, "x", f, &v, &err), BW_E_INTERNAL);
	assert_non_null(strstr(err.message, "x.b: invalid default value"));
	assert_non_null(strstr(err.message, "expected true or false, got number"));
	bw_config_free(cfg);
	cleanup_dir(dir);
}

struct apply_case {
	const char *what;
	const char *text;
	const char *expect;
};

static const struct apply_case apply_cases[] = {
    {"unknown key", "fake = {\n  secret = 'x',\n  bogus = 1,\n}\n", "main.lua:3: fake.bogus: unknown setting "},
    {"first unknown key by line", "fake = {\n  zzz = 1,\n  secret = 'x',\n  aaa = 2,\n}\n",
     "main.lua:2: fake.zzz: unknown setting"},
    {"string wrong type", "fake = { secret = 'x', str = 5 }\n", "main.lua:1: fake.str: expected a string, got number"},
    {"string given a list", "fake = { secret = 'x',\n str = { 'a' } }\n",
     "main.lua:2: fake.str: expected a string, got list"},
    {"int fractional", "fake = {\n secret = 'x',\n num = 1.5 }\n",
     "main.lua:3: fake.num: expected an integer, got a fractional number"},
    {"int as string", "fake = { secret = 'x', num = \"5\" }\n", "fake.num: expected an integer, got string"},
    {"int above max", "fake = { secret = 'x', num = 101 }\n", "fake.num: must be between 1 and 100, got 101"},
    {"int below min", "fake = { secret = 'x', num = 0 }\n", "fake.num: must be between 1 and 100, got 0"},
    {"bool wrong type", "fake = { secret = 'x', flag = \"yes\" }\n", "fake.flag: expected true or false, got string"},
    {"double wrong type", "fake = { secret = 'x', ratio = 'x' }\n", "fake.ratio: expected a number, got string"},
    {"strings given one string", "fake = { secret = 'x', list = \"a\" }\n",
     "fake.list: expected a list of strings, got string"},
    {"strings with a number", "fake = { secret = 'x', list = { \"a\", 2 } }\n",
     "fake.list[2]: expected a string, got number"},
    {"strings given a table", "fake = { secret = 'x', list = { a = 'x' } }\n",
     "fake.list: expected a list of strings, got table"},
    {"secret wrong type", "fake = { secret = 5 }\n", "main.lua:1: fake.secret: expected a string, got number"},
    {"missing required", "\nfake = {\n  str = 'x',\n}\n", "main.lua:2: fake.secret: required setting is missing"},
    {"bad duration", "fake = { secret = 'x', wait = \"5 minutes\" }\n", "fake.wait: invalid duration \"5 minutes\""},
    {"negative duration string", "fake = { secret = 'x', wait = \"-5s\" }\n", "fake.wait: invalid duration \"-5s\""},
    {"negative duration number", "fake = { secret = 'x', wait = -5 }\n", "fake.wait: a duration cannot be negative"},
    {"duration above max", "fake = { secret = 'x', wait = \"2h\" }\n", "fake.wait: must be between 1s and 1h, got 2h"},
    {"duration below min", "fake = { secret = 'x', wait = \"500ms\" }\n",
     "fake.wait: must be between 1s and 1h, got 500ms"},
    {"duration overflow", "fake = { secret = 'x', wait = \"99999999999999999999d\" }\n", "fake.wait: invalid duration"},
    {"duration number overflow", "fake = { secret = 'x', wait = 9223372036854775 * 1000 }\n",
     "fake.wait: duration too large"},
    {"duration wrong type", "fake = { secret = 'x', wait = true }\n", "fake.wait: expected a duration"},
    {"empty path", "fake = { secret = 'x', path = \"\" }\n", "fake.path: a path must not be empty"},
    {"path wrong type", "fake = { secret = 'x', path = 1 }\n", "fake.path: expected a path (string), got number"},
    /* the line of a nested key */
    {"key after blank line", "fake = { secret = 'x',\n\n  num = 'no' }\n", "main.lua:3: fake.num:"},
    {"bracketed key", "fake = {\n  secret = 'x',\n  [\"num\"] = 'x',\n}\n", "main.lua:3: fake.num:"},
    {"comment mentions the key", "fake = {\n  -- num = 3 is the default\n  secret = 'x',\n  num = true,\n}\n",
     "main.lua:4: fake.num:"},
    {"key prefix of another", "fake = {\n  secret = 'x',\n  numx = 1,\n  num = {},\n}\n",
     "main.lua:3: fake.numx: unknown"},
    {"section name inside", "other = { fake = 1 }\nfake = {\n  secret = 'x',\n  flag = 1,\n}\n",
     "main.lua:4: fake.flag:"},
    {"assignment after the section", "fake = { secret = 'x' }\nfake2 = { num = 1 }\nfake.num = 500\n",
     "main.lua:1: fake.num: must be between"},
};

static void test_apply_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof apply_cases / sizeof apply_cases[0]; i++) {
		char *dir;
		bw_config *cfg = load_text(apply_cases[i].text, &dir);
		struct fake f = {0};
		bw_error err = {0};
		int rc = bw_config_apply(cfg, "fake", fake_fields, &f, &err);
		if (rc != BW_E_CONFIG)
			fail_msg("%s: expected an error, got %d (%s)", apply_cases[i].what, rc, err.message);
		if (!strstr(err.message, apply_cases[i].expect))
			fail_msg("%s: expected \"%s\" in: %s", apply_cases[i].what, apply_cases[i].expect, err.message);
		if (strncmp(err.message, dir, strlen(dir)) != 0)
			fail_msg("%s: not a full path: %s", apply_cases[i].what, err.message);
		bw_config_fields_free(fake_fields, &f);
		bw_config_free(cfg);
		cleanup_dir(dir);
	}
	/* the unknown-key message lists the known settings */
	char *dir;
	bw_config *cfg = load_text("fake = { secret = 'x', bogus = 1 }\n", &dir);
	struct fake f = {0};
	bw_error err = {0};
	assert_int_equal(bw_config_apply(cfg, "fake", fake_fields, &f, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, fake_known));
	bw_config_fields_free(fake_fields, &f);
	/* a missing section with a required setting: the main file, no line */
	char want[PATH_MAX];
	snprintf(want, sizeof want, "%s/main.lua: absent.secret: required setting is missing", dir);
	assert_int_equal(bw_config_apply(cfg, "absent", fake_fields, &f, &err), BW_E_CONFIG);
	assert_string_equal(err.message, want);
	bw_config_fields_free(fake_fields, &f);
	bw_config_free(cfg);
	cleanup_dir(dir);
}

/* A secret's value never appears in an error message. */
static void test_secret_not_in_messages(void **state)
{
	(void)state;
	setenv("BW_TEST_SECRET_VALUE", "SUPERSECRET-env", 1);
	static const char *const texts[] = {
	    "fake = { secret = { \"SUPERSECRET-list\" } }\n",
	    "fake = { secret = env \"BW_TEST_SECRET_VALUE\", num = \"bad\" }\n",
	    "fake = { secret = \"SUPERSECRET-text\", bogus = 1 }\n",
	    "fake = { secret = \"SUPERSECRET-text\", wait = \"forever\" }\n",
	    "fake = { secret = { x = \"SUPERSECRET-table\" } }\n",
	};
	for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
		char *dir;
		bw_config *cfg = load_text(texts[i], &dir);
		struct fake f = {0};
		bw_error err = {0};
		assert_int_equal(bw_config_apply(cfg, "fake", fake_fields, &f, &err), BW_E_CONFIG);
		if (strstr(err.message, "SUPERSECRET"))
			fail_msg("secret in: %s", err.message);
		bw_config_fields_free(fake_fields, &f);
		bw_config_free(cfg);
		cleanup_dir(dir);
	}
	/* nor in a load error raised next to it */
	struct tfile files[MAX_FILES] = {
	    {"main.lua", "fake = {\n  secret = env \"BW_TEST_SECRET_VALUE\",\n  bad = 0/0,\n}\n"}};
	expect_load_error("secret next to a bad value", files, (const char *const[MAX_EXPECT]){"fake.bad"});
	char *dir = setup_files(files);
	bw_error err = {0};
	assert_null(load_in(dir, "main.lua", &err));
	assert_null(strstr(err.message, "SUPERSECRET"));
	cleanup_dir(dir);
	unsetenv("BW_TEST_SECRET_VALUE");
}

/* ------------------------------------------------------------------------------------------ */
/* durations and markdown */

static void test_durations(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		int rc;
		int64_t ms;
	} cases[] = {
	    {"250ms", BW_OK, 250},
	    {"30s", BW_OK, 30000},
	    {"5m", BW_OK, 300000},
	    {"2h", BW_OK, 7200000},
	    {"1d", BW_OK, 86400000},
	    {"0", BW_OK, 0},
	    {"15", BW_OK, 15000},
	    {"1.5", BW_OK, 1500},
	    {"0.25s", BW_OK, 250},
	    {"1.5h", BW_OK, 5400000},
	    {"0.0004s", BW_OK, 0},
	    {"0.0006s", BW_OK, 1},
	    {"106751991167d", BW_OK, 106751991167LL * 86400000},
	    {"9223372036854775807ms", BW_OK, INT64_MAX},
	    {"9223372036854775808ms", BW_E_INVALID, 0},
	    {"106751991168d", BW_E_INVALID, 0},
	    {"99999999999999999999999", BW_E_INVALID, 0},
	    {"", BW_E_INVALID, 0},
	    {"-5s", BW_E_INVALID, 0},
	    {"+5s", BW_E_INVALID, 0},
	    {"5x", BW_E_INVALID, 0},
	    {"5 m", BW_E_INVALID, 0},
	    {" 5s", BW_E_INVALID, 0},
	    {"5s ", BW_E_INVALID, 0},
	    {"m", BW_E_INVALID, 0},
	    {"1e3", BW_E_INVALID, 0},
	    {"1.", BW_E_INVALID, 0},
	    {".5", BW_E_INVALID, 0},
	    {"5mm", BW_E_INVALID, 0},
	    {"5M", BW_E_INVALID, 0},
	    {"1d2h", BW_E_INVALID, 0},
	    {"0x10", BW_E_INVALID, 0},
	    {"nan", BW_E_INVALID, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		int64_t ms = -1;
		int rc = bw_duration_parse(cases[i].text, &ms);
		if (rc != cases[i].rc)
			fail_msg("\"%s\": rc %d, expected %d", cases[i].text, rc, cases[i].rc);
		if (rc == BW_OK && ms != cases[i].ms)
			fail_msg("\"%s\": %lld ms, expected %lld", cases[i].text, (long long)ms,
			         (long long)cases[i].ms);
	}
	int64_t ms;
	assert_int_equal(bw_duration_parse(NULL, &ms), BW_E_INVALID);
}

static void test_markdown(void **state)
{
	(void)state;
	char *md = bw_config_fields_markdown("fake", "Fake plugin (`fake`)", fake_fields);
	assert_non_null(md);
	const char *want = "### Fake plugin (`fake`)\n"
	                   "\n"
	                   "| Setting | Type | Default | Required | Description |\n"
	                   "|---|---|---|---|---|\n"
	                   "| `fake.str` | string | `\"default text\"` | no | A string. |\n"
	                   "| `fake.num` | integer | `42` | no | An integer. |\n"
	                   "| `fake.flag` | boolean | `true` | no | A flag. |\n"
	                   "| `fake.ratio` | number | `0.5` | no | A ratio. |\n"
	                   "| `fake.list` | list of strings | `{\"a\", \"b\"}` | no | A list. |\n"
	                   "| `fake.secret` | secret | - | yes | A secret. |\n"
	                   "| `fake.wait` | duration | `\"30s\"` | no | A wait. |\n"
	                   "| `fake.path` | path | `\"data/file.db\"` | no | A path. |\n"
	                   "\n";
	assert_string_equal(md, want);
	free(md);

	/* cells escape '|' and newlines; no doc is an empty cell */
	static const struct bw_config_field odd[] = {
	    {BW_FIELD_STRING, "mode", "\"a|b\"", 0, "Either a|b\nor c.", 0, 0, 0},
	    {BW_FIELD_INT, "n", NULL, 0, NULL, BW_FIELD_REQUIRED, 0, 0},
	    BW_FIELD_END};
	md = bw_config_fields_markdown("s", "S", odd);
	assert_non_null(md);
	assert_string_equal(md, "### S\n\n"
	                        "| Setting | Type | Default | Required | Description |\n"
	                        "|---|---|---|---|---|\n"
	                        "| `s.mode` | string | `\"a\\|b\"` | no | Either a\\|b or c. |\n"
	                        "| `s.n` | integer | - | yes |  |\n"
	                        "\n");
	free(md);

	md = bw_config_fields_markdown("empty", "Empty", NULL);
	assert_non_null(md);
	assert_string_equal(md, "### Empty\n\nThis section has no settings.\n\n");
	free(md);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full_fixture),      cmocka_unit_test(test_load_errors),
	    cmocka_unit_test(test_missing_main_file), cmocka_unit_test(test_file_helper_limits),
	    cmocka_unit_test(test_include),           cmocka_unit_test(test_include_depth),
	    cmocka_unit_test(test_long_paths),        cmocka_unit_test(test_sandbox_allowed),
	    cmocka_unit_test(test_apply_all_types),   cmocka_unit_test(test_apply_bad_defaults),
	    cmocka_unit_test(test_apply_errors),      cmocka_unit_test(test_secret_not_in_messages),
	    cmocka_unit_test(test_durations),         cmocka_unit_test(test_markdown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
