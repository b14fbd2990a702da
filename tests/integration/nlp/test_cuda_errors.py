"""`reactor listen` with REACTOR_DEVICE=cuda on a machine whose onnxruntime has no CUDA: one line, exit 1 (as for
the other models that cannot load), naming what to install."""

from __future__ import annotations

import pytest

from tests.plugins.models import TINY
from tests.support.processes import reactor_env, run_cli


def test_cuda_without_onnxruntime_gpu_stops_listen_with_one_line(pg_url: str) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    out = run_cli(pg_url, "listen", env=reactor_env(pg_url, REACTOR_DEVICE="cuda", REACTOR_MODELS=str(TINY)))
    assert out.returncode == 1, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [out.stderr.strip().splitlines()[-1]], out.stderr
    assert errors[0].startswith("Error: device 'cuda' asked but onnxruntime-gpu is not installed (onnxruntime ")
    assert "make install-gpu" in errors[0] and "REACTOR_DEVICE=cpu" in errors[0]
    assert "Traceback" not in out.stderr
