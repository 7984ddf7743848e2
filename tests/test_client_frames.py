"""Long frames from the server (issue 11, item 15, the client's part).

A reply lists every user, so it can be far longer than the 64 KiB a peer may
send: the real client, against a fake server in this process, shows a
`whoelse` of 10,000 long names and stays connected, and only a frame over
16 MiB ends its session, as a lost connection, without a traceback.
"""

import json

import gevent

from greenchat import frames, texts
from greenchat.client import client
from greenchat.codec import DEFAULT_MAX_FRAME, encode

from support import User, answer_commands

NAMES = [f"user{i:05d}-a-long-name" for i in range(10_000)]


def reply(frame, lines):
    return encode(frames.reply(frame["id"], lines))


def test_a_whoelse_of_10000_long_names_is_shown_and_the_session_goes_on(fake_server, capfd):
    whoelse = reply({"id": 1}, NAMES)
    assert len(whoelse) > 3 * DEFAULT_MAX_FRAME

    def answer(frame):
        return reply(frame, NAMES if frame["line"] == "whoelse" else ["still here"])

    hans = User("hans", fake_server(command=answer_commands(lambda frame: [answer(frame)])))
    # Peer links keep the configured cap.
    assert hans.client.listener.max_frame == DEFAULT_MAX_FRAME
    hans.type("whoelse")
    hans.expect(NAMES[-1], timeout=10)
    at = hans.screen.lines.index(NAMES[0])
    assert hans.screen.lines[at:at + len(NAMES)] == NAMES
    hans.type("ping")
    hans.expect("still here")
    assert texts.CONNECTION_LOST not in hans.screen.lines
    assert hans.quit() == 0
    assert "Traceback" not in capfd.readouterr().err


def test_a_frame_over_16_mib_ends_the_session_quietly(fake_server, capfd):
    huge = encode(frames.reply(1, ["x" * client.SERVER_MAX_FRAME]))
    hans = User("hans", fake_server(command=answer_commands(lambda frame: [huge])))
    hans.type("whoelse")
    hans.expect(texts.CONNECTION_LOST, timeout=10)
    assert hans.greenlet.get(timeout=10) == 1
    assert hans.quit() == 1
    assert "Traceback" not in capfd.readouterr().err + hans.screen.text


# Commands too long for the server (issue 14, item 2) ---------------------------

def next_frame_size(user, line):
    """What the server would count for `line` as hans's next command, resent
    after a reconnect (the largest it can be): bytes without the newline."""
    client_ = user.client
    frame = frames.command(client_._next_id + 1, line, retry=True,
                           txn=f"{client_._txn_prefix}.{client_._txn_count + 1}")
    return len(json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode())


def test_a_command_too_long_for_the_server_is_refused_and_the_session_goes_on(make_server):
    server = make_server(["alice", "bob"], max_frame=2048)
    alice, bob = User("alice", server.address), User("bob", server.address)
    # Bytes count, not characters: 1,100 é are 2,200 bytes.
    long_line = "message bob " + "é" * 1100
    size = next_frame_size(alice, long_line)
    assert size > 2048 > len(long_line)
    alice.type(long_line)
    alice.expect(f"Error. Message too long ({size} bytes, at most 2048)")
    # At the limit exactly (counted as resent, the largest it can be), it goes.
    fitting = "message bob " + "x" * (1100 - (next_frame_size(alice, "message bob " + "x" * 1100)
                                             - 2048))
    assert next_frame_size(alice, fitting) == 2048
    alice.type(fitting)
    bob.expect("alice: " + fitting[len("message bob "):])
    one_more = fitting + "x"
    size = next_frame_size(alice, one_more)
    alice.type(one_more)
    alice.expect(f"Error. Message too long ({size} bytes, at most 2048)")
    alice.type("message bob still here")
    bob.expect("alice: still here")
    refusals = [line for line in alice.screen.lines if line.startswith("Error.")]
    assert len(refusals) == 2 and texts.CONNECTION_LOST not in alice.screen.lines
    assert alice.quit() == 0 and bob.quit() == 0


def test_without_max_frame_in_hello_the_limit_is_64_kib(fake_server):
    hans = User("hans", fake_server())
    line = "message yoda " + "x" * DEFAULT_MAX_FRAME
    size = next_frame_size(hans, line)
    # More than a pipe holds: written from a thread while the client reads.
    gevent.get_hub().threadpool.spawn(hans.type, line).get(timeout=10)
    hans.expect(f"Error. Message too long ({size} bytes, at most 65536)")
    hans.type("whoelse")
    hans.expect("done")
    assert hans.quit() == 0


def test_a_hello_with_a_bad_max_frame_ends_the_session(fake_server):
    bad = dict(frames.server_hello("fake"), max_frame="64k")
    hans = User("hans", fake_server(hello=lambda frame: [bad]), welcome=False)
    hans.expect(texts.CONNECTION_LOST)
    assert hans.quit() == 1
