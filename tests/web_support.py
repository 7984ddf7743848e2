"""Support for the browser tests (tests/test_web_browser.py): the server and
the terminal client as processes, raw HTTP and WebSocket requests, and one
user's page in Chromium.

Playwright's sync API runs its own event loop on greenlets, so nothing here
runs gevent in the test process: the server is bin/greenchat-server as a
process, read through its log, and the terminal client bin/greenchat-client
as a piped process whose stdout a thread reads. Every wait is bounded.
"""

import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from bench.common import LISTENING, read_text
from greenchat import texts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_SCRIPT = os.path.join(ROOT, "bin", "greenchat-server")
CLIENT_SCRIPT = os.path.join(ROOT, "bin", "greenchat-client")
CHROMIUM = os.environ.get("GREENCHAT_CHROMIUM", "/usr/bin/chromium")
WEB = re.compile(r"web client at (https?)://([\d.]+):(\d+)/")
# The local time stamp that begins every line of the conversation pane.
STAMP = r"\[\d\d:\d\d\] "
# How long a wait for something the other side does may take, in seconds.
WAIT = 5

ACCOUNTS = {"alice": "alice*pw", "bob": "bob&pw", "carol": "carol#pw", "dave": "dave!pw",
            "mallory": "m4llory?"}


def browser_missing():
    """Why the browser tests cannot run here, or None when they can."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("no playwright package (pip install '.[test]')")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return "; ".join(missing) or None


def wait_for(condition, timeout, interval=0.02):
    """condition()'s first true value, asked for up to `timeout` seconds; then its last."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


# The server -------------------------------------------------------------------------

class WebServer:
    """bin/greenchat-server as a process on 127.0.0.1, its accounts ACCOUNTS
    and its data in `directory`, chat and web ports picked free at the first
    start; start() again (after kill() or stop()) is the same server on the
    same ports and data: a restart."""

    def __init__(self, directory, *options, block_duration=60, timeout=600):
        self.directory = str(directory)
        self.options = options
        self.block_duration, self.timeout = block_duration, timeout
        self.credentials = os.path.join(self.directory, "credentials.txt")
        with open(self.credentials, "w") as f:
            f.write("".join(f"{name} {password}\n" for name, password in ACCOUNTS.items()))
        os.chmod(self.credentials, 0o600)
        self.log_path = os.path.join(self.directory, "server.log")
        self.port = self.http_port = 0
        self.proc = None

    def start(self):
        seen = len(WEB.findall(self.log()))
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, SERVER_SCRIPT, str(self.port), str(self.block_duration),
                 str(self.timeout), "--host", "127.0.0.1", "--http-port", str(self.http_port),
                 "--credentials", self.credentials, "--data", os.path.join(self.directory, "data"),
                 *self.options],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        # The web line comes after the chat listener's: both are written then.
        started = wait_for(lambda: len(WEB.findall(self.log())) > seen
                           or self.proc.poll() is not None, 15)
        if not started or self.proc.poll() is not None:
            self.kill()
            raise AssertionError(f"server did not start with a web client: {self.log()[-3000:]}")
        log = self.log()
        self.port = int(LISTENING.findall(log)[-1])
        self.http_port = int(WEB.findall(log)[-1][2])
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}/"

    def log(self):
        return read_text(self.log_path)

    def kill(self):
        """kill -9, no warning."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def stop(self):
        """SIGTERM; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            self.kill()


# The terminal client ------------------------------------------------------------------

class Terminal:
    """bin/greenchat-client as a piped process, logged in as `user`: its
    stdin takes the lines typed, and a thread reads its stdout, exactly the
    protocol's texts, a line per event, into `lines`."""

    def __init__(self, server, user, *options, welcome=True):
        self.user = user
        self.proc = subprocess.Popen(
            [sys.executable, CLIENT_SCRIPT, "127.0.0.1", str(server.port), *options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.type(user)
        self.type(ACCOUNTS[user])
        if welcome:
            self.expect(texts.WELCOME)

    def _read(self):
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()

    def type(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def count(self, line):
        with self._changed:
            return self.lines.count(line)

    def expect(self, line, count=1, timeout=WAIT):
        """Wait until `line` has been printed `count` times (at least)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.lines.count(line) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.user}'s terminal never printed {line!r} "
                                         f"{count} time(s); it printed {self.lines[-15:]!r}")
                self._changed.wait(left)

    def close(self):
        """End of input (a logout), then the process is gone."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


# Raw HTTP ---------------------------------------------------------------------------

def _read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def http_get(port, target, headers=()):
    """GET `target` sent exactly as given (no client normalizes it): status,
    headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall("\r\n".join([f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}",
                                  "Connection: close", *headers, "", ""]).encode("latin-1"))
        status, head, body = _read_head(sock)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return status, head, body


class WebSocket:
    """A WebSocket upgrade of /ws by hand: `status` and `headers` of the
    answer; after a 101, send() and receive() text messages."""

    def __init__(self, port, origin=None, host=None, first=None):
        """`first`: a text message sent in the same packet as the request,
        before any answer (a race the browser can run into)."""
        self.key = base64.b64encode(os.urandom(16)).decode()
        request = ["GET /ws HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
                   "Upgrade: websocket", "Connection: Upgrade",
                   f"Sec-WebSocket-Key: {self.key}", "Sec-WebSocket-Version: 13"]
        if origin is not None:
            request.append(f"Origin: {origin}")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.sock.sendall(("\r\n".join(request) + "\r\n\r\n").encode("latin-1")
                          + (self._frame(first) if first is not None else b""))
        self.status, self.headers, self._buffer = _read_head(self.sock)

    def accept_is_right(self):
        digest = hashlib.sha1((self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        return self.headers.get("sec-websocket-accept") == base64.b64encode(digest).decode()

    def send(self, text):
        self.sock.sendall(self._frame(text))

    @staticmethod
    def _frame(text):
        """A text message as a browser sends it: one frame, masked."""
        payload = text.encode()
        mask = os.urandom(4)
        if len(payload) < 126:
            head = struct.pack("!BB", 0x81, 0x80 | len(payload))
        else:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def _take(self, size):
        while len(self._buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError("the server closed the WebSocket")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def receive(self):
        """The next message: (opcode, payload bytes); frames from the server are unmasked."""
        first, second = self._take(2)
        assert not second & 0x80, "a server frame is masked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._take(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._take(8))[0]
        return first & 0x0F, self._take(size)

    def receive_frame(self):
        """The next protocol frame (a text message's JSON), pongs skipped."""
        while True:
            opcode, payload = self.receive()
            if opcode == 1:
                return json.loads(payload)

    def login(self, user):
        """hello, username and password (no p2p: a browser has no port); the login frame."""
        for frame in [{"type": "hello", "version": 1, "client": "greenchat-tests"},
                      {"type": "username", "username": user},
                      {"type": "password", "password": ACCOUNTS[user]}]:
            self.send(json.dumps(frame))
        while True:
            frame = self.receive_frame()
            if frame["type"] == "login" and frame.get("text") is not None \
                    or frame["type"] == "login" and frame.get("status") != "password":
                return frame

    def close(self):
        self.sock.close()


# A user's page ---------------------------------------------------------------------

class WebUser:
    """One person's page in a context of its own: every dialog the page
    opens is recorded (and dismissed), so are its uncaught errors and
    console errors. Elements are found as a person finds them: by their
    labels and roles."""

    def __init__(self, browser, url, viewport=None, withhold_acks=False, clock=None,
                 timezone_id=None):
        """`withhold_acks`: the page's WebSocket passes through a route that
        drops its `ack` frames (counted in `withheld`), so the server keeps
        what the page shows as not acknowledged. `clock`: the page's time
        starts there (a datetime) and runs on; `timezone_id`: its zone."""
        options = {"timezone_id": timezone_id} if timezone_id else {}
        self.context = browser.new_context(viewport=viewport or {"width": 1280, "height": 800},
                                           **options)
        self.page = self.context.new_page()
        if clock is not None:
            self.page.clock.install(time=clock)
        self.withheld = 0
        if withhold_acks:
            self.page.route_web_socket(re.compile(r"/ws$"), self._withhold_acks)
        self.dialogs, self.errors, self.console_errors = [], [], []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("console", lambda message: message.type == "error"
                     and self.console_errors.append(message.text))
        self.page.goto(url)
        self.log = self.page.get_by_role("log", name="Conversation")
        self.input = self.page.get_by_label("Message", exact=True)
        self.online = self.page.get_by_role("list", name="Online users")
        self.username = self.page.get_by_label("Username", exact=True)
        self.password = self.page.get_by_label("Password", exact=True)
        self.login_button = self.page.get_by_role("button", name="Log in")
        self.alert = self.page.get_by_role("alert")

    def _withhold_acks(self, route):
        server = route.connect_to_server()

        def from_page(message):
            if isinstance(message, str) and json.loads(message).get("type") == "ack":
                self.withheld += 1
            else:
                server.send(message)

        route.on_message(from_page)

    def wait(self, condition, timeout=WAIT):
        """condition()'s first true value, waiting up to `timeout` s inside
        the page, so Playwright runs this process's handlers meanwhile (a
        time.sleep would hold them); after that its last."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value or time.monotonic() > deadline:
                return value
            self.page.wait_for_timeout(20)

    def _dialog(self, dialog):
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def login(self, user, password=None, welcome=True):
        self.username.fill(user)
        self.password.fill(ACCOUNTS[user] if password is None else password)
        self.login_button.click()
        if welcome:
            self.expect_line(texts.WELCOME)

    def type(self, line):
        """Type a line into the input and press Enter."""
        self.input.fill(line)
        self.input.press("Enter")

    def lines(self):
        """The conversation pane's lines, each its text as shown."""
        return self.log.locator(":scope > *").all_text_contents()

    def bodies(self):
        """The lines without their time stamps."""
        return [re.sub("^" + STAMP, "", line) for line in self.lines()]

    def line(self, body, stamped=True):
        """The lines that show exactly `body` (after the time stamp)."""
        pattern = "^" + (STAMP if stamped else "") + re.escape(body) + "$"
        return self.log.locator(":scope > *").filter(has_text=re.compile(pattern))

    def expect_line(self, body, count=1, timeout=WAIT):
        """Wait until the pane shows `body` as exactly `count` lines."""
        from playwright.sync_api import expect
        try:
            expect(self.line(body)).to_have_count(count, timeout=timeout * 1000)
        except AssertionError as error:
            raise AssertionError(f"{body!r} not shown {count} time(s) in {timeout} s; the pane "
                                 f"ends {self.lines()[-15:]!r}\n{error}") from None

    def count(self, body):
        return self.line(body).count()

    def online_names(self):
        return sorted(self.online.get_by_role("button").all_text_contents())

    def problems(self):
        """What the page did that it never should: dialogs, uncaught errors,
        Content-Security-Policy violations."""
        return (self.dialogs + self.errors
                + [text for text in self.console_errors if "Content Security Policy" in text])

    def close(self):
        self.context.close()
