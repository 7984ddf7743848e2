"""Client addresses as the server counts and passes them on. No I/O.

Strategy
- One address, one spelling: `canonical` writes an address the way
  `ipaddress` prints it, and an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
  what a dual-stack listener sees for an IPv4 client) as its IPv4 address.
- Limits count networks, not addresses: whoever holds one address usually
  holds its neighbours too (a /24 of IPv4, a /64 of IPv6 is one site), so
  `network_key` names the network of `v4_prefix` or `v6_prefix` bits an
  address belongs to. A mapped address is counted in its IPv4 network, not
  in `::/64` with every other IPv4 client.
- A string that is no IP address (a Unix socket's path, a test's name) is
  returned unchanged by both: it is its own network.
"""

import ipaddress


def _parse(host):
    """The address `host` names, IPv4-mapped ones as IPv4; None if it names none."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def canonical(host):
    """`host` as `ipaddress` prints it, `::ffff:a.b.c.d` as `a.b.c.d`;
    a string that is no IP address unchanged."""
    address = _parse(host)
    return host if address is None else str(address)


def network_key(host, v4_prefix, v6_prefix):
    """The network of `v4_prefix` (IPv4) or `v6_prefix` (IPv6) bits that
    `host` belongs to, as a string such as "192.0.2.0/24"; a string that is
    no IP address unchanged."""
    address = _parse(host)
    if address is None:
        return host
    prefix = v4_prefix if address.version == 4 else v6_prefix
    # The scope of a link-local address (fe80::1%eth0) is not part of its network.
    return str(ipaddress.ip_network((address, prefix), strict=False))
