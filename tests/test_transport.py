"""Unit tests of the Outbox, the single writer of a socket, over socket pairs."""

import gevent
from gevent import socket

from greenchat.codec import Decoder
from greenchat.transport import MAX_BATCH, Outbox


def frame(i, pad=""):
    return b'{"type":"m","i":%d,"p":"%s"}\n' % (i, pad.encode())


def read_all(sock, timeout=10):
    decoder, frames = Decoder(1 << 20), []
    with gevent.Timeout(timeout):
        while True:
            data = sock.recv(65536)
            if not data:
                return frames
            frames += decoder.feed(data)


def test_many_batches_arrive_whole_and_in_order():
    a, b = socket.socketpair()
    outbox = Outbox(a)
    count = MAX_BATCH * 5 + 7
    reader = gevent.spawn(read_all, b)
    for i in range(count):
        assert outbox.put(frame(i))
        if i % 1000 == 0:
            gevent.sleep(0)
    outbox.close(10)
    a.close()
    assert [f["i"] for f in reader.get(timeout=10)] == list(range(count))


def test_the_limit_refuses_and_send_ignores_it():
    a, b = socket.socketpair()
    outbox = Outbox(a, limit=3)
    assert all(outbox.put(frame(i)) for i in range(3))
    assert not outbox.put(frame(3))
    assert len(outbox) == 3
    outbox.send({"type": "x"})
    assert len(outbox) == 4
    outbox.close(5)
    a.close()
    assert len(read_all(b)) == 4


def test_a_reader_that_stops_cannot_hold_close_for_longer_than_its_timeout():
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    outbox = Outbox(a)
    for i in range(3 * MAX_BATCH):
        outbox.put(frame(i, "x" * 3000))
    gevent.sleep(0.1)            # the writer fills the buffers and blocks
    with gevent.Timeout(3):
        outbox.close(0.2)        # nobody reads: it gives up
    assert outbox.greenlet.dead and outbox.failed
    a.close()
    received = [f["i"] for f in read_all(b)]
    assert received == list(range(len(received))) and 0 < len(received) < 3 * MAX_BATCH


def test_frames_queued_behind_the_close_marker_are_not_written():
    a, b = socket.socketpair()
    outbox = Outbox(a)
    outbox.put(frame(0))
    # The marker, then a late frame, before the writer runs at all.
    outbox._mark_close()
    outbox.put(frame(1))
    outbox.close(5)
    a.close()
    assert [f["i"] for f in read_all(b)] == [0]


def test_an_idle_writer_retires_and_the_next_frame_starts_another():
    a, b = socket.socketpair()
    outbox = Outbox(a)
    outbox.put(frame(0))
    gevent.sleep(0.05)
    outbox.retire_if_idle()              # it wrote since the last call: stays
    gevent.sleep(0.05)
    assert outbox.greenlet is not None
    outbox.retire_if_idle()              # nothing since: it ends
    gevent.sleep(0.05)
    assert outbox.greenlet is None
    outbox.put(frame(1))
    outbox.put(frame(2))
    outbox.close(5)
    a.close()
    assert [f["i"] for f in read_all(b)] == [0, 1, 2]


def test_retiring_a_busy_writer_loses_nothing():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    outbox = Outbox(a)
    for i in range(200):
        outbox.put(frame(i, "x" * 3000))
    gevent.sleep(0.05)                   # blocked: the peer is not reading
    outbox.retire_if_idle()
    outbox.retire_if_idle()
    reader = gevent.spawn(read_all, b)
    outbox.close(10)
    a.close()
    assert [f["i"] for f in reader.get(timeout=10)] == list(range(200))


def test_the_byte_limit_refuses_but_never_an_empty_mailbox():
    a, b = socket.socketpair()
    outbox = Outbox(a, limit_bytes=100)
    big = frame(0, "x" * 200)               # larger than the limit alone
    assert outbox.put(big)                  # an empty mailbox takes it
    assert not outbox.put(frame(1))         # but nothing after it
    assert outbox.wait_written(5)
    assert outbox.nbytes == 0
    assert outbox.put(frame(2, "y" * 40)) and not outbox.put(frame(3, "z" * 40))
    outbox.close(5)
    a.close()
    assert [f["i"] for f in read_all(b)] == [0, 2]


class _TricklingSocket:
    """Hands out one frame a byte per recv, as a ready socket would: never
    waiting, so never yielding to the hub by itself."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    def recv(self, size):
        chunk = self.data[self.at:self.at + 1]
        self.at += 1
        return chunk


def test_a_frame_trickled_a_byte_at_a_time_does_not_hold_the_hub():
    from greenchat.transport import FrameReader

    from support import HubTicker
    big = b'{"type":"x","pad":"' + b"a" * 400_000 + b'"}\n'
    reader = FrameReader(_TricklingSocket(big), max_frame=1 << 20)
    ticker = HubTicker()
    gevent.sleep(0.01)
    frame = reader.read_frame(timeout=60)
    gap = ticker.stop()
    assert frame["type"] == "x" and len(frame["pad"]) == 400_000
    assert gap < 0.15, f"the reader held the hub {gap * 1000:.0f} ms"
