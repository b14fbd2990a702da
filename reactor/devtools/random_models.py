"""Random-weight checkpoints with the real architectures, for CI and benchmarks without the Hub.

The Hugging Face Hub is unreachable from CI and from the build machines, yet the export, the runtime
and the parity tests must run end to end.  ``build_checkpoints`` writes two folders laid out exactly
like Hub checkpoints (``save_pretrained`` of the model, a ``transformers`` fast tokenizer and the
config), so ``reactor.nlp.export`` handles them through the very same path as a Hub id:

* ``<dest>/sentiment``: DistilBERT for sequence classification, id2label {0: NEGATIVE, 1: POSITIVE},
  uncased WordPiece tokenizer ([CLS]/[SEP]/[PAD]/[UNK]/[MASK]).
* ``<dest>/zero-shot``: BART for sequence classification (MNLI labels
  {0: contradiction, 1: neutral, 2: entailment}), byte-level BPE tokenizer (<s>/<pad>/</s>/<unk>/<mask>).
  ``shape`` picks the decoder depth of a distilled checkpoint (``reactor.nlp.catalog``): the full encoder
  and 1, 3, 6 or 9 of BART-large's 12 decoder layers, in ``<dest>/zero-shot-<shape>``.

Sizes: ``tiny`` (a few MB, seconds to build) and ``full`` (DistilBERT-base and BART-large shapes; the
vocabularies are trained on generated text so they stay below the real 30,522 / 50,265 entries, capped
at 16,000 — the embedding tables are the only part smaller than the real models).

The weights are random: scores mean nothing.  ``random_weights`` is written into every config and,
by the exporter, into manifest.json, so everything downstream can say so.  Seeds are fixed, so two
builds of the same size give identical files.

Needs the ``export`` extra (torch, transformers); imported only by the exporter and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reactor.devtools.corpus import SEED, TOPIC_LABELS, feedback_corpus
from reactor.nlp.catalog import DEFAULT_SHAPE, ZERO_SHOT_CHOICES

SIZES = ("tiny", "full")


@dataclass(frozen=True)
class _Spec:
    vocab: int
    corpus: int
    max_length_sentiment: int
    max_length_zero_shot: int
    distilbert: dict[str, float]
    bart: dict[str, float]


_SPECS = {
    "tiny": _Spec(
        vocab=2000,
        corpus=3000,
        max_length_sentiment=128,
        max_length_zero_shot=128,
        # 0.2: at the default 0.02 a 2-layer, 32-wide DistilBERT gives nearly the same [CLS] vector for
        # every text, and a head spreading such features would amplify float rounding (parity noise).
        distilbert={"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "initializer_range": 0.2},
        bart={
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
        },
    ),
    "full": _Spec(
        vocab=16000,
        corpus=40000,
        max_length_sentiment=512,
        max_length_zero_shot=1024,
        distilbert={"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072},
        bart={
            "d_model": 1024,
            "encoder_layers": 12,
            "decoder_layers": 12,
            "encoder_attention_heads": 16,
            "decoder_attention_heads": 16,
            "encoder_ffn_dim": 4096,
            "decoder_ffn_dim": 4096,
        },
    ),
}


def _wordpiece(corpus: list[str], vocab: int):  # -> tokenizers.Tokenizer
    """Uncased BERT-style WordPiece with a vocabulary counted directly from the corpus.

    ``WordPieceTrainer`` breaks ties in hash order (different vocabularies run to run), so the vocab
    is built here deterministically: specials, every character and its "##" form, then the most
    frequent words, word starts and "##" word ends (count desc, then text).
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in corpus:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    pieces: Counter[str] = Counter()
    for w, n in words.items():
        pieces[w] += n * 4  # whole words first
        for k in range(2, min(len(w), 6)):
            pieces[w[:k]] += n
            pieces["##" + w[-k:]] += n
    tokens = [*specials, *chars, *("##" + c for c in chars)]
    seen = set(tokens)
    for piece, _ in sorted(pieces.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(tokens) >= vocab:
            break
        if piece not in seen:
            tokens.append(piece)
            seen.add(piece)
    tok = Tokenizer(
        models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]", max_input_chars_per_word=100)
    )
    tok.add_special_tokens(specials)
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def _byte_bpe(corpus: list[str], vocab: int):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4 like facebook/bart-*
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(
        sep=("</s>", tok.token_to_id("</s>")),
        cls=("<s>", tok.token_to_id("<s>")),
        trim_offsets=True,
        add_prefix_space=False,
    )
    return tok


def build_sentiment(dest: Path, size: str = "tiny", corpus: list[str] | None = None) -> Path:
    """Write a random-weight DistilBERT sentiment checkpoint to ``dest`` (a Hub-like folder)."""
    from transformers import DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast

    spec = _SPECS[size]
    corpus = corpus if corpus is not None else feedback_corpus(spec.corpus, seed=SEED)
    backend = _wordpiece(corpus, spec.vocab)
    tokenizer = DistilBertTokenizerFast(
        tokenizer_object=backend,
        model_max_length=spec.max_length_sentiment,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    config = DistilBertConfig(
        vocab_size=backend.get_vocab_size(),
        max_position_embeddings=spec.max_length_sentiment,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        pad_token_id=backend.token_to_id("[PAD]"),
        **spec.distilbert,
    )
    model = _random_model(DistilBertForSequenceClassification, config, size)
    _spread_head(model, model.classifier, tokenizer, corpus[:256], seed=SEED + 1)
    return _save(dest, model, tokenizer)


def decoder_layers(size: str, shape: str = DEFAULT_SHAPE) -> int:
    """Decoder depth of ``shape`` at ``size``: the real count for full, scaled to the tiny model's 2 layers."""
    full = ZERO_SHOT_CHOICES[shape]
    base = int(_SPECS[size].bart["decoder_layers"])
    return max(1, round(base * full.decoder_layers / ZERO_SHOT_CHOICES[DEFAULT_SHAPE].decoder_layers))


def build_zero_shot(
    dest: Path, size: str = "tiny", corpus: list[str] | None = None, shape: str = DEFAULT_SHAPE
) -> Path:
    """Write a random-weight BART-MNLI zero-shot checkpoint (of ``shape``) to ``dest`` (a Hub-like folder)."""
    from transformers import BartConfig, BartForSequenceClassification, BartTokenizerFast

    spec = _SPECS[size]
    spec = replace(spec, bart={**spec.bart, "decoder_layers": decoder_layers(size, shape)})
    corpus = corpus if corpus is not None else feedback_corpus(spec.corpus, seed=SEED)
    backend = _byte_bpe(corpus, spec.vocab)
    tokenizer = BartTokenizerFast(
        tokenizer_object=backend,
        model_max_length=spec.max_length_zero_shot,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        add_prefix_space=False,
        trim_offsets=True,
    )
    labels = {0: "contradiction", 1: "neutral", 2: "entailment"}
    config = BartConfig(
        vocab_size=backend.get_vocab_size(),
        max_position_embeddings=spec.max_length_zero_shot,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        use_cache=False,
        scale_embedding=False,
        **spec.bart,
    )
    model = _random_model(BartForSequenceClassification, config, size)
    hypotheses = [f"This example is {TOPIC_LABELS[i % len(TOPIC_LABELS)]}." for i in range(256)]
    head = model.classification_head.out_proj
    _spread_head(model, head, tokenizer, corpus[:256], seed=SEED + 2, pairs=hypotheses)
    return _save(dest, model, tokenizer)


def _random_model(model_cls: Any, config: Any, size: str) -> Any:
    """The architecture with seeded random weights, its config marked so every consumer can say so."""
    import torch

    config.random_weights = True
    config.reactor_size = size
    torch.manual_seed(SEED)
    return model_cls(config).eval()


def _save(dest: Path, model: Any, tokenizer: Any) -> Path:
    """Save like a Hub checkpoint folder (config, weights, tokenizer files)."""
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def _spread_head(
    model, layer, tokenizer, texts: list[str], seed: int, target_std: float = 2.0, pairs: list[str] | None = None
) -> None:
    """Re-draw the random head so scores spread over (0, 1) across texts instead of sitting at 1/n.

    A random deep transformer maps every text to almost the same pooled vector, so a random head gives
    every text the same score and tests (and the caller's threshold) would exercise nothing.  The head
    is redrawn from a seeded generator and rescaled/centred on the features of generated texts, so each
    logit has mean 0 and std ``target_std`` over them.  Deterministic, still meaningless.
    """
    import torch

    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            for i in range(0, len(texts), 32):
                second = pairs[i : i + 32] if pairs is not None else None
                enc = tokenizer(texts[i : i + 32], second, padding=True, truncation=True, return_tensors="pt")
                model(**enc)
    finally:
        hook.remove()
    feats = torch.cat(captured).double()  # (N, D)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64)
    proj = feats @ weight.T  # (N, labels)
    scale = _rounded(target_std / proj.std(dim=0).clamp_min(1e-12))
    bias = _rounded(-proj.mean(dim=0) * scale)
    with torch.no_grad():
        layer.weight.copy_((weight * scale[:, None]).float())
        layer.bias.copy_(bias.float())


def _rounded(values: Any) -> Any:
    """``values`` to 4 significant digits: the features come from a float32 forward pass whose last bit differs
    between CPUs (SIMD kernels), and the committed fixtures must be rebuilt byte for byte on any of them (a
    last-bit difference still shows if a value sits on a rounding boundary: unlikely, not impossible)."""
    import torch

    return torch.tensor([float(f"{v:.4g}") for v in values.tolist()], dtype=values.dtype)


def zero_shot_dir(shape: str = DEFAULT_SHAPE) -> str:
    """Folder name of a zero-shot checkpoint of ``shape`` under the checkpoints folder."""
    return "zero-shot" if shape == DEFAULT_SHAPE else f"zero-shot-{shape}"


def build_checkpoints(
    dest: str | Path,
    size: str = "tiny",
    *,
    shape: str = DEFAULT_SHAPE,
    tasks: tuple[str, ...] = ("sentiment", "zero-shot"),
) -> dict[str, Path]:
    """Build the random checkpoints of ``tasks`` under ``dest``; returns {task: path}."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    if shape not in ZERO_SHOT_CHOICES:
        raise ValueError(f"shape must be one of {', '.join(ZERO_SHOT_CHOICES)}, not {shape!r}")
    dest = Path(dest)
    corpus = feedback_corpus(_SPECS[size].corpus, seed=SEED)
    built = {}
    if "sentiment" in tasks:
        built["sentiment"] = build_sentiment(dest / "sentiment", size, corpus)
    if "zero-shot" in tasks:
        built["zero-shot"] = build_zero_shot(dest / zero_shot_dir(shape), size, corpus, shape)
    return built
