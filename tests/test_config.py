"""Unit tests of the validated configuration built from the command line."""

import pytest

from greenchat.config import ClientConfig, ServerConfig, parse_client_args, parse_server_args
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


def test_version_and_help_exit_0(capsys):
    for argv in (["--version"], ["--help"]):
        with pytest.raises(SystemExit) as info:
            parse_server_args(argv)
        assert info.value.code == 0
    assert "greenchat-server 1.0.0" in capsys.readouterr().out


def test_client_arguments(capsys):
    config = parse_client_args(["localhost", "4000", "--p2p-port", "5001"])
    assert (config.host, config.port, config.p2p_port, config.p2p_host) == \
        ("localhost", 4000, 5001, None)
    for argv in ([], ["h"], ["h", "0"], ["h", "port"], ["h", "1", "--p2p-port", "x"]):
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
