"""Presence notices (`USER logged in` / `logged out`), sent in batches.

Strategy
- Every login and logout is an event with a sequence number. Notices wait a
  little to go out together: one mailbox entry per recipient for the whole
  batch, not one per notice, so N logins cost N^2 bytes but not N^2
  wake-ups and allocations (docs/design.md has the measurements).
- The wait is BATCH (20 ms), or N/DELIVERIES seconds with N users online,
  so that flushes make at most DELIVERIES mailbox deliveries a second; and a
  batch goes out at once when it holds BATCH_MAX notices, which bounds the
  cost of one flush.
- A notice reaches only the users online when it happened (each session
  records the event of its login) and never a user its subject blocks.
- The server flushes the batch before it handles any command, so nothing a
  user does after a login or logout reaches anyone before its notice.
"""

import gevent

from greenchat import frames
from greenchat.codec import encode

BATCH = 0.02
DELIVERIES = 20_000
BATCH_MAX = 128


class Presence:
    def __init__(self, online, blocks):
        self.online = online      # user -> Session: the recipients
        self.blocks = blocks
        self.batch = []           # (user, seq, users hidden from, frame) waiting to go out
        self._seq = 0             # numbers presence events in order
        self._timer = None

    def announce(self, name, online):
        """Tell every other online user, soon, that `name` came or went;
        return the event's number (a session's online_since)."""
        self._seq += 1
        seq = self._seq
        self.batch.append((name, seq, self.blocks.blocking(name),
                           encode(frames.presence(name, online))))
        if len(self.batch) >= BATCH_MAX:
            self.flush()
        elif self._timer is None:
            self._timer = gevent.spawn_later(self.wait(), self.flush)
        return seq

    def wait(self):
        """How long a notice may wait for others to go out with."""
        return max(BATCH, len(self.online) / DELIVERIES)

    def flush(self):
        """Send the waiting notices now."""
        batch, self.batch = self.batch, []
        timer, self._timer = self._timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
        if not batch:
            return
        shared = b"".join(frame for _, _, _, frame in batch)
        # Recipients that must not get all of the batch: its own users, users
        # one of them blocks, and users who came online after one of its
        # events (they were not there to see it). Everyone else gets the
        # same bytes.
        special = set()
        for name, _, hidden, _ in batch:
            special.add(name)
            special.update(hidden)
        first = batch[0][1]
        for user, other in self.online.items():
            since = other.online_since
            if since < first and user not in special:
                other.notify(shared)
                continue
            mine = b"".join([frame for name, seq, hidden, frame in batch
                             if since < seq and name != user and user not in hidden])
            if mine:
                other.notify(mine)

    def stop(self):
        if self._timer is not None:
            self._timer.kill()
            self._timer = None
