"""The greenchat terminal client.

Strategy: after login, two greenlets run side by side and never block each
other or the hub: `_receive` reads frames from the server and prints them as
they come; `_keyboard` reads typed lines and sends them. Whichever learns that
the session is over (a goodbye frame, a lost connection) sets `self.done` with
the exit status, and `run` returns it.

Typed lines are parsed with the shared command table: "local" commands (help)
are answered here; everything else goes to the server verbatim, which answers
unknown commands and bad arguments itself, so the server sees (and counts as
activity) everything the user types.
"""

import logging
import sys

import gevent
from gevent.event import AsyncResult, Event

from greenchat import PROTOCOL_VERSION, __version__, texts
from greenchat.commands import COMMANDS, LOCAL, parse_line
from greenchat.errors import GreenchatError, InvalidCommand, ProtocolError
from greenchat.transport import FrameConnection

log = logging.getLogger("greenchat.client")

HANDSHAKE_TIMEOUT = 10.0
# After asking to log out, how long to wait for the server's goodbye.
LOGOUT_WAIT = 5.0
# How long the keyboard waits for a command's reply before taking the next
# line: answers then come in the order the commands were typed.
REPLY_WAIT = 30.0


class Client:
    def __init__(self, config, console):
        self.config = config
        self.console = console
        self.conn = None
        self.user = None
        self.done = AsyncResult()
        self._next_id = 0
        self._answered = Event()
        self._answered.set()

    def run(self):
        """Connect, log in and chat; return the process exit status."""
        console = self.console
        try:
            self.conn = FrameConnection.connect(self.config.host, self.config.port,
                                                self.config.connect_timeout, self.config.max_frame)
        except OSError as exc:
            print(texts.cannot_connect(self.config.host, self.config.port,
                                       exc.strerror or str(exc) or type(exc).__name__),
                  file=sys.stderr)
            return 1
        try:
            self._hello()
            if not self._login():
                return 1
            return self._chat()
        except GreenchatError as exc:
            log.debug("session ended: %s", exc)
            console.show(texts.CONNECTION_LOST)
            return 1
        finally:
            self.conn.close()

    # Handshake and login ----------------------------------------------------

    def _expect(self, timeout=HANDSHAKE_TIMEOUT):
        frame = self.conn.read(timeout)
        if frame is None:
            raise ProtocolError("the server did not answer")
        if frame["type"] in ("error", "bye"):
            self.console.show(str(frame.get("text", "")))
            raise _Refused()
        return frame

    def _hello(self):
        self.conn.send({"type": "hello", "version": PROTOCOL_VERSION,
                        "client": f"greenchat-client {__version__}"})
        frame = self._expect()
        if frame["type"] != "hello":
            raise ProtocolError(f"expected hello, got {frame['type']!r}")

    def _login(self):
        console = self.console
        try:
            while True:
                console.prompt(texts.PROMPT_USERNAME)
                name = console.read_line()
                if name is None:
                    return False
                self.conn.send({"type": "username", "username": name.strip()})
                answer = self._expect(None)
                if answer.get("status") == "username":
                    console.show(answer["text"])
                    continue
                while True:
                    console.prompt(texts.PROMPT_PASSWORD)
                    password = console.read_secret()
                    if password is None:
                        return False
                    self.conn.send({"type": "password", "password": password})
                    answer = self._expect(None)
                    status = answer.get("status")
                    if "text" in answer:
                        console.show(answer["text"])
                    if status == "ok":
                        self.user = answer.get("user", name)
                        return True
                    if status != "password":
                        return False
        except _Refused:
            return False

    # The session ------------------------------------------------------------

    def _chat(self):
        receiver = gevent.spawn(self._receive)
        keyboard = gevent.spawn(self._keyboard)
        try:
            return self.done.get()
        except KeyboardInterrupt:
            # Ctrl-C: log out as cleanly as end of input does.
            keyboard.kill()
            self._request_logout()
            try:
                return self.done.get(timeout=LOGOUT_WAIT)
            except gevent.Timeout:
                return 1
        finally:
            keyboard.kill()
            receiver.kill()

    def _finish(self, status):
        if not self.done.ready():
            self.done.set(status)

    def _receive(self):
        show = self.console.show
        try:
            while True:
                frame = self.conn.read()
                kind = frame["type"]
                if kind == "message":
                    show(texts.message_line(frame.get("from", "?"), frame.get("text", "")))
                elif kind == "presence":
                    show(texts.presence_line(frame.get("user", "?"), bool(frame.get("online"))))
                elif kind == "reply":
                    for line in frame.get("lines") or ():
                        show(str(line))
                    if frame.get("id") == self._next_id:
                        self._answered.set()
                    self._prompt()
                elif kind == "bye":
                    show(str(frame.get("text", "")))
                    self._finish(0 if frame.get("reason") in ("logout", "idle") else 1)
                    return
                elif kind == "error":
                    show(str(frame.get("text", "")))
                    self._finish(1)
                    return
                else:
                    log.debug("ignoring unknown frame type %r", kind)
        except GreenchatError as exc:
            log.debug("receive ended: %s", exc)
            if not self.done.ready():
                show(texts.CONNECTION_LOST)
            self._finish(1)

    def _prompt(self):
        if self.console.interactive:
            self.console.out.write(texts.PROMPT)
            self.console.out.flush()

    def _keyboard(self):
        self._prompt()
        try:
            while True:
                line = self.console.read_line()
                if line is None:
                    self._request_logout()
                    gevent.sleep(LOGOUT_WAIT)
                    self._finish(1)
                    return
                if not line.strip():
                    self._prompt()
                    continue
                try:
                    spec, args = parse_line(line)
                except InvalidCommand:
                    spec, args = None, ()
                if spec is not None and spec.where == LOCAL:
                    getattr(self, "cmd_" + spec.name)(*args)
                    self._prompt()
                    continue
                self._send_command(line)
                self._answered.wait(REPLY_WAIT)
        except GreenchatError as exc:
            log.debug("keyboard ended: %s", exc)
            if not self.done.ready():
                self.console.show(texts.CONNECTION_LOST)
            self._finish(1)

    def _send_command(self, line):
        self._next_id += 1
        self._answered.clear()
        self.conn.send({"type": "command", "id": self._next_id, "line": line})

    def _request_logout(self):
        try:
            self._send_command("logout")
        except GreenchatError:
            self._finish(1)

    # Local commands ---------------------------------------------------------

    def cmd_help(self):
        """help"""
        width = max(len(spec.syntax) for spec in COMMANDS.values())
        for spec in COMMANDS.values():
            self.console.show(f"{spec.syntax.ljust(width)}  {spec.summary}")


class _Refused(Exception):
    """The server ended the login with a message already shown."""
