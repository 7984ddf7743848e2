"""Issue 11, item 16: a store that fails (a full disk, a deleted database)
is told to the user it concerns, never after a success was announced, and
loses nothing that was accepted.

A full disk is a server process whose file-size limit (RLIMIT_FSIZE) the
test sets low at start and raises again later (prlimit on its pid)."""

import os
import resource
import time

import gevent

from greenchat import texts

from support import Agent, ServerProcess, silent_login

STORE_FAILED_MESSAGE = "Error. The server could not store your message; try again"
LOGIN_UNAVAILABLE = "Error. The server cannot log you in right now; try again later"


def limit_file_size(size):
    def preexec():
        # The soft limit only: raising it again later needs no privilege.
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))
    return preexec


def test_a_full_disk_refuses_what_it_cannot_keep_and_loses_nothing(tmp_path):
    (tmp_path / "credentials.txt").write_text("alice pw\nbob pw\ncarol pw\ndave pw\n")
    # Enough for the database to start, and for some of the log.
    # No resume window: carol's dropped connection ends her session at once.
    server = ServerProcess(str(tmp_path), "--mailbox-limit-bytes", str(1 << 26),
                           "--resume-window", "0", preexec_fn=limit_file_size(1 << 20))
    try:
        alice, bob = Agent("alice", server.address), Agent("bob", server.address)
        assert alice.login()["status"] == "ok" and bob.login()["status"] == "ok"
        carol = silent_login(server.address, "carol")
        bob.wait_for(lambda f: f.get("user") == "carol" and f.get("online"))
        # Mail for carol (online, not reading) and dave (offline), until the
        # disk is full: every message is logged before its ok.
        accepted, refused = {"carol": 0, "dave": 0}, None
        for i in range(2000):
            for name in ("carol", "dave"):
                reply = alice.command(f"message {name} {i} " + name[0] * 2000)[1]
                if not reply["ok"]:
                    refused = reply["lines"]
                    break
                accepted[name] += 1
            if refused:
                break
        assert refused == [STORE_FAILED_MESSAGE], refused
        assert accepted["carol"] > 10 and accepted["dave"] > 10
        # carol goes: the end of her session may not fit; it is kept and retried.
        carol.close()
        alice.wait_for(lambda f: f == {"type": "presence", "user": "carol", "online": False},
                       timeout=15)
        # A login now is refused before any welcome, and says why; or, if
        # its few bytes still fit, it works (never a welcome, then a drop).
        dave = Agent("dave", server.address)
        frame = dave.login()
        if frame["status"] == "ok":
            assert dave.command("whoelse")[1]["ok"]
            dave.logout()
        else:
            assert (frame["status"], frame["text"]) == ("failed", LOGIN_UNAVAILABLE)
        # Room on the disk again.
        resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE,
                         (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        deadline = time.monotonic() + 20
        while True:
            carol = Agent("carol", server.address)
            frame = carol.login()
            if frame["status"] == "ok" or time.monotonic() > deadline:
                break
            gevent.sleep(0.5)
        assert frame["status"] == "ok", frame
        # carol acknowledged nothing: every message accepted for her comes
        # now, in order, and none that was refused.
        carol.command("whoelse")
        assert [int(t.split()[0]) for t in carol.texts()] == list(range(accepted["carol"]))
        # dave's over his two logins, as a client that drops the ids it
        # has shown sees them: each once, in order.
        before = [(f["id"], int(f["text"].split()[0])) for _, f in dave.frames("message")]
        dave = Agent("dave", server.address)
        assert dave.login()["status"] == "ok"
        dave.command("whoelse")
        last = max((mid for mid, _ in before), default=0)
        after = [(f["id"], int(f["text"].split()[0])) for _, f in dave.frames("message")]
        assert [n for _, n in before] + [n for mid, n in after if mid > last] == \
            list(range(accepted["dave"]))
    finally:
        server.kill()


def test_a_deleted_database_is_noticed_and_written_no_more(make_server, tmp_path, caplog):
    server = make_server(["alice", "bob"])
    alice = Agent("alice", server.address)
    assert alice.login()["status"] == "ok"
    assert alice.command("message bob before")[1]["ok"]
    for suffix in ("", "-wal", "-shm"):
        path = str(tmp_path / "data" / "greenchat.sqlite3") + suffix
        if os.path.exists(path):
            os.unlink(path)
    reply = alice.command("message bob after")[1]
    assert reply["ok"] is False and reply["lines"] == [STORE_FAILED_MESSAGE]
    assert any(r.levelname == "ERROR" and "deleted" in r.getMessage() for r in caplog.records)
    # A login the store cannot record is refused before the welcome.
    frame = Agent("bob", server.address).login()
    assert (frame["status"], frame["text"]) == ("failed", LOGIN_UNAVAILABLE)
    assert alice.command("block bob")[1]["lines"] == [texts.STORE_FAILED]
    assert not os.path.exists(tmp_path / "data" / "greenchat.sqlite3")
