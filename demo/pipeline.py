"""``make demo`` / ``python -m demo``: the whole pipeline, offline, in one command.

data -> ``train.fit`` -> ``export.export_run`` (fp32 + int8, with parity and the int8 gate; a
model that fails a check is never offered) -> benchmark -> ``edge-infer predict`` on held-out
files -> where everything is. Each step calls the stage's own Python API (or its CLI, for
``edge-infer``), never a copy of it.

The default dataset is embedded: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` when
``/usr/share/datasets/fashion-mnist`` exists, else scikit-learn's digits (in the dev group).
``--data DIR`` trains on your own folder instead (any layout ``train.data`` reads).

Two benchmarks, so the demo stays near 15 minutes on 2 CPU cores:

* the trained model at its training size (small): end-to-end latency and top-1 agreement of
  every variant on its validation images;
* a random-weights ResNet34 at 224 px: the latency table the project's targets are about
  (the weights do not change the speed).

Pretrained weights from the torch hub cache (else random ones, said so), or downloaded with ``--pretrained``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import click

MARKER = "demo.json"  # written first, completed last; a folder holding it is a demo's to replace
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    """The demo's sizes: ``full`` for ``make demo``, ``quick`` for the smoke test."""

    per_class: int
    held_out_per_class: int
    arch: str
    size: int
    epochs: int
    lr: float
    bs: int
    bench_runs: int
    latency_arch: str
    latency_size: int
    quick: bool


FULL = Plan(per_class=500, held_out_per_class=1, arch="resnet34", size=32, epochs=6, lr=2e-3, bs=64,
            bench_runs=20, latency_arch="resnet34", latency_size=224, quick=False)
QUICK = Plan(per_class=12, held_out_per_class=1, arch="resnet18", size=32, epochs=1, lr=1e-2, bs=16,
             bench_runs=3, latency_arch="resnet18", latency_size=32, quick=True)


class Steps:
    """Numbered, timed step headers on stdout."""

    def __init__(self, total: int) -> None:
        self.total, self.started = total, time.perf_counter()
        self.times: dict[str, float] = {}  # title -> seconds, of each step ended
        self._open: tuple[str, float] | None = None

    def __call__(self, title: str) -> None:
        self.done()
        click.secho(f"\n[{len(self.times) + 1}/{self.total}] {title}", bold=True)
        self._open = (title, time.perf_counter())

    def done(self) -> float:
        """End the open step; the seconds since the first began."""
        if self._open:
            title, start = self._open
            self.times[title] = round(time.perf_counter() - start, 1)
            click.echo(f"    ({self.times[title]:.0f} s)")
            self._open = None
        return time.perf_counter() - self.started


# ------------------------------------------------------------------------------------- steps


def prepare_out(out: Path) -> None:
    """Make ``out``; replace an earlier demo there, refuse to touch anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise click.ClickException(f"{out} exists and is not an earlier demo's folder (no {MARKER}); "
                                       "choose another --out")
        click.echo(f"replacing the earlier demo in {out}")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"status": "running"}) + "\n")


def write_dataset(out: Path, plan: Plan) -> tuple[Path, Path, str]:
    """The embedded dataset as PNG folders: (training data, held-out test images, its name)."""
    from train.datasets import FASHION_MNIST, make_data

    name = "fashion-mnist" if FASHION_MNIST.is_dir() else "digits"
    if name == "digits":
        click.echo(f"{FASHION_MNIST} not found (apt-get install dataset-fashion-mnist): "
                   "using scikit-learn's digits instead")
    data, held_out = out / "data", out / "held-out"
    counts = make_data(name, data, per_class=plan.per_class, split="train")
    make_data(name, held_out, per_class=plan.held_out_per_class, split="test")
    click.echo(f"{name}: {sum(counts.values())} training images in {len(counts)} classes -> {data}; "
               f"held-out test images -> {held_out}")
    return data, held_out, name


def pretrained_choice(arch: str, allow_download: bool) -> bool:
    """Pretrained if the weights are cached (offline) or a download is allowed; says which."""
    cached = cached_weights(arch)
    if cached is not None:
        click.echo(f"pretrained {arch} weights found in the torch hub cache ({cached})")
        return True
    if allow_download:
        click.echo(f"--pretrained: downloading the {arch} ImageNet weights if the network allows")
        return True
    click.echo(f"note: no cached {arch} ImageNet weights, so training from random weights "
               "(--no-pretrained); --pretrained would download them (about 85 MB)")
    return False


def cached_weights(arch: str) -> Path | None:
    import torch
    import torchvision

    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return path if path.is_file() else None


def train(data: Path, run: Path, plan: Plan, pretrained: bool) -> dict:
    from export.train_config import TrainConfig
    from train.fit import fit

    # A given LR, not lr_find: its 100 extra batches are a minute the demo does not need.
    fit(data, run, TrainConfig(arch=plan.arch, size=plan.size, epochs=plan.epochs, freeze_epochs=1, lr=plan.lr,
                               bs=plan.bs, pretrained=pretrained))
    from export.run_folder import TRAIN_JSON, TrainInfo

    return TrainInfo.read(run / TRAIN_JSON).to_dict()


def export(run: Path, models: Path) -> tuple[dict[str, Path], dict]:
    """fp32 + int8 with both parity tiers and the int8 gate (under accuracy control).

    A model that failed a check is never offered: a failed fp32 parity stops the demo; a failed
    int8 gate leaves the int8 model unwritten and the demo goes on with the fp32 model alone.
    """
    from export import export_run
    from export.errors import CheckFailed
    from export.pipeline import int8_path, report_path

    fp32 = models / "model.onnx"
    try:
        report = export_run(run, fp32, int8=True)
    except CheckFailed as e:
        if not fp32.is_file():
            raise click.ClickException(f"export failed a parity check: {e}") from None
        click.secho(f"WARNING: {e}\n  the demo goes on with the fp32 model only", fg="yellow")
        return {"fp32": fp32}, json.loads(report_path(fp32).read_text())
    return {"fp32": fp32, "int8": int8_path(fp32)}, report.to_dict()


def benchmark(run: Path, onnx: dict[str, Path], bench: Path, plan: Plan, *,
              reference: bool = True) -> dict[str, dict]:
    """The trained model end to end, then (``reference``) the random-weights latency reference;
    for each, its title, the files written and the targets judged."""
    from benchmarks.compare import Settings, run_comparison
    from benchmarks.report import targets, write_results

    jobs = []
    if "int8" in onnx:
        jobs.append(("trained", "the demo's trained model",
                     Settings(run=run, fp32_onnx=onnx["fp32"], int8_onnx=onnx["int8"], runs=plan.bench_runs,
                              warmup=2, quick=True, folder_images=8 if plan.quick else 32)))
    else:
        click.echo("  benchmark of the trained model skipped: it compares fp32 with int8, and no int8 "
                   "model passed the gate")
    if reference:
        jobs.append((f"{plan.latency_arch}-{plan.latency_size}",
                     f"random-weights {plan.latency_arch} at {plan.latency_size} px (latency reference)",
                     Settings(arch=plan.latency_arch, size=plan.latency_size, runs=plan.bench_runs,
                              warmup=3, quick=plan.quick, folder_images=8 if plan.quick else 64)))
    results = {}
    for name, title, settings in jobs:
        click.secho(f"  benchmark: {title}", bold=True)
        work = bench / name / "work"
        work.mkdir(parents=True, exist_ok=True)
        result = run_comparison(settings, work, command=f"python -m demo (step 4: {title})",
                                log=lambda m: click.echo(f"  {m}"))
        paths = write_results(result, bench / name, title=title)
        results[name] = {"title": title, **{k: str(p) for k, p in paths.items()},
                         "targets": [t.to_dict() for t in targets(result)]}
        # Photos, 64 copies of one, and for the reference a random network: ~450 MB of scratch.
        shutil.rmtree(work, ignore_errors=True)
    return results


def predict(model: Path, files: list[Path]) -> str:
    """``edge-infer predict`` as a user would run it (a subprocess, the installed CLI)."""
    done = subprocess.run([sys.executable, "-m", "edge_infer", "predict", str(model),
                           *map(str, files), "--top-k", "2"],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise click.ClickException(f"edge-infer predict failed: {done.stderr.strip()}")
    return done.stdout


def held_out_files(held_out: Path | None, run: Path, n: int) -> tuple[list[Path], str]:
    """A few test-split images, or for ``--data`` a few validation images of the run."""
    if held_out is not None:
        return sorted(held_out.rglob("*.png"))[:n], "held-out test images (never seen in training)"
    from export.run_folder import RunFolder

    run_folder = RunFolder.load(run)
    split = run_folder.split.frame()
    valid = split[split["split"] == "valid"].groupby("label").head(1)
    return [run_folder.data / p for p in valid["path"][:n]], "validation images (not trained on)"


# -------------------------------------------------------------------------------------- main


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Train on this folder of images instead of the embedded dataset.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Everything the demo writes goes here (an earlier demo is replaced).")
@click.option("--pretrained", is_flag=True,
              help="Allow downloading ImageNet weights when they are not in the torch hub cache.")
@click.option("--quick", is_flag=True, help="Smoke-test sizes: a few images, 32 px, 1 epoch, resnet18.")
@click.option("--skip-latency", is_flag=True, help="Skip the 224-px random-weights latency benchmark.")
def main(data: Path | None, out: Path, pretrained: bool, quick: bool, skip_latency: bool) -> None:
    """Data -> train -> export -> benchmark -> predict, offline, on embedded data or --data DIR."""
    from train.cli import quiet_fastai_import

    quiet_fastai_import()
    plan = QUICK if quick else FULL
    out = out.resolve()
    steps = Steps(6)
    steps("dataset")
    prepare_out(out)
    held_out, dataset = None, str(data)
    if data is None:
        data, held_out, dataset = write_dataset(out, plan)
    else:
        click.echo(f"your data: {data}")
    steps(f"train ({plan.arch}, {plan.size} px, {plan.epochs} epochs; GPU if present)")
    use_pretrained = pretrained_choice(plan.arch, pretrained)
    info = train(data, out / "run", plan, use_pretrained)
    steps("export: fp32 and int8 ONNX, parity checks and the int8 gate")
    onnx, export_report = export(out / "run", out / "models")
    steps("benchmark")
    results = benchmark(out / "run", onnx, out / "bench", plan, reference=not skip_latency)
    steps("edge-infer predict on a few files")
    files, what = held_out_files(held_out, out / "run", 10)
    offered = onnx.get("int8", onnx["fp32"])  # only models that passed every check are here
    click.echo(f"{sys.executable} -m edge_infer predict {offered} ... ({len(files)} {what})")
    click.echo(predict(offered, files))
    steps("summary")
    total, gate = steps.done(), export_report.get("int8", {})
    summary = {
        "dataset": dataset, "data": str(data), "out": str(out), "run": str(out / "run"),
        "metrics": info["metrics"], "options": info["options"], "device": info["device"],
        "models": {p: {"path": str(path), "bytes": path.stat().st_size} for p, path in onnx.items()},
        "int8_gate": {k: gate.get(k) for k in ("passed", "agreement", "agreement_lower95", "files", "near_tie_flips",
                                              "confident_flips", "fp32_accuracy", "int8_accuracy", "float_layers")},
        "benchmarks": results, "step_seconds": steps.times, "seconds": round(total, 1),
    }
    (out / MARKER).write_text(json.dumps({"status": "done", **summary}, indent=2) + "\n")
    click.echo(_summary_text(summary))


def _summary_text(s: dict) -> str:
    m = s["metrics"]
    lines = [f"\ndone in {s['seconds'] / 60:.1f} min ({s['device']}). Files under {s['out']}:",
             f"  run folder     {s['run']}  (train.json, history.csv, losses.png, doctor.md; "
             f"accuracy {m['accuracy']:.3f})"]
    lines += [f"  {p} model     {v['path']}  ({v['bytes'] / 1e6:.1f} MB)" for p, v in s["models"].items()]
    gate = s["int8_gate"]
    if gate.get("agreement") is not None:
        lines.append(f"  int8 gate      {'passed' if gate['passed'] else 'FAILED (int8 model not written)'}: "
                     f"top-1 agreement {gate['agreement']:.1%} of {gate['files']} (95% lower bound "
                     f"{gate['agreement_lower95']:.1%}; {gate['near_tie_flips']} near-tie, "
                     f"{gate['confident_flips']} confident flips), accuracy fp32 {gate['fp32_accuracy']:.1%} / "
                     f"int8 {gate['int8_accuracy']:.1%}"
                     + (f", {len(gate['float_layers'])} layer(s) in float" if gate["float_layers"] else ""))
    for b in s["benchmarks"].values():
        met = sum(t["pass"] is True for t in b["targets"])
        judged = (f"{met}/{len(b['targets'])} targets met" if b["targets"][0]["reference_model"]
                  else "latency and agreement; the targets are for resnet34 at 224 px")
        lines.append(f"  benchmark      {b['markdown']}  ({b['title']}; {judged})")
    offered = s["models"].get("int8", s["models"]["fp32"])
    python = os.path.relpath(sys.executable) if ".venv" in sys.executable else Path(sys.executable).name
    lines.append(f"  try it         {python} -m edge_infer predict "
                 f"{offered['path']} YOUR_IMAGE.png")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
