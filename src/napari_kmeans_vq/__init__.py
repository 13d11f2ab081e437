"""K-Means vector quantization of colour images.

The packages are layers, each importing only those before it: ``core`` (the engine, numpy
only), ``large`` (dask, zarr and multiscale inputs), ``io`` (files), then ``napari`` (the
only code that imports napari or Qt, loaded by napari through the manifest) and ``cli``.
Importing this package loads neither napari, Qt nor dask.
"""

from ._limits import MAX_COLORS, MAX_FIT_COLORS
from .core.bits import BitReport, bit_report
from .core.codebook import Codebook, FewColorsWarning
from .core.quantize import Quantization
from .core.tutorial import calculate_num_bits, compress_image, reconstruct_image
from .io import KVQData, KVQError, load, save
from .io.codebook import load_codebook, save_codebook
from .large import LazyQuantization, quantize
from .napari.layers import layer_data

__version__ = "0.1.0"

__all__ = [
    "MAX_COLORS",
    "MAX_FIT_COLORS",
    "BitReport",
    "Codebook",
    "FewColorsWarning",
    "KVQData",
    "KVQError",
    "LazyQuantization",
    "Quantization",
    "__version__",
    "bit_report",
    "calculate_num_bits",
    "compress_image",
    "layer_data",
    "load",
    "load_codebook",
    "quantize",
    "reconstruct_image",
    "save",
    "save_codebook",
]
