/* session.h: the saved login sessions of bulwarkctl, one per server, kept in
 * $XDG_CONFIG_HOME/bulwark/session.json (default ~/.config/bulwark/session.json), mode 0600. */
#ifndef BWCTL_SESSION_H
#define BWCTL_SESSION_H

#include <stdbool.h>

#include <bulwark/errors.h>

#define BWCTL_SESSION_MAX_FILE (1024 * 1024)

struct bwctl_session {
	char *token; /* secret: never printed */
	char *user;
	char *role;
	char *expires_at; /* RFC 3339, or NULL */
};

/* The session file's path (malloc'd), from XDG_CONFIG_HOME, HOME or the password database. */
int bwctl_session_path(char **path, bw_error *err);

/* Loads the session saved for `server`. *found is false (and BW_OK returned) when there is none.
 * Refuses a file that is not a regular file owned by the user, or that group or others can read. */
int bwctl_session_load(const char *server, struct bwctl_session *out, bool *found, bw_error *err);

/* Saves `s` as the session for `server`, keeping other servers' sessions. Creates the directories
 * with mode 0700 and replaces the file atomically (temporary file with mode 0600, then rename). */
int bwctl_session_save(const char *server, const struct bwctl_session *s, bw_error *err);

/* Forgets the session for `server`; *removed says whether there was one. */
int bwctl_session_remove(const char *server, bool *removed, bw_error *err);

/* Frees the strings, wiping the token. */
void bwctl_session_clear(struct bwctl_session *s);

#endif
