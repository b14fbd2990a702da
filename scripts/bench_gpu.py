#!/usr/bin/env python
"""GPU benchmark of issue 20, one command, export included (fits 8 minutes on one H100/H200).

Steps, all in one run on one machine:
  export   `reactor export-models --full-random --fp16` into --work (random weights, full-size shapes: DistilBERT-base,
           BART-large), fused graphs; its manifest records the fused operators and fp16 drift vs PyTorch.
           --models DIR reuses an export instead.
  models   both models on the project path at the new defaults (OnnxZeroShot/OnnxSentiment, fp16 on CUDA, batches
           by the default token budget): zero-shot pairs/s on --texts texts × --topics labels, sentiment texts/s;
           then PyTorch bf16 (SDPA) on the very same token rows, in the same batches and in batches of 256 rows
           (the issue's baseline): the ratio ONNX / best PyTorch.
  drift    fp16 vs fp32 ONNX on the same GPU, 128 texts × --topics labels: max/mean |Δscore|, top label changes.
  drain    `reactor listen` (REACTOR_DEVICE, fp16) against an embedded PostgreSQL: --rows queued rows (generated
           feedback, 10-60 words, unique) with --topics active topics, claims of --claim rows; rows/s from the first
           to the last analysis (reactor.feedback_analysis.analyzed_at; model load apart: the reactor is started
           and ready before the queue is resumed); GPU utilisation and memory sampled every 0.25 s during the drain
           (pynvml, else nvidia-smi, else torch.cuda.utilization).
Prints one summary and writes it as JSON (--json). RANDOM weights: the speed is real, the labels are not.

CPU dry run (proves the script end to end without a GPU; its figures are not GPU figures):
    python scripts/bench_gpu.py --tiny --device cpu --rows 500

On a GPU machine of this project's device tool (python3.12, torch CUDA 13, no internet), from the checkout:
    bash ../shared/gpu/pack.sh          # here, once: packs onnxruntime-gpu + the pinned export stack into .gpu/c1..cN
    device run "bash .gpu/cK/unpack.sh K" with carry [".gpu/cK"], K = 1..N, back to back (< 30 s apart): READY
    device run (timeout_s 560): export PYTHONPATH=/tmp/gpu/site:$PWD; timeout 540 python3 scripts/bench_gpu.py \\
        --json $OUT/bench_gpu.json      # `make bench-gpu` runs the same
See BENCHMARKS.md "GPU" for the figures and the procedure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import psycopg  # noqa: E402
from benchlib import database_server, machine, set_config, stop_reactor  # noqa: E402

from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus  # noqa: E402


def say(msg: str) -> None:
    print(msg, flush=True)


# --- export ------------------------------------------------------------------------------------------------


def export(a: argparse.Namespace) -> Path:
    from reactor.nlp.export import export_models

    out = Path(a.work) / ("onnx_tiny" if a.tiny else "onnx_full")
    t0 = time.perf_counter()
    export_models(
        out,
        random_size="tiny" if a.tiny else "full",
        fp16=True,
        checkpoints_dir=Path(a.work) / ("models_tiny" if a.tiny else "models_full"),
        log=lambda m: say(f"  {m}"),
    )
    say(f"export: {time.perf_counter() - t0:.0f}s")
    return out


# --- models: ONNX on the project path vs PyTorch bf16 on the same rows ------------------------------------------


def _time(fn: Any, sync: Any) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def models_section(a: argparse.Namespace, models: Path, result: dict[str, Any]) -> None:
    from reactor.nlp.onnx import OnnxSentiment, OnnxZeroShot

    precision = "fp16" if a.device == "cuda" else "fp32"
    labels = list(TOPIC_LABELS[: a.topics])
    texts = [f"{i}: {t}" for i, t in enumerate(feedback_corpus(a.texts, seed=11))]
    kw = {"precision": precision, "device": a.device, "cache_size": 0, "max_tokens": a.token_budget}
    z = OnnxZeroShot(models / "zero-shot", **kw)
    s = OnnxSentiment(models / "sentiment", **kw)
    z.classify(texts[:64], labels)  # warm-up: CUDA kernels, arena
    s.predict(texts[:256])
    no_sync = lambda: None  # noqa: E731 - ONNX Runtime returns when the logits are on the host
    dz = _time(lambda: z.classify(texts, labels), no_sync)
    sent_texts = texts * a.sentiment_repeat
    ds = _time(lambda: s.predict([f"{k} {t}" for k, t in enumerate(sent_texts)]), no_sync)
    pairs = len(texts) * len(labels)
    rows, types = z.rows(texts, labels)
    mean_tokens = sum(map(len, rows)) / len(rows)
    onnx = {
        "precision": precision,
        "zero_shot_pairs_per_s": pairs / dz,
        "sentiment_texts_per_s": len(sent_texts) / ds,
        "batching": {"rows": z.batch_size, "max_tokens": z.max_tokens},
        "mean_pair_tokens": mean_tokens,
    }
    result["onnx"] = onnx
    say(
        f"ONNX {precision} ({a.device}, batches <= {z.max_tokens or '-'} tokens / {z.batch_size or 'any'} rows): "
        f"zero-shot {onnx['zero_shot_pairs_per_s']:.0f} pairs/s ({pairs} pairs, mean {mean_tokens:.1f} tokens); "
        f"sentiment {onnx['sentiment_texts_per_s']:.0f} texts/s"
    )
    result["torch"] = torch_section(a, models, z, s, texts, labels, rows, types)
    best = max(v for k, v in result["torch"].items() if k.startswith("zero_shot_pairs_per_s"))
    result["ratio_onnx_vs_torch_zero_shot"] = onnx["zero_shot_pairs_per_s"] / best
    say(f"zero-shot ONNX / best PyTorch: {result['ratio_onnx_vs_torch_zero_shot']:.2f}x")


def torch_section(
    a: argparse.Namespace, models: Path, z: Any, s: Any, texts: list[str], labels: list[str], rows: Any, types: Any
) -> dict[str, float]:
    """PyTorch bf16 (SDPA) on the token rows the ONNX runtime ran: its batches, and batches of 256 rows."""
    import torch
    from transformers import AutoModelForSequenceClassification

    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    out: dict[str, float] = {}
    for task, runtime, task_rows, task_types in (
        ("zero_shot", z, rows, types),
        ("sentiment", s, s.rows([f"{k} {t}" for k, t in enumerate(texts * a.sentiment_repeat)]), None),
    ):
        ck = json.loads((models / task.replace("_", "-") / "manifest.json").read_text())["checkpoint"]
        folder = Path(a.work) / ("models_tiny" if a.tiny else "models_full") / task.replace("_", "-")
        folder = folder if folder.is_dir() else Path(ck)
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
        model = model.to(dev).eval()
        saved = runtime.batch_size, runtime.max_tokens
        for name, (batch_rows, budget) in {"": saved, "_batch256": (256, 0)}.items():
            runtime.batch_size, runtime.max_tokens = batch_rows, budget
            batches = [
                {k: torch.from_numpy(v).to(dev) for k, v in feeds.items() if k != "token_type_ids"}
                for _, feeds in runtime.batches(task_rows, task_types, budget)
            ]
            runtime.batch_size, runtime.max_tokens = saved

            def run(batches: list[dict[str, Any]] = batches, model: Any = model) -> None:
                with torch.inference_mode():
                    for feeds in batches:
                        model(**feeds).logits.float().cpu()

            run(batches[:2])  # warm-up
            seconds = _time(run, sync)
            unit = "pairs" if task == "zero_shot" else "texts"
            out[f"{task}_{unit}_per_s{name}"] = len(task_rows) / seconds
            say(f"PyTorch bf16 {task}{name or ' (same batches)'}: {len(task_rows) / seconds:.0f} {unit}/s")
        del model
        if a.device == "cuda":
            torch.cuda.empty_cache()
    return out


def drift_section(a: argparse.Namespace, models: Path, result: dict[str, Any]) -> None:
    if a.device != "cuda":
        result["fp16_drift"] = "not measured: needs CUDA"
        say("fp16 drift: skipped (needs CUDA)")
        return
    from reactor.nlp.onnx import OnnxZeroShot

    labels = list(TOPIC_LABELS[: a.topics])
    texts = feedback_corpus(128, seed=21)
    got = {p: OnnxZeroShot(models / "zero-shot", precision=p, device="cuda", cache_size=0) for p in ("fp32", "fp16")}
    fp32, fp16 = (got[p].classify(texts, labels) for p in ("fp32", "fp16"))
    diffs = [abs(dict(x)[k] - dict(y)[k]) for x, y in zip(fp32, fp16, strict=True) for k in labels]
    top = sum(x[0][0] != y[0][0] for x, y in zip(fp32, fp16, strict=True))
    result["fp16_drift"] = {"max_abs": max(diffs), "mean_abs": sum(diffs) / len(diffs), "top_label_changed": top}
    say(
        f"fp16 vs fp32 (128 texts x {len(labels)} labels): max {max(diffs):.4f}, mean {sum(diffs) / len(diffs):.4f}, "
        f"top label changed for {top} of 128"
    )
    manifest = json.loads((models / "zero-shot" / "manifest.json").read_text())
    result["fp16_drift_vs_pytorch_at_export"] = manifest["precisions"].get("fp16", {}).get("drift_vs_pytorch")


# --- drain: `reactor listen` against an embedded PostgreSQL ----------------------------------------------------


class GpuSampler(threading.Thread):
    """GPU utilisation (%) and memory used (MiB) every `interval` s: pynvml, else nvidia-smi, else torch."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval, self.samples, self.stop_event = interval, [], threading.Event()
        self.read, self.source = self._reader()

    def _reader(self) -> tuple[Any, str]:
        with contextlib.suppress(Exception):
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            return (
                lambda: (pynvml.nvmlDeviceGetUtilizationRates(h).gpu, pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20)
            ), "pynvml"
        if shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-i", "0"]

            def smi() -> tuple[float, float]:
                util, mem = subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.split(",")
                return float(util), float(mem)

            return smi, "nvidia-smi"
        import torch

        return (lambda: (torch.cuda.utilization(0), torch.cuda.memory_usage(0))), "torch.cuda.utilization"

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            with contextlib.suppress(Exception):
                self.samples.append(self.read())

    def summary(self) -> dict[str, Any]:
        util = [u for u, _ in self.samples]
        mem = [m for _, m in self.samples]
        if not util:
            return {"source": self.source, "samples": 0}
        return {
            "source": self.source,
            "samples": len(util),
            "util_mean": sum(util) / len(util),
            "util_min": min(util),
            "util_max": max(util),
            "memory_used_max_mib": max(mem),
        }


def start_listen(url: str, models: Path, a: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REACTOR_", "OPENSEARCH_"))}
    env.update(
        DATABASE_URL=url,
        REACTOR_ENV="local",
        REACTOR_DOTENV="/nonexistent",
        REACTOR_DEVICE=a.device,
        REACTOR_PRECISION="fp16" if a.device == "cuda" else "fp32",
        REACTOR_LOG_LEVEL="INFO",
    )
    if a.token_budget is not None:
        env["REACTOR_TOKEN_BUDGET"] = str(a.token_budget)
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "listen", "--models", str(models), "--no-opensearch"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    deadline = time.monotonic() + 300
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"reactor exited with {proc.returncode} during start-up: see {log}")
            if conn.execute("SELECT count(*) FROM reactor.workers WHERE pid = %s", [proc.pid]).fetchone()[0]:
                return proc
            time.sleep(0.1)
    stop_reactor(proc)
    raise SystemExit(f"reactor did not start within 300 s: see {log}")


def drain_section(a: argparse.Namespace, models: Path, result: dict[str, Any]) -> None:
    from reactor import sql

    texts = [f"{i}: {t}" for i, t in enumerate(feedback_corpus(a.rows, seed=41))]
    log = Path(a.work) / "listen.log"
    with database_server("bench-gpu-pg-") as (url, _pgdata):
        with psycopg.connect(url, autocommit=True) as conn:
            sql.install(conn, job_key="feedback_analysis")
            conn.execute("UPDATE topics SET is_active = false")
            for label in TOPIC_LABELS[: a.topics]:
                conn.execute(
                    "INSERT INTO topics (label, is_active) VALUES (%s, true) "
                    "ON CONFLICT (label) DO UPDATE SET is_active = true",
                    [label],
                )
        set_config(url, batch_size=a.claim, run_next_job=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO feedbacks (text) SELECT unnest(%s::text[])", [texts])
        t_load = time.monotonic()
        proc = start_listen(url, models, a, log)
        load_s = time.monotonic() - t_load
        sampler = GpuSampler() if a.device == "cuda" else None
        timed_out = False
        try:
            if sampler:
                sampler.start()
            set_config(url, run_next_job=True)
            deadline = time.monotonic() + a.drain_timeout
            with psycopg.connect(url, autocommit=True) as conn:
                while conn.execute("SELECT count(*) FROM reactor.feedback_analysis").fetchone()[0] < len(texts):
                    if proc.poll() is not None:
                        raise SystemExit(f"reactor exited with {proc.returncode}: see {log}")
                    if time.monotonic() > deadline:
                        timed_out = True
                        break
                    time.sleep(0.2)
                n, span = conn.execute(
                    "SELECT count(*), extract(epoch FROM max(analyzed_at) - min(analyzed_at))::float8 "
                    "FROM reactor.feedback_analysis"
                ).fetchone()
        finally:
            if sampler:
                sampler.stop_event.set()
            stop_reactor(proc)
    drain = {
        "rows": len(texts),
        "analysed": n,
        "topics": a.topics,
        "claim_rows": a.claim,
        "seconds_first_to_last": span,
        "rows_per_s": n / span if span else float("nan"),
        "model_load_s": load_s,
        "timed_out": timed_out,
        "gpu": sampler.summary() if sampler else "no GPU",
    }
    result["drain"] = drain
    gpu = drain["gpu"]
    util = (
        f"; GPU util mean {gpu['util_mean']:.0f}% (min {gpu['util_min']:.0f}, max {gpu['util_max']:.0f}), "
        f"memory max {gpu['memory_used_max_mib'] / 1024:.1f} GiB ({gpu['source']})"
        if isinstance(gpu, dict) and gpu.get("samples")
        else ""
    )
    say(
        f"drain ({a.device}): {n} of {len(texts)} rows, {a.topics} topics, claims of {a.claim}: "
        f"{drain['rows_per_s']:.0f} rows/s first to last analysis ({span:.1f}s; model load {load_s:.0f}s apart)"
        f"{' TIMED OUT' if timed_out else ''}{util}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (CPU dry run), not full-size")
    ap.add_argument("--models", default=None, help="an exported models folder to reuse (skips the export)")
    ap.add_argument("--work", default=None, help="folder for the export, checkpoints and logs (default .cache/gpu)")
    ap.add_argument("--rows", type=int, default=20_000, help="queued rows for the drain")
    ap.add_argument("--topics", type=int, default=10, help="active topic labels")
    ap.add_argument(
        "--token-budget", type=int, default=None, help="padded tokens per model batch (default: the runtime's)"
    )
    ap.add_argument("--claim", type=int, default=256, help="job_configs batch_size: rows per claim")
    ap.add_argument("--texts", type=int, default=2000, help="texts for the model section (x topics pairs)")
    ap.add_argument("--sentiment-repeat", type=int, default=5, help="sentiment runs texts x this (unique)")
    ap.add_argument("--drain-timeout", type=float, default=240.0, help="seconds before the drain is cut short")
    ap.add_argument("--sections", default="models,drift,drain", help="comma list of models, drift, drain")
    ap.add_argument("--json", default=None, help="write the summary here")
    a = ap.parse_args()
    a.work = a.work or str(ROOT / ".cache" / ("gpu_tiny" if a.tiny else "gpu"))
    Path(a.work).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"machine": machine(), "args": vars(a), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(Exception):
        import torch

        result["gpu_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    import onnxruntime as ort

    result["onnxruntime"] = f"{ort.__version__} {ort.get_available_providers()}"
    say(f"{result['machine']}; GPU {result.get('gpu_name')}; onnxruntime {result['onnxruntime']}")
    models = Path(a.models) if a.models else export(a)
    result["graph"] = {
        t: json.loads((models / t / "manifest.json").read_text()).get("graph") for t in ("sentiment", "zero-shot")
    }
    sections = {s.strip() for s in a.sections.split(",")}
    if "models" in sections:
        models_section(a, models, result)
    if "drift" in sections:
        drift_section(a, models, result)
    if "drain" in sections:
        drain_section(a, models, result)
    result["total_s"] = time.perf_counter() - t0
    say(f"total {result['total_s']:.0f}s (RANDOM WEIGHTS: the speed is real, the labels are not)")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
