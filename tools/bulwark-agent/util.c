/* util.c: bulwark-agent's small utilities: messages, allocation, time, randomness, atomic file
 * writes, number parsing and the stop signals. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "agent.h"

volatile sig_atomic_t bwa_stop;

static void on_stop_signal(int sig)
{
	(void)sig;
	bwa_stop = 1;
}

void bwa_signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: a blocking poll or sleep returns with EINTR and the loops notice. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

bool bwa_sleep(double seconds)
{
	double end = bwa_mono() + seconds;

	while (!bwa_stop) {
		double left = end - bwa_mono();
		struct timespec ts;

		if (left <= 0)
			return true;
		/* Short slices: a signal may arrive just before nanosleep starts. */
		if (left > 0.2)
			left = 0.2;
		ts.tv_sec = (time_t)left;
		ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
		nanosleep(&ts, NULL);
	}
	return false;
}

void bwa_sanitize(char *s)
{
	for (; *s; s++)
		if (iscntrl((unsigned char)*s))
			*s = '?';
}

static void print_message(FILE *f, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void print_message(FILE *f, const char *prefix, const char *fmt, va_list ap)
{
	char buf[2048];

	vsnprintf(buf, sizeof buf, fmt, ap);
	bwa_sanitize(buf);
	fflush(stdout);
	fprintf(f, "%s%s\n", prefix, buf);
	fflush(f);
}

int bwa_fail(int exit_code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	print_message(stderr, "bulwark-agent: ", fmt, ap);
	va_end(ap);
	return exit_code;
}

void bwa_warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	print_message(stderr, "bulwark-agent: warning: ", fmt, ap);
	va_end(ap);
}

void bwa_say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	print_message(stdout, "", fmt, ap);
	va_end(ap);
}

static void out_of_memory(void)
{
	fputs("bulwark-agent: out of memory\n", stderr);
	exit(BWA_EXIT_FAIL);
}

void *bwa_xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (!p)
		out_of_memory();
	return p;
}

void *bwa_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		out_of_memory();
	return p;
}

void *bwa_xrealloc(void *p, size_t size)
{
	void *q = realloc(p, size ? size : 1);

	if (!q)
		out_of_memory();
	return q;
}

char *bwa_xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		out_of_memory();
	return p;
}

char *bwa_xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		out_of_memory();
	return s;
}

char *bwa_path(const char *dir, const char *name)
{
	return bwa_xasprintf("%s/%s", dir, name);
}

int64_t bwa_now(void)
{
	return (int64_t)time(NULL);
}

double bwa_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t bwa_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bwa_random(void *buf, size_t len)
{
	if (len > INT_MAX || RAND_bytes(buf, (int)len) != 1) {
		fputs("bulwark-agent: the system could not supply random bytes\n", stderr);
		exit(BWA_EXIT_FAIL);
	}
}

uint64_t bwa_random_u64(void)
{
	uint64_t v;

	bwa_random(&v, sizeof v);
	return v;
}

double bwa_random_unit(void)
{
	return (double)(bwa_random_u64() >> 11) / 9007199254740992.0; /* 53 bits / 2^53 */
}

void bwa_uuid(char out[37])
{
	unsigned char b[16];

	bwa_random(b, sizeof b);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
	         b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

int bwa_read_file(const char *path, size_t max, char **out, size_t *len, bw_error *err)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;

	*out = NULL;
	if (!f)
		return bw_error_set(err, errno == ENOENT ? BW_E_NOTFOUND : BW_E_IO, "cannot open %s: %s", path,
		                    strerror(errno));
	for (;;) {
		size_t got;

		if (n == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = bwa_xrealloc(buf, cap + 1);
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (n > max) {
			fclose(f);
			free(buf);
			return bw_error_set(err, BW_E_LIMIT, "%s is too large (over %zu bytes)", path, max);
		}
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		int e = errno;

		fclose(f);
		free(buf);
		return bw_error_set(err, BW_E_IO, "cannot read %s: %s", path, strerror(e));
	}
	fclose(f);
	if (!buf)
		buf = bwa_xmalloc(1);
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return BW_OK;
}

int bwa_write_file(const char *path, const char *data, size_t len, mode_t mode, bool durable, bw_error *err)
{
	char *tmp = bwa_xasprintf("%s.tmpXXXXXX", path);
	int fd = mkstemp(tmp);
	size_t off = 0;

	if (fd < 0) {
		int e = errno;

		free(tmp);
		return bw_error_set(err, BW_E_IO, "cannot create a file next to %s: %s", path, strerror(e));
	}
	if (fchmod(fd, mode) != 0)
		goto fail;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			goto fail;
		off += (size_t)w;
	}
	if (durable && fsync(fd) != 0)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto fail;
	free(tmp);
	return BW_OK;
fail : {
	int e = errno;

	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return bw_error_set(err, BW_E_IO, "cannot write %s: %s", path, strerror(e));
}
}

int bwa_mkdir_private(const char *path, bw_error *err)
{
	struct stat st;

	if (mkdir(path, 0700) == 0)
		return BW_OK;
	if (errno != EEXIST)
		return bw_error_set(err, BW_E_IO, "cannot create directory %s: %s", path, strerror(errno));
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return bw_error_set(err, BW_E_IO, "%s exists and is not a directory", path);
	if ((st.st_mode & 077) && chmod(path, 0700) != 0)
		return bw_error_set(err, BW_E_IO, "cannot restrict %s to mode 0700: %s", path, strerror(errno));
	return BW_OK;
}

bool bwa_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (!s || !*s || isspace((unsigned char)*s))
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool bwa_parse_seconds(const char *s, double min, double max, double *out)
{
	char *end;
	double v, unit = 1;

	if (!s || !*s || isspace((unsigned char)*s))
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || !isfinite(v))
		return false;
	if (strcmp(end, "ms") == 0)
		unit = 0.001;
	else if (strcmp(end, "s") == 0 || *end == '\0')
		unit = 1;
	else if (strcmp(end, "m") == 0)
		unit = 60;
	else if (strcmp(end, "h") == 0)
		unit = 3600;
	else
		return false;
	v *= unit;
	if (v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool bwa_parse_onoff(const char *s, bool *out)
{
	if (strcmp(s, "on") == 0 || strcmp(s, "true") == 0 || strcmp(s, "1") == 0 || strcmp(s, "yes") == 0) {
		*out = true;
		return true;
	}
	if (strcmp(s, "off") == 0 || strcmp(s, "false") == 0 || strcmp(s, "0") == 0 || strcmp(s, "no") == 0) {
		*out = false;
		return true;
	}
	return false;
}

char *bwa_server_url(const char *s, bw_error *err)
{
	size_t n;
	char *u;

	if (strncmp(s, "https://", 8) != 0 || !s[8] || s[8] == '/')
		return bw_error_set(err, BW_E_INVALID, "server URL %s must be https://HOST[:PORT]", s), NULL;
	if (strpbrk(s, "?# \t\r\n")) {
		bw_error_set(err, BW_E_INVALID, "server URL %s must not contain a query, fragment or spaces", s);
		return NULL;
	}
	u = bwa_xstrdup(s);
	n = strlen(u);
	while (n > 8 && u[n - 1] == '/')
		u[--n] = '\0';
	return u;
}
