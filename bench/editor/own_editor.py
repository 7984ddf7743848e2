"""greenchat's own input line in a greenlet, for bench.editor.measure.

The same load as ptk_editor.py: a greenlet shows a line every 50 ms while
Console reads keys; a 1 ms ticker greenlet records the hub's longest gap.
"""

import sys

import gevent

from bench.hubgap import HubTicker
from greenchat.client.console import Console


def chatter(console):
    for i in range(1, 1_000_000):
        gevent.sleep(0.05)
        console.show(f"incoming message {i}")


def main():
    console = Console(0, sys.stdout, color=False)
    ticker = HubTicker(collect=False)
    gevent.spawn(chatter, console)
    console.start_editing("> ", lambda words: ())
    try:
        while console.read_line() != "quit":
            pass
    finally:
        console.stop_editing()
    print(f"MAXGAP {ticker.stop() * 1000:.1f} ms")


if __name__ == "__main__":
    main()
