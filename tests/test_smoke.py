"""Smoke test: the bin/ scripts as real processes, driven through stdin/stdout."""

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from support import (
    CLIENT_SCRIPT,
    DEADLINE,
    ROOT,
    SERVER_SCRIPT,
    Proc,
    client_process,
    hans_and_yoda,
    listening_port,
    login,
)


def test_server_and_clients_as_processes(server_process):
    hans, yoda = hans_and_yoda(server_process.port)

    yoda.write('message hans do or "do not", there is no try')
    hans.expect('yoda: do or "do not", there is no try')
    hans.write("whoelse")
    hans.expect("yoda")
    yoda.write("nonsense")
    yoda.expect("Error. Invalid command")

    yoda.write("logout")
    yoda.expect("Goodbye")
    assert yoda.finish() == 0
    hans.expect("yoda logged out")

    # End of input logs out as cleanly as the command does.
    hans.p.stdin.close()
    hans.expect("Goodbye")
    assert hans.finish() == 0

    server_process.p.send_signal(signal.SIGTERM)
    assert server_process.finish() == 0


def test_the_server_serves_the_web_client_and_says_where(server_process):
    # The chat listener's line first, then the web client's (after the
    # fixture's listening_port read it).
    line = server_process.expect(re.compile(r"web client at "), stream="stderr")
    url = re.search(r"web client at (http://127\.0\.0\.1:\d+/)$", line).group(1)
    with urllib.request.urlopen(url, timeout=DEADLINE) as response:
        assert response.status == 200 and b"<title>greenchat</title>" in response.read()
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    server_process.p.send_signal(signal.SIGTERM)
    assert server_process.finish() == 0


def test_a_taken_web_port_is_a_warning_and_chat_goes_on(tmp_path):
    creds = tmp_path / "credentials.txt"
    creds.write_text("hans falcon*solo\nyoda wise@!man\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    server = Proc([SERVER_SCRIPT, "0", "--host", "127.0.0.1", "--credentials", str(creds),
                   "--data", str(tmp_path / "data"), "--http-port", str(taken.getsockname()[1])])
    try:
        port = listening_port(server)
        server.expect(re.compile(r"WARNING .*serving chat without the web client"),
                      stream="stderr")
        hans = client_process(port)
        login(hans, "hans", "falcon*solo")
        hans.write("logout")
        hans.expect("Goodbye")
        assert hans.finish() == 0
    finally:
        server.p.send_signal(signal.SIGTERM)
        assert server.finish() == 0
        taken.close()


def test_offline_message_survives_server_restart(tmp_path):
    creds = tmp_path / "credentials.txt"
    creds.write_text("hans falcon*solo\nyoda wise@!man\n")
    args = ["5", "30", "--host", "127.0.0.1", "--credentials", str(creds),
            "--data", str(tmp_path / "data"), "--no-http"]
    first = Proc([SERVER_SCRIPT, "0"] + args)
    port = listening_port(first)
    yoda = client_process(port)
    login(yoda, "yoda", "wise@!man")
    yoda.write("message hans stored while you were away")
    yoda.write("logout")
    yoda.expect("Goodbye")
    assert yoda.finish() == 0
    first.p.send_signal(signal.SIGKILL)
    first.finish()

    second = Proc([SERVER_SCRIPT, "0"] + args)
    port = listening_port(second)
    try:
        hans = client_process(port)
        login(hans, "hans", "falcon*solo")
        hans.expect("yoda: stored while you were away")
        hans.p.stdin.close()
        assert hans.finish() == 0
    finally:
        second.p.send_signal(signal.SIGTERM)
        assert second.finish() == 0


def test_client_reports_unreachable_server():
    proc = Proc([CLIENT_SCRIPT, "127.0.0.1", "1"])
    line = proc.expect(re.compile(r"^Cannot connect to server at 127\.0\.0\.1:1: "),
                       stream="stderr")
    assert "Traceback" not in line
    assert proc.finish() == 1


def test_server_rejects_bad_arguments_and_missing_credentials(tmp_path):
    bad = subprocess.run([sys.executable, SERVER_SCRIPT, "notaport", "1", "1"],
                         capture_output=True, text=True, timeout=DEADLINE)
    assert bad.returncode == 2
    assert bad.stderr.startswith("usage: greenchat-server")
    missing = subprocess.run([sys.executable, SERVER_SCRIPT, "0", "1", "1", "--credentials",
                              str(tmp_path / "nope.txt"), "--data", str(tmp_path / "d")],
                             capture_output=True, text=True, timeout=DEADLINE)
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0
    assert "nope.txt" in missing.stderr
    broken = tmp_path / "broken.txt"
    broken.write_text("# ok\nhans falcon*solo\njust-one-field\n")
    malformed = subprocess.run([sys.executable, SERVER_SCRIPT, "0", "1", "1",
                                "--credentials", str(broken), "--data", str(tmp_path / "d")],
                               capture_output=True, text=True, timeout=DEADLINE)
    assert malformed.returncode == 1
    assert "broken.txt:3" in malformed.stderr


def test_private_link_between_client_processes(server_process):
    hans, yoda = hans_and_yoda(server_process.port)
    hans.write("startprivate yoda")
    hans.expect("Start private messaging with yoda")
    yoda.expect("hans has started private messaging with you")
    hans.write("private yoda meet me at the swamp")
    yoda.expect("hans(private): meet me at the swamp")
    yoda.write("private hans mud, there is")
    hans.expect("yoda(private): mud, there is")
    yoda.write("stopprivate hans")
    yoda.expect("Private messaging with hans stopped")
    hans.expect("Private messaging with yoda stopped")
    hans.write("private yoda anyone?")
    hans.expect("Error. Private messaging to yoda not enabled")
    for proc in (hans, yoda):
        proc.p.stdin.close()
        proc.expect("Goodbye")
        assert proc.finish() == 0


def test_client_says_connection_lost_when_the_server_dies(server_process):
    hans = client_process(server_process.port, "--reconnect-for", "1")
    login(hans, "hans", "falcon*solo")
    server_process.p.send_signal(signal.SIGKILL)
    server_process.finish()
    hans.expect("Connection to server lost. Reconnecting...")
    hans.expect("Connection to server lost")
    assert hans.finish() == 1


def test_client_with_no_reconnect_exits_when_the_server_dies(server_process):
    hans = client_process(server_process.port, "--no-reconnect")
    login(hans, "hans", "falcon*solo")
    server_process.p.send_signal(signal.SIGKILL)
    server_process.finish()
    assert hans.expect(re.compile("Connection")) == "Connection to server lost"
    assert hans.finish() == 1


def test_user_option_skips_the_username_prompt(server_process):
    hans = Proc([CLIENT_SCRIPT, "127.0.0.1", str(server_process.port), "--user", "hans"])
    first = hans.expect(re.compile(r"\S"))
    assert first == "Password: "
    hans.write("falcon*solo")
    hans.expect("Welcome to the greatest messaging application ever!")
    hans.p.stdin.close()
    hans.expect("Goodbye")
    assert hans.finish() == 0


@pytest.mark.parametrize("no_color", [False, True])
def test_terminal_mode_stamps_colours_and_hides_the_password(server_process, no_color):
    pexpect = pytest.importorskip("pexpect")
    env = dict(os.environ, TERM="xterm")
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    term = pexpect.spawn(sys.executable, [CLIENT_SCRIPT, "127.0.0.1", str(server_process.port),
                                          "--user", "hans"],
                         env=env, timeout=DEADLINE, encoding="utf-8")
    try:
        term.expect("Password: ")
        term.sendline("falcon*solo")
        term.expect(r"\[\d\d:\d\d\] Welcome to the greatest messaging application ever!")
        assert "falcon*solo" not in term.before
        term.sendline("nonsense")
        if no_color:
            term.expect(r"\[\d\d:\d\d\] Error\. Invalid command\r\n")
            # No colour (SGR) codes; the input line still moves the cursor.
            assert not re.search("\x1b\\[[0-9;]*m", term.before)
        else:
            term.expect(re.escape("\x1b[31mError. Invalid command\x1b[0m"))
        term.expect("> ")
        term.sendline("logout")
        term.expect(r"\[\d\d:\d\d\] Goodbye")
        term.expect(pexpect.EOF)
    finally:
        term.close()
    assert term.exitstatus == 0


def test_tls_end_to_end_with_mkcert_and_a_private_link(tmp_path):
    admin = os.path.join(ROOT, "bin", "greenchat-admin")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run([sys.executable, admin, "mkcert", "--cert", str(cert), "--key", str(key)],
                          capture_output=True, text=True, timeout=DEADLINE)
    assert made.returncode == 0, made.stderr
    creds = tmp_path / "credentials.txt"
    creds.write_text("hans falcon*solo\nyoda wise@!man\n")
    server = Proc([SERVER_SCRIPT, "0", "--host", "127.0.0.1", "--credentials", str(creds),
                   "--data", str(tmp_path / "data"), "--no-http",
                   "--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        port = str(listening_port(server))
        tls = ["--tls", "--ca", str(cert)]
        hans = Proc([CLIENT_SCRIPT, "127.0.0.1", port] + tls)
        login(hans, "hans", "falcon*solo")
        yoda = Proc([CLIENT_SCRIPT, "127.0.0.1", port] + tls)
        login(yoda, "yoda", "wise@!man")
        hans.expect("yoda logged in")
        yoda.write("startprivate hans")
        yoda.expect("Start private messaging with hans")
        hans.expect("yoda has started private messaging with you")
        yoda.write("private hans encrypted both ways")
        hans.expect("yoda(private): encrypted both ways")
        for proc in (hans, yoda):
            proc.write("logout")
            proc.expect("Goodbye")
            assert proc.finish() == 0

        # Without --tls: the server's own words, exit status 1.
        plain = Proc([CLIENT_SCRIPT, "127.0.0.1", port])
        plain.expect("Error. This server requires TLS; connect with --tls")
        assert plain.finish() == 1
    finally:
        server.p.send_signal(signal.SIGTERM)
        assert server.finish() == 0


def test_piped_mode_prints_the_protocols_texts_alone(server_process):
    # A scripted session: no hints, stamps or marks, one line an event; the
    # aliases and the leading slash work here as on a terminal.
    hans, yoda = hans_and_yoda(server_process.port)
    hans.write("logout")
    assert hans.finish() == 0
    for line in ("Whoelse", "message hans", "hello there", "/msg hans hi", "msg hans there",
                 "broadcast nobody here", "/whoelse", "/quit"):
        yoda.write(line)
    assert yoda.finish() == 0
    lines = [line for line in (yoda.buffer + yoda.p.stdout.read()).decode().splitlines()
             if line]
    # hans is offline: the messages are stored, the broadcast reaches no one,
    # and piped mode says nothing of either.
    assert lines[-5:] == ["Error. Invalid command", "Error. Invalid command",
                          "Error. Invalid command", "No other users online", "Goodbye"]
    assert not any(word in line for line in lines
                   for word in ("help", "usage", "lower case", "offline", "no one"))


def test_the_scripts_without_the_package_installed_say_so():
    for script in (CLIENT_SCRIPT, SERVER_SCRIPT):
        # -I -S: no site-packages, so no gevent: as on a machine without the install.
        done = subprocess.run([sys.executable, "-I", "-S", script], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 1
        assert done.stderr.strip() == "greenchat is not installed: pip install ."


def test_a_lockout_in_piped_mode_prints_the_spec_text_alone(server_process):
    hans = client_process(server_process.port, "--user", "hans")
    for _ in range(3):
        hans.expect("Password: ")
        hans.write("wrong")
    hans.expect("Invalid Password. Your account has been blocked. Please try again later")
    assert hans.finish() == 1
    assert (hans.buffer + hans.p.stdout.read()).decode().strip() == ""
