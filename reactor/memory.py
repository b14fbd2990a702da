"""Give freed heap back to the operating system.

glibc keeps what a process freed (the JSON bodies of an outbox catch-up after an OpenSearch outage, a batch of
long texts) in its heap and arenas, so a long-lived reactor's RSS would ratchet up to its busiest minute's and
stay there. `malloc_trim(0)` hands the free pages back; housekeeping calls it once a minute, off the hot path
(it takes a few milliseconds). Without glibc (musl, macOS) there is nothing to call and it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_heap() -> bool:
    """Return free heap pages to the OS; False where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
