/* directory.c: the bulwarkctl commands of a directory plugin (dir_ldap by default, --plugin NAME for
 * another instance): `directory test` (connect, bind, search, TLS details), `directory sync`
 * (start one; --wait follows it to the end and prints what changed), `directory users` and
 * `directory groups` (the synced entries, fetched page by page). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "commands.h"
#include "http.h"
#include "output.h"

#define PAGE_SIZE    500
#define MAX_LIST     1000000 /* entries fetched by users/groups at most */
#define MAX_PAGES    10000
#define WAIT_POLL_MS 300
#define WAIT_MAX_S   (6 * 3600)
#define MAX_CHANGES  200

static int plugin_base(const struct bwctl_args *args, char **base)
{
	const char *name = args->plugin ? args->plugin : "dir_ldap";

	*base = NULL;
	size_t n = strlen(name);

	/* Plugin names are identifiers: nothing to escape, and nothing else is accepted. */
	if (n == 0 || n > 64 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
		return bwctl_fail(BWCTL_EXIT_USAGE, "invalid --plugin '%s' (a plugin name: a-z, 0-9 and _)", name);
	*base = bwctl_xasprintf("/api/v1/plugins/%s", name);
	return BWCTL_EXIT_OK;
}

static void line(const char *label, const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	char *s;

	if (!v || json_is_null(v))
		return;
	s = bwctl_cell(obj, key, "-");
	printf("%-14s %s\n", label, s);
	free(s);
}

/* ---- test */

int bwctl_cmd_directory_test(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply = {0};
	char *base, *path;
	const json_t *tls, *search, *bind;
	bool ok;
	int rc = plugin_base(args, &base);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	path = bwctl_xasprintf("%s/test", base);
	rc = bwctl_send_json(ctx, "POST", path, NULL, &reply);
	free(path);
	free(base);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (!json_is_boolean(json_object_get(reply.json, "ok"))) {
		rc = bwctl_unexpected(ctx, "no \"ok\" in the directory test result");
		goto out;
	}
	ok = json_is_true(json_object_get(reply.json, "ok"));
	if (ctx->json) {
		bwctl_print_json(reply.json);
	} else {
		printf("%-14s %s\n", "Result:", ok ? "ok" : "FAILED");
		line("URL:", reply.json, "url");
		tls = json_object_get(reply.json, "tls");
		if (json_is_object(tls)) {
			line("TLS version:", tls, "version");
			line("Cipher:", tls, "cipher");
			line("Server:", tls, "peer_subject");
			line("Issuer:", tls, "peer_issuer");
			line("Valid until:", tls, "not_after");
			line("Verified:", tls, "verified");
		}
		bind = json_object_get(reply.json, "bind");
		if (json_is_string(bind))
			line("Bind:", reply.json, "bind");
		else if (json_is_object(bind))
			printf("%-14s %s\n", "Bind:", "failed (see the error)");
		search = json_object_get(reply.json, "search");
		if (json_is_object(search)) {
			char *b = bwctl_cell(search, "base_dn", "-"), *n = bwctl_cell(search, "entries", "?");

			printf("%-14s %s entr%s under %s\n", "Search:", n, strcmp(n, "1") == 0 ? "y" : "ies", b);
			free(b);
			free(n);
		}
		line("Time (ms):", reply.json, "elapsed_ms");
		line("Error:", reply.json, "error");
	}
	if (!ok)
		rc = BWCTL_EXIT_FAIL;
out:
	bwctl_reply_free(&reply);
	return rc;
}

/* ---- sync */

static void print_sync_result(const json_t *last)
{
	const json_t *changes = json_object_get(last, "changes"), *c;
	char *mode = bwctl_cell(last, "mode", "?");
	size_t i;

	printf("Sync %s: %s", json_is_string(json_object_get(last, "error")) ? "failed" : "finished", mode);
	free(mode);
	{
		static const char *const counts[] = {"added", "updated", "removed", "disabled"};

		for (size_t k = 0; k < 4; k++) {
			char *v = bwctl_cell(last, counts[k], "0");

			printf(", %s %s", counts[k], v);
			free(v);
		}
	}
	printf("\n");
	line("Started:", last, "started_at");
	line("Finished:", last, "finished_at");
	line("Error:", last, "error");
	json_array_foreach(changes, i, c)
	{
		char *kind = bwctl_cell(c, "kind", "?"), *name = bwctl_cell(c, "name", "?"),
		     *change = bwctl_cell(c, "change", "?"), *guid = bwctl_cell(c, "guid", "-");

		if (i == MAX_CHANGES)
			break;
		printf("  %-7s %-6s %s (%s)\n", change, kind, name, guid);
		free(kind);
		free(name);
		free(change);
		free(guid);
	}
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

int bwctl_cmd_directory_sync(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	struct bwctl_reply reply = {0};
	char *base, *path, *sync_id = NULL, last_progress[256] = "";
	json_t *body;
	time_t deadline;
	int rc = plugin_base(args, &base);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	path = bwctl_xasprintf("%s/sync", base);
	body = json_pack("{s:b}", "full", args->full);
	rc = bwctl_send_json(ctx, "POST", path, body, &reply);
	json_decref(body);
	if (rc != BWCTL_EXIT_OK)
		goto out;
	if (json_is_string(json_object_get(reply.json, "sync_id")))
		sync_id = bwctl_xstrdup(json_string_value(json_object_get(reply.json, "sync_id")));
	if (!args->wait) {
		if (ctx->json) {
			bwctl_print_json(reply.json);
		} else {
			char *id = bwctl_cell(reply.json, "sync_id", "?");

			printf("Started a%s directory sync: %s (follow it with 'bulwarkctl directory sync --wait' "
			       "or the plugin's GET sync)\n",
			       args->full ? " full" : "n incremental", id);
			free(id);
		}
		goto out;
	}
	/* --wait: poll GET sync until this sync is over. */
	deadline = time(NULL) + WAIT_MAX_S;
	for (;;) {
		const char *state;
		const json_t *last, *progress;
		const char *last_id;

		bwctl_reply_free(&reply);
		rc = bwctl_get_json(ctx, path, &reply);
		if (rc != BWCTL_EXIT_OK)
			goto out;
		state = json_string_value(json_object_get(reply.json, "state"));
		last = json_object_get(reply.json, "last");
		last_id = json_string_value(json_object_get(last, "id"));
		if (!state) {
			rc = bwctl_unexpected(ctx, "no \"state\" in the sync status");
			goto out;
		}
		progress = json_object_get(reply.json, "progress");
		if (strcmp(state, "running") == 0 && json_is_object(progress) && !ctx->json && isatty(STDERR_FILENO)) {
			char *text = json_dumps(progress, JSON_COMPACT | JSON_SORT_KEYS);

			if (text && strcmp(text, last_progress) != 0) {
				char *phase = bwctl_cell(progress, "phase", "-"),
				     *u = bwctl_cell(progress, "users", "0"), *g = bwctl_cell(progress, "groups", "0");

				fprintf(stderr, "sync: %s, %s users, %s groups\n", phase, u, g);
				snprintf(last_progress, sizeof last_progress, "%s", text);
				free(phase);
				free(u);
				free(g);
			}
			free(text);
		}
		if (strcmp(state, "running") != 0 && (!sync_id || !last_id || strcmp(last_id, sync_id) == 0))
			break;
		if (time(NULL) > deadline) {
			rc = bwctl_fail(BWCTL_EXIT_FAIL, "the sync is still running after %d hours; stopped waiting",
			                WAIT_MAX_S / 3600);
			goto out;
		}
		sleep_ms(WAIT_POLL_MS);
	}
	{
		const json_t *last = json_object_get(reply.json, "last");
		bool failed = strcmp(json_string_value(json_object_get(reply.json, "state")), "failed") == 0 ||
		              json_is_string(json_object_get(last, "error"));

		if (ctx->json)
			bwctl_print_json(reply.json);
		else if (json_is_object(last))
			print_sync_result(last);
		else
			printf("Sync over (state %s)\n", json_string_value(json_object_get(reply.json, "state")));
		if (failed)
			rc = BWCTL_EXIT_FAIL;
	}
out:
	bwctl_reply_free(&reply);
	free(sync_id);
	free(path);
	free(base);
	return rc;
}

/* ---- users and groups: every page, then one table (or one JSON document) */

static int fetch_all(struct bwctl_ctx *ctx, const char *base_path, const char *key, const char *query, long limit,
                     json_t **out)
{
	const char *const keys[] = {key, NULL};
	json_t *all = json_array();
	char *after = NULL;
	int rc = BWCTL_EXIT_OK;

	for (int page = 0; page < MAX_PAGES; page++) {
		struct bwctl_reply reply = {0};
		char *path = bwctl_xstrdup(base_path), n[24];
		long want = limit - (long)json_array_size(all);
		const json_t *list, *next;
		size_t got;

		snprintf(n, sizeof n, "%ld", want < PAGE_SIZE ? want : PAGE_SIZE);
		bwctl_query_add(&path, "limit", n);
		bwctl_query_add(&path, "q", query);
		bwctl_query_add(&path, "after", after);
		rc = bwctl_get_list(ctx, path, keys, false, NULL, &reply, &list);
		free(path);
		if (rc != BWCTL_EXIT_OK)
			break;
		got = json_array_size(list);
		json_array_extend(all, (json_t *)list);
		next = json_object_get(reply.json, "next_after");
		free(after);
		after =
		    json_is_string(next) && json_string_length(next) ? bwctl_xstrdup(json_string_value(next)) : NULL;
		bwctl_reply_free(&reply);
		if (!after || (long)json_array_size(all) >= limit || got == 0)
			break;
	}
	free(after);
	while ((long)json_array_size(all) > limit)
		json_array_remove(all, json_array_size(all) - 1);
	if (rc != BWCTL_EXIT_OK) {
		json_decref(all);
		return rc;
	}
	*out = all;
	return BWCTL_EXIT_OK;
}

static int list_entries(struct bwctl_ctx *ctx, const struct bwctl_args *args, const char *what, const char *query,
                        int ncols, const char *const *headers, bwctl_row_fn row)
{
	json_t *all = NULL;
	char *base, *path;
	long limit = MAX_LIST;
	int rc = plugin_base(args, &base);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (args->limit && (rc = bwctl_parse_limit_opt(args->limit, MAX_LIST, &limit)) != BWCTL_EXIT_OK) {
		free(base);
		return rc;
	}
	path = bwctl_xasprintf("%s/%s", base, what);
	rc = fetch_all(ctx, path, what, query, limit, &all);
	free(path);
	free(base);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (ctx->json) {
		json_t *doc = json_pack("{s:O}", what, all);

		bwctl_print_json(doc);
		json_decref(doc);
	} else {
		bwctl_list_table(all, ncols, headers, row);
	}
	json_decref(all);
	return BWCTL_EXIT_OK;
}

static void user_row(const json_t *u, char **cells)
{
	cells[0] = bwctl_cell(u, "login", "-");
	cells[1] = bwctl_cell(u, "display_name", "-");
	cells[2] = bwctl_cell(u, "mail", "-");
	cells[3] = bwctl_cell(u, "upn", "-");
	cells[4] = bwctl_cell(u, "disabled", "no");
	cells[5] = bwctl_cell(u, "groups", "-");
}

int bwctl_cmd_directory_users(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"LOGIN", "NAME", "MAIL", "UPN", "DISABLED", "GROUPS"};

	return list_entries(ctx, args, "users", args->query, 6, headers, user_row);
}

static void dgroup_row(const json_t *g, char **cells)
{
	cells[0] = bwctl_cell(g, "name", "-");
	cells[1] = bwctl_cell(g, "members", "0");
	cells[2] = bwctl_cell(g, "nested_groups", "-");
	cells[3] = bwctl_cell(g, "device_group", "-");
	cells[4] = bwctl_cell(g, "dn", "-");
}

int bwctl_cmd_directory_groups(struct bwctl_ctx *ctx, const struct bwctl_args *args)
{
	static const char *const headers[] = {"NAME", "MEMBERS", "NESTED GROUPS", "DEVICE GROUP", "DN"};

	return list_entries(ctx, args, "groups", NULL, 5, headers, dgroup_row);
}
