/* plugins/dir_ldap/ldapc.c: the blocking LDAP work of dir_ldap (see ldapc.h): connections over LDAPS or
 * StartTLS with a verified server certificate, the connection pool, authentication, the sync fetch and the
 * connection test. Runs on work-queue threads only. */
#include "ldapc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ldap.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#define IN_CHAIN_OID    "1.2.840.113556.1.4.1941"
#define AD_CAP_OID      "1.2.840.113556.1.4.800"
#define NESTING_MAX     16   /* levels followed by the recursive group lookup */
#define RANGE_ROUNDS    1000 /* range retrieval requests for one group (1500 values each in AD) */
#define WATERMARK_SLACK 300  /* seconds re-read by a modifyTimestamp incremental sync (clock skew, late writes) */
#define POOL_MAX        64

enum { BOUND_NONE = 0, BOUND_SERVICE = 1, BOUND_USER = 2 };

/* Deadline for connecting: libldap 2.5 with GnuTLS does not time out (and spins) in the TLS handshake of an
 * ldaps:// connection to a server that accepted TCP but does not answer. A watchdog thread shuts the socket
 * down at the deadline; the socket comes from the connect callback, which runs before the handshake. */
struct watch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int fd;
	bool done, fired;
	int64_t ms;
	struct ldap_conncb cb;
};

struct dl_conn {
	struct watch w; /* registered on ld as its connect callback: lives as long as ld */
	LDAP *ld;
	const char *url;
	int bound;
	int ad; /* -1 unknown, 0 no, 1 the server is Active Directory (or Samba AD): in-chain matching works */
	bool reused;
};

struct dl_pool {
	pthread_mutex_t mu;
	const struct dl_cfg *cfg;
	struct dl_conn *idle[POOL_MAX];
	size_t nidle;
};

void dl_ldap_global_init(void)
{
	/* libldap initialises its global options on first use; do it once here, single-threaded. */
	int dbg = 0;
	ldap_get_option(NULL, LDAP_OPT_DEBUG_LEVEL, &dbg);
}

/* ---- errors */

static int classify(int rc, const char *diag)
{
	switch (rc) {
	case LDAP_TIMEOUT:
	case LDAP_TIMELIMIT_EXCEEDED:
		return BW_E_TIMEOUT;
	case LDAP_SERVER_DOWN:
	case LDAP_CONNECT_ERROR:
		if (diag && (strstr(diag, "TLS") || strstr(diag, "certificate") || strstr(diag, "hostname")))
			return BW_E_TLS;
		return BW_E_IO;
	case LDAP_INVALID_CREDENTIALS:
	case LDAP_INAPPROPRIATE_AUTH:
	case LDAP_INSUFFICIENT_ACCESS:
		return BW_E_DENIED;
	case LDAP_NO_SUCH_OBJECT:
		return BW_E_NOTFOUND;
	case LDAP_SIZELIMIT_EXCEEDED:
	case LDAP_ADMINLIMIT_EXCEEDED:
		return BW_E_LIMIT;
	case LDAP_NO_MEMORY:
		return BW_E_NOMEM;
	default:
		return BW_E_REMOTE;
	}
}

static int ld_fail(LDAP *ld, int rc, const char *diag_in, bw_error *err, const char *what)
{
	char *diag = NULL;
	if (!diag_in && ld)
		ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
	const char *d = diag_in ? diag_in : diag;
	int code = classify(rc, d);
	bw_error_set(err, code, "%s: %s%s%.300s%s", what, ldap_err2string(rc), d && *d ? " (" : "", d && *d ? d : "",
	             d && *d ? ")" : "");
	ldap_memfree(diag);
	return code;
}

static bool retryable(int code)
{
	return code == BW_E_IO;
}

/* ---- connections */

static struct timeval tv_ms(int64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
	return tv;
}

static int watch_add(LDAP *ld, Sockbuf *sb, LDAPURLDesc *srv, struct sockaddr *addr, struct ldap_conncb *ctx)
{
	(void)ld;
	(void)srv;
	(void)addr;
	struct watch *w = ctx->lc_arg;
	ber_socket_t fd = -1;
	ber_sockbuf_ctrl(sb, LBER_SB_OPT_GET_FD, &fd);
	pthread_mutex_lock(&w->mu);
	w->fd = fd;
	pthread_mutex_unlock(&w->mu);
	return 0;
}

static void watch_del(LDAP *ld, Sockbuf *sb, struct ldap_conncb *ctx)
{
	(void)ld;
	(void)sb;
	struct watch *w = ctx->lc_arg;
	pthread_mutex_lock(&w->mu);
	w->fd = -1;
	pthread_mutex_unlock(&w->mu);
}

static bool watch_init(struct watch *w, int64_t ms)
{
	pthread_condattr_t ca;
	memset(w, 0, sizeof *w);
	w->fd = -1;
	w->ms = ms;
	w->cb.lc_add = watch_add;
	w->cb.lc_del = watch_del;
	w->cb.lc_arg = w;
	if (pthread_condattr_init(&ca) != 0)
		return false;
	bool ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&w->cv, &ca) == 0;
	pthread_condattr_destroy(&ca);
	if (ok && pthread_mutex_init(&w->mu, NULL) != 0) {
		pthread_cond_destroy(&w->cv);
		ok = false;
	}
	return ok;
}

static void watch_destroy(struct watch *w)
{
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
}

static void *watch_main(void *arg)
{
	struct watch *w = arg;
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += (time_t)(w->ms / 1000);
	dl.tv_nsec += (long)(w->ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->mu);
	while (!w->done) {
		if (pthread_cond_timedwait(&w->cv, &w->mu, &dl) == ETIMEDOUT) {
			if (!w->done && w->fd >= 0) {
				shutdown(w->fd, SHUT_RDWR);
				w->fired = true;
			}
			break;
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Connects (TCP, then the TLS handshake or StartTLS) under the watchdog. */
static int guarded_connect(const struct dl_cfg *cfg, LDAP *ld, struct watch *w)
{
	pthread_t th;
	bool running = pthread_create(&th, NULL, watch_main, w) == 0;
	int rc = cfg->starttls ? ldap_start_tls_s(ld, NULL, NULL) : ldap_connect(ld);
	if (running) {
		pthread_mutex_lock(&w->mu);
		w->done = true;
		pthread_cond_signal(&w->cv);
		pthread_mutex_unlock(&w->mu);
		pthread_join(th, NULL);
	}
	return rc;
}

static void conn_close(struct dl_conn *c)
{
	if (!c)
		return;
	if (c->ld)
		ldap_unbind_ext_s(c->ld, NULL, NULL);
	watch_destroy(&c->w);
	free(c);
}

/* Sets the options every connection gets; `verify` false only for diagnose_tls's second look. */
static bool set_options(const struct dl_cfg *cfg, LDAP *ld, bool verify, struct watch *w)
{
	int v3 = LDAP_VERSION3, req = !verify || cfg->insecure ? LDAP_OPT_X_TLS_NEVER : LDAP_OPT_X_TLS_DEMAND;
	int min = LDAP_OPT_X_TLS_PROTOCOL_TLS1_2, is_server = 0, idle = 60, probes = 3, interval = 10;
	struct timeval nt = tv_ms(cfg->connect_timeout_ms), tt = tv_ms(cfg->timeout_ms);
	/* Referrals off: chasing one would bind (with the service password) to whatever server it names. */
	return ldap_set_option(ld, LDAP_OPT_CONNECT_CB, &w->cb) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_RESTART, LDAP_OPT_ON) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &nt) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_TIMEOUT, &tt) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_IDLE, &idle) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_PROBES, &probes) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_X_KEEPALIVE_INTERVAL, &interval) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req) == LDAP_OPT_SUCCESS &&
	       (!cfg->ca_file || ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, cfg->ca_file) == LDAP_OPT_SUCCESS) &&
	       ldap_set_option(ld, LDAP_OPT_X_TLS_PROTOCOL_MIN, &min) == LDAP_OPT_SUCCESS &&
	       ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &is_server) == LDAP_OPT_SUCCESS;
}

/* Why a certificate was refused, from OpenSSL: the peer certificate checked against ca_file and the URL's
 * host. Without a chain from the server only a certificate issued directly by a ca_file CA verifies here. */
static const char *cert_problem(const struct dl_cfg *cfg, const struct berval *der, const char *host, char *buf,
                                size_t size)
{
	const unsigned char *p = (const unsigned char *)der->bv_val;
	X509 *x = d2i_X509(NULL, &p, (long)der->bv_len);
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	const char *out = NULL;
	if (x && st && ctx && X509_STORE_load_file(st, cfg->ca_file) == 1 &&
	    X509_STORE_CTX_init(ctx, st, x, NULL) == 1) {
		X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
		struct in6_addr a6;
		struct in_addr a4;
		if (inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1)
			X509_VERIFY_PARAM_set1_ip_asc(vp, host);
		else
			X509_VERIFY_PARAM_set1_host(vp, host, 0);
		if (X509_verify_cert(ctx) != 1) {
			snprintf(buf, size, "%s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
			out = buf;
		}
	}
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	X509_free(x);
	return out;
}

/* After a failed TLS connection: connects once more without verification. If that works, the certificate was
 * the problem (BW_E_TLS with the reason); if not, the first error stands. */
static int diagnose_tls(const struct dl_cfg *cfg, const char *url, int code, bw_error *err)
{
	LDAP *ld = NULL;
	LDAPURLDesc *lud = NULL;
	struct watch w;
	if (!watch_init(&w, cfg->connect_timeout_ms))
		return code;
	if (ldap_url_parse(url, &lud) != LDAP_URL_SUCCESS || ldap_initialize(&ld, url) != LDAP_SUCCESS || !ld ||
	    !set_options(cfg, ld, false, &w)) {
		if (ld)
			ldap_unbind_ext_s(ld, NULL, NULL);
		ldap_free_urldesc(lud);
		watch_destroy(&w);
		return code;
	}
	int rc = guarded_connect(cfg, ld, &w);
	if (rc == LDAP_SUCCESS) {
		struct berval der = {0, NULL};
		char buf[200];
		const char *host = lud->lud_host && *lud->lud_host ? lud->lud_host : "localhost";
		ldap_get_option(ld, LDAP_OPT_X_TLS_PEERCERT, &der);
		const char *why = der.bv_val ? cert_problem(cfg, &der, host, buf, sizeof buf) : NULL;
		if (!why && strcasecmp(host, "localhost") == 0)
			why = "libldap checks \"localhost\" against this machine's host name; use 127.0.0.1 or ::1 in "
			      "the URL";
		code =
		    bw_error_set(err, BW_E_TLS,
		                 "%s: the server certificate was not accepted: %s (checked against "
		                 "ca_file %.200s and the host %.100s)",
		                 url, why ? why : "refused by libldap", cfg->ca_file ? cfg->ca_file : "(none)", host);
		ber_memfree(der.bv_val);
	}
	ldap_unbind_ext_s(ld, NULL, NULL);
	ldap_free_urldesc(lud);
	watch_destroy(&w);
	return code;
}

static int conn_open_url(const struct dl_cfg *cfg, const char *url, struct dl_conn **out, bw_error *err)
{
	struct dl_conn *c = calloc(1, sizeof *c);
	if (!c)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	if (!watch_init(&c->w, cfg->connect_timeout_ms)) {
		free(c);
		return bw_error_set(err, BW_E_INTERNAL, "cannot create the connect watchdog");
	}
	c->url = url;
	c->ad = -1;
	int rc = ldap_initialize(&c->ld, url);
	if (rc != LDAP_SUCCESS || !c->ld) {
		c->ld = NULL;
		conn_close(c);
		return bw_error_set(err, BW_E_CONFIG, "url %s: %s", url, ldap_err2string(rc));
	}
	if (!set_options(cfg, c->ld, true, &c->w)) {
		conn_close(c);
		return bw_error_set(err, BW_E_TLS,
		                    "url %s: cannot set up the connection (is ca_file %s a readable PEM file?)", url,
		                    cfg->ca_file ? cfg->ca_file : "(none)");
	}
	rc = guarded_connect(cfg, c->ld, &c->w);
	if (rc != LDAP_SUCCESS) {
		char what[300];
		snprintf(what, sizeof what, "%s %.200s", cfg->starttls ? "StartTLS with" : "connecting to", url);
		int code = ld_fail(c->ld, rc, NULL, err, what);
		bool fired = c->w.fired;
		conn_close(c);
		if (fired || rc == LDAP_TIMEOUT)
			return bw_error_set(err, BW_E_TIMEOUT, "%s: no answer within connect_timeout (%lld ms)", what,
			                    (long long)cfg->connect_timeout_ms);
		/* libldap (GnuTLS) gives no reason for a refused certificate: find it out. */
		if (!cfg->insecure && (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR))
			code = diagnose_tls(cfg, url, code, err);
		return code;
	}
	*out = c;
	return BW_OK;
}

/* Tries the URLs in order; the error of the last one is kept. */
static int conn_open(const struct dl_cfg *cfg, struct dl_conn **out, bw_error *err)
{
	int rc = BW_E_CONFIG;
	bw_error_set(err, rc, "no url configured");
	for (size_t i = 0; i < cfg->nurls; i++) {
		bw_error e = {0};
		if ((rc = conn_open_url(cfg, cfg->urls[i], out, &e)) == BW_OK)
			return BW_OK;
		if (err)
			*err = e;
		if (rc == BW_E_CONFIG)
			break;
	}
	return rc;
}

static int simple_bind(struct dl_conn *c, const char *dn, const char *password, char **diag_out, bw_error *err,
                       const char *what)
{
	struct berval cred = {.bv_val = (char *)password, .bv_len = password ? strlen(password) : 0};
	int rc = ldap_sasl_bind_s(c->ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
	if (rc == LDAP_SUCCESS)
		return BW_OK;
	char *diag = NULL;
	ldap_get_option(c->ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
	int code = ld_fail(c->ld, rc, diag, err, what);
	if (diag_out)
		*diag_out = diag;
	else
		ldap_memfree(diag);
	if (rc == LDAP_INVALID_CREDENTIALS)
		code = BW_E_DENIED;
	return code;
}

static int bind_service(const struct dl_cfg *cfg, struct dl_conn *c, bw_error *err)
{
	if (c->bound == BOUND_SERVICE)
		return BW_OK;
	int rc;
	if (cfg->bind_dn && *cfg->bind_dn) {
		rc = simple_bind(c, cfg->bind_dn, cfg->bind_password ? cfg->bind_password : "", NULL, err,
		                 "binding as the service account (bind_dn)");
		if (rc == BW_E_DENIED)
			rc = bw_error_set(err, BW_E_CONFIG,
			                  "the directory refused bind_dn %.200s: check bind_dn and bind_password",
			                  cfg->bind_dn);
	} else {
		/* Anonymous: an empty simple bind (needed after the connection was bound as a user). */
		rc = simple_bind(c, "", "", NULL, err, "binding anonymously");
	}
	c->bound = rc == BW_OK ? BOUND_SERVICE : BOUND_NONE;
	return rc;
}

struct dl_pool *dl_pool_new(const struct dl_cfg *cfg)
{
	struct dl_pool *p = calloc(1, sizeof *p);
	if (!p || pthread_mutex_init(&p->mu, NULL) != 0) {
		free(p);
		return NULL;
	}
	p->cfg = cfg;
	return p;
}

void dl_pool_free(struct dl_pool *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->nidle; i++)
		conn_close(p->idle[i]);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

/* A connection bound as the service account: an idle one, or a new one (`fresh` forces a new one). */
static int pool_get(struct dl_pool *p, bool fresh, struct dl_conn **out, bw_error *err)
{
	struct dl_conn *c = NULL;
	pthread_mutex_lock(&p->mu);
	if (!fresh && p->nidle)
		c = p->idle[--p->nidle];
	pthread_mutex_unlock(&p->mu);
	int rc;
	if (c) {
		c->reused = true;
	} else if ((rc = conn_open(p->cfg, &c, err)) != BW_OK) {
		return rc;
	}
	if ((rc = bind_service(p->cfg, c, err)) != BW_OK) {
		bool reused = c->reused;
		conn_close(c);
		/* An idle connection the server dropped: one new connection. */
		if (reused && retryable(rc))
			return pool_get(p, true, out, err);
		return rc;
	}
	*out = c;
	return BW_OK;
}

static void pool_put(struct dl_pool *p, struct dl_conn *c, bool healthy)
{
	if (!c)
		return;
	size_t cap = p->cfg->pool_size < POOL_MAX ? p->cfg->pool_size : POOL_MAX;
	pthread_mutex_lock(&p->mu);
	if (healthy && p->nidle < cap) {
		p->idle[p->nidle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&p->mu);
	conn_close(c);
}

/* ---- entries */

static char *attr_str(LDAP *ld, LDAPMessage *e, const char *attr)
{
	struct berval **v = ldap_get_values_len(ld, e, attr);
	char *s = NULL;
	if (v && v[0] && (s = malloc(v[0]->bv_len + 1))) {
		memcpy(s, v[0]->bv_val, v[0]->bv_len);
		s[v[0]->bv_len] = '\0';
		/* A value with an embedded NUL would be cut silently; refuse it instead. */
		if (strlen(s) != v[0]->bv_len) {
			free(s);
			s = NULL;
		}
	}
	ldap_value_free_len(v);
	return s;
}

static bool attr_uint(LDAP *ld, LDAPMessage *e, const char *attr, uint64_t *out)
{
	struct berval **v = ldap_get_values_len(ld, e, attr);
	bool ok = v && v[0] && bw_dl_uint_parse(v[0]->bv_val, v[0]->bv_len, out);
	ldap_value_free_len(v);
	return ok;
}

static bool attr_guid(const struct dl_cfg *cfg, LDAP *ld, LDAPMessage *e, char out[37])
{
	struct berval **v = ldap_get_values_len(ld, e, cfg->schema == DL_SCHEMA_AD ? "objectGUID" : "entryUUID");
	bool ok = false;
	if (v && v[0]) {
		if (cfg->schema == DL_SCHEMA_AD)
			ok = bw_dl_guid_format((const unsigned char *)v[0]->bv_val, v[0]->bv_len, out, NULL) == BW_OK;
		else
			ok = bw_dl_uuid_normalize(v[0]->bv_val, v[0]->bv_len, out);
	}
	ldap_value_free_len(v);
	return ok;
}

static char *entry_dn(LDAP *ld, LDAPMessage *e)
{
	char *d = ldap_get_dn(ld, e), *s = d ? strdup(d) : NULL;
	ldap_memfree(d);
	return s;
}

static const char *const ad_user_attrs[] = {
    "objectGUID", "sAMAccountName",     "userPrincipalName", "displayName", "cn", "mail",
    "manager",    "userAccountControl", "lockoutTime",       "uSNChanged",  NULL};
static const char *const rfc_user_attrs[] = {
    "entryUUID", "uid", "mail", "displayName", "cn", "manager", "pwdAccountLockedTime", "modifyTimestamp", NULL};
static const char *const ad_group_attrs[] = {"objectGUID", "cn", "member", "uSNChanged", NULL};
static const char *const rfc_group_attrs[] = {"entryUUID", "cn", "member", "modifyTimestamp", NULL};

static char **user_attrs(const struct dl_cfg *cfg)
{
	return (char **)(cfg->schema == DL_SCHEMA_AD ? ad_user_attrs : rfc_user_attrs);
}

static char **group_attrs(const struct dl_cfg *cfg)
{
	return (char **)(cfg->schema == DL_SCHEMA_AD ? ad_group_attrs : rfc_group_attrs);
}

static char **key_attrs(const struct dl_cfg *cfg)
{
	static const char *const ad[] = {"objectGUID", NULL}, *const rfc[] = {"entryUUID", NULL};
	return (char **)(cfg->schema == DL_SCHEMA_AD ? ad : rfc);
}

/* "000001010000Z" in pwdAccountLockedTime is OpenLDAP ppolicy's permanent (administrative) lock. */
#define PPOLICY_PERMANENT "000001010000Z"

/* A user entry into u. False when it has no usable key (then skipped) or out of memory (*nomem). */
static bool user_from_entry(const struct dl_cfg *cfg, LDAP *ld, LDAPMessage *e, struct dl_user *u, bool *nomem)
{
	memset(u, 0, sizeof *u);
	*nomem = false;
	if (!attr_guid(cfg, ld, e, u->guid))
		return false;
	u->dn = entry_dn(ld, e);
	u->mail = attr_str(ld, e, "mail");
	u->manager = attr_str(ld, e, "manager");
	u->display_name = attr_str(ld, e, "displayName");
	if (!u->display_name)
		u->display_name = attr_str(ld, e, "cn");
	if (cfg->schema == DL_SCHEMA_AD) {
		u->login = attr_str(ld, e, "sAMAccountName");
		u->upn = attr_str(ld, e, "userPrincipalName");
		struct berval **v = ldap_get_values_len(ld, e, "userAccountControl");
		uint32_t uac = 0;
		if (v && v[0] && bw_dl_uac_parse(v[0]->bv_val, v[0]->bv_len, &uac))
			u->disabled = bw_dl_uac_disabled(uac);
		ldap_value_free_len(v);
		uint64_t lt = 0;
		u->locked = attr_uint(ld, e, "lockoutTime", &lt) && lt > 0;
	} else {
		u->login = attr_str(ld, e, "uid");
		u->upn = u->mail ? strdup(u->mail) : NULL;
		char *plt = attr_str(ld, e, "pwdAccountLockedTime");
		u->locked = plt != NULL;
		u->disabled = plt && strcmp(plt, PPOLICY_PERMANENT) == 0;
		free(plt);
	}
	if (!u->dn) {
		*nomem = true;
		dl_user_clear(u);
		return false;
	}
	return true;
}

/* ---- searches */

typedef int (*entry_fn)(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err);

/* A subtree or base search, with the paged results control when `paged`; calls fn for each entry. */
static int search(const struct dl_cfg *cfg, struct dl_conn *c, const char *base, int scope, const char *filter,
                  char **attrs, bool paged, size_t max_entries, const struct dl_progress *prog, entry_fn fn, void *arg,
                  bw_error *err)
{
	struct berval *cookie = NULL;
	size_t count = 0;
	int ret = BW_OK;
	do {
		LDAPControl *page = NULL, *sctrls[2] = {NULL, NULL};
		if (paged) {
			int rc = ldap_create_page_control(c->ld, (ber_int_t)cfg->page_size, cookie, 0, &page);
			if (rc != LDAP_SUCCESS) {
				ret = ld_fail(c->ld, rc, NULL, err, "creating the paged results control");
				break;
			}
			sctrls[0] = page;
		}
		ber_bvfree(cookie);
		cookie = NULL;
		struct timeval tv = tv_ms(cfg->timeout_ms);
		LDAPMessage *res = NULL;
		int rc = ldap_search_ext_s(c->ld, base, scope, filter, attrs, 0, paged ? sctrls : NULL, NULL, &tv,
		                           LDAP_NO_LIMIT, &res);
		ldap_control_free(page);
		if (!res) {
			ret = ld_fail(c->ld, rc, NULL, err, "searching the directory");
			break;
		}
		for (LDAPMessage *e = ldap_first_entry(c->ld, res); e && ret == BW_OK; e = ldap_next_entry(c->ld, e)) {
			if (++count > max_entries) {
				ret = bw_error_set(err, BW_E_LIMIT, "more than %zu entries match %.200s", max_entries,
				                   filter);
				break;
			}
			ret = fn(c->ld, e, arg, err);
		}
		int code = LDAP_SUCCESS;
		char *diag = NULL;
		LDAPControl **rctrls = NULL;
		rc = ldap_parse_result(c->ld, res, &code, NULL, &diag, NULL, &rctrls, 1);
		if (ret == BW_OK && rc != LDAP_SUCCESS)
			ret = ld_fail(c->ld, rc, NULL, err, "reading the search result");
		else if (ret == BW_OK && code != LDAP_SUCCESS)
			ret = ld_fail(c->ld, code, diag, err, "searching the directory");
		ldap_memfree(diag);
		if (ret == BW_OK && paged) {
			LDAPControl *pr = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL);
			struct berval ck = {0, NULL};
			ber_int_t estimate = 0;
			if (pr && ldap_parse_pageresponse_control(c->ld, pr, &estimate, &ck) == LDAP_SUCCESS &&
			    ck.bv_len > 0) {
				if (!(cookie = ber_bvdup(&ck)))
					ret = bw_error_set(err, BW_E_NOMEM, "out of memory");
			}
			ber_memfree(ck.bv_val);
		}
		ldap_controls_free(rctrls);
		if (ret == BW_OK && prog && atomic_load(&prog->cancel))
			ret = bw_error_set(err, BW_E_CANCELLED, "the sync was cancelled (the plugin is stopping)");
	} while (ret == BW_OK && cookie);
	ber_bvfree(cookie);
	return ret;
}

/* The rootDSE: whether the server is Active Directory and its highestCommittedUSN (when asked). */
static int read_root_dse(const struct dl_cfg *cfg, struct dl_conn *c, char *usn, size_t usn_size, bw_error *err)
{
	static const char *const attrs[] = {"supportedCapabilities", "highestCommittedUSN", NULL};
	struct timeval tv = tv_ms(cfg->timeout_ms);
	LDAPMessage *res = NULL;
	int rc = ldap_search_ext_s(c->ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", (char **)attrs, 0, NULL, NULL, &tv, 1,
	                           &res);
	if (rc != LDAP_SUCCESS) {
		ldap_msgfree(res);
		return ld_fail(c->ld, rc, NULL, err, "reading the root DSE");
	}
	LDAPMessage *e = ldap_first_entry(c->ld, res);
	c->ad = 0;
	if (e) {
		struct berval **caps = ldap_get_values_len(c->ld, e, "supportedCapabilities");
		for (size_t i = 0; caps && caps[i]; i++)
			if (caps[i]->bv_len == strlen(AD_CAP_OID) &&
			    memcmp(caps[i]->bv_val, AD_CAP_OID, caps[i]->bv_len) == 0)
				c->ad = 1;
		ldap_value_free_len(caps);
		uint64_t v;
		if (usn && attr_uint(c->ld, e, "highestCommittedUSN", &v))
			snprintf(usn, usn_size, "%llu", (unsigned long long)v);
	}
	ldap_msgfree(res);
	return BW_OK;
}

static char *filter_and(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 4;
	char *f = malloc(n);
	if (f)
		snprintf(f, n, "(&%s%s)", a, b);
	return f;
}

/* ---- authentication */

struct group_list {
	char **dns, **cns;
	size_t n, cap, max;
	bool nomem, limit;
};

static bool group_list_has(const struct group_list *g, const char *dn)
{
	for (size_t i = 0; i < g->n; i++)
		if (strcasecmp(g->dns[i], dn) == 0)
			return true;
	return false;
}

static int group_list_cb(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err)
{
	struct group_list *g = arg;
	char *dn = entry_dn(ld, e);
	if (!dn)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	if (group_list_has(g, dn)) {
		free(dn);
		return BW_OK;
	}
	if (g->n >= g->max) {
		free(dn);
		return bw_error_set(err, BW_E_LIMIT, "the user is in more than %zu groups (max_groups)", g->max);
	}
	if (g->n == g->cap) {
		size_t nc = g->cap ? g->cap * 2 : 16;
		char **nd = realloc(g->dns, nc * sizeof *nd);
		if (nd)
			g->dns = nd;
		char **ncn = nd ? realloc(g->cns, nc * sizeof *ncn) : NULL;
		if (!ncn) {
			free(dn);
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		}
		g->cns = ncn;
		g->cap = nc;
	}
	char *cn = attr_str(ld, e, "cn");
	if (!cn) {
		char buf[256];
		cn = strdup(bw_dl_dn_first_value(dn, buf, sizeof buf) ? buf : dn);
	}
	if (!cn) {
		free(dn);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	g->dns[g->n] = dn;
	g->cns[g->n] = cn;
	g->n++;
	return BW_OK;
}

static void group_list_free(struct group_list *g)
{
	for (size_t i = 0; i < g->n; i++) {
		free(g->dns[i]);
		free(g->cns[i]);
	}
	free(g->dns);
	free(g->cns);
	memset(g, 0, sizeof *g);
}

/* The groups that have `dn` as a direct member, added to out. */
static int member_search(const struct dl_cfg *cfg, struct dl_conn *c, const char *dn, struct group_list *out,
                         bw_error *err)
{
	static const char *const attrs[] = {"cn", NULL};
	char *em = bw_dl_filter_escape(dn, strlen(dn));
	size_t n = em ? strlen(em) + 16 : 0;
	char *clause = em ? malloc(n) : NULL, *f = NULL;
	if (clause) {
		snprintf(clause, n, "(member=%s)", em);
		f = filter_and(cfg->group_filter, clause);
	}
	int rc = f ? search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, f, (char **)attrs, true, cfg->max_groups, NULL,
	                    group_list_cb, out, err)
	           : bw_error_set(err, BW_E_NOMEM, "out of memory");
	free(em);
	free(clause);
	free(f);
	return rc;
}

/* Every group the DN is in, nested ones included: the in-chain matching rule on Active Directory, else a
 * breadth-first walk up the member attributes. */
static int resolve_groups(const struct dl_cfg *cfg, struct dl_conn *c, const char *dn, struct group_list *out,
                          bw_error *err)
{
	static const char *const attrs[] = {"cn", NULL};
	int rc;
	if (c->ad < 0 && (rc = read_root_dse(cfg, c, NULL, 0, err)) != BW_OK)
		return rc;
	char *edn = bw_dl_filter_escape(dn, strlen(dn));
	if (!edn)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	rc = BW_OK;
	if (c->ad == 1) {
		size_t n = strlen(edn) + 64;
		char *clause = malloc(n), *f = NULL;
		if (clause) {
			snprintf(clause, n, "(member:" IN_CHAIN_OID ":=%s)", edn);
			f = filter_and(cfg->group_filter, clause);
		}
		free(clause);
		if (!f)
			rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		else
			rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, f, (char **)attrs, true, cfg->max_groups,
			            NULL, group_list_cb, out, err);
		free(f);
		free(edn);
		/* A server that claims AD but refuses the matching rule: the walk below. */
		if (rc != BW_E_REMOTE)
			return rc;
		group_list_free(out);
		out->max = cfg->max_groups;
		c->ad = 0;
		return resolve_groups(cfg, c, dn, out, err);
	}
	free(edn);
	/* Fallback: level by level, each level the groups that have a group of the previous one as a member. */
	if ((rc = member_search(cfg, c, dn, out, err)) != BW_OK)
		return rc;
	size_t lo = 0;
	for (int depth = 1; rc == BW_OK && depth < NESTING_MAX; depth++) {
		size_t hi = out->n;
		if (lo == hi)
			break;
		for (size_t i = lo; rc == BW_OK && i < hi; i++)
			rc = member_search(cfg, c, out->dns[i], out, err);
		lo = hi;
	}
	return rc;
}

const char *dl_role_for(const struct dl_cfg *cfg, char *const *dns, char *const *cns, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < cfg->nadmin_groups; k++)
			if (bw_dl_group_matches(cfg->admin_groups[k], dns[i], cns[i]))
				return "administrator";
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < cfg->nreadonly_groups; k++)
			if (bw_dl_group_matches(cfg->readonly_groups[k], dns[i], cns[i]))
				return "readonly";
	return NULL;
}

const char *dl_device_group_for(const struct dl_cfg *cfg, char *const *dns, char *const *cns, size_t n)
{
	for (size_t k = 0; k < cfg->ngroup_map; k++)
		for (size_t i = 0; i < n; i++)
			if (bw_dl_group_matches(cfg->group_map[k].dir_group, dns[i], cns[i]))
				return cfg->group_map[k].device_group;
	return NULL;
}

static json_t *jstr_or_null(const char *s)
{
	json_t *v = s ? json_string(s) : NULL;
	return v ? v : json_null();
}

/* The user search filter for a parsed login. NULL with err set when the login's domain is not ours. */
static char *login_filter(const struct dl_cfg *cfg, const struct bw_dl_login *l, bw_error *err)
{
	const char *login_attr = cfg->schema == DL_SCHEMA_AD ? "sAMAccountName" : "uid";
	const char *upn_attr = cfg->schema == DL_SCHEMA_AD ? "userPrincipalName" : "mail";
	if (l->kind == BW_DL_LOGIN_DOMAIN && cfg->domain && *cfg->domain && strcasecmp(l->domain, cfg->domain) != 0) {
		bw_error_set(err, BW_E_NOTFOUND, "no such user: domain %.100s is not this directory's domain (%.100s)",
		             l->domain, cfg->domain);
		return NULL;
	}
	char *eu = bw_dl_filter_escape(l->user, strlen(l->user));
	char *ef = bw_dl_filter_escape(l->full, strlen(l->full));
	char *clause = NULL, *f = NULL;
	size_t n = (eu ? strlen(eu) : 0) + (ef ? strlen(ef) : 0) + 96;
	if (eu && ef && (clause = malloc(n))) {
		if (l->kind == BW_DL_LOGIN_UPN) {
			/* user@upn_suffix may also name the account by its login attribute. */
			if (cfg->upn_suffix && strcasecmp(l->domain, cfg->upn_suffix) == 0)
				snprintf(clause, n, "(|(%s=%s)(%s=%s))", upn_attr, ef, login_attr, eu);
			else
				snprintf(clause, n, "(%s=%s)", upn_attr, ef);
		} else {
			snprintf(clause, n, "(%s=%s)", login_attr, eu);
		}
		f = filter_and(cfg->user_filter, clause);
	}
	free(eu);
	free(ef);
	free(clause);
	if (!f)
		bw_error_set(err, BW_E_NOMEM, "out of memory");
	return f;
}

struct auth_lookup {
	const struct dl_cfg *cfg;
	int n;
	struct dl_user u;
	bool nomem;
	uint64_t lockout;
	char *pwd_locked;
};

static int auth_lookup_cb(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err)
{
	struct auth_lookup *a = arg;
	if (++a->n > 1)
		return bw_error_set(err, BW_E_DENIED, "the login matches more than one directory entry");
	if (!user_from_entry(a->cfg, ld, e, &a->u, &a->nomem)) {
		a->n--;
		return a->nomem ? bw_error_set(err, BW_E_NOMEM, "out of memory") : BW_OK;
	}
	if (a->cfg->schema == DL_SCHEMA_AD)
		attr_uint(ld, e, "lockoutTime", &a->lockout);
	else
		a->pwd_locked = attr_str(ld, e, "pwdAccountLockedTime");
	return BW_OK;
}

static void auth_lookup_clear(struct auth_lookup *a)
{
	dl_user_clear(&a->u);
	free(a->pwd_locked);
	a->pwd_locked = NULL;
	a->n = 0;
}

/* One attempt; *conn_ok says whether the connection may go back to the pool. */
static void auth_once(struct dl_pool *p, struct dl_conn *c, const struct bw_dl_login *l, const char *password,
                      struct dl_auth_result *out, bw_error *err)
{
	const struct dl_cfg *cfg = p->cfg;
	struct auth_lookup a = {.cfg = cfg};
	struct group_list gl = {.max = cfg->max_groups};
	char *filter = login_filter(cfg, l, err);
	int rc = filter ? BW_OK : err->code;
	if (rc == BW_OK)
		rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, filter, user_attrs(cfg), false, 2, NULL,
		            auth_lookup_cb, &a, err);
	free(filter);
	if (rc == BW_E_LIMIT)
		rc = bw_error_set(err, BW_E_DENIED, "the login matches more than one directory entry");
	if (rc == BW_OK && a.n == 0)
		rc = bw_error_set(err, BW_E_NOTFOUND, "no such user");
	if (rc != BW_OK)
		goto done;
	/* Bind as the user; the connection is then no longer the service account's. */
	char *diag = NULL;
	c->bound = BOUND_USER;
	rc = simple_bind(c, a.u.dn, password, &diag, err, "binding as the user");
	if (rc == BW_E_DENIED) {
		long code = bw_dl_ad_diag_code(diag);
		const char *reason = bw_dl_ad_diag_reason(code);
		if (code == 0x525)
			reason = "wrong user name or password";
		if (!reason || code == 0x52e) {
			if (a.u.disabled)
				reason = "account disabled";
			else if (a.lockout > 0 || a.pwd_locked)
				reason = "account locked";
			else
				reason = "wrong user name or password";
		}
		rc = bw_error_set(err, BW_E_DENIED, "%s", reason);
	}
	ldap_memfree(diag);
	if (rc != BW_OK)
		goto done;
	/* The directory accepted the password; what it does not enforce itself is refused here. */
	if (a.u.disabled) {
		rc = bw_error_set(err, BW_E_DENIED, "account disabled");
		goto done;
	}
	if (cfg->schema != DL_SCHEMA_AD && a.pwd_locked) {
		rc = bw_error_set(err, BW_E_DENIED, "account locked");
		goto done;
	}
	if ((rc = bind_service(cfg, c, err)) != BW_OK || (rc = resolve_groups(cfg, c, a.u.dn, &gl, err)) != BW_OK)
		goto done;
	json_t *groups = json_array();
	for (size_t i = 0; groups && i < gl.n; i++)
		json_array_append_new(groups, jstr_or_null(gl.dns[i]));
	const char *role = dl_role_for(cfg, gl.dns, gl.cns, gl.n);
	const char *dg = dl_device_group_for(cfg, gl.dns, gl.cns, gl.n);
	out->user = json_pack("{s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o*, s:o, s:o}", "guid", a.u.guid, "login",
	                      jstr_or_null(a.u.login), "upn", jstr_or_null(a.u.upn), "display_name",
	                      jstr_or_null(a.u.display_name), "mail", jstr_or_null(a.u.mail), "dn",
	                      jstr_or_null(a.u.dn), "manager", jstr_or_null(a.u.manager), "groups", groups,
	                      "admin_role", jstr_or_null(role), "device_group", jstr_or_null(dg));
	if (!out->user)
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
done:
	out->rc = rc;
	auth_lookup_clear(&a);
	group_list_free(&gl);
}

void dl_authenticate(struct dl_pool *p, const char *login, const char *password, struct dl_auth_result *out)
{
	bw_error err = {0};
	struct bw_dl_login l;
	memset(out, 0, sizeof *out);
	if ((out->rc = bw_dl_login_parse(login, &l, &err)) != BW_OK) {
		snprintf(out->message, sizeof out->message, "%s", err.message);
		return;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		struct dl_conn *c = NULL;
		bw_error_clear(&err);
		if ((out->rc = pool_get(p, attempt > 0, &c, &err)) != BW_OK)
			break;
		bool reused = c->reused;
		auth_once(p, c, &l, password, out, &err);
		/* A refused password leaves the connection bound as that user: it is re-bound when taken again. */
		bool healthy = out->rc == BW_OK || out->rc == BW_E_DENIED || out->rc == BW_E_NOTFOUND;
		pool_put(p, c, healthy);
		/* A pooled connection the server closed meanwhile: once more on a new connection. */
		if (!(reused && retryable(out->rc)))
			break;
	}
	if (out->rc != BW_OK)
		snprintf(out->message, sizeof out->message, "%s", err.message);
}

/* ---- sync */

static void set_phase(struct dl_progress *prog, const char *phase, size_t users, size_t groups)
{
	pthread_mutex_lock(&prog->mu);
	snprintf(prog->phase, sizeof prog->phase, "%s", phase);
	prog->users = users;
	prog->groups = groups;
	pthread_mutex_unlock(&prog->mu);
}

struct range_todo {
	size_t group; /* index into the fetch dir's groups */
	long next;    /* next range start */
};

struct fetch {
	const struct dl_cfg *cfg;
	struct dl_progress *prog;
	struct dl_dir *dir;
	struct range_todo *todo;
	size_t ntodo, todo_cap;
	char **keys; /* key listing for incremental syncs */
	size_t nkeys, keys_cap;
	uint64_t max_usn;
};

static int user_cb(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err)
{
	struct fetch *f = arg;
	struct dl_user u;
	bool nomem;
	if (!user_from_entry(f->cfg, ld, e, &u, &nomem))
		return nomem ? bw_error_set(err, BW_E_NOMEM, "out of memory") : BW_OK;
	uint64_t usn;
	if (attr_uint(ld, e, "uSNChanged", &usn) && usn > f->max_usn)
		f->max_usn = usn;
	if (!dl_dir_add_user(f->dir, &u)) {
		dl_user_clear(&u);
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	if (f->dir->nusers % 100 == 0)
		set_phase(f->prog, "users", f->dir->nusers, 0);
	return BW_OK;
}

/* Adds the values of the member attribute (plain or one range) of e to g; *next is the next range start
 * or -1 when all were read. */
static int add_members(const struct dl_cfg *cfg, LDAP *ld, LDAPMessage *e, struct dl_group *g, long *next,
                       bw_error *err)
{
	BerElement *ber = NULL;
	*next = -1;
	int rc = BW_OK;
	for (char *a = ldap_first_attribute(ld, e, &ber); a && rc == BW_OK; a = ldap_next_attribute(ld, e, ber)) {
		long start = 0, end = -1;
		bool ranged = bw_dl_range_parse(a, "member", &start, &end);
		if (!ranged && strcasecmp(a, "member") != 0) {
			ldap_memfree(a);
			continue;
		}
		struct berval **v = ldap_get_values_len(ld, e, a);
		size_t nv = (size_t)ldap_count_values_len(v);
		for (size_t i = 0; i < nv && rc == BW_OK; i++) {
			if (g->nmembers >= cfg->max_members) {
				g->truncated = true;
				end = -1;
				break;
			}
			char *s = malloc(v[i]->bv_len + 1);
			char **nm = s ? realloc(g->members, (g->nmembers + 1) * sizeof *nm) : NULL;
			if (!nm) {
				free(s);
				rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
				break;
			}
			memcpy(s, v[i]->bv_val, v[i]->bv_len);
			s[v[i]->bv_len] = '\0';
			g->members = nm;
			g->members[g->nmembers++] = s;
		}
		ldap_value_free_len(v);
		if (ranged && end >= 0)
			*next = end + 1;
		ldap_memfree(a);
	}
	ber_free(ber, 0);
	return rc;
}

static int group_cb(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err)
{
	struct fetch *f = arg;
	struct dl_group g;
	memset(&g, 0, sizeof g);
	if (!attr_guid(f->cfg, ld, e, g.guid))
		return BW_OK;
	uint64_t usn;
	if (attr_uint(ld, e, "uSNChanged", &usn) && usn > f->max_usn)
		f->max_usn = usn;
	g.dn = entry_dn(ld, e);
	g.name = attr_str(ld, e, "cn");
	if (!g.name && g.dn) {
		char buf[256];
		if (bw_dl_dn_first_value(g.dn, buf, sizeof buf))
			g.name = strdup(buf);
	}
	long next = -1;
	int rc = g.dn ? add_members(f->cfg, ld, e, &g, &next, err) : bw_error_set(err, BW_E_NOMEM, "out of memory");
	if (rc == BW_OK && !dl_dir_add_group(f->dir, &g))
		rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
	if (rc != BW_OK) {
		dl_group_clear(&g);
		return rc;
	}
	if (next >= 0) {
		if (f->ntodo == f->todo_cap) {
			size_t nc = f->todo_cap ? f->todo_cap * 2 : 16;
			struct range_todo *nt = realloc(f->todo, nc * sizeof *nt);
			if (!nt)
				return bw_error_set(err, BW_E_NOMEM, "out of memory");
			f->todo = nt;
			f->todo_cap = nc;
		}
		f->todo[f->ntodo++] = (struct range_todo){f->dir->ngroups - 1, next};
	}
	if (f->dir->ngroups % 100 == 0)
		set_phase(f->prog, "groups", f->dir->nusers, f->dir->ngroups);
	return BW_OK;
}

struct range_ctx {
	const struct dl_cfg *cfg;
	struct dl_group *g;
	long next;
};

static int range_cb(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err)
{
	struct range_ctx *r = arg;
	return add_members(r->cfg, ld, e, r->g, &r->next, err);
}

/* Range retrieval: the rest of each large group's members, "member;range=N-*" until the last chunk. Done
 * after the paged group search so that it does not disturb the paged search's state on the connection. */
static int fetch_ranges(struct fetch *f, struct dl_conn *c, bw_error *err)
{
	for (size_t t = 0; t < f->ntodo; t++) {
		struct range_ctx r = {f->cfg, &f->dir->groups[f->todo[t].group], f->todo[t].next};
		for (int round = 0; r.next >= 0 && !r.g->truncated; round++) {
			if (round >= RANGE_ROUNDS)
				return bw_error_set(err, BW_E_LIMIT, "group %.200s: too many range retrieval rounds",
				                    r.g->dn);
			char attr[64];
			snprintf(attr, sizeof attr, "member;range=%ld-*", r.next);
			char *attrs[] = {attr, NULL};
			long before = r.next;
			r.next = -1;
			int rc = search(f->cfg, c, r.g->dn, LDAP_SCOPE_BASE, "(objectClass=*)", attrs, false, 1,
			                f->prog, range_cb, &r, err);
			if (rc != BW_OK)
				return rc;
			if (r.next >= 0 && r.next <= before)
				return bw_error_set(err, BW_E_REMOTE,
				                    "group %.200s: the server repeated a member range", r.g->dn);
		}
	}
	return BW_OK;
}

static int key_cb(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err)
{
	struct fetch *f = arg;
	char guid[37];
	if (!attr_guid(f->cfg, ld, e, guid))
		return BW_OK;
	if (f->nkeys == f->keys_cap) {
		size_t nc = f->keys_cap ? f->keys_cap * 2 : 256;
		char **nk = realloc(f->keys, nc * sizeof *nk);
		if (!nk)
			return bw_error_set(err, BW_E_NOMEM, "out of memory");
		f->keys = nk;
		f->keys_cap = nc;
	}
	if (!(f->keys[f->nkeys] = strdup(guid)))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	f->nkeys++;
	return BW_OK;
}

static void keys_clear(struct fetch *f)
{
	for (size_t i = 0; i < f->nkeys; i++)
		free(f->keys[i]);
	f->nkeys = 0;
}

static void note_change(struct dl_sync_result *res, const char *kind, const char *guid, const char *name,
                        const char *change)
{
	if (res->nchanges >= DL_CHANGES_MAX)
		return;
	struct dl_change *c = &res->changes[res->nchanges];
	snprintf(c->kind, sizeof c->kind, "%s", kind);
	snprintf(c->guid, sizeof c->guid, "%s", guid);
	c->name = name ? strdup(name) : NULL;
	c->change = change;
	res->nchanges++;
}

static bool push_str(char ***v, size_t *n, const char *s)
{
	char **nv = realloc(*v, (*n + 1) * sizeof *nv);
	if (!nv)
		return false;
	*v = nv;
	if (!(nv[*n] = strdup(s)))
		return false;
	(*n)++;
	return true;
}

/* Compares old and new, filling the counters, the change list and what the commit writes and deletes. */
static int diff(const struct dl_dir *old, struct dl_sync_result *res, bw_error *err)
{
	struct dl_dir *d = res->dir;
	res->user_changed = calloc(d->nusers ? d->nusers : 1, sizeof *res->user_changed);
	res->group_changed = calloc(d->ngroups ? d->ngroups : 1, sizeof *res->group_changed);
	if (!res->user_changed || !res->group_changed)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	for (size_t i = 0; i < d->nusers; i++) {
		const struct dl_user *u = &d->users[i], *o = old ? dl_dir_user(old, u->guid) : NULL;
		const char *name = u->login ? u->login : u->dn;
		if (!o) {
			res->added++;
			res->user_changed[i] = true;
			note_change(res, "user", u->guid, name, "added");
		} else if (dl_user_differs(o, u)) {
			res->updated++;
			res->user_changed[i] = true;
			note_change(res, "user", u->guid, name, "updated");
		}
		if (u->disabled && (!o || !o->disabled))
			res->disabled++;
	}
	for (size_t i = 0; i < d->ngroups; i++) {
		const struct dl_group *g = &d->groups[i], *o = old ? dl_dir_group(old, g->guid) : NULL;
		if (!o) {
			res->added++;
			res->group_changed[i] = true;
			note_change(res, "group", g->guid, g->name, "added");
		} else if (dl_group_differs(o, g) || (o->device_group == NULL) != (g->device_group == NULL) ||
		           (o->device_group && strcmp(o->device_group, g->device_group) != 0)) {
			res->updated++;
			res->group_changed[i] = true;
			note_change(res, "group", g->guid, g->name, "updated");
		}
	}
	for (size_t i = 0; old && i < old->nusers; i++)
		if (!dl_dir_user(d, old->users[i].guid)) {
			res->removed++;
			note_change(res, "user", old->users[i].guid,
			            old->users[i].login ? old->users[i].login : old->users[i].dn, "removed");
			if (!push_str(&res->removed_users, &res->nremoved_users, old->users[i].guid))
				return bw_error_set(err, BW_E_NOMEM, "out of memory");
		}
	for (size_t i = 0; old && i < old->ngroups; i++)
		if (!dl_dir_group(d, old->groups[i].guid)) {
			res->removed++;
			note_change(res, "group", old->groups[i].guid, old->groups[i].name, "removed");
			if (!push_str(&res->removed_groups, &res->nremoved_groups, old->groups[i].guid))
				return bw_error_set(err, BW_E_NOMEM, "out of memory");
		}
	return BW_OK;
}

static int cmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Incremental: the changed entries (by watermark) plus the unchanged ones of the old directory that are
 * still listed. A listed key that is in neither (an entry that moved into the filter's scope without a
 * change the watermark sees) makes *need_full true. */
static int fetch_incremental(struct fetch *f, struct dl_conn *c, const struct dl_dir *old, const char *watermark,
                             bool *need_full, bw_error *err)
{
	const struct dl_cfg *cfg = f->cfg;
	char clause[96];
	if (cfg->schema == DL_SCHEMA_AD) {
		uint64_t w = 0;
		bw_dl_uint_parse(watermark, strlen(watermark), &w);
		snprintf(clause, sizeof clause, "(uSNChanged>=%llu)", (unsigned long long)(w + 1));
	} else {
		snprintf(clause, sizeof clause, "(modifyTimestamp>=%s)", watermark);
	}
	char *uf = filter_and(cfg->user_filter, clause), *gf = filter_and(cfg->group_filter, clause);
	int rc = uf && gf ? BW_OK : bw_error_set(err, BW_E_NOMEM, "out of memory");
	struct dl_dir *changed = f->dir;
	if (rc == BW_OK) {
		set_phase(f->prog, "users", 0, 0);
		rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, uf, user_attrs(cfg), true, cfg->max_users,
		            f->prog, user_cb, f, err);
	}
	if (rc == BW_OK) {
		set_phase(f->prog, "groups", changed->nusers, 0);
		rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, gf, group_attrs(cfg), true, cfg->max_groups,
		            f->prog, group_cb, f, err);
	}
	if (rc == BW_OK)
		rc = fetch_ranges(f, c, err);
	free(uf);
	free(gf);
	if (rc != BW_OK)
		return rc;
	if (!dl_dir_finish(changed))
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	struct dl_dir *nd = dl_dir_new();
	if (!nd)
		return bw_error_set(err, BW_E_NOMEM, "out of memory");
	/* Users: list every key, take the changed entry or a copy of the old one. */
	set_phase(f->prog, "listing users", changed->nusers, changed->ngroups);
	rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, cfg->user_filter, key_attrs(cfg), true, cfg->max_users,
	            f->prog, key_cb, f, err);
	if (rc == BW_OK && f->nkeys)
		qsort(f->keys, f->nkeys, sizeof *f->keys, cmp_strp);
	for (size_t i = 0; rc == BW_OK && i < f->nkeys && !*need_full; i++) {
		const struct dl_user *src = dl_dir_user(changed, f->keys[i]);
		if (!src && old)
			src = dl_dir_user(old, f->keys[i]);
		struct dl_user u;
		if (!src)
			*need_full = true;
		else if (!dl_user_copy(&u, src) || !dl_dir_add_user(nd, &u))
			rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
	}
	keys_clear(f);
	if (rc == BW_OK && !*need_full) {
		set_phase(f->prog, "listing groups", nd->nusers, changed->ngroups);
		rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, cfg->group_filter, key_attrs(cfg), true,
		            cfg->max_groups, f->prog, key_cb, f, err);
		if (rc == BW_OK && f->nkeys)
			qsort(f->keys, f->nkeys, sizeof *f->keys, cmp_strp);
		for (size_t i = 0; rc == BW_OK && i < f->nkeys && !*need_full; i++) {
			const struct dl_group *src = dl_dir_group(changed, f->keys[i]);
			if (!src && old)
				src = dl_dir_group(old, f->keys[i]);
			struct dl_group g;
			if (!src)
				*need_full = true;
			else if (!dl_group_copy(&g, src) || !dl_dir_add_group(nd, &g))
				rc = bw_error_set(err, BW_E_NOMEM, "out of memory");
		}
		keys_clear(f);
	}
	dl_dir_unref(changed);
	f->dir = nd;
	return rc;
}

static int fetch_full(struct fetch *f, struct dl_conn *c, bw_error *err)
{
	const struct dl_cfg *cfg = f->cfg;
	set_phase(f->prog, "users", 0, 0);
	int rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, cfg->user_filter, user_attrs(cfg), true,
	                cfg->max_users, f->prog, user_cb, f, err);
	if (rc == BW_E_LIMIT)
		return bw_error_set(err, BW_E_LIMIT, "more than max_users (%zu) users match user_filter",
		                    cfg->max_users);
	if (rc == BW_OK) {
		set_phase(f->prog, "groups", f->dir->nusers, 0);
		rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, cfg->group_filter, group_attrs(cfg), true,
		            cfg->max_groups, f->prog, group_cb, f, err);
		if (rc == BW_E_LIMIT)
			return bw_error_set(err, BW_E_LIMIT, "more than max_groups (%zu) groups match group_filter",
			                    cfg->max_groups);
	}
	if (rc == BW_OK) {
		set_phase(f->prog, "group members", f->dir->nusers, f->dir->ngroups);
		rc = fetch_ranges(f, c, err);
	}
	return rc;
}

static void apply_group_map(const struct dl_cfg *cfg, struct dl_dir *d)
{
	for (size_t i = 0; i < d->ngroups; i++) {
		struct dl_group *g = &d->groups[i];
		free(g->device_group);
		g->device_group = NULL;
		char *dn = g->dn, *cn = g->name;
		const char *dg = dl_device_group_for(cfg, &dn, &cn, 1);
		if (dg)
			g->device_group = strdup(dg);
	}
}

void dl_sync_fetch(const struct dl_cfg *cfg, const struct dl_dir *old, bool full, const char *watermark,
                   struct dl_progress *prog, struct dl_sync_result *res)
{
	bw_error err = {0};
	struct dl_conn *c = NULL;
	struct fetch f = {.cfg = cfg, .prog = prog};
	int64_t started = (int64_t)time(NULL);
	char usn[32] = "";
	memset(res, 0, sizeof *res);
	if (!watermark || !*watermark)
		full = true;
	set_phase(prog, "connecting", 0, 0);
	int rc = conn_open(cfg, &c, &err);
	if (rc == BW_OK)
		rc = bind_service(cfg, c, &err);
	if (rc == BW_OK && cfg->schema == DL_SCHEMA_AD)
		rc = read_root_dse(cfg, c, usn, sizeof usn, &err);
	for (int pass = 0; rc == BW_OK && pass < 2; pass++) {
		bool need_full = false;
		dl_dir_unref(f.dir);
		free(f.todo);
		f.todo = NULL;
		f.ntodo = f.todo_cap = 0;
		if (!(f.dir = dl_dir_new())) {
			rc = bw_error_set(&err, BW_E_NOMEM, "out of memory");
			break;
		}
		rc = full ? fetch_full(&f, c, &err) : fetch_incremental(&f, c, old, watermark, &need_full, &err);
		if (rc == BW_OK && need_full && !full) {
			full = true;
			continue;
		}
		break;
	}
	res->full = full;
	if (rc == BW_OK) {
		set_phase(prog, "comparing", f.dir->nusers, f.dir->ngroups);
		apply_group_map(cfg, f.dir);
		if (!dl_dir_finish(f.dir))
			rc = bw_error_set(&err, BW_E_NOMEM, "out of memory");
	}
	if (rc == BW_OK) {
		res->dir = f.dir;
		f.dir = NULL;
		rc = diff(old, res, &err);
	}
	if (rc == BW_OK) {
		if (cfg->schema == DL_SCHEMA_AD) {
			/* highestCommittedUSN read before the searches: changes made while they ran are newer. */
			if (usn[0])
				snprintf(res->watermark, sizeof res->watermark, "%s", usn);
			else
				snprintf(res->watermark, sizeof res->watermark, "%llu", (unsigned long long)f.max_usn);
		} else {
			bw_dl_gentime_format(started - WATERMARK_SLACK, res->watermark);
		}
	}
	conn_close(c);
	dl_dir_unref(f.dir);
	keys_clear(&f);
	free(f.keys);
	free(f.todo);
	res->rc = rc;
	if (rc != BW_OK)
		snprintf(res->error, sizeof res->error, "%s", err.message);
}

void dl_sync_result_clear(struct dl_sync_result *res)
{
	dl_dir_unref(res->dir);
	for (size_t i = 0; i < res->nchanges; i++)
		free(res->changes[i].name);
	for (size_t i = 0; i < res->nremoved_users; i++)
		free(res->removed_users[i]);
	for (size_t i = 0; i < res->nremoved_groups; i++)
		free(res->removed_groups[i]);
	free(res->removed_users);
	free(res->removed_groups);
	free(res->user_changed);
	free(res->group_changed);
	memset(res, 0, sizeof *res);
}

/* ---- the connection test */

static json_t *cert_json(const struct berval *der, bool verified)
{
	const unsigned char *p = (const unsigned char *)der->bv_val;
	X509 *x = d2i_X509(NULL, &p, (long)der->bv_len);
	if (!x)
		return NULL;
	char subject[512] = "", issuer[512] = "", after[32] = "";
	BIO *b = BIO_new(BIO_s_mem());
	if (b) {
		X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
		int n = BIO_read(b, subject, sizeof subject - 1);
		subject[n > 0 ? n : 0] = '\0';
		(void)BIO_reset(b);
		X509_NAME_print_ex(b, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253);
		n = BIO_read(b, issuer, sizeof issuer - 1);
		issuer[n > 0 ? n : 0] = '\0';
		BIO_free(b);
	}
	struct tm tm;
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
		strftime(after, sizeof after, "%Y-%m-%dT%H:%M:%SZ", &tm);
	X509_free(x);
	return json_pack("{s:s, s:s, s:s, s:b}", "peer_subject", subject, "peer_issuer", issuer, "not_after", after,
	                 "verified", verified);
}

static json_t *tls_json(const struct dl_cfg *cfg, struct dl_conn *c)
{
	char *ver = NULL, *cipher = NULL;
	struct berval der = {0, NULL};
	ldap_get_option(c->ld, LDAP_OPT_X_TLS_VERSION, &ver);
	ldap_get_option(c->ld, LDAP_OPT_X_TLS_CIPHER, &cipher);
	ldap_get_option(c->ld, LDAP_OPT_X_TLS_PEERCERT, &der);
	json_t *t = der.bv_val ? cert_json(&der, !cfg->insecure) : NULL;
	if (!t)
		t = json_pack("{s:n, s:n, s:n, s:b}", "peer_subject", "peer_issuer", "not_after", "verified",
		              !cfg->insecure && ver != NULL);
	if (t) {
		json_object_set_new(t, "version", jstr_or_null(ver));
		json_object_set_new(t, "cipher", jstr_or_null(cipher));
	}
	ldap_memfree(ver);
	ldap_memfree(cipher);
	ber_memfree(der.bv_val);
	return t;
}

static int count_cb(LDAP *ld, LDAPMessage *e, void *arg, bw_error *err)
{
	(void)ld;
	(void)e;
	(void)err;
	(*(size_t *)arg)++;
	return BW_OK;
}

json_t *dl_test(const struct dl_cfg *cfg)
{
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	bw_error err = {0};
	struct dl_conn *c = NULL;
	json_t *out = json_object();
	if (!out)
		return NULL;
	int rc = conn_open(cfg, &c, &err);
	json_object_set_new(out, "url", jstr_or_null(c ? c->url : cfg->nurls ? cfg->urls[0] : NULL));
	if (rc == BW_OK) {
		json_object_set_new(out, "tls", tls_json(cfg, c));
		rc = bind_service(cfg, c, &err);
		json_object_set_new(out, "bind", json_string(rc == BW_OK ? "ok" : err.message));
	} else {
		json_object_set_new(out, "tls", json_null());
		json_object_set_new(out, "bind", json_null());
	}
	if (rc == BW_OK) {
		size_t n = 0;
		static const char *const attrs[] = {"1.1", NULL};
		rc = search(cfg, c, cfg->base_dn, LDAP_SCOPE_SUBTREE, cfg->user_filter, (char **)attrs, true,
		            cfg->max_users, NULL, count_cb, &n, &err);
		json_object_set_new(out, "search",
		                    rc == BW_OK
		                        ? json_pack("{s:s, s:I}", "base_dn", cfg->base_dn, "entries", (json_int_t)n)
		                        : json_pack("{s:s, s:s}", "base_dn", cfg->base_dn, "error", err.message));
	}
	conn_close(c);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	json_object_set_new(out, "ok", json_boolean(rc == BW_OK));
	json_object_set_new(
	    out, "elapsed_ms",
	    json_integer((json_int_t)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000)));
	if (rc != BW_OK) {
		json_object_set_new(out, "error", json_string(err.message));
		json_object_set_new(out, "error_code", json_string(bw_status_name(rc)));
	}
	return out;
}
