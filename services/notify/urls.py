"""Where webhooks may go: http(s) URLs whose host resolves only to public addresses.

Checked when an endpoint is registered or changed, and again on every connection (DNS can
change after registration): the dispatcher connects to the very address it checked, so a name
that resolves differently a moment later cannot slip a private address in.
"""

import ipaddress
import socket
from urllib.parse import urlsplit

import httpcore

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata: refused even when private addresses are allowed (they hold credentials).
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"))


class Refused(ValueError):
    """A URL or address webhooks may not be sent to; the message says why."""


def refusal(ip: IP, *, allow_private: bool) -> str | None:
    """Why `ip` may not receive webhooks, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_multicast or ip.is_unspecified:
        return "a multicast or unspecified address"
    if ip.is_global:
        return None
    if allow_private:
        return None
    for label, flag in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                        ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if flag:
            return f"a {label} address"
    return "not a public address"


def resolve(host: str, port: int) -> list[IP]:
    """Every address `host` resolves to (a literal address is itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"host {host!r} does not resolve ({exc})") from exc
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[IP]:
    """The addresses of `host`, all of them allowed; raises Refused naming the first that is not."""
    addresses = resolve(host, port)
    for ip in addresses:
        why = refusal(ip, allow_private=allow_private)
        if why:
            subject = str(ip) if str(ip) == host.strip("[]") else f"{host} resolves to {ip}"
            raise Refused(f"{subject}, {why}")
    if not addresses:
        raise Refused(f"host {host!r} has no address")
    return addresses


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL, if webhooks may be sent to it; raises Refused saying why not."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise Refused("only http and https URLs are accepted")
    if not parts.hostname:
        raise Refused("the URL has no host")
    if parts.username or parts.password:
        raise Refused("credentials in the URL are not accepted; verify the signature instead")
    checked_addresses(parts.hostname, port, allow_private=allow_private)
    return url


class GuardedBackend(httpcore.SyncBackend):
    """Connects only to checked addresses: the check and the connection use the same resolution."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        try:
            addresses = checked_addresses(host, port, allow_private=self.allow_private)
        except Refused as exc:
            raise httpcore.ConnectError(f"refused: {exc}") from exc
        error: Exception | None = None
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error  # type: ignore[misc]
