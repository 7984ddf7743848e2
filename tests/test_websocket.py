"""The sans-IO WebSocket module: upgrade checks, messages in, frames out."""

import json
import random

import pytest
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason, FrameDecoder

from greenchat import websocket as ws
from greenchat.codec import encode
from greenchat.errors import ConnectionLost, Flooding, FrameTooLarge, MalformedFrame


def environ(**overrides):
    base = {"REQUEST_METHOD": "GET", "HTTP_HOST": "chat.example.org:8080",
            "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "keep-alive, Upgrade",
            "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==",
            "HTTP_SEC_WEBSOCKET_VERSION": "13"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_the_accept_token_is_rfc_6455s_example():
    assert ws.accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_an_upgrade_from_the_servers_own_page_is_accepted():
    headers = dict(ws.check_upgrade(environ(HTTP_ORIGIN="http://chat.example.org:8080"), "http"))
    assert headers["Sec-WebSocket-Accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert headers["Upgrade"] == "websocket"


@pytest.mark.parametrize("origin, host, scheme, allowed", [
    (None, "chat.example.org:8080", "http", True),        # not a browser
    ("http://chat.example.org:8080", "chat.example.org:8080", "http", True),
    ("HTTP://Chat.Example.ORG:8080", "chat.example.org:8080", "http", True),
    ("http://chat.example.org", "chat.example.org", "http", True),      # both port 80
    ("https://chat.example.org", "chat.example.org", "https", True),    # both port 443
    ("https://chat.example.org", "chat.example.org:443", "https", True),
    ("http://evil.example", "chat.example.org:8080", "http", False),
    ("http://chat.example.org:9999", "chat.example.org:8080", "http", False),
    ("http://chat.example.org.evil.example:8080", "chat.example.org:8080", "http", False),
    ("http://chat.example.org", "chat.example.org", "https", False),    # 80 is not 443
    ("null", "chat.example.org:8080", "http", False),                    # a sandboxed page
    ("http://chat.example.org:8080", None, "http", False),               # no Host to match
    ("http://[::1]:8080", "[::1]:8080", "http", True),
    ("http://127.0.0.1:8080", "[::1]:8080", "http", False),
    ("http://x:notaport", "x:8080", "http", False),
])
def test_the_origin_must_be_the_host_and_port_asked_for(origin, host, scheme, allowed):
    assert ws.origin_allowed(origin, host, scheme) is allowed


def test_more_origins_may_be_allowed():
    allowed = {ws.origin_key("https://app.example.org")}
    assert ws.origin_allowed("https://app.example.org", "chat.example.org:8080", "http", allowed)
    assert ws.origin_allowed("https://app.example.org:443", "chat.example.org:8080", "http",
                             allowed)
    assert not ws.origin_allowed("https://app.example.org:444", "chat.example.org:8080",
                                 "http", allowed)


@pytest.mark.parametrize("overrides, status", [
    ({"HTTP_ORIGIN": "http://evil.example"}, "403 Forbidden"),
    ({"REQUEST_METHOD": "POST"}, "405 Method Not Allowed"),
    ({"HTTP_UPGRADE": None}, "426 Upgrade Required"),
    ({"HTTP_UPGRADE": "h2c"}, "426 Upgrade Required"),
    ({"HTTP_CONNECTION": "keep-alive"}, "426 Upgrade Required"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, "426 Upgrade Required"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": None}, "426 Upgrade Required"),
    ({"HTTP_SEC_WEBSOCKET_KEY": None}, "400 Bad Request"),
    ({"HTTP_SEC_WEBSOCKET_KEY": "c2hvcnQ="}, "400 Bad Request"),          # 5 bytes
    ({"HTTP_SEC_WEBSOCKET_KEY": "not base64 at all!!!!!!="}, "400 Bad Request"),
    ({"HTTP_SEC_WEBSOCKET_KEY": "é" * 24}, "400 Bad Request"),
])
def test_a_bad_upgrade_is_refused_with_its_status(overrides, status):
    with pytest.raises(ws.UpgradeRefused) as exc:
        ws.check_upgrade(environ(**overrides), "http")
    assert exc.value.status == status


def test_a_refused_version_names_the_one_spoken():
    with pytest.raises(ws.UpgradeRefused) as exc:
        ws.check_upgrade(environ(HTTP_SEC_WEBSOCKET_VERSION="8"), "http")
    assert ("Sec-WebSocket-Version", "13") in exc.value.headers


class Browser:
    """The client end, to make what a browser sends."""

    def __init__(self):
        self.connection = Connection(ConnectionType.CLIENT)

    def text(self, text, finished=True):
        return self.connection.send(TextMessage(data=text, message_finished=finished))

    def frame(self, frame):
        return self.text(json.dumps(frame))

    def event(self, event):
        return self.connection.send(event)


def decoder(max_frame=1024):
    replies = []
    return ws.MessageDecoder(max_frame, replies.append), replies


def test_each_text_message_is_one_frame():
    browser, (dec, _) = Browser(), decoder()
    data = browser.frame({"type": "hello", "version": 1}) + browser.frame({"type": "pong"})
    assert dec.feed(data) == [{"type": "hello", "version": 1}, {"type": "pong"}]


def test_a_message_is_whole_whatever_its_whitespace():
    # One JSON text across lines is one frame, not the codec's lines.
    browser, (dec, _) = Browser(), decoder()
    assert dec.feed(browser.text('{\n"type":\n"pong"\n}\n')) == [{"type": "pong"}]


def test_a_message_in_fragments_and_pieces_is_put_together():
    browser, (dec, _) = Browser(), decoder()
    data = browser.text('{"type":"comm', finished=False) + browser.text('and","line":"héllo"}')
    got = []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
    assert got == [{"type": "command", "line": "héllo"}]
    assert dec.pending == 0


def test_a_message_may_come_in_a_thousand_fragments_not_without_end():
    browser, (dec, _) = Browser(), decoder(max_frame=65536)
    text = json.dumps({"type": "command", "line": "é" * 3000}, ensure_ascii=False)
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    assert 1000 < len(pieces) <= 1024
    data = b"".join(browser.text(piece, finished=False) for piece in pieces[:-1]) + \
        browser.text(pieces[-1])
    assert dec.feed(data) == [json.loads(text)]
    # Empty fragments add nothing to the cap's count: uncounted, a message
    # that never ends grew the decoder without end, 6 bytes a fragment.
    dec.feed(browser.text('{"type":', finished=False))
    empty = browser.text("", finished=False)
    with pytest.raises(Flooding):
        for _ in range(20):
            dec.feed(empty * 500)


def test_a_frame_trickled_in_a_byte_a_read_is_not_kept_in_pieces():
    # Each read of a frame's middle is a piece: 2 bytes of UTF-8 a 1-character
    # string of 74 bytes, joined now and then, not kept apart to the cap.
    browser, (dec, _) = Browser(), decoder(max_frame=65536)
    data = browser.text(json.dumps({"type": "command", "line": "ā" * 20000},
                                   ensure_ascii=False))
    got = []
    for i in range(len(data)):
        got += dec.feed(data[i:i + 1])
        assert len(dec._parts) <= 256
    assert got == [{"type": "command", "line": "ā" * 20000}]


@pytest.mark.parametrize("text", ['[1]', '{"type": 3}', 'nonsense', '{"type":"x"'])
def test_a_message_that_is_no_frame_is_malformed(text):
    browser, (dec, _) = Browser(), decoder()
    with pytest.raises(MalformedFrame):
        dec.feed(browser.text(text))


def test_a_binary_message_is_malformed():
    browser, (dec, _) = Browser(), decoder()
    with pytest.raises(MalformedFrame):
        dec.feed(browser.event(BytesMessage(data=b'{"type":"pong"}')))


def test_bad_utf8_is_malformed():
    # A text frame holding 0xff, masked as a browser would mask it.
    payload = bytes([0xFF, 0xFE])
    mask = b"\x01\x02\x03\x04"
    data = bytes((0x81, 0x80 | len(payload))) + mask + \
        bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    dec, _ = decoder()
    with pytest.raises(MalformedFrame):
        dec.feed(data)


def test_an_unmasked_client_frame_is_malformed():
    dec, _ = decoder()
    with pytest.raises(MalformedFrame):
        dec.feed(bytes((0x81, 2)) + b"{}")


def test_a_message_over_the_cap_is_refused_before_it_ends():
    browser, (dec, _) = Browser(), decoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(browser.text('{"type":"x","t":"' + "a" * 2000, finished=False))


def test_the_cap_counts_bytes_as_on_tcp():
    browser, (dec, _) = Browser(), decoder(max_frame=1024)
    # 400 characters, 1,200 bytes of UTF-8.
    with pytest.raises(FrameTooLarge):
        dec.feed(browser.frame({"type": "x", "t": "€" * 400}))
    dec, _ = decoder(max_frame=1024)
    assert dec.feed(browser.frame({"type": "x", "t": "a" * 900}))


def test_a_ping_is_answered_through_the_writer():
    browser, (dec, replies) = Browser(), decoder()
    assert dec.feed(browser.event(Ping(payload=b"hi"))) == []
    assert len(replies) == 1 and isinstance(replies[0], ws.Control)
    frame = FrameDecoder(client=True)
    frame.receive_bytes(bytes(replies[0]))
    pong = frame.process_buffer()
    assert pong.opcode == 0xA and pong.payload == b"hi"


def test_a_stream_of_pings_is_flooding():
    browser, (dec, _) = Browser(), decoder()
    with pytest.raises(Flooding):
        dec.feed(b"".join(browser.event(Ping(payload=b"")) for _ in range(100)))


def test_pings_between_messages_are_fine():
    browser, (dec, _) = Browser(), decoder()
    for _ in range(100):
        dec.feed(browser.event(Ping()) + browser.frame({"type": "pong"}))


def test_a_close_is_answered_and_ends_the_connection():
    browser, (dec, replies) = Browser(), decoder()
    with pytest.raises(ConnectionLost):
        dec.feed(browser.event(CloseConnection(code=CloseReason.GOING_AWAY)))
    assert replies and replies[0][0] == 0x88


def test_a_protocol_close_code_is_a_malformed_peer():
    browser, (dec, _) = Browser(), decoder()
    with pytest.raises(MalformedFrame):
        dec.feed(browser.event(CloseConnection(code=CloseReason.PROTOCOL_ERROR)))


def read_frames(data):
    """What a browser reads from server bytes: (opcode, payload) a frame."""
    frame_decoder = FrameDecoder(client=True)
    frame_decoder.receive_bytes(data)
    out = []
    while (frame := frame_decoder.process_buffer()) is not None:
        out.append((frame.opcode, frame.payload))
    return out


@pytest.mark.parametrize("size", [0, 1, 124, 125, 126, 127, 65535, 65536, 70000])
def test_wrapped_frames_are_text_messages_without_their_newline(size):
    frame = encode({"type": "message", "text": "x" * size})
    data, counted = ws.wrap([frame, frame])
    assert counted == 2 * len(frame)
    got = read_frames(data)
    assert [opcode for opcode, _ in got] == [0x1, 0x1]
    assert [payload for _, payload in got] == [frame[:-1]] * 2


def test_control_frames_go_as_they_are_between_messages():
    first, second = encode({"type": "a"}), encode({"type": "b"})
    close = ws.close_frame()
    data, counted = ws.wrap([first, close, second])
    assert counted == len(first) + len(close) + len(second)
    assert [opcode for opcode, _ in read_frames(data)] == [0x1, 0x8, 0x1]


def test_a_framer_frames_a_broadcast_once_for_every_recipient():
    framer = ws.Framer()
    frame = encode({"type": "message", "text": "x" * 200})
    first = framer(frame)
    assert framer(frame) is first                     # the next recipient's: no work
    assert read_frames(first) == [(0x1, frame[:-1])]
    other = encode({"type": "message", "text": "y"})
    assert read_frames(framer(other)) == [(0x1, other[:-1])]
    # Framed already, it goes through a batch as it is.
    data, counted = ws.wrap([first, encode({"type": "a"})])
    assert counted == len(first) + len(encode({"type": "a"}))
    assert [payload for _, payload in read_frames(data)] == [frame[:-1], b'{"type":"a"}']


def test_frames_cut_anywhere_are_put_together():
    browser, (dec, _) = Browser(), decoder(max_frame=65536)
    sent = [{"type": "command", "line": "x" * size} for size in (0, 90, 200, 70000 // 2)]
    data = b"".join(browser.frame(frame) for frame in sent)
    got = []
    for i in range(0, len(data), 7):
        got += dec.feed(data[i:i + 7])
    assert got == sent and dec.pending == 0


def test_messages_fragments_and_pings_in_one_read():
    browser, (dec, replies) = Browser(), decoder()
    data = browser.frame({"type": "a"}) + browser.event(Ping(payload=b"p")) + \
        browser.frame({"type": "b"}) + browser.text('{"type":', finished=False) + \
        browser.text('"c"}')
    assert dec.feed(data) == [{"type": "a"}, {"type": "b"}, {"type": "c"}]
    assert len(replies) == 1
    assert dec.feed(browser.frame({"type": "d"})) == [{"type": "d"}]


def test_random_mixes_cut_at_random_come_out_whole_and_in_order():
    rng = random.Random(15)
    for _ in range(200):
        browser, (dec, replies) = Browser(), decoder(max_frame=65536)
        data, sent, pings = b"", [], 0
        for n in range(rng.randint(1, 8)):
            frame = {"type": "t", "n": n, "text": "é" * rng.choice((0, 3, 60, 130, 3000))}
            kind = rng.random()
            if kind < 0.6:
                data += browser.frame(frame)
            elif kind < 0.8:
                text = json.dumps(frame)
                cut = rng.randint(0, len(text))
                data += browser.text(text[:cut], finished=False) + browser.text(text[cut:])
            else:
                data += browser.event(Ping(payload=b"x"))
                pings += 1
                continue
            sent.append(frame)
        got, pos = [], 0
        while pos < len(data):
            step = rng.randint(1, 300)
            got += dec.feed(data[pos:pos + step])
            pos += step
        assert got == sent and len(replies) == pings and dec.pending == 0


def test_a_length_not_in_its_shortest_form_is_malformed():
    payload = b'{"type":"pong"}'
    data = bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload
    dec, _ = decoder()
    with pytest.raises(MalformedFrame):
        dec.feed(data)


def test_a_frame_over_the_cap_is_refused_before_its_end():
    dec, _ = decoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(bytes((0x81, 0x80 | 126)) + (2000).to_bytes(2, "big") + b"\0\0\0\0" +
                 b"a" * 1100)
