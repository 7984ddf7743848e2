"""The client's keyboard and screen, read without blocking the gevent hub.

Input is read from the file descriptor directly: `gevent.socket.wait_read`
parks the greenlet until the descriptor is readable, then `os.read` takes what
is there. The descriptor is never put in non-blocking mode (gevent's
FileObjectPosix would do that, and on a terminal stdout shares the open file
and would turn non-blocking too). A regular file cannot be polled, so it is
read directly: reading a file never waits long.

Passwords on a terminal are read with echo off; the terminal's settings are
restored in a `finally`, whatever ends the read.

Everything shown comes from the network in the end (messages, user names,
the server's texts), so every line passes through `visible` on its way out:
`show` escapes its line before adding the client's own time stamp and
colour, and the client's log lines go through VisibleFormatter. Control
characters are shown, never obeyed: C0 in caret notation (ESC as `^[`, CR as
`^M`), DEL as `^?`, C1 as `\\x9b`; TAB stays; a line feed starts a
continuation line indented by two spaces, so it cannot pass for a new event.
The bidi overrides and isolates (U+202A-U+202E, U+2066-U+2069) are shown as
`<U+202E>`, because they reorder the rest of a terminal line; so are U+2028
and U+2029, which some readers of piped output take for line ends.

On a terminal (stdin and stdout both), each line shown gets a local time stamp
`[HH:MM] ` and, unless colour is off (`NO_COLOR`, `--no-color`), a colour for
its kind: errors, presence notices, private messages, and messages that name
the user. Anywhere else the lines are exactly the protocol's texts, one per
event, for scripts and tests.

Once logged in on a terminal, `start_editing` switches to the persistent input
line of lineedit.py: the terminal goes to cbreak mode (no echo, keys one at a
time; signals still work), keys are read the same cooperative way, and every
line shown is printed above the input line, which is then drawn again. Flow
control (IXON) is off, so Ctrl-S cannot freeze output, and a write to the
terminal can never hold the hub. The terminal's settings come back on every
way out: `stop_editing` in the client's `finally`, SIGTERM and SIGHUP end the
session through the same path, Ctrl-Z restores them while suspended, and an
atexit hook covers what escapes all of those.

Why not prompt_toolkit: in gevent's thread pool it was slower to start and
to echo a key, held the hub longer (its thread competes for the GIL), added
memory and a dependency, and waits seconds on terminals that do not answer
its cursor-position query (`python -m bench.editor.measure`; the figures are
in docs/design.md).
"""

import atexit
import logging
import os
import re
import signal
import stat
import sys
import time
from collections import deque

import gevent
from gevent.socket import wait_read

from greenchat import texts
from greenchat.client.lineedit import (
    BRACKETED_PASTE_OFF,
    BRACKETED_PASTE_ON,
    ENTER,
    EOF,
    SHOW,
    KeyDecoder,
    LineEditor,
)

try:
    import termios
except ImportError:  # pragma: no cover - not on POSIX
    termios = None


STYLES = {
    "error": "\033[31m",           # red
    "presence": "\033[36m",        # cyan
    "private": "\033[35m",         # magenta
    "self": "\033[1;33m",          # bold yellow: a message that names you
    "hint": "\033[2m",             # dim: the client's own word of help
}
RESET = "\033[0m"
CLEAR_LINE = "\r\x1b[K"          # to the line's start, then erase it
HISTORY_BYTES = 256 * 1024


def _visible_table():
    table = {code: "^" + chr(code + 0x40) for code in range(0x20)}
    del table[0x09]
    table[0x0A] = "\n  "
    table[0x7F] = "^?"
    table.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})
    for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029):
        table[code] = f"<U+{code:04X}>"
    return table


_VISIBLE = _visible_table()


def visible(text):
    """`text` with every character a terminal would obey shown instead (see above)."""
    return str(text).translate(_VISIBLE)


class VisibleFormatter(logging.Formatter):
    """Log lines quote peers and the server: shown through `visible` too."""

    def format(self, record):
        return visible(super().format(record))


class Console:
    def __init__(self, in_fd=0, out=None, color=True):
        self.in_fd = in_fd
        self.out = out if out is not None else sys.stdout
        self._buffer = b""
        self._eof = False
        try:
            mode = os.fstat(in_fd).st_mode
            self._pollable = not stat.S_ISREG(mode)
        except OSError:
            self._pollable = True
        self.input_is_tty = os.isatty(in_fd)
        self.interactive = self.input_is_tty and _isatty(self.out)
        self.color = color and self.interactive
        self.editor = None          # the LineEditor while editing
        self._saved_mode = None     # the terminal's settings to restore
        self._keys = deque()
        self._decoder = None
        self._history_path = None
        self._width = 80
        self._signal_handlers = []
        self._day = None            # (year, month, day) of the last line shown

    # Output -----------------------------------------------------------------

    def show(self, line, style=None, at=None, prefix=None, mark=None):
        """Print one line of output, its controls made visible; `style` names
        its kind for colouring (lines starting `Error.` are errors without
        saying so). A terminal's alone: the time stamp (`at`, a Unix time, or
        now), a day line when the date changes, a `prefix` mark and a dim
        `mark` after the line; colour adds to marks, never replaces them."""
        line = visible(line)
        if self.interactive:
            if style is None and line.startswith("Error."):
                style = "error"
            if self.color and style in STYLES:
                line = STYLES[style] + line + RESET
            if prefix is not None:
                line = f"{prefix} {line}"
            if mark is not None:
                line += " " + (STYLES["hint"] + mark + RESET if self.color else mark)
            stamp = time.localtime(at)
            day = stamp[:3]
            if day != self._day and (self._day is not None or day != time.localtime()[:3]):
                self._show_raw(texts.day_line(stamp))
            self._day = day
            line = time.strftime("[%H:%M] ", stamp) + line
        self._show_raw(line)

    def _show_raw(self, line):
        if self.editor is not None:
            # Above the input line, which is then drawn again as it was.
            self._write(CLEAR_LINE + line + "\n" + self.editor.render(self._width))
        else:
            self._write(line + "\n")

    def hint(self, line):
        """A word of help from the client itself: on a terminal only (piped
        mode prints the protocol's texts alone), dim when colours are on."""
        if self.interactive:
            self.show(line, "hint")

    def keep_typed_line(self):
        """On a terminal, print the line being typed on a line of its own,
        plain (no stamp, no colour), so it outlives the session's end and can
        be copied; the input line stays as it was. Nothing without an editor."""
        editor = self.editor
        if editor is not None and editor.text:
            self._write(CLEAR_LINE + visible(editor.text) + "\n" + editor.render(self._width))

    def prompt(self, text):
        """Print a prompt; without a terminal (no echo) it ends its own line."""
        self._write(text if self.input_is_tty else text + "\n")

    def command_prompt(self, text):
        """Show that the next command may be typed: the editor's line always
        shows it, a terminal without one gets `text`, a pipe nothing."""
        if self.editor is None and self.interactive:
            self._write(text)

    def _write(self, text):
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            pass         # the terminal or pipe is gone (or closed); the session ends anyway

    # The input line ---------------------------------------------------------

    def start_editing(self, prompt, completer, history_path=None):
        """On a terminal, from now on read lines through a persistent input line.

        `completer(words)` gives the candidates for the word after `words`;
        typed lines are kept in `history_path` (created private to the user).
        Does nothing unless both ends are a terminal.
        """
        if not (self.interactive and termios) or self.editor is not None:
            return
        self._history_path = history_path
        self.editor = LineEditor(prompt, load_history(history_path), completer)
        self._decoder = KeyDecoder()
        self._saved_mode = termios.tcgetattr(self.in_fd)
        atexit.register(self.stop_editing)
        self._enter_cbreak()
        self._write(BRACKETED_PASTE_ON)
        for signum, handler in ((signal.SIGWINCH, self._resized),
                                (signal.SIGTSTP, self._suspend)):
            self._signal_handlers.append(gevent.signal_handler(signum, handler))
        self._resized()

    def stop_editing(self):
        """Clear the input line and give the terminal its settings back."""
        for handler in self._signal_handlers:
            handler.cancel()
        self._signal_handlers = []
        if self._saved_mode is None:
            return
        saved, self._saved_mode, self.editor = self._saved_mode, None, None
        self._write(CLEAR_LINE + BRACKETED_PASTE_OFF)
        try:
            # TCSAFLUSH: whatever is typed or pasted and not yet read is
            # discarded, so nothing meant for the chat reaches the shell.
            termios.tcsetattr(self.in_fd, termios.TCSAFLUSH, saved)
        except termios.error:
            pass

    def _enter_cbreak(self):
        mode = termios.tcgetattr(self.in_fd)
        mode[0] &= ~termios.IXON                                 # Ctrl-S must not freeze output
        mode[0] &= ~termios.ICRNL       # CR as CR: a pasted CR LF is one line break, not two
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.IEXTEN)
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        termios.tcsetattr(self.in_fd, termios.TCSADRAIN, mode)

    def _resized(self):
        try:
            self._width = os.get_terminal_size(self.out.fileno()).columns
        except (OSError, ValueError, AttributeError):
            self._width = 80
        self._draw()

    def _suspend(self):
        """Ctrl-Z: the shell gets its terminal back; on `fg`, ours again."""
        if self._saved_mode is None:
            return
        self._write(CLEAR_LINE)
        termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self._saved_mode)
        os.kill(os.getpid(), signal.SIGSTOP)
        # Continued.
        if self._saved_mode is not None:
            self._enter_cbreak()
            self._resized()

    def keep(self, line):
        """Put a line that was not sent back into the input line, for editing
        (on a terminal; elsewhere there is nothing to put it back into)."""
        if self.editor is not None:
            self.editor.set_text(line)
            self._draw()

    def _draw(self):
        if self.editor is not None:
            self._write(self.editor.render(self._width))

    def _read_edited_line(self):
        editor = self.editor
        while True:
            # The input line is drawn once per batch of keys (start_editing
            # drew it first, and Enter draws it fresh).
            if not self._keys:
                chunk = self._read_chunk()
                if not chunk:
                    return None
                self._keys.extend(self._decoder.feed(chunk))
                if self.editor is None:          # stopped while we waited
                    return None
            while self._keys:
                outcome = editor.handle(self._keys.popleft())
                if outcome is None:
                    continue
                if outcome[0] == ENTER:
                    line = outcome[1]
                    # The typed line stays in the scrollback, as a shell's does.
                    self._write(CLEAR_LINE + editor.prompt + line + "\n")
                    if not editor.last_pasted:      # nothing pasted is kept
                        append_history(self._history_path, line)
                    self._draw()
                    return line
                if outcome[0] == EOF:
                    return None
                if outcome[0] == SHOW:
                    for line in outcome[1]:
                        self.show(line)
            self._draw()

    # Input ------------------------------------------------------------------

    def read_line(self):
        """The next line without its line ending, or None at end of input."""
        if self.editor is not None:
            return self._read_edited_line()
        while b"\n" not in self._buffer:
            if self._eof:
                if not self._buffer:
                    return None
                line, self._buffer = self._buffer, b""
                return _decode(line)
            chunk = self._read_chunk()
            if not chunk:
                self._eof = True
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return _decode(line.rstrip(b"\r"))

    def _read_chunk(self):
        while True:
            if self._pollable:
                wait_read(self.in_fd)
            try:
                return os.read(self.in_fd, 65536)
            except BlockingIOError:
                continue
            except OSError:            # the terminal hung up
                return b""

    def read_secret(self):
        """Like read_line, with echo off on a terminal."""
        if not (self.input_is_tty and termios):
            return self.read_line()
        saved = termios.tcgetattr(self.in_fd)
        quiet = list(saved)
        quiet[3] &= ~termios.ECHO
        try:
            termios.tcsetattr(self.in_fd, termios.TCSADRAIN, quiet)
            return self.read_line()
        finally:
            termios.tcsetattr(self.in_fd, termios.TCSADRAIN, saved)
            self.out.write("\n")
            self.out.flush()


def default_history_path(host, port, user, environ=None):
    """`$XDG_DATA_HOME/greenchat/history/HOST_PORT_USER` (by default under
    ~/.local/share): one file per server and account."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    # Names become one path component: anything but letters, digits, . and - is escaped.
    name = "_".join(_SAFE.sub(lambda m: f"%{ord(m.group()):02x}", str(part))
                    for part in (host, port, user))
    return os.path.join(base, "greenchat", "history", name)


_SAFE = re.compile(r"[^A-Za-z0-9.-]")
# A line longer than this is not kept (a pasted page, a refused long line).
HISTORY_LINE_MAX = 1000


def kept_in_history(line):
    """Lines the history file never holds: private text (the README says it
    is not stored), anything pasted or multi-line, very long lines."""
    word = line.split(None, 1)[0] if line.strip() else ""
    return bool(word) and word.lstrip("/") != "private" and "\n" not in line \
        and "\r" not in line and len(line) <= HISTORY_LINE_MAX


def load_history(path, limit=1000):
    """The last `limit` lines of the history file; none if it cannot be read."""
    if not path:
        return []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()[-limit:]
    except OSError:
        return []


def append_history(path, line, limit=1000):
    """Add a line to the history file, readable by its owner only.

    A history nobody can write is no reason to stop chatting: errors are
    ignored. Past HISTORY_BYTES the file is cut back to its last `limit` lines.
    """
    if not path or not kept_in_history(line):
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8", errors="replace") as f:
            f.write(line + "\n")
            size = f.tell()
        if size > HISTORY_BYTES:
            kept = load_history(path, limit)
            with open(path, "w", encoding="utf-8", errors="replace") as f:
                f.write("\n".join(kept) + "\n")
    except OSError:
        pass


def _decode(raw):
    return raw.decode("utf-8", "replace")


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
