/* plugins/dir_ldap/plugin.c: the dir_ldap plugin: an LDAP / Active Directory connector offering the "directory"
 * capability (bulwark/directory.h: login with directory credentials) and syncing users and groups into the
 * record store, with admin routes under /api/v1/plugins/dir_ldap/ (test, sync, users, groups).
 *
 * Threads: every LDAP call runs on the host's work queue (ldapc.c); the loop thread owns the plugin state.
 * What workers read is immutable while they run: the copied settings (struct dl_cfg) and the current synced
 * directory (struct dl_dir, reference counted, replaced only by a finished sync). Jobs hold a reference to a
 * `shared` block that outlives the instance if fini comes first (then their `done` only cleans up).
 *
 * Nothing half-written: a sync fetches everything into memory first; only when the fetch and the comparison
 * succeeded does the loop write the differences to the record store, between a "committing" marker and the new
 * watermark. A server lost mid-sync fails the sync and leaves the store and the watermark as they were, so the
 * next sync picks up from there. An interrupted commit (a crash) makes the next sync full and rewrite all. */
#include "ldapc.h"

#include <bulwark/directory.h>
#include <bulwark/plugin.h>

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define AUTH_QUEUE_MAX 256  /* logins waiting for a connection; beyond this authenticate() says busy */
#define PASSWORD_MAX   1024 /* bytes of a password handed to the directory */
#define LIST_DEFAULT   100
#define LIST_MAX       1000
#define STORE_PAGE     1000
#define FILTER_MAX     2048
#define COMMIT_BATCH   500 /* record writes per loop turn while committing a sync */

struct shared {
	int refs;    /* the instance and every job; loop thread only */
	bool closed; /* fini ran: jobs' done callbacks touch nothing of the instance */
	const struct bw_host_api *host;
	struct dl_cfg cfg;
	struct dl_pool *pool;
	struct dl_progress prog;
	bool prog_init;
	struct dlp *p;
};

struct auth_job {
	struct shared *sh;
	char *login, *password;
	bw_dir_auth_done_fn done;
	void *done_arg;
	struct dl_auth_result res;
	struct auth_job *next;
};

struct sync_job {
	struct shared *sh;
	struct dl_dir *old;
	bool full;
	char watermark[32];
	char id[37];
	int64_t started_ms;
	struct dl_sync_result res;
	/* the commit, in batches on the loop (see commit_step) */
	bool committing, all;
	size_t cu, cg, cru, crg; /* next user, group, removed user, removed group to write */
	bw_timer *timer;
};

struct test_job {
	struct shared *sh;
	bw_http_req *req;
	json_t *out;
};

struct dlp {
	const struct bw_host_api *host;
	bw_plugin_ctx *ctx;
	/* settings (owned by the host) */
	char *url;
	struct bw_strings urls;
	bool starttls, insecure;
	char *ca_file, *bind_dn, *bind_password, *base_dn, *user_filter, *group_filter, *schema;
	char *domain, *upn_suffix;
	struct bw_strings admin_groups, readonly_groups, group_map;
	int64_t sync_interval_ms, full_sync_interval_ms, connect_timeout_ms, timeout_ms;
	int64_t pool_size, page_size, max_users, max_groups, max_members;
	/* state */
	struct shared *sh;
	bool started, stopping;
	struct dl_dir *dir;
	char watermark[32];
	int64_t last_full_ms;
	bool rewrite_all;      /* the store may hold a half-written commit: the next sync rewrites everything */
	struct sync_job *sync; /* the running sync, or NULL */
	json_t *last;          /* the last finished sync (see GET sync), or NULL */
	bool last_failed;
	struct auth_job *q_head, *q_tail;
	size_t q_len, auth_inflight, tests_inflight;
	bw_timer *timer;
	bw_metric *m_logins, *m_syncs, *m_users, *m_groups;
};

static const struct bw_config_field dl_fields[] = {
    {BW_FIELD_STRING, "url", NULL, offsetof(struct dlp, url),
     "Directory server URL: \"ldaps://dc1.example.com:636\" (3269 for the global catalog), \"ldap://host:389\" with "
     "starttls, \"ldaps://[::1]:636\"; url or urls is required.",
     0, 0, 0},
    {BW_FIELD_STRINGS, "urls", NULL, offsetof(struct dlp, urls),
     "Several directory server URLs, tried in order (instead of url).", 0, 0, 0},
    {BW_FIELD_BOOL, "starttls", "false", offsetof(struct dlp, starttls),
     "Use StartTLS on ldap:// URLs (plain LDAP without it is refused).", 0, 0, 0},
    {BW_FIELD_PATH, "ca_file", NULL, offsetof(struct dlp, ca_file),
     "PEM file of the CA that issued the directory server's certificate; required unless insecure_skip_verify.", 0, 0,
     0},
    {BW_FIELD_BOOL, "insecure_skip_verify", "false", offsetof(struct dlp, insecure),
     "Do not verify the server certificate (labs only; a warning is logged at every start).", 0, 0, 0},
    {BW_FIELD_STRING, "bind_dn", NULL, offsetof(struct dlp, bind_dn),
     "DN (or user@domain on Active Directory) of the service account that searches the directory.", 0, 0, 0},
    {BW_FIELD_SECRET, "bind_password", NULL, offsetof(struct dlp, bind_password), "Password of the service account.", 0,
     0, 0},
    {BW_FIELD_STRING, "base_dn", NULL, offsetof(struct dlp, base_dn),
     "Where users and groups are searched, e.g. \"DC=example,DC=com\".", BW_FIELD_REQUIRED, 0, 0},
    {BW_FIELD_STRING, "user_filter", NULL, offsetof(struct dlp, user_filter),
     "LDAP filter for user entries; default \"(&(objectClass=user)(!(objectClass=computer)))\" (schema ad) or "
     "\"(objectClass=inetOrgPerson)\" (rfc2307bis).",
     0, 0, 0},
    {BW_FIELD_STRING, "group_filter", NULL, offsetof(struct dlp, group_filter),
     "LDAP filter for group entries; default \"(objectClass=group)\" (ad) or \"(objectClass=groupOfNames)\" "
     "(rfc2307bis).",
     0, 0, 0},
    {BW_FIELD_STRING, "schema", "\"ad\"", offsetof(struct dlp, schema),
     "Attribute mapping: \"ad\" (objectGUID, sAMAccountName, userPrincipalName, userAccountControl, uSNChanged) or "
     "\"rfc2307bis\" (entryUUID, uid, mail as UPN, modifyTimestamp, pwdAccountLockedTime).",
     0, 0, 0},
    {BW_FIELD_STRING, "domain", NULL, offsetof(struct dlp, domain),
     "NetBIOS domain name accepted in DOMAIN\\user logins (others are refused); any when unset.", 0, 0, 0},
    {BW_FIELD_STRING, "upn_suffix", NULL, offsetof(struct dlp, upn_suffix),
     "UPN suffix: user@suffix also matches the account whose login name is user.", 0, 0, 0},
    {BW_FIELD_STRINGS, "admin_groups", NULL, offsetof(struct dlp, admin_groups),
     "Groups (DN or CN) whose members, also through nested groups, log in as administrator.", 0, 0, 0},
    {BW_FIELD_STRINGS, "readonly_groups", NULL, offsetof(struct dlp, readonly_groups),
     "Groups (DN or CN) whose members log in as readonly.", 0, 0, 0},
    {BW_FIELD_STRINGS, "group_map", NULL, offsetof(struct dlp, group_map),
     "Directory group to device group mappings, \"DirectoryGroup=DeviceGroup\"; the first match wins.", 0, 0, 0},
    {BW_FIELD_DURATION, "sync_interval", "\"1h\"", offsetof(struct dlp, sync_interval_ms),
     "How often users and groups are synced (incrementally); 0 = only on demand (POST sync).", 0, 0, 7 * 86400000LL},
    {BW_FIELD_DURATION, "full_sync_interval", "\"24h\"", offsetof(struct dlp, full_sync_interval_ms),
     "A scheduled sync is a full one when the last full sync is older than this.", 0, 60000, 30 * 86400000LL},
    {BW_FIELD_INT, "pool_size", "4", offsetof(struct dlp, pool_size),
     "Directory connections kept open for logins (also the logins checked at once).", 0, 1, 16},
    {BW_FIELD_DURATION, "connect_timeout", "\"5s\"", offsetof(struct dlp, connect_timeout_ms),
     "Deadline for connecting (TCP and TLS handshake).", 0, 100, 300000},
    {BW_FIELD_DURATION, "timeout", "\"15s\"", offsetof(struct dlp, timeout_ms),
     "Deadline for one bind, search or search page.", 0, 100, 600000},
    {BW_FIELD_INT, "page_size", "500", offsetof(struct dlp, page_size),
     "Entries per page of the paged results control (Active Directory allows at most 1000).", 0, 10, 5000},
    {BW_FIELD_INT, "max_users", "100000", offsetof(struct dlp, max_users),
     "A sync fails when more users than this match user_filter.", 0, 1, 2000000},
    {BW_FIELD_INT, "max_groups", "20000", offsetof(struct dlp, max_groups),
     "A sync fails when more groups than this match group_filter (also caps one user's groups at login).", 0, 1,
     500000},
    {BW_FIELD_INT, "max_members", "20000", offsetof(struct dlp, max_members),
     "Members read per group (range retrieval stops there; the group is marked truncated).", 0, 1, 1000000},
    BW_FIELD_END};

/* ---- shared block */

static void cfg_free(struct dl_cfg *cfg)
{
	for (size_t i = 0; i < cfg->nurls; i++)
		free(cfg->urls[i]);
	free(cfg->urls);
	for (size_t i = 0; i < cfg->nadmin_groups; i++)
		free(cfg->admin_groups[i]);
	free(cfg->admin_groups);
	for (size_t i = 0; i < cfg->nreadonly_groups; i++)
		free(cfg->readonly_groups[i]);
	free(cfg->readonly_groups);
	for (size_t i = 0; i < cfg->ngroup_map; i++)
		bw_dl_group_map_free(&cfg->group_map[i]);
	free(cfg->group_map);
	if (cfg->bind_password) {
		explicit_bzero(cfg->bind_password, strlen(cfg->bind_password));
		free(cfg->bind_password);
	}
	free(cfg->ca_file);
	free(cfg->bind_dn);
	free(cfg->base_dn);
	free(cfg->user_filter);
	free(cfg->group_filter);
	free(cfg->domain);
	free(cfg->upn_suffix);
	memset(cfg, 0, sizeof *cfg);
}

static void shared_unref(struct shared *sh)
{
	if (!sh || --sh->refs > 0)
		return;
	dl_pool_free(sh->pool);
	cfg_free(&sh->cfg);
	if (sh->prog_init)
		pthread_mutex_destroy(&sh->prog.mu);
	free(sh);
}

static void secret_free(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

/* ---- settings */

static bool filter_ok(const char *f)
{
	int depth = 0;
	size_t len = strlen(f);
	if (len == 0 || len > FILTER_MAX)
		return false;
	for (const char *p = f; *p; p++) {
		if (*p == '(')
			depth++;
		else if (*p == ')' && --depth < 0)
			return false;
	}
	return depth == 0;
}

/* A filter setting, wrapped in parentheses when written without. */
static int filter_setting(const char *key, const char *value, const char *def, char **out, bw_error *err)
{
	const char *v = value && *value ? value : def;
	if (!filter_ok(v))
		return bw_error_set(err, BW_E_CONFIG,
		                    "%s: \"%.200s\" is not a valid LDAP filter (unbalanced parentheses, "
		                    "empty or longer than %d bytes)",
		                    key, v, FILTER_MAX);
	size_t n = strlen(v) + 3;
	if (!(*out = malloc(n)))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	snprintf(*out, n, v[0] == '(' ? "%s" : "(%s)", v);
	return BW_OK;
}

static int copy_list(const struct bw_strings *in, const char *key, char ***out, size_t *n, bw_error *err)
{
	*n = 0;
	if (!in->count)
		return BW_OK;
	if (!(*out = calloc(in->count, sizeof **out)))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	for (size_t i = 0; i < in->count; i++) {
		if (!in->items[i] || !*in->items[i])
			return bw_error_set(err, BW_E_CONFIG, "%s: entry %zu is empty", key, i + 1);
		if (!((*out)[i] = strdup(in->items[i])))
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		(*n)++;
	}
	return BW_OK;
}

static int check_url(const char *u, bool starttls, bw_error *err)
{
	if (strncasecmp(u, "ldaps://", 8) == 0) {
		if (starttls)
			return bw_error_set(
			    err, BW_E_CONFIG,
			    "url %s: starttls is for ldap:// URLs; ldaps:// is TLS already (set starttls = "
			    "false or use ldap://host:389)",
			    u);
		return BW_OK;
	}
	if (strncasecmp(u, "ldap://", 7) == 0) {
		if (!starttls)
			return bw_error_set(
			    err, BW_E_CONFIG,
			    "url %s: plain LDAP would send passwords in clear text; use ldaps:// or set "
			    "starttls = true",
			    u);
		return BW_OK;
	}
	return bw_error_set(err, BW_E_CONFIG, "url %s: must start with ldaps:// or ldap:// (with starttls)", u);
}

/* Validates the settings and copies them into sh->cfg. */
static int settings_load(struct dlp *p, struct dl_cfg *cfg, bw_error *err)
{
	int rc;
	if (p->url && *p->url && p->urls.count)
		return bw_error_set(err, BW_E_CONFIG, "url and urls: set one of them, not both");
	size_t n = p->url && *p->url ? 1 : p->urls.count;
	if (n == 0)
		return bw_error_set(err, BW_E_CONFIG,
		                    "url: missing (the directory server, e.g. \"ldaps://dc1.example.com\")");
	if (!(cfg->urls = calloc(n, sizeof *cfg->urls)))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const char *u = p->url && *p->url ? p->url : p->urls.items[i];
		if (!u || (rc = check_url(u, p->starttls, err)) != BW_OK)
			return u ? rc : bw_error_set(err, BW_E_CONFIG, "urls: entry %zu is empty", i + 1);
		if (!(cfg->urls[i] = strdup(u)))
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		cfg->nurls++;
	}
	cfg->starttls = p->starttls;
	cfg->insecure = p->insecure;
	if (p->ca_file && *p->ca_file) {
		if (access(p->ca_file, R_OK) != 0)
			return bw_error_set(err, BW_E_CONFIG, "ca_file %s: cannot be read", p->ca_file);
		if (!(cfg->ca_file = strdup(p->ca_file)))
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
	} else if (!p->insecure) {
		return bw_error_set(
		    err, BW_E_CONFIG,
		    "ca_file: missing; the directory server's certificate must be verified against a CA "
		    "(insecure_skip_verify = true exists for labs only)");
	}
	bool has_dn = p->bind_dn && *p->bind_dn, has_pw = p->bind_password && *p->bind_password;
	if (has_dn != has_pw)
		return bw_error_set(err, BW_E_CONFIG,
		                    has_dn ? "bind_password: missing (bind_dn is set)"
		                           : "bind_dn: missing (bind_password is set)");
	if (!p->base_dn || !*p->base_dn)
		return bw_error_set(err, BW_E_CONFIG, "base_dn: missing");
	const char *schema = p->schema ? p->schema : "ad";
	if (strcasecmp(schema, "ad") == 0)
		cfg->schema = DL_SCHEMA_AD;
	else if (strcasecmp(schema, "rfc2307bis") == 0 || strcasecmp(schema, "openldap") == 0)
		cfg->schema = DL_SCHEMA_RFC2307BIS;
	else
		return bw_error_set(err, BW_E_CONFIG, "schema: \"%.100s\" is not \"ad\" or \"rfc2307bis\"", schema);
	bool ad = cfg->schema == DL_SCHEMA_AD;
	if ((rc = filter_setting("user_filter", p->user_filter,
	                         ad ? "(&(objectClass=user)(!(objectClass=computer)))" : "(objectClass=inetOrgPerson)",
	                         &cfg->user_filter, err)) != BW_OK ||
	    (rc = filter_setting("group_filter", p->group_filter,
	                         ad ? "(objectClass=group)" : "(objectClass=groupOfNames)", &cfg->group_filter, err)) !=
	        BW_OK)
		return rc;
	if (p->domain && (strchr(p->domain, '\\') || strchr(p->domain, '@')))
		return bw_error_set(err, BW_E_CONFIG, "domain: the NetBIOS domain name, without '\\' or '@'");
	if (p->upn_suffix && strchr(p->upn_suffix, '@'))
		return bw_error_set(err, BW_E_CONFIG, "upn_suffix: the part after '@', e.g. \"example.com\"");
	if ((has_dn && (!(cfg->bind_dn = strdup(p->bind_dn)) || !(cfg->bind_password = strdup(p->bind_password)))) ||
	    !(cfg->base_dn = strdup(p->base_dn)) || (p->domain && *p->domain && !(cfg->domain = strdup(p->domain))) ||
	    (p->upn_suffix && *p->upn_suffix && !(cfg->upn_suffix = strdup(p->upn_suffix))))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	if ((rc = copy_list(&p->admin_groups, "admin_groups", &cfg->admin_groups, &cfg->nadmin_groups, err)) != BW_OK ||
	    (rc = copy_list(&p->readonly_groups, "readonly_groups", &cfg->readonly_groups, &cfg->nreadonly_groups,
	                    err)) != BW_OK)
		return rc;
	if (p->group_map.count) {
		if (!(cfg->group_map = calloc(p->group_map.count, sizeof *cfg->group_map)))
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		for (size_t i = 0; i < p->group_map.count; i++) {
			if ((rc = bw_dl_group_map_parse(p->group_map.items[i], &cfg->group_map[i], err)) != BW_OK)
				return rc;
			cfg->ngroup_map++;
		}
	}
	cfg->connect_timeout_ms = p->connect_timeout_ms;
	cfg->timeout_ms = p->timeout_ms;
	cfg->page_size = (size_t)p->page_size;
	cfg->pool_size = (size_t)p->pool_size;
	cfg->max_users = (size_t)p->max_users;
	cfg->max_groups = (size_t)p->max_groups;
	cfg->max_members = (size_t)p->max_members;
	return BW_OK;
}

/* ---- small helpers */

static void rfc3339(int64_t ms, char out[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *time_json(int64_t ms)
{
	char buf[32];
	rfc3339(ms, buf);
	return json_string(buf);
}

/* ---- logins (the directory capability) */

static void auth_work(void *arg)
{
	struct auth_job *j = arg;
	dl_authenticate(j->sh->pool, j->login, j->password, &j->res);
	/* The password is not needed any more: wipe it on the worker already. */
	explicit_bzero(j->password, strlen(j->password));
}

static void auth_job_free(struct auth_job *j)
{
	free(j->login);
	secret_free(j->password);
	json_decref(j->res.user);
	shared_unref(j->sh);
	free(j);
}

static void auth_done(void *arg);

static void auth_pump(struct dlp *p)
{
	while (p->q_head && p->auth_inflight < p->sh->cfg.pool_size && !p->stopping) {
		struct auth_job *j = p->q_head;
		p->q_head = j->next;
		if (!p->q_head)
			p->q_tail = NULL;
		p->q_len--;
		j->next = NULL;
		bw_error err = {0};
		if (p->host->work_submit(p->ctx, auth_work, auth_done, j, &err) != BW_OK) {
			p->host->log(p->ctx, BW_LOG_WARN, "login of %s not checked: %s", j->login, err.message);
			j->done(BW_E_BUSY, "the directory connector is overloaded; try again", NULL, j->done_arg);
			auth_job_free(j);
			continue;
		}
		p->auth_inflight++;
	}
}

static void auth_done(void *arg)
{
	struct auth_job *j = arg;
	struct shared *sh = j->sh;
	struct dlp *p = sh->closed ? NULL : sh->p;
	const char *msg = j->res.rc == BW_OK ? "ok" : j->res.message;
	if (p) {
		p->auth_inflight--;
		p->host->metric_add(p->m_logins, bw_status_name(j->res.rc), 1);
		if (j->res.rc == BW_OK)
			p->host->log(p->ctx, BW_LOG_INFO, "directory login of %s: ok (role %s)", j->login,
			             json_string_value(json_object_get(j->res.user, "admin_role"))
			                 ? json_string_value(json_object_get(j->res.user, "admin_role"))
			                 : "none");
		else
			p->host->log(p->ctx, BW_LOG_INFO, "directory login of %s refused: %s", j->login, msg);
	}
	j->done(j->res.rc, msg, j->res.rc == BW_OK ? j->res.user : NULL, j->done_arg);
	if (p)
		auth_pump(p);
	auth_job_free(j);
}

static int cap_authenticate(void *arg, const char *login, const char *password, bw_dir_auth_done_fn done,
                            void *done_arg, bw_error *err)
{
	struct dlp *p = arg;
	if (!p->started || p->stopping)
		return bw_error_set(err, BW_E_STATE, "dir_ldap is not running");
	if (!done)
		return bw_error_set(err, BW_E_INVALID, "authenticate: no completion callback");
	struct bw_dl_login l;
	if (bw_dl_login_parse(login, &l, err) != BW_OK)
		return BW_E_INVALID;
	if (!password || !*password)
		/* An empty password would be an "unauthenticated bind", which LDAP servers accept. */
		return bw_error_set(err, BW_E_INVALID, "password: empty");
	if (strlen(password) > PASSWORD_MAX)
		return bw_error_set(err, BW_E_INVALID, "password: longer than %d bytes", PASSWORD_MAX);
	if (p->q_len >= AUTH_QUEUE_MAX)
		return bw_error_set(err, BW_E_BUSY, "too many directory logins waiting; try again");
	struct auth_job *j = calloc(1, sizeof *j);
	if (!j || !(j->login = strdup(login)) || !(j->password = strdup(password))) {
		if (j) {
			free(j->login);
			free(j);
		}
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	j->sh = p->sh;
	p->sh->refs++;
	j->done = done;
	j->done_arg = done_arg;
	if (p->q_tail)
		p->q_tail->next = j;
	else
		p->q_head = j;
	p->q_tail = j;
	p->q_len++;
	auth_pump(p);
	return BW_OK;
}

static const struct bw_directory_ops dl_dir_ops = {
    .size = sizeof(struct bw_directory_ops),
    .authenticate = cap_authenticate,
};

/* ---- sync */

static json_t *changes_json(const struct dl_sync_result *res)
{
	json_t *a = json_array();
	for (size_t i = 0; a && i < res->nchanges; i++) {
		const struct dl_change *c = &res->changes[i];
		json_t *name = c->name ? json_string(c->name) : NULL;
		json_array_append_new(a, json_pack("{s:s, s:s, s:o, s:s}", "kind", c->kind, "guid", c->guid, "name",
		                                   name ? name : json_null(), "change", c->change));
	}
	return a;
}

static int state_put(struct dlp *p, bool committing, bw_error *err)
{
	json_t *st = json_pack("{s:s, s:I, s:b, s:O?}", "watermark", p->watermark, "last_full_ms",
	                       (json_int_t)p->last_full_ms, "committing", committing, "last", p->last);
	if (!st)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	int rc = p->host->record_put(p->ctx, "state", "sync", st, err);
	json_decref(st);
	return rc;
}

/* Deletes the stored keys of `collection` that the directory no longer has (after a half-written commit). */
static int store_prune(struct dlp *p, const char *collection, bool users, bw_error *err)
{
	char after[64] = "";
	for (;;) {
		json_t *list = NULL;
		int rc = p->host->record_list(p->ctx, collection, after[0] ? after : NULL, STORE_PAGE, &list, err);
		if (rc != BW_OK)
			return rc;
		size_t i, n = json_array_size(list);
		json_t *it;
		json_array_foreach(list, i, it)
		{
			const char *key = json_string_value(json_object_get(it, "key"));
			if (!key)
				continue;
			snprintf(after, sizeof after, "%s", key);
			bool keep = users ? dl_dir_user(p->dir, key) != NULL : dl_dir_group(p->dir, key) != NULL;
			if (!keep && (rc = p->host->record_delete(p->ctx, collection, key, err)) != BW_OK &&
			    rc != BW_E_NOTFOUND) {
				json_decref(list);
				return rc;
			}
		}
		json_decref(list);
		if (n < STORE_PAGE)
			return BW_OK;
	}
}

static void publish_counts(struct dlp *p)
{
	p->host->metric_set(p->m_users, NULL, (double)(p->dir ? p->dir->nusers : 0));
	p->host->metric_set(p->m_groups, NULL, (double)(p->dir ? p->dir->ngroups : 0));
}

static void sync_work(void *arg)
{
	struct sync_job *j = arg;
	dl_sync_fetch(&j->sh->cfg, j->old, j->full, j->watermark, &j->sh->prog, &j->res);
}

static void sync_job_free(struct sync_job *j)
{
	dl_sync_result_clear(&j->res);
	dl_dir_unref(j->old);
	shared_unref(j->sh);
	free(j);
}

/* Ends a sync (p->sync): the "last" report, the state record, health, metrics, logs. */
static void sync_finish(struct dlp *p, struct sync_job *j, int rc, const char *error)
{
	struct shared *sh = j->sh;
	struct dl_sync_result *r = &j->res;
	int64_t now = p->host->clock_now_ms();
	p->sync = NULL;
	json_t *last = json_pack(
	    "{s:s, s:o, s:o, s:s, s:I, s:I, s:I, s:I, s:o}", "id", j->id, "started_at", time_json(j->started_ms),
	    "finished_at", time_json(now), "mode", r->full ? "full" : "incremental", "added",
	    (json_int_t)(rc == BW_OK ? r->added : 0), "updated", (json_int_t)(rc == BW_OK ? r->updated : 0), "removed",
	    (json_int_t)(rc == BW_OK ? r->removed : 0), "disabled", (json_int_t)(rc == BW_OK ? r->disabled : 0),
	    "changes", rc == BW_OK ? changes_json(r) : json_array());
	if (last) {
		json_object_set_new(last, "users", json_integer((json_int_t)p->dir->nusers));
		json_object_set_new(last, "groups", json_integer((json_int_t)p->dir->ngroups));
		if (rc != BW_OK)
			json_object_set_new(last, "error", json_string(error));
	}
	json_decref(p->last);
	p->last = last;
	p->last_failed = rc != BW_OK;
	bw_error serr = {0};
	/* The watermark is written last: a failure before this leaves the previous one, so nothing is skipped. */
	if (state_put(p, p->rewrite_all, &serr) != BW_OK)
		p->host->log(p->ctx, BW_LOG_WARN, "cannot store the sync state: %s", serr.message);
	pthread_mutex_lock(&sh->prog.mu);
	snprintf(sh->prog.phase, sizeof sh->prog.phase, "%s", rc == BW_OK ? "done" : "failed");
	pthread_mutex_unlock(&sh->prog.mu);
	p->host->metric_add(p->m_syncs, rc == BW_OK ? "ok" : "failed", 1);
	publish_counts(p);
	char detail[200];
	if (rc == BW_OK) {
		p->host->log(p->ctx, BW_LOG_INFO,
		             "%s sync %s: %zu users, %zu groups; %zu added, %zu updated, %zu removed, %zu disabled",
		             r->full ? "full" : "incremental", j->id, p->dir->nusers, p->dir->ngroups, r->added,
		             r->updated, r->removed, r->disabled);
		snprintf(detail, sizeof detail, "%zu users, %zu groups synced", p->dir->nusers, p->dir->ngroups);
		p->host->health_set(p->ctx, false, detail);
	} else {
		p->host->log(p->ctx, BW_LOG_WARN, "sync %s failed (%s; the next sync resumes): %s", j->id,
		             p->rewrite_all ? "the store may be half-written: the next sync rewrites all"
		                            : "nothing was changed",
		             error);
		snprintf(detail, sizeof detail, "last sync failed: %.150s", error);
		p->host->health_set(p->ctx, true, detail);
	}
	sync_job_free(j);
}

static int put_record(struct dlp *p, const char *collection, const char *key, json_t *v, bw_error *err)
{
	int rc =
	    v ? p->host->record_put(p->ctx, collection, key, v, err) : bw_error_set(err, BW_E_NOMEM, "out of memory");
	json_decref(v);
	return rc;
}

static int delete_record(struct dlp *p, const char *collection, const char *key, bw_error *err)
{
	int rc = p->host->record_delete(p->ctx, collection, key, err);
	return rc == BW_E_NOTFOUND ? BW_OK : rc;
}

/* Writes the next batch of what the sync changed (everything after a half-written commit), then schedules
 * itself again; the last batch makes the new directory current. Loop thread, so the loop is never blocked
 * for long by a large first import. The "committing" marker written before the first batch stays until the
 * state record is written by sync_finish. */
static void commit_step(void *arg)
{
	struct sync_job *j = arg;
	struct dlp *p = j->sh->p;
	struct dl_sync_result *r = &j->res;
	struct dl_dir *d = r->dir;
	bw_error err = {0};
	int rc = BW_OK;
	size_t budget = COMMIT_BATCH;
	j->timer = NULL; /* one-shot: the host frees it after this call */
	for (; rc == BW_OK && budget && j->cu < d->nusers; j->cu++)
		if (j->all || r->user_changed[j->cu]) {
			rc = put_record(p, "users", d->users[j->cu].guid, dl_user_to_record(&d->users[j->cu]), &err);
			budget--;
		}
	for (; rc == BW_OK && budget && j->cg < d->ngroups; j->cg++)
		if (j->all || r->group_changed[j->cg]) {
			rc =
			    put_record(p, "groups", d->groups[j->cg].guid, dl_group_to_record(&d->groups[j->cg]), &err);
			budget--;
		}
	for (; rc == BW_OK && budget && j->cru < r->nremoved_users; j->cru++, budget--)
		rc = delete_record(p, "users", r->removed_users[j->cru], &err);
	for (; rc == BW_OK && budget && j->crg < r->nremoved_groups; j->crg++, budget--)
		rc = delete_record(p, "groups", r->removed_groups[j->crg], &err);
	if (rc != BW_OK) {
		p->rewrite_all = true;
		sync_finish(p, j, rc, err.message);
		return;
	}
	if (!budget) {
		pthread_mutex_lock(&j->sh->prog.mu);
		snprintf(j->sh->prog.phase, sizeof j->sh->prog.phase, "committing");
		pthread_mutex_unlock(&j->sh->prog.mu);
		if (!(j->timer = p->host->timer_add(p->ctx, 0, 0, commit_step, j))) {
			p->rewrite_all = true;
			sync_finish(p, j, BW_E_INTERNAL, "cannot schedule the next commit batch");
		}
		return;
	}
	/* All written: the new directory is current from here on (pruning compares the store with it). */
	dl_dir_unref(p->dir);
	p->dir = d;
	r->dir = NULL;
	if (j->all && ((rc = store_prune(p, "users", true, &err)) != BW_OK ||
	               (rc = store_prune(p, "groups", false, &err)) != BW_OK)) {
		sync_finish(p, j, rc, err.message);
		return;
	}
	p->rewrite_all = false;
	snprintf(p->watermark, sizeof p->watermark, "%s", r->watermark);
	if (r->full)
		p->last_full_ms = p->host->clock_now_ms();
	sync_finish(p, j, BW_OK, NULL);
}

static void sync_done(void *arg)
{
	struct sync_job *j = arg;
	struct dlp *p = j->sh->closed ? NULL : j->sh->p;
	if (!p) {
		sync_job_free(j);
		return;
	}
	if (j->res.rc != BW_OK) {
		sync_finish(p, j, j->res.rc, j->res.error);
		return;
	}
	bw_error err = {0};
	if (state_put(p, true, &err) != BW_OK) {
		sync_finish(p, j, err.code, err.message);
		return;
	}
	j->committing = true;
	j->all = p->rewrite_all;
	commit_step(j);
}

/* Starts a sync; BW_E_BUSY when one runs. */
static int sync_start(struct dlp *p, bool full, char id_out[37], bw_error *err)
{
	if (p->stopping || !p->started)
		return bw_error_set(err, BW_E_STATE, "dir_ldap is not running");
	if (p->sync)
		return bw_error_set(err, BW_E_BUSY, "a sync is running (%s)", p->sync->id);
	struct sync_job *j = calloc(1, sizeof *j);
	if (!j)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	int rc = p->host->uuid_new(j->id, err);
	if (rc != BW_OK) {
		free(j);
		return rc;
	}
	j->sh = p->sh;
	p->sh->refs++;
	j->old = p->dir;
	p->dir->refs++;
	/* After a half-written commit the store may not match memory: a full sync that rewrites every record. */
	j->full = full || p->rewrite_all || !p->watermark[0];
	snprintf(j->watermark, sizeof j->watermark, "%s", p->watermark);
	j->started_ms = p->host->clock_now_ms();
	pthread_mutex_lock(&p->sh->prog.mu);
	snprintf(p->sh->prog.phase, sizeof p->sh->prog.phase, "queued");
	p->sh->prog.users = p->sh->prog.groups = 0;
	pthread_mutex_unlock(&p->sh->prog.mu);
	if ((rc = p->host->work_submit(p->ctx, sync_work, sync_done, j, err)) != BW_OK) {
		sync_job_free(j);
		return rc;
	}
	p->sync = j;
	snprintf(id_out, 37, "%s", j->id);
	p->host->log(p->ctx, BW_LOG_INFO, "%s sync %s started", j->full ? "full" : "incremental", j->id);
	return BW_OK;
}

static void on_timer(void *arg)
{
	struct dlp *p = arg;
	char id[37];
	bw_error err = {0};
	if (p->sync || p->stopping)
		return;
	bool full = p->host->clock_now_ms() - p->last_full_ms >= p->full_sync_interval_ms;
	if (sync_start(p, full, id, &err) != BW_OK)
		p->host->log(p->ctx, BW_LOG_WARN, "scheduled sync not started: %s", err.message);
}

/* Reads the last sync's directory and state from the record store (start). */
static int store_load(struct dlp *p, bw_error *err)
{
	json_t *st = NULL;
	if (p->host->record_get(p->ctx, "state", "sync", &st, NULL) == BW_OK) {
		const char *wm = json_string_value(json_object_get(st, "watermark"));
		snprintf(p->watermark, sizeof p->watermark, "%s", wm ? wm : "");
		p->last_full_ms = json_integer_value(json_object_get(st, "last_full_ms"));
		if (json_is_true(json_object_get(st, "committing"))) {
			p->rewrite_all = true;
			p->host->log(
			    p->ctx, BW_LOG_WARN,
			    "the last sync's commit did not finish: the next sync is a full one and rewrites all");
		}
		json_t *last = json_object_get(st, "last");
		if (json_is_object(last)) {
			p->last = json_incref(last);
			p->last_failed = json_object_get(last, "error") != NULL;
		}
		json_decref(st);
	}
	static const char *const cols[] = {"users", "groups"};
	for (int c = 0; c < 2; c++) {
		char after[64] = "";
		for (;;) {
			json_t *list = NULL;
			int rc = p->host->record_list(p->ctx, cols[c], after[0] ? after : NULL, STORE_PAGE, &list, err);
			if (rc != BW_OK)
				return rc;
			size_t i, n = json_array_size(list);
			json_t *it;
			json_array_foreach(list, i, it)
			{
				const char *key = json_string_value(json_object_get(it, "key"));
				json_t *v = json_object_get(it, "value");
				if (!key)
					continue;
				snprintf(after, sizeof after, "%s", key);
				bool ok;
				if (c == 0) {
					struct dl_user u;
					ok = dl_user_from_record(key, v, &u);
					if (ok && !dl_dir_add_user(p->dir, &u)) {
						dl_user_clear(&u);
						json_decref(list);
						return bw_error_set(err, BW_E_NOMEM, "out of memory");
					}
				} else {
					struct dl_group g;
					ok = dl_group_from_record(key, v, &g);
					if (ok && !dl_dir_add_group(p->dir, &g)) {
						dl_group_clear(&g);
						json_decref(list);
						return bw_error_set(err, BW_E_NOMEM, "out of memory");
					}
				}
				if (!ok) {
					p->host->log(p->ctx, BW_LOG_WARN,
					             "stored %s record %s is malformed: next sync rewrites all",
					             cols[c], key);
					p->rewrite_all = true;
				}
			}
			json_decref(list);
			if (n < STORE_PAGE)
				break;
		}
	}
	if (!dl_dir_finish(p->dir))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	return BW_OK;
}

/* ---- routes */

static void test_work(void *arg)
{
	struct test_job *t = arg;
	t->out = dl_test(&t->sh->cfg);
}

static void test_done(void *arg)
{
	struct test_job *t = arg;
	struct shared *sh = t->sh;
	struct dlp *p = sh->closed ? NULL : sh->p;
	if (p)
		p->tests_inflight--;
	/* Logged before answering: respond_json takes the reference. */
	if (p && t->out && json_is_true(json_object_get(t->out, "ok")))
		p->host->log(p->ctx, BW_LOG_INFO, "connection test: ok");
	else if (p)
		p->host->log(p->ctx, BW_LOG_WARN, "connection test failed: %s",
		             t->out && json_string_value(json_object_get(t->out, "error"))
		                 ? json_string_value(json_object_get(t->out, "error"))
		                 : "out of memory");
	if (t->out)
		sh->host->respond_json(t->req, 200, t->out);
	else
		sh->host->respond_error(t->req, 500, "internal", "out of memory");
	shared_unref(sh);
	free(t);
}

static void post_test(bw_http_req *req, void *arg)
{
	struct dlp *p = arg;
	if (p->stopping) {
		p->host->respond_error(req, 503, "unavailable", "dir_ldap is stopping");
		return;
	}
	struct test_job *t = calloc(1, sizeof *t);
	if (!t) {
		p->host->respond_error(req, 500, "internal", "out of memory");
		return;
	}
	t->sh = p->sh;
	t->req = req;
	p->sh->refs++;
	bw_error err = {0};
	if (p->host->work_submit(p->ctx, test_work, test_done, t, &err) != BW_OK) {
		shared_unref(p->sh);
		free(t);
		p->host->respond_error(req, 503, "busy", err.message);
		return;
	}
	p->tests_inflight++;
	/* t belongs to the work queue now (test_done frees it) */
	// cppcheck-suppress memleak
}

static void post_sync(bw_http_req *req, void *arg)
{
	struct dlp *p = arg;
	size_t len = 0;
	bool full = false;
	p->host->req_body(req, &len);
	if (len > 0) {
		json_t *body = NULL;
		bw_error err = {0};
		if (p->host->req_json(req, &body, &err) != BW_OK) {
			p->host->respond_error(req, 400, "invalid_json", err.message);
			return;
		}
		json_t *f = json_object_get(body, "full");
		if (f && !json_is_boolean(f)) {
			json_decref(body);
			p->host->respond_error(req, 400, "bad_request", "'full' must be true or false");
			return;
		}
		full = json_is_true(f);
		json_decref(body);
	}
	char id[37];
	bw_error err = {0};
	int rc = sync_start(p, full, id, &err);
	if (rc == BW_E_BUSY) {
		p->host->respond_error(req, 409, "conflict", err.message);
		return;
	}
	if (rc != BW_OK) {
		p->host->respond_error(req, 503, "unavailable", err.message);
		return;
	}
	p->host->log(p->ctx, BW_LOG_INFO, "sync %s requested by %s", id, p->host->req_principal(req));
	p->host->respond_json(req, 202,
	                      json_pack("{s:s, s:s, s:s}", "sync_id", id, "state", "running", "mode",
	                                p->sync && p->sync->full ? "full" : "incremental"));
}

static void get_sync(bw_http_req *req, void *arg)
{
	struct dlp *p = arg;
	struct dl_progress *pr = &p->sh->prog;
	pthread_mutex_lock(&pr->mu);
	json_t *prog = json_pack("{s:I, s:I, s:s}", "users", (json_int_t)pr->users, "groups", (json_int_t)pr->groups,
	                         "phase", pr->phase[0] ? pr->phase : "idle");
	pthread_mutex_unlock(&pr->mu);
	const char *state = p->sync ? "running" : p->last_failed ? "failed" : "idle";
	json_t *out = json_pack("{s:s, s:o, s:O?, s:I, s:I}", "state", state, "progress", prog, "last", p->last,
	                        "users", (json_int_t)p->dir->nusers, "groups", (json_int_t)p->dir->ngroups);
	if (out && p->sync)
		json_object_set_new(out, "sync_id", json_string(p->sync->id));
	p->host->respond_json(req, 200, out);
}

static bool parse_limit(struct dlp *p, bw_http_req *req, size_t *limit)
{
	const char *l = p->host->req_query(req, "limit");
	*limit = LIST_DEFAULT;
	if (!l)
		return true;
	char *e;
	long v = strtol(l, &e, 10);
	if (*e || e == l || v < 1 || v > LIST_MAX)
		return false;
	*limit = (size_t)v;
	return true;
}

static bool contains_ci(const char *hay, const char *needle)
{
	return hay && strcasestr(hay, needle) != NULL;
}

static void get_users(bw_http_req *req, void *arg)
{
	struct dlp *p = arg;
	size_t limit;
	const char *after = p->host->req_query(req, "after"), *q = p->host->req_query(req, "q");
	if (!parse_limit(p, req, &limit)) {
		p->host->respond_error(req, 400, "bad_request", "'limit' must be 1 to 1000");
		return;
	}
	if (q && strlen(q) > 256) {
		p->host->respond_error(req, 400, "bad_request", "'q' is longer than 256 bytes");
		return;
	}
	const struct dl_dir *d = p->dir;
	json_t *users = json_array();
	const char *last = NULL;
	size_t i = dl_dir_users_after(d, after);
	for (; i < d->nusers && json_array_size(users) < limit; i++) {
		const struct dl_user *u = &d->users[i];
		if (q && *q && !contains_ci(u->login, q) && !contains_ci(u->upn, q) &&
		    !contains_ci(u->display_name, q) && !contains_ci(u->mail, q))
			continue;
		json_array_append_new(users, dl_user_to_api(d, u));
		last = u->guid;
	}
	json_t *next = i < d->nusers && last ? json_string(last) : json_null();
	p->host->respond_json(
	    req, 200, json_pack("{s:o, s:o, s:I}", "users", users, "next_after", next, "total", (json_int_t)d->nusers));
}

static void get_groups(bw_http_req *req, void *arg)
{
	struct dlp *p = arg;
	size_t limit;
	const char *after = p->host->req_query(req, "after"), *q = p->host->req_query(req, "q");
	if (!parse_limit(p, req, &limit)) {
		p->host->respond_error(req, 400, "bad_request", "'limit' must be 1 to 1000");
		return;
	}
	const struct dl_dir *d = p->dir;
	json_t *groups = json_array();
	const char *last = NULL;
	size_t i = dl_dir_groups_after(d, after);
	for (; i < d->ngroups && json_array_size(groups) < limit; i++) {
		const struct dl_group *g = &d->groups[i];
		if (q && *q && !contains_ci(g->name, q) && !contains_ci(g->dn, q))
			continue;
		json_array_append_new(groups, dl_group_to_api(d, g));
		last = g->guid;
	}
	json_t *next = i < d->ngroups && last ? json_string(last) : json_null();
	p->host->respond_json(
	    req, 200,
	    json_pack("{s:o, s:o, s:I}", "groups", groups, "next_after", next, "total", (json_int_t)d->ngroups));
}

/* ---- lifecycle */

static void dl_free(struct dlp *p)
{
	/* A sync in its commit phase is the loop's (a sync still on the work queue frees itself in its done). */
	if (p->sync && p->sync->committing) {
		if (p->sync->timer)
			p->host->timer_cancel(p->sync->timer);
		sync_job_free(p->sync);
	}
	p->sync = NULL;
	while (p->q_head) {
		struct auth_job *j = p->q_head;
		p->q_head = j->next;
		auth_job_free(j);
	}
	p->q_tail = NULL;
	p->q_len = 0;
	dl_dir_unref(p->dir);
	p->dir = NULL;
	json_decref(p->last);
	p->last = NULL;
	if (p->sh) {
		p->sh->closed = true;
		shared_unref(p->sh);
		p->sh = NULL;
	}
}

static int dl_init(bw_plugin_ctx *ctx, const struct bw_host_api *host, void *instance, bw_error *err)
{
	struct dlp *p = instance;
	p->host = host;
	p->ctx = ctx;
	int rc = BW_OK;
	struct shared *sh = calloc(1, sizeof *sh);
	if (!sh)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	sh->refs = 1;
	sh->host = host;
	sh->p = p;
	p->sh = sh;
	if (pthread_mutex_init(&sh->prog.mu, NULL) != 0) {
		rc = bw_error_set(err, BW_E_INTERNAL, "cannot create a mutex");
		goto fail;
	}
	sh->prog_init = true;
	atomic_init(&sh->prog.cancel, false);
	if ((rc = settings_load(p, &sh->cfg, err)) != BW_OK)
		goto fail;
	dl_ldap_global_init();
	if (!(sh->pool = dl_pool_new(&sh->cfg)) || !(p->dir = dl_dir_new())) {
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		goto fail;
	}
	p->m_logins = host->metric_new(ctx, BW_METRIC_COUNTER, "logins_total", "Directory logins checked, by result.",
	                               "result", NULL, 0, err);
	p->m_syncs = host->metric_new(ctx, BW_METRIC_COUNTER, "syncs_total", "Directory syncs, by result.", "result",
	                              NULL, 0, err);
	p->m_users =
	    host->metric_new(ctx, BW_METRIC_GAUGE, "users", "Users in the last synced directory.", NULL, NULL, 0, err);
	p->m_groups = host->metric_new(ctx, BW_METRIC_GAUGE, "groups", "Groups in the last synced directory.", NULL,
	                               NULL, 0, err);
	if (!p->m_logins || !p->m_syncs || !p->m_users || !p->m_groups) {
		rc = err->code ? err->code : BW_E_INTERNAL;
		goto fail;
	}
	if ((rc = host->capability_register(ctx, "directory", &dl_dir_ops, sizeof dl_dir_ops, p, err)) != BW_OK)
		goto fail;
	const struct bw_route routes[] = {
	    {sizeof(struct bw_route), "admin", "POST", "test", BW_ROLE_ADMIN, post_test, p},
	    {sizeof(struct bw_route), "admin", "POST", "sync", BW_ROLE_ADMIN, post_sync, p},
	    {sizeof(struct bw_route), "admin", "GET", "sync", BW_ROLE_READONLY, get_sync, p},
	    {sizeof(struct bw_route), "admin", "GET", "users", BW_ROLE_READONLY, get_users, p},
	    {sizeof(struct bw_route), "admin", "GET", "groups", BW_ROLE_READONLY, get_groups, p},
	};
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if ((rc = host->route_add(ctx, &routes[i], err)) != BW_OK)
			goto fail;
	host->log(ctx, BW_LOG_INFO,
	          "directory %s (%s%s), base %s, schema %s, %zu admin / %zu readonly groups, %zu "
	          "group mappings",
	          sh->cfg.urls[0], sh->cfg.starttls ? "StartTLS" : "LDAPS", sh->cfg.nurls > 1 ? ", more URLs" : "",
	          sh->cfg.base_dn, sh->cfg.schema == DL_SCHEMA_AD ? "ad" : "rfc2307bis", sh->cfg.nadmin_groups,
	          sh->cfg.nreadonly_groups, sh->cfg.ngroup_map);
	return BW_OK;
fail:
	dl_free(p);
	return rc;
}

static int dl_start(bw_plugin_ctx *ctx, void *instance, bw_error *err)
{
	struct dlp *p = instance;
	if (p->sh->cfg.insecure)
		p->host->log(
		    ctx, BW_LOG_WARN,
		    "insecure_skip_verify is on: the directory server's certificate is NOT verified, so anyone "
		    "on the network path can read directory passwords (use it in labs only)");
	int rc = store_load(p, err);
	if (rc != BW_OK)
		return rc;
	publish_counts(p);
	p->started = true;
	if (p->sync_interval_ms > 0) {
		/* The first sync soon after start when none ran yet (or the last one is older than the interval). */
		int64_t since = p->host->clock_now_ms() - p->last_full_ms;
		uint64_t first =
		    !p->watermark[0] || since >= p->sync_interval_ms ? 2000 : (uint64_t)p->sync_interval_ms;
		if (!(p->timer = p->host->timer_add(ctx, first, (uint64_t)p->sync_interval_ms, on_timer, p)))
			return bw_error_set(err, BW_E_INTERNAL, "cannot start the sync timer");
	}
	p->host->health_set(ctx, false, p->watermark[0] ? "synced directory loaded" : "not synced yet");
	return BW_OK;
}

/* Stops the timer and the waiting logins (refused), cancels a running sync between pages, and waits for the
 * jobs on the work queue. */
static int dl_stop(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	struct dlp *p = instance;
	if (!p->stopping) {
		p->stopping = true;
		if (p->timer)
			p->host->timer_cancel(p->timer);
		p->timer = NULL;
		atomic_store(&p->sh->prog.cancel, true);
		while (p->q_head) {
			struct auth_job *j = p->q_head;
			p->q_head = j->next;
			p->q_len--;
			j->done(BW_E_CANCELLED, "the directory connector is stopping", NULL, j->done_arg);
			auth_job_free(j);
		}
		p->q_tail = NULL;
	}
	return p->sync || p->auth_inflight || p->tests_inflight ? BW_E_BUSY : BW_OK;
}

static void dl_fini(bw_plugin_ctx *ctx, void *instance)
{
	(void)ctx;
	dl_free(instance);
}

BW_PLUGIN_DEFINE(dir_ldap) = {
    BW_PLUGIN_HEADER,
    .name = "dir_ldap",
    .version = "1.0.0",
    .description = "LDAP / Active Directory connector: directory logins, user and group sync",
    .instance_size = sizeof(struct dlp),
    .fields = dl_fields,
    .init = dl_init,
    .start = dl_start,
    .stop = dl_stop,
    .fini = dl_fini,
};
