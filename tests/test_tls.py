"""TLS (issue 5): the server link, private links pinned by the server, and
every way of getting it wrong, with real clients and a server in this process."""

import os
import ssl
import time

import gevent
import pytest
from gevent import socket
from gevent import ssl as gssl

from greenchat import certs, texts, tls
from greenchat.client import peer
from greenchat.client.client import Client
from greenchat.client.console import Console
from greenchat.config import ClientConfig
from greenchat.errors import ConfigError, ProtocolError, TLSError
from greenchat.server import server as server_module

from support import Agent, HubTicker, Screen, User, run_all

USERS = ["alice", "bob", "carol"]


@pytest.fixture
def pair(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certs.write_pair(*certs.make_pair("localhost"), cert, key)
    return str(cert), str(key)


@pytest.fixture
def server(make_server, pair):
    return make_server(USERS, tls_cert=pair[0], tls_key=pair[1])


@pytest.fixture
def users(server, pair):
    started = []

    def start(*names):
        for name in names:
            started.append(User(name, server.address, tls=True, ca=pair[0]))
        return started[-len(names):]

    yield start
    for user in started:
        if not user.greenlet.dead:
            user.greenlet.kill()


def run_client(address, **config):
    """Run a client that will not get far; return (status, what it printed)."""
    screen = Screen()
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"alice\npw\n")
    os.close(write_fd)
    client = Client(ClientConfig(host=address[0], port=address[1], **config),
                    Console(read_fd, screen))
    try:
        status = gevent.spawn(client.run).get(timeout=15)
    finally:
        os.close(read_fd)
    return status, screen


def closed_by_peer(sock):
    """Read (and ignore, e.g. a TLS alert) until the other end closes."""
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    sock.close()
    return True


def test_chat_and_private_link_over_tls(users):
    alice, bob = users("alice", "bob")
    assert isinstance(alice.client.conn.sock, gssl.SSLSocket)
    alice.type("message bob over tls")
    bob.expect(texts.message_line("alice", "over tls"))

    alice.type("startprivate bob")
    alice.expect(texts.start_private("bob"))
    bob.expect(texts.started_private_with_you("alice"))
    # Both ends of the link are TLS, with bob's session certificate.
    link_sock = alice.client.links.get("bob").conn.sock
    assert isinstance(link_sock, gssl.SSLSocket)
    assert certs.fingerprint(link_sock.getpeercert(binary_form=True)) == \
        bob.client.listener.fingerprint
    assert isinstance(bob.client.links.get("alice").conn.sock, gssl.SSLSocket)
    alice.type("private bob whispered")
    bob.expect(texts.private_line("alice", "whispered"))
    bob.type("private alice back")
    alice.expect(texts.private_line("bob", "back"))
    assert alice.quit() == 0 and bob.quit() == 0


def test_wrong_ca_is_refused_with_a_clear_error(server, tmp_path, capsys):
    other_cert = tmp_path / "other.pem"
    certs.write_pair(*certs.make_pair("localhost"), other_cert, tmp_path / "other-key.pem")
    status, _ = run_client(server.address, tls=True, ca=str(other_cert))
    assert status == 1
    err = capsys.readouterr().err
    assert "its TLS certificate was refused" in err and "--ca FILE" in err
    # The server goes on serving.
    agent = Agent("bob", server.address, tls.client_context(insecure=True))
    assert agent.login()["status"] == "ok"


def test_system_cas_refuse_a_self_signed_server(server, capsys):
    status, _ = run_client(server.address, tls=True)
    assert status == 1
    assert "self-signed certificate" in capsys.readouterr().err


def test_host_name_must_match_the_certificate(make_server, tmp_path, capsys):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    certs.write_pair(*certs.make_pair("elsewhere", names=("elsewhere.example",)), cert, key)
    server = make_server(USERS, tls_cert=str(cert), tls_key=str(key))
    status, _ = run_client(server.address, tls=True, ca=str(cert))
    assert status == 1
    err = capsys.readouterr().err
    assert "IP address mismatch" in err
    # The CA is right; the certificate names another host: the fix is a new one.
    host = server.address[0]
    assert f"its TLS certificate is not for {host}" in err
    assert f"greenchat-admin mkcert --name {host}" in err and "--ca" not in err


def test_plain_text_client_on_a_tls_port_is_told(server):
    status, screen = run_client(server.address)
    assert status == 1
    assert texts.TLS_REQUIRED in screen.lines


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01"])
def test_a_silent_handshake_does_not_hold_a_stop(server, sent):
    # Silent, or a ClientHello's first bytes and no more.
    silent = socket.create_connection(server.address)
    silent.sendall(sent)
    gevent.sleep(0.1)                   # accepted: its handshake waits for more
    assert server.connections == 1
    started = time.monotonic()
    server.stop(timeout=10)
    assert time.monotonic() - started < 2
    silent.close()


def test_tls_client_on_a_plain_port_is_told_quickly(make_server, capsys):
    plain = make_server(USERS)
    started = time.monotonic()
    status, _ = run_client(plain.address, tls=True, insecure=True)
    assert status == 1
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "TLS handshake failed" in err and "does the server use TLS?" in err


def test_silent_and_garbage_handshakes_cost_nobody_else(make_server, pair, monkeypatch):
    monkeypatch.setattr(server_module, "TLS_HANDSHAKE_TIMEOUT", 0.5)
    server = make_server(USERS, tls_cert=pair[0], tls_key=pair[1])
    silent = [socket.create_connection(server.address) for _ in range(20)]
    garbage = socket.create_connection(server.address)
    garbage.sendall(b"\x16\x03\x01\x00\x05junkjunkjunk")
    ticker = HubTicker()
    agent = Agent("alice", server.address, tls.client_context(insecure=True))
    assert agent.login()["status"] == "ok"
    # Both kinds are closed by the server: at once, or at the deadline.
    with gevent.Timeout(5):
        for sock in silent + [garbage]:
            assert closed_by_peer(sock)
        while server.connections > 1:          # alice's
            gevent.sleep(0.01)
    assert ticker.stop() < 0.1
    assert agent.logout()["type"] == "bye"


def test_many_tls_receivers_get_every_broadcast_in_order(make_server, pair):
    context = tls.client_context(insecure=True)
    names = [f"u{i}" for i in range(60)]
    server = make_server(names, tls_cert=pair[0], tls_key=pair[1])
    agents = [Agent(name, server.address, context) for name in names]
    run_all([gevent.spawn(a.login) for a in agents], timeout=60)
    sender = agents[0]
    count = 300
    for i in range(count):
        sender.command(f"broadcast b{i}")
    expected = [f"b{i}" for i in range(count)]
    for agent in agents[1:]:
        agent.wait_for(lambda f: f.get("text") == expected[-1], timeout=30)
        got = [f["text"] for _, f in agent.frames("message") if f["from"] == names[0]]
        assert got == expected
    run_all([gevent.spawn(a.logout) for a in agents], timeout=60)


def test_peer_link_pin_must_match(pair):
    context, fingerprint = tls.session_identity()
    accepted = []
    listener = peer.PeerListener("127.0.0.1", 0, peer.TokenBook(), accepted.append, 65536,
                                 (context, fingerprint))
    listener.start()
    try:
        host, port = listener.address
        with pytest.raises(TLSError) as caught:
            peer.connect(host, port, "alice", "token", 65536, timeout=5,
                         pin="0" * 64, tls_required=True)
        assert caught.value.verify
        with pytest.raises(ProtocolError):      # no pin named: no link
            peer.connect(host, port, "alice", "token", 65536, timeout=5, tls_required=True)
        # A plain-text peer gets nowhere either.
        with gevent.Timeout(5):
            sock = socket.create_connection((host, port))
            sock.sendall(b'{"type":"peer_hello"}\n')
            assert closed_by_peer(sock)
        assert accepted == []
    finally:
        listener.stop()


def test_server_refuses_unusable_certificate_files(tmp_path, pair):
    with pytest.raises(ConfigError):
        tls.server_context(str(tmp_path / "missing.pem"), pair[1])
    with pytest.raises(ConfigError):
        tls.server_context(pair[1], pair[1])
    with pytest.raises(ConfigError):
        tls.client_context(str(tmp_path / "missing.pem"))


def test_mkcert_pair_names_and_key_mode(tmp_path):
    from greenchat import admin
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    out = admin.mkcert(str(cert), str(key), ["chat.example", "10.0.0.7"], 30)
    assert "SHA-256 fingerprint" in out
    assert key.stat().st_mode & 0o777 == 0o600
    decoded = ssl._ssl._test_decode_cert(str(cert))
    assert ("DNS", "chat.example") in decoded["subjectAltName"]
    assert ("IP Address", "10.0.0.7") in decoded["subjectAltName"]
    with pytest.raises(admin.AdminError):
        admin.mkcert(str(cert), str(tmp_path / "k2.pem"), ["x"], 30)
    assert admin.main(["mkcert", "--cert", str(cert), "--key", str(key)]) == 1


def test_expiry_warnings(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    soon, later = tmp_path / "soon.pem", tmp_path / "later.pem"
    soon.write_bytes(certs.make_pair("localhost", days=3)[0])
    later.write_bytes(certs.make_pair("localhost", days=365)[0])
    (warning,) = certs.expiry_warnings(str(soon))
    end = x509.load_pem_x509_certificate(soon.read_bytes()).not_valid_after_utc
    assert str(soon) in warning and "expires" in warning and end.strftime("%Y-%m-%d") in warning
    assert certs.expiry_warnings(str(later)) == []
    in_360_days = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=360)
    assert len(certs.expiry_warnings(str(later), now=in_360_days)) == 1

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    past = datetime.datetime(2020, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)
    expired_cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                    .public_key(key.public_key()).serial_number(x509.random_serial_number())
                    .not_valid_before(past - datetime.timedelta(days=30)).not_valid_after(past)
                    .sign(key, hashes.SHA256()))
    expired = tmp_path / "expired.pem"
    expired.write_bytes(expired_cert.public_bytes(serialization.Encoding.PEM))
    (warning,) = certs.expiry_warnings(str(expired))
    assert "expired" in warning and "2020-01-02" in warning
    # An unusable file is server_context's to report, not this check's.
    assert certs.expiry_warnings(str(tmp_path / "missing.pem")) == []
