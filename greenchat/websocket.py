"""WebSocket, sans-IO: the upgrade's checks, messages in, frames out.

No sockets and no gevent here, as in codec.py: server/web.py owns the socket.

Strategy
- pywsgi parses the HTTP request; `check_upgrade` decides from its WSGI
  environ whether it may become a WebSocket (RFC 6455 section 4.2.1, and an
  Origin check: a page of another site must not drive a user's browser into
  this server), and returns the 101 response's headers.
- After the 101, `MessageDecoder` turns what the browser sends into
  greenchat frames through wsproto's post-handshake Connection: one JSON
  frame of docs/protocol.md per text message, parsed by the codec, capped at
  `max_frame` bytes like a TCP line, in at most MAX_FRAGMENTS fragments.
  Control frames are answered (a ping gets its pong through `reply`, the one
  writer's queue); a binary message, a bad UTF-8 text or an over-long message
  is the peer's error.
- Going out, server frames are unmasked: a frame is its 2 to 4 byte header
  and the codec's encoded frame without its newline. A broadcast is encoded
  once for all of its recipients, TCP or WebSocket, and framed once more
  (`Framer`) for every WebSocket one; `wrap` frames the rest of an Outbox
  batch (replies, notices) in one join.
"""

import base64
import binascii
import hashlib
from urllib.parse import urlsplit

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from greenchat.codec import parse_text
from greenchat.errors import ConnectionLost, Flooding, FrameTooLarge, MalformedFrame, ProtocolError

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"
# Control frames (pings, pongs) a peer may send between two messages: a
# browser sends none, and each ping costs a pong in the outbox.
MAX_CONTROL_FRAMES = 32
# Fragments a message may come in: a browser sends one. Empty ones add
# nothing to the cap's count, and each costs more work than its 6 bytes.
MAX_FRAGMENTS = 1024
# Pieces of a message kept apart before they are joined: a frame trickled
# in a byte at a time is a piece a read.
_MAX_PARTS = 256
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class UpgradeRefused(ProtocolError):
    """A request for /ws that may not become a WebSocket; `status` is the
    HTTP answer, `headers` any it must carry."""

    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status = status
        self.headers = list(headers)


class Control(bytes):
    """A whole WebSocket frame the Outbox sends as it is (a pong, a close)."""

    __slots__ = ()


def accept_token(key):
    """Sec-WebSocket-Accept for the request's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def _tokens(value):
    return {token.strip().lower() for token in (value or "").split(",")}


def origin_key(url, default_scheme="http"):
    """(host, port) of an origin or a Host header value, ports defaulted by
    scheme; None if it names no host. Scheme aside, as the Host header has none."""
    if "://" not in url:
        url = f"{default_scheme}://{url}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.scheme not in _DEFAULT_PORTS:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[parts.scheme]


def origin_allowed(origin, host, scheme, allowed=()):
    """True if a page from `origin` may open a WebSocket on `host` (the
    Host header) reached over `scheme`: the same host and port, or one of
    `allowed` (origin_key tuples). No Origin at all is a non-browser client."""
    if origin is None:
        return True
    key = origin_key(origin)
    if key is None:
        return False                # "null": a sandboxed page or a file
    return key == origin_key(host or "", scheme) or key in allowed


def check_upgrade(environ, scheme, allowed_origins=()):
    """The 101 response's headers for a WSGI `environ` asking for a
    WebSocket; raise UpgradeRefused."""
    if environ.get("REQUEST_METHOD") != "GET":
        raise UpgradeRefused("405 Method Not Allowed", "not a GET", [("Allow", "GET")])
    if "websocket" not in _tokens(environ.get("HTTP_UPGRADE")) or \
            "upgrade" not in _tokens(environ.get("HTTP_CONNECTION")):
        raise UpgradeRefused("426 Upgrade Required", "not a WebSocket upgrade",
                             [("Upgrade", "websocket"), ("Connection", "Upgrade")])
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != VERSION:
        raise UpgradeRefused("426 Upgrade Required", "unsupported WebSocket version",
                             [("Sec-WebSocket-Version", VERSION)])
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    try:
        if len(base64.b64decode(key.encode("ascii"), validate=True)) != 16:
            raise ValueError
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise UpgradeRefused("400 Bad Request", "bad Sec-WebSocket-Key") from None
    origin = environ.get("HTTP_ORIGIN")
    if not origin_allowed(origin, environ.get("HTTP_HOST"), scheme, allowed_origins):
        raise UpgradeRefused("403 Forbidden", f"Origin {origin!r} is not this server's")
    return [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_token(key))]


class MessageDecoder:
    """Bytes from the browser in, greenchat frames out (codec.Decoder's
    interface, for transport.FrameReader). `reply` takes the control frames
    (Control bytes) that must go back."""

    __slots__ = ("max_frame", "reply", "_connection", "_parts", "_size", "_controls",
                 "_fragments")

    def __init__(self, max_frame, reply):
        self.max_frame = max_frame
        self.reply = reply
        self._connection = Connection(ConnectionType.SERVER)
        self._parts = []          # the text message arriving, in pieces
        self._size = 0
        self._controls = 0
        self._fragments = 0       # of the message arriving, ended

    @property
    def pending(self):
        """Characters received of a message not yet whole."""
        return self._size

    def feed(self, data):
        """Add `data`; return the frames it completed, in order. Raises
        FrameTooLarge, MalformedFrame, Flooding, or ConnectionLost when the
        browser closes the WebSocket."""
        self._connection.receive_data(data)
        frames = []
        for event in self._connection.events():
            if event.__class__ is TextMessage:
                data = event.data
                if data:
                    self._size += len(data)
                    # Characters: at most the bytes they take, so the cap holds early.
                    if self._size > self.max_frame:
                        raise FrameTooLarge(f"a message of over {self.max_frame} characters")
                    parts = self._parts
                    parts.append(data)
                    if len(parts) >= _MAX_PARTS:
                        self._parts = ["".join(parts)]
                if event.message_finished:
                    frames.append(self._message())
                elif event.frame_finished:
                    self._fragments += 1
                    if self._fragments > MAX_FRAGMENTS:
                        raise Flooding(f"a message in over {MAX_FRAGMENTS} fragments")
            elif event.__class__ is Ping:
                self._control()
                self.reply(Control(self._connection.send(event.response())))
            elif event.__class__ is Pong:
                self._control()
            elif event.__class__ is BytesMessage:
                raise MalformedFrame("a binary WebSocket message")
            elif event.__class__ is CloseConnection:
                self._closed(event)
        return frames

    def _message(self):
        text = self._parts[0] if len(self._parts) == 1 else "".join(self._parts)
        self._parts, self._size, self._controls, self._fragments = [], 0, 0, 0
        if len(text) * 4 > self.max_frame and \
                len(text.encode("utf-8", "surrogatepass")) > self.max_frame:
            raise FrameTooLarge(f"a message of over {self.max_frame} bytes")
        return parse_text(text)

    def _control(self):
        self._controls += 1
        if self._controls > MAX_CONTROL_FRAMES:
            raise Flooding(f"over {MAX_CONTROL_FRAMES} control frames in a row")

    def _closed(self, event):
        if event.code in (CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY,
                          CloseReason.NO_STATUS_RCVD):
            self.reply(Control(self._connection.send(event.response())))
            raise ConnectionLost(f"WebSocket closed by the peer ({event.code})")
        # wsproto's own verdict on what arrived: bad UTF-8, a bad frame.
        raise MalformedFrame(f"WebSocket error {int(event.code)}: {event.reason}")


def _header(size, opcode=0x81):
    if size < 126:
        return bytes((opcode, size))
    if size < 65536:
        return bytes((opcode, 126)) + size.to_bytes(2, "big")
    return bytes((opcode, 127)) + size.to_bytes(8, "big")


_SMALL_HEADERS = [_header(size) for size in range(126)]


def text_frame(payload):
    """One unmasked, final text frame around UTF-8 `payload`."""
    size = len(payload)
    return (_SMALL_HEADERS[size] if size < 126 else _header(size)) + payload


def close_frame(code=CloseReason.NORMAL_CLOSURE, reason=""):
    """A close frame, as the server sends it before closing the connection."""
    payload = int(code).to_bytes(2, "big") + reason.encode("utf-8")[:123]
    return Control(_header(len(payload), 0x88) + payload)


class Framer:
    """The message frame of the encoded frame last asked for: a broadcast
    delivered to many WebSocket sessions is framed once for them all."""

    __slots__ = ("_frame", "_wire")

    def __init__(self):
        self._frame = self._wire = None

    def __call__(self, frame):
        """`frame` (codec-encoded) as a whole WebSocket message, a Control."""
        if frame is not self._frame:
            self._frame, self._wire = frame, Control(text_frame(frame[:-1]))
        return self._wire


def wrap(batch):
    """An Outbox batch on the wire: (bytes, the size the Outbox counted).

    Items are codec-encoded frames (each one text message, its newline left
    off), or Control frames and messages framed already (as they are)."""
    parts = []
    append = parts.append
    small = _SMALL_HEADERS
    counted = 0
    for item in batch:
        if item.__class__ is Control:
            append(item)
            counted += len(item)
            continue
        size = len(item) - 1
        counted += size + 1
        append(small[size] if size < 126 else _header(size))
        append(item[:-1])
    return b"".join(parts), counted
