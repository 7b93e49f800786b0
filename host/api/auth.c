/* host/api/auth.c: failed-login counters in a small hash table with a cap on entries. */
#include "auth.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS           1024
#define MAX_ENTRIES       100000
#define PURGE_INTERVAL_MS 1000 /* a full table is swept at most this often, not on every new key */

struct entry {
	char *key; /* "a:<account>" or "i:<address>" */
	int64_t window_start;
	int64_t count;
	struct entry *next;
};

struct bw_auth {
	struct entry *b[BUCKETS];
	size_t n;
	int64_t last_purge;
};

bw_auth *bw_auth_new(void)
{
	return calloc(1, sizeof(bw_auth));
}

void bw_auth_free(bw_auth *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < BUCKETS; i++)
		for (struct entry *e = a->b[i], *n; e; e = n) {
			n = e->next;
			free(e->key);
			free(e);
		}
	free(a);
}

static size_t hash(const char *s)
{
	size_t h = 1469598103934665603ull;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h % BUCKETS;
}

static void purge(bw_auth *a, int64_t now, int64_t window)
{
	for (size_t i = 0; i < BUCKETS; i++) {
		struct entry **pp = &a->b[i];
		while (*pp) {
			struct entry *e = *pp;
			if (now - e->window_start >= window) {
				*pp = e->next;
				free(e->key);
				free(e);
				a->n--;
			} else {
				pp = &e->next;
			}
		}
	}
}

static struct entry *find(bw_auth *a, const char *key, bool create, int64_t now, int64_t window)
{
	size_t h = hash(key);
	for (struct entry *e = a->b[h]; e; e = e->next)
		if (strcmp(e->key, key) == 0) {
			if (now - e->window_start >= window) {
				e->window_start = now;
				e->count = 0;
			}
			return e;
		}
	if (!create)
		return NULL;
	if (a->n >= MAX_ENTRIES && (now < a->last_purge || now - a->last_purge >= PURGE_INTERVAL_MS)) {
		purge(a, now, window);
		a->last_purge = now;
	}
	if (a->n >= MAX_ENTRIES)
		return NULL; /* under a flood of distinct keys, the per-address limit still protects */
	struct entry *e = calloc(1, sizeof *e);
	if (!e || !(e->key = strdup(key))) {
		free(e);
		return NULL;
	}
	e->window_start = now;
	e->next = a->b[h];
	a->b[h] = e;
	a->n++;
	return e;
}

static int64_t wait_for(bw_auth *a, const char *key, int64_t limit, int64_t now, int64_t window)
{
	struct entry *e = find(a, key, false, now, window);
	if (!e || e->count < limit)
		return 0;
	int64_t left = e->window_start + window - now;
	return left > 0 ? left : 0;
}

int64_t bw_auth_blocked(bw_auth *a, const struct bw_auth_limits *l, const char *account, const char *address,
                        int64_t now_ms)
{
	char k1[300], k2[300];
	snprintf(k1, sizeof k1, "a:%s", account);
	snprintf(k2, sizeof k2, "i:%s", address);
	int64_t w1 = wait_for(a, k1, l->per_account, now_ms, l->window_ms);
	int64_t w2 = wait_for(a, k2, l->per_address, now_ms, l->window_ms);
	return w1 > w2 ? w1 : w2;
}

void bw_auth_failure(bw_auth *a, const struct bw_auth_limits *l, const char *account, const char *address,
                     int64_t now_ms)
{
	char k[300];
	snprintf(k, sizeof k, "a:%s", account);
	struct entry *e = find(a, k, true, now_ms, l->window_ms);
	if (e)
		e->count++;
	snprintf(k, sizeof k, "i:%s", address);
	if ((e = find(a, k, true, now_ms, l->window_ms)))
		e->count++;
}

void bw_auth_success(bw_auth *a, const char *account)
{
	char k[300];
	snprintf(k, sizeof k, "a:%s", account);
	struct entry *e = find(a, k, false, 0, INT64_MAX);
	if (e)
		e->count = 0;
}
