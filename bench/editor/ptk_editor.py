"""prompt_toolkit's prompt in gevent's thread pool, for bench.editor.measure.

A greenlet prints a line every 50 ms through patch_stdout while the prompt
runs in a pool thread; a 1 ms ticker greenlet records the hub's longest gap.
"""


import gevent
from hubgap import report, ticker  # a sibling: these run as scripts
from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout


def chatter():
    for i in range(1, 1_000_000):
        gevent.sleep(0.05)
        print(f"incoming message {i}")


def main():
    session = PromptSession()
    gevent.spawn(ticker)
    gevent.spawn(chatter)
    with patch_stdout():
        while True:
            line = gevent.get_hub().threadpool.apply(session.prompt, ("> ",))
            if line == "quit":
                break
            print(f"you typed {line}")
    report()


if __name__ == "__main__":
    main()
