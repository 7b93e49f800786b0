/* api.c: bulwarkctl's admin REST API calls on top of http.c: bearer token selection, JSON bodies,
 * and the mapping of failures to messages and exit codes (docs/bulwarkctl.md lists them). */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "session.h"

bool bwctl_token_ok(const char *token)
{
	if (!token[0] || strlen(token) > 4096)
		return false;
	for (const unsigned char *p = (const unsigned char *)token; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f)
			return false;
	return true;
}

int bwctl_api_load_session_token(struct bwctl_ctx *ctx)
{
	struct bwctl_session s;
	bw_error err;
	bool found = false;

	if (ctx->token_resolved)
		return BWCTL_EXIT_OK;
	if (bwctl_session_load(ctx->server, &s, &found, &err) != BW_OK)
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s", err.message);
	ctx->token_resolved = true;
	if (found && !bwctl_token_ok(s.token)) {
		bwctl_session_clear(&s);
		return bwctl_fail(BWCTL_EXIT_FAIL, "the saved session for %s holds a malformed token; log in again",
		                  ctx->server);
	}
	if (found) {
		ctx->token = s.token;
		ctx->token_source = BWCTL_TOKEN_SESSION;
		s.token = NULL;
	}
	bwctl_session_clear(&s);
	return BWCTL_EXIT_OK;
}

int bwctl_api_need_token(struct bwctl_ctx *ctx)
{
	int rc = bwctl_api_load_session_token(ctx);

	if (rc != BWCTL_EXIT_OK)
		return rc;
	if (!ctx->token)
		return bwctl_fail(BWCTL_EXIT_NOAUTH,
		                  "not logged in to %s: run 'bulwarkctl login --user NAME', or give a token with "
		                  "--token or BULWARK_TOKEN",
		                  ctx->server);
	return BWCTL_EXIT_OK;
}

int bwctl_api_fail(const struct bwctl_ctx *ctx, const struct bwctl_reply *reply, bool sent_token)
{
	const json_t *e = json_object_get(reply->json, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *message = json_string_value(json_object_get(e, "message"));
	char what[1024];

	if (reply->status >= 300 && reply->status < 400)
		return bwctl_fail(
		    BWCTL_EXIT_FAIL,
		    "%s answered with a redirect (HTTP %ld), which bulwarkctl does not follow; check --server",
		    ctx->server, reply->status);
	if (code || message)
		snprintf(what, sizeof what, "%s: %s (HTTP %ld)", code ? code : "error",
		         message ? message : "no message", reply->status);
	else
		snprintf(what, sizeof what, "%s answered HTTP %ld without an error message", ctx->server,
		         reply->status);

	if (reply->status == 401 && sent_token) {
		switch (ctx->token_source) {
		case BWCTL_TOKEN_SESSION:
			return bwctl_fail(
			    BWCTL_EXIT_NOAUTH,
			    "%s; the saved session has expired or was revoked: run 'bulwarkctl login --user NAME'",
			    what);
		case BWCTL_TOKEN_OPTION:
			return bwctl_fail(BWCTL_EXIT_NOAUTH, "%s; the server refused the token given with --token",
			                  what);
		case BWCTL_TOKEN_ENV:
			return bwctl_fail(BWCTL_EXIT_NOAUTH, "%s; the server refused the token in BULWARK_TOKEN", what);
		case BWCTL_TOKEN_NONE:
		default:
			return bwctl_fail(BWCTL_EXIT_NOAUTH, "%s", what);
		}
	}
	if (reply->status == 429 && reply->retry_after >= 0)
		return bwctl_fail(BWCTL_EXIT_FAIL, "%s; try again in %ld seconds", what, reply->retry_after);
	return bwctl_fail(BWCTL_EXIT_FAIL, "%s", what);
}

int bwctl_api_call(struct bwctl_ctx *ctx, const struct bwctl_call *call, struct bwctl_reply *reply)
{
	struct bwctl_http_request req = {
	    .server = ctx->server,
	    .ca_file = ctx->ca_file,
	    .method = call->method,
	    .path = call->path,
	    .accept = call->accept,
	    .long_transfer = call->long_transfer,
	    .sink = call->sink,
	    .sink_arg = call->sink_arg,
	};
	struct bwctl_http_response resp;
	char *body = NULL;
	bw_error err;
	int rc;

	memset(reply, 0, sizeof *reply);
	reply->retry_after = -1;
	if (call->flags & BWCTL_API_AUTH) {
		rc = bwctl_api_need_token(ctx);
		if (rc != BWCTL_EXIT_OK)
			return rc;
		req.token = ctx->token;
	}
	if (call->body) {
		/* Compact; may carry a password, so it is wiped when freed (see main.c's allocator). */
		body = json_dumps(call->body, JSON_COMPACT);
		if (!body)
			return bwctl_fail(BWCTL_EXIT_FAIL, "cannot encode the request body");
		req.body = body;
		req.body_len = strlen(body);
	}

	rc = bwctl_http_perform(&req, &resp, &err);
	bwctl_secure_free(body);
	if (rc != BW_OK) {
		rc = bwctl_fail(resp.transport_error ? BWCTL_EXIT_UNREACHABLE : BWCTL_EXIT_FAIL, "%s", err.message);
		bwctl_http_response_free(&resp);
		return rc;
	}
	reply->status = resp.status;
	reply->retry_after = resp.retry_after;
	if (resp.body_len > 0) {
		json_error_t jerr;

		reply->json = json_loadb(resp.body, resp.body_len, 0, &jerr);
		if (!reply->json && resp.status >= 200 && resp.status < 300) {
			rc = bwctl_fail(BWCTL_EXIT_FAIL, "%s sent an answer that is not JSON (HTTP %ld: %s)",
			                ctx->server, resp.status, jerr.text);
			bwctl_http_response_free(&resp);
			return rc;
		}
	}
	bwctl_http_response_free(&resp);
	if ((reply->status < 200 || reply->status >= 300) && !(call->flags & BWCTL_API_RAW_ERROR))
		return bwctl_api_fail(ctx, reply, req.token != NULL);
	return BWCTL_EXIT_OK;
}

void bwctl_reply_free(struct bwctl_reply *reply)
{
	if (!reply)
		return;
	json_decref(reply->json);
	reply->json = NULL;
}
