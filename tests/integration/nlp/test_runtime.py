"""The ONNX runtime alone (onnxruntime, tokenizers, numpy; no export extra): loading, errors, odd texts,
batching invariance, caching, label validation, no torch import. Zero-shot checks run on both committed
shapes: BART-large's (tiny) and distilbart-mnli-12-1's (tiny, one decoder layer)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reactor.enrich import Analysis, Enricher, Item, topic_set_id
from reactor.nlp.base import SentimentModel, ZeroShotModel
from reactor.nlp.onnx import ModelLoadError, OnnxSentiment, OnnxZeroShot, load_models
from reactor.nlp.quantize import SHIPPED_INT8
from reactor.nlp.session import resolve_device

LABELS = ["delivery", "price", "customer support", "app usability", "billing", "refund"]
TEXTS = [
    "Great app, fast delivery!",
    "",
    "The courier was late again </s> and support never answered [SEP] at all.",
    "Love it 😍👍 but the price 💸 is too high",
    "ctrl\x00\x07\x1b chars\ttabs\nnewline",
    "slow " * 400,
    "ok",
]


@pytest.fixture(scope="module")
def models(onnx_dir: Path) -> tuple[OnnxSentiment, OnnxZeroShot]:
    return load_models(onnx_dir, device="cpu")


@pytest.fixture(params=["bart-large-mnli", "distilbart-mnli-12-1"])
def zs_root(request: pytest.FixtureRequest, onnx_dir: Path, onnx_dir_12_1: Path) -> Path:
    """A folder holding zero-shot/: each committed zero-shot shape in turn."""
    return onnx_dir if request.param == "bart-large-mnli" else onnx_dir_12_1


class CountingSession:
    """Wraps a model's session to count the rows it actually ran (cache hits run none)."""

    def __init__(self, session: object) -> None:
        self.inner, self.rows = session, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def run(self, feeds: dict) -> object:
        self.rows += len(feeds["input_ids"])
        return self.inner.run(feeds)  # type: ignore[attr-defined]


def test_load_models_satisfies_protocols(models: tuple[OnnxSentiment, OnnxZeroShot]) -> None:
    sentiment, zero_shot = models
    assert isinstance(sentiment, SentimentModel)
    assert isinstance(zero_shot, ZeroShotModel)
    assert sentiment.random_weights is True and zero_shot.random_weights is True
    assert sentiment.model_id.startswith("reactor/tiny-random-distilbert-sst2@fp32:")
    assert zero_shot.model_id.startswith("reactor/tiny-random-bart-mnli@fp32:")
    assert sentiment.session.provider == "CPUExecutionProvider"


def test_manifest_records_files_parity_and_random_weights(onnx_dir: Path) -> None:
    import hashlib

    for task in ("sentiment", "zero-shot"):
        m = json.loads((onnx_dir / task / "manifest.json").read_text())
        assert m["random_weights"] is True and m["task"] == task and m["opset"] >= 17
        assert m["precisions"]["fp32"]["parity_vs_pytorch"]["max_abs_diff"] <= 1e-5
        assert "drift_vs_pytorch" in m["precisions"]["int8"]
        assert m["precisions"]["int8"]["int8_config"]["name"] == SHIPPED_INT8[task]  # which recipe made it
        static = m["precisions"]["int8-static"]
        assert static["calibration"]["texts"] > 50 and static["drift_vs_pytorch"]["batch_neighbour_max_diff"] < 1e-6
        for name, info in m["files"].items():
            assert hashlib.sha256((onnx_dir / task / name).read_bytes()).hexdigest() == info["sha256"]


def test_odd_texts_do_not_crash(models: tuple[OnnxSentiment, OnnxZeroShot], zs_root: Path) -> None:
    sentiment, _ = models
    zero_shot = OnnxZeroShot(zs_root / "zero-shot", device="cpu")
    out = sentiment.predict([*TEXTS, None])  # type: ignore[list-item]
    assert len(out) == len(TEXTS) + 1
    assert all(label in ("NEGATIVE", "POSITIVE") and 0.5 <= score <= 1.0 for label, score in out)
    assert out[-1] == out[1]  # None is scored like ""
    topics = zero_shot.classify(TEXTS, LABELS)
    for row in topics:
        assert sorted(label for label, _ in row) == sorted(LABELS)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert sentiment.predict([]) == [] and zero_shot.classify([], LABELS) == []
    assert zero_shot.classify(["x"], []) == [[]]


def test_long_text_is_truncated_to_max_length(models: tuple[OnnxSentiment, OnnxZeroShot]) -> None:
    sentiment, zero_shot = models
    base = "slow " * 300  # well over the tiny max length (128)
    # anything after the cut is ignored
    assert sentiment.predict([base + "great"]) == sentiment.predict([base + "awful"])
    a, b = zero_shot.classify([base + "great", base + "awful"], LABELS)
    assert dict(a) == pytest.approx(dict(b), abs=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "int8-static"])
@pytest.mark.parametrize("batch_size", [1, 2, 3, 16])
def test_scores_do_not_depend_on_batch_neighbours(
    onnx_dir: Path, zs_root: Path, batch_size: int, precision: str
) -> None:
    """fp32 and calibrated int8 give a text the same scores whatever else shares its batch (dynamic int8
    does not: its activation scales come from the whole batch)."""
    kw = {"precision": precision, "device": "cpu", "cache_size": 0}
    alone_s = OnnxSentiment(onnx_dir / "sentiment", batch_size=1, **kw)
    alone_z = OnnxZeroShot(zs_root / "zero-shot", batch_size=1, **kw)
    s = OnnxSentiment(onnx_dir / "sentiment", batch_size=batch_size, **kw)
    z = OnnxZeroShot(zs_root / "zero-shot", batch_size=batch_size, **kw)
    for text, (label, score) in zip(TEXTS, s.predict(TEXTS), strict=True):
        ((want_label, want),) = alone_s.predict([text])
        assert label == want_label and score == pytest.approx(want, abs=1e-6)
    for text, row in zip(TEXTS, z.classify(TEXTS, LABELS), strict=True):
        assert dict(row) == pytest.approx(dict(alone_z.classify([text], LABELS)[0]), abs=1e-6)


def test_cache_is_keyed_by_label_set(onnx_dir: Path) -> None:
    z = OnnxZeroShot(onnx_dir / "zero-shot", device="cpu", cache_size=8)
    z.session = counter = CountingSession(z.session)  # type: ignore[assignment]
    first = z.classify(["refund please", "refund please"], LABELS)
    assert first[0] == first[1] and counter.rows == len(LABELS)  # the repeated text ran once
    assert z.classify(["refund please"], LABELS) == first[:1] and counter.rows == len(LABELS)  # a hit
    other = z.classify(["refund please"], LABELS[:2])  # another label set: computed again
    assert len(other[0]) == 2 and counter.rows == len(LABELS) + 2
    assert dict(other[0]) == pytest.approx({k: v for k, v in first[0] if k in LABELS[:2]}, abs=1e-6)
    for i in range(20):  # bounded: the oldest entries are evicted
        z.classify([f"text {i}"], LABELS)
    before = counter.rows
    z.classify(["text 19"], LABELS)
    assert counter.rows == before  # recent: still cached
    z.classify(["refund please"], LABELS)
    assert counter.rows == before + len(LABELS)  # evicted: computed again


def test_missing_folder_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no ONNX models in .*sentiment.*reactor export-models --tiny"):
        load_models(tmp_path / "nowhere", device="cpu")


def test_missing_precision_file_says_what_to_run(onnx_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "models"
    shutil.copytree(onnx_dir, copy)
    (copy / "sentiment" / "model.int8.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"no int8 ONNX model.*--quantize int8"):
        load_models(copy, precision="int8", device="cpu")
    (copy / "zero-shot" / "model.int8-static.onnx").unlink()
    with pytest.raises(ModelLoadError, match=r"no int8-static ONNX model.*--quantize int8-static"):
        load_models(copy, precision="int8-static", device="cpu")
    (copy / "zero-shot" / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match=r"manifest.json missing"):
        load_models(copy, device="cpu")
    with pytest.raises(ModelLoadError, match="precision"):
        load_models(onnx_dir, precision="int4")


def test_fp16_needs_cuda(onnx_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA present: fp16 is allowed")
    copy = tmp_path / "models"
    shutil.copytree(onnx_dir, copy)
    shutil.copyfile(copy / "sentiment" / "model.onnx", copy / "sentiment" / "model.fp16.onnx")
    with pytest.raises(ModelLoadError, match="fp16 models need CUDA"):
        OnnxSentiment(copy / "sentiment", precision="fp16", device="cpu")


def test_device_is_a_parameter_not_the_environment(monkeypatch: pytest.MonkeyPatch, onnx_dir: Path) -> None:
    assert resolve_device(" CPU ") == "cpu" and resolve_device("") == resolve_device(None) == "auto"
    with pytest.raises(ModelLoadError, match="device must be one of"):
        load_models(onnx_dir, device="tpu")
    monkeypatch.setenv("REACTOR_DEVICE", "tpu")  # the caller's settings read it, the runtime does not
    sentiment, _ = load_models(onnx_dir)
    assert sentiment.session.provider == "CPUExecutionProvider"
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ModelLoadError, match="onnxruntime-gpu"):
            load_models(onnx_dir, device="cuda")


@pytest.mark.parametrize("precision", ["int8", "int8-static"])
def test_int8_loads_and_scores(onnx_dir: Path, precision: str) -> None:
    sentiment, zero_shot = load_models(onnx_dir, precision=precision, device="cpu")
    assert f"@{precision}:" in sentiment.model_id and sentiment.random_weights
    assert len(sentiment.predict(TEXTS)) == len(TEXTS)
    assert len(zero_shot.classify(TEXTS, LABELS)[0]) == len(LABELS)


def test_runtime_does_not_import_torch(onnx_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from reactor.nlp.onnx import load_models
        s, z = load_models({str(onnx_dir)!r}, precision="int8", device="cpu")
        s.predict(["hello </s> there"]); z.classify(["hello"], ["a", "b"])
        heavy = sorted(m for m in ("torch", "transformers", "optimum", "onnx") if m in sys.modules)
        print(",".join(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime imported {out.stdout.strip()}"


def test_batches_respect_a_token_budget(onnx_dir: Path) -> None:
    s = OnnxSentiment(onnx_dir / "sentiment", device="cpu", batch_size=8, cache_size=0)
    rows = [[5] * 10, [5] * 3, [5] * 3, [5] * 3]
    shapes = [(idx, feeds["input_ids"].shape) for idx, feeds in s.batches(rows, max_tokens=12)]
    assert shapes == [([1, 2, 3], (3, 3)), ([0], (1, 10))]  # sorted by length; the long row goes alone
    assert [idx for idx, _ in s.batches(rows)] == [[1, 2, 3, 0]]  # no budget: batch_size rows
    assert [idx for idx, _ in s.batches(rows, max_tokens=1)] == [[1], [2], [3], [0]]  # at least one row


def test_a_label_too_long_for_the_model_is_skipped_not_fatal(onnx_dir: Path, zs_root: Path) -> None:
    """A hypothesis that fills the max length alone would fail every pair: the label is set aside with a
    reason, the other labels keep working, and the topic set still names the labels as read."""
    sentiment, _ = load_models(onnx_dir, device="cpu")
    zero_shot = OnnxZeroShot(zs_root / "zero-shot", device="cpu")
    huge = "very " * zero_shot.max_length  # ~1 token per word: longer than the model's max length
    usable, skipped = zero_shot.split_labels([*LABELS, huge])
    assert usable == LABELS and list(skipped) == [huge]
    assert f"max length of {zero_shot.max_length}" in skipped[huge]
    with pytest.raises(ValueError, match="can't be scored"):  # called directly: a clear error, not ORT's
        zero_shot.classify(["hello"], [huge])

    enricher = Enricher(sentiment, zero_shot)
    results = enricher.enrich([Item(1, "late delivery"), Item(2, "great price")], [*LABELS, huge])
    assert all(isinstance(r, Analysis) for r in results)
    assert enricher.skipped_labels == skipped
    for r in results:
        assert isinstance(r, Analysis) and {label for label, _ in r.topics} <= set(LABELS)
        assert r.topic_set == topic_set_id([*LABELS, huge])
    enricher.enrich([Item(3, "ok")], LABELS)  # a later label set without it: nothing skipped
    assert enricher.skipped_labels == {}


def test_a_label_that_just_fits_is_kept(onnx_dir: Path) -> None:
    zero_shot = OnnxZeroShot(onnx_dir / "zero-shot", device="cpu")
    words: list[str] = []
    while (
        len(zero_shot.encoder.encode([zero_shot.hypothesis_template.format(" ".join([*words, "ok"]))])[0])
        + (zero_shot.template.n_special)
        < zero_shot.max_length
    ):
        words.append("ok")  # the longest label that still leaves one token of room for the text
    label = " ".join(words)
    usable, skipped = zero_shot.split_labels([label])
    assert usable == [label] and not skipped, skipped
    [row] = zero_shot.classify(["a text"], [label])
    assert 0.0 <= row[0][1] <= 1.0
