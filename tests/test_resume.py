"""Sessions that outlive their connections (issue 13): a dropped connection
hibernates for --resume-window seconds, still online, its messages kept; the
client takes it back with its resume token (or its password) with no
presence flap; a silent connection is pinged and dropped; a restart brings
the sessions that were open back hibernating."""

import time

import gevent

from greenchat import frames, texts

from support import Agent, ServerProcess, poll


def presence_of(agent, user):
    return [f["online"] for _, f in agent.frames("presence") if f["user"] == user]


def hibernate(server, agent):
    """`agent`'s connection dies; wait until the server's session hibernates."""
    agent.drop()
    assert poll(lambda: server.online[agent.name].state.value == "hibernating", 5)


def login_all(server, *names, **agent_options):
    agents = [Agent(name, server.address, **agent_options) for name in names]
    for agent in agents:
        assert agent.login()["status"] == "ok"
    return agents


def shown_to_bob(address, texts):
    """alice and bob logged in at `address`, bob acknowledging nothing, and
    `texts` sent by alice to bob and shown to him."""
    alice = Agent("alice", address)
    bob = Agent("bob", address, acks=False)
    assert alice.login()["status"] == "ok" and bob.login()["status"] == "ok"
    for text in texts:
        assert alice.command(f"message bob {text}")[1]["ok"]
    bob.wait_for(lambda f: f.get("text") == texts[-1])
    return alice, bob


def test_the_login_frame_carries_a_resume_token(make_server):
    server = make_server(["alice", "bob"])
    alice, bob = login_all(server, "alice", "bob")
    assert isinstance(alice.token, str) and len(alice.token) >= 32
    assert alice.token != bob.token


def test_a_dropped_connection_resumes_with_no_presence_flap_and_nothing_lost(make_server):
    server = make_server(["alice", "bob"], resume_window=10)
    alice, bob = login_all(server, "alice", "bob")
    assert alice.command("message bob before")[1]["ok"]
    bob.wait_for(lambda f: f.get("text") == "before")
    hibernate(server, bob)
    # Still online for everyone; messages to bob are accepted and kept.
    assert alice.command("whoelse")[1]["lines"] == ["bob"]
    for i in range(3):
        assert alice.command(f"message bob while away {i}")[1]["ok"]
    assert alice.command("broadcast to all")[1]["ok"]
    frame = bob.resume()
    assert frame["status"] == "ok" and frame["resumed"] is True and "text" not in frame
    bob.command("whoelse")
    assert bob.texts() == ["before", "while away 0", "while away 1", "while away 2", "to all"]
    assert bob.repeats == []
    assert presence_of(alice, "bob") == [True]      # the login's, and nothing since
    assert alice.command("message bob after")[1]["ok"]
    bob.wait_for(lambda f: f.get("text") == "after")


def test_unacknowledged_messages_come_again_on_resume_and_the_client_drops_them(make_server):
    server = make_server(["alice", "bob"], resume_window=10)
    alice, bob = shown_to_bob(server.address, ["0", "1", "2", "3", "4"])
    hibernate(server, bob)
    # The client showed 0-2 and acknowledged nothing; it says so on resume.
    assert bob.resume(last=bob.frames("message")[2][1]["id"])["status"] == "ok"
    bob.command("whoelse")
    assert bob.texts() == ["0", "1", "2", "3", "4"]
    assert [f["text"] for f in bob.repeats] == ["3", "4"]     # sent again, dropped by id


def test_the_resume_window_ends_in_a_logout(make_server):
    server = make_server(["alice", "bob"], resume_window=0.5)
    alice, bob = login_all(server, "alice", "bob")
    token = bob.token
    bob.drop()
    assert poll(lambda: presence_of(alice, "bob") == [True, False], 5)
    assert alice.command("whoelse")[1]["lines"] == [texts.NO_OTHER_USERS_ONLINE]
    assert alice.command("whoelsesince 60")[1]["lines"] == ["bob"]
    # Too late to resume: the client is told to log in with its password.
    again = Agent("bob", server.address)
    assert again.resume(token=token, last=0)["status"] == frames.EXPIRED


def test_a_wrong_token_is_expired_and_the_password_still_works_on_that_connection(
        make_server):
    server = make_server(["alice", "bob"], resume_window=10)
    alice, bob = login_all(server, "alice", "bob")
    bob.drop()
    again = Agent("bob", server.address)
    assert again.resume(token="not-the-token", last=0)["status"] == frames.EXPIRED
    again._waiters["login"] = type(again._waiters["login"])()
    again.send(frames.username("bob"))
    again.send(frames.password("pw"))
    frame = again._wait(again._waiters["login"], 10, "password")
    assert frame["status"] == "ok"


def test_a_password_login_takes_a_hibernating_session_over(make_server):
    server = make_server(["alice", "bob"], resume_window=10)
    alice, bob = login_all(server, "alice", "bob")
    hibernate(server, bob)
    assert alice.command("message bob kept for you")[1]["ok"]
    fresh = Agent("bob", server.address)
    frame = fresh.login()
    assert frame["status"] == "ok" and frame["text"] == texts.WELCOME
    assert frame["resume"] != bob.token            # a new client, a new token
    fresh.command("whoelse")
    assert fresh.texts() == ["kept for you"]
    assert presence_of(alice, "bob") == [True]
    # The old token no longer opens the session.
    assert Agent("bob", server.address).resume(token=bob.token, last=0)["status"] == \
        frames.EXPIRED


def test_a_live_session_refuses_a_password_login_but_its_token_takes_it(make_server):
    server = make_server(["alice", "bob"], resume_window=10)
    alice, bob = login_all(server, "alice", "bob")
    second = Agent("bob", server.address)
    frame = second.login()
    assert (frame["status"], frame["text"]) == ("failed", texts.ALREADY_LOGGED_IN)
    # The same client, back before the server saw its old connection die.
    again = Agent("bob", server.address)
    assert again.resume(token=bob.token, last=0)["status"] == "ok"
    assert bob.closed.wait(5)                       # the old connection is closed
    assert alice.command("message bob here")[1]["ok"]
    again.wait_for(lambda f: f.get("text") == "here")
    assert presence_of(alice, "bob") == [True]


def test_resume_window_0_logs_out_at_once(make_server):
    server = make_server(["alice", "bob"], resume_window=0)
    alice, bob = login_all(server, "alice", "bob")
    bob.drop()
    assert poll(lambda: presence_of(alice, "bob") == [True, False], 5)
    assert Agent("bob", server.address).resume(token=bob.token, last=0)["status"] == \
        frames.EXPIRED


def test_a_silent_connection_is_pinged_then_dropped_and_pongs_are_not_activity(make_server):
    server = make_server(["alice", "bob", "carol"], resume_window=0.2, ping_after=0.3,
                         ping_wait=0.3, timeout=3.0)
    alice, = login_all(server, "alice")
    bob, = login_all(server, "bob", pongs=False)      # a laptop that went to sleep
    carol, = login_all(server, "carol")               # answers every ping
    started = time.monotonic()
    assert poll(lambda: presence_of(alice, "bob") == [True, False], 5)
    assert time.monotonic() - started < 2.5
    assert bob.frames("ping")
    # carol answered her pings and typed nothing: logged out when idle, not before.
    assert carol.frames("ping")
    assert "carol" in alice.command("whoelse")[1]["lines"]
    bye = carol._wait(carol._waiters["bye"], 10, "idle logout")
    assert bye["text"] == texts.LOGGED_OUT_IDLE
    assert time.monotonic() - started >= 2.9


def test_sessions_open_at_a_crash_come_back_hibernating(tmp_path):
    (tmp_path / "credentials.txt").write_text("alice pw\nbob pw\n")
    server = ServerProcess(str(tmp_path), "--resume-window", "30")
    try:
        alice = Agent("alice", server.address)
        bob = Agent("bob", server.address, acks=False)
        assert alice.login()["status"] == "ok" and bob.login()["status"] == "ok"
        assert alice.command("message bob one")[1]["ok"]
        assert alice.command("broadcast two")[1]["ok"]
        bob.wait_for(lambda f: f.get("text") == "two")
        token = bob.token
        server.kill()
        server = ServerProcess(str(tmp_path), "--resume-window", "30")
        alice = Agent("alice", server.address)
        assert alice.login()["status"] == "ok"
        assert alice.command("whoelse")[1]["lines"] == ["bob"]     # hibernating
        assert alice.command("message bob three")[1]["ok"]
        again = Agent("bob", server.address)
        frame = again.resume(token=token, last=0)
        assert frame["status"] == "ok" and frame["resumed"] is True
        again.command("whoelse")
        assert again.texts() == ["one", "two", "three"]
        assert presence_of(alice, "bob") == []
    finally:
        server.kill()


def test_a_resume_after_a_crash_counts_its_last_as_shown(tmp_path):
    (tmp_path / "credentials.txt").write_text("alice pw\nbob pw\n")
    server = ServerProcess(str(tmp_path), "--resume-window", "30")
    try:
        alice, bob = shown_to_bob(server.address, ["one", "two", "three"])
        last = bob.frames("message")[-1][1]["id"]
        server.kill()
        server = ServerProcess(str(tmp_path), "--resume-window", "30")
        # Shown before the crash, never acknowledged: `last` says so.
        again = Agent("bob", server.address, acks=False)
        assert again.resume(token=bob.token, last=last)["resumed"] is True
        alice = Agent("alice", server.address)
        assert alice.login()["status"] == "ok"
        assert alice.command("message bob four")[1]["ok"]
        again.wait_for(lambda f: f.get("text") == "four")
        assert again.texts() == ["four"]
    finally:
        server.kill()


def test_a_hibernating_session_whose_mail_overflows_ends(make_server):
    server = make_server(["alice", "bob"], resume_window=30, mailbox_limit=5)
    alice, bob = login_all(server, "alice", "bob")
    hibernate(server, bob)
    for i in range(8):
        assert alice.command(f"message bob {i}")[1]["ok"]
    assert poll(lambda: presence_of(alice, "bob") == [True, False], 5)
    fresh = Agent("bob", server.address)
    assert fresh.login()["status"] == "ok"
    fresh.command("whoelse")
    assert fresh.texts() == [str(i) for i in range(8)]
    gevent.sleep(0)


def test_a_deleted_accounts_hibernating_session_ends(make_server, tmp_path):
    server = make_server(["alice", "bob"], resume_window=30)
    alice, bob = login_all(server, "alice", "bob")
    hibernate(server, bob)
    (tmp_path / "credentials.txt").write_text("alice pw\n")
    server.reload_credentials()
    assert poll(lambda: "bob" not in server.online, 5)
    assert alice.command("whoelse")[1]["lines"] == [texts.NO_OTHER_USERS_ONLINE]


def test_a_resumes_last_is_recorded_as_acknowledged(make_server):
    server = make_server(["alice", "bob"], resume_window=30)
    alice, bob = shown_to_bob(server.address, ["0", "1", "2"])
    last = bob.frames("message")[-1][1]["id"]
    hibernate(server, bob)
    again = Agent("bob", server.address, acks=False)
    assert again.resume(token=bob.token, last=last)["status"] == "ok"
    again.command("whoelse")
    assert again.texts() == []
    # Written to the store: a later login (a new client) starts after it.
    again.logout()
    fresh = Agent("bob", server.address)
    assert fresh.login()["status"] == "ok"
    fresh.command("whoelse")
    assert fresh.texts() == []


def test_ids_go_on_past_the_block_reserved_at_start(make_server, monkeypatch):
    # Blocks of 4 ids: a pipelining sender spends them faster than the next
    # is reserved, and waits for it; every id is still new and increasing.
    from greenchat.server import session as session_module
    monkeypatch.setattr(session_module, "ID_BLOCK", 4)
    server = make_server(["alice", "bob"])
    alice, bob = login_all(server, "alice", "bob")
    with gevent.Timeout(10):
        for i in range(11):             # pipelined: ids outrun the reservations
            alice.send(frames.command(100 + i, f"message bob {i}"))
        assert alice.command("message bob 11")[1]["ok"]
    bob.command("whoelse")
    ids = [f["id"] for _, f in bob.frames("message")]
    assert [f["text"] for _, f in bob.frames("message")] == [str(i) for i in range(12)]
    assert ids == sorted(set(ids))


def test_a_retried_message_is_found_in_the_log_whatever_its_name(tmp_path):
    (tmp_path / "credentials.txt").write_text("alice pw\nbob pw\n")
    server = ServerProcess(str(tmp_path))
    try:
        alice = Agent("alice", server.address)
        assert alice.login()["status"] == "ok"
        for n, line in enumerate(("message bob one", "/msg bob two", "msg bob three")):
            alice.send(frames.command(n, line, f"t.{n}"))
        assert alice.command("whoelse")[1]["ok"]
        server.kill()                       # the replies kept in memory are gone
        server = ServerProcess(str(tmp_path))
        alice = Agent("alice", server.address)
        assert alice.login()["status"] == "ok"
        for n, line in enumerate(("message bob one", "/msg bob two", "msg bob three")):
            alice.send(frames.command(10 + n, line, f"t.{n}", retry=True))
        assert alice.command("whoelse")[1]["ok"]
        bob = Agent("bob", server.address)
        assert bob.login()["status"] == "ok"
        bob.command("whoelse")
        assert bob.texts() == ["one", "two", "three"]       # none run twice
    finally:
        server.kill()
