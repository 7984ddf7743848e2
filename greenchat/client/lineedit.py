"""The client's input line, sans-IO: key bytes in, edits and screen updates out.

Strategy
- The terminal client keeps one input line (`> ` and what is being typed) at
  the bottom of the screen; incoming lines are printed above it and the input
  line is drawn again, so half-typed text and the cursor survive any number of
  messages. console.py owns the terminal (cbreak mode, reading fd 0 with
  gevent's wait_read, writing); this module owns everything else and does no
  I/O, so it is unit tested with bytes and strings alone.
- KeyDecoder turns what the terminal sends (UTF-8 text, control bytes, ESC
  sequences split across reads) into key names. LineEditor applies keys to its
  buffer and answers with what happened: a finished line, end of input, or
  lines to show (completion candidates). `render(width)` is the one string
  that redraws the input line: carriage return, prompt, the visible part of
  the text (scrolled sideways when longer than the screen), clear to the end
  of the line, cursor back to its column.
- History: Up/Down (Ctrl-P/Ctrl-N) walk earlier lines; the line being typed is
  kept while walking. Editing a recalled line edits a copy.
- Completion: Tab completes the word at the cursor from `completer(words)`,
  the words before it: a unique candidate is completed with a space after it;
  several are completed to their common prefix, and a second Tab lists them.
  Completer is the client's `completer`: command names, then user names.

Keys: Left/Right (Ctrl-B/F), Home/End (Ctrl-A/E), Ctrl-Left/Right and
Alt-B/F by word, Backspace, Delete (Ctrl-D; on an empty line, end of input),
Ctrl-K/U/W kill to end/start/previous word, Ctrl-Y yank, Ctrl-L redraw.
"""

import codecs
import os
import unicodedata

from greenchat.commands import COMMANDS

ENTER, EOF, SHOW = "enter", "eof", "show"

_CONTROL_KEYS = {
    0x01: "home", 0x02: "left", 0x04: "ctrl-d", 0x05: "end", 0x06: "right",
    0x08: "backspace", 0x09: "tab", 0x0A: "enter", 0x0B: "kill-end", 0x0C: "redraw",
    0x0D: "enter", 0x0E: "down", 0x10: "up", 0x15: "kill-start", 0x17: "kill-word",
    0x19: "yank", 0x7F: "backspace",
}
_CSI_KEYS = {
    "A": "up", "B": "down", "C": "right", "D": "left", "H": "home", "F": "end",
    "1~": "home", "7~": "home", "4~": "end", "8~": "end", "3~": "delete",
    "1;5C": "word-right", "1;5D": "word-left", "1;3C": "word-right", "1;3D": "word-left",
    "200~": "paste-start", "201~": "paste-end",
}
# Bracketed paste (xterm's mode 2004): the terminal wraps pasted text in
# paste-start and paste-end, so it is taken as text, line breaks included.
BRACKETED_PASTE_ON, BRACKETED_PASTE_OFF = "\x1b[?2004h", "\x1b[?2004l"
# How a line break in the input line is drawn.
LINE_BREAK_MARK = "\u21b5"
_ALT_KEYS = {"b": "word-left", "f": "word-right", "d": "kill-word-forward",
             "\x7f": "kill-word", "\x08": "kill-word"}


class KeyDecoder:
    """Bytes from a terminal -> key names (str) and typed characters (1-char str).

    A key name is longer than one character; a typed character is exactly one.
    An incomplete ESC sequence or UTF-8 character waits for the next feed.
    """

    def __init__(self):
        self._pending = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self.pasting = False       # between paste-start and paste-end
        self._after_cr = False     # a pasted CR was just taken as a line break

    def feed(self, data):
        text = self._pending + self._utf8.decode(data)
        self._pending = ""
        keys = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch == "\x1b":
                key, used = _escape(text, i)
                if used == 0:              # incomplete: wait for more
                    self._pending = text[i:]
                    break
                if key == "paste-start" or key == "paste-end":
                    self.pasting = key == "paste-start"
                    keys.append(key)
                elif key and not self.pasting:
                    keys.append(key)
                i += used
                continue
            code = ord(ch)
            if self.pasting and code < 0x20:
                # Pasted: a line break (CR, LF or CR LF) is text; a tab a
                # space; other controls are dropped.
                if ch == "\n" and self._after_cr:
                    pass
                elif ch in "\r\n":
                    keys.append("\n")
                elif ch == "\t":
                    keys.append(" ")
                self._after_cr = ch == "\r"
                i += 1
                continue
            self._after_cr = False
            if code < 0x20 or code == 0x7F:
                key = _CONTROL_KEYS.get(code)
                if key:
                    keys.append(key)
            else:
                keys.append(ch)
            i += 1
        return keys


def _escape(text, i):
    """(key name or None, characters used) for the ESC sequence at text[i]; used=0 if cut short."""
    n = len(text)
    if i + 1 >= n:
        return None, 0
    second = text[i + 1]
    if second in "[O":
        j = i + 2
        while j < n and not ("\x40" <= text[j] <= "\x7e"):
            j += 1
        if j >= n:
            return None, 0
        return _CSI_KEYS.get(text[i + 2:j + 1]), j + 1 - i
    key = _ALT_KEYS.get(second)
    # An unknown Alt-key, or Escape then a key: drop the ESC, keep the key.
    return (key, 2) if key else (None, 1)


def char_width(ch):
    """Columns a character takes on a terminal: 0 for combining marks, 2 for wide."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in "WF" else 1


def text_width(text):
    return sum(char_width(ch) for ch in text)


class LineEditor:
    def __init__(self, prompt="> ", history=(), completer=None, history_limit=1000):
        self.prompt = prompt
        self.history = list(history)[-history_limit:]
        self.history_limit = history_limit
        self.completer = completer or (lambda words: ())
        self.chars = []            # the line being edited, one str per character
        self.cursor = 0            # index into chars
        self._scroll = 0           # first character shown
        self._recall = None        # index into history while walking it
        self._draft = None         # the typed line, kept while walking history
        self._killed = ""
        self._last_key = None
        self._pasted = False       # the line holds pasted text
        self.last_pasted = False   # the line last entered did

    @property
    def text(self):
        return "".join(self.chars)

    def handle(self, key):
        """Apply one key; return None, (ENTER, line), (EOF,) or (SHOW, [lines])."""
        previous, self._last_key = self._last_key, key
        if len(key) == 1:
            self._insert(key)
            return None
        if key == "enter":
            line = self.text
            self.last_pasted, self._pasted = self._pasted, False
            self._remember(line)
            self._set("")
            return ENTER, line
        if key == "paste-start":
            self._pasted = True
            return None
        if key == "ctrl-d":
            if not self.chars:
                return (EOF,)
            key = "delete"
        if key == "tab":
            return self._complete(again=previous == "tab")
        action = getattr(self, "_key_" + key.replace("-", "_"), None)
        if action is not None:
            action()
        return None

    def set_text(self, text):
        self._set(text)

    # Editing ---------------------------------------------------------------

    def _insert(self, text):
        self.chars[self.cursor:self.cursor] = list(text)
        self.cursor += len(text)

    def _set(self, text):
        self.chars = list(text)
        self.cursor = len(self.chars)
        self._scroll = 0

    def _key_left(self):
        self.cursor = max(0, self.cursor - 1)

    def _key_right(self):
        self.cursor = min(len(self.chars), self.cursor + 1)

    def _key_home(self):
        self.cursor = 0

    def _key_end(self):
        self.cursor = len(self.chars)

    def _key_backspace(self):
        if self.cursor:
            del self.chars[self.cursor - 1]
            self.cursor -= 1

    def _key_delete(self):
        if self.cursor < len(self.chars):
            del self.chars[self.cursor]

    def _word_start(self, pos):
        while pos and self.chars[pos - 1].isspace():
            pos -= 1
        while pos and not self.chars[pos - 1].isspace():
            pos -= 1
        return pos

    def _word_end(self, pos):
        n = len(self.chars)
        while pos < n and self.chars[pos].isspace():
            pos += 1
        while pos < n and not self.chars[pos].isspace():
            pos += 1
        return pos

    def _key_word_left(self):
        self.cursor = self._word_start(self.cursor)

    def _key_word_right(self):
        self.cursor = self._word_end(self.cursor)

    def _kill(self, start, end):
        if start < end:
            self._killed = "".join(self.chars[start:end])
            del self.chars[start:end]
            self.cursor = start

    def _key_kill_end(self):
        self._kill(self.cursor, len(self.chars))

    def _key_kill_start(self):
        self._kill(0, self.cursor)

    def _key_kill_word(self):
        self._kill(self._word_start(self.cursor), self.cursor)

    def _key_kill_word_forward(self):
        self._kill(self.cursor, self._word_end(self.cursor))

    def _key_yank(self):
        self._insert(self._killed)

    # History ---------------------------------------------------------------

    def _remember(self, line):
        self._recall = self._draft = None
        if line.strip() and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-self.history_limit]

    def _key_up(self):
        if not self.history or self._recall == 0:
            return
        if self._recall is None:
            self._draft = self.text
            self._recall = len(self.history)
        self._recall -= 1
        self._set(self.history[self._recall])

    def _key_down(self):
        if self._recall is None:
            return
        self._recall += 1
        if self._recall >= len(self.history):
            self._recall, draft, self._draft = None, self._draft, None
            self._set(draft or "")
        else:
            self._set(self.history[self._recall])

    # Completion ------------------------------------------------------------

    def _complete(self, again):
        start = self.cursor
        while start and not self.chars[start - 1].isspace():
            start -= 1
        prefix = "".join(self.chars[start:self.cursor])
        words = "".join(self.chars[:start]).split()
        candidates = sorted({c for c in self.completer(words) if c.startswith(prefix)})
        if not candidates:
            return None
        if len(candidates) == 1:
            rest = candidates[0][len(prefix):]
            at_end = self.cursor == len(self.chars) or not self.chars[self.cursor].isspace()
            self._insert(rest + (" " if at_end else ""))
            return None
        common = os.path.commonprefix(candidates)
        if len(common) > len(prefix):
            self._insert(common[len(prefix):])
            return None
        if again:
            return SHOW, ["  ".join(candidates)]
        return None

    # Screen ----------------------------------------------------------------

    def render(self, width):
        """The bytes-to-be (a str) that redraw the input line on a `width`-column screen.

        Only the window of the line on screen is measured and drawn, so a key
        costs the same on a line of 30 characters as on one of 70,000: every
        walk below stops after about `room` columns (and at most `_walk`
        characters, for long runs of zero-width ones).
        """
        prompt_width = text_width(self.prompt)
        room = max(1, width - prompt_width - 1)    # the last column stays free for the cursor
        chars, cursor = self.chars, self.cursor
        walk = 4 * room + 16
        if cursor < self._scroll:
            self._scroll = cursor
        elif not _fits(chars, self._scroll, cursor, room, walk):
            # The cursor went past the right edge: it goes at the right edge.
            self._scroll = _start_fitting(chars, cursor, room, walk)
        # Scrolled as little as possible: use spare room on the left too.
        if self._scroll and _fits(chars, self._scroll, len(chars), room, walk):
            used, limit = text_width(chars[self._scroll:]), max(0, len(chars) - walk)
            while self._scroll > limit and used + char_width(chars[self._scroll - 1]) <= room:
                self._scroll -= 1
                used += char_width(chars[self._scroll])
        shown, used = [], 0
        for ch in chars[self._scroll:self._scroll + walk]:
            w = char_width(ch)
            if used + w > room:
                break
            shown.append(LINE_BREAK_MARK if ch == "\n" else ch)
            used += w
        column = prompt_width + text_width(chars[self._scroll:cursor])
        move = f"\r\x1b[{column}C" if column else "\r"
        return "\r" + self.prompt + "".join(shown) + "\x1b[K" + move


def _fits(chars, start, end, room, walk):
    """Whether chars[start:end] takes at most `room` columns (and `walk` characters)."""
    if end - start > walk:
        return False
    used = 0
    for i in range(start, end):
        used += char_width(chars[i])
        if used > room:
            return False
    return True


def _start_fitting(chars, end, room, walk):
    """The smallest start such that chars[start:end] fits in `room` columns."""
    start, used, limit = end, 0, max(0, end - walk)
    while start > limit:
        w = char_width(chars[start - 1])
        if used + w > room:
            break
        used += w
        start -= 1
    return start


class Completer:
    """What Tab completes: a command's name, then a user name where the
    command takes one, from the names seen (presence, messages, user lists)
    and the peers linked (`links.names()`), never our own (`me`)."""

    MAX_NAMES = 10_000        # a server can list many

    def __init__(self, links):
        self.links = links
        self.me = None
        self.seen = set()

    def saw(self, name):
        """Remember a user name seen in presence, messages or a user list."""
        if _completable(name) and len(self.seen) < self.MAX_NAMES:
            self.seen.add(name)

    def __call__(self, words):
        """Candidates for the word after `words`."""
        if not words:
            return list(COMMANDS)
        spec = COMMANDS.get(words[0])
        if spec is not None and len(words) <= len(spec.args) and \
                spec.args[len(words) - 1] == "user":
            # Completion types into the input line, which is not escaped.
            return (self.seen | set(filter(_completable, self.links.names()))) - {self.me}
        return ()


def _completable(name):
    """A name Tab may offer: printable (no controls) and one word."""
    return isinstance(name, str) and bool(name) and name.isprintable() and " " not in name
