"""bulwark-agent's push side (docs/bulwark-agent.md, "Push wake-ups"): `run --push-sim URL
--push-provider apns|fcm` registers a token of the provider's shape with the simulator
(POST /_sim/register {"token", "wake_url"}), reports it at check-in (device.push), and checks in at
once when its /wake listener gets a POST. Here a small plain-HTTP stand-in plays the simulator's
control API and the test itself sends the wake-up; the end to end through the push plugins and
tests/sims/ is in test_push_apns.py / test_push_fcm.py. Also enroll --push-provider/--push-token."""

import http.client
import http.server
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.parse

import pytest

from bwserver import assert_no_sanitizer_reports, free_port
from test_agent import agent_bin, make_env  # noqa: F401 (fixture)

WAIT = 15  # seconds a test waits for an agent line before failing


class FakeSim:
    """The control API of a push simulator: records POST /_sim/register; `status` is the answer."""

    def __init__(self, status=200):
        self.status = status
        self.registrations = []
        sim = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/_sim/register":
                    sim.registrations.append(json.loads(body))
                out = b"{}" if sim.status < 300 else b'{"error":"injected"}'
                self.send_response(sim.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sim():
    s = FakeSim()
    yield s
    s.close()


@pytest.fixture(scope="module")
def penv(module_servers, agent_bin, tmp_path_factory):  # noqa: F811
    srv = module_servers.start(plugins=[])
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("push-devices"))
    return srv, admin, agent


class Running:
    """A `bulwark-agent run` in the background; its stdout lines arrive in a queue."""

    def __init__(self, agent, *args):
        e = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
        self.proc = subprocess.Popen([str(agent.binary), "run"] + [str(a) for a in args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=e, stdin=subprocess.DEVNULL)
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, pattern, timeout=WAIT, new=False):
        """The first line matching `pattern` (only lines not read yet when `new`)."""
        rx = re.compile(pattern)
        for line in ([] if new else self.seen):
            if rx.search(line):
                return line
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if rx.search(line):
                return line
        pytest.fail("bulwark-agent printed no line matching %r; stdout:\n%s\nstderr:\n%s" % (
            pattern, "\n".join(self.seen), self.stderr_now()))

    def stderr_now(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            pytest.fail("bulwark-agent did not stop on SIGTERM")
        err = self.proc.stderr.read()
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert_no_sanitizer_reports(err, "bulwark-agent run")
        return rc, err


@pytest.fixture
def running():
    procs = []

    def start(agent, *args):
        r = Running(agent, *args)
        procs.append(r)
        return r

    yield start
    for r in procs:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(5)


def post(url, body=b"{}", method="POST"):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        c.request(method, u.path, body=body if method == "POST" else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_for(cond, timeout=WAIT, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


@pytest.mark.parametrize("provider", ["fcm", "apns"])
def test_woken_by_push_checks_in_at_once(penv, sim, running, provider):
    srv, admin, agent = penv
    dev = agent.enroll("--platform", "ios" if provider == "apns" else "android")
    # A 10-minute interval: only the wake-up can bring the command within the test's time.
    run = running(agent, "--state", dev.state, "--interval", "600", "--push-sim", sim.url, "--push-provider", provider)
    run.wait_line(r"^push: %s token registered with " % provider)
    run.wait_line(r"^checkin: ok")
    reg = wait_for(lambda: sim.registrations, what="the registration")[0]
    token = reg["token"]
    if provider == "apns":
        assert re.fullmatch(r"[0-9a-f]{64}", token), token
    else:
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}:APA91b[A-Za-z0-9_-]{134}", token), token
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/wake", reg["wake_url"]), reg
    # The first check-in carried device.push.
    push = admin.device(dev.id)["push"]
    assert push["provider"] == provider and push["token"] == token, push

    cid = admin.queue(dev.id, "lock")["id"]
    status, body = post(reg["wake_url"])
    assert status == 200 and json.loads(body) == {"woken": True}
    run.wait_line(r"^woken by push$")
    run.wait_line(r"^command %s lock: completed" % cid)
    assert admin.command(cid)["state"] == "completed"

    # A second wake-up: another immediate check-in.
    _drain(run)
    assert post(reg["wake_url"])[0] == 200
    run.wait_line(r"^woken by push$", new=True)
    run.wait_line(r"^checkin: ok", new=True)
    rc, err = run.stop()
    assert rc == 0, err


def _drain(run):
    out = []
    while not run.lines.empty():
        line = run.lines.get()
        run.seen.append(line)
        out.append(line)
    return out


def test_wake_listener_answers_other_requests_without_waking(penv, sim, running):
    srv, admin, agent = penv
    dev = agent.enroll()
    run = running(agent, "--state", dev.state, "--interval", "600", "--push-sim", sim.url + "/", "--push-provider",
                  "fcm", "--push-token", "fixed-token-1")
    run.wait_line(r"^checkin: ok")
    reg = wait_for(lambda: sim.registrations, what="the registration")[0]
    assert reg["token"] == "fixed-token-1"
    wake = reg["wake_url"]
    assert post(wake, method="GET")[0] == 405
    assert post(wake.replace("/wake", "/other"))[0] == 404
    # A client that connects and sends nothing is dropped, and the listener keeps working.
    import socket
    port = int(urllib.parse.urlsplit(wake).port)
    idle = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.3)
    _drain(run)
    assert not any("woken by push" in line for line in run.seen), run.seen
    idle.close()
    assert post(wake)[0] == 200
    run.wait_line(r"^woken by push$")
    assert admin.device(dev.id)["push"]["token"] == "fixed-token-1"
    rc, err = run.stop()
    assert rc == 0, err


def test_registration_refused_or_unreachable(penv, tmp_path):
    srv, admin, agent = penv
    dev = agent.enroll()
    bad = FakeSim(status=500)
    try:
        cp = agent("run", "--state", dev.state, "--once", "--push-sim", bad.url, "--push-provider", "fcm", expect=1)
        assert "push simulator" in cp.stderr and "500" in cp.stderr, cp.stderr
    finally:
        bad.close()
    closed = "http://127.0.0.1:%d" % free_port()
    cp = agent("run", "--state", dev.state, "--once", "--push-sim", closed, "--push-provider", "apns", expect=3)
    assert "push simulator" in cp.stderr, cp.stderr


@pytest.mark.parametrize("args,message", [
    (["--push-sim", "http://127.0.0.1:1"], "--push-provider"),
    (["--push-sim", "ftp://127.0.0.1:1", "--push-provider", "fcm"], "http:// or https://"),
    (["--push-sim", "http://127.0.0.1:1", "--push-provider", "gcm"], "apns or fcm"),
    (["--push-provider", "fcm"], "need --push-sim"),
    (["--push-sim-ca", "/nonexistent"], "need --push-sim"),
    (["--push-sim", "http://127.0.0.1:1", "--push-provider", "fcm", "--push-token", "a b"], "--push-token"),
    (["--clock-start", "yesterday"], "--clock-start"),
    (["--clock-speed", "0"], "--clock-speed"),
])
def test_run_usage_errors(penv, args, message):
    srv, admin, agent = penv
    dev = agent.enroll()
    cp = agent("run", "--state", dev.state, "--once", *args, expect=2)
    assert message in cp.stderr, cp.stderr


def test_enroll_with_push_provider_and_token(penv):
    srv, admin, agent = penv
    dev = agent.enroll("--platform", "android", "--push-provider", "apns", "--push-token", "ab" * 32)
    assert admin.device(dev.id)["push"]["provider"] == "apns"
    assert admin.device(dev.id)["push"]["token"] == "ab" * 32
    dev = agent.enroll("--platform", "ios", "--push")
    p = admin.device(dev.id)["push"]
    assert p["provider"] == "apns" and re.fullmatch(r"[0-9a-f]{64}", p["token"]), p
    dev = agent.enroll("--push-provider", "fcm")
    p = admin.device(dev.id)["push"]
    assert p["provider"] == "fcm" and ":APA91b" in p["token"], p
    cp = agent("enroll", "--server", srv.agent_url, "--ca", srv.ca, "--state", dev.state / "x", "--key", "K-1",
               "--push-provider", "mqtt", expect=2)
    assert "apns or fcm" in cp.stderr
