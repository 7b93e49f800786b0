"""bulwark-agent applies policies (docs/bulwark-agent.md, "Policies and scheduled scans"): it
fetches the policy when the check-in announces another version or a sync_policy command arrives,
records it in policy.json, reports the applied version (check-in "policy_version", the command's
result), and emits scheduled-scan events (scan_finished with data.scheduled) at the policy's
malware_scan.scheduled times on its simulated clock (`run --clock-start/--clock-speed`, or
`simulate-schedule --from/--to`).

The first tests need no policy server side: the schedule arithmetic (simulate-schedule --dry-run
with --policy FILE), and the clock of `run` with a policy.json put in place. The end-to-end tests
set a group's policy through the admin API (issue 4) and let the agent sync it."""

import calendar
import json
import re
import time
import uuid

import pytest

from test_agent import agent_bin, make_env  # noqa: F401 (fixture)
from test_agent_push import Running

DAILY_0900 = {"malware_scan": {"realtime": True, "scheduled": {"enabled": True, "frequency": "daily", "time": "09:00",
                                                               "scope": "all"}}}
WEEKLY_MON_THU = {"malware_scan": {"scheduled": {"enabled": True, "frequency": "weekly", "time": "22:30",
                                                 "days": ["mon", "thu"], "scope": "apps_only"}}}


def ts(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def scan_lines(stdout):
    return re.findall(r"^scheduled scan at (\S+) ", stdout, re.M)


@pytest.fixture(scope="module")
def penv(module_servers, agent_bin, tmp_path_factory):  # noqa: F811
    srv = module_servers.start(plugins=[])
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("policy-devices"))
    return srv, admin, agent


def write_policy(path, doc):
    path.write_text(json.dumps(doc))
    return path


def event_time(e):
    at = e["at"]
    return at if isinstance(at, int) else ts(at.replace(".000", "")[:19] + "Z")


def scan_events(admin, dev):
    evs = [e for e in admin.events(dev.id) if e["type"] == "scan_finished"]
    return sorted(evs, key=event_time)


def event_data(e):
    d = e.get("data")
    return json.loads(d) if isinstance(d, str) else d


# ---- the schedule, offline


def test_daily_schedule_dry_run(penv, tmp_path):
    srv, admin, agent = penv
    pol = write_policy(tmp_path / "p.json", DAILY_0900)
    cp = agent("simulate-schedule", "--policy", pol, "--from", "2026-12-01T00:00:00Z", "--to", "2026-12-04T09:00:00Z",
               "--dry-run")
    # [from, to): the 4th at 09:00 is the end, not included.
    assert scan_lines(cp.stdout) == ["2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z", "2026-12-03T09:00:00Z"], cp.stdout
    assert "3 scheduled scans from 2026-12-01T00:00:00Z to 2026-12-04T09:00:00Z" in cp.stdout
    assert "daily at 09:00 UTC, scope all" in cp.stdout
    # A start exactly at the scheduled time includes it; Unix seconds work as well.
    cp = agent("simulate-schedule", "--policy", pol, "--from", str(ts("2026-12-01T09:00:00Z")), "--to",
               str(ts("2026-12-01T09:00:01Z")), "--dry-run")
    assert scan_lines(cp.stdout) == ["2026-12-01T09:00:00Z"], cp.stdout


def test_weekly_schedule_dry_run(penv, tmp_path):
    srv, admin, agent = penv
    # The file may also be the server's answer {"version", "policy"} or the agent's policy.json.
    pol = write_policy(tmp_path / "p.json", {"version": "7", "policy": WEEKLY_MON_THU})
    cp = agent("simulate-schedule", "--policy", pol, "--from", "2026-12-01T00:00:00Z", "--to", "2026-12-15T00:00:00Z",
               "--dry-run")
    got = scan_lines(cp.stdout)
    assert got == ["2026-12-03T22:30:00Z", "2026-12-07T22:30:00Z", "2026-12-10T22:30:00Z", "2026-12-14T22:30:00Z"], got
    for t in got:
        assert time.gmtime(ts(t)).tm_wday in (0, 3)  # Monday, Thursday
    assert "weekly on mon,thu at 22:30 UTC, scope apps_only" in cp.stdout
    # An offset time is converted to UTC.
    cp = agent("simulate-schedule", "--policy", pol, "--from", "2026-12-03T23:00:00+01:00", "--to",
               "2026-12-04T00:00:00Z", "--dry-run")
    assert scan_lines(cp.stdout) == ["2026-12-03T22:30:00Z"], cp.stdout


@pytest.mark.parametrize("doc", [
    {},
    {"malware_scan": {"realtime": True}},
    {"malware_scan": {"scheduled": {"enabled": False, "frequency": "daily", "time": "09:00"}}},
])
def test_no_schedule_no_scans(penv, tmp_path, doc):
    srv, admin, agent = penv
    cp = agent("simulate-schedule", "--policy", write_policy(tmp_path / "p.json", doc), "--from", "0", "--to",
               str(86400 * 30), "--dry-run")
    assert scan_lines(cp.stdout) == [] and "0 scheduled scans" in cp.stdout and "(scheduled scan: off)" in cp.stdout


@pytest.mark.parametrize("sched,message", [
    ({"enabled": True, "frequency": "hourly", "time": "09:00"}, "frequency"),
    ({"enabled": True, "frequency": "daily", "time": "24:00"}, "time"),
    ({"enabled": True, "frequency": "daily", "time": "9:00"}, "time"),
    ({"enabled": True, "frequency": "weekly", "time": "09:00"}, "needs a day"),
    ({"enabled": True, "frequency": "weekly", "time": "09:00", "days": ["mon", "funday"]}, "days[1]"),
])
def test_malformed_schedule_refused(penv, tmp_path, sched, message):
    srv, admin, agent = penv
    pol = write_policy(tmp_path / "p.json", {"malware_scan": {"scheduled": sched}})
    cp = agent("simulate-schedule", "--policy", pol, "--from", "0", "--to", "86400", "--dry-run", expect=1)
    assert message in cp.stderr, cp.stderr


@pytest.mark.parametrize("args,message", [
    (["--from", "0", "--dry-run"], "--from and --to are required"),
    (["--from", "100", "--to", "100", "--dry-run"], "later than --from"),
    (["--from", "tomorrow", "--to", "100", "--dry-run"], "--from must be"),
    (["--from", "2026-13-01T00:00:00Z", "--to", "100", "--dry-run"], "--from must be"),
    (["--from", "0", "--to", "100"], "--state DIR is required"),
])
def test_simulate_schedule_usage(penv, tmp_path, args, message):
    srv, admin, agent = penv
    pol = write_policy(tmp_path / "p.json", DAILY_0900)
    cp = agent("simulate-schedule", "--policy", pol, *args, expect=2)
    assert message in cp.stderr, cp.stderr


# ---- against a server, without the policy API


def test_policy_command_and_simulated_scans_posted(penv, tmp_path):
    srv, admin, agent = penv
    dev = agent.enroll()
    cp = agent("policy", "--state", dev.state, expect=1)
    assert "no policy applied yet" in cp.stderr
    dev.run()
    doc = dev.doc()
    applied = json.loads((dev.state / "policy.json").read_text())
    assert applied["version"] == doc["policy_version"] and isinstance(applied["policy"], dict), applied
    assert oct((dev.state / "policy.json").stat().st_mode & 0o777) == "0o600"
    cp = agent("policy", "--state", dev.state)
    assert re.search(r"^version\s+%s$" % re.escape(applied["version"]), cp.stdout, re.M), cp.stdout
    cp = agent("policy", "--state", dev.state, "--json")
    assert json.loads(cp.stdout) == applied

    # simulate-schedule with a policy file posts the events to the server.
    pol = write_policy(tmp_path / "p.json", DAILY_0900)
    cp = agent("simulate-schedule", "--state", dev.state, "--policy", pol, "--from", "2026-12-01T00:00:00Z", "--to",
               "2026-12-03T00:00:00Z")
    assert scan_lines(cp.stdout) == ["2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z"], cp.stdout
    assert re.search(r"^events batch \S+: 2 events stored$", cp.stdout, re.M), cp.stdout
    evs = scan_events(admin, dev)
    assert [event_time(e) for e in evs] == [ts("2026-12-01T09:00:00Z"), ts("2026-12-02T09:00:00Z")], evs
    for e in evs:
        d = event_data(e)
        assert d["scheduled"] is True and d["frequency"] == "daily" and d["scope"] == "all", d
        assert d["at"] == iso(event_time(e)), d
    assert dev.doc()["pending_batches"] == []


def start_run(agent, dev, *args):
    return Running(agent, "--state", dev.state, *args)


def run_until(run, pattern, timeout=20):
    """Waits for a line of the running agent matching `pattern` and for the event batch posted
    after it, then stops the agent (SIGTERM, exit 0) -> its whole stdout."""
    try:
        run.wait_line(pattern, timeout=timeout)
        run.wait_line(r"^events batch \S+: \d+ events? stored$", timeout=timeout, new=True)
    finally:
        rc, err = run.stop()
    assert rc == 0, (rc, err)
    return "\n".join(run.seen) + "\n", err


def install_policy(dev, doc, version):
    """Puts an applied policy in the state directory, as a sync would have (the check-in answer's
    version is the same, so the run keeps it)."""
    (dev.state / "policy.json").write_text(json.dumps({"version": version, "etag": '"%s"' % version,
                                                       "fetched_at": int(time.time()), "policy": doc}))
    d = dev.doc()
    d["policy_version"] = version
    (dev.state / "device.json").write_text(json.dumps(d))


def test_run_clock_emits_scheduled_scans(penv):
    srv, admin, agent = penv
    dev = agent.enroll()
    dev.run()  # learns the server's current policy version
    install_policy(dev, DAILY_0900, dev.doc()["policy_version"])
    # 8 simulated hours per real second from 08:59: a simulated day every 3 s.
    run = start_run(agent, dev, "--interval", "600", "--clock-start", "2026-12-01T08:59:00Z", "--clock-speed",
                    "28800")
    out, err = run_until(run, r"^scheduled scan at 2026-12-03T09:00:00Z ")
    assert "clock: simulated time starts at 2026-12-01T08:59:00Z, 28800 simulated seconds per second" in out, out
    got = scan_lines(out)
    assert got[:3] == ["2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z", "2026-12-03T09:00:00Z"], out
    assert all(t.endswith("T09:00:00Z") for t in got), got
    evs = scan_events(admin, dev)
    times = [iso(event_time(e)) for e in evs]
    assert times[:3] == got[:3], (times, got)
    assert all(event_data(e)["scheduled"] is True for e in evs)
    assert dev.doc()["pending_batches"] == [], "every batch was posted before the agent stopped"


# ---- end to end with the policy API (issue 4 server side)


def new_group(admin, parent=None):
    name = "pol-" + uuid.uuid4().hex[:8]
    body = {"name": name}
    if parent:
        body["parent"] = parent
    admin.call("POST", "/api/v1/groups", json=body, expect=201)
    return name


def put_policy(admin, group, doc):
    r = admin.call("PUT", "/api/v1/groups/%s/policy" % group, json=doc)
    assert r.status in (200, 201), r
    return r.body


def device_status(admin, group, dev):
    r = admin.call("GET", "/api/v1/policies/status?group=" + group, expect=200)
    rows = r.body["devices"] if isinstance(r.body, dict) else r.body
    return [row for row in rows if row.get("device_id") == dev.id][0]


def test_policy_synced_applied_and_reported(penv):
    srv, admin, agent = penv
    group = new_group(admin)
    put_policy(admin, group, DAILY_0900)
    key = admin.key(group=group)["key"]
    dev = agent.enroll(key=key)
    cp = dev.run()
    m = re.search(r"^policy: applied version (\S+) \(scheduled scan: daily at 09:00 UTC, scope all\)$", cp.stdout, re.M)
    assert m, cp.stdout
    version = m.group(1)
    pol = json.loads((dev.state / "policy.json").read_text())
    assert pol["version"] == version and pol["policy"]["malware_scan"]["scheduled"]["time"] == "09:00", pol
    out = agent("policy", "--state", dev.state).stdout
    assert "daily at 09:00 UTC" in out and version in out, out
    # The next check-in reports the applied version: the device is "applied".
    dev.run()
    st = device_status(admin, group, dev)
    assert st["state"] == "applied" and st["applied_version"] == version, st

    # A policy change queues sync_policy: the agent fetches it (If-None-Match: the old ETag) and its
    # result names the new version.
    put_policy(admin, group, WEEKLY_MON_THU)
    cp = dev.run()
    m = re.search(r"^command (\S+) sync_policy: completed", cp.stdout, re.M)
    assert m, cp.stdout
    new = re.search(r"^policy: applied version (\S+) \(scheduled scan: weekly on mon,thu at 22:30 UTC", cp.stdout,
                    re.M).group(1)
    assert new != version
    assert admin.command(m.group(1))["result"] == {"policy_version": new}
    st = device_status(admin, group, dev)
    assert st["state"] == "applied" and st["applied_version"] == new, st
    # Nothing changed: the next run fetches nothing.
    cp = dev.run()
    assert "policy: applied" not in cp.stdout, cp.stdout


def test_scheduled_scans_of_a_synced_policy(penv):
    srv, admin, agent = penv
    group = new_group(admin)
    put_policy(admin, group, DAILY_0900)
    dev = agent.enroll(key=admin.key(group=group)["key"])
    run = start_run(agent, dev, "--interval", "600", "--clock-start", "2026-12-01T08:00:00Z", "--clock-speed",
                    "28800")
    out, err = run_until(run, r"^scheduled scan at 2026-12-02T09:00:00Z ")
    assert re.search(r"^policy: applied version \S+ \(scheduled scan: daily at 09:00 UTC", out, re.M), out
    got = scan_lines(out)
    assert got[:2] == ["2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z"], out
    evs = scan_events(admin, dev)
    assert [iso(event_time(e)) for e in evs][:2] == got[:2]
    version = dev.doc()["policy_version"]
    assert all(event_data(e)["policy_version"] == version for e in evs)
    # The same policy through simulate-schedule (the applied one, from policy.json).
    cp = agent("simulate-schedule", "--state", dev.state, "--from", "2026-12-10T00:00:00Z", "--to",
               "2026-12-11T00:00:00Z")
    assert scan_lines(cp.stdout) == ["2026-12-10T09:00:00Z"], cp.stdout
    assert ts("2026-12-10T09:00:00Z") in [event_time(e) for e in scan_events(admin, dev)]


def test_moved_device_gets_the_other_groups_policy(penv):
    srv, admin, agent = penv
    a, b = new_group(admin), new_group(admin)
    put_policy(admin, a, DAILY_0900)
    put_policy(admin, b, WEEKLY_MON_THU)
    dev = agent.enroll(key=admin.key(group=a)["key"])
    assert "daily at 09:00" in dev.run().stdout
    admin.call("PATCH", "/api/v1/devices/" + dev.id, json={"group": b}, expect=200)
    cp = dev.run()
    assert re.search(r"^command \S+ sync_policy: completed", cp.stdout, re.M), cp.stdout
    assert "weekly on mon,thu at 22:30" in cp.stdout, cp.stdout
