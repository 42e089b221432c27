"""The errors ``python -m export`` raises on purpose; each message is one line naming the file.

``ExportError`` is a problem with the input (a run folder that is missing or incomplete, an
image that no longer decodes); ``CheckFailed`` is a model that was made but did not pass a check
(a parity breach, the int8 gate). The CLI prints either as ``Error: ...`` and exits 1.
"""

from __future__ import annotations

__all__ = ["ExportError", "CheckFailed"]


class ExportError(Exception):
    """A problem with the run folder or the options, in one line that names the file."""


class CheckFailed(ExportError):
    """A parity tier or the int8 gate failed; the numbers are in ``parity.json``."""
