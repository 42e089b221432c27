"""int8 products are exact on every x86 CPU: the runtime and export's int8 gate compute the same.

onnxruntime's fast uint8 x int8 kernel saturates pairs of products at 16 bits on x86 CPUs
without VNNI (``edge_infer.cpu`` says why and what it cost a real model). The model below makes
every pair saturate: 255 * 127 twice is 64770 > 32767. Through the saturating kernel a column
of 64 such products sums to 32 * 32767 = 1048544 instead of 2072640. On a VNNI CPU the kernel
is exact anyway; on an AVX2-only one these tests fail unless edge_infer asks for the exact
kernel, so they hold on both kinds and can fail on one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_infer.backends import open_onnxruntime
from edge_infer.cpu import saturates

K = 64


@pytest.fixture(scope="module")
def saturating_matmul(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    weights = np.full((K, 2), 127, np.int8)
    weights[:, 1] = -128
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "saturating",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, K])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 2])],
        [numpy_helper.from_array(weights, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("int8") / "saturating.onnx"
    onnx.save(model, path)
    pixels = np.full((1, K), 255, np.uint8)
    exact = pixels.astype(np.int64) @ weights.astype(np.int64)
    return path, pixels, exact


def test_the_runtime_sums_int8_products_exactly(saturating_matmul):
    path, pixels, exact = saturating_matmul
    out = open_onnxruntime(str(path), 1, None).run(None, {"a": pixels})[0]
    np.testing.assert_array_equal(out, exact)  # [[2072640, -2088960]], not [[1048544, -1048576]]


@pytest.mark.torch
def test_the_int8_gate_computes_what_the_runtime_computes(saturating_matmul):
    pytest.importorskip("onnxruntime.quantization")
    from export.accuracy_control import _session

    path, pixels, exact = saturating_matmul
    np.testing.assert_array_equal(_session(path, threads=1).run(None, {"a": pixels})[0], exact)


@pytest.mark.parametrize("machine, flags, expected", [
    ("x86_64", ["sse4_2", "avx2", "fma"], True),           # AVX2 only: vpmaddubsw saturates
    ("x86_64", ["avx2", "avx512f", "avx512_vnni"], False),  # vpdpbusd sums in 32 bits
    ("AMD64", ["avx2", "avx_vnni"], False),
    ("x86_64", ["avx2", "amx_int8"], False),
    ("x86_64", [], True),                                   # flags unreadable: choose exactness
    ("aarch64", ["asimd", "asimddp"], False),               # not x86: the option does not exist
])
def test_which_cpus_need_the_exact_kernel(machine, flags, expected):
    assert saturates(machine, flags) is expected
