"""Fuzz the live server: `python -m bench.fuzz [--frames 100000]`.

Starts bin/greenchat-server as a process on 127.0.0.1 and throws frames at
it from many connections: valid commands, mutated frames (flipped, dropped,
duplicated bytes), random bytes, invalid UTF-8, NUL bytes, huge lines, JSON
of the wrong shape, frames cut short by a disconnect. A canary client stays
logged in and runs a command every CANARY_EVERY seconds; an answer slower
than STALL seconds is a stall.

Beside that mix run the floods of issue 11, item 1, each class from
FLOOD_WORKERS connections that reconnect whenever the server drops them:
`blank` (bare newlines), `whitespace` (spaces, tabs and CRs between
newlines), `spaces` (spaces and no newline), `probes` (a hello, then
username frames, never a password) and `commands` (logged in, pipelining
valid commands as fast as the server takes them while a greenlet of its own
reads every answer). The probe and command floods keep at most WINDOW frames
unanswered: the pipeline enough that the server's reader never runs dry in a
50 ms turn, the probes about the burst the server takes before it drops them.

The run has two phases, each a fresh server process with its own canary and
half the frames:
- `limited`: the server's default --command-rate and --command-burst, which
  count every frame from the first: the probe flood meets that limit. The
  mix does not notice it (a connection sends fewer frames than the burst).
- `unlimited`: --command-rate 0, for the command pipeline: under the limit
  it would be cut off after its burst and test only reconnecting; without
  it, it tests the 50 ms turn a busy reader must give everyone else.
The blank, whitespace and spaces floods run in both: they make no frame, so
no rate limit touches them.

Counting toward --frames (frames sent, whether or not the server read them
before it dropped the connection): a frame of the mix, and each JSON frame a
probe or command flood sends, counts one. A blank, whitespace or spaces
flood sends 64 KiB chunks and a chunk counts one: the server takes at most
that much blank as one malformed frame (counting its blank lines would
spend a 100,000-frame run on two chunks). A phase ends once its half is
spent; the floods stop with the mix.

The canary shares the fuzzer's hub with every attacker, so a flooder gives
the hub a turn (a 1 ms timer) after each chunk: on loopback a send may never
block, and the canary's time must be the server's.

Prints one JSON line: frames sent, connections, crashes (server tracebacks
or internal errors in its log, or a process gone), stalls, the canary's
slowest answer, and per phase the frames and connections of each class and
its canary's slowest answer. Bounded in count and time; loopback only.
"""

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time

import gevent
from gevent import socket
from gevent.event import Event

from bench.common import HELLO, Server, greenchat_command, login_frames, write_credentials
from greenchat.frames import command, username

# Often enough to sample a short phase; well under the default command rate.
CANARY_EVERY = 0.1
STALL = 1.0
USERS = [f"f{i}" for i in range(50)]
FLOOD_WORKERS = 2
FLOOD_USERS = [f"flood{i}" for i in range(FLOOD_WORKERS)]
CHUNK = 64 * 1024
# Frames a probe or command flood sends in one go, and how many may wait
# unanswered (see the module docstring).
BATCH = 100
WINDOW = {"probes": BATCH, "commands": 20 * BATCH}
# What marks an answer: every probe gets one, the pipeline's are replies
# (presence and broadcasts come too).
ANSWER = {"probes": b"\n", "commands": b'{"type":"reply"'}
BLANK_FLOODS = ("blank", "whitespace", "spaces")
PHASES = (("limited", [], BLANK_FLOODS + ("probes",)),
          ("unlimited", ["--command-rate", "0"], BLANK_FLOODS + ("commands",)))


def frame(obj):
    """The fuzzer's encoding: json.dumps with its spaces (greenchat's own is
    compact), so the mix's bytes for a seed, and what mutate() makes of them,
    are what they always were."""
    return (json.dumps(obj) + "\n").encode()


def valid_command(rng):
    user = rng.choice(USERS + ["nobody", ""])
    return frame(command(rng.randrange(1 << 31), rng.choice([
        f"message {user} {rng.random()}", f"broadcast hi {rng.random()}", "whoelse",
        f"whoelsesince {rng.randrange(-5, 10**6)}", f"block {user}", f"unblock {user}",
        f"startprivate {user}", "dance", "", "message", "\x00\x01", "é" * 50])))


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
    stats["classes"]["mix"]["connections"] += 1
    try:
        if rng.random() < 0.7:
            sock.sendall(login_frames(rng.choice(USERS), rng.choice(["pw", "pw", "wrong"])))
        for _ in range(budget):
            data = fuzz_frame(rng)
            if rng.random() < 0.02:         # cut a frame short and vanish
                sock.sendall(data[:rng.randrange(len(data))])
                count(stats, "mix", 1)
                return
            sock.sendall(data)
            count(stats, "mix", 1)
            if rng.random() < 0.05:
                gevent.sleep(0)
    except OSError:
        pass                                 # the server closed on us: expected
    finally:
        sock.close()


def count(stats, kind, frames):
    stats["frames"] += frames
    stats["classes"][kind]["frames"] += frames


# Floods ------------------------------------------------------------------------

def blank_chunk(kind, rng):
    """64 KiB of blank bytes: newlines, blank lines of spaces/tabs/CRs, or spaces."""
    if kind == "blank":
        return b"\n" * CHUNK
    if kind == "spaces":
        return b" " * CHUNK
    data = bytearray()
    while len(data) < CHUNK:
        data += bytes(rng.choice(b" \t\r") for _ in range(rng.randrange(0, 80))) + b"\n"
    return bytes(data[:CHUNK])


def flood_commands(rng):
    # Commands the server answers from memory: a pipeline of messages would
    # fill the store and the other fuzz users' mailboxes instead.
    lines = ["whoelse", "whoelsesince 3600", "message nobody hi", "block nobody",
             "unblock nobody", "startprivate nobody"]
    return b"".join(frame(command(i, rng.choice(lines))) for i in range(BATCH))


def flooder(address, kind, user, rng, stats, stop):
    """Flood one class from one connection at a time, reconnecting whenever the
    server drops it, until stop."""
    if kind in BLANK_FLOODS:
        chunk, frames = blank_chunk(kind, rng), 1
    elif kind == "probes":
        chunk = b"".join(frame(username(rng.choice(USERS + ["nobody"]))) for _ in range(BATCH))
        frames = BATCH
    else:
        chunk, frames = flood_commands(rng), BATCH
    while not stop[0]:
        try:
            sock = socket.create_connection(address, timeout=5)
        except OSError:
            gevent.sleep(0.01)
            continue
        stats["connections"] += 1
        stats["classes"][kind]["connections"] += 1
        answered, heard, reader = [0], Event(), None
        try:
            sent = 0
            if kind in WINDOW:
                reader = gevent.spawn(listen, sock, ANSWER[kind], answered, heard)
                prefix = HELLO if kind == "probes" else login_frames(user)
                sock.sendall(prefix)
                sent = prefix.count(b"\n")
                count(stats, kind, sent)
            while not stop[0] and (reader is None or not reader.dead):
                if reader is not None and sent - answered[0] >= WINDOW[kind]:
                    heard.clear()
                    heard.wait(1)
                    continue
                sock.sendall(chunk)
                sent += frames
                count(stats, kind, frames)
                gevent.sleep(0.001)        # the fuzzer's hub: see the module docstring
        except OSError:
            pass                            # dropped, as it should be: reconnect
        finally:
            if reader is not None:
                reader.kill()
            sock.close()


def listen(sock, marker, answered, heard):
    """Read every answer (so the server never drops a pipeline as a slow
    reader), counting those that contain `marker`."""
    keep = len(marker) - 1         # a marker split between two reads is still counted
    tail = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return
            data = tail + data
            answered[0] += data.count(marker)
            tail = data[-keep:] if keep else b""
            heard.set()
            gevent.sleep(0.001)
    except OSError:
        pass
    finally:
        heard.set()


# The canary and the run --------------------------------------------------------

def canary(address, stats, stop):
    sock = socket.create_connection(address, timeout=5)
    sock.settimeout(None)               # waits are bounded by the Timeout below
    sock.sendall(login_frames("canary"))
    buffer = b""
    n = 0
    while not stop[0]:
        n += 1
        start = time.monotonic()
        sock.sendall(frame(command(n, "whoelse")))
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


def run_phase(name, options, floods, frames, connections, rng, timeout):
    workdir = tempfile.mkdtemp(prefix=f"greenchat-fuzz-{name}-")
    creds = os.path.join(workdir, "credentials.txt")
    write_credentials(creds, USERS + FLOOD_USERS + ["canary"])
    server = Server("server", greenchat_command(
        creds, os.path.join(workdir, "data"), "--max-per-address", "100000", *options,
        block_duration="1", timeout="600"), workdir, timeout=15, preexec_fn=None)
    proc = server.proc
    stats = {"frames": 0, "connections": 0, "stalls": 0, "canary_max_s": 0.0,
             "canary_lost": False,
             "classes": {kind: {"frames": 0, "connections": 0} for kind in ("mix", *floods)}}
    started = time.monotonic()
    try:
        address = ("127.0.0.1", server.port)
        stop = [False]
        watcher = gevent.spawn(canary, address, stats, stop)
        flooders = [gevent.spawn(flooder, address, kind, FLOOD_USERS[i],
                                 random.Random(rng.random()), stats, stop)
                    for kind in floods for i in range(FLOOD_WORKERS)]
        per = max(1, frames // connections)
        with gevent.Timeout(timeout, False):
            while stats["frames"] < frames and proc.poll() is None:
                batch = [gevent.spawn(attacker, address, random.Random(rng.random()), per, stats)
                         for _ in range(20)]
                gevent.joinall(batch)
        stop[0] = True
        gevent.joinall(flooders, timeout=10)
        gevent.killall(flooders)
        watcher.join(35)
        elapsed = time.monotonic() - started
        alive = proc.poll() is None
    finally:
        status = server.stop()
    text = server.log()
    stats.update(seconds=elapsed, alive=alive, clean_exit=status == 0,
                 crashes=len(re.findall(r"Traceback|internal error", text)) + (0 if alive else 1))
    return stats


def run(frames=100_000, connections=2000, seed=1, timeout=600):
    rng = random.Random(seed)
    phases = []
    for index, (name, options, floods) in enumerate(PHASES):
        share = frames // len(PHASES) + (frames % len(PHASES) if index == 0 else 0)
        phases.append((name, run_phase(name, options, floods, share,
                                       max(1, connections // len(PHASES)), rng,
                                       timeout / len(PHASES))))
    every = [stats for _, stats in phases]
    return {"frames": sum(s["frames"] for s in every),
            "connections": sum(s["connections"] for s in every),
            "seconds": round(sum(s["seconds"] for s in every), 1),
            "crashes": sum(s["crashes"] for s in every),
            "stalls": sum(s["stalls"] for s in every),
            "canary_lost": any(s["canary_lost"] for s in every),
            "canary_max_ms": round(max(s["canary_max_s"] for s in every) * 1000, 1),
            "server_alive_to_the_end": all(s["alive"] for s in every),
            "clean_exit": all(s["clean_exit"] for s in every),
            "phases": {name: {"classes": s["classes"], "stalls": s["stalls"],
                              "canary_max_ms": round(s["canary_max_s"] * 1000, 1)}
                       for name, s in phases}}


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
