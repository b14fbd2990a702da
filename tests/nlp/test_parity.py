"""Our ONNX scores vs the transformers pipelines on the same (tiny, random-weight) checkpoints.

fp32 must match within 1e-5.  The reference tokenizer is the checkpoint's own with
``split_special_tokens=True`` (our runtime's deliberate choice: "</s>"/"[SEP]" typed by a customer is
text, not structure), and the sentiment pipeline is called with ``truncation=True`` (without it a text
over the max length crashes the pipeline; the runtime truncates).  The zero-shot pipeline refuses an
empty text, so for "" the reference is the same maths done directly (``reference_zero_shot``).

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
    from reactor.nlp.export import PROBE_TEXTS
    from reactor.nlp.tiny import feedback_corpus

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


@pytest.fixture(scope="module")
def pipes(tiny_dir: Path):  # -> (sentiment pipeline, zero-shot pipeline, model, tokenizer)
    from transformers import AutoTokenizer, pipeline

    from reactor.nlp.export import load_checkpoint

    ck = tiny_dir / "checkpoints"
    sent = pipeline(
        "sentiment-analysis",
        model=str(ck / "sentiment"),
        device="cpu",
        tokenizer=AutoTokenizer.from_pretrained(ck / "sentiment", split_special_tokens=True),
    )
    zs = pipeline(
        "zero-shot-classification",
        model=str(ck / "zero-shot"),
        device="cpu",
        tokenizer=AutoTokenizer.from_pretrained(ck / "zero-shot", split_special_tokens=True),
    )
    model, tok = load_checkpoint(str(ck / "zero-shot"))
    return sent, zs, model, tok


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
def test_zero_shot_matches_pipeline(pipes, onnx_dir: Path, precision: str, tol: float) -> None:
    from reactor.nlp.export import reference_zero_shot

    _, zs, model, tok = pipes
    sample = texts()
    ours = OnnxZeroShot(onnx_dir / "zero-shot", precision=precision, device="cpu", batch_size=8)
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


def test_export_refuses_bad_parity(tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reactor.nlp.export as export

    monkeypatch.setattr(export, "FP32_TOLERANCE", -1.0)
    dest = tmp_path / "sentiment"
    with pytest.raises(export.ExportError, match="refusing to write"):
        export.export_task("sentiment", str(tiny_dir / "checkpoints" / "sentiment"), dest, log=lambda _m: None)
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_cli_unreachable_hub_points_to_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import reactor.nlp.export as export
    from reactor.nlp.export_cli import export_models

    monkeypatch.setattr(export, "_hub_reachable", lambda timeout=5.0: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty cache
    result = CliRunner().invoke(export_models, ["--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Hugging Face Hub is unreachable" in result.output and "--tiny" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "sentiment").exists()


def test_cli_tiny_builds_and_exports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from reactor.nlp.export_cli import export_models
    from reactor.nlp.onnx import load_models

    monkeypatch.chdir(tmp_path)  # checkpoints go to ./.cache/models_tiny
    result = CliRunner().invoke(export_models, ["--tiny", "--out", "out"])
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.output
    s, z = load_models(tmp_path / "out", device="cpu")
    assert s.random_weights and z.random_weights
    assert (tmp_path / ".cache" / "models_tiny" / "sentiment" / "config.json").is_file()


def test_tiny_build_is_reproducible(tiny_dir: Path, tmp_path: Path) -> None:
    import hashlib

    from reactor.nlp.tiny import build_sentiment

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    build_sentiment(tmp_path / "s", "tiny")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha(tmp_path / "s" / name) == sha(tiny_dir / "checkpoints" / "sentiment" / name), name
