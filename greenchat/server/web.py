"""The web client's listener: HTTP for the page, WebSocket for the chat.

A transport module (with transport.py and tls.py, the only ones that touch
sockets). Strategy
- gevent's pywsgi parses HTTP. A connection is admitted by the chat server
  as a TCP one is (the same connection limits, per network, counted from the
  accept), and TLS uses the chat listener's certificate.
- Static files are the package's `greenchat/web/` directory, read once at
  start into a table keyed by file name: a request names a key or gets 404,
  so no path ever reaches the file system and `..` means nothing. The
  user-visible texts and the command table reach the page as /texts.json,
  built from texts.py and commands.py: the texts stay in one module.
- Every response carries a Content-Security-Policy of default-src 'self'
  (no inline script, no other site); the page inserts network text as text.
- `/ws` upgrades to a WebSocket (websocket.check_upgrade: the handshake and
  the Origin check), and the connection then runs the same session code as
  TCP (ChatServer.serve_connection) with a WebSocket reader and writer.
- An HTTP request must arrive within HTTP_TIMEOUT, its headers within
  MAX_HEADER_BYTES; an idle keep-alive connection ends then too. A
  stopping server ends every connection not upgraded at once, one sending a
  page nobody reads included.
- A connection serving requests lets the hub run every TIME_SLICE, as
  transport.FrameReader does: pywsgi itself never waits for a client that
  sends requests without pause.
"""

import inspect
import io
import json
import logging
import os
from time import monotonic

import gevent
from gevent.pywsgi import Input, LoggingLogAdapter, WSGIHandler, WSGIServer, headers_factory

from greenchat import __version__, commands, texts
from greenchat import websocket as ws
from greenchat.errors import ConfigError, TLSError
from greenchat.transport import (
    TIME_SLICE,
    YIELD,
    close,
    configure,
    discard_received,
    refuse,
    shutdown,
)

log = logging.getLogger("greenchat.web")

STATIC_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web")
# Seconds an HTTP request may take to arrive, and a kept-alive connection may idle.
HTTP_TIMEOUT = 10.0
# A request's header section, at most (a browser's take a few KB, its cookies
# for the host included), and its lines: past either, 431. http.client alone
# takes 100 lines of 64 KB, and a WebSocket's environ keeps them all.
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                                "form-action 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cache-Control", "no-cache"),
]
_TEXT = "text/plain; charset=utf-8"
_NOT_FOUND = b"Not found\n"
_NO_BODY = b"No request here has a body.\n"


def _headers(kind, body, extra=()):
    """An answer's headers through pywsgi: `extra`, its type and length,
    and the security headers every answer carries."""
    return [*extra, ("Content-Type", kind), ("Content-Length", str(len(body)))] + \
        SECURITY_HEADERS


def _closing_answer(status, text, *headers):
    """A whole HTTP answer written straight to a socket pywsgi never saw
    (or one it has given up on), its Content-Length counted."""
    body = f"{text}\n".encode("utf-8")
    head = "".join(f"{line}\r\n" for line in (
        f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8", "Connection: close",
        *headers, f"Content-Length: {len(body)}"))
    return f"{head}\r\n".encode("latin-1") + body


_PLAIN_TO_TLS = _closing_answer("400 Bad Request", "This server speaks HTTPS only.")
_HEADERS_TOO_LARGE = _closing_answer("431 Request Header Fields Too Large",
                                     "Request headers too large.")
_TOO_MANY = _closing_answer("503 Service Unavailable", texts.TOO_MANY_CONNECTIONS,
                            "Retry-After: 10")


def client_texts():
    """What the page shows, from texts.py and commands.py: every text,
    every text function as a template with {parameter} holes, the commands."""
    strings, templates = {}, {}
    for name, value in vars(texts).items():
        if name.startswith("_"):
            continue
        if isinstance(value, str):
            strings[name] = value
        elif inspect.isfunction(value) and value.__module__ == texts.__name__:
            params = list(inspect.signature(value).parameters)
            if name == "presence_line":
                templates["presence_line_on"] = value("{user}", True)
                templates["presence_line_off"] = value("{user}", False)
            elif name != "day_line":            # the page names days itself
                templates[name] = value(*(f"{{{p}}}" for p in params))
    table = [{"name": spec.name, "aliases": list(spec.aliases), "args": list(spec.args),
              "where": spec.where, "syntax": spec.syntax, "summary": spec.summary,
              "lists_users": spec.lists_users} for spec in commands.COMMANDS.values()]
    return {"texts": strings, "templates": templates, "commands": table, "version": __version__}


def load_site(directory=STATIC_DIR):
    """name -> (content type, bytes) for every file the page is made of."""
    files = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        kind = CONTENT_TYPES.get(os.path.splitext(name)[1])
        if kind is None or name.startswith(".") or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            files[name] = (kind, f.read())
    files["texts.json"] = (CONTENT_TYPES[".json"],
                           json.dumps(client_texts(), ensure_ascii=False).encode("utf-8"))
    return files


class Site:
    """The WSGI application of the static page: a fixed table of files."""

    def __init__(self, files):
        self.files = files

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", _headers(_TEXT, b"", [("Allow", "GET, HEAD")]))
            return [b""]
        path = environ.get("PATH_INFO", "")
        entry = self.files.get("index.html" if path == "/" else path[1:]) \
            if path.startswith("/") else None
        if entry is None:
            start_response("404 Not Found", _headers(_TEXT, _NOT_FOUND))
            return [b"" if method == "HEAD" else _NOT_FOUND]
        kind, body = entry
        start_response("200 OK", _headers(kind, body))
        return [b"" if method == "HEAD" else body]


# What a WebSocket's handler keeps of its request's environ.
_ENVIRON_KEPT = ("REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD", "PATH_INFO", "SERVER_PROTOCOL")


class _HeadersTooLarge(ValueError):
    pass


class _Handler(WSGIHandler):
    """pywsgi's handler, with a deadline on every request and /ws upgraded."""

    def handle(self):
        sock = self.socket          # pywsgi forgets it on its way out
        sock.settimeout(HTTP_TIMEOUT)
        self.server.http.add(sock)
        self._loop = gevent.get_hub().loop
        self._turn = (self._loop.iteration, monotonic())
        try:
            super().handle()
        finally:
            self.server.http.discard(sock)

    def _take_turn_if_due(self):
        """Let the hub run if this connection has held it for TIME_SLICE.
        pywsgi reads a request from its buffer, or a socket with bytes
        waiting, and writes to one with room, without ever waiting: a
        client pipelining requests without pause would hold every other
        connection (transport.FrameReader does the same for frames)."""
        # The loop's iterations, not its time: starting a Timeout (one a
        # request) updates that.
        iteration, started = self._turn
        if self._loop.iteration != iteration:   # the loop has turned since: we waited
            self._turn = (self._loop.iteration, monotonic())
        elif monotonic() - started >= TIME_SLICE:
            gevent.sleep(YIELD)
            self._turn = (self._loop.iteration, monotonic())

    def handle_one_request(self):
        self._take_turn_if_due()
        # The whole request line and headers within HTTP_TIMEOUT, however
        # they trickle in (a socket timeout counts from each byte).
        timer = self._reading = gevent.Timeout.start_new(HTTP_TIMEOUT)
        try:
            return super().handle_one_request()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            return None
        finally:
            timer.close()
            del timer

    def MessageClass(self, rfile, *args):
        """The request's headers, read within MAX_HEADER_BYTES and MAX_HEADERS."""
        lines, size = [], 0
        while True:
            line = rfile.readline(MAX_HEADER_BYTES - size + 1)
            size += len(line)
            if size > MAX_HEADER_BYTES or len(lines) > MAX_HEADERS:
                raise _HeadersTooLarge(f"request headers over {MAX_HEADER_BYTES} bytes "
                                       f"or {MAX_HEADERS} lines")
            lines.append(line)
            if line in (b"\r\n", b"\n", b""):
                return headers_factory(io.BytesIO(b"".join(lines)))

    def _handle_client_error(self, ex):
        if isinstance(ex, _HeadersTooLarge):
            log.info("HTTP request from %s refused: %s", self.client_address[0], ex)
            try:
                self.socket.sendall(_HEADERS_TOO_LARGE)
            except OSError:
                pass
            # The rest of the request, dropped: closed unread, the
            # connection is reset and the answer lost.
            discard_received(self.socket)
            return None
        if isinstance(ex, OSError):
            # The connection failed while its headers came in (a stopping
            # server shut it): nothing to answer, and no traceback.
            log.debug("HTTP connection from %s ended: %s", self.client_address[0], ex)
            return None
        return super()._handle_client_error(ex)

    def handle_error(self, t, v, tb):
        if isinstance(v, OSError):
            # A send that timed out (the client stopped reading), a connection
            # reset or shut by a stopping server: the client's end, not an
            # error of the server's (pywsgi would print its traceback).
            log.info("HTTP connection from %s ended: %s", self.client_address[0],
                     v or v.__class__.__name__)
            self.close_connection = True
            return
        super().handle_error(t, v, tb)

    def get_environ(self):
        self._reading.close()       # the request is in: no more deadline
        return super().get_environ()

    def run_application(self):
        if self.environ.get("CONTENT_LENGTH") not in (None, "", "0") or \
                self.environ.get("HTTP_TRANSFER_ENCODING"):
            self._refuse_body()
        elif self.environ.get("PATH_INFO") == "/ws":
            self.close_connection = True
            self._websocket()
        else:
            super().run_application()

    def _refuse_body(self):
        """No request here has a body: answer 400 and close, the body unread.
        pywsgi would read it all through after the answer (however long, and
        without waiting when it comes fast: the hub held), to keep a
        kept-alive connection in step."""
        self.close_connection = True
        self.wsgi_input = Input(None, 0)        # nothing left to read through
        log.info("HTTP request from %s refused: a body", self.client_address[0])
        self.start_response("400 Bad Request",
                            _headers(_TEXT, _NO_BODY, [("Connection", "close")]))
        self.write(_NO_BODY)
        # What of the body has come, dropped: closed unread, the connection
        # is reset and the answer lost.
        discard_received(self.socket)

    def _websocket(self):
        web = self.server
        try:
            headers = ws.check_upgrade(self.environ, web.scheme, web.origins)
        except ws.UpgradeRefused as exc:
            log.info("WebSocket from %s refused: %s", self.client_address[0], exc)
            body = f"{exc}\n".encode("utf-8", "replace")
            self.start_response(exc.status, _headers(_TEXT, body, exc.headers))
            self.write(body)
            return
        sock = self.socket
        response = "".join(f"{name}: {value}\r\n" for name, value in headers)
        sock.sendall(f"HTTP/1.1 101 Switching Protocols\r\n{response}\r\n".encode("latin-1"))
        self.status = "101 Switching Protocols"
        self.headers_sent = True
        web.http.discard(sock)
        trailing = self._buffered()
        # Not needed again, and held for the session's life otherwise: the
        # reader's 8 KB buffer, and the request's line and headers (up to 8
        # and 16 KB, as the client likes). pywsgi's error log reads the
        # environ: it keeps the client's address.
        self.rfile.close()
        self.headers = None
        self.environ = {key: self.environ[key] for key in _ENVIRON_KEPT if key in self.environ}
        self.requestline = self.path = "GET /ws"
        sock.settimeout(None)
        chat = web.chat
        # The socket is the session's from here (pywsgi closes it after),
        # and the session counts it among the connections.
        chat.unserved -= 1
        try:
            chat.serve_connection(sock, self.client_address, self.network,
                                  self.login_deadline, websocket=trailing)
        finally:
            chat.unserved += 1

    def _buffered(self):
        """The bytes the request's reader took past the request: WebSocket
        frames sent before the 101 arrived."""
        self.socket.settimeout(0.0)
        try:
            return self.rfile.read1(65536) or b""
        except OSError:
            return b""

    def log_request(self):
        pass


class WebListener(WSGIServer):
    """The HTTP listener of one ChatServer; its connections count in the
    chat server's limits, and it shares the chat server's pool."""

    handler_class = _Handler

    def __init__(self, chat, host, port, pool):
        super().__init__((host, port), Site(load_site()), spawn=pool,
                         backlog=chat.config.backlog, log=None,
                         error_log=LoggingLogAdapter(log, logging.ERROR))
        self.chat = chat
        self.scheme = "https" if chat.tls is not None else "http"
        origins = (ws.origin_key(origin) for origin in chat.config.http_origins)
        self.origins = frozenset(key for key in origins if key is not None)
        self.http = set()          # sockets serving HTTP (not upgraded)

    def start(self):
        try:
            super().start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.chat.config.host}:"
                              f"{self.chat.config.http_port}: {exc.strerror or exc}") from None
        log.info("web client at %s", self.url)

    @property
    def url(self):
        """Where a browser on this machine finds the page: a wildcard
        address is no place to browse to, so it names the loopback one."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.server_host, self.server_host)
        if ":" in host:
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.server_port}/"

    def handle(self, sock, address):
        chat = self.chat
        accepted = monotonic()
        network = chat.admit(address)
        if network is None:
            log.warning("refused an HTTP connection from %s: too many connections", address[0])
            refuse(sock, None if chat.tls is not None else _TOO_MANY)
            return
        configure(sock)
        chat.unserved += 1
        try:
            if chat.tls is not None:
                try:
                    sock = chat.tls_accept(sock, HTTP_TIMEOUT, _PLAIN_TO_TLS)
                except TLSError as exc:
                    log.info("HTTPS connection from %s refused: %s", address[0], exc)
                    discard_received(sock)
                    close(sock)
                    return
            handler = self.handler_class(sock, address, self)
            # What a WebSocket's session is counted in, and its login deadline.
            handler.network = network
            handler.login_deadline = accepted + chat.config.login_timeout
            handler.handle()
        finally:
            chat.unserved -= 1
            chat.release(network)

    def end_http(self):
        """End the connections not upgraded, both ways: the server stops.
        One waiting for a request wakes up, and one sending a page to a
        client that does not read it gives up at once, not after
        HTTP_TIMEOUT (the stop's whole timeout). (Handshakes: ChatServer.stop.)"""
        for sock in list(self.http):
            shutdown(sock)
