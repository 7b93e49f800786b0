"""App-control flag semantics with the compliance_lua plugin and the shipped rule scripts/rules/app_control.lua
(issue "Policies and groups"): the rule reads the device's effective policy (d.policy.app_control) and judges
apps only when the policy enables app control. With enabled = false a blocked app installed does not make the
device non-compliant (a fixed bug of the reference product); with enabled = true it does; required apps are
checked the same way. Policy changes and device moves re-evaluate the devices concerned."""

import shutil
import time
import uuid

import pytest

from test_agent import agent_bin, make_env  # noqa: F401 (agent_bin is a fixture)

BASE = "/api/v1/plugins/compliance_lua/"
BLOCKED = "com.example.torrent"
REQUIRED = "com.example.mdmhelper"


@pytest.fixture(scope="module")
def env(module_servers, agent_bin, tmp_path_factory, repo):  # noqa: F811
    rules = tmp_path_factory.mktemp("rules")
    shutil.copy(repo / "scripts" / "rules" / "app_control.lua", rules / "app_control.lua")
    srv = module_servers.start(plugins=["compliance_lua"],
                               settings={"compliance_lua": {"rules_dir": str(rules), "interval": "1h"}})
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("devices"))
    return srv, admin, agent


def uniq(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:6])


def verdict(admin, dev_id, want, timeout=15):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        r = admin.call("GET", BASE + "results/" + dev_id)
        if r.status == 200:
            last = r.body
            rule = r.body["rules"].get("app-control", {})
            if rule.get("verdict") == want:
                return r.body
        time.sleep(0.1)
    pytest.fail("app-control verdict of %s is not %s within %d s: %r" % (dev_id, want, timeout, last))


def setup_device(admin, agent, app_control, apps):
    g = uniq("apps")
    admin.call("POST", "/api/v1/groups", json={"name": g}, expect=201)
    admin.call("PUT", "/api/v1/groups/%s/policy" % g, json={"app_control": app_control}, expect=200)
    dev = agent.enroll(key=admin.key(group=g)["key"])
    dev.checkin({"inventory": {"full": True, "apps": [{"id": a, "version": "1.0"} for a in apps]}})
    return g, dev


def test_disabled_app_control_is_not_evaluated(env):
    _, admin, agent = env
    _, dev = setup_device(admin, agent, {"enabled": False, "blocked": [BLOCKED], "required": [REQUIRED]},
                          [BLOCKED, "com.example.mail"])
    res = verdict(admin, dev.id, "pass")
    assert res["compliant"] is True, res


def test_enabled_blocked_app_makes_device_noncompliant(env):
    _, admin, agent = env
    g, dev = setup_device(admin, agent, {"enabled": True, "blocked": [BLOCKED]}, [BLOCKED])
    res = verdict(admin, dev.id, "fail")
    assert res["compliant"] is False and BLOCKED in res["rules"]["app-control"]["message"], res
    # Turning app control off (lists kept) re-evaluates the device: compliant again.
    admin.call("PUT", "/api/v1/groups/%s/policy" % g, json={"app_control": {"enabled": False, "blocked": [BLOCKED]}},
               expect=200)
    assert verdict(admin, dev.id, "pass")["compliant"] is True
    # ... and on again.
    admin.call("PUT", "/api/v1/groups/%s/policy" % g, json={"app_control": {"enabled": True, "blocked": [BLOCKED]}},
               expect=200)
    verdict(admin, dev.id, "fail")
    # The device removes the app: compliant.
    dev.checkin({"inventory": {"apps_removed": [BLOCKED]}})
    verdict(admin, dev.id, "pass")


def test_required_app(env):
    _, admin, agent = env
    _, dev = setup_device(admin, agent, {"enabled": True, "required": [REQUIRED]}, ["com.example.mail"])
    res = verdict(admin, dev.id, "fail")
    assert REQUIRED in res["rules"]["app-control"]["message"], res
    dev.checkin({"inventory": {"apps_added": [{"id": REQUIRED, "version": "2.0"}]}})
    verdict(admin, dev.id, "pass")


def test_moving_the_device_changes_the_verdict(env):
    _, admin, agent = env
    _, dev = setup_device(admin, agent, {"enabled": False, "blocked": [BLOCKED]}, [BLOCKED])
    verdict(admin, dev.id, "pass")
    strict = uniq("strict")
    admin.call("POST", "/api/v1/groups", json={"name": strict}, expect=201)
    admin.call("PUT", "/api/v1/groups/%s/policy" % strict, json={"app_control": {"enabled": True,
                                                                                "blocked": [BLOCKED]}}, expect=200)
    admin.call("PATCH", "/api/v1/devices/" + dev.id, json={"group": strict}, expect=200)
    verdict(admin, dev.id, "fail")


def test_default_policy_leaves_app_control_off(env):
    _, admin, agent = env
    dev = agent.enroll()
    dev.checkin({"inventory": {"full": True, "apps": [{"id": BLOCKED}]}})
    verdict(admin, dev.id, "pass")
    eff = admin.call("GET", "/api/v1/groups/default/policy/effective", expect=200).body
    assert eff["policy"]["app_control"]["enabled"] is False, eff
