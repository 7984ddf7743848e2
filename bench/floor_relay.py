"""The floor for the round trip: the least a gevent server speaking
greenchat's JSON lines can do per message, for comparison only.

One greenlet per connection reads lines, decodes each with json, and writes
a `message` straight to the recipient's socket (plus a reply to the sender)
with sendall: no command table, checks, mailbox, writer greenlet, store or
timeouts. Whatever greenchat's round trip costs beyond this one's, measured
in the same run, is greenchat's own design; the rest is Python, gevent, the
kernel and the load generator on this machine.

    python bench/floor_relay.py --port 0
"""

import argparse
import json
import os
import sys

from gevent import socket
from gevent.server import StreamServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from greenchat import frames
from greenchat.codec import encode

LOGGED_IN = encode(frames.login(frames.LOGGED_IN))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    users = {}

    def handle(sock, address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer, me = b"", None
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    frame = json.loads(line)
                    kind = frame["type"]
                    if kind == "username":
                        me = frame["username"]
                        users[me] = sock
                    elif kind == "password":
                        sock.sendall(LOGGED_IN)
                    elif kind == "command":
                        _, to, text = frame["line"].split(" ", 2)
                        users[to].sendall(encode(frames.message(me, text)))
                        sock.sendall(encode(frames.reply(frame["id"])))
        finally:
            users.pop(me, None)

    server = StreamServer(("127.0.0.1", a.port), handle)
    server.start()
    print(f"listening on 127.0.0.1:{server.server_port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
