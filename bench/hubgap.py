"""How long the gevent hub goes without running a greenlet: a ticker
greenlet sleeps 1 ms at a time and records the gaps, so the longest gap is
the longest the hub was kept from it. bench/editor's scripts and the tests
(tests/support.py) measure with it."""

import gc
import time

import gevent


class HubTicker:
    """Ticks from creation until stop(), which returns the longest gap."""

    def __init__(self, collect=True):
        if collect:
            # Earlier garbage is collected now, not in the middle of the
            # measurement, where it would be charged to the code under test.
            gc.collect()
        self.gaps = []
        self._running = True
        self._greenlet = gevent.spawn(self._tick)

    def _tick(self):
        last = time.perf_counter()
        while self._running:
            gevent.sleep(0.001)
            now = time.perf_counter()
            self.gaps.append(now - last)
            last = now

    def stop(self):
        """Stop ticking; return the longest gap in seconds."""
        self._running = False
        self._greenlet.join(5)
        return max(self.gaps)
