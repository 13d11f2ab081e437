"""Ordinary image files: read one as an array, or encode an array as one.

Pillow reads and writes PNG, JPEG, BMP, WebP...; tifffile (``pip install
napari-kmeans-vq[large]``) reads and writes TIFF, any dtype and number of channels, with
Pillow as the fallback when it is missing; ``.npy`` goes through numpy, never unpickled.
Zarr directories and large TIFFs open lazily (:func:`streams`), as zarr arrays that read
nothing until asked. Neither Pillow nor tifffile is imported until a function here needs it.

Failures are ``OSError`` (``FileNotFoundError`` for a missing file) or ``ValueError``, each
with a message that names the file and says what was wrong.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

__all__ = [
    "LAZY_TIFF_BYTES",
    "TIFF_SUFFIXES",
    "encode_image",
    "read_image",
    "streams",
]

#: TIFF files larger than this many bytes are opened lazily (block by block) by
#: :func:`streams`' rule rather than read whole.
LAZY_TIFF_BYTES = 256 * 2**20
#: Suffixes read and written through tifffile.
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi")
_ZARR_SUFFIX = ".zarr"


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def streams(path, lazy: bool = False) -> bool:
    """Whether ``path`` is opened lazily: a zarr directory, a TIFF over
    :data:`LAZY_TIFF_BYTES`, or (with ``lazy``) any zarr or TIFF input.

    Raises
    ------
    ValueError
        ``lazy`` for a path that is neither a zarr directory nor a TIFF file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == _ZARR_SUFFIX:
        return True
    if _is_tiff(path):
        return lazy or (path.is_file() and path.stat().st_size > LAZY_TIFF_BYTES)
    if lazy:
        raise ValueError(f"only a .zarr directory or a TIFF file opens lazily, not {path}")
    return False


def read_image(path, *, lazy: bool = False):
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
        pixels (:func:`napari_kmeans_vq.large.open_image`): a zarr array, or a list of
        them, full resolution first, for a multiscale image.

    Returns
    -------
    ndarray, zarr array or list of zarr arrays

    Raises
    ------
    FileNotFoundError
        No such file or directory.
    ValueError, OSError
        The file is not an image this function reads (the message says why).
    """
    path = Path(path)
    if not path.exists():
        kind = "file or directory" if lazy else "file"
        raise FileNotFoundError(f"cannot read {path}: no such {kind}")
    if lazy or path.is_dir():
        image = _open_lazy(path)
        return image if lazy else _in_memory(image)
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"cannot read {path} as a numpy array: {exc}") from None
    if _is_tiff(path):
        try:
            import tifffile
        except ImportError:
            pass
        else:
            return _read_tiff(path, tifffile)
    return _read_pillow(path)


def _in_memory(image):
    return np.asarray(image[0] if isinstance(image, list) else image)


def _open_lazy(path: Path):
    import logging

    from ..large import open_image

    # tifffile logs what it finds wrong with a damaged file; the one-line error says it.
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return open_image(path)
    except Exception as exc:  # zarr, tifffile and OS errors alike: one message
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot read {path} as a zarr array or TIFF: {message}") from None
    finally:
        logger.setLevel(level)


def _read_tiff(path: Path, tifffile) -> np.ndarray:
    import logging

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return tifffile.imread(path)
    except Exception as exc:  # tifffile raises many types for a damaged file
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"cannot read {path} as a TIFF: {message}") from None
    finally:
        logger.setLevel(level)


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
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
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read {path} as an image: {exc}") from None


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
