/* main.c: bulwarkctl's entry point: parses the command line (global options may come before or
 * after the command), resolves server, CA and token from options, environment and defaults, and
 * dispatches to commands.c. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "bwctl.h"
#include "commands.h"
#include "http.h"

/* Options; the command ones are allowed only where a command's mask says so. */
enum {
	OPT_USER = 1u << 0,
	OPT_ROLE = 1u << 1,
	OPT_EXPIRES = 1u << 2,
	OPT_LIMIT = 1u << 3,
	OPT_SERVER = 1u << 4,
	OPT_CA = 1u << 5,
	OPT_TOKEN = 1u << 6,
	OPT_JSON = 1u << 7,
	OPT_HELP = 1u << 8,
	OPT_VERSION = 1u << 9,
	OPT_GROUP = 1u << 10,
	OPT_USES = 1u << 11,
	OPT_NOTE = 1u << 12,
	OPT_PLATFORM = 1u << 13,
	OPT_STATUS = 1u << 14,
	OPT_OS = 1u << 15,
	OPT_DEVICE = 1u << 16,
	OPT_TYPE = 1u << 17,
	OPT_SINCE = 1u << 18,
	OPT_UNTIL = 1u << 19,
	OPT_NAME = 1u << 20,
	OPT_RULE = 1u << 21,
	OPT_PARENT = 1u << 22,
	OPT_MOVE_TO = 1u << 23,
	OPT_EFFECTIVE = 1u << 24,
	OPT_STATE = 1u << 25,
	OPT_QUERY = 1u << 26,
	OPT_FULL = 1u << 27,
	OPT_WAIT = 1u << 28,
	OPT_PLUGIN = 1u << 29,
};

/* The options that belong to commands (checked against each command's mask). */
#define COMMAND_OPTIONS                                                                                                \
	(OPT_USER | OPT_ROLE | OPT_EXPIRES | OPT_LIMIT | OPT_GROUP | OPT_USES | OPT_NOTE | OPT_PLATFORM | OPT_STATUS | \
	 OPT_OS | OPT_DEVICE | OPT_TYPE | OPT_SINCE | OPT_UNTIL | OPT_NAME | OPT_RULE | OPT_PARENT | OPT_MOVE_TO |     \
	 OPT_EFFECTIVE | OPT_STATE | OPT_QUERY | OPT_FULL | OPT_WAIT | OPT_PLUGIN)

static const struct option_def {
	const char *name;
	unsigned id;
	bool has_value;
} option_defs[] = {
    {"server", OPT_SERVER, true},
    {"ca", OPT_CA, true},
    {"token", OPT_TOKEN, true},
    {"json", OPT_JSON, false},
    {"help", OPT_HELP, false},
    {"version", OPT_VERSION, false},
    {"user", OPT_USER, true},
    {"role", OPT_ROLE, true},
    {"expires", OPT_EXPIRES, true},
    {"limit", OPT_LIMIT, true},
    {"group", OPT_GROUP, true},
    {"uses", OPT_USES, true},
    {"note", OPT_NOTE, true},
    {"platform", OPT_PLATFORM, true},
    {"status", OPT_STATUS, true},
    {"os", OPT_OS, true},
    {"device", OPT_DEVICE, true},
    {"type", OPT_TYPE, true},
    {"since", OPT_SINCE, true},
    {"until", OPT_UNTIL, true},
    {"name", OPT_NAME, true},
    {"rule", OPT_RULE, true},
    {"parent", OPT_PARENT, true},
    {"move-to", OPT_MOVE_TO, true},
    {"effective", OPT_EFFECTIVE, false},
    {"state", OPT_STATE, true},
    {"query", OPT_QUERY, true},
    {"full", OPT_FULL, false},
    {"wait", OPT_WAIT, false},
    {"plugin", OPT_PLUGIN, true},
};

static const struct command {
	const char *group; /* first word */
	const char *name;  /* second word, or NULL */
	int min_pos, max_pos;
	unsigned options;
	bwctl_command_fn run;
	const char *synopsis;
} commands[] = {
    {"login", NULL, 0, 0, OPT_USER, bwctl_cmd_login, "login --user NAME"},
    {"logout", NULL, 0, 0, 0, bwctl_cmd_logout, "logout"},
    {"whoami", NULL, 0, 0, 0, bwctl_cmd_whoami, "whoami"},
    {"health", NULL, 0, 0, 0, bwctl_cmd_health, "health"},
    {"plugins", NULL, 0, 0, 0, bwctl_cmd_plugins, "plugins"},
    {"admins", "add", 1, 1, OPT_ROLE, bwctl_cmd_admins_add, "admins add NAME [--role administrator|readonly]"},
    {"admins", "list", 0, 0, 0, bwctl_cmd_admins_list, "admins list"},
    {"admins", "remove", 1, 1, 0, bwctl_cmd_admins_remove, "admins remove NAME"},
    {"tokens", "create", 1, 1, OPT_ROLE | OPT_EXPIRES, bwctl_cmd_tokens_create,
     "tokens create NAME [--role administrator|readonly] [--expires DURATION]"},
    {"tokens", "list", 0, 0, 0, bwctl_cmd_tokens_list, "tokens list"},
    {"tokens", "revoke", 1, 1, 0, bwctl_cmd_tokens_revoke, "tokens revoke ID"},
    {"db", "backup", 1, 1, 0, bwctl_cmd_db_backup, "db backup FILE"},
    {"audit", NULL, 0, 0, OPT_LIMIT, bwctl_cmd_audit, "audit [--limit N]"},
    {"keys", "create", 0, 0, OPT_GROUP | OPT_USES | OPT_EXPIRES, bwctl_cmd_keys_create,
     "keys create [--group GROUP] [--uses N] [--expires DURATION]"},
    {"keys", "list", 0, 0, 0, bwctl_cmd_keys_list, "keys list"},
    {"keys", "revoke", 1, 1, 0, bwctl_cmd_keys_revoke, "keys revoke ID"},
    {"invitations", "create", 1, 1, OPT_EXPIRES, bwctl_cmd_invitations_create,
     "invitations create EMAIL [--expires DURATION]"},
    {"invitations", "list", 0, 0, 0, bwctl_cmd_invitations_list, "invitations list"},
    {"outbox", NULL, 0, 0, 0, bwctl_cmd_outbox, "outbox"},
    {"allowlist", "add", 2, 2, OPT_NOTE, bwctl_cmd_allowlist_add, "allowlist add KIND VALUE [--note TEXT]"},
    {"allowlist", "remove", 2, 2, 0, bwctl_cmd_allowlist_remove, "allowlist remove KIND VALUE"},
    {"allowlist", "list", 0, 0, 0, bwctl_cmd_allowlist_list, "allowlist list"},
    {"allowlist", "enable", 0, 0, 0, bwctl_cmd_allowlist_enable, "allowlist enable"},
    {"allowlist", "disable", 0, 0, 0, bwctl_cmd_allowlist_disable, "allowlist disable"},
    {"refusals", NULL, 0, 0, OPT_LIMIT, bwctl_cmd_refusals, "refusals [--limit N]"},
    {"devices", "list", 0, 0, OPT_PLATFORM | OPT_STATUS | OPT_GROUP | OPT_OS | OPT_LIMIT, bwctl_cmd_devices_list,
     "devices list [--platform P] [--status S] [--group G] [--os \">=12.1\"] [--limit N]"},
    {"devices", "show", 1, 1, 0, bwctl_cmd_devices_show, "devices show ID"},
    {"devices", "lock", 1, 1, 0, bwctl_cmd_devices_lock, "devices lock ID"},
    {"devices", "wipe", 1, 1, 0, bwctl_cmd_devices_wipe, "devices wipe ID"},
    {"devices", "locate", 1, 1, 0, bwctl_cmd_devices_locate, "devices locate ID"},
    {"devices", "scan", 1, 1, 0, bwctl_cmd_devices_scan, "devices scan ID"},
    {"devices", "update", 1, 1, 0, bwctl_cmd_devices_update, "devices update ID"},
    {"devices", "sync", 1, 1, 0, bwctl_cmd_devices_sync, "devices sync ID"},
    {"devices", "unenroll", 1, 1, 0, bwctl_cmd_devices_unenroll, "devices unenroll ID"},
    {"devices", "move", 2, 2, 0, bwctl_cmd_devices_move, "devices move DEVICE GROUP"},
    {"commands", "list", 1, 1, 0, bwctl_cmd_commands_list, "commands list DEVICE"},
    {"commands", "show", 1, 1, 0, bwctl_cmd_commands_show, "commands show COMMAND"},
    {"commands", "cancel", 1, 1, 0, bwctl_cmd_commands_cancel, "commands cancel COMMAND"},
    {"logs", NULL, 0, 0, OPT_DEVICE | OPT_TYPE | OPT_SINCE | OPT_UNTIL | OPT_LIMIT, bwctl_cmd_logs,
     "logs [--device ID] [--type TYPE] [--since TIME] [--until TIME] [--limit N]"},
    {"rules", "check", 1, BWCTL_MAX_POS, 0, bwctl_cmd_rules_check, "rules check FILE..."},
    {"rules", "test", 1, BWCTL_MAX_POS, OPT_DEVICE, bwctl_cmd_rules_test, "rules test FILE... --device DEVICE.json"},
    {"rules", "list", 0, 0, 0, bwctl_cmd_rules_list, "rules list"},
    {"rules", "upload", 1, 1, OPT_NAME, bwctl_cmd_rules_upload, "rules upload FILE [--name NAME.lua]"},
    {"rules", "enable", 1, 1, 0, bwctl_cmd_rules_enable, "rules enable NAME"},
    {"rules", "disable", 1, 1, 0, bwctl_cmd_rules_disable, "rules disable NAME"},
    {"rules", "results", 0, 0, OPT_DEVICE | OPT_RULE, bwctl_cmd_rules_results,
     "rules results --device ID | --rule RULE"},
    {"groups", "list", 0, 0, 0, bwctl_cmd_groups_list, "groups list"},
    {"groups", "tree", 0, 0, 0, bwctl_cmd_groups_tree, "groups tree"},
    {"groups", "add", 1, 1, OPT_PARENT, bwctl_cmd_groups_add, "groups add NAME [--parent PARENT]"},
    {"groups", "rename", 2, 2, 0, bwctl_cmd_groups_rename, "groups rename OLD NEW"},
    {"groups", "move", 1, 1, OPT_PARENT, bwctl_cmd_groups_move, "groups move NAME --parent PARENT"},
    {"groups", "remove", 1, 1, OPT_MOVE_TO, bwctl_cmd_groups_remove, "groups remove NAME [--move-to GROUP]"},
    {"groups", "show", 1, 1, 0, bwctl_cmd_groups_show, "groups show NAME"},
    {"policies", "get", 1, 1, OPT_EFFECTIVE, bwctl_cmd_policies_get, "policies get GROUP [--effective]"},
    {"policies", "set", 2, 2, 0, bwctl_cmd_policies_set, "policies set GROUP FILE.json"},
    {"policies", "history", 1, 1, 0, bwctl_cmd_policies_history, "policies history GROUP"},
    {"policies", "diff", 3, 3, 0, bwctl_cmd_policies_diff, "policies diff GROUP FROM TO"},
    {"policies", "status", 0, 0, OPT_GROUP | OPT_STATE, bwctl_cmd_policies_status,
     "policies status [--group GROUP] [--state pending|applied|out_of_sync]"},
    {"policies", "catalog", 0, 0, 0, bwctl_cmd_policies_catalog, "policies catalog"},
    {"push", "test", 1, 1, 0, bwctl_cmd_push_test, "push test DEVICE"},
    {"directory", "test", 0, 0, OPT_PLUGIN, bwctl_cmd_directory_test, "directory test [--plugin NAME]"},
    {"directory", "sync", 0, 0, OPT_PLUGIN | OPT_FULL | OPT_WAIT, bwctl_cmd_directory_sync,
     "directory sync [--full] [--wait] [--plugin NAME]"},
    {"directory", "users", 0, 0, OPT_PLUGIN | OPT_QUERY | OPT_LIMIT, bwctl_cmd_directory_users,
     "directory users [--query TEXT] [--limit N] [--plugin NAME]"},
    {"directory", "groups", 0, 0, OPT_PLUGIN | OPT_LIMIT, bwctl_cmd_directory_groups,
     "directory groups [--limit N] [--plugin NAME]"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

#define MAX_WORDS (BWCTL_MAX_POS + 2)

struct cmdline {
	const char *words[MAX_WORDS];
	int nwords;
	unsigned seen; /* OPT_* given */
	const char *server, *ca, *token;
	struct bwctl_args args;
};

static const char usage_head[] =
    "Usage: bulwarkctl [--server URL] [--ca FILE] [--token TOKEN] [--json] COMMAND [ARGS]\n";

static void print_help(void)
{
	fputs(usage_head, stdout);
	fputs("\nAdministers a Bulwark server through its admin REST API.\n\nCommands:\n", stdout);
	fputs("  login --user NAME             log in (password from BULWARK_PASSWORD or a prompt); saves the session\n"
	      "  logout                        end the session and forget it\n"
	      "  whoami                        show who the token belongs to\n"
	      "  health                        show the server's health (exit 1 unless it is ok)\n"
	      "  plugins                       list the plugins and their state\n"
	      "  admins list                   list administrators\n"
	      "  admins add NAME [--role R]    add an administrator; R is administrator or readonly (default);\n"
	      "                                password from BULWARK_NEW_PASSWORD or a prompt\n"
	      "  admins remove NAME            remove an administrator\n"
	      "  tokens list                   list API tokens\n"
	      "  tokens create NAME [--role R] [--expires DURATION]\n"
	      "                                create an API token (DURATION like 30d, 12h, 90m, 3600s);\n"
	      "                                the token is printed once\n"
	      "  tokens revoke ID              revoke an API token\n"
	      "  db backup FILE                download a copy of the database to FILE\n"
	      "  audit [--limit N]             show the latest audit log entries\n"
	      "  help                          show this help\n"
	      "\nDevices and enrollment:\n"
	      "  keys create [--group G] [--uses N] [--expires DURATION]\n"
	      "                                create an enrollment key (printed once)\n"
	      "  keys list                     list enrollment keys (never the keys themselves)\n"
	      "  keys revoke ID                revoke an enrollment key\n"
	      "  invitations create EMAIL [--expires DURATION]\n"
	      "                                invite EMAIL to enroll (the mail goes to the outbox)\n"
	      "  invitations list              list invitations\n"
	      "  outbox                        list the mail waiting to be sent (--json shows the texts)\n"
	      "  allowlist add KIND VALUE [--note TEXT]\n"
	      "                                allow a device; KIND is imei, meid or wifi_mac\n"
	      "  allowlist remove KIND VALUE   remove a device from the allowlist\n"
	      "  allowlist list                show the allowlist and whether it is enforced\n"
	      "  allowlist enable|disable      enforce the allowlist at enrollment, or stop enforcing it\n"
	      "  refusals [--limit N]          show refused enrollments\n"
	      "  devices list [--platform P] [--status S] [--group G] [--os OPVERSION] [--limit N]\n"
	      "                                list devices; OPVERSION like \">=12.1\" (<, <=, =, >=, >)\n"
	      "  devices show ID               show one device\n"
	      "  devices lock|wipe|locate|scan|update|sync ID\n"
	      "                                queue a command for a device; prints the command id\n"
	      "  devices unenroll ID           unenroll a device and revoke its certificate\n"
	      "  commands list DEVICE          list a device's commands\n"
	      "  commands show COMMAND         show one command and its result\n"
	      "  commands cancel COMMAND       cancel a command that has not finished\n"
	      "  logs [--device ID] [--type T] [--since TIME] [--until TIME] [--limit N]\n"
	      "                                show device event logs (TIME: Unix seconds or RFC 3339)\n"
	      "\nCompliance rules (offline, no server needed):\n"
	      "  rules check FILE...           check rule files (syntax and declarations); list their rules\n"
	      "  rules test FILE... --device DEVICE.json\n"
	      "                                evaluate the rules against a device; prints pass, fail,\n"
	      "                                not_applicable or error: <message> per rule (exit 0 whatever\n"
	      "                                the verdicts; BULWARK_RULES_NOW=<Unix seconds> fixes the clock)\n"
	      "\nCompliance rules on the server (the compliance_lua plugin):\n"
	      "  rules list                    list the loaded rules and those of disabled uploaded files\n"
	      "  rules upload FILE [--name NAME.lua]\n"
	      "                                store a rule file (at most 256 KiB; name: FILE's base name);\n"
	      "                                an invalid file is refused with its file:line\n"
	      "  rules enable|disable NAME     enable or disable an uploaded rule file\n"
	      "  rules results --device ID     a device's verdict per rule and whether it is compliant\n"
	      "  rules results --rule RULE     the devices failing a rule\n"
	      "\nGroups and policies:\n"
	      "  groups list                   list the device groups\n"
	      "  groups tree                   show the groups as a tree\n"
	      "  groups add NAME [--parent P]  create a group (under P, default: the default group)\n"
	      "  groups rename OLD NEW         rename a group\n"
	      "  groups move NAME --parent P   move a group under another parent\n"
	      "  groups remove NAME [--move-to G]\n"
	      "                                delete a group; its devices and subgroups go to G\n"
	      "  groups show NAME              show one group\n"
	      "  devices move DEVICE GROUP     move a device to another group\n"
	      "  policies get GROUP [--effective]\n"
	      "                                a group's own policy document, or the effective one\n"
	      "  policies set GROUP FILE.json  store a new version of a group's policy; invalid fields\n"
	      "                                are listed one by one (exit 1)\n"
	      "  policies history GROUP        the versions of a group's policy\n"
	      "  policies diff GROUP FROM TO   what changed between two versions\n"
	      "  policies status [--group G] [--state pending|applied|out_of_sync]\n"
	      "                                per device: the policy version applied or pending\n"
	      "  policies catalog              the feature-lock catalog (platforms, minimum OS)\n"
	      "\nPush and directory:\n"
	      "  push test DEVICE              send a test wake-up; prints the outcome (exit 1 unless sent)\n"
	      "  directory test                connect, bind and search; shows TLS details (exit 1 on failure)\n"
	      "  directory sync [--full] [--wait]\n"
	      "                                start a directory sync (incremental unless --full); --wait\n"
	      "                                waits for it and prints what changed\n"
	      "  directory users [--query TEXT] [--limit N]\n"
	      "                                list synced directory users\n"
	      "  directory groups [--limit N]  list synced directory groups\n"
	      "                                (directory commands: --plugin NAME, default dir_ldap)\n",
	      stdout);
	fputs("\nOptions (before or after the command):\n"
	      "  --server URL    server admin URL (env BULWARK_SERVER; default " BWCTL_DEFAULT_SERVER ")\n"
	      "  --ca FILE       CA certificate(s) to verify the server (env BULWARK_CA; default var/tls/ca.pem\n"
	      "                  when present, else the system trust store)\n"
	      "  --token TOKEN   API or session token (env BULWARK_TOKEN; default the saved session)\n"
	      "  --json          print the server's JSON instead of tables\n"
	      "  --version       print the version\n"
	      "  -h, --help      show this help\n",
	      stdout);
	fputs("\nExit status: 0 ok, 1 failed or refused, 2 usage error, 3 cannot reach the server or TLS failed,\n"
	      "4 not logged in.\n",
	      stdout);
}

/* Prints the message, then the usage of the command (or the general one). */
static int usage_error(const struct command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage_error(const struct command *cmd, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	bwctl_fail(BWCTL_EXIT_USAGE, "%s", msg);
	if (cmd)
		fprintf(stderr, "Usage: bulwarkctl %s\n", cmd->synopsis);
	else
		fputs(usage_head, stderr);
	fputs("Run 'bulwarkctl help' for the commands and options.\n", stderr);
	return BWCTL_EXIT_USAGE;
}

static const struct option_def *find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof option_defs / sizeof option_defs[0]; i++)
		if (strlen(option_defs[i].name) == len && strncmp(option_defs[i].name, name, len) == 0)
			return &option_defs[i];
	return NULL;
}

static void store_option(struct cmdline *cl, unsigned id, const char *value)
{
	cl->seen |= id;
	switch (id) {
	case OPT_SERVER:
		cl->server = value;
		break;
	case OPT_CA:
		cl->ca = value;
		break;
	case OPT_TOKEN:
		cl->token = value;
		break;
	case OPT_USER:
		cl->args.user = value;
		break;
	case OPT_ROLE:
		cl->args.role = value;
		break;
	case OPT_EXPIRES:
		cl->args.expires = value;
		break;
	case OPT_LIMIT:
		cl->args.limit = value;
		break;
	case OPT_GROUP:
		cl->args.group = value;
		break;
	case OPT_USES:
		cl->args.uses = value;
		break;
	case OPT_NOTE:
		cl->args.note = value;
		break;
	case OPT_PLATFORM:
		cl->args.platform = value;
		break;
	case OPT_STATUS:
		cl->args.status = value;
		break;
	case OPT_OS:
		cl->args.os = value;
		break;
	case OPT_DEVICE:
		cl->args.device = value;
		break;
	case OPT_TYPE:
		cl->args.type = value;
		break;
	case OPT_SINCE:
		cl->args.since = value;
		break;
	case OPT_UNTIL:
		cl->args.until = value;
		break;
	case OPT_NAME:
		bwctl_rules_opts.name = value;
		break;
	case OPT_RULE:
		bwctl_rules_opts.rule = value;
		break;
	case OPT_PARENT:
		cl->args.parent = value;
		break;
	case OPT_MOVE_TO:
		cl->args.move_to = value;
		break;
	case OPT_EFFECTIVE:
		cl->args.effective = true;
		break;
	case OPT_STATE:
		cl->args.state = value;
		break;
	case OPT_QUERY:
		cl->args.query = value;
		break;
	case OPT_FULL:
		cl->args.full = true;
		break;
	case OPT_WAIT:
		cl->args.wait = true;
		break;
	case OPT_PLUGIN:
		cl->args.plugin = value;
		break;
	default:
		break;
	}
}

/* Splits argv into words and options; returns BWCTL_EXIT_OK or a usage error (already printed). */
static int parse_cmdline(int argc, char **argv, struct cmdline *cl)
{
	bool only_words = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!only_words && strcmp(a, "--") == 0) {
			only_words = true;
		} else if (!only_words && (strcmp(a, "-h") == 0)) {
			cl->seen |= OPT_HELP;
		} else if (!only_words && strncmp(a, "--", 2) == 0) {
			const char *name = a + 2, *eq = strchr(name, '=');
			const struct option_def *o = find_option(name, eq ? (size_t)(eq - name) : strlen(name));
			const char *value = NULL;

			if (!o)
				return usage_error(NULL, "unknown option '%s'", a);
			if (!o->has_value && eq)
				return usage_error(NULL, "option --%s takes no value", o->name);
			if (o->has_value) {
				if (eq)
					value = eq + 1;
				else if (i + 1 < argc)
					value = argv[++i];
				else
					return usage_error(NULL, "option --%s needs a value", o->name);
				if (!value[0])
					return usage_error(NULL, "option --%s needs a non-empty value", o->name);
			}
			store_option(cl, o->id, value);
		} else if (!only_words && a[0] == '-' && a[1] != '\0') {
			return usage_error(NULL, "unknown option '%s'", a);
		} else {
			if (cl->nwords == MAX_WORDS)
				return usage_error(NULL, "too many arguments (from '%s')", a);
			cl->words[cl->nwords++] = a;
		}
	}
	return BWCTL_EXIT_OK;
}

/* Finds the command named by the first words; on failure prints why and returns NULL. */
static const struct command *find_command(const struct cmdline *cl, int *consumed)
{
	const char *group = cl->words[0];
	bool group_known = false;

	for (size_t i = 0; i < NCOMMANDS; i++) {
		if (strcmp(commands[i].group, group) != 0)
			continue;
		group_known = true;
		if (!commands[i].name) {
			*consumed = 1;
			return &commands[i];
		}
		if (cl->nwords > 1 && strcmp(commands[i].name, cl->words[1]) == 0) {
			*consumed = 2;
			return &commands[i];
		}
	}
	if (!group_known) {
		usage_error(NULL, "unknown command '%s'", group);
	} else {
		char subs[128] = "";

		for (size_t i = 0; i < NCOMMANDS; i++) {
			if (strcmp(commands[i].group, group) != 0)
				continue;
			if (subs[0])
				strncat(subs, ", ", sizeof subs - strlen(subs) - 1);
			strncat(subs, commands[i].name, sizeof subs - strlen(subs) - 1);
		}
		if (cl->nwords > 1)
			usage_error(NULL, "unknown command '%s %s' (use %s)", group, cl->words[1], subs);
		else
			usage_error(NULL, "'%s' needs a subcommand: %s", group, subs);
	}
	return NULL;
}

/* The base URL without trailing slashes; NULL when it is not a usable https:// URL. */
static char *normalize_server(const char *url)
{
	size_t len = strlen(url);
	char *s;

	if (len > 1024 || strncasecmp(url, "https://", 8) != 0 || len == 8 || url[8] == '/')
		return NULL;
	for (const char *p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '?' || *p == '#')
			return NULL;
	s = bwctl_xstrdup(url);
	while (len > 8 && s[len - 1] == '/')
		s[--len] = '\0';
	return s;
}

static bool is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* var/tls/ca.pem in the current directory, else next to a checkout's build/bin/bulwarkctl. */
static char *default_ca(void)
{
	char exe[PATH_MAX], *path;
	ssize_t n;

	if (is_file("var/tls/ca.pem"))
		return bwctl_xstrdup("var/tls/ca.pem");
	n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (n <= 0)
		return NULL;
	exe[n] = '\0';
	path = bwctl_xasprintf("%s/../../var/tls/ca.pem", dirname(exe));
	if (is_file(path))
		return path;
	free(path);
	return NULL;
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v && v[0] ? v : NULL;
}

/* Fills ctx from options, environment and defaults. */
static int setup_context(const struct cmdline *cl, const struct command *cmd, struct bwctl_ctx *ctx)
{
	const char *server = cl->server ? cl->server : env("BULWARK_SERVER");
	const char *ca = cl->ca ? cl->ca : env("BULWARK_CA");
	const char *token = cl->token ? cl->token : env("BULWARK_TOKEN");
	int fd;

	ctx->json = cl->seen & OPT_JSON;
	ctx->server = normalize_server(server ? server : BWCTL_DEFAULT_SERVER);
	if (!ctx->server)
		return usage_error(cmd, "the server must be an https:// URL without query or fragment, not '%s'%s",
		                   server, cl->server ? "" : " (from BULWARK_SERVER)");
	if (ca) {
		fd = open(ca, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return bwctl_fail(BWCTL_EXIT_UNREACHABLE, "cannot read the CA file %s: %s", ca,
			                  strerror(errno));
		close(fd);
		ctx->ca_file = bwctl_xstrdup(ca);
	} else {
		ctx->ca_file = default_ca();
	}
	if (token) {
		if (!bwctl_token_ok(token))
			return usage_error(cmd,
			                   "the token in %s is malformed (expected printable characters, no spaces)",
			                   cl->token ? "--token" : "BULWARK_TOKEN");
		ctx->token = bwctl_xstrdup(token);
		ctx->token_source = cl->token ? BWCTL_TOKEN_OPTION : BWCTL_TOKEN_ENV;
		ctx->token_resolved = true;
	}
	return BWCTL_EXIT_OK;
}

/* The name of operand `index` (counting command words) in the synopsis, e.g. "NAME". */
static const char *operand_name(const struct command *cmd, int index)
{
	static char word[32];
	const char *p = cmd->synopsis;
	size_t n;

	for (int i = 0; i < index && p; i++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p)
		return "argument";
	n = strcspn(p, " ");
	if (n == 0 || n >= sizeof word)
		return "argument";
	memcpy(word, p, n);
	word[n] = '\0';
	return word;
}

static int run(int argc, char **argv)
{
	struct cmdline cl;
	struct bwctl_ctx ctx;
	const struct command *cmd;
	unsigned bad;
	int consumed = 0, rc;
	bw_error err;

	memset(&cl, 0, sizeof cl);
	memset(&ctx, 0, sizeof ctx);
	rc = parse_cmdline(argc, argv, &cl);
	if (rc != BWCTL_EXIT_OK)
		return rc;
	if ((cl.seen & OPT_HELP) || (cl.nwords > 0 && strcmp(cl.words[0], "help") == 0)) {
		print_help();
		return BWCTL_EXIT_OK;
	}
	if (cl.seen & OPT_VERSION) {
		printf("bulwarkctl %s\n", BWCTL_VERSION);
		return BWCTL_EXIT_OK;
	}
	if (cl.nwords == 0)
		return usage_error(NULL, "no command given");
	cmd = find_command(&cl, &consumed);
	if (!cmd)
		return BWCTL_EXIT_USAGE;

	bad = cl.seen & COMMAND_OPTIONS & ~cmd->options;
	for (size_t i = 0; bad && i < sizeof option_defs / sizeof option_defs[0]; i++)
		if (bad & option_defs[i].id)
			return usage_error(cmd, "option --%s does not apply to '%s%s%s'", option_defs[i].name,
			                   cmd->group, cmd->name ? " " : "", cmd->name ? cmd->name : "");
	if (cl.nwords - consumed < cmd->min_pos)
		return usage_error(cmd, "missing %s", operand_name(cmd, cl.nwords));
	if (cl.nwords - consumed > cmd->max_pos)
		return usage_error(cmd, "unexpected argument '%s'", cl.words[consumed + cmd->max_pos]);
	for (int i = consumed; i < cl.nwords; i++)
		cl.args.pos[cl.args.npos++] = cl.words[i];

	/* rules check and rules test work offline: no server, CA or token to resolve (the other rules commands
	 * talk to the server like the rest). */
	if (cmd->run == bwctl_cmd_rules_check || cmd->run == bwctl_cmd_rules_test) {
		ctx.json = cl.seen & OPT_JSON;
		rc = cmd->run(&ctx, &cl.args);
		if (rc == BWCTL_EXIT_USAGE)
			fprintf(stderr, "Usage: bulwarkctl %s\nRun 'bulwarkctl help' for the commands and options.\n",
			        cmd->synopsis);
		return rc;
	}
	rc = setup_context(&cl, cmd, &ctx);
	if (rc == BWCTL_EXIT_OK && bwctl_http_global_init(&err) != BW_OK)
		rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s", err.message);
	if (rc == BWCTL_EXIT_OK) {
		rc = cmd->run(&ctx, &cl.args);
		bwctl_http_global_cleanup();
		if (rc == BWCTL_EXIT_USAGE)
			fprintf(stderr, "Usage: bulwarkctl %s\nRun 'bulwarkctl help' for the commands and options.\n",
			        cmd->synopsis);
	}
	free(ctx.server);
	free(ctx.ca_file);
	bwctl_secure_free(ctx.token);
	return rc;
}

int main(int argc, char **argv)
{
	int rc;

	/* Request bodies and answers hold passwords and tokens: wipe jansson's memory when freed. */
	json_set_alloc_funcs(malloc, bwctl_secure_free);
	rc = run(argc, argv);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "bulwarkctl: cannot write the output: %s\n", strerror(errno));
		if (rc == BWCTL_EXIT_OK)
			rc = BWCTL_EXIT_FAIL;
	}
	return rc;
}
