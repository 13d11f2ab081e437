"""The class table of a segmentation: one row per class, with its area and its stains.

Each codeword is a class. A row gives its label (codeword + 1, as napari's labels layer
and the OME-Zarr labels number them), name, colour, pixels, share of the pixels segmented
(the masked area, when there is a mask), area in physical units when the pixel size is
known, and, for the stain spaces, the class's mean amount of each stain (its centroid:
k-means centroids are the means of their members).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from .colorspace import STAIN_SPACES, palette_rgba, stain_space


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
        With a stain space, the centroids (mean stain amounts of each class) give one
        ``mean <stain>`` column per stain.
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
    if color_space in STAIN_SPACES and centroids is not None:
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


__all__ = ["ClassTable", "class_table"]
