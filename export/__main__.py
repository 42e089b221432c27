"""``python -m export RUN --out model.onnx``; see ``export.cli``."""

from .cli import main

main()
