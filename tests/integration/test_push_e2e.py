"""Push end to end (issue "Push", wiring): the administrator queues a command for a device, the host
wakes the device through the provider its token belongs to, the simulator receives the push for that
device's token and wakes the simulated device (bulwark-agent run --push-sim), which checks in at once
and completes the command; a policy change wakes it the same way. The agent's poll interval is ten
minutes, so only the push can bring the command within the test's time. Also: a token the provider
reports invalid is flagged for the administrator, and no further push goes to it."""

import re
import time

import pytest

from test_agent import agent_bin, make_env  # noqa: F401 (fixture)
from test_agent_push import running  # noqa: F401 (fixture)
from test_push_apns import TOKEN, pki, sims, token_settings  # noqa: F401 (fixtures)
from test_push_fcm import Sim as FcmSim, make_sa, make_tls, plugin_settings as fcm_settings


def wait_for(cond, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


def sim_pushes_for(sim, token):
    return [r for r in sim.received() if r.get("token") == token]


def start_device(agent, running, sim_url, sim_ca, provider, platform):  # noqa: F811
    dev = agent.enroll("--platform", platform)
    run = running(agent, "--state", dev.state, "--interval", "600", "--push-sim", sim_url, "--push-sim-ca", sim_ca,
                  "--push-provider", provider)
    run.wait_line(r"^push: %s token registered with " % provider)
    run.wait_line(r"^checkin: ok")
    return dev, run


def test_apns_lock_wakes_the_device_which_acknowledges(servers, pki, sims, agent_bin, running, tmp_path):  # noqa: F811
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = servers.start(plugins=[("push_apns", {"required": True})], settings={"push_apns": token_settings(pki, sim)})
    admin, agent = make_env(srv, agent_bin, tmp_path)
    dev, run = start_device(agent, running, sim.url, pki.ca, "apns", "ios")
    token = admin.device(dev.id)["push"]["token"]
    assert re.fullmatch(r"[0-9a-f]{64}", token), token

    cid = admin.queue(dev.id, "lock")["id"]
    pushes = wait_for(lambda: sim_pushes_for(sim, token), what="the push at the simulator")
    assert pushes[0]["status"] == 200, pushes
    run.wait_line(r"^woken by push$")
    run.wait_line(r"^command %s lock: completed" % cid)
    assert admin.command(cid)["state"] == "completed"

    # A policy change reaches the device the same way: sync_policy, pushed, applied.
    before = len(sim_pushes_for(sim, token))
    r = admin.call("PUT", "/api/v1/groups/default/policy", json={"privacy": {"ios_malicious_profile_scan": True}})
    assert r.status == 200, r
    version = admin.call("GET", "/api/v1/groups/default/policy/effective").body["version"]
    wait_for(lambda: len(sim_pushes_for(sim, token)) > before, what="the policy push")
    run.wait_line(r"sync_policy: completed", timeout=20)
    state = wait_for(lambda: [s for s in admin.call("GET", "/api/v1/policies/status").body["devices"]
                              if s["device_id"] == dev.id and s["state"] == "applied"], what="the applied policy")
    assert state[0]["applied_version"] == version, state


def test_apns_invalid_token_is_flagged_and_not_used_again(servers, pki, sims, agent_bin, running,  # noqa: F811
                                                          tmp_path):
    sim = sims(pki, jwt_key=pki.p8_pub)
    srv = servers.start(plugins=[("push_apns", {"required": True})], settings={"push_apns": token_settings(pki, sim)})
    admin, agent = make_env(srv, agent_bin, tmp_path)
    dev, run = start_device(agent, running, sim.url, pki.ca, "apns", "ios")
    token = admin.device(dev.id)["push"]["token"]
    sim.inject(token, 410, "Unregistered")
    admin.queue(dev.id, "locate")
    flagged = wait_for(lambda: admin.call("GET", "/api/v1/push/invalid-tokens").body["devices"],
                       what="the flagged token")
    assert flagged[0]["device_id"] == dev.id and flagged[0]["reason"] == "Unregistered", flagged
    n = len(sim_pushes_for(sim, token))
    admin.queue(dev.id, "lock")
    time.sleep(1)
    assert len(sim_pushes_for(sim, token)) == n  # nothing more to a dead token
    r = srv.api("POST", "/api/v1/devices/%s/push-test" % dev.id, token=admin.token)
    assert r.status == 409, r


def test_fcm_wake_up(servers, agent_bin, running, tmp_path):  # noqa: F811
    tls = make_tls(tmp_path / "pki")
    sim = FcmSim(tmp_path / "sim", tls, [])
    sa_file, _ = make_sa(tmp_path / "sa.json", sim.url + "/token")
    sim.sa_files = [sa_file]
    sim.start()
    try:
        srv = servers.start(plugins=[("push_fcm", {"required": True})],
                            settings={"push_fcm": fcm_settings(sim, sa_file)})
        admin, agent = make_env(srv, agent_bin, tmp_path)
        dev, run = start_device(agent, running, sim.url, sim.ca, "fcm", "android")
        cid = admin.queue(dev.id, "scan")["id"]
        run.wait_line(r"^woken by push$")
        run.wait_line(r"^command %s scan: completed" % cid)
        r = srv.api("POST", "/api/v1/devices/%s/push-test" % dev.id, token=admin.token)
        assert r.status == 200 and r.body["outcome"] == "sent" and r.body["id"].startswith("projects/"), r
    finally:
        sim.stop()
