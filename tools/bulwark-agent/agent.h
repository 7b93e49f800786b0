/* agent.h: declarations shared by the bulwark-agent sources (the device simulator): exit codes,
 * the small utilities (messages, memory, files, randomness, signals), key and CSR handling, the
 * libcurl client with the protocol's retry rules, the on-disk device state and the commands. */
#ifndef BWA_AGENT_H
#define BWA_AGENT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "bulwark/errors.h"

#ifndef BWA_VERSION
#define BWA_VERSION "1.0.0"
#endif
#define BWA_AGENT_VERSION "1.0.0" /* the agent_version a simulated device reports */

/* Exit statuses, documented in docs/bulwark-agent.md; scripts rely on them. */
enum bwa_exit {
	BWA_EXIT_OK = 0,
	BWA_EXIT_FAIL = 1,        /* the server refused, or the command failed locally */
	BWA_EXIT_USAGE = 2,       /* unknown command or option, missing or bad argument */
	BWA_EXIT_UNREACHABLE = 3, /* cannot connect, TLS failed, or the server kept failing */
	BWA_EXIT_NOAUTH = 4       /* 401: the device certificate is no longer accepted */
};

#define BWA_MAX_BODY        (4u * 1024 * 1024) /* largest answer read from the server */
#define BWA_BACKOFF_BASE_S  2.0
#define BWA_BACKOFF_CAP_S   300.0
#define BWA_RETRY_AFTER_CAP 3600L /* a Retry-After above an hour is treated as an hour */

/* ---- util.c */
extern volatile sig_atomic_t bwa_stop; /* set by SIGINT/SIGTERM */
void bwa_signals_install(void);
/* Sleeps, waking early when a stop signal arrives; false when interrupted. */
bool bwa_sleep(double seconds);

/* "bulwark-agent: <message>" on stderr (control characters replaced); returns exit_code. */
int bwa_fail(int exit_code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bwa_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* One line on stdout, flushed (progress of `run` and `enroll`, read by scripts). */
void bwa_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Replaces control characters (text from the server is printed). */
void bwa_sanitize(char *s);

void *bwa_xmalloc(size_t size);
void *bwa_xcalloc(size_t n, size_t size);
void *bwa_xrealloc(void *p, size_t size);
char *bwa_xstrdup(const char *s);
char *bwa_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *bwa_path(const char *dir, const char *name);

int64_t bwa_now(void); /* Unix seconds */
double bwa_mono(void); /* monotonic seconds */
uint64_t bwa_mono_ns(void);

/* Randomness from OpenSSL's CSPRNG; exits when it fails (nothing sensible to do then). */
void bwa_random(void *buf, size_t len);
uint64_t bwa_random_u64(void);
double bwa_random_unit(void); /* [0, 1) */
void bwa_uuid(char out[37]);  /* a version 4 UUID */

/* Reads a whole file (NUL-terminated), refusing one above `max` bytes. */
int bwa_read_file(const char *path, size_t max, char **out, size_t *len, bw_error *err);
/* Replaces a file atomically (temporary file + rename) with mode `mode`; `durable` adds fsync. */
int bwa_write_file(const char *path, const char *data, size_t len, mode_t mode, bool durable, bw_error *err);
/* Creates a directory with mode 0700, or tightens an existing one to 0700. */
int bwa_mkdir_private(const char *path, bw_error *err);

bool bwa_parse_long(const char *s, long min, long max, long *out);
bool bwa_parse_seconds(const char *s, double min, double max, double *out); /* "30", "1.5", "10s", "2m" */
bool bwa_parse_onoff(const char *s, bool *out);
/* Checks a server base URL (https://host[:port][/prefix]) and returns it without trailing '/'. */
char *bwa_server_url(const char *s, bw_error *err);

/* ---- pki.c */
EVP_PKEY *bwa_key_generate(bw_error *err); /* ECDSA P-256 */
char *bwa_key_pem(EVP_PKEY *key);          /* unencrypted PKCS#8 PEM */
char *bwa_csr_pem(EVP_PKEY *key, bw_error *err);
EVP_PKEY *bwa_key_parse(const char *pem, bw_error *err);
X509 *bwa_cert_parse(const char *pem, bw_error *err);
/* Subject CN and notAfter of a certificate. */
int bwa_cert_info(X509 *cert, char *cn, size_t cn_size, int64_t *not_after, bw_error *err);
void bwa_random_imei(char out[16]); /* 15 digits, valid Luhn check digit */
void bwa_random_mac(char out[18]);  /* locally administered unicast */
void bwa_random_alnum(char *out, size_t len, bool upper_only);

/* ---- http.c: one keep-alive libcurl handle for `enroll`, `run` and `unenroll` */
struct bwa_http_config {
	const char *server;    /* base URL without trailing '/' */
	const char *ca_file;   /* NULL: the system trust store */
	const char *cert_file; /* client certificate (NULL for enrollment) */
	const char *key_file;
	long retries; /* retries of one request on 429/5xx/network errors; -1 = unlimited */
};

struct bwa_http {
	CURL *curl;
	struct bwa_http_config cfg;
	char errbuf[CURL_ERROR_SIZE];
};

struct bwa_response {
	long status; /* 0 when no HTTP answer arrived */
	char *body;  /* NUL-terminated, may be NULL */
	size_t body_len;
	json_t *json;     /* parsed body when it is a JSON object */
	long retry_after; /* seconds, -1 when absent */
	char etag[128];
	bool too_big;
};

/* Outcome of a request after the retry rules of docs/agent-protocol.md. */
enum bwa_outcome {
	BWA_DONE,        /* 2xx (or 304) */
	BWA_REFUSED,     /* 400, 403, 404, 409, 413, 422 and other 4xx: do not retry */
	BWA_NOAUTH,      /* 401: stop */
	BWA_UNREACHABLE, /* network or TLS errors, retries used up */
	BWA_FAILING,     /* 429, 5xx, retries used up */
	BWA_CANCELLED    /* a stop signal arrived */
};

int bwa_http_init(struct bwa_http *h, const struct bwa_http_config *cfg, bw_error *err);
void bwa_http_cleanup(struct bwa_http *h);
/* Forgets the pooled connection (after a certificate change). */
void bwa_http_reconnect(struct bwa_http *h);
/* One request. BW_OK when an HTTP answer arrived (any status); otherwise `err` says why
 * (connection, TLS, timeout, cancelled). */
int bwa_http_once(struct bwa_http *h, const char *method, const char *path, json_t *body, const char *if_none_match,
                  struct bwa_response *resp, bw_error *err);
/* A request under the retry rules: backoff with full jitter (2 s, 4 s, ... capped at 5 min),
 * Retry-After for 429/503, no retry for other 4xx, stop at 401. `what` names the request in
 * messages. `err` explains every outcome but BWA_DONE. */
enum bwa_outcome bwa_http_call(struct bwa_http *h, const char *what, const char *method, const char *path, json_t *body,
                               const char *if_none_match, struct bwa_response *resp, bw_error *err);
void bwa_response_free(struct bwa_response *r);
/* "code: message" from an error envelope, else the status and the start of the body. */
void bwa_response_describe(const struct bwa_response *r, char *buf, size_t size);
double bwa_backoff_delay(unsigned attempt); /* full jitter over 2^attempt * 2 s, capped */
int bwa_exit_for(enum bwa_outcome o);

/* ---- state.c: the state directory of one device */
struct bwa_profile {
	const char *platform, *os_version, *model, *manufacturer, *imei, *meid, *wifi_mac, *serial, *phone;
	bool push;
	const char *push_provider, *push_token; /* NULL: by platform (iOS apns, else fcm) / random */
};
/* A simulated device object for enrollment (random values where the profile has NULL). */
json_t *bwa_device_new(const struct bwa_profile *p);
json_t *bwa_inventory_new(const char *platform);
/* Inventory delta between what the server has (`reported`, NULL = nothing) and `current`;
 * NULL when nothing changed. A NULL `reported` gives the full snapshot. */
json_t *bwa_inventory_delta(json_t *current, json_t *reported);

struct bwa_state {
	char *dir;
	json_t *doc; /* device.json */
};
/* Writes a freshly enrolled device: key.pem (0600), cert.pem, ca.pem, server-ca.pem (copy of
 * `server_ca`, if any) and device.json. */
int bwa_state_write_new(const char *dir, const char *server, const char *server_ca_pem, const char *key_pem,
                        json_t *answer, json_t *device, bool durable, bw_error *err);
int bwa_state_load(const char *dir, struct bwa_state *st, bw_error *err);
int bwa_state_save(struct bwa_state *st, bw_error *err);
void bwa_state_free(struct bwa_state *st);
/* True when DIR holds an enrolled device (device.json exists). */
bool bwa_state_exists(const char *dir);

/* ---- schedule.c: the applied policy (policy.json) and its scheduled malware scans */
struct bwa_schedule {
	bool enabled;
	bool weekly;       /* false: daily */
	int minute_of_day; /* HH*60 + MM, UTC */
	unsigned days;     /* bit N = weekday N (0 = Sunday, as tm_wday); 0 = every day */
	char scope[32];
};
/* malware_scan.scheduled of a policy document (device form). A policy without one, or with
 * enabled false, gives enabled = false and BW_OK; a malformed one BW_E_INVALID naming the field. */
int bwa_schedule_from_policy(json_t *policy, struct bwa_schedule *s, bw_error *err);
/* The first scheduled time at or after t (Unix seconds), or -1 when the schedule is off. */
int64_t bwa_schedule_next(const struct bwa_schedule *s, int64_t t);
/* "daily at 09:00 UTC, scope all" / "weekly on mon,thu at 22:30 UTC, scope all" / "off". */
void bwa_schedule_describe(const struct bwa_schedule *s, char *buf, size_t size);
/* The data of a scheduled scan_finished event at simulated time t. */
json_t *bwa_schedule_event_data(const struct bwa_schedule *s, int64_t t, const char *policy_version, size_t napps);
/* "2026-12-01T09:00:00Z". */
void bwa_rfc3339(int64_t t, char out[32]);
/* Unix seconds or an RFC 3339 time ("2026-12-01T09:00:00Z", offsets allowed). */
bool bwa_parse_time(const char *s, int64_t *out);
/* policy.json of a state directory: {"version", "etag", "fetched_at", "policy"}; *out NULL and BW_OK
 * when no policy was applied yet. */
int bwa_policy_load(const char *dir, json_t **out, bw_error *err);
/* Reads a policy document from a file: a bare document, or an object with a "policy" member (the
 * agent's policy.json or the server's answer). */
int bwa_policy_read_file(const char *path, json_t **out, bw_error *err);

/* ---- push.c: the simulated push token and the wake-up listener */
struct bwa_wake {
	int fd; /* listening socket on 127.0.0.1, -1 when none */
	int port;
	unsigned long wakes;
};
/* A random token of the provider's shape: APNs 64 hex digits, FCM "<instance id>:APA91b...". */
void bwa_push_token(const char *provider, char *out, size_t size);
/* Listens on 127.0.0.1:<free port> for POST /wake. */
int bwa_wake_listen(struct bwa_wake *w, bw_error *err);
/* Waits up to `seconds` (sleeps when there is no listener); answers any request that arrives;
 * true when it was a POST /wake. Returns early on a stop signal. */
bool bwa_wake_poll(struct bwa_wake *w, double seconds);
void bwa_wake_close(struct bwa_wake *w);
/* POST <sim>/_sim/register {"token", "wake_url"} (http:// or https://, verified with `ca`). */
int bwa_push_register(const char *sim_url, const char *ca, const char *token, const char *wake_url, bw_error *err);

/* ---- commands */
int bwa_cmd_enroll(int argc, char **argv);
int bwa_cmd_run(int argc, char **argv);
int bwa_cmd_unenroll(int argc, char **argv);
int bwa_cmd_status(int argc, char **argv);
int bwa_cmd_load(int argc, char **argv);
int bwa_cmd_policy(int argc, char **argv);
int bwa_cmd_simulate_schedule(int argc, char **argv);

/* Shared by enroll and load: the enrollment request body for a new key. */
json_t *bwa_enroll_body(const char *method, const char *key, const char *email, const char *code, const char *csr,
                        json_t *device);
/* Checks a 201 answer: device_id and certificate present. */
int bwa_enroll_answer_check(json_t *answer, bw_error *err);

#endif
