"""Load-test ``edge-infer serve``: N concurrent clients, each with R requests on one keep-alive
connection, against a server on 127.0.0.1 started here.

    python -m benchmarks.serve_load MODEL [--clients 8] [--requests 50] [--image FILE] [--json out.json]

By default the server is a separate process (``edge_infer.server.serve``, what ``edge-infer serve``
runs), so the clients' threads do not share its interpreter lock; ``--in-process`` serves from a
thread of this process instead. Reported, after a warm-up: requests/s over the measured phase;
end-to-end latency on the client's clock (upload, wait, decode, inference, answer); and the
server's own ``ms`` (wait for a worker, decode, inference), each as p50/p90/p99. Bounded: at most
64 clients x 1000 requests, and clients stop issuing requests after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import mimetypes
import os
import selectors
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from benchmarks.machine import describe_machine, summary_line

WARMUP_REQUESTS = 5
START_SECONDS = 60.0  # loading onnxruntime and the model in a fresh process
SERVE_SNIPPET = ("import sys; from edge_infer.server import serve; "
                 "serve(sys.argv[1], port=0, threads=None if sys.argv[2] == '-' else int(sys.argv[2]))")


@dataclass
class ClientLog:
    """What one client saw: a latency and the server's ``ms`` per good answer, and the failures."""

    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def sample_image(width: int = 640, height: int = 480, seed: int = 0) -> bytes:
    """A photo-sized JPEG with smooth gradients and some noise (so it compresses like a photo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    pixels = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def client(url: str, body: bytes, content_type: str, n: int, stop_at: float, top_k: int) -> ClientLog:
    """``n`` POSTs on one keep-alive connection; a failed connection is replaced, not fatal."""
    parts = urlsplit(url)
    log = ClientLog()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        for _ in range(n):
            if time.monotonic() > stop_at:
                log.errors.append("not sent: --max-seconds reached")
                continue
            start = time.perf_counter()
            try:
                conn.request("POST", f"/predict?top_k={top_k}", body=body,
                             headers={"Content-Type": content_type})
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as e:
                log.errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                continue
            elapsed = (time.perf_counter() - start) * 1000.0
            if response.status != 200:
                log.errors.append(f"HTTP {response.status}: {raw[:200].decode(errors='replace')}")
                continue
            answer = json.loads(raw)
            log.latencies_ms.append(elapsed)
            log.server_ms.append(float(answer["ms"]))
            log.labels[answer["label"]] += 1
    finally:
        conn.close()
    return log


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2),
            "mean": round(float(a.mean()), 2), "max": round(float(a.max()), 2)}


def run_load(url: str, body: bytes, content_type: str, *, clients: int, requests: int,
             max_seconds: float, top_k: int) -> dict:
    """Warm up, then ``clients`` threads x ``requests`` each; the numbers as a JSON-ready dict."""
    warm = client(url, body, content_type, WARMUP_REQUESTS, time.monotonic() + START_SECONDS, top_k)
    if warm.errors:
        raise SystemExit(f"warm-up failed: {warm.errors[0]}")
    stop_at = time.monotonic() + max_seconds
    start = time.perf_counter()
    with ThreadPoolExecutor(clients, thread_name_prefix="load-client") as pool:
        logs = list(pool.map(lambda _: client(url, body, content_type, requests, stop_at, top_k),
                             range(clients)))
    wall = time.perf_counter() - start
    latencies = [x for log in logs for x in log.latencies_ms]
    errors = [e for log in logs for e in log.errors]
    return {
        "clients": clients,
        "requests_per_client": requests,
        "completed": len(latencies),
        "errors": len(errors),
        "first_errors": errors[:5],
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(latencies) / wall, 1) if wall > 0 else None,
        "latency_ms": percentiles(latencies),
        "server_ms": percentiles([x for log in logs for x in log.server_ms]),
        "labels": dict(sum((log.labels for log in logs), Counter())),
    }


@contextlib.contextmanager
def in_process_server(model: str, threads: int | None) -> Iterator[str]:
    from edge_infer import Classifier
    from edge_infer.server import make_server

    server = make_server(Classifier.load(model, threads=threads), port=0, access_log=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def subprocess_server(model: str, threads: int | None) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_SNIPPET, model, "-" if threads is None else str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            line = proc.stdout.readline() if sel.select(START_SECONDS) else ""
        if "http://" not in line:
            raise SystemExit(f"the server did not start within {START_SECONDS:g} s "
                             f"(exit code {proc.poll()}); run edge-infer serve {model} to see why")
        yield line[line.index("http://"):].split()[0]
    finally:
        proc.terminate()  # SIGTERM: the server closes its socket and exits 0
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n")[0])
    p.add_argument("model", help="an edge_infer .onnx file")
    p.add_argument("--clients", type=int, default=8, choices=range(1, 65), metavar="1..64")
    p.add_argument("--requests", type=int, default=50, choices=range(1, 1001), metavar="1..1000",
                   help="requests per client (default 50)")
    p.add_argument("--image", type=Path, help="the image every request sends [default: a generated "
                                              "640x480 JPEG]")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads in the server")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="clients stop issuing requests after this long (default 120)")
    p.add_argument("--in-process", action="store_true", help="serve from a thread of this process")
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.image is not None:
        body = args.image.read_bytes()
        content_type = mimetypes.guess_type(args.image.name)[0] or "application/octet-stream"
        image = {"path": str(args.image), "bytes": len(body)}
    else:
        body, content_type = sample_image(), "image/jpeg"
        image = {"path": None, "generated": "640x480 JPEG q90", "bytes": len(body)}
    with Image.open(io.BytesIO(body)) as img:
        image["size"] = list(img.size)
    mode = "in-process thread" if args.in_process else "subprocess"
    start_server = in_process_server if args.in_process else subprocess_server
    with start_server(args.model, args.threads) as url:
        result = run_load(url, body, content_type, clients=args.clients, requests=args.requests,
                          max_seconds=args.max_seconds, top_k=args.top_k)
    machine = describe_machine()
    result = {"benchmark": "serve_load", "model": args.model, "server": {"mode": mode, "url": url,
              "threads": args.threads}, "image": image, **result, "machine": machine}
    print(f"machine: {summary_line(machine)}; load average {machine['load_average']}")
    print(f"server: {mode}, onnxruntime threads {args.threads or 'default'}; image {image['size']} "
          f"{image['bytes']:,} bytes")
    lat, srv = result["latency_ms"], result["server_ms"]
    print(f"{args.clients} clients x {args.requests} requests: {result['completed']} ok, "
          f"{result['errors']} errors in {result['wall_s']} s = {result['requests_per_s']} requests/s")
    print(f"latency ms  p50 {lat['p50']}  p90 {lat['p90']}  p99 {lat['p99']}  max {lat['max']}")
    print(f"server ms   p50 {srv['p50']}  p90 {srv['p90']}  p99 {srv['p99']}  "
          "(queue + decode + inference)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
