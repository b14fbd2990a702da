"""``reactor export-models``: the click command (registered by reactor.cli), thin over reactor.nlp.export."""

from __future__ import annotations

import logging
import time

import click

from reactor import logs
from reactor.nlp.catalog import DEFAULT_SHAPE, ZERO_SHOT_CHOICES
from reactor.nlp.export import DEFAULT_SENTIMENT, DEFAULT_ZERO_SHOT, TASKS, ExportError

_FASTER = "; ".join(c.label for name, c in ZERO_SHOT_CHOICES.items() if name != DEFAULT_SHAPE)


@click.command("export-models")
@click.option(
    "--sentiment",
    "sentiment",
    default=DEFAULT_SENTIMENT,
    show_default=True,
    help="Sentiment model: Hugging Face Hub id or local checkpoint folder.",
)
@click.option(
    "--zero-shot",
    "zero_shot",
    default=DEFAULT_ZERO_SHOT,
    show_default=True,
    help="Zero-shot NLI model: Hugging Face Hub id or local checkpoint folder. Faster distilled choices "
    f"(same encoder, shorter decoder; accuracy as published on their model cards): {_FASTER}.",
)
@click.option(
    "--task",
    "tasks",
    type=click.Choice(TASKS),
    multiple=True,
    help="Export only this model (repeatable; default both).",
)
@click.option(
    "--out",
    "out",
    default="models_onnx/",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder (sentiment/ and zero-shot/ inside).",
)
@click.option(
    "--quantize",
    type=click.Choice(["int8", "int8-static"]),
    multiple=True,
    help="Also write model.int8.onnx (CPU, dynamic: scores drift and move with batch neighbours) and/or "
    "model.int8-static.onnx (CPU, calibrated at export: batch-independent; slower than int8 on the benchmark "
    "CPU). Repeatable. Drift vs PyTorch is measured and written to manifest.json.",
)
@click.option(
    "--calibration-texts",
    "calibration",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="For int8-static: a file with one feedback text per line to calibrate on (default: generated texts).",
)
@click.option("--fp16", is_flag=True, help="Also write model.fp16.onnx (for CUDA; built on CPU).")
@click.option(
    "--tiny", is_flag=True, help="Build tiny random-weight models (real architectures) and export those: for tests/CI."
)
@click.option(
    "--full-random",
    "full_random",
    is_flag=True,
    help="Build full-size random-weight models (DistilBERT-base, BART-large shapes): for benchmarks.",
)
@click.option(
    "--zero-shot-shape",
    "shape",
    type=click.Choice(list(ZERO_SHOT_CHOICES)),
    default=DEFAULT_SHAPE,
    show_default=True,
    help="With --tiny/--full-random: the zero-shot checkpoint's shape (distilbart-mnli-12-N: BART-large's encoder "
    "and N decoder layers), written to --out/zero-shot. Random weights: for speed comparisons only.",
)
def export_models(
    sentiment: str,
    zero_shot: str,
    tasks: tuple[str, ...],
    out: str,
    quantize: tuple[str, ...],
    calibration: str | None,
    fp16: bool,
    tiny: bool,
    full_random: bool,
    shape: str,
) -> None:
    """Export the sentiment and zero-shot models to ONNX and check parity with PyTorch.

    Needs the export extra: pip install 'feedback-reactor[export]'.

    \b
    Examples:
      reactor export-models --quantize int8
      reactor export-models --task zero-shot --zero-shot valhalla/distilbart-mnli-12-1 --out models_fast
      reactor export-models --tiny                      # random weights, seconds, for tests and the demo
      reactor export-models --full-random --task zero-shot --zero-shot-shape distilbart-mnli-12-1 --quantize int8
    """
    if tiny and full_random:
        raise click.UsageError("--tiny and --full-random are exclusive")
    if shape != DEFAULT_SHAPE and not (tiny or full_random):
        raise click.UsageError("--zero-shot-shape builds a random checkpoint: use it with --tiny or --full-random")
    from reactor.nlp.export import export_models as run  # torch-free at import time

    try:
        import optimum.exporters.onnx  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"export needs the export extra ({exc.name} is missing): pip install 'feedback-reactor[export]'"
        ) from None
    # onnxruntime.quantization and optimum report every tensor on the root logger at INFO: keep our output readable
    logging.getLogger().setLevel(max(logging.WARNING, logging.getLogger().level))
    t0 = time.perf_counter()
    try:
        manifests = run(
            out,
            sentiment=sentiment,
            zero_shot=zero_shot,
            tasks=tasks or TASKS,
            quantize=quantize,
            calibration=calibration,
            fp16=fp16,
            random_size="tiny" if tiny else "full" if full_random else None,
            shape=shape,
            log=click.echo,
        )
    except ExportError as exc:
        raise click.ClickException(logs.fold(exc, 600)) from None
    except Exception as exc:  # a library failing deep inside the export: one line, never a traceback
        raise click.ClickException(f"export failed: {type(exc).__name__}: {logs.fold(exc, 600)}") from None
    for task, m in manifests.items():
        flag = "  RANDOM WEIGHTS (scores mean nothing)" if m["random_weights"] else ""
        click.echo(f"{task}: {out.rstrip('/')}/{task} [{', '.join(m['precisions'])}] from {m['source']}{flag}")
    click.echo(f"done in {time.perf_counter() - t0:.1f}s")
