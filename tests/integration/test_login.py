"""POST/DELETE /api/v1/session and bearer authentication: success, bad credentials, malformed
input, body size limit, missing or bad tokens, logout."""

import re

import pytest

MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(module_servers):
    # High failure limits: this module makes many failed logins on purpose, rate limiting is
    # tested in test_ratelimit.py.
    return module_servers.start(settings={
        "limits": {"max_body_bytes": MAX_BODY},
        "admin": {"max_failures_per_account": 1000, "max_failures_per_address": 1000},
    })


def test_login_success_and_whoami(server):
    r = server.api("POST", "/api/v1/session", json={"user": "admin", "password": server.password})
    assert r.status == 201, r
    b = r.body
    assert b["user"] == "admin"
    assert b["role"] == "administrator"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b["expires_at"]), b["expires_at"]
    assert isinstance(b["token"], str) and len(b["token"]) >= 32
    assert server.password not in r.raw.decode()
    w = server.api("GET", "/api/v1/whoami", token=b["token"])
    assert w.status == 200, w
    assert w.body["user"] == "admin"
    assert w.body["role"] == "administrator"
    assert w.body["auth"] == "session"
    assert w.body["expires_at"] == b["expires_at"]


def test_two_logins_give_different_tokens(server):
    assert server.login() != server.login()


def test_wrong_password(server):
    r = server.api("POST", "/api/v1/session", json={"user": "admin", "password": server.password + "x"})
    assert r.status == 401
    assert r.error_code() == "bad_credentials"
    assert "token" not in r.body


def test_unknown_user_same_answer(server):
    wrong = server.api("POST", "/api/v1/session", json={"user": "admin", "password": "not-the-password"})
    unknown = server.api("POST", "/api/v1/session", json={"user": "nobody-here", "password": "not-the-password"})
    assert wrong.status == unknown.status == 401
    assert wrong.body == unknown.body, "an unknown account must not be distinguishable from a wrong password"


def test_password_of_other_case_user_refused(server):
    r = server.api("POST", "/api/v1/session", json={"user": "ADMIN", "password": server.password})
    assert r.status == 401


@pytest.mark.parametrize("body", [b"{", b"{\"user\": \"admin\",}", b"not json", b"[1, 2]", b"\"admin\"", b"",
                                  b"{\"user\":\"a\",\"user\":\"b\",\"password\":\"x\"}"])
def test_malformed_json(server, body):
    r = server.api("POST", "/api/v1/session", body=body, headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    assert r.error_code() == "invalid_json"
    assert r.body["error"]["message"]


@pytest.mark.parametrize("payload", [
    {"user": 1, "password": "x" * 12},
    {"user": "admin", "password": 12345678901234},
    {"user": ["admin"], "password": "x"},
    {"user": "admin", "password": None},
    {"user": "admin", "password": True},
])
def test_wrong_types(server, payload):
    r = server.api("POST", "/api/v1/session", json=payload)
    assert r.status == 400, r
    assert r.error_code() == "bad_request"


@pytest.mark.parametrize("payload,field", [({"user": "admin"}, "password"), ({"password": "x"}, "user"),
                                           ({}, "user")])
def test_missing_fields(server, payload, field):
    r = server.api("POST", "/api/v1/session", json=payload)
    assert r.status == 400, r
    assert r.error_code() == "bad_request"
    assert field in r.body["error"]["message"]


@pytest.mark.parametrize("payload", [{"user": "", "password": "x"}, {"user": "admin", "password": ""},
                                     {"user": "u" * 129, "password": "x"}, {"user": "admin", "password": "p" * 1025}])
def test_empty_or_too_long_fields(server, payload):
    r = server.api("POST", "/api/v1/session", json=payload)
    assert r.status == 400, r
    assert r.error_code() == "bad_request"


def test_oversize_body_413(server):
    payload = {"user": "admin", "password": "x", "pad": "p" * (MAX_BODY + 100)}
    r = server.api("POST", "/api/v1/session", json=payload)
    assert r.status == 413, r
    # The server keeps serving.
    assert server.api("GET", "/healthz").status == 200


def test_body_just_under_limit_processed(server):
    payload = {"user": "admin", "password": "wrong-password", "pad": ""}
    base = len(__import__("json").dumps(payload))
    payload["pad"] = "p" * (MAX_BODY - base - 10)
    r = server.api("POST", "/api/v1/session", json=payload)
    assert r.status == 401, r


def test_no_token_401_with_www_authenticate(server):
    r = server.api("GET", "/api/v1/whoami")
    assert r.status == 401
    assert r.error_code() == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("auth", ["Bearer garbage", "Bearer ", "Bearer " + "A" * 300, "Basic YWRtaW46YWRtaW4=",
                                  "garbage"])
def test_bad_authorization_401(server, auth):
    r = server.api("GET", "/api/v1/whoami", headers={"Authorization": auth})
    assert r.status == 401, r
    assert r.error_code() == "unauthorized"
    assert "WWW-Authenticate" in r.headers


def test_password_is_not_a_token(server):
    r = server.api("GET", "/api/v1/whoami", token=server.password)
    assert r.status == 401


def test_logout_invalidates_only_that_token(server):
    t1, t2 = server.login(), server.login()
    r = server.api("DELETE", "/api/v1/session", token=t1)
    assert r.status == 204, r
    assert r.raw == b""
    assert server.api("GET", "/api/v1/whoami", token=t1).status == 401
    assert server.api("DELETE", "/api/v1/session", token=t1).status == 401
    assert server.api("GET", "/api/v1/whoami", token=t2).status == 200


def test_logout_without_token(server):
    r = server.api("DELETE", "/api/v1/session")
    assert r.status == 401


def test_logout_with_api_token_refused(server):
    session = server.login()
    r = server.api("POST", "/api/v1/tokens", json={"name": "logout-test"}, token=session)
    assert r.status == 201, r
    api_token = r.body["token"]
    r = server.api("DELETE", "/api/v1/session", token=api_token)
    assert r.status == 400, r
    assert server.api("GET", "/api/v1/whoami", token=api_token).status == 200
