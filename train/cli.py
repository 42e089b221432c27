"""``python -m train``: the training side's commands, thin wrappers over the ``train.*`` functions.

Heavy imports (torch, fastai) happen inside the commands, so ``--help`` and ``doctor`` are quick.
Every expected problem (an ``edge_infer.errors.EdgeInferError``: ``TrainError``, ``CleanError``,
a broken image...) is a one-line ``Error: ...`` on stderr and exit status 1, as in every CLI of
this repository.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from edge_infer.cli import UserErrorGroup, option_group
from edge_infer.errors import EdgeInferError, ImageError
from edge_infer.metadata import PAD_MODES, RESIZE_METHODS
from export.train_config import ARCHS, TrainConfig

from .clean.cli import clean
from .errors import TrainError

DATA = click.Path(file_okay=False, path_type=Path)


class _Group(UserErrorGroup):
    """The runtime CLI's error rule for every train command, plus a hint for a broken image."""

    user_errors = (EdgeInferError, FileNotFoundError)  # TrainError and RunFolderError are the first

    def one_line(self, e: Exception) -> str:
        if isinstance(e, ImageError):  # a broken image met during training
            return f"{e}; run python -m train verify DATA to quarantine broken images"
        return str(e)


class LearningRate(click.ParamType):
    name = "auto|FLOAT"

    def convert(self, value, param, ctx):
        try:
            return "auto" if str(value).strip().lower() == "auto" else float(value)
        except ValueError:
            self.fail(f"{value!r} is not 'auto' or a number such as 1e-3", param, ctx)


def config_option(name: str, type=None, help: str | None = None):
    """The click option of ``TrainConfig`` field ``name`` (``type=bool``: ``--name/--no-name``), its
    default the dataclass's, so the CLI and the API cannot drift; the config checks the value."""
    flag = name.replace("_", "-")
    decl, type = (f"--{flag}/--no-{flag}", None) if type is bool else (f"--{flag}", type)
    return click.option(decl, name, type=type, default=getattr(TrainConfig(), name), show_default=True, help=help)


# The options that decide the DataLoaders and the learner: shared by fit and lr-find.
data_options = option_group(
    config_option("arch", click.Choice(ARCHS)),
    config_option("size", int, "Square input size in pixels."),
    config_option("resize", click.Choice(RESIZE_METHODS), "fastai's ResizeMethod: centre crop, squish, or pad."),
    config_option("pad_mode", click.Choice(PAD_MODES)),
    config_option("bs", int, "Batch size [default: 64 on the CPU; on a GPU 64..512 by its memory]."),
    config_option("workers", int, "Processes to fill the decoded store [default: all cores]; training runs none."),
    config_option("valid_pct", float, "Random validation share (folders layout only)."),
    config_option("seed", int),
    config_option("pretrained", bool, "Start from torchvision's ImageNet weights (downloaded once)."),
    config_option("weights", click.Path(dir_okay=False, path_type=Path),
                  "A local torchvision state dict for --arch (instead of downloading)."),
    config_option("augment", bool, "Flips, small rotations/zoom/lighting on training batches "
                                   "[default: on to fine-tune, off with --no-pretrained]."))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train an image classifier with fastai: verify data, find an LR, fit, diagnose, interpret."""
    quiet_fastai_import()


def quiet_fastai_import() -> None:
    """fastai's layers.py calls torch.jit.script at import; the deprecation is theirs to fix, and a
    warning on every command teaches users to ignore warnings. Only command lines (this one and
    ``python -m demo``) silence it; code that imports ``train`` sees it."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)


def require_folder(data: Path) -> None:
    """Refuse a missing DATA before torch and fastai are imported (that takes seconds)."""
    if not data.is_dir():
        raise TrainError(f"{data}: no such folder")


@cli.command()
@click.argument("data", type=DATA)
def verify(data: Path) -> None:
    """Decode every image in DATA; move broken ones to DATA/.quarantine (journalled, never deleted;
    python -m train clean --undo DATA puts them back)."""
    from .quarantine import JOURNAL_NAME, QUARANTINE
    from .verify import IMBALANCE
    from .verify import verify as run

    report = run(data)
    for q in report.quarantined:
        click.echo(f"quarantined {q.path}: {q.reason}", err=True)
    width = max((len(k) for k in report.counts), default=5)
    for label, n in report.counts.items():
        click.echo(f"{label:<{width}}  {n}")
    click.echo(f"checked {report.checked} images, {len(report.quarantined)} quarantined"
               + (f" (journal: {data / QUARANTINE / JOURNAL_NAME}; undo: python -m train clean "
                  f"--undo {data})" if report.quarantined else ""))
    if len(report.counts) > 1 and report.imbalance > IMBALANCE:
        big = max(report.counts, key=report.counts.__getitem__)
        small = min(report.counts, key=report.counts.__getitem__)
        click.echo(f"warning: classes are imbalanced: {big} has {report.counts[big]} images, "
                   f"{small} has {report.counts[small]} (more than {IMBALANCE:g}x)", err=True)


@cli.command()
@click.argument("urls_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dest", type=DATA, required=True, help="The class folder, e.g. DATA/grizzly.")
@click.option("--max", "max_images", type=click.IntRange(1), default=None,
              help="Stop after this many good images.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), default=10.0, show_default=True,
              help="Seconds per request.")
def download(urls_file: Path, dest: Path, max_images: int | None, timeout: float) -> None:
    """Fetch the image URLs in URLS_FILE (one per line) into DEST, skipping duplicates, then verify."""
    from .download import download as run

    r = run(urls_file, dest, max_images=max_images, timeout=timeout)
    for q in r.quarantined:
        click.echo(f"quarantined {q.path}: {q.reason}", err=True)
    click.echo(f"{len(r.saved)} new images in {dest}; skipped {r.duplicate_urls} duplicate URLs and "
               f"{r.duplicate_content} duplicate files; {len(r.failed)} failed, "
               f"{len(r.quarantined)} quarantined")
    if not r.saved:
        sys.exit(1)


@cli.command("lr-find")
@click.argument("data", type=DATA)
@data_options
@click.option("--out", type=DATA, default=Path("runs/lr-find"), show_default=True,
              help="Folder for lr_find.png.")
def lr_find(data: Path, out: Path, **options) -> None:
    """Run fastai's learning-rate finder on DATA; save lr_find.png and print the suggestion."""
    config = TrainConfig(**options)
    require_folder(data)
    from .lr import find_lr

    lr, rule = find_lr(data, out, config)
    click.echo(f"suggested learning rate ({rule}): {lr:.2e}   plot: {out / 'lr_find.png'}")


@cli.command()
@click.argument("data", type=DATA)
@click.option("--out", type=DATA, required=True, help="The run folder to create (docs/run-folder.md).")
@data_options
@config_option("epochs", int, "Epochs of the whole network (after unfreezing).")
@config_option("freeze_epochs", int, "Epochs of the head alone first (pretrained only).")
@config_option("lr", LearningRate(), "'auto' runs lr_find and takes its valley (to fine-tune) or slide (from scratch).")
def fit(data: Path, out: Path, **options) -> None:
    """Train on the images in DATA and write the run folder OUT."""
    config = TrainConfig(**options)
    require_folder(data)
    from .fit import fit as run

    run(data, out, config)


@cli.command()
@click.argument("run", type=DATA)
def doctor(run: Path) -> None:
    """Read RUN/history.csv with the course's rules; write doctor.md/json and print the advice."""
    from .doctor import write_report

    try:
        diagnosis = write_report(run)
    except ValueError as e:  # an unreadable history.csv: the message names the file
        raise click.ClickException(str(e)) from None
    click.echo(diagnosis.to_markdown())


@cli.command()
@click.argument("run", type=DATA)
@click.option("--k", type=click.IntRange(1), default=9, show_default=True,
              help="Images in top_losses.png.")
def interpret(run: Path, k: int) -> None:
    """Confusion matrix, most confused pairs and top losses (both splits) of the model in RUN."""
    from .interpret import interpret as run_interpret

    r = run_interpret(run, k=k)
    click.echo(f"valid error rate {r.valid_error_rate:.4f}; wrote confusion_matrix.png, "
               f"most_confused.csv, top_losses.png, top_losses.csv in {run}")
    if r.missing:
        click.echo(f"note: {r.missing} images of split.csv are no longer in the data folder", err=True)
    for row in r.most_confused.head(5).itertuples():
        click.echo(f"  {row.actual} -> {row.predicted}: {row.count}")


@cli.command("make-data")
@click.argument("dataset", type=click.Choice(("fashion-mnist", "digits", "shapes")))
@click.argument("dest", type=DATA)
@click.option("--per-class", type=click.IntRange(1), default=None, help="Images per class (default: all).")
@click.option("--split", type=click.Choice(("train", "test")), default="train", show_default=True,
              help="Which source file (fashion-mnist), part (digits: first 80% / last 20%) or seed (shapes).")
def make_data(dataset: str, dest: Path, per_class: int | None, split: str) -> None:
    """Write a real dataset, offline, as DEST/<label>/<i>.png (for tests and the demo)."""
    from .datasets import make_data as run

    counts = run(dataset, dest, per_class=per_class, split=split)
    click.echo(f"wrote {sum(counts.values())} images in {len(counts)} classes to {dest}")


cli.add_command(clean)


def main() -> None:
    cli(prog_name="python -m train")
