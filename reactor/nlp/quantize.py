"""How the exporter turns ``model.onnx`` into the int8 (dynamic and static) and fp16 files.

Needs the export extra (onnx, onnxruntime.quantization / onnxruntime.transformers); the runtime never
imports this module. Dynamic int8 is a configuration space, not one call: ``Int8Config`` names one point
of it (weight granularity and type, which ops, graph rewrites before quantizing), ``INT8_CANDIDATES`` the
points ``scripts/bench_nlp.py --int8-search`` compares side by side, and ``SHIPPED_INT8`` the winner per
task that ``--quantize int8`` writes (recorded in the manifest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reactor.nlp.errors import ExportError


@dataclass(frozen=True)
class Int8Config:
    """One dynamic-int8 recipe. Activations are always uint8 with per-batch scales (ORT's dynamic mode)."""

    per_channel: bool = False  # one weight scale per output column instead of one per tensor
    reduce_range: bool = False  # 7-bit weights: only helps CPUs without VNNI
    weight_type: str = "QInt8"  # QInt8: u8·s8 kernels; QUInt8: u8·u8
    op_types: tuple[str, ...] = ("MatMul",)  # (): ORT's default, every supported op (Gather: embeddings)
    optimize: str = "none"  # "preprocess": ORT's quant_pre_process; "fusion": ORT's transformer optimizer

    def describe(self) -> str:
        weights = f"{'per-channel' if self.per_channel else 'per-tensor'} {self.weight_type} weights"
        extra = ", 7-bit (reduce_range)" if self.reduce_range else ""
        rewrite = {
            "none": "",
            "preprocess": ", after quant_pre_process",
            "fusion": ", after ORT's transformer optimizer",
        }
        return (
            f"onnxruntime dynamic quantization of {'+'.join(self.op_types) or 'every supported op'}: {weights}{extra}, "
            f"uint8 activations with per-batch scales{rewrite[self.optimize]}"
        )


# The candidates the benchmark compares (keys are stable names used by the bench and the manifest).
INT8_CANDIDATES: dict[str, Int8Config] = {
    # what `--quantize int8` wrote before issue 15: per-channel, every supported op (MatMul, Gather, ...)
    "per-channel-all-ops": Int8Config(per_channel=True, op_types=()),
    "per-tensor-all-ops": Int8Config(op_types=()),
    "per-tensor-matmul": Int8Config(),
    "per-tensor-matmul-gather": Int8Config(op_types=("MatMul", "Gather")),
    "per-channel-matmul": Int8Config(per_channel=True),
    "per-tensor-reduce-range": Int8Config(reduce_range=True),
    "per-tensor-u8u8": Int8Config(weight_type="QUInt8"),
    "per-tensor-preprocess": Int8Config(optimize="preprocess"),
    "per-channel-preprocess": Int8Config(per_channel=True, optimize="preprocess"),
    "per-tensor-fusion": Int8Config(op_types=("MatMul", "Attention"), optimize="fusion"),
    "per-channel-fusion": Int8Config(per_channel=True, op_types=("MatMul", "Attention"), optimize="fusion"),
}
PREVIOUS_INT8 = "per-channel-all-ops"
# No candidate was faster in the same run and this one drifts least (BENCHMARKS.md §2.1): it stays.
SHIPPED_INT8: dict[str, str] = {"sentiment": PREVIOUS_INT8, "zero-shot": PREVIOUS_INT8}

QUANTIZATIONS = ("int8", "int8-static")
STATIC_METHOD = (
    "onnxruntime static QDQ quantization of MatMuls: per-channel QInt8 weights, uint8 activations "
    "with MinMax scales calibrated at export"
)
# Calibration memory grows with the tokens in one batch (BART-large: ~13 GB peak at 1,024): long rows go alone.
CALIBRATION_BATCH_TOKENS = 1024


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization warns on the root logger about every tensor it skips: not actionable here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def manifest_entry(name: str) -> dict[str, Any]:
    """What the manifest records about the int8 recipe used (so a model folder says how it was made)."""
    config = INT8_CANDIDATES[name]
    return {"method": config.describe(), "int8_config": {"name": name, **asdict(config)}}


def _fuse(src: Path, dst: Path) -> None:
    """ORT's transformer optimizer with the heads from config.json. On these graphs it fuses LayerNorm+residual
    and bias+GELU but not attention (BENCHMARKS.md §2.1)."""
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = json.loads((src.parent / "config.json").read_text())
    if cfg.get("model_type") == "bart":
        kind, heads, hidden = "bart", cfg["encoder_attention_heads"], cfg["d_model"]
    else:
        kind, heads, hidden = "bert", cfg.get("n_heads", cfg.get("num_attention_heads")), cfg.get("dim")
        hidden = hidden or cfg.get("hidden_size")
    with quiet_root_logger():
        model = optimize_model(str(src), model_type=kind, num_heads=heads, hidden_size=hidden, opt_level=1)
    model.save_model_to_file(str(dst))


def quantize_int8(src: Path, dst: Path, name: str) -> None:
    """Write the dynamic int8 model of recipe ``name`` (``INT8_CANDIDATES``) for fp32 ``src`` to ``dst``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    config = INT8_CANDIDATES[name]
    with tempfile.TemporaryDirectory(prefix="reactor-int8-", dir=dst.parent) as tmp:
        source = src
        if config.optimize != "none":
            source = Path(tmp) / "model.onnx"
            (Path(tmp) / "config.json").write_bytes((src.parent / "config.json").read_bytes())
            if config.optimize == "fusion":
                _fuse(src, source)
            else:
                from onnxruntime.quantization.shape_inference import quant_pre_process

                with quiet_root_logger():
                    quant_pre_process(str(src), str(source), skip_symbolic_shape=True)
        # fused graphs hold contrib ops (Attention, SkipLayerNormalization) ONNX shape inference can't type
        extra = {"DefaultTensorType": 1} if config.optimize == "fusion" else None  # 1: TensorProto.FLOAT
        with quiet_root_logger():
            quantize_dynamic(
                str(source),
                str(dst),
                op_types_to_quantize=list(config.op_types) or None,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                weight_type=QuantType[config.weight_type],
                extra_options=extra,
            )


def calibration_texts(path: str | Path | None, default: Sequence[str]) -> list[str]:
    """Texts whose activations set the static int8 scales: one per line from ``path`` (your own feedback is
    best), else ``default``."""
    if path is None:
        return list(default)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ExportError(f"can't read calibration texts {path}: {exc}") from exc
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise ExportError(f"{path} holds no calibration texts (one text per line)")
    return texts


def quantize_static(src: Path, dst: Path, runtime: Any, texts: Sequence[str], labels: Sequence[str]) -> None:
    """Static int8: run the fp32 model on calibration batches built exactly as at run time, record MinMax
    activation ranges, write a QDQ model (ONNX Runtime fuses it into int8 kernels)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
    )
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if runtime.task == "zero-shot":
        rows, types = runtime.rows(texts, labels)
    else:
        rows, types = runtime.rows(texts), None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = runtime.batches(rows, types, CALIBRATION_BATCH_TOKENS)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else batch[1]

    with quiet_root_logger():
        ort_quantize_static(
            str(src),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={
                "MatMulConstBOnly": True,
                "WeightSymmetric": True,
                "ActivationSymmetric": False,
            },
        )


def convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save_model(model, str(dst))
