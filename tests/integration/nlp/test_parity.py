"""Our ONNX scores (the committed tiny fixtures) vs the transformers pipelines on the random checkpoints
they were exported from, rebuilt here (seeded, identical files).

fp32 must match within 1e-5, for BART-large's shape and for distilbart-mnli-12-1's (one decoder layer).
The reference tokenizer is the checkpoint's own with ``split_special_tokens=True`` (our runtime's
deliberate choice: "</s>"/"[SEP]" typed by a customer is text, not structure), and the sentiment pipeline
is called with ``truncation=True`` (without it a text over the max length crashes the pipeline; the
runtime truncates).  The zero-shot pipeline refuses an empty text, so for "" the reference is the same
maths done directly (``reference_zero_shot``).

int8 is opt-in and approximate: dynamic quantization picks activation scales per batch tensor, so the
scores move with the batch neighbours; static (calibrated) int8 fixes the scales at export, so they don't.
On these tiny 32-wide models the drift is large (bounded here by INT8_TOL); full-size figures are in
manifest.json and the benchmark report.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reactor.nlp.onnx import OnnxSentiment, OnnxZeroShot

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("optimum")

pytestmark = pytest.mark.export

FP32_TOL = 1e-5
INT8_TOL = 0.15  # measured on the tiny models: max |Δ| ~0.10 (sentiment), ~0.03 (zero-shot)
LABELS = ["delivery", "price", "customer support", "app usability", "billing", "refund", "packaging"]


def texts() -> list[str]:
    from reactor.devtools.corpus import feedback_corpus
    from reactor.nlp.parity import PROBE_TEXTS

    return [
        *PROBE_TEXTS,
        "The app is great",
        "Terrible.",
        "x" * 3000,  # one giant word
        "word " * 126,  # right at the tiny max length
        "Hi </s></s><s> team, <pad><mask> cancel [CLS][PAD] my order",
        "🙂" * 200,
        *feedback_corpus(20, seed=4242),
    ]


SHAPES = {"bart-large-mnli": "zero-shot", "distilbart-mnli-12-1": "zero-shot-distilbart-mnli-12-1"}


def _pipeline(task: str, folder: Path):  # -> transformers Pipeline
    from transformers import AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(folder, split_special_tokens=True)
    return pipeline(task, model=str(folder), device="cpu", tokenizer=tok)


@pytest.fixture(scope="module")
def pipes(tiny_checkpoints: Path):  # -> (sentiment pipeline, zero-shot pipeline, model, tokenizer)
    from reactor.nlp.export import load_checkpoint

    model, tok = load_checkpoint(str(tiny_checkpoints / "zero-shot"))
    sent = _pipeline("sentiment-analysis", tiny_checkpoints / "sentiment")
    return sent, _pipeline("zero-shot-classification", tiny_checkpoints / "zero-shot"), model, tok


@pytest.fixture(scope="module", params=list(SHAPES))
def zero_shot_pair(request: pytest.FixtureRequest, tiny_checkpoints: Path, onnx_dir: Path, onnx_dir_12_1: Path):
    """(zero-shot pipeline, model, tokenizer, ONNX folder) for each committed zero-shot shape."""
    from reactor.nlp.export import load_checkpoint

    ck = tiny_checkpoints / SHAPES[request.param]
    model, tok = load_checkpoint(str(ck))
    folder = onnx_dir if request.param == "bart-large-mnli" else onnx_dir_12_1
    return _pipeline("zero-shot-classification", ck), model, tok, folder / "zero-shot"


@pytest.mark.parametrize("precision,tol", [("fp32", FP32_TOL), ("int8", INT8_TOL), ("int8-static", INT8_TOL)])
def test_sentiment_matches_pipeline(pipes, onnx_dir: Path, precision: str, tol: float) -> None:
    sent = pipes[0]
    sample = texts()
    ours = OnnxSentiment(onnx_dir / "sentiment", precision=precision, device="cpu", batch_size=8).predict(sample)
    for text, (label, score) in zip(sample, ours, strict=True):
        want = sent(text, truncation=True)[0]
        p_pos = score if label == "POSITIVE" else 1 - score
        want_pos = want["score"] if want["label"] == "POSITIVE" else 1 - want["score"]
        assert p_pos == pytest.approx(want_pos, abs=tol), repr(text[:60])
        if precision == "fp32":
            assert label == want["label"], repr(text[:60])


@pytest.mark.parametrize("precision,tol", [("fp32", FP32_TOL), ("int8", INT8_TOL), ("int8-static", INT8_TOL)])
def test_zero_shot_matches_pipeline(zero_shot_pair, precision: str, tol: float) -> None:
    from reactor.nlp.parity import reference_zero_shot

    zs, model, tok, folder = zero_shot_pair
    sample = texts()
    ours = OnnxZeroShot(folder, precision=precision, device="cpu", batch_size=8)
    got = ours.classify(sample, LABELS)
    for text, row in zip(sample, got, strict=True):
        if text:
            res = zs(text, LABELS, multi_label=True)
            want = dict(zip(res["labels"], res["scores"], strict=True))
        else:  # the pipeline rejects "": same maths, directly
            want = reference_zero_shot(model, tok, [text], LABELS)[0]
        assert dict(row) == pytest.approx(want, abs=tol), repr(text[:60])
        if precision == "fp32":
            assert [s for _, s in row] == sorted(want.values(), reverse=True) or max(
                abs(a - b) for a, b in zip([s for _, s in row], sorted(want.values(), reverse=True), strict=True)
            ) <= FP32_TOL


def test_special_tokens_in_text_are_text(pipes, onnx_dir: Path) -> None:
    """A "</s>" typed by a customer must not be BART's eos (the unsplit tokenizer makes it one)."""
    from transformers import AutoTokenizer

    _, _, _, tok = pipes
    unsplit = AutoTokenizer.from_pretrained(Path(tok.name_or_path))
    text = "late </s> again"
    eos = tok.eos_token_id
    assert tok(text, "This example is price.").input_ids.count(eos) == 3
    assert unsplit(text, "This example is price.").input_ids.count(eos) == 4
    z = OnnxZeroShot(onnx_dir / "zero-shot", device="cpu")
    assert z.encoder.encode([text])[0] == tok(text, add_special_tokens=False).input_ids


def test_token_ids_match_transformers_tokenizer(pipes, onnx_dir: Path) -> None:
    """Our pair rows are exactly what the BART tokenizer builds, truncation included."""
    _, _, _, tok = pipes
    z = OnnxZeroShot(onnx_dir / "zero-shot", device="cpu")
    hyp = "This example is billing."
    for text in texts():
        want = tok(text, hyp, truncation="only_first").input_ids
        ids = z.encoder.encode([text])[0]
        t = z.template
        h = z._hypothesis("billing")
        room = z.max_length - t.n_special - len(h)
        assert [*t.prefix, *ids[:room], *t.middle, *h, *t.suffix] == want, repr(text[:60])
