/* host/agent/devices.c: the in-memory device registry (the check-in fast path reads only
 * memory), coalesced last-seen writes, command queueing and device unregistration. */
#include "devices.h"

#include "crypto.h"
#include "log.h"
#include "registry.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

struct bw_registry {
	struct bw_host *h;
	struct bw_reg_device *slots;
	size_t cap, n;
	size_t *dirty; /* slot indexes whose last_seen is not yet in the database */
	size_t ndirty, dirty_cap;
	struct event *flush_ev;
};

static uint64_t hash_id(const char *id)
{
	uint64_t h = 1469598103934665603ull;
	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ull;
	return h;
}

static struct bw_reg_device *slot_for(bw_registry *r, const char *id, bool *found)
{
	size_t mask = r->cap - 1;
	for (size_t i = hash_id(id) & mask;; i = (i + 1) & mask) {
		struct bw_reg_device *d = &r->slots[i];
		if (!d->id[0]) {
			*found = false;
			return d;
		}
		if (strcmp(d->id, id) == 0) {
			*found = true;
			return d;
		}
	}
}

static int grow(bw_registry *r)
{
	size_t ncap = r->cap ? r->cap * 2 : 1024;
	struct bw_reg_device *old = r->slots;
	size_t ocap = r->cap;
	r->slots = calloc(ncap, sizeof *r->slots);
	if (!r->slots) {
		r->slots = old;
		return BW_E_NOMEM;
	}
	r->cap = ncap;
	/* Dirty indexes point into the old table: flush them first (callers do). */
	for (size_t i = 0; i < ocap; i++)
		if (old[i].id[0]) {
			bool f;
			*slot_for(r, old[i].id, &f) = old[i];
		}
	free(old);
	return BW_OK;
}

static void flush_seen(bw_registry *r)
{
	if (r->ndirty == 0)
		return;
	const char **ids = malloc(r->ndirty * sizeof *ids);
	int64_t *seen = malloc(r->ndirty * sizeof *seen);
	if (!ids || !seen) {
		free(ids);
		free(seen);
		return;
	}
	for (size_t i = 0; i < r->ndirty; i++) {
		struct bw_reg_device *d = &r->slots[r->dirty[i]];
		ids[i] = d->id;
		seen[i] = d->last_seen;
		d->dirty = false;
	}
	bw_error err = {0};
	if (bw_store_device_touch_many(r->h->store, ids, seen, r->ndirty, &err) != BW_OK)
		bw_log_warn("devices", "could not record last-seen times of %zu devices: %s", r->ndirty, err.message);
	r->ndirty = 0;
	free(ids);
	free(seen);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	flush_seen(arg);
}

int bw_registry_put(bw_registry *r, const struct bw_device *dev)
{
	if ((r->n + 1) * 10 >= r->cap * 7) {
		flush_seen(r);
		if (grow(r) != BW_OK)
			return BW_E_NOMEM;
	}
	bool found;
	struct bw_reg_device *d = slot_for(r, dev->id, &found);
	if (!found) {
		memset(d, 0, sizeof *d);
		snprintf(d->id, sizeof d->id, "%s", dev->id);
		r->n++;
	}
	snprintf(d->serial, sizeof d->serial, "%s", dev->cert_serial);
	d->status = strcmp(dev->status, "active") == 0  ? BW_DEV_ACTIVE
	            : strcmp(dev->status, "wiped") == 0 ? BW_DEV_WIPED
	                                                : BW_DEV_UNREGISTERED;
	d->cert_not_after = dev->cert_not_after;
	if (dev->last_seen > d->last_seen)
		d->last_seen = dev->last_seen;
	d->has_inventory = dev->inventory_at > 0;
	return BW_OK;
}

static void scan_cb(const struct bw_device *dev, void *arg)
{
	bw_registry_put(arg, dev);
}

static void pending_cb(const char *device_id, void *arg)
{
	struct bw_reg_device *d = bw_registry_find(arg, device_id);
	if (d)
		d->pending = true;
}

bw_registry *bw_registry_new(struct bw_host *h, bw_error *err)
{
	bw_registry *r = calloc(1, sizeof *r);
	if (!r || grow(r) != BW_OK) {
		free(r);
		bw_error_set(err, BW_E_NOMEM, "out of memory");
		return NULL;
	}
	r->h = h;
	if (bw_store_device_scan(h->store, scan_cb, r, err) != BW_OK ||
	    bw_store_command_pending_devices(h->store, pending_cb, r, err) != BW_OK) {
		bw_registry_free(r);
		return NULL;
	}
	r->flush_ev = event_new(h->base, -1, EV_PERSIST, flush_cb, r);
	struct timeval tv = {2, 0};
	event_add(r->flush_ev, &tv);
	bw_log_info("devices", "registry loaded: %zu devices", r->n);
	return r;
}

void bw_registry_free(bw_registry *r)
{
	if (!r)
		return;
	flush_seen(r);
	if (r->flush_ev)
		event_free(r->flush_ev);
	free(r->slots);
	free(r->dirty);
	free(r);
}

struct bw_reg_device *bw_registry_find(bw_registry *r, const char *id)
{
	bool found;
	struct bw_reg_device *d = slot_for(r, id, &found);
	return found ? d : NULL;
}

static void emit_status(bw_registry *r, const char *id, const char *from, const char *to, const char *reason)
{
	bw_events_emit(r->h->events, "device.status_changed",
	               json_pack("{s:s, s:s, s:s, s:s}", "device_id", id, "from", from, "to", to, "reason", reason),
	               NULL);
}

size_t bw_registry_mark_out_of_sync(bw_registry *r, int64_t before)
{
	size_t n = 0;
	for (size_t i = 0; i < r->cap; i++) {
		struct bw_reg_device *d = &r->slots[i];
		if (d->id[0] && d->status == BW_DEV_ACTIVE && !d->out_of_sync && d->last_seen < before) {
			d->out_of_sync = true;
			emit_status(r, d->id, "active", "out_of_sync", "not seen within agent.out_of_sync_after");
			n++;
		}
	}
	return n;
}

void bw_registry_seen(bw_registry *r, struct bw_reg_device *d, int64_t now)
{
	d->last_seen = now;
	if (d->out_of_sync) {
		d->out_of_sync = false;
		emit_status(r, d->id, "out_of_sync", "active", "checked in");
	}
	if (d->dirty)
		return;
	if (r->ndirty == r->dirty_cap) {
		size_t ncap = r->dirty_cap ? r->dirty_cap * 2 : 1024;
		size_t *nd = realloc(r->dirty, ncap * sizeof *nd);
		if (!nd)
			return; /* last_seen stays in memory; written with the next successful flush */
		r->dirty = nd;
		r->dirty_cap = ncap;
	}
	d->dirty = true;
	r->dirty[r->ndirty++] = (size_t)(d - r->slots);
}

size_t bw_registry_count(const bw_registry *r)
{
	return r->n;
}

/* ---- commands */

static const struct {
	const char *type;
	int priority;
	bool merge;
} command_types[] = {
    {"wipe", 100, false},      {"enterprise_wipe", 100, false},
    {"lock", 90, false},       {"locate", 50, true},
    {"scan", 20, true},        {"update", 10, true},
    {"sync_policy", 10, true},
};

static void json_id_of_open(bw_store *st, const char *device_id, const char *type, char id_out[37])
{
	json_t *list = NULL;
	size_t i;
	json_t *c;
	id_out[0] = '\0';
	if (bw_store_command_list(st, device_id, &list, NULL) != BW_OK)
		return;
	json_array_foreach(list, i, c)
	{
		const char *state = json_string_value(json_object_get(c, "state"));
		const char *t = json_string_value(json_object_get(c, "type"));
		if (t && state && strcmp(t, type) == 0 &&
		    (!strcmp(state, "queued") || !strcmp(state, "sent") || !strcmp(state, "acknowledged"))) {
			snprintf(id_out, 37, "%s", json_string_value(json_object_get(c, "id")));
			break;
		}
	}
	json_decref(list);
}

int bw_command_queue(struct bw_host *h, const char *device_id, const char *type, json_t *params, int64_t ttl_s,
                     const char *created_by, char id_out[37], bool *merged, bw_error *err)
{
	*merged = false;
	size_t t = 0, nt = sizeof command_types / sizeof command_types[0];
	while (t < nt && (!type || strcmp(command_types[t].type, type) != 0))
		t++;
	if (t == nt)
		return bw_error_set(
		    err, BW_E_INVALID,
		    "unknown command type '%s' (lock, wipe, enterprise_wipe, locate, scan, update, sync_policy)",
		    type ? type : "");
	if (params && !json_is_object(params))
		return bw_error_set(err, BW_E_INVALID, "command params must be a JSON object");
	struct bw_reg_device *d = bw_registry_find(h->registry, device_id);
	if (!d)
		return bw_error_set(err, BW_E_NOTFOUND, "no device %s", device_id);
	if (d->status != BW_DEV_ACTIVE)
		return bw_error_set(err, BW_E_STATE, "device %s is %s; it takes no commands", device_id,
		                    d->status == BW_DEV_WIPED ? "wiped" : "unregistered");
	int64_t open = 0;
	if (command_types[t].merge) {
		if (bw_store_command_open_count(h->store, device_id, type, &open, err) != BW_OK)
			return err->code;
		if (open > 0) {
			json_id_of_open(h->store, device_id, type, id_out);
			if (id_out[0]) {
				*merged = true;
				return BW_OK;
			}
		}
	}
	if (bw_store_command_open_count(h->store, device_id, NULL, &open, err) != BW_OK)
		return err->code;
	if (open >= BW_COMMAND_QUEUE_MAX)
		return bw_error_set(err, BW_E_LIMIT, "the command queue of device %s is full (%d open commands)",
		                    device_id, BW_COMMAND_QUEUE_MAX);
	char *ptext = params ? json_dumps(params, JSON_COMPACT) : strdup("{}");
	if (!ptext)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	if (strlen(ptext) > 16384) {
		free(ptext);
		return bw_error_set(err, BW_E_INVALID, "command params are larger than 16 KiB");
	}
	int64_t now = (int64_t)time(NULL);
	int64_t ttl = ttl_s > 0 ? ttl_s : h->settings.agent.command_ttl_ms / 1000;
	int rc = bw_uuid_new(id_out, err);
	if (rc == BW_OK)
		rc = bw_store_command_create(h->store, id_out, device_id, type, ptext, command_types[t].priority,
		                             now + ttl, created_by, now, err);
	free(ptext);
	if (rc != BW_OK)
		return rc;
	d->pending = true;
	bw_events_emit(h->events, "command.queued",
	               json_pack("{s:s, s:s, s:s}", "device_id", device_id, "command_id", id_out, "type", type), NULL);
	return BW_OK;
}

int bw_device_unregister(struct bw_host *h, const char *device_id, const char *status, const char *reason,
                         bw_error *err)
{
	struct bw_reg_device *d = bw_registry_find(h->registry, device_id);
	if (!d)
		return bw_error_set(err, BW_E_NOTFOUND, "no device %s", device_id);
	int64_t now = (int64_t)time(NULL);
	int rc = bw_store_device_set_status(h->store, device_id, status, now, err);
	if (rc == BW_OK && d->serial[0])
		rc = bw_store_cert_revoke(h->store, d->serial, device_id, reason, now, err);
	if (rc != BW_OK)
		return rc;
	const char *old = d->status == BW_DEV_ACTIVE ? "active" : d->status == BW_DEV_WIPED ? "wiped" : "unregistered";
	/* From here on the certificate is refused: the check-in path compares the status. */
	d->status = strcmp(status, "wiped") == 0 ? BW_DEV_WIPED : BW_DEV_UNREGISTERED;
	d->pending = false;
	bw_log_info("devices", "device %s is now %s (%s)", device_id, status, reason);
	bw_events_emit(
	    h->events, "device.status_changed",
	    json_pack("{s:s, s:s, s:s, s:s}", "device_id", device_id, "from", old, "to", status, "reason", reason),
	    NULL);
	return BW_OK;
}
