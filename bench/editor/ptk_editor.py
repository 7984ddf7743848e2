"""prompt_toolkit's prompt in gevent's thread pool, for bench.editor.measure.

A greenlet prints a line every 50 ms through patch_stdout while the prompt
runs in a pool thread; a 1 ms ticker greenlet records the hub's longest gap.
"""

import gevent
from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout

from bench.hubgap import HubTicker


def chatter():
    for i in range(1, 1_000_000):
        gevent.sleep(0.05)
        print(f"incoming message {i}")


def main():
    session = PromptSession()
    ticker = HubTicker(collect=False)
    gevent.spawn(chatter)
    with patch_stdout():
        while True:
            line = gevent.get_hub().threadpool.apply(session.prompt, ("> ",))
            if line == "quit":
                break
            print(f"you typed {line}")
    print(f"MAXGAP {ticker.stop() * 1000:.1f} ms")


if __name__ == "__main__":
    main()
