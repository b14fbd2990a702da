#!/usr/bin/env python
"""A small, faithful re-creation of the ORIGINAL polling worker, for benchmarks only (never for production).

What it does, as the original did:
  every --poll-interval seconds (the original: 10 s; benchmarks may shorten it and say so):
    read its job_configs row (run_next_job, batch_size; created with --batch-size if absent);
    read jobs.last_processed_id of the newest completed job named --job-name;
    SELECT id, text FROM feedbacks WHERE id > last ORDER BY id LIMIT batch_size;
    insert a jobs row 'processing';
    per text: transformers pipeline("sentiment-analysis") and pipeline("zero-shot-classification",
    multi_label=True) over the active topics (labels scoring >= 0.7, at most 3, else the single best;
    `__UNKNOWN__` for NULL/blank text or no topics); NLTK-stopword word counts;
    one transaction: results, word-count increments, the jobs row -> completed with last_processed_id =
    max id of the batch.
  One batch per poll, even when the batch was full (so throughput <= batch_size / poll_interval).

Its known flaw is kept on purpose: a transaction that took a low id and commits after a higher id was
processed is never analysed (`id > last_processed_id`). Results go to its own schema `baseline`
(baseline.feedback_analysis, baseline.word_counts); it never reads or writes schema `reactor`.

    python scripts/baseline/worker.py --model transformers --checkpoints .cache/models_full
    python scripts/baseline/worker.py --model stand-in --poll-interval 1 --job-name baseline_x

`--model stand-in` uses reactor.nlp.standin (hash scores), called per text, for plumbing comparisons.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

UNKNOWN = "__UNKNOWN__"
THRESHOLD = 0.7
MAX_TOPICS = 3

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS baseline;
CREATE TABLE IF NOT EXISTS baseline.feedback_analysis (
    feedback_id      bigint PRIMARY KEY,
    sentiment_label  text,
    sentiment_score  real,
    topics           jsonb NOT NULL DEFAULT '[]',
    word_counts      jsonb NOT NULL DEFAULT '{}',
    job_id           bigint,
    analyzed_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS baseline.word_counts (word text PRIMARY KEY, count bigint NOT NULL);
"""


class PipelineModels:
    """The original's models: two transformers pipelines, called once per text."""

    def __init__(self, checkpoints: Path) -> None:
        import torch
        from transformers import pipeline

        torch.set_num_threads(len(os.sched_getaffinity(0)))
        self.sentiment = pipeline("sentiment-analysis", model=str(checkpoints / "sentiment"), device="cpu")
        self.zero_shot = pipeline("zero-shot-classification", model=str(checkpoints / "zero-shot"), device="cpu")

    def sentiment_one(self, text: str) -> tuple[str, float]:
        out = self.sentiment(text, truncation=True)[0]
        return out["label"], float(out["score"])

    def topics_one(self, text: str, labels: list[str]) -> list[tuple[str, float]]:
        out = self.zero_shot(text, labels, multi_label=True)
        return list(zip(out["labels"], (float(s) for s in out["scores"]), strict=True))


class StandInModels:
    """reactor.nlp.standin, called per text like the pipelines."""

    def __init__(self) -> None:
        from reactor.nlp.standin import StandInSentiment, StandInZeroShot

        self.s, self.z = StandInSentiment(), StandInZeroShot()

    def sentiment_one(self, text: str) -> tuple[str, float]:
        return self.s.predict([text])[0]

    def topics_one(self, text: str, labels: list[str]) -> list[tuple[str, float]]:
        return self.z.classify([text], labels)[0]


_WORD = re.compile(r"\b\w+\b")


def word_counts(text: str | None) -> dict[str, int]:
    """The original's counting: lower-case words, alphabetic, not an NLTK English stopword."""
    if not text:
        return {}
    from reactor.nlp.words import stopwords  # NLTK's list via NLTK's reader (shipped: no download offline)

    stop = stopwords()
    return dict(Counter(w for w in _WORD.findall(text.lower()) if w.isalpha() and w not in stop))


def pick(scores: list[tuple[str, float]]) -> list[tuple[str, float]]:
    ranked = sorted(scores, key=lambda s: -s[1])
    if not ranked:
        return [(UNKNOWN, 0.0)]
    return [s for s in ranked if s[1] >= THRESHOLD][:MAX_TOPICS] or ranked[:1]


def analyse(models: Any, text: str | None, labels: list[str]) -> tuple[str | None, float | None, list, dict]:
    if not text or not text.strip():
        return None, None, [(UNKNOWN, 0.0)], {}
    label, score = models.sentiment_one(text)
    topics = pick(models.topics_one(text, labels)) if labels else [(UNKNOWN, 0.0)]
    return label, score, topics, word_counts(text)


def read_config(conn: psycopg.Connection, key: str, default_batch: int) -> tuple[bool, int]:
    row = conn.execute("SELECT config::jsonb FROM job_configs WHERE key = %s ORDER BY id LIMIT 1", [key]).fetchone()
    if row is None:
        cfg = {"batch_size": default_batch, "run_next_job": True}
        conn.execute(
            "INSERT INTO job_configs (key, config) VALUES (%s, %s::jsonb) ON CONFLICT (key) DO NOTHING",
            [key, json.dumps(cfg)],
        )
    else:
        cfg = row[0]
    return bool(cfg.get("run_next_job", True)), int(cfg.get("batch_size", default_batch))


def run_once(conn: psycopg.Connection, models: Any, args: argparse.Namespace) -> int:
    """One poll: at most one batch. Returns the number of rows processed."""
    run_next, batch_size = read_config(conn, args.config_key, args.batch_size)
    if not run_next:
        return 0
    row = conn.execute(
        "SELECT last_processed_id FROM jobs WHERE job_name = %s AND status = 'completed' "
        "AND last_processed_id IS NOT NULL ORDER BY id DESC LIMIT 1",
        [args.job_name],
    ).fetchone()
    last = row[0] if row else args.start_after_id
    rows = conn.execute(
        "SELECT id, text FROM feedbacks WHERE id > %s ORDER BY id LIMIT %s", [last, batch_size]
    ).fetchall()
    if not rows:
        return 0
    job_id = conn.execute(
        "INSERT INTO jobs (job_name, status, created_at, updated_at) VALUES (%s, 'processing', now(), now()) "
        "RETURNING id",
        [args.job_name],
    ).fetchone()[0]
    labels = [r[0] for r in conn.execute("SELECT label FROM topics WHERE is_active ORDER BY id").fetchall()]
    results = [(fid, *analyse(models, text, labels)) for fid, text in rows]
    with conn.transaction():
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO baseline.feedback_analysis (feedback_id, sentiment_label, sentiment_score, topics, "
                "word_counts, job_id, analyzed_at) VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s, clock_timestamp()) "
                "ON CONFLICT (feedback_id) DO UPDATE SET sentiment_label = excluded.sentiment_label, "
                "sentiment_score = excluded.sentiment_score, topics = excluded.topics, "
                "word_counts = excluded.word_counts, job_id = excluded.job_id, analyzed_at = excluded.analyzed_at",
                [
                    (
                        fid,
                        label,
                        score,
                        json.dumps([{"label": t, "score": s} for t, s in topics]),
                        json.dumps(counts),
                        job_id,
                    )
                    for fid, label, score, topics, counts in results
                ],
            )
            totals: Counter[str] = Counter()
            for *_, counts in results:
                totals.update(counts)
            if totals:
                cur.executemany(
                    "INSERT INTO baseline.word_counts (word, count) VALUES (%s, %s) "
                    "ON CONFLICT (word) DO UPDATE SET count = baseline.word_counts.count + excluded.count",
                    sorted(totals.items()),
                )
        conn.execute(
            "UPDATE jobs SET status = 'completed', last_processed_id = %s, updated_at = now() WHERE id = %s",
            [max(r[0] for r in rows), job_id],
        )
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    ap.add_argument("--model", choices=["transformers", "stand-in"], default="transformers")
    ap.add_argument(
        "--checkpoints",
        type=Path,
        default=ROOT / ".cache" / "models_full",
        help="folder with sentiment/ and zero-shot/ transformers checkpoints",
    )
    ap.add_argument("--poll-interval", type=float, default=10.0, help="seconds between polls (original: 10)")
    ap.add_argument("--batch-size", type=int, default=10, help="batch_size when its job_configs row is created")
    ap.add_argument("--job-name", default="baseline_feedback_analysis")
    ap.add_argument("--config-key", default="baseline_feedback_analysis", help="its own job_configs key")
    ap.add_argument("--start-after-id", type=int, default=0, help="last_processed_id when no completed job exists")
    ap.add_argument("--ready-file", type=Path, default=None, help="touched once models are loaded")
    ap.add_argument("--once", action="store_true", help="one poll, then exit")
    args = ap.parse_args()
    if not args.database_url:
        raise SystemExit("set DATABASE_URL or --database-url")

    models: Any = StandInModels() if args.model == "stand-in" else PipelineModels(args.checkpoints)
    analyse(models, "warm up the models", ["warm up"])
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        if args.ready_file:
            args.ready_file.touch()
        while True:
            t0 = time.monotonic()
            n = run_once(conn, models, args)
            if n:
                print(
                    json.dumps({"event": "baseline.batch", "rows": n, "s": round(time.monotonic() - t0, 3)}),
                    file=sys.stderr,
                    flush=True,
                )
            if args.once:
                return
            time.sleep(args.poll_interval)  # the original slept a full interval after every poll


if __name__ == "__main__":
    main()
