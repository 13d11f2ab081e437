"""Class outlines as GeoJSON, in the form QuPath imports: one polygon feature per region.

Every 4-connected region of one label becomes a ``Feature`` whose ``Polygon`` follows the
pixel edges exactly (an outer ring and one ring per hole, corners only: straight runs are
one segment), in pixel coordinates of the full-resolution image (x right, y down, a pixel
``(row, col)`` covers ``[col, col + 1] x [row, row + 1]``). Its properties carry QuPath's
``objectType`` and ``classification`` (name and colour), the label and its pixel count.
Rasterised back, the polygons cover exactly the labelled pixels.

The tracing is vectorised: every boundary edge of every pixel is made at once, linked to
the next edge of its ring by a sort, and the rings are ordered by pointer jumping.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np

from ._atomic import atomic_write

# Edge directions in the order of a clockwise turn on screen (y down): +x, +y, -x, -y.
_STEPS = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])


def _edges(labels: np.ndarray):
    """Every boundary edge: start corner (x, y), direction, and the pixel it bounds.

    Each pixel's sides that face another label (or the border) are walked clockwise on
    screen, so a region is always on the right of its edges: outer rings come out with a
    positive shoelace area in (x, y-down) coordinates and holes with a negative one.
    """
    w = labels.shape[1]
    padded = np.pad(labels.astype(np.int64), 1, constant_values=-1)
    inner = padded[1:-1, 1:-1]
    # (neighbour, start corner offset (dx, dy), direction) for top, right, bottom, left.
    sides = (
        (padded[:-2, 1:-1], (0, 0), 0),
        (padded[1:-1, 2:], (1, 0), 1),
        (padded[2:, 1:-1], (1, 1), 2),
        (padded[1:-1, :-2], (0, 1), 3),
    )
    xs, ys, dirs, pix = [], [], [], []
    for neighbour, (dx, dy), d in sides:
        r, c = np.nonzero(neighbour != inner)
        xs.append(c + dx)
        ys.append(r + dy)
        dirs.append(np.full(r.size, d, dtype=np.int8))
        pix.append(r * w + c)
    return (np.concatenate(xs), np.concatenate(ys), np.concatenate(dirs), np.concatenate(pix))


def _rings(labels: np.ndarray):
    """Every ring's label, a pixel it bounds, twice its signed area, and its corners."""
    h, w = labels.shape
    x, y, d, pix = _edges(labels)
    n = x.size
    lab = labels.reshape(-1)[pix].astype(np.int64)
    corners = (w + 1) * (h + 1)
    start = lab * corners + y * (w + 1) + x
    ex, ey = x + _STEPS[d, 0], y + _STEPS[d, 1]
    end = lab * corners + ey * (w + 1) + ex
    order = np.lexsort((d, start))
    sorted_start = start[order]
    first = np.searchsorted(sorted_start, end, side="left")
    count = np.searchsorted(sorted_start, end, side="right") - first
    nxt = order[first]
    # Two ways on at a corner that a region touches only diagonally: turn right, so that
    # regions touching at a corner stay apart (4-connectivity).
    saddle = np.flatnonzero(count == 2)
    if saddle.size:
        second = order[first[saddle] + 1]
        right = (d[saddle] + 1) % 4
        nxt[saddle] = np.where(d[second] == right, second, nxt[saddle])
    # Each ring's representative (its lowest edge) and each edge's rank from the end of
    # the ring once cut before the representative, both by pointer jumping.
    rep = np.arange(n)
    jump = nxt.copy()
    for _ in range(max(1, math.ceil(math.log2(max(n, 2)))) + 1):
        np.minimum(rep, rep[jump], out=rep)
        jump = jump[jump]
    last = nxt == rep
    jump = np.where(last, np.arange(n), nxt)
    rank = np.where(last, 0, 1)
    for _ in range(max(1, math.ceil(math.log2(max(n, 2)))) + 1):
        rank = rank + np.where(jump == np.arange(n), 0, rank[jump])
        jump = jump[jump]
    walk = np.lexsort((-rank, rep))
    starts = np.flatnonzero(np.r_[True, np.diff(rep[walk]) != 0])
    # Keep the corners where the direction changes (a ring's first edge against its last).
    dw = d[walk]
    previous = np.roll(dw, 1)
    previous[starts] = dw[np.r_[starts[1:], n] - 1]
    kept = walk[dw != previous]
    ring_of_kept = np.cumsum(np.isin(np.arange(n), starts))[dw != previous] - 1
    cuts = np.flatnonzero(np.diff(ring_of_kept)) + 1
    kx, ky = x[kept], y[kept]
    # Shoelace areas of all rings at once: positive for outer rings, negative for holes.
    nx = np.roll(kx, -1)
    ny = np.roll(ky, -1)
    ring_first = np.r_[0, cuts]
    ring_last = np.r_[cuts, kept.size] - 1
    nx[ring_last], ny[ring_last] = kx[ring_first], ky[ring_first]
    area = np.add.reduceat(kx * ny - nx * ky, ring_first)
    # One conversion to lists for all rings, then cut (numpy's tolist per ring is slow).
    points = np.stack([kx, ky], axis=1).tolist()
    bounds = np.r_[0, cuts, kept.size].tolist()
    coords = [points[a:b] for a, b in itertools.pairwise(bounds)]
    heads = walk[starts]
    return lab[heads], pix[heads], area, coords


def label_features(
    labels,
    *,
    names=None,
    colors=None,
    background: int | None = None,
) -> dict:
    """The outlines of every region of a 2D label image as a GeoJSON FeatureCollection.

    Parameters
    ----------
    labels : array of int, shape (H, W)
        Label of every pixel (codeword indices, or napari labels).
    names : dict or sequence, optional
        Class name of each label value (``names[value]``); default ``"Class <value>"``.
    colors : dict or sequence, optional
        RGB 0-255 of each label value, shown by QuPath; default none.
    background : int, optional
        A label value with no outline (napari's 0, say).

    Returns
    -------
    dict
        A GeoJSON ``FeatureCollection``: one ``Polygon`` feature per 4-connected region.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 2D integer array, got shape {labels.shape} of {labels.dtype}."
        )
    # Regions: 4-connected pixels of one label, numbered once for the whole image.
    region = np.zeros(labels.shape, dtype=np.int64)
    offset = 0
    for value in np.unique(labels):
        part, found = ndimage.label(labels == value)
        region[part > 0] = part[part > 0] + offset
        offset += found
    region_of = region.reshape(-1)
    outers: dict[int, tuple[int, np.ndarray]] = {}
    holes: dict[int, list[np.ndarray]] = {}
    values, pixels, areas2, rings = _rings(labels)
    for value, rid, area2, coords in zip(
        values.tolist(), region_of[pixels].tolist(), areas2.tolist(), rings, strict=True
    ):
        if value == background:
            continue
        if area2 > 0:
            outers[rid] = (value, coords)
        else:
            holes.setdefault(rid, []).append(coords)
    areas = np.bincount(region_of, minlength=offset + 1)
    features = []
    for rid in sorted(outers):
        value, outer = outers[rid]
        rings = [outer, *holes.get(rid, [])]
        coordinates = [_closed(r) for r in rings]
        classification = {"name": _lookup(names, value, f"Class {value}")}
        color = _lookup(colors, value, None)
        if color is not None:
            classification["color"] = [int(v) for v in list(color)[:3]]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": coordinates},
                "properties": {
                    "objectType": "annotation",
                    "classification": classification,
                    "label": int(value),
                    "pixels": int(areas[rid]),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _closed(points: list) -> list:
    return [*points, points[0]]


def _lookup(table, value: int, default):
    if table is None:
        return default
    try:
        return table[value]
    except (IndexError, KeyError):
        return default


def quantization_features(labels, palette, *, names=None, mask=None) -> dict:
    """The class outlines of a quantization as QuPath's GeoJSON: one feature per region.

    Parameters
    ----------
    labels : array of int, shape (H, W)
        Codeword indices ``0 .. K-1`` (a :class:`~napari_kmeans_vq.Quantization`'s).
    palette : array, shape (K, C)
        The codewords: each class's ``classification`` colour.
    names : sequence of K str, optional
        Class names in codeword order: ``classification["name"]`` of codeword ``i``'s
        regions is ``names[i]``; default ``"Class <label>"``.
    mask : bool array, shape (H, W), optional
        The pixels segmented: those outside have no outline.

    Returns
    -------
    dict
        As :func:`label_features`, with ``label`` = codeword + 1 (the class table's and
        napari's numbering).
    """
    from ..core.colorspace import palette_rgba

    labels = np.asarray(labels)
    palette = np.asarray(palette)
    if palette.ndim == 1:
        palette = palette[:, None]
    k = palette.shape[0]
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 2D integer array, got shape {labels.shape} of {labels.dtype}."
        )
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != k:
            raise ValueError(f"names: expected {k}, one per class, got {len(names)}.")
    values = labels.astype(np.int64) + 1
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != labels.shape:
            raise ValueError(f"mask: expected shape {labels.shape}, got {mask.shape}.")
        values[~mask] = 0
    rgb = np.rint(palette_rgba(palette)[:, :3] * 255).astype(int).tolist()
    return label_features(
        values,
        names=None if names is None else {i + 1: n for i, n in enumerate(names)},
        colors={i + 1: c for i, c in enumerate(rgb)},
        background=0,
    )


def write_geojson(path, labels, **options) -> None:
    """Write :func:`label_features` of ``labels`` to ``path`` (atomically)."""
    atomic_write(path, json.dumps(label_features(labels, **options)).encode())


__all__ = ["label_features", "quantization_features", "write_geojson"]
