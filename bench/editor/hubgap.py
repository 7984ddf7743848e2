"""The 1 ms ticker both editor scripts run: the hub's longest gap is the
longest time between its ticks."""

import time

import gevent

gaps = []


def ticker():
    last = time.perf_counter()
    while True:
        gevent.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


def report():
    print(f"MAXGAP {max(gaps) * 1000:.1f} ms")
