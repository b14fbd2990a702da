"""Fixtures for the OpenSearch sink tests: a real OpenSearch (OPENSEARCH_TEST_URL), a fresh Postgres
database with the reactor schema, unique index names, and a TCP proxy that can simulate an outage."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from opensearchpy import AsyncOpenSearch


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/opensearch/" in str(item.fspath):
            item.add_marker(pytest.mark.opensearch)


@pytest.fixture(scope="session")
def os_url() -> str:
    url = os.environ.get("OPENSEARCH_TEST_URL")
    if not url:
        pytest.skip(
            "no OpenSearch: run scripts/opensearch.sh start and export OPENSEARCH_TEST_URL=$(scripts/opensearch.sh url)"
        )
    return url.rstrip("/")


@pytest.fixture
def os_pg_url(pg_url: str) -> str:
    """A fresh database with the reactor installed (the suite's `pg_url`)."""
    return pg_url


@pytest.fixture
def index_names(os_url: str) -> Iterator[dict[str, str]]:
    """Unique index names per test; every index with the prefix is deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield {"feedback_index": f"{prefix}-feedback-analysis", "word_index": f"{prefix}-wordcount-analysis"}

    async def cleanup() -> None:
        client = AsyncOpenSearch(hosts=[os_url])
        try:
            await client.indices.delete(index=f"{prefix}-*", ignore_unavailable=True, expand_wildcards="all")
        finally:
            await client.close()

    with contextlib.suppress(Exception):
        asyncio.run(cleanup())
