"""train: fine-tune an image classifier on a folder of images with fastai (``python -m train``).

Needs the ``train`` dependency group (pyproject.toml) (torch, torchvision, fastai). Writes a run folder (docs/run-folder.md)
that ``export`` and ``train clean`` read.
"""
