"""The web client in a real browser (issue #15): Debian's Chromium, headless,
driven by Playwright's sync API, against bin/greenchat-server as a process,
with bin/greenchat-client as the terminal user on the other side.

Without Chromium or Playwright these tests are skipped, saying which is
missing; on CI (CI=true) they fail instead. The screenshot in docs/ is made
by hand: GREENCHAT_SCREENSHOT=docs/web-client.png python3 -m pytest -q
tests/test_web_browser.py -k screenshot
"""

import json
import os
import re
import signal
import time
from datetime import datetime, timezone

import pytest

from greenchat import texts
from greenchat.client.console import visible
from greenchat.commands import COMMANDS

from web_support import (
    ACCOUNTS,
    CHROMIUM,
    ROOT,
    WAIT,
    Terminal,
    WebServer,
    WebSocket,
    WebUser,
    browser_missing,
    http_get,
)

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:           # browser_missing() says so, and the browser fixture skips
    expect = sync_playwright = None

WEB_DIR = os.path.join(ROOT, "greenchat", "web")
MS = WAIT * 1000


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; each page gets a context of its own."""
    reason = browser_missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests cannot run on CI: {reason}", pytrace=False)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # As root (CI) Chromium's sandbox cannot start; a container's small
        # /dev/shm would crash its renderers.
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


def server_options(**options):
    """A test's server started with these WebServer options."""
    def mark(test):
        test.server_options = options
        return test
    return mark


@pytest.fixture
def server(request, tmp_path):
    """A server of its own for each test (it starts in about 0.2 s): no
    test sees another's users, blocks or lockouts. Its log must hold no
    traceback."""
    server = WebServer(tmp_path, **getattr(request.function, "server_options", {})).start()
    yield server
    server.stop()
    assert "Traceback" not in server.log(), server.log()[-3000:]


class Cast:
    """The people of one test: pages (WebUser) and terminals, closed at
    teardown, where no page may have opened a dialog, thrown an error or
    broken its Content-Security-Policy."""

    def __init__(self, browser, server):
        self.browser, self.server = browser, server
        self.pages, self.terminals = [], []

    def page(self, user=None, **options):
        page = WebUser(self.browser, self.server.url, **options)
        self.pages.append(page)
        if user is not None:
            page.login(user)
        return page

    def terminal(self, user, *options, **keywords):
        terminal = Terminal(self.server, user, *options, **keywords)
        self.terminals.append(terminal)
        return terminal

    def close(self):
        for terminal in self.terminals:
            terminal.close()
        problems = {}
        for number, page in enumerate(self.pages, 1):
            if page.problems():
                problems[f"page {number}"] = page.problems()
            page.close()
        assert not problems, f"the pages did what they never should: {problems}"


@pytest.fixture
def cast(browser, server):
    cast = Cast(browser, server)
    yield cast
    cast.close()


def shown(page, text):
    """Wait until `text` is somewhere on the page where one can see it."""
    expect(page.page.get_by_text(text).filter(visible=True).first).to_be_visible(timeout=MS)


def containing(page, text):
    """How many lines of the page's pane contain `text`, the echo of the
    lines typed (`> LINE`, as a terminal leaves them on screen) left out."""
    return page.log.locator(":scope > *").filter(has_text=text) \
        .filter(has_not_text=re.compile(r"^> ")).count()


# Served files and headers -------------------------------------------------------------

def test_page_and_texts_are_served_with_a_strict_content_security_policy(server):
    status, headers, body = http_get(server.http_port, "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert re.search(rb"<title>\s*greenchat\s*</title>", body)

    status, headers, body = http_get(server.http_port, "/texts.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    table = json.loads(body)
    assert table["texts"]["PRIVATE_NOT_IN_WEB"] == \
        "Error. Private messaging is not available in the web client"
    assert table["texts"]["WELCOME"] == texts.WELCOME
    assert table["texts"]["RECONNECTING"] == texts.RECONNECTING
    assert table["templates"]["message_line"] == "{sender}: {text}"
    assert table["templates"]["stored_for"] == texts.stored_for("{user}")
    assert [command["name"] for command in table["commands"]] == list(COMMANDS)
    assert [command["syntax"] for command in table["commands"]] == \
        [spec.syntax for spec in COMMANDS.values()]

    # Every file of the page, as it is in the package, under the same policy.
    total = 0
    for name in sorted(os.listdir(WEB_DIR)):
        path = os.path.join(WEB_DIR, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            content = f.read()
        total += len(content)
        status, headers, body = http_get(server.http_port, "/" + name)
        assert (status, body) == (200, content), name
        assert "default-src 'self'" in headers["content-security-policy"], name
        assert headers["x-content-type-options"] == "nosniff", name
    assert 0 < total < 100 * 1024


def test_page_source_has_nothing_the_policy_forbids_nor_html_from_strings():
    """The policy would stop inline scripts and styles in the browser (the
    pages' console errors fail every test); this says which file and line."""
    found = []
    for name in sorted(os.listdir(WEB_DIR)):
        path = os.path.join(WEB_DIR, name)
        if not name.endswith((".html", ".js", ".mjs")):
            continue
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                checks = [r"<script(?![^>]*\bsrc=)[^>]*>", r"<style\b", r"\sstyle\s*=",
                          r"\son[a-z]+\s*=", r"javascript:"] if name.endswith(".html") else \
                    [r"\b(inner|outer)HTML\b(?!\s*=\s*(\"\"|''))",
                     r"insertAdjacentHTML", r"document\.write", r"\beval\s*\(",
                     r"new\s+Function\s*\(", r"\.setAttribute\(\s*['\"]style['\"]"]
                found += [f"{name}:{number}: {line.strip()}" for check in checks
                          if re.search(check, line)]
    assert not found, found


def test_paths_outside_the_page_directory_are_refused(server):
    port = server.http_port
    secrets = [b"setup(", b"PROMPT_USERNAME", b"falcon*solo", b"root:x:0:0",
               ACCOUNTS["alice"].encode(), b"def ", b"import "]
    for target in ["/../setup.py", "/%2e%2e/greenchat/texts.py", "/..%2fcredentials.txt",
                   "/%2e%2e%2ftexts.py", "/..%2f..%2fsetup.py", "/../../credentials.txt",
                   "/%2e%2e/%2e%2e/credentials.txt", "/.%2e/texts.py", "/..%252ftexts.py",
                   "/texts.py", "/__init__.py", "/%2fetc%2fpasswd",
                   "/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2fetc%2fpasswd"]:
        status, _, body = http_get(port, target)
        assert status == 404, (target, status, body[:200])
        assert not any(secret in body for secret in secrets), (target, body[:200])
    # What a proxy or server might read as a separator is refused too
    # (400 is as good a refusal as 404 for these).
    for target in ["/..\\setup.py", "/..%5csetup.py", "//etc/passwd", "/index.html%00.py"]:
        status, _, body = http_get(port, target)
        assert status in (400, 404), (target, status, body[:200])
        assert not any(secret in body for secret in secrets), (target, body[:200])


def test_websocket_from_a_foreign_origin_is_refused(server, browser):
    port = server.http_port
    for origin in ["http://evil.example", f"http://evil.example:{port}",
                   f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}",
                   f"http://localhost:{port}", "null"]:
        ws = WebSocket(port, origin=origin)
        try:
            assert ws.status == 403, (origin, ws.status)
        finally:
            ws.close()
    # The page's own origin, and none at all (only non-browser clients send
    # none), are taken, and the socket carries the protocol's frames: one
    # JSON object a text message, with no newline; also a hello that came
    # with the upgrade request, before its answer.
    hello = json.dumps({"type": "hello", "version": 1, "client": "greenchat-tests"})
    for origin, first in [(f"http://127.0.0.1:{port}", None), (None, None),
                          (f"http://127.0.0.1:{port}", hello)]:
        ws = WebSocket(port, origin=origin, first=first)
        try:
            assert ws.status == 101, (origin, ws.status)
            assert ws.accept_is_right()
            if first is None:
                ws.send(hello)
            try:
                opcode, payload = ws.receive()
            except TimeoutError:
                raise AssertionError(f"no answer to a hello (origin {origin!r}, "
                                     f"{'sent with' if first else 'sent after'} the upgrade)") \
                    from None
            assert opcode == 1 and not payload.endswith(b"\n")
            answer = json.loads(payload)
            assert answer["type"] == "hello" and answer["version"] == 1
            assert type(answer["max_frame"]) is int
        finally:
            ws.close()

    # In the browser: a page from another origin cannot open the socket; the
    # same script from the server's own page can.
    context = browser.new_context()
    try:
        context.route("http://evil.example/**",
                      lambda route: route.fulfill(status=200, content_type="text/html",
                                                  body="<title>evil</title>"))
        page = context.new_page()
        probe = """url => new Promise(done => {
            const ws = new WebSocket(url);
            ws.onopen = () => { ws.close(); done("open"); };
            ws.onerror = () => done("refused");
            setTimeout(() => done("no answer"), 4000);
        })"""
        page.goto("http://evil.example/")
        assert page.evaluate(probe, f"ws://127.0.0.1:{port}/ws") == "refused"
        page.goto(server.url)
        assert page.evaluate(probe, f"ws://127.0.0.1:{port}/ws") == "open"
    finally:
        context.close()


# Logging in -------------------------------------------------------------------------

def test_wrong_username_and_password_then_the_right_one(cast):
    alice = cast.page()
    alice.login("nobody", "whatever", welcome=False)
    expect(alice.alert).to_have_text(texts.INVALID_USERNAME, timeout=MS)
    alice.login("alice", "not-her-password", welcome=False)
    expect(alice.alert).to_have_text(texts.INVALID_PASSWORD, timeout=MS)
    # As on a terminal, she types the password again.
    alice.password.fill(ACCOUNTS["alice"])
    alice.login_button.click()
    alice.expect_line(texts.WELCOME)
    expect(alice.login_button).to_be_hidden(timeout=MS)
    expect(alice.input).to_be_visible()
    assert alice.page.title() == "greenchat"
    # The header says so, in texts.py's words.
    expect(alice.page.locator("#state")).to_have_text(texts.WEB_CONNECTED, timeout=MS)
    alice.type("broadcast anyone here?")
    alice.expect_line(texts.NO_ONE_ONLINE)


def test_three_wrong_passwords_lock_the_account(cast):
    mallory = cast.page()
    for _ in range(2):
        mallory.login("mallory", "guess", welcome=False)
        expect(mallory.alert).to_have_text(texts.INVALID_PASSWORD, timeout=MS)
    mallory.login("mallory", "guess", welcome=False)
    expect(mallory.alert).to_contain_text(texts.ACCOUNT_NOW_BLOCKED, timeout=MS)
    # The right password now: the lock holds (the server closed the first
    # connection; the page makes a new one).
    mallory.login("mallory", welcome=False)
    expect(mallory.alert).to_contain_text(texts.ACCOUNT_BLOCKED, timeout=MS)
    expect(mallory.login_button).to_be_visible()
    assert mallory.count(texts.WELCOME) == 0
    # An account in use on a terminal is refused to a page.
    cast.terminal("carol")
    mallory.login("carol", welcome=False)
    expect(mallory.alert).to_have_text(texts.ALREADY_LOGGED_IN, timeout=MS)


# Chatting ---------------------------------------------------------------------------

def test_two_pages_and_a_terminal_exchange_messages_and_broadcasts(cast):
    alice, bob = cast.page("alice"), cast.page("bob")
    carol = cast.terminal("carol")
    for page in (alice, bob):
        page.expect_line("carol logged in")

    alice.type("message bob hi bob")
    bob.expect_line("alice: hi bob")
    alice.type("message carol hi")
    carol.expect("alice: hi")
    bob.type("msg alice hello alice")
    alice.expect_line("bob: hello alice")
    carol.type("message alice hello from the terminal")
    alice.expect_line("carol: hello from the terminal")
    carol.type("message bob hello bob, from the terminal")
    bob.expect_line("carol: hello bob, from the terminal")

    carol.type("broadcast the terminal says hello")
    for page in (alice, bob):
        page.expect_line("[all] carol: the terminal says hello")
    bob.type("broadcast a page says hello")
    alice.expect_line("[all] bob: a page says hello")
    carol.expect("bob: a page says hello")
    alice.type("/broadcast another page says hello")
    bob.expect_line("[all] alice: another page says hello")
    carol.expect("alice: another page says hello")

    # Each exactly once, and the sender's own broadcast not shown back to it.
    carol.type("message alice last one")
    alice.expect_line("carol: last one")
    assert alice.count("alice: another page says hello") == 0
    assert containing(alice, "another page says hello") == 0
    for page, bodies in [(alice, ["bob: hello alice", "carol: hello from the terminal",
                                  "[all] carol: the terminal says hello",
                                  "[all] bob: a page says hello"]),
                         (bob, ["alice: hi bob", "carol: hello bob, from the terminal",
                                "[all] carol: the terminal says hello",
                                "[all] alice: another page says hello"])]:
        for body in bodies:
            assert page.count(body) == 1, (body, page.lines())
    for line in ["alice: hi", "bob: a page says hello", "alice: another page says hello"]:
        assert carol.count(line) == 1, (line, carol.lines)


def test_presence_online_list_and_whoelse(cast):
    alice = cast.page("alice")
    expect(alice.online.get_by_role("button")).to_have_count(0)
    bob = cast.page("bob")
    alice.expect_line("bob logged in")
    expect(alice.online.get_by_role("button", name="bob", exact=True)).to_be_visible()
    # bob's list comes from the server when he logs in: alice is there.
    expect(bob.online.get_by_role("button", name="alice", exact=True)).to_be_visible(timeout=MS)
    carol = cast.terminal("carol")
    for page in (alice, bob):
        page.expect_line("carol logged in")
        expect(page.online.get_by_role("button")).to_have_count(2, timeout=MS)
    assert alice.online_names() == ["bob", "carol"] and bob.online_names() == ["alice", "carol"]
    # No one is told of themselves, nor of those online before them.
    assert alice.count("alice logged in") == 0 and bob.count("alice logged in") == 0
    assert bob.count("bob logged in") == 0

    # The page asked whoelse for its list; only the one typed is shown.
    assert alice.count("bob") == 0
    alice.type("whoelse")
    alice.expect_line("bob")
    alice.expect_line("carol")
    carol.type("whoelse")
    carol.expect("alice")
    carol.expect("bob")

    carol.type("logout")
    carol.expect(texts.GOODBYE)
    for page in (alice, bob):
        page.expect_line("carol logged out")
        expect(page.online.get_by_role("button", name="carol")).to_have_count(0, timeout=MS)

    # A message to someone offline is stored, and the page says so.
    alice.type("message carol see you later")
    alice.expect_line(texts.stored_for("carol"))
    # A page that logs out says goodbye and shows the login form again.
    bob.type("logout")
    expect(bob.login_button).to_be_visible(timeout=MS)
    shown(bob, texts.GOODBYE)
    alice.expect_line("bob logged out")
    expect(alice.online.get_by_role("button")).to_have_count(0, timeout=MS)

    # carol gets what was stored for her at her next login, and bob, logging
    # in again on the same page, what she stored for him, marked.
    carol = cast.terminal("carol")
    carol.expect("alice: see you later")
    alice.expect_line("carol logged in", count=2)
    carol.type("message bob for when you are back")
    bob.login("bob", welcome=False)
    bob.expect_line("carol: for when you are back (offline)")
    expect(bob.online.get_by_role("button")).to_have_count(2, timeout=MS)


def test_blocked_users_messages_are_refused_and_never_shown(cast):
    alice, bob = cast.page("alice"), cast.page("bob")
    carol = cast.terminal("carol")
    alice.expect_line("carol logged in")

    alice.type("block carol")
    alice.expect_line(texts.blocked("carol"))
    carol.type("message alice psst")
    carol.expect(texts.RECIPIENT_BLOCKED_YOU)
    carol.type("broadcast anyone there?")
    carol.expect(texts.BROADCAST_PARTIAL)
    bob.expect_line("[all] carol: anyone there?")

    # The other way round: a page's message to someone who blocks its user.
    carol.type("block bob")
    carol.expect(texts.blocked("bob"))
    bob.type("message carol let me in")
    bob.expect_line(texts.RECIPIENT_BLOCKED_YOU)

    # What came after the refusals reached alice and carol; the refused never did.
    bob.type("message alice still here")
    alice.expect_line("bob: still here")
    bob.type("broadcast all of you")
    alice.expect_line("[all] bob: all of you")
    assert containing(alice, "psst") == 0 and containing(alice, "anyone there?") == 0
    assert carol.count("bob: let me in") == 0 and carol.count("bob: all of you") == 0

    alice.type("unblock carol")
    alice.expect_line(texts.unblocked("carol"))
    carol.type("message alice can you hear me now")
    alice.expect_line("carol: can you hear me now")
    assert containing(alice, "psst") == 0


def test_history_is_rendered_in_place_as_on_the_terminal(cast):
    alice = cast.page("alice")
    carol = cast.terminal("carol")
    alice.type("message carol one")
    carol.expect("alice: one")
    carol.type("message alice two")
    alice.expect_line("carol: two")
    alice.type("message carol three")
    carol.expect("alice: three")

    day = time.strftime("%Y-%m-%d")
    alice.type("history carol")
    stamped = r"\[\d{4}-\d\d-\d\d \d\d:\d\d\] "
    rows = alice.log.locator(":scope > *").filter(has_text=re.compile("^" + r"\[\d\d:\d\d\] "
                                                                      + stamped))
    expect(rows).to_have_count(3, timeout=MS)
    shown = [re.sub(r"^\[\d\d:\d\d\] ", "", row) for row in rows.all_text_contents()]
    assert [re.sub("^" + stamped, "", row) for row in shown] == \
        ["alice: one", "carol: two", "alice: three"]
    assert all(row.startswith(f"[{day} ") for row in shown) or \
        all(row.startswith(f"[{time.strftime('%Y-%m-%d')} ") for row in shown)
    # The terminal renders the same entries the same way, in the same local time.
    carol.type("history alice")
    for row in shown:
        carol.expect(row)

    alice.type("history carol 1")
    expect(rows).to_have_count(4, timeout=MS)
    assert re.sub(r"^\[\d\d:\d\d\] ", "", rows.last.text_content()) == shown[-1]
    alice.type("history dave")
    alice.expect_line(texts.no_history("dave"))
    alice.type("history alice")
    alice.expect_line(texts.INVALID_USER)


# Robustness -------------------------------------------------------------------------

def test_server_killed_and_restarted_under_an_open_page(server, cast):
    alice = cast.page("alice")
    carol = cast.terminal("carol")
    alice.expect_line("carol logged in")
    carol.type("message alice before the crash")
    alice.expect_line("carol: before the crash")

    # The server hangs, so the page's next command never gets its reply; it
    # is killed with it unread, and restarted on the same ports and data.
    server.proc.send_signal(signal.SIGSTOP)
    alice.type("message carol typed while the server hung")
    alice.page.wait_for_timeout(300)      # the frame reaches the hung server's socket
    server.kill()
    alice.expect_line(texts.RECONNECTING)
    server.start()
    alice.expect_line(texts.RECONNECTED, timeout=15)
    carol.expect(texts.RECONNECTED, timeout=15)
    # The command awaiting its reply was sent again, and run once.
    carol.expect("alice: typed while the server hung", timeout=WAIT)
    expect(alice.online.get_by_role("button", name="carol", exact=True)).to_be_visible()

    carol.type("message alice after the restart")
    alice.expect_line("carol: after the restart")
    alice.type("message carol and back")
    carol.expect("alice: and back")
    dave = cast.terminal("dave")
    dave.type("broadcast hello, I am new here")
    alice.expect_line("[all] dave: hello, I am new here")

    # Exactly once each, counted after a last message has come through.
    carol.type("message alice the last")
    alice.expect_line("carol: the last")
    alice.type("message carol the last too")
    carol.expect("alice: the last too")
    for text in ["carol: before the crash", "carol: after the restart",
                 "dave: hello, I am new here", texts.RECONNECTING, texts.RECONNECTED,
                 texts.WELCOME]:
        assert containing(alice, text) == 1, (text, alice.lines())
    for line in ["alice: typed while the server hung", "alice: and back"]:
        assert carol.count(line) == 1, (line, carol.lines)


def test_what_the_page_showed_and_never_acknowledged_comes_again_and_is_dropped(server, cast):
    """The server restarted with no resume window: the page's resume is
    refused, it logs in again with the password it holds, and the server
    sends again, as stored, every message the page never acknowledged (its
    acks are withheld on the way); the page shows none of them twice."""
    alice = cast.page("alice", withhold_acks=True)
    carol = cast.terminal("carol")
    alice.expect_line("carol logged in")
    for number in range(1, 4):
        carol.type(f"message alice number {number}")
    alice.expect_line("carol: number 3")
    carol.type("broadcast to all")
    alice.expect_line("[all] carol: to all")
    assert alice.wait(lambda: alice.withheld >= 1), "the page acknowledged nothing"
    server.kill()
    alice.expect_line(texts.RECONNECTING)
    server.options = ("--resume-window", "0")
    server.start()
    alice.expect_line(texts.RECONNECTED, timeout=15)
    carol.expect(texts.RECONNECTED, timeout=15)
    carol.type("message alice number 4")
    alice.expect_line("carol: number 4")
    carol.type("message alice number 5")
    alice.expect_line("carol: number 5")
    for text in ["carol: number 1", "carol: number 2", "carol: number 3", "carol: to all",
                 "carol: number 4", texts.RECONNECTED, texts.WELCOME]:
        assert containing(alice, text) == 1, (text, alice.lines())


@server_options(timeout=3)
def test_idle_warning_then_logout_back_to_the_login_form(cast):
    alice = cast.page("alice")
    # Warned at half of a TIMEOUT under 2 minutes, the seconds left rounded up.
    alice.expect_line(texts.idle_warning(2), timeout=3)
    shown(alice, texts.LOGGED_OUT_IDLE)
    expect(alice.login_button).to_be_visible(timeout=MS)
    alice.page.wait_for_timeout(500)
    assert containing(alice, texts.RECONNECTING) == 0
    # And in again.
    alice.login("alice", welcome=False)
    expect(alice.input).to_be_visible(timeout=MS)


def test_server_stopping_sends_the_page_back_to_the_login_form(server, cast):
    alice = cast.page("alice")
    assert server.stop() == 0
    shown(alice, texts.SERVER_SHUTTING_DOWN)
    expect(alice.login_button).to_be_visible(timeout=MS)
    alice.page.wait_for_timeout(500)
    assert containing(alice, texts.RECONNECTING) == 0


def test_a_day_line_when_the_date_changes(cast):
    # The page's clock starts a minute before midnight, UTC, and is moved on
    # past it; the first lines are of the page's today, so no day line yet.
    alice = cast.page("alice", clock=datetime(2026, 12, 1, 23, 59, tzinfo=timezone.utc),
                      timezone_id="UTC")
    carol = cast.terminal("carol")
    carol.type("message alice before midnight")
    expect(alice.line("[23:59] carol: before midnight", stamped=False)).to_have_count(1,
                                                                                       timeout=MS)
    alice.page.clock.fast_forward("02:00")
    carol.type("message alice after midnight")
    expect(alice.line("[00:01] carol: after midnight", stamped=False)).to_have_count(1,
                                                                                      timeout=MS)
    day_lines = [line for line in alice.lines() if line.startswith("---")]
    assert day_lines == ["--- Wednesday 2 December ---"], alice.lines()
    assert alice.lines()[-2:] == ["--- Wednesday 2 December ---",
                                  "[00:01] carol: after midnight"]


def test_markup_and_control_characters_are_shown_as_text(cast):
    alice, bob = cast.page("alice"), cast.page("bob")
    carol = cast.terminal("carol")
    alice.expect_line("carol logged in")

    carol.type("message alice <img src=x onerror=alert(1)>")
    alice.expect_line("carol: <img src=x onerror=alert(1)>")
    carol.type("broadcast <b>bold</b> & <script>alert(2)</script>")
    alice.expect_line("[all] carol: <b>bold</b> & <script>alert(2)</script>")
    # Control characters typed in a page: sent as they are, shown as the
    # terminal client shows them (ESC as ^[, C1 as \x9b, bidi overrides named).
    raw = "\x1b[31mred\x1b[0m \x9b2J \u202eevil\u202c bell\x07"
    bob.type("message alice " + raw)
    alice.expect_line("bob: " + visible(raw))
    bob.type("message carol " + raw)
    carol.expect("bob: " + visible(raw))
    # ...and from the terminal.
    carol.type("message alice \x1b[2Jcleared?")
    alice.expect_line("carol: ^[[2Jcleared?")
    # A line break (no keyboard sends one; a program can) starts an
    # indented line, so no text can pose as an event of its own.
    dave = WebSocket(cast.server.http_port)
    try:
        assert dave.login("dave")["status"] == "ok"
        dave.send(json.dumps({"type": "command", "id": 1,
                              "line": "message alice one\n[12:00] bob: a line of mine?"}))
        alice.expect_line("dave: one\n  [12:00] bob: a line of mine?")
    finally:
        dave.close()

    # Nothing of it became an element, and a failed image never ran a
    # handler: wait past a round trip for any late one.
    bob.type("message alice done")
    alice.expect_line("bob: done")
    alice.page.wait_for_timeout(200)
    for name in ["img", "b", "script"]:
        expect(alice.log.locator(name)).to_have_count(0)
    expect(alice.page.locator("img[src=x]")).to_have_count(0)
    assert alice.dialogs == [] and bob.dialogs == []


def test_a_flood_of_long_messages_keeps_the_page_light(cast):
    alice = cast.page("alice")
    dave = WebSocket(cast.server.http_port)
    try:
        assert dave.login("dave")["status"] == "ok"
        # 40 messages of 60,000 characters: 2.4 million, past the pane's 2 million.
        for number in range(40):
            dave.send(json.dumps({"type": "command", "id": number + 1,
                                  "line": f"message alice {number:02d}" + "x" * 60000}))
            assert dave.receive_frame()["ok"]
    finally:
        dave.close()
    assert alice.wait(lambda: alice.page.evaluate(
        "() => document.querySelector('[role=log]').textContent.includes('dave: 39')"))
    chars, first = alice.page.evaluate("""() => {
        const log = document.querySelector('[role=log]');
        return [log.textContent.length, log.firstElementChild.textContent.slice(0, 40)];
    }""")
    assert 1_500_000 < chars <= 2_000_000
    assert "dave: 00" not in first            # the oldest went first


# The page's own answers -----------------------------------------------------------------

def test_help_and_private_messaging_are_answered_by_the_page(cast):
    alice = cast.page("alice")
    carol = cast.terminal("carol")
    alice.expect_line("carol logged in")

    width = max(len(spec.syntax) for spec in COMMANDS.values())
    help_lines = [f"{spec.syntax.ljust(width)}  {spec.summary}" for spec in COMMANDS.values()]
    alice.type("help")
    for line in help_lines:
        alice.expect_line(line)
    carol.type("help")
    for line in help_lines:
        carol.expect(line)

    not_here = "Error. Private messaging is not available in the web client"
    for number, line in enumerate(["startprivate carol", "/startprivate carol",
                                   "private carol psst", "stopprivate carol"], 1):
        alice.type(line)
        alice.expect_line(not_here, count=number)
    carol.type("startprivate alice")
    carol.expect(texts.private_unavailable("alice"))
    # Nothing of it reached carol.
    carol.type("whoelse")
    carol.expect("alice")
    assert texts.started_private_with_you("alice") not in carol.lines, carol.lines


def test_online_list_click_history_keys_tab_completion_and_a_phone(cast):
    alice = cast.page("alice")
    bob = cast.page("bob", viewport={"width": 390, "height": 844})
    expect(bob.input).to_be_in_viewport()
    expect(bob.log).to_be_in_viewport()
    alice.online.get_by_role("button", name="bob", exact=True).click()
    expect(alice.input).to_have_value("message bob ")
    expect(alice.input).to_be_focused()
    alice.page.keyboard.type("hello from a click")
    alice.page.keyboard.press("Enter")
    bob.expect_line("alice: hello from a click")
    expect(alice.input).to_have_value("")
    alice.type("whoelse")
    alice.expect_line("bob")

    alice.input.press("ArrowUp")
    expect(alice.input).to_have_value("whoelse")
    alice.input.press("ArrowUp")
    expect(alice.input).to_have_value("message bob hello from a click")
    alice.input.press("ArrowDown")
    expect(alice.input).to_have_value("whoelse")
    alice.input.press("ArrowDown")
    expect(alice.input).to_have_value("")

    alice.input.fill("mes")
    alice.input.press("Tab")
    expect(alice.input).to_have_value("message ")
    expect(alice.input).to_be_focused()
    alice.page.keyboard.type("b")
    alice.input.press("Tab")
    expect(alice.input).to_have_value("message bob ")
    alice.input.fill("whoe")
    alice.input.press("Tab")
    expect(alice.input).to_have_value("whoelse")

    # A line over the server's max_frame is refused by the page, and kept.
    too_long = "message bob " + "x" * 70_000
    alice.input.fill(too_long)
    alice.input.press("Enter")
    expect(alice.log.locator(":scope > *").filter(has_text=re.compile(
        r"^\[\d\d:\d\d\] Error\. Message too long \(\d+ bytes, at most 65536\)$"))) \
        .to_have_count(1, timeout=MS)
    expect(alice.input).to_have_value(too_long)
    alice.input.fill("")
    assert containing(bob, "xxxxxxxxxx") == 0

    # An invalid line gets the server's answer and the page's hint.
    alice.type("message")
    alice.expect_line(texts.INVALID_COMMAND)
    alice.expect_line(texts.usage_hint(COMMANDS["message"].syntax))


# The screenshot in docs/, made by hand ------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("GREENCHAT_SCREENSHOT"),
                    reason="makes docs/web-client.png: set GREENCHAT_SCREENSHOT=PATH")
def test_screenshot_of_a_conversation(cast):
    # An afternoon on the pages' clocks, whenever it is made.
    afternoon = dict(clock=datetime(2026, 11, 30, 14, 32, tzinfo=timezone.utc),
                     timezone_id="UTC", viewport={"width": 1100, "height": 620})
    alice = cast.page("alice", **afternoon)
    bob = cast.page("bob", **afternoon)
    alice.expect_line("bob logged in")
    carol = cast.terminal("carol")
    alice.expect_line("carol logged in")
    bob.type("message alice are you coming to the demo at three?")
    alice.expect_line("bob: are you coming to the demo at three?")
    alice.type("message bob yes, I'll bring the slides")
    bob.expect_line("alice: yes, I'll bring the slides")
    carol.type("broadcast the build is green again, thanks everyone")
    alice.expect_line("[all] carol: the build is green again, thanks everyone")
    alice.type("message carol was it the flaky resume test?")
    carol.expect("alice: was it the flaky resume test?")
    carol.type("message alice yes: fixed, and a browser test keeps it fixed")
    alice.expect_line("carol: yes: fixed, and a browser test keeps it fixed")
    alice.type("whoelse")
    alice.expect_line("carol")
    alice.input.fill("message carol great, see you at the demo")
    alice.page.screenshot(path=os.environ["GREENCHAT_SCREENSHOT"])
