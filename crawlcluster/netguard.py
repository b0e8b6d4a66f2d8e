"""The address guard: which addresses a crawl may connect to, decided after name resolution.

A crawler that follows links lets the sites it crawls choose where it connects. A link, a
redirect or a page's script can name ``169.254.169.254`` (cloud metadata), a router at
``192.168.1.1``, a Redis on ``localhost:6379``, or a name of the crawled domain that
resolves to any of them. :class:`AddressPolicy` is the one answer to "may this connection
be made?": every component that connects for a crawl (the fetcher's transport, the
browser's proxy) resolves the name itself, asks :meth:`AddressPolicy.allowed_addresses`,
and connects only to the addresses it returns, so a name that resolves differently the
second time (DNS rebinding) cannot slip through between the check and the connection.

Refused by default: loopback, RFC 1918, link-local (cloud metadata), carrier-grade NAT,
unique-local and link-local IPv6, multicast, reserved and unspecified addresses, and IPv6
addresses that embed a refused IPv4 one (IPv4-mapped, NAT64, 6to4). Allowed through:
hosts the person crawling named (the hosts of their start URLs, added per project with
:meth:`AddressPolicy.trusting`), and what the cluster's ``CRAWLCLUSTER_PRIVATE_ALLOW`` or
the project's ``allow_private`` lists (names, ``name:port``, addresses or networks).
``CRAWLCLUSTER_HOST_MAP`` maps names to addresses ahead of DNS, as curl's ``--resolve``
does: for tests, and for names a cluster wants pinned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Protocol

__all__ = ["AddressPolicy", "AddressRefused", "refused_kind", "parse_allow_list", "parse_host_map",
           "is_network"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (network, what it is): the first match names the refusal
_REFUSED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), what) for net, what in (
        ("169.254.169.254/32", "the cloud metadata address"),
        ("0.0.0.0/8", "a 'this network' address"),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a carrier-grade NAT address (RFC 6598)"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.0.0.0/24", "an IETF protocol address"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a local NAT64 address"),
        ("100::/64", "a discard address"),
        ("fc00::/7", "a unique-local address"),  # fd00:ec2::254 is AWS's IPv6 metadata
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    ))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")


class GuardSettings(Protocol):
    """The settings the guard reads (:class:`crawlcluster.settings.Settings` has them; the
    settings module imports this one to check them, so it is not imported here)."""

    @property
    def ssrf_guard(self) -> bool: ...

    @property
    def private_allow(self) -> str: ...

    @property
    def host_map(self) -> str: ...


class AddressRefused(Exception):
    """A connection the guard refused: ``host`` resolves only to addresses it may not reach."""

    def __init__(self, host: str, port: int, address: str, why: str) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(
            f"{where} resolves to {address}, {why}, which crawlcluster does not connect to for a "
            "discovered URL (allow it with CRAWLCLUSTER_PRIVATE_ALLOW or the project's allow_private)")
        self.host = host
        self.port = port
        self.address = address
        self.why = why


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, v4-compatible), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64 or (address in _V4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return address.sixtofour
    return None


def refused_kind(address: str | IPAddress) -> str | None:
    """What kind of refused address ``address`` is (``"a loopback address"``...), or None when
    it is a public one a crawl may reach."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped IPv6 address"
        inner = _embedded_v4(ip)
        if inner is not None:
            kind = refused_kind(inner)
            return f"{kind} inside an IPv6 address" if kind else None
    for network, what in _REFUSED:
        if ip.version == network.version and ip in network:
            return what
    return None


def _host_key(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_allow_list(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"intranet.example, wiki:8080, 10.1.0.0/16"`` checked and normalised: names (with an
    optional port), addresses and networks. Raises ValueError naming a bad entry."""
    entries = [e.strip() for e in text.split(",")] if isinstance(text,
                                                                 str) else [str(e).strip() for e in text]
    out: list[str] = []
    for entry in filter(None, entries):
        try:
            out.append(str(ipaddress.ip_network(entry.strip("[]"), strict=False)))
            continue
        except ValueError:
            pass
        host, sep, port = entry.rpartition(":") if entry.count(":") == 1 or entry.startswith("[") else ("",
                                                                                                        "",
                                                                                                        "")
        if not sep:
            host, port = entry, ""
        if (port and not port.isdigit()) or not host or any(c in host for c in "/ @?#"):
            raise ValueError(f"{entry!r} is neither a host name, host:port, an address nor a network")
        out.append(f"{_host_key(host)}:{port}" if port else _host_key(host))
    return tuple(out)


def is_network(entry: str) -> bool:
    """Whether a :func:`parse_allow_list` entry is an address or network (not a host name)."""
    try:
        ipaddress.ip_network(entry)
    except ValueError:
        return False
    return True


def parse_host_map(text: str) -> tuple[tuple[str, str], ...]:
    """``"shop.test=127.0.0.2, api.test=::1"`` -> pairs of (name, address), checked."""
    pairs = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        name, sep, address = entry.partition("=")
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            ip = None
        if not sep or not name.strip() or ip is None:
            raise ValueError(f"{entry!r} is not name=address (such as shop.test=127.0.0.2)")
        pairs.append((_host_key(name), str(ip)))
    return tuple(pairs)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses a crawl may connect to; see the module's docstring."""

    enabled: bool = True
    allow: tuple[str, ...] = ()  # parse_allow_list entries: names, name:port, networks
    host_map: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, s: GuardSettings) -> AddressPolicy:
        return cls(enabled=s.ssrf_guard, allow=parse_allow_list(s.private_allow),
                   host_map=dict(parse_host_map(s.host_map)))

    def trusting(self, entries: Iterable[str]) -> AddressPolicy:
        """This policy with ``entries`` (a project's start hosts and ``allow_private``) allowed too."""
        extra = tuple(e for e in parse_allow_list(entries) if e not in self.allow)
        return replace(self, allow=self.allow + extra) if extra else self

    def host_allowed(self, host: str, port: int) -> bool:
        """Whether ``host`` (and ``port``) is named by the allow-list, whatever it resolves to."""
        key = _host_key(host)
        return key in self.allow or f"{key}:{port}" in self.allow

    def address_allowed(self, address: str) -> bool:
        """Whether ``address`` may be reached: public, or inside an allowed network."""
        ip = ipaddress.ip_address(address)
        if refused_kind(ip) is None:
            return True
        for entry in self.allow:
            try:
                network = ipaddress.ip_network(entry)
            except ValueError:
                continue
            if ip.version == network.version and ip in network:
                return True
        return False

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to: the host map first, then the system resolver.
        Raises :class:`socket.gaierror` as the resolver does for a name that does not resolve."""
        key = _host_key(host)
        try:
            return [str(ipaddress.ip_address(key))]
        except ValueError:
            pass
        mapped = self.host_map.get(key)
        if mapped is not None:
            return [mapped]
        infos = await asyncio.get_running_loop().getaddrinfo(key, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def allowed_addresses(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` a connection may use, resolved once; raises
        :class:`AddressRefused` when none is allowed, before any connection is tried."""
        addresses = await self.resolve(host, port)
        if not self.enabled or self.host_allowed(host, port):
            return addresses
        allowed = [a for a in addresses if self.address_allowed(a)]
        if not allowed and addresses:
            first = addresses[0]
            raise AddressRefused(host, port, first, refused_kind(first) or "a refused address")
        return allowed
