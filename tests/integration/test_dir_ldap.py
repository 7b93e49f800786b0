"""dir_ldap against a real OpenLDAP slapd (tests/integration/ldapservers.py): LDAPS and StartTLS,
certificate checks (wrong CA, expired server certificate), wrong service password, administrator
login with directory credentials (uid and mail forms, roles from nested group membership, a
locked account refused with its reason in the audit log), sync (UTF-8 display names after an
import and a re-import, incremental sync, a server killed in the middle of a sync), IPv6 (::1),
and device enrollment by directory credentials."""

import json
import os
import re
import subprocess
import time

import pytest

from bwserver import tail
from ldapservers import (BASE_DN, PLUGIN, SVC_DN, SVC_PW, DirApi, Slapd, SlapdData, audit_entries, dir_pki,
                         directory_enroll, directory_login, ldif_entry, slapd_server)

__all__ = ["dir_pki", "slapd_server"]  # module fixtures used below

D = SlapdData


def settings_for(slapd, pki, **over):
    s = {
        "url": slapd.url("ldaps"),
        "ca_file": str(pki.ca),
        "bind_dn": SVC_DN,
        "bind_password": SVC_PW,
        "base_dn": BASE_DN,
        "schema": "rfc2307bis",
        "user_filter": "(objectClass=inetOrgPerson)",
        "group_filter": "(objectClass=groupOfNames)",
        "upn_suffix": "corp.example",
        "admin_groups": ["bulwark-admins"],
        "readonly_groups": ["auditors"],
        "group_map": ["sales=Sales Phones"],
        "sync_interval": "0s",
        "connect_timeout": "3s",
        "timeout": "5s",
    }
    s.update(over)
    return {k: v for k, v in s.items() if v is not None}


def start(pool, slapd, pki, **over):
    return pool.start(plugins=[PLUGIN], settings={PLUGIN: settings_for(slapd, pki, **over)})


@pytest.fixture(scope="module")
def dsrv(module_servers, slapd_server, dir_pki):
    """bulwarkd with dir_ldap over LDAPS to the module's slapd."""
    return start(module_servers, slapd_server, dir_pki)


@pytest.fixture(scope="module")
def dapi(dsrv):
    return DirApi(dsrv)


def assert_tls_ok(rep, url):
    assert rep["ok"] is True, rep
    assert rep["url"] == url, rep
    tls = rep["tls"]
    assert tls["verified"] is True, rep
    assert tls["version"] in ("TLSv1.2", "TLSv1.3", "TLS1.2", "TLS1.3"), rep
    assert "dc1.corp.example" in tls["peer_subject"], rep
    assert "Bulwark Test Directory CA" in tls["peer_issuer"], rep
    assert rep["bind"] == "ok", rep
    assert rep["search"]["base_dn"].lower() == BASE_DN, rep
    assert rep["search"]["entries"] >= 1, rep
    assert isinstance(rep["elapsed_ms"], (int, float)) and rep["elapsed_ms"] >= 0, rep
    assert not rep.get("error"), rep


def assert_refused(rep, pattern, what):
    assert rep["ok"] is False, (what, rep)
    assert rep.get("error") and re.search(pattern, rep["error"]), (what, rep)


# ---- the test server itself (ldap-utils), so a harness problem is not mistaken for a plugin bug


def test_harness_slapd(slapd_server, dir_pki):
    out = slapd_server.search(filt="(uid=alice)", attrs=["displayName", "entryUUID", "memberOf"])
    assert "entryUUID: " in out and "memberOf: cn=sales,ou=groups," + BASE_DN in out, out
    env = dict(os.environ, LDAPTLS_CACERT=str(dir_pki.ca), LDAPTLS_REQCERT="demand")
    hosts = ["127.0.0.1"] + (["::1"] if slapd_server.ipv6 else [])
    for url in [slapd_server.url("ldaps", h) for h in hosts]:
        cp = subprocess.run(["ldapwhoami", "-x", "-H", url, "-D", SVC_DN, "-w", SVC_PW], capture_output=True,
                            text=True, env=env, timeout=30)
        assert cp.returncode == 0 and SVC_DN in cp.stdout, (url, cp.stderr)
    # Searches without paging stop at 100 entries (sizelimit), with paging they get everything.
    cp = subprocess.run(["ldapsearch", "-x", "-H", slapd_server.url("ldaps"), "-D", SVC_DN, "-w", SVC_PW, "-b", BASE_DN,
                         "-LLL", "(objectClass=inetOrgPerson)", "1.1"], capture_output=True, text=True, env=env,
                        timeout=30)
    assert cp.returncode == 4 and cp.stdout.count("dn: ") == 100, (cp.returncode, cp.stderr)
    cp = subprocess.run(["ldapsearch", "-x", "-H", slapd_server.url("ldaps"), "-D", SVC_DN, "-w", SVC_PW, "-b", BASE_DN,
                         "-LLL", "-E", "pr=50/noprompt", "(objectClass=inetOrgPerson)", "1.1"], capture_output=True,
                        text=True, env=env, timeout=30)
    assert cp.returncode == 0 and cp.stdout.count("dn: ") == len(D.USERS) + 300, cp.stderr
    cp = subprocess.run(["ldapwhoami", "-x", "-ZZ", "-H", slapd_server.url("ldap"), "-D", SVC_DN, "-w", SVC_PW],
                        capture_output=True, text=True, env=env, timeout=30)
    assert cp.returncode == 0, cp.stderr
    # the locked account is refused by ppolicy, the wrong CA by the client
    cp = subprocess.run(["ldapwhoami", "-x", "-H", slapd_server.url("ldaps"), "-e", "ppolicy", "-D", D.user_dn("carol"),
                         "-w", D.USERS["carol"][3]], capture_output=True, text=True, env=env, timeout=30)
    assert cp.returncode == 49 and "locked" in cp.stderr.lower(), cp.stderr
    cp = subprocess.run(["ldapwhoami", "-x", "-H", slapd_server.url("ldaps"), "-D", SVC_DN, "-w", SVC_PW],
                        capture_output=True, text=True, timeout=30,
                        env=dict(env, LDAPTLS_CACERT=str(dir_pki.wrong_ca)))
    assert cp.returncode != 0, cp.stdout


# ---- connections


def test_ldaps_ok(dapi, slapd_server):
    assert_tls_ok(dapi.test(), slapd_server.url("ldaps"))
    assert dapi.srv.plugin(PLUGIN)["state"] == "running", dapi.srv.health()


def test_starttls_ok(servers, slapd_server, dir_pki):
    srv = start(servers, slapd_server, dir_pki, url=slapd_server.url("ldap"), starttls=True)
    assert_tls_ok(DirApi(srv).test(), slapd_server.url("ldap"))


def test_wrong_ca_refused(servers, slapd_server, dir_pki):
    srv = start(servers, slapd_server, dir_pki, ca_file=str(dir_pki.wrong_ca))
    mark = srv.log_mark()
    rep = DirApi(srv).test()
    assert_refused(rep, r"(?i)certificate.*(issuer|not accepted|verif|trust)", "wrong CA")
    assert rep.get("bind") != "ok", rep
    assert SVC_PW not in json.dumps(rep)
    # The same reason reaches the log (an operator reads it there, not in an API answer).
    srv.wait_log(r"(?i)dir_ldap.*(certif|verif|trust|issuer)", since=mark)
    assert SVC_PW not in srv.log_text(), "the bind password must never be logged"


def test_expired_server_certificate_refused(servers, dir_pki, tmp_path):
    expired = Slapd(tmp_path / "slapd-expired", dir_pki, data=SlapdData(bulk_users=0), cert="expired").start()
    try:
        srv = start(servers, expired, dir_pki)
        rep = DirApi(srv).test()
        assert_refused(rep, r"(?i)expired", "expired certificate")
        assert rep.get("bind") != "ok", rep
        # StartTLS meets the same certificate.
        srv2 = start(servers, expired, dir_pki, url=expired.url("ldap"), starttls=True)
        assert_refused(DirApi(srv2).test(), r"(?i)expired", "expired certificate (StartTLS)")
    finally:
        expired.stop()


def test_wrong_bind_password(servers, slapd_server, dir_pki):
    srv = start(servers, slapd_server, dir_pki, bind_password="not-the-password")
    rep = DirApi(srv).test()
    assert rep["ok"] is False, rep
    assert rep["tls"]["verified"] is True, rep  # TLS was fine; the bind failed
    assert rep["bind"] != "ok", rep
    assert re.search(r"(?i)credential|password|bind", json.dumps(rep["bind"]) + rep.get("error", "")), rep
    assert "not-the-password" not in json.dumps(rep) and "not-the-password" not in srv.log_text()


def test_server_unreachable(servers, slapd_server, dir_pki):
    from bwserver import free_port
    srv = start(servers, slapd_server, dir_pki, url="ldaps://127.0.0.1:%d" % free_port())
    t0 = time.monotonic()
    rep = DirApi(srv).test()
    assert rep["ok"] is False and rep.get("error"), rep
    assert time.monotonic() - t0 < 30, "connect_timeout is 3 s"


def test_ipv6(servers, slapd_server, dir_pki):
    if not slapd_server.ipv6:
        pytest.skip("no IPv6 loopback on this machine")
    url = slapd_server.url("ldaps", "::1")
    srv = start(servers, slapd_server, dir_pki, url=url)
    assert_tls_ok(DirApi(srv).test(), url)
    r = directory_login(srv, D.USERS["erin"][4], D.USERS["erin"][3])
    assert r.status == 201 and r.body["role"] == "administrator", r


# ---- administrator login with directory credentials


def test_login_roles(dsrv):
    # erin: directly in bulwark-admins, by uid
    r = directory_login(dsrv, "erin", D.USERS["erin"][3])
    assert r.status == 201, r
    assert r.body["role"] == "administrator", r
    tok = r.body["token"]
    w = dsrv.api("GET", "/api/v1/whoami", token=tok)
    assert w.status == 200 and w.body.get("role") == "administrator", w
    # dave: an administrator only through it-staff nested in bulwark-admins; mail (UPN) form
    r = directory_login(dsrv, "dave@corp.example", D.USERS["dave"][3])
    assert r.status == 201 and r.body["role"] == "administrator", r
    # the administrator session works for administrator routes
    assert dsrv.api("GET", "/api/v1/admins", token=r.body["token"]).status == 200
    # bob: auditors -> readonly; a write is refused
    r = directory_login(dsrv, "bob@corp.example", D.USERS["bob"][3])
    assert r.status == 201 and r.body["role"] == "readonly", r
    assert dsrv.api("POST", "/api/v1/plugins/%s/sync" % PLUGIN, json={"full": True},
                    token=r.body["token"]).status == 403


def test_login_refusals(dsrv):
    token = dsrv.login()
    # alice: a valid directory account in no administrator group
    r = directory_login(dsrv, "alice@corp.example", D.USERS["alice"][3])
    assert r.status in (401, 403), r
    # wrong password, unknown user
    r = directory_login(dsrv, "erin", "Wrong-Password-9")
    assert r.status == 401 and r.error_code() == "bad_credentials", r
    r = directory_login(dsrv, "nobody@corp.example", "Whatever-Password-9")
    assert r.status == 401, r
    # carol: locked (pwdAccountLockedTime); refused even with the right password, and the audit
    # log says why
    r = directory_login(dsrv, "carol@corp.example", D.USERS["carol"][3])
    assert r.status in (401, 403), r
    entries = audit_entries(dsrv, token)
    mine = [e for e in entries if e["action"] == "login" and "carol" in (e.get("target") or "")]
    assert mine, entries[:20]
    assert mine[0]["outcome"] != "success", mine[0]
    assert re.search(r"(?i)locked|disabled", mine[0].get("detail") or ""), mine[0]
    alice = [e for e in entries if e["action"] == "login" and "alice" in (e.get("target") or "")]
    assert alice and alice[0]["outcome"] != "success", entries[:20]
    raw = json.dumps(entries)
    for u in D.USERS.values():
        assert u[3] not in raw, "a password reached the audit log"
    assert "Wrong-Password-9" not in dsrv.log_text()


# ---- sync


def by_login(users):
    out = {}
    for u in users:
        assert u["login"] not in out, "user listed twice: %r" % u
        out[u["login"]] = u
    return out


def check_directory_listing(dapi):
    users = by_login(dapi.users())
    assert len(users) == len(D.USERS) + 300, sorted(users)[:10]
    for uid, (disp, _, _, _, mail) in D.USERS.items():
        u = users[uid]
        assert u["display_name"] == disp, u  # UTF-8 round trip (the reference product's bug)
        assert u["mail"] == mail and u["upn"] == mail, u
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", u["guid"]), u
    assert users["carol"]["disabled"] is True, users["carol"]
    assert users["alice"]["disabled"] is False, users["alice"]
    assert users["alice"]["manager"] and "erin" in users["alice"]["manager"], users["alice"]
    assert set(users["alice"]["groups"]) >= {"sales", "everyone"}, users["alice"]
    assert users["user0123"]["display_name"] == "Bulk Üser 0123", users["user0123"]
    groups = {g["name"]: g for g in dapi.groups()}
    assert set(groups) == set(D.GROUPS), groups.keys()
    assert groups["everyone"]["members"] == len(users), groups["everyone"]
    assert groups["sales"]["members"] == 2 and groups["sales"]["device_group"] == "Sales Phones", groups["sales"]
    assert "it-staff" in json.dumps(groups["bulwark-admins"]["nested_groups"]), groups["bulwark-admins"]
    assert groups["it-staff"]["device_group"] is None, groups["it-staff"]
    return users, groups


def test_sync_import_and_reimport(dapi):
    st = dapi.sync(full=True)
    last = st["last"]
    assert last["added"] >= len(D.USERS) + 300, last
    assert last["started_at"] and last["finished_at"], last
    assert len(last.get("changes", [])) <= 200, "changes are capped at 200"
    users1, groups1 = check_directory_listing(dapi)
    # A re-import changes nothing and shows the same names (the reference product mangled them).
    st = dapi.sync(full=True)
    assert st["last"]["added"] == 0 and st["last"]["updated"] == 0 and st["last"]["removed"] == 0, st["last"]
    users2, groups2 = check_directory_listing(dapi)
    assert {k: v["guid"] for k, v in users1.items()} == {k: v["guid"] for k, v in users2.items()}
    # q= filters
    found = dapi.users(q="Lüdenscheidt")
    assert [u["login"] for u in found] == ["alice"], found


def test_incremental_sync(dapi, slapd_server):
    if dapi.sync_state().get("last") is None:
        dapi.sync(full=True)
    before = by_login(dapi.users(q="user0007"))["user0007"]
    # modifyTimestamp has one-second resolution: make the change land after the last sync's second.
    time.sleep(1.1)
    slapd_server.replace(D.user_dn("user0007"), "displayName", "Zoë Ünïcode Seven")
    st = dapi.sync(full=False)
    last = st["last"]
    assert last["updated"] >= 1 and last["added"] == 0 and last["removed"] == 0, last
    changed = [c for c in last["changes"] if c["guid"] == before["guid"]]
    assert changed and changed[0]["change"] == "updated" and changed[0]["kind"] == "user", last
    after = by_login(dapi.users(q="user0007"))["user0007"]
    assert after["display_name"] == "Zoë Ünïcode Seven" and after["guid"] == before["guid"], after
    # Only one user changed: an incremental sync does not touch the rest.
    assert last["updated"] <= 2, last


def test_server_killed_during_sync(servers, dir_pki, tmp_path):
    """The directory dies in the middle of a full sync: the sync fails, the synced data stay as
    they were (nothing half-written), and the next sync (server back) succeeds."""
    data = SlapdData(bulk_users=1000)
    slapd = Slapd(tmp_path / "slapd-kill", dir_pki, data=data).start()
    try:
        srv = start(servers, slapd, dir_pki, page_size=10, timeout="3s")
        api = DirApi(srv)
        api.sync(full=True)
        n0 = len(api.users(limit=500))
        assert n0 == len(D.USERS) + 1000
        # New entries a half-written sync would show.
        slapd.add("".join(ldif_entry(D.user_dn("late%03d" % i), [
            ("objectClass", ["top", "person", "organizationalPerson", "inetOrgPerson"]), ("uid", "late%03d" % i),
            ("cn", "Late %d" % i), ("sn", "Late"), ("displayName", "Läte %d" % i)]) for i in range(40)))
        caught = False
        for _attempt in range(3):
            api.start_sync(full=True)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                st = api.sync_state()
                if st["state"] != "running" or st["progress"]["users"] > 0:
                    break
                time.sleep(0.005)
            slapd.pause()  # freeze the directory where the sync is now
            st = api.sync_state()
            if st["state"] == "running":
                assert st["progress"]["users"] > 0, st  # in the middle: some pages were read
                caught = True
                break
            slapd.resume()  # finished before we could stop it: try again
            assert st["state"] == "idle", st
        assert caught, "the sync always finished before the directory could be stopped"
        slapd.kill()
        st = api.wait_sync(timeout=60)
        assert st["state"] == "failed", st
        assert st["last"].get("error"), st
        assert len(api.users(limit=500)) == n0, "a failed sync must not leave half-written data"
        assert not [u for u in api.users(q="late") if u["login"].startswith("late")]
        # The server comes back (same ports, same data). Pooled connections died with it: the
        # first login afterwards must reconnect rather than fail.
        slapd.start()
        r = directory_login(srv, "erin", D.USERS["erin"][3])
        assert r.status == 201 and r.body["role"] == "administrator", r
        # The next sync succeeds.
        st = api.sync(full=True, timeout=120)
        assert st["state"] == "idle" and st["last"]["added"] >= 40, st["last"]
        assert len(api.users(limit=500)) == n0 + 40
        assert srv.running(), tail(srv.log_text())
    finally:
        slapd.kill()


def test_sync_conflict_and_roles(dsrv, dapi):
    """A second sync while one runs is refused with 409; readonly may read sync state."""
    api = dapi
    api.start_sync(full=True)
    r = api.call("POST", "sync", json={"full": True})
    if r.status != 409:
        # The first sync may already be over on a fast machine; then this one started.
        assert r.status == 202, r
    api.wait_sync()
    r = directory_login(dsrv, "bob", D.USERS["bob"][3])
    assert r.status == 201 and r.body["role"] == "readonly", r
    ro = DirApi(dsrv, token=r.body["token"])
    assert ro.call("GET", "sync").status == 200
    assert ro.call("GET", "users?limit=5").status == 200
    assert ro.call("POST", "test", json={}).status == 403
    assert dsrv.api("GET", "/api/v1/plugins/%s/users" % PLUGIN).status == 401


# ---- enrollment by directory credentials


def test_enroll_by_directory_credentials(dsrv):
    token = dsrv.login()
    disp, _, _, pw, mail = D.USERS["alice"]
    r = directory_enroll(dsrv, "alice@corp.example", pw)
    assert r.status == 201, r
    dev_id = r.body["device_id"]
    d = dsrv.api("GET", "/api/v1/devices/%s" % dev_id, token=token)
    assert d.status == 200, d
    dev = d.body.get("device", d.body)
    assert dev["enroll_method"] == "directory", dev
    assert dev["group"] == "Sales Phones", dev  # sales -> Sales Phones (group_map)
    # device owner = the directory user (UPN; mail-as-UPN here), with name and e-mail for mail policies
    assert dev["owner"] == mail, dev
    assert dev.get("owner_name") == disp, "owner name missing from the device record: %r" % dev
    assert dev.get("owner_email") == mail, "owner e-mail missing from the device record: %r" % dev

    # uid form; a user mapped to no device group gets none
    r = directory_enroll(dsrv, "erin", D.USERS["erin"][3], platform="ios", os_version="17", model="iPhone 15",
                         manufacturer="Apple")
    assert r.status == 201, r
    dev = dsrv.api("GET", "/api/v1/devices/%s" % r.body["device_id"], token=token).body
    dev = dev.get("device", dev)
    assert dev["group"] == "default" and dev["owner"] == D.USERS["erin"][4], dev
    assert dev.get("owner_name") == D.USERS["erin"][0], dev

    count = len(dsrv.api("GET", "/api/v1/devices?limit=500", token=token).body["devices"])
    # wrong password, locked account: refused, nothing enrolled
    for user, pw in (("alice@corp.example", "Wrong-Password-9"), ("carol@corp.example", D.USERS["carol"][3])):
        r = directory_enroll(dsrv, user, pw)
        assert r.status in (401, 403), (user, r)
    assert len(dsrv.api("GET", "/api/v1/devices?limit=500", token=token).body["devices"]) == count
    assert "Wrong-Password-9" not in dsrv.log_text()


def test_bulwarkctl_directory_commands(dsrv):
    """bulwarkctl directory test|sync|users|groups against the real plugin and slapd."""
    env = {"BULWARK_TOKEN": dsrv.login()}
    cp = dsrv.ctl("directory", "test", env=env)
    assert cp.returncode == 0, cp
    assert re.search(r"^Result:\s+ok$", cp.stdout, re.M) and re.search(r"^Verified:\s+yes$", cp.stdout, re.M), cp.stdout
    assert re.search(r"^TLS version:\s+TLSv?1\.[23]$", cp.stdout, re.M), cp.stdout  # GnuTLS says "TLS1.3"
    cp = dsrv.ctl("directory", "sync", "--full", "--wait", env=env, timeout=120)
    assert cp.returncode == 0 and "Sync finished: full" in cp.stdout, cp
    cp = dsrv.ctl("directory", "users", "--query", "alice", env=env)
    assert cp.returncode == 0 and "Alice Müller-Lüdenscheidt" in cp.stdout, cp
    cp = dsrv.ctl("directory", "groups", "--json", env=env)
    assert cp.returncode == 0, cp
    assert any(g["name"] == "sales" for g in json.loads(cp.stdout)["groups"]), cp.stdout
    cp = dsrv.ctl("directory", "--plugin", "nope", "test", env=env)
    assert cp.returncode == 1, cp
