"""Where a webhook may be sent: the URL's shape, and the addresses its host resolves to.

A subscription's URL must be https, or http to a loopback host (``localhost``, 127.0.0.0/8,
::1) only when the service allows http for development (``allow_http``): anything else is
``InvalidWebhookUrl``. Its host must resolve (``socket.getaddrinfo``) only to public addresses:
a loopback one is refused unless ``allow_http`` or ``allow_private`` is set; a private one
(RFC 1918, fc00::/7, 100.64.0.0/10, …: anything ``ipaddress`` does not call global) unless
``allow_private``; a link-local (169.254.0.0/16, where clouds serve instance credentials, and
fe80::/10), multicast, reserved or unspecified one always. Every address the host resolves to
is checked, IPv4 inside IPv6 (mapped, 6to4, Teredo) too.

The check runs when a subscription is added or its URL changed, and again right before each
delivery, whose connection then goes to the very address just checked (``pinned``: the URL's
host becomes that address, the ``Host`` header and TLS server name stay the host's), so a DNS
answer that changes in between (rebinding) cannot point a delivery at an internal service.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from eventbank.application.webhooks.errors import InvalidWebhookUrl, WebhookAddressRefused

MAX_URL_CHARS = 2_000
# the options that allow what is refused by default, named in refusals
ALLOW_HTTP = "eventbank serve --allow-http-webhooks; eventbank webhooks --allow-http"
ALLOW_PRIVATE = "eventbank serve --allow-private-webhooks; eventbank webhooks --allow-private"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL, split: ``host`` without brackets, lowercased; ``port`` explicit."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, at least "/"

    @property
    def host_is_ip(self) -> bool:
        return _ip_literal(self.host) is not None


def check_url(url: object, *, allow_http: bool) -> Target:
    """``url`` as a Target, or ``InvalidWebhookUrl`` saying what is wrong with it."""
    if not isinstance(url, str) or not url:
        raise InvalidWebhookUrl("url must be a non-empty string")
    if len(url) > MAX_URL_CHARS:
        raise InvalidWebhookUrl(f"url has {len(url)} characters; at most {MAX_URL_CHARS}")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidWebhookUrl(
            "url must be ASCII without spaces or control characters "
            "(write an international host name in its xn-- form)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidWebhookUrl(f"url is malformed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme!r}" if scheme else f"{url[:80]!r}, which has none"
        raise InvalidWebhookUrl(
            f"url's scheme must be https (or http for development), not {shown}"
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise InvalidWebhookUrl("url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhookUrl("url must not carry credentials (user:password@)")
    if parts.fragment or url.endswith("#"):
        raise InvalidWebhookUrl("url must not have a fragment (#…)")
    if port == 0:
        raise InvalidWebhookUrl("url's port must be 1 to 65535")
    if not _valid_host(host):
        raise InvalidWebhookUrl(f"url's host {host!r} is not a host name or an IP address")
    if scheme == "http":
        if not _loopback_name(host):
            raise InvalidWebhookUrl(
                "url must be https; http is accepted only to a loopback host (development)"
            )
        if not allow_http:
            raise InvalidWebhookUrl(
                "url must be https; http to a loopback host is for development and must be "
                f"allowed ({ALLOW_HTTP})"
            )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80), path)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _valid_host(host: str) -> bool:
    if _ip_literal(host) is not None:
        return True
    labels = host.split(".")
    return len(host) <= 253 and all(
        0 < len(label) <= 63
        and label.replace("-", "").replace("_", "").isalnum()
        and not label.startswith("-")
        and not label.endswith("-")
        for label in labels
    )


def _loopback_name(host: str) -> bool:
    """Whether the URL names a loopback host by itself: localhost or a loopback literal."""
    ip = _ip_literal(host)
    if ip is not None:
        return _unwrapped(ip).is_loopback
    return host == "localhost" or host.endswith(".localhost")


def _unwrapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo client), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def refusal(ip: IPAddress, *, allow_loopback: bool, allow_private: bool) -> str | None:
    """Why a delivery may not go to ``ip`` (None: it may)."""
    ip = _unwrapped(ip)
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip.is_link_local:
        return "link-local"
    if ip.is_reserved:
        return "reserved"
    if ip.is_global:
        return None
    return None if allow_private else "private"


def resolve(target: Target, *, allow_loopback: bool, allow_private: bool) -> list[IPAddress]:
    """The addresses ``target``'s host resolves to, every one of them checked: a refused one
    raises ``WebhookAddressRefused``; a host that does not resolve, ``InvalidWebhookUrl``."""
    literal = _ip_literal(target.host)
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise InvalidWebhookUrl(f"url's host {target.host!r} does not resolve: {exc}") from None
        found = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0])
                                   for info in infos))  # fmt: skip
    if not found:
        raise InvalidWebhookUrl(f"url's host {target.host!r} resolves to no address")
    for ip in found:
        why = refusal(ip, allow_loopback=allow_loopback, allow_private=allow_private)
        if why is None and target.scheme == "http" and not _unwrapped(ip).is_loopback:
            why = "non-loopback"  # http is for a receiver on this machine: never in clear text
        if why is not None:
            hint = {
                "loopback": f" unless allowed, for development ({ALLOW_HTTP})",
                "private": f" unless allowed ({ALLOW_PRIVATE})",
                "non-loopback": " over http (use https)",
            }
            raise WebhookAddressRefused(
                f"url's host {target.host!r} resolves to {ip}, a {why} address: webhooks are "
                f"not delivered there{hint.get(why, '')}"
            )
    return found


def pinned(target: Target, ip: IPAddress) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL, headers and httpx extensions of a request to ``target`` that connects to
    ``ip`` and nowhere else: ``Host`` and the TLS server name (SNI, and the name the
    certificate is checked against) stay ``target``'s host."""
    address = f"[{ip}]" if ip.version == 6 else str(ip)
    default = 443 if target.scheme == "https" else 80
    netloc = address if target.port == default else f"{address}:{target.port}"
    shown = f"[{target.host}]" if ":" in target.host else target.host
    host_header = shown if target.port == default else f"{shown}:{target.port}"
    path, _, query = target.path.partition("?")
    url = urlunsplit((target.scheme, netloc, path, query, ""))
    extensions = {}
    if target.scheme == "https" and not target.host_is_ip:
        extensions["sni_hostname"] = target.host
    return url, {"Host": host_header}, extensions
