"""Indexed PNG: the stated bit depth, exact decoding by Pillow, and only KVQError for bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import (
    KVQError,
    decode_indexed_png,
    encode_indexed_png,
    encode_kvq,
    encoded_sizes,
    load,
    png_bit_depth,
    save,
    size_report,
    smallest_bit_depth,
)
from napari_kmeans_vq.io.kvq import decode_kvq as load_bytes


def codes(k, shape=(19, 23), channels=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=shape)
    labels[0, 0] = k - 1
    palette = rng.integers(0, 256, size=(k, channels), dtype=np.uint8)
    return labels, palette


def ihdr(blob: bytes) -> dict:
    """The IHDR fields read straight from the bytes."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n" and blob[12:16] == b"IHDR"
    width, height, depth, colour_type, _, _, _interlace = struct.unpack(">IIBBBBB", blob[16:29])
    return {"width": width, "height": height, "depth": depth, "colour_type": colour_type}


def chunk_types(blob: bytes) -> list[bytes]:
    types, pos = [], 8
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        types.append(blob[pos + 4 : pos + 8])
        pos += 12 + length
    return types


@pytest.mark.parametrize(
    ("k", "depth"),
    [(1, 1), (2, 1), (3, 2), (4, 2), (5, 4), (16, 4), (17, 8), (200, 8), (256, 8)],
)
def test_smallest_bit_depth_in_the_ihdr_and_pillow_decodes_exactly(k, depth):
    labels, palette = codes(k, seed=k)
    blob = encode_indexed_png(labels, palette, bit_depth="smallest")
    assert smallest_bit_depth(k) == depth
    assert ihdr(blob) == {"width": 23, "height": 19, "depth": depth, "colour_type": 3}
    assert png_bit_depth(blob) == depth
    with Image.open(io.BytesIO(blob)) as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im.convert("RGB")), palette[labels])
        assert len(im.getpalette()) == 3 * k  # PLTE holds exactly K entries
    back = decode_indexed_png(blob)
    assert np.array_equal(back.labels, labels) and np.array_equal(back.palette, palette)


@pytest.mark.parametrize("k", [2, 3, 6, 16])
def test_auto_depth_is_the_smallest_written_by_pillow(k, ihc_crop):
    q = quantize(ihc_crop, k)
    auto = encode_indexed_png(q.labels, q.palette)
    depth = smallest_bit_depth(k)
    assert encode_indexed_png(q.labels, q.palette, bit_depth=depth) == auto
    assert encode_indexed_png(q.labels, q.palette, bit_depth="smallest") == auto
    assert png_bit_depth(auto) == depth
    # The bytes are Pillow's own palette PNG of those indices and that palette.
    image = Image.frombytes("P", q.labels.shape[::-1], q.labels.astype(np.uint8).tobytes())
    image.putpalette(q.palette.tobytes())
    with Image.open(io.BytesIO(auto)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), q.reconstruction)
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(image.convert("RGB")))
    assert len(encode_indexed_png(q.labels, q.palette, level=0)) > len(auto)  # stored
    if depth < 8:
        with pytest.raises(ValueError, match="smallest depth"):
            encode_indexed_png(q.labels, q.palette, bit_depth=8)


def test_real_image_file(tmp_path, ihc):
    q = quantize(ihc, 16)
    path = save(tmp_path / "ihc.png", q, bit_depth="smallest")
    blob = path.read_bytes()
    assert ihdr(blob)["depth"] == 4
    types = chunk_types(blob)
    assert types[0] == b"IHDR" and types[-1] == b"IEND"
    assert {b"PLTE", b"tEXt", b"IDAT"} <= set(types) and b"tRNS" not in types
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), q.reconstruction)
    back = load(path)
    assert back.format == "png" and back.bit_depth == 4
    assert np.array_equal(back.reconstruction, q.reconstruction)


def test_odd_widths_pad_each_row(tmp_path):
    # Widths that do not fill the last byte of a row, at every sub-byte depth.
    for k, width in [(2, 1), (2, 9), (3, 5), (4, 3), (9, 1), (16, 7)]:
        labels, palette = codes(k, shape=(4, width), seed=width)
        blob = encode_indexed_png(labels, palette, bit_depth="smallest")
        with Image.open(io.BytesIO(blob)) as im:
            assert np.array_equal(np.asarray(im), labels)


def test_grey_and_rgba_palettes(tmp_path):
    labels, grey = codes(5, channels=1)
    blob = encode_indexed_png(labels, grey, scalar=True)
    back = decode_indexed_png(blob)
    assert back.palette.shape == (5, 1) and back.scalar
    assert np.array_equal(back.reconstruction, grey[labels][..., 0])
    with Image.open(io.BytesIO(blob)) as im:
        assert np.array_equal(np.asarray(im.convert("L")), grey[labels][..., 0])

    labels, rgba = codes(7, channels=4)
    blob = encode_indexed_png(labels, rgba)
    assert b"tRNS" in chunk_types(blob)
    with Image.open(io.BytesIO(blob)) as im:
        assert np.array_equal(np.asarray(im.convert("RGBA")), rgba[labels])
    assert np.array_equal(decode_indexed_png(blob).palette, rgba)


def test_png_from_another_tool_opens(tmp_path):
    # Pillow's own palette PNG: no text chunk, K from PLTE.
    labels, palette = codes(6)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(palette.tobytes())
    buffer = io.BytesIO()
    im.save(buffer, format="PNG")
    back = decode_indexed_png(buffer.getvalue())
    assert np.array_equal(back.labels, labels) and np.array_equal(back.palette, palette)


def test_png_rejects_what_it_cannot_hold():
    labels, palette = codes(300)
    with pytest.raises(ValueError, match="at most 256 colours"):
        encode_indexed_png(labels, palette)
    with pytest.raises(ValueError, match="2D"):
        encode_indexed_png(np.zeros((2, 3, 4), dtype=int), palette[:4])
    with pytest.raises(ValueError, match="uint8"):
        encode_indexed_png(labels % 4, palette[:4].astype(np.uint16))
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        encode_indexed_png(labels % 4, np.zeros((4, 2), dtype=np.uint8))
    with pytest.raises(ValueError, match="cannot hold 5 colours"):
        encode_indexed_png(labels % 5, palette[:5], bit_depth=2)
    with pytest.raises(ValueError, match="bit_depth must be"):
        encode_indexed_png(labels % 5, palette[:5], bit_depth=3)


def test_sizes_and_report(ihc_crop):
    q = quantize(ihc_crop, 6)
    sizes = encoded_sizes(q)
    assert sizes["kvq_raw"] == 56 + 18 + (96 * 128 * 3 + 7) // 8
    assert sizes["png"] == len(encode_indexed_png(q.labels, q.palette))
    assert sizes["png_bit_depth"] == 4
    assert sizes["kvq_deflated"] == len(encode_kvq(q.labels, q.palette))
    assert sizes["kvq_index_layout"] == "bytes"  # b = 3
    contents = {}
    assert encoded_sizes(q, contents=contents, level=1)["png"] == len(contents["png"])
    assert load_bytes(contents["kvq"]).n_colors == 6
    report = size_report(q, input_bytes=10_000)
    assert report["raw_bytes"] == 96 * 128 * 3
    assert report["formula"]["formula_bytes"] == -(-q.report.total_bits // 8)
    assert report["ratios"]["vs_input"]["png"] == sizes["png"] / 10_000
    stack = quantize(np.stack([ihc_crop, ihc_crop]), 3)
    assert encoded_sizes(stack)["png"] is None  # 3D: no PNG, and says why
    assert "2D" in encoded_sizes(stack)["png_reason"]


# ---------------------------------------------------------------------------------------------
# bad files


@pytest.fixture(scope="module")
def valid_png() -> bytes:
    labels, palette = codes(6, seed=9)
    return encode_indexed_png(labels, palette)


def test_bad_files_are_named(valid_png):
    with pytest.raises(KVQError, match="not a PNG"):
        decode_indexed_png(b"GIF89a...")
    with pytest.raises(KVQError, match="truncated"):
        decode_indexed_png(valid_png[:-20])
    broken = bytearray(valid_png)
    broken[40] ^= 0xFF
    with pytest.raises(KVQError, match="CRC mismatch"):
        decode_indexed_png(bytes(broken))
    rgb = io.BytesIO()
    Image.new("RGB", (4, 4)).save(rgb, format="PNG")
    with pytest.raises(KVQError, match="colour type 2"):
        decode_indexed_png(rgb.getvalue())
    with pytest.raises(KVQError, match="over the limit"):
        decode_indexed_png(valid_png, max_pixels=100)


def test_index_beyond_palette_is_caught():
    # A PNG whose pixels point past its 2-entry palette (valid chunks, bad content).
    rows = b"".join(b"\0" + bytes([0, 1, 2, 3]) for _ in range(2))

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    blob = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 2, 8, 3, 0, 0, 0))
        + chunk(b"PLTE", bytes(6))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(KVQError, match="not below K = 2"):
        decode_indexed_png(blob)


@settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), max_size=3),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    extra=st.binary(max_size=8),
)
def test_fuzz_png_reader_raises_only_kvq_error(valid_png, edits, cut, extra):
    blob = bytearray(valid_png)
    for position, xor in edits:
        blob[position % len(blob)] ^= xor
    if cut is not None:
        del blob[cut % (len(blob) + 1) :]
    blob += extra
    try:
        data = decode_indexed_png(bytes(blob))
    except KVQError:
        return
    assert data.labels.max() < data.n_colors


def test_names_travel_in_the_text_chunk(tmp_path, ihc_crop):
    q = quantize(ihc_crop, 4)
    names = ["nuclei", "stroma", "Ödem", "红细胞"]
    path = save(tmp_path / "named.png", q, names=names)
    back = load(path)
    assert back.names == names and back.format == "png"
    assert np.array_equal(back.labels, q.labels)
    with Image.open(path) as im:  # Pillow sees our text chunk (ASCII JSON)
        assert "红细胞" in __import__("json").loads(im.info["napari-kmeans-vq"])["names"]
    assert load(save(tmp_path / "plain.png", q)).names is None
    with pytest.raises(ValueError, match="one per class"):
        save(tmp_path / "bad.png", q, names=["a"])
    assert not (tmp_path / "bad.png").exists()
