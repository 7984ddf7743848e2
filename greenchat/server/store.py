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

SCHEMA = """
CREATE TABLE IF NOT EXISTS offline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS offline_by_recipient ON offline (recipient, id);
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
-- What each recipient has stored, kept by triggers, for the offline quota.
CREATE TABLE IF NOT EXISTS mailboxes (
    recipient TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS mailbox_in AFTER INSERT ON offline BEGIN
    INSERT INTO mailboxes (recipient, count, bytes)
        VALUES (NEW.recipient, 1, LENGTH(CAST(NEW.body AS BLOB)))
        ON CONFLICT (recipient) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER IF NOT EXISTS mailbox_out AFTER DELETE ON offline BEGIN
    UPDATE mailboxes SET count = count - 1, bytes = bytes - LENGTH(CAST(OLD.body AS BLOB))
        WHERE recipient = OLD.recipient;
    DELETE FROM mailboxes WHERE recipient = OLD.recipient AND count <= 0;
END;
"""
# PRAGMA user_version: 1 once the mailboxes table has been filled from the
# offline messages a database held before it existed.
SCHEMA_VERSION = 1


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
            with db:
                db.execute("DELETE FROM mailboxes")
                db.execute("INSERT INTO mailboxes (recipient, count, bytes) "
                           "SELECT recipient, COUNT(*), SUM(LENGTH(CAST(body AS BLOB))) "
                           "FROM offline GROUP BY recipient")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db = db

    def _call(self, func, *args, grouped=False):
        """Run func(*args) in the store thread; with `grouped`, func(db, *args)
        inside a transaction shared with the calls queued beside it."""
        result, given_up = AsyncResult(), [False]
        self._jobs.put_nowait((func, args, result, grouped, given_up))
        try:
            return result.get(timeout=CALL_TIMEOUT)
        except gevent.Timeout:
            # Not run later, if it has not run yet: its caller was told it failed.
            given_up[0] = True
            raise StoreError(f"database {self.path}: no answer in {CALL_TIMEOUT}s") from None
        except StoreError:
            raise
        except Exception as exc:
            # sqlite3's errors, and anything a value can raise on its way in
            # (text that is not UTF-8): the caller sees one kind of failure.
            raise StoreError(f"database {self.path}: {exc.__class__.__name__}: {exc}") from exc

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
        """In the store thread: one transaction, a savepoint per call.

        Returns [(ok, value or exception)] in the order of `group`.
        """
        db = self._db
        if db is None:
            raise StoreError("store is closed")
        self._check_file()
        outcomes = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for func, args, _, _, given_up in group:
                if given_up[0]:
                    outcomes.append((False, StoreError("given up by its caller")))
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

    # Offline messages -------------------------------------------------------

    def save_offline(self, messages):
        """Store [(recipient, sender, text, sent_at)], whatever the quota:
        messages already accepted, that could not be delivered. Durable on
        return."""
        if messages:
            self._transaction(lambda db: db.executemany(
                "INSERT INTO offline (recipient, sender, body, sent_at) VALUES (?, ?, ?, ?)",
                messages))

    def store_message(self, record, max_count, max_bytes):
        """Store one (recipient, sender, text, sent_at) unless the recipient's
        mailbox would then hold over `max_count` messages or `max_bytes`
        bytes of text; True if stored (durable on return)."""
        def store(db):
            recipient, text = record[0], record[2]
            count, size = db.execute(
                "SELECT count, bytes FROM mailboxes WHERE recipient = ?",
                (recipient,)).fetchone() or (0, 0)
            if count + 1 > max_count or size + len(text.encode("utf-8")) > max_bytes:
                return False
            db.execute("INSERT INTO offline (recipient, sender, body, sent_at) "
                       "VALUES (?, ?, ?, ?)", record)
            return True
        return self._transaction(store)

    def mailbox_size(self, recipient):
        """(messages, bytes of text) stored for `recipient`."""
        return self._transaction(lambda db: db.execute(
            "SELECT count, bytes FROM mailboxes WHERE recipient = ?",
            (recipient,)).fetchone() or (0, 0))

    def remove_offline(self, recipient, upto):
        """Remove recipient's stored messages up to row `upto` (written out)."""
        self._transaction(lambda db: db.execute(
            "DELETE FROM offline WHERE recipient = ? AND id <= ?", (recipient, upto)))

    def offline_page(self, recipient, after=0, done_upto=None, rows=PAGE_ROWS,
                     size=PAGE_CHARS):
        """The next page of recipient's offline messages, oldest first.

        Returns [(id, sender, text, sent_at)] with id > `after`: at most
        `rows` rows and, past the first, at most `size` characters of text. In
        the same transaction, first removes those with id <= `done_upto`
        (the page the caller has finished with).
        """
        return self._transaction(self._page, recipient, after, done_upto, rows, size)

    @staticmethod
    def _page(db, recipient, after, done_upto, rows, size):
        if done_upto is not None:
            db.execute("DELETE FROM offline WHERE recipient = ? AND id <= ?",
                       (recipient, done_upto))
        found, total = [], 0
        for row in db.execute(
                "SELECT id, sender, body, sent_at FROM offline "
                "WHERE recipient = ? AND id > ? ORDER BY id LIMIT ?",
                (recipient, after, rows)):
            total += len(row[2])
            if found and total > size:
                break
            found.append(row)
        return found

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

    def open_session(self, user, at):
        """Record a login and read the first page of the user's offline
        messages (see offline_page), in one transaction: (login id, rows)."""
        def open_(db):
            login_id = db.execute(
                "INSERT INTO logins (user, login_at) VALUES (?, ?)", (user, at)).lastrowid
            return login_id, self._page(db, user, 0, None, PAGE_ROWS, PAGE_CHARS)
        return self._transaction(open_)

    def record_logout(self, login_id, at):
        self._transaction(lambda db: db.execute(
            "UPDATE logins SET logout_at = ? WHERE id = ?", (at, login_id)))

    def close_open_logins(self, at):
        """Close logins left open by a server that died; return how many."""
        return self._transaction(lambda db: db.execute(
            "UPDATE logins SET logout_at = ? WHERE logout_at IS NULL", (at,)).rowcount)

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
        """Everything kept under `name`: its mail, its blocks both ways, its
        login history, its lock, its id. Messages it sent to others stay:
        they are the recipients' now."""
        db.execute("DELETE FROM offline WHERE recipient = ?", (name,))
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
