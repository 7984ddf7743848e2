"""The load generator acknowledges what it receives, as the client does
(bench/loadgen.py): its cheap id search, and its batching, on a socket pair
(no server, no benchmark)."""

import json
import socket
import time

from bench import loadgen
from greenchat import frames
from greenchat.codec import encode

SENT_AT = 1795480000.5


def message(msg_id, text="hi"):
    return encode(frames.message("u0", text, msg_id=msg_id, sent_at=SENT_AT, txn="t.1"))


def test_scan_finds_the_last_id_of_the_complete_frames():
    data = b"".join(message(i) for i in range(5, 9))
    assert loadgen.scan(data) == (4, 8, b"")
    # A frame cut short is left for the next read.
    assert loadgen.scan(data + message(9)[:20]) == (4, 8, message(9)[:20])
    assert loadgen.scan(message(9)[:20]) == (0, None, message(9)[:20])
    assert loadgen.scan(message(9)[:20] + message(9)[20:]) == (1, 9, b"")


def test_scan_ignores_other_frames_and_is_not_fooled_by_texts():
    reply = encode(frames.reply(77, ["x"]))
    fake = message(3, 'x{"type":"message","id":99,"from":"a"}\n')
    assert loadgen.scan(reply) == (0, None, b"")
    assert loadgen.scan(fake + reply) == (1, 3, b"")
    assert loadgen.scan(encode(frames.message("u0", "no id"))) == (0, None, b"")


def test_scan_falls_back_to_json_for_another_encoding():
    spaced = json.dumps(frames.message("u0", "hi", msg_id=12)).encode() + b"\n"
    id_last = b'{"type":"message","from":"u0","text":"a","id":13}\n'
    id_first_last = b'{"type":"message","id":14}\n' + encode(frames.reply(1, []))
    assert loadgen.scan(spaced) == (1, 12, b"")
    assert loadgen.scan(spaced + id_last) == (2, 13, b"")
    assert loadgen.scan(id_first_last) == (1, 14, b"")


def receiver():
    """An Engine with one logged-in receiver on one end of a socket pair."""
    engine = loadgen.Engine(port=0)
    conn = loadgen.Conn("u1")
    conn.sock.close()
    conn.sock, server = socket.socketpair()
    conn.sock.setblocking(False)
    conn.fd = conn.sock.fileno()
    conn.connecting, conn.ready = False, True
    engine.conns[conn.fd] = conn
    conn.mask = loadgen.EPOLLIN
    engine.ep.register(conn.fd, conn.mask)
    server.settimeout(0.05)
    return engine, server


def acks(server):
    data = b""
    try:
        while True:
            chunk = server.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return [json.loads(line) for line in data.splitlines()]


def poll(engine, seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        engine.poll(0.01)


def test_64_messages_are_acknowledged_at_once_and_fewer_100_ms_later():
    engine, server = receiver()
    server.sendall(b"".join(message(i) for i in range(1, 65)) + message(65)[:10])
    poll(engine, 0.03)
    assert acks(server) == [frames.ack(64)]
    server.sendall(message(65)[10:] + message(66))
    poll(engine, 0.03)
    assert acks(server) == []
    poll(engine, 0.15)
    assert acks(server) == [frames.ack(66)]
    assert engine.acks_sent == 2
    engine.close_all()
    server.close()


def test_the_latency_clients_acknowledge_too():
    client = loadgen.Blocking.__new__(loadgen.Blocking)
    client.sock, server = socket.socketpair()
    server.settimeout(0.05)
    client.upto, client.unacked, client.first_unacked = None, 0, None
    client.received(message(4).rstrip(b"\n"))
    client.ack_if_due(time.perf_counter())
    assert acks(server) == []
    client.ack_if_due(time.perf_counter() + loadgen.ACK_DELAY)
    assert acks(server) == [frames.ack(4)]
    client.received(encode(frames.message("u0", "no id")).rstrip(b"\n"))
    client.ack_if_due()
    assert acks(server) == []
    client.sock.close()
    server.close()
