"""Why CUDA is unusable, in one line naming the package or library (reactor.nlp.gpu), without a GPU: the loader
and onnxruntime are stand-ins that fail the way a machine without cuDNN, driver or onnxruntime-gpu does."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from reactor.nlp import gpu, session
from reactor.nlp.session import ModelLoadError, Session

TINY = Path(__file__).resolve().parents[3] / "fixtures" / "tiny-models" / "sentiment" / "model.onnx"


def _ort(tmp_path: Path, providers: list[str]) -> Any:
    """An onnxruntime stand-in whose package folder holds the CUDA provider library (an empty file)."""
    (tmp_path / "capi").mkdir(exist_ok=True)
    (tmp_path / "capi" / gpu.PROVIDER_LIBRARY).write_bytes(b"")
    return SimpleNamespace(
        __file__=str(tmp_path / "__init__.py"), __version__="1.31.1", get_available_providers=lambda: providers
    )


def _loader(missing: dict[str, str]) -> Any:
    """ctypes.CDLL stand-in: opening a path that ends with a key fails with the loader's message for its value."""

    def load(path: str) -> None:
        for suffix, lib in missing.items():
            if path.endswith(suffix):
                raise OSError(f"{lib}: cannot open shared object file: No such file or directory")

    return load


def test_a_missing_cudnn_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "runtimes", lambda: ["onnxruntime-gpu"])
    ort = _ort(tmp_path, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    line = gpu.unusable(ort, None, load=_loader({gpu.PROVIDER_LIBRARY: "libcudnn.so.9"}))
    assert line.startswith("device 'cuda' asked but libcudnn.so.9 cannot be loaded (cuDNN 9")
    assert "make install-gpu" in line and "\n" not in line
    line = gpu.unusable(ort, None, load=_loader({gpu.PROVIDER_LIBRARY: "libcublasLt.so.13"}))
    assert "libcublasLt.so.13 cannot be loaded (cuBLAS" in line


def test_an_error_naming_a_library_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "runtimes", lambda: ["onnxruntime-gpu"])
    ort = _ort(tmp_path, ["CUDAExecutionProvider"])
    error = RuntimeError("... onnxruntime_providers_cuda.so with error: libcufft.so.12: cannot open shared object file")
    assert "libcufft.so.12 cannot be loaded (cuFFT" in gpu.unusable(ort, error, load=_loader({}))


def test_no_driver_and_unknown_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "runtimes", lambda: ["onnxruntime-gpu"])
    ort = _ort(tmp_path, ["CUDAExecutionProvider"])
    line = gpu.unusable(ort, None, load=_loader({gpu.DRIVER_LIBRARY: gpu.DRIVER_LIBRARY}))
    assert line == "device 'cuda' asked but the NVIDIA driver (libcuda.so.1) is not found: no usable GPU here"
    line = gpu.unusable(ort, RuntimeError("CUDA failure 100: no CUDA-capable device\nmore"), load=_loader({}))
    assert line == "device 'cuda' asked but the CUDA provider did not start: CUDA failure 100: no CUDA-capable device"


def test_both_runtimes_installed_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "runtimes", lambda: ["onnxruntime", "onnxruntime-gpu"])
    for line in (
        gpu.provider_missing(_ort(tmp_path, ["CPUExecutionProvider"])),
        gpu.unusable(_ort(tmp_path, []), None),
    ):
        assert "onnxruntime and onnxruntime-gpu are both installed" in line and "make install-gpu" in line


def test_session_falling_back_to_cpu_names_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider is listed but the session comes out on CPU (what ORT does when cuDNN is missing)."""
    import onnxruntime as ort

    real = ort.InferenceSession

    def on_cpu(path: str, sess_options: Any = None, providers: Any = None) -> Any:
        assert providers[0] == "CUDAExecutionProvider"
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", on_cpu)
    monkeypatch.setattr(gpu, "runtimes", lambda: ["onnxruntime-gpu"])
    monkeypatch.setattr(gpu, "preload", lambda _ort: None)
    monkeypatch.setattr(gpu, "provider_library", lambda _ort: TINY)  # a file that exists
    monkeypatch.setattr(gpu, "_load", _loader({TINY.name: "libcudnn.so.9"}))
    with pytest.raises(ModelLoadError, match=r"^device 'cuda' asked but libcudnn\.so\.9 cannot be loaded"):
        Session(TINY, "cuda")
    assert Session(TINY, "auto").cuda is False  # auto: falls back to the CPU (with a warning), no error
    assert session.resolve_device("cuda") == "cuda"


def test_without_onnxruntime_gpu_the_check_command_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    assert gpu.main([str(TINY)]) == 1
    out = capsys.readouterr().out.strip()
    assert out.startswith("CUDA NOT usable: device 'cuda' asked but onnxruntime-gpu is not installed")
    assert "make install-gpu" in out and "\n" not in out
