"""The command line (``lwdsl``): ``app`` holds the commands, ``run_cmd`` the ``run`` command,
``args`` the shared option parsing, ``explain`` and ``ops_table`` what they print."""

from .app import main

__all__ = ["main"]
