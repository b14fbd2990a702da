"""Client construction from Settings and OPENSEARCH_ENDPOINT handling (no server needed): auth, TLS options,
SigV4, credentials never shown, one clear error for a malformed endpoint."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from typing import Any

import pytest
from opensearchpy import AWSV4SignerAsyncAuth

from reactor import config, logs
from reactor.config import Settings
from reactor.sinks.client import make_client
from reactor.sinks.drain_result import chunk_lines
from reactor.sinks.endpoint import EndpointError, display, parse_endpoint
from reactor.sinks.opensearch import make_sink


def _connection(settings: Settings) -> Any:
    async def main() -> Any:
        client = make_client(settings)
        try:
            await client.transport._async_call()  # connections are made lazily inside the loop
            return client.transport.get_connection()
        finally:
            await client.close()

    return asyncio.run(main())


def test_basic_auth_and_tls() -> None:
    conn = _connection(
        Settings(opensearch_endpoint="https://search.example:9243", opensearch_user="u", opensearch_pass="secret-pw")
    )
    assert conn.host == "https://search.example:9243"
    assert conn.headers["authorization"].startswith("Basic ")


def test_credentials_in_the_endpoint_url() -> None:
    conn = _connection(Settings(opensearch_endpoint="http://search-admin:p%40ss-w0rd@127.0.0.1:9201/prefix/"))
    assert conn.host == "http://127.0.0.1:9201" and conn.url_prefix == "/prefix"
    assert base64.b64decode(conn.headers["authorization"].split()[1]) == b"search-admin:p@ss-w0rd"


def test_bare_host_is_https_443_and_sigv4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    conn = _connection(
        Settings(
            opensearch_endpoint="search-x.eu-west-1.es.amazonaws.com",
            opensearch_aws_region="eu-west-1",
            opensearch_aws_service="aoss",
        )
    )
    assert conn.host == "https://search-x.eu-west-1.es.amazonaws.com:443"
    assert isinstance(conn._http_auth, AWSV4SignerAsyncAuth) and conn._http_auth.signer.service == "aoss"
    headers = conn._http_auth("GET", "https://search-x.eu-west-1.es.amazonaws.com/", None, {})
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")


def test_index_names_and_service_come_from_settings() -> None:
    env = {
        "OPENSEARCH_FEEDBACK_INDEX": "fb",
        "OPENSEARCH_WORD_INDEX": "wc",
        "OPENSEARCH_AWS_SERVICE": "aoss",
        "REACTOR_ENV": "local",
    }
    settings = config.load(env, dotenv=False)
    assert (settings.opensearch_feedback_index, settings.opensearch_word_index) == ("fb", "wc")
    assert settings.opensearch_aws_service == "aoss"
    defaults = config.load({"REACTOR_ENV": "local"}, dotenv=False)
    assert (defaults.opensearch_feedback_index, defaults.opensearch_word_index) == (
        "feedback-analysis",
        "wordcount-analysis",
    )


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("http://[::1", "is not a valid URL"),
        ("http://search-admin:Tr0ub4dor@[::1", "is not a valid URL"),
        ("http://host:notaport", "the port must be a number from 1 to 65535"),
        ("http://search-admin:pa/ss-Tr0ub4dor@host:1", "the port must be a number"),
        ("http://host:99999", "the port must be a number"),
        ("ftp://host", "the scheme must be http or https"),
        ("http://:9200", "names no host"),
        ("http://host:9200/?x=1", "query string"),
        ("", "OPENSEARCH_ENDPOINT is not set"),
    ],
)
def test_malformed_endpoint_is_one_clear_config_error(endpoint: str, message: str) -> None:
    with pytest.raises(EndpointError) as caught:
        make_client(Settings(opensearch_endpoint=endpoint))
    text = str(caught.value)
    assert isinstance(caught.value, config.ConfigError) and message in text and "\n" not in text
    for secret in ("search-admin", "Tr0ub4dor", "pa/ss"):
        assert secret not in text


def test_endpoint_credentials_are_secrets_everywhere() -> None:
    config.load(
        {"OPENSEARCH_ENDPOINT": "http://search-admin:s3cr%40t-pw@10.0.0.5:9200", "REACTOR_ENV": "local"}, dotenv=False
    )
    line = "connect failed for search-admin with s3cr@t-pw at http://search-admin:s3cr%40t-pw@10.0.0.5:9200"
    redacted = logs.redact(line)
    for secret in ("search-admin", "s3cr@t-pw", "s3cr%40t-pw"):
        assert secret not in redacted
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.endpoint.secrets")
    logger.addHandler(handler)
    try:
        logs.event(logger, "opensearch.unavailable", logging.WARNING, error=line)
    finally:
        logger.removeHandler(handler)
    assert "search-admin" not in stream.getvalue() and "s3cr" not in stream.getvalue()
    assert display("http://search-admin:s3cr%40t-pw@10.0.0.5:9200") == "http://***@10.0.0.5:9200"
    assert display("http://u:p@[::1") == "http://***@[::1"
    assert parse_endpoint("http://[::1]:9200").display == "http://[::1]:9200"


def test_no_endpoint_no_sink() -> None:
    assert make_sink(Settings(), pool=None) is None  # type: ignore[arg-type]


def test_chunking_by_count_and_bytes() -> None:
    items = [(i, b"x" * 100) for i in range(10)]
    assert [len(c) for c in chunk_lines(items, 4, 10_000)] == [4, 4, 2]  # type: ignore[arg-type]
    assert [len(c) for c in chunk_lines(items, 100, 250)] == [2, 2, 2, 2, 2]  # type: ignore[arg-type]
    assert [len(c) for c in chunk_lines([(0, b"y" * 999)], 100, 10)] == [1]  # type: ignore[arg-type]
