"""Bounded loopback load generator for greenchat's protocol (no gevent: the
standard library, bench/common.py and greenchat's sans-IO frames and codec).

Runs in its own process, single-threaded over epoll, so the server under test
has the other core to itself. Targets 127.0.0.1 only. Every loop is bounded by
a count and a wall-clock deadline. Prints one JSON object per run.

  fanout   N receivers + 1 sender; the sender broadcasts M messages; counts
           deliveries at the receivers; server CPU from /proc.
  latency  A -> server -> B, B -> server -> A with `message`, K sequential
           round trips; median and p99.
  conns    up to C logged-in idle clients; login rate and server RSS.

Accounts are u0, u1, ... with password "pw"; the runner writes that file
(`--first-user F` starts a run's accounts at uF, so runs against one server
do not share accounts).

With `--ws-port PORT` the clients speak WebSocket to the server's web
listener instead (the fanout's sender stays on TCP, as a broadcast comes
from anyone): an HTTP/1.1 upgrade of GET /ws with a Sec-WebSocket-Key and no
Origin, as a non-browser client sends it; once the 101 is in, the same
frames, each a text message masked with a zero key (legal, and the XOR is a
no-op, so a frame is its header, four zero bytes and the JSON). Server
frames are unmasked text messages without a newline: a receiver counts
`{"type":"message","id":` (which JSON can only hold as structure, the
quotes of a text being escaped), carrying an unfinished one to the next
read, and reads the id after it; it parses no WebSocket header.

Every connection that receives messages acknowledges them as the client
does: an `ack` of the highest id received, at the 64th message not yet
acknowledged or 100 ms after the first (the epoll loop checks its timers at
each poll). Ids are found with a bytes search for the start the server's
compact JSON gives a message frame, `{"type":"message","id":`, not by
parsing every frame; anything else is parsed as JSON.
"""

import argparse
import errno
import json
import os
import resource
import select
import socket
import statistics
import sys
import time
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import login_frames, proc_cpu_seconds, proc_rss_kb
from greenchat import frames
from greenchat.codec import encode

HOST = "127.0.0.1"
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = (select.EPOLLIN, select.EPOLLOUT,
                                         select.EPOLLERR, select.EPOLLHUP)
LOGIN_OK = b'"status":"ok"'
# The start of every message frame the server encodes: the id comes next.
MESSAGE_ID = b'{"type":"message","id":'
# Else a frame that may be a message with an id, in some other JSON: parsed.
MESSAGE, ID = b'"message"', b'"id"'
# As the client: an ack at the 64th message not yet acknowledged, or 100 ms
# after the first.
ACK_EVERY = 64
ACK_DELAY = 0.1
# What a MESSAGE_ID cut by a read may leave: never a whole one.
KEEP = len(MESSAGE_ID) - 1
# The RFC 6455 example key: any 16 bytes in base64 do, the server only hashes it.
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WS_SWITCHING = b"HTTP/1.1 101 "
# An HTTP response head longer than this is not a server's 101.
MAX_HEAD = 8192


def command(i, line):
    return encode(frames.command(i, line))


def ack(upto):
    return encode(frames.ack(upto))


def upgrade_request(port, path="/ws"):
    """The HTTP request that asks the web listener for a WebSocket."""
    return (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n").encode("ascii")


def ws_frame(payload):
    """A client's text message: final, masked with the key 0 (as RFC 6455
    allows; XOR with zeros leaves the payload as it is)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x81, 0x80 | size))
    elif size < 65536:
        head = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def ws_frames(data):
    """Codec-encoded frames (JSON lines) as client WebSocket messages, one each."""
    if data.find(b"\n") == len(data) - 1:
        return ws_frame(data[:-1])          # one frame, the usual case
    return b"".join([ws_frame(line) for line in data.split(b"\n") if line])


def ws_split(buf):
    """(payload, rest) of the first whole server frame in `buf` (unmasked,
    as a server sends), or (None, buf) if it is not all there."""
    if len(buf) < 2:
        return None, buf
    size, at = buf[1] & 0x7F, 2
    if size == 126:
        size, at = int.from_bytes(buf[2:4], "big"), 4
    elif size == 127:
        size, at = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < at + size:
        return None, buf
    return buf[at:at + size], buf[at + size:]


def ws_scan(buf):
    """(messages, highest id, rest) of a server's WebSocket bytes: how many
    message frames with an id `buf` holds whose id has arrived whole, the
    highest id (None without one), and what to carry to the next read (an
    unfinished message's start, or the last bytes, where one may begin)."""
    count = buf.count(MESSAGE_ID)
    if not count:
        return 0, None, buf[-KEEP:]
    start = buf.rfind(MESSAGE_ID)
    at = start + len(MESSAGE_ID)
    end = buf.find(b",", at)
    if end < 0:
        # The last id is cut: it waits for the next read.
        count -= 1
        rest = buf[start:]
        if not count:
            return 0, None, rest
        at = buf.rfind(MESSAGE_ID, 0, start) + len(MESSAGE_ID)
        end = buf.find(b",", at, start)
    else:
        rest = buf[-KEEP:]
    try:
        upto = int(buf[at:end])
    except ValueError:
        upto = None
    return count, upto, rest


def scan(buf):
    """(messages, highest id, rest) of the complete lines of `buf`: how many
    message frames with an id they hold, the highest id (None without one),
    and the unfinished line after them."""
    nl = buf.rfind(b"\n")
    if nl < 0:
        return 0, None, buf
    rest = buf[nl + 1:]
    count = buf.count(MESSAGE_ID, 0, nl)
    if count:
        # Ids increase: the last message frame has the highest.
        at = buf.rfind(MESSAGE_ID, 0, nl) + len(MESSAGE_ID)
        end = buf.find(b",", at, nl)
        if end > at:
            try:
                upto = int(buf[at:end])
            except ValueError:
                pass
            else:
                if upto >= 0:
                    return count, upto, rest
    elif buf.find(MESSAGE, 0, nl) < 0 or buf.find(ID, 0, nl) < 0:
        return 0, None, rest        # no message frame, or none with an id
    return _scan_json(buf, nl) + (rest,)


def _scan_json(buf, nl):
    """scan's (messages, highest id) the slow way, frame by frame."""
    count, upto = 0, None
    for line in buf[:nl].split(b"\n"):
        if MESSAGE not in line:
            continue
        try:
            frame = json.loads(line)
        except ValueError:
            continue
        msg_id = frame.get("id") if isinstance(frame, dict) and \
            frame.get("type") == "message" else None
        if type(msg_id) is int and msg_id >= 0:
            count += 1
            upto = msg_id if upto is None else max(upto, msg_id)
    return count, upto


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pct(sorted_values, p):
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


class Conn:
    __slots__ = ("user", "sock", "fd", "wbuf", "tail", "ready", "dead", "count",
                 "measure", "t_start", "t_ready", "connecting", "mask",
                 "acks", "partial", "upto", "unacked", "ack_due", "ws", "upgraded", "login")

    def __init__(self, user, ws=False, login=True):
        """`ws`: over WebSocket; `login`: log in as `user` once upgraded
        (else ready then: a WebSocket server other than greenchat's)."""
        self.user = user
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.fd = self.sock.fileno()
        self.wbuf = bytearray()
        self.tail = b""
        self.ready = False
        self.dead = None
        self.count = 0
        self.measure = False
        self.connecting = True
        self.mask = 0
        self.acks = True          # acknowledges the messages it receives
        self.partial = b""        # an unfinished line, for the ids
        self.upto = None          # the highest message id received
        self.unacked = 0          # messages received since the last ack
        self.ack_due = None       # when the next ack is due, while one waits
        self.ws = ws
        self.upgraded = False     # the server's 101 is in
        self.login = login


class Engine:
    """Drives many non-blocking connections from one thread."""

    def __init__(self, port, ws_port=None):
        self.port = port
        self.ws_port = ws_port    # the web listener's, for WebSocket conns
        self.ep = select.epoll()
        self.conns = {}
        self.ndead = 0
        self.bytes_in = 0
        self.acks_due = deque()   # (when, conn), earliest first
        self.acks_sent = 0

    def open(self, conn):
        conn.t_start = time.perf_counter()
        rc = conn.sock.connect_ex((HOST, self.ws_port if conn.ws else self.port))
        if rc not in (0, errno.EINPROGRESS):
            raise OSError(rc, os.strerror(rc))
        self.conns[conn.fd] = conn
        conn.mask = EPOLLIN | EPOLLOUT
        self.ep.register(conn.fd, conn.mask)
        if conn.ws:
            # As a browser: the frames wait for the 101.
            conn.wbuf += upgrade_request(self.ws_port)
        else:
            conn.wbuf += login_frames(conn.user)

    def close(self, conn):
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.ep.unregister(conn.fd)
            except (OSError, ValueError):
                pass
        conn.sock.close()

    def close_all(self):
        for conn in list(self.conns.values()):
            self.close(conn)

    def send(self, conn, data):
        conn.wbuf += data
        self.flush(conn)

    def flush(self, conn):
        if conn.connecting:
            return
        while conn.wbuf:
            try:
                n = conn.sock.send(conn.wbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.kill(conn, f"send: {exc}")
                return
            del conn.wbuf[:n]
        want = EPOLLIN | (EPOLLOUT if conn.wbuf else 0)
        if want != conn.mask and conn.fd in self.conns:
            conn.mask = want
            self.ep.modify(conn.fd, want)

    def kill(self, conn, why):
        if conn.dead is None:
            conn.dead = why
            self.ndead += 1
        self.close(conn)

    def poll(self, timeout):
        conns = self.conns
        events = self.ep.poll(timeout, 1024)
        now = time.perf_counter()
        for fd, ev in events:
            conn = conns.get(fd)
            if conn is None:
                continue
            if conn.connecting and ev & (EPOLLOUT | EPOLLERR | EPOLLHUP):
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.kill(conn, f"connect: {os.strerror(err)}")
                    continue
                conn.connecting = False
                self.flush(conn)
            elif ev & EPOLLOUT:
                self.flush(conn)
            if ev & (EPOLLIN | EPOLLERR | EPOLLHUP):
                try:
                    data = conn.sock.recv(262144)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    self.kill(conn, f"recv: {exc}")
                    continue
                if not data:
                    self.kill(conn, "EOF from server")
                    continue
                self.bytes_in += len(data)
                if conn.ws and not conn.upgraded:
                    data = self.upgrade(conn, data)
                    if not data:
                        continue
                if conn.measure and not conn.ws:
                    # One frame per line; during measurement receivers get
                    # only the broadcasts.
                    conn.count += data.count(b"\n")
                elif not conn.ready:
                    seen = conn.tail + data
                    if LOGIN_OK in seen:
                        conn.ready = True
                        conn.t_ready = time.perf_counter()
                    elif b'"status":"failed"' in seen or b'"type":"error"' in seen:
                        self.kill(conn, seen[-200:].decode("utf-8", "replace"))
                        continue
                    conn.tail = data[-32:]
                if conn.ready and (conn.acks or conn.ws):
                    self.received(conn, conn.partial + data if conn.partial else data, now)
        acks_due = self.acks_due
        while acks_due and acks_due[0][0] <= now:
            due, conn = acks_due.popleft()
            if conn.ack_due == due and conns.get(conn.fd) is conn:
                self.ack(conn)

    def upgrade(self, conn, data):
        """Read the answer to a WebSocket upgrade; once its 101 is whole,
        send the login and return what came after it (else b"")."""
        head = conn.partial + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            conn.partial = head
            if len(head) > MAX_HEAD:
                self.kill(conn, "no end to the HTTP response")
            return b""
        if not head.startswith(WS_SWITCHING):
            self.kill(conn, "upgrade refused: " + head[:end].decode("latin-1").split("\r\n")[0])
            return b""
        conn.partial = b""
        conn.upgraded = True
        if conn.login:
            self.send(conn, ws_frames(login_frames(conn.user)))
        else:
            conn.ready = True
            conn.t_ready = time.perf_counter()
        return head[end + 4:]

    def received(self, conn, data, now):
        """Note the message ids in `data` (counting them, for a WebSocket
        receiver being measured); acknowledge them when due."""
        if conn.ws:
            count, upto, conn.partial = ws_scan(data)
            if conn.measure:
                conn.count += count
            if not conn.acks:
                return
        elif not conn.acks:
            return
        else:
            count, upto, conn.partial = scan(data)
        if not count or upto is None:
            return
        if conn.upto is None or upto > conn.upto:
            conn.upto = upto
        conn.unacked += count
        if conn.unacked >= ACK_EVERY:
            self.ack(conn)
        elif conn.ack_due is None:
            conn.ack_due = now + ACK_DELAY
            self.acks_due.append((conn.ack_due, conn))

    def ack(self, conn):
        conn.unacked, conn.ack_due = 0, None
        self.acks_sent += 1
        self.send(conn, ws_frame(ack(conn.upto)[:-1]) if conn.ws else ack(conn.upto))

    def establish(self, conns, window, deadline, progress=None):
        """Log conns in, at most `window` unfinished at once; return how many."""
        pending = list(reversed(conns))
        inflight = []
        nready = 0
        while (pending or inflight) and time.perf_counter() < deadline:
            while pending and len(inflight) < window:
                conn = pending.pop()
                self.open(conn)
                inflight.append(conn)
            self.poll(0.02)
            still = []
            for conn in inflight:
                if conn.ready:
                    nready += 1
                    if progress:
                        progress(nready, conn)
                elif conn.dead is None:
                    still.append(conn)
                else:
                    return nready
            inflight = still
        return nready

    def settle(self, quiet=0.3, limit=60.0):
        """Read until nothing arrives for `quiet` seconds (bounded by `limit`)."""
        end = time.perf_counter() + limit
        last = self.bytes_in
        last_change = time.perf_counter()
        while time.perf_counter() < end:
            self.poll(0.05)
            if self.bytes_in != last:
                last, last_change = self.bytes_in, time.perf_counter()
            elif time.perf_counter() - last_change >= quiet:
                return


def transport(a):
    return "ws" if a.ws_port else "tcp"


def cmd_fanout(a):
    eng = Engine(a.port, a.ws_port)
    deadline = time.perf_counter() + a.setup_timeout
    first = a.first_user
    sender = Conn(f"u{first}")
    # Its commands go out straight from `blob`, not through its wbuf, where
    # an ack could land in the middle of one; a broadcast never comes back
    # to its sender anyway.
    sender.acks = False
    receivers = [Conn(f"u{first + i + 1}", ws=bool(a.ws_port)) for i in range(a.n)]
    for conn in receivers:
        conn.acks = not a.no_acks
    t0 = time.perf_counter()
    if eng.establish([sender], 1, deadline) != 1:
        sys.exit(f"sender login failed: {sender.dead}")
    nready = eng.establish(receivers, a.connect_window, deadline)
    setup_s = time.perf_counter() - t0
    if nready != a.n:
        sys.exit(f"only {nready}/{a.n} receivers logged in: "
                 f"{[c.dead for c in receivers if c.dead][:3]}")
    eng.settle()
    for conn in receivers:
        conn.measure = True
        conn.count = 0

    pad = "x" * max(0, a.payload - 11)
    blob = memoryview(b"".join(command(i, f"broadcast {i:010d} {pad}") for i in range(a.m)))
    per_message = len(blob) / a.m
    target = a.n * a.m
    sent = 0
    out_armed = False
    srv0, me0 = proc_cpu_seconds(a.pid), self_cpu_s()
    t0 = time.perf_counter()
    end = t0 + a.run_timeout
    t_sent = None
    while True:
        total = sum(c.count for c in receivers)
        now = time.perf_counter()
        if total >= target or now > end or eng.ndead:
            break
        if sent < len(blob):
            limit = len(blob) if a.window <= 0 else \
                min(len(blob), int((total / a.n + a.window) * per_message))
            if sent < limit:
                try:
                    sent += sender.sock.send(blob[sent:limit])
                    if out_armed:
                        eng.ep.modify(sender.fd, EPOLLIN)
                        out_armed = False
                except (BlockingIOError, InterruptedError):
                    if not out_armed:
                        eng.ep.modify(sender.fd, EPOLLIN | EPOLLOUT)
                        out_armed = True
            elif t_sent is None and sent >= len(blob):
                t_sent = now
        eng.poll(0.005)
    wall = time.perf_counter() - t0
    srv_cpu, me_cpu = proc_cpu_seconds(a.pid) - srv0, self_cpu_s() - me0
    total = sum(c.count for c in receivers)
    print(json.dumps({
        "test": "fanout", "transport": transport(a), "n": a.n, "m": a.m, "window": a.window,
        "setup_s": round(setup_s, 3),
        "deliveries": total, "expected": target, "complete": total >= target,
        "dead": eng.ndead, "acks": eng.acks_sent, "wall_s": round(wall, 4),
        "deliveries_per_s": round(total / wall, 1),
        "server_cpu_s": round(srv_cpu, 3), "server_cpu_util": round(srv_cpu / wall, 3),
        "server_cpu_s_per_M_deliveries": round(srv_cpu / total * 1e6, 3) if total else None,
        "loadgen_cpu_util": round(me_cpu / wall, 3),
        "server_rss_kb": proc_rss_kb(a.pid),
    }), flush=True)
    eng.close_all()


class Blocking:
    """A blocking client for the latency run; over WebSocket with `ws_port`."""

    ws = False

    def __init__(self, port, user, deadline, ws_port=None):
        self.ws = ws_port is not None
        self.sock = socket.create_connection((HOST, ws_port or port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.upto = None          # the highest message id received
        self.unacked = 0          # since the last ack
        self.first_unacked = None
        if self.ws:
            self.sock.sendall(upgrade_request(ws_port))
            while b"\r\n\r\n" not in self.buf:
                self._recv(deadline)
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            if not head.startswith(WS_SWITCHING):
                raise ConnectionError(f"upgrade refused: {head[:100]!r}")
        self.send(login_frames(user))
        self.wait_for(LOGIN_OK, deadline)

    def send(self, data):
        """Send codec-encoded frames (as WebSocket messages over WebSocket)."""
        self.sock.sendall(ws_frames(data) if self.ws else data)

    def received(self, line):
        """Note a message frame's id."""
        count, upto, _ = scan(line + b"\n")
        if count:
            self.upto = upto if self.upto is None else max(self.upto, upto)
            self.unacked += count
            if self.first_unacked is None:
                self.first_unacked = time.perf_counter()

    def ack_if_due(self, now=None):
        """Acknowledge as the client does: at the 64th message, or 100 ms
        after the first (checked when called); with `now` None, at once."""
        if self.unacked and (now is None or self.unacked >= ACK_EVERY
                             or now - self.first_unacked >= ACK_DELAY):
            self.send(ack(self.upto))
            self.unacked, self.first_unacked = 0, None

    def _next(self):
        """The next whole frame received (a line, or a WebSocket message's
        payload), or None."""
        if self.ws:
            payload, self.buf = ws_split(self.buf)
            return payload
        if b"\n" not in self.buf:
            return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def _recv(self, deadline):
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError("no answer in time")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("EOF from server")
        self.buf += data

    def wait_for(self, needle, deadline):
        while True:
            frame = self._next()
            while frame is not None:
                if needle in frame:
                    return frame
                frame = self._next()
            self._recv(deadline)


MARKER_ID = 999_999_999


def run_latency(port, pid, k, warmup, payload, timeout, ws_port=None, first=1):
    deadline = time.perf_counter() + timeout
    name_a, name_b = f"u{first}", f"u{first + 1}"
    a = Blocking(port, name_a, deadline, ws_port)
    b = Blocking(port, name_b, deadline, ws_port)   # logged in, so online, when this returns
    pad = "y" * max(0, payload - 11)
    rtts = []
    srv0 = proc_cpu_seconds(pid)
    for i in range(warmup + k):
        t0 = time.perf_counter_ns()
        a.send(command(i, f"message {name_b} {i:010d} {pad}"))
        b.received(b.wait_for(b'"type":"message"', deadline))
        b.send(command(i, f"message {name_a} {i:010d} {pad}"))
        a.received(a.wait_for(b'"type":"message"', deadline))
        if i >= warmup:
            rtts.append((time.perf_counter_ns() - t0) / 1000)
        # Between round trips, outside the time measured.
        now = time.perf_counter()
        a.ack_if_due(now)
        b.ack_if_due(now)
    for c in (a, b):
        c.ack_if_due()
    srv_cpu = proc_cpu_seconds(pid) - srv0
    # The sender's wait for its ok: from its command to the reply (which
    # waits for the message's commit), one message at a time.
    oks = []
    # Replies of the round trips may still be on their way: one marker
    # command's reply, and every reply before it is behind us.
    a.send(command(MARKER_ID, "whoelse"))
    a.wait_for(b'"id":%d,' % MARKER_ID, deadline)
    for i in range(warmup + k):
        t0 = time.perf_counter_ns()
        a.send(command(i, f"message {name_b} {i:010d} {pad}"))
        a.wait_for(b'"type":"reply"', deadline)
        if i >= warmup:
            oks.append((time.perf_counter_ns() - t0) / 1000)
        b.received(b.wait_for(b'"type":"message"', deadline))
        b.ack_if_due(time.perf_counter())
    for c in (a, b):
        c.sock.close()
    rtts.sort()
    oks.sort()
    return {"test": "latency", "transport": "ws" if ws_port else "tcp", "round_trips": len(rtts),
            "rtt_us_median": round(statistics.median(rtts), 1),
            "rtt_us_p99": round(pct(rtts, 99), 1),
            "rtt_us_min": round(rtts[0], 1), "rtt_us_max": round(rtts[-1], 1),
            "ok_us_median": round(statistics.median(oks), 1),
            "ok_us_p99": round(pct(oks, 99), 1),
            "server_cpu_s": round(srv_cpu, 3)}


def cmd_latency(a):
    print(json.dumps(run_latency(a.port, a.pid, a.k, a.warmup, a.payload, a.run_timeout,
                                 a.ws_port, a.first_user or 1)), flush=True)


def cmd_conns(a):
    eng = Engine(a.port, a.ws_port)
    rss0, cpu0 = proc_rss_kb(a.pid), proc_cpu_seconds(a.pid)
    marks = []
    login_times = []
    t0 = time.perf_counter()
    checkpoints = set(range(a.step, a.max + 1, a.step)) | {a.max}

    def progress(nready, conn):
        login_times.append(conn.t_ready - conn.t_start)
        if nready in checkpoints:
            marks.append({"clients": nready, "t_s": round(time.perf_counter() - t0, 3),
                          "server_rss_kb": proc_rss_kb(a.pid),
                          "server_cpu_s": round(proc_cpu_seconds(a.pid) - cpu0, 2)})

    conns = [Conn(f"u{a.first_user + i}", ws=bool(a.ws_port)) for i in range(a.max)]
    nready = eng.establish(conns, a.connect_window, t0 + a.run_timeout, progress)
    connect_s = time.perf_counter() - t0
    eng.settle(quiet=1.0)
    rss_settled = proc_rss_kb(a.pid)
    cpu_i0 = proc_cpu_seconds(a.pid)
    end = time.perf_counter() + a.idle_seconds
    while time.perf_counter() < end:
        eng.poll(0.1)
    idle_cpu = proc_cpu_seconds(a.pid) - cpu_i0
    # Per connection once idle: a server may shed per-connection state of
    # idle clients (greenchat ends idle writer greenlets after 2-4 s).
    rss = proc_rss_kb(a.pid)
    login_times.sort()
    print(json.dumps({
        "test": "conns", "transport": transport(a), "target": a.max, "ready": nready,
        "failure": next((c.dead for c in conns if c.dead), None),
        "connect_all_s": round(connect_s, 3),
        "logins_per_s": round(nready / connect_s, 1) if connect_s else None,
        "login_ms_median": round(1000 * statistics.median(login_times), 2) if login_times else None,
        "login_ms_p99": round(1000 * pct(login_times, 99), 2) if login_times else None,
        "server_rss_kb_baseline": rss0, "server_rss_kb_settled": rss_settled,
        "server_rss_kb_after": rss,
        "rss_kb_per_conn": round((rss - rss0) / nready, 2) if nready else None,
        "server_cpu_s_idle": round(idle_cpu, 3), "marks": marks,
    }), flush=True)
    eng.close_all()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True, help="server PID, for CPU and RSS")
    p.add_argument("--run-timeout", type=float, default=120.0)
    p.add_argument("--ws-port", type=int, default=None,
                   help="the web listener's port: clients speak WebSocket there (the fanout's "
                        "sender stays on TCP)")
    p.add_argument("--first-user", type=int, default=0,
                   help="accounts start at uF (latency: u1 when 0)")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fanout")
    f.add_argument("-n", type=int, default=100)
    f.add_argument("-m", type=int, default=10000)
    f.add_argument("--payload", type=int, default=60)
    f.add_argument("--window", type=int, default=0,
                   help="messages the sender may run ahead of the receivers (0: no limit)")
    f.add_argument("--connect-window", type=int, default=20)
    f.add_argument("--setup-timeout", type=float, default=120.0)
    f.add_argument("--no-acks", action="store_true",
                   help="receivers never acknowledge (to measure what acks cost)")
    lat = sub.add_parser("latency")
    lat.add_argument("-k", type=int, default=2000)
    lat.add_argument("--warmup", type=int, default=200)
    lat.add_argument("--payload", type=int, default=60)
    c = sub.add_parser("conns")
    c.add_argument("--max", type=int, default=10000)
    c.add_argument("--step", type=int, default=1000)
    c.add_argument("--connect-window", type=int, default=20)
    c.add_argument("--idle-seconds", type=float, default=6.0)
    a = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    {"fanout": cmd_fanout, "latency": cmd_latency, "conns": cmd_conns}[a.cmd](a)


if __name__ == "__main__":
    main()
