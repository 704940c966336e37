"""Who is asking: the client's address, with X-Forwarded-For read only through trusted proxies.

Every limit keyed by address (order rate, purchase ceiling per address, admin login lockouts)
names the client here, so one rule decides what a client can claim about itself.
"""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# One IPv6 customer holds a whole /64 (a home, a phone): each of its addresses is the same one.
IPV6_GROUP_PREFIX = 64


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or X-Forwarded-For as far as trusted proxies wrote it.

    The header is walked from the right: each trusted proxy appended the address it received
    the request from, so while the hop is a trusted proxy the entry to its left is believed,
    and the first address that is not a trusted proxy is the client. Whatever a client writes
    into the header itself lies further left and is never read. An entry that is not an address
    ends the walk at the last trusted hop. IPv6 addresses come back as their /64 network's
    address. "" when REMOTE_ADDR is not an address at all.
    """
    peer = _parse(request.META.get("REMOTE_ADDR", ""))
    if peer is None:
        return ""
    networks = trusted_networks(tuple(settings.TRUSTED_PROXIES))
    if networks and _trusted(peer, networks):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        for entry in reversed(forwarded.split(",")):
            hop = _parse(entry)
            if hop is None:
                break
            peer = hop
            if not _trusted(hop, networks):
                break
    return _grouped(peer)


@lru_cache(maxsize=8)
def trusted_networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    """TRUSTED_PROXIES as networks (the settings check each entry when they load)."""
    return tuple(ipaddress.ip_network(proxy) for proxy in proxies)


def _trusted(address: IPAddress, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks)


def _parse(value: str) -> IPAddress | None:
    """An address from REMOTE_ADDR or one X-Forwarded-For entry; None if it is not one.

    Proxies may add a port (`198.51.100.7:4711`, `[2001:db8::1]:443`); an IPv4 address mapped
    into IPv6 (`::ffff:198.51.100.7`, from a dual-stack socket) is the IPv4 client it carries.
    """
    value = value.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _grouped(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    return str(ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False).network_address)
