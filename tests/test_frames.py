"""Unit tests of frames.py: what the builders write and the readers accept."""

import pytest

from greenchat import frames
from greenchat.codec import encode, parse
from greenchat.errors import MalformedFrame


def test_builders_write_the_frames_of_the_protocol():
    assert frames.message("yoda", "hi") == {"type": "message", "from": "yoda", "text": "hi"}
    assert frames.message("yoda", "hi", broadcast=True)["broadcast"] is True
    stored = frames.message("yoda", "hi", 12, 5.0, "t.1", offline=True)
    assert stored == {"type": "message", "id": 12, "from": "yoda", "text": "hi",
                      "sent_at": 5.0, "txn": "t.1", "offline": True}
    # The server's encoding starts with the id: the load generator reads it there.
    assert encode(frames.message("yoda", "hi", 12, 5.0)).startswith(
        b'{"type":"message","id":12,')
    assert frames.ack(9) == {"type": "ack", "upto": 9}
    assert frames.command(3, "whoelse", "t.2", retry=True) == \
        {"type": "command", "id": 3, "line": "whoelse", "txn": "t.2", "retry": True}
    assert frames.command(3, "whoelse") == {"type": "command", "id": 3, "line": "whoelse"}
    assert frames.login(frames.ASK_PASSWORD) == {"type": "login", "status": "password"}
    assert frames.reply(7, ["a"], extra={"private": {"x": 1}}) == \
        {"type": "reply", "id": 7, "ok": True, "lines": ["a"], "private": {"x": 1}}
    assert frames.failure(7, "Error. X") == {"type": "reply", "id": 7, "ok": False,
                                             "lines": ["Error. X"]}
    assert frames.password("pw") == {"type": "password", "password": "pw"}
    assert frames.password("pw", "h", 4444, "f" * 64)["p2p"] == \
        {"host": "h", "port": 4444, "fingerprint": "f" * 64}
    for frame in (frames.hello("c"), frames.bye(frames.LOGOUT, "Goodbye"), frames.stop()):
        assert parse(encode(frame)[:-1]) == frame       # round trip through the codec


@pytest.mark.parametrize("version,ok", [(1, True), (2, False), (True, False), (1.0, False),
                                        ("1", False), (None, False)])
def test_only_the_integer_version_is_ours(version, ok):
    assert frames.speaks_our_version({"type": "hello", "version": version}) is ok


def test_readers_check_member_types():
    assert frames.string({"type": "command", "line": "x"}, "line") == "x"
    with pytest.raises(MalformedFrame):
        frames.string({"type": "command", "line": 5}, "line")
    assert frames.p2p_port({"type": "password"}) is None
    assert frames.p2p_port({"type": "password", "p2p": {"host": "evil", "port": 80}}) == \
        (80, None)
    for bad in ({"port": 0}, {"port": True}, {"port": "80"}, [], {"port": 80, "fingerprint": 1},
                {"port": 80, "fingerprint": "abc"}):
        with pytest.raises(MalformedFrame):
            frames.p2p_port({"type": "password", "p2p": bad})


@pytest.mark.parametrize("upto", [-1, 1.5, True, "3", None])
def test_an_ack_needs_a_non_negative_integer(upto):
    with pytest.raises(MalformedFrame):
        frames.ack_upto({"type": "ack", "upto": upto})


def test_an_ack_reads_its_id():
    assert frames.ack_upto(frames.ack(0)) == 0
    assert frames.ack_upto(frames.ack(2 ** 40)) == 2 ** 40


@pytest.mark.parametrize("txn", ["", "x" * (frames.MAX_TXN + 1), 5, ["a"]])
def test_a_command_txn_is_a_short_string(txn):
    with pytest.raises(MalformedFrame):
        frames.command_txn({"type": "command", "txn": txn})


def test_a_command_txn_and_its_retry_flag():
    assert frames.command_txn(frames.command(1, "x")) == (None, False)
    assert frames.command_txn(frames.command(1, "x", "a.1")) == ("a.1", False)
    assert frames.command_txn(frames.command(1, "x", "a.1", retry=True)) == ("a.1", True)
    # Only true is a retry.
    assert frames.command_txn({"type": "command", "txn": "a", "retry": 1}) == ("a", False)
