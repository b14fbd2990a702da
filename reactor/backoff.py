"""One retry schedule for the whole reactor: capped exponential backoff with "equal jitter".

Why jitter: rows (or reactors) that failed together must not retry together. Why "equal" rather than "full" jitter:
the delay stays in [step/2, step], so a retry loop never spins at a zero delay, and a row's next attempt is never
sooner than half its step.
"""

from __future__ import annotations

import random

MAX_EXPONENT = 62  # 2**62 × any sane base is far past every cap; keeps the float finite


def delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry).

    step = min(cap, base · 2^(attempt-1)); the result is uniform in [step/2, step].
    """
    step = min(cap, base * 2.0 ** min(max(attempt - 1, 0), MAX_EXPONENT))
    return step * (0.5 + (rng or random).random() / 2)
