"""From a folder of images to fastai DataLoaders, decoding with the runtime's own loader.

Three layouts are understood (``find_items``):

* one folder per class: ``DATA/<label>/*.jpg`` (split at random, ``valid_pct``, ``seed``);
* ``DATA/train/<label>/...`` and ``DATA/valid/<label>/...`` (the split is given);
* ``DATA/labels.csv`` with columns ``path,label`` and optionally ``is_valid`` (paths relative
  to DATA).

Images are opened by ``edge_infer.preprocess.load_image`` (EXIF applied, one RGB rule), so the
network trains on exactly the pixels the runtime will give it. Hidden folders (``.quarantine``)
are skipped. Images more than twice the training size are read from a cache
(``train.image_cache``): training ones from reduced copies, validation ones from their finished
validation item, bit for bit what the original file gives.

fastai is imported inside the functions that need it: listing a data folder (``find_items``,
used by ``verify`` and ``clean``) should not pay torch's few seconds of import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from edge_infer.labelled import read_labelled
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import load_image
from export.run_folder import SplitTable

if TYPE_CHECKING:
    from fastai.vision.all import DataLoaders


def open_image(path: str | Path):  # no return annotation: fastcore would resolve it at import
    """fastai's item loader, replaced by the runtime's (module-level so the learner pickles).

    Returns a fastai ``PILImage``.
    """
    from fastai.vision.core import PILImage

    return PILImage(load_image(path))


def find_items(data: Path) -> tuple[pd.DataFrame, str]:
    """All labelled images under ``data``: columns ``path`` (relative), ``label``, ``is_valid``.

    Returns the table and the layout's name: ``folders``, ``train-valid`` or ``csv``. The
    folder is read by ``edge_infer.labelled.read_labelled`` (the reader ``edge-infer eval`` uses);
    its ``DataError`` is a ``ValueError``.
    """
    folder = read_labelled(data)
    rows = [(i.path, i.label, pd.NA if i.is_valid is None else i.is_valid) for i in folder.items]
    return pd.DataFrame(rows, columns=["path", "label", "is_valid"]), folder.layout


def default_workers(cuda: bool) -> int:
    """DataLoader worker processes when ``--workers`` is not given.

    On a GPU box, every core but one (the training process's): decoding and resizing in the
    training process left an H100 idle 60% of the time (issue 12). On the CPU the workers
    would take cores from the network's own forward and backward passes; on the 2-core
    machine 0 workers was fastest (benchmarks/train.py measures it).
    """
    return max(1, len(os.sched_getaffinity(0)) - 1) if cuda else 0


def make_dls(data: Path, pre: Preprocess, *, bs: int = 64, valid_pct: float = 0.2, seed: int = 42,
             augment: bool = True, num_workers: int = 0, device=None, pin_memory: bool = False,
             cache: Path | Literal[False] | None = None) -> "DataLoaders":
    """DataLoaders over ``data`` that resize exactly as ``pre`` says (fastai's ``Resize``).

    Augmentation (flips, small rotations/zoom/lighting) is applied to the training set only, on
    the batch; the validation set sees the same pipeline as the runtime. ``cache``: the folder of
    reduced training images (``None``: ``train.image_cache.default_cache_dir()``; ``False``:
    read every training image from its file every epoch).
    """
    from fastai.vision.all import (CategoryBlock, ColReader, ColSplitter, DataBlock,
                                   IntToFloatTensor, PadMode, RandomSplitter, Resize, ResizeMethod,
                                   TransformBlock, aug_transforms)

    from .reader import ReadPath

    resize = {"crop": ResizeMethod.Crop, "squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad}
    pad = {"zeros": PadMode.Zeros, "border": PadMode.Border, "reflection": PadMode.Reflection}
    data = Path(data).resolve()
    df, _ = find_items(data)
    given = df["is_valid"].notna().all()
    splitter = ColSplitter("is_valid") if given else RandomSplitter(valid_pct=valid_pct, seed=seed)
    if given:
        df = df.assign(is_valid=df["is_valid"].astype(bool))
    if cache is not False:
        df = _with_cached_copies(df, data, splitter, pre, cache, num_workers)
    block = DataBlock(
        blocks=(TransformBlock(type_tfms=open_image, batch_tfms=IntToFloatTensor), CategoryBlock),
        get_x=ReadPath("path", pref=f"{data}/"),
        get_y=ColReader("label"),
        splitter=splitter,
        item_tfms=Resize(pre.size, method=resize[pre.resize], pad_mode=pad[pre.pad_mode]),
        batch_tfms=aug_transforms(size=None) if augment else None,
    )
    return block.dataloaders(df, bs=bs, num_workers=num_workers, device=device, path=data,
                             pin_memory=pin_memory)


def _with_cached_copies(df: pd.DataFrame, data: Path, splitter, pre: Preprocess, cache: Path | None,
                        workers: int) -> pd.DataFrame:
    """``df`` plus a ``cached`` column: the cache entry each big image is read from (``ReadPath``).

    Training rows get a reduced copy, validation rows their finished validation item
    (``train.image_cache``). The splitter is the DataBlock's own (seeded ``RandomSplitter`` or
    ``ColSplitter``), called once more here to know which rows are which; it reseeds torch
    itself, so the DataBlock's call afterwards leaves the random state exactly as before.
    """
    from .image_cache import prepare_training_sources, prepare_validation_sources

    train_idx, valid_idx = (list(idx) for idx in splitter(df))
    sources = (
        (train_idx, "training", "reduced copies",
         lambda paths: prepare_training_sources(paths, pre.size, root=cache, workers=workers)),
        (valid_idx, "validation", "their validation items",
         lambda paths: prepare_validation_sources(paths, pre, root=cache, workers=workers)),
    )
    cached = pd.Series(pd.NA, index=df.index, dtype=object)
    for idx, what, read_from, prepare in sources:
        paths = [data / df["path"].iloc[i] for i in idx]
        entries, report = prepare(paths)
        if report.big:
            print(f"image cache: {report.big} {what} images larger than twice {pre.size[1]}x{pre.size[0]} "
                  f"read from {read_from} ({report.written} made now, {report.seconds:.1f} s) in {report.root}")
        for i, path, entry in zip(idx, paths, entries):
            if entry != str(path):
                cached.iloc[i] = entry
    # Nothing to cache: the table, and so the training, is exactly as without one.
    return df.assign(cached=cached) if cached.notna().any() else df


def split_table(dls: "DataLoaders") -> SplitTable:
    """The split actually used (split.csv): ``path`` relative to the data folder, ``label``, ``split``."""
    return SplitTable.from_rows((path, label, name)
                                for name, ds in (("train", dls.train_ds), ("valid", dls.valid_ds))
                                for path, label in zip(ds.items["path"], ds.items["label"]))
