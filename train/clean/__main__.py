"""``python -m train.clean RUN``: the same command as ``python -m train clean RUN``."""

from .cli import clean

clean(prog_name="python -m train clean")
