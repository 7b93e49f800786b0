/* host/services/log.h: the host's logger: levels, text or JSON lines on stderr, thread-safe. */
#ifndef BW_LOG_H
#define BW_LOG_H

#include <bulwark/host.h>
#include <stdarg.h>
#include <stdbool.h>

/* Sets the threshold (enum bw_log_level) and the format (json = one JSON object per line). */
void bw_log_configure(int level, bool json);
int bw_log_level(void);
/* Parses "error", "warn", "info", "debug"; returns -1 for anything else. */
int bw_log_level_parse(const char *name);

/* `component` is "host", a service name, or a plugin's name. Never pass secrets. */
void bw_log(int level, const char *component, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void bw_logv(int level, const char *component, const char *fmt, va_list ap);

#define bw_log_error(comp, ...) bw_log(BW_LOG_ERROR, comp, __VA_ARGS__)
#define bw_log_warn(comp, ...)  bw_log(BW_LOG_WARN, comp, __VA_ARGS__)
#define bw_log_info(comp, ...)  bw_log(BW_LOG_INFO, comp, __VA_ARGS__)
#define bw_log_debug(comp, ...) bw_log(BW_LOG_DEBUG, comp, __VA_ARGS__)

#endif
