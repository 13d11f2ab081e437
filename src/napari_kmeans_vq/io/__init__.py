"""Real files for quantized images: the ``.kvq`` container and indexed PNG.

``.kvq`` stores any K-colour image (any dtype, any number of axes, K up to 65,536) as a small
header, the palette and the codeword indices bit-packed at exactly ``ceil(log2 K)`` bits, with
the index payload optionally deflated and a CRC-32 over the file: the seed tutorial's bit
count, on disk. Its byte layout is in ``docs/kvq-format.md``. Indexed PNG stores 2D images
with K <= 256 at a palette bit depth of 1, 2, 4 or 8, for any image viewer.

>>> from napari_kmeans_vq.io import save, load                      # doctest: +SKIP
>>> save("slide.kvq", quantize(image, 16))                               # doctest: +SKIP
>>> data = load("slide.kvq"); data.labels, data.palette, data.reconstruction  # doctest: +SKIP

Reading a damaged or foreign file raises :class:`KVQError` (a ``ValueError``), the only error
type for bad files.
"""

from ._atomic import atomic_write
from .data import KVQData, KVQError
from .files import encode, encoded_sizes, format_for_path, load, save, size_report
from .kvq import (
    MAX_CHANNELS,
    MAX_COLORS,
    MAX_NDIM,
    MAX_PIXELS,
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
    "MAX_CHANNELS",
    "MAX_COLORS",
    "MAX_NDIM",
    "MAX_PIXELS",
    "KVQData",
    "KVQError",
    "atomic_write",
    "decode_indexed_png",
    "decode_kvq",
    "encode",
    "encode_indexed_png",
    "encode_kvq",
    "encoded_sizes",
    "format_for_path",
    "header_size",
    "kvq_size",
    "load",
    "pack_indices",
    "png_bit_depth",
    "read_indexed_png",
    "read_kvq",
    "save",
    "size_report",
    "smallest_bit_depth",
    "unpack_indices",
]
