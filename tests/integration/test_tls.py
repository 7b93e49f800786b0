"""TLS from the client side: protocol versions and suites the server refuses or accepts,
certificate names, and session resumption."""

import socket
import ssl
import warnings

import pytest


def handshake(server, ctx, host="127.0.0.1", server_hostname=None, session=None, port=None):
    """Connects, handshakes and returns (version, cipher name, session_reused, session)."""
    raw = socket.create_connection((host, port or server.admin_port), timeout=10)
    try:
        s = ctx.wrap_socket(raw, server_hostname=server_hostname or host, session=session)
    except BaseException:
        raw.close()
        raise
    try:
        # A request/answer makes TLS 1.3 tickets arrive before the session is taken.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:100]
        return s.version(), s.cipher()[0], s.session_reused, s.session
    finally:
        s.close()


def client_ctx(server, minv=None, maxv=None, ciphers=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(server.ca))
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        if minv:
            ctx.minimum_version = minv
        if maxv:
            ctx.maximum_version = maxv
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def assert_refused_by_server(server, ctx):
    with pytest.raises(ssl.SSLError) as ei:
        handshake(server, ctx)
    # The client must actually have offered something: a local "no protocols/ciphers" error
    # would make the test pass without the server saying anything.
    msg = str(ei.value).upper()
    assert "NO_PROTOCOLS_AVAILABLE" not in msg and "NO_CIPHERS_AVAILABLE" not in msg, msg
    assert "CERTIFICATE_VERIFY_FAILED" not in msg, msg
    # The refusal comes from the server as a TLS alert.
    assert "ALERT" in msg, msg
    return msg


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_refused(server, version):
    v = getattr(ssl.TLSVersion, version)
    ctx = client_ctx(server, minv=v, maxv=v, ciphers="DEFAULT:@SECLEVEL=0")
    msg = assert_refused_by_server(server, ctx)
    assert "PROTOCOL_VERSION" in msg, msg


def test_tls12_without_ecdhe_refused(server):
    ctx = client_ctx(server, minv=ssl.TLSVersion.TLSv1_2, maxv=ssl.TLSVersion.TLSv1_2,
                     ciphers="AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES128-SHA")
    assert_refused_by_server(server, ctx)


def test_tls12_cbc_ecdhe_refused_or_aead(server):
    """Only AEAD suites are offered by a well-configured server; a client offering only
    ECDHE-CBC suites must be refused."""
    ctx = client_ctx(server, minv=ssl.TLSVersion.TLSv1_2, maxv=ssl.TLSVersion.TLSv1_2,
                     ciphers="ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    assert_refused_by_server(server, ctx)


def test_tls12_ecdhe_accepted(server):
    ctx = client_ctx(server, minv=ssl.TLSVersion.TLSv1_2, maxv=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE+AESGCM:ECDHE+CHACHA20")
    version, cipher, _, _ = handshake(server, ctx)
    assert version == "TLSv1.2"
    assert cipher.startswith("ECDHE-"), cipher


def test_tls13_accepted(server):
    ctx = client_ctx(server, minv=ssl.TLSVersion.TLSv1_3)
    version, cipher, _, _ = handshake(server, ctx)
    assert version == "TLSv1.3"
    assert cipher.startswith("TLS_"), cipher


def test_default_client_gets_tls13(server):
    version, _, _, _ = handshake(server, client_ctx(server))
    assert version == "TLSv1.3"


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_certificate_verifies(server, name):
    version, _, _, _ = handshake(server, client_ctx(server), host="127.0.0.1", server_hostname=name)
    assert version.startswith("TLSv1.")


def test_certificate_verifies_ipv6(server):
    if not server.ipv6:
        pytest.skip("no IPv6 loopback")
    handshake(server, client_ctx(server), host="::1", server_hostname="::1")


def test_certificate_wrong_name_rejected(server):
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, client_ctx(server), server_hostname="bulwark.example.com")


def test_certificate_unknown_ca_rejected(server, tmp_path):
    # The system trust store does not know the generated CA.
    ctx = ssl.create_default_context(cafile=None, capath=str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, ctx)


def test_agent_listener_same_policy(server):
    ctx = client_ctx(server, minv=ssl.TLSVersion.TLSv1_1, maxv=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(server, ctx, port=server.agent_port)
    version, _, _, _ = handshake(server, client_ctx(server), port=server.agent_port)
    assert version == "TLSv1.3"


def test_session_resumption_tls12(server):
    ctx = client_ctx(server, maxv=ssl.TLSVersion.TLSv1_2)
    _, _, reused, session = handshake(server, ctx)
    assert not reused
    assert session is not None
    _, _, reused, _ = handshake(server, ctx, session=session)
    assert reused, "TLS 1.2 session was not resumed"


def test_session_resumption_tls13(server):
    ctx = client_ctx(server, minv=ssl.TLSVersion.TLSv1_3)
    _, _, reused, session = handshake(server, ctx)
    assert not reused
    assert session is not None
    _, _, reused, _ = handshake(server, ctx, session=session)
    assert reused, "TLS 1.3 session ticket was not accepted"
