"""The load generator's WebSocket mode (bench/loadgen.py): its client
frames, its count of message frames without parsing WebSocket headers,
and its acks, on a socket pair (no server, no benchmark)."""

import socket
import time

from bench import loadgen
from greenchat import frames
from greenchat import websocket as ws
from greenchat.codec import encode

SENT_AT = 1795480000.5


def message(msg_id, text="hi"):
    return encode(frames.message("u0", text, msg_id=msg_id, sent_at=SENT_AT, txn="t.1"))


def wire(*items):
    """What the server writes for these encoded frames: one batch, wrapped."""
    return ws.wrap(list(items))[0]


def test_client_frames_are_masked_with_a_zero_key_and_read_by_the_server():
    got = []
    decoder = ws.MessageDecoder(1 << 20, got.append)
    small = encode(frames.ack(5))
    medium = encode(frames.command(1, "broadcast " + "x" * 300))
    big = encode(frames.command(2, "broadcast " + "y" * 70000))
    assert decoder.feed(loadgen.ws_frames(small + medium + big)) == [
        frames.ack(5), frames.command(1, "broadcast " + "x" * 300),
        frames.command(2, "broadcast " + "y" * 70000)]
    assert loadgen.ws_frame(b"{}") == b"\x81\x82\0\0\0\0{}"


def test_ws_scan_counts_messages_whose_id_is_whole():
    data = wire(*(message(i) for i in range(5, 9)))
    count, upto, rest = loadgen.ws_scan(data)
    assert (count, upto) == (4, 8) and len(rest) == loadgen.KEEP
    # A message cut before its id ends is carried, and counted once whole.
    nine = wire(message(1234))
    cut = nine.index(b"1234") + 2
    count, upto, rest = loadgen.ws_scan(data + nine[:cut])
    assert (count, upto) == (4, 8) and rest.startswith(loadgen.MESSAGE_ID)
    assert loadgen.ws_scan(rest + nine[cut:])[:2] == (1, 1234)
    # Cut inside the pattern itself.
    for cut in range(1, len(nine)):
        first = loadgen.ws_scan(nine[:cut])
        second = loadgen.ws_scan(first[2] + nine[cut:])
        assert first[0] + second[0] == 1
        assert (first[1] if first[0] else second[1]) == 1234


def test_ws_scan_ignores_other_frames_and_texts():
    reply = encode(frames.reply(77, ["x"]))
    fake = message(3, '{"type":"message","id":99,"from":"a"}')
    assert loadgen.ws_scan(wire(reply))[:2] == (0, None)
    assert loadgen.ws_scan(wire(fake, reply))[:2] == (1, 3)
    assert loadgen.ws_scan(wire(encode(frames.message("u0", "no id"))))[:2] == (0, None)


def test_ws_split_reads_whole_server_frames():
    data = wire(message(1), message(2, "z" * 200))
    first, rest = loadgen.ws_split(data)
    assert first == message(1)[:-1]
    second, rest = loadgen.ws_split(rest)
    assert second == message(2, "z" * 200)[:-1] and rest == b""
    assert loadgen.ws_split(data[:5]) == (None, data[:5])


def receiver():
    """An Engine with one upgraded, logged-in WebSocket receiver on one end
    of a socket pair."""
    engine = loadgen.Engine(port=0, ws_port=0)
    conn = loadgen.Conn("u1", ws=True)
    conn.sock.close()
    conn.sock, server = socket.socketpair()
    conn.sock.setblocking(False)
    conn.fd = conn.sock.fileno()
    conn.connecting, conn.upgraded, conn.ready = False, True, True
    engine.conns[conn.fd] = conn
    conn.mask = loadgen.EPOLLIN
    engine.ep.register(conn.fd, conn.mask)
    server.settimeout(0.05)
    return engine, conn, server


def acks(server):
    got = []
    decoder = ws.MessageDecoder(65536, got.append)
    frames_read = []
    try:
        while True:
            chunk = server.recv(65536)
            if not chunk:
                break
            frames_read += decoder.feed(chunk)
    except TimeoutError:
        pass
    return frames_read


def poll(engine, seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        engine.poll(0.01)


def test_a_ws_receiver_counts_and_acknowledges_as_the_client_does():
    engine, conn, server = receiver()
    conn.measure = True
    batch = wire(*(message(i) for i in range(1, 65)))
    tail = wire(message(65))
    cut = tail.index(b"65,") + 1          # inside the id
    server.sendall(batch + tail[:cut])
    poll(engine, 0.03)
    assert conn.count == 64
    assert acks(server) == [frames.ack(64)]
    server.sendall(tail[cut:] + wire(message(66)))
    poll(engine, 0.03)
    assert conn.count == 66 and acks(server) == []
    poll(engine, 0.15)
    assert acks(server) == [frames.ack(66)]
    engine.close_all()
    server.close()


def test_the_upgrade_then_the_login():
    engine, conn, server = receiver()
    conn.upgraded = conn.ready = False
    server.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n")
    poll(engine, 0.02)
    assert not conn.upgraded
    server.sendall(b"Connection: Upgrade\r\n\r\n" + wire(encode(frames.hello("s"))))
    poll(engine, 0.02)
    assert conn.upgraded and not conn.ready
    assert [f["type"] for f in acks(server)] == ["hello", "username", "password"]
    server.sendall(wire(encode({"type": "login", "status": "ok", "user": "u1"})))
    poll(engine, 0.02)
    assert conn.ready
    engine.close_all()
    server.close()


def test_a_refused_upgrade_kills_the_connection():
    engine, conn, server = receiver()
    conn.upgraded = conn.ready = False
    server.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    poll(engine, 0.02)
    assert conn.dead == "upgrade refused: HTTP/1.1 403 Forbidden"
    server.close()
