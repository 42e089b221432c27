"""``python -m demo`` (``make demo``): every stage's own API in one offline command, for a first
look at the project (``demo/pipeline.py``). Run from a checkout; not part of the wheel."""
