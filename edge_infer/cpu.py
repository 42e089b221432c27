"""What this CPU is, read once: its flags, and whether onnxruntime's fast int8 products saturate on it.

onnxruntime multiplies uint8 activations by int8 weights ("U8S8") on x86 CPUs without VNNI with
AVX2's ``vpmaddubsw``, which adds each pair of products into a signed 16-bit lane that
saturates: 255*127 + 255*127 = 64770 comes out as 32767. The same int8 file then answers one
way on a CPU with VNNI (exact int32 sums) and another way on one without. Measured on a 64 px
Fashion-MNIST model (export/README.md): 98.8 % top-1 agreement with fp32 computed exactly, 96.7 %
with 7 confident flips through the saturating kernel on an AVX2 EPYC.

onnxruntime's session option ``session.x64quantprecision`` rewrites the int8 weights as uint8
(the zero point moved with them: the same products) so that its exact U8U8 kernels run. It
costs speed: 1.2-1.36x the int8 model time on that EPYC, and onnxruntime applies it on every
x86 CPU with AVX2, VNNI or not. So edge_infer sets it only where the products would saturate:
an x86 CPU whose flags show no VNNI (``avx512_vnni``, ``avx_vnni``, AMX), or whose flags cannot
be read. There the int8 model computes what the export's int8 gate measured, on every CPU.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

__all__ = ["cpuinfo", "cpu_flags", "int8_products_saturate", "VNNI_FLAGS"]

# Any of these gives exact int32 sums of uint8 x int8 products (vpdpbusd, AMX tiles).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as a dict (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    first = path.read_text(errors="replace").strip().split("\n\n", 1)[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


def cpu_flags(info: dict[str, str] | None = None) -> list[str]:
    """All CPU flags the kernel reports (x86 ``flags``, Arm ``Features``), sorted."""
    info = cpuinfo() if info is None else info
    return sorted(set((info.get("flags") or info.get("Features") or "").split()))


@functools.lru_cache(maxsize=1)
def int8_products_saturate() -> bool:
    """True on an x86 CPU without VNNI, or one whose flags cannot be read (then exactness wins)."""
    return saturates(platform.machine(), cpu_flags())


def saturates(machine: str, flags: list[str]) -> bool:
    """The rule of ``int8_products_saturate`` for a given machine name and flag list."""
    if machine.lower() not in _X86:
        return False  # Arm's int8 dot products sum exactly; the option is x86-only anyway
    return not flags or not (VNNI_FLAGS & set(flags))
