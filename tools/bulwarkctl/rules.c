/* rules.c: the offline `bulwarkctl rules check` and `rules test` commands: they load rule files into the
 * same sandboxed engine the server uses (plugins/compliance_lua) and need no server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "commands.h"
#include "engine.h"
#include "output.h"

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
	return json_pack("{s:s,s:s,s:s,s:s,s:s,s:i,s:o}", "id", ri->id, "title", ri->title, "severity", ri->severity,
	                 "platforms", platforms_text(ri->platforms), "file", ri->source, "line", ri->line, "actions",
	                 actions);
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
