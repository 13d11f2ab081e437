"""napari writers: a labels layer (with its palette) or an image + labels pair to a file.

Two npe2 multi-layer writers, ``.kvq`` and indexed PNG. Each receives napari's layer data
tuples ``(data, meta, layer_type)`` and needs exactly one labels layer, plus at most one
image layer:

* a labels layer made by this plugin (the widget or the ``.kvq`` reader) carries its palette
  in ``metadata["napari_kmeans_vq"]["palette"]``; its labels are codeword index + 1, so they
  are stored as ``label - 1`` with that palette, and read back identically. An image layer
  saved with it only sets the palette's dtype.
* any other labels layer needs an image layer of the same shape: each distinct label becomes
  a codeword whose colour is the mean colour of its pixels in the image (exact when the image
  is a K-colour reconstruction of those labels, as the widget's is; the k-means update step
  otherwise). Label values are renumbered 1 .. K in increasing order.

Class names travel with the labels: the labels layer's ``features`` column ``name`` (where
the widget keeps the names typed into its class table; rows matched to labels by the
``index`` column, else by row number), or else ``metadata["napari_kmeans_vq"]["names"]``,
is written into the file (the ``.kvq`` metadata section, the PNG's text chunk). Names that
are all the defaults ``"class 1"`` .. ``"class K"`` are not written, so a layer nobody named
gives the same file as before names existed.

No napari import happens here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._limits import MAX_COLORS, index_dtype
from ..core.kmeans import cluster_sums

__all__ = ["class_names_from_layers", "codes_from_layers", "write_indexed_png", "write_kvq"]

_KEY = "napari_kmeans_vq"


def _dtype_from_summary(summary: dict, palette: list) -> np.dtype:
    """The palette's dtype when only its values (JSON lists) are known."""
    if "dtype" in summary:
        return np.dtype(summary["dtype"])
    values = np.asarray(palette, dtype=np.float64)
    integral = bool(np.all(values == np.round(values)))
    bits = (summary.get("report") or {}).get("bits_per_channel")
    if integral and bits in (8, 16) and values.min() >= 0:
        return np.dtype(np.uint8 if bits == 8 else np.uint16)
    if integral and bits is None and values.min() >= 0 and values.max() <= 255:
        return np.dtype(np.uint8)
    return np.dtype(np.float32 if bits == 32 else np.float64)


def _split(layer_data) -> tuple[tuple, tuple | None]:
    labels = [item for item in layer_data if item[2] == "labels"]
    images = [item for item in layer_data if item[2] == "image"]
    others = [item[2] for item in layer_data if item[2] not in ("labels", "image")]
    if len(labels) != 1 or len(images) > 1 or others:
        raise ValueError(
            "select one labels layer, and optionally one image layer, to save as .kvq or "
            f"indexed PNG; got {len(labels)} labels, {len(images)} image and {len(others)} "
            "other layers"
        )
    return labels[0], (images[0] if images else None)


def _full_resolution(data, meta: dict, what: str) -> np.ndarray:
    """A layer's data as one array: a multiscale layer's full-resolution level (napari's
    ``np.asarray`` of one gives its smallest level), read whole only within the pixel
    limit of :mod:`napari_kmeans_vq.io.limits`."""
    from ..io import limits

    multiscale = meta.get("multiscale") or type(data).__name__ == "MultiScaleData"
    if not multiscale:
        return np.asarray(data)
    level = data[0]
    pixels = int(np.prod(level.shape[: len(level.shape) - (what == "image")], dtype=np.int64))
    if pixels > limits.MAX_PIXELS:
        raise ValueError(
            f"the {what} layer is multiscale, {pixels:,} pixels at full resolution: over the "
            f"{limits.MAX_PIXELS:,} read into memory for a file (io.limits.MAX_PIXELS); write "
            "its labels as OME-Zarr instead (napari_kmeans_vq.io.save_ome_zarr, or "
            "napari-kmeans-vq compress ... -o OUT.ome.zarr)"
        )
    return np.asarray(level)


def codes_from_layers(layer_data) -> tuple[np.ndarray, np.ndarray, bool]:
    """Codeword indices, palette and scalar flag from napari layer data tuples.

    Parameters
    ----------
    layer_data : list of (data, meta, layer_type)
        One labels layer and at most one image layer (see the module docstring).

    Returns
    -------
    indices : ndarray
        ``0 .. K-1`` per pixel.
    palette : ndarray, shape (K, C)
    scalar : bool
        The image has no colour axis.

    Raises
    ------
    ValueError
        Not one labels layer; labels without a palette and without an image; a label 0
        (background) or a label beyond the palette; an image whose shape does not match.
    """
    (labels, labels_meta, _), image_item = _split(layer_data)
    labels = _full_resolution(labels, labels_meta, "labels")
    if labels.dtype.kind not in "ui":
        raise ValueError(f"the labels layer must hold integers, got dtype {labels.dtype}")
    image = None
    if image_item is not None:
        image = _full_resolution(image_item[0], image_item[1], "image")
    if image is not None and image.shape[: labels.ndim] != labels.shape:
        raise ValueError(
            f"the image layer's shape {image.shape} does not match the labels layer's "
            f"{labels.shape}"
        )
    if image is not None and image.ndim not in (labels.ndim, labels.ndim + 1):
        raise ValueError(f"the image layer {image.shape} must be labels.shape (+ colour axis)")
    summary = (labels_meta.get("metadata") or {}).get(_KEY) or {}
    palette_values = summary.get("palette")
    if palette_values is not None:
        dtype = image.dtype if image is not None else _dtype_from_summary(summary, palette_values)
        palette = np.asarray(palette_values)
        if palette.ndim == 1:
            palette = palette[:, None]
        palette = palette.astype(dtype)
        k = palette.shape[0]
        low, high = int(labels.min()), int(labels.max())
        if low < 1 or high > k:
            raise ValueError(
                f"the labels layer's values run from {low} to {high}, but its palette has "
                f"labels 1 .. {k} (label 0, the background, has no colour)"
            )
        indices = (labels - 1).astype(index_dtype(k))
        if image is not None:
            scalar = image.ndim == labels.ndim
        else:
            scalar = bool(summary.get("scalar", palette.shape[1] == 1))
        return indices, palette, scalar
    if image is None:
        raise ValueError(
            "this labels layer has no palette (it was not made by napari-kmeans-vq); save it "
            "together with its image layer, whose mean colour per label becomes the palette"
        )
    values, inverse = np.unique(labels.reshape(-1), return_inverse=True)
    if values.size > MAX_COLORS:
        raise ValueError(
            f"a .kvq holds at most {MAX_COLORS:,} colours; the labels have {values.size:,}"
        )
    scalar = image.ndim == labels.ndim
    pixels = image.reshape(inverse.size, -1)
    sums, counts = cluster_sums(pixels, None, inverse, values.size)
    means = sums / counts[:, None]
    if image.dtype.kind in "ui":
        info = np.iinfo(image.dtype)
        means = np.clip(np.rint(means), info.min, info.max)
    palette = means.astype(image.dtype)
    indices = inverse.reshape(labels.shape).astype(index_dtype(values.size))
    return indices, palette, scalar


def _column(features, name: str):
    """One column of a features table (a pandas DataFrame or a dict of arrays), or None."""
    if features is None:
        return None
    try:
        if name not in features:
            return None
        return list(np.asarray(features[name]).tolist())
    except (TypeError, ValueError, KeyError):
        return None


def class_names_from_layers(layer_data, label_values=None) -> list[str] | None:
    """The class names of the labels layer among napari layer data tuples, or None.

    Parameters
    ----------
    layer_data : list of (data, meta, layer_type)
        As for :func:`codes_from_layers`.
    label_values : sequence of int, optional
        The label value of each codeword in order (default ``1 .. K`` for a layer this
        plugin made, with K from its palette; :func:`codes_from_layers` renumbers other
        layers' labels in increasing order).

    Returns
    -------
    list of str or None
        One name per codeword, from the labels layer's ``features["name"]`` (or the
        summary's ``names``); None when the layer has none for every class, or when they
        are all the defaults ``"class 1"`` .. ``"class K"``.
    """
    from .layers import default_names

    (_, labels_meta, _), _ = _split(layer_data)
    summary = (labels_meta.get("metadata") or {}).get(_KEY) or {}
    if label_values is None:
        k = len(summary.get("palette") or ())
        label_values = list(range(1, k + 1))
    label_values = [int(v) for v in label_values]
    if not label_values:
        return None
    features = labels_meta.get("features")
    column = _column(features, "name")
    by_label: dict = {}
    if column is not None:
        index = _column(features, "index")
        keys = index if index is not None and len(index) == len(column) else range(len(column))
        by_label = {int(key): value for key, value in zip(keys, column, strict=True)}
    elif isinstance(summary.get("names"), list):
        by_label = {i + 1: name for i, name in enumerate(summary["names"])}
    names = [by_label.get(value) for value in label_values]
    if any(name is None or (isinstance(name, float) and name != name) for name in names):
        return None
    names = [str(name) for name in names]
    if names == default_names(len(names)):
        return None
    return names


def _as_layer_list(layer_data, meta) -> list[tuple]:
    # npe2 calls a contribution whose layer_types allow one layer with the single-layer
    # signature (path, data, meta), and the others with (path, [(data, meta, type), ...]);
    # the manifest lists both for the same command.
    if meta is not None:
        return [(layer_data, meta, "labels")]
    return list(layer_data)


def write_kvq(path: str, layer_data, meta: dict | None = None) -> list[str]:
    """npe2 writer: save a labels layer (with its palette, or with its image) as ``.kvq``.

    Parameters
    ----------
    path : str
        Target; ``.kvq`` is appended when missing.
    layer_data : list of (data, meta, layer_type), or the labels data
        The layers (multi-layer writer call), or one labels layer's data when napari
        calls the single-layer form ``(path, data, meta)``.
    meta : dict, optional
        The labels layer's metadata in the single-layer form.

    Returns
    -------
    list of str
        The path written.
    """
    return _write(path, layer_data, meta, "kvq")


def write_indexed_png(path: str, layer_data, meta: dict | None = None) -> list[str]:
    """npe2 writer: save a 2D labels layer with at most 256 colours as an indexed PNG.

    Parameters are as for :func:`write_kvq` (``.png`` is appended when missing).

    Returns
    -------
    list of str
        The path written.
    """
    return _write(path, layer_data, meta, "png")


def write_labels_tiff(path: str, layer_data, meta: dict | None = None) -> list[str]:
    """npe2 writer: save a 2D labels layer as a palette-colour TIFF (Fiji and QuPath open it
    with its colours; the class names go in its description).

    Parameters are as for :func:`write_kvq` (``.tif`` is appended when missing).

    Returns
    -------
    list of str
        The path written.
    """
    return _write(path, layer_data, meta, "tiff", ".tif")


def write_geojson(path: str, layer_data, meta: dict | None = None) -> list[str]:
    """npe2 writer: save a 2D labels layer's class outlines as GeoJSON, the form QuPath
    imports (one feature per region, its class name and colour).

    Parameters are as for :func:`write_kvq` (``.geojson`` is appended when missing).

    Returns
    -------
    list of str
        The path written.
    """
    return _write(path, layer_data, meta, "geojson")


def _write(path, layer_data, meta, fmt: str, suffix: str | None = None) -> list[str]:
    from ..io import save

    layers = _as_layer_list(layer_data, meta)
    indices, palette, scalar = codes_from_layers(layers)
    names = class_names_from_layers(layers, _label_values(layers, len(palette)))
    path = _with_suffix(path, suffix or f".{fmt}", also=(".tiff",) if fmt == "tiff" else ())
    save(path, indices, palette, format=fmt, scalar=scalar, names=names)
    return [str(path)]


def _label_values(layers, k: int) -> list[int]:
    """The label value of each codeword, as :func:`codes_from_layers` numbered them."""
    (labels, labels_meta, _), _ = _split(layers)
    summary = (labels_meta.get("metadata") or {}).get(_KEY) or {}
    if summary.get("palette") is not None:
        return list(range(1, k + 1))
    return np.unique(_full_resolution(labels, labels_meta, "labels")).tolist()


def _with_suffix(path, suffix: str, also=()) -> Path:
    path = Path(path)
    if path.suffix.lower() in (suffix, *also):
        return path
    return path.with_name(path.name + suffix)
