"""Issue 14, point 8: what `reactor listen` writes to stderr is one JSON object per line, libraries included:
the random-weights note, opensearch-py's failures on each retry (no multi-KB tracebacks), ONNX Runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.integration.helpers import insert


def test_daemon_stderr_is_json_lines_with_libraries_folded(pg_url: str, start_reactor) -> None:
    insert(pg_url, ["indexed later, OpenSearch is down"])
    reactor = start_reactor(OPENSEARCH_ENDPOINT="http://127.0.0.1:9")
    reactor.wait_for_log('"logger":"opensearch"')  # opensearch-py's own warning for a failed request
    reactor.wait_for_log("batch.completed")
    assert reactor.stop() == 0
    lines = [json.loads(line) for line in reactor.log().splitlines()]  # every line parses
    assert all(len(json.dumps(line)) < 2000 for line in lines)
    note = next(line for line in lines if line["event"] == "models.random_weights")
    assert note["level"] == "warning" and "RANDOM weights" in note["note"]
    library = [line for line in lines if line["logger"] == "opensearch"]
    assert library and all("error" in line and "exception" not in line for line in library)
    assert all("Traceback" not in line["error"] for line in library)


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
if sys.argv[1] == "setup":
    from reactor import logs
    logs.setup("INFO")
import onnxruntime
onnxruntime.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
"""


def test_onnxruntime_lines_are_silenced_by_the_logging_setup(tmp_path) -> None:
    pytest.importorskip("onnx", reason="building the probe model needs the onnx package (export extra)")
    path = str(tmp_path / "unused.onnx")
    subprocess.run([sys.executable, "-c", MAKE_MODEL.format(path=path)], check=True, cwd=ROOT)
    raw = subprocess.run([sys.executable, "-c", LOAD, "raw", path], capture_output=True, text=True, cwd=ROOT)
    assert "Removing initializer 'unused'" in raw.stderr  # what ORT prints on its own (the probe works)
    quiet = subprocess.run([sys.executable, "-c", LOAD, "setup", path], capture_output=True, text=True, cwd=ROOT)
    assert quiet.returncode == 0 and quiet.stderr == ""
