"""The host's wake-up wiring through the "push" capability, with the fx_push fixture provider:
which provider a device's token goes to, one push in flight per device (a burst of commands costs
two pushes, not one each), invalid tokens remembered until the device reports another one, the
admin's push test and list of flagged devices. The real providers (push_apns, push_fcm) are tested
against their simulators in test_push_apns.py and test_push_fcm.py."""

import subprocess
import time
import uuid

import pytest


def enroll(srv, admin, tmp_path, token, provider="apns"):
    """Enrolls a device with a push token; returns (device id, (cert.pem, key.pem))."""
    key = tmp_path / ("k-%s.pem" % uuid.uuid4().hex)
    csr = tmp_path / ("c-%s.pem" % uuid.uuid4().hex)
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-subj", "/CN=device", "-out", str(csr)], check=True, capture_output=True)
    k = srv.api("POST", "/api/v1/enrollment/keys", json={}, token=admin).body["key"]
    dev = {"platform": "ios", "os_version": "17.1", "push": {"provider": provider, "token": token}}
    r = srv.api("POST", "/agent/v1/enroll", json={"method": "key", "key": k, "csr": csr.read_text(), "device": dev},
                port=srv.agent_port)
    assert r.status == 201, r
    cert = tmp_path / ("d-%s.pem" % uuid.uuid4().hex)
    cert.write_text(r.body["certificate"])
    return r.body["device_id"], (cert, key)


def received(srv, admin, device_id=None):
    got = srv.api("GET", "/api/v1/plugins/fx_push/received", token=admin).body["received"]
    return [m for m in got if device_id is None or m["device_id"] == device_id]


def wait_for(fn, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


def command(srv, admin, dev, type_):
    r = srv.api("POST", "/api/v1/devices/%s/commands" % dev, json={"type": type_}, token=admin)
    assert r.status in (200, 201, 202), r
    return r.body


@pytest.fixture
def push_server(servers, fixture_plugins):
    return servers.start(plugin_dir=fixture_plugins, plugins=["fx_push"], settings={"fx_push": {"delay": "300ms"}})


def test_a_queued_command_wakes_the_device(push_server, tmp_path):
    srv = push_server
    admin = srv.login()
    dev, _ = enroll(srv, admin, tmp_path, "good-token-1")
    cmd = command(srv, admin, dev, "lock")
    got = wait_for(lambda: received(srv, admin, dev))
    assert len(got) == 1, got
    assert got[0]["token"] == "good-token-1" and got[0]["reason"] == "command"
    assert got[0]["command_id"] == cmd["id"] and got[0]["high_priority"] is True
    # Metrics count the outcome.
    wait_for(lambda: 'bulwark_push_wakeups_total{outcome="sent"} 1' in srv.api("GET", "/metrics").raw.decode())
    assert 'bulwark_push_wakeups_total{outcome="sent"} 1' in srv.api("GET", "/metrics").raw.decode()


def test_a_burst_of_commands_costs_two_pushes(push_server, tmp_path):
    srv = push_server
    admin = srv.login()
    dev, _ = enroll(srv, admin, tmp_path, "good-token-2")
    for t in ("lock", "locate", "scan", "update"):
        command(srv, admin, dev, t)
    time.sleep(1.5)  # two 300 ms answers, one after the other
    got = received(srv, admin, dev)
    assert len(got) == 2, got


def test_push_test_answers_the_outcome(push_server, tmp_path):
    srv = push_server
    admin = srv.login()
    dev, _ = enroll(srv, admin, tmp_path, "good-token-3")
    r = srv.api("POST", "/api/v1/devices/%s/push-test" % dev, token=admin)
    assert r.status == 200 and r.body["outcome"] == "sent" and r.body["id"] == "fx-1", r
    assert received(srv, admin, dev)[-1]["reason"] == "test"
    failing, _ = enroll(srv, admin, tmp_path, "fail-token")
    r = srv.api("POST", "/api/v1/devices/%s/push-test" % failing, token=admin)
    assert r.status == 200 and r.body["outcome"] == "failed" and r.body["reason"] == "BadTopic", r
    # Unknown device, malformed id, no provider for the token, readonly caller.
    assert srv.api("POST", "/api/v1/devices/%s/push-test" % uuid.uuid4(), token=admin).status == 404
    assert srv.api("POST", "/api/v1/devices/nope/push-test", token=admin).status == 400
    fcm, _ = enroll(srv, admin, tmp_path, "good-fcm", provider="fcm")
    r = srv.api("POST", "/api/v1/devices/%s/push-test" % fcm, token=admin)
    assert r.status == 404 and "no push plugin for provider 'fcm'" in r.body["error"]["message"], r
    srv.add_admin(admin, "viewer", "viewer-password-1", role="readonly")
    ro = srv.login("viewer", "viewer-password-1")
    assert srv.api("POST", "/api/v1/devices/%s/push-test" % dev, token=ro).status == 403
    # Audited.
    entries = srv.api("GET", "/api/v1/audit?limit=20", token=admin).body["entries"]
    assert any(e["action"] == "push.test" and e["target"] == dev for e in entries)


def test_invalid_token_is_flagged_until_the_device_reports_another(push_server, tmp_path):
    srv = push_server
    admin = srv.login()
    dev, cert = enroll(srv, admin, tmp_path, "bad-token-1")
    command(srv, admin, dev, "lock")
    flagged = wait_for(lambda: srv.api("GET", "/api/v1/push/invalid-tokens", token=admin).body["devices"])
    assert [f["device_id"] for f in flagged] == [dev] and flagged[0]["reason"] == "Unregistered", flagged
    assert flagged[0]["provider"] == "apns"
    srv.wait_log(r"device %s: the apns push token is invalid" % dev)
    # No more pushes to that token: not for commands, not for a test.
    command(srv, admin, dev, "locate")
    time.sleep(0.8)
    assert len(received(srv, admin, dev)) == 1
    r = srv.api("POST", "/api/v1/devices/%s/push-test" % dev, token=admin)
    assert r.status == 409 and "reported invalid" in r.body["error"]["message"], r
    # The device registers a new token at its next check-in: pushes resume.
    r = srv.agent_api("POST", "/agent/v1/checkin", json={"device": {"push": {"provider": "apns", "token": "good-4"}}},
                      cert=cert)
    assert r.status == 200, r
    assert srv.api("GET", "/api/v1/push/invalid-tokens", token=admin).body["devices"] == []
    r = srv.api("POST", "/api/v1/devices/%s/push-test" % dev, token=admin)
    assert r.status == 200 and r.body["outcome"] == "sent", r
    assert received(srv, admin, dev)[-1]["token"] == "good-4"


def test_devices_without_token_are_skipped(push_server, tmp_path):
    srv = push_server
    admin = srv.login()
    k = srv.api("POST", "/api/v1/enrollment/keys", json={}, token=admin).body["key"]
    key, csr = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-subj", "/CN=d", "-out", str(csr)], check=True, capture_output=True)
    r = srv.api("POST", "/agent/v1/enroll", json={"method": "key", "key": k, "csr": csr.read_text(),
                                                 "device": {"platform": "android"}}, port=srv.agent_port)
    dev = r.body["device_id"]
    command(srv, admin, dev, "lock")
    time.sleep(0.5)
    assert received(srv, admin) == []
    r = srv.api("POST", "/api/v1/devices/%s/push-test" % dev, token=admin)
    assert r.status == 404 and "has not registered a push token" in r.body["error"]["message"], r


def test_stop_with_pushes_in_flight(servers, fixture_plugins, tmp_path):
    """A push still held at shutdown is failed by the provider and freed by the host: clean exit."""
    srv = servers.start(plugin_dir=fixture_plugins, plugins=["fx_push"], settings={"fx_push": {"delay": "60s"}})
    admin = srv.login()
    dev, _ = enroll(srv, admin, tmp_path, "good-token-5")
    command(srv, admin, dev, "lock")
    wait_for(lambda: received(srv, admin, dev))
    srv.stop()
    assert "push failed after 1 attempt(s): stopping" in srv.log_text()


def test_bulwarkctl_push_test(push_server, tmp_path):
    """`bulwarkctl push test DEVICE` against the real route: the outcome printed, exit 0 only when sent."""
    srv = push_server
    admin = srv.login()
    good, _ = enroll(srv, admin, tmp_path, "good-token-6")
    bad, _ = enroll(srv, admin, tmp_path, "bad-token-6")
    env = {"BULWARK_TOKEN": admin}
    cp = srv.ctl("push", "test", good, env=env)
    assert cp.returncode == 0, cp
    assert "Push test to device %s: sent" % good in cp.stdout, cp.stdout
    cp = srv.ctl("push", "test", bad, env=env)
    assert cp.returncode == 1 and "token_invalid" in cp.stdout + cp.stderr, cp
    cp = srv.ctl("push", "test", str(uuid.uuid4()), env=env)
    assert cp.returncode == 1 and "no device with id" in cp.stderr, cp
    cp = srv.ctl("push", "test", "--json", good, env=env)
    assert cp.returncode == 0 and '"outcome"' in cp.stdout, cp
