"""The client's private links: at most one per peer, each read by a greenlet
of its own (peer.py has the links' protocol; this is the client's side).

Strategy
- A link comes about one of two ways: the server's answer to our
  `startprivate` names the peer's address and a token (`open`), or a peer
  connects to our listener with a token the server gave us (`accept`).
- Either way it is read until it ends, and it ends once: a `stop` frame, a
  closed connection, a `private_stop` from the server (a block), our
  `stopprivate`, the connection to the server lost (`end_all`), or the
  client leaving. Each way shows `Private messaging with USER stopped` once
  (none when the client leaves).
"""

import logging

from greenchat import frames, texts
from greenchat.client import peer
from greenchat.errors import GreenchatError

log = logging.getLogger("greenchat.client")


class PrivateLinks:
    def __init__(self, console, max_frame, tls_required, guard, opened):
        self.console = console
        self.max_frame = max_frame
        self.tls_required = tls_required
        self.guard = guard            # guard(what): the client's last line of defence
        self.opened = opened          # called once an open() has succeeded or failed
        self.me = None                # our user name, once logged in
        self._links = {}              # peer name -> PeerLink

    def __contains__(self, user):
        return user in self._links

    def get(self, user):
        return self._links.get(user)

    def names(self):
        return set(self._links)

    def open(self, offer):
        """Link to the peer the server's startprivate answer names, then read
        the link until it ends (in a greenlet of its own)."""
        link = None
        with self.guard("opening a private link"):
            user = offer["user"]
            try:
                host, port, token, fingerprint = frames.link_offer(offer)
                conn = peer.connect(host, port, self.me, token, self.max_frame,
                                    pin=fingerprint if self.tls_required else None,
                                    tls_required=self.tls_required)
            except GreenchatError as exc:
                log.warning("private link to %s failed: %s", user, exc)
                self.console.show(texts.private_connect_failed(user))
                self.opened()
                return
            if user in self._links:
                conn.close()
                self.console.show(texts.private_already_active(user))
                self.opened()
                return
            link = self._links[user] = peer.PeerLink(user, conn)
            self.console.show(texts.start_private(user))
            self.opened()
        if link is not None:
            self._read(link)

    def accept(self, link):
        """A peer's link came through our listener (peer.PeerListener's on_link)."""
        if link.user in self._links or link.user == self.me:
            return False
        self._links[link.user] = link
        try:
            link.conn.send(frames.peer_ok(self.me))
        except GreenchatError:
            self._links.pop(link.user, None)
            return True
        self.console.show(texts.started_private_with_you(link.user))
        self._read(link)
        return True

    def _read(self, link):
        show, user = self.console.show, link.user
        with self.guard(f"reading the private link to {user}"):
            peer.read_link(link, lambda text: show(texts.private_line(user, text), "private"))
        self.end(user, link)

    def end(self, user, link=None, notify=False, quiet=False):
        """Forget the link to `user` (if it is `link`), close it, say so once."""
        current = self._links.get(user)
        if current is None or (link is not None and current is not link):
            return
        del self._links[user]
        if notify:
            current.send_stop()
        current.close()
        if not quiet:
            self.console.show(texts.private_stopped(user))

    def end_all(self):
        """The connection to the server was lost: every link ends, its peer
        told, each end shown."""
        for user in list(self._links):
            self.end(user, notify=True)

    def close_all(self):
        """The client is leaving: every peer is told, quietly."""
        for user in list(self._links):
            self.end(user, notify=True, quiet=True)

    def private(self, user, text):
        """private USER TEXT"""
        link = self._links.get(user)
        if link is None:
            self.console.show(texts.private_not_enabled(user))
            return
        try:
            link.send_private(text)
        except GreenchatError:
            self.end(user, link)

    def stopprivate(self, user):
        """stopprivate USER"""
        if user not in self._links:
            self.console.show(texts.private_not_enabled(user))
            return
        self.end(user, notify=True)
