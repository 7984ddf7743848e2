"""Keeps the benchmark's comparison server (bench/threaded_server.py) working."""

import os
import re
import signal
import subprocess
import sys
import time

from gevent import socket

from greenchat import frames
from greenchat.codec import Decoder, encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_threaded_server_speaks_the_protocol(tmp_path):
    creds = tmp_path / "credentials.txt"
    creds.write_text("u1 pw\nu2 pw\n")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "threaded_server.py"),
                             "--port", "0", "--credentials", str(creds)],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+)$", proc.stderr.readline().strip()).group(1))
        socks = {}
        for user in ("u1", "u2"):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            for frame in (frames.hello("test_bench_threaded"), frames.username(user),
                          frames.password("pw")):
                sock.sendall(encode(frame))
            socks[user] = (sock, Decoder())

        def until(user, predicate):
            sock, decoder = socks[user]
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                for frame in decoder.feed(sock.recv(65536)):
                    if predicate(frame):
                        return frame
            raise AssertionError(f"{user}: nothing matched")

        for user in socks:
            until(user, lambda f: f.get("status") == "ok")
        socks["u1"][0].sendall(encode(frames.command(1, "message u2 hi there")))
        assert until("u2", lambda f: f["type"] == "message") == \
            {"type": "message", "from": "u1", "text": "hi there"}
        socks["u2"][0].sendall(encode(frames.command(2, "broadcast all")))
        assert until("u1", lambda f: f["type"] == "message")["text"] == "all"
        socks["u1"][0].sendall(encode(frames.command(3, "whoelse")))
        assert until("u1", lambda f: f["type"] == "reply" and f["id"] == 3)["lines"] == ["u2"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
