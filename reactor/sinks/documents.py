"""Search documents built from current PostgreSQL state, and the index mappings they are written into.

Why documents are built this way:
- Rows are read as JSON text made by PostgreSQL (`to_jsonb(row)::text`), never as Python objects: psycopg
  cannot load a timestamptz of `infinity` or year 10000 into a datetime, nor a numeric of 5,000 digits into an
  int, and one such row used to stop all indexing. Parsing happens per row, so a row that still cannot be built
  fails alone: its outbox row is parked with the error and the rest flow.
- Values outside what the index can hold are made safe, never guessed: a date outside years 1–9999 (including
  `±infinity` and BC dates) becomes null; a number outside 64-bit integer / double range is carried as its
  decimal string; NaN and ±Infinity become null; strings inside `attributes` are cut to 8 KiB (a longer term
  cannot be indexed; the full value stays in PostgreSQL).
- The user's `feedbacks` table is read unqualified (through the connection's search_path, like every other
  query of the reactor) and only `id` and `text` are required: `product_name`, `sender`, `created_at` and
  `updated_at` become top-level fields when they exist, every other column goes under `attributes`, a
  `flat_object` field (one mapping entry whatever the columns; values searchable by dotted path).
- The word index also holds one document, `accumulated_word_counts`, the original worker's word → count
  object. Its `word_counts` is stored but not indexed (`enabled: false`): a `flat_object` of 50,000 words
  took ~1 s per update and 500,000 words ran a 512 MB node out of heap; disabled, 1,000,000 words (22 MB)
  index in ~2 s. The per-word documents are what aggregations use.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from reactor.sql import q

if TYPE_CHECKING:
    from psycopg import AsyncConnection

SCHEMA_VERSION = 2  # in each index's mapping `_meta`; 2 added `attributes` and the word-total fields
TOTAL_DOC_ID = "accumulated_word_counts"  # never a word: word tokens contain no '_' (reactor.nlp.words)
MAX_ID_BYTES = 512  # OpenSearch's _id limit
MAX_ATTRIBUTE_BYTES = 8192  # flat_object values are terms; Lucene refuses terms above 32766 bytes
TOP_LEVEL = ("product_name", "sender", "created_at", "updated_at")
_INT_RANGE = (-(2**63), 2**64 - 1)

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
FEEDBACK_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "_meta": {"reactor_schema": SCHEMA_VERSION},
    "properties": {
        "feedback_id": {"type": "long"},
        "text": {"type": "text"},
        "product_name": _KEYWORD,
        "sender": _KEYWORD,
        "created_at": {"type": "date"},
        "updated_at": {"type": "date"},
        "sentiment": {
            "properties": {"label": {"type": "keyword"}, "score": {"type": "float"}},
        },
        "topics": {
            "type": "nested",
            "properties": {"label": {"type": "keyword"}, "score": {"type": "float"}},
        },
        "topic_labels": {"type": "keyword"},  # flat copy for simple terms aggregations
        "word_total": {"type": "integer"},
        "analyzed_at": {"type": "date"},
        "models": {
            "properties": {"sentiment": {"type": "keyword"}, "zero_shot": {"type": "keyword"}},
        },
        "topic_set": {"type": "keyword"},
        "attributes": {"type": "flat_object"},  # the user's other columns
    },
}
WORD_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "_meta": {"reactor_schema": SCHEMA_VERSION},
    "properties": {
        "word": {"type": "keyword"},
        "count": {"type": "long"},
        # Only in the accumulated_word_counts document:
        "word_counts": {"type": "object", "enabled": False},
        "vocabulary": {"type": "long"},
        "total": {"type": "long"},
        "updated_at": {"type": "date"},
    },
}
INDEX_SETTINGS: dict[str, Any] = {"index": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "1s"}}
MAPPINGS = {"feedback": FEEDBACK_MAPPING, "word": WORD_MAPPING}


def index_body(kind: str) -> dict[str, Any]:
    """Create-index body (settings + explicit strict mapping) for 'feedback' or 'word'."""
    return {"settings": INDEX_SETTINGS, "mappings": MAPPINGS[kind]}


# -- values -----------------------------------------------------------------------------------------------------


def load_json(text: str) -> Any:
    """Parse PostgreSQL's JSON text; numbers beyond 64-bit/double range are kept as their decimal strings."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # orjson refuses numbers it cannot hold; the stdlib parser takes hooks
        return json.loads(text, parse_int=_int_or_text, parse_float=_float_or_text)


def _int_or_text(text: str) -> int | str:
    return int(text) if len(text) <= 20 and _INT_RANGE[0] <= int(text) <= _INT_RANGE[1] else text


def _float_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def date_value(value: Any) -> str | None:
    """An ISO date-time OpenSearch accepts, or None for anything outside years 1–9999 (or not a date)."""
    if not isinstance(value, str) or value.endswith(" BC"):
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return (parsed.astimezone(UTC) if parsed.tzinfo else parsed).isoformat()
    except (ValueError, OverflowError):  # 'infinity', year 10000, or an offset that crosses year 1
        return None


def number_value(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def safe_value(value: Any) -> Any:
    """A JSON value that orjson can write and a flat_object can index."""
    if isinstance(value, str):
        raw = value.encode()
        return value if len(raw) <= MAX_ATTRIBUTE_BYTES else raw[:MAX_ATTRIBUTE_BYTES].decode(errors="ignore")
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): safe_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [safe_value(v) for v in value]
    return str(value)


# -- documents --------------------------------------------------------------------------------------------------


def feedback_doc(analysis: dict[str, Any], feedback: dict[str, Any]) -> dict[str, Any]:
    """The feedback-analysis document from the two rows (as parsed JSON objects)."""
    topics = analysis.get("topics") or []
    labels = [t.get("label") for t in topics if isinstance(t, dict) and t.get("label") is not None]
    counts = analysis.get("word_counts") or {}
    total = sum(v for v in counts.values() if isinstance(v, int)) if isinstance(counts, dict) else 0
    text = feedback.get("text")
    doc: dict[str, Any] = {
        "feedback_id": analysis["feedback_id"],
        "text": text if text is None or isinstance(text, str) else orjson.dumps(safe_value(text)).decode(),
        "sentiment": {"label": analysis.get("sentiment_label"), "score": number_value(analysis.get("sentiment_score"))},
        "topics": topics,
        "topic_labels": labels,
        "word_total": total,
        "analyzed_at": date_value(analysis.get("analyzed_at")),
        "models": {"sentiment": analysis.get("sentiment_model"), "zero_shot": analysis.get("zero_shot_model")},
        "topic_set": analysis.get("topic_set"),
    }
    for name in TOP_LEVEL:
        if name in feedback:
            value = feedback[name]
            if name.endswith("_at"):
                doc[name] = date_value(value)
            else:
                doc[name] = value if value is None or isinstance(value, str) else str(safe_value(value))
    attributes = {k: safe_value(v) for k, v in feedback.items() if k not in ("id", "text", *TOP_LEVEL)}
    if attributes:
        doc["attributes"] = attributes
    return doc


def build_feedback(analysis_json: str, feedback_json: str) -> bytes:
    """One document's bytes; raises for a row that cannot be built (the caller parks it)."""
    return orjson.dumps(feedback_doc(load_json(analysis_json), load_json(feedback_json)))


def word_source(word: str, count: int) -> bytes:
    return orjson.dumps({"word": word, "count": count})


async def fetch_feedback_docs(conn: AsyncConnection[Any], ids: Sequence[int]) -> dict[int, bytes | str]:
    """Document bytes by feedback id, or the error text of a row that cannot be built; absent = no analysis."""
    out: dict[int, bytes | str] = {}
    cur = await conn.execute(q("sink_feedback_docs"), {"ids": list(ids)})
    for feedback_id, analysis_json, feedback_json in await cur.fetchall():
        out[feedback_id] = build_or_error(analysis_json, feedback_json)
    return out


def build_or_error(analysis_json: str, feedback_json: str) -> bytes | str:
    try:
        return build_feedback(analysis_json, feedback_json)
    except Exception as exc:
        return f"cannot build the document: {type(exc).__name__}: {exc}"[:1000]


async def fetch_word_counts(conn: AsyncConnection[Any], words: Sequence[str]) -> dict[str, int]:
    cur = await conn.execute(q("sink_word_counts"), {"words": list(words)})
    return {word: count for word, count in await cur.fetchall()}


async def word_total_source(conn: AsyncConnection[Any]) -> bytes:
    """The accumulated_word_counts document, made from reactor.word_counts in one statement.

    The word → count object is assembled by PostgreSQL and spliced in as JSON text, so a large vocabulary
    costs one aggregate and no Python objects per word.
    """
    cur = await conn.execute(q("sink_word_total"))
    row = await cur.fetchone()
    assert row is not None
    counts_json, vocabulary, total = row
    head = orjson.dumps({"vocabulary": vocabulary, "total": int(total), "updated_at": datetime.now(UTC).isoformat()})
    return head[:-1] + b',"word_counts":' + counts_json.encode() + b"}"


async def iter_docs(conn: AsyncConnection[Any], kind: str, batch: int) -> AsyncIterator[list[tuple[str, bytes | str]]]:
    """Every document of one index as (id, bytes or build error), in batches, from a server-side cursor inside
    the caller's transaction (so a rebuild sees one snapshot)."""
    async with conn.cursor(name=f"reactor_rebuild_{kind}") as cur:
        await cur.execute(q("sink_all_feedback_docs" if kind == "feedback" else "sink_all_word_counts"))
        while rows := await cur.fetchmany(batch):
            if kind == "feedback":
                yield [(str(fid), build_or_error(a, f)) for fid, a, f in rows]
            else:
                yield [(w, word_source(w, c)) for w, c in rows if len(w.encode()) <= MAX_ID_BYTES]
    if kind == "word":
        yield [(TOTAL_DOC_ID, await word_total_source(conn))]
