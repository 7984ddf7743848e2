"""The web listener (issue 15), in this process: the page's files, /texts.json,
the WebSocket carrying the TCP session, and every defence of the TCP port.

A browser drives the page in test_web_browser.py; these tests speak HTTP
and WebSocket directly, so they see exactly what the server sends.
"""

import gc
import json
import logging
import re
import socket as blocking
import threading
import time

import gevent
import pytest
from gevent import socket

from greenchat import certs, frames, texts, tls
from greenchat.codec import encode
from greenchat.server import web
from greenchat.server.web import STATIC_DIR

from support import PASSWORD, Agent, HubTicker, wait_until
from ws_client import Refused, WebSocketClient, upgrade_request

USERS = ["alice", "bob", "carol"]


@pytest.fixture
def server(make_server):
    return make_server(USERS, http_port=0)


def web_address(server):
    return "127.0.0.1", server.web.server_port


def http(address, request, timeout=5):
    """Send raw `request` bytes; the whole response (the server closes, or
    `timeout` passes)."""
    sock = socket.create_connection(address, timeout=timeout)
    try:
        if request:
            sock.sendall(request)
        data = b""
        with gevent.Timeout(timeout, False):
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data
    finally:
        sock.close()


def get(address, path, method="GET", headers=()):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {address[0]}:{address[1]}",
             "Connection: close", *headers]
    response = http(address, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), found, body


def web_agent(server, name, **kwargs):
    return Agent(name, web_address(server), web=True, **kwargs)


def client_frame(payload, opcode=0x1):
    """A masked (key 0), final frame of `payload`, as a client sends it."""
    size = len(payload)
    header = bytes((0x80 | opcode, 0x80 | size)) if size < 126 else \
        bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    return header + b"\0\0\0\0" + payload


def raw_websocket(server, rcvbuf=None):
    """A socket upgraded to a WebSocket on `server`'s /ws, its receive
    buffer set to `rcvbuf` before it connects (a client that reads nothing)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(web_address(server))
    sock.sendall(upgrade_request(*web_address(server)))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return sock


def login_frames(user):
    return b"".join(client_frame(encode(frame)[:-1]) for frame in (
        frames.hello("t"), frames.username(user), frames.password(PASSWORD)))


# The page -------------------------------------------------------------------

def test_the_page_and_its_files_are_served_with_the_security_headers(server):
    status, headers, body = get(web_address(server), "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    with open(f"{STATIC_DIR}/index.html", "rb") as f:
        assert body == f.read()
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for name, (kind, content) in web.load_site().items():
        status, headers, body = get(web_address(server), f"/{name}")
        assert (status, headers["content-type"], body) == (200, kind, content)
        assert "default-src 'self'" in headers["content-security-policy"]


def test_the_page_is_small_and_loads_nothing_from_elsewhere():
    site = web.load_site()
    page = {name: body for name, (_, body) in site.items() if name != "texts.json"}
    assert sum(map(len, page.values())) < 100 * 1024
    elsewhere = re.compile(r"""(?:src|href)\s*=\s*["']?(?:[a-z]+:)?//|url\(\s*["']?(?:[a-z]+:)?//"""
                           r"""|(?:from|import)\s*\(?\s*["'](?:[a-z]+:)?//|@import""", re.I)
    for name, body in page.items():
        text = body.decode("utf-8", "replace")
        assert not elsewhere.search(text), (name, elsewhere.search(text))
        if name.endswith(".html"):
            # The CSP forbids inline script: none is written.
            assert "<script>" not in text.replace(" ", "") and "onclick" not in text, name


def test_texts_json_carries_the_texts_and_the_command_table(server):
    status, headers, body = get(web_address(server), "/texts.json")
    assert status == 200 and headers["content-type"] == "application/json"
    data = json.loads(body)
    assert data["texts"]["WELCOME"] == texts.WELCOME
    assert data["texts"]["RECONNECTING"] == texts.RECONNECTING
    assert data["texts"]["PRIVATE_NOT_IN_WEB"] == \
        "Error. Private messaging is not available in the web client"
    assert data["templates"]["stored_for"].format(user="yoda") == texts.stored_for("yoda")
    assert data["templates"]["history_line"].format(stamp="S", sender="a", text="t") == \
        texts.history_line("S", "a", "t")
    assert data["templates"]["presence_line_on"].format(user="x") == "x logged in"
    names = [command["name"] for command in data["commands"]]
    assert names[:2] == ["message", "broadcast"] and "help" in names
    message = data["commands"][0]
    assert message["syntax"] == "message USER TEXT" and message["aliases"] == ["msg"]


@pytest.mark.parametrize("path", [
    "/../setup.py", "/%2e%2e/setup.py", "/..%2fcredentials.txt", "/%2e%2e%2fcredentials.txt",
    "/web/index.html", "//etc/passwd", "/../../../../etc/passwd", "/texts.py",
    "/__init__.py", "/index.html/", "/.", "/..", "/./index.html", "/%00", "/index.html%00",
    "/credentials.txt", "/README.md",
])
def test_no_path_reaches_past_the_pages_files(server, path):
    status, _, body = get(web_address(server), path)
    assert status == 404
    assert body == b"Not found\n"


def test_request_headers_past_16_kb_are_refused(server):
    # http.client's own limits are 100 lines of 64 KB: 6.4 MB of headers a
    # request, and a WebSocket's environ keeps them for its session's life.
    address = web_address(server)
    response = http(address, upgrade_request(*address, extra=[f"X-Big: {'a' * 65000}"]))
    assert response.startswith(b"HTTP/1.1 431 ")
    for extra in ([f"Cookie: {'c' * 17000}"], [f"X-{i}: {'a' * 200}" for i in range(100)]):
        status, _, _ = get(address, "/", headers=extra)
        assert status == 431
    # A browser's headers, cookies of other sites on the same host included, pass.
    status, _, _ = get(address, "/", headers=[f"Cookie: {'c' * 12000}"] +
                       [f"X-{i}: b" for i in range(60)])
    assert status == 200
    wait_until(lambda: server.connections == 0, lambda: f"{server.connections} held")


def test_a_websocket_keeps_nothing_of_its_requests_size(server):
    # The request's line (up to 8 KB) and headers (up to 16 KB) are the
    # client's to fill: kept for the session's life, every WebSocket open
    # before its login could cost twice what a bare one does.
    address = web_address(server)
    sock = socket.create_connection(address, timeout=5)
    sock.sendall(upgrade_request(*address, path="/ws?" + "q" * 7000,
                                 extra=[f"X-{i}: {'a' * 150}" for i in range(90)]))
    assert sock.recv(100).startswith(b"HTTP/1.1 101 ")
    wait_until(lambda: server.sessions, lambda: "no session")
    handlers = [o for o in gc.get_objects() if isinstance(o, web._Handler)]
    assert len(handlers) == 1
    handler = handlers[0]
    kept = sum(len(str(value)) for value in handler.environ.values()) + \
        len(handler.requestline or "") + len(handler.path or "")
    assert kept < 512
    sock.close()


def test_only_get_and_head(server):
    status, headers, body = get(web_address(server), "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, headers, _ = get(web_address(server), "/", method="POST",
                             headers=["Content-Length: 0"])
    assert status == 405 and headers["allow"] == "GET, HEAD"


# The WebSocket ----------------------------------------------------------------

def test_a_web_user_and_a_tcp_user_talk_as_two_tcp_users_do(server):
    alice = web_agent(server, "alice")
    bob = Agent("bob", server.address)
    assert alice.login()["text"] == texts.WELCOME
    assert bob.login()["status"] == "ok"
    alice.wait_for(lambda f: f == frames.presence("bob", True))
    _, reply = alice.command("message bob hello from the web")
    assert reply["ok"]
    assert bob.wait_for(lambda f: f["type"] == "message")["text"] == "hello from the web"
    _, reply = bob.command("broadcast hello everyone")
    assert reply["delivered"] == 1
    got = alice.wait_for(lambda f: f["type"] == "message")
    assert (got["from"], got["text"], got.get("broadcast")) == ("bob", "hello everyone", True)
    assert alice.command("whoelse")[1]["lines"] == ["bob"]
    assert bob.command("block alice")[1]["lines"] == [texts.blocked("alice")]
    assert alice.command("message bob again")[1]["lines"] == [texts.RECIPIENT_BLOCKED_YOU]
    bye = alice.logout()
    assert bye == frames.bye(frames.LOGOUT, texts.GOODBYE)
    assert alice.websocket.close_code == 1000
    # No more presence: she logged out, and bob blocks her anyway.
    bob.logout()


def test_a_wrong_password_then_the_right_one_and_the_lock(make_server):
    server = make_server(USERS, http_port=0, block_duration=60)
    alice = web_agent(server, "alice")
    assert alice.login(password="wrong")["text"] == texts.INVALID_PASSWORD
    assert alice.login()["status"] == "ok"
    alice.logout()
    carol = web_agent(server, "carol")
    for _ in range(2):
        carol.login(password="wrong")
    assert carol.login(password="wrong")["text"] == texts.ACCOUNT_NOW_BLOCKED
    assert carol.login()["text"] == texts.ACCOUNT_BLOCKED


def test_startprivate_to_a_web_user_says_it_cannot_take_links(server):
    alice, bob = web_agent(server, "alice"), Agent("bob", server.address)
    alice.login()
    bob.login()
    assert bob.command("startprivate alice")[1]["lines"] == [texts.private_unavailable("alice")]


def test_a_dropped_page_resumes_and_misses_nothing(server):
    alice, bob = web_agent(server, "alice"), Agent("bob", server.address)
    alice.login()
    bob.login()
    bob.command("message alice one")
    alice.wait_for(lambda f: f.get("text") == "one")
    alice.drop()
    wait_until(lambda: server.online["alice"].state.value == "hibernating",
               lambda: "alice did not hibernate")
    bob.command("message alice two")
    assert alice.resume()["resumed"] is True
    alice.wait_for(lambda f: f.get("text") == "two")
    assert alice.texts() == ["one", "two"] and not alice.repeats
    # Taken back over TCP this time: a session is the same on either.
    alice.drop()
    wait_until(lambda: server.online["alice"].state.value == "hibernating",
               lambda: "alice did not hibernate")
    bob.command("message alice three")
    tcp_alice = Agent("alice", server.address)
    tcp_alice.last_id = alice.last_id
    assert tcp_alice.resume(token=alice.token)["resumed"] is True
    assert tcp_alice.wait_for(lambda f: f.get("text") == "three")
    assert tcp_alice.texts() == ["three"]


def test_a_foreign_origin_is_refused_and_the_own_one_and_none_accepted(server):
    address = web_address(server)
    with pytest.raises(Refused) as exc:
        WebSocketClient(address, origin="http://evil.example")
    assert exc.value.status == 403
    own = WebSocketClient(address, origin=f"http://127.0.0.1:{address[1]}")
    own.close()
    WebSocketClient(address).close()


def test_more_origins_are_allowed_when_named(make_server):
    server = make_server(USERS, http_port=0, http_origins=("https://app.example.org",))
    WebSocketClient(web_address(server), origin="https://app.example.org").close()
    with pytest.raises(Refused):
        WebSocketClient(web_address(server), origin="https://other.example.org")


def test_a_refused_upgrade_holds_nothing(server):
    for _ in range(20):
        http(web_address(server), upgrade_request("127.0.0.1", 1, origin="http://evil.example"))
    wait_until(lambda: server.connections == 0, lambda: f"{server.connections} held")


def test_a_frame_too_large_ends_the_connection_with_the_tcp_error(make_server):
    server = make_server(USERS, http_port=0, max_frame=1024)
    client = WebSocketClient(web_address(server))
    client.send(frames.hello("t"))
    client.send(json.dumps({"type": "username", "username": "x" * 2000}))
    got = [frame for batch in client.batches() for frame in batch]
    assert frames.error(texts.FRAME_TOO_LARGE) in got


def test_a_binary_message_is_a_malformed_frame(server):
    client = WebSocketClient(web_address(server))
    client.send(frames.hello("t"))
    client.send(b'{"type":"username","username":"alice"}')
    got = [frame for batch in client.batches() for frame in batch]
    assert frames.error(texts.MALFORMED_FRAME) in got


def test_a_flood_over_the_websocket_is_cut_off(make_server):
    server = make_server(USERS, http_port=0, command_rate=5, command_burst=10)
    client = WebSocketClient(web_address(server))
    client.send(frames.hello("t"))
    for _ in range(50):
        client.send({"type": "username", "username": "alice"})
    got = [frame for batch in client.batches() for frame in batch]
    assert frames.error(texts.FLOODING) in got


def test_web_connections_count_in_the_per_network_limit(make_server):
    server = make_server(USERS, http_port=0, max_per_address=3)
    held = [WebSocketClient(web_address(server)) for _ in range(2)]
    tcp = socket.create_connection(server.address)
    wait_until(lambda: server.connections == 3, lambda: f"{server.connections} held")
    # Refused at the accept, before any request is read: as on the TCP port.
    response = http(web_address(server), b"")
    assert response.startswith(b"HTTP/1.1 503") and texts.TOO_MANY_CONNECTIONS.encode() in response
    head, _, body = response.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}\r\n".encode() in head + b"\r\n"
    for client in held:
        client.close()
    tcp.close()


def test_a_silent_http_connection_is_closed(server, monkeypatch):
    monkeypatch.setattr(web, "HTTP_TIMEOUT", 0.3)
    sock = socket.create_connection(web_address(server))
    sock.sendall(b"GET / HTTP/1.1\r\n")          # and never the rest
    data = b""
    with gevent.Timeout(5):
        while chunk := sock.recv(100):
            data += chunk
    assert data == b"" or data.startswith(b"HTTP/1.1 4")
    wait_until(lambda: server.connections == 0, lambda: f"{server.connections} held")


def test_a_request_trickled_in_is_cut_off_at_its_deadline(server, monkeypatch):
    monkeypatch.setattr(web, "HTTP_TIMEOUT", 0.5)
    sock = socket.create_connection(web_address(server))
    sock.sendall(b"GET / HTTP/1.1\r\n")
    started = gevent.get_hub().loop.now()
    with gevent.Timeout(5):
        try:
            # A header byte every 0.1 s: each read is quick, the request never whole.
            for _ in range(40):
                sock.sendall(b"X")
                gevent.sleep(0.1)
        except OSError:
            pass
    assert gevent.get_hub().loop.now() - started < 1.5
    wait_until(lambda: server.connections == 0, lambda: f"{server.connections} held")


def test_a_client_that_stops_reading_the_page_is_no_server_error(server, monkeypatch, capfd,
                                                                  caplog):
    # Its send times out: a client's doing, not a traceback on the server's
    # stderr and an error in its log every time a client does it.
    monkeypatch.setattr(web, "HTTP_TIMEOUT", 0.3)
    address = web_address(server)
    readers = []
    for _ in range(3):
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(address)
        request = f"GET /session.js HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n\r\n"
        reader.sendall(request.encode() * 300)
        readers.append(reader)
    wait_until(lambda: server.connections == 0, lambda: f"{server.connections} held")
    assert "Traceback" not in capfd.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    for reader in readers:
        reader.close()


class OutsideClient:
    """A client in two threads with the standard library's blocking socket,
    so it keeps going whatever the hub does: it sends `first`, then `more`
    again and again for `seconds`, and reads everything it is sent."""

    def __init__(self, address, first, more, seconds):
        self.sock = blocking.create_connection(address)
        self.until = time.monotonic() + seconds
        self.received = []
        self.threads = [threading.Thread(target=self._send, args=(first, more), daemon=True),
                        threading.Thread(target=self._read, daemon=True)]
        for thread in self.threads:
            thread.start()

    def _send(self, first, more):
        try:
            self.sock.sendall(first)
            while time.monotonic() < self.until:
                self.sock.sendall(more)
        except OSError:
            pass

    def _read(self):
        try:
            while data := self.sock.recv(1 << 20):
                self.received.append(data)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.shutdown(blocking.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for thread in self.threads:
            thread.join(5)


def test_a_client_pipelining_requests_without_pause_does_not_hold_the_server(server):
    # pywsgi reads requests from its buffer, or a socket with bytes waiting,
    # and writes to one with room, without ever waiting: one client sending
    # requests as fast as it can held the hub (every other client) as long
    # as it went on.
    bob = Agent("bob", server.address)
    bob.login()
    requests = b"HEAD /nothing HTTP/1.1\r\nHost: x\r\n\r\n" * 200
    ticker = HubTicker()
    attacker = OutsideClient(web_address(server), requests, requests, 1.0)
    slowest = 0
    while time.monotonic() < attacker.until:
        started = time.monotonic()
        bob.command("whoelse")
        slowest = max(slowest, time.monotonic() - started)
        gevent.sleep(0.01)
    gap = ticker.stop()
    attacker.close()
    assert slowest < 0.5 and gap < 0.3, (slowest, gap)


@pytest.mark.parametrize("framing", [b"Content-Length: 1000000000000",
                                     b"Transfer-Encoding: chunked"])
def test_a_request_body_without_end_is_not_read(server, framing):
    # No request here has a body. pywsgi read one all through after the
    # answer, to keep the connection in step: one sent fast without end held
    # the connection for ever, with no deadline, and the hub (it reads a
    # socket with bytes waiting without ever waiting).
    bob = Agent("bob", server.address)
    bob.login()
    body = b"\0" * 65536 if framing.startswith(b"Content") else b"1\r\nx\r\n" * 10000
    ticker = HubTicker()
    client = OutsideClient(web_address(server),
                           b"GET / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n", body, 1.5)
    at_least = time.monotonic() + 0.3
    while time.monotonic() < client.until and \
            (time.monotonic() < at_least or server.connections > 1):
        bob.command("whoelse")
        gevent.sleep(0.01)
    gap = ticker.stop()
    held = server.connections
    client.close()
    assert gap < 0.3 and held == 1, (gap, held)        # bob's alone
    assert b"".join(client.received).startswith(b"HTTP/1.1 ")


def test_the_login_deadline_holds_for_a_websocket(make_server):
    server = make_server(USERS, http_port=0, login_timeout=0.5)
    client = WebSocketClient(web_address(server))
    with gevent.Timeout(5):
        got = [frame for batch in client.batches() for frame in batch]
    assert frames.error(texts.LOGIN_TIMEOUT) in got


def test_stopping_ends_web_sessions_and_idle_connections_at_once(make_server):
    server = make_server(USERS, http_port=0)
    alice = web_agent(server, "alice")
    alice.login()
    idle = socket.create_connection(web_address(server))
    idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")     # kept alive after
    started = gevent.get_hub().loop.now()
    with gevent.Timeout(8):
        server.stop()
    assert gevent.get_hub().loop.now() - started < 5
    assert alice.wait_for(lambda f: f["type"] == "bye")["reason"] == frames.SHUTDOWN


def test_stopping_does_not_wait_for_a_page_nobody_reads(make_server):
    server = make_server(USERS, http_port=0)
    address = web_address(server)
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(address)
    request = f"GET /session.js HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n\r\n"
    reader.sendall(request.encode() * 300)          # and reads nothing
    wait_until(lambda: server.connections == 1, lambda: f"{server.connections} held")
    gevent.sleep(0.3)                               # its answers fill the buffers
    started = gevent.get_hub().loop.now()
    with gevent.Timeout(8):
        server.stop(timeout=4)
    assert gevent.get_hub().loop.now() - started < 2
    reader.close()


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01"])
def test_stopping_does_not_wait_for_a_tls_handshake(make_server, tmp_path, sent):
    # Silent, or a ClientHello's first bytes and no more: the handshake
    # waits HTTP_TIMEOUT, and stop() waited for it.
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certs.write_pair(*certs.make_pair("localhost"), cert, key)
    server = make_server(USERS, http_port=0, tls_cert=str(cert), tls_key=str(key))
    client = socket.create_connection(web_address(server))
    client.sendall(sent)
    wait_until(lambda: server.connections == 1, lambda: f"{server.connections} held")
    gevent.sleep(0.2)
    started = gevent.get_hub().loop.now()
    with gevent.Timeout(8):
        server.stop(timeout=4)
    assert gevent.get_hub().loop.now() - started < 2
    client.close()


def test_a_taken_port_leaves_chat_running_without_the_web_client(make_server, caplog):
    first = make_server(USERS, http_port=0)
    with caplog.at_level(logging.WARNING, logger="greenchat.server"):
        second = make_server.again(http_port=first.web.server_port,
                                   data_dir=str(make_server.tmp_path / "data2"))
    assert second.web is None
    assert any("serving chat without the web client" in r.getMessage() for r in caplog.records)
    assert Agent("bob", second.address).login()["status"] == "ok"


def test_https_and_wss_use_the_chat_certificate(make_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    certs.write_pair(*certs.make_pair("localhost"), cert, key)
    server = make_server(USERS, http_port=0, tls_cert=str(cert), tls_key=str(key))
    assert server.web.url.startswith("https://")
    context = tls.client_context(str(cert))
    context.check_hostname = False
    alice = web_agent(server, "alice", tls_context=context)
    assert alice.login()["status"] == "ok"
    # Plain HTTP to the HTTPS port is told, and held no longer.
    response = http(web_address(server), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400") and b"HTTPS only" in response


def test_a_client_that_sends_pings_and_reads_nothing_is_cut_off(make_server):
    # Each ping costs a pong in the outbox: held to the mailbox's limits as
    # replies are, or a client that never reads grows it without end.
    server = make_server(USERS, http_port=0, mailbox_limit_bytes=16 * 1024)
    sock = raw_websocket(server, rcvbuf=4096)
    sock.sendall(login_frames("alice"))
    session = wait_until(lambda: server.online.get("alice"), lambda: "alice not logged in")
    # Small kernel buffers on both ends: what the client does not read
    # stays in the outbox at once.
    session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    pings = client_frame(b"p" * 125, opcode=0x9) * 32 + client_frame(b'{"type":"pong"}')
    with gevent.Timeout(10, False):
        try:
            # Enough to fill the kernel's buffers both ways, and the outbox.
            for _ in range(200):
                if session.end_reason is not None:
                    break
                sock.sendall(pings)
                gevent.sleep(0.001)         # the server's turn to read them
        except OSError:
            pass
    assert session.outbox.nbytes <= 16 * 1024 + 200
    wait_until(lambda: "alice" not in server.online, lambda: f"alice {session.state}")
    assert session.end_reason == "slow"
    sock.close()
