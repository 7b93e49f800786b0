/* tests/unit/test_workq.c: the work queue (host/services/workq.c): work on worker threads,
 * completions on the loop thread, many jobs, the pending limit, and draining on free. */
#include "testutil.h"

#include "workq.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
}

/* Runs the loop until *count reaches want or 20 s pass (a periodic timer keeps the loop
 * returning, so the deadline is checked even when nothing happens). */
static void run_until(struct event_base *base, atomic_int *count, int want)
{
	struct event *t = event_new(base, -1, EV_PERSIST, tick, NULL);
	struct timeval tv = {0, 50000};
	event_add(t, &tv);
	double deadline = now_s() + 20;
	while (atomic_load(count) < want && now_s() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
}

struct job {
	pthread_t loop_thread, work_thread, done_thread;
	atomic_int *worked, *done;
	bool work_ran;
};

static void job_work(void *arg)
{
	struct job *j = arg;
	j->work_thread = pthread_self();
	j->work_ran = true;
	atomic_fetch_add(j->worked, 1);
}

static void job_done(void *arg)
{
	struct job *j = arg;
	/* The work finished before its completion runs. */
	assert_true(j->work_ran);
	j->done_thread = pthread_self();
	atomic_fetch_add(j->done, 1);
}

static void test_threads(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	bw_error err = {0};
	bw_workq *q = bw_workq_new(base, 2, 0, &err);
	assert_non_null(q);
	atomic_int worked = 0, done = 0;
	struct job j = {.loop_thread = pthread_self(), .worked = &worked, .done = &done};
	assert_int_equal(bw_workq_submit(q, job_work, job_done, &j, &err), BW_OK);
	/* The completion never runs from inside submit. */
	assert_int_equal(atomic_load(&done), 0);
	run_until(base, &done, 1);
	assert_int_equal(atomic_load(&done), 1);
	assert_false(pthread_equal(j.work_thread, j.loop_thread));
	assert_true(pthread_equal(j.done_thread, j.loop_thread));
	assert_int_equal(bw_workq_pending(q), 0);
	/* A NULL done is allowed; a NULL work is not. */
	assert_int_equal(bw_workq_submit(q, job_work, NULL, &j, &err), BW_OK);
	assert_int_equal(bw_workq_submit(q, NULL, job_done, &j, &err), BW_E_INVALID);
	run_until(base, &worked, 2);
	bw_workq_free(q);
	assert_int_equal(atomic_load(&worked), 2);
	assert_int_equal(atomic_load(&done), 1);
	event_base_free(base);
}

static void test_many_jobs(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	bw_error err = {0};
	bw_workq *q = bw_workq_new(base, 4, 0, &err);
	assert_non_null(q);
	enum { N = 1000 };
	struct job *jobs = calloc(N, sizeof *jobs);
	atomic_int worked = 0, done = 0;
	for (int i = 0; i < N; i++) {
		jobs[i] = (struct job){.loop_thread = pthread_self(), .worked = &worked, .done = &done};
		assert_int_equal(bw_workq_submit(q, job_work, job_done, &jobs[i], &err), BW_OK);
	}
	run_until(base, &done, N);
	assert_int_equal(atomic_load(&worked), N);
	assert_int_equal(atomic_load(&done), N);
	for (int i = 0; i < N; i++) {
		assert_true(pthread_equal(jobs[i].done_thread, pthread_self()));
		assert_false(pthread_equal(jobs[i].work_thread, pthread_self()));
	}
	assert_int_equal(bw_workq_pending(q), 0);
	bw_workq_free(q);
	free(jobs);
	event_base_free(base);
}

/* A gate the workers wait at, so jobs stay pending as long as the test wants. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static bool g_open;
static atomic_int g_gate_done;

static void gated_work(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&g_mu);
	while (!g_open)
		pthread_cond_wait(&g_cv, &g_mu);
	pthread_mutex_unlock(&g_mu);
}

static void gated_done(void *arg)
{
	(void)arg;
	atomic_fetch_add(&g_gate_done, 1);
}

static void gate_set(bool open)
{
	pthread_mutex_lock(&g_mu);
	g_open = open;
	pthread_cond_broadcast(&g_cv);
	pthread_mutex_unlock(&g_mu);
}

static void test_limit(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	bw_error err = {0};
	bw_workq *q = bw_workq_new(base, 1, 4, &err);
	assert_non_null(q);
	gate_set(false);
	atomic_store(&g_gate_done, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(bw_workq_submit(q, gated_work, gated_done, NULL, &err), BW_OK);
	assert_int_equal(bw_workq_pending(q), 4);
	bw_error_clear(&err);
	assert_int_equal(bw_workq_submit(q, gated_work, gated_done, NULL, &err), BW_E_LIMIT);
	assert_int_equal(err.code, BW_E_LIMIT);
	assert_non_null(strstr(err.message, "4"));
	assert_int_equal(bw_workq_pending(q), 4);
	gate_set(true);
	run_until(base, &g_gate_done, 4);
	assert_int_equal(atomic_load(&g_gate_done), 4);
	assert_int_equal(bw_workq_pending(q), 0);
	/* A job counts until its completion ran: room again now. */
	assert_int_equal(bw_workq_submit(q, gated_work, gated_done, NULL, &err), BW_OK);
	run_until(base, &g_gate_done, 5);
	assert_int_equal(atomic_load(&g_gate_done), 5);
	bw_workq_free(q);
	event_base_free(base);
}

static atomic_int g_slow_done;
static pthread_t g_free_thread;
static void slow_work(void *arg)
{
	(void)arg;
	usleep(2000);
}
static void slow_done(void *arg)
{
	(void)arg;
	assert_true(pthread_equal(pthread_self(), g_free_thread));
	atomic_fetch_add(&g_slow_done, 1);
}

static void test_free_drains(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	bw_error err = {0};
	bw_workq *q = bw_workq_new(base, 2, 0, &err);
	assert_non_null(q);
	atomic_store(&g_slow_done, 0);
	g_free_thread = pthread_self();
	for (int i = 0; i < 50; i++)
		assert_int_equal(bw_workq_submit(q, slow_work, slow_done, NULL, &err), BW_OK);
	/* The loop never ran: free must still finish every job and run its completion on the
	 * calling (loop) thread. */
	assert_true(atomic_load(&g_slow_done) < 50);
	bw_workq_free(q);
	assert_int_equal(atomic_load(&g_slow_done), 50);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_many_jobs),
	    cmocka_unit_test(test_limit),
	    cmocka_unit_test(test_free_drains),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
