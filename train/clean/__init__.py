"""``python -m train clean RUN``: look at the images a run got most wrong, and fix the data.

The fast.ai "clean the data" step as a tool. A page served on loopback (``app.py`` on
Starlette, run by uvicorn in ``server.py``; ``static/``) lists the run's images highest loss
first (``ranking.py``) and the data folder's exact and near duplicates (``dupes.py``); each
image can be kept, relabelled or deleted, and "apply" sends every decision at once.
``--export``/``--apply`` do the same through a CSV. Nothing is lost: every move goes through the
one journal (``train/quarantine/journal.py``), and ``--undo`` puts everything back.
"""

from ..errors import CleanError
from ..quarantine import QUARANTINE, Journal, UndoReport
from .decisions import ApplyReport, Decision, apply_decisions, read_decisions_csv
from .ranking import Item, load_items

__all__ = ["ApplyReport", "CleanError", "Decision", "Item", "Journal", "QUARANTINE",
           "UndoReport", "apply_decisions", "load_items", "read_decisions_csv"]
