"""Issue 11, the network attacks: running the server out of file
descriptors (item 11) and sending peers to an address of the client's
choosing (item 14). Each test failed before its fix, but for two guards
(said so below) of what already held.

Connections come from chosen loopback addresses (127.0.0.2, 127.0.1.1, ...:
all of 127/8 reaches a listener on 127.0.0.1) by binding the client socket
before connecting. A test that needs a file descriptor limit runs the server
as a real process (tests/support.py's ServerProcess); the rest run it in
this process. Every wait is bounded.
"""

import re
import resource
import time

import gevent
import pytest
from gevent import socket
from gevent.event import AsyncResult, Event

from greenchat import certs, texts, tls
from greenchat.codec import Decoder
from greenchat.errors import TLSError
from greenchat.server import runtime

from support import Agent, ServerProcess

FLOOD_SOURCES = [f"127.0.0.{n}" for n in range(2, 9)]     # one /24, seven addresses


class SourcedAgent(Agent):
    """An Agent whose connections come from the address `source`."""

    def __init__(self, name, address, source):
        super().__init__(name, address)
        self.source = source

    def connect(self):
        self.sock = socket.create_connection(self.address, timeout=5,
                                             source_address=(self.source, 0))
        self.sock.settimeout(None)
        self.closed = Event()
        self._waiters = {"login": AsyncResult(), "bye": AsyncResult()}
        self.reader = gevent.spawn(self._read, self.sock, self.closed)


def connect_from(source, address, timeout=5):
    """A connection from `source` to `address` that sends nothing."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.bind((source, 0))
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def received_from(source, address, timeout=5):
    """Every frame a silent connection from `source` gets until the server
    closes it; AssertionError if it is not closed within `timeout`."""
    sock = connect_from(source, address, timeout)
    decoder, frames = Decoder(), []
    try:
        with gevent.Timeout(timeout, AssertionError(f"{source}: not closed in {timeout}s")):
            while True:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                frames += decoder.feed(data)
    finally:
        sock.close()
    return frames


def refused_from(source, address):
    return received_from(source, address) == \
        [{"type": "error", "text": texts.TOO_MANY_CONNECTIONS}]


def close_all(socks):
    for sock in socks:
        sock.close()


# Item 11: file descriptors ------------------------------------------------------

def test_neighbours_in_one_slash_24_share_one_count(make_server):
    server = make_server(["alice"], max_per_address=3)
    held = [connect_from(source, server.address)
            for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]
    try:
        gevent.sleep(0.1)
        assert refused_from("127.0.0.3", server.address)
        assert refused_from("127.0.0.254", server.address)
        # Another /24 has a count of its own.
        alice = SourcedAgent("alice", server.address, "127.0.1.1")
        assert alice.login(timeout=5)["status"] == "ok"
    finally:
        close_all(held)
    server.stop()
    # --ipv4-prefix 32 counts each address on its own, as before.
    server = make_server(["alice"], max_per_address=2, ipv4_prefix=32)
    held = [connect_from(source, server.address)
            for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3")]
    try:
        gevent.sleep(0.1)
        assert refused_from("127.0.0.2", server.address)
        alice = SourcedAgent("alice", server.address, "127.0.0.3")
        assert alice.login(timeout=5)["status"] == "ok"
    finally:
        close_all(held)


def _dual_stack():
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::", 0))
            return sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    except OSError:
        return False


@pytest.mark.skipif(not _dual_stack(), reason="no dual-stack IPv6 socket here")
def test_an_ipv4_client_of_a_dual_stack_listener_counts_in_its_slash_24(make_server):
    # The server sees ::ffff:127.0.0.2: it counts as 127.0.0.2, in
    # 127.0.0.0/24, and neither on its own nor in ::/64 with every IPv4 client.
    server = make_server(["alice"], host="::", max_per_address=2)
    address = ("127.0.0.1", server.address[1])
    held = [connect_from("127.0.0.2", address) for _ in range(2)]
    try:
        gevent.sleep(0.1)
        assert refused_from("127.0.0.3", address)
        alice = SourcedAgent("alice", address, "127.0.1.1")
        assert alice.login(timeout=5)["status"] == "ok"
    finally:
        close_all(held)


def test_a_connection_over_the_limit_of_a_tls_server_is_closed_at_once(make_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certs.write_pair(*certs.make_pair("localhost"), cert, key)
    server = make_server(["alice"], max_per_address=1, tls_cert=str(cert), tls_key=str(key))
    held = connect_from("127.0.0.2", server.address)         # silent: in its handshake
    try:
        gevent.sleep(0.1)
        # No handshake (up to 10 s) first: closed, no frame (it could not be read).
        started = time.monotonic()
        assert received_from("127.0.0.3", server.address, timeout=2) == []
        assert time.monotonic() - started < 1
        # A TLS client is told no more than that either, and at once.
        with pytest.raises(TLSError):
            sock = connect_from("127.0.0.4", server.address)
            try:
                tls.connect(sock, tls.client_context(insecure=True), 2)
            finally:
                sock.close()
        assert time.monotonic() - started < 2
    finally:
        held.close()
    # Within the limit, TLS works as before.
    gevent.sleep(0.1)
    alice = Agent("alice", server.address, tls_context=tls.client_context(insecure=True))
    assert alice.login(timeout=5)["status"] == "ok"


def test_a_refused_plain_connection_gets_its_frame_at_once(make_server):
    # A guard: a fresh socket always took the frame at once.
    server = make_server(["alice"], max_per_address=1)
    held = connect_from("127.0.0.2", server.address)
    try:
        gevent.sleep(0.1)
        started = time.monotonic()
        assert refused_from("127.0.0.3", server.address)
        assert time.monotonic() - started < 1
    finally:
        held.close()


def raise_own_fd_limit():
    """This test process holds the flood's sockets: the most files it may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def limit_files_to_1024():
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def flood(address, count, sources):
    """`count` connections that send nothing, from `sources` in turn."""
    return [connect_from(sources[i % len(sources)], address) for i in range(count)]


def assert_no_fd_exhaustion(server):
    bad = [line for line in server.log().splitlines()
           if "EMFILE" in line or "Too many open files" in line]
    assert not bad, f"{len(bad)} log line(s) like {bad[0]!r}"


def test_half_open_connections_from_one_slash_24_cannot_exhaust_the_fds(tmp_path):
    raise_own_fd_limit()
    (tmp_path / "credentials.txt").write_text("alice pw\n")
    server = ServerProcess(str(tmp_path), preexec_fn=limit_files_to_1024)
    held = []
    try:
        # 200 from each of 7 addresses: within a per-address limit of 200.
        held = flood(server.address, 1400, FLOOD_SOURCES)
        alice = SourcedAgent("alice", server.address, "127.0.1.1")
        assert alice.login(timeout=5)["status"] == "ok"
        assert refused_from("127.0.0.9", server.address)
        assert alice.command("whoelse", timeout=5)[1]["ok"]
    finally:
        close_all(held)
        assert server.stop() == 0
    assert_no_fd_exhaustion(server)


def limit_files_to_256_of_1024():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))


def still_open(socks):
    """The connections among `socks` the server has not closed."""
    open_ = []
    for sock in socks:
        sock.settimeout(0)
        try:
            sock.recv(65536)            # the refusal, or its end
        except (BlockingIOError, socket.timeout):
            open_.append(sock)
        except OSError:
            pass
    return open_


def test_the_connection_cap_stays_below_the_file_limit(tmp_path):
    raise_own_fd_limit()
    (tmp_path / "credentials.txt").write_text("alice pw\n")
    # Each address counted on its own: only --max-connections (20,000) is left.
    server = ServerProcess(str(tmp_path), "--ipv4-prefix", "32",
                           preexec_fn=limit_files_to_256_of_1024)
    held = []
    try:
        # The soft limit was raised to the hard one, and the cap set below it.
        clamped = re.search(r"--max-connections 20000 is more than 1024 open files allow: "
                            r"holding at most (\d+)", server.log())
        assert clamped, server.log()[-2000:]
        cap = int(clamped.group(1))
        assert 512 < cap <= 1024 - runtime.FD_RESERVE
        held = flood(server.address, 1400, FLOOD_SOURCES)
        deadline = time.monotonic() + 5
        while len(still_open(held)) > cap and time.monotonic() < deadline:
            gevent.sleep(0.1)
        assert len(still_open(held)) == cap
        assert refused_from("127.0.0.9", server.address)
        close_all(held[:10])
        gevent.sleep(0.2)
        alice = SourcedAgent("alice", server.address, "127.0.1.1")
        assert alice.login(timeout=5)["status"] == "ok"
    finally:
        close_all(held)
        assert server.stop() == 0
    assert_no_fd_exhaustion(server)


def test_connection_limits():
    served, held = runtime.connection_limits(20_000, 1024)
    assert held == 1024 - runtime.FD_RESERVE and served == held - runtime.REFUSING
    assert runtime.connection_limits(500, 1024) == (500, held)
    assert runtime.connection_limits(20_000, None) == (20_000, None)     # no file limit
    assert runtime.connection_limits(20_000, 100) == (1, 36)            # never none at all
    assert runtime.connection_limits(20_000, 10) == (1, 2)


# Item 14: the host of a private link ------------------------------------------------

def login_with_p2p(agent, p2p):
    """Log `agent` in, telling the server `p2p` in its password frame."""
    agent.connect()
    for frame in ({"type": "hello", "version": 1},
                  {"type": "username", "username": agent.name},
                  {"type": "password", "password": "pw", "p2p": p2p}):
        agent.send(frame)
    return agent.wait_for(lambda f: f["type"] in ("login", "error") and "text" in f)


def offer_for(requester, user):
    _, reply = requester.command(f"startprivate {user}", timeout=5)
    assert reply["ok"], reply
    return reply["private"]


@pytest.mark.parametrize("p2p", [
    {"host": "169.254.169.254", "port": 4444},
    {"host": "localhost", "port": 4444},
    {"host": "10.0.0.1", "port": 4444, "fingerprint": "ab" * 32},
    {"host": "", "port": 4444},
    {"host": 12345, "port": 4444},         # ignored, so not refused either
    {"port": 4444},
], ids=["metadata", "localhost", "private", "empty", "number", "none"])
def test_the_server_names_the_address_it_sees_not_the_one_claimed(make_server, p2p):
    server = make_server(["alice", "bob"])
    alice, bob = Agent("alice", server.address), Agent("bob", server.address)
    assert login_with_p2p(alice, p2p)["status"] == "ok"
    assert bob.login(timeout=5)["status"] == "ok"
    offer = offer_for(bob, "alice")
    assert (offer["host"], offer["port"]) == ("127.0.0.1", 4444)
    assert offer.get("fingerprint") == p2p.get("fingerprint")


def test_the_address_seen_is_the_connections_own(make_server):
    server = make_server(["alice", "bob"])
    alice = SourcedAgent("alice", server.address, "127.0.0.7")
    bob = Agent("bob", server.address)
    assert login_with_p2p(alice, {"host": "127.0.0.1", "port": 4444})["status"] == "ok"
    assert bob.login(timeout=5)["status"] == "ok"
    assert offer_for(bob, "alice")["host"] == "127.0.0.7"


@pytest.mark.skipif(not _dual_stack(), reason="no dual-stack IPv6 socket here")
def test_an_ipv4_mapped_address_is_named_as_ipv4(make_server):
    server = make_server(["alice", "bob"], host="::")
    address = ("127.0.0.1", server.address[1])
    alice, bob = Agent("alice", address), Agent("bob", address)
    assert login_with_p2p(alice, {"host": "::", "port": 4444})["status"] == "ok"
    assert bob.login(timeout=5)["status"] == "ok"
    assert offer_for(bob, "alice")["host"] == "127.0.0.1"


@pytest.mark.parametrize("port", [0, 65536, "4444", None, True])
def test_the_port_is_still_checked(make_server, port):
    # A guard: checked as before.
    server = make_server(["alice"])
    alice = Agent("alice", server.address)
    frame = login_with_p2p(alice, {"host": "127.0.0.1", "port": port})
    assert frame == {"type": "error", "text": texts.MALFORMED_FRAME}
