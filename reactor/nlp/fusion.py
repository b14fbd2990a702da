"""Fused graphs: attention, LayerNorm and GELU as single ONNX Runtime kernels (what the GPU needs to be busy).

Needs the export extra (onnx, onnxruntime.transformers); the runtime never imports this module.

``fuse`` rewrites an exported ``model.onnx`` in three steps:

1. ``bypass_identities``: optimum's export shares equal weights (random checkpoints have all-zero biases) through
   ``Identity`` nodes; ORT's fusions need the biases as initializers, so the ``Identity`` nodes are dropped.
2. For BART, ``fuse_mha``: each attention block (projections → reshape/transpose → QKᵀ·scale + mask → softmax → ·V
   → transpose/reshape) becomes one ``com.microsoft.MultiHeadAttention`` whose ``attention_bias`` is the graph's
   own additive mask, so padding (encoder, cross-attention) and the causal mask (decoder) stay exact.
   ORT's BART fusion does not match transformers 4.57's eager or SDPA graphs, and where it matches it reads every
   masked self-attention as a causal decoder without padding mask (it was written for Whisper's generation
   graphs): wrong for an encoder fed padded batches.
3. ORT's transformer optimizer (``optimize_model``; model_type ``bert`` for DistilBERT, ``bart`` for BART, heads
   and hidden size from config.json): LayerNorm(+residual) → SkipLayerNormalization, bias+GELU → BiasGelu,
   embeddings+LayerNorm → EmbedLayerNormalization and, for DistilBERT exported with SDPA, attention →
   ``Attention`` (its mask as per-row lengths: our batches are padded on the right). The eager DistilBERT graph
   (masked_fill) is refused by ORT's mask check, hence ``ATTENTION["distilbert"] == "sdpa"``.

``fused_operators`` counts what a graph holds; the exporter records it in manifest.json (``graph``) with the fused
graph's parity vs PyTorch, and writes the fused graph as model.fused.onnx (fp32, what CUDA runs) and
model.fp16.onnx; model.onnx stays unfused for the CPU (the fused graphs cost ~5 % more CPU there).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

# attn_implementation of the export fusion starts from, per config.model_type: the trace ORT (or fuse_mha) fuses
ATTENTION = {"distilbert": "sdpa", "bart": "eager"}
FUSED_ATTENTION_OPS = ("Attention", "MultiHeadAttention")
_FUSED_OPS = (
    *FUSED_ATTENTION_OPS,
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
)


def plan(config: dict[str, Any]) -> dict[str, Any] | None:
    """ORT optimizer arguments for a checkpoint's config.json, None for architectures we do not fuse."""
    kind = config.get("model_type")
    if kind == "distilbert":
        return {"model_type": "bert", "num_heads": int(config["n_heads"]), "hidden_size": int(config["dim"])}
    if kind == "bart":
        heads, hidden = int(config["encoder_attention_heads"]), int(config["d_model"])
        return {"model_type": "bart", "num_heads": heads, "hidden_size": hidden}
    return None


def fused_operators(model: Any) -> dict[str, int]:
    """Counts of the fused kernels in an onnx.ModelProto (what the manifest records)."""
    counts = Counter(n.op_type for n in model.graph.node if n.op_type in _FUSED_OPS)
    return {op: counts[op] for op in _FUSED_OPS if counts[op]}


def bypass_identities(model: Any) -> int:
    """Feed consumers of ``Identity(initializer)`` the initializer itself; returns how many were dropped."""
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    alias = {
        n.output[0]: n.input[0]
        for n in graph.node
        if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in outputs
    }
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in keep:
        for k, name in enumerate(node.input):
            if name in alias:
                node.input[k] = alias[name]
    del graph.node[:]
    graph.node.extend(keep)
    return len(alias)


class _Graph:
    """Producer/consumer maps and constant lookup over an onnx graph."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in self.graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.values = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for n in self.graph.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.values[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def parent(self, node: Any, index: int, op: str) -> Any:
        if index >= len(node.input):
            return None
        found = self.producer.get(node.input[index])
        return found if found is not None and found.op_type == op else None

    def perm(self, node: Any) -> list[int]:
        return next(list(a.ints) for a in node.attribute if a.name == "perm")


def _projection(g: _Graph, transpose: Any, perm: list[int]) -> tuple[str, int] | None:
    """(projected tensor [B, S, H], head size) behind Transpose(perm) ← Reshape([B, S, -1|N, D]) ← Add(bias)."""
    if transpose is None or g.perm(transpose) != perm:
        return None
    reshape = g.parent(transpose, 0, "Reshape")
    if reshape is None:
        return None
    add = g.parent(reshape, 0, "Add")
    if add is None or not any(i in g.values for i in add.input):
        return None
    shape = g.producer.get(reshape.input[1])
    if shape is None or shape.op_type != "Concat" or len(shape.input) != 4 or shape.input[3] not in g.values:
        return None
    return add.output[0], int(g.values[shape.input[3]].reshape(-1)[0])


def _match(g: _Graph, softmax: Any) -> dict[str, Any] | None:
    """One eager attention block around ``softmax``, or None when the pattern differs."""
    add_qk = g.producer.get(softmax.input[0])
    if add_qk is None or add_qk.op_type != "Add":
        return None
    for k in (0, 1):
        scaled = g.parent(add_qk, k, "Mul")
        if scaled is None:
            continue
        matmul_qk = next((g.parent(scaled, j, "MatMul") for j in (0, 1) if g.parent(scaled, j, "MatMul")), None)
        scale = next((g.values[i] for i in scaled.input if i in g.values), None)
        if matmul_qk is None or scale is None or scale.size != 1:
            continue
        q = _projection(g, g.parent(matmul_qk, 0, "Transpose"), [0, 2, 1, 3])
        key = _projection(g, g.parent(matmul_qk, 1, "Transpose"), [0, 2, 3, 1])
        users = g.consumers.get(softmax.output[0], [])
        if q is None or key is None or len(users) != 1 or users[0].op_type != "MatMul":
            return None
        matmul_v = users[0]
        value = _projection(g, g.parent(matmul_v, 1, "Transpose"), [0, 2, 1, 3])
        after = g.consumers.get(matmul_v.output[0], [])
        if value is None or len(after) != 1 or after[0].op_type != "Transpose" or g.perm(after[0]) != [0, 2, 1, 3]:
            return None
        out = g.consumers.get(after[0].output[0], [])
        if len(out) != 1 or out[0].op_type != "Reshape" or not (q[1] == key[1] == value[1]):
            return None
        hidden = next(g.values[i].shape[0] for i in g.producer[q[0]].input if i in g.values)
        return {
            "query": q[0],
            "key": key[0],
            "value": value[0],
            "mask": add_qk.input[1 - k],
            "scale": float(scale.reshape(-1)[0]),
            "num_heads": int(hidden) // q[1],
            "output": out[0].output[0],
        }
    return None


def fuse_mha(model: Any) -> int:
    """Replace every eager attention block by one MultiHeadAttention (see the module docstring); returns how many."""
    from onnx import helper

    g = _Graph(model)
    found = [m for n in g.graph.node if n.op_type == "Softmax" and (m := _match(g, n)) is not None]
    for k, m in enumerate(found):
        node = helper.make_node(
            "MultiHeadAttention",
            [m["query"], m["key"], m["value"], "", "", m["mask"]],  # bias, key_padding_mask unused
            [m["output"]],
            name=f"FusedMultiHeadAttention_{k}",
            domain="com.microsoft",
            num_heads=m["num_heads"],
            scale=m["scale"],
        )
        producer = g.producer[m["output"]]  # the block's final Reshape: its output now comes from the fused node
        g.graph.node.remove(producer)
        g.graph.node.append(node)
    if found:
        _prune(model)
        _import_contrib_ops(model)
    return len(found)


def _import_contrib_ops(model: Any) -> None:
    """Declare the com.microsoft domain the fused kernels live in (ONNX tools refuse the graph without it)."""
    from onnx import helper

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _prune(model: Any) -> None:
    """Drop nodes whose outputs nobody reads (the unfused attention pieces), then sort topologically."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    _toposort(graph)


def _toposort(graph: Any) -> None:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def fuse(src: Path, dst: Path) -> dict[str, Any]:
    """Write the fused graph of ``src`` (with config.json beside it) to ``dst``; returns what the manifest records."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    from reactor.nlp.quantize import quiet_root_logger

    config = json.loads((src.parent / "config.json").read_text())
    args = plan(config)
    model = onnx.load(str(src))
    if args is None:
        return {"applied": False, "why": f"no fusion recipe for model_type {config.get('model_type')!r}"}
    bypassed = bypass_identities(model)
    mha = fuse_mha(model) if args["model_type"] == "bart" else 0
    with quiet_root_logger():
        optimized = optimize_model(model, **args, opt_level=0)
    optimized.topological_sort()
    _import_contrib_ops(optimized.model)
    onnx.save_model(optimized.model, str(dst))
    return {
        "applied": True,
        "optimizer": "onnxruntime.transformers.optimizer.optimize_model",
        **args,
        "attn_implementation": ATTENTION.get(config.get("model_type", ""), "eager"),
        "identity_bypassed": bypassed,
        "reactor_multi_head_attention": mha,
        "fused_operators": fused_operators(optimized.model),
    }
