"""Export the sentiment and zero-shot checkpoints to ONNX, check parity, write manifests.

Needs the ``export`` extra (torch, transformers, optimum-onnx, onnx); the runtime
(``reactor.nlp.onnx``) never does.  torch and transformers are imported only inside functions here.

Layout written under ``--out`` (default ``models_onnx/``)::

    models_onnx/
      sentiment/            DistilBERT-style sequence classifier
        model.onnx          fp32, the exact default (parity vs PyTorch measured at export, <= 1e-4 or refused)
        model.int8.onnx     only with --quantize int8: dynamic per-channel int8 weights (CPU); activation
                            scales are computed per batch, so a text's scores move with its batch neighbours
        model.int8-static.onnx  only with --quantize int8-static: int8 weights and activations with scales
                            calibrated at export on sample texts (CPU); batch-independent
        model.fp16.onnx     only with --fp16: fp16 weights, fp32 inputs/outputs (CUDA)
        tokenizer.json      the checkpoint's fast tokenizer (the runtime splits special tokens in text)
        config.json         the checkpoint's config (labels)
        manifest.json       source, sha256 of files, opset, precisions with parity/drift, random_weights,
                            special-token template, max length, created_at, library versions
      zero-shot/            BART-MNLI-style NLI classifier, same files

Each folder is built in a staging sibling and swapped in only when parity holds, so a failed export
never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from reactor.nlp.onnx import HYPOTHESIS_TEMPLATE, PRECISIONS, OnnxSentiment, OnnxZeroShot

OPSET = 18  # optimum's recommended minimum for BART
FP32_TOLERANCE = 1e-4  # refuse to write a model whose fp32 scores differ more than this from PyTorch
DEFAULT_SENTIMENT = "distilbert-base-uncased-finetuned-sst-2-english"
DEFAULT_ZERO_SHOT = "facebook/bart-large-mnli"
TASKS = ("sentiment", "zero-shot")

# Texts that break naive pipelines: special-token strings, emoji, control characters, empty, long.
PROBE_TEXTS: tuple[str, ...] = (
    "Great app, fast delivery!",
    "The courier was late again and support never answered.",
    "",
    "  ",
    "refund please </s> the package arrived damaged </s></s>",
    "[CLS] login broken [SEP] cannot pay [SEP] [MASK] <s> <pad> <unk>",
    "Love it 😍👍🔥 but the price 💸💸 is too high 😡",
    "tabs\tand\nnewlines\r\x00\x07\x1b[31m control \u200b chars \ufeff",
    "Ünïcödé façade naïve café — “quotes” … ½ ¼ 中文 日本語 العربية",
    "ok",
    "slow " * 1500,  # far over every max length: truncated
)

Log = Callable[[str], None]


class ExportError(Exception):
    """Export can't proceed; the message says why and what to do (shown without a traceback)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def probe_texts(n_generated: int = 12) -> list[str]:
    """The probe set used for parity at export: the tricky texts plus generated feedback."""
    from reactor.nlp.tiny import feedback_corpus

    return [*PROBE_TEXTS, *feedback_corpus(n_generated, seed=777)]


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


def load_checkpoint(source: str) -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode from a local checkpoint folder or a Hub id (cache, then network).

    The tokenizer splits special tokens in user text, like the runtime; the model uses eager attention
    and no KV cache so the exported graph is the plain classifier.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    def load(**kw: Any) -> tuple[Any, Any]:
        tok = AutoTokenizer.from_pretrained(source, split_special_tokens=True, **kw)
        model = AutoModelForSequenceClassification.from_pretrained(source, attn_implementation="eager", **kw)
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


# ---------------------------------------------------------------- PyTorch references (the pipelines' maths)


def reference_sentiment(model: Any, tokenizer: Any, texts: Sequence[str]) -> list[tuple[str, float]]:
    """What ``pipeline("sentiment-analysis", truncation=True)`` returns, one text per forward."""
    import torch

    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, return_tensors="pt")
            logits = model(**enc).logits[0].double()
            p = torch.softmax(logits, -1)
            best = int(p.argmax())
            out.append((model.config.id2label[best], float(p[best])))
    return out


def entailment_ids(config: Any) -> tuple[int, int]:
    """(contradiction_id, entailment_id) exactly as ZeroShotClassificationPipeline picks them."""
    entail = next((int(i) for label, i in config.label2id.items() if label.lower().startswith("entail")), -1)
    if entail == -1:
        raise ExportError("the zero-shot model's config has no 'entailment' label (not an NLI model?)")
    return (-1 if entail == 0 else 0), entail


def reference_zero_shot(
    model: Any, tokenizer: Any, texts: Sequence[str], labels: Sequence[str]
) -> list[dict[str, float]]:
    """What ``pipeline("zero-shot-classification", multi_label=True)`` returns, one pair per forward.

    Computed directly because the pipeline rejects an empty text; same tokenizer call (only_first).
    """
    import torch

    contradiction, entail = entailment_ids(model.config)
    out = []
    with torch.no_grad():
        for text in texts:
            scores = {}
            for label in labels:
                enc = tokenizer(text, HYPOTHESIS_TEMPLATE.format(label), truncation="only_first", return_tensors="pt")
                logits = model(**enc).logits[0].double()
                scores[label] = float(torch.softmax(logits[[contradiction, entail]], -1)[1])
            out.append(scores)
    return out


# ---------------------------------------------------------------- export steps


def _template(tokenizer: Any, config: Any) -> dict[str, Any]:
    """The special tokens the checkpoint's tokenizer puts around one text and around a pair."""
    a, b = -1001, -1002  # sentinels that are never real ids
    single = list(tokenizer.build_inputs_with_special_tokens([a]))
    pair = list(tokenizer.build_inputs_with_special_tokens([a], [b]))
    i, j = pair.index(a), pair.index(b)
    k = single.index(a)
    max_length = int(tokenizer.model_max_length)
    if max_length > 100_000:  # tokenizer without a limit: fall back to the position table
        max_length = int(getattr(config, "max_position_embeddings", 512) or 512)
    return {
        "single": {"prefix": single[:k], "suffix": single[k + 1 :]},
        "pair": {"prefix": pair[:i], "middle": pair[i + 1 : j], "suffix": pair[j + 1 :]},
        "max_length": max_length,
        "pad_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
    }


def _onnx_export(model: Any, tokenizer: Any, dest: Path, log: Log) -> Path:
    """optimum's exporter on the loaded (eval, eager, no cache) model; returns dest/model.onnx."""
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
        target = dest / "model.onnx"
        if extra:  # > 2 GB models keep external data: fold it back in when it fits (it does up to 2 GB)
            import onnx

            onnx.save_model(onnx.load(str(produced)), str(target), save_as_external_data=False)
        else:
            shutil.copyfile(produced, target)
        log(f"  exported {target.name} ({target.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s")
    return target


QUANTIZATIONS = ("int8", "int8-static")
QUANT_METHODS = {
    "int8": "onnxruntime dynamic quantization, per-channel QInt8 weights, uint8 activations",
    "int8-static": "onnxruntime static QDQ quantization of MatMuls: per-channel QInt8 weights, uint8 activations "
    "with MinMax scales calibrated at export",
}
CALIBRATION_TEXTS = 64  # generated feedback texts used when no --calibration-texts file is given
# Calibration memory grows with the tokens in one batch (BART-large: ~13 GB peak at 1,024): long rows go alone.
CALIBRATION_BATCH_TOKENS = 1024


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization warns on the root logger about every tensor it skips: not actionable here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_root_logger():
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8)


def calibration_texts(path: str | Path | None = None) -> list[str]:
    """Texts whose activations set the static int8 scales: one per line from ``path`` (your own feedback is
    best), else the probe set plus generated feedback."""
    if path is not None:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ExportError(f"can't read calibration texts {path}: {exc}") from exc
        texts = [line for line in lines if line.strip()]
        if not texts:
            raise ExportError(f"{path} holds no calibration texts (one text per line)")
        return texts
    from reactor.nlp.tiny import feedback_corpus

    return [*PROBE_TEXTS, *feedback_corpus(CALIBRATION_TEXTS, seed=4242, min_words=3, max_words=120)]


def _quantize_static(src: Path, dst: Path, runtime: Any, texts: Sequence[str], labels: Sequence[str]) -> None:
    """Static int8: run the fp32 model on calibration batches built exactly as at run time, record MinMax
    activation ranges, write a QDQ model (ONNX Runtime fuses it into int8 kernels)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if isinstance(runtime, OnnxZeroShot):
        rows, types = runtime.rows(texts, labels)
    else:
        rows, types = runtime.rows(texts), None

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = runtime.batches(rows, types, CALIBRATION_BATCH_TOKENS)

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else batch[1]

    with _quiet_root_logger():
        quantize_static(
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


def _convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save_model(model, str(dst))


def _compare(task: str, ours: Any, ref: Any) -> dict[str, Any]:
    """Score differences between our runtime and the PyTorch reference on the probe set."""
    diffs: list[float] = []
    flips = 0
    if task == "sentiment":
        for (l1, s1), (l2, s2) in zip(ours, ref, strict=True):
            # compare P(POSITIVE)-like quantities so a label flip near 0.5 counts as a small difference
            diffs.append(abs(s1 - s2) if l1 == l2 else abs(s1 - (1 - s2)))
            flips += l1 != l2
    else:
        for row, want in zip(ours, ref, strict=True):
            got = dict(row)
            diffs += [abs(got[k] - v) for k, v in want.items()]
            flips += sum((got[k] >= 0.7) != (v >= 0.7) for k, v in want.items())
    return {
        "max_abs_diff": max(diffs) if diffs else 0.0,
        "mean_abs_diff": sum(diffs) / len(diffs) if diffs else 0.0,
        "n_scores": len(diffs),
        "decision_flips": flips,  # sentiment: label; zero-shot: crossing the caller's 0.7 threshold
    }


def _scores(task: str, runtime: Any, texts: Sequence[str], labels: Sequence[str]) -> list[Any]:
    """Our runtime's output for `texts`: (label, score) per text, or the label scores per text."""
    return runtime.predict(texts) if task == "sentiment" else runtime.classify(texts, labels)


def _neighbour_drift(task: str, runtime: Any, texts: Sequence[str], labels: Sequence[str]) -> float:
    """Max score change of a text scored alone vs inside a batch (int8 dynamic scales shift it).
    `runtime` must be built with cache_size=0, so nothing is served from an earlier call."""
    alone = [row for t in texts for row in _scores(task, runtime, [t], labels)]
    batched = _scores(task, runtime, texts, labels)
    if task == "sentiment":
        return max(abs(a[1] - b[1]) for a, b in zip(alone, batched, strict=True))
    return max(abs(dict(a)[k] - v) for a, b in zip(alone, batched, strict=True) for k, v in dict(b).items())


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
    calibration: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Export one checkpoint (Hub id or folder) to ``dest``; returns the manifest written there."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    quantize = _quantizations(quantize)
    dest = Path(dest)
    log(f"{task}: loading {source}")
    model, tokenizer = load_checkpoint(source)
    random_weights = bool(getattr(model.config, "random_weights", False))
    manifest: dict[str, Any] = {
        "task": task,
        "source": source_id or source,
        "checkpoint": str(Path(source).resolve()) if Path(source).is_dir() else source,
        "architecture": type(model).__name__,
        "random_weights": random_weights,
        "opset": OPSET,
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
        "tokenizer": _template(tokenizer, model.config),
        "hypothesis_template": HYPOTHESIS_TEMPLATE,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
    }
    if task == "zero-shot":
        manifest["contradiction_id"], manifest["entailment_id"] = entailment_ids(model.config)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
    try:
        _onnx_export(model, tokenizer, stage, log)
        tokenizer.backend_tokenizer.save(str(stage / "tokenizer.json"))
        model.config.to_json_file(str(stage / "config.json"))
        manifest["precisions"] = {}
        write_manifest(stage, manifest)

        texts = probe_texts()
        labels = ["delivery", "price", "customer support", "app usability"]
        t0 = time.perf_counter()
        if task == "sentiment":
            ref: Any = reference_sentiment(model, tokenizer, texts)
        else:
            ref = reference_zero_shot(model, tokenizer, texts, labels)
        log(f"  PyTorch reference on {len(texts)} probe texts in {time.perf_counter() - t0:.1f}s")

        def ours(precision: str, device: str = "cpu") -> tuple[Any, Any]:
            cls = OnnxSentiment if task == "sentiment" else OnnxZeroShot
            runtime = cls(stage, precision=precision, device=device, batch_size=8, cache_size=0)
            return runtime, _scores(task, runtime, texts, labels)

        fp32_runtime, got = ours("fp32")
        parity = _compare(task, got, ref)
        manifest["precisions"]["fp32"] = {"file": PRECISIONS["fp32"], "parity_vs_pytorch": parity}
        log(f"  fp32 parity vs PyTorch: max |Δscore| {parity['max_abs_diff']:.2e}")
        if parity["max_abs_diff"] > FP32_TOLERANCE or parity["decision_flips"]:
            raise ExportError(
                f"{task}: fp32 ONNX scores differ from PyTorch by {parity['max_abs_diff']:.3g} "
                f"(> {FP32_TOLERANCE:g}) or flip decisions ({parity['decision_flips']}); refusing to write "
                f"{dest}. Check the opset/exporter versions ({manifest['versions']})."
            )

        for kind in quantize:
            entry: dict[str, Any] = {"file": PRECISIONS[kind], "method": QUANT_METHODS[kind]}
            if kind == "int8":
                _quantize_int8(stage / PRECISIONS["fp32"], stage / PRECISIONS[kind])
            else:
                t0 = time.perf_counter()
                calib = calibration_texts(calibration)
                _quantize_static(stage / PRECISIONS["fp32"], stage / PRECISIONS[kind], fp32_runtime, calib, labels)
                entry["calibration"] = {"texts": len(calib), "source": str(calibration or "probe set + generated")}
                log(f"  calibrated static int8 on {len(calib)} texts in {time.perf_counter() - t0:.1f}s")
            runtime, got = ours(kind)
            drift = _compare(task, got, ref)
            drift["batch_neighbour_max_diff"] = _neighbour_drift(task, runtime, texts, labels)
            manifest["precisions"][kind] = {**entry, "drift_vs_pytorch": drift}
            log(
                f"  {kind} drift vs PyTorch: max |Δscore| {drift['max_abs_diff']:.3g}, mean "
                f"{drift['mean_abs_diff']:.3g}, batch-neighbour {drift['batch_neighbour_max_diff']:.3g}"
            )
        if fp16:
            _convert_fp16(stage / PRECISIONS["fp32"], stage / PRECISIONS["fp16"])
            entry = {"file": PRECISIONS["fp16"], "io": "fp32 inputs/outputs, fp16 inside"}
            try:  # the runtime refuses device "cuda" without onnxruntime-gpu and a GPU, saying why
                _, got = ours("fp16", device="cuda")
                entry["drift_vs_pytorch"] = _compare(task, got, ref)
            except Exception as exc:
                entry["drift_vs_pytorch"] = f"not measured: {exc}"
                log(f"  fp16 built (for CUDA); drift not measured: {exc}")
            manifest["precisions"]["fp16"] = entry

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


def _quantizations(quantize: str | Sequence[str] | None) -> tuple[str, ...]:
    kinds = (quantize,) if isinstance(quantize, str) else tuple(quantize or ())
    for kind in kinds:
        if kind not in QUANTIZATIONS:
            raise ExportError(f"--quantize supports {', '.join(QUANTIZATIONS)}, not {kind!r}")
    return tuple(dict.fromkeys(kinds))


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def export_models(
    out: str | Path = "models_onnx",
    *,
    sentiment: str = DEFAULT_SENTIMENT,
    zero_shot: str = DEFAULT_ZERO_SHOT,
    quantize: str | Sequence[str] | None = None,
    fp16: bool = False,
    calibration: str | Path | None = None,
    random_size: str | None = None,
    checkpoints_dir: str | Path | None = None,
    log: Log = print,
) -> dict[str, dict[str, Any]]:
    """Export both models to ``out/sentiment`` and ``out/zero-shot``.

    ``random_size`` ("tiny" or "full") first builds random-weight checkpoints (``reactor.nlp.tiny``) in
    ``checkpoints_dir`` (default ``.cache/models_<size>``) and exports those instead of the given ids.
    """
    out = Path(out)
    sources = {"sentiment": sentiment, "zero-shot": zero_shot}
    ids = dict(sources)
    if random_size is not None:
        from reactor.nlp.tiny import build_checkpoints

        ck = Path(checkpoints_dir) if checkpoints_dir else Path(".cache") / f"models_{random_size}"
        t0 = time.perf_counter()
        log(f"building random-weight '{random_size}' checkpoints in {ck} (RANDOM WEIGHTS: scores mean nothing)")
        built = build_checkpoints(ck, random_size)
        log(f"  built in {time.perf_counter() - t0:.1f}s")
        sources = {k: str(v) for k, v in built.items()}
        arch = {"sentiment": "distilbert-sst2", "zero-shot": "bart-mnli"}
        ids = {k: f"reactor/{random_size}-random-{arch[k]}" for k in sources}
    return {
        task: export_task(
            task,
            sources[task],
            out / task,
            quantize=quantize,
            fp16=fp16,
            source_id=ids[task],
            calibration=calibration,
            log=log,
        )
        for task in TASKS
    }
