"""``auto``'s verdict, remembered per file contents, CPU, library versions, threads and inference precision.

Verifying and timing every installed backend costs seconds on a 224 px network (OpenVINO's
compile, the canaries through each backend, a dozen timed calls), while the answer can change
only when one of the things in the key does. So a verdict that rests on canary checks is stored,
under a key made of the file's SHA-256, the CPU's model name and flags, the machine, the versions
of edge-infer, onnxruntime and OpenVINO, the thread count and OpenVINO's inference precision; a later load
with the same key opens only the chosen backend. A file without canaries is never cached (auto
keeps it on onnxruntime without a check).

The cache is one JSON file, ``auto.json`` in ``$EDGE_INFER_CACHE`` or else
``$XDG_CACHE_HOME/edge-infer`` (``~/.cache/edge-infer``); ``EDGE_INFER_CACHE=off`` turns it off.
OpenVINO's compiled models go beside it (``openvino_cache_dir``). It is only ever a shortcut: an
unreadable or damaged cache is ignored, and one that cannot be written is not an error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import threading
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ._version import __version__
from .cpu import cpu_flags, cpuinfo
from .files import sha256_file

__all__ = ["CACHE_ENV", "cache_path", "openvino_cache_dir", "key", "lookup", "store"]

CACHE_ENV = "EDGE_INFER_CACHE"
MAX_ENTRIES = 64  # the oldest go first: one line per (file, settings) a machine has loaded


def cache_path() -> Path | None:
    """Where the cache lives, or None when it is turned off."""
    folder = os.environ.get(CACHE_ENV)
    if folder is not None and folder.lower() in ("off", "0", "no", ""):
        return None
    if folder is None:
        folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edge-infer")
    return Path(folder) / "auto.json"


def openvino_cache_dir() -> str | None:
    """The folder for OpenVINO's own compiled-model cache (its ``CACHE_DIR``), beside ours.

    Compiling a 224 px ResNet34 int8 file took 0.8-1.3 s on the shared AVX2 EPYC, reading the
    compiled blob back 0.1-0.3 s (about the file's size on disk); OpenVINO keys the blobs by the
    model, the settings and its own version.
    """
    where = cache_path()
    return None if where is None else str(where.parent / "openvino")


def key(path: str, *, threads: int | None, inference_precision: str) -> str:
    """What the verdict depends on, hashed."""
    info = cpuinfo()
    parts = {"file": sha256_file(path), "cpu": info.get("model name", ""), "flags": cpu_flags(info),
             "machine": platform.machine(), "edge_infer": __version__, "onnxruntime": ort.__version__,
             "openvino": _version("openvino"), "threads": threads, "inference_precision": inference_precision}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def lookup(k: str) -> dict[str, Any] | None:
    """The stored verdict (``backend``, ``reason``) for key ``k``, if any."""
    entry = _read().get(k)
    return entry if isinstance(entry, dict) and entry.get("backend") in ("onnxruntime", "openvino") else None


def store(k: str, backend: str, reason: str) -> None:
    """Remember the verdict; a cache that cannot be written is skipped."""
    where = cache_path()
    if where is None:
        return
    entries = _read()
    entries.pop(k, None)
    entries[k] = {"backend": backend, "reason": reason}
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        # one partial file per writer: auto stores from its background thread, a server may load two
        partial = where.with_name(f".{where.name}.{os.getpid()}.{threading.get_ident()}")
        partial.write_text(json.dumps(kept, indent=1))
        os.replace(partial, where)  # readers see the old file or the new one, never half
    except OSError:
        pass


def _read() -> dict[str, Any]:
    where = cache_path()
    if where is None:
        return {}
    try:
        d = json.loads(where.read_text())
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
