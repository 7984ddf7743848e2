"""Which WebSocket implementation for greenchat's web client (issue 15), by
what it costs the server under gevent: `python -m bench.wsimpl`.

Two servers that do nothing but WebSocket, each a process of its own under
gevent (no monkey-patching), behind gevent's pywsgi on 127.0.0.1:

  simple     simple-websocket (on wsproto) as python-engineio drives it
             under gevent: `simple_websocket.Server(environ,
             thread_class=<a Greenlet>, event_class=gevent.event.Event,
             selector_class=gevent.selectors.DefaultSelector)`, so a
             greenlet per connection reads its socket (a dup) and the
             handler waits on `ws.receive()`. A broadcast is `ws.send(text)`
             per connection: wsproto frames the message and simple-websocket
             sends it (no queue and writer greenlet per connection, which
             engine.io adds: the cheapest way to use it).
  greenchat  wsproto used as greenchat does (greenchat/websocket.py and
             transport.py): the handler reads with FrameReader and
             MessageDecoder, and writes through an Outbox whose writer wraps
             a whole batch (`websocket.wrap`) into one send; a broadcast is
             encoded once and its bytes pushed to every Outbox. Writers that
             wrote nothing for a second end, as the server's do.

The load comes from this process, no gevent in it: bench/loadgen.py's epoll
engine in WebSocket mode, N connections, no login. One of them asks for M
broadcasts (a greenchat `message` frame each, with an id); every connection
counts the ones it gets. Server CPU from /proc.

  simple+deflate the same server, its clients offering permessage-deflate
                 as browsers do (Chromium and Firefox send
                 `Sec-WebSocket-Extensions: permessage-deflate;
                 client_max_window_bits`): simple-websocket accepts it, and
                 compresses each message for each connection. (greenchat's
                 upgrade accepts no extension.) These clients count frames
                 by their headers, as they cannot search compressed bytes.

  one at a time  each broadcast is on every socket before the next starts:
                 one send per connection per broadcast, for both.
  burst          the M broadcasts back to back, as under load: greenchat's
                 writers send what piled up in one batch; simple-websocket
                 cannot but send each (it is the same loop as above).

Then RSS per idle connection: a fresh server process, N connections, one
broadcast to them all (a chat connection has received something; a
compressor is made at its first message), then quiet for a few seconds.
Every run is bounded (--run-timeout, default 50 s).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import Server, proc_cpu_seconds, proc_rss_kb, raise_fd_limit, wait_quiet
from bench.loadgen import Conn, Engine, ws_frame
from greenchat import frames
from greenchat.codec import encode

IMPLS = ("simple", "greenchat")
# What is measured: (name, server, clients offer permessage-deflate).
VARIANTS = {"simple": ("simple", False), "simple+deflate": ("simple", True),
            "greenchat": ("greenchat", False)}
DEFLATE_OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
HERE = os.path.dirname(os.path.abspath(__file__))
SENT_AT = 1795480000.5
MAX_FRAME = 65536
# As the server: a writer that wrote nothing since the last look ends.
WRITER_IDLE = 1.0


def broadcast_frame(i, payload):
    """The encoded frame of broadcast `i`: what greenchat sends a receiver."""
    text = f"{i:010d} " + "x" * max(0, payload - 11)
    return encode(frames.message("u0", text, msg_id=i + 1, sent_at=SENT_AT, txn=f"t.{i}",
                                 broadcast=True))


# The servers (run under gevent) ----------------------------------------------

def serve(impl, payload):
    import gevent
    import gevent.event
    import gevent.selectors
    from gevent.pywsgi import WSGIHandler, WSGIServer

    from greenchat import websocket as ws
    from greenchat.server import runtime
    from greenchat.transport import FrameReader, Outbox

    runtime.tune_server_process()
    runtime.raise_fd_limit()
    conns = []              # simple: Server objects; greenchat: Outboxes

    class Thread(gevent.Greenlet):
        """python-engineio's gevent Thread: a Greenlet with Thread's interface."""

        def __init__(self, target, args=(), kwargs=None):
            super().__init__(target, *args, **(kwargs or {}))

        def _run(self):
            return self.run()

    def broadcast(count, burst):
        texts = [broadcast_frame(i, payload) for i in range(count)]
        for frame in texts:
            if impl == "simple":
                text = frame[:-1].decode("utf-8")
                for sock in list(conns):
                    sock.send(text)
                if not burst:
                    gevent.sleep(0)
            else:
                for outbox in conns:
                    outbox.push(frame)
                if not burst:
                    # Every writer sends before the next broadcast: the
                    # writers woken run before this greenlet resumes.
                    gevent.sleep(0)
                    while any(outbox.nbytes for outbox in conns):
                        gevent.sleep(0.001)

    def on_frame(frame):
        line = frame.get("line", "") if isinstance(frame, dict) else ""
        words = line.split()
        if words[:1] == ["broadcast"]:
            broadcast(int(words[1]), "burst" in words[2:])

    class Handler(WSGIHandler):
        def run_application(self):
            if self.environ.get("PATH_INFO") != "/ws":
                return super().run_application()
            self.close_connection = True
            # The connection is the WebSocket's from here: no HTTP answer after.
            self.status = "101 Switching Protocols"
            self.headers_sent = True
            if impl == "simple":
                self._simple()
            else:
                self._greenchat()

        def _simple(self):
            import simple_websocket

            sock = simple_websocket.Server(
                self.environ, thread_class=Thread, event_class=gevent.event.Event,
                selector_class=gevent.selectors.DefaultSelector, max_message_size=MAX_FRAME)
            conns.append(sock)
            try:
                while True:
                    text = sock.receive()
                    if text is None:
                        break
                    on_frame(json.loads(text))
            except simple_websocket.ConnectionClosed:
                pass
            finally:
                conns.remove(sock)

        def _greenchat(self):
            sock = self.socket
            headers = ws.check_upgrade(self.environ, "http")
            response = "".join(f"{name}: {value}\r\n" for name, value in headers)
            sock.sendall(f"HTTP/1.1 101 Switching Protocols\r\n{response}\r\n".encode("latin-1"))
            sock.settimeout(0.0)
            try:
                early = self.rfile.read1(65536) or b""
            except OSError:
                early = b""
            sock.settimeout(None)
            outbox = Outbox(sock, wrap=ws.wrap)
            reader = FrameReader(sock, MAX_FRAME, ws.MessageDecoder(MAX_FRAME, outbox.push),
                                 early=early)
            conns.append(outbox)
            try:
                while True:
                    on_frame(reader.read_frame())
            except Exception:       # the peer closed, or sent what ends it
                pass
            finally:
                conns.remove(outbox)
                outbox.close(1.0)

        def log_request(self):
            pass

    def retire_idle_writers():
        while True:
            gevent.sleep(WRITER_IDLE)
            for outbox in list(conns):
                outbox.retire_if_idle()

    if impl == "greenchat":
        gevent.spawn(retire_idle_writers)
    server = WSGIServer(("127.0.0.1", 0), lambda environ, start: [], handler_class=Handler,
                        log=None, backlog=2048)
    server.start()
    print(f"{impl} listening on 127.0.0.1:{server.server_port}", file=sys.stderr, flush=True)
    gevent.wait()


# The load (no gevent) --------------------------------------------------------

def start(impl, workdir, payload):
    return Server(f"wsimpl-{impl}", [sys.executable, os.path.join(HERE, "wsimpl.py"), "serve",
                                     "--impl", impl, "--payload", str(payload)], workdir)


def count_frames(buf):
    """(text frames, rest) of a server's bytes, frame by frame by their
    headers: compressed frames have no text to search."""
    count, i, size_all = 0, 0, len(buf)
    while i + 2 <= size_all:
        size, at = buf[i + 1] & 0x7F, i + 2
        if size == 126:
            size, at = int.from_bytes(buf[i + 2:i + 4], "big"), i + 4
        elif size == 127:
            size, at = int.from_bytes(buf[i + 2:i + 10], "big"), i + 10
        if at + size > size_all:
            break
        if buf[i] & 0x0F == 1:
            count += 1
        i = at + size
    return count, buf[i:]


class DeflateEngine(Engine):
    """Clients that offer permessage-deflate, and count frames by header."""

    def open(self, conn):
        super().open(conn)
        conn.wbuf[-2:-2] = DEFLATE_OFFER

    def received(self, conn, data, now):
        count, conn.partial = count_frames(data)
        if conn.measure:
            conn.count += count


def connect(server, n, deadline, deflate):
    eng = (DeflateEngine if deflate else Engine)(server.port, server.port)
    conns = [Conn(f"c{i}", ws=True, login=False) for i in range(n)]
    for conn in conns:
        conn.acks = False
    ready = eng.establish(conns, 50, deadline)
    if ready != n:
        raise RuntimeError(f"{server.name}: {ready}/{n} connected: "
                           f"{[c.dead for c in conns if c.dead][:3]}")
    return eng, conns


def run_broadcasts(server, eng, conns, m, burst, timeout):
    """Ask for `m` broadcasts; (deliveries, wall s, server CPU s) once every
    connection has them all (or `timeout` passes)."""
    for conn in conns:
        conn.measure, conn.count = True, 0
    target = len(conns) * m
    cpu0 = proc_cpu_seconds(server.pid)
    t0 = time.perf_counter()
    end = t0 + timeout
    eng.send(conns[0], ws_frame(encode(frames.command(
        1, f"broadcast {m}" + (" burst" if burst else "")))[:-1]))
    total = 0
    while total < target and time.perf_counter() < end and not eng.ndead:
        eng.poll(0.005)
        total = sum(c.count for c in conns)
    wall = time.perf_counter() - t0
    return total, wall, proc_cpu_seconds(server.pid) - cpu0


def fanout(variant, workdir, n, m, payload, burst, timeout):
    impl, deflate = VARIANTS[variant]
    server = start(impl, workdir, payload)
    try:
        t0 = time.perf_counter()
        eng, conns = connect(server, n, t0 + timeout, deflate)
        setup_s = time.perf_counter() - t0
        eng.settle()
        wait_quiet(server.pid)
        total, wall, cpu = run_broadcasts(server, eng, conns, m, burst, timeout)
        eng.close_all()
        return {"variant": variant, "n": n, "m": m, "burst": burst,
                "setup_s": round(setup_s, 2), "deliveries": total,
                "complete": total >= n * m, "dead": eng.ndead, "wall_s": round(wall, 3),
                "deliveries_per_s": round(total / wall), "server_cpu_s": round(cpu, 2),
                "server_cpu_s_per_M_deliveries": round(cpu / total * 1e6, 2) if total else None,
                "server_rss_kb": proc_rss_kb(server.pid)}
    finally:
        server.stop()


def idle(variant, workdir, n, payload, idle_seconds, timeout):
    impl, deflate = VARIANTS[variant]
    server = start(impl, workdir, payload)
    try:
        wait_quiet(server.pid)
        rss0 = proc_rss_kb(server.pid)
        t0 = time.perf_counter()
        eng, conns = connect(server, n, t0 + timeout, deflate)
        connect_s = time.perf_counter() - t0
        eng.settle(quiet=0.5)
        total, _, _ = run_broadcasts(server, eng, conns, 1, False, timeout)
        end = time.perf_counter() + idle_seconds
        while time.perf_counter() < end:
            eng.poll(0.1)
        rss = proc_rss_kb(server.pid)
        open_files = len(os.listdir(f"/proc/{server.pid}/fd"))
        eng.close_all()
        return {"variant": variant, "n": n, "connect_s": round(connect_s, 2),
                "broadcast_delivered": total, "server_rss_kb_baseline": rss0,
                "server_rss_kb_after": rss, "rss_kb_per_conn": round((rss - rss0) / n, 2),
                "server_open_files": open_files}
    finally:
        server.stop()


def table(results):
    rows = [
        ("fan-out, one at a time: deliveries/s", "fanout", "deliveries_per_s", ",.0f"),
        ("fan-out, one at a time: server CPU-s per M", "fanout",
         "server_cpu_s_per_M_deliveries", ".2f"),
        ("fan-out, burst: deliveries/s", "burst", "deliveries_per_s", ",.0f"),
        ("fan-out, burst: server CPU-s per M", "burst", "server_cpu_s_per_M_deliveries", ".2f"),
        ("RSS KB per idle connection", "idle", "rss_kb_per_conn", ".1f"),
        ("open files at the idle connections", "idle", "server_open_files", ",d"),
    ]
    impls = list(results)
    names = {"simple": "simple-websocket", "simple+deflate": "simple-websocket, deflate offered",
             "greenchat": "wsproto + wrap (greenchat)"}
    lines = ["| workload | " + " | ".join(names[i] for i in impls) + " |",
             "|---|" + "---|" * len(impls)]
    for label, key, field, spec in rows:
        cells = []
        for impl in impls:
            result = results[impl].get(key) or {}
            value = result.get(field)
            cells.append("error" if "error" in result else
                         "-" if value is None else format(value, spec))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.wsimpl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="run one server (under gevent); the runner starts them")
    s.add_argument("--impl", choices=IMPLS, required=True)
    s.add_argument("--payload", type=int, default=60)
    p.add_argument("-n", type=int, default=1000, help="connections")
    p.add_argument("-m", type=int, default=200, help="broadcasts")
    p.add_argument("--payload", type=int, default=60, help="characters of text a broadcast")
    p.add_argument("--idle-n", type=int, default=2000, help="idle connections (0: skip)")
    p.add_argument("--idle-seconds", type=float, default=3.0)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--run-timeout", type=float, default=50.0, help="bound per run, seconds")
    p.add_argument("--out", default=os.path.join(HERE, "results", "wsimpl.json"))
    a = p.parse_args(argv)
    if a.cmd == "serve":
        serve(a.impl, a.payload)
        return
    raise_fd_limit()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants: {sorted(unknown)}")
    workdir = tempfile.mkdtemp(prefix="greenchat-wsimpl-")
    results = {}
    for variant in variants:
        results[variant] = {}
        runs = [("fanout", fanout, (a.n, a.m, a.payload, False, a.run_timeout)),
                ("burst", fanout, (a.n, a.m, a.payload, True, a.run_timeout))]
        if a.idle_n:
            runs.append(("idle", idle, (a.idle_n, a.payload, a.idle_seconds, a.run_timeout)))
        for key, run, args in runs:
            try:
                results[variant][key] = run(variant, workdir, *args)
            except Exception as exc:            # one run failing leaves the others
                results[variant][key] = {"error": str(exc)[-300:]}
            print(json.dumps(results[variant][key]), file=sys.stderr, flush=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"time": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "n": a.n, "m": a.m, "payload": a.payload, "idle_n": a.idle_n,
                   "results": results}, f, indent=1)
    print(table(results))


if __name__ == "__main__":
    main()
