"""The one error ``python -m train`` raises on purpose: a problem with the user's input.

Its message is a single line that names the file or option and what to change, so the CLI
prints it as-is (``Error: ...``) and exits 1, while bugs keep their traceback.
"""

from __future__ import annotations

__all__ = ["TrainError"]


class TrainError(ValueError):
    """Bad data, a bad option, or a missing resource (pretrained weights offline)."""
