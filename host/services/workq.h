/* host/services/workq.h: a pool of worker threads for blocking calls (scrypt, LDAP binds,
 * scans, backups); each job's completion runs back on the loop thread. */
#ifndef BW_WORKQ_H
#define BW_WORKQ_H

#include <bulwark/errors.h>
#include <event2/event.h>

typedef struct bw_workq bw_workq;

bw_workq *bw_workq_new(struct event_base *base, unsigned threads, size_t max_pending, bw_error *err);
/* Waits for running and queued jobs, runs their completions, joins the threads. */
void bw_workq_free(bw_workq *q);
/* `work(arg)` on a worker, then `done(arg)` on the loop thread. BW_E_LIMIT when full. */
int bw_workq_submit(bw_workq *q, void (*work)(void *), void (*done)(void *), void *arg, bw_error *err);
size_t bw_workq_pending(bw_workq *q);

#endif
