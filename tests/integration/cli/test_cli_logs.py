"""Issue 14, point 8: what `reactor listen` writes to stderr is one JSON object per line, libraries included:
the random-weights note, opensearch-py's failures on each retry (no multi-KB tracebacks), ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.processes import ROOT

MAKE_MODEL = """
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
unused = numpy_helper.from_array(np.zeros(1, dtype=np.float32), "unused")  # ORT warns: removing initializer
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y], initializer=[unused])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, {path!r})
"""
LOAD = """
import sys
from pathlib import Path
if sys.argv[1] == "setup":  # the reactor's way: its logging, then a model loaded through nlp.session
    from reactor import logs
    from reactor.nlp.session import Session
    logs.setup("INFO")
    Session(Path(sys.argv[2]), "cpu")
else:
    import onnxruntime
    onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
"""


def test_onnxruntime_lines_are_silenced_where_the_reactor_loads_models(tmp_path) -> None:
    pytest.importorskip("onnx", reason="building the probe model needs the onnx package (export extra)")
    path = str(tmp_path / "unused.onnx")
    subprocess.run([sys.executable, "-c", MAKE_MODEL.format(path=path)], check=True, cwd=ROOT)
    raw = subprocess.run([sys.executable, "-c", LOAD, "raw", path], capture_output=True, text=True, cwd=ROOT)
    assert "Removing initializer 'unused'" in raw.stderr  # what ORT prints on its own (the probe works)
    quiet = subprocess.run([sys.executable, "-c", LOAD, "setup", path], capture_output=True, text=True, cwd=ROOT)
    assert quiet.returncode == 0 and quiet.stderr == ""
