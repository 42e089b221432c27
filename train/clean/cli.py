"""``python -m train clean RUN``: the cleaning page, or the same decisions through a CSV."""

from __future__ import annotations

from pathlib import Path

import click

from edge_infer.errors import EdgeInferError
from export.run_folder import RunFolder

from ..errors import CleanError
from ..quarantine import QUARANTINE, Journal
from .decisions import apply_decisions, export_ranking, read_decisions_csv
from .ranking import load_items

EPILOG = """\b
Examples:
  python -m train clean runs/pets                        # open the printed URL
  python -m train clean runs/pets --export decisions.csv # edit action/label, then:
  python -m train clean runs/pets --apply decisions.csv
  python -m train clean runs/pets --undo
  python -m train clean data/pets --undo                 # the data folder works too

Nothing is deleted: "delete" moves a file to DATA/.quarantine/<path>, and every move (clean's,
and verify's and download's quarantine) is journalled in DATA/.quarantine/journal.jsonl before
it happens; --undo reverses them all.
"""


@click.command("clean", epilog=EPILOG)
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback address to serve the page on (127.0.0.1, ::1 or localhost).")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to serve on; 0 picks a free one.")
@click.option("--top", type=click.IntRange(min=1), default=None,
              help="Only the N images with the highest loss (default: all).")
@click.option("--export", "export_csv", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the ranked list (path,label,predicted,loss,probability,split,action) "
                   "and exit.")
@click.option("--apply", "apply_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Carry out the decisions in a CSV with columns path,action,label "
                   "(action: keep, relabel or delete) and exit.")
@click.option("--undo", is_flag=True,
              help="Put back everything the journal lists, newest first (verify's and download's "
                   "moves too); RUN may then be the data folder itself.")
def clean(run: Path, host: str, port: int, top: int | None, export_csv: Path | None,
          apply_csv: Path | None, undo: bool) -> None:
    """Review the images of a run by loss and duplicates; relabel or quarantine them.

    RUN is a run folder written by `python -m train fit` (train.json; top_losses.csv from
    `python -m train interpret` gives the ranking). With --undo it may be the data folder.
    """
    chosen = [name for name, on in (("--export", export_csv), ("--apply", apply_csv),
                                    ("--undo", undo)) if on]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)}: choose one")
    try:
        if undo:
            _undo(Journal(_data_to_undo(run)))
            return
        r = RunFolder.load(run)
        for line in Journal(r.data).read().damaged:  # the ranking cannot follow moves they made
            click.echo(f"warning: {line}", err=True)
        if export_csv:
            items = load_items(r, top=top)
            export_ranking(items, export_csv)
            click.echo(f"wrote {len(items)} rows to {export_csv}; set action (keep, relabel, "
                       f"delete) and label, then: --apply {export_csv}")
        elif apply_csv:
            report = apply_decisions(r, read_decisions_csv(apply_csv))
            for line in report.relabelled + report.deleted:
                click.echo(f"  {line}")
            click.echo(report.summary())
        else:
            _serve_page()(r, host=host, port=port, top=top)
    except (EdgeInferError, OSError) as e:  # CleanError and RunFolderError are ones
        raise click.ClickException(str(e)) from None


def _serve_page():
    """The page's ``serve``, imported only when used (uvicorn, Starlette)."""
    try:
        from .server import serve
    except ImportError as e:  # a venv made before the train group needed them
        raise click.ClickException(f"the clean page needs {e.name}: pip install --group train "
                                   "(or use --export/--apply)") from None
    return serve


def _data_to_undo(folder: Path) -> Path:
    """The data folder whose journal ``--undo`` reads: a run folder's data (its train.json says
    which), or the folder itself when it holds a quarantine (``verify`` runs before any run)."""
    if (folder / "train.json").is_file():
        return RunFolder.load(folder).data
    if (folder / QUARANTINE).is_dir():
        return folder
    raise CleanError(f"{folder}: neither a run folder (no train.json) nor a data folder with a "
                     f"{QUARANTINE}/ folder; nothing to undo")


def _undo(journal: Journal) -> None:
    report = journal.undo()
    for line in report.restored:
        click.echo(f"  restored {line}")
    for line in report.notes:
        click.echo(f"  note: {line}", err=True)
    click.echo(f"undo: {len(report.restored)} restored; journal: {journal.path}")
    if report.skipped:
        for line in report.skipped:
            click.echo(f"  not restored: {line}", err=True)
        raise click.ClickException(f"{len(report.skipped)} could not be restored (listed above); "
                                   "sort them out and run --undo again")
