"""Policies end to end (issue "Policies and groups"): documents assigned to groups and inherited by subgroups
section by section, versions (author, time, summary), history and diffs, validation errors naming the field
and the entry (422), delivery to devices over the agent protocol (GET /agent/v1/policy with ETag /
If-None-Match, the version in every check-in answer, sync_policy queued on changes and device moves), the
applied / pending / out_of_sync lifecycle of an offline device (agent.policy_timeout = 2 s: out of sync, the
command again, then applied when it reports the version), the state across a restart, "policy.changed"
events, and secrets: the uninstall password never appears
in an API answer, the log, the database or a backup (only its verifier), and Wi-Fi passwords are not readable
in the database file or a backup (encrypted with a key kept in var/keys/, apart from the database).

Devices are enrolled with the simulator bulwark-agent; check-ins and policy fetches are raw agent-protocol
requests with the device's certificate (helpers of test_agent.py)."""

import json
import os
import stat
import time
import uuid

import pytest

from test_agent import agent_bin, make_env  # noqa: F401 (agent_bin is a fixture)

UNINSTALL_PASSWORD = "Uninst4ll-Secret-%s" % uuid.uuid4().hex[:8]
WIFI_PASSWORD = "WiFi-Passw0rd-%s" % uuid.uuid4().hex[:8]
EAP_PASSWORD = "Eap-Passw0rd-%s" % uuid.uuid4().hex[:8]


def uniq(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:6])


@pytest.fixture(scope="module")
def env(module_servers, agent_bin, tmp_path_factory):  # noqa: F811
    srv = module_servers.start(plugins=[])
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("devices"))
    return srv, admin, agent


def new_group(admin, parent=None):
    name = uniq("g")
    body = {"name": name}
    if parent:
        body["parent"] = parent
    admin.call("POST", "/api/v1/groups", json=body, expect=201)
    return name


def put(admin, group, doc, expect=200):
    return admin.call("PUT", "/api/v1/groups/%s/policy" % group, json=doc, expect=expect).body


def effective(admin, group):
    return admin.call("GET", "/api/v1/groups/%s/policy/effective" % group, expect=200).body


def enroll_in(admin, agent, group):
    key = admin.key(group=group)["key"]
    return agent.enroll(key=key)


def open_commands(admin, dev_id, ctype="sync_policy"):
    cmds = admin.call("GET", "/api/v1/devices/%s/commands" % dev_id, expect=200).body["commands"]
    return [c for c in cmds if c["type"] == ctype and c["state"] in ("queued", "sent", "acknowledged")]


def all_commands(admin, dev_id, ctype="sync_policy"):
    cmds = admin.call("GET", "/api/v1/devices/%s/commands" % dev_id, expect=200).body["commands"]
    return [c for c in cmds if c["type"] == ctype]


def status_of(admin, dev_id):
    st = admin.call("GET", "/api/v1/policies/status", expect=200).body
    mine = [d for d in st["devices"] if d["device_id"] == dev_id]
    assert len(mine) == 1, st
    return mine[0]


# ---- inheritance


def test_subgroup_overrides_one_section_inherits_the_rest(env):
    _, admin, _ = env
    top = new_group(admin)
    sub = new_group(admin, parent=top)
    put(admin, top, {"password": {"required": True, "min_length": 8},
                     "malware_scan": {"realtime": False}})
    put(admin, sub, {"password": {"required": True, "min_length": 12}})
    e_top, e_sub = effective(admin, top), effective(admin, sub)
    assert e_top["policy"]["password"]["min_length"] == 8, e_top
    assert e_sub["policy"]["password"]["min_length"] == 12, e_sub
    # inherited from the parent, untouched by the subgroup
    assert e_sub["policy"]["malware_scan"]["realtime"] is False, e_sub
    # defaults for what nobody set (the iOS malicious-profile scan is off by default)
    assert e_sub["policy"]["privacy"]["ios_malicious_profile_scan"] is False, e_sub
    assert e_sub["sources"]["password"] == sub and e_sub["sources"]["malware_scan"] == top, e_sub
    assert e_sub["sources"]["privacy"] == "defaults", e_sub
    assert e_top["version"] != e_sub["version"] and len(e_sub["version"]) == 16
    # A section override replaces the whole inherited section: fields not given come from the defaults.
    put(admin, sub, {"malware_scan": {"scheduled": {"enabled": True, "frequency": "daily", "time": "03:30"}}})
    e_sub = effective(admin, sub)
    assert e_sub["policy"]["malware_scan"]["realtime"] is True, e_sub  # the default, not the parent's False
    # version 2 of the subgroup has no password section: the parent's is inherited again
    assert e_sub["policy"]["password"]["min_length"] == 8, e_sub
    assert e_sub["sources"]["password"] == top and e_sub["sources"]["malware_scan"] == sub, e_sub
    # A parent's change reaches the subgroup's effective policy.
    put(admin, top, {"privacy": {"ios_malicious_profile_scan": True}})
    assert effective(admin, sub)["policy"]["privacy"]["ios_malicious_profile_scan"] is True


def test_new_subgroup_and_parent_move_change_effective_policy(env):
    _, admin, agent = env
    a, b = new_group(admin), new_group(admin)
    put(admin, a, {"password": {"required": True, "min_length": 9}})
    put(admin, b, {"password": {"required": True, "min_length": 15}})
    child = new_group(admin, parent=a)
    assert effective(admin, child)["policy"]["password"]["min_length"] == 9
    dev = enroll_in(admin, agent, child)
    v_before = dev.checkin()["policy"]["version"]
    assert v_before == effective(admin, child)["version"]
    admin.call("PATCH", "/api/v1/groups/" + child, json={"parent": b}, expect=200)
    e = effective(admin, child)
    assert e["policy"]["password"]["min_length"] == 15 and e["version"] != v_before, e
    assert open_commands(admin, dev.id), "moving the group queues sync_policy for its devices"
    assert dev.checkin()["policy"]["version"] == e["version"]


def test_moving_a_device_changes_its_policy_and_queues_sync(env):
    _, admin, agent = env
    src, dst = new_group(admin), new_group(admin)
    put(admin, dst, {"app_control": {"enabled": True, "blocked": ["com.example.game"]}})
    dev = enroll_in(admin, agent, src)
    first = dev.checkin()
    assert first["policy"]["version"] == effective(admin, src)["version"], first
    assert not open_commands(admin, dev.id), "a new device gets its policy from the check-in answer"
    doc = dev.api("GET", "/agent/v1/policy").body
    assert doc["policy"]["app_control"]["enabled"] is False, doc
    admin.call("PATCH", "/api/v1/devices/" + dev.id, json={"group": dst}, expect=200)
    cmds = open_commands(admin, dev.id)
    assert len(cmds) == 1 and cmds[0]["created_by"] == "policy", cmds
    ans = dev.checkin()
    assert ans["policy"]["version"] == effective(admin, dst)["version"], ans
    assert [c["type"] for c in ans["commands"]] == ["sync_policy"], ans
    doc = dev.api("GET", "/agent/v1/policy").body
    assert doc["policy"]["app_control"] == {"enabled": True, "blocked": ["com.example.game"], "allowed": [],
                                           "required": []}, doc
    # Moving it to where it already is changes nothing.
    admin.call("PATCH", "/api/v1/devices/" + dev.id, json={"group": dst}, expect=200)


# ---- versions, history, diff


def test_every_put_is_a_version_with_history_and_diff(env):
    _, admin, _ = env
    g = new_group(admin)
    assert admin.call("GET", "/api/v1/groups/%s/policy" % g, expect=200).body == {"group": g, "version": 0,
                                                                                 "policy": {}}
    r1 = put(admin, g, {"password": {"required": True, "min_length": 8}})
    assert r1["version"] == 1 and r1["summary"] == "password", r1
    r2 = put(admin, g, {"password": {"required": True, "min_length": 10}, "sms_filter": {"enabled": True}})
    assert r2["version"] == 2 and r2["summary"] == "password, sms_filter", r2
    r3 = put(admin, g, {"password": {"required": True, "min_length": 10}, "sms_filter": {"enabled": True}})
    assert r3["version"] == 3 and r3["summary"] == "no changes", r3
    own = admin.call("GET", "/api/v1/groups/%s/policy" % g, expect=200).body
    assert own["version"] == 3 and own["author"] == "admin" and own["at"].endswith("Z"), own
    assert own["policy"]["password"]["min_length"] == 10, own
    hist = admin.call("GET", "/api/v1/groups/%s/policy/history" % g, expect=200).body
    assert [v["version"] for v in hist["versions"]] == [3, 2, 1] and hist["current"] == 3, hist
    assert all(v["author"] == "admin" and v["at"].endswith("Z") for v in hist["versions"]), hist
    assert hist["versions"][1]["summary"] == "password, sms_filter"
    page = admin.call("GET", "/api/v1/groups/%s/policy/history?limit=1&before=3" % g, expect=200).body
    assert [v["version"] for v in page["versions"]] == [2], page
    v1 = admin.call("GET", "/api/v1/groups/%s/policy/versions/1" % g, expect=200).body
    assert v1["version"] == 1 and v1["policy"]["password"]["min_length"] == 8 and v1["summary"] == "password", v1
    diff = admin.call("GET", "/api/v1/groups/%s/policy/diff?from=1&to=2" % g, expect=200).body
    paths = {c["path"]: c for c in diff["changes"]}
    assert paths["password.min_length"]["from"] == 8 and paths["password.min_length"]["to"] == 10, diff
    assert any(p.startswith("sms_filter") for p in paths), diff
    assert admin.call("GET", "/api/v1/groups/%s/policy/diff?from=2&to=3" % g, expect=200).body["changes"] == []
    d0 = admin.call("GET", "/api/v1/groups/%s/policy/diff?from=0&to=1" % g, expect=200).body
    assert d0["changes"], d0
    for q, status in [("from=1&to=9", 404), ("from=1", 400), ("from=x&to=1", 400), ("from=-1&to=1", 400)]:
        assert admin.call("GET", "/api/v1/groups/%s/policy/diff?%s" % (g, q)).status == status, q
    assert admin.call("GET", "/api/v1/groups/%s/policy/versions/9" % g).status == 404
    assert admin.call("GET", "/api/v1/groups/%s/policy/versions/0" % g).status == 400
    assert admin.call("GET", "/api/v1/groups/no-such/policy/history").status == 404
    entries = admin.call("GET", "/api/v1/audit?limit=100", expect=200).body["entries"]
    assert any(e["action"] == "policy.set" and e["target"] == g and "version 2: password, sms_filter" in e["detail"]
               for e in entries), entries


# ---- validation


def test_validation_errors_name_field_and_entry(env):
    _, admin, _ = env
    g = new_group(admin)
    bad = {"web_protection": {"enabled": True, "lists": {"android": {"block": [
        "example.com", "https://[::1]:8443/x", "*.ads.example", "not a host!", "10.0.0.1"]}}},
        "password": {"min_length": 2}}
    r = admin.call("PUT", "/api/v1/groups/%s/policy" % g, json=bad)
    assert r.status == 422 and r.body["error"]["code"] == "invalid_policy", r
    details = r.body["error"]["details"]
    by_field = {d["field"]: d for d in details}
    assert "web_protection.lists.android.block[3]" in by_field, details
    assert by_field["web_protection.lists.android.block[3]"]["entry"] == "not a host!", details
    assert "password.min_length" in by_field, details
    assert not any(f.startswith("web_protection.lists.android.block[%d]" % i) for i in (0, 1, 2, 4)
                   for f in by_field), details
    r = admin.call("PUT", "/api/v1/groups/%s/policy" % g, json={"bogus_section": {}})
    assert r.status == 422 and any("bogus_section" in d["field"] + d.get("entry", "") for d in
                                   r.body["error"]["details"]), r
    # nothing was stored
    assert admin.call("GET", "/api/v1/groups/%s/policy" % g, expect=200).body["version"] == 0
    assert admin.srv.api("PUT", "/api/v1/groups/%s/policy" % g, body=b"{not json", token=admin.token,
                         headers={"Content-Type": "application/json"}).status == 400
    assert admin.call("PUT", "/api/v1/groups/no-such/policy", json={}).status == 404


def test_catalog_lists_platform_hints(env):
    _, admin, _ = env
    items = admin.call("GET", "/api/v1/policies/catalog", expect=200).body["items"]
    ids = {i["id"]: i for i in items}
    assert "camera" in ids and "platforms" in ids["camera"], items


def test_readonly_reads_but_cannot_put(env):
    srv, admin, _ = env
    name = uniq("ro")
    srv.add_admin(admin.token, name, "readonly-password-1", role="readonly")
    tok = srv.login(name, "readonly-password-1")
    assert srv.api("GET", "/api/v1/groups/default/policy/effective", token=tok).status == 200
    assert srv.api("GET", "/api/v1/policies/status", token=tok).status == 200
    assert srv.api("PUT", "/api/v1/groups/default/policy", json={}, token=tok).status == 403


# ---- delivery


def test_etag_and_if_none_match(env):
    _, admin, agent = env
    g = new_group(admin)
    dev = enroll_in(admin, agent, g)
    r = dev.api("GET", "/agent/v1/policy")
    assert r.status == 200, r
    v = r.body["version"]
    assert r.headers["ETag"] == '"%s"' % v, r.headers
    assert set(r.body["policy"]) >= {"malware_scan", "web_protection", "password", "app_control", "privacy"}, r
    r304 = dev.api("GET", "/agent/v1/policy", headers={"If-None-Match": '"%s"' % v})
    assert r304.status == 304 and r304.headers["ETag"] == '"%s"' % v, r304
    assert dev.api("GET", "/agent/v1/policy", headers={"If-None-Match": '"0000000000000000"'}).status == 200
    assert dev.checkin()["policy"]["version"] == v
    put(admin, g, {"call_filter": {"enabled": True, "block_unknown": True}})
    r2 = dev.api("GET", "/agent/v1/policy", headers={"If-None-Match": '"%s"' % v})
    assert r2.status == 200 and r2.body["version"] != v, r2
    assert r2.body["policy"]["call_filter"]["block_unknown"] is True, r2
    assert dev.checkin()["policy"]["version"] == r2.body["version"]


def test_policy_change_queues_sync_for_group_devices_only(env):
    _, admin, agent = env
    g, other = new_group(admin), new_group(admin)
    mine, theirs = enroll_in(admin, agent, g), enroll_in(admin, agent, other)
    for d in (mine, theirs):
        d.checkin()
    put(admin, g, {"updates": {"patterns": {"mode": "manual"}}})
    assert len(open_commands(admin, mine.id)) == 1
    assert open_commands(admin, theirs.id) == []
    put(admin, g, {"updates": {"patterns": {"mode": "scheduled", "frequency": "daily", "time": "01:00"}}})
    assert len(open_commands(admin, mine.id)) == 1, "a second change merges with the open sync_policy"


@pytest.fixture(scope="module")
def short_timeout(module_servers, agent_bin, tmp_path_factory):  # noqa: F811
    srv = module_servers.start(plugins=[], settings={"agent": {"policy_timeout": "2s"}})
    admin, agent = make_env(srv, agent_bin, tmp_path_factory.mktemp("offline"))
    return srv, admin, agent


def wait_for(pred, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail("%s not reached within %d s" % (what, timeout))
        time.sleep(0.2)


def test_applied_pending_out_of_sync_lifecycle(short_timeout):
    _, admin, agent = short_timeout
    g = new_group(admin)
    dev = enroll_in(admin, agent, g)
    v0 = dev.checkin()["policy"]["version"]
    dev.checkin({"policy_version": v0})
    st = status_of(admin, dev.id)
    assert st["state"] == "applied" and st["applied_version"] == v0 == st["current_version"], st
    assert st["group"] == g and st["applied_at"].endswith("Z"), st

    # A change: pending, with sync_policy queued.
    v1 = put(admin, g, {"password": {"required": True, "min_length": 7}})["effective_version"]
    st = status_of(admin, dev.id)
    assert st["state"] == "pending" and st["current_version"] == v1 and st["applied_version"] == v0, st
    # The device takes the command and completes it, but never reports the version: then it goes offline.
    ans = dev.checkin()
    cmd = [c for c in ans["commands"] if c["type"] == "sync_policy"]
    assert len(cmd) == 1, ans
    r = dev.api("POST", "/agent/v1/commands/%s/result" % cmd[0]["id"], json={"status": "completed"})
    assert r.status == 200, r
    assert open_commands(admin, dev.id) == []

    # Past agent.policy_timeout: out of sync, and sync_policy queued again (never stuck pending).
    wait_for(lambda: status_of(admin, dev.id)["state"] == "out_of_sync", what="out_of_sync")
    wait_for(lambda: open_commands(admin, dev.id), what="sync_policy queued again")
    assert len(all_commands(admin, dev.id)) == 2
    by_state = admin.call("GET", "/api/v1/policies/status?state=out_of_sync&group=" + g, expect=200).body
    assert [d["device_id"] for d in by_state["devices"]] == [dev.id] and by_state["counts"]["out_of_sync"] == 1
    # It stays out of sync while offline; the command is not duplicated (it merges with the open one).
    time.sleep(2.5)
    assert status_of(admin, dev.id)["state"] == "out_of_sync"
    assert len(open_commands(admin, dev.id)) == 1

    # It comes back, runs the command and reports the version: applied.
    ans = dev.checkin()
    assert ans["policy"]["version"] == v1 and [c["type"] for c in ans["commands"]] == ["sync_policy"], ans
    dev.checkin({"policy_version": v1})
    st = status_of(admin, dev.id)
    assert st["state"] == "applied" and st["applied_version"] == v1, st
    time.sleep(2.5)
    assert status_of(admin, dev.id)["state"] == "applied"
    assert admin.call("GET", "/api/v1/policies/status?state=bogus").status == 400
    assert admin.call("GET", "/api/v1/policies/status?group=no-such").status == 404


def test_state_survives_a_restart(servers, agent_bin, tmp_path):  # noqa: F811
    srv = servers.start(plugins=[], settings={"agent": {"policy_timeout": "1h"}})
    admin, agent = make_env(srv, agent_bin, tmp_path)
    g = new_group(admin)
    put(admin, g, {"privacy": {"ios_malicious_profile_scan": True}})
    dev = enroll_in(admin, agent, g)
    v = dev.checkin()["policy"]["version"]
    dev.checkin({"policy_version": v})
    srv.stop()
    srv.start()
    admin, _ = make_env(srv, agent_bin, tmp_path)
    assert effective(admin, g)["version"] == v
    assert effective(admin, g)["policy"]["privacy"]["ios_malicious_profile_scan"] is True
    st = status_of(admin, dev.id)
    assert st["state"] == "applied" and st["applied_version"] == v, st
    assert dev.checkin()["policy"]["version"] == v


# ---- secrets


def secret_doc():
    return {
        "uninstall_protection": {"enabled": True, "password": UNINSTALL_PASSWORD},
        "wifi": {"networks": [
            {"ssid": "Office", "security": "wpa2_personal", "password": WIFI_PASSWORD},
            {"ssid": "Corp", "security": "wpa2_enterprise",
             "eap": {"method": "peap", "identity": "alice", "password": EAP_PASSWORD}},
        ]},
    }


def assert_no_secret(text, what):
    for s in (UNINSTALL_PASSWORD, WIFI_PASSWORD, EAP_PASSWORD):
        assert s not in text, "%s contains a secret (%s...)" % (what, s[:6])


def test_secrets_never_shown_or_stored_in_clear(env, tmp_path):
    srv, admin, agent = env
    g = new_group(admin)
    dev = enroll_in(admin, agent, g)
    r1 = put(admin, g, secret_doc())
    # A second version keeps the secrets with password_set (and changes something else).
    doc2 = secret_doc()
    doc2["uninstall_protection"] = {"enabled": True, "password_set": True}
    doc2["wifi"]["networks"][0] = {"ssid": "Office", "security": "wpa2_personal", "password_set": True,
                                   "hidden": True}
    doc2["wifi"]["networks"][1]["eap"] = {"method": "peap", "identity": "alice", "password_set": True}
    r2 = put(admin, g, doc2)
    assert r2["version"] == r1["version"] + 1
    base = "/api/v1/groups/%s/policy" % g
    answers = [admin.call("GET", path, expect=200) for path in (
        base, base + "/effective", base + "/history", base + "/versions/1", base + "/versions/2",
        base + "/diff?from=0&to=1", base + "/diff?from=1&to=2", "/api/v1/audit?limit=200",
        "/api/v1/policies/status", "/api/v1/groups")]
    for r in answers:
        assert_no_secret(r.raw.decode(), "an API answer")
    own = answers[0].body["policy"]
    assert own["uninstall_protection"] == {"enabled": True, "password_set": True}, own
    assert "verifier" not in json.dumps(own) and "enc" not in json.dumps(own["wifi"]), own
    net = own["wifi"]["networks"][0]
    assert net.get("password_set") is True and "password" not in net, net
    assert "password" not in own["wifi"]["networks"][1]["eap"], own

    # The device receives the verifier (never the password) and the Wi-Fi secrets in clear (over mTLS).
    d = dev.api("GET", "/agent/v1/policy")
    assert d.status == 200, d
    text = d.raw.decode()
    assert UNINSTALL_PASSWORD not in text
    ver = d.body["policy"]["uninstall_protection"]["verifier"]
    assert ver["algorithm"] == "pbkdf2-sha256" and ver["iterations"] >= 210000 and ver["salt"] and ver["hash"], ver
    nets = d.body["policy"]["wifi"]["networks"]
    assert nets[0]["password"] == WIFI_PASSWORD and nets[0]["hidden"] is True, nets
    assert nets[1]["eap"]["password"] == EAP_PASSWORD, nets

    # A refused password (too long) is not echoed by the 422 answer either.
    refused = "Refused-" + UNINSTALL_PASSWORD * 4
    r = admin.call("PUT", base, json={"uninstall_protection": {"enabled": True, "password": refused}})
    assert r.status == 422 and "uninstall_protection.password" in [d["field"] for d in r.body["error"]["details"]], r
    assert UNINSTALL_PASSWORD not in r.raw.decode(), r

    # Not in the log.
    assert_no_secret(srv.log_text(), "the server log")

    # Not in the database file (nor its WAL), nor in a backup; the key file is apart, mode 0600.
    for name in ("bulwark.db", "bulwark.db-wal"):
        p = srv.var / name
        if p.exists():
            assert_no_secret(p.read_bytes().decode("latin-1"), name)
    b = admin.call("GET", "/api/v1/db/backup", expect=200)
    backup = b.raw.decode("latin-1")
    assert backup.startswith("SQLite format 3"), backup[:20]
    assert_no_secret(backup, "the backup")
    (tmp_path / "backup.db").write_bytes(b.raw)
    import sqlite3
    con = sqlite3.connect(str(tmp_path / "backup.db"))
    try:
        docs = [row[0] for row in con.execute("SELECT document FROM policy_versions WHERE group_id ="
                                              " (SELECT id FROM groups WHERE name = ?)", (g,))]
    finally:
        con.close()
    assert len(docs) == 2
    stored = json.loads(docs[0])
    assert "verifier" in stored["uninstall_protection"] and "password" not in stored["uninstall_protection"]
    key = srv.var / "keys" / "policy.key"
    assert key.is_file() and stat.S_IMODE(os.stat(key).st_mode) == 0o600, key


def test_policy_changed_events(servers, agent_bin, tmp_path):  # noqa: F811
    """policy.changed is emitted for every group whose effective policy changed (a parent's change reaches its
    subgroups) and for a device move; example_hello counts the events it sees."""
    import re

    srv = servers.start(plugins=["example_hello"], settings={"example_hello": {"topics": ["*"],
                                                                               "count_events": True}})
    admin, agent = make_env(srv, agent_bin, tmp_path)

    def count():
        text = srv.api("GET", "/metrics").raw.decode()
        m = re.search(r'^bulwark_example_hello_events_total\{topic="policy.changed"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    top = new_group(admin)
    new_group(admin, parent=top)
    other = new_group(admin)
    put(admin, top, {"sms_filter": {"enabled": True}})
    wait_for(lambda: count() == 2, what="two policy.changed events (the group and its subgroup)")
    dev = enroll_in(admin, agent, other)
    admin.call("PATCH", "/api/v1/devices/" + dev.id, json={"group": top}, expect=200)
    wait_for(lambda: count() == 3, what="policy.changed for the device move")
    put(admin, top, {"sms_filter": {"enabled": True}})  # same content: a version, but no change to deliver
    time.sleep(0.5)
    assert count() == 3
