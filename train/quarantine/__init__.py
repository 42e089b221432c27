"""The one quarantine: every move of a user's file, journalled so that it can be undone.

``verify`` and ``download`` move images that do not decode, and ``clean`` deletes and relabels;
all of them move files through ``Journal`` (``journal.py``), which writes each move to
``DATA/.quarantine/journal.jsonl`` before making it, and ``python -m train clean --undo DATA``
puts back whatever any of them moved. It lives outside ``train/clean/`` because ``verify``
is not cleaning, and it imports no torch, fastai or web framework, so ``verify`` and the CLI
stay light. ``records.py`` reads the journal, a damaged line costing only itself.
"""

from .journal import JOURNAL_NAME, QUARANTINE, Journal, UndoReport, free_name, new_batch

__all__ = ["JOURNAL_NAME", "QUARANTINE", "Journal", "UndoReport", "free_name", "new_batch"]
