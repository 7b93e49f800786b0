/* plugins/example_hello/hello.c: the example plugin: settings, a route, an event subscription,
 * a timer, a metric and the record store, each used the way a real plugin would. */
#include <bulwark/plugin.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

struct hello {
	const struct bw_host_api *host;
	bw_plugin_ctx *ctx;
	/* settings (filled by the host from the `example_hello = { ... }` table) */
	char *greeting;
	int64_t interval_ms;
	struct bw_strings topics;
	bool count_events;
	/* state */
	bw_metric *events_seen;
	bw_metric *greetings;
	int64_t seen;
	bw_timer *timer;
};

static const struct bw_config_field hello_fields[] = {
    {BW_FIELD_STRING, "greeting", "\"Hello\"", offsetof(struct hello, greeting),
     "Word the GET .../hello route answers with.", 0, 0, 0},
    {BW_FIELD_DURATION, "interval", "\"60s\"", offsetof(struct hello, interval_ms),
     "How often the plugin logs how many events it has seen.", 0, 1000, 86400000},
    {BW_FIELD_STRINGS, "topics", NULL, offsetof(struct hello, topics),
     "Event topics to count (default: every topic, \"*\").", 0, 0, 0},
    {BW_FIELD_BOOL, "count_events", "true", offsetof(struct hello, count_events),
     "Count events in the bulwark_example_hello_events_total metric.", 0, 0, 0},
    BW_FIELD_END};

static void on_event(const char *topic, json_t *payload, void *arg)
{
	(void)payload;
	struct hello *h = arg;
	h->seen++;
	if (h->count_events)
		h->host->metric_add(h->events_seen, topic, 1);
}

static void on_tick(void *arg)
{
	struct hello *h = arg;
	h->host->log(h->ctx, BW_LOG_DEBUG, "%lld events seen so far", (long long)h->seen);
}

/* GET /api/v1/plugins/example_hello/hello?name=X */
static void get_hello(bw_http_req *req, void *arg)
{
	struct hello *h = arg;
	const char *name = h->host->req_query(req, "name");
	if (name && strlen(name) > 64) {
		h->host->respond_error(req, 400, "bad_request", "name must be at most 64 characters");
		return;
	}
	char msg[200];
	snprintf(msg, sizeof msg, "%s, %s!", h->greeting, name ? name : h->host->req_principal(req));
	h->host->metric_add(h->greetings, NULL, 1);
	h->host->respond_json(req, 200, json_pack("{s:s, s:I}", "message", msg, "events_seen", (json_int_t)h->seen));
}

/* POST /api/v1/plugins/example_hello/notes {"key": "...", "text": "..."}: stores a note in the
 * plugin's record store and emits an event about it. */
static void post_note(bw_http_req *req, void *arg)
{
	struct hello *h = arg;
	json_t *body;
	bw_error err = {0};
	if (h->host->req_json(req, &body, &err) != BW_OK) {
		h->host->respond_error(req, 400, "invalid_json", err.message);
		return;
	}
	json_t *key = json_object_get(body, "key"), *text = json_object_get(body, "text");
	if (!json_is_string(key) || !json_is_string(text)) {
		json_decref(body);
		h->host->respond_error(req, 400, "bad_request", "fields 'key' and 'text' must be strings");
		return;
	}
	if (h->host->record_put(h->ctx, "notes", json_string_value(key), text, &err) != BW_OK) {
		json_decref(body);
		h->host->respond_error(req, 400, "bad_request", err.message);
		return;
	}
	h->host->event_emit(h->ctx, "example.note_saved", json_pack("{s:O}", "key", key), NULL);
	h->host->respond_json(req, 201, body);
}

/* GET /api/v1/plugins/example_hello/notes */
static void get_notes(bw_http_req *req, void *arg)
{
	struct hello *h = arg;
	json_t *list;
	bw_error err = {0};
	if (h->host->record_list(h->ctx, "notes", NULL, 100, &list, &err) != BW_OK) {
		h->host->respond_error(req, 500, "internal", err.message);
		return;
	}
	h->host->respond_json(req, 200, json_pack("{s:o}", "notes", list));
}

static int hello_init(bw_plugin_ctx *ctx, const struct bw_host_api *host, void *instance, bw_error *err)
{
	struct hello *h = instance;
	h->host = host;
	h->ctx = ctx;
	h->events_seen =
	    host->metric_new(ctx, BW_METRIC_COUNTER, "events_total", "Events seen, by topic.", "topic", NULL, 0, err);
	h->greetings =
	    host->metric_new(ctx, BW_METRIC_COUNTER, "greetings_total", "Greetings served.", NULL, NULL, 0, err);
	if (!h->events_seen || !h->greetings)
		return err->code;
	if (h->topics.count == 0) {
		if (host->event_subscribe(ctx, "*", on_event, h, err) != BW_OK)
			return err->code;
	}
	for (size_t i = 0; i < h->topics.count; i++)
		if (host->event_subscribe(ctx, h->topics.items[i], on_event, h, err) != BW_OK)
			return err->code;
	const struct bw_route routes[] = {
	    {sizeof(struct bw_route), "admin", "GET", "hello", BW_ROLE_READONLY, get_hello, h},
	    {sizeof(struct bw_route), "admin", "POST", "notes", BW_ROLE_ADMIN, post_note, h},
	    {sizeof(struct bw_route), "admin", "GET", "notes", BW_ROLE_READONLY, get_notes, h},
	    /* Devices: GET /agent/v1/plugins/example_hello/hello, authenticated by the device certificate. */
	    {sizeof(struct bw_route), "agent", "GET", "hello", BW_ROLE_READONLY, get_hello, h},
	};
	for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
		if (host->route_add(ctx, &routes[i], err) != BW_OK)
			return err->code;
	host->log(ctx, BW_LOG_INFO, "initialised; greeting '%s'", h->greeting);
	return BW_OK;
}

static int hello_start(bw_plugin_ctx *ctx, void *instance, bw_error *err)
{
	struct hello *h = instance;
	h->timer = h->host->timer_add(ctx, (uint64_t)h->interval_ms, (uint64_t)h->interval_ms, on_tick, h);
	if (!h->timer)
		return bw_error_set(err, BW_E_INTERNAL, "cannot start the timer");
	h->host->health_set(ctx, false, "greeting ready");
	return BW_OK;
}

static int hello_stop(bw_plugin_ctx *ctx, void *instance)
{
	struct hello *h = instance;
	h->host->timer_cancel(h->timer);
	h->timer = NULL;
	h->host->log(ctx, BW_LOG_INFO, "stopped after %lld events", (long long)h->seen);
	return BW_OK;
}

BW_PLUGIN_DEFINE(example_hello) = {
    BW_PLUGIN_HEADER,
    .name = "example_hello",
    .version = "1.0.0",
    .description = "Example plugin: a greeting route, notes in the record store, event counting",
    .instance_size = sizeof(struct hello),
    .fields = hello_fields,
    .init = hello_init,
    .start = hello_start,
    .stop = hello_stop,
};
