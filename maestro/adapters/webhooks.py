"""Outgoing HTTP callbacks: signed as Standard Webhooks sign them, sent only where allowed.

Signing: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256
over "{id}.{timestamp}.{body}">`` with the endpoint's ``whsec_<base64>`` secret, by the
specification's own Python library (``standardwebhooks``).

Server-side request forgery: a callback URL is typed by a user, and Maestro runs inside a
network. A destination whose address is not globally routable (loopback, private, link-local,
carrier-grade NAT, multicast, reserved, unspecified) is refused unless it lies in an allowed
network (``callback_allowed_networks``). It is checked twice: when the URL is saved, and when the
request is made — a name may resolve elsewhere by then — by a resolver that resolves, checks and
hands aiohttp only the checked addresses, so the connection goes to exactly what was checked (no
window between a check and a second lookup). IP literals skip aiohttp's resolver, so they are
checked before the request; so are the IPv4 addresses inside IPv6 ones (NAT64, 6to4, Teredo,
IPv4-mapped and -compatible), and numeric hosts that are not canonical IPv4 (``2130706433``,
``127.1``) are refused outright. Redirects are not followed and proxies from the environment are not
used: either would send the request somewhere unchecked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import ipaddress
import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook

from maestro.errors import ValidationFailed

# At most this much of a receiver's answer is read (its body is not used).
MAX_ANSWER_BYTES = 64 * 1024
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackUrlRefused(ValidationFailed):
    """This callback URL may not be used."""

    code = "callback_url_refused"


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the last 32 bits
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215: a site's own translators
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated, yet some stacks still route it


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: a NAT64 gateway (DNS64 on IPv6-only clusters
    reaches the private IPv4 network behind it), 6to4, Teredo, IPv4-mapped and -compatible forms."""
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # (server, client): both are reached
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # :: and ::1 are themselves
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return []


def address_problem(address: str, allowed: Sequence[Network]) -> str | None:
    """Why a request may not go to ``address``, or None when it may."""
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if any(ip in network for network in allowed):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return f"{ip} goes through a local NAT64 translator (64:ff9b:1::/48), not in callback_allowed_networks"
        inner = _embedded_ipv4(ip)
        if inner:  # judged by where it leads: ::ffff:127.0.0.1 is 127.0.0.1
            for v4 in inner:
                if (why := address_problem(str(v4), allowed)) is not None:
                    return f"{ip} leads to {why}"
            return None
    if ip.is_global and not ip.is_multicast:
        return None
    kind = next(
        (name for name, flag in (
            ("loopback", ip.is_loopback), ("link-local", ip.is_link_local), ("private", ip.is_private),
            ("multicast", ip.is_multicast), ("unspecified", ip.is_unspecified), ("reserved", ip.is_reserved),
        ) if flag),
        "not globally routable",
    )
    return f"{ip} is a {kind} address, not in callback_allowed_networks"


_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


def _literal(host: str) -> str | None:
    """The address a host names literally, or None for a name to resolve. A host whose last
    label is numeric but which is not a canonical IPv4 address (``2130706433``, ``127.1``,
    ``0177.0.0.1``, ``0x7f.1``) is refused: C resolvers and browsers read those as IPv4 in forms
    our check does not parse, and HTTP clients may skip the resolver for them."""
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare.split("%", 1)[0])
    except ValueError:
        last = bare.rstrip(".").rsplit(".", 1)[-1]
        if _NUMERIC_LABEL.fullmatch(last):
            raise CallbackUrlRefused(
                f"{host} is a numeric host but not a canonical IPv4 address; write the address as a.b.c.d",
                problems=[{"field": "extract.notify_url", "message": "not a canonical IPv4 address"}]) from None
        return None
    return bare


def split_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL; :class:`CallbackUrlRefused` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackUrlRefused(f"{url!r}: a callback URL must be http:// or https:// with a host",
                                 problems=[{"field": "extract.notify_url", "message": "not an http(s) URL"}])
    if parts.username or parts.password:
        raise CallbackUrlRefused("a callback URL may not carry credentials; the request is signed instead",
                                 problems=[{"field": "extract.notify_url", "message": "credentials in the URL"}])
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


async def _getaddrinfo(host: str, port: int) -> list[tuple]:
    loop = asyncio.get_running_loop()
    return await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)


async def check_url(url: str, allowed: Sequence[Network]) -> list[str]:
    """At save: refuse (:class:`CallbackUrlRefused`) a URL that is not http(s) or whose host
    resolves to an address not allowed. A host that does not resolve now is a warning (it may
    exist by the first delivery, which checks again)."""
    host, port = split_url(url)
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = sorted({info[4][0] for info in await _getaddrinfo(host, port)})
        except (socket.gaierror, UnicodeError) as exc:
            return [f"extract.notify_url: {host} does not resolve now ({exc}); it is checked again at each delivery"]
    for address in addresses:
        if (why := address_problem(address, allowed)) is not None:
            raise CallbackUrlRefused(f"extract.notify_url: {host}: {why}",
                                     problems=[{"field": "extract.notify_url", "message": why}])
    return []


class _Refused(OSError):
    """Raised inside aiohttp's connect: the name resolved only to addresses not allowed."""


class CheckedResolver(AbstractResolver):
    """Resolves, keeps only allowed addresses, and refuses when none is left."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self.allowed = tuple(allowed)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        infos = await _getaddrinfo(host, port)
        results: list[ResolveResult] = []
        problems: list[str] = []
        for fam, _type, proto, _name, sockaddr in infos:
            address = sockaddr[0]
            why = address_problem(address, self.allowed)
            if why is not None:
                problems.append(why)
                continue
            results.append(ResolveResult(hostname=host, host=address, port=sockaddr[1], family=fam,
                                         proto=proto, flags=socket.AI_NUMERICHOST))
        if not results:
            raise _Refused(f"{host}: " + ("; ".join(sorted(set(problems))) or "no address"))
        return results

    async def close(self) -> None:
        return None


def sign(secret: str, message_id: str, timestamp: dt.datetime, body: str) -> str:
    """The ``webhook-signature`` header's value for this message."""
    return Webhook(secret).sign(message_id, timestamp, body)


def signed_headers(secret: str, message_id: str, body: str, at: dt.datetime | None = None) -> dict[str, str]:
    at = at or dt.datetime.now(dt.timezone.utc)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": sign(secret, message_id, at, body),
    }


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP-date (RFC 9110 §10.2.3); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds())


@dataclass(frozen=True, slots=True)
class PostResult:
    status: int | None  # None: no answer
    duration_ms: int
    error: str | None = None  # no answer: why (network error, timeout)
    refused: str | None = None  # not sent: the destination is not allowed
    retry_after: float | None = None


class WebhookClient:
    """POSTs signed callbacks through one connection pool whose resolver checks every address."""

    def __init__(self, allowed: Sequence[Network]) -> None:
        self.allowed = tuple(allowed)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=CheckedResolver(self.allowed), use_dns_cache=False, limit=64)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> PostResult:
        t0 = time.perf_counter()

        def took() -> int:
            return int((time.perf_counter() - t0) * 1000)

        try:
            host, _ = split_url(url)
            literal = _literal(host)
        except CallbackUrlRefused as exc:
            return PostResult(None, took(), refused=exc.message)
        if literal is not None and (why := address_problem(literal, self.allowed)) is not None:
            return PostResult(None, took(), refused=f"{host}: {why}")
        try:
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                # The body is not used; a receiver (any URL a table writer types) could stream
                # gigabytes within the timeout. Read a bounded amount so a short answer leaves the
                # connection reusable, and drop the connection when there is more.
                await response.content.read(MAX_ANSWER_BYTES)
                if not response.content.at_eof():
                    response.close()
                return PostResult(response.status, took(),
                                  retry_after=retry_after_seconds(response.headers.get("Retry-After")))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, _Refused):
                return PostResult(None, took(), refused=str(exc.os_error))
            return PostResult(None, took(), error=f"cannot connect: {exc.os_error.strerror or type(exc.os_error).__name__}")
        except _Refused as exc:
            return PostResult(None, took(), refused=str(exc))
        except TimeoutError:
            return PostResult(None, took(), error=f"no answer within {timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return PostResult(None, took(), error=f"{type(exc).__name__}: {exc}"[:300])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
