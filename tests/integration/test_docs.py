"""Docs drift: the generated settings reference must match docs/configuration.md, and every admin
route the host registers must be in docs/openapi.yaml."""

import difflib
import os
import re
import subprocess

import pytest

from bwserver import assert_no_sanitizer_reports

BEGIN, END = "<!-- BEGIN GENERATED -->", "<!-- END GENERATED -->"
PLUGINS = ("example_hello", "compliance_lua", "push_apns", "push_fcm", "dir_ldap")  # every plugin built in tree


def test_config_docs_match(build, repo, tmp_path):
    cfg = tmp_path / "docs.lua"
    cfg.write_text('server = { plugin_dir = "%s" }\nplugins = { "example_hello" }\n'
                   % (build / "lib" / "bulwark" / "plugins"))
    cp = subprocess.run([str(build / "bin" / "bulwarkd"), "--config-docs", "--config", str(cfg)] + list(PLUGINS),
                        capture_output=True, text=True, timeout=60, env=dict(os.environ), cwd=tmp_path)
    assert_no_sanitizer_reports(cp.stderr, "bulwarkd --config-docs")
    assert cp.returncode == 0, cp.stderr
    generated = cp.stdout.strip("\n")
    assert "## Host settings" in generated and "example_hello.greeting" in generated, generated[:500]
    for p in PLUGINS:
        assert "(`%s`)" % p in generated, p

    doc_path = repo / "docs" / "configuration.md"
    assert doc_path.is_file(), "docs/configuration.md does not exist (it must hold the generated reference)"
    doc = doc_path.read_text()
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1, "docs/configuration.md needs one %s ... %s block" % (BEGIN,
                                                                                                            END)
    block = doc[doc.index(BEGIN) + len(BEGIN):doc.index(END)].strip("\n")
    if generated not in block:
        diff = "\n".join(difflib.unified_diff(block.splitlines(), generated.splitlines(), "docs/configuration.md",
                                              "bulwarkd --config-docs", lineterm="", n=1))
        raise AssertionError("docs/configuration.md is out of date; regenerate the block between the markers with\n"
                             "  bulwarkd --config-docs --config CFG %s\n" % " ".join(PLUGINS) + diff[:6000])


def test_openapi_lists_every_host_route(repo):
    """Every admin route the host registers is documented in docs/openapi.yaml, with its method."""
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((repo / "docs" / "openapi.yaml").read_text())
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m in
                  ("get", "post", "put", "patch", "delete", "head")}
    routes = set()
    for src in (repo / "host").rglob("*.c"):
        for m, p in re.findall(r'\{"(GET|POST|PUT|PATCH|DELETE)", "(/api/v1/[^"]*)"', src.read_text()):
            routes.add((m, p))
    assert routes, "no route tables found"
    missing = sorted(routes - documented)
    assert not missing, "routes missing from docs/openapi.yaml: %s" % missing
