"""Limits (issue 5): command rate, connections overall and per address."""

import gevent
from gevent import socket

from greenchat import texts
from greenchat.server.limits import TokenBucket

from support import Agent, exchange_until_closed


def test_token_bucket():
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5                        # one token back
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] = 100                        # never more than the burst
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert all(TokenBucket(0, 1).take() for _ in range(1000))     # 0: no limit


def test_a_flooding_client_is_told_and_cut_off_and_nobody_else_notices(make_server):
    server = make_server(["flood", "calm", "other"], command_rate=5, command_burst=20)
    calm, other = Agent("calm", server.address), Agent("other", server.address)
    flood = Agent("flood", server.address)
    for agent in (calm, other, flood):
        assert agent.login()["status"] == "ok"
    for i in range(60):                 # pipelined, as fast as the socket takes them
        flood.send({"type": "command", "id": 1000 + i, "line": f"message calm spam {i}"})
    error = flood.wait_for(lambda f: f["type"] == "error")
    assert error["text"] == texts.FLOODING
    assert flood.closed.wait(5)
    spam = [t for t in calm.texts() if t.startswith("spam")]
    assert 15 <= len(spam) <= 21        # the burst got through, then nothing
    calm.wait_for(lambda f: f == {"type": "presence", "user": "flood", "online": False})
    # Normal use is untouched, even at the burst's pace.
    for i in range(10):
        assert calm.command(f"message other hello {i}")[1]["ok"]
    other.wait_for(lambda f: f.get("text") == "hello 9")


def refused(address):
    return exchange_until_closed(address, []) == \
        [{"type": "error", "text": texts.TOO_MANY_CONNECTIONS}]


def test_connections_per_address_and_overall(make_server):
    server = make_server(["a", "b", "c"], max_per_address=3)
    held = [socket.create_connection(server.address) for _ in range(3)]
    gevent.sleep(0.1)
    assert refused(server.address)
    held.pop().close()
    gevent.sleep(0.1)
    agent = Agent("a", server.address)
    assert agent.login()["status"] == "ok"          # room again after a close
    for sock in held:
        sock.close()
    server.stop()
    server = make_server(["a", "b", "c"], max_connections=2)
    held = [socket.create_connection(server.address) for _ in range(2)]
    gevent.sleep(0.1)
    assert refused(server.address)
    for sock in held:
        sock.close()
