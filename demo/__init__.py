"""``python -m demo`` (``make demo``): data -> train -> export -> benchmark -> predict, offline.

A walk through every stage's own API in one command, for a first look at the project; the code
is in ``demo/pipeline.py``. Run from a checkout, like ``train``, ``export`` and ``benchmarks``;
not part of the wheel.
"""
