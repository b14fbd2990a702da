"""A fast, deterministic stand-in for the two models: plumbing tests and benchmarks, never analysis.

Scores come from a hash of the text, so they are stable across runs and processes but mean nothing.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Sequence


def _unit(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _fault_injection(texts: Sequence[str]) -> None:
    """Test hooks, off by default: REACTOR_STANDIN_DELAY_MS slows each call (to kill a reactor mid-batch),
    REACTOR_STANDIN_FAIL_ON makes a call fail when a text contains that marker (a poison row), and
    REACTOR_STANDIN_EXIT_ON ends the whole process at once (a row that crashes the model runtime), and
    REACTOR_STANDIN_KILL_ON has the process SIGKILL itself (what the kernel's OOM killer does)."""
    delay = float(os.environ.get("REACTOR_STANDIN_DELAY_MS") or 0)
    if delay:
        time.sleep(delay / 1000)
    killer = os.environ.get("REACTOR_STANDIN_EXIT_ON")
    if killer and any(killer in t for t in texts):
        os._exit(70)
    sigkill = os.environ.get("REACTOR_STANDIN_KILL_ON")
    if sigkill and any(sigkill in t for t in texts):
        os.kill(os.getpid(), signal.SIGKILL)
    marker = os.environ.get("REACTOR_STANDIN_FAIL_ON")
    if marker and any(marker in t for t in texts):
        raise RuntimeError(f"stand-in model refused a text containing {marker!r}")


class StandInSentiment:
    """Hash-based POSITIVE/NEGATIVE; satisfies ``SentimentModel``."""

    model_id = "stand-in/sentiment"
    random_weights = True

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        _fault_injection(texts)
        out = []
        for text in texts:
            p = _unit("sentiment", text)
            out.append(("POSITIVE", 0.5 + p / 2) if p >= 0.5 else ("NEGATIVE", 1.0 - p / 2))
        return out


class StandInZeroShot:
    """Hash-based label scores; satisfies ``ZeroShotModel``."""

    model_id = "stand-in/zero-shot"
    random_weights = True

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[tuple[str, float]]]:
        return [
            sorted(((label, _unit("topic", label, text)) for label in labels), key=lambda x: -x[1]) for text in texts
        ]
