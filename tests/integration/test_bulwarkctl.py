"""bulwarkctl against a running server: login/session, reads, admins, tokens, audit, --json,
and its exit codes for failures (1 refused, 2 usage, 3 unreachable/TLS, 4 not logged in)."""

import json
import os
import stat
import uuid

import pytest

from bwserver import free_port


def uniq(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


@pytest.fixture(scope="module")
def ctl_token(server, admin_token):
    """An API token for bulwarkctl calls that do not test the saved session."""
    r = server.api("POST", "/api/v1/tokens", json={"name": "ctl-tests"}, token=admin_token)
    assert r.status == 201
    return r.body["token"]


def ok(cp):
    assert cp.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (cp.returncode, cp.stdout, cp.stderr)
    return cp


def test_login_session_whoami_logout(server, tmp_path):
    xdg = tmp_path / "xdg"
    env = {"XDG_CONFIG_HOME": str(xdg)}
    cp = server.ctl("whoami", env=env)
    assert cp.returncode == 4, cp
    assert "not logged in" in cp.stderr

    cp = ok(server.ctl("login", "--user", "admin", env=dict(env, BULWARK_PASSWORD=server.password)))
    assert "admin" in cp.stdout
    assert server.password not in cp.stdout + cp.stderr
    session = xdg / "bulwark" / "session.json"
    assert session.is_file()
    assert stat.S_IMODE(session.stat().st_mode) == 0o600, oct(session.stat().st_mode)
    assert stat.S_IMODE(session.parent.stat().st_mode) & 0o077 == 0, oct(session.parent.stat().st_mode)
    assert server.password not in session.read_text()

    cp = ok(server.ctl("whoami", env=env))
    assert "admin" in cp.stdout and "administrator" in cp.stdout
    cp = ok(server.ctl("--json", "whoami", env=env))
    w = json.loads(cp.stdout)
    assert w["user"] == "admin" and w["role"] == "administrator" and w["auth"] == "session"
    # Global options may also come after the command.
    assert json.loads(ok(server.ctl("whoami", "--json", env=env)).stdout)["user"] == "admin"

    ok(server.ctl("logout", env=env))
    cp = server.ctl("whoami", env=env)
    assert cp.returncode == 4, cp


def test_session_revoked_on_server(server, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    ok(server.ctl("login", "--user", "admin", env=dict(env, BULWARK_PASSWORD=server.password)))
    # Revoke every session by logging out through the API with the saved token.
    saved = json.loads((tmp_path / "xdg" / "bulwark" / "session.json").read_text())
    token = saved["sessions"][server.url]["token"]
    assert server.api("DELETE", "/api/v1/session", token=token).status == 204
    cp = server.ctl("whoami", env=env)
    assert cp.returncode == 4, cp
    assert "expired or was revoked" in cp.stderr


def test_login_wrong_password(server, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "BULWARK_PASSWORD": "definitely-wrong-pw"}
    cp = server.ctl("login", "--user", "admin", env=env)
    assert cp.returncode == 1, cp
    assert "wrong user name or password" in cp.stderr
    assert "definitely-wrong-pw" not in cp.stderr + cp.stdout
    assert not (tmp_path / "xdg" / "bulwark" / "session.json").exists()


def test_login_without_password_source_fails(server, tmp_path):
    # No BULWARK_PASSWORD and no terminal: must fail, not hang.
    cp = server.ctl("login", "--user", "admin", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}, timeout=30)
    assert cp.returncode != 0, cp


def test_health_and_plugins(server):
    cp = ok(server.ctl("health"))
    assert "ok" in cp.stdout and "example_hello" in cp.stdout
    h = json.loads(ok(server.ctl("--json", "health")).stdout)
    assert h["status"] == "ok"
    assert [p["name"] for p in h["plugins"]] == ["example_hello"]


def test_plugins_needs_login(server, ctl_token):
    assert server.ctl("plugins").returncode == 4
    cp = ok(server.ctl("plugins", env={"BULWARK_TOKEN": ctl_token}))
    assert "example_hello" in cp.stdout and "running" in cp.stdout
    p = json.loads(ok(server.ctl("--json", "plugins", "--token", ctl_token)).stdout)
    assert p["plugins"][0]["name"] == "example_hello" and p["plugins"][0]["state"] == "running"


def test_admins_add_list_remove(server, ctl_token):
    env = {"BULWARK_TOKEN": ctl_token}
    name = uniq("ctl")
    cp = ok(server.ctl("admins", "add", name, "--role", "readonly", env=dict(env, BULWARK_NEW_PASSWORD="ctl-password-123")))
    assert name in cp.stdout
    # The new account can log in with that password.
    server.login(name, "ctl-password-123")
    cp = ok(server.ctl("admins", "list", env=env))
    assert name in cp.stdout and "readonly" in cp.stdout
    admins = json.loads(ok(server.ctl("--json", "admins", "list", env=env)).stdout)["admins"]
    assert {"name": name, "role": "readonly"}.items() <= next(a for a in admins if a["name"] == name).items()
    # Failures: short password, duplicate, unknown removal.
    cp = server.ctl("admins", "add", uniq("short"), env=dict(env, BULWARK_NEW_PASSWORD="short"))
    assert cp.returncode == 1 and "12 characters" in cp.stderr, cp
    cp = server.ctl("admins", "add", name, env=dict(env, BULWARK_NEW_PASSWORD="ctl-password-456"))
    assert cp.returncode == 1 and "409" in cp.stderr, cp
    ok(server.ctl("admins", "remove", name, env=env))
    cp = server.ctl("admins", "remove", name, env=env)
    assert cp.returncode == 1 and "404" in cp.stderr, cp
    cp = server.ctl("admins", "remove", "admin", env=env)
    assert cp.returncode == 1 and "409" in cp.stderr, cp


def test_tokens_create_list_revoke(server, ctl_token):
    env = {"BULWARK_TOKEN": ctl_token}
    name = uniq("tok")
    t = json.loads(ok(server.ctl("--json", "tokens", "create", name, "--role", "readonly", "--expires", "30d",
                                 env=env)).stdout)
    assert t["name"] == name and t["role"] == "readonly" and t["expires_at"]
    assert server.api("GET", "/api/v1/whoami", token=t["token"]).body["role"] == "readonly"
    listing = ok(server.ctl("tokens", "list", env=env)).stdout
    assert t["id"] in listing and name in listing
    assert t["token"] not in listing
    listed = json.loads(ok(server.ctl("--json", "tokens", "list", env=env)).stdout)["tokens"]
    assert any(x["id"] == t["id"] for x in listed)
    assert t["token"] not in json.dumps(listed)
    # Table output prints the token once.
    cp = ok(server.ctl("tokens", "create", uniq("plain"), env=env))
    secret = cp.stdout.strip().splitlines()[-1]
    assert server.api("GET", "/api/v1/whoami", token=secret).status == 200
    ok(server.ctl("tokens", "revoke", t["id"], env=env))
    assert server.api("GET", "/api/v1/whoami", token=t["token"]).status == 401
    cp = server.ctl("tokens", "revoke", t["id"], env=env)
    assert cp.returncode == 1, cp
    cp = server.ctl("tokens", "create", uniq("bad"), "--expires", "bogus", env=env)
    assert cp.returncode == 2, cp


def test_readonly_token_refused_exit_1(server, admin_token):
    r = server.api("POST", "/api/v1/tokens", json={"name": uniq("ro"), "role": "readonly"}, token=admin_token)
    cp = server.ctl("tokens", "list", env={"BULWARK_TOKEN": r.body["token"]})
    assert cp.returncode == 1, cp
    assert "403" in cp.stderr or "forbidden" in cp.stderr


def test_audit(server, ctl_token):
    cp = ok(server.ctl("audit", "--limit", "5", env={"BULWARK_TOKEN": ctl_token}))
    assert "ACTION" in cp.stdout or "action" in cp.stdout
    entries = json.loads(ok(server.ctl("--json", "audit", "--limit", "3", env={"BULWARK_TOKEN": ctl_token})).stdout)[
        "entries"]
    assert 1 <= len(entries) <= 3
    assert all({"id", "at", "actor", "action", "outcome"} <= set(e) for e in entries)


def test_bad_token_exit_4(server):
    cp = server.ctl("whoami", env={"BULWARK_TOKEN": "garbage-token"})
    assert cp.returncode == 4, cp
    assert "BULWARK_TOKEN" in cp.stderr


def test_server_down_exit_3(server, ctl_token):
    dead = "https://127.0.0.1:%d" % free_port()
    cp = server.ctl("whoami", env={"BULWARK_TOKEN": ctl_token}, server=dead)
    assert cp.returncode == 3, cp
    assert cp.stderr.strip()
    cp = server.ctl("health", server=dead)
    assert cp.returncode == 3, cp


def test_untrusted_ca_exit_3(server, ctl_token, tmp_path):
    other = tmp_path / "other-ca.pem"
    # Any valid but unrelated CA: the system bundle, if present, else a copy of nothing useful.
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.exists(bundle):
        pytest.skip("no system CA bundle")
    other.write_text(open(bundle).read())
    cp = server.ctl("whoami", env={"BULWARK_TOKEN": ctl_token, "BULWARK_CA": str(other)})
    assert cp.returncode == 3, cp
    assert "certificate" in cp.stderr
    cp = server.ctl("whoami", env={"BULWARK_TOKEN": ctl_token, "BULWARK_CA": str(tmp_path / "missing.pem")})
    assert cp.returncode == 3, cp


@pytest.mark.parametrize("args", [("frobnicate",), ("admins",), ("admins", "frob"), ("--bogus", "whoami"),
                                  ("login",  "--limit", "3"), ("tokens", "revoke"), ("whoami", "extra")])
def test_usage_errors_exit_2(server, args):
    cp = server.ctl(*args)
    assert cp.returncode == 2, cp
    assert "Usage" in cp.stderr or "usage" in cp.stderr


def test_help_and_version(server):
    cp = ok(server.ctl("help"))
    assert "Exit status" in cp.stdout
    cp = ok(server.ctl("--version"))
    assert cp.stdout.strip()
