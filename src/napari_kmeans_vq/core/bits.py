"""Bit accounting for a K-colour image: what the raw image, the indices and the codebook cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from .validation import check_positive_int

__all__ = ["BitReport", "bit_report", "bits_per_index", "label_entropy_bits"]


def bits_per_index(n_colors: int) -> int:
    """Bits needed for one index into a codebook of ``n_colors`` entries: ``ceil(log2 K)``.

    A codebook of one colour needs no index at all, so ``K = 1`` gives 0.
    Computed exactly with integers (``(K - 1).bit_length()``), so no floating-point
    rounding can push ``log2`` of a power of two over the next integer.
    """
    n_colors = check_positive_int(n_colors, "n_colors")
    return (n_colors - 1).bit_length()


@dataclass(frozen=True)
class BitReport:
    """What storing an image as a K-colour codebook plus indices costs, in bits.

    Attributes
    ----------
    n_pixels : int
        Number of pixels N (colour vectors), not counting the colour axis.
    n_colors : int
        Codebook size K.
    channels : int
        Values per colour C (3 for RGB).
    bits_per_channel : int
        Bits per stored channel value (8 for uint8 images).
    bits_per_index : int
        ``ceil(log2 K)``; 0 when K = 1.
    original_bits : int
        The raw image: ``bits_per_channel * C * N`` (24N for 8-bit RGB).
    index_bits : int
        The indices at a fixed width: ``N * bits_per_index``.
    codebook_bits : int
        The codebook: ``bits_per_channel * C * K``.
    total_bits : int
        ``index_bits + codebook_bits``.
    ratio : float
        ``total_bits / original_bits``; below 1 means smaller than the raw image.
    saving : float
        ``1 - ratio``.
    bits_per_pixel : float
        ``total_bits / N``.
    entropy_bits : float or None
        N times the zero-order entropy of the labels: the least a coder that ignores where
        pixels are could spend on the indices. Filled by :func:`napari_kmeans_vq.quantize`.
    """

    n_pixels: int
    n_colors: int
    channels: int
    bits_per_channel: int
    bits_per_index: int
    original_bits: int
    index_bits: int
    codebook_bits: int
    total_bits: int
    ratio: float
    saving: float
    bits_per_pixel: float
    entropy_bits: float | None = None

    def with_entropy(self, entropy_bits: float) -> BitReport:
        """Return a copy with ``entropy_bits`` set."""
        return replace(self, entropy_bits=float(entropy_bits))

    def to_dict(self) -> dict:
        """The report as a plain, JSON-serialisable dict."""
        return asdict(self)

    def __str__(self) -> str:
        rows = [
            ("pixels", f"{self.n_pixels:,}"),
            ("colours (K)", f"{self.n_colors:,}"),
            ("original bits", f"{self.original_bits:,}"),
            ("index bits", f"{self.index_bits:,} ({self.bits_per_index} per pixel)"),
            ("codebook bits", f"{self.codebook_bits:,}"),
            ("total bits", f"{self.total_bits:,}"),
            ("ratio", f"{self.ratio:.4f} ({100 * self.ratio:.1f}%)"),
            ("saving", f"{100 * self.saving:.1f}%"),
        ]
        if self.entropy_bits is not None:
            rows.append(("entropy bound", f"{self.entropy_bits:,.0f} bits"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def bit_report(
    n_pixels: int, n_colors: int, channels: int = 3, bits_per_channel: int = 8
) -> BitReport:
    """Count the bits of an image stored as K codewords plus one index per pixel.

    Parameters
    ----------
    n_pixels : int
        Number of pixels N (>= 1).
    n_colors : int
        Codebook size K (>= 1).
    channels : int, default 3
        Values per colour.
    bits_per_channel : int, default 8
        Bits per stored value.

    Returns
    -------
    BitReport

    Examples
    --------
    The seed tutorial's worked example, a 100 x 100 RGB image at K = 16:

    >>> r = bit_report(100 * 100, 16)
    >>> r.index_bits, r.codebook_bits, r.total_bits
    (40000, 384, 40384)
    >>> round(r.ratio, 3)
    0.168
    """
    n_pixels = check_positive_int(n_pixels, "n_pixels")
    n_colors = check_positive_int(n_colors, "n_colors")
    channels = check_positive_int(channels, "channels")
    bits_per_channel = check_positive_int(bits_per_channel, "bits_per_channel")
    b = bits_per_index(n_colors)
    original = bits_per_channel * channels * n_pixels
    index = n_pixels * b
    codebook = bits_per_channel * channels * n_colors
    total = index + codebook
    return BitReport(
        n_pixels=n_pixels,
        n_colors=n_colors,
        channels=channels,
        bits_per_channel=bits_per_channel,
        bits_per_index=b,
        original_bits=original,
        index_bits=index,
        codebook_bits=codebook,
        total_bits=total,
        ratio=total / original,
        saving=1.0 - total / original,
        bits_per_pixel=total / n_pixels,
    )


def label_entropy_bits(counts: np.ndarray) -> float:
    """N times the zero-order (Shannon) entropy of labels with the given per-label counts."""
    counts = np.asarray(counts, dtype=np.float64)
    counts = counts[counts > 0]
    n = counts.sum()
    if n == 0:
        return 0.0
    p = counts / n
    return float(-(counts * np.log2(p)).sum())
