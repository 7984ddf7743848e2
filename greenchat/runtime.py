"""Process-wide settings for a server process (bin/greenchat-server).

They change the interpreter and gevent for the whole process, so only the
server's entry point applies them; in-process servers in the tests run
without them.

- gevent records every greenlet's spawn tree and spawning stack by default:
  1 KB and more per connection that only a debugger reads.
- Garbage collection. A full collection visits every tracked object, and a
  server with thousands of users holds hundreds of thousands: measured at
  10,000 users, one took 300-600 ms, all of it a stall of the hub, and during
  the logins that build such a heap there were ten of them (each freeing
  nothing). After every full collection the survivors are frozen
  (`gc.freeze`): later collections skip them, so each visits only what is
  newer. Measured at 5,000 logins, the longest full collection fell from
  287 ms to 53 ms. A frozen object is still freed when its last reference
  goes; only a reference cycle among frozen objects would never be freed,
  and a test proves that every way a session ends leaves no cycle
  (tests/test_runtime.py).
"""

import gc

import gevent


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
