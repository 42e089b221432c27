"""``ReadPath``: the DataBlock's ``get_x``, a fastai ``ColReader("path", pref=DATA/)`` that prefers a cached copy.

Tables have no ``cached`` column since the decoded store (``train.store``) replaced the image
cache (issue 24); the class stays because the learner pickles of earlier runs name it.

Its own module because it subclasses a fastai class: ``train.data`` must stay importable without
torch (``verify`` and ``clean`` list data folders with it), and the learner pickle names this class.
"""

from __future__ import annotations

from fastai.data.transforms import ColReader

__all__ = ["ReadPath"]


class ReadPath(ColReader):
    """``pref + row.path``, unless the row has a ``cached`` value (the image cache before issue 24).

    Only the rows of big images in ``make_dls``'s table carry ``cached``; every other table
    (``test_dl`` in export's parity and in ``interpret``, which pass ``path`` alone) reads the
    original file. Still a ``ColReader`` on ``path``, so export can point ``pref`` at the data.
    """

    def __call__(self, o, **kwargs):
        cached = getattr(o, "cached", None)
        if isinstance(cached, str):
            return cached
        return super().__call__(o, **kwargs)
