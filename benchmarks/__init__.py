"""benchmarks: measurements of the whole pipeline, run from a checkout (not part of the wheel).

``python -m benchmarks`` (``make bench``) compares fastai, PyTorch and edge_infer fp32/int8 on
one network and judges the targets in ``benchmarks.report``; ``benchmarks.serve_load``,
``serve_attacks``, ``batch`` and ``train`` measure serving, batch jobs and training. Those four
stay as code, not as a study's conclusion: each is the measurement an issue asked to be able to
rerun (a new machine, a GPU box, a cluster) and each backs a README table. Questions
explored once are answered in studies.md, not kept as code. ``make demo`` lives in ``demo/``.
"""
