"""Process-wide settings for a server process (bin/greenchat-server).

They change the interpreter and gevent for the whole process, so only the
server's entry point applies them; in-process servers in the tests run
without them.

- gevent records every greenlet's spawn tree and spawning stack by default:
  1 KB and more per connection that only a debugger reads.
- Garbage collection. A full collection visits every tracked object, and a
  server with thousands of users holds hundreds of thousands: each one
  stalls the hub for hundreds of milliseconds, and the logins that build
  such a heap run several, each freeing nothing. After every full
  collection the survivors are frozen (`gc.freeze`): later collections skip
  them, so each visits only what is newer (docs/design.md has the figures).
  A frozen object is still freed when its last reference goes; only a
  reference cycle among frozen objects would never be freed, and a test
  proves that every way a session ends leaves no cycle (tests/test_runtime.py).
- Open files. A connection holds a descriptor, and a server that runs out
  of them can accept nobody, a real user included (accept fails with EMFILE
  over and over). `raise_fd_limit` raises the soft limit to the hard one;
  unlike the settings above, ChatServer.start applies it, so in-process
  servers get it too (raising it again changes nothing). `connection_limits`
  then sets two bounds under it: the connections the accept loop may hold
  open at once, the ones waiting for their handler to start included (a
  flood is accepted faster than handlers start, so a check in the handler
  alone comes too late), and below that --max-connections, so that a
  connection over it is still accepted and told why it is refused.
"""

import gc

import gevent

try:
    import resource
except ImportError:                     # Windows: no such module, and no such limit
    resource = None

# Descriptors the server needs besides its connections': the listener, the
# event loop's, the store's (database, WAL, shared memory), stdio and logs,
# TLS files while they are read.
FD_RESERVE = 64
# Connections accepted over --max-connections at once, waiting for their refusal.
REFUSING = 100


def _freeze_survivors(phase, info):
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def tune_server_process():
    """Apply the settings above; calling it again changes nothing."""
    gevent.config.track_greenlet_tree = False
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def untune():
    """Take the collector setting back (for tests)."""
    if _freeze_survivors in gc.callbacks:
        gc.callbacks.remove(_freeze_survivors)
    gc.unfreeze()


def raise_fd_limit():
    """Raise the soft limit on open files to the hard one; return the soft
    limit now in force, None if there is none."""
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass                        # an unlimited hard limit the kernel refuses
    return None if soft == resource.RLIM_INFINITY else soft


def connection_limits(wanted, fd_limit):
    """(connections to serve, connections to hold open) at most, with
    `fd_limit` open files (None: no limit).

    Connections held open, served or being refused, fit in the limit beside
    FD_RESERVE; those served are `wanted`, or fewer to leave REFUSING of them
    for refusals. At least one of each; None (no bound) to hold without a limit.
    """
    if fd_limit is None:
        return wanted, None
    held = max(2, fd_limit - FD_RESERVE)
    return max(1, min(wanted, held - REFUSING)), held
