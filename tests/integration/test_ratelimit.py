"""Failed-login rate limiting per account and per client address, and its audit trail."""

PW_BOB = "bob-password-123456"


def test_account_then_address_limit(servers):
    srv = servers.start(plugins=[], settings={"admin": {"max_failures_per_account": 3, "max_failures_per_address": 5,
                                                        "failure_window": "15m"}})
    token = srv.login()
    srv.add_admin(token, "bob", PW_BOB, role="readonly")

    # Three wrong passwords for admin: refused as bad credentials.
    for _ in range(3):
        r = srv.api("POST", "/api/v1/session", json={"user": "admin", "password": "wrong-password-x"})
        assert r.status == 401, r
    # Now even the right password is refused, with a Retry-After.
    r = srv.api("POST", "/api/v1/session", json={"user": "admin", "password": srv.password})
    assert r.status == 429, r
    assert r.error_code() == "rate_limited"
    retry = int(r.headers["Retry-After"])
    assert 0 < retry <= 15 * 60
    assert "token" not in r.body

    # Another account from the same address still works (3 address failures < 5).
    bob = srv.login("bob", PW_BOB)
    assert srv.api("GET", "/api/v1/whoami", token=bob).body["user"] == "bob"

    # Two more failures (bob's account: 2 < 3) reach the address limit of 5.
    for _ in range(2):
        r = srv.api("POST", "/api/v1/session", json={"user": "bob", "password": "wrong-password-y"})
        assert r.status == 401, r
    r = srv.api("POST", "/api/v1/session", json={"user": "bob", "password": PW_BOB})
    assert r.status == 429, r
    assert int(r.headers["Retry-After"]) > 0
    # Unknown accounts from this address are refused too (address limit).
    r = srv.api("POST", "/api/v1/session", json={"user": "carol", "password": "whatever-password"})
    assert r.status == 429, r

    # Existing sessions keep working; the audit log has the failures and the refusals.
    r = srv.api("GET", "/api/v1/audit?limit=100", token=token)
    assert r.status == 200, r
    entries = r.body["entries"]
    logins = [e for e in entries if e["action"] == "login"]
    failures = [e for e in logins if e["outcome"] == "failure"]
    limited = [e for e in logins if e["outcome"] == "rate_limited"]
    assert len(failures) == 5, logins
    assert {e["target"] for e in failures} == {"admin", "bob"}
    assert any(e["detail"] == "wrong password" for e in failures)
    assert len(limited) == 3, logins
    assert {e["target"] for e in limited} == {"admin", "bob", "carol"}
    for e in logins:
        assert e["address"].startswith("127.0.0.1"), e
    assert "wrong-password" not in r.raw.decode(), "passwords must never reach the audit log"
    # Newest first.
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)

    # Metrics counted the failed logins (not the refused ones, which never checked a password).
    m = srv.api("GET", "/metrics").raw.decode()
    assert "\nbulwark_admin_login_failures_total 5\n" in m, m

    # The password never appears in the server log either.
    assert "wrong-password-x" not in srv.log_text()
    assert PW_BOB not in srv.log_text()


def test_success_resets_account_failures(servers):
    srv = servers.start(plugins=[], settings={"admin": {"max_failures_per_account": 3,
                                                        "max_failures_per_address": 100}})
    for _ in range(2):
        assert srv.api("POST", "/api/v1/session", json={"user": "admin", "password": "nope-nope-nope"}).status == 401
    srv.login()
    for _ in range(2):
        assert srv.api("POST", "/api/v1/session", json={"user": "admin", "password": "nope-nope-nope"}).status == 401
    # 4 failures in the window, but only 2 since the last success.
    srv.login()


def test_audit_query_validation(servers):
    srv = servers.start(plugins=[])
    token = srv.login()
    for q in ("limit=0", "limit=1001", "limit=abc", "before=-1", "before=x"):
        r = srv.api("GET", "/api/v1/audit?" + q, token=token)
        assert r.status == 400, (q, r)
    r = srv.api("GET", "/api/v1/audit?limit=1", token=token)
    assert r.status == 200 and len(r.body["entries"]) == 1
    newest = r.body["entries"][0]
    assert newest["action"] == "login" and newest["outcome"] == "success" and newest["actor"] == "admin"
    r = srv.api("GET", "/api/v1/audit?before=%d" % newest["id"], token=token)
    assert r.status == 200
    assert all(e["id"] < newest["id"] for e in r.body["entries"])
    assert srv.api("GET", "/api/v1/audit").status == 401
