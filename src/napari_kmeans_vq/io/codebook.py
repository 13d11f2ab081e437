"""Codebook files: a fitted :class:`~napari_kmeans_vq.Codebook` saved as a small JSON file.

One codebook fitted on a cohort and applied to every slide gives the same class to the same
colour in every image. The file holds what :meth:`Codebook.to_dict` gives (the format name
and version, the parameters with the colour space and stain vectors, the palette in its
dtype, the centroids and scale of the clustering space, the fit's details) plus the number
of channels and one entry per class (label, name, display colour). A file with only a
palette (a user's colours) is also read: it becomes :meth:`Codebook.from_palette`. The
format is described in ``docs/codebook-format.md``.

>>> from napari_kmeans_vq import Codebook, load_codebook, save_codebook   # doctest: +SKIP
>>> save_codebook(Codebook(8).fit([slide1, slide2]), "cohort.json", names=[...])  # doctest: +SKIP
>>> load_codebook("cohort.json").encode(slide3)                             # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._limits import MAX_COLORS
from ..core.codebook import Codebook
from ..core.colorspace import palette_rgba
from ._atomic import atomic_write
from ._read import read_checked
from .data import KVQError, fail
from .kvq import MAX_CHANNELS
from .limits import MAX_METADATA_BYTES, parse_json

__all__ = [
    "CODEBOOK_FORMAT",
    "CODEBOOK_VERSION",
    "CodebookFile",
    "codebook_document",
    "codebook_json",
    "load_codebook",
    "read_codebook",
    "save_codebook",
]

#: The ``format`` entry of every codebook file.
CODEBOOK_FORMAT = "napari-kmeans-vq codebook"
#: The version of the file layout written (and the only one read).
CODEBOOK_VERSION = 1
# A class colour: "#rrggbb" as the class table and napari write it.
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
# Bytes read before the file is parsed: enough to see that it is JSON at all.
_PEEK = 64


@dataclass(frozen=True)
class CodebookFile:
    """A codebook file as read: the codebook, its class names and display colours."""

    codebook: Codebook
    names: tuple[str, ...]
    colors: tuple[str, ...]
    path: Path | None = None


def _class_entries(codebook: Codebook, names, colors) -> list[dict]:
    k = codebook.n_colors_
    defaults = palette_rgba(codebook.palette_, codebook.dtype_)
    names = [f"class {i + 1}" for i in range(k)] if names is None else list(names)
    if len(names) != k or not all(isinstance(n, str) for n in names):
        raise ValueError(f"names: expected {k} strings, one per class, got {len(names)} entries.")
    if colors is None:
        colors = ["#{:02x}{:02x}{:02x}".format(*(round(255 * v) for v in c[:3])) for c in defaults]
    colors = list(colors)
    if len(colors) != k or not all(isinstance(c, str) and _HEX.fullmatch(c) for c in colors):
        raise ValueError(f"colors: expected {k} colours written '#rrggbb', one per class.")
    return [{"label": i + 1, "name": names[i], "color": colors[i].lower()} for i in range(k)]


def _finite_or_none(value):
    return value if not isinstance(value, float) or math.isfinite(value) else None


def codebook_document(codebook: Codebook, *, names=None, colors=None) -> dict:
    """The JSON document a codebook file holds (what :func:`save_codebook` writes)."""
    if not isinstance(codebook, Codebook):
        raise TypeError(f"codebook must be a fitted Codebook, got {type(codebook).__name__}.")
    data = codebook.to_dict()  # raises if not fitted
    if data.get("format") != CODEBOOK_FORMAT or data.get("version") != CODEBOOK_VERSION:
        raise ValueError(
            f"this Codebook describes itself as {data.get('format')!r} version "
            f"{data.get('version')!r}; this writer knows version {CODEBOOK_VERSION}."
        )
    data["fit"] = {key: _finite_or_none(value) for key, value in data["fit"].items()}
    data["channels"] = int(codebook.channels_)
    data["classes"] = _class_entries(codebook, names, colors)
    return data


def save_codebook(codebook: Codebook, path, *, names=None, colors=None, overwrite=False) -> Path:
    """Save a fitted codebook as a JSON codebook file.

    Parameters
    ----------
    codebook : Codebook
        A fitted codebook (``Codebook(...).fit(images)``, ``quantize(...).codebook``,
        ``Codebook.from_palette(...)`` or a loaded one).
    path : str or Path
        The file to write (``.json`` by convention, such as ``cohort.codebook.json``). It is
        written to a temporary file and renamed, so a failure leaves nothing behind.
    names : sequence of K str, optional
        Class names; default ``"class 1"`` .. ``"class K"``.
    colors : sequence of K "#rrggbb" str, optional
        Display colours of the classes; default the palette's colours.
    overwrite : bool, default False
        Replace an existing file (otherwise ``FileExistsError``).

    Returns
    -------
    Path
    """
    text = codebook_json(codebook_document(codebook, names=names, colors=colors))
    return atomic_write(Path(path), text.encode("utf-8"), overwrite=overwrite)


# A list of numbers only (no strings, no nesting): one line per colour or centroid.
_NUMBER_LIST = re.compile(r"\[\s+([-+0-9eE.,\s]+?)\s+\]")


def codebook_json(document: dict) -> str:
    """A codebook document as the file's text: indented, one line per colour."""
    text = json.dumps(document, indent=1, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def _check_head(head: bytes, size: int, source) -> None:
    if size > MAX_METADATA_BYTES:
        raise fail(
            f"is {size:,} bytes, over the {MAX_METADATA_BYTES:,} a codebook file may have", source
        )
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        raise fail("is not a codebook file (a JSON object was expected)", source)


def _number_rows(value, source) -> tuple[int, int]:
    """The palette's (K, C), checked to be a list of K rows of C plain numbers."""
    if not isinstance(value, list) or not value:
        raise fail("palette must be a non-empty list of colours (rows of numbers)", source)
    if len(value) > MAX_COLORS:
        raise fail(f"palette has {len(value):,} colours, more than {MAX_COLORS:,}", source)
    first = value[0]
    channels = len(first) if isinstance(first, list) else 0
    if not 1 <= channels <= MAX_CHANNELS:
        raise fail(f"palette rows must hold 1 to {MAX_CHANNELS} numbers each", source)
    for i, row in enumerate(value):
        if not isinstance(row, list) or len(row) != channels:
            raise fail(f"palette row {i} does not have {channels} numbers like row 0", source)
        for v in row:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                raise fail(f"palette row {i} holds {v!r}, not a finite number", source)
    return len(value), channels


def _palette(rows, dtype_text, source) -> np.ndarray:
    try:
        dtype = np.dtype(dtype_text)
    except TypeError:
        raise fail(f"dtype {dtype_text!r} is not a numpy dtype", source) from None
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise fail(f"dtype {dtype_text!r}: a palette holds integers or floats", source)
    values = np.asarray(rows, dtype=np.float64)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if (values != np.rint(values)).any() or values.min() < info.min or values.max() > info.max:
            raise fail(f"palette values must be whole numbers within {dtype}'s range", source)
        return np.asarray(rows, dtype=dtype)
    return values.astype(dtype)


def _classes(entries, k: int, source) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    if entries is None:
        return tuple(f"class {i + 1}" for i in range(k)), None
    if not isinstance(entries, list) or len(entries) != k:
        raise fail(f"classes must list one entry per colour ({k})", source)
    names, colors = [], []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("label", i + 1) != i + 1:
            raise fail(f"classes[{i}] must be an object with label {i + 1}", source)
        name, color = entry.get("name", f"class {i + 1}"), entry.get("color")
        if not isinstance(name, str):
            raise fail(f"classes[{i}]: the name must be text", source)
        if color is not None and not (isinstance(color, str) and _HEX.fullmatch(color)):
            raise fail(f"classes[{i}]: the colour must be written '#rrggbb'", source)
        names.append(name)
        colors.append(color)
    return tuple(names), None if None in colors else tuple(c.lower() for c in colors)


def _from_document(data, source) -> CodebookFile:
    if not isinstance(data, dict) or data.get("format") != CODEBOOK_FORMAT:
        raise fail(f'is not a codebook file (no "format": "{CODEBOOK_FORMAT}")', source)
    version = data.get("version")
    if version != CODEBOOK_VERSION:
        raise fail(
            f"is a codebook file of version {version!r}; this version of napari-kmeans-vq "
            f"reads version {CODEBOOK_VERSION}",
            source,
        )
    k, channels = _number_rows(data.get("palette"), source)
    if "channels" in data and data["channels"] != channels:
        raise fail(f"says {data['channels']!r} channels, but its palette has {channels}", source)
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise fail("params must be an object", source)
    names, colors = _classes(data.get("classes"), k, source)
    try:
        if "centroids" in data or "fit" in data:  # a fitted codebook, as saved
            fit = data.get("fit")
            if isinstance(fit, dict) and fit.get("inertia", 0.0) is None:
                data = {**data, "fit": {**fit, "inertia": float("nan")}}
            dtype = data.get("dtype")
            data = {**data, "palette": _palette(data["palette"], dtype, source).tolist()}
            codebook = Codebook.from_dict(data)
        else:  # a palette only: the user's colours
            palette = _palette(data["palette"], data.get("dtype", "uint8"), source)
            params = {key: value for key, value in params.items() if key != "n_colors"}
            codebook = Codebook.from_palette(palette, **params)
    except KVQError:
        raise
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        message = " ".join(str(exc).split()).rstrip(".")
        raise fail(f"is not a valid codebook: {message}", source) from None
    if codebook.n_colors_ != k:
        raise fail("palette and codebook disagree", source)
    if colors is None:
        colors = tuple(e["color"] for e in _class_entries(codebook, names, None))
    return CodebookFile(codebook, names, colors, None if source is None else Path(source))


def read_codebook(path) -> CodebookFile:
    """Read a codebook file: the codebook with its class names and colours.

    The file is checked before it is parsed (a regular file of at most
    :data:`~napari_kmeans_vq.io.limits.MAX_METADATA_BYTES`, a JSON object nested at most
    :data:`~napari_kmeans_vq.io.limits.MAX_JSON_DEPTH` deep), then its format name, version
    and palette; a bad file raises :class:`~napari_kmeans_vq.io.KVQError` naming the file
    and what is wrong.
    """
    source = str(path)
    raw = read_checked(path, _PEEK, lambda head, size: _check_head(head, size, source))
    data = parse_json(raw, source=source, what="the codebook", encoding="utf-8-sig")
    return _from_document(data, source)


def load_codebook(path) -> Codebook:
    """Load a codebook saved by :func:`save_codebook` (or a palette-only file).

    ``load_codebook(path).encode(image)`` gives the labels the saved codebook gave. The
    class names are in :func:`read_codebook`'s result.

    Raises
    ------
    KVQError
        The file is not a codebook file, has another version, or its palette is malformed.
    """
    return read_codebook(path).codebook
