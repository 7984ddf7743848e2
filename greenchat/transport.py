"""Frames over sockets: the only module (with tls.py and the client's peer
links) that touches a socket. A TLS socket is used exactly like a plain one.

Reading: FrameReader keeps its own receive buffer in a codec.Decoder, so a
timeout or a read that ends mid-frame loses nothing. Because gevent's recv on
a ready socket returns without switching, a reader fed faster than it works
would starve every other greenlet; FrameReader therefore lets the hub run
once it has worked for TIME_SLICE, whether or not the bytes made frames
(blank lines, a frame trickled in pieces). Longer slices mean bigger batches
for the writers (fewer send calls per delivery); shorter ones, fairer turns.

Writing: Outbox is the one writer of a socket. Frames go into a list (put
never blocks the producer; the owner sets the limits) and one greenlet
drains it, joining everything waiting into one send: that is what lets one
greenlet fan a broadcast out to a thousand mailboxes at over a million
deliveries a second. docs/design.md has the measurements behind both.
"""

import logging
from time import monotonic

import gevent
from gevent import socket
from gevent.event import Event
from gevent.lock import Semaphore

from greenchat import tls
from greenchat.codec import Decoder, encode
from greenchat.errors import ConnectionLost

log = logging.getLogger("greenchat.transport")

# A busy reader runs at most this long before the others get a turn: each
# turn costs a send per writer with mail, so short turns waste it; 50 ms is
# well inside the 0.1 s the stress tests allow the hub to be held.
TIME_SLICE = 0.05
# A turn: a timer this long, during which the loop polls every socket.
YIELD = 0.001
RECV_SIZE = 65536
MAX_BATCH = 1024
_CLOSE = object()
SHUT_RD = socket.SHUT_RD


class FrameReader:
    """Reads frames from a socket through a bounded decoder: the codec's
    lines, or another with its interface (websocket.MessageDecoder)."""

    __slots__ = ("sock", "decoder", "_ready", "_next", "_loop", "_slice_start", "_early")

    def __init__(self, sock, max_frame, decoder=None, early=b""):
        """`early`: bytes of this connection already read from `sock` (a
        WebSocket's frames that came in with its upgrade request), decoded
        first, before any wait for more."""
        self.sock = sock
        self.decoder = Decoder(max_frame) if decoder is None else decoder
        self._early = early
        self._ready = []
        self._next = 0
        # The loop's cached time changes only when the loop turns: a recv
        # that changed it waited, and the next slice starts afresh.
        self._loop = gevent.get_hub().loop
        self._slice_start = monotonic()

    def read_frame(self, timeout=None):
        """Return the next frame, or None if `timeout` seconds pass first.

        Raises ConnectionLost at end of stream or on a socket error, and the
        codec's ProtocolError subclasses on a bad frame.
        """
        if self._next >= len(self._ready):
            self._fill(timeout)
            if self._next >= len(self._ready):
                return None
        if monotonic() - self._slice_start >= TIME_SLICE:
            self._take_turn()
        frame = self._ready[self._next]
        self._next += 1
        return frame

    def _fill(self, timeout):
        self._ready, self._next = [], 0
        deadline = None if timeout is None else monotonic() + timeout
        while not self._ready:
            if self._early:
                data, self._early = self._early, b""
            elif deadline is None:
                data = self._recv()
            else:
                # Counted from the first call, so a peer trickling a frame a
                # byte at a time cannot hold off its own timeout.
                left = deadline - monotonic()
                if left <= 0:
                    return
                # A gevent.Timeout, not the socket's own timeout: that one is
                # shared with the writer greenlet's sendall on the same socket.
                timer = gevent.Timeout.start_new(left)
                try:
                    data = self._recv()
                except gevent.Timeout as exc:
                    if exc is not timer:
                        raise
                    return
                finally:
                    timer.close()
                    # Once raised, the timer holds a traceback through this
                    # frame, whose local holds the timer: a reference cycle
                    # that would keep the whole session alive until a full
                    # collection (never, once frozen: see runtime.py).
                    del timer
            if not data:
                if self.decoder.pending:
                    raise ConnectionLost("connection closed in the middle of a frame")
                raise ConnectionLost("connection closed")
            self._ready = self.decoder.feed(data)
            if not self._ready and monotonic() - self._slice_start >= TIME_SLICE:
                # Bytes that make no frame (blank lines, a frame's first part)
                # must not hold the hub either: recv on a ready socket never yields.
                self._take_turn()

    def _take_turn(self):
        """Let the hub run: this reader has held it for TIME_SLICE."""
        # A timer, not sleep(0): sleep(0) resumes this greenlet before the
        # loop polls sockets or runs timers, so other readers would starve.
        gevent.sleep(YIELD)
        self._slice_start = monotonic()

    def _recv(self):
        before = self._loop.now()
        try:
            data = self.sock.recv(RECV_SIZE)
        except OSError as exc:
            raise ConnectionLost(f"receive failed: {exc}") from None
        if self._loop.now() != before:
            self._slice_start = monotonic()
        return data


class Outbox:
    """The single writer of one socket: a mailbox drained by one greenlet.

    A queued item is a frame's bytes: a fan-out costs one list slot a
    recipient. What a session was sent and never acknowledged is the
    session's to keep (session.py), not the writer's.

    The mailbox is a FIFO list and a gevent Event, not a gevent.queue:
    producers never wait, and the writer takes the whole list at once, for
    less CPU a delivery and a sixth of the memory (docs/design.md).

    An idle writer costs a parked greenlet: the owner calls `retire_if_idle`
    now and then, and a writer that wrote nothing since the last call ends;
    the next `put` starts a new one.

    `wrap` puts a batch on the wire: by default the frames' bytes joined;
    websocket.wrap makes each a WebSocket message. It returns the bytes and
    the size the batch was counted at in `nbytes`.
    """

    __slots__ = ("sock", "limit", "limit_bytes", "nbytes", "items", "_start",
                 "_progress", "failed", "_ready", "_closing", "_retiring", "_wrote", "greenlet",
                 "_wrap")

    def __init__(self, sock, limit=None, limit_bytes=None, wrap=None):
        self.sock = sock
        self._wrap = joined if wrap is None else wrap
        self.limit = limit if limit is not None else float("inf")
        self.limit_bytes = limit_bytes if limit_bytes is not None else float("inf")
        self.nbytes = 0           # bytes queued and not yet written (0: all written)
        self.items = []
        self._start = 0           # items before this one are taken
        self._progress = None     # an Event while someone waits for the writer
        self.failed = False
        self._ready = Event()     # set while items wait for the writer
        self._closing = False
        self._retiring = False
        self._wrote = False       # a batch went out since the last retire_if_idle
        self.greenlet = gevent.spawn(self._run)

    def __len__(self):
        return len(self.items) - self._start

    def put(self, frame):
        """Queue a frame; False (and nothing queued) if `limit` frames wait
        already, or it would take the bytes not yet written past `limit_bytes`
        (a frame alone may be larger)."""
        items = self.items
        nbytes = self.nbytes + len(frame)
        if len(items) - self._start >= self.limit or \
                (nbytes > self.limit_bytes and self.nbytes):
            return False
        items.append(frame)
        self.nbytes = nbytes
        if len(items) == 1:
            self._wake()
        return True

    def push(self, frame):
        """Queue a frame with no limit checked (its owner keeps the limits)."""
        items = self.items
        items.append(frame)
        self.nbytes += len(frame)
        if len(items) == 1:
            self._wake()

    def send(self, message):
        """Encode a frame dict and queue it, whatever the limit."""
        self.push(encode(message))

    def _mark_close(self):
        """Queue the close marker: the writer stops there."""
        self._closing = True
        self.items.append(_CLOSE)
        if len(self.items) == 1:
            self._wake()

    def fits(self, size):
        """True if `put` would take a frame of `size` bytes now."""
        return len(self.items) - self._start < self.limit and \
            (not self.nbytes or self.nbytes + size <= self.limit_bytes)

    def wait_room(self, size, stall_timeout):
        """Wait until a frame of `size` bytes fits; see wait_progress."""
        while not self.fits(size):
            if not self.wait_progress(stall_timeout):
                return False
        return True

    def wait_written(self, stall_timeout):
        """Wait until every frame queued is written; see wait_progress."""
        while self.nbytes:
            if not self.wait_progress(stall_timeout):
                return False
        return True

    def wait_progress(self, stall_timeout):
        """Wait until the writer writes something. False if it has failed,
        or writes nothing for `stall_timeout` seconds: the peer has stopped
        reading."""
        if self.failed:
            return False
        progress = self._progress = Event()
        moved = progress.wait(stall_timeout)
        self._progress = None
        return moved and not self.failed

    def _wake(self):
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._run)
        else:
            self._ready.set()

    def retire_if_idle(self):
        """End the writer if it has written nothing since the last call."""
        if self._wrote:
            self._wrote = False
        elif self.greenlet is not None and not self.items and not self._closing \
                and not self.failed:
            self._retiring = True
            self._ready.set()

    def _take(self):
        """Up to MAX_BATCH waiting items, oldest first."""
        items, start = self.items, self._start
        end = min(len(items), start + MAX_BATCH)
        if end == len(items):
            # The usual case: everything, by swapping the list.
            self.items, self._start = [], 0
            return items[start:] if start else items
        batch = items[start:end]
        if end * 2 > len(items):
            del items[:end]          # compact: amortised O(1) an item
            end = 0
        self._start = end
        return batch

    def close(self, timeout):
        """Flush what is queued, then stop; after `timeout` seconds, give up
        (what was not written is dropped)."""
        self._mark_close()
        writer = self.greenlet
        writer.join(timeout)
        if not writer.dead:
            writer.kill(block=True, timeout=1)
        self.items, self._start = [], 0

    def _run(self):
        send = self.sock.send
        ready = self._ready
        try:
            while True:
                if len(self.items) == self._start:
                    if self._retiring:
                        self._retiring = False
                        self.greenlet = None
                        return
                    ready.clear()
                    ready.wait()
                    continue
                self._wrote = True
                batch = self._take()
                # Stop at the close marker: frames queued after it (a late
                # control frame) are not written.
                closing = self._closing and _CLOSE in batch
                if closing:
                    at = batch.index(_CLOSE)
                    self.items[self._start:self._start] = batch[at + 1:]
                    del batch[at:]
                if batch:
                    # send() in a loop, not sendall(): gevent's sendall asks the
                    # kernel for SO_SNDBUF on every call.
                    data, counted = self._wrap(batch)
                    sent = send(data)
                    if sent < len(data):
                        view = memoryview(data)
                        while sent < len(view):
                            # A slow reader of a big batch still makes progress.
                            if self._progress is not None:
                                self._progress.set()
                            sent += send(view[sent:])
                        view.release()
                    self.nbytes -= counted
                    # Not held while waiting for the next frame: thousands of
                    # idle writers would each keep their last batch.
                    data = view = batch = None
                    if self._progress is not None:
                        self._progress.set()
                if closing:
                    return
        except BaseException as exc:  # GreenletExit included
            self.failed = True
            if self._progress is not None:
                self._progress.set()
            if not isinstance(exc, (OSError, gevent.GreenletExit)):
                log.exception("writer failed")


def configure(sock):
    """Options every chat socket wants: no Nagle delay (a chat line is small
    and wanted now; the Outbox already batches), keepalive to notice a
    vanished peer."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except OSError:
        pass


def shutdown(sock, how=socket.SHUT_RDWR):
    """Wake the greenlets blocked on `sock`: its reader, and with SHUT_RDWR
    its writer too.

    On a TLS socket only the connection beneath is shut down: gevent's
    SSLSocket.shutdown drops the TLS layer first, and whatever was written
    after that (a goodbye) would go out in clear text.
    """
    try:
        socket.socket.shutdown(sock, how)
    except OSError:
        pass


def close(sock):
    try:
        sock.close()
    except OSError:
        pass


def joined(batch):
    """A batch of frames on the wire as they are: (bytes, their size)."""
    data = b"".join(batch)
    return data, len(data)


def discard_received(sock, reads=16):
    """Read and drop what has arrived, without waiting: a socket closed
    with bytes unread resets its connection, and the peer may lose the
    answer it was sent just before."""
    try:
        sock.settimeout(0.0)
        for _ in range(reads):
            if not sock.recv(65536):
                return
    except OSError:
        pass


def refuse(sock, data=None):
    """Close a connection refused before it is served, at once: its
    descriptor is wanted back. `data` (a frame) goes out only if the socket
    takes it without waiting, as a fresh one does."""
    if data:
        try:
            # gevent: a timeout of 0 makes send raise instead of waiting.
            sock.settimeout(0)
            sock.send(data)
        except OSError:
            pass
    close(sock)


class FrameConnection:
    """A client-side framed connection: a FrameReader plus a locked sender.

    The client writes from more than one greenlet (keyboard input, and the
    session's own control frames); the lock makes each frame's sendall whole,
    so frames never interleave and no two greenlets are inside sendall at once.
    """

    def __init__(self, sock, max_frame):
        self.sock = sock
        self.reader = FrameReader(sock, max_frame)
        self._send_lock = Semaphore()

    @classmethod
    def connect(cls, host, port, timeout, max_frame, tls_context=None, pin=None):
        """Connect over TCP, and TLS if `tls_context` is given.

        Raises OSError (with a readable strerror) if the TCP connection
        fails, TLSError if the handshake or the certificate check (against
        the context's CAs, or the fingerprint `pin`) does.
        """
        sock = socket.create_connection((host, port), timeout=timeout)
        configure(sock)
        if tls_context is not None:
            try:
                sock = tls.connect(sock, tls_context, timeout,
                                   server_hostname=host if tls_context.check_hostname else None,
                                   pin=pin)
            except BaseException:
                close(sock)
                raise
        sock.settimeout(None)
        return cls(sock, max_frame)

    def read(self, timeout=None):
        return self.reader.read_frame(timeout)

    def send(self, message, timeout=30.0):
        data = encode(message)
        with self._send_lock:
            try:
                with gevent.Timeout(timeout, ConnectionLost("send timed out")):
                    self.sock.sendall(data)
            except OSError as exc:
                raise ConnectionLost(f"send failed: {exc}") from None

    def close(self):
        shutdown(self.sock)
        close(self.sock)
