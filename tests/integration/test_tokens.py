"""API tokens: create (shown once), list (never shows the secret), use, revoke, expiry
validation and role limits."""

import calendar
import re
import time
import uuid

import pytest

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def uniq(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


def create(server, token, **payload):
    r = server.api("POST", "/api/v1/tokens", json=payload, token=token)
    assert r.status == 201, r
    return r.body


def test_create_list_use_revoke(server, admin_token):
    name = uniq("ci")
    t = create(server, admin_token, name=name)
    assert UUID_RE.match(t["id"]), t
    assert t["name"] == name
    assert t["role"] == "administrator"  # default: the creator's role
    assert t["expires_at"] is None
    secret = t["token"]
    assert len(secret) >= 32

    r = server.api("GET", "/api/v1/whoami", token=secret)
    assert r.status == 200 and r.body["auth"] == "token" and r.body["user"] == "admin"
    assert r.body["expires_at"] is None

    r = server.api("GET", "/api/v1/tokens", token=admin_token)
    assert r.status == 200
    assert secret not in r.raw.decode(), "the list must never show a token"
    mine = [x for x in r.body["tokens"] if x["id"] == t["id"]]
    assert len(mine) == 1
    listed = mine[0]
    assert listed["name"] == name and listed["role"] == "administrator"
    assert "token" not in listed and not any("hash" in k for k in listed)
    # It was used once: last_used_at is set.
    assert listed["last_used_at"] is not None
    # Sessions are not API tokens: the list holds only kind api.
    assert all(x.get("kind", "api") == "api" for x in r.body["tokens"])

    # The token works as a bearer for administrator routes.
    assert server.api("GET", "/api/v1/tokens", token=secret).status == 200

    r = server.api("DELETE", "/api/v1/tokens/" + t["id"], token=admin_token)
    assert r.status == 204, r
    r = server.api("GET", "/api/v1/whoami", token=secret)
    assert r.status == 401
    assert server.api("DELETE", "/api/v1/tokens/" + t["id"], token=admin_token).status == 404
    ids = [x["id"] for x in server.api("GET", "/api/v1/tokens", token=admin_token).body["tokens"]]
    assert t["id"] not in ids


def test_token_can_revoke_itself(server, admin_token):
    t = create(server, admin_token, name=uniq("self"))
    assert server.api("DELETE", "/api/v1/tokens/" + t["id"], token=t["token"]).status == 204
    assert server.api("GET", "/api/v1/whoami", token=t["token"]).status == 401


def test_revoke_bad_id(server, admin_token):
    r = server.api("DELETE", "/api/v1/tokens/not-a-uuid", token=admin_token)
    assert r.status == 400, r
    r = server.api("DELETE", "/api/v1/tokens/" + str(uuid.uuid4()), token=admin_token)
    assert r.status == 404, r


def test_expires_in(server, admin_token):
    before = int(time.time())
    t = create(server, admin_token, name=uniq("exp"), expires_in=3600)
    exp = calendar.timegm(time.strptime(t["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 3600 - 5 <= exp <= int(time.time()) + 3600 + 5, t
    assert server.api("GET", "/api/v1/whoami", token=t["token"]).body["expires_at"] == t["expires_at"]
    t = create(server, admin_token, name=uniq("exp-null"), expires_in=None)
    assert t["expires_at"] is None


@pytest.mark.parametrize("value", [59, 0, -1, 315360001, "3600", 3600.5, True, [60]])
def test_expires_in_validation(server, admin_token, value):
    r = server.api("POST", "/api/v1/tokens", json={"name": uniq("bad-exp"), "expires_in": value}, token=admin_token)
    assert r.status == 400, r
    assert "expires_in" in r.body["error"]["message"]


@pytest.mark.parametrize("payload", [{}, {"name": ""}, {"name": 7}, {"name": "x" * 65},
                                     {"name": "ok", "role": "superuser"}, {"name": "ok", "role": 1}])
def test_create_validation(server, admin_token, payload):
    r = server.api("POST", "/api/v1/tokens", json=payload, token=admin_token)
    assert r.status == 400, r


def test_readonly_token_limits(server, admin_token):
    t = create(server, admin_token, name=uniq("ro"), role="readonly")
    assert t["role"] == "readonly"
    ro = t["token"]
    r = server.api("GET", "/api/v1/whoami", token=ro)
    assert r.status == 200 and r.body["role"] == "readonly" and r.body["user"] == "admin"
    assert server.api("GET", "/api/v1/admins", token=ro).status == 200
    assert server.api("GET", "/api/v1/plugins/example_hello/hello?name=ro", token=ro).status == 200
    # Not more than readonly although its owner is an administrator.
    for method, path, payload in [("POST", "/api/v1/tokens", {"name": "escalate", "role": "administrator"}),
                                  ("POST", "/api/v1/tokens", {"name": "same", "role": "readonly"}),
                                  ("GET", "/api/v1/tokens", None),
                                  ("GET", "/api/v1/db/backup", None),
                                  ("POST", "/api/v1/admins", {"name": "x-esc", "password": "long-enough-pass"}),
                                  ("POST", "/api/v1/plugins/example_hello/notes", {"key": "k", "text": "t"})]:
        r = server.api(method, path, json=payload, token=ro)
        assert r.status == 403, (method, path, r)


def test_token_creation_audited(server, admin_token):
    name = uniq("aud")
    t = create(server, admin_token, name=name)
    server.api("DELETE", "/api/v1/tokens/" + t["id"], token=admin_token)
    entries = server.api("GET", "/api/v1/audit?limit=20", token=admin_token).body["entries"]
    acts = [(e["action"], e["target"]) for e in entries]
    assert ("token.create", t["id"]) in acts
    assert ("token.revoke", t["id"]) in acts
    assert t["token"] not in str(entries)


def test_api_token_survives_logout_of_session(server):
    session = server.login()
    t = create(server, session, name=uniq("survive"))
    assert server.api("DELETE", "/api/v1/session", token=session).status == 204
    assert server.api("GET", "/api/v1/whoami", token=t["token"]).status == 200
