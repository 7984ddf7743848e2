"""A flooder process for the attack tests: threads with blocking sockets send
one kind of junk as fast as the kernel takes it, reconnecting whenever the
target drops them, until a deadline.

    python flooder.py HOST PORT SECONDS KIND [KIND ...] [--tls]

KIND is `blank` (bare newlines), `whitespace` (spaces, tabs and carriage
returns between newlines), `spaces` (spaces with no newline at all),
`probes` (a hello, then username frames, before any login) or `commands`
(valid `whoelse` commands after logging in as `flood` with password `pw`,
reading every answer so the server never cuts it off as a slow reader). It prints one
line, `connections N`, when it ends: how many times it connected.
"""

import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import HELLO, login_frames
from greenchat import frames
from greenchat.codec import encode

PAYLOADS = {
    "blank": b"\n" * 65536,
    "whitespace": b" \t \r\n" * 16384,
    "spaces": b" " * 65536,
    "probes": encode(frames.username("nobody")) * 1500,
    "commands": encode(frames.command(1, "whoelse")) * 1500,
}
PREFIX = {"probes": HELLO, "commands": login_frames("flood")}


def drain(sock):
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def flood(address, kind, deadline, use_tls, counter):
    context = None
    if use_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    payload = PAYLOADS[kind]
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection(address, timeout=2)
            if context is not None:
                sock = context.wrap_socket(sock)
            counter.append(1)
            sock.sendall(PREFIX.get(kind, b""))
            if kind == "commands":
                threading.Thread(target=drain, args=(sock,), daemon=True).start()
            while time.monotonic() < deadline:
                sock.sendall(payload)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                sock.close()
            except (OSError, UnboundLocalError):
                pass


def main(argv):
    use_tls = "--tls" in argv
    args = [a for a in argv if a != "--tls"]
    host, port, seconds, kinds = args[0], int(args[1]), float(args[2]), args[3:]
    deadline = time.monotonic() + seconds
    counter = []
    threads = [threading.Thread(target=flood, args=((host, port), kind, deadline, use_tls,
                                                   counter), daemon=True)
               for kind in kinds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 5)
    print(f"connections {len(counter)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
