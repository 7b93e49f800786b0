/* host/services/http_server.h: an HTTPS listener group on libevent's evhttp + OpenSSL, tuned
 * as in the performance notes (TCP_NODELAY, one TLS record per response), with limits on
 * header and body sizes and on open connections, and in-flight request counting for drain. */
#ifndef BW_HTTP_SERVER_H
#define BW_HTTP_SERVER_H

#include <bulwark/errors.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <openssl/ssl.h>

typedef struct bw_http_server bw_http_server;

struct bw_http_limits {
	size_t max_header_bytes;
	size_t max_body_bytes;
	size_t max_connections;
	int timeout_s;
};

/* `name` ("admin", "agent") appears in logs and errors. The server keeps a reference to ctx. */
bw_http_server *bw_http_server_new(struct event_base *base, const char *name, SSL_CTX *ctx,
                                   const struct bw_http_limits *limits, bw_error *err);
void bw_http_server_free(bw_http_server *srv);
/* Binds "host:port", "[v6addr]:port" or "*:port". A port in use is BW_E_IO naming the address. */
int bw_http_server_listen(bw_http_server *srv, const char *address, bw_error *err);
/* The port actually bound by the first listener (for ":0" in tests). */
int bw_http_server_port(const bw_http_server *srv);
void bw_http_server_set_handler(bw_http_server *srv, void (*cb)(struct evhttp_request *, void *), void *arg);
/* Swaps the TLS context for new connections (certificate renewal on SIGHUP). Takes a reference. */
void bw_http_server_set_tls(bw_http_server *srv, SSL_CTX *ctx);
void bw_http_server_set_limits(bw_http_server *srv, const struct bw_http_limits *limits);
/* Closes the listening sockets; open connections carry on until drained. */
void bw_http_server_stop_accepting(bw_http_server *srv);
size_t bw_http_server_connections(const bw_http_server *srv);

/* Responses. Each sets JSON/text headers, sends, and merges the header and body into one
 * TLS record. `body` is stolen. The request is invalid afterwards. */
void bw_http_reply_json(struct evhttp_request *req, int status, json_t *body);
void bw_http_reply_error(struct evhttp_request *req, int status, const char *code, const char *message);
void bw_http_reply_buffer(struct evhttp_request *req, int status, const char *content_type, struct evbuffer *body);
void bw_http_reply_bytes(struct evhttp_request *req, int status, const char *content_type, const void *data,
                         size_t len);
/* The verified client certificate of the request's connection, or NULL (borrowed). */
X509 *bw_http_peer_cert(struct evhttp_request *req);
/* Data attached to the request's connection (freed with free() when it closes); set replaces. */
void *bw_http_conn_data(struct evhttp_request *req);
void bw_http_conn_set_data(struct evhttp_request *req, void *data);
/* The peer address of a request as text ("127.0.0.1", "::1"). */
const char *bw_http_peer(struct evhttp_request *req, char *buf, size_t len);

#endif
