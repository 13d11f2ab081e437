"""What the file formats share: the decoded data, the error type and the input checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._limits import MAX_COLORS, index_dtype

__all__ = [
    "KVQData",
    "KVQError",
    "check_labels_palette",
    "index_dtype",
]


class KVQError(ValueError):
    """A file cannot be read as what it should be: a damaged or foreign ``.kvq``, PNG,
    TIFF, ``.npy`` or zarr input, one that declares more than the limits allow, or a path
    that is not a regular file (a FIFO, a device).

    The only error the readers of :mod:`napari_kmeans_vq.io` raise for a bad file, whatever
    its bytes (apart from ``OSError`` when the file cannot be opened at all, such as a
    missing file or a directory). It derives from ``ValueError`` so that
    ``except ValueError`` catches it too.
    """


@dataclass(frozen=True, eq=False)
class KVQData:
    """Codeword indices and a palette, as read from a ``.kvq`` file, an indexed PNG or a
    palette TIFF, with the class names when the file records them.

    Attributes
    ----------
    labels : ndarray of uint8 or uint16
        Codeword index per pixel, ``0 .. K-1``, in the image's shape without its colour axis;
        uint8 when K <= 256, else uint16 (as :func:`napari_kmeans_vq.quantize` makes them).
    palette : ndarray, shape (K, C)
        The codewords in the image's dtype.
    scalar : bool
        True when the image had no colour axis (``channel_axis=None``): the reconstruction
        then has the labels' shape instead of ``labels.shape + (C,)``.
    format : {"kvq", "png", "tiff"}
        The file's format.
    version : int
        Format version (1, 2 or 3 for ``.kvq``; 0 for PNG and TIFF).
    deflated : bool
        Whether the index payload was deflated.
    file_size : int or None
        Bytes of the file (None when decoded from memory without a file).
    payload_bytes : int
        Bytes of the index payload as stored (after deflate when deflated; the IDAT bytes
        of a PNG).
    bit_depth : int
        Bits per stored index: ``ceil(log2 K)`` for a packed ``.kvq``, 8 or 16 for one with
        byte-aligned indices; 1, 2, 4 or 8 for PNG.
    index_layout : {"packed", "bytes"}
        ``.kvq``: indices packed at ``ceil(log2 K)`` bits, or whole bytes (a version 2 file
        with flag bit 2). PNG scanlines count as ``"packed"``.
    names : list of str or None
        The class names the file records, one per codeword (``names[i]`` for codeword
        ``i``, label ``i + 1``), or None when it records none (files are never given
        invented names: a class table shows ``"class 1"`` .. ``"class K"`` for those).
    extra : dict
        Format details: ``extra["metadata"]``, the whole JSON object of a ``.kvq``
        metadata section or a PNG's text chunk (keys this package does not know kept).
    """

    labels: np.ndarray
    palette: np.ndarray
    scalar: bool = False
    format: str = "kvq"
    version: int = 1
    deflated: bool = False
    file_size: int | None = None
    payload_bytes: int = 0
    bit_depth: int = 0
    index_layout: str = "packed"
    names: list | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_colors(self) -> int:
        """K, the palette's length."""
        return int(self.palette.shape[0])

    @property
    def channels(self) -> int:
        """C, values per codeword."""
        return int(self.palette.shape[1])

    @property
    def dtype(self) -> np.dtype:
        """The image's dtype (the palette's)."""
        return self.palette.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The image's shape: the labels' shape plus the colour axis unless ``scalar``."""
        if self.scalar:
            return tuple(self.labels.shape)
        return (*self.labels.shape, self.channels)

    @property
    def n_pixels(self) -> int:
        """N, the number of pixels (colour vectors)."""
        return int(self.labels.size)

    @property
    def bits_per_index(self) -> int:
        """``ceil(log2 K)``, 0 for K = 1: the seed tutorial's index width."""
        return (self.n_colors - 1).bit_length()

    @property
    def reconstruction(self) -> np.ndarray:
        """The decoded image, ``palette[labels]`` (a new array each time)."""
        image = self.palette[self.labels]
        return image[..., 0] if self.scalar else image

    @property
    def report(self):
        """The formula bit count (:class:`napari_kmeans_vq.BitReport`) of this image."""
        from ..core.bits import bit_report

        return bit_report(
            self.n_pixels,
            self.n_colors,
            channels=self.channels,
            bits_per_channel=self.dtype.itemsize * 8,
        )

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no pixel data; the palette as lists)."""
        return {
            "format": self.format,
            "version": self.version,
            "shape": list(self.shape),
            "labels_shape": list(self.labels.shape),
            "dtype": str(self.dtype),
            "channels": self.channels,
            "scalar": self.scalar,
            "n_colors": self.n_colors,
            "n_pixels": self.n_pixels,
            "bits_per_index": self.bits_per_index,
            "bit_depth": self.bit_depth,
            "index_layout": self.index_layout,
            "deflated": self.deflated,
            "payload_bytes": self.payload_bytes,
            "file_size": self.file_size,
            "report": self.report.to_dict(),
            "palette": self.palette.tolist(),
            "names": None if self.names is None else list(self.names),
        }


def check_labels_palette(labels, palette) -> tuple[np.ndarray, np.ndarray]:
    """Validate codeword indices and a palette for writing; return them as arrays.

    Raises
    ------
    TypeError
        ``labels`` is not an integer array, or ``palette`` is not numeric.
    ValueError
        ``palette`` is not ``(K, C)`` with 1 <= K <= 65,536 and 1 <= C <= 256, ``labels`` is
        empty, or an index is outside ``0 .. K-1``.
    """
    palette = np.asarray(palette)
    if palette.ndim == 1:
        palette = palette[:, None]
    if palette.dtype.kind not in "uif":
        raise TypeError(
            f"palette must be an unsigned, signed integer or float array, got dtype "
            f"{palette.dtype}"
        )
    if (
        palette.ndim != 2
        or not 1 <= palette.shape[0] <= MAX_COLORS
        or not 1 <= palette.shape[1] <= 256
    ):
        raise ValueError(
            f"palette must have shape (K, C) with 1 <= K <= {MAX_COLORS} and 1 <= C <= 256, got "
            f"{palette.shape}"
        )
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui":
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.ndim == 0 or labels.size == 0:
        raise ValueError(
            f"labels must be a non-empty array with at least one axis, got shape {labels.shape}"
        )
    k = palette.shape[0]
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= k:
        raise ValueError(
            f"labels must be codeword indices 0 .. {k - 1} for a palette of {k} colours, got "
            f"values from {low} to {high}"
        )
    return labels, palette


def fail(message: str, source) -> KVQError:
    """A KVQError whose message names the file (``source``) when it is known."""
    where = f"{source}: " if source else ""
    return KVQError(f"{where}{message}")
