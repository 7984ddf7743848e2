"""Who blocks whom, in memory, indexed both ways. No I/O.

The store keeps blocks durable; the server loads them at start into Blocks
and writes each change through, so broadcast, presence and `whoelse` never
wait on SQLite. The reverse index answers "does anyone block this sender?"
without a scan: a broadcast's notice depends on it, online blockers or not.
"""

_NONE = frozenset()


class Blocks:
    def __init__(self, pairs=()):
        self._blocking = {}       # blocker -> users they block
        self._blocked_by = {}     # user -> users who block them
        for blocker, blocked in pairs:
            self.add(blocker, blocked)

    def blocking(self, blocker):
        """The users `blocker` blocks (a live set: read, never change it)."""
        return self._blocking.get(blocker, _NONE)

    def blockers_of(self, user):
        """The users who block `user` (a live set: read, never change it)."""
        return self._blocked_by.get(user, _NONE)

    def blocks(self, blocker, user):
        return user in self._blocking.get(blocker, _NONE)

    def add(self, blocker, blocked):
        self._blocking.setdefault(blocker, set()).add(blocked)
        self._blocked_by.setdefault(blocked, set()).add(blocker)

    def remove(self, blocker, blocked):
        _discard(self._blocking, blocker, blocked)
        _discard(self._blocked_by, blocked, blocker)

    def forget(self, name):
        """Every block `name` made and every block against `name`."""
        for blocked in self._blocking.pop(name, ()):
            _discard(self._blocked_by, blocked, name)
        for blocker in self._blocked_by.pop(name, ()):
            _discard(self._blocking, blocker, name)


def _discard(index, key, value):
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]
