"""The greenchat terminal client.

Strategy: after login, greenlets run side by side and never block each other
or the hub: `_receive` reads frames from the server and prints them as they
come; `_keyboard` reads typed lines and sends them; the peer listener accepts
private links, and each private link is read by a greenlet of its own.
Whichever learns that the session is over (a goodbye frame, a lost
connection) sets `self.done` with the exit status, and `run` returns it.
Private links are closed on every way out, so the peer always hears of it.

Typed lines are parsed with the shared command table: "local" commands (help)
are answered here, "peer" commands (private, stopprivate) go over the private
links; everything else goes to the server verbatim, which answers unknown
commands and bad arguments itself, so the server sees (and counts as
activity) everything the user types.

Nothing from the network reaches a screen as it came: console.show escapes
every line (console.visible), and the lines printed to stderr and logged
pass through the same function.

Every member read from a frame is checked for its type where it is read
(the codec guarantees only a string `type`), by one rule:
- The frames that open and close the session (`hello`, `login`, `bye`,
  `error`) must be right: a member of the wrong type, a hello of another
  version, a login status the client does not know, or a frame other than
  the one the handshake expects is a protocol error, and the session ends as
  a lost connection (`Connection to server lost`, exit 1).
- The frames of a session (`message`, `presence`, `reply`, `private_offer`,
  `private_stop`, and a peer's `private`) are taken as far as they make
  sense: a member of the wrong type counts as absent. A frame that means
  nothing without it is ignored (a message without a string text, presence
  without a name and a boolean, an offer without its token, a stop without
  its user); a reply shows the strings among its lines and answers no
  command without an integer id; a link offer with a host, port or token of
  the wrong kind fails as unreachable; a sender that is not a string shows
  as `?`. Unknown frame types are ignored, on server and peer links alike.
- The last line of defence is for bugs, not frames: an exception nobody
  expected in the greenlets reading the server, the keyboard or a private
  link (or in the login) is logged with its traceback and ends the session
  as a lost connection, through the same `finally` that gives the terminal
  back, so the client never hangs with a dead greenlet.
"""

import logging
import signal
import sys
from contextlib import contextmanager

import gevent
from gevent.event import AsyncResult, Event

from greenchat import __version__, commands, frames, texts, tls
from greenchat.client import peer
from greenchat.client.console import default_history_path, visible
from greenchat.commands import COMMANDS, parse_line
from greenchat.errors import GreenchatError, InvalidCommand, ProtocolError, TLSError
from greenchat.transport import FrameConnection

log = logging.getLogger("greenchat.client")

HANDSHAKE_TIMEOUT = 10.0
# After asking to log out, how long to wait for the server's goodbye.
LOGOUT_WAIT = 5.0
# How long the keyboard waits for a command's reply before taking the next
# line: answers then come in the order the commands were typed.
REPLY_WAIT = 30.0
# Names remembered for completion, at most (a server can list many).
MAX_SEEN_USERS = 10_000
# The largest frame taken from the server: a reply can list every user (a
# `whoelse` of 10,000 names of 21 characters is 240 KB). Peer links keep
# config.max_frame.
SERVER_MAX_FRAME = 16 * 1024 * 1024


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
        self.links = {}          # peer name -> PeerLink
        self.listener = None
        self.seen_users = set()  # names Tab completes
        self._asked = None       # the spec of the command whose answer is awaited
        self._on = {"message": self._on_message, "presence": self._on_presence,
                    "reply": self._on_reply, "private_offer": self._on_offer,
                    "private_stop": self._on_private_stop, "bye": self._on_end,
                    "error": self._on_end}
        self.handlers = {commands.PRIVATE: self.cmd_private,
                          commands.STOPPRIVATE: self.cmd_stopprivate,
                          commands.HELP: self.cmd_help}
        # Built before connecting, so a bad --ca file is a usage error.
        self.tls_context = (tls.client_context(config.ca, config.insecure)
                            if config.tls else None)

    def run(self):
        """Connect, log in and chat; return the process exit status."""
        console = self.console
        config = self.config
        try:
            self.conn = FrameConnection.connect(config.host, config.port, config.connect_timeout,
                                                SERVER_MAX_FRAME, tls_context=self.tls_context)
        except TLSError as exc:
            explain = texts.certificate_refused if exc.verify else texts.tls_failed
            # The reason may quote the server's certificate.
            print(visible(explain(config.host, config.port, exc.reason)), file=sys.stderr)
            return 1
        except OSError as exc:
            print(visible(texts.cannot_connect(config.host, config.port,
                                               exc.strerror or str(exc) or type(exc).__name__)),
                  file=sys.stderr)
            return 1
        try:
            self._hello()
            self._listen()
            if not self._login():
                return 1
            return self._chat()
        except _Refused:
            return 1         # the server said why; _expect showed it
        except GreenchatError as exc:
            log.debug("session ended: %s", exc)
            console.show(texts.CONNECTION_LOST)
            return 1
        except Exception:
            log.exception("unexpected error during login; ending the session")
            console.show(texts.CONNECTION_LOST)
            return 1
        finally:
            if self.listener is not None:
                self.listener.stop()
            self.conn.close()

    # Handshake and login ----------------------------------------------------

    def _expect(self, kind=None, timeout=HANDSHAKE_TIMEOUT):
        """The next frame, of type `kind`; an error or bye frame is shown and
        ends the login (_Refused)."""
        frame = self.conn.read(timeout)
        if frame is None:
            raise ProtocolError("the server did not answer")
        if frame["type"] in ("error", "bye"):
            text = _strict(frame, "text")
            if text is not None:
                self.console.show(text)
            raise _Refused()
        if kind is not None and frame["type"] != kind:
            raise ProtocolError(f"expected {kind}, got {frame['type']!r}")
        return frame

    def _hello(self):
        self.conn.send(frames.hello(f"greenchat-client {__version__}"))
        answer = self._expect("hello")
        if not frames.speaks_our_version(answer):
            raise ProtocolError(f"the server speaks protocol version {answer.get('version')!r}")

    def _login(self):
        console = self.console
        given = self.config.user
        try:
            while True:
                if given:
                    name, given = given, None       # --user: asked only if refused
                else:
                    console.prompt(texts.PROMPT_USERNAME)
                    name = console.read_line()
                if name is None:
                    return False
                self.conn.send(frames.username(name.strip()))
                status = self._login_status(("username", "password", "failed"))
                if status == "username":
                    continue
                if status == "failed":
                    return False
                while True:
                    console.prompt(texts.PROMPT_PASSWORD)
                    password = console.read_secret()
                    if password is None:
                        return False
                    listener = self.listener
                    if listener is None:
                        self.conn.send(frames.password(password))
                    else:
                        self.conn.send(frames.password(password, listener.host,
                                                       listener.address[1], listener.fingerprint))
                    status = self._login_status(("ok", "password", "failed"), name)
                    if status == "ok":
                        return True
                    if status == "failed":
                        return False
        except _Refused:
            return False

    def _login_status(self, expected, name=None):
        """Read a login frame, show its text and return its status, one of
        `expected`; an `ok` sets self.user."""
        answer = self._expect("login", None)
        status, text, user = (_strict(answer, member) for member in ("status", "text", "user"))
        if status not in expected:
            raise ProtocolError(f"unexpected login status {status!r}")
        if text is not None:
            self.console.show(text)
        if status == "ok":
            self.user = name if user is None else user
        return status

    # The session ------------------------------------------------------------

    def _chat(self):
        console = self.console
        console.start_editing(texts.PROMPT, self.completions,
                              default_history_path() if self.config.history else None)
        # Killed or hung up: log out as cleanly as end of input does, and
        # leave through the same `finally` that gives the terminal back.
        handlers = [gevent.signal_handler(signum, self._terminated)
                    for signum in (signal.SIGTERM, signal.SIGHUP)]
        receiver = gevent.spawn(self._receive)
        keyboard = gevent.spawn(self._keyboard)
        try:
            return self.done.get()
        except KeyboardInterrupt:
            # Ctrl-C: the same; a second one leaves at once (cli.py).
            keyboard.kill()
            self._request_logout()
            try:
                return self.done.get(timeout=LOGOUT_WAIT)
            except gevent.Timeout:
                return 1
        finally:
            for handler in handlers:
                handler.cancel()
            keyboard.kill()
            receiver.kill()
            for user in list(self.links):
                self._end_link(user, notify=True, quiet=True)
            console.stop_editing()

    def _terminated(self):
        self._request_logout()
        gevent.spawn_later(LOGOUT_WAIT, self._finish, 1)

    def _listen(self):
        """Accept private links; the password frame tells the server where."""
        host = self.config.p2p_host or self.conn.sock.getsockname()[0]
        identity = tls.session_identity() if self.tls_context is not None else None
        listener = peer.PeerListener(host, self.config.p2p_port, peer.TokenBook(),
                                     self._accept_link, self.config.max_frame, identity)
        try:
            listener.start()
        except OSError as exc:
            log.warning("cannot accept private links on %s:%s: %s",
                        host, self.config.p2p_port, exc.strerror or exc)
            return
        self.listener = listener

    def _finish(self, status):
        if not self.done.ready():
            self.done.set(status)

    def _lost(self):
        """End the session as a lost connection, saying so once."""
        if not self.done.ready():
            self.console.show(texts.CONNECTION_LOST)
        self._finish(1)

    @contextmanager
    def _last_line(self, what):
        """The last line of defence around a greenlet's work: a bug logs its
        traceback and ends the session, instead of killing the greenlet
        (and leaving the session waiting for it)."""
        try:
            yield
        except Exception:
            log.exception("unexpected error %s; ending the session", what)
            self._lost()

    def _receive(self):
        with self._last_line("reading the server"):
            try:
                while not self._on_frame(self.conn.read()):
                    pass
            except GreenchatError as exc:
                log.debug("receive ended: %s", exc)
                self._lost()

    def _on_frame(self, frame):
        """Act on one frame from the server; True if it ended the session."""
        handler = self._on.get(frame["type"])
        if handler is None:
            log.debug("ignoring unknown frame type %r", frame["type"])
            return False
        return handler(frame)

    def _on_message(self, frame):
        text, sender = _string(frame, "text"), _string(frame, "from")
        if text is not None:
            self._saw(sender)
            self.console.show(texts.message_line("?" if sender is None else sender, text),
                              "self" if self.user and self.user in text else None)

    def _on_presence(self, frame):
        user, online = _string(frame, "user"), frame.get("online")
        if user is not None and isinstance(online, bool):
            self._saw(user)
            self.console.show(texts.presence_line(user, online), "presence")

    def _on_offer(self, frame):
        sender, token = _string(frame, "from"), _string(frame, "token")
        self._saw(sender)
        if self.listener is not None and sender is not None and token is not None:
            self.listener.offer(sender, token)

    def _on_private_stop(self, frame):
        user = _string(frame, "user")
        if user is not None:
            self._end_link(user)

    def _on_end(self, frame):
        """A bye or an error frame: the session is over."""
        text = _strict(frame, "text")
        reason = _strict(frame, "reason") if frame["type"] == "bye" else None
        if text is not None:
            self.console.show(text)
        self._finish(0 if reason in (frames.LOGOUT, frames.IDLE) else 1)
        return True

    def _on_reply(self, frame):
        lines = frame.get("lines")
        lines = [line for line in lines if isinstance(line, str)] \
            if isinstance(lines, list) else []
        request_id = _integer(frame.get("id"))
        if request_id is not None and request_id == self._next_id and \
                self._asked is not None and self._asked.lists_users:
            for line in lines:
                self._saw(line)
        for line in lines:
            self.console.show(line)
        offer = frame.get("private")
        if isinstance(offer, dict) and _string(offer, "user") is not None:
            # The keyboard waits until the link is up or failed.
            gevent.spawn(self._open_link, offer)
        elif request_id is not None and request_id == self._next_id:
            self._answered.set()
            self._prompt()

    def _prompt(self):
        self.console.command_prompt(texts.PROMPT)

    # What Tab completes -----------------------------------------------------

    def _saw(self, user):
        """Remember a user name seen in presence, messages or a user list."""
        if _completable(user) and len(self.seen_users) < MAX_SEEN_USERS:
            self.seen_users.add(user)

    def completions(self, words):
        """Candidates for the word after `words`: a command name first, then a
        user name where the command takes one."""
        if not words:
            return list(COMMANDS)
        spec = COMMANDS.get(words[0])
        if spec is not None and len(words) <= len(spec.args) and \
                spec.args[len(words) - 1] == "user":
            # Completion types into the input line, which is not escaped.
            return (self.seen_users | set(filter(_completable, self.links))) - {self.user}
        return ()

    def _keyboard(self):
        with self._last_line("reading the keyboard"):
            self._read_keyboard()

    def _read_keyboard(self):
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
                if spec in self.handlers:
                    self.handlers[spec](*args)
                    self._prompt()
                    continue
                if spec is commands.STARTPRIVATE and args[0] in self.links:
                    # Only this client knows its links; the server checks the rest.
                    self.console.show(texts.private_already_active(args[0]))
                    self._prompt()
                    continue
                self._send_command(line, spec)
                self._answered.wait(REPLY_WAIT)
        except GreenchatError as exc:
            log.debug("keyboard ended: %s", exc)
            self._lost()

    def _send_command(self, line, spec=None):
        """Send a typed line (its spec, if it parsed) as the next command."""
        self._next_id += 1
        self._answered.clear()
        self._asked = spec        # the keyboard waits for each reply in turn
        self.conn.send(frames.command(self._next_id, line))

    def _request_logout(self):
        try:
            self._send_command("logout", commands.LOGOUT)
        except GreenchatError:
            self._finish(1)

    # Private links ----------------------------------------------------------

    def _open_link(self, offer):
        with self._last_line("opening a private link"):
            self._link_to(offer)

    def _link_to(self, offer):
        user = offer["user"]
        try:
            host, port, token, fingerprint = _link_address(offer)
            conn = peer.connect(host, port, self.user, token, self.config.max_frame,
                                pin=fingerprint if self.tls_context else None,
                                tls_required=self.tls_context is not None)
        except GreenchatError as exc:
            log.warning("private link to %s failed: %s", user, exc)
            self.console.show(texts.private_connect_failed(user))
            self._answered.set()
            self._prompt()
            return
        link = peer.PeerLink(user, conn)
        if user in self.links:
            conn.close()
            self.console.show(texts.private_already_active(user))
            self._answered.set()
            self._prompt()
            return
        self.links[user] = link
        self.console.show(texts.start_private(user))
        self._answered.set()
        self._prompt()
        self._read_link(link)

    def _accept_link(self, link):
        if link.user in self.links or link.user == self.user:
            return False
        self.links[link.user] = link
        try:
            link.conn.send(frames.peer_ok(self.user))
        except GreenchatError:
            self.links.pop(link.user, None)
            return True
        self.console.show(texts.started_private_with_you(link.user))
        self._read_link(link)
        return True

    def _read_link(self, link):
        show, user = self.console.show, link.user
        with self._last_line(f"reading the private link to {user}"):
            peer.read_link(link, lambda text: show(texts.private_line(user, text), "private"))
        self._end_link(user, link)

    def _end_link(self, user, link=None, notify=False, quiet=False):
        """Forget the link to `user` (if it is `link`), close it, say so once."""
        current = self.links.get(user)
        if current is None or (link is not None and current is not link):
            return
        del self.links[user]
        if notify:
            current.send_stop()
        current.close()
        if not quiet:
            self.console.show(texts.private_stopped(user))

    # Peer and local commands ------------------------------------------------

    def cmd_private(self, user, text):
        """private USER TEXT"""
        link = self.links.get(user)
        if link is None:
            self.console.show(texts.private_not_enabled(user))
            return
        try:
            link.send_private(text)
        except GreenchatError:
            self._end_link(user, link)

    def cmd_stopprivate(self, user):
        """stopprivate USER"""
        if user not in self.links:
            self.console.show(texts.private_not_enabled(user))
            return
        self._end_link(user, notify=True)

    def cmd_help(self):
        """help"""
        width = max(len(spec.syntax) for spec in COMMANDS.values())
        for spec in COMMANDS.values():
            self.console.show(f"{spec.syntax.ljust(width)}  {spec.summary}")


def _string(frame, name):
    """A member that must be a string; anything else counts as absent (None)."""
    value = frame.get(name)
    return value if isinstance(value, str) else None


def _strict(frame, name):
    """A string member of a frame that must be right: None if absent, a
    ProtocolError if of another type."""
    value = frame.get(name)
    if value is not None and not isinstance(value, str):
        raise ProtocolError(f"{frame['type']!r} frame with a {type(value).__name__} {name!r}")
    return value


def _integer(value):
    """`value` if it is an integer (not a bool), else None."""
    return value if type(value) is int else None


def _link_address(offer):
    """(host, port, token, fingerprint) of a link offer; ProtocolError if one
    is of the wrong kind, so the link fails as unreachable."""
    host, port, token = _string(offer, "host"), _integer(offer.get("port")), _string(offer, "token")
    fingerprint = offer.get("fingerprint")
    if host is None or port is None or not 1 <= port <= 65535 or token is None \
            or not (fingerprint is None or isinstance(fingerprint, str)):
        raise ProtocolError("the link offer needs a string host and token and a port 1-65535")
    try:
        host.encode("idna")
    except UnicodeError:
        # Refused here: the resolver's thread would print a traceback.
        raise ProtocolError(f"the link offer names no host: {host!r}") from None
    return host, port, token, fingerprint


def _completable(user):
    """A name Tab may offer: printable (no controls) and one word."""
    return isinstance(user, str) and bool(user) and user.isprintable() and " " not in user


class _Refused(Exception):
    """The server ended the login with a message already shown."""
