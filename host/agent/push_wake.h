/* host/agent/push_wake.h: waking devices through push providers (the "push" capability):
 * on every queued command, a wake-up through the provider the device's push token belongs to;
 * invalid tokens are remembered and never used again; the admin's push test and flag list. */
#ifndef BW_PUSH_WAKE_H
#define BW_PUSH_WAKE_H

#include "host.h"

typedef struct bw_push_wake bw_push_wake;

/* Registers the admin routes (before plugins are loaded). */
int bw_push_wake_routes(struct bw_host *h, bw_error *err);
/* Subscribes to command.queued (after the plugins' init, when the providers are known). */
bw_push_wake *bw_push_wake_new(struct bw_host *h, bw_error *err);
/* After the plugins' fini: frees the sends the providers never finished. */
void bw_push_wake_free(bw_push_wake *w);

#endif
