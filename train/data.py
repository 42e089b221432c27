"""From a folder of images to fastai DataLoaders, decoding with the runtime's own loader.

The folder is read by ``edge_infer.labelled`` (its three layouts: one folder per class,
``train/`` and ``valid/``, or ``labels.csv``), and images are opened by
``edge_infer.preprocess.load_image`` (EXIF applied, one RGB rule), so the network trains on
exactly the images and pixels the runtime will see. Training reads every image from the decoded
store (``train.store``, filled once) through ``train.loader.StoreDL``: validation items bit for
bit what the original file gives.

fastai is imported inside the functions that need it: listing a data folder (``find_items``,
used by ``verify`` and ``clean``) should not pay torch's few seconds of import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from edge_infer.labelled import read_labelled
from edge_infer.metadata import Preprocess
from edge_infer.preprocess import load_image
from export.run_folder import SplitTable

if TYPE_CHECKING:
    from fastai.vision.all import DataLoaders


def open_image(path: str | Path):  # no return annotation: fastcore would resolve it at import
    """fastai's item loader (a ``PILImage``), replaced by the runtime's; module-level so the
    learner pickles."""
    from fastai.vision.core import PILImage

    return PILImage(load_image(path))


def find_items(data: Path) -> tuple[pd.DataFrame, str]:
    """All labelled images under ``data`` (columns ``path``, relative, ``label``, ``is_valid``)
    and the layout's name (``edge_infer.labelled.LAYOUTS``); its ``DataError`` is a ``ValueError``."""
    folder = read_labelled(data)
    rows = [(i.path, i.label, pd.NA if i.is_valid is None else i.is_valid) for i in folder.items]
    return pd.DataFrame(rows, columns=["path", "label", "is_valid"]), folder.layout


def default_workers() -> int:
    """Processes that fill the decoded store (``train.store``) when ``--workers`` is not given:
    every core. Training itself needs none: a batch is one gather from the store."""
    return len(os.sched_getaffinity(0))


def make_dls(data: Path, pre: Preprocess, *, bs: int = 64, valid_pct: float = 0.2, seed: int = 42,
             augment: bool = True, num_workers: int | None = None, pin_memory: bool = False,
             store: Path | Literal[False] | None = None) -> "DataLoaders":
    """DataLoaders over ``data`` that resize exactly as ``pre`` says (fastai's ``Resize``).

    Augmentation (flips, small rotations/zoom/lighting) is applied to the training set only, on
    the batch; the validation set sees the same pipeline as the runtime. ``store``: the folder of
    decoded stores (``None``: ``train.store.default_store_dir()``); the loaders are then
    ``train.loader.StoreDL`` and ``num_workers`` processes fill the store (``None``: every core).
    ``False``: fastai's item pipeline, every image read from its file every epoch in
    ``num_workers`` DataLoader processes (the comparison ``benchmarks.train`` makes).
    """
    from fastai.vision.all import (
        CategoryBlock,
        ColReader,
        ColSplitter,
        DataBlock,
        IntToFloatTensor,
        PadMode,
        RandomSplitter,
        Resize,
        ResizeMethod,
        TransformBlock,
        aug_transforms,
    )

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
    workers = default_workers() if num_workers is None else num_workers
    dls = block.dataloaders(df, bs=bs, num_workers=0 if store is not False else workers,
                            path=data, pin_memory=pin_memory and store is False)
    return dls if store is False else _from_store(dls, data, pre, store, workers)


def _from_store(dls, data: Path, pre: Preprocess, root: Path | None, workers: int):
    """``dls`` with each loader replaced by a ``StoreDL`` over the same items and transforms.

    Python's ``random`` is put back as it was, and each new loader takes over the old one's
    seeded shuffling ``rng``, so the batches come in the order fastai's own loaders gave.
    """
    import random

    from .loader import StoreDL
    from .store import open_store

    state = random.getstate()
    loaders = []
    splits: list[Literal["train", "valid"]] = ["train", "valid"]
    for dl, split in zip(dls.loaders, splits, strict=True):
        items = dl.dataset.items
        store = open_store(data, list(items["path"]), pre, split, root=root, workers=workers)
        if store.decoded:
            print(f"decoded store: {store.decoded} of {len(store)} {split} images decoded now "
                  f"({store.layout.kind} {store.layout.shape[1]}x{store.layout.shape[0]}, {store.seconds:.1f} s) "
                  f"in {store.folder}")
        o2i = dl.dataset.vocab.o2i
        labels = np.array([o2i[label] for label in items["label"]], dtype=np.int64)
        new = dl.new(cls=StoreDL, store=store, labels=labels, pre=pre, num_workers=0, pin_memory=False)
        new.rng = dl.rng
        loaders.append(new)
    random.setstate(state)
    return type(dls)(*loaders, path=dls.path, device=dls.device)


def split_table(dls: "DataLoaders") -> SplitTable:
    """The split actually used (split.csv): ``path`` relative to the data folder, ``label``, ``split``."""
    return SplitTable.from_rows((path, label, name)
                                for name, ds in (("train", dls.train_ds), ("valid", dls.valid_ds))
                                for path, label in zip(ds.items["path"], ds.items["label"], strict=True))
