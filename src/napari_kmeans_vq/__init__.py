"""K-Means vector quantization of colour images.

The library (this package) needs only numpy and scipy at import; napari and Qt are used
only by :mod:`napari_kmeans_vq.plugin`, which napari loads through the manifest.
"""

from .bits import BitReport, bit_report
from .codebook import Codebook, FewColorsWarning
from .layers import layer_data
from .quantize import Quantization, quantize
from .storage import KVQData, KVQError, load, save
from .tutorial import calculate_num_bits, compress_image, reconstruct_image

__version__ = "0.1.0"

__all__ = [
    "BitReport",
    "Codebook",
    "FewColorsWarning",
    "KVQData",
    "KVQError",
    "Quantization",
    "__version__",
    "bit_report",
    "calculate_num_bits",
    "compress_image",
    "layer_data",
    "load",
    "quantize",
    "reconstruct_image",
    "save",
]
