"""ONNX Runtime sentiment and zero-shot models: the production path, without torch or transformers.

Needs only onnxruntime, tokenizers and numpy.  Reads the folders written by ``reactor export-models``
(layout in ``reactor.nlp.export``)::

    models_onnx/sentiment/{model.onnx, model.int8.onnx?, model.fp16.onnx?, tokenizer.json, manifest.json}
    models_onnx/zero-shot/{...same...}

Scores follow the transformers pipelines they replace, checked by tests/nlp/test_parity.py:

* sentiment: softmax over the logits, top label and its probability (``sentiment-analysis``), with the
  text truncated to the model's max length (the pipeline's ``truncation=True``);
* zero-shot: one NLI pair per (text, label) with the hypothesis "This example is {}.", probability =
  softmax over (contradiction, entailment) taking entailment (``zero-shot-classification``,
  ``multi_label=True``), text truncated ``only_first``.

Differences from the pipelines, on purpose: special-token strings inside user text ("</s>", "[SEP]")
are tokenized as text (``split_special_tokens=True``) — otherwise a "</s>" in feedback changes BART's
eos count and crashes or skews the batch; empty text is accepted (the zero-shot pipeline rejects it).

Speed: each text is tokenized once and joined with pre-tokenized hypotheses, pairs are sorted by length
and padded per batch, and results are cached per model for identical (text, label set). Model batches are
sized for the device (``batching``): 8 rows on CPU, a budget of padded tokens on CUDA.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reactor.nlp.encoder import Encoder
from reactor.nlp.session import DEVICES, ModelLoadError, Session, SessionTuning, cuda_wanted, resolve_device

__all__ = [
    "CPU_BATCH_ROWS",
    "CUDA_TOKEN_BUDGET",
    "DEVICES",
    "ModelLoadError",
    "OnnxSentiment",
    "OnnxZeroShot",
    "SessionTuning",
    "load_models",
]

log = logging.getLogger(__name__)

PRECISIONS = {
    "fp32": "model.onnx",
    "int8": "model.int8.onnx",  # dynamic: activation scales per batch, so scores move with batch neighbours
    "int8-static": "model.int8-static.onnx",  # calibrated scales: the same text always gets the same score
    "fp16": "model.fp16.onnx",
}
# fp32 with attention, LayerNorm and GELU fused (reactor.nlp.fusion): what CUDA runs for fp32 when the folder has it;
# the CPU keeps model.onnx (the fused graph cost ~5 % more CPU there, BENCHMARKS.md §8)
FUSED_FP32 = "model.fused.onnx"
HYPOTHESIS_TEMPLATE = "This example is {}."
TASK_DIRS = {"sentiment": "sentiment", "zero-shot": "zero-shot"}
# Model batches. CPU: 8 rows whatever their length, the measured best on the benchmark CPU (BENCHMARKS.md §2).
CPU_BATCH_ROWS = 8
# CUDA: as many length-sorted rows as fit rows × padded width <= this many tokens (one row at least). Chosen from
# issue 20's H200 figures of 2026-12-04 (zero-shot fp16, ~57-token pairs: 628 pairs/s at batch 8, 4,790 at 64,
# 5,723 at 256 = ~14,600 tokens), rounded up to 2^14; not measured with this batching: re-measure with
# scripts/bench_gpu.py. Override: REACTOR_TOKEN_BUDGET (load_models' token_budget).
CUDA_TOKEN_BUDGET = 16_384


class _LRU:
    """A small least-recently-used cache (texts repeat in feedback: "ok", "thanks", templates)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if self.maxsize <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)


@dataclass(frozen=True)
class _Template:
    """Special tokens around one or two pre-tokenized sequences, as the checkpoint's tokenizer adds them."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]

    @classmethod
    def from_manifest(cls, raw: dict[str, list[int]]) -> _Template:
        return cls(tuple(raw.get("prefix", ())), tuple(raw.get("middle", ())), tuple(raw.get("suffix", ())))

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _clean(text: str | None) -> str:
    return "" if text is None else str(text)


def batching(cuda: bool, batch_size: int | None = None, max_tokens: int | None = None) -> tuple[int, int]:
    """(rows per batch, padded tokens per batch), 0 meaning no limit. ``None``: the device's default, a token
    budget on CUDA (``CUDA_TOKEN_BUDGET``, no row limit), ``CPU_BATCH_ROWS`` rows on CPU. A token budget of 0
    means batches of ``CPU_BATCH_ROWS`` rows on either device."""
    if max_tokens is None:
        max_tokens = CUDA_TOKEN_BUDGET if cuda else 0
    max_tokens = max(0, int(max_tokens))
    if batch_size is None:
        batch_size = 0 if max_tokens else CPU_BATCH_ROWS
    return max(0, int(batch_size)), max_tokens


class _OnnxModel:
    """What both tasks share: manifest, session, tokenizer, batching by length."""

    task = ""
    template_key = ""  # manifest["tokenizer"][template_key]: special tokens around a text or a pair

    def __init__(
        self,
        folder: str | Path,
        *,
        precision: str = "fp32",
        device: str = "auto",
        batch_size: int | None = None,
        max_tokens: int | None = None,
        cache_size: int = 4096,
        tuning: SessionTuning | None = None,
        file: str | None = None,
    ) -> None:
        """``file``: the ONNX file to load instead of the precision's (the exporter checks the fused graph)."""
        folder = Path(folder)
        self.folder = folder
        self.manifest = _read_manifest(folder, self.task)
        if file is None:
            file = PRECISIONS[precision]
            if precision == "fp32" and (folder / FUSED_FP32).is_file() and cuda_wanted(device):
                file = FUSED_FP32
        onnx_path = folder / file
        if not onnx_path.is_file():
            hint = {"fp32": "", "fp16": " --fp16"}.get(precision, f" --quantize {precision}")
            raise ModelLoadError(
                f"no {precision} ONNX model in {folder} ({file} is missing): "
                f"run `reactor export-models --tiny{hint}` (random weights, for tests) or "
                f"`reactor export-models{hint}` (real models)"
            )
        self.session = Session(onnx_path, device, tuning)
        if precision == "fp16" and not self.session.cuda:
            raise ModelLoadError("fp16 models need CUDA; use precision 'fp32', 'int8' or 'int8-static' on CPU")
        self.encoder = Encoder(folder / "tokenizer.json")
        tok = self.manifest["tokenizer"]
        self.max_length: int = int(tok["max_length"])
        self.pad_id: int = int(tok["pad_id"])
        self.precision = precision
        self.batch_size, self.max_tokens = batching(self.session.cuda, batch_size, max_tokens)
        self.random_weights: bool = bool(self.manifest.get("random_weights", False))
        sha = self.manifest.get("files", {}).get(file, {}).get("sha256", "unknown")
        self.model_id: str = f"{self.manifest.get('source', folder.name)}@{precision}:{sha[:12]}"
        self.id2label = {int(k): v for k, v in self.manifest["id2label"].items()}
        self.template = _Template.from_manifest(tok[self.template_key])
        self._cache = _LRU(cache_size)

    def _cached(self, texts: list[str], key: Hashable, compute: Callable[[list[str]], Sequence[Any]]) -> dict[str, Any]:
        """Values for the distinct `texts`, computing only those not in the LRU (repeated texts are common)."""
        found: dict[str, Any] = {}
        todo = []
        for text in dict.fromkeys(texts):
            hit = self._cache.get((key, text))
            if hit is None:
                todo.append(text)
            else:
                found[text] = hit
        if todo:
            for text, value in zip(todo, compute(todo), strict=True):
                found[text] = value
                self._cache.put((key, text), value)
        return found

    def prepare(self, texts: Sequence[str]) -> None:
        """Tokenize `texts` ahead of the call that will score them (another thread may run the model meanwhile)."""
        self.encoder.prepare([_clean(t) for t in texts])

    def batches(
        self, rows: list[list[int]], types: list[list[int]] | None = None, max_tokens: int = 0
    ) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """(row positions, model inputs) per batch: rows sorted by length, padded to the batch's longest.
        At most ``batch_size`` rows (0: no row limit), and with ``max_tokens`` at most that many padded tokens
        (rows × width; one row at least)."""
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        cap = self.batch_size or len(order)
        start = 0
        while start < len(order):
            end, limit = start + 1, min(start + cap, len(order))
            # sorted ascending: the row added last sets the batch's width
            while end < limit and (not max_tokens or (end + 1 - start) * len(rows[order[end]]) <= max_tokens):
                end += 1
            idx = order[start:end]
            start = end
            width = max(len(rows[i]) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            type_ids = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                ids[r, : len(rows[i])] = rows[i]
                mask[r, : len(rows[i])] = 1
                if types is not None:
                    type_ids[r, : len(types[i])] = types[i]
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": type_ids}
            yield idx, {name: feeds[name] for name in self.session.input_names}

    def _forward(self, rows: list[list[int]], types: list[list[int]] | None = None) -> np.ndarray:
        """Logits for token-id rows, in the rows' order."""
        out = np.empty((len(rows), len(self.id2label)), dtype=np.float32)
        for idx, feeds in self.batches(rows, types, self.max_tokens):
            out[idx] = self.session.run(feeds)
        return out


class OnnxSentiment(_OnnxModel):
    """``SentimentModel`` on ONNX Runtime: (label, probability) per text, like ``sentiment-analysis``."""

    task = "sentiment"
    template_key = "single"

    def predict(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        texts = [_clean(t) for t in texts]
        results = self._cached(texts, "sentiment", self._predict)
        return [results[t] for t in texts]

    def rows(self, texts: Sequence[str]) -> list[list[int]]:
        """Model input ids per text: special tokens around the text, truncated to the max length."""
        t = self.template
        room = max(0, self.max_length - t.n_special)
        return [[*t.prefix, *ids[:room], *t.suffix] for ids in self.encoder.encode(texts)]

    def _predict(self, texts: list[str]) -> list[tuple[str, float]]:
        out = []
        for p in _softmax(self._forward(self.rows(texts))):
            best = int(np.argmax(p))
            out.append((self.id2label[best], float(p[best])))
        return out


class OnnxZeroShot(_OnnxModel):
    """``ZeroShotModel`` on ONNX Runtime: multi-label NLI entailment probability for every label."""

    task = "zero-shot"
    template_key = "pair"

    def __init__(self, folder: str | Path, *, hypothesis_template: str = HYPOTHESIS_TEMPLATE, **options: Any) -> None:
        """``options``: precision, device, batch_size, max_tokens, cache_size, tuning as for every model."""
        super().__init__(folder, **options)
        self.pair_type_ids: dict[str, int] | None = self.manifest["tokenizer"].get("pair_type_ids")
        self.hypothesis_template = hypothesis_template
        self.entailment_id = int(self.manifest["entailment_id"])
        self.contradiction_id = int(self.manifest["contradiction_id"])
        self._hypotheses: dict[str, list[int]] = {}

    def _hypothesis(self, label: str) -> list[int]:
        ids = self._hypotheses.get(label)
        if ids is None:
            ids = self.encoder.encode([self.hypothesis_template.format(label)])[0]
            self._hypotheses[label] = ids
        return ids

    def split_labels(self, labels: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """(usable labels, {skipped label: why}). A label is unusable when its hypothesis with the special
        tokens leaves no room for a single token of text within the model's max length: scoring it would
        fail every pair (or ignore the text entirely)."""
        usable: list[str] = []
        skipped: dict[str, str] = {}
        for label in dict.fromkeys(labels):
            n = len(self._hypothesis(label)) + self.template.n_special
            if n >= self.max_length:
                skipped[label] = (
                    f"its hypothesis {self.hypothesis_template.format('…')!r} is {n} tokens with the special "
                    f"tokens, leaving no room for the text within this model's max length of {self.max_length}"
                )
            else:
                usable.append(label)
        return usable, skipped

    def classify(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[tuple[str, float]]]:
        texts = [_clean(t) for t in texts]
        labels = list(labels)
        if not labels:
            return [[] for _ in texts]
        _, skipped = self.split_labels(labels)
        if skipped:  # a clear error instead of ONNX Runtime's index error on the position table
            label, why = next(iter(skipped.items()))
            raise ValueError(f"topic label {label[:80]!r} can't be scored: {why}")
        key = (self.hypothesis_template, tuple(labels))  # cached per label set
        scores = self._cached(texts, key, lambda todo: self._score(todo, labels))
        out = []
        for text in texts:
            s = scores[text]
            order = sorted(range(len(labels)), key=lambda j: -s[j])  # stable: ties keep label order
            out.append([(labels[j], float(s[j])) for j in order])
        return out

    def rows(self, texts: Sequence[str], labels: Sequence[str]) -> tuple[list[list[int]], list[list[int]] | None]:
        """Model input ids (and token type ids, for BERT-style NLI models) per (text, label) pair, text-major."""
        hyps = [self._hypothesis(label) for label in labels]
        t = self.template
        rows: list[list[int]] = []
        types: list[list[int]] | None = [] if self.pair_type_ids else None
        for ids in self.encoder.encode(texts):
            for hyp in hyps:
                room = max(0, self.max_length - t.n_special - len(hyp))  # only_first: cut the text only
                a = ids[:room]
                rows.append([*t.prefix, *a, *t.middle, *hyp, *t.suffix])
                if types is not None and self.pair_type_ids:
                    first = len(t.prefix) + len(a) + len(t.middle)
                    second = len(hyp) + len(t.suffix)
                    types.append([self.pair_type_ids["a"]] * first + [self.pair_type_ids["b"]] * second)
        return rows, types

    def _score(self, texts: list[str], labels: list[str]) -> list[np.ndarray]:
        logits = self._forward(*self.rows(texts, labels))
        pair = logits[:, [self.contradiction_id, self.entailment_id]]
        entail = _softmax(pair)[:, 1]
        n = len(labels)
        return [entail[i * n : (i + 1) * n] for i in range(len(texts))]


def _read_manifest(folder: Path, task: str) -> dict[str, Any]:
    if not folder.is_dir():
        raise ModelLoadError(
            f"no ONNX models in {folder} (folder missing): run `reactor export-models --tiny` "
            f"(random weights, for tests) or `reactor export-models` (real models, needs the Hub)"
        )
    path = folder / "manifest.json"
    if not path.is_file():
        raise ModelLoadError(
            f"no ONNX models in {folder} (manifest.json missing): run `reactor export-models --tiny` "
            f"or `reactor export-models` to (re)build it"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable {path}: {exc}; re-run `reactor export-models`") from exc
    if manifest.get("task") != task:
        raise ModelLoadError(f"{path} is for task {manifest.get('task')!r}, expected {task!r}")
    if not (folder / "tokenizer.json").is_file():
        raise ModelLoadError(f"{folder}/tokenizer.json is missing: re-run `reactor export-models`")
    return manifest


def load_models(
    models_dir: str | Path,
    *,
    precision: str = "fp32",
    device: str | None = "auto",
    token_budget: int | None = None,
) -> tuple[OnnxSentiment, OnnxZeroShot]:
    """Load ``models_dir/sentiment`` and ``models_dir/zero-shot`` (written by ``reactor export-models``).

    ``precision``: fp32 (default, exact vs PyTorch), int8 (opt-in, CPU, dynamic: scores drift and
    depend on batch neighbours — see the manifest), int8-static (opt-in, CPU, calibrated: the same text
    always scores the same; slower than int8 on the benchmark CPU; drift in the manifest), fp16 (CUDA only).
    ``device``: auto|cpu|cuda (the caller passes ``Settings.device``).
    ``token_budget``: padded tokens per model batch (``Settings.token_budget``, env ``REACTOR_TOKEN_BUDGET``);
    None: ``CUDA_TOKEN_BUDGET`` on CUDA, batches of ``CPU_BATCH_ROWS`` rows on CPU; 0: those rows on either.
    """
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if token_budget is not None and token_budget < 0:
        raise ModelLoadError(f"token_budget must be >= 0, not {token_budget}")
    dev = resolve_device(device)
    root = Path(models_dir)
    options: dict[str, Any] = {"precision": precision, "device": dev, "max_tokens": token_budget}
    sentiment = OnnxSentiment(root / TASK_DIRS["sentiment"], **options)
    zero_shot = OnnxZeroShot(root / TASK_DIRS["zero-shot"], **options)
    for m in (sentiment, zero_shot):
        log.info(
            "loaded %s on %s, model batches of %s%s",
            m.model_id,
            m.session.provider,
            f"<= {m.max_tokens} padded tokens" if m.max_tokens else f"{m.batch_size} rows",
            " (RANDOM WEIGHTS: scores mean nothing)" if m.random_weights else "",
        )
    return sentiment, zero_shot
