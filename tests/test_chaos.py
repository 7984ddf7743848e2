"""Chaos (bench/chaosclient.py): 50 clients in this process send direct
messages and broadcasts, each command with its txn, while the server, a
process, is killed (kill -9) and restarted every 2-4 s and random clients'
connections are reset between kills. Each client reconnects by itself
(resume, or its password when that is refused) and sends the command
awaiting its reply again, same txn. At the end every client drains what is
waiting for it, and the checker proves from what each one showed: every
message answered ok shown exactly once to its recipient, every broadcast
answered ok shown once to every user whose session never ended, nothing
shown that was not sent or shown twice, each sender's order kept, and no
retry run twice (one row per txn in the log). About 40 s."""

import json

from bench.chaosclient import ChaosClient, Command, check, run_chaos

USERS = 50
SECONDS = 25.0
SEED = 20240611


def test_nothing_accepted_is_lost_or_shown_twice_through_kills_and_resets(tmp_path):
    summary = run_chaos(str(tmp_path), users=USERS, seconds=SECONDS, seed=SEED)
    problems = summary.pop("problems")
    print(json.dumps(summary, indent=1))
    assert not problems, f"{len(problems)} problem(s), first: " + "\n".join(problems[:5])
    assert summary["kills"] >= 3, f"only {summary['kills']} kills"
    assert summary["accepted"] > 100 and summary["deliveries_required"] > 1000
    assert summary["continuous_users"] >= 5       # the steady ones at least


def _sent(client, kind, target=None, ok=True, at=1.0):
    """A command `client` sent at `at`, answered `ok` (None: no answer)."""
    client.seq += 1
    command = Command(client.name, client.seq, kind, target)
    command.first_sent, command.ok, command.tries = at, ok, 1
    client.commands.append(command)
    return command


def _show(client, command, mid):
    client.shown.append((2.0, mid, command.sender, command.text, command.txn,
                         command.kind == "broadcast"))


def test_the_checker_finds_each_kind_of_failure():
    a, b, c = (ChaosClient(name, None, [], None) for name in ("a", "b", "c"))
    for client in (a, b, c):
        client.logins, client.drained = [(0.0, "password")], True
    c.logins.append((1.5, "expired"))      # c's session may have ended: no broadcast is owed
    clients = [a, b, c]
    m1, m2, lost = (_sent(a, "message", "b") for _ in range(3))
    unanswered = _sent(a, "message", "c", ok=None)
    shown_twice = _sent(b, "message", "a")
    bcast, late = _sent(a, "broadcast"), _sent(b, "broadcast")
    _show(b, m2, 1)
    _show(b, m1, 2)                        # a's order broken at b
    _show(b, bcast, 3)
    _show(a, shown_twice, 4)
    _show(a, shown_twice, 5)
    a.shown.append((2.0, 6, "b", "b#99", "b.99", False))      # never sent
    _show(c, unanswered, 7)                                     # once: fine
    rows = {(cmd.sender, cmd.txn): 1 for client in clients for cmd in client.commands}
    rows[("a", m1.txn)] = 2
    del rows[("b", late.txn)]
    problems, figures = check(clients, rows)
    assert sorted(problems) == sorted([
        "b was shown 'a#1' after a#2",
        "a was shown 'b#1' twice",
        "a was shown 'b#99' from b, never sent",
        "a#3, accepted, never shown to b",
        "b#2 was answered ok and is not in the log",
        "broadcast b#2, accepted, never shown to a",
        "a's txn a.1 is 2 rows of the log: a retry ran again",
    ]), problems
    assert figures["continuous_users"] == 2 and figures["unanswered"] == 1
    assert figures["accepted"] == 6
