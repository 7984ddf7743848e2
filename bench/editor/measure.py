"""Key-echo latency and hub stalls of the two ways to edit the client's input
line, in a real pseudo-terminal while a message arrives every 50 ms:

    python -m bench.editor.measure

own_editor.py is greenchat's editor in a greenlet (console.py + lineedit.py);
ptk_editor.py is prompt_toolkit's prompt in gevent's thread pool under
patch_stdout (skipped if prompt_toolkit is not installed). Each prints the time
from process start to the first prompt, the median and worst time from a key
sent to its echo (52 keys, 20 ms apart), and the longest the hub went without
running a 1 ms ticker greenlet. The choice this led to is in console.py.

Then greenchat's editor on a long line (issue 14): the same text pasted at
30 and at 30,000 characters (ASCII and wide characters), the time until the
paste is drawn, then the echo of 52 keys typed at its end and of 20 Home/End
jumps across it; a key should cost about the same on both.
"""

import importlib.util
import os
import statistics
import sys
import time

import pexpect

from bench.common import ROOT


def _keystroke(term, key, drawn):
    """Seconds from sending `key`, 20 ms after the last one, until `drawn` shows."""
    time.sleep(0.02)
    sent = time.perf_counter()
    term.send(key)
    term.expect_exact(drawn)
    return time.perf_counter() - sent


def measure(script):
    started = time.perf_counter()
    term = _spawn(script, timeout=20)
    startup = time.perf_counter() - started
    latencies = [_keystroke(term, ch, ch) for ch in "abcdefghijklmnopqrstuvwxyz" * 2]
    gap = _finish(term)
    return (f"{script:16} first prompt {startup * 1000:5.0f} ms   echo median "
            f"{statistics.median(latencies) * 1000:5.2f} ms, worst {max(latencies) * 1000:5.2f} ms"
            f"   longest hub gap {gap} ms")


LONG_TEXT = "lorem ipsum 日本語 dolor "


def _spawn(script, timeout=120):
    """`script` in a pseudo-terminal, once it shows its prompt."""
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    # As a module of this repository, like measure.py itself.
    term = pexpect.spawn(sys.executable, ["-m", f"bench.editor.{script[:-3]}"], cwd=ROOT,
                         env=env, timeout=timeout, encoding="utf-8", dimensions=(24, 80))
    term.delaybeforesend = None
    term.expect(">")
    return term


def _finish(term):
    """Quit the editor; the longest hub gap it reported, in ms."""
    term.sendline("")
    term.sendline("quit")
    term.expect(r"MAXGAP ([\d.]+) ms")
    term.close()
    return term.match.group(1)


def measure_line(length):
    """Paste, key echo and Home/End on a line of `length` characters."""
    text = (LONG_TEXT * (length // len(LONG_TEXT) + 1))[:length]
    term = _spawn("own_editor.py")
    started = time.perf_counter()
    term.send(text)
    # The redraw ends with the line's end, then clear-to-end-of-line.
    term.expect_exact(text[-12:] + "\x1b[K")
    paste = time.perf_counter() - started
    typed, echo = text, []
    for ch in "abcdefghijklmnopqrstuvwxyz" * 2:
        typed += ch
        echo.append(_keystroke(term, ch, typed[-12:] + "\x1b[K"))
    jumps = [_keystroke(term, key, drawn) for _ in range(10)
             for key, drawn in (("\x01", "\x1b[K\r\x1b[2C"), ("\x05", typed[-12:] + "\x1b[K"))]
    gap = _finish(term)
    return (f"line of {length:6} chars   paste drawn {paste * 1000:7.1f} ms   echo median "
            f"{statistics.median(echo) * 1000:5.2f} ms, worst {max(echo) * 1000:5.2f} ms   "
            f"Home/End median {statistics.median(jumps) * 1000:5.2f} ms, "
            f"worst {max(jumps) * 1000:5.2f} ms   longest hub gap {gap} ms")


def main():
    print(measure("own_editor.py"))
    if importlib.util.find_spec("prompt_toolkit"):
        print(measure("ptk_editor.py"))
    else:
        print("ptk_editor.py    skipped: pip install prompt_toolkit")
    for length in (30, 30_000):
        print(measure_line(length))


if __name__ == "__main__":
    main()
