"""Rate limiting: a token bucket per connection. No I/O; the clock is injected.

A connection may send `burst` commands at once and `rate` a second after
that; a client that empties its bucket is flooding. rate=0 turns the limit
off (benchmarks drive the server far faster than any person types).
"""

from time import monotonic


class TokenBucket:
    __slots__ = ("rate", "burst", "tokens", "stamp", "clock")

    def __init__(self, rate, burst, clock=monotonic):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()

    def take(self):
        """Spend one token; False if there is none (the caller is flooding)."""
        if not self.rate:
            return True
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self):
        """Return the token just spent: the frame turned out to be one that
        is not counted (an acknowledgement of something new)."""
        if self.rate:
            self.tokens = min(self.burst, self.tokens + 1)
