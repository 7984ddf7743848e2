"""Long frames from the server (issue 11, item 15, the client's part).

A reply lists every user, so it can be far longer than the 64 KiB a peer may
send: the real client, against a fake server in this process, shows a
`whoelse` of 10,000 long names and stays connected, and only a frame over
16 MiB ends its session, as a lost connection, without a traceback.
"""

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
