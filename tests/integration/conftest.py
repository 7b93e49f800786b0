"""tests/integration/conftest.py: fixtures that start bulwarkd (see bwserver.py) for the tests.

The build under test comes from $BULWARK_BUILD (a CMake build directory with bin/bulwarkd,
bin/bulwarkctl, lib/bulwark/plugins and tests/fixtures/plugins).
"""

import os
from pathlib import Path

import pytest

from bwserver import ServerPool

REPO = Path(__file__).resolve().parents[2]


def _build_dir():
    b = os.environ.get("BULWARK_BUILD")
    if not b:
        pytest.exit("set BULWARK_BUILD to a CMake build directory of bulwark (e.g. build-test)", returncode=4)
    b = Path(b).resolve()
    for rel in ("bin/bulwarkd", "bin/bulwarkctl"):
        if not (b / rel).is_file():
            pytest.exit("BULWARK_BUILD=%s has no %s; build it first" % (b, rel), returncode=4)
    plugins = b / "lib" / "bulwark" / "plugins"
    if plugins.is_dir() and plugins.stat().st_mode & 0o022:
        # bulwarkd refuses such a directory; every test would fail for the same reason.
        pytest.exit("%s is writable by group or others; run chmod go-w on it and on its .so files, or build "
                    "with umask 022" % plugins, returncode=4)
    return b


@pytest.fixture(scope="session")
def build():
    return _build_dir()


@pytest.fixture(scope="session")
def repo():
    return REPO


@pytest.fixture(scope="session")
def fixture_plugins(build):
    d = build / "tests" / "fixtures" / "plugins"
    if not (d / "fx_good.so").is_file():
        pytest.fail("fixture plugins are not built in %s" % d)
    return d


@pytest.fixture
def servers(build, tmp_path):
    """Factory for servers private to one test: servers.start(**Server kwargs), servers.create(...)."""
    pool = ServerPool(build, tmp_path)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def module_servers(build, tmp_path_factory):
    pool = ServerPool(build, tmp_path_factory.mktemp("module-servers"))
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def server(module_servers):
    """One server with the default configuration (example_hello), shared by a module's tests.
    Tests using it must not depend on each other's state (use unique names)."""
    return module_servers.start()


@pytest.fixture(scope="module")
def admin_token(server):
    """A session token of the initial administrator on the module's shared server."""
    return server.login()
