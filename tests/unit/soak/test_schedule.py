"""The soak's fault schedule: the full hour has the issue's counts, short runs keep at least one of each."""

from __future__ import annotations

from collections import Counter

from scripts.soaklib.faults import BACKGROUND, FaultLog, build_schedule, in_window


def test_the_full_hour_has_the_issues_counts_in_order():
    plan = build_schedule(60, seed=1, opensearch=True, killers=True)
    counts = Counter(p.kind for p in plan)
    assert counts["kill"] == 60 and counts["pg_restart"] == 6 and counts["os_outage"] == 8
    assert counts["stop_resume"] == 30 and counts["killer_row"] == 12
    assert counts["os_read_only"] == counts["reindex"] == counts["reprocess"] == 1
    assert [p.at for p in plan] == sorted(p.at for p in plan)
    assert all(0 < p.at < 0.9 * 3600 for p in plan)
    outages = [p.params for p in plan if p.kind == "os_outage"]
    assert all(30 <= o["seconds"] <= 90 for o in outages) and {o["mode"] for o in outages} == {"freeze", "stop"}
    assert build_schedule(60, seed=1, opensearch=True, killers=True) == plan  # seeded: the same run twice


def test_a_four_minute_run_keeps_one_of_each_and_drops_what_it_cannot_do():
    counts = Counter(p.kind for p in build_schedule(4, seed=3, opensearch=True, killers=True))
    assert counts["kill"] >= 4 and counts["pg_restart"] == 1 and counts["os_outage"] == 1 and counts["killer_row"] == 1
    bare = Counter(
        p.kind for p in build_schedule(4, seed=3, opensearch=False, killers=False, exclude=frozenset({"kill"}))
    )
    assert not {"kill", "os_outage", "os_read_only", "reindex", "killer_row"} & set(bare)


def test_fault_windows_cover_the_recovery(tmp_path):
    log = FaultLog(tmp_path / "faults.jsonl", lease_s=3, restart_s=1)
    kill = log.log("kill", slot="a")
    log.log("pg_restart", "start", id=7)
    end = log.log("pg_restart", "end", id=7)
    log.close()
    windows = log.windows()
    assert in_window(kill["t"] + 6.9, windows)  # lease + restart + 3 s
    assert in_window(end["t"] + 4.9, windows) and not in_window(end["t"] + 8, windows)
    assert len((tmp_path / "faults.jsonl").read_text().splitlines()) == 3


def test_a_reindex_or_reprocess_is_a_window_unless_counted_as_load(tmp_path):
    log = FaultLog(tmp_path / "faults.jsonl", lease_s=3, restart_s=1)
    start = log.log("reprocess", "start", id=1)
    log.log("reprocess", "end", id=1)
    log.close()
    windows = log.windows()
    assert [kind for _, _, kind in windows] == ["reprocess"]
    assert in_window(start["t"] + 0.001, windows)
    assert not in_window(start["t"] + 0.001, windows, BACKGROUND)
