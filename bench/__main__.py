"""greenchat's benchmark suite: `python -m bench` (or `bench/run`).

Starts each server under test as a separate process on 127.0.0.1 (port 0),
drives it from a separate load-generator process (bench/loadgen.py), and
prints one table; the figures also go to bench/results/latest.json.

Servers: `greenchat` (bin/greenchat-server), `threaded` (bench/threaded_server.py:
the original design, a thread per connection and condition variables, for the
ratio), `floor` (bench/floor_relay.py: the least a gevent server speaking the
same JSON lines can do; round trip only), and `ngircd` (the C IRC server in
../shared/anchors, driven by its own load generator) when it is installed:
figures only compare within one run.

Workloads: fan-out to 100 and 1000 receivers, 1-to-1 round trips, and idle
logged-in connections. Every run is bounded in count and time.

greenchat's web listener (`--http-port 0`) adds WebSocket rows: fan-out to
1000 WebSocket receivers (a TCP sender broadcasting) and a WebSocket round
trip, each run right after its TCP twin against the same server process,
with accounts of their own; and idle WebSocket clients, on a fresh process
of their own, as RSS per connection needs a heap no earlier run has grown.
Servers that share a process get `--resume-window 0`, so the clients of one
run leave no sessions behind for the next to deliver to.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.common import (
    ROOT,
    Server,
    greenchat_command,
    raise_fd_limit,
    server_has_option,
    wait_quiet,
    write_credentials,
)

HERE = os.path.dirname(os.path.abspath(__file__))
ANCHOR = os.path.join(ROOT, os.pardir, "shared", "anchors", "ngircd")
LOADGEN = os.path.join(HERE, "loadgen.py")


def start_greenchat(workdir, credentials, web=False):
    """`web`: with its web listener on any free port, and sessions that
    end when their connection does (runs share the process)."""
    # A fresh store each run: what one run's receivers left unacknowledged
    # would be the next run's backlog.
    data = os.path.join(workdir, "greenchat-data")
    shutil.rmtree(data, ignore_errors=True)
    web_options = ("--http-port", "0", "--resume-window", "0") if web else ()
    return Server("greenchat", greenchat_command(
        credentials, data,
        "--mailbox-limit", "1000000", "--mailbox-limit-bytes", str(1 << 30),
        "--command-rate", "0", "--max-per-address", "100000",
        "--max-connections", "100000", *web_options), workdir)


def start_greenchat_web(workdir, credentials):
    return start_greenchat(workdir, credentials, web=True)


def start_threaded(workdir, credentials):
    return Server("threaded", [
        sys.executable, os.path.join(HERE, "threaded_server.py"), "--port", "0",
        "--credentials", credentials], workdir)


def start_floor(workdir, credentials):
    return Server("floor", [sys.executable, os.path.join(HERE, "floor_relay.py"), "--port", "0"],
                  workdir)


def run_json(cmd, timeout, tail, **kwargs):
    """Run `cmd`; its last line of output as JSON, or {"error": the last
    `tail` characters of what it said} if it failed."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip()[-tail:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadgen(server, args, timeout, ws_first_user=None):
    """Run bench/loadgen.py against `server`; with `ws_first_user`, its
    clients speak WebSocket and its accounts start at that number."""
    cmd = [sys.executable, LOADGEN, "--port", str(server.port), "--pid", str(server.pid),
           "--run-timeout", str(timeout)]
    if ws_first_user is not None:
        cmd += ["--ws-port", str(server.web_port()), "--first-user", str(ws_first_user)]
    return run_json(cmd + args, timeout + 120, 500, preexec_fn=raise_fd_limit)


def then_ws(server, args, timeout, first_user):
    """The same run over WebSocket, on the same server once it is quiet."""
    if not wait_quiet(server.pid):
        print(f"{server.name} still busy before the WebSocket run", file=sys.stderr)
    return loadgen(server, args, timeout, ws_first_user=first_user)


def ngircd_available():
    return shutil.which("ngircd") or os.path.exists("/usr/sbin/ngircd")


def run_ngircd(plan, timeout):
    """The anchor: ngIRCd driven by its own ircbench.py, same workloads."""
    results = {}
    start = os.path.join(ANCHOR, "start_ngircd.sh")
    stop = os.path.join(ANCHOR, "stop_ngircd.sh")
    subprocess.run(["bash", start], capture_output=True, timeout=30)
    try:
        with open(os.path.join(ANCHOR, "ngircd.pid")) as f:
            pid = f.read().strip()
        bench = [sys.executable, os.path.join(ANCHOR, "ircbench.py"), "--pid", pid,
                 "--run-timeout", str(timeout)]
        for key, n, m in plan["fanout"]:
            results[key] = run_json(bench + ["fanout", "-n", str(n), "-m", str(m),
                                             "--window", "0"], timeout + 60, 300)
        results["latency"] = run_json(bench + ["latency", "-k", str(plan["latency_k"])],
                                      timeout + 60, 300)
        if plan["conns"]:
            results["conns"] = run_json(bench + ["conns", "--max", str(plan["conns"]),
                                                 "--connect-window", "8", "--idle-seconds", "3"],
                                        timeout + 120, 300, preexec_fn=raise_fd_limit)
    finally:
        subprocess.run(["bash", stop], capture_output=True, timeout=30)
    return results


def run_chat_server(start, workdir, credentials, plan, timeout, with_conns=True,
                    with_fanout=True, ws=False):
    """`ws`: the server has a web listener; its WebSocket runs follow."""
    results = {}
    for key, n, m in plan["fanout"] if with_fanout else ():
        server = start(workdir, credentials)
        try:
            args = ["fanout", "-n", str(n), "-m", str(m)]
            results[key] = loadgen(server, args, timeout)
            if ws and key in plan["ws_fanout"]:
                # Sender and receivers past the TCP run's u0..uN.
                results[f"ws_{key}"] = then_ws(server, args, timeout, n + 1)
        finally:
            server.stop()
    server = start(workdir, credentials)
    try:
        args = ["latency", "-k", str(plan["latency_k"])]
        results["latency"] = loadgen(server, args, timeout)
        if ws:
            results["ws_latency"] = then_ws(server, args, timeout, 3)
    finally:
        server.stop()
    if with_conns and plan["conns"]:
        server = start(workdir, credentials)
        try:
            results["conns"] = loadgen(server, ["conns", "--max", str(plan["conns"]),
                                                "--step", str(max(1, plan["conns"] // 5))],
                                       timeout * 3)
        finally:
            server.stop()
    if ws and with_conns and plan["ws_conns"]:
        server = start(workdir, credentials)
        try:
            results["ws_conns"] = loadgen(server, ["conns", "--max", str(plan["ws_conns"]),
                                                   "--step", str(max(1, plan["ws_conns"] // 5))],
                                          timeout * 3, ws_first_user=0)
        finally:
            server.stop()
    return results


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(all_results):
    rows = [
        ("fan-out N=100: deliveries/s", "fanout100", "deliveries_per_s", ",.0f"),
        ("fan-out N=100: server CPU-s per M", "fanout100", "server_cpu_s_per_M_deliveries", ".3f"),
        ("fan-out N=1000: deliveries/s", "fanout1000", "deliveries_per_s", ",.0f"),
        ("fan-out N=1000: server CPU-s per M", "fanout1000", "server_cpu_s_per_M_deliveries",
         ".3f"),
        ("fan-out N=1000 WS: deliveries/s", "ws_fanout1000", "deliveries_per_s", ",.0f"),
        ("fan-out N=1000 WS: server CPU-s per M", "ws_fanout1000",
         "server_cpu_s_per_M_deliveries", ".3f"),
        ("round trip: median us", "latency", "rtt_us_median", ".1f"),
        ("round trip: p99 us", "latency", "rtt_us_p99", ".1f"),
        ("round trip WS: median us", "ws_latency", "rtt_us_median", ".1f"),
        ("round trip WS: p99 us", "ws_latency", "rtt_us_p99", ".1f"),
        ("sender's ok: median us", "latency", "ok_us_median", ".1f"),
        ("sender's ok: p99 us", "latency", "ok_us_p99", ".1f"),
        ("idle clients held", "conns", "ready", ",d"),
        ("login rate /s", "conns", "logins_per_s", ",.0f"),
        ("RSS KB per connection", "conns", "rss_kb_per_conn", ".1f"),
        ("idle WS clients held", "ws_conns", "ready", ",d"),
        ("WS login rate /s", "ws_conns", "logins_per_s", ",.0f"),
        ("RSS KB per WS connection", "ws_conns", "rss_kb_per_conn", ".1f"),
    ]
    servers = list(all_results)
    lines = ["| workload | " + " | ".join(servers) + " |",
             "|---|" + "---|" * len(servers)]
    for label, key, field, spec in rows:
        cells = []
        for name in servers:
            result = all_results[name].get(key) or {}
            if key == "conns" and name == "ngircd":
                field_name = {"logins_per_s": "connects_per_s"}.get(field, field)
            else:
                field_name = field
            cells.append("error" if "error" in result else fmt(result.get(field_name), spec))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gc, th = all_results.get("greenchat", {}), all_results.get("threaded", {})
    for key in ("fanout100", "fanout1000"):
        a = (gc.get(key) or {}).get("deliveries_per_s")
        b = (th.get(key) or {}).get("deliveries_per_s")
        if a and b:
            lines.append(f"\ngreenchat/threaded on {key}: {a / b:.1f}x")
    a = (gc.get("ws_fanout1000") or {}).get("deliveries_per_s")
    b = (gc.get("fanout1000") or {}).get("deliveries_per_s")
    if a and b:
        lines.append(f"\ngreenchat WebSocket/TCP on fanout1000: {a / b:.2f}x (target >= 0.5x)")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--servers", default="greenchat,threaded,floor,ngircd",
                   help="comma-separated: greenchat, threaded, floor, ngircd (skipped if not "
                        "installed)")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--conns", type=int, default=10000, help="idle clients to try (0: skip)")
    p.add_argument("--ws-conns", type=int, default=3000,
                   help="idle WebSocket clients to try (0: skip)")
    p.add_argument("--no-ws", action="store_true", help="no WebSocket rows")
    p.add_argument("--timeout", type=float, default=120.0, help="bound per run, seconds")
    p.add_argument("--out", default=os.path.join(HERE, "results", "latest.json"))
    a = p.parse_args(argv)
    raise_fd_limit()
    plan = {"fanout": [("fanout100", 100, 20000), ("fanout1000", 1000, 2000)],
            "latency_k": 2000, "conns": a.conns, "ws_fanout": ["fanout1000"],
            "ws_conns": a.ws_conns}
    if a.quick:
        plan = {"fanout": [("fanout100", 100, 500), ("fanout1000", 1000, 50)],
                "latency_k": 200, "conns": min(a.conns, 500), "ws_fanout": ["fanout1000"],
                "ws_conns": min(a.ws_conns, 300)}
    names = [s.strip() for s in a.servers.split(",") if s.strip()]
    workdir = tempfile.mkdtemp(prefix="greenchat-bench-")
    credentials = os.path.join(workdir, "credentials.txt")
    # The WebSocket fan-out's accounts follow the TCP one's: 2 x 1001.
    write_credentials(credentials, [f"u{i}" for i in range(
        max(plan["conns"], plan["ws_conns"], 2 * 1001) + 2)])
    results = {}
    try:
        for name in names:
            print(f"== {name}", file=sys.stderr, flush=True)
            if name == "greenchat":
                # An older server (GREENCHAT_SERVER_ROOT) may have no web listener.
                ws = not a.no_ws and server_has_option("--http-port")
                if not ws and not a.no_ws:
                    print("the server has no --http-port: no WebSocket rows", file=sys.stderr)
                results[name] = run_chat_server(start_greenchat_web if ws else start_greenchat,
                                                workdir, credentials, plan, a.timeout, ws=ws)
            elif name == "threaded":
                # A thread per connection: 10,000 of them is not the point here.
                results[name] = run_chat_server(start_threaded, workdir, credentials, plan,
                                                a.timeout, with_conns=False)
            elif name == "floor":
                results[name] = run_chat_server(start_floor, workdir, credentials, plan,
                                                a.timeout, with_conns=False, with_fanout=False)
            elif name == "ngircd":
                if ngircd_available() and os.path.isdir(ANCHOR):
                    results[name] = run_ngircd(plan, a.timeout)
                else:
                    print("ngircd not installed (apt-get install ngircd); skipped",
                          file=sys.stderr)
            else:
                p.error(f"unknown server {name!r}")
            print(json.dumps(results.get(name), indent=1), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "plan": plan,
                   "results": results}, f, indent=1)
    print(table(results))


if __name__ == "__main__":
    main()
