"""``ReadPath``: the name learner pickles of earlier runs give the DataBlock's ``get_x``.

It was a fastai ``ColReader("path", pref=DATA/)`` that preferred a row's ``cached`` copy. Since
the decoded store (``train.store``) replaced the image cache (issue 24) no table has that
column, so the name is ``ColReader`` itself, kept because those pickles name this module.

Its own module because it imports fastai: ``train.data`` must stay importable without torch
(``verify`` and ``clean`` list data folders with it).
"""

from __future__ import annotations

from fastai.data.transforms import ColReader

__all__ = ["ReadPath"]

ReadPath = ColReader
