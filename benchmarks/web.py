"""The ``edge-infer web`` page's model latency in headless chromium, beside onnxruntime in Python.

    python -m benchmarks.web [--arch resnet34 --size 224 --runs 30 --threads 1,2]

A random-weights ResNet (``benchmarks.models``: ``train.fit`` from random weights, exported to fp32
and int8 by the export package, as ``make bench`` does), one static site per file with
onnxruntime-web copied in (``--ort .ortweb/...``), served on 127.0.0.1 with the COOP/COEP headers
that WebAssembly threads need. In the page ``window.edgeInfer.timeModel`` times ``session.run``
on a fixed tensor (model only: no decode, no resize); in Python ``Classifier.predict_array`` on
the same tensor, same thread counts. Both in one process on one machine, one after the other, so
their ratio means more than either number on a shared machine. Writes ``benchmarks/results/web.json``
(or ``--out``) and prints a Markdown table.

Also the shared pieces of ``tests/test_web_browser.py``: the static file server, chromium's flags,
where onnxruntime-web is installed; and ``in_thread``, how the tests' servers run.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import click
import numpy as np

from benchmarks.result import md_table, write_json
from edge_infer.web import ORT_VERSION

REPO = Path(__file__).resolve().parents[1]
ORT_PREFIX = REPO / ".ortweb"
ORT_DIST = ORT_PREFIX / "node_modules" / "onnxruntime-web" / "dist"
ORT_INSTALL = f"npm install --prefix .ortweb --no-audit --no-fund onnxruntime-web@{ORT_VERSION}"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


class _Handler(http.server.SimpleHTTPRequestHandler):
    isolated = False

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        if self.isolated:  # cross-origin isolation: what WebAssembly threads need
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serving(folder: Path, *, isolated: bool = False) -> Iterator[str]:
    """``python -m http.server`` for ``folder`` in a thread; yields ``http://127.0.0.1:PORT/``.
    ``isolated`` adds the COOP/COEP headers (a static host's ``_headers`` file does the same)."""
    handler = type("Handler", (_Handler,), {"isolated": isolated})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    with server, in_thread(server.serve_forever, server.shutdown):
        yield f"http://127.0.0.1:{server.server_address[1]}/"


@contextlib.contextmanager
def in_thread(run: Callable[[], object], stop: Callable[[], object]) -> Iterator[None]:
    """``run()`` (a server's loop) in a daemon thread for the block; then ``stop()`` and wait for it.
    The static server here and tests/asgi_server.py's uvicorn both start this way."""
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop()
        thread.join(timeout=10)


def browser_p50(browser: Any, site: Path, *, threads: int, runs: int) -> dict[str, Any]:
    """The page's model-only timings with ``threads`` WebAssembly threads."""
    from edge_infer.bench import summarize

    with serving(site, isolated=True) as url:
        page = browser.new_page()
        page.goto(f"{url}?threads={threads}")
        page.evaluate("window.edgeInfer.ready.then(() => true)")
        used = page.evaluate("window.edgeInfer.threads()")
        isolated = page.evaluate("self.crossOriginIsolated")
        ms = page.evaluate(f"window.edgeInfer.timeModel({runs}, 5)")
        page.close()
    timing = summarize("browser", [m / 1000 for m in ms], warmup=5)
    return {"p50_ms": timing.p50_ms, "p90_ms": timing.p90_ms, "threads": used, "cross_origin_isolated": isolated}


def python_p50(model: Path, *, threads: int, runs: int) -> dict[str, Any]:
    from edge_infer import Classifier
    from edge_infer.bench import time_calls

    clf = Classifier.load(model, threads=threads)
    h, w = clf.info.preprocess.size
    tensor = np.full((1, h, w, 3), 128, np.uint8)  # the page's tensor
    timing = time_calls(lambda: clf.predict_array(tensor), name="python", runs=runs, warmup=5)
    return {"p50_ms": timing.p50_ms, "p90_ms": timing.p90_ms, "threads": threads}


@click.command()
@click.option("--arch", default="resnet34", show_default=True)
@click.option("--size", type=int, default=224, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=REPO / "benchmarks" / "results" / "web.json",
              show_default=True)
def main(arch: str, size: int, runs: int, threads: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from benchmarks.machine import describe_machine
    from benchmarks.models import random_onnx
    from edge_infer.web import build_site

    if not ORT_DIST.is_dir():
        raise click.ClickException(f"onnxruntime-web is not installed: {ORT_INSTALL}")
    counts = [int(t) for t in threads.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        click.echo(f"random-weights {arch} at {size} px: train.fit, then export fp32 + int8")
        onnx = random_onnx(work, arch=arch, size=size)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for precision, model in onnx.items():
                site = work / f"site-{precision}"
                build_site(model, site, ort=str(ORT_DIST))
                for t in counts:
                    row = {"precision": precision, "threads": t, "mb": round(model.stat().st_size / 1e6, 1),
                           "browser": browser_p50(browser, site, threads=t, runs=runs),
                           "python": python_p50(model, threads=t, runs=runs)}
                    row["ratio"] = row["browser"]["p50_ms"] / row["python"]["p50_ms"]
                    rows.append(row)
                    click.echo(f"{precision} threads={t}: browser p50 {row['browser']['p50_ms']:.1f} ms, "
                               f"python p50 {row['python']['p50_ms']:.1f} ms ({row['ratio']:.1f}x)")
            version = browser.version
            browser.close()
    result = {"model": f"{arch} {size}px random weights", "runs": runs, "chromium": version,
              "onnxruntime_web": ORT_VERSION, "machine": describe_machine(), "rows": rows}
    write_json(out, result)
    click.echo(table(result))


def table(result: dict[str, Any]) -> str:
    return "\n".join(md_table(
        ["file", "threads", "in chromium (onnxruntime-web, wasm) p50", "onnxruntime in Python p50", "ratio"],
        [[f"{r['precision']} ({r['mb']} MB)", r["threads"], f"{r['browser']['p50_ms']:.1f} ms",
          f"{r['python']['p50_ms']:.1f} ms", f"{r['ratio']:.1f}x"] for r in result["rows"]]))


if __name__ == "__main__":
    main()
