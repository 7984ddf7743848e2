"""Unit tests of the one command table and its parser."""

import pytest

from greenchat import texts
from greenchat.commands import COMMANDS, LOCAL, PEER, SERVER, parse_line, unhandled
from greenchat.errors import InvalidCommand


@pytest.mark.parametrize("line, name, args", [
    ("message bob hi", "message", ("bob", "hi")),
    ("message bob  two  spaces kept ", "message", ("bob", "two  spaces kept ")),
    ('message\tbob "quoted" \\ text', "message", ("bob", '"quoted" \\ text')),
    ("  broadcast hello world\n", "broadcast", ("hello world",)),
    ("whoelse", "whoelse", ()),
    ("whoelse   ", "whoelse", ()),
    ("whoelsesince 0", "whoelsesince", (0,)),
    ("whoelsesince 300", "whoelsesince", (300,)),
    ("block bob", "block", ("bob",)),
    ("unblock bob", "unblock", ("bob",)),
    ("logout", "logout", ()),
    ("startprivate bob", "startprivate", ("bob",)),
    ("private bob psst", "private", ("bob", "psst")),
    ("stopprivate bob", "stopprivate", ("bob",)),
    ("help", "help", ()),
])
def test_valid_lines(line, name, args):
    spec, parsed = parse_line(line)
    assert (spec.name, parsed) == (name, args)


@pytest.mark.parametrize("line", [
    "", "   ", "dance", "Message bob hi", "messagebob hi", "message", "message bob",
    "message bob    ", "broadcast", "broadcast   ", "whoelse now", "whoelsesince",
    "whoelsesince -1", "whoelsesince 1.5", "whoelsesince ten", "whoelsesince ١٢",
    "whoelsesince 1 2", "block", "block a b", "unblock", "logout now", "startprivate",
    "startprivate a b", "private", "private bob", "stopprivate", "help me",
])
def test_invalid_lines_all_give_the_one_error(line):
    with pytest.raises(InvalidCommand) as info:
        parse_line(line)
    assert info.value.text == texts.INVALID_COMMAND == "Error. Invalid command"


def test_table_declares_where_each_command_runs():
    assert {n for n, s in COMMANDS.items() if s.where == SERVER} == {
        "message", "broadcast", "whoelse", "whoelsesince", "block", "unblock", "logout",
        "startprivate", "history"}
    assert {n for n, s in COMMANDS.items() if s.where == PEER} == {"private", "stopprivate"}
    assert {n for n, s in COMMANDS.items() if s.where == LOCAL} == {"help"}
    for spec in COMMANDS.values():
        assert spec.summary and spec.syntax.startswith(spec.name)
    assert COMMANDS["message"].syntax == "message USER TEXT"


def test_every_handler_exists_and_shows_its_syntax(tmp_path):
    from greenchat.client.client import Client
    from greenchat.config import ClientConfig
    from greenchat.server.chat import Chat
    chat = Chat(accounts=set(), store=None, mailroom=None, clock=None)
    client = Client(ClientConfig(host="127.0.0.1", port=1), console=None)
    assert unhandled(chat.handlers, SERVER) == []
    assert unhandled(client.handlers, PEER, LOCAL) == []
    for table in (chat.handlers, client.handlers):
        for spec, handler in table.items():
            assert handler.__doc__.strip().splitlines()[0] == spec.syntax


def test_unhandled_names_the_gaps():
    from greenchat import commands
    table = {commands.MESSAGE: print}
    assert "broadcast" in unhandled(table, SERVER)
    assert "message" not in unhandled(table, SERVER)
    assert unhandled(table, LOCAL) == ["help"]


def test_aliases_and_a_leading_slash_name_the_same_command():
    from greenchat.commands import LOGOUT, MESSAGE, NAMES, WHOELSE
    assert parse_line("/msg yoda hi there") == (MESSAGE, ("yoda", "hi there"))
    assert parse_line("msg yoda hi") == (MESSAGE, ("yoda", "hi"))
    assert parse_line("/message yoda hi") == (MESSAGE, ("yoda", "hi"))
    assert parse_line("/quit") == (LOGOUT, ())
    assert parse_line("/whoelse") == (WHOELSE, ())
    # No alias hides a command, and every name is one command's.
    assert len(NAMES) == len(COMMANDS) + sum(len(s.aliases) for s in COMMANDS.values())
    for line in ("//whoelse", "/", "/Whoelse", "Quit"):
        with pytest.raises(InvalidCommand):
            parse_line(line)


@pytest.mark.parametrize("line, expected", [
    ("message yoda", "usage: message USER TEXT"),
    ("/msg", "usage: message USER TEXT"),
    ("history", "usage: history USER [N]"),
    ("Whoelse", "commands are lower case"),
    ("MESSAGE yoda hi", "commands are lower case"),
    ("hello there", "type help for the commands"),
    ("", "type help for the commands"),
])
def test_a_refused_line_gets_a_hint(line, expected):
    from greenchat.commands import hint
    assert hint(line) == expected
