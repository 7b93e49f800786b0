"""GET /metrics: Prometheus text format, counters that move, and metrics_require_auth."""

import math
import re

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? (\S+)$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_labels(text):
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, "bad label set {%s}" % text
        labels[m.group(1)] = m.group(2)
        pos = m.end()
    return labels


def parse_metrics(text):
    """-> ({(name, frozenset(labels)): value}, {name: type}); asserts every line is well-formed."""
    samples, types = {}, {}
    assert text.endswith("\n"), "exposition must end with a newline"
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 2 and parts[1] == "TYPE":
                assert len(parts) == 4 and parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[parts[2]] = parts[3]
            elif len(parts) >= 2 and parts[1] == "HELP":
                assert len(parts) >= 3, line
            continue
        m = METRIC_LINE.match(line)
        assert m, "not a metric line: %r" % line
        value = float(m.group(4))  # accepts +Inf, -Inf, NaN
        labels = parse_labels(m.group(3)) if m.group(3) else {}
        key = (m.group(1), frozenset(labels.items()))
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = value
    return samples, types


def get(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def fetch(server, token=None):
    r = server.api("GET", "/metrics", token=token)
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("text/plain")
    return parse_metrics(r.raw.decode())


def test_format_and_types(server):
    samples, types = fetch(server)
    assert types["bulwark_http_requests_total"] == "counter"
    assert types["bulwark_http_request_duration_seconds"] == "histogram"
    assert types["bulwark_http_connections"] == "gauge"
    assert types["bulwark_admin_login_failures_total"] == "counter"
    assert "bulwark_uptime_seconds" in types
    assert get(samples, "bulwark_uptime_seconds") is not None
    # Every sample belongs to a declared family (histograms add _bucket/_sum/_count).
    for name, _ in samples:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, "sample %s has no # TYPE" % name
    # Histogram buckets are cumulative and end with +Inf == _count.
    buckets = sorted(((float(dict(l)["le"]), v) for (n, l), v in samples.items()
                      if n == "bulwark_http_request_duration_seconds_bucket"), key=lambda x: x[0])
    assert buckets and math.isinf(buckets[-1][0])
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))
    assert buckets[-1][1] == get(samples, "bulwark_http_request_duration_seconds_count")


def test_plugin_metric_present(server, admin_token):
    r = server.api("GET", "/api/v1/plugins/example_hello/hello?name=metrics", token=admin_token)
    assert r.status == 200
    samples, types = fetch(server)
    assert "bulwark_example_hello_greetings_total" in types
    assert get(samples, "bulwark_example_hello_greetings_total") >= 1


def test_request_counter_increases(server):
    samples, _ = fetch(server)
    ok_before = get(samples, "bulwark_http_requests_total", **{"class": "2xx"}) or 0
    nf_before = get(samples, "bulwark_http_requests_total", **{"class": "4xx"}) or 0
    for _ in range(3):
        assert server.api("GET", "/healthz").status == 200
    assert server.api("GET", "/definitely-missing").status == 404
    samples, _ = fetch(server)
    # +3 healthz and the first /metrics itself
    assert get(samples, "bulwark_http_requests_total", **{"class": "2xx"}) >= ok_before + 4
    assert get(samples, "bulwark_http_requests_total", **{"class": "4xx"}) >= nf_before + 1


def test_login_failure_counter(server):
    samples, _ = fetch(server)
    before = get(samples, "bulwark_admin_login_failures_total")
    r = server.api("POST", "/api/v1/session", json={"user": "metrics-nobody", "password": "wrong-password-1"})
    assert r.status == 401
    samples, _ = fetch(server)
    assert get(samples, "bulwark_admin_login_failures_total") == before + 1


def test_metrics_require_auth(servers):
    srv = servers.start(plugins=[], settings={"admin": {"metrics_require_auth": True}})
    r = srv.api("GET", "/metrics")
    assert r.status == 401
    assert r.error_code() == "unauthorized"
    r = srv.api("GET", "/metrics", token="garbage-token")
    assert r.status == 401
    token = srv.login()
    samples, types = fetch(srv, token=token)
    assert "bulwark_http_requests_total" in types
    # /healthz stays open
    assert srv.api("GET", "/healthz").status == 200
