"""The OpenSearch client from Settings, and how its answers are read: whose fault is a failure?

Three kinds of failure, three reactions (the drain in `opensearch.py` applies them):
- the document's own fault (mapping rejection, a 400): park that outbox row with its error;
- the cluster's condition (unreachable, 429 busy, 503, 403 cluster blocks such as a read-only index): blame no
  row, pause the whole endpoint with one shared backoff (`EndpointPause`) and try again; the rows are untouched,
  so the first successful bulk afterwards sends them all;
- anything else about one item (e.g. a 500): retry that row later with its own backoff.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opensearchpy import AsyncOpenSearch
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from reactor import backoff, logs
from reactor.sinks.endpoint import EndpointError, parse_endpoint, strip_userinfo

if TYPE_CHECKING:
    from reactor.config import Settings

# Item errors that no retry can fix: the document itself is wrong for the mapping.
PERMANENT_ERRORS = frozenset(
    {
        "mapper_parsing_exception",
        "strict_dynamic_mapping_exception",
        "illegal_argument_exception",
        "document_parsing_exception",
        "parse_exception",
        "json_parse_exception",
        "x_content_parse_exception",
        "action_request_validation_exception",
    }
)
# Whole-request statuses that mean "the cluster is busy or away".
UNAVAILABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Item statuses that describe the cluster, not the document.
CLUSTER_ITEM_STATUSES = frozenset({429, 503})
INDEX_MISSING = "index_not_found_exception"


def make_client(settings: Settings, *, timeout: float = 30.0, max_retries: int = 0) -> AsyncOpenSearch:
    """AsyncOpenSearch from Settings: basic auth, TLS verification options, or SigV4 when a region is set.

    Raises EndpointError (a ConfigError: one line, no credentials) for a malformed OPENSEARCH_ENDPOINT.
    """
    endpoint = parse_endpoint(settings.opensearch_endpoint)
    host: dict[str, Any] = {"host": endpoint.host, "port": endpoint.port}
    if endpoint.path:
        host["url_prefix"] = endpoint.path
    kwargs: dict[str, Any] = {
        "hosts": [host],
        "use_ssl": endpoint.use_ssl,
        "verify_certs": settings.opensearch_verify_certs,
        "ssl_show_warn": False,
        "timeout": timeout,
        "max_retries": max_retries,
        "retry_on_timeout": max_retries > 0,
    }
    if endpoint.use_ssl and settings.opensearch_ca_certs:
        kwargs["ca_certs"] = settings.opensearch_ca_certs
    if settings.opensearch_aws_region:
        import boto3
        from opensearchpy import AsyncHttpConnection, AWSV4SignerAsyncAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise EndpointError("OPENSEARCH_AWS_REGION is set but boto3 found no AWS credentials")
        service = settings.opensearch_aws_service
        kwargs["http_auth"] = AWSV4SignerAsyncAuth(credentials, settings.opensearch_aws_region, service)
        kwargs["connection_class"] = AsyncHttpConnection  # the default aiohttp class cannot take a signer
    elif settings.opensearch_user:
        kwargs["http_auth"] = (settings.opensearch_user, settings.opensearch_pass or "")
    elif endpoint.username:
        kwargs["http_auth"] = (endpoint.username, endpoint.password or "")
    return AsyncOpenSearch(**kwargs)


def describe_error(exc: BaseException) -> str:
    """Short, secret-free text for logs and last_error."""
    if isinstance(exc, TransportError):
        info = exc.info if isinstance(exc.info, dict) else {}
        err = info.get("error") if isinstance(info, dict) else None
        reason = err.get("reason") if isinstance(err, dict) else (err or exc.error)
        text = f"{type(exc).__name__}({exc.status_code}): {reason}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return strip_userinfo(logs.redact(text))[:500]


def is_unavailable(exc: BaseException) -> bool:
    """True when the whole cluster is away or busy (retry later, don't blame the rows)."""
    if isinstance(exc, OSConnectionError | asyncio.TimeoutError | OSError):
        return True
    return isinstance(exc, TransportError) and (exc.status_code in UNAVAILABLE_STATUSES or exc.status_code == "N/A")


@dataclass(frozen=True)
class ItemError:
    """One failed bulk item, classified."""

    status: int
    type: str
    reason: str | None

    @property
    def text(self) -> str:
        return f"{self.status} {self.type}: {self.reason}"[:1000]

    @property
    def cluster_wide(self) -> bool:
        """Busy, unavailable or blocked: the cluster's state, true for every row alike."""
        return self.status in CLUSTER_ITEM_STATUSES or (self.status == 403 and self.type == "cluster_block_exception")

    @property
    def index_missing(self) -> bool:
        return self.type == INDEX_MISSING

    @property
    def permanent(self) -> bool:
        return self.status == 400 or (self.type in PERMANENT_ERRORS and self.status not in UNAVAILABLE_STATUSES)


def item_error(info: dict[str, Any]) -> ItemError | None:
    """None for a successful item, else its classified error."""
    status = int(info.get("status", 500))
    if status < 300:
        return None
    error = info.get("error")
    if isinstance(error, dict):
        return ItemError(status, str(error.get("type")), error.get("reason"))
    return ItemError(status, str(error), None)


class EndpointPause:
    """One backoff for the whole endpoint (not per row): cluster conditions delay every row alike, so one
    probe at a time decides when all of them go again."""

    def __init__(self, *, base: float = 0.5, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self.until = 0.0

    def fail(self) -> float:
        """Record one more failure; returns the pause it starts (seconds)."""
        self.failures += 1
        wait = backoff.delay(self.failures, base=self.base, cap=self.cap)
        self.until = time.monotonic() + wait
        return wait

    def succeed(self) -> bool:
        """Back to normal; True when a pause was in effect (the endpoint recovered)."""
        was = self.failures > 0
        self.failures, self.until = 0, 0.0
        return was

    def remaining(self) -> float:
        return max(0.0, self.until - time.monotonic())
