"""The host's side of directory credentials (admin login, device enrollment) through the
"directory" capability, with the fx_directory fixture plugin: roles, refusals with their reasons
in the audit log, outages, name clashes with local accounts. The LDAP connector itself (dir_ldap)
is tested against real slapd and Samba AD servers in test_dir_ldap.py and test_dir_samba.py."""

import pytest

from test_devices_admin import enroll_raw

USERS = [
    "alice@corp.example|alice-pass|administrator|-|ok",
    "rita@corp.example|rita-pass|readonly|-|ok",
    "nora@corp.example|nora-pass|-|Sales|ok",
    "dave@corp.example|dave-pass|administrator|-|disabled",
    "lock@corp.example|lock-pass|administrator|-|locked",
]


def start(servers, fixture_plugins, build, **settings):
    """A server with fx_directory (loaded from the fixture directory, beside a copy of no other plugin)."""
    s = {"fx_directory": dict({"users": USERS}, **settings)}
    return servers.start(plugin_dir=fixture_plugins, plugins=["fx_directory"], settings=s)


def audit(srv, token):
    return srv.api("GET", "/api/v1/audit?limit=50", token=token).body["entries"]


def test_login_forms_and_roles(servers, fixture_plugins, build):
    srv = start(servers, fixture_plugins, build)
    for typed in ("alice@corp.example", "CORP\\alice", "alice", "ALICE@corp.example"):
        r = srv.api("POST", "/api/v1/session", json={"user": typed, "password": "alice-pass"})
        assert r.status == 201, (typed, r)
        assert r.body["user"] == "alice@corp.example" and r.body["role"] == "administrator"
    tok = r.body["token"]
    assert srv.api("GET", "/api/v1/whoami", token=tok).body["user"] == "alice@corp.example"
    # One account, whatever form was typed; listed beside the local ones.
    names = [a["name"] for a in srv.api("GET", "/api/v1/admins", token=tok).body["admins"]]
    assert names.count("alice@corp.example") == 1 and "admin" in names

    r = srv.api("POST", "/api/v1/session", json={"user": "rita@corp.example", "password": "rita-pass"})
    assert r.status == 201 and r.body["role"] == "readonly"
    ro = r.body["token"]
    assert srv.api("POST", "/api/v1/enrollment/keys", json={}, token=ro).status == 403


def test_refusals_name_their_reason(servers, fixture_plugins, build):
    srv = start(servers, fixture_plugins, build)
    admin = srv.login()
    cases = [
        ("alice@corp.example", "wrong", 401, "wrong user name or password", "wrong user name or password"),
        ("nobody@corp.example", "x", 401, "wrong user name or password", "no such user"),
        ("dave@corp.example", "dave-pass", 401, "account disabled", "account disabled"),
        ("lock@corp.example", "lock-pass", 401, "account locked", "account locked"),
        ("nora@corp.example", "nora-pass", 403, "not in an administrator group", "no administrator group"),
    ]
    for user, pw, status, message, detail in cases:
        r = srv.api("POST", "/api/v1/session", json={"user": user, "password": pw})
        assert r.status == status, (user, r)
        assert message in r.body["error"]["message"], (user, r)
        entry = [e for e in audit(srv, admin) if e["action"] == "login" and e["actor"] == user][0]
        assert entry["outcome"] == "failure" and detail in entry["detail"], entry
    # Passwords never reach the log.
    assert "alice-pass" not in srv.log_text() and "dave-pass" not in srv.log_text()


def test_local_accounts_win_and_clash(servers, fixture_plugins, build):
    srv = start(servers, fixture_plugins, build)
    admin = srv.login()
    # The local "admin" is checked locally, never sent to the directory.
    assert srv.api("POST", "/api/v1/session", json={"user": "admin", "password": srv.password}).status == 201
    # A local account named like a directory user keeps the name: the directory login is refused.
    srv.add_admin(admin, "rita@corp.example", "local-password-123", role="readonly")
    r = srv.api("POST", "/api/v1/session", json={"user": "rita@corp.example", "password": "local-password-123"})
    assert r.status == 201  # local password, local account
    r = srv.api("POST", "/api/v1/session", json={"user": "CORP\\rita", "password": "rita-pass"})
    assert r.status == 409 and "local administrator" in r.body["error"]["message"], r


def test_removing_a_directory_account_ends_its_sessions(servers, fixture_plugins, build):
    srv = start(servers, fixture_plugins, build)
    tok = srv.api("POST", "/api/v1/session", json={"user": "alice", "password": "alice-pass"}).body["token"]
    admin = srv.login()
    assert srv.api("DELETE", "/api/v1/admins/alice@corp.example", token=admin).status == 204
    assert srv.api("GET", "/api/v1/whoami", token=tok).status == 401
    # The directory still says yes: the next login creates the account again, with a fresh role.
    r = srv.api("POST", "/api/v1/session", json={"user": "alice", "password": "alice-pass"})
    assert r.status == 201 and r.body["role"] == "administrator", r


def test_directory_outage_is_503(servers, fixture_plugins, build):
    srv = start(servers, fixture_plugins, build, unavailable=True)
    r = srv.api("POST", "/api/v1/session", json={"user": "alice", "password": "alice-pass"})
    assert r.status == 503 and r.body["error"]["code"] == "directory_unavailable", r
    assert "cannot connect" in r.body["error"]["message"]
    # An outage is not a failed password: it does not count towards the lockout.
    for _ in range(8):
        assert srv.api("POST", "/api/v1/session", json={"user": "alice", "password": "x"}).status == 503


def test_enrollment_by_directory_credentials(servers, fixture_plugins, build, tmp_path):
    srv = start(servers, fixture_plugins, build)
    admin = srv.login()
    r = enroll_raw(srv, tmp_path, {"method": "directory", "user": "CORP\\nora", "password": "nora-pass"})
    assert r.status == 201, r
    dev = srv.api("GET", "/api/v1/devices/" + r.body["device_id"], token=admin).body
    assert dev["owner"] == "nora@corp.example"
    assert dev["owner_name"] == "Fixture User" and dev["owner_email"] == "nora@corp.example", dev
    assert dev["enroll_method"] == "directory", dev
    # The group the directory maps nora to is created under default when it is new.
    assert dev["group"] == "Sales", dev
    g = srv.api("GET", "/api/v1/groups/Sales", token=admin)
    assert g.status == 200 and g.body["parent"] == "default", g

    r = enroll_raw(srv, tmp_path, {"method": "directory", "user": "nora", "password": "bad"})
    assert r.status == 403 and r.body["error"]["message"] == "wrong user name or password", r
    r = enroll_raw(srv, tmp_path, {"method": "directory", "user": "dave", "password": "dave-pass"})
    assert r.status == 403 and r.body["error"]["message"] == "account disabled", r
    r = enroll_raw(srv, tmp_path, {"method": "directory", "user": "nora"})
    assert r.status == 400 and "password" in r.body["error"]["message"], r
    refusals = srv.api("GET", "/api/v1/enrollment/refusals", token=admin).body["refusals"]
    assert any(x["reason"] == "directory_refused" and "dave" in (x["detail"] or "") for x in refusals), refusals
    assert "nora-pass" not in srv.log_text() and "dave-pass" not in srv.log_text()


def test_enrollment_without_directory_is_501(servers, tmp_path):
    srv = servers.start(plugins=[])
    r = enroll_raw(srv, tmp_path, {"method": "directory", "user": "nora", "password": "x"})
    assert r.status == 501 and r.body["error"]["code"] == "not_implemented", r


def test_directory_outage_during_enrollment(servers, fixture_plugins, build, tmp_path):
    srv = start(servers, fixture_plugins, build, unavailable=True)
    r = enroll_raw(srv, tmp_path, {"method": "directory", "user": "nora", "password": "nora-pass"})
    assert r.status == 503 and r.body["error"]["code"] == "directory_unavailable", r
