"""Direct client-to-client links for private messages.

Strategy
- The server only introduces: for `startprivate USER` it issues a fresh random
  token and tells the requester USER's listening address and the token, and
  tells USER's client that the token was issued for the requester.
- Every logged-in client listens (a gevent StreamServer) for peer connections.
  A connecting peer must first send `peer_hello` with its name and a token that
  the server issued to *this* client for *that* name, unused and younger than
  TOKEN_LIFETIME. Anything else (no hello in time, a wrong, replayed, expired
  or misdirected token, a malformed frame) closes the connection, is logged,
  and shows the user nothing.
- The server's introduction and the requester's connection race each other;
  the acceptor therefore waits up to OFFER_WAIT for the matching offer before
  refusing.
- A link is a FrameConnection (the codec and the size cap of frames sent
  to the server, not the larger one of frames from it)
  read by its own greenlet; each side sends `private` frames and a `stop` frame
  to close.
- When the client reached the server over TLS, links are TLS too: the
  listener serves a certificate made for this session, whose fingerprint goes
  to the server with the listening address; the requester gets it with the
  token and pins it (tls.py). The token itself then travels encrypted.

TokenBook is the sans-IO part, tested on its own.
"""

import hmac
import logging
from time import monotonic

from gevent.event import Event
from gevent.server import StreamServer

from greenchat import frames, tls
from greenchat.errors import ConnectionLost, GreenchatError, ProtocolError, TLSError
from greenchat.transport import FrameConnection, close

log = logging.getLogger("greenchat.peer")

TOKEN_LIFETIME = 60.0
OFFER_WAIT = 5.0
HANDSHAKE_TIMEOUT = 10.0


class TokenBook:
    """One-time tokens the server issued to this client, by requester name."""

    def __init__(self, lifetime=TOKEN_LIFETIME, clock=monotonic):
        self.lifetime = lifetime
        self.clock = clock
        self._tokens = {}     # requester -> {token: issued_at}

    def issue(self, requester, token):
        now = self.clock()
        tokens = self._tokens.setdefault(requester, {})
        for old in [t for t, at in tokens.items() if now - at >= self.lifetime]:
            del tokens[old]
        tokens[token] = now

    def redeem(self, requester, token):
        """True (and the token is spent) if it is valid for `requester`."""
        tokens = self._tokens.get(requester)
        if not tokens or not isinstance(token, str):
            return False
        now = self.clock()
        for candidate, issued_at in list(tokens.items()):
            if hmac.compare_digest(candidate.encode(), token.encode("utf-8", "surrogatepass")):
                del tokens[candidate]
                return now - issued_at < self.lifetime
        return False


class PeerLink:
    """An authenticated link to one peer."""

    def __init__(self, user, conn):
        self.user = user
        self.conn = conn

    def send_private(self, text):
        self.conn.send(frames.private(text))

    def send_stop(self):
        try:
            self.conn.send(frames.stop(), timeout=2.0)
        except GreenchatError:
            pass

    def close(self):
        self.conn.close()


class PeerListener:
    """Accepts peer connections and authenticates them against a TokenBook.

    `on_link(link)` is called in the connection's greenlet for each
    authenticated link. It returns False at once to refuse the link (one to
    that user exists already); otherwise it answers `peer_ok`, reads the link
    until it ends and returns True. The connection is closed afterwards.
    """

    def __init__(self, host, port, tokens, on_link, max_frame, identity=None):
        self.tokens = tokens
        # (TLS server context, certificate fingerprint) for TLS links, or None.
        self.tls_context, self.fingerprint = identity or (None, None)
        self.on_link = on_link
        self.max_frame = max_frame
        self._offer_arrived = Event()
        self.host = host
        self.server = StreamServer((host, port), self._handle)

    def start(self):
        self.server.start()

    @property
    def address(self):
        return self.server.server_host, self.server.server_port

    def offer(self, requester, token):
        """The server introduced `requester` with `token`."""
        self.tokens.issue(requester, token)
        # Wake acceptors waiting for this offer, then re-arm.
        self._offer_arrived.set()
        self._offer_arrived = Event()

    def stop(self):
        self.server.stop(timeout=1)

    def _handle(self, sock, address):
        if self.tls_context is not None:
            try:
                sock = tls.accept(sock, self.tls_context, HANDSHAKE_TIMEOUT)
            except TLSError as exc:
                log.warning("refused peer connection from %s:%s: %s", address[0], address[1], exc)
                close(sock)
                return
        conn = FrameConnection(sock, self.max_frame)
        try:
            frame = conn.read(HANDSHAKE_TIMEOUT)
            if frame is None:
                raise ProtocolError("no peer_hello in time")
            if frame["type"] != "peer_hello" or not frames.speaks_our_version(frame):
                raise ProtocolError(f"expected peer_hello, got {frame['type']!r}")
            user, token = frame.get("user"), frame.get("token")
            if not isinstance(user, str) or not self._redeem(user, token):
                raise ProtocolError(f"bad token for {user!r}")
            link = PeerLink(user, conn)
            if not self.on_link(link):
                raise ProtocolError(f"refused a second link to {user!r}")
            # on_link read the link to its end; nothing more to do here.
        except GreenchatError as exc:
            log.warning("refused peer connection from %s:%s: %s", address[0], address[1], exc)
        except Exception:
            log.exception("peer connection from %s:%s", address[0], address[1])
        finally:
            conn.close()

    def _redeem(self, user, token):
        deadline = monotonic() + OFFER_WAIT
        while True:
            if self.tokens.redeem(user, token):
                return True
            left = deadline - monotonic()
            if left <= 0:
                return False
            self._offer_arrived.wait(left)


def connect(host, port, me, token, max_frame, timeout=HANDSHAKE_TIMEOUT, pin=None,
            tls_required=False):
    """Open a link to a peer's listener and introduce ourselves; return its conn.

    With `tls_required` the link is TLS and the peer's certificate must have
    the fingerprint `pin` that the server passed along.
    """
    if tls_required and not isinstance(pin, str):
        raise ProtocolError("the server named no certificate for the peer")
    try:
        conn = FrameConnection.connect(host, port, timeout, max_frame,
                                       tls.pinned_context() if tls_required else None, pin)
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    try:
        conn.send(frames.peer_hello(me, token))
        frame = conn.read(timeout)
        if frame is None or frame["type"] != "peer_ok":
            raise ProtocolError("the peer refused the link")
        return conn
    except BaseException:
        conn.close()
        raise


def read_link(link, on_private):
    """Read `link` until it ends; call on_private(text) for each message.

    Returns normally on a `stop` frame or when the connection closes.
    """
    try:
        while True:
            frame = link.conn.read()
            kind = frame["type"]
            if kind == "private":
                text = frame.get("text")
                if isinstance(text, str):
                    on_private(text)
            elif kind == "stop":
                return
            else:
                log.debug("ignoring %r frame on link to %s", kind, link.user)
    except GreenchatError as exc:
        log.debug("link to %s ended: %s", link.user, exc)

