"""Configuration: one validated, immutable object per program, built from argv.

argparse does the parsing (a bad argument prints the usage line and exits 2);
the dataclasses validate ranges so that code built on them never sees an
impossible value. Nothing here is global: the programs pass the object on.
"""

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass

from greenchat import __version__
from greenchat.codec import DEFAULT_MAX_FRAME
from greenchat.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_PORT = 4000
DEFAULT_BLOCK_DURATION = 60.0
DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class ServerConfig:
    port: int
    block_duration: float
    timeout: float
    host: str = "0.0.0.0"
    credentials: str = "credentials.txt"
    data_dir: str = "greenchat-data"
    log_level: str = "info"
    max_frame: int = DEFAULT_MAX_FRAME
    mailbox_limit: int = 10_000
    mailbox_limit_bytes: int = 4 * 1024 * 1024
    offline_limit: int = 10_000
    offline_limit_bytes: int = 16 * 1024 * 1024
    login_timeout: float = 120.0
    failed_logins: int = 3
    backlog: int = 1024
    command_rate: float = 20.0
    command_burst: int = 100
    max_connections: int = 20_000
    max_per_address: int = 200
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    tls_cert: str = None
    tls_key: str = None

    def __post_init__(self):
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0-65535, got {self.port}")
        for name in ("block_duration", "timeout", "login_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if self.command_rate < 0:
            raise ConfigError("command_rate must be 0 (no limit) or more")
        for name in ("max_frame", "mailbox_limit", "mailbox_limit_bytes", "offline_limit",
                     "offline_limit_bytes", "failed_logins", "backlog",
                     "command_burst", "max_connections", "max_per_address"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        for name, low, high in (("ipv4_prefix", 8, 32), ("ipv6_prefix", 16, 128)):
            if not low <= getattr(self, name) <= high:
                raise ConfigError(f"{name} must be {low}-{high} bits")
        if self.max_frame < 1024:
            raise ConfigError("max_frame must be at least 1024 bytes")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")

    @property
    def database(self):
        return os.path.join(self.data_dir, "greenchat.sqlite3")


@dataclass(frozen=True)
class ClientConfig:
    host: str
    port: int
    connect_timeout: float = 10.0
    max_frame: int = DEFAULT_MAX_FRAME
    p2p_host: str = None
    p2p_port: int = 0
    user: str = None
    color: bool = True
    tls: bool = False
    ca: str = None
    insecure: bool = False
    history: bool = True

    def __post_init__(self):
        if (self.ca is not None or self.insecure) and not self.tls:
            raise ConfigError("--ca and --insecure need --tls")
        if self.ca is not None and self.insecure:
            raise ConfigError("--ca and --insecure exclude each other")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port must be 1-65535, got {self.port}")
        if not 0 <= self.p2p_port <= 65535:
            raise ConfigError(f"p2p port must be 0-65535, got {self.p2p_port}")


def _positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _port(text, lowest=0):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not lowest <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range {lowest}-65535: {text!r}")
    return value


def _non_negative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _bits(low, high):
    """An argparse type: a whole number of bits from `low` to `high`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number of bits: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}-{high} bits: {text!r}")
        return value
    return parse


def server_parser():
    p = argparse.ArgumentParser(
        prog="greenchat-server",
        description="Run the greenchat server.")
    p.add_argument("port", type=_port, metavar="PORT", nargs="?", default=DEFAULT_PORT,
                   help="TCP port to listen on, 0 for any free one (default: %(default)s)")
    p.add_argument("block_duration", type=_positive_seconds, metavar="BLOCK_DURATION", nargs="?",
                   default=DEFAULT_BLOCK_DURATION,
                   help="seconds an account stays locked after 3 wrong passwords "
                        "(default: %(default)s)")
    p.add_argument("timeout", type=_positive_seconds, metavar="TIMEOUT", nargs="?",
                   default=DEFAULT_TIMEOUT,
                   help="seconds without a command before a user is logged out "
                        "(default: %(default)s)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    p.add_argument("--credentials", default="credentials.txt", metavar="FILE",
                   help="accounts file (default: ./%(default)s)")
    p.add_argument("--data", default="greenchat-data", metavar="DIR", dest="data_dir",
                   help="directory for the database, created if missing (default: ./%(default)s)")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--max-frame", type=_positive_int, default=DEFAULT_MAX_FRAME, metavar="BYTES",
                   help="largest frame a client may send (default: %(default)s)")
    p.add_argument("--mailbox-limit", type=_positive_int, default=10_000, metavar="N",
                   help="undelivered frames a client may fall behind by before it is "
                        "disconnected (default: %(default)s)")
    p.add_argument("--mailbox-limit-bytes", type=_positive_int, default=4 * 1024 * 1024,
                   metavar="BYTES",
                   help="undelivered bytes a client may fall behind by before it is "
                        "disconnected (default: %(default)s)")
    p.add_argument("--offline-limit", type=_positive_int, default=10_000, metavar="N",
                   help="messages stored for one offline user; a message past it is "
                        "refused (default: %(default)s)")
    p.add_argument("--offline-limit-bytes", type=_positive_int, default=16 * 1024 * 1024,
                   metavar="BYTES",
                   help="bytes of text stored for one offline user, likewise "
                        "(default: %(default)s)")
    p.add_argument("--login-timeout", type=_positive_seconds, default=120.0, metavar="SECONDS",
                   help="time a connection has to log in (default: %(default)s)")
    p.add_argument("--command-rate", type=_non_negative, default=20.0, metavar="PER_SECOND",
                   help="frames (commands, and the login's before them) a connection may send "
                        "per second after its burst; 0 for no limit (default: %(default)s)")
    p.add_argument("--command-burst", type=_positive_int, default=100, metavar="N",
                   help="frames a connection may send at once (default: %(default)s)")
    p.add_argument("--max-connections", type=_positive_int, default=20_000, metavar="N",
                   help="connections the server accepts at once (default: %(default)s)")
    p.add_argument("--max-per-address", type=_positive_int, default=200, metavar="N",
                   help="connections one network may hold (see --ipv4-prefix, --ipv6-prefix; "
                        "default: %(default)s)")
    p.add_argument("--ipv4-prefix", type=_bits(8, 32), default=24, metavar="BITS",
                   help="connections are counted for --max-per-address per network of this "
                        "many bits: IPv4 clients (default: %(default)s)")
    p.add_argument("--ipv6-prefix", type=_bits(16, 128), default=64, metavar="BITS",
                   help="the same for IPv6 clients; an IPv4-mapped IPv6 address counts as its "
                        "IPv4 address (default: %(default)s)")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="serve TLS with this certificate (PEM; greenchat-admin mkcert makes one)")
    p.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    p.add_argument("--version", action="version", version=f"greenchat-server {__version__}")
    return p


def _parse(parser, config_class, argv):
    """argv -> a validated config; any error is argparse's usage line, exit 2."""
    ns = parser.parse_args(argv)
    try:
        return config_class(**vars(ns))
    except ConfigError as exc:
        parser.error(str(exc))


def parse_server_args(argv):
    return _parse(server_parser(), ServerConfig, argv)


def client_parser():
    p = argparse.ArgumentParser(prog="greenchat-client",
                                description="Connect to a greenchat server.")
    p.add_argument("host", metavar="HOST", help="server address")
    p.add_argument("port", type=lambda t: _port(t, 1), metavar="PORT", help="server port")
    p.add_argument("--p2p-host", metavar="ADDR",
                   help="address to listen on for private links, 0.0.0.0 for all (default: "
                        "the address this client reaches the server from); peers are told the "
                        "address the server sees this client at, never this one")
    p.add_argument("--p2p-port", type=_port, default=0, metavar="PORT",
                   help="port to accept private links on (default: any free port)")
    p.add_argument("--user", metavar="NAME", help="log in as NAME (the password is still asked)")
    p.add_argument("--no-color", dest="color", action="store_false",
                   help="no colours on a terminal (so does a non-empty NO_COLOR variable)")
    p.add_argument("--no-history", dest="history", action="store_false",
                   help="do not keep typed lines in $XDG_DATA_HOME/greenchat/history "
                        "(default: ~/.local/share/greenchat/history)")
    p.add_argument("--tls", action="store_true",
                   help="connect with TLS, verifying the server's certificate; private links "
                        "use TLS too")
    p.add_argument("--ca", metavar="FILE",
                   help="trust the certificates in FILE (PEM) instead of the system's")
    p.add_argument("--insecure", action="store_true",
                   help="with --tls: do not verify the server's certificate")
    p.add_argument("--version", action="version", version=f"greenchat-client {__version__}")
    return p


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
