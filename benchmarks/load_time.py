"""How long ``Classifier.load`` takes: a plain onnxruntime load against ``backend="auto"``.

    python -m benchmarks.load_time [--model FILE.int8.onnx] [--runs 5] [--threads 2]

``auto`` checks the file's canaries on onnxruntime before it answers, then compiles OpenVINO and
times both in the background (``settled``), so it costs more than a plain load; issue 23 bounds
the extra at 0.5 s on a 224 px ResNet34 int8 file. Each load runs in a fresh interpreter
(imports and first-call costs included, as a user sees them), the three kinds alternated so that a busy neighbour slows all of them alike:
``plain`` (``backend="onnxruntime"``), ``auto`` with an empty cache (the first load on a machine)
and ``auto`` with the cache the previous load left (``edge_infer.auto_cache``). Without
``--model`` a random-weights ResNet34 at 224 px is made and exported (``benchmarks.models``, no
download). ``--baseline DIR`` adds a first ``auto`` load with another checkout's ``edge_infer``
(e.g. ``git archive main``), in the same alternation. Writes ``load_time.json`` and ``.md`` into
this machine's results folder, ``benchmarks/results/<cpu>/`` (or ``--out``).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import click

from benchmarks.compare import REPO, fresh
from benchmarks.result import md_table, write_json

KINDS = ("plain", "auto", "auto cached")
_LOAD = """
import json, sys, time
t = time.perf_counter()
from edge_infer import Classifier
clf = Classifier.load(sys.argv[1], threads=int(sys.argv[3]), backend=sys.argv[2])
s = time.perf_counter() - t
getattr(clf, "settle", lambda: None)()  # auto's background verdict (a --baseline may predate it)
print(json.dumps({"s": s, "settled_s": time.perf_counter() - t, "backend": clf.backend.name, "chosen": clf.chosen}))
"""


def load_once(model: Path, kind: str, cache: Path, threads: int, code: Path = REPO) -> dict:
    """One load in a fresh interpreter with ``code``'s edge_infer, timed from before its import."""
    return fresh(_LOAD, str(model), "onnxruntime" if kind == "plain" else "auto", str(threads), code=code,
                 env={"EDGE_INFER_CACHE": str(cache), "PYTHONPATH": str(code)})


def measure(model: Path, *, runs: int, threads: int, baseline: Path | None = None) -> dict:
    samples: dict[str, list[dict]] = {k: [] for k in KINDS + (("auto baseline",) if baseline else ())}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            cold, warm = Path(tmp) / f"cold{i}", Path(tmp) / "warm"
            samples["plain"].append(load_once(model, "plain", cold, threads))
            samples["auto"].append(load_once(model, "auto", cold, threads))
            if i == 0:
                load_once(model, "auto", warm, threads)  # fills the cache the cached loads read
            samples["auto cached"].append(load_once(model, "auto cached", warm, threads))
            if baseline:
                samples["auto baseline"].append(load_once(model, "auto", Path(tmp) / f"base{i}", threads, baseline))
    med = {k: statistics.median(s["s"] for s in v) for k, v in samples.items()}
    return {"median_s": med, "settled_median_s": {k: statistics.median(s["settled_s"] for s in v)
                                                  for k, v in samples.items()}, "auto_minus_plain_s": med["auto"] - med["plain"],
            "cached_minus_plain_s": med["auto cached"] - med["plain"],
            "auto_over_plain": med["auto"] / med["plain"],
            "samples_s": {k: [s["s"] for s in v] for k, v in samples.items()},
            "auto_chose": samples["auto"][-1]["backend"], "auto_reason": samples["auto"][-1]["chosen"]}


def table(result: dict) -> str:
    m = result["median_s"]
    return "\n".join([
        f"Load time, {result['model']}, threads={result['threads']}, median of {result['runs']} fresh interpreters",
        f"({result['machine']['cpu_model']}; shared machine: compare within one run)", "",
        *md_table(["load", "median s", "minus plain", "settled s"],
                  [[k, f"{v:.3f}", f"{v - m['plain']:+.3f}", f"{result['settled_median_s'][k]:.3f}"]
                   for k, v in m.items()]), "", "settled: until ``Classifier.settle()`` returns (auto's background "
        "verdict: OpenVINO compiled, both backends checked and timed)",
        f"auto over plain {result['auto_over_plain']:.2f}x; auto chose {result['auto_chose']}: "
        f"{result['auto_reason']}"])


@click.command()
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An int8 .onnx with canaries; default: a random-weights ResNet34 at 224 px, made here.")
@click.option("--runs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--baseline", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A checkout whose edge_infer's auto is timed too, e.g. main's.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="[default: benchmarks/results/<cpu>/load_time.json]")
def main(model: Path | None, runs: int, threads: int, baseline: Path | None, out: Path | None) -> None:
    from benchmarks.machine import describe_machine, slug
    from benchmarks.models import random_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = model or random_onnx(Path(tmp), arch="resnet34", size=224)["int8"]
        result = {"model": f"{path.name} ({path.stat().st_size / 1e6:.1f} MB)", "runs": runs, "threads": threads,
                  **measure(path, runs=runs, threads=threads, baseline=baseline), "machine": describe_machine()}
    write_json(out or REPO / "benchmarks" / "results" / slug(result["machine"]) / "load_time.json", result,
               table(result) + "\n")
    click.echo(table(result))


if __name__ == "__main__":
    main()
