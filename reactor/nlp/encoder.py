"""The checkpoint's fast tokenizer, and token ids prepared ahead of the model call.

With batches in flight (reactor.pipeline), batch N+1 is tokenized on a thread of its own while batch N is on
the model: `prepare` encodes its texts and keeps the ids; the model call's `encode` then takes them instead of
encoding again. The Rust tokenizer and ONNX Runtime both release the GIL, so the two overlap. A text nobody
prepared is encoded on the spot, as before; the ids are the same either way (same tokenizer, same text).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from reactor.nlp.session import ModelLoadError

PREPARED_MAX = 8192  # texts whose ids wait for their model call (a few batches' worth; oldest dropped first)


class Encoder:
    """The checkpoint's fast tokenizer without truncation, padding or special tokens: the models add those."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise ModelLoadError(f"can't read tokenizer {path}: {exc}") from exc
        tok.no_truncation()
        tok.no_padding()
        if hasattr(tok, "encode_special_tokens"):  # tokenizers >= 0.19: "</s>" in text stays text
            tok.encode_special_tokens = True
        else:  # pragma: no cover - pyproject requires tokenizers>=0.19
            raise ModelLoadError("tokenizers >= 0.19 is needed (split special tokens in user text)")
        self.tok = tok
        self._prepared: OrderedDict[str, list[int]] = OrderedDict()
        self._lock = threading.Lock()  # prepare runs on the tokenizing thread, encode on the model thread

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def prepare(self, texts: Sequence[str]) -> None:
        """Encode `texts` now and keep their ids for the next `encode` that asks for them."""
        with self._lock:
            todo = [t for t in dict.fromkeys(texts) if t not in self._prepared]
        if not todo:
            return
        ids = self._encode(todo)
        with self._lock:
            self._prepared.update(zip(todo, ids, strict=True))
            while len(self._prepared) > PREPARED_MAX:
                self._prepared.popitem(last=False)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text: prepared ones taken (and forgotten), the others encoded now."""
        if not texts:
            return []
        with self._lock:
            found = {t: self._prepared.pop(t) for t in dict.fromkeys(texts) if t in self._prepared}
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            found.update(zip(todo, self._encode(todo), strict=True))
        return [found[t] for t in texts]
