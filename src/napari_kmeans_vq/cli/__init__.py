"""The ``napari-kmeans-vq`` command.

``parser`` holds the options, ``commands`` runs each subcommand through the library, and
``render`` lays out what it prints. ``main`` is the console script's entry point.
"""

from .commands import CLIError, main
from .parser import build_parser

__all__ = ["CLIError", "build_parser", "main"]
