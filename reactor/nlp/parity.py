"""What the exported models are checked against: the transformers pipelines' maths in PyTorch, and the
comparisons written into the manifest (fp32 parity, int8 drift, batch-neighbour drift).

Needs the export extra; torch is imported inside functions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reactor.enrich import DEFAULT_THRESHOLD
from reactor.nlp.errors import ExportError
from reactor.nlp.onnx import HYPOTHESIS_TEMPLATE

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
PROBE_LABELS = ("delivery", "price", "customer support", "app usability")


def probe_texts(n_generated: int = 12) -> list[str]:
    """The probe set used for parity at export: the tricky texts plus generated feedback."""
    from reactor.devtools.corpus import feedback_corpus

    return [*PROBE_TEXTS, *feedback_corpus(n_generated, seed=777)]


def max_length(tokenizer: Any, config: Any) -> int:
    """The runtime's max input length: the tokenizer's ``model_max_length``, or the model's position table
    when the tokenizer has no limit (older Hub checkpoints leave it unset: transformers then says 1e30)."""
    value = getattr(tokenizer, "model_max_length", None)
    if not isinstance(value, int) or value > 100_000:
        value = int(getattr(config, "max_position_embeddings", 512) or 512)
    return int(value)


def reference_sentiment(model: Any, tokenizer: Any, texts: Sequence[str]) -> list[tuple[str, float]]:
    """What ``pipeline("sentiment-analysis", truncation=True)`` returns, one text per forward."""
    import torch

    limit = max_length(tokenizer, model.config)
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")
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
    limit = max_length(tokenizer, model.config)
    out = []
    with torch.no_grad():
        for text in texts:
            scores = {}
            for label in labels:
                hypothesis = HYPOTHESIS_TEMPLATE.format(label)
                enc = tokenizer(text, hypothesis, truncation="only_first", max_length=limit, return_tensors="pt")
                logits = model(**enc).logits[0].double()
                scores[label] = float(torch.softmax(logits[[contradiction, entail]], -1)[1])
            out.append(scores)
    return out


def compare(task: str, ours: Any, ref: Any) -> dict[str, Any]:
    """Score differences between two runs of the same texts (ours vs a reference)."""
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
            want = dict(want)
            diffs += [abs(got[k] - v) for k, v in want.items()]
            flips += sum((got[k] >= DEFAULT_THRESHOLD) != (v >= DEFAULT_THRESHOLD) for k, v in want.items())
    return {
        "max_abs_diff": max(diffs) if diffs else 0.0,
        "mean_abs_diff": sum(diffs) / len(diffs) if diffs else 0.0,
        "n_scores": len(diffs),
        "decision_flips": flips,  # sentiment: label; zero-shot: crossing the caller's threshold
    }


def scores(runtime: Any, texts: Sequence[str], labels: Sequence[str]) -> list[Any]:
    """Our runtime's output for `texts`: (label, score) per text, or the label scores per text."""
    return runtime.predict(texts) if runtime.task == "sentiment" else runtime.classify(texts, labels)


def neighbour_drift(runtime: Any, texts: Sequence[str], labels: Sequence[str]) -> float:
    """Max score change of a text scored alone vs inside a batch (int8 dynamic scales shift it).
    `runtime` must be built with cache_size=0, so nothing is served from an earlier call."""
    alone = [row for t in texts for row in scores(runtime, [t], labels)]
    batched = scores(runtime, texts, labels)
    if runtime.task == "sentiment":
        return max(abs(a[1] - b[1]) for a, b in zip(alone, batched, strict=True))
    return max(abs(dict(a)[k] - v) for a, b in zip(alone, batched, strict=True) for k, v in dict(b).items())
