"""bulwarkctl's server-side rules commands against a server running compliance_lua with the shipped rules
(scripts/rules): rules list, rules upload (a broken file refused with its line, exit 1), rules enable/disable,
rules results --device/--rule after a device enrolled with bulwark-agent, their usage errors (exit 2) and
that they need a login (exit 4) while the offline rules check does not."""

import json
import re

import pytest

from test_agent import make_env
from test_compliance import agent_bin, wait_results  # noqa: F401 (agent_bin is a fixture)

SHIPPED = {"usb-debugging-off", "storage-encrypted", "min-os-version", "not-rooted", "no-blocked-apps",
           "no-recent-malware", "seen-recently"}

MODEL_RULE = ('rule { id = "ctl-model-known", title = "Model is known", severity = "low",\n'
              '       check = function(d) return d.model ~= nil end }\n')

BROKEN_RULE = 'rule {\n\tid = "ctl-broken",\n\ttitle = "x"\n\tseverity = "low",\n}\n'


@pytest.fixture(scope="module")
def env(module_servers, agent_bin, repo, tmp_path_factory):  # noqa: F811
    srv = module_servers.start(plugins=["compliance_lua"],
                               settings={"compliance_lua": {"rules_dir": str(repo / "scripts" / "rules"),
                                                            "interval": "1h"}})
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("devices"))

    def ctl(*args, expect=0):
        cp = srv.ctl(*args, env={"BULWARK_TOKEN": admin.token})
        assert cp.returncode == expect, "exit %d\nstdout:\n%s\nstderr:\n%s" % (cp.returncode, cp.stdout, cp.stderr)
        return cp

    return srv, admin, agent, ctl


def table(stdout):
    """Rows of a bulwarkctl table as lists of words (the header row dropped)."""
    return [line.split() for line in stdout.splitlines()[1:] if line.strip()]


def test_list_shows_shipped_rules(env):
    _, _, _, ctl = env
    out = ctl("rules", "list").stdout
    assert out.splitlines()[0].split() == ["ID", "TITLE", "SEVERITY", "PLATFORMS", "SOURCE", "ENABLED"], out
    rows = {r[0]: r for r in table(out)}
    assert SHIPPED <= set(rows), out
    usb = rows["usb-debugging-off"]
    assert usb[-3:] == ["android", "usb_debugging.lua", "yes"] and "medium" in usb, usb
    body = json.loads(ctl("rules", "list", "--json").stdout)
    assert SHIPPED <= {r["id"] for r in body["rules"]}, body


def test_upload_good_and_broken(env, tmp_path):
    _, _, _, ctl = env
    good = tmp_path / "ctl_model.lua"
    good.write_text(MODEL_RULE)
    out = ctl("rules", "upload", good).stdout
    assert "ctl_model.lua" in out and "enabled" in out, out
    assert any(r[0] == "ctl-model-known" for r in table(out.split("\n", 1)[1])), out
    rows = {r[0]: r for r in table(ctl("rules", "list").stdout)}
    assert rows["ctl-model-known"][-2:] == ["ctl_model.lua", "yes"], rows

    # --name stores under another name; --json prints the server's answer.
    body = json.loads(ctl("--json", "rules", "upload", good, "--name", "ctl_model.lua").stdout)
    assert body == {"name": "ctl_model.lua", "enabled": True}, body

    broken = tmp_path / "ctl_broken.lua"
    broken.write_text(BROKEN_RULE)
    cp = ctl("rules", "upload", broken, expect=1)
    assert "invalid_rule" in cp.stderr and "line" in cp.stderr, cp.stderr
    assert re.search(r"ctl_broken\.lua:\d+:", cp.stderr), cp.stderr
    assert "ctl-broken" not in ctl("rules", "list").stdout

    # Local refusals: too big, missing file, bad UTF-8 (nothing is sent).
    big = tmp_path / "big.lua"
    big.write_text("-- " + "x" * (256 * 1024) + "\n")
    cp = ctl("rules", "upload", big, expect=1)
    assert "256 KiB" in cp.stderr, cp.stderr
    cp = ctl("rules", "upload", tmp_path / "missing.lua", expect=1)
    assert "cannot read" in cp.stderr, cp.stderr
    bad = tmp_path / "bad_utf8.lua"
    bad.write_bytes(b"-- \xff\xfe\n")
    cp = ctl("rules", "upload", bad, expect=1)
    assert "UTF-8" in cp.stderr, cp.stderr
    # A name the server refuses.
    cp = ctl("rules", "upload", good, "--name", "no-extension", expect=1)
    assert "bad_request" in cp.stderr, cp.stderr


def test_disable_enable(env, tmp_path):
    _, _, _, ctl = env
    f = tmp_path / "ctl_toggle.lua"
    f.write_text(MODEL_RULE.replace("ctl-model-known", "ctl-toggle"))
    ctl("rules", "upload", f)
    assert "Disabled rule file ctl_toggle.lua" in ctl("rules", "disable", "ctl_toggle.lua").stdout
    rows = {r[0]: r for r in table(ctl("rules", "list").stdout)}
    assert rows["ctl-toggle"][-1] == "no", rows
    assert "Enabled rule file ctl_toggle.lua" in ctl("rules", "enable", "ctl_toggle.lua").stdout
    rows = {r[0]: r for r in table(ctl("rules", "list").stdout)}
    assert rows["ctl-toggle"][-1] == "yes", rows
    # Files of rules_dir cannot be disabled; unknown names are not found.
    cp = ctl("rules", "disable", "usb_debugging.lua", expect=1)
    assert "always enabled" in cp.stderr, cp.stderr
    ctl("rules", "enable", "nothing_here.lua", expect=1)


def test_results_device_and_rule(env):
    _, admin, agent, ctl = env
    dev = agent.enroll("--platform", "android", "--os-version", "14")
    dev.run("--set-usb-debugging", "on")
    wait_results(admin, dev.id, lambda b: b["rules"].get("usb-debugging-off", {}).get("verdict") == "fail")

    out = ctl("rules", "results", "--device", dev.id).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["RULE", "VERDICT", "SINCE", "MESSAGE"], out
    rows = {line.split()[0]: line.split() for line in lines[1:] if line and not line.startswith("Compliant")}
    assert rows["usb-debugging-off"][1] == "fail", out
    assert "not-rooted" in rows, out
    assert "Compliant: no" in out, out
    body = json.loads(ctl("rules", "results", "--device", dev.id, "--json").stdout)
    assert body["device_id"] == dev.id and body["compliant"] is False, body

    out = ctl("rules", "results", "--rule", "usb-debugging-off").stdout
    assert dev.id in out and "failing usb-debugging-off" in out, out
    body = json.loads(ctl("--json", "rules", "results", "--rule", "usb-debugging-off").stdout)
    assert dev.id in [d["device_id"] for d in body["devices"]] and body["next"] is None, body
    assert dev.id not in ctl("rules", "results", "--rule", "not-rooted").stdout

    dev.run("--set-usb-debugging", "off")
    wait_results(admin, dev.id, lambda b: b["rules"]["usb-debugging-off"]["verdict"] == "pass")
    assert dev.id not in ctl("rules", "results", "--rule", "usb-debugging-off").stdout
    # A device without results: the server's 404, exit 1.
    cp = ctl("rules", "results", "--device", "00000000-0000-0000-0000-000000000000", expect=1)
    assert "not_found" in cp.stderr, cp.stderr


def test_usage_and_login(env, repo):
    srv, _, _, ctl = env
    for args in (["rules", "results"], ["rules", "results", "--device", "a", "--rule", "b"],
                 ["rules", "upload"], ["rules", "enable"], ["rules", "disable", "a.lua", "b.lua"],
                 ["rules", "list", "--name", "x.lua"], ["rules", "upload", "x.lua", "--rule", "r"],
                 ["rules", "nonsense"]):
        cp = ctl(*args, expect=2)
        assert "Usage" in cp.stderr, (args, cp.stderr)
    # The server commands need a login; the offline check does not (and works without a server).
    cp = srv.ctl("rules", "list")
    assert cp.returncode == 4, cp
    cp = srv.ctl("rules", "check", repo / "scripts" / "rules" / "usb_debugging.lua",
                 env={"BULWARK_SERVER": "https://127.0.0.1:1"})
    assert cp.returncode == 0 and "1 rule OK" in cp.stdout, cp
