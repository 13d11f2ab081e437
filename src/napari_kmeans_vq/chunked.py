"""Whole-slide scale: exact chunked fits and lazy encoding for images larger than memory.

For 8-bit colour the distinct-colour histogram (at most 2**24 entries for RGB) is a
sufficient statistic for k-means over every pixel, so it is accumulated block by block as
a dask reduction (each block's colours and counts, merged in a tree) and the codebook is
fitted on it: the palette and labels equal those of the in-memory fit on the same pixels.
Pixels are then encoded block by block through a dense lookup table indexed by the packed
colour, so the labels and the reconstruction are dask arrays and the image is never held
in memory whole. Images whose colours do not fit a dense table (uint16, float) are fitted
on a deterministic sample of pixels by default (``fit="sample"``), or exactly on their
histogram with ``fit="exact"`` when it fits in memory.

The same calls run unchanged on a ``dask.distributed`` client: whatever scheduler is
active when the dask arrays are computed is used.

dask is imported only when this module's functions are called (it is an optional
dependency: ``pip install napari-kmeans-vq[large]``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ._validation import MAX_CHANNELS, check_choice, check_int
from .codebook import Codebook, label_dtype
from .histogram import ColorHistogram, KeyCodec, distinct_keys
from .kmeans import assign
from .quantize import Quantization, fit_info, fit_summary

FIT_MODES = ("auto", "exact", "sample")
# Pixels per dask block: big enough that per-block overhead is small, small enough that
# a block's keys and sort buffers (about 20 bytes a pixel) stay well under 100 MiB.
BLOCK_PIXELS = 1 << 22
DEFAULT_SAMPLE = 1 << 20
# Blocks merged together at each level of the histogram reduction tree.
SPLIT_EVERY = 8


# -- input handling ---------------------------------------------------------------------


def _is_array_module(obj, prefixes) -> bool:
    return type(obj).__module__.split(".")[0] in prefixes


def is_lazy_input(image) -> bool:
    """Whether ``image`` should go through :func:`quantize_lazy` rather than eager code.

    True for dask and zarr arrays and for multiscale images: a list or tuple (or napari's
    ``MultiScaleData``) of arrays, full resolution first. Never imports dask.
    """
    if _is_array_module(image, ("dask", "zarr")):
        return True
    return _is_multiscale(image)


def _is_multiscale(image) -> bool:
    if isinstance(image, str | bytes | np.ndarray) or not isinstance(image, Sequence):
        return False
    return len(image) > 0 and all(hasattr(level, "shape") for level in image)


def open_image(path):
    """Open a zarr array, an OME-Zarr image or a (pyramidal) TIFF without reading pixels.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.zarr`` directory (a plain array, or an OME-Zarr image whose ``multiscales``
        lists its levels) or a ``.tif``/``.tiff`` file, read through tifffile's zarr view.

    Returns
    -------
    zarr array, or list of zarr arrays (full resolution first) for a multiscale image
    """
    import zarr

    path = os.fspath(path)
    if path.lower().endswith((".tif", ".tiff", ".svs", ".ndpi")):
        import tifffile

        node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    else:
        node = zarr.open(path, mode="r")
    if isinstance(node, zarr.Array):
        return node
    multiscales = node.attrs.get("multiscales") or node.attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return [node[d["path"]] for d in multiscales[0]["datasets"]]
    arrays = sorted(node.array_keys())
    if not arrays:
        raise ValueError(f"path {path!r} holds a zarr group with no arrays and no multiscales.")
    levels = sorted((node[k] for k in arrays), key=lambda a: -math.prod(a.shape))
    return levels if len(levels) > 1 else levels[0]


def _spatial_chunks(shape, native, block_pixels):
    """Chunks for the spatial axes: multiples of the native ones, about block_pixels each."""
    chunks = [max(1, min(c, s)) for c, s in zip(native, shape, strict=True)]
    # Grow the last two axes (rows and columns) alternately, keeping native multiples.
    axes = list(range(len(shape)))[-2:]
    grown = True
    while math.prod(chunks) * 2 <= block_pixels and grown:
        grown = False
        for ax in reversed(axes):
            if chunks[ax] < shape[ax] and math.prod(chunks) * 2 <= block_pixels:
                chunks[ax] = min(chunks[ax] * 2, shape[ax])
                grown = True
    return tuple(chunks)


def as_dask(image, *, channel_axis: int | None = -1, block_pixels: int = BLOCK_PIXELS):
    """A dask array with the colour axis last in one chunk, and about block_pixels a block.

    numpy (including memory-mapped) arrays, zarr arrays, tifffile zarr views and dask arrays
    are accepted; nothing is read. Blocks of a zarr array are whole multiples of its chunks
    (a chunk larger than block_pixels is one block: splitting it would decompress it once
    per piece). A dask array keeps its chunks unless its colour axis is split. Working
    memory is about 20 bytes per pixel of a block, per thread.
    """
    import dask.array as da

    block_pixels = check_int(block_pixels, "block_pixels")
    if block_pixels < 1:
        raise ValueError(f"block_pixels must be a positive integer, got {block_pixels}.")
    if isinstance(image, str | os.PathLike):
        image = open_image(image)
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise TypeError(
            "image must be an array (numpy, dask, zarr) or a list of arrays (multiscale), "
            f"got {type(image).__name__}."
        )
    ndim = len(image.shape)
    if channel_axis is not None:
        channel_axis = check_int(channel_axis, "channel_axis")
        if ndim < 2:
            raise ValueError(
                f"image has no colour axis: shape {tuple(image.shape)}. Pass an array of shape "
                "(..., C) with the colour axis last, or channel_axis=None for a scalar image."
            )
        if not -ndim <= channel_axis < ndim:
            raise ValueError(
                f"channel_axis={channel_axis} is out of range for an image with {ndim} axes."
            )
        channel_axis %= ndim
    if isinstance(image, da.Array):
        x = image
    else:
        native = getattr(image, "chunks", None)
        if not (isinstance(native, tuple) and all(isinstance(c, int) for c in native)):
            # In memory (or memory-mapped): square blocks of about block_pixels.
            spatial = [i for i in range(ndim) if i != channel_axis]
            side = max(1, math.isqrt(block_pixels))
            native = tuple(side if i in spatial[-2:] else 1 for i in range(ndim))
        shape = tuple(image.shape)
        if channel_axis is not None:
            spatial = [i for i in range(ndim) if i != channel_axis]
            sp = _spatial_chunks(
                [shape[i] for i in spatial], [native[i] for i in spatial], block_pixels
            )
            chunks = [0] * ndim
            for i, c in zip(spatial, sp, strict=True):
                chunks[i] = c
            chunks[channel_axis] = shape[channel_axis]
        else:
            chunks = _spatial_chunks(shape, native, block_pixels)
        x = da.from_array(image, chunks=tuple(chunks), asarray=True)
    if x.dtype == bool:
        x = x.astype(np.uint8)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(
            "image must have an integer or floating-point dtype (uint8, uint16, float32, "
            f"float64, ...), got dtype {x.dtype}."
        )
    if channel_axis is None:
        x = x[..., np.newaxis]
    else:
        x = da.moveaxis(x, channel_axis, -1)
        if x.shape[-1] > MAX_CHANNELS:
            raise ValueError(
                f"image has no colour axis: its colour axis (axis {channel_axis}) has "
                f"{x.shape[-1]} entries, more than the {MAX_CHANNELS} accepted. For a "
                "grayscale or scalar image pass channel_axis=None; for RGB use shape (..., 3)."
            )
        if len(x.chunks[-1]) > 1:
            x = x.rechunk({x.ndim - 1: -1})
    if x.size == 0:
        raise ValueError(f"image is empty (shape {x.shape}); it needs at least one pixel.")
    return x


def _levels(image, channel_axis, block_pixels):
    """The image as a list of dask levels (one for a single image) and whether multiscale."""
    if isinstance(image, str | os.PathLike):
        image = open_image(image)
    if _is_multiscale(image):
        levels = [
            as_dask(lv, channel_axis=channel_axis, block_pixels=block_pixels) for lv in image
        ]
        first = levels[0]
        for i, lv in enumerate(levels[1:], 1):
            if lv.dtype != first.dtype or lv.shape[-1] != first.shape[-1]:
                raise ValueError(
                    f"multiscale level {i} is {lv.shape[-1]} channels of {lv.dtype}, but level "
                    f"0 is {first.shape[-1]} of {first.dtype}; all levels must match."
                )
        return levels, True
    if isinstance(image, list | tuple):
        raise TypeError(
            "image must be an array, or a list of arrays for a multiscale image (full "
            f"resolution first); got a {type(image).__name__} of non-arrays."
        )
    return [as_dask(image, channel_axis=channel_axis, block_pixels=block_pixels)], False


# -- the chunked histogram -----------------------------------------------------------------


def _block_histogram(block: np.ndarray) -> ColorHistogram:
    pixels = block.reshape(-1, block.shape[-1])
    if np.issubdtype(pixels.dtype, np.signedinteger) and pixels.min() < 0:
        raise ValueError("image has negative values; integer images must be non-negative.")
    if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
        raise ValueError(
            "image contains NaN or infinite values; only finite values can be quantized."
        )
    codec = KeyCodec(pixels.dtype, pixels.shape[1])
    if not codec.usable:
        # The per-pixel inverse of unpackable colours is only good for this block: drop it.
        return replace(ColorHistogram.from_pixels(pixels), inverse=None)
    # One sort per block (blocks are bounded in size): the same sorted keys and counts as
    # ColorHistogram.from_pixels.
    keys, counts = distinct_keys(codec.keys(pixels))
    return ColorHistogram(codec.colors(keys), counts.astype(np.int64), keys, None, codec)


def _merge_histograms(*hists: ColorHistogram) -> ColorHistogram:
    return ColorHistogram.merge(list(hists))


def color_histogram(x) -> ColorHistogram:
    """The distinct colours of a dask array (..., C) and their counts, block by block.

    Each block's histogram is computed where the block is and the histograms are merged
    in a tree of :data:`SPLIT_EVERY`, so memory holds a few blocks and histograms, not the
    image. The result is identical to ``ColorHistogram.from_pixels`` on all the pixels.
    """
    import dask

    parts = [dask.delayed(_block_histogram)(b) for b in x.to_delayed().ravel()]
    while len(parts) > 1:
        parts = [
            dask.delayed(_merge_histograms)(*parts[i : i + SPLIT_EVERY])
            for i in range(0, len(parts), SPLIT_EVERY)
        ]
    (hist,) = dask.compute(parts[0])
    return hist


def _seed(random_state) -> int:
    if random_state is None:
        return 0
    if isinstance(random_state, np.random.Generator):
        # Draw from a copy: the caller's generator is left where it was.
        return int(copy.deepcopy(random_state).integers(1 << 62))
    return check_int(random_state, "random_state")


def _block_sample(block: np.ndarray, n: int, seed: int, index: tuple) -> np.ndarray:
    pixels = block.reshape(-1, block.shape[-1])
    n = min(n, pixels.shape[0])
    rng = np.random.default_rng((seed, *index))
    rows = np.sort(rng.choice(pixels.shape[0], size=n, replace=False))
    return np.ascontiguousarray(pixels[rows])


def sample_pixels(x, n_samples: int, random_state=0) -> np.ndarray:
    """About ``n_samples`` pixels of a dask array (..., C), drawn evenly from every block.

    Each block contributes in proportion to its size, drawn without replacement with a
    generator seeded by ``(random_state, block index)``, so the sample is the same whatever
    the scheduler and order of execution.

    Returns
    -------
    ndarray, shape (n, C)
    """
    import dask

    total = math.prod(x.shape[:-1])
    seed = _seed(random_state)
    blocks = x.to_delayed()
    tasks = []
    for index in np.ndindex(blocks.shape):
        block_px = math.prod(c[i] for c, i in zip(x.chunks[:-1], index[:-1], strict=True))
        n = max(1, math.ceil(n_samples * block_px / total))
        tasks.append(dask.delayed(_block_sample)(blocks[index], n, seed, index))
    return np.concatenate(dask.compute(*tasks), axis=0)


# -- the label table ------------------------------------------------------------------------


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
        codebook._require_fitted()
        self.codebook = codebook
        self.dtype = label_dtype(codebook.n_colors_)
        codec = KeyCodec(codebook.dtype_, codebook.channels_)
        self.table = None
        if codec.dense and hist is not None and hist.keys is not None:
            # One spare value above K marks colours the table does not know.
            k = codebook.n_colors_
            table_dtype = label_dtype(k + 1) if k + 1 <= 65_536 else np.dtype(np.uint32)
            self.unknown = np.iinfo(table_dtype).max
            self.table = np.full(1 << (8 * codec.nbytes), self.unknown, dtype=table_dtype)
            self.table[hist.keys] = per_color
        self._codec = codec

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Labels of ``pixels`` (n, C), shape (n,)."""
        if self.table is None:
            return self._nearest(pixels)
        out = np.take(self.table, self._codec.keys(pixels))
        missing = out == self.unknown
        if missing.any():
            out[missing] = self._nearest(pixels[missing])
        return out.astype(self.dtype, copy=False)

    def _nearest(self, pixels: np.ndarray) -> np.ndarray:
        cb = self.codebook
        hist = ColorHistogram.from_pixels(pixels)
        per_color = assign(cb._to_space(hist.colors), cb._encode_centers)
        return cb._lookup(hist, pixels, per_color).astype(self.dtype, copy=False)


def _encode_block(block: np.ndarray, table: LabelTable) -> np.ndarray:
    colors = block[..., : table.codebook.channels_]
    return table(colors.reshape(-1, colors.shape[-1])).reshape(colors.shape[:-1])


def _decode_block(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return palette[labels]


def _decode_alpha_block(labels: np.ndarray, alpha: np.ndarray, palette: np.ndarray):
    # labels carry a length-1 colour axis here so that blocks line up with alpha's.
    return np.concatenate([palette[labels[..., 0]], alpha], axis=-1)


def _table_task(table: LabelTable):
    import dask

    # One graph key for the table: shipped once to each worker, not embedded in each task.
    return dask.delayed(table, pure=False)


def _encode(x, table_task, dtype):
    import dask.array as da

    return da.map_blocks(
        _encode_block,
        x,
        table_task,
        drop_axis=x.ndim - 1,
        dtype=dtype,
        meta=np.empty((0,) * (x.ndim - 1), dtype=dtype),
    )


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


# -- progress and cancelling ------------------------------------------------------------------


class Cancelled(RuntimeError):
    """Raised out of a dask computation stopped by :func:`dask_progress`'s ``should_stop``."""


def dask_progress(on_progress=None, should_stop=None):
    """A context manager reporting progress of local dask computations, and stopping them.

    For GUIs: wrap the calls (``quantize_lazy``, ``write_labels``, ``.compute()``) in
    ``with dask_progress(report, cancelled):`` on a worker thread. ``on_progress(done,
    total)`` is called after each task with the computation's task counts;
    ``should_stop()`` is polled before each task and, when true, the computation stops
    with :class:`Cancelled`. Works with dask's local schedulers (threads, processes,
    synchronous); on a ``distributed`` client use its futures and ``Client.cancel``.
    """
    from dask.callbacks import Callback

    class _Progress(Callback):
        def _start_state(self, dsk, state):
            self._state = state

        def _pretask(self, key, dsk, state):
            if should_stop is not None and should_stop():
                raise Cancelled("computation cancelled")

        def _posttask(self, key, result, dsk, state, worker_id):
            if on_progress is not None:
                done = len(state["finished"])
                left = sum(len(state[k]) for k in ("ready", "waiting", "running"))
                on_progress(done, done + left)

    return _Progress()


def _stage(progress, stage: str):
    """A dask_progress reporting ``progress(stage, fraction)``, or a no-op without one."""
    if progress is None:
        return contextlib.nullcontext()
    return dask_progress(lambda done, total: progress(stage, done / max(total, 1)))


# -- public API --------------------------------------------------------------------------------


def fit_chunked(
    image,
    n_colors: int = 16,
    *,
    fit: str = "auto",
    fit_level: int = 0,
    n_samples: int = DEFAULT_SAMPLE,
    block_pixels: int = BLOCK_PIXELS,
    progress=None,
    **options,
):
    """Fit a :class:`Codebook` to an image of any size, block by block.

    Parameters
    ----------
    image : array, list of arrays or path
        numpy (or memory-mapped), dask or zarr array of shape (..., C); a multiscale image
        (list of arrays, full resolution first); or a zarr / OME-Zarr / TIFF path.
    n_colors : int
        K.
    fit : {"auto", "exact", "sample"}, default "auto"
        ``"exact"`` accumulates the distinct-colour histogram block by block and runs
        k-means over all pixels: the codebook equals the in-memory fit. ``"sample"`` fits
        on ``n_samples`` pixels drawn evenly from every block (deterministic for a seed).
        ``"auto"`` is exact when colours pack into a dense table (8-bit RGB, 8- or 16-bit
        grey), where the histogram has at most 2**24 entries, and sampled otherwise.
    fit_level : int, default 0
        Level of a multiscale image to fit on (0 = full resolution; higher is faster).
    n_samples : int, default 1,048,576
        Pixels sampled when ``fit="sample"``.
    block_pixels : int
        Pixels per dask block for numpy and zarr inputs.
    progress : callable, optional
        Called as ``progress(stage, fraction_done)`` with stage ``"histogram"`` (blocks
        read, on dask's local schedulers) and ``"fit"``, as by
        :func:`napari_kmeans_vq.quantize`; an exception raised in it stops the work.
    **options
        Codebook parameters: ``color_space``, ``random_state``, ``n_init``, ``max_iter``,
        ``tol``, ``alpha``, ``channel_axis``.

    Returns
    -------
    Codebook
    """
    codebook = Codebook(n_colors, **options)
    _fit(codebook, image, fit, fit_level, n_samples, block_pixels, progress)
    return codebook


def fit_codebook(
    codebook: Codebook,
    image,
    *,
    fit: str = "auto",
    fit_level: int = 0,
    n_samples: int = DEFAULT_SAMPLE,
    block_pixels: int = BLOCK_PIXELS,
    progress=None,
) -> Codebook:
    """Fit an existing :class:`Codebook` in place, block by block (what ``Codebook.fit``
    can call for a dask or zarr image); see :func:`fit_chunked` for the parameters.

    Returns
    -------
    codebook
    """
    _fit(codebook, image, fit, fit_level, n_samples, block_pixels, progress)
    return codebook


def _fit(codebook, image, fit, fit_level, n_samples, block_pixels, progress=None):
    codebook._validated_params()
    mode = check_choice(fit, "fit", FIT_MODES)
    n_samples = check_int(n_samples, "n_samples")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
    levels, multiscale = _levels(image, codebook.channel_axis, block_pixels)
    fit_level = check_int(fit_level, "fit_level")
    if not 0 <= fit_level < len(levels):
        raise ValueError(
            f"fit_level must be between 0 and {len(levels) - 1} (the image has "
            f"{len(levels)} level(s)), got {fit_level}."
        )
    x = levels[fit_level]
    channels = codebook._clustered_channels(x.shape[-1])
    if codebook.color_space.lower() == "lab" and channels != 3:
        raise ValueError(
            f"color_space='lab' needs RGB (3 channels, or RGBA with alpha='ignore'); "
            f"image has {x.shape[-1]} channels. Use color_space='rgb'."
        )
    if mode == "auto":
        mode = "exact" if KeyCodec(x.dtype, channels).dense else "sample"
    start = time.perf_counter()
    hist = per_color = None
    if mode == "exact":
        with _stage(progress, "histogram"):
            hist = color_histogram(x[..., :channels])
        per_color = codebook.fit_histogram(hist, x.dtype, progress=progress)
    else:
        with _stage(progress, "histogram"):
            sample = sample_pixels(x, n_samples, codebook.random_state)
        codebook.fit(sample, progress=progress)
        # A sample's colours say nothing about the rest: the table maps nothing in advance.
    state = {
        "levels": levels,
        "multiscale": multiscale,
        "fit": mode,
        "fit_level": fit_level,
        "fit_pixels": math.prod(x.shape[:-1]),
        "n_samples": None if mode == "exact" else min(n_samples, math.prod(x.shape[:-1])),
        "seconds": time.perf_counter() - start,
    }
    return LabelTable(codebook, hist, per_color), state


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
    codebook._require_fitted()
    levels, multiscale = _levels(image, codebook.channel_axis, BLOCK_PIXELS)
    channels = codebook._clustered_channels(levels[0].shape[-1])
    if channels != codebook.channels_ or levels[0].dtype != codebook.dtype_:
        raise ValueError(
            f"image has {channels} colour channels of {levels[0].dtype}, but this codebook "
            f"was fitted on {codebook.channels_} of {codebook.dtype_}."
        )
    task = _table_task(table if table is not None else LabelTable(codebook))
    dtype = label_dtype(codebook.n_colors_)
    labels = [_encode(x, task, dtype) for x in levels]
    return labels if multiscale else labels[0]


def decode_lazy(codebook: Codebook, labels):
    """``palette_[labels]`` block by block, for a dask label array (or a list of them)."""
    import dask.array as da

    codebook._require_fitted()
    if isinstance(labels, list | tuple):
        return [decode_lazy(codebook, lab) for lab in labels]
    labels = labels if isinstance(labels, da.Array) else da.asarray(labels)
    return _decode(labels, codebook.palette_)


@dataclass(frozen=True, eq=False)
class LazyQuantization(Quantization):
    """A :class:`Quantization` whose ``labels`` and ``reconstruction`` are dask arrays.

    For a multiscale input they are lists of dask arrays, full resolution first, encoded
    with the one codebook. Nothing is computed until asked: ``q.labels.compute()``,
    ``dask.array.to_zarr`` or :func:`napari_kmeans_vq.omezarr.write_labels`.

    Attributes
    ----------
    multiscale : bool
        Whether ``labels`` and ``reconstruction`` are lists of levels.
    """

    multiscale: bool = False

    @property
    def levels(self) -> list:
        """The label arrays as a list (one entry unless multiscale)."""
        return list(self.labels) if self.multiscale else [self.labels]

    def to_dict(self) -> dict:
        out = super().to_dict() if not self.multiscale else self._multiscale_dict()
        out["lazy"] = True
        return out

    def _multiscale_dict(self) -> dict:
        first = replace(self, labels=self.labels[0], multiscale=False)
        out = Quantization.to_dict(first)
        out["shapes"] = [list(lv.shape) for lv in self.labels]
        return out

    def compute(self) -> Quantization:
        """The eager :class:`Quantization` (numpy arrays; full resolution only)."""
        import dask

        return self.with_arrays(*dask.compute(self.levels[0], self._reconstruction0()))

    def with_arrays(self, labels, reconstruction) -> Quantization:
        """An ordinary :class:`Quantization` of this fit with computed full-resolution arrays."""
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
        )

    def _reconstruction0(self):
        return self.reconstruction[0] if self.multiscale else self.reconstruction


def quantize_lazy(
    image,
    n_colors: int,
    *,
    random_state=0,
    color_space: str = "rgb",
    n_init="auto",
    max_iter: int = 300,
    tol: float = 1e-4,
    alpha: str = "ignore",
    channel_axis: int | None = -1,
    fit: str = "auto",
    fit_level: int = 0,
    n_samples: int = DEFAULT_SAMPLE,
    block_pixels: int = BLOCK_PIXELS,
    progress=None,
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
    n_colors, random_state, color_space, n_init, max_iter, tol, alpha, channel_axis
        As for :func:`napari_kmeans_vq.quantize`.
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

    Returns
    -------
    LazyQuantization
        ``distortion``, ``psnr``, ``report`` and ``cluster_sizes`` describe the pixels
        fitted: exact for an exact fit at level 0, estimates from the fitted level or the
        sample otherwise (``info["fit"]`` and ``info["fit_level"]`` say which).
    """
    start = time.perf_counter()
    codebook = Codebook(
        n_colors,
        color_space=color_space,
        random_state=random_state,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        alpha=alpha,
        channel_axis=channel_axis,
    )
    table, state = _fit(codebook, image, fit, fit_level, n_samples, block_pixels, progress)
    levels = state["levels"]
    task = _table_task(table)
    dtype = label_dtype(codebook.n_colors_)
    labels, recons = [], []
    for x in levels:
        lab = _encode(x, task, dtype)
        kept = x[..., 3:] if codebook._clustered_channels(x.shape[-1]) != x.shape[-1] else None
        labels.append(lab)
        recons.append(_restore_axis(_decode(lab, codebook.palette_, kept), channel_axis))
    fitted = state["fit_pixels"] if state["fit"] == "exact" else state["n_samples"]
    n_pixels = math.prod(levels[0].shape[:-1])
    distortion, psnr, report = fit_summary(codebook, n_pixels, fitted)
    info = fit_info(codebook, n_colors, random_state, alpha if levels[0].shape[-1] == 4 else None)
    info |= {
        "fit": state["fit"],
        "fit_level": state["fit_level"],
        "fit_pixels": state["fit_pixels"],
        "n_samples": state["n_samples"],
        "n_levels": len(levels),
        "fit_seconds": state["seconds"],
        "seconds": time.perf_counter() - start,
    }
    multiscale = state["multiscale"]
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
    )


__all__ = [
    "Cancelled",
    "LabelTable",
    "LazyQuantization",
    "as_dask",
    "color_histogram",
    "dask_progress",
    "decode_lazy",
    "encode_lazy",
    "fit_chunked",
    "fit_codebook",
    "is_lazy_input",
    "open_image",
    "quantize_lazy",
    "sample_pixels",
]
