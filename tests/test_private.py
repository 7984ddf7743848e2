"""Integration and security tests of issue 3: private links between real
clients (greenchat.client.Client in greenlets, typing through a pipe), a
server in this process, and raw connections that try to get in."""

import time

import gevent
import pytest
from gevent import socket

from greenchat import texts
from greenchat.client import peer
from greenchat.codec import encode

from support import ServerFactory, User

USERS = ["alice", "bob", "carol", "dave"]


@pytest.fixture
def server(make_server):
    return make_server(USERS, timeout=30)


@pytest.fixture
def users(server):
    started = []

    def start(*names):
        made = [User(name, server.address) for name in names]
        started.extend(made)
        return made if len(made) > 1 else made[0]

    yield start
    for user in started:
        if not user.greenlet.dead:
            user.greenlet.kill()


def link(a, b):
    a.type(f"startprivate {b.name}")
    a.expect(texts.start_private(b.name))
    b.expect(texts.started_private_with_you(a.name))


def test_link_messages_both_ways_and_stop(users):
    alice, bob = users("alice", "bob")
    link(alice, bob)
    text = 'the "plans"  are\tsafe'
    alice.type(f"private bob {text}")
    bob.expect(f"alice(private): {text}")
    bob.type("private alice thanks")
    alice.expect("bob(private): thanks")
    bob.type("stopprivate alice")
    bob.expect(texts.private_stopped("alice"))
    alice.expect(texts.private_stopped("bob"))
    alice.type("private bob still there?")
    alice.expect(texts.private_not_enabled("bob"))
    bob.type("stopprivate alice")
    bob.expect(texts.private_not_enabled("alice"))
    # A new link can be made after a stop.
    link(bob, alice)
    bob.type("private alice again")
    alice.expect("bob(private): again")


def test_private_messages_never_pass_through_the_server(server, users, monkeypatch):
    seen = []
    original = server.chat.handle

    def spy(session, line):
        seen.append(line)
        return original(session, line)
    monkeypatch.setattr(server.chat, "handle", spy)
    alice, bob = users("alice", "bob")
    link(alice, bob)
    alice.type("private bob for your eyes only")
    bob.expect("alice(private): for your eyes only")
    assert seen == ["startprivate bob"]


def test_startprivate_errors(users):
    alice, bob = users("alice", "bob")
    alice.type("startprivate nobody")
    alice.expect(texts.INVALID_USER)
    alice.type("startprivate alice")
    alice.expect(texts.CANNOT_PRIVATE_SELF)
    alice.type("startprivate carol")
    alice.expect("Error. carol is offline")
    bob.type("block alice")
    bob.expect("alice is blocked")
    alice.type("startprivate bob")
    alice.expect("Error. bob has blocked you")
    bob.type("unblock alice")
    bob.expect("alice is unblocked")
    link(alice, bob)
    alice.type("startprivate bob")
    alice.expect("Error. Private messaging with bob is already active")
    bob.type("startprivate alice")
    bob.expect("Error. Private messaging with alice is already active")
    for line in ("private", "private bob", "stopprivate", "stopprivate bob now", "startprivate"):
        before = alice.screen.lines.count(texts.INVALID_COMMAND)
        alice.type(line)
        deadline = time.monotonic() + 5
        while alice.screen.lines.count(texts.INVALID_COMMAND) == before:
            assert time.monotonic() < deadline, line
            gevent.sleep(0.01)


def test_logout_of_either_side_ends_the_link(users):
    alice, bob, carol = users("alice", "bob", "carol")
    link(alice, bob)
    link(carol, bob)
    bob.type("logout")
    bob.expect(texts.GOODBYE)
    assert bob.greenlet.get(timeout=5) == 0
    alice.expect(texts.private_stopped("bob"))
    carol.expect(texts.private_stopped("bob"))
    alice.type("private bob hello?")
    alice.expect(texts.private_not_enabled("bob"))
    # End of input on the other side does the same.
    link(alice, carol)
    assert carol.quit() == 0
    alice.expect(texts.private_stopped("carol"))


def test_idle_timeout_ends_the_link(tmp_path):
    factory = ServerFactory(tmp_path)
    server = factory(USERS, timeout=1.0)
    try:
        alice = User("alice", server.address)
        bob = User("bob", server.address)
        link(alice, bob)
        for _ in range(6):              # alice stays active, bob does not
            gevent.sleep(0.3)
            alice.type("whoelse")
        bob.expect(texts.LOGGED_OUT_IDLE)
        assert bob.greenlet.get(timeout=5) == 0
        alice.expect(texts.private_stopped("bob"))
        alice.type("private bob x")
        alice.expect(texts.private_not_enabled("bob"))
    finally:
        factory.stop_all()


def test_a_block_closes_an_open_link_on_both_sides(users):
    alice, bob = users("alice", "bob")
    link(alice, bob)
    bob.type("block alice")
    bob.expect("alice is blocked")
    bob.expect(texts.private_stopped("alice"))
    alice.expect(texts.private_stopped("bob"))
    alice.type("private bob x")
    alice.expect(texts.private_not_enabled("bob"))


def test_three_clients_messages_go_to_the_right_peer(users):
    alice, bob, carol = users("alice", "bob", "carol")
    link(alice, bob)
    link(alice, carol)
    alice.type("private bob for bob")
    alice.type("private carol for carol")
    bob.expect("alice(private): for bob")
    carol.expect("alice(private): for carol")
    bob.settle()
    carol.settle()
    assert "alice(private): for carol" not in bob.screen.lines
    assert "alice(private): for bob" not in carol.screen.lines
    carol.type("stopprivate alice")
    alice.expect(texts.private_stopped("carol"))
    alice.type("private bob still linked")
    bob.expect("alice(private): still linked")


# Security ---------------------------------------------------------------------

@pytest.fixture
def quick_handshake(monkeypatch):
    monkeypatch.setattr(peer, "HANDSHAKE_TIMEOUT", 0.5)
    monkeypatch.setattr(peer, "OFFER_WAIT", 0.3)


def attempt(address, payload, wait=3):
    """Connect, send payload; True if the listener closed the connection."""
    sock = socket.create_connection(address, timeout=wait)
    try:
        if payload:
            sock.sendall(payload)
        with gevent.Timeout(wait, False):
            while sock.recv(4096):
                pass
            return True
        return False
    except OSError:
        return True
    finally:
        sock.close()


def hello(user, token):
    return encode({"type": "peer_hello", "version": 1, "user": user, "token": token})


def test_listener_refuses_everything_but_a_fresh_token(users, quick_handshake):
    alice, bob = users("alice", "bob")
    address = ("127.0.0.1", alice.client.listener.address[1])
    alice.expect(texts.presence_line("bob", True))
    before = list(alice.screen.lines)
    alice.client.listener.offer("bob", "genuine-token")
    alice.client.listener.offer("carol", "carols-token")
    cases = {
        "silence": b"",
        "no token": encode({"type": "peer_hello", "version": 1, "user": "bob"}),
        "wrong token": hello("bob", "guessed"),
        "token of another user": hello("bob", "carols-token"),
        "claimed as another user": hello("dave", "genuine-token"),
        "garbage": b"\xff\x00not json at all\n",
        "oversize": b"x" * 70_000,
        "not a hello": encode({"type": "private", "text": "let me in"}),
    }
    for name, payload in cases.items():
        assert attempt(address, payload), name
    # The genuine token still works once (it was not spent by the attempts
    # that named it under another user)...
    conn = peer.connect(*address, "bob", "genuine-token", 65536)
    conn.send({"type": "private", "text": "hello from the real bob"})
    alice.expect("bob(private): hello from the real bob")
    conn.close()
    alice.expect(texts.private_stopped("bob"))
    # ...and never again.
    assert attempt(address, hello("bob", "genuine-token"))
    shown = [line for line in alice.screen.lines if line not in before]
    assert shown == ["bob has started private messaging with you",
                     "bob(private): hello from the real bob",
                     texts.private_stopped("bob")]
    # The client still works: a real link and a server message.
    link(bob, alice)
    bob.type("private alice ok")
    alice.expect("bob(private): ok")
    bob.type("message alice via server")
    alice.expect("bob: via server")


def test_token_book():
    now = [0.0]
    book = peer.TokenBook(lifetime=60, clock=lambda: now[0])
    book.issue("bob", "t1")
    assert not book.redeem("carol", "t1")
    assert not book.redeem("bob", "t2")
    assert not book.redeem("bob", None)
    assert not book.redeem("bob", 12345)
    assert book.redeem("bob", "t1")
    assert not book.redeem("bob", "t1")             # one time only
    book.issue("bob", "t3")
    now[0] = 59.9
    assert book.redeem("bob", "t3")
    book.issue("bob", "t4")
    now[0] += 60
    assert not book.redeem("bob", "t4")             # expired
