"""benchmarks: measurements of the whole pipeline, run from a checkout (not part of the wheel).

``python -m benchmarks`` compares fastai, PyTorch and edge_infer fp32/int8 on one network;
``python -m benchmarks.demo`` (``make demo``) runs data -> train -> export -> benchmark ->
predict offline; ``benchmarks.serve_load`` loads ``edge-infer serve``.
"""
