"""OPENSEARCH_ENDPOINT parsing: one clear error for a malformed value, never a credential in any text.

Why its own module: the settings loader registers the endpoint's credentials as secrets before anything can
log them, and `reactor listen` / `reactor reindex` validate the endpoint before they start; neither should have
to import the OpenSearch client for that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from reactor import logs
from reactor.errors import ConfigError

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<info>[^\s]*)@", re.I)


class EndpointError(ConfigError):
    """OPENSEARCH_ENDPOINT cannot be used; the message is one line and carries no credentials."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # http | https
    host: str
    port: int
    path: str  # url prefix ('' when none)
    username: str | None = None
    password: str | None = None

    @property
    def use_ssl(self) -> bool:
        return self.scheme == "https"

    @property
    def display(self) -> str:
        """The URL as it may be shown: credentials replaced by ***."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = "***@" if self.username or self.password else ""
        return f"{self.scheme}://{auth}{host}:{self.port}{self.path}"


def strip_userinfo(text: str) -> str:
    """Mask the `user:password@` part of every URL in `text` (also for URLs too broken to parse)."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


def register_secrets(value: str | None) -> None:
    """Register the user name and password embedded in the endpoint as secrets; never raises."""
    if not value:
        return
    for match in _USERINFO.finditer(value):
        user, _, password = match.group("info").partition(":")
        for secret in (user, password):
            logs.register_secret(secret)
            logs.register_secret(unquote(secret))


def parse_endpoint(value: str | None) -> Endpoint:
    """The endpoint as parts, or EndpointError. A bare host name (the original worker's form) is https on 443."""
    if not value or not value.strip():
        raise EndpointError("OPENSEARCH_ENDPOINT is not set")
    raw = value.strip()
    register_secrets(raw)
    if "://" not in raw:
        raw = f"https://{raw}"
    shown = strip_userinfo(raw)
    try:
        parts = urlsplit(raw)
        host = parts.hostname
    except ValueError:  # urllib's own text may quote a piece of the password: say it in our words
        raise EndpointError(
            f"OPENSEARCH_ENDPOINT {shown!r} is not a valid URL (check the brackets of an IPv6 host)"
        ) from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise EndpointError(f"OPENSEARCH_ENDPOINT {shown!r}: the port must be a number from 1 to 65535")
    if parts.scheme not in ("http", "https"):
        raise EndpointError(f"OPENSEARCH_ENDPOINT {shown!r}: the scheme must be http or https")
    if not host:
        raise EndpointError(f"OPENSEARCH_ENDPOINT {shown!r} names no host")
    if parts.query or parts.fragment:
        raise EndpointError(f"OPENSEARCH_ENDPOINT {shown!r}: a query string or fragment is not supported")
    path = parts.path.rstrip("/")
    return Endpoint(
        scheme=parts.scheme,
        host=host,
        port=port or (443 if parts.scheme == "https" else 9200),
        path=path,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def display(value: str | None) -> str:
    """How to show a configured endpoint in a message: parsed when possible, credentials always masked."""
    try:
        return parse_endpoint(value).display
    except EndpointError:
        return strip_userinfo(value or "")
