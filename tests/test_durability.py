"""Crash durability: kill -9 the server process in the middle of a stream of
offline messages, restart it on the same data directory, and prove that every
message whose sender got the acknowledgement is delivered exactly once, and
that locks and blocks are still in force."""

import signal
import time

import gevent

from bench.common import write_credentials
from greenchat import texts

from support import Agent, ServerProcess, wait_until


def stored_for(address, name):
    """What `name` is shown on logging in: the messages stored for it (the
    reply to a whoelse comes after them)."""
    reader = Agent(name, address)
    assert reader.login()["status"] == "ok"
    reader.command("whoelse")
    return reader.texts()


def test_acknowledged_messages_survive_kill_9_exactly_once(tmp_path):
    write_credentials(tmp_path / "credentials.txt", ["sender", "reader", "victim", "rude"])
    server = ServerProcess(str(tmp_path))
    address = server.address
    try:
        # State that must survive too: a lock and a block.
        for _ in range(3):
            Agent("victim", address).login("wrong")
        reader = Agent("reader", address)
        assert reader.login()["status"] == "ok"
        assert reader.command("block rude")[1]["lines"] == ["rude is blocked"]
        reader.logout()

        sender = Agent("sender", address)
        assert sender.login()["status"] == "ok"
        acked = []

        def stream():
            for i in range(100_000):
                _, reply = sender.command(f"message reader note {i}", timeout=5)
                assert reply["ok"]
                acked.append(i)

        streaming = gevent.spawn(stream)
        wait_until(lambda: len(acked) >= 300 or streaming.dead,
                   lambda: f"only {len(acked)} acknowledged", 60)
        assert not streaming.dead, streaming.exception
        server.kill()                             # mid-stream, no warning
        streaming.join(10)
        assert streaming.dead
    finally:
        server.kill()

    server = ServerProcess(str(tmp_path))
    address = server.address
    try:
        numbers = [int(t.split()[1]) for t in stored_for(address, "reader")]
        assert len(numbers) == len(set(numbers)), "a message was delivered twice"
        assert numbers == sorted(numbers)
        missing = set(acked) - set(numbers)
        assert not missing, f"{len(missing)} acknowledged message(s) lost, e.g. {min(missing)}"
        # At most the one message in flight at the kill was stored unacknowledged.
        assert len(numbers) - len(acked) <= 1
        # The lock and the block outlived the crash.
        assert Agent("victim", address).login("pw")["text"] == texts.ACCOUNT_BLOCKED
        rude = Agent("rude", address)
        rude.login()
        assert rude.command("message reader hi")[1]["lines"] == [texts.RECIPIENT_BLOCKED_YOU]
    finally:
        assert server.stop() == 0


def test_sigterm_with_clients_connected_tells_all_and_loses_nothing(tmp_path):
    write_credentials(tmp_path / "credentials.txt", [f"u{i}" for i in range(20)])
    server = ServerProcess(str(tmp_path))
    try:
        agents = [Agent(f"u{i}", server.address) for i in range(10)]
        for agent in agents:
            assert agent.login()["status"] == "ok"
        for i in range(50):
            agents[0].command(f"message u15 offline {i}")
        stopped_at = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - stopped_at < 5
        for agent in agents:
            bye = agent.wait_for(lambda f: f["type"] == "bye")
            assert bye["text"] == texts.SERVER_SHUTTING_DOWN
            assert agent.closed.wait(5)
    finally:
        server.kill()
    server = ServerProcess(str(tmp_path))
    try:
        assert stored_for(server.address, "u15") == [f"offline {i}" for i in range(50)]
    finally:
        assert server.stop() == 0
