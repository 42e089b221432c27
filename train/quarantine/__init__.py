"""The one quarantine: every move of a user's file, journalled so it can be undone (``journal.py``).

Outside ``train/clean/`` because ``verify`` is not cleaning; it imports no torch, fastai or web
framework, so ``verify`` and the CLI stay light.
"""

from .journal import JOURNAL_NAME, QUARANTINE, Journal, UndoReport, free_name, new_batch

__all__ = ["JOURNAL_NAME", "QUARANTINE", "Journal", "UndoReport", "free_name", "new_batch"]
