/* host/core/host.h: the host's state shared by its parts (one per bulwarkd process). */
#ifndef BW_HOST_H
#define BW_HOST_H

#include "config.h"
#include "events.h"
#include "http_client.h"
#include "http_server.h"
#include "metrics.h"
#include "settings.h"
#include "store.h"
#include "workq.h"

#include <time.h>

typedef struct bw_plugins bw_plugins;
typedef struct bw_router bw_router;
typedef struct bw_auth bw_auth;
typedef struct bw_registry bw_registry;
typedef struct bw_device_ca bw_device_ca;

struct bw_host {
	struct event_base *base;
	bw_config *cfg;
	struct bw_settings settings;
	bw_store *store;
	bw_workq *workq;
	bw_events *events;
	bw_metrics *metrics;
	bw_http_client *http;
	bw_plugins *plugins;
	bw_auth *auth;
	bw_http_server *admin_srv, *agent_srv;
	bw_router *admin_router, *agent_router;
	SSL_CTX *tls;       /* admin listener */
	SSL_CTX *agent_tls; /* agent listener: also asks for device certificates */
	bw_device_ca *device_ca;
	bw_registry *registry;
	struct bw_push_wake *push; /* device wake-ups through push providers (push_wake.c) */
	time_t started_at;
	bool shutting_down;
	size_t inflight; /* requests received and not yet answered, both listeners */
	struct {
		bool db_ok;
		char db_error[512];
	} health;
	struct {
		bw_metric *commands_open, *commands_oldest, *enrollments, *checkins;
		bw_metric *requests, *duration, *connections, *inflight, *login_failures, *events_dropped,
		    *workq_pending, *plugins_failed, *uptime;
	} m;
};

/* The process's host (signal handlers and the plugin table reach it through here). */
extern struct bw_host *bw_the_host;

#endif
