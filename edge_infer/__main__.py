"""``python -m edge_infer``: the same command as the ``edge-infer`` script."""

from .cli import main

if __name__ == "__main__":
    main()
