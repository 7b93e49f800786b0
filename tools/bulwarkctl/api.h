/* api.h: calls to the Bulwark admin REST API: picks the bearer token, sends JSON, parses JSON
 * answers, and turns error envelopes and transport failures into messages and exit codes. */
#ifndef BWCTL_API_H
#define BWCTL_API_H

#include <jansson.h>

#include "bwctl.h"
#include "http.h"

#define BWCTL_API_AUTH      0x1u /* send the bearer token; exit 4 when there is none */
#define BWCTL_API_RAW_ERROR 0x2u /* hand HTTP error answers to the caller instead of failing */

struct bwctl_call {
	const char *method;
	const char *path; /* already URL-encoded */
	const json_t *body;
	unsigned flags;
	const char *accept;      /* NULL: application/json */
	bool long_transfer;      /* see struct bwctl_http_request */
	bwctl_http_sink_fn sink; /* a 2xx body goes here instead of being parsed as JSON */
	void *sink_arg;
};

struct bwctl_reply {
	long status;
	json_t *json; /* the parsed body; NULL when it was empty or went to the sink */
	long retry_after;
};

/* Performs the call. Returns BWCTL_EXIT_OK with `reply` filled when the server answered 2xx (or
 * any status with BWCTL_API_RAW_ERROR); otherwise prints why on stderr and returns the exit
 * code. Always free the reply with bwctl_reply_free. */
int bwctl_api_call(struct bwctl_ctx *ctx, const struct bwctl_call *call, struct bwctl_reply *reply);
void bwctl_reply_free(struct bwctl_reply *reply);

/* Prints the error carried by a non-2xx reply and returns its exit code (`sent_token`: the
 * request carried credentials, so a 401 means "not logged in"). */
int bwctl_api_fail(const struct bwctl_ctx *ctx, const struct bwctl_reply *reply, bool sent_token);

/* Makes sure ctx->token is set: --token, BULWARK_TOKEN, then the saved session. Returns
 * BWCTL_EXIT_OK, or prints why and returns the exit code (4 when there is no token). */
int bwctl_api_need_token(struct bwctl_ctx *ctx);

/* A token must be printable ASCII without spaces: anything else could inject HTTP headers. */
bool bwctl_token_ok(const char *token);

/* Loads the saved session's token into ctx if there is one, without failing when there is none. */
int bwctl_api_load_session_token(struct bwctl_ctx *ctx);

#endif
