"""Lazy results: labels and reconstruction as dask arrays, encoded block by block."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .._limits import MAX_COLORS, index_dtype
from ..core.autok import DEFAULT_K_MAX, check_k_max, check_target, search_histogram
from ..core.bits import BitReport
from ..core.codebook import Codebook
from ..core.histogram import ColorHistogram, KeyCodec, count_values, lookup_colors
from ..core.kmeans import weighted_error
from ..core.quantize import (
    Quantization,
    check_codebook,
    fit_info,
    fit_summary,
    result_class_table,
)
from ..core.quantize import quantize as quantize_in_memory
from .fit import (
    DEFAULT_SAMPLE,
    color_histogram,
    fit_histogram_or_sample,
    fit_plan,
    sample_pixels,
)
from .inputs import BLOCK_PIXELS, is_lazy_input, levels
from .progress import stage


class LabelTable:
    """Maps pixels (n, C) to codeword indices, through a dense table where one fits.

    For colours packing into at most 24 bits (8-bit RGB, 8- or 16-bit grey) the table has
    one entry per possible colour, filled for the colours of the fitted histogram with the
    fit's own labels (so lazily encoded labels equal the in-memory ``quantize`` labels).
    Colours not in the table (another image, a downsampled pyramid level) are assigned to
    their nearest codeword, as :meth:`Codebook.encode` does.

    Parameters
    ----------
    codebook : Codebook
        Fitted.
    hist : ColorHistogram, optional
        The histogram the codebook was fitted on.
    per_color : ndarray, optional
        The fit's label of each colour of ``hist``.
    """

    def __init__(self, codebook: Codebook, hist=None, per_color=None):
        codebook.check_fitted()
        self.codebook = codebook
        self.dtype = index_dtype(codebook.n_colors_)
        codec = KeyCodec(codebook.dtype_, codebook.channels_)
        self.table = None
        if codec.dense and hist is not None and hist.keys is not None:
            # One spare value above K marks colours the table does not know.
            k = codebook.n_colors_
            table_dtype = index_dtype(k + 1) if k + 1 <= MAX_COLORS else np.dtype(np.uint32)
            self.unknown = np.iinfo(table_dtype).max
            self.table = np.full(1 << (8 * codec.nbytes), self.unknown, dtype=table_dtype)
            self.table[hist.keys] = per_color
        self._codec = codec
        self._token = None

    def __dask_tokenize__(self):
        # Deterministic graph keys: the same fit gives the same label arrays' names in
        # every process, which a resumed write checks (io.omezarr fingerprints them).
        # Taken once: the table's later entries (see __call__) follow from the codebook.
        if self._token is None:
            import json

            from dask.base import tokenize

            # The codebook as data (parameters, palette, centroids, scale): all that
            # encoding uses; the threads it may use do not change a label.
            data = self.codebook.to_dict()
            data["params"].pop("n_threads", None)
            book = json.dumps(data, sort_keys=True, default=str)
            table = None if self.table is None else tokenize(self.table)
            self._token = ("LabelTable", tokenize(book), table)
        return self._token

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Labels of ``pixels`` (n, C), shape (n,)."""
        # One thread: blocks are encoded in parallel by dask's workers.
        if self.table is None:
            hist = ColorHistogram.from_pixels(pixels, n_threads=1)
            return hist.lookup(pixels, self.codebook.label_colors(hist.colors, 1), n_threads=1)
        # The spare value is the dtype's largest: the lookup finds the pixels that have it.
        out, missing = lookup_colors(self._codec, pixels, self.table, n_threads=1, marked=True)
        if len(missing):
            unknown = np.take(pixels, missing, axis=0)
            hist = ColorHistogram.from_pixels(unknown, n_threads=1)
            # Remembered for the next blocks (a fit on a coarser level leaves most of the
            # full resolution's colours out): each entry is the colour's nearest codeword
            # whichever block writes it, so concurrent writes agree.
            self.table[hist.keys] = self.codebook.label_colors(hist.colors, 1)
            out[missing] = lookup_colors(self._codec, unknown, self.table, n_threads=1)
        return out.astype(self.dtype, copy=False)


def _encode_block(block: np.ndarray, table: LabelTable) -> np.ndarray:
    colors = block[..., : table.codebook.channels_]
    # A length-1 colour axis stays: see _encode.
    return table(colors.reshape(-1, colors.shape[-1])).reshape(*colors.shape[:-1], 1)


def _decode_block(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[labels]


def _decode_alpha_block(labels: np.ndarray, alpha: np.ndarray, palette: np.ndarray):
    # labels carry a length-1 colour axis here so that blocks line up with alpha's.
    return np.concatenate([palette[labels[..., 0]], alpha], axis=-1)


def _table_task(table: LabelTable):
    import dask

    # One graph key for the table: shipped once to each worker, not embedded in each task.
    # Named from its content, so that the labels' names are the same in every run.
    return dask.delayed(table, pure=True)


def _encode(x, table_task, dtype):
    import dask.array as da

    # Blocks keep a length-1 colour axis, dropped by indexing (a view): map_blocks with
    # drop_axis would copy every block through np.concatenate first.
    labels = da.map_blocks(
        _encode_block,
        x,
        table_task,
        chunks=(*x.chunks[:-1], (1,)),
        dtype=dtype,
        meta=np.empty((0,) * x.ndim, dtype=dtype),
    )
    return labels[..., 0]


def _decode(labels, palette: np.ndarray, alpha=None):
    import dask.array as da

    channels = palette.shape[1] + (0 if alpha is None else alpha.shape[-1])
    meta = np.empty((0,) * (labels.ndim + 1), dtype=palette.dtype)
    if alpha is None:
        return da.map_blocks(
            _decode_block,
            labels,
            palette,
            new_axis=labels.ndim,
            chunks=(*labels.chunks, (channels,)),
            dtype=palette.dtype,
            meta=meta,
        )
    return da.map_blocks(
        _decode_alpha_block,
        labels[..., np.newaxis],
        alpha.rechunk((*labels.chunks, (alpha.shape[-1],))),
        palette,
        chunks=(*labels.chunks, (channels,)),
        dtype=palette.dtype,
        meta=meta,
    )


def _restore_axis(arr, channel_axis):
    import dask.array as da

    if channel_axis is None:
        return arr[..., 0]
    return da.moveaxis(arr, -1, channel_axis)


def encode_lazy(codebook: Codebook, image, *, table: LabelTable | None = None):
    """Encode an image lazily: labels as a dask array computed block by block.

    Parameters
    ----------
    codebook : Codebook
        Fitted; its ``channel_axis`` and ``alpha`` apply to ``image``.
    image : array, list of arrays or path
        As for :func:`fit_chunked`; a multiscale image gives a list of label arrays.
    table : LabelTable, optional
        A table prefilled with the fit's labels (as :func:`quantize_lazy` uses). Without
        one every block is encoded as :meth:`Codebook.encode` encodes it.

    Returns
    -------
    dask array of shape ``image.shape`` without the colour axis (a list for multiscale),
    uint8 for K <= 256 else uint16
    """
    codebook.check_fitted()
    image_levels, multiscale = levels(image, codebook.channel_axis, BLOCK_PIXELS)
    first = image_levels[0]
    channels = codebook.clustered_channels(first.shape[-1])
    if channels != codebook.channels_ or first.dtype != codebook.dtype_:
        raise ValueError(
            f"image has {channels} colour channels of {first.dtype}, but this codebook "
            f"was fitted on {codebook.channels_} of {codebook.dtype_}."
        )
    task = _table_task(table if table is not None else LabelTable(codebook))
    dtype = index_dtype(codebook.n_colors_)
    labels = [_encode(x, task, dtype) for x in image_levels]
    return labels if multiscale else labels[0]


def decode_lazy(codebook: Codebook, labels):
    """``palette_[labels]`` block by block, for a dask label array (or a list of them)."""
    import dask.array as da

    codebook.check_fitted()
    if isinstance(labels, list | tuple):
        return [decode_lazy(codebook, lab) for lab in labels]
    labels = labels if isinstance(labels, da.Array) else da.asarray(labels)
    return _decode(labels, codebook.palette_)


@dataclass(frozen=True, eq=False)
class LazyQuantization:
    """The result of :func:`quantize_lazy`: a fitted codebook, with the image's labels and
    reconstruction as dask arrays that nothing computes until asked.

    For a multiscale input ``labels`` and ``reconstruction`` are lists of dask arrays, full
    resolution first, encoded with the one codebook. ``q.compute()`` gives the in-memory
    :class:`~napari_kmeans_vq.Quantization` of level 0; ``dask.array.to_zarr`` or
    :func:`napari_kmeans_vq.io.omezarr.write_labels` stream them to disk.

    Attributes
    ----------
    labels : dask array, or list of them (multiscale)
        Codeword indices, uint8 when K <= 256, else uint16.
    reconstruction : dask array, or list of them (multiscale)
        ``palette[labels]`` in the image's dtype.
    palette, centroids, n_colors, codebook, info
        As for :class:`~napari_kmeans_vq.Quantization`.
    distortion, psnr, report
        Measured on the pixels fitted: exact for an exact fit at level 0, estimates from
        the fitted level or sample otherwise (``info["fit"]`` says which).
    multiscale : bool
        Whether ``labels`` and ``reconstruction`` are lists of levels.
    """

    labels: object
    palette: np.ndarray
    centroids: np.ndarray
    reconstruction: object
    distortion: float
    psnr: float
    report: BitReport
    n_colors: int
    codebook: Codebook = field(repr=False)
    info: dict = field(default_factory=dict)
    multiscale: bool = False
    counts: np.ndarray | None = field(default=None, repr=False)

    @property
    def levels(self) -> list:
        """The label arrays as a list (one entry unless multiscale)."""
        return list(self.labels) if self.multiscale else [self.labels]

    @property
    def reconstruction_levels(self) -> list:
        """The reconstructions as a list (one entry unless multiscale)."""
        return list(self.reconstruction) if self.multiscale else [self.reconstruction]

    @property
    def cluster_sizes(self) -> np.ndarray:
        """Pixels in each cluster among those fitted (or measured, for an applied
        codebook), shape (K,)."""
        return self.codebook.cluster_sizes_ if self.counts is None else self.counts

    def to_dict(self) -> dict:
        """A JSON-serialisable summary, as :meth:`Quantization.to_dict`, plus the shapes."""
        out = {
            "n_colors": self.n_colors,
            "shape": list(self.levels[0].shape),
            "distortion": self.distortion,
            "psnr": self.psnr if math.isfinite(self.psnr) else None,
            "report": self.report.to_dict(),
            "palette": self.palette.tolist(),
            "cluster_sizes": self.cluster_sizes.tolist(),
            "info": dict(self.info),
            "lazy": True,
        }
        if self.multiscale:
            out["shapes"] = [list(level.shape) for level in self.levels]
        return out

    def label_counts(self) -> np.ndarray:
        """Pixels of each class in the full-resolution labels, shape (K,): the cluster
        sizes when they count them (an exact fit at level 0), else counted block by block
        (a pass over the image, for a fit on another level or a sample)."""
        if sizes_count_labels(self):
            return np.asarray(self.cluster_sizes, dtype=np.int64)
        return count_labels(self.levels[0], self.n_colors)

    def class_table(self, names=None, *, pixel_size=None, unit: str = "um"):
        """One row per class, as :meth:`Quantization.class_table`, with the pixels of the
        full-resolution labels (:meth:`label_counts`)."""
        return result_class_table(
            self, self.label_counts(), names=names, pixel_size=pixel_size, unit=unit
        )

    def compute(self) -> Quantization:
        """The in-memory :class:`Quantization` of the full-resolution level."""
        import dask

        return self.with_arrays(*dask.compute(self.levels[0], self.reconstruction_levels[0]))

    def with_arrays(self, labels, reconstruction) -> Quantization:
        """A :class:`Quantization` of this fit with computed full-resolution arrays (its
        cluster sizes counted from ``labels`` when the fit's do not count them)."""
        counts = self.counts
        if not sizes_count_labels(self):
            counts = count_values(labels, self.n_colors)
        return Quantization(
            labels=labels,
            palette=self.palette,
            centroids=self.centroids,
            reconstruction=reconstruction,
            distortion=self.distortion,
            psnr=self.psnr,
            report=self.report,
            n_colors=self.n_colors,
            codebook=self.codebook,
            info=dict(self.info),
            counts=counts,
        )


def sizes_count_labels(result) -> bool:
    """Whether ``result.cluster_sizes`` are the pixel counts of its full-resolution labels:
    an exact fit of level 0 (or an in-memory result); a fit on another level or a sample
    counts other pixels."""
    info = getattr(result, "info", None) or {}
    return info.get("fit", "exact") == "exact" and info.get("fit_level", 0) == 0


def count_labels(labels, n_colors: int) -> np.ndarray:
    """Pixels of each value 0 .. n_colors - 1 in a dask (or zarr) label array, counted
    block by block, shape (n_colors,)."""
    import dask
    import dask.array as da

    x = labels if isinstance(labels, da.Array) else da.from_zarr(labels)
    parts = [dask.delayed(count_values)(b, n_colors) for b in x.to_delayed().ravel()]
    return np.asarray(dask.delayed(sum)(parts).compute(), dtype=np.int64)


def quantize_lazy(
    image,
    n_colors: int | None = None,
    *,
    codebook: Codebook | None = None,
    fit: str = "auto",
    fit_level: int = 0,
    n_samples: int = DEFAULT_SAMPLE,
    block_pixels: int = BLOCK_PIXELS,
    progress=None,
    **options,
) -> LazyQuantization:
    """:func:`napari_kmeans_vq.quantize` for images larger than memory.

    The fit runs now (block by block, see :func:`fit_chunked`); the labels and the
    reconstruction are dask arrays, computed block by block through a lookup table when
    asked for, so the image is never held in memory whole. For 8-bit colour the fit is
    exact, and the palette and labels equal ``quantize(numpy.asarray(image), ...)``.

    Parameters
    ----------
    image : array, list of arrays or path
        numpy (or memory-mapped), dask or zarr array; a multiscale image (list of arrays,
        full resolution first: napari's multiscale layer data); or a zarr / OME-Zarr /
        TIFF path.
    n_colors : int or "auto", optional
        K; required unless ``codebook`` is given. ``"auto"`` (with ``target_psnr`` or
        ``target_j``, and ``k_max``, in ``options``) chooses K as the in-memory
        :func:`napari_kmeans_vq.core.quantize.quantize` does, every K fitted on the
        histogram of ``fit_level`` (or on a sample, see ``fit``).
    codebook : Codebook, optional
        A fitted codebook to apply instead of fitting one (as for
        :func:`napari_kmeans_vq.core.quantize.quantize`); ``fit`` then says how J, PSNR and
        the class sizes are measured: over every pixel of ``fit_level`` (``"exact"``) or on
        a sample (``"sample"``). Nothing is refitted.
    fit : {"auto", "exact", "sample"}, default "auto"
        See :func:`fit_chunked`.
    fit_level : int, default 0
        Multiscale level to fit on.
    n_samples : int
        Pixels sampled for a sampled fit.
    block_pixels : int
        Pixels per dask block for numpy and zarr inputs (dask inputs keep their chunks).
    progress : callable, optional
        ``progress(stage, fraction_done)`` while fitting: stages ``"histogram"`` (on dask's
        local schedulers) and ``"fit"``. Encoding happens later, when the dask arrays are
        computed (:func:`dask_progress` reports that). An exception raised in it stops the
        work, as for :func:`napari_kmeans_vq.quantize`.
    **options
        The :class:`~napari_kmeans_vq.Codebook` parameters (``random_state``,
        ``color_space``, ``stain_vectors``, ``n_init``, ``max_iter``, ``tol``, ``alpha``,
        ``channel_axis``, ``effort``, ``n_threads``), as for
        :func:`napari_kmeans_vq.quantize`.

    Returns
    -------
    LazyQuantization
        ``distortion``, ``psnr``, ``report`` and ``cluster_sizes`` describe the pixels
        fitted: exact for an exact fit at level 0, estimates from the fitted level or the
        sample otherwise (``info["fit"]`` and ``info["fit_level"]`` say which).
    """
    start = time.perf_counter()
    _refuse_in_memory_options(options)
    if codebook is not None:
        return _apply_lazy(
            codebook, image, n_colors, fit, fit_level, n_samples, block_pixels, progress, options
        )
    targets = {k: options.pop(k) for k in ("target_psnr", "target_j", "k_max") if k in options}
    auto = isinstance(n_colors, str) and n_colors.lower() == "auto"
    search = None
    if auto:
        target = check_target(targets.get("target_psnr"), targets.get("target_j"))
        k_max = check_k_max(targets.get("k_max", DEFAULT_K_MAX))
        probe = Codebook(1, **options)
        probe.check_params()
        hist, state = _level_histogram(
            probe, image, probe.channel_axis, fit, fit_level, n_samples, block_pixels, progress
        )
        search = search_histogram(
            hist, state["x"].dtype, target=target, k_max=k_max, progress=progress, **options
        )
        codebook = search.codebook
        # A sample's colours say nothing about the rest: the table maps nothing in advance.
        exact = state["fit"] == "exact"
        hist, per_color = (hist, search.per_color) if exact else (None, None)
    else:
        if targets:
            raise ValueError("target_psnr, target_j and k_max are for n_colors='auto'.")
        if n_colors is None:
            raise ValueError("n_colors is required: K, the number of colours (or pass codebook=).")
        codebook = Codebook(n_colors, **options)
        hist, per_color, state = fit_histogram_or_sample(
            codebook, image, fit, fit_level, n_samples, block_pixels, progress
        )
    channel_axis, alpha = codebook.channel_axis, codebook.alpha
    image_levels = state["levels"]
    task = _table_task(LabelTable(codebook, hist, per_color))
    dtype = index_dtype(codebook.n_colors_)
    labels, recons = [], []
    for x in image_levels:
        lab = _encode(x, task, dtype)
        kept = x[..., 3:] if codebook.clustered_channels(x.shape[-1]) != x.shape[-1] else None
        labels.append(lab)
        recons.append(_restore_axis(_decode(lab, codebook.palette_, kept), channel_axis))
    fitted = state["fit_pixels"] if state["fit"] == "exact" else state["n_samples"]
    n_pixels = math.prod(image_levels[0].shape[:-1])
    distortion, psnr, report = fit_summary(codebook, n_pixels, fitted)
    info = fit_info(
        codebook,
        codebook.n_colors_ if auto else n_colors,
        codebook.random_state,
        alpha if image_levels[0].shape[-1] == 4 else None,
    )
    if search is not None:
        info |= {"n_colors_requested": "auto", "auto": search.to_dict()}
    info |= {
        "fit": state["fit"],
        "fit_level": state["fit_level"],
        "fit_pixels": state["fit_pixels"],
        "n_samples": state["n_samples"],
        "n_levels": len(image_levels),
        "fit_seconds": state["seconds"],
        "seconds": time.perf_counter() - start,
    }
    return _lazy_result(
        codebook, labels, recons, state["multiscale"], distortion, psnr, report, info
    )


def _lazy_result(
    codebook, labels, recons, multiscale, distortion, psnr, report, info, counts=None
) -> LazyQuantization:
    """The result of a lazy run: one level's arrays, or every level's for a multiscale
    input."""
    return LazyQuantization(
        labels=labels if multiscale else labels[0],
        palette=codebook.palette_,
        centroids=codebook.centroids_,
        reconstruction=recons if multiscale else recons[0],
        distortion=float(distortion),
        psnr=float(psnr),
        report=report,
        n_colors=codebook.n_colors_,
        codebook=codebook,
        info=info,
        multiscale=multiscale,
        counts=counts,
    )


def _level_histogram(
    codebook,
    image,
    channel_axis,
    fit,
    fit_level,
    n_samples,
    block_pixels,
    progress,
    n_threads=None,
):
    """The colour histogram of one level (exact, block by block) or of a sample of it,
    without fitting; and the levels, mode and pixels, as ``fit_histogram_or_sample``
    (``n_threads``: default the codebook's)."""
    n_threads = codebook.n_threads if n_threads is None else n_threads
    start = time.perf_counter()
    mode, n_samples, image_levels, multiscale, fit_level = fit_plan(
        image, channel_axis, fit, fit_level, n_samples, block_pixels
    )
    x = image_levels[fit_level]
    codebook.check_channels(x.shape[-1])
    channels = codebook.clustered_channels(x.shape[-1])
    if codebook.is_fitted and (channels != codebook.channels_ or x.dtype != codebook.dtype_):
        raise ValueError(
            f"image has {channels} colour channel(s) of {x.dtype}, but the codebook was "
            f"fitted on {codebook.channels_} of {codebook.dtype_}."
        )
    if mode == "auto":
        mode = "exact" if KeyCodec(x.dtype, channels).dense else "sample"
    with stage(progress, "histogram"):
        if mode == "exact":
            hist = color_histogram(x[..., :channels], n_threads)
        else:
            hist = ColorHistogram.from_pixels(
                sample_pixels(x[..., :channels], n_samples, codebook.random_state, n_threads)
            )
    state = {
        "levels": image_levels,
        "multiscale": multiscale,
        "fit": mode,
        "fit_level": fit_level,
        "fit_pixels": math.prod(x.shape[:-1]),
        "n_samples": None if mode == "exact" else hist.n_pixels,
        "x": x,
        "seconds": time.perf_counter() - start,
    }
    return hist, state


def _refuse_in_memory_options(options: dict) -> None:
    """``mask`` and ``min_region`` work on labels in memory: refused here, in one line
    (left as None or 0 they are dropped)."""
    given = []
    for key in ("mask", "min_region"):
        value = options.pop(key, None)
        if value is not None and not (key == "min_region" and value == 0):
            given.append(key)
    if given:
        raise TypeError(
            f"{' and '.join(given)} need the image in memory (a numpy array, for "
            "napari_kmeans_vq.quantize); a dask, zarr, TIFF or multiscale image is quantized "
            "block by block without them."
        )


def _apply_lazy(
    codebook, image, n_colors, fit, fit_level, n_samples, block_pixels, progress, options
):
    """:func:`quantize_lazy` with a fitted codebook: measured on a histogram of the
    fitted level (or a sample), encoded lazily, no fit."""
    start = time.perf_counter()
    unknown = set(options) - {*_APPLY_FIXED, "channel_axis", "n_threads"}
    if unknown:
        raise TypeError(f"quantize_lazy got unexpected option(s): {', '.join(sorted(unknown))}.")
    check_codebook(codebook, n_colors, {k: v for k, v in options.items() if k in _APPLY_FIXED})
    channel_axis = options.get("channel_axis", -1)
    threads = options.get("n_threads")
    threads = codebook.n_threads if threads is None else threads
    hist, state = _level_histogram(
        codebook, image, channel_axis, fit, fit_level, n_samples, block_pixels, progress, threads
    )
    image_levels, multiscale, mode, x = (state[k] for k in ("levels", "multiscale", "fit", "x"))
    channels = codebook.clustered_channels(x.shape[-1])
    per_color = codebook.label_colors(hist.colors, threads)
    inertia, mass = weighted_error(
        hist.colors,
        hist.counts.astype(np.float64),
        codebook.palette_.astype(np.float64),
        per_color,
        threads,
    )
    sizes = np.rint(mass).astype(np.int64)
    # The table is prefilled only for an exact histogram of level 0 (its colours are those
    # encoded); others are looked up as they come.
    exact0 = mode == "exact" and fit_level == 0
    table = LabelTable(codebook, hist if exact0 else None, per_color if exact0 else None)
    task = _table_task(table)
    dtype = index_dtype(codebook.n_colors_)
    labels, recons = [], []
    for level in image_levels:
        lab = _encode(level, task, dtype)
        kept = level[..., 3:] if channels != level.shape[-1] else None
        labels.append(lab)
        recons.append(_restore_axis(_decode(lab, codebook.palette_, kept), channel_axis))
    n_pixels = math.prod(image_levels[0].shape[:-1])
    distortion, psnr, report = fit_summary(codebook, n_pixels, hist.n_pixels, inertia, sizes)
    info = {
        "n_colors_requested": codebook.n_colors_,
        "color_space": codebook.color_space.lower(),
        "codebook": "applied",
        "n_distinct_colors": hist.colors.shape[0],
        "alpha": codebook.alpha if image_levels[0].shape[-1] == 4 else None,
        "fit": mode,
        "fit_level": fit_level,
        "fit_pixels": math.prod(x.shape[:-1]),
        "n_samples": None if mode == "exact" else hist.n_pixels,
        "n_levels": len(image_levels),
        "seconds": time.perf_counter() - start,
    }
    return _lazy_result(
        codebook, labels, recons, multiscale, distortion, psnr, report, info, counts=sizes
    )


# Parameters that a fit sets and an applied codebook keeps.
_APPLY_FIXED = (
    "color_space",
    "stain_vectors",
    "alpha",
    "random_state",
    "n_init",
    "max_iter",
    "tol",
    "effort",
)


def quantize(image, n_colors: int | None = None, **options) -> Quantization | LazyQuantization:
    """Quantize an image of any kind: in memory, or block by block when it is larger.

    numpy arrays (and array-likes) go to the in-memory
    :func:`napari_kmeans_vq.core.quantize.quantize`; dask and zarr arrays and multiscale
    lists go to :func:`quantize_lazy`. ``options`` are those of the function called.

    Returns
    -------
    Quantization, or LazyQuantization for a dask, zarr or multiscale input
    """
    if is_lazy_input(image):
        return quantize_lazy(image, n_colors, **options)
    return quantize_in_memory(image, n_colors, **options)
