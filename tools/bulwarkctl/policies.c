/* policies.c: the bulwarkctl commands for device groups (a tree under "default"), their versioned
 * policy documents (get, set with field-by-field validation errors, history, diff, delivery status,
 * the feature-lock catalog), moving a device to another group, and the push test of a device. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api.h"
#include "commands.h"
#include "http.h"
#include "output.h"

#define MAX_POLICY_FILE  (1024 * 1024) /* the server's default body limit */
#define MAX_STATUS_ROWS  100000
#define MAX_SHOWN_ERRORS 100

/* ---- small helpers */

/* A time cell from an RFC 3339 string or Unix seconds. */
static char *time_cell(const json_t *obj, const char *key, const char *if_null)
{
	const json_t *v = json_object_get(obj, key);

	if (json_is_integer(v) && json_integer_value(v) > 0) {
		time_t t = (time_t)json_integer_value(v);
		struct tm tm;
		char buf[64];

		if (localtime_r(&t, &tm) && strftime(buf, sizeof buf, "%Y-%m-%d %H:%M", &tm))
			return bwctl_xstrdup(buf);
	}
	return bwctl_cell_time(obj, key, if_null);
}

static char *group_path(const char *name, const char *suffix, int *rc)
{
	char *path = NULL;

	*rc = bwctl_object_path("groups", "group name", name, suffix, &path);
	return path;
}

/* Prints the server's JSON (--json) or `done` with the group name. */
static int simple_change(struct bwctl_ctx *ctx, const char *method, const char *path, const json_t *body,
                         const char *done)
{
	struct bwctl_reply reply = {0};
	int rc = bwctl_send_json(ctx, method, path, body, &reply);

	if (rc == BWCTL_EXIT_OK) {
		if (ctx->json && reply.json)
			bwctl_print_json(reply.json);
		else if (ctx->json)
			printf("{}\n");
		else
			printf("%s\n", done);
	}
	bwctl_reply_free(&reply);
	return rc;
}

static json_t *string_or_fail(const char *s, int *rc)
{
	json_t *j = json_string(s);

	if (!j)
		*rc = bwctl_fail(BWCTL_EXIT_USAGE, "'%s' is not valid UTF-8", s);
	return j;
}

/* PATCH `path` (freed here) with {field: value}; done, prints "<verb> <name> <link> <value>". */
static int patch_field(struct bwctl_ctx *ctx, char *path, const char *field, const char *value, const char *verb,
                       const char *name, const char *link)
{
	int rc = BWCTL_EXIT_OK;
	json_t *body = json_object();
	char *a = bwctl_clean(name), *b = bwctl_clean(value), *done;

	json_object_set_new(body, field, string_or_fail(value, &rc));
	done = bwctl_xasprintf("%s %s %s %s", verb, a, link, b);
	if (rc == BWCTL_EXIT_OK)
		rc = simple_change(ctx, "PATCH", path, body, done);
	free(done);
	free(a);
	free(b);
	free(path);
	json_decref(body);
	return rc;
}

/* ---- groups */

/* A group's own policy version: "v3", or "" when it has none (version 0: it inherits everything). */
static char *policy_version_text(const json_t *g)
{
	const json_t *v = json_object_get(g, "policy_version");

	if (json_is_integer(v))
		return json_integer_value(v) > 0 ? bwctl_xasprintf("v%" JSON_INTEGER_FORMAT, json_integer_value(v))
		                                 : bwctl_xstrdup("");
	if (json_is_string(v) && json_string_length(v))
		return bwctl_cell(g, "policy_version", "");
	return bwctl_xstrdup("");
}

static void group_row(const json_t *g, char **cells)
{
	static const char *const dev_keys[] = {"devices", "device_count", NULL};
	const json_t *devs = json_object_get(g, "devices");
	char *ver = policy_version_text(g);

	cells[0] = bwctl_cell(g, "name", "-");
	cells[1] = bwctl_cell(g, "parent", "-");
	cells[2] =
	    json_is_array(devs) ? bwctl_xasprintf("%zu", json_array_size(devs)) : bwctl_cell_any(g, dev_keys, "-");
	cells[3] = ver[0] ? ver : bwctl_xstrdup("inherited");
	cells[4] = bwctl_cell(g, "description", "-");
	if (!ver[0])
		free(ver);
}

int bwctl_cmd_groups_list(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"NAME", "PARENT", "DEVICES", "POLICY", "DESCRIPTION"};

	(void)args;
	return bwctl_list_command(ctx, "/api/v1/groups", "groups", 5, headers, group_row);
}

static bool same(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

/* Prints the children of `parent` (NULL: the roots), sorted as the server listed them. */
static void print_subtree(const json_t *groups, const char *parent, const char *prefix, int depth)
{
	size_t i, n = 0, k = 0;
	const json_t *g;

	if (depth > 64)
		return; /* a cycle the server should never send */
	json_array_foreach(groups, i, g)
	{
		const char *p = json_string_value(json_object_get(g, "parent"));

		if (parent ? same(p, parent) : (!p || !*p))
			n++;
	}
	json_array_foreach(groups, i, g)
	{
		const char *p = json_string_value(json_object_get(g, "parent"));
		const char *name = json_string_value(json_object_get(g, "name"));
		char *label, *sub, *ver;
		bool last;

		if (!name || !(parent ? same(p, parent) : (!p || !*p)))
			continue;
		last = ++k == n;
		label = bwctl_clean(name);
		ver = policy_version_text(g);
		if (depth == 0)
			printf("%s%s%s%s\n", label, ver[0] ? " (policy " : "", ver, ver[0] ? ")" : "");
		else
			printf("%s%s%s%s%s%s\n", prefix, last ? "`-- " : "|-- ", label, ver[0] ? " (policy " : "", ver,
			       ver[0] ? ")" : "");
		sub = bwctl_xasprintf("%s%s", prefix, depth == 0 ? "" : last ? "    " : "|   ");
		print_subtree(groups, name, sub, depth + 1);
		free(sub);
		free(label);
		free(ver);
	}
}

int bwctl_cmd_groups_tree(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const keys[] = {"groups", NULL};
	struct bwctl_reply reply;
	const json_t *groups;
	int rc = bwctl_get_list(ctx, "/api/v1/groups", keys, true, NULL, &reply, &groups);

	(void)args;
	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (ctx->json)
		bwctl_print_json(reply.json);
	else
		print_subtree(groups, NULL, "", 0);
	bwctl_reply_free(&reply);
	return BWCTL_EXIT_OK;
}

int bwctl_cmd_groups_add(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	const char *name = args->pos[0];
	json_t *body = json_object();
	char *done, *n, *p = NULL;
	int rc = bwctl_check_segment("group name", name);

	if (rc == BWCTL_EXIT_OK)
		json_object_set_new(body, "name", string_or_fail(name, &rc));
	if (rc == BWCTL_EXIT_OK && args->parent)
		json_object_set_new(body, "parent", string_or_fail(args->parent, &rc));
	if (rc != BWCTL_EXIT_OK) {
		json_decref(body);
		return rc;
	}
	n = bwctl_clean(name);
	if (args->parent)
		p = bwctl_clean(args->parent);
	done = bwctl_xasprintf("Created group %s under %s", n, p ? p : "default");
	rc = simple_change(ctx, "POST", "/api/v1/groups", body, done);
	free(done);
	free(n);
	free(p);
	json_decref(body);
	return rc;
}

int bwctl_cmd_groups_rename(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	int rc;
	char *path = group_path(args->pos[0], "", &rc);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	if ((rc = bwctl_check_segment("group name", args->pos[1])) != BWCTL_EXIT_OK) {
		free(path);
		return rc;
	}
	return patch_field(ctx, path, "name", args->pos[1], "Renamed group", args->pos[0], "to");
}

int bwctl_cmd_groups_move(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	int rc;
	char *path;

	if (!args->parent)
		return bwctl_fail(BWCTL_EXIT_USAGE, "groups move needs --parent PARENT");
	path = group_path(args->pos[0], "", &rc);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	return patch_field(ctx, path, "parent", args->parent, "Moved group", args->pos[0], "under");
}

int bwctl_cmd_groups_remove(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	int rc;
	char *path = group_path(args->pos[0], "", &rc), *a, *b = NULL, *done;

	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (args->move_to && (rc = bwctl_check_segment("group name", args->move_to)) != BWCTL_EXIT_OK) {
		free(path);
		return rc;
	}
	bwctl_query_add(&path, "move_to", args->move_to);
	a = bwctl_clean(args->pos[0]);
	if (args->move_to)
		b = bwctl_clean(args->move_to);
	done = b ? bwctl_xasprintf("Removed group %s (its devices and subgroups moved to %s)", a, b)
	         : bwctl_xasprintf("Removed group %s", a);
	rc = simple_change(ctx, "DELETE", path, NULL, done);
	free(done);
	free(a);
	free(b);
	free(path);
	return rc;
}

int bwctl_cmd_groups_show(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	return bwctl_show_command(ctx, "groups", "group name", args->pos[0]);
}

int bwctl_cmd_devices_move(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	int rc;
	char *path = NULL;

	if ((rc = bwctl_object_path("devices", "device id", args->pos[0], "", &path)) != BWCTL_EXIT_OK)
		return rc;
	if ((rc = bwctl_check_segment("group name", args->pos[1])) != BWCTL_EXIT_OK) {
		free(path);
		return rc;
	}
	return patch_field(ctx, path, "group", args->pos[1], "Moved device", args->pos[0], "to group");
}

/* ---- policies */

static void print_field_line(const char *label, const json_t *obj, const char *key, bool is_time)
{
	char *v;

	if (!json_object_get(obj, key) || json_is_null(json_object_get(obj, key)))
		return;
	v = is_time ? time_cell(obj, key, "-") : bwctl_cell(obj, key, "-");
	printf("%-9s %s\n", label, v);
	free(v);
}

int bwctl_cmd_policies_get(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply;
	const json_t *doc;
	int rc;
	char *path = group_path(args->pos[0], args->effective ? "/policy/effective" : "/policy", &rc), *text;

	if (rc != BWCTL_EXIT_OK)
		return rc;
	rc = bwctl_get_object(ctx, path, "the policy is not a JSON object", &reply);
	free(path);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (ctx->json) {
		bwctl_print_json(reply.json);
		goto out;
	}
	doc = json_object_get(reply.json, "policy");
	if (!json_is_object(doc))
		doc = json_object_get(reply.json, "document");
	if (!json_is_object(doc))
		doc = reply.json;
	print_field_line("Group:", reply.json, "group", false);
	print_field_line("Version:", reply.json, "version", false);
	print_field_line("Author:", reply.json, "author", false);
	print_field_line("Changed:", reply.json, "at", true);
	print_field_line("Changes:", reply.json, "summary", false);
	if (json_is_object(json_object_get(reply.json, "sources"))) {
		const char *k;
		const json_t *v;

		printf("Sources:\n");
		json_object_foreach((json_t *)json_object_get(reply.json, "sources"), k, v)
		{
			char *kk = bwctl_clean(k), *vv = bwctl_cell(json_object_get(reply.json, "sources"), k, "-");

			printf("  %-22s %s\n", kk, vv);
			free(kk);
			free(vv);
		}
	}
	/* ASCII only: control characters in strings come out escaped, so only the indentation's
	 * newlines reach the terminal. */
	text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
	printf("Policy:\n%s\n", text ? text : "{}");
	free(text);
out:
	bwctl_reply_free(&reply);
	return rc;
}

/* Reads FILE.json: a policy document, or the output of `policies get --json` (its "policy"). */
static int read_policy_file(const char *file, json_t **out)
{
	static const char *const sections[] = {
	    "malware_scan", "web_protection", "sms_filter",           "call_filter", "password", "feature_lock",
	    "wifi",         "app_control",    "uninstall_protection", "updates",     "privacy",  NULL};
	json_error_t jerr;
	json_t *root, *inner;
	bool has_section = false;
	FILE *f;
	long size = -1;

	*out = NULL;
	f = fopen(file, "rb");
	if (!f)
		return bwctl_fail(BWCTL_EXIT_USAGE, "cannot open %s: %s", file, strerror(errno));
	if (fseek(f, 0, SEEK_END) == 0)
		size = ftell(f);
	if (size < 0 || size > MAX_POLICY_FILE || fseek(f, 0, SEEK_SET) != 0) {
		fclose(f);
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s: not a regular file of at most %d bytes", file, MAX_POLICY_FILE);
	}
	root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
	fclose(f);
	if (!root)
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s:%d:%d: %s", file, jerr.line, jerr.column, jerr.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s: a policy document is a JSON object", file);
	}
	for (const char *const *s = sections; *s; s++)
		has_section |= json_object_get(root, *s) != NULL;
	inner = json_object_get(root, "policy");
	if (!has_section && json_is_object(inner)) {
		*out = json_incref(inner);
		json_decref(root);
	} else {
		*out = root;
	}
	return BWCTL_EXIT_OK;
}

/* A 422's details, one line each: "field: message (entry: X)". */
static void print_validation_errors(const json_t *details)
{
	size_t i;
	const json_t *d;

	json_array_foreach(details, i, d)
	{
		char *field = bwctl_cell(d, "field", "(document)"), *msg = bwctl_cell(d, "message", "invalid");
		const json_t *entry = json_object_get(d, "entry");

		if (i == MAX_SHOWN_ERRORS) {
			fprintf(stderr, "  ... and %zu more\n", json_array_size(details) - i);
			free(field);
			free(msg);
			break;
		}
		if (entry && !json_is_null(entry)) {
			char *e = bwctl_cell(d, "entry", "");

			fprintf(stderr, "  %s: %s (entry: %s)\n", field, msg, e);
			free(e);
		} else {
			fprintf(stderr, "  %s: %s\n", field, msg);
		}
		free(field);
		free(msg);
	}
}

int bwctl_cmd_policies_set(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_call call = {.method = "PUT", .flags = BWCTL_API_AUTH | BWCTL_API_RAW_ERROR};
	struct bwctl_reply reply = {0};
	json_t *doc = NULL;
	int rc;
	char *path = group_path(args->pos[0], "/policy", &rc);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	if ((rc = read_policy_file(args->pos[1], &doc)) != BWCTL_EXIT_OK) {
		free(path);
		return rc;
	}
	call.path = path;
	call.body = doc;
	rc = bwctl_api_call(ctx, &call, &reply);
	free(path);
	json_decref(doc);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (reply.status == 422) {
		const json_t *e = json_object_get(reply.json, "error");
		const json_t *details = json_object_get(e, "details");
		char *msg = bwctl_cell(e, "message", "the policy is invalid");

		if (ctx->json)
			bwctl_print_json(reply.json);
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "the policy in %s is invalid: %zu error%s%s%s", args->pos[1],
		                json_array_size(details), json_array_size(details) == 1 ? "" : "s",
		                json_array_size(details) ? "" : ": ", json_array_size(details) ? "" : msg);
		print_validation_errors(details);
		free(msg);
		goto out;
	}
	if (reply.status < 200 || reply.status >= 300) {
		rc = bwctl_api_fail(ctx, &reply, true);
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json ? reply.json : json_object());
	} else {
		char *g = bwctl_clean(args->pos[0]), *v = bwctl_cell(reply.json, "version", "?");
		char *sum = bwctl_cell(reply.json, "summary", "");
		char *eff = bwctl_cell(reply.json, "effective_version", "");

		printf("Saved the policy of group %s: version %s%s%s%s%s%s\n", g, v, sum[0] ? " (changed: " : "", sum,
		       sum[0] ? ")" : "", eff[0] ? "; delivery version " : "", eff);
		free(g);
		free(v);
		free(sum);
		free(eff);
	}
out:
	bwctl_reply_free(&reply);
	return rc;
}

static void history_row(const json_t *h, char **cells)
{
	cells[0] = bwctl_cell(h, "version", "-");
	cells[1] = time_cell(h, "at", "-");
	cells[2] = bwctl_cell(h, "author", "-");
	cells[3] = bwctl_cell(h, "summary", "-");
}

int bwctl_cmd_policies_history(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"VERSION", "TIME", "AUTHOR", "CHANGED"};
	static const char *const keys[] = {"versions", "history", NULL};
	int rc;
	char *path = group_path(args->pos[0], "/policy/history", &rc);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	rc = bwctl_list_print(ctx, path, keys, true, NULL, 4, headers, history_row);
	free(path);
	return rc;
}

static bool version_arg(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n < 19 && strspn(s, "0123456789") == n;
}

static char *value_text(const json_t *v)
{
	char *s;

	if (!v || json_is_null(v))
		return bwctl_xstrdup("(none)");
	s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	if (!s)
		return bwctl_xstrdup("?");
	bwctl_sanitize(s);
	return s;
}

int bwctl_cmd_policies_diff(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const keys[] = {"changes", "diff", NULL};
	struct bwctl_reply reply;
	const json_t *list, *c;
	size_t i;
	int rc;
	char *path;

	if (!version_arg(args->pos[1]) || !version_arg(args->pos[2]))
		return bwctl_fail(BWCTL_EXIT_USAGE,
		                  "FROM and TO are version numbers (0 = the empty document), not '%s' '%s'",
		                  args->pos[1], args->pos[2]);
	path = group_path(args->pos[0], "/policy/diff", &rc);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	bwctl_query_add(&path, "from", args->pos[1]);
	bwctl_query_add(&path, "to", args->pos[2]);
	rc = bwctl_get_list(ctx, path, keys, true, NULL, &reply, &list);
	free(path);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (ctx->json) {
		bwctl_print_json(reply.json);
		goto out;
	}
	if (json_array_size(list) == 0)
		printf("No differences between versions %s and %s\n", args->pos[1], args->pos[2]);
	json_array_foreach(list, i, c)
	{
		char *p = bwctl_cell(c, "path", "?"), *from = value_text(json_object_get(c, "from")),
		     *to = value_text(json_object_get(c, "to"));

		printf("%s: %s -> %s\n", p, from, to);
		free(p);
		free(from);
		free(to);
	}
out:
	bwctl_reply_free(&reply);
	return rc;
}

static void status_row(const json_t *d, char **cells)
{
	static const char *const dev_keys[] = {"device_id", "device", "id", NULL};
	static const char *const cur_keys[] = {"current_version", "assigned_version", NULL};
	static const char *const since_keys[] = {"assigned_at", "sent_at", NULL};
	const char *since = NULL;

	for (const char *const *k = since_keys; *k && !since; k++)
		if (json_object_get(d, *k) && !json_is_null(json_object_get(d, *k)))
			since = *k;
	cells[0] = bwctl_cell_any(d, dev_keys, "-");
	cells[1] = bwctl_cell(d, "group", "-");
	cells[2] = bwctl_cell(d, "state", "-");
	cells[3] = bwctl_cell_any(d, cur_keys, "-");
	cells[4] = bwctl_cell(d, "applied_version", "-");
	cells[5] = since ? time_cell(d, since, "-") : bwctl_xstrdup("-");
	cells[6] = time_cell(d, "applied_at", "-");
}

int bwctl_cmd_policies_status(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"DEVICE",  "GROUP",    "STATE",     "CURRENT",
	                                      "APPLIED", "ASSIGNED", "APPLIED AT"};
	static const char *const keys[] = {"devices", "status", NULL};
	struct bwctl_reply reply;
	const json_t *list, *item;
	struct bwctl_table *t;
	size_t i, counts[3] = {0};
	char *path;
	int rc;

	if (args->state && strcmp(args->state, "pending") != 0 && strcmp(args->state, "applied") != 0 &&
	    strcmp(args->state, "out_of_sync") != 0)
		return bwctl_fail(BWCTL_EXIT_USAGE, "unknown state '%s' (use pending, applied or out_of_sync)",
		                  args->state);
	if (args->group && (rc = bwctl_check_segment("group name", args->group)) != BWCTL_EXIT_OK)
		return rc;
	path = bwctl_xstrdup("/api/v1/policies/status");
	bwctl_query_add(&path, "group", args->group);
	bwctl_query_add(&path, "state", args->state);
	rc = bwctl_get_list(ctx, path, keys, true, NULL, &reply, &list);
	free(path);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (ctx->json) {
		bwctl_print_json(reply.json);
		goto out;
	}
	t = bwctl_table_new(7, headers);
	json_array_foreach(list, i, item)
	{
		char *cells[7];
		const char *st = json_string_value(json_object_get(item, "state"));

		if (!json_is_object(item) || i >= MAX_STATUS_ROWS)
			continue;
		counts[same(st, "applied") ? 0 : same(st, "pending") ? 1 : same(st, "out_of_sync") ? 2 : 1]++;
		status_row(item, cells);
		bwctl_table_add_owned(t, cells);
	}
	bwctl_table_print(t, stdout);
	bwctl_table_free(t);
	{
		/* The server's counts cover the group whatever --state selected. */
		const json_t *c = json_object_get(reply.json, "counts");

		if (json_is_object(c)) {
			counts[0] = (size_t)json_integer_value(json_object_get(c, "applied"));
			counts[1] = (size_t)json_integer_value(json_object_get(c, "pending"));
			counts[2] = (size_t)json_integer_value(json_object_get(c, "out_of_sync"));
		}
	}
	printf("\n%zu device%s listed; %zu applied, %zu pending, %zu out of sync\n", json_array_size(list),
	       json_array_size(list) == 1 ? "" : "s", counts[0], counts[1], counts[2]);
out:
	bwctl_reply_free(&reply);
	return rc;
}

static char *platform_cell(const json_t *item, const char *platform)
{
	const json_t *p = json_object_get(json_object_get(item, "platforms"), platform);
	const char *min;

	if (!json_is_object(p))
		return bwctl_xstrdup("-");
	min = json_string_value(json_object_get(p, "min_os"));
	if (min) {
		char *s = bwctl_xasprintf(">= %s", min);

		bwctl_sanitize(s);
		return s;
	}
	return bwctl_xstrdup("yes");
}

static void catalog_row(const json_t *item, char **cells)
{
	const json_t *ios = json_object_get(json_object_get(item, "platforms"), "ios");

	cells[0] = bwctl_cell(item, "id", "-");
	cells[1] = bwctl_cell(item, "label", "-");
	cells[2] = platform_cell(item, "android");
	cells[3] = platform_cell(item, "ios");
	cells[4] = !json_is_object(ios)
	               ? bwctl_xstrdup("-")
	               : bwctl_xstrdup(json_is_true(json_object_get(ios, "supervised")) ? "required" : "no");
}

int bwctl_cmd_policies_catalog(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"ID", "LABEL", "ANDROID", "IOS", "IOS SUPERVISED"};
	static const char *const keys[] = {"items", "catalog", "features", NULL};

	(void)args;
	return bwctl_list_print(ctx, "/api/v1/policies/catalog", keys, true, "no \"items\" list in the catalog", 5,
	                        headers, catalog_row);
}

/* ---- push */

int bwctl_cmd_push_test(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply = {0};
	const char *outcome;
	char *path = NULL;
	json_t *body;
	int rc = bwctl_object_path("devices", "device id", args->pos[0], "/push-test", &path);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	body = json_object();
	rc = bwctl_send_json(ctx, "POST", path, body, &reply);
	json_decref(body);
	free(path);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	outcome = json_string_value(json_object_get(reply.json, "outcome"));
	if (!outcome) {
		rc = bwctl_unexpected(ctx, "no \"outcome\" in the push test result");
		goto out;
	}
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		char *dev = bwctl_clean(args->pos[0]), *o = bwctl_clean(outcome);
		char *reason = bwctl_cell(reply.json, "reason", ""), *status = bwctl_cell(reply.json, "status", "");
		char *attempts = bwctl_cell(reply.json, "attempts", ""), *id = bwctl_cell(reply.json, "id", "");

		printf("Push test to device %s: %s", dev, o);
		if (reason[0])
			printf(" (%s)", reason);
		if (status[0])
			printf(", HTTP status %s", status);
		if (attempts[0])
			printf(", %s attempt%s", attempts, strcmp(attempts, "1") == 0 ? "" : "s");
		if (id[0])
			printf(", id %s", id);
		printf("\n");
		free(dev);
		free(o);
		free(reason);
		free(status);
		free(attempts);
		free(id);
	}
	if (strcmp(outcome, "sent") != 0)
		rc = BWCTL_EXIT_FAIL;
out:
	bwctl_reply_free(&reply);
	return rc;
}
