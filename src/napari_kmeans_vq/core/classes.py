"""The class table of a segmentation: one row per class, with its area and its stains.

Each codeword is a class. A row gives its label (codeword + 1, as napari's labels layer
and the OME-Zarr labels number them), name, colour, pixels, share of the pixels segmented
(the masked area, when there is a mask), area in physical units when the pixel size is
known, and, for the stain spaces, the class's mean amount of each stain over its pixels.
Straight after k-means those means are the centroids (k-means centroids are the means of
their members); once labels change after the fit (``min_region`` clean-up, merged
classes), :func:`class_means` measures them again from the image's pixels of each label
actually produced, so that the table describes those labels.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from .._limits import peak_value
from .colorspace import STAIN_SPACES, palette_rgba, stain_space, to_space
from .kmeans import cluster_sums
from .validation import check_image

#: Pixels converted at a time by :func:`class_means` (bounds its temporary arrays).
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ClassTable:
    """Rows of per-class figures (see :func:`class_table`); ``columns`` names them."""

    columns: tuple[str, ...]
    rows: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, name: str) -> list:
        """One column's values, in row order."""
        return [row[name] for row in self.rows]

    def to_csv(self, path=None) -> str:
        """The table as CSV text (header first); also written to ``path`` when given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        text = buffer.getvalue()
        if path is not None:
            from pathlib import Path

            Path(path).write_text(text)
        return text

    def __str__(self) -> str:
        widths = {c: max(len(c), *(len(_cell(r[c])) for r in self.rows)) for c in self.columns}
        lines = ["  ".join(c.rjust(widths[c]) for c in self.columns)]
        lines += ["  ".join(_cell(r[c]).rjust(widths[c]) for c in self.columns) for r in self.rows]
        return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def class_means(
    image,
    labels,
    n_colors: int,
    *,
    color_space: str = "rgb",
    stain_vectors=None,
    mask=None,
    channel_axis: int | None = -1,
    channels: int | None = None,
    scale=1.0,
    fallback=None,
    n_threads: int | None = None,
) -> np.ndarray:
    """The mean of each label's pixels in a colour space: the centroids of the labels given.

    Parameters
    ----------
    image : array, shape (..., C)
        The image that was segmented (in its own dtype).
    labels : integer array, the image's shape without its colour axis
        Codeword index ``0 .. n_colors - 1`` of each pixel.
    n_colors : int
        K.
    color_space : str, default "rgb"
        Any colour space of :func:`napari_kmeans_vq.quantize`; for a stain space the
        means are the mean amounts of each stain (optical density along its vector).
    stain_vectors : optional
        The stains of ``"stains"`` (or replacing the standard ones), as for ``quantize``.
    mask : bool array of ``labels.shape``, optional
        Only these pixels count (the segmented area).
    channel_axis : int or None, default -1
        Where ``image``'s colour axis is (None: a one-channel image without one).
    channels : int, optional
        Use only the first ``channels`` channels (3 for RGBA with alpha ignored).
    scale : float or array (D,), default 1.0
        Multiplies the points, as a codebook's ``space_scale_`` does (to compare with its
        ``centroids_``).
    fallback : array (K, D), optional
        The row for a label with no pixel (its codeword, say); default NaN.
    n_threads : int, optional
        Threads for the sums (default: the cores the process may use).

    Returns
    -------
    ndarray, shape (K, D), float64
    """
    arr = check_image(image, channel_axis=channel_axis)
    labels = np.asarray(labels)
    if labels.shape != arr.shape[:-1]:
        raise ValueError(
            f"labels: expected the image's shape without its colour axis, {arr.shape[:-1]}, "
            f"got {labels.shape}."
        )
    if labels.dtype.kind not in "ui":
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}.")
    k = int(n_colors)
    c = arr.shape[-1] if channels is None else int(channels)
    space = color_space.lower()
    pixels = arr.reshape(-1, arr.shape[-1])
    flat = labels.reshape(-1)
    inside = None
    if mask is not None:
        inside = np.asarray(mask, dtype=bool)
        if inside.shape != labels.shape:
            raise ValueError(f"mask: expected shape {labels.shape}, got {inside.shape}.")
        inside = inside.reshape(-1)
    peak = peak_value(arr.dtype)
    sums = None
    counts = np.zeros(k, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        lab = flat[start : start + _CHUNK]
        colors = pixels[start : start + _CHUNK, :c]
        if inside is not None:
            keep = inside[start : start + _CHUNK]
            lab, colors = lab[keep], colors[keep]
        if lab.size and int(lab.max()) >= k:
            raise ValueError(f"labels: values must be below n_colors = {k}.")
        with np.errstate(all="ignore"):
            points = to_space(colors, space, peak, stain_vectors)
        part, mass = cluster_sums(points, None, lab, k, n_threads)
        sums = part if sums is None else sums + part
        counts += mass.astype(np.int64)
    if sums is None:  # an empty image cannot be checked; keep the shape right
        sums = np.zeros((k, c), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, np.newaxis] * np.asarray(scale, dtype=np.float64)
    empty = counts == 0
    if empty.any():
        means[empty] = np.nan if fallback is None else np.asarray(fallback)[empty]
    return means


def label_centroids(
    codebook, image, labels, mask=None, n_threads=None, *, channel_axis=...
) -> np.ndarray:
    """A fitted codebook's centroids measured again for labels that changed after the fit.

    The mean of each label's pixels in the codebook's clustering space (scaled as its
    ``centroids_`` are), with the codeword's own centroid for a label left with no pixel:
    what ``Quantization.centroids`` should hold after ``min_region`` clean-up, so that the
    class table's mean stains and merged classes describe the labels produced.
    ``image``'s colour axis is ``channel_axis`` (default: the codebook's).
    """
    axis = codebook.channel_axis if channel_axis is ... else channel_axis
    arr = check_image(image, channel_axis=axis)
    return class_means(
        arr,
        labels,
        codebook.n_colors_,
        color_space=codebook.color_space,
        stain_vectors=codebook.stain_vectors,
        mask=mask,
        channel_axis=-1,
        channels=codebook.clustered_channels(arr.shape[-1]),
        scale=getattr(codebook, "space_scale_", 1.0),
        fallback=codebook.centroids_,
        n_threads=codebook.n_threads if n_threads is None else n_threads,
    )


def class_table(
    palette: np.ndarray,
    counts: np.ndarray,
    *,
    names=None,
    pixel_size=None,
    unit: str = "um",
    color_space: str = "rgb",
    centroids: np.ndarray | None = None,
    stain_vectors=None,
    image=None,
    labels=None,
    mask=None,
    channel_axis: int | None = -1,
) -> ClassTable:
    """One row per class.

    Parameters
    ----------
    palette : array (K, C)
        The codewords, in the image's dtype.
    counts : array (K,)
        Pixels of each class (in the segmented area).
    names : sequence of K str, optional
        Class names; default ``"class 1"`` .. ``"class K"``.
    pixel_size : float or (float, float), optional
        Size of a pixel (its side, or (row, column) sides) in ``unit``; gives the ``area``
        column in ``unit``².
    unit : str, default "um"
        The unit of ``pixel_size``.
    color_space, centroids, stain_vectors
        With a stain space, the centroids (mean stain amounts of each class, unscaled)
        give one ``mean <stain>`` column per stain.
    image, labels, mask, channel_axis
        With a stain space: the image and the labels produced (codeword indices), and the
        mask segmented. The mean stains are then measured from each label's pixels
        (:func:`class_means`), whatever happened to the labels after the fit; ``counts``
        still gives the pixels. Without them the centroids are taken as the means.
    """
    palette = np.asarray(palette)
    counts = np.asarray(counts, dtype=np.int64)
    k = palette.shape[0]
    if counts.shape != (k,):
        raise ValueError(f"counts: expected {k} entries, one per class, got {counts.shape}.")
    if names is None:
        names = [f"class {i + 1}" for i in range(k)]
    names = [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"names: expected {k}, one per class, got {len(names)}.")
    area = None
    if pixel_size is not None:
        sides = np.broadcast_to(np.asarray(pixel_size, dtype=np.float64), (2,))
        if not np.isfinite(sides).all() or (sides <= 0).any():
            raise ValueError(f"pixel_size must be positive, got {pixel_size!r}.")
        area = float(sides[0] * sides[1])
    stains = ()
    if color_space in STAIN_SPACES and image is not None and labels is not None:
        stains = stain_space(color_space, stain_vectors)[1]
        fallback = None if centroids is None else np.asarray(centroids)
        centroids = class_means(
            image,
            labels,
            k,
            color_space=color_space,
            stain_vectors=stain_vectors,
            mask=mask,
            channel_axis=channel_axis,
            channels=3,
            fallback=fallback,
        )
    elif color_space in STAIN_SPACES and centroids is not None:
        stains = stain_space(color_space, stain_vectors)[1]
    total = max(int(counts.sum()), 1)
    rgba = palette_rgba(palette)
    columns = ["label", "name", "color", "pixels", "share"]
    if area is not None:
        columns.append(f"area_{unit}2")
    columns += [f"mean_{s}" for s in stains]
    rows = []
    for i in range(k):
        row = {
            "label": i + 1,
            "name": names[i],
            "color": "#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in rgba[i, :3])),
            "pixels": int(counts[i]),
            "share": float(counts[i]) / total,
        }
        if area is not None:
            row[f"area_{unit}2"] = float(counts[i]) * area
        for j, stain in enumerate(stains):
            row[f"mean_{stain}"] = float(centroids[i, j])
        rows.append(row)
    return ClassTable(tuple(columns), tuple(rows))


__all__ = ["ClassTable", "class_means", "class_table", "label_centroids"]
