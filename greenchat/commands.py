"""The one command table.

Every command a user can type is declared here once: its name, the arguments
it takes and where it runs (on the server, over a peer link, or in the client
alone). `parse_line` is the single path for argument checks and unknown
commands: whatever it rejects becomes `Error. Invalid command`, on either side.

A line holding a lone surrogate (JSON can carry "\ud800", UTF-8 cannot) is
refused like any other invalid line, so no text that cannot be stored, sent
or shown as UTF-8 gets past the parser.

Argument kinds:
  "user"    one whitespace-free word
  "seconds" a non-negative decimal integer of at most 10 ASCII digits
  "text"    the rest of the line, verbatim (spaces and quotes kept); non-empty

Handlers are collected by name: the server's `cmd_<name>` methods implement
the "server" commands, the client's implement "peer" and "local" ones. Each
handler's docstring shows its syntax.
"""

import re
from dataclasses import dataclass

from greenchat.errors import InvalidCommand

SERVER, PEER, LOCAL = "server", "peer", "local"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    args: tuple
    where: str
    summary: str

    @property
    def syntax(self):
        return " ".join((self.name,) + tuple(a.upper() for a in self.args))


_SPECS = (
    CommandSpec("message", ("user", "text"), SERVER,
                "send TEXT to USER (stored if USER is offline)"),
    CommandSpec("broadcast", ("text",), SERVER, "send TEXT to every online user"),
    CommandSpec("whoelse", (), SERVER, "list the other users online now"),
    CommandSpec("whoelsesince", ("seconds",), SERVER, "list the users online in the last SECONDS"),
    CommandSpec("block", ("user",), SERVER, "stop USER's messages and presence reaching you"),
    CommandSpec("unblock", ("user",), SERVER, "undo a block"),
    CommandSpec("logout", (), SERVER, "end the session"),
    CommandSpec("startprivate", ("user",), SERVER, "open a direct private link to USER"),
    CommandSpec("private", ("user", "text"), PEER, "send TEXT to USER over the private link"),
    CommandSpec("stopprivate", ("user",), PEER, "close the private link to USER"),
    CommandSpec("help", (), LOCAL, "list the commands"),
)

COMMANDS = {spec.name: spec for spec in _SPECS}


_WORD = re.compile(r"\s*(\S+)")
# Over 300 years: enough for any question, small enough for any arithmetic.
MAX_SECONDS_DIGITS = 10
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_line(line):
    """Split a typed line into (spec, args); raise InvalidCommand.

    Words are separated by any whitespace; a "text" argument is the rest of
    the line after the separating whitespace, kept verbatim but for a trailing
    line ending. `args` is a tuple of str, except "seconds", which is an int.
    """
    if _SURROGATE.search(line):
        raise InvalidCommand()
    line = line.rstrip("\r\n")
    match = _WORD.match(line)
    spec = COMMANDS.get(match.group(1)) if match else None
    if spec is None:
        raise InvalidCommand()
    pos = match.end()
    args = []
    for kind in spec.args:
        if kind == "text":
            text = line[pos:]
            text = text[len(text) - len(text.lstrip()):] if text[:1].isspace() else ""
            if not text.strip():
                raise InvalidCommand()
            args.append(text)
            pos = len(line)
            break
        match = _WORD.match(line, pos)
        if not match:
            raise InvalidCommand()
        word, pos = match.group(1), match.end()
        if kind == "seconds":
            if not (len(word) <= MAX_SECONDS_DIGITS and word.isascii() and word.isdigit()):
                raise InvalidCommand()
            args.append(int(word))
        else:
            args.append(word)
    if line[pos:].strip():
        raise InvalidCommand()
    return spec, tuple(args)


def handlers_missing(obj, where):
    """Names of `where` commands that `obj` has no cmd_<name> method for."""
    return [s.name for s in _SPECS
            if s.where == where and not callable(getattr(obj, "cmd_" + s.name, None))]
