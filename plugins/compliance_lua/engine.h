/* engine.h: the compliance rules engine: loads Lua rule files into one sandboxed Lua state and evaluates
 * every rule against a device (a JSON object), giving pass / fail / error / not_applicable per rule.
 *
 * Sandbox: base functions without load/require/pcall/metatables/collectgarbage, plus string, table, math
 * and utf8 behind read-only proxies; globals are frozen once a file is loaded; the device is a read-only
 * view that stops working when its evaluation ends. Each rule evaluation has an instruction budget (count
 * hook, also charged for memory allocated and for the data C library functions walk), the whole state has
 * a memory cap (custom allocator). A rule that errors, loops or runs out of memory gets BW_RULE_ERROR with
 * the message and "file:line:"; the other rules still run.
 *
 * Threads: an engine is one lua_State and is NOT thread-safe: create one per worker and reuse it. */
#ifndef BW_RULES_ENGINE_H
#define BW_RULES_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include <bulwark/errors.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BW_RULES_DEFAULT_MEMORY       (32u * 1024 * 1024) /* bytes per Lua state */
#define BW_RULES_DEFAULT_INSTRUCTIONS 100000L             /* per rule evaluation */
#define BW_RULES_DEFAULT_MAX_RULES    1000
#define BW_RULES_MAX_FILE             (1024 * 1024) /* bytes of one rule file */
#define BW_RULES_MESSAGE_MAX          256

/* Zero fields take the defaults above; a NULL pointer takes every default. */
struct bw_rules_limits {
	size_t memory_bytes;
	long instructions;
	size_t max_rules;
};

enum bw_rule_platform { BW_RULE_ANDROID = 1u << 0, BW_RULE_IOS = 1u << 1 };

enum bw_rule_verdict { BW_RULE_PASS, BW_RULE_FAIL, BW_RULE_ERROR, BW_RULE_NOT_APPLICABLE };

/* A loaded rule's declaration; owned by the engine, valid until the engine is freed. */
struct bw_rule_info {
	const char *id;             /* [a-z0-9-]{1,64}, unique in the engine */
	const char *title;          /* non-empty */
	const char *description;    /* optional longer text ("" when absent) */
	const char *severity;       /* low, medium, high or critical */
	unsigned platforms;         /* BW_RULE_* bits; 0: every platform */
	const char *const *actions; /* notify, mark_noncompliant, block_mail, command:<type> */
	size_t nactions;
	const char *source; /* the file name given at load */
	int line;           /* of the rule { ... } call */
};

struct bw_rule_result {
	const struct bw_rule_info *rule;
	enum bw_rule_verdict verdict;
	/* error: "file:line: message"; fail: the optional second value the check returned; else "". */
	char message[BW_RULES_MESSAGE_MAX];
};

typedef struct bw_rules_engine bw_rules_engine;

/* A new engine with an empty rule set; NULL with `err` set on failure. */
bw_rules_engine *bw_rules_engine_new(const struct bw_rules_limits *lim, bw_error *err);
void bw_rules_engine_free(bw_rules_engine *e);

/* Loads the rules a file declares. All or nothing: on any error (syntax, a bad declaration, a duplicate
 * id, a runtime error in the file's top level) no rule of the file is kept and `err` says
 * "name:line: what". `name` is used in messages (chunk name). Binary chunks are refused. */
int bw_rules_load_file(bw_rules_engine *e, const char *path, bw_error *err);
int bw_rules_load_string(bw_rules_engine *e, const char *name, const char *text, size_t len, bw_error *err);

size_t bw_rules_count(const bw_rules_engine *e);
const struct bw_rule_info *bw_rules_info(const bw_rules_engine *e, size_t i); /* NULL when out of range */

/* Evaluates every rule (in load order) against `device` (borrowed; not kept). Fills results[i] for
 * i < min(n, bw_rules_count(e)). Returns BW_OK, or BW_E_INVALID when device is not a JSON object. Rule
 * failures are verdicts, not errors. */
int bw_rules_evaluate(bw_rules_engine *e, json_t *device, struct bw_rule_result *results, size_t n);

/* The clock used by days_since and count_findings: a fixed Unix time (tests, `rules test --now`), or 0 for
 * the real time read at each bw_rules_evaluate. */
void bw_rules_set_now(bw_rules_engine *e, int64_t now);

/* Bytes the Lua state holds now. */
size_t bw_rules_memory(const bw_rules_engine *e);

/* Version comparison as the Lua helpers do it: numeric components split by '.', missing ones are 0
 * ("12" == "12.0.0"), an optional leading 'v', anything after the numbers (a vendor suffix such as
 * "-samsung" or " (build 21A)") is ignored. *out is -1, 0 or 1. BW_E_INVALID when a string does not start
 * with a number. */
int bw_rules_version_cmp(const char *a, const char *b, int *out);

const char *bw_rule_verdict_name(enum bw_rule_verdict v); /* "pass", "fail", "error", "not_applicable" */

#ifdef __cplusplus
}
#endif
#endif
