"""The reactor's row of `job_configs`, as the reactor obeys it.

What each key means and which values are valid is defined once, in SQL (`reactor.read_job_config`, installed by
`reactor sql`): the claim's stop gate, the validation trigger, `reactor status` and this module all use it. Here
only the policy for a value that is already stored and invalid: keep the last valid one, with a warning. An
invalid `run_next_job` reads as stopped, so an invalid config never makes a paused reactor run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class JobConfig:
    """Effective values; the defaults apply until the first read (and when the row is missing)."""

    run_next_job: bool = True
    batch_size: int = 10
    max_attempts: int = 5
    jobs_retention_days: int = 30
    problems: tuple[str, ...] = ()

    def updated(self, row: tuple[Any, ...] | None) -> JobConfig:
        """The config after reading `row` (running, batch_size, max_attempts, jobs_retention_days, problems) from
        `reactor.read_job_config`: NULL (invalid) values keep this config's value."""
        if row is None:
            return replace(JobConfig(), problems=("no job_configs row for this key: using the defaults",))
        running, batch_size, max_attempts, retention, problems = row
        return JobConfig(
            run_next_job=bool(running),
            batch_size=self.batch_size if batch_size is None else int(batch_size),
            max_attempts=self.max_attempts if max_attempts is None else int(max_attempts),
            jobs_retention_days=self.jobs_retention_days if retention is None else int(retention),
            problems=tuple(problems or ()),
        )

    def changes(self, new: JobConfig) -> list[tuple[str, dict[str, Any]]]:
        """(event, fields) for each change worth a log line, in the order an operator reads them."""
        events: list[tuple[str, dict[str, Any]]] = []
        if self.run_next_job != new.run_next_job:
            events.append(("control.resumed" if new.run_next_job else "control.paused", {}))
        for key in ("batch_size", "max_attempts", "jobs_retention_days"):
            if getattr(self, key) != getattr(new, key):
                events.append((f"control.{key}", {"old": getattr(self, key), "new": getattr(new, key)}))
        return events
