"""Configuration: one validated, immutable object per program, built from argv.

Every setting is written once, as a field of ServerConfig or ClientConfig:
its default, the values it may take and how the command line spells it
(`option`; `setting` for one without a flag). The dataclass's validation and
the program's argparse parser are both built from those fields, so they
cannot drift apart. argparse does the parsing (a bad argument prints the
usage line and exits 2); the dataclasses check again, so that code built on
them never sees an impossible value. Nothing here is global: the programs
pass the object on.
"""

import argparse
import dataclasses
import logging
import math
import os
from dataclasses import dataclass

from greenchat import __version__
from greenchat.codec import DEFAULT_MAX_FRAME
from greenchat.errors import ConfigError
from greenchat.websocket import origin_key


@dataclass(frozen=True)
class Range:
    """The numbers from `low` to `high`, `low` itself excluded if `above`;
    `words` name them in an error message ("port must be <words>")."""
    low: float
    high: float
    words: str
    above: bool = False

    def __contains__(self, value):
        return (self.low < value if self.above else self.low <= value) and value <= self.high


def between(low, high, unit=""):
    return Range(low, high, f"{low}-{high}{unit}")


def at_least(low, unit=""):
    return Range(low, math.inf, f"at least {low}{unit}")


PORTS = between(0, 65535)
SECONDS = Range(0, math.inf, "a positive number of seconds", above=True)
COUNT = at_least(1)
LOG_LEVELS = ("debug", "info", "warning", "error")
# Wrong passwords in a row that lock an account: no flag, but BLOCK_DURATION's help says it.
FAILED_LOGINS = 3


def option(flag, default=dataclasses.MISSING, within=None, off=None,
           cli_default=dataclasses.MISSING, **argparse_kwargs):
    """A config field with a command-line argument spelt `flag`: "--name" for
    an option, "NAME" for a positional argument (optional if it has a
    default). `within`: a Range, or a tuple of choices; None is always
    allowed where it is the default. A bool field is a switch that turns its
    default around. `off`: (flag, help) of a second flag that sets the field to None.
    `cli_default`: the command line's default, where it differs from the
    dataclass's. `argparse_kwargs` (help, metavar) go to add_argument as they are."""
    if cli_default is not dataclasses.MISSING:
        argparse_kwargs["default"] = cli_default
    return dataclasses.field(default=default, metadata={
        "flag": flag, "within": within, "off": off, "argparse": argparse_kwargs})


def setting(default, within=None):
    """A validated config field with no command-line argument."""
    return option(None, default, within)


def _words(within):
    return within.words if isinstance(within, Range) else "one of " + ", ".join(within)


def _validate(config):
    for field in dataclasses.fields(config):
        within, value = field.metadata.get("within"), getattr(config, field.name)
        if within is not None and not (value is None and field.default is None) and \
                value not in within:
            raise ConfigError(f"{field.name} must be {_words(within)}, got {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    port: int = option("PORT", 4000, PORTS,
                       help="TCP port to listen on, 0 for any free one (default: %(default)s)")
    block_duration: float = option(
        "BLOCK_DURATION", 60.0, SECONDS,
        help=f"seconds an account stays locked after {FAILED_LOGINS} wrong passwords in a row "
             "(default: %(default)s)")
    timeout: float = option("TIMEOUT", 600.0, SECONDS,
                            help="seconds without a command before a user is logged out "
                                 "(default: %(default)s)")
    host: str = option("--host", "0.0.0.0", help="address to listen on (default: %(default)s)")
    credentials: str = option("--credentials", "credentials.txt", metavar="FILE",
                              help="accounts file (default: ./%(default)s)")
    data_dir: str = option("--data", "greenchat-data", metavar="DIR",
                           help="directory for the database, created if missing "
                                "(default: ./%(default)s)")
    log_level: str = option("--log-level", "info", LOG_LEVELS)
    max_frame: int = option("--max-frame", DEFAULT_MAX_FRAME, at_least(1024, " bytes"),
                            metavar="BYTES",
                            help="largest frame a client may send (default: %(default)s)")
    mailbox_limit: int = option("--mailbox-limit", 10_000, COUNT, metavar="N",
                                help="messages a client may leave unacknowledged before "
                                     "it is disconnected (default: %(default)s)")
    mailbox_limit_bytes: int = option("--mailbox-limit-bytes", 4 * 1024 * 1024, COUNT,
                                      metavar="BYTES",
                                      help="bytes of messages a client may leave unacknowledged "
                                           "before it is disconnected (default: %(default)s)")
    offline_limit: int = option("--offline-limit", 10_000, COUNT, metavar="N",
                                help="messages kept unacknowledged for one offline user; a "
                                     "message past it is refused (default: %(default)s)")
    offline_limit_bytes: int = option("--offline-limit-bytes", 16 * 1024 * 1024, COUNT,
                                      metavar="BYTES",
                                      help="bytes of text stored for one offline user, likewise "
                                           "(default: %(default)s)")
    resume_window: float = option("--resume-window", 120.0,
                                  Range(0, math.inf, "0 (off) or more seconds"),
                                  metavar="SECONDS",
                                  help="how long a session whose connection dropped waits for "
                                       "its client to come back; 0 ends it at once "
                                       "(default: %(default)s)")
    # A connection that sent nothing for ping_after seconds is pinged; with
    # no answer in ping_wait more, it is taken as dropped.
    ping_after: float = setting(30.0, SECONDS)
    ping_wait: float = setting(30.0, SECONDS)
    retention: float = option("--retention", 30.0, at_least(1, " days"), metavar="DAYS",
                              help="days acknowledged messages are kept for history; "
                                   "unacknowledged ones are kept whatever their age "
                                   "(default: %(default)s)")
    login_timeout: float = option("--login-timeout", 120.0, SECONDS, metavar="SECONDS",
                                  help="time a connection has to log in (default: %(default)s)")
    failed_logins: int = setting(FAILED_LOGINS, COUNT)
    backlog: int = setting(1024, COUNT)
    command_rate: float = option("--command-rate", 20.0, Range(0, math.inf, "0 (no limit) or more"),
                                 metavar="PER_SECOND",
                                 help="frames (commands, and the login's before them) a "
                                      "connection may send per second after its burst; 0 for "
                                      "no limit (default: %(default)s)")
    command_burst: int = option("--command-burst", 100, COUNT, metavar="N",
                                help="frames a connection may send at once (default: %(default)s)")
    max_connections: int = option("--max-connections", 20_000, COUNT, metavar="N",
                                  help="connections the server accepts at once "
                                       "(default: %(default)s)")
    max_per_address: int = option("--max-per-address", 200, COUNT, metavar="N",
                                  help="connections one network may hold (see --ipv4-prefix, "
                                       "--ipv6-prefix; default: %(default)s)")
    ipv4_prefix: int = option("--ipv4-prefix", 24, between(8, 32, " bits"), metavar="BITS",
                              help="connections are counted for --max-per-address per network "
                                   "of this many bits: IPv4 clients (default: %(default)s)")
    ipv6_prefix: int = option("--ipv6-prefix", 64, between(16, 128, " bits"), metavar="BITS",
                              help="the same for IPv6 clients; an IPv4-mapped IPv6 address "
                                   "counts as its IPv4 address (default: %(default)s)")
    tls_cert: str = option("--tls-cert", None, metavar="FILE",
                           help="serve TLS with this certificate (PEM; greenchat-admin mkcert "
                                "makes one)")
    tls_key: str = option("--tls-key", None, metavar="FILE",
                          help="the private key of --tls-cert (PEM)")
    # None (no web client) unless asked for: greenchat-server's default is 8080.
    http_port: int = option("--http-port", None, PORTS, off=("--no-http", "serve no web client"),
                            cli_default=8080, metavar="PORT",
                            help="port of the web client (HTTP and WebSocket, on --host; "
                                 "HTTPS with --tls-cert), 0 for any free one "
                                 "(default: %(default)s)")
    http_origins: tuple = option("--http-origin", (), action="append", cli_default=None,
                                 metavar="ORIGIN",
                                 help="let pages from ORIGIN (e.g. https://chat.example.org) "
                                      "open the web client's WebSocket too; repeatable "
                                      "(default: only pages this server serves)")

    def __post_init__(self):
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        object.__setattr__(self, "http_origins", tuple(self.http_origins or ()))
        for origin in self.http_origins:
            if origin_key(origin) is None or "://" not in origin:
                raise ConfigError(f"--http-origin must be like https://host[:port], "
                                  f"got {origin!r}")
        _validate(self)

    @property
    def database(self):
        return os.path.join(self.data_dir, "greenchat.sqlite3")


@dataclass(frozen=True)
class ClientConfig:
    host: str = option("HOST", "127.0.0.1", help="server address (default: %(default)s)")
    port: int = option("PORT", 4000, between(1, 65535), help="server port (default: %(default)s)")
    connect_timeout: float = 10.0
    max_frame: int = DEFAULT_MAX_FRAME
    p2p_host: str = option("--p2p-host", None, metavar="ADDR",
                           help="address to listen on for private links, 0.0.0.0 for all "
                                "(default: the address this client reaches the server from); "
                                "peers are told the address the server sees this client at, "
                                "never this one")
    p2p_port: int = option("--p2p-port", 0, PORTS, metavar="PORT",
                           help="port to accept private links on (default: any free port)")
    user: str = option("--user", None, metavar="NAME",
                       help="log in as NAME (the password is still asked)")
    color: bool = option("--no-color", True,
                         help="no colours on a terminal (so does a non-empty NO_COLOR variable)")
    history: bool = option("--no-history", True,
                           help="do not keep typed lines in $XDG_DATA_HOME/greenchat/history "
                                "(default: ~/.local/share/greenchat/history)")
    tls: bool = option("--tls", False,
                       help="connect with TLS, verifying the server's certificate; private "
                            "links use TLS too")
    ca: str = option("--ca", None, metavar="FILE",
                     help="trust the certificates in FILE (PEM) instead of the system's")
    insecure: bool = option("--insecure", False,
                            help="with --tls: do not verify the server's certificate")
    reconnect_for: float = option("--reconnect-for", 300.0, SECONDS, metavar="SECONDS",
                                  help="after losing the server, how long to keep trying to "
                                       "reconnect, logging in again with the same account "
                                       "(default: %(default)s)")
    reconnect: bool = option("--no-reconnect", True,
                             help="exit at once when the connection to the server is lost")

    def __post_init__(self):
        if (self.ca is not None or self.insecure) and not self.tls:
            raise ConfigError("--ca and --insecure need --tls")
        if self.ca is not None and self.insecure:
            raise ConfigError("--ca and --insecure exclude each other")
        _validate(self)


def _number(kind, within):
    """An argparse type: text to a finite `kind` (int or float) within `within`."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        if value not in within:
            raise argparse.ArgumentTypeError(f"must be {within.words}, got {text!r}")
        return value
    return parse


def add_argument(parser, config_class, name):
    """Give `parser` the command-line argument of `config_class`'s field `name`."""
    field = next(f for f in dataclasses.fields(config_class) if f.name == name)
    flag, within = field.metadata["flag"], field.metadata["within"]
    kwargs = dict(field.metadata["argparse"])
    if field.type is bool:              # the annotation itself: no postponed annotations here
        kwargs["action"] = "store_false" if field.default else "store_true"
    elif isinstance(within, tuple):
        kwargs["choices"] = within
    elif within is not None:
        kwargs["type"] = _number(field.type, within)
    if field.default is not dataclasses.MISSING:
        kwargs.setdefault("default", field.default)
    if flag.startswith("-"):
        parser.add_argument(flag, dest=name, **kwargs)
        if field.metadata.get("off"):
            off, off_help = field.metadata["off"]
            parser.add_argument(off, dest=name, action="store_const", const=None, help=off_help)
    else:
        parser.add_argument(name, metavar=flag, nargs="?" if "default" in kwargs else None,
                            **kwargs)


def _parser(config_class, prog, description):
    """The parser of every field of `config_class` that has a flag, in field order."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for field in dataclasses.fields(config_class):
        if field.metadata.get("flag"):
            add_argument(parser, config_class, field.name)
    parser.add_argument("--version", action="version", version=f"{prog} {__version__}")
    return parser


def server_parser():
    return _parser(ServerConfig, "greenchat-server", "Run the greenchat server.")


def client_parser():
    return _parser(ClientConfig, "greenchat-client", "Connect to a greenchat server.")


def _parse(parser, config_class, argv):
    """argv -> a validated config; any error is argparse's usage line, exit 2."""
    ns = parser.parse_args(argv)
    try:
        return config_class(**vars(ns))
    except ConfigError as exc:
        parser.error(str(exc))


def parse_server_args(argv):
    return _parse(server_parser(), ServerConfig, argv)


def parse_client_args(argv, environ=None):
    config = _parse(client_parser(), ClientConfig, argv)
    if (os.environ if environ is None else environ).get("NO_COLOR"):
        config = dataclasses.replace(config, color=False)
    return config


def setup_logging(level):
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
