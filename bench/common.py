"""What the bench programs share: the greenchat server as a process and the
wait for its `listening on HOST:PORT` line (and its web client's), a
process's CPU seconds and RSS from /proc and the wait for it to go quiet,
the accounts file of the users a run logs in, and the frames that log one
in.

The standard library and greenchat's sans-IO frames and codec only: the load
generator (bench/loadgen.py), which runs without gevent, imports it too.
"""

import functools
import os
import re
import resource
import signal
import subprocess
import sys
import time

from greenchat import frames
from greenchat.codec import encode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GREENCHAT_SERVER_ROOT: another checkout's server, measured with this
# checkout's load generator (a before-and-after in one sitting).
SERVER_SCRIPT = os.path.join(os.environ.get("GREENCHAT_SERVER_ROOT", ROOT), "bin",
                             "greenchat-server")
# The password of every account a bench run writes.
PASSWORD = "pw"
# The hello's informative `client` member.
CLIENT = "greenchat-bench"
HELLO = encode(frames.hello(CLIENT))
LISTENING = re.compile(r"listening on [\d.]+:(\d+)")
WEB_CLIENT = re.compile(r"web client at https?://\S+:(\d+)/")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_fd_limit():
    """Open files up to the hard limit (a preexec_fn for the servers too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def write_credentials(path, names, password=PASSWORD, passwords=None, ids=None):
    """An accounts file for `names`: each with `password` unless `passwords`
    names another, and the account id `ids` gives it (the third field)."""
    passwords, ids = passwords or {}, ids or {}
    with open(path, "w") as f:
        f.write("".join(f"{name} {passwords.get(name, password)} {ids.get(name, '')}".rstrip()
                        + "\n" for name in names))


def login_frames(user, password=PASSWORD):
    """The bytes of a whole login: hello, username and password."""
    return HELLO + encode(frames.username(user)) + encode(frames.password(password))


def greenchat_command(credentials, data, *options, block_duration="60", timeout="3600"):
    """bin/greenchat-server's command line: port 0 on 127.0.0.1, and no web
    client unless `options` ask for one (a server from GREENCHAT_SERVER_ROOT
    may be older than --no-http)."""
    web = () if "--http-port" in options or os.environ.get("GREENCHAT_SERVER_ROOT") \
        else ("--no-http",)
    return [sys.executable, SERVER_SCRIPT, "0", block_duration, timeout, "--host", "127.0.0.1",
            "--credentials", credentials, "--data", data, *web, *options]


@functools.lru_cache(maxsize=None)
def _server_help():
    return subprocess.run([sys.executable, SERVER_SCRIPT, "--help"], capture_output=True,
                          text=True, timeout=30).stdout


def server_has_option(option):
    """True if bin/greenchat-server (of GREENCHAT_SERVER_ROOT, when set)
    takes `option`: an older checkout may not."""
    return option in _server_help()


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def poll(condition, timeout, interval=0.05, sleep=time.sleep):
    """condition()'s first true value, asked every `interval` s for up to
    `timeout` s; after that its last, false, value. A gevent program passes
    gevent.sleep as `sleep`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        sleep(interval)


def wait_listening(proc, log_path, timeout, after=0):
    """The port of the first `listening on HOST:PORT` line past the first
    `after` such lines of the log at `log_path` (stderr of `proc`), once it is
    written; None if `proc` ends first or `timeout` seconds pass."""
    def started():
        return LISTENING.findall(read_text(log_path))[after:] or proc.poll() is not None

    ports = poll(started, timeout)
    return int(ports[0]) if isinstance(ports, list) else None


class Server:
    """A server process started in `workdir`, its stderr in NAME.log there;
    `port` read from its 'listening on HOST:PORT' line."""

    def __init__(self, name, args, workdir, timeout=20, preexec_fn=raise_fd_limit):
        self.name = name
        self.log_path = os.path.join(workdir, f"{name}.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=preexec_fn, cwd=workdir)
        self.port = wait_listening(self.proc, self.log_path, timeout)
        if self.port is None:
            tail = self.log()[-2000:]
            self.stop()
            raise RuntimeError(f"{name} did not start (log: {self.log_path}): {tail}")

    @property
    def pid(self):
        return self.proc.pid

    def web_port(self, timeout=10):
        """The port of its `web client at URL` line (a server started with
        --http-port); RuntimeError if none comes."""
        def found():
            return WEB_CLIENT.findall(self.log()) or self.proc.poll() is not None

        ports = poll(found, timeout)
        if not isinstance(ports, list):
            raise RuntimeError(f"{self.name} has no web client (log: {self.log_path})")
        return int(ports[0])

    def log(self):
        return read_text(self.log_path)

    def stop(self):
        """SIGTERM, then SIGKILL after 20 s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def proc_cpu_seconds(pid):
    """User plus system CPU seconds process `pid` has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_quiet(pid, cpu_s=0.02, interval=0.25, timeout=15.0):
    """Wait until process `pid` uses under `cpu_s` CPU seconds in
    `interval` (at most `timeout` s): what one run left it doing (sessions
    ending, the store writing) is over before the next is timed. True if it
    went quiet."""
    deadline = time.monotonic() + timeout
    last = proc_cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = proc_cpu_seconds(pid)
        if now - last < cpu_s:
            return True
        last = now
    return False


def proc_open_files(pid):
    """How many files (sockets included) process `pid` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kb(pid):
    """Process `pid`'s resident set in KiB (-1 if /proc does not say)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1
