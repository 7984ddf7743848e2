"""The greenchat terminal client.

Strategy: after login, greenlets run side by side and never block each other
or the hub: `_receive` reads frames from the server and prints them as they
come; `_keyboard` reads typed lines and sends them; the peer listener accepts
private links, and each private link is read by a greenlet of its own.
Whichever learns that the session is over (a goodbye or error frame, the
end of input, a reconnect that gives up) sets `self.done` with the exit
status, and `run` returns it. Private links are closed on every way out, so
the peer always hears of it.

A connection lost after login (end of stream, a reset, a failed read or
send, a frame too large: not a `bye` or `error` frame, which end the
session) is news for `_dropped`, which only the first greenlet to learn of
it gets through: it clears `connected` and starts `_reconnect` in a greenlet
of its own (with --no-reconnect, the session ends as before). `_reconnect`
says so once, ends the private links, and tries again with backoff for
--reconnect-for seconds (a connection lost again soon after is the same
outage: its time and backoff go on): each try is a new connection, the hello, and a
`resume` with the login's token if the server gave one, else (or if it is
`expired`) the username and the password kept from the first login. A
refused password, a locked account or any other `failed` status is shown and
ends the session at once, never trying into a lock; `This account is
already logged in` is likely the server not having noticed the old
connection's end yet, and is tried again. Once in, the command whose reply
is awaited goes again (its txn, with `retry`), an ack goes for what was
shown meanwhile, a new receiver starts and `connected` is set. The keyboard
waits on `connected` before it sends anything, so lines typed meanwhile wait
in the console, are sent once, and in order; its wait for a reply starts
again when the command is sent again. The peer listener, the console (typed
line and history), `last_id` and `shown_txns` live on across connections.

Typed lines are parsed with the shared command table: "local" commands (help)
are answered here, "peer" commands (private, stopprivate) go over the private
links; everything else goes to the server verbatim, which answers unknown
commands and bad arguments itself, so the server sees (and counts as
activity) everything the user types.

Nothing from the network reaches a screen as it came: console.show escapes
every line (console.visible), and the lines printed to stderr and logged
pass through the same function.

Every member read from a frame is checked for its type where it is read
(frames.py's readers), by one rule. The frames that open and close the
session (hello, login, bye, error) must be right: a member of the wrong type,
another protocol version, an unknown login status or an unexpected frame
ends the session as a lost connection (`Connection to server lost`, exit 1).
The frames of a session (message, presence, reply, private_offer,
private_stop, a peer's private) are taken as far as they make sense: a
member of the wrong type counts as absent, a frame that means nothing
without it is ignored, and unknown frame types are ignored too. The last
line of defence is for bugs, not frames: an exception nobody expected in a
greenlet of the client is logged with its traceback and ends the session
through the same `finally` that gives the terminal back.

Every command carries a `txn`, this process's transaction id for it (a
random prefix and a counter); `awaited_txn` is the one of the command whose
reply is awaited, for a resend after a reconnect.

Delivery is acknowledged: once message frames are shown, `ack` frames tell
the server the highest message id handled (`last_id`), cumulatively and
batched (ACK_DELAY after the first unacknowledged message, or at once on the
ACK_EVERY-th). A message is shown once: one whose id is not above `last_id`,
or whose (sender, txn) pair is among the last TXN_MEMORY shown, is dropped
(and acknowledged: the server sent it again for want of an ack). Both
records are the Client's, not a connection's: they outlive one.

A `history` answer is shown a message a line, stamped in local time.

A `notice` frame's text is shown as a line, piped or not (the idle warning).
When the idle logout comes, a terminal's half-typed line is printed after
the goodbye, plain and on its own line, so it can be copied.

Private links are links.py's; their protocol is peer.py's.
"""

import logging
import math
import random
import re
import secrets
import signal
import sys
import time
from collections import deque
from contextlib import contextmanager

import gevent
from gevent.event import AsyncResult, Event
from gevent.pool import Group

from greenchat import __version__, codec, commands, frames, texts, tls
from greenchat.client import peer
from greenchat.client.console import default_history_path, visible
from greenchat.client.lineedit import Completer
from greenchat.client.links import PrivateLinks
from greenchat.commands import COMMANDS, parse_line
from greenchat.errors import (
    ConnectionLost,
    GreenchatError,
    InvalidCommand,
    ProtocolError,
    TLSError,
)
from greenchat.transport import FrameConnection

log = logging.getLogger("greenchat.client")

HANDSHAKE_TIMEOUT = 10.0
# After asking to log out, how long to wait for the server's goodbye.
LOGOUT_WAIT = 5.0
# How long the keyboard waits for a command's reply before taking the next
# line: answers then come in the order the commands were typed.
REPLY_WAIT = 30.0
# The largest frame taken from the server: a reply can list every user (a
# `whoelse` of 10,000 names of 21 characters is 240 KB). Peer links keep
# config.max_frame.
SERVER_MAX_FRAME = 16 * 1024 * 1024
# Acknowledgements: at most this long after the first message not yet
# acknowledged, or at once when this many are waiting.
ACK_DELAY = 0.1
ACK_EVERY = 64
# How many (sender, txn) pairs of messages shown are remembered.
TXN_MEMORY = 4096
# Reconnecting: the first try this long after the loss, each next one twice
# as long after the last, up to RETRY_MAX; each delay is cut to a random
# 50-100% of itself, so that clients dropped together do not all come back
# at once.
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
# A connection lost less than this long after a reconnect made it is lost in
# the same outage: the backoff goes on, and --reconnect-for counts from the
# first loss. So a server that drops every session at once, or a reply too
# large to take that a retry brings back every time, cannot keep the client
# reconnecting for ever.
STABLE_AFTER = 30.0


class Client:
    def __init__(self, config, console):
        self.config = config
        self.console = console
        self.conn = None
        self.user = None
        self.password = None       # the one that logged in, to log in again (memory only)
        self.resume_token = None   # the login's resume token, if the server gave one
        self.done = AsyncResult()
        # Set while logged in on a live connection; `disconnected`, its
        # opposite from the first login on, lets a wait wake at a loss.
        self.connected = Event()
        self.disconnected = Event()
        self._receiver = None      # the greenlet reading the current connection
        self._outage = None        # (deadline, next delay) of the last reconnect...
        self._up_since = None      # ...and when it succeeded
        self._workers = Group()    # receivers and the reconnector: none outlives the session
        self._next_id = 0
        # The largest command frame the server takes: its hello says.
        self.server_max_frame = codec.DEFAULT_MAX_FRAME
        self.answered = Event()  # set while no command of ours awaits its answer
        self.answered.set()
        self.listener = None
        # Built before connecting, so a bad --ca file is a usage error.
        self.tls_context = (tls.client_context(config.ca, config.insecure)
                            if config.tls else None)
        self.links = PrivateLinks(console, config.max_frame, self.tls_context is not None,
                                  self._last_line, self._opened)
        self.names = Completer(self.links)
        self._asked = None       # the spec of the command whose answer is awaited
        # Transaction ids: unique in this process, unlike the request ids.
        self._txn_prefix = secrets.token_urlsafe(6)
        self._txn_count = 0
        self.awaited_txn = None  # the txn (and line) of the command whose reply is awaited
        self.awaited_line = None
        # Delivery: kept for the whole process, across connections.
        self.last_id = None      # the highest message id shown (or dropped as shown already)
        self.shown_txns = set()  # (sender, txn) of the last TXN_MEMORY messages shown
        self._txn_order = deque()
        self._unacked = 0        # messages handled since the last ack
        self._ack_timer = None   # the timer greenlet of the next ack, until it starts
        self._ackers = Group()   # every ack greenlet alive: none outlives the session
        self._on = {"message": self._on_message, "presence": self._on_presence,
                    "reply": self._on_reply, "private_offer": self._on_offer,
                    "private_stop": self._on_private_stop, "names": self._on_names,
                    "bye": self._on_end, "error": self._on_end, "ping": self._on_ping,
                    "notice": self._on_notice}
        self.handlers = {commands.PRIVATE: self.links.private,
                          commands.STOPPRIVATE: self.links.stopprivate,
                          commands.HELP: self.cmd_help}

    def run(self):
        """Connect, log in and chat; return the process exit status."""
        console = self.console
        config = self.config
        try:
            self.conn = FrameConnection.connect(config.host, config.port, config.connect_timeout,
                                                SERVER_MAX_FRAME, tls_context=self.tls_context)
        except TLSError as exc:
            explain = texts.certificate_for_another_name if exc.wrong_name else \
                texts.certificate_refused if exc.verify else texts.tls_failed
            # The reason may quote the server's certificate.
            print(visible(explain(config.host, config.port, exc.reason)), file=sys.stderr)
            return 1
        except OSError as exc:
            print(visible(texts.cannot_connect(config.host, config.port,
                                               exc.strerror or str(exc) or type(exc).__name__)),
                  file=sys.stderr)
            return 1
        try:
            self._hello()
            self._listen()
            if not self._login():
                return 1
            return self._chat()
        except _Refused:
            return 1         # the server said why; _expect showed it
        except GreenchatError as exc:
            log.debug("session ended: %s", exc)
            console.show(texts.CONNECTION_LOST)
            return 1
        except Exception:
            log.exception("unexpected error during login; ending the session")
            console.show(texts.CONNECTION_LOST)
            return 1
        finally:
            if self.listener is not None:
                self.listener.stop()
            self.conn.close()

    # Handshake and login ----------------------------------------------------

    def _expect(self, kind=None, timeout=HANDSHAKE_TIMEOUT):
        """The next frame, of type `kind`; an error or bye frame is shown and
        ends the login (_Refused)."""
        frame = self.conn.read(timeout)
        if frame is None:
            raise ProtocolError("the server did not answer")
        if frame["type"] in ("error", "bye"):
            text = frames.optional_string(frame, "text")
            if text is not None:
                self.console.show(text)
            raise _Refused()
        if kind is not None and frame["type"] != kind:
            raise ProtocolError(f"expected {kind}, got {frame['type']!r}")
        return frame

    def _hello(self):
        self.conn.send(frames.hello(f"greenchat-client {__version__}"))
        answer = self._expect("hello")
        if not frames.speaks_our_version(answer):
            raise ProtocolError(f"the server speaks protocol version {answer.get('version')!r}")
        limit = answer.get("max_frame", codec.DEFAULT_MAX_FRAME)
        if type(limit) is not int or limit < 1:
            raise ProtocolError(f"a hello with max_frame {limit!r}")
        self.server_max_frame = limit

    def _login(self):
        console = self.console
        given = self.config.user
        try:
            while True:
                if given:
                    name, given = given, None       # --user: asked only if refused
                else:
                    console.prompt(texts.PROMPT_USERNAME)
                    name = console.read_line()
                if name is None:
                    return False
                self.conn.send(frames.username(name.strip()))
                status = self._login_status(("username", "password", "failed"))
                if status == "username":
                    continue
                if status == "failed":
                    return False
                while True:
                    console.prompt(texts.PROMPT_PASSWORD)
                    password = console.read_secret()
                    if password is None:
                        return False
                    self.conn.send(frames.password(password, *self._p2p()))
                    status = self._login_status(("ok", "password", "failed"), name)
                    if status == "ok":
                        self.password = password
                        return True
                    if status == "failed":
                        return False
        except _Refused:
            return False

    def _login_status(self, expected, name=None):
        """Read a login frame, show its text and return its status, one of
        `expected`; an `ok` sets self.user."""
        answer = self._expect("login", None)
        status, text, user = (frames.optional_string(answer, member)
                              for member in ("status", "text", "user"))
        if status not in expected:
            raise ProtocolError(f"unexpected login status {status!r}")
        if text is not None:
            self.console.show(text)
        retry_after = answer.get("retry_after")
        if status == frames.FAILED and type(retry_after) in (int, float) and retry_after >= 0:
            self.console.hint(texts.retry_in(math.ceil(retry_after)))
        if status == "ok":
            self.user = self.links.me = self.names.me = name if user is None else user
            self.resume_token = frames.optional_string(answer, "resume")
        return status

    def _p2p(self):
        """The p2p arguments of a password or resume frame: where this
        client takes private links, or () without a listener."""
        listener = self.listener
        if listener is None:
            return ()
        return listener.host, listener.address[1], listener.fingerprint

    # The session ------------------------------------------------------------

    def _chat(self):
        console = self.console
        console.hint(texts.HELP_HINT)
        console.start_editing(texts.PROMPT, self.names,
                              default_history_path(self.config.host, self.config.port, self.user)
                              if self.config.history else None)
        # Killed or hung up: log out as cleanly as end of input does, and
        # leave through the same `finally` that gives the terminal back.
        handlers = [gevent.signal_handler(signum, self._terminated)
                    for signum in (signal.SIGTERM, signal.SIGHUP)]
        self.connected.set()
        if console.interactive:
            # Tab completes every name the server may show us, offline ones too.
            self.conn.send(frames.names_request())
        self._receiver = self._workers.spawn(self._receive, self.conn)
        keyboard = gevent.spawn(self._keyboard)
        try:
            return self.done.get()
        except KeyboardInterrupt:
            # Ctrl-C: the same; a second one leaves at once (cli.py).
            keyboard.kill()
            self._request_logout()
            try:
                return self.done.get(timeout=LOGOUT_WAIT)
            except gevent.Timeout:
                return 1
        finally:
            for handler in handlers:
                handler.cancel()
            # Over: a loss from here on is no news, and nothing sends.
            self.connected.clear()
            keyboard.kill()
            self._workers.kill()
            self._ack_timer = None
            self._ackers.kill(timeout=1)
            self.links.close_all()
            console.stop_editing()

    def _terminated(self):
        self._request_logout()
        gevent.spawn_later(LOGOUT_WAIT, self._finish, 1)

    def _listen(self):
        """Accept private links; the password frame tells the server where."""
        host = self.config.p2p_host or self.conn.sock.getsockname()[0]
        identity = tls.session_identity() if self.tls_context is not None else None
        listener = peer.PeerListener(host, self.config.p2p_port, peer.TokenBook(),
                                     self.links.accept, self.config.max_frame, identity)
        try:
            listener.start()
        except OSError as exc:
            log.warning("cannot accept private links on %s:%s: %s",
                        host, self.config.p2p_port, exc.strerror or exc)
            return
        self.listener = listener

    def _finish(self, status):
        if not self.done.ready():
            self.done.set(status)

    def _lost(self):
        """End the session as a lost connection, saying so once."""
        if not self.done.ready():
            self.console.show(texts.CONNECTION_LOST)
        self._finish(1)

    def _dropped(self, conn):
        """`conn` failed. If it is the session's connection, and this is the
        first news of it, reconnect (with --no-reconnect, end the session)."""
        if conn is not self.conn or not self.connected.is_set() or self.done.ready():
            return
        self.connected.clear()
        self.disconnected.set()
        if self.config.reconnect:
            self._workers.spawn(self._reconnect, conn)
        else:
            self._lost()

    def _send(self, frame):
        """Send `frame` on the session's connection: False if it is down (a
        failure is handed to _dropped)."""
        conn = self.conn
        if not self.connected.is_set():
            return False
        try:
            conn.send(frame)
        except GreenchatError as exc:
            log.debug("send failed: %s", exc)
            self._dropped(conn)
            return False
        return True

    def _wait_connected(self):
        """Wait while a reconnect is under way; False if it never ended."""
        return self.connected.wait(self.config.reconnect_for + HANDSHAKE_TIMEOUT)

    # Reconnecting -----------------------------------------------------------

    def _reconnect(self, old):
        """The connection `old` was lost: log in again, or end the session."""
        with self._last_line("reconnecting"):
            # Nothing reads or writes `old` any more. What the ack greenlets
            # would acknowledge goes once a new connection is up.
            receiver, self._receiver = self._receiver, None
            if receiver is not None:
                receiver.kill()
            self._ack_timer = None
            self._ackers.kill()
            old.close()
            self.console.show(texts.RECONNECTING)
            self.links.end_all()
            now = time.monotonic()
            if self._outage is not None and now - self._up_since < STABLE_AFTER:
                deadline, delay = self._outage
            else:
                deadline, delay = now + self.config.reconnect_for, RETRY_FIRST
            busy = None         # the text of the last refusal that was worth a retry
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                gevent.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, RETRY_MAX)
                if time.monotonic() >= deadline:
                    break
                try:
                    conn = self._log_in_again(deadline)
                except _Refused:
                    self._finish(1)         # the server said why
                    return
                except _Busy as exc:
                    busy = exc.text
                    log.debug("reconnect: %s", exc.text)
                    continue
                except (GreenchatError, OSError) as exc:
                    busy = None
                    log.debug("reconnect attempt failed: %s", exc)
                    continue
                self.conn = conn
                self._outage, self._up_since = (deadline, delay), time.monotonic()
                self.disconnected.clear()
                self.console.show(texts.RECONNECTED)
                self._receiver = self._workers.spawn(self._receive, conn)
                self.connected.set()
                return
            if busy is not None:
                self.console.show(busy)
            self._lost()

    def _log_in_again(self, deadline):
        """One try: a new connection, logged in as before, the awaited
        command sent again and what was shown acknowledged; that connection.

        Raises _Refused (the server's text shown) if the server will not log
        us in, _Busy if the account is still logged in, GreenchatError or
        OSError for anything else worth another try. No step waits past
        `deadline`."""
        def left(most):
            return max(0.01, min(most, deadline - time.monotonic()))

        conn = FrameConnection.connect(self.config.host, self.config.port,
                                       left(self.config.connect_timeout), SERVER_MAX_FRAME,
                                       tls_context=self.tls_context)
        try:
            conn.send(frames.hello(f"greenchat-client {__version__}"))
            hello = conn.read(left(HANDSHAKE_TIMEOUT))
            if hello is None or hello["type"] != "hello" or not frames.speaks_our_version(hello):
                raise ProtocolError(f"no hello of our version: {hello!r}")
            answer = None
            if self.resume_token is not None:
                conn.send(frames.resume(self.user, self.resume_token, self.last_id or 0,
                                        *self._p2p()))
                answer = self._login_step(conn, left(HANDSHAKE_TIMEOUT),
                                          (frames.LOGGED_IN, frames.EXPIRED), (frames.FAILED,))
            if answer is None or answer["status"] != frames.LOGGED_IN:
                conn.send(frames.username(self.user))
                self._login_step(conn, left(HANDSHAKE_TIMEOUT), (frames.ASK_PASSWORD,),
                                 (frames.ASK_USERNAME, frames.FAILED))
                conn.send(frames.password(self.password, *self._p2p()))
                answer = self._login_step(conn, left(HANDSHAKE_TIMEOUT), (frames.LOGGED_IN,),
                                          (frames.ASK_PASSWORD, frames.FAILED))
            self.resume_token = frames.optional_string(answer, "resume")
            if self.awaited_txn is not None:
                self._next_id += 1
                conn.send(frames.command(self._next_id, self.awaited_line,
                                         txn=self.awaited_txn, retry=True))
            if self._unacked and self.last_id is not None:
                conn.send(frames.ack(self.last_id))
                self._unacked = 0
            return conn
        except BaseException:
            conn.close()
            raise

    def _login_step(self, conn, timeout, goes_on, refused):
        """The login frame answering a step of a new login, if its status is
        one of `goes_on`. A status in `refused` is shown and raises _Refused,
        but `This account is already logged in` raises _Busy; an error or a
        bye frame, or any other status, are for another try."""
        frame = conn.read(timeout)
        if frame is None:
            raise ProtocolError("the server did not answer")
        if frame["type"] in ("error", "bye"):
            raise ConnectionLost(f"the server ended the login: {frame.get('text')!r}")
        if frame["type"] != "login":
            raise ProtocolError(f"expected login, got {frame['type']!r}")
        status, text = (frames.optional_string(frame, member) for member in ("status", "text"))
        if status in goes_on:
            return frame
        if status == frames.FAILED and text == texts.ALREADY_LOGGED_IN:
            raise _Busy(text)
        if status not in refused:
            raise ProtocolError(f"unexpected login status {status!r}")
        if text is not None:
            self.console.show(text)
        raise _Refused()

    @contextmanager
    def _last_line(self, what):
        """The last line of defence around a greenlet's work: a bug logs its
        traceback and ends the session, instead of killing the greenlet
        (and leaving the session waiting for it)."""
        try:
            yield
        except Exception:
            log.exception("unexpected error %s; ending the session", what)
            self._lost()

    def _receive(self, conn):
        with self._last_line("reading the server"):
            try:
                while not self._on_frame(conn.read()):
                    pass
            except GreenchatError as exc:
                log.debug("receive ended: %s", exc)
                self._dropped(conn)

    def _on_frame(self, frame):
        """Act on one frame from the server; True if it ended the session."""
        handler = self._on.get(frame["type"])
        if handler is None:
            log.debug("ignoring unknown frame type %r", frame["type"])
            return False
        return handler(frame)

    def _on_message(self, frame):
        msg_id = frames.integer_or_none(frame.get("id"))
        if msg_id is not None and msg_id < 0:
            msg_id = None           # an ack cannot name it
        if msg_id is not None and self.last_id is not None and msg_id <= self.last_id:
            self._handled()         # shown already: the server missed our ack
            return
        text, sender = frames.string_or_none(frame, "text"), frames.string_or_none(frame, "from")
        txn = frames.string_or_none(frame, "txn")
        if msg_id is not None:
            self.last_id = msg_id
        if text is not None and not (txn is not None and (sender, txn) in self.shown_txns):
            self.names.saw(sender)
            # Marks and the time it was sent: a terminal's alone (console.show).
            offline, sent_at = frame.get("offline") is True, frame.get("sent_at")
            self.console.show(
                texts.message_line("?" if sender is None else sender, text),
                "self" if self.user and _mentions(text, self.user) else None,
                at=sent_at if offline and type(sent_at) in (int, float) else None,
                prefix=texts.BROADCAST_MARK if frame.get("broadcast") is True else None,
                mark=texts.OFFLINE_MARK if offline else None)
            if txn is not None:
                self._remember_txn(sender, txn)
        if msg_id is not None:
            # Acknowledged even if not shown: a duplicate, or a frame with
            # no text, would only come again.
            self._handled()

    def _remember_txn(self, sender, txn):
        key = (sender, txn)
        self.shown_txns.add(key)
        self._txn_order.append(key)
        if len(self._txn_order) > TXN_MEMORY:
            self.shown_txns.discard(self._txn_order.popleft())

    # Acknowledgements -------------------------------------------------------

    def _handled(self):
        """A message with an id was handled: acknowledge it, batched."""
        self._unacked += 1
        if self._unacked >= ACK_EVERY:
            self._flush_ack()
        elif self._ack_timer is None:
            self._ack_timer = gevent.spawn_later(ACK_DELAY, self._ack_later)
            self._ackers.add(self._ack_timer)

    def _ack_later(self):
        self._ack_timer = None      # from here on only the session's end (or a loss) kills it
        with self._last_line("acknowledging messages"):
            self._send_ack()

    def _flush_ack(self):
        """Acknowledge now whatever is waiting."""
        timer, self._ack_timer = self._ack_timer, None
        if timer is not None:
            timer.kill(block=False)     # not started: it has sent nothing
        self._send_ack()

    def _send_ack(self):
        """Acknowledge up to last_id; what a lost connection did not take
        is acknowledged on the next one (_log_in_again)."""
        if self._unacked and self.last_id is not None:
            count, self._unacked = self._unacked, 0
            sent = False
            try:
                sent = self._send(frames.ack(self.last_id))
            finally:
                if not sent:
                    self._unacked += count

    def _on_presence(self, frame):
        user, online = frames.string_or_none(frame, "user"), frame.get("online")
        if user is not None and isinstance(online, bool):
            self.names.saw(user)
            self.console.show(texts.presence_line(user, online), "presence")

    def _on_names(self, frame):
        users = frame.get("users")
        if isinstance(users, list):
            for user in users:
                if isinstance(user, str):
                    self.names.saw(user)

    def _on_offer(self, frame):
        sender, token = frames.string_or_none(frame, "from"), frames.string_or_none(frame, "token")
        self.names.saw(sender)
        if self.listener is not None and sender is not None and token is not None:
            self.listener.offer(sender, token)

    def _on_private_stop(self, frame):
        user = frames.string_or_none(frame, "user")
        if user is not None:
            self.links.end(user)

    def _on_ping(self, frame):
        self._send(frames.pong())

    def _on_notice(self, frame):
        """A line from the server itself (the idle warning): shown as it is."""
        text = frames.string_or_none(frame, "text")
        if text is not None:
            self.console.show(text)

    def _on_end(self, frame):
        """A bye or an error frame: the session is over, whatever its members
        (one of the wrong type ends it as a lost connection, not a reconnect)."""
        try:
            text = frames.optional_string(frame, "text")
            reason = frames.optional_string(frame, "reason") if frame["type"] == "bye" else None
        except ProtocolError as exc:
            log.debug("session ended: %s", exc)
            self._lost()
            return True
        if text is not None:
            self.console.show(text)
        if reason == frames.IDLE:
            # The line being typed is not lost with the session.
            self.console.keep_typed_line()
        self._finish(0 if reason in (frames.LOGOUT, frames.IDLE) else 1)
        return True

    def _on_reply(self, frame):
        lines = frame.get("lines")
        lines = [line for line in lines if isinstance(line, str)] \
            if isinstance(lines, list) else []
        request_id = frames.integer_or_none(frame.get("id"))
        if request_id is not None and request_id == self._next_id and \
                self._asked is not None and self._asked.lists_users:
            for line in lines:
                self.names.saw(line)
        for line in lines:
            self.console.show(line)
        if request_id == self._next_id and self.awaited_line is not None:
            self._feedback(frame, lines, self.awaited_line)
        history = frame.get("history")
        if isinstance(history, list):
            self._show_history(history)
        if request_id is not None and request_id == self._next_id:
            self.awaited_txn = self.awaited_line = None
        offer = frame.get("private")
        if isinstance(offer, dict) and frames.string_or_none(offer, "user") is not None:
            # The keyboard waits until the link is up or failed.
            gevent.spawn(self.links.open, offer)
        elif request_id is not None and request_id == self._next_id:
            self.answered.set()
            self._prompt()

    def _feedback(self, frame, lines, line):
        """The client's own word on a reply (a terminal's alone): a hint
        for a refused line, what became of a message or a broadcast."""
        if lines == [texts.INVALID_COMMAND]:
            self.console.hint(commands.hint(line))
        elif frame.get("stored") is True and frame.get("ok") is True:
            try:
                _, (user, _) = parse_line(line)
            except (InvalidCommand, ValueError):
                return
            self.console.hint(texts.stored_for(user))
        elif frame.get("delivered") == 0 and type(frame.get("delivered")) is int:
            self.console.hint(texts.NO_ONE_ONLINE)

    def _show_history(self, entries):
        """A `history` answer's entries, oldest first; one that lacks a string
        "from" or "text" or a number "sent_at" is skipped."""
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            sender, text = (frames.string_or_none(entry, member) for member in ("from", "text"))
            sent_at = entry.get("sent_at")
            if sender is None or text is None or type(sent_at) not in (int, float):
                continue
            try:
                stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(sent_at))
            except (OverflowError, OSError, ValueError):
                continue            # no time a clock can show
            self.names.saw(sender)
            self.names.saw(frames.string_or_none(entry, "to"))
            self.console.show(texts.history_line(stamp, sender, text))

    def _prompt(self):
        self.console.command_prompt(texts.PROMPT)

    def _opened(self):
        """A startprivate's link is up or failed: the keyboard goes on."""
        self.answered.set()
        self._prompt()

    # What Tab completes -----------------------------------------------------

    def _keyboard(self):
        with self._last_line("reading the keyboard"):
            self._read_keyboard()

    def _read_keyboard(self):
        self._prompt()
        while True:
            line = self.console.read_line()
            if line is None:
                self._wait_connected()
                self._request_logout()
                gevent.sleep(LOGOUT_WAIT)
                self._finish(1)
                return
            if not line.strip():
                self._prompt()
                continue
            try:
                spec, args = parse_line(line)
            except InvalidCommand:
                spec, args = None, ()
            if spec in self.handlers:
                self.handlers[spec](*args)
                self._prompt()
                continue
            if spec is commands.STARTPRIVATE and args[0] in self.links:
                # Only this client knows its links; the server checks the rest.
                self.console.show(texts.private_already_active(args[0]))
                self._prompt()
                continue
            size = self._frame_size(line)
            if size > self.server_max_frame:
                # Sent, it would cost the session: the server drops a frame too large.
                self.console.show(texts.message_too_long(size, self.server_max_frame))
                self.console.keep(line)
                self._prompt()
                continue
            # During a reconnect the line waits, and the next ones in the console.
            if not self._wait_connected():
                return
            self._send_command(line, spec)
            self._await_reply()

    def _await_reply(self):
        """Wait for the reply to the command sent last, REPLY_WAIT from the
        moment it went: a reconnect sends it again, and the wait starts over."""
        deadline = time.monotonic() + REPLY_WAIT
        while not self.answered.is_set():
            if not self.connected.is_set():
                if not self._wait_connected():
                    return
                deadline = time.monotonic() + REPLY_WAIT
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return
            gevent.wait([self.answered, self.disconnected], timeout=left, count=1)

    def _frame_size(self, line):
        """The bytes (without the newline, as the server counts them) of the
        frame that would carry `line` as the next command, as resent after a
        reconnect: the largest it can be."""
        txn = f"{self._txn_prefix}.{self._txn_count + 1}"
        return len(codec.encode(frames.command(self._next_id + 1, line, txn=txn, retry=True))) - 1

    def _send_command(self, line, spec=None):
        """Send a typed line (its spec, if it parsed) as the next command; if
        the connection is lost, the reconnect sends it again."""
        self._next_id += 1
        self._txn_count += 1
        self.answered.clear()
        self._asked = spec        # the keyboard waits for each reply in turn
        self.awaited_txn, self.awaited_line = f"{self._txn_prefix}.{self._txn_count}", line
        self._send(frames.command(self._next_id, line, txn=self.awaited_txn))

    def _request_logout(self):
        if not self.connected.is_set():
            self._finish(1)         # nobody to say goodbye to
            return
        # What was shown is acknowledged first, or it would come again.
        self._flush_ack()
        self._send_command("logout", commands.LOGOUT)

    # Local commands ---------------------------------------------------------

    def cmd_help(self):
        """help"""
        width = max(len(spec.syntax) for spec in COMMANDS.values())
        for spec in COMMANDS.values():
            self.console.show(f"{spec.syntax.ljust(width)}  {spec.summary}")


def _mentions(text, name):
    """True if `text` names `name` as a whole word (`hans`, not `chansons`)."""
    return re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text) is not None


class _Refused(Exception):
    """The server ended the login with a message already shown."""


class _Busy(Exception):
    """A new login was refused as the account is logged in still: the
    server has likely not yet seen the lost connection end."""

    def __init__(self, text):
        super().__init__(text)
        self.text = text
