"""Acknowledged delivery, the client's part: the real client, piped, against
a fake server in this process (support.FakeServer).

A message is shown once: one whose id is not above the highest shown, or
whose (sender, txn) was shown already, is dropped. What is shown is
acknowledged with cumulative `ack` frames, batched: at once on the 64th
message, else 100 ms after the first. Every command carries a transaction
id of its own. A `history` answer is shown one message a line, stamped in
local time, its malformed entries skipped.
"""

import os
import time

import gevent
import pytest

from greenchat import frames, texts
from greenchat.client import client as client_module
from greenchat.client.client import Client
from greenchat.client.console import Console
from greenchat.client.lineedit import Completer
from greenchat.config import ClientConfig

from support import Screen, User, wait_until

SENT_AT = 1795480000.5       # 2026-11-24 00:26:40.5 UTC


def message(msg_id, text, sender="yoda", txn=None):
    return frames.message(sender, text, msg_id=msg_id, sent_at=SENT_AT, txn=txn)


class Script:
    """A fake server that answers each command line with the frames
    `answers` gives it (nothing if none), then the reply `done LINE`, and
    records every frame the client sends, with the time it came."""

    def __init__(self, fake_server, answers, delay=None):
        self.answers = answers
        self.delay = delay or {}       # line -> seconds to wait before answering
        self.received = []             # (monotonic time, frame)
        self.answered_at = {}          # line -> when its answer went out
        self.address = fake_server(command=self._command, ack=self._ack)

    def _command(self, frame):
        self.received.append((time.monotonic(), frame))
        line = frame["line"]
        if line == "logout":
            return [frames.bye(frames.LOGOUT, texts.GOODBYE)]
        gevent.sleep(self.delay.get(line, 0))
        self.answered_at[line] = time.monotonic()
        return [*self.answers.get(line, []), frames.reply(frame["id"], [f"done {line}"])]

    def _ack(self, frame):
        self.received.append((time.monotonic(), frame))
        return []

    def acks(self):
        return [(t, f) for t, f in self.received if f["type"] == "ack"]

    def uptos(self):
        return [f["upto"] for _, f in self.acks()]

    def commands(self):
        return [f for _, f in self.received if f["type"] == "command"]


def hans(script):
    return User("hans", script.address, history=False)


def run(user, line):
    """Type `line` and wait for its reply."""
    user.type(line)
    user.expect(f"done {line}")


def after_welcome(user):
    lines = user.screen.lines
    return lines[lines.index(texts.WELCOME) + 1:]


# Duplicates -------------------------------------------------------------------

def test_a_message_whose_id_is_not_above_the_last_shown_is_dropped(fake_server):
    script = Script(fake_server, {
        "go": [message(1, "one"), message(2, "two"), message(2, "two again"),
               message(1, "one again"), frames.message("yoda", "no id"),
               frames.message("yoda", "no id"), message(3, "three")],
        "again": [message(3, "three again"), message(4, "four")],
    })
    user = hans(script)
    run(user, "go")
    run(user, "again")
    assert after_welcome(user) == ["yoda: one", "yoda: two", "yoda: no id", "yoda: no id",
                                   "yoda: three", "done go", "yoda: four", "done again"]
    assert user.client.last_id == 4
    assert user.quit() == 0


def test_a_message_whose_sender_and_txn_were_shown_is_dropped(fake_server):
    script = Script(fake_server, {
        "go": [message(1, "a", txn="t1"), message(2, "a resent", txn="t1"),
               message(3, "b", sender="luke", txn="t1"), message(4, "c", txn="t2"),
               frames.message("yoda", "c resent", txn="t2"),
               # A txn that is no string counts as none.
               {**message(5, "d"), "txn": 5}, {**message(6, "d"), "txn": 5}],
    })
    user = hans(script)
    run(user, "go")
    assert after_welcome(user) == ["yoda: a", "luke: b", "yoda: c", "yoda: d", "yoda: d",
                                   "done go"]
    assert user.client.last_id == 6
    assert ("yoda", "t1") in user.client.shown_txns
    assert user.quit() == 0


def test_the_record_of_txns_shown_is_bounded(fake_server, monkeypatch):
    monkeypatch.setattr(client_module, "TXN_MEMORY", 2)
    script = Script(fake_server, {
        "go": [message(1, "a", txn="t1"), message(2, "b", txn="t2"), message(3, "c", txn="t3"),
               message(4, "a again", txn="t1"), message(5, "c again", txn="t3")],
    })
    user = hans(script)
    run(user, "go")
    # t1 was forgotten when t3 came; t3 is still remembered.
    assert after_welcome(user) == ["yoda: a", "yoda: b", "yoda: c", "yoda: a again", "done go"]
    assert len(user.client.shown_txns) == 2
    assert user.quit() == 0


# Acknowledgements -------------------------------------------------------------

def test_the_64th_message_is_acknowledged_at_once_for_all(fake_server, monkeypatch):
    monkeypatch.setattr(client_module, "ACK_DELAY", 30.0)     # only the count can send it
    script = Script(fake_server, {"go": [message(100 + i, f"m{i}") for i in range(1, 65)]})
    user = hans(script)
    run(user, "go")
    wait_until(script.acks, lambda: f"no ack: {script.received}")
    gevent.sleep(0.3)
    assert script.uptos() == [164]
    assert script.acks()[0][0] - script.answered_at["go"] < 5
    assert user.quit() == 0


def test_one_message_is_acknowledged_about_100_ms_later(fake_server):
    script = Script(fake_server, {"go": [message(7, "hello")]})
    user = hans(script)
    run(user, "go")
    wait_until(script.acks, lambda: f"no ack: {script.received}")
    waited = script.acks()[0][0] - script.answered_at["go"]
    assert client_module.ACK_DELAY <= waited < 0.6, waited
    assert script.uptos() == [7]
    assert user.quit() == 0


def test_a_burst_is_acknowledged_once(fake_server):
    script = Script(fake_server, {"go": [message(i, f"m{i}") for i in range(1, 11)]})
    user = hans(script)
    run(user, "go")
    wait_until(script.acks, lambda: f"no ack: {script.received}")
    gevent.sleep(0.4)
    assert len(script.uptos()) <= 2 and script.uptos()[-1] == 10, script.uptos()
    assert user.quit() == 0


def test_messages_without_an_id_are_not_acknowledged_and_duplicates_are(fake_server):
    script = Script(fake_server, {
        "plain": [frames.message("yoda", f"no id {i}") for i in range(3)],
        "first": [message(5, "five")],
        "resent": [message(5, "five again"), message(3, "three again")],
    })
    user = hans(script)
    run(user, "plain")
    gevent.sleep(0.3)
    assert script.acks() == []
    run(user, "first")
    wait_until(script.acks, lambda: f"no ack: {script.received}")
    # The server sent them again: it missed the ack, which goes again.
    run(user, "resent")
    wait_until(lambda: len(script.acks()) == 2, lambda: script.uptos())
    assert script.uptos() == [5, 5]
    assert [line for line in user.screen.lines if line.startswith("yoda: five")] == ["yoda: five"]
    assert user.quit() == 0


def test_logging_out_acknowledges_what_was_shown_first(fake_server, monkeypatch):
    monkeypatch.setattr(client_module, "ACK_DELAY", 30.0)
    script = Script(fake_server, {"go": [message(9, "last words")]})
    user = hans(script)
    run(user, "go")
    assert script.acks() == []
    assert user.quit() == 0
    kinds = [(f["type"], f.get("upto", f.get("line"))) for _, f in script.received]
    assert kinds[-2:] == [("ack", 9), ("command", "logout")]


def test_no_ack_timer_outlives_the_session(fake_server):
    script = Script(fake_server, {"go": [message(1, "bye now"),
                                         frames.bye(frames.SHUTDOWN, "going down")]})
    user = hans(script)
    user.type("go")
    assert user.greenlet.get(timeout=5) == 1
    assert "yoda: bye now" in user.screen.lines
    assert len(user.client._ackers) == 0
    user.quit()


# Transaction ids --------------------------------------------------------------

def test_every_command_carries_a_txn_of_its_own(fake_server):
    script = Script(fake_server, {}, delay={"slow": 0.5})
    user = hans(script)
    for line in ("whoelse", "history yoda", "no such command"):
        run(user, line)
    user.type("slow")
    wait_until(lambda: len(script.commands()) == 4, lambda: script.commands())
    slow = script.commands()[-1]
    assert (user.client.awaited_txn, user.client.awaited_line) == (slow["txn"], "slow")
    user.expect("done slow")
    assert user.client.awaited_txn is None
    other = hans(script)
    run(other, "whoelse")
    assert user.quit() == 0 and other.quit() == 0
    txns = [frame.get("txn") for frame in script.commands()]
    assert all(isinstance(txn, str) and 0 < len(txn) <= frames.MAX_TXN for txn in txns), txns
    assert len(set(txns)) == len(txns) == 7      # hans: 4 and logout; the other: 1 and logout
    assert not any(frame.get("retry") for frame in script.commands())
    # The other process counts from 1 again: its prefix tells them apart.
    prefixes = {txn.rsplit(".", 1)[0] for txn in txns}
    assert len(prefixes) == 2


# history ----------------------------------------------------------------------

@pytest.fixture
def india_time():
    """Local time 5:30 ahead of UTC, so UTC cannot pass for it."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


def history_reply(frame, entries):
    return frames.reply(frame["id"], [], extra={"history": entries})


def history_server(fake_server, entries):
    def command(frame):
        if frame["line"] == "logout":
            return [frames.bye(frames.LOGOUT, texts.GOODBYE)]
        if frame["line"] == "history yoda":
            return [history_reply(frame, entries)]
        return [frames.reply(frame["id"], ["done"])]
    return fake_server(command=command)


def test_history_is_shown_in_local_time_and_escaped(fake_server, india_time):
    entries = [frames.history_entry(1, "yoda", "hans", "first", SENT_AT),
               frames.history_entry(2, "hans", "yoda", "a\x1b[2Jb", 1795490000),
               frames.history_entry(3, "yoda", "hans", "last", SENT_AT + 86400)]
    user = User("hans", history_server(fake_server, entries), history=False)
    user.type("history yoda")
    user.type("whoelse")
    user.expect("done")
    assert after_welcome(user) == ["[2026-11-24 05:56] yoda: first",
                                   "[2026-11-24 08:43] hans: a^[[2Jb",
                                   "[2026-11-25 05:56] yoda: last", "done"]
    assert user.quit() == 0


def test_malformed_history_entries_are_skipped(fake_server, india_time):
    good = frames.history_entry(1, "yoda", "hans", "good", SENT_AT)
    entries = ["junk", 5, None, [good], {**good, "from": 5}, {**good, "text": ["x"]},
               {**good, "sent_at": "1795480000"}, {**good, "sent_at": True},
               {**good, "sent_at": None}, {**good, "sent_at": 1e300},
               {k: v for k, v in good.items() if k != "from"},
               {**good, "text": "still good", "to": ["hans"], "id": "x"}, good]
    user = User("hans", history_server(fake_server, entries), history=False)
    user.type("history yoda")
    user.type("whoelse")
    user.expect("done")
    assert after_welcome(user) == ["[2026-11-24 05:56] yoda: still good",
                                   "[2026-11-24 05:56] yoda: good", "done"]
    assert user.quit() == 0


@pytest.mark.parametrize("history", [{"a": 1}, "x", 5])
def test_a_history_member_that_is_no_list_shows_nothing(fake_server, history):
    user = User("hans", history_server(fake_server, history), history=False)
    user.type("history yoda")
    user.type("whoelse")
    user.expect("done")
    assert after_welcome(user) == ["done"]
    assert user.quit() == 0


def test_no_history_and_errors_are_plain_lines(fake_server):
    def command(frame):
        if frame["line"] == "logout":
            return [frames.bye(frames.LOGOUT, texts.GOODBYE)]
        if frame["line"] == "history yoda":
            return [frames.reply(frame["id"], [texts.no_history("yoda")])]
        return [frames.failure(frame["id"], texts.INVALID_USER)]
    user = User("hans", fake_server(command=command), history=False)
    user.type("history yoda")
    user.expect(texts.no_history("yoda"))
    user.type("history nobody")
    user.expect(texts.INVALID_USER)
    assert after_welcome(user) == ["No messages with yoda", texts.INVALID_USER]
    assert user.quit() == 0


class NoLinks:
    def names(self):
        return set()


def test_tab_completes_a_user_name_after_history_and_nothing_after_that():
    names = Completer(NoLinks())
    names.me = "hans"
    for name in ("yoda", "hans"):
        names.saw(name)
    assert "history" in names([])
    assert names(["history"]) == {"yoda"}
    assert names(["history", "yoda"]) == ()
    assert names(["history", "yoda", "5"]) == ()


def test_help_lists_history_in_line_with_the_rest():
    screen = Screen()
    client = Client(ClientConfig(host="127.0.0.1", port=1),
                    Console(os.open(os.devnull, os.O_RDONLY), screen))
    client.cmd_help()
    shown = [line for line in screen.lines if line.startswith("history ")]
    assert len(shown) == 1 and shown[0].startswith("history USER [N]  ")
    assert shown[0].endswith("show your last N messages with USER (default 20, at most 500)")
    columns = {len(line) - len(line.split("  ")[-1].lstrip()) for line in screen.lines}
    assert len(columns) == 1, screen.lines


@pytest.mark.parametrize("text, named", [
    ("hans, look", True), ("hi hans", True), ("(hans)", True), ("hans!", True),
    ("chansons", False), ("hansel", False), ("johans", False), ("HANS", False),
])
def test_a_mention_is_a_whole_word(text, named):
    from greenchat.client.client import _mentions
    assert _mentions(text, "hans") is named
