"""The client in a real pseudo-terminal (issue 6): pexpect runs
bin/greenchat-client against a server process, and pyte, a terminal emulator,
keeps the screen, so the tests read what a person would see."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from greenchat import texts
from greenchat.client.lineedit import text_width

from support import CLIENT_SCRIPT, DEADLINE, SERVER_SCRIPT, Proc, listening_port, login

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

ROWS, COLUMNS = 24, 80
STAMP = r"\[\d\d:\d\d\] "


class Terminal:
    """A program in a pseudo-terminal, with the screen it has drawn."""

    def __init__(self, command, env):
        self.screen = pyte.Screen(COLUMNS, ROWS)
        self.stream = pyte.Stream(self.screen)
        self.child = pexpect.spawn(command[0], command[1:], env=env, encoding="utf-8",
                                   dimensions=(ROWS, COLUMNS), timeout=DEADLINE)
        self.child.delaybeforesend = None
        self.output = ""

    def pump(self, seconds=0.05):
        end = time.monotonic() + seconds
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.02)
                self.output += data
                self.stream.feed(data)
            except pexpect.TIMEOUT:
                pass
            if time.monotonic() >= end:
                return

    def rows(self):
        return [row.rstrip() for row in self.screen.display]

    def wait(self, predicate, what, timeout=DEADLINE):
        end = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > end:
                raise AssertionError(f"never saw {what}; screen:\n" + "\n".join(self.rows()))
            try:
                self.pump()
            except pexpect.EOF:
                if predicate(self):
                    return
                raise AssertionError(
                    f"ended before {what}; screen:\n" + "\n".join(self.rows())) from None

    def wait_row(self, pattern):
        regex = re.compile(pattern)
        self.wait(lambda t: any(regex.fullmatch(row) for row in t.rows()), repr(pattern))

    def input_line(self):
        """The row the cursor is on, and the cursor's column."""
        return self.rows()[self.screen.cursor.y], self.screen.cursor.x

    def type(self, text):
        self.child.send(text)

    def finish(self):
        """Read to the end; return the exit status."""
        try:
            while True:
                self.pump(0.2)
        except pexpect.EOF:
            pass
        self.child.close()
        return self.child.exitstatus


def environment(tmp_path):
    env = dict(os.environ, TERM="xterm", XDG_DATA_HOME=str(tmp_path / "xdg"))
    env.pop("NO_COLOR", None)
    return env


def hans_in_a_terminal(server_process, tmp_path, shell_after=None, options=()):
    command = [sys.executable, CLIENT_SCRIPT, "127.0.0.1", str(server_process.port),
               "--user", "hans", *options]
    if shell_after:
        # Run a command in the same terminal after the client has gone.
        # The shell shrugs off the Ctrl-C meant for the client (a trapped
        # signal is back to its default in the child).
        command = ["/bin/sh", "-c", "trap true INT; " + " ".join(f"'{c}'" for c in command)
                   + "; " + shell_after]
    term = Terminal(command, environment(tmp_path))
    term.wait(lambda t: "Password:" in "".join(t.rows()), "the password prompt")
    term.type("falcon*solo\r")
    term.wait_row(STAMP + "Welcome to the greatest messaging application ever!")
    term.wait(lambda t: t.input_line() == (">", 2), "the empty input line")
    return term


def hans_sees_yoda_arrive(server_process, tmp_path):
    """hans in a terminal, then yoda through a pipe; hans has seen him log in."""
    term = hans_in_a_terminal(server_process, tmp_path)
    yoda = Proc([CLIENT_SCRIPT, "127.0.0.1", str(server_process.port)])
    login(yoda, "yoda", "wise@!man")
    term.wait_row(STAMP + "yoda logged in")
    return term, yoda


def both_log_out(term, other):
    term.type("logout\r")
    assert term.finish() == 0
    other.write("logout")
    assert other.finish() == 0


def test_a_half_typed_line_survives_incoming_messages(server_process, tmp_path):
    term, other = hans_sees_yoda_arrive(server_process, tmp_path)
    term.type("message yoda half typ")
    term.wait(lambda t: t.input_line() == ("> message yoda half typ", 23), "the typed text")
    for i in range(3):
        other.write(f"message hans incoming {i}")
    other.write("broadcast to everyone")
    term.wait_row(STAMP + r"\[all\] yoda: to everyone")
    rows = [row for row in term.rows() if row]
    assert [row[8:] for row in rows[-5:-1]] == [
        "yoda: incoming 0", "yoda: incoming 1", "yoda: incoming 2", "[all] yoda: to everyone"]
    # The typed text and the cursor are where they were, and the text is whole:
    # finishing the line sends exactly what was typed.
    assert term.input_line() == ("> message yoda half typ", 23)
    assert rows[-1] == "> message yoda half typ"
    term.type("ed\r")
    other.expect("hans: half typed")
    both_log_out(term, other)


def test_tab_completes_commands_and_a_user_name(server_process, tmp_path):
    term, other = hans_sees_yoda_arrive(server_process, tmp_path)
    term.type("mes\t")
    term.wait(lambda t: t.input_line() == ("> message", 10), "the completed command")
    term.type("yo\t")
    term.wait(lambda t: t.input_line() == ("> message yoda", 15), "the completed user name")
    term.type("hello from tab\r")
    other.expect("hans: hello from tab")
    both_log_out(term, other)


def test_history_is_kept_in_the_data_directory(server_process, tmp_path):
    term = hans_in_a_terminal(server_process, tmp_path)
    term.type("whoelse\r")
    term.wait_row(STAMP + "No other users online")
    term.type("private yoda psst, secret plans\r")
    term.wait_row(STAMP + "Error. Private messaging to yoda not enabled")
    term.type("logout\r")
    assert term.finish() == 0
    # This server's and this account's file, private; no private text in it.
    history = tmp_path / "xdg" / "greenchat" / "history" / \
        f"127.0.0.1_{server_process.port}_hans"
    assert history.read_text() == "whoelse\nlogout\n"
    assert history.stat().st_mode & 0o777 == 0o600

    term = hans_in_a_terminal(server_process, tmp_path)
    term.type("\x1b[A")
    term.wait(lambda t: t.input_line() == ("> logout", 8), "the last line recalled")
    term.type("\x1b[A")
    term.wait(lambda t: t.input_line() == ("> whoelse", 9), "the line before")
    term.type("\r")
    term.wait_row(STAMP + "No other users online")
    term.type("\x04")                        # Ctrl-D on an empty line: end of input
    term.finish()


SETTINGS = ("stty -a | tr -s ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo "
            "-e ixon -e -ixon | tr '\\n' ' '; echo; "
            + sys.executable + " -c 'import fcntl, os; print(\"nonblocking\", "
            "bool(fcntl.fcntl(0, fcntl.F_GETFL) & os.O_NONBLOCK), "
            "bool(fcntl.fcntl(1, fcntl.F_GETFL) & os.O_NONBLOCK))'")


def settings_after(term):
    term.finish()
    output = term.output.replace("\r", "")
    # The shell's output starts where the input line was cleared.
    modes = re.search(r"((?:-?(?:icanon|echo|ixon) )+)\n", output)
    blocking = re.search(r"nonblocking (\w+) (\w+)\n", output)
    assert modes and blocking, output[-500:]
    return set(modes.group(1).split()), blocking.groups()


@pytest.mark.parametrize("way_out", ["ctrl-c", "sigterm", "server-killed"])
def test_the_terminal_is_restored_on_every_way_out(server_process, tmp_path, way_out):
    term = hans_in_a_terminal(server_process, tmp_path, shell_after=SETTINGS,
                              options=("--reconnect-for", "2"))
    term.type("message nobody half a li")          # mid-line, in every case
    term.wait(lambda t: t.input_line()[0] == "> message nobody half a li", "the typed text")
    if way_out == "ctrl-c":
        term.type("\x03")
    elif way_out == "sigterm":
        client_pid = int(subprocess.check_output(["pgrep", "-P", str(term.child.pid)]).split()[0])
        os.kill(client_pid, signal.SIGTERM)
    else:
        server_process.p.kill()
        server_process.p.wait()
        term.wait_row(STAMP + re.escape("Connection to server lost. Reconnecting..."))
        # The half-typed line is still there while it tries.
        term.wait(lambda t: t.input_line()[0] == "> message nobody half a li",
                  "the typed text, kept")
        term.wait_row(STAMP + "Connection to server lost")
    modes, blocking = settings_after(term)
    assert "Traceback" not in term.output and "KeyboardInterrupt" not in term.output
    assert modes == {"icanon", "echo", "ixon"}
    assert blocking == ("False", "False")


def test_ctrl_c_at_the_password_prompt_leaves_quietly_with_echo_back(server_process, tmp_path):
    command = [sys.executable, CLIENT_SCRIPT, "127.0.0.1", str(server_process.port),
               "--user", "hans"]
    term = Terminal(["/bin/sh", "-c", "trap true INT; " + " ".join(f"'{c}'" for c in command)
                     + "; echo status $?; " + SETTINGS], environment(tmp_path))
    term.wait(lambda t: "Password:" in "".join(t.rows()), "the password prompt")
    term.type("\x03")
    modes, blocking = settings_after(term)
    assert "status 130" in term.output
    assert "Traceback" not in term.output and "KeyboardInterrupt" not in term.output
    assert modes == {"icanon", "echo", "ixon"} and blocking == ("False", "False")


def test_hints_follow_the_servers_exact_error_on_a_terminal(server_process, tmp_path):
    term = hans_in_a_terminal(server_process, tmp_path)
    assert any(row[8:] == "Type help for the commands." for row in term.rows())
    for typed, hint in (("message yoda", "usage: message USER TEXT"),
                        ("Whoelse", "commands are lower case"),
                        ("hello there", "type help for the commands")):
        term.type(typed + "\r")
        term.wait_row(STAMP + hint)
        rows = [row[8:] for row in term.rows() if row and not row.startswith(">")]
        # The server's text to the letter, then the hint, dim.
        assert rows[-2:] == ["Error. Invalid command", hint]
    assert "\x1b[2m" in term.output
    # A leading slash and the aliases work for every command.
    term.type("/whoelse\r")
    term.wait_row(STAMP + "No other users online")
    term.type("/quit\r")
    assert term.finish() == 0


def test_a_lockout_says_for_how_long_on_a_terminal(server_process, tmp_path):
    command = [sys.executable, CLIENT_SCRIPT, "127.0.0.1", str(server_process.port),
               "--user", "hans"]
    term = Terminal(command, environment(tmp_path))
    for attempt in range(3):
        term.wait(lambda t, n=attempt: "".join(t.rows()).count("Password:") > n, "a prompt")
        term.type("wrong\r")
    term.wait_row(STAMP + "Invalid Password. Your account has been blocked. "
                          "Please try again later")
    # The spec's text to the letter, then how long (BLOCK_DURATION 5), dim.
    term.wait_row(STAMP + "Please try again in 5 seconds")
    assert term.finish() == 1


def test_sends_get_feedback_on_a_terminal(server_process, tmp_path):
    term = hans_in_a_terminal(server_process, tmp_path)
    term.type("message yoda are you there\r")
    term.wait_row(STAMP + r"\(yoda is offline; they will get it when they log in\)")
    term.type("broadcast anyone\r")
    term.wait_row(STAMP + r"\(no one else is online\)")
    term.type("logout\r")
    assert term.finish() == 0


@pytest.fixture
def quick_idle_server(tmp_path):
    """Like server_process, with a TIMEOUT of 4 s: the warning at 2 s."""
    creds = tmp_path / "credentials.txt"
    creds.write_text("hans falcon*solo\nyoda wise@!man\n")
    proc = Proc([SERVER_SCRIPT, "0", "5", "4", "--host", "127.0.0.1", "--credentials",
                 str(creds), "--data", str(tmp_path / "data"), "--no-http"])
    proc.port = listening_port(proc)
    yield proc
    if proc.p.poll() is None:
        proc.p.send_signal(signal.SIGTERM)
    proc.finish()


def test_the_half_typed_line_is_printed_after_the_idle_logout(quick_idle_server, tmp_path):
    term = hans_in_a_terminal(quick_idle_server, tmp_path)
    term.type("message yoda half typ")
    term.wait(lambda t: t.input_line() == ("> message yoda half typ", 23), "the typed text")
    term.wait_row(STAMP + re.escape(texts.idle_warning(2)))
    # The warning leaves the typed line as it was.
    assert term.input_line() == ("> message yoda half typ", 23)
    assert term.finish() == 0
    rows = [row for row in term.rows() if row]
    # After the goodbye, the typed text on its own line, plain, to copy.
    assert re.fullmatch(STAMP + re.escape(texts.LOGGED_OUT_IDLE), rows[-2]), rows
    assert rows[-1] == "message yoda half typ"


def test_tab_completes_an_offline_account_named_by_the_server(server_process, tmp_path):
    term = hans_in_a_terminal(server_process, tmp_path)       # yoda has never logged in
    term.type("message yo\t")
    term.wait(lambda t: t.input_line() == ("> message yoda", 15), "yoda completed")
    term.type("\x15logout\r")                                 # Ctrl-U clears the line
    assert term.finish() == 0


def test_a_pasted_paragraph_is_one_message(server_process, tmp_path):
    term, yoda = hans_sees_yoda_arrive(server_process, tmp_path)
    assert "\x1b[?2004h" in term.output                      # bracketed paste is on
    term.type("message yoda ")
    term.type("\x1b[200~line one\rline two\r\nline three\x1b[201~")
    term.wait(lambda t: "line one\u21b5line two\u21b5line three" in t.input_line()[0],
              "the paste in the input line")
    term.type("\r")
    # One message, its line breaks kept (shown as continuation lines).
    yoda.expect("hans: line one")
    yoda.expect("  line two")
    yoda.expect("  line three")
    term.type("logout\r")
    assert term.finish() == 0
    assert "\x1b[?2004l" in term.output                      # and off again at the end
    history = tmp_path / "xdg" / "greenchat" / "history" / \
        f"127.0.0.1_{server_process.port}_hans"
    assert history.read_text() == "logout\n"                  # nothing pasted is kept
    yoda.write("logout")
    assert yoda.finish() == 0


def test_a_long_paste_is_quick_and_a_line_too_long_is_kept_for_editing(server_process, tmp_path):
    term = hans_in_a_terminal(server_process, tmp_path)
    text = "message yoda " + "日本語 and more, " * 5000 + "the end"      # 75,020 characters
    started = time.monotonic()
    term.type(text)
    term.wait(lambda t: t.input_line()[0].endswith(", 日本語 and more, the end"), "the pasted text")
    # It was 25 s at 100% CPU for 70 KB; now it is the time to pass it through the pty.
    assert time.monotonic() - started < 10
    row, column = term.input_line()
    assert column == text_width(row) <= COLUMNS - 1           # the cursor at the text's end
    term.type("\r")
    term.wait_row(STAMP + r"Error\. Message too long \(\d+ bytes, at most 65536\)")
    # The line is still there to edit: cut it down and send it.
    term.wait(lambda t: t.input_line()[0].endswith("the end"), "the kept line")
    term.type("\x01" + "\x1b[C" * 20 + "\x0b" + "\r")         # Home, 20 x Right, Ctrl-K, Enter
    term.type("whoelse\r")
    term.wait_row(STAMP + "No other users online")
    assert not any("Connection to server lost" in row for row in term.rows())
    term.type("logout\r")
    assert term.finish() == 0
