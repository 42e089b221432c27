"""``edge-infer``: predict, info, bench, verify, serve, web and eval from the command line.

The only module that imports click; ``import edge_infer`` never loads it. Every
``EdgeInferError`` ends the command with ``Error: <path>: <what is wrong>`` and exit code 1
(click's format, as in ``python -m train`` and ``python -m export``: ``edge_infer.errors``); a
bad image in a batch is reported as ``<path>: <what is wrong>`` on stderr while the others are
classified, and the exit code says that some failed.
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import click

from ._version import __version__
from .backends import BACKENDS, INFERENCE_PRECISIONS
from .classifier import Classifier, FileResult, Prediction, top_k_columns
from .errors import EdgeInferError, ModelFormatError
from .files import IMAGE_SUFFIXES, find_images
from .metadata import ModelInfo
from .preprocess import DEFAULT_MAX_BYTES

__all__ = ["main", "cli", "IMAGE_SUFFIXES", "find_images", "option_group", "UserErrorGroup"]

PROGRESS_MIN_FILES = 20
EXISTING_FILE = click.Path(exists=True, dir_okay=False)


def option_group(*options: Callable) -> Callable[[Callable], Callable]:
    """Several click options as one decorator, listed in ``--help`` in the order given (train's
    CLI uses it too)."""
    def apply(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command
    return apply


def provider_names(providers: Sequence[str]) -> list[str] | None:
    """``--provider a --provider b`` or ``--provider a,b`` as a list; None: the default (CPU)."""
    names = [p.strip() for value in providers for p in value.split(",") if p.strip()]
    return names or None


THREADS = click.option("--threads", type=click.IntRange(min=1), default=None,
                       help="onnxruntime intra-op threads [default: one per physical core].")
FAST_DECODE = click.option("--fast-decode/--full-decode", default=True, show_default=True,
                           help="Decode large JPEGs at reduced scale (docs/model-format.md gives the effect).")
ADDRESS = click.option("--address", default=None,
                       help="With --ray: the cluster to join (auto, ray://HEAD:10001) [default: RAY_ADDRESS, "
                            "else a new local cluster].")
# What runs the model (edge_infer.backends): every command that loads one passes these to
# Classifier.load; --provider arrives as provider_names' list.
backend_options = option_group(
    click.option("--backend", type=click.Choice(BACKENDS), default="onnxruntime", show_default=True,
                 help="What runs the graph: onnxruntime, openvino (pip install 'edge-infer[openvino]'), or "
                      "auto (the fastest that reproduces the file's canaries here; edge-infer verify)."),
    click.option("--inference-precision", type=click.Choice(INFERENCE_PRECISIONS), default="f32",
                 show_default=True, help="OpenVINO's arithmetic for fp32 layers (not the file's fp32/int8); bf16 "
                 "is faster on CPUs with bf16 but moves probabilities beyond export's parity numbers."),
    click.option("--provider", "providers", multiple=True, metavar="NAME",
                 callback=lambda _ctx, _param, value: provider_names(value),
                 help="onnxruntime execution provider, e.g. cuda or CUDAExecutionProvider (repeatable; "
                      "the CPU is always the fallback) [default: cpu]."))
# How predict and eval run over files.
batch_options = option_group(
    THREADS,
    click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True,
                 help="Images per onnxruntime call."),
    FAST_DECODE)


class UserErrorGroup(click.Group):
    """Ends a command on one of ``user_errors`` as the module docstring says (a ``ClickException``,
    its text ``one_line``); bugs keep their traceback. ``python -m train``'s group is one too."""

    user_errors: tuple[type[Exception], ...] = (EdgeInferError,)

    def one_line(self, e: Exception) -> str:
        return str(e)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except self.user_errors as e:
            raise click.ClickException(self.one_line(e)) from None


@click.group(cls=UserErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-infer")
def cli() -> None:
    """Classify images with one self-describing edge_infer ONNX file, on the CPU."""


def main() -> None:
    """The ``edge-infer`` console script (and ``python -m edge_infer``)."""
    cli()  # click itself exits quietly on a closed pipe (`edge-infer predict ... | head`)


def _check_ray_backend(use_ray: bool, backend: str, providers: list[str] | None) -> None:
    """Ray's actors run onnxruntime on their CPUs; another backend there is not wired up yet."""
    if use_ray and (backend != "onnxruntime" or providers):
        raise click.UsageError("--backend and --provider apply to a local run; with --ray the actors "
                               "run onnxruntime on the CPU")


# ----------------------------------------------------------------------------------- predict


@cli.command()
@click.argument("model", type=EXISTING_FILE)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", "-k", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many (label, probability) pairs to report per image.")
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), default=None,
              help="Below this probability the label is 'unknown'.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text",
              show_default=True,
              help="text: tab-separated lines; json: one object per line; csv: with a header.")
@click.option("--recursive", "-r", is_flag=True,
              help="Look for images in subfolders too (hidden ones are skipped).")
@batch_options
@click.option("--ray", "use_ray", is_flag=True,
              help="Run on Ray Data (pip install 'edge-infer[ray]'): one actor per CPU of a local cluster "
                   "or of --address, each with --threads threads (default 1). "
                   "PATHS may then also be URIs Ray reads (s3://bucket/photos/).")
@ADDRESS
@click.option("--output", default=None,
              help="With --ray: write the predictions to this new folder, as Parquet files (CSV with "
                   "--format csv), instead of printing them.")
@backend_options
def predict(model: str, paths: tuple[Path, ...], top_k: int, min_confidence: float | None,
            fmt: str, recursive: bool, threads: int | None, batch_size: int, fast_decode: bool,
            use_ray: bool, address: str | None, output: str | None, backend: str, inference_precision: str,
            providers: list[str] | None) -> None:
    """Classify image files and folders of images with MODEL.

    Bad images are reported on stderr as PATH: reason and the others are still classified;
    the exit code is 1 if any image failed.
    """
    if (address or output) and not use_ray:
        raise click.UsageError("--address and --output go with --ray")
    _check_ray_backend(use_ray, backend, providers)
    clf = Classifier.load(model, threads=threads, fast_decode=fast_decode, backend=backend,
                          inference_precision=inference_precision, providers=providers)
    top_k = _checked_top_k(top_k, clf)
    if not use_ray:
        files, empty = _collect(paths, recursive)
        results = clf.classify_files(files, batch_size=batch_size, top_k=top_k, min_confidence=min_confidence)
        _print_results(_with_progress(results, len(files)), _writer(fmt, top_k), failed=empty,
                       total=len(files) + empty)
        return
    # --ray: the same rows, computed by Ray Data actors; printed, or written as files
    ray_mod = _ray(address)
    files, empty = _collect([p for p in paths if not _is_uri(p)], recursive)
    remote = [_uri(p) for p in paths if _is_uri(p)]
    if not files and not remote:
        sys.exit(1)
    dataset = ray_mod.predict_dataset(model, files + remote, top_k=top_k, min_confidence=min_confidence,
                                      batch_size=batch_size, threads=threads or 1, fast_decode=fast_decode)
    if output is not None:
        written = ray_mod.write_predictions(dataset, output, fmt="csv" if fmt == "csv" else "parquet")
        click.echo(f"wrote {written}", err=True)
        sys.exit(1 if empty else 0)
    ray_results = ray_mod.collect(dataset, order=files if not remote else None)
    _print_results(ray_results, _writer(fmt, top_k), failed=empty, total=len(ray_results) + empty)


def _print_results(results: Iterable[FileResult], write: Callable[[str, Prediction], None], *,
                   failed: int, total: int) -> None:
    """Write each prediction, report each failure on stderr; exit 1 if any image failed."""
    for result in results:
        if result.error is not None:
            click.echo(str(result.error), err=True)
            failed += 1
        else:
            write(result.source, result.prediction)  # type: ignore[arg-type]
    sys.stdout.flush()
    if failed:
        click.echo(f"{failed} of {total} images failed", err=True)
        sys.exit(1)


def _checked_top_k(top_k: int, clf: Classifier) -> int:
    """More pairs than the model has labels: say so, and report them all."""
    n = len(clf.labels)
    if top_k > n:
        click.echo(f"warning: --top-k {top_k} but {clf.source} has {n} labels; reporting all {n}", err=True)
    return min(top_k, n)


def _is_uri(path: Path) -> bool:
    """``s3://bucket/x`` (which pathlib has folded to ``s3:/bucket/x``); not ``C:/x``."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", path.as_posix()) is not None


def _uri(path: Path) -> str:
    scheme, _, rest = path.as_posix().partition(":/")
    return f"{scheme}://{rest.lstrip('/')}"


def _ray(address: str | None) -> Any:
    try:
        from . import ray as ray_mod
    except ImportError as e:
        raise click.ClickException(f"--ray needs Ray Data ({e.name or e}): pip install 'edge-infer[ray]'") from None
    ray_mod.connect(address)
    return ray_mod


def _collect(paths: Sequence[Path], recursive: bool) -> tuple[list[str], int]:
    """Expand folders; a folder with no images is reported and counted as one failure."""
    files: list[str] = []
    failed = 0
    for path in paths:
        if not path.is_dir():
            files.append(str(path))  # missing and unreadable files fail later, with the others
            continue
        try:
            found = find_images(path, recursive=recursive)
            problem = "" if found else "no image files" + ("" if recursive else " (--recursive looks in subfolders)")
        except OSError as e:
            found, problem = [], f"cannot list the folder ({e.strerror or e})"
        if problem:
            click.echo(f"{path}: {problem}", err=True)
            failed += 1
        files += [str(p) for p in found]
    return files, failed


def _writer(fmt: str, top_k: int) -> Callable[[str, Prediction], None]:
    """One function per output format; csv writes its header on creation."""
    if fmt == "json":
        return lambda path, pred: click.echo(json.dumps({"path": path, **pred.to_dict()}))
    if fmt == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        extra = top_k_columns(top_k) if top_k > 1 else []
        out.writerow(["path", "label", "score", "index", *extra])

        def write_csv(path: str, pred: Prediction) -> None:
            pairs = [v for label, p in pred.top_k for v in (label, repr(p))] if top_k > 1 else []
            pairs += [""] * (len(extra) - len(pairs))  # fewer labels than --top-k
            out.writerow([path, pred.label, repr(pred.score), pred.index, *pairs])
        return write_csv

    def write_text(path: str, pred: Prediction) -> None:
        line = f"{path}\t{pred.label}\t{pred.score:.4f}"
        if top_k > 1:
            line += "\t" + ", ".join(f"{label} {p:.4f}" for label, p in pred.top_k)
        click.echo(line)
    return write_text


def _with_progress(results: Iterable[FileResult], n: int, *, label: str = "classifying",
                   lines_on_stdout: bool = True) -> Iterator[FileResult]:
    """A progress bar on stderr, only for people watching a long run that prints elsewhere.

    Not when stderr is a pipe or a file (logs stay clean), and not when stdout is the same
    terminal and gets a line per image (those lines already show progress and would tear the bar).
    """
    stdout_tty = sys.stdout.isatty() and lines_on_stdout
    if not show_progress(n, stderr_tty=sys.stderr.isatty(), stdout_tty=stdout_tty):
        yield from results
        return
    with click.progressbar(results, length=n, label=label, file=sys.stderr) as bar:
        yield from bar


def show_progress(n: int, *, stderr_tty: bool, stdout_tty: bool) -> bool:
    return stderr_tty and not stdout_tty and n >= PROGRESS_MIN_FILES


# -------------------------------------------------------------------------------------- info


@cli.command()
@click.argument("model", type=EXISTING_FILE)
@click.option("--json", "as_json", is_flag=True, help="Print the metadata block as JSON.")
@click.option("--backend", type=click.Choice(BACKENDS), default="onnxruntime", show_default=True,
              help="Also say which backend runs it and why (auto: the one auto picks on this machine).")
def info(model: str, as_json: bool, backend: str) -> None:
    """Show MODEL's labels, input size, preprocessing, precision, provenance, parity and canaries.

    A file without edge_infer metadata (or whose graph disagrees with it) is described from
    its graph alone, and the command exits 1 saying what is wrong.
    """
    try:
        clf = Classifier.load(model, threads=1, backend=backend)
    except ModelFormatError as e:
        graph = _graph_summary(model)  # raises the same kind of error if it is not ONNX at all
        if as_json:
            click.echo(json.dumps({"path": model, "metadata": None, "error": str(e), **graph}, indent=2))
        else:
            click.echo(f"{model}: not a usable edge_infer model; its graph:")
            click.echo(_format_graph(graph))
        raise
    if as_json:
        click.echo(json.dumps(clf.info.to_dict(), indent=2))
    else:
        click.echo(_format_info(model, clf.info))
        chosen = clf.settle()  # auto: the verdict, not the backend it runs on meanwhile
        click.echo(f"{'backend':<11} {clf.backend.describe()}; {chosen}")


def _graph_summary(model: str) -> dict[str, list[dict[str, Any]]]:
    from .backends import open_onnxruntime

    session = open_onnxruntime(model, None, None, optimize=False)  # a bad file: ModelFormatError
    def describe(args: Sequence[Any]) -> list[dict[str, Any]]:
        return [{"name": a.name, "type": a.type, "shape": list(a.shape)} for a in args]
    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs()),
            "metadata_keys": sorted(session.get_modelmeta().custom_metadata_map)}


def _format_graph(graph: dict[str, Any]) -> str:
    lines = []
    for kind in ("inputs", "outputs"):
        for a in graph[kind]:
            shape = ", ".join("?" if d is None else str(d) for d in a["shape"])
            lines.append(f"  {kind[:-1]:<7} {a['name']}: {a['type']} [{shape}]")
    keys = ", ".join(graph["metadata_keys"]) or "none"
    return "\n".join(lines + [f"  metadata_props keys: {keys}"])


def _format_info(model: str, info: ModelInfo, max_labels: int = 40) -> str:
    pre = info.preprocess
    h, w = pre.size
    labels = ", ".join(info.labels[:max_labels])
    if len(info.labels) > max_labels:
        labels += f", ... ({len(info.labels) - max_labels} more; --json lists all)"
    resize = f"{pre.resize}, pad_mode {pre.pad_mode}" if pre.resize == "pad" else pre.resize
    rows = [
        ("model", f"{model} ({_size(os.path.getsize(model))}, schema {info.schema})"),
        ("labels", f"{len(info.labels)}: {labels}"),
        ("input", f"image uint8 [N, {h}, {w}, 3] RGB, NHWC (height {h}, width {w})"),
        ("output", f"probabilities float32 [N, {len(info.labels)}], softmax"),
        ("preprocess", f"resize {resize} to {h}x{w} (h x w), {pre.interpolation}; EXIF "
                       f"{'applied' if pre.exif_transpose else 'ignored'}; transparency onto "
                       f"RGB{tuple(pre.background)}"),
        ("precision", info.precision),
        ("provenance", _nested(info.provenance) or "none"),
        ("parity", _nested(info.parity) or "not recorded"),
        ("canaries", _nested(info.canaries) if info.canaries else
         "none (edge-infer verify needs them: re-export with python -m export)"),
    ]
    indent = "\n" + " " * 12  # multi-line values line up under the first
    return "\n".join(f"{key:<11} {value.replace(chr(10), indent)}" for key, value in rows)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def _nested(d: Any) -> str:
    """One line per key; a dict value as key=value pairs on that line; floats to 4 significant
    digits (a valid_error_rate of 0.16428571939468384 reads as 0.1643)."""
    def value(v: Any) -> str:
        if isinstance(v, float):
            return json.dumps(float(f"{v:.4g}"))
        return v if isinstance(v, str) else json.dumps(v)
    return "\n".join(
        f"{k}: " + (", ".join(f"{kk}={value(vv)}" for kk, vv in v.items()) if isinstance(v, dict) else value(v))
        for k, v in (d or {}).items())


# ------------------------------------------------------------------------------------- bench


@cli.command()
@click.argument("model", type=EXISTING_FILE)
@click.option("--images", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A folder of your own images [default: generated 640x480 and 1920x1080 JPEGs].")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True, help="Timed calls per row.")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True, help="Untimed calls first.")
@THREADS
@FAST_DECODE
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Also write the result as JSON to this file.")
@backend_options
def bench(model: str, images: Path | None, runs: int, warmup: int, threads: int | None,
          fast_decode: bool, json_path: Path | None, backend: str, inference_precision: str,
          providers: list[str] | None) -> None:
    """Time MODEL: load, first call, p50/p90/p99 model-only and end-to-end (decode+resize+run).

    Images that cannot be decoded are reported on stderr and left out (exit code 1 at the end).
    With a backend other than onnxruntime, also shows its top-1 agreement with onnxruntime.
    """
    from .bench import run_benchmark

    groups = None
    if images is not None:
        found = find_images(images, recursive=True)
        if not found:
            raise click.BadParameter(f"{images}: no image files", param_hint="--images")
        count = f"{len(found)} image" + ("s" if len(found) > 1 else "")
        groups = {f"end to end {images} ({count})": [str(p) for p in found]}
    result = run_benchmark(model, images=groups, runs=runs, warmup=warmup, threads=threads,
                           fast_decode=fast_decode, backend=backend, inference_precision=inference_precision,
                           providers=providers)
    for problem in result.skipped:
        click.echo(problem, err=True)
    click.echo(result.to_text())
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_path}", err=True)
    if result.skipped:
        click.echo(f"{len(result.skipped)} images failed and were left out", err=True)
        sys.exit(1)


@cli.command()
@click.argument("model", type=EXISTING_FILE)
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
              help="The backend whose failure exits 1 (auto: exit 1 when none reproduces the canaries).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads per backend [default: one per core].")
def verify(model: str, backend: str, threads: int | None) -> None:
    """Run MODEL's canaries on every installed backend: does it compute here what export checked?

    Per backend: what ran it (kernel precision), max |probability difference| against the
    probabilities stored at export, top-1 equal, and PASS/FAIL with the tolerance
    (docs/model-format.md, Canaries). The fastest that passes becomes ``--backend auto``'s
    remembered choice on this machine, so later auto loads skip the checks.
    """
    from .verify import judge, remember_for_auto, verify_model

    _, checks, skipped = verify_model(model, threads=threads)
    lines, ok = judge(checks, skipped, backend)
    remembered = remember_for_auto(model, checks, threads=threads)
    click.echo("\n".join(lines + ([remembered] if remembered else [])))
    sys.exit(0 if ok else 1)


# ------------------------------------------------------------------------------------- serve


@cli.command()
@click.argument("model", type=EXISTING_FILE)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-bytes", type=click.IntRange(min=1), default=DEFAULT_MAX_BYTES, show_default=True,
              help="Largest upload accepted.")
@THREADS
@click.option("--timeout", type=click.FloatRange(min=0.0, min_open=True), default=10.0, show_default=True,
              help="Seconds allowed per request, from its headers to its answer.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Accept this Host/Origin besides loopback (repeatable; '*' for any, behind a "
                   "proxy that checks it).")
@click.option("--max-batch", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Most uploads run through the model together (1: no batching).")
@click.option("--max-wait-ms", type=click.FloatRange(0.0, 1000.0), default=2.0, show_default=True,
              help="How long the first upload of a batch waits for others.")
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Uploads admitted at once; past it, 503 + Retry-After.")
@click.option("--decode-memory-mb", type=click.IntRange(min=1), default=384, show_default=True,
              help="Estimated decode memory in flight at once; a bigger single image gets 413.")
@click.option("--max-connections", type=click.IntRange(min=1), default=512, show_default=True,
              help="Open connections; past it, 503.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log each request (method, path, status, ms) on stderr.")
@backend_options
def serve(model: str, host: str, port: int, max_bytes: int, threads: int | None, timeout: float,
          allow_hosts: tuple[str, ...], max_batch: int, max_wait_ms: float, max_queue: int,
          decode_memory_mb: int, max_connections: int, access_log: bool, backend: str,
          inference_precision: str, providers: list[str] | None) -> None:
    """Serve MODEL over HTTP: a web page to try it and a JSON API (needs the serve extra)."""
    try:  # only this command needs the server, and it lives in an optional extra
        from .serve.command import BatchConfig, ServerLimits
        from .serve.command import serve as run_server
    except ImportError as e:
        raise click.ClickException(f"edge-infer serve needs the serve extra ({e.name or e} is missing): "
                                   'pip install "edge-infer[serve]"') from None
    batching = BatchConfig(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                           decode_memory=decode_memory_mb << 20)
    limits = ServerLimits(max_connections=max_connections, drain_timeout=timeout)
    run_server(model, host=host, port=port, max_bytes=max_bytes, threads=threads, timeout=timeout,
               batching=batching, limits=limits, allow_hosts=allow_hosts, access_log=access_log,
               backend=backend, inference_precision=inference_precision, providers=providers)


@cli.command()
@click.argument("model", type=EXISTING_FILE)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The folder to write the site into (new, empty, or an earlier site).")
@click.option("--ort", default="cdn", show_default=True, metavar="cdn|DIR",
              help="Where the page gets onnxruntime-web: its pinned CDN URL, or a copy of the dist "
                   "in DIR (an npm install of onnxruntime-web) for offline and self-hosted sites.")
@click.option("--title", default=None, help="The page's heading [default: the model's name and label count].")
def web(model: str, out: Path, ort: str, title: str | None) -> None:
    """Write a static site that classifies photos in the visitor's browser (onnxruntime-web)."""
    from .web import build_site

    manifest = build_site(model, out, ort=ort, title=title)
    click.echo(f"wrote {out}/ ({manifest.name}, {Path(model).name}, the page); try it with: "
               f"python -m http.server --directory {out} 8000, then open http://127.0.0.1:8000/")


# -------------------------------------------------------------------------------------- eval


@cli.command("eval")
@click.argument("model", type=EXISTING_FILE)
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["all", "train", "valid"]), default="all", show_default=True,
              help="Which images of a layout with a split (train/+valid/, labels.csv is_valid) to score.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write eval.json, predictions.csv and confusion_matrix.png (when matplotlib is "
                   "installed) to this new folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@batch_options
@click.option("--ray", "use_ray", is_flag=True,
              help="Classify on Ray Data (pip install 'edge-infer[ray]'); scoring stays here.")
@ADDRESS
@backend_options
def eval_command(model: str, data: Path, split: str, out: Path | None, as_json: bool, threads: int | None,
                 batch_size: int, fast_decode: bool, use_ray: bool, address: str | None, backend: str,
                 inference_precision: str, providers: list[str] | None) -> None:
    """Score MODEL on DATA, a folder of labelled images in any training layout.

    DATA/<label>/*.jpg, DATA/train + DATA/valid, or DATA/labels.csv (path,label[,is_valid]).
    Prints accuracy, per-class precision/recall/F1, the most confused pairs and the files that
    failed to decode; the exit code is 1 if any failed.
    """
    from .evaluate import check_new_folder, labelled_for, score, write_report

    if address and not use_ray:
        raise click.UsageError("--address goes with --ray")
    if out is not None:
        check_new_folder(out)
    _check_ray_backend(use_ray, backend, providers)
    clf = Classifier.load(model, threads=threads, fast_decode=fast_decode, backend=backend,
                          inference_precision=inference_precision, providers=providers)
    folder = labelled_for(clf, data, split)
    if split == "all" and folder.layout != "folders" and all(i.is_valid is not None for i in folder.items):
        click.echo(f"note: {data} has a train/valid split; --split valid scores the validation images only",
                   err=True)
    if use_ray:
        ray_mod = _ray(address)
        dataset = ray_mod.predict_dataset(model, folder.paths(), batch_size=batch_size, threads=threads or 1,
                                          fast_decode=fast_decode)
        results: Iterable[FileResult] = ray_mod.collect(dataset, order=folder.paths())
    else:
        results = _with_progress(clf.classify_files(folder.paths(), batch_size=batch_size),
                                 len(folder.items), label="evaluating", lines_on_stdout=False)
    report = score(folder, results, model=model, labels=clf.labels, split=split)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
    if out is not None:
        written = write_report(report, out)
        click.echo("wrote " + ", ".join(str(p) for p in written), err=True)
    if report.failed:
        click.echo(f"{len(report.failed)} of {len(report.outcomes)} images failed", err=True)
        sys.exit(1)
