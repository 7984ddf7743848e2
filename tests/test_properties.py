"""Property tests (hypothesis) of the codec and the command parser: whatever
the bytes or the line, the only outcomes are a result or our own error."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenchat.codec import Decoder, encode
from greenchat.commands import COMMANDS, parse_line
from greenchat.errors import InvalidCommand, ProtocolError

json_text = st.text()
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "reply", "command", "x"])},
    optional={"from": json_text, "text": json_text, "id": st.integers(),
              "ok": st.booleans(), "lines": st.lists(json_text, max_size=5)})


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=8), st.data())
def test_any_frames_survive_any_split(messages, data):
    wire = b"".join(encode(m) for m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder, out, last = Decoder(1 << 20), [], 0
    for cut in cuts + [len(wire)]:
        out += decoder.feed(wire[last:cut])
        last = cut
    assert out == messages
    assert decoder.pending == 0


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_any_bytes_give_frames_or_a_protocol_error(chunks):
    decoder = Decoder(1024)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert isinstance(frame, dict) and isinstance(frame["type"], str)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_any_line_parses_or_is_invalid(line):
    try:
        spec, args = parse_line(line)
    except InvalidCommand as exc:
        assert exc.text == "Error. Invalid command"
        return
    assert spec.name in COMMANDS and len(args) == len(spec.args)


# Lone surrogates (category Cs) are refused, as the next property shows.
words = st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc", "Zl", "Zp", "Cs")),
                min_size=1, max_size=20).filter(lambda w: not any(c.isspace() for c in w))
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1).filter(
    lambda t: t.strip() and not t[0].isspace() and "\n" not in t and "\r" not in t)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), st.text())
def test_a_line_with_a_lone_surrogate_is_invalid_wherever_it_is(before, surrogate, after):
    with pytest.raises(InvalidCommand):
        parse_line(before + surrogate + after)


@settings(max_examples=300, deadline=None)
@given(words, texts)
def test_message_text_round_trips_verbatim(user, text):
    spec, args = parse_line(f"message {user} {text}")
    assert (spec.name, args) == ("message", (user, text))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(json_text, json_values, max_size=6))
def test_encode_writes_what_json_dumps_writes(members):
    # encode keeps one C encoder instead of json's per-call one: same bytes.
    frame = {"type": "x", **members}
    try:
        expected = (json.dumps(frame, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    except UnicodeEncodeError:       # a lone surrogate: escaped, as ASCII
        expected = (json.dumps(frame, separators=(",", ":")) + "\n").encode("ascii")
    assert encode(frame) == expected
