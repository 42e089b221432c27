"""``python -m demo``: see demo/pipeline.py."""

from demo.pipeline import main

main()
