"""The engine, in memory: validation, colour spaces, histogram, k-means, codebook, bits.

numpy only (with the compiled kernels); nothing here imports another part of the package.
"""

from .bits import BitReport, bit_report
from .codebook import Codebook, FewColorsWarning
from .quantize import Quantization, quantize

__all__ = ["BitReport", "Codebook", "FewColorsWarning", "Quantization", "bit_report", "quantize"]
