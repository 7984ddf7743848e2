"""The wire codec: bytes in, frames out. No sockets, no gevent.

A frame is one JSON object on one line, UTF-8, ended by b"\\n". JSON escapes
control characters inside strings, so a newline never occurs inside a frame
and message text may hold any character. Every frame is an object with a
string "type"; what the types mean is documented in docs/protocol.md.

The decoder keeps its own buffer, so a frame split over any number of reads is
reassembled, and a read that stops mid-frame loses nothing. The buffer is
capped: once more than `max_frame` bytes arrive without a newline the peer is
in error (FrameTooLarge) and the caller should drop the connection. Blank
lines between frames are allowed, but bytes that make no frame are bounded
too: more than MAX_BLANK blank bytes in a row are a MalformedFrame.
"""

import json

from greenchat.errors import FrameTooLarge, MalformedFrame

DEFAULT_MAX_FRAME = 64 * 1024
# Blank bytes (whitespace and newlines) allowed in a row between frames.
MAX_BLANK = 64 * 1024


def _compact_dumps(ensure_ascii):
    """A compact JSON encoder function, made once.

    JSONEncoder.encode builds a new C encoder on every call; keeping one
    halves the cost of encoding a frame (docs/design.md). Without the C
    accelerator, the plain encoder does the same.
    """
    plain = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":"))
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:
        return plain.encode
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    # No circular-reference markers: frames are flat dicts built here.
    chunks = c_make_encoder(None, plain.default, quote, None, ":", ",", False, False, True)
    return lambda obj: "".join(chunks(obj, 0))


_dumps_utf8 = _compact_dumps(ensure_ascii=False)
_dumps_ascii = _compact_dumps(ensure_ascii=True)
_loads = json.JSONDecoder().decode


def encode(frame):
    """Return the wire bytes of `frame`, a dict with a string "type"."""
    try:
        return (_dumps_utf8(frame) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. from a terminal's undecodable input) cannot be
        # UTF-8; JSON's \\u escapes carry it as valid ASCII instead.
        return (_dumps_ascii(frame) + "\n").encode("ascii")


def parse(line):
    """Decode one frame without its newline; raise MalformedFrame."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFrame(f"not a UTF-8 JSON line: {exc.__class__.__name__}") from None
    return parse_text(text)


def parse_text(text):
    """Decode one frame from its text (a WebSocket message); raise MalformedFrame."""
    try:
        frame = _loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedFrame(f"not a UTF-8 JSON line: {exc.__class__.__name__}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise MalformedFrame("a frame must be a JSON object with a string \"type\"")
    return frame


# A frame is a JSON object, so its first byte past any blank is "{". Checking
# that as soon as the bytes arrive refuses binary junk, and a TLS handshake
# sent to a plain port, at once rather than when a newline or the size cap
# comes (which may be never).
_HEAD = 64
_BLANK = b" \t\r"


def _check_head(partial):
    head = partial[:_HEAD].lstrip(_BLANK)
    if head and head[0] != 0x7B:
        raise MalformedFrame("a frame must start with \"{\"")


class Decoder:
    """Incremental decoder: feed() bytes, get the complete frames back."""

    __slots__ = ("max_frame", "_buffer", "_blank", "_rest_blank")

    def __init__(self, max_frame=DEFAULT_MAX_FRAME):
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._blank = 0         # blank bytes in whole lines since the last frame
        self._rest_blank = True  # the partial frame in _buffer is all blank so far

    @property
    def pending(self):
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data):
        """Add `data`; return the list of frames it completed, in order.

        Raises FrameTooLarge or MalformedFrame; frames decoded before the bad
        one in the same call are lost with the connection, which is the
        caller's response to either error anyway.
        """
        buffer = self._buffer
        start = len(buffer)
        buffer += data
        if buffer.find(b"\n", start) < 0:
            if len(buffer) > self.max_frame:
                raise FrameTooLarge(f"no end of frame in {len(buffer)} bytes")
            if start < _HEAD:
                _check_head(buffer)
            if self._rest_blank:
                self._rest_blank = not data.strip()
                if self._rest_blank:
                    self._check_blank(len(buffer))
            return []
        lines = buffer.split(b"\n")
        rest = lines.pop()
        if len(rest) > self.max_frame:
            raise FrameTooLarge(f"no end of frame in {len(rest)} bytes")
        _check_head(rest)
        self._buffer = bytearray(rest)
        frames = []
        for line in lines:
            if len(line) > self.max_frame:
                raise FrameTooLarge(f"frame of {len(line)} bytes")
            if line.strip():
                frames.append(parse(bytes(line)))
                self._blank = 0
            else:
                self._blank += len(line) + 1
        self._rest_blank = not rest.strip()
        self._check_blank(len(rest) if self._rest_blank else 0)
        return frames

    def _check_blank(self, more):
        if self._blank + more > MAX_BLANK:
            raise MalformedFrame(f"over {MAX_BLANK} blank bytes in a row")
