/* session.c: bulwarkctl's session file. It holds bearer tokens, so it is read only when it is a
 * regular file of ours that nobody else can read, and it is always written whole to a private
 * temporary file that then replaces the old one, so a crash never leaves a half-written file. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "bwctl.h"
#include "session.h"

#define FILE_VERSION 1

/* $XDG_CONFIG_HOME/bulwark, else $HOME/.config/bulwark. A relative XDG_CONFIG_HOME is ignored,
 * as the XDG base directory specification asks. */
static char *config_dir(bw_error *err)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");

	if (xdg && xdg[0] == '/')
		return bwctl_xasprintf("%s/bulwark", xdg);
	if (!home || home[0] != '/') {
		struct passwd *pw = getpwuid(getuid());

		home = pw ? pw->pw_dir : NULL;
	}
	if (!home || home[0] != '/') {
		bw_error_set(err, BW_E_CONFIG, "cannot find the home directory: set HOME or XDG_CONFIG_HOME");
		return NULL;
	}
	return bwctl_xasprintf("%s/.config/bulwark", home);
}

int bwctl_session_path(char **path, bw_error *err)
{
	char *dir = config_dir(err);

	if (!dir)
		return BW_E_CONFIG;
	*path = bwctl_xasprintf("%s/session.json", dir);
	free(dir);
	return BW_OK;
}

/* Reads and parses the file; *root is NULL when it does not exist. */
static int read_file(const char *path, json_t **root, bw_error *err)
{
	struct stat st;
	json_error_t jerr;
	char *buf;
	size_t len = 0;
	int fd;

	*root = NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return BW_OK;
		if (errno == ELOOP)
			return bw_error_set(err, BW_E_DENIED, "refusing to use session file %s: it is a symbolic link",
			                    path);
		return bw_error_set(err, BW_E_IO, "cannot open session file %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) != 0) {
		int e = errno;

		close(fd);
		return bw_error_set(err, BW_E_IO, "cannot examine session file %s: %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return bw_error_set(err, BW_E_DENIED, "refusing to use session file %s: it is not a regular file",
		                    path);
	}
	if (st.st_uid != geteuid()) {
		close(fd);
		return bw_error_set(err, BW_E_DENIED,
		                    "refusing to use session file %s: it belongs to uid %u, not to you", path,
		                    (unsigned)st.st_uid);
	}
	if (st.st_mode & 077) {
		close(fd);
		return bw_error_set(err, BW_E_DENIED,
		                    "refusing to use session file %s: group or others can access it (mode %04o); "
		                    "run 'chmod 600 %s', or delete it and log in again",
		                    path, (unsigned)(st.st_mode & 07777), path);
	}
	if (st.st_size > BWCTL_SESSION_MAX_FILE) {
		close(fd);
		return bw_error_set(err, BW_E_LIMIT, "session file %s is too large (%lld bytes)", path,
		                    (long long)st.st_size);
	}
	buf = bwctl_xmalloc((size_t)st.st_size + 1);
	while (len < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;

			close(fd);
			bwctl_secure_free(buf);
			return bw_error_set(err, BW_E_IO, "cannot read session file %s: %s", path, strerror(e));
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	*root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	bwctl_secure_free(buf);
	if (!*root)
		return bw_error_set(err, BW_E_CONFIG,
		                    "session file %s is not valid JSON (line %d: %s); delete it and log in again", path,
		                    jerr.line, jerr.text);
	if (!json_is_object(*root) || !json_is_object(json_object_get(*root, "sessions"))) {
		json_decref(*root);
		*root = NULL;
		return bw_error_set(err, BW_E_CONFIG,
		                    "session file %s has no \"sessions\" object; delete it and log in again", path);
	}
	return BW_OK;
}

/* mkdir -p with mode 0700 for what it creates; the last directory must be ours and private
 * enough that nobody else can swap files in it. */
static int ensure_dir(const char *dir, bw_error *err)
{
	char *p = bwctl_xstrdup(dir);
	struct stat st;

	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;

			*s = '\0';
			if (mkdir(p, 0700) != 0 && errno != EEXIST) {
				int e = errno;

				bw_error_set(err, BW_E_IO, "cannot create directory %s: %s", p, strerror(e));
				free(p);
				return BW_E_IO;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	free(p);
	if (lstat(dir, &st) != 0)
		return bw_error_set(err, BW_E_IO, "cannot examine directory %s: %s", dir, strerror(errno));
	if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022))
		return bw_error_set(
		    err, BW_E_DENIED,
		    "refusing to save the session in %s: it must be a directory of yours that only you can "
		    "write to (expected mode 0700)",
		    dir);
	return BW_OK;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Writes `root` to a fresh 0600 file next to `path`, syncs it, then renames it over `path`. */
static int write_file(const char *dir, const char *path, const json_t *root, bw_error *err)
{
	char *tmp = bwctl_xasprintf("%s/.session.json.XXXXXX", dir);
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
	int fd = -1, rc = BW_OK;
	bool created = false;

	if (!text) {
		rc = bw_error_set(err, BW_E_NOMEM, "cannot encode the session file");
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
	if (fd < 0) {
		rc = bw_error_set(err, BW_E_IO, "cannot create a temporary file in %s: %s", dir, strerror(errno));
		goto out;
	}
	created = true;
	if (fchmod(fd, 0600) != 0 || write_all(fd, text, strlen(text)) != 0 || write_all(fd, "\n", 1) != 0 ||
	    fsync(fd) != 0) {
		rc = bw_error_set(err, BW_E_IO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = bw_error_set(err, BW_E_IO, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rc = bw_error_set(err, BW_E_IO, "cannot replace %s: %s", path, strerror(errno));
		goto out;
	}
	/* Make the rename itself durable; a failure here loses nothing already written. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	fd = -1;
	created = false;
out:
	if (fd >= 0)
		close(fd);
	if (created)
		unlink(tmp);
	free(tmp);
	bwctl_secure_free(text);
	return rc;
}

static char *dup_string(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? bwctl_xstrdup(s) : NULL;
}

int bwctl_session_load(const char *server, struct bwctl_session *out, bool *found, bw_error *err)
{
	char *path = NULL;
	json_t *root = NULL, *entry;
	int rc;

	memset(out, 0, sizeof *out);
	*found = false;
	rc = bwctl_session_path(&path, err);
	if (rc == BW_OK)
		rc = read_file(path, &root, err);
	if (rc != BW_OK || !root)
		goto out;
	entry = json_object_get(json_object_get(root, "sessions"), server);
	if (!entry)
		goto out;
	if (!json_is_object(entry) || !json_is_string(json_object_get(entry, "token")) ||
	    json_string_length(json_object_get(entry, "token")) == 0) {
		rc = bw_error_set(err, BW_E_CONFIG, "the session for %s in %s is damaged; log in again", server, path);
		goto out;
	}
	out->token = dup_string(entry, "token");
	out->user = dup_string(entry, "user");
	out->role = dup_string(entry, "role");
	out->expires_at = dup_string(entry, "expires_at");
	*found = true;
out:
	json_decref(root);
	free(path);
	return rc;
}

int bwctl_session_save(const char *server, const struct bwctl_session *s, bw_error *err)
{
	char *dir = NULL, *path = NULL;
	json_t *root = NULL, *entry;
	int rc;

	dir = config_dir(err);
	if (!dir)
		return BW_E_CONFIG;
	path = bwctl_xasprintf("%s/session.json", dir);
	rc = ensure_dir(dir, err);
	if (rc == BW_OK)
		rc = read_file(path, &root, err);
	if (rc != BW_OK)
		goto out;
	if (!root)
		root = json_pack("{s:i, s:{}}", "version", FILE_VERSION, "sessions");
	entry = json_pack("{s:s, s:s?, s:s?, s:s?}", "token", s->token, "user", s->user, "role", s->role, "expires_at",
	                  s->expires_at);
	if (!root || !entry) {
		json_decref(entry);
		rc = bw_error_set(err, BW_E_NOMEM, "cannot build the session file");
		goto out;
	}
	/* set_new takes the entry even when it fails. */
	if (json_object_set_new(json_object_get(root, "sessions"), server, entry) != 0) {
		rc = bw_error_set(err, BW_E_NOMEM, "cannot build the session file (is the server URL valid UTF-8?)");
		goto out;
	}
	rc = write_file(dir, path, root, err);
out:
	json_decref(root);
	free(path);
	free(dir);
	return rc;
}

int bwctl_session_remove(const char *server, bool *removed, bw_error *err)
{
	char *dir = NULL, *path = NULL;
	json_t *root = NULL, *sessions;
	int rc;

	*removed = false;
	dir = config_dir(err);
	if (!dir)
		return BW_E_CONFIG;
	path = bwctl_xasprintf("%s/session.json", dir);
	rc = read_file(path, &root, err);
	if (rc != BW_OK || !root)
		goto out;
	sessions = json_object_get(root, "sessions");
	if (!json_object_get(sessions, server))
		goto out;
	json_object_del(sessions, server);
	rc = write_file(dir, path, root, err);
	*removed = rc == BW_OK;
out:
	json_decref(root);
	free(path);
	free(dir);
	return rc;
}

void bwctl_session_clear(struct bwctl_session *s)
{
	if (!s)
		return;
	bwctl_secure_free(s->token);
	free(s->user);
	free(s->role);
	free(s->expires_at);
	memset(s, 0, sizeof *s);
}
