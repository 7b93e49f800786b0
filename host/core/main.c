/* host/core/main.c: bulwarkd: command line, startup in order, signals (SIGHUP reload,
 * SIGTERM/SIGINT graceful shutdown), and teardown. */
#include "admin_api.h"
#include "agent_api.h"
#include "auth.h"
#include "crypto.h"
#include "device_ca.h"
#include "devices.h"
#include "devices_api.h"
#include "loader.h"
#include "log.h"
#include "policies.h"
#include "policies_api.h"
#include "push_wake.h"
#include "registry.h"
#include "router.h"
#include "tls.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct bw_host *bw_the_host;

static void usage(FILE *f)
{
	fprintf(f, "usage: bulwarkd --config FILE          run the server in the foreground\n"
	           "       bulwarkd --check-config FILE    validate a configuration (host and plugin settings)\n"
	           "       bulwarkd --config FILE --renew-tls\n"
	           "                                       issue the server certificate again (same name, same CA)\n"
	           "       bulwarkd --config-docs [--config FILE] [PLUGIN...]\n"
	           "                                       print the settings reference (Markdown)\n"
	           "       bulwarkd --version\n");
}

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, mode) == 0 || errno == EEXIST ? 0 : -1;
}

static char *dir_of(const char *path)
{
	char *d = strdup(path);
	char *slash = d ? strrchr(d, '/') : NULL;
	if (slash && slash != d)
		*slash = '\0';
	return d;
}

/* ---- first start: TLS files and the first administrator */

/* The agent listener's context: the server certificate, and device certificates asked for. */
static int agent_tls_new(struct bw_host *h, const struct bw_settings *s, SSL_CTX **out, bw_error *err)
{
	SSL_CTX *ctx = bw_tls_server_ctx_new(s->tls.certificate, s->tls.key, err);
	if (!ctx)
		return err->code;
	int rc = bw_tls_server_ctx_require_client_ca(ctx, bw_device_ca_cert(h->device_ca), err);
	if (rc != BW_OK) {
		SSL_CTX_free(ctx);
		return rc;
	}
	*out = ctx;
	return BW_OK;
}

static int prepare_tls(struct bw_host *h, bw_error *err)
{
	struct bw_settings *s = &h->settings;
	if (s->tls.generate) {
		const char *files[] = {s->tls.certificate, s->tls.key, s->tls.ca, s->tls.ca_key};
		for (size_t i = 0; i < 4; i++) {
			char *d = dir_of(files[i]);
			int rc = d ? mkdir_p(d, 0700) : -1;
			free(d);
			if (rc != 0)
				return bw_error_set(err, BW_E_IO, "cannot create the directory of %s: %s", files[i],
				                    strerror(errno));
		}
		struct bw_tls_paths p = {s->tls.ca, s->tls.ca_key, s->tls.certificate, s->tls.key};
		bool existed = access(s->tls.certificate, F_OK) == 0;
		int rc = bw_tls_generate(&p, "localhost", (const char *const *)s->tls.names.items, s->tls.names.count,
		                         false, err);
		if (rc != BW_OK)
			return rc;
		if (!existed)
			bw_log_info("tls", "generated a self-signed CA (%s) and server certificate (%s)", s->tls.ca,
			            s->tls.certificate);
	}
	h->tls = bw_tls_server_ctx_new(s->tls.certificate, s->tls.key, err);
	if (!h->tls)
		return err->code;
	/* The device CA is created at first start, whatever tls.generate says: it is ours alone. */
	char *d = dir_of(s->agent.device_ca);
	if (d && mkdir_p(d, 0700) != 0) {
		free(d);
		return bw_error_set(err, BW_E_IO, "cannot create the directory of %s: %s", s->agent.device_ca,
		                    strerror(errno));
	}
	free(d);
	if (!(h->device_ca = bw_device_ca_open(s->agent.device_ca, s->agent.device_ca_key, true, err)))
		return err->code;
	return agent_tls_new(h, s, &h->agent_tls, err);
}

static int ensure_first_admin(struct bw_host *h, bw_error *err)
{
	int64_t n = 0;
	if (bw_store_admin_count(h->store, NULL, &n, err) != BW_OK)
		return err->code;
	if (n > 0)
		return BW_OK;
	char password[BW_TOKEN_LEN + 1], id[37];
	char *hash = NULL;
	if (bw_token_new(password, err) != BW_OK || bw_uuid_new(id, err) != BW_OK ||
	    bw_password_hash(password, &hash, err) != BW_OK)
		return err->code;
	int rc = bw_store_admin_create(h->store, id, "admin", hash, "administrator", err);
	free(hash);
	if (rc != BW_OK)
		return rc;
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/initial-admin-password", h->settings.server.var_dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || fchmod(fd, 0600) != 0 || dprintf(fd, "%s\n", password) < 0) {
		if (fd >= 0)
			close(fd);
		return bw_error_set(err, BW_E_IO, "cannot write %s: %s", path, strerror(errno));
	}
	close(fd);
	/* Shown once on the terminal that started the first run; the file keeps it for later. */
	printf("Created the first administrator 'admin' with password: %s\n"
	       "(also written to %s, mode 0600; change it after logging in)\n",
	       password, path);
	fflush(stdout);
	OPENSSL_cleanse(password, sizeof password);
	bw_log_info("host", "created the first administrator 'admin' (password in %s)", path);
	return BW_OK;
}

/* ---- timers and signals */

static void health_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	bw_admin_api_refresh_health(arg);
}

static void purge_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct bw_host *h = arg;
	bw_error err = {0};
	int64_t now = (int64_t)time(NULL), n = 0;
	if (bw_store_token_purge_expired(h->store, now, &err) != BW_OK)
		bw_log_warn("host", "purging expired sessions failed: %s", err.message);
	if (bw_store_events_purge(h->store, now - h->settings.agent.events_retention_ms / 1000, &n, &err) != BW_OK)
		bw_log_warn("host", "purging old device events failed: %s", err.message);
	else if (n > 0)
		bw_log_info("host", "purged %lld device events older than the retention", (long long)n);
}

static void minute_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct bw_host *h = arg;
	bw_error err = {0};
	int64_t n = 0;
	int64_t now = (int64_t)time(NULL);
	size_t late = bw_registry_mark_out_of_sync(h->registry, now - h->settings.agent.out_of_sync_after_ms / 1000);
	if (late > 0)
		bw_log_info("devices", "%zu devices are now out of sync", late);
	if (bw_store_command_expire(h->store, now, &n, &err) != BW_OK)
		bw_log_warn("host", "expiring commands failed: %s", err.message);
	else if (n > 0)
		bw_log_info("host", "%lld commands expired", (long long)n);
}

/* WAL checkpoints on a work-queue thread (the loop never waits for an fdatasync): one job at
 * a time, every second. */
struct ckpt_job {
	struct bw_host *h;
	char *path;
	bw_error err;
	int rc;
};
static bool g_ckpt_busy;

static void ckpt_work(void *arg)
{
	struct ckpt_job *j = arg;
	j->rc = bw_store_checkpoint(j->path, NULL, NULL, &j->err);
}

static void ckpt_done(void *arg)
{
	struct ckpt_job *j = arg;
	if (j->rc != BW_OK)
		bw_log_warn("store", "%s", j->err.message);
	g_ckpt_busy = false;
	free(j->path);
	free(j);
}

static void ckpt_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct bw_host *h = arg;
	if (g_ckpt_busy || h->shutting_down)
		return;
	struct ckpt_job *j = calloc(1, sizeof *j);
	if (!j || !(j->path = strdup(h->settings.database.path))) {
		free(j);
		return;
	}
	j->h = h;
	if (bw_workq_submit(h->workq, ckpt_work, ckpt_done, j, NULL) == BW_OK) {
		g_ckpt_busy = true;
	} else {
		free(j->path);
		free(j);
	}
}

static struct timespec g_deadline;
static struct event *g_drain_ev;

static bool past_deadline(void)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > g_deadline.tv_sec || (now.tv_sec == g_deadline.tv_sec && now.tv_nsec >= g_deadline.tv_nsec);
}

static void drain_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct bw_host *h = arg;
	static bool requests_done;
	if (!requests_done) {
		if (h->inflight > 0 && !past_deadline())
			return;
		if (h->inflight > 0)
			bw_log_warn("host", "shutdown deadline reached with %zu requests in flight", h->inflight);
		requests_done = true;
	}
	if (!bw_plugins_stop(h->plugins) && !past_deadline())
		return; /* a plugin asked for more time */
	event_del(g_drain_ev);
	event_base_loopexit(h->base, NULL);
}

static void on_sigterm(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct bw_host *h = arg;
	if (h->shutting_down) {
		bw_log_warn("host", "second signal %d: stopping now", (int)sig);
		event_base_loopbreak(h->base);
		return;
	}
	h->shutting_down = true;
	bw_log_info("host", "signal %d: shutting down (draining %zu requests, up to %lld ms)", (int)sig, h->inflight,
	            (long long)h->settings.server.shutdown_timeout_ms);
	bw_http_server_stop_accepting(h->admin_srv);
	bw_http_server_stop_accepting(h->agent_srv);
	clock_gettime(CLOCK_MONOTONIC, &g_deadline);
	g_deadline.tv_sec += h->settings.server.shutdown_timeout_ms / 1000;
	g_deadline.tv_nsec += (h->settings.server.shutdown_timeout_ms % 1000) * 1000000;
	if (g_deadline.tv_nsec >= 1000000000)
		g_deadline.tv_sec++, g_deadline.tv_nsec -= 1000000000;
	g_drain_ev = event_new(h->base, -1, EV_PERSIST, drain_tick, h);
	struct timeval tv = {0, 50000};
	event_add(g_drain_ev, &tv);
	drain_tick(-1, 0, h);
}

static struct bw_http_limits limits_of(const struct bw_settings *s)
{
	struct bw_http_limits l = {(size_t)s->limits.max_header_bytes, (size_t)s->limits.max_body_bytes,
	                           (size_t)s->limits.max_connections,
	                           (int)((s->limits.request_timeout_ms + 999) / 1000)};
	return l;
}

static bool strings_equal(const struct bw_strings *a, const struct bw_strings *b)
{
	if (a->count != b->count)
		return false;
	for (size_t i = 0; i < a->count; i++)
		if (strcmp(a->items[i], b->items[i]) != 0)
			return false;
	return true;
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* True when a field's value differs between two instances of the same table. */
static bool field_differs(const struct bw_config_field *f, const void *a, const void *b)
{
	const char *pa = (const char *)a + f->offset, *pb = (const char *)b + f->offset;
	switch (f->type) {
	case BW_FIELD_STRING:
	case BW_FIELD_SECRET:
	case BW_FIELD_PATH:
		return !str_eq(*(char *const *)pa, *(char *const *)pb);
	case BW_FIELD_INT:
	case BW_FIELD_DURATION:
		return *(const int64_t *)pa != *(const int64_t *)pb;
	case BW_FIELD_BOOL:
		return *(const bool *)pa != *(const bool *)pb;
	case BW_FIELD_DOUBLE: {
		double da, db;
		memcpy(&da, pa, sizeof da);
		memcpy(&db, pb, sizeof db);
		return da != db;
	}
	case BW_FIELD_STRINGS:
		return !strings_equal((const struct bw_strings *)pa, (const struct bw_strings *)pb);
	default:
		return false;
	}
}

static void report_restart_needed(const char *section, const struct bw_config_field *fields, const void *old,
                                  const void *new)
{
	for (const struct bw_config_field *f = fields; f && f->key; f++)
		if (field_differs(f, old, new))
			bw_log_warn("reload", "%s.%s changed: needs a restart to take effect", section, f->key);
}

static void reload(struct bw_host *h)
{
	bw_error err = {0};
	const char *path = bw_config_path(h->cfg);
	bw_log_info("reload", "SIGHUP: reloading %s", path);
	bw_config *cfg = bw_config_load(path, &err);
	struct bw_settings s;
	if (!cfg) {
		bw_log_error("reload", "reload failed, keeping the running configuration: %s", err.message);
		return;
	}
	if (bw_settings_load(cfg, &s, &err) != BW_OK || bw_plugins_check_sections(h->plugins, cfg, &err) != BW_OK) {
		bw_log_error("reload", "reload failed, keeping the running configuration: %s", err.message);
		bw_settings_free(&s);
		bw_config_free(cfg);
		return;
	}
	/* Live: log, limits, admin policy, TLS certificate files. */
	bw_log_configure(bw_log_level_parse(s.log.level), strcmp(s.log.format, "json") == 0);
	struct bw_http_limits lim = limits_of(&s);
	bw_http_server_set_limits(h->admin_srv, &lim);
	bw_http_server_set_limits(h->agent_srv, &lim);
	SSL_CTX *ctx = bw_tls_server_ctx_new(s.tls.certificate, s.tls.key, &err);
	SSL_CTX *actx = NULL;
	if (ctx && agent_tls_new(h, &s, &actx, &err) == BW_OK) {
		bw_http_server_set_tls(h->admin_srv, ctx);
		bw_http_server_set_tls(h->agent_srv, actx);
		SSL_CTX_free(h->tls);
		SSL_CTX_free(h->agent_tls);
		h->tls = ctx;
		h->agent_tls = actx;
	} else {
		SSL_CTX_free(ctx);
		bw_log_error("reload", "keeping the current TLS certificate: %s", err.message);
	}
	/* Restart-only: listeners, database, server, TLS generation settings, the plugin list and
	 * plugin settings. */
	const struct bw_settings_section *sec;
	for (sec = bw_settings_sections; sec->name; sec++) {
		if (strcmp(sec->name, "log") == 0 || strcmp(sec->name, "limits") == 0 ||
		    strcmp(sec->name, "admin") == 0)
			continue;
		if (strcmp(sec->name, "agent") == 0) {
			/* Intervals and limits change live; the device CA files need a restart. */
			if (strcmp(s.agent.device_ca, h->settings.agent.device_ca) != 0 ||
			    strcmp(s.agent.device_ca_key, h->settings.agent.device_ca_key) != 0)
				bw_log_warn("reload", "agent.device_ca changed: needs a restart to take effect");
			continue;
		}
		report_restart_needed(sec->name, sec->fields, (const char *)&h->settings + sec->offset,
		                      (const char *)&s + sec->offset);
	}
	bool list_changed = bw_config_plugin_count(cfg) != bw_config_plugin_count(h->cfg);
	for (size_t i = 0; !list_changed && i < bw_config_plugin_count(cfg); i++)
		list_changed = strcmp(bw_config_plugin(cfg, i)->name, bw_config_plugin(h->cfg, i)->name) != 0 ||
		               bw_config_plugin(cfg, i)->required != bw_config_plugin(h->cfg, i)->required;
	if (list_changed)
		bw_log_warn("reload", "plugins changed: needs a restart to take effect");
	for (size_t i = 0; i < bw_plugins_count(h->plugins); i++) {
		struct bw_plugin_ctx *c = bw_plugins_at(h->plugins, i);
		if (!c->desc || !c->desc->fields || !c->instance)
			continue;
		void *tmp = calloc(1, c->desc->instance_size ? c->desc->instance_size : 1);
		bw_error perr = {0};
		if (tmp && bw_config_apply(cfg, c->name, c->desc->fields, tmp, &perr) == BW_OK)
			report_restart_needed(c->name, c->desc->fields, c->instance, tmp);
		else if (tmp)
			bw_log_warn("reload", "settings of plugin %s are invalid (%s); they would refuse a restart",
			            c->name, perr.message);
		if (tmp)
			bw_config_fields_free(c->desc->fields, tmp);
		free(tmp);
	}
	/* Keep the restart-only values the process runs with; take the live ones. */
	struct bw_settings old = h->settings;
	h->settings.admin = s.admin;
	h->settings.limits = s.limits;
	/* Take the live agent values, keep the device CA paths the process runs with. */
	{
		__typeof__(s.agent) live = s.agent, kept = h->settings.agent;
		char *ca = kept.device_ca, *cak = kept.device_ca_key;
		kept.device_ca = live.device_ca;
		kept.device_ca_key = live.device_ca_key;
		live.device_ca = ca;
		live.device_ca_key = cak;
		h->settings.agent = live;
		s.agent = kept;
	}
	char *ol = old.log.level, *of = old.log.format;
	h->settings.log.level = s.log.level;
	h->settings.log.format = s.log.format;
	s.log.level = ol;
	s.log.format = of;
	bw_settings_free(&s);
	bw_config_free(h->cfg);
	h->cfg = cfg;
	bw_log_info("reload", "configuration reloaded");
}

static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
	(void)sig, (void)what;
	reload(arg);
}

/* ---- commands */

static int print_config_docs(const char *config_path, int argc, char **argv)
{
	bw_error err = {0};
	printf("## Host settings\n\n");
	for (const struct bw_settings_section *s = bw_settings_sections; s->name; s++) {
		char *md = bw_config_fields_markdown(s->name, s->title, s->fields);
		fputs(md ? md : "", stdout);
		free(md);
	}
	char *dir = NULL;
	if (config_path) {
		bw_config *cfg = bw_config_load(config_path, &err);
		struct bw_settings st;
		if (!cfg || bw_settings_load(cfg, &st, &err) != BW_OK) {
			fprintf(stderr, "bulwarkd: %s\n", err.message);
			bw_config_free(cfg);
			return 1;
		}
		dir = strdup(st.server.plugin_dir);
		bw_settings_free(&st);
		bw_config_free(cfg);
	} else {
		dir = strdup(BW_DEFAULT_PLUGIN_DIR);
	}
	if (argc > 0)
		printf("## Plugin settings\n\n");
	for (int i = 0; i < argc; i++) {
		lt_dlhandle hd;
		const struct bw_plugin *d;
		if (bw_plugin_open(dir, argv[i], &hd, &d, &err) != BW_OK) {
			fprintf(stderr, "bulwarkd: %s\n", err.message);
			free(dir);
			return 1;
		}
		char title[200];
		snprintf(title, sizeof title, "%s (`%s`)", d->description ? d->description : d->name, d->name);
		char *md = bw_config_fields_markdown(d->name, title, d->fields);
		fputs(md ? md : "", stdout);
		free(md);
		lt_dlclose(hd);
	}
	free(dir);
	return 0;
}

static int check_config(const char *path)
{
	bw_error err = {0};
	bw_config *cfg = bw_config_load(path, &err);
	if (!cfg) {
		fprintf(stderr, "bulwarkd: %s\n", err.message);
		return 1;
	}
	struct bw_settings s;
	int rc = bw_settings_load(cfg, &s, &err);
	struct bw_host h = {0};
	bw_plugins *ps = NULL;
	if (rc == BW_OK) {
		h.cfg = cfg;
		ps = bw_plugins_new(&h);
		rc = bw_plugins_load(ps, cfg, s.server.plugin_dir, &err);
	}
	if (rc == BW_OK)
		rc = bw_plugins_check_sections(ps, cfg, &err);
	/* Optional plugins that fail are not fatal when running, but a config check reports them. */
	for (size_t i = 0; rc == BW_OK && ps && i < bw_plugins_count(ps); i++) {
		struct bw_plugin_ctx *c = bw_plugins_at(ps, i);
		if (c->state == BW_PS_FAILED)
			rc = bw_error_set(&err, BW_E_CONFIG, "plugin %s: %s", c->name, c->error);
	}
	bw_plugins_free(ps);
	bw_settings_free(&s);
	bw_config_free(cfg);
	if (rc != BW_OK) {
		fprintf(stderr, "bulwarkd: %s\n", err.message);
		return 1;
	}
	printf("%s: configuration OK\n", path);
	return 0;
}

static int renew_tls(const char *path)
{
	bw_error err = {0};
	bw_config *cfg = bw_config_load(path, &err);
	struct bw_settings s;
	if (!cfg || bw_settings_load(cfg, &s, &err) != BW_OK) {
		fprintf(stderr, "bulwarkd: %s\n", err.message);
		bw_config_free(cfg);
		return 1;
	}
	char *cn = bw_tls_common_name(s.tls.certificate, &err);
	struct bw_tls_paths p = {s.tls.ca, s.tls.ca_key, s.tls.certificate, s.tls.key};
	int rc = cn ? bw_tls_generate(&p, cn, (const char *const *)s.tls.names.items, s.tls.names.count, true, &err)
	            : err.code;
	if (rc == BW_OK)
		printf("issued %s again for '%s', signed by %s\n", s.tls.certificate, cn, s.tls.ca);
	else
		fprintf(stderr, "bulwarkd: %s\n", err.message);
	free(cn);
	bw_settings_free(&s);
	bw_config_free(cfg);
	return rc == BW_OK ? 0 : 1;
}

/* ---- run */

static void create_host_metrics(struct bw_host *h)
{
	bw_metrics *m = h->metrics;
	h->m.requests = bw_metric_new(m, BW_METRIC_COUNTER, "bulwark_http_requests_total",
	                              "HTTP requests answered, by status class.", "class", NULL, 0, NULL);
	h->m.duration = bw_metric_new(m, BW_METRIC_HISTOGRAM, "bulwark_http_request_duration_seconds",
	                              "Time from request received to answer sent.", NULL, NULL, 0, NULL);
	h->m.connections = bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_http_connections", "Open connections.",
	                                 "listener", NULL, 0, NULL);
	h->m.inflight = bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_http_requests_in_flight",
	                              "Requests received and not yet answered.", NULL, NULL, 0, NULL);
	h->m.login_failures = bw_metric_new(m, BW_METRIC_COUNTER, "bulwark_admin_login_failures_total",
	                                    "Failed administrator logins.", NULL, NULL, 0, NULL);
	h->m.events_dropped = bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_events_dropped",
	                                    "Events dropped because the event queue was full.", NULL, NULL, 0, NULL);
	h->m.workq_pending = bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_workqueue_pending",
	                                   "Jobs submitted to the work queue and not completed.", NULL, NULL, 0, NULL);
	h->m.plugins_failed = bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_plugins_failed",
	                                    "Enabled plugins that failed to load, init or start.", NULL, NULL, 0, NULL);
	h->m.commands_open =
	    bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_commands_open",
	                  "Device commands queued, sent or acknowledged and not yet final.", NULL, NULL, 0, NULL);
	h->m.commands_oldest = bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_commands_oldest_age_seconds",
	                                     "Age of the oldest open device command.", NULL, NULL, 0, NULL);
	h->m.enrollments = bw_metric_new(m, BW_METRIC_COUNTER, "bulwark_enrollments_total",
	                                 "Devices enrolled, by method.", "method", NULL, 0, NULL);
	h->m.checkins = bw_metric_new(m, BW_METRIC_COUNTER, "bulwark_checkins_total", "Device check-ins answered.",
	                              NULL, NULL, 0, NULL);
	h->m.uptime =
	    bw_metric_new(m, BW_METRIC_GAUGE, "bulwark_uptime_seconds", "Seconds since start.", NULL, NULL, 0, NULL);
}

static void agent_healthz(struct bw_http_req *req, void *arg)
{
	(void)arg;
	bool ok = req->host->health.db_ok && !req->host->shutting_down;
	bw_req_reply_json(req, ok ? 200 : 503, json_pack("{s:s}", "status", ok ? "ok" : "unavailable"));
}

static int run(const char *config_path)
{
	static struct bw_host host;
	struct bw_host *h = &host;
	bw_the_host = h;
	bw_error err = {0};
	int rc = BW_OK;
	h->started_at = time(NULL);

	if (!(h->cfg = bw_config_load(config_path, &err)) ||
	    (rc = bw_settings_load(h->cfg, &h->settings, &err)) != BW_OK)
		goto fail;
	bw_log_configure(bw_log_level_parse(h->settings.log.level), strcmp(h->settings.log.format, "json") == 0);
	bw_log_info("host", "bulwarkd %s starting with %s", BW_VERSION, bw_config_path(h->cfg));
	if (mkdir_p(h->settings.server.var_dir, 0700) != 0) {
		rc = bw_error_set(&err, BW_E_IO, "cannot create var_dir %s: %s", h->settings.server.var_dir,
		                  strerror(errno));
		goto fail;
	}
	if ((rc = prepare_tls(h, &err)) != BW_OK)
		goto fail;

	evthread_use_pthreads();
	struct event_config *ec = event_config_new();
	/* Batches epoll_ctl changes per loop pass: the largest single gain in the prototype. */
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	h->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (!h->base) {
		rc = bw_error_set(&err, BW_E_INTERNAL, "cannot create the event loop");
		goto fail;
	}
	if (!(h->store = bw_store_open(h->settings.database.path, &err))) {
		rc = err.code;
		goto fail;
	}
	if ((rc = ensure_first_admin(h, &err)) != BW_OK)
		goto fail;
	if ((rc = bw_store_set_autocheckpoint(h->store, false, &err)) != BW_OK)
		goto fail;
	if (!(h->registry = bw_registry_new(h, &err))) {
		rc = err.code;
		goto fail;
	}
	h->metrics = bw_metrics_new();
	h->events = bw_events_new(h->base, 100000);
	h->auth = bw_auth_new();
	if (!h->metrics || !h->events || !h->auth) {
		rc = bw_error_set(&err, BW_E_NOMEM, "out of memory");
		goto fail;
	}
	create_host_metrics(h);
	if (!(h->workq = bw_workq_new(h->base, (unsigned)h->settings.server.workers, 10000, &err)) ||
	    !(h->http = bw_http_client_new(h->base, NULL, &err))) {
		rc = err.code;
		goto fail;
	}
	if (!bw_policies_new(h, &err)) { /* reached through bw_policies_of(h) */
		rc = err.code;
		goto fail;
	}
	h->admin_router = bw_router_new(h, "admin");
	h->agent_router = bw_router_new(h, "agent");
	struct bw_http_limits lim = limits_of(&h->settings);
	if (!(h->admin_srv = bw_http_server_new(h->base, "admin", h->tls, &lim, &err)) ||
	    !(h->agent_srv = bw_http_server_new(h->base, "agent", h->agent_tls, &lim, &err))) {
		rc = err.code;
		goto fail;
	}
	bw_http_server_set_handler(h->admin_srv, bw_router_dispatch, h->admin_router);
	bw_http_server_set_handler(h->agent_srv, bw_router_dispatch, h->agent_router);
	/* Bind before loading plugins, so a taken port fails fast and clearly. */
	for (size_t i = 0; i < h->settings.listen.admin.count; i++)
		if ((rc = bw_http_server_listen(h->admin_srv, h->settings.listen.admin.items[i], &err)) != BW_OK)
			goto fail;
	for (size_t i = 0; i < h->settings.listen.agent.count; i++)
		if ((rc = bw_http_server_listen(h->agent_srv, h->settings.listen.agent.items[i], &err)) != BW_OK)
			goto fail;
	if ((rc = bw_admin_api_register(h, &err)) != BW_OK ||
	    (rc = bw_router_add(h->agent_router, "GET", "/healthz", BW_ROLE_NONE, agent_healthz, NULL, NULL, &err)) !=
	        BW_OK ||
	    (rc = bw_agent_api_register(h, &err)) != BW_OK || (rc = bw_devices_api_register(h, &err)) != BW_OK ||
	    (rc = bw_policies_api_register(h, &err)) != BW_OK || (rc = bw_push_wake_routes(h, &err)) != BW_OK)
		goto fail;

	h->plugins = bw_plugins_new(h);
	if ((rc = bw_plugins_load(h->plugins, h->cfg, h->settings.server.plugin_dir, &err)) != BW_OK ||
	    (rc = bw_plugins_check_sections(h->plugins, h->cfg, &err)) != BW_OK ||
	    (rc = bw_plugins_init(h->plugins, &err)) != BW_OK || (rc = bw_plugins_start(h->plugins, &err)) != BW_OK ||
	    !(h->push = bw_push_wake_new(h, &err))) {
		rc = rc ? rc : err.code;
		goto fail;
	}

	bw_admin_api_refresh_health(h);
	struct event *health_ev = event_new(h->base, -1, EV_PERSIST, health_tick, h);
	struct timeval one_s = {1, 0};
	event_add(health_ev, &one_s);
	struct event *purge_ev = event_new(h->base, -1, EV_PERSIST, purge_tick, h);
	struct timeval hour = {3600, 0};
	event_add(purge_ev, &hour);
	struct event *ckpt_ev = event_new(h->base, -1, EV_PERSIST, ckpt_tick, h);
	event_add(ckpt_ev, &one_s);
	struct event *minute_ev = event_new(h->base, -1, EV_PERSIST, minute_tick, h);
	struct timeval minute = {60, 0};
	event_add(minute_ev, &minute);
	struct event *sigs[3] = {evsignal_new(h->base, SIGTERM, on_sigterm, h),
	                         evsignal_new(h->base, SIGINT, on_sigterm, h),
	                         evsignal_new(h->base, SIGHUP, on_sighup, h)};
	for (int i = 0; i < 3; i++)
		evsignal_add(sigs[i], NULL);
	signal(SIGPIPE, SIG_IGN);

	bw_log_info("host", "ready: admin %s (port %d), agent %s (port %d), %zu plugin(s)",
	            h->settings.listen.admin.items[0], bw_http_server_port(h->admin_srv),
	            h->settings.listen.agent.items[0], bw_http_server_port(h->agent_srv), bw_plugins_count(h->plugins));
	event_base_dispatch(h->base);

	bw_log_info("host", "stopping");
	for (int i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_free(health_ev);
	event_free(purge_ev);
	event_free(minute_ev);
	event_free(ckpt_ev);
	if (g_drain_ev)
		event_free(g_drain_ev);
	bw_plugins_stop(h->plugins);
	bw_plugins_fini(h->plugins);
	goto cleanup;

fail:
	fprintf(stderr, "bulwarkd: %s\n", err.message[0] ? err.message : "startup failed");
	bw_log_error("host", "startup failed: %s", err.message);
	if (h->plugins) {
		bw_plugins_stop(h->plugins);
		bw_plugins_fini(h->plugins);
	}
	rc = rc ? rc : BW_E_INTERNAL;
cleanup:
	bw_http_server_free(h->admin_srv);
	bw_http_server_free(h->agent_srv);
	bw_workq_free(h->workq);    /* completions may still answer requests: before the routers go */
	bw_push_wake_free(h->push); /* after the plugins' fini */
	bw_http_client_free(h->http);
	bw_plugins_free(h->plugins);
	/* after the plugins: their fini may read device policies */
	bw_policies_free(bw_policies_of(h));
	bw_registry_free(h->registry); /* writes the last coalesced last-seen times */
	bw_router_free(h->admin_router);
	bw_router_free(h->agent_router);
	bw_events_free(h->events);
	bw_auth_free(h->auth);
	bw_metrics_free(h->metrics);
	bw_admin_api_free();
	bw_store_checkpoint_close();
	if (h->store)
		bw_store_close(h->store); /* the last connection to close checkpoints the WAL */
	SSL_CTX_free(h->tls);
	SSL_CTX_free(h->agent_tls);
	bw_device_ca_free(h->device_ca);
	if (h->base)
		event_base_free(h->base);
	bw_settings_free(&h->settings);
	bw_config_free(h->cfg);
	if (rc == BW_OK)
		bw_log_info("host", "stopped cleanly");
	return rc == BW_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *config = NULL;
	bool docs = false, renew = false;
	int first_plugin = argc;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--version") == 0) {
			printf("bulwarkd %s (plugin ABI %d.%d)\n", BW_VERSION, BW_ABI_MAJOR, BW_ABI_MINOR);
			return 0;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--check-config") == 0 && i + 1 < argc) {
			return check_config(argv[i + 1]);
		} else if ((strcmp(a, "--config") == 0 || strcmp(a, "-c") == 0) && i + 1 < argc) {
			config = argv[++i];
		} else if (strcmp(a, "--renew-tls") == 0) {
			renew = true;
		} else if (strcmp(a, "--config-docs") == 0) {
			docs = true;
		} else if (docs && a[0] != '-') {
			first_plugin = i;
			break;
		} else {
			fprintf(stderr, "bulwarkd: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			return 2;
		}
	}
	if (docs)
		return print_config_docs(config, argc - first_plugin, argv + first_plugin);
	if (!config) {
		usage(stderr);
		return 2;
	}
	if (renew)
		return renew_tls(config);
	return run(config);
}
