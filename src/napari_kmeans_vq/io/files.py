"""save() and load(): a quantized image to a file and back, in either format; what the
files weigh (:func:`size_report`); OME-Zarr stores written whole or not at all."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from ._atomic import (
    atomic_write,
    clean_leftovers,
    discard_partials,
    partial_stores,
    write_store,
)
from ._read import read_checked
from .data import KVQData, KVQError
from .kvq import (
    DEFAULT_LEVEL,
    FLAG_BYTES,
    MAGIC,
    MAX_NDIM,
    decode_kvq,
    encode_kvq,
    header_size,
    kvq_size,
    read_header,
)
from .png import PNG_SIGNATURE, decode_indexed_png, encode_indexed_png, read_png_header

__all__ = [
    "SAVE_FORMATS",
    "TIFF_MAGICS",
    "IncompleteStoreError",
    "encode",
    "encoded_sizes",
    "format_for_path",
    "incomplete_store",
    "load",
    "save",
    "save_ome_zarr",
    "size_report",
    "sizes_with_ratios",
    "tree_size",
]

_FORMATS = ("kvq", "png")
#: Every format :func:`save` writes: the two containers, a palette TIFF and GeoJSON outlines.
SAVE_FORMATS = ("kvq", "png", "tiff", "geojson")
_SUFFIXES = {
    ".kvq": "kvq",
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".geojson": "geojson",
}


def format_for_path(path, format: str | None = None, *, formats=_FORMATS) -> str:
    """The format to write: ``format`` if given, else from the suffix.

    ``formats`` lists the formats accepted: by default the containers ``.kvq`` and
    ``.png``; :data:`SAVE_FORMATS` adds ``.tif``/``.tiff`` and ``.geojson``.
    """
    formats = tuple(formats)
    if format is not None:
        if format not in formats:
            raise ValueError(
                f"format must be one of {', '.join(map(repr, formats))}, got {format!r}"
            )
        return format
    found = _SUFFIXES.get(Path(path).suffix.lower())
    if found in formats:
        return found
    suffixes = ", ".join(s for s, f in _SUFFIXES.items() if f in formats)
    raise ValueError(
        f"cannot tell the format from the file name {str(path)!r}: use a suffix of "
        f"{suffixes}, or pass format= one of {', '.join(map(repr, formats))}"
    )


def _names_metadata(data, names, k: int) -> dict:
    """The metadata a file records for ``data``'s classes: ``names`` when given, else the
    names (and any other metadata) of a loaded file; empty when there are none."""
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != k:
            raise ValueError(f"names: expected {k}, one per class, got {len(names)}")
    if isinstance(data, KVQData):
        kept = dict(data.extra.get("metadata") or {})
        if names is None and data.names is not None:
            kept["names"] = list(data.names)
        if names is not None:
            kept["names"] = names
        return kept
    return {} if names is None else {"names": names}


def _unpack(data, palette, scalar) -> tuple[np.ndarray, np.ndarray, bool]:
    """Labels, palette and the scalar flag from a Quantization, KVQData or arrays."""
    if hasattr(data, "labels") and hasattr(data, "palette"):
        if palette is not None:
            raise TypeError("palette must not be given with a Quantization or KVQData")
        labels, palette = np.asarray(data.labels), np.asarray(data.palette)
        if isinstance(data, KVQData):
            return labels, palette, data.scalar
        recon = getattr(data, "reconstruction", None)
        if recon is not None:
            recon_channels = recon.shape[-1] if recon.ndim > labels.ndim else 1
            if recon.ndim == labels.ndim + 1 and recon_channels != palette.shape[-1]:
                # alpha="ignore" keeps alpha outside the palette: it is not in the codebook.
                warnings.warn(
                    f"the reconstruction has {recon_channels} channels but the palette "
                    f"{palette.shape[-1]}; only the palette's channels are stored (an alpha "
                    "channel kept with alpha='ignore' is not)",
                    UserWarning,
                    stacklevel=3,
                )
            return labels, palette, recon.ndim == labels.ndim
        return labels, palette, bool(scalar)
    if palette is None:
        raise TypeError(
            "save() needs a Quantization (or KVQData), or labels together with a palette"
        )
    return np.asarray(data), np.asarray(palette), bool(scalar)


def encode(
    data,
    palette=None,
    *,
    format: str = "kvq",
    deflate: bool = True,
    bit_depth: int | str = "auto",
    scalar: bool = False,
    index_layout: str = "auto",
    level: int = DEFAULT_LEVEL,
    names=None,
    pixel_size: float | None = None,
) -> bytes:
    """The bytes :func:`save` would write (see there), without touching the disk."""
    labels, palette, scalar = _unpack(data, palette, scalar)
    format = format_for_path("", format, formats=SAVE_FORMATS)
    k = np.asarray(palette).reshape(len(palette), -1).shape[0]
    metadata = _names_metadata(data, names, k)
    if format == "kvq":
        return encode_kvq(
            labels,
            palette,
            deflate=deflate,
            scalar=scalar,
            index_layout=index_layout,
            level=level,
            metadata=metadata,
        )
    if format == "png":
        return encode_indexed_png(
            labels,
            palette,
            bit_depth=bit_depth,
            scalar=scalar,
            level=level,
            metadata=metadata,
        )
    if format == "tiff":
        from .tiff import encode_labels_tiff

        return encode_labels_tiff(
            labels, palette, names=metadata.get("names"), pixel_size=pixel_size
        )
    from .geojson import quantization_features

    collection = quantization_features(
        labels, palette, names=metadata.get("names"), mask=getattr(data, "mask", None)
    )
    return json.dumps(collection).encode("utf-8")


def save(
    path,
    data,
    palette=None,
    *,
    format: str | None = None,
    deflate: bool = True,
    bit_depth: int | str = "auto",
    scalar: bool = False,
    overwrite: bool = True,
    index_layout: str = "auto",
    level: int = DEFAULT_LEVEL,
    names=None,
    pixel_size: float | None = None,
) -> Path:
    """Save a quantized image as a ``.kvq`` container, an indexed PNG, a palette TIFF or
    GeoJSON class outlines, with its class names when it has any.

    The file is written to a temporary file in the same directory and renamed into place,
    so an interrupted or failed save leaves no partial file.

    Parameters
    ----------
    path : str or Path
        Where to write; the suffix (``.kvq``, ``.png``, ``.tif``/``.tiff``, ``.geojson``)
        sets the format unless ``format`` is given.
    data : Quantization, KVQData or ndarray of int
        A :func:`napari_kmeans_vq.quantize` result, a loaded file, or the codeword indices
        (``0 .. K-1``, the image's shape without its colour axis).
    palette : ndarray, shape (K, C), optional
        The codewords, required when ``data`` is an index array.
    format : {"kvq", "png", "tiff", "geojson"}, optional
        ``"kvq"``: any dtype, any number of axes, K up to 65,536. ``"png"``: 2D, K <= 256,
        uint8 grey, RGB or RGBA palettes. ``"tiff"``: the indices as a palette-colour
        TIFF (:mod:`~napari_kmeans_vq.io.tiff`; Fiji and QuPath open it). ``"geojson"``:
        one polygon per class region in the form QuPath imports
        (:func:`~napari_kmeans_vq.io.geojson.quantization_features`; pixels outside a
        Quantization's ``mask`` have none).
    deflate : bool, default True
        ``.kvq`` only: deflate the index payload (False writes exactly
        header + palette + ``ceil(N*b/8)`` bytes).
    bit_depth : {"auto", "smallest", 1, 2, 4, 8}, default "auto"
        PNG only; see :func:`~napari_kmeans_vq.io.encode_indexed_png`.
    scalar : bool, default False
        With index arrays: the image has no colour axis (one-channel palette).
    overwrite : bool, default True
        When False, an existing file raises ``FileExistsError``.
    index_layout : {"auto", "packed", "bytes"}, default "auto"
        ``.kvq`` with ``deflate`` only: deflate the indices packed at ``ceil(log2 K)`` bits
        or as whole bytes; ``"auto"`` picks one from K (see
        :func:`~napari_kmeans_vq.io.encode_kvq`).
    level : int, default 6
        zlib compression level of the deflated payload (0 .. 9).
    names : sequence of K str, optional
        Class names, one per codeword (label ``i + 1`` is ``names[i]``): stored in the
        ``.kvq`` metadata section (format version 3), the PNG's text chunk, the TIFF's
        description, and as GeoJSON's ``classification`` names. Without them nothing is
        named in the file (a loaded file keeps the names it had), and a ``.kvq`` is the
        same bytes as before names existed; GeoJSON, which needs a name, then says
        ``"Class <label>"``.
    pixel_size : float, optional
        TIFF only: the pixel side in micrometres, stored as the resolution.

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    TypeError, ValueError
        Unusable data for the chosen format (the message says what is accepted).
    FileExistsError
        ``overwrite=False`` and the file exists.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from napari_kmeans_vq import quantize
    >>> from napari_kmeans_vq.io import load, save
    >>> image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    >>> q = quantize(image, 6)
    >>> path = save(os.path.join(tempfile.mkdtemp(), "tile.kvq"), q, deflate=False)
    >>> back = load(path)
    >>> bool(np.array_equal(back.labels, q.labels)), back.file_size
    (True, 974)
    """
    format = format_for_path(path, format, formats=SAVE_FORMATS)
    content = encode(
        data,
        palette,
        format=format,
        deflate=deflate,
        bit_depth=bit_depth,
        scalar=scalar,
        index_layout=index_layout,
        level=level,
        names=names,
        pixel_size=pixel_size,
    )
    return atomic_write(path, content, overwrite=overwrite)


def load(path, *, max_pixels: int | None = None) -> KVQData:
    """Load a ``.kvq`` file, an indexed PNG or a palette TIFF (told apart by their first
    bytes), with the class names the file records (``names``, else None).

    Only a regular file is read: a FIFO, a device or a socket is refused at once. The
    file's first bytes are read alone and checked (magic bytes, every header field, the
    sizes the header declares against the file's real size and the pixel limit) before the
    rest is read or any pixel memory allocated; nothing is unpickled.

    Parameters
    ----------
    path : str or Path
    max_pixels : int, optional
        Refuse files declaring more pixels than this; default
        :data:`napari_kmeans_vq.io.limits.MAX_PIXELS` (2**28 unless changed there, by the
        environment variable ``NAPARI_KMEANS_VQ_MAX_PIXELS`` or the command line's
        ``--max-pixels``).

    Returns
    -------
    KVQData
        ``labels``, ``palette``, ``reconstruction`` and the file's details.

    Raises
    ------
    KVQError
        The file is not a valid ``.kvq``, indexed PNG or palette TIFF (see
        ``docs/kvq-format.md`` for the checks), declares more pixels than the limit, or is
        not a regular file.
        ``KVQError`` is a ``ValueError``.
    OSError
        The file cannot be opened (missing, a directory, no permission).
    """
    path = Path(path)
    source = str(path)
    kind = []

    def check(head: bytes, size: int) -> None:
        if head[:8] == MAGIC:
            read_header(head, size, source=source, max_pixels=max_pixels)
            kind.append("kvq")
        elif head[:8] == PNG_SIGNATURE:
            read_png_header(head, size, source=source, max_pixels=max_pixels)
            kind.append("png")
        elif head[:4] in TIFF_MAGICS:
            raise _IsTiff
        else:
            raise KVQError(f"{source}: not a .kvq file or a PNG, nor a TIFF (unknown first bytes)")

    try:
        content = read_checked(path, header_size(MAX_NDIM), check)
    except _IsTiff:
        from .tiff import read_labels_tiff

        return read_labels_tiff(path, max_pixels=max_pixels)
    if kind == ["kvq"]:
        return decode_kvq(content, source=source, max_pixels=max_pixels)
    return decode_indexed_png(content, source=source, max_pixels=max_pixels)


#: The first four bytes of a TIFF and a BigTIFF, either byte order.
TIFF_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


class _IsTiff(Exception):
    """Raised by the header check to hand a TIFF to its own (bounded) reader."""


def encoded_sizes(
    data,
    palette=None,
    *,
    scalar: bool = False,
    contents: dict | None = None,
    level: int = DEFAULT_LEVEL,
) -> dict:
    """Real bytes on disk of a quantized image in each format, encoded in memory.

    Each format is encoded once, as :func:`save` writes it by default (a deflated ``.kvq``
    in the layout ``index_layout="auto"`` picks, an indexed PNG at the smallest bit depth).

    Parameters
    ----------
    data, palette, scalar
        As for :func:`save`.
    contents : dict, optional
        When given, receives the encoded files: ``contents["kvq"]`` (deflated ``.kvq``) and
        ``contents["png"]`` (when there is one), so a caller can write them without
        encoding again.
    level : int, default 6
        zlib compression level (0 .. 9).

    Returns
    -------
    dict
        ``kvq_raw`` (undeflated ``.kvq``, computed: header + palette + ``ceil(N*b/8)``),
        ``kvq_deflated`` (encoded), ``kvq_index_layout`` (``"packed"`` or ``"bytes"``),
        ``png`` (bytes of the indexed PNG, or None when the image is not 2D, K > 256 or the
        palette is not uint8 grey/RGB/RGBA), ``png_bit_depth`` and, when there is no PNG,
        ``png_reason``.
    """
    labels, palette, scalar = _unpack(data, palette, scalar)
    palette = np.asarray(palette)
    if palette.ndim == 1:
        palette = palette[:, None]
    kvq = encode_kvq(labels, palette, deflate=True, scalar=scalar, level=level)
    sizes: dict = {
        "kvq_raw": kvq_size(labels.shape, palette.shape[0], palette.shape[1], palette.itemsize),
        "kvq_deflated": len(kvq),
        "kvq_index_layout": "bytes" if kvq[10] & FLAG_BYTES else "packed",
        "png": None,
        "png_bit_depth": None,
    }
    if contents is not None:
        contents["kvq"] = kvq
    try:
        png = encode_indexed_png(labels, palette, scalar=scalar, level=level)
    except ValueError as exc:
        sizes["png_reason"] = str(exc)
    else:
        sizes["png"] = len(png)
        sizes["png_bit_depth"] = png[24]
        if contents is not None:
            contents["png"] = png
    return sizes


def _lazy_sizes(result) -> dict:
    """:func:`encoded_sizes`' layout for a lazy result: only the computed undeflated size
    (its labels are not in memory, so nothing is encoded)."""
    palette = result.palette if result.palette.ndim == 2 else result.palette[:, None]
    shape = result.levels[0].shape
    return {
        "kvq_raw": kvq_size(shape, palette.shape[0], palette.shape[1], palette.itemsize),
        "kvq_deflated": None,
        "kvq_index_layout": None,
        "png": None,
        "png_bit_depth": None,
        "png_reason": "not encoded for a streamed image",
    }


def size_report(
    data,
    palette=None,
    *,
    scalar: bool = False,
    input_bytes: int | None = None,
    contents: dict | None = None,
    level: int = DEFAULT_LEVEL,
) -> dict:
    """Formula bits next to real bytes: what the seed computes and what the files weigh.

    Parameters
    ----------
    data, palette, scalar
        As for :func:`save`; also a :class:`~napari_kmeans_vq.LazyQuantization`, whose
        labels are not in memory: its report has the formula and the computed undeflated
        ``.kvq`` size, and no encoded sizes (``kvq_deflated`` and ``png`` are None).
    input_bytes : int, optional
        Size of the source file (a PNG or JPEG on disk), for a ratio against it.
    contents : dict, optional
        See :func:`encoded_sizes`.
    level : int, default 6
        zlib compression level of the files measured (0 .. 9).

    Returns
    -------
    dict
        ``formula`` (the :class:`~napari_kmeans_vq.BitReport` as a dict, plus
        ``formula_bytes = ceil(total_bits / 8)``), ``raw_bytes`` (the uncompressed image,
        ``original_bits / 8``: 3N for 24-bit RGB), ``input_bytes``, ``files`` (from
        :func:`encoded_sizes`), and ``ratios``: each size over ``raw_bytes`` (``vs_raw``)
        and over ``input_bytes`` (``vs_input``, when given).
    """
    from ..core.bits import bit_report
    from ..large.lazy import LazyQuantization

    if isinstance(data, LazyQuantization):
        if palette is not None:
            raise TypeError("palette must not be given with a LazyQuantization")
        return sizes_with_ratios(data.report, _lazy_sizes(data), input_bytes)
    labels, palette, scalar = _unpack(data, palette, scalar)
    palette = np.asarray(palette)
    if palette.ndim == 1:
        palette = palette[:, None]
    report = getattr(data, "report", None)
    if report is None or isinstance(data, KVQData):
        report = bit_report(
            int(labels.size),
            int(palette.shape[0]),
            channels=int(palette.shape[1]),
            bits_per_channel=palette.itemsize * 8,
        )
    files = encoded_sizes(labels, palette, scalar=scalar, contents=contents, level=level)
    return sizes_with_ratios(report, files, input_bytes)


#: The entries of ``files`` that :func:`sizes_with_ratios` turns into ratios.
_SIZED = ("kvq_raw", "kvq_deflated", "png", "ome_zarr")


def sizes_with_ratios(report, files: dict, input_bytes: int | None) -> dict:
    """The formula beside the real file sizes, each as a ratio of the raw and input bytes.

    ``files`` maps ``kvq_raw``, ``kvq_deflated``, ``png`` and, for a store written,
    ``ome_zarr`` to byte counts (None when not encoded); this is the layout
    :func:`size_report` returns and the command line prints. Call it again after changing
    ``files`` (a file written, its size measured) to update the ratios.
    """
    formula = {**report.to_dict(), "formula_bytes": -(-report.total_bits // 8)}
    raw_bytes = report.original_bits // 8
    sizes = {"formula": formula["formula_bytes"]}
    sizes |= {name: files.get(name) for name in _SIZED}
    ratios: dict = {"vs_raw": {}, "vs_input": {}}
    for name, value in sizes.items():
        if value is None:
            continue
        ratios["vs_raw"][name] = value / raw_bytes
        if input_bytes:
            ratios["vs_input"][name] = value / input_bytes
    return {
        "formula": formula,
        "raw_bytes": raw_bytes,
        "input_bytes": input_bytes,
        "files": files,
        "ratios": ratios,
    }


def tree_size(path) -> tuple[int, int]:
    """Bytes of a file, or of every file under a directory (a zarr store), and the bytes
    allocated for them on disk (whole blocks; the same as the size where the system does
    not say)."""
    path = Path(path)

    def sizes(stat) -> tuple[int, int]:
        return stat.st_size, getattr(stat, "st_blocks", 0) * 512 or stat.st_size

    if not path.is_dir():
        return sizes(path.stat())
    size = allocated = 0
    for root, _, names in os.walk(path):
        for name in names:
            nbytes, blocks = sizes(os.stat(os.path.join(root, name)))
            size += nbytes
            allocated += blocks
    return size, allocated


class IncompleteStoreError(FileExistsError):
    """An interrupted write left an incomplete store for this path: finish it
    (``resume=True``, ``--resume``) or start again (``overwrite=True``, ``--force``).

    Attributes
    ----------
    partial : Path
        The incomplete store, ``.NAME.<hex>.tmp`` beside the destination.
    record : dict
        Its record (:func:`napari_kmeans_vq.io.omezarr.read_partial`): ``done`` and
        ``total`` blocks among others.
    """

    def __init__(self, path, partial: Path, record: dict | None):
        self.path, self.partial, self.record = Path(path), Path(partial), record or {}
        done, total = self.record.get("done", "?"), self.record.get("total", "?")
        super().__init__(
            f"{path}: an interrupted write left an incomplete store, {partial} ({done} of "
            f"{total} blocks written); finish it with resume=True, or start again with "
            "overwrite=True"
        )


def incomplete_store(path) -> tuple[Path, dict] | None:
    """The newest incomplete store an interrupted :func:`save_ome_zarr` to ``path`` left
    (no writer running), with its record; None when there is none."""
    from . import omezarr

    for partial in partial_stores(path):
        record = omezarr.read_partial(partial)
        if record is not None:
            return partial, record
    return None


def save_ome_zarr(
    path,
    result,
    *,
    image=None,
    overwrite: bool = False,
    resume: bool = False,
    progress=None,
    **options,
) -> Path:
    """Write a quantization's labels as an OME-Zarr store that appears whole or not at all,
    and that an interrupted run finishes where it stopped.

    :func:`napari_kmeans_vq.io.omezarr.write_labels` fills a folder ``.NAME.<hex>.tmp``
    beside ``path`` block by block, marked incomplete by a record (the result's and the
    options' fingerprint) and a marker per block stored; once every block and level is
    stored it is renamed to ``path``. So ``path`` never names an incomplete store. A run
    that fails, is interrupted or killed leaves the incomplete store (or nothing, before its
    first block); ``resume=True`` finishes it, skipping the blocks stored, and the finished
    store is the same bytes as an uninterrupted run's. Without ``resume`` (or
    ``overwrite``) such a leftover raises :class:`IncompleteStoreError`.

    With ``overwrite`` an existing store is replaced once the new one is complete (an
    atomic exchange where the system has one), and only if it is a store this package
    could have written (:func:`~napari_kmeans_vq.io.omezarr.replaceable_store`), an empty
    folder or a symbolic link (the link is replaced, not followed): never an arbitrary
    folder. ``overwrite`` without ``resume`` also discards incomplete stores (starts
    again).

    The blocks are computed and stored on dask's active scheduler: a ``distributed``
    client's when one is set up, whose workers write the chunks themselves (the store must
    be on a file system they share).

    Parameters
    ----------
    path : str or Path
        The store to write (``.ome.zarr`` by convention).
    result : Quantization or LazyQuantization
    image : array or "reconstruction", optional
        Also store the original or the quantized image (see ``write_labels``).
    overwrite : bool, default False
        When False, an existing ``path`` of any kind raises ``FileExistsError``.
    resume : bool, default False
        Finish the incomplete store an interrupted run left, if its fingerprint is this
        call's (same input, codebook and options; else
        :class:`~napari_kmeans_vq.io.omezarr.ResumeError`); with none, write from the
        start.
    progress : callable, optional
        ``progress("write", fraction_done)``, as for ``write_labels``.
    **options
        Passed to ``write_labels`` (``name``, ``chunk``, ``n_levels``, ``source``, ...).

    Returns
    -------
    Path

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False, or it is not a store that may be
        replaced (a file, a folder of something else).
    IncompleteStoreError
        An interrupted run left an incomplete store, and neither ``resume`` nor
        ``overwrite`` says what to do with it.
    """
    from . import omezarr

    path = Path(path)
    clean_leftovers(path)
    found = incomplete_store(path)
    if found is not None and not resume:
        if not overwrite:
            raise IncompleteStoreError(path, *found)
        discard_partials(path)
        found = None

    def write(tmp: Path) -> None:
        omezarr.write_labels(
            tmp,
            result,
            image=image,
            progress=progress,
            overwrite=True,
            resume=found is not None,
            **options,
        )

    write_store(
        path,
        write,
        overwrite=overwrite,
        replaceable=omezarr.replaceable_store,
        resumable=True,
        resume=None if found is None else found[0],
    )
    return path
