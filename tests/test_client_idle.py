"""The idle warning and logout in the piped client (issue 14, item 6): the
server's notice is a protocol text, shown as a line exactly as it came, and
nothing else is added (a terminal's half-typed line is kept only on a
terminal: test_terminal.py)."""

import os

from greenchat import texts

from support import User


def test_a_piped_client_shows_the_idle_warning_then_the_logout_and_nothing_else(make_server):
    server = make_server(["hans"], timeout=3)
    hans = User("hans", server.address)
    os.write(hans.keyboard, b"message nobody half a li")     # no line end: never sent
    hans.expect(texts.LOGGED_OUT_IDLE, timeout=10)
    assert hans.greenlet.get(timeout=5) == 0
    assert hans.screen.lines == [
        texts.PROMPT_USERNAME, texts.PROMPT_PASSWORD, texts.WELCOME,
        "You will be logged out in 2 seconds due to inactivity",
        texts.LOGGED_OUT_IDLE]
    assert hans.quit() == 0
