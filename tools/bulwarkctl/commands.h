/* commands.h: the bulwarkctl commands. Each takes the resolved context and its parsed arguments,
 * prints its result on stdout (table, text or --json) and returns the process exit status. */
#ifndef BWCTL_COMMANDS_H
#define BWCTL_COMMANDS_H

#include <jansson.h>

#include "bwctl.h"

typedef int (*bwctl_command_fn)(struct bwctl_ctx *ctx, const struct bwctl_args *args);

int bwctl_cmd_login(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_logout(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_whoami(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_health(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_plugins(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_admins_add(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_admins_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_admins_remove(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_tokens_create(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_tokens_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_tokens_revoke(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_db_backup(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_audit(struct bwctl_ctx *ctx, const struct bwctl_args *args);

/* Devices and enrollment. */
int bwctl_cmd_keys_create(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_keys_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_keys_revoke(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_invitations_create(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_invitations_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_outbox(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_allowlist_add(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_allowlist_remove(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_allowlist_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_allowlist_enable(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_allowlist_disable(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_refusals(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_show(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_lock(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_wipe(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_locate(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_scan(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_update(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_sync(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_unenroll(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_commands_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_commands_show(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_commands_cancel(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_logs(struct bwctl_ctx *ctx, const struct bwctl_args *args);

/* Compliance rules, offline (rules.c): no server, token or TLS involved. */
int bwctl_cmd_rules_check(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_rules_test(struct bwctl_ctx *ctx, const struct bwctl_args *args);

/* Compliance rules on the server (rules.c): the compliance_lua plugin's API, authenticated like the rest. */
int bwctl_cmd_rules_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_rules_upload(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_rules_enable(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_rules_disable(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_rules_results(struct bwctl_ctx *ctx, const struct bwctl_args *args);

/* The options only the server-side rules commands take (--name, --rule), filled by main.c before the command
 * runs. They live here rather than in struct bwctl_args (bwctl.h) to keep that shared struct untouched; move
 * them there when it is next edited. */
struct bwctl_rules_opts {
	const char *name; /* rules upload --name */
	const char *rule; /* rules results --rule */
};
extern struct bwctl_rules_opts bwctl_rules_opts;

/* Groups and policies (policies.c). */
int bwctl_cmd_groups_list(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_groups_tree(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_groups_add(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_groups_rename(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_groups_move(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_groups_remove(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_groups_show(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_policies_get(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_policies_set(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_policies_history(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_policies_diff(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_policies_status(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_policies_catalog(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_devices_move(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_push_test(struct bwctl_ctx *ctx, const struct bwctl_args *args);

/* The directory plugin (directory.c): /api/v1/plugins/<--plugin, default dir_ldap>/... */
int bwctl_cmd_directory_test(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_directory_sync(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_directory_users(struct bwctl_ctx *ctx, const struct bwctl_args *args);
int bwctl_cmd_directory_groups(struct bwctl_ctx *ctx, const struct bwctl_args *args);

/* Helpers of commands.c shared with the other command files. */
struct bwctl_reply;
/* A path segment: non-empty, not "." or ".." (exit 2 otherwise). */
int bwctl_check_segment(const char *what, const char *value);
/* A copy of server text fit for the terminal (free it). */
char *bwctl_clean(const char *s);
int bwctl_unexpected(const struct bwctl_ctx *ctx, const char *what);
/* Authenticated GET; a non-2xx answer is reported and its exit code returned. */
int bwctl_get_json(struct bwctl_ctx *ctx, const char *path, struct bwctl_reply *reply);
/* Authenticated call with a JSON body (may be NULL). */
int bwctl_send_json(struct bwctl_ctx *ctx, const char *method, const char *path, const json_t *body,
                    struct bwctl_reply *reply);
/* Fills the `ncols` (at most 16) malloc'd cells of one table row from a list item. */
typedef void (*bwctl_row_fn)(const json_t *item, char **cells);
/* Prints the objects of `list` as a table, one row each; other items are skipped. */
void bwctl_list_table(const json_t *list, int ncols, const char *const *headers, bwctl_row_fn row);
/* Finds the list of a 2xx reply: the reply itself when `bare` and it is an array, else the first array among
 * reply[keys] (NULL-terminated). Without one the reply is freed and "unexpected answer" reported with
 * `missing` (NULL: no "<keys[0]>" list). */
int bwctl_reply_list(const struct bwctl_ctx *ctx, struct bwctl_reply *reply, const char *const *keys, bool bare,
                     const char *missing, const json_t **list);
/* Authenticated GET of `path` and bwctl_reply_list; on failure the reply is already freed. */
int bwctl_get_list(struct bwctl_ctx *ctx, const char *path, const char *const *keys, bool bare, const char *missing,
                   struct bwctl_reply *reply, const json_t **list);
/* bwctl_get_list, then --json prints the reply, else a table of the list built by `row`. */
int bwctl_list_print(struct bwctl_ctx *ctx, const char *path, const char *const *keys, bool bare, const char *missing,
                     int ncols, const char *const *headers, bwctl_row_fn row);
/* bwctl_list_print of reply[list_key]. */
int bwctl_list_command(struct bwctl_ctx *ctx, const char *path, const char *list_key, int ncols,
                       const char *const *headers, bwctl_row_fn row);
/* GET /api/v1/<collection>/<id> and show it as "key: value" lines (or --json); `what` names the id. */
int bwctl_show_command(struct bwctl_ctx *ctx, const char *collection, const char *what, const char *id);
void bwctl_print_object(const json_t *obj);
/* "/api/v1/<collection>/<escaped id><suffix>" after bwctl_check_segment. */
int bwctl_object_path(const char *collection, const char *what, const char *id, const char *suffix, char **path);
/* Appends "?name=value" or "&name=value" (URL-encoded) when value is not NULL. */
void bwctl_query_add(char **path, const char *name, const char *value);
/* The first of `keys` (NULL-terminated) present in obj as a cell. */
char *bwctl_cell_any(const json_t *obj, const char *const *keys, const char *if_null);
/* --limit: 1..max (exit 2 otherwise). */
int bwctl_parse_limit_opt(const char *value, long max, long *out);
/* GET `path` and check the answer is a JSON object (else "unexpected answer": `not_object`); on failure
 * the reply is already freed. */
int bwctl_get_object(struct bwctl_ctx *ctx, const char *path, const char *not_object, struct bwctl_reply *reply);

/* "30d", "12h", "90m", "3600s" or plain seconds; at most ten years. */
bool bwctl_parse_duration(const char *s, long long *seconds);

#endif
