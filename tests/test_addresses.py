"""Unit tests of greenchat.addresses: the canonical form of an address and
the network it is counted in."""

import pytest

from greenchat.server.addresses import canonical, network_key


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "127.0.0.1"),
    ("::ffff:127.0.0.2", "127.0.0.2"),
    ("::FFFF:7f00:2", "127.0.0.2"),
    ("0:0:0:0:0:ffff:10.1.2.3", "10.1.2.3"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("::1", "::1"),
    ("::", "::"),
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("localhost", "localhost"),
    ("", ""),
    ("999.1.1.1", "999.1.1.1"),
])
def test_canonical(host, expected):
    assert canonical(host) == expected


def test_network_key_ipv4():
    assert network_key("127.0.0.2", 24, 64) == network_key("127.0.0.3", 24, 64) == "127.0.0.0/24"
    assert network_key("127.0.1.1", 24, 64) == "127.0.1.0/24"
    assert network_key("10.20.30.40", 8, 64) == "10.0.0.0/8"
    assert network_key("127.0.0.2", 32, 64) == "127.0.0.2/32"
    assert network_key("127.0.0.2", 32, 64) != network_key("127.0.0.3", 32, 64)


def test_network_key_ipv6():
    assert network_key("2001:db8:1:2:aaaa::1", 24, 64) == "2001:db8:1:2::/64"
    assert network_key("2001:db8:1:2:bbbb::9", 24, 64) == "2001:db8:1:2::/64"
    assert network_key("2001:db8:1:3::1", 24, 64) == "2001:db8:1:3::/64"
    assert network_key("2001:db8:1:3::1", 24, 48) == "2001:db8:1::/48"
    assert network_key("fe80::1%eth0", 24, 64) == "fe80::/64"
    assert network_key("::1", 24, 128) == "::1/128"


def test_an_ipv4_mapped_address_counts_as_its_ipv4_address():
    # Not in ::/64 with every other IPv4 client of a dual-stack listener.
    assert network_key("::ffff:127.0.0.2", 24, 64) == network_key("127.0.0.3", 24, 64)
    assert network_key("::ffff:10.9.8.7", 16, 64) == "10.9.0.0/16"
    assert network_key("::ffff:127.0.0.2", 24, 64) != network_key("::ffff:127.0.1.2", 24, 64)


def test_a_name_is_its_own_network():
    assert network_key("localhost", 24, 64) == "localhost"
    assert network_key("", 24, 64) == ""
