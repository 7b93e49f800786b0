/* host/services/events.c: the event bus (queue + deferred delivery on the loop thread). */
#include "events.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

struct sub {
	const void *owner;
	char *topic; /* "a.b", "a.*" or "*" */
	bw_event_fn cb;
	void *arg;
	struct sub *next;
};

struct queued {
	char *topic;
	json_t *payload;
	struct queued *next;
};

struct bw_events {
	struct event_base *base;
	struct event *deliver;
	struct sub *subs;
	struct queued *head, *tail;
	size_t queued, max_queued;
	uint64_t dropped;
};

static void deliver_cb(evutil_socket_t fd, short what, void *arg);

bw_events *bw_events_new(struct event_base *base, size_t max_queued)
{
	bw_events *ev = calloc(1, sizeof *ev);
	if (!ev)
		return NULL;
	ev->base = base;
	ev->max_queued = max_queued ? max_queued : 100000;
	ev->deliver = event_new(base, -1, 0, deliver_cb, ev);
	if (!ev->deliver) {
		free(ev);
		return NULL;
	}
	return ev;
}

static void queued_free(struct queued *q)
{
	json_decref(q->payload);
	free(q->topic);
	free(q);
}

void bw_events_free(bw_events *ev)
{
	if (!ev)
		return;
	for (struct queued *q = ev->head, *n; q; q = n) {
		n = q->next;
		queued_free(q);
	}
	for (struct sub *s = ev->subs, *n; s; s = n) {
		n = s->next;
		free(s->topic);
		free(s);
	}
	event_free(ev->deliver);
	free(ev);
}

bool bw_events_topic_valid(const char *topic)
{
	if (!topic || !*topic || strlen(topic) > 128)
		return false;
	for (const char *p = topic; *p; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.'))
			return false;
		if (c == '.' && (p == topic || p[1] == '\0' || p[1] == '.'))
			return false;
	}
	return true;
}

static bool pattern_valid(const char *t)
{
	if (t && strcmp(t, "*") == 0)
		return true;
	size_t n = t ? strlen(t) : 0;
	if (n > 2 && strcmp(t + n - 2, ".*") == 0) {
		char buf[130];
		if (n - 2 >= sizeof buf)
			return false;
		memcpy(buf, t, n - 2);
		buf[n - 2] = '\0';
		return bw_events_topic_valid(buf);
	}
	return bw_events_topic_valid(t);
}

static bool matches(const char *pattern, const char *topic)
{
	if (strcmp(pattern, "*") == 0)
		return true;
	size_t n = strlen(pattern);
	if (n > 2 && pattern[n - 1] == '*')
		return strncmp(pattern, topic, n - 1) == 0 && topic[n - 1] != '\0';
	return strcmp(pattern, topic) == 0;
}

int bw_events_subscribe(bw_events *ev, const void *owner, const char *topic, bw_event_fn cb, void *arg, bw_error *err)
{
	if (!cb || !pattern_valid(topic))
		return bw_error_set(err, BW_E_INVALID, "invalid event topic '%s' (use a.b, a.* or *)",
		                    topic ? topic : "(null)");
	struct sub *s = calloc(1, sizeof *s);
	if (!s || !(s->topic = strdup(topic))) {
		free(s);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	s->owner = owner;
	s->cb = cb;
	s->arg = arg;
	/* Append, so subscribers run in subscription order. */
	struct sub **pp = &ev->subs;
	while (*pp)
		pp = &(*pp)->next;
	*pp = s;
	return BW_OK;
}

void bw_events_unsubscribe_owner(bw_events *ev, const void *owner)
{
	struct sub **pp = &ev->subs;
	while (*pp) {
		struct sub *s = *pp;
		if (s->owner == owner) {
			*pp = s->next;
			free(s->topic);
			free(s);
		} else {
			pp = &s->next;
		}
	}
}

int bw_events_emit(bw_events *ev, const char *topic, json_t *payload, bw_error *err)
{
	if (!bw_events_topic_valid(topic)) {
		json_decref(payload);
		return bw_error_set(err, BW_E_INVALID, "invalid event topic '%s'", topic ? topic : "(null)");
	}
	if (ev->queued >= ev->max_queued) {
		json_decref(payload);
		ev->dropped++;
		return bw_error_set(err, BW_E_LIMIT, "event queue full (%zu events); '%s' dropped", ev->queued, topic);
	}
	struct queued *q = calloc(1, sizeof *q);
	if (!q || !(q->topic = strdup(topic))) {
		free(q);
		json_decref(payload);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	q->payload = payload ? payload : json_object();
	if (ev->tail)
		ev->tail->next = q;
	else
		ev->head = q;
	ev->tail = q;
	ev->queued++;
	event_active(ev->deliver, 0, 0);
	return BW_OK;
}

void bw_events_flush(bw_events *ev)
{
	/* Take the current queue: events emitted by subscribers go to the next pass. */
	struct queued *q = ev->head;
	ev->head = ev->tail = NULL;
	ev->queued = 0;
	while (q) {
		struct queued *n = q->next;
		for (struct sub *s = ev->subs; s; s = s->next)
			if (matches(s->topic, q->topic))
				s->cb(q->topic, q->payload, s->arg);
		queued_free(q);
		q = n;
	}
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	bw_events_flush(arg);
}

uint64_t bw_events_dropped(const bw_events *ev)
{
	return ev->dropped;
}
