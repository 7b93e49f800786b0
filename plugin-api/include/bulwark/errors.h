/* bulwark/errors.h: stable error codes and the error out-parameter used across the plugin ABI.
 *
 * Codes are part of ABI v1: they are never renumbered and never reused. New codes are
 * appended. Every function that can fail returns one of these (BW_OK on success) and, when
 * given a non-NULL `bw_error *`, fills it with the code and a human-readable message. */
#ifndef BULWARK_ERRORS_H
#define BULWARK_ERRORS_H

#include <stdarg.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum bw_status {
	BW_OK = 0,
	BW_E_INVALID = 1,    /* bad argument or input (names the field) */
	BW_E_NOMEM = 2,      /* allocation failed */
	BW_E_NOTFOUND = 3,   /* no such object */
	BW_E_EXISTS = 4,     /* object already exists */
	BW_E_IO = 5,         /* file or socket error */
	BW_E_TLS = 6,        /* TLS or certificate error */
	BW_E_TIMEOUT = 7,    /* deadline passed */
	BW_E_REMOTE = 8,     /* remote service answered with an error */
	BW_E_DB = 9,         /* database error */
	BW_E_STATE = 10,     /* call not allowed now (e.g. registering after init) */
	BW_E_LIMIT = 11,     /* a size or count limit was reached */
	BW_E_DENIED = 12,    /* authentication or authorization refused */
	BW_E_ABI = 13,       /* plugin ABI mismatch */
	BW_E_CONFIG = 14,    /* configuration error */
	BW_E_NOTIMPL = 15,   /* not implemented */
	BW_E_BUSY = 16,      /* try again later (e.g. stop refused while draining) */
	BW_E_CANCELLED = 17, /* operation cancelled */
	BW_E_RANDOM = 18,    /* the system could not supply randomness */
	BW_E_INTERNAL = 19   /* a bug: report it */
};

/* Caller-allocated error out-parameter. `message` is always NUL-terminated. */
typedef struct bw_error {
	int code;
	char message[512];
} bw_error;

/* Fills `err` (when not NULL) and returns `code`, so callers can `return bw_error_set(...)`. */
static inline int bw_error_set(bw_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static inline int bw_error_set(bw_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		vsnprintf(err->message, sizeof err->message, fmt, ap);
		va_end(ap);
	}
	return code;
}

static inline void bw_error_clear(bw_error *err)
{
	if (err) {
		err->code = 0;
		err->message[0] = '\0';
	}
}

/* A stable, short name for a code ("invalid", "not_found", ...), used in JSON error envelopes. */
static inline const char *bw_status_name(int code)
{
	static const char *const names[] = {"ok",     "invalid", "no_memory", "not_found",       "exists", "io",
	                                    "tls",    "timeout", "remote",    "database",        "state",  "limit",
	                                    "denied", "abi",     "config",    "not_implemented", "busy",   "cancelled",
	                                    "random", "internal"};
	if (code < 0 || (unsigned)code >= sizeof names / sizeof names[0])
		return "internal";
	return names[code];
}

#ifdef __cplusplus
}
#endif
#endif
