/* bwctl.h: state shared by the bulwarkctl sources: exit codes, the resolved context (server, CA,
 * token, output mode), parsed command arguments, and the small error/memory helpers. */
#ifndef BWCTL_H
#define BWCTL_H

#include <stdbool.h>
#include <stddef.h>

#ifndef BWCTL_VERSION
#define BWCTL_VERSION "unknown"
#endif

#define BWCTL_DEFAULT_SERVER "https://127.0.0.1:8444"
#define BWCTL_MAX_POS        64 /* e.g. many rule files for "rules check" */

/* Exit statuses, documented in docs/bulwarkctl.md; scripts rely on them. */
enum bwctl_exit {
	BWCTL_EXIT_OK = 0,
	BWCTL_EXIT_FAIL = 1,        /* the server said no, or the command failed locally */
	BWCTL_EXIT_USAGE = 2,       /* unknown command or option, missing or bad argument */
	BWCTL_EXIT_UNREACHABLE = 3, /* cannot reach the server, or TLS failed */
	BWCTL_EXIT_NOAUTH = 4       /* not logged in, or the token was refused (401) */
};

/* Where the bearer token came from: decides the hint printed when the server refuses it. */
enum bwctl_token_source { BWCTL_TOKEN_NONE, BWCTL_TOKEN_OPTION, BWCTL_TOKEN_ENV, BWCTL_TOKEN_SESSION };

struct bwctl_ctx {
	char *server;  /* base URL, https://, without trailing '/' */
	char *ca_file; /* NULL: the system trust store */
	char *token;   /* NULL until resolved, or when there is none */
	enum bwctl_token_source token_source;
	bool token_resolved;
	bool json;
};

/* Command words removed: pos[] holds the command's own operands. */
struct bwctl_args {
	const char *pos[BWCTL_MAX_POS];
	int npos;
	const char *user;
	const char *role;
	const char *expires;
	const char *limit;
	/* devices and enrollment */
	const char *group;
	const char *uses;
	const char *note;
	const char *platform;
	const char *status;
	const char *os;
	const char *device;
	const char *type;
	const char *since;
	const char *until;
	/* groups, policies, directory */
	const char *parent;
	const char *move_to;
	const char *state;
	const char *query;
	const char *plugin;
	bool effective;
	bool full;
	bool wait;
};

/* Prints "bulwarkctl: <message>" on stderr (control characters replaced, since messages can
 * carry server text) and returns `exit_code`, so callers can `return bwctl_fail(...)`. */
int bwctl_fail(int exit_code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bwctl_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation helpers that exit(1) with a message on failure: a CLI has nothing better to do. */
void *bwctl_xmalloc(size_t size);
void *bwctl_xrealloc(void *p, size_t size);
char *bwctl_xstrdup(const char *s);
char *bwctl_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Frees memory after overwriting it; used for everything that may hold a password or token. */
void bwctl_secure_free(void *p);

#endif
