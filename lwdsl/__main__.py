"""``python -m lwdsl``: the ``lwdsl`` command, as launchers start it (``torchrun ... -m lwdsl run
...``); ``python -X importtime -m lwdsl check FILE`` shows what a command's start-up imports."""

from .cli.app import main

if __name__ == "__main__":
    main()
