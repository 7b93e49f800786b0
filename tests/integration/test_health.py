"""Health, routing basics and listeners: /healthz on both listeners, HEAD, 404/405 envelopes, IPv6."""

import pytest


def test_healthz_fields(server):
    r = server.api("GET", "/healthz")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/json")
    h = r.body
    assert h["status"] == "ok"
    assert isinstance(h["version"], str) and h["version"]
    assert isinstance(h["uptime_s"], int) and h["uptime_s"] >= 0
    assert h["database"]["status"] == "ok"
    assert isinstance(h["database"]["schema_version"], int) and h["database"]["schema_version"] >= 1
    names = [p["name"] for p in h["plugins"]]
    assert names == ["example_hello"]
    p = h["plugins"][0]
    assert p["state"] == "running"
    assert p["required"] is False
    assert p["degraded"] is False
    assert p["error"] is None
    assert p["version"] == "1.0.0"
    assert p["detail"] == "greeting ready"


def test_healthz_needs_no_auth_and_ignores_bad_token(server):
    r = server.api("GET", "/healthz", token="not-a-token")
    assert r.status == 200 and r.body["status"] == "ok"


def test_agent_healthz(server):
    r = server.api("GET", "/healthz", port=server.agent_port)
    assert r.status == 200
    assert r.body == {"status": "ok"}


def test_agent_listener_has_no_admin_api(server, admin_token):
    r = server.api("GET", "/api/v1/whoami", token=admin_token, port=server.agent_port)
    assert r.status == 404
    assert r.error_code() == "not_found"


def test_head_healthz(server):
    r = server.api("HEAD", "/healthz")
    assert r.status == 200
    assert r.raw == b""
    assert r.headers["Content-Type"].startswith("application/json")


def test_unknown_path_404_envelope(server):
    r = server.api("GET", "/no/such/thing")
    assert r.status == 404
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.body["error"]["code"] == "not_found"
    assert isinstance(r.body["error"]["message"], str) and r.body["error"]["message"]


def test_unknown_api_path_404_even_without_token(server):
    r = server.api("GET", "/api/v1/nothing-here")
    assert r.status == 404
    assert r.error_code() == "not_found"


@pytest.mark.parametrize("method,path", [("POST", "/healthz"), ("DELETE", "/healthz"), ("PUT", "/api/v1/whoami"),
                                         ("PATCH", "/api/v1/session")])
def test_wrong_method_405(server, method, path):
    r = server.api(method, path, body=b"{}")
    assert r.status == 405
    assert r.error_code() == "method_not_allowed"


def test_security_headers(server):
    r = server.api("GET", "/healthz")
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_ipv6_admin_listener(server):
    if not server.ipv6:
        pytest.skip("no IPv6 loopback on this machine")
    r = server.api("GET", "/healthz", host="::1")
    assert r.status == 200
    assert r.body["status"] == "ok"


def test_keepalive_several_requests_one_connection(server):
    conn = server.connection()
    try:
        for _ in range(3):
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            assert resp.status == 200
            assert b'"status"' in resp.read()
    finally:
        conn.close()
