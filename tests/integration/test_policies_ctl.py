"""bulwarkctl groups / policies / devices move / push test / directory (docs/bulwarkctl.md): usage
errors found before any request, offline file checks, then the commands against a server with the
groups and policies API (issue 4): the group tree, policy versions, validation errors field by
field, history, diff, delivery status and the feature-lock catalog. The directory and push commands
are checked here only for their usage and for a server without the plugin or route (their end to
end runs with the dir_ldap and push tests)."""

import json
import re
import uuid

import pytest

from test_agent import agent_bin, make_env  # noqa: F401 (fixture)

DAILY = {"malware_scan": {"scheduled": {"enabled": True, "frequency": "daily", "time": "09:00", "scope": "all"}}}
PASSWORD = {"password": {"required": True, "min_length": 8}}


def ok(cp):
    assert cp.returncode == 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (cp.returncode, cp.stdout, cp.stderr)
    return cp


def fails(cp, code, *needles):
    assert cp.returncode == code, "exit %d (expected %d)\nstdout:\n%s\nstderr:\n%s" % (
        cp.returncode, code, cp.stdout, cp.stderr)
    for n in needles:
        assert n in cp.stderr, (n, cp.stderr)
    return cp


@pytest.fixture(scope="module")
def srv(module_servers):
    return module_servers.start(plugins=[])


@pytest.fixture(scope="module")
def ctl(srv):
    token = srv.login()
    r = srv.api("POST", "/api/v1/tokens", json={"name": "policies-ctl"}, token=token)
    assert r.status == 201, r
    env = {"BULWARK_TOKEN": r.body["token"]}

    def run(*args, **kw):
        return srv.ctl(*args, env=dict(env, **kw.pop("env", {})), **kw)

    run.token = token
    return run


def uniq(prefix="g"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:8])


# ---- usage, no server involved


@pytest.mark.parametrize("args,message", [
    (["groups"], "needs a subcommand"),
    (["groups", "add"], "missing NAME"),
    (["groups", "add", "a", "b"], "unexpected argument"),
    (["groups", "move", "x"], "--parent"),
    (["groups", "rename", "x"], "missing NEW"),
    (["groups", "list", "--parent", "x"], "does not apply"),
    (["groups", "add", ".."], "invalid group name"),
    (["policies", "get"], "missing GROUP"),
    (["policies", "set", "g"], "missing FILE.json"),
    (["policies", "diff", "g", "1"], "missing TO"),
    (["policies", "diff", "g", "1", "x"], "version numbers"),
    (["policies", "diff", "g", "-1", "2"], "unknown option"),
    (["policies", "status", "--state", "stuck"], "unknown state"),
    (["policies", "get", "g", "--full"], "does not apply"),
    (["devices", "move", "d"], "missing GROUP"),
    (["push", "test"], "missing DEVICE"),
    (["directory", "users", "--plugin", "Dir-LDAP"], "invalid --plugin"),
    (["directory", "users", "--limit", "0"], "invalid --limit"),
    (["directory", "sync", "--query", "x"], "does not apply"),
    (["directory", "frobnicate"], "unknown command"),
])
def test_usage_errors(srv, ctl, args, message):
    fails(ctl(*args), 2, message)


def test_policies_set_file_problems(srv, ctl, tmp_path):
    fails(ctl("policies", "set", "default", tmp_path / "missing.json"), 2, "cannot open")
    bad = tmp_path / "bad.json"
    bad.write_text('{"password": {"min_length": 8,}}')
    fails(ctl("policies", "set", "default", bad), 1, "bad.json:1:")
    arr = tmp_path / "arr.json"
    arr.write_text("[1, 2]")
    fails(ctl("policies", "set", "default", arr), 1, "JSON object")
    big = tmp_path / "big.json"
    big.write_text('{"x": "%s"}' % ("a" * (1024 * 1024 + 10)))
    fails(ctl("policies", "set", "default", big), 1, "at most")


def test_help_lists_the_commands(srv, ctl):
    out = ok(ctl("help")).stdout
    for cmd in ("groups tree", "policies set GROUP FILE.json", "policies status", "devices move DEVICE GROUP",
                "push test DEVICE", "directory sync [--full] [--wait]"):
        assert cmd in out, cmd


# ---- routes that are not there: the plugin is not loaded, the device does not exist


def test_directory_without_plugin(srv, ctl):
    for args in (["directory", "test"], ["directory", "users"], ["directory", "groups"], ["directory", "sync"]):
        cp = fails(ctl(*args), 1)
        assert "HTTP 404" in cp.stderr, cp.stderr


def test_push_test_unknown_device(srv, ctl):
    cp = fails(ctl("push", "test", str(uuid.uuid4())), 1)
    assert "HTTP 404" in cp.stderr, cp.stderr


# ---- groups


def test_groups_lifecycle(srv, ctl):
    a, b, c = uniq("ga"), uniq("gb"), uniq("gc")
    assert "Created group %s under default" % a in ok(ctl("groups", "add", a)).stdout
    assert "Created group %s under %s" % (b, a) in ok(ctl("groups", "add", b, "--parent", a)).stdout
    ok(ctl("groups", "add", c))
    fails(ctl("groups", "add", a), 1, "HTTP 409")
    fails(ctl("groups", "add", uniq(), "--parent", "no-such-" + a), 1)

    out = ok(ctl("groups", "list")).stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "PARENT", "DEVICES", "POLICY"], out
    row = [line for line in lines if line.startswith(b + " ")][0]
    assert row.split()[1] == a and "inherited" in row, row
    listed = json.loads(ok(ctl("groups", "list", "--json")).stdout)
    assert {g["name"]: g["parent"] for g in listed["groups"]}[b] == a

    tree = ok(ctl("groups", "tree")).stdout
    assert tree.splitlines()[0].startswith("default"), tree
    ia = [i for i, line in enumerate(tree.splitlines()) if re.search(r"-- %s\b" % a, line)][0]
    ib = [i for i, line in enumerate(tree.splitlines()) if re.search(r"-- %s\b" % b, line)][0]
    assert ib > ia and tree.splitlines()[ib].index(b) > tree.splitlines()[ia].index(a), tree

    # Move b under c, rename c, the tree follows; a cycle is refused.
    assert "Moved group %s under %s" % (b, c) in ok(ctl("groups", "move", b, "--parent", c)).stdout
    c2 = uniq("gc2")
    assert "Renamed group %s to %s" % (c, c2) in ok(ctl("groups", "rename", c, c2)).stdout
    shown = ok(ctl("groups", "show", b)).stdout
    assert re.search(r"^parent:\s+%s$" % c2, shown, re.M), shown
    assert json.loads(ok(ctl("groups", "show", b, "--json")).stdout)["parent"] == c2
    fails(ctl("groups", "move", c2, "--parent", b), 1)
    fails(ctl("groups", "rename", "default", uniq()), 1)
    fails(ctl("groups", "remove", "default"), 1)
    fails(ctl("groups", "show", "no-such-" + a), 1, "HTTP 404")

    # A group with a subgroup is removed only with --move-to.
    fails(ctl("groups", "remove", c2), 1, "HTTP 409")
    out = ok(ctl("groups", "remove", c2, "--move-to", a)).stdout
    assert "Removed group %s (its devices and subgroups moved to %s)" % (c2, a) in out
    assert json.loads(ok(ctl("groups", "show", b, "--json")).stdout)["parent"] == a
    ok(ctl("groups", "remove", b))
    names = [g["name"] for g in json.loads(ok(ctl("groups", "list", "--json")).stdout)["groups"]]
    assert b not in names and c2 not in names and a in names


def test_readonly_token_cannot_change_groups(srv, ctl):
    name = "ro-" + uuid.uuid4().hex[:6]
    srv.add_admin(ctl.token, name, "readonly-password-1", role="readonly")
    ro = srv.login(name, "readonly-password-1")
    ok(ctl("groups", "list", env={"BULWARK_TOKEN": ro}))
    fails(ctl("groups", "add", uniq(), env={"BULWARK_TOKEN": ro}), 1, "HTTP 403")


# ---- policies


def test_policy_set_get_history_diff(srv, ctl, tmp_path):
    g = uniq("pg")
    ok(ctl("groups", "add", g))
    f = tmp_path / "p1.json"
    f.write_text(json.dumps(DAILY))
    out = ok(ctl("policies", "set", g, f)).stdout
    m = re.search(r"^Saved the policy of group %s: version 1 \(changed: ([^)]*)\); delivery version (\S+)$" % g, out,
                  re.M)
    assert m and "malware_scan" in m.group(1), out

    got = ok(ctl("policies", "get", g)).stdout
    assert re.search(r"^Version:\s+1$", got, re.M) and re.search(r"^Group:\s+%s$" % g, got, re.M), got
    doc = json.loads(ok(ctl("policies", "get", g, "--json")).stdout)
    assert doc["policy"]["malware_scan"]["scheduled"]["time"] == "09:00", doc

    # The output of `policies get --json` can be edited and set again.
    doc["policy"].update(PASSWORD)
    f2 = tmp_path / "p2.json"
    f2.write_text(json.dumps(doc))
    out = ok(ctl("policies", "set", g, f2, "--json")).stdout
    assert json.loads(out)["version"] == 2, out

    eff = ok(ctl("policies", "get", g, "--effective")).stdout
    assert "Sources:" in eff and re.search(r"password\s+%s" % g, eff), eff
    effj = json.loads(ok(ctl("policies", "get", g, "--effective", "--json")).stdout)
    assert effj["policy"]["password"]["min_length"] == 8 and "web_protection" in effj["policy"], effj

    hist = ok(ctl("policies", "history", g)).stdout.splitlines()
    assert hist[0].split()[:3] == ["VERSION", "TIME", "AUTHOR"], hist
    versions = [line.split()[0] for line in hist[1:]]
    assert sorted(versions) == ["1", "2"], hist
    assert json.loads(ok(ctl("policies", "history", g, "--json")).stdout)["versions"]

    diff = ok(ctl("policies", "diff", g, "1", "2")).stdout
    assert re.search(r"^password\S*: \(none\) -> ", diff, re.M) or re.search(r"^password\.min_length: \(none\) -> 8$",
                                                                             diff, re.M), diff
    assert "malware_scan" not in diff, diff
    assert "No differences" in ok(ctl("policies", "diff", g, "2", "2")).stdout
    d0 = json.loads(ok(ctl("policies", "diff", g, "0", "1", "--json")).stdout)
    assert any(c["path"].startswith("malware_scan") for c in d0["changes"]), d0
    fails(ctl("policies", "diff", g, "1", "99"), 1)
    fails(ctl("policies", "get", "no-such-" + g), 1, "HTTP 404")


def test_policy_set_prints_every_validation_error(srv, ctl, tmp_path):
    g = uniq("bad")
    ok(ctl("groups", "add", g))
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({
        "web_protection": {"enabled": True, "lists": {"android": {"block": ["example.com", "http://exa mple.org/",
                                                                            "ftp://x.example"]}}},
        "password": {"min_length": 2},
    }))
    cp = fails(ctl("policies", "set", g, f), 1, "is invalid")
    lines = [line.strip() for line in cp.stderr.splitlines() if line.startswith("  ")]
    assert len(lines) >= 3, cp.stderr
    assert any(line.startswith("web_protection.lists.android.block[1]") and "exa mple" in line for line in lines), lines
    assert any(line.startswith("web_protection.lists.android.block[2]") for line in lines), lines
    assert any(line.startswith("password.min_length") for line in lines), lines
    assert not any("block[0]" in line for line in lines), "the valid entry is not reported"
    # Nothing was stored.
    assert json.loads(ok(ctl("policies", "history", g, "--json")).stdout)["versions"] == []
    # An unknown section is named as well.
    f.write_text(json.dumps({"teleport": {}}))
    cp = fails(ctl("policies", "set", g, f), 1)
    assert "teleport" in cp.stderr, cp.stderr
    # --json prints the server's error document too.
    cp = fails(ctl("policies", "set", g, f, "--json"), 1)
    assert json.loads(cp.stdout)["error"]["code"] == "invalid_policy", cp.stdout


def test_catalog(srv, ctl):
    out = ok(ctl("policies", "catalog")).stdout.splitlines()
    assert out[0].split()[:2] == ["ID", "LABEL"], out
    ids = [line.split()[0] for line in out[1:]]
    assert "camera" in ids, ids
    cat = json.loads(ok(ctl("policies", "catalog", "--json")).stdout)
    assert any(i["id"] == "camera" and "platforms" in i for i in cat["items"]), cat


def test_devices_move_and_status(srv, ctl, agent_bin, tmp_path):  # noqa: F811
    admin, agent = make_env(srv, agent_bin, tmp_path)
    a, b = uniq("sa"), uniq("sb")
    ok(ctl("groups", "add", a))
    ok(ctl("groups", "add", b))
    f = tmp_path / "p.json"
    f.write_text(json.dumps(DAILY))
    ok(ctl("policies", "set", a, f))
    dev = agent.enroll(key=admin.key(group=a)["key"])
    dev.run()
    dev.run()  # reports the applied version
    out = ok(ctl("policies", "status", "--group", a)).stdout
    row = [line for line in out.splitlines() if line.startswith(dev.id)]
    assert row and row[0].split()[1:3] == [a, "applied"], out
    assert re.search(r"1 device listed; 1 applied, 0 pending, 0 out of sync", out), out
    st = json.loads(ok(ctl("policies", "status", "--group", a, "--state", "applied", "--json")).stdout)
    assert [d["device_id"] for d in st["devices"]] == [dev.id], st
    assert json.loads(ok(ctl("policies", "status", "--group", a, "--state", "pending", "--json")).stdout)[
        "devices"] == []

    out = ok(ctl("devices", "move", dev.id, b)).stdout
    assert "Moved device %s to group %s" % (dev.id, b) in out, out
    assert admin.device(dev.id)["group"] == b
    st = json.loads(ok(ctl("policies", "status", "--group", b, "--json")).stdout)
    assert [d["state"] for d in st["devices"] if d["device_id"] == dev.id] == ["pending"], st
    fails(ctl("devices", "move", dev.id, "no-such-" + b), 1, "HTTP 404")
    fails(ctl("devices", "move", str(uuid.uuid4()), b), 1, "HTTP 404")
    dev.run()
    dev.run()
    st = json.loads(ok(ctl("policies", "status", "--group", b, "--json")).stdout)
    assert [d["state"] for d in st["devices"] if d["device_id"] == dev.id] == ["applied"], st


# ---- push test and directory against a stand-in admin API (the real routes come with the push
# plugins and dir_ldap; this checks what bulwarkctl makes of their documented answers)


class StandIn:
    """An HTTPS server answering the push-test and dir_ldap routes from `routes`
    {(method, path without query): (status, body or callable(query, body) -> (status, body))};
    records the requests."""

    def __init__(self, tmp_path, routes):
        import http.server
        import ssl
        import subprocess
        import threading
        from bwserver import free_port

        self.cert, self.key = tmp_path / "standin.pem", tmp_path / "standin.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "1", "-subj",
                        "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                       capture_output=True)
        self.routes, self.requests = routes, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_any(self):
                from urllib.parse import parse_qs, urlsplit
                u = urlsplit(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                outer.requests.append((self.command, u.path, q, body))
                r = outer.routes.get((self.command, u.path), (404, {"error": {"code": "not_found",
                                                                              "message": "no route"}}))
                status, out = r(q, body) if callable(r) else r
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = handle_any

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ctl(self, srv, *args):
        return srv.ctl(*args, server="https://127.0.0.1:%d" % self.port,
                       env={"BULWARK_CA": str(self.cert), "BULWARK_TOKEN": "standin-token"})

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def standin(tmp_path):
    made = []

    def make(routes):
        s = StandIn(tmp_path, routes)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


DEV = "6f1c2a4e-8d3b-4f7a-9c21-5e0b7d9a3f10"


@pytest.mark.parametrize("answer,code,text", [
    ({"outcome": "sent", "reason": None, "status": 200, "attempts": 1, "id": "4c1b"}, 0,
     "Push test to device %s: sent, HTTP status 200, 1 attempt, id 4c1b" % DEV),
    ({"outcome": "token_invalid", "reason": "Unregistered", "status": 410, "attempts": 1}, 1,
     "token_invalid (Unregistered), HTTP status 410"),
    ({"outcome": "failed", "reason": "ServiceUnavailable", "status": 503, "attempts": 4}, 1, "4 attempts"),
])
def test_push_test_outcomes(srv, standin, answer, code, text):
    s = standin({("POST", "/api/v1/devices/%s/push-test" % DEV): (200, answer)})
    cp = s.ctl(srv, "push", "test", DEV)
    assert cp.returncode == code and text in cp.stdout, (cp.returncode, cp.stdout, cp.stderr)
    cp = s.ctl(srv, "push", "test", DEV, "--json")
    assert cp.returncode == code and json.loads(cp.stdout)["outcome"] == answer["outcome"]


def test_push_test_no_token(srv, standin):
    s = standin({("POST", "/api/v1/devices/%s/push-test" % DEV): (
        409, {"error": {"code": "no_push_token", "message": "the device has no push token"}})})
    fails(s.ctl(srv, "push", "test", DEV), 1, "no_push_token", "HTTP 409")


def test_directory_test_output(srv, standin):
    good = {"ok": True, "url": "ldaps://127.0.0.1:636", "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384",
            "peer_subject": "CN=ldap.test", "peer_issuer": "CN=Test CA", "not_after": "2027-01-01T00:00:00Z",
            "verified": True}, "bind": "ok", "search": {"base_dn": "dc=test", "entries": 1}, "elapsed_ms": 12}
    s = standin({("POST", "/api/v1/plugins/dir_ldap/test"): (200, good),
                 ("POST", "/api/v1/plugins/corp_ad/test"): (200, {"ok": False, "url": "ldaps://[::1]:636",
                                                                  "error": "certificate verify failed"})})
    out = ok(s.ctl(srv, "directory", "test")).stdout
    for needle in ("Result:        ok", "TLS version:   TLSv1.3", "Server:        CN=ldap.test", "Verified:      yes",
                   "Bind:          ok", "Search:        1 entry under dc=test"):
        assert needle in out, (needle, out)
    cp = fails(s.ctl(srv, "directory", "test", "--plugin", "corp_ad"), 1)
    assert "FAILED" in cp.stdout and "certificate verify failed" in cp.stdout, cp.stdout


def test_directory_sync_wait_and_lists(srv, standin):
    polls = []

    def sync_status(q, body):
        polls.append(1)
        if len(polls) < 3:
            return 200, {"state": "running", "progress": {"users": 10 * len(polls), "groups": 0, "phase": "users"},
                         "last": {"id": "old", "mode": "incremental"}}
        return 200, {"state": "idle", "progress": {}, "last": {
            "id": "s2", "started_at": "2026-11-26T01:50:02Z", "finished_at": "2026-11-26T01:50:09Z", "mode": "full",
            "added": 2, "updated": 1, "removed": 0, "disabled": 1,
            "changes": [{"kind": "user", "guid": "g-1", "name": "alice", "change": "added"},
                        {"kind": "group", "guid": "g-2", "name": "Sales", "change": "updated"}]}}

    users = [{"guid": "u%d" % i, "login": "user%03d" % i, "upn": "user%03d@test" % i, "display_name": "User %d" % i,
              "mail": "u%d@test" % i, "manager": None, "disabled": i == 3, "groups": ["Sales"]} for i in range(1203)]

    def list_users(q, body):
        after = int(q.get("after", "0"))
        limit = int(q["limit"])
        page = [u for u in users if q.get("q", "") in u["login"]][after:after + limit]
        nxt = str(after + limit) if after + limit < len(users) else None
        return 200, {"users": page, "next_after": nxt}

    s = standin({("POST", "/api/v1/plugins/dir_ldap/sync"): (202, {"sync_id": "s2", "state": "running"}),
                 ("GET", "/api/v1/plugins/dir_ldap/sync"): sync_status,
                 ("GET", "/api/v1/plugins/dir_ldap/users"): list_users,
                 ("GET", "/api/v1/plugins/dir_ldap/groups"): (200, {"groups": [
                     {"guid": "g-2", "name": "Sales", "dn": "cn=Sales,dc=test", "members": 1203,
                      "nested_groups": ["EU"], "device_group": "sales"}], "next_after": None})})
    out = ok(s.ctl(srv, "directory", "sync")).stdout
    assert "Started an incremental directory sync: s2" in out, out
    assert s.requests[-1][3] == {"full": False}
    out = ok(s.ctl(srv, "directory", "sync", "--full", "--wait")).stdout
    assert [r[3] for r in s.requests if r[0] == "POST"] == [{"full": False}, {"full": True}], s.requests
    assert len(polls) >= 3, "waited until the sync with our id was over"
    assert "Sync finished: full, added 2, updated 1, removed 0, disabled 1" in out, out
    assert re.search(r"^\s+added\s+user\s+alice \(g-1\)$", out, re.M), out

    out = ok(s.ctl(srv, "directory", "users")).stdout.splitlines()
    assert out[0].split()[:3] == ["LOGIN", "NAME", "MAIL"] and len(out) == 1 + 1203, len(out)
    assert [line for line in out if line.startswith("user003 ")][0].split()[-2] == "yes"
    got = json.loads(ok(s.ctl(srv, "directory", "users", "--json", "--limit", "700")).stdout)
    assert [u["login"] for u in got["users"]] == ["user%03d" % i for i in range(700)]
    ok(s.ctl(srv, "directory", "users", "--query", "user12"))
    assert [r[2].get("q") for r in s.requests if r[1].endswith("/users")][-1] == "user12"
    out = ok(s.ctl(srv, "directory", "groups")).stdout
    assert re.search(r"^Sales\s+1203\s+EU\s+sales\s+cn=Sales,dc=test$", out, re.M), out


def test_directory_sync_conflict_and_failure(srv, standin):
    s = standin({("POST", "/api/v1/plugins/dir_ldap/sync"): (
        409, {"error": {"code": "conflict", "message": "a sync is running"}})})
    fails(s.ctl(srv, "directory", "sync"), 1, "a sync is running", "HTTP 409")
    s = standin({("POST", "/api/v1/plugins/dir_ldap/sync"): (202, {"sync_id": "s9", "state": "running"}),
                 ("GET", "/api/v1/plugins/dir_ldap/sync"): (200, {"state": "failed", "last": {
                     "id": "s9", "mode": "incremental", "added": 0, "updated": 0, "removed": 0, "disabled": 0,
                     "error": "server stopped in the middle of the users phase"}})})
    cp = fails(s.ctl(srv, "directory", "sync", "--wait"), 1)
    assert "Sync failed: incremental" in cp.stdout and "server stopped in the middle" in cp.stdout, cp.stdout
