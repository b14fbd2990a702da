#!/usr/bin/env python
"""What runs fastest on this CPU, measured side by side in one run (issue 15). RANDOM weights: speed is real.

Sections (--sections, default all):
  int8      every dynamic-int8 recipe in reactor.nlp.quantize.INT8_CANDIDATES (per-channel/per-tensor, reduce_range,
            U8S8/U8U8, MatMul only/+Gather/every op, quant_pre_process, attention fusion) for both models:
            rate, CPU-s per input, ratio to the recipe shipped before issue 15 (same rounds), drift vs fp32 ONNX
            (= PyTorch within 1e-5) on the export probe set (less its 7,500-token text) + 8 bench texts with the
            4 probe labels, batch-neighbour drift (8 texts alone vs together), file size, fused ops.
  session   the shipped int8 recipe under ORT session options: graph optimization level, spinning, arena, threads.
  batch     the shipped int8 recipe at batch sizes 1-32 and with a token budget per batch (--max-tokens).
  bf16      what ONNX Runtime's CPU provider does with bf16 and fp16 models on this CPU (AVX512_BF16).
  distilled zero-shot pairs/s of BART-large vs the distilbart-mnli 12-1/12-3/12-6 shapes, fp32 and int8.
Timing: each candidate processes the same texts once per round, round-robin (reactor.devtools.benchmark), rounds
reversed every other time; medians over --rounds. Candidates are loaded a few at a time (--group) to bound memory.

    python scripts/bench_cpu.py --sections int8 --rounds 5
Needs the full-size random models in .cache/onnx_full (reactor export-models --full-random --quantize int8 --out
.cache/onnx_full) and the export extra to build candidates (cached under .cache/int8_candidates).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reactor.devtools.benchmark import Rate, interleaved  # noqa: E402
from reactor.devtools.corpus import TOPIC_LABELS, feedback_corpus  # noqa: E402
from reactor.nlp import parity  # noqa: E402
from reactor.nlp.onnx import PRECISIONS, OnnxSentiment, OnnxZeroShot, SessionTuning  # noqa: E402
from reactor.nlp.quantize import INT8_CANDIDATES, PREVIOUS_INT8, SHIPPED_INT8, quantize_int8  # noqa: E402

ALL_SECTIONS = ("int8", "session", "batch", "bf16", "distilled")
CLASSES = {"sentiment": OnnxSentiment, "zero-shot": OnnxZeroShot}
UNIT = {"sentiment": "texts/s", "zero-shot": "pairs/s"}


def candidate_dir(onnx_dir: Path, task: str, name: str) -> Path:
    """A model folder whose model.int8.onnx is recipe ``name`` (manifest/tokenizer/config linked from fp32)."""
    folder = ROOT / ".cache" / "int8_candidates" / onnx_dir.name / task / name
    target = folder / PRECISIONS["int8"]
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for f in ("manifest.json", "tokenizer.json", "config.json", PRECISIONS["fp32"]):
            link = folder / f
            if not link.exists():
                link.symlink_to((onnx_dir / task / f).resolve())
        t0 = time.perf_counter()
        quantize_int8(onnx_dir / task / PRECISIONS["fp32"], target, name)
        print(f"  built {task} {name} in {time.perf_counter() - t0:.0f}s", flush=True)
    return folder


FUSED_OPS = ("Attention", "QAttention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "FastGelu")


def op_counts(path: Path) -> dict[str, int]:
    """Node count per op type in an ONNX file (shows what the optimizer fused and what got quantized)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


THREADS = 0  # --threads: intra-op threads of every session the bench builds (0: all cores)


def int8_model(task: str, folder: Path, **options: Any) -> Any:
    """The task's runtime model on ``folder``'s int8 file (or ``precision=``), uncached (every round computes)."""
    defaults = {"precision": "int8", "device": "cpu", "cache_size": 0, "tuning": SessionTuning(threads=THREADS)}
    return CLASSES[task](folder, **{**defaults, **options})


def work(model: Any, texts: list[str], labels: list[str]) -> Callable[[], int]:
    """One timed unit of work: the model's task on the bench texts; returns texts (sentiment) or pairs."""
    if model.task == "sentiment":
        return lambda: len(model.predict(texts))
    return lambda: len(model.classify(texts, labels)) * len(labels)


def drift_set(task: str, texts: list[str]) -> tuple[list[str], list[str]]:
    """Texts and labels for drift: the export probe set (the 7,500-token text left out: it costs as much as
    the rest together for BART) and 8 bench texts; the 4 probe labels."""
    probes = [t for t in parity.probe_texts() if len(t) < 2000]
    return [*probes, *texts[:8]], list(parity.PROBE_LABELS)


def drift(model: Any, reference: list[Any], texts: list[str], labels: list[str]) -> dict[str, float]:
    """Score differences vs the fp32 reference, and the batch-neighbour drift, on the drift texts."""
    out = parity.compare(model.task, parity.scores(model, texts, labels), reference)
    out["neighbour"] = parity.neighbour_drift(model, texts[:8], labels)
    return out


def show(title: str, task: str, rates: dict[str, Rate], extra: dict[str, str] | None = None) -> None:
    print(f"\n{title}")
    print(f"  {'candidate':<34}{UNIT[task]:>10}{'x base':>8}{'CPU-ms/unit':>13}{'x base CPU':>12}  notes")
    for name, r in rates.items():
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        cpu_ratio = f"{r.cpu_ratio:.2f}" if r.cpu_ratio is not None else "-"
        note = (extra or {}).get(name, "")
        print(
            f"  {name:<34}{r.per_s:>10.1f}{ratio:>8}{r.cpu_s_per_unit * 1000:>13.1f}{cpu_ratio:>12}  {note}", flush=True
        )


def timed_groups(
    build: dict[str, Callable[[], Any]], base: str, texts: list[str], labels: list[str], a: argparse.Namespace
) -> dict[str, Rate]:
    """Load the candidates a group at a time (the baseline in every group) and time each group interleaved.
    Rates from different groups come from different minutes: compare the same-round ratios ("x base")."""
    others = [n for n in build if n != base]
    group = a.group if texts is a.texts_by_task["zero-shot"] else len(others)  # DistilBERT sessions are small
    rates: dict[str, Rate] = {}
    for i in range(0, max(1, len(others)), group):
        names = [base, *others[i : i + group]]
        models = {n: build[n]() for n in names}
        got = interleaved({n: work(m, texts, labels) for n, m in models.items()}, a.rounds, baseline=base)
        rates.setdefault(base, got[base])
        rates.update({n: got[n] for n in names if n != base})
        del models
        gc.collect()
    return rates


def section_int8(a: argparse.Namespace, texts: dict[str, list[str]], labels: list[str], out: dict) -> None:
    for task in a.tasks:
        drift_texts, drift_labels = drift_set(task, texts[task])
        fp32 = CLASSES[task](a.onnx_dir / task, precision="fp32", device="cpu", cache_size=0)
        reference = parity.scores(fp32, drift_texts, drift_labels)
        del fp32
        notes, results = {}, {}
        for name in a.candidates:
            folder = candidate_dir(a.onnx_dir, task, name)
            model = CLASSES[task](folder, precision="int8", device="cpu", cache_size=0)
            d = drift(model, reference, drift_texts, drift_labels)
            mb = (folder / PRECISIONS["int8"]).stat().st_size / 1e6
            ops = op_counts(folder / PRECISIONS["int8"])
            fused = ", ".join(f"{k} {v}" for k, v in ops.items() if k in FUSED_OPS) or "no fused ops"
            notes[name] = (
                f"drift max {d['max_abs_diff']:.3f} mean {d['mean_abs_diff']:.4f} flips {d['decision_flips']} "
                f"neighbour {d['neighbour']:.3f}; {mb:.0f} MB; {fused}"
            )
            results[name] = {**d, "mb": mb, "ops": ops}
            del model
            gc.collect()

        build = {n: partial(int8_model, task, candidate_dir(a.onnx_dir, task, n)) for n in a.candidates}
        rates = timed_groups(build, PREVIOUS_INT8, texts[task], labels, a)
        show(f"int8 recipes, {task} (batch 8; x base = vs {PREVIOUS_INT8}, shipped before)", task, rates, notes)
        out.setdefault("int8", {})[task] = {n: {**results[n], **vars(rates[n])} for n in rates}


def section_session(a: argparse.Namespace, texts: dict[str, list[str]], labels: list[str], out: dict) -> None:
    tunings = {
        "shipped (all opts, no spin, arena)": SessionTuning(),
        "spinning (ORT's default)": SessionTuning(spinning=True),
        "no arena": SessionTuning(arena=False),
        "1 thread": SessionTuning(threads=1),
        "opt level extended": SessionTuning(opt_level="extended"),
        "opt level basic": SessionTuning(opt_level="basic"),
    }
    for task in a.tasks:
        folder = candidate_dir(a.onnx_dir, task, SHIPPED_INT8[task])
        build = {n: partial(int8_model, task, folder, tuning=t) for n, t in tunings.items()}
        base = next(iter(tunings))
        rates = timed_groups(build, base, texts[task], labels, a)
        show(f"session options, {task} int8 {SHIPPED_INT8[task]} (batch 8)", task, rates)
        out.setdefault("session", {})[task] = {n: vars(r) for n, r in rates.items()}


def section_batch(a: argparse.Namespace, texts: dict[str, list[str]], labels: list[str], out: dict) -> None:
    shapes = {f"batch {b}": (b, 0) for b in (1, 4, 8, 16, 32)}
    shapes.update({f"batch 64, <= {t} tokens": (64, t) for t in a.max_tokens})
    for task in a.tasks:
        folder = candidate_dir(a.onnx_dir, task, SHIPPED_INT8[task])
        build = {n: partial(int8_model, task, folder, batch_size=b, max_tokens=t) for n, (b, t) in shapes.items()}
        rates = timed_groups(build, "batch 8", texts[task], labels, a)
        show(f"batching, {task} int8 {SHIPPED_INT8[task]}", task, rates)
        out.setdefault("batch", {})[task] = {n: vars(r) for n, r in rates.items()}


def kernel_check(elem_type: int) -> str:
    """Whether ONNX Runtime's CPU provider has a MatMul kernel for this element type ("ok" or its error)."""
    import onnxruntime as ort
    from onnx import helper

    a, b = (helper.make_tensor_value_info(n, elem_type, [8, 8]) for n in "AB")
    graph = helper.make_graph(
        [helper.make_node("Add", ["A", "B"], ["C"]), helper.make_node("MatMul", ["C", "C"], ["Y"])],
        "g",
        [a, b],
        [helper.make_tensor_value_info("Y", elem_type, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return "ok"
    except Exception as exc:
        return str(exc).split(" : ")[-1][:100]


def swapped(task: str, folder: Path, path: Path, providers: list[Any]) -> Any:
    """The fp32 runtime model of ``folder`` whose ONNX Runtime session is replaced: another file or provider."""
    import onnxruntime as ort

    model = CLASSES[task](folder, precision="fp32", device="cpu", cache_size=0)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS or len(os.sched_getaffinity(0))
    model.session.session = ort.InferenceSession(str(path), opts, providers=providers)
    return model


def section_bf16(a: argparse.Namespace, texts: dict[str, list[str]], labels: list[str], out: dict) -> None:
    """bf16 on this CPU: stock ONNX Runtime has no bf16 kernels (checked), fp16 is emulated; the OpenVINO
    provider (onnxruntime-openvino, run this section with that package's interpreter) can run bf16."""
    import onnxruntime as ort
    from onnx import TensorProto

    from reactor.nlp.quantize import convert_fp16

    kernels = {t: kernel_check(e) for t, e in (("bf16", TensorProto.BFLOAT16), ("fp16", TensorProto.FLOAT16))}
    print(
        f"\nONNX Runtime {ort.__version__} CPU provider MatMul/Add kernels: "
        + ", ".join(f"{k} {v}" for k, v in kernels.items())
    )
    have_ov = "OpenVINOExecutionProvider" in ort.get_available_providers()
    results: dict[str, Any] = {"kernels": kernels, "onnxruntime": ort.__version__}
    for task in a.tasks:
        src = a.onnx_dir / task
        fp16 = ROOT / ".cache" / "bf16" / a.onnx_dir.name / task / PRECISIONS["fp16"]
        if "fp16" in a.paths and not fp16.is_file():
            fp16.parent.mkdir(parents=True, exist_ok=True)
            convert_fp16(src / PRECISIONS["fp32"], fp16)
        fp32_file = src / PRECISIONS["fp32"]
        build: dict[str, Callable[[], Any]] = {
            "CPU fp32 (default)": partial(int8_model, task, src, precision="fp32"),
            f"CPU int8 ({SHIPPED_INT8[task]})": partial(
                int8_model, task, candidate_dir(a.onnx_dir, task, SHIPPED_INT8[task])
            ),
        }
        if "fp16" in a.paths:
            build["CPU fp16 weights+math"] = partial(swapped, task, src, fp16, ["CPUExecutionProvider"])
        if have_ov:
            for hint in [h for h in ("f32", "bf16") if f"openvino-{h}" in a.paths]:
                config = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": hint}})
                provider = ("OpenVINOExecutionProvider", {"device_type": "CPU", "load_config": config})
                build[f"OpenVINO EP {hint}"] = partial(swapped, task, src, fp32_file, [provider])
        drift_texts, drift_labels = drift_set(task, texts[task])
        base = next(iter(build))
        reference = parity.scores(build[base](), drift_texts, drift_labels)
        notes = {}
        for name, make in build.items():
            try:
                model = make()
            except Exception as exc:
                notes[name] = f"can't load: {str(exc)[:120]}"
                continue
            d = parity.compare(task, parity.scores(model, drift_texts, drift_labels), reference)
            notes[name] = (
                f"drift vs fp32 max {d['max_abs_diff']:.4f} mean {d['mean_abs_diff']:.5f} flips {d['decision_flips']}"
            )
            del model
        ok = {n: m for n, m in build.items() if not notes[n].startswith("can't")}
        rates = timed_groups(ok, base, texts[task], labels, a)
        show(f"bf16/fp16 paths, {task} (batch 8; x base = vs CPU fp32)", task, rates, notes)
        results[task] = {n: {"note": notes[n], **(vars(rates[n]) if n in rates else {})} for n in build}
    out["bf16"] = results


def section_distilled(a: argparse.Namespace, texts: dict[str, list[str]], labels: list[str], out: dict) -> None:
    from reactor.nlp.export import export_models

    shapes = ["bart-large-mnli", *a.shapes]
    folders = {"bart-large-mnli": a.onnx_dir}
    for shape in a.shapes:
        folder = ROOT / ".cache" / f"onnx_full_{shape}"
        if not (folder / "zero-shot" / PRECISIONS["int8"]).is_file():
            export_models(
                folder,
                tasks=("zero-shot",),
                quantize=("int8",),
                random_size="full",
                shape=shape,
                checkpoints_dir=ROOT / ".cache" / "models_full",
            )
        folders[shape] = folder
    results = {}
    for precision in ("fp32", "int8"):
        build = {}
        for shape in shapes:
            folder = folders[shape] / "zero-shot"
            if precision == "int8":  # the shipped recipe for every shape (the bart-large folder may predate it)
                folder = candidate_dir(folders[shape], "zero-shot", SHIPPED_INT8["zero-shot"])
            build[shape] = partial(int8_model, "zero-shot", folder, precision=precision)
        rates = timed_groups(build, "bart-large-mnli", texts["zero-shot"], labels, a)
        show(f"zero-shot shapes, {precision} (batch 8)", "zero-shot", rates)
        results[precision] = {n: vars(r) for n, r in rates.items()}
    out["distilled"] = results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=",".join(ALL_SECTIONS))
    ap.add_argument("--tasks", default="sentiment,zero-shot")
    ap.add_argument("--onnx-dir", type=Path, default=ROOT / ".cache" / "onnx_full")
    ap.add_argument("--texts", type=int, default=8, help="zero-shot texts per round (x 10 labels = pairs)")
    ap.add_argument("--sentiment-texts", type=int, default=64, help="sentiment texts per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--group", type=int, default=4, help="candidates loaded at once besides the baseline")
    ap.add_argument("--max-tokens", default="512,1024,2048", help="batch: token budgets to try")
    ap.add_argument("--shapes", default="distilbart-mnli-12-1,distilbart-mnli-12-3,distilbart-mnli-12-6")
    ap.add_argument("--paths", default="fp16,openvino-f32,openvino-bf16", help="bf16: paths besides fp32 and int8")
    ap.add_argument("--candidates", default=",".join(INT8_CANDIDATES), help="int8: recipes to compare")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads per session (0: all cores)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    a.tasks = [t for t in a.tasks.split(",") if t]
    a.max_tokens = [int(x) for x in a.max_tokens.split(",") if x]
    a.shapes = [s for s in a.shapes.split(",") if s]
    a.candidates = list(dict.fromkeys([PREVIOUS_INT8, *(c for c in a.candidates.split(",") if c)]))
    corpus = feedback_corpus(max(a.texts, a.sentiment_texts), seed=2024, min_words=10, max_words=60)
    texts = {"sentiment": corpus[: a.sentiment_texts], "zero-shot": corpus[: a.texts]}
    a.texts_by_task = texts
    labels = list(TOPIC_LABELS)
    print(
        f"cores={len(os.sched_getaffinity(0))} rounds={a.rounds} zero-shot {a.texts} texts x {len(labels)} labels, "
        f"sentiment {a.sentiment_texts} texts per round (RANDOM WEIGHTS: speed is real, scores are not)"
    )
    out: dict[str, Any] = {}
    sections = {
        "int8": section_int8,
        "session": section_session,
        "batch": section_batch,
        "bf16": section_bf16,
        "distilled": section_distilled,
    }
    for s in a.sections.split(","):
        t0 = time.perf_counter()
        sections[s](a, texts, labels, out)
        print(f"  [{s}: {time.perf_counter() - t0:.0f} s]", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
