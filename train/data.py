"""From a folder of images to fastai DataLoaders, decoding with the runtime's own loader.

Three layouts are understood (``find_items``):

* one folder per class: ``DATA/<label>/*.jpg`` (split at random, ``valid_pct``, ``seed``);
* ``DATA/train/<label>/...`` and ``DATA/valid/<label>/...`` (the split is given);
* ``DATA/labels.csv`` with columns ``path,label`` and optionally ``is_valid`` (paths relative
  to DATA).

Images are opened by ``edge_infer.preprocess.load_image`` (EXIF applied, one RGB rule), so the
network trains on exactly the pixels the runtime will give it. Hidden folders (``.quarantine``)
are skipped.

fastai is imported inside the functions that need it: listing a data folder (``find_items``,
used by ``verify`` and ``clean``) should not pay torch's few seconds of import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from edge_infer.labelled import read_labelled
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import load_image

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


def make_dls(data: Path, pre: Preprocess, *, bs: int = 64, valid_pct: float = 0.2, seed: int = 42,
             augment: bool = True, num_workers: int = 0, device=None) -> "DataLoaders":
    """DataLoaders over ``data`` that resize exactly as ``pre`` says (fastai's ``Resize``).

    Augmentation (flips, small rotations/zoom/lighting) is applied to the training set only, on
    the batch; the validation set sees the same pipeline as the runtime.
    """
    from fastai.vision.all import (CategoryBlock, ColReader, ColSplitter, DataBlock,
                                   IntToFloatTensor, PadMode, RandomSplitter, Resize, ResizeMethod,
                                   TransformBlock, aug_transforms)

    resize = {"crop": ResizeMethod.Crop, "squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad}
    pad = {"zeros": PadMode.Zeros, "border": PadMode.Border, "reflection": PadMode.Reflection}
    data = Path(data).resolve()
    df, _ = find_items(data)
    given = df["is_valid"].notna().all()
    splitter = ColSplitter("is_valid") if given else RandomSplitter(valid_pct=valid_pct, seed=seed)
    if given:
        df = df.assign(is_valid=df["is_valid"].astype(bool))
    block = DataBlock(
        blocks=(TransformBlock(type_tfms=open_image, batch_tfms=IntToFloatTensor), CategoryBlock),
        get_x=ColReader("path", pref=f"{data}/"),
        get_y=ColReader("label"),
        splitter=splitter,
        item_tfms=Resize(pre.size, method=resize[pre.resize], pad_mode=pad[pre.pad_mode]),
        batch_tfms=aug_transforms(size=None) if augment else None,
    )
    return block.dataloaders(df, bs=bs, num_workers=num_workers, device=device, path=data)


def split_table(dls: "DataLoaders") -> pd.DataFrame:
    """The split actually used: ``path`` (relative to the data folder), ``label``, ``split``."""
    parts = [ds.items.assign(split=name)[["path", "label", "split"]]
             for name, ds in (("train", dls.train_ds), ("valid", dls.valid_ds))]
    return pd.concat(parts, ignore_index=True)
