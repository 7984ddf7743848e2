"""Unit tests of the validated configuration built from the command line."""

import dataclasses
import os
import subprocess
import sys

import pytest

from greenchat import __version__
from greenchat.config import (
    ClientConfig,
    ServerConfig,
    client_parser,
    parse_client_args,
    parse_server_args,
    server_parser,
)
from greenchat.errors import ConfigError


def test_server_positionals_and_defaults():
    config = parse_server_args(["5000", "10", "30"])
    assert (config.port, config.block_duration, config.timeout) == (5000, 10.0, 30.0)
    assert config.credentials == "credentials.txt" and config.data_dir == "greenchat-data"
    assert config.database.endswith("greenchat.sqlite3")
    bare = parse_server_args([])
    assert (bare.port, bare.block_duration, bare.timeout) == (4000, 60.0, 600.0)


def test_server_options():
    config = parse_server_args(["0", "1", "2", "--host", "127.0.0.1", "--credentials", "c",
                                "--data", "d", "--log-level", "debug", "--max-frame", "2048",
                                "--mailbox-limit", "5", "--mailbox-limit-bytes", "9000",
                                "--login-timeout", "3"])
    assert (config.host, config.credentials, config.data_dir, config.log_level,
            config.max_frame, config.mailbox_limit, config.mailbox_limit_bytes,
            config.login_timeout) == ("127.0.0.1", "c", "d", "debug", 2048, 5, 9000, 3.0)
    assert parse_server_args([]).mailbox_limit_bytes == 4 * 1024 * 1024


@pytest.mark.parametrize("argv", [
    ["x"], ["70000"], ["-1"], ["1", "0"], ["1", "-3"], ["1", "1", "nan"], ["1", "1", "inf"],
    ["1", "1", "1", "extra"], ["--nope"], ["1", "1", "1", "--log-level", "loud"],
    ["1", "1", "1", "--max-frame", "10"], ["1", "1", "1", "--mailbox-limit", "0"],
    ["1", "1", "1", "--mailbox-limit-bytes", "0"],
])
def test_bad_server_arguments_print_usage_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_server_args(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: greenchat-server")


def test_help_states_the_lockout_rule_the_server_applies(capsys):
    with pytest.raises(SystemExit):
        parse_server_args(["--help"])
    assert parse_server_args([]).failed_logins == 3
    assert "after 3 wrong passwords in a row" in " ".join(capsys.readouterr().out.split())


def test_version_and_help_exit_0(capsys):
    for argv in (["--version"], ["--help"]):
        with pytest.raises(SystemExit) as info:
            parse_server_args(argv)
        assert info.value.code == 0
    assert "greenchat-server 1.0.0" in capsys.readouterr().out


def test_setup_takes_the_version_from_the_package():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "setup.py", "--version"], cwd=root, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    assert out.split()[-1] == __version__


def test_client_arguments(capsys):
    config = parse_client_args(["localhost", "4000", "--p2p-port", "5001"])
    assert (config.host, config.port, config.p2p_port, config.p2p_host) == \
        ("localhost", 4000, 5001, None)
    for argv in (["h", "0"], ["h", "port"], ["h", "1", "--p2p-port", "x"]):
        with pytest.raises(SystemExit) as info:
            parse_client_args(argv)
        assert info.value.code == 2
    assert "usage: greenchat-client" in capsys.readouterr().err


def test_dataclasses_validate_directly():
    with pytest.raises(ConfigError):
        ServerConfig(port=99999, block_duration=1, timeout=1)
    with pytest.raises(ConfigError):
        ServerConfig(port=1, block_duration=0, timeout=1)
    with pytest.raises(ConfigError):
        ServerConfig(port=1, block_duration=1, timeout=1, log_level="chatty")
    with pytest.raises(ConfigError):
        ClientConfig(host="h", port=0)


def test_client_user_and_colour_switches():
    assert parse_client_args(["h", "1"], environ={}).color is True
    assert parse_client_args(["h", "1", "--no-color"], environ={}).color is False
    assert parse_client_args(["h", "1"], environ={"NO_COLOR": "1"}).color is False
    assert parse_client_args(["h", "1"], environ={"NO_COLOR": ""}).color is True
    assert parse_client_args(["h", "1", "--user", "hans"], environ={}).user == "hans"


def test_tls_options_go_together():
    config = parse_server_args(["--tls-cert", "c.pem", "--tls-key", "k.pem"])
    assert (config.tls_cert, config.tls_key) == ("c.pem", "k.pem")
    with pytest.raises(ConfigError):
        ServerConfig(port=0, block_duration=1, timeout=1, tls_cert="c.pem")
    client = parse_client_args(["h", "1", "--tls", "--ca", "c.pem"])
    assert client.tls and client.ca == "c.pem" and not client.insecure
    for bad in ({"ca": "c.pem"}, {"insecure": True}, {"tls": True, "ca": "c", "insecure": True}):
        with pytest.raises(ConfigError):
            ClientConfig(host="h", port=1, **bad)
    with pytest.raises(SystemExit):
        parse_client_args(["h", "1", "--insecure"])


def test_client_history_switch():
    assert parse_client_args(["h", "1"]).history is True
    assert parse_client_args(["h", "1", "--no-history"]).history is False


def test_client_reconnects_for_five_minutes_unless_told_not_to():
    config = parse_client_args(["h", "1"])
    assert (config.reconnect, config.reconnect_for) == (True, 300.0)
    config = parse_client_args(["h", "1", "--no-reconnect", "--reconnect-for", "2"])
    assert (config.reconnect, config.reconnect_for) == (False, 2.0)


def test_network_prefixes_of_the_per_address_limit():
    config = parse_server_args([])
    assert (config.ipv4_prefix, config.ipv6_prefix) == (24, 64)
    config = parse_server_args(["--ipv4-prefix", "32", "--ipv6-prefix", "48"])
    assert (config.ipv4_prefix, config.ipv6_prefix) == (32, 48)
    assert parse_server_args(["--ipv4-prefix", "8", "--ipv6-prefix", "128"]).ipv6_prefix == 128
    for bad in ({"ipv4_prefix": 7}, {"ipv4_prefix": 33}, {"ipv6_prefix": 15},
                {"ipv6_prefix": 129}):
        with pytest.raises(ConfigError):
            ServerConfig(port=0, block_duration=1, timeout=1, **bad)


@pytest.mark.parametrize("argv", [
    ["--ipv4-prefix", "7"], ["--ipv4-prefix", "33"], ["--ipv4-prefix", "x"],
    ["--ipv6-prefix", "15"], ["--ipv6-prefix", "129"], ["--ipv6-prefix", "64.5"],
])
def test_bad_network_prefixes_print_usage_and_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_server_args(argv)
    assert info.value.code == 2
    assert "usage: greenchat-server" in capsys.readouterr().err


# Every argument of greenchat-server: argv giving it a value other than its
# default, the field it sets and that value.
SERVER_ARGUMENTS = [
    (["7000"], "port", 7000),
    (["1", "5"], "block_duration", 5.0),
    (["1", "1", "9"], "timeout", 9.0),
    (["--host", "127.0.0.1"], "host", "127.0.0.1"),
    (["--credentials", "c.txt"], "credentials", "c.txt"),
    (["--data", "d"], "data_dir", "d"),
    (["--log-level", "debug"], "log_level", "debug"),
    (["--max-frame", "2048"], "max_frame", 2048),
    (["--mailbox-limit", "5"], "mailbox_limit", 5),
    (["--mailbox-limit-bytes", "9000"], "mailbox_limit_bytes", 9000),
    (["--offline-limit", "6"], "offline_limit", 6),
    (["--offline-limit-bytes", "7000"], "offline_limit_bytes", 7000),
    (["--login-timeout", "3.5"], "login_timeout", 3.5),
    (["--retention", "1.5"], "retention", 1.5),
    (["--resume-window", "0"], "resume_window", 0.0),
    (["--command-rate", "0"], "command_rate", 0.0),
    (["--command-burst", "7"], "command_burst", 7),
    (["--max-connections", "8"], "max_connections", 8),
    (["--max-per-address", "9"], "max_per_address", 9),
    (["--ipv4-prefix", "16"], "ipv4_prefix", 16),
    (["--ipv6-prefix", "48"], "ipv6_prefix", 48),
    (["--tls-cert", "c.pem", "--tls-key", "k.pem"], "tls_cert", "c.pem"),
    (["--tls-key", "k.pem", "--tls-cert", "c.pem"], "tls_key", "k.pem"),
    (["--http-port", "9090"], "http_port", 9090),
    (["--no-http"], "http_port", None),
    (["--http-origin", "https://chat.example.org", "--http-origin", "http://10.0.0.1:8080"],
     "http_origins", ("https://chat.example.org", "http://10.0.0.1:8080")),
]

CLIENT_ARGUMENTS = [
    (["h", "1"], "host", "h"),
    (["h", "4001"], "port", 4001),
    (["h", "1", "--p2p-host", "0.0.0.0"], "p2p_host", "0.0.0.0"),
    (["h", "1", "--p2p-port", "5001"], "p2p_port", 5001),
    (["h", "1", "--user", "hans"], "user", "hans"),
    (["h", "1", "--no-color"], "color", False),
    (["h", "1", "--no-history"], "history", False),
    (["h", "1", "--tls"], "tls", True),
    (["h", "1", "--tls", "--ca", "c.pem"], "ca", "c.pem"),
    (["h", "1", "--tls", "--insecure"], "insecure", True),
    (["h", "1", "--reconnect-for", "1.5"], "reconnect_for", 1.5),
    (["h", "1", "--no-reconnect"], "reconnect", False),
]


def _dests(parser):
    """The fields the arguments of `parser` set (not --help, --version)."""
    return {action.dest for action in parser._actions} - {"help", "version"}


@pytest.mark.parametrize("argv, name, value", SERVER_ARGUMENTS)
def test_each_server_argument_sets_its_field(argv, name, value):
    got = getattr(parse_server_args(argv), name)
    assert got == value and type(got) is type(value)
    assert value != getattr(parse_server_args([]), name)


@pytest.mark.parametrize("argv, name, value", CLIENT_ARGUMENTS)
def test_each_client_argument_sets_its_field(argv, name, value):
    got = getattr(parse_client_args(argv, environ={}), name)
    assert got == value and type(got) is type(value)


def test_the_tables_above_name_every_argument():
    assert _dests(server_parser()) == {name for _, name, _ in SERVER_ARGUMENTS}
    assert _dests(client_parser()) == {name for _, name, _ in CLIENT_ARGUMENTS}
    # No flag, but validated fields with their defaults.
    bare = parse_server_args([])
    assert (bare.failed_logins, bare.backlog) == (3, 1024)


@pytest.mark.parametrize("parser, config_class", [(server_parser(), ServerConfig),
                                                  (client_parser(), ClientConfig)])
def test_parser_defaults_are_the_dataclass_defaults(parser, config_class):
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    for action in parser._actions:
        if action.dest in ("help", "version") or action.dest in PROGRAM_ONLY_DEFAULTS:
            continue
        if action.required:
            assert defaults[action.dest] is dataclasses.MISSING, action.dest
        else:
            assert action.default == defaults[action.dest], action.dest
            assert type(action.default) is type(defaults[action.dest]), action.dest


# The server program's defaults that a config built in code does not share:
# the web client listens on 8080 for greenchat-server only.
PROGRAM_ONLY_DEFAULTS = {"http_port": 8080, "http_origins": None}


def test_program_only_defaults_are_the_parsers():
    parsed = vars(server_parser().parse_args([]))
    for name, default in PROGRAM_ONLY_DEFAULTS.items():
        assert parsed[name] == default
        assert getattr(ServerConfig(), name) != default


def test_no_arguments_give_the_dataclass_defaults():
    assert parse_server_args([]) == ServerConfig(http_port=8080)
    assert parse_client_args(["h", "1"], environ={}) == ClientConfig(host="h", port=1)


# Every argument with a range or choices: the argv before its value, and
# values outside them.
BAD_SERVER_VALUES = [
    ("port", [], ["x", "-1", "65536", "1.5"]),
    ("block_duration", ["1"], ["0", "-3", "nan", "inf", "x"]),
    ("timeout", ["1", "1"], ["0", "-1", "nan", "inf", "x"]),
    ("log_level", ["--log-level"], ["loud", "INFO"]),
    ("max_frame", ["--max-frame"], ["1023", "0", "x"]),
    ("mailbox_limit", ["--mailbox-limit"], ["0", "-1", "1.5"]),
    ("mailbox_limit_bytes", ["--mailbox-limit-bytes"], ["0", "x"]),
    ("offline_limit", ["--offline-limit"], ["0", "x"]),
    ("offline_limit_bytes", ["--offline-limit-bytes"], ["0", "x"]),
    ("login_timeout", ["--login-timeout"], ["0", "-1", "inf", "x"]),
    ("retention", ["--retention"], ["0", "0.5", "-1", "nan", "x"]),
    ("resume_window", ["--resume-window"], ["-1", "nan", "x"]),
    ("command_rate", ["--command-rate"], ["-1", "-0.5", "inf", "nan", "x"]),
    ("command_burst", ["--command-burst"], ["0", "x"]),
    ("max_connections", ["--max-connections"], ["0", "x"]),
    ("max_per_address", ["--max-per-address"], ["0", "x"]),
    ("ipv4_prefix", ["--ipv4-prefix"], ["7", "33", "x"]),
    ("ipv6_prefix", ["--ipv6-prefix"], ["15", "129", "64.5"]),
    ("http_port", ["--http-port"], ["-1", "65536", "x", "80.5"]),
]
BAD_CLIENT_VALUES = [
    ("port", ["h"], ["0", "65536", "x"]),
    ("p2p_port", ["h", "1", "--p2p-port"], ["-1", "65536", "x"]),
    ("reconnect_for", ["h", "1", "--reconnect-for"], ["0", "-1", "nan", "inf", "x"]),
]


def _ranged(parser):
    return {action.dest for action in parser._actions if action.type or action.choices}


def test_the_bad_values_cover_every_ranged_argument():
    assert _ranged(server_parser()) == {name for name, _, _ in BAD_SERVER_VALUES}
    assert _ranged(client_parser()) == {name for name, _, _ in BAD_CLIENT_VALUES}


@pytest.mark.parametrize("program, parse, argv", [
    *(("greenchat-server", parse_server_args, [*before, bad])
      for _, before, values in BAD_SERVER_VALUES for bad in values),
    *(("greenchat-client", parse_client_args, [*before, bad])
      for _, before, values in BAD_CLIENT_VALUES for bad in values),
])
def test_bad_values_of_every_ranged_argument_exit_2_with_usage(program, parse, argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {program}")
    assert repr(argv[-1]) in err.splitlines()[-1]


@pytest.mark.parametrize("name, value", [
    ("port", -1), ("port", 65536), ("block_duration", 0), ("timeout", -1.0),
    ("log_level", "loud"), ("max_frame", 1023), ("mailbox_limit", 0),
    ("mailbox_limit_bytes", 0), ("offline_limit", 0), ("offline_limit_bytes", 0),
    ("login_timeout", 0), ("retention", 0.9), ("resume_window", -1),
    ("ping_after", 0), ("ping_wait", 0), ("failed_logins", 0), ("backlog", 0),
    ("command_rate", -0.5),
    ("command_burst", 0), ("max_connections", 0), ("max_per_address", 0),
    ("ipv4_prefix", 33), ("ipv6_prefix", 15),
])
def test_server_config_checks_every_range_itself(name, value):
    with pytest.raises(ConfigError, match=f"^{name} must be .*, got {value!r}$"):
        ServerConfig(**{"port": 0, "block_duration": 1, "timeout": 1, name: value})


def test_client_config_checks_its_ranges_itself():
    for bad in ({"port": 0}, {"port": 65536}, {"p2p_port": -1}, {"p2p_port": 65536},
                {"reconnect_for": 0}, {"reconnect_for": -1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            ClientConfig(**{"host": "h", "port": 1, **bad})


def test_the_client_defaults_to_a_local_server_on_port_4000():
    config = parse_client_args([], environ={})
    assert (config.host, config.port) == ("127.0.0.1", 4000)
    assert (parse_client_args(["chat.example"], environ={}).host,
            parse_client_args(["chat.example"], environ={}).port) == ("chat.example", 4000)


def test_the_web_client_is_on_for_the_program_and_off_for_a_config_built_in_code():
    assert parse_server_args([]).http_port == 8080
    assert parse_server_args([]).http_origins == ()
    # Tests and benchmarks build their servers from the dataclass: no HTTP
    # listener unless asked for, so many can run side by side.
    assert ServerConfig().http_port is None


@pytest.mark.parametrize("origin", ["chat.example.org", "ftp://x", "https://", "null"])
def test_an_origin_that_names_no_site_is_refused(origin, capsys):
    with pytest.raises(SystemExit) as exc:
        parse_server_args(["--http-origin", origin])
    assert exc.value.code == 2
    assert "--http-origin must be like https://host[:port]" in capsys.readouterr().err
