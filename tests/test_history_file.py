"""The input history on disk (issue 14, item 5): one private file per server
and account, holding only what may be kept."""

import os
import stat

import pytest

from greenchat.client.console import (
    HISTORY_LINE_MAX,
    append_history,
    default_history_path,
    kept_in_history,
    load_history,
)


def test_one_file_per_server_and_account(tmp_path):
    env = {"XDG_DATA_HOME": str(tmp_path)}
    hans = default_history_path("127.0.0.1", 4000, "hans", env)
    assert hans == str(tmp_path / "greenchat" / "history" / "127.0.0.1_4000_hans")
    assert default_history_path("127.0.0.1", 4000, "yoda", env) != hans
    assert default_history_path("::1", 4000, "hans", env) != hans
    # Whatever a name holds, it stays one file inside the directory.
    odd = default_history_path("../../etc", 1, "a/b", env)
    assert os.path.dirname(odd) == str(tmp_path / "greenchat" / "history")


def test_the_file_is_private_and_holds_only_what_may_be_kept(tmp_path):
    path = default_history_path("h", 1, "hans", {"XDG_DATA_HOME": str(tmp_path)})
    for line in ("message yoda hi", "private yoda psst, secret plans", "/private yoda x",
                 "message yoda line one\nline two", "message yoda " + "x" * HISTORY_LINE_MAX,
                 "whoelse", "   "):
        append_history(path, line)
    assert load_history(path) == ["message yoda hi", "whoelse"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700


@pytest.mark.parametrize("line, kept", [
    ("message yoda hi", True), ("private yoda hi", False), ("/private yoda hi", False),
    ("message yoda a\rb", False), ("x" * (HISTORY_LINE_MAX + 1), False), ("", False),
])
def test_what_is_kept(line, kept):
    assert kept_in_history(line) is kept


def test_the_suite_never_writes_the_users_own_history():
    home = os.path.join(os.path.expanduser("~"), ".local", "share")
    assert os.environ["XDG_DATA_HOME"] != home
    assert not os.environ["XDG_DATA_HOME"].startswith(os.path.expanduser("~") + os.sep)
