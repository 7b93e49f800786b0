"""tests/integration/bwserver.py: starts and drives one bulwarkd for the integration tests.

A Server writes its own Lua configuration into a private directory (free loopback ports,
var_dir inside that directory), runs bulwarkd with stdout/stderr in files, waits for the
"ready:" log line and offers small helpers for the admin API and bulwarkctl. Only the Python
standard library is used.
"""

import http.client
import json as _json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

# Lines that mean a sanitizer found a bug; any of them fails the test that started the process.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

READY_TIMEOUT = 30.0


class Lua(str):
    """A raw Lua expression, written into the configuration verbatim (e.g. Lua('env "X"'))."""


def lua_quote(s):
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20:
            out.append("\\%03d" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def lua_value(v):
    if isinstance(v, Lua):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_quote(v)
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua_value(x) for x in v) + " }"
    if isinstance(v, dict):
        return "{ " + ", ".join("%s = %s" % (k, lua_value(x)) for k, x in v.items()) + " }"
    raise TypeError("cannot write %r as Lua" % (v,))


def sanitizer_lines(text):
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]


def assert_no_sanitizer_reports(text, what):
    bad = sanitizer_lines(text)
    assert not bad, "%s: sanitizer reports:\n%s\n--- output tail ---\n%s" % (what, "\n".join(bad), tail(text, 60))


def tail(text, n=40):
    return "\n".join(text.splitlines()[-n:])


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _ephemeral_range():
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_EPHEMERAL = _ephemeral_range()
_handed_out = set()
# Each test process walks its own stretch of 10000-31999 from a pid-derived start, so two runs on
# one machine rarely meet; ports below the kernel's ephemeral range are never the local end of an
# outgoing connection, which binding to port 0 and closing again cannot promise.
_next_port = [10000 + (os.getpid() * 97) % 22000]


def _bindable(family, host, port):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(also_v6=False):
    """A TCP port free on 127.0.0.1 (and on ::1 when asked) that this process has not handed out
    before and that lies outside the ephemeral range. The probe socket is closed again; another
    program could still take the port in between, but not one of our own clients."""
    for _ in range(22000):
        port = _next_port[0]
        _next_port[0] = 10000 + (port - 10000 + 1) % 22000
        if port in _handed_out or _EPHEMERAL[0] <= port <= _EPHEMERAL[1]:
            continue
        if not _bindable(socket.AF_INET, "127.0.0.1", port):
            continue
        if also_v6 and not _bindable(socket.AF_INET6, "::1", port):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port found")


class Response:
    """Result of Server.api(): status, headers (case-insensitive), body (parsed JSON when the
    answer is JSON, else bytes). Unpacks as (status, headers, body)."""

    def __init__(self, status, headers, body, raw):
        self.status, self.headers, self.body, self.raw = status, headers, body, raw

    def __iter__(self):
        return iter((self.status, self.headers, self.body))

    def error_code(self):
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def __repr__(self):
        return "Response(%d, %r)" % (self.status, self.body if not isinstance(self.body, bytes) else self.raw[:200])


def send_request(conn, method, path, json=None, body=None, headers=None):
    """One request on an open http.client connection -> Response (JSON bodies parsed)."""
    hdrs = {}
    if json is not None:
        body = _json.dumps(json).encode()
        hdrs["Content-Type"] = "application/json"
    elif isinstance(body, str):
        body = body.encode()
    hdrs.update(headers or {})
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    raw = resp.read()
    parsed = raw
    if raw and (resp.getheader("Content-Type", "") or "").startswith("application/json"):
        parsed = _json.loads(raw)
    return Response(resp.status, resp.headers, parsed, raw)


def default_settings(plugin_dir):
    return {
        "server": {"var_dir": "var", "plugin_dir": str(plugin_dir), "shutdown_timeout": "5s"},
        "tls": {"generate": True},
        "log": {"level": "info", "format": "text"},
        "limits": {},
        "admin": {},
    }


class Server:
    """One bulwarkd instance in its own directory.

    settings: {section: {key: value}} merged over the defaults (value None removes a key);
    plugins: list of names or (name, {"required": True}); plugin settings go into settings
    under the plugin's name; extra_lua: text appended to the file."""

    def __init__(self, build, workdir, *, plugins=("example_hello",), plugin_dir=None, settings=None,
                 extra_lua="", ipv6=None):
        self.build = Path(build)
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bulwarkd = self.build / "bin" / "bulwarkd"
        self.bulwarkctl = self.build / "bin" / "bulwarkctl"
        self.plugin_dir = Path(plugin_dir) if plugin_dir else self.build / "lib" / "bulwark" / "plugins"
        self.ipv6 = ipv6_loopback_available() if ipv6 is None else ipv6
        self.admin_port = free_port(also_v6=self.ipv6)
        self.agent_port = free_port()
        self.plugins = list(plugins)
        self.settings = default_settings(self.plugin_dir)
        if "example_hello" in [p if isinstance(p, str) else p[0] for p in self.plugins]:
            self.settings["example_hello"] = {"greeting": "Hello", "interval": "60s"}
        self.update_settings(settings or {})
        self.extra_lua = extra_lua
        self.config_path = self.dir / "bulwark.lua"
        self.stdout_path = self.dir / "stdout.txt"
        self.stderr_path = self.dir / "stderr.txt"
        self.proc = None
        self.checked = False
        self.password = None
        self.returncode = None
        self._ctx = None
        self.write_config()

    # ---- configuration

    def update_settings(self, settings):
        for section, values in settings.items():
            if values is None:
                self.settings.pop(section, None)
                continue
            sec = self.settings.setdefault(section, {})
            for k, v in values.items():
                if v is None:
                    sec.pop(k, None)
                else:
                    sec[k] = v

    def admin_addresses(self):
        addrs = ["127.0.0.1:%d" % self.admin_port]
        if self.ipv6:
            addrs.append("[::1]:%d" % self.admin_port)
        return addrs

    def config_text(self):
        s = dict(self.settings)
        lines = ["-- written by tests/integration/bwserver.py"]
        listen = {"agent": ["127.0.0.1:%d" % self.agent_port], "admin": self.admin_addresses()}
        listen.update(s.pop("listen", {}))
        plugin_items = []
        for p in self.plugins:
            if isinstance(p, str):
                plugin_items.append(lua_quote(p))
            else:
                pname, opts = p
                plugin_items.append("{ %s%s }" % (lua_quote(pname), "".join(
                    ", %s = %s" % (k, lua_value(v)) for k, v in opts.items())))
        order = ["server", "listen", "tls", "database", "log", "limits", "admin"]
        for section in order + [k for k in s if k not in order]:
            if section == "listen":
                lines.append("listen = %s" % lua_value(listen))
                continue
            if section in s and (s[section] or section not in ("limits", "admin", "database")):
                lines.append("%s = %s" % (section, lua_value(s[section])))
            if section == "admin":
                lines.append("plugins = { %s }" % ", ".join(plugin_items))
        if self.extra_lua:
            lines.append(self.extra_lua)
        return "\n".join(lines) + "\n"

    def write_config(self, text=None):
        self.config_path.write_text(text if text is not None else self.config_text())

    # ---- paths

    @property
    def var(self):
        return self.dir / "var"

    @property
    def ca(self):
        return self.var / "tls" / "ca.pem"

    @property
    def url(self):
        return "https://127.0.0.1:%d" % self.admin_port

    # ---- process

    def start(self, wait=True, args=None):
        env = dict(os.environ)
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        self._log_start = self.stderr_path.stat().st_size
        cmd = [str(self.bulwarkd), "--config", str(self.config_path)] + list(args or [])
        self.checked = False
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=self._err)
        self.returncode = None
        if wait:
            self.wait_ready()
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()[self._log_start:]
            if re.search(r"\bready: ", text):
                break
            if self.proc.poll() is not None:
                self._close_files()
                pytest.fail("bulwarkd exited with status %s before it was ready; log tail:\n%s" % (
                    self.proc.returncode, tail(self.log_text())))
            time.sleep(0.05)
        else:
            pytest.fail("bulwarkd was not ready within %.0f s; log tail:\n%s" % (timeout, tail(self.log_text())))
        pw = self.var / "initial-admin-password"
        if pw.exists() and self.password is None:
            self.password = pw.read_text().strip()
        return self

    def wait_exit(self, timeout=30):
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail("bulwarkd did not exit within %d s; log tail:\n%s" % (timeout, tail(self.log_text())))
        self._close_files()
        return self.returncode

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, settings=None, text=None, expect=r"configuration reloaded"):
        """Rewrites the configuration (merged settings, or a whole text), sends SIGHUP and waits for
        `expect` in the log; returns the log offset from before the signal."""
        if settings:
            self.update_settings(settings)
        self.write_config(text)
        mark = self.log_mark()
        self.proc.send_signal(signal.SIGHUP)
        self.wait_log(expect, since=mark)
        return mark

    def stop(self, timeout=20):
        """SIGTERM, wait, assert exit status 0 and a sanitizer-clean log."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.wait_exit(timeout)
        self.assert_clean()
        assert rc == 0, "bulwarkd exited with status %s; log tail:\n%s" % (rc, tail(self.log_text()))
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_files()

    def _close_files(self):
        for f in ("_out", "_err"):
            fh = getattr(self, f, None)
            if fh and not fh.closed:
                fh.close()

    def assert_clean(self):
        self.checked = True  # the pool does not report the same problem again at teardown
        assert_no_sanitizer_reports(self.log_text(), "bulwarkd")

    # ---- logs

    def log_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout_text(self):
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        return len(self.log_text())

    def wait_log(self, pattern, since=0, timeout=10):
        """Waits until the log after offset `since` contains `pattern` (a regex); returns the match."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.log_text()[since:])
            if m:
                return m
            if time.monotonic() > deadline:
                pytest.fail("log line matching %r not seen within %d s; log tail:\n%s" % (
                    pattern, timeout, tail(self.log_text()[since:])))
            time.sleep(0.05)

    # ---- HTTPS

    def ssl_context(self):
        if self._ctx is None:
            self._ctx = ssl.create_default_context(cafile=str(self.ca))
        return self._ctx

    def connection(self, host="127.0.0.1", port=None, timeout=30, context=None):
        return http.client.HTTPSConnection(host, port or self.admin_port, context=context or self.ssl_context(),
                                           timeout=timeout)

    def api(self, method, path, json=None, token=None, headers=None, body=None, host="127.0.0.1", port=None,
            timeout=30):
        """One request on a new connection -> Response (unpacks to status, headers, body)."""
        hdrs = {}
        if token:
            hdrs["Authorization"] = "Bearer " + token
        if json is not None:
            body = _json.dumps(json).encode()
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        hdrs.update(headers or {})
        conn = self.connection(host=host, port=port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
        finally:
            conn.close()
        ctype = resp.getheader("Content-Type", "") or ""
        parsed = raw
        if raw and ctype.startswith("application/json"):
            parsed = _json.loads(raw)
        return Response(resp.status, resp.headers, parsed, raw)

    def login(self, user="admin", password=None, expect=201):
        r = self.api("POST", "/api/v1/session", json={"user": user, "password": password or self.password})
        assert r.status == expect, r
        return r.body["token"] if expect == 201 else r

    def add_admin(self, token, name, password, role="readonly"):
        r = self.api("POST", "/api/v1/admins", json={"name": name, "password": password, "role": role}, token=token)
        assert r.status == 201, r
        return r.body

    def health(self):
        r = self.api("GET", "/healthz")
        assert r.status == 200, r
        return r.body

    def plugin(self, name):
        for p in self.health()["plugins"]:
            if p["name"] == name:
                return p
        raise AssertionError("plugin %s not in /healthz: %r" % (name, self.health()))

    # ---- agent listener (the device side)

    @property
    def agent_url(self):
        return "https://127.0.0.1:%d" % self.agent_port

    @property
    def device_ca(self):
        """The device CA certificate (it signs the devices' client certificates)."""
        return self.var / "tls" / "device-ca.pem"

    def agent_connection(self, cert=None, timeout=30):
        """A connection to the agent listener presenting cert = (cert.pem, key.pem), or no
        client certificate; kept open until closed (for keep-alive tests)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return http.client.HTTPSConnection("127.0.0.1", self.agent_port, context=ctx, timeout=timeout)

    def agent_api(self, method, path, json=None, body=None, cert=None, headers=None, conn=None, timeout=30):
        """One request on the agent listener -> Response; on `conn` when given (left open), else
        on a new connection with cert = (cert.pem, key.pem) or none."""
        c = conn or self.agent_connection(cert, timeout=timeout)
        try:
            return send_request(c, method, path, json=json, body=body, headers=headers)
        finally:
            if conn is None:
                c.close()

    # ---- bulwarkctl

    def ctl(self, *args, env=None, timeout=60, cwd=None, server=None):
        """Runs bulwarkctl with BULWARK_SERVER/BULWARK_CA set and a private XDG_CONFIG_HOME;
        env entries override (None removes). Fails on sanitizer reports."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("BULWARK_")}
        e["BULWARK_SERVER"] = server or self.url
        e["BULWARK_CA"] = str(self.ca)
        e["XDG_CONFIG_HOME"] = str(self.xdg)
        e["HOME"] = str(self.dir / "home")
        for k, v in (env or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        wd = Path(cwd) if cwd else self.dir / "ctl-cwd"
        wd.mkdir(parents=True, exist_ok=True)
        (self.dir / "home").mkdir(exist_ok=True)
        # A new session has no controlling terminal: a password prompt cannot hang the run.
        cp = subprocess.run([str(self.bulwarkctl)] + [str(a) for a in args], env=e, cwd=wd, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=timeout, start_new_session=True)
        assert_no_sanitizer_reports(cp.stderr, "bulwarkctl " + " ".join(map(str, args)))
        return cp

    @property
    def xdg(self):
        return self.dir / "xdg"


class ServerPool:
    """Creates servers in numbered directories under `base` and stops every one at close()."""

    def __init__(self, build, base):
        self.build = build
        self.base = Path(base)
        self.servers = []

    def create(self, **kw):
        d = self.base / ("srv%d" % len(self.servers))
        srv = Server(self.build, d, **kw)
        self.servers.append(srv)
        return srv

    def start(self, **kw):
        return self.create(**kw).start()

    def close(self):
        problems = []
        for srv in self.servers:
            if srv.proc is None:
                continue
            try:
                if srv.running():
                    srv.stop()
                elif not srv.checked:
                    rc = srv.wait_exit(5)
                    srv.assert_clean()
                    assert rc == 0, "bulwarkd exited by itself with status %s; log tail:\n%s" % (
                        rc, tail(srv.log_text()))
            except (Exception, pytest.fail.Exception) as e:  # keep stopping the others
                problems.append("%s in %s: %s" % (type(e).__name__, srv.dir, e))
            finally:
                srv.kill()
        if problems:
            pytest.fail("server teardown:\n" + "\n".join(problems))


def copy_plugin(src, dst_dir, mode=0o755):
    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(dst_dir, 0o755)
    dst = dst_dir / Path(src).name
    shutil.copy2(src, dst)
    os.chmod(dst, mode)
    return dst
