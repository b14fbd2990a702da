"""Tiny random-weight models, built once and cached in .cache/models_tiny/<key> (git-ignored).

The key hashes the builder/exporter sources and library versions, so a change rebuilds them.  Building
needs the export extra (torch, transformers, optimum); runtime-only tests then need just onnxruntime,
so a machine without torch can still run them on a cache built elsewhere (or they skip).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "models_tiny"


def _key() -> str:
    h = hashlib.sha256()
    for rel in ("reactor/nlp/tiny.py", "reactor/nlp/export.py"):
        h.update((ROOT / rel).read_bytes())
    for pkg in ("transformers", "torch", "optimum-onnx", "onnxruntime", "tokenizers"):
        try:
            h.update(f"{pkg}={md.version(pkg)}".encode())
        except md.PackageNotFoundError:
            h.update(f"{pkg}=-".encode())
    return h.hexdigest()[:16]


def export_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "optimum"))


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """Folder with checkpoints/{sentiment,zero-shot} and onnx/{sentiment,zero-shot} (fp32, int8, int8-static)."""
    if CACHE.is_dir():  # any complete build will do for runtime-only tests without torch
        builds = sorted(p for p in CACHE.iterdir() if (p / "onnx" / "zero-shot" / "manifest.json").is_file())
    else:
        builds = []
    if not export_available():
        if builds:
            return builds[-1]
        pytest.skip("no tiny ONNX models cached and no export extra (torch/transformers/optimum) to build them")
    target = CACHE / _key()
    if not (target / "onnx" / "zero-shot" / "manifest.json").is_file():
        from reactor.nlp.export import export_models

        if target.exists():
            shutil.rmtree(target)
        export_models(
            target / "onnx",
            quantize=("int8", "int8-static"),
            random_size="tiny",
            checkpoints_dir=target / "checkpoints",
            log=lambda _msg: None,
        )
    return target


@pytest.fixture(scope="session")
def onnx_dir(tiny_dir: Path) -> Path:
    return tiny_dir / "onnx"
