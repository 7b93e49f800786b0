"""The push_apns plugin against tests/sims/apns_sim.py (HTTP/2 over TLS): token auth (JWT checked by the
simulator), request headers and bodies, every error path (410/400 BadDeviceToken -> token_invalid, 429 and 5xx
retried with backoff, retries exhausted, non-retryable reasons never retried, 403 ExpiredProviderToken refreshed
once and retried when the push used an older token, not retried for a fresh one), one multiplexed connection (or N
when configured), GOAWAY and a killed/restarted simulator, stopping with pushes in flight, simulator wake-ups,
certificate auth (MDM body, topic from the certificate's UID, client certificate required), certificate rotation
(same topic kept, another topic refused unless forced or allow_topic_change), expiry and refused credentials in
/healthz, a missing or bad key file as a config error, and no secret in the log. Pushes are triggered with the
plugin's admin route POST /api/v1/plugins/push_apns/send."""

import datetime
import json
import os
import re
import signal
import ssl
import subprocess
import threading
import time
import http.client
from pathlib import Path

import pytest

from bwserver import free_port

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "tests" / "sims" / "apns_sim.py"
BASE = "/api/v1/plugins/push_apns/"
KID = "KEY1234567"
TEAM = "TEAM123456"
TOPIC = "com.example.bulwark"
TOKEN = "a1" * 32
MAGIC = "5D7F7A4B-2C1E-4B3A-9F0E-1A2B3C4D5E6F"


# ---- certificates and keys

def _write_key(path, key, pkcs8=True):
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    os.chmod(path, 0o600)


def _cert(subject_attrs, key, issuer_name, issuer_key, days=365, not_before_days=-1, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(x509.Name(subject_attrs)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now + datetime.timedelta(days=not_before_days))
         .not_valid_after(now + datetime.timedelta(days=days)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if san:
        b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


class Pki:
    """A CA, the simulator's server certificate and helpers for push certificates."""

    def __init__(self, d):
        import ipaddress
        self.dir = Path(d)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apns-sim test CA")])
        self.ca_cert = _cert(self.ca_name, self.ca_key, self.ca_name, self.ca_key, days=3650, ca=True)
        self.ca = self.dir / "ca.pem"
        self.ca.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))
        skey = ec.generate_private_key(ec.SECP256R1())
        scert = _cert([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")], skey, self.ca_name, self.ca_key,
                      san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
        self.server_cert = self.dir / "server.pem"
        self.server_key = self.dir / "server.key"
        self.server_cert.write_bytes(scert.public_bytes(serialization.Encoding.PEM))
        _write_key(self.server_key, skey)
        # Token auth: the team's .p8 key.
        self.p8_key = ec.generate_private_key(ec.SECP256R1())
        self.p8 = self.dir / ("AuthKey_%s.p8" % KID)
        _write_key(self.p8, self.p8_key)
        self.p8_pub = self.dir / "AuthKey.pub"
        self.p8_pub.write_bytes(self.p8_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def push_cert(self, name, topic, days=365, not_before_days=-1):
        """A push certificate (subject UID = topic) and its key, written as name.pem / name.key."""
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.USER_ID, topic),
                 x509.NameAttribute(NameOID.COMMON_NAME, "APSP:" + topic)]
        cert = _cert(attrs, key, self.ca_name, self.ca_key, days=days, not_before_days=not_before_days)
        cp, kp = self.dir / (name + ".pem"), self.dir / (name + ".key")
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(kp, key, pkcs8=False)
        return cp, kp


# ---- the simulator

class ApnsSim:
    def __init__(self, pki, workdir, port=0, client_ca=False, jwt_key=None, extra=()):
        self.pki, self.workdir, self.port = pki, Path(workdir), port
        self.client_ca, self.jwt_key, self.extra = client_ca, jwt_key, list(extra)
        self.proc = None
        self.log = self.workdir / "apns_sim.log"

    def start(self):
        # /usr/bin/python3: the Debian packages python3-h2 and python3-cryptography live there.
        args = ["/usr/bin/python3", str(SIM), "--port", str(self.port), "--cert", str(self.pki.server_cert),
                "--key", str(self.pki.server_key), "--state-dir", str(self.workdir / "sim-state")]
        if self.client_ca:
            args += ["--client-ca", str(self.pki.ca)]
        if self.jwt_key:
            for k in (self.jwt_key if isinstance(self.jwt_key, list) else [self.jwt_key]):
                args += ["--jwt-public-key", str(k)]
            args += ["--key-id", KID, "--team-id", TEAM, "--topic", TOPIC]
        args += self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(self.log, "ab"),
                                     stdin=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"READY port=(\d+)", line or "")
        if not m:
            self.stop()
            raise AssertionError("apns_sim did not start: %r\n%s" % (line, self.log.read_text()))
        self.port = int(m.group(1))
        return self

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def call(self, method, path, obj=None):
        ctx = ssl.create_default_context(cafile=str(self.pki.ca))
        ctx.set_alpn_protocols(["http/1.1"])
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=10)
        try:
            body = json.dumps(obj).encode() if obj is not None else None
            c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
            r = c.getresponse()
            data = r.read()
            assert r.status == 200, (r.status, data)
            return json.loads(data)
        finally:
            c.close()

    def received(self):
        return self.call("GET", "/_sim/received")

    def stats(self):
        return self.call("GET", "/_sim/stats")

    def inject(self, token, status, reason=None, count=1, retry_after=None):
        obj = {"token": token, "status": status, "count": count}
        if reason:
            obj["reason"] = reason
        if retry_after is not None:
            obj["retry_after"] = retry_after
        self.call("POST", "/_sim/inject", obj)


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def sims(tmp_path):
    started = []

    def make(pki, **kw):
        s = ApnsSim(pki, tmp_path, **kw).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


def token_settings(pki, sim, **extra):
    s = {"endpoint": sim.url, "ca_file": str(pki.ca), "key_file": str(pki.p8), "key_id": KID, "team_id": TEAM,
         "topic": TOPIC, "backoff": "50ms", "backoff_max": "400ms", "max_retries": 3, "timeout": "5s"}
    s.update(extra)
    return s


def cert_settings(pki, sim, cert, key, **extra):
    s = {"endpoint": sim.url, "ca_file": str(pki.ca), "cert_file": str(cert), "key_file": str(key),
         "backoff": "50ms", "backoff_max": "400ms", "max_retries": 3, "timeout": "5s"}
    s.update(extra)
    return s


def start_server(servers, settings, required=True):
    plugin = ("push_apns", {"required": True}) if required else "push_apns"
    return servers.start(plugins=[plugin], settings={"push_apns": settings, "log": {"level": "debug"}})


def send(srv, tok, token=TOKEN, **kw):
    body = {"token": token}
    body.update(kw)
    r = srv.api("POST", BASE + "send", json=body, token=tok, timeout=60)
    assert r.status == 200, r
    return r.body


def plugin_health(srv, pred, timeout=6):
    """The plugin's /healthz entry once pred(entry) holds (/healthz is refreshed every second)."""
    deadline = time.time() + timeout
    while True:
        p = srv.plugin("push_apns")
        if pred(p) or time.time() > deadline:
            return p
        time.sleep(0.2)


def metric(srv, text_re):
    r = srv.api("GET", "/metrics")
    text = r.body.decode() if isinstance(r.body, bytes) else r.body
    m = re.search(text_re, text, re.M)
    return float(m.group(1)) if m else None


# ---- token auth

def test_token_auth_headers_body_and_one_connection(servers, pki, sims):
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = start_server(servers, token_settings(pki, sim))
    tok = srv.login()
    out = send(srv, tok)
    assert out["outcome"] == "sent" and out["status"] == 200 and out["attempts"] == 1, out
    assert re.match(r"^[0-9a-f-]{36}$", out["id"]) and out["reason"] is None
    rec = sim.received()
    assert len(rec) == 1
    r = rec[0]
    assert r["path"] == "/3/device/" + TOKEN and r["method"] == "POST" and r["status"] == 200
    h = r["headers"]
    assert h["authorization"].startswith("bearer ")
    assert h["apns-topic"] == TOPIC
    assert h["apns-push-type"] == "background"
    assert h["apns-priority"] == "5"
    assert h["apns-id"] == out["id"]
    assert h["apns-collapse-id"] == "bulwark-wake"
    assert int(h["apns-expiration"]) > time.time() + 3600
    body = json.loads(r["body"])
    assert body["aps"] == {"content-available": 1} and body["bulwark"]["reason"] == "test"
    # The JWT: ES256 with kid, iss and a fresh iat (the simulator verified the signature to answer 200).
    import base64
    parts = h["authorization"][7:].split(".")
    hdr = json.loads(base64.urlsafe_b64decode(parts[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=="))
    assert hdr == {"alg": "ES256", "kid": KID}
    assert claims["iss"] == TEAM and abs(claims["iat"] - time.time()) < 60
    # Many pushes at once: one connection, one provider token reused.
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(send(srv, tok, token="%064x" % (i + 1))))
               for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 30 and all(x["outcome"] == "sent" for x in results)
    st = sim.stats()
    assert st["requests"] == 31
    h2_conns = {x["conn"] for x in sim.received()}
    assert len(h2_conns) == 1, h2_conns
    assert st["jwt_seen"] == 1 and st["jwt_changes"] == 0
    assert metric(srv, r"^bulwark_push_apns_sent_total (\S+)") == 31
    assert metric(srv, r"^bulwark_push_apns_latency_seconds_count (\S+)") == 31
    # Status route.
    r = srv.api("GET", BASE + "status", token=tok)
    assert r.status == 200 and r.body["auth"] == "token" and r.body["topic"] == TOPIC
    health = srv.plugin("push_apns")
    assert "token auth" in health["detail"] and not health["degraded"]


def test_error_paths(servers, pki, sims):
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = start_server(servers, token_settings(pki, sim))
    tok = srv.login()
    t = iter("%064x" % (0x1000 + i) for i in range(1000))

    def case(status, reason, count=1, retry_after=None):
        token = next(t)
        sim.inject(token, status, reason, count=count, retry_after=retry_after)
        return send(srv, tok, token=token)

    # Token gone for good.
    for status, reason in ((410, "Unregistered"), (410, "ExpiredToken"), (400, "BadDeviceToken")):
        out = case(status, reason)
        assert out["outcome"] == "token_invalid" and out["reason"] == reason and out["status"] == status
        assert out["attempts"] == 1, out
    # Retried with backoff, then sent.
    for status, reason in ((429, "TooManyRequests"), (500, "InternalServerError"), (503, "ServiceUnavailable"),
                           (503, "Shutdown"), (502, None), (400, "IdleTimeout")):
        out = case(status, reason, count=2)
        assert out["outcome"] == "sent" and out["attempts"] == 3 and out["status"] == 200, (status, reason, out)
    # Retry-After is honoured (capped by backoff_max).
    t0 = time.monotonic()
    out = case(429, "TooManyRequests", count=1, retry_after=1)
    assert out["outcome"] == "sent" and out["attempts"] == 2
    assert time.monotonic() - t0 >= 0.35  # Retry-After 1 s, capped at backoff_max (400 ms)
    # Retries exhausted: failed with the last reason (max_retries 3 -> 4 attempts).
    out = case(503, "ServiceUnavailable", count=10)
    assert out == {"outcome": "failed", "reason": "ServiceUnavailable", "status": 503, "attempts": 4,
                   "id": out["id"]}, out
    # Never retried.
    for status, reason in ((400, "BadCollapseId"), (400, "BadExpirationDate"), (400, "BadMessageId"),
                           (400, "BadPriority"), (400, "BadTopic"), (400, "DeviceTokenNotForTopic"),
                           (400, "DuplicateHeaders"), (400, "InvalidPushType"), (400, "MissingDeviceToken"),
                           (400, "MissingTopic"), (400, "PayloadEmpty"), (400, "TopicDisallowed"),
                           (403, "BadCertificate"), (403, "BadCertificateEnvironment"), (403, "Forbidden"),
                           (403, "InvalidProviderToken"), (403, "MissingProviderToken"),
                           (403, "UnrelatedKeyIdInToken"), (403, "BadEnvironmentKeyInToken"), (404, "BadPath"),
                           (405, "MethodNotAllowed"), (413, "PayloadTooLarge")):
        out = case(status, reason, count=5)
        assert out["outcome"] == "failed" and out["reason"] == reason and out["attempts"] == 1, (reason, out)
    # 403 ExpiredProviderToken on a token signed a moment ago: a new one may not be signed before 20 minutes
    # (Apple's limit), so it is not retried and the clock warning is logged.
    out = case(403, "ExpiredProviderToken", count=5)
    assert out["outcome"] == "failed" and out["reason"] == "ExpiredProviderToken" and out["attempts"] == 1
    srv.wait_log(r"check this host's clock")
    assert sim.stats()["jwt_changes"] == 0
    # Bad input to the route.
    r = srv.api("POST", BASE + "send", json={"token": "xyz"}, token=tok)
    assert r.status == 400
    r = srv.api("POST", BASE + "send", json={"token": TOKEN, "push_magic": "bad magic"}, token=tok)
    assert r.status == 400
    # The credential refusals above (InvalidProviderToken...) showed in /healthz; a sent push clears that.
    assert plugin_health(srv, lambda p: p["degraded"])["degraded"]
    assert send(srv, tok, token=next(t))["outcome"] == "sent"
    assert not plugin_health(srv, lambda p: not p["degraded"])["degraded"]
    # Metrics: failures by reason, retries.
    assert metric(srv, r'^bulwark_push_apns_failed_total\{reason="Unregistered"\} (\S+)') == 1
    assert metric(srv, r'^bulwark_push_apns_failed_total\{reason="BadDeviceToken"\} (\S+)') == 1
    assert metric(srv, r'^bulwark_push_apns_retries_total (\S+)') >= 6 * 2 + 1 + 3
    # The simulator saw exactly the attempts reported.
    assert sim.stats()["requests"] == 3 + 6 * 3 + 2 + 4 + 22 + 1 + 1


def test_wrong_signing_key_and_expired_clock(servers, pki, sims, tmp_path):
    other = ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "other.pub"
    pub.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
    sim = sims(pki, jwt_key=pub)
    srv = start_server(servers, token_settings(pki, sim))
    tok = srv.login()
    out = send(srv, tok)
    assert out["outcome"] == "failed" and out["reason"] == "InvalidProviderToken" and out["attempts"] == 1
    h = plugin_health(srv, lambda p: p["degraded"])
    assert h["degraded"] and "refuses the credentials: InvalidProviderToken" in h["detail"], h
    # A simulator whose clock is 2 h ahead sees every token older than 1 h: ExpiredProviderToken.
    sim2 = sims(pki, jwt_key=pki.p8_pub, extra=["--clock-offset", "7200"])
    srv2 = start_server(servers, token_settings(pki, sim2))
    out = send(srv2, srv2.login())
    assert out["outcome"] == "failed" and out["reason"] == "ExpiredProviderToken"


def test_expired_provider_token_refreshes_once_and_retries(servers, pki, sims, tmp_path):
    """403 ExpiredProviderToken for a push sent with a token that is no longer the current one: retried once with
    a newly signed token. Here the key is rotated (both keys trusted by the simulator) while the push is on the
    wire; the 20-minute floor and the 50-minute refresh are timed in tests/unit/apns_test.c."""
    new_key = ec.generate_private_key(ec.SECP256R1())
    new_pub = tmp_path / "new.pub"
    new_pub.write_bytes(new_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    sim = sims(pki, jwt_key=[pki.p8_pub, new_pub], extra=["--delay-ms", "1500"])
    srv = start_server(servers, token_settings(pki, sim, reload_check=0))
    tok = srv.login()
    sim.inject(TOKEN, 403, "ExpiredProviderToken")
    result = {}
    th = threading.Thread(target=lambda: result.update(send(srv, tok)))
    th.start()
    time.sleep(0.5)  # the push is on the wire with a token of the old key
    _write_key(pki.p8, new_key)
    r = srv.api("POST", BASE + "reload", token=tok)
    assert r.status == 200 and r.body["changed"] and r.body["auth"] == "token", r
    th.join(30)
    assert result.get("outcome") == "sent" and result["attempts"] == 2, result
    rec = sim.received()
    assert [x["status"] for x in rec] == [403, 200], rec
    assert rec[0]["reason"] == "ExpiredProviderToken"
    assert rec[0]["headers"]["authorization"] != rec[1]["headers"]["authorization"]
    srv.wait_log(r"provider token expired: signing a new one")
    # Same again, but APNs also refuses the new token: the second ExpiredProviderToken is final (2 attempts).
    sim.inject(TOKEN, 403, "ExpiredProviderToken", count=2)
    result.clear()
    th = threading.Thread(target=lambda: result.update(send(srv, tok)))
    th.start()
    time.sleep(0.5)
    _write_key(pki.p8, pki.p8_key)
    assert srv.api("POST", BASE + "reload", token=tok).status == 200
    th.join(30)
    assert result.get("outcome") == "failed" and result["reason"] == "ExpiredProviderToken", result
    assert result["attempts"] == 2, result
    # A fresh token called expired (no newer one, younger than 20 minutes): not retried, clock warning.
    sim.inject(TOKEN, 403, "ExpiredProviderToken")
    out = send(srv, tok)
    assert out["outcome"] == "failed" and out["attempts"] == 1, out
    srv.wait_log(r"check this host's clock")


def test_goaway_and_restarted_simulator(servers, pki, sims):
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = start_server(servers, token_settings(pki, sim, max_retries=8, backoff="200ms", backoff_max="1s"))
    tok = srv.login()
    assert send(srv, tok)["outcome"] == "sent"
    sim.call("POST", "/_sim/goaway")
    time.sleep(0.5)
    assert send(srv, tok)["outcome"] == "sent"
    conns = [r["conn"] for r in sim.received()]
    assert len(set(conns)) == 2, conns  # a new connection after GOAWAY
    # Kill the simulator; a push waits (retries with backoff) until it is back on the same port.
    port = sim.port
    sim.stop(signal.SIGKILL)
    result = {}
    th = threading.Thread(target=lambda: result.update(send(srv, tok)))
    th.start()
    time.sleep(1.5)
    sim2 = sims(pki, port=port, jwt_key=pki.p8_pub)
    th.join(60)
    assert result.get("outcome") == "sent" and result["attempts"] > 1, result
    srv.wait_log(r"no answer from APNs .*reconnecting in \d+ ms")
    # Later pushes share the new connection.
    for _ in range(5):
        assert send(srv, tok)["outcome"] == "sent"
    assert len({r["conn"] for r in sim2.received()}) == 1
    assert metric(srv, r"^bulwark_push_apns_retries_total (\S+)") >= 1
    # Down for longer than the retries last: failed with reason "transport".
    sim2.stop(signal.SIGKILL)
    out = send(srv, tok)
    assert out["outcome"] == "failed" and out["reason"] == "transport" and out["status"] == 0
    assert out["attempts"] == 9


# ---- certificate auth

def test_certificate_auth_mdm(servers, pki, sims):
    topic = "com.apple.mgmt.External.11111111-2222-3333-4444-555555555555"
    cert, key = pki.push_cert("push", topic, days=200)
    sim = sims(pki, client_ca=True)
    srv = start_server(servers, cert_settings(pki, sim, cert, key))
    tok = srv.login()
    out = send(srv, tok, push_magic=MAGIC)
    assert out["outcome"] == "sent", out
    r = sim.received()[-1]
    assert r["headers"]["apns-topic"] == topic
    assert r["headers"]["apns-push-type"] == "mdm"
    assert r["headers"]["apns-priority"] == "10"
    assert "authorization" not in r["headers"]
    assert "apns-collapse-id" not in r["headers"]
    assert json.loads(r["body"]) == {"mdm": MAGIC}
    health = srv.plugin("push_apns")
    assert topic in health["detail"] and "expires" in health["detail"] and not health["degraded"]
    r = srv.api("GET", BASE + "status", token=tok)
    assert r.body["auth"] == "certificate" and r.body["topic"] == topic and r.body["expires_at"]


def test_certificate_required_by_simulator(servers, pki, sims, tmp_path):
    # A client certificate from another CA is refused in the TLS handshake. The simulator (Python's ssl)
    # resets the connection without an alert, which looks like a dropped connection: failed after the retries.
    other = Pki(tmp_path / "other")
    cert, key = other.push_cert("push", "com.apple.mgmt.External.x")
    sim = sims(pki, client_ca=True)
    srv = start_server(servers, cert_settings(pki, sim, cert, key, max_retries=1))
    out = send(srv, srv.login(), push_magic=MAGIC)
    assert out["outcome"] == "failed" and out["status"] == 0 and out["reason"] == "transport", out


def test_untrusted_server_certificate_fails_at_once(servers, pki, sims, tmp_path):
    # The endpoint's certificate is not signed by the configured CA: no retry, a clear log line.
    other = Pki(tmp_path / "other")
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = start_server(servers, token_settings(pki, sim, ca_file=str(other.ca), max_retries=3))
    out = send(srv, srv.login())
    assert out["outcome"] == "failed" and out["attempts"] == 1, out
    assert re.search(r"APNs cannot be used \(not retried\): .*certificate", srv.log_text()), srv.log_text()[-2000:]


def test_certificate_rotation(servers, pki, sims):
    topic = "com.apple.mgmt.External.aaaaaaaa-0000-0000-0000-000000000001"
    cert_path, key_path = pki.push_cert("push", topic)
    sim = sims(pki, client_ca=True)
    srv = start_server(servers, cert_settings(pki, sim, cert_path, key_path, reload_check=0))
    tok = srv.login()
    assert send(srv, tok, push_magic=MAGIC)["outcome"] == "sent"
    # A renewed certificate for the same topic (new key): accepted, pushes use it on a new connection.
    c2, k2 = pki.push_cert("renewed", topic, days=400)
    cert_path.write_bytes(c2.read_bytes())
    key_path.write_bytes(k2.read_bytes())
    r = srv.api("POST", BASE + "reload", token=tok)
    assert r.status == 200 and r.body["changed"] and r.body["topic"] == topic, r
    assert send(srv, tok, push_magic=MAGIC)["outcome"] == "sent"
    conns = [x["conn"] for x in sim.received()]
    assert conns[0] != conns[1], conns
    # A certificate for another topic is refused, the running one stays.
    other = "com.apple.mgmt.External.bbbbbbbb-0000-0000-0000-000000000002"
    c3, k3 = pki.push_cert("other", other)
    cert_path.write_bytes(c3.read_bytes())
    key_path.write_bytes(k3.read_bytes())
    r = srv.api("POST", BASE + "reload", token=tok)
    assert r.status == 409 and r.error_code() == "topic_change", r
    assert topic in r.body["error"]["message"] and other in r.body["error"]["message"]
    assert "allow_topic_change" in r.body["error"]["message"]
    h = plugin_health(srv, lambda p: p["degraded"])
    assert h["degraded"] and "refused" in h["detail"], h
    # Still pushing with the renewed certificate (its topic).
    cert_path.write_bytes(c2.read_bytes())
    key_path.write_bytes(k2.read_bytes())
    assert srv.api("POST", BASE + "reload", token=tok).status == 200
    assert not plugin_health(srv, lambda p: not p["degraded"])["degraded"]
    cert_path.write_bytes(c3.read_bytes())
    key_path.write_bytes(k3.read_bytes())
    # Forced: accepted, the new topic is remembered.
    r = srv.api("POST", BASE + "reload", json={"force": True}, token=tok)
    assert r.status == 200 and r.body["topic"] == other, r
    assert send(srv, tok, push_magic=MAGIC)["outcome"] == "sent"
    assert sim.received()[-1]["headers"]["apns-topic"] == other
    # A restart with a certificate for a third topic fails at init, naming both topics...
    srv.stop()
    third = "com.apple.mgmt.External.cccccccc-0000-0000-0000-000000000003"
    c4, k4 = pki.push_cert("third", third)
    cert_path.write_bytes(c4.read_bytes())
    key_path.write_bytes(k4.read_bytes())
    srv.start(wait=False)
    assert srv.wait_exit(30) == 1
    srv.assert_clean()
    text = srv.log_text()
    assert "push_apns" in text and third in text and other in text and "allow_topic_change" in text
    # ...unless allow_topic_change is set.
    srv.update_settings({"push_apns": {"allow_topic_change": True}})
    srv.write_config()
    srv.start()
    assert third in plugin_health(srv, lambda p: third in p["detail"])["detail"]
    srv.wait_log(r"topic changes from")


def test_certificate_reload_by_mtime(servers, pki, sims):
    topic = "com.apple.mgmt.External.dddddddd-0000-0000-0000-000000000004"
    cert_path, key_path = pki.push_cert("push", topic, days=100)
    sim = sims(pki, client_ca=True)
    srv = start_server(servers, cert_settings(pki, sim, cert_path, key_path, reload_check="1s"))
    before = srv.plugin("push_apns")["detail"]
    c2, k2 = pki.push_cert("renewed", topic, days=500)
    key_path.write_bytes(k2.read_bytes())
    cert_path.write_bytes(c2.read_bytes())
    srv.wait_log(r"certificate loaded: topic %s" % re.escape(topic), timeout=15)
    deadline = time.time() + 10
    while time.time() < deadline and srv.plugin("push_apns")["detail"] == before:
        time.sleep(0.3)
    assert "in 499 days" in srv.plugin("push_apns")["detail"] or "in 500 days" in srv.plugin("push_apns")["detail"]
    assert send(srv, srv.login(), push_magic=MAGIC)["outcome"] == "sent"


def test_certificate_expiry_in_healthz(servers, pki, sims):
    sim = sims(pki, client_ca=True)
    topic = "com.apple.mgmt.External.eeeeeeee-0000-0000-0000-000000000005"
    cert, key = pki.push_cert("soon", topic, days=5)
    srv = start_server(servers, cert_settings(pki, sim, cert, key))
    h = srv.plugin("push_apns")
    assert not h["degraded"] and "renew" in h["detail"] and ("in 4 days" in h["detail"] or "in 5 days" in h["detail"])
    srv.wait_log(r"expires .*in \d days \(less than 7\)")
    srv.stop()
    cert2, key2 = pki.push_cert("expired", topic, days=-1, not_before_days=-30)
    srv.update_settings({"push_apns": {"cert_file": str(cert2), "key_file": str(key2)}})
    srv.write_config()
    srv.start()
    h = plugin_health(srv, lambda p: p["degraded"])
    assert h["degraded"] and "EXPIRED" in h["detail"], h
    assert srv.health()["status"] == "degraded"


# ---- configuration errors and secrets

def test_missing_or_bad_key_file_is_a_config_error(servers, pki, sims, tmp_path):
    sim = sims(pki, jwt_key=pki.p8_pub)
    missing = tmp_path / "missing.p8"
    srv = start_server(servers, token_settings(pki, sim, key_file=str(missing)), required=False)
    p = srv.plugin("push_apns")
    assert p["state"] == "failed" and "key_file" in p["error"] and str(missing) in p["error"], p
    bad = tmp_path / "bad.p8"
    bad.write_text("this is not a key\n")
    srv2 = start_server(servers, token_settings(pki, sim, key_file=str(bad)), required=False)
    p = srv2.plugin("push_apns")
    assert p["state"] == "failed" and "key_file" in p["error"] and "this is not" not in p["error"], p
    # Certificate auth with token settings as well: refused, naming them.
    cert, key = pki.push_cert("push", "com.apple.mgmt.External.x")
    srv5 = start_server(servers, cert_settings(pki, sim, cert, key, topic="com.example.other"), required=False)
    assert "topic" in srv5.plugin("push_apns")["error"]
    # Neither auth mode configured.
    srv3 = start_server(servers, {"endpoint": sim.url}, required=False)
    assert "cert_file" in srv3.plugin("push_apns")["error"]
    # Required: startup fails and says why.
    srv4 = servers.create(plugins=[("push_apns", {"required": True})],
                          settings={"push_apns": token_settings(pki, sim, key_file=str(missing))})
    srv4.start(wait=False)
    assert srv4.wait_exit(30) == 1
    srv4.assert_clean()
    assert "key_file" in srv4.log_text()


def test_no_secrets_in_log(servers, pki, sims):
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = start_server(servers, token_settings(pki, sim))
    tok = srv.login()
    send(srv, tok)
    sim.inject(TOKEN, 410, "Unregistered")
    send(srv, tok)
    sim.inject(TOKEN, 503, "ServiceUnavailable", count=10)
    send(srv, tok)
    sim.stop(signal.SIGKILL)
    send(srv, tok)
    srv.stop()
    text = srv.log_text()
    jwts = {r["headers"]["authorization"][7:] for r in ApnsSimReceived.cache}
    assert jwts
    for j in jwts:
        assert j not in text
        for part in j.split("."):
            assert part not in text
    assert TOKEN not in text
    key_lines = [ln for ln in pki.p8.read_text().splitlines() if ln and not ln.startswith("-----")]
    for ln in key_lines:
        assert ln not in text


class ApnsSimReceived:
    cache = []


@pytest.fixture(autouse=True)
def _record_received(request, monkeypatch):
    """Keeps the simulator's received list of the current test (test_no_secrets_in_log reads it after the
    simulator was killed)."""
    ApnsSimReceived.cache = []
    orig = ApnsSim.received

    def received(self):
        r = orig(self)
        ApnsSimReceived.cache = r
        return r

    orig_stop = ApnsSim.stop

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            try:
                ApnsSimReceived.cache = orig(self)
            except Exception:
                pass
        orig_stop(self, sig)

    monkeypatch.setattr(ApnsSim, "received", received)
    monkeypatch.setattr(ApnsSim, "stop", stop)


def test_simulator_wakes_registered_device(servers, pki, sims):
    """POST /_sim/register: an accepted push for the token makes the simulator POST {} to the wake URL."""
    import http.server
    got = []

    class Wake(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append((self.path, self.rfile.read(int(self.headers.get("Content-Length", 0)))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", free_port()), Wake)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    try:
        sim = sims(pki, jwt_key=pki.p8_pub)
        sim.call("POST", "/_sim/register", {"token": TOKEN,
                                            "wake_url": "http://127.0.0.1:%d/wake" % httpd.server_port})
        srv = start_server(servers, token_settings(pki, sim))
        tok = srv.login()
        sim.inject(TOKEN, 410, "Unregistered")
        assert send(srv, tok)["outcome"] == "token_invalid"
        time.sleep(0.5)
        assert got == []  # refused pushes wake nobody
        assert send(srv, tok)["outcome"] == "sent"
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            time.sleep(0.1)
        assert got == [("/wake", b"{}")]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_several_connections_when_configured(servers, pki, sims):
    """connections = 3: pushes are spread round robin over three HTTP/2 connections, each reused."""
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = start_server(servers, token_settings(pki, sim, connections=3))
    tok = srv.login()
    for i in range(12):
        assert send(srv, tok, token="%064x" % (0x2000 + i))["outcome"] == "sent"
    conns = [r["conn"] for r in sim.received()]
    assert len(set(conns)) == 3, conns
    assert all(conns.count(c) == 4 for c in set(conns)), conns


def test_stop_with_pushes_in_flight(servers, pki, sims):
    """SIGTERM while pushes are on the wire (the simulator holds its answers) and queued: every push gets an
    outcome, bulwarkd exits 0 without sanitizer reports."""
    sim = sims(pki, jwt_key=pki.p8_pub, extra=["--delay-ms", "1500"])
    srv = start_server(servers, token_settings(pki, sim, max_inflight=2))
    tok = srv.login()
    results = []

    def one(i):
        try:
            r = srv.api("POST", BASE + "send", json={"token": "%064x" % (0x3000 + i)}, token=tok, timeout=30)
            results.append(r.status)
        except Exception as e:  # the server may close the connection at shutdown
            results.append(type(e).__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    srv.stop()
    for t in threads:
        t.join(30)
    assert len(results) == 6, results
