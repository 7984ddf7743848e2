"""The client's keyboard and screen, read without blocking the gevent hub.

Input is read from the file descriptor directly: `gevent.socket.wait_read`
parks the greenlet until the descriptor is readable, then `os.read` takes what
is there. The descriptor is never put in non-blocking mode (gevent's
FileObjectPosix would do that, and on a terminal stdout shares the open file
and would turn non-blocking too). A regular file cannot be polled, so it is
read directly: reading a file never waits long.

Passwords on a terminal are read with echo off; the terminal's settings are
restored in a `finally`, whatever ends the read.

On a terminal (stdin and stdout both), each line shown gets a local time stamp
`[HH:MM] ` and, unless colour is off (`NO_COLOR`, `--no-color`), a colour for
its kind: errors, presence notices, private messages, and messages that name
the user. Anywhere else the lines are exactly the protocol's texts, one per
event, for scripts and tests.
"""

import os
import stat
import sys
import time

from gevent.socket import wait_read

try:
    import termios
except ImportError:  # pragma: no cover - not on POSIX
    termios = None


STYLES = {
    "error": "\033[31m",           # red
    "presence": "\033[36m",        # cyan
    "private": "\033[35m",         # magenta
    "self": "\033[1;33m",          # bold yellow: a message that names you
}
RESET = "\033[0m"


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

    # Output -----------------------------------------------------------------

    def show(self, line, style=None):
        """Print one line of output; `style` names its kind for colouring
        (lines starting `Error.` are errors without saying so)."""
        if self.interactive:
            if style is None and line.startswith("Error."):
                style = "error"
            if self.color and style in STYLES:
                line = STYLES[style] + line + RESET
            line = time.strftime("[%H:%M] ") + line
        self.out.write(line + "\n")
        self.out.flush()

    def prompt(self, text):
        """Print a prompt; without a terminal (no echo) it ends its own line."""
        self.out.write(text if self.input_is_tty else text + "\n")
        self.out.flush()

    # Input ------------------------------------------------------------------

    def read_line(self):
        """The next line without its line ending, or None at end of input."""
        while b"\n" not in self._buffer:
            if self._eof:
                if not self._buffer:
                    return None
                line, self._buffer = self._buffer, b""
                return _decode(line)
            if self._pollable:
                wait_read(self.in_fd)
            try:
                chunk = os.read(self.in_fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                self._eof = True
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return _decode(line.rstrip(b"\r"))

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


def _decode(raw):
    return raw.decode("utf-8", "replace")


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
