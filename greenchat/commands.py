"""The one command table.

Every command a user can type is declared here once: its name, the arguments
it takes, where it runs (on the server, over a peer link, or in the client
alone), its aliases, and what else a client needs to know of it (its answer
lists user names). Every command also answers to its name with a leading
`/` (`/msg`, `/quit`, `/whoelse`), on the server and in every client alike.
`parse_line` is the single path for argument checks and unknown commands:
whatever it rejects becomes `Error. Invalid command`, on either side, and
`hint` says what a client may add to it.

A line holding a lone surrogate (JSON can carry "\\ud800", UTF-8 cannot) is
refused like any other invalid line, so no text that cannot be stored, sent
or shown as UTF-8 gets past the parser.

Argument kinds:
  "user"    one whitespace-free word
  "seconds" a non-negative decimal integer of at most 10 ASCII digits
  "text"    the rest of the line, verbatim (spaces and quotes kept); non-empty
  "n?"      optional: a positive decimal integer of at most 10 ASCII digits,
            or None when the line ends before it

The server and the client each map the specs they run to their handlers in
a table of their own, keyed by these specs (chat.py, client.py);
`unhandled` names any spec a table misses. Each handler's docstring shows
its syntax.
"""

import re
from dataclasses import dataclass

from greenchat import texts
from greenchat.errors import InvalidCommand

SERVER, PEER, LOCAL = "server", "peer", "local"


@dataclass(frozen=True, eq=False)       # one object per command: identity is equality
class CommandSpec:
    name: str
    args: tuple
    where: str
    summary: str
    lists_users: bool = False      # its answer's lines are user names
    aliases: tuple = ()            # other names it answers to (`msg` for message)

    @property
    def syntax(self):
        return " ".join((self.name,) + tuple(f"[{a[:-1].upper()}]" if a.endswith("?")
                                             else a.upper() for a in self.args))


MESSAGE = CommandSpec("message", ("user", "text"), SERVER,
                      "send TEXT to USER (stored if USER is offline)", aliases=("msg",))
BROADCAST = CommandSpec("broadcast", ("text",), SERVER, "send TEXT to every online user")
WHOELSE = CommandSpec("whoelse", (), SERVER, "list the other users online now", lists_users=True)
WHOELSESINCE = CommandSpec("whoelsesince", ("seconds",), SERVER,
                           "list the users online in the last SECONDS", lists_users=True)
BLOCK = CommandSpec("block", ("user",), SERVER, "stop USER's messages and presence reaching you")
UNBLOCK = CommandSpec("unblock", ("user",), SERVER, "undo a block")
LOGOUT = CommandSpec("logout", (), SERVER, "end the session", aliases=("quit",))
STARTPRIVATE = CommandSpec("startprivate", ("user",), SERVER, "open a direct private link to USER")
PRIVATE = CommandSpec("private", ("user", "text"), PEER, "send TEXT to USER over the private link")
STOPPRIVATE = CommandSpec("stopprivate", ("user",), PEER, "close the private link to USER")
HISTORY = CommandSpec("history", ("user", "n?"), SERVER,
                      "show your last N messages with USER (default 20, at most 500)")
HELP = CommandSpec("help", (), LOCAL, "list the commands")

COMMANDS = {spec.name: spec for spec in (MESSAGE, BROADCAST, WHOELSE, WHOELSESINCE, BLOCK,
                                         UNBLOCK, LOGOUT, STARTPRIVATE, PRIVATE, STOPPRIVATE,
                                         HISTORY, HELP)}

# Every name a command answers to, aliases included.
NAMES = {name: spec for spec in COMMANDS.values() for name in (spec.name, *spec.aliases)}


def lookup(word):
    """The command `word` names: a name or an alias, with or without a
    leading `/` (as IRC clients type them); None if it names none."""
    return NAMES.get(word[1:] if word.startswith("/") else word)


def hint(line):
    """A word of help for a line the parser refused: the command's usage,
    that commands are lower case, or where to find them."""
    word = line.split(None, 1)[0] if line.strip() else ""
    spec = lookup(word)
    if spec is not None:
        return texts.usage_hint(spec.syntax)
    if lookup(word.lower()) is not None:
        return texts.LOWER_CASE_HINT
    return texts.NOT_A_COMMAND_HINT


_WORD = re.compile(r"\s*(\S+)")
# Over 300 years: enough for any question, small enough for any arithmetic.
MAX_SECONDS_DIGITS = 10
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_line(line):
    """Split a typed line into (spec, args); raise InvalidCommand.

    Words are separated by any whitespace; a "text" argument is the rest of
    the line after the separating whitespace, kept verbatim but for a trailing
    line ending. `args` is a tuple of str, except "seconds" and "n?", which are ints
    (or None for an "n?" left out).
    """
    if _SURROGATE.search(line):
        raise InvalidCommand()
    line = line.rstrip("\r\n")
    match = _WORD.match(line)
    spec = lookup(match.group(1)) if match else None
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
            if kind.endswith("?"):
                args.append(None)
                continue
            raise InvalidCommand()
        word, pos = match.group(1), match.end()
        if kind == "n?":
            if not (len(word) <= MAX_SECONDS_DIGITS and word.isascii() and word.isdigit()) \
                    or int(word) == 0:
                raise InvalidCommand()
            args.append(int(word))
        elif kind == "seconds":
            if not (len(word) <= MAX_SECONDS_DIGITS and word.isascii() and word.isdigit()):
                raise InvalidCommand()
            args.append(int(word))
        else:
            args.append(word)
    if line[pos:].strip():
        raise InvalidCommand()
    return spec, tuple(args)


def unhandled(handlers, *where):
    """Names of the commands run in `where` that the table `handlers` (spec
    -> handler) has no handler for."""
    return [spec.name for spec in COMMANDS.values()
            if spec.where in where and spec not in handlers]
