"""Integration tests of issue 2: every login path, command and text, against a
server started in this process on a free port."""

import time
from types import SimpleNamespace

import gevent
import pytest

from greenchat import frames, texts
from greenchat.server.presence import BATCH as PRESENCE_BATCH
from greenchat.server.presence import DELIVERIES as PRESENCE_DELIVERIES
from greenchat.server.server import idle_warning_after, seconds_left

from support import PASSWORD, Agent, exchange_until_closed, silent_login

USERS = ["alice", "bob", "carol", "dave"]


@pytest.fixture
def server(make_server):
    return make_server(USERS)


def online(server, *names):
    agents = []
    for name in names:
        agent = Agent(name, server.address)
        assert agent.login()["status"] == "ok"
        agents.append(agent)
    return agents


def reply_lines(agent, line):
    return agent.command(line)[1]["lines"]


def hello():
    return {"type": "hello", "version": 1}


# Login ------------------------------------------------------------------------

def test_unknown_username_then_retry(server):
    agent = Agent("alice", server.address)
    agent.connect()
    agent.send(hello())
    agent.send({"type": "username", "username": "nobody"})
    frame = agent.wait_for(lambda f: f.get("text") == texts.INVALID_USERNAME)
    assert frame["status"] == "username"
    agent.send({"type": "username", "username": "alice"})
    agent.send({"type": "password", "password": PASSWORD})
    assert agent.wait_for(lambda f: f.get("status") == "ok")["text"] == texts.WELCOME


def test_wrong_password_then_right_one(server):
    agent = Agent("alice", server.address)
    agent.connect()
    for frame in (hello(), {"type": "username", "username": "alice"},
                  {"type": "password", "password": "nope"}):
        agent.send(frame)
    frame = agent.wait_for(lambda f: f.get("text") == texts.INVALID_PASSWORD)
    assert frame["status"] == "password"
    agent.send({"type": "password", "password": PASSWORD})
    assert agent.wait_for(lambda f: f.get("status") == "ok")["text"] == texts.WELCOME


def test_three_wrong_passwords_lock_the_account_from_any_connection(make_server):
    server = make_server(USERS, block_duration=0.6)
    frames = exchange_until_closed(server.address, [
        hello(), {"type": "username", "username": "bob"},
        {"type": "password", "password": "x1"}, {"type": "password", "password": "x2"},
        {"type": "password", "password": "x3"}, {"type": "password", "password": PASSWORD}])
    login = [f for f in frames if f["type"] == "login" and "text" in f]
    assert [f["text"] for f in login] == [texts.INVALID_PASSWORD, texts.INVALID_PASSWORD,
                                          texts.ACCOUNT_NOW_BLOCKED]
    assert login[-1]["status"] == "failed"
    # How long the lock lasts: the whole of it now, less later; never for a wrong password.
    assert 0.4 < login[-1]["retry_after"] <= 0.6
    assert "retry_after" not in login[0]
    # The right password from another connection, while locked.
    locked = Agent("bob", server.address).login()
    assert locked["text"] == texts.ACCOUNT_BLOCKED
    assert 0 <= locked["retry_after"] <= login[-1]["retry_after"]
    # Another account is untouched.
    assert Agent("carol", server.address).login()["status"] == "ok"
    gevent.sleep(0.8)
    assert Agent("bob", server.address).login()["status"] == "ok"


def test_failures_count_per_account_across_connections_and_success_resets(make_server):
    server = make_server(USERS, block_duration=30)
    for _ in range(2):
        assert Agent("bob", server.address).login("wrong")["text"] == texts.INVALID_PASSWORD
    bob = Agent("bob", server.address)
    assert bob.login()["status"] == "ok"      # resets the count
    bob.logout()
    for _ in range(2):
        assert Agent("bob", server.address).login("wrong")["text"] == texts.INVALID_PASSWORD
    assert Agent("bob", server.address).login("wrong")["text"] == texts.ACCOUNT_NOW_BLOCKED


def test_lock_survives_a_restart(make_server):
    server = make_server(USERS, block_duration=30)
    for _ in range(3):
        Agent("bob", server.address).login("wrong")
    server.stop()
    again = make_server(USERS, block_duration=30)
    assert Agent("bob", again.address).login()["text"] == texts.ACCOUNT_BLOCKED


def test_already_logged_in_leaves_the_first_session_alone(server):
    alice, bob = online(server, "alice", "bob")
    second = Agent("alice", server.address)
    frame = second.login()
    assert (frame["status"], frame["text"]) == ("failed", texts.ALREADY_LOGGED_IN)
    assert second.closed.wait(5)
    assert reply_lines(alice, "whoelse") == ["bob"]


def test_silent_connection_is_dropped_at_the_login_deadline(make_server):
    server = make_server(USERS, login_timeout=0.3)
    start = time.monotonic()
    frames = exchange_until_closed(server.address, [hello()])
    assert frames[-1] == {"type": "error", "text": texts.LOGIN_TIMEOUT}
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("version", [99, True, 1.0, "1", None, [1]])
def test_wrong_protocol_version_is_refused(server, version):
    frames = exchange_until_closed(server.address, [{"type": "hello", "version": version}])
    assert frames == [{"type": "error", "text": texts.UNSUPPORTED_VERSION}]


def test_hello_carries_the_frame_limit(make_server):
    for limit in (65_536, 2048):
        server = make_server(USERS, max_frame=limit)
        agent = Agent("alice", server.address)
        agent.connect()
        agent.send(hello())
        answer = agent.wait_for(lambda f: f["type"] == "hello")
        assert answer["max_frame"] == limit and type(answer["max_frame"]) is int


# Messages ---------------------------------------------------------------------

def test_message_is_delivered_verbatim_and_answered_with_nothing(server):
    alice, bob = online(server, "alice", "bob")
    text = '"quoted"  text\twith tabs, \\ and ünïcode 🙂 trailing  '
    assert reply_lines(alice, f"message bob {text}") == []
    frame = bob.wait_for(lambda f: f["type"] == "message")
    assert (frame["from"], frame["text"]) == ("alice", text)


def test_message_errors(server):
    alice, bob = online(server, "alice", "bob")
    assert reply_lines(alice, "message nobody hi") == [texts.INVALID_USER]
    assert reply_lines(alice, "message alice hi") == [texts.CANNOT_MESSAGE_SELF]
    assert reply_lines(bob, "block alice") == [texts.blocked("alice")]
    assert reply_lines(alice, "message bob hi") == [texts.RECIPIENT_BLOCKED_YOU]
    bob.logout()
    assert reply_lines(alice, "message bob stored?") == [texts.RECIPIENT_BLOCKED_YOU]
    bob = Agent("bob", server.address)
    bob.login()
    bob.command("whoelse")
    assert bob.texts() == []


def test_offline_messages_arrive_first_oldest_first(server):
    alice, = online(server, "alice")
    for i in range(5):
        assert reply_lines(alice, f"message bob note {i}") == []
    bob = Agent("bob", server.address)
    bob.login()
    alice.command("message bob live")
    bob.wait_for(lambda f: f.get("text") == "live")
    kinds = [(f["type"], f.get("text")) for _, f in bob.stream
             if f["type"] in ("login", "message") and "text" in f]
    assert kinds == [("login", texts.WELCOME)] + [("message", f"note {i}") for i in range(5)] + \
        [("message", "live")]
    assert all(f.get("offline") for _, f in bob.frames("message")[:5])
    # Delivered once: a second login gets nothing.
    bob.logout()
    again = Agent("bob", server.address)
    again.login()
    again.command("whoelse")
    assert again.texts() == []


def test_offline_messages_survive_a_restart(make_server):
    server = make_server(USERS)
    alice, = online(server, "alice")
    alice.command("message carol kept across restarts")
    server.stop()
    server = make_server(USERS)
    carol, = online(server, "carol")
    carol.command("whoelse")
    assert carol.texts() == ["kept across restarts"]


def test_broadcast_reaches_all_online_but_those_who_block(server):
    alice, bob, carol = online(server, "alice", "bob", "carol")
    assert reply_lines(alice, "broadcast hello all") == []
    for agent in (bob, carol):
        frame = agent.wait_for(lambda f: f["type"] == "message")
        assert (frame["from"], frame["text"], frame.get("broadcast")) == \
            ("alice", "hello all", True)
    carol.command("block alice")
    assert reply_lines(alice, "broadcast second") == [texts.BROADCAST_PARTIAL]
    bob.wait_for(lambda f: f.get("text") == "second")
    carol.command("whoelse")
    assert carol.texts() == ["hello all"]
    alice.command("whoelse")
    assert alice.texts() == []          # never to the sender


def test_broadcasts_are_not_stored_for_offline_users(server):
    alice, = online(server, "alice")
    alice.command("broadcast nobody home")
    dave, = online(server, "dave")
    dave.command("whoelse")
    assert dave.texts() == []


# Who is here ------------------------------------------------------------------

def test_whoelse(server):
    alice, = online(server, "alice")
    assert reply_lines(alice, "whoelse") == [texts.NO_OTHER_USERS_ONLINE]
    carol, bob = online(server, "carol", "bob")
    assert reply_lines(alice, "whoelse") == ["bob", "carol"]
    bob.command("block alice")
    assert reply_lines(alice, "whoelse") == ["carol"]
    assert reply_lines(bob, "whoelse") == ["alice", "carol"]


def test_whoelsesince(make_server):
    now = [1000.0]
    server = make_server(USERS)
    server.clock = lambda: now[0]
    alice, bob, carol = online(server, "alice", "bob", "carol")
    bob.logout()                        # logged out at 1000
    now[0] = 1120.0
    assert reply_lines(alice, "whoelsesince 200") == ["bob", "carol"]
    assert reply_lines(alice, "whoelsesince 120") == ["bob", "carol"]
    assert reply_lines(alice, "whoelsesince 119") == ["carol"]
    carol.command("block alice")
    assert reply_lines(alice, "whoelsesince 200") == ["bob"]
    carol.logout()
    now[0] = 5000.0
    assert reply_lines(alice, "whoelsesince 10") == [texts.NO_OTHER_USERS]
    for bad in ("whoelsesince", "whoelsesince -5", "whoelsesince 1.5", "whoelsesince ten",
                "whoelsesince 1 2"):
        assert reply_lines(alice, bad) == [texts.INVALID_COMMAND]


def test_whoelsesince_reads_the_newest_logouts_up_to_its_cutoff(make_server):
    now = [1000.0]
    server = make_server(USERS)
    server.clock = lambda: now[0]
    agents = dict(zip(USERS, online(server, *USERS), strict=True))
    for step, name in enumerate(("bob", "carol", "dave")):   # out at 1000, 1010, 1020
        now[0] = 1000.0 + 10 * step
        agents[name].logout()
    now[0] = 1030.0
    alice = agents["alice"]
    assert reply_lines(alice, "whoelsesince 10") == ["dave"]
    assert reply_lines(alice, "whoelsesince 20") == ["carol", "dave"]
    assert reply_lines(alice, "whoelsesince 30") == ["bob", "carol", "dave"]
    assert reply_lines(alice, "whoelsesince 9999999999") == ["bob", "carol", "dave"]
    # bob again, later: he moves to the newest end, once.
    bob, = online(server, "bob")
    now[0] = 1040.0
    bob.logout()
    assert reply_lines(alice, "whoelsesince 5") == ["bob"]
    assert reply_lines(alice, "whoelsesince 25") == ["bob", "dave"]


def test_whoelsesince_remembers_logouts_across_a_restart(make_server):
    server = make_server(USERS)
    bob, = online(server, "bob")
    bob.logout()
    server.stop()
    server = make_server(USERS)
    alice, = online(server, "alice")
    assert reply_lines(alice, "whoelsesince 60") == ["bob"]


# Blocks -----------------------------------------------------------------------

def test_block_and_unblock_texts(server):
    alice, = online(server, "alice")
    assert reply_lines(alice, "block nobody") == [texts.INVALID_USER]
    assert reply_lines(alice, "block alice") == [texts.CANNOT_BLOCK_SELF]
    assert reply_lines(alice, "block bob") == ["bob is blocked"]
    assert reply_lines(alice, "block bob") == ["Error. bob is already blocked"]
    assert reply_lines(alice, "unblock nobody") == [texts.INVALID_USER]
    assert reply_lines(alice, "unblock alice") == [texts.CANNOT_UNBLOCK_SELF]
    assert reply_lines(alice, "unblock bob") == ["bob is unblocked"]
    assert reply_lines(alice, "unblock bob") == ["Error. bob was not blocked"]


def test_block_hides_presence_and_persists_across_restart(make_server):
    server = make_server(USERS)
    alice, bob = online(server, "alice", "bob")
    alice.command("block bob")
    alice.logout()
    bob.command("whoelse")
    assert ("alice", False) not in [(f["user"], f["online"]) for _, f in bob.frames("presence")]
    alice, = online(server, "alice")
    bob.command("whoelse")
    assert ("alice", True) not in [(f["user"], f["online"]) for _, f in bob.frames("presence")]
    alice.logout()
    server.stop()
    server = make_server(USERS)
    alice, bob = online(server, "alice", "bob")
    assert reply_lines(bob, "message alice still blocked?") == [texts.RECIPIENT_BLOCKED_YOU]
    assert reply_lines(alice, "block bob") == ["Error. bob is already blocked"]


# Presence, logout, idle -------------------------------------------------------

def test_presence_notices_and_logout(server):
    alice, = online(server, "alice")
    bob, = online(server, "bob")
    alice.wait_for(lambda f: f == {"type": "presence", "user": "bob", "online": True})
    bye = bob.logout()
    assert bye == {"type": "bye", "reason": "logout", "text": texts.GOODBYE}
    assert bob.closed.is_set()
    alice.wait_for(lambda f: f == {"type": "presence", "user": "bob", "online": False})


def test_dropped_connection_counts_as_logout_without_a_resume_window(make_server):
    server = make_server(USERS, resume_window=0)
    alice, bob = online(server, "alice", "bob")
    bob.sock.close()
    alice.wait_for(lambda f: f == {"type": "presence", "user": "bob", "online": False})
    assert reply_lines(alice, "whoelse") == [texts.NO_OTHER_USERS_ONLINE]


def test_idle_logout_and_commands_reset_the_timer(make_server):
    server = make_server(USERS, timeout=0.6)
    alice, bob = online(server, "alice", "bob")
    for _ in range(4):                  # 1.2 s of activity, 0.3 s apart
        gevent.sleep(0.3)
        alice.command("whoelse")
    bye = bob.wait_for(lambda f: f["type"] == "bye", timeout=3)
    assert bye == {"type": "bye", "reason": "idle", "text": texts.LOGGED_OUT_IDLE}
    assert not [f for _, f in alice.stream if f["type"] == "bye"]
    alice.wait_for(lambda f: f == {"type": "presence", "user": "bob", "online": False})
    alice.wait_for(lambda f: f["type"] == "bye", timeout=3)


def test_the_idle_warning_comes_once_a_period_and_only_commands_put_it_off(make_server):
    server = make_server(USERS, timeout=3)
    bob, = online(server, "bob")
    welcomed = bob.frames("login")[-1][0]
    # Acknowledgements all along: alive, but not activity.
    acker = gevent.spawn(lambda: [(gevent.sleep(0.25), bob.send(frames.ack(0)))
                                  for _ in range(40)])
    try:
        first = bob.wait_for(lambda f: f["type"] == "notice", timeout=3)
        assert first == {"type": "notice",
                         "text": "You will be logged out in 2 seconds due to inactivity"}
        warned = bob.frames("notice")[0][0]
        assert 1.4 <= warned - welcomed <= 2.2
        gevent.sleep(max(0.0, welcomed + 2.0 - time.monotonic()))
        active, _ = bob.command("whoelse")          # resets the deadline and the warning
        bye = bob.wait_for(lambda f: f["type"] == "bye", timeout=5)
    finally:
        acker.kill()
    assert bye["reason"] == "idle"
    notices = bob.frames("notice")
    assert [f for _, f in notices] == [first, first]
    assert 1.4 <= notices[1][0] - active <= 2.2
    assert 2.9 <= bob.frames("bye")[0][0] - active <= 4.0


def test_pings_the_warning_and_the_idle_logout_share_one_read_loop(make_server):
    server = make_server(USERS, timeout=3, ping_after=0.4, ping_wait=0.4)
    bob, = online(server, "bob")            # answers pings, types nothing
    bye = bob.wait_for(lambda f: f["type"] == "bye", timeout=6)
    assert bye["reason"] == "idle"
    kinds = [f["type"] for _, f in bob.stream if f["type"] in ("ping", "notice", "bye")]
    assert kinds.count("notice") == 1 and kinds.count("ping") >= 4
    assert kinds.index("notice") > kinds.index("ping") and kinds[-1] == "bye"
    assert [f["text"] for _, f in bob.frames("notice")] == [texts.idle_warning(2)]


def test_when_the_idle_warning_comes():
    # A minute before, or at half the timeout under two minutes.
    assert idle_warning_after(200) == 140
    assert idle_warning_after(600) == 540
    assert idle_warning_after(120) == 60
    assert idle_warning_after(100) == 50
    assert idle_warning_after(3) == 1.5
    # The seconds left, rounded up; a timer's last microseconds are not one more.
    assert seconds_left(1.5) == 2
    assert seconds_left(59.2) == 60
    assert seconds_left(60.000001) == 60
    assert seconds_left(0.2) == 1
    assert texts.idle_warning(60) == "You will be logged out in 60 seconds due to inactivity"


def test_unknown_commands_and_wrong_arguments(server):
    alice, = online(server, "alice")
    for line in ("dance", "message", "message bob", "broadcast", "whoelse now", "block",
                 "unblock a b", "logout please", "MESSAGE bob hi", "private bob hi"):
        _, reply = alice.command(line)
        assert (reply["ok"], reply["lines"]) == (False, [texts.INVALID_COMMAND]), line


# Bad input ----------------------------------------------------------------------

@pytest.mark.parametrize("junk, text", ids=["oversize", "not-json", "tls-hello", "binary", "array",
                                           "no-type", "bad-line", "unknown-type"], argvalues=[
    (b'{"type": "command", "line": "' + b"x" * 70_000, texts.FRAME_TOO_LARGE),
    (b"x" * 70_000, texts.MALFORMED_FRAME),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", texts.MALFORMED_FRAME),
    (b"\xff\xfe\x00garbage\n", texts.MALFORMED_FRAME),
    (b"[1, 2, 3]\n", texts.MALFORMED_FRAME),
    (b'{"no": "type"}\n', texts.MALFORMED_FRAME),
    (b'{"type": "command", "id": 1, "line": 42}\n', texts.MALFORMED_FRAME),
    (b'{"type": "teleport"}\n', texts.MALFORMED_FRAME),
])
def test_bad_frames_end_only_that_session(server, junk, text):
    alice, bob = online(server, "alice", "bob")
    bob.sock.sendall(junk)
    error = bob.wait_for(lambda f: f["type"] == "error")
    assert error["text"] == text
    assert bob.closed.wait(5)
    alice.wait_for(lambda f: f == {"type": "presence", "user": "bob", "online": False})
    assert reply_lines(alice, "whoelse") == [texts.NO_OTHER_USERS_ONLINE]
    carol, = online(server, "carol")
    assert reply_lines(carol, "whoelse") == ["alice"]


def test_client_vanishing_mid_frame(make_server):
    server = make_server(USERS, resume_window=0.1)
    alice, bob = online(server, "alice", "bob")
    bob.sock.sendall(b'{"type": "command", "id": 9, "line": "message alice half')
    bob.sock.close()
    alice.wait_for(lambda f: f == {"type": "presence", "user": "bob", "online": False})
    assert alice.texts() == []


def test_garbage_before_login_and_binary_junk(server):
    frames = exchange_until_closed(server.address, [bytes(range(256)) * 4 + b"\n"])
    assert frames == [{"type": "error", "text": texts.MALFORMED_FRAME}]
    alice, = online(server, "alice")
    assert reply_lines(alice, "whoelse") == [texts.NO_OTHER_USERS_ONLINE]


def test_messages_to_a_dropped_connection_are_stored(make_server):
    server = make_server(USERS, mailbox_limit=50)
    alice, = online(server, "alice")
    # bob logs in and never reads; his socket buffers fill, then his mailbox.
    bob = silent_login(server.address, "bob")
    alice.wait_for(lambda f: f.get("user") == "bob" and f.get("online"))
    big = "m" * 8000
    for i in range(1500):
        alice.command(f"message bob {i} {big}")
        if not server.online.get("bob"):
            break
    bob.close()
    last = i
    alice.wait_for(lambda f: f == {"type": "presence", "user": "bob", "online": False})
    again = Agent("bob", server.address)
    again.login()
    again.command("whoelse")
    numbers = [int(t.split()[0]) for t in again.texts()]
    # The ones bob never read come back, in order, at his next login.
    assert numbers == list(range(numbers[0], last + 1))


def test_stop_tells_clients_and_keeps_data(make_server):
    server = make_server(USERS)
    alice, bob = online(server, "alice", "bob")
    alice.command("message carol for later")
    server.stop(timeout=5)
    for agent in (alice, bob):
        bye = agent.wait_for(lambda f: f["type"] == "bye")
        assert bye == {"type": "bye", "reason": "shutdown", "text": texts.SERVER_SHUTTING_DOWN}
        assert agent.closed.wait(5)
    server = make_server(USERS)
    carol, = online(server, "carol")
    carol.command("whoelse")
    assert carol.texts() == ["for later"]


def test_presence_is_batched_but_keeps_order_and_who_was_there(server):
    alice, = online(server, "alice")
    # bob logs in and at once messages alice: the notice comes first.
    bob = Agent("bob", server.address)
    assert bob.login()["status"] == "ok"
    bob.command("message alice right behind my notice")
    alice.wait_for(lambda f: f.get("text") == "right behind my notice")
    kinds = [(f["type"], f.get("user") or f.get("from")) for _, f in alice.stream
             if f["type"] in ("presence", "message")]
    assert kinds == [("presence", "bob"), ("message", "bob")]
    # carol logs in right after alice's logout and bob's re-login: she hears
    # of neither (she was not online when they happened), bob hears both once.
    alice.logout()
    carol = Agent("carol", server.address)
    assert carol.login()["status"] == "ok"
    carol.command("whoelse")
    bob.command("whoelse")
    assert carol.frames("presence") == []
    assert [(f["user"], f["online"]) for _, f in bob.frames("presence")] == [
        ("alice", False), ("carol", True)]


def test_presence_waits_longer_only_with_many_users_online(server):
    # The wait bounds presence deliveries to PRESENCE_DELIVERIES a second.
    assert server.chat.presence.wait() == PRESENCE_BATCH
    server.online.update({f"ghost{i}": None for i in range(10_000)})
    try:
        assert server.chat.presence.wait() == pytest.approx(0.5)
        assert 10_000 / server.chat.presence.wait() <= PRESENCE_DELIVERIES
    finally:
        for i in range(10_000):
            del server.online[f"ghost{i}"]


def test_a_login_that_fills_the_presence_batch_gets_no_earlier_notice():
    # Found in review: the login's own notice can flush the batch at once,
    # and the new session was already online with online_since 0.
    from greenchat.server.chat import Chat
    from greenchat.server.presence import BATCH_MAX

    class Seen:
        def __init__(self, user):
            self.user, self.online_since, self.got, self.end_reason = user, 0, [], None

        def notify(self, frame):
            self.got.append(frame)

    mailroom = SimpleNamespace(next_id=1, went_live=lambda session: None)
    chat = Chat(accounts=set(), store=None, mailroom=mailroom, clock=lambda: 0.0)
    for i in range(BATCH_MAX - 1):
        chat.presence.announce(f"u{i}", True)
    newcomer = Seen("late")
    chat.came_online(newcomer)          # the 128th notice: the batch goes out now
    assert not chat.presence.batch
    assert newcomer.got == []
    chat.presence.stop()


def test_replies_say_what_became_of_a_message_and_a_broadcast(make_server):
    server = make_server(USERS)
    alice, = [Agent("alice", server.address)]
    assert alice.login()["status"] == "ok"
    _, reply = alice.command("message bob you are offline")
    assert reply["ok"] and reply["stored"] is True and reply["lines"] == []
    _, reply = alice.command("broadcast anyone?")
    assert reply["ok"] and reply["delivered"] == 0
    bob = Agent("bob", server.address)
    assert bob.login()["status"] == "ok"
    _, reply = alice.command("message bob now you are here")
    assert reply["ok"] and "stored" not in reply
    _, reply = alice.command("broadcast hello")
    assert reply["delivered"] == 1


def test_names_lists_every_account_a_user_may_see(make_server):
    server = make_server(USERS)
    alice, bob = online(server, "alice", "bob")
    assert reply_lines(bob, "block alice") == [texts.blocked("alice")]
    alice.send({"type": "names"})
    bob.send({"type": "names"})
    # Offline accounts too; never one's own, never a user who blocks you.
    assert alice.wait_for(lambda f: f["type"] == "names")["users"] == ["carol", "dave"]
    assert bob.wait_for(lambda f: f["type"] == "names")["users"] == ["alice", "carol", "dave"]
