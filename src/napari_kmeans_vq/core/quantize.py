"""quantize(): fit a codebook, encode, decode and account for the bits in one call."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .._limits import index_dtype
from .autok import DEFAULT_K_MAX, check_k_max, check_target, search_histogram
from .bits import BitReport
from .classes import class_table, label_centroids
from .codebook import Codebook
from .histogram import ColorHistogram, encode_decode
from .kmeans import DEFAULT_EFFORT, weighted_error
from .measure import fit_summary
from .regions import merge_small_regions
from .validation import check_image, check_mask, check_n_colors


@dataclass(frozen=True, eq=False)
class Quantization:
    """The result of :func:`quantize`.

    Attributes
    ----------
    labels : ndarray
        Codeword index of every pixel, shape ``image.shape[:-1]`` (the image's shape for a
        scalar image), uint8 when K <= 256, else uint16. With a ``mask``, pixels outside it
        hold 0 (tell them apart with ``mask``; napari's labels layer leaves them 0, its
        background).
    palette : ndarray, shape (K, C)
        The codebook as stored and decoded, in the image's dtype (rounded means for integer
        images).
    centroids : ndarray, shape (K, D)
        Unrounded cluster means in the clustering colour space (after ``min_region``
        clean-up, the means of the labels produced; the fit's stay in ``codebook``).
    reconstruction : ndarray
        ``palette[labels]``, the image's shape and dtype (an ignored alpha channel is carried
        over unchanged, and so are the pixels outside a ``mask``).
    distortion : float
        J: the mean over the pixels segmented (all, or the mask's) of the squared error
        summed over the clustered channels, between the image and the reconstruction.
    psnr : float
        ``10 log10(peak**2 / (J / C))`` in dB with C the clustered channels and peak 255 for
        uint8, 65535 for uint16, 1.0 for float images; ``inf`` for a lossless result.
    report : BitReport
        Bit accounting, with ``entropy_bits`` set.
    n_colors : int
        K used (smaller than asked when the image has fewer distinct colours).
    codebook : Codebook
        The fitted codebook, to encode more images with the same colours.
    info : dict
        What the fit did: requested K, colour space, seed, seedings, iterations,
        convergence, distinct colours, and seconds spent.
    mask : ndarray of bool or None
        The pixels segmented, when ``quantize`` was given a mask.
    """

    labels: np.ndarray
    palette: np.ndarray
    centroids: np.ndarray
    reconstruction: np.ndarray
    distortion: float
    psnr: float
    report: BitReport
    n_colors: int
    codebook: Codebook = field(repr=False)
    info: dict = field(default_factory=dict)
    mask: np.ndarray | None = field(default=None, repr=False)
    counts: np.ndarray | None = field(default=None, repr=False)

    @property
    def cluster_sizes(self) -> np.ndarray:
        """Pixels in each cluster (among those segmented), shape (K,)."""
        return self.codebook.cluster_sizes_ if self.counts is None else self.counts

    def class_table(self, names=None, *, pixel_size=None, unit: str = "um"):
        """One row per class: label, name, colour, pixels, share, area, mean stains.

        See :func:`napari_kmeans_vq.core.classes.class_table`; ``pixel_size`` (in ``unit``)
        gives the area column.
        """
        return result_class_table(
            self, self.cluster_sizes, names=names, pixel_size=pixel_size, unit=unit
        )

    def to_dict(self) -> dict:
        """A JSON-serialisable summary: report, distortion, PSNR, palette and fit details."""
        return {
            "n_colors": self.n_colors,
            "shape": list(self.labels.shape),
            "distortion": self.distortion,
            "psnr": self.psnr if math.isfinite(self.psnr) else None,
            "report": self.report.to_dict(),
            "palette": self.palette.tolist(),
            "cluster_sizes": self.cluster_sizes.tolist(),
            "info": dict(self.info),
        }


def result_class_table(result, counts, *, names=None, pixel_size=None, unit: str = "um"):
    """The class table of a quantization result (in memory or lazy) whose classes have
    ``counts`` pixels: its palette, centroids and codebook's colour space, as
    :func:`napari_kmeans_vq.core.classes.class_table` takes them."""
    cb = result.codebook
    return class_table(
        result.palette,
        counts,
        names=names,
        pixel_size=pixel_size,
        unit=unit,
        color_space=cb.color_space.lower(),
        centroids=result.centroids / getattr(cb, "space_scale_", 1.0),
        stain_vectors=cb.stain_vectors,
    )


def quantize(
    image,
    n_colors: int | None = None,
    *,
    codebook: Codebook | None = None,
    random_state=0,
    color_space: str = "rgb",
    n_init="auto",
    max_iter: int = 300,
    tol: float = 1e-4,
    alpha: str = "ignore",
    channel_axis: int | None = -1,
    progress=None,
    effort: int = DEFAULT_EFFORT,
    n_threads: int | None = None,
    stain_vectors=None,
    mask=None,
    min_region: int = 0,
    target_psnr: float | None = None,
    target_j: float | None = None,
    k_max: int = DEFAULT_K_MAX,
) -> Quantization:
    """Quantize an image to K colours with k-means: fit, encode, decode, count the bits.

    The fit is exact k-means (k-means++ seeding, Lloyd's iterations) over every pixel,
    computed on the image's distinct colours weighted by their pixel counts; pixels are
    then encoded through a lookup of their colour, not a distance computation each.

    Parameters
    ----------
    image : array_like, shape (..., C)
        The colour axis last (or at ``channel_axis``), C from 1 to 16, any number of other
        axes (an nD stack shares one codebook); uint8, uint16, other integers or floats.
        With ``channel_axis=None`` the whole array is one scalar channel. In memory: for
        dask and zarr arrays and multiscale lists use :func:`napari_kmeans_vq.quantize`
        (that is :func:`napari_kmeans_vq.large.quantize`), which works block by block.
    n_colors : int or "auto", optional
        K, from 1 to 65,536. Required unless ``codebook`` is given (then K is the
        codebook's; a different ``n_colors`` is an error). ``"auto"`` chooses K for a
        quality target (``target_psnr`` or ``target_j``): the smallest K found that meets
        it while K - 1 does not, by a search that fits every K tried on one colour
        histogram (see :func:`napari_kmeans_vq.core.autok.choose_k`); ``info["auto"]``
        records the target and every K tried with its J, PSNR and bits per pixel.
    codebook : Codebook, optional
        A fitted codebook to apply instead of fitting one: the image is encoded with it
        (every pixel to its nearest codeword, in the codebook's colour space), decoded,
        and J, PSNR, the bits and the classes measured on this image. The fit parameters
        (``color_space``, ``stain_vectors``, ``alpha``, ``random_state``, ``n_init``,
        ``max_iter``, ``tol``, ``effort``) are then the codebook's: giving another value is
        an error. ``channel_axis`` describes this image (pass ``None`` again for a scalar
        image).
    random_state : int, numpy Generator or None, default 0
        Seed; the same image and seed give the same palette and labels.
    color_space : {"rgb", "lab", "oklab", "od", "hed", "hdab", "stains"}, default "rgb"
        Where colours are clustered (see :class:`Codebook`); the palette and the distortion
        are always in the image's own colours.
    n_init : int or "auto", default "auto"
        Seedings to try, keeping the best.
    max_iter : int, default 300
        Most Lloyd iterations per seeding.
    tol : float, default 1e-4
        Relative convergence threshold (see :class:`Codebook`).
    alpha : {"ignore", "quantize"}, default "ignore"
        RGBA images: keep alpha as it was, or cluster it as a fourth channel.
    channel_axis : int or None, default -1
        Axis of the colour channels, or None for a scalar image.
    progress : callable, optional
        Called as ``progress(stage, fraction_done)`` while it works, with stage
        ``"histogram"``, ``"fit"`` or ``"encode"``. An exception raised in it propagates
        and stops the work: a GUI cancels this way, and nothing is left half made.
    effort : int, default 5
        Speed against quality, 1 to 10 (see :class:`Codebook`).
    n_threads : int or None, default None
        Threads for the compiled engine (None: the cores this process may run on). The
        result is the same, byte for byte, with any number.
    stain_vectors : array (2, 3) or (3, 3), optional
        The stains' optical-density vectors, for ``color_space="stains"``.
    mask : bool array, the image's shape without the colour axis, optional
        Segment only these pixels (tissue, say: see
        :func:`napari_kmeans_vq.core.tissue.tissue_mask`); the others get label 0, keep
        their colour, and count nowhere (J, bits, classes).
    min_region : int, default 0
        Spatial clean-up: connected regions smaller than this many pixels take their
        neighbours' majority label (see :mod:`.regions`); J, the bits and the classes then
        describe the labels produced. With ``"auto"`` the target is met before the
        clean-up.
    target_psnr : float, optional
        For ``n_colors="auto"``: the PSNR to reach, in dB.
    target_j : float, optional
        For ``n_colors="auto"``: the J to reach (or go below). Give one target, not both.
    k_max : int, default 256
        For ``n_colors="auto"``: the largest K tried; a target not met by then is an error.

    Returns
    -------
    Quantization

    Raises
    ------
    TypeError
        The image is not numeric, or a parameter has the wrong type.
    ValueError
        The image is empty, has NaN or inf, has no colour axis, or ``n_colors`` is outside
        1 .. 65,536; with ``codebook``: it is not fitted, ``n_colors`` differs from its K,
        or the image's channels or dtype differ from those it was fitted on; with
        ``"auto"``: no target or both, or the target not reached by ``k_max``.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_kmeans_vq import quantize
    >>> rng = np.random.default_rng(1)
    >>> image = rng.integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    >>> q = quantize(image, 16)
    >>> q.report.total_bits, q.labels.dtype
    (40384, dtype('uint8'))
    >>> bool(np.array_equal(q.reconstruction, q.palette[q.labels]))
    True
    """
    start = time.perf_counter()
    if codebook is not None:
        given = {
            "color_space": color_space,
            "stain_vectors": stain_vectors,
            "alpha": alpha,
            "random_state": random_state,
            "n_init": n_init,
            "max_iter": max_iter,
            "tol": tol,
            "effort": effort,
        }
        check_codebook(codebook, n_colors, given)
        return _apply(codebook, image, channel_axis, mask, min_region, progress, n_threads, start)
    auto = isinstance(n_colors, str) and n_colors.lower() == "auto"
    if not auto and (target_psnr is not None or target_j is not None):
        raise ValueError("target_psnr and target_j are for n_colors='auto'.")
    if auto:
        options = {
            "color_space": color_space,
            "random_state": random_state,
            "n_init": n_init,
            "max_iter": max_iter,
            "tol": tol,
            "alpha": alpha,
            "channel_axis": channel_axis,
            "effort": effort,
            "n_threads": n_threads,
            "stain_vectors": stain_vectors,
        }
        target = check_target(target_psnr, target_j)
        k_max = check_k_max(k_max)
        return _auto(image, target, k_max, options, mask, min_region, progress, start)
    if n_colors is None:
        raise ValueError("n_colors is required: K, the number of colours (or pass codebook=).")
    codebook = Codebook(
        n_colors,
        color_space=color_space,
        random_state=random_state,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        alpha=alpha,
        channel_axis=channel_axis,
        effort=effort,
        n_threads=n_threads,
        stain_vectors=stain_vectors,
    )
    labels, reconstruction = codebook.fit_encode(image, mask=mask, progress=progress)
    inside = None if mask is None else np.asarray(mask)
    n_pixels = labels.size if inside is None else int(inside.sum())
    has_alpha = reconstruction.shape[-1] == 4
    info = fit_info(codebook, n_colors, random_state, alpha if has_alpha else None)
    arr = check_image(image, channel_axis=codebook.channel_axis) if min_region else None
    return _result(
        codebook,
        arr,
        labels,
        reconstruction,
        inside,
        n_pixels,
        min_region,
        channel_axis,
        info,
        start,
        n_threads=n_threads,
    )


_FIT_DEFAULTS = {
    "color_space": "rgb",
    "stain_vectors": None,
    "alpha": "ignore",
    "random_state": 0,
    "n_init": "auto",
    "max_iter": 300,
    "tol": 1e-4,
    "effort": DEFAULT_EFFORT,
}


def check_codebook(codebook, n_colors, given: dict) -> None:
    """Raise ValueError unless ``codebook`` is a fitted Codebook that ``n_colors`` and the
    fit parameters ``given`` (name -> value) agree with (a default value always agrees)."""
    if not isinstance(codebook, Codebook):
        raise TypeError(f"codebook must be a Codebook, got {type(codebook).__name__}.")
    if not codebook.is_fitted:
        raise ValueError(
            "codebook is not fitted: fit it first (Codebook(K).fit(image)), or load a saved one."
        )
    if n_colors is not None and (
        isinstance(n_colors, str) or check_n_colors(n_colors) != codebook.n_colors_
    ):
        raise ValueError(
            f"n_colors={n_colors!r} but the codebook has {codebook.n_colors_} colours; leave "
            "n_colors out when applying a codebook."
        )
    params = codebook.get_params()
    for name, value in given.items():
        default = _FIT_DEFAULTS[name]
        if _same(value, default) or _same(value, params[name]):
            continue
        raise ValueError(
            f"{name}={value!r} cannot change an applied codebook (its {name} is "
            f"{params[name]!r}); leave {name} out when passing codebook=."
        )


def _same(a, b) -> bool:
    if any(isinstance(v, np.ndarray | list | tuple) for v in (a, b)):
        if a is None or b is None:
            return False
        return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return a is b


def _apply(codebook, image, channel_axis, mask, min_region, progress, n_threads, start):
    """:func:`quantize` with a fitted codebook: encode, decode and measure, no fit."""
    n_threads = codebook.n_threads if n_threads is None else n_threads
    arr = check_image(image, channel_axis=channel_axis)
    codebook.check_channels(arr.shape[-1])
    c = codebook.clustered_channels(arr.shape[-1])
    if c != codebook.channels_ or arr.dtype != codebook.dtype_:
        raise ValueError(
            f"image has {c} colour channel(s) of {arr.dtype}, but the codebook was fitted on "
            f"{codebook.channels_} of {codebook.dtype_}; convert the image (or build the "
            "codebook for this kind of image)."
        )
    inside, pixels = _selected(arr, c, mask)
    hist = ColorHistogram.from_pixels(pixels, progress=progress, n_threads=n_threads)
    per_color = codebook.label_colors(hist.colors, n_threads)
    labels, reconstruction = _encode_pixels(
        codebook, arr, c, inside, hist, pixels, per_color, progress, n_threads
    )
    inertia, mass = weighted_error(
        hist.colors,
        hist.counts.astype(np.float64),
        codebook.palette_.astype(np.float64),
        per_color,
        n_threads,
    )
    info = {
        "n_colors_requested": codebook.n_colors_,
        "color_space": codebook.color_space.lower(),
        "codebook": "applied",
        "n_distinct_colors": hist.colors.shape[0],
        "alpha": codebook.alpha if arr.shape[-1] == 4 else None,
    }
    return _result(
        codebook,
        arr,
        labels,
        reconstruction,
        inside,
        pixels.shape[0],
        min_region,
        channel_axis,
        info,
        start,
        inertia=inertia,
        counts=np.rint(mass).astype(np.int64),
        n_threads=n_threads,
    )


def _auto(image, target, k_max, options, mask, min_region, progress, start):
    """:func:`quantize` with ``n_colors="auto"``: the K search on one histogram, then the
    chosen K's labels from that histogram (no refit)."""
    channel_axis = options["channel_axis"]
    probe = Codebook(1, **options)
    probe.check_params()
    arr = check_image(image, channel_axis=channel_axis)
    probe.check_channels(arr.shape[-1])
    c = probe.clustered_channels(arr.shape[-1])
    inside, pixels = _selected(arr, c, mask)
    n_threads = options.get("n_threads")
    hist = ColorHistogram.from_pixels(pixels, progress=progress, n_threads=n_threads)
    search = search_histogram(
        hist, arr.dtype, target=target, k_max=k_max, progress=progress, **options
    )
    codebook = search.codebook
    labels, reconstruction = _encode_pixels(
        codebook, arr, c, inside, hist, pixels, search.per_color, progress, n_threads
    )
    info = fit_info(
        codebook,
        codebook.n_colors_,
        options["random_state"],
        options["alpha"] if arr.shape[-1] == 4 else None,
    )
    info["n_colors_requested"] = "auto"
    info["auto"] = search.to_dict()
    return _result(
        codebook,
        arr,
        labels,
        reconstruction,
        inside,
        pixels.shape[0],
        min_region,
        channel_axis,
        info,
        start,
        n_threads=n_threads,
    )


def _selected(arr, c, mask):
    """The mask (checked) and the pixels (n, c) it selects, or all of them."""
    colors = arr[..., :c]
    inside = None if mask is None else check_mask(mask, colors.shape[:-1])
    return inside, colors.reshape(-1, c) if inside is None else colors[inside]


def _encode_pixels(codebook, arr, c, inside, hist, pixels, per_color, progress, n_threads):
    """Labels (the image's shape) and reconstruction (colour axis last) from each colour's
    label: pixels outside ``inside`` get 0 and keep their colour, as does ignored alpha."""
    labels, codewords = encode_decode(
        hist,
        pixels,
        per_color.astype(index_dtype(codebook.n_colors_), copy=False),
        codebook.palette_,
        progress=progress,
        n_threads=n_threads,
    )
    shape = arr.shape[:-1]
    if inside is None and c == arr.shape[-1]:
        return labels.reshape(shape), codewords.reshape(*shape, c)
    reconstruction = np.array(arr, copy=True)
    if inside is None:
        reconstruction[..., :c] = codewords.reshape(*shape, c)
        return labels.reshape(shape), reconstruction
    full = np.zeros(shape, dtype=labels.dtype)
    full[inside] = labels
    reconstruction[inside, :c] = codewords
    return full, reconstruction


def _result(
    codebook,
    arr,
    labels,
    reconstruction,
    inside,
    n_pixels,
    min_region,
    channel_axis,
    info,
    start,
    *,
    inertia=None,
    counts=None,
    n_threads=None,
):
    """The Quantization: clean-up (``min_region``) and the figures measured on the labels
    (after clean-up, the centroids too: the class table's mean stains describe the labels
    produced)."""
    centroids = codebook.centroids_
    if min_region:
        labels = merge_small_regions(labels, min_region, mask=inside)
        counts, inertia = _remeasure(
            codebook, arr, labels, reconstruction, inside, codebook.channels_, n_threads
        )
        centroids = label_centroids(codebook, arr, labels, inside, n_threads, channel_axis=-1)
    distortion, psnr, report = fit_summary(codebook, n_pixels, n_pixels, inertia, counts)
    if channel_axis is None:
        reconstruction = reconstruction[..., 0]
    else:
        reconstruction = np.moveaxis(reconstruction, -1, channel_axis)
    info["seconds"] = time.perf_counter() - start
    return Quantization(
        labels=labels,
        palette=codebook.palette_,
        centroids=centroids,
        reconstruction=reconstruction,
        distortion=distortion,
        psnr=psnr,
        report=report,
        n_colors=codebook.n_colors_,
        codebook=codebook,
        info=info,
        mask=inside,
        counts=counts,
    )


def _remeasure(codebook, arr, labels, reconstruction, inside, c, n_threads=None):
    """After relabelling: the reconstruction made again (in place, colour axis last), each
    class's pixels and the squared error, over the pixels segmented (``arr``: the image
    with the colour axis last, ``c`` channels clustered)."""
    where = np.ones(labels.shape, dtype=bool) if inside is None else inside
    chosen = labels[where]
    reconstruction[where, :c] = codebook.palette_[chosen]
    points = arr[where][:, :c]
    ones = np.ones(len(points))
    error, mass = weighted_error(points, ones, codebook.palette_, chosen, n_threads)
    return np.rint(mass).astype(np.int64), error


def fit_info(codebook: Codebook, n_colors: int, random_state, alpha) -> dict:
    """What a fit did, for ``Quantization.info``."""
    return {
        "n_colors_requested": int(n_colors),
        "color_space": codebook.color_space.lower(),
        "random_state": random_state if isinstance(random_state, int | None) else "generator",
        "n_init": codebook.n_init_,
        "n_iter": codebook.n_iter_,
        "converged": codebook.converged_,
        "n_distinct_colors": codebook.n_distinct_colors_,
        "alpha": alpha,
        "fit_seconds": codebook.fit_seconds_,
    }


__all__ = ["Quantization", "quantize"]
