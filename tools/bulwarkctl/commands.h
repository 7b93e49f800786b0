/* commands.h: the bulwarkctl commands. Each takes the resolved context and its parsed arguments,
 * prints its result on stdout (table, text or --json) and returns the process exit status. */
#ifndef BWCTL_COMMANDS_H
#define BWCTL_COMMANDS_H

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

/* "30d", "12h", "90m", "3600s" or plain seconds; at most ten years. */
bool bwctl_parse_duration(const char *s, long long *seconds);

#endif
