/* tests/unit/test_events.c: the event bus (host/services/events.c): topic patterns, deferred
 * delivery on the loop, payload ownership, topic validation, the queue limit, removing a
 * plugin's subscriptions, and events emitted by subscribers. */
#include "testutil.h"

#include "events.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rec {
	const char *name;
	int calls;
	char last_topic[160];
	json_int_t last_id;
	char *order; /* shared log of which subscriber ran, in order */
};

static void record(const char *topic, json_t *payload, void *arg)
{
	struct rec *r = arg;
	r->calls++;
	snprintf(r->last_topic, sizeof r->last_topic, "%s", topic);
	assert_non_null(payload);
	r->last_id = json_integer_value(json_object_get(payload, "id"));
	if (r->order)
		strcat(r->order, r->name);
}

static struct event_base *new_base(void)
{
	struct event_base *b = event_base_new();
	assert_non_null(b);
	return b;
}

static void test_patterns(void **state)
{
	(void)state;
	struct event_base *base = new_base();
	bw_events *ev = bw_events_new(base, 0);
	assert_non_null(ev);
	char order[64] = "";
	struct rec exact = {.name = "E", .order = order}, prefix = {.name = "P", .order = order},
	           all = {.name = "A", .order = order}, other = {.name = "O", .order = order},
	           deep = {.name = "D", .order = order};
	bw_error err = {0};
	assert_int_equal(bw_events_subscribe(ev, NULL, "device.enrolled", record, &exact, &err), BW_OK);
	assert_int_equal(bw_events_subscribe(ev, NULL, "device.*", record, &prefix, &err), BW_OK);
	assert_int_equal(bw_events_subscribe(ev, NULL, "*", record, &all, &err), BW_OK);
	assert_int_equal(bw_events_subscribe(ev, NULL, "user.*", record, &other, &err), BW_OK);
	assert_int_equal(bw_events_subscribe(ev, NULL, "device.cert.*", record, &deep, &err), BW_OK);

	assert_int_equal(bw_events_emit(ev, "device.enrolled", json_pack("{s:i}", "id", 7), &err), BW_OK);
	bw_events_flush(ev);
	assert_int_equal(exact.calls, 1);
	assert_int_equal(prefix.calls, 1);
	assert_int_equal(all.calls, 1);
	assert_int_equal(other.calls, 0);
	assert_int_equal(deep.calls, 0);
	assert_string_equal(exact.last_topic, "device.enrolled");
	assert_int_equal(exact.last_id, 7);
	/* Subscribers run in subscription order. */
	assert_string_equal(order, "EPA");

	/* "device.*" matches deeper topics under "device." but not "device" or "devices.x". */
	order[0] = '\0';
	assert_int_equal(bw_events_emit(ev, "device.cert.renewed", json_pack("{s:i}", "id", 8), &err), BW_OK);
	assert_int_equal(bw_events_emit(ev, "device", NULL, &err), BW_OK);
	assert_int_equal(bw_events_emit(ev, "devices.x", NULL, &err), BW_OK);
	assert_int_equal(bw_events_emit(ev, "user.login", NULL, &err), BW_OK);
	bw_events_flush(ev);
	assert_int_equal(exact.calls, 1);
	assert_int_equal(prefix.calls, 2);
	assert_int_equal(deep.calls, 1);
	assert_int_equal(deep.last_id, 8);
	assert_int_equal(all.calls, 5);
	assert_int_equal(other.calls, 1);
	assert_string_equal(order, "PADAAAO");
	/* A NULL payload reaches subscribers as an empty object. */
	assert_string_equal(other.last_topic, "user.login");
	assert_int_equal(other.last_id, 0);
	bw_events_free(ev);
	event_base_free(base);
}

static void test_emit_is_deferred(void **state)
{
	(void)state;
	struct event_base *base = new_base();
	bw_events *ev = bw_events_new(base, 0);
	struct rec r = {.name = "r"};
	bw_error err = {0};
	assert_int_equal(bw_events_subscribe(ev, NULL, "a.b", record, &r, &err), BW_OK);
	assert_int_equal(bw_events_emit(ev, "a.b", json_pack("{s:i}", "id", 1), &err), BW_OK);
	assert_int_equal(bw_events_emit(ev, "a.b", json_pack("{s:i}", "id", 2), &err), BW_OK);
	/* Not delivered from inside emit... */
	assert_int_equal(r.calls, 0);
	/* ...but by the loop, in order. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(r.calls, 2);
	assert_int_equal(r.last_id, 2);
	/* Nothing left. */
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(r.calls, 2);
	bw_events_free(ev);
	event_base_free(base);
}

/* Keeps a reference to a borrowed payload: the subscriber takes its own reference. */
static json_t *g_kept;
static void keeper(const char *topic, json_t *payload, void *arg)
{
	(void)topic, (void)arg;
	/* Borrowed: one reference held by the queue while we run. */
	assert_int_equal(payload->refcount, 1);
	g_kept = json_incref(payload);
}

static void test_payload_ownership(void **state)
{
	(void)state;
	struct event_base *base = new_base();
	bw_events *ev = bw_events_new(base, 0);
	bw_error err = {0};
	assert_int_equal(bw_events_subscribe(ev, NULL, "*", keeper, NULL, &err), BW_OK);
	json_t *p = json_pack("{s:s}", "k", "v");
	assert_int_equal(bw_events_emit(ev, "x.y", p, &err), BW_OK); /* stolen */
	bw_events_flush(ev);
	/* The bus dropped its reference after delivery; ours is the only one left. */
	assert_ptr_equal(g_kept, p);
	assert_int_equal(g_kept->refcount, 1);
	assert_string_equal(json_string_value(json_object_get(g_kept, "k")), "v");
	json_decref(g_kept);
	g_kept = NULL;
	/* Events still queued when the bus is freed are released (LeakSanitizer checks). */
	assert_int_equal(bw_events_emit(ev, "x.z", json_pack("{s:[i,i]}", "l", 1, 2), &err), BW_OK);
	bw_events_free(ev);
	event_base_free(base);
}

static void test_invalid_topics(void **state)
{
	(void)state;
	struct event_base *base = new_base();
	bw_events *ev = bw_events_new(base, 0);
	struct rec r = {.name = "r"};
	char longtopic[200];
	memset(longtopic, 'a', 129);
	longtopic[129] = '\0';
	const char *bad_emit[] = {"", "Device.x", "a..b", ".a", "a.", "a b", "a-b", "a.*", "*", "é", longtopic};
	for (size_t i = 0; i < sizeof bad_emit / sizeof bad_emit[0]; i++) {
		bw_error err = {0};
		/* The payload is stolen even on failure (LeakSanitizer checks). */
		assert_int_equal(bw_events_emit(ev, bad_emit[i], json_pack("{s:i}", "id", 1), &err), BW_E_INVALID);
		assert_int_equal(err.code, BW_E_INVALID);
		assert_false(bw_events_topic_valid(bad_emit[i]));
	}
	bw_error err = {0};
	assert_int_equal(bw_events_emit(ev, NULL, NULL, &err), BW_E_INVALID);
	assert_false(bw_events_topic_valid(NULL));
	assert_true(bw_events_topic_valid("a"));
	assert_true(bw_events_topic_valid("device.cert_renewed.v2"));
	memset(longtopic, 'a', 128);
	longtopic[128] = '\0';
	assert_true(bw_events_topic_valid(longtopic));

	const char *bad_sub[] = {"", "a.*.b", "*a", "a*", "a.**", ".*", "**", "A.*", "a..*", "a b"};
	for (size_t i = 0; i < sizeof bad_sub / sizeof bad_sub[0]; i++) {
		bw_error e = {0};
		assert_int_equal(bw_events_subscribe(ev, NULL, bad_sub[i], record, &r, &e), BW_E_INVALID);
		assert_non_null(strstr(e.message, "topic"));
	}
	assert_int_equal(bw_events_subscribe(ev, NULL, NULL, record, &r, &err), BW_E_INVALID);
	assert_int_equal(bw_events_subscribe(ev, NULL, "a.b", NULL, &r, &err), BW_E_INVALID);
	/* Nothing invalid was queued or subscribed. */
	assert_int_equal(bw_events_subscribe(ev, NULL, "x", record, &r, &err), BW_OK);
	assert_int_equal(bw_events_emit(ev, "x", NULL, &err), BW_OK);
	bw_events_flush(ev);
	assert_int_equal(r.calls, 1);
	bw_events_free(ev);
	event_base_free(base);
}

static void test_queue_limit(void **state)
{
	(void)state;
	struct event_base *base = new_base();
	bw_events *ev = bw_events_new(base, 3);
	struct rec r = {.name = "r"};
	bw_error err = {0};
	assert_int_equal(bw_events_subscribe(ev, NULL, "q.*", record, &r, &err), BW_OK);
	for (int i = 0; i < 3; i++)
		assert_int_equal(bw_events_emit(ev, "q.x", json_pack("{s:i}", "id", i), &err), BW_OK);
	assert_int_equal(bw_events_dropped(ev), 0);
	assert_int_equal(bw_events_emit(ev, "q.y", json_pack("{s:i}", "id", 99), &err), BW_E_LIMIT);
	assert_int_equal(err.code, BW_E_LIMIT);
	assert_non_null(strstr(err.message, "q.y"));
	assert_int_equal(bw_events_emit(ev, "q.y", NULL, &err), BW_E_LIMIT);
	assert_int_equal(bw_events_dropped(ev), 2);
	event_base_loop(base, EVLOOP_NONBLOCK);
	/* The three queued events arrived; the dropped one never does. */
	assert_int_equal(r.calls, 3);
	assert_int_equal(r.last_id, 2);
	assert_string_equal(r.last_topic, "q.x");
	/* Room again after delivery. */
	assert_int_equal(bw_events_emit(ev, "q.z", NULL, &err), BW_OK);
	bw_events_flush(ev);
	assert_int_equal(r.calls, 4);
	assert_int_equal(bw_events_dropped(ev), 2);
	bw_events_free(ev);
	event_base_free(base);
}

static void test_unsubscribe_owner(void **state)
{
	(void)state;
	struct event_base *base = new_base();
	bw_events *ev = bw_events_new(base, 0);
	int owner_a, owner_b;
	struct rec a1 = {.name = "a1"}, a2 = {.name = "a2"}, b1 = {.name = "b1"};
	bw_error err = {0};
	assert_int_equal(bw_events_subscribe(ev, &owner_a, "t.*", record, &a1, &err), BW_OK);
	assert_int_equal(bw_events_subscribe(ev, &owner_b, "t.one", record, &b1, &err), BW_OK);
	assert_int_equal(bw_events_subscribe(ev, &owner_a, "*", record, &a2, &err), BW_OK);
	/* Queued before the unsubscribe, delivered after: only B's subscription remains. */
	assert_int_equal(bw_events_emit(ev, "t.one", NULL, &err), BW_OK);
	bw_events_unsubscribe_owner(ev, &owner_a);
	bw_events_flush(ev);
	assert_int_equal(a1.calls, 0);
	assert_int_equal(a2.calls, 0);
	assert_int_equal(b1.calls, 1);
	/* Unknown owners and repeated calls are harmless. */
	bw_events_unsubscribe_owner(ev, &owner_a);
	bw_events_unsubscribe_owner(ev, NULL);
	bw_events_unsubscribe_owner(ev, &owner_b);
	assert_int_equal(bw_events_emit(ev, "t.one", NULL, &err), BW_OK);
	bw_events_flush(ev);
	assert_int_equal(b1.calls, 1);
	bw_events_free(ev);
	event_base_free(base);
}

struct chain {
	bw_events *ev;
	int depth; /* > 0 while a subscriber runs */
	int first, second;
};

static void on_first(const char *topic, json_t *payload, void *arg)
{
	(void)topic, (void)payload;
	struct chain *c = arg;
	assert_int_equal(c->depth, 0); /* never re-entrant */
	c->depth++;
	c->first++;
	bw_error err = {0};
	assert_int_equal(bw_events_emit(c->ev, "chain.second", json_pack("{s:i}", "id", c->first), &err), BW_OK);
	/* The new event was not delivered from inside emit. */
	assert_int_equal(c->second, c->first - 1);
	c->depth--;
}

static void on_second(const char *topic, json_t *payload, void *arg)
{
	(void)topic;
	struct chain *c = arg;
	assert_int_equal(c->depth, 0);
	c->second++;
	assert_int_equal(json_integer_value(json_object_get(payload, "id")), c->second);
}

static void test_emit_from_subscriber(void **state)
{
	(void)state;
	struct event_base *base = new_base();
	bw_events *ev = bw_events_new(base, 0);
	struct chain c = {.ev = ev};
	bw_error err = {0};
	assert_int_equal(bw_events_subscribe(ev, NULL, "chain.first", on_first, &c, &err), BW_OK);
	assert_int_equal(bw_events_subscribe(ev, NULL, "chain.second", on_second, &c, &err), BW_OK);
	assert_int_equal(bw_events_emit(ev, "chain.first", NULL, &err), BW_OK);
	bw_events_flush(ev);
	/* The event emitted during the pass waits for the next pass. */
	assert_int_equal(c.first, 1);
	assert_int_equal(c.second, 0);
	bw_events_flush(ev);
	assert_int_equal(c.second, 1);
	/* Through the loop, the follow-up event also arrives (after the subscriber returned). */
	assert_int_equal(bw_events_emit(ev, "chain.first", NULL, &err), BW_OK);
	for (int i = 0; i < 5 && c.second < 2; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(c.first, 2);
	assert_int_equal(c.second, 2);
	bw_events_free(ev);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_patterns),
	    cmocka_unit_test(test_emit_is_deferred),
	    cmocka_unit_test(test_payload_ownership),
	    cmocka_unit_test(test_invalid_topics),
	    cmocka_unit_test(test_queue_limit),
	    cmocka_unit_test(test_unsubscribe_owner),
	    cmocka_unit_test(test_emit_from_subscriber),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
