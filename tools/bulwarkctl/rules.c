/* rules.c: the `bulwarkctl rules` commands. `check` and `test` are offline: they load rule files into the
 * same sandboxed engine the server uses (plugins/compliance_lua). `list`, `upload`, `enable`, `disable` and
 * `results` are clients of the compliance_lua plugin's admin API. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "commands.h"
#include "engine.h"
#include "http.h"
#include "output.h"

struct bwctl_rules_opts bwctl_rules_opts;

static const char *platforms_text(unsigned p)
{
	switch (p) {
	case BW_RULE_ANDROID:
		return "android";
	case BW_RULE_IOS:
		return "ios";
	case BW_RULE_ANDROID | BW_RULE_IOS:
		return "android,ios";
	default:
		return "all";
	}
}

static char *actions_text(const struct bw_rule_info *ri)
{
	size_t len = 1;
	for (size_t i = 0; i < ri->nactions; i++)
		len += strlen(ri->actions[i]) + 1;
	char *s = bwctl_xmalloc(len + 1);
	s[0] = '\0';
	for (size_t i = 0; i < ri->nactions; i++) {
		if (i)
			strcat(s, ",");
		strcat(s, ri->actions[i]);
	}
	if (!ri->nactions)
		strcpy(s, "-");
	return s;
}

/* Loads every file in args->pos; on failure prints why and returns NULL. */
static bw_rules_engine *load_all(const struct bwctl_args *args, int *rc)
{
	bw_error err;
	bw_rules_engine *e = bw_rules_engine_new(NULL, &err);
	if (!e) {
		*rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s", err.message);
		return NULL;
	}
	for (int i = 0; i < args->npos; i++) {
		if (bw_rules_load_file(e, args->pos[i], &err) != BW_OK) {
			*rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s", err.message);
			bw_rules_engine_free(e);
			return NULL;
		}
	}
	*rc = BWCTL_EXIT_OK;
	return e;
}

static json_t *rule_json(const struct bw_rule_info *ri)
{
	json_t *actions = json_array();
	for (size_t i = 0; i < ri->nactions; i++)
		json_array_append_new(actions, json_string(ri->actions[i]));
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:o}", "id", ri->id, "title", ri->title, "description",
	                 ri->description ? ri->description : "", "severity", ri->severity, "platforms",
	                 platforms_text(ri->platforms), "file", ri->source, "line", ri->line, "actions", actions);
}

int bwctl_cmd_rules_check(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "SEVERITY", "PLATFORMS", "ACTIONS", "TITLE"};
	int rc;
	bw_rules_engine *e = load_all(args, &rc);
	if (!e)
		return rc;
	size_t n = bw_rules_count(e);
	if (ctx->json) {
		json_t *list = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(list, rule_json(bw_rules_info(e, i)));
		bwctl_print_json(list);
		json_decref(list);
	} else {
		struct bwctl_table *t = bwctl_table_new(5, headers);
		for (size_t i = 0; i < n; i++) {
			const struct bw_rule_info *ri = bw_rules_info(e, i);
			char *cells[5] = {bwctl_xstrdup(ri->id), bwctl_xstrdup(ri->severity),
			                  bwctl_xstrdup(platforms_text(ri->platforms)), actions_text(ri),
			                  bwctl_xstrdup(ri->title)};
			bwctl_sanitize(cells[4]);
			bwctl_table_add_owned(t, cells);
		}
		bwctl_table_print(t, stdout);
		bwctl_table_free(t);
		printf("%zu rule%s OK\n", n, n == 1 ? "" : "s");
	}
	bw_rules_engine_free(e);
	return BWCTL_EXIT_OK;
}

/* Exits 0 whatever the verdicts: non-zero only when the rules or the device could not be loaded. */
int bwctl_cmd_rules_test(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	if (!args->device)
		return bwctl_fail(BWCTL_EXIT_USAGE, "missing --device DEVICE.json");
	json_error_t jerr;
	json_t *dev = json_load_file(args->device, JSON_REJECT_DUPLICATES, &jerr);
	if (!dev)
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s:%d: %s", args->device, jerr.line, jerr.text);
	if (!json_is_object(dev)) {
		json_decref(dev);
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s: the device must be a JSON object", args->device);
	}
	int rc;
	bw_rules_engine *e = load_all(args, &rc);
	if (!e) {
		json_decref(dev);
		return rc;
	}
	/* BULWARK_RULES_NOW (Unix seconds) pins the clock of days_since and count_findings for repeatable runs. */
	const char *now = getenv("BULWARK_RULES_NOW");
	if (now && *now) {
		char *end;
		long long v = strtoll(now, &end, 10);
		if (*end || v <= 0) {
			bw_rules_engine_free(e);
			json_decref(dev);
			return bwctl_fail(BWCTL_EXIT_USAGE, "BULWARK_RULES_NOW must be Unix seconds, not '%s'", now);
		}
		bw_rules_set_now(e, v);
	}
	size_t n = bw_rules_count(e);
	struct bw_rule_result *res = bwctl_xmalloc((n ? n : 1) * sizeof *res);
	bw_rules_evaluate(e, dev, res, n);
	if (ctx->json) {
		json_t *list = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(list, json_pack("{s:s,s:s,s:s}", "id", res[i].rule->id, "verdict",
			                                      bw_rule_verdict_name(res[i].verdict), "message",
			                                      res[i].message));
		bwctl_print_json(list);
		json_decref(list);
	} else {
		for (size_t i = 0; i < n; i++) {
			bwctl_sanitize(res[i].message);
			printf("%s: %s%s%s\n", res[i].rule->id, bw_rule_verdict_name(res[i].verdict),
			       res[i].message[0] ? ": " : "", res[i].message);
		}
	}
	free(res);
	bw_rules_engine_free(e);
	json_decref(dev);
	return BWCTL_EXIT_OK;
}

/* ---- server side: the compliance_lua plugin's API ---- */

#define RULES_API         "/api/v1/plugins/compliance_lua/"
#define RULE_FILE_MAX     (256 * 1024) /* bytes of one uploaded rule file */
#define RESULTS_PAGE      1000         /* the plugin's largest page */
#define RESULTS_MAX_PAGES 1000         /* a million stored results: enough, and no endless loop */

/* A path segment: non-empty, not "." or ".." (which URL normalisation would eat). */
static int check_segment(const char *what, const char *value)
{
	if (!value[0] || strcmp(value, ".") == 0 || strcmp(value, "..") == 0)
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid %s '%s'", what, value);
	return BWCTL_EXIT_OK;
}

static int call(struct bwctl_ctx *ctx, const char *method, const char *path, const json_t *body,
                struct bwctl_reply *reply)
{
	struct bwctl_call c = {.method = method, .path = path, .body = body, .flags = BWCTL_API_AUTH};
	return bwctl_api_call(ctx, &c, reply);
}

static int unexpected(const struct bwctl_ctx *ctx, const char *what)
{
	return bwctl_fail(BWCTL_EXIT_FAIL, "unexpected answer from %s: %s", ctx->server, what);
}

/* Unix seconds in local time, like the other tables' times ("2024-05-01 14:03"). */
static char *unix_cell(const json_t *v)
{
	if (!json_is_integer(v))
		return bwctl_xstrdup("-");
	time_t t = (time_t)json_integer_value(v);
	struct tm tm;
	char buf[64];
	if (!localtime_r(&t, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm))
		return bwctl_xasprintf("%lld", (long long)json_integer_value(v));
	return bwctl_xstrdup(buf);
}

static void print_rules_table(const json_t *rules, const char *only_source)
{
	static const char *const headers[] = {"ID", "TITLE", "SEVERITY", "PLATFORMS", "SOURCE", "ENABLED"};
	struct bwctl_table *t = bwctl_table_new(6, headers);
	size_t i;
	const json_t *r;
	json_array_foreach(rules, i, r)
	{
		if (!json_is_object(r))
			continue;
		const char *src = json_string_value(json_object_get(r, "source"));
		if (only_source && (!src || strcmp(src, only_source) != 0))
			continue;
		char *cells[6] = {bwctl_cell(r, "id", "-"),       bwctl_cell(r, "title", "-"),
		                  bwctl_cell(r, "severity", "-"), bwctl_cell(r, "platforms", "all"),
		                  bwctl_cell(r, "source", "-"),   bwctl_cell(r, "enabled", "-")};
		bwctl_table_add_owned(t, cells);
	}
	bwctl_table_print(t, stdout);
	bwctl_table_free(t);
}

int bwctl_cmd_rules_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	(void)args;
	struct bwctl_reply reply;
	int rc = call(ctx, "GET", RULES_API "rules", NULL, &reply);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	const json_t *rules = json_object_get(reply.json, "rules");
	if (!json_is_array(rules))
		rc = unexpected(ctx, "no \"rules\" list");
	else if (ctx->json)
		bwctl_print_json(reply.json);
	else
		print_rules_table(rules, NULL);
out:
	bwctl_reply_free(&reply);
	return rc;
}

/* Reads a rule file of at most RULE_FILE_MAX bytes as a JSON string (UTF-8, no NUL bytes). */
static int read_rule_file(const char *file, json_t **out)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return bwctl_fail(BWCTL_EXIT_FAIL, "cannot read %s: %s", file, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s is not a regular file", file);
	}
	/* One byte more than allowed, to notice a file that grew past the limit since fstat. */
	char *buf = bwctl_xmalloc(RULE_FILE_MAX + 1);
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, RULE_FILE_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			close(fd);
			free(buf);
			return bwctl_fail(BWCTL_EXIT_FAIL, "cannot read %s: %s", file, strerror(e));
		}
		if (n == 0 || (len += (size_t)n) > RULE_FILE_MAX)
			break;
	}
	close(fd);
	int rc = BWCTL_EXIT_OK;
	if (len > RULE_FILE_MAX)
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s is larger than %d KiB", file, RULE_FILE_MAX / 1024);
	else if (memchr(buf, '\0', len))
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s holds NUL bytes: not a Lua text file", file);
	else if (!(*out = json_stringn(buf, len)))
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s is not valid UTF-8", file);
	free(buf);
	return rc;
}

int bwctl_cmd_rules_upload(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	const char *file = args->pos[0];
	const char *slash = strrchr(file, '/');
	const char *name = bwctl_rules_opts.name ? bwctl_rules_opts.name : slash ? slash + 1 : file;
	if (!name[0])
		return bwctl_fail(BWCTL_EXIT_USAGE, "'%s' names no file: give --name NAME.lua", file);
	json_t *source = NULL;
	int rc = read_rule_file(file, &source);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	json_t *body = json_pack("{s:s, s:o}", "name", name, "source", source);
	if (!body)
		return bwctl_fail(BWCTL_EXIT_FAIL, "the name '%s' is not valid UTF-8", name);
	struct bwctl_reply reply, rules = {0};
	rc = call(ctx, "POST", RULES_API "rules", body, &reply);
	json_decref(body);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (ctx->json) {
		bwctl_print_json(reply.json);
		goto out;
	}
	const char *stored = json_string_value(json_object_get(reply.json, "name"));
	char *c = bwctl_xstrdup(stored ? stored : name);
	bwctl_sanitize(c);
	printf("Stored rule file %s (%s)\n", c,
	       json_is_false(json_object_get(reply.json, "enabled")) ? "disabled" : "enabled");
	free(c);
	/* Show the rules the file declared: the server's list is the truth about what it loaded. */
	rc = call(ctx, "GET", RULES_API "rules", NULL, &rules);
	if (rc == BWCTL_EXIT_OK && !json_is_array(json_object_get(rules.json, "rules")))
		rc = unexpected(ctx, "no \"rules\" list");
	else if (rc == BWCTL_EXIT_OK)
		print_rules_table(json_object_get(rules.json, "rules"), stored ? stored : name);
out:
	bwctl_reply_free(&rules);
	bwctl_reply_free(&reply);
	return rc;
}

static int set_enabled(struct bwctl_ctx *ctx, const char *name, bool on)
{
	int rc = check_segment("rule file name", name);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	char *escaped = bwctl_http_escape(name);
	char *path = bwctl_xasprintf(RULES_API "rules/%s/enabled", escaped);
	json_t *body = json_pack("{s:b}", "enabled", on);
	struct bwctl_reply reply;
	rc = call(ctx, "PUT", path, body, &reply);
	if (rc == BWCTL_EXIT_OK) {
		if (ctx->json) {
			bwctl_print_json(reply.json);
		} else {
			char *c = bwctl_xstrdup(name);
			bwctl_sanitize(c);
			printf("%s rule file %s\n", on ? "Enabled" : "Disabled", c);
			free(c);
		}
	}
	bwctl_reply_free(&reply);
	json_decref(body);
	free(path);
	free(escaped);
	return rc;
}

int bwctl_cmd_rules_enable(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return set_enabled(ctx, args->pos[0], true);
}

int bwctl_cmd_rules_disable(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return set_enabled(ctx, args->pos[0], false);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* rules results --device ID: one row per rule, sorted by rule id, then compliant yes/no. */
static int device_results(struct bwctl_ctx *ctx, const char *device)
{
	static const char *const headers[] = {"RULE", "VERDICT", "SINCE", "MESSAGE"};
	int rc = check_segment("device id", device);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	char *escaped = bwctl_http_escape(device);
	char *path = bwctl_xasprintf(RULES_API "results/%s", escaped);
	struct bwctl_reply reply;
	rc = call(ctx, "GET", path, NULL, &reply);
	free(path);
	free(escaped);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	json_t *rules = json_object_get(reply.json, "rules");
	if (!json_is_object(rules)) {
		rc = unexpected(ctx, "no \"rules\" object");
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
		goto out;
	}
	size_t n = json_object_size(rules), i = 0;
	const char **ids = bwctl_xmalloc((n ? n : 1) * sizeof *ids);
	const char *id;
	const json_t *r;
	json_object_foreach(rules, id, r) ids[i++] = id;
	qsort(ids, n, sizeof *ids, cmp_str);
	struct bwctl_table *t = bwctl_table_new(4, headers);
	for (i = 0; i < n; i++) {
		r = json_object_get(rules, ids[i]);
		char *cells[4] = {bwctl_xstrdup(ids[i]), bwctl_cell(r, "verdict", "-"),
		                  unix_cell(json_object_get(r, "since")), bwctl_cell(r, "message", "")};
		bwctl_sanitize(cells[0]);
		bwctl_table_add_owned(t, cells);
	}
	bwctl_table_print(t, stdout);
	bwctl_table_free(t);
	free(ids);
	char *when = unix_cell(json_object_get(reply.json, "evaluated_at"));
	printf("Compliant: %s (evaluated %s)\n", json_is_true(json_object_get(reply.json, "compliant")) ? "yes" : "no",
	       when);
	free(when);
out:
	bwctl_reply_free(&reply);
	return rc;
}

/* rules results --rule ID: the failing devices, following the plugin's pages to the end. */
static int rule_results(struct bwctl_ctx *ctx, const char *rule)
{
	static const char *const headers[] = {"DEVICE", "SINCE", "MESSAGE"};
	if (!rule[0])
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid rule id ''");
	char *escaped = bwctl_http_escape(rule);
	json_t *devices = json_array();
	char *after = NULL;
	int rc = BWCTL_EXIT_OK;
	for (int page = 0; rc == BWCTL_EXIT_OK && page < RESULTS_MAX_PAGES; page++) {
		char *cursor = after ? bwctl_http_escape(after) : NULL;
		char *path = bwctl_xasprintf(RULES_API "results?rule=%s&limit=%d%s%s", escaped, RESULTS_PAGE,
		                             cursor ? "&after=" : "", cursor ? cursor : "");
		struct bwctl_reply reply;
		rc = call(ctx, "GET", path, NULL, &reply);
		free(path);
		free(cursor);
		free(after);
		after = NULL;
		if (rc == BWCTL_EXIT_OK) {
			const json_t *list = json_object_get(reply.json, "devices");
			const char *next = json_string_value(json_object_get(reply.json, "next"));
			if (!json_is_array(list))
				rc = unexpected(ctx, "no \"devices\" list");
			else
				json_array_extend(devices, (json_t *)list);
			if (next && next[0])
				after = bwctl_xstrdup(next);
		}
		bwctl_reply_free(&reply);
		if (!after)
			break;
	}
	free(after);
	free(escaped);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (ctx->json) {
		/* The pages joined into one answer of the server's shape. */
		json_t *all = json_pack("{s:s, s:O, s:n}", "rule", rule, "devices", devices, "next");
		bwctl_print_json(all);
		json_decref(all);
		goto out;
	}
	struct bwctl_table *t = bwctl_table_new(3, headers);
	size_t i;
	const json_t *d;
	json_array_foreach(devices, i, d)
	{
		char *cells[3] = {bwctl_cell(d, "device_id", "-"), unix_cell(json_object_get(d, "since")),
		                  bwctl_cell(d, "message", "")};
		bwctl_table_add_owned(t, cells);
	}
	bwctl_table_print(t, stdout);
	bwctl_table_free(t);
	char *c = bwctl_xstrdup(rule);
	bwctl_sanitize(c);
	printf("%zu device%s failing %s\n", json_array_size(devices), json_array_size(devices) == 1 ? "" : "s", c);
	free(c);
out:
	json_decref(devices);
	return rc;
}

int bwctl_cmd_rules_results(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	const char *rule = bwctl_rules_opts.rule;
	if (!args->device == !rule)
		return bwctl_fail(BWCTL_EXIT_USAGE, "give either --device ID or --rule ID");
	return args->device ? device_results(ctx, args->device) : rule_results(ctx, rule);
}
