"""The device side end to end (agent protocol v1, docs/agent-protocol.md): enrollment by key,
invitation and allowlist, check-ins and inventory, commands (delivery, acknowledgement,
redelivery, cancellation, expiry, queue limit, merging), device identity (unenrollment, foreign
certificates, renewal, other devices' commands) and metrics.

Real device flows use the simulator bulwark-agent (docs/bulwark-agent.md) as a subprocess; raw
protocol requests use Python's ssl module with the device's cert.pem/key.pem. Malformed input,
events and the Client-Cert header are in test_agent_input.py."""

import base64
import calendar
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import time
import uuid

import pytest

from bwserver import assert_no_sanitizer_reports, send_request

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
AGENT_BODY_LIMIT = 65536
# Every endpoint that needs a device certificate, with a body it would accept.
ENDPOINTS_WITH_CERT = [
    ("POST", "/agent/v1/checkin", {}),
    ("POST", "/agent/v1/commands/%s/result" % uuid.uuid4(), {"status": "completed"}),
    ("POST", "/agent/v1/events", {"batch_id": str(uuid.uuid4()), "events": [{"type": "web_blocked", "at": 1}]}),
    ("POST", "/agent/v1/unenroll", {}),
    ("GET", "/agent/v1/policy", None),
    ("POST", "/agent/v1/certificate", {"csr": "x"}),
]


# ---- helpers


def ts(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def luhn(prefix14):
    """A valid IMEI from 14 digits (appends the Luhn check digit)."""
    total = 0
    for i, ch in enumerate(prefix14):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return prefix14 + str((10 - total % 10) % 10)


def random_imei():
    return luhn("35%012d" % (uuid.uuid4().int % 10 ** 12))


def openssl(*args, cwd=None):
    cp = subprocess.run(["openssl"] + [str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    assert cp.returncode == 0, "openssl %s failed:\n%s" % (" ".join(map(str, args)), cp.stderr)
    return cp.stdout


def make_csr(directory, cn="device", rsa=False):
    """A new private key and a PKCS#10 request (openssl CLI) -> (key path, CSR PEM text)."""
    directory.mkdir(parents=True, exist_ok=True)
    n = uuid.uuid4().hex[:8]
    key, csr = directory / ("key-%s.pem" % n), directory / ("csr-%s.pem" % n)
    newkey = ["-newkey", "rsa:2048"] if rsa else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    openssl("req", "-new", *newkey, "-nodes", "-keyout", key, "-subj", "/CN=" + cn, "-out", csr)
    return key, csr.read_text()


def cert_subject_cn(pem_path):
    subj = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", pem_path).strip()
    m = re.search(r"CN=([^,]+)", subj)
    return m.group(1) if m else None


def cert_serial(pem_path):
    return openssl("x509", "-noout", "-serial", "-in", pem_path).strip().split("=", 1)[1].lower().lstrip("0")


def cert_verifies(ca_path, pem_path):
    cp = subprocess.run(["openssl", "verify", "-CAfile", str(ca_path), str(pem_path)], capture_output=True, text=True)
    return cp.returncode == 0


def foreign_cert(directory, cn, ca=None):
    """A client certificate for `cn` signed by another CA: a new throwaway CA, or ca = (cert, key)
    of an existing one. -> (cert path, key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    if ca is None:
        ca = (directory / "evil-ca.pem", directory / "evil-ca.key")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                ca[1], "-out", ca[0], "-subj", "/CN=Throwaway Device CA", "-days", "2")
    key, csr = make_csr(directory, cn=cn)
    (directory / "csr.pem").write_text(csr)
    (directory / "ext.cnf").write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
                                       "extendedKeyUsage=clientAuth\n")
    cert = directory / ("cert-%s.pem" % uuid.uuid4().hex[:8])
    openssl("x509", "-req", "-in", directory / "csr.pem", "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "1", "-extfile", directory / "ext.cnf", "-out", cert)
    return cert, key


def client_cert_header(pem_path):
    der = ssl.PEM_cert_to_DER_cert(open(pem_path).read())
    return ":%s:" % base64.b64encode(der).decode()


def error_message(r):
    return r.body["error"]["message"] if isinstance(r.body, dict) and isinstance(r.body.get("error"), dict) else ""


def assert_401(r, what=""):
    assert r.status == 401 and r.error_code() == "unauthenticated", (what, r)


def metric_value(srv, name, labels=""):
    r = srv.api("GET", "/metrics")
    assert r.status == 200, r
    text = r.raw.decode()
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else 0.0


class Admin:
    """The admin API side of one server, with one session token."""

    def __init__(self, srv):
        self.srv = srv
        self.token = srv.login()

    def call(self, method, path, json=None, expect=None):
        r = self.srv.api(method, path, json=json, token=self.token)
        if expect is not None:
            assert r.status == expect, (method, path, r)
        return r

    def key(self, **opts):
        return self.call("POST", "/api/v1/enrollment/keys", json=opts, expect=201).body

    def key_state(self, key_id):
        keys = self.call("GET", "/api/v1/enrollment/keys", expect=200).body["keys"]
        return [k for k in keys if k["id"] == key_id][0]

    def invite(self, email):
        """Invites `email`; returns the code from the outbox message."""
        def mine():
            return {json.dumps(m, sort_keys=True) for m in
                    self.call("GET", "/api/v1/enrollment/outbox", expect=200).body["messages"]
                    if email in json.dumps(m)}

        before = mine()
        self.call("POST", "/api/v1/enrollment/invitations", json={"email": email}, expect=201)
        new = mine() - before
        assert len(new) == 1, new
        msg = json.loads(new.pop())
        text = "\n".join(v for v in msg.values() if isinstance(v, str))
        return re.search(r"Invitation code: (\d{8})\b", text).group(1)

    def queue(self, dev, ctype, **kw):
        r = self.call("POST", "/api/v1/devices/%s/commands" % dev, json=dict(kw, type=ctype))
        assert r.status == 201, r
        return r.body

    def command(self, cid):
        return self.call("GET", "/api/v1/commands/" + cid, expect=200).body

    def device(self, dev):
        return self.call("GET", "/api/v1/devices/" + dev, expect=200).body

    def device_count(self):
        return len(self.call("GET", "/api/v1/devices?limit=1000", expect=200).body["devices"])

    def events(self, dev):
        return self.call("GET", "/api/v1/logs?limit=1000&device=" + dev, expect=200).body["events"]

    def refusals(self):
        return self.call("GET", "/api/v1/enrollment/refusals?limit=1000", expect=200).body["refusals"]


class Device:
    """One simulated device: a bulwark-agent state directory."""

    def __init__(self, srv, agent, state):
        self.srv, self.agent, self.state = srv, agent, state
        self.id = json.loads((state / "device.json").read_text())["device_id"]

    @property
    def cert(self):
        return (self.state / "cert.pem", self.state / "key.pem")

    def doc(self):
        return json.loads((self.state / "device.json").read_text())

    def run(self, *args, expect=0):
        return self.agent("run", "--state", self.state, "--once", *args, expect=expect)

    def api(self, method, path, json=None, body=None, headers=None, conn=None):
        return self.srv.agent_api(method, path, json=json, body=body, headers=headers, conn=conn, cert=self.cert)

    def checkin(self, payload=None, conn=None):
        r = self.api("POST", "/agent/v1/checkin", json=payload if payload is not None else {}, conn=conn)
        assert r.status == 200, r
        return r.body

    def connection(self):
        return self.srv.agent_connection(self.cert)

    def keep_cert(self, where):
        """A copy of the current certificate and key (for 'old certificate' checks)."""
        where.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.state / "cert.pem", where / "cert.pem")
        shutil.copy(self.state / "key.pem", where / "key.pem")
        return (where / "cert.pem", where / "key.pem")


@pytest.fixture(scope="session")
def agent_bin(build):
    b = build / "bin" / "bulwark-agent"
    if not b.is_file():
        pytest.fail("%s is not built" % b)
    return b


class AgentRunner:
    """Runs bulwark-agent against one server; `admin` creates the enrollment keys."""

    def __init__(self, binary, srv, admin, tmp):
        self.binary, self.srv, self.admin, self.tmp = binary, srv, admin, tmp

    def __call__(self, *args, expect=0, env=None, timeout=60):
        e = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
        e.update(env or {})
        cp = subprocess.run([str(self.binary)] + [str(a) for a in args], capture_output=True, text=True, env=e,
                            stdin=subprocess.DEVNULL, timeout=timeout)
        assert_no_sanitizer_reports(cp.stderr, "bulwark-agent " + " ".join(map(str, args)))
        if expect is not None:
            assert cp.returncode == expect, "bulwark-agent %s: exit %d (expected %d)\nstdout:\n%s\nstderr:\n%s" % (
                " ".join(map(str, args)), cp.returncode, expect, cp.stdout, cp.stderr)
        return cp

    def enroll(self, *args, key=None, expect=0, state=None, env=None):
        """bulwark-agent enroll with an enrollment key (a new one unless given) or the given
        arguments -> Device (or the CompletedProcess when a failure is expected)."""
        state = state or self.tmp / ("dev-" + uuid.uuid4().hex[:8])
        if key is None and "--invitation" not in args and "--directory" not in args:
            key = self.admin.key()["key"]
        cred = ["--key", key] if key else []
        cp = self("enroll", "--server", self.srv.agent_url, "--ca", self.srv.ca, "--state", state, *cred, *args,
                  expect=expect, env=env)
        if expect != 0:
            return cp
        assert re.search(r"^enrolled device [0-9a-f-]{36} ", cp.stdout, re.M), cp.stdout
        return Device(self.srv, self, state)


def make_env(srv, agent_bin, tmp):
    """(Admin, AgentRunner) for a started server."""
    admin = Admin(srv)
    return admin, AgentRunner(agent_bin, srv, admin, tmp)


@pytest.fixture(scope="module")
def env(module_servers, agent_bin, tmp_path_factory):
    """The module's server: no plugins, ack_timeout 1 s (redelivery), a 64 KiB body limit."""
    srv = module_servers.start(plugins=[], settings={"limits": {"max_body_bytes": AGENT_BODY_LIMIT},
                                                     "agent": {"ack_timeout": "1s"}})
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("devices"))
    return srv, admin, agent


def raw_enroll(srv, tmp_path, creds, csr=None, **device):
    dev = {"platform": "android", "os_version": "14", "model": "Pixel 8", "manufacturer": "Google"}
    dev.update(device)
    payload = dict(creds, csr=csr if csr is not None else make_csr(tmp_path / "csr")[1], device=dev)
    return srv.agent_api("POST", "/agent/v1/enroll", json=payload)


def db_exec(srv, sql, args=()):
    """Writes the server's database directly (to move a time into the past: the API refuses
    lifetimes under 60 s, too long to wait for here)."""
    con = sqlite3.connect(str(srv.var / "bulwark.db"), timeout=10)
    try:
        n = con.execute(sql, args).rowcount
        con.commit()
    finally:
        con.close()
    assert n == 1, (sql, args, n)


# ---- enrollment


def test_enroll_by_key(env):
    srv, admin, agent = env
    k = admin.key(group="field")
    imei = random_imei()
    dev = agent.enroll("--platform", "android", "--os-version", "13", "--imei", imei, "--wifi-mac",
                       "02-00-00-AA-BB-01", "--push", key=k["key"])
    assert UUID_RE.match(dev.id)
    assert oct(dev.state.stat().st_mode & 0o777) == "0o700"
    assert oct((dev.state / "key.pem").stat().st_mode & 0o777) == "0o600"
    doc = dev.doc()
    assert doc["status"] == "active" and doc["server"] == srv.agent_url, doc
    # The certificate: CN = device id, signed by the device CA (which the answer handed out).
    assert cert_subject_cn(dev.state / "cert.pem") == dev.id
    assert (dev.state / "ca.pem").read_text().strip() == srv.device_ca.read_text().strip()
    assert cert_verifies(srv.device_ca, dev.state / "cert.pem")
    assert not cert_verifies(srv.ca, dev.state / "cert.pem"), "devices must not be signed by the server CA"

    d = admin.device(dev.id)
    assert d["status"] == "active" and d["enroll_method"] == "key" and d["group"] == "field", d
    assert d["platform"] == "android" and d["os_version"] == "13" and d["imei"] == imei, d
    assert d["wifi_mac"] == "02:00:00:aa:bb:01", d
    assert d["push"] and d["push"]["provider"] == "fcm", d
    assert d["cert_serial"].lstrip("0") == cert_serial(dev.state / "cert.pem"), d
    assert admin.key_state(k["id"])["uses"] == 1
    assert dev.checkin()["commands"] == []


def test_enroll_by_invitation(env, tmp_path):
    srv, admin, agent = env
    email = "inv-%s@example.org" % uuid.uuid4().hex[:8]
    code = admin.invite(email)
    dev = agent.enroll("--invitation", email, "--code", code, "--platform", "ios")
    d = admin.device(dev.id)
    assert d["enroll_method"] == "invitation" and d["platform"] == "ios" and d["status"] == "active", d
    # Used: the same code is refused, by the agent (exit 1, the server's reason) and raw.
    cp = agent.enroll("--invitation", email, "--code", code, expect=1)
    assert "403 enrollment_refused" in cp.stderr, cp.stderr
    r = raw_enroll(srv, tmp_path, {"method": "invitation", "email": email, "code": code})
    assert r.status == 403 and r.error_code() == "enrollment_refused", r
    # A code belongs to its address.
    other = "other-%s@example.org" % uuid.uuid4().hex[:8]
    code2 = admin.invite(other)
    r = raw_enroll(srv, tmp_path, {"method": "invitation", "email": email, "code": code2})
    assert r.status == 403, r
    assert raw_enroll(srv, tmp_path, {"method": "invitation", "email": other, "code": code2}).status == 201


def test_two_invitations_for_one_address(env, tmp_path):
    srv, admin, agent = env
    email = "two-%s@example.org" % uuid.uuid4().hex[:8]
    c1 = admin.invite(email)
    c2 = admin.invite(email)
    assert c1 != c2
    # Later invitation first, then the earlier one: each is usable once.
    d2 = agent.enroll("--invitation", email, "--code", c2)
    d1 = agent.enroll("--invitation", email, "--code", c1)
    assert d1.id != d2.id
    for c in (c1, c2):
        r = raw_enroll(srv, tmp_path, {"method": "invitation", "email": email, "code": c})
        assert r.status == 403 and r.error_code() == "enrollment_refused", r
    invs = [i for i in admin.call("GET", "/api/v1/enrollment/invitations", expect=200).body["invitations"]
            if i["email"] == email]
    assert len(invs) == 2 and all(i["used_at"] for i in invs), invs


def test_allowlist(servers, agent_bin, tmp_path):
    srv = servers.start(plugins=[])
    admin, agent = make_env(srv, agent_bin, tmp_path)
    k = admin.key()
    listed, other = random_imei(), random_imei()
    admin.call("POST", "/api/v1/enrollment/allowlist", json={"kind": "imei", "value": listed}, expect=201)
    admin.call("POST", "/api/v1/enrollment/allowlist", json={"kind": "wifi_mac", "value": "aa:bb:cc:dd:ee:01"},
               expect=201)
    admin.call("POST", "/api/v1/enrollment/allowlist", json={"kind": "meid", "value": "A0000000002329"}, expect=201)
    # Off: anyone with a key enrolls.
    agent.enroll("--imei", other, key=k["key"])
    admin.call("PUT", "/api/v1/enrollment/allowlist/enabled", json={"enabled": True}, expect=200)

    a = agent.enroll("--imei", listed, key=k["key"])
    assert admin.device(a.id)["imei"] == listed
    cp = agent.enroll("--imei", other, "--wifi-mac", "02:00:00:00:00:09", key=k["key"], expect=1)
    assert "403 enrollment_refused" in cp.stderr and "device list" in cp.stderr, cp.stderr
    # The MAC in another spelling matches the listed aa:bb:cc:dd:ee:01.
    for mac in ("AA-BB-CC-DD-EE-01", "AABBCCDDEE01"):
        m = agent.enroll("--wifi-mac", mac, key=k["key"])
        assert admin.device(m.id)["wifi_mac"] == "aa:bb:cc:dd:ee:01"
    agent.enroll("--meid", "a0000000002329", key=k["key"])

    assert admin.device_count() == 5
    assert admin.key_state(k["id"])["uses"] == 5, "a refused device must not use the key"
    refusals = admin.refusals()
    assert len(refusals) == 1, refusals
    assert refusals[0]["reason"] == "not_on_allowlist" and other in refusals[0]["detail"], refusals
    assert refusals[0]["address"] == "127.0.0.1"


@pytest.mark.parametrize("key", ["abc_def!", "ключ", "a b", "AAAA-BBBB-CCC#", "AAAA/BBBB/CCCC"])
def test_enroll_key_bad_characters(env, tmp_path, key):
    srv, admin, _ = env
    before = admin.device_count()
    r = raw_enroll(srv, tmp_path, {"method": "key", "key": key})
    assert r.status == 400 and r.error_code() == "bad_request", r
    assert "key" in error_message(r) and "A-Z" in error_message(r), r
    assert admin.device_count() == before


def test_enroll_key_bad_characters_by_agent(env):
    _, _, agent = env
    cp = agent.enroll(key="a b", expect=1)
    assert "400 bad_request" in cp.stderr and "key" in cp.stderr, cp.stderr


def test_enroll_key_unknown_expired_used_up_revoked(env, tmp_path):
    srv, admin, agent = env
    seen = {x["id"] for x in admin.refusals()}
    devices = admin.device_count()

    r = raw_enroll(srv, tmp_path, {"method": "key", "key": "ZZZZ-ZZZZ-ZZZZ"})
    assert r.status == 403 and r.error_code() == "enrollment_refused", r
    assert "unknown enrollment key" in error_message(r)

    once = admin.key(max_uses=1)
    agent.enroll(key=once["key"])
    r = raw_enroll(srv, tmp_path, {"method": "key", "key": once["key"]})
    assert r.status == 403 and "used up" in error_message(r), r
    assert admin.key_state(once["id"])["uses"] == 1

    revoked = admin.key()
    admin.call("DELETE", "/api/v1/enrollment/keys/" + revoked["id"], expect=204)
    r = raw_enroll(srv, tmp_path, {"method": "key", "key": revoked["key"]})
    assert r.status == 403 and "revoked" in error_message(r), r

    # Expiry: the shortest lifetime the API accepts is 60 s; the key is created with it and its
    # expiry is then moved into the past in the database instead of waiting a minute.
    short = admin.key(expires_in=60)
    assert admin.call("POST", "/api/v1/enrollment/keys", json={"expires_in": 59}).status == 400
    db_exec(srv, "UPDATE enrollment_keys SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, short["id"]))
    r = raw_enroll(srv, tmp_path, {"method": "key", "key": short["key"]})
    assert r.status == 403 and "expired" in error_message(r), r
    assert admin.key_state(short["id"])["uses"] == 0

    assert admin.device_count() == devices + 1
    new = [x for x in admin.refusals() if x["id"] not in seen]
    assert sorted(x["reason"] for x in new) == ["key_refused", "key_refused", "key_refused", "unknown_key"], new
    assert all(x["address"] == "127.0.0.1" for x in new)


def test_enroll_directory_not_implemented(env, tmp_path):
    srv, admin, agent = env
    before = admin.device_count()
    r = raw_enroll(srv, tmp_path, {"method": "directory", "user": "alice", "password": "secret-password"})
    assert r.status == 501 and r.error_code() == "not_implemented", r
    # A 5xx answer: exit 3 by the agent's exit status table (enroll does not retry).
    cp = agent.enroll("--directory", "alice", key="", expect=3, env={"BULWARK_PASSWORD": "secret-password"})
    assert "501 not_implemented" in cp.stderr, cp.stderr
    assert admin.device_count() == before


def test_refused_enrollment_does_not_use_the_key(env, tmp_path):
    """Nothing is stored when a request is refused (agent-protocol.md): an enrollment refused for
    its CSR must leave a one-use key usable."""
    srv, admin, agent = env
    k = admin.key(max_uses=1)
    r = raw_enroll(srv, tmp_path, {"method": "key", "key": k["key"]}, csr="garbage")
    assert r.status == 400 and "csr" in error_message(r), r
    assert admin.key_state(k["id"])["uses"] == 0, "an enrollment refused for its CSR used the key"
    _, rsa_csr = make_csr(tmp_path / "rsa", rsa=True)
    r = raw_enroll(srv, tmp_path, {"method": "key", "key": k["key"]}, csr=rsa_csr)
    assert r.status == 400 and "csr" in error_message(r), r
    assert admin.key_state(k["id"])["uses"] == 0, "an enrollment refused for its CSR used the key"
    agent.enroll(key=k["key"])


def test_refused_enrollment_does_not_use_the_invitation(env, tmp_path):
    srv, admin, agent = env
    email = "csr-%s@example.org" % uuid.uuid4().hex[:8]
    code = admin.invite(email)
    r = raw_enroll(srv, tmp_path, {"method": "invitation", "email": email, "code": code}, csr="garbage")
    assert r.status == 400 and "csr" in error_message(r), r
    invs = [i for i in admin.call("GET", "/api/v1/enrollment/invitations", expect=200).body["invitations"]
            if i["email"] == email]
    assert not invs[0]["used_at"], "an enrollment refused for its CSR used the invitation: %r" % invs
    agent.enroll("--invitation", email, "--code", code)


# ---- check-in and inventory


def test_checkin_inventory(env):
    srv, admin, agent = env
    dev = agent.enroll("--os-version", "14")
    first = dev.checkin()
    assert first["inventory_request"] == "full" and first["commands"] == [], first
    assert first["renew_certificate"] is False and first["checkin_interval"] == 300, first
    assert re.fullmatch(r"[0-9a-f]{16}", first["policy"]["version"]), first  # the effective policy's version
    # A delta without a stored base is not stored: the full inventory is asked for again.
    r = dev.checkin({"inventory": {"full": False, "apps_added": [{"id": "com.x", "name": "X", "version": "1"}]}})
    assert r["inventory_request"] == "full", r
    assert admin.device(dev.id).get("inventory") is None

    cp = dev.run()
    assert "full inventory" in cp.stdout, cp.stdout
    inv = admin.device(dev.id)["inventory"]
    ids = [a["id"] for a in inv["apps"]]
    assert len(ids) >= 5 and "com.whatsapp" in ids and inv["settings"]["usb_debugging"] is False, inv
    assert dev.checkin().get("inventory_request") is None

    before = admin.device(dev.id)
    time.sleep(1.05)  # last_seen has a resolution of one second
    cp = dev.run("--install-app", "com.example.new:3.1", "--remove-app", "com.whatsapp", "--set-usb-debugging", "on",
                 "--os-version", "14.1")
    assert "full inventory" not in cp.stdout and "apps_added" in cp.stdout, cp.stdout
    d = admin.device(dev.id)
    apps = {a["id"]: a for a in d["inventory"]["apps"]}
    assert apps["com.example.new"]["version"] == "3.1" and "com.whatsapp" not in apps, apps
    assert len(apps) == len(ids), "one app added, one removed"
    assert d["inventory"]["settings"]["usb_debugging"] is True
    assert d["inventory"]["settings"]["screen_lock"] == before["inventory"]["settings"]["screen_lock"]
    assert d["os_version"] == "14.1" and d["model"] == before["model"], d
    deadline = time.time() + 5  # last_seen is written in batches every 2 s
    while ts(admin.device(dev.id)["last_seen"]) <= ts(before["last_seen"]) and time.time() < deadline:
        time.sleep(0.2)
    assert ts(admin.device(dev.id)["last_seen"]) > ts(before["last_seen"])
    assert d["enrolled_at"] == before["enrolled_at"]


# ---- commands


def test_lock_and_locate_delivered_and_completed(env):
    srv, admin, agent = env
    dev = agent.enroll()
    loc = admin.queue(dev.id, "locate")["id"]
    lock = admin.queue(dev.id, "lock")["id"]
    assert admin.command(lock)["state"] == "queued" and admin.command(lock)["sent_at"] is None
    start = int(time.time())
    cp = dev.run()
    out = cp.stdout
    for cid, t in ((lock, "lock"), (loc, "locate")):
        assert "command %s %s: acknowledged" % (cid, t) in out and "command %s %s: completed" % (cid, t) in out, out
    assert out.index("command %s" % lock) < out.index("command %s" % loc), "lock has the higher priority"

    c = admin.command(lock)
    assert c["state"] == "completed" and c["attempts"] == 1 and c["error"] is None, c
    assert start - 1 <= c["result"]["locked_at"] <= time.time() + 1, c
    assert c["sent_at"] and c["acked_at"] and c["completed_at"], c
    c = admin.command(loc)
    r = c["result"]
    assert c["state"] == "completed", c
    assert -90 <= r["latitude"] <= 90 and -180 <= r["longitude"] <= 180 and 5 <= r["accuracy"] <= 50, c
    # Nothing is delivered twice.
    assert "0 commands" in dev.run().stdout
    assert admin.command(lock)["attempts"] == 1 and admin.command(loc)["attempts"] == 1


@pytest.mark.parametrize("kind", ["wipe", "enterprise_wipe"])
def test_wipe(env, kind):
    srv, admin, agent = env
    dev = agent.enroll()
    dev.run()
    wipe = admin.queue(dev.id, kind)["id"]
    cp = dev.run()
    assert "command %s %s: completed" % (wipe, kind) in cp.stdout, cp.stdout
    assert dev.doc()["status"] == "wiped"
    c = admin.command(wipe)
    assert c["state"] == "completed" and isinstance(c["result"]["wiped_at"], int), c
    d = admin.device(dev.id)
    assert d["status"] == "wiped", d
    assert dev.id in [x["id"] for x in admin.call("GET", "/api/v1/devices?status=wiped&limit=1000").body["devices"]]
    # The certificate is refused on every endpoint.
    for method, path, payload in ENDPOINTS_WITH_CERT:
        assert_401(dev.api(method, path, json=payload), path)
    assert dev.run(expect=1).returncode == 1
    r = admin.call("POST", "/api/v1/devices/%s/commands" % dev.id, json={"type": "lock"})
    assert r.status == 409, r


def test_offline_device_gets_commands_when_it_runs(servers, agent_bin, tmp_path):
    """Commands queued while a device is away wait for it, also across a server restart."""
    srv = servers.start(plugins=[])
    admin, agent = make_env(srv, agent_bin, tmp_path)
    dev = agent.enroll()
    dev.run()
    lock = admin.queue(dev.id, "lock")["id"]
    scan = admin.queue(dev.id, "scan")["id"]
    other = agent.enroll()
    assert "0 commands" in other.run().stdout
    assert admin.command(lock)["state"] == "queued"
    srv.stop()
    srv.start()
    agent.admin = admin = Admin(srv)
    cp = dev.run()
    assert "2 commands" in cp.stdout, cp.stdout
    assert admin.command(lock)["state"] == "completed" and admin.command(scan)["state"] == "completed"
    assert admin.command(scan)["result"]["threats"] == 0


def test_cancel_before_delivery(env):
    srv, admin, agent = env
    dev = agent.enroll()
    lock = admin.queue(dev.id, "lock")["id"]
    loc = admin.queue(dev.id, "locate")["id"]
    admin.call("DELETE", "/api/v1/commands/" + lock, expect=204)
    admin.call("DELETE", "/api/v1/commands/" + loc, expect=204)
    cp = dev.run()
    assert "0 commands" in cp.stdout and lock not in cp.stdout, cp.stdout
    for cid in (lock, loc):
        c = admin.command(cid)
        assert c["state"] == "cancelled" and c["sent_at"] is None and c["attempts"] == 0, c
    assert dev.checkin()["commands"] == []
    # A cancelled command takes no result.
    r = dev.api("POST", "/agent/v1/commands/%s/result" % lock, json={"status": "completed", "result": {}})
    assert r.status == 409, r
    assert admin.command(lock)["state"] == "cancelled"
    # Not open any more: a new locate is not merged into the cancelled one.
    new = admin.queue(dev.id, "locate")
    assert new["merged"] is False and new["id"] != loc


def test_redelivery_after_lost_acknowledgement(env):
    """The module's server has agent.ack_timeout = 1s."""
    srv, admin, agent = env
    dev = agent.enroll()
    dev.run()
    lock = admin.queue(dev.id, "lock")["id"]
    t0 = time.time()
    cp = dev.run("--drop-ack")
    assert lock in cp.stdout and "completed" not in cp.stdout, cp.stdout
    c = admin.command(lock)
    assert c["state"] == "sent" and c["attempts"] == 1 and c["acked_at"] is None, c
    again = dev.checkin()
    if time.time() - t0 < 1.0:
        # Redelivery needs sent_at < now - 1 s in whole seconds: impossible within one second.
        assert again["commands"] == [], again
    while time.time() < ts(c["sent_at"]) + 2.05:
        time.sleep(0.1)
    cp = dev.run()
    assert "command %s lock: completed" % lock in cp.stdout, cp.stdout
    c = admin.command(lock)
    assert c["state"] == "completed" and c["attempts"] == 2, c


def test_acknowledged_command_is_not_redelivered(env):
    srv, admin, agent = env
    dev = agent.enroll()
    lock = admin.queue(dev.id, "lock")["id"]
    got = dev.checkin()["commands"]
    assert [c["id"] for c in got] == [lock] and got[0]["type"] == "lock" and got[0]["params"] == {}, got
    assert got[0]["expires_at"] > time.time(), got
    r = dev.api("POST", "/agent/v1/commands/%s/result" % lock, json={"status": "acknowledged"})
    assert r.status == 200 and r.body == {"id": lock, "status": "acknowledged"}, r
    sent = admin.command(lock)
    assert sent["state"] == "acknowledged" and sent["acked_at"], sent
    while time.time() < ts(sent["sent_at"]) + 2.05:
        time.sleep(0.1)
    assert dev.checkin()["commands"] == []
    done = {"status": "completed", "result": {"locked_at": int(time.time())}}
    assert dev.api("POST", "/agent/v1/commands/%s/result" % lock, json=done).status == 200
    # Posting the same final result again is 200 and changes nothing; a late acknowledgement too;
    # a different final result is a conflict.
    assert dev.api("POST", "/agent/v1/commands/%s/result" % lock, json=done).status == 200
    assert dev.api("POST", "/agent/v1/commands/%s/result" % lock, json={"status": "acknowledged"}).status == 200
    r = dev.api("POST", "/agent/v1/commands/%s/result" % lock, json={"status": "failed", "error": "x"})
    assert r.status == 409, r
    c = admin.command(lock)
    assert c["state"] == "completed" and c["result"] == done["result"] and c["error"] is None, c


def test_command_expiry(env):
    """The shortest ttl the API accepts is 60 s and expired commands are swept once a minute:
    waiting for that would take up to two minutes. The command is queued with ttl 60 and its
    expires_at is then moved into the past in the database; the check-in must not deliver it."""
    srv, admin, agent = env
    dev = agent.enroll()
    r = admin.call("POST", "/api/v1/devices/%s/commands" % dev.id, json={"type": "lock", "ttl": 59})
    assert r.status == 400 and "ttl" in error_message(r), r
    lock = admin.queue(dev.id, "lock", ttl=60)["id"]
    c = admin.command(lock)
    assert ts(c["created_at"]) + 60 == ts(c["expires_at"]), c
    db_exec(srv, "UPDATE commands SET expires_at = ? WHERE id = ?", (int(time.time()) - 1, lock))
    assert "0 commands" in dev.run().stdout
    c = admin.command(lock)
    assert c["state"] in ("queued", "expired") and c["sent_at"] is None and c["attempts"] == 0, c


def test_queue_full_then_drained(env):
    srv, admin, agent = env
    dev = agent.enroll()
    url = "/api/v1/devices/%s/commands" % dev.id
    conn = srv.connection()
    try:
        hdr = {"Authorization": "Bearer " + admin.token}
        for i in range(100):
            r = send_request(conn, "POST", url, json={"type": "lock"}, headers=hdr)
            assert r.status == 201 and r.body["merged"] is False, (i, r)
        r = send_request(conn, "POST", url, json={"type": "lock"}, headers=hdr)
        assert r.status == 409 and r.error_code() == "queue_full", r
        # A mergeable type with nothing to merge into is refused too.
        r = send_request(conn, "POST", url, json={"type": "locate"}, headers=hdr)
        assert r.status == 409 and r.error_code() == "queue_full", r
    finally:
        conn.close()
    cp = dev.run()
    m = re.search(r"checkin: ok.*, (\d+) commands?", cp.stdout)
    assert m, cp.stdout
    n = int(m.group(1))
    assert 1 <= n <= 100 and cp.stdout.count(": completed") == n, cp.stdout
    # Completed commands leave the queue: there is room again.
    admin.queue(dev.id, "lock")


def test_merged_commands_are_delivered_once(env):
    srv, admin, agent = env
    dev = agent.enroll()
    first = admin.queue(dev.id, "locate")
    second = admin.queue(dev.id, "locate")
    assert first["merged"] is False and second == {"id": first["id"], "merged": True}, (first, second)
    got = dev.checkin()["commands"]
    assert [c["id"] for c in got] == [first["id"]], got
    # Sent but not final: still merged into.
    assert admin.queue(dev.id, "locate") == {"id": first["id"], "merged": True}
    res = {"status": "completed", "result": {"latitude": 35.68, "longitude": 139.76, "accuracy": 20}}
    assert dev.api("POST", "/agent/v1/commands/%s/result" % first["id"], json=res).status == 200
    assert admin.command(first["id"])["result"]["latitude"] == 35.68
    third = admin.queue(dev.id, "locate")
    assert third["merged"] is False and third["id"] != first["id"], third
    assert "command %s locate: completed" % third["id"] in dev.run().stdout


# ---- identity


def test_unenroll_refuses_certificate_at_once(env, tmp_path):
    srv, admin, agent = env
    dev = agent.enroll()
    dev.run()
    saved = tmp_path / "before-unenroll"
    shutil.copytree(dev.state, saved)
    conn = dev.connection()
    try:
        dev.checkin(conn=conn)
        cp = agent("unenroll", "--state", dev.state)
        assert dev.doc()["status"] == "unenrolled", cp.stdout
        assert admin.device(dev.id)["status"] == "unregistered"
        # The kept-alive connection authenticated before: refused now all the same.
        assert_401(dev.api("POST", "/agent/v1/checkin", json={}, conn=conn), "same connection")
    finally:
        conn.close()
    for method, path, payload in ENDPOINTS_WITH_CERT:
        assert_401(dev.api(method, path, json=payload), path)
    # The agent with the state of before the unenrollment: 401 -> exit 4.
    cp = agent("run", "--state", saved, "--once", expect=4)
    assert "401" in cp.stderr, cp.stderr
    r = admin.call("POST", "/api/v1/devices/%s/commands" % dev.id, json={"type": "lock"})
    assert r.status == 409, r


def test_admin_unenroll_refuses_certificate(env):
    srv, admin, agent = env
    dev = agent.enroll()
    dev.checkin()
    admin.call("POST", "/api/v1/devices/%s/unenroll" % dev.id, expect=200)
    assert_401(dev.api("POST", "/agent/v1/checkin", json={}))
    assert dev.run(expect=4).returncode == 4


@pytest.mark.parametrize("tls_version", ["TLSv1_2", "TLSv1_3"])
def test_certificate_of_another_ca_refused(env, tmp_path, tls_version):
    """A certificate naming a real device but signed by another CA (a throwaway one, or the
    server's TLS CA) fails the TLS handshake: the server answers with an unknown_ca alert."""
    srv, admin, agent = env
    dev = agent.enroll()
    throwaway = foreign_cert(tmp_path / "evil", dev.id)
    server_ca = foreign_cert(tmp_path / "srvca", dev.id, ca=(srv.ca, srv.var / "tls" / "ca.key"))
    for cert, key in (throwaway, server_ca):
        ctx = ssl.create_default_context(cafile=str(srv.ca))
        ctx.load_cert_chain(str(cert), str(key))
        ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, tls_version)
        sock = socket.create_connection(("127.0.0.1", srv.agent_port), timeout=10)
        try:
            with pytest.raises(ssl.SSLError) as ei:
                tls = ctx.wrap_socket(sock, server_hostname="127.0.0.1")
                # TLS 1.3: the client's side of the handshake ends before the server checks the
                # certificate; the alert is what the first read gets (nothing is written, so
                # no request races the server's close).
                tls.recv(1)
            assert ei.value.reason == "TLSV1_ALERT_UNKNOWN_CA", ei.value
        finally:
            sock.close()
    assert dev.checkin()["commands"] == []


def test_no_certificate_401(env, tmp_path):
    srv, admin, agent = env
    for method, path, payload in ENDPOINTS_WITH_CERT:
        r = srv.agent_api(method, path, json=payload)
        assert_401(r, path)
        assert "certificate" in error_message(r)
    # Enrollment needs none.
    k = admin.key()
    assert raw_enroll(srv, tmp_path, {"method": "key", "key": k["key"]}).status == 201


def test_device_cannot_touch_another_devices_commands(env):
    srv, admin, agent = env
    a, b = agent.enroll(), agent.enroll()
    cmd_b = admin.queue(b.id, "lock")["id"]
    assert a.checkin()["commands"] == []
    for status in ("acknowledged", "completed", "failed"):
        r = a.api("POST", "/agent/v1/commands/%s/result" % cmd_b, json={"status": status, "error": "x"}
                  if status == "failed" else {"status": status, "result": {"locked_at": 1}})
        assert r.status == 404 and r.error_code() == "not_found", r
    c = admin.command(cmd_b)
    assert c["state"] == "queued" and c["attempts"] == 0 and c["result"] is None, c
    assert "command %s lock: completed" % cmd_b in b.run().stdout
    r = a.api("POST", "/agent/v1/commands/%s/result" % cmd_b, json={"status": "failed", "error": "x"})
    assert r.status == 404, r
    assert admin.command(cmd_b)["state"] == "completed"
    for bad in (str(uuid.uuid4()), "not-a-uuid"):
        r = a.api("POST", "/agent/v1/commands/%s/result" % bad, json={"status": "completed"})
        assert r.status == 404, r


def test_certificate_renewal(env, tmp_path):
    srv, admin, agent = env
    dev = agent.enroll()
    old = dev.cert
    old_serial = cert_serial(old[0])
    new_key, csr = make_csr(tmp_path / "renew", cn="ignored")
    conn = dev.connection()
    try:
        dev.checkin(conn=conn)
        r = dev.api("POST", "/agent/v1/certificate", json={"csr": csr})
        assert r.status == 200, r
        assert r.body["not_after"] > time.time() + 300 * 86400, r.body
        new_cert = tmp_path / "renewed.pem"
        new_cert.write_text(r.body["certificate"])
        assert cert_subject_cn(new_cert) == dev.id and cert_verifies(srv.device_ca, new_cert)
        new_serial = cert_serial(new_cert)
        assert new_serial != old_serial
        assert admin.device(dev.id)["cert_serial"].lstrip("0") == new_serial
        # The old certificate stops at once, also on a connection it authenticated before.
        assert_401(dev.api("POST", "/agent/v1/checkin", json={}, conn=conn), "old cert, same connection")
    finally:
        conn.close()
    assert_401(srv.agent_api("POST", "/agent/v1/checkin", json={}, cert=old), "old cert")
    assert_401(srv.agent_api("POST", "/agent/v1/certificate", json={"csr": csr}, cert=old), "old cert renews")
    new = (new_cert, new_key)
    assert srv.agent_api("POST", "/agent/v1/checkin", json={}, cert=new).status == 200
    # A bad request for renewal changes nothing.
    _, rsa_csr = make_csr(tmp_path / "rsa", rsa=True)
    for bad in ("garbage", rsa_csr):
        r = srv.agent_api("POST", "/agent/v1/certificate", json={"csr": bad}, cert=new)
        assert r.status == 400 and "csr" in error_message(r), r
    assert srv.agent_api("POST", "/agent/v1/checkin", json={}, cert=new).status == 200
    assert admin.device(dev.id)["cert_serial"].lstrip("0") == new_serial


def test_certificate_renewal_by_agent(env, tmp_path):
    srv, admin, agent = env
    dev = agent.enroll()
    old = dev.keep_cert(tmp_path / "old")
    cp = dev.run("--renew")
    assert (dev.state / "cert.pem").read_text() != old[0].read_text(), cp.stdout
    assert (dev.state / "key.pem").read_text() != old[1].read_text(), "renewal takes a new key"
    assert admin.device(dev.id)["cert_serial"].lstrip("0") == cert_serial(dev.state / "cert.pem")
    assert_401(srv.agent_api("POST", "/agent/v1/checkin", json={}, cert=old))
    lock = admin.queue(dev.id, "lock")["id"]
    assert "command %s lock: completed" % lock in dev.run().stdout


def test_server_asks_for_renewal(servers, agent_bin, tmp_path):
    """With agent.renew_before longer than the certificate lifetime every check-in asks for it."""
    srv = servers.start(plugins=[], settings={"agent": {"renew_before": "400d"}})
    admin, agent = make_env(srv, agent_bin, tmp_path)
    dev = agent.enroll()
    assert dev.checkin()["renew_certificate"] is True
    before = cert_serial(dev.state / "cert.pem")
    dev.run()
    assert cert_serial(dev.state / "cert.pem") != before
    assert admin.device(dev.id)["cert_serial"].lstrip("0") == cert_serial(dev.state / "cert.pem")


# ---- metrics


def test_metrics_enrollments_and_checkins(env, tmp_path):
    srv, admin, agent = env
    key0 = metric_value(srv, "bulwark_enrollments_total", '{method="key"}')
    inv0 = metric_value(srv, "bulwark_enrollments_total", '{method="invitation"}')
    dev = agent.enroll()
    email = "m-%s@example.org" % uuid.uuid4().hex[:8]
    agent.enroll("--invitation", email, "--code", admin.invite(email))
    assert raw_enroll(srv, tmp_path, {"method": "key", "key": "ZZZZ-ZZZZ-YYYY"}).status == 403
    assert metric_value(srv, "bulwark_enrollments_total", '{method="key"}') == key0 + 1
    assert metric_value(srv, "bulwark_enrollments_total", '{method="invitation"}') == inv0 + 1

    c0 = metric_value(srv, "bulwark_checkins_total")
    for _ in range(3):
        dev.checkin()
    assert_401(srv.agent_api("POST", "/agent/v1/checkin", json={}))
    assert dev.api("POST", "/agent/v1/checkin", body="{").status == 400
    assert metric_value(srv, "bulwark_checkins_total") == c0 + 3


def test_plugin_agent_route_needs_device_certificate(module_servers, agent_bin, tmp_path):
    """A plugin's agent route (/agent/v1/plugins/<name>/...) runs only for a valid device
    certificate, and the plugin sees the device id as the caller."""
    srv = module_servers.start(plugins=["example_hello"])
    devs = tmp_path / "devs"
    devs.mkdir()
    admin, agent = make_env(srv, agent_bin, devs)
    dev = agent.enroll()
    r = dev.api("GET", "/agent/v1/plugins/example_hello/hello")
    assert r.status == 200 and r.body["message"] == "Hello, %s!" % dev.id, r
    assert srv.agent_api("GET", "/agent/v1/plugins/example_hello/hello").status == 401
    dev.agent("unenroll", "--state", dev.state)
    assert dev.api("GET", "/agent/v1/plugins/example_hello/hello").status == 401
