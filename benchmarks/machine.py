"""Describe the machine a benchmark ran on: CPU model and flags, cores, memory, library versions.

A latency number means nothing without the machine under it, so every results file carries this
block. Linux is read from /proc; elsewhere the fields that cannot be found say "unknown".
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from edge_infer.cpu import cpu_flags, cpuinfo

__all__ = ["describe_machine", "cpu_flags", "KEY_FLAGS", "summary_line", "slug"]

# The instruction-set extensions that decide which kernels onnxruntime and torch pick:
# avx512_vnni / avx_vnni / amx_int8 make int8 matmuls several times faster than fp32.
KEY_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp")

PACKAGES = ("numpy", "pillow", "onnxruntime", "onnx", "torch", "torchvision", "fastai",
            "edge-infer", "scikit-learn", "matplotlib")


def _cpu_model(info: dict[str, str]) -> str:
    return (info.get("model name") or info.get("Hardware") or info.get("CPU part")
            or platform.processor() or platform.machine() or "unknown")


def _memory_gib() -> float | None:
    try:  # physical pages x page size: /proc/meminfo's MemTotal on Linux
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (AttributeError, ValueError, OSError):
        return None


def _usable_cores() -> int:
    # The CPUs this process may run on (a container or taskset can hide some of os.cpu_count()).
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def versions() -> dict[str, str | None]:
    """Installed versions of the libraries that a latency depends on (None: not installed)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}, "libjpeg": _libjpeg()}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _libjpeg() -> str | None:
    try:
        from PIL import features
    except ImportError:
        return None
    turbo = features.check_feature("libjpeg_turbo")
    return f"{'libjpeg-turbo' if turbo else 'libjpeg'} {features.version('jpg')}"


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def describe_machine() -> dict:
    """A JSON-ready description of this machine: what a reader needs to compare two results."""
    info = cpuinfo()
    flags = cpu_flags(info)
    return {"cpu_model": _cpu_model(info), "architecture": platform.machine(), "logical_cpus": os.cpu_count(),
            "usable_cpus": _usable_cores(), "key_flags": {flag: flag in flags for flag in KEY_FLAGS}, "flags": flags,
            "memory_gib": _memory_gib(), "os": f"{platform.system()} {platform.release()}",
            "hypervisor": "hypervisor" in flags, "load_average": _load_average(),
            "python_executable": sys.executable, "versions": versions()}


def summary_line(machine: dict) -> str:
    """One line for a report header: model, cores, the flags that matter that are present."""
    present = [f for f, on in machine.get("key_flags", {}).items() if on and f not in ("sse4_2", "avx", "fma")]
    return (f"{machine.get('cpu_model', 'unknown')}, {machine.get('usable_cpus')} usable of "
            f"{machine.get('logical_cpus')} logical CPUs, {machine.get('memory_gib')} GiB; "
            f"flags: {', '.join(present) or 'none of note'}")


# The best int8 instruction set present names the machine's results folder: the CPU model string
# alone is often generic inside a VM ("AMD EPYC", "Intel(R) Xeon(R) Processor").
_ISA_TAGS = (("amx_int8", "amx"), ("avx512_vnni", "avx512-vnni"), ("avx_vnni", "avx-vnni"),
             ("avx512f", "avx512"), ("avx2", "avx2"), ("asimddp", "neon-dotprod"), ("asimd", "neon"))


def slug(machine: dict) -> str:
    """A folder name for this machine's results: CPU model words plus its best int8 ISA,
    e.g. ``amd-epyc-avx2`` or ``intel-xeon-processor-amx``."""
    words = "".join(c if c.isalnum() else " " for c in machine.get("cpu_model", "unknown").lower())
    words = [w for w in words.split() if w not in ("r", "tm", "cpu", "with")][:4]
    flags = machine.get("key_flags", {})
    isa = next((tag for flag, tag in _ISA_TAGS if flags.get(flag)), machine.get("architecture", ""))
    return "-".join([*words, isa]).strip("-") or "unknown"
