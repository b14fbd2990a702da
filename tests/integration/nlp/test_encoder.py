"""Token ids prepared ahead (reactor.nlp.encoder): the same ids as encoding on the spot, taken instead of
encoding again, and the same analyses from the committed tiny models."""

from __future__ import annotations

from pathlib import Path

from reactor.enrich import Enricher, Item
from reactor.nlp import encoder as encoder_mod
from reactor.nlp.encoder import Encoder
from reactor.nlp.onnx import load_models

TEXTS = ["Great app, fast delivery!", "late </s> parcel [SEP] again", "Love it 😍 but pricey", "ok", "ok"]


def test_prepared_ids_are_the_ids_and_are_not_encoded_again(onnx_dir: Path):
    fresh = Encoder(onnx_dir / "zero-shot" / "tokenizer.json")
    ahead = Encoder(onnx_dir / "zero-shot" / "tokenizer.json")
    ahead.prepare(TEXTS)
    encoded: list[list[str]] = []
    original = ahead._encode
    ahead._encode = lambda texts: encoded.append(texts) or original(texts)  # type: ignore[method-assign]
    assert ahead.encode([*TEXTS, "not prepared"]) == fresh.encode([*TEXTS, "not prepared"])
    assert encoded == [["not prepared"]]
    assert ahead.encode(TEXTS) == fresh.encode(TEXTS)  # taken once: a second call encodes them again
    assert encoded[-1] == list(dict.fromkeys(TEXTS))


def test_prepared_ids_are_bounded(onnx_dir: Path, monkeypatch):
    monkeypatch.setattr(encoder_mod, "PREPARED_MAX", 3)
    enc = Encoder(onnx_dir / "sentiment" / "tokenizer.json")
    enc.prepare([f"text {i}" for i in range(10)])
    assert list(enc._prepared) == ["text 7", "text 8", "text 9"]


def test_an_enricher_that_tokenized_ahead_gives_the_same_analyses(onnx_dir: Path):
    items = [Item(i, t) for i, t in enumerate([*TEXTS, None, "  "])]
    labels = ["delivery", "price", "support"]
    plain = Enricher(*load_models(onnx_dir, device="cpu")).enrich(items, labels)
    ahead = Enricher(*load_models(onnx_dir, device="cpu"))
    ahead.prepare(items)
    assert ahead.enrich(items, labels) == plain
