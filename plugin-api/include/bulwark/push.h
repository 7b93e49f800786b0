/* bulwark/push.h: the "push" capability: a provider that wakes devices (APNs, FCM), registered
 * with host->capability_register(ctx, "push", &ops, sizeof ops, arg, err) during init.
 * The host calls send() when a command or a policy change is queued for a device whose push
 * token belongs to this provider, and for `bulwarkctl push test`. The plugin owns transport,
 * authentication, retries and backoff; it reports one final outcome per message. The host
 * marks tokens invalid, emits "push.token_invalid" and stops sending to them. */
#ifndef BULWARK_PUSH_H
#define BULWARK_PUSH_H

#include <bulwark/errors.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum bw_push_outcome {
	BW_PUSH_SENT = 0,          /* accepted by the provider */
	BW_PUSH_TOKEN_INVALID = 1, /* the token is gone for good (APNs 410 / BadDeviceToken, FCM UNREGISTERED) */
	BW_PUSH_FAILED = 2         /* refused for good, or retries exhausted: `reason` says why */
};

/* One wake-up. Every pointer is borrowed for the duration of send() only. */
struct bw_push_message {
	uint32_t size;          /* sizeof(struct bw_push_message) */
	const char *device_id;  /* for logs, metrics and the payload; may be NULL */
	const char *token;      /* the device's push token (APNs hex device token, FCM registration token) */
	const char *push_magic; /* APNs MDM pushes: the device's PushMagic; NULL for app pushes */
	const char *reason;     /* "command", "policy" or "test" (sent in the payload's data) */
	const char *command_id; /* the command that caused it, or NULL */
	bool high_priority;     /* APNs priority 10 / FCM HIGH when true, else 5 / NORMAL */
	uint32_t ttl_s;         /* how long the provider may hold it; 0 = the plugin's default */
};

/* The final outcome, valid only during the done callback. */
struct bw_push_result {
	int outcome; /* enum bw_push_outcome */
	const char
	    *reason; /* provider reason ("Unregistered", "QUOTA_EXCEEDED"...) or transport error; NULL when sent */
	long status; /* last HTTP status, 0 when none */
	unsigned attempts; /* requests made, retries included */
	const char *id;    /* the provider's message id when sent (apns-id, FCM message name), or NULL */
};

typedef void (*bw_push_done_fn)(const struct bw_push_result *res, void *arg);

struct bw_push_ops {
	uint32_t size;        /* sizeof(struct bw_push_ops) */
	const char *provider; /* "apns" or "fcm": matches the device's push.provider */
	/* Queues one message; `done` runs exactly once on the loop thread, after retries, unless
	 * send() fails: BW_E_INVALID (malformed token), BW_E_LIMIT (queue full), BW_E_STATE (the
	 * plugin is not started or is stopping). Loop thread. At stop, the plugin finishes (or
	 * fails with reason "stopping") every message it still holds: no done is ever lost. */
	int (*send)(void *arg, const struct bw_push_message *msg, bw_push_done_fn done, void *done_arg, bw_error *err);
};

#ifdef __cplusplus
}
#endif
#endif
