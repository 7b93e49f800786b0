#!/usr/bin/python3
"""tests/sims/apns_sim.py: an Apple Push Notification service simulator for tests (HTTP/2 over TLS, python3-h2).

Follows Apple's public documentation ("Sending notification requests to APNs", "Establishing a token-based
connection to APNs", "Handling notification responses from APNs"): POST /3/device/<hex token> with the apns-*
headers and a JSON body; 200 with apns-id (and apns-unique-id) on success, else the status with
{"reason": "..."} (410 also with "timestamp"). Token auth: "authorization: bearer <JWT>" checked for ES256
signature (--jwt-public-key, repeatable for a key rotation), kid (--key-id), iss (--team-id) and age (iat older
than 1 h -> 403 ExpiredProviderToken, in the future -> 403 InvalidProviderToken); a provider token replaced less
than 20 minutes after the previous one of the same key -> 429 TooManyProviderTokenUpdates. Certificate auth: with --client-ca the TLS handshake asks for a client certificate
(verified against that CA); its subject UID is the only topic it may push to.

Control API on the same port (HTTP/2 or HTTP/1.1; not part of APNs):
  GET  /_sim/received                  JSON list of requests: path, token, headers, body, at, status, reason, conn
  POST /_sim/inject {"token": T|"*", "status": 410, "reason": "Unregistered", "count": N, "retry_after": S}
  POST /_sim/goaway                    GOAWAY (NO_ERROR) on every open HTTP/2 connection, then close them
  POST /_sim/reset                     forget received requests, injections and statistics
  GET  /_sim/stats                     {"connections_total", "connections_open", "requests", "by_status", ...}
  POST /_sim/register {"token": T, "wake_url": "http://127.0.0.1:P/wake"}: POST {} there when a push for T is
                                       accepted (in the background, best effort)

Usage: apns_sim.py --port 0 --cert C --key K [--client-ca CA] [--jwt-public-key PEM --key-id KID --team-id TEAM]
                   [--state-dir D] [--clock-offset S] [--delay-ms MS]
Prints "READY port=<n>" once listening; runs until SIGTERM/SIGINT.
"""

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
import urllib.request
import uuid

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

PUSH_TYPES = {"alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity",
              "pushtotalk"}
TOKEN_RE = re.compile(r"^[0-9a-fA-F]{16,200}$")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_PAYLOAD = 4096
MAX_PAYLOAD_VOIP = 5120
MAX_RECEIVED = 200000


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Sim:
    def __init__(self, args):
        self.args = args
        self.pubkeys = []  # several: a team may have two keys while it rotates them
        for path in args.jwt_public_key or []:
            with open(path, "rb") as f:
                data = f.read()
            try:
                self.pubkeys.append(serialization.load_pem_public_key(data))
            except ValueError:
                self.pubkeys.append(serialization.load_pem_private_key(data, None).public_key())
        self.lock = threading.Lock()
        self.conns = set()
        self.reset()

    def reset(self):
        self.received = []
        self.injects = []
        self.wake = {}
        self.stats = {"connections_total": 0, "requests": 0, "by_status": {}, "jwt_seen": 0, "jwt_changes": 0,
                      "goaways": 0}
        self.last_jwt = {}  # per signing key: the last token accepted and when it was first seen
        self.last_jwt_at = {}

    def now(self):
        return time.time() + self.args.clock_offset

    # ---- APNs semantics

    def take_inject(self, token):
        for inj in self.injects:
            if inj["token"] in (token, "*") and inj["count"] > 0:
                inj["count"] -= 1
                if inj["count"] == 0:
                    self.injects.remove(inj)
                return inj
        return None

    def check_jwt(self, auth):
        """None when the provider token is good, else (status, reason)."""
        if not auth:
            return 403, "MissingProviderToken"
        if not auth.lower().startswith("bearer "):
            return 403, "InvalidProviderToken"
        tok = auth[7:].strip()
        parts = tok.split(".")
        if len(parts) != 3:
            return 403, "InvalidProviderToken"
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            sig = b64url_decode(parts[2])
        except ValueError:
            return 403, "InvalidProviderToken"
        if header.get("alg") != "ES256" or len(sig) != 64:
            return 403, "InvalidProviderToken"
        if self.args.key_id and header.get("kid") != self.args.key_id:
            return 403, "InvalidProviderToken"
        if self.args.team_id and claims.get("iss") != self.args.team_id:
            return 403, "InvalidProviderToken"
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        signer = None
        for i, key in enumerate(self.pubkeys):
            try:
                key.verify(der, (parts[0] + "." + parts[1]).encode(), ec.ECDSA(hashes.SHA256()))
                signer = i
                break
            except InvalidSignature:
                continue
        if signer is None:
            return 403, "InvalidProviderToken"
        iat = claims.get("iat")
        if not isinstance(iat, int):
            return 403, "InvalidProviderToken"
        now = self.now()
        if iat > now + 60:
            return 403, "InvalidProviderToken"
        if now - iat > 3600:
            return 403, "ExpiredProviderToken"
        if tok != self.last_jwt.get(signer):
            self.stats["jwt_seen"] += 1
            if signer in self.last_jwt:
                self.stats["jwt_changes"] += 1
                if now - self.last_jwt_at[signer] < 20 * 60:
                    return 429, "TooManyProviderTokenUpdates"
            self.last_jwt[signer] = tok
            self.last_jwt_at[signer] = now
        return None

    def handle_push(self, method, path, headers, body, cert_topic, conn_id):
        """Returns (status, response headers list, body bytes, record)."""
        rec = {"path": path, "method": method, "headers": headers, "body": body.decode("utf-8", "replace"),
               "at": time.time(), "conn": conn_id, "token": None}
        m = re.match(r"^/3/device/([^/?]*)$", path)
        status, reason = 200, None
        dup = [k for k in headers if isinstance(headers[k], list)]
        if method != "POST" and path.startswith("/3/device/"):
            status, reason = 405, "MethodNotAllowed"
        elif not m:
            status, reason = 404, "BadPath"
        else:
            token = m.group(1)
            rec["token"] = token
            inj = self.take_inject(token)
            if inj:
                status, reason = inj["status"], inj.get("reason")
                extra = []
                if inj.get("retry_after") is not None:
                    extra.append(("retry-after", str(inj["retry_after"])))
                return self.finish(rec, status, reason, headers, extra)
            if dup:
                status, reason = 400, "DuplicateHeaders"
            elif not token:
                status, reason = 400, "MissingDeviceToken"
            elif not TOKEN_RE.match(token) or len(token) % 2:
                status, reason = 400, "BadDeviceToken"
            else:
                status, reason = self.check_headers(headers, body, cert_topic)
        return self.finish(rec, status, reason, headers, [])

    def check_headers(self, headers, body, cert_topic):
        auth = headers.get("authorization")
        topic = headers.get("apns-topic")
        if cert_topic is not None and not auth:
            if topic is not None and topic != cert_topic:
                return 400, "TopicDisallowed"
        else:
            bad = self.check_jwt(auth)
            if bad:
                return bad
            if not topic:
                return 400, "MissingTopic"
            if self.args.topic and topic != self.args.topic:
                return 400, "DeviceTokenNotForTopic"
        pt = headers.get("apns-push-type")
        if pt is not None and pt not in PUSH_TYPES:
            return 400, "InvalidPushType"
        if pt == "mdm" and cert_topic is None:
            return 403, "Forbidden"
        prio = headers.get("apns-priority")
        if prio is not None and prio not in ("1", "5", "10"):
            return 400, "BadPriority"
        exp = headers.get("apns-expiration")
        if exp is not None and not re.match(r"^[0-9]{1,12}$", exp):
            return 400, "BadExpirationDate"
        mid = headers.get("apns-id")
        if mid is not None and not UUID_RE.match(mid):
            return 400, "BadMessageId"
        cid = headers.get("apns-collapse-id")
        if cid is not None and len(cid.encode()) > 64:
            return 400, "BadCollapseId"
        if not body:
            return 400, "PayloadEmpty"
        if len(body) > (MAX_PAYLOAD_VOIP if pt == "voip" else MAX_PAYLOAD):
            return 413, "PayloadTooLarge"
        try:
            obj = json.loads(body)
        except ValueError:
            return 400, "PayloadEmpty" if not body.strip() else "BadPath"
        if pt == "mdm" and not (isinstance(obj, dict) and isinstance(obj.get("mdm"), str)):
            return 400, "PayloadEmpty"
        return 200, None

    def finish(self, rec, status, reason, headers, extra):
        apns_id = headers.get("apns-id") if isinstance(headers.get("apns-id"), str) else None
        if not apns_id or not UUID_RE.match(apns_id):
            apns_id = str(uuid.uuid4())
        rhdrs = [("apns-id", apns_id)] + extra
        body = b""
        if status == 200:
            rhdrs.append(("apns-unique-id", str(uuid.uuid4())))
        else:
            err = {"reason": reason or "InternalServerError"}
            if status == 410:
                err["timestamp"] = int(self.now() * 1000)
            body = json.dumps(err).encode()
            rhdrs.append(("content-type", "application/json"))
        rec["status"] = status
        rec["reason"] = reason
        with self.lock:
            self.stats["requests"] += 1
            self.stats["by_status"][str(status)] = self.stats["by_status"].get(str(status), 0) + 1
            if len(self.received) < MAX_RECEIVED:
                self.received.append(rec)
        if status == 200 and rec.get("token") in self.wake:
            url = self.wake[rec["token"]]
            threading.Thread(target=wake, args=(url,), daemon=True).start()
        return status, rhdrs, body

    # ---- control API

    def control(self, method, path, body, on_goaway):
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return 400, {"error": "invalid JSON"}
        if path == "/_sim/received" and method == "GET":
            with self.lock:
                return 200, list(self.received)
        if path == "/_sim/stats" and method == "GET":
            s = dict(self.stats)
            s["connections_open"] = len(self.conns)
            return 200, s
        if path == "/_sim/reset" and method == "POST":
            with self.lock:
                self.reset()
            return 200, {"ok": True}
        if path == "/_sim/inject" and method == "POST":
            if not isinstance(data.get("status"), int):
                return 400, {"error": "status (integer) is required"}
            self.injects.append({"token": str(data.get("token", "*")), "status": data["status"],
                                 "reason": data.get("reason"), "count": int(data.get("count", 1)),
                                 "retry_after": data.get("retry_after")})
            return 200, {"ok": True}
        if path == "/_sim/register" and method == "POST":
            if not isinstance(data.get("token"), str) or not isinstance(data.get("wake_url"), str):
                return 400, {"error": "token and wake_url are required"}
            self.wake[data["token"]] = data["wake_url"]
            return 200, {"ok": True}
        if path == "/_sim/goaway" and method == "POST":
            self.stats["goaways"] += 1
            on_goaway()
            return 200, {"ok": True}
        return 404, {"error": "no such control endpoint"}


def wake(url):
    try:
        req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()
    except Exception:  # best effort
        pass


def cert_topic_of(ssl_obj):
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj else None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    uids = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    return uids[0].value if uids else ""


class H2Conn:
    def __init__(self, sim, reader, writer, conn_id, cert_topic):
        self.sim, self.reader, self.writer, self.id = sim, reader, writer, conn_id
        self.cert_topic = cert_topic
        cfg = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=cfg)
        self.streams = {}
        self.closing = False
        self.last_stream = 0

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.writer.write(data)

    def goaway(self):
        if self.closing:
            return
        self.closing = True
        try:
            self.conn.close_connection(error_code=0, last_stream_id=self.last_stream)
            self.flush()
        except Exception:
            pass
        asyncio.get_event_loop().call_later(0.2, self.writer.close)

    def goaway_all(self):
        for c in list(self.sim.conns):
            c.goaway()

    async def run(self):
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000})
        self.flush()
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.flush()
                return
            for ev in events:
                if isinstance(ev, h2.events.RequestReceived):
                    hdrs = {}
                    for k, v in ev.headers:
                        if k in hdrs:
                            hdrs[k] = [hdrs[k], v] if not isinstance(hdrs[k], list) else hdrs[k] + [v]
                        else:
                            hdrs[k] = v
                    self.streams[ev.stream_id] = [hdrs, bytearray()]
                    self.last_stream = max(self.last_stream, ev.stream_id)
                    if ev.stream_ended:
                        await self.request(ev.stream_id)
                elif isinstance(ev, h2.events.DataReceived):
                    if ev.stream_id in self.streams:
                        self.streams[ev.stream_id][1] += ev.data
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    await self.request(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    self.streams.pop(ev.stream_id, None)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.flush()
                    return
            self.flush()
            await self.writer.drain()

    async def request(self, sid):
        hdrs, body = self.streams.pop(sid, (None, None))
        if hdrs is None:
            return
        method = hdrs.get(":method", "")
        path = hdrs.get(":path", "")
        if isinstance(path, str) and path.startswith("/_sim/"):
            status, obj = self.sim.control(method, path, bytes(body), self.goaway_all)
            out = json.dumps(obj).encode()
            self.respond(sid, status, [("content-type", "application/json")], out)
            return
        if self.sim.args.delay_ms:
            await asyncio.sleep(self.sim.args.delay_ms / 1000)
        plain = {k: v for k, v in hdrs.items() if not k.startswith(":")}
        status, rhdrs, out = self.sim.handle_push(method, path, plain, bytes(body), self.cert_topic, self.id)
        self.respond(sid, status, rhdrs, out)

    def respond(self, sid, status, rhdrs, out):
        try:
            h = [(":status", str(status)), ("content-length", str(len(out)))] + rhdrs
            self.conn.send_headers(sid, h, end_stream=not out)
            if out:
                self.conn.send_data(sid, out, end_stream=True)
            self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            pass


async def http1(sim, reader, writer):
    """Minimal HTTP/1.1 for the control API (tests use http.client); APNs itself is HTTP/2 only."""
    line = await reader.readline()
    parts = line.decode("latin-1").split()
    if len(parts) < 2:
        return
    method, path = parts[0], parts[1]
    length = 0
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    body = await reader.readexactly(length) if length else b""
    if path.startswith("/_sim/"):
        status, obj = sim.control(method, path, body, lambda: [c.goaway() for c in list(sim.conns)])
    else:
        status, obj = 505, {"reason": "APNs requires HTTP/2"}
    out = json.dumps(obj).encode()
    writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 % (status, len(out)) + out)
    await writer.drain()


async def main_async(args):
    sim = Sim(args)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # control clients come without one; pushes without one are refused
    counter = [0]

    async def on_conn(reader, writer):
        counter[0] += 1
        cid = counter[0]
        sim.stats["connections_total"] += 1
        ssl_obj = writer.get_extra_info("ssl_object")
        try:
            if ssl_obj and ssl_obj.selected_alpn_protocol() == "h2":
                c = H2Conn(sim, reader, writer, cid, cert_topic_of(ssl_obj))
                sim.conns.add(c)
                try:
                    await c.run()
                finally:
                    sim.conns.discard(c)
            else:
                await http1(sim, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    server = await asyncio.start_server(on_conn, "127.0.0.1", args.port, ssl=ctx, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)
        with open(os.path.join(args.state_dir, "port"), "w") as f:
            f.write(str(port))
    print("READY port=%d" % port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    await stop.wait()
    server.close()
    for c in list(sim.conns):
        c.writer.close()


def main():
    ap = argparse.ArgumentParser(description="APNs simulator (HTTP/2 over TLS)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True, help="server certificate (PEM)")
    ap.add_argument("--key", required=True, help="server key (PEM)")
    ap.add_argument("--client-ca", help="CA of client certificates (certificate auth)")
    ap.add_argument("--jwt-public-key", action="append",
                    help="public (or private) key (PEM) that checks provider tokens; may be repeated")
    ap.add_argument("--key-id", help="expected JWT kid")
    ap.add_argument("--team-id", help="expected JWT iss")
    ap.add_argument("--topic", help="the only topic token auth may push to")
    ap.add_argument("--state-dir")
    ap.add_argument("--clock-offset", type=float, default=0.0, help="seconds added to the simulator's clock")
    ap.add_argument("--delay-ms", type=int, default=0, help="delay before answering each push")
    args = ap.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
