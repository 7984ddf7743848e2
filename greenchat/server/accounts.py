"""Who may log in: the accounts, their passwords, failures and locks.

Strategy
- Accounts holds the accounts file as last loaded, and reloads it soon after
  it changes (a stat a second; SIGHUP at once), parsing in a thread. A file
  that does not load, or holds no account, changes nothing but the log. A
  deleted account (or one deleted and added again: its account id changed)
  is handed to the server's `on_gone`, which logs it out, and everything
  kept under its name is forgotten, in memory and in the store.
- Three wrong passwords in a row lock an account for BLOCK_DURATION: a
  `spawn_later` timer ends the lock, and the lock's end is stored too, so a
  restarted server keeps it.
- A hashed password costs tens of milliseconds of scrypt to check, so it is
  checked in a small thread pool beside the hub (hashlib.scrypt releases the
  GIL), never in the hub. A plain-text one is compared in the hub at once.
- One check at a time per account (PasswordChecks.turn): the other attempts
  at that account wait in arrival order. The lock is looked at inside the
  turn, so once wrong passwords have locked it, the attempts still waiting
  are answered from the lock without hashing: any number of parallel
  guesses at one account cost at most `failed_logins` hashes.
- The hashing queue is bounded: at most `queue` checks wait for or use a
  thread, at most `per_network` of them from one network. A check past
  either bound is refused at once (Overloaded), so a crowd of connections
  from one place cannot make everyone else's login wait behind them.
"""

import logging
import os

import gevent
from gevent.lock import Semaphore
from gevent.threadpool import ThreadPool

from greenchat import texts
from greenchat.credentials import Credentials
from greenchat.errors import CredentialsError, GreenchatError, Overloaded
from greenchat.frames import ASK_PASSWORD, FAILED
from greenchat.server.turns import Turns

log = logging.getLogger("greenchat.server")

# One thread a core: scrypt is CPU work.
HASHING_THREADS = 2
# Checks in the hashing queue at most, and from one network at most: at
# two threads, a full queue is a few hundred milliseconds of waiting.
HASH_QUEUE = 16
HASH_PER_NETWORK = 4
# How often the accounts file is looked at for changes.
CREDENTIALS_POLL = 1.0


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


class Accounts:
    def __init__(self, config, credentials, store, clock, on_gone):
        self.config = config
        self.credentials = credentials
        self.store = store
        self.clock = clock
        self.on_gone = on_gone    # on_gone(name): a deleted account's sessions end
        self.passwords = PasswordChecks()
        self.failures = {}        # user -> consecutive wrong passwords
        self._generations = {}    # user -> how often their account was deleted
        self.locks = {}           # user -> (until, timer greenlet)
        self._reloading = Semaphore()
        self._seen = None         # the accounts file's _signature when loaded
        self._watcher = None

    def __contains__(self, name):
        return name in self.credentials

    @property
    def usernames(self):
        return self.credentials.usernames

    def generation(self, name):
        """Changes when `name`'s account is deleted (or deleted and added
        again): a login compares it before and after it waits."""
        return self._generations.get(name, 0)

    def start(self):
        """Take up what the store kept: account ids (a name whose id changed
        while the server was down is a new account) and locks."""
        self._seen = _signature(self.config.credentials)
        for name in self.store.sync_accounts(self._ids()):
            log.info("%s is a new account: forgot the old one's messages, blocks and history",
                     name)
        now = self.clock()
        for user, until in self.store.active_locks(now).items():
            self._start_lock_timer(user, until, until - now)
        self._watcher = gevent.spawn(self._watch)

    def stop(self):
        if self._watcher is not None:
            self._watcher.kill()
        for _, timer in self.locks.values():
            timer.kill()
        self.passwords.close()

    # Passwords --------------------------------------------------------------

    def check_password(self, name, password, network):
        """None if the password is right; else (login status, text, seconds
        until the account's lock ends or None) to answer."""
        with self.passwords.turn(name):
            if name in self.locks:
                log.info("login refused: %s is locked", name)
                return FAILED, texts.ACCOUNT_BLOCKED, self._lock_left(name)
            if self.passwords.verify(self.credentials, name, password, network):
                self.failures.pop(name, None)
                return None
            failures = self.failures.get(name, 0) + 1
            if failures >= self.config.failed_logins:
                self.failures.pop(name, None)
                self._lock(name)
                return FAILED, texts.ACCOUNT_NOW_BLOCKED, self._lock_left(name)
            self.failures[name] = failures
            log.info("wrong password for %s (%d)", name, failures)
            return ASK_PASSWORD, texts.INVALID_PASSWORD, None

    def _lock_left(self, name):
        """Seconds until `name`'s lock ends."""
        return max(0.0, round(self.locks[name][0] - self.clock(), 3))

    def _lock(self, name):
        duration = self.config.block_duration
        until = self.clock() + duration
        self._start_lock_timer(name, until, duration)
        log.warning("account locked: %s for %gs", name, duration)
        try:
            self.store.set_lock(name, until)
        except GreenchatError as exc:
            # Locked all the same, until the timer ends it or the server stops.
            log.error("could not store the lock of %s: %s", name, exc)

    def _start_lock_timer(self, name, until, delay):
        timer = gevent.spawn_later(max(delay, 0), self._unlock, name, until)
        self.locks[name] = (until, timer)

    def _unlock(self, name, until):
        if self.locks.get(name, (None,))[0] == until:
            del self.locks[name]
            self.failures.pop(name, None)
            log.info("account unlocked: %s", name)
            try:
                self.store.clear_lock(name)
            except GreenchatError as exc:
                log.error("clearing lock of %s: %s", name, exc)

    # The accounts file ------------------------------------------------------

    def _ids(self):
        credentials = self.credentials
        return {name: credentials.account_id(name) for name in credentials.usernames}

    def _watch(self):
        while True:
            gevent.sleep(CREDENTIALS_POLL)
            if _signature(self.config.credentials) != self._seen:
                self.reload()

    def reload(self):
        """Take the accounts file as it is now: new accounts can log in, a
        changed password is the one checked, and a deleted (or deleted and
        re-added) account is logged out and forgotten."""
        with self._reloading:
            path = self.config.credentials
            self._seen = _signature(path)
            # Parsed in a thread: a big file must not hold the hub.
            new = gevent.get_hub().threadpool.apply(_load, (path,))
            if isinstance(new, CredentialsError):
                log.error("%s; keeping the %d account(s) loaded before", new,
                          len(self.credentials))
                return
            if not len(new):
                log.error("credentials file %s holds no account; keeping the %d loaded "
                          "before", path, len(self.credentials))
                return
            changes = self.credentials.changes(new)
            self.credentials = new
            gone = changes.removed | changes.replaced
            for name in gone:
                self._gone(name)
            try:
                forgotten = self.store.sync_accounts(self._ids(), forget=gone)
            except GreenchatError as exc:
                log.error("could not record the accounts' changes: %s", exc)
                return
            for name in forgotten - gone:
                self._gone(name)
            log.info("credentials reloaded: %d account(s); %d added, %d deleted, %d re-created, "
                     "%d new password(s)", len(new), len(changes.added), len(changes.removed),
                     len(changes.replaced), len(changes.password_changed))

    def _gone(self, name):
        self._generations[name] = self._generations.get(name, 0) + 1
        self.failures.pop(name, None)
        lock = self.locks.pop(name, None)
        if lock is not None:
            lock[1].kill(block=False)
        self.on_gone(name)


def _signature(path):
    """What changes when a file is rewritten (greenchat-admin renames a new
    one into place) or edited in place; None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _load(path):
    """Credentials.load, its error returned rather than raised (in a thread,
    where gevent would report a raised one as a crash)."""
    try:
        return Credentials.load(path)
    except CredentialsError as exc:
        return exc
