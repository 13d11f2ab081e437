"""Fitting a codebook block by block: the exact chunked colour histogram, or a sample."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import replace

import numpy as np

from ..core._threads import resolve
from ..core.codebook import Codebook
from ..core.histogram import ColorHistogram, KeyCodec, counting_tables, distinct_counts
from ..core.validation import check_choice, check_int, check_values
from .inputs import BLOCK_PIXELS, levels
from .progress import stage

FIT_MODES = ("auto", "exact", "sample")
DEFAULT_SAMPLE = 1 << 20
# Blocks merged together at each level of the histogram reduction tree.
SPLIT_EVERY = 8


def _block_histogram(block: np.ndarray) -> ColorHistogram:
    pixels = block.reshape(-1, block.shape[-1])
    check_values(pixels)
    codec = KeyCodec(pixels.dtype, pixels.shape[1])
    if not codec.usable:
        # The per-pixel inverse of unpackable colours is only good for this block: drop it.
        return replace(ColorHistogram.from_pixels(pixels), inverse=None)
    # The same sorted keys and counts as ColorHistogram.from_pixels, one thread per block
    # (dask runs blocks side by side).
    keys, counts = distinct_counts(codec, pixels)
    return ColorHistogram(codec.colors(keys), counts, keys, None, codec)


def _merge_histograms(*hists: ColorHistogram) -> ColorHistogram:
    return ColorHistogram.merge(list(hists))


def dask_workers(n_threads: int | None):
    """Within this block, dask's local schedulers run at most ``n_threads`` tasks at once
    (None: their default); a distributed cluster's workers keep their own threads. Without
    dask installed there is nothing to limit."""
    try:
        import dask
    except ImportError:
        return contextlib.nullcontext()
    if n_threads is None:
        return contextlib.nullcontext()
    return dask.config.set(num_workers=resolve(n_threads))


def color_histogram(x, n_threads: int | None = None) -> ColorHistogram:
    """The distinct colours of a dask array (..., C) and their counts, block by block.

    Each block's histogram is computed where the block is and the histograms are merged
    in a tree of :data:`SPLIT_EVERY`, so memory holds a few blocks and histograms, not the
    image. The result is identical to ``ColorHistogram.from_pixels`` on all the pixels.
    ``n_threads``: see :func:`dask_workers`.
    """
    import dask

    parts = [dask.delayed(_block_histogram)(b) for b in x.to_delayed().ravel()]
    while len(parts) > 1:
        parts = [
            dask.delayed(_merge_histograms)(*parts[i : i + SPLIT_EVERY])
            for i in range(0, len(parts), SPLIT_EVERY)
        ]
    with dask_workers(n_threads), counting_tables():
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


def sample_pixels(x, n_samples: int, random_state=0, n_threads: int | None = None) -> np.ndarray:
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
    with dask_workers(n_threads):
        return np.concatenate(dask.compute(*tasks), axis=0)


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
    fit_histogram_or_sample(codebook, image, fit, fit_level, n_samples, block_pixels, progress)
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
    """Fit an existing :class:`Codebook` in place, block by block (``Codebook.fit`` for
    a dask, zarr or multiscale image); see :func:`fit_chunked` for the parameters.

    Returns
    -------
    codebook
    """
    fit_histogram_or_sample(codebook, image, fit, fit_level, n_samples, block_pixels, progress)
    return codebook


def fit_plan(image, channel_axis, fit, fit_level, n_samples, block_pixels) -> tuple:
    """The fit's options checked against the image: the mode, the sample size, the
    image's levels (dask), whether it is multiscale, and the level to fit on."""
    mode = check_choice(fit, "fit", FIT_MODES)
    n_samples = check_int(n_samples, "n_samples")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}.")
    image_levels, multiscale = levels(image, channel_axis, block_pixels)
    fit_level = check_int(fit_level, "fit_level")
    if not 0 <= fit_level < len(image_levels):
        raise ValueError(
            f"fit_level must be between 0 and {len(image_levels) - 1} (the image has "
            f"{len(image_levels)} level(s)), got {fit_level}."
        )
    return mode, n_samples, image_levels, multiscale, fit_level


def fit_histogram_or_sample(
    codebook, image, fit, fit_level, n_samples, block_pixels, progress=None
) -> tuple:
    """Fit ``codebook`` in place; return the histogram fitted (None for a sample), the
    fit's label of each of its colours, and what was done (levels, mode, pixels, time)."""
    codebook.check_params()
    mode, n_samples, image_levels, multiscale, fit_level = fit_plan(
        image, codebook.channel_axis, fit, fit_level, n_samples, block_pixels
    )
    x = image_levels[fit_level]
    channels = codebook.clustered_channels(x.shape[-1])
    codebook.check_channels(x.shape[-1])
    if mode == "auto":
        mode = "exact" if KeyCodec(x.dtype, channels).dense else "sample"
    start = time.perf_counter()
    hist = per_color = None
    if mode == "exact":
        with stage(progress, "histogram"):
            hist = color_histogram(x[..., :channels], codebook.n_threads)
        per_color = codebook.fit_histogram(hist, x.dtype, progress=progress)
    else:
        with stage(progress, "histogram"):
            sample = sample_pixels(x, n_samples, codebook.random_state, codebook.n_threads)
        codebook.fit(sample, progress=progress)
        # A sample's colours say nothing about the rest: the table maps nothing in advance.
    state = {
        "levels": image_levels,
        "multiscale": multiscale,
        "fit": mode,
        "fit_level": fit_level,
        "fit_pixels": math.prod(x.shape[:-1]),
        "n_samples": None if mode == "exact" else min(n_samples, math.prod(x.shape[:-1])),
        "seconds": time.perf_counter() - start,
    }
    return hist, per_color, state
