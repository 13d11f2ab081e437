"""J, PSNR and the bit report of a fitted codebook: what every quantization reports."""

from __future__ import annotations

import math

from .._limits import peak_value
from .bits import bit_report, label_entropy_bits
from .codebook import Codebook


def fit_summary(codebook: Codebook, n_pixels: int, fitted_pixels: int, inertia=None, sizes=None):
    """J, PSNR and the bit report of a fitted codebook applied to ``n_pixels`` pixels.

    ``fitted_pixels`` is how many pixels the fit saw (fewer than ``n_pixels`` for a fit on
    a sample or a coarse level): J and the entropy are measured there. ``inertia`` and
    ``sizes``, when given, replace the fit's (labels changed after it).
    """
    inertia = codebook.inertia_ if inertia is None else inertia
    distortion = inertia / fitted_pixels
    channels = codebook.channels_
    if distortion == 0:
        psnr = math.inf
    elif math.isfinite(distortion):
        psnr = 10 * math.log10(peak_value(codebook.dtype_) ** 2 / (distortion / channels))
    else:  # colours near float64's limits: J overflows
        psnr = -math.inf
    sizes = codebook.cluster_sizes_ if sizes is None else sizes
    entropy = label_entropy_bits(sizes) * n_pixels / max(int(sizes.sum()), 1)
    report = bit_report(
        n_pixels,
        codebook.n_colors_,
        channels=channels,
        bits_per_channel=codebook.dtype_.itemsize * 8,
    ).with_entropy(entropy)
    return float(distortion), float(psnr), report


__all__ = ["fit_summary"]
