"""napari layer-data tuples for a quantized image, built without importing napari.

napari adds a layer from a ``(data, meta, layer_type)`` tuple, the "layer data tuple" its
plugins return. This module builds those tuples from a :class:`~napari_kmeans_vq.Quantization`
(or from labels plus a palette, as a file reader has them), so that the widget, the ``.kvq``
reader and plain scripts produce the same layers::

    import napari
    from napari_kmeans_vq import layer_data

    viewer = napari.Viewer()
    source = viewer.open_sample("napari-kmeans-vq", "ihc")[0]
    for data, meta, layer_type in layer_data(source.data, 16, source_layer=source):
        viewer._add_layer_from_data(data, meta, layer_type)  # or viewer.add_image / add_labels

Two layers come out of one quantization:

1. the reconstruction, ``palette[labels]``, an image layer in the input's dtype (RGB when the
   image has three or four channels);
2. the cluster labels, ``codeword index + 1`` so that no cluster is napari's transparent
   background label 0, in the smallest unsigned dtype that holds K, coloured with exactly the
   palette colours through a direct label colormap, with a ``features`` table (one row per
   cluster) that napari shows in the status bar when the pointer is over a pixel.

Both carry the same summary in ``metadata["napari_kmeans_vq"]``: the bit report, J, PSNR, seed,
K, colour space and palette. A lazy result (a dask, zarr or multiscale input) gives the same
two layers holding dask arrays, multiscale when the input was, computed block by block only
when napari draws them. The widget's report panel (:func:`report_rows`, :func:`sweep_table`)
is written here too, as plain text rows. No napari or Qt import happens here, not even
lazily.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from .._limits import MAX_FIT_COLORS, index_dtype, label_dtype, peak_value
from ..core.bits import bit_report, label_entropy_bits
from ..core.colorspace import palette_rgba
from ..core.kmeans import weighted_error
from ..core.quantize import Quantization, result_class_table
from ..large import quantize

__all__ = [
    "CURVE_METRICS",
    "METADATA_KEY",
    "PixelSize",
    "class_table_for",
    "class_table_view",
    "cluster_features",
    "coded_layer_data",
    "curve_points",
    "curve_target",
    "default_names",
    "is_lazy_quantization",
    "label_colormap",
    "layer_data",
    "layer_snapshot",
    "lazy_coded_layer_data",
    "merge_classes",
    "merge_names",
    "ome_zarr_labels_layer_data",
    "parse_k_list",
    "pixel_size",
    "quantization_layer_data",
    "report_rows",
    "spatial_kwargs",
    "storage_rows",
    "sweep_item",
    "sweep_layer_data",
    "sweep_row",
    "sweep_table",
]

#: Key under which both output layers keep their summary in ``layer.metadata``.
METADATA_KEY = "napari_kmeans_vq"

# Layer attributes that place a layer in the world; outputs copy them from the source so
# they overlay it exactly.
_SPATIAL = ("scale", "translate", "rotate", "shear", "affine", "units", "axis_labels")


def label_colormap(palette: np.ndarray, dtype=None) -> dict:
    """A direct label colormap for labels ``index + 1``, as napari accepts it in layer meta.

    napari turns a mapping ``{label: colour}`` into a ``DirectLabelColormap``; the key
    ``None`` is the colour of labels not in the mapping and 0 is the background. Both are
    transparent here, so every cluster label shows its palette colour exactly.

    Parameters
    ----------
    palette : array_like, shape (K, C)
    dtype : dtype, optional
        See :func:`palette_rgba`.

    Returns
    -------
    dict
        ``{None: (0, 0, 0, 0), 0: (0, 0, 0, 0), i + 1: (r, g, b, a)}`` with floats in [0, 1].
    """
    rgba = palette_rgba(palette, dtype)
    colormap: dict = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for index, colour in enumerate(rgba):
        colormap[index + 1] = tuple(float(c) for c in colour)
    return colormap


def _hex(rgba_row: np.ndarray) -> str:
    r, g, b = (round(float(c) * 255) for c in rgba_row[:3])
    return f"#{r:02x}{g:02x}{b:02x}"


def cluster_features(palette: np.ndarray, counts: np.ndarray, dtype=None, names=None) -> dict:
    """The labels layer's ``features`` table: one row per cluster.

    Parameters
    ----------
    palette : array_like, shape (K, C)
    counts : array_like, shape (K,)
        Pixels in each cluster.
    dtype : dtype, optional
        See :func:`palette_rgba`.
    names : sequence of K str, optional
        Class names; default ``"class 1"`` .. ``"class K"`` (see :func:`default_names`).

    Returns
    -------
    dict of str to ndarray
        ``index`` (the label value, cluster + 1; napari matches rows to labels by it),
        ``name`` (the class name), ``cluster`` (codeword index), ``hex`` (display colour),
        the channel values (``R``, ``G``, ``B``, ``A`` for colour palettes, ``value`` for one
        channel, ``c0``... else), ``pixels`` and ``share`` (fraction of the pixels
        segmented).
    """
    palette = np.asarray(palette)
    if palette.ndim == 1:
        palette = palette[:, None]
    counts = np.asarray(counts, dtype=np.int64)
    k, channels = palette.shape
    if counts.shape != (k,):
        raise ValueError(f"counts must have shape ({k},), got {counts.shape}")
    rgba = palette_rgba(palette, dtype)
    features: dict = {
        "index": np.arange(1, k + 1, dtype=np.int64),
        "name": np.array(_check_names(names, k), dtype=object),
        "cluster": np.arange(k, dtype=np.int64),
        "hex": np.array([_hex(row) for row in rgba], dtype=object),
    }
    if channels in (3, 4):
        names = "RGBA"[:channels]
    elif channels == 1:
        names = ["value"]
    else:
        names = [f"c{i}" for i in range(channels)]
    for column, name in enumerate(names):
        features[name] = palette[:, column].copy()
    total = int(counts.sum())
    features["pixels"] = counts
    features["share"] = counts / total if total else np.zeros(k)
    return features


def _plain(value):
    """A spatial attribute as plain data napari's layer constructors accept."""
    matrix = getattr(value, "affine_matrix", None)  # napari's Affine transform
    if matrix is not None:
        return np.array(matrix, dtype=float)
    if isinstance(value, str | np.ndarray):
        return value
    if isinstance(value, Sequence):
        # units come back as pint units; their str() ("micrometer") round-trips.
        return tuple(v if isinstance(v, int | float | str) else str(v) for v in value)
    return value


def spatial_kwargs(source_layer) -> dict:
    """Where a layer sits in the world, read defensively from any layer-like object.

    Parameters
    ----------
    source_layer : object or None
        Anything with some of ``scale``, ``translate``, ``rotate``, ``shear``, ``affine``,
        ``units`` and ``axis_labels`` (a napari layer, or a stand-in); missing attributes are
        left out.

    Returns
    -------
    dict
        Keyword arguments for a napari layer constructor.
    """
    if source_layer is None:
        return {}
    kwargs = {}
    for name in _SPATIAL:
        try:
            value = getattr(source_layer, name)
        except Exception:  # a property that cannot answer is simply not copied
            continue
        if value is None:
            continue
        kwargs[name] = _plain(value)
    return kwargs


def layer_snapshot(source_layer) -> SimpleNamespace:
    """A plain copy of everything the builders here read from a source layer.

    Read it on napari's thread and pass the copy as ``source_layer`` to builders run in
    another thread, which then never touch a live napari layer: the name and
    ``unique_id`` (the outputs' names and ``source_id`` tag), the placement (see
    :func:`spatial_kwargs`), and the contrast limits and colormap name that a one-channel
    reconstruction copies.
    """
    snapshot = SimpleNamespace(
        name=getattr(source_layer, "name", None),
        unique_id=getattr(source_layer, "unique_id", None),
        **spatial_kwargs(source_layer),
    )
    try:
        limits = source_layer.contrast_limits
    except Exception:  # not an image layer, or a property that cannot answer
        limits = None
    if limits is not None:
        snapshot.contrast_limits = tuple(float(v) for v in limits)
    colormap = getattr(getattr(source_layer, "colormap", None), "name", None)
    if isinstance(colormap, str):
        snapshot.colormap = SimpleNamespace(name=colormap)
    return snapshot


def _source_info(source_layer, name: str | None) -> tuple[str, dict]:
    """Base name for the outputs and the tag that ties them to their source."""
    source_name = getattr(source_layer, "name", None) if source_layer is not None else None
    base = name or source_name or "image"
    tag = {"source": source_name}
    unique_id = getattr(source_layer, "unique_id", None) if source_layer is not None else None
    if unique_id is not None:
        tag["source_id"] = str(unique_id)
    return str(base), tag


def _display_kwargs(source_layer, recon, rgb: bool) -> dict:
    """Contrast and colormap for the reconstruction so it looks like its source."""
    kwargs: dict = {"rgb": rgb}
    if recon.dtype.kind in "ui":
        kwargs["contrast_limits"] = (0.0, peak_value(recon.dtype))
    if not rgb and source_layer is not None:
        limits = getattr(source_layer, "contrast_limits", None)
        if limits is not None:
            kwargs["contrast_limits"] = tuple(float(v) for v in limits)
        colormap = getattr(getattr(source_layer, "colormap", None), "name", None)
        if isinstance(colormap, str):
            kwargs["colormap"] = colormap
    return kwargs


def coded_layer_data(
    labels: np.ndarray,
    palette: np.ndarray,
    *,
    reconstruction: np.ndarray | None = None,
    name: str = "image",
    metadata: dict | None = None,
    source_layer=None,
    counts: np.ndarray | None = None,
    dtype=None,
    mask: np.ndarray | None = None,
    names=None,
) -> list[tuple]:
    """Reconstruction and labels layer tuples from codeword indices and a palette.

    The shared builder behind :func:`quantization_layer_data` and the ``.kvq`` reader.

    Parameters
    ----------
    labels : ndarray of int
        Codeword index per pixel, ``0 .. K-1``.
    palette : ndarray, shape (K, C)
        Codewords in the image's dtype.
    reconstruction : ndarray, optional
        The decoded image (for example with an ignored alpha channel carried over);
        ``palette[labels]`` when not given. A colour axis of length 1 is dropped.
    name : str, default "image"
        Base of the layer names: ``"<name> K=<K> reconstruction"`` and ``"... labels"``.
    metadata : dict, optional
        Stored (copied) under ``metadata["napari_kmeans_vq"]`` of both layers, with ``role``
        set to ``"reconstruction"`` or ``"labels"``.
    source_layer : object, optional
        Supplies the spatial metadata (see :func:`spatial_kwargs`) and, for one-channel
        images, contrast limits and colormap.
    counts : ndarray, shape (K,), optional
        Pixels per cluster; counted from ``labels`` when not given.
    dtype : dtype, optional
        The image's dtype, for display colours; defaults to the palette's.
    mask : bool array of ``labels.shape``, optional
        The pixels segmented; the others get napari's background label 0.
    names : sequence of K str, optional
        Class names, for the ``features`` table's ``name`` column and ``names`` in the
        metadata; default ``"class 1"`` .. ``"class K"``.

    Returns
    -------
    list of (data, meta, layer_type)
        ``[(reconstruction, meta, "image"), (labels + 1, meta, "labels")]``.
    """
    labels = np.asarray(labels)
    palette = _check_palette(palette)
    if labels.dtype.kind not in "ui":
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    k = palette.shape[0]
    if reconstruction is None:
        reconstruction = palette[labels]
    reconstruction = np.asarray(reconstruction)
    if reconstruction.ndim == labels.ndim + 1 and reconstruction.shape[-1] == 1:
        reconstruction = reconstruction[..., 0]
    rgb = reconstruction.ndim == labels.ndim + 1 and reconstruction.shape[-1] in (3, 4)
    if counts is None:
        counts = np.bincount(labels.ravel(), minlength=k)[:k]

    # labels + 1 straight into the output dtype: no int64 temporary the size of the image.
    # (Widen first, then add: uint8 index 255 + 1 must become 256, not wrap to 0.)
    coded = labels.astype(label_dtype(k), copy=True)
    coded += 1
    if mask is not None:
        coded[~mask] = 0

    recon_meta, labels_meta = _layer_metas(
        palette,
        counts,
        rgb=rgb,
        recon_dtype=reconstruction.dtype,
        name=name,
        metadata=metadata,
        source_layer=source_layer,
        dtype=dtype,
        names=names,
    )
    return [(reconstruction, recon_meta, "image"), (coded, labels_meta, "labels")]


def _check_palette(palette) -> np.ndarray:
    palette = np.asarray(palette)
    if palette.ndim == 1:
        palette = palette[:, None]
    if palette.ndim != 2 or palette.shape[0] < 1:
        raise ValueError(f"palette must have shape (K, C) with K >= 1, got {palette.shape}")
    return palette


def _layer_metas(
    palette,
    counts,
    *,
    rgb,
    recon_dtype,
    name,
    metadata,
    source_layer,
    dtype,
    multiscale=False,
    names=None,
) -> tuple[dict, dict]:
    """The two layers' meta dicts: names, colours, features, summary and placement."""
    k = palette.shape[0]
    names = _check_names(names, k)
    summary = dict(metadata or {})
    summary.setdefault("n_colors", k)
    summary.setdefault("palette", palette.tolist())
    summary["names"] = names
    spatial = spatial_kwargs(source_layer)
    title = f"{name} K={k}"
    display = _display_kwargs(source_layer, SimpleNamespace(dtype=np.dtype(recon_dtype)), rgb)
    if multiscale:
        # Without limits napari would read a level to guess them; the palette spans the
        # reconstruction's values exactly.
        if not rgb and "contrast_limits" not in display:
            low, high = float(palette.min()), float(palette.max())
            display["contrast_limits"] = (low, high if high > low else low + 1.0)
        display["multiscale"] = True
    recon_meta = {
        "name": f"{title} reconstruction",
        "metadata": {METADATA_KEY: {**summary, "role": "reconstruction"}},
        **display,
        **spatial,
    }
    labels_meta = {
        "name": f"{title} labels",
        "colormap": label_colormap(palette, dtype),
        "features": cluster_features(palette, counts, dtype, names),
        "metadata": {METADATA_KEY: {**summary, "role": "labels"}},
        **spatial,
    }
    if multiscale:
        labels_meta["multiscale"] = True
    return recon_meta, labels_meta


def _index_to_label(block: np.ndarray, dtype) -> np.ndarray:
    """One block of codeword indices as labels ``index + 1`` (widened first)."""
    out = block.astype(dtype, copy=True)
    out += 1
    return out


def lazy_coded_layer_data(
    labels,
    reconstruction,
    palette: np.ndarray,
    counts: np.ndarray,
    *,
    multiscale: bool,
    name: str = "image",
    metadata: dict | None = None,
    source_layer=None,
    dtype=None,
    channel_axis: int | None = -1,
    names=None,
) -> list[tuple]:
    """Layer tuples for lazy (dask) labels and reconstruction, nothing computed.

    Parameters
    ----------
    labels, reconstruction : dask array, or list of dask arrays (full resolution first)
        Codeword indices and the decoded image, as :class:`~napari_kmeans_vq.chunked.
        LazyQuantization` holds them.
    palette : ndarray, shape (K, C)
    counts : ndarray, shape (K,)
        Pixels per cluster (the fit's; counting them here would read every block).
    multiscale : bool
        Whether ``labels`` and ``reconstruction`` are lists of levels; the layers are then
        napari multiscale layers.
    name, metadata, source_layer, dtype, names
        As for :func:`coded_layer_data`.
    channel_axis : int or None, default -1
        Where the reconstruction's colour axis is; moved last (lazily) for napari.

    Returns
    -------
    list of (data, meta, layer_type)
        As :func:`coded_layer_data`, with dask arrays (lists of them when multiscale):
        labels ``index + 1`` in :func:`labels_dtype`, computed block by block on demand.
    """
    palette = _check_palette(palette)
    k = palette.shape[0]
    label_levels = list(labels) if multiscale else [labels]
    recon_levels = list(reconstruction) if multiscale else [reconstruction]
    if len(label_levels) != len(recon_levels) or not label_levels:
        raise ValueError("labels and reconstruction must have the same number of levels")
    out_dtype = label_dtype(k)
    coded, recons = [], []
    for lab, rec in zip(label_levels, recon_levels, strict=True):
        if np.dtype(lab.dtype).kind not in "ui":
            raise TypeError(f"labels must be an integer array, got dtype {lab.dtype}")
        coded.append(lab.map_blocks(_index_to_label, out_dtype, dtype=out_dtype))
        if channel_axis is not None and rec.ndim == lab.ndim + 1:
            rec = np.moveaxis(rec, channel_axis, -1)  # dask's moveaxis, through numpy
        if rec.ndim == lab.ndim + 1 and rec.shape[-1] == 1:
            rec = rec[..., 0]
        recons.append(rec)
    first, first_labels = recons[0], label_levels[0]
    rgb = first.ndim == first_labels.ndim + 1 and first.shape[-1] in (3, 4)
    recon_meta, labels_meta = _layer_metas(
        palette,
        np.asarray(counts),
        rgb=rgb,
        recon_dtype=first.dtype,
        name=name,
        metadata=metadata,
        source_layer=source_layer,
        dtype=dtype,
        multiscale=multiscale,
        names=names,
    )
    if not multiscale:
        recon_meta.pop("multiscale", None)
        return [(recons[0], recon_meta, "image"), (coded[0], labels_meta, "labels")]
    return [(recons, recon_meta, "image"), (coded, labels_meta, "labels")]


def ome_zarr_labels_layer_data(path, *, name: str = "kmeans", source_layer=None) -> tuple:
    """A labels layer tuple for an OME-Zarr store :func:`napari_kmeans_vq.io.save_ome_zarr`
    wrote: its levels as a napari multiscale labels layer (read lazily, chunk by chunk),
    coloured with the stored palette, with the class table as ``features`` and the
    store's pixel size as ``scale``.

    ``viewer.add_labels(data, **meta)`` puts it over the slide it was made from: give
    ``source_layer`` (the slide's image layer) to place it as that layer is placed, when
    the store was written without ``pixel_size``.

    Returns
    -------
    (list of dask arrays, dict, "labels")
    """
    from ..io.omezarr import label_counts, label_palette, read_labels

    levels, stored = read_labels(path, name)
    colours = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for entry in stored["colors"]:
        colours[int(entry["label-value"])] = tuple(float(v) / 255 for v in entry["rgba"])
    properties = sorted(stored["properties"], key=lambda p: p["label-value"])
    palette, counts = label_palette(stored), label_counts(stored)
    features = cluster_features(palette, counts, names=stored["names"])
    features["hex"] = np.array([p["color"] for p in properties], dtype=object)
    meta = {
        "name": f"{Path(os.fspath(path)).name} labels",
        "colormap": colours,
        "features": features,
        "multiscale": True,
        "metadata": {METADATA_KEY: {"role": "labels", "path": os.fspath(path)}},
    }
    spatial = spatial_kwargs(source_layer)
    scale = [float(v) for v in stored["scales"][0]]
    if spatial and all(v == 1.0 for v in scale):
        meta |= spatial
    else:
        meta["scale"] = scale
    return levels, meta, "labels"


def is_lazy_quantization(q) -> bool:
    """Whether ``q`` holds dask arrays (or lists of levels) rather than numpy arrays."""
    return bool(getattr(q, "multiscale", False)) or not isinstance(q.labels, np.ndarray)


def _summary(q: Quantization) -> dict:
    """What both layers remember about the run, JSON-serialisable."""
    psnr = q.psnr if math.isfinite(q.psnr) else None
    return {
        "n_colors": int(q.n_colors),
        "n_colors_requested": q.info.get("n_colors_requested", q.n_colors),
        "seed": q.info.get("random_state"),
        "color_space": q.info.get("color_space"),
        "n_init": q.info.get("n_init"),
        "palette": q.palette.tolist(),
        "dtype": str(q.palette.dtype),
        "report": q.report.to_dict(),
        "distortion": float(q.distortion),
        "psnr": psnr,
        "seconds": q.info.get("seconds"),
        "masked": getattr(q, "mask", None) is not None,
        "info": dict(q.info),
    }


def quantization_layer_data(
    q: Quantization,
    *,
    source_layer=None,
    name: str | None = None,
    channel_axis: int | None = -1,
    names=None,
) -> list[tuple]:
    """The reconstruction and labels layer tuples of a finished :func:`quantize` run.

    Parameters
    ----------
    q : Quantization or LazyQuantization
        An eager result (numpy arrays), or a lazy one from a dask, zarr or multiscale input
        (see :func:`napari_kmeans_vq.chunked.quantize_lazy`): its layers then hold dask
        arrays, levels of a napari multiscale layer when ``q.multiscale``, and nothing is
        computed here (the features table comes from ``q.cluster_sizes``).
    source_layer : object, optional
        The layer that was quantized: supplies the names (``"<name> K=16 reconstruction"``),
        the spatial metadata, and a ``source``/``source_id`` tag in the metadata.
    name : str, optional
        Base name to use instead of the source layer's.
    channel_axis : int or None, default -1
        The ``channel_axis`` given to :func:`quantize`; napari shows colour last, so a
        reconstruction with its colour axis elsewhere is moved there (a view, no copy).
    names : sequence of K str, optional
        Class names (default ``"class 1"`` ..): the labels layer's ``name`` feature, and
        ``names`` in both layers' metadata.

    Returns
    -------
    list of (data, meta, layer_type)
        See :func:`coded_layer_data`. The metadata also hold ``classes``, the rows of
        :func:`class_table_for` (areas from the source layer's scale and units).
    """
    base, tag = _source_info(source_layer, name)
    names = _check_names(names, q.n_colors)
    table = class_table_for(q, names=names, source_layer=source_layer)
    summary = {**_summary(q), **tag, "classes": [dict(row) for row in table.rows]}
    if is_lazy_quantization(q):
        return lazy_coded_layer_data(
            q.labels,
            q.reconstruction,
            q.palette,
            q.cluster_sizes,
            multiscale=bool(getattr(q, "multiscale", False)),
            name=base,
            metadata=summary,
            source_layer=source_layer,
            dtype=q.palette.dtype,
            channel_axis=channel_axis,
            names=names,
        )
    reconstruction = q.reconstruction
    if channel_axis is not None:
        reconstruction = np.moveaxis(reconstruction, channel_axis, -1)
    return coded_layer_data(
        q.labels,
        q.palette,
        reconstruction=reconstruction,
        name=base,
        metadata=summary,
        source_layer=source_layer,
        counts=q.cluster_sizes,
        dtype=q.palette.dtype,
        mask=q.mask,
        names=names,
    )


def layer_data(image, n_colors: int, *, source_layer=None, **options) -> list[tuple]:
    """Quantize an image and return the napari layers the widget would add.

    Parameters
    ----------
    image : array_like, shape (..., C)
        The image, colour axis last (or where ``channel_axis`` says; ``channel_axis=None``
        for a one-channel image). It is not modified.
    n_colors : int
        K, from 1 to ``MAX_FIT_COLORS`` (4,096).
    source_layer : object, optional
        The napari layer the image comes from (or any object with ``name``, ``scale``,
        ``translate``...): names the outputs and places them where the source is.
    **options
        Passed to :func:`napari_kmeans_vq.quantize`: ``random_state``, ``color_space``,
        ``n_init``, ``max_iter``, ``tol``, ``alpha``, ``channel_axis``.

    Returns
    -------
    list of (data, meta, layer_type)
        ``[(reconstruction, meta, "image"), (labels, meta, "labels")]``: the reconstruction
        in the image's dtype, and labels ``index + 1`` in the smallest unsigned dtype for K,
        coloured with the palette, with a per-cluster ``features`` table. Both metadata hold
        the run's summary under ``"napari_kmeans_vq"``.

    Raises
    ------
    TypeError, ValueError
        As :func:`napari_kmeans_vq.quantize` does, for bad images and parameters.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    >>> (recon, _, kind1), (labels, meta, kind2) = layer_data(image, 4)
    >>> kind1, recon.dtype, kind2, labels.dtype, int(labels.min())
    ('image', dtype('uint8'), 'labels', dtype('uint8'), 1)
    >>> meta["metadata"]["napari_kmeans_vq"]["report"]["total_bits"]
    2144
    """
    q = quantize(image, n_colors, **options)
    return quantization_layer_data(
        q, source_layer=source_layer, channel_axis=options.get("channel_axis", -1)
    )


def parse_k_list(text: str | Iterable[int]) -> list[int]:
    """Parse a sweep's list of K such as ``"2, 3, 6, 16"`` (spaces or commas).

    Duplicates are dropped, order kept. Raises ``ValueError`` naming what is wrong.
    """
    if isinstance(text, str):
        parts = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
    else:
        parts = list(text)
    if not parts:
        raise ValueError("the sweep needs at least one K, such as '2, 3, 6, 16'")
    values: list[int] = []
    for part in parts:
        try:
            value = int(str(part).strip())
        except ValueError:
            raise ValueError(
                f"'{part}' in the sweep is not a whole number; write K values such as "
                "'2, 3, 6, 16'"
            ) from None
        if not 1 <= value <= MAX_FIT_COLORS:
            raise ValueError(
                f"K = {value} in the sweep is out of range; use 1 to {MAX_FIT_COLORS}"
            )
        if value not in values:
            values.append(value)
    return values


def sweep_row(q: Quantization) -> dict:
    """One row of the sweep table: K against bits, ratio, J, PSNR and time."""
    report = q.report
    return {
        "K": int(q.n_colors),
        "K_requested": q.info.get("n_colors_requested", q.n_colors),
        "bits_per_index": report.bits_per_index,
        "total_bits": report.total_bits,
        "ratio": report.ratio,
        "saving": report.saving,
        "J": float(q.distortion),
        "psnr": float(q.psnr),
        "bits_per_pixel": report.bits_per_pixel,
        "seconds": q.info.get("seconds"),
    }


#: What the widget's curve can show: label -> key of a :func:`curve_points` row.
CURVE_METRICS = {"PSNR (dB)": "psnr", "J": "J", "bits / pixel": "bits_per_pixel"}


def curve_points(source) -> list[dict]:
    """The quality-against-K curve: one row per K (K, J, psnr, bits_per_pixel), by K.

    ``source`` is a sweep's rows (:func:`sweep_row` dicts) or an ``n_colors="auto"``
    result (its ``info["auto"]`` trials, every K the search tried); [] for anything else.
    """
    if isinstance(source, list | tuple):
        rows = [
            {"K": r["K"], "J": r["J"], "psnr": r["psnr"], "bits_per_pixel": r["bits_per_pixel"]}
            for r in source
        ]
    else:
        trials = getattr(source, "info", {}).get("auto", {}).get("trials", [])
        rows = [
            {
                "K": t["n_colors"],
                "J": t["distortion"],
                "psnr": math.inf if t["psnr"] is None else t["psnr"],
                "bits_per_pixel": t["bits_per_pixel"],
            }
            for t in trials
        ]
    return sorted(rows, key=lambda r: r["K"])


def curve_target(source, metric: str) -> float | None:
    """The K search's target on ``metric`` (a :data:`CURVE_METRICS` key), if it had one."""
    target = getattr(source, "info", {}).get("auto", {}).get("target", {})
    key = {"psnr": "psnr", "J": "distortion"}.get(metric)
    return target.get(key) if key else None


def sweep_layer_data(
    image, ks: Iterable[int] | str, *, source_layer=None, **options
) -> tuple[list[tuple], list[dict]]:
    """The seed tutorial's comparison: one reconstruction per K, and a table.

    Parameters
    ----------
    image : array_like
        As for :func:`layer_data`.
    ks : iterable of int, or str
        The K values, or text such as ``"2, 3, 6, 16"`` (see :func:`parse_k_list`).
    source_layer : object, optional
        As for :func:`layer_data`.
    **options
        Passed to :func:`napari_kmeans_vq.quantize`.

    Returns
    -------
    layers : list of (data, meta, "image")
        One reconstruction per K, named ``"<name> K=<K> sweep"``, metadata role ``"sweep"``.
    rows : list of dict
        One :func:`sweep_row` per K.
    """
    layers, rows = [], []
    for k in parse_k_list(ks):
        q = quantize(image, k, **options)
        layers.append(sweep_item(q, source_layer=source_layer, options=options))
        rows.append(sweep_row(q))
    return layers, rows


def sweep_item(q: Quantization, *, source_layer=None, options: dict | None = None) -> tuple:
    """The sweep's reconstruction layer tuple for one quantization."""
    channel_axis = (options or {}).get("channel_axis", -1)
    recon, meta, kind = quantization_layer_data(
        q, source_layer=source_layer, channel_axis=channel_axis
    )[0]
    k_requested = q.info.get("n_colors_requested", q.n_colors)
    base, _ = _source_info(source_layer, None)
    meta = dict(meta)
    meta["name"] = f"{base} K={k_requested} sweep"
    meta["metadata"] = {METADATA_KEY: {**meta["metadata"][METADATA_KEY], "role": "sweep"}}
    return (recon, meta, kind)


# -- the widget's report, as text rows -------------------------------------------------------


def _bits_text(bits: float) -> str:
    bits = bits if bits > 0 else 0  # a zero entropy comes out as -0.0
    return f"{bits:,.0f} bits ({bits / 8 / 1024:,.1f} KiB)"


def _psnr_text(psnr: float | None) -> str:
    if psnr is None or not math.isfinite(psnr):
        return "inf (lossless)"
    return f"{psnr:.2f} dB"


def storage_rows(sizes: dict | None) -> list[tuple[str, str]]:
    """Report rows for real file sizes, as :func:`napari_kmeans_vq.io.size_report` gives
    them (or ``{"skipped": reason}`` when they were not measured)."""
    if not sizes:
        return []
    if "skipped" in sizes:
        rows = [("files", f"not measured: {sizes['skipped']}")]
    else:
        files, raw = sizes["files"], sizes["raw_bytes"]
        kvq, png = files["kvq_deflated"], files.get("png")
        rows = [
            (".kvq file", f"{kvq:,} B, {100 * kvq / raw:.1f}% of raw"),
            (".kvq packed", f"{files['kvq_raw']:,} B, before deflate"),
            ("PNG file", f"{png:,} B, {100 * png / raw:.1f}% of raw")
            if png is not None
            else ("PNG file", f"none: {files.get('png_reason', 'not possible')}"),
        ]
    source = sizes.get("input_bytes")
    if source:
        rows.append(("source file", f"{source:,} B"))
        if "files" in sizes:
            rows.append((".kvq / source", f"{100 * sizes['files']['kvq_deflated'] / source:.1f}%"))
    return rows


def report_rows(q, seconds: float | None = None, sizes: dict | None = None) -> list:
    """The widget's report for one quantization: ``(name, value)`` text rows.

    ``seconds`` is the time from Run to the layers, ``sizes`` the real file sizes
    (see :func:`storage_rows`).
    """
    r = q.report
    asked = q.info.get("n_colors_requested", q.n_colors)
    rows = [
        ("pixels", f"{r.n_pixels:,}"),
        ("K", f"{q.n_colors}" if asked == q.n_colors else f"{q.n_colors} (asked {asked})"),
        ("original", _bits_text(r.original_bits)),
        ("index", f"{_bits_text(r.index_bits)}, {r.bits_per_index}/pixel"),
        ("codebook", _bits_text(r.codebook_bits)),
        ("total", _bits_text(r.total_bits)),
        ("ratio", f"{r.ratio:.4f} ({100 * r.ratio:.1f}% of original)"),
        ("saving", f"{100 * r.saving:.1f}%"),
        *storage_rows(sizes),
    ]
    if r.entropy_bits is not None:
        rows.append(("entropy bound", _bits_text(r.entropy_bits)))
    rows += [
        ("J (MSE)", f"{q.distortion if q.distortion > 0 else 0.0:.3f}"),
        ("PSNR", _psnr_text(q.psnr)),
        ("engine time", f"{q.info.get('seconds', float('nan')):.3f} s"),
    ]
    if seconds is not None:
        rows.append(("run to layers", f"{seconds:.3f} s"))
    if q.info.get("n_levels", 1) > 1:
        fit = f"{q.info.get('fit')}, level {q.info.get('fit_level')} of {q.info['n_levels']}"
        rows.append(("fit", fit))
    return rows


def sweep_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The sweep's comparison table from :func:`sweep_row` dicts: header and text rows."""
    header = ["K", "bits", "ratio", "J", "PSNR", "time"]
    body = [
        [
            str(r["K"]),
            f"{r['total_bits']:,}",
            f"{r['ratio']:.4f}",
            f"{r['J'] if r['J'] > 0 else 0.0:.2f}",
            _psnr_text(r["psnr"]),
            f"{r['seconds']:.2f} s" if r.get("seconds") is not None else "",
        ]
        for r in rows
    ]
    return header, body


# -- classes: names, areas and merges ------------------------------------------------------


def default_names(n_classes: int) -> list[str]:
    """``"class 1"`` .. ``"class K"``: the names classes have until someone names them."""
    return [f"class {i + 1}" for i in range(n_classes)]


def _check_names(names, k: int) -> list[str]:
    """K names as str; None (or a None entry) is the default name of its class."""
    if names is None:
        return default_names(k)
    names = [f"class {i + 1}" if name is None else str(name) for i, name in enumerate(names)]
    if len(names) != k:
        raise ValueError(f"names: expected {k}, one per class, got {len(names)}.")
    return names


class PixelSize(NamedTuple):
    """The size of a pixel in a unit of length, as a layer's ``scale`` and ``units`` say.

    ``sides`` are the (row, column) sides in ``unit``; ``unit`` is ASCII (``"um"``, for
    column names such as ``area_um2``), ``symbol`` is for display (``"µm"``).
    """

    sides: tuple[float, float]
    unit: str
    symbol: str


def pixel_size(source_layer) -> PixelSize | None:
    """The pixel size of a layer (or snapshot) whose last two axes have units of length.

    napari 0.9 layers have ``scale`` (per axis) and ``units`` (pint units, ``pixel`` unless
    set). Only when both of the last two axes are lengths is there a physical pixel size;
    the column side is converted to the row axis' unit. None otherwise (areas then stay in
    pixels).
    """
    try:
        scale = getattr(source_layer, "scale", None)
        units = getattr(source_layer, "units", None)
        if scale is None or units is None or isinstance(units, str):
            return None
        scale, units = [float(v) for v in scale][-2:], list(units)[-2:]
        if len(scale) < 2 or len(units) < 2:
            return None
        import pint

        registry = pint.get_application_registry()
        row_unit, col_unit = (registry.Unit(str(unit)) for unit in units)
        length = registry.meter.dimensionality
        if row_unit.dimensionality != length or col_unit.dimensionality != length:
            return None
        col_side = (scale[1] * col_unit).to(row_unit).magnitude
        sides = (scale[0], float(col_side))
        if not all(math.isfinite(v) and v > 0 for v in sides):
            return None
        symbol = format(row_unit, "~")
    except Exception:  # no pint, or units pint cannot read: no physical size
        return None
    return PixelSize(sides, symbol.replace("µ", "u").replace(" ", ""), symbol)


def class_table_for(q, *, names=None, source_layer=None):
    """The class table of a quantization, areas from the source layer's pixel size.

    Parameters
    ----------
    q : Quantization or LazyQuantization
        For a lazy result fitted on a coarser level or a sample, the pixels per class are
        the fit's shares of the full-resolution pixels (estimates).
    names : sequence of K str, optional
    source_layer : object, optional
        A napari layer or a :func:`layer_snapshot`: its ``scale`` and ``units`` give the
        ``area_<unit>2`` column (see :func:`pixel_size`).

    Returns
    -------
    napari_kmeans_vq.core.classes.ClassTable
    """
    size = pixel_size(source_layer)
    options = {"pixel_size": size.sides, "unit": size.unit} if size is not None else {}
    names = _check_names(names, q.n_colors)
    if is_lazy_quantization(q):
        # No pass over the image here: the fit's shares of the full resolution.
        sizes = np.asarray(q.cluster_sizes, dtype=np.float64)
        counts = np.rint(sizes * q.report.n_pixels / max(sizes.sum(), 1.0)).astype(np.int64)
        return result_class_table(q, counts, names=names, **options)
    return q.class_table(names, **options)


def class_table_view(table) -> tuple[list[str], list[list[str]]]:
    """The widget's class table as text: a header and one row per class.

    Columns: class (its label), name, share, area (``µm²`` and the like with a pixel size,
    else pixels), then the mean of each stain (stain spaces).
    """
    area = next((c for c in table.columns if c.startswith("area_")), None)
    stains = [c for c in table.columns if c.startswith("mean_")]
    if area is not None:
        unit = area[len("area_") : -1]
        symbol = "µ" + unit[1:] if unit.startswith("u") and len(unit) == 2 else unit
        area_header = f"area ({symbol}²)"
    else:
        area_header = "area (pixels)"
    header = ["class", "name", "share", area_header, *(c[len("mean_") :] for c in stains)]
    rows = []
    for row in table.rows:
        size = f"{row[area]:,.1f}" if area is not None else f"{row['pixels']:,}"
        rows.append(
            [
                str(row["label"]),
                row["name"],
                f"{100 * row['share']:.1f}%",
                size,
                *(f"{row[c]:.3f}" for c in stains),
            ]
        )
    return header, rows


def merge_classes(q: Quantization, labels, image, *, channel_axis: int | None = -1):
    """Merge classes into one: the quantization with fewer codewords.

    The merged class takes the lowest of the labels merged; the classes above the others
    move down, so labels stay ``1 .. K'``. Its codeword is the pixel-weighted mean of the
    merged codewords (rounded for integer images): the k-means update step for the union,
    the colour that keeps J lowest for those pixels, and its centroid the mean of theirs
    (so the class table's mean stains stay the members' means). J, PSNR, the bit report
    and the class sizes are measured again on the new labels; pixels outside a mask stay
    as they were.

    Parameters
    ----------
    q : Quantization
        An in-memory result (a lazy one is refused: its labels are not in memory).
    labels : iterable of int
        The classes' labels (codeword + 1), at least two.
    image : array
        The image that was quantized (for J), colour axis at ``channel_axis``.
    channel_axis : int or None, default -1
        As given to :func:`napari_kmeans_vq.quantize`.

    Returns
    -------
    Quantization
        ``info["merges"]`` lists the label groups merged, in the numbering of their time.
    """
    if is_lazy_quantization(q):
        raise ValueError(
            "merging classes needs the labels in memory; this result is lazy (dask or multiscale)."
        )
    k = q.n_colors
    try:
        chosen = sorted({int(label) for label in labels})
    except (TypeError, ValueError):
        raise TypeError(
            f"labels: expected class labels (whole numbers), got {labels!r}."
        ) from None
    if len(chosen) < 2:
        raise ValueError(f"labels: choose at least two classes to merge, got {chosen}.")
    if chosen[0] < 1 or chosen[-1] > k:
        raise ValueError(f"labels: classes are 1 to {k}, got {chosen}.")
    merged = np.array(chosen) - 1
    target = int(merged[0])
    counts = np.asarray(q.cluster_sizes, dtype=np.int64)
    weights = counts[merged].astype(np.float64)
    weights = (
        weights / weights.sum() if weights.sum() > 0 else np.full(len(merged), 1 / len(merged))
    )

    palette = q.palette.copy()
    colour = weights @ palette[merged].astype(np.float64)
    if palette.dtype.kind in "ui":
        info = np.iinfo(palette.dtype)
        colour = np.clip(np.rint(colour), info.min, info.max)
    palette[target] = colour.astype(palette.dtype)
    centroids = np.array(q.centroids, dtype=np.float64, copy=True)
    centroids[target] = weights @ centroids[merged]

    keep = np.ones(k, dtype=bool)
    keep[merged[1:]] = False
    renumber = np.cumsum(keep) - 1
    lut = renumber.copy()
    lut[merged] = renumber[target]
    new_k = int(keep.sum())
    new_labels = lut.astype(index_dtype(new_k))[q.labels]
    new_counts = np.bincount(lut, weights=counts, minlength=new_k).astype(np.int64)

    # Only the merged pixels change colour: J moves by their change of squared error.
    moved = np.isin(q.labels, merged)
    if q.mask is not None:
        moved &= q.mask
    c = palette.shape[1]
    reconstruction = np.array(q.reconstruction, copy=True)
    recon = (
        reconstruction if channel_axis is None else np.moveaxis(reconstruction, channel_axis, -1)
    )
    pixels = np.asarray(image)
    pixels = pixels[..., None] if channel_axis is None else np.moveaxis(pixels, channel_axis, -1)
    if pixels.shape[:-1] != q.labels.shape:
        raise ValueError(
            f"image: shape {np.shape(image)} is not the quantized image's ({q.labels.shape} "
            "without the colour axis)."
        )
    x = pixels[moved][:, :c]
    if channel_axis is None:
        recon[moved] = palette[target, 0]
    else:
        recon[moved, :c] = palette[target]
    ones, was = np.ones(len(x)), q.labels[moved]
    delta = weighted_error(x, ones, palette[target][None], np.zeros(len(x)))[0]
    delta -= weighted_error(x, ones, q.palette, was)[0]

    n = q.report.n_pixels
    distortion = max(q.distortion + delta / max(n, 1), 0.0)
    if distortion == 0:
        psnr = math.inf
    else:
        psnr = 10 * math.log10(peak_value(palette.dtype) ** 2 / (distortion / c))
    report = bit_report(
        n, new_k, channels=c, bits_per_channel=q.report.bits_per_channel
    ).with_entropy(label_entropy_bits(new_counts) * n / max(int(new_counts.sum()), 1))
    info = {**q.info, "merges": [*q.info.get("merges", []), chosen]}
    return replace(
        q,
        labels=new_labels,
        palette=palette[keep],
        centroids=centroids[keep],
        reconstruction=reconstruction,
        distortion=float(distortion),
        psnr=float(psnr),
        report=report,
        n_colors=new_k,
        info=info,
        counts=new_counts,
    )


def merge_names(names: Sequence[str | None], labels) -> list[str | None]:
    """Class names after :func:`merge_classes` of ``labels``: the merged class keeps the
    first name given (None entries are unnamed classes), the others move down."""
    chosen = sorted({int(label) for label in labels})
    given = [names[i - 1] for i in chosen if names[i - 1] is not None]
    out = [name for i, name in enumerate(names, start=1) if i not in chosen[1:]]
    out[chosen[0] - 1] = given[0] if given else None
    return out
