"""How close the models run to the machine's limit: FLOPs per input, measured GEMM peak, op-time shares.

Used by the benchmarks (``scripts/bench_nlp.py``, ``scripts/bench_e2e.py``) to say *why* a speed target is
or isn't reachable, with measured numbers instead of datasheet guesses.  Needs ``onnx`` (export extra) for
the GEMM micro-benchmark; the FLOP formulas need nothing.

FLOPs count one multiply-add as 2.  Embeddings, layer norms, softmax and padding are left out, so a
fraction of peak computed from them is a lower bound on how busy the matrix units were with useful work.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# ORT kernels that run the quantized weight GEMMs (dynamic quantization fuses to the first two).
INT8_GEMM_OPS = frozenset({"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulInteger", "QLinearMatMul", "QGemm"})


def bart_flops_per_pair(cfg: Mapping[str, Any], tokens: float) -> float:
    """Forward FLOPs of one zero-shot pair through BartForSequenceClassification.

    The pair ("premise </s></s> hypothesis", L tokens) goes through the encoder AND the decoder:
      encoder layer: 2·L·4d² (Q,K,V,O) + 2·2·L²·d (QKᵀ, AV) + 2·L·2·d·f (FFN)
      decoder layer: 2·(2·L·4d² + 2·2·L²·d) (self + cross attention) + 2·L·2·d·f
      head: 2·d² + 2·d·n_labels (once per pair)
    """
    d, L = cfg["d_model"], tokens
    enc = 8 * L * d * d + 4 * L * L * d + 4 * L * d * cfg["encoder_ffn_dim"]
    dec = 16 * L * d * d + 8 * L * L * d + 4 * L * d * cfg["decoder_ffn_dim"]
    return cfg["encoder_layers"] * enc + cfg["decoder_layers"] * dec + 2 * d * d + 2 * d * 3


def distilbert_flops_per_text(cfg: Mapping[str, Any], tokens: float) -> float:
    """Forward FLOPs of one text through DistilBertForSequenceClassification (L tokens with [CLS]/[SEP]):
    per layer 2·L·4d² + 2·2·L²·d + 2·L·2·d·f, head 2·d² + 2·d·2 (pre-classifier and classifier)."""
    d, L = cfg["dim"], tokens
    layer = 8 * L * d * d + 4 * L * L * d + 4 * L * d * cfg["hidden_dim"]
    return cfg["n_layers"] * layer + 2 * d * d + 2 * d * 2


def weight_gemm_shapes(cfg: Mapping[str, Any], rows: int) -> list[tuple[int, int, int, int]]:
    """(M, K, N, count per forward) of the weight GEMMs for a batch of ``rows`` tokens."""
    if cfg.get("model_type") == "bart":
        d, layers = cfg["d_model"], cfg["encoder_layers"] + cfg["decoder_layers"]
        f = cfg["encoder_ffn_dim"]
        attn = 4 * cfg["encoder_layers"] + 8 * cfg["decoder_layers"]
    else:
        d, layers, f = cfg["dim"], cfg["n_layers"], cfg["hidden_dim"]
        attn = 4 * layers
    return [(rows, d, d, attn), (rows, d, f, layers), (rows, f, d, layers)]


def int8_gemm_peak(shapes: list[tuple[int, int, int, int]], threads: int | None = None, seconds: float = 1.0) -> float:
    """Measured u8·s8 GEMM rate (ops/s) of ONNX Runtime's CPU kernel (MatMulInteger) on these shapes.

    Shapes are weighted by their share of the work (count · M·K·N), i.e. the rate the model's weight
    GEMMs would reach if every one of them ran as fast as the kernel does alone.  Best of several runs.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    total_ops = total_s = 0.0
    for m, k, n, count in shapes:
        a = helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])
        y = helper.make_tensor_value_info("Y", TensorProto.INT32, [m, n])
        b = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "B")
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "gemm", [a], [y], [b])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 9
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        for _ in range(3):
            sess.run(None, {"A": x})
        best = float("inf")
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            sess.run(None, {"A": x})
            best = min(best, time.perf_counter() - t0)
        total_ops += 2.0 * m * k * n * count
        total_s += best * count
    return total_ops / total_s


def op_time_shares(model_path: str | Path, feeds: Mapping[str, np.ndarray], runs: int = 3) -> dict[str, float]:
    """Fraction of kernel time per ONNX op type for ``feeds`` (ORT's profiler, CPU, all cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="reactor-prof-") as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        inputs = {k: v for k, v in feeds.items() if k in names}
        sess.run(None, inputs)  # first run allocates; profile the steady state too but it's a small share
        for _ in range(runs):
            sess.run(None, inputs)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"]
    total = sum(per_op.values()) or 1
    return {op: t / total for op, t in per_op.most_common()}
