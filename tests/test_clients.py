"""The client's address: X-Forwarded-For read from the right, only through trusted proxies."""

import pytest
from django.test import RequestFactory

from nudged.core.clients import client_address

PROXIES = ["10.0.0.0/8", "2001:db8:ffff::/48"]


def address(remote: str, forwarded: str | None = None) -> str:
    headers = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
    return client_address(RequestFactory().get("/", REMOTE_ADDR=remote, **headers))


@pytest.mark.parametrize(
    ("remote", "forwarded", "client"),
    [
        # The peer is not a trusted proxy: whatever it writes is ignored.
        ("198.51.100.7", "203.0.113.1", "198.51.100.7"),
        # One trusted proxy: the address it appended.
        ("10.0.0.5", "203.0.113.1", "203.0.113.1"),
        # What the client wrote itself lies left of that, and is never read.
        ("10.0.0.5", "192.0.2.1, 203.0.113.1", "203.0.113.1"),
        # Two trusted proxies: walked past both.
        ("10.0.0.5", "192.0.2.1, 203.0.113.1, 10.9.9.9", "203.0.113.1"),
        # Every hop trusted: the furthest one is the client.
        ("10.0.0.5", "10.1.1.1", "10.1.1.1"),
        # No header, or an entry that is not an address: the last trusted hop.
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "", "10.0.0.5"),
        ("10.0.0.5", "203.0.113.1, unknown", "10.0.0.5"),
        ("10.0.0.5", "203.0.113.1, 10.1.1.1, [::1", "10.0.0.5"),
        ("10.0.0.5", "203.0.113.1, 10.1.1.1, x" * 1000, "10.0.0.5"),
        # Ports that proxies may add, and IPv4 clients seen through a dual-stack socket.
        ("10.0.0.5", "203.0.113.1:4711", "203.0.113.1"),
        ("10.0.0.5", "[2001:db8:1:2::7]:443", "2001:db8:1:2::"),
        ("::ffff:198.51.100.7", "203.0.113.1", "198.51.100.7"),
        ("10.0.0.5", "::ffff:203.0.113.1", "203.0.113.1"),
        # IPv6: grouped by /64, as trusted proxies too.
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", None, "2001:db8:1:2::"),
        ("2001:db8:ffff:1::1", "2001:db8:5:6::9", "2001:db8:5:6::"),
        # Not an address at all (a unix socket's peer).
        ("", "203.0.113.1", ""),
    ],
)
def test_the_client_is_the_first_address_from_the_right_that_is_not_a_trusted_proxy(
    settings, remote, forwarded, client
):
    settings.TRUSTED_PROXIES = PROXIES

    assert address(remote, forwarded) == client


def test_without_trusted_proxies_the_header_is_ignored(settings):
    settings.TRUSTED_PROXIES = []

    assert address("127.0.0.1", "203.0.113.1") == "127.0.0.1"
