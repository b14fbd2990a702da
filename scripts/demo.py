#!/usr/bin/env python
"""`make demo`: the whole data path on this machine, start to finish.

Embedded PostgreSQL (unless DATABASE_URL is set) → `reactor sql` → sample topics and feedback inserted
by ordinary INSERTs → `reactor listen --exit-when-idle` → a table of what the reactor wrote back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOPICS = ["delivery", "price", "app performance", "customer support", "product quality"]
SAMPLES = [
    ("The parcel arrived two days late and the box was crushed.", "Courier", "ana@example.com"),
    ("Great value for the price, I would buy it again!", "Headphones X2", "ben@example.com"),
    ("The app freezes every time I open the checkout screen.", "Mobile app", "chen@example.com"),
    ("Support answered within minutes and solved my billing issue.", "Help desk", "dana@example.com"),
    ("Battery life is terrible, it dies before lunch. 😡", "Phone S", "eli@example.com"),
    ("Love it ❤️ — fast shipping, solid build quality.", "Desk lamp", "fay@example.com"),
    ("Text with tags </s> and [SEP] inside is still just text.", "Web form", "gus@example.com"),
    ("", "Web form", "empty@example.com"),
    (None, "Web form", "null@example.com"),
]


def run(*args: str) -> None:
    print(f"$ reactor {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "reactor", *args], check=True, cwd=ROOT)


def uses_random_weights(models: str) -> bool:
    """True for the stand-in and for models whose manifest says they were built with random weights."""
    if models in ("stand-in", "standin"):
        return True
    for task in ("sentiment", "zero-shot"):
        manifest = Path(models) / task / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text()).get("random_weights"):
            return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--models",
        default="fixtures/tiny-models",
        help="ONNX model folder (or `stand-in`); default: the committed tiny models",
    )
    args = ap.parse_args()
    os.environ.setdefault("REACTOR_LOG_LEVEL", "WARNING")

    from reactor.db import resolve_url

    url = resolve_url(os.environ.get("DATABASE_URL"))
    os.environ["DATABASE_URL"] = url
    run("sql")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO topics (label) SELECT t FROM unnest(%s::text[]) t "
            "WHERE NOT EXISTS (SELECT 1 FROM topics WHERE label = t)",
            [TOPICS],
        )
        first = conn.execute("SELECT coalesce(max(id), 0) FROM feedbacks").fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO feedbacks (text, product_name, sender) VALUES (%s, %s, %s)", SAMPLES)
    print(f"inserted {len(SAMPLES)} sample feedback rows (ids > {first})", flush=True)
    run("listen", "--models", args.models, "--exit-when-idle", "--poll-interval", "1", "--no-opensearch")

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT f.id, left(coalesce(f.text, '<NULL>'), 48), a.sentiment_label, a.sentiment_score, "
            "(SELECT string_agg(t->>'label' || ' ' || round((t->>'score')::numeric, 2), ', ') "
            "   FROM jsonb_array_elements(a.topics) t), "
            "(SELECT string_agg(k, ' ' ORDER BY k) FROM jsonb_object_keys(a.word_counts) k), a.sentiment_model "
            "FROM feedbacks f JOIN reactor.feedback_analysis a ON a.feedback_id = f.id "
            "WHERE f.id > %s ORDER BY f.id",
            [first],
        ).fetchall()
        words = conn.execute("SELECT word, count FROM reactor.word_counts ORDER BY count DESC, word LIMIT 8").fetchall()
    random_weights = uses_random_weights(args.models)
    if random_weights:
        print()
        print("RANDOM WEIGHTS: the models were built locally with random weights (the Hugging Face Hub is not")
        print("reachable here), so the sentiment and topic labels below show the plumbing, not real analysis.")
    print()
    header = f"{'id':>4}  {'text':<48}  {'sentiment':<16}  {'topics':<40}  words"
    print(header)
    print("-" * len(header))
    for fid, text, label, score, topics, kws, _model in rows:
        sentiment = f"{label} {score:.2f}" if label else "-"
        print(f"{fid:>4}  {text.replace(chr(10), ' '):<48}  {sentiment:<16}  {(topics or '-')[:40]:<40}  {kws or '-'}")
    print()
    print("top words:", ", ".join(f"{w} ({c})" for w, c in words))
    print(f"{len(rows)} of {len(SAMPLES)} sample rows analysed.", "(random weights)" if random_weights else "")
    if len(rows) != len(SAMPLES):
        raise SystemExit("some sample rows were not analysed: see `reactor status`")


if __name__ == "__main__":
    main()
