"""``python -m lwdsl``: the command line, as launchers start it (``torchrun ... -m lwdsl run ...``)."""

from .cli import main

if __name__ == "__main__":
    main()
