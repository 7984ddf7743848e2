"""Unit tests of the sans-IO codec: no sockets anywhere."""

import subprocess
import sys

import pytest

from greenchat.codec import Decoder, encode, parse
from greenchat.errors import FrameTooLarge, MalformedFrame, ProtocolError

FRAMES = [
    {"type": "message", "from": "a", "text": "plain"},
    {"type": "message", "from": "a", "text": 'quotes " and \\ backslash'},
    {"type": "message", "from": "a", "text": "new\nline\r\nand\ttab and \x00 nul"},
    {"type": "message", "from": "ü", "text": "ünïcödé 🙂 中文"},
    {"type": "message", "from": "a", "text": ""},
    {"type": "reply", "id": 7, "ok": True, "lines": ["x", "y"]},
]


def test_round_trip_of_many_frames_in_one_feed():
    data = b"".join(encode(f) for f in FRAMES)
    assert data.count(b"\n") == len(FRAMES)      # no raw newline inside a frame
    assert Decoder().feed(data) == FRAMES


def test_frames_split_at_every_byte_boundary():
    data = b"".join(encode(f) for f in FRAMES)
    for cut in range(len(data) + 1):
        decoder = Decoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == FRAMES


def test_byte_at_a_time():
    data = b"".join(encode(f) for f in FRAMES)
    decoder = Decoder()
    out = []
    for i in range(len(data)):
        out += decoder.feed(data[i:i + 1])
    assert out == FRAMES
    assert decoder.pending == 0


def test_lone_surrogate_falls_back_to_ascii_json():
    frame = {"type": "message", "text": "bad \udcff byte"}
    data = encode(frame)
    assert data.isascii()
    assert Decoder().feed(data) == [frame]


def test_blank_lines_are_ignored():
    assert Decoder().feed(b"\n\n  \n" + encode(FRAMES[0]) + b"\n") == [FRAMES[0]]


def test_frame_of_exactly_the_cap_is_accepted_and_one_more_byte_is_not():
    cap = 1024
    frame = {"type": "x", "pad": ""}
    frame["pad"] = "p" * (cap - len(encode(frame)) + 1)
    data = encode(frame)
    assert len(data) == cap + 1                   # cap bytes plus the newline
    assert Decoder(cap).feed(data) == [frame]
    frame["pad"] += "p"
    with pytest.raises(FrameTooLarge):
        Decoder(cap).feed(encode(frame))


def test_oversize_without_newline_is_refused_before_the_end_arrives():
    decoder = Decoder(1024)
    decoder.feed(b"{" + b"x" * 1000)
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"x" * 100)


@pytest.mark.parametrize("line", [
    b"\xff\xfe\n", b"not json\n", b"[1,2]\n", b'"type"\n', b"{}\n", b'{"type": 5}\n',
    b'{"type": null}\n', b"{'type': 'x'}\n", b'{"type": "x"\n', b"NaN\n",
])
def test_malformed_frames(line):
    with pytest.raises(MalformedFrame):
        Decoder().feed(line)


def test_deep_nesting_is_a_protocol_error_not_a_crash():
    deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    with pytest.raises(ProtocolError):
        Decoder(1 << 20).feed(deep)
    with pytest.raises(MalformedFrame):
        parse(b'{"type": "x", "v": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")


def test_codec_imports_no_socket_and_no_gevent():
    code = ("import sys, greenchat.codec; "
            "bad = [m for m in ('socket', 'gevent', 'select', 'ssl') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("start", [b"\x16\x03\x01\x02\x00\x01", b"GET / HTTP/1.1\r\n", b"  x",
                                   b"\x00"])
def test_a_frame_not_starting_with_a_brace_is_refused_before_its_end(start):
    # A TLS client hello or an HTTP request on the plain port is answered at
    # once, not when a newline or the size cap happens to come.
    with pytest.raises(MalformedFrame):
        Decoder().feed(start)


def test_leading_blanks_and_a_split_brace_are_fine():
    decoder = Decoder()
    assert decoder.feed(b"  ") == []
    assert decoder.feed(b' {"type":') == []
    assert decoder.feed(b'"x"}\n') == [{"type": "x"}]


def test_more_than_64_kib_of_blank_bytes_in_a_row_is_malformed():
    from greenchat.codec import MAX_BLANK
    for chunk in (b"\n", b" \t\r\n", b" " * 1000 + b"\n"):
        decoder = Decoder(1 << 20)
        fed = 0
        with pytest.raises(MalformedFrame):
            while fed <= MAX_BLANK + len(chunk):
                assert decoder.feed(chunk) == []
                fed += len(chunk)
        assert fed > MAX_BLANK - len(chunk)
    # Blanks with no newline at all count too, with a frame cap above them.
    decoder = Decoder(1 << 20)
    decoder.feed(b" " * MAX_BLANK)
    with pytest.raises(MalformedFrame):
        decoder.feed(b" ")


def test_a_frame_resets_the_blank_count():
    from greenchat.codec import MAX_BLANK
    decoder = Decoder()
    for _ in range(5):
        assert decoder.feed(b"\n" * (MAX_BLANK - 100)) == []
        assert decoder.feed(b'  {"type":"x"}\n') == [{"type": "x"}]
    assert decoder.feed(b"\n" * (MAX_BLANK - 100) + b'{"type":"y"}\n' + b"\n" * 50) == \
        [{"type": "y"}]
