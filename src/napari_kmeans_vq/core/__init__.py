"""The engine, in memory: validation, colour spaces, histogram, k-means, codebook, bits.

numpy and the compiled kernels (``_kmeans``, ``_colors``: Cython with OpenMP); nothing here
imports another part of the package. :func:`engine_info` says how the kernels were built.
"""

from ._threads import engine_info
from .bits import BitReport, bit_report
from .codebook import Codebook, FewColorsWarning
from .quantize import Quantization, quantize

__all__ = [
    "BitReport",
    "Codebook",
    "FewColorsWarning",
    "Quantization",
    "bit_report",
    "engine_info",
    "quantize",
]
