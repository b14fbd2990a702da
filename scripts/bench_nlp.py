"""Benchmark the NLP models: transformers pipelines (the original worker) vs our ONNX runtime.

Same generated texts (10-60 words) and 10 topic labels for every contender; prints texts/s (sentiment)
and pairs/s (zero-shot, one pair per text x label), the speed-up over the pipeline measured in the same
run, and the peak RSS of a separate process holding the int8 models.  Weights are random (no Hub access
here): speed and memory are real, scores are not.

    python scripts/bench_nlp.py --size full --texts 200 --baseline-texts 6

Builds/exports the random models into .cache/models_<size> and .cache/onnx_<size> when missing (needs
the export extra); the pipeline baseline needs torch + transformers (--no-pipeline skips it). Contenders run
round-robin (--rounds, medians and same-round ratios), so the noise of a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reactor.devtools.benchmark import interleaved  # noqa: E402
from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus  # noqa: E402
from reactor.nlp.onnx import PRECISIONS, OnnxSentiment, OnnxZeroShot  # noqa: E402

# VmHWM, not ru_maxrss: Linux carries ru_maxrss of the (big, torch-holding) parent over fork+exec.
RSS_CODE = """
import sys
from reactor.nlp.onnx import load_models
s, z = load_models(sys.argv[1], precision=sys.argv[2], device="cpu")
texts = [t for t in sys.argv[4:]]
s.predict(texts); z.classify(texts, sys.argv[3].split("|"))
print(next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:")))
"""


def ensure_models(size: str, onnx_dir: Path, ck_dir: Path) -> None:
    """Export the random models once. int8-static only for tiny: calibrating BART-large peaks at ~17 GB."""
    kinds = ("int8", "int8-static") if size == "tiny" else ("int8",)
    wanted = [onnx_dir / task / PRECISIONS[p] for task in ("sentiment", "zero-shot") for p in kinds]
    if all(f.is_file() for f in wanted):
        return
    from reactor.nlp.export import export_models

    export_models(onnx_dir, quantize=kinds, random_size=size, checkpoints_dir=ck_dir)


def pipeline_runs(ck_dir: Path, texts: list[str], labels: list[str]) -> dict[str, Callable[[], int]]:
    """The original worker: one pipeline call per text (stock tokenizer, as it ran)."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    sent = pipeline("sentiment-analysis", model=str(ck_dir / "sentiment"), device="cpu")
    zs = pipeline("zero-shot-classification", model=str(ck_dir / "zero-shot"), device="cpu")
    return {
        "sentiment": lambda: len([sent(t, truncation=True) for t in texts]),
        "zero-shot": lambda: len([zs(t, labels, multi_label=True) for t in texts]) * len(labels),
    }


def onnx_runs(
    onnx_dir: Path, precision: str, device: str, sent_texts: list[str], texts: list[str], labels: list[str], a: Any
) -> tuple[dict[str, Callable[[], int]], dict[str, float]]:
    """Timed calls of our runtime (calls of --chunk texts, like the reactor's batches) and the mean input
    length in tokens per text (sentiment) and per pair (zero-shot), special tokens included."""
    s = OnnxSentiment(
        onnx_dir / "sentiment", precision=precision, device=device, batch_size=a.sentiment_batch, cache_size=0
    )
    z = OnnxZeroShot(
        onnx_dir / "zero-shot", precision=precision, device=device, batch_size=a.zero_shot_batch, cache_size=0
    )

    def chunks(items: list[str]) -> list[list[str]]:
        return [items[i : i + a.chunk] for i in range(0, len(items), a.chunk)]

    sent_rows, pair_rows = s.rows(sent_texts), z.rows(texts, labels)[0]
    tokens = {
        "sentiment_tokens": sum(map(len, sent_rows)) / len(sent_rows),
        "zero-shot_tokens": sum(map(len, pair_rows)) / len(pair_rows),
    }
    runs = {
        "sentiment": lambda: sum(len(s.predict(c)) for c in chunks(sent_texts)),
        "zero-shot": lambda: sum(len(z.classify(c, labels)) for c in chunks(texts)) * len(labels),
    }
    return runs, tokens


def roofline(
    onnx_dir: Path,
    rates: dict[str, dict[str, float]],
    batches: dict[str, int],
) -> dict:
    """int8 CPU (``rates`` by precision): work per input, the measured GEMM peak, the share of time in the
    int8 GEMM kernels -> how close each precision runs to the best rate this CPU allows."""
    import numpy as np

    from reactor.devtools.roofline import (
        INT8_GEMM_OPS,
        bart_flops_per_pair,
        distilbert_flops_per_text,
        int8_gemm_peak,
        op_time_shares,
        weight_gemm_shapes,
    )

    out: dict[str, dict[str, float]] = {}
    for task, unit, rate_key, flops_fn in (
        ("sentiment", "text", "texts_per_s", distilbert_flops_per_text),
        ("zero-shot", "pair", "pairs_per_s", bart_flops_per_pair),
    ):
        cfg = json.loads((onnx_dir / task / "config.json").read_text())
        L = next(iter(rates.values()))[f"{task}_tokens"]  # the same texts for every precision
        width, batch = round(L), batches[task]
        ops = flops_fn(cfg, L)
        peak = int8_gemm_peak(weight_gemm_shapes(cfg, batch * width))
        ids = np.random.default_rng(0).integers(10, cfg["vocab_size"], (batch, width), dtype=np.int64)
        if task == "zero-shot":
            ids[:, 0], ids[:, -1] = cfg["bos_token_id"], cfg["eos_token_id"]  # BART pools at its single eos
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        bound = peak / ops  # if every other op were free and every GEMM ran at the measured peak
        print(
            f"  {task}: {L:.1f} tokens/{unit}, {ops / 1e9:.2f} G ops/{unit}; measured int8 GEMM peak "
            f"{peak / 1e9:.0f} G ops/s (ORT MatMulInteger, this model's shapes, batch {batch}) -> ceiling "
            f"{bound:.1f} {unit}s/s even with every non-GEMM op free"
        )
        for precision, rate in rates.items():
            shares = op_time_shares(onnx_dir / task / PRECISIONS[precision], feeds)
            gemm_share = sum(v for k, v in shares.items() if k in INT8_GEMM_OPS)
            achieved = rate[rate_key] * ops
            out[f"{task} {precision}"] = {
                "tokens": L,
                "gops_per_input": ops / 1e9,
                "achieved_gops": achieved / 1e9,
                "gemm_peak_gops": peak / 1e9,
                "fraction_of_peak": achieved / peak,
                "gemm_time_share": gemm_share,
                "bound_per_s": bound,
            }
            print(
                f"    {precision}: {rate[rate_key]:.1f} {unit}s/s = {achieved / 1e9:.0f} G ops/s = "
                f"{achieved / peak:.0%} of that peak; int8 GEMM kernels take {gemm_share:.0%} of model time"
            )
    return out


def peak_rss_mb(onnx_dir: Path, precision: str, texts: list[str], labels: list[str]) -> float:
    out = subprocess.run(
        [sys.executable, "-c", RSS_CODE, str(onnx_dir), precision, "|".join(labels), *texts[:16]],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # VmHWM is in kB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="full")
    ap.add_argument("--models", type=Path, help="ONNX folder (default .cache/onnx_<size>)")
    ap.add_argument("--checkpoints", type=Path, help="checkpoint folder (default .cache/models_<size>)")
    ap.add_argument("--texts", type=int, default=200, help="texts for our zero-shot runs")
    ap.add_argument("--sentiment-texts", type=int, default=400, help="texts for our sentiment runs")
    ap.add_argument("--baseline-texts", type=int, default=6, help="texts for the (slow) pipeline baseline")
    ap.add_argument("--chunk", type=int, default=64, help="texts per predict/classify call")
    ap.add_argument("--sentiment-batch", type=int, default=8)
    ap.add_argument("--zero-shot-batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="round-robin rounds (medians reported)")
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--no-roofline", action="store_true", help="skip the GEMM-peak / op-profile section")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    onnx_dir = args.models or ROOT / ".cache" / f"onnx_{args.size}"
    ck_dir = args.checkpoints or ROOT / ".cache" / f"models_{args.size}"
    ensure_models(args.size, onnx_dir, ck_dir)
    n = max(args.texts, args.sentiment_texts, args.baseline_texts)
    texts = feedback_corpus(n, seed=2024, min_words=10, max_words=60)
    labels = list(TOPIC_LABELS)
    cores = len(os.sched_getaffinity(0))
    print(
        f"size={args.size} cores={cores} texts={args.texts} (sentiment {args.sentiment_texts}, pipeline "
        f"{args.baseline_texts}) labels={len(labels)} "
        f"(RANDOM WEIGHTS: speed is real, scores are not)"
    )

    import onnxruntime as ort

    contenders = [("fp32", "cpu"), ("int8", "cpu"), ("int8-static", "cpu")]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        contenders += [("fp32", "cuda")] + [("fp16", "cuda")] * (onnx_dir / "zero-shot" / PRECISIONS["fp16"]).is_file()
    contenders = [(p, d) for p, d in contenders if (onnx_dir / "zero-shot" / PRECISIONS[p]).is_file()]
    runs: dict[str, dict[str, Callable[[], int]]] = {}
    tokens: dict[str, float] = {}
    if not args.no_pipeline:
        runs["pipeline (per text)"] = pipeline_runs(ck_dir, texts[: args.baseline_texts], labels)
    for precision, device in contenders:
        runs[f"onnx {precision} {device}"], tokens = onnx_runs(
            onnx_dir, precision, device, texts[: args.sentiment_texts], texts[: args.texts], labels, args
        )
    base = "pipeline (per text)" if not args.no_pipeline else None
    rates = {  # contenders round-robin per task, so the noise of a shared machine hits them alike
        task: interleaved({name: r[task] for name, r in runs.items()}, args.rounds, baseline=base)
        for task in ("sentiment", "zero-shot")
    }
    results: dict[str, dict[str, float]] = {
        name: {"texts_per_s": rates["sentiment"][name].per_s, "pairs_per_s": rates["zero-shot"][name].per_s, **tokens}
        for name in runs
    }
    print(f"{'contender':<22}{'sentiment texts/s':>20}{'zero-shot pairs/s':>20}{'x pipeline':>16}")
    for name, r in results.items():
        ratio = "-"
        if base:
            ratio = f"{rates['sentiment'][name].ratio:.1f} / {rates['zero-shot'][name].ratio:.1f}"
        print(f"{name:<22}{r['texts_per_s']:>20.1f}{r['pairs_per_s']:>20.2f}{ratio:>16}")
    roof = {}
    int8 = {p: results[f"onnx {p} cpu"] for p in ("int8", "int8-static") if f"onnx {p} cpu" in results}
    if int8 and not args.no_roofline:
        print("roofline, int8 on this CPU (why a target is or isn't reachable):")
        roof = roofline(onnx_dir, int8, {"sentiment": args.sentiment_batch, "zero-shot": args.zero_shot_batch})
    rss = {p: peak_rss_mb(onnx_dir, p, texts, labels) for p, _ in contenders if p in ("int8", "int8-static", "fp32")}
    print("peak RSS, process with both models loaded: " + ", ".join(f"{p} {mb:.0f} MB" for p, mb in rss.items()))
    for task in ("sentiment", "zero-shot"):
        m = json.loads((onnx_dir / task / "manifest.json").read_text())
        for precision in ("int8", "int8-static"):
            drift = m["precisions"].get(precision, {}).get("drift_vs_pytorch", {})
            if drift:
                print(
                    f"{precision} drift {task}: max |Δscore| {drift['max_abs_diff']:.4f}, mean "
                    f"{drift['mean_abs_diff']:.4f}, batch-neighbour {drift['batch_neighbour_max_diff']:.4f} "
                    "(manifest, probe set)"
                )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"size": args.size, "cores": cores, "results": results, "peak_rss_mb": rss, "roofline": roof},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
