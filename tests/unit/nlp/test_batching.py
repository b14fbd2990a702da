"""Model batches sized for the device: the shapes fed to the session, recorded by a fake ORT session.

On CUDA rows go by a token budget (length-sorted rows × padded width <= the budget, one row at least); on
CPU in batches of 8 rows, as before. The fake session stands in for onnxruntime so the CUDA path runs here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reactor import config
from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus
from reactor.nlp import onnx
from reactor.nlp.onnx import CPU_BATCH_ROWS, CUDA_TOKEN_BUDGET, ModelLoadError, OnnxZeroShot, batching, load_models
from reactor.nlp.session import cuda_wanted


class RecordingSession:
    """What ``reactor.nlp.session.Session`` offers the models, recording every batch's input shapes."""

    def __init__(self, path: Path, device: str, tuning: Any = None) -> None:
        self.path, self.cuda = path, device == "cuda"
        self.provider = "CUDAExecutionProvider" if self.cuda else "CPUExecutionProvider"
        self.input_names = ["input_ids", "attention_mask"]
        self.shapes: list[tuple[int, int]] = []
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        assert list(feeds) == self.input_names
        self.shapes.append(feeds["input_ids"].shape)
        self.feeds.append(feeds)
        return np.zeros((len(feeds["input_ids"]), 3), dtype=np.float32)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx, "Session", RecordingSession)


def _zero_shot(onnx_dir: Path, device: str, **kw: Any) -> tuple[OnnxZeroShot, RecordingSession]:
    model = OnnxZeroShot(onnx_dir / "zero-shot", device=device, cache_size=0, **kw)
    assert isinstance(model.session, RecordingSession)
    return model, model.session


def _check_cover(model: OnnxZeroShot, session: RecordingSession, texts: list[str], labels: list[str]) -> None:
    """Every pair ran exactly once, padded to its batch's longest row, and batches go by length."""
    rows, _ = model.rows(texts, labels)
    fed = sorted(
        tuple(int(t) for t, m in zip(ids, mask, strict=True) if m)
        for f in session.feeds
        for ids, mask in zip(f["input_ids"], f["attention_mask"], strict=True)
    )
    assert fed == sorted(tuple(r) for r in rows)
    widths = [w for _, w in session.shapes]
    assert widths == sorted(widths)
    for f in session.feeds:
        assert f["attention_mask"].sum(axis=1).max() == f["input_ids"].shape[1]  # no wasted column


def test_cuda_batches_fill_the_token_budget(onnx_dir: Path, recording: None) -> None:
    texts = feedback_corpus(60, seed=5, min_words=3, max_words=90)
    labels = list(TOPIC_LABELS)
    model, session = _zero_shot(onnx_dir, "cuda", precision="fp32", max_tokens=2048)
    assert (model.batch_size, model.max_tokens) == (0, 2048)  # no row limit, the budget only
    model.classify(texts, labels)
    assert len(session.shapes) > 1
    for rows, width in session.shapes:
        assert rows * width <= 2048
    # each batch is as large as the budget allows: the next batch's shortest row would not have fitted
    for (rows, _width), nxt in zip(session.shapes, session.feeds[1:], strict=False):
        assert (rows + 1) * int(nxt["attention_mask"].sum(axis=1).min()) > 2048
    assert max(rows for rows, _ in session.shapes) > CPU_BATCH_ROWS
    _check_cover(model, session, texts, labels)


def test_cuda_default_is_the_token_budget_and_cpu_keeps_batches_of_8(onnx_dir: Path, recording: None) -> None:
    texts = feedback_corpus(40, seed=6, min_words=3, max_words=40)
    labels = list(TOPIC_LABELS)
    cuda, cuda_session = _zero_shot(onnx_dir, "cuda")
    assert (cuda.batch_size, cuda.max_tokens) == (0, CUDA_TOKEN_BUDGET)
    cuda.classify(texts, labels)
    assert all(rows * width <= CUDA_TOKEN_BUDGET for rows, width in cuda_session.shapes)
    assert cuda_session.shapes[0][0] * cuda_session.shapes[0][1] > CUDA_TOKEN_BUDGET // 2  # hundreds of rows
    cpu, cpu_session = _zero_shot(onnx_dir, "cpu")
    assert (cpu.batch_size, cpu.max_tokens) == (CPU_BATCH_ROWS, 0)
    cpu.classify(texts, labels)
    assert [rows for rows, _ in cpu_session.shapes] == [CPU_BATCH_ROWS] * (len(texts) * len(labels) // 8)
    _check_cover(cpu, cpu_session, texts, labels)


def test_a_row_wider_than_the_budget_goes_alone(onnx_dir: Path, recording: None) -> None:
    model, session = _zero_shot(onnx_dir, "cuda", max_tokens=40)
    texts = ["ok", "word " * 200, "fine thanks"]  # the long one is cut at the max length (128), > 40 tokens
    model.classify(texts, ["price"])
    assert session.shapes[-1] == (1, model.max_length)
    assert all(rows * width <= 40 for rows, width in session.shapes[:-1])


def test_load_models_passes_the_budget_and_zero_means_rows_of_8(onnx_dir: Path, recording: None) -> None:
    s, z = load_models(onnx_dir, device="cuda", token_budget=4096)
    assert (s.batch_size, s.max_tokens) == (z.batch_size, z.max_tokens) == (0, 4096)
    s, z = load_models(onnx_dir, device="cuda", token_budget=0)
    assert (s.batch_size, s.max_tokens) == (CPU_BATCH_ROWS, 0)
    s, _ = load_models(onnx_dir, device="cpu")
    assert (s.batch_size, s.max_tokens) == (CPU_BATCH_ROWS, 0)
    with pytest.raises(ModelLoadError, match="token_budget"):
        load_models(onnx_dir, device="cpu", token_budget=-1)


def test_batching_defaults() -> None:
    assert batching(True) == (0, CUDA_TOKEN_BUDGET)
    assert batching(False) == (CPU_BATCH_ROWS, 0)
    assert batching(False, max_tokens=1000) == (0, 1000)
    assert batching(True, batch_size=64) == (64, CUDA_TOKEN_BUDGET)


def test_token_budget_setting() -> None:
    assert config.load({}).token_budget is None
    assert config.load({"REACTOR_TOKEN_BUDGET": "8192"}).token_budget == 8192
    assert config.load({"REACTOR_TOKEN_BUDGET": "0"}).token_budget == 0
    for bad in ("-1", "lots", "1.5"):
        with pytest.raises(config.InvalidSetting, match=f"REACTOR_TOKEN_BUDGET='{bad}' is not a number of tokens"):
            config.load({"REACTOR_TOKEN_BUDGET": bad})


def test_cuda_runs_the_fused_graph_and_cpu_the_plain_one(onnx_dir: Path, recording: None) -> None:
    assert OnnxZeroShot(onnx_dir / "zero-shot", device="cuda").session.path.name == "model.fused.onnx"
    assert OnnxZeroShot(onnx_dir / "zero-shot", device="cpu").session.path.name == "model.onnx"
    auto = "model.fused.onnx" if cuda_wanted("auto") else "model.onnx"  # auto: CUDA when onnxruntime offers it
    assert OnnxZeroShot(onnx_dir / "zero-shot", device="auto").session.path.name == auto
    int8 = OnnxZeroShot(onnx_dir / "zero-shot", device="cuda", precision="int8")
    assert int8.session.path.name == "model.int8.onnx"
