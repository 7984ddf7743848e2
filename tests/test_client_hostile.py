"""No frame from the server, or from a peer on a private link, can crash or
hang the client.

A fake server in this process logs the real client in (docs/protocol.md cut
to what the client needs) and then, one case at a time, sends a frame whose
members have the wrong type; the client's rule (greenchat/client.py's
docstring) decides the outcome: it either goes on (a normal message and the
reply that follow the hostile frame are shown, and it logs out with exit 0)
or ends as a lost connection (`Connection to server lost` once, exit 1).
Never a traceback, never a hang: every wait is bounded. A hostile peer does
the same on a private link, in both directions. Last, bugs are injected
where no frame could reach: the session still ends cleanly.
"""

import logging

import gevent
import pytest
from gevent import socket

from greenchat import frames, texts
from greenchat.client import client as client_module
from greenchat.client import peer
from greenchat.client.console import Console
from greenchat.transport import FrameConnection

from support import User, normal_answer, wait_until, welcome

GOES_ON, LOST = "goes on", "lost"
STILL_HERE = frames.message("yoda", "still here")
TOKEN = "a-one-time-token"


def reply(frame, lines, **extra):
    return frames.reply(frame["id"], lines, extra=extra)


class Hans(User):
    """hans's client (support.User), without assuming the login succeeds."""

    def __init__(self, address):
        super().__init__("hans", address, welcome=False, history=False)

    def wait_for_link(self, timeout=5):
        wait_until(lambda: self.client.listener is not None
                   and texts.WELCOME in self.screen.lines, lambda: self.screen.lines, timeout)

    def outcome(self, timeout=5):
        """GOES_ON once the message and reply after the hostile frame are
        shown, LOST once the client has ended; a hang fails."""
        def seen():
            if self.greenlet.dead:
                return LOST
            lines = self.screen.lines
            if "yoda: still here" in lines and "done" in lines:
                return GOES_ON
            return None

        return wait_until(seen, lambda: f"the client hung: {self.screen.lines[-10:]}", timeout)


@pytest.fixture
def clean(capfd, caplog):
    """After the test: no traceback printed, none logged."""
    caplog.set_level(logging.DEBUG, logger="greenchat")
    yield
    assert "Traceback" not in capfd.readouterr().err
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


def shown_between(lines, first, last):
    """The lines after `first` and before `last`."""
    start = lines.index(first) + 1
    return lines[start:lines.index(last, start)]


# Frames with members of the wrong type, after login -----------------------------

# Sent in answer to the first command (`whoelse`, id 1), before the message
# STILL_HERE and the reply `done`; with what the client shows of it.
AFTER_LOGIN = {
    "reply lines an int": ({"type": "reply", "id": 1, "ok": True, "lines": 5}, []),
    "reply lines a dict": ({"type": "reply", "id": 1, "ok": True, "lines": {"a": 1}}, []),
    "reply lines a list of dicts": (
        {"type": "reply", "id": 1, "ok": True, "lines": ["yoda", {"a": 1}, 7, None, "luke"]},
        ["yoda", "luke"]),
    "reply id a list": ({"type": "reply", "id": [1], "ok": True, "lines": ["x"]}, ["x"]),
    "reply id a string": ({"type": "reply", "id": "1", "ok": True, "lines": ["x"]}, ["x"]),
    "reply private with members of the wrong type": (
        {"type": "reply", "id": 1, "ok": True, "lines": [],
         "private": {"user": "yoda", "host": 5, "port": "x", "token": 7}},
        [texts.private_connect_failed("yoda")]),
    "reply private naming no host": (
        {"type": "reply", "id": 1, "ok": True, "lines": [],
         "private": {"user": "yoda", "host": "a..b", "port": 1, "token": "t"}},
        [texts.private_connect_failed("yoda")]),
    "reply private with a port out of range": (
        {"type": "reply", "id": 1, "ok": True, "lines": [],
         "private": {"user": "yoda", "host": "127.0.0.1", "port": 70000, "token": "t"}},
        [texts.private_connect_failed("yoda")]),
    "reply private with user a list": (
        {"type": "reply", "id": 1, "ok": True, "lines": [],
         "private": {"user": ["yoda"], "host": "127.0.0.1", "port": 1, "token": "t"}}, []),
    "message from a list and text an int": (
        {"type": "message", "from": ["yoda"], "text": 5}, []),
    "message text a dict": ({"type": "message", "from": "yoda", "text": {"a": 1}}, []),
    "message from a dict": ({"type": "message", "from": {"a": 1}, "text": "hi"}, ["?: hi"]),
    "presence user null": ({"type": "presence", "user": None, "online": True}, []),
    "presence online a string": ({"type": "presence", "user": "yoda", "online": "yes"}, []),
    "private_offer token an int": ({"type": "private_offer", "from": "yoda", "token": 5}, []),
    "private_offer from a list": ({"type": "private_offer", "from": ["y"], "token": "t"}, []),
    "private_stop user a list": ({"type": "private_stop", "user": ["yoda"]}, []),
    "an unknown frame type": ({"type": "dance", "text": 5, "lines": 7}, []),
    "a message of 1 MB": (frames.message("yoda", "x" * 1_000_000), ["yoda: " + "x" * 1_000_000]),
    "bye text a dict": ({"type": "bye", "reason": "logout", "text": {"a": 1}}, LOST),
    "bye reason a list": ({"type": "bye", "reason": ["logout"], "text": "Goodbye"}, LOST),
    "error text a list": ({"type": "error", "text": ["Error. x"]}, LOST),
}


@pytest.mark.parametrize("case", AFTER_LOGIN)
def test_a_frame_with_members_of_the_wrong_type(fake_server, clean, case):
    hostile, expected = AFTER_LOGIN[case]
    first = []

    def command(frame):
        if first:
            return normal_answer(frame)
        first.append(frame)
        return [hostile, STILL_HERE, reply(frame, ["done"])]

    hans = Hans(fake_server(command=command))
    hans.expect(texts.WELCOME)
    hans.type("whoelse")
    if expected is LOST:
        assert hans.outcome() == LOST
        assert hans.screen.lines.count(texts.CONNECTION_LOST) == 1, hans.screen.lines
        assert hans.quit() == 1
        return
    assert hans.outcome() == GOES_ON
    assert shown_between(hans.screen.lines, texts.WELCOME, "yoda: still here") == expected
    assert texts.CONNECTION_LOST not in hans.screen.lines
    # The keyboard was answered: the next command goes out and is answered too.
    hans.type("whoelse")
    wait_until(lambda: hans.screen.lines.count("done") >= 2, lambda: hans.screen.lines[-5:])
    assert hans.quit() == 0


# ...and during the handshake and login --------------------------------------------

DURING_LOGIN = {
    "hello of another version": ("hello", {"type": "hello", "version": 2}),
    "hello version a string": ("hello", {"type": "hello", "version": "1"}),
    "hello version true": ("hello", {"type": "hello", "version": True}),
    "login status a list": ("username", {"type": "login", "status": ["password"]}),
    "login status unknown": ("username", {"type": "login", "status": "maybe"}),
    "login without a status": ("password", {"type": "login", "text": "hmm"}),
    "login text a dict": ("username", {"type": "login", "status": "username", "text": {}}),
    "login ok with user a list": ("password", {"type": "login", "status": "ok",
                                               "user": ["hans"], "text": texts.WELCOME}),
    "error text a list": ("username", {"type": "error", "text": ["Error. x"]}),
    "a message instead of the login's answer": ("username", STILL_HERE),
    "a reply instead of hello": ("hello", {"type": "reply", "id": 1, "lines": []}),
}


@pytest.mark.parametrize("case", DURING_LOGIN)
def test_a_wrong_frame_during_login_is_a_lost_connection(fake_server, clean, case):
    step, hostile = DURING_LOGIN[case]
    hans = Hans(fake_server(**{step: lambda frame: [hostile, STILL_HERE]}))
    assert hans.outcome() == LOST
    assert hans.screen.lines.count(texts.CONNECTION_LOST) == 1, hans.screen.lines
    assert texts.WELCOME not in hans.screen.lines
    assert hans.quit() == 1


# A hostile peer on a private link ---------------------------------------------------

PEER_FRAMES = {
    "private text an int": {"type": "private", "text": 5},
    "private text a dict": {"type": "private", "text": {"a": 1}},
    "private text a list": {"type": "private", "text": ["hi"]},
    "private text null": {"type": "private", "text": None},
    "private without text": {"type": "private"},
    "an unknown frame type": {"type": "dance", "text": 5},
    "a second hello": {"type": "peer_hello", "version": 1, "user": ["x"], "token": 5},
    "stop with junk": None,     # a `stop` whose members are junk still stops
}


def link_offer(address):
    """Answers `startprivate vader` with a link to `address`."""
    def command(frame):
        if frame["line"] == "startprivate vader":
            return [reply(frame, [], private={"user": "vader", "host": address[0],
                                              "port": address[1], "token": TOKEN})]
        return normal_answer(frame)
    return command


@pytest.mark.parametrize("direction", ["accepted", "opened"])
@pytest.mark.parametrize("case", PEER_FRAMES)
def test_a_hostile_peer_on_a_private_link(fake_server, clean, case, direction):
    if direction == "accepted":
        # The server introduces vader, who connects to hans's listener.
        hans = Hans(fake_server(password=lambda frame: [
            welcome(), frames.private_offer("vader", TOKEN)]))
        hans.wait_for_link()
        conn = peer.connect("127.0.0.1", hans.client.listener.address[1], "vader", TOKEN, 65536)
        hans.expect(texts.started_private_with_you("vader"))
    else:
        # Hans asks for the link and connects to vader.
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        hans = Hans(fake_server(command=link_offer(listening.getsockname())))
        hans.expect(texts.WELCOME)
        hans.type("startprivate vader")
        with gevent.Timeout(5):
            sock, _ = listening.accept()
        listening.close()
        conn = FrameConnection(sock, 65536)
        hello = conn.read(5)
        assert hello["type"] == "peer_hello" and hello["token"] == TOKEN
        conn.send(frames.peer_ok("vader"))
        hans.expect(texts.start_private("vader"))
    try:
        hostile = PEER_FRAMES[case]
        if hostile is None:
            conn.send({"type": "stop", "text": {"a": 1}, "user": 5})
            hans.expect(texts.private_stopped("vader"))
        else:
            conn.send(hostile)
            conn.send(frames.private("still linked"))
            hans.expect("vader(private): still linked")
            hans.type("private vader back")
            assert conn.read(5) == {"type": "private", "text": "back"}
            conn.send(frames.stop())
            hans.expect(texts.private_stopped("vader"))
    finally:
        conn.close()
    shown = [line for line in hans.screen.lines if "vader" in line]
    assert shown.count(texts.private_stopped("vader")) == 1, shown
    # The session with the server goes on.
    hans.type("whoelse")
    hans.expect("done")
    assert texts.CONNECTION_LOST not in hans.screen.lines
    assert hans.quit() == 0


# Bugs: the last line of defence ----------------------------------------------------

def boom(*_args, **_kwargs):
    raise RuntimeError("a bug")


@pytest.mark.parametrize("where", ["login", "receive", "keyboard", "link"])
def test_an_unexpected_exception_ends_the_session_cleanly(fake_server, capfd, caplog,
                                                          monkeypatch, where):
    caplog.set_level(logging.DEBUG, logger="greenchat")
    if where == "login":
        monkeypatch.setattr(Console, "read_secret", boom)
    address = fake_server(
        password=lambda frame: [welcome(), frames.private_offer("vader", TOKEN)],
        command=lambda frame: [STILL_HERE, reply(frame, ["done"])])
    hans = Hans(address)
    restored = []
    if where != "login":
        hans.wait_for_link()
        stop_editing = hans.console.stop_editing
        hans.console.stop_editing = lambda: (restored.append(True), stop_editing())
    if where == "receive":
        monkeypatch.setattr(texts, "message_line", boom)
        hans.type("whoelse")
    elif where == "keyboard":
        monkeypatch.setattr(client_module, "parse_line", boom)
        hans.type("whoelse")
    elif where == "link":
        monkeypatch.setattr(texts, "private_line", boom)
        conn = peer.connect("127.0.0.1", hans.client.listener.address[1], "vader", TOKEN, 65536)
        conn.send(frames.private("hi"))
    assert hans.greenlet.get(timeout=10) == 1
    assert hans.screen.lines.count(texts.CONNECTION_LOST) == 1, hans.screen.lines
    if where != "login":
        assert restored == [True]          # the terminal is given back
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and "a bug" in str(logged[0].exc_info[1]), logged
    # No greenlet died with it: the hub printed nothing.
    assert "Traceback" not in capfd.readouterr().err
    hans.quit()
