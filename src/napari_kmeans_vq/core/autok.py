"""Choosing K for a quality target: the smallest K whose fit reaches a PSNR or a J.

Every fit runs on the same colour histogram (the distinct colours and their counts),
built once, so trying a K costs one k-means fit and no pass over the pixels. The search
doubles K until the target is met, then halves the interval between the last K that
failed and the first that met it. K-means J is not strictly monotone in K (each K is its
own local optimum), so the answer is defined by what was measured: the chosen K meets
the target and K - 1 does not.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from .._limits import MAX_FIT_COLORS
from ._threads import resolve
from .codebook import Codebook, FewColorsWarning
from .histogram import ColorHistogram
from .measure import fit_summary
from .validation import check_image, check_int, check_mask

#: K tried at most by default: uint8 labels, and far past where quality levels off on
#: stained slides. Up to MAX_FIT_COLORS may be asked for.
DEFAULT_K_MAX = 256


@dataclass(frozen=True)
class KTrial:
    """One K tried: its J, PSNR (dB), bits per pixel, and whether it met the target."""

    n_colors: int
    distortion: float
    psnr: float
    bits_per_pixel: float
    meets: bool

    def to_dict(self) -> dict:
        return {
            "n_colors": self.n_colors,
            "distortion": self.distortion,
            "psnr": self.psnr if math.isfinite(self.psnr) else None,
            "bits_per_pixel": self.bits_per_pixel,
            "meets": self.meets,
        }


@dataclass(frozen=True, eq=False)
class KSearch:
    """What :func:`choose_k` did.

    Attributes
    ----------
    n_colors : int
        The K chosen.
    target : dict
        ``{"psnr": dB}`` or ``{"distortion": J}``.
    k_max : int
        The largest K the search could try.
    trials : tuple of KTrial
        Every K tried, in the order tried.
    codebooks : dict
        K -> the fitted :class:`Codebook` of each K tried.
    """

    n_colors: int
    target: dict
    k_max: int
    trials: tuple
    codebooks: dict = field(repr=False)
    per_color: np.ndarray | None = field(default=None, repr=False)

    @property
    def tried(self) -> list[int]:
        """The K tried, in order."""
        return [t.n_colors for t in self.trials]

    @property
    def curve(self) -> list[KTrial]:
        """The trials sorted by K: J, PSNR and bits against K."""
        return sorted(self.trials, key=lambda t: t.n_colors)

    @property
    def codebook(self) -> Codebook:
        """The chosen K's codebook."""
        return self.codebooks[self.n_colors]

    def to_dict(self) -> dict:
        """JSON-serialisable: the target, the limit, the K chosen and every trial."""
        return {
            "target": dict(self.target),
            "k_max": self.k_max,
            "n_colors": self.n_colors,
            "tried": self.tried,
            "trials": [t.to_dict() for t in self.trials],
        }


def check_target(target_psnr, target_j) -> dict:
    """``{"psnr": x}`` or ``{"distortion": x}`` from the two keywords; exactly one given."""
    if (target_psnr is None) == (target_j is None):
        raise ValueError(
            "n_colors='auto' needs one quality target: target_psnr (dB, higher is better) "
            "or target_j (the mean squared error J, lower is better), not "
            + ("both." if target_psnr is not None else "neither.")
        )
    name, value = ("target_psnr", target_psnr) if target_j is None else ("target_j", target_j)
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
    ):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if name == "target_j":
        if value < 0:
            raise ValueError(f"target_j must be >= 0 (a mean squared error), got {value!r}.")
        return {"distortion": float(value)}
    return {"psnr": float(value)}


def check_k_max(k_max) -> int:
    k_max = check_int(k_max, "k_max")
    if not 1 <= k_max <= MAX_FIT_COLORS:
        raise ValueError(f"k_max must be from 1 to {MAX_FIT_COLORS:,}, got {k_max:,}.")
    return k_max


def search_histogram(
    hist: ColorHistogram,
    dtype,
    *,
    target: dict,
    k_max: int = DEFAULT_K_MAX,
    progress=None,
    **options,
) -> KSearch:
    """:func:`choose_k` on a colour histogram (built in memory or block by block).

    ``target`` is as :func:`check_target` gives it; ``options`` are Codebook parameters.
    The result's ``per_color`` is the chosen fit's label of each of the histogram's colours.
    """
    k_max = check_k_max(k_max)
    Codebook(1, **options).check_params()  # bad options fail before any fit
    n_distinct = hist.colors.shape[0]
    n_pixels = hist.n_pixels
    # K = the distinct colours is lossless: no need to look further.
    k_top = min(k_max, n_distinct)
    trials: dict[int, KTrial] = {}
    order: list[int] = []
    books: dict[int, Codebook] = {}
    labels: dict[int, np.ndarray] = {}
    # Doubling then halving tries about 2 log2(k_top) values.
    planned = 2 * max(math.ceil(math.log2(max(k_top, 2))), 1) + 1

    def meets(k: int) -> bool:
        if k in trials:
            return trials[k].meets
        done = len(order)

        def inner(stage, fraction):
            if progress is not None:
                progress("search", min(1.0, (done + fraction) / planned))

        codebook = Codebook(k, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewColorsWarning)
            per_color = codebook.fit_histogram(hist, dtype, progress=inner)
        distortion, psnr, report = fit_summary(codebook, n_pixels, n_pixels)
        ok = psnr >= target["psnr"] if "psnr" in target else distortion <= target["distortion"]
        trials[k] = KTrial(k, distortion, psnr, report.bits_per_pixel, ok)
        order.append(k)
        books[k] = codebook
        labels[k] = per_color
        if progress is not None:
            progress("search", min(1.0, len(order) / planned))
        return ok

    # Doubling: the first K that meets the target, and the last that failed before it.
    low, k = 0, 1
    while not meets(k):
        low = k
        if k >= k_top:
            best = max(trials.values(), key=lambda t: (t.psnr, -t.n_colors))
            what = (
                f"target_psnr={target['psnr']} dB"
                if "psnr" in target
                else f"target_j={target['distortion']}"
            )
            raise ValueError(
                f"{what} is not reached with K up to k_max={k_max} (the best tried: "
                f"K={best.n_colors}, PSNR {best.psnr:.2f} dB, J {best.distortion:.4g}); "
                "lower the target or raise k_max (at most "
                f"{MAX_FIT_COLORS:,})."
            )
        k = min(2 * k, k_top)
    high = k
    # Halving: low fails, high meets; stop when they are neighbours.
    while high - low > 1:
        mid = (low + high) // 2
        if meets(mid):
            high = mid
        else:
            low = mid
    # high - 1 == low was measured and fails (or high is 1): the answer holds as measured.
    return KSearch(
        n_colors=high,
        target=dict(target),
        k_max=k_max,
        trials=tuple(trials[k] for k in order),
        codebooks=books,
        per_color=labels[high],
    )


def choose_k(
    image,
    *,
    target_psnr: float | None = None,
    target_j: float | None = None,
    k_max: int = DEFAULT_K_MAX,
    mask=None,
    progress=None,
    **options,
) -> tuple[int, KSearch]:
    """The smallest K whose k-means fit reaches a quality target, and the search's curve.

    Parameters
    ----------
    image : array_like, shape (..., C)
        As for :func:`napari_kmeans_vq.core.quantize.quantize` (in memory).
    target_psnr : float, optional
        PSNR to reach, in dB (as :attr:`Quantization.psnr` measures it).
    target_j : float, optional
        J to reach or go below: the mean squared error per pixel, summed over the
        channels clustered. Give exactly one of the two targets.
    k_max : int, default 256
        The largest K tried (at most 65,536). A target not met by then is an error.
    mask : bool array, optional
        Measure (and fit) only these pixels, as for ``quantize``.
    progress : callable, optional
        Called as ``progress("search", fraction)``; an exception raised in it stops the
        search.
    **options
        :class:`Codebook` parameters (``color_space``, ``random_state``, ``effort``, ...),
        the same for every K.

    Returns
    -------
    k : int
        The K chosen: it meets the target and K - 1 does not (as measured; K-means J is
        not strictly monotone in K, so this is the smallest K the search found, not
        a proof that no smaller K could).
    search : KSearch
        Every K tried with its J, PSNR and bits per pixel (``search.curve``), and their
        codebooks.

    Raises
    ------
    ValueError
        Both targets or neither; a target that is not a finite number (or a negative J);
        ``k_max`` outside 1 .. 65,536; the target not reached by ``k_max``.

    Examples
    --------
    >>> from napari_kmeans_vq.io.samples import stain_patches
    >>> k, search = choose_k(stain_patches(64), target_psnr=30)
    >>> search.curve[-1].n_colors >= k and search.codebook.n_colors_ == k
    True
    """
    target = check_target(target_psnr, target_j)
    k_max = check_k_max(k_max)
    codebook = Codebook(1, **options)
    codebook.check_params()
    arr = check_image(image, channel_axis=codebook.channel_axis)
    codebook.check_channels(arr.shape[-1])
    colors = arr[..., : codebook.clustered_channels(arr.shape[-1])]
    inside = None if mask is None else check_mask(mask, colors.shape[:-1])
    pixels = colors.reshape(-1, colors.shape[-1]) if inside is None else colors[inside]
    hist = ColorHistogram.from_pixels(pixels, n_threads=resolve(codebook.n_threads))
    search = search_histogram(
        hist, arr.dtype, target=target, k_max=k_max, progress=progress, **options
    )
    return search.n_colors, search


__all__ = ["DEFAULT_K_MAX", "KSearch", "KTrial", "choose_k", "search_histogram"]
