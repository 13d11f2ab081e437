"""Spatial clean-up of a segmentation: small regions take their neighbours' majority label.

A colour segmentation at K = 3-6 is speckled: single pixels and small islands of one class
inside another. :func:`merge_small_regions` relabels every 4-connected region smaller than
``min_size`` pixels with the label most of its outside neighbours have (ties to the lower
label), and repeats until no small region has a neighbour left to join. Pixels outside an
optional mask are neither changed nor counted as neighbours.
"""

from __future__ import annotations

import numpy as np

from .validation import check_int

_MAX_ROUNDS = 16


def regions(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Number every 4-connected region of equal labels (1, 2, ...); also how many."""
    from scipy import ndimage

    out = np.zeros(labels.shape, dtype=np.int64)
    count = 0
    for value in np.unique(labels):
        part, found = ndimage.label(labels == value)
        inside = part > 0
        out[inside] = part[inside] + count
        count += found
    return out, count


def merge_small_regions(labels, min_size: int, mask=None) -> np.ndarray:
    """``labels`` with every region smaller than ``min_size`` pixels relabelled.

    Parameters
    ----------
    labels : integer array, any number of axes
        A segmentation (codeword indices).
    min_size : int
        Regions of fewer pixels take the label most of their neighbours have; 0 or 1
        changes nothing.
    mask : bool array of ``labels.shape``, optional
        Pixels to clean; the others are left as they are and never count as neighbours.

    Returns
    -------
    ndarray
        A new array, the labels' dtype.
    """
    min_size = check_int(min_size, "min_size")
    if min_size < 0:
        raise ValueError(f"min_size must be >= 0 pixels, got {min_size}.")
    out = np.array(labels, copy=True)
    if min_size <= 1 or out.size == 0:
        return out
    k = int(out.max()) + 1
    # Outside the mask: a label of its own (k), which is never given to a small region.
    work = out.astype(np.int64)
    if mask is not None:
        work[~mask] = k
    for _ in range(_MAX_ROUNDS):
        numbered, count = regions(work)
        sizes = np.bincount(numbered.reshape(-1), minlength=count + 1)
        small = sizes < min_size
        small[0] = False
        if mask is not None:
            # (the outside's own regions are never merged)
            outside = np.unique(numbered[work == k])
            small[outside] = False
        if not small.any():
            break
        # Votes come from regions that stay (two small neighbours would only swap labels);
        # only where no small region touches one do small neighbours vote.
        keys = np.empty(0, dtype=np.int64)
        for from_large in (True, False):
            votes = []
            for axis in range(work.ndim):
                a = np.moveaxis(numbered, axis, 0)
                b = np.moveaxis(work, axis, 0)
                for here, there, value in ((a[:-1], a[1:], b[1:]), (a[1:], a[:-1], b[:-1])):
                    edge = small[here] & (here != there) & (value != k)
                    if from_large:
                        edge &= ~small[there]
                    votes.append(here[edge] * (k + 1) + value[edge])
            keys, counts = np.unique(np.concatenate(votes), return_counts=True)
            if keys.size:
                break
        if keys.size == 0:
            break
        region, value = keys // (k + 1), keys % (k + 1)
        # The most votes per region, ties to the lower label (keys are sorted by value).
        order = np.lexsort((value, -counts, region))
        first = np.r_[True, region[order][1:] != region[order][:-1]]
        winner = np.full(count + 1, -1, dtype=np.int64)
        winner[region[order][first]] = value[order][first]
        changed = winner[numbered]
        move = changed >= 0
        if not move.any():
            break
        work[move] = changed[move]
    inside = work != k if mask is not None else np.ones(work.shape, dtype=bool)
    out[inside] = work[inside].astype(out.dtype)
    return out


__all__ = ["merge_small_regions", "regions"]
