"""Who may talk to ``animegan serve``: the Host names it answers, the Origins it accepts.

Two browser attacks reach a server on 127.0.0.1 that no one outside can:
- DNS rebinding: a page at evil.example points its own name at 127.0.0.1 and then reads the
  server as same-origin. Its requests carry ``Host: evil.example``, a name the server does
  not go by: refused (400). A Host that is an IP address cannot come from such a page.
- A cross-site form POST (no CORS needed for multipart): the browser sends the page's
  ``Origin``, which does not match the ``Host``: refused (403) unless ``--allowed-origin``.
Clients that are not browsers send no Origin and are not affected. Importable without the
web stack (the CLI reads the defaults from here).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from animegan_cli.settings import fields

DEFAULT_LISTEN_HOST: str = fields.HOST.default
# Names of this machine's loopback interface that no page can point elsewhere.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# Listening on these means every address of the machine: any IP-address Host is ours.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
ANY = "*"
# Methods that change state (or cost model time): a browser's cross-site one is refused.
SAFE_METHODS = frozenset({"GET", "HEAD"})
DEFAULT_PORTS = {"http": 80, "https": 443}
# Whose cached results a request may be answered with (see docs/serve.md, "Security").
CACHE_SCOPES = ("client", "shared")
DEFAULT_CACHE_SCOPE: str = fields.CACHE_SCOPE.default


@dataclass(frozen=True)
class AccessPolicy:
    """The Host names and Origins one server accepts, from its settings."""

    hosts: frozenset[str]
    any_ip_host: bool
    origins: frozenset[str]

    @classmethod
    def build(cls, listen_host: str, allowed_hosts: tuple[str, ...] = (),
              allowed_origins: tuple[str, ...] = ()) -> AccessPolicy:
        """The default names (loopback, the listening host) plus the allowed ones."""
        listen = _bare_host(listen_host)
        named = (_bare_host(split_host(h)[0]) for h in allowed_hosts)  # a port is not a name
        hosts = {*LOCAL_HOSTS, listen, *named}
        return cls(frozenset(hosts - {""}), listen in WILDCARD_HOSTS,
                   frozenset(normalize_origin(o) for o in allowed_origins))

    def host_allowed(self, host_header: str | None) -> bool:
        """A request without Host (HTTP/1.0, not a browser) or with one of our names."""
        if not host_header or ANY in self.hosts:
            return True
        host = _bare_host(split_host(host_header)[0])
        return host in self.hosts or (self.any_ip_host and _is_ip(host))

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """No Origin (not a browser), the server's own origin, or an allowed one."""
        if origin is None:
            return True
        normalized = normalize_origin(origin)
        return (ANY in self.origins or normalized in self.origins
                or same_origin(normalized, host_header or ""))

    def cross_origin_allowed(self, origin: str) -> bool:
        """An origin named by --allowed-origin (answered with CORS headers)."""
        return ANY in self.origins or normalize_origin(origin) in self.origins


def split_host(host_header: str) -> tuple[str, int | None]:
    """``name[:port]`` or ``[v6]:port`` as (name, port or None)."""
    text = host_header.strip()
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        name, port = text.split(":")
    else:
        name, port = text, ""
    return name, int(port) if port.isdigit() else None


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` lower-cased, without a default port or a trailing slash."""
    text = origin.strip().rstrip("/").lower()
    if text in (ANY, "null"):
        return text
    parts = urlsplit(text)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return text
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        return text
    keep_port = port is not None and port != DEFAULT_PORTS[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if keep_port else "")


def origin_problem(origin: str) -> str | None:
    """Why an --allowed-origin value cannot match any browser's Origin, or None."""
    normalized = normalize_origin(origin)
    parts = urlsplit(normalized)
    if normalized == ANY or (parts.scheme in DEFAULT_PORTS and parts.hostname
                             and not parts.path and not parts.query):
        return None
    return f"{origin!r} is not an origin such as https://app.example.com (or *)"


def same_origin(origin: str, host_header: str) -> bool:
    """Whether a normalized Origin names the host and port the request was sent to.

    The scheme is not compared: behind a TLS proxy the server sees plain HTTP.
    """
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False  # "null" (a sandboxed frame, a file:// page) is never ours
    name, port = split_host(host_header)
    try:
        origin_port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        return False
    return (_bare_host(name) == _bare_host(parts.hostname)
            and (port or DEFAULT_PORTS[parts.scheme]) == origin_port)


def _bare_host(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
