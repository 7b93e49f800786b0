"""The push_fcm plugin against tests/sims/fcm_sim.py: the OAuth2 service-account flow (the simulator checks the
RS256 assertion against the public key generated here), messages:send bodies and headers, every error path
(UNREGISTERED -> token_invalid; INVALID_ARGUMENT / SENDER_ID_MISMATCH -> failed and logged; QUOTA_EXCEEDED /
UNAVAILABLE / INTERNAL retried with backoff, Retry-After honoured, retries capped; 401 -> one new access token),
access-token refresh before expiry, token endpoint refusals (health degraded), a missing or malformed
service-account file, the simulator killed mid-request and restarted, queue limits, wake-ups, metrics, and no
key, assertion or access token in the log. Sends go through the admin route POST /api/v1/plugins/push_fcm/send."""

import datetime
import http.client
import ipaddress
import json
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bwserver import free_port

SIM = Path(__file__).resolve().parents[1] / "sims" / "fcm_sim.py"
SEND = "/api/v1/plugins/push_fcm/send"
PROJECT = "bulwark-test"
EMAIL = "pusher@bulwark-test.iam.gserviceaccount.com"


# ---- test PKI and service accounts

def _write_key(key, path):
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))


def make_tls(d):
    """A CA and a server certificate for 127.0.0.1 / localhost; returns (ca.pem, cert.pem, key.pem)."""
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fcm-sim test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, d / "key.pem")
    return d / "ca.pem", d / "cert.pem", d / "key.pem"


def make_sa(path, token_uri, key=None, email=EMAIL, project=PROJECT):
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    sa = {"type": "service_account", "project_id": project, "private_key_id": "0123456789abcdef",
          "private_key": pem, "client_email": email, "client_id": "1234567890",
          "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri}
    path.write_text(json.dumps(sa, indent=2))
    path.chmod(0o600)
    return path, pem


class Sim:
    """One fcm_sim.py process on a fixed port (so that it can be restarted on the same address)."""

    def __init__(self, workdir, tls, sa_files, expires_in=3600, http1_only=False, audience=None, projects=()):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca, self.cert, self.key = tls
        self.sa_files = list(sa_files)
        self.expires_in = expires_in
        self.http1_only = http1_only
        self.audience = audience
        self.projects = list(projects)
        self.port = free_port()
        self.proc = None
        self.ctx = ssl.create_default_context(cafile=str(self.ca))

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.port

    def start(self):
        cmd = [sys.executable if sys.executable else "/usr/bin/python3", str(SIM), "--port", str(self.port),
               "--cert", str(self.cert), "--key", str(self.key), "--state-dir", str(self.dir / "state"),
               "--expires-in", str(self.expires_in)]
        for f in self.sa_files:
            cmd += ["--service-account", str(f)]
        if self.http1_only:
            cmd.append("--http1-only")
        if self.audience:
            cmd += ["--audience", self.audience]
        for p in self.projects:
            cmd += ["--project", p]
        self.err = open(self.dir / "sim-stderr.txt", "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY port=%d" % self.port), "fcm_sim did not start: %r" % line
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self.proc.stdout.close()
            self.err.close()
        self.proc = None

    def kill(self):
        self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.err.close()
        self.proc = None

    def api(self, method, path, body=None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        assert r.status == 200, (method, path, r.status, data)
        return json.loads(data)

    def inject(self, **kw):
        return self.api("POST", "/_sim/inject", kw)

    def received(self, path=None):
        return self.api("GET", "/_sim/received" + ("?path=" + path if path else ""))

    def sends(self):
        return [r for r in self.received("/v1/") if not r.get("held")]

    def stats(self):
        return self.api("GET", "/_sim/stats")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("fcm-pki")
    return make_tls(d)


def plugin_settings(sim, sa_file, **extra):
    s = {"service_account_file": str(sa_file), "endpoint": sim.url, "ca_file": str(sim.ca), "backoff": "100ms",
         "backoff_max": "2s", "retry_max": 3, "timeout": "10s"}
    s.update(extra)
    return s


@pytest.fixture(scope="module")
def env(module_servers, pki, tmp_path_factory):
    """One simulator and one bulwarkd with push_fcm, shared by the tests that do not restart either."""
    d = tmp_path_factory.mktemp("fcm-env")
    port_holder = Sim(d / "sim", pki, [])
    token_uri = port_holder.url + "/token"
    sa_file, pem = make_sa(d / "sa.json", token_uri)
    sim = port_holder
    sim.sa_files = [sa_file]
    sim.start()
    srv = module_servers.start(plugins=["push_fcm"], settings={
        "log": {"level": "debug"}, "push_fcm": plugin_settings(sim, sa_file)})
    tok = srv.login()
    yield srv, tok, sim, pem
    sim.stop()


def send(srv, tok, token, expect=200, **kw):
    body = {"token": token}
    body.update(kw)
    r = srv.api("POST", SEND, json=body, token=tok, timeout=60)
    assert r.status == expect, r
    return r.body


def wait_plugin(srv, pred, timeout=10):
    """The push_fcm entry of /healthz once pred(entry) holds (/healthz is refreshed every second)."""
    deadline = time.monotonic() + timeout
    while True:
        p = srv.plugin("push_fcm")
        if pred(p):
            return p
        assert time.monotonic() < deadline, "push_fcm health never matched: %r" % p
        time.sleep(0.2)


def metric(srv, name, labels=""):
    text = srv.api("GET", "/metrics").raw.decode()
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else 0.0


# ---- the happy path

def test_send_ok_body_headers_and_token_reuse(env):
    srv, tok, sim, _ = env
    before = sim.stats()
    out = send(srv, tok, "tok-ok-1", reason="command", command_id="cmd-1", device_id="dev-1")
    assert out["outcome"] == "sent" and out["reason"] is None and out["status"] == 200 and out["attempts"] == 1
    assert out["id"].startswith("projects/%s/messages/" % PROJECT)
    req = [r for r in sim.sends() if json.loads(r["body"])["message"]["token"] == "tok-ok-1"][-1]
    assert req["path"] == "/v1/projects/%s/messages:send" % PROJECT
    assert req["http_version"] == "HTTP/2"  # curl negotiated h2 through ALPN
    hdrs = {k.lower(): v for k, v in req["headers"].items()}
    assert hdrs["authorization"].startswith("Bearer ya29.sim-")
    assert hdrs["content-type"].startswith("application/json")
    msg = json.loads(req["body"])
    assert msg == {"message": {"token": "tok-ok-1",
                               "data": {"reason": "command", "command_id": "cmd-1", "device_id": "dev-1"},
                               "android": {"priority": "HIGH", "ttl": "3600s"}}}
    # Normal priority and the message's own ttl.
    out = send(srv, tok, "tok-ok-2", high_priority=False, ttl=120)
    assert out["outcome"] == "sent"
    msg = json.loads([r for r in sim.sends() if "tok-ok-2" in r["body"]][-1]["body"])
    assert msg["message"]["android"] == {"priority": "NORMAL", "ttl": "120s"}
    assert msg["message"]["data"] == {"reason": "test"}
    # One access token serves both (at most one more if this is the module's first token).
    after = sim.stats()
    assert after["tokens_issued"] - before["tokens_issued"] <= 1
    tokens = [r for r in sim.received("/token")]
    assert tokens, "no token request reached the simulator"
    form = tokens[-1]["body"]
    assert form.startswith("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=")
    assert tokens[-1]["status"] == 200
    assert {k.lower(): v for k, v in tokens[-1]["headers"].items()}["content-type"] == \
        "application/x-www-form-urlencoded"
    wait_plugin(srv, lambda h: h["state"] == "running" and not h["degraded"] and
                "access token valid until" in h["detail"])


def test_route_validation(env):
    srv, tok, sim, _ = env
    n = len(sim.sends())
    for body in ({}, {"token": 5}, {"token": "has space"}, {"token": "a/b"}, {"token": "x" * 4097},
                 {"token": "ok", "ttl": -1}, {"token": "ok", "high_priority": "yes"}, {"token": "ok", "reason": 7}):
        r = srv.api("POST", SEND, json=body, token=tok)
        assert r.status == 400, (body, r)
    assert srv.api("POST", SEND, json={"token": "ok"}).status == 401
    assert len(sim.sends()) == n


# ---- error paths

def test_unregistered_is_token_invalid(env):
    srv, tok, sim, _ = env
    sim.inject(token="tok-gone", error_code="UNREGISTERED")
    before = metric(srv, "bulwark_push_fcm_failed_total", '{reason="UNREGISTERED"}')
    out = send(srv, tok, "tok-gone")
    assert out == {"outcome": "token_invalid", "reason": "UNREGISTERED", "status": 404, "attempts": 1, "id": None}
    assert metric(srv, "bulwark_push_fcm_failed_total", '{reason="UNREGISTERED"}') == before + 1


@pytest.mark.parametrize("code,status", [("INVALID_ARGUMENT", 400), ("SENDER_ID_MISMATCH", 403)])
def test_permanent_errors_failed_and_logged(env, code, status):
    srv, tok, sim, _ = env
    t = "tok-perm-" + code.lower()
    sim.inject(token=t, error_code=code, count=5)
    mark = srv.log_mark()
    out = send(srv, tok, t, device_id="dev-" + code.lower())
    assert out == {"outcome": "failed", "reason": code, "status": status, "attempts": 1, "id": None}
    srv.wait_log(r"push #\d+ to device dev-%s refused by FCM: HTTP %d %s" % (code.lower(), status, code), since=mark)
    assert len([r for r in sim.sends() if t in r["body"]]) == 1  # never retried
    sim.api("POST", "/_sim/reset")


def test_simulator_checks_the_body(env):
    """A body the plugin would never send shows what the simulator refuses (INVALID_ARGUMENT with details)."""
    _, _, sim, _ = env
    st = sim.api("GET", "/_sim/stats")
    assert "accepted" in st
    conn = http.client.HTTPSConnection("127.0.0.1", sim.port, context=sim.ctx, timeout=10)
    conn.request("POST", "/v1/projects/%s/messages:send" % PROJECT, body="{}",
                 headers={"Authorization": "Bearer nope", "Content-Type": "application/json"})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 401 and body["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize("code", ["QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"])
def test_retryable_errors_retried(env, code):
    srv, tok, sim, _ = env
    t = "tok-retry-" + code.lower()
    sim.inject(token=t, error_code=code, count=2)
    before = metric(srv, "bulwark_push_fcm_retries_total")
    out = send(srv, tok, t)
    assert out["outcome"] == "sent" and out["attempts"] == 3 and out["status"] == 200
    assert metric(srv, "bulwark_push_fcm_retries_total") >= before + 2
    statuses = [r["status"] for r in sim.sends() if t in r["body"]]
    assert statuses == [{"QUOTA_EXCEEDED": 429, "UNAVAILABLE": 503, "INTERNAL": 500}[code]] * 2 + [200]


def test_retries_capped(env):
    srv, tok, sim, _ = env
    sim.inject(token="tok-down", error_code="UNAVAILABLE", count=50)
    out = send(srv, tok, "tok-down")
    assert out == {"outcome": "failed", "reason": "UNAVAILABLE", "status": 503, "attempts": 4, "id": None}
    assert len([r for r in sim.sends() if "tok-down" in r["body"]]) == 4  # retry_max = 3
    sim.api("POST", "/_sim/reset")


def test_retry_after_honoured(env):
    srv, tok, sim, _ = env
    sim.inject(token="tok-slow", error_code="QUOTA_EXCEEDED", retry_after=2)
    out = send(srv, tok, "tok-slow")
    assert out["outcome"] == "sent" and out["attempts"] == 2
    ats = [r["at"] for r in sim.sends() if "tok-slow" in r["body"]]
    assert len(ats) == 2
    # backoff alone would wait at most 100 ms; Retry-After: 2 makes it 2 s.
    assert ats[1] - ats[0] >= 1.8, ats


def test_retry_after_capped_by_backoff_max(env):
    srv, tok, sim, _ = env
    sim.inject(token="tok-capped", error_code="UNAVAILABLE", retry_after=3600)
    t0 = time.monotonic()
    out = send(srv, tok, "tok-capped")
    assert out["outcome"] == "sent" and out["attempts"] == 2
    assert time.monotonic() - t0 < 30  # capped at backoff_max (2 s), not an hour


def test_canonical_status_without_details(env):
    """An error without an FcmError detail is classified by its canonical status."""
    srv, tok, sim, _ = env
    sim.inject(token="tok-nodetail", error_code="UNAVAILABLE", no_details=True)
    out = send(srv, tok, "tok-nodetail")
    assert out["outcome"] == "sent" and out["attempts"] == 2


def test_401_gets_one_new_access_token(env):
    srv, tok, sim, _ = env
    send(srv, tok, "tok-warm")  # a cached access token
    issued = sim.stats()["tokens_issued"]
    sim.api("POST", "/_sim/revoke")  # FCM no longer accepts it
    out = send(srv, tok, "tok-after-revoke")
    assert out["outcome"] == "sent" and out["attempts"] == 2
    assert sim.stats()["tokens_issued"] == issued + 1
    # A 401 that persists with the new token is final after one refresh.
    sim.inject(token="tok-unauth", unauthenticated=True, count=5)
    issued = sim.stats()["tokens_issued"]
    out = send(srv, tok, "tok-unauth")
    assert out == {"outcome": "failed", "reason": "UNAUTHENTICATED", "status": 401, "attempts": 2, "id": None}
    assert sim.stats()["tokens_issued"] == issued + 1
    sim.api("POST", "/_sim/reset")


def test_token_refreshed_before_expiry(env):
    """A token that lives 6 s is replaced after half its life (the 5-minute margin is capped at half), before it
    expires; until then it is reused."""
    srv, tok, sim, _ = env
    sim.api("POST", "/_sim/revoke")
    sim.inject(endpoint="token", expires_in=6)
    send(srv, tok, "tok-short-1")  # 401, then a token for 6 s
    t_obtained = time.monotonic()
    issued = sim.stats()["tokens_issued"]
    send(srv, tok, "tok-short-2")
    if time.monotonic() - t_obtained < 2.5:  # (a very slow machine may be past the refresh point already)
        assert sim.stats()["tokens_issued"] == issued  # reused
    time.sleep(max(0.0, t_obtained + 3.3 - time.monotonic()))
    out = send(srv, tok, "tok-short-3")  # after half-life: a new one, before the old one expired (no 401)
    assert out["outcome"] == "sent" and out["attempts"] == 1
    assert sim.stats()["tokens_issued"] == issued + 1
    assert [r["status"] for r in sim.sends() if "tok-short-3" in r["body"]] == [200]


def test_goaway_then_new_connection(env):
    srv, tok, sim, _ = env
    assert send(srv, tok, "tok-before-goaway")["outcome"] == "sent"
    assert sim.stats()["h2_connections"] >= 1
    assert sim.api("POST", "/_sim/goaway")["closed"] >= 1
    for i in range(3):
        out = send(srv, tok, "tok-after-goaway-%d" % i)
        assert out["outcome"] == "sent", out


def test_metrics(env):
    srv, tok, sim, _ = env
    send(srv, tok, "tok-metrics")
    text = srv.api("GET", "/metrics").raw.decode()
    for name in ("bulwark_push_fcm_sent_total", "bulwark_push_fcm_retries_total", "bulwark_push_fcm_queue",
                 "bulwark_push_fcm_in_flight", "bulwark_push_fcm_latency_seconds_bucket",
                 "bulwark_push_fcm_latency_seconds_count", 'bulwark_push_fcm_token_refreshes_total{result="ok"}'):
        assert name in text, name
    assert metric(srv, "bulwark_push_fcm_sent_total") >= 1
    assert metric(srv, "bulwark_push_fcm_queue") == 0
    assert metric(srv, "bulwark_push_fcm_in_flight") == 0


def test_wakeup(env):
    srv, tok, sim, _ = env
    woken = threading.Event()

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            woken.set()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    port = free_port()
    hs = HTTPServer(("127.0.0.1", port), H)
    th = threading.Thread(target=hs.serve_forever, daemon=True)
    th.start()
    try:
        sim.api("POST", "/_sim/register", {"token": "tok-wake", "wake_url": "http://127.0.0.1:%d/wake" % port})
        assert send(srv, tok, "tok-wake")["outcome"] == "sent"
        assert woken.wait(10)
    finally:
        hs.shutdown()
        hs.server_close()


def test_no_secrets_in_log(env):
    """Runs last in the module: nothing secret from any earlier test reached the log (debug level)."""
    srv, tok, sim, pem = env
    log = srv.log_text()
    assert "push_fcm" in log
    key_lines = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
    for ln in key_lines:
        assert ln not in log
    assert "PRIVATE KEY" not in log
    assert "ya29." not in log
    state = json.loads((sim.dir / "state" / "state.json").read_text())
    for t in state["tokens"]:
        assert t not in log
    for r in sim.received("/token"):
        assertion = r["body"].split("assertion=")[1]
        assert assertion not in log and assertion.split(".")[2] not in log
    assert "Bearer" not in log
    # Registration tokens are not logged either.
    assert "tok-ok-1" not in log and "tok-gone" not in log


# ---- servers of their own

def test_token_endpoint_refusal_degrades_health(servers, pki, tmp_path):
    """The service-account key the simulator knows is not the one bulwarkd signs with: invalid_grant."""
    sim = Sim(tmp_path / "sim", pki, [])
    known, _ = make_sa(tmp_path / "known.json", sim.url + "/token")
    used, pem = make_sa(tmp_path / "used.json", sim.url + "/token")  # same e-mail, another key
    sim.sa_files = [known]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={"push_fcm": plugin_settings(sim, used)})
        tok = srv.login()
        out = send(srv, tok, "tok-a")
        assert out["outcome"] == "failed" and out["attempts"] == 0
        assert out["reason"].startswith("oauth: token endpoint refused the assertion: HTTP 400 invalid_grant")
        assert "Invalid JWT Signature." in out["reason"]
        assert sim.sends() == []
        wait_plugin(srv, lambda h: h["degraded"] is True and "invalid_grant" in h["detail"])
        srv.wait_log(r"token endpoint refused the assertion: HTTP 400 invalid_grant .*service account %s" %
                     re.escape(EMAIL))
        assert metric(srv, "bulwark_push_fcm_failed_total", '{reason="oauth"}') == 1
        assert metric(srv, "bulwark_push_fcm_token_refreshes_total", '{result="failed"}') == 1
        # An invalid_scope answer (injected) reads the same way; a 5xx from the token endpoint is retried.
        sim.inject(endpoint="token", status=400, error="invalid_scope", error_description="Bad scope")
        out = send(srv, tok, "tok-b")
        assert "HTTP 400 invalid_scope (Bad scope)" in out["reason"]
        for ln in pem.splitlines()[1:-1]:
            assert ln not in srv.log_text()
    finally:
        sim.stop()


def test_token_endpoint_5xx_retried_and_health_recovers(servers, pki, tmp_path):
    sim = Sim(tmp_path / "sim", pki, [])
    sa, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={"push_fcm": plugin_settings(sim, sa)})
        tok = srv.login()
        sim.inject(endpoint="token", status=503, count=2)
        out = send(srv, tok, "tok-1")
        assert out["outcome"] == "sent" and out["attempts"] == 1
        st = sim.stats()
        assert st["token_requests"] == 3 and st["tokens_issued"] == 1
        # Token endpoint down for longer than retry_max: failed with the reason, then healthy again.
        sim.api("POST", "/_sim/revoke")
        sim.inject(endpoint="token", status=500, count=10)
        out = send(srv, tok, "tok-2")
        assert out["outcome"] == "failed" and out["reason"].startswith("oauth: token endpoint refused the assertion: "
                                                                       "HTTP 500")
        wait_plugin(srv, lambda h: h["degraded"] is True)
        sim.api("POST", "/_sim/reset")
        assert send(srv, tok, "tok-3")["outcome"] == "sent"
        wait_plugin(srv, lambda h: h["degraded"] is False)
    finally:
        sim.stop()


def test_simulator_killed_mid_request_and_restarted(servers, pki, tmp_path):
    sim = Sim(tmp_path / "sim", pki, [])
    sa, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={
            "push_fcm": plugin_settings(sim, sa, backoff="300ms", backoff_max="3s", retry_max=10)})
        tok = srv.login()
        assert send(srv, tok, "tok-warm")["outcome"] == "sent"
        sim.inject(token="tok-held", delay_ms=20000)
        result = {}
        th = threading.Thread(target=lambda: result.update(send(srv, tok, "tok-held")))
        th.start()
        deadline = time.monotonic() + 10
        while not [r for r in sim.received("/v1/") if r.get("held")]:
            assert time.monotonic() < deadline, "the held request never reached the simulator"
            time.sleep(0.05)
        sim.kill()  # mid-request: the connection drops without an answer
        time.sleep(0.5)
        sim.start()  # same port, same state dir: the access token is still known
        th.join(60)
        assert not th.is_alive()
        assert result["outcome"] == "sent" and result["attempts"] >= 2, result
        assert [r for r in sim.sends() if "tok-held" in r["body"]][-1]["status"] == 200
    finally:
        sim.stop()


def test_queue_limit(servers, pki, tmp_path):
    sim = Sim(tmp_path / "sim", pki, [])
    sa, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={
            "push_fcm": plugin_settings(sim, sa, inflight_max=1, queue_max=1)})
        tok = srv.login()
        assert send(srv, tok, "tok-warm")["outcome"] == "sent"
        sim.inject(token="tok-a", delay_ms=5000)
        results = []
        threads = [threading.Thread(target=lambda t=t: results.append(send(srv, tok, t))) for t in ("tok-a",
                                                                                                   "tok-b")]
        threads[0].start()
        deadline = time.monotonic() + 10
        while not [r for r in sim.received("/v1/") if r.get("held")]:  # tok-a in flight
            assert time.monotonic() < deadline
            time.sleep(0.05)
        threads[1].start()  # tok-b waits in the queue
        deadline = time.monotonic() + 10
        while metric(srv, "bulwark_push_fcm_queue") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = srv.api("POST", SEND, json={"token": "tok-c"}, token=tok)
        assert r.status == 429 and r.body["error"]["code"] == "limit" and "queue_max" in r.body["error"]["message"]
        for t in threads:
            t.join(30)
        assert sorted(x["outcome"] for x in results) == ["sent", "sent"]
    finally:
        sim.stop()


def _expect_init_failure(servers, tmp_path, sa_path, needles, **extra):
    settings = {"service_account_file": str(sa_path), "endpoint": "https://127.0.0.1:9", "ca_file": None}
    settings.update(extra)
    srv = servers.create(plugins=[("push_fcm", {"required": True})], settings={"push_fcm": settings})
    srv.start(wait=False)
    rc = srv.wait_exit(30)
    assert rc == 1
    log = srv.log_text()
    for n in needles:
        assert n in log, (n, log[-2000:])
    srv.assert_clean()
    return log


def test_missing_service_account_file(servers, tmp_path):
    missing = tmp_path / "nowhere" / "sa.json"
    _expect_init_failure(servers, tmp_path, missing, ["push_fcm", "service_account_file", str(missing),
                                                      "No such file"])


def test_malformed_service_account_files(servers, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"client_email": "a@b", ')
    _expect_init_failure(servers, tmp_path, bad_json, ["service_account_file", str(bad_json), "not valid JSON"])
    no_key = tmp_path / "nokey.json"
    no_key.write_text(json.dumps({"type": "service_account", "client_email": "a@b", "project_id": "p"}))
    _expect_init_failure(servers, tmp_path, no_key, ["service_account_file", str(no_key), '"private_key"'])
    bad_key = tmp_path / "badkey.json"
    bad_key.write_text(json.dumps({"client_email": "a@b", "project_id": "p",
                                   "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}))
    log = _expect_init_failure(servers, tmp_path, bad_key, [str(bad_key), "not a PEM private key"])
    assert "AAAA" not in log
    no_project, _ = make_sa(tmp_path / "noproject.json", "https://127.0.0.1:9/token", project=None)
    d = json.loads(no_project.read_text())
    del d["project_id"]
    no_project.write_text(json.dumps(d))
    _expect_init_failure(servers, tmp_path, no_project, ["project_id", "has no \"project_id\""])
    good, _ = make_sa(tmp_path / "good.json", "https://127.0.0.1:9/token")
    _expect_init_failure(servers, tmp_path, good, ["ca_file", str(tmp_path / "no-ca.pem"), "cannot read"],
                         ca_file=str(tmp_path / "no-ca.pem"))
    _expect_init_failure(servers, tmp_path, good, ["endpoint", "must be an https:// URL"],
                         endpoint="http://fcm.example")


def test_optional_plugin_with_bad_file_leaves_host_running(servers, tmp_path):
    missing = tmp_path / "sa.json"
    srv = servers.start(plugins=["push_fcm"], settings={"push_fcm": {"service_account_file": str(missing)}})
    p = wait_plugin(srv, lambda h: h["state"] == "failed")
    assert p["state"] == "failed" and "service_account_file" in p["error"] and str(missing) in p["error"]
    assert srv.health()["status"] == "degraded"


def test_untrusted_certificate_fails(servers, pki, tmp_path):
    """A simulator certificate from a CA that ca_file does not name: failed with the TLS error, nothing reaches
    the simulator. (A TLS error without "certificate" in curl's text, as OpenSSL gives for a wrong EC signature,
    may be a dropped connection and is retried up to retry_max like the host's own client does.)"""
    sim = Sim(tmp_path / "sim", pki, [])
    sa, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa]
    sim.start()
    other_ca, _, _ = make_tls(tmp_path / "other-pki")
    try:
        srv = servers.start(plugins=["push_fcm"], settings={
            "push_fcm": plugin_settings(sim, sa, ca_file=str(other_ca), retry_max=1)})
        tok = srv.login()
        out = send(srv, tok, "tok-x")
        assert out["outcome"] == "failed" and out["attempts"] == 0
        assert out["reason"].startswith("oauth: token endpoint unreachable: POST %s/token: " % sim.url)
        assert sim.stats()["token_requests"] == 0
        wait_plugin(srv, lambda h: h["degraded"] is True and "unreachable" in h["detail"])
    finally:
        sim.stop()


def test_stop_with_a_push_in_flight(servers, pki, tmp_path):
    """SIGTERM while a push is held by the simulator: the push is reported failed ("stopping"), bulwarkd exits 0
    with a sanitizer-clean log."""
    sim = Sim(tmp_path / "sim", pki, [])
    sa, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={"push_fcm": plugin_settings(sim, sa)})
        tok = srv.login()
        sim.inject(token="tok-held", delay_ms=15000)
        result = {}

        def run():
            try:
                result.update(send(srv, tok, "tok-held"))
            except Exception as e:  # the server may close the connection instead of answering
                result["error"] = repr(e)

        th = threading.Thread(target=run)
        th.start()
        deadline = time.monotonic() + 10
        while not [r for r in sim.received("/v1/") if r.get("held")]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        srv.stop()
        th.join(30)
        assert not th.is_alive()
        if "outcome" in result:
            assert result["outcome"] == "failed" and result["reason"] == "stopping", result
    finally:
        sim.stop()


def test_http1_fallback(servers, pki, tmp_path):
    """A server that offers only http/1.1 in ALPN: the same flow over HTTP/1.1 with keep-alive."""
    sim = Sim(tmp_path / "sim", pki, [], http1_only=True)
    sa, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={"push_fcm": plugin_settings(sim, sa)})
        tok = srv.login()
        sim.inject(token="tok-2", error_code="UNAVAILABLE")
        assert send(srv, tok, "tok-1")["outcome"] == "sent"
        out = send(srv, tok, "tok-2")
        assert out["outcome"] == "sent" and out["attempts"] == 2
        assert {r["http_version"] for r in sim.received()} == {"HTTP/1.1"}
    finally:
        sim.stop()


def test_concurrent_sends_share_one_token_request(servers, pki, tmp_path):
    """30 sends at once before any access token exists: one token request, the rest wait for it; then at most
    inflight_max requests at a time over HTTP/2, all accepted."""
    sim = Sim(tmp_path / "sim", pki, [])
    sa, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={"push_fcm": plugin_settings(sim, sa, inflight_max=4)})
        tok = srv.login()
        sim.inject(endpoint="token", delay_ms=500)  # keep the token request open while the others arrive
        sim.inject(token="*", delay_ms=300, count=30)  # slow answers: the in-flight limit is reached
        results = []
        lock = threading.Lock()

        def one(i):
            r = send(srv, tok, "tok-c%d" % i, device_id="dev-%d" % i)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 30 and all(r["outcome"] == "sent" and r["attempts"] == 1 for r in results)
        assert len({r["id"] for r in results}) == 30
        st = sim.stats()
        assert st["token_requests"] == 1 and st["accepted"] == 30
        assert st["max_concurrent_sends"] == 4  # inflight_max
        assert metric(srv, "bulwark_push_fcm_sent_total") == 30
        assert metric(srv, "bulwark_push_fcm_queue") == 0 and metric(srv, "bulwark_push_fcm_in_flight") == 0
    finally:
        sim.stop()


def test_token_uri_and_project_settings_override_the_file(servers, pki, tmp_path):
    """The file names Google's token endpoint and another project; the settings point both elsewhere: the
    assertion's aud is the token_uri setting (the simulator checks it), the messages go to project_id."""
    sim = Sim(tmp_path / "sim", pki, [], projects=["override-project"])
    sim.audience = sim.url + "/token"
    sa, _ = make_sa(tmp_path / "sa.json", "https://oauth2.googleapis.com/token", project="other-project")
    sim.sa_files = [sa]
    sim.start()
    try:
        srv = servers.start(plugins=["push_fcm"], settings={"push_fcm": plugin_settings(
            sim, sa, token_uri=sim.url + "/token", project_id="override-project")})
        tok = srv.login()
        out = send(srv, tok, "tok-1")
        assert out["outcome"] == "sent" and out["id"].startswith("projects/override-project/messages/")
        assert sim.sends()[-1]["path"] == "/v1/projects/override-project/messages:send"
    finally:
        sim.stop()
