/* host/core/config.c: the configuration loader. The file is Lua 5.4 evaluated in a sandbox
 * (capped memory, an instruction budget, no io/os/debug/package/load), the top-level keys are
 * recorded with their file:line, the values are converted to JSON and the Lua state is closed.
 * bw_config_apply then validates a section against a typed field table and fills an instance.
 *
 * Notes on behaviour that callers may rely on:
 * - Every file name reported is absolute (realpath); included files are shown by their realpath and
 *   `include`/`file` resolve relative paths against the directory of that realpath.
 * - bw_config_section.line is the line where `section =` starts (Lua itself reports the end of a
 *   multi-line statement; we scan the source backwards to find the start).
 * - The built-in names (include, env, file, string, table, math, utf8, type, ...) cannot be
 *   assigned as sections.
 * - pcall/xpcall are not available: otherwise the config could catch the instruction-limit error.
 * - Default values (bw_config_field.default_value) accept: true, false, integers, decimal numbers,
 *   "quoted" or 'quoted' strings (escapes \\ \" \' \n \t), lists of quoted strings { "a", "b" }, and
 *   as a convenience any other bare text is taken as a string (so 30s works for a duration).
 * - A glob `include` that matches nothing is fine; a literal `include "x.lua"` of a missing file is
 *   an error. Directories matched by a glob are skipped. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <jansson.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <lualib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_MEM_LIMIT       ((size_t)16 * 1024 * 1024)
#define CFG_INSTR_LIMIT     10000000L
#define CFG_HOOK_STEP       1000
#define CFG_INCLUDE_DEPTH   8
#define CFG_MAX_FILES       128
#define CFG_FILE_MAX        ((size_t)1024 * 1024) /* one configuration file */
#define CFG_HELPER_FILE_MAX ((size_t)64 * 1024)   /* the `file "path"` helper */
#define CFG_NEST_MAX        16
#define CFG_NAME_MAX        64

/* ------------------------------------------------------------------------------------------ */
/* The loaded configuration */

struct section_data {
	json_t *value; /* object: key -> value */
	json_t *lines; /* object: key -> line of the key */
};

struct bw_config {
	char *path;
	char *base_dir;
	char **pool; /* interned file names (the `file` pointers of entries and sections) */
	size_t npool;
	struct bw_plugin_entry *plugins;
	size_t nplugins;
	struct bw_config_section *sections;
	struct section_data *data;
	size_t nsections;
};

static const char *cfg_intern(bw_config *cfg, const char *s)
{
	for (size_t i = 0; i < cfg->npool; i++)
		if (strcmp(cfg->pool[i], s) == 0)
			return cfg->pool[i];
	char **np = realloc(cfg->pool, (cfg->npool + 1) * sizeof *np);
	if (!np)
		return NULL;
	cfg->pool = np;
	char *dup = strdup(s);
	if (!dup)
		return NULL;
	cfg->pool[cfg->npool++] = dup;
	return dup;
}

/* Secrets end up as JSON strings; wipe them before the memory goes back to malloc. */
static void json_wipe(json_t *v)
{
	if (json_is_string(v)) {
		explicit_bzero((char *)json_string_value(v), json_string_length(v));
	} else if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v); i++)
			json_wipe(json_array_get(v, i));
	} else if (json_is_object(v)) {
		for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it))
			json_wipe(json_object_iter_value(it));
	}
}

void bw_config_free(bw_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->nplugins; i++)
		free((char *)cfg->plugins[i].name);
	free(cfg->plugins);
	for (size_t i = 0; i < cfg->nsections; i++) {
		free((char *)cfg->sections[i].name);
		json_wipe(cfg->data[i].value);
		json_decref(cfg->data[i].value);
		json_decref(cfg->data[i].lines);
	}
	free(cfg->sections);
	free(cfg->data);
	for (size_t i = 0; i < cfg->npool; i++)
		free(cfg->pool[i]);
	free(cfg->pool);
	free(cfg->path);
	free(cfg->base_dir);
	free(cfg);
}

const char *bw_config_base_dir(const bw_config *cfg)
{
	return cfg ? cfg->base_dir : NULL;
}

const char *bw_config_path(const bw_config *cfg)
{
	return cfg ? cfg->path : NULL;
}

size_t bw_config_plugin_count(const bw_config *cfg)
{
	return cfg ? cfg->nplugins : 0;
}

const struct bw_plugin_entry *bw_config_plugin(const bw_config *cfg, size_t i)
{
	return cfg && i < cfg->nplugins ? &cfg->plugins[i] : NULL;
}

size_t bw_config_section_count(const bw_config *cfg)
{
	return cfg ? cfg->nsections : 0;
}

const struct bw_config_section *bw_config_section_at(const bw_config *cfg, size_t i)
{
	return cfg && i < cfg->nsections ? &cfg->sections[i] : NULL;
}

static ssize_t section_index(const bw_config *cfg, const char *name)
{
	for (size_t i = 0; cfg && name && i < cfg->nsections; i++)
		if (strcmp(cfg->sections[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

bool bw_config_has_section(const bw_config *cfg, const char *name)
{
	return section_index(cfg, name) >= 0;
}

const char *bw_config_where(const bw_config *cfg, const char *section, const char *key, char *buf, size_t len)
{
	ssize_t si = section_index(cfg, section);
	if (si < 0) {
		snprintf(buf, len, "%s", cfg->path);
		return buf;
	}
	json_t *l = key ? json_object_get(cfg->data[si].lines, key) : NULL;
	snprintf(buf, len, "%s:%d", cfg->sections[si].file,
	         json_is_integer(l) ? (int)json_integer_value(l) : cfg->sections[si].line);
	return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Small path and file helpers */

static bool path_dir(const char *path, char *out, size_t cap)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (slash && n == 0)
		n = 1; /* "/x" -> "/" */
	if (!slash) {
		if (cap < 2)
			return false;
		strcpy(out, ".");
		return true;
	}
	if (n + 1 > cap)
		return false;
	memcpy(out, path, n);
	out[n] = '\0';
	return true;
}

static bool path_join(const char *dir, const char *rel, char *out, size_t cap)
{
	int n;
	if (rel[0] == '/')
		n = snprintf(out, cap, "%s", rel);
	else if (strcmp(dir, "/") == 0)
		n = snprintf(out, cap, "/%s", rel);
	else
		n = snprintf(out, cap, "%s/%s", dir, rel);
	return n >= 0 && (size_t)n < cap;
}

/* Reads a whole regular file of at most `max` bytes; returns 0 or an errno value (EFBIG when too big). */
static int read_whole(const char *path, size_t max, char **out, size_t *out_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
	}
	if ((uint64_t)st.st_size > max) {
		close(fd);
		return EFBIG;
	}
	char *buf = malloc(max + 1);
	if (!buf) {
		close(fd);
		return ENOMEM;
	}
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + len, max + 1 - len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(buf);
			close(fd);
			return e;
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > max) {
			free(buf);
			close(fd);
			return EFBIG;
		}
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading: the sandbox */

struct src_file {
	char *path; /* realpath */
	char *text;
	size_t len;
	size_t *line_off; /* start offset of each line, built on demand */
	int nlines;
};

struct frame {
	char *real;     /* realpath of the file being evaluated */
	char **matches; /* results of the include call currently running from this file */
	size_t nmatches;
};

struct top_key {
	char *name;
	const char *file; /* interned in cfg */
	int line;         /* as Lua reports it: the end of the statement */
};

struct load_ctx {
	bw_config *cfg;
	size_t mem_used;
	bool mem_exceeded;
	long instructions;
	struct src_file *files;
	size_t nfiles;
	struct frame stack[CFG_INCLUDE_DEPTH + 1];
	size_t depth;
	struct top_key *keys;
	size_t nkeys;
	int env_ref, ordered_ref;
};

static struct load_ctx *ctx_of(lua_State *L)
{
	struct load_ctx *c;
	memcpy(&c, lua_getextraspace(L), sizeof c);
	return c;
}

static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	struct load_ctx *c = ud;
	size_t old = ptr ? osize : 0; /* with ptr == NULL, osize is a type tag */
	if (nsize == 0) {
		if (ptr) {
			explicit_bzero(ptr, osize); /* the state may hold secrets */
			free(ptr);
			c->mem_used -= old;
		}
		return NULL;
	}
	if (nsize > old && nsize - old > CFG_MEM_LIMIT - c->mem_used) {
		c->mem_exceeded = true;
		return NULL;
	}
	void *np = realloc(ptr, nsize);
	if (!np)
		return NULL;
	c->mem_used = c->mem_used - old + nsize;
	return np;
}

static int sandbox_panic(lua_State *L)
{
	/* Only reachable through a bug: every call that can raise runs under lua_pcall. */
	fprintf(stderr, "bulwark: unprotected error in the configuration sandbox: %s\n",
	        lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
	abort();
}

/* Chunk names are "=#<index into ctx->files>"; the real path is substituted in messages, because Lua
 * would shorten long paths to 60 characters. */
static const char *file_of_source(struct load_ctx *c, const char *source)
{
	if (source[0] != '=' || source[1] != '#' || !isdigit((unsigned char)source[2]))
		return NULL;
	char *end;
	unsigned long idx = strtoul(source + 2, &end, 10);
	if (*end != '\0' || idx >= c->nfiles)
		return NULL;
	return c->files[idx].path;
}

/* The innermost configuration-file location on the call stack (skipping C functions). */
static void where(lua_State *L, const char **file, int *line)
{
	struct load_ctx *c = ctx_of(L);
	lua_Debug ar;
	for (int level = 1; lua_getstack(L, level, &ar); level++) {
		if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
			continue;
		const char *f = file_of_source(c, ar.source);
		if (f) {
			*file = f;
			*line = ar.currentline;
			return;
		}
	}
	*file = c->cfg->path;
	*line = 0;
}

static void push_located(lua_State *L, const char *file, int line, const char *msg)
{
	if (line > 0)
		lua_pushfstring(L, "%s:%d: %s", file, line, msg);
	else
		lua_pushfstring(L, "%s: %s", file, msg);
}

static int lerror_at(lua_State *L, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int lerror_at(lua_State *L, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	push_located(L, file, line, msg);
	return lua_error(L);
}

static int lerror(lua_State *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int lerror(lua_State *L, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	const char *file;
	int line;
	where(L, &file, &line);
	push_located(L, file, line, msg);
	return lua_error(L);
}

/* Replaces a leading "#N:" (our chunk name) in the string on top of the stack by the file's path. */
static bool fix_prefix(struct load_ctx *c, lua_State *L)
{
	const char *msg = lua_tostring(L, -1);
	if (!msg || msg[0] != '#' || !isdigit((unsigned char)msg[1]))
		return false;
	char *end;
	unsigned long idx = strtoul(msg + 1, &end, 10);
	if (*end != ':' || idx >= c->nfiles)
		return false;
	lua_pushfstring(L, "%s%s", c->files[idx].path, end);
	lua_remove(L, -2);
	return true;
}

static bool has_known_location(struct load_ctx *c, const char *msg)
{
	size_t n = strlen(c->cfg->path);
	if (strncmp(msg, c->cfg->path, n) == 0 && msg[n] == ':')
		return true;
	for (size_t i = 0; i < c->nfiles; i++) {
		n = strlen(c->files[i].path);
		if (strncmp(msg, c->files[i].path, n) == 0 && msg[n] == ':')
			return true;
	}
	return false;
}

/* Message handler: every error leaves as "file:line: message" with the full path. */
static int sandbox_msgh(lua_State *L)
{
	struct load_ctx *c = ctx_of(L);
	if (!lua_isstring(L, 1)) {
		lua_pushfstring(L, "error raised with a %s value instead of a message", luaL_typename(L, 1));
		lua_replace(L, 1);
	}
	lua_settop(L, 1);
	if (fix_prefix(c, L) || has_known_location(c, lua_tostring(L, -1)))
		return 1;
	const char *file;
	int line;
	where(L, &file, &line);
	push_located(L, file, line, lua_tostring(L, 1));
	return 1;
}

static void instr_hook(lua_State *L, lua_Debug *ar)
{
	struct load_ctx *c = ctx_of(L);
	c->instructions += CFG_HOOK_STEP;
	if (c->instructions <= CFG_INSTR_LIMIT)
		return;
	const char *file = NULL;
	int line = 0;
	if (lua_getinfo(L, "Sl", ar))
		file = file_of_source(c, ar->source), line = ar->currentline;
	if (!file)
		where(L, &file, &line);
	lerror_at(L, file, line, "configuration took too long (more than %ld Lua instructions; an endless loop?)",
	          (long)CFG_INSTR_LIMIT);
}

static int l_noop(lua_State *L)
{
	(void)L;
	return 0;
}

/* string.rep loops in C, where the instruction hook never fires: string.rep("", 2^62) would spin for
 * years. An empty result is returned at once and an oversized one is refused before allocating. */
static int l_str_rep(lua_State *L)
{
	size_t l, lsep;
	luaL_checklstring(L, 1, &l);
	lua_Integer n = luaL_checkinteger(L, 2);
	luaL_optlstring(L, 3, "", &lsep);
	if (n <= 0 || l + lsep == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	if (l + lsep > CFG_MEM_LIMIT / (uint64_t)n)
		return lerror(L, "string.rep: the result would exceed the memory limit of %zu MiB",
		              CFG_MEM_LIMIT / (1024 * 1024));
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_insert(L, 1);
	lua_call(L, lua_gettop(L) - 1, 1);
	return 1;
}

static int l_env(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	const char *v = getenv(name);
	if (!v)
		return lerror(L, "environment variable %s is not set", name);
	lua_pushstring(L, v);
	return 1;
}

static int l_file(lua_State *L)
{
	const char *rel = luaL_checkstring(L, 1);
	const char *from;
	int line;
	where(L, &from, &line);
	char dir[PATH_MAX], path[PATH_MAX];
	if (!path_dir(from, dir, sizeof dir) || !path_join(dir, rel, path, sizeof path))
		return lerror(L, "file \"%s\": path too long", rel);
	/* Read into a Lua-owned buffer so that nothing leaks if a later call raises. */
	char *buf = lua_newuserdatauv(L, CFG_HELPER_FILE_MAX + 1, 0);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return lerror(L, "file \"%s\": cannot read %s: %s", rel, path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int e = errno;
		close(fd);
		return lerror(L, "file \"%s\": cannot read %s: %s", rel, path, strerror(e));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return lerror(L, "file \"%s\": cannot read %s: not a regular file", rel, path);
	}
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + len, CFG_HELPER_FILE_MAX + 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			return lerror(L, "file \"%s\": cannot read %s: %s", rel, path, strerror(e));
		}
		if (r == 0)
			break;
		len += (size_t)r;
		if (len > CFG_HELPER_FILE_MAX) {
			close(fd);
			explicit_bzero(buf, len);
			return lerror(L, "file \"%s\": %s is larger than 64 KiB", rel, path);
		}
	}
	close(fd);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	lua_pushlstring(L, buf, len);
	explicit_bzero(buf, len);
	return 1;
}

static void eval_file(lua_State *L, struct load_ctx *c, const char *path, const char *pattern);

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_matches(struct frame *f)
{
	for (size_t i = 0; i < f->nmatches; i++)
		free(f->matches[i]);
	free(f->matches);
	f->matches = NULL;
	f->nmatches = 0;
}

static int l_include(lua_State *L)
{
	struct load_ctx *c = ctx_of(L);
	const char *pattern = luaL_checkstring(L, 1);
	const char *from;
	int line;
	where(L, &from, &line);
	char dir[PATH_MAX], full[PATH_MAX * 2 + 2];
	if (!path_dir(from, dir, sizeof dir))
		return lerror(L, "include \"%s\": path too long", pattern);
	/* The directory is literal text: escape glob characters in it. */
	size_t n = 0;
	if (pattern[0] != '/') {
		for (const char *p = dir; *p && n + 3 < sizeof full; p++) {
			if (strchr("*?[]\\", *p))
				full[n++] = '\\';
			full[n++] = *p;
		}
		if (n + 1 < sizeof full && strcmp(dir, "/") != 0)
			full[n++] = '/';
	}
	size_t plen = strlen(pattern);
	if (n + plen + 1 > sizeof full)
		return lerror(L, "include \"%s\": path too long", pattern);
	memcpy(full + n, pattern, plen + 1);

	size_t fi = c->depth - 1; /* the frame of the file running now */
	if (c->stack[fi].matches)
		return lerror(L, "include \"%s\": nested include in progress", pattern);
	glob_t g;
	memset(&g, 0, sizeof g);
	int rc = glob(full, GLOB_NOSORT, NULL, &g);
	if (rc == GLOB_NOMATCH) {
		globfree(&g);
		if (strpbrk(pattern, "*?["))
			return 0; /* a glob that matches nothing is fine */
		char lit[PATH_MAX];
		if (!path_join(dir, pattern, lit, sizeof lit))
			return lerror(L, "include \"%s\": path too long", pattern);
		struct stat st;
		return lerror(L, "include \"%s\": cannot read %s: %s", pattern, lit,
		              stat(lit, &st) != 0 ? strerror(errno) : "not readable");
	}
	if (rc != 0) {
		globfree(&g);
		return lerror(L, "include \"%s\": cannot list files (%s)", pattern,
		              rc == GLOB_NOSPACE ? "out of memory" : "read error");
	}
	struct frame *f = &c->stack[fi];
	f->matches = calloc(g.gl_pathc ? g.gl_pathc : 1, sizeof *f->matches);
	if (!f->matches) {
		globfree(&g);
		return lerror(L, "include \"%s\": out of memory", pattern);
	}
	for (size_t i = 0; i < g.gl_pathc; i++) {
		f->matches[i] = strdup(g.gl_pathv[i]);
		if (!f->matches[i]) {
			globfree(&g);
			return lerror(L, "include \"%s\": out of memory", pattern);
		}
		f->nmatches++;
	}
	globfree(&g);
	/* Byte order, independent of the locale. */
	qsort(f->matches, f->nmatches, sizeof *f->matches, cmp_str);
	for (size_t i = 0; i < c->stack[fi].nmatches; i++)
		eval_file(L, c, c->stack[fi].matches[i], pattern);
	free_matches(&c->stack[fi]);
	return 0;
}

/* Evaluates one file in the shared environment. `pattern` is NULL for the main file. */
static void eval_file(lua_State *L, struct load_ctx *c, const char *path, const char *pattern)
{
	/* Errors of an include name the include call (located at the caller's line). */
	char pre[PATH_MAX + 32] = "";
	if (pattern)
		snprintf(pre, sizeof pre, "include \"%s\": ", pattern);
	struct stat st;
	if (stat(path, &st) != 0)
		lerror(L, "%scannot read %s: %s", pre, path, strerror(errno));
	if (pattern && S_ISDIR(st.st_mode))
		return; /* a glob like conf.d/<star> may match directories */
	if (c->depth >= CFG_INCLUDE_DEPTH + 1)
		lerror(L, "%sincludes are nested too deeply (more than %d levels)", pre, CFG_INCLUDE_DEPTH);
	if (c->nfiles >= CFG_MAX_FILES)
		lerror(L, "%stoo many configuration files (more than %d)", pre, CFG_MAX_FILES);
	char *real = realpath(path, NULL);
	if (!real)
		lerror(L, "%scannot resolve %s: %s", pre, path, strerror(errno));
	for (size_t k = 0; k < c->depth; k++) {
		if (strcmp(c->stack[k].real, real) == 0) {
			char shown[PATH_MAX];
			snprintf(shown, sizeof shown, "%s", real);
			free(real);
			lerror(L, "%sinclude cycle: %s is already being evaluated", pre, shown);
		}
	}
	c->stack[c->depth].real = real; /* owned by the frame from here, freed on error by the loader */
	c->stack[c->depth].matches = NULL;
	c->stack[c->depth].nmatches = 0;
	c->depth++;

	char *text = NULL;
	size_t len = 0;
	int e = read_whole(real, CFG_FILE_MAX, &text, &len);
	if (e == EFBIG)
		lerror(L, "%scannot read %s: larger than %zu KiB", pre, real, CFG_FILE_MAX / 1024);
	if (e)
		lerror(L, "%scannot read %s: %s", pre, real, strerror(e));
	struct src_file *nf = realloc(c->files, (c->nfiles + 1) * sizeof *nf);
	if (nf)
		c->files = nf;
	char *pdup = strdup(real);
	if (!nf || !pdup) {
		free(pdup);
		free(text);
		lerror(L, "out of memory");
	}
	size_t idx = c->nfiles++;
	c->files[idx] = (struct src_file){.path = pdup, .text = text, .len = len};

	char chunkname[32];
	snprintf(chunkname, sizeof chunkname, "=#%zu", idx);
	if (luaL_loadbufferx(L, text, len, chunkname, "t") != LUA_OK) {
		if (!fix_prefix(c, L)) {
			/* e.g. "attempt to load a binary chunk": no position in the message */
			lua_pushfstring(L, "%s: %s", c->files[idx].path, lua_tostring(L, -1));
			lua_remove(L, -2);
		}
		lua_error(L);
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->env_ref);
	if (!lua_setupvalue(L, -2, 1))
		lua_pop(L, 1);
	lua_call(L, 0, 0);
	c->depth--;
	free(c->stack[c->depth].real);
	c->stack[c->depth].real = NULL;
}

/* __newindex of the environment: records file:line of each top-level key. Upvalues: 1 values,
 * 2 the built-ins, 3 the values in assignment order. */
static int l_newindex(lua_State *L)
{
	struct load_ctx *c = ctx_of(L);
	if (lua_type(L, 2) != LUA_TSTRING)
		return lerror(L, "top-level keys must be names (got a %s key)", luaL_typename(L, 2));
	const char *name = lua_tostring(L, 2);
	const char *file;
	int line;
	where(L, &file, &line);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL)
		return lerror(L, "'%s' is a built-in name and cannot be assigned", name);
	lua_pop(L, 1);
	bool is_plugins = strcmp(name, "plugins") == 0;
	if (lua_type(L, 3) != LUA_TTABLE) {
		if (is_plugins)
			return lerror(L, "'plugins' must be a list of plugin names, got %s", luaL_typename(L, 3));
		return lerror(L, "section '%s' must be a table, got %s", name, luaL_typename(L, 3));
	}
	if (strlen(name) > CFG_NAME_MAX)
		return lerror(L, "section name '%.64s...' is longer than %d characters", name, CFG_NAME_MAX);
	for (size_t i = 0; i < c->nkeys; i++) {
		if (strcmp(c->keys[i].name, name) == 0) {
			if (is_plugins)
				return lerror(L, "'plugins' is already set at %s:%d", c->keys[i].file, c->keys[i].line);
			return lerror(L, "section '%s' is already set at %s:%d", name, c->keys[i].file,
			              c->keys[i].line);
		}
	}
	struct top_key *nk = realloc(c->keys, (c->nkeys + 1) * sizeof *nk);
	if (!nk)
		return lerror(L, "out of memory");
	c->keys = nk;
	const char *ifile = cfg_intern(c->cfg, file);
	char *dup = strdup(name);
	if (!ifile || !dup) {
		free(dup);
		return lerror(L, "out of memory");
	}
	c->keys[c->nkeys++] = (struct top_key){.name = dup, .file = ifile, .line = line};
	lua_settop(L, 3);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 3);
	lua_rawset(L, lua_upvalueindex(1));
	lua_pushvalue(L, 3);
	lua_rawseti(L, lua_upvalueindex(3), (lua_Integer)c->nkeys);
	return 0;
}

/* Runs under lua_pcall: builds the sandbox, then evaluates the main file. */
static int l_run(lua_State *L)
{
	struct load_ctx *c = ctx_of(L);
	static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
	                                {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
	                                {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
	for (const luaL_Reg *l = libs; l->name; l++) {
		luaL_requiref(L, l->name, l->func, 1);
		lua_pop(L, 1);
	}
	lua_pushglobaltable(L);
	int g = lua_gettop(L);
	/* Everything that loads code, reaches the filesystem, touches metatables or raw access (which
	 * would bypass the recording of top-level keys), or could catch the instruction-limit error. */
	static const char *const removed[] = {
	    "dofile",   "loadfile",     "load",         "loadstring", "require", "collectgarbage", "rawset", "rawget",
	    "rawequal", "setmetatable", "getmetatable", "pcall",      "xpcall",  "warn",           "module", "_G",
	    NULL};
	for (const char *const *r = removed; *r; r++) {
		lua_pushnil(L);
		lua_setfield(L, g, *r);
	}
	lua_pushcfunction(L, l_noop);
	lua_setfield(L, g, "print");
	lua_getfield(L, g, LUA_STRLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "dump");
	lua_getfield(L, -1, "rep");
	lua_pushcclosure(L, l_str_rep, 1);
	lua_setfield(L, -2, "rep");
	lua_pop(L, 1);
	/* table.move(t, 1, 2^62, 2) would loop in C for ever; configuration has no use for it. */
	lua_getfield(L, g, LUA_TABLIBNAME);
	lua_pushnil(L);
	lua_setfield(L, -2, "move");
	lua_pop(L, 1);
	lua_pushcfunction(L, l_include);
	lua_setfield(L, g, "include");
	lua_pushcfunction(L, l_env);
	lua_setfield(L, g, "env");
	lua_pushcfunction(L, l_file);
	lua_setfield(L, g, "file");

	/* values: what the config assigned; reads fall through to the built-ins. */
	lua_newtable(L);
	int values = lua_gettop(L);
	lua_newtable(L);
	lua_pushvalue(L, g);
	lua_setfield(L, -2, "__index");
	lua_setmetatable(L, values);
	lua_newtable(L);
	int ordered = lua_gettop(L);
	lua_pushvalue(L, ordered);
	c->ordered_ref = luaL_ref(L, LUA_REGISTRYINDEX);

	/* env stays empty so that every assignment, also a second one, reaches __newindex. */
	lua_newtable(L);
	int env = lua_gettop(L);
	lua_newtable(L);
	lua_pushvalue(L, values);
	lua_setfield(L, -2, "__index");
	lua_pushvalue(L, values);
	lua_pushvalue(L, g);
	lua_pushvalue(L, ordered);
	lua_pushcclosure(L, l_newindex, 3);
	lua_setfield(L, -2, "__newindex");
	lua_setmetatable(L, env);
	lua_pushvalue(L, env);
	c->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);

	lua_sethook(L, instr_hook, LUA_MASKCOUNT, CFG_HOOK_STEP);
	eval_file(L, c, c->cfg->path, NULL);
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading: source scanning for the lines of nested keys */

static bool is_ident(char ch)
{
	return isalnum((unsigned char)ch) || ch == '_';
}

static struct src_file *find_src(struct load_ctx *c, const char *path)
{
	for (size_t i = 0; i < c->nfiles; i++)
		if (strcmp(c->files[i].path, path) == 0)
			return &c->files[i];
	return NULL;
}

static bool index_lines(struct src_file *sf)
{
	if (sf->line_off)
		return true;
	size_t n = 1;
	for (size_t i = 0; i < sf->len; i++)
		n += sf->text[i] == '\n';
	sf->line_off = malloc((n + 1) * sizeof *sf->line_off);
	if (!sf->line_off)
		return false;
	size_t k = 0;
	sf->line_off[k++] = 0;
	for (size_t i = 0; i < sf->len; i++)
		if (sf->text[i] == '\n')
			sf->line_off[k++] = i + 1;
	sf->line_off[k] = sf->len + 1; /* sentinel: end of the last line + 1 */
	sf->nlines = (int)n;
	return true;
}

/* Line `no` (1-based) as a pointer and length (without the newline); false when out of range. */
static bool get_line(const struct src_file *sf, int no, const char **s, size_t *len)
{
	if (!sf || !sf->line_off || no < 1 || no > sf->nlines)
		return false;
	size_t a = sf->line_off[no - 1], b = sf->line_off[no] - 1;
	*s = sf->text + a;
	*len = b > a ? b - a : 0;
	return true;
}

/* Length of the line without a trailing -- comment (quotes are tracked, long strings are not). */
static size_t code_len(const char *s, size_t len)
{
	char q = 0;
	for (size_t i = 0; i < len; i++) {
		if (q) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == q)
				q = 0;
		} else if (s[i] == '"' || s[i] == '\'') {
			q = s[i];
		} else if (s[i] == '-' && i + 1 < len && s[i + 1] == '-') {
			return i;
		}
	}
	return len;
}

/* True when s[i..] (after optional `"]`/`']`) is followed by spaces and a single '='. */
static bool assign_follows(const char *s, size_t len, size_t i)
{
	if (i + 1 < len && (s[i] == '"' || s[i] == '\'') && s[i + 1] == ']')
		i += 2;
	while (i < len && (s[i] == ' ' || s[i] == '\t'))
		i++;
	return i < len && s[i] == '=' && (i + 1 >= len || s[i + 1] != '=');
}

/* From the end line of the statement back to the line where `<section>%s*=` starts. */
static int section_start(const struct src_file *sf, const char *section, int end)
{
	size_t n = strlen(section);
	for (int no = end; no >= 1; no--) {
		const char *s;
		size_t len;
		if (!get_line(sf, no, &s, &len))
			break;
		size_t i = 0;
		while (i < len && (s[i] == ' ' || s[i] == '\t'))
			i++;
		if (len - i >= n && memcmp(s + i, section, n) == 0 && (i + n >= len || !is_ident(s[i + n])) &&
		    assign_follows(s, len, i + n))
			return no;
	}
	return end;
}

/* First line in [start, end] where `key` is followed by `%s*=`; `end` when none. */
static int key_line(const struct src_file *sf, int start, int end, const char *key)
{
	size_t n = strlen(key);
	if (n == 0)
		return end;
	for (int no = start; no <= end; no++) {
		const char *s;
		size_t len;
		if (!get_line(sf, no, &s, &len))
			break;
		len = code_len(s, len);
		for (size_t i = 0; i + n <= len; i++) {
			if (memcmp(s + i, key, n) != 0 || (i > 0 && is_ident(s[i - 1])) ||
			    (i + n < len && is_ident(s[i + n])))
				continue;
			if (assign_follows(s, len, i + n))
				return no;
		}
	}
	return end;
}

/* Line of the (skip+1)-th "name" or 'name' in [start, end]; `end` when none. */
static int quoted_line(const struct src_file *sf, int start, int end, const char *name, int skip)
{
	size_t n = strlen(name);
	for (int no = start; no <= end; no++) {
		const char *s;
		size_t len;
		if (!get_line(sf, no, &s, &len))
			break;
		for (size_t i = 0; i + n + 2 <= len; i++)
			if ((s[i] == '"' || s[i] == '\'') && s[i + n + 1] == s[i] && memcmp(s + i + 1, name, n) == 0 &&
			    skip-- == 0)
				return no;
	}
	return end;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading: conversion to JSON (runs without lua_pcall, so only raw, non-allocating Lua calls) */

static int conv_fail(bw_error *err, const char *file, int line, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int conv_fail(bw_error *err, const char *file, int line, const char *path, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (line > 0)
		return bw_error_set(err, BW_E_CONFIG, "%s:%d: %s: %s", file, line, path, msg);
	return bw_error_set(err, BW_E_CONFIG, "%s: %s: %s", file, path, msg);
}

struct table_shape {
	lua_Integer nint, nstr, other, maxi;
};

static void table_shape(lua_State *L, int idx, struct table_shape *t)
{
	memset(t, 0, sizeof *t);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		int kt = lua_type(L, -2);
		if (kt == LUA_TSTRING) {
			t->nstr++;
		} else if (kt == LUA_TNUMBER && lua_isinteger(L, -2) && lua_tointeger(L, -2) >= 1) {
			t->nint++;
			if (lua_tointeger(L, -2) > t->maxi)
				t->maxi = lua_tointeger(L, -2);
		} else {
			t->other++;
		}
		lua_pop(L, 1);
	}
}

/* Appends a path component to `path` (capacity cap); returns the old length to restore. */
static size_t path_push(char *path, size_t cap, const char *fmt_key, lua_Integer idx)
{
	size_t old = strlen(path);
	if (fmt_key)
		snprintf(path + old, cap - old, ".%s", fmt_key);
	else
		snprintf(path + old, cap - old, "[%lld]", (long long)idx);
	return old;
}

static json_t *to_json(lua_State *L, int idx, int depth, char *path, size_t cap, const char *file, int line,
                       bw_error *err)
{
	switch (lua_type(L, idx)) {
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		if (memchr(s, '\0', len)) {
			conv_fail(err, file, line, path, "text contains a NUL byte");
			return NULL;
		}
		json_t *v = json_stringn_nocheck(s, len);
		if (!v)
			bw_error_set(err, BW_E_NOMEM, "out of memory");
		return v;
	}
	case LUA_TNUMBER: {
		json_t *v;
		if (lua_isinteger(L, idx)) {
			v = json_integer((json_int_t)lua_tointeger(L, idx));
		} else {
			double d = lua_tonumber(L, idx);
			if (!isfinite(d)) {
				conv_fail(err, file, line, path, "not a finite number");
				return NULL;
			}
			v = json_real(d);
		}
		if (!v)
			bw_error_set(err, BW_E_NOMEM, "out of memory");
		return v;
	}
	case LUA_TBOOLEAN:
		return json_boolean(lua_toboolean(L, idx));
	case LUA_TTABLE:
		break;
	default:
		conv_fail(err, file, line, path, "a setting cannot hold a %s value", lua_typename(L, lua_type(L, idx)));
		return NULL;
	}

	if (depth > CFG_NEST_MAX || !lua_checkstack(L, 4)) {
		conv_fail(err, file, line, path,
		          "tables nested too deeply (more than %d levels, or a table contains itself)", CFG_NEST_MAX);
		return NULL;
	}
	struct table_shape t;
	table_shape(L, idx, &t);
	if (t.other) {
		conv_fail(err, file, line, path, "table keys must be names or list positions 1, 2, 3...");
		return NULL;
	}
	if (t.nstr && t.nint) {
		conv_fail(err, file, line, path, "a table cannot mix list items and named settings");
		return NULL;
	}
	if (t.nstr == 0) {
		if (t.maxi != t.nint) {
			conv_fail(err, file, line, path, "a list has holes (nil items)");
			return NULL;
		}
		json_t *arr = json_array();
		if (!arr) {
			bw_error_set(err, BW_E_NOMEM, "out of memory");
			return NULL;
		}
		for (lua_Integer i = 1; i <= t.nint; i++) {
			lua_rawgeti(L, idx, i);
			size_t old = path_push(path, cap, NULL, i);
			json_t *x = to_json(L, lua_gettop(L), depth + 1, path, cap, file, line, err);
			path[old] = '\0';
			lua_pop(L, 1);
			if (!x || json_array_append_new(arr, x) != 0) {
				if (x)
					bw_error_set(err, BW_E_NOMEM, "out of memory");
				json_decref(arr);
				return NULL;
			}
		}
		return arr;
	}
	json_t *obj = json_object();
	if (!obj) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t klen;
		const char *k = lua_tolstring(L, -2, &klen);
		size_t old = path_push(path, cap, k, 0);
		json_t *x = NULL;
		if (strlen(k) != klen)
			conv_fail(err, file, line, path, "a setting name contains a NUL byte");
		else
			x = to_json(L, lua_gettop(L), depth + 1, path, cap, file, line, err);
		if (x && json_object_set_new(obj, k, x) != 0) {
			x = NULL;
			conv_fail(err, file, line, path, "a setting name is not valid UTF-8");
		}
		path[old] = '\0';
		if (!x) {
			lua_pop(L, 2);
			json_decref(obj);
			return NULL;
		}
		lua_pop(L, 1);
	}
	return obj;
}

static bool plugin_name_ok(const char *s, size_t len)
{
	if (len == 0 || len > CFG_NAME_MAX || strlen(s) != len)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

static int collect_plugins(struct load_ctx *c, lua_State *L, int idx, const struct top_key *k, bw_error *err)
{
	bw_config *cfg = c->cfg;
	struct src_file *sf = find_src(c, k->file);
	int start = sf ? section_start(sf, "plugins", k->line) : k->line;
	struct table_shape t;
	table_shape(L, idx, &t);
	if (t.nstr || t.other || t.maxi != t.nint)
		return bw_error_set(
		    err, BW_E_CONFIG,
		    "%s:%d: plugins: must be a list, e.g. plugins = { \"name\", { \"name2\", required = true } }",
		    k->file, start);
	if (cfg->plugins)
		return bw_error_set(err, BW_E_INTERNAL, "plugins collected twice");
	cfg->plugins = calloc(t.nint ? (size_t)t.nint : 1, sizeof *cfg->plugins);
	if (!cfg->plugins)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	for (lua_Integer i = 1; i <= t.nint; i++) {
		const char *name = NULL;
		size_t nlen = 0;
		bool required = false;
		int line = start;
		lua_rawgeti(L, idx, i);
		int e = lua_gettop(L);
		if (lua_type(L, e) == LUA_TSTRING) {
			name = lua_tolstring(L, e, &nlen);
		} else if (lua_type(L, e) == LUA_TTABLE) {
			lua_pushnil(L);
			while (lua_next(L, e)) {
				int kt = lua_type(L, -2);
				if (kt == LUA_TNUMBER && lua_isinteger(L, -2) && lua_tointeger(L, -2) == 1 &&
				    lua_type(L, -1) == LUA_TSTRING) {
					name = lua_tolstring(L, -1, &nlen);
				} else if (kt == LUA_TSTRING && strcmp(lua_tostring(L, -2), "required") == 0) {
					if (lua_type(L, -1) != LUA_TBOOLEAN) {
						int rc = bw_error_set(
						    err, BW_E_CONFIG,
						    "%s:%d: plugins[%lld].required: expected true or false, got %s",
						    k->file, start, (long long)i, luaL_typename(L, -1));
						lua_settop(L, e - 1);
						return rc;
					}
					required = lua_toboolean(L, -1);
				} else {
					int rc;
					if (kt == LUA_TSTRING)
						rc = bw_error_set(
						    err, BW_E_CONFIG,
						    "%s:%d: plugins[%lld]: unknown key '%s' in a plugin entry "
						    "(known: required)",
						    k->file, start, (long long)i, lua_tostring(L, -2));
					else
						rc = bw_error_set(
						    err, BW_E_CONFIG,
						    "%s:%d: plugins[%lld]: a plugin entry is { \"name\", required = "
						    "true }: one name, then optional named keys",
						    k->file, start, (long long)i);
					lua_settop(L, e - 1);
					return rc;
				}
				lua_pop(L, 1);
			}
			if (!name) {
				lua_settop(L, e - 1);
				return bw_error_set(err, BW_E_CONFIG,
				                    "%s:%d: plugins[%lld]: the entry has no plugin name", k->file,
				                    start, (long long)i);
			}
		} else {
			int rc = bw_error_set(
			    err, BW_E_CONFIG,
			    "%s:%d: plugins[%lld]: expected a plugin name or { \"name\", required = true }, "
			    "got %s",
			    k->file, start, (long long)i, luaL_typename(L, e));
			lua_settop(L, e - 1);
			return rc;
		}
		if (!plugin_name_ok(name, nlen)) {
			int rc = bw_error_set(
			    err, BW_E_CONFIG,
			    "%s:%d: plugins[%lld]: invalid plugin name \"%.80s\" (1 to 64 of a-z, 0-9 and _)", k->file,
			    sf ? quoted_line(sf, start, k->line, name, 0) : start, (long long)i, name);
			lua_settop(L, e - 1);
			return rc;
		}
		int seen = 0; /* a repeated name is the next occurrence in the text */
		for (size_t j = 0; j < cfg->nplugins; j++)
			seen += strcmp(cfg->plugins[j].name, name) == 0;
		line = sf ? quoted_line(sf, start, k->line, name, seen) : start;
		for (size_t j = 0; j < cfg->nplugins; j++) {
			if (strcmp(cfg->plugins[j].name, name) == 0) {
				int rc = bw_error_set(
				    err, BW_E_CONFIG,
				    "%s:%d: plugins[%lld]: plugin '%s' is listed twice (also at %s:%d)", k->file, line,
				    (long long)i, name, cfg->plugins[j].file, cfg->plugins[j].line);
				lua_settop(L, e - 1);
				return rc;
			}
		}
		char *dup = strdup(name);
		lua_settop(L, e - 1);
		if (!dup)
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		cfg->plugins[cfg->nplugins++] =
		    (struct bw_plugin_entry){.name = dup, .required = required, .file = k->file, .line = line};
	}
	return BW_OK;
}

static int collect_section(struct load_ctx *c, lua_State *L, int idx, const struct top_key *k, bw_error *err)
{
	bw_config *cfg = c->cfg;
	struct src_file *sf = find_src(c, k->file);
	int start = sf ? section_start(sf, k->name, k->line) : k->line;
	struct table_shape t;
	table_shape(L, idx, &t);
	if (t.nint || t.other)
		return bw_error_set(err, BW_E_CONFIG,
		                    "%s:%d: section '%s' must contain named settings (key = value), not list items",
		                    k->file, start, k->name);
	size_t i = cfg->nsections;
	char *name = strdup(k->name);
	json_t *obj = json_object(), *lines = json_object();
	if (!name || !obj || !lines) {
		free(name);
		json_decref(obj);
		json_decref(lines);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	cfg->sections[i] = (struct bw_config_section){.name = name, .file = k->file, .line = start};
	cfg->data[i] = (struct section_data){.value = obj, .lines = lines};
	cfg->nsections++;

	char path[512];
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		size_t klen;
		const char *key = lua_tolstring(L, -2, &klen);
		int kline = sf ? key_line(sf, start, k->line, key) : k->line;
		snprintf(path, sizeof path, "%s.%s", k->name, key);
		json_t *x = NULL;
		if (strlen(key) != klen)
			conv_fail(err, k->file, kline, path, "a setting name contains a NUL byte");
		else
			x = to_json(L, lua_gettop(L), 1, path, sizeof path, k->file, kline, err);
		if (x && json_object_set_new(obj, key, x) != 0) {
			x = NULL;
			conv_fail(err, k->file, kline, path, "a setting name is not valid UTF-8");
		}
		if (!x || json_object_set_new(lines, key, json_integer(kline)) != 0) {
			if (x)
				bw_error_set(err, BW_E_NOMEM, "out of memory");
			lua_pop(L, 2);
			return err ? err->code : BW_E_CONFIG;
		}
		lua_pop(L, 1);
	}
	return BW_OK;
}

static int collect(struct load_ctx *c, lua_State *L, bw_error *err)
{
	bw_config *cfg = c->cfg;
	cfg->sections = calloc(c->nkeys ? c->nkeys : 1, sizeof *cfg->sections);
	cfg->data = calloc(c->nkeys ? c->nkeys : 1, sizeof *cfg->data);
	if (!cfg->sections || !cfg->data)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	for (size_t i = 0; i < c->nfiles; i++)
		if (!index_lines(&c->files[i]))
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
	if (!lua_checkstack(L, 16))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	lua_rawgeti(L, LUA_REGISTRYINDEX, c->ordered_ref);
	int ord = lua_gettop(L);
	for (size_t i = 0; i < c->nkeys; i++) {
		lua_rawgeti(L, ord, (lua_Integer)(i + 1));
		int v = lua_gettop(L);
		int rc;
		if (strcmp(c->keys[i].name, "plugins") == 0)
			rc = collect_plugins(c, L, v, &c->keys[i], err);
		else
			rc = collect_section(c, L, v, &c->keys[i], err);
		lua_settop(L, ord);
		if (rc != BW_OK)
			return rc;
	}
	lua_settop(L, ord - 1);
	return BW_OK;
}

static void ctx_cleanup(struct load_ctx *c)
{
	for (size_t i = 0; i < c->nfiles; i++) {
		free(c->files[i].path);
		explicit_bzero(c->files[i].text, c->files[i].len);
		free(c->files[i].text);
		free(c->files[i].line_off);
	}
	free(c->files);
	for (size_t i = 0; i < CFG_INCLUDE_DEPTH + 1; i++) {
		free(c->stack[i].real);
		free_matches(&c->stack[i]);
	}
	for (size_t i = 0; i < c->nkeys; i++)
		free(c->keys[i].name);
	free(c->keys);
}

bw_config *bw_config_load(const char *path, bw_error *err)
{
	bw_error_clear(err);
	if (!path || !*path) {
		bw_error_set(err, BW_E_INVALID, "no configuration file given");
		return NULL;
	}
	bw_config *cfg = calloc(1, sizeof *cfg);
	if (!cfg) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	cfg->path = realpath(path, NULL);
	if (!cfg->path) {
		bw_error_set(err, BW_E_CONFIG, "%s: cannot read the configuration file: %s", path, strerror(errno));
		bw_config_free(cfg);
		return NULL;
	}
	char dir[PATH_MAX];
	if (!path_dir(cfg->path, dir, sizeof dir) || !(cfg->base_dir = strdup(dir))) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		bw_config_free(cfg);
		return NULL;
	}

	struct load_ctx c;
	memset(&c, 0, sizeof c);
	c.cfg = cfg;
	lua_State *L = lua_newstate(sandbox_alloc, &c);
	if (!L) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		bw_config_free(cfg);
		return NULL;
	}
	struct load_ctx *cp = &c;
	memcpy(lua_getextraspace(L), &cp, sizeof cp);
	lua_atpanic(L, sandbox_panic);

	int rc = BW_OK;
	lua_pushcfunction(L, sandbox_msgh);
	lua_pushcfunction(L, l_run);
	int status = lua_pcall(L, 0, 0, 1);
	if (status == LUA_ERRMEM || (status != LUA_OK && c.mem_exceeded && !lua_isstring(L, -1))) {
		rc = bw_error_set(err, BW_E_CONFIG, "%s: the configuration used more than the memory limit of %zu MiB",
		                  cfg->path, CFG_MEM_LIMIT / (1024 * 1024));
	} else if (status != LUA_OK) {
		const char *msg = lua_tostring(L, -1);
		if (status == LUA_ERRERR && c.mem_exceeded)
			rc = bw_error_set(err, BW_E_CONFIG,
			                  "%s: the configuration used more than the memory limit of %zu MiB", cfg->path,
			                  CFG_MEM_LIMIT / (1024 * 1024));
		else
			rc = bw_error_set(err, BW_E_CONFIG, "%s", msg ? msg : "configuration error");
	} else {
		lua_sethook(L, NULL, 0, 0);
		lua_settop(L, 0);
		rc = collect(&c, L, err);
	}
	lua_close(L);
	ctx_cleanup(&c);
	if (rc != BW_OK) {
		bw_config_free(cfg);
		return NULL;
	}
	return cfg;
}

/* ------------------------------------------------------------------------------------------ */
/* Durations */

int bw_duration_parse(const char *text, int64_t *out_ms)
{
	if (!text || !out_ms || !isdigit((unsigned char)*text))
		return BW_E_INVALID;
	const char *p = text;
	uint64_t ip = 0;
	for (; isdigit((unsigned char)*p); p++) {
		if (ip > (UINT64_MAX - 9) / 10)
			return BW_E_INVALID;
		ip = ip * 10 + (uint64_t)(*p - '0');
	}
	uint64_t frac = 0, scale = 1;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return BW_E_INVALID;
		for (; isdigit((unsigned char)*p); p++) {
			if (scale < 1000000000ULL) { /* digits past nanoseconds do not matter */
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
		}
	}
	uint64_t unit;
	if (strcmp(p, "ms") == 0)
		unit = 1;
	else if (strcmp(p, "s") == 0 || *p == '\0')
		unit = 1000;
	else if (strcmp(p, "m") == 0)
		unit = 60000;
	else if (strcmp(p, "h") == 0)
		unit = 3600000;
	else if (strcmp(p, "d") == 0)
		unit = 86400000;
	else
		return BW_E_INVALID;
	uint64_t ms;
	if (__builtin_mul_overflow(ip, unit, &ms))
		return BW_E_INVALID;
	uint64_t fms = (frac * unit + scale / 2) / scale; /* rounded to the nearest ms */
	if (__builtin_add_overflow(ms, fms, &ms) || ms > (uint64_t)INT64_MAX)
		return BW_E_INVALID;
	*out_ms = (int64_t)ms;
	return BW_OK;
}

static void fmt_duration(int64_t ms, char *buf, size_t cap)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (ms != 0 && ms % units[i].ms == 0) {
			snprintf(buf, cap, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
			return;
		}
	}
	snprintf(buf, cap, "%lldms", (long long)ms);
}

/* ------------------------------------------------------------------------------------------ */
/* Applying a field table */

/* Parses a default value written in (a subset of) config syntax; NULL when it is not valid. */
static json_t *parse_default(const char *text)
{
	while (isspace((unsigned char)*text))
		text++;
	size_t len = strlen(text);
	while (len && isspace((unsigned char)text[len - 1]))
		len--;
	if (len == 0)
		return NULL;
	if (len == 4 && memcmp(text, "true", 4) == 0)
		return json_true();
	if (len == 5 && memcmp(text, "false", 5) == 0)
		return json_false();
	if (text[0] == '"' || text[0] == '\'' || text[0] == '{') {
		json_t *list = text[0] == '{' ? json_array() : NULL;
		size_t i = list ? 1 : 0;
		for (;;) {
			while (list && i < len && (isspace((unsigned char)text[i]) || text[i] == ','))
				i++;
			if (list && i < len && text[i] == '}' && i + 1 == len)
				return list;
			if (i >= len || (text[i] != '"' && text[i] != '\'')) {
				json_decref(list);
				return NULL;
			}
			char q = text[i++];
			char *s = malloc(len + 1);
			if (!s) {
				json_decref(list);
				return NULL;
			}
			size_t n = 0;
			while (i < len && text[i] != q) {
				char ch = text[i++];
				if (ch == '\\' && i < len) {
					ch = text[i++];
					ch = ch == 'n' ? '\n' : ch == 't' ? '\t' : ch;
				}
				s[n++] = ch;
			}
			json_t *str = i < len ? json_stringn(s, n) : NULL; /* NULL: unterminated */
			free(s);
			i++;
			if (!list)
				return i == len ? str : (json_decref(str), NULL);
			if (!str || json_array_append_new(list, str) != 0) {
				json_decref(list);
				return NULL;
			}
			/* after an item: spaces, then ',' or '}' */
			while (i < len && isspace((unsigned char)text[i]))
				i++;
			if (i < len && text[i] != ',' && text[i] != '}') {
				json_decref(list);
				return NULL;
			}
		}
	}
	char *tmp = strndup(text, len);
	if (!tmp)
		return NULL;
	json_t *v = NULL;
	if (strspn(tmp, "0123456789+-.eE") == len && (isdigit((unsigned char)tmp[0]) || tmp[0] == '-')) {
		char *end;
		errno = 0;
		long long ll = strtoll(tmp, &end, 10);
		if (*end == '\0' && errno == 0) {
			v = json_integer(ll);
		} else {
			errno = 0;
			double d = strtod(tmp, &end);
			if (*end == '\0' && errno == 0 && isfinite(d))
				v = json_real(d);
		}
	} else {
		v = json_stringn(tmp, len); /* bare text, e.g. 30s */
	}
	free(tmp);
	return v;
}

static const char *value_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	case JSON_ARRAY:
		return "list";
	case JSON_OBJECT:
		return "table";
	default:
		return "nothing";
	}
}

struct apply_loc {
	const char *file;
	int line;
	const char *section;
	bool is_default;
};

static int apply_fail(bw_error *err, const struct apply_loc *at, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int apply_fail(bw_error *err, const struct apply_loc *at, const char *key, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	const char *pre = at->is_default ? "invalid default value (a bug in the settings table): " : "";
	int code = at->is_default ? BW_E_INTERNAL : BW_E_CONFIG;
	if (at->line > 0)
		return bw_error_set(err, code, "%s:%d: %s.%s: %s%s", at->file, at->line, at->section, key, pre, msg);
	return bw_error_set(err, code, "%s: %s.%s: %s%s", at->file, at->section, key, pre, msg);
}

static void store_zero(const struct bw_config_field *f, char *p)
{
	switch (f->type) {
	case BW_FIELD_STRING:
	case BW_FIELD_SECRET:
	case BW_FIELD_PATH: {
		char *z = NULL;
		memcpy(p, &z, sizeof z);
		break;
	}
	case BW_FIELD_INT:
	case BW_FIELD_DURATION: {
		int64_t z = 0;
		memcpy(p, &z, sizeof z);
		break;
	}
	case BW_FIELD_BOOL: {
		bool z = false;
		memcpy(p, &z, sizeof z);
		break;
	}
	case BW_FIELD_DOUBLE: {
		double z = 0;
		memcpy(p, &z, sizeof z);
		break;
	}
	case BW_FIELD_STRINGS: {
		struct bw_strings z = {0, NULL};
		memcpy(p, &z, sizeof z);
		break;
	}
	default:
		break;
	}
}

static int store_value(const bw_config *cfg, const struct bw_config_field *f, const json_t *v, char *p,
                       const struct apply_loc *at, bw_error *err)
{
	const char *key = f->key;
	switch (f->type) {
	case BW_FIELD_STRING:
	case BW_FIELD_SECRET:
	case BW_FIELD_PATH: {
		if (!json_is_string(v))
			return apply_fail(err, at, key, "expected %s, got %s",
			                  f->type == BW_FIELD_PATH ? "a path (string)" : "a string", value_kind(v));
		const char *s = json_string_value(v);
		char *dup;
		if (f->type == BW_FIELD_PATH) {
			if (!*s)
				return apply_fail(err, at, key, "a path must not be empty");
			if (s[0] == '/')
				dup = strdup(s);
			else if (asprintf(&dup, "%s/%s", cfg->base_dir, s) < 0)
				dup = NULL;
		} else {
			dup = strdup(s);
		}
		if (!dup)
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		memcpy(p, &dup, sizeof dup);
		return BW_OK;
	}
	case BW_FIELD_INT: {
		int64_t n;
		if (json_is_integer(v)) {
			n = (int64_t)json_integer_value(v);
		} else if (json_is_real(v)) {
			double d = json_real_value(v);
			if (d != floor(d) || d < -9.2233720368547758e18 || d >= 9.2233720368547758e18)
				return apply_fail(err, at, key, "expected an integer, got a fractional number");
			n = (int64_t)d;
		} else {
			return apply_fail(err, at, key, "expected an integer, got %s", value_kind(v));
		}
		if (f->min < f->max && (n < f->min || n > f->max))
			return apply_fail(err, at, key, "must be between %lld and %lld, got %lld", (long long)f->min,
			                  (long long)f->max, (long long)n);
		memcpy(p, &n, sizeof n);
		return BW_OK;
	}
	case BW_FIELD_BOOL: {
		if (!json_is_boolean(v))
			return apply_fail(err, at, key, "expected true or false, got %s", value_kind(v));
		bool b = json_is_true(v);
		memcpy(p, &b, sizeof b);
		return BW_OK;
	}
	case BW_FIELD_DOUBLE: {
		if (!json_is_number(v))
			return apply_fail(err, at, key, "expected a number, got %s", value_kind(v));
		double d = json_number_value(v);
		memcpy(p, &d, sizeof d);
		return BW_OK;
	}
	case BW_FIELD_STRINGS: {
		if (!json_is_array(v))
			return apply_fail(err, at, key, "expected a list of strings, got %s", value_kind(v));
		size_t n = json_array_size(v);
		for (size_t i = 0; i < n; i++) {
			if (!json_is_string(json_array_get(v, i))) {
				char k2[256];
				snprintf(k2, sizeof k2, "%s[%zu]", key, i + 1);
				return apply_fail(err, at, k2, "expected a string, got %s",
				                  value_kind(json_array_get(v, i)));
			}
		}
		/* offsetof() keeps the member aligned, so the instance can be written through its type */
		struct bw_strings *l = (struct bw_strings *)(void *)p;
		l->count = 0;
		l->items = n ? calloc(n, sizeof *l->items) : NULL;
		if (n && !l->items)
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		for (size_t i = 0; i < n; i++) {
			l->items[i] = strdup(json_string_value(json_array_get(v, i)));
			if (!l->items[i])
				return bw_error_set(err, BW_E_NOMEM, "out of memory"); /* freed by fields_free */
			l->count++;
		}
		return BW_OK;
	}
	case BW_FIELD_DURATION: {
		int64_t ms;
		if (json_is_integer(v)) {
			json_int_t s = json_integer_value(v);
			if (s < 0)
				return apply_fail(err, at, key, "a duration cannot be negative");
			if (__builtin_mul_overflow((int64_t)s, (int64_t)1000, &ms))
				return apply_fail(err, at, key, "duration too large");
		} else if (json_is_real(v)) {
			double d = json_real_value(v);
			if (d < 0)
				return apply_fail(err, at, key, "a duration cannot be negative");
			if (d * 1000.0 >= 9.2233720368547758e18)
				return apply_fail(err, at, key, "duration too large");
			ms = (int64_t)llround(d * 1000.0);
		} else if (json_is_string(v)) {
			if (bw_duration_parse(json_string_value(v), &ms) != BW_OK)
				return apply_fail(
				    err, at, key,
				    "invalid duration \"%.64s\" (use e.g. \"250ms\", \"30s\", \"5m\", \"2h\", "
				    "\"1d\", or a number of seconds)",
				    json_string_value(v));
		} else {
			return apply_fail(err, at, key,
			                  "expected a duration (seconds, or a string like \"30s\"), got %s",
			                  value_kind(v));
		}
		if (f->min < f->max && (ms < f->min || ms > f->max)) {
			char a[32], b[32], c[32];
			fmt_duration(f->min, a, sizeof a);
			fmt_duration(f->max, b, sizeof b);
			fmt_duration(ms, c, sizeof c);
			return apply_fail(err, at, key, "must be between %s and %s, got %s", a, b, c);
		}
		memcpy(p, &ms, sizeof ms);
		return BW_OK;
	}
	default:
		return apply_fail(err, at, key, "unsupported field type %u (a bug in the settings table)", f->type);
	}
}

int bw_config_apply(const bw_config *cfg, const char *section, const struct bw_config_field *fields, void *instance,
                    bw_error *err)
{
	bw_error_clear(err);
	if (!cfg || !section || (!instance && fields && fields->key))
		return bw_error_set(err, BW_E_INVALID, "bw_config_apply: missing argument");
	ssize_t si = section_index(cfg, section);
	const json_t *obj = si >= 0 ? cfg->data[si].value : NULL;
	const json_t *lines = si >= 0 ? cfg->data[si].lines : NULL;
	const char *sfile = si >= 0 ? cfg->sections[si].file : cfg->path;
	int sline = si >= 0 ? cfg->sections[si].line : 0;

	/* Unknown keys first; the one on the earliest line is reported, for a stable message. */
	if (obj) {
		const char *bad = NULL;
		int bad_line = 0;
		for (void *it = json_object_iter((json_t *)obj); it; it = json_object_iter_next((json_t *)obj, it)) {
			const char *k = json_object_iter_key(it);
			bool known = false;
			for (const struct bw_config_field *f = fields; f && f->key && !known; f++)
				known = strcmp(f->key, k) == 0;
			if (known)
				continue;
			int l = (int)json_integer_value(json_object_get(lines, k));
			if (!bad || l < bad_line || (l == bad_line && strcmp(k, bad) < 0))
				bad = k, bad_line = l;
		}
		if (bad) {
			char known[400];
			size_t n = 0;
			known[0] = '\0';
			for (const struct bw_config_field *f = fields; f && f->key && n < sizeof known; f++) {
				int w = snprintf(known + n, sizeof known - n, "%s%s", n ? ", " : "", f->key);
				if (w < 0)
					break;
				n += (size_t)w;
			}
			struct apply_loc at = {sfile, bad_line, section, false};
			if (n == 0)
				return apply_fail(err, &at, bad, "unknown setting (this section has no settings)");
			return apply_fail(err, &at, bad, "unknown setting (known: %s)", known);
		}
	}

	for (const struct bw_config_field *f = fields; f && f->key; f++) {
		char *p = (char *)instance + f->offset;
		const json_t *v = obj ? json_object_get(obj, f->key) : NULL;
		json_t *def = NULL;
		struct apply_loc at = {sfile, sline, section, false};
		if (v) {
			json_t *l = json_object_get(lines, f->key);
			if (l)
				at.line = (int)json_integer_value(l);
		} else if (f->flags & BW_FIELD_REQUIRED) {
			return apply_fail(err, &at, f->key, "required setting is missing");
		} else if (f->default_value) {
			def = parse_default(f->default_value);
			at.is_default = true;
			if (!def)
				return apply_fail(err, &at, f->key, "cannot parse it");
			v = def;
		} else {
			store_zero(f, p);
			continue;
		}
		int rc = store_value(cfg, f, v, p, &at, err);
		json_decref(def);
		if (rc != BW_OK)
			return rc;
	}
	return BW_OK;
}

void bw_config_fields_free(const struct bw_config_field *fields, void *instance)
{
	if (!instance)
		return;
	for (const struct bw_config_field *f = fields; f && f->key; f++) {
		char *p = (char *)instance + f->offset;
		switch (f->type) {
		case BW_FIELD_STRING:
		case BW_FIELD_SECRET:
		case BW_FIELD_PATH: {
			char *s;
			memcpy(&s, p, sizeof s);
			if (s && f->type == BW_FIELD_SECRET)
				explicit_bzero(s, strlen(s));
			free(s);
			s = NULL;
			memcpy(p, &s, sizeof s);
			break;
		}
		case BW_FIELD_STRINGS: {
			struct bw_strings l;
			memcpy(&l, p, sizeof l);
			for (size_t i = 0; l.items && i < l.count; i++)
				free(l.items[i]);
			free(l.items);
			l.items = NULL;
			l.count = 0;
			memcpy(p, &l, sizeof l);
			break;
		}
		default:
			break;
		}
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Reference documentation */

static const char *type_doc_name(uint32_t t)
{
	switch (t) {
	case BW_FIELD_STRING:
		return "string";
	case BW_FIELD_INT:
		return "integer";
	case BW_FIELD_BOOL:
		return "boolean";
	case BW_FIELD_DOUBLE:
		return "number";
	case BW_FIELD_STRINGS:
		return "list of strings";
	case BW_FIELD_SECRET:
		return "secret";
	case BW_FIELD_DURATION:
		return "duration";
	case BW_FIELD_PATH:
		return "path";
	default:
		return "unknown";
	}
}

/* Table cells: a '|' would end the cell, a newline the row. */
static void md_cell(FILE *f, const char *s)
{
	for (; s && *s; s++) {
		if (*s == '|')
			fputs("\\|", f);
		else if (*s == '\n' || *s == '\r')
			fputc(' ', f);
		else
			fputc(*s, f);
	}
}

char *bw_config_fields_markdown(const char *section, const char *title, const struct bw_config_field *fields)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	fputs("### ", f);
	fputs(title ? title : section ? section : "", f);
	fputs("\n\n", f);
	if (!fields || !fields->key) {
		fputs("This section has no settings.\n\n", f);
	} else {
		fputs("| Setting | Type | Default | Required | Description |\n", f);
		fputs("|---|---|---|---|---|\n", f);
		for (const struct bw_config_field *x = fields; x->key; x++) {
			fputs("| `", f);
			md_cell(f, section);
			fputc('.', f);
			md_cell(f, x->key);
			fputs("` | ", f);
			fputs(type_doc_name(x->type), f);
			fputs(" | ", f);
			if (x->default_value) {
				fputc('`', f);
				md_cell(f, x->default_value);
				fputc('`', f);
			} else {
				fputc('-', f);
			}
			fputs(x->flags & BW_FIELD_REQUIRED ? " | yes | " : " | no | ", f);
			md_cell(f, x->doc);
			fputs(" |\n", f);
		}
		fputc('\n', f);
	}
	bool bad = ferror(f) != 0;
	if (fclose(f) != 0 || bad) {
		free(buf);
		return NULL;
	}
	return buf;
}
