"""Batch jobs: ``eval`` and Ray Data against ``classify_files``, and what N machines would do.

``python -m benchmarks.batch [--model M.onnx] [--images 300] [--out benchmarks/results]``

On 640x480 JPEG crops of scikit-learn's sample photos (labelled ``china``/``flower``), with an
int8 ResNet34 at 224 px made from random weights by ``benchmarks.models`` (speed does not depend
on the weights) unless ``--model`` is given:

* ``classify_files`` over the folder (batch 8, one onnxruntime thread per core): the baseline;
* ``evaluate`` (what ``edge-infer eval`` runs) over the same folder as a labelled folder;
* Ray Data (``edge_infer.ray``) on a local cluster of this machine's cores, one actor of one
  thread per core (the CLI's default). A Ray job pays a fixed cost (actor processes start and
  load the model) before its first image, so each configuration runs on ``n`` and on ``3n``
  images: ``2n / (t(3n) - t(n))`` is its throughput once running, and ``t(n)`` minus ``n`` images
  at that rate is the fixed cost.

The estimate for N machines is arithmetic on those numbers: per-image cost in core-seconds from
the single process, times Ray's measured efficiency, times the cores of the cluster; written with
its assumptions to ``batch.json`` and ``batch.md``. Timings on a shared machine are noisy: compare
ratios from one run.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import timeit
from pathlib import Path

import click

from benchmarks.images import write_crops
from benchmarks.machine import describe_machine, summary_line
from benchmarks.models import random_onnx
from benchmarks.result import md_table, write_json

ARCH, SIZE = "resnet34", 224
CLUSTERS = ((4, 2), (16, 2), (4, 16), (16, 16), (64, 16))  # (machines, cores each)


def labelled_copy(crops: Path, dest: Path, labels: tuple[str, ...], n: int) -> list[Path]:
    """``n`` images under ``dest/<label>/`` (crops repeated, labels taken in turn from the model)."""
    sources = sorted(crops.rglob("*.jpg"))
    out = []
    for i in range(n):
        target = dest / labels[i % len(labels)] / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sources[i % len(sources)], target)
        out.append(target)
    return sorted(out)


def single_process(model: Path, data: Path, files: list[Path], repeats: int) -> dict:
    from edge_infer import Classifier
    from edge_infer.evaluate import evaluate

    clf = Classifier.load(model)
    list(clf.classify_files(files[:16]))  # warm-up
    t_files = min(timeit.repeat(lambda: list(clf.classify_files(files, batch_size=8)), number=1, repeat=repeats))
    t_eval = min(timeit.repeat(lambda: evaluate(clf, data, batch_size=8), number=1, repeat=repeats))
    n = len(files)
    return {"classify_files_img_s": n / t_files, "eval_img_s": n / t_eval, "eval_vs_classify_files": t_files / t_eval}


def ray_runs(model: Path, small: list[Path], big: list[Path], cores: int, repeats: int) -> dict:
    import ray

    from edge_infer.ray import collect, connect, predict_dataset

    t = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    connect()
    ray.data.DataContext.get_current().enable_progress_bars = False
    out: dict = {"cluster_start_s": time.perf_counter() - t}
    try:
        actors, threads = cores, 1  # the CLI's default: one single-threaded actor per core
        timed: dict[int, list[float]] = {}
        for files in (small, big) * repeats:  # the best of the repeats
            t = time.perf_counter()
            collect(predict_dataset(model, [str(f) for f in files], concurrency=actors, threads=threads))
            timed.setdefault(len(files), []).append(time.perf_counter() - t)
        t_small, t_big = min(timed[len(small)]), min(timed[len(big)])
        rate = (len(big) - len(small)) / (t_big - t_small)
        out[f"{actors}x{threads}"] = {
            "actors": actors, "threads_per_actor": threads, f"wall_s_{len(small)}": t_small,
            f"wall_s_{len(big)}": t_big, "running_img_s": rate,
            "fixed_cost_s": t_small - len(small) / rate if t_small > len(small) / rate else None,  # None: noise
            f"end_to_end_img_s_{len(big)}": len(big) / t_big}
    finally:
        ray.shutdown()
    return out


def estimate(single_img_s: float, cores: int, efficiency: float) -> dict:
    """Images/s on clusters, from this machine's per-image cost and Ray's measured efficiency.

    An efficiency above 1 is noise (the same cores cannot do more work under Ray): capped at 1.
    """
    efficiency = min(efficiency, 1.0)
    core_s_per_image = cores / single_img_s
    rows = [{"machines": m, "cores_each": c, "img_s": m * c / core_s_per_image * efficiency}
            for m, c in CLUSTERS]
    return {"core_seconds_per_image": core_s_per_image, "ray_efficiency": efficiency, "clusters": rows}


def to_markdown(result: dict) -> str:
    s, e, base = result["single"], result["estimate"], result["single"]["classify_files_img_s"]
    runs = {k: v for k, v in result["ray"].items() if isinstance(v, dict)}  # "<actors>x<threads>" -> timings
    fixed = ", ".join(f"{k} " + ("not separable from the noise" if v["fixed_cost_s"] is None
                                 else f"{v['fixed_cost_s']:.1f} s") for k, v in runs.items())
    lines = [
        f"# Batch jobs: eval and Ray Data ({result['model']})", "",
        f"{result['machine_line']}; load average {result['machine'].get('load_average')} at the start; "
        f"{result['images']} and {result['images'] * 3} JPEGs of 640x480. On a shared machine the load "
        "changes during the run: treat the ratios as rough.", "",
        *md_table(["path", "images/s", "vs classify_files"], [
            [f"`classify_files` (batch 8, {result['cores']} threads)", f"{base:.1f}", "1.00"],
            ["`evaluate` / `edge-infer eval`", f"{s['eval_img_s']:.1f}", f"{s['eval_vs_classify_files']:.2f}"],
            *([f"Ray Data, {v['actors']} actor(s) x {v['threads_per_actor']} thread(s), once running",
               f"{v['running_img_s']:.1f}", f"{v['running_img_s'] / base:.2f}"] for v in runs.values())]), "",
        f"Local cluster start {result['ray']['cluster_start_s']:.1f} s; fixed cost per Ray job (actors start, "
        f"load the model): {fixed}", "",
        f"## Estimate for a cluster ({e['core_seconds_per_image'] * 1000:.1f} ms of one core per image, "
        f"Ray efficiency {e['ray_efficiency']:.2f})", "",
        *md_table(["machines", "cores each", "images/s"],
                  [[row["machines"], row["cores_each"], f"{row['img_s']:.0f}"] for row in e["clusters"]])]
    lines += ["", "Assumes cores like this machine's, images read from storage that keeps up "
              "(640x480 JPEGs are ~60 KB: 1,000 images/s is ~60 MB/s), predictions written by the workers "
              "(`--output`: Parquet/CSV) rather than collected by the driver, and jobs long enough that "
              "the fixed cost does not matter."]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An edge_infer .onnx [default: an int8 ResNet34 at 224 px from random weights].")
@click.option("--images", type=click.IntRange(min=20), default=300, show_default=True,
              help="n: images of the small run (the large one has 3n).")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("benchmarks/results"),
              show_default=True)
@click.option("--no-ray", is_flag=True, help="Only the single-process rows.")
@click.option("--save-model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Keep the random-weights model here (for --model next time).")
def main(model: Path | None, images: int, repeats: int, out: Path, no_ray: bool, save_model: Path | None) -> None:
    """Time eval and Ray Data against classify_files; estimate images/s on N machines."""
    from edge_infer import Classifier

    machine = describe_machine()
    cores = os.cpu_count() or 1
    name = str(model) if model else f"int8 {ARCH} at {SIZE} px, random weights"
    with tempfile.TemporaryDirectory(prefix="edge-infer-batch-") as tmp:
        work = Path(tmp)
        write_crops(work / "crops", n_per_photo=16)
        if model is None:
            click.echo(f"making an {name}", err=True)
            model = random_onnx(work, work / "crops", arch=ARCH, size=SIZE)["int8"]
            if save_model is not None:
                model = Path(shutil.copy(model, save_model))
        labels = Classifier.load(model, threads=1).labels
        small = labelled_copy(work / "crops", work / "small", labels, images)
        big = labelled_copy(work / "crops", work / "big", labels, 3 * images)
        click.echo("single process", err=True)
        single = single_process(model, work / "big", big, repeats)
        result = {"model": name,
                  "machine": machine, "machine_line": summary_line(machine), "cores": cores,
                  "images": images, "single": single}
        click.echo(json.dumps(single), err=True)
        if not no_ray:
            click.echo("Ray Data", err=True)
            result["ray"] = ray_runs(model, small, big, cores, repeats)
            best = max(v["running_img_s"] for v in result["ray"].values() if isinstance(v, dict))
            result["estimate"] = estimate(single["classify_files_img_s"], cores,
                                          best / single["classify_files_img_s"])
    text = None if no_ray else to_markdown(result)
    write_json(out / "batch.json", result, text)
    click.echo(text or json.dumps(single, indent=2))


if __name__ == "__main__":
    main()
