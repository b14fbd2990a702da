"""Random-weight checkpoints with the real architectures, for CI and benchmarks without the Hub.

The Hugging Face Hub is unreachable from CI and from the build machines, yet the export, the runtime
and the parity tests must run end to end.  ``build_checkpoints`` writes two folders laid out exactly
like Hub checkpoints (``save_pretrained`` of the model, a ``transformers`` fast tokenizer and the
config), so ``reactor.nlp.export`` handles them through the very same path as a Hub id:

* ``<dest>/sentiment``: DistilBERT for sequence classification, id2label {0: NEGATIVE, 1: POSITIVE},
  uncased WordPiece tokenizer ([CLS]/[SEP]/[PAD]/[UNK]/[MASK]).
* ``<dest>/zero-shot``: BART for sequence classification (MNLI labels
  {0: contradiction, 1: neutral, 2: entailment}), byte-level BPE tokenizer (<s>/<pad>/</s>/<unk>/<mask>).

Sizes: ``tiny`` (a few MB, seconds to build) and ``full`` (DistilBERT-base and BART-large shapes; the
vocabularies are trained on generated text so they stay below the real 30,522 / 50,265 entries, capped
at 16,000 — the embedding tables are the only part smaller than the real models).

The weights are random: scores mean nothing.  ``random_weights`` is written into every config and,
by the exporter, into manifest.json, so everything downstream can say so.  Seeds are fixed, so two
builds of the same size give identical files.

Needs the ``export`` extra (torch, transformers); imported only by the exporter and the tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIZES = ("tiny", "full")
SEED = 1234

# Vocabulary for generated, English-ish customer feedback.
_SUBJECTS = (
    "the app",
    "the checkout",
    "delivery",
    "the courier",
    "support",
    "the website",
    "my order",
    "the refund",
    "the price",
    "the product",
    "the packaging",
    "customer service",
    "the login page",
    "the update",
    "the subscription",
    "the invoice",
    "shipping",
    "the mobile app",
    "the search",
    "the payment",
    "the warranty",
    "the return process",
    "your team",
    "the chat bot",
    "the store",
    "the manual",
)
_VERBS = (
    "is",
    "was",
    "has been",
    "seems",
    "felt",
    "looks",
    "keeps being",
    "became",
    "remains",
    "got",
)
_ADJECTIVES = (
    "great",
    "terrible",
    "slow",
    "fast",
    "confusing",
    "helpful",
    "broken",
    "amazing",
    "awful",
    "fine",
    "expensive",
    "cheap",
    "reliable",
    "buggy",
    "friendly",
    "rude",
    "late",
    "early",
    "easy",
    "hard",
    "clean",
    "damaged",
    "perfect",
    "disappointing",
    "excellent",
    "mediocre",
    "smooth",
    "laggy",
    "fair",
    "overpriced",
    "intuitive",
    "useless",
    "quick",
    "delayed",
    "responsive",
    "unresponsive",
)
_ADVERBS = ("really", "very", "quite", "extremely", "a bit", "totally", "honestly", "surprisingly", "so")
_CLAUSES = (
    "I waited two weeks for a reply",
    "the package arrived damaged",
    "I could not log in",
    "the agent solved it in minutes",
    "they charged me twice",
    "the new design is much better",
    "I will order again",
    "I want my money back",
    "nobody answered the phone",
    "it crashed again",
    "the tracking never updated",
    "the discount code did not work",
    "everything worked perfectly",
    "the size was wrong",
    "the battery dies after an hour",
    "the instructions were missing",
    "I had to restart three times",
    "the colour matches the photos",
    "it stopped syncing yesterday",
    "my account was locked",
    "the courier left it in the rain",
    "the quality is outstanding",
    "the fee was not mentioned anywhere",
    "the refund took a month",
    "the bot kept repeating itself",
)
_OPENERS = ("", "Honestly,", "Well,", "Overall", "To be fair,", "Sadly", "Wow,", "Again", "Hi,", "Update:")
_CONNECTORS = ("and", "but", "because", "although", "so", "since", "while", "yet")
_EXTRAS = (
    "!",
    ".",
    "...",
    "?",
    " :)",
    " :(",
    " 👍",
    " 😡",
    " 10/10",
    " #fail",
    " lol",
    " thanks",
    " <3",
    " [edited]",
    " @support",
    " (see /help)",
    " 100% sure",
    " $20 & more",
    " -> see photo",
    " ~meh~",
    ' "fixed"',
)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"

TOPIC_LABELS = (
    "delivery",
    "price",
    "customer support",
    "product quality",
    "app usability",
    "billing",
    "refund",
    "account access",
    "performance",
    "packaging",
)


def _sentence(rng: random.Random) -> str:
    if rng.random() < 0.5:
        subject = rng.choice(_SUBJECTS)
        words = [rng.choice(_OPENERS), subject, rng.choice(_VERBS)]
        if rng.random() < 0.5:
            words.append(rng.choice(_ADVERBS))
        words.append(rng.choice(_ADJECTIVES))
    else:
        words = [rng.choice(_OPENERS), rng.choice(_CLAUSES)]
    if rng.random() < 0.6:
        words += [rng.choice(_CONNECTORS), rng.choice(_CLAUSES)]
    if rng.random() < 0.08:  # made-up product codes / names give the tokenizers rarer pieces
        words.append("".join(rng.choice(_LETTERS) for _ in range(rng.randint(3, 9))))
    text = " ".join(w for w in words if w)
    return text[0].upper() + text[1:] + rng.choice(_EXTRAS)


def feedback_text(rng: random.Random, min_words: int = 10, max_words: int = 60) -> str:
    """One generated feedback text of ``min_words``..``max_words`` words (approximately, by sentences)."""
    target = rng.randint(min_words, max_words)
    sentences: list[str] = []
    count = 0
    while count < target:
        s = _sentence(rng)
        sentences.append(s)
        count += len(s.split())
    words = " ".join(sentences).split()
    return " ".join(words[: max(target, min_words)])


def feedback_corpus(n: int, seed: int = SEED, min_words: int = 10, max_words: int = 60) -> list[str]:
    """``n`` reproducible generated feedback texts (tokenizer training, benchmarks)."""
    rng = random.Random(seed)
    return [feedback_text(rng, min_words, max_words) for _ in range(n)]


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


def build_zero_shot(dest: Path, size: str = "tiny", corpus: list[str] | None = None) -> Path:
    """Write a random-weight BART-MNLI zero-shot checkpoint to ``dest`` (a Hub-like folder)."""
    from transformers import BartConfig, BartForSequenceClassification, BartTokenizerFast

    spec = _SPECS[size]
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
    scale = target_std / proj.std(dim=0).clamp_min(1e-12)
    with torch.no_grad():
        layer.weight.copy_((weight * scale[:, None]).float())
        layer.bias.copy_((-proj.mean(dim=0) * scale).float())


def build_checkpoints(dest: str | Path, size: str = "tiny") -> dict[str, Path]:
    """Build both random checkpoints under ``dest``; returns {"sentiment": path, "zero-shot": path}."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, not {size!r}")
    dest = Path(dest)
    corpus = feedback_corpus(_SPECS[size].corpus, seed=SEED)
    return {
        "sentiment": build_sentiment(dest / "sentiment", size, corpus),
        "zero-shot": build_zero_shot(dest / "zero-shot", size, corpus),
    }
