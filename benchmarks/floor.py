"""This machine's compute floor: the fastest a network of N multiply-adds could run here.

Measured, not looked up: the best throughput onnxruntime's own GEMM kernels (MLAS) reach on one
large square matrix product, int8 (``MatMulInteger``, uint8 x int8 -> int32, the kernels behind
the int8 model's ``QLinearConv``/``ConvInteger``, opened with the runtime's session settings so
that a CPU without VNNI measures the exact U8U8 kernel the model then runs) and fp32 (``MatMul``), with the same thread
count as the run. That number divided into the model's multiply-adds (counted from its graph) is
the floor in ms; every variant is reported as a multiple of it.

Why MLAS and not a hand-written AVX-512 VNNI loop compiled with gcc: it needs no compiler on
the machine, it picks the best instruction set there is (AVX-512 VNNI, AVX-VNNI, AVX2, AMX,
Arm dot products) exactly as the model's kernels do, and it is what a convolution could at best
become. A VNNI peak loop sits about 1.5-2x higher (no memory traffic at all); a variant at 1.0x
this floor has no convolution overhead left (im2col, pooling, activations, memory), not no
arithmetic left.
"""

from __future__ import annotations

import timeit
from pathlib import Path

import numpy as np

from .result import Floor, Gemm

__all__ = ["GEMM_SIZE", "gemm_throughput", "measure_floor", "count_macs"]

GEMM_SIZE = 1024  # 1.07 G multiply-adds per call: large enough to reach peak, ~10-50 ms a call


def _gemm_model(kind: str, n: int) -> bytes:
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    int8 = kind == "int8"
    b = (helper.make_tensor("b", TensorProto.INT8, [n, n], rng.integers(-128, 128, n * n).tolist()) if int8 else
         helper.make_tensor("b", TensorProto.FLOAT, [n, n], rng.standard_normal(n * n).astype(np.float32).tolist()))
    node = helper.make_node("MatMulInteger" if int8 else "MatMul", ["a", "b"], ["c"])
    a_type, c_type = (TensorProto.UINT8, TensorProto.INT32) if int8 else (TensorProto.FLOAT, TensorProto.FLOAT)
    graph = helper.make_graph([node], f"gemm_{kind}", [helper.make_tensor_value_info("a", a_type, [n, n])],
                              [helper.make_tensor_value_info("c", c_type, [n, n])], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def gemm_throughput(kind: str, threads: int, *, n: int = GEMM_SIZE, runs: int = 10, warmup: int = 2) -> dict:
    """Best-of-``runs`` multiply-adds per second of one n x n x n product in onnxruntime."""
    import onnxruntime as ort

    from edge_infer.backends import session_options

    # The runtime's settings, so the int8 product runs on the kernel the model's layers run on
    # (exact U8U8 where U8S8 would saturate: edge_infer.cpu). A bare GEMM graph has no
    # edge_infer metadata, so it is opened here rather than through edge_infer's opener.
    opts = session_options(threads)
    session = ort.InferenceSession(_gemm_model(kind, n), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    a = (rng.integers(0, 256, (n, n), dtype=np.uint8) if kind == "int8"
         else rng.standard_normal((n, n)).astype(np.float32))
    best = min(timeit.repeat(lambda: session.run(None, {"a": a}), number=1, repeat=warmup + runs)[warmup:])
    # Unrounded: a 128^3 int8 product takes ~0.02 ms on a VNNI CPU, where rounding the time to
    # 3 decimals alone moves the rate by 3 %. The JSON writer rounds for display.
    return {"kind": kind, "threads": threads, "n": n, "best_ms": best * 1000, "gmac_per_s": n ** 3 / best / 1e9}


def count_macs(onnx_path: str | Path) -> int:
    """Multiply-adds of one batch-1 forward pass: every Conv, Gemm and MatMul in the graph."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    graph = model.graph
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]  # symbolic N -> 1
              for v in [*graph.value_info, *graph.input, *graph.output]}
    shapes.update({t.name: list(numpy_helper.to_array(t).shape) for t in graph.initializer})
    total = 0
    for node in graph.node:
        out = shapes.get(node.output[0])
        if node.op_type == "Conv" and out and node.input[1] in shapes:
            co, ci_per_group, *kernel = shapes[node.input[1]]
            total += int(np.prod(out)) * ci_per_group * int(np.prod(kernel))
        elif node.op_type in ("Gemm", "MatMul") and out and node.input[0] in shapes:
            transposed = any(a.name == "transA" and a.i for a in node.attribute)
            total += int(np.prod(out)) * shapes[node.input[0]][-2 if transposed else -1]
    return total


def measure_floor(fp32_onnx: str | Path, threads: tuple[int, ...], *, quick: bool = False, log=print) -> Floor:
    """The int8 and fp32 floors of the model in ``fp32_onnx`` at each thread count."""
    macs = count_macs(fp32_onnx)
    by_threads: dict[int, dict[str, Gemm]] = {}
    for t in threads:
        for kind in ("int8", "fp32"):
            g = gemm_throughput(kind, t, runs=3 if quick else 10, warmup=1 if quick else 2)
            by_threads.setdefault(t, {})[kind] = gemm = Gemm(**g, floor_ms=macs / (g["gmac_per_s"] * 1e9) * 1000)
            log(f"  floor {kind} threads={t}: {gemm.gmac_per_s:.0f} GMAC/s -> {gemm.floor_ms:.2f} ms "
                f"for {macs / 1e9:.2f} GMAC")
    return Floor(f"onnxruntime MLAS GEMM, {GEMM_SIZE}^3, best of runs", round(macs / 1e9, 3), by_threads)
