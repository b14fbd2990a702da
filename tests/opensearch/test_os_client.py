"""Client construction from Settings (no server needed): auth, TLS options, SigV4, optional sink."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opensearchpy import AWSV4SignerAsyncAuth

from reactor.config import Settings
from reactor.sinks.opensearch import chunk_lines, make_client, make_sink


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


def test_bare_host_is_https_443_and_sigv4(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    conn = _connection(
        Settings(opensearch_endpoint="search-x.eu-west-1.es.amazonaws.com", opensearch_aws_region="eu-west-1")
    )
    assert conn.host == "https://search-x.eu-west-1.es.amazonaws.com:443"
    assert isinstance(conn._http_auth, AWSV4SignerAsyncAuth)
    headers = conn._http_auth("GET", "https://search-x.eu-west-1.es.amazonaws.com/", None, {})
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")


def test_no_endpoint_no_sink() -> None:
    assert make_sink(Settings(), pool=None) is None  # type: ignore[arg-type]


def test_chunking_by_count_and_bytes() -> None:
    items = [(i, b"x" * 100) for i in range(10)]
    assert [len(c) for c in chunk_lines(items, 4, 10_000)] == [4, 4, 2]  # type: ignore[arg-type]
    assert [len(c) for c in chunk_lines(items, 100, 250)] == [2, 2, 2, 2, 2]  # type: ignore[arg-type]
    assert [len(c) for c in chunk_lines([(0, b"y" * 999)], 100, 10)] == [1]  # type: ignore[arg-type]
