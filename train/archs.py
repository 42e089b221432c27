"""The architectures ``fit`` and ``lr-find`` offer, written once.

A module of its own, without torch, so that ``python -m train --help`` can build its
``--arch`` choices in a fraction of a second; ``train.learner`` (which needs torch) imports the
same tuple to build the model.
"""

from __future__ import annotations

__all__ = ["ARCHS"]

# torchvision's ResNets: fastai knows how to cut and split them, and they export to ONNX cleanly.
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
