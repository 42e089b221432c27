"""Load-test ``edge-infer serve``: 1, 8 and 32 concurrent clients, batching on and off, against
the same photos classified offline with ``Classifier.classify_files``.

    python -m benchmarks.serve_load MODEL [--clients 1,8,32] [--requests 40] [--image FILE]
                                          [--json out.json] [--markdown out.md] [--quick]

The server is a separate process (``edge-infer serve``, with ``--max-batch 1`` for "batching
off"), so the clients' threads do not share its interpreter lock. Each client sends its requests
on one keep-alive connection. Reported per row, after a warm-up: requests/s, end-to-end latency
p50/p99 on the client's clock, errors, and throughput as a fraction of the offline baseline
(the same photo, ``classify_files`` with batch 8, in this process, measured again right before
each row because a shared machine's load drifts). A last check connects 64
clients to ``/health`` at once and counts the answers. ``--quick`` is the tests' mode: 1 and 4
clients x 3 requests. Bounded: at most 64 clients x 1000 requests, and clients stop issuing
requests after ``--max-seconds``.
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

from benchmarks.images import photo_jpeg
from benchmarks.machine import describe_machine, summary_line
from benchmarks.result import md_table, write_json
from edge_infer.bench import summarize

WARMUP_REQUESTS = 5
START_SECONDS = 60.0  # loading onnxruntime and the model in a fresh process
OFFLINE_BATCH = 8


@dataclass
class ClientLog:
    """What one client saw: a latency per good answer, the labels, and the failures."""

    latencies_ms: list[float] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    not_sent: int = 0  # left when --max-seconds ran out: the benchmark's limit, not the server's error


def client(url: str, body: bytes, content_type: str, n: int, stop_at: float) -> ClientLog:
    """``n`` POSTs on one keep-alive connection; a failed connection is replaced, not fatal."""
    parts = urlsplit(url)
    log = ClientLog()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        for _ in range(n):
            if time.monotonic() > stop_at:
                log.not_sent += 1
                continue
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict?top_k=1", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as e:
                log.errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
                continue
            elapsed = (time.perf_counter() - start) * 1000.0
            if response.status != 200:
                log.errors.append(f"HTTP {response.status}: {raw[:200].decode(errors='replace')}")
                continue
            log.latencies_ms.append(elapsed)
            log.labels[json.loads(raw)["label"]] += 1
    finally:
        conn.close()
    return log


def percentiles(values_ms: list[float]) -> dict[str, float | None]:
    """p50, p99 and max of latencies in ms, through ``edge_infer.bench.summarize``."""
    if not values_ms:
        return {"p50": None, "p99": None, "max": None}
    t = summarize("latency", [v / 1000.0 for v in values_ms])
    return {"p50": round(t.p50_ms, 1), "p99": round(t.p99_ms, 1), "max": round(t.max_ms, 1)}


def run_load(url: str, body: bytes, content_type: str, *, clients: int, requests: int,
             max_seconds: float) -> dict:
    """Warm up, then ``clients`` threads x ``requests`` each; the numbers as a JSON-ready dict."""
    warm = client(url, body, content_type, WARMUP_REQUESTS, time.monotonic() + START_SECONDS)
    if warm.errors:
        raise SystemExit(f"warm-up failed: {warm.errors[0]}")
    stop_at = time.monotonic() + max_seconds
    start = time.perf_counter()
    with ThreadPoolExecutor(clients, thread_name_prefix="load-client") as pool:
        logs = list(pool.map(lambda _: client(url, body, content_type, requests, stop_at), range(clients)))
    wall = time.perf_counter() - start
    latencies = [x for log in logs for x in log.latencies_ms]
    errors = [e for log in logs for e in log.errors]
    return {"clients": clients, "requests_per_client": requests, "completed": len(latencies),
            "errors": len(errors), "first_errors": errors[:3], "not_sent": sum(log.not_sent for log in logs),
            "wall_s": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 1) if wall > 0 else None,
            "latency_ms": percentiles(latencies)}


def offline_rate(clf, body: bytes, n: int) -> tuple[float, float]:
    """Images/s of ``classify_files`` over ``n`` copies of the photo, after a warm-up, and the
    CPU milliseconds it spent per image (on a shared machine, CPU time drifts far less than
    wall time: it says whether the server does more work per image, not who got the cores)."""
    list(clf.classify_files([body] * OFFLINE_BATCH, batch_size=OFFLINE_BATCH))
    start, cpu = time.perf_counter(), time.process_time()
    results = list(clf.classify_files([body] * n, batch_size=OFFLINE_BATCH))
    assert all(r.error is None for r in results)
    return n / (time.perf_counter() - start), (time.process_time() - cpu) * 1000.0 / n


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(addr: tuple[str, int], body: bytes | None = None, content_type: str = "image/jpeg",
            timeout: float = 10) -> tuple[str, float]:
    """One request on a fresh connection, ``GET /health`` or with ``body`` a ``POST /predict``: its
    status ("200"; for a failed connection the exception's name) and milliseconds."""
    start = time.perf_counter()
    try:
        conn = http.client.HTTPConnection(*addr, timeout=timeout)
        if body is None:
            conn.request("GET", "/health")
        else:
            conn.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
        status = str(conn.getresponse().status)
        conn.close()
    except (OSError, http.client.HTTPException) as e:
        status = type(e).__name__
    return status, (time.perf_counter() - start) * 1000.0


def simultaneous_health(url: str, n: int = 64) -> dict:
    """``n`` clients connect to ``/health`` at the same moment: how many answered, the slowest."""
    parts = urlsplit(url)
    barrier = threading.Barrier(n)

    def one(_: int) -> tuple[str, float]:
        barrier.wait(timeout=30)
        return request((parts.hostname, parts.port))

    with ThreadPoolExecutor(n) as pool:
        answered = [ms for status, ms in pool.map(one, range(n)) if status == "200"]
    return {"connects": n, "answered": len(answered), "max_ms": round(max(answered), 1) if answered else None}


@contextlib.contextmanager
def server(model: str, threads: int | None = None, max_batch: int | None = None, max_queue: int | None = None,
           timeout: float | None = None) -> Iterator[tuple[str, int]]:
    """``edge-infer serve`` in a child process (an option left None: the server's default); its URL
    and process id. ``benchmarks.serve_attacks`` starts its server here too."""
    options = {"--max-batch": max_batch, "--max-queue": max_queue, "--timeout": timeout, "--threads": threads}
    cmd = [sys.executable, "-m", "edge_infer", "serve", model, "--port", "0", "--no-access-log",
           *(arg for flag, v in options.items() if v is not None for arg in (flag, str(v)))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            line = proc.stdout.readline() if sel.select(START_SECONDS) else ""
        if "http://" not in line:
            raise SystemExit(f"the server did not start within {START_SECONDS:g} s "
                             f"(exit code {proc.poll()}); run edge-infer serve {model} to see why")
        yield line[line.index("http://"):].split()[0], proc.pid
    finally:
        proc.terminate()  # SIGTERM: the server drains and exits 0
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def markdown(result: dict) -> str:
    rows = md_table(["batching", "clients", "requests/s", "offline img/s", "× offline", "p50 ms", "p99 ms", "p99/p50",
                     "errors", "CPU ms/request (offline /image)"],
                    map(_table_row, result["rows"]), rule="| --- |" + " ---: |" * 9)
    h = result["health_64"]
    return "\n".join(rows) + (f"\n\nOffline: `classify_files` (batch {OFFLINE_BATCH}) on the same photo, "
                              f"measured right before each row. 64 simultaneous connects to "
                              f"/health: {h['answered']}/{h['connects']} answered, slowest {h['max_ms']} ms.\n")


def _table_row(r: dict) -> list:
    lat = r["latency_ms"]
    return [r["batching"], r["clients"], r["requests_per_s"], r["offline_per_s"], f"{r['vs_offline']:.2f}", lat["p50"],
            lat["p99"], f"{lat['p99'] / lat['p50']:.1f}" if lat["p50"] else "-", r["errors"],
            f"{r['server_cpu_ms_per_request']} ({r['offline_cpu_ms_per_image']})"]


def publish(result: dict, text: str, json_path: Path | None, markdown_path: Path | None) -> None:
    """The machine and ``text`` on stdout; ``result`` to ``json_path``, ``text`` to ``markdown_path`` (if given).
    ``benchmarks.serve_attacks`` reports this way too."""
    machine = result["machine"]
    print(f"machine: {summary_line(machine)}; load average {machine['load_average']}")
    print(text)
    if json_path:
        write_json(json_path, result)
    if markdown_path:
        markdown_path.write_text(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n")[0])
    p.add_argument("model", help="an edge_infer .onnx file")
    p.add_argument("--clients", default="1,8,32", help="comma-separated client counts, each 1..64")
    p.add_argument("--requests", type=int, default=40, choices=range(1, 1001), metavar="1..1000",
                   help="requests per client (default 40)")
    p.add_argument("--batching", choices=["both", "on", "off"], default="both")
    p.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch when batching is on")
    p.add_argument("--image", type=Path, help="the image every request sends [default: a 1920x1080 JPEG]")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (server and offline)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="clients stop issuing requests after this long, per row (default 120)")
    p.add_argument("--timeout", type=float, default=10.0, help="the server's --timeout (default 10)")
    p.add_argument("--quick", action="store_true", help="1 and 4 clients x 3 requests (for tests)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="write the table here")
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.requests = "1,4", 3
    args.client_counts = [int(c) for c in args.clients.split(",")]
    if not all(1 <= c <= 64 for c in args.client_counts):
        p.error("--clients: each count must be in 1..64")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.image is not None:
        body = args.image.read_bytes()
        content_type = mimetypes.guess_type(args.image.name)[0] or "application/octet-stream"
    else:
        body, content_type = photo_jpeg((1920, 1080)), "image/jpeg"
    with Image.open(io.BytesIO(body)) as img:
        image = {"path": str(args.image) if args.image else "generated", "size": list(img.size), "bytes": len(body)}
    from edge_infer import Classifier

    clf = Classifier.load(args.model, threads=args.threads)
    n_offline = 16 if args.quick else 48
    offline_rates = []
    modes = {"both": [("on", args.max_batch), ("off", 1)], "on": [("on", args.max_batch)], "off": [("off", 1)]}
    rows, health = [], None
    for batching, max_batch in modes[args.batching]:
        with server(args.model, args.threads, max_batch, max_queue=max(64, 2 * max(args.client_counts)),
                    timeout=args.timeout) as (url, pid):
            for clients in args.client_counts:
                # offline again right before each row: on a shared machine the load drifts
                offline, offline_cpu = offline_rate(clf, body, n_offline)
                offline_rates.append(offline)
                cpu = cpu_seconds(pid)
                row = run_load(url, body, content_type, clients=clients, requests=args.requests,
                               max_seconds=args.max_seconds)
                cpu = (cpu_seconds(pid) - cpu) * 1000.0 / max(1, row["completed"] + WARMUP_REQUESTS)
                row = {"batching": batching, **row, "offline_per_s": round(offline, 2),
                       "vs_offline": (row["requests_per_s"] or 0) / offline,
                       "server_cpu_ms_per_request": round(cpu, 1), "offline_cpu_ms_per_image": round(offline_cpu, 1)}
                rows.append(row)
                print(f"batching {batching:3} {clients:2} clients: {row['requests_per_s']} req/s "
                      f"({row['vs_offline']:.2f}x offline), p50 {row['latency_ms']['p50']} ms, "
                      f"p99 {row['latency_ms']['p99']} ms, {row['errors']} errors", flush=True)
            if health is None:
                health = simultaneous_health(url)
    result = {"benchmark": "serve_load", "model": args.model, "image": image, "threads": args.threads,
              "server_timeout_s": args.timeout, "offline_per_s": round(float(np.median(offline_rates)), 2),
              "rows": rows, "health_64": health, "machine": describe_machine()}
    publish(result, markdown(result), args.json, args.markdown)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
