"""``python -m export RUN --out model.onnx``: the CLI mirror of ``export.pipeline.export_run``.

Heavy imports (torch, fastai) happen inside the command, so ``--help`` is quick. An expected
problem (bad run folder, failed check) is one ``Error: ...`` line and exit status 1.
"""

from __future__ import annotations

from pathlib import Path

import click

from .defaults import DEFAULT_CALIB, DEFAULT_OPSET, MAX_FLOAT_LAYERS, MAX_OPSET, MIN_OPSET


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The model file to write (NAME.onnx). parity.json is written beside it.")
@click.option("--int8", is_flag=True,
              help="Also write an int8 model, NAME.int8.onnx beside NAME.onnx, if it passes the gate "
                   "on the validation files (accuracy drop <= 0.5 points and no confident fp32 "
                   "prediction changed); up to --max-float-layers sensitive layers are kept in float to get there.")
@click.option("--calib", type=click.IntRange(min=1), default=DEFAULT_CALIB, show_default=True,
              help="How many training images (from split.csv) calibrate the int8 model.")
@click.option("--max-float-layers", type=click.IntRange(0, 32), default=MAX_FLOAT_LAYERS, show_default=True,
              help="Most layers accuracy control may keep in float to pass the int8 gate (0: the "
                   "all-int8 model or nothing).")
@click.option("--opset", type=click.IntRange(MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset; 18 runs on onnxruntime >= 1.14.")
@click.option("--no-check", is_flag=True,
              help="Skip the fp32 parity checks (the int8 gate still runs with --int8).")
@click.option("--force", is_flag=True,
              help="Write a model that failed its parity check or the int8 gate (the failure is "
                   "recorded in its metadata and parity.json).")
def main(run: Path, out: Path, int8: bool, calib: int, max_float_layers: int, opset: int, no_check: bool,
         force: bool) -> None:
    """Export the training run folder RUN to one self-describing ONNX file.

    The graph takes uint8 [N, H, W, 3] RGB ("image") and returns softmax probabilities
    ("probabilities"); labels, preprocessing, provenance and parity numbers are in its metadata
    (edge-infer info NAME.onnx). Parity: torch vs onnxruntime on the same tensors (rtol 1e-3,
    atol 1e-4), then fastai vs edge_infer on every validation file (top-1 equal on all, max
    probability difference <= 1e-3); a breach exits 1 and writes no model.
    """
    from edge_infer.errors import EdgeInferError

    from .pipeline import export_run

    try:
        export_run(run, out, int8=int8, calib=calib, opset=opset, check=not no_check, force=force,
                   max_float_layers=max_float_layers, echo=click.echo)
    except EdgeInferError as e:  # ExportError, CheckFailed, and edge_infer's own
        raise click.ClickException(str(e)) from None
