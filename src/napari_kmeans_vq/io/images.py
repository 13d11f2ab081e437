"""Ordinary image files: read one as an array, or encode an array as one.

Pillow reads and writes PNG, JPEG, BMP, WebP...; tifffile (``pip install
napari-kmeans-vq[large]``) reads and writes TIFF, any dtype and number of channels, with
Pillow as the fallback when it is missing; ``.npy`` goes through numpy, never unpickled.
Zarr directories, tiled or pyramidal TIFFs and anything larger than the in-memory pixel
limit open lazily (:func:`streams`), as arrays that read nothing until asked. Neither
Pillow nor tifffile is imported until a function here needs it.

Every input is checked before it is read: only regular files (or zarr directories) are
opened, and the pixels a file declares are compared with
:data:`napari_kmeans_vq.io.limits.MAX_PIXELS` before any memory is allocated for them. A
file that cannot be read raises :class:`~napari_kmeans_vq.io.KVQError` (a ``ValueError``)
with a message that names the file and says what was wrong; a missing file
``FileNotFoundError``.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..large.inputs import check_tiff, check_tiff_structure, read_whole
from ._read import open_regular
from .data import KVQError
from .limits import as_kvq_error, check_pixels, limit_in_force, pixel_count

__all__ = [
    "TIFF_SUFFIXES",
    "encode_image",
    "read_image",
    "streams",
    "tiff_layout",
]

#: Suffixes read and written through tifffile.
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi")
_ZARR_SUFFIX = ".zarr"
_NPY_SUFFIX = ".npy"


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


@contextmanager
def _quiet_tifffile():
    """tifffile logs what it finds wrong with a damaged file; the one-line error says it."""
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def tiff_layout(path) -> dict | None:
    """How a TIFF is laid out, read from its tags alone (no pixel is decoded).

    Returns
    -------
    dict or None
        ``tiled`` (its first image is stored in tiles), ``levels`` (resolution levels of
        its first series: more than one for a pyramid), ``shape``, ``dtype`` and
        ``pixels`` (of the full-resolution image); None when tifffile is not installed or
        the file is not a TIFF it can parse.
    """
    try:
        import tifffile
    except ImportError:
        return None
    try:
        with _quiet_tifffile(), _open_tiff(path, tifffile) as (tif, _):
            series = tif.series[0]
            page = tif.pages.first
            shape = tuple(int(s) for s in series.shape)
            return {
                "tiled": bool(page.is_tiled),
                "levels": len(series.levels),
                "shape": shape,
                "dtype": str(series.dtype),
                "pixels": pixel_count(shape, channels=_colour_axis(page)),
            }
    except Exception:  # not a TIFF tifffile parses: read_image says why
        return None


def _colour_axis(page) -> bool | None:
    """Whether a TIFF's samples form a colour axis for the pixel count: 2 to 16 of them
    do; one sample, none (guess); more than 16 count as pixels themselves."""
    samples = page.samplesperpixel
    return None if samples == 1 else samples <= 16


@contextmanager
def _open_tiff(path, tifffile):
    """``(TiffFile, size)`` of a regular file whose chain of images was walked first."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        check_tiff_structure(handle, size)
        handle.seek(0)
        with tifffile.TiffFile(handle) as tif:
            yield tif, size


def _npy_header(handle, source) -> tuple[tuple, np.dtype, int]:
    """Shape, dtype and data offset of an open ``.npy`` file, from its header alone."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, _fortran, dtype = fmt.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):
            shape, _fortran, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unknown .npy format version {version}")
    except Exception as exc:  # numpy raises ValueError, SyntaxError, UnicodeError...
        raise as_kvq_error(exc, source, "cannot read it as a numpy array") from None
    if dtype.hasobject:
        raise as_kvq_error(
            ValueError("it holds Python objects, which are never unpickled"),
            source,
            "cannot read it as a numpy array",
        )
    return tuple(shape), dtype, handle.tell()


def _read_npy(path: Path, *, lazy: bool, limit) -> np.ndarray:
    source = str(path)
    with open_regular(path) as handle:
        shape, dtype, offset = _npy_header(handle, source)
        size = os.fstat(handle.fileno()).st_size
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if offset + nbytes != size:
            raise KVQError(
                f"cannot read {path} as a numpy array: its header describes "
                f"{offset + nbytes:,} bytes, the file has {size:,}"
            )
        if not lazy:
            check_pixels(pixel_count(shape), limit, source=source, what=_shape_text(shape))
    try:
        if lazy:  # memory-mapped: pages are read as blocks are asked for
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise as_kvq_error(exc, source, "cannot read it as a numpy array") from None


def _shape_text(shape) -> str:
    return " x ".join(str(s) for s in shape)


def streams(path, lazy: bool = False, *, max_pixels: int | None = None) -> bool:
    """Whether ``path`` is opened lazily (block by block) rather than read whole.

    Inputs are routed by what they are, not by their size on disk:

    - a zarr directory (array or OME-Zarr image);
    - a TIFF stored in tiles or holding a pyramid (several resolution levels), as slide
      scanners write them, or whose full-resolution image has more pixels than the
      in-memory limit (``max_pixels``, default
      :data:`napari_kmeans_vq.io.limits.MAX_PIXELS`);
    - a ``.npy`` array over that limit (memory-mapped);
    - with ``lazy``, any zarr, TIFF or ``.npy`` input.

    Ordinary image files (PNG, JPEG... through Pillow) are always read whole; over the
    limit they are refused by :func:`read_image`.

    Raises
    ------
    ValueError
        ``lazy`` for a path that is not a zarr directory, a TIFF or a ``.npy`` file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == _ZARR_SUFFIX:
        return True
    if _is_tiff(path):
        if lazy:
            return True
        layout = tiff_layout(path) if path.is_file() else None
        if layout is None:
            return False
        return (
            layout["tiled"]
            or layout["levels"] > 1
            or layout["pixels"] > limit_in_force(max_pixels)
        )
    if suffix == _NPY_SUFFIX:
        if lazy:
            return True
        if not path.is_file():
            return False
        try:
            with open_regular(path) as handle:
                shape, _, _ = _npy_header(handle, str(path))
        except (OSError, KVQError):
            return False
        return pixel_count(shape) > limit_in_force(max_pixels)
    if lazy:
        raise ValueError(f"only a .zarr directory, a TIFF or a .npy file opens lazily, not {path}")
    return False


def read_image(path, *, lazy: bool = False, max_pixels: int | None = None):
    """An image file as an array: read whole, or opened lazily.

    Parameters
    ----------
    path : str or Path
        ``.npy`` (loaded without pickle); a TIFF (tifffile, else Pillow); anything else
        through Pillow: palette images become RGB (RGBA with transparency), 16-bit greys
        uint16, 1-bit images 8-bit grey, CMYK and other spaces RGB. A zarr directory is
        read whole unless ``lazy``.
    lazy : bool, default False
        Open a zarr directory (array or OME-Zarr image) or a TIFF without reading its
        pixels (:func:`napari_kmeans_vq.large.open_image`): a zarr array (or a slide's
        or OME-Zarr image's level view), or a list of them, full resolution first, for a
        multiscale image; a ``.npy`` file memory-mapped.
    max_pixels : int, optional
        Refuse to read whole an image of more pixels than this (default
        :data:`napari_kmeans_vq.io.limits.MAX_PIXELS`); lazy inputs are not limited.
        Pillow formats also meet Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``).

    Returns
    -------
    ndarray, zarr array or list of zarr arrays

    Raises
    ------
    FileNotFoundError
        No such file or directory.
    KVQError
        The file is not an image this function reads, is not a regular file, or has more
        pixels than the limit (the message says which). A ``ValueError``.
    OSError
        The file cannot be opened (no permission...).
    """
    path = Path(path)
    if not path.exists():
        kind = "file or directory" if lazy else "file"
        raise FileNotFoundError(f"cannot read {path}: no such {kind}")
    suffix = path.suffix.lower()
    if suffix == _NPY_SUFFIX and not path.is_dir():
        return _read_npy(path, lazy=lazy, limit=max_pixels)
    if lazy or path.is_dir():
        image = _open_lazy(path)
        return image if lazy else _in_memory(path, image, max_pixels)
    if _is_tiff(path):
        try:
            import tifffile
        except ImportError:
            pass
        else:
            return _read_tiff(path, tifffile, max_pixels)
    return _read_pillow(path, max_pixels)


def _in_memory(path: Path, image, limit):
    first = image[0] if isinstance(image, list) else image
    shape = tuple(first.shape)
    check_pixels(pixel_count(shape), limit, source=str(path), what=_shape_text(shape))
    try:
        return read_whole(first)
    except Exception as exc:  # a damaged chunk: zarr and codecs raise many types
        raise as_kvq_error(exc, str(path), "cannot read it as a zarr array") from None


def _open_lazy(path: Path):
    from ..large import open_image

    try:
        with _quiet_tifffile():
            return open_image(path)
    except FileNotFoundError:
        raise
    except ValueError as exc:  # open_image's one line, naming the path
        raise KVQError(str(exc)) from None
    except Exception as exc:  # pragma: no cover - open_image turns all into ValueError
        raise as_kvq_error(exc, str(path), "cannot read it as a zarr array or TIFF") from None


def _read_tiff(path: Path, tifffile, limit) -> np.ndarray:
    try:
        with _quiet_tifffile(), _open_tiff(path, tifffile) as (tif, size):
            series = tif.series[0]
            shape = tuple(int(s) for s in series.shape)
            channels = _colour_axis(tif.pages.first)
            pixels = pixel_count(shape, channels=channels)
            check_pixels(pixels, limit, source=str(path), what=_shape_text(shape))
            check_tiff(tif, size)
            return series.asarray()
    except (KVQError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Exception as exc:  # tifffile raises many types for a damaged file
        message = " ".join(str(exc).split()) or type(exc).__name__
        if len(message) > 300:
            message = message[:297] + "..."
        raise KVQError(f"cannot read {path} as a TIFF: {message}") from None


def _read_pillow(path: Path, limit) -> np.ndarray:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; our own check decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with open_regular(path) as handle, Image.open(handle) as im:
                width, height = im.size
                check_pixels(width * height, limit, source=str(path), what=f"{width} x {height}")
                im.load()
                if im.mode == "P":
                    im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                elif im.mode == "1":
                    im = im.convert("L")
                elif im.mode.startswith("I;16"):
                    return np.asarray(im).astype(np.uint16)
                elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
                    im = im.convert("RGB")
                return np.asarray(im)
    except (KVQError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except Image.DecompressionBombError as exc:
        raise KVQError(
            f"cannot read {path} as an image: {exc} Pillow's limit is "
            "PIL.Image.MAX_IMAGE_PIXELS (the command line's --max-pixels raises it); a tiled "
            "TIFF or zarr copy of the image is streamed instead"
        ) from None
    except Exception as exc:  # Pillow raises many types for a damaged file
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise KVQError(f"cannot read {path} as an image: {message}") from None


def _to_pil(image: np.ndarray):
    """An 8-bit (or 16-bit grey) array as a Pillow image, or a ValueError saying why not."""
    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2 and image.dtype == np.uint16:
        return Image.fromarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))
    ):
        raise ValueError(
            f"a {image.dtype} image of shape {image.shape} cannot be written as an ordinary "
            "image file; write .npy instead"
        )
    return Image.fromarray(image)


def encode_image(image, path_or_suffix=".png") -> bytes:
    """The bytes of an ordinary image file holding ``image``.

    Parameters
    ----------
    image : array_like
        For PNG, JPEG and the other Pillow formats: 8-bit grey, RGB or RGBA, or 16-bit
        grey. A TIFF takes any array tifffile writes (Pillow's kinds without tifffile);
        ``.npy`` any array.
    path_or_suffix : str or Path, default ".png"
        A file name or a suffix (``".png"``, ``".tif"``, ``".npy"``...): the format.

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        An unknown suffix, or an image the format cannot hold.
    """
    image = np.asarray(image)
    text = os.fspath(path_or_suffix)
    suffix = Path(text).suffix.lower() if not text.startswith(".") else text.lower()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, image, allow_pickle=False)
        return buffer.getvalue()
    if suffix in TIFF_SUFFIXES[:2]:
        try:
            import tifffile
        except ImportError:
            pass
        else:
            rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
            tifffile.imwrite(buffer, image, photometric="rgb" if rgb else None)
            return buffer.getvalue()
    from PIL import Image

    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"unknown image type {suffix!r} for {text}; use .png or .npy")
    _to_pil(image).save(buffer, format=fmt)
    return buffer.getvalue()
