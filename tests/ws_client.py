"""A WebSocket client for tests: wsproto over a gevent socket.

It speaks as a browser does (masked frames, one JSON frame per text
message), and lets tests send what a browser never would: pings, binary
messages, fragments, bad UTF-8, any Origin.
"""

import base64
import os

from gevent import socket
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from greenchat import tls
from greenchat.codec import encode, parse_text


class Refused(Exception):
    """The server answered the upgrade with another status."""

    def __init__(self, status, body=b""):
        super().__init__(f"upgrade refused: {status}")
        self.status = status
        self.body = body


def upgrade_request(host, port, path="/ws", origin=None, key=None, extra=()):
    """The bytes of a browser's upgrade request (for raw-socket tests)."""
    key = key or base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class WebSocketClient:
    """One WebSocket to `address`'s /ws; raises Refused if not upgraded."""

    def __init__(self, address, origin=None, tls_context=None, timeout=10):
        host, port = address
        self.sock = socket.create_connection(address, timeout=timeout)
        if tls_context is not None:
            self.sock = tls.connect(self.sock, tls_context, timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [(b"Origin", origin.encode())] if origin is not None else []
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target="/ws",
                                               extra_headers=headers)))
        self._parts = []
        self.events = []          # events read past the ones returned
        status, body = None, b""
        while status is None:
            data = self.sock.recv(65536)
            if not data:
                raise Refused("closed")
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    status = 101
                elif isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise Refused(status)
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise Refused(status, body)
                elif status == 101:
                    self.events.append(event)
        self.sock.settimeout(None)

    def send(self, frame):
        """A frame (dict) as one text message; a str as it is; bytes as binary."""
        if isinstance(frame, dict):
            frame = encode(frame)[:-1].decode("utf-8")
        self.sock.sendall(self.ws.send(Message(data=frame)))

    def send_event(self, event):
        self.sock.sendall(self.ws.send(event))

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_events(self):
        """The events of the next read; [] once the connection is closed."""
        if self.events:
            events, self.events = self.events, []
            return events
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            return []
        self.ws.receive_data(data)
        return list(self.ws.events())

    def batches(self):
        """The frames of each read, a list a read, until the server closes;
        answers pings, and records the close in `close_code`."""
        self.close_code = None
        while True:
            events = self.read_events()
            if not events:
                return
            batch = []
            for event in events:
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        batch.append(parse_text("".join(self._parts)))
                        self._parts = []
                elif isinstance(event, BytesMessage):
                    raise AssertionError("the server sent a binary message")
                elif isinstance(event, Ping):
                    self.send_event(event.response())
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    try:
                        self.send_event(event.response())
                    except Exception:
                        pass
            yield batch
            if self.close_code is not None:
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
