"""`reactor export-models` and reactor.nlp.export on tiny random checkpoints (export extra).

The committed fixtures must be what the exporter writes today; odd checkpoints (no model_max_length) must
export; any failure must end in one line.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from reactor.nlp.onnx import OnnxSentiment, OnnxZeroShot
from tests.plugins.models import FIXTURES

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("optimum")

pytestmark = pytest.mark.export

QUIET = {"log": lambda _msg: None}
VOLATILE = ("created_at", "versions")  # when and with which library versions: not part of the model
FIXTURE_COMMANDS = {  # exactly what `make fixtures` runs
    "tiny-models": ["--tiny", "--quantize", "int8", "--quantize", "int8-static"],
    "tiny-models-12-1": [
        "--tiny",
        "--task",
        "zero-shot",
        "--zero-shot-shape",
        "distilbart-mnli-12-1",
        "--quantize",
        "int8",
        "--quantize",
        "int8-static",
    ],
}


def _export_cli(args: list[str]) -> Any:
    from reactor.nlp.export_cli import export_models

    return CliRunner().invoke(export_models, args)


def _stable(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without timestamps and versions, scores rounded to what is stable across CPUs."""
    out = {k: v for k, v in manifest.items() if k not in VOLATILE}
    precisions = {}
    for name, entry in out.pop("precisions").items():
        entry = dict(entry)
        entry.pop("parity_vs_pytorch", None)
        entry.pop("drift_vs_pytorch", None)
        precisions[name] = entry
    out["precisions"] = precisions
    if "parity_vs_pytorch" in out.get("graph", {}):  # measured on this CPU: its kernels round differently
        graph = out["graph"] = dict(out["graph"])
        graph["parity_vs_pytorch"] = {
            k: v for k, v in graph["parity_vs_pytorch"].items() if k not in ("max_abs_diff", "mean_abs_diff")
        }
    return out


@pytest.mark.parametrize("fixture", list(FIXTURE_COMMANDS))
def test_rebuilding_the_fixtures_gives_the_committed_ones(
    fixture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = FIXTURES / fixture
    monkeypatch.chdir(tmp_path)  # random checkpoints go to ./.cache/models_tiny
    result = _export_cli([*FIXTURE_COMMANDS[fixture], "--out", "out"])
    assert result.exit_code == 0, result.output
    tasks = sorted(p.name for p in committed.iterdir() if p.is_dir())
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == tasks
    for task in tasks:
        want = json.loads((committed / task / "manifest.json").read_text())
        got = json.loads((tmp_path / "out" / task / "manifest.json").read_text())
        if want["versions"] != got["versions"]:  # other library versions may write other bytes (ONNX graphs,
            for m in (want, got):  # config's transformers_version, tokenizer.json layout): compare the scores
                m["files"] = sorted(m["files"])
        assert _stable(got) == _stable(want), f"{fixture}/{task}: run `make fixtures` and commit the result"
        assert got["precisions"]["fp32"]["parity_vs_pytorch"]["max_abs_diff"] <= 1e-5
        _assert_attention_fused(tmp_path / "out" / task, got)
        assert got["precisions"]["int8"]["drift_vs_pytorch"]["max_abs_diff"] == pytest.approx(
            want["precisions"]["int8"]["drift_vs_pytorch"]["max_abs_diff"], abs=0.05
        )
        cls = OnnxSentiment if task == "sentiment" else OnnxZeroShot
        texts = ["late delivery", "great price </s> ok", ""]
        for precision in ("fp32", "int8-static"):
            ours = cls(committed / task, precision=precision, device="cpu", cache_size=0)
            fresh = cls(tmp_path / "out" / task, precision=precision, device="cpu", cache_size=0)
            if task == "sentiment":
                a, b = ours.predict(texts), fresh.predict(texts)
                assert [label for label, _ in a] == [label for label, _ in b]
                assert [s for _, s in a] == pytest.approx([s for _, s in b], abs=1e-6)
            else:
                a, b = ours.classify(texts, ["price", "delivery"]), fresh.classify(texts, ["price", "delivery"])
                for x, y in zip(a, b, strict=True):
                    assert dict(x) == pytest.approx(dict(y), abs=1e-6)


def _assert_attention_fused(folder: Path, manifest: dict[str, Any]) -> None:
    """Every attention block of the fresh model.fused.onnx is one fused kernel (no Softmax left), as the manifest
    says, within 1e-5 of PyTorch; model.onnx (CPU) is not fused."""
    import onnx

    from reactor.nlp.fusion import fused_operators

    graph = onnx.load(str(folder / "model.fused.onnx"))
    ops = fused_operators(graph)
    cpu = fused_operators(onnx.load(str(folder / "model.onnx")))  # the CPU's graph stays unfused
    assert not cpu.get("Attention") and not cpu.get("MultiHeadAttention") and not cpu.get("SkipLayerNormalization")
    config = json.loads((folder / "config.json").read_text())
    if config["model_type"] == "distilbert":  # ORT's Attention; BART: our MultiHeadAttention (reactor.nlp.fusion)
        assert ops.get("Attention") == config["n_layers"], ops
    else:  # encoder self-attention, decoder self- and cross-attention
        assert ops.get("MultiHeadAttention") == config["encoder_layers"] + 2 * config["decoder_layers"], ops
    assert ops.get("SkipLayerNormalization") and ops.get("BiasGelu"), ops
    assert not [n for n in graph.graph.node if n.op_type == "Softmax"]
    assert manifest["graph"]["fused_operators"] == ops and manifest["graph"]["applied"]
    assert manifest["graph"]["parity_vs_pytorch"]["max_abs_diff"] <= 1e-5


def test_fixture_12_1_has_the_distilled_shape(onnx_dir_12_1: Path) -> None:
    config = json.loads((onnx_dir_12_1 / "zero-shot" / "config.json").read_text())
    manifest = json.loads((onnx_dir_12_1 / "zero-shot" / "manifest.json").read_text())
    assert (config["encoder_layers"], config["decoder_layers"]) == (2, 1)
    assert manifest["source"] == "reactor/tiny-random-distilbart-mnli-12-1" and manifest["random_weights"]


def test_export_refuses_bad_parity(tiny_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reactor.nlp.export as export

    monkeypatch.setattr(export, "FP32_TOLERANCE", -1.0)
    dest = tmp_path / "sentiment"
    with pytest.raises(export.ExportError, match="refusing to write"):
        export.export_task("sentiment", str(tiny_checkpoints / "sentiment"), dest, **QUIET)
    assert not dest.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", ["sentiment", "zero-shot"])
def test_checkpoint_without_model_max_length_exports(tiny_checkpoints: Path, tmp_path: Path, task: str) -> None:
    """Older Hub checkpoints have no model_max_length: the parity reference must cut texts at the position
    table like the runtime does, not feed a 7,500-token probe text to PyTorch."""
    from reactor.nlp.export import export_task

    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints / task, ck)
    tok_config = json.loads((ck / "tokenizer_config.json").read_text())
    tok_config.pop("model_max_length")
    (ck / "tokenizer_config.json").write_text(json.dumps(tok_config))
    manifest = export_task(task, str(ck), tmp_path / "out", **QUIET)
    config = json.loads((ck / "config.json").read_text())
    assert manifest["tokenizer"]["max_length"] == config["max_position_embeddings"] == 128
    assert manifest["precisions"]["fp32"]["parity_vs_pytorch"]["max_abs_diff"] <= 1e-5


def test_unexpected_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import reactor.nlp.export as export

    def explode(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("exporter crashed\n  File 'x.py', line 1\n    in deep")

    monkeypatch.setattr(export, "_onnx_export", explode)
    monkeypatch.chdir(tmp_path)
    result = _export_cli(["--tiny", "--task", "sentiment", "--out", "out"])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last == "Error: export failed: RuntimeError: exporter crashed File 'x.py', line 1 in deep"
    assert "Traceback" not in result.output and not (tmp_path / "out" / "sentiment").exists()


def test_cli_unreachable_hub_points_to_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import reactor.nlp.export as export

    monkeypatch.setattr(export, "_hub_reachable", lambda timeout=5.0: False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # empty cache
    result = _export_cli(["--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Hugging Face Hub is unreachable" in result.output and "--tiny" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "sentiment").exists()


def test_help_names_the_distilled_models_and_the_shape_needs_a_random_build() -> None:
    result = _export_cli(["--help"])
    for n, accuracy in (("1", "87.1"), ("3", "88.1"), ("6", "89.2"), ("9", "89.6")):
        assert f"valhalla/distilbart-mnli-12-{n}" in " ".join(result.output.split())
        assert accuracy in result.output
    result = _export_cli(["--zero-shot-shape", "distilbart-mnli-12-1"])
    assert result.exit_code == 2 and "--tiny or --full-random" in result.output


def test_tiny_build_is_reproducible(tiny_checkpoints: Path, tmp_path: Path) -> None:
    from reactor.devtools.random_models import build_sentiment

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    build_sentiment(tmp_path / "s", "tiny")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha(tmp_path / "s" / name) == sha(tiny_checkpoints / "sentiment" / name), name
