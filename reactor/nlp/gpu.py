"""Why ``device cuda`` cannot work here, in one line that names the missing package or library.

ONNX Runtime reports a missing CUDA library by falling back to the CPU, with the reason in its own C++ log (which
the reactor keeps quiet). So when CUDA was asked for and no CUDA session came out, this module looks for the
reason itself: both onnxruntime packages installed, the CUDA provider absent, a library the CUDA provider needs
that the dynamic loader cannot find (its own error names it), or no NVIDIA driver.

The install that avoids all of them is ``make install-gpu`` (README "GPU"): onnxruntime-gpu with the CUDA and cuDNN
libraries from pip, in place of onnxruntime.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata as md
import io
import re
from pathlib import Path
from typing import Any

INSTALL = "run `make install-gpu` (onnxruntime-gpu and the NVIDIA libraries from pip, in place of onnxruntime)"
PROVIDER_LIBRARY = "libonnxruntime_providers_cuda.so"
DRIVER_LIBRARY = "libcuda.so.1"
# library name prefix -> what provides it (pip packages of onnxruntime-gpu[cuda,cudnn], CUDA 13 builds)
LIBRARIES = {
    "libcudnn": "cuDNN 9 (pip: nvidia-cudnn-cu13)",
    "libcublas": "cuBLAS (pip: nvidia-cublas)",
    "libcudart": "the CUDA runtime (pip: nvidia-cuda-runtime)",
    "libcufft": "cuFFT (pip: nvidia-cufft)",
    "libcurand": "cuRAND (pip: nvidia-curand)",
    "libnvrtc": "NVRTC (pip: nvidia-cuda-nvrtc)",
    "libnvJitLink": "nvJitLink (pip: nvidia-nvjitlink)",
}
_CANNOT_OPEN = re.compile(r"(lib[\w.+-]+?\.so[\w.]*): cannot open shared object file")


def runtimes() -> list[str]:
    """The onnxruntime distributions installed (both at once overwrite each other's files)."""
    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        with contextlib.suppress(md.PackageNotFoundError):
            md.version(name)
            found.append(name)
    return found


def preload(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries of the NVIDIA pip packages (onnxruntime >= 1.21; its notes go to stdout,
    which belongs to command output here)."""
    if hasattr(ort, "preload_dlls"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(Exception):
            ort.preload_dlls()


def provider_missing(ort: Any) -> str:
    """The line for an onnxruntime without CUDAExecutionProvider."""
    if runtimes() == ["onnxruntime", "onnxruntime-gpu"]:
        both = "onnxruntime and onnxruntime-gpu are both installed (one hides the other)"
        return f"device 'cuda' asked but {both}: {INSTALL}"
    providers = ", ".join(ort.get_available_providers())
    return (
        f"device 'cuda' asked but onnxruntime-gpu is not installed (onnxruntime {ort.__version__} has only "
        f"{providers}): {INSTALL}, or set REACTOR_DEVICE=cpu"
    )


def missing_library(message: str) -> str | None:
    """The library a dynamic-loader error says it cannot open, if any."""
    match = _CANNOT_OPEN.search(message)
    return match.group(1) if match else None


def describe_library(name: str) -> str:
    return next((what for prefix, what in LIBRARIES.items() if name.startswith(prefix)), "a CUDA library")


def provider_library(ort: Any) -> Path:
    return Path(ort.__file__).parent / "capi" / PROVIDER_LIBRARY


_load = ctypes.CDLL  # opens a shared library: the dynamic loader's error names what is missing


def unusable(ort: Any, error: BaseException | None, load: Any = None) -> str:
    """The line for a CUDA provider that is listed but gave no CUDA session (``error``: what creating it raised).
    ``load`` opens a shared library (default ctypes.CDLL)."""
    load = load or _load
    if runtimes() == ["onnxruntime", "onnxruntime-gpu"]:
        return provider_missing(ort)
    said = str(error or "")
    library = missing_library(said)
    provider = provider_library(ort)
    if library is None and provider.is_file():  # its loader error names the first library it lacks
        try:
            load(str(provider))
        except OSError as exc:
            library = missing_library(str(exc))
    if library is not None:
        return f"device 'cuda' asked but {library} cannot be loaded ({describe_library(library)}): {INSTALL}"
    try:
        load(DRIVER_LIBRARY)
    except OSError:
        return f"device 'cuda' asked but the NVIDIA driver ({DRIVER_LIBRARY}) is not found: no usable GPU here"
    reason = said.strip().splitlines()[0] if said.strip() else "ONNX Runtime fell back to the CPU"
    return f"device 'cuda' asked but the CUDA provider did not start: {reason[:300]}"


def main(argv: list[str] | None = None) -> int:
    """``python -m reactor.nlp.gpu [MODEL.onnx]``: open a CUDA session (default: the committed tiny sentiment model)
    and say in one line whether ``REACTOR_DEVICE=cuda`` works here (what ``make install-gpu`` ends with)."""
    import sys

    from reactor.nlp.session import ModelLoadError, Session

    args = sys.argv[1:] if argv is None else argv
    model = Path(args[0]) if args else Path("fixtures/tiny-models/sentiment/model.onnx")
    try:
        session = Session(model, "cuda")
    except ModelLoadError as exc:
        print(f"CUDA NOT usable: {exc}")
        return 1
    import onnxruntime as ort

    print(
        f"CUDA usable: {', '.join(runtimes())} {ort.__version__}, session providers {session.session.get_providers()}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
