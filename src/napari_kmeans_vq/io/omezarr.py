"""Write quantization labels as OME-Zarr labels (NGFF 0.5 or 0.4), block by block.

The labels are a multiscale label image with ``image-label`` metadata: one colour per
codeword (the palette as RGBA 0-255) and one properties entry per codeword (pixel count,
share of the image, hex colour, palette value, and the class ``name`` when names are
given). Label value ``i + 1`` is codeword ``i``; 0 is the NGFF background value and never
occurs. Written alone, the label image is the
store's root; with an image, the image is the root and the labels are ``labels/<name>``.
Either way ome-zarr-py's ``Reader`` and napari-ome-zarr open it (as a labels layer with
the palette's colours). NGFF 0.5 is zarr v3 with the metadata under ``"ome"``; 0.4 is zarr
v2 with ``/`` separated chunk keys. Arrays are zstd-compressed.

Writing streams: every level is stored in one dask computation, block by block (labels are
computed from the image as they are written, for a lazy result, and the coarser levels
are subsampled from the full-resolution blocks as they are computed), so memory holds a
few blocks, never a whole level. Each task writes its own whole chunks and then a marker
file, and the store carries a record of its fingerprint until the last block is stored: a
write that stops is resumed where it stopped (``resume=True``), on any dask scheduler or cluster.

Needs ``zarr>=3`` and ``dask`` (``pip install napari-kmeans-vq[large]``); neither is
imported until a function here is called.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
from typing import NamedTuple

import numpy as np

from .._limits import label_dtype
from ..core.colorspace import palette_rgba

NGFF_VERSIONS = ("0.5", "0.4")
DEFAULT_CHUNK = 1024
_AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x"), 4: ("t", "z", "y", "x")}


def default_compressor(ngff_version: str = "0.5"):
    """Zstandard at level 1 (as a zarr v3 codec for NGFF 0.5, numcodecs for 0.4).

    Labels come in runs along rows, which zstd finds in the plain bytes. Measured on H&E
    labels at K = 16 in 1024 x 1024 chunks, plain zstd at level 1 compresses better than
    Blosc's zstd at the same level (whose blocks are smaller) in less time, twice as well
    as LZ4, and higher levels cost more than twice the time for a few percent.
    """
    if ngff_version == "0.4":
        from numcodecs import Zstd

        return Zstd(level=1)
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=1)


def _set_ome(group, version: str, **entries) -> None:
    """Store NGFF metadata: under ``"ome"`` with the version for 0.5, each entry carrying
    its own version for 0.4."""
    if version == "0.4":
        for value in entries.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, dict):
                    item["version"] = version
        group.attrs.update(entries)
    else:
        group.attrs.update({"ome": {"version": version, **entries}})


def _get_ome(group) -> dict:
    attrs = group.attrs.asdict()
    return attrs.get("ome", attrs)


def palette_rgba255(palette: np.ndarray) -> np.ndarray:
    """Palette (K, C) in its dtype -> RGBA 0-255 ints (K, 4), the colours napari shows.

    The same colours as :func:`napari_kmeans_vq.core.colorspace.palette_rgba` (grey for one
    channel, alpha 255 for RGB, integer palettes scaled from their dtype's range), as
    the integers NGFF's ``image-label`` asks for.
    """
    return np.rint(palette_rgba(np.asarray(palette)) * 255).astype(np.int64)


def _axes(ndim: int, channel: bool = False) -> list[dict]:
    if ndim not in _AXIS_NAMES:
        raise ValueError(
            f"labels must have 2 to 4 axes ((t, z,) y, x) to be written as OME-Zarr, got {ndim}."
        )
    axes = [{"name": n, "type": "time" if n == "t" else "space"} for n in _AXIS_NAMES[ndim]]
    if channel:
        # NGFF orders axes time, channel, space.
        at = 1 if ndim == 4 else 0
        axes.insert(at, {"name": "c", "type": "channel"})
    return axes


def _aligned(x, chunk: int, dims: int):
    """``x`` rechunked, if need be, so that its blocks are whole zarr chunks of ``chunk``.

    Blocks that already are multiples of the chunk are kept (so each block writes its own
    chunks and no two writers share one); others become the nearest multiple.
    """
    target = []
    changed = False
    for axis, sizes in enumerate(x.chunks):
        want = min(chunk, x.shape[axis]) if axis >= x.ndim - dims else 1
        if all(s % want == 0 for s in sizes[:-1]):
            target.append(sizes)
        else:
            target.append(max(1, round(sizes[0] / want)) * want)
            changed = True
    zchunks = tuple(min(chunk, x.shape[a]) if a >= x.ndim - dims else 1 for a in range(x.ndim))
    return (x.rechunk(tuple(target)) if changed else x), zchunks


def _create_level(group, path: str, x, chunks, compressor, names, never_empty=False):
    """Create ``group[path]`` for the (aligned) dask array ``x`` with zarr ``chunks``.

    ``never_empty``: no chunk can be all fill value (stored labels are 1 .. K), so zarr
    need not compare each chunk with it before writing (a pass over the data as costly as
    compressing it).
    """
    v2 = group.metadata.zarr_format == 2
    # zarr v3 arrays name their axes (NGFF 0.5 asks for it); v2 has no such field.
    named = {} if v2 else {"dimension_names": names}
    if never_empty:
        named["config"] = {"write_empty_chunks": True}
    return group.create_array(
        path,
        shape=x.shape,
        chunks=chunks,
        dtype=x.dtype,
        compressors=compressor,
        fill_value=0,
        chunk_key_encoding={"name": "v2" if v2 else "default", "separator": "/"},
        overwrite=True,
        **named,
    )


def _from_full_resolution(levels, spatial: int) -> list:
    """The levels, each lower one that is every n-th pixel of level 0 (n rounded from the
    size ratio, the last row or column of the subsample dropped if need be) given as
    ``(steps, shape)`` for :func:`_multiscale` to take from level 0's blocks: a multiscale
    result's labels are then encoded once, at full resolution, and the image's lower
    levels are never decoded. Levels of other shapes are kept."""
    first = levels[0]
    out = [first]
    for x in levels[1:]:
        steps = []
        for axis, (s0, s) in enumerate(zip(first.shape, x.shape, strict=True)):
            step = max(1, round(s0 / s)) if s else 0
            if axis < x.ndim - spatial:
                step = 1 if s == s0 else 0
            elif s not in (s0 // step, -(-s0 // step)):
                step = 0
            steps.append(step)
        out.append((tuple(steps), tuple(x.shape)) if all(steps) else x)
    return out


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _pixel_size(pixel_size, ndim: int) -> list[float]:
    """The full-resolution pixel size per label axis: one number for every axis, or one
    per axis; each finite and positive (NGFF scales are)."""
    if pixel_size is None:
        return [1.0] * ndim
    given = np.ravel(np.asarray(pixel_size, dtype=object))
    sizes = list(given) * ndim if given.size == 1 else list(given)
    try:
        sizes = [float(s) for s in sizes]
    except (TypeError, ValueError):
        sizes = []
    if len(sizes) != ndim or not all(math.isfinite(s) and s > 0 for s in sizes):
        raise ValueError(
            f"pixel_size must be one positive number, or one per label axis ({ndim}), got "
            f"{pixel_size!r}."
        )
    return sizes


def _n_levels(shape, chunk: int, n_levels: int | None) -> int:
    if n_levels is not None:
        if not _is_int(n_levels) or n_levels < 1:
            raise ValueError(f"n_levels must be a positive integer or None, got {n_levels!r}.")
        return int(n_levels)
    # Halve until the plane fits one chunk.
    side = max(shape[-2:])
    return 1 + max(0, math.ceil(math.log2(side / chunk))) if side > chunk else 1


def _multiscale(levels, *, chunk, n_levels, spatial, scale0, shape0):
    """The given levels and levels subsampled from the last one, down to ``n_levels``:
    ``(datasets, [(path, x aligned to its chunks, zarr chunks)])``.

    A given level is a dask array, or ``(steps, shape)``: every ``steps``-th pixel of
    level 0 along each axis, cut to ``shape`` (see :func:`_from_full_resolution`). Every
    level is stored in one dask computation, and each subsampled level is taken from the
    blocks of the finest level already made that it is a subsample of (a pyramid halving
    at each level is made from the level above, whose blocks are a quarter of the size):
    the labels are encoded once, no level is read back, and the tasks per level shrink
    with the level.
    """
    datasets, levels_out, made = [], [], []
    last = len(levels) - 1
    for i in range(n_levels):
        if i <= last:
            given = levels[i]
            if isinstance(given, tuple):
                # Every steps-th pixel of level 0: exactly steps times its pixel size.
                (steps, shape), origin = given, 0
                factor = steps
            else:
                # A level of its own: its scale is its size ratio to full resolution.
                shape, origin, steps = given.shape, i, (1,) * given.ndim
                factor = [s0 / s for s0, s in zip(shape0, shape, strict=True)]
            scale = [scale0[a] * factor[a] for a in range(len(shape))]
        else:
            # Every 2**j-th pixel of the last given level: exactly 2**j times its pixel size.
            step = 2 ** (i - last)
            origin, last_steps, last_shape = made[last]
            ndim = len(last_shape)
            steps = tuple(s * step if a >= ndim - spatial else s for a, s in enumerate(last_steps))
            shape = tuple(
                -(-n // step) if a >= ndim - spatial else n for a, n in enumerate(last_shape)
            )
            base = datasets[last]["coordinateTransformations"][0]["scale"]
            scale = [v * step if a >= ndim - spatial else v for a, v in enumerate(base)]
        x = given if origin == i else _from_made(levels_out, made, origin, steps, shape)
        x, zchunks = _aligned(x, chunk, spatial)
        made.append((origin, tuple(steps), tuple(shape)))
        levels_out.append((str(i), x, zchunks))
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    return datasets, levels_out


def _from_made(levels_out, made, origin, steps, shape):
    """Every ``steps``-th pixel of level ``origin`` cut to ``shape``, taken from the last
    level made from the same origin that holds all those pixels."""
    for j in reversed(range(len(made))):
        j_origin, j_steps, j_shape = made[j]
        if j_origin != origin or any(s % t for s, t in zip(steps, j_steps, strict=True)):
            continue
        ratio = [s // t for s, t in zip(steps, j_steps, strict=True)]
        if all(-(-m // r) >= n for m, r, n in zip(j_shape, ratio, shape, strict=True)):
            x = levels_out[j][1]
            index = tuple(slice(0, n * r, r) for n, r in zip(shape, ratio, strict=True))
            return x[index]
    raise AssertionError("level 0 holds every subsample")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# writing block by block, resumably

#: The folder inside a store being written where each stored block leaves a marker.
_BLOCKS = ".kvq-blocks"
_RECORD_FORMAT = "napari-kmeans-vq incomplete OME-Zarr store"
#: What each part of a store's fingerprint is, for the message when a resume is refused.
_PARTS = {
    "n_colors": "K",
    "random_state": "the seed",
    "color_space": "the colour space",
    "fit": "the fit (exact or sampled, level)",
    "codebook": "the fitted codebook (palette, centroids, class sizes)",
    "input": "the labels computed (from the input image with the codebook)",
    "labels": "the label levels (shapes, dtype, blocks)",
    "options": "the output options (name, chunk, levels, pixel size, NGFF version, names)",
    "image": "--with-image (the image stored with the labels)",
    "source": "the input file (path, size or modification time)",
}


class ResumeError(ValueError):
    """An incomplete store cannot be finished with this result: it was written from another
    input, codebook or options (its fingerprint differs), or it is not an incomplete store."""


class _Target(NamedTuple):
    """Where a level's blocks go: its zarr array, the codec :func:`_write_chunks` writes
    its chunks with (None: zarr writes them), and how many values to count in each block
    (0: none; the counts go into the block's marker)."""

    array: object
    codec: object = None
    count: int = 0


def _store_block(block, target, marker_dir, level, block_info=None):
    """Store one block of a level into its (whole) zarr chunks, then leave its marker
    (holding the block's value counts, if asked)."""
    from ..core.histogram import count_values

    info = block_info[0]
    if target.codec is None:
        target.array[tuple(slice(a, b) for a, b in info["array-location"])] = block
    else:
        _write_chunks(block, target.array, target.codec, [a for a, _ in info["array-location"]])
    counts = b"" if not target.count else count_values(block, target.count).astype("<i8")
    # Only after the chunks are written: a resume skips this block.
    name = _marker(level, info["chunk-location"])
    with open(os.path.join(marker_dir, name), "wb") as handle:
        handle.write(bytes(counts))
    return np.zeros((1,) * block.ndim, dtype=bool)


def _direct_codec(target):
    """The numcodecs codec that makes the bytes of ``target``'s chunks, when they can be
    written here as zarr writes them (:func:`_write_chunks`): a local store, C order, no
    filter, zstd compression (the default), a byte order the machine has; else None."""
    import sys

    from numcodecs import Zstd
    from zarr.codecs import BytesCodec, ZstdCodec
    from zarr.storage import LocalStore

    meta = target.metadata
    if not isinstance(target.store, LocalStore) or sys.byteorder != "little":
        return None
    if target.dtype.itemsize > 1 and target.dtype.byteorder not in "=<":
        return None
    if meta.zarr_format == 2:
        if meta.filters or meta.order != "C" or not isinstance(meta.compressor, Zstd):
            return None
        return meta.compressor
    codecs = meta.codecs
    if (
        len(codecs) != 2
        or not isinstance(codecs[0], BytesCodec)
        or not isinstance(codecs[1], ZstdCodec)
        or (codecs[0].endian is not None and codecs[0].endian.value != "little")
    ):
        return None
    return Zstd(level=codecs[1].level, checksum=codecs[1].checksum)


def _write_chunks(block, target, codec, start) -> None:
    """Write the whole chunks of ``block`` (at ``start`` in ``target``) straight to their
    files, compressed in this thread: the bytes and names zarr gives them (edge chunks
    padded with the fill value), each written to ``KEY.<hex>.partial`` and renamed, as
    zarr's local store does. zarr's own writes go through its event loop thread, where
    two writers wait on each other."""
    import uuid

    chunks = target.chunks
    folder = os.path.join(os.fspath(target.store.root), target.path)
    grid = [-(-n // c) for n, c in zip(block.shape, chunks, strict=True)]
    for offset in np.ndindex(*grid):
        at = [o * c for o, c in zip(offset, chunks, strict=True)]
        piece = block[tuple(slice(a, a + c) for a, c in zip(at, chunks, strict=True))]
        if piece.shape != tuple(chunks):
            full = np.full(chunks, target.fill_value, dtype=target.dtype)
            full[tuple(slice(0, n) for n in piece.shape)] = piece
            piece = full
        data = codec.encode(np.ascontiguousarray(piece, dtype=target.dtype))
        key = target.metadata.encode_chunk_key(
            tuple((s + a) // c for s, a, c in zip(start, at, chunks, strict=True))
        )
        path = os.path.join(folder, *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise


def _marker(level: int, index) -> str:
    return f"{level}-" + ".".join(str(int(i)) for i in index)


def _store_blocks(
    sources, targets, marker_dir: str, done: set, codecs=None, count: int = 0
) -> None:
    """Store every block of ``sources`` not in ``done`` into ``targets``, in one dask
    computation on the active scheduler (a ``distributed`` client's when there is one).

    Each task writes its block's own chunks and a marker file: nothing depends on the
    process that built the graph (no lock, no open handle), so any worker may run it.
    ``codecs``: for each target, the codec with which :func:`_write_chunks` writes its
    chunks, or None for zarr's own writing. ``count``: values 0 .. count - 1 of the first
    level counted block by block into the markers (0: none).
    """
    import dask

    codecs = [None] * len(targets) if codecs is None else codecs
    written = [
        x.map_blocks(
            _store_block,
            _Target(target, codec, count if level == 0 else 0),
            marker_dir,
            level,
            chunks=tuple((1,) * len(c) for c in x.chunks),
            dtype=bool,
            meta=np.empty((0,) * x.ndim, dtype=bool),
        )
        for level, (x, target, codec) in enumerate(zip(sources, targets, codecs, strict=True))
    ]
    if not done:
        dask.compute(*written)
        return
    todo = []
    for level, w in enumerate(dask.optimize(*written)):
        blocks = w.to_delayed(optimize_graph=False)
        for index in np.ndindex(*w.numblocks):
            if _marker(level, index) not in done:
                todo.append(blocks[index])
    if todo:
        # One computation: blocks shared by several levels are computed once.
        dask.compute(*todo)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _input_token(levels) -> str:
    """The label levels' identity: dask's names (derived from the input's and the
    codebook's), or a hash of in-memory labels."""
    from dask.base import tokenize

    return tokenize(*[lv.name if hasattr(lv, "dask") else np.asarray(lv) for lv in levels])


def _token_part(array):
    from ..core.validation import is_chunked
    from ..large.inputs import is_lazy_input

    return array if is_chunked(array) or is_lazy_input(array) else np.asarray(array)


def _fingerprint_parts(result, levels, options: dict, image, source) -> dict:
    from dask.base import tokenize

    info = getattr(result, "info", {}) or {}
    if image is None or isinstance(image, str):
        image_token = image
    else:
        images = list(image) if isinstance(image, list | tuple) else [image]
        # Numpy arrays by their bytes; dask by name; zarr arrays and slide levels by what
        # dask's tokenize says of them (store and path, file and level): nothing is read.
        image_token = tokenize(
            *[im.name if hasattr(im, "dask") else _token_part(im) for im in images]
        )
    return {
        "n_colors": int(result.n_colors),
        "random_state": info.get("random_state"),
        "color_space": info.get("color_space"),
        "fit": [info.get("fit", "exact"), info.get("fit_level", 0), info.get("n_samples")],
        "codebook": _digest(
            np.asarray(result.palette),
            np.asarray(result.centroids),
            np.asarray(result.cluster_sizes),
        ),
        "input": _input_token(levels),
        "labels": [[list(lv.shape), str(lv.dtype)] for lv in levels],
        "options": options,
        "image": image_token,
        "source": source,
    }


def _fingerprint(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def read_partial(path) -> dict | None:
    """The record of an incomplete store (what an interrupted :func:`write_labels` left):
    its fingerprint and parts, its levels and their blocks, plus ``done`` and ``total``
    (blocks stored so far and in all); None when ``path`` holds no such record."""
    from ._atomic import PARTIAL_RECORD
    from .data import KVQError
    from .limits import parse_json

    record_path = os.path.join(os.fspath(path), PARTIAL_RECORD)
    try:
        with open(record_path, "rb") as handle:
            record = parse_json(handle.read(), source=record_path)
    except (OSError, KVQError):
        return None
    if not isinstance(record, dict) or record.get("format") != _RECORD_FORMAT:
        return None
    try:
        done = set(os.listdir(os.path.join(os.fspath(path), _BLOCKS)))
    except OSError:
        done = set()
    record["done_markers"] = done
    record["done"] = len(done)
    record["total"] = int(sum(record.get("blocks", [])))
    return record


def _check_resumable(path, record, parts: dict, fingerprint: str) -> None:
    if record is None:
        raise ResumeError(
            f"{path} is not an incomplete store left by an interrupted write (it has no "
            "progress record): nothing to resume."
        )
    if record.get("fingerprint") == fingerprint:
        return
    old = record.get("parts") or {}
    differ = [
        key
        for key in parts
        if json.dumps(old.get(key), sort_keys=True, default=str)
        != json.dumps(parts[key], sort_keys=True, default=str)
    ]
    what = ", ".join(_PARTS.get(k, k) for k in differ) or "its fingerprint"
    raise ResumeError(
        f"cannot resume {path}: this run differs from the one that began it in {what} "
        f"({record.get('done', 0)} of {record.get('total', '?')} blocks stored), and a "
        "resume never mixes two runs: start again with overwrite=True."
    )


def _prepare(
    result, image, name, chunk, n_levels, pixel_size, compressor, ngff_version, names, source
):
    """Everything a write needs, checked, before anything is written."""
    import dask.array as da

    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a non-empty string without '/', got {name!r}.")
    if ngff_version not in NGFF_VERSIONS:
        raise ValueError(f"ngff_version must be one of {NGFF_VERSIONS}, got {ngff_version!r}.")
    if not _is_int(chunk) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}.")
    chunk = int(chunk)
    given = default_compressor(ngff_version) if compressor is None else compressor
    raw = list(result.labels) if getattr(result, "multiscale", False) else [result.labels]
    levels = [lv if isinstance(lv, da.Array) else da.from_array(np.asarray(lv)) for lv in raw]
    shape0 = levels[0].shape
    spatial = min(2, len(shape0))
    axes = _axes(len(shape0))
    scale0 = _pixel_size(pixel_size, len(shape0))
    k = int(result.n_colors)
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != k:
            raise ValueError(f"names: expected {k}, one per class, got {len(names)}.")
    dtype = label_dtype(k)
    stored = [
        lv if isinstance(lv, tuple) else lv.astype(dtype) + dtype.type(1)
        for lv in _from_full_resolution(levels, spatial)
    ]
    n = max(_n_levels(shape0, chunk, n_levels), len(stored))
    datasets, label_levels = _multiscale(
        stored, chunk=chunk, n_levels=n, spatial=spatial, scale0=scale0, shape0=shape0
    )
    label_root = "" if image is None else f"labels/{name}/"
    arrays = [(label_root + p, x, c, [a["name"] for a in axes]) for p, x, c in label_levels]
    image_datasets = None
    if image is not None:
        image_datasets, image_levels = _image_levels(
            result, image, levels, chunk, n, scale0, shape0, spatial
        )
        image_axes = [a["name"] for a in _axes(len(shape0), channel=True)]
        arrays += [(p, x, c, image_axes) for p, x, c in image_levels]
    options = {
        "name": name,
        "chunk": chunk,
        "n_levels": n,
        "pixel_size": scale0,
        "ngff_version": ngff_version,
        "names": names,
        "compressor": repr(given),
    }
    parts = _fingerprint_parts(result, raw, options, image, source)
    return {
        "k": k,
        "names": names,
        "axes": axes,
        "shape0": shape0,
        "compressor": given,
        "datasets": datasets,
        "image_datasets": image_datasets,
        "arrays": arrays,
        "n_label": len(label_levels),
        "parts": parts,
        "fingerprint": _fingerprint(parts),
    }


def write_labels(
    path,
    result,
    *,
    name: str = "kmeans",
    image=None,
    chunk: int = DEFAULT_CHUNK,
    n_levels: int | None = None,
    pixel_size=None,
    compressor=None,
    overwrite: bool = False,
    progress=None,
    ngff_version: str = "0.5",
    names=None,
    resume: bool = False,
    source=None,
) -> str:
    """Write a quantization's labels as OME-Zarr labels with the palette.

    The store is written in place, block by block, and marked incomplete until every block
    and level is stored (the record :data:`~napari_kmeans_vq.io._atomic.PARTIAL_RECORD`
    inside it, with a fingerprint of the result and the options; each stored block leaves
    a marker beside it). A write that stops (killed, interrupted, a block that fails)
    leaves that incomplete store, which ``resume=True`` finishes, skipping the blocks
    stored; the finished store is the same bytes as an uninterrupted write. For a store
    that appears whole or not at all, use :func:`napari_kmeans_vq.io.save_ome_zarr`.

    Parameters
    ----------
    path : str or os.PathLike
        The OME-Zarr directory to create (``.ome.zarr`` by convention).
    result : Quantization or LazyQuantization
        From :func:`napari_kmeans_vq.quantize` (in memory or lazy). Lazy labels are
        computed block by block as they are written. A multiscale result writes levels of
        its levels' shapes, each taken from the full-resolution labels (every n-th pixel,
        as NGFF label pyramids are made) when its shape is that of such a subsample (else
        its own labels): the image's lower levels are then never decoded.
    name : str, default "kmeans"
        The label image's name under ``labels/``.
    image : array or "reconstruction", optional
        Also write an image at the root (colour axis last in, stored channel-first as NGFF
        asks), e.g. the original slide or ``"reconstruction"`` (the quantized image), with
        the same pyramid; the labels then go to ``labels/<name>``. Without it the label
        image is the root.
    chunk : int, default 1024
        Chunk side in pixels for the last two axes.
    n_levels : int, optional
        Pyramid levels to write; default halves until the plane fits one chunk (a
        multiscale result writes at least its own levels).
    pixel_size : float or sequence of float, optional
        Physical size of a full-resolution pixel: one for every label axis, or one per
        axis (default 1); finite and positive.
    compressor : codec, optional
        Default :func:`default_compressor` (a zarr v3 codec for NGFF 0.5, numcodecs for 0.4).
    overwrite : bool, default False
        Replace an existing ``path``, if it is a store this package could have written
        (:func:`replaceable_store`, an incomplete one too); never an arbitrary folder.
        (The store is rewritten in place: :func:`napari_kmeans_vq.io.save_ome_zarr` writes
        beside it and swaps.)
    progress : callable, optional
        Called as ``progress("write", fraction_done)`` as blocks are stored (on dask's
        local schedulers); an exception raised in it stops the writing.
    ngff_version : {"0.5", "0.4"}, default "0.5"
        NGFF 0.5 (zarr v3), or 0.4 (zarr v2) for readers that do not know 0.5 yet.
    names : sequence of K str, optional
        Class names in codeword order: each ``image-label`` properties entry gets its
        ``"name"`` (label ``i + 1`` is ``names[i]``). Without them no entry has a name.
    resume : bool, default False
        Finish the incomplete store at ``path``: only if its fingerprint is this call's
        (same input, codebook and options), else :class:`ResumeError`.
    source : str, optional
        More identity for the fingerprint (the command line gives the input file's path,
        size and modification time).

    Returns
    -------
    str
        ``path``.
    """
    import zarr

    from ._atomic import PARTIAL_RECORD, atomic_write

    given_path = os.fspath(path)
    path = os.path.abspath(given_path)
    plan = _prepare(
        result,
        image,
        name,
        chunk,
        n_levels,
        pixel_size,
        compressor,
        ngff_version,
        names,
        source,
    )
    fresh = _empty_folder(path)
    if resume:
        record = read_partial(path)
        _check_resumable(given_path, record, plan["parts"], plan["fingerprint"])
    elif os.path.lexists(path) and not fresh:
        if not overwrite:
            raise FileExistsError(
                f"path {given_path!r} exists; pass overwrite=True to replace it."
            )
        if not replaceable_store(path):
            raise FileExistsError(
                f"path {given_path!r} is not an OME-Zarr store this package could have "
                "written; refusing to replace it."
            )
    marker_dir = os.path.join(path, _BLOCKS)
    record_path = os.path.join(path, PARTIAL_RECORD)
    arrays = plan["arrays"]
    if resume:
        _remove_write_debris(path)
        root = zarr.open_group(path, mode="r+")
        targets = [root[p] for p, *_ in arrays]
        # (as created: the labels' chunks are never compared with the fill value)
        targets = [
            t.with_config({"write_empty_chunks": True}) if i < plan["n_label"] else t
            for i, t in enumerate(targets)
        ]
        done = record["done_markers"]
    else:
        # An empty folder is filled as it is ("w-": zarr would otherwise delete and
        # recreate it, and the writer's lock on it with it); anything else is replaced.
        root = zarr.open_group(
            path, mode="w-" if fresh else "w", zarr_format=2 if ngff_version == "0.4" else 3
        )
        if image is not None:
            root.create_group("labels").create_group(name)
        targets = [
            _create_level(root, p, x, c, plan["compressor"], axis_names, i < plan["n_label"])
            for i, (p, x, c, axis_names) in enumerate(arrays)
        ]
        os.mkdir(marker_dir)
        record = {
            "format": _RECORD_FORMAT,
            "note": (
                "An incomplete store: its writing was interrupted. Run the same command "
                "again with --resume (save_ome_zarr(..., resume=True)) to finish it, or "
                "with --force (overwrite=True) to start again."
            ),
            "fingerprint": plan["fingerprint"],
            "parts": plan["parts"],
            "arrays": [p for p, *_ in arrays],
            "blocks": [math.prod(x.numblocks) for _, x, *_ in arrays],
        }
        atomic_write(record_path, json.dumps(record, indent=1, default=str).encode())
        done = set()

    from ..large.progress import stage

    # Label chunks are written straight to their files where that gives zarr's bytes (the
    # image's, which may be all fill value and then are not stored, by zarr).
    codecs = [_direct_codec(t) if i < plan["n_label"] else None for i, t in enumerate(targets)]
    # The fit's cluster sizes describe other pixels (a sample, a coarser level): the
    # stored labels are counted as they are written.
    count = 0 if _fit_sizes(result, plan) is not None else plan["k"] + 1
    with stage(progress, "write"):
        _store_blocks([x for _, x, *_ in arrays], targets, marker_dir, done, codecs, count)
    _write_metadata(root, result, plan, image, targets[0], marker_dir)
    # Complete: the markers go, then the record (the store is then the same bytes as any
    # other write of this result).
    shutil.rmtree(marker_dir)
    os.unlink(record_path)
    return given_path


#: zarr's local store writes a chunk to ``KEY.<32 hex>.partial`` and renames it: a writer
#: killed meanwhile leaves that file.
_ZARR_PARTIAL = re.compile(r".+\.[0-9a-f]{32}\.partial")


def _remove_write_debris(path: str) -> None:
    """Remove the half-written chunk files a killed writer left in an incomplete store
    (their blocks have no marker, so they are written again)."""
    for folder, _, files in os.walk(path):
        for name in files:
            if _ZARR_PARTIAL.fullmatch(name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))


def _fit_sizes(result, plan) -> np.ndarray | None:
    """The fit's cluster sizes when they count the stored full-resolution labels (an
    exact fit of every pixel), else None."""
    from ..large.lazy import sizes_count_labels

    sizes = np.asarray(result.cluster_sizes)
    if not sizes_count_labels(result) or int(sizes.sum()) != math.prod(plan["shape0"]):
        return None
    return sizes


def _write_metadata(root, result, plan, image, level0, marker_dir) -> None:
    """The NGFF metadata, written once every block is stored (in the same order whatever
    the run, so that a resumed store is the same bytes)."""
    k, names, shape0 = plan["k"], plan["names"], plan["shape0"]
    version = plan["parts"]["options"]["ngff_version"]
    name = plan["parts"]["options"]["name"]
    group = root if image is None else root[f"labels/{name}"]
    sizes = _fit_sizes(result, plan)
    if sizes is None:
        sizes = _marker_counts(marker_dir, k, math.prod(plan["arrays"][0][1].numblocks))
    if sizes is None:
        sizes = _counts(level0, k)
    total = max(int(sizes.sum()), 1)
    rgba = palette_rgba255(result.palette)
    colors = [{"label-value": i + 1, "rgba": [int(v) for v in rgba[i]]} for i in range(k)]
    properties = [
        {
            "label-value": i + 1,
            "codeword": i,
            "pixel-count": int(sizes[i]),
            "share": float(sizes[i]) / total,
            "color": "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgba[i, :3])),
            "palette-value": np.asarray(result.palette[i]).tolist(),
            **({} if names is None else {"name": names[i]}),
        }
        for i in range(k)
    ]
    image_label = {"colors": colors, "properties": properties}
    if image is not None:
        image_label["source"] = {"image": "../../"}
    _set_ome(
        group,
        version,
        multiscales=[{"name": name, "axes": plan["axes"], "datasets": plan["datasets"]}],
        **{"image-label": image_label},
    )
    if image is not None:
        _set_ome(root["labels"], version, labels=[name])
        axes = _axes(len(shape0), channel=True)
        _set_ome(
            root,
            version,
            multiscales=[{"name": "image", "axes": axes, "datasets": plan["image_datasets"]}],
        )


def _marker_counts(marker_dir: str, n_colors: int, n_blocks: int) -> np.ndarray | None:
    """Pixels of each label value 1 .. K of the first level, summed from its blocks'
    markers; None unless every block's marker holds its counts (a store begun by an
    earlier version, say)."""
    size = 8 * (n_colors + 1)
    total = np.zeros(n_colors + 1, dtype=np.int64)
    found = 0
    for entry in os.scandir(marker_dir):
        if not entry.name.startswith("0-"):
            continue
        with open(entry.path, "rb") as handle:
            data = handle.read()
        if len(data) != size:
            return None
        total += np.frombuffer(data, dtype="<i8")
        found += 1
    return total[1:] if found == n_blocks else None


def _counts(arr, n_colors: int) -> np.ndarray:
    """Pixels of each label value 1 .. K in a stored level, block by block."""
    from ..large.lazy import count_labels

    return count_labels(arr, n_colors + 1)[1:]


def _image_levels(result, image, label_levels, chunk, n, scale0, shape0, spatial):
    """The image stored with the labels: ``(datasets, [(path, x, zarr chunks)])``."""
    import dask.array as da

    if isinstance(image, str):
        if image != "reconstruction":
            raise ValueError(f"image must be an array or 'reconstruction', got {image!r}.")
        recon = result.reconstruction
        images = list(recon) if getattr(result, "multiscale", False) else [recon]
    else:
        images = list(image) if isinstance(image, list | tuple) else [image]
    images = [
        _with_colour_axis(im, label_levels[min(i, len(label_levels) - 1)].shape)
        for i, im in enumerate(images)
    ]
    for i, im in enumerate(images):
        if (
            im.ndim != len(shape0) + 1
            or im.shape[:-1] != label_levels[min(i, len(label_levels) - 1)].shape
        ):
            raise ValueError(
                f"image level {i} has shape {im.shape}; expected the labels' shape plus a colour "
                "axis last."
            )
    # Channel-first (NGFF puts c before the spatial axes).
    at = 1 if len(shape0) == 4 else 0
    images = [da.moveaxis(im, -1, at) for im in images]
    img_scale0 = list(scale0)
    img_scale0.insert(at, 1.0)
    return _multiscale(
        images,
        chunk=chunk,
        n_levels=n,
        spatial=spatial,
        scale0=img_scale0,
        shape0=images[0].shape,
    )


def _with_colour_axis(image, labels_shape):
    """``image`` as dask with a colour axis last; a scalar image (the labels' shape) gets one."""
    import dask.array as da

    from ..large.inputs import as_dask

    scalar = tuple(image.shape) == tuple(labels_shape)
    if isinstance(image, da.Array):
        return image[..., np.newaxis] if scalar else image
    return as_dask(image, channel_axis=None if scalar else -1)


def _empty_folder(path) -> bool:
    try:
        return os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path)
    except OSError:
        return False


#: What the root of a store :func:`write_labels` wrote may hold: zarr metadata, the levels
#: ("0", "1"...) and the labels group.
_STORE_ENTRIES = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zmetadata", "labels"})


def replaceable_store(path) -> bool:
    """Whether ``path`` is a folder :func:`write_labels` could have written, so that
    ``--force`` may replace it: an OME-Zarr group whose root holds only zarr metadata,
    numbered levels and ``labels``, with ``multiscales`` metadata and either an
    ``image-label`` (labels alone) or a ``labels`` group (an image with labels). An empty
    folder also qualifies (nothing is lost), and so does an incomplete store an
    interrupted write left (:func:`read_partial` reads its record). Anything else (a
    symbolic link counts as replaceable by the caller, never followed here) is not.
    """
    from ._atomic import PARTIAL_RECORD
    from .data import KVQError
    from .limits import MAX_METADATA_BYTES, parse_json

    path = os.fspath(path)
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    try:
        names = os.listdir(path)
    except OSError:
        return False
    if not names:
        return True
    if read_partial(path) is not None:
        names = [n for n in names if n not in (PARTIAL_RECORD, _BLOCKS)]
        return all(name in _STORE_ENTRIES or name.isdigit() for name in names)
    if any(name not in _STORE_ENTRIES and not name.isdigit() for name in names):
        return False
    attrs = None
    for meta, key in (("zarr.json", "attributes"), (".zattrs", None)):
        if meta not in names:
            continue
        meta_path = os.path.join(path, meta)
        try:
            if not os.path.isfile(meta_path) or os.path.getsize(meta_path) > MAX_METADATA_BYTES:
                return False
            with open(meta_path, "rb") as handle:
                parsed = parse_json(handle.read(MAX_METADATA_BYTES + 1), source=meta_path)
        except (OSError, KVQError):
            return False
        if not isinstance(parsed, dict):
            return False
        attrs = parsed.get(key) if key else parsed
        break
    if not isinstance(attrs, dict):
        return False
    ome = attrs.get("ome", attrs)
    if not isinstance(ome, dict) or not ome.get("multiscales"):
        return False
    return "image-label" in ome or "labels" in names


def read_labels(path, name: str = "kmeans"):
    """Read back what :func:`write_labels` wrote (either layout, NGFF 0.5 or 0.4), lazily.

    Returns
    -------
    levels : list of dask arrays
        Stored label values (codeword + 1), full resolution first.
    metadata : dict
        The label image's ``image-label`` metadata (colours and properties), plus
        ``"names"``: the class names in codeword order (each property's ``"name"``, by
        label value), or None when the store names no class; and ``"scales"``: each
        level's pixel size (its NGFF scale transformation).

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ResumeError
        An incomplete store (its writing was interrupted).
    KVQError
        Anything else that is not OME-Zarr labels: another zarr store, a file, a store
        whose labels have another name (the message lists them).
    """
    import dask.array as da
    import zarr

    from .data import KVQError

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"cannot read {path}: no such file or directory")
    record = read_partial(path)
    if record is not None:
        raise ResumeError(
            f"{path} is an incomplete store ({record['done']} of {record['total']} "
            "blocks written before its writing was interrupted): finish it with resume=True, "
            "or write it again."
        )
    try:
        group = zarr.open_group(path, mode="r")
        if "image-label" not in _get_ome(group):
            if f"labels/{name}" not in group:
                found = _get_ome(group["labels"]).get("labels") if "labels" in group else None
                raise KVQError(
                    f"cannot read {path} as OME-Zarr labels: no label image named {name!r}"
                    + (f" (it has {', '.join(map(repr, found))}: pass name=)" if found else "")
                )
            group = group[f"labels/{name}"]
        attrs = _get_ome(group)
        datasets = attrs["multiscales"][0]["datasets"]
        levels = [da.from_zarr(group[d["path"]]) for d in datasets]
        metadata = dict(attrs["image-label"])
        metadata["names"] = label_names(metadata)
        metadata["scales"] = [
            next(t["scale"] for t in d["coordinateTransformations"] if t["type"] == "scale")
            for d in datasets
        ]
    except KVQError:
        raise
    except Exception as exc:  # zarr's and malformed metadata's errors alike: one message
        what = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, KeyError):
            what = f"its metadata or arrays lack {what}"
        raise KVQError(f"cannot read {path} as OME-Zarr labels: {what[:300]}") from None
    return levels, metadata


def label_names(image_label: dict) -> list[str] | None:
    """Class names in codeword order from ``image-label`` properties (label value
    ``i + 1`` is codeword ``i``), or None unless every class has a string ``"name"``."""
    properties = image_label.get("properties") if isinstance(image_label, dict) else None
    if not isinstance(properties, list) or not properties:
        return None
    named = {}
    for entry in properties:
        if not isinstance(entry, dict):
            return None
        value, name = entry.get("label-value"), entry.get("name")
        if not isinstance(value, int) or not isinstance(name, str):
            return None
        named[value] = name
    if sorted(named) != list(range(1, len(named) + 1)):
        return None
    return [named[v] for v in range(1, len(named) + 1)]


def label_palette(image_label: dict) -> np.ndarray:
    """The palette (K, C) that ``image-label`` properties record (each class's
    ``palette-value``, by label value); integers in the smallest unsigned dtype that
    holds them (JSON keeps no dtype: uint8 for 8-bit images)."""
    properties = sorted(image_label["properties"], key=lambda p: p["label-value"])
    palette = np.array([p["palette-value"] for p in properties]).reshape(len(properties), -1)
    if palette.dtype.kind in "iu":
        palette = palette.astype(np.uint8 if palette.max() <= 255 else np.uint16)
    return palette


def label_counts(image_label: dict) -> np.ndarray:
    """Pixels of each class (K,) that ``image-label`` properties record, by label value."""
    properties = sorted(image_label["properties"], key=lambda p: p["label-value"])
    return np.array([p["pixel-count"] for p in properties], dtype=np.int64)


__all__ = [
    "ResumeError",
    "default_compressor",
    "label_counts",
    "label_names",
    "label_palette",
    "palette_rgba255",
    "read_labels",
    "read_partial",
    "replaceable_store",
    "write_labels",
]
