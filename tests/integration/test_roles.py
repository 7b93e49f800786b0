"""Administrators and roles: readonly limits, self-removal, last administrator, validation."""

import uuid

import pytest

RO_PW = "readonly-password-1"


def uniq(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def readonly(server, admin_token):
    name = uniq("ro")
    created = server.add_admin(admin_token, name, RO_PW, role="readonly")
    assert created["name"] == name and created["role"] == "readonly"
    return name, server.login(name, RO_PW)


def test_readonly_can_read(server, readonly):
    name, tok = readonly
    r = server.api("GET", "/api/v1/whoami", token=tok)
    assert r.status == 200 and r.body["role"] == "readonly" and r.body["user"] == name
    r = server.api("GET", "/api/v1/admins", token=tok)
    assert r.status == 200
    by_name = {a["name"]: a for a in r.body["admins"]}
    assert by_name["admin"]["role"] == "administrator"
    assert by_name[name]["role"] == "readonly"
    for a in r.body["admins"]:
        assert not any("password" in k or "hash" in k for k in a), a
    assert server.api("GET", "/api/v1/plugins", token=tok).status == 200
    assert server.api("GET", "/api/v1/audit", token=tok).status == 200


@pytest.mark.parametrize("method,path,payload", [
    ("POST", "/api/v1/admins", {"name": "ro-made", "password": "long-enough-password", "role": "readonly"}),
    ("DELETE", "/api/v1/admins/admin", None),
    ("GET", "/api/v1/tokens", None),
    ("POST", "/api/v1/tokens", {"name": "ro-token", "role": "readonly"}),
    ("POST", "/api/v1/tokens", {"name": "ro-token-up", "role": "administrator"}),
    ("DELETE", "/api/v1/tokens/00000000-0000-4000-8000-000000000000", None),
    ("GET", "/api/v1/db/backup", None),
])
def test_readonly_forbidden(server, readonly, method, path, payload):
    _, tok = readonly
    r = server.api(method, path, json=payload, token=tok)
    assert r.status == 403, r
    assert r.error_code() == "forbidden"


def test_readonly_forbidden_left_no_trace(server, admin_token, readonly):
    names = [a["name"] for a in server.api("GET", "/api/v1/admins", token=admin_token).body["admins"]]
    assert "ro-made" not in names
    toks = server.api("GET", "/api/v1/tokens", token=admin_token).body["tokens"]
    assert not [t for t in toks if t["name"].startswith("ro-token")]


def test_admin_cannot_remove_itself(server, admin_token):
    r = server.api("DELETE", "/api/v1/admins/admin", token=admin_token)
    assert r.status == 409, r
    assert r.error_code() == "conflict"
    assert server.api("GET", "/api/v1/whoami", token=admin_token).status == 200


def test_remove_unknown_admin_404(server, admin_token):
    r = server.api("DELETE", "/api/v1/admins/" + uniq("ghost"), token=admin_token)
    assert r.status == 404, r


def test_short_password_400(server, admin_token):
    r = server.api("POST", "/api/v1/admins", json={"name": uniq("short"), "password": "elevenchars"},
                   token=admin_token)
    assert r.status == 400, r
    assert "12" in r.body["error"]["message"]


@pytest.mark.parametrize("name", ["bad name", "", "x" * 65, "a/b", "ünïcode", "semi;colon"])
def test_bad_admin_name_400(server, admin_token, name):
    r = server.api("POST", "/api/v1/admins", json={"name": name, "password": "long-enough-password"},
                   token=admin_token)
    assert r.status == 400, r
    assert r.error_code() == "bad_request"


def test_bad_role_400(server, admin_token):
    r = server.api("POST", "/api/v1/admins", json={"name": uniq("role"), "password": "long-enough-password",
                                                   "role": "root"}, token=admin_token)
    assert r.status == 400, r


def test_admin_wrong_types_and_json(server, admin_token):
    r = server.api("POST", "/api/v1/admins", json={"name": 5, "password": "long-enough-password"}, token=admin_token)
    assert r.status == 400
    r = server.api("POST", "/api/v1/admins", body=b"{oops", token=admin_token)
    assert r.status == 400 and r.error_code() == "invalid_json"
    r = server.api("POST", "/api/v1/admins", json={"name": uniq("nopw")}, token=admin_token)
    assert r.status == 400


def test_duplicate_admin_409(server, admin_token):
    name = uniq("dup")
    server.add_admin(admin_token, name, "long-enough-password", role="readonly")
    r = server.api("POST", "/api/v1/admins", json={"name": name, "password": "another-long-password"},
                   token=admin_token)
    assert r.status == 409, r
    assert r.error_code() == "conflict"
    # The first account's password is unchanged.
    server.login(name, "long-enough-password")


def test_default_role(server, admin_token):
    name = uniq("default")
    r = server.api("POST", "/api/v1/admins", json={"name": name, "password": "long-enough-password"},
                   token=admin_token)
    assert r.status == 201, r
    listed = {a["name"]: a["role"] for a in server.api("GET", "/api/v1/admins", token=admin_token).body["admins"]}
    assert listed[name] == r.body["role"]
    assert r.body["role"] in ("administrator", "readonly")


def test_removed_admin_loses_sessions_and_tokens(server, admin_token):
    name = uniq("gone")
    server.add_admin(admin_token, name, "long-enough-password", role="administrator")
    sess = server.login(name, "long-enough-password")
    r = server.api("POST", "/api/v1/tokens", json={"name": "of-" + name}, token=sess)
    assert r.status == 201
    api_tok = r.body["token"]
    assert server.api("GET", "/api/v1/whoami", token=api_tok).status == 200
    r = server.api("DELETE", "/api/v1/admins/" + name, token=admin_token)
    assert r.status == 204, r
    assert server.api("GET", "/api/v1/whoami", token=sess).status == 401
    assert server.api("GET", "/api/v1/whoami", token=api_tok).status == 401
    assert server.login(name, "long-enough-password", expect=401)
    audit = server.api("GET", "/api/v1/audit?limit=50", token=admin_token).body["entries"]
    assert any(e["action"] == "admin.remove" and e["target"] == name and e["actor"] == "admin" for e in audit)


def test_last_administrator_remains(servers):
    """Two administrators may remove each other only until one is left: the survivor cannot
    remove itself, and the removed one's session can no longer act."""
    srv = servers.start(plugins=[])
    admin = srv.login()
    srv.add_admin(admin, "second", "second-password-1", role="administrator")
    second = srv.login("second", "second-password-1")
    r = srv.api("DELETE", "/api/v1/admins/admin", token=second)
    assert r.status == 204, r
    # 'admin' is gone with its session; 'second' is the last administrator.
    assert srv.api("DELETE", "/api/v1/admins/second", token=admin).status == 401
    r = srv.api("DELETE", "/api/v1/admins/second", token=second)
    assert r.status == 409, r
    admins = srv.api("GET", "/api/v1/admins", token=second).body["admins"]
    assert [(a["name"], a["role"]) for a in admins] == [("second", "administrator")]


def test_readonly_cannot_remove_admins(servers):
    srv = servers.start(plugins=[])
    admin = srv.login()
    srv.add_admin(admin, "viewer", "viewer-password-1", role="readonly")
    viewer = srv.login("viewer", "viewer-password-1")
    assert srv.api("DELETE", "/api/v1/admins/admin", token=viewer).status == 403
    # The administrator may remove the readonly account (it is not an administrator).
    assert srv.api("DELETE", "/api/v1/admins/viewer", token=admin).status == 204
    assert srv.api("GET", "/api/v1/whoami", token=viewer).status == 401
