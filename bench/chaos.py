"""Chaos for longer: `python -m bench.chaos [--users 50] [--seconds 120] [--seed N]`.

The scenario of tests/test_chaos.py (bench/chaosclient.py): USERS protocol
clients in this process send direct messages and broadcasts, each with a
txn, while bin/greenchat-server, a process on 127.0.0.1, is killed (kill -9)
and restarted every 2-4 s and random clients' connections are reset between
kills; the clients reconnect and resend by themselves. Then every client
drains what waits for it and the checker proves from what each one showed
that nothing accepted was lost, nothing was shown twice or out of order, and
no retry ran twice.

Prints one JSON line: kills survived, connection resets, commands sent,
accepted and unanswered, frames shown and checked, deliveries required and
found, repeats the clients dropped (by id, by txn), the longest wait after a
restart for a message pending across it, and the problems found (count and
the first few). Exits 1 if there were any.
"""

import argparse
import json
import random
import shutil
import sys
import tempfile

from bench.chaosclient import run_chaos


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=50, help="clients (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=120.0,
                   help="seconds of chaos, before the drain (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None,
                   help="seeds every random choice (default: a random one, printed)")
    p.add_argument("--steady", type=int, default=5,
                   help="clients whose connections are never reset (default: %(default)s)")
    p.add_argument("--keep", action="store_true",
                   help="keep the directory (accounts, data, server.log) and print its path")
    a = p.parse_args(argv)
    if a.users < 2 or not 0 <= a.steady <= a.users:
        p.error("--users must be at least 2, and --steady at most --users")
    seed = random.randrange(1 << 32) if a.seed is None else a.seed
    directory = tempfile.mkdtemp(prefix="greenchat-chaos-")
    try:
        summary = run_chaos(directory, users=a.users, seconds=a.seconds, seed=seed,
                            steady=a.steady,
                            progress=lambda text: print(f"== {text}", file=sys.stderr,
                                                        flush=True))
    finally:
        if a.keep:
            print(f"kept {directory}", file=sys.stderr)
        else:
            shutil.rmtree(directory, ignore_errors=True)
    del summary["problems"]
    print(json.dumps(summary))
    return 1 if summary["problem_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
