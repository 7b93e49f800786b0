"""Device administration on the admin API and through bulwarkctl: enrollment keys, invitations
and their outbox, the device allowlist, refusals, devices, commands and event logs; input
validation (malformed JSON, wrong types, oversize values), roles and audit entries.

Tests that need an enrolled device enroll one through the agent listener
(POST /agent/v1/enroll); they are skipped while that endpoint does not answer."""

import calendar
import json
import re
import subprocess
import time
import uuid
from urllib.parse import quote

import pytest

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
KEY_RE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{4}$")
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

GOOD_IMEI = "490154203237518"
GOOD_IMEI_SPACED = ("35-209900-176148-1", "352099001761481")


def uniq(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def ts(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def ok(cp):
    assert cp.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (cp.returncode, cp.stdout, cp.stderr)
    return cp


def err_message(r):
    return r.body["error"]["message"] if isinstance(r.body, dict) and "error" in r.body else ""


def luhn_imei(prefix14):
    """A valid IMEI from 14 digits (appends the Luhn check digit)."""
    total = 0
    for i, ch in enumerate(prefix14):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return prefix14 + str((10 - total % 10) % 10)


@pytest.fixture(scope="module")
def readonly_token(server, admin_token):
    name = uniq("ro")
    server.add_admin(admin_token, name, "readonly-password-1", role="readonly")
    return server.login(name, "readonly-password-1")


@pytest.fixture(scope="module")
def ctl_env(server, admin_token):
    r = server.api("POST", "/api/v1/tokens", json={"name": "devices-ctl"}, token=admin_token)
    assert r.status == 201, r
    return {"BULWARK_TOKEN": r.body["token"]}


LIST_SERVER_MAX_BODY = 4096


@pytest.fixture(scope="module")
def list_server(module_servers):
    """A server of this module's own for allowlist entries (unique per value across the list),
    with a small body limit."""
    srv = module_servers.start(plugins=[], settings={"limits": {"max_body_bytes": LIST_SERVER_MAX_BODY}})
    return srv, srv.login()


def audit_entries(server, token, action):
    r = server.api("GET", "/api/v1/audit?limit=1000", token=token)
    assert r.status == 200, r
    return [e for e in r.body["entries"] if e["action"] == action]


# ---- enrollment keys


def test_key_create_defaults_list_revoke(server, admin_token):
    r = server.api("POST", "/api/v1/enrollment/keys", json={}, token=admin_token)
    assert r.status == 201, r
    k = r.body
    assert UUID_RE.match(k["id"]) and KEY_RE.match(k["key"]), k
    assert k["prefix"] == k["key"][:4]
    assert k["group"] is None and k["max_uses"] is None and k["expires_at"] is None

    r = server.api("GET", "/api/v1/enrollment/keys", token=admin_token)
    assert r.status == 200, r
    assert k["key"] not in r.raw.decode(), "the list must never show a key"
    listed = [x for x in r.body["keys"] if x["id"] == k["id"]]
    assert len(listed) == 1 and listed[0]["prefix"] == k["prefix"]
    assert listed[0]["group"] is None and listed[0]["max_uses"] is None and listed[0]["expires_at"] is None
    assert not any("hash" in f for f in listed[0])
    assert RFC3339_RE.match(listed[0]["created_at"]), listed[0]

    assert server.api("DELETE", "/api/v1/enrollment/keys/" + k["id"], token=admin_token).status == 204
    entries = audit_entries(server, admin_token, "enrollment_key.revoke")
    assert any(e["target"] == k["id"] and e["outcome"] == "success" for e in entries)
    created = audit_entries(server, admin_token, "enrollment_key.create")
    assert any(e["target"] == k["id"] for e in created)
    assert k["key"] not in json.dumps(created), "the audit log must not hold a key"
    assert k["key"] not in server.log_text(), "the server log must not hold a key"


def test_key_create_with_options(server, admin_token):
    before = time.time()
    r = server.api("POST", "/api/v1/enrollment/keys", json={"group": "sales", "max_uses": 5, "expires_in": 3600},
                   token=admin_token)
    assert r.status == 201, r
    assert r.body["group"] == "sales" and r.body["max_uses"] == 5
    listed = [x for x in server.api("GET", "/api/v1/enrollment/keys", token=admin_token).body["keys"]
              if x["id"] == r.body["id"]]
    assert listed[0]["group"] == "sales" and listed[0]["max_uses"] == 5 and listed[0]["uses"] == 0, listed
    exp = ts(r.body["expires_at"])
    assert before + 3600 - 5 <= exp <= time.time() + 3600 + 5, r.body
    # An empty body is the same as {}.
    r = server.api("POST", "/api/v1/enrollment/keys", body=b"", token=admin_token)
    assert r.status == 201, r


def test_keys_are_random_and_well_formed(server, admin_token):
    keys = set()
    for _ in range(20):
        r = server.api("POST", "/api/v1/enrollment/keys", json={}, token=admin_token)
        assert r.status == 201 and KEY_RE.match(r.body["key"]), r
        keys.add(r.body["key"])
    assert len(keys) == 20


@pytest.mark.parametrize("payload,field", [
    ({"group": 12}, "group"),
    ({"group": ""}, "group"),
    ({"group": "g" * 129}, "group"),
    ({"group": "two\nlines"}, "group"),
    ({"max_uses": 0}, "max_uses"),
    ({"max_uses": -1}, "max_uses"),
    ({"max_uses": "5"}, "max_uses"),
    ({"max_uses": 1.5}, "max_uses"),
    ({"max_uses": True}, "max_uses"),
    ({"max_uses": 10 ** 12}, "max_uses"),
    ({"expires_in": 59}, "expires_in"),
    ({"expires_in": 315360001}, "expires_in"),
    ({"expires_in": "3600"}, "expires_in"),
])
def test_key_bad_fields(server, admin_token, payload, field):
    r = server.api("POST", "/api/v1/enrollment/keys", json=payload, token=admin_token)
    assert r.status == 400 and r.error_code() == "bad_request", r
    assert field in err_message(r)


@pytest.mark.parametrize("body", [b"{", b"[]", b"\"key\"", b"{\"group\": \"a\", \"group\": \"b\"}", b"\xff\xfe"])
def test_key_malformed_json(server, admin_token, body):
    r = server.api("POST", "/api/v1/enrollment/keys", body=body, token=admin_token,
                   headers={"Content-Type": "application/json"})
    assert r.status == 400 and r.error_code() == "invalid_json", r


def test_key_revoke_bad_and_unknown(server, admin_token):
    r = server.api("DELETE", "/api/v1/enrollment/keys/not-a-uuid", token=admin_token)
    assert r.status == 400, r
    r = server.api("DELETE", "/api/v1/enrollment/keys/" + str(uuid.uuid4()), token=admin_token)
    assert r.status == 404, r


def test_oversize_body_413(list_server):
    srv, token = list_server
    big = {"kind": "imei", "value": GOOD_IMEI, "note": "x" * (LIST_SERVER_MAX_BODY + 100)}
    r = srv.api("POST", "/api/v1/enrollment/allowlist", json=big, token=token)
    assert r.status == 413, r
    # Just under the limit: read, then refused for the note's length.
    big["note"] = "x" * (LIST_SERVER_MAX_BODY - 200)
    r = srv.api("POST", "/api/v1/enrollment/allowlist", json=big, token=token)
    assert r.status == 400 and "note" in err_message(r), r
    assert srv.api("GET", "/healthz").status == 200


# ---- invitations and outbox


def test_invitation_create_list_outbox(server, admin_token):
    email = uniq("alice") + "@example.org"
    before = time.time()
    r = server.api("POST", "/api/v1/enrollment/invitations", json={"email": email}, token=admin_token)
    assert r.status == 201, r
    inv = r.body
    assert UUID_RE.match(inv["id"]) and inv["email"] == email
    exp = ts(inv["expires_at"])
    assert before + 7 * 86400 - 5 <= exp <= time.time() + 7 * 86400 + 5, inv  # default: 7 days

    # Several invitations per address.
    r2 = server.api("POST", "/api/v1/enrollment/invitations", json={"email": email, "expires_in": 600},
                    token=admin_token)
    assert r2.status == 201 and r2.body["id"] != inv["id"], r2

    r = server.api("GET", "/api/v1/enrollment/invitations", token=admin_token)
    assert r.status == 200, r
    mine = [x for x in r.body["invitations"] if x["id"] in (inv["id"], r2.body["id"])]
    assert len(mine) == 2 and all(x["email"] == email for x in mine)
    assert not any("hash" in f or "code" in f for x in mine for f in x)

    r = server.api("GET", "/api/v1/enrollment/outbox", token=admin_token)
    assert r.status == 200, r
    msgs = [m for m in r.body["messages"] if email in json.dumps(m)]
    assert len(msgs) == 2, r.body
    codes = set()
    for m in msgs:
        text = json.dumps(m)
        assert "https://127.0.0.1:%d" % server.agent_port in text, m
        found = re.findall(r"Invitation code: (\d{8})\b", "\n".join(v for v in m.values() if isinstance(v, str)))
        assert len(found) == 1, m
        codes.add(found[0])
        assert any(isinstance(v, str) and "Enroll" in v for v in m.values()), m  # the subject
    assert len(codes) == 2, "each invitation has its own code"
    for c in codes:
        assert c not in json.dumps(server.api("GET", "/api/v1/enrollment/invitations", token=admin_token).body)
        assert c not in server.log_text(), "the server log must not hold an invitation code"
    assert any(e["target"] == inv["id"] for e in audit_entries(server, admin_token, "invitation.create"))


@pytest.mark.parametrize("email", [
    "", "no-at-sign", "a@b@example.org", "@example.org", "alice@", "al ice@example.org", "alice@example.org\n",
    "alice\t@example.org", "alice@.example.org", "alice@example..org", "a" * 250 + "@example.org",
])
def test_invitation_bad_email(server, admin_token, email):
    r = server.api("POST", "/api/v1/enrollment/invitations", json={"email": email}, token=admin_token)
    assert r.status == 400 and "email" in err_message(r), r


@pytest.mark.parametrize("payload", [
    {}, {"email": 5}, {"email": None}, {"email": "a@example.org", "expires_in": 30},
    {"email": "a@example.org", "expires_in": 91 * 86400}, {"email": "a@example.org", "expires_in": "600"},
])
def test_invitation_bad_fields(server, admin_token, payload):
    r = server.api("POST", "/api/v1/enrollment/invitations", json=payload, token=admin_token)
    assert r.status == 400, r


def test_invitation_malformed_json(server, admin_token):
    r = server.api("POST", "/api/v1/enrollment/invitations", body="{\"email\": ", token=admin_token)
    assert r.status == 400 and r.error_code() == "invalid_json", r
    r = server.api("POST", "/api/v1/enrollment/invitations", body="", token=admin_token)
    assert r.status == 400 and r.error_code() == "invalid_json", r


# ---- allowlist


@pytest.mark.parametrize("kind,value,stored", [
    ("imei", GOOD_IMEI_SPACED[0], GOOD_IMEI_SPACED[1]),
    ("imei", "35 209900 176148 1", GOOD_IMEI_SPACED[1]),
    ("meid", "A0 000000 002329", "a0000000002329"),
    ("wifi_mac", "02-00-00-AA-BB-CC", "02:00:00:aa:bb:cc"),
    ("wifi_mac", "020000AABBCD", "02:00:00:aa:bb:cd"),
])
def test_allowlist_normalises(list_server, kind, value, stored):
    srv, token = list_server
    r = srv.api("POST", "/api/v1/enrollment/allowlist", json={"kind": kind, "value": value, "note": "n"},
                token=token)
    assert r.status == 201, r
    assert r.body["kind"] == kind and r.body["value"] == stored and r.body["note"] == "n", r.body
    r = srv.api("GET", "/api/v1/enrollment/allowlist", token=token)
    assert r.status == 200 and r.body["enabled"] is False, r
    entry = [e for e in r.body["entries"] if (e["kind"], e["value"]) == (kind, stored)]
    assert len(entry) == 1 and entry[0]["note"] == "n" and RFC3339_RE.match(entry[0]["created_at"]), r.body
    # The same device in another spelling is a duplicate.
    r = srv.api("POST", "/api/v1/enrollment/allowlist", json={"kind": kind, "value": stored.upper()}, token=token)
    assert r.status == 409, r
    # Removal accepts any spelling.
    r = srv.api("DELETE", "/api/v1/enrollment/allowlist/%s/%s" % (kind, quote(value, safe="")), token=token)
    assert r.status == 204, r
    r = srv.api("DELETE", "/api/v1/enrollment/allowlist/%s/%s" % (kind, quote(stored, safe="")), token=token)
    assert r.status == 404, r
    entries = srv.api("GET", "/api/v1/enrollment/allowlist", token=token).body["entries"]
    assert (kind, stored) not in [(e["kind"], e["value"]) for e in entries]
    actions = [e["action"] for e in srv.api("GET", "/api/v1/audit", token=token).body["entries"]]
    assert "allowlist.add" in actions and "allowlist.remove" in actions


@pytest.mark.parametrize("kind,value,why", [
    ("imei", "490154203237517", "IMEI check digit is wrong"),
    ("imei", "49015420323751", "IMEI must have 15 digits"),
    ("imei", "4901542032375188", "IMEI must have 15 digits"),
    ("imei", "49015420323751x", "IMEI may contain only digits"),
    ("meid", "A000000000232", "MEID must have 14"),
    ("meid", "G0000000002329", "MEID may contain only hexadecimal"),
    ("wifi_mac", "02:00:00-aa:bb:cc", "Wi-Fi MAC"),
    ("wifi_mac", "02:00:00:aa:bb", "Wi-Fi MAC"),
    ("wifi_mac", "0200.00aa.bbcc", "Wi-Fi MAC"),
])
def test_allowlist_bad_values(server, admin_token, kind, value, why):
    r = server.api("POST", "/api/v1/enrollment/allowlist", json={"kind": kind, "value": value}, token=admin_token)
    assert r.status == 400 and why in err_message(r), r
    r = server.api("DELETE", "/api/v1/enrollment/allowlist/%s/%s" % (kind, quote(value, safe="")),
                   token=admin_token)
    assert r.status == 400 and why in err_message(r), r


@pytest.mark.parametrize("payload", [
    {"value": GOOD_IMEI}, {"kind": "imei"}, {"kind": "serial", "value": GOOD_IMEI}, {"kind": 1, "value": GOOD_IMEI},
    {"kind": "imei", "value": 490154203237518}, {"kind": "imei", "value": GOOD_IMEI, "note": "n" * 257},
    {"kind": "imei", "value": GOOD_IMEI, "note": 5}, {"kind": "imei", "value": "4" * 65},
])
def test_allowlist_bad_fields(server, admin_token, payload):
    r = server.api("POST", "/api/v1/enrollment/allowlist", json=payload, token=admin_token)
    assert r.status == 400 and r.error_code() == "bad_request", r


def test_allowlist_delete_bad_kind(server, admin_token):
    r = server.api("DELETE", "/api/v1/enrollment/allowlist/serial/123", token=admin_token)
    assert r.status == 400, r


def test_allowlist_enable_disable(servers):
    srv = servers.start(plugins=[])
    token = srv.login()
    for on in (True, False, True):
        r = srv.api("PUT", "/api/v1/enrollment/allowlist/enabled", json={"enabled": on}, token=token)
        assert r.status == 200 and r.body == {"enabled": on}, r
        assert srv.api("GET", "/api/v1/enrollment/allowlist", token=token).body["enabled"] is on
    for payload in ({}, {"enabled": "yes"}, {"enabled": 1}, {"enabled": None}):
        r = srv.api("PUT", "/api/v1/enrollment/allowlist/enabled", json=payload, token=token)
        assert r.status == 400 and "enabled" in err_message(r), r
    r = srv.api("PUT", "/api/v1/enrollment/allowlist/enabled", body="true", token=token)
    assert r.status == 400, r
    assert srv.api("GET", "/api/v1/enrollment/allowlist", token=token).body["enabled"] is True
    actions = [e["action"] for e in srv.api("GET", "/api/v1/audit", token=token).body["entries"]]
    assert actions.count("allowlist.enable") == 2 and actions.count("allowlist.disable") == 1
    # The setting survives a restart.
    srv.stop()
    srv.start()
    token = srv.login()
    assert srv.api("GET", "/api/v1/enrollment/allowlist", token=token).body["enabled"] is True


def test_refusals_query(server, admin_token):
    r = server.api("GET", "/api/v1/enrollment/refusals", token=admin_token)
    assert r.status == 200 and isinstance(r.body["refusals"], list), r
    assert server.api("GET", "/api/v1/enrollment/refusals?limit=1000", token=admin_token).status == 200
    for bad in ("0", "1001", "abc", "-1", "1x", ""):
        r = server.api("GET", "/api/v1/enrollment/refusals?limit=" + bad, token=admin_token)
        assert r.status == 400, (bad, r)


# ---- roles


@pytest.mark.parametrize("method,path,payload", [
    ("POST", "/api/v1/enrollment/keys", {}),
    ("DELETE", "/api/v1/enrollment/keys/" + str(uuid.uuid4()), None),
    ("POST", "/api/v1/enrollment/invitations", {"email": "x@example.org"}),
    ("GET", "/api/v1/enrollment/outbox", None),
    ("POST", "/api/v1/enrollment/allowlist", {"kind": "imei", "value": GOOD_IMEI}),
    ("DELETE", "/api/v1/enrollment/allowlist/imei/" + GOOD_IMEI, None),
    ("PUT", "/api/v1/enrollment/allowlist/enabled", {"enabled": True}),
    ("POST", "/api/v1/devices/%s/commands" % uuid.uuid4(), {"type": "lock"}),
    ("POST", "/api/v1/devices/%s/unenroll" % uuid.uuid4(), None),
    ("DELETE", "/api/v1/commands/" + str(uuid.uuid4()), None),
])
def test_readonly_refused(server, readonly_token, method, path, payload):
    r = server.api(method, path, json=payload, token=readonly_token)
    assert r.status == 403 and r.error_code() == "forbidden", r
    r = server.api(method, path, json=payload)
    assert r.status == 401, r


@pytest.mark.parametrize("path", [
    "/api/v1/enrollment/keys", "/api/v1/enrollment/invitations", "/api/v1/enrollment/allowlist",
    "/api/v1/enrollment/refusals", "/api/v1/devices", "/api/v1/logs",
])
def test_readonly_reads(server, readonly_token, path):
    r = server.api("GET", path, token=readonly_token)
    assert r.status == 200, r
    assert server.api("GET", path).status == 401


# ---- devices, commands, logs without devices


def test_device_list_filters_validated(server, admin_token):
    r = server.api("GET", "/api/v1/devices", token=admin_token)
    assert r.status == 200 and isinstance(r.body["devices"], list) and "next_after" in r.body, r
    good = ["platform=android", "platform=ios", "status=active", "status=unregistered", "status=wiped",
            "group=sales", "os=" + quote(">=12.1"), "os=" + quote("<10"), "os=" + quote("=12"),
            "os=" + quote(">12.1.3-beta"), "os=" + quote("<=9"), "limit=1", "limit=1000",
            "after=" + str(uuid.uuid4())]
    for q in good:
        r = server.api("GET", "/api/v1/devices?" + q, token=admin_token)
        assert r.status == 200, (q, r)
    bad = ["platform=windows", "status=lost", "os=12.1", "os=" + quote("~12"), "os=" + quote(">=abc"),
           "os=" + quote(">="), "os=" + quote("=>12"), "os=" + quote("==12"), "after=123", "limit=0",
           "limit=1001", "limit=x", "group=", "group=" + "g" * 129]
    for q in bad:
        r = server.api("GET", "/api/v1/devices?" + q, token=admin_token)
        assert r.status == 400, (q, r)
    r = server.api("GET", "/api/v1/devices?os=" + quote("~12"), token=admin_token)
    assert "operator" in err_message(r)


def test_unknown_device_and_command(server, admin_token):
    dev, cmd = str(uuid.uuid4()), str(uuid.uuid4())
    for method, path, payload, status in [
        ("GET", "/api/v1/devices/" + dev, None, 404),
        ("GET", "/api/v1/devices/not-a-uuid", None, 400),
        ("GET", "/api/v1/devices/%s/commands" % dev, None, 404),
        ("POST", "/api/v1/devices/%s/commands" % dev, {"type": "lock"}, 404),
        ("POST", "/api/v1/devices/not-a-uuid/commands", {"type": "lock"}, 400),
        ("POST", "/api/v1/devices/%s/unenroll" % dev, None, 404),
        ("GET", "/api/v1/commands/" + cmd, None, 404),
        ("GET", "/api/v1/commands/xyz", None, 400),
        ("DELETE", "/api/v1/commands/" + cmd, None, 404),
        ("DELETE", "/api/v1/commands/xyz", None, 400),
    ]:
        r = server.api(method, path, json=payload, token=admin_token)
        assert r.status == status, (method, path, r)


@pytest.mark.parametrize("payload,status", [
    ({}, 400), ({"type": 5}, 400), ({"type": ""}, 400), ({"type": "lock", "params": "x"}, 400),
    ({"type": "lock", "params": [1]}, 400), ({"type": "lock", "ttl": 10}, 400), ({"type": "lock", "ttl": "60"}, 400),
    ({"type": "lock", "ttl": 366 * 86400}, 400), ({"type": "lock", "params": {"x": "y" * 17000}}, 400),
])
def test_command_body_validated(server, admin_token, payload, status):
    r = server.api("POST", "/api/v1/devices/%s/commands" % uuid.uuid4(), json=payload, token=admin_token)
    assert r.status == status, r


def test_command_malformed_json(server, admin_token):
    r = server.api("POST", "/api/v1/devices/%s/commands" % uuid.uuid4(), body="{type: lock}", token=admin_token)
    assert r.status == 400 and r.error_code() == "invalid_json", r


def test_logs_query_validated(server, admin_token):
    good = ["", "?device=" + str(uuid.uuid4()), "?type=malware_found", "?since=0", "?since=1700000000",
            "?since=2025-06-01T00:00:00Z", "?since=" + quote("2025-06-01T02:00:00+02:00"),
            "?since=2025-06-01T00:00:00.5Z&until=2025-06-02T00:00:00Z", "?limit=1000"]
    for q in good:
        r = server.api("GET", "/api/v1/logs" + q, token=admin_token)
        assert r.status == 200 and isinstance(r.body["events"], list), (q, r)
    bad = ["?device=x", "?type=Bad!", "?type=" + "a" * 65, "?since=yesterday", "?since=2025-13-01T00:00:00Z",
           "?since=2025-04-31T00:00:00Z", "?since=2025-06-01", "?since=-5", "?until=99999999999999",
           "?since=2025-06-02T00:00:00Z&until=2025-06-01T00:00:00Z", "?before=0", "?before=x", "?limit=0"]
    for q in bad:
        r = server.api("GET", "/api/v1/logs" + q, token=admin_token)
        assert r.status == 400, (q, r)


def test_method_not_allowed(server, admin_token):
    assert server.api("PUT", "/api/v1/enrollment/keys", json={}, token=admin_token).status == 405
    assert server.api("GET", "/api/v1/enrollment/allowlist/enabled", token=admin_token).status == 405


# ---- bulwarkctl without devices


def test_ctl_keys(server, ctl_env):
    cp = ok(server.ctl("keys", "create", "--group", "field", "--uses", "3", "--expires", "30d", env=ctl_env))
    lines = cp.stdout.strip().splitlines()
    assert len(lines) == 2 and "group field" in lines[0] and "uses 3" in lines[0], cp.stdout
    key = lines[1]
    assert KEY_RE.match(key), cp.stdout
    assert "cannot be shown again" in cp.stderr
    listing = ok(server.ctl("keys", "list", env=ctl_env)).stdout
    assert key[:4] in listing and key not in listing
    k = json.loads(ok(server.ctl("--json", "keys", "create", env=ctl_env)).stdout)
    assert KEY_RE.match(k["key"]) and k["max_uses"] is None
    cp = ok(server.ctl("keys", "revoke", k["id"], env=ctl_env))
    assert "Revoked enrollment key " + k["id"] in cp.stdout
    cp = server.ctl("keys", "revoke", str(uuid.uuid4()), env=ctl_env)
    assert cp.returncode == 1 and "404" in cp.stderr, cp
    for args in (["keys", "create", "--uses", "0"], ["keys", "create", "--uses", "x"],
                 ["keys", "create", "--expires", "soon"], ["keys", "list", "--note", "x"], ["keys", "revoke"],
                 ["keys", "create", "--group", "a\nb"]):
        cp = server.ctl(*args, env=ctl_env)
        assert cp.returncode == 2, (args, cp)


def test_ctl_invitations_and_outbox(server, ctl_env):
    email = uniq("bob") + "@example.org"
    cp = ok(server.ctl("invitations", "create", email, "--expires", "2d", env=ctl_env))
    assert "Invited " + email in cp.stdout and "outbox" in cp.stdout
    assert email in ok(server.ctl("invitations", "list", env=ctl_env)).stdout
    assert email in ok(server.ctl("outbox", env=ctl_env)).stdout
    msgs = json.loads(ok(server.ctl("--json", "outbox", env=ctl_env)).stdout)["messages"]
    assert any(email in json.dumps(m) and re.search(r"Invitation code: \d{8}", json.dumps(m)) for m in msgs)
    cp = server.ctl("invitations", "create", "not-an-address", env=ctl_env)
    assert cp.returncode == 2, cp
    cp = server.ctl("invitations", "create", "a b@example.org", env=ctl_env)
    assert cp.returncode == 1 and "email" in cp.stderr and "400" in cp.stderr, cp


def test_ctl_allowlist(servers):
    srv = servers.start(plugins=[])
    r = srv.api("POST", "/api/v1/tokens", json={"name": "ctl"}, token=srv.login())
    env = {"BULWARK_TOKEN": r.body["token"]}
    cp = ok(srv.ctl("allowlist", "add", "imei", GOOD_IMEI_SPACED[0], "--note", "Bob's phone", env=env))
    assert "Added imei " + GOOD_IMEI_SPACED[1] in cp.stdout, cp.stdout
    ok(srv.ctl("allowlist", "add", "wifi_mac", "02-00-00-AA-BB-CC", env=env))
    cp = ok(srv.ctl("allowlist", "list", env=env))
    assert "disabled" in cp.stdout and GOOD_IMEI_SPACED[1] in cp.stdout and "02:00:00:aa:bb:cc" in cp.stdout
    assert "Bob's phone" in cp.stdout
    assert "enabled" in ok(srv.ctl("allowlist", "enable", env=env)).stdout
    assert json.loads(ok(srv.ctl("--json", "allowlist", "list", env=env)).stdout)["enabled"] is True
    ok(srv.ctl("allowlist", "disable", env=env))
    assert json.loads(ok(srv.ctl("allowlist", "list", "--json", env=env)).stdout)["enabled"] is False
    cp = srv.ctl("allowlist", "add", "imei", "490154203237517", env=env)
    assert cp.returncode == 1 and "IMEI check digit is wrong" in cp.stderr, cp
    cp = srv.ctl("allowlist", "add", "serial", "123", env=env)
    assert cp.returncode == 2 and "imei, meid or wifi_mac" in cp.stderr, cp
    cp = ok(srv.ctl("allowlist", "remove", "wifi_mac", "02:00:00:aa:bb:cc", env=env))
    assert "Removed" in cp.stdout
    cp = srv.ctl("allowlist", "remove", "wifi_mac", "02:00:00:aa:bb:cc", env=env)
    assert cp.returncode == 1 and "404" in cp.stderr, cp
    assert srv.ctl("allowlist", "add", "imei", env=env).returncode == 2
    ok(srv.ctl("refusals", env=env))
    assert srv.ctl("refusals", "--limit", "0", env=env).returncode == 2


def test_ctl_devices_and_logs_without_devices(server, ctl_env):
    cp = ok(server.ctl("devices", "list", env=ctl_env))
    assert cp.stdout.startswith("ID") and "PLATFORM" in cp.stdout
    d = json.loads(ok(server.ctl("devices", "list", "--platform", "android", "--os", ">=12.1", "--json",
                                 env=ctl_env)).stdout)
    assert isinstance(d["devices"], list)
    for args in (["devices", "list", "--os", "12"], ["devices", "list", "--platform", "windows"],
                 ["devices", "list", "--status", "lost"], ["devices", "list", "--limit", "5000"],
                 ["devices", "lock"], ["devices", "reboot", "x"], ["logs", "--since", "yesterday"],
                 ["logs", "--until", "2025-13-01T00:00:00Z"], ["commands", "cancel"], ["devices", "lock", "..", ]):
        cp = server.ctl(*args, env=ctl_env)
        assert cp.returncode == 2, (args, cp)
    cp = server.ctl("devices", "list", "--os", ">=abc", env=ctl_env)
    assert cp.returncode == 1 and "400" in cp.stderr, cp
    dev = str(uuid.uuid4())
    for args in (["devices", "show", dev], ["devices", "lock", dev], ["devices", "unenroll", dev],
                 ["commands", "list", dev], ["commands", "show", dev], ["commands", "cancel", dev]):
        cp = server.ctl(*args, env=ctl_env)
        assert cp.returncode == 1 and "404" in cp.stderr, (args, cp)
    cp = server.ctl("devices", "show", "not-a-uuid", env=ctl_env)
    assert cp.returncode == 1 and "400" in cp.stderr, cp
    ok(server.ctl("logs", "--since", "2025-01-01T00:00:00Z", "--until", str(int(time.time())), "--limit", "5",
                  "--type", "malware_found", env=ctl_env))
    assert "events" in json.loads(ok(server.ctl("--json", "logs", "--device", dev, env=ctl_env)).stdout)


def test_ctl_readonly_refused(server, readonly_token):
    env = {"BULWARK_TOKEN": readonly_token}
    ok(server.ctl("keys", "list", env=env))
    ok(server.ctl("devices", "list", env=env))
    for args in (["keys", "create"], ["allowlist", "enable"], ["outbox"],
                 ["devices", "wipe", str(uuid.uuid4())]):
        cp = server.ctl(*args, env=env)
        assert cp.returncode == 1 and "forbidden" in cp.stderr, (args, cp)


# ---- with enrolled devices (needs the agent side)


def make_csr(tmp_path):
    key, csr = tmp_path / ("k-%s.pem" % uuid.uuid4().hex), tmp_path / ("c-%s.pem" % uuid.uuid4().hex)
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-subj", "/CN=device", "-out", str(csr)], check=True, capture_output=True)
    return csr.read_text()


def enroll_raw(srv, tmp_path, credentials, **device):
    """POST /agent/v1/enroll with `credentials` (method and key or email/code) -> Response."""
    dev = {"platform": "android", "os_version": "14", "model": "Pixel 8", "manufacturer": "Google",
           "agent_version": "1.0.0"}
    dev.update(device)
    payload = dict(credentials, csr=make_csr(tmp_path), device=dev)
    try:
        r = srv.api("POST", "/agent/v1/enroll", json=payload, port=srv.agent_port)
    except OSError as e:
        pytest.skip("the agent enroll endpoint does not answer yet (%s)" % e)
    if r.status in (404, 405) or (r.status == 501 and credentials.get("method") != "directory"):
        pytest.skip("the agent enroll endpoint does not answer yet (HTTP %d)" % r.status)
    return r


def enroll(srv, token, tmp_path, **device):
    r = srv.api("POST", "/api/v1/enrollment/keys", json={}, token=token)
    assert r.status == 201, r
    r = enroll_raw(srv, tmp_path, {"method": "key", "key": r.body["key"]}, **device)
    assert r.status == 201, r
    return r.body["device_id"]


def test_enrollment_uses_keys_invitations_allowlist(servers, tmp_path):
    """What the admin API sets up is what enrollment obeys, and its refusals are listed."""
    srv = servers.start(plugins=[])
    token = srv.login()
    r = enroll_raw(srv, tmp_path, {"method": "key", "key": "AAAA-BBBB-CCCC"})
    assert r.status == 403, r

    # A key for one device, in a group.
    k = srv.api("POST", "/api/v1/enrollment/keys", json={"group": "field", "max_uses": 1}, token=token).body
    r = enroll_raw(srv, tmp_path, {"method": "key", "key": k["key"]})
    assert r.status == 201, r
    dev = r.body["device_id"]
    assert srv.api("GET", "/api/v1/devices/" + dev, token=token).body["group"] == "field"
    assert [d["id"] for d in srv.api("GET", "/api/v1/devices?group=field", token=token).body["devices"]] == [dev]
    listed = [x for x in srv.api("GET", "/api/v1/enrollment/keys", token=token).body["keys"] if x["id"] == k["id"]]
    assert listed[0]["uses"] == 1, listed
    assert enroll_raw(srv, tmp_path, {"method": "key", "key": k["key"]}).status == 403  # used up
    # A revoked key enrolls nothing.
    k2 = srv.api("POST", "/api/v1/enrollment/keys", json={}, token=token).body
    assert srv.api("DELETE", "/api/v1/enrollment/keys/" + k2["id"], token=token).status == 204
    assert enroll_raw(srv, tmp_path, {"method": "key", "key": k2["key"]}).status == 403

    # The code in the outbox message enrolls once.
    email = "carol@example.org"
    assert srv.api("POST", "/api/v1/enrollment/invitations", json={"email": email}, token=token).status == 201
    body = srv.api("GET", "/api/v1/enrollment/outbox", token=token).body["messages"][-1]["body"]
    code = re.search(r"Invitation code: (\d{8})", body).group(1)
    wrong = "%08d" % ((int(code) + 1) % 10 ** 8)
    assert enroll_raw(srv, tmp_path, {"method": "invitation", "email": email, "code": wrong}).status == 403
    r = enroll_raw(srv, tmp_path, {"method": "invitation", "email": email, "code": code})
    assert r.status == 201, r
    assert enroll_raw(srv, tmp_path, {"method": "invitation", "email": email, "code": code}).status == 403

    # The allowlist, once enabled, admits only listed devices.
    imei = luhn_imei("35209900176149")
    k3 = srv.api("POST", "/api/v1/enrollment/keys", json={}, token=token).body
    assert srv.api("PUT", "/api/v1/enrollment/allowlist/enabled", json={"enabled": True}, token=token).status == 200
    assert enroll_raw(srv, tmp_path, {"method": "key", "key": k3["key"]}, imei=imei).status == 403
    spaced = "%s %s %s" % (imei[:2], imei[2:8], imei[8:])
    r = srv.api("POST", "/api/v1/enrollment/allowlist", json={"kind": "imei", "value": spaced}, token=token)
    assert r.status == 201 and r.body["value"] == imei, r
    r = enroll_raw(srv, tmp_path, {"method": "key", "key": k3["key"]}, imei=imei)
    assert r.status == 201, r
    assert srv.api("PUT", "/api/v1/enrollment/allowlist/enabled", json={"enabled": False}, token=token).status == 200
    assert enroll_raw(srv, tmp_path, {"method": "key", "key": k3["key"]}).status == 201

    r = srv.api("GET", "/api/v1/enrollment/refusals", token=token)
    assert r.status == 200, r
    refusals = r.body["refusals"]
    assert len(refusals) == 6, refusals
    assert all(RFC3339_RE.match(x["at"]) and x["address"] == "127.0.0.1" for x in refusals), refusals
    reasons = " ".join(json.dumps(x) for x in refusals)
    for word in ("unknown", "invitation", "allowlist"):
        assert word in reasons, refusals
    assert k["key"] not in reasons and code not in reasons
    assert len(srv.api("GET", "/api/v1/enrollment/refusals?limit=2", token=token).body["refusals"]) == 2
    cp = ok(srv.ctl("refusals", "--limit", "3", env={"BULWARK_TOKEN": token}))
    assert len(cp.stdout.strip().splitlines()) == 4, cp.stdout  # header + 3


@pytest.fixture
def fleet(servers, tmp_path):
    """A private server with three enrolled devices: (server, admin token, ctl env, ids)."""
    srv = servers.start(plugins=[])
    token = srv.login()
    ids = {
        "a14": enroll(srv, token, tmp_path, platform="android", os_version="14"),
        "a11": enroll(srv, token, tmp_path, platform="android", os_version="11.0.2", imei=luhn_imei("35209900176148")),
        "i17": enroll(srv, token, tmp_path, platform="ios", os_version="17.1.3-beta"),
    }
    r = srv.api("POST", "/api/v1/tokens", json={"name": "ctl"}, token=token)
    return srv, token, {"BULWARK_TOKEN": r.body["token"]}, ids


def test_devices_list_show_filter(fleet):
    srv, token, _, ids = fleet
    r = srv.api("GET", "/api/v1/devices", token=token)
    assert r.status == 200, r
    assert sorted(d["id"] for d in r.body["devices"]) == sorted(ids.values())
    assert r.body["next_after"] is None

    def listed(q):
        r = srv.api("GET", "/api/v1/devices?" + q, token=token)
        assert r.status == 200, (q, r)
        return sorted(d["id"] for d in r.body["devices"])

    assert listed("platform=ios") == [ids["i17"]]
    assert listed("platform=android") == sorted([ids["a14"], ids["a11"]])
    assert listed("os=" + quote(">=12")) == sorted([ids["a14"], ids["i17"]])
    assert listed("os=" + quote("<12")) == [ids["a11"]]
    assert listed("os=" + quote("=14.0.0")) == [ids["a14"]]
    assert listed("os=" + quote(">17.1.3")) == [ids["i17"]]  # a vendor suffix sorts after the plain version
    assert listed("status=unregistered") == []
    # Paging by id.
    r = srv.api("GET", "/api/v1/devices?limit=2", token=token)
    assert len(r.body["devices"]) == 2 and r.body["next_after"] == r.body["devices"][1]["id"], r
    r2 = srv.api("GET", "/api/v1/devices?limit=2&after=" + r.body["next_after"], token=token)
    assert [d["id"] for d in r2.body["devices"]] == sorted(ids.values())[2:], r2

    r = srv.api("GET", "/api/v1/devices/" + ids["a11"], token=token)
    assert r.status == 200 and r.body["id"] == ids["a11"] and r.body["platform"] == "android", r
    assert r.body["status"] == "active"
    assert RFC3339_RE.match(r.body["enrolled_at"]), r.body


def test_commands_queue_merge_cancel(fleet):
    srv, token, _, ids = fleet
    dev = ids["a14"]
    url = "/api/v1/devices/%s/commands" % dev
    r = srv.api("POST", url, json={"type": "lock"}, token=token)
    assert r.status == 201 and r.body["merged"] is False and UUID_RE.match(r.body["id"]), r
    lock = r.body["id"]
    r1 = srv.api("POST", url, json={"type": "locate", "ttl": 3600}, token=token)
    r2 = srv.api("POST", url, json={"type": "locate"}, token=token)
    assert r1.status == 201 and r2.status == 201, (r1, r2)
    assert r1.body["merged"] is False and r2.body["merged"] is True and r2.body["id"] == r1.body["id"]
    r = srv.api("POST", url, json={"type": "reboot"}, token=token)
    assert r.status == 400, r

    r = srv.api("GET", url, token=token)
    assert r.status == 200, r
    assert sorted(c["id"] for c in r.body["commands"]) == sorted([lock, r1.body["id"]])
    r = srv.api("GET", "/api/v1/commands/" + lock, token=token)
    assert r.status == 200 and r.body["type"] == "lock" and r.body["state"] == "queued", r

    assert srv.api("DELETE", "/api/v1/commands/" + lock, token=token).status == 204
    assert srv.api("GET", "/api/v1/commands/" + lock, token=token).body["state"] == "cancelled"
    r = srv.api("DELETE", "/api/v1/commands/" + lock, token=token)
    assert r.status == 409, r
    actions = [(e["action"], e["target"]) for e in srv.api("GET", "/api/v1/audit", token=token).body["entries"]]
    assert ("command.queue", dev) in actions and ("command.cancel", lock) in actions


def test_command_queue_full(fleet):
    srv, token, _, ids = fleet
    url = "/api/v1/devices/%s/commands" % ids["a11"]
    for i in range(100):
        r = srv.api("POST", url, json={"type": "lock"}, token=token)
        assert r.status == 201, (i, r)
    r = srv.api("POST", url, json={"type": "lock"}, token=token)
    assert r.status == 409 and r.error_code() == "queue_full", r
    assert "100" in err_message(r)


def test_unenroll(fleet):
    srv, token, _, ids = fleet
    dev = ids["i17"]
    r = srv.api("POST", "/api/v1/devices/%s/unenroll" % dev, token=token)
    assert r.status == 200 and r.body["status"] == "unregistered", r
    assert srv.api("GET", "/api/v1/devices/" + dev, token=token).body["status"] == "unregistered"
    r = srv.api("POST", "/api/v1/devices/%s/commands" % dev, json={"type": "lock"}, token=token)
    assert r.status == 409, r
    r = srv.api("GET", "/api/v1/devices?status=unregistered", token=token)
    assert [d["id"] for d in r.body["devices"]] == [dev]
    entries = [e for e in srv.api("GET", "/api/v1/audit", token=token).body["entries"]
               if e["action"] == "device.unenroll"]
    assert entries and entries[0]["target"] == dev and entries[0]["actor"] == "admin"


def test_ctl_devices(fleet):
    srv, _, env, ids = fleet
    cp = ok(srv.ctl("devices", "list", "--platform", "android", "--os", "<12", env=env))
    assert ids["a11"] in cp.stdout and ids["a14"] not in cp.stdout and ids["i17"] not in cp.stdout
    cp = ok(srv.ctl("devices", "show", ids["a14"], env=env))
    assert ids["a14"] in cp.stdout and "android" in cp.stdout
    shown = json.loads(ok(srv.ctl("--json", "devices", "show", ids["a14"], env=env)).stdout)
    assert shown["id"] == ids["a14"]

    cp = ok(srv.ctl("devices", "scan", ids["a14"], env=env))
    m = re.search(r"Queued scan for device %s: command (\S+)" % ids["a14"], cp.stdout)
    assert m, cp.stdout
    cmd = m.group(1)
    cp = ok(srv.ctl("devices", "scan", ids["a14"], env=env))
    assert "Merged with the open scan command %s" % cmd in cp.stdout, cp.stdout
    q = json.loads(ok(srv.ctl("--json", "devices", "sync", ids["a14"], env=env)).stdout)
    assert q["merged"] is False
    assert json.loads(ok(srv.ctl("--json", "commands", "show", q["id"], env=env)).stdout)["type"] == "sync_policy"
    for verb in ("lock", "locate", "update", "wipe"):
        ok(srv.ctl("devices", verb, ids["a11"], env=env))
    listing = ok(srv.ctl("commands", "list", ids["a11"], env=env)).stdout
    for verb in ("lock", "locate", "update", "wipe"):
        assert verb in listing
    assert cmd in ok(srv.ctl("commands", "show", cmd, env=env)).stdout
    assert "Cancelled command " + cmd in ok(srv.ctl("commands", "cancel", cmd, env=env)).stdout
    cp = srv.ctl("commands", "cancel", cmd, env=env)
    assert cp.returncode == 1 and "409" in cp.stderr, cp

    cp = ok(srv.ctl("devices", "unenroll", ids["a11"], env=env))
    assert "Unenrolled device " + ids["a11"] in cp.stdout
    cp = srv.ctl("devices", "lock", ids["a11"], env=env)
    assert cp.returncode == 1 and "409" in cp.stderr, cp
    assert ids["a11"] in ok(srv.ctl("devices", "list", "--status", "unregistered", env=env)).stdout
