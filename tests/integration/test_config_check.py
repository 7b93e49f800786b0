"""`bulwarkd --check-config`: good files pass; each kind of mistake exits 1 naming file:line,
the setting and the reason."""

import os
import re
import subprocess

import pytest

from bwserver import assert_no_sanitizer_reports


def check(build, tmp_path, text, env=None, name="bulwark.lua"):
    cfg = tmp_path / name
    cfg.write_text(text)
    e = dict(os.environ)
    e.update(env or {})
    cp = subprocess.run([str(build / "bin" / "bulwarkd"), "--check-config", str(cfg)], capture_output=True, text=True,
                        timeout=60, env=e, cwd=tmp_path)
    assert_no_sanitizer_reports(cp.stderr, "bulwarkd --check-config")
    return cp, str(cfg)


def base(build, plugin_dir=None, plugins=('"example_hello"',)):
    return ('server = { var_dir = "var", plugin_dir = "%s" }\n'
            'listen = { agent = { "127.0.0.1:18443" }, admin = { "127.0.0.1:18444" } }\n'
            'tls = { generate = true }\n'
            'plugins = { %s }\n') % (plugin_dir or (build / "lib" / "bulwark" / "plugins"), ", ".join(plugins))


def error_line(cp):
    lines = [l for l in cp.stderr.splitlines() if l.startswith("bulwarkd: ")]
    assert lines, "no 'bulwarkd: ...' error line on stderr:\n" + cp.stderr
    return lines[-1]


def test_good_config(build, tmp_path):
    cp, cfg = check(build, tmp_path, base(build) + 'example_hello = { greeting = "Hi", interval = "5m", '
                                                   'topics = { "a", "b" }, count_events = false }\n')
    assert cp.returncode == 0, cp.stderr
    assert "configuration OK" in cp.stdout
    # Checking has no side effects: no var dir, no TLS files.
    assert not (tmp_path / "var").exists()


def test_repo_demo_config_is_valid(build, repo, tmp_path):
    text = (repo / "config" / "bulwark.lua").read_text()
    text = re.sub(r'plugin_dir = "[^"]*"', 'plugin_dir = "%s"' % (build / "lib" / "bulwark" / "plugins"), text)
    (tmp_path / "conf.d").mkdir()
    for f in (repo / "config" / "conf.d").glob("*.lua"):
        (tmp_path / "conf.d" / f.name).write_text(f.read_text())
    cp, _ = check(build, tmp_path, text)
    assert cp.returncode == 0, cp.stderr


def test_unknown_plugin_key(build, tmp_path):
    cp, cfg = check(build, tmp_path, base(build) + 'example_hello = {\n  greting = "x",\n}\n')
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "%s:6:" % cfg in msg, msg
    assert "example_hello.greting" in msg and "unknown setting" in msg, msg
    assert "greeting" in msg  # the known keys are listed


def test_unknown_host_key(build, tmp_path):
    cp, cfg = check(build, tmp_path, base(build) + 'limits = { max_body_bytez = 10 }\n')
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "%s:5:" % cfg in msg and "limits.max_body_bytez" in msg and "unknown setting" in msg, msg


@pytest.mark.parametrize("line,key,words", [
    ('example_hello = { greeting = 5 }', "example_hello.greeting", "string"),
    ('example_hello = { count_events = "yes" }', "example_hello.count_events", "true or false"),
    ('example_hello = { topics = "all" }', "example_hello.topics", "list"),
    ('example_hello = { interval = "1ms" }', "example_hello.interval", "between"),
    ('limits = { max_body_bytes = "big" }', "limits.max_body_bytes", "integer"),
    ('admin = { metrics_require_auth = 1 }', "admin.metrics_require_auth", "true or false"),
    ('admin = { session_ttl = "soon" }', "admin.session_ttl", ""),
])
def test_wrong_type_or_range(build, tmp_path, line, key, words):
    cp, cfg = check(build, tmp_path, base(build) + line + "\n")
    assert cp.returncode == 1, cp.stderr
    msg = error_line(cp)
    assert "%s:5:" % cfg in msg, msg
    assert key in msg and words in msg, msg


def test_bad_enum_value_names_line(build, tmp_path):
    cp, cfg = check(build, tmp_path, base(build) + 'log = { level = "chatty" }\n')
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "log.level" in msg and "chatty" in msg, msg
    assert "%s:5:" % cfg in msg, "the error should name file:line like the others: " + msg


def test_unknown_plugin_in_list(build, tmp_path):
    cp, cfg = check(build, tmp_path, base(build, plugins=('"example_hello"', '"nosuchplugin"')))
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "nosuchplugin" in msg, msg


def test_invalid_plugin_name_in_list(build, tmp_path):
    cp, cfg = check(build, tmp_path, base(build, plugins=('"Bad-Name"',)))
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "%s:4:" % cfg in msg and "Bad-Name" in msg, msg


def test_settings_for_plugin_not_enabled(build, tmp_path, fixture_plugins):
    cp, cfg = check(build, tmp_path, base(build) + 'fx_good = { secret = "s" }\n')
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "%s:5:" % cfg in msg and "unknown setting" in msg and "fx_good" in msg, msg


def test_missing_required_setting(build, tmp_path, fixture_plugins):
    cp, cfg = check(build, tmp_path, base(build, plugin_dir=fixture_plugins, plugins=('"fx_good"',)) +
                    'fx_good = { name = "x" }\n')
    assert cp.returncode == 1
    msg = error_line(cp)
    assert cfg in msg and "fx_good.secret" in msg and "required" in msg, msg


def test_required_setting_present(build, tmp_path, fixture_plugins):
    cp, _ = check(build, tmp_path, base(build, plugin_dir=fixture_plugins, plugins=('"fx_good"',)) +
                  'fx_good = { secret = env "BW_ITEST_SECRET", count = 5, ratio = 0.25, list = { "a" }, '
                  'wait = "3s", flag = true }\n', env={"BW_ITEST_SECRET": "s3cret-value"})
    assert cp.returncode == 0, cp.stderr
    assert "s3cret-value" not in cp.stdout + cp.stderr


def test_env_unset(build, tmp_path, fixture_plugins):
    env = dict(os.environ)
    env.pop("BW_ITEST_UNSET", None)
    cp, cfg = check(build, tmp_path, base(build, plugin_dir=fixture_plugins, plugins=('"fx_good"',)) +
                    'fx_good = {\n  secret = env "BW_ITEST_UNSET",\n}\n', env={})
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "%s:6:" % cfg in msg and "BW_ITEST_UNSET" in msg and "not set" in msg, msg


def test_file_secret(build, tmp_path, fixture_plugins):
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    cp, _ = check(build, tmp_path, base(build, plugin_dir=fixture_plugins, plugins=('"fx_good"',)) +
                  'fx_good = { secret = file "secret.txt" }\n')
    assert cp.returncode == 0, cp.stderr
    cp, cfg = check(build, tmp_path, base(build, plugin_dir=fixture_plugins, plugins=('"fx_good"',)) +
                    'fx_good = { secret = file "missing.txt" }\n')
    assert cp.returncode == 1
    assert "missing.txt" in error_line(cp)


def test_int_range(build, tmp_path, fixture_plugins):
    cp, cfg = check(build, tmp_path, base(build, plugin_dir=fixture_plugins, plugins=('"fx_good"',)) +
                    'fx_good = { secret = "s", count = 11 }\n')
    assert cp.returncode == 1
    assert "fx_good.count" in error_line(cp)


def test_lua_syntax_error(build, tmp_path):
    cp, cfg = check(build, tmp_path, base(build) + 'limits = {\n')
    assert cp.returncode == 1
    assert "%s:" % cfg in error_line(cp)


def test_sandbox_has_no_os(build, tmp_path):
    marker = tmp_path / "pwned"
    cp, cfg = check(build, tmp_path, base(build) + 'os.execute("touch %s")\n' % marker)
    assert cp.returncode == 1
    assert not marker.exists()
    cp, cfg = check(build, tmp_path, base(build) + 'io.open("%s", "w")\n' % marker)
    assert cp.returncode == 1
    assert not marker.exists()


def test_include(build, tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-limits.lua").write_text('limits = { max_body_bytes = 2048 }\n')
    cp, _ = check(build, tmp_path, base(build) + 'include "conf.d/*.lua"\n')
    assert cp.returncode == 0, cp.stderr
    (tmp_path / "conf.d" / "20-bad.lua").write_text('\nadmin = { bogus = 1 }\n')
    cp, _ = check(build, tmp_path, base(build) + 'include "conf.d/*.lua"\n')
    assert cp.returncode == 1
    msg = error_line(cp)
    assert "20-bad.lua:2:" in msg and "admin.bogus" in msg, msg


def test_missing_file(build, tmp_path):
    cp = subprocess.run([str(build / "bin" / "bulwarkd"), "--check-config", str(tmp_path / "nope.lua")],
                        capture_output=True, text=True, timeout=30)
    assert cp.returncode == 1
    assert "nope.lua" in cp.stderr


def test_bad_command_line(build):
    cp = subprocess.run([str(build / "bin" / "bulwarkd"), "--frobnicate"], capture_output=True, text=True, timeout=30)
    assert cp.returncode != 0
    assert "usage" in cp.stderr.lower()
    cp = subprocess.run([str(build / "bin" / "bulwarkd"), "--version"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 0 and re.search(r"\d+\.\d+\.\d+", cp.stdout + cp.stderr)
