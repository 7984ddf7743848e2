"""Unit tests of accounts.py: turns per account and the hashing queue's bounds."""

import gevent
import pytest

from greenchat.credentials import Credentials
from greenchat.errors import Overloaded
from greenchat.server.accounts import PasswordChecks


class SlowHashed(Credentials):
    """Every account hashed; a check takes `delay` seconds in its thread."""

    def __init__(self, delay):
        super().__init__({"a": "x", "b": "x"})
        self.delay = delay

    def is_hashed(self, name):
        return True

    def check(self, name, password):
        import time
        time.sleep(self.delay)
        return password == "x"


def test_one_turn_per_account_in_arrival_order():
    checks = PasswordChecks()
    order = []

    def attempt(name, tag):
        with checks.turn(name):
            order.append(("in", tag))
            gevent.sleep(0.01)
            order.append(("out", tag))

    greenlets = [gevent.spawn(attempt, "a", i) for i in range(5)]
    other = gevent.spawn(attempt, "b", "b")
    gevent.joinall(greenlets + [other], timeout=5, raise_error=True)
    mine = [entry for entry in order if entry[1] != "b"]
    assert mine == [(kind, i) for i in range(5) for kind in ("in", "out")]
    assert order.index(("in", "b")) < order.index(("out", 0))     # another account: no wait
    checks.close()


def test_the_queue_and_each_network_share_are_bounded():
    checks = PasswordChecks(threads=1, queue=3, per_network=2)
    creds = SlowHashed(0.2)
    running = [gevent.spawn(checks.verify, creds, "a", "x", "net1") for _ in range(2)]
    gevent.sleep(0.01)
    with pytest.raises(Overloaded):
        checks.verify(creds, "a", "x", "net1")          # net1 has its 2
    third = gevent.spawn(checks.verify, creds, "b", "y", "net2")
    gevent.sleep(0.01)
    with pytest.raises(Overloaded):
        checks.verify(creds, "b", "x", "net3")          # the queue has its 3
    assert [g.get(timeout=5) for g in running] == [True, True]
    assert third.get(timeout=5) is False
    assert checks.verify(creds, "a", "x", "net1")       # room again
    checks.close()
