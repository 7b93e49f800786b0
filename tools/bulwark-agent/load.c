/* load.c: `bulwark-agent load`: enrolls --devices N simulated devices (or reuses them from
 * --state-dir), in parallel over C connections with libcurl multi, then drives check-ins from
 * them with the raw engine of loadnet.c for --duration seconds and reports requests/s, latency
 * percentiles and errors. With --url it instead sends plain GETs without client certificates
 * (the nginx baseline). */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "load.h"

#define MAX_DEVICES      10000000L
#define MAX_CONNECTIONS  100000L
#define ENROLL_ATTEMPTS  8
#define ENROLL_TIMEOUT_S 60L

struct load_opts {
	const char *server, *url, *ca, *key, *state_dir, *platform;
	long devices, connections, threads, reconnect_every;
	double duration, warmup, timeout;
	bool json, quiet;
};

/* ---- enrollment over libcurl multi */

struct ejob {
	size_t index;
	unsigned attempts;
	double not_before;
	EVP_PKEY *key;
	char *key_pem, *body;
	json_t *device;
	char *resp;
	size_t resp_len;
	long retry_after;
	bool too_big;
};

struct eslot {
	CURL *easy;
	struct curl_slist *headers;
	struct ejob *job;
	char errbuf[CURL_ERROR_SIZE];
};

struct enroller {
	const struct load_opts *o;
	const char *server;
	char *url, *ca_pem;
	struct bwa_load_device *devices;
	size_t *todo, ntodo, next_todo;
	struct ejob **waiting;
	size_t nwaiting;
	size_t enrolled, failed;
	unsigned concurrency;
	bool fatal;
	char last_error[1024];
};

static void job_free(struct ejob *j)
{
	if (!j)
		return;
	EVP_PKEY_free(j->key);
	if (j->key_pem) {
		OPENSSL_cleanse(j->key_pem, strlen(j->key_pem));
		free(j->key_pem);
	}
	free(j->body);
	free(j->resp);
	json_decref(j->device);
	free(j);
}

static size_t job_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct ejob *j = arg;
	size_t len = size * nmemb;

	if (len > BWA_MAX_BODY || j->resp_len > BWA_MAX_BODY - len) {
		j->too_big = true;
		return 0;
	}
	j->resp = bwa_xrealloc(j->resp, j->resp_len + len + 1);
	memcpy(j->resp + j->resp_len, data, len);
	j->resp_len += len;
	j->resp[j->resp_len] = '\0';
	return len;
}

static size_t job_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct ejob *j = arg;
	size_t len = size * nmemb;

	if (len > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
		char buf[32];
		size_t n = len - 12 < sizeof buf - 1 ? len - 12 : sizeof buf - 1;
		long v;

		memcpy(buf, data + 12, n);
		buf[n] = '\0';
		v = strtol(buf, NULL, 10);
		if (v >= 0)
			j->retry_after = v > BWA_RETRY_AFTER_CAP ? BWA_RETRY_AFTER_CAP : v;
	}
	return len;
}

static struct ejob *job_new(struct enroller *e, size_t index, bw_error *err)
{
	struct ejob *j = bwa_xcalloc(1, sizeof *j);
	struct bwa_profile prof = {.platform = e->o->platform};
	json_t *body;
	char *csr;

	j->index = index;
	j->retry_after = -1;
	if (!(j->key = bwa_key_generate(err)) || !(csr = bwa_csr_pem(j->key, err))) {
		job_free(j);
		return NULL;
	}
	j->key_pem = bwa_key_pem(j->key);
	j->device = bwa_device_new(&prof);
	body = bwa_enroll_body("key", e->o->key, NULL, NULL, csr, j->device);
	j->body = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	free(csr);
	return j;
}

static void slot_start(CURLM *m, struct eslot *s, struct ejob *j)
{
	free(j->resp);
	j->resp = NULL;
	j->resp_len = 0;
	j->retry_after = -1;
	j->too_big = false;
	s->job = j;
	s->errbuf[0] = '\0';
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, j->body);
	curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(j->body));
	curl_easy_setopt(s->easy, CURLOPT_WRITEDATA, j);
	curl_easy_setopt(s->easy, CURLOPT_HEADERDATA, j);
	curl_multi_add_handle(m, s->easy);
}

static void job_retry(struct enroller *e, struct ejob *j, const char *why)
{
	double delay;

	snprintf(e->last_error, sizeof e->last_error, "%s", why);
	if (++j->attempts >= ENROLL_ATTEMPTS) {
		e->failed++;
		job_free(j);
		return;
	}
	delay = j->retry_after >= 0 ? (double)j->retry_after : bwa_backoff_delay(j->attempts - 1);
	j->not_before = bwa_mono() + delay;
	e->waiting[e->nwaiting++] = j;
}

static char *device_dir(const char *state_dir, size_t index)
{
	return bwa_xasprintf("%s/d%07zu", state_dir, index);
}

/* A finished enrollment request. */
static void job_done(struct enroller *e, struct eslot *s, CURLcode rc)
{
	struct ejob *j = s->job;
	struct bwa_response r = {0};
	long status = 0;
	char why[700];

	s->job = NULL;
	if (rc != CURLE_OK) {
		snprintf(why, sizeof why, "enroll: %s", s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
		if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
			snprintf(e->last_error, sizeof e->last_error, "%s", why);
			e->fatal = true;
			job_free(j);
			return;
		}
		job_retry(e, j, why);
		return;
	}
	curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
	r.status = status;
	r.body = j->resp;
	r.body_len = j->resp_len;
	r.json = j->resp ? json_loads(j->resp, 0, NULL) : NULL;
	if (status == 429 || status >= 500) {
		bwa_response_describe(&r, why, sizeof why);
		json_decref(r.json);
		job_retry(e, j, why);
		return;
	}
	if (status < 200 || status >= 300) {
		bwa_response_describe(&r, why, sizeof why);
		snprintf(e->last_error, sizeof e->last_error, "enrollment refused: %s", why);
		e->fatal = true; /* the same key will be refused again: stop */
		json_decref(r.json);
		job_free(j);
		return;
	}
	{
		bw_error err = {0};
		struct bwa_load_device *d = &e->devices[j->index];
		const char *id;
		X509 *cert;

		if (bwa_enroll_answer_check(r.json, &err) != BW_OK ||
		    !(cert = bwa_cert_parse(json_string_value(json_object_get(r.json, "certificate")), &err))) {
			snprintf(e->last_error, sizeof e->last_error, "enroll: %s", err.message);
			e->fatal = true;
			json_decref(r.json);
			job_free(j);
			return;
		}
		if (X509_check_private_key(cert, j->key) != 1) {
			snprintf(e->last_error, sizeof e->last_error,
			         "enroll: the server returned a certificate for another key");
			e->fatal = true;
			X509_free(cert);
			json_decref(r.json);
			job_free(j);
			return;
		}
		id = json_string_value(json_object_get(r.json, "device_id"));
		snprintf(d->id, sizeof d->id, "%s", id);
		d->cert = cert;
		d->key = j->key;
		j->key = NULL;
		if (e->o->state_dir) {
			char *dir = device_dir(e->o->state_dir, j->index);

			if (bwa_state_write_new(dir, e->server, e->ca_pem, j->key_pem, r.json, j->device, false,
			                        &err) != BW_OK) {
				snprintf(e->last_error, sizeof e->last_error, "%s", err.message);
				e->fatal = true;
			}
			free(dir);
		}
		e->enrolled++;
		json_decref(r.json);
		job_free(j);
	}
}

static struct ejob *next_job(struct enroller *e, bw_error *err)
{
	double now = bwa_mono();

	for (size_t i = 0; i < e->nwaiting; i++) {
		if (e->waiting[i]->not_before <= now) {
			struct ejob *j = e->waiting[i];

			e->waiting[i] = e->waiting[--e->nwaiting];
			return j;
		}
	}
	/* New devices only while few are waiting to retry: a failing server gets no flood. */
	if (e->next_todo < e->ntodo && e->nwaiting < e->concurrency)
		return job_new(e, e->todo[e->next_todo++], err);
	return NULL;
}

static int enroll_devices(struct enroller *e, unsigned concurrency)
{
	CURLM *m = curl_multi_init();
	struct eslot *slots = bwa_xcalloc(concurrency, sizeof *slots);
	double start = bwa_mono(), last = start;
	size_t last_done = 0;
	int ret = BWA_EXIT_OK;

	e->concurrency = concurrency;
	e->waiting = bwa_xcalloc(e->ntodo + 1, sizeof *e->waiting);
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)concurrency);
	curl_multi_setopt(m, CURLMOPT_MAXCONNECTS, (long)concurrency);
	for (unsigned i = 0; i < concurrency; i++) {
		CURL *c = curl_easy_init();

		slots[i].easy = c;
		curl_easy_setopt(c, CURLOPT_URL, e->url);
		curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
		curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
		curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
		if (e->o->ca)
			curl_easy_setopt(c, CURLOPT_CAINFO, e->o->ca);
		curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
		curl_easy_setopt(c, CURLOPT_TIMEOUT, ENROLL_TIMEOUT_S);
		curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(c, CURLOPT_USERAGENT, "bulwark-agent/" BWA_VERSION);
		curl_easy_setopt(c, CURLOPT_ERRORBUFFER, slots[i].errbuf);
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, job_body);
		curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, job_header);
		curl_easy_setopt(c, CURLOPT_PRIVATE, &slots[i]);
		slots[i].headers = curl_slist_append(NULL, "Content-Type: application/json");
		slots[i].headers = curl_slist_append(slots[i].headers, "Accept: application/json");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, slots[i].headers);
	}
	while (!e->fatal && !bwa_stop && e->enrolled + e->failed < e->ntodo) {
		int running = 0, q;
		CURLMsg *msg;
		double now;

		for (unsigned i = 0; i < concurrency && !e->fatal; i++) {
			if (!slots[i].job) {
				bw_error err = {0};
				struct ejob *j = next_job(e, &err);

				if (j)
					slot_start(m, &slots[i], j);
				else if (err.message[0]) {
					snprintf(e->last_error, sizeof e->last_error, "%s", err.message);
					e->fatal = true;
				}
			}
		}
		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &q))) {
			struct eslot *s = NULL;

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
			curl_multi_remove_handle(m, msg->easy_handle);
			job_done(e, s, msg->data.result);
		}
		now = bwa_mono();
		if (now - last >= 1.0) {
			size_t done = e->enrolled;

			if (!e->o->quiet)
				fprintf(stderr, "enrolled %zu/%zu, %.0f/s%s\n", done, e->ntodo,
				        (double)(done - last_done) / (now - last),
				        e->nwaiting ? " (some retrying)" : "");
			last = now;
			last_done = done;
		}
		curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	for (unsigned i = 0; i < concurrency; i++) {
		if (slots[i].job) {
			curl_multi_remove_handle(m, slots[i].easy);
			job_free(slots[i].job);
		}
		curl_easy_cleanup(slots[i].easy);
		curl_slist_free_all(slots[i].headers);
	}
	for (size_t i = 0; i < e->nwaiting; i++)
		job_free(e->waiting[i]);
	free(e->waiting);
	free(slots);
	curl_multi_cleanup(m);
	if (e->fatal)
		ret = bwa_fail(BWA_EXIT_FAIL, "load: %s", e->last_error);
	else if (bwa_stop)
		ret = bwa_fail(BWA_EXIT_FAIL, "load: interrupted during enrollment");
	else if (e->failed)
		bwa_warn("load: %zu enrollments failed after %d attempts; last error: %s", e->failed, ENROLL_ATTEMPTS,
		         e->last_error);
	if (!e->o->quiet && ret == BWA_EXIT_OK && e->ntodo)
		fprintf(stderr, "enrolled %zu/%zu devices in %.1f s (%.0f/s)\n", e->enrolled, e->ntodo,
		        bwa_mono() - start, (double)e->enrolled / (bwa_mono() - start));
	return ret;
}

/* ---- devices kept in --state-dir */

/* Loads DIR/dNNNNNNN when it holds an active device of this server: 1 loaded, 0 absent or
 * unusable (enroll again), or an exit status. */
static int load_device(const char *state_dir, size_t index, const char *server, struct bwa_load_device *d)
{
	char *dir = device_dir(state_dir, index);
	struct bwa_state st = {0};
	bw_error err = {0};
	char *cert_pem = NULL, *key_pem = NULL, *path;
	const char *status, *saved;
	int ret = 0;

	if (!bwa_state_exists(dir)) {
		free(dir);
		return 0;
	}
	if (bwa_state_load(dir, &st, &err) != BW_OK) {
		bwa_warn("load: %s; enrolling a new device there", err.message);
		free(dir);
		return 0;
	}
	saved = json_string_value(json_object_get(st.doc, "server"));
	if (strcmp(saved, server) != 0) {
		ret = bwa_fail(BWA_EXIT_USAGE, "load: %s belongs to server %s, not %s; use another --state-dir", dir,
		               saved, server);
		goto out;
	}
	status = json_string_value(json_object_get(st.doc, "status"));
	if (status && strcmp(status, "active") != 0)
		goto out; /* wiped or unenrolled: replaced by a new enrollment */
	path = bwa_path(dir, "cert.pem");
	if (bwa_read_file(path, 64 * 1024, &cert_pem, NULL, &err) == BW_OK) {
		free(path);
		path = bwa_path(dir, "key.pem");
		if (bwa_read_file(path, 64 * 1024, &key_pem, NULL, &err) == BW_OK &&
		    (d->cert = bwa_cert_parse(cert_pem, &err)) && (d->key = bwa_key_parse(key_pem, &err)) &&
		    X509_check_private_key(d->cert, d->key) == 1) {
			snprintf(d->id, sizeof d->id, "%s", json_string_value(json_object_get(st.doc, "device_id")));
			ret = 1;
		}
	}
	free(path);
	if (ret != 1) {
		X509_free(d->cert);
		EVP_PKEY_free(d->key);
		d->cert = NULL;
		d->key = NULL;
		bwa_warn("load: %s: unusable certificate or key%s%s; enrolling a new device there", dir,
		         err.message[0] ? ": " : "", err.message);
	}
out:
	if (key_pem) {
		OPENSSL_cleanse(key_pem, strlen(key_pem));
		free(key_pem);
	}
	free(cert_pem);
	bwa_state_free(&st);
	free(dir);
	return ret;
}

/* ---- report */

static void print_report(const struct load_opts *o, const struct bwa_load_target *t, const struct bwa_load_result *r,
                         size_t ndevices, size_t reused, size_t enrolled, double enroll_s, unsigned threads)
{
	const struct bwa_load_counters *c = &r->totals;
	static const char *const names[BWA_LE_COUNT] = {"connect", "tls", "io", "timeout", "parse"};
	uint64_t measured = atomic_load(&c->measured), s2 = atomic_load(&c->s2xx), errs = 0;
	double rps = r->elapsed > 0 ? (double)measured / r->elapsed : 0;
	double mean = r->hist.total ? (double)r->hist.sum_us / (double)r->hist.total / 1000.0 : 0;

	for (int k = 0; k < BWA_LE_COUNT; k++)
		errs += atomic_load(&c->errors[k]);
	if (o->json) {
		json_t *j = json_object(), *lat = json_object(), *st = json_object(), *er = json_object(),
		       *first = json_object();

		json_object_set_new(j, "url", json_string(o->url ? o->url : o->server));
		json_object_set_new(j, "method", json_string(o->url ? "GET" : "POST"));
		json_object_set_new(j, "path", json_string(t->path));
		json_object_set_new(j, "devices", o->url ? json_null() : json_integer((json_int_t)ndevices));
		json_object_set_new(j, "connections", json_integer(o->connections));
		json_object_set_new(j, "threads", json_integer(threads));
		json_object_set_new(j, "warmup_s", json_real(o->warmup));
		json_object_set_new(j, "duration_s", json_real(r->elapsed));
		json_object_set_new(j, "requests", json_integer((json_int_t)measured));
		json_object_set_new(j, "requests_per_s", json_real(rps));
		json_object_set_new(lat, "p50", json_real(bwa_hist_percentile_ms(&r->hist, 50)));
		json_object_set_new(lat, "p90", json_real(bwa_hist_percentile_ms(&r->hist, 90)));
		json_object_set_new(lat, "p99", json_real(bwa_hist_percentile_ms(&r->hist, 99)));
		json_object_set_new(lat, "p999", json_real(bwa_hist_percentile_ms(&r->hist, 99.9)));
		json_object_set_new(lat, "max", json_real((double)r->hist.max_us / 1000.0));
		json_object_set_new(lat, "mean", json_real(mean));
		json_object_set_new(j, "latency_ms", lat);
		json_object_set_new(st, "2xx", json_integer((json_int_t)s2));
		json_object_set_new(st, "3xx", json_integer((json_int_t)atomic_load(&c->s3xx)));
		json_object_set_new(st, "4xx", json_integer((json_int_t)atomic_load(&c->s4xx)));
		json_object_set_new(st, "5xx", json_integer((json_int_t)atomic_load(&c->s5xx)));
		json_object_set_new(st, "401", json_integer((json_int_t)atomic_load(&c->s401)));
		json_object_set_new(st, "429", json_integer((json_int_t)atomic_load(&c->s429)));
		json_object_set_new(j, "status", st);
		json_object_set_new(j, "non_2xx", json_integer((json_int_t)(measured - s2)));
		json_object_set_new(er, "total", json_integer((json_int_t)errs));
		for (int k = 0; k < BWA_LE_COUNT; k++) {
			json_object_set_new(er, names[k], json_integer((json_int_t)atomic_load(&c->errors[k])));
			if (r->first_error[k][0])
				json_object_set_new(first, names[k], json_string(r->first_error[k]));
		}
		json_object_set_new(j, "errors", er);
		json_object_set_new(j, "first_errors", first);
		json_object_set_new(j, "connections_opened", json_integer((json_int_t)atomic_load(&c->connections)));
		json_object_set_new(j, "resumed", json_integer((json_int_t)atomic_load(&c->resumed)));
		json_object_set_new(j, "server_closed", json_integer((json_int_t)atomic_load(&c->server_closed)));
		if (!o->url)
			json_object_set_new(j, "enrollment",
			                    json_pack("{s:I,s:I,s:f,s:f}", "enrolled", (json_int_t)enrolled, "reused",
			                              (json_int_t)reused, "seconds", enroll_s, "per_s",
			                              enroll_s > 0 ? (double)enrolled / enroll_s : 0.0));
		json_object_set_new(j, "interrupted", json_boolean(r->interrupted));
		json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
		putchar('\n');
		json_decref(j);
		return;
	}
	printf("%s %s%s\n", o->url ? "GET" : "POST", o->url ? o->url : o->server, o->url ? "" : "/agent/v1/checkin");
	if (!o->url)
		printf("  devices       %zu (%zu enrolled now, %zu reused)%s\n", ndevices, enrolled, reused,
		       o->reconnect_every ? ", cycled through the connections" : "");
	printf("  connections   %ld over %u threads; %llu opened, %llu resumed\n", o->connections, threads,
	       (unsigned long long)atomic_load(&c->connections), (unsigned long long)atomic_load(&c->resumed));
	printf("  duration      %.1f s%s\n", r->elapsed, r->interrupted ? " (interrupted)" : "");
	printf("  requests      %llu\n", (unsigned long long)measured);
	printf("  requests/s    %.0f\n", rps);
	printf("  latency ms    p50 %.3f   p90 %.3f   p99 %.3f   max %.3f   mean %.3f\n",
	       bwa_hist_percentile_ms(&r->hist, 50), bwa_hist_percentile_ms(&r->hist, 90),
	       bwa_hist_percentile_ms(&r->hist, 99), (double)r->hist.max_us / 1000.0, mean);
	printf("  non-2xx       %llu (3xx %llu, 4xx %llu, 5xx %llu; 401 %llu, 429 %llu)\n",
	       (unsigned long long)(measured - s2), (unsigned long long)atomic_load(&c->s3xx),
	       (unsigned long long)atomic_load(&c->s4xx), (unsigned long long)atomic_load(&c->s5xx),
	       (unsigned long long)atomic_load(&c->s401), (unsigned long long)atomic_load(&c->s429));
	printf("  errors        %llu (", (unsigned long long)errs);
	for (int k = 0; k < BWA_LE_COUNT; k++)
		printf("%s%s %llu", k ? ", " : "", names[k], (unsigned long long)atomic_load(&c->errors[k]));
	printf(")\n");
	for (int k = 0; k < BWA_LE_COUNT; k++)
		if (r->first_error[k][0])
			printf("  first %-7s %s\n", names[k], r->first_error[k]);
	if (atomic_load(&c->s401))
		printf("  note: 401 means the server does not accept these devices' certificates (devices of another "
		       "server, or unenrolled?)\n");
}

/* ---- the command */

/* Many connections need many descriptors: lift the soft limit as far as the hard one allows. */
static void raise_fd_limit(rlim_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < need)
		bwa_warn("load: only %llu file descriptors allowed; some of the connections will fail",
		         (unsigned long long)rl.rlim_cur);
}

static void usage_load(FILE *f)
{
	fputs("usage: bulwark-agent load --server URL --devices N [--key KEY] [--state-dir DIR]\n"
	      "         [--ca FILE] [--platform android|ios] [common options]\n"
	      "       bulwark-agent load --url http(s)://HOST:PORT/PATH [--ca FILE] [common options]\n"
	      "common options: [--duration S] [--warmup S] [--connections C] [--threads T]\n"
	      "         [--reconnect-every K] [--timeout S] [--json] [--quiet]\n"
	      "The enrollment key may also come from BULWARK_ENROLL_KEY.\n",
	      f);
}

enum {
	O_SERVER = 1000,
	O_URL,
	O_CA,
	O_KEY,
	O_STATE_DIR,
	O_DEVICES,
	O_DURATION,
	O_WARMUP,
	O_CONNECTIONS,
	O_THREADS,
	O_RECONNECT,
	O_TIMEOUT,
	O_PLATFORM,
	O_JSON,
	O_QUIET,
	O_HELP
};

static int parse_load_options(int argc, char **argv, struct load_opts *o)
{
	static const struct option opts[] = {
	    {"server", required_argument, NULL, O_SERVER},
	    {"url", required_argument, NULL, O_URL},
	    {"ca", required_argument, NULL, O_CA},
	    {"key", required_argument, NULL, O_KEY},
	    {"state-dir", required_argument, NULL, O_STATE_DIR},
	    {"state", required_argument, NULL, O_STATE_DIR},
	    {"devices", required_argument, NULL, O_DEVICES},
	    {"duration", required_argument, NULL, O_DURATION},
	    {"warmup", required_argument, NULL, O_WARMUP},
	    {"connections", required_argument, NULL, O_CONNECTIONS},
	    {"threads", required_argument, NULL, O_THREADS},
	    {"reconnect-every", required_argument, NULL, O_RECONNECT},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"platform", required_argument, NULL, O_PLATFORM},
	    {"json", no_argument, NULL, O_JSON},
	    {"quiet", no_argument, NULL, O_QUIET},
	    {"help", no_argument, NULL, O_HELP},
	    {NULL, 0, NULL, 0},
	};
	int c;

	opterr = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_SERVER:
			o->server = optarg;
			break;
		case O_URL:
			o->url = optarg;
			break;
		case O_CA:
			o->ca = optarg;
			break;
		case O_KEY:
			o->key = optarg;
			break;
		case O_STATE_DIR:
			o->state_dir = optarg;
			break;
		case O_PLATFORM:
			o->platform = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_QUIET:
			o->quiet = true;
			break;
		case O_DEVICES:
			if (!bwa_parse_long(optarg, 1, MAX_DEVICES, &o->devices))
				return bwa_fail(BWA_EXIT_USAGE, "load: --devices must be from 1 to %ld", MAX_DEVICES);
			break;
		case O_CONNECTIONS:
			if (!bwa_parse_long(optarg, 1, MAX_CONNECTIONS, &o->connections))
				return bwa_fail(BWA_EXIT_USAGE, "load: --connections must be from 1 to %ld",
				                MAX_CONNECTIONS);
			break;
		case O_THREADS:
			if (!bwa_parse_long(optarg, 1, 256, &o->threads))
				return bwa_fail(BWA_EXIT_USAGE, "load: --threads must be from 1 to 256");
			break;
		case O_RECONNECT:
			if (!bwa_parse_long(optarg, 0, 1000000000L, &o->reconnect_every))
				return bwa_fail(BWA_EXIT_USAGE,
				                "load: --reconnect-every must be a number of requests (0 = never)");
			break;
		case O_DURATION:
			if (!bwa_parse_seconds(optarg, 0.1, 86400, &o->duration))
				return bwa_fail(BWA_EXIT_USAGE,
				                "load: --duration must be seconds (0.1 to 86400; 10s, 2m)");
			break;
		case O_WARMUP:
			if (!bwa_parse_seconds(optarg, 0, 3600, &o->warmup))
				return bwa_fail(BWA_EXIT_USAGE, "load: --warmup must be seconds (0 to 3600)");
			break;
		case O_TIMEOUT:
			if (!bwa_parse_seconds(optarg, 0.01, 3600, &o->timeout))
				return bwa_fail(BWA_EXIT_USAGE, "load: --timeout must be seconds (0.01 to 3600)");
			break;
		case 'h':
		case O_HELP:
			usage_load(stdout);
			return -1;
		case ':':
			return bwa_fail(BWA_EXIT_USAGE, "load: option %s needs a value", argv[optind - 1]);
		default:
			return bwa_fail(BWA_EXIT_USAGE, "load: unknown option %s", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return bwa_fail(BWA_EXIT_USAGE, "load: unexpected argument %s", argv[optind]);
	if (!o->key && !o->url) {
		const char *env = getenv("BULWARK_ENROLL_KEY");

		o->key = env && *env ? env : NULL;
	}
	if (!!o->url == !!o->server) {
		usage_load(stderr);
		return bwa_fail(BWA_EXIT_USAGE, "load: give either --server (agent check-ins) or --url (plain GETs)");
	}
	if (o->url && (o->devices || o->key || o->state_dir || o->platform))
		return bwa_fail(BWA_EXIT_USAGE, "load: --url sends plain GETs; --devices, --key, --state-dir and "
		                                "--platform belong to --server");
	if (o->server && !o->devices)
		return bwa_fail(BWA_EXIT_USAGE, "load: --server needs --devices N");
	if (o->platform && strcmp(o->platform, "android") != 0 && strcmp(o->platform, "ios") != 0)
		return bwa_fail(BWA_EXIT_USAGE, "load: --platform must be android or ios");
	if (o->connections <= 0)
		o->connections = o->server && o->devices < 64 ? o->devices : 64;
	return 0;
}

int bwa_cmd_load(int argc, char **argv)
{
	struct load_opts o = {.threads = 2, .duration = 10, .timeout = 30};
	struct bwa_load_target target = {0};
	struct bwa_load_device *devices = NULL;
	struct bwa_load_result *res = NULL;
	struct enroller e = {0};
	size_t ndev = 0, reused = 0;
	double enroll_s = 0;
	char *server = NULL;
	bw_error err = {0};
	int ret = parse_load_options(argc, argv, &o);
	unsigned threads;

	if (ret)
		return ret < 0 ? BWA_EXIT_OK : ret;
	raise_fd_limit((rlim_t)o.connections + 64);
	if (o.server) {
		if (!(server = bwa_server_url(o.server, &err)))
			return bwa_fail(BWA_EXIT_USAGE, "load: %s", err.message);
		o.server = server;
	}
	if (bwa_load_target_init(&target, o.url ? o.url : server, o.url ? NULL : "/agent/v1/checkin",
	                         o.url ? NULL : "{}", o.ca, &err) != BW_OK) {
		free(server);
		return bwa_fail(err.code == BW_E_INVALID ? BWA_EXIT_USAGE : BWA_EXIT_UNREACHABLE, "load: %s",
		                err.message);
	}
	if (o.ca && access(o.ca, R_OK) != 0) {
		ret = bwa_fail(BWA_EXIT_USAGE, "load: --ca %s: %s", o.ca, strerror(errno));
		goto out;
	}
	if (o.server) {
		ndev = (size_t)o.devices;
		devices = bwa_xcalloc(ndev, sizeof *devices);
		e.o = &o;
		e.server = server;
		e.devices = devices;
		e.todo = bwa_xcalloc(ndev, sizeof *e.todo);
		if (o.state_dir) {
			if (bwa_mkdir_private(o.state_dir, &err) != BW_OK) {
				ret = bwa_fail(BWA_EXIT_FAIL, "load: %s", err.message);
				goto out;
			}
			for (size_t i = 0; i < ndev; i++) {
				int r = load_device(o.state_dir, i, server, &devices[i]);

				if (r == 1)
					reused++;
				else if (r == 0)
					e.todo[e.ntodo++] = i;
				else {
					ret = r;
					goto out;
				}
			}
			if (o.ca && bwa_read_file(o.ca, 1024 * 1024, &e.ca_pem, NULL, &err) != BW_OK) {
				ret = bwa_fail(BWA_EXIT_USAGE, "load: --ca: %s", err.message);
				goto out;
			}
			if (reused && !o.quiet)
				fprintf(stderr, "reusing %zu devices from %s\n", reused, o.state_dir);
		} else {
			for (size_t i = 0; i < ndev; i++)
				e.todo[e.ntodo++] = i;
		}
		if (e.ntodo) {
			double t0 = bwa_mono();
			unsigned conc = (unsigned)(o.connections < (long)e.ntodo ? o.connections : (long)e.ntodo);

			if (!o.key) {
				ret = bwa_fail(BWA_EXIT_USAGE,
				               "load: %zu devices to enroll: give --key KEY (or BULWARK_ENROLL_KEY)",
				               e.ntodo);
				goto out;
			}
			e.url = bwa_xasprintf("%s/agent/v1/enroll", server);
			ret = enroll_devices(&e, conc);
			enroll_s = bwa_mono() - t0;
			if (ret != BWA_EXIT_OK)
				goto out;
		}
		/* Devices whose enrollment failed are left out. */
		{
			size_t k = 0;

			for (size_t i = 0; i < ndev; i++) {
				if (!devices[i].cert)
					continue;
				if (k != i) {
					devices[k] = devices[i];
					memset(&devices[i], 0, sizeof devices[i]);
				}
				k++;
			}
			ndev = k;
		}
		if (ndev == 0) {
			ret = bwa_fail(BWA_EXIT_FAIL, "load: no device could be enrolled");
			goto out;
		}
	}
	res = bwa_xcalloc(1, sizeof *res);
	threads = (unsigned)o.threads;
	if (devices && ndev < threads)
		threads = (unsigned)ndev;
	if (threads > (unsigned)o.connections)
		threads = (unsigned)o.connections;
	{
		struct bwa_load_params p = {
		    .target = &target,
		    .devices = devices,
		    .ndevices = ndev,
		    .connections = (unsigned)o.connections,
		    .threads = threads,
		    .warmup = o.warmup,
		    .duration = o.duration,
		    .timeout = o.timeout,
		    .reconnect_every = (unsigned long)o.reconnect_every,
		    .progress = !o.quiet,
		};

		if (bwa_load_run(&p, res, &err) != BW_OK) {
			ret = bwa_fail(BWA_EXIT_FAIL, "load: %s", err.message);
			goto out;
		}
	}
	print_report(&o, &target, res, ndev, reused, e.enrolled, enroll_s, threads);
	{
		uint64_t errs = 0, measured = atomic_load(&res->totals.measured);

		for (int k = 0; k < BWA_LE_COUNT; k++)
			errs += atomic_load(&res->totals.errors[k]);
		ret = errs == 0 && measured > 0 && atomic_load(&res->totals.s2xx) == measured ? BWA_EXIT_OK
		                                                                              : BWA_EXIT_FAIL;
		if (measured == 0 && atomic_load(&res->totals.errors[BWA_LE_CONNECT]) > 0)
			ret = BWA_EXIT_UNREACHABLE;
	}
out:
	if (devices) {
		for (size_t i = 0; i < (size_t)o.devices; i++) {
			X509_free(devices[i].cert);
			EVP_PKEY_free(devices[i].key);
			SSL_SESSION_free(devices[i].session);
		}
	}
	free(devices);
	free(e.todo);
	free(e.url);
	free(e.ca_pem);
	free(res);
	bwa_load_target_free(&target);
	free(server);
	return ret;
}
