"""Model fixtures: the committed tiny ONNX folders (runtime only) and their random checkpoints (export extra).

``fixtures/tiny-models`` is exactly what ``make fixtures`` (``reactor export-models --tiny ...``) writes, so
runtime tests and the demo need only onnxruntime, tokenizers and numpy. Tests that compare against PyTorch
rebuild the random checkpoints (seeded: identical files) once per library/builder version in
``.cache/models_tiny/<key>``; ``tests/integration/nlp/test_export.py`` checks that rebuilding the ONNX folders gives the
committed ones.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
TINY = FIXTURES / "tiny-models"  # sentiment/ and zero-shot/, fp32 + int8 + int8-static
TINY_12_1 = FIXTURES / "tiny-models-12-1"  # zero-shot/ only: the distilbart-mnli-12-1 shape (encoder 2, decoder 1)
CACHE = ROOT / ".cache" / "models_tiny"
BUILDER_SOURCES = ("reactor/devtools/random_models.py", "reactor/devtools/corpus.py", "reactor/nlp/catalog.py")


def _key() -> str:
    h = hashlib.sha256()
    for rel in BUILDER_SOURCES:
        h.update((ROOT / rel).read_bytes())
    for pkg in ("transformers", "torch", "tokenizers"):
        try:
            h.update(f"{pkg}={md.version(pkg)}".encode())
        except md.PackageNotFoundError:
            h.update(f"{pkg}=-".encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def onnx_dir() -> Path:
    """The committed tiny ONNX models (random weights)."""
    assert (TINY / "zero-shot" / "manifest.json").is_file(), f"{TINY} is missing: run `make fixtures`"
    return TINY


@pytest.fixture(scope="session")
def onnx_dir_12_1() -> Path:
    """The committed tiny zero-shot model of the distilbart-mnli-12-1 shape (full encoder, one decoder layer)."""
    assert (TINY_12_1 / "zero-shot" / "manifest.json").is_file(), f"{TINY_12_1} is missing: run `make fixtures`"
    return TINY_12_1


@pytest.fixture(scope="session")
def tiny_checkpoints() -> Path:
    """The random checkpoints the fixtures were exported from: sentiment/, zero-shot/, zero-shot-<shape>/."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from reactor.devtools.random_models import build_checkpoints

    target = CACHE / _key()
    done = target / ".complete"
    if not done.is_file():
        build_checkpoints(target, "tiny")
        build_checkpoints(target, "tiny", shape="distilbart-mnli-12-1", tasks=("zero-shot",))
        done.touch()
    return target
