/* host/agent/agent_api.h: the agent protocol endpoints (docs/agent-protocol.md). */
#ifndef BW_AGENT_API_H
#define BW_AGENT_API_H

#include "host.h"

/* Registers /agent/v1/... on the agent router and device-certificate authentication. */
int bw_agent_api_register(struct bw_host *h, bw_error *err);

#endif
