"""Generated English-ish customer feedback: reproducible texts for tokenizers, probes and benchmarks.

No Hub and no data set here: the random checkpoints train their tokenizers on these texts, the exporter
probes parity on them, and the benchmarks time the models on them. Seeded, so every run sees the same texts.
"""

from __future__ import annotations

import random

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
