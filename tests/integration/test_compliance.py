"""The compliance_lua plugin end to end: rules from rules_dir, a device enrolled and run with the simulator
bulwark-agent, results and verdict changes (compliance.changed counted by example_hello), rules uploaded
through the API (a bad one refused with its line, nothing stored), a rule that loops (verdict error, the
other rules still run), a rule set change re-evaluating several devices through the worker queue, the
"rules" capability listed, and a rule file with a syntax error (init fails naming file:line)."""

import re
import subprocess
import time

import pytest

from bwserver import assert_no_sanitizer_reports
from test_agent import make_env

BASE = "/api/v1/plugins/compliance_lua/"

USB_RULE = """-- usb.lua
rule {
	id = "usb-debugging-off",
	title = "USB debugging is off",
	severity = "medium",
	platforms = { "android" },
	check = function(d)
		return d.usb_debugging ~= true, "USB debugging is on"
	end,
	actions = { "notify" },
}
"""

LOOP_RULE = """-- loop.lua
rule {
	id = "loops-forever",
	title = "A rule that never ends",
	severity = "low",
	check = function(d)
		while true do end
	end,
}
"""

ENCRYPTED_RULE = """rule {
	id = "storage-encrypted",
	title = "Storage encryption is on",
	severity = "high",
	check = function(d) return d.encrypted == true and d.screen_lock == true end,
}
"""


@pytest.fixture(scope="module")
def agent_bin(build):
    b = build / "bin" / "bulwark-agent"
    if not b.is_file():
        pytest.fail("%s is not built" % b)
    return b


@pytest.fixture(scope="module")
def env(module_servers, agent_bin, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules")
    (rules / "10-usb.lua").write_text(USB_RULE)
    (rules / "20-loop.lua").write_text(LOOP_RULE)
    (rules / "30-encrypted.lua").write_text(ENCRYPTED_RULE)
    (rules / "README.txt").write_text("not a rule file: ignored")
    srv = module_servers.start(plugins=["example_hello", "compliance_lua"],
                               settings={"compliance_lua": {"rules_dir": str(rules), "interval": "1h",
                                                            "instruction_budget": 20000}})
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("devices"))
    return srv, admin, agent


def metric(srv, name, labels=""):
    text = srv.api("GET", "/metrics").raw.decode()
    m = re.search(r"^%s%s (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_results(admin, dev_id, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        r = admin.call("GET", BASE + "results/" + dev_id)
        if r.status == 200 and pred(r.body):
            return r.body
        if time.monotonic() > deadline:
            pytest.fail("results of %s not as expected within %d s: %r" % (dev_id, timeout, r))
        time.sleep(0.1)


def test_plugin_running_and_rules_listed(env):
    srv, admin, _ = env
    assert srv.plugin("compliance_lua")["state"] == "running"
    rules = {r["id"]: r for r in admin.call("GET", BASE + "rules", expect=200).body["rules"]}
    assert set(rules) == {"usb-debugging-off", "loops-forever", "storage-encrypted"}, rules
    u = rules["usb-debugging-off"]
    assert u["source"] == "10-usb.lua" and u["severity"] == "medium" and u["platforms"] == ["android"], u
    assert u["enabled"] is True and u["title"] == "USB debugging is off", u
    # The plugin offers the "rules" capability (registered during init).
    plugins = {p["name"]: p for p in admin.call("GET", "/api/v1/plugins", expect=200).body["plugins"]}
    assert "rules" in plugins["compliance_lua"]["capabilities"], plugins["compliance_lua"]


def test_usb_debugging_changes_verdict(env):
    srv, admin, agent = env
    dev = agent.enroll("--platform", "android", "--os-version", "14")
    dev.run("--set-usb-debugging", "off")
    res = wait_results(admin, dev.id, lambda b: b["rules"].get("usb-debugging-off", {}).get("verdict") == "pass")
    assert res["compliant"] is True, res
    assert res["rules"]["storage-encrypted"]["verdict"] == "pass", res  # encryption + screen_lock "pin" mapped
    # The looping rule runs out of its budget: error with file:line; the others still pass.
    loop = res["rules"]["loops-forever"]
    assert loop["verdict"] == "error" and re.search(r"20-loop\.lua:\d+:", loop["message"]), loop
    since_pass = res["rules"]["usb-debugging-off"]["since"]
    before = metric(srv, "bulwark_example_hello_events_total", '{topic="compliance.changed"}')
    actions_before = metric(srv, "bulwark_example_hello_events_total", '{topic="compliance.action"}')

    time.sleep(1.1)  # "since" has a one-second resolution
    dev.run("--set-usb-debugging", "on")
    res = wait_results(admin, dev.id, lambda b: b["rules"]["usb-debugging-off"]["verdict"] == "fail")
    assert res["compliant"] is False, res
    usb = res["rules"]["usb-debugging-off"]
    assert usb["message"] == "USB debugging is on" and usb["since"] > since_pass, usb
    deadline = time.monotonic() + 10
    while metric(srv, "bulwark_example_hello_events_total", '{topic="compliance.changed"}') < before + 1:
        assert time.monotonic() < deadline, "no compliance.changed event counted"
        time.sleep(0.1)
    assert metric(srv, "bulwark_example_hello_events_total", '{topic="compliance.action"}') >= actions_before + 1

    # The failing devices of a rule, and not the rule others pass.
    failing = admin.call("GET", BASE + "results?rule=usb-debugging-off", expect=200).body
    assert dev.id in [d["device_id"] for d in failing["devices"]], failing
    assert dev.id not in [d["device_id"] for d in
                          admin.call("GET", BASE + "results?rule=storage-encrypted", expect=200).body["devices"]]

    dev.run("--set-usb-debugging", "off")
    res = wait_results(admin, dev.id, lambda b: b["rules"]["usb-debugging-off"]["verdict"] == "pass")
    assert res["compliant"] is True


def test_bad_rule_upload_refused(env):
    srv, admin, _ = env
    bad = "rule {\n\tid = \"broken\",\n\ttitle = \"x\"\n\tseverity = \"low\",\n}\n"
    r = admin.call("POST", BASE + "rules", json={"name": "broken.lua", "source": bad})
    assert r.status == 400, r
    assert re.search(r"broken\.lua:\d+:", r.body["error"]["message"]), r
    ids = [x["id"] for x in admin.call("GET", BASE + "rules", expect=200).body["rules"]]
    assert "broken" not in ids
    # A duplicate id of a loaded rule is refused as well, and nothing is stored.
    r = admin.call("POST", BASE + "rules", json={"name": "dup.lua", "source": USB_RULE})
    assert r.status == 400 and "usb-debugging-off" in r.body["error"]["message"], r
    assert admin.call("PUT", BASE + "rules/dup.lua/enabled", json={"enabled": False}).status == 404
    assert admin.call("POST", BASE + "rules", json={"name": "../x.lua", "source": "x"}).status == 400


def test_uploaded_rule_enable_disable(env):
    srv, admin, agent = env
    src = ('rule { id = "model-known", title = "Model is known", severity = "low",\n'
           '       check = function(d) return d.model ~= nil end }\n')
    r = admin.call("POST", BASE + "rules", json={"name": "model.lua", "source": src})
    assert r.status == 201, r
    dev = agent.enroll("--platform", "android")
    dev.run()
    wait_results(admin, dev.id, lambda b: b["rules"].get("model-known", {}).get("verdict") == "pass")
    admin.call("PUT", BASE + "rules/model.lua/enabled", json={"enabled": False}, expect=200)
    rules = {x["id"]: x for x in admin.call("GET", BASE + "rules", expect=200).body["rules"]}
    assert rules["model-known"]["enabled"] is False and rules["model-known"]["source"] == "model.lua", rules
    dev.run()
    wait_results(admin, dev.id, lambda b: "model-known" not in b["rules"])
    admin.call("PUT", BASE + "rules/model.lua/enabled", json={"enabled": True}, expect=200)
    assert admin.call("PUT", BASE + "rules/10-usb.lua/enabled", json={"enabled": False}).status == 404


def test_rule_change_reevaluates_fleet_on_workers(env):
    """A new rule set reaches every device through the queue and the worker engines (reloaded for the new
    generation), while device events for the same devices arrive at the same time."""
    srv, admin, agent = env
    devs = [agent.enroll("--platform", "android") for _ in range(10)]
    src = ('rule { id = "fleet-wide", title = "Every device", severity = "low",\n'
           '       check = function(d) return d.platform == "android", d.platform end }\n')
    admin.call("POST", BASE + "rules", json={"name": "fleet.lua", "source": src}, expect=201)
    for d in devs[:3]:
        d.run("--set-usb-debugging", "on")  # events while the sweep runs: coalesced, never two jobs at once
    for d in devs:
        wait_results(admin, d.id, lambda b: b["rules"].get("fleet-wide", {}).get("verdict") == "pass")
    for d in devs[:3]:
        wait_results(admin, d.id, lambda b: b["rules"]["usb-debugging-off"]["verdict"] == "fail")
    assert "\nbulwark_compliance_lua_queued_devices " in srv.api("GET", "/metrics").raw.decode()
    deadline = time.monotonic() + 10
    while metric(srv, "bulwark_compliance_lua_queued_devices") != 0:
        assert time.monotonic() < deadline, "the evaluation queue did not drain"
        time.sleep(0.1)
    admin.call("PUT", BASE + "rules/fleet.lua/enabled", json={"enabled": False}, expect=200)
    wait_results(admin, devs[0].id, lambda b: "fleet-wide" not in b["rules"])


def test_roles(env):
    srv, admin, _ = env
    name = "ro-compliance"
    srv.add_admin(admin.token, name, "readonly-password-1", role="readonly")
    tok = srv.login(name, "readonly-password-1")
    assert srv.api("GET", BASE + "rules", token=tok).status == 200
    r = srv.api("POST", BASE + "rules", json={"name": "x.lua", "source": ""}, token=tok)
    assert r.status == 403, r
    assert srv.api("GET", BASE + "rules").status == 401


def test_syntax_error_in_rules_dir(servers, build, tmp_path):
    rules = tmp_path / "badrules"
    rules.mkdir()
    (rules / "ok.lua").write_text(USB_RULE)
    (rules / "bad.lua").write_text("-- bad\nrule { id = \"x\",\n  check = function(d) return end end\n")
    srv = servers.create(plugins=[("compliance_lua", {"required": True})],
                         settings={"compliance_lua": {"rules_dir": str(rules)}})
    # --check-config validates the settings (types, ranges) only; it does not load the rules.
    cp = subprocess.run([str(build / "bin" / "bulwarkd"), "--check-config", str(srv.config_path)],
                        capture_output=True, text=True, timeout=60, cwd=srv.dir)
    assert_no_sanitizer_reports(cp.stderr, "bulwarkd --check-config")
    assert cp.returncode == 0, cp.stderr
    # Starting runs init, which loads rules_dir: the required plugin fails naming the file and line.
    srv.start(wait=False)
    rc = srv.wait_exit(60)
    srv.assert_clean()
    assert rc == 1
    assert re.search(r"bad\.lua:3:", srv.log_text()), srv.log_text()


def test_os_update_reevaluates(env):
    """An OS update reported in a check-in's "device" object (no inventory change) emits
    device.updated, and rules depending on the OS version are evaluated again at once."""
    srv, admin, agent = env
    src = ('rule { id = "os-14-1", title = "Android 14.1 or later", severity = "high", platforms = { "android" },\n'
           '       check = function(d) return version_ge(d.os_version, "14.1") end }\n')
    admin.call("POST", BASE + "rules", json={"name": "os141.lua", "source": src}, expect=201)
    dev = agent.enroll("--platform", "android", "--os-version", "14")
    dev.run()
    wait_results(admin, dev.id, lambda b: b["rules"].get("os-14-1", {}).get("verdict") == "fail")
    dev.run("--os-version", "14.1.2")  # only the device object changes
    res = wait_results(admin, dev.id, lambda b: b["rules"]["os-14-1"]["verdict"] == "pass")
    assert res["rules"]["os-14-1"]["verdict"] == "pass", res
    admin.call("PUT", BASE + "rules/os141.lua/enabled", json={"enabled": False}, expect=200)


def test_command_action_queues_a_command(env):
    """A failing rule with a command:<type> action queues that command for the device, once, as the
    plugin (created_by "plugin:compliance_lua"), and the device receives it at its next check-in."""
    srv, admin, agent = env
    src = ('rule { id = "locate-when-usb", title = "Locate devices with USB debugging", severity = "low",\n'
           '       platforms = { "android" }, actions = { "command:locate" },\n'
           '       check = function(d) return d.usb_debugging ~= true end }\n')
    admin.call("POST", BASE + "rules", json={"name": "locate.lua", "source": src}, expect=201)
    try:
        dev = agent.enroll("--platform", "android")
        dev.run("--set-usb-debugging", "on")
        wait_results(admin, dev.id, lambda b: b["rules"].get("locate-when-usb", {}).get("verdict") == "fail")
        deadline = time.time() + 10
        cmds = []
        while time.time() < deadline:
            cmds = [c for c in admin.call("GET", "/api/v1/devices/%s/commands" % dev.id, expect=200).body["commands"]
                    if c["type"] == "locate"]
            if cmds:
                break
            time.sleep(0.2)
        assert len(cmds) == 1 and cmds[0]["created_by"] == "plugin:compliance_lua", cmds
        cp = dev.run()
        assert "locate" in cp.stdout, cp.stdout
    finally:
        admin.call("PUT", BASE + "rules/locate.lua/enabled", json={"enabled": False}, expect=200)
