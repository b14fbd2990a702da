"""Export the sentiment and zero-shot checkpoints to ONNX, check parity, write manifests.

Needs the ``export`` extra (torch, transformers, optimum-onnx, onnx); the runtime
(``reactor.nlp.onnx``) never does.  torch and transformers are imported only inside functions here.
The PyTorch references live in ``reactor.nlp.parity``, the int8/fp16 conversions in ``reactor.nlp.quantize``,
the graph fusion (attention, LayerNorm, GELU as single ORT kernels) in ``reactor.nlp.fusion``.

Layout written under ``--out`` (default ``models_onnx/``)::

    models_onnx/
      sentiment/            DistilBERT-style sequence classifier
        model.onnx          fp32, the exact default (parity vs PyTorch measured at export, <= 1e-4 or refused);
                            unfused: what the CPU runs
        model.fused.onnx    the same in fp32 with attention, LayerNorm and GELU fused (what CUDA runs in fp32;
                            fused operators and parity in the manifest's ``graph``)
        model.int8.onnx     only with --quantize int8: dynamic int8 weights (CPU), recipe in the manifest
                            (``int8_config``); activation scales are computed per batch, so a text's scores
                            move with its batch neighbours
        model.int8-static.onnx  only with --quantize int8-static: int8 weights and activations with scales
                            calibrated at export on sample texts (CPU); batch-independent
        model.fp16.onnx     only with --fp16: the fused graph in fp16, fp32 inputs/outputs (CUDA)
        tokenizer.json      the checkpoint's fast tokenizer (the runtime splits special tokens in text)
        config.json         the checkpoint's config (labels)
        manifest.json       source, sha256 of files, opset, graph fusion, precisions with parity/drift, random_weights,
                            special-token template, max length, created_at, library versions
      zero-shot/            BART-MNLI-style NLI classifier, same files

Each folder is built in a staging sibling and swapped in only when parity holds, so a failed export
never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from reactor.nlp import fusion, parity
from reactor.nlp import quantize as quant
from reactor.nlp.catalog import DEFAULT_SHAPE, ZERO_SHOT_CHOICES
from reactor.nlp.errors import ExportError
from reactor.nlp.onnx import FUSED_FP32, HYPOTHESIS_TEMPLATE, PRECISIONS, OnnxSentiment, OnnxZeroShot

OPSET = 18  # optimum's recommended minimum for BART
FP32_TOLERANCE = 1e-4  # refuse to write a model whose fp32 scores differ more than this from PyTorch
DEFAULT_SENTIMENT = "distilbert-base-uncased-finetuned-sst-2-english"
DEFAULT_ZERO_SHOT = ZERO_SHOT_CHOICES[DEFAULT_SHAPE].hub_id
TASKS = ("sentiment", "zero-shot")
FUSABLE = "model.fusable.onnx"  # staging only: the export fusion starts from when it is not model.onnx's
CALIBRATION_TEXTS = 64  # generated feedback texts used when no --calibration-texts file is given

Log = Callable[[str], None]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- loading the checkpoint


def _hub_reachable(timeout: float = 5.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def load_checkpoint(source: str, attention: str = "eager") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode from a local checkpoint folder or a Hub id (cache, then network).

    The tokenizer splits special tokens in user text, like the runtime; the model uses eager attention
    (``attention``: another implementation, for the graph fusion starts from) and no KV cache so the exported
    graph is the plain classifier.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    def load(**kw: Any) -> tuple[Any, Any]:
        tok = AutoTokenizer.from_pretrained(source, split_special_tokens=True, **kw)
        model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation=attention, **kw)
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
        return model.eval(), tok

    if Path(source).is_dir():
        try:
            return load()
        except Exception as exc:
            raise ExportError(f"{source} is not a loadable checkpoint folder: {exc}") from exc
    if Path(source).exists() or source.startswith((".", "/", "~")):
        raise ExportError(f"{source} is not a checkpoint folder (expected config.json, weights, tokenizer)")
    with contextlib.suppress(Exception):  # already in the local Hugging Face cache
        return load(local_files_only=True)
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True") or not _hub_reachable():
        raise ExportError(
            f"can't download {source!r}: the Hugging Face Hub is unreachable from here (and the model is not "
            "in the local cache). Run `reactor export-models --tiny` to build random-weight models for "
            "tests, or pass --sentiment/--zero-shot a local checkpoint folder."
        )
    try:
        return load()
    except Exception as exc:
        raise ExportError(f"can't load {source!r} from the Hugging Face Hub: {exc}") from exc


# ---------------------------------------------------------------- export steps


def _template(tokenizer: Any, config: Any) -> dict[str, Any]:
    """The special tokens the checkpoint's tokenizer puts around one text and around a pair."""
    a, b = -1001, -1002  # sentinels that are never real ids
    single = list(tokenizer.build_inputs_with_special_tokens([a]))
    pair = list(tokenizer.build_inputs_with_special_tokens([a], [b]))
    i, j = pair.index(a), pair.index(b)
    k = single.index(a)
    return {
        "single": {"prefix": single[:k], "suffix": single[k + 1 :]},
        "pair": {"prefix": pair[:i], "middle": pair[i + 1 : j], "suffix": pair[j + 1 :]},
        "max_length": parity.max_length(tokenizer, config),
        "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
    }


def _onnx_export(model: Any, tokenizer: Any, dest: Path, log: Log, name: str = "model.onnx") -> Path:
    """optimum's exporter on the loaded (eval, no cache) model; returns dest/name."""
    import torch
    from optimum.exporters.onnx import onnx_export_from_model

    with tempfile.TemporaryDirectory(prefix="reactor-onnx-") as tmp, torch.no_grad():
        t0 = time.perf_counter()
        onnx_export_from_model(
            model,
            tmp,
            opset=OPSET,
            task="text-classification",
            do_validation=False,
            device="cpu",
        )
        produced = Path(tmp) / "model.onnx"
        if not produced.is_file():
            raise ExportError(f"optimum produced no model.onnx (got {sorted(os.listdir(tmp))})")
        extra = [p for p in Path(tmp).iterdir() if p.name.startswith("model.onnx_data")]
        target = dest / name
        if extra:  # > 2 GB models keep external data: fold it back in when it fits (it does up to 2 GB)
            import onnx

            onnx.save_model(onnx.load(str(produced)), str(target), save_as_external_data=False)
        else:
            shutil.copyfile(produced, target)
        log(f"  exported {target.name} ({target.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s")
    return target


def _fusable(source: str, model: Any, exported: Path, log: Log) -> Path:
    """The graph fusion starts from: model.onnx (eager), or an export of the checkpoint loaded with the attention
    implementation whose trace ORT fuses (``fusion.ATTENTION``: SDPA for DistilBERT)."""
    attention = fusion.ATTENTION.get(model.config.model_type, "eager")
    if attention == "eager":
        return exported
    other, tokenizer = load_checkpoint(source, attention)
    return _onnx_export(other, tokenizer, exported.parent, log, name=FUSABLE)


def _fuse(src: Path, dst: Path, log: Log) -> dict[str, Any]:
    """``reactor.nlp.fusion.fuse`` of ``src`` into ``dst`` (model.fused.onnx), said in one log line."""
    t0 = time.perf_counter()
    graph = fusion.fuse(src, dst)
    if not graph["applied"]:
        log(f"  graph not fused: {graph['why']}")
        return graph
    ops = graph["fused_operators"]
    log(f"  fused in {time.perf_counter() - t0:.1f}s: {', '.join(f'{k} {v}' for k, v in ops.items()) or 'nothing'}")
    if not any(ops.get(op) for op in fusion.FUSED_ATTENTION_OPS):
        log("  WARNING: no attention block was fused (other library versions?): GPU throughput will suffer")
    return graph


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "tokenizers"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def export_task(
    task: str,
    source: str,
    dest: str | Path,
    *,
    quantize: str | Sequence[str] | None = None,
    fp16: bool = False,
    source_id: str | None = None,
    checkpoint: str | None = None,
    calibration: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Export one checkpoint (Hub id or folder) to ``dest``; returns the manifest written there."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    kinds = _quantizations(quantize)
    dest = Path(dest)
    log(f"{task}: loading {source}")
    model, tokenizer = load_checkpoint(source)
    manifest: dict[str, Any] = {
        "task": task,
        "source": source_id or source,
        "checkpoint": checkpoint or (str(Path(source).resolve()) if Path(source).is_dir() else source),
        "architecture": type(model).__name__,
        "random_weights": bool(getattr(model.config, "random_weights", False)),
        "opset": OPSET,
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
        "tokenizer": _template(tokenizer, model.config),
        "hypothesis_template": HYPOTHESIS_TEMPLATE,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    if task == "zero-shot":
        manifest["contradiction_id"], manifest["entailment_id"] = parity.entailment_ids(model.config)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        exported = _onnx_export(model, tokenizer, stage, log)
        tokenizer.backend_tokenizer.save(str(stage / "tokenizer.json"))
        model.config.to_json_file(str(stage / "config.json"))
        manifest["graph"] = _fuse(_fusable(source, model, exported, log), stage / FUSED_FP32, log)
        (stage / FUSABLE).unlink(missing_ok=True)
        manifest["precisions"] = {}
        write_manifest(stage, manifest)
        _check_and_convert(task, model, tokenizer, stage, dest, manifest, kinds, fp16, calibration, log)
        manifest["files"] = {
            p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(stage.iterdir())
            if p.is_file() and p.name != "manifest.json"
        }
        write_manifest(stage, manifest)
        if dest.exists():
            shutil.rmtree(dest)
        stage.rename(dest)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return manifest


def _check_and_convert(
    task: str,
    model: Any,
    tokenizer: Any,
    stage: Path,
    dest: Path,
    manifest: dict[str, Any],
    kinds: tuple[str, ...],
    fp16: bool,
    calibration: str | Path | None,
    log: Log,
) -> None:
    """fp32 parity vs PyTorch (refuse above FP32_TOLERANCE) of model.onnx and of the fused graph, then each
    requested conversion with its drift.

    model.onnx (the CPU's fp32) and the int8 files stay unfused, as before fusion existed: on the benchmark CPU
    the fused fp32 graphs cost ~5 % more CPU (BENCHMARKS.md §8) and the int8 recipe search found no fused variant
    faster (§2.1). model.fused.onnx (fp32 on CUDA) and model.fp16.onnx are the fused graph."""
    texts = parity.probe_texts()
    labels = list(parity.PROBE_LABELS)
    t0 = time.perf_counter()
    if task == "sentiment":
        ref: Any = parity.reference_sentiment(model, tokenizer, texts)
    else:
        ref = parity.reference_zero_shot(model, tokenizer, texts, labels)
    log(f"  PyTorch reference on {len(texts)} probe texts in {time.perf_counter() - t0:.1f}s")

    def ours(precision: str, device: str = "cpu", file: str | None = None) -> tuple[Any, Any]:
        cls = OnnxSentiment if task == "sentiment" else OnnxZeroShot
        runtime = cls(stage, precision=precision, device=device, batch_size=8, cache_size=0, file=file)
        return runtime, parity.scores(runtime, texts, labels)

    fp32_runtime, got = ours("fp32")
    check = parity.compare(task, got, ref)
    manifest["precisions"]["fp32"] = {"file": PRECISIONS["fp32"], "parity_vs_pytorch": check}
    log(f"  fp32 parity vs PyTorch: max |Δscore| {check['max_abs_diff']:.2e}")
    if check["max_abs_diff"] > FP32_TOLERANCE or check["decision_flips"]:
        raise ExportError(
            f"{task}: fp32 ONNX scores differ from PyTorch by {check['max_abs_diff']:.3g} "
            f"(> {FP32_TOLERANCE:g}) or flip decisions ({check['decision_flips']}); refusing to write "
            f"{dest}. Check the opset/exporter versions ({manifest['versions']})."
        )
    fused = stage / FUSED_FP32
    if fused.is_file():
        check = parity.compare(task, ours("fp32", file=FUSED_FP32)[1], ref)
        manifest["graph"]["parity_vs_pytorch"] = check
        log(f"  fused fp32 parity vs PyTorch: max |Δscore| {check['max_abs_diff']:.2e}")
        if check["max_abs_diff"] > FP32_TOLERANCE or check["decision_flips"]:
            raise ExportError(
                f"{task}: the fused graph's scores differ from PyTorch by {check['max_abs_diff']:.3g} "
                f"(> {FP32_TOLERANCE:g}) or flip decisions ({check['decision_flips']}); refusing to write {dest}."
            )
    for kind in kinds:
        entry: dict[str, Any] = {"file": PRECISIONS[kind]}
        t0 = time.perf_counter()
        if kind == "int8":
            name = quant.SHIPPED_INT8[task]
            quant.quantize_int8(stage / PRECISIONS["fp32"], stage / PRECISIONS[kind], name)
            entry.update(quant.manifest_entry(name))
        else:
            from reactor.devtools.corpus import feedback_corpus

            default = [*parity.PROBE_TEXTS, *feedback_corpus(CALIBRATION_TEXTS, seed=4242, min_words=3, max_words=120)]
            calib = quant.calibration_texts(calibration, default)
            quant.quantize_static(stage / PRECISIONS["fp32"], stage / PRECISIONS[kind], fp32_runtime, calib, labels)
            entry["method"] = quant.STATIC_METHOD
            entry["calibration"] = {"texts": len(calib), "source": str(calibration or "probe set + generated")}
        log(f"  wrote {PRECISIONS[kind]} in {time.perf_counter() - t0:.1f}s")
        runtime, got = ours(kind)
        drift = parity.compare(task, got, ref)
        drift["batch_neighbour_max_diff"] = parity.neighbour_drift(runtime, texts, labels)
        manifest["precisions"][kind] = {**entry, "drift_vs_pytorch": drift}
        log(
            f"  {kind} drift vs PyTorch: max |Δscore| {drift['max_abs_diff']:.3g}, mean "
            f"{drift['mean_abs_diff']:.3g}, batch-neighbour {drift['batch_neighbour_max_diff']:.3g}"
        )
    if fp16:
        quant.convert_fp16(fused if fused.is_file() else stage / PRECISIONS["fp32"], stage / PRECISIONS["fp16"])
        entry = {"file": PRECISIONS["fp16"], "io": "fp32 inputs/outputs, fp16 inside"}
        try:  # the runtime refuses device "cuda" without onnxruntime-gpu and a GPU, saying why
            _, got = ours("fp16", device="cuda")
            entry["drift_vs_pytorch"] = parity.compare(task, got, ref)
        except Exception as exc:
            entry["drift_vs_pytorch"] = f"not measured: {exc}"
            log(f"  fp16 built (for CUDA); drift not measured: {exc}")
        manifest["precisions"]["fp16"] = entry


def _quantizations(kinds: str | Sequence[str] | None) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds or ())
    for kind in kinds:
        if kind not in quant.QUANTIZATIONS:
            raise ExportError(f"--quantize supports {', '.join(quant.QUANTIZATIONS)}, not {kind!r}")
    return tuple(dict.fromkeys(kinds))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def export_models(
    out: str | Path = "models_onnx",
    *,
    sentiment: str = DEFAULT_SENTIMENT,
    zero_shot: str = DEFAULT_ZERO_SHOT,
    tasks: Sequence[str] = TASKS,
    quantize: str | Sequence[str] | None = None,
    fp16: bool = False,
    calibration: str | Path | None = None,
    random_size: str | None = None,
    shape: str = DEFAULT_SHAPE,
    checkpoints_dir: str | Path | None = None,
    log: Log = print,
) -> dict[str, dict[str, Any]]:
    """Export the models of ``tasks`` to ``out/sentiment`` and ``out/zero-shot``.

    ``random_size`` ("tiny" or "full") first builds random-weight checkpoints
    (``reactor.devtools.random_models``; the zero-shot one of ``shape``, a ``reactor.nlp.catalog`` key) in
    ``checkpoints_dir`` (default ``.cache/models_<size>``) and exports those instead of the given ids.
    """
    from reactor.logs import quiet_onnxruntime

    quiet_onnxruntime()  # the optimizer, quantizers and parity sessions log through ORT's C++ logger
    out = Path(out)
    tasks = tuple(t for t in TASKS if t in tasks)
    sources = {"sentiment": sentiment, "zero-shot": zero_shot}
    ids, checkpoints = dict(sources), dict.fromkeys(sources, None)
    if random_size is not None:
        from reactor.devtools.random_models import build_checkpoints

        ck = Path(checkpoints_dir) if checkpoints_dir else Path(".cache") / f"models_{random_size}"
        t0 = time.perf_counter()
        log(f"building random-weight '{random_size}' checkpoints in {ck} (RANDOM WEIGHTS: scores mean nothing)")
        built = build_checkpoints(ck, random_size, shape=shape, tasks=tasks)
        log(f"  built in {time.perf_counter() - t0:.1f}s")
        sources = {k: str(v) for k, v in built.items()}
        arch = {"sentiment": "distilbert-sst2", "zero-shot": "bart-mnli" if shape == DEFAULT_SHAPE else shape}
        ids = {k: f"reactor/{random_size}-random-{arch[k]}" for k in sources}
        checkpoints = {k: f"reactor.devtools.random_models ({random_size}, {arch[k]})" for k in sources}
    return {
        task: export_task(
            task,
            sources[task],
            out / task,
            quantize=quantize,
            fp16=fp16,
            source_id=ids[task],
            checkpoint=checkpoints[task],
            calibration=calibration,
            log=log,
        )
        for task in tasks
    }
