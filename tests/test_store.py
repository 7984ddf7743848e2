"""Unit tests of the SQLite store (greenchat/server/store.py).

What they cover:
- the message log: append, backlog pages (per recipient, oldest first,
  bounded by rows and by text, only ids in (after, before)), broadcasts that
  reach a backlog only through inbox rows, the offline quota, cursors,
  end_session, recover after a crash, ids, history, retention (purge);
- opening a copy of a database taken while it was being written, and a
  database from before the log (schema version 0 or 1: offline messages),
  also when its migration was cut short;
- blocks, locks, login history, accounts forgetting a name;
- the machinery: calls run in the order made, calls queued together share
  one transaction and fail alone, the hub is never stalled, hostile text
  raises StoreError and nothing else, a call given up on never runs, a
  database file deleted under the store is refused.
"""

import itertools
import os
import shutil
import sqlite3
import time

import gevent
import pytest

from greenchat.errors import StoreError
from greenchat.server.store import Store

from support import HubTicker

# Past every id these tests use: a backlog read with no upper bound.
END = 1 << 40


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "sub" / "dir" / "greenchat.sqlite3")


@pytest.fixture
def store(path):
    store = Store.open(path)
    yield store
    store.close()


def done(pending):
    """A Pending's value, once it has committed (StoreError if it failed)."""
    assert pending.wait(10), "the store did not answer"
    return pending.value()


def direct(mid, sender, recipient, text, sent_at=None, txn=None):
    return (mid, sender, recipient, text, float(mid) if sent_at is None else sent_at, txn, None)


def broadcast(mid, sender, text, skipped=None, sent_at=None, txn=None):
    return (mid, sender, None, text, float(mid) if sent_at is None else sent_at, txn, skipped)


def append(store, *rows, quota=None):
    """Log rows (submitted together, as the server does) and wait for them."""
    return [done(p) for p in [store.append(row, quota) for row in rows]]


def backlog(store, user, after=0, before=END, **page):
    return store.backlog_page(user, after, before, **page)


def ids(rows):
    return [row[0] for row in rows]


def texts(rows):
    return [row[2] for row in rows]


def test_open_creates_missing_directories_and_uses_wal(path):
    Store.open(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()


# The message log -------------------------------------------------------------

def test_a_backlog_is_the_users_direct_messages_oldest_first(store):
    # Ids are handed out by the server: the order of the appends is not theirs.
    append(store, direct(3, "dave", "bob", "three", txn="t3"), direct(1, "alice", "bob", "one"),
           direct(2, "alice", "carol", "for carol"), broadcast(4, "alice", "to all"),
           direct(6, "carol", "bob", "six"), direct(5, "bob", "alice", "from bob"))
    assert backlog(store, "bob") == [(1, "alice", "one", 1.0, None, 0),
                                     (3, "dave", "three", 3.0, "t3", 0),
                                     (6, "carol", "six", 6.0, None, 0)]
    assert texts(backlog(store, "carol")) == ["for carol"]
    assert texts(backlog(store, "alice")) == ["from bob"]
    assert backlog(store, "nobody") == []
    # Only ids strictly between `after` and `before`.
    assert ids(backlog(store, "bob", after=1)) == [3, 6]
    assert ids(backlog(store, "bob", before=6)) == [1, 3]
    assert ids(backlog(store, "bob", after=1, before=6)) == [3]
    assert backlog(store, "bob", after=6) == []


def test_a_page_is_bounded_by_rows_and_text_but_holds_at_least_one_row(store):
    append(store, *[direct(i, "alice", "bob", "x" * 600) for i in range(1, 6)])
    assert ids(backlog(store, "bob", rows=2)) == [1, 2]
    assert ids(backlog(store, "bob", after=2, rows=2)) == [3, 4]
    assert ids(backlog(store, "bob", after=4, rows=2)) == [5]
    assert ids(backlog(store, "bob", size=1300)) == [1, 2]
    assert ids(backlog(store, "bob", size=1000)) == [1]
    assert ids(backlog(store, "bob", size=100)) == [1]       # bigger than a page: alone
    assert ids(backlog(store, "bob", after=1, size=100)) == [2]
    assert ids(backlog(store, "bob", rows=4, size=10_000)) == [1, 2, 3, 4]


def test_broadcasts_reach_a_backlog_only_through_the_inbox(store):
    append(store, broadcast(1, "alice", "hello all"), direct(2, "alice", "bob", "psst"),
           broadcast(3, "carol", "later"))
    assert ids(backlog(store, "bob")) == [2]
    login, acked = store.open_session("bob", 10.0)
    store.end_session(login, "bob", 11.0, acked, [1])
    assert backlog(store, "bob") == [(1, "alice", "hello all", 1.0, None, 1),
                                     (2, "alice", "psst", 2.0, None, 0)]
    assert backlog(store, "carol") == [] and backlog(store, "dave") == []


def test_the_quota_counts_unacknowledged_direct_messages_and_utf8_bytes(store):
    quota = (3, 100)
    assert append(store, direct(1, "alice", "bob", "é" * 10), quota=quota) == [True]   # 20 B
    assert store.mailbox_size("bob") == (1, 20)
    assert append(store, direct(2, "alice", "bob", "x" * 80), quota=quota) == [True]
    assert append(store, direct(3, "alice", "bob", "y"), quota=quota) == [False]       # 101 B
    assert append(store, direct(4, "alice", "bob", ""), quota=quota) == [True]
    assert append(store, direct(5, "alice", "bob", ""), quota=quota) == [False]  # a 4th message
    # Refused means not logged.
    assert ids(backlog(store, "bob")) == [1, 2, 4]
    assert store.mailbox_size("bob") == (3, 100)
    # Without a quota (bob is online) a message is logged whatever the count;
    # broadcasts are not in anyone's mailbox.
    append(store, direct(6, "carol", "bob", "spilled"), broadcast(7, "carol", "b" * 500))
    assert store.mailbox_size("bob") == (4, 107)
    assert store.mailbox_size("nobody") == (0, 0)
    # Acknowledging frees the quota, by what the acknowledged messages held.
    store.write_cursors({"bob": 2})
    assert store.mailbox_size("bob") == (2, 7)
    assert append(store, direct(8, "alice", "bob", "z" * 93), quota=quota) == [True]
    assert append(store, direct(9, "alice", "bob", "z"), quota=quota) == [False]
    store.write_cursors({"bob": 9})
    assert store.mailbox_size("bob") == (0, 0)
    assert ids(backlog(store, "bob", after=9)) == []


def test_a_cursor_never_moves_back(store):
    append(store, *[direct(i, "alice", "bob", "m%d" % i) for i in range(1, 6)])
    store.write_cursors({"bob": 3})
    assert store.mailbox_size("bob") == (2, 4)
    store.write_cursors({"bob": 1})
    assert store.open_session("bob", 1.0)[1] == 3
    assert store.mailbox_size("bob") == (2, 4)       # nothing counted back in
    store.write_cursors({"bob": 3, "carol": 2})
    assert store.open_session("bob", 2.0)[1] == 3
    assert store.open_session("carol", 2.0)[1] == 2
    assert store.mailbox_size("bob") == (2, 4)
    store.write_cursors({})                          # nothing to write: no call at all
    store.write_cursors({"bob": 5})
    assert store.mailbox_size("bob") == (0, 0)


def test_write_cursors_deletes_the_inbox_rows_acknowledged(store):
    append(store, *[broadcast(i, "alice", "b%d" % i) for i in range(1, 5)])
    store.end_session(None, "bob", 1.0, 0, [1, 2, 3, 4])
    assert ids(backlog(store, "bob")) == [1, 2, 3, 4]
    store.write_cursors({"bob": 2})
    # Gone from the store, not only past `after`.
    assert ids(backlog(store, "bob")) == [3, 4]


def test_end_session_keeps_what_was_taken_and_not_acknowledged(store):
    login, acked = store.open_session("bob", 1.0)
    assert acked == 0
    # Taken live: 2, 3, 4 (a broadcast), 5 and 6; 1 and 7 waited offline.
    append(store, direct(1, "alice", "bob", "offline"), direct(2, "alice", "bob", "acked"),
           broadcast(3, "carol", "acked too"), broadcast(4, "carol", "all"),
           direct(5, "alice", "bob", "live"), broadcast(6, "dave", "again"),
           direct(7, "alice", "bob", "after"), broadcast(8, "dave", "not taken"))
    store.end_session(login, "bob", 2.0, 3, [2, 3, 4, 5, 6])
    assert store.last_logouts() == {"bob": 2.0}
    assert store.open_session("bob", 3.0)[1] == 3
    # Merged in id order with the direct rows; 5 is both, and comes once.
    rows = backlog(store, "bob", after=3)
    assert ids(rows) == [4, 5, 6, 7]
    assert [row[5] for row in rows] == [1, 0, 1, 0]
    # Ids at or below the cursor never come back, even if said unacknowledged.
    store.end_session(None, "bob", 4.0, 5, [1, 5, 6])
    assert ids(backlog(store, "bob", after=5)) == [6, 7]
    assert store.mailbox_size("bob") == (1, 5)


def test_recover_gives_a_crashed_session_the_broadcasts_it_took_live(path):
    store = Store.open(path)
    alice_login, acked = store.open_session("alice", 1.0)
    store.mark_live("alice", 3).wait(5)
    dave_login, acked = store.open_session("dave", 1.0)
    store.mark_live("dave", 7).wait(5)
    store.record_logout(store.open_session("erin", 1.0)[0], 1.5)    # not online
    append(store,
           broadcast(1, "bob", "before alice came"),
           direct(2, "bob", "alice", "offline"),
           broadcast(3, "bob", "acked"),
           broadcast(4, "alice", "alice's own"),
           broadcast(5, "bob", "alice blocks bob", skipped="alice carol"),
           broadcast(6, "carol", "one"),
           broadcast(7, "bob", "two", skipped="carol dave"),
           direct(8, "bob", "alice", "direct"),
           broadcast(9, "dave", "three"),
           broadcast(10, "carol", "four"))
    store.write_cursors({"alice": 3})
    store.close()           # no end_session: as if the server had died
    store = Store.open(path)
    try:
        assert store.recover(20.0) == ([], 2)
        assert ids(backlog(store, "alice", after=3)) == [6, 7, 8, 9, 10]
        assert [row[5] for row in backlog(store, "alice", after=3)] == [1, 1, 0, 1, 1]
        # 6 is before dave's live_from, 7 skips dave, 9 is his own.
        assert ids(backlog(store, "dave")) == [10]
        assert ids(backlog(store, "erin")) == []
        assert store.last_logouts() == {"alice": 20.0, "dave": 20.0, "erin": 1.5}
        # Nothing is left open: a second recover finds nothing to add.
        assert store.recover(30.0) == ([], 0)
        assert ids(backlog(store, "alice", after=3)) == [6, 7, 8, 9, 10]
        assert ids(backlog(store, "dave")) == [10]
        assert store.last_logouts()["alice"] == 20.0
    finally:
        store.close()


def test_recover_keeps_each_users_latest_open_login_open_to_hibernate(path):
    store = Store.open(path)
    old_login, _ = store.open_session("alice", 1.0)
    alice_login, _ = store.open_session("alice", 2.0)     # the older one never closed
    bob_login, _ = store.open_session("bob", 2.0, token_hash="h")
    store.mark_live("bob", 1).wait(5)
    append(store, broadcast(1, "alice", "for bob"))
    store.write_cursors({"bob": 0, "alice": 7})
    store.close()
    store = Store.open(path)
    try:
        kept, closed = store.recover(5.0, keep_open=True)
        assert sorted(kept) == [("alice", alice_login, 7), ("bob", bob_login, 0)]
        assert closed == 1
        assert ids(backlog(store, "bob")) == [1]        # recovered all the same
        assert store.token_hash("bob") == "h" and store.token_hash("alice") is None
        # Kept open: a later recover (another crash) finds them again.
        assert sorted(store.recover(6.0, keep_open=True)[0]) == sorted(kept)
        assert store.recover(7.0) == ([], 2)
    finally:
        store.close()


def test_recover_starts_at_live_from_or_past_the_cursor(store):
    store.open_session("bob", 1.0)
    store.mark_live("bob", 5).wait(5)
    store.open_session("carol", 1.0)
    store.mark_live("carol", 2).wait(5)
    append(store, *[broadcast(i, "alice", "b%d" % i) for i in range(1, 10)])
    store.write_cursors({"carol": 6})
    assert store.recover(2.0) == ([], 2)
    assert ids(backlog(store, "bob")) == [5, 6, 7, 8, 9]
    assert ids(backlog(store, "carol")) == [7, 8, 9]


def test_a_copy_taken_while_the_log_is_written_opens_whole(path, tmp_path):
    """What a crash (or a backup by cp) leaves: the file and its -wal copied
    while appends commit. The copy opens, hands out no id it holds, and
    every row committed before the copy began is in it."""
    store = Store.open(path)
    done(store.reserve_ids(100))
    first = 90                       # the log soon passes the reservation
    committed = []
    stop = []

    def writer():
        for mid in itertools.count(first):
            if stop:
                return
            pending = store.append(direct(mid, "alice", "bob", "m%d " % mid + "x" * 300))
            if mid % 3 == 0:         # the others share a transaction with it
                done(pending)
                committed.append(mid)
    worker = gevent.spawn(writer)
    try:
        while len(committed) < 30:
            gevent.sleep(0.001)
        last_committed = committed[-1]
        copy = str(tmp_path / "copy.sqlite3")
        shutil.copyfile(path, copy)
        shutil.copyfile(path + "-wal", copy + "-wal")
    finally:
        stop.append(True)
        worker.join(timeout=10)
        store.close()
    assert worker.successful()
    restored = Store.open(copy)
    try:
        rows = backlog(restored, "bob")
        found = ids(rows)
        # Every committed row, in commit order, and nothing torn.
        assert found == list(range(first, first + len(found)))
        assert found[-1] >= last_committed > 100
        assert [text for _, _, text, *_ in rows] == ["m%d " % mid + "x" * 300 for mid in found]
        assert restored.mailbox_size("bob") == (len(found), sum(len(row[2]) for row in rows))
        assert restored.first_free_id() == found[-1] + 1
        append(restored, direct(found[-1] + 1, "alice", "bob", "after"))
        assert texts(backlog(restored, "bob", after=found[-1])) == ["after"]
    finally:
        restored.close()


def test_first_free_id_is_past_the_reservation_and_the_log(path):
    store = Store.open(path)
    assert store.first_free_id() == 1
    done(store.reserve_ids(100))
    assert store.first_free_id() == 101
    append(store, direct(7, "alice", "bob", "within"))
    assert store.first_free_id() == 101
    append(store, broadcast(250, "alice", "past it"))
    assert store.first_free_id() == 251
    done(store.reserve_ids(300))
    store.close()
    store = Store.open(path)
    try:
        assert store.first_free_id() == 301
    finally:
        store.close()


def test_find_txn(store):
    append(store, direct(1, "alice", "bob", "hi", txn="t1"), broadcast(2, "carol", "all", txn="t2"))
    assert store.find_txn("alice", "t1") and store.find_txn("carol", "t2")
    assert not store.find_txn("bob", "t1")
    assert not store.find_txn("alice", "t2")


def test_history_is_the_last_direct_messages_between_two_users(store):
    append(store, direct(1, "alice", "bob", "a1"), direct(2, "bob", "alice", "b2"),
           direct(3, "alice", "carol", "not theirs"), broadcast(4, "alice", "to all"),
           direct(5, "carol", "bob", "not theirs either"), direct(6, "bob", "alice", "b6"),
           direct(7, "alice", "bob", "a7"))
    expected = [(1, "alice", "bob", "a1", 1.0), (2, "bob", "alice", "b2", 2.0),
                (6, "bob", "alice", "b6", 6.0), (7, "alice", "bob", "a7", 7.0)]
    assert store.history("alice", "bob", 10) == expected
    assert store.history("bob", "alice", 10) == expected
    assert store.history("alice", "bob", 2) == expected[2:]
    assert store.history("alice", "dave", 10) == []
    assert [row[3] for row in store.history("carol", "alice", 10)] == ["not theirs"]


def test_history_bounded_by_text_keeps_the_newest(store):
    append(store, *[direct(i, "alice", "bob", str(i) * 100) for i in range(1, 6)])
    assert [row[0] for row in store.history("bob", "alice", 10, size=250)] == [4, 5]
    assert [row[0] for row in store.history("bob", "alice", 10, size=50)] == [5]
    assert len(store.history("bob", "alice", 10, size=10_000)) == 5


def test_purge_deletes_only_old_acknowledged_rows_in_chunks(store):
    store.open_session("erin", 0.5)                    # online through it all
    store.mark_live("erin", 1).wait(5)
    append(store,
           direct(1, "alice", "bob", "acked", sent_at=1.0),
           direct(2, "alice", "carol", "never acked", sent_at=2.0),
           broadcast(3, "alice", "everyone acked", sent_at=3.0),
           broadcast(4, "alice", "in dave's inbox", sent_at=4.0),
           direct(5, "alice", "bob", "acked", sent_at=5.0),
           broadcast(6, "alice", "past erin's cursor", sent_at=6.0),
           direct(7, "alice", "bob", "acked but new", sent_at=70.0),
           direct(8, "alice", "bob", "old, after a new one", sent_at=8.0))
    store.end_session(None, "dave", 9.0, 0, [4])
    store.write_cursors({"bob": 8, "erin": 5})
    assert store.purge(50.0, 0, rows=3) == (3, 2, False)       # 1 and 3
    assert store.purge(50.0, 3, rows=3) == (6, 1, False)       # 5
    assert store.purge(50.0, 6, rows=3) == (6, 0, True)        # stops at 7, sent at 70
    assert ids(backlog(store, "carol")) == [2]
    assert ids(backlog(store, "dave")) == [4]
    assert [row[0] for row in store.history("alice", "bob", 10)] == [7, 8]
    # Unacknowledged rows stay whatever their age; the end of the log ends it.
    assert store.purge(1e12, 0) == (8, 2, True)                # 7 and 8
    assert store.history("alice", "bob", 10) == []
    assert ids(backlog(store, "carol")) == [2] and ids(backlog(store, "dave")) == [4]
    assert store.purge(1e12, 0) == (6, 0, True)                # 2, 4 and 6 stay
    # Once acknowledged (and erin's session over), the rest goes.
    store.write_cursors({"carol": 2, "dave": 4})
    store.end_session(None, "erin", 10.0, 5, [])
    assert store.purge(1e12, 0, rows=100) == (6, 3, True)      # 2, 4 and 6
    assert store.history("alice", "bob", 10) == [] and store.history("alice", "carol", 10) == []
    assert store.purge(1e12, 0) == (0, 0, True)


def test_purge_reports_a_full_chunk_as_not_done_even_at_the_end(store):
    append(store, *[direct(i, "alice", "bob", "x", sent_at=1.0) for i in range(1, 5)])
    store.write_cursors({"bob": 4})
    assert store.purge(2.0, 0, rows=2) == (2, 2, False)
    assert store.purge(2.0, 2, rows=2) == (4, 2, False)
    assert store.purge(2.0, 4, rows=2) == (4, 0, True)


# Databases from before the log -----------------------------------------------

OLD_SCHEMA = """
CREATE TABLE offline (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL
);
CREATE INDEX offline_by_recipient ON offline (recipient, id);
CREATE TABLE logins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    login_at REAL NOT NULL,
    logout_at REAL
);
"""
# Version 1 added the mailboxes (version 0 had none).
OLD_MAILBOXES = """
CREATE TABLE mailboxes (
    recipient TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TRIGGER mailbox_in AFTER INSERT ON offline BEGIN
    INSERT INTO mailboxes (recipient, count, bytes)
        VALUES (NEW.recipient, 1, LENGTH(CAST(NEW.body AS BLOB)))
        ON CONFLICT (recipient) DO UPDATE SET count = count + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER mailbox_out AFTER DELETE ON offline BEGIN
    UPDATE mailboxes SET count = count - 1, bytes = bytes - LENGTH(CAST(OLD.body AS BLOB))
        WHERE recipient = OLD.recipient;
    DELETE FROM mailboxes WHERE recipient = OLD.recipient AND count <= 0;
END;
PRAGMA user_version = 1;
"""


def old_database(path, version):
    """A database as greenchat wrote it before the log: bob has three
    offline messages (one delivered and deleted in between), dan one."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA + (OLD_MAILBOXES if version == 1 else ""))
    db.executemany("INSERT INTO offline (recipient, sender, body, sent_at) VALUES (?, ?, ?, ?)",
                   [("bob", "alice", "héllo", 1.0), ("dan", "bob", "yo", 2.0),
                    ("bob", "carol", "gone", 3.0), ("bob", "carol", "x", 4.0),
                    ("bob", "alice", "last", 5.0)])
    db.execute("DELETE FROM offline WHERE body = 'gone'")
    db.commit()
    db.close()


OLD_BOB = [("alice", "héllo", 1.0, None, 0), ("carol", "x", 4.0, None, 0),
           ("alice", "last", 5.0, None, 0)]


@pytest.mark.parametrize("version", [0, 1])
def test_a_database_from_before_the_log_keeps_its_offline_messages(path, version):
    old_database(path, version)
    for _ in range(2):               # migrated once, not again
        store = Store.open(path)
        try:
            rows = backlog(store, "bob")
            assert [row[1:] for row in rows] == OLD_BOB
            assert ids(rows) == sorted(ids(rows))
            assert texts(backlog(store, "dan")) == ["yo"]
            assert store.mailbox_size("bob") == (3, 11)
            assert store.mailbox_size("dan") == (1, 2)
            assert append(store, direct(store.first_free_id(), "z", "bob", "z"),
                          quota=(3, 1000)) == [False]
            assert store.first_free_id() > max(ids(rows))
        finally:
            store.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT name FROM sqlite_master WHERE name IN "
                          "('offline', 'mailbox_in', 'mailbox_out')").fetchall() == []
    finally:
        db.close()
    # Acknowledging a migrated message frees its quota like any other.
    store = Store.open(path)
    try:
        store.write_cursors({"bob": ids(backlog(store, "bob"))[0]})
        assert store.mailbox_size("bob") == (2, 5)
    finally:
        store.close()


class _FailsAtDrop(sqlite3.Connection):
    """A connection whose disk fails as the migration drops the old table."""

    def execute(self, sql, *args):
        if sql.startswith("DROP TABLE offline"):
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


def test_a_migration_cut_short_leaves_the_old_database_to_migrate_again(path, monkeypatch):
    """A migration that fails halfway (or a server killed there: the same
    once SQLite rolls back) must leave the database as it was, not the
    offline messages both in the log and still to migrate."""
    old_database(path, 1)
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda *args, **kw: connect(*args, factory=_FailsAtDrop, **kw))
    store = Store(path)
    with pytest.raises(StoreError, match="disk I/O error"):
        store._call(store._connect)          # what Store.open does
    store.close()
    monkeypatch.setattr(sqlite3, "connect", connect)
    store = Store.open(path)
    try:
        assert [row[1:] for row in backlog(store, "bob")] == OLD_BOB
        assert texts(backlog(store, "dan")) == ["yo"]
        assert store.mailbox_size("bob") == (3, 11)
    finally:
        store.close()


# Blocks, locks, logins, accounts ---------------------------------------------

def test_login_history(store):
    first, acked = store.open_session("bob", 1.0)
    assert acked == 0
    store.record_logout(first, 2.0)
    second = store.open_session("bob", 3.0)[0]
    assert second != first
    store.record_logout(second, 4.0)
    store.open_session("carol", 5.0)
    assert store.last_logouts() == {"bob": 4.0}
    # A login left open (a crash) is closed by recover.
    assert store.recover(9.0) == ([], 1)
    assert store.last_logouts() == {"bob": 4.0, "carol": 9.0}


def test_blocks(store):
    store.add_block("alice", "bob")
    store.add_block("alice", "bob")
    store.add_block("carol", "alice")
    assert sorted(store.all_blocks()) == [("alice", "bob"), ("carol", "alice")]
    store.remove_block("alice", "bob")
    store.remove_block("alice", "nobody")
    assert store.all_blocks() == [("carol", "alice")]


def test_locks_expire(store):
    store.set_lock("bob", 100.0)
    store.set_lock("carol", 200.0)
    assert store.active_locks(now=150.0) == {"carol": 200.0}
    assert store.active_locks(now=50.0) == {"carol": 200.0}    # bob's was dropped
    store.clear_lock("carol")
    assert store.active_locks(now=0.0) == {}


def test_everything_survives_close_and_reopen(path):
    store = Store.open(path)
    done(store.reserve_ids(50))
    append(store, direct(1, "alice", "bob", "first"), direct(2, "alice", "bob", "acked"),
           broadcast(3, "carol", "in bob's inbox"))
    store.write_cursors({"bob": 2})
    store.end_session(None, "bob", 3.0, 2, [3])
    store.add_block("alice", "bob")
    store.set_lock("dave", time.time() + 60)
    store.record_logout(store.open_session("carol", 1.0)[0], 2.0)
    store.sync_accounts({"carol": "c1"})
    store.close()
    store = Store.open(path)
    try:
        assert store.open_session("bob", 4.0)[1] == 2
        assert texts(backlog(store, "bob", after=2)) == ["in bob's inbox"]
        assert texts(backlog(store, "bob")) == ["first", "acked", "in bob's inbox"]
        assert store.mailbox_size("bob") == (0, 0)
        assert store.first_free_id() == 51
        assert store.all_blocks() == [("alice", "bob")]
        assert list(store.active_locks()) == ["dave"]
        assert store.last_logouts() == {"carol": 2.0}
        assert store.sync_accounts({"carol": "c2"}) == {"carol"}       # its id was kept
    finally:
        store.close()


def test_a_name_with_a_new_account_id_is_forgotten_whole(store):
    store.sync_accounts({"leia": "a1", "luke": "b2", "hand": None})
    append(store, direct(1, "luke", "leia", "for leia"), direct(2, "leia", "luke", "from leia"),
           broadcast(3, "luke", "to all"))
    store.end_session(store.open_session("leia", 1.0)[0], "leia", 2.0, 0, [3])
    store.write_cursors({"leia": 1})
    store.add_block("leia", "luke")
    store.add_block("luke", "leia")
    store.add_block("luke", "han")
    store.set_lock("leia", time.time() + 600)
    # A name without an id keeps whatever it had; the same id changes nothing.
    assert store.sync_accounts({"leia": "a1", "luke": "b2", "hand": None}) == set()
    assert ids(backlog(store, "leia", after=1)) == [3]
    assert store.sync_accounts({"leia": "c3", "luke": "b2"}) == {"leia"}
    # Its mail (direct and inbox), cursor, mailbox, blocks, logins, lock: gone.
    assert backlog(store, "leia") == []
    assert store.mailbox_size("leia") == (0, 0)
    assert store.open_session("leia", 3.0)[1] == 0
    assert store.history("leia", "luke", 10) == [(2, "leia", "luke", "from leia", 2.0)]
    assert texts(backlog(store, "luke")) == ["from leia"]      # luke's now
    assert store.all_blocks() == [("luke", "han")]
    assert "leia" not in store.last_logouts() and "leia" not in store.active_locks()
    # The new id is the one recorded; forgetting by name works too.
    assert store.sync_accounts({"leia": "c3"}) == set()
    assert store.sync_accounts({}, forget=["luke"]) == {"luke"}
    assert store.mailbox_size("luke") == (0, 0) and backlog(store, "luke") == []
    assert store.all_blocks() == []


# The machinery ---------------------------------------------------------------

def test_calls_run_in_the_order_they_are_made(store):
    seen = []

    def call(i):
        kind = i % 3
        if kind == 0:
            done(store.submit(lambda db: seen.append(i)))
        elif kind == 1:
            store._transaction(lambda db: seen.append(i))
        else:
            store._call(seen.append, i)               # a call outside any transaction
    gevent.joinall([gevent.spawn(call, i) for i in range(100)], timeout=30)
    assert seen == list(range(100))


def test_a_call_sees_what_was_submitted_before_it(store):
    # The server appends and reserves without waiting, then reads.
    pending = store.append(direct(1, "alice", "bob", "just sent"))
    assert not pending.ready()
    assert texts(backlog(store, "bob")) == ["just sent"]
    assert pending.ready() and pending.value() is True
    store.reserve_ids(40)
    assert store.first_free_id() == 41


def test_store_work_does_not_stall_the_hub(store):
    """Durable commits (an fsync each) run in the store's thread: a ticker
    greenlet keeps running throughout. In the hub, 200 fsyncs would stall it
    for their whole duration."""
    ticker = HubTicker()
    start = time.perf_counter()
    for i in range(1, 201):
        append(store, direct(i, "alice", "bob", "x" * 200))
    elapsed = time.perf_counter() - start
    longest = ticker.stop()
    assert len(backlog(store, "bob")) == 200
    assert len(ticker.gaps) > 20
    assert longest < 0.05, f"hub stalled {longest * 1000:.1f} ms during {elapsed:.2f} s"


def test_calls_queued_together_share_transactions_and_fail_alone(store, monkeypatch):
    """Appends submitted together commit together (one fsync for many), and
    one that fails is rolled back alone: the rest still land."""
    groups = []
    run_group = store._run_group
    monkeypatch.setattr(store, "_run_group", lambda group: groups.append(len(group)) or
                        run_group(group))
    # Message 50 reuses message 10's id: the log refuses it.
    pendings = [store.append(direct(10 if i == 50 else i, "alice", "bob", str(i)))
                for i in range(1, 101)]
    for pending in pendings:
        assert pending.wait(30)
    sizes = list(groups)
    failed = []
    for i, pending in enumerate(pendings, 1):
        try:
            assert pending.value() is True
        except StoreError:
            failed.append(i)
    assert failed == [50]
    assert texts(backlog(store, "bob")) == [str(i) for i in range(1, 101) if i != 50]
    assert store.mailbox_size("bob")[0] == 99
    # 99 successful calls plus the failed one, in far fewer transactions.
    assert sum(sizes) == 100
    assert len(sizes) < 10, sizes


HOSTILE = ["lone \ud800 surrogate", "\udfff", "nul \x00 inside", "' OR 1=1; DROP TABLE log; --",
           "é😀\u202e\x1b[2J", "x" * 100_000, ""]
_ids = itertools.count(1000)


def store_calls(text):
    """Every store call that takes text, with `text` in each text argument."""
    def append(row, quota=None):
        return lambda s: done(s.append(row, quota))
    return [
        ("append sender", append(direct(next(_ids), text, "bob", "hi"))),
        ("append recipient", append(direct(next(_ids), "alice", text, "hi"))),
        ("append text", append(direct(next(_ids), "alice", "bob", text))),
        ("append txn", append(direct(next(_ids), "alice", "bob", "hi", txn=text))),
        ("append skipped", append(broadcast(next(_ids), "alice", "hi", skipped=text))),
        ("append with quota", append(direct(next(_ids), text, text, text, txn=text),
                                     (10, 1 << 30))),
        ("mailbox_size", lambda s: s.mailbox_size(text)),
        ("backlog_page", lambda s: s.backlog_page(text, 0, END)),
        ("mark_live", lambda s: s.mark_live(text, 5).value()),
        ("write_cursors", lambda s: s.write_cursors({text: 1})),
        ("end_session", lambda s: s.end_session(None, text, 1.0, 1, [2])),
        ("find_txn", lambda s: s.find_txn(text, text)),
        ("history", lambda s: s.history(text, text + "2", 10)),
        ("add_block", lambda s: s.add_block(text, text)),
        ("remove_block", lambda s: s.remove_block(text, text)),
        ("open_session", lambda s: s.open_session(text, 1.0)),
        ("sync_accounts", lambda s: s.sync_accounts({text: text}, forget=[text])),
        ("set_lock", lambda s: s.set_lock(text, 1.0)),
        ("clear_lock", lambda s: s.clear_lock(text)),
    ]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_every_store_call_takes_hostile_text_or_raises_store_error(store, text):
    # Only text no UTF-8 can hold is refused, and always as StoreError.
    unencodable = any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    for name, call in store_calls(text):
        try:
            call(store)
        except StoreError:
            assert unencodable, f"{name} refused text UTF-8 can hold"
        else:
            assert not unencodable, f"{name} took text no UTF-8 can hold"
    # The store is whole and working after every one of them.
    append(store, direct(1, "alice", "carol", "still fine"))
    assert texts(backlog(store, "carol")) == ["still fine"]
    if not unencodable:
        # What it takes comes back as it went in.
        mid = next(_ids)
        append(store, direct(mid, text, text + "2", text, txn=text))
        assert backlog(store, text + "2") == [(mid, text, text, float(mid), text, 0)]
        assert store.find_txn(text, text)
        assert store.history(text + "2", text, 1) == [(mid, text, text + "2", text, float(mid))]


def test_a_call_its_caller_gave_up_on_is_never_run(store, monkeypatch):
    # Told "the store failed", a caller may try again: the first try must not
    # land as well (found in review).
    from greenchat.server import store as store_module
    monkeypatch.setattr(store_module, "CALL_TIMEOUT", 0.3)

    def slow(db):
        time.sleep(0.8)           # holds the store thread
    blocker = gevent.spawn(store._transaction, slow)
    gevent.sleep(0.05)
    with pytest.raises(StoreError):
        store.write_cursors({"bob": 5})
    with pytest.raises(StoreError):
        blocker.get()             # it timed out too, but it ran: it was under way
    gevent.sleep(1.0)             # until the thread is free again
    store.write_cursors({"bob": 3})
    # Had the given-up call run, bob's cursor would be 5 (it never moves back).
    assert store.open_session("bob", 1.0)[1] == 3


def test_a_database_file_deleted_under_the_store_is_refused(path):
    store = Store.open(path)
    try:
        append(store, direct(1, "alice", "bob", "before"))
        os.unlink(path)
        with pytest.raises(StoreError, match="deleted or replaced"):
            store.write_cursors({"bob": 1})
        with pytest.raises(StoreError):
            done(store.append(direct(2, "alice", "bob", "after")))
    finally:
        store.close()
