"""Plugin loading and lifecycle seen from outside: refusals with their reasons, required vs
optional failures, late registration, and the example_hello routes."""

import os

import pytest

from bwserver import copy_plugin, tail

FAILING = {
    "fx_initfail": "fixture refuses to start: no upstream configured",
    "fx_major": "major versions must match",
    "fx_minor": "newer than this host",
    "fx_nosym": "does not export the descriptor symbol bw_plugin_fx_nosym",
    "fx_small": "smaller than the",
    "fx_badname": "name must be 'fx_badname'",
}


@pytest.fixture(scope="module")
def fixtures_server(module_servers, fixture_plugins):
    plugins = list(FAILING) + ["fx_latecap", "fx_good"]
    return module_servers.start(plugin_dir=fixture_plugins, plugins=plugins,
                                settings={"fx_good": {"secret": "not-telling"}})


def by_name(health):
    return {p["name"]: p for p in health["plugins"]}


def test_optional_failures_degrade(fixtures_server):
    h = fixtures_server.health()
    assert h["status"] == "degraded"
    assert h["database"]["status"] == "ok"
    plugins = by_name(h)
    assert list(plugins) == list(FAILING) + ["fx_latecap", "fx_good"], "config order is kept"
    for name, reason in FAILING.items():
        p = plugins[name]
        assert p["state"] == "failed", p
        assert p["required"] is False
        assert isinstance(p["error"], str) and reason in p["error"], (name, p["error"])
    assert plugins["fx_good"]["state"] == "running"
    assert plugins["fx_good"]["error"] is None
    # The failures are logged too.
    log = fixtures_server.log_text()
    for name in FAILING:
        assert name in log


def test_secret_not_exposed(fixtures_server):
    assert "not-telling" not in fixtures_server.log_text()
    assert b"not-telling" not in fixtures_server.api("GET", "/healthz").raw


def test_latecap_refused_but_running(fixtures_server):
    p = by_name(fixtures_server.health())["fx_latecap"]
    assert p["state"] == "running", p
    assert p["detail"].startswith("refused late registration: "), p
    # Its late route does not exist.
    token = fixtures_server.login()
    r = fixtures_server.api("GET", "/api/v1/plugins/fx_latecap/late", token=token)
    assert r.status == 404


def test_plugins_endpoint_and_metric(fixtures_server):
    token = fixtures_server.login()
    r = fixtures_server.api("GET", "/api/v1/plugins", token=token)
    assert r.status == 200
    plugins = {p["name"]: p for p in r.body["plugins"]}
    assert plugins["fx_major"]["state"] == "failed"
    assert plugins["fx_good"]["description"] == "fixture"
    m = fixtures_server.api("GET", "/metrics").raw.decode()
    assert "\nbulwark_plugins_failed %d\n" % len(FAILING) in m


@pytest.mark.parametrize("name", ["fx_initfail", "fx_major", "fx_nosym"])
def test_required_failure_stops_startup(servers, fixture_plugins, name):
    srv = servers.create(plugin_dir=fixture_plugins, plugins=["fx_good", (name, {"required": True})],
                         settings={"fx_good": {"secret": "x"}})
    srv.start(wait=False)
    rc = srv.wait_exit(30)
    assert rc == 1, tail(srv.log_text())
    err = srv.log_text()
    assert "ready:" not in err
    lines = [l for l in err.splitlines() if l.startswith("bulwarkd: ")]
    assert lines, err
    assert ("required plugin %s" % name) in lines[-1] and FAILING[name] in lines[-1], lines[-1]
    srv.assert_clean()


def test_missing_plugin_file_optional(servers, tmp_path):
    d = tmp_path / "plugins"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    srv = servers.start(plugin_dir=d, plugins=["example_hello"])
    p = srv.plugin("example_hello")
    assert p["state"] == "failed" and "No such file" in p["error"], p


def _hello_dir(build, tmp_path, dir_mode=0o755, file_mode=0o755):
    d = tmp_path / "plugins"
    copy_plugin(build / "lib" / "bulwark" / "plugins" / "example_hello.so", d, mode=file_mode)
    os.chmod(d, dir_mode)
    return d


@pytest.mark.parametrize("dir_mode,file_mode,words", [
    (0o775, 0o755, "writable by group"),
    (0o757, 0o755, "writable by others"),
    (0o755, 0o775, "writable by group"),
    (0o755, 0o757, "writable by others"),
])
def test_writable_plugin_refused(servers, build, tmp_path, dir_mode, file_mode, words):
    d = _hello_dir(build, tmp_path, dir_mode, file_mode)
    srv = servers.start(plugin_dir=d, plugins=["example_hello"])
    h = srv.health()
    assert h["status"] == "degraded"
    p = by_name(h)["example_hello"]
    assert p["state"] == "failed", p
    assert words in p["error"], p["error"]
    token = srv.login()
    assert srv.api("GET", "/api/v1/plugins/example_hello/hello", token=token).status == 404


def test_writable_dir_required_fails_startup(servers, build, tmp_path):
    d = _hello_dir(build, tmp_path, 0o775)
    srv = servers.create(plugin_dir=d, plugins=[("example_hello", {"required": True})])
    srv.start(wait=False)
    assert srv.wait_exit(30) == 1
    assert "writable by group" in srv.log_text()
    srv.assert_clean()


def test_symlinked_plugin_refused(servers, build, tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    os.chmod(d, 0o755)
    real = copy_plugin(build / "lib" / "bulwark" / "plugins" / "example_hello.so", tmp_path / "real")
    os.symlink(real, d / "example_hello.so")
    srv = servers.start(plugin_dir=d, plugins=["example_hello"])
    p = srv.plugin("example_hello")
    assert p["state"] == "failed" and "symbolic link" in p["error"], p


def test_copied_plugin_with_safe_modes_runs(servers, build, tmp_path):
    d = _hello_dir(build, tmp_path)
    srv = servers.start(plugin_dir=d, plugins=["example_hello"])
    assert srv.health()["status"] == "ok"


# ---- example_hello routes (on the module's default server)

@pytest.fixture(scope="module")
def readonly_token(server, admin_token):
    r = server.api("POST", "/api/v1/tokens", json={"name": "hello-ro", "role": "readonly"}, token=admin_token)
    assert r.status == 201
    return r.body["token"]


def test_hello_route(server, readonly_token, admin_token):
    r = server.api("GET", "/api/v1/plugins/example_hello/hello?name=World", token=readonly_token)
    assert r.status == 200, r
    assert r.body["message"] == "Hello, World!"
    assert isinstance(r.body["events_seen"], int)
    r = server.api("GET", "/api/v1/plugins/example_hello/hello", token=admin_token)
    assert r.body["message"] == "Hello, admin!"
    r = server.api("GET", "/api/v1/plugins/example_hello/hello?name=" + "n" * 65, token=admin_token)
    assert r.status == 400
    assert server.api("GET", "/api/v1/plugins/example_hello/hello").status == 401
    assert server.api("POST", "/api/v1/plugins/example_hello/hello", token=admin_token, json={}).status == 405
    assert server.api("GET", "/api/v1/plugins/example_hello/nothing", token=admin_token).status == 404


def test_notes_roles_and_storage(server, readonly_token, admin_token):
    r = server.api("POST", "/api/v1/plugins/example_hello/notes", json={"key": "ro", "text": "no"},
                   token=readonly_token)
    assert r.status == 403
    notes = {"n-alpha": "first note", "n-beta": "second note"}
    for k, v in notes.items():
        r = server.api("POST", "/api/v1/plugins/example_hello/notes", json={"key": k, "text": v}, token=admin_token)
        assert r.status == 201, r
        assert r.body == {"key": k, "text": v}
    # Overwrite keeps one entry per key.
    r = server.api("POST", "/api/v1/plugins/example_hello/notes", json={"key": "n-beta", "text": "changed"},
                   token=admin_token)
    assert r.status == 201
    r = server.api("GET", "/api/v1/plugins/example_hello/notes", token=readonly_token)
    assert r.status == 200
    stored = {n["key"]: n["value"] for n in r.body["notes"]}
    assert stored.get("n-alpha") == "first note"
    assert stored.get("n-beta") == "changed"
    assert "ro" not in stored
    # The saved-note events reach the plugin's own subscriber.
    r = server.api("GET", "/api/v1/plugins/example_hello/hello", token=admin_token)
    assert r.body["events_seen"] >= 3


@pytest.mark.parametrize("body,status", [(b"{bad", 400), (b'{"key": 1, "text": "x"}', 400), (b'{"key": "k"}', 400),
                                         (b"[]", 400)])
def test_notes_bad_input(server, admin_token, body, status):
    r = server.api("POST", "/api/v1/plugins/example_hello/notes", body=body, token=admin_token,
                   headers={"Content-Type": "application/json"})
    assert r.status == status, r
    assert r.error_code() in ("invalid_json", "bad_request")


def test_hello_metrics_events(server, admin_token):
    server.api("POST", "/api/v1/plugins/example_hello/notes", json={"key": "m", "text": "t"}, token=admin_token)
    m = server.api("GET", "/metrics").raw.decode()
    assert 'bulwark_example_hello_events_total{topic="example.note_saved"}' in m
