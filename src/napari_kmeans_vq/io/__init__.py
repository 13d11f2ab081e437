"""Real files for quantized images: the ``.kvq`` container, indexed PNG, palette TIFF and
GeoJSON outlines, with the class names.

``.kvq`` stores any K-colour image (any dtype, any number of axes, K up to 65,536) as a small
header, the palette and the codeword indices bit-packed at exactly ``ceil(log2 K)`` bits, with
the index payload optionally deflated and a CRC-32 over the file: the seed tutorial's bit
count, on disk. Its byte layout is in ``docs/kvq-format.md``. Indexed PNG (written by
Pillow) stores 2D images with K <= 256 at a palette bit depth of 1, 2, 4 or 8, for any image
viewer; :func:`save` also writes a palette TIFF (``.tif``, for Fiji and QuPath) and the class
outlines as GeoJSON (``.geojson``, for QuPath). ``save(..., names=[...])`` records the class
names in each of them (and :func:`save_ome_zarr` in the OME-Zarr properties);
``load(path).names`` gives them back (None when the file names no class).

>>> from napari_kmeans_vq.io import save, load                      # doctest: +SKIP
>>> save("slide.kvq", quantize(image, 16))                               # doctest: +SKIP
>>> data = load("slide.kvq"); data.labels, data.palette, data.reconstruction  # doctest: +SKIP

Reading a damaged or foreign file raises :class:`KVQError` (a ``ValueError``), the only error
type for bad files, whatever the reader (``.kvq``, PNG, TIFF, ``.npy``, zarr). Readers check
what a file declares before they allocate for it: every size against the bytes present, and
the pixels against one limit, :data:`limits.MAX_PIXELS` (2**28 by default; see
:mod:`.limits` for raising it).

Also here: ordinary image files (:mod:`.images`: ``read_image``, ``encode_image``), the
sample images (:mod:`.samples`), OME-Zarr labels (:mod:`.omezarr`, needs the ``large``
extra), and writes that complete or leave nothing (``atomic_write``, ``save_ome_zarr``).
"""

from . import limits
from ._atomic import atomic_write, clean_leftovers, leftovers, write_store
from .data import KVQData, KVQError
from .files import (
    SAVE_FORMATS,
    encode,
    encoded_sizes,
    format_for_path,
    load,
    save,
    save_ome_zarr,
    size_report,
    sizes_with_ratios,
    tree_size,
)
from .images import encode_image, read_image
from .kvq import (
    DEFAULT_LEVEL,
    MAX_CHANNELS,
    MAX_COLORS,
    MAX_METADATA,
    MAX_NDIM,
    auto_index_layout,
    class_metadata,
    decode_kvq,
    encode_kvq,
    header_size,
    kvq_size,
    pack_indices,
    read_kvq,
    unpack_indices,
)
from .png import (
    decode_indexed_png,
    encode_indexed_png,
    png_bit_depth,
    read_indexed_png,
    smallest_bit_depth,
)

__all__ = [
    "DEFAULT_LEVEL",
    "MAX_CHANNELS",
    "MAX_COLORS",
    "MAX_METADATA",
    "MAX_NDIM",
    "SAVE_FORMATS",
    "KVQData",
    "KVQError",
    "atomic_write",
    "auto_index_layout",
    "class_metadata",
    "clean_leftovers",
    "decode_indexed_png",
    "decode_kvq",
    "encode",
    "encode_image",
    "encode_indexed_png",
    "encode_kvq",
    "encoded_sizes",
    "format_for_path",
    "header_size",
    "kvq_size",
    "leftovers",
    "limits",
    "load",
    "pack_indices",
    "png_bit_depth",
    "read_image",
    "read_indexed_png",
    "read_kvq",
    "save",
    "save_ome_zarr",
    "size_report",
    "sizes_with_ratios",
    "smallest_bit_depth",
    "tree_size",
    "unpack_indices",
    "write_store",
]
