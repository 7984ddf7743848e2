"""Password checks: where they run, one at a time per account, how many at once.

Strategy
- A hashed password costs tens of milliseconds of scrypt to check, so it is
  checked in a small thread pool beside the hub (hashlib.scrypt releases the
  GIL), never in the hub. A plain-text one is compared in the hub at once.
- One check at a time per account (`turn`): the other attempts at that
  account wait in arrival order. The caller looks at the account's lock
  inside its turn, so once wrong passwords have locked it, the attempts
  still waiting are answered from the lock without hashing: any number of
  parallel guesses at one account cost at most `failed_logins` hashes.
- The hashing queue is bounded: at most `queue` checks wait for or use a
  thread, at most `per_network` of them from one network. A check past
  either bound is refused at once (Overloaded), so a crowd of connections
  from one place cannot make everyone else's login wait behind them.

No sockets here; the server decides what a refusal means for a connection.
"""

from gevent.threadpool import ThreadPool

from greenchat.errors import Overloaded
from greenchat.server.turns import Turns

# One thread a core: scrypt is CPU work.
HASHING_THREADS = 2
# Checks in the hashing queue at most, and from one network at most: at
# two threads, a full queue is a few hundred milliseconds of waiting.
HASH_QUEUE = 16
HASH_PER_NETWORK = 4


class PasswordChecks:
    def __init__(self, threads=HASHING_THREADS, queue=HASH_QUEUE, per_network=HASH_PER_NETWORK):
        self.queue = queue
        self.per_network = per_network
        self._pool = ThreadPool(threads)
        self._turns = Turns()
        self._queued = 0          # checks waiting for or using a thread
        self._by_network = {}     # network -> its share of _queued

    def turn(self, name):
        """Hold `name`'s turn: one check of that account at a time, in arrival order."""
        return self._turns.turn(name)

    def verify(self, credentials, name, password, network):
        """True if `password` is `name`'s. Raises Overloaded if a hash is
        needed and the queue, or `network`'s share of it, is full."""
        if not credentials.is_hashed(name):
            return credentials.check(name, password)
        share = self._by_network.get(network, 0)
        if self._queued >= self.queue or share >= self.per_network:
            raise Overloaded(f"hashing queue full ({self._queued}, {share} from {network})")
        self._queued += 1
        self._by_network[network] = share + 1
        try:
            return self._pool.apply(credentials.check, (name, password))
        finally:
            self._queued -= 1
            left = self._by_network[network] - 1
            if left:
                self._by_network[network] = left
            else:
                del self._by_network[network]

    def close(self):
        self._pool.kill()
