"""One connection's session, and the rules by which no accepted message is lost.

Strategy
- A Session is one connection: its reader, its Outbox (the socket's only
  writer), its rate limit and, once logged in, its user. Its State says where
  a delivery goes: ONLINE, into the mailbox; LOADING (its stored messages
  still going out), held back in `pending` under the mailbox's own limits;
  CLOSING, into `spill`, for the store. A client that falls behind its
  mailbox's limits is cut off; what it missed is stored.
- Mailroom keeps every other rule about mail in one place:
  * one writer at a time per recipient of stored mail (`turn`): a message
    sent to a user who has just gone offline, a closing session's
    undelivered mail and a new login's first read of the backlog all take
    the recipient's turn, so none overtakes another;
  * a backlog leaves the store a page at a time, each page removed only once
    it has been written: a crash shows at most one page again;
  * accepted mail the store refuses (a full disk) is held in memory, in
    order, ahead of anything newer, and offered to the store again.
"""

import enum
import logging

import gevent
from gevent.event import Event

from greenchat import frames
from greenchat.codec import encode
from greenchat.errors import StoreError
from greenchat.server.limits import TokenBucket
from greenchat.server.turns import Turns
from greenchat.transport import FrameReader, Outbox, shutdown

log = logging.getLogger("greenchat.server")

# How long a client that has stopped reading keeps its session while its
# mail waits to be written, before the rest is stored.
FLUSH_TIMEOUT = 5.0
# How often mail the store refused is offered to it again.
HELD_RETRY = 2.0


class State(enum.Enum):
    NEW = "new"            # logging in
    LOADING = "loading"    # logged in; its stored messages are going out
    ONLINE = "online"
    CLOSING = "closing"    # its connection is ending


# The members as plain names: ONLINE is an attribute lookup on the
# class, and deliver() reads one for every delivery.
NEW, LOADING, ONLINE, CLOSING = State


class Session:
    """One connection: its socket, reader, outbox and (once logged in) user."""

    __slots__ = ("sock", "address", "network", "login_deadline", "reader", "outbox", "bucket",
                 "user", "login_id", "state", "pending", "pending_bytes", "spill",
                 "backlog_upto", "end_reason", "closed", "p2p", "online_since")

    def __init__(self, sock, address, network, login_deadline, config):
        self.sock = sock
        self.address = address
        self.network = network    # what limits count it in (addresses.network_key)
        self.login_deadline = login_deadline    # monotonic(): from accept, TLS included
        self.reader = FrameReader(sock, config.max_frame)
        self.outbox = Outbox(sock, config.mailbox_limit, config.mailbox_limit_bytes)
        # Every frame counts, from the first: login probes as well as commands.
        self.bucket = TokenBucket(config.command_rate, config.command_burst)
        self.user = None
        self.login_id = None
        self.state = NEW
        self.pending = []      # (frame, record) held back while stored messages go out
        self.pending_bytes = 0
        self.spill = []        # message records arriving while the session closes
        self.backlog_upto = None  # the last stored row queued for this session
        self.end_reason = None
        self.closed = Event()  # set once its undelivered mail is handed to the store
        self.p2p = None        # (host, port, cert fingerprint) the client takes links on
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
            outbox = self.outbox
            if len(self.pending) < outbox.limit and \
                    self.pending_bytes + len(frame) <= outbox.limit_bytes:
                self.pending.append((frame, record))
                self.pending_bytes += len(frame)
                return
            self.cut_off("mailbox full")
        if record is not None:
            self.spill.append(record)

    def send(self, frame):
        """Queue a control frame (a dict), whatever the mailbox's limits."""
        self.outbox.send(frame)

    def take_pending(self):
        """The deliveries held back so far, oldest first; the list starts anew."""
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        return pending

    def cut_off(self, why):
        """End a session whose client does not keep up with its mail. One
        ending already for another reason keeps its way out (and its bye)."""
        self.state = CLOSING
        if self.end_reason is None:
            log.warning("%s: %s (%d frames, %d bytes waiting), disconnecting slow reader",
                        self.user, why, len(self.outbox) + len(self.pending),
                        self.outbox.nbytes + self.pending_bytes)
            self.end_reason = "slow"
            shutdown(self.sock)

    def undelivered(self, unsent):
        """What this session took and never wrote: (the records of messages
        to store, oldest first; the last stored row it did write, or None).

        `unsent` comes from its closed outbox, then what was held back, then
        what spilled. Its lists start anew.
        """
        taken = unsent + [r for _, r in self.pending if r is not None] + self.spill
        self.pending, self.pending_bytes, self.spill = [], 0, []
        records = [r for r in taken if r.__class__ is not Stored]
        unwritten = [r.row for r in taken if r.__class__ is Stored]
        written = min(unwritten) - 1 if unwritten else self.backlog_upto
        return records, written

    def __repr__(self):
        return f"<Session {self.user or '-'} {self.address} {self.state.value}>"


class Stored:
    """The record of a backlog frame: its row, still in the store until written."""

    __slots__ = ("row",)

    def __init__(self, row):
        self.row = row


class Mailroom:
    """Stored mail: whose turn it is to write it, backlogs going out, and
    what is held in memory while the store refuses it."""

    def __init__(self, store, config):
        self.store = store
        self.config = config
        self.turns = Turns()
        self.held = {}            # user -> accepted records the store refused, oldest first
        self._retrier = None

    def turn(self, name):
        """Hold `name`'s turn to write or read their stored mail."""
        return self.turns.turn(name)

    def store_for(self, name, records):
        """Store `records` (accepted, undelivered) for `name`, after whatever
        is held for it; if the store fails, hold them all. Call in `name`'s
        turn. True if nothing is held for `name` now."""
        batch = self.held.pop(name, []) + records
        if not batch:
            return True
        try:
            self.store.save_offline(batch)
            return True
        except StoreError as exc:
            if records:
                log.error("%s: could not store %d undelivered message(s), holding %d in "
                          "memory: %s", name, len(records), len(batch), exc)
            self.held[name] = batch
            if self._retrier is None:
                self._retrier = gevent.spawn(self._retry_held)
            return False

    def store_new(self, record):
        """Store a message just sent to an offline user, within the quota.
        Call in the recipient's turn. True if stored, False if the quota
        refuses it; StoreError if the store fails (then nothing is kept)."""
        self._store_held(record[0])
        return self.store.store_message(record, self.config.offline_limit,
                                        self.config.offline_limit_bytes)

    def open_session(self, name, now):
        """Record a login and read the first page of its backlog, after
        storing whatever is held for it; call in `name`'s turn. (login id,
        rows); StoreError if the store cannot, so the login is refused."""
        self._store_held(name)
        return self.store.open_session(name, now)

    def _store_held(self, name):
        """Whatever is held for `name` goes to the store first: nothing newer
        may overtake it. StoreError if it cannot."""
        if name in self.held and not self.store_for(name, []):
            raise StoreError(f"messages held in memory for {name} could not be stored")

    def catch_up(self, session, backlog):
        """Send a session that just logged in its stored messages (`backlog`,
        their first page), then whatever arrived for it meanwhile, at the pace
        its client reads them; then it is ONLINE, unless it ended first
        (whatever it still held is then its end's to store)."""
        try:
            caught_up = self.send_backlog(session, backlog)
        except StoreError as exc:
            log.error("%s: could not read the stored messages: %s", session.user, exc)
            session.cut_off("no stored messages to send")
            return
        if caught_up:
            while session.pending and self.feed(session, session.take_pending()):
                pass
            if session.state is LOADING:
                session.state = ONLINE

    def hand_over(self, session, unsent, went_offline):
        """A session ends: in its user's turn, `went_offline()` takes the
        user offline and what the session never wrote (`unsent`, from its
        closed outbox, then what it held back or spilled) goes to the store.
        A message sent to the now-offline user, and a new login's first read,
        wait for the turn, so both come after these. A deleted account's are
        dropped: a new account may take its name."""
        name = session.user
        with self.turn(name):
            records, written = session.undelivered(unsent)
            went_offline()
            session.closed.set()
            if session.end_reason == frames.REMOVED:
                if records:
                    log.info("%s: dropping %d undelivered message(s) of a deleted account",
                             name, len(records))
                return
            if written is not None:
                # Stored messages written out leave the store; the rest stay.
                try:
                    self.store.remove_offline(name, written)
                except StoreError as exc:
                    log.error("%s: could not remove delivered messages (they may be shown "
                              "again): %s", name, exc)
            if records:
                log.info("%s: storing %d undelivered message(s) as offline", name, len(records))
                self.store_for(name, records)

    def send_backlog(self, session, rows):
        """Send the stored messages a page at a time; False if the session ends.

        A page leaves the store only once it has been written (removed
        with the next page's read), so a crash shows at most one page again.
        If the store cannot remove pages (a full disk), they are read all the
        same, removed later with a page that can be, or shown again at the
        next login: at least once, and never a welcome followed by a drop.
        """
        name, outbox = session.user, session.outbox
        while rows:
            session.backlog_upto = rows[-1][0]
            self.feed(session, [(encode(frames.message(sender, text, sent_at=sent_at)), Stored(row))
                                for row, sender, text, sent_at in rows])
            if session.end_reason is not None or not outbox.wait_written(FLUSH_TIMEOUT):
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

    @staticmethod
    def feed(session, items):
        """Queue (frame, record) items without overrunning the mailbox.

        A backlog may exceed the mailbox limit: it is queued as the client
        reads. False if the client stops reading for FLUSH_TIMEOUT; then the
        session is ending and the items not queued are back in
        session.pending, ahead of anything newer, for its end to store.
        """
        outbox = session.outbox
        for index, (frame, record) in enumerate(items):
            while not outbox.put(frame, record):
                if session.end_reason is not None or \
                        not outbox.wait_room(len(frame), FLUSH_TIMEOUT):
                    session.pending[:0] = items[index:]
                    session.cut_off("not reading its messages")
                    return False
        return True

    def _retry_held(self):
        try:
            while self.held:
                gevent.sleep(HELD_RETRY)
                for name in list(self.held):
                    with self.turn(name):
                        if self.store_for(name, []):
                            log.info("%s: the messages held in memory are stored", name)
        finally:
            self._retrier = None

    def close(self):
        """Stop retrying; one last try for what is held (lost if it fails)."""
        if self._retrier is not None:
            self._retrier.kill()
        for name in list(self.held):
            if not self.store_for(name, []):
                log.error("%s: %d undelivered message(s) could not be stored and are lost",
                          name, len(self.held[name]))
