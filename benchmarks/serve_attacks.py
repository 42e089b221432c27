"""The attacks of issue 13 against ``edge-infer serve``, measured: does a normal client still get
``/health`` quickly, how much memory does the server take, and what does the attacker get?

    python -m benchmarks.serve_attacks MODEL [--seconds 8] [--json out.json] [--markdown out.md]

The server is ``edge-infer serve`` in a child process with its default limits; its peak RSS is
read from ``/proc/PID/status`` (VmHWM, Linux). For each attack, while it runs, a normal client
asks ``/health`` every 50 ms and reports the median and slowest answer. The regression tests
(tests/test_serve.py) check the same attacks at small scale; this measures them at full size.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from benchmarks.images import photo_jpeg
from benchmarks.machine import describe_machine
from benchmarks.result import md_table
from benchmarks.serve_load import percentiles, publish, request, server

BOUNDARY = "attack7MA4YWxkTrZu0gW"


def status_of(reply: bytes) -> str:
    parts = reply.split(b" ", 2)
    return parts[1].decode() if len(parts) > 1 and reply.startswith(b"HTTP/") else "no answer"


def many_parts(addr: tuple[str, int], seconds: float) -> list[str]:
    """Four clients at once, each a 17.6 MB body of empty parts (once 21 s and 847 MB each)."""
    part = f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n".encode()
    body = part * (17_600_000 // len(part)) + f"--{BOUNDARY}--\r\n".encode()
    ctype = f"multipart/form-data; boundary={BOUNDARY}"
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda _: request(addr, body, ctype, timeout=30)[0], range(4)))


def slow_headers(addr: tuple[str, int], seconds: float) -> list[str]:
    """2,000 connections that send half a request head and stall (slowloris)."""
    socks = []
    for _ in range(2000):
        with contextlib.suppress(OSError):
            s = socket.create_connection(addr, timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
    time.sleep(seconds)
    closed = 0
    for s in socks:
        s.settimeout(0.01)
        try:
            closed += s.recv(1) == b""
        except ConnectionResetError:
            closed += 1
        except OSError:  # still open: recv timed out
            pass
        s.close()
    return [f"{len(socks)} opened, {closed} closed by the server within {seconds:g} s"]


def stalled_uploads(addr: tuple[str, int], seconds: float) -> list[str]:
    """100 uploads that declare just under 20 MB, send 1 MB and stall."""
    socks, statuses = [], []
    for _ in range(100):
        with contextlib.suppress(OSError):
            s = socket.create_connection(addr, timeout=30)
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 19999999\r\n\r\n" + b"\xff" * 1_000_000)
            socks.append(s)
    for s in socks:
        with contextlib.suppress(OSError):
            statuses.append(status_of(s.recv(200)))
        s.close()
    return statuses


def deep_png(addr: tuple[str, int], seconds: float) -> list[str]:
    """16 clients looping a 95 KB 16-bit greyscale PNG of 7000x7000 (once 964 MB per decode)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((7000, 7000), np.uint16)).save(buf, "PNG")
    data, stop = buf.getvalue(), time.monotonic() + seconds

    def loop(_: int) -> list[str]:
        out = []
        while time.monotonic() < stop:
            out.append(request(addr, data, "image/png", timeout=30)[0])
        return out

    with ThreadPoolExecutor(16) as pool:
        return [s for ss in pool.map(loop, range(16)) for s in ss]


def bad_lengths(addr: tuple[str, int], seconds: float) -> list[str]:
    out = []
    for length in ("\u00b2", "+655", "-1", "5\r\nContent-Length: 6"):
        with contextlib.suppress(OSError), socket.create_connection(addr, timeout=5) as s:
            s.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\nhello!".encode())
            out.append(status_of(s.recv(200)))
    return out


def cross_site(addr: tuple[str, int], seconds: float) -> list[str]:
    conn = http.client.HTTPConnection(*addr, timeout=10)
    conn.request("POST", "/predict", body=b"x", headers={"Origin": "https://evil.example",
                                                         "Content-Type": "image/jpeg"})
    return [str(conn.getresponse().status)]


ATTACKS: dict[str, Callable[[tuple[str, int], float], list[str]]] = {
    "many multipart parts (4 x 17.6 MB)": many_parts,
    "slow headers (2,000 connections)": slow_headers,
    "stalled uploads (100 x 20 MB declared)": stalled_uploads,
    "16-bit 7000x7000 PNG (16 clients loop)": deep_png,
    "bad Content-Length (², +655, -1, two)": bad_lengths,
    "cross-site POST (Origin)": cross_site,
}


def watch(addr: tuple[str, int], stop: threading.Event, out: list[float], photo: bytes | None = None) -> None:
    """A normal client: ``/health`` (or, with ``photo``, a prediction) every 50 ms; its latencies."""
    while not stop.is_set():
        status, ms = request(addr, photo)
        out.append(ms if status == "200" else float("inf"))
        stop.wait(0.05)


def rss_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_attacks", description=__doc__.split("\n")[0])
    p.add_argument("model")
    p.add_argument("--seconds", type=float, default=8.0, help="how long the timed attacks run")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    args = p.parse_args(argv)
    rows = []
    with server(args.model) as (url, pid):  # its default limits
        parts = urlsplit(url)
        addr = (parts.hostname, parts.port)
        time.sleep(0.5)
        photo = photo_jpeg((640, 480))
        calm: list[float] = []
        stop = threading.Event()
        threading.Timer(3.0, stop.set).start()
        watch(addr, stop, calm, photo)
        print(f"a normal 640x480 prediction with no attack: p50 {np.median(calm):.1f} ms", flush=True)
        rest = rss_mb(pid, "VmRSS")
        print(f"server RSS at rest: {rest:.0f} MB", flush=True)
        for name, attack in ATTACKS.items():
            stop, health, predicts = threading.Event(), [], []
            with ThreadPoolExecutor(2) as watchers:  # the block ends when both have seen stop
                watchers.submit(watch, addr, stop, health)
                watchers.submit(watch, addr, stop, predicts, photo)
                start = time.perf_counter()
                statuses = attack(addr, args.seconds)
                took = time.perf_counter() - start
                stop.set()
            ok = [h for h in health if h != float("inf")]
            good = [h for h in predicts if h != float("inf")]
            h, p = percentiles(ok), percentiles(good)
            row = {"attack": name, "seconds": round(took, 1), "attacker_got": dict(Counter(statuses)),
                   "health_checks": len(health), "health_failed": len(health) - len(ok),
                   "health_p50_ms": h["p50"], "health_max_ms": h["max"], "predict_p50_ms": p["p50"],
                   "predict_failed": len(predicts) - len(good),
                   "server_peak_rss_mb": round(rss_mb(pid, "VmHWM"), 0)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = md_table(["attack", "attacker got", "/health p50 / max ms (failed)", "normal predict p50 ms (failed)",
                      "server peak RSS MB"],
                     [[r["attack"], ", ".join(f"{k}×{v}" for k, v in sorted(r["attacker_got"].items())),
                       f"{r['health_p50_ms']} / {r['health_max_ms']} ({r['health_failed']})",
                       f"{r['predict_p50_ms']} ({r['predict_failed']})", f"{r['server_peak_rss_mb']:.0f}"] for r in rows],
                     rule="| --- | --- | --- | --- | ---: |")
    text = "\n".join(table) + (f"\n\nServer RSS at rest {rest:.0f} MB; peak RSS is cumulative (VmHWM). "
                               f"A normal 640x480 prediction with no attack: p50 {np.median(calm):.1f} ms.\n")
    publish({"rows": rows, "rest_rss_mb": rest, "machine": describe_machine()}, text, args.json, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
