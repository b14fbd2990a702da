"""`reactor show ID` and `reactor failed`: one feedback's whole story, and everything that is parked."""

from __future__ import annotations

import sys
from typing import Any

import click

from reactor import operations
from reactor.cli.common import CONTEXT, echo_json, open_db
from reactor.logs import fold

TOP_WORDS = 10
# reactor.failed.cause, as people read it: a crash-parked row killed the process each time it ran alone
CAUSES = {"crash": "killed the process", "error": "error"}


@click.command(context_settings=CONTEXT, short_help="One feedback: text, analysis, queue and search state.")
@click.argument("feedback_id", metavar="ID", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show(feedback_id: int, as_json: bool) -> None:
    """Show one feedback row: its text, sentiment, topics with scores, words, the model ids, whether it waits
    in the queue or was parked, and the state of its search document. Exit 1 if nothing is known about ID.

    \b
    Example:
      reactor show 42
      reactor show 42 --json | jq .analysis.topics
    """
    _, conn = open_db()
    with conn:
        doc = operations.show(conn, feedback_id)
    found = doc["feedback"] or doc["analysis"] or doc["queue"] or doc["failed"] or doc["search_document"]
    if as_json:
        echo_json(doc)
    elif not found:
        click.echo(f"feedback {feedback_id}: not found (no row, no analysis, no queued or parked work)", err=True)
    else:
        for line in render_show(doc):
            click.echo(line)
    sys.exit(0 if found else 1)


def render_show(doc: dict[str, Any]) -> list[str]:
    """The human view of one feedback (`show`'s JSON document)."""
    fid, feedback, analysis = doc["id"], doc["feedback"], doc["analysis"]
    if feedback is None:
        lines = [f"feedback {fid}: the row no longer exists (deleted)"]
    else:
        others = {k: v for k, v in feedback.items() if k not in ("id", "text") and v not in (None, "", [], {})}
        lines = [f"feedback {fid}: {fold(feedback.get('text'), 300) if feedback.get('text') else '(no text)'}"]
        lines += [f"  {k}: {fold(v, 120)}" for k, v in others.items()]
    if analysis is None:
        lines.append("analysis: none yet")
    else:
        score = analysis.get("sentiment_score")
        lines.append(
            f"sentiment: {analysis.get('sentiment_label')}" + (f" {score:.3f}" if isinstance(score, float) else "")
        )
        topics = ", ".join(f"{t['label']} {t['score']:.3f}" for t in analysis.get("topics") or [])
        lines.append(f"topics: {topics or '-'}")
        words = sorted((analysis.get("word_counts") or {}).items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{w} {c}" for w, c in words[:TOP_WORDS])
        more = f" (+{len(words) - TOP_WORDS} more)" if len(words) > TOP_WORDS else ""
        lines.append(f"words: {shown or '-'}{more}")
        lines.append(
            f"models: sentiment {analysis.get('sentiment_model')}, zero-shot {analysis.get('zero_shot_model')}, "
            f"topic set {analysis.get('topic_set')}"
        )
        lines.append(f"analysed at {analysis.get('analyzed_at')} (enqueued {analysis.get('enqueued_at')})")
    if not doc["queue"]:
        lines.append("queue: nothing waiting")
    for item in doc["queue"]:
        if "id" not in item:  # still in the writers' inbox: promoted into the queue by the next claim
            lines.append(f"queue: {item['op']} captured at {item['enqueued_at']}, waiting for a reactor")
            continue
        state = "leased by " + str(item["claimed_by"]) if item.get("claimed_by") else f"ready from {item['not_before']}"
        error = f", last error: {fold(item['last_error'], 200)}" if item.get("last_error") else ""
        crashes = f", its batch died with it alone {item['crashes']}x" if item.get("crashes") else ""
        lines.append(f"queue: {item['op']} waiting, attempt {item['attempts']}, {state}{crashes}{error}")
    for item in doc["failed"]:
        lines.append(
            f"parked ({CAUSES.get(item.get('cause'), 'error')}): {item['op']} after {item['attempts']} attempts "
            f"at {item['failed_at']}: {fold(item['error'], 200)} (reactor retry-failed)"
        )
    search = doc["search_document"]
    if search is None:
        lines.append("search document: nothing pending in the outbox")
    elif search.get("parked_at"):
        lines.append(
            f"search document: parked at {search['parked_at']}: {fold(search.get('last_error'), 200)} "
            "(reactor retry-failed --only outbox)"
        )
    else:
        error = f", last error: {fold(search['last_error'], 200)}" if search.get("last_error") else ""
        lines.append(f"search document: {search['action']} pending, {search['attempts']} attempts{error}")
    return lines


@click.command(context_settings=CONTEXT, short_help="List parked rows and search documents with their errors.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    default=50,
    show_default=True,
    help="Show at most this many of each.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def failed(limit: int, as_json: bool) -> None:
    """List feedback rows parked after max_attempts and search documents parked after a permanent OpenSearch
    error, newest first, each with its error. Fix the cause, then `reactor retry-failed`.

    \b
    Example:
      reactor failed --limit 10
      reactor failed --json | jq '.rows[].error'
    """
    _, conn = open_db()
    with conn:
        doc = operations.failed(conn, limit)
    rows, docs = doc["rows"], doc["documents"]
    if as_json:
        echo_json(doc)
        return
    crashed = doc["rows_crashed"]
    click.echo(
        f"parked feedback rows: {doc['rows_total']}"
        + (f" ({crashed} killed the process, {doc['rows_total'] - crashed} failed)" if doc["rows_total"] else "")
        + (f", newest {len(rows)} below" if doc["rows_total"] > len(rows) else "")
    )
    for r in rows:
        click.echo(
            f"  feedback {r['feedback_id']} ({CAUSES.get(r['cause'], 'error')}; {r['op']}, {r['attempts']} attempts, "
            f"{r['failed_at']:%Y-%m-%d %H:%M}): {fold(r['error'], 200)}"
        )
    click.echo(
        f"parked search documents: {doc['documents_total']}"
        + (f" (newest {len(docs)})" if doc["documents_total"] > len(docs) else "")
    )
    for d in docs:
        click.echo(
            f"  {d['index_kind']} {d['doc_id']} ({d['action']}, {d['attempts']} attempts, "
            f"{d['parked_at']:%Y-%m-%d %H:%M}): {fold(d['error'], 200)}"
        )
    if doc["rows_total"] or doc["documents_total"]:
        click.echo("after fixing the cause: reactor retry-failed [--only queue|outbox]")
