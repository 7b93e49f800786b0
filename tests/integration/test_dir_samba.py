"""dir_ldap against a real Samba AD DC (tests/integration/ldapservers.py: provisioned once for this
module into a temporary directory, LDAP on the dedicated loopback address SAMBA_ADDR and ::1):
UPN, DOMAIN\\user and sAMAccountName binds for administrator login, roles from nested groups, a
disabled account refused with its reason in the audit log, a sync of more than 1,000 users
(paged results) and of a group with more than 1,500 members (range retrieval), incremental sync by
uSNChanged, enrollment by directory credentials, IPv6."""

import json
import re
import time

import pytest

from ldapservers import (PLUGIN, SAMBA_ADMIN_PW, SAMBA_BASE, DirApi, SambaData, audit_entries, dir_pki,
                         directory_enroll, directory_login, samba_dc)

__all__ = ["dir_pki", "samba_dc"]  # module fixtures used below

D = SambaData


def settings_for(dc, pki, **over):
    s = {
        "url": dc.url("ldaps"),
        "ca_file": str(pki.ca),
        "bind_dn": "CN=Administrator,CN=Users," + SAMBA_BASE,
        "bind_password": SAMBA_ADMIN_PW,
        "base_dn": SAMBA_BASE,
        "schema": "ad",
        "domain": "CORP",
        "upn_suffix": "corp.example",
        "admin_groups": ["Bulwark Admins"],
        "readonly_groups": ["Auditors"],
        "group_map": ["Sales=Sales Phones"],
        "sync_interval": "0s",
        "connect_timeout": "5s",
        "timeout": "30s",
    }
    s.update(over)
    return s


@pytest.fixture(scope="module")
def asrv(module_servers, samba_dc, dir_pki):
    return module_servers.start(plugins=[PLUGIN], settings={PLUGIN: settings_for(samba_dc, dir_pki)})


@pytest.fixture(scope="module")
def aapi(asrv):
    return DirApi(asrv)


@pytest.fixture(scope="module")
def synced(aapi):
    """One full sync for the module's listing tests -> the GET sync answer."""
    t0 = time.monotonic()
    st = aapi.sync(full=True, timeout=180)
    st["elapsed"] = time.monotonic() - t0
    return st


def test_harness_samba(samba_dc):
    """The DC itself (ldap-utils over LDAPS), so a harness problem is not mistaken for a plugin bug."""
    cp = samba_dc.ldapsearch(filt="(cn=%s)" % D.BIG_GROUP, attrs=["member;range=0-1499"])
    assert cp.returncode == 0, cp.stderr
    assert len([ln for ln in cp.stdout.splitlines() if ln.startswith("member;range=0-1499: ")]) == 1500
    cp = samba_dc.ldapsearch(filt="(&(objectClass=user)(sAMAccountName=bulk*))", attrs=["1.1"],
                             extra=["-E", "pr=500/noprompt"])
    assert cp.returncode == 0 and cp.stdout.count("dn: CN=bulk") == D.BULK_USERS, cp.stderr
    cp = samba_dc.ldapsearch(filt="(member:1.2.840.113556.1.4.1941:=%s)" % D.user_dn("dave"), attrs=["cn"])
    assert "cn: Bulwark Admins" in cp.stdout and "cn: IT Staff" in cp.stdout, cp.stdout
    cp = samba_dc.ldapsearch(filt="(sAMAccountName=dave)", attrs=["1.1"], user="CORP\\dave",
                             password=D.USERS["dave"][3])
    assert cp.returncode == 0, cp.stderr
    cp = samba_dc.ldapsearch(filt="(sAMAccountName=dave)", attrs=["1.1"], user="mallory@corp.example",
                             password=D.USERS["mallory"][3])
    assert cp.returncode == 49 and "data 533" in cp.stderr, cp.stderr  # 533: account disabled


def test_connection_report(aapi, samba_dc):
    rep = aapi.test()
    assert rep["ok"] is True, rep
    assert rep["tls"]["verified"] is True and "dc1.corp.example" in rep["tls"]["peer_subject"], rep
    assert rep["bind"] == "ok" and rep["search"]["entries"] >= 1, rep


@pytest.mark.parametrize("login", ["dave@corp.example", "CORP\\dave", "dave"])
def test_login_forms_nested_admin(asrv, login):
    # dave is in "IT Staff", which is a member of "Bulwark Admins".
    r = directory_login(asrv, login, D.USERS["dave"][3])
    assert r.status == 201, (login, r)
    assert r.body["role"] == "administrator", (login, r)
    assert asrv.api("GET", "/api/v1/whoami", token=r.body["token"]).status == 200


def test_login_readonly_and_refusals(asrv):
    r = directory_login(asrv, "CORP\\bob", D.USERS["bob"][3])
    assert r.status == 201 and r.body["role"] == "readonly", r
    # alice is in no administrator group
    r = directory_login(asrv, "alice@corp.example", D.USERS["alice"][3])
    assert r.status in (401, 403), r
    r = directory_login(asrv, "dave@corp.example", "Wrong-Passw0rd-9")
    assert r.status == 401 and r.error_code() == "bad_credentials", r


def test_disabled_account_refused_with_reason(asrv):
    token = asrv.login()
    r = directory_login(asrv, "mallory@corp.example", D.USERS["mallory"][3])
    assert r.status in (401, 403), r
    r = directory_login(asrv, "CORP\\mallory", D.USERS["mallory"][3])
    assert r.status in (401, 403), r
    entries = [e for e in audit_entries(asrv, token) if e["action"] == "login" and "mallory" in (e.get("target") or "")]
    assert len(entries) >= 2, entries
    for e in entries:
        assert e["outcome"] != "success", e
        assert re.search(r"(?i)disabled", e.get("detail") or ""), "no clear reason in the audit log: %r" % e
    assert D.USERS["mallory"][3] not in asrv.log_text()


def test_sync_paging(aapi, synced):
    users = {}
    for u in aapi.users(limit=500):
        assert u["login"] not in users, "listed twice: %r" % u
        users[u["login"]] = u
    assert len(users) > 1000
    missing = [n for n in D().bulk_names() if n not in users]
    assert not missing, "%d bulk users not synced, e.g. %s" % (len(missing), missing[:5])
    for sam, (disp, _, _, _) in D.USERS.items():
        u = users[sam]
        assert u["display_name"] == disp, u
        assert u["upn"] == sam + "@corp.example" and u["mail"] == sam + "@corp.example", u
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", u["guid"]), u
    assert users["mallory"]["disabled"] is True and users["alice"]["disabled"] is False
    assert "Sales" in users["alice"]["groups"], users["alice"]
    assert synced["last"]["added"] >= len(D.USERS) + D.BULK_USERS, synced["last"]


def test_sync_range_retrieval_and_nesting(aapi, synced):
    groups = {g["name"]: g for g in aapi.groups(limit=500)}
    for cn in list(D.GROUPS) + [D.BIG_GROUP]:
        assert cn in groups, sorted(groups)
    assert groups[D.BIG_GROUP]["members"] == D.BULK_USERS, groups[D.BIG_GROUP]
    assert "IT Staff" in json.dumps(groups["Bulwark Admins"]["nested_groups"]), groups["Bulwark Admins"]
    assert groups["Sales"]["device_group"] == "Sales Phones" and groups["Sales"]["members"] == 2, groups["Sales"]
    assert groups["Sales"]["dn"].lower() == D.group_dn("Sales").lower(), groups["Sales"]


def test_incremental_sync_usn(aapi, synced, samba_dc):
    before = {u["login"]: u for u in aapi.users(q="bulk0042")}["bulk0042"]
    samba_dc.replace(D.user_dn("bulk0042"), "displayName", "Zoë Ünïcode 42")
    st = aapi.sync(full=False, timeout=120)
    last = st["last"]
    assert last["updated"] >= 1 and last["added"] == 0 and last["removed"] == 0, last
    assert any(c["guid"] == before["guid"] and c["change"] == "updated" for c in last["changes"]), last
    assert last["updated"] < 50, "an incremental sync should only see what changed: %r" % last
    after = {u["login"]: u for u in aapi.users(q="bulk0042")}["bulk0042"]
    assert after["display_name"] == "Zoë Ünïcode 42" and after["guid"] == before["guid"], after


def test_enroll_by_directory_credentials(asrv):
    token = asrv.login()
    r = directory_enroll(asrv, "CORP\\alice", D.USERS["alice"][3])
    assert r.status == 201, r
    dev = asrv.api("GET", "/api/v1/devices/%s" % r.body["device_id"], token=token).body
    dev = dev.get("device", dev)
    assert dev["group"] == "Sales Phones", dev
    assert dev["owner"] == "alice@corp.example", dev  # the UPN, whatever form the user typed
    assert dev.get("owner_name") == D.USERS["alice"][0], dev
    assert dev.get("owner_email") == "alice@corp.example", dev
    r = directory_enroll(asrv, "mallory@corp.example", D.USERS["mallory"][3])
    assert r.status in (401, 403), r


def test_ipv6(servers, samba_dc, dir_pki):
    if not samba_dc.ipv6:
        pytest.skip("Samba could not listen on [::1]:389/636 (IPv6 loopback missing or ports taken)")
    url = samba_dc.url("ldaps", "::1")
    srv = servers.start(plugins=[PLUGIN], settings={PLUGIN: settings_for(samba_dc, dir_pki, url=url)})
    rep = DirApi(srv).test()
    assert rep["ok"] is True and rep["url"] == url and rep["tls"]["verified"] is True, rep
    r = directory_login(srv, "CORP\\dave", D.USERS["dave"][3])
    assert r.status == 201 and r.body["role"] == "administrator", r
