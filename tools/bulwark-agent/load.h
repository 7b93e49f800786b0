/* load.h: the load generator of bulwark-agent: the devices it drives, the target, the latency
 * histogram and the raw OpenSSL + epoll engine (loadnet.c) that runs keep-alive HTTP/1.1
 * connections, each presenting one device's certificate. */
#ifndef BWA_LOAD_H
#define BWA_LOAD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "agent.h"

/* One enrolled device as the load generator knows it. */
struct bwa_load_device {
	char id[64];
	X509 *cert;
	EVP_PKEY *key;
	SSL_SESSION *session; /* for resumption when its connection is re-opened */
};

/* Where requests go, and the request bytes (the same for every connection). */
struct bwa_load_target {
	bool tls;
	char host[256]; /* without brackets */
	char port[8];
	char *path;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	const char *ca_file;
	char *request;
	size_t request_len;
};

/* Parses http(s)://host[:port][/path], resolves the host and builds the request: a GET, or a
 * POST of `body` (JSON) when body is not NULL. `extra_path` is appended to the URL's path. */
int bwa_load_target_init(struct bwa_load_target *t, const char *url, const char *extra_path, const char *body,
                         const char *ca_file, bw_error *err);
void bwa_load_target_free(struct bwa_load_target *t);

/* Latency histogram in microseconds: exact below 512 us, then 256 sub-buckets per power of two
 * (under 0.4% error), up to about 2^40 us. */
#define BWA_HIST_SUB_BITS 8
#define BWA_HIST_BUCKETS  ((40 - BWA_HIST_SUB_BITS + 1) << BWA_HIST_SUB_BITS)
struct bwa_hist {
	uint64_t counts[BWA_HIST_BUCKETS];
	uint64_t total, max_us, sum_us;
};
void bwa_hist_add(struct bwa_hist *h, uint64_t us);
void bwa_hist_merge(struct bwa_hist *into, const struct bwa_hist *from);
double bwa_hist_percentile_ms(const struct bwa_hist *h, double pct);

/* Counters of one worker thread, read by the main thread for the progress line. */
enum bwa_load_err { BWA_LE_CONNECT, BWA_LE_TLS, BWA_LE_IO, BWA_LE_TIMEOUT, BWA_LE_PARSE, BWA_LE_COUNT };
struct bwa_load_counters {
	_Atomic uint64_t requests; /* responses received, measured or not */
	_Atomic uint64_t measured, s2xx, s3xx, s4xx, s5xx, s401, s429;
	_Atomic uint64_t errors[BWA_LE_COUNT];
	_Atomic uint64_t connections, resumed, server_closed;
};

struct bwa_load_params {
	struct bwa_load_target *target;
	struct bwa_load_device *devices; /* NULL in plain URL mode */
	size_t ndevices;
	unsigned connections, threads;
	double warmup, duration, timeout;
	unsigned long reconnect_every; /* 0 = keep each connection (and its device) */
	bool progress;
};

struct bwa_load_result {
	struct bwa_load_counters totals; /* plain copies, summed over threads */
	struct bwa_hist hist;
	double elapsed; /* seconds of the measured window */
	char first_error[BWA_LE_COUNT][256];
	bool interrupted;
};

/* Runs the check-in phase; fills `res`. */
int bwa_load_run(const struct bwa_load_params *p, struct bwa_load_result *res, bw_error *err);

#endif
