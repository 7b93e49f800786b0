/* tests/unit/test_loader.c: plugin loading and verification (host/core/loader.c) against the
 * fixture plugins, the permission and ownership refusals, and the lifecycle through
 * bw_plugins_* with a small host (settings, failing init, late registration, stop order).
 * Fixtures are copied into private temporary directories; the build tree is never changed. */
#include "testutil.h"

#include "loader.h"
#include "log.h"
#include "router.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const fixtures[] = {"fx_good",     "fx_major",   "fx_minor",   "fx_nosym",   "fx_small",
                                       "fx_initfail", "fx_badname", "fx_latecap", "fx_oldminor"};

static void copy_file(const char *from, const char *to, mode_t mode)
{
	int in = open(from, O_RDONLY);
	if (in < 0)
		fail_msg("cannot open %s: %s (build the fixtures first)", from, strerror(errno));
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, mode);
	assert_true(out >= 0);
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0)
		assert_int_equal(write(out, buf, (size_t)n), n);
	close(in);
	close(out);
	assert_int_equal(chmod(to, mode), 0);
}

/* A private plugin directory (0755) holding copies of every fixture (0644). */
static char *plugin_dir(void)
{
	char *dir = bw_test_tmpdir("plugins");
	assert_int_equal(chmod(dir, 0755), 0);
	for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
		char from[1024], to[1024];
		snprintf(from, sizeof from, "%s/%s.so", BW_FIXTURE_PLUGIN_DIR, fixtures[i]);
		snprintf(to, sizeof to, "%s/%s.so", dir, fixtures[i]);
		copy_file(from, to, 0644);
	}
	return dir;
}

static int setup_dir(void **state)
{
	*state = plugin_dir();
	return 0;
}

static int teardown_dir(void **state)
{
	bw_test_rmtree(*state);
	free(*state);
	return 0;
}

/* Opens `name` from `dir` expecting `code`; checks the message holds every `want` string. */
static void expect_open(const char *dir, const char *name, int code, const char *const *want, size_t nwant)
{
	lt_dlhandle h = (lt_dlhandle)1;
	const struct bw_plugin *d = (const struct bw_plugin *)1;
	bw_error err = {0};
	int rc = bw_plugin_open(dir, name, &h, &d, &err);
	if (rc != code)
		fail_msg("%s: expected code %d, got %d (%s)", name, code, rc, err.message);
	if (code != BW_OK) {
		assert_int_equal(err.code, code);
		assert_null(h);
		assert_null(d);
	}
	for (size_t i = 0; i < nwant; i++)
		if (!strstr(err.message, want[i]))
			fail_msg("%s: message lacks '%s': %s", name, want[i], err.message);
	if (h)
		lt_dlclose(h);
}

static void test_open_good(void **state)
{
	const char *dir = *state;
	lt_dlhandle h = NULL;
	const struct bw_plugin *d = NULL;
	bw_error err = {0};
	assert_int_equal(bw_plugin_open(dir, "fx_good", &h, &d, &err), BW_OK);
	assert_non_null(h);
	assert_non_null(d);
	assert_string_equal(d->name, "fx_good");
	assert_string_equal(d->version, "0.1");
	assert_int_equal(d->abi_major, BW_ABI_MAJOR);
	assert_non_null(d->fields);
	assert_non_null(d->init);
	lt_dlclose(h);
	/* The build's own fixture directory is acceptable as it is (unless a umask made it
	 * group-writable, which the loader rightly refuses). */
	struct stat sd, sf;
	if (stat(BW_FIXTURE_PLUGIN_DIR, &sd) == 0 && stat(BW_FIXTURE_PLUGIN_DIR "/fx_good.so", &sf) == 0 &&
	    !((sd.st_mode | sf.st_mode) & 022)) {
		assert_int_equal(bw_plugin_open(BW_FIXTURE_PLUGIN_DIR, "fx_good", &h, &d, &err), BW_OK);
		lt_dlclose(h);
	}
}

static void test_open_refusals(void **state)
{
	const char *dir = *state;
	char path[1024];

	snprintf(path, sizeof path, "%s/fx_major.so", dir);
	char host_v[16], newer_v[16];
	snprintf(host_v, sizeof host_v, "%d.%d", BW_ABI_MAJOR, BW_ABI_MINOR);
	snprintf(newer_v, sizeof newer_v, "%d.%d", BW_ABI_MAJOR, BW_ABI_MINOR + 1);
	const char *major[] = {path, "2.0", host_v, "major"};
	expect_open(dir, "fx_major", BW_E_ABI, major, 4);

	snprintf(path, sizeof path, "%s/fx_minor.so", dir);
	const char *minor[] = {path, newer_v, "newer", host_v};
	expect_open(dir, "fx_minor", BW_E_ABI, minor, 4);

	/* A plugin built for an older minor (1.0) is accepted by a 1.1 host. */
	lt_dlhandle h;
	const struct bw_plugin *d;
	bw_error err = {0};
	assert_int_equal(bw_plugin_open(dir, "fx_oldminor", &h, &d, &err), BW_OK);
	assert_int_equal(d->abi_minor, 0);
	lt_dlclose(h);

	snprintf(path, sizeof path, "%s/fx_nosym.so", dir);
	const char *nosym[] = {path, "bw_plugin_fx_nosym"};
	expect_open(dir, "fx_nosym", BW_E_ABI, nosym, 2);

	snprintf(path, sizeof path, "%s/fx_small.so", dir);
	const char *small[] = {path, "8 bytes", "smaller"};
	expect_open(dir, "fx_small", BW_E_ABI, small, 3);

	snprintf(path, sizeof path, "%s/fx_badname.so", dir);
	const char *badname[] = {path, "name must be 'fx_badname'"};
	expect_open(dir, "fx_badname", BW_E_ABI, badname, 2);

	snprintf(path, sizeof path, "%s/fx_absent.so", dir);
	const char *missing[] = {path, "fx_absent"};
	expect_open(dir, "fx_absent", BW_E_NOTFOUND, missing, 2);

	/* Names that could escape the directory, and bad directories. */
	const char *badnames[] = {"../fx_good", "fx/good", "FX_GOOD", "", "fx good"};
	for (size_t i = 0; i < sizeof badnames / sizeof badnames[0]; i++)
		expect_open(dir, badnames[i], BW_E_INVALID, NULL, 0);
	const char *relative[] = {"not an absolute path"};
	expect_open("tests/fixtures/plugins", "fx_good", BW_E_DENIED, relative, 1);
	expect_open("", "fx_good", BW_E_DENIED, relative, 1);
	expect_open("/nonexistent/bulwark/plugins", "fx_good", BW_E_NOTFOUND, NULL, 0);

	/* A text file named like a plugin fails to load with a message naming it. */
	char *junk = bw_test_write(dir, "fx_junk.so", "not an ELF file\n");
	const char *notelf[] = {junk, "cannot load"};
	expect_open(dir, "fx_junk", BW_E_INVALID, notelf, 2);
	free(junk);
}

static void test_open_symlink(void **state)
{
	const char *dir = *state;
	char target[1024], link[1024];
	snprintf(target, sizeof target, "%s/fx_good.so", dir);
	snprintf(link, sizeof link, "%s/fx_link.so", dir);
	assert_int_equal(symlink(target, link), 0);
	const char *want[] = {link, "not a regular file", "symbolic links"};
	expect_open(dir, "fx_link", BW_E_DENIED, want, 3);
	/* Also when the link has the plugin's own name, pointing at a good copy elsewhere. */
	char *other = plugin_dir();
	char moved[1024];
	snprintf(moved, sizeof moved, "%s/fx_good.so", other);
	assert_int_equal(unlink(target), 0);
	assert_int_equal(symlink(moved, target), 0);
	const char *want2[] = {target, "symbolic links"};
	expect_open(dir, "fx_good", BW_E_DENIED, want2, 2);
	bw_test_rmtree(other);
	free(other);
}

static void test_open_permissions(void **state)
{
	const char *dir = *state;
	char path[1024];
	snprintf(path, sizeof path, "%s/fx_good.so", dir);

	assert_int_equal(chmod(path, 0664), 0);
	const char *grp[] = {path, "writable by group", "chmod go-w"};
	expect_open(dir, "fx_good", BW_E_DENIED, grp, 3);

	assert_int_equal(chmod(path, 0646), 0);
	const char *oth[] = {path, "writable by others"};
	expect_open(dir, "fx_good", BW_E_DENIED, oth, 2);

	assert_int_equal(chmod(path, 0644), 0);
	expect_open(dir, "fx_good", BW_OK, NULL, 0);
}

static void test_open_directory_permissions(void **state)
{
	const char *dir = *state;
	assert_int_equal(chmod(dir, 0777), 0);
	const char *oth[] = {dir, "directory", "writable by others"};
	expect_open(dir, "fx_good", BW_E_DENIED, oth, 3);
	assert_int_equal(chmod(dir, 0775), 0);
	const char *grp[] = {dir, "directory", "writable by group"};
	expect_open(dir, "fx_good", BW_E_DENIED, grp, 3);
	/* A sticky, world-writable directory such as /tmp is no better. */
	assert_int_equal(chmod(dir, 01777), 0);
	expect_open(dir, "fx_good", BW_E_DENIED, oth, 3);
	assert_int_equal(chmod(dir, 0755), 0);
	expect_open(dir, "fx_good", BW_OK, NULL, 0);
	/* A plugin path that is a directory is not a regular file. */
	char sub[1024];
	snprintf(sub, sizeof sub, "%s/fx_dir.so", dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	const char *notreg[] = {sub, "not a regular file"};
	expect_open(dir, "fx_dir", BW_E_DENIED, notreg, 2);
}

static void test_open_foreign_owner(void **state)
{
	(void)state;
	if (geteuid() != 0) {
		skip(); /* only root can give a file to another user */
		return;
	}
	char *dir = plugin_dir();
	char path[1024];
	snprintf(path, sizeof path, "%s/fx_good.so", dir);
	assert_int_equal(chown(path, 65534, 65534), 0);
	const char *want[] = {path, "owned by uid 65534", "not by root or the service user"};
	expect_open(dir, "fx_good", BW_E_DENIED, want, 3);
	/* The same for the directory. */
	assert_int_equal(chown(path, 0, 0), 0);
	expect_open(dir, "fx_good", BW_OK, NULL, 0);
	assert_int_equal(chown(dir, 65534, 65534), 0);
	const char *wantd[] = {dir, "directory", "owned by uid 65534"};
	expect_open(dir, "fx_good", BW_E_DENIED, wantd, 3);
	bw_test_rmtree(dir);
	free(dir);
}

/* ---- lifecycle with a small host */

/* The fixture's instance layout (tests/fixtures/plugins/fx_good.c). */
struct fx_good_instance {
	char *name;
	int64_t count;
	bool flag;
	double ratio;
	struct bw_strings list;
	char *secret;
	int64_t wait_ms;
	char *path;
};

struct env {
	char *plugins; /* private plugin directory */
	char *work;    /* config files and the database */
	struct bw_host host;
	bw_config *cfg;
};

static int setup_env(void **state)
{
	struct env *e = calloc(1, sizeof *e);
	e->plugins = plugin_dir();
	e->work = bw_test_tmpdir("loader");
	struct bw_host *h = &e->host;
	bw_error err = {0};
	h->base = event_base_new();
	h->events = bw_events_new(h->base, 0);
	h->metrics = bw_metrics_new();
	h->workq = bw_workq_new(h->base, 1, 0, &err);
	char db[1024];
	snprintf(db, sizeof db, "%s/bulwark.db", e->work);
	h->store = bw_store_open(db, &err);
	if (!h->store) {
		fprintf(stderr, "bw_store_open: %s\n", err.message);
		return -1;
	}
	h->admin_router = bw_router_new(h, "admin");
	h->agent_router = bw_router_new(h, "agent");
	h->plugins = bw_plugins_new(h);
	if (!h->base || !h->events || !h->metrics || !h->workq || !h->admin_router || !h->agent_router || !h->plugins)
		return -1;
	*state = e;
	return 0;
}

static int teardown_env(void **state)
{
	struct env *e = *state;
	struct bw_host *h = &e->host;
	bw_plugins_free(h->plugins);
	bw_router_free(h->admin_router);
	bw_router_free(h->agent_router);
	bw_workq_free(h->workq);
	bw_store_close(h->store);
	bw_metrics_free(h->metrics);
	bw_events_free(h->events);
	event_base_free(h->base);
	bw_config_free(e->cfg);
	bw_test_rmtree(e->plugins);
	bw_test_rmtree(e->work);
	free(e->plugins);
	free(e->work);
	free(e);
	return 0;
}

static bw_config *load_config(struct env *e, const char *text)
{
	char *path = bw_test_write(e->work, "bulwark.lua", text);
	bw_error err = {0};
	bw_config *cfg = bw_config_load(path, &err);
	if (!cfg)
		fail_msg("config: %s", err.message);
	free(path);
	bw_config_free(e->cfg);
	e->cfg = cfg;
	return cfg;
}

static struct bw_plugin_ctx *find_plugin(bw_plugins *ps, const char *name)
{
	for (size_t i = 0; i < bw_plugins_count(ps); i++)
		if (strcmp(bw_plugins_at(ps, i)->name, name) == 0)
			return bw_plugins_at(ps, i);
	fail_msg("plugin %s not in the table", name);
	return NULL;
}

/* Runs fn with stderr redirected into a file; returns what was logged (caller frees). */
static char *capture_stderr(struct env *e, bool (*fn)(bw_plugins *), bw_plugins *ps, bool *result)
{
	char path[1024];
	snprintf(path, sizeof path, "%s/stderr.log", e->work);
	fflush(stderr);
	int saved = dup(STDERR_FILENO);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, STDERR_FILENO);
	close(fd);
	*result = fn(ps);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	FILE *f = fopen(path, "r");
	static char buf[16384];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	fputs(buf, stderr); /* keep the log visible in the test output */
	return strdup(buf);
}

static void test_lifecycle(void **state)
{
	struct env *e = *state;
	bw_plugins *ps = e->host.plugins;
	bw_config *cfg = load_config(e, "plugins = { \"fx_good\", \"fx_initfail\", \"fx_latecap\" }\n"
	                                "log = { level = \"info\" }\n"
	                                "fx_good = { name = \"custom\", count = 7, flag = true, ratio = 0.25,\n"
	                                "  list = { \"a\", \"b\" }, secret = \"s3cret\", wait = \"5m\",\n"
	                                "  path = \"rel/file.txt\" }\n");
	bw_error err = {0};
	assert_int_equal(bw_plugins_load(ps, cfg, e->plugins, &err), BW_OK);
	assert_int_equal(bw_plugins_check_sections(ps, cfg, &err), BW_OK);
	assert_int_equal(bw_plugins_count(ps), 3);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(bw_plugins_at(ps, i)->state, BW_PS_LOADED);
	assert_null(bw_plugins_at(ps, 3));

	/* fx_good got its settings, converted to their C types. */
	struct bw_plugin_ctx *good = find_plugin(ps, "fx_good");
	const struct fx_good_instance *in = good->instance;
	assert_string_equal(in->name, "custom");
	assert_int_equal(in->count, 7);
	assert_true(in->flag);
	assert_true(in->ratio == 0.25);
	assert_int_equal(in->list.count, 2);
	assert_string_equal(in->list.items[0], "a");
	assert_string_equal(in->list.items[1], "b");
	assert_string_equal(in->secret, "s3cret");
	assert_int_equal(in->wait_ms, 300000);
	char want_path[1200];
	snprintf(want_path, sizeof want_path, "%s/rel/file.txt", bw_config_base_dir(cfg));
	assert_string_equal(in->path, want_path);

	/* An optional plugin whose init fails is marked failed; the others go on. */
	assert_int_equal(bw_plugins_init(ps, &err), BW_OK);
	struct bw_plugin_ctx *initfail = find_plugin(ps, "fx_initfail"), *late = find_plugin(ps, "fx_latecap");
	assert_int_equal(initfail->state, BW_PS_FAILED);
	assert_non_null(strstr(initfail->error, "fixture refuses to start: no upstream configured"));
	assert_non_null(strstr(initfail->error, "init failed"));
	assert_int_equal(good->state, BW_PS_INITIALIZED);
	assert_int_equal(late->state, BW_PS_INITIALIZED);
	assert_int_equal(bw_plugins_failed(ps), 1);

	/* fx_latecap tries to register a capability and a route in start: both refused with
	 * BW_E_STATE (else its start fails), and it reports the refusal in its detail. */
	assert_int_equal(bw_plugins_start(ps, &err), BW_OK);
	assert_int_equal(late->state, BW_PS_RUNNING);
	assert_int_equal(good->state, BW_PS_RUNNING);
	assert_int_equal(initfail->state, BW_PS_FAILED);
	assert_non_null(strstr(late->detail, "refused late registration"));
	assert_non_null(strstr(late->detail, "only during init"));
	assert_int_equal(bw_plugins_capability_count(ps, "push"), 0);
	assert_null(bw_plugins_capability(ps, "push", 0));

	/* The JSON view for /healthz and /api/v1/plugins. */
	json_t *j = bw_plugins_json(ps);
	assert_int_equal(json_array_size(j), 3);
	json_t *jf = json_array_get(j, 1);
	assert_string_equal(json_string_value(json_object_get(jf, "name")), "fx_initfail");
	assert_string_equal(json_string_value(json_object_get(jf, "state")), "failed");
	assert_non_null(strstr(json_string_value(json_object_get(jf, "error")), "no upstream configured"));
	json_t *jg = json_array_get(j, 0);
	assert_string_equal(json_string_value(json_object_get(jg, "state")), "running");
	assert_string_equal(json_string_value(json_object_get(jg, "version")), "0.1");
	assert_true(json_is_null(json_object_get(jg, "error")));
	assert_false(json_is_true(json_object_get(jg, "required")));
	json_t *jl = json_array_get(j, 2);
	assert_non_null(strstr(json_string_value(json_object_get(jl, "detail")), "refused late registration"));
	assert_int_equal(json_array_size(json_object_get(jl, "capabilities")), 0);
	json_decref(j);

	/* Stop runs in reverse order of loading and skips the failed plugin. */
	bool all = false;
	char *log = capture_stderr(e, bw_plugins_stop, ps, &all);
	assert_true(all);
	char *s_late = strstr(log, "plugin fx_latecap stopped"), *s_good = strstr(log, "plugin fx_good stopped");
	assert_non_null(s_late);
	assert_non_null(s_good);
	assert_true(s_late < s_good);
	assert_null(strstr(log, "plugin fx_initfail stopped"));
	free(log);
	assert_int_equal(good->state, BW_PS_STOPPED);
	assert_int_equal(late->state, BW_PS_STOPPED);
	assert_int_equal(initfail->state, BW_PS_FAILED);
	/* A second stop finds nothing left to stop. */
	assert_true(bw_plugins_stop(ps));
	bw_plugins_fini(ps);
	assert_int_equal(good->state, BW_PS_STOPPED);
	assert_int_equal(initfail->state, BW_PS_FAILED);
}

static void test_required_init_failure(void **state)
{
	struct env *e = *state;
	bw_plugins *ps = e->host.plugins;
	bw_config *cfg = load_config(e, "plugins = { { \"fx_initfail\", required = true }, \"fx_latecap\" }\n");
	bw_error err = {0};
	assert_int_equal(bw_plugins_load(ps, cfg, e->plugins, &err), BW_OK);
	assert_true(find_plugin(ps, "fx_initfail")->required);
	int rc = bw_plugins_init(ps, &err);
	assert_int_equal(rc, BW_E_CONFIG);
	assert_int_equal(err.code, BW_E_CONFIG);
	assert_non_null(strstr(err.message, "required plugin fx_initfail"));
	assert_non_null(strstr(err.message, "no upstream configured"));
	assert_int_equal(find_plugin(ps, "fx_initfail")->state, BW_PS_FAILED);
	bw_plugins_fini(ps);
}

static void test_required_load_failure(void **state)
{
	struct env *e = *state;
	bw_plugins *ps = e->host.plugins;
	bw_config *cfg = load_config(e, "plugins = { \"fx_absent\", { \"fx_major\", required = true } }\n");
	bw_error err = {0};
	int rc = bw_plugins_load(ps, cfg, e->plugins, &err);
	assert_int_equal(rc, BW_E_ABI);
	assert_non_null(strstr(err.message, "required plugin fx_major"));
	assert_non_null(strstr(err.message, "ABI"));
	/* The optional one that is missing was marked failed, not fatal. */
	struct bw_plugin_ctx *absent = find_plugin(ps, "fx_absent");
	assert_int_equal(absent->state, BW_PS_FAILED);
	assert_non_null(strstr(absent->error, "fx_absent.so"));
}

static void test_bad_settings(void **state)
{
	struct env *e = *state;
	bw_plugins *ps = e->host.plugins;
	/* Optional: count out of bounds -> failed with the key named; the rest still loads. */
	bw_config *cfg = load_config(e, "plugins = { \"fx_good\", \"fx_latecap\" }\n"
	                                "fx_good = { secret = \"x\", count = 11 }\n");
	bw_error err = {0};
	assert_int_equal(bw_plugins_load(ps, cfg, e->plugins, &err), BW_OK);
	struct bw_plugin_ctx *good = find_plugin(ps, "fx_good");
	assert_int_equal(good->state, BW_PS_FAILED);
	assert_non_null(strstr(good->error, "fx_good.count"));
	assert_int_equal(find_plugin(ps, "fx_latecap")->state, BW_PS_LOADED);
	assert_int_equal(bw_plugins_init(ps, &err), BW_OK);
	assert_int_equal(good->state, BW_PS_FAILED);
	bw_plugins_free(ps);

	/* Required: a missing required setting fails the load. */
	ps = e->host.plugins = bw_plugins_new(&e->host);
	cfg = load_config(e, "plugins = { { \"fx_good\", required = true } }\nfx_good = { count = 2 }\n");
	bw_error_clear(&err);
	assert_int_equal(bw_plugins_load(ps, cfg, e->plugins, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "fx_good.secret"));
}

static void test_unknown_sections(void **state)
{
	struct env *e = *state;
	bw_plugins *ps = e->host.plugins;
	bw_config *cfg = load_config(e, "plugins = { \"fx_latecap\" }\n"
	                                "log = { level = \"info\" }\n"
	                                "fx_latecap = { }\n"
	                                "mystery = { a = 1 }\n");
	bw_error err = {0};
	assert_int_equal(bw_plugins_load(ps, cfg, e->plugins, &err), BW_OK);
	assert_int_equal(bw_plugins_check_sections(ps, cfg, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "mystery"));
	assert_non_null(strstr(err.message, "bulwark.lua:4"));
	assert_non_null(strstr(err.message, "unknown setting"));
	bw_plugins_free(ps);

	/* A section for a plugin that is not enabled is unknown as well. */
	ps = e->host.plugins = bw_plugins_new(&e->host);
	cfg = load_config(e, "plugins = { \"fx_latecap\" }\nfx_good = { secret = \"x\" }\n");
	assert_int_equal(bw_plugins_load(ps, cfg, e->plugins, &err), BW_OK);
	bw_error_clear(&err);
	assert_int_equal(bw_plugins_check_sections(ps, cfg, &err), BW_E_CONFIG);
	assert_non_null(strstr(err.message, "fx_good"));
	assert_non_null(strstr(err.message, "plugins = {"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_open_good, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_open_refusals, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_open_symlink, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_open_permissions, setup_dir, teardown_dir),
	    cmocka_unit_test_setup_teardown(test_open_directory_permissions, setup_dir, teardown_dir),
	    cmocka_unit_test(test_open_foreign_owner),
	    cmocka_unit_test_setup_teardown(test_lifecycle, setup_env, teardown_env),
	    cmocka_unit_test_setup_teardown(test_required_init_failure, setup_env, teardown_env),
	    cmocka_unit_test_setup_teardown(test_required_load_failure, setup_env, teardown_env),
	    cmocka_unit_test_setup_teardown(test_bad_settings, setup_env, teardown_env),
	    cmocka_unit_test_setup_teardown(test_unknown_sections, setup_env, teardown_env),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
