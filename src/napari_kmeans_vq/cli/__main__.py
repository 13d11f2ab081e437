"""``python -m napari_kmeans_vq.cli``: the console script without its launcher."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
