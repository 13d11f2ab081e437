"""Hostile and huge files: every reader raises KVQError, and checks what a file declares
against the bytes present and the pixel limit before it allocates (peaks measured)."""

from __future__ import annotations

import json
import os
import struct
import threading
import tracemalloc
import zlib

import numpy as np
import pytest

from napari_kmeans_vq.io import (
    KVQError,
    encode_image,
    encode_indexed_png,
    encode_kvq,
    limits,
    load,
    read_image,
)
from napari_kmeans_vq.io.kvq import _CRC_OFFSET, FLAG_DEFLATE, MAGIC, read_kvq
from napari_kmeans_vq.io.png import TEXT_KEY, read_indexed_png

MiB = 2**20


def _chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def resign(blob: bytes) -> bytes:
    """The .kvq with its CRC-32 recomputed, so that the header checks are what fails."""
    crc = zlib.crc32(blob[:_CRC_OFFSET])
    crc = zlib.crc32(blob[_CRC_OFFSET + 4 :], crc)
    return blob[:_CRC_OFFSET] + struct.pack("<I", crc) + blob[_CRC_OFFSET + 4 :]


def one_colour_kvq(shape) -> bytes:
    """A valid-looking K = 1 .kvq (no index payload at all) of any declared shape: the
    cheapest way for a tiny file to ask for a huge image."""
    payload = zlib.compress(b"")
    header = struct.pack(
        "<8sHHBBBBHHIQII", MAGIC, 1, FLAG_DEFLATE, len(shape), 1, 0, 0, 3, 0, 1, len(payload), 0, 0
    )
    body = struct.pack(f"<{len(shape)}Q", *shape) + bytes([10, 20, 30]) + payload
    return resign(header + body)


def peak_of(function, *args, **kwargs):
    """(result or exception, peak bytes traced) of one call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        try:
            outcome = function(*args, **kwargs)
        except Exception as exc:
            outcome = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return outcome, peak


def test_huge_declared_axis_is_refused_before_allocating(tmp_path):
    """Issue 21: a 66-byte .kvq claiming 2,147,483,647 pixels along one axis asked for
    6 GiB; now it is refused from its header, with a bounded peak."""
    path = tmp_path / "huge.kvq"
    path.write_bytes(one_colour_kvq((2**31 - 1,)))
    outcome, peak = peak_of(load, path)
    assert isinstance(outcome, KVQError)
    assert "2,147,483,647 pixels, over the limit of 268,435,456" in str(outcome)
    assert "--max-pixels" in str(outcome) and "NAPARI_KMEANS_VQ_MAX_PIXELS" in str(outcome)
    print(f"crafted 2**31-1 axis .kvq ({path.stat().st_size} bytes): peak {peak:,} bytes")
    assert peak < 1 * MiB
    # Two axes whose product overflows 64 bits are counted exactly.
    path.write_bytes(one_colour_kvq((2**40, 2**40)))
    outcome, peak = peak_of(read_kvq, path)
    assert isinstance(outcome, KVQError) and "over the limit" in str(outcome)
    assert peak < 1 * MiB


def test_limit_is_one_setting_and_bounds_what_is_allocated(tmp_path, monkeypatch):
    """Within the limit the K = 1 image is decoded; the labels are its only allocation."""
    path = tmp_path / "wide.kvq"
    path.write_bytes(one_colour_kvq((1000, 3000)))
    monkeypatch.setattr(limits, "MAX_PIXELS", 2_999_999)
    with pytest.raises(KVQError, match="1000 x 3000 = 3,000,000 pixels, over the limit"):
        load(path)
    data, peak = peak_of(load, path, max_pixels=3_000_000)
    assert data.labels.shape == (1000, 3000) and not data.labels.any()
    print(f"3 Mpx K = 1 .kvq within the limit: peak {peak:,} bytes (labels 3,000,000)")
    assert peak < 3_000_000 + 1 * MiB
    monkeypatch.setattr(limits, "MAX_PIXELS", 3_000_000)
    assert load(path).labels.size == 3_000_000


def test_deflate_bomb_peak_is_bounded_by_the_file(tmp_path):
    """A deflated payload may only claim what 1,100 times its bytes can inflate to: the
    peak stays a small multiple of the file plus the image it truly contains."""
    labels = np.zeros((4000, 4000), dtype=np.uint8)  # 16 Mpx that deflate to ~16 KB
    blob = encode_kvq(labels, np.array([[1, 2, 3], [4, 5, 6]], np.uint8))
    path = tmp_path / "zeros.kvq"
    path.write_bytes(blob)
    data, peak = peak_of(load, path)
    truly = data.labels.nbytes + (16_000_000 + 7) // 8  # the labels and the packed bits
    print(f"16 Mpx deflated .kvq of {len(blob):,} bytes: peak {peak:,} bytes")
    assert peak < 4 * len(blob) + 2 * truly + 1 * MiB
    # The same file declaring 64 times the pixels is refused before inflating.
    big = bytearray(blob)
    struct.pack_into("<Q", big, 40, 4000 * 64)
    path.write_bytes(resign(bytes(big)))
    outcome, peak = peak_of(load, path, max_pixels=2**40)
    assert isinstance(outcome, KVQError) and "deflated bytes can hold" in str(outcome)
    assert peak < 4 * len(blob) + 1 * MiB


def png_with_text(text: bytes, *, width=4, height=4) -> bytes:
    blob = encode_indexed_png(np.zeros((height, width), np.uint8), np.array([[1, 2, 3]], np.uint8))
    start = blob.index(b"tEXt") - 4
    (length,) = struct.unpack(">I", blob[start : start + 4])
    chunk = _chunk(b"tEXt", TEXT_KEY.encode() + b"\0" + text)
    return blob[:start] + chunk + blob[start + 12 + length :]


@pytest.mark.parametrize("nested", [b"[" * 100_000, b'{"a":' * 50_000, b"[" * 33 + b"]" * 33])
def test_deeply_nested_metadata_is_the_library_error(tmp_path, nested):
    """Issue 21: JSON nested deep raised RecursionError; now it is refused before parsing."""
    path = tmp_path / "nested.png"
    path.write_bytes(png_with_text(nested))
    with pytest.raises(KVQError, match=r"nested \d+ deep, more than the 32 accepted"):
        load(path)
    # Brackets inside strings are text, not nesting.
    path.write_bytes(png_with_text(json.dumps({"note": "[" * 1000, "channels": 3}).encode()))
    assert load(path).channels == 3


def test_bad_text_encodings_and_values(tmp_path):
    path = tmp_path / "t.png"
    for text, match in (
        (b'{"channels": 3', "not valid JSON"),
        (b'"just a string"', "unreadable"),
        (b'{"channels": [3]}', "disagrees"),
        (b'{"n_colors": 1e999}', "disagrees"),
        (b'{"n_colors": ' + b"9" * 5000 + b"}", "not valid JSON"),  # int digits limit
    ):
        path.write_bytes(png_with_text(text))
        with pytest.raises(KVQError, match=match):
            load(path)


def test_png_header_checked_before_the_rest_is_read(tmp_path):
    """An indexed PNG claiming 2**31-1 x 2**31-1 pixels: refused from its first 33 bytes."""
    blob = bytearray(encode_indexed_png(np.zeros((4, 4), np.uint8), np.array([[1, 2, 3]], "u1")))
    struct.pack_into(">II", blob, 16, 2**31 - 1, 2**31 - 1)
    struct.pack_into(">I", blob, 29, zlib.crc32(bytes(blob[12:29])))
    path = tmp_path / "wide.png"
    path.write_bytes(bytes(blob))
    for reader in (load, read_indexed_png):
        outcome, peak = peak_of(reader, path)
        assert isinstance(outcome, KVQError) and "over the limit" in str(outcome)
        assert peak < 1 * MiB
    # With the limit lifted, the IDAT bytes are what cannot hold that many scanlines.
    outcome, peak = peak_of(load, path, max_pixels=2**64)
    assert isinstance(outcome, KVQError) and "more than its IDAT can hold" in str(outcome)
    assert peak < 1 * MiB


def test_pillow_images_over_the_limit_are_refused_from_their_header(tmp_path):
    """An ordinary PNG over the limit is refused before Pillow decodes it."""
    path = tmp_path / "photo.png"
    path.write_bytes(encode_image(np.zeros((300, 400, 3), np.uint8), ".png"))
    outcome, peak = peak_of(read_image, path, max_pixels=100_000)
    assert isinstance(outcome, KVQError)
    assert "400 x 300 = 120,000 pixels, over the limit of 100,000" in str(outcome)
    assert peak < 120_000  # less than the grey image would be


def crafted_tiff(tmp_path, width: int, height: int, *, description: str | None = None):
    """A small uncompressed palette TIFF whose tags then claim width x height."""
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "crafted.tif"
    colormap = np.zeros((3, 256), dtype=np.uint16)
    tifffile.imwrite(
        path,
        np.zeros((16, 16), np.uint8),
        photometric="palette",
        colormap=colormap,
        description=description,
        metadata=None,
    )
    blob = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages.first.tags
        for name, value in (("ImageWidth", width), ("ImageLength", height)):
            tag = tags[name]
            fmt = "<H" if tag.dtype == 3 else "<I"
            struct.pack_into(fmt, blob, tag.valueoffset, value)
    path.write_bytes(bytes(blob))
    return path


def test_tiff_declaring_huge_pixels_is_refused_before_reading(tmp_path):
    from napari_kmeans_vq.io.tiff import read_labels_tiff

    path = crafted_tiff(tmp_path, 65_535, 65_535)
    for reader in (read_image, read_labels_tiff):
        outcome, peak = peak_of(reader, path)
        assert isinstance(outcome, KVQError), outcome
        assert "65535 x 65535 = 4,294,836,225 pixels, over the limit" in str(outcome)
        print(f"crafted 65535 x 65535 TIFF via {reader.__name__}: peak {peak:,} bytes")
        assert peak < 4 * MiB


def test_tiff_description_json_is_parsed_within_limits(tmp_path):
    from napari_kmeans_vq.io.tiff import read_labels_tiff

    # Deeply nested: not this package's metadata, so the colour map is used.
    path = crafted_tiff(tmp_path, 16, 16, description="{" + '"a":[' * 20_000)
    data = read_labels_tiff(path)
    assert data.palette.shape == (1, 3)
    # Ours, with a dtype that could unpickle or a palette that is not numbers: refused.
    for ours, match in (
        ({"palette": [[1]], "dtype": "object"}, "not a number type"),
        ({"palette": [["a"]], "dtype": "uint8"}, "not a table of numbers"),
        ({"palette": [[[1]]], "dtype": "uint8"}, "has shape"),
        ("not an object", "not an object"),
    ):
        path = crafted_tiff(tmp_path, 16, 16, description=json.dumps({"napari_kmeans_vq": ours}))
        with pytest.raises(KVQError, match=match):
            read_labels_tiff(path)


def test_fifo_and_devices_are_refused_at_once(tmp_path):
    """Issue 22: load() on a FIFO waited forever, on /dev/zero grew without end."""
    fifo = tmp_path / "pipe.kvq"
    os.mkfifo(fifo)
    outcome = {}

    def attempt():
        try:
            load(fifo)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # unblock it before failing
        with open(fifo, "wb"):
            pass
        pytest.fail("load() blocked on a FIFO")
    assert isinstance(outcome["error"], KVQError) and "FIFO" in str(outcome["error"])
    for reader in (load, read_kvq, read_indexed_png):
        with pytest.raises(KVQError, match="character device, not a regular file"):
            reader("/dev/zero")
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


def test_truncated_and_trailing_files_found_from_the_header(tmp_path):
    blob = encode_kvq(np.arange(64, dtype=np.uint8).reshape(8, 8) % 3, np.eye(3, dtype=np.uint8))
    path = tmp_path / "t.kvq"
    for content, match in (
        (blob[:-1], "truncated: the header describes"),
        (blob + b"\0", "has trailing bytes"),
        (blob[:20], "truncated: 20 bytes"),
        (blob[:44], "shorter than its 56-byte header"),
        (b"", "not a .kvq file or a PNG"),
    ):
        path.write_bytes(content)
        with pytest.raises(KVQError, match=match):
            load(path)
