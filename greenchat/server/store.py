"""Durable state in SQLite: offline messages, blocks, login history, locks.

Strategy: one SQLite connection, opened and used only inside one dedicated OS
thread (a gevent ThreadPool of size 1). Every public method hands its work to
that thread and waits cooperatively, so a commit's fsync never stalls the gevent
hub: the calling greenlet sleeps while other greenlets run.

Calls run in exactly the order they were made, which the server relies on (a
message stored before a user's login is read by that login's fetch; a session's
undelivered messages are stored before newer ones). The pool alone does not
promise that: ThreadPool.spawn may wait for a free worker, and waiters need not
resume in order. So a call only appends its job to a queue, without yielding,
and one dispatcher greenlet feeds the thread from that queue.

The database is in WAL mode with synchronous=FULL: when a method returns, its
transaction is on disk, so an acknowledged offline message survives kill -9.
Every transaction first checks that the file opened is still the one at its
path: SQLite would go on writing into a deleted file, which the next start
would never see. Any failure reaches the caller as StoreError.

Group commit: the calls waiting when the thread comes free run together in
one transaction, each inside its own savepoint (a call that fails is rolled
back alone and raises in its caller; the others still commit). One fsync
then serves them all: with one transaction a call, the store fell thousands
of logins behind at 10,000 logins (docs/design.md).

Nothing else in greenchat imports sqlite3.
"""

import logging
import os
import sqlite3
import time

import gevent
from gevent.event import AsyncResult
from gevent.queue import Queue
from gevent.threadpool import ThreadPool

from greenchat.errors import StoreError

log = logging.getLogger("greenchat.store")

# A store call that takes longer than this has failed (a wedged disk).
CALL_TIMEOUT = 60.0
# At most this many calls share one transaction, so one group's commit
# stays short.
GROUP_MAX = 256
# An offline backlog is read a page at a time, and a page leaves the store
# only once it has been written: at most one page is shown again after a
# crash, and a backlog never sits in memory whole.
PAGE_ROWS = 256
PAGE_CHARS = 1 << 20
# A `history` answer holds at most this many characters of text, so its
# reply stays well inside a mailbox's byte limit.
HISTORY_CHARS = 1 << 20
# A grouped call that writes with one statement, which undoes itself if it
# fails: it runs without the savepoint other grouped calls take (the log's
# appends: one a message, on the fan-out's path).
ONE_WRITE = "one write"
# Retention looks at this many messages a transaction.
PURGE_ROWS = 500

SCHEMA = """
-- Every accepted message, once: a direct message names its recipient; a
-- broadcast (recipient NULL) names only the users online then who did not
-- get it (they block the sender). Ids are handed out by the server from
-- blocks reserved in meta, so a crash skips ids but never reuses one.
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    recipient TEXT,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    txn TEXT,
    skipped TEXT
);
CREATE INDEX IF NOT EXISTS log_to ON log (recipient, id) WHERE recipient IS NOT NULL;
CREATE INDEX IF NOT EXISTS log_pair ON log (sender, recipient, id);
CREATE INDEX IF NOT EXISTS log_txn ON log (sender, txn) WHERE txn IS NOT NULL;
-- Each user's acknowledged-up-to id, and while a session of theirs is open,
-- the first id it took live (a crash's recovery finds its broadcasts from there).
CREATE TABLE IF NOT EXISTS cursors (
    user TEXT PRIMARY KEY,
    acked INTEGER NOT NULL,
    live_from INTEGER
) WITHOUT ROWID;
-- Broadcasts (and live messages) a session ended without acknowledging.
CREATE TABLE IF NOT EXISTS inbox (
    user TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (user, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_by_id ON inbox (id);
-- The hash of each user's resume token (the token itself is never stored).
CREATE TABLE IF NOT EXISTS tokens (
    user TEXT PRIMARY KEY,
    hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blocks (
    blocker TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (blocker, blocked)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    login_at REAL NOT NULL,
    logout_at REAL
);
CREATE INDEX IF NOT EXISTS logins_by_user ON logins (user, logout_at);
CREATE TABLE IF NOT EXISTS locks (
    user TEXT PRIMARY KEY,
    until REAL NOT NULL
) WITHOUT ROWID;
-- The account id each name was last seen with (credentials.py): a name
-- whose id changes is a new account, and nothing of the old one is kept.
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    account_id TEXT NOT NULL
) WITHOUT ROWID;
-- The direct messages each recipient has not acknowledged, for the offline
-- quota: added to by a trigger, taken from as the cursor moves.
CREATE TABLE IF NOT EXISTS mailboxes (
    recipient TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS log_in AFTER INSERT ON log WHEN NEW.recipient IS NOT NULL BEGIN
    INSERT INTO mailboxes (recipient, count, bytes)
        VALUES (NEW.recipient, 1, LENGTH(CAST(NEW.body AS BLOB)))
        ON CONFLICT (recipient) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes;
END;
"""
# PRAGMA user_version: 2 once the message log holds what the table of
# offline messages (versions 0 and 1) held.
SCHEMA_VERSION = 2

# The columns a message is read with: (id, sender, text, sent_at, txn, broadcast).
_MESSAGE = "log.id, sender, body, sent_at, txn, recipient IS NULL"


def _failure(path, exc):
    """sqlite3's errors, and anything a value can raise on its way in (text
    that is not UTF-8), as the one kind of failure callers see."""
    if isinstance(exc, StoreError):
        return exc
    return StoreError(f"database {path}: {exc.__class__.__name__}: {exc}")


class Pending:
    """A store call running without its caller waiting: `rawlink(callback)`
    runs callback(pending) in the hub once it is done; `value()` is its
    result (waited for), or raises StoreError."""

    __slots__ = ("_result", "_path")

    def __init__(self, result, path):
        self._result = result
        self._path = path

    def ready(self):
        return self._result.ready()

    def rawlink(self, callback):
        self._result.rawlink(lambda _: callback(self))

    def wait(self, timeout):
        """True once done, False if `timeout` seconds pass first."""
        self._result.wait(timeout)
        return self._result.ready()

    def value(self):
        """Its result, waiting for it if need be."""
        if not self._result.ready() and not self.wait(CALL_TIMEOUT):
            raise StoreError(f"database {self._path}: no answer in {CALL_TIMEOUT}s")
        if self._result.successful():
            return self._result.value
        raise _failure(self._path, self._result.exception)


def _outcome(func, *args):
    """(True, func(*args)) or (False, the exception): in the store thread,
    where gevent would report a raised exception as a crash."""
    try:
        return True, func(*args)
    except Exception as exc:
        return False, exc


class Store:
    """All of greenchat's SQLite access. Create with Store.open(path)."""

    def __init__(self, path):
        self.path = path
        self._pool = ThreadPool(1)
        self._db = None
        self._identity = None     # (device, inode) of the file opened
        self._lost = False        # that file is gone: said once, then refused
        self._jobs = Queue()
        self._dispatcher = gevent.spawn(self._dispatch)

    @classmethod
    def open(cls, path):
        directory = os.path.dirname(path)
        try:
            if directory:
                os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {directory}: {exc.strerror}") from None
        store = cls(path)
        store._call(store._connect)
        return store

    def _connect(self):
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        st = os.stat(self.path)
        self._identity = st.st_dev, st.st_ino
        db.executescript(SCHEMA)
        if db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            # One transaction (with isolation_level=None, `with db` alone
            # begins none): cut short, a migration leaves nothing behind.
            with db:
                db.execute("BEGIN IMMEDIATE")
                self._migrate(db)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db = db

    @staticmethod
    def _migrate(db):
        """The offline messages of a database from before the log become
        log rows, in their order, none acknowledged."""
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'offline'").fetchone():
            db.execute("DROP TRIGGER IF EXISTS mailbox_in")
            db.execute("DROP TRIGGER IF EXISTS mailbox_out")
            db.execute("DELETE FROM mailboxes")
            db.execute("INSERT INTO log (sender, recipient, body, sent_at) "
                       "SELECT sender, recipient, body, sent_at FROM offline ORDER BY id")
            db.execute("DROP TABLE offline")

    def _enqueue(self, func, args, grouped):
        result, given_up = AsyncResult(), [False]
        self._jobs.put_nowait((func, args, result, grouped, given_up))
        return result, given_up

    def _call(self, func, *args, grouped=False):
        """Run func(*args) in the store thread; with `grouped`, func(db, *args)
        inside a transaction shared with the calls queued beside it."""
        result, given_up = self._enqueue(func, args, grouped)
        try:
            return result.get(timeout=CALL_TIMEOUT)
        except gevent.Timeout:
            # Not run later, if it has not run yet: its caller was told it failed.
            given_up[0] = True
            raise StoreError(f"database {self.path}: no answer in {CALL_TIMEOUT}s") from None
        except StoreError:
            raise
        except Exception as exc:
            raise _failure(self.path, exc) from exc

    def _dispatch(self):
        jobs = self._jobs
        while True:
            job = jobs.get()
            func, args, result, grouped, given_up = job
            if func is None:
                return
            if given_up[0]:
                continue
            if not grouped:
                ok, value = self._pool.apply(_outcome, (func, *args))
                if ok:
                    result.set(value)
                else:
                    result.set_exception(value)     # raised in the caller
                continue
            group = [job]
            while len(group) < GROUP_MAX and not jobs.empty() and jobs.peek_nowait()[3]:
                group.append(jobs.get_nowait())
            ok, outcomes = self._pool.apply(_outcome, (self._run_group, group))
            if not ok:          # the transaction itself failed: every call did
                outcomes = [(False, outcomes)] * len(group)
            for (_, _, result, _, _), (ok, value) in zip(group, outcomes, strict=True):
                if ok:
                    result.set(value)
                else:
                    result.set_exception(value)

    def _run_group(self, group):
        """In the store thread: one transaction, a savepoint per call (but
        a ONE_WRITE call).

        Returns [(ok, value or exception)] in the order of `group`.
        """
        db = self._db
        if db is None:
            raise StoreError("store is closed")
        self._check_file()
        outcomes = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for func, args, _, grouped, given_up in group:
                if given_up[0]:
                    outcomes.append((False, StoreError("given up by its caller")))
                    continue
                if grouped is ONE_WRITE:
                    # A failed statement undoes itself: no savepoint needed.
                    try:
                        outcomes.append((True, func(db, *args)))
                    except Exception as exc:
                        outcomes.append((False, exc))
                    continue
                db.execute("SAVEPOINT call")
                try:
                    value = func(db, *args)
                except Exception as exc:
                    db.execute("ROLLBACK TO call")
                    db.execute("RELEASE call")
                    outcomes.append((False, exc))
                else:
                    db.execute("RELEASE call")
                    outcomes.append((True, value))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _check_file(self):
        """Refuse to write once the database file is gone or replaced: SQLite
        would go on writing into an unlinked file, lost at the next start."""
        try:
            st = os.stat(self.path)
            same = (st.st_dev, st.st_ino) == self._identity
        except OSError:
            same = False
        if not same:
            if not self._lost:
                self._lost = True
                log.error("database file %s was deleted or replaced while the server runs; "
                          "nothing more is written to it (restart the server)", self.path)
            raise StoreError(f"database file {self.path} was deleted or replaced")

    def _transaction(self, func, *args):
        """Run func(db, *args) in the store thread, committed on return."""
        return self._call(func, *args, grouped=True)

    def close(self):
        def run():
            if self._db is not None:
                self._db.close()
                self._db = None
        try:
            self._call(run)
        finally:
            self._jobs.put_nowait((None, (), None, False, [False]))
            self._dispatcher.join(timeout=CALL_TIMEOUT)
            self._pool.kill()

    # The message log ---------------------------------------------------------

    def submit(self, func, *args):
        """Run func(db, *args) in a grouped transaction without waiting:
        a Pending, whose callbacks run once it has committed or failed."""
        result, _ = self._enqueue(func, args, True)
        return Pending(result, self.path)

    def first_free_id(self):
        """The lowest message id never handed out: past every id reserved
        (handed out or not) and every id in the log."""
        def first(db):
            reserved = db.execute("SELECT value FROM meta WHERE key = 'reserved'").fetchone()
            logged = db.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()[0]
            return max(reserved[0] if reserved else 0, logged) + 1
        return self._transaction(first)

    def reserve_ids(self, upto):
        """Durably reserve every id up to `upto`; a Pending."""
        return self.submit(lambda db: db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('reserved', ?)", (upto,)))

    def append(self, row, quota=None):
        """Log one accepted message without waiting: a Pending of True, or of
        False if `quota` (max messages, max bytes) is given and the
        recipient's unacknowledged direct messages would then pass it.

        `row` is (id, sender, recipient or None, text, sent_at, txn, skipped).
        """
        result, _ = self._enqueue(self._append, (row, quota), ONE_WRITE)
        return Pending(result, self.path)

    @staticmethod
    def _append(db, row, quota):
        if quota is not None:
            count, size = db.execute("SELECT count, bytes FROM mailboxes WHERE recipient = ?",
                                     (row[2],)).fetchone() or (0, 0)
            if count + 1 > quota[0] or size + len(row[3].encode("utf-8")) > quota[1]:
                return False
        db.execute("INSERT INTO log (id, sender, recipient, body, sent_at, txn, skipped) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        return True

    def mailbox_size(self, recipient):
        """(messages, bytes of text) sent to `recipient` and not acknowledged."""
        return self._transaction(lambda db: db.execute(
            "SELECT count, bytes FROM mailboxes WHERE recipient = ?",
            (recipient,)).fetchone() or (0, 0))

    def mark_live(self, user, live_from):
        """Record, without waiting, that `user`'s session takes messages
        live from id `live_from` on: queued before any message with such an
        id, so it is never committed after one (recover reads it)."""
        return self.submit(lambda db: db.execute(
            "INSERT INTO cursors (user, acked, live_from) VALUES (?, 0, ?) "
            "ON CONFLICT (user) DO UPDATE SET live_from = excluded.live_from",
            (user, live_from)))

    def backlog_page(self, user, after, before, rows=PAGE_ROWS, size=PAGE_CHARS):
        """The next page of what `user` has not acknowledged, oldest first:
        [(id, sender, text, sent_at, txn, broadcast)] with `after` < id <
        `before`, at most `rows` rows and, past the first, at most `size`
        characters of text."""
        return self._transaction(self._backlog_page, user, after, before, rows, size)

    @staticmethod
    def _backlog_page(db, user, after, before, rows, size):
        found, total = [], 0
        for row in db.execute(
                f"SELECT {_MESSAGE} FROM log WHERE recipient = ? AND id > ? AND id < ? "
                f"UNION SELECT {_MESSAGE} FROM inbox JOIN log ON log.id = inbox.id "
                "WHERE inbox.user = ? AND inbox.id > ? AND inbox.id < ? ORDER BY 1 LIMIT ?",
                (user, after, before, user, after, before, rows)):
            total += len(row[2])
            if found and total > size:
                break
            found.append(row)
        return found

    def write_cursors(self, acked):
        """Record each user's acknowledged-up-to id ({user: id}); a cursor
        never moves back."""
        if acked:
            self._transaction(lambda db: [self._advance(db, user, upto)
                                          for user, upto in acked.items()])

    @staticmethod
    def _advance(db, user, upto):
        old = db.execute("SELECT acked FROM cursors WHERE user = ?", (user,)).fetchone()
        old = old[0] if old else 0
        if upto <= old:
            return
        db.execute("INSERT INTO cursors (user, acked) VALUES (?, ?) "
                   "ON CONFLICT (user) DO UPDATE SET acked = excluded.acked", (user, upto))
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM log "
            "WHERE recipient = ? AND id > ? AND id <= ?", (user, old, upto)).fetchone()
        if count:
            db.execute("UPDATE mailboxes SET count = count - ?, bytes = bytes - ? "
                       "WHERE recipient = ?", (count, size, user))
            db.execute("DELETE FROM mailboxes WHERE recipient = ? AND count <= 0", (user,))
        db.execute("DELETE FROM inbox WHERE user = ? AND id <= ?", (user, upto))

    def end_session(self, login_id, user, at, acked, unacked):
        """A session is over: its cursor, the ids it took and never
        acknowledged (kept for the user's next session), its logout time;
        one transaction."""
        def end(db):
            self._advance(db, user, acked)
            db.executemany("INSERT OR IGNORE INTO inbox (user, id) VALUES (?, ?)",
                           [(user, mid) for mid in unacked if mid > acked])
            db.execute("UPDATE cursors SET live_from = NULL WHERE user = ?", (user,))
            if login_id is not None:
                db.execute("UPDATE logins SET logout_at = ? WHERE id = ?", (at, login_id))
        self._transaction(end)

    def recover(self, at, keep_open=False):
        """After a crash: every session left open gets, in its inbox, the
        broadcasts it took live and never acknowledged. Its login is closed;
        with `keep_open`, each user's latest open login stays open (to come
        back hibernating) and the others are closed. Returns [(user, login
        id, acknowledged-up-to id)] of the logins kept open, and how many
        were closed."""
        def recover(db):
            open_users = [user for (user,) in db.execute(
                "SELECT DISTINCT user FROM logins WHERE logout_at IS NULL")]
            starts = {}
            for user in open_users:
                row = db.execute("SELECT acked, live_from FROM cursors WHERE user = ?",
                                 (user,)).fetchone()
                if row is not None and row[1] is not None:
                    starts[user] = max(row[0] + 1, row[1])
            if starts:
                found = []
                for mid, sender, skipped in db.execute(
                        "SELECT id, sender, skipped FROM log WHERE id >= ? AND recipient IS NULL "
                        "ORDER BY id", (min(starts.values()),)):
                    left_out = set(skipped.split()) if skipped else ()
                    found.extend((user, mid) for user, start in starts.items()
                                 if mid >= start and user != sender and user not in left_out)
                db.executemany("INSERT OR IGNORE INTO inbox (user, id) VALUES (?, ?)", found)
            db.execute("UPDATE cursors SET live_from = NULL WHERE live_from IS NOT NULL")
            kept = []
            if keep_open:
                kept = db.execute(
                    "SELECT logins.user, MAX(logins.id), COALESCE(cursors.acked, 0) FROM logins "
                    "LEFT JOIN cursors ON cursors.user = logins.user "
                    "WHERE logout_at IS NULL GROUP BY logins.user").fetchall()
            closed = db.execute(
                "UPDATE logins SET logout_at = ? WHERE logout_at IS NULL AND id NOT IN "
                f"({', '.join('?' * len(kept))})", (at, *(login for _, login, _ in kept))).rowcount
            return kept, closed
        return self._transaction(recover)

    def find_txn(self, sender, txn):
        """True if the log holds a message `sender` sent with transaction id `txn`."""
        return self._transaction(lambda db: db.execute(
            "SELECT 1 FROM log WHERE sender = ? AND txn = ?", (sender, txn)).fetchone()
            is not None)

    def history(self, one, other, count, size=HISTORY_CHARS):
        """The last `count` direct messages between `one` and `other`, both
        ways, oldest first: [(id, sender, recipient, text, sent_at)], at most
        `size` characters of text (the newest kept)."""
        def read(db):
            found, total = [], 0
            for row in db.execute(
                    "SELECT id, sender, recipient, body, sent_at FROM log "
                    "WHERE sender = ? AND recipient = ? "
                    "UNION ALL SELECT id, sender, recipient, body, sent_at FROM log "
                    "WHERE sender = ? AND recipient = ? ORDER BY 1 DESC LIMIT ?",
                    (one, other, other, one, count)):
                total += len(row[3])
                if found and total > size:
                    break
                found.append(row)
            found.reverse()
            return found
        return self._transaction(read)

    def purge(self, cutoff, after, rows=PURGE_ROWS):
        """Delete what retention no longer keeps among the `rows` messages
        after id `after`: sent before `cutoff` and acknowledged by every
        recipient. Returns (last id looked at, rows deleted, True once it met
        a message sent at or after `cutoff` or the end of the log)."""
        def purge(db):
            # Broadcasts past an open session's cursor may be its to recover.
            floor = db.execute("SELECT MIN(acked) FROM cursors WHERE live_from IS NOT NULL"
                               ).fetchone()[0]
            acked, gone, last = {}, [], after
            batch = db.execute("SELECT id, recipient, sent_at FROM log WHERE id > ? "
                               "ORDER BY id LIMIT ?", (after, rows)).fetchall()
            for mid, recipient, sent_at in batch:
                if sent_at >= cutoff:
                    break
                last = mid
                if recipient is not None:
                    if recipient not in acked:
                        row = db.execute("SELECT acked FROM cursors WHERE user = ?",
                                         (recipient,)).fetchone()
                        acked[recipient] = row[0] if row else 0
                    done = mid <= acked[recipient]
                else:
                    done = (floor is None or mid <= floor) and db.execute(
                        "SELECT 1 FROM inbox WHERE id = ?", (mid,)).fetchone() is None
                if done:
                    gone.append((mid,))
            else:
                if len(batch) == rows:
                    db.executemany("DELETE FROM log WHERE id = ?", gone)
                    return last, len(gone), False
            db.executemany("DELETE FROM log WHERE id = ?", gone)
            return last, len(gone), True
        return self._transaction(purge)

    # Blocks -----------------------------------------------------------------

    def add_block(self, blocker, blocked):
        self._transaction(lambda db: db.execute(
            "INSERT OR IGNORE INTO blocks (blocker, blocked) VALUES (?, ?)", (blocker, blocked)))

    def remove_block(self, blocker, blocked):
        self._transaction(lambda db: db.execute(
            "DELETE FROM blocks WHERE blocker = ? AND blocked = ?", (blocker, blocked)))

    def all_blocks(self):
        """[(blocker, blocked)] for every block in force."""
        return self._transaction(lambda db: db.execute(
            "SELECT blocker, blocked FROM blocks").fetchall())

    # Login history ----------------------------------------------------------

    def open_session(self, user, at, token_hash=None):
        """Record a login, and the hash of its resume token: (login id, the
        user's acknowledged-up-to id)."""
        def open_(db):
            login_id = db.execute(
                "INSERT INTO logins (user, login_at) VALUES (?, ?)", (user, at)).lastrowid
            if token_hash is not None:
                self._set_token(db, user, token_hash)
            row = db.execute("SELECT acked FROM cursors WHERE user = ?", (user,)).fetchone()
            return login_id, row[0] if row else 0
        return self._transaction(open_)

    @staticmethod
    def _set_token(db, user, token_hash):
        db.execute("INSERT OR REPLACE INTO tokens (user, hash) VALUES (?, ?)",
                   (user, token_hash))

    def set_token(self, user, token_hash):
        """A new resume token for `user`'s session (its hash)."""
        self._transaction(self._set_token, user, token_hash)

    def token_hash(self, user):
        """The hash of `user`'s resume token, or None."""
        row = self._transaction(lambda db: db.execute(
            "SELECT hash FROM tokens WHERE user = ?", (user,)).fetchone())
        return row[0] if row else None

    def record_logout(self, login_id, at):
        self._transaction(lambda db: db.execute(
            "UPDATE logins SET logout_at = ? WHERE id = ?", (at, login_id)))

    def last_logouts(self):
        """{user: time of that user's latest logout}."""
        return dict(self._transaction(lambda db: db.execute(
            "SELECT user, MAX(logout_at) FROM logins WHERE logout_at IS NOT NULL "
            "GROUP BY user").fetchall()))

    # Accounts ---------------------------------------------------------------

    def sync_accounts(self, ids, forget=()):
        """Record each account's id ({name: id or None}) and forget every
        name in `forget`, and every name whose recorded id differs from its
        id now (both known: a deleted name added again). Returns the names
        forgotten. A name with no id now keeps the id recorded for it."""
        def sync(db):
            known = dict(db.execute("SELECT name, account_id FROM accounts"))
            gone = set(forget)
            gone.update(name for name, account_id in ids.items()
                        if account_id is not None and known.get(name, account_id) != account_id)
            for name in gone:
                self._forget(db, name)
            db.executemany("INSERT OR REPLACE INTO accounts (name, account_id) VALUES (?, ?)",
                           [(name, account_id) for name, account_id in ids.items()
                            if account_id is not None and known.get(name) != account_id])
            return gone
        return self._transaction(sync)

    @staticmethod
    def _forget(db, name):
        """Everything kept under `name`: its mail, its cursor, its blocks both
        ways, its login history, its lock, its id. Messages it sent to others
        stay: they are the recipients' now."""
        db.execute("DELETE FROM log WHERE recipient = ?", (name,))
        db.execute("DELETE FROM inbox WHERE user = ?", (name,))
        db.execute("DELETE FROM cursors WHERE user = ?", (name,))
        db.execute("DELETE FROM tokens WHERE user = ?", (name,))
        db.execute("DELETE FROM mailboxes WHERE recipient = ?", (name,))
        db.execute("DELETE FROM blocks WHERE blocker = ? OR blocked = ?", (name, name))
        db.execute("DELETE FROM logins WHERE user = ?", (name,))
        db.execute("DELETE FROM locks WHERE user = ?", (name,))
        db.execute("DELETE FROM accounts WHERE name = ?", (name,))

    # Account locks ----------------------------------------------------------

    def set_lock(self, user, until):
        self._transaction(lambda db: db.execute(
            "INSERT OR REPLACE INTO locks (user, until) VALUES (?, ?)", (user, until)))

    def clear_lock(self, user):
        self._transaction(lambda db: db.execute("DELETE FROM locks WHERE user = ?", (user,)))

    def active_locks(self, now=None):
        """{user: until} for locks that have not yet expired; drops the others."""
        now = time.time() if now is None else now

        def locks(db):
            db.execute("DELETE FROM locks WHERE until <= ?", (now,))
            return dict(db.execute("SELECT user, until FROM locks").fetchall())
        return self._transaction(locks)
