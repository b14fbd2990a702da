"""reactor.memory: freed heap goes back to the OS (glibc keeps it resident otherwise)."""

from __future__ import annotations

import os

import pytest

from reactor.memory import release_free_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_release_free_heap_returns_what_a_burst_freed():
    if not release_free_heap():
        pytest.skip("no glibc malloc_trim here")
    burst = [bytes(100_000) for _ in range(2000)]  # 200 MB of heap chunks (below glibc's mmap threshold)
    keep = bytes(100_000)  # above them: the freed chunks are not at the heap's top, so free() keeps them
    before = _rss_mb()
    del burst
    kept = _rss_mb()
    assert release_free_heap()
    after = _rss_mb()
    assert kept > before - 50, "glibc gave the burst back by itself: the test no longer shows anything"
    assert after < kept - 100, f"RSS {before:.0f} MB with the burst, {kept:.0f} freed, {after:.0f} after the trim"
    del keep
