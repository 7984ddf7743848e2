"""Unit tests of the sans-IO input line: key decoding, editing, history,
completion and rendering, with bytes and strings only."""

import time

import pyte
import pytest

from greenchat.client.lineedit import ENTER, EOF, SHOW, KeyDecoder, LineEditor, text_width


def keys(data):
    return KeyDecoder().feed(data)


def type_into(editor, data):
    outcomes = [editor.handle(key) for key in KeyDecoder().feed(data)]
    return [o for o in outcomes if o is not None]


def test_text_control_keys_and_escape_sequences():
    assert keys(b"ab\x01\x05\x7f\x08\r\n\t") == ["a", "b", "home", "end", "backspace",
                                                   "backspace", "enter", "enter", "tab"]
    assert keys(b"\x1b[A\x1b[B\x1b[C\x1b[D\x1bOH\x1bOF\x1b[3~\x1b[1;5D\x1bb") == [
        "up", "down", "right", "left", "home", "end", "delete", "word-left", "word-left"]
    # Unknown sequences and controls are dropped whole; an unknown Alt-key keeps its key.
    assert keys(b"\x1b[299~x\x1b[15~\x07y\x1bqz") == ["x", "y", "q", "z"]


def test_sequences_and_utf8_split_across_reads():
    decoder = KeyDecoder()
    got = []
    for byte in "\x1b[1;5Cé→\x1b[3~".encode():
        got += decoder.feed(bytes([byte]))
    assert got == ["word-right", "é", "→", "delete"]
    assert KeyDecoder().feed(b"\xff") == ["\ufffd"]


def test_editing_keys():
    editor = LineEditor()
    type_into(editor, b"hello world")
    type_into(editor, b"\x1b[D\x1b[D\x1b[D\x1b[D\x1b[DX")          # left x5, insert
    assert editor.text == "hello Xworld"
    type_into(editor, b"\x01\x1b[3~")                              # home, delete
    assert editor.text == "ello Xworld" and editor.cursor == 0
    type_into(editor, b"\x05\x17")                                 # end, kill word
    assert editor.text == "ello "
    type_into(editor, b"\x19\x19")                                 # yank twice
    assert editor.text == "ello XworldXworld"
    type_into(editor, b"\x01\x06\x0b")                             # home, right, kill to end
    assert editor.text == "e"
    type_into(editor, b"\x15")                                     # kill to start
    assert editor.text == "" and editor.cursor == 0


def test_enter_returns_the_line_and_ctrl_d_ends_input_only_on_an_empty_line():
    editor = LineEditor()
    assert type_into(editor, b"abc\x01\x04\r") == [(ENTER, "bc")]
    assert editor.text == ""
    assert type_into(editor, b"\x04") == [(EOF,)]


def test_history_walk_keeps_the_draft_and_copies_entries():
    editor = LineEditor(history=["first", "second"])
    type_into(editor, b"draft")
    type_into(editor, b"\x1b[A")
    assert editor.text == "second"
    type_into(editor, b"\x1b[A\x1b[A")                             # stops at the oldest
    assert editor.text == "first"
    type_into(editor, b"!")
    type_into(editor, b"\x1b[B\x1b[B")
    assert editor.text == "draft"
    assert editor.history == ["first", "second"]
    type_into(editor, b"\x15again\r")
    type_into(editor, b"again\r")                                  # a repeat is kept once
    assert editor.history == ["first", "second", "again"]


def test_history_limit():
    editor = LineEditor(history=[str(i) for i in range(10)], history_limit=3)
    assert editor.history == ["7", "8", "9"]
    type_into(editor, b"x\r")
    assert editor.history == ["8", "9", "x"]


def complete_users(words):
    if not words:
        return ["message", "broadcast", "block", "whoelse", "whoelsesince"]
    if words[0] in ("message", "block"):
        return ["yoda", "yolanda", "hans"]
    return []


def test_tab_completes_commands_and_users():
    editor = LineEditor(completer=complete_users)
    type_into(editor, b"mes\t")
    assert editor.text == "message "
    type_into(editor, b"h\t")
    assert editor.text == "message hans "
    editor.set_text("message yo")
    type_into(editor, b"\t")                                       # common prefix only
    assert editor.text == "message yo"
    assert type_into(editor, b"\t") == [(SHOW, ["yoda  yolanda"])]  # a second Tab lists
    type_into(editor, b"d\t")
    assert editor.text == "message yoda "
    editor.set_text("whoelse")
    type_into(editor, b"\t")
    assert editor.text == "whoelse"                                 # whoelse, whoelsesince
    editor.set_text("broadcast h")
    type_into(editor, b"\t")
    assert editor.text == "broadcast h"                            # no users for text


def test_completion_in_the_middle_adds_no_space():
    editor = LineEditor(completer=complete_users)
    editor.set_text("message ha hello")
    editor.cursor = len("message ha")
    type_into(editor, b"\t")
    assert editor.text == "message hans hello"


def draw(editor, width=20):
    screen = pyte.Screen(width, 2)
    pyte.Stream(screen).feed(editor.render(width))
    return screen.display[0].rstrip(), screen.cursor.x


def test_render_shows_prompt_text_and_cursor():
    editor = LineEditor()
    type_into(editor, b"hello\x1b[D\x1b[D")
    assert draw(editor) == ("> hello", 5)


def test_render_scrolls_long_lines_to_keep_the_cursor_visible():
    editor = LineEditor()
    type_into(editor, b"abcdefghijklmnopqrstuvwxyz")
    line, cursor = draw(editor)
    assert line == "> jklmnopqrstuvwxyz" and cursor == 19
    type_into(editor, b"\x01")
    line, cursor = draw(editor)
    assert line == "> abcdefghijklmnopq" and cursor == 2
    type_into(editor, b"\x05\x15")
    assert draw(editor) == (">", 2)


def test_render_counts_wide_and_combining_characters():
    assert text_width("日本") == 4 and text_width("e\u0301") == 1
    editor = LineEditor()
    type_into(editor, "日本語".encode())
    line, cursor = draw(editor)
    assert line.replace(" ", "") == ">日本語" and cursor == 8


@pytest.mark.parametrize("data", [bytes(range(256)), b"\x1b" * 50, b"\x1b[" + b"1" * 1000])
def test_any_bytes_are_safe(data):
    editor = LineEditor(completer=complete_users)
    for key in KeyDecoder().feed(data):
        editor.handle(key)
    editor.render(10)


# Long lines (issue 14, item 2): only the window on screen is measured and drawn.

LONG = 30_000
MIXED = ("ab日本c語 dé" * LONG)[:LONG]        # ASCII, wide characters, spaces


def _keys_round(editor, n=200):
    """A mix of what a person does on a line: type, move, delete, jump."""
    pattern = ["x", "left", "left", "日", "right", "backspace", "home", "y", "end",
               "word-left", "delete", "word-right"]
    for i in range(n):
        editor.handle(pattern[i % len(pattern)])
        yield editor.render(80)


def test_redraw_of_a_long_line_is_bounded():
    editor = LineEditor()
    editor.set_text(MIXED[:LONG])
    sizes = [len(out.encode()) for out in _keys_round(editor)]
    # A window of 80 columns is at most 80 characters of up to 4 bytes, plus controls.
    assert max(sizes) < 3 * 80 * 2
    assert len(editor.text) > LONG - 200


def _cost(text, repeats=5):
    best = float("inf")
    for _ in range(repeats):
        editor = LineEditor()
        editor.set_text(text)
        editor.render(80)
        started = time.perf_counter()
        for _ in _keys_round(editor):
            pass
        best = min(best, time.perf_counter() - started)
    return best


def test_a_key_costs_about_the_same_on_a_long_line_as_on_a_short_one():
    short, long = _cost(MIXED[:30]), _cost(MIXED[:LONG])
    assert long < 5 * short, (short, long)


def test_a_long_paste_draws_at_once():
    editor = LineEditor()
    for key in KeyDecoder().feed(MIXED[:LONG].encode()):
        editor.handle(key)
    started = time.perf_counter()
    line, cursor = draw(editor)
    assert time.perf_counter() - started < 0.5
    assert MIXED[:LONG].endswith(line[2:]) and cursor <= 19


def _shown(screen_row):
    """The characters pyte drew (a wide character leaves an empty cell after it)."""
    return "".join(screen_row[x].data for x in sorted(screen_row)).rstrip()


@pytest.mark.parametrize("width", [12, 13, 20])
def test_wide_characters_at_the_window_edges(width):
    text = "日本a語bc日本語" * 20
    editor = LineEditor()
    editor.set_text(text)
    for position in [*range(len(text), -1, -1), *range(0, len(text) + 1, 3)]:
        editor.cursor = position
        screen = pyte.Screen(width, 2)
        pyte.Stream(screen).feed(editor.render(width))
        shown = _shown(screen.buffer[0])[2:]
        start = editor._scroll
        # A contiguous part of the line, from the window's start, no half character.
        assert shown and text[start:start + len(shown)] == shown
        assert text_width(shown) <= width - 3
        # The cursor on its character, and within the screen.
        assert screen.cursor.x == 2 + text_width(text[start:position]) <= width - 1
        # The window is as full as it can be: the next character would not fit.
        if start + len(shown) < len(text):
            assert text_width(shown + text[start + len(shown)]) > width - 3


def test_a_paste_is_text_line_breaks_included_whatever_the_terminal_sends():
    from greenchat.client.lineedit import KeyDecoder
    keys = KeyDecoder().feed(b"\x1b[200~one\rtwo\r\nthree\nfour\tfive\x1b[A\x03\x1b[201~\r")
    assert keys == ["paste-start", *"one\ntwo\nthree\nfour five", "paste-end", "enter"]
    # The end marker cut in two by the reads.
    decoder = KeyDecoder()
    assert decoder.feed(b"\x1b[200~a\rb\x1b[20") == ["paste-start", "a", "\n", "b"]
    assert decoder.feed(b"1~\r") == ["paste-end", "enter"]


def test_a_pasted_paragraph_is_one_line_sent_on_enter_and_drawn_with_marks():
    from greenchat.client.lineedit import ENTER, LINE_BREAK_MARK, KeyDecoder, LineEditor
    editor = LineEditor("> ")
    outcomes = [editor.handle(key) for key in
                KeyDecoder().feed(b"message yoda \x1b[200~line one\rline two\x1b[201~")]
    assert outcomes == [None] * len(outcomes)              # nothing sent yet
    assert editor.text == "message yoda line one\nline two"
    assert f"line one{LINE_BREAK_MARK}line two" in editor.render(80)
    assert "\n" not in editor.render(80)
    assert editor.handle("enter") == (ENTER, "message yoda line one\nline two")
    assert editor.last_pasted is True
    editor.handle("w")
    assert editor.handle("enter") == (ENTER, "w") and editor.last_pasted is False
