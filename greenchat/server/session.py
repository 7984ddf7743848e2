"""One connection's session, and the rules by which no accepted message is lost.

Strategy
- Every accepted message is first a row of the store's message log, with an
  id the server hands out (increasing, never reused) and the sender's `ok`
  waits for that row's commit. Delivery to a recipient online does not wait:
  the frame goes out at once and the row follows in the same group commit.
- A recipient's client acknowledges what it has shown (`ack`, cumulative).
  Until then the session keeps each message's id and frame (`unacked`); the
  store keeps each user's acknowledged-up-to id (a cursor, written as acks
  arrive, a few per commit). What a user has not acknowledged is therefore
  always findable: its direct messages in the log past the cursor, and the
  broadcasts a session took and never acknowledged, which its end writes to
  the user's inbox (after a crash, start-up recovers them from the log).
- A login reads that backlog a page at a time, ids below `live_from` (the
  first id handed out once the user was online), while live deliveries wait
  in `pending`; then the pending ones follow. So a client sees ids strictly
  increasing in a session, and a repeat is always one it may drop.
- A Session's State says where a delivery goes: ONLINE, into the outbox;
  LOADING, into `pending`; CLOSING, nowhere (its id is kept for the end).
  A client that lets more than the mailbox's limits go unacknowledged is cut
  off; everything it missed is still in the store.
- Replies to `message` and `broadcast` wait for the commit without holding
  the reader: they queue in `later`, and go out in command order.
"""

import bisect
import enum
import logging

import gevent
from gevent.event import Event

from greenchat import frames
from greenchat import websocket as ws
from greenchat.codec import encode
from greenchat.errors import StoreError
from greenchat.server.limits import TokenBucket
from greenchat.transport import FrameReader, Outbox, shutdown

log = logging.getLogger("greenchat.server")

# How long a client that has stopped reading keeps its session while its
# mail waits to be written.
FLUSH_TIMEOUT = 5.0
# How often the store is asked again for what it refused (a full disk).
RETRY = 2.0
# Acknowledgements reach the store at most this often: the cursors move in
# memory at once, and a crash shows again at most this much more.
CURSOR_EVERY = 0.5
# Ids are reserved a block at a time, the next block once half is used.
ID_BLOCK = 1 << 20
# At most this many replies wait for the store before the reader waits too.
LATER_MAX = 1024
# How often retention looks for messages to purge, and the pause between
# two of its transactions.
PURGE_EVERY = 60.0
PURGE_PAUSE = 0.05


def _log_failure(pending):
    try:
        pending.value()
    except StoreError as exc:
        log.error("%s", exc)


class State(enum.Enum):
    NEW = "new"            # logging in
    LOADING = "loading"    # logged in; its backlog is going out
    ONLINE = "online"
    HIBERNATING = "hibernating"  # its connection dropped; waiting for its client
    CLOSING = "closing"    # ending


# The members as plain names: ONLINE is an attribute lookup on the
# class, and deliver() reads one for every delivery.
NEW, LOADING, ONLINE, HIBERNATING, CLOSING = State


class Session:
    """One connection: its socket, reader, outbox and (once logged in) user."""

    __slots__ = ("sock", "address", "network", "login_deadline", "reader", "outbox", "bucket",
                 "user", "login_id", "state", "acked", "live_from", "unacked_ids", "unacked",
                 "unacked_bytes", "limit", "limit_bytes", "pending", "backlog_upto",
                 "end_reason", "closed", "p2p", "online_since", "txn", "later", "loader",
                 "dropped", "hibernated", "wake", "framer")

    def __init__(self, sock, address, network, login_deadline, config, websocket=None,
                 framer=None):
        """`websocket`: None for a TCP connection; for a WebSocket, the bytes
        that arrived with its upgrade request, and `framer` the server's
        websocket.Framer."""
        self.sock = sock
        self.framer = framer if websocket is not None else None
        self.address = address
        self.network = network    # what limits count it in (addresses.network_key)
        self.login_deadline = login_deadline    # monotonic(): from accept, TLS included
        # No socket: a session restored after a restart, hibernating.
        if sock is None:
            self.reader = self.outbox = None
        elif websocket is None:
            self.reader = FrameReader(sock, config.max_frame)
            self.outbox = Outbox(sock, config.mailbox_limit, config.mailbox_limit_bytes)
        else:
            # The same frames, one per WebSocket message; pongs go out by the
            # one writer, within the mailbox's limits (`_control`).
            self.outbox = Outbox(sock, config.mailbox_limit, config.mailbox_limit_bytes,
                                 wrap=ws.wrap)
            # Frames that came before the reader: decoded at its first read,
            # not left in the decoder until more bytes arrive.
            self.reader = FrameReader(sock, config.max_frame, ws.MessageDecoder(
                config.max_frame, self._control), early=websocket)
        # Every frame counts, from the first: login probes as well as commands.
        self.bucket = TokenBucket(config.command_rate, config.command_burst)
        self.user = None
        self.login_id = None
        self.state = NEW
        self.acked = 0            # every id up to this one is acknowledged
        self.live_from = None     # the first id this session may take live
        self.unacked_ids = []     # ids taken live and not acknowledged, increasing
        self.unacked = []         # their frames (none for those taken while CLOSING)
        self.unacked_bytes = 0
        self.limit = config.mailbox_limit
        self.limit_bytes = config.mailbox_limit_bytes
        self.pending = []         # frames held back while the backlog goes out
        self.backlog_upto = 0     # the last backlog id queued for this session
        self.end_reason = None
        self.closed = Event()     # set once its end is handed to the store
        self.p2p = None           # (host, port, cert fingerprint) the client takes links on
        self.online_since = 0     # the presence event of this login
        self.txn = None           # the transaction id of the command running
        # [frame or None, Pending, build] of replies not yet sent: a list, as
        # an empty deque costs 0.6 KB a connection; it is short-lived and short.
        self.later = []
        self.loader = None        # the greenlet sending its backlog, while it runs
        self.dropped = False      # its connection was lost (not ended by either side)
        self.hibernated = Event()  # set once it hibernates
        self.wake = Event()       # ends a hibernation early (its mail overflowed)

    @property
    def websocket(self):
        """True for a WebSocket connection (it has a framer), False for TCP."""
        return self.framer is not None

    def deliver(self, frame, mid):
        """Queue message `frame`, whose id is `mid`, for this user. Never
        blocks and never fails: past the mailbox's limits the client is cut
        off, and the id is kept for the session's end to record."""
        ids = self.unacked_ids
        size = len(frame)
        if len(ids) >= self.limit or (self.unacked_bytes + size > self.limit_bytes and ids):
            ids.append(mid)
            self.unacked.append(b"")        # the frame is not kept; the id is
            if self.state is HIBERNATING:
                self.wake.set()
            elif self.state is not CLOSING:
                self.cut_off("mailbox full")
            return
        ids.append(mid)
        self.unacked.append(frame)
        self.unacked_bytes += size
        state = self.state
        if state is ONLINE:
            # Kept as the codec's bytes (a resume may come over TCP), sent as a message.
            self.outbox.push(frame if self.framer is None else self.framer(frame))
        elif state is LOADING:
            self.pending.append(frame)

    def notify(self, frame):
        """Queue a notice's bytes (presence: not acknowledged, not kept),
        within the mailbox's limits; past them the client is cut off."""
        state = self.state
        if state is ONLINE:
            if not self.outbox.put(frame):
                self.cut_off("mailbox full")
        elif state is LOADING:
            if len(self.pending) < self.limit:
                self.pending.append(frame)
            else:
                self.cut_off("mailbox full")

    def acknowledge(self, upto):
        """The client has shown every message up to id `upto`: True if that
        moves its cursor. An id it was never sent counts as the last it was."""
        ids = self.unacked_ids
        upto = min(upto, max(ids[-1] if ids else 0, self.backlog_upto))
        if upto <= self.acked:
            return False
        self.acked = upto
        if ids and ids[0] <= upto:
            done = bisect.bisect_right(ids, upto)
            frames_done = self.unacked[:done]
            self.unacked_bytes -= sum(map(len, frames_done))
            del ids[:done], self.unacked[:done]
        return True

    def take_over(self, old):
        """Become hibernating session `old` on this connection."""
        old.state = CLOSING
        old.wake.set()
        for name in ("user", "login_id", "online_since", "live_from", "backlog_upto", "acked",
                     "unacked_ids", "unacked", "unacked_bytes"):
            setattr(self, name, getattr(old, name))
        self.state = LOADING

    def hold_unacknowledged(self):
        """What it had not acknowledged waits for catch_up, after the backlog."""
        self.pending = [frame for frame in self.unacked if frame]

    def unacknowledged(self):
        """The ids this session took live and its client never acknowledged."""
        return [mid for mid in self.unacked_ids if mid > self.acked]

    def send(self, frame):
        """Queue a control frame (a dict), whatever the mailbox's limits."""
        self.outbox.send(frame)

    def answer(self, frame):
        """Send a reply (a dict) after those still waiting for the store."""
        if self.later:
            self.later.append([frame, None, None])
        else:
            self.outbox.send(frame)

    def answer_later(self, pending, build):
        """Send build(pending) once the store call `pending` is done, in
        command order."""
        entry = [None, pending, build]
        self.later.append(entry)
        pending.rawlink(self._store_answered)

    def _store_answered(self, _pending):
        later = self.later
        while later:
            frame, pending, build = later[0]
            if frame is None:
                if not pending.ready():
                    return
                frame = build(pending)
            del later[0]
            self.outbox.send(frame)

    def wait_answers(self, count, timeout):
        """Wait until fewer than `count` replies wait for the store; False
        if `timeout` seconds pass first."""
        while len(self.later) >= count:
            pending = next((entry[1] for entry in self.later if entry[0] is None), None)
            if pending is None or not pending.wait(timeout):
                return pending is None
            gevent.sleep(0)         # its callback sends it
        return True

    def _control(self, frame):
        """Queue a WebSocket control frame the client asked for (a pong, the
        answer to its close) within the mailbox's limits: every ping costs
        one, and a client that sends them and reads nothing is cut off."""
        if not self.outbox.put(frame):
            self.cut_off("not reading its pongs")

    def cut_off(self, why):
        """End a session whose client does not keep up with its mail. One
        ending already for another reason keeps its way out (and its bye)."""
        self.state = CLOSING
        if self.end_reason is None:
            log.warning("%s: %s (%d messages, %d bytes unacknowledged), disconnecting slow reader",
                        self.user, why, len(self.unacked_ids), self.unacked_bytes)
            self.end_reason = "slow"
            shutdown(self.sock)

    def __repr__(self):
        return f"<Session {self.user or '-'} {self.address} {self.state.value}>"


class Mailroom:
    """Message ids, cursors, backlogs going out, sessions' ends recorded,
    and retention: everything between a session and the message log."""

    def __init__(self, store, config, clock):
        self.store = store
        self.config = config
        self.clock = clock
        self.next_id = None       # the next id to hand out
        self.reserved = 0         # every id up to this one is durably reserved
        self._reserving = None    # the reservation of the next block, while it runs
        self.cursors = {}         # user -> acked id, not yet written
        self._cursors_due = Event()
        self.unwritten = {}       # user -> the end_session arguments the store refused
        self._greenlets = []

    def start(self):
        """Recover what a crash left open; reserve the first block of ids.
        Returns [(user, login id, acknowledged-up-to id)] of the sessions
        that come back hibernating (none without a resume window)."""
        kept, closed = self.store.recover(self.clock(), keep_open=self.config.resume_window > 0)
        if closed or kept:
            log.info("recovered %d session(s) left open by an earlier run", closed + len(kept))
        self.next_id = self.store.first_free_id()
        self.reserved = self.next_id + ID_BLOCK - 1
        self.store.reserve_ids(self.reserved).value()
        self._greenlets = [gevent.spawn(self._write_cursors), gevent.spawn(self._purge)]
        return kept

    # Ids --------------------------------------------------------------------

    def new_id(self):
        """The next message id; StoreError if none can be reserved. Waits
        only when the block in use is spent before the next is reserved."""
        if self.next_id > self.reserved - ID_BLOCK // 2 and self._reserving is None:
            upto = self.reserved + ID_BLOCK
            pending = self._reserving = self.store.reserve_ids(upto)
            pending.rawlink(lambda done: self._reserved(done, upto))
        while self.next_id > self.reserved:
            pending = self._reserving
            if pending is None:
                raise StoreError("no message ids could be reserved")
            pending.value()
        mid = self.next_id
        self.next_id = mid + 1
        return mid

    def _reserved(self, pending, upto):
        self._reserving = None
        try:
            pending.value()
        except StoreError as exc:
            log.error("could not reserve message ids: %s", exc)
            return
        self.reserved = upto

    # Acknowledgements -------------------------------------------------------

    def acknowledged(self, session, upto):
        """An ack frame: True if it moved the session's cursor."""
        if not session.acknowledge(upto):
            return False
        self.cursors[session.user] = session.acked
        self._cursors_due.set()
        return True

    def _write_cursors(self):
        while True:
            self._cursors_due.wait()
            # Acks gather for a while: a user's many acks cost one write.
            gevent.sleep(CURSOR_EVERY)
            self._cursors_due.clear()
            batch, self.cursors = self.cursors, {}
            try:
                self.store.write_cursors(batch)
            except StoreError as exc:
                log.error("could not record %d acknowledgement(s) (their messages may be "
                          "shown again): %s", len(batch), exc)
                for user, upto in batch.items():
                    self.cursors[user] = max(upto, self.cursors.get(user, 0))
                gevent.sleep(RETRY)
                self._cursors_due.set()

    # Sessions ---------------------------------------------------------------

    def open_session(self, name, now, token_hash):
        """Record a login and its resume token's hash, after whatever the
        store refused of the user's last session: (login id,
        acknowledged-up-to id); StoreError if the store cannot, and the
        login is refused."""
        if name in self.unwritten and not self._write_end(name):
            raise StoreError(f"the end of {name}'s last session could not be recorded")
        return self.store.open_session(name, now, token_hash)

    def went_live(self, session):
        """`session` takes ids from its live_from on: recorded before any
        of them can be, so that a crash's recovery finds its broadcasts."""
        self.store.mark_live(session.user, session.live_from).rawlink(_log_failure)

    def catch_up(self, session):
        """Send a session that just came online what it has not
        acknowledged, a page at a time as its client reads, then what
        arrived meanwhile; then it is ONLINE, unless it ended first."""
        name, outbox = session.user, session.outbox
        after, before = session.acked, session.live_from
        try:
            while True:
                rows = self.store.backlog_page(name, after, before)
                if not rows:
                    break
                session.backlog_upto = after = rows[-1][0]
                if not self.feed(session, [
                        encode(frames.message(sender, text, mid, sent_at, txn,
                                              broadcast=bool(broadcast), offline=True))
                        for mid, sender, text, sent_at, txn, broadcast in rows]):
                    return
                if session.end_reason is not None or not outbox.wait_written(FLUSH_TIMEOUT):
                    session.cut_off("not reading its offline messages")
                    return
        except StoreError as exc:
            log.error("%s: could not read the stored messages: %s", name, exc)
            session.cut_off("no stored messages to send")
            return
        while session.pending:
            pending, session.pending = session.pending, []
            if not self.feed(session, pending):
                return
        if session.state is LOADING:
            session.state = ONLINE

    @staticmethod
    def feed(session, items):
        """Queue frames without overrunning the outbox: a backlog may exceed
        its limits, and goes out as the client reads. False if the client
        stops reading for FLUSH_TIMEOUT (then the session is ending)."""
        outbox = session.outbox
        for frame in items:
            while not outbox.put(frame):
                if session.end_reason is not None or \
                        not outbox.wait_room(len(frame), FLUSH_TIMEOUT):
                    session.cut_off("not reading its messages")
                    return False
        return True

    def end_session(self, session, now):
        """Record a session's end: its cursor, what it took and never
        acknowledged, its logout. If the store refuses, kept and offered
        again (the user's next login waits for it). A deleted account's
        end records nothing: its name may become a new account's."""
        name = session.user
        self.cursors.pop(name, None)
        if session.end_reason == frames.REMOVED:
            return
        self.unwritten[name] = (session.login_id, name, now, session.acked,
                                session.unacknowledged())
        if not self._write_end(name) and len(self._greenlets) < 3:
            self._greenlets.append(gevent.spawn(self._retry_ends))

    def _write_end(self, name):
        """Write `name`'s unwritten end; True once nothing is left of it.
        Two writers of the same end (a retry and a login) write the same."""
        end = self.unwritten.get(name)
        if end is None:
            return True
        try:
            self.store.end_session(*end)
        except StoreError as exc:
            log.error("%s: could not record the end of the session (kept in memory, "
                      "tried again): %s", name, exc)
            return False
        if self.unwritten.get(name) is end:
            del self.unwritten[name]
        return True

    def _retry_ends(self):
        try:
            while self.unwritten:
                gevent.sleep(RETRY)
                for name in list(self.unwritten):
                    if name in self.unwritten and self._write_end(name):
                        log.info("%s: the end of the session is recorded", name)
        finally:
            self._greenlets.remove(gevent.getcurrent())

    def forget(self, name):
        """A deleted account: nothing of it is written any more."""
        self.cursors.pop(name, None)
        self.unwritten.pop(name, None)

    # Retention --------------------------------------------------------------

    def _purge(self):
        """Now and then, purge what is past retention, a small transaction
        at a time: the store's thread does the work, the hub never waits."""
        retention = self.config.retention * 86400.0
        while True:
            gevent.sleep(PURGE_EVERY)
            after, done, purged = 0, False, 0
            cutoff = self.clock() - retention
            try:
                while not done:
                    after, deleted, done = self.store.purge(cutoff, after)
                    purged += deleted
                    gevent.sleep(PURGE_PAUSE)
            except StoreError as exc:
                log.error("retention: %s", exc)
            if purged:
                log.info("retention: purged %d message(s)", purged)

    def close(self):
        """Stop; one last try for what the store refused (lost if it fails)."""
        gevent.killall(list(self._greenlets))
        if self.cursors:
            try:
                self.store.write_cursors(self.cursors)
            except StoreError as exc:
                log.error("could not record the last acknowledgements: %s", exc)
        for name in list(self.unwritten):
            self._write_end(name)
