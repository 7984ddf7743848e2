"""What the client shows of text from the network (issue 11, item 4).

Control characters in messages, names and server texts must reach no screen
as themselves: they are shown visibly (caret notation, `\\x9b`, `<U+202E>`),
and a line feed starts an indented continuation line, so no message can
retitle or clear a terminal, write its clipboard, or fake an event line.
The escaping function is tested over every control code point; then the
real client, piped (in-process) and in a pseudo-terminal (pexpect + pyte),
receives hostile messages through a real server.
"""

import io
import logging
import os
import re

import pytest

from greenchat import frames, texts
from greenchat.client import console
from greenchat.client.client import Client, _Refused
from greenchat.client.console import Console
from greenchat.config import ClientConfig
from greenchat.errors import ConnectionLost

from support import Agent, Screen, User

# An OSC 52 clipboard write, a window title, a screen clear, a fake line.
HOSTILE = "\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x1b[2J\rvader: fake line"
HOSTILE_SHOWN = "^[]52;c;ZXZpbA==^G^[]0;pwned^G^[[2J^Mvader: fake line"
C1 = [chr(code) for code in range(0x80, 0xA0)]


def raw_controls(text):
    """The characters of `text` a terminal would act on (LF aside)."""
    return [ch for ch in text if (ord(ch) < 0x20 and ch not in "\t\n") or 0x7F <= ord(ch) < 0xA0]


# The escaping function ----------------------------------------------------------

def test_every_c0_control_but_tab_and_line_feed_is_shown_in_caret_notation():
    shown = {code: console.visible(chr(code)) for code in range(0x20)}
    assert shown[0x00] == "^@" and shown[0x1B] == "^[" and shown[0x0D] == "^M"
    assert shown[0x07] == "^G" and shown[0x1F] == "^_"
    for code in range(0x20):
        if code not in (0x09, 0x0A):
            assert shown[code] == "^" + chr(code + 0x40), hex(code)
    assert shown[0x09] == "\t"
    assert shown[0x0A] == "\n  "
    assert console.visible("\x7f") == "^?"


def test_every_c1_control_is_shown_as_a_hex_escape():
    for ch in C1:
        assert console.visible(ch) == f"\\x{ord(ch):02x}"
    assert console.visible("\x9b2J") == "\\x9b2J"


def test_bidi_overrides_isolates_and_line_separators_are_shown_by_code_point():
    for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029):
        assert console.visible(chr(code)) == f"<U+{code:04X}>"
    assert console.visible("abc\u202etxt.exe") == "abc<U+202E>txt.exe"


def test_printable_text_is_unchanged():
    text = "".join(chr(code) for code in range(0x20, 0x7F)) + "\t" \
        + "".join(chr(code) for code in range(0xA0, 0x800)) + "日本語 😀 é"
    assert console.visible(text) == text


def test_a_hostile_string_is_inert():
    shown = console.visible(HOSTILE)
    assert shown == HOSTILE_SHOWN
    assert raw_controls(shown) == []
    assert console.visible("first\nsecond\r\nthird") == "first\n  second^M\n  third"


def test_console_escapes_the_content_but_keeps_its_own_styles():
    screen = Screen()
    shown = Console(os.open(os.devnull, os.O_RDONLY), screen)
    shown.interactive = shown.color = True          # as on a terminal
    shown.show("vader: \x1b]0;pwned\x07hi\nthere", "presence")
    assert re.fullmatch(r"\[\d\d:\d\d\] \x1b\[36mvader: \^\[\]0;pwned\^Ghi\n  there\x1b\[0m\n",
                        screen.text), repr(screen.text)
    shown.show("Error. \x9b31m")
    assert screen.text.endswith("\x1b[31mError. \\x9b31m\x1b[0m\n")


class FakeConnection:
    """Hands the client's receiver the given frames, then ends."""

    def __init__(self, frames):
        self.frames = list(frames)

    def read(self, timeout=None):
        if not self.frames:
            raise ConnectionLost("done")
        return self.frames.pop(0)

    def send(self, frame, timeout=None):
        pass

    def close(self):
        pass


def client_on_a_pipe(frames):
    screen = Screen()
    client = Client(ClientConfig(host="127.0.0.1", port=1),
                    Console(os.open(os.devnull, os.O_RDONLY), screen))
    client.user = "hans"
    client.conn = FakeConnection(frames)
    return client, screen


def test_names_and_texts_from_every_frame_are_escaped():
    evil = "\x1b[2Jva\rder\u202e"
    client, screen = client_on_a_pipe([
        frames.presence(evil, True),
        frames.message(evil, "hi\x9b"),
        frames.presence(evil, False),
        frames.reply(0, ["Error. \x1b]0;x\x07", "a\nb"], ok=False),
        frames.bye(frames.SHUTDOWN, "bye\x1b[2J"),
    ])
    client._receive(client.conn)
    name = "^[[2Jva^Mder<U+202E>"
    assert screen.lines == [texts.presence_line(name, True), f"{name}: hi\\x9b",
                            texts.presence_line(name, False), "Error. ^[]0;x^G", "a", "  b",
                            "bye^[[2J"]
    assert raw_controls(screen.text) == []
    assert client.done.get(timeout=1) == 1


def test_login_texts_private_lines_and_peer_names_are_escaped():
    client, screen = client_on_a_pipe([frames.error("no\x1b]52;c;eA==\x07")])
    with pytest.raises(_Refused):
        client._expect()
    evil = "vader\x1b]0;x\x07"
    client.console.show(texts.private_line(evil, "psst\rvader: fake"), "private")
    client.console.show(texts.started_private_with_you(evil))
    assert screen.lines == ["no^[]52;c;eA==^G", "vader^[]0;x^G(private): psst^Mvader: fake",
                            "vader^[]0;x^G has started private messaging with you"]


def test_tab_completion_offers_no_name_with_controls():
    client, _ = client_on_a_pipe([])
    client.links.names = lambda: {"vader\x1b[2J", "yoda"}     # two links up
    client.names.saw("luke\x1b]0;x\x07")
    client.names.saw("leia")
    assert client.names(["private"]) == {"yoda", "leia"}


def test_logged_warnings_are_escaped():
    formatter = console.VisibleFormatter("%(levelname)s %(name)s: %(message)s")
    record = logging.LogRecord("greenchat.client", logging.WARNING, __file__, 1,
                               "private link to %s failed: %s",
                               ("vader\x1b]0;x\x07", "cannot connect to \x9b2J:1"), None)
    assert formatter.format(record) == ("WARNING greenchat.client: private link to "
                                        "vader^[]0;x^G failed: cannot connect to \\x9b2J:1")


# The real client, piped, behind a real server -----------------------------------

@pytest.fixture
def hans_and_vader(make_server):
    server = make_server(["hans", "vader"], timeout=30)
    hans = User("hans", server.address)
    vader = Agent("vader", server.address)
    assert vader.login()["status"] == "ok"
    hans.expect(texts.presence_line("vader", True))
    yield hans, vader
    if not hans.greenlet.dead:
        hans.greenlet.kill()
    vader.sock.close()


def test_hostile_messages_reach_a_piped_client_inert(hans_and_vader):
    hans, vader = hans_and_vader
    vader.command("message hans a\rvader: fake line")
    vader.command("broadcast " + HOSTILE)
    vader.command("message hans first\nsecond")
    vader.command("message hans csi\x9b2J and \u202eevil")
    hans.expect("vader: csi\\x9b2J and <U+202E>evil")
    lines = hans.screen.lines
    assert "vader: a^Mvader: fake line" in lines
    assert "vader: " + HOSTILE_SHOWN in lines
    at = lines.index("vader: first")
    assert lines[at + 1] == "  second"
    assert "vader: fake line" not in lines
    assert raw_controls(hans.screen.text) == []
    assert hans.quit() == 0


# The real client in a terminal --------------------------------------------------

def test_a_hostile_message_cannot_retitle_clear_or_fake_a_line(server_process, tmp_path):
    pytest.importorskip("pexpect")
    pytest.importorskip("pyte")
    from test_terminal import STAMP, both_log_out, hans_sees_yoda_arrive

    term, yoda = hans_sees_yoda_arrive(server_process, tmp_path)
    # A line feed cannot come through the piped client; CR, ESC and C1 can.
    yoda.write("message hans \x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\x1b[2J\x9b1;1Ha\ryoda: fake")
    term.wait_row(STAMP + re.escape(
        "yoda: ^[]0;pwned^G^[]52;c;ZXZpbA==^G^[[2J\\x9b1;1Ha^Myoda: fake"))
    rows = term.rows()
    assert term.screen.title == ""
    assert any(re.fullmatch(STAMP + "Welcome to the greatest messaging application ever!", row)
               for row in rows), rows
    assert not any(row.endswith("yoda: fake") and "^M" not in row for row in rows)
    assert "\x1b]" not in term.output and "\x9b" not in term.output
    both_log_out(term, yoda)


def test_a_terminal_marks_broadcasts_and_stored_messages_and_changes_of_day(monkeypatch):
    import time as time_module

    from greenchat.client.console import Console
    out = io.StringIO()
    console = Console(out=out, color=False)
    console.interactive = True           # a terminal, without colours (NO_COLOR)
    now = time_module.time()
    yesterday = now - 86400
    console.show("yoda: stored", at=yesterday, mark="(offline)")
    console.show("yoda: hi all", prefix="[all]")
    console.show("yoda: live")
    lines = out.getvalue().splitlines()
    day = time_module.localtime(yesterday)
    today = time_module.localtime(now)
    assert lines == [
        f"--- {time_module.strftime('%A', day)} {day.tm_mday} "
        f"{time_module.strftime('%B', day)} ---",
        time_module.strftime("[%H:%M] ", day) + "yoda: stored (offline)",
        f"--- {time_module.strftime('%A', today)} {today.tm_mday} "
        f"{time_module.strftime('%B', today)} ---",
        time_module.strftime("[%H:%M] ", today) + "[all] yoda: hi all",
        time_module.strftime("[%H:%M] ", today) + "yoda: live",
    ]


def test_piped_mode_shows_no_marks_stamps_or_day_lines():
    from greenchat.client.console import Console
    out = io.StringIO()
    console = Console(out=out, color=True)
    assert not console.interactive
    console.show("yoda: stored", at=1.0, mark="(offline)")
    console.show("yoda: hi all", prefix="[all]")
    assert out.getvalue().splitlines() == ["yoda: stored", "yoda: hi all"]


def test_input_left_unread_at_exit_is_discarded_not_left_for_the_shell():
    import select

    from greenchat.client.console import Console
    from greenchat.client.lineedit import Completer
    master, slave = os.openpty()
    out = os.fdopen(os.dup(slave), "w")
    try:
        console = Console(in_fd=slave, out=out)
        assert console.interactive
        console.start_editing("> ", Completer(None), None)
        # Typed (or pasted) while the client was on its way out, never read.
        os.write(master, b"message yoda this must not run in a shell\n")
        assert select.select([slave], [], [], 1)[0]
        console.stop_editing()
        assert not select.select([slave], [], [], 0.2)[0]
    finally:
        out.close()
        os.close(master)
        os.close(slave)
