"""The original system's design, for comparison only: a thread per connection
and condition variables. Standard library, greenchat's pure-Python codec and
frames, and its accounts file reader (credentials.py); no gevent.

Each connection has a reader thread, which runs its commands, and a writer
thread, which waits on its mailbox's threading.Condition and sends whatever
the mailbox holds. Senders append under the mailbox's lock and notify. To keep
the comparison about the threading model and nothing else, it speaks
greenchat's wire protocol (the subset the load generator uses: hello, login,
message, broadcast, whoelse, logout), encodes a broadcast once, and its writers
also join all waiting frames into one send, just as greenchat's do.

    python3 bench/threaded_server.py --port 0 --credentials FILE

Listens on 127.0.0.1 only; prints `listening on 127.0.0.1:PORT` to stderr.
"""

import argparse
import os
import signal
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from greenchat import frames
from greenchat.codec import Decoder, encode
from greenchat.credentials import Credentials
from greenchat.errors import CredentialsError

WELCOME = "Welcome to the greatest messaging application ever!"
INVALID_PASSWORD = "Invalid Password. Please try again"


class Mailbox:
    def __init__(self):
        self.frames = []
        self.closed = False
        self.cond = threading.Condition()

    def put(self, frame):
        with self.cond:
            self.frames.append(frame)
            self.cond.notify()

    def close(self):
        with self.cond:
            self.closed = True
            self.cond.notify()


class Server:
    def __init__(self, credentials):
        self.credentials = credentials
        self.online = {}                 # name -> Mailbox
        self.lock = threading.Lock()     # guards self.online

    def serve(self, listener):
        while True:
            sock, _ = listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.connection, args=(sock,), daemon=True).start()

    def connection(self, sock):
        mailbox = Mailbox()
        writer = threading.Thread(target=self.write, args=(sock, mailbox), daemon=True)
        writer.start()
        name = None
        try:
            name = self.read(sock, mailbox)
        except (OSError, ValueError):
            pass
        finally:
            if name is not None:
                with self.lock:
                    if self.online.get(name) is mailbox:
                        del self.online[name]
            mailbox.close()
            writer.join(5)
            sock.close()

    def write(self, sock, mailbox):
        try:
            while True:
                with mailbox.cond:
                    while not mailbox.frames and not mailbox.closed:
                        mailbox.cond.wait(1.0)
                    frames, mailbox.frames = mailbox.frames, []
                    closed = mailbox.closed
                if frames:
                    sock.sendall(b"".join(frames))
                if closed:
                    return
        except OSError:
            pass

    def read(self, sock, mailbox):
        decoder = Decoder()
        name = candidate = None
        while True:
            data = sock.recv(65536)
            if not data:
                return name
            for frame in decoder.feed(data):
                kind = frame["type"]
                if kind == "hello":
                    mailbox.put(encode(frames.server_hello("threaded")))
                elif kind == "username":
                    candidate = frame.get("username")
                    mailbox.put(encode(frames.login(frames.ASK_PASSWORD)))
                elif kind == "password" and name is None:
                    secret = frame.get("password")
                    if not isinstance(secret, str) or not self.credentials.check(candidate, secret):
                        mailbox.put(encode(frames.login(frames.ASK_PASSWORD, INVALID_PASSWORD)))
                        continue
                    name = candidate
                    with self.lock:
                        self.online[name] = mailbox
                    mailbox.put(encode(frames.login(frames.LOGGED_IN, WELCOME, user=name)))
                elif kind == "command" and name is not None:
                    if not self.command(name, mailbox, frame):
                        return name

    def command(self, name, mailbox, frame):
        verb, _, rest = str(frame.get("line", "")).partition(" ")
        lines, ok = [], True
        if verb == "message":
            to, _, text = rest.partition(" ")
            with self.lock:
                target = self.online.get(to)
            if target is not None:
                target.put(encode(frames.message(name, text)))
        elif verb == "broadcast":
            data = encode(frames.message(name, rest, broadcast=True))
            with self.lock:
                targets = [m for n, m in self.online.items() if n != name]
            for target in targets:
                target.put(data)
        elif verb == "whoelse":
            with self.lock:
                lines = sorted(n for n in self.online if n != name) or ["No other users online"]
        elif verb == "logout":
            mailbox.put(encode(frames.bye(frames.LOGOUT, "Goodbye")))
            return False
        else:
            ok, lines = False, ["Error. Invalid command"]
        mailbox.put(encode(frames.reply(frame.get("id"), lines, ok)))
        return True


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--credentials", required=True)
    a = p.parse_args()
    try:
        credentials = Credentials.load(a.credentials)
    except CredentialsError as exc:
        sys.exit(str(exc))
    threading.stack_size(256 * 1024)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", a.port))
    listener.listen(1024)
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: os._exit(0))
    Server(credentials).serve(listener)


if __name__ == "__main__":
    main()
