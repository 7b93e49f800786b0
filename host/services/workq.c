/* host/services/workq.c: worker threads + a pipe that wakes the loop to run completions. */
#include "workq.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct job {
	void (*work)(void *);
	void (*done)(void *);
	void *arg;
	struct job *next;
};

struct bw_workq {
	struct event_base *base;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *todo_head, *todo_tail; /* waiting for a worker */
	struct job *done_head, *done_tail; /* waiting for the loop */
	size_t pending, max_pending;       /* submitted and not yet completed on the loop */
	bool stopping;
	unsigned nthreads;
	pthread_t *threads;
	int pipefd[2];
	struct event *wake;
};

static void push(struct job **h, struct job **t, struct job *j)
{
	j->next = NULL;
	if (*t)
		(*t)->next = j;
	else
		*h = j;
	*t = j;
}

static void *worker_main(void *arg)
{
	bw_workq *q = arg;
	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (!q->todo_head && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		if (!q->todo_head)
			break;
		struct job *j = q->todo_head;
		q->todo_head = j->next;
		if (!q->todo_head)
			q->todo_tail = NULL;
		pthread_mutex_unlock(&q->mu);
		j->work(j->arg);
		pthread_mutex_lock(&q->mu);
		bool was_empty = q->done_head == NULL;
		push(&q->done_head, &q->done_tail, j);
		if (was_empty) {
			char c = 1;
			ssize_t w = write(q->pipefd[1], &c, 1);
			(void)w; /* a full pipe already means "wake up" */
		}
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

static void run_completions(bw_workq *q)
{
	pthread_mutex_lock(&q->mu);
	struct job *j = q->done_head;
	q->done_head = q->done_tail = NULL;
	pthread_mutex_unlock(&q->mu);
	while (j) {
		struct job *n = j->next;
		if (j->done)
			j->done(j->arg);
		free(j);
		pthread_mutex_lock(&q->mu);
		q->pending--;
		pthread_mutex_unlock(&q->mu);
		j = n;
	}
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	char buf[64];
	while (read(fd, buf, sizeof buf) > 0) {
	}
	run_completions(arg);
}

bw_workq *bw_workq_new(struct event_base *base, unsigned threads, size_t max_pending, bw_error *err)
{
	bw_workq *q = calloc(1, sizeof *q);
	if (!q) {
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	q->base = base;
	q->max_pending = max_pending ? max_pending : 10000;
	q->nthreads = threads ? threads : 2;
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	if (pipe2(q->pipefd, O_NONBLOCK | O_CLOEXEC) != 0) {
		bw_error_set(err, BW_E_IO, "work queue: cannot create pipe");
		free(q);
		return NULL;
	}
	q->wake = event_new(base, q->pipefd[0], EV_READ | EV_PERSIST, wake_cb, q);
	event_add(q->wake, NULL);
	q->threads = calloc(q->nthreads, sizeof *q->threads);
	for (unsigned i = 0; i < q->nthreads; i++) {
		if (pthread_create(&q->threads[i], NULL, worker_main, q) != 0) {
			q->nthreads = i;
			bw_workq_free(q);
			bw_error_set(err, BW_E_INTERNAL, "work queue: cannot start thread %u", i);
			return NULL;
		}
	}
	return q;
}

int bw_workq_submit(bw_workq *q, void (*work)(void *), void (*done)(void *), void *arg, bw_error *err)
{
	if (!work)
		return bw_error_set(err, BW_E_INVALID, "work function is NULL");
	struct job *j = calloc(1, sizeof *j);
	if (!j)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	j->work = work;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&q->mu);
	if (q->stopping || q->pending >= q->max_pending) {
		size_t n = q->pending;
		bool stopping = q->stopping;
		pthread_mutex_unlock(&q->mu);
		free(j);
		if (stopping)
			return bw_error_set(err, BW_E_STATE, "work queue is shutting down");
		return bw_error_set(err, BW_E_LIMIT, "work queue full (%zu jobs pending)", n);
	}
	q->pending++;
	push(&q->todo_head, &q->todo_tail, j);
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
	return BW_OK;
}

size_t bw_workq_pending(bw_workq *q)
{
	pthread_mutex_lock(&q->mu);
	size_t n = q->pending;
	pthread_mutex_unlock(&q->mu);
	return n;
}

void bw_workq_free(bw_workq *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = true; /* workers finish the queue, then exit */
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	for (unsigned i = 0; i < q->nthreads; i++)
		pthread_join(q->threads[i], NULL);
	run_completions(q);
	if (q->wake)
		event_free(q->wake);
	close(q->pipefd[0]);
	close(q->pipefd[1]);
	free(q->threads);
	pthread_mutex_destroy(&q->mu);
	pthread_cond_destroy(&q->cv);
	free(q);
}
