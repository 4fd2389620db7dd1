"""The client's address, behind trusted reverse proxies or not.

``X-Forwarded-For`` is whatever the sender wrote, so it is read only when the connection comes
from one of ``trusted_proxies`` (addresses or CIDR networks, a setting), and then from the right:
each trusted proxy appends the address it saw, so the rightmost hop that is *not* one of ours is
the first one we can vouch for; everything left of it may be forged. Without trusted proxies every
client behind a proxy shares the proxy's address (and its failure budget).

>>> nets = parse_networks(["10.0.0.0/8", "192.0.2.1"])
>>> client_address("10.1.2.3", ["203.0.113.9, 198.51.100.7, 10.0.0.7"], nets)
'198.51.100.7'
>>> client_address("198.51.100.7", ["1.2.3.4"], nets)  # not from a proxy of ours: ignored
'198.51.100.7'
>>> client_address("192.0.2.1", ["10.0.0.9", "10.0.0.8"], nets)  # proxies all the way: the leftmost
'10.0.0.9'
>>> client_address("10.1.2.3", ["evil, 198.51.100.7"], nets), client_address("10.1.2.3", ["10.0.0.5, junk"], nets)
('198.51.100.7', '10.1.2.3')
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "::1"]`` -> networks; raises ValueError naming a bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _address(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def client_address(peer: str | None, forwarded_for: Sequence[str], networks: Sequence[Network]) -> str:
    """The address to hold responsible for a request (see the module's docstring)."""
    if peer is None:
        return "unknown"
    current = _address(peer)
    if current is None or not networks or not _trusted(current, networks):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage written by our own proxy's client side: stop at the last hop we trust
        current = address
        if not _trusted(address, networks):
            break
    return str(current)
