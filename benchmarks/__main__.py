"""``python -m benchmarks``: fastai vs PyTorch vs edge_infer fp32/int8 (onnxruntime and OpenVINO)
on one network, one run, against this machine's measured compute floor.

Writes results.json, results.md and latency.png under ``--out`` (default: a folder named after
the CPU under benchmarks/results/, so results from several machines sit side by side); see
benchmarks/compare.py for what is measured and benchmarks/report.py for the targets.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from .compare import Settings, run_comparison
from .machine import slug
from .report import is_reference_model, targets, write_results
from .result import Result
from .variants import VARIANTS, available_variants

QUICK = {"runs": 5, "warmup": 1, "folder_images": 16}
RESULTS = Path("benchmarks/results")  # one folder per CPU under it


def _threads(value: str) -> tuple[int, ...]:
    try:
        threads = tuple(int(t) for t in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected a comma-separated list of ints, got {value!r}") from None
    if not threads or min(threads) < 1:
        raise click.BadParameter(f"thread counts must be >= 1, got {value!r}")
    return threads


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A training run folder (python -m train fit --out RUN) to benchmark.")
@click.option("--random-weights", is_flag=True,
              help="Benchmark a random-weights network instead (no training run needed).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="[default: benchmarks/results/<cpu>-<isa>, e.g. benchmarks/results/amd-epyc-avx2]")
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="Timed calls per measurement (learn.predict: a fifth).")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--quick", is_flag=True, help="Smoke-test sizes: 5 runs, 16 folder images.")
@click.option("--arch", default="resnet34", show_default=True, help="With --random-weights.")
@click.option("--size", type=click.IntRange(min=16), default=224, show_default=True,
              help="With --random-weights: input size in pixels.")
@click.option("--fp32-onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --run: an fp32 export of it already made (skips the export).")
@click.option("--int8-onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --run: the int8 export of it.")
@click.option("--variants", default=",".join(available_variants()), show_default=True,
              help="Comma-separated subset of the variants to time (openvino_*: needs the openvino extra).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the photos, run folder and ONNX files here [default: a temporary folder].")
@click.option("--fail-on-target", is_flag=True, help="Exit 1 if a target is not met.")
def main(run: Path | None, random_weights: bool, out: Path | None, threads: str, runs: int, warmup: int,
         quick: bool, arch: str, size: int, fp32_onnx: Path | None, int8_onnx: Path | None,
         variants: str, workdir: Path | None, fail_on_target: bool) -> None:
    """Time the same network through every runtime and write results.json, results.md, latency.png."""
    if (run is None) == (not random_weights):
        raise click.UsageError("give exactly one of --run RUN and --random-weights")
    if (fp32_onnx is None) != (int8_onnx is None) or (fp32_onnx is not None and run is None):
        raise click.UsageError("--fp32-onnx and --int8-onnx go together, and only with --run")
    keys = tuple(v.strip() for v in variants.split(",") if v.strip())
    unknown = [k for k in keys if k not in {v.key for v in VARIANTS}]
    if unknown or not keys:
        raise click.UsageError(f"unknown variant(s) {unknown}; choose from {[v.key for v in VARIANTS]}")
    sizes = QUICK if quick else {"runs": runs, "warmup": warmup, "folder_images": 64}
    settings = Settings(threads=_threads(threads), quick=quick, arch=arch, size=size, run=run, fp32_onnx=fp32_onnx,
                        int8_onnx=int8_onnx, variants=keys, **sizes)
    result = _run(settings, workdir, " ".join(["python -m benchmarks", *sys.argv[1:]]))
    paths = write_results(result, out or RESULTS / slug(result.machine))
    checked = targets(result)
    for t in checked:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t.passed]
        click.echo(f"{verdict}  {t.name}: {t.measured} {t.unit} (target {t.target}; {t.detail})")
    if not is_reference_model(result):
        click.echo("(the targets are set for resnet34 at 224 px: on this model they are indicative only)")
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
    if fail_on_target and any(t.passed is False for t in checked):
        sys.exit(1)


def _run(settings: Settings, workdir: Path | None, command: str) -> Result:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        return run_comparison(settings, workdir, command=command)
    with tempfile.TemporaryDirectory(prefix="edge-infer-bench-", ignore_cleanup_errors=True) as tmp:
        return run_comparison(settings, Path(tmp), command=command)


if __name__ == "__main__":
    main()
