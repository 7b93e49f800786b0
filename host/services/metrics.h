/* host/services/metrics.h: counters, gauges and histograms, rendered in the Prometheus text
 * exposition format (version 0.0.4). Updates are thread-safe. */
#ifndef BW_METRICS_H
#define BW_METRICS_H

#include <bulwark/host.h>
#include <event2/buffer.h>

typedef struct bw_metrics bw_metrics;

bw_metrics *bw_metrics_new(void);
void bw_metrics_free(bw_metrics *reg);

/* `name` must match [a-zA-Z_:][a-zA-Z0-9_:]*; a name registered twice returns the existing
 * metric when kind and label agree (so a reloaded plugin keeps its series), else BW_E_EXISTS. */
bw_metric *bw_metric_new(bw_metrics *reg, int kind, const char *name, const char *help, const char *label,
                         const double *buckets, size_t nbuckets, bw_error *err);
void bw_metric_add(bw_metric *m, const char *label_value, double v);
void bw_metric_set(bw_metric *m, const char *label_value, double v);
void bw_metric_observe(bw_metric *m, const char *label_value, double v);
double bw_metric_value(bw_metric *m, const char *label_value); /* counters and gauges, for tests */

/* Appends every metric in registration order. */
void bw_metrics_render(bw_metrics *reg, struct evbuffer *out);

#endif
