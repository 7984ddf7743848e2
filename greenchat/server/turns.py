"""Turns: one holder at a time per key, the others waiting in arrival order.

The server takes turns per account for password checks (accounts.py) and
per recipient for writing stored mail, so that what one greenlet does for a
name is never interleaved with, or overtaken by, what another does for it.
A key costs memory only while someone holds or waits for its turn.
"""

from contextlib import contextmanager

from gevent.lock import Semaphore


class Turns:
    def __init__(self):
        self._turns = {}          # key -> [Semaphore, greenlets holding or waiting]

    @contextmanager
    def turn(self, key):
        """Hold `key`'s turn for the `with` block."""
        entry = self._turns.get(key)
        if entry is None:
            entry = self._turns[key] = [Semaphore(), 0]
        entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._turns[key]
