"""Where webhooks may connect: public addresses, and the networks the operator allows
(TRIPMAIL_WEBHOOK_ALLOW_NETWORKS).

A webhook URL is the customer's, so without this a workspace could have Tripmail's workers post to 127.0.0.1, the
private network or the cloud's metadata service (169.254.169.254). The guard runs when connecting: the host is
resolved once, each address is checked, and the connection goes to an address that passed, so a name that resolves
to a public address first and to a private one a moment later (DNS rebinding) gains nothing. Only the TCP connect
changes: httpcore does TLS on the stream it gets back with the URL's host name, so SNI and the certificate check
stay on that name, and the Host header stays the URL's.
"""

import socket
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

import httpcore
import httpx
from pydantic import HttpUrl, TypeAdapter, ValidationError

from tripmail.errors import InvalidRequest

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

ALLOW_SETTING = "TRIPMAIL_WEBHOOK_ALLOW_NETWORKS"

_PRIVATE = tuple(ip_network(net) for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))
# RFC 6598: carrier-grade NAT, inside the provider's network.
_SHARED = ip_network("100.64.0.0/10")


def parse_networks(value: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, fd00::/8` as networks (an address alone is a network of one); ValueError names a part that is
    not a network."""
    networks = []
    for part in value.replace(",", " ").split():
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{ALLOW_SETTING}: {part!r} is not a network such as 10.0.0.0/8 or fd00::/8") from exc
    return tuple(networks)


def non_public(address: Address) -> str | None:
    """What kind of address this is when it is not a public one (loopback, private, ...); None for a public one."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if any(address in network for network in _PRIVATE):
        return "private"
    if address in _SHARED:
        return "shared (carrier-grade NAT)"
    if isinstance(address, IPv6Address) and address.is_site_local:
        return "site-local"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "special-purpose"
    return None


def refusal(address: Address, allowed: Sequence[Network], *, host: str | None = None) -> str | None:
    """Why a webhook may not connect to `address` (which `host` resolved to); None when it may: the address is
    public, or in an allowed network."""
    unwrapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
    if any(address in network or (unwrapped is not None and unwrapped in network) for network in allowed):
        return None
    kind = non_public(address)
    if kind is None:
        return None
    of = f" of {host}" if host is not None and host != str(address) else ""
    return f"webhook address {address}{of} is not public ({kind}); see {ALLOW_SETTING}"


class NonPublicAddress(httpx.ConnectError):
    """A webhook's host is, or resolves only to, addresses it may not connect to: retrying will not help."""


class PublicOnlyBackend(httpcore.NetworkBackend):
    """httpcore's network backend with the resolution done here: connects only to addresses `refusal` lets by."""

    def __init__(self, allowed: Sequence[Network], inner: httpcore.NetworkBackend | None = None) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        resolved = _resolve(host, port)
        addresses = [address for address in resolved if refusal(address, self._allowed) is None]
        if not addresses:
            raise NonPublicAddress(str(refusal(resolved[0], self._allowed, host=host)))
        # As socket.create_connection does: each address in the resolver's order until one answers.
        *others, last = addresses
        for address in others:
            try:
                return self._inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                continue
        return self._inner.connect_tcp(str(last), port, timeout, local_address, socket_options)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _resolve(host: str, port: int) -> list[Address]:
    """The host's addresses in the resolver's order, without repeats; an address stays itself."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    addresses: list[Address] = []
    for *_, sockaddr in found:
        address = ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


# httpx's defaults.
_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


class PublicOnlyTransport(httpx.HTTPTransport):
    """httpx's transport on a connection pool that connects through PublicOnlyBackend."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        super().__init__(limits=_LIMITS)
        # httpx takes no network backend (yet), but the httpcore pool it wraps does: the pool it builds when there
        # is no proxy, with the backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=_LIMITS.max_connections,
            max_keepalive_connections=_LIMITS.max_keepalive_connections,
            keepalive_expiry=_LIMITS.keepalive_expiry,
            network_backend=PublicOnlyBackend(allowed),
        )


def webhook_client(allowed: Sequence[Network]) -> httpx.Client:
    """The client webhooks are posted with: public addresses and `allowed` networks only, no redirects (a public
    receiver could send it on to a private one), and no proxy from the environment (which would connect for it)."""
    return httpx.Client(transport=PublicOnlyTransport(allowed), follow_redirects=False, trust_env=False)


_URL = TypeAdapter(HttpUrl)


def check_webhook_url(url: str, allowed: Sequence[Network], *, field: str = "url") -> None:
    """InvalidRequest when the URL's host is an IP address a webhook may not connect to.

    An early answer for the obvious case; a host name is checked only when connecting, where the guard is.
    """
    try:
        host = _URL.validate_python(url.strip()).host
    except ValidationError:
        return  # not a URL at all: the URL's own validation says so
    try:
        address = ip_address((host or "").strip("[]"))
    except ValueError:
        return
    reason = refusal(address, allowed)
    if reason is not None:
        raise InvalidRequest(
            f"{url!r} points at {address}, which is not public ({non_public(address)}); webhooks go to public "
            f"addresses only, or to networks the operator allows in {ALLOW_SETTING}",
            field=field,
        )
