/* tests/unit/test_metrics.c: the metrics registry (host/services/metrics.c): Prometheus text
 * rendering of counters, gauges and histograms, escaping, name checks, re-registration, the
 * series cap and concurrent updates. */
#include "testutil.h"

#include "metrics.h"

#include <event2/buffer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The registry rendered as a NUL-terminated string (caller frees). */
static char *render(bw_metrics *reg)
{
	struct evbuffer *b = evbuffer_new();
	bw_metrics_render(reg, b);
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	evbuffer_free(b);
	return s;
}

static void test_counter_and_gauge_format(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	bw_error err = {0};
	bw_metric *c = bw_metric_new(reg, BW_METRIC_COUNTER, "bw_test_total", "Things done.", NULL, NULL, 0, &err);
	assert_non_null(c);
	bw_metric *g = bw_metric_new(reg, BW_METRIC_GAUGE, "bw_open", "Open things.", NULL, NULL, 0, &err);
	assert_non_null(g);
	/* Unlabelled metrics show 0 before their first update. */
	char *s = render(reg);
	assert_string_equal(s, "# HELP bw_test_total Things done.\n# TYPE bw_test_total counter\nbw_test_total 0\n"
	                       "# HELP bw_open Open things.\n# TYPE bw_open gauge\nbw_open 0\n");
	free(s);
	bw_metric_add(c, NULL, 2);
	bw_metric_add(c, NULL, 0.5);
	bw_metric_add(c, NULL, -1);  /* counters never go down: ignored */
	bw_metric_set(c, NULL, 100); /* set is for gauges only: ignored */
	bw_metric_set(g, NULL, 7);
	bw_metric_add(g, NULL, -2);
	assert_true(bw_metric_value(c, NULL) == 2.5);
	assert_true(bw_metric_value(g, NULL) == 5);
	s = render(reg);
	assert_string_equal(s, "# HELP bw_test_total Things done.\n# TYPE bw_test_total counter\nbw_test_total 2.5\n"
	                       "# HELP bw_open Open things.\n# TYPE bw_open gauge\nbw_open 5\n");
	free(s);
	bw_metrics_free(reg);
}

static void test_labelled_counter(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	bw_error err = {0};
	bw_metric *c =
	    bw_metric_new(reg, BW_METRIC_COUNTER, "http_requests_total", "Requests.", "class", NULL, 0, &err);
	assert_non_null(c);
	/* A labelled metric with no series yet shows only its header lines. */
	char *s = render(reg);
	assert_string_equal(s, "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n");
	free(s);
	bw_metric_add(c, "2xx", 1);
	bw_metric_add(c, "4xx", 3);
	bw_metric_add(c, "2xx", 1);
	s = render(reg);
	assert_string_equal(s, "# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n"
	                       "http_requests_total{class=\"2xx\"} 2\nhttp_requests_total{class=\"4xx\"} 3\n");
	free(s);
	assert_true(bw_metric_value(c, "4xx") == 3);
	bw_metrics_free(reg);
}

static void test_histogram_format(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	bw_error err = {0};
	const double buckets[] = {0.125, 1, 2.5};
	bw_metric *h = bw_metric_new(reg, BW_METRIC_HISTOGRAM, "lat_seconds", "Latency.", NULL, buckets, 3, &err);
	assert_non_null(h);
	/* Values chosen to be exact in binary so the sum prints exactly. */
	bw_metric_observe(h, NULL, 0.0625);
	bw_metric_observe(h, NULL, 0.5);
	bw_metric_observe(h, NULL, 1); /* on a boundary: counts in le="1" */
	bw_metric_observe(h, NULL, 4);
	bw_metric_add(h, NULL, 1); /* add is not for histograms: ignored */
	char *s = render(reg);
	assert_string_equal(s, "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
	                       "lat_seconds_bucket{le=\"0.125\"} 1\n"
	                       "lat_seconds_bucket{le=\"1\"} 3\n"
	                       "lat_seconds_bucket{le=\"2.5\"} 3\n"
	                       "lat_seconds_bucket{le=\"+Inf\"} 4\n"
	                       "lat_seconds_sum 5.5625\n"
	                       "lat_seconds_count 4\n");
	free(s);
	assert_true(bw_metric_value(h, NULL) == 4); /* histogram "value" is its count */

	bw_metric *hl = bw_metric_new(reg, BW_METRIC_HISTOGRAM, "op_seconds", "Ops.", "op", buckets, 2, &err);
	assert_non_null(hl);
	bw_metric_observe(hl, "read", 0.5);
	s = render(reg);
	assert_non_null(strstr(s, "# TYPE op_seconds histogram\n"
	                          "op_seconds_bucket{op=\"read\",le=\"0.125\"} 0\n"
	                          "op_seconds_bucket{op=\"read\",le=\"1\"} 1\n"
	                          "op_seconds_bucket{op=\"read\",le=\"+Inf\"} 1\n"
	                          "op_seconds_sum{op=\"read\"} 0.5\n"
	                          "op_seconds_count{op=\"read\"} 1\n"));
	free(s);

	/* Default buckets (NULL) are the latency buckets in seconds. */
	bw_metric *hd = bw_metric_new(reg, BW_METRIC_HISTOGRAM, "d_seconds", "", NULL, NULL, 0, &err);
	assert_non_null(hd);
	bw_metric_observe(hd, NULL, 0.003);
	s = render(reg);
	assert_non_null(strstr(s, "d_seconds_bucket{le=\"0.0025\"} 0\nd_seconds_bucket{le=\"0.005\"} 1\n"));
	assert_non_null(strstr(s, "d_seconds_bucket{le=\"10\"} 1\nd_seconds_bucket{le=\"+Inf\"} 1\n"));
	free(s);
	bw_metrics_free(reg);
}

static void test_escaping(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	bw_error err = {0};
	bw_metric *g =
	    bw_metric_new(reg, BW_METRIC_GAUGE, "esc", "Line one\nback\\slash \"quoted\"", "path", NULL, 0, &err);
	assert_non_null(g);
	bw_metric_set(g, "a\"b\\c\nd", 1);
	char *s = render(reg);
	/* HELP escapes backslash and newline; label values also escape the double quote. */
	assert_string_equal(s, "# HELP esc Line one\\nback\\\\slash \"quoted\"\n# TYPE esc gauge\n"
	                       "esc{path=\"a\\\"b\\\\c\\nd\"} 1\n");
	free(s);
	bw_metrics_free(reg);
}

static void test_invalid_names(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	const char *bad[] = {"", "1abc", "a-b", "a b", "a.b", "é", "x{y}"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		bw_error err = {0};
		assert_null(bw_metric_new(reg, BW_METRIC_COUNTER, bad[i], "", NULL, NULL, 0, &err));
		assert_int_equal(err.code, BW_E_INVALID);
	}
	bw_error err = {0};
	assert_null(bw_metric_new(reg, BW_METRIC_COUNTER, NULL, "", NULL, NULL, 0, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	/* Names may contain colons and digits after the first character. */
	assert_non_null(bw_metric_new(reg, BW_METRIC_COUNTER, "ns:sub_2_total", "", NULL, NULL, 0, &err));
	assert_non_null(bw_metric_new(reg, BW_METRIC_COUNTER, "_x", "", NULL, NULL, 0, &err));
	/* Label names: "le" is reserved; colons are not allowed in label names. */
	const char *bad_labels[] = {"le", "bad-label", "1x", "", "a:b"};
	for (size_t i = 0; i < sizeof bad_labels / sizeof bad_labels[0]; i++) {
		bw_error e = {0};
		assert_null(bw_metric_new(reg, BW_METRIC_GAUGE, "g_ok", "", bad_labels[i], NULL, 0, &e));
		assert_int_equal(e.code, BW_E_INVALID);
	}
	/* Kinds and buckets. */
	bw_error_clear(&err);
	assert_null(bw_metric_new(reg, 0, "k0", "", NULL, NULL, 0, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_null(bw_metric_new(reg, 4, "k4", "", NULL, NULL, 0, &err));
	const double dec[] = {1, 0.5};
	bw_error_clear(&err);
	assert_null(bw_metric_new(reg, BW_METRIC_HISTOGRAM, "h1", "", NULL, dec, 2, &err));
	assert_int_equal(err.code, BW_E_INVALID);
	assert_non_null(strstr(err.message, "increase"));
	const double dup[] = {1, 1};
	assert_null(bw_metric_new(reg, BW_METRIC_HISTOGRAM, "h2", "", NULL, dup, 2, &err));
	assert_null(bw_metric_new(reg, BW_METRIC_HISTOGRAM, "h3", "", NULL, dec, 0, &err));
	double many[40];
	for (int i = 0; i < 40; i++)
		many[i] = i + 1;
	assert_null(bw_metric_new(reg, BW_METRIC_HISTOGRAM, "h4", "", NULL, many, 33, &err));
	assert_non_null(bw_metric_new(reg, BW_METRIC_HISTOGRAM, "h5", "", NULL, many, 32, &err));
	/* Nothing invalid was registered. */
	char *s = render(reg);
	assert_null(strstr(s, "g_ok"));
	assert_null(strstr(s, "h1"));
	assert_null(strstr(s, "k0"));
	free(s);
	bw_metrics_free(reg);
}

static void test_same_name_twice(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	bw_error err = {0};
	bw_metric *a = bw_metric_new(reg, BW_METRIC_COUNTER, "dup_total", "First.", "kind", NULL, 0, &err);
	assert_non_null(a);
	bw_metric_add(a, "x", 4);
	/* Same kind and label: the existing metric (a reloaded plugin keeps its series). */
	bw_metric *b = bw_metric_new(reg, BW_METRIC_COUNTER, "dup_total", "Second.", "kind", NULL, 0, &err);
	assert_ptr_equal(a, b);
	assert_true(bw_metric_value(b, "x") == 4);
	/* Another kind or another label: a conflict. */
	bw_error_clear(&err);
	assert_null(bw_metric_new(reg, BW_METRIC_GAUGE, "dup_total", "", "kind", NULL, 0, &err));
	assert_int_equal(err.code, BW_E_EXISTS);
	assert_non_null(strstr(err.message, "dup_total"));
	bw_error_clear(&err);
	assert_null(bw_metric_new(reg, BW_METRIC_COUNTER, "dup_total", "", "other", NULL, 0, &err));
	assert_int_equal(err.code, BW_E_EXISTS);
	bw_error_clear(&err);
	assert_null(bw_metric_new(reg, BW_METRIC_COUNTER, "dup_total", "", NULL, NULL, 0, &err));
	assert_int_equal(err.code, BW_E_EXISTS);
	/* Rendered once. */
	char *s = render(reg);
	char *first = strstr(s, "# TYPE dup_total");
	assert_non_null(first);
	assert_null(strstr(first + 1, "# TYPE dup_total"));
	free(s);
	bw_metrics_free(reg);
}

static void test_series_cap(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	bw_error err = {0};
	bw_metric *c = bw_metric_new(reg, BW_METRIC_COUNTER, "per_user_total", "", "user", NULL, 0, &err);
	assert_non_null(c);
	char lv[32];
	for (int i = 0; i < 300; i++) {
		snprintf(lv, sizeof lv, "u%d", i);
		bw_metric_add(c, lv, 1);
	}
	/* The first 256 values keep their own series; the rest fold into "other". */
	assert_true(bw_metric_value(c, "u0") == 1);
	assert_true(bw_metric_value(c, "u255") == 1);
	assert_true(bw_metric_value(c, "other") == 44);
	char *s = render(reg);
	assert_non_null(strstr(s, "per_user_total{user=\"u255\"} 1\n"));
	assert_null(strstr(s, "user=\"u256\""));
	assert_null(strstr(s, "user=\"u299\""));
	assert_non_null(strstr(s, "per_user_total{user=\"other\"} 44\n"));
	size_t lines = 0;
	for (const char *p = s; *p; p++)
		lines += *p == '\n';
	assert_int_equal(lines, 2 + 257);
	free(s);
	/* Existing series still update after the cap. */
	bw_metric_add(c, "u7", 1);
	assert_true(bw_metric_value(c, "u7") == 2);
	bw_metrics_free(reg);
}

struct thread_arg {
	bw_metric *c, *cl, *h;
	int idx;
};

static void *adder(void *p)
{
	struct thread_arg *a = p;
	for (int i = 0; i < 10000; i++) {
		bw_metric_add(a->c, NULL, 1);
		bw_metric_add(a->cl, (i & 1) ? "odd" : "even", 1);
		bw_metric_observe(a->h, NULL, 0.001);
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	bw_metrics *reg = bw_metrics_new();
	bw_error err = {0};
	struct thread_arg args[4];
	pthread_t t[4];
	bw_metric *c = bw_metric_new(reg, BW_METRIC_COUNTER, "mt_total", "", NULL, NULL, 0, &err);
	bw_metric *cl = bw_metric_new(reg, BW_METRIC_COUNTER, "mtl_total", "", "parity", NULL, 0, &err);
	bw_metric *h = bw_metric_new(reg, BW_METRIC_HISTOGRAM, "mth_seconds", "", NULL, NULL, 0, &err);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){c, cl, h, i};
		assert_int_equal(pthread_create(&t[i], NULL, adder, &args[i]), 0);
	}
	/* Rendering while others update must be safe too. */
	for (int i = 0; i < 20; i++)
		free(render(reg));
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_true(bw_metric_value(c, NULL) == 40000);
	assert_true(bw_metric_value(cl, "odd") == 20000);
	assert_true(bw_metric_value(cl, "even") == 20000);
	assert_true(bw_metric_value(h, NULL) == 40000);
	char *s = render(reg);
	assert_non_null(strstr(s, "mt_total 40000\n"));
	assert_non_null(strstr(s, "mth_seconds_count 40000\n"));
	free(s);
	bw_metrics_free(reg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counter_and_gauge_format),
	    cmocka_unit_test(test_labelled_counter),
	    cmocka_unit_test(test_histogram_format),
	    cmocka_unit_test(test_escaping),
	    cmocka_unit_test(test_invalid_names),
	    cmocka_unit_test(test_same_name_twice),
	    cmocka_unit_test(test_series_cap),
	    cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
