"""Commands from the client: the real client, piped, against a fake server
in this process (support.FakeServer). Every command carries a transaction id
of its own.
"""

import time

import gevent

from greenchat import frames, texts

from support import User, wait_until

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
