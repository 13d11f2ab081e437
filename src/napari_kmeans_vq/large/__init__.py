"""Images larger than memory: dask, zarr and multiscale inputs, fitted and encoded by block.

Depends on :mod:`napari_kmeans_vq.core` (through ``Codebook.fit_histogram``), never the
reverse. dask and zarr are imported only when needed (``pip install napari-kmeans-vq[large]``).
"""

from .fit import color_histogram, fit_chunked, fit_codebook, sample_pixels
from .inputs import as_dask, is_lazy_input, open_image
from .lazy import LabelTable, LazyQuantization, decode_lazy, encode_lazy, quantize, quantize_lazy
from .progress import Cancelled, dask_progress

__all__ = [
    "Cancelled",
    "LabelTable",
    "LazyQuantization",
    "as_dask",
    "color_histogram",
    "dask_progress",
    "decode_lazy",
    "encode_lazy",
    "fit_chunked",
    "fit_codebook",
    "is_lazy_input",
    "open_image",
    "quantize",
    "quantize_lazy",
    "sample_pixels",
]
