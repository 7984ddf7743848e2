"""The client reconnects: the real client, piped, against servers in this
process (a real one that crashes, its connections cut without a goodbye, and
is started again on the same port and data, or one that cuts a connection)
and fake ones that script every frame. A server stopped cleanly says
goodbye, which ends the session: no reconnect.

After a connection lost after login (not a goodbye or an error frame) the
client says `Connection to server lost. Reconnecting...`, ends its private
links, and logs in again: a `resume` with the login's token if it has one,
else (or if it is `expired`) username and password. Then `Reconnected`,
the awaited command goes again (same txn, `retry`), an ack for what was
shown, and the session goes on; lines typed meanwhile wait and go once. A
refused password or a locked account ends it at once; `This account is
already logged in` is tried again; past --reconnect-for it gives up with
`Connection to server lost`. Pings are answered with pongs.
"""

import time

import gevent
import pytest
from gevent.server import StreamServer

from greenchat import frames, texts
from greenchat.client import client as client_module
from greenchat.transport import shutdown

from support import PASSWORD, Agent, User, frame_batches, normal_answer, wait_until, welcome, wire

DROP = object()         # a fake server's answer: close the connection instead


class Fake:
    """A fake server that records every frame it gets with the number of
    its connection (0 for the first). `steps` map a frame type to a
    function of (frame, connection number) returning what to send back:
    frames, raw bytes, or DROP to close the connection there."""

    def __init__(self, **steps):
        self.steps = dict(hello=lambda frame, n: [frames.server_hello("fake")],
                          username=lambda frame, n: [frames.login(frames.ASK_PASSWORD)],
                          password=lambda frame, n: [welcome()],
                          resume=lambda frame, n: [frames.login(frames.EXPIRED)],
                          command=lambda frame, n: normal_answer(frame),
                          ack=lambda frame, n: [], pong=lambda frame, n: [])
        self.steps.update(steps)
        self.received = []          # (connection number, frame)
        self.socks = []
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.address = self.server.address

    def _handle(self, sock, _address):
        number = len(self.socks)
        self.socks.append(sock)
        try:
            for batch in frame_batches(sock):
                for frame in batch:
                    self.received.append((number, frame))
                    for answer in self.steps[frame["type"]](frame, number):
                        if answer is DROP:
                            return
                        sock.sendall(wire(answer))
        except OSError:
            pass
        finally:
            shutdown(sock)
            sock.close()

    @property
    def connections(self):
        return len(self.socks)

    def got(self, number, kind=None):
        """The frames connection `number` got (of type `kind`)."""
        return [frame for n, frame in self.received
                if n == number and (kind is None or frame["type"] == kind)]

    def send(self, number, frame):
        self.socks[number].sendall(wire(frame))

    def drop(self, number):
        """Cut connection `number`: the client reads the end of the stream."""
        shutdown(self.socks[number])

    def stop(self):
        """Stop listening (a connection is refused from now on) and cut every connection."""
        for sock in self.socks:
            shutdown(sock)
        self.server.stop(timeout=1)


@pytest.fixture
def fake():
    made = []

    def start(**steps):
        made.append(Fake(**steps))
        return made[-1]
    yield start
    for server in made:
        server.stop()


@pytest.fixture
def clients():
    """clients(name, address, **config): a logged-in User that reconnects
    unless told not to; any still running is killed at teardown."""
    started = []

    def start(name, address, **config):
        config.setdefault("reconnect", True)
        started.append(User(name, address, history=False, **config))
        return started[-1]
    yield start
    for user in started:
        user.greenlet.kill()


def after_welcome(user):
    lines = user.screen.lines
    return lines[lines.index(texts.WELCOME) + 1:]


def crash(server):
    """Stop `server` as its clients see a crash: every connection cut, no goodbye."""
    for session in list(server.sessions):
        shutdown(session.sock)
    server.stop()


def cut(server, name):
    """The server's end of `name`'s connection is cut; the server goes on."""
    shutdown(server.online[name].sock)


def message(msg_id, text, sender="yoda"):
    return frames.message(sender, text, msg_id=msg_id, sent_at=1795480000.5)


# A real server ------------------------------------------------------------------

def test_a_restarted_server_is_rejoined_and_the_session_goes_on(make_server, clients):
    server = make_server(["hans", "yoda"])
    port = server.address[1]
    hans = clients("hans", server.address)
    crash(server)
    hans.expect(texts.RECONNECTING)
    server = make_server.again(port=port)
    hans.expect(texts.RECONNECTED, timeout=10)
    yoda = Agent("yoda", server.address)
    assert yoda.login()["status"] == "ok"
    hans.expect("yoda logged in")
    _, answer = yoda.command("message hans after the restart")
    assert answer["ok"], answer
    hans.expect("yoda: after the restart")
    hans.type("message yoda and back")
    yoda.wait_for(lambda frame: frame.get("text") == "and back")
    # Piped, the reconnect is exactly two lines.
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED, "yoda logged in",
                                   "yoda: after the restart"]
    assert hans.quit() == 0
    assert len(hans.client._workers) == 0 and len(hans.client._ackers) == 0
    yoda.logout()


def test_a_message_shown_and_not_acknowledged_before_the_drop_is_shown_once(
        make_server, clients, monkeypatch):
    monkeypatch.setattr(client_module, "ACK_DELAY", 30.0)     # nothing acknowledged before the drop
    server = make_server(["hans", "yoda"])
    hans = clients("hans", server.address)
    came = []
    on_message = hans.client._on["message"]
    hans.client._on["message"] = lambda frame: (came.append(frame), on_message(frame))[1]
    yoda = Agent("yoda", server.address)
    assert yoda.login()["status"] == "ok"
    hans.expect("yoda logged in")
    _, answer = yoda.command("message hans only once")
    assert answer["ok"], answer
    hans.expect("yoda: only once")
    msg_id = came[0]["id"]
    monkeypatch.setattr(client_module, "ACK_DELAY", 0.1)
    cut(server, "hans")
    hans.expect(texts.RECONNECTED, timeout=10)
    # The resume says the client showed it: acknowledged so, and if it is
    # ever sent again (a password login instead), dropped by its id.
    wait_until(lambda: "hans" in server.online and server.online["hans"].acked == msg_id,
               lambda: f"not acknowledged: {server.online.get('hans')}")
    assert all(frame["id"] == msg_id for frame in came), came
    assert after_welcome(hans) == ["yoda logged in", "yoda: only once",
                                   texts.RECONNECTING, texts.RECONNECTED]
    assert hans.quit() == 0
    yoda.logout()


def test_the_private_links_end_on_a_drop_and_can_be_opened_again(make_server, clients):
    server = make_server(["hans", "yoda"])
    hans = clients("hans", server.address)
    yoda = clients("yoda", server.address, reconnect=False)
    hans.expect("yoda logged in")
    hans.type("startprivate yoda")
    hans.expect(texts.start_private("yoda"))
    yoda.expect(texts.started_private_with_you("hans"))
    cut(server, "hans")
    hans.expect(texts.RECONNECTED, timeout=10)
    yoda.expect(texts.private_stopped("hans"))
    assert after_welcome(hans) == ["yoda logged in", texts.start_private("yoda"),
                                   texts.RECONNECTING, texts.private_stopped("yoda"),
                                   texts.RECONNECTED]
    # The listener lived on, and the server was told where it is again.
    yoda.type("startprivate hans")
    yoda.expect(texts.start_private("hans"))
    hans.expect(texts.started_private_with_you("yoda"))
    yoda.type("private hans still here")
    hans.expect("yoda(private): still here")
    assert yoda.screen.lines.count(texts.private_stopped("hans")) == 1
    assert hans.quit() == 0 and yoda.quit() == 0


def test_a_goodbye_from_a_stopping_server_ends_the_session(make_server, clients):
    server = make_server(["hans"])
    hans = clients("hans", server.address)
    server.stop()
    assert hans.greenlet.get(timeout=10) == 1
    assert after_welcome(hans) == [texts.SERVER_SHUTTING_DOWN]


# Logging in again -------------------------------------------------------------------

def test_a_held_token_is_sent_in_a_resume_and_a_resumed_login_goes_on(fake, clients, monkeypatch):
    monkeypatch.setattr(client_module, "ACK_DELAY", 30.0)

    def command(frame, n):
        if frame["line"] == "go":
            return [message(7, "seven"), frames.reply(frame["id"], ["done"])]
        return normal_answer(frame)
    server = fake(
        password=lambda frame, n: [frames.login(frames.LOGGED_IN, texts.WELCOME, user="hans",
                                                token="first-token")],
        resume=lambda frame, n: [frames.login(frames.LOGGED_IN, user="hans",
                                              token=f"token-{n}", resumed=True)],
        command=command)
    hans = clients("hans", server.address)
    hans.type("go")
    hans.expect("done")
    server.drop(0)
    hans.expect(texts.RECONNECTED, timeout=5)
    wait_until(lambda: server.got(1, "ack"), lambda: server.got(1))
    resume, ack = server.got(1)[1:]
    assert [frame["type"] for frame in server.got(1)] == ["hello", "resume", "ack"]
    assert (resume["user"], resume["token"], resume["last"]) == ("hans", "first-token", 7)
    assert resume["p2p"]["port"] == hans.client.listener.address[1]
    assert ack["upto"] == 7
    # The next resume carries the token the last login gave.
    server.drop(1)
    wait_until(lambda: server.got(2, "resume"), lambda: server.received[-3:])
    assert server.got(2, "resume")[0]["token"] == "token-1"
    hans.expect(texts.RECONNECTED)
    wait_until(lambda: after_welcome(hans).count(texts.RECONNECTED) == 2,
               lambda: after_welcome(hans))
    assert after_welcome(hans) == ["yoda: seven", "done", texts.RECONNECTING,
                                   texts.RECONNECTED, texts.RECONNECTING, texts.RECONNECTED]
    assert hans.quit() == 0
    assert server.got(2, "command")[-1]["line"] == "logout"


def test_an_expired_resume_logs_in_with_the_password_on_the_same_connection(fake, clients):
    server = fake(password=lambda frame, n: [frames.login(frames.LOGGED_IN, texts.WELCOME,
                                                          user="hans", token="old")])
    hans = clients("hans", server.address)
    server.drop(0)
    hans.expect(texts.RECONNECTED, timeout=5)
    assert server.connections == 2
    assert [frame["type"] for frame in server.got(1)] == ["hello", "resume", "username",
                                                          "password"]
    username, password = server.got(1)[2:]
    assert username["username"] == "hans" and password["password"] == PASSWORD
    assert password["p2p"]["port"] == hans.client.listener.address[1]
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED]
    assert hans.quit() == 0


def test_without_a_token_the_client_logs_in_with_the_password(fake, clients):
    server = fake()
    hans = clients("hans", server.address)
    server.drop(0)
    hans.expect(texts.RECONNECTED, timeout=5)
    assert [frame["type"] for frame in server.got(1)] == ["hello", "username", "password"]
    assert server.got(1, "password")[0]["password"] == PASSWORD
    assert hans.quit() == 0


REFUSALS = {
    "a refused password": ("password", frames.login(frames.ASK_PASSWORD,
                                                    texts.INVALID_PASSWORD)),
    "a password that locks": ("password", frames.login(frames.FAILED,
                                                       texts.ACCOUNT_NOW_BLOCKED)),
    "a locked account": ("password", frames.login(frames.FAILED, texts.ACCOUNT_BLOCKED)),
    "no login now": ("password", frames.login(frames.FAILED, texts.LOGIN_UNAVAILABLE)),
    "a deleted account": ("username", frames.login(frames.ASK_USERNAME,
                                                   texts.INVALID_USERNAME)),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_on_reconnect_is_shown_and_ends_the_client_without_another_try(
        fake, clients, case):
    step, refusal = REFUSALS[case]
    first = {"password": lambda frame: [welcome()],
             "username": lambda frame: [frames.login(frames.ASK_PASSWORD)]}[step]
    server = fake(**{step: lambda frame, n: first(frame) if n == 0 else [refusal]})
    hans = clients("hans", server.address)
    started = time.monotonic()
    server.drop(0)
    assert hans.greenlet.get(timeout=10) == 1
    assert time.monotonic() - started < 3
    assert after_welcome(hans) == [texts.RECONNECTING, refusal["text"]]
    gevent.sleep(1.5)            # no try after it (there could be none: the client is gone)
    assert server.connections == 2


def test_already_logged_in_is_tried_again(fake, clients):
    busy = frames.login(frames.FAILED, texts.ALREADY_LOGGED_IN)
    server = fake(password=lambda frame, n: [busy] if n in (1, 2) else [welcome()])
    hans = clients("hans", server.address)
    server.drop(0)
    hans.expect(texts.RECONNECTED, timeout=10)
    assert server.connections == 4
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED]
    assert hans.quit() == 0


def test_already_logged_in_until_the_time_runs_out(fake, clients):
    busy = frames.login(frames.FAILED, texts.ALREADY_LOGGED_IN)
    server = fake(password=lambda frame, n: [busy] if n else [welcome()])
    hans = clients("hans", server.address, reconnect_for=1.5)
    server.drop(0)
    assert hans.greenlet.get(timeout=10) == 1
    assert server.connections >= 3
    assert after_welcome(hans) == [texts.RECONNECTING, texts.ALREADY_LOGGED_IN,
                                   texts.CONNECTION_LOST]


def test_errors_and_refused_connections_are_tried_again(fake, clients):
    too_many = frames.error(texts.TOO_MANY_CONNECTIONS)
    server = fake(hello=lambda frame, n: [too_many] if n == 1 else [frames.server_hello("f")],
                  username=lambda frame, n: [b"junk\n"] if n == 2 else
                  [frames.login(frames.ASK_PASSWORD)])
    hans = clients("hans", server.address)
    server.drop(0)
    hans.expect(texts.RECONNECTED, timeout=10)
    assert server.connections == 4
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED]
    assert hans.quit() == 0


# Giving up ---------------------------------------------------------------------------

def test_no_reconnect_exits_at_once(fake, clients):
    server = fake()
    hans = clients("hans", server.address, reconnect=False)
    started = time.monotonic()
    server.drop(0)
    assert hans.greenlet.get(timeout=5) == 1
    assert time.monotonic() - started < 1
    assert after_welcome(hans) == [texts.CONNECTION_LOST]
    gevent.sleep(0.8)
    assert server.connections == 1


@pytest.mark.parametrize("server_is", ["gone", "silent"])
def test_the_client_gives_up_after_reconnect_for(fake, clients, server_is):
    # Gone: the port is closed; silent: it takes connections and never
    # answers, and no wait of a try may outlast the time either.
    server = fake(hello=lambda frame, n: [] if n else [frames.server_hello("fake")])
    hans = clients("hans", server.address, reconnect_for=1.5)
    started = time.monotonic()
    if server_is == "gone":
        server.stop()
    else:
        server.drop(0)
    assert hans.greenlet.get(timeout=10) == 1
    took = time.monotonic() - started
    assert 1.4 < took < 4, took
    assert after_welcome(hans) == [texts.RECONNECTING, texts.CONNECTION_LOST]
    assert len(hans.client._workers) == 0


def test_a_signal_while_reconnecting_ends_the_client_at_once(fake, clients):
    server = fake()
    hans = clients("hans", server.address)
    server.stop()
    hans.expect(texts.RECONNECTING)
    started = time.monotonic()
    hans.client._terminated()        # what SIGTERM and SIGHUP call
    assert hans.greenlet.get(timeout=5) == 1
    assert time.monotonic() - started < 1
    assert after_welcome(hans) == [texts.RECONNECTING]
    assert len(hans.client._workers) == 0


@pytest.mark.parametrize("end, shown, status", [
    (frames.bye(frames.SHUTDOWN, texts.SERVER_SHUTTING_DOWN), texts.SERVER_SHUTTING_DOWN, 1),
    (frames.bye(frames.IDLE, texts.LOGGED_OUT_IDLE), texts.LOGGED_OUT_IDLE, 0),
    (frames.error(texts.FLOODING), texts.FLOODING, 1),
    ({"type": "bye", "reason": "logout", "text": {"a": 1}}, texts.CONNECTION_LOST, 1),
])
def test_a_goodbye_or_an_error_frame_ends_the_session_without_a_reconnect(
        fake, clients, end, shown, status):
    server = fake(command=lambda frame, n: [end, DROP])
    hans = clients("hans", server.address)
    hans.type("go")
    assert hans.greenlet.get(timeout=5) == status
    assert after_welcome(hans) == [shown]
    gevent.sleep(0.8)
    assert server.connections == 1


# The session across a reconnect ------------------------------------------------------

def test_the_awaited_command_is_sent_again_with_its_txn(fake, clients):
    def command(frame, n):
        if n == 0 and frame["line"] == "slow":
            return [DROP]
        return normal_answer(frame)
    server = fake(command=command)
    hans = clients("hans", server.address)
    hans.type("slow")
    hans.type("whoelse")        # waits for the answer to slow
    wait_until(lambda: hans.screen.lines.count("done") == 2, lambda: hans.screen.lines)
    [first] = server.got(0, "command")
    again, then = server.got(1, "command")
    assert first["line"] == "slow" and "retry" not in first
    assert again == {"type": "command", "id": first["id"] + 1, "line": "slow",
                     "txn": first["txn"], "retry": True}
    assert then["line"] == "whoelse" and "retry" not in then and then["txn"] != first["txn"]
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED, "done", "done"]
    assert hans.quit() == 0


def test_lines_typed_while_reconnecting_wait_and_go_once(fake, clients):
    def password(frame, n):
        if n == 1:
            gevent.sleep(1.0)    # the lines below are typed meanwhile
        return [welcome()]
    server = fake(password=password)
    hans = clients("hans", server.address)
    server.drop(0)
    hans.expect(texts.RECONNECTING)
    for line in ("whoelse", "history yoda", "whoelsesince 60"):
        hans.type(line)
    # The end of input too waits: then the client logs out.
    assert hans.quit() == 0
    assert server.got(0, "command") == []
    assert [frame["line"] for frame in server.got(1, "command")] == [
        "whoelse", "history yoda", "whoelsesince 60", "logout"]
    assert not any(frame.get("retry") for frame in server.got(1, "command"))
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED, "done", "done", "done",
                                   texts.GOODBYE]


def test_a_frame_too_large_is_a_lost_connection(fake, clients, monkeypatch):
    monkeypatch.setattr(client_module, "SERVER_MAX_FRAME", 4096)

    def command(frame, n):
        if n == 0:
            return [frames.reply(frame["id"], ["x" * 10_000])]
        return normal_answer(frame)
    server = fake(command=command)
    hans = clients("hans", server.address)
    hans.type("whoelse")
    hans.expect("done", timeout=5)
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED, "done"]
    assert server.got(1, "command")[0]["retry"] is True
    assert hans.quit() == 0


def test_a_connection_lost_again_at_once_is_the_same_outage(fake, clients, monkeypatch):
    # The reply too large comes again with every retry: the client gives up
    # --reconnect-for after the first loss, not after the last.
    monkeypatch.setattr(client_module, "SERVER_MAX_FRAME", 4096)
    server = fake(command=lambda frame, n: [frames.reply(frame["id"], ["x" * 10_000])])
    hans = clients("hans", server.address, reconnect_for=2)
    hans.type("whoelse")
    started = time.monotonic()
    assert hans.greenlet.get(timeout=10) == 1
    assert time.monotonic() - started < 4
    lines = after_welcome(hans)
    assert lines[-1] == texts.CONNECTION_LOST and len(lines) >= 4, lines
    assert lines[:-1] == ([texts.RECONNECTING, texts.RECONNECTED] * len(lines))[:len(lines) - 1]
    # Tries 0.25-0.5 s, then 0.5-1 s apart, then 1-2 s: at most 4 in 2 s.
    assert 2 <= server.connections <= 5


def test_pings_are_answered_with_pongs_on_every_connection(fake, clients):
    server = fake()
    hans = clients("hans", server.address)
    server.send(0, frames.ping())
    wait_until(lambda: server.got(0, "pong"), lambda: server.got(0))
    server.drop(0)
    hans.expect(texts.RECONNECTED, timeout=5)
    server.send(1, frames.ping())
    server.send(1, frames.ping())
    wait_until(lambda: len(server.got(1, "pong")) == 2, lambda: server.got(1))
    assert server.got(0, "pong") == [frames.pong()]
    assert after_welcome(hans) == [texts.RECONNECTING, texts.RECONNECTED]
    assert hans.quit() == 0
