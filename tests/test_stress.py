"""Concurrency stress tests: many client greenlets over real sockets against a
server in this process, each scenario under an overall timeout, with a checker
that proves from what every client received that nothing was lost,
duplicated, reordered or delivered across a block.

Sizes default to what the issue asks (500 clients); GREENCHAT_STRESS_SCALE
(a float, default 1) scales them for a quicker local run or a heavier soak.

The gevent hub monitor runs throughout (max blocking time 0.1 s); every test
asserts that it never reported the event loop blocked.
"""

import gc
import os
import random
import time
from collections import defaultdict

import gevent
import pytest
import zope.event
from gevent import socket
from gevent.event import Event

from greenchat import texts
from greenchat.codec import Decoder, encode

from support import PASSWORD, Agent, HubTicker, run_all

SCALE = float(os.environ.get("GREENCHAT_STRESS_SCALE", "1"))


def scaled(n, least=2):
    return max(least, int(n * SCALE))


# The hub monitor ---------------------------------------------------------

@pytest.fixture(scope="module")
def hub_monitor():
    gevent.config.monitor_thread = True
    gevent.config.max_blocking_time = 0.1
    monitor = gevent.get_hub().start_periodic_monitoring_thread()
    yield monitor
    monitor.kill()
    gevent.get_hub().periodic_monitoring_thread = None
    gevent.config.monitor_thread = False


class BlockedReports(list):
    """EventLoopBlocked events reported while a load phase runs."""

    def assert_none(self):
        """Take the reports so far (checking afterwards is the test's own
        work, not the server's) and assert there were none."""
        reports = list(self)
        self.clear()
        assert not reports, "hub blocked:\n" + "\n\n".join(
            "".join(r.info[:25]) for r in reports[:2])


@pytest.fixture
def blocked_reports(hub_monitor):
    from gevent.events import EventLoopBlocked
    reports = BlockedReports()
    # A report of the previous test's teardown may still be on its way.
    gevent.sleep(0.3)
    # The agents record every frame they receive, so the heap grows by
    # hundreds of thousands of objects during a test, and the collector's
    # full passes over it took 100-900 ms here (measured with gc.callbacks),
    # all collecting nothing. Those pauses are the test's own records, not
    # the server's work; the monitor catches them or not by luck of timing.
    # So: collect now, and no automatic collection while the monitor watches.
    gc.collect()
    gc.freeze()
    gc.disable()

    def listen(event):
        if isinstance(event, EventLoopBlocked):
            reports.append(event)

    zope.event.subscribers.append(listen)
    yield reports
    zope.event.subscribers.remove(listen)
    gc.enable()
    gc.unfreeze()


# 500 clients, a random mix of everything ---------------------------------

def test_random_mix_loses_duplicates_reorders_and_crosses_blocks_nothing(
        make_server, blocked_reports):
    n_clients, n_ops = scaled(500), 12
    names = [f"user{i}" for i in range(n_clients)]
    server = make_server(names)
    agents = {name: Agent(name, server.address) for name in names}
    messages = []             # (sender, recipient, text, accepted)
    broadcasts = []           # (sender, text, sent_at, replied_at)
    with gevent.Timeout(120):
        run_all([gevent.spawn(agent.login) for agent in agents.values()], 120)
    assert all(len(a.sessions) == 1 for a in agents.values())

    def act(agent):
        rng = random.Random(agent.name)
        seq = 0
        blocking = set()
        for _ in range(n_ops):
            roll = rng.random()
            if roll < 0.55:
                seq += 1
                to = rng.choice(names)
                text = f"{agent.name}#{seq} to {to}: \"quoted\"  spaced"
                _, reply = agent.command(f"message {to} {text}")
                if to == agent.name:
                    assert reply["lines"] == [texts.CANNOT_MESSAGE_SELF]
                    continue
                accepted = reply["ok"] and reply["lines"] == []
                if not accepted:
                    assert reply["lines"] == [texts.RECIPIENT_BLOCKED_YOU]
                messages.append((agent.name, to, text, accepted))
            elif roll < 0.62:
                seq += 1
                text = f"{agent.name}#{seq} to all"
                sent_at, reply = agent.command(f"broadcast {text}")
                assert reply["ok"]
                broadcasts.append((agent.name, text, sent_at, time.monotonic()))
            elif roll < 0.72:
                _, reply = agent.command("whoelse")
                assert reply["ok"] and reply["lines"]
            elif roll < 0.90:
                target = rng.choice(names)
                if target == agent.name:
                    continue
                verb = "unblock" if target in blocking else "block"
                _, reply = agent.command(f"{verb} {target}")
                assert reply["lines"] == [texts.blocked(target) if verb == "block"
                                          else texts.unblocked(target)]
                blocking.symmetric_difference_update({target})
            else:
                bye = agent.logout()
                assert bye["text"] == texts.GOODBYE
                gevent.sleep(rng.random() * 0.2)
                assert agent.login()["status"] == "ok"

    with gevent.Timeout(240):
        run_all([gevent.spawn(act, agent) for agent in agents.values()], 240)
        # Every message accepted so far is now in its recipient's outbox or
        # store: one more reply to everyone flushes the outboxes.
        run_all([gevent.spawn(agent.command, "whoelse") for agent in agents.values()], 120)
    blocked_reports.assert_none()

    check_mix(agents, messages, broadcasts)


def check_mix(agents, messages, broadcasts):
    accepted = {(s, r, t) for s, r, t, ok in messages if ok}
    refused = {(s, r, t) for s, r, t, ok in messages if not ok}
    seq_of = {}
    for _, _, text, _ in messages:
        seq_of[text] = int(text.split("#")[1].split(" ")[0])
    for _, text, _, _ in broadcasts:
        seq_of[text] = int(text.split("#")[1].split(" ")[0])

    received = defaultdict(list)        # recipient -> [(sender, text)] in arrival order
    problems = []
    for agent in agents.values():
        blocking = set()
        last_seq = {}
        seen = set()
        for _, frame in agent.stream:
            kind = frame["type"]
            if kind == "reply" and frame["ok"]:
                line = agent.lines.get(frame["id"], "")
                verb, _, target = line.partition(" ")
                if verb == "block":
                    blocking.add(target)
                elif verb == "unblock":
                    blocking.discard(target)
            elif kind == "message":
                sender, text = frame["from"], frame["text"]
                if sender in blocking:
                    problems.append(f"{agent.name} got {text!r} from {sender}, whom it blocks")
                if text in seen:
                    problems.append(f"{agent.name} got {text!r} twice")
                seen.add(text)
                seq = seq_of.get(text)
                if seq is None:
                    problems.append(f"{agent.name} got unknown text {text!r}")
                    continue
                if seq <= last_seq.get(sender, 0):
                    problems.append(f"{agent.name} got {sender}'s #{seq} after "
                                    f"#{last_seq[sender]}")
                last_seq[sender] = seq
                received[agent.name].append((sender, text))

    got = {(s, r, t) for r, items in received.items() for s, t in items}
    for item in accepted - got:
        problems.append(f"lost: {item}")
    for item in refused & got:
        problems.append(f"delivered across a block: {item}")

    # A broadcast must reach every user who was online (per the clients' own
    # clocks) from before it was sent until after it was answered and who
    # did not block the sender meanwhile.
    for sender, text, sent_at, replied_at in broadcasts:
        for agent in agents.values():
            if agent.name == sender:
                continue
            online = any(start < sent_at and (end is None or end > replied_at)
                         for start, end in agent.sessions)
            if not online or blocks_during(agent, sender, replied_at):
                continue
            if (sender, text) not in received[agent.name]:
                problems.append(f"broadcast lost: {text!r} to {agent.name}")
    assert not problems, f"{len(problems)} problem(s), first: {problems[:10]}"
    assert len(accepted) > 100 and len(got) >= len(accepted)


def blocks_during(agent, sender, until):
    """True if agent blocked `sender` at any time up to `until` (a superset
    of "was blocking during the broadcast": conservative)."""
    first = agent.__dict__.get("_first_blocks")
    if first is None:
        # Arrival of the first successful `block X` reply, per X: computed
        # once per agent, since the checker asks for every broadcast.
        first = agent._first_blocks = {}
        for arrival, frame in agent.stream:
            if frame["type"] == "reply":
                verb, _, target = agent.lines.get(frame["id"], "").partition(" ")
                if verb == "block" and target not in first:
                    first[target] = arrival
    return first.get(sender, float("inf")) <= until


# Lock storm --------------------------------------------------------------

def test_lock_storm_gives_exact_texts_and_releases_on_time(make_server, blocked_reports):
    block_duration = 2.0
    server = make_server(["victim", "bystander"], block_duration=block_duration)
    n = scaled(200, least=5)
    attempts = [Agent("victim", server.address) for _ in range(n)]
    with gevent.Timeout(60):
        results = [gevent.spawn(a.login, "wrong") for a in attempts]
        run_all(results, 60)
    locked_at = time.monotonic()
    counts = defaultdict(int)
    for g in results:
        counts[g.value["text"]] += 1
    assert counts == {texts.INVALID_PASSWORD: 2, texts.ACCOUNT_NOW_BLOCKED: 1,
                      texts.ACCOUNT_BLOCKED: n - 3}
    for agent in attempts:
        agent.sock.close()

    # Locked for every connection, right password included...
    early = Agent("victim", server.address)
    frame = early.login(PASSWORD)
    assert frame["text"] == texts.ACCOUNT_BLOCKED
    # ...while other accounts are not affected.
    assert Agent("bystander", server.address).login()["status"] == "ok"
    # Still locked shortly before the end, open shortly after.
    gevent.sleep(max(0.0, locked_at + block_duration - 0.4 - time.monotonic()))
    assert Agent("victim", server.address).login()["text"] == texts.ACCOUNT_BLOCKED
    gevent.sleep(max(0.0, locked_at + block_duration + 0.4 - time.monotonic()))
    assert Agent("victim", server.address).login()["status"] == "ok"
    blocked_reports.assert_none()


# Idle storm --------------------------------------------------------------

def test_idle_storm_logs_everyone_out_and_every_presence_notice_arrives(
        make_server, blocked_reports):
    n = scaled(500)
    timeout = 3.0
    names = [f"idle{i}" for i in range(n)]
    server = make_server(names + ["watcher"], timeout=timeout)
    watcher = Agent("watcher", server.address)
    assert watcher.login()["status"] == "ok"
    agents = [Agent(name, server.address) for name in names]
    keep_awake = Event()

    def watch():
        while not keep_awake.is_set():
            watcher.command("whoelse")
            keep_awake.wait(timeout / 4)
    awake = gevent.spawn(watch)
    # An agent sees its login's welcome as late as this process's hub lets
    # its reader run: that is the error of measuring idle time from it.
    ticker = HubTicker()
    try:
        with gevent.Timeout(60):
            run_all([gevent.spawn(a.login) for a in agents], 60)
            lag = ticker.stop()
            for agent in agents:
                agent.closed.wait(timeout * 4)
    finally:
        keep_awake.set()
        awake.join(5)
    # Presence notices go out in batches, and a command flushes the batch
    # before its reply: after this reply, every notice has reached the watcher.
    watcher.command("whoelse")
    blocked_reports.assert_none()

    problems = []
    for agent in agents:
        byes = agent.frames("bye")
        if [f["text"] for _, f in byes] != [texts.LOGGED_OUT_IDLE]:
            problems.append(f"{agent.name}: {byes}")
            continue
        welcome = next(t for t, f in agent.stream
                       if f["type"] == "login" and f.get("status") == "ok")
        idle_for = byes[0][0] - welcome
        if idle_for < timeout - 0.05 - lag:
            problems.append(f"{agent.name} logged out after {idle_for:.2f}s")
    presence = [(f["user"], f["online"]) for _, f in watcher.frames("presence")]
    for name in names:
        if presence.count((name, True)) != 1 or presence.count((name, False)) != 1:
            problems.append(f"watcher saw {name}: {[p for p in presence if p[0] == name]}")
        elif presence.index((name, True)) > presence.index((name, False)):
            problems.append(f"watcher saw {name} leave before arriving")
    assert not problems, problems[:10]


# Slow consumer -----------------------------------------------------------

def test_slow_consumer_delays_nobody_and_loses_nothing(make_server, blocked_reports):
    limit = 200
    n_fast, n_waves = scaled(50), 1000
    # Direct messages big enough to overrun the kernel's socket buffers
    # (up to 4 MB of send buffer here) and then the mailbox.
    n_direct, pad = 2000, "d" * 4000
    names = ["sender", "slow"] + [f"fast{i}" for i in range(n_fast)]
    server = make_server(names, mailbox_limit=limit)
    sender = Agent("sender", server.address)
    fast = [Agent(f"fast{i}", server.address) for i in range(n_fast)]
    run_all([gevent.spawn(a.login) for a in [sender] + fast], 30)

    # The slow client logs in and then never reads: a raw socket with a small
    # receive buffer.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(server.address)
    for frame in ({"type": "hello", "version": 1}, {"type": "username", "username": "slow"},
                  {"type": "password", "password": PASSWORD}):
        slow.sendall(encode(frame))
    gevent.sleep(0.2)

    start = time.monotonic()
    with gevent.Timeout(60):
        for i in range(max(n_direct, n_waves)):
            if i < n_direct:
                sender.command(f"message slow direct {i} {pad}")
            if i < n_waves:
                sender.command(f"broadcast wave {i}")
        run_all([gevent.spawn(a.command, "whoelse") for a in fast], 30)
    elapsed = time.monotonic() - start
    blocked_reports.assert_none()
    # Every fast client had every broadcast by the time it answered a
    # command issued after the last one: the slow one held nobody up.
    for agent in fast:
        waves = [f["text"] for _, f in agent.frames("message")]
        assert waves == [f"wave {i}" for i in range(n_waves)]
        # The monitor still watches (for the re-login below): this test's
        # own checking must not hold the hub either (seen: 100 ms here).
        gevent.sleep(0)
    assert elapsed < 30, f"{n_direct + n_waves} commands took {elapsed:.1f}s"

    # The server gave up on the slow client and said so to the others.
    assert {"type": "presence", "user": "slow", "online": False} in \
        [f for _, f in fast[0].stream]
    # What reached its socket before the cut, plus what was stored, is every
    # direct message, once each, in order.
    decoder = Decoder(1 << 20)
    early = []
    slow.settimeout(10)
    try:
        while True:
            data = slow.recv(65536)
            if not data:
                break
            early += decoder.feed(data)
            # recv on a ready socket does not switch: without this, reading
            # the megabytes waiting here is the test's own hub stall, which
            # the monitor reports (seen under load).
            gevent.sleep(0)
    except OSError:
        pass
    slow.close()
    early = [f for f in early if f["type"] == "message"]
    again = Agent("slow", server.address)
    assert again.login()["status"] == "ok"
    again.command("whoelse")
    stored = [f for _, f in again.frames("message")]
    assert all(f.get("offline") for f in stored)
    # It acknowledged nothing, so all it was sent comes again; a client that
    # showed `early` drops those ids: then every direct message once, in order,
    # and the broadcasts of its time online.
    last = max((f["id"] for f in early), default=0)
    shown = [f["text"] for f in early] + [f["text"] for f in stored if f["id"] > last]
    assert [t for t in shown if t.startswith("direct")] == \
        [f"direct {i} {pad}" for i in range(n_direct)]
    waves = [t for t in shown if t.startswith("wave")]
    assert waves == [f"wave {i}" for i in range(len(waves))]
    assert len(stored) > 0
    blocked_reports.assert_none()
