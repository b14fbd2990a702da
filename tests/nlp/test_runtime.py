"""The ONNX runtime alone: loading, errors, odd texts, batching invariance, caching, no torch import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reactor.nlp.base import SentimentModel, ZeroShotModel
from reactor.nlp.onnx import ModelLoadError, OnnxSentiment, OnnxZeroShot, load_models, resolve_device

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
        static = m["precisions"]["int8-static"]
        assert static["calibration"]["texts"] > 50 and static["drift_vs_pytorch"]["batch_neighbour_max_diff"] < 1e-6
        for name, info in m["files"].items():
            assert hashlib.sha256((onnx_dir / task / name).read_bytes()).hexdigest() == info["sha256"]


def test_odd_texts_do_not_crash(models: tuple[OnnxSentiment, OnnxZeroShot]) -> None:
    sentiment, zero_shot = models
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
def test_scores_do_not_depend_on_batch_neighbours(onnx_dir: Path, batch_size: int, precision: str) -> None:
    """fp32 and calibrated int8 give a text the same scores whatever else shares its batch (dynamic int8
    does not: its activation scales come from the whole batch)."""
    kw = {"precision": precision, "device": "cpu", "cache_size": 0}
    alone_s = OnnxSentiment(onnx_dir / "sentiment", batch_size=1, **kw)
    alone_z = OnnxZeroShot(onnx_dir / "zero-shot", batch_size=1, **kw)
    s = OnnxSentiment(onnx_dir / "sentiment", batch_size=batch_size, **kw)
    z = OnnxZeroShot(onnx_dir / "zero-shot", batch_size=batch_size, **kw)
    for text, (label, score) in zip(TEXTS, s.predict(TEXTS), strict=True):
        ((want_label, want),) = alone_s.predict([text])
        assert label == want_label and score == pytest.approx(want, abs=1e-6)
    for text, row in zip(TEXTS, z.classify(TEXTS, LABELS), strict=True):
        assert dict(row) == pytest.approx(dict(alone_z.classify([text], LABELS)[0]), abs=1e-6)


def test_cache_is_keyed_by_label_set(onnx_dir: Path) -> None:
    z = OnnxZeroShot(onnx_dir / "zero-shot", device="cpu", cache_size=8)
    first = z.classify(["refund please", "refund please"], LABELS)
    assert first[0] == first[1] and len(z._cache) == 1
    assert z.classify(["refund please"], LABELS) == first[:1]
    other = z.classify(["refund please"], LABELS[:2])
    assert [label for label, _ in other[0]] != [label for label, _ in first[0]] or len(other[0]) == 2
    assert len(other[0]) == 2 and len(z._cache) == 2
    assert dict(other[0]) == pytest.approx({k: v for k, v in first[0] if k in LABELS[:2]}, abs=1e-6)
    for i in range(20):  # bounded
        z.classify([f"text {i}"], LABELS)
    assert len(z._cache) == 8


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
    pytest.importorskip("onnx")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA present: fp16 is allowed")
    copy = tmp_path / "models"
    shutil.copytree(onnx_dir, copy)
    shutil.copyfile(copy / "sentiment" / "model.onnx", copy / "sentiment" / "model.fp16.onnx")
    with pytest.raises(ModelLoadError, match="fp16 models need CUDA"):
        OnnxSentiment(copy / "sentiment", precision="fp16", device="cpu")


def test_device_from_env(monkeypatch: pytest.MonkeyPatch, onnx_dir: Path) -> None:
    monkeypatch.setenv("REACTOR_DEVICE", "cpu")
    assert resolve_device() == "cpu"
    assert resolve_device("auto") == "auto"
    monkeypatch.setenv("REACTOR_DEVICE", "tpu")
    with pytest.raises(ModelLoadError, match="device must be one of"):
        load_models(onnx_dir)
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        monkeypatch.setenv("REACTOR_DEVICE", "cuda")
        with pytest.raises(ModelLoadError, match="onnxruntime-gpu"):
            load_models(onnx_dir)


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
