/* host/services/log.c: the host's logger (text or JSON lines on stderr, one write per line). */
#include "log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int g_level = BW_LOG_INFO;
static bool g_json = false;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void bw_log_configure(int level, bool json)
{
	if (level >= BW_LOG_ERROR && level <= BW_LOG_DEBUG)
		__atomic_store_n(&g_level, level, __ATOMIC_RELAXED);
	__atomic_store_n(&g_json, json, __ATOMIC_RELAXED);
}

int bw_log_level(void)
{
	return __atomic_load_n(&g_level, __ATOMIC_RELAXED);
}

int bw_log_level_parse(const char *name)
{
	for (int i = 0; name && i < 4; i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	if (name && strcmp(name, "warning") == 0)
		return BW_LOG_WARN;
	return -1;
}

void bw_logv(int level, const char *component, const char *fmt, va_list ap)
{
	if (level > bw_log_level() || level < 0)
		return;
	char msg[2048];
	vsnprintf(msg, sizeof msg, fmt, ap);

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[96];
	snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long)(ts.tv_nsec / 1000000) % 1000);

	char line[2600];
	int n;
	if (__atomic_load_n(&g_json, __ATOMIC_RELAXED)) {
		json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "time", stamp, "level", level_names[level], "component",
		                      component ? component : "host", "message", msg);
		char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
		n = snprintf(line, sizeof line, "%s\n", s ? s : "{}");
		free(s);
		json_decref(o);
	} else {
		n = snprintf(line, sizeof line, "%s %-5s [%s] %s\n", stamp, level_names[level],
		             component ? component : "host", msg);
	}
	if (n < 0)
		return;
	if ((size_t)n >= sizeof line)
		n = (int)sizeof line - 1, line[n - 1] = '\n';
	/* One write() per line keeps lines whole between threads. */
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
}

void bw_log(int level, const char *component, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bw_logv(level, component, fmt, ap);
	va_end(ap);
}
