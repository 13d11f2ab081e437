"""The napari-kmeans-vq command."""

from .commands import main

__all__ = ["main"]
