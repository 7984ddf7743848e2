"""The server process's runtime settings (greenchat/runtime.py).

The collector policy freezes whatever survives a full collection, so a
reference cycle among frozen objects would never be freed: the second test
proves that no way of ending a session leaves one.
"""

import collections
import gc

import gevent
import pytest
from gevent import socket

from greenchat.codec import encode
from greenchat.server import runtime

from support import Agent, exchange_until_closed

USERS = ["alice", "bob", "carol", "dave"]


@pytest.fixture
def tuned():
    runtime.tune_server_process()
    yield
    runtime.untune()


def test_a_full_collection_freezes_its_survivors(tuned):
    gc.unfreeze()
    survivors = [[i] for i in range(1000)]
    assert gc.get_freeze_count() == 0
    gc.collect(1)
    assert gc.get_freeze_count() == 0, "only a full collection freezes"
    gc.collect()
    assert gc.get_freeze_count() >= len(survivors)
    runtime.tune_server_process()
    assert gc.callbacks.count(runtime._freeze_survivors) == 1


def _greenchat_garbage():
    """Cyclic garbage now in the heap that involves greenchat's objects."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = [o for o in gc.garbage
                 if type(o).__module__.startswith("greenchat")
                 or (type(o).__name__ == "frame" and "greenchat" in o.f_code.co_filename)]
        return collections.Counter(type(o).__qualname__ for o in found), len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def test_no_way_of_ending_a_session_leaves_a_reference_cycle(make_server):
    server = make_server(USERS, timeout=0.5, login_timeout=0.5, failed_logins=3,
                         max_frame=1024)
    address = server.address

    def sessions():
        alice, bob = Agent("alice", address), Agent("bob", address)
        assert alice.login()["status"] == "ok" and bob.login()["status"] == "ok"
        alice.command("message bob hello")
        alice.command("message carol stored while carol is away")
        alice.command("broadcast everyone")
        bob.command("block alice")
        bob.command("unblock alice")
        alice.command("whoelse")
        alice.command("no such command")
        alice.logout()                                     # logout
        bob.sock.close()                                   # connection dropped
        carol = Agent("carol", address)
        assert carol.login()["status"] == "ok"             # offline message loaded
        gevent.sleep(0.8)                                  # idle logout
        dave = Agent("dave", address)
        for _ in range(3):                                 # account locked
            assert dave.login(password="wrong")["status"] != "ok"
            dave.sock.close()
        exchange_until_closed(address, [b"\x00\xffjunk\n"])       # binary junk
        exchange_until_closed(address, [b"{" + b"x" * 2000])      # frame too large
        exchange_until_closed(address, [])                        # login deadline
        half = socket.create_connection(address)                  # gone mid-frame
        half.sendall(encode({"type": "hello", "version": 1})[:5])
        half.close()
        gevent.sleep(0.3)

    sessions()        # once first, so lazily made module state is not counted
    gc.collect()
    gc.disable()
    try:
        sessions()
        gevent.sleep(0.2)
        leaked, everything = _greenchat_garbage()
    finally:
        gc.enable()
    assert not leaked, f"reference cycles through {dict(leaked)} ({everything} objects)"
    assert len(server.sessions) == 0
