"""The soak's RSS target reads a trend (medians of thirds after warm-up), not the moment a process died."""

from __future__ import annotations

from scripts.soaklib.monitor import Series
from scripts.soaklib.report import targets


def _rss_target(samples_mb: list[float]) -> tuple[bool | None, str]:
    series = Series(rss={42: [(10.0 * i, mb) for i, mb in enumerate(samples_mb)]})
    rss = [t for t in targets({}, series, [], 0.0, warmup_s=0, enforce=True) if t.name.startswith("reactor RSS")]
    return rss[0].ok, rss[0].value


def test_a_transient_peak_is_not_growth():
    ok, value = _rss_target([80.0] * 6 + [90.0] * 18 + [105.0])  # killed during a big batch
    assert ok and "+0.0%" in value and "peak 105" in value


def test_a_steady_climb_is_growth():
    ok, value = _rss_target([90.0 + i for i in range(25)])
    assert ok is False, value
