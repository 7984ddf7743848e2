"""Test support: an in-process server factory and a scripted protocol client.

Agent speaks the wire protocol directly (not through greenchat.client), so
tests see exactly the frames the server sends; a reader greenlet records
every frame with its arrival time, and every wait is bounded.
"""

import os
import select
import subprocess
import sys
import time

import gevent
from gevent import socket
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from gevent.server import StreamServer

from bench.common import (
    LISTENING,
    greenchat_command,
    read_text,
    wait_listening,
    write_credentials,
)
from bench.common import poll as bench_poll
from bench.hubgap import HubTicker as HubTicker  # re-exported: tests import it from here
from greenchat import frames, texts, tls
from greenchat.cli import build_server
from greenchat.client.client import Client
from greenchat.client.console import Console
from greenchat.codec import Decoder, encode
from greenchat.config import ClientConfig, ServerConfig

PASSWORD = "pw"
# The hello's informative `client` member, from an Agent.
CLIENT = "greenchat-tests"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_SCRIPT = os.path.join(ROOT, "bin", "greenchat-server")
CLIENT_SCRIPT = os.path.join(ROOT, "bin", "greenchat-client")
DEADLINE = 15.0


def poll(condition, timeout, interval=0.01):
    """condition()'s first true value, asked every `interval` s for up to
    `timeout` s; after that its last, false, value."""
    return bench_poll(condition, timeout, interval, gevent.sleep)


def wait_until(condition, failure, timeout=5, interval=0.01):
    """condition()'s first true value, waiting up to `timeout` s; after that
    AssertionError(failure())."""
    value = poll(condition, timeout, interval)
    if not value:
        raise AssertionError(failure())
    return value


def wire(frame):
    """The bytes of `frame`: a dict encoded, raw bytes as they are."""
    return encode(frame) if isinstance(frame, dict) else frame


def frame_batches(sock):
    """The frames of each read from `sock`, a list a read, until the peer
    closes the connection."""
    decoder = Decoder()
    while True:
        data = sock.recv(65536)
        if not data:
            return
        yield decoder.feed(data)


class ServerFactory:
    """Starts servers in this process on a free port; stop_all() at teardown."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.servers = []

    def __call__(self, users, passwords=None, ids=None, **overrides):
        """A server for `users` (password PASSWORD unless `passwords` says
        otherwise; `ids` gives account ids, the file's third field)."""
        write_credentials(self.tmp_path / "credentials.txt", users, PASSWORD, passwords, ids)
        return self.again(**overrides)

    def again(self, **overrides):
        """Another server on the same accounts file and data, as it is now."""
        # Many clients from one address, and commands as fast as the tests
        # can send them: tests of the limits set them back.
        settings = dict(port=0, host="127.0.0.1", block_duration=1.0, timeout=120.0,
                        credentials=str(self.tmp_path / "credentials.txt"),
                        data_dir=str(self.tmp_path / "data"),
                        backlog=2048, command_rate=0, max_per_address=100_000)
        settings.update(overrides)
        server = build_server(ServerConfig(**settings))
        server.start()
        self.servers.append(server)
        return server

    def stop_all(self):
        for server in self.servers:
            server.stop(timeout=10)


class ServerProcess:
    """bin/greenchat-server as a process on 127.0.0.1 (port 0), with its
    credentials and data in `directory`; `address` once it listens. Started
    again on the same directory, it is the same server after a restart."""

    def __init__(self, directory, *args, block_duration="60", timeout="600", preexec_fn=None):
        self.log_path = os.path.join(directory, "server.log")
        # The log goes on from an earlier start: its port is in the next line.
        seen = len(LISTENING.findall(self.log()))
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                greenchat_command(os.path.join(directory, "credentials.txt"),
                                  os.path.join(directory, "data"), "--command-rate", "0", *args,
                                  block_duration=block_duration, timeout=timeout),
                stdout=subprocess.DEVNULL, stderr=log, preexec_fn=preexec_fn)
        port = wait_listening(self.proc, self.log_path, 15, after=seen)
        if port is None:
            self.proc.kill()
            raise AssertionError(f"server did not start: {self.log()[-2000:]}")
        self.address = ("127.0.0.1", port)

    def log(self):
        return read_text(self.log_path)

    def kill(self):
        """kill -9, no warning."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self):
        """SIGTERM; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(15)


class Agent:
    """One simulated user: a reader greenlet records every frame with the
    time it arrived; commands wait (bounded) for their replies. Like the
    real client it acknowledges the messages it reads, once a read (unless
    `acks` is False: a client that reads and never acknowledges), and drops
    a message whose id it has recorded already, over all its sessions (into
    `repeats`: a new Agent is a client started afresh)."""

    def __init__(self, name, address, tls_context=None, acks=True, pongs=True, web=False,
                 origin=None):
        self.name = name
        # web: over a WebSocket to `address` (the web listener's), from `origin`.
        self.web = web
        self.origin = origin
        self.websocket = None
        self.address = address
        self.tls_context = tls_context
        self.acks = acks
        self.pongs = pongs        # answer the server's pings
        self.acked = 0            # the last id acknowledged
        self.last_id = 0          # the last message id recorded; a repeat goes to `repeats`
        self.repeats = []
        self._sending = Semaphore()
        self.stream = []          # (arrival time, frame) over every session
        self.lines = {}           # command id -> line
        self.sessions = []        # [login_ok_time, logout_request_time or None]
        self.sock = None
        self.reader = None
        self._waiters = {}
        self._next_id = 0
        self.closed = Event()

    def connect(self):
        if self.web:
            from tests.ws_client import WebSocketClient
            self.websocket = WebSocketClient(self.address, self.origin, self.tls_context, 30)
            self.sock = self.websocket.sock
        else:
            self.sock = socket.create_connection(self.address, timeout=30)
            if self.tls_context is not None:
                self.sock = tls.connect(self.sock, self.tls_context, 30)
            self.sock.settimeout(None)
        self.closed = Event()
        self._waiters = {"login": AsyncResult(), "bye": AsyncResult()}
        self.reader = gevent.spawn(self._read, self.sock, self.closed)

    def _read(self, sock, closed):
        batches = self.websocket.batches() if self.web else frame_batches(sock)
        try:
            for batch in batches:
                now = time.monotonic()
                upto = self.acked
                for frame in batch:
                    if frame["type"] == "message" and type(frame.get("id")) is int:
                        upto = max(upto, frame["id"])
                        if frame["id"] <= self.last_id:
                            # Shown already: the client drops it, and so do we.
                            self.repeats.append(frame)
                            continue
                        self.last_id = frame["id"]
                    self.stream.append((now, frame))
                    kind = frame["type"]
                    if kind == "reply":
                        waiter = self._waiters.pop(frame.get("id"), None)
                        if waiter is not None:
                            waiter.set(frame)
                    elif kind == "login" and frame.get("status") == "password" \
                            and "text" not in frame:
                        continue        # the server asks for the password
                    elif kind == "ping" and self.pongs:
                        self.send(frames.pong())
                    elif kind in ("login", "bye", "error") and kind in self._waiters:
                        waiter = self._waiters["bye" if kind == "error" else kind]
                        if not waiter.ready():
                            waiter.set(frame)
                if self.acks and upto > self.acked:
                    self.acked = upto
                    self.send(frames.ack(upto))
        except OSError:
            return
        finally:
            closed.set()

    def send(self, frame):
        # The reader's acks and the commands share the socket: one frame at a time.
        with self._sending:
            if self.web:
                self.websocket.send(frame)
            else:
                self.sock.sendall(encode(frame))

    def login(self, password=PASSWORD, timeout=60):
        self.connect()
        self.send(frames.hello(CLIENT))
        self.send(frames.username(self.name))
        self.send(frames.password(password))
        frame = self._wait(self._waiters["login"], timeout, "login")
        if frame.get("status") == "ok":
            self.sessions.append([time.monotonic(), None])
        return frame

    @property
    def token(self):
        """The resume token of the latest login."""
        return next((f["resume"] for _, f in reversed(self.stream)
                     if f["type"] == "login" and "resume" in f), None)

    def resume(self, token=None, last=None, timeout=60):
        """Connect again and take the session back: the login frame."""
        token = self.token if token is None else token
        self.connect()
        self.send(frames.hello(CLIENT))
        self.send(frames.resume(self.name, token, self.last_id if last is None else last))
        frame = self._wait(self._waiters["login"], timeout, "resume")
        if frame.get("status") == "ok":
            self.sessions.append([time.monotonic(), None])
        return frame

    def drop(self):
        """The connection dies under the client: no logout."""
        self.sock.close()
        self.closed.wait(5)

    def command(self, line, timeout=60):
        self._next_id += 1
        request_id = self._next_id
        self.lines[request_id] = line
        waiter = self._waiters[request_id] = AsyncResult()
        sent_at = time.monotonic()
        self.send(frames.command(request_id, line))
        return sent_at, self._wait(waiter, timeout, line)

    def logout(self, timeout=60):
        self.sessions[-1][1] = time.monotonic()
        self._next_id += 1
        self.lines[self._next_id] = "logout"
        self.send(frames.command(self._next_id, "logout"))
        bye = self._wait(self._waiters["bye"], timeout, "logout")
        self.closed.wait(timeout)
        self.sock.close()
        return bye

    def _wait(self, waiter, timeout, what):
        try:
            return waiter.get(timeout=timeout)
        except gevent.Timeout:
            raise AssertionError(
                f"{self.name}: no answer to {what!r} in {timeout}s; reader "
                f"{'ended' if self.closed.is_set() else 'running'}; last frames: "
                f"{[f for _, f in self.stream[-5:]]}") from None

    def frames(self, kind):
        return [(t, f) for t, f in self.stream if f["type"] == kind]

    def texts(self, kind="message"):
        return [f["text"] for _, f in self.frames(kind)]

    def wait_for(self, predicate, timeout=5):
        """The first recorded frame matching predicate, waiting up to timeout."""
        return wait_until(lambda: next((f for _, f in self.stream if predicate(f)), None),
                          lambda: f"{self.name}: no matching frame in {timeout}s; "
                                  f"got {[f for _, f in self.stream][-5:]}", timeout)


class Screen:
    """A stand-in stdout that keeps every line the client printed."""

    def __init__(self):
        self.text = ""

    def write(self, data):
        self.text += data

    def flush(self):
        pass

    def isatty(self):
        return False

    @property
    def lines(self):
        return self.text.splitlines()


class User:
    """A real client in a greenlet, typed at through a pipe. It types its
    name and PASSWORD and, unless told not to, waits for the welcome. It
    does not reconnect unless given reconnect=True: a client a test leaves
    behind must never log in to a later test's server."""

    def __init__(self, name, address, welcome=True, **config):
        config.setdefault("reconnect", False)
        self.name = name
        self.screen = Screen()
        read_fd, self.keyboard = os.pipe()
        self.console = Console(read_fd, self.screen)
        self.client = Client(ClientConfig(host=address[0], port=address[1], **config),
                             self.console)
        self.greenlet = gevent.spawn(self.client.run)
        self._read_fd = read_fd
        self.type(name)
        self.type(PASSWORD)
        if welcome:
            self.expect(texts.WELCOME)
            # The listener's address reaches the server before anything typed next.
            poll(lambda: self.client.listener is not None, 5)

    def type(self, line):
        os.write(self.keyboard, line.encode() + b"\n")

    def expect(self, line, timeout=5):
        wait_until(lambda: line in self.screen.lines,
                   lambda: f"{self.name} never showed {line!r}: {self.screen.lines[-10:]}",
                   timeout)

    def settle(self):
        """Wait until the client has answered everything typed so far."""
        self.type("whoelse")
        count = len(self.screen.lines)
        wait_until(lambda: len(self.screen.lines) > count and self.client.answered.is_set(),
                   lambda: f"{self.name} did not settle", 5, interval=0.05)

    def quit(self):
        os.close(self.keyboard)
        try:
            return self.greenlet.get(timeout=10)
        finally:
            os.close(self._read_fd)


def run_all(greenlets, timeout):
    done = gevent.joinall(greenlets, timeout=timeout, raise_error=True)
    assert len(done) == len(greenlets), f"{len(greenlets) - len(done)} agent(s) still running"


def exchange_until_closed(address, frames, timeout=5):
    """Send frames (dicts or raw bytes) on a fresh connection; return every
    frame received until the server closes it."""
    sock = socket.create_connection(address, timeout=timeout)
    for frame in frames:
        sock.sendall(wire(frame))
    received = []
    with gevent.Timeout(timeout):
        for batch in frame_batches(sock):
            received += batch
    sock.close()
    return received


# A fake server for the real client -----------------------------------------------

def welcome(user="hans"):
    """The login frame that lets `user` in."""
    return frames.login(frames.LOGGED_IN, texts.WELCOME, user=user)


def answer_commands(answer):
    """A fake server's command step: the goodbye for logout, answer(frame)
    for any other command line."""
    def command(frame):
        if frame["line"] == "logout":
            return [frames.bye(frames.LOGOUT, texts.GOODBYE)]
        return answer(frame)
    return command


# A command's answer: `done`, or for logout the goodbye.
normal_answer = answer_commands(lambda frame: [frames.reply(frame["id"], ["done"])])


class FakeServer:
    """Fake servers in this process, docs/protocol.md cut to what the client
    needs; stop_all() at teardown.

    A call starts one on a free port and returns its address. Each of hello,
    username, password and command maps to a function of the client's frame
    that returns what to send back, frames (dicts) or raw bytes: by default
    a hello, the password asked for, hans let in, and normal_answer; an ack
    is answered with nothing."""

    def __init__(self):
        self.servers = []

    def __call__(self, **steps):
        answers = dict(hello=lambda frame: [frames.server_hello("fake")],
                       username=lambda frame: [frames.login(frames.ASK_PASSWORD)],
                       password=lambda frame: [welcome()],
                       command=normal_answer,
                       ack=lambda frame: [])
        answers.update(steps)

        def handle(sock, _address):
            try:
                for batch in frame_batches(sock):
                    for frame in batch:
                        for answer in answers[frame["type"]](frame):
                            sock.sendall(wire(answer))
            except OSError:
                pass          # the client went away mid-answer
            finally:
                sock.close()

        server = StreamServer(("127.0.0.1", 0), handle)
        server.start()
        self.servers.append(server)
        return server.address

    def stop_all(self):
        for server in self.servers:
            server.stop(timeout=1)


# The programs as processes ------------------------------------------------------

class Proc:
    """A child process whose stdout is read line by line with a deadline."""

    def __init__(self, args, stderr=subprocess.PIPE, **kwargs):
        self.p = subprocess.Popen([sys.executable] + args, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=stderr, **kwargs)
        self.buffer = b""

    def write(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def expect(self, text, stream="stdout", timeout=DEADLINE):
        """Read until a line equal to `text` (or matching a compiled regex)."""
        pipe = getattr(self.p, stream)
        end = time.monotonic() + timeout
        seen = []
        while time.monotonic() < end:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                line = line.decode()
                seen.append(line)
                if (text.search(line) if hasattr(text, "search") else line == text):
                    return line
            ready, _, _ = select.select([pipe], [], [], 0.1)
            if ready:
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    break
                self.buffer += chunk
        raise AssertionError(f"never saw {text!r}; saw {seen!r}")

    def finish(self, timeout=DEADLINE):
        try:
            return self.p.wait(timeout)
        finally:
            if self.p.poll() is None:
                self.p.kill()
                self.p.wait()


def listening_port(server):
    """The port in a server Proc's `listening on HOST:PORT` line (its stderr)."""
    return int(LISTENING.search(server.expect(LISTENING, stream="stderr")).group(1))


def client_process(port, *options):
    """bin/greenchat-client against 127.0.0.1:`port`, piped."""
    return Proc([CLIENT_SCRIPT, "127.0.0.1", str(port), *options])


def login(proc, user, password):
    proc.expect("Username: ")
    proc.write(user)
    proc.expect("Password: ")
    proc.write(password)
    proc.expect(texts.WELCOME)


def hans_and_yoda(port):
    """Two client processes logged in, hans having seen yoda arrive."""
    hans = client_process(port)
    login(hans, "hans", "falcon*solo")
    yoda = client_process(port)
    login(yoda, "yoda", "wise@!man")
    hans.expect("yoda logged in")
    return hans, yoda


# greenchat-admin in this process ------------------------------------------------

class _Lines:
    """A stand-in stdin that gives one line."""

    def __init__(self, text):
        self.text = text + "\n"

    def readline(self):
        line, self.text = self.text, ""
        return line


def admin_run(creds, *argv, password=None, monkeypatch=None):
    """greenchat-admin --credentials CREDS ARGV..., in this process; with
    `password`, that line on its stdin. Its exit status."""
    from greenchat import admin
    if password is not None:
        monkeypatch.setattr(sys, "stdin", _Lines(password))
    return admin.main(["--credentials", str(creds), *argv])


# A client that does not read -------------------------------------------------------

def silent_login(address, name, password=PASSWORD):
    """Log `name` in on a raw socket with a small receive buffer, and read
    nothing: what the server sends it piles up, in the kernel and then in
    the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    for frame in (frames.hello("greenchat-tests"), frames.username(name),
                  frames.password(password)):
        sock.sendall(encode(frame))
    return sock


def numbers_until_closed(sock, decoder=None, timeout=10):
    """Read `sock` until the other end closes (or resets) it; the leading
    number of each message's text, in the order they came."""
    decoder = decoder or Decoder(1 << 20)
    numbers = []
    with gevent.Timeout(timeout):
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                return numbers
            if not data:
                return numbers
            numbers += [int(f["text"].split()[0]) for f in decoder.feed(data)
                        if f["type"] == "message"]
