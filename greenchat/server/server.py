"""The greenchat server: one greenlet per connection, one mailbox per user.

Strategy
- A gevent StreamServer spawns `_handle` in a greenlet for each connection.
  That greenlet is the connection's only reader; it walks the connection
  through the TLS handshake, hello, login and the command loop, and tears it
  down. Connections are counted per network from the moment they are
  accepted, and a connection over a limit is refused at once.
- The web client's listener (web.py) admits its connections through the
  same limits (`admit`), and a WebSocket runs the same session as a TCP
  connection (`serve_connection`): only its reader and writer differ.
- Each connection's Outbox (transport.py) is its only writer: a mailbox
  drained by one writer greenlet, so a slow reader delays nobody else
  (session.py: where deliveries go, and how no accepted message is lost).
- What the server is made of: Accounts (who may log in: accounts.py), Chat
  (who is online, blocks, presence, the commands: chat.py), Mailroom (stored
  mail: session.py), the Store (all of SQLite, in its own thread: store.py).
- Idle logout is the reader's receive timeout, counted from the last command;
  a notice warns of it once per idle period (idle_warning_after).
- Stopping tells every client, flushes what it can and stores the rest.
"""

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from time import monotonic

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.server import StreamServer

from greenchat import __version__, commands, frames, texts, tls
from greenchat import websocket as ws
from greenchat.codec import encode
from greenchat.errors import (
    CommandError,
    ConfigError,
    ConnectionLost,
    Flooding,
    FrameTooLarge,
    GreenchatError,
    Overloaded,
    ProtocolError,
    StoreError,
    TLSError,
)
from greenchat.server import runtime
from greenchat.server.accounts import Accounts
from greenchat.server.addresses import canonical, network_key
from greenchat.server.chat import Chat, Later
from greenchat.server.session import (
    CLOSING,
    FLUSH_TIMEOUT,
    HIBERNATING,
    LATER_MAX,
    LOADING,
    ONLINE,
    Mailroom,
    Session,
)
from greenchat.server.web import WebListener
from greenchat.transport import SHUT_RD, close, configure, refuse, shutdown

log = logging.getLogger("greenchat.server")

# How long a new login waits for the same account's closing session to finish:
# longer than that session may take to flush its mailbox and give up.
TAKEOVER_WAIT = FLUSH_TIMEOUT + 2.0
# A writer greenlet that wrote nothing for one to two of these ends; the next
# frame starts another (transport.Outbox.retire_if_idle).
WRITER_IDLE = 2.0
# How long a reader waits for the store to commit what its client sent.
STORE_WAIT = 60.0
# Replies kept per user for commands sent again after a reconnect.
ANSWERS_KEPT = 64
# The longest a TLS handshake may take (less if the login deadline comes first).
TLS_HANDSHAKE_TIMEOUT = 10.0
# The idle logout is announced this long before it, or at half the timeout
# when that is shorter than twice this.
IDLE_WARNING = 60.0


def idle_warning_after(timeout):
    """Seconds after the last command at which the idle warning goes out."""
    return timeout - IDLE_WARNING if timeout >= 2 * IDLE_WARNING else timeout / 2


def seconds_left(left):
    """The whole seconds a warning names for `left` seconds: rounded up, but
    a timer's last microseconds (60.000001) do not make one more."""
    return max(1, math.ceil(round(left, 2)))


def _hash(token):
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


_BYE_TEXTS = {
    frames.LOGOUT: texts.GOODBYE,
    frames.IDLE: texts.LOGGED_OUT_IDLE,
    frames.SHUTDOWN: texts.SERVER_SHUTTING_DOWN,
    frames.REMOVED: texts.ACCOUNT_REMOVED,
}

# What ends a connection with an error frame, and which.
_FATAL = ((FrameTooLarge, texts.FRAME_TOO_LARGE), (Flooding, texts.FLOODING),
          (Overloaded, texts.TOO_MANY_CONNECTIONS), (ProtocolError, texts.MALFORMED_FRAME))


class ChatServer:
    """The server. start() binds and loads state; stop() ends it cleanly."""

    def __init__(self, config, credentials, store, clock=time.time):
        self.config = config
        self.store = store
        self.clock = clock
        self.accounts = Accounts(config, credentials, store, self._now, self._end_account)
        self.mailroom = Mailroom(store, config, self._now)
        self.chat = Chat(self.accounts, store, self.mailroom, self._now)
        self.sessions = set()                  # every connection
        self.per_address = {}                  # network (addresses.network_key) -> connections
        self.max_connections = config.max_connections  # lowered by start() to fit the file limit
        self.joining = set()                   # users whose login the store is recording
        self.answers = {}                      # user -> {txn: reply frame}, the latest few
        self.stopping = False
        self._stopped = Event()
        self._pool = Pool(None)
        self.unserved = 0                      # connections admitted with no session yet
        self.handshaking = set()               # greenlets in a TLS handshake, either port
        self.web = None                        # the web client's listener, if it runs
        self.framer = ws.Framer()              # a broadcast's WebSocket message, made once
        self._sweeper = None
        self.tls = (tls.server_context(config.tls_cert, config.tls_key)
                    if config.tls_cert else None)
        self.stream = StreamServer((config.host, config.port), self._handle,
                                   spawn=self._pool, backlog=config.backlog)

    def _now(self):
        return self.clock()

    # Life cycle -------------------------------------------------------------

    @property
    def address(self):
        return self.stream.server_host, self.stream.server_port

    @property
    def connections(self):
        """Connections held now, those in their TLS handshake or HTTP included."""
        return len(self.sessions) + self.unserved

    @property
    def online(self):
        """user -> Session, for everyone logged in."""
        return self.chat.online

    def start(self):
        self.accounts.start()
        fd_limit = runtime.raise_fd_limit()
        self.max_connections, held = runtime.connection_limits(self.config.max_connections,
                                                               fd_limit)
        if self.max_connections < self.config.max_connections:
            log.warning("--max-connections %d is more than %d open files allow: "
                        "holding at most %d connections", self.config.max_connections,
                        fd_limit, self.max_connections)
        # A full pool pauses the accept loop: accept never meets EMFILE, whatever the flood.
        self._pool = Pool(held)
        self.stream.set_spawn(self._pool)
        for user, login_id, acked in self.mailroom.start():
            if user in self.accounts:
                self._restore(user, login_id, acked)
        self.chat.load(self.store)
        self._sweeper = gevent.spawn(self._retire_idle_writers)
        try:
            self.stream.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc.strerror or exc}") from None
        log.info("greenchat %s listening on %s:%d", __version__, *self.address)
        if self.config.http_port is not None:
            self._start_web()

    def _start_web(self):
        """The web client's listener; a port taken leaves chat running without it."""
        web = WebListener(self, self.config.host, self.config.http_port, self._pool)
        try:
            web.start()
        except ConfigError as exc:
            log.warning("%s: serving chat without the web client", exc)
            return
        self.web = web

    def serve_forever(self):
        self._stopped.wait()

    def reload_credentials(self):
        """Take the accounts file as it is now (SIGHUP)."""
        self.accounts.reload()

    def stop(self, timeout=10.0):
        """Tell every client, flush, store what is undelivered, close the store."""
        if self.stopping:
            self._stopped.wait(timeout)
            return
        self.stopping = True
        log.info("stopping: %d connection(s)", len(self.sessions))
        self.stream.close()
        # A handshake would hold the stop for its whole timeout: ended now
        # (a shutdown does not reach the TLS socket it makes on the way).
        for greenlet in list(self.handshaking):
            greenlet.kill(block=False)
        if self.web is not None:
            self.web.close()
            self.web.end_http()
        for session in list(self.sessions):
            session.end_reason = session.end_reason or frames.SHUTDOWN
            # Only the read side: the reader wakes up, and the writer can still
            # flush the goodbye frame.
            shutdown(session.sock, SHUT_RD)
        self._pool.join(timeout=timeout)
        self._pool.kill(timeout=1)
        # Sessions waiting for their clients end too, their logouts recorded.
        for session in [s for s in self.online.values() if s.state is HIBERNATING]:
            self._end_hibernation(session, "server stopping")
        self.chat.presence.stop()
        if self._sweeper is not None:
            self._sweeper.kill()
        self.accounts.stop()
        self.mailroom.close()
        self.store.close()
        self._stopped.set()
        log.info("stopped")

    def _retire_idle_writers(self):
        """Now and then, end the writer greenlets of connections that wrote
        nothing lately (transport.Outbox.retire_if_idle)."""
        while True:
            gevent.sleep(WRITER_IDLE)
            for count, session in enumerate(list(self.sessions)):
                session.outbox.retire_if_idle()
                if count % 1000 == 999:
                    gevent.sleep(0)

    # Connections ------------------------------------------------------------

    def admit(self, address):
        """Count a new connection from `address` in the connection limits:
        its network's key, or None (nothing counted) if it is over one."""
        # A crowd from one site takes neighbouring addresses: counted per network.
        network = network_key(canonical(address[0]), self.config.ipv4_prefix,
                              self.config.ipv6_prefix)
        held = self.per_address.get(network, 0)
        if self.connections >= self.max_connections or held >= self.config.max_per_address:
            return None
        self.per_address[network] = held + 1
        return network

    def release(self, network):
        """An admitted connection has ended."""
        left = self.per_address[network] - 1
        if left:
            self.per_address[network] = left
        else:
            del self.per_address[network]

    def _handle(self, sock, address):
        login_deadline = monotonic() + self.config.login_timeout
        # Counted from the first moment, TLS handshake included, or a crowd of
        # silent connections would escape the limits.
        network = self.admit(address)
        if network is None:
            log.warning("refused a connection from %s: too many connections", address[0])
            # Now, not after a TLS handshake or a flush: refusals must hold no descriptors.
            refuse(sock, None if self.tls is not None else
                   encode(frames.error(texts.TOO_MANY_CONNECTIONS)))
            return
        configure(sock)
        try:
            if self.tls is not None:
                sock = self._tls_handshake(sock, address[0], login_deadline)
                if sock is None:
                    return
            self.serve_connection(sock, address, network, login_deadline)
        finally:
            self.release(network)

    def serve_connection(self, sock, address, network, login_deadline, websocket=None):
        """Run an admitted connection's session to its end: a TCP one, or
        (`websocket`: the bytes past its upgrade request) a WebSocket."""
        session = Session(sock, address, network, login_deadline, self.config, websocket,
                          self.framer)
        self.sessions.add(session)
        try:
            self._serve(session)
        finally:
            self.sessions.discard(session)

    def _tls_handshake(self, sock, host, login_deadline):
        """The TLS socket over `sock`, or None (and `sock` closed) on failure."""
        self.unserved += 1
        try:
            return self.tls_accept(
                sock, max(0.0, min(TLS_HANDSHAKE_TIMEOUT, login_deadline - monotonic())),
                encode(frames.error(texts.TLS_REQUIRED)))
        except TLSError as exc:
            log.info("TLS connection from %s refused: %s", host, exc)
            close(sock)
            return None
        finally:
            self.unserved -= 1

    def tls_accept(self, sock, timeout, plain_refusal):
        """tls.accept with this server's certificate, for either port; a
        stopping server ends it at once."""
        greenlet = gevent.getcurrent()
        self.handshaking.add(greenlet)
        try:
            return tls.accept(sock, self.tls, timeout, plain_refusal)
        finally:
            self.handshaking.discard(greenlet)

    def _serve(self, session):
        """Walk a connection through hello, login and commands, then end it.

        No exception but the session's own end leaves here: a client's error
        ends its connection (with an error frame where the protocol has one),
        and a bug is logged with its traceback and ends that session alone.
        """
        try:
            self._hello(session)
            if self._login(session):
                self._command_loop(session)
        except ConnectionLost as exc:
            log.debug("%s: %s", session, exc)
            session.dropped = True
        except GreenchatError as exc:
            text = next((text for kind, text in _FATAL if isinstance(exc, kind)), None)
            if text is None:
                log.error("%s: %s", session, exc)
            else:
                log.info("%s: %s", session, exc)
                session.send(frames.error(text))
        except Exception:
            log.exception("%s: internal error", session)
        finally:
            try:
                self._end(session)
            except Exception:
                log.exception("%s: internal error while ending the session", session)

    def _read(self, session, timeout):
        if self.stopping:
            raise ConnectionLost("server stopping")
        frame = session.reader.read_frame(timeout)
        if frame is not None and not session.bucket.take():
            raise Flooding("too many frames too fast")
        return frame

    def _read_login(self, session):
        """The next frame before login; None (the client told) past the deadline."""
        frame = self._read(session, session.login_deadline - monotonic())
        if frame is None:
            session.send(frames.error(texts.LOGIN_TIMEOUT))
        return frame

    def _hello(self, session):
        frame = self._read_login(session)
        if frame is None:
            raise ConnectionLost("no hello")
        if frame["type"] != "hello":
            raise ProtocolError(f"expected hello, got {frame['type']!r}")
        if not frames.speaks_our_version(frame):
            session.send(frames.error(texts.UNSUPPORTED_VERSION))
            raise ConnectionLost(f"unsupported protocol version {frame.get('version')!r}")
        session.send(frames.server_hello(f"greenchat {__version__}", self.config.max_frame))

    def _login(self, session):
        """Run the username/password exchange; True once the user is online."""
        accounts = self.accounts
        name = None
        while True:
            frame = self._read_login(session)
            if frame is None:
                return False
            kind = frame["type"]
            if kind == "username":
                candidate = frames.string(frame, "username")
                name = candidate if candidate in accounts else None
                session.send(frames.login(frames.ASK_PASSWORD) if name is not None else
                             frames.login(frames.ASK_USERNAME, texts.INVALID_USERNAME))
            elif kind == "resume":
                if self._resume(session, frame):
                    return True
                # No session to take back: the client logs in with its password.
                session.send(frames.login(frames.EXPIRED))
            elif kind == "password" and name is not None and name not in accounts:
                # Deleted since its username was taken.
                name = None
                session.send(frames.login(frames.ASK_USERNAME, texts.INVALID_USERNAME))
            elif kind == "password" and name is not None:
                # Known from the first moment the user is online, so a
                # startprivate can never arrive before it. Never the host the
                # client names: peers would connect wherever a client said.
                p2p = frames.p2p_port(frame)
                if p2p is not None:
                    session.p2p = (canonical(session.address[0]), *p2p)
                account = accounts.generation(name)
                outcome = accounts.check_password(name, frames.string(frame, "password"),
                                                  session.network)
                if outcome is None:
                    return self._register(session, name, account)
                status, text, retry_after = outcome
                session.send(frames.login(status, text, retry_after=retry_after))
                if status == frames.FAILED:
                    return False
            else:
                raise ProtocolError(f"unexpected {kind!r} frame during login")

    def _register(self, session, name, account):
        """Log `name` in on `session` and send its stored messages; False if
        the login is refused. `account` is the generation of `name`'s account
        whose password was checked (Accounts.generation)."""
        existing = self.online.get(name)
        if existing is not None and existing.state is CLOSING:
            # The same user logging straight back in: let the old session
            # record its end first, so the new one's backlog holds all it missed.
            existing.closed.wait(TAKEOVER_WAIT)
            existing = self.online.get(name)
        if name not in self.accounts:
            # Deleted while its password was being checked.
            session.send(frames.login(frames.FAILED, texts.INVALID_USERNAME))
            return False
        if existing is not None and existing.state is HIBERNATING and not self.stopping:
            # Its connection dropped: this login takes the session over.
            token = self._new_token()
            try:
                self.store.set_token(name, _hash(token))
            except StoreError as exc:
                log.error("login of %s refused: %s", name, exc)
                session.send(frames.login(frames.FAILED, texts.LOGIN_UNAVAILABLE))
                return False
            self._take_over(session, existing, 0, frames.login(
                frames.LOGGED_IN, texts.WELCOME, user=name, token=token))
            return True
        if existing is not None or name in self.joining or self.stopping:
            log.info("login refused: %s is already logged in", name)
            session.send(frames.login(frames.FAILED, texts.ALREADY_LOGGED_IN))
            return False
        # The store first, the welcome after: a login the store cannot record
        # is refused, never announced and then dropped. Meanwhile the user is
        # still offline (mail to them is logged, and read below).
        self.joining.add(name)
        token = self._new_token()
        try:
            session.login_id, session.acked = self.mailroom.open_session(name, self._now(),
                                                                         _hash(token))
        except StoreError as exc:
            log.error("login of %s refused: %s", name, exc)
            session.send(frames.login(frames.FAILED, texts.LOGIN_UNAVAILABLE))
            return False
        finally:
            self.joining.discard(name)
        if self.accounts.generation(name) != account:
            # Deleted, or deleted and added again, while it was checked or
            # recorded: that password opened an account that is gone.
            log.info("login refused: the account %s changed during its login", name)
            self._record_logout(session)
            session.send(frames.login(frames.FAILED, texts.INVALID_USERNAME))
            return False
        session.user = name
        self.chat.came_online(session)
        session.send(frames.login(frames.LOGGED_IN, texts.WELCOME, user=name, token=token))
        log.info("login: %s from %s:%s", name, *session.address[:2])
        # Its own greenlet: acknowledgements are read while the backlog goes
        # out; commands wait for it (_command_loop).
        session.loader = gevent.spawn(self.mailroom.catch_up, session)
        return True

    @staticmethod
    def _new_token():
        return secrets.token_urlsafe(32)

    def _resume(self, session, frame):
        """A resume frame: True once `session` has taken its user's session
        back (alive, hibernating, or restored after a restart)."""
        name, token, last = frames.resume_fields(frame)
        if name not in self.accounts:
            return False
        try:
            known = self.store.token_hash(name)
        except StoreError as exc:
            log.error("resume of %s refused: %s", name, exc)
            return False
        if known is None or not hmac.compare_digest(known, _hash(token)):
            log.info("resume of %s refused: not its token", name)
            return False
        existing = self.online.get(name)
        if existing is not None and existing.state in (LOADING, ONLINE):
            # Its client is back before the server saw the old connection
            # die: end that connection, and take its session once it hibernates.
            shutdown(existing.sock)
            existing.hibernated.wait(TAKEOVER_WAIT)
            existing = self.online.get(name)
        if existing is None or existing.state is not HIBERNATING or self.stopping:
            return False
        p2p = frames.p2p_port(frame)
        if p2p is not None:
            session.p2p = (canonical(session.address[0]), *p2p)
        self._take_over(session, existing, last, frames.login(
            frames.LOGGED_IN, user=name, token=token, resumed=True))
        return True

    def _take_over(self, session, old, last, welcome):
        """`session` becomes hibernating session `old`, with no presence
        change, its client having shown every id up to `last`; what it had
        not acknowledged follows the backlog."""
        session.take_over(old)
        name = session.user
        self.mailroom.acknowledged(session, last)
        session.hold_unacknowledged()
        self.online[name] = session
        session.send(welcome)
        log.info("%s resumed from %s:%s", name, *session.address[:2])
        session.loader = gevent.spawn(self.mailroom.catch_up, session)

    def _restore(self, user, login_id, acked):
        """A session open when the server stopped comes back hibernating."""
        session = Session(None, None, None, None, self.config)
        session.user, session.login_id, session.acked = user, login_id, acked
        # Any id the log held may have been shown before the crash: a resume's
        # `last` is believed up to there (Session.acknowledge).
        session.backlog_upto = self.mailroom.next_id - 1
        self.chat.came_online(session, announce=False)
        self._hibernate(session)

    def _hibernate(self, session):
        """Its connection is gone: the session waits --resume-window seconds
        for its client (still online; its messages kept), then ends."""
        session.state = HIBERNATING
        session.p2p = None
        session.pending = []
        session.hibernated.set()
        log.info("%s: connection lost; waiting %gs for the client to come back",
                 session.user, self.config.resume_window)
        gevent.spawn(self._expire, session)

    def _expire(self, session):
        session.wake.wait(self.config.resume_window)
        if session.state is HIBERNATING and not self.stopping:
            self._end_hibernation(session, "no resume")

    def _end_hibernation(self, session, why):
        """A hibernating session ends: no client will take it back."""
        session.state = CLOSING
        session.wake.set()          # its _expire greenlet returns, if it waits
        self._finish(session, why)

    def _command_loop(self, session):
        timeout = self.config.timeout
        warn_after = idle_warning_after(timeout)
        # Idle from the moment the welcome went out: the writer's first batch.
        if session.outbox.nbytes:
            session.outbox.wait_progress(FLUSH_TIMEOUT)
        ping_after, ping_wait = self.config.ping_after, self.config.ping_wait
        heard, pinged = monotonic(), None
        # warn_at is None once this idle period's warning went out.
        deadline, warn_at = heard + timeout, heard + warn_after
        while session.end_reason is None:
            # A client pipelining messages waits, past a few, for their commits.
            if len(session.later) >= LATER_MAX:
                session.wait_answers(LATER_MAX, STORE_WAIT)
            # A silent connection is pinged; one that does not answer is dropped.
            alive_until = pinged + ping_wait if pinged is not None else heard + ping_after
            wake = min(deadline, alive_until) if warn_at is None else \
                min(deadline, alive_until, warn_at)
            left = wake - monotonic()
            frame = self._read(session, left) if left > 0 else None
            if frame is None:
                now = monotonic()
                if now >= deadline:
                    session.end_reason = frames.IDLE
                    log.info("idle logout: %s", session.user)
                    return
                if warn_at is not None and now >= warn_at:
                    warn_at = None
                    session.send(frames.notice(texts.idle_warning(seconds_left(deadline - now))))
                    continue
                if now < alive_until:
                    continue        # woken a moment early: wait again
                if pinged is not None:
                    raise ConnectionLost("no answer to a ping")
                pinged = now
                session.send(frames.ping())
                continue
            heard, pinged = monotonic(), None
            kind = frame["type"]
            if kind == "pong":
                continue            # an answer to a ping: alive, not active
            if kind == "names":
                # For completion: every account but ours and those blocking us.
                session.send(frames.names(self.chat.names_for(session.user)))
                continue
            if kind == "ack":
                # Not activity; free when it acknowledges something new, so
                # a busy reader's acks never count as flooding.
                if self.mailroom.acknowledged(session, frames.ack_upto(frame)):
                    session.bucket.give_back()
                continue
            if kind != "command":
                raise ProtocolError(f"unexpected {kind!r} frame")
            loader = session.loader
            if loader is not None:
                # Answers come after the backlog (its stall limits bound the wait).
                loader.join()
                session.loader = None
            now = monotonic()
            deadline, warn_at = now + timeout, now + warn_after
            self._dispatch(session, frame)

    def _dispatch(self, session, frame):
        request_id = frames.command_id(frame)
        line = frames.string(frame, "line")
        txn, retry = frames.command_txn(frame)
        if retry and self._answer_retry(session, request_id, line, txn):
            return
        session.txn = txn
        try:
            reply = self.chat.handle(session, line)
        except CommandError as exc:
            self._answer(session, txn, frames.failure(request_id, exc.text))
            return
        except StoreError as exc:
            log.error("%s: %s: %s", session.user, line.split(" ", 1)[0], exc)
            self._answer(session, txn, frames.failure(request_id, texts.STORE_FAILED))
            return
        finally:
            session.txn = None
        if isinstance(reply, Later):
            finish = reply.finish

            def build(pending):
                try:
                    done = finish(pending)
                except CommandError as exc:
                    return self._remember(session, txn, frames.failure(request_id, exc.text))
                return self._remember(session, txn,
                                      frames.reply(request_id, done.lines, extra=done.extra))
            session.answer_later(reply.pending, build)
        elif session.end_reason is None:
            self._answer(session, txn, frames.reply(request_id, reply.lines, extra=reply.extra))
            # Replies pass the mailbox's limits, but a client that asks and
            # never reads must not hold them without end.
            outbox = session.outbox
            if outbox.nbytes > outbox.limit_bytes or len(outbox) > outbox.limit:
                session.cut_off("not reading its replies")

    def _answer(self, session, txn, frame):
        session.answer(self._remember(session, txn, frame))

    def _remember(self, session, txn, frame):
        """Keep the reply to transaction `txn` for a retry of it; the frame."""
        if txn is not None:
            answers = self.answers.get(session.user)
            if answers is None:
                answers = self.answers[session.user] = OrderedDict()
            answers[txn] = frame
            if len(answers) > ANSWERS_KEPT:
                answers.popitem(last=False)
        return frame

    def _answer_retry(self, session, request_id, line, txn):
        """A command sent again after a reconnect: if it ran, answer it as
        it was answered then (True). The reply is kept in memory; a message or
        broadcast is also found in the log, across a restart."""
        first = self.answers.get(session.user, {}).get(txn)
        word = line.split(None, 1)[0] if line.strip() else ""
        if first is None and commands.lookup(word) in (commands.MESSAGE, commands.BROADCAST):
            try:
                if self.store.find_txn(session.user, txn):
                    first = frames.reply(None, [])
            except StoreError as exc:
                log.error("%s: could not look up a retried command: %s", session.user, exc)
        if first is None:
            return False
        session.answer({**first, "id": request_id})
        return True

    def _end(self, session):
        """Tear a connection down; record what it never had acknowledged."""
        name = session.user
        reason = session.end_reason
        if session.loader is not None:
            session.loader.kill()
        # The answers waiting for the store go out before any goodbye.
        session.wait_answers(1, FLUSH_TIMEOUT)
        if reason in _BYE_TEXTS and (name is not None or reason == frames.SHUTDOWN):
            session.send(frames.bye(reason, _BYE_TEXTS[reason]))
        if session.websocket and not session.dropped:
            session.outbox.push(ws.close_frame())
        if name is None:
            session.outbox.close(FLUSH_TIMEOUT)
            close(session.sock)
            return
        hibernate = session.dropped and reason is None and self.config.resume_window > 0 \
            and not self.stopping and session.state in (LOADING, ONLINE)
        # From here on a delivery is kept for later, never written.
        session.state = HIBERNATING if hibernate else CLOSING
        session.outbox.close(1.0 if hibernate else FLUSH_TIMEOUT)
        close(session.sock)
        if hibernate:
            self._hibernate(session)
        else:
            self._finish(session, reason or "connection closed")

    def _finish(self, session, why):
        """A session is over: its user goes offline and its end is recorded."""
        now = self._now()
        # Offline first: nothing is delivered to it after its end is recorded.
        self.chat.went_offline(session, now, announce=not self.stopping)
        self.mailroom.end_session(session, now)
        session.closed.set()
        log.info("logout: %s (%s)", session.user, why)

    def _record_logout(self, session, now=None):
        if session.login_id is not None:
            try:
                self.store.record_logout(session.login_id, self._now() if now is None else now)
            except GreenchatError as exc:
                log.error("%s: could not record the logout: %s", session.user, exc)

    def _end_account(self, name):
        """A deleted account: its session ends, and memory forgets it."""
        session = self.online.get(name)
        if session is not None and session.state is HIBERNATING:
            session.end_reason = frames.REMOVED
            self._end_hibernation(session, "account removed")
        elif session is not None:
            session.end_reason = frames.REMOVED
            shutdown(session.sock, SHUT_RD)
        self.chat.forget(name)
        self.mailroom.forget(name)
        self.answers.pop(name, None)
