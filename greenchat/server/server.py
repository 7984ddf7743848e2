"""The greenchat server: one greenlet per connection, one mailbox per user.

Strategy
- A gevent StreamServer spawns `_handle` in a greenlet for each connection.
  That greenlet is the connection's only reader; it walks the connection
  through hello, login and the command loop, and tears it down.
- Each connection's Outbox (transport.py) is its only writer: a FIFO mailbox
  woken through a gevent Event and drained by one writer greenlet. Whoever
  sends to a user puts an already-encoded frame in it and never blocks on the
  recipient's socket, so a slow reader delays nobody else. A broadcast is
  encoded once and the same bytes are queued for every recipient.
- Idle logout is the reader's receive timeout, counted from the last command.
  An account lock is ended by a `spawn_later` timer; its expiry is also stored,
  so a restarted server keeps it.
- Messages are never lost: a message to an offline user is committed to the
  store before the sender is answered; one queued for a session that ends
  before writing it (dropped connection, full mailbox, logout) is stored as
  offline. While a session flushes its last frames it stays registered and
  new deliveries "spill" into a list; then, in one step with no yield, it
  leaves `online` and hands everything unwritten to the store, whose single
  thread runs calls in order, so no later message or login overtakes it.
- Blocks and last-logout times are kept in memory (loaded at start, written
  through to the store), so broadcast and `whoelse` never wait on SQLite.
- Presence notices go out in batches (20 ms, or N/20,000 s with N users
  online, or 128 notices): one mailbox entry per recipient per batch, not
  per notice, so N logins cost N^2 bytes but not N^2 wake-ups. Every
  command flushes the batch first.
- A writer greenlet that wrote nothing for 2-4 s ends; the next frame for
  that user starts another, so idle users cost one greenlet, not two.

Every command handler is a `cmd_<name>` method; the table in commands.py
declares the arguments, and `_dispatch` is the one path that parses, checks
and answers.
"""

import logging
import os
import secrets
import time
from collections import OrderedDict
from time import monotonic

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.pool import Pool
from gevent.server import StreamServer

from greenchat import __version__, texts, tls
from greenchat.codec import encode
from greenchat.commands import SERVER, handlers_missing, parse_line
from greenchat.credentials import Credentials
from greenchat.errors import (
    CommandError,
    ConfigError,
    ConnectionLost,
    CredentialsError,
    Flooding,
    FrameTooLarge,
    GreenchatError,
    InvalidCommand,
    MalformedFrame,
    Overloaded,
    ProtocolError,
    StoreError,
    TLSError,
)
from greenchat.frames import PROTOCOL_VERSION
from greenchat.server import runtime
from greenchat.server.accounts import PasswordChecks
from greenchat.server.addresses import canonical, network_key
from greenchat.server.blocks import Blocks
from greenchat.server.limits import TokenBucket
from greenchat.server.turns import Turns
from greenchat.transport import (
    SHUT_RD,
    FrameReader,
    Outbox,
    close,
    configure,
    refuse,
    shutdown,
)

log = logging.getLogger("greenchat.server")

# How long a closing session may take to flush its mailbox to a client that
# has stopped reading before the rest is stored as offline.
FLUSH_TIMEOUT = 5.0
# How long a new login waits for the same account's closing session to finish.
TAKEOVER_WAIT = 5.0
# Presence notices wait this long to go out together (see _announce):
# measured at 3,000 logins, one mailbox entry per notice made ~N^2 of them,
# which bounded the login rate and left the heap fragmented.
PRESENCE_BATCH = 0.02
# ...or longer with over 400 users online: a flush makes one delivery per
# user, and the wait grows so that flushes make at most this many a second
# (0.5 s at 10,000 users). With a fixed 20 ms, measured at 5,000 logins,
# flushes of a few notices each took the whole CPU and logins ran at
# 150-190/s; at 50,000 a second, 230-250/s; at 20,000, 300-380/s.
PRESENCE_DELIVERIES = 20_000
# ...or once this many are waiting. A flush costs up to (notices x the
# recipients needing their own selection); measured at 5,000 users with
# garbage collection off, the longest flush took 36 ms at 128. A cap of 32
# cut the login rate at 10,000 users from 322/s to 121/s (measured with the
# store's group commit; the figures before it, 1,100/s to 600-740/s, came
# while the store lagged behind the logins).
PRESENCE_BATCH_MAX = 128
# A connection's writer greenlet that wrote nothing for one to two of these
# ends, and the next frame starts another: an idle one costs ~4 KB.
WRITER_IDLE = 2.0
# How often mail the store refused is offered to it again.
HELD_RETRY = 2.0
# How often the accounts file is looked at for changes.
CREDENTIALS_POLL = 1.0
# The longest a TLS handshake may take (less if the login deadline comes first).
TLS_HANDSHAKE_TIMEOUT = 10.0

_BYE_TEXTS = {
    "logout": texts.GOODBYE,
    "idle": texts.LOGGED_OUT_IDLE,
    "shutdown": texts.SERVER_SHUTTING_DOWN,
    "removed": texts.ACCOUNT_REMOVED,
}

# Session states
NEW, LOADING, ONLINE, CLOSING = "new", "loading", "online", "closing"


class _Reply(list):
    """A handler's reply lines plus extra members for the reply frame."""

    def __init__(self, lines, extra):
        super().__init__(lines)
        self.extra = extra


def _signature(path):
    """What changes when a file is rewritten (greenchat-admin renames a new
    one into place) or edited in place; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _load_credentials(path):
    """Credentials.load, its error returned rather than raised (in a thread,
    where gevent would report a raised one as a crash)."""
    try:
        return Credentials.load(path)
    except CredentialsError as exc:
        return exc


def _field(frame, name):
    value = frame.get(name)
    if not isinstance(value, str):
        raise MalformedFrame(f"{frame['type']!r} frame needs a string {name!r}")
    return value


class Session:
    """One connection: its socket, reader, outbox and (once logged in) user."""

    __slots__ = ("server", "sock", "address", "network", "login_deadline", "reader", "outbox",
                 "user", "login_id", "state",
                 "pending", "pending_bytes", "spill", "end_reason", "closed", "p2p",
                 "online_since", "bucket")

    def __init__(self, server, sock, address, network, login_deadline):
        self.server = server
        self.sock = sock
        self.address = address
        self.network = network    # what limits count it in (addresses.network_key)
        self.login_deadline = login_deadline    # monotonic(): from accept, TLS included
        self.reader = FrameReader(sock, server.config.max_frame)
        self.outbox = Outbox(sock, server.config.mailbox_limit, server.config.mailbox_limit_bytes)
        # Every frame counts, from the first: login probes as well as commands.
        self.bucket = TokenBucket(server.config.command_rate, server.config.command_burst)
        self.user = None
        self.login_id = None
        self.state = NEW
        self.pending = []      # deliveries held back while offline messages load
        self.pending_bytes = 0
        self.spill = []        # message records arriving while the session closes
        self.end_reason = None
        self.closed = Event()
        self.p2p = None        # (host, port, cert fingerprint) the client takes private links on
        self.online_since = 0  # the presence event of this login

    def deliver(self, frame, record=None):
        """Queue `frame` for this user. Never blocks and never fails.

        `record` is the (recipient, sender, text, sent_at) row to store if the
        frame cannot be written; None for frames that are not kept (broadcasts,
        presence).
        """
        state = self.state
        if state is ONLINE:
            if self.outbox.put(frame, record):
                return
            self.cut_off("mailbox full")
        elif state is LOADING:
            # Held back, but within the same limits as the mailbox.
            outbox = self.outbox
            if len(self.pending) < outbox.limit and \
                    self.pending_bytes + len(frame) <= outbox.limit_bytes:
                self.pending.append((frame, record))
                self.pending_bytes += len(frame)
                return
            self.cut_off("mailbox full")
        if record is not None:
            self.spill.append(record)

    def take_pending(self):
        """The deliveries held back so far, oldest first; the list starts anew."""
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        return pending

    def cut_off(self, why):
        """End a session whose client does not keep up with its mail."""
        if self.end_reason is None:
            log.warning("%s: %s (%d frames, %d bytes waiting), disconnecting slow reader",
                        self.user, why, len(self.outbox) + len(self.pending),
                        self.outbox.nbytes + self.pending_bytes)
            self.end_reason = "slow"
        self.state = CLOSING
        shutdown(self.sock)

    def send(self, message):
        self.outbox.send(message)

    def __repr__(self):
        return f"<Session {self.user or '-'} {self.address} {self.state}>"


class ChatServer:
    """The server. start() binds and loads state; stop() ends it cleanly."""

    def __init__(self, config, credentials, store, clock=time.time):
        missing = handlers_missing(self, SERVER)
        if missing:
            raise TypeError(f"no handler for server commands: {', '.join(missing)}")
        self.config = config
        self.credentials = credentials
        self.store = store
        self.clock = clock
        self.online = {}                       # user -> Session, while logged in
        self.sessions = set()                  # every connection
        self.per_address = {}                  # network (addresses.network_key) -> connections
        self.max_connections = config.max_connections  # lowered by start() to fit the file limit
        self.blocks = Blocks()
        # user -> time of latest logout, oldest first: whoelsesince reads
        # from the newest end and stops at its cutoff.
        self.last_logout = OrderedDict()
        self.failures = {}                     # user -> consecutive wrong passwords
        self.locks = {}                        # user -> (until, timer greenlet)
        self.stopping = False
        self._stopped = Event()
        self._pool = Pool(None)
        self.passwords = PasswordChecks()
        self._handshaking = 0                  # connections in their TLS handshake
        self._presence = []                    # (user, seq, users hidden from, frame) to send
        self._presence_seq = 0                 # numbers presence events in order
        self._sweeper = None
        self._watcher = None
        self.joining = set()                   # users whose login the store is recording
        self.mail_turns = Turns()              # per user: one writer of their stored mail
        self.held = {}                         # user -> accepted mail the store refused
        self._retrier = None
        self._reloading = Semaphore()
        self._credentials_seen = None          # the accounts file's _signature when loaded
        self._presence_timer = None
        self.tls = (tls.server_context(config.tls_cert, config.tls_key)
                    if config.tls_cert else None)
        self.stream = StreamServer((config.host, config.port), self._handle,
                                   spawn=self._pool, backlog=config.backlog)

    # Life cycle -------------------------------------------------------------

    @property
    def address(self):
        return self.stream.server_host, self.stream.server_port

    def start(self):
        # A name whose account id changed while the server was down is a new account.
        self._credentials_seen = _signature(self.config.credentials)
        for name in self.store.sync_accounts(self._account_ids()):
            log.info("%s is a new account: forgot the old one's messages, blocks and history",
                     name)
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
        now = self.clock()
        closed = self.store.close_open_logins(now)
        if closed:
            log.info("closed %d login(s) left open by an earlier run", closed)
        for blocker, blocked in self.store.all_blocks():
            self.blocks.add(blocker, blocked)
        self.last_logout.update(sorted(self.store.last_logouts().items(), key=lambda i: i[1]))
        for user, until in self.store.active_locks(now).items():
            self._start_lock_timer(user, until, until - now)
        self._sweeper = gevent.spawn(self._retire_idle_writers)
        self._watcher = gevent.spawn(self._watch_credentials)
        try:
            self.stream.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: "
                              f"{exc.strerror or exc}") from None
        log.info("greenchat %s listening on %s:%d", __version__, *self.address)

    def serve_forever(self):
        self._stopped.wait()

    def stop(self, timeout=10.0):
        """Tell every client, flush, store what is undelivered, close the store."""
        if self.stopping:
            self._stopped.wait(timeout)
            return
        self.stopping = True
        log.info("stopping: %d connection(s)", len(self.sessions))
        self.stream.close()
        for session in list(self.sessions):
            session.end_reason = session.end_reason or "shutdown"
            # Only the read side: the reader wakes up, and the writer can still
            # flush the goodbye frame.
            shutdown(session.sock, SHUT_RD)
        self._pool.join(timeout=timeout)
        self._pool.kill(timeout=1)
        for _, timer in self.locks.values():
            timer.kill()
        if self._presence_timer is not None:
            self._presence_timer.kill()
        for greenlet in (self._sweeper, self._watcher, self._retrier):
            if greenlet is not None:
                greenlet.kill()
        for name in list(self.held):
            if not self._store_for(name, []):
                log.error("%s: %d undelivered message(s) could not be stored and are lost",
                          name, len(self.held[name]))
        self.passwords.close()
        self.store.close()
        self._stopped.set()
        log.info("stopped")

    # Connections ------------------------------------------------------------

    def _handle(self, sock, address):
        login_deadline = monotonic() + self.config.login_timeout
        host = canonical(address[0])
        # A crowd from one site takes neighbouring addresses: counted per network.
        network = network_key(host, self.config.ipv4_prefix, self.config.ipv6_prefix)
        held = self.per_address.get(network, 0)
        # Counted from the first moment, TLS handshake included, or a crowd of
        # silent connections would escape the limits.
        if len(self.sessions) + self._handshaking >= self.max_connections or \
                held >= self.config.max_per_address:
            log.warning("refused a connection from %s: too many connections", host)
            # Now, not after a TLS handshake or a flush: refusals must hold no descriptors.
            refuse(sock, None if self.tls is not None else
                   encode({"type": "error", "text": texts.TOO_MANY_CONNECTIONS}))
            return
        configure(sock)
        self.per_address[network] = held + 1
        try:
            if self.tls is not None:
                sock = self._tls_handshake(sock, host, login_deadline)
                if sock is None:
                    return
            session = Session(self, sock, address, network, login_deadline)
            self.sessions.add(session)
            try:
                self._serve(session)
            finally:
                self.sessions.discard(session)
        finally:
            left = self.per_address[network] - 1
            if left:
                self.per_address[network] = left
            else:
                del self.per_address[network]

    def _tls_handshake(self, sock, host, login_deadline):
        """The TLS socket over `sock`, or None (and `sock` closed) on failure."""
        self._handshaking += 1
        try:
            return tls.accept(sock, self.tls,
                              max(0.0, min(TLS_HANDSHAKE_TIMEOUT, login_deadline - monotonic())),
                              encode({"type": "error", "text": texts.TLS_REQUIRED}))
        except TLSError as exc:
            log.info("TLS connection from %s refused: %s", host, exc)
            close(sock)
            return None
        finally:
            self._handshaking -= 1

    def _serve(self, session):
        """Walk a connection through hello, login and commands, then end it."""
        try:
            self._hello(session)
            if self._login(session):
                self._command_loop(session)
        except FrameTooLarge as exc:
            log.info("%s: %s", session, exc)
            session.send({"type": "error", "text": texts.FRAME_TOO_LARGE})
        except Flooding:
            log.warning("%s: flooding, disconnecting", session)
            session.send({"type": "error", "text": texts.FLOODING})
        except Overloaded as exc:
            log.warning("%s: refused: %s", session, exc)
            session.send({"type": "error", "text": texts.TOO_MANY_CONNECTIONS})
        except ProtocolError as exc:
            log.info("%s: %s", session, exc)
            session.send({"type": "error", "text": texts.MALFORMED_FRAME})
        except ConnectionLost as exc:
            log.debug("%s: %s", session, exc)
        except GreenchatError as exc:
            log.error("%s: %s", session, exc)
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

    def _hello(self, session):
        frame = self._read(session, session.login_deadline - monotonic())
        if frame is None:
            session.send({"type": "error", "text": texts.LOGIN_TIMEOUT})
            raise ConnectionLost("no hello")
        if frame["type"] != "hello":
            raise ProtocolError(f"expected hello, got {frame['type']!r}")
        version = frame.get("version")
        if type(version) is not int or version != PROTOCOL_VERSION:     # not True, not 1.0
            session.send({"type": "error", "text": texts.UNSUPPORTED_VERSION})
            raise ConnectionLost(f"unsupported protocol version {frame.get('version')!r}")
        session.send({"type": "hello", "version": PROTOCOL_VERSION,
                      "server": f"greenchat {__version__}"})

    def _login(self, session):
        """Run the username/password exchange; True once the user is online."""
        name = None
        while True:
            frame = self._read(session, session.login_deadline - monotonic())
            if frame is None:
                session.send({"type": "error", "text": texts.LOGIN_TIMEOUT})
                return False
            kind = frame["type"]
            if kind == "username":
                candidate = _field(frame, "username")
                if candidate in self.credentials:
                    name = candidate
                    session.send({"type": "login", "status": "password"})
                else:
                    name = None
                    session.send({"type": "login", "status": "username",
                                  "text": texts.INVALID_USERNAME})
            elif kind == "password" and name is not None and name not in self.credentials:
                # Deleted since its username was taken.
                name = None
                session.send({"type": "login", "status": "username",
                              "text": texts.INVALID_USERNAME})
            elif kind == "password" and name is not None:
                # Known from the first moment the user is online, so a
                # startprivate can never arrive before it.
                if frame.get("p2p") is not None:
                    session.p2p = self._p2p_address(session, frame["p2p"])
                outcome = self._check_password(session, name, _field(frame, "password"))
                if outcome is not None:
                    status, text = outcome
                    session.send({"type": "login", "status": status, "text": text})
                    if status == "failed":
                        return False
                    continue
                if self._register(session, name):
                    return True
                return False
            else:
                raise ProtocolError(f"unexpected {kind!r} frame during login")

    def _check_password(self, session, name, password):
        """None if the password is right; else (status, text) to answer.

        One check per account at a time (accounts.py), and the lock is looked
        at inside the turn: attempts waiting behind the one that locks the
        account are answered from the lock, without hashing.
        """
        with self.passwords.turn(name):
            if name in self.locks:
                log.info("login refused: %s is locked", name)
                return "failed", texts.ACCOUNT_BLOCKED
            if self.passwords.verify(self.credentials, name, password, session.network):
                self.failures.pop(name, None)
                return None
            failures = self.failures.get(name, 0) + 1
            if failures >= self.config.failed_logins:
                self.failures.pop(name, None)
                self._lock(name)
                return "failed", texts.ACCOUNT_NOW_BLOCKED
            self.failures[name] = failures
            log.info("wrong password for %s (%d)", name, failures)
            return "password", texts.INVALID_PASSWORD

    def _register(self, session, name):
        existing = self.online.get(name)
        if existing is not None and existing.state is CLOSING:
            # The same user logging straight back in: let the old session
            # store what it holds first, so no message overtakes another.
            existing.closed.wait(TAKEOVER_WAIT)
            existing = self.online.get(name)
        if name not in self.credentials:
            # Deleted while its password was being checked.
            session.send({"type": "login", "status": "failed", "text": texts.INVALID_USERNAME})
            return False
        if existing is not None or name in self.joining or self.stopping:
            log.info("login refused: %s is already logged in", name)
            session.send({"type": "login", "status": "failed", "text": texts.ALREADY_LOGGED_IN})
            return False
        # The store first, the welcome after: a login the store cannot record
        # is refused, never announced and then dropped. Meanwhile the user is
        # still offline (mail to them is stored, and read below).
        self.joining.add(name)
        try:
            with self.mail_turns.turn(name):
                if name in self.held and not self._store_for(name, []):
                    raise StoreError("messages held for the user could not be stored")
                session.login_id, backlog = self.store.open_session(name, self.clock())
        except GreenchatError as exc:
            log.error("login of %s refused: %s", name, exc)
            session.send({"type": "login", "status": "failed", "text": texts.LOGIN_UNAVAILABLE})
            return False
        finally:
            self.joining.discard(name)
        session.user = name
        session.state = LOADING
        self.online[name] = session
        session.send({"type": "login", "status": "ok", "user": name, "text": texts.WELCOME})
        session.online_since = self._announce(name, True)
        log.info("login: %s from %s:%s", name, *session.address[:2])
        # Until the offline messages are out, deliveries wait in
        # session.pending; if the session ends first, _end stores them.
        if not self._send_backlog(session, backlog):
            return True
        # Then whatever arrived meanwhile, at the pace the client reads it.
        while session.pending:
            if not self._feed(session, session.take_pending()):
                return True
        session.state = ONLINE
        return True

    def _send_backlog(self, session, rows):
        """Send the stored messages a page at a time; False if the session ends.

        A page leaves the store only once it has been written (removed
        with the next page's read), so a crash shows at most one page again.
        If the store cannot remove pages (a full disk), they are read all the
        same, removed later with a page that can be, or shown again at the
        next login: at least once, and never a welcome followed by a drop.
        """
        name, outbox = session.user, session.outbox
        while rows:
            self._feed(session, [(encode({"type": "message", "from": sender, "text": text,
                                          "sent_at": sent_at, "offline": True}), None)
                                 for _, sender, text, sent_at in rows])
            if session.end_reason is not None or \
                    not outbox.wait_below(0, FLUSH_TIMEOUT):
                session.cut_off("not reading its offline messages")
                return False
            after = rows[-1][0]             # removes every page before it too
            try:
                rows = self.store.offline_page(name, after, after)
            except StoreError as exc:
                log.error("%s: could not remove delivered messages (they may be shown "
                          "again): %s", name, exc)
                rows = self.store.offline_page(name, after)
        return True

    def _feed(self, session, items):
        """Queue (frame, record) items without overrunning the mailbox.

        A backlog may exceed the mailbox limit: it is queued as the client
        reads. False if the client stops reading for FLUSH_TIMEOUT; then the
        session is ending and the items not queued are back in
        session.pending, ahead of anything newer, for _end to store.
        """
        outbox = session.outbox
        low = outbox.limit // 4
        for index, (frame, record) in enumerate(items):
            while not outbox.put(frame, record):
                if session.end_reason is not None or \
                        not outbox.wait_below(low, FLUSH_TIMEOUT):
                    session.pending[:0] = items[index:]
                    session.cut_off("not reading its messages")
                    return False
        return True

    def _command_loop(self, session):
        timeout = self.config.timeout
        # Idle from the moment the welcome (and any backlog) went out.
        session.outbox.wait_below(0, FLUSH_TIMEOUT)
        deadline = monotonic() + timeout
        while session.end_reason is None:
            left = deadline - monotonic()
            frame = self._read(session, left) if left > 0 else None
            if frame is None:
                session.end_reason = "idle"
                log.info("idle logout: %s", session.user)
                return
            if frame["type"] != "command":
                raise ProtocolError(f"unexpected {frame['type']!r} frame")
            deadline = monotonic() + timeout
            self._dispatch(session, frame)

    @staticmethod
    def _p2p_address(session, p2p):
        """Where the client accepts private links: the address its connection
        comes from, and the port from its password frame."""
        port = p2p.get("port") if isinstance(p2p, dict) else None
        if type(port) is not int or not 1 <= port <= 65535:
            raise MalformedFrame("p2p needs a port 1-65535")
        # Never the "host" it names: peers would connect wherever a client said.
        host = canonical(session.address[0])
        # The client's link certificate, passed on to whoever it links with.
        fingerprint = p2p.get("fingerprint")
        if fingerprint is not None and (not isinstance(fingerprint, str) or
                                        len(fingerprint) != 64):
            raise MalformedFrame("p2p fingerprint must be 64 hex digits")
        return host, port, fingerprint

    def _dispatch(self, session, frame):
        if self._presence:
            self._flush_presence()
        request_id = frame.get("id")
        line = _field(frame, "line")
        try:
            spec, args = parse_line(line)
            if spec.where != SERVER:
                raise InvalidCommand()
            lines = getattr(self, "cmd_" + spec.name)(session, *args)
        except CommandError as exc:
            session.send({"type": "reply", "id": request_id, "ok": False, "lines": [exc.text]})
            return
        except StoreError as exc:
            log.error("%s: %s: %s", session.user, line.split(" ", 1)[0], exc)
            session.send({"type": "reply", "id": request_id, "ok": False,
                          "lines": [texts.STORE_FAILED]})
            return
        if session.end_reason is None:
            reply = {"type": "reply", "id": request_id, "ok": True, "lines": lines or []}
            if isinstance(lines, _Reply):
                reply.update(lines.extra)
            session.send(reply)

    def _end(self, session):
        """Tear a connection down; store whatever it could not deliver."""
        name = session.user
        reason = session.end_reason
        if name is None:
            if reason == "shutdown":
                session.send({"type": "bye", "reason": reason, "text": _BYE_TEXTS[reason]})
            session.outbox.close(FLUSH_TIMEOUT)
            close(session.sock)
            return
        session.state = CLOSING
        if reason in _BYE_TEXTS:
            session.send({"type": "bye", "reason": reason, "text": _BYE_TEXTS[reason]})
        unsent = session.outbox.close(FLUSH_TIMEOUT)
        close(session.sock)
        # The user goes offline and the undelivered messages go to the store
        # inside the user's mail turn: a message sent to the now-offline user,
        # and a new login's fetch, wait for the turn, so both come after these.
        with self.mail_turns.turn(name):
            records = unsent + [r for _, r in session.pending if r is not None] + session.spill
            session.pending, session.spill = [], []
            if self.online.get(name) is session:
                del self.online[name]
            now = self.clock()
            if reason == "removed":
                # Nothing of a deleted account is kept, and a new one may take its name.
                if records:
                    log.info("%s: dropping %d undelivered message(s) of a deleted account",
                             name, len(records))
                records = []
            else:
                self.last_logout.pop(name, None)
                self.last_logout[name] = now
            log.info("logout: %s (%s)", name, reason or "connection closed")
            if not self.stopping:
                self._announce(name, False)
            session.closed.set()
            if records:
                log.info("%s: storing %d undelivered message(s) as offline", name, len(records))
                self._store_for(name, records)
        if session.login_id is not None:
            try:
                self.store.record_logout(session.login_id, now)
            except GreenchatError as exc:
                log.error("%s: could not record the logout: %s", name, exc)

    # Mail the store could not take --------------------------------------------

    def _store_for(self, name, records):
        """Store `records` (accepted, undelivered) for `name`, after whatever
        is held for it. If the store fails, hold them all in memory, in
        order, and retry later: a full disk must not lose accepted mail.
        Call inside `name`'s mail turn. True if nothing is held now."""
        batch = self.held.pop(name, []) + records
        if not batch:
            return True
        try:
            self.store.save_offline(batch)
            return True
        except GreenchatError as exc:
            if records:
                log.error("%s: could not store %d undelivered message(s), holding %d in "
                          "memory: %s", name, len(records), len(batch), exc)
            self.held[name] = batch
            if self._retrier is None:
                self._retrier = gevent.spawn(self._retry_held)
            return False

    def _retry_held(self):
        try:
            while self.held:
                gevent.sleep(HELD_RETRY)
                for name in list(self.held):
                    with self.mail_turns.turn(name):
                        if self._store_for(name, []):
                            log.info("%s: the messages held in memory are stored", name)
        finally:
            self._retrier = None

    def _announce(self, name, online):
        """Tell every other online user, soon, that `name` came or went.

        Notices are gathered for PRESENCE_BATCH (longer with over 400
        users online: PRESENCE_DELIVERIES) and go out together: one
        mailbox entry per recipient for the whole batch instead of one per
        notice. Every command flushes the batch before it runs, so nothing a
        user does after a login or logout reaches anyone before its notice.
        """
        self._presence_seq += 1
        seq = self._presence_seq
        self._presence.append((name, seq, self.blocks.blocking(name),
                               encode({"type": "presence", "user": name, "online": online})))
        if len(self._presence) >= PRESENCE_BATCH_MAX:
            # A flush costs up to (notices x recipients) for recipients that
            # need their own selection: bounded, it never holds the hub long.
            self._flush_presence()
        elif self._presence_timer is None:
            self._presence_timer = gevent.spawn_later(self.presence_wait(),
                                                      self._flush_presence)
        return seq

    def presence_wait(self):
        """How long a presence notice may wait for others to go out with."""
        return max(PRESENCE_BATCH, len(self.online) / PRESENCE_DELIVERIES)

    def _flush_presence(self):
        batch, self._presence = self._presence, []
        timer, self._presence_timer = self._presence_timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
        if not batch:
            return
        shared = b"".join(frame for _, _, _, frame in batch)
        # Recipients that must not get all of the batch: its own users, users
        # one of them blocks, and users who came online after one of its
        # events (they were not there to see it). Everyone else gets the
        # same bytes.
        special = set()
        for name, _, hidden, _ in batch:
            special.add(name)
            special.update(hidden)
        first = batch[0][1]
        for user, other in self.online.items():
            since = other.online_since
            if since < first and user not in special:
                other.deliver(shared)
                continue
            mine = b"".join([frame for name, seq, hidden, frame in batch
                             if since < seq and name != user and user not in hidden])
            if mine:
                other.deliver(mine)

    def _retire_idle_writers(self):
        """Now and then, end the writer greenlets of connections that wrote
        nothing lately (transport.Outbox.retire_if_idle)."""
        while True:
            gevent.sleep(WRITER_IDLE)
            for count, session in enumerate(list(self.sessions)):
                session.outbox.retire_if_idle()
                if count % 1000 == 999:
                    gevent.sleep(0)

    # Accounts ---------------------------------------------------------------

    def _account_ids(self):
        credentials = self.credentials
        return {name: credentials.account_id(name) for name in credentials.usernames}

    def _watch_credentials(self):
        """Reload the accounts file soon after it changes (SIGHUP: at once)."""
        while True:
            gevent.sleep(CREDENTIALS_POLL)
            if _signature(self.config.credentials) != self._credentials_seen:
                self.reload_credentials()

    def reload_credentials(self):
        """Take the accounts file as it is now: new accounts can log in, a
        changed password is the one checked, and a deleted (or deleted and
        re-added) account is logged out and forgotten. A file that does not
        load, or holds no account, changes nothing but the log."""
        with self._reloading:
            path = self.config.credentials
            self._credentials_seen = _signature(path)
            # Parsed in a thread: a big file must not hold the hub.
            new = gevent.get_hub().threadpool.apply(_load_credentials, (path,))
            if isinstance(new, CredentialsError):
                log.error("%s; keeping the %d account(s) loaded before", new,
                          len(self.credentials))
                return
            if not len(new):
                log.error("credentials file %s holds no account; keeping the %d loaded "
                          "before", path, len(self.credentials))
                return
            changes = self.credentials.changes(new)
            self.credentials = new
            gone = changes.removed | changes.replaced
            for name in gone:
                self._end_account(name)
            try:
                forgotten = self.store.sync_accounts(self._account_ids(), forget=gone)
            except GreenchatError as exc:
                log.error("could not record the accounts' changes: %s", exc)
                return
            for name in forgotten - gone:
                self._end_account(name)
            log.info("credentials reloaded: %d account(s); %d added, %d deleted, %d re-created, "
                     "%d new password(s)", len(new), len(changes.added), len(changes.removed),
                     len(changes.replaced), len(changes.password_changed))

    def _end_account(self, name):
        """Log a deleted account out, and forget what memory holds of it."""
        session = self.online.get(name)
        if session is not None:
            session.end_reason = "removed"
            shutdown(session.sock, SHUT_RD)
        self._forget(name)

    def _forget(self, name):
        self.blocks.forget(name)
        self.last_logout.pop(name, None)
        self.failures.pop(name, None)
        lock = self.locks.pop(name, None)
        if lock is not None:
            lock[1].kill(block=False)

    # Account locks ----------------------------------------------------------

    def _lock(self, name):
        duration = self.config.block_duration
        until = self.clock() + duration
        self._start_lock_timer(name, until, duration)
        log.warning("account locked: %s for %gs", name, duration)
        try:
            self.store.set_lock(name, until)
        except GreenchatError as exc:
            # Locked all the same, until the timer ends it or the server stops.
            log.error("could not store the lock of %s: %s", name, exc)

    def _start_lock_timer(self, name, until, delay):
        timer = gevent.spawn_later(max(delay, 0), self._unlock, name, until)
        self.locks[name] = (until, timer)

    def _unlock(self, name, until):
        if self.locks.get(name, (None,))[0] == until:
            del self.locks[name]
            self.failures.pop(name, None)
            log.info("account unlocked: %s", name)
            try:
                self.store.clear_lock(name)
            except GreenchatError as exc:
                log.error("clearing lock of %s: %s", name, exc)

    # Commands ---------------------------------------------------------------

    def _known_other(self, session, user, self_error):
        if user not in self.credentials:
            raise CommandError(texts.INVALID_USER)
        if user == session.user:
            raise CommandError(self_error)

    def _visible_to(self, asker, user):
        return user != asker and not self.blocks.blocks(user, asker)

    def cmd_message(self, session, user, text):
        """message USER TEXT"""
        self._known_other(session, user, texts.CANNOT_MESSAGE_SELF)
        sender = session.user
        if self.blocks.blocks(user, sender):
            raise CommandError(texts.RECIPIENT_BLOCKED_YOU)
        record = (user, sender, text, self.clock())
        frame = encode({"type": "message", "from": sender, "text": text})
        target = self.online.get(user)
        if target is not None:
            target.deliver(frame, record)
            return
        with self.mail_turns.turn(user):
            target = self.online.get(user)      # logged in while we waited our turn
            if target is not None:
                target.deliver(frame, record)
                return
            # Behind whatever is held for the user, or not at all.
            if user in self.held and not self._store_for(user, []):
                raise CommandError(texts.STORE_FAILED_MESSAGE)
            try:
                stored = self.store.store_message(record, self.config.offline_limit,
                                                  self.config.offline_limit_bytes)
            except StoreError as exc:
                log.error("%s: a message for %s could not be stored: %s", sender, user, exc)
                raise CommandError(texts.STORE_FAILED_MESSAGE) from None
        if not stored:
            raise CommandError(texts.mailbox_full(user))

    def cmd_broadcast(self, session, text):
        """broadcast TEXT"""
        sender = session.user
        frame = encode({"type": "message", "from": sender, "text": text, "broadcast": True})
        blockers = self.blocks.blockers_of(sender)
        for user, other in self.online.items():
            if user != sender and user not in blockers:
                other.deliver(frame)
        # Whether or not they are online: the notice must not tell.
        if blockers:
            return [texts.BROADCAST_PARTIAL]

    def cmd_whoelse(self, session):
        """whoelse"""
        names = sorted(u for u in self.online if self._visible_to(session.user, u))
        return names or [texts.NO_OTHER_USERS_ONLINE]

    def cmd_whoelsesince(self, session, seconds):
        """whoelsesince SECONDS"""
        cutoff = self.clock() - seconds
        recent = set(self.online)
        logouts = self.last_logout
        if logouts and logouts[next(iter(logouts))] >= cutoff:
            recent.update(logouts)            # all of them: no need to look at each
        else:
            for user, at in reversed(logouts.items()):
                if at < cutoff:
                    break
                recent.add(user)
        names = sorted(u for u in recent if self._visible_to(session.user, u))
        return names or [texts.NO_OTHER_USERS]

    def cmd_block(self, session, user):
        """block USER"""
        self._known_other(session, user, texts.CANNOT_BLOCK_SELF)
        if self.blocks.blocks(session.user, user):
            raise CommandError(texts.already_blocked(user))
        self.store.add_block(session.user, user)
        self.blocks.add(session.user, user)
        # A private link between the two ends with the block: tell both
        # clients (each ignores it if it has no such link).
        other = self.online.get(user)
        if other is not None:
            other.send({"type": "private_stop", "user": session.user})
            session.send({"type": "private_stop", "user": user})
        return [texts.blocked(user)]

    def cmd_unblock(self, session, user):
        """unblock USER"""
        self._known_other(session, user, texts.CANNOT_UNBLOCK_SELF)
        if not self.blocks.blocks(session.user, user):
            raise CommandError(texts.not_blocked(user))
        self.store.remove_block(session.user, user)
        self.blocks.remove(session.user, user)
        return [texts.unblocked(user)]

    def cmd_startprivate(self, session, user):
        """startprivate USER

        Answers with USER's link address and a fresh one-time token in the
        reply's "private" member, and sends USER's client the same token for
        the requester; the clients do the rest directly.
        """
        self._known_other(session, user, texts.CANNOT_PRIVATE_SELF)
        # The block first: whether the blocker is online is none of the sender's business.
        if self.blocks.blocks(user, session.user):
            raise CommandError(texts.user_blocked_you(user))
        target = self.online.get(user)
        if target is None or target.state is CLOSING:
            raise CommandError(texts.user_offline(user))
        if target.p2p is None:
            raise CommandError(texts.private_unavailable(user))
        token = secrets.token_urlsafe(24)
        target.send({"type": "private_offer", "from": session.user, "token": token})
        host, port, fingerprint = target.p2p
        offer = {"user": user, "host": host, "port": port, "token": token}
        if fingerprint is not None:
            offer["fingerprint"] = fingerprint
        return _Reply([], {"private": offer})

    def cmd_logout(self, session):
        """logout"""
        session.end_reason = "logout"
