"""Process lifecycle: graceful shutdown with requests in flight, port already in use, SIGHUP reload."""

import json
import re
import signal
import socket
import threading
import time

import pytest

from bwserver import free_port, tail


def test_sigterm_drains_inflight_logins(servers):
    srv = servers.start(settings={"server": {"shutdown_timeout": "10s"},
                                  "admin": {"max_failures_per_account": 100, "max_failures_per_address": 100}})
    n = 16
    results = [None] * n
    sent = threading.Barrier(n + 1)

    def worker(i):
        conn = srv.connection(timeout=30)
        try:
            pw = srv.password if i % 2 == 0 else "wrong-password-%d" % i
            conn.request("POST", "/api/v1/session", body=json.dumps({"user": "admin", "password": pw}),
                         headers={"Content-Type": "application/json"})
            sent.wait(15)
            resp = conn.getresponse()
            results[i] = (resp.status, resp.read())
        except Exception as e:  # noqa: BLE001 - checked below
            results[i] = e
            try:
                sent.abort()
            except Exception:  # noqa: BLE001
                pass
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    sent.wait(15)
    time.sleep(0.05)  # let the server read the requests; each login then takes a scrypt
    mark = srv.log_mark()
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    m = srv.wait_log(r"shutting down \(draining (\d+) requests", since=mark)
    assert int(m.group(1)) >= 1, "the test did not manage to have a login in flight at SIGTERM"
    # New connections are refused once the listeners are closed.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.admin_port), timeout=5).close()
    for t in threads:
        t.join(30)
    rc = srv.wait_exit(20)
    elapsed = time.monotonic() - t0
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), "request %d failed during shutdown: %r" % (i, r)
        assert r[0] == (201 if i % 2 == 0 else 401), (i, r)
    srv.assert_clean()
    assert rc == 0, tail(srv.log_text())
    assert elapsed < 10 + 5, "shutdown took %.1f s with a 10 s timeout" % elapsed
    log = srv.log_text()[mark:]
    assert "stopped cleanly" in log
    assert "shutdown deadline reached" not in log
    assert re.search(r"\[example_hello\] stopped after", log)


def test_sigterm_with_idle_keepalive_connection(servers):
    srv = servers.start(settings={"server": {"shutdown_timeout": "20s"}})
    conn = srv.connection()
    conn.request("GET", "/healthz")
    assert conn.getresponse().read()
    t0 = time.monotonic()
    try:
        srv.stop()
    finally:
        conn.close()
    # An idle connection is not a request in flight: no waiting for the 20 s deadline.
    assert time.monotonic() - t0 < 15
    assert "stopped cleanly" in srv.log_text()


def test_sigint_is_graceful_too(servers):
    srv = servers.start(plugins=[])
    srv.signal(signal.SIGINT)
    assert srv.wait_exit(20) == 0
    srv.assert_clean()
    assert "stopped cleanly" in srv.log_text()


@pytest.mark.parametrize("listener", ["admin", "agent"])
def test_port_in_use(servers, listener):
    first = servers.start(plugins=[])
    second = servers.create(plugins=[])
    port = first.admin_port if listener == "admin" else first.agent_port
    if listener == "admin":
        second.admin_port = port
        second.ipv6 = False
    else:
        second.agent_port = port
    second.write_config()
    t0 = time.monotonic()
    second.start(wait=False)
    rc = second.wait_exit(20)
    assert rc == 1, tail(second.log_text())
    assert time.monotonic() - t0 < 15
    err = second.log_text()
    assert re.search(r"%s listener: address 127\.0\.0\.1:%d is already in use" % (listener, port), err), tail(err)
    assert "ready:" not in err
    second.assert_clean()
    # The first server is unaffected.
    assert first.api("GET", "/healthz").status == 200


def test_sighup_live_limits_and_log_level(servers):
    srv = servers.start(settings={"log": {"level": "info"}, "example_hello": {"interval": "1s"}})
    token = srv.login()
    note = {"key": "big", "text": "n" * 3000}
    assert srv.api("POST", "/api/v1/plugins/example_hello/notes", json=note, token=token).status == 201
    time.sleep(1.2)
    assert "events seen so far" not in srv.log_text(), "debug lines at level info"

    mark = srv.reload(settings={"limits": {"max_body_bytes": 2048}, "log": {"level": "debug"}})
    r = srv.api("POST", "/api/v1/plugins/example_hello/notes", json=note, token=token)
    assert r.status == 413, r
    assert srv.api("POST", "/api/v1/plugins/example_hello/notes", json={"key": "small", "text": "s"},
                   token=token).status == 201
    # The plugin's once-a-second debug line now shows.
    srv.wait_log(r"debug.*\[example_hello\] \d+ events seen so far", since=mark, timeout=10)
    assert "needs a restart" not in srv.log_text()[mark:]

    # And back.
    srv.reload(settings={"limits": {"max_body_bytes": 1048576}, "log": {"level": "info"}})
    assert srv.api("POST", "/api/v1/plugins/example_hello/notes", json=note, token=token).status == 201


def test_sighup_admin_settings_live(servers):
    srv = servers.start(plugins=[])
    assert srv.api("GET", "/metrics").status == 200
    srv.reload(settings={"admin": {"metrics_require_auth": True}})
    assert srv.api("GET", "/metrics").status == 401
    token = srv.login()
    assert srv.api("GET", "/metrics", token=token).status == 200


def test_sighup_restart_only_settings(servers):
    srv = servers.start()
    old_port = srv.admin_port
    new_port = free_port()
    mark = srv.reload(settings={"listen": {"admin": ["127.0.0.1:%d" % new_port]},
                                "server": {"shutdown_timeout": "7s"},
                                "example_hello": {"greeting": "Hi"}})
    log = srv.log_text()[mark:]
    assert "listen.admin changed: needs a restart to take effect" in log
    assert "server.shutdown_timeout changed: needs a restart to take effect" in log
    assert "example_hello.greeting changed: needs a restart to take effect" in log
    # Still on the old port, with the old greeting.
    assert srv.admin_port == old_port
    token = srv.login()
    r = srv.api("GET", "/api/v1/plugins/example_hello/hello?name=x", token=token)
    assert r.body["message"] == "Hello, x!"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", new_port), timeout=3).close()


def test_sighup_plugin_list_change(servers):
    srv = servers.start()
    srv.plugins = []
    srv.update_settings({"example_hello": None})
    mark = srv.reload()
    assert "plugins changed: needs a restart to take effect" in srv.log_text()[mark:]
    assert srv.plugin("example_hello")["state"] == "running"


@pytest.mark.parametrize("broken", ["server = {", "limits = { max_body_bytes = \"lots\" }",
                                    "log = { level = \"chatty\" }", "bogus_section = { a = 1 }"])
def test_sighup_broken_config_keeps_running(servers, broken):
    srv = servers.start(settings={"limits": {"max_body_bytes": 4096}})
    good = srv.config_text()
    mark = srv.reload(text=good.replace("max_body_bytes = 4096", "max_body_bytes = 100000") + broken + "\n",
                      expect=r"reload failed, keeping the running configuration: \S|configuration reloaded")
    log = srv.log_text()[mark:]
    assert "reload failed, keeping the running configuration" in log, (
        "a configuration that --check-config and a restart refuse was accepted on SIGHUP:\n" + tail(log))
    assert "configuration reloaded" not in log
    assert srv.api("GET", "/healthz").status == 200
    # The running limits are unchanged.
    r = srv.api("POST", "/api/v1/session", json={"user": "admin", "password": "p" * 5000})
    assert r.status == 413, r
    # A fixed file reloads again.
    srv.reload(text=good)
