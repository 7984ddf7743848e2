"""WebSocket frames that reach the server before the session's reader
starts are answered without waiting for more bytes. They come with the
upgrade request, or (from another process, as a browser or the load
generator on loopback) right after the 101, before the listener takes what
its request reader buffered: left in the decoder until more bytes came, a
client that sent its login and waited sat there until its login deadline.
In process the second case cannot be timed; the first is the same path."""

import gevent
from gevent import socket

from greenchat import frames
from greenchat.codec import Decoder, encode

from support import PASSWORD
from ws_client import upgrade_request

LOGIN = [frames.hello("test"), frames.username("alice"), frames.password(PASSWORD)]


def client_frame(frame):
    """A masked text frame (mask key 0) of one encoded frame."""
    payload = encode(frame)[:-1]
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


def server_frames(data):
    """The JSON frames in a server's unmasked text frames (under 64 KiB)."""
    lines = b""
    while len(data) >= 2:
        size, at = data[1] & 0x7F, 2
        assert size != 127
        if size == 126:
            size, at = int.from_bytes(data[2:4], "big"), 4
        if len(data) < at + size:
            break
        lines += data[at:at + size] + b"\n"
        data = data[at + size:]
    return Decoder().feed(lines)


def answer_until_welcome(sock, data=b""):
    """Frames received until the welcome, or what came within 3 s."""
    with gevent.Timeout(3, False):
        while b'"status":"ok"' not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_frames_sent_with_the_upgrade_request_are_answered(make_server):
    server = make_server(["alice"], http_port=0)
    address = ("127.0.0.1", server.web.server_port)
    sock = socket.create_connection(address, timeout=5)
    try:
        # One send: the frames reach the server with the request.
        sock.sendall(upgrade_request(*address) + b"".join(client_frame(f) for f in LOGIN))
        data = answer_until_welcome(sock)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        got = server_frames(rest)
        assert got[0]["type"] == "hello"
        assert any(f.get("status") == "ok" for f in got)
    finally:
        sock.close()
