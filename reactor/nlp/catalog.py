"""The zero-shot checkpoints a user can choose from: Hub ids, shapes and the accuracy their model cards publish.

Distilled BART-MNLI keeps BART-large's 12 encoder layers and cuts the decoder. Every pair runs through both
halves, so fewer decoder layers mean proportionally fewer operations per pair. The accuracies are MNLI
matched as published on the model cards (valhalla/distilbart-mnli-12-1's card has the table for all of
them), never measured here: this machine cannot reach the Hub, and random weights have no accuracy.
The export CLI names these in its help; the random-weight builder uses the shapes for speed benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZeroShotChoice:
    hub_id: str
    encoder_layers: int
    decoder_layers: int
    mnli_m: float  # MNLI matched accuracy (%), from the model card

    @property
    def label(self) -> str:
        return f"{self.hub_id} ({self.encoder_layers}+{self.decoder_layers} layers, MNLI-m {self.mnli_m})"


ZERO_SHOT_CHOICES: dict[str, ZeroShotChoice] = {
    "bart-large-mnli": ZeroShotChoice("facebook/bart-large-mnli", 12, 12, 89.9),
    "distilbart-mnli-12-9": ZeroShotChoice("valhalla/distilbart-mnli-12-9", 12, 9, 89.6),
    "distilbart-mnli-12-6": ZeroShotChoice("valhalla/distilbart-mnli-12-6", 12, 6, 89.2),
    "distilbart-mnli-12-3": ZeroShotChoice("valhalla/distilbart-mnli-12-3", 12, 3, 88.1),
    "distilbart-mnli-12-1": ZeroShotChoice("valhalla/distilbart-mnli-12-1", 12, 1, 87.1),
}
DEFAULT_SHAPE = "bart-large-mnli"
