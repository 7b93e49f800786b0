#!/usr/bin/python3
"""tests/sims/fcm_sim.py: a Firebase Cloud Messaging (HTTP v1) simulator for the push_fcm tests.

It serves, over TLS on loopback, what push_fcm talks to:
  POST /token                               the OAuth 2.0 token endpoint of the service-account flow
                                            (RFC 7523 JWT bearer grant): checks the RS256 assertion's
                                            signature with the service account's public key, iss, aud
                                            (= the account's token_uri), scope, iat/exp; answers
                                            {"access_token","expires_in","token_type":"Bearer"} or
                                            {"error","error_description"} (HTTP 400 / 401)
  POST /v1/projects/<id>/messages:send      FCM HTTP v1: checks the Bearer access token, the project and
                                            the body; answers {"name":"projects/<id>/messages/<n>"} or the
                                            documented error body {"error":{"code","message","status",
                                            "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                            "errorCode":...}]}}
and a control API under /_sim/ (not part of FCM): received, inject, register, revoke, goaway, reset, stats.
See tests/sims/README.md. Python standard library, python3-cryptography and python3-h2. ALPN offers "h2" and
"http/1.1": HTTP/2 connections (what libcurl negotiates for push_fcm) are served by H2Connection, one thread per
connection doing all its I/O; HTTP/1.1 (or --http1-only) by the standard library's server with keep-alive.
"""

import argparse
import base64
import json
import os
import re
import secrets
import select
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
MAX_BODY = 1 << 20
CLOCK_SKEW = 300  # seconds of iat in the future tolerated

# errorCode -> (HTTP status, canonical status, message), from the FCM HTTP v1 ErrorCode reference.
ERRORS = {
    "UNSPECIFIED_ERROR": (500, "INTERNAL", "No more information is available about this error."),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Send requests'."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}
UNAUTH_MESSAGE = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                  "other valid authentication credential. See "
                  "https://developers.google.com/identity/sign-in/web/devconsole-project.")
TTL_RX = re.compile(r"^\d{1,12}(\.\d{1,9})?s$")


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class State:
    """Everything the handlers share; one lock. Issued access tokens and the message counter are kept in
    state-dir/state.json so that a restarted simulator still accepts the tokens it issued."""

    def __init__(self, args):
        self.lock = threading.Lock()
        self.state_dir = args.state_dir
        self.expires_in = args.expires_in
        self.audience = args.audience
        self.accounts = {}  # client_email -> {"key": public key, "token_uri", "project_id", "kid"}
        for path in args.service_account or []:
            self.add_account(path)
        self.projects = set(args.project or []) | {a["project_id"] for a in self.accounts.values() if
                                                   a["project_id"]}
        self.tokens = {}  # access token -> expiry (unix seconds)
        self.counter = 0
        self.injections = []  # dicts with "endpoint", "token", "count", ...
        self.received = []
        self.registrations = {}  # registration token -> wake_url
        self.stats = {"token_requests": 0, "tokens_issued": 0, "token_errors": 0, "send_requests": 0,
                      "accepted": 0, "errors": {}, "wakeups": 0, "max_concurrent_sends": 0}
        self.active_sends = 0
        self.connections = set()  # HTTP/1.1 sockets
        self.h2_connections = set()  # H2Connection objects
        self.load()

    def add_account(self, path):
        with open(path) as f:
            sa = json.load(f)
        key = serialization.load_pem_private_key(sa["private_key"].encode(), password=None)
        self.accounts[sa["client_email"]] = {
            "key": key.public_key(), "token_uri": sa.get("token_uri"), "project_id": sa.get("project_id"),
            "kid": sa.get("private_key_id")}

    def path(self):
        return os.path.join(self.state_dir, "state.json") if self.state_dir else None

    def load(self):
        p = self.path()
        if p and os.path.exists(p):
            with open(p) as f:
                d = json.load(f)
            self.tokens = {k: v for k, v in d.get("tokens", {}).items()}
            self.counter = d.get("counter", 0)

    def save(self):
        p = self.path()
        if not p:
            return
        tmp = p + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"tokens": self.tokens, "counter": self.counter}, f)
        os.replace(tmp, p)

    def record(self, entry):
        self.received.append(entry)
        if self.state_dir:
            with open(os.path.join(self.state_dir, "received.jsonl"), "a") as f:
                f.write(json.dumps(entry) + "\n")

    def take_injection(self, endpoint, token):
        """The first matching injection (its count decremented), or None."""
        for inj in self.injections:
            if inj["endpoint"] != endpoint:
                continue
            if endpoint == "send" and inj["token"] not in ("*", token):
                continue
            inj["count"] -= 1
            if inj["count"] <= 0:
                self.injections.remove(inj)
            return dict(inj)
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fcm-sim/1.0"
    sys_version = ""

    def setup(self):
        super().setup()
        with self.server.state.lock:
            self.server.state.connections.add(self.request)

    def finish(self):
        with self.server.state.lock:
            self.server.state.connections.discard(self.request)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, fmt, *args):  # quiet unless --verbose
        if self.server.verbose:
            sys.stderr.write("fcm_sim: " + (fmt % args) + "\n")

    # ---- plumbing

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n) if n else b""

    def reply(self, status, obj, headers=None):
        data = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def fcm_error(self, code, error_code=None, message=None, details=None, headers=None, status=None):
        std_status, canonical, msg = ERRORS.get(error_code, (code, "UNKNOWN", "error"))
        body = {"error": {"code": status or std_status, "message": message or msg, "status": canonical}}
        d = list(details or [])
        if error_code:
            d.append({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
        if d:
            body["error"]["details"] = d
        self.reply(status or std_status, body, headers)
        return status or std_status

    # ---- dispatch

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        st = self.server.state
        if path == "/_sim/received":
            q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            with st.lock:
                items = list(st.received)
            if "path" in q:
                items = [i for i in items if i["path"].startswith(q["path"][0])]
            return self.reply(200, items)
        if path == "/_sim/stats":
            with st.lock:
                s = json.loads(json.dumps(st.stats))
                s["live_tokens"] = sum(1 for e in st.tokens.values() if e > time.time())
                s["injections"] = list(st.injections)
                s["connections"] = len(st.connections)
                s["h2_connections"] = len(st.h2_connections)
            return self.reply(200, s)
        return self.reply(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})

    def do_POST(self):
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            return self.reply(413, {"error": {"code": 413, "message": "Request too large",
                                              "status": "INVALID_ARGUMENT"}})
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_sim/"):
            return self.control(path, body)
        if path == "/token":
            return self.token(body)
        m = re.fullmatch(r"/v1/projects/([^/]+)/messages:send", path)
        if m:
            return self.send_message(m.group(1), body)
        return self.reply(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})

    # ---- control API

    def control(self, path, body):
        st = self.server.state
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            return self.reply(400, {"error": "body is not JSON"})
        with st.lock:
            if path == "/_sim/inject":
                endpoint = req.get("endpoint", "send")
                if endpoint not in ("send", "token"):
                    return self.reply(400, {"error": "endpoint must be send or token"})
                code = req.get("error_code") or req.get("reason")
                if code and endpoint == "send" and code not in ERRORS:
                    return self.reply(400, {"error": "unknown errorCode %s" % code})
                st.injections.append({
                    "endpoint": endpoint, "token": req.get("token", "*"), "count": int(req.get("count", 1)),
                    "error_code": code, "status": req.get("status"), "retry_after": req.get("retry_after"),
                    "delay_ms": int(req.get("delay_ms", 0)), "unauthenticated": bool(req.get("unauthenticated")),
                    "error": req.get("error"), "error_description": req.get("error_description"),
                    "no_details": bool(req.get("no_details")), "expires_in": req.get("expires_in")})
                return self.reply(200, {"injections": len(st.injections)})
            if path == "/_sim/register":
                if not isinstance(req.get("token"), str) or not isinstance(req.get("wake_url"), str):
                    return self.reply(400, {"error": "token and wake_url are strings"})
                st.registrations[req["token"]] = req["wake_url"]
                return self.reply(200, {"registered": req["token"]})
            if path == "/_sim/revoke":
                n = len(st.tokens)
                st.tokens.clear()
                st.save()
                return self.reply(200, {"revoked": n})
            if path == "/_sim/reset":
                st.injections.clear()
                st.received.clear()
                st.registrations.clear()
                for k in ("token_requests", "tokens_issued", "token_errors", "send_requests", "accepted",
                          "wakeups", "max_concurrent_sends"):
                    st.stats[k] = 0
                st.stats["errors"] = {}
                return self.reply(200, {"reset": True})
            if path == "/_sim/goaway":
                # HTTP/2 connections get a GOAWAY frame (then close); HTTP/1.1 has none: other open
                # connections are closed, as a restarting front end does.
                n = 0
                for h2c in list(st.h2_connections):
                    h2c.goaway()
                    n += 1
                for c in list(st.connections):
                    if c is self.request:
                        continue
                    try:
                        c.shutdown(socket.SHUT_RDWR)
                        n += 1
                    except OSError:
                        pass
                return self.reply(200, {"closed": n})
        return self.reply(404, {"error": "unknown control path"})

    # ---- OAuth token endpoint

    def oauth_error(self, status, error, description):
        st = self.server.state
        with st.lock:
            st.stats["token_errors"] += 1
        self.reply(status, {"error": error, "error_description": description})
        return status

    def token(self, body):
        st = self.server.state
        entry = {"path": self.path, "method": "POST", "headers": dict(self.headers.items()),
                 "body": body.decode(errors="replace"), "at": time.time(), "http_version": self.request_version}
        with st.lock:
            st.stats["token_requests"] += 1
            inj = st.take_injection("token", None)
        status = self.token_answer(body, inj)
        entry["status"] = status
        with st.lock:
            st.record(entry)

    def token_answer(self, body, inj):
        st = self.server.state
        if inj and inj.get("delay_ms"):
            time.sleep(inj["delay_ms"] / 1000.0)
        if inj and (inj.get("status") or inj.get("error")):
            hdrs = {"Retry-After": str(inj["retry_after"])} if inj.get("retry_after") is not None else None
            status = int(inj.get("status") or 400)
            if status >= 500:
                self.reply(status, {"error": "internal_failure", "error_description": "Backend error"}, hdrs)
                with st.lock:
                    st.stats["token_errors"] += 1
                return status
            return self.oauth_error(status, inj.get("error") or "invalid_grant",
                                    inj.get("error_description") or "Injected error")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self.oauth_error(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
        form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        grant = form.get("grant_type", [""])[0]
        if grant != GRANT:
            return self.oauth_error(400, "unsupported_grant_type", "Invalid grant_type: %s" % grant)
        assertion = form.get("assertion", [""])[0]
        parts = assertion.split(".")
        if len(parts) != 3:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT: the assertion is not a JWT")
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except (ValueError, TypeError):
            return self.oauth_error(400, "invalid_grant", "Invalid JWT: malformed base64url JSON")
        if header.get("alg") != "RS256":
            return self.oauth_error(400, "invalid_grant", "Invalid JWT: alg must be RS256")
        acct = st.accounts.get(claims.get("iss"))
        if not acct:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT Signature.")  # unknown issuer, as Google says
        if acct["kid"] and header.get("kid") not in (None, acct["kid"]):
            return self.oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            acct["key"].verify(sig, (parts[0] + "." + parts[1]).encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        aud = st.audience or acct["token_uri"]
        if claims.get("aud") != aud:
            return self.oauth_error(400, "invalid_grant", "Invalid JWT: audience must be %s" % aud)
        scopes = (claims.get("scope") or "").split()
        if SCOPE not in scopes:
            return self.oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or iat > now + CLOCK_SKEW or exp <= now or \
                exp - iat > 3600 or exp <= iat:
            return self.oauth_error(400, "invalid_grant",
                                    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                                    "timeframe. Check your iat and exp values in the JWT claim.")
        expires_in = int(inj["expires_in"]) if inj and inj.get("expires_in") is not None else st.expires_in
        tok = "ya29.sim-" + secrets.token_urlsafe(32)
        with st.lock:
            st.tokens[tok] = now + expires_in
            st.stats["tokens_issued"] += 1
            st.save()
        self.reply(200, {"access_token": tok, "expires_in": expires_in, "token_type": "Bearer"})
        return 200

    # ---- messages:send

    def send_message(self, project, body):
        st = self.server.state
        entry = {"path": self.path, "method": "POST", "headers": dict(self.headers.items()),
                 "body": body.decode(errors="replace"), "at": time.time(), "http_version": self.request_version}
        try:
            msg = json.loads(body)
        except ValueError:
            msg = None
        token = msg.get("message", {}).get("token") if isinstance(msg, dict) and \
            isinstance(msg.get("message"), dict) else None
        with st.lock:
            st.stats["send_requests"] += 1
            st.active_sends += 1
            st.stats["max_concurrent_sends"] = max(st.stats["max_concurrent_sends"], st.active_sends)
            inj = st.take_injection("send", token)
            if inj and inj.get("delay_ms"):
                st.record(dict(entry, status=None, held=True))
        if inj and inj.get("delay_ms"):
            time.sleep(inj["delay_ms"] / 1000.0)
        try:
            status, name = self.send_answer(project, msg, token, inj)
        finally:
            with st.lock:
                st.active_sends -= 1
        entry["status"] = status
        with st.lock:
            st.record(entry)
            if status == 200:
                st.stats["accepted"] += 1
                url = st.registrations.get(token)
            else:
                key = str(status)
                st.stats["errors"][key] = st.stats["errors"].get(key, 0) + 1
                url = None
        if url:
            threading.Thread(target=self.wake, args=(url,), daemon=True).start()

    def wake(self, url):
        try:
            req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()
            with self.server.state.lock:
                self.server.state.stats["wakeups"] += 1
        except OSError:
            pass

    def send_answer(self, project, msg, token, inj):
        st = self.server.state
        auth = self.headers.get("Authorization") or ""
        tok = auth[7:] if auth.startswith("Bearer ") else None
        with st.lock:
            exp = st.tokens.get(tok) if tok else None
        if exp is None or exp <= time.time() or (inj and inj.get("unauthenticated")):
            self.reply(401, {"error": {"code": 401, "message": UNAUTH_MESSAGE, "status": "UNAUTHENTICATED"}},
                       {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'})
            return 401, None
        if project not in st.projects:
            self.reply(404, {"error": {"code": 404, "message": "Requested entity was not found.",
                                       "status": "NOT_FOUND"}})
            return 404, None
        if inj and inj.get("error_code"):
            hdrs = {"Retry-After": str(inj["retry_after"])} if inj.get("retry_after") is not None else None
            code = inj["error_code"]
            if inj.get("no_details"):
                s, canonical, m = ERRORS[code]
                s = int(inj.get("status") or s)
                self.reply(s, {"error": {"code": s, "message": m, "status": canonical}}, hdrs)
                return s, None
            return self.fcm_error(400, code, headers=hdrs, status=inj.get("status")), None
        if inj and inj.get("status"):
            s = int(inj["status"])
            hdrs = {"Retry-After": str(inj["retry_after"])} if inj.get("retry_after") is not None else None
            self.reply(s, {"error": {"code": s, "message": "injected", "status": "UNKNOWN"}}, hdrs)
            return s, None
        violations = self.check_message(msg)
        if violations:
            bad = {"@type": BAD_REQUEST_TYPE,
                   "fieldViolations": [{"field": f, "description": d} for f, d in violations]}
            return self.fcm_error(400, "INVALID_ARGUMENT", message=violations[0][1], details=[bad]), None
        with st.lock:
            st.counter += 1
            n = st.counter
            st.save()
        name = "projects/%s/messages/0:%d%06d" % (project, int(time.time() * 1000), n)
        self.reply(200, {"name": name})
        return 200, name

    @staticmethod
    def check_message(msg):
        """Field violations of a messages:send body, as (field, description)."""
        if not isinstance(msg, dict) or not isinstance(msg.get("message"), dict):
            return [("message", "Invalid JSON payload: 'message' is required")]
        unknown = set(msg) - {"message", "validate_only", "validateOnly"}
        if unknown:
            return [(k, "Invalid JSON payload received. Unknown name \"%s\"" % k) for k in sorted(unknown)]
        m = msg["message"]
        out = []
        targets = [k for k in ("token", "topic", "condition") if k in m]
        if len(targets) != 1:
            out.append(("message", "Exactly one of token, topic or condition must be set"))
        if "token" in m and (not isinstance(m["token"], str) or not m["token"]):
            out.append(("message.token", "The registration token is not a valid FCM registration token"))
        data = m.get("data")
        if data is not None:
            if not isinstance(data, dict):
                out.append(("message.data", "data must be a map of strings"))
            else:
                for k, v in data.items():
                    if not isinstance(v, str):
                        out.append(("message.data[%s]" % k, "Invalid value at 'message.data[%s]': not a string"
                                    % k))
                    if k in ("from", "notification", "message_type") or k.startswith(("google", "gcm")):
                        out.append(("message.data[%s]" % k, "Invalid data key: %s is reserved" % k))
        android = m.get("android")
        if android is not None:
            if not isinstance(android, dict):
                out.append(("message.android", "android must be an object"))
            else:
                if "priority" in android and android["priority"] not in ("NORMAL", "HIGH", "normal", "high"):
                    out.append(("message.android.priority", "Invalid value at 'message.android.priority'"))
                if "ttl" in android and (not isinstance(android["ttl"], str) or not TTL_RX.match(android["ttl"])):
                    out.append(("message.android.ttl", "Invalid value at 'message.android.ttl': a duration "
                                "in seconds with up to nine fractional digits, ending with 's'"))
        return out


class H2Exchange(Handler):
    """One HTTP/2 request run through the same handlers as HTTP/1.1: reply() captures the answer."""

    def __init__(self, server, sock, method, path, headers, body):  # no BaseHTTPRequestHandler.__init__
        self.server, self.request, self.command, self.path = server, sock, method, path
        self.headers = headers
        self.body = body
        self.request_version = "HTTP/2"
        self.close_connection = False
        self.response = None

    def read_body(self):
        if len(self.body) > MAX_BODY:
            raise ValueError("body too large")
        return bytes(self.body)

    def reply(self, status, obj, headers=None):
        data = json.dumps(obj).encode() if obj is not None else b""
        self.response = (status, data, dict(headers or {}))


class H2Headers(dict):
    """Request headers of one stream: case-insensitive get(), items() without pseudo-headers."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)


class H2Connection:
    """One HTTP/2 connection. Only this connection's thread touches the socket and the h2 state: requests run
    on worker threads (they may sleep for delay_ms) and hand their answers back through a queue and a wake-up
    socketpair."""

    def __init__(self, server, sock):
        self.server, self.sock = server, sock
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                          header_encoding="utf-8"))
        self.streams = {}  # stream id -> (headers, body)
        self.outq = []  # (stream id, status, data, headers) answers ready to send
        self.sending = {}  # stream id -> remaining bytes of a body waiting for flow-control window
        self.lock = threading.Lock()
        self.wake_r, self.wake_w = socket.socketpair()
        self.want_goaway = False

    def goaway(self):
        with self.lock:
            self.want_goaway = True
        self.wake()

    def wake(self):
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def run(self):
        st = self.server.state
        with st.lock:
            st.h2_connections.add(self)
        try:
            self.conn.initiate_connection()
            self.sock.sendall(self.conn.data_to_send())
            while self.loop_once():
                pass
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass
        finally:
            with st.lock:
                st.h2_connections.discard(self)
            for s in (self.wake_r, self.wake_w):
                s.close()

    def loop_once(self):
        r = [self.sock] if self.sock.pending() else select.select([self.sock, self.wake_r], [], [], 1.0)[0]
        if self.wake_r in r:
            self.wake_r.recv(4096)
        if self.sock in r:
            data = self.sock.recv(65536)
            if not data:
                return False
            for ev in self.conn.receive_data(data):
                if not self.on_event(ev):
                    self.flush()
                    return False
        with self.lock:
            ready, self.outq = self.outq, []
            goaway = self.want_goaway
        for sid, status, data, hdrs in ready:
            try:
                self.conn.send_headers(sid, [(":status", str(status)), ("content-type",
                                                                        "application/json; charset=UTF-8"),
                                             ("content-length", str(len(data)))] +
                                       [(k.lower(), v) for k, v in hdrs.items()], end_stream=not data)
                if data:
                    self.sending[sid] = data
            except h2.exceptions.StreamClosedError:
                pass
        self.pump_data()
        self.flush()
        if goaway:
            self.conn.close_connection(last_stream_id=self.conn.highest_inbound_stream_id)
            self.flush()
            time.sleep(0.05)
            return False
        return True

    def pump_data(self):
        for sid in list(self.sending):
            data = self.sending[sid]
            try:
                while data:
                    n = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size, len(data))
                    if n <= 0:
                        break
                    self.conn.send_data(sid, data[:n], end_stream=(n == len(data)))
                    data = data[n:]
            except (h2.exceptions.StreamClosedError, KeyError):
                data = b""
            if data:
                self.sending[sid] = data
            else:
                del self.sending[sid]

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def on_event(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            self.streams[ev.stream_id] = (H2Headers((k.lower(), v) for k, v in ev.headers), bytearray())
        elif isinstance(ev, h2.events.DataReceived):
            if ev.stream_id in self.streams:
                self.streams[ev.stream_id][1].extend(ev.data)
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            item = self.streams.pop(ev.stream_id, None)
            if item:
                threading.Thread(target=self.handle, args=(ev.stream_id,) + item, daemon=True).start()
        elif isinstance(ev, h2.events.StreamReset):
            self.streams.pop(ev.stream_id, None)
            self.sending.pop(ev.stream_id, None)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            return False
        return True

    def handle(self, sid, headers, body):
        method, path = headers.get(":method", "GET"), headers.get(":path", "/")
        hdrs = H2Headers((k, v) for k, v in headers.items() if not k.startswith(":"))
        ex = H2Exchange(self.server, self.sock, method, path, hdrs, body)
        try:
            if method == "GET":
                ex.do_GET()
            elif method == "POST":
                ex.do_POST()
            else:
                ex.reply(405, {"error": {"code": 405, "message": "Method Not Allowed", "status": "UNIMPLEMENTED"}})
        except Exception as e:  # a simulator bug must not hang the client
            ex.reply(500, {"error": {"code": 500, "message": "simulator error: %r" % e, "status": "INTERNAL"}})
        status, data, extra = ex.response or (500, b"", {})
        with self.lock:
            self.outq.append((sid, status, data, extra))
        self.wake()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def finish_request(self, request, client_address):
        """TLS handshake on the connection's own thread, then HTTP/2 or HTTP/1.1 as ALPN chose."""
        request.settimeout(30)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):
            return
        if request.selected_alpn_protocol() == "h2":
            request.settimeout(None)
            H2Connection(self, request).run()
        else:
            Handler(request, client_address, self)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="server key (PEM)")
    ap.add_argument("--state-dir", help="directory for state.json (issued tokens) and received.jsonl")
    ap.add_argument("--service-account", action="append", help="service-account JSON whose key signs assertions")
    ap.add_argument("--project", action="append", help="an accepted project id (besides the accounts' ones)")
    ap.add_argument("--audience", help="expected aud (default: the service account's token_uri)")
    ap.add_argument("--expires-in", type=int, default=3600, help="access token lifetime in seconds")
    ap.add_argument("--http1-only", action="store_true", help="offer only http/1.1 in ALPN (no HTTP/2)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"] if args.http1_only else ["h2", "http/1.1"])

    srv = Server((args.host, args.port), Handler)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    srv.state = State(args)
    srv.verbose = args.verbose

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY port=%d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
