"""The installed plugin SDK: `cmake --install`, then example_hello built out of tree with the
CMake package and with pkg-config, loaded by bulwarkd from the out-of-tree output."""

import glob
import os
import shutil
import subprocess

import pytest

from bwserver import tail


def run(cmd, **kw):
    cp = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)
    assert cp.returncode == 0, "%s failed (%d):\n%s\n%s" % (" ".join(map(str, cmd)), cp.returncode,
                                                          tail(cp.stdout), tail(cp.stderr))
    return cp


@pytest.fixture(scope="module")
def prefix(build, tmp_path_factory):
    p = tmp_path_factory.mktemp("sdk") / "prefix"
    run(["cmake", "--install", str(build), "--prefix", str(p)])
    return p


def pc_dir(prefix):
    dirs = glob.glob(str(prefix / "lib*" / "pkgconfig")) + glob.glob(str(prefix / "lib" / "*" / "pkgconfig"))
    dirs = [d for d in dirs if os.path.exists(os.path.join(d, "bulwark-plugin.pc"))]
    assert dirs, "bulwark-plugin.pc not installed under %s" % prefix
    return dirs[0]


def hello_source(repo, dest):
    dest.mkdir(parents=True)
    shutil.copy(repo / "plugins" / "example_hello" / "hello.c", dest / "hello.c")
    shutil.copy(repo / "plugins" / "example_hello" / "CMakeLists.txt.sdk", dest / "CMakeLists.txt")
    return dest


def plugin_dir_with(so, dest):
    dest.mkdir(parents=True)
    os.chmod(dest, 0o755)
    shutil.copy(so, dest / "example_hello.so")
    os.chmod(dest / "example_hello.so", 0o755)
    return dest


def check_runs(servers, plugin_dir):
    srv = servers.start(plugin_dir=plugin_dir, plugins=["example_hello"],
                        settings={"example_hello": {"greeting": "Howdy"}})
    p = srv.plugin("example_hello")
    assert p["state"] == "running", p
    assert srv.health()["status"] == "ok"
    token = srv.login()
    r = srv.api("GET", "/api/v1/plugins/example_hello/hello?name=SDK", token=token)
    assert r.status == 200, r
    assert r.body["message"] == "Howdy, SDK!"
    assert str(plugin_dir) in srv.log_text() or "loaded plugin example_hello" in srv.log_text()


def test_install_layout(prefix):
    assert (prefix / "sbin" / "bulwarkd").is_file()
    assert (prefix / "bin" / "bulwarkctl").is_file()
    for h in ("plugin.h", "errors.h", "host.h"):
        assert (prefix / "include" / "bulwark" / h).is_file(), h
    assert glob.glob(str(prefix / "lib*" / "**" / "bulwark" / "plugins" / "example_hello.so"), recursive=True) or \
        glob.glob(str(prefix / "lib" / "bulwark" / "plugins" / "example_hello.so"))
    assert glob.glob(str(prefix / "lib*" / "**" / "BulwarkPluginConfig.cmake"), recursive=True)
    run([str(prefix / "sbin" / "bulwarkd"), "--version"])


def test_cmake_package_build(prefix, repo, tmp_path, servers):
    src = hello_source(repo, tmp_path / "src")
    out = tmp_path / "out"
    run(["cmake", "-S", str(src), "-B", str(out), "-DCMAKE_PREFIX_PATH=%s" % prefix, "-DCMAKE_BUILD_TYPE=Release"])
    run(["cmake", "--build", str(out)])
    built = glob.glob(str(out / "**" / "example_hello.so"), recursive=True)
    assert built, "no example_hello.so in %s" % out
    # Hidden visibility: only the descriptor is exported.
    nm = subprocess.run(["nm", "-D", "--defined-only", built[0]], capture_output=True, text=True)
    if nm.returncode == 0:
        syms = [l.split()[-1] for l in nm.stdout.splitlines() if l.split() and l.split()[-2] in ("T", "D", "R", "B")]
        assert "bw_plugin_example_hello" in syms, syms
        assert "get_hello" not in syms and "hello_init" not in syms, syms
    check_runs(servers, plugin_dir_with(built[0], tmp_path / "plugins"))


def test_pkg_config_build(prefix, repo, tmp_path, servers):
    src = hello_source(repo, tmp_path / "src")
    env = dict(os.environ, PKG_CONFIG_PATH=pc_dir(prefix))
    cflags = run(["pkg-config", "--cflags", "bulwark-plugin"], env=env).stdout.split()
    libs = run(["pkg-config", "--libs", "bulwark-plugin"], env=env).stdout.split()
    incs = [f[2:] for f in cflags if f.startswith("-I")]
    assert any(os.path.realpath(i) == os.path.realpath(prefix / "include") for i in incs), (
        "bulwark-plugin.pc installed with --prefix %s points at %s: the .pc file is not relocatable "
        "(use ${pcfiledir} or ${prefix} in it)" % (prefix, incs))
    out = tmp_path / "pc-out"
    out.mkdir()
    so = out / "example_hello.so"
    run(["cc", "-std=c17", "-O2", "-Wall", "-Werror"] + cflags + ["-shared", "-o", str(so), str(src / "hello.c")] + libs,
        env=env)
    check_runs(servers, plugin_dir_with(so, tmp_path / "plugins"))
