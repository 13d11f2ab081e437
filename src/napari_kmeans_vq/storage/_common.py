"""What both file formats share: the decoded data, the error type, input checks, atomic writes."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation

__all__ = [
    "KVQData",
    "KVQError",
    "atomic_write",
    "check_labels_palette",
    "index_dtype",
]


class KVQError(ValueError):
    """A file is not a valid ``.kvq`` container or indexed PNG, or cannot be read as one.

    The only error :func:`napari_kmeans_vq.storage.load` raises for a bad file (apart from
    ``OSError`` when the file cannot be opened at all, such as a missing file). It derives
    from ``ValueError`` so that ``except ValueError`` catches it too.
    """


def index_dtype(n_colors: int) -> np.dtype:
    """The engine's label dtype for K colours: uint8 up to 256, uint16 up to 65,536."""
    return np.dtype(np.uint8) if n_colors <= 256 else np.dtype(np.uint16)


@dataclass(frozen=True, eq=False)
class KVQData:
    """Codeword indices and a palette, as read from a ``.kvq`` file or an indexed PNG.

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
    format : {"kvq", "png"}
        The file's format.
    version : int
        Format version (1 or 2 for ``.kvq``; 0 for PNG).
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
        from ..bits import bit_report

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
    if palette.ndim != 2 or not 1 <= palette.shape[0] <= 65536 or not 1 <= palette.shape[1] <= 256:
        raise ValueError(
            "palette must have shape (K, C) with 1 <= K <= 65536 and 1 <= C <= 256, got "
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


def atomic_write(path, data, *, overwrite: bool = True) -> Path:
    """Write bytes to ``path`` so that it either appears complete or not at all.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    temporary file is renamed over ``path`` (an atomic step on POSIX and Windows). On any
    error, including ``KeyboardInterrupt``, the temporary file is removed and ``path`` is
    left as it was.

    Parameters
    ----------
    path : str or Path
    data : bytes-like or iterable of bytes-like
        The file's content, in pieces if an iterable.
    overwrite : bool, default True
        When False, an existing ``path`` raises ``FileExistsError``.

    Returns
    -------
    Path
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    pieces = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    # O_EXCL with a random name, mode 0o666 so the process umask applies as for open().
    for _ in range(100):
        tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666)
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
        break
    else:  # pragma: no cover
        raise FileExistsError(f"could not create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in pieces:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def fail(message: str, source) -> KVQError:
    """A KVQError whose message names the file (``source``) when it is known."""
    where = f"{source}: " if source else ""
    return KVQError(f"{where}{message}")
