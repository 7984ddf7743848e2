"""What TLS costs the server: `python -m bench.tls`.

Starts bin/greenchat-server twice as its own process on 127.0.0.1, plain and
with a certificate from greenchat-admin mkcert, and drives each from this
process with gevent clients (TLS sockets from greenchat's own tls.py):

- logins: L clients connect, shake hands and log in, 20 at a time:
  logins/s and server CPU-ms per login;
- fan-out: N receivers, one sender broadcasting M messages (at most W
  unanswered): deliveries/s at the receivers and server CPU-s per million
  deliveries.

The clients share one process with both cores' other work, so deliveries/s
is bounded by them too; server CPU per delivery is the figure to compare.
"""

import argparse
import os
import shutil
import tempfile
import time

import gevent
from gevent import socket
from gevent.pool import Pool

from bench.common import (
    Server,
    greenchat_command,
    login_frames,
    poll,
    proc_cpu_seconds,
    proc_open_files,
    write_credentials,
)
from greenchat import certs, frames, tls
from greenchat.codec import encode


class Client:
    def __init__(self, port, name, context):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        if context is not None:
            sock = tls.connect(sock, context, 30, server_hostname="127.0.0.1")
        sock.settimeout(60)
        self.sock = sock
        self.buffer = b""
        sock.sendall(login_frames(name))
        self.until(b'"status":"ok"')

    def until(self, needle):
        while needle not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed")
            self.buffer += data
        self.buffer = self.buffer.split(needle, 1)[1]


def count_lines(client, expected, done):
    seen = client.buffer.count(b"\n")
    while seen < expected:
        data = client.sock.recv(262144)
        if not data:
            break
        seen += data.count(b"\n")
    done.append(time.perf_counter())


def run(port, pid, context, logins, n, m, window):
    result = {}
    pool = Pool(20)
    files0 = proc_open_files(pid)
    cpu0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    clients = list(pool.imap(lambda i: Client(port, f"u{i}", context), range(logins)))
    elapsed, cpu = time.perf_counter() - t0, proc_cpu_seconds(pid) - cpu0
    result["logins_per_s"] = logins / elapsed
    result["cpu_ms_per_login"] = 1000 * cpu / logins
    for c in clients:
        c.sock.close()
    # Until the server has let them go (bounded: then on, as if it had).
    poll(lambda: proc_open_files(pid) <= files0, 30, 0.01, gevent.sleep)

    receivers = list(pool.imap(lambda i: Client(port, f"r{i}", context), range(n)))
    sender = Client(port, "sender", context)
    for r in receivers:
        # The sender's arrival is the last presence notice a receiver gets.
        r.until(b'"user":"sender"')
        r.buffer = b""
        r.sock.settimeout(None)
        try:
            r.sock.setblocking(False)
            while r.sock.recv(262144):
                pass
        except (BlockingIOError, OSError):
            pass
        r.sock.setblocking(True)
    done = []
    readers = [gevent.spawn(count_lines, r, m, done) for r in receivers]
    padding = "x" * 40
    cpu0, t0 = proc_cpu_seconds(pid), time.perf_counter()
    answered = 0
    for i in range(m):
        sender.sock.sendall(encode(frames.command(i, f"broadcast {i:08d} {padding}")))
        while i - answered >= window:
            sender.until(b'"type":"reply"')
            answered += 1
    gevent.joinall(readers, timeout=120)
    elapsed = max(done) - t0 if done else float("nan")
    cpu = proc_cpu_seconds(pid) - cpu0
    result["deliveries_per_s"] = n * m / elapsed
    result["cpu_s_per_M"] = cpu / (n * m) * 1e6
    for c in receivers + [sender]:
        c.sock.close()
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logins", type=int, default=500)
    p.add_argument("-n", type=int, default=100)
    p.add_argument("-m", type=int, default=2000)
    p.add_argument("--window", type=int, default=50)
    a = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="greenchat-tls-bench-")
    try:
        credentials = os.path.join(work, "credentials.txt")
        write_credentials(credentials, [f"u{i}" for i in range(a.logins)]
                          + [f"r{i}" for i in range(a.n)] + ["sender"])
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        certs.write_pair(*certs.make_pair("localhost"), cert, key)
        rows = {}
        for label, extra, context in (
                ("plain", [], None),
                ("TLS", ["--tls-cert", cert, "--tls-key", key], tls.client_context(cert))):
            server = Server(label, greenchat_command(
                credentials, os.path.join(work, f"data-{label}"), "--command-rate", "0",
                "--max-per-address", "100000", *extra), work)
            try:
                rows[label] = run(server.port, server.pid, context, a.logins, a.n, a.m, a.window)
            finally:
                server.stop()
        print(f"| greenchat, {a.n} receivers | plain | TLS |")
        print("|---|---|---|")
        for key, title, spec in (("logins_per_s", "logins/s", ",.0f"),
                                 ("cpu_ms_per_login", "server CPU-ms per login", ".2f"),
                                 ("deliveries_per_s", "fan-out deliveries/s", ",.0f"),
                                 ("cpu_s_per_M", "server CPU-s per M deliveries", ".3f")):
            print(f"| {title} | {rows['plain'][key]:{spec}} | {rows['TLS'][key]:{spec}} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
