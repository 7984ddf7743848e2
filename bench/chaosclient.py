"""Chaos: protocol clients against a server that is killed and restarted
while their connections are reset, and a checker that proves from what each
client showed that the delivery guarantees held (docs/protocol.md,
"Delivery guarantees").

run_chaos() is the whole scenario; tests/test_chaos.py runs it briefly,
`python -m bench.chaos` for longer. No pytest here.

- ChaosServer: bin/greenchat-server as a process on 127.0.0.1 (port 0) with
  --resume-window 30, started again on the same directory after a kill -9.
  Its `address` changes at each start: clients read it before each try.
- ChaosClient: one user in a greenlet, speaking the protocol as
  greenchat-client does. It logs in and keeps its resume token and the
  highest id it handled; it acknowledges cumulatively, batched (at the 64th
  message or 100 ms after the first); it drops a repeat (an id not above the
  last, or a (sender, txn) it has shown) and records every message it shows.
  It sends `message USER TEXT` and `broadcast TEXT`, one at a time, each with
  a unique text (`NAME#SEQ`) and txn (`NAME.SEQ`), and waits for each reply,
  bounded. A lost connection (or a reply that never comes) makes it
  reconnect by itself, with a jittered backoff, for at most RECONNECT_FOR
  seconds: a resume with its token and last id, a password login on the same
  connection when that is `expired`; then the awaited command goes again,
  same txn, `retry`.
- The killer: every few seconds kill -9 and a restart; between kills it
  resets (RST) the connections of random clients, never the `steady` ones.
- check(): what every client showed, against what every client sent and the
  message log on disk once the server is stopped.

Every wait is bounded.
"""

import os
import random
import sqlite3
import struct
import time
import traceback

import gevent
from gevent import socket, subprocess
from gevent.event import AsyncResult, Event
from gevent.lock import Semaphore
from gevent.queue import Empty, Queue

from bench.common import LISTENING, PASSWORD, greenchat_command, poll, write_credentials
from greenchat import frames
from greenchat.codec import Decoder, encode
from greenchat.errors import GreenchatError

CLIENT = "greenchat-chaos"
# Acknowledged like greenchat-client: at the 64th message, or 100 ms after the first.
ACK_EVERY = 64
ACK_DELAY = 0.1
# How long a reply, a login answer and a connect may take before the
# connection counts as lost.
REPLY_TIMEOUT = 10.0
LOGIN_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# Reconnecting: the first delay, doubled up to the last, each cut at random
# to 50-100%; given up after RECONNECT_FOR seconds without a login.
RETRY_FIRST = 0.05
RETRY_MAX = 1.0
RECONNECT_FOR = 45.0
# The largest frame taken from the server (as the client does).
SERVER_MAX_FRAME = 16 * 1024 * 1024
RESUME_WINDOW = "30"
# Problems listed in full in a summary; the rest are counted.
FIRST_PROBLEMS = 10
# What a server log holds when the server itself failed.
SERVER_FAULTS = ("Traceback", "internal error")


class GaveUp(Exception):
    """A client could not get back in within its time."""


class _Retry(Exception):
    """This login try failed; another may not."""


class ChaosServer:
    """bin/greenchat-server as a process on 127.0.0.1, its accounts file and
    data in `directory`, its stderr appended to server.log there; `address`
    once it listens. Started with gevent's subprocess and waited for with
    gevent.sleep, so the clients keep running meanwhile."""

    def __init__(self, directory, *options):
        self.directory = directory
        self.options = ("--resume-window", RESUME_WINDOW, "--max-per-address", "100000",
                        *options)
        self.log_path = os.path.join(directory, "server.log")
        self.proc = None
        self.address = None
        self.restarts = []        # (killed at, listening again at), monotonic
        self.died = []            # exit statuses of processes found dead before a kill
        self.start()

    def _log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0

    def start(self, timeout=30.0):
        offset = self._log_size()
        command = greenchat_command(os.path.join(self.directory, "credentials.txt"),
                                    os.path.join(self.directory, "data"), "--command-rate", "0",
                                    *self.options, block_duration="60", timeout="600")
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)

        def listening():
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                found = LISTENING.search(log.read().decode("utf-8", "replace"))
            return found or self.proc.poll() is not None

        found = poll(listening, timeout, 0.02, gevent.sleep)
        if found is True or not found:
            self.kill()
            raise RuntimeError(f"the server did not start: {self.log()[-2000:]}")
        self.address = ("127.0.0.1", int(found.group(1)))

    def kill(self):
        """kill -9, no warning."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def restart(self):
        """kill -9, then the same server again (a new port)."""
        if self.proc.poll() is not None:
            self.died.append(self.proc.returncode)
        killed = time.monotonic()
        self.kill()
        self.start()
        self.restarts.append((killed, time.monotonic()))

    def stop(self):
        """SIGTERM; the exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def database(self):
        return os.path.join(self.directory, "data", "greenchat.sqlite3")


class Command:
    """One `message` or `broadcast` a client sent, and what became of it."""

    __slots__ = ("sender", "seq", "kind", "target", "text", "txn", "line", "tries",
                 "first_sent", "answered", "ok", "lines")

    def __init__(self, sender, seq, kind, target):
        self.sender, self.seq, self.kind, self.target = sender, seq, kind, target
        self.text = f"{sender}#{seq}"
        self.txn = f"{sender}.{seq}"
        self.line = f"broadcast {self.text}" if kind == "broadcast" else \
            f"message {target} {self.text}"
        self.tries = 0
        self.first_sent = None    # monotonic()
        self.answered = None
        self.ok = None            # the reply's ok: None while it has none
        self.lines = None


class _Connection:
    """One connection of a client: its socket, a send lock (commands and the
    reader's acks share it), the login answers in order (None once it is
    lost), the replies awaited, and `lost`."""

    def __init__(self, sock):
        self.sock = sock
        self.lock = Semaphore()
        self.lost = Event()
        self.logins = Queue()
        self.replies = {}
        self.ack_timer = None
        self.closed = False       # by us: its reader may not have seen it yet

    def alive(self):
        return not (self.closed or self.lost.is_set())

    def send(self, frame):
        with self.lock:
            self.sock.sendall(encode(frame))

    def reset(self):
        """Close abruptly: a RST, no FIN."""
        self.closed = True
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()


class ChaosClient:
    """One user (see the module's docstring). `server` is read for its
    address before every connection; `others` are whom it may message."""

    def __init__(self, name, server, others, rng, steady=False, think=(0.1, 0.4),
                 broadcast_share=0.2, reconnect_for=RECONNECT_FOR):
        self.name = name
        self.server = server
        self.others = others
        self.rng = rng
        self.steady = steady      # the killer never resets its connection
        self.think = think
        self.broadcast_share = broadcast_share
        self.reconnect_for = reconnect_for
        self.conn = None
        self.token = None
        self.last_id = 0          # the highest id handled (shown or dropped)
        self.unacked = 0          # messages handled since the last ack
        self.shown_txns = set()
        self.shown = []           # (monotonic, id, sender, text, txn, broadcast)
        self.repeats_by_id = 0
        self.repeats_by_txn = 0
        self.commands = []
        self.pending = None       # the command awaiting its reply
        self.seq = 0
        self.request_id = 0
        self.logins = []          # (monotonic, "password" | "resumed" | "expired")
        self.resets = 0           # by the killer
        self.reply_timeouts = 0
        self.busy = 0             # `This account is already logged in` answers
        self.ended = []           # bye and error frames from the server
        self.odd = []             # frames that break the protocol
        self.failure = None       # why it stopped before its end
        self.drained = False

    # Connections --------------------------------------------------------------

    def _read(self, conn):
        decoder = Decoder(SERVER_MAX_FRAME)
        try:
            while True:
                data = conn.sock.recv(65536)
                if not data:
                    return
                for frame in decoder.feed(data):
                    self._on_frame(conn, frame)
        except OSError:
            return
        except GreenchatError as exc:
            self.odd.append(f"undecodable data from the server: {exc}")
        finally:
            conn.lost.set()
            conn.logins.put(None)
            if conn.ack_timer is not None:
                conn.ack_timer.kill(block=False)
            conn.sock.close()

    def _on_frame(self, conn, frame):
        kind = frame["type"]
        if kind == "message":
            self._on_message(conn, frame)
        elif kind == "reply":
            waiter = conn.replies.pop(frame.get("id"), None)
            if waiter is not None:
                waiter.set(frame)
        elif kind == "login":
            if frame.get("status") != frames.ASK_PASSWORD or "text" in frame:
                conn.logins.put(frame)
        elif kind == "ping":
            try:
                conn.send(frames.pong())
            except OSError:
                pass
        elif kind in ("bye", "error"):
            self.ended.append(frame)
            conn.logins.put(frame)

    def _on_message(self, conn, frame):
        mid, sender, txn = frame.get("id"), frame.get("from"), frame.get("txn")
        if type(mid) is not int:
            self.odd.append(f"a message without an id: {frame}")
            return
        if mid <= self.last_id:
            self.repeats_by_id += 1
        else:
            self.last_id = mid
            if txn is not None and (sender, txn) in self.shown_txns:
                self.repeats_by_txn += 1
            else:
                self.shown.append((time.monotonic(), mid, sender, frame.get("text"), txn,
                                   frame.get("broadcast") is True))
                if txn is not None:
                    self.shown_txns.add((sender, txn))
        self.unacked += 1
        if self.unacked >= ACK_EVERY:
            self._send_ack(conn)
        elif conn.ack_timer is None:
            conn.ack_timer = gevent.spawn_later(ACK_DELAY, self._ack_later, conn)

    def _ack_later(self, conn):
        conn.ack_timer = None
        self._send_ack(conn)

    def _send_ack(self, conn):
        if self.unacked and conn.alive():
            count, self.unacked = self.unacked, 0
            try:
                conn.send(frames.ack(self.last_id))
            except OSError:
                self.unacked += count       # the next login says it

    def _login_answer(self, conn):
        try:
            frame = conn.logins.get(timeout=LOGIN_TIMEOUT)
        except Empty:
            raise _Retry("no answer to a login step") from None
        if frame is None:
            raise _Retry("connection lost while logging in")
        if frame["type"] != "login":
            raise _Retry(f"the server ended the login: {frame}")
        return frame

    def _log_in(self, address):
        """One try: a new connection, logged in; that connection."""
        sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT)
        sock.settimeout(None)
        conn = _Connection(sock)
        gevent.spawn(self._read, conn)
        try:
            conn.send(frames.hello(CLIENT))
            frame = None
            # What the resume's `last` acknowledges (messages may come on
            # this connection as soon as it is taken back).
            covered = self.unacked
            if self.token is not None:
                conn.send(frames.resume(self.name, self.token, self.last_id))
                frame = self._login_answer(conn)
                if frame.get("status") == frames.EXPIRED:
                    self.logins.append((time.monotonic(), "expired"))
                    frame = None
                elif frame.get("status") != frames.LOGGED_IN:
                    raise _Retry(f"resume answered {frame}")
                elif frame.get("resumed") is not True:
                    self.odd.append(f"a resume answered without resumed: {frame}")
            if frame is None:
                conn.send(frames.username(self.name))
                conn.send(frames.password(PASSWORD))
                frame = self._login_answer(conn)
                if frame.get("status") != frames.LOGGED_IN:
                    self.busy += frame.get("status") == frames.FAILED
                    raise _Retry(f"login answered {frame}")
                self.logins.append((time.monotonic(), "password"))
                self._send_ack(conn)
            else:
                self.logins.append((time.monotonic(), "resumed"))
                self.unacked -= covered
            self.token = frame.get("resume")
            return conn
        except BaseException:
            conn.reset()
            raise

    def session(self):
        """The connection, logged in: the current one, or a new one."""
        conn = self.conn
        if conn is not None and conn.alive():
            return conn
        started, delay, why = time.monotonic(), RETRY_FIRST, None
        while True:
            gevent.sleep(delay * self.rng.uniform(0.5, 1.0))
            delay = min(delay * 2, RETRY_MAX)
            if time.monotonic() - started > self.reconnect_for:
                raise GaveUp(f"no login in {self.reconnect_for:g}s: {why}")
            try:
                self.conn = self._log_in(self.server.address)
                return self.conn
            except (_Retry, OSError) as exc:
                why = exc

    def reset(self):
        """The killer: the connection dies under the client. True if it had one."""
        conn = self.conn
        if conn is None or not conn.alive():
            return False
        conn.reset()
        self.resets += 1
        return True

    def close(self):
        if self.conn is not None:
            self.conn.reset()

    # Commands -----------------------------------------------------------------

    def _next_command(self):
        self.seq += 1
        if self.rng.random() < self.broadcast_share:
            command = Command(self.name, self.seq, "broadcast", None)
        else:
            command = Command(self.name, self.seq, "message", self.rng.choice(self.others))
        self.commands.append(command)
        return command

    def _ask(self, conn, line, txn=None, retry=False, timeout=REPLY_TIMEOUT):
        """Send a command; its reply, or None if the connection was lost (or
        the reply did not come: then it is closed, as lost)."""
        self.request_id += 1
        waiter = conn.replies[self.request_id] = AsyncResult()
        try:
            conn.send(frames.command(self.request_id, line, txn, retry=retry))
        except OSError:
            # Lost: its reader ends (a send can fail before it sees that).
            conn.reset()
            conn.lost.wait(5)
            return None
        gevent.wait([waiter, conn.lost], timeout=timeout, count=1)
        if waiter.ready():
            return waiter.get()
        if conn.alive():
            self.reply_timeouts += 1
            conn.reset()
        conn.lost.wait(5)
        return None

    def _attempt(self, command):
        """Send `command` (again, with retry, after its first try); True once
        it has its reply."""
        conn = self.session()
        retry = command.tries > 0
        command.tries += 1
        if command.first_sent is None:
            command.first_sent = time.monotonic()
        reply = self._ask(conn, command.line, command.txn, retry=retry)
        if reply is None:
            return False
        command.answered = time.monotonic()
        command.ok = reply.get("ok") is True
        command.lines = reply.get("lines")
        return True

    def run(self, stop):
        """Send commands until `stop` is set and the last one has its reply."""
        try:
            while not (stop.is_set() and self.pending is None):
                if self.pending is None:
                    self.pending = self._next_command()
                if self._attempt(self.pending):
                    self.pending = None
                    stop.wait(self.rng.uniform(*self.think))
        except GaveUp as exc:
            self.failure = str(exc)
        except Exception:
            self.failure = traceback.format_exc()

    def drain(self):
        """Logged in again if need be, wait for the answer to `whoelse`,
        which comes after every message waiting; then acknowledge it all."""
        try:
            for _ in range(5):
                conn = self.session()
                if self._ask(conn, "whoelse", timeout=3 * REPLY_TIMEOUT) is not None:
                    self._send_ack(conn)
                    self.drained = True
                    return
            self.failure = "no answer to whoelse in 5 connections"
        except GaveUp as exc:
            self.failure = f"drain: {exc}"
        except Exception:
            self.failure = traceback.format_exc()


# The scenario ---------------------------------------------------------------------

class Killer:
    """kill -9 and a restart every `kill_every` (low, high) seconds; between
    kills, every `reset_every` seconds, the connections of 1-3 random
    clients that are not steady reset."""

    def __init__(self, server, clients, rng, kill_every=(2.0, 4.0), reset_every=(0.3, 1.0)):
        self.server, self.rng = server, rng
        self.victims = [client for client in clients if not client.steady]
        self.kill_every, self.reset_every = kill_every, reset_every
        self.resets = 0
        self.failure = None

    def run(self, stop):
        try:
            next_kill = time.monotonic() + self.rng.uniform(*self.kill_every)
            while True:
                pause = min(next_kill - time.monotonic(), self.rng.uniform(*self.reset_every))
                if stop.wait(max(0.0, pause)):
                    return
                if time.monotonic() >= next_kill:
                    self.server.restart()
                    next_kill = time.monotonic() + self.rng.uniform(*self.kill_every)
                elif self.victims:
                    count = min(len(self.victims), self.rng.randint(1, 3))
                    self.resets += sum(client.reset()
                                       for client in self.rng.sample(self.victims, count))
        except Exception:
            self.failure = traceback.format_exc()


def log_rows(database):
    """{(sender, txn): rows} of the message log, read once the server stopped."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return dict(((sender, txn), count) for sender, txn, count in db.execute(
            "SELECT sender, txn, COUNT(*) FROM log WHERE txn IS NOT NULL GROUP BY sender, txn"))
    finally:
        db.close()


def check(clients, rows=None):
    """(problems, figures) from what every client sent and showed; `rows`,
    the log's {(sender, txn): count}, if it could be read.

    Proved: a message or broadcast shown was sent, by whom it says, to this
    user (a broadcast never to its sender), with its txn; nothing is shown
    twice; each sender's messages come in the order they were sent (by its
    seq, one command at a time) and with ids increasing; every direct
    message answered `ok` is shown to its recipient; every broadcast
    answered `ok` is shown to every user whose session never ended from
    before it was sent (its every later login a resume); a command's retry
    never ran it twice (one row per txn in the log), and every `ok` is in
    the log. A command with no answer may have been shown once or not at
    all, never twice."""
    problems = []
    sent = {command.text: command for client in clients for command in client.commands}
    shown = {}
    checked = 0
    for client in clients:
        name = client.name
        if client.failure is not None:
            problems.append(f"{name}: {client.failure.strip()}")
        elif not client.drained:
            problems.append(f"{name}: never drained")
        problems += [f"{name}: the server sent {frame}" for frame in client.ended]
        problems += [f"{name}: {odd}" for odd in client.odd]
        counts = shown[name] = {}
        last_seq, last_id = {}, 0
        for _, mid, sender, text, txn, broadcast in client.shown:
            checked += 1
            if mid <= last_id:
                problems.append(f"{name}: id {mid} shown after {last_id}")
            last_id = max(last_id, mid)
            command = sent.get(text)
            if command is None or command.sender != sender:
                problems.append(f"{name} was shown {text!r} from {sender}, never sent")
                continue
            if command.kind == "message" and (command.target != name or broadcast):
                problems.append(f"{name} was shown {text!r}, a message to {command.target}")
            if command.kind == "broadcast" and (sender == name or not broadcast):
                problems.append(f"{name} was shown broadcast {text!r} as {broadcast=}")
            if txn != command.txn:
                problems.append(f"{name} was shown {text!r} with txn {txn!r}")
            counts[text] = counts.get(text, 0) + 1
            if counts[text] > 1:
                if counts[text] == 2:
                    problems.append(f"{name} was shown {text!r} twice")
                continue
            if command.seq <= last_seq.get(sender, 0):
                problems.append(f"{name} was shown {text!r} after {sender}#{last_seq[sender]}")
            last_seq[sender] = max(last_seq.get(sender, 0), command.seq)
    # Sessions that never ended: every login after the first was a resume.
    continuous = [client for client in clients if client.logins
                  and all(how == "resumed" for _, how in client.logins[1:])]
    required = accepted = unanswered = 0
    for command in sent.values():
        if command.ok is None:
            unanswered += 1
            continue
        if not command.ok:
            problems.append(f"{command.sender}: {command.line!r} refused: {command.lines}")
            continue
        accepted += 1
        if rows is not None and rows.get((command.sender, command.txn), 0) < 1:
            problems.append(f"{command.text} was answered ok and is not in the log")
        if command.kind == "message":
            required += 1
            if command.text not in shown[command.target]:
                problems.append(f"{command.text}, accepted, never shown to {command.target}")
            continue
        for client in continuous:
            if client.name != command.sender and client.logins[0][0] < command.first_sent:
                required += 1
                if command.text not in shown[client.name]:
                    problems.append(f"broadcast {command.text}, accepted, never shown to "
                                    f"{client.name}")
    if rows is not None:
        problems += [f"{sender}'s txn {txn} is {count} rows of the log: a retry ran again"
                     for (sender, txn), count in rows.items() if count > 1]
    figures = dict(sent=len(sent), accepted=accepted, unanswered=unanswered,
                   shown_checked=checked, deliveries_required=required,
                   continuous_users=len(continuous),
                   repeats_dropped_by_id=sum(c.repeats_by_id for c in clients),
                   repeats_dropped_by_txn=sum(c.repeats_by_txn for c in clients),
                   expired_resumes=sum(how == "expired" for c in clients for _, how in c.logins),
                   already_logged_in=sum(c.busy for c in clients),
                   reply_timeouts=sum(c.reply_timeouts for c in clients))
    return problems, figures


def longest_wait_after_restart(clients, restarts):
    """The longest time, over restarts and users, from a server listening
    again to the first message reaching a user that was sent before the
    kill and not shown by then (a message pending across the restart); and
    how many such (restart, user) cases there were."""
    sent_at = {command.text: command.first_sent for client in clients
               for command in client.commands}
    worst, cases = 0.0, 0
    for i, (killed, ready) in enumerate(restarts):
        until = restarts[i + 1][0] if i + 1 < len(restarts) else float("inf")
        for client in clients:
            first = next((at for at, _, _, text, _, _ in client.shown
                          if killed <= at < until and (sent_at.get(text) or until) < killed),
                         None)
            if first is not None:
                cases += 1
                worst = max(worst, first - ready)
    return worst, cases


def run_chaos(directory, users=50, seconds=25.0, seed=0, steady=5, kill_every=(2.0, 4.0),
              reset_every=(0.3, 1.0), think=(0.1, 0.4), broadcast_share=0.2,
              reconnect_for=RECONNECT_FOR, progress=None):
    """The whole scenario in `directory` (accounts, data, server.log): log
    everyone in, `seconds` of commands under the killer, then stop sending,
    let every client drain, stop the server and check. A summary dict;
    its "problems" is the full list. `progress(text)`, if given, is told
    each phase."""
    say = progress or (lambda text: None)
    names = [f"u{i:02d}" for i in range(users)]
    write_credentials(os.path.join(directory, "credentials.txt"), names)
    rng = random.Random(seed)
    started = time.monotonic()
    server = ChaosServer(directory)
    clients = [ChaosClient(name, server, [other for other in names if other != name],
                           random.Random(rng.random()), steady=i < steady, think=think,
                           broadcast_share=broadcast_share, reconnect_for=reconnect_for)
               for i, name in enumerate(names)]
    killer = Killer(server, clients, random.Random(rng.random()), kill_every, reset_every)
    stop = Event()
    greenlets = []
    try:
        # Everyone is logged in before anything is sent.
        say("logging in")
        greenlets = [gevent.spawn(client.session) for client in clients]
        gevent.joinall(greenlets, timeout=reconnect_for + 5)
        for client, greenlet in zip(clients, greenlets, strict=True):
            if not greenlet.successful():
                raise RuntimeError(f"{client.name} could not log in: {greenlet.exception}")
        say(f"{seconds:g}s of chaos")
        greenlets = [gevent.spawn(client.run, stop) for client in clients]
        chaos = gevent.spawn(killer.run, stop)
        gevent.sleep(seconds)
        stop.set()
        chaos.join(60)
        say("stopping, then draining")
        gevent.joinall(greenlets, timeout=reconnect_for + 2 * REPLY_TIMEOUT)
        for client, greenlet in zip(clients, greenlets, strict=True):
            if not greenlet.dead:
                greenlet.kill()
                client.failure = client.failure or "still sending at the end"
        greenlets = [gevent.spawn(client.drain) for client in clients]
        gevent.joinall(greenlets, timeout=reconnect_for + 4 * REPLY_TIMEOUT)
        for client, greenlet in zip(clients, greenlets, strict=True):
            if not greenlet.dead:
                greenlet.kill()
                client.failure = client.failure or "still draining at the end"
    finally:
        for greenlet in greenlets:
            greenlet.kill()
        for client in clients:
            client.close()
        status = server.stop()
    problems = []
    if killer.failure is not None:
        problems.append(f"killer: {killer.failure}")
    if server.died:
        problems.append(f"the server died by itself: exit statuses {server.died}")
    if status != 0:
        problems.append(f"the server's SIGTERM exit status: {status}")
    log = server.log()
    faults = sum(log.count(fault) for fault in SERVER_FAULTS)
    if faults:
        first = min(log.find(fault) for fault in SERVER_FAULTS if fault in log)
        problems.append(f"{faults} faults in the server's log, first: {log[first:first + 1500]}")
    try:
        rows = log_rows(server.database)
    except sqlite3.Error as exc:
        rows = None
        problems.append(f"the message log could not be read: {exc}")
    found, figures = check(clients, rows)
    problems += found
    wait, cases = longest_wait_after_restart(clients, server.restarts)
    return dict(seed=seed, users=users, seconds=seconds,
                wall_s=round(time.monotonic() - started, 1),
                kills=len(server.restarts), connection_resets=killer.resets,
                **figures,
                longest_wait_after_restart_s=round(wait, 3), pending_after_restart=cases,
                problem_count=len(problems), first_problems=problems[:FIRST_PROBLEMS],
                problems=problems)
