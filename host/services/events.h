/* host/services/events.h: the event bus: typed topics with JSON payloads, delivered to
 * subscribers on the loop thread after the emitter returned (never re-entrantly). */
#ifndef BW_EVENTS_H
#define BW_EVENTS_H

#include <bulwark/host.h>
#include <event2/event.h>

typedef struct bw_events bw_events;

bw_events *bw_events_new(struct event_base *base, size_t max_queued);
void bw_events_free(bw_events *ev);

/* `topic`: exact name, "prefix.*" or "*". `owner` tags the subscription (a plugin ctx) so
 * bw_events_unsubscribe_owner can drop all of a plugin's subscriptions. */
int bw_events_subscribe(bw_events *ev, const void *owner, const char *topic, bw_event_fn cb, void *arg, bw_error *err);
void bw_events_unsubscribe_owner(bw_events *ev, const void *owner);
/* Queues the event; steals `payload`. BW_E_LIMIT when the queue is full (the event is dropped
 * and counted), BW_E_INVALID for a malformed topic. */
int bw_events_emit(bw_events *ev, const char *topic, json_t *payload, bw_error *err);
/* Delivers everything queued now (tests and shutdown). */
void bw_events_flush(bw_events *ev);
bool bw_events_topic_valid(const char *topic);
uint64_t bw_events_dropped(const bw_events *ev);

#endif
