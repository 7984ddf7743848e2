"""Fuzz the live server: `python -m bench.fuzz [--frames 100000]`.

Starts bin/greenchat-server as a process on 127.0.0.1 and throws frames at
it from many connections: valid commands, mutated frames (flipped, dropped,
duplicated bytes), random bytes, invalid UTF-8, NUL bytes, huge lines, JSON
of the wrong shape, frames cut short by a disconnect. A canary client stays
logged in and runs a command every CANARY_EVERY seconds; an answer slower
than STALL seconds is a stall.

Prints one JSON line: frames sent, connections, crashes (server tracebacks
or internal errors in its log, or the process gone), stalls, and the
canary's slowest answer. Bounded in count and time; loopback only.
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import gevent
from gevent import socket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANARY_EVERY = 0.2
STALL = 1.0
USERS = [f"f{i}" for i in range(50)]


def frame(obj):
    return (json.dumps(obj) + "\n").encode()


def login_frames(user, password="pw"):
    return (frame({"type": "hello", "version": 1}) + frame({"type": "username", "username": user})
            + frame({"type": "password", "password": password}))


def valid_command(rng):
    user = rng.choice(USERS + ["nobody", ""])
    return frame({"type": "command", "id": rng.randrange(1 << 31), "line": rng.choice([
        f"message {user} {rng.random()}", f"broadcast hi {rng.random()}", "whoelse",
        f"whoelsesince {rng.randrange(-5, 10**6)}", f"block {user}", f"unblock {user}",
        f"startprivate {user}", "dance", "", "message", "\x00\x01", "é" * 50])})


def mutate(data, rng):
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if not data:
            break
        i = rng.randrange(len(data))
        choice = rng.random()
        if choice < 0.4:
            data[i] = rng.randrange(256)
        elif choice < 0.7:
            del data[i]
        else:
            data[i:i] = data[i:i + rng.randrange(1, 8)]
    return bytes(data)


def fuzz_frame(rng):
    kind = rng.random()
    if kind < 0.35:
        return valid_command(rng)
    if kind < 0.60:
        return mutate(valid_command(rng), rng)
    if kind < 0.70:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))) + b"\n"
    if kind < 0.75:
        return b'{"type": "command", "id": 1, "line": "message f1 \xff\xfe bad utf8"}\n'
    if kind < 0.80:
        return b"\x00" * rng.randrange(1, 100) + b"\n"
    if kind < 0.83:
        return b"x" * rng.randrange(60_000, 200_000) + b"\n"
    if kind < 0.90:
        return frame(rng.choice([[], 1, None, "str", {"type": 5}, {"no": "type"},
                                 {"type": "password", "password": 7},
                                 {"type": "command", "line": ["list"]},
                                 {"type": "hello", "version": "1"}])).replace(b"\n", b"") + b"\n"
    return json.dumps({"type": "command", "line": "[" * rng.randrange(1, 5000)}).encode() + b"\n"


def attacker(address, rng, budget, stats):
    """One connection: log in (or not), send frames until it is cut off."""
    try:
        sock = socket.create_connection(address, timeout=5)
    except OSError:
        return
    stats["connections"] += 1
    try:
        if rng.random() < 0.7:
            sock.sendall(login_frames(rng.choice(USERS), rng.choice(["pw", "pw", "wrong"])))
        for _ in range(budget):
            data = fuzz_frame(rng)
            if rng.random() < 0.02:         # cut a frame short and vanish
                sock.sendall(data[:rng.randrange(len(data))])
                stats["frames"] += 1
                return
            sock.sendall(data)
            stats["frames"] += 1
            if rng.random() < 0.05:
                gevent.sleep(0)
    except OSError:
        pass                                 # the server closed on us: expected
    finally:
        sock.close()


def canary(address, stats, stop):
    sock = socket.create_connection(address, timeout=5)
    sock.settimeout(None)               # waits are bounded by the Timeout below
    sock.sendall(login_frames("canary"))
    buffer = b""
    n = 0
    while not stop[0]:
        n += 1
        start = time.monotonic()
        sock.sendall(frame({"type": "command", "id": n, "line": "whoelse"}))
        needle = b'"id":%d,' % n
        with gevent.Timeout(30, False):
            while needle not in buffer:
                data = sock.recv(65536)
                if not data:
                    stats["canary_lost"] = True
                    return
                buffer = buffer[-65536:] + data
        took = time.monotonic() - start
        stats["canary_max_s"] = max(stats["canary_max_s"], took)
        if took > STALL:
            stats["stalls"] += 1
        gevent.sleep(CANARY_EVERY)


def run(frames=100_000, connections=2000, seed=1, timeout=600):
    workdir = tempfile.mkdtemp(prefix="greenchat-fuzz-")
    creds = os.path.join(workdir, "credentials.txt")
    with open(creds, "w") as f:
        f.write("".join(f"{u} pw\n" for u in USERS + ["canary"]))
    log_path = os.path.join(workdir, "server.log")
    log = open(log_path, "w+")
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "bin", "greenchat-server"), "0", "1", "600",
         "--host", "127.0.0.1", "--credentials", creds, "--data", os.path.join(workdir, "data"),
         "--command-rate", "0", "--max-per-address", "100000"],
        stdout=subprocess.DEVNULL, stderr=log)
    stats = {"frames": 0, "connections": 0, "stalls": 0, "canary_max_s": 0.0,
             "canary_lost": False}
    try:
        deadline = time.monotonic() + 15
        port = None
        while port is None and time.monotonic() < deadline:
            log.seek(0)
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", log.read())
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        address = ("127.0.0.1", port)
        rng = random.Random(seed)
        stop = [False]
        watcher = gevent.spawn(canary, address, stats, stop)
        per = max(1, frames // connections)
        started = time.monotonic()
        with gevent.Timeout(timeout, False):
            while stats["frames"] < frames:
                batch = [gevent.spawn(attacker, address, random.Random(rng.random()), per, stats)
                         for _ in range(20)]
                gevent.joinall(batch)
        stop[0] = True
        watcher.join(35)
        elapsed = time.monotonic() - started
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    log.seek(0)
    text = log.read()
    crashes = len(re.findall(r"Traceback|internal error", text)) + (0 if alive else 1)
    return {"frames": stats["frames"], "connections": stats["connections"],
            "seconds": round(elapsed, 1), "crashes": crashes, "stalls": stats["stalls"],
            "canary_lost": stats["canary_lost"], "canary_max_ms": round(stats["canary_max_s"] * 1000, 1),
            "server_alive_to_the_end": alive, "clean_exit": proc.returncode == 0}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600)
    a = p.parse_args(argv)
    result = run(a.frames, a.connections, a.seed, a.timeout)
    print(json.dumps(result))
    return 0 if result["crashes"] == 0 and result["stalls"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
