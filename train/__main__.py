"""``python -m train``: see train/cli.py."""

from train.cli import main

main()
