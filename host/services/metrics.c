/* host/services/metrics.c: the metrics registry and its Prometheus text rendering. */
#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES  256 /* label values per metric: bounds memory whatever callers pass */
#define MAX_BUCKETS 32

static const double default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

struct series {
	char *label_value;
	double value; /* counter/gauge; histogram sum */
	uint64_t count;
	uint64_t *bucket_counts;
	struct series *next;
};

struct bw_metric {
	bw_metrics *reg;
	int kind;
	char *name, *help, *label;
	double buckets[MAX_BUCKETS];
	size_t nbuckets;
	size_t nseries;
	struct series *series;
	struct bw_metric *next;
};

struct bw_metrics {
	pthread_mutex_t mu;
	struct bw_metric *head, *tail;
};

bw_metrics *bw_metrics_new(void)
{
	bw_metrics *reg = calloc(1, sizeof *reg);
	if (reg)
		pthread_mutex_init(&reg->mu, NULL);
	return reg;
}

void bw_metrics_free(bw_metrics *reg)
{
	if (!reg)
		return;
	for (struct bw_metric *m = reg->head, *n; m; m = n) {
		n = m->next;
		for (struct series *s = m->series, *sn; s; s = sn) {
			sn = s->next;
			free(s->label_value);
			free(s->bucket_counts);
			free(s);
		}
		free(m->name);
		free(m->help);
		free(m->label);
		free(m);
	}
	pthread_mutex_destroy(&reg->mu);
	free(reg);
}

static bool name_valid(const char *n)
{
	if (!n || !*n || strlen(n) > 200)
		return false;
	for (const char *p = n; *p; p++) {
		char c = *p;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
		          (p != n && c >= '0' && c <= '9');
		if (!ok)
			return false;
	}
	return true;
}

bw_metric *bw_metric_new(bw_metrics *reg, int kind, const char *name, const char *help, const char *label,
                         const double *buckets, size_t nbuckets, bw_error *err)
{
	if (kind < BW_METRIC_COUNTER || kind > BW_METRIC_HISTOGRAM) {
		bw_error_set(err, BW_E_INVALID, "metric '%s': unknown kind %d", name ? name : "", kind);
		return NULL;
	}
	/* Label names follow the metric name rule without colons ([a-zA-Z_][a-zA-Z0-9_]*). */
	if (!name_valid(name) || (label && (!name_valid(label) || strchr(label, ':') || strcmp(label, "le") == 0))) {
		bw_error_set(err, BW_E_INVALID, "invalid metric or label name '%s'", name ? name : "(null)");
		return NULL;
	}
	if (!buckets) {
		buckets = default_buckets;
		nbuckets = sizeof default_buckets / sizeof default_buckets[0];
	}
	if (kind == BW_METRIC_HISTOGRAM && (nbuckets == 0 || nbuckets > MAX_BUCKETS)) {
		bw_error_set(err, BW_E_INVALID, "metric '%s': 1 to %d buckets", name, MAX_BUCKETS);
		return NULL;
	}
	for (size_t i = 1; kind == BW_METRIC_HISTOGRAM && i < nbuckets; i++)
		if (!(buckets[i] > buckets[i - 1])) {
			bw_error_set(err, BW_E_INVALID, "metric '%s': buckets must increase", name);
			return NULL;
		}
	pthread_mutex_lock(&reg->mu);
	for (struct bw_metric *m = reg->head; m; m = m->next)
		if (strcmp(m->name, name) == 0) {
			bool same = m->kind == kind &&
			            ((!m->label && !label) || (m->label && label && !strcmp(m->label, label)));
			pthread_mutex_unlock(&reg->mu);
			if (!same)
				bw_error_set(err, BW_E_EXISTS, "metric '%s' already exists with another kind or label",
				             name);
			return same ? m : NULL;
		}
	struct bw_metric *m = calloc(1, sizeof *m);
	if (!m) {
		pthread_mutex_unlock(&reg->mu);
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	m->reg = reg;
	m->kind = kind;
	m->name = strdup(name);
	m->help = strdup(help ? help : "");
	m->label = label ? strdup(label) : NULL;
	if (kind == BW_METRIC_HISTOGRAM) {
		memcpy(m->buckets, buckets, nbuckets * sizeof *buckets);
		m->nbuckets = nbuckets;
	}
	if (reg->tail)
		reg->tail->next = m;
	else
		reg->head = m;
	reg->tail = m;
	pthread_mutex_unlock(&reg->mu);
	return m;
}

/* Called with the registry lock held. Series past MAX_SERIES fold into label value "other". */
static struct series *series_get(bw_metric *m, const char *lv)
{
	if (!m->label)
		lv = NULL;
	else if (!lv)
		lv = "";
	for (struct series *s = m->series; s; s = s->next)
		if ((!s->label_value && !lv) || (s->label_value && lv && strcmp(s->label_value, lv) == 0))
			return s;
	if (m->nseries >= MAX_SERIES && lv && strcmp(lv, "other") != 0)
		return series_get(m, "other");
	struct series *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	if (lv && !(s->label_value = strdup(lv))) {
		free(s);
		return NULL;
	}
	if (m->kind == BW_METRIC_HISTOGRAM && !(s->bucket_counts = calloc(m->nbuckets, sizeof(uint64_t)))) {
		free(s->label_value);
		free(s);
		return NULL;
	}
	/* Append so output order is stable. */
	struct series **pp = &m->series;
	while (*pp)
		pp = &(*pp)->next;
	*pp = s;
	m->nseries++;
	return s;
}

void bw_metric_add(bw_metric *m, const char *label_value, double v)
{
	if (!m || m->kind == BW_METRIC_HISTOGRAM || (m->kind == BW_METRIC_COUNTER && !(v >= 0)))
		return;
	pthread_mutex_lock(&m->reg->mu);
	struct series *s = series_get(m, label_value);
	if (s)
		s->value += v;
	pthread_mutex_unlock(&m->reg->mu);
}

void bw_metric_set(bw_metric *m, const char *label_value, double v)
{
	if (!m || m->kind != BW_METRIC_GAUGE)
		return;
	pthread_mutex_lock(&m->reg->mu);
	struct series *s = series_get(m, label_value);
	if (s)
		s->value = v;
	pthread_mutex_unlock(&m->reg->mu);
}

void bw_metric_observe(bw_metric *m, const char *label_value, double v)
{
	if (!m || m->kind != BW_METRIC_HISTOGRAM || isnan(v))
		return;
	pthread_mutex_lock(&m->reg->mu);
	struct series *s = series_get(m, label_value);
	if (s) {
		s->value += v;
		s->count++;
		for (size_t i = 0; i < m->nbuckets; i++)
			if (v <= m->buckets[i])
				s->bucket_counts[i]++;
	}
	pthread_mutex_unlock(&m->reg->mu);
}

double bw_metric_value(bw_metric *m, const char *label_value)
{
	pthread_mutex_lock(&m->reg->mu);
	struct series *s = series_get(m, label_value);
	double v = s ? (m->kind == BW_METRIC_HISTOGRAM ? (double)s->count : s->value) : 0;
	pthread_mutex_unlock(&m->reg->mu);
	return v;
}

/* Label values escaped per the exposition format: backslash, quote, newline. */
static void add_label(struct evbuffer *out, const char *name, const char *value)
{
	evbuffer_add_printf(out, "%s=\"", name);
	for (const char *p = value; *p; p++) {
		if (*p == '\\' || *p == '"')
			evbuffer_add_printf(out, "\\%c", *p);
		else if (*p == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, p, 1);
	}
	evbuffer_add(out, "\"", 1);
}

static void add_value(struct evbuffer *out, double v)
{
	if (isinf(v))
		evbuffer_add_printf(out, " %s\n", v > 0 ? "+Inf" : "-Inf");
	else
		evbuffer_add_printf(out, " %.17g\n", v);
}

void bw_metrics_render(bw_metrics *reg, struct evbuffer *out)
{
	static const char *const kinds[] = {"", "counter", "gauge", "histogram"};
	pthread_mutex_lock(&reg->mu);
	for (struct bw_metric *m = reg->head; m; m = m->next) {
		evbuffer_add_printf(out, "# HELP %s ", m->name);
		for (const char *p = m->help; *p; p++) {
			if (*p == '\\')
				evbuffer_add(out, "\\\\", 2);
			else if (*p == '\n')
				evbuffer_add(out, "\\n", 2);
			else
				evbuffer_add(out, p, 1);
		}
		evbuffer_add_printf(out, "\n# TYPE %s %s\n", m->name, kinds[m->kind]);
		if (!m->series && !m->label) /* unlabeled metrics show 0 before the first update */
			series_get(m, NULL);
		for (struct series *s = m->series; s; s = s->next) {
			if (m->kind != BW_METRIC_HISTOGRAM) {
				evbuffer_add_printf(out, "%s", m->name);
				if (s->label_value) {
					evbuffer_add(out, "{", 1);
					add_label(out, m->label, s->label_value);
					evbuffer_add(out, "}", 1);
				}
				add_value(out, s->value);
				continue;
			}
			for (size_t i = 0; i <= m->nbuckets; i++) {
				char le[40];
				if (i < m->nbuckets)
					snprintf(le, sizeof le, "%g", m->buckets[i]);
				else
					snprintf(le, sizeof le, "+Inf");
				evbuffer_add_printf(out, "%s_bucket{", m->name);
				if (s->label_value) {
					add_label(out, m->label, s->label_value);
					evbuffer_add(out, ",", 1);
				}
				add_label(out, "le", le);
				evbuffer_add(out, "}", 1);
				add_value(out, (double)(i < m->nbuckets ? s->bucket_counts[i] : s->count));
			}
			const char *suffix[2] = {"_sum", "_count"};
			for (int k = 0; k < 2; k++) {
				evbuffer_add_printf(out, "%s%s", m->name, suffix[k]);
				if (s->label_value) {
					evbuffer_add(out, "{", 1);
					add_label(out, m->label, s->label_value);
					evbuffer_add(out, "}", 1);
				}
				add_value(out, k == 0 ? s->value : (double)s->count);
			}
		}
	}
	pthread_mutex_unlock(&reg->mu);
}
