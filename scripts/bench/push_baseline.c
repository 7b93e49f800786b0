/* scripts/bench/push_baseline.c: the reference for scripts/bench/push_apns.sh: a minimal libcurl-multi HTTP/2
 * client that sends N APNs-shaped POSTs (same path, headers and body as push_apns) to one endpoint over one
 * multiplexed connection, keeping C requests in flight, and prints the rate.
 *
 *   push_baseline URL CA_FILE N C            e.g. https://127.0.0.1:8443/3/device/<token> ca.pem 100000 100
 *
 * Minimal on purpose: a new easy handle per request (curl reuses the connection), curl_multi_perform and
 * curl_multi_poll in one loop. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static size_t sink(char *p, size_t s, size_t n, void *u)
{
	(void)p, (void)u;
	return s * n;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char BODY[] = "{\"aps\":{\"content-available\":1},\"bulwark\":{\"reason\":\"bench\"}}";

static CURL *request(const char *url, const char *ca, struct curl_slist **hdrs, unsigned long seq)
{
	char id[64], exp[64];
	snprintf(id, sizeof id, "apns-id: %08lx-0000-4000-8000-%012lx", seq & 0xffffffffUL, seq);
	snprintf(exp, sizeof exp, "apns-expiration: %ld", (long)time(NULL) + 86400);
	struct curl_slist *h = NULL;
	h = curl_slist_append(h,
	                      "authorization: bearer eyJhbGciOiJFUzI1NiIsImtpZCI6IkJFTkNIMDAwMDEifQ."
	                      "eyJpc3MiOiJURUFNMDAwMDAxIiwiaWF0IjoxNzAwMDAwMDAwfQ."
	                      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
	h = curl_slist_append(h, "apns-topic: com.example.bench");
	h = curl_slist_append(h, "apns-push-type: background");
	h = curl_slist_append(h, id);
	h = curl_slist_append(h, "apns-collapse-id: bulwark-wake");
	h = curl_slist_append(h, "apns-priority: 5");
	h = curl_slist_append(h, exp);
	h = curl_slist_append(h, "content-type: application/json");
	h = curl_slist_append(h, "Expect:");
	*hdrs = h;
	CURL *e = curl_easy_init();
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_CAINFO, ca);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, BODY);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)(sizeof BODY - 1));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)h);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	return e;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s URL CA_FILE N CONCURRENCY\n", argv[0]);
		return 2;
	}
	const char *url = argv[1], *ca = argv[2];
	unsigned long n = strtoul(argv[3], NULL, 10), c = strtoul(argv[4], NULL, 10);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	CURLM *m = curl_multi_init();
	curl_multi_setopt(m, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, 1L);
	curl_multi_setopt(m, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000L);
	unsigned long started = 0, done = 0, ok = 0, inflight = 0;
	double t0 = now_s();
	while (done < n) {
		while (inflight < c && started < n) {
			struct curl_slist *h;
			curl_multi_add_handle(m, request(url, ca, &h, started));
			started++;
			inflight++;
		}
		int running = 0;
		curl_multi_perform(m, &running);
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			CURL *e = msg->easy_handle;
			long status = 0;
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result == CURLE_OK && status == 200)
				ok++;
			char *priv = NULL;
			curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
			curl_multi_remove_handle(m, e);
			curl_easy_cleanup(e);
			curl_slist_free_all((struct curl_slist *)(void *)priv);
			done++;
			inflight--;
		}
		if (done < n && inflight >= c)
			curl_multi_poll(m, NULL, 0, 100, NULL);
		else if (done < n && started >= n)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	}
	double secs = now_s() - t0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	             (double)ru.ru_stime.tv_usec / 1e6;
	printf("baseline: %lu requests (%lu ok) in %.3f s = %.0f/s, cpu %.1f us/request\n", n, ok, secs,
	       (double)n / secs, cpu * 1e6 / (double)n);
	curl_multi_cleanup(m);
	curl_global_cleanup();
	return ok == n ? 0 : 1;
}
