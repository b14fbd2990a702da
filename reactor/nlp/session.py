"""One ONNX Runtime inference session: provider choice, CPU threading and the session options worth tuning.

Split from ``reactor.nlp.onnx`` so the knobs the benchmark searches (``SessionTuning``) sit in one place.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reactor.nlp import gpu

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


class ModelLoadError(Exception):
    """The models can't be loaded; the message says what to run or fix."""


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_device(device: str | None = "auto") -> str:
    """``device`` checked and normalised (auto|cpu|cuda; empty means auto). The caller reads it from
    its settings (``Settings.device``, env ``REACTOR_DEVICE``): this module reads no environment."""
    value = (device or "auto").strip().lower()
    if value not in DEVICES:
        raise ModelLoadError(f"device must be one of {', '.join(DEVICES)}, not {value!r}")
    return value


def cuda_wanted(device: str) -> bool:
    """Whether a session for ``device`` (cpu|cuda|auto) will ask for CUDA (auto: when onnxruntime offers it)."""
    if device != "auto":
        return device == "cuda"
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


@dataclass(frozen=True)
class SessionTuning:
    """CPU session options. The defaults are what measured best on the benchmark CPU (BENCHMARKS.md §2)."""

    threads: int = 0  # intra-op threads; 0: every core this process may use
    # Worker threads spinning between ops: ORT's default. On a quiet machine it buys 2-4 % speed for 1-4 %
    # more CPU; on 2 busy cores it takes the CPU the working thread needs (BENCHMARKS.md §2.2: sentiment int8
    # 1.34x texts/s and 1.42x less CPU per text without it). The reactor shares its machine with PostgreSQL.
    spinning: bool = False
    arena: bool = True  # ORT's CPU memory arena
    opt_level: str = "all"  # ORT graph optimizations at load: disable|basic|extended|all


class Session:
    """One ONNX Runtime session: CUDA when asked/available, all cores on CPU, IO binding on GPU."""

    def __init__(self, path: Path, device: str, tuning: SessionTuning | None = None) -> None:
        import onnxruntime as ort

        from reactor.logs import quiet_onnxruntime

        quiet_onnxruntime()
        tuning = tuning or SessionTuning()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[tuning.opt_level]
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        want_cuda = cuda_wanted(device)
        if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ModelLoadError(gpu.provider_missing(ort))
        if want_cuda:
            gpu.preload(ort)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"]
        if not want_cuda:
            opts.intra_op_num_threads = tuning.threads or cpu_count()
            opts.inter_op_num_threads = 1
            opts.enable_cpu_mem_arena = tuning.arena
            opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if tuning.spinning else "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # corrupt file, unsupported op, fp16 kernel missing on CPU, CUDA library...
            if device == "cuda" and gpu.missing_library(str(exc)):
                raise ModelLoadError(gpu.unusable(ort, exc)) from exc
            raise ModelLoadError(f"can't load {path}: {exc}") from exc
        self.cuda = self.session.get_providers()[0] == "CUDAExecutionProvider"
        if device == "cuda" and not self.cuda:
            raise ModelLoadError(gpu.unusable(ort, None))
        if want_cuda and not self.cuda:
            log.warning("CUDA provider listed but unusable, running on CPU: %s", gpu.unusable(ort, None))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits for one padded batch (``feeds`` keyed by this model's input names)."""
        if self.cuda:  # bind inputs once to the device, fetch only the logits back
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, value)
            binding.bind_output(self.output_name)
            self.session.run_with_iobinding(binding)
            return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)
        return np.asarray(self.session.run([self.output_name], feeds)[0], dtype=np.float32)
