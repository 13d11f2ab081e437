"""The .kvq container: exact round trips, exact sizes, and a reader that only raises KVQError."""

from __future__ import annotations

import math
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_kmeans_vq import bit_report, quantize
from napari_kmeans_vq.io import (
    DEFAULT_LEVEL,
    KVQError,
    atomic_write,
    auto_index_layout,
    decode_kvq,
    encode_kvq,
    header_size,
    kvq_size,
    load,
    pack_indices,
    save,
    unpack_indices,
)
from napari_kmeans_vq.io.kvq import FLAG_BYTES, FLAG_DEFLATE, MAGIC, byte_width

KS = [1, 2, 3, 16, 17, 256, 300]


def random_codes(k: int, shape, seed: int = 0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=shape)
    labels[(0,) * len(shape)] = k - 1  # the largest index is always present
    palette = rng.integers(0, 256, size=(k, 3)).astype(dtype)
    return labels, palette


def resign(blob: bytes) -> bytes:
    """Recompute the CRC of a (deliberately edited) file, to reach the checks behind it."""
    crc = zlib.crc32(blob[36:], zlib.crc32(blob[:32]))
    return blob[:32] + struct.pack("<I", crc) + blob[36:]


# ---------------------------------------------------------------------------------------------
# bit packing


@pytest.mark.parametrize("bits", range(17))
def test_pack_unpack_every_width(bits):
    rng = np.random.default_rng(bits)
    n = 1000 + bits  # not a multiple of 8: the last byte is padded
    values = rng.integers(0, 1 << bits, size=n) if bits else np.zeros(n, dtype=int)
    packed = pack_indices(values, bits)
    assert packed.dtype == np.uint8
    assert packed.size == math.ceil(n * bits / 8)
    assert np.array_equal(unpack_indices(packed, n, bits), values)


def test_pack_is_msb_first_big_endian():
    # 3-bit values 5, 3, 7 -> 101 011 11|1 0000000 (PNG's order for sub-byte pixels)
    assert pack_indices(np.array([5, 3, 7]), 3).tolist() == [0b10101111, 0b10000000]
    assert pack_indices(np.array([0x1234]), 16).tolist() == [0x12, 0x34]
    assert pack_indices(np.array([1, 0, 1]), 1).tolist() == [0b10100000]


@pytest.mark.parametrize("bits", [1, 2, 4, 5])
def test_pack_spans_chunks(bits):
    # More values than one packing step, with widths that do and do not divide a byte.
    rng = np.random.default_rng(3)
    values = rng.integers(0, 1 << bits, size=(1 << 20) + 12345)
    packed = pack_indices(values, bits)
    assert packed.size == math.ceil(values.size * bits / 8)
    assert np.array_equal(unpack_indices(packed, values.size, bits), values)


# ---------------------------------------------------------------------------------------------
# round trips and sizes


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("deflate", [False, True])
def test_round_trip_exact(k, deflate):
    labels, palette = random_codes(k, (23, 37), seed=k)
    data = decode_kvq(encode_kvq(labels, palette, deflate=deflate))
    assert np.array_equal(data.labels, labels)
    assert data.labels.dtype == (np.uint8 if k <= 256 else np.uint16)
    assert np.array_equal(data.palette, palette) and data.palette.dtype == palette.dtype
    assert data.bits_per_index == (0 if k == 1 else math.ceil(math.log2(k)))
    stored = data.bits_per_index if data.index_layout == "packed" else 8 * (1 + (k > 256))
    assert data.bit_depth == stored
    assert data.deflated is deflate
    assert np.array_equal(data.reconstruction, palette[labels])


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("layout", ["auto", "packed", "bytes"])
def test_round_trip_exact_in_each_index_layout(k, layout):
    labels, palette = random_codes(k, (3, 19, 21), seed=k + 1)
    blob = encode_kvq(labels, palette, index_layout=layout)
    data = decode_kvq(blob)
    assert np.array_equal(data.labels, labels) and np.array_equal(data.palette, palette)
    assert data.labels.dtype == (np.uint8 if k <= 256 else np.uint16)
    version, flags = struct.unpack_from("<HH", blob, 8)
    b = (k - 1).bit_length()
    if layout == "packed" or b in (0, 8, 16):
        # Nothing to gain at whole-byte widths: always a version 1 file then.
        assert (version, flags & FLAG_BYTES, data.index_layout) == (1, 0, "packed")
    elif layout == "bytes":
        assert (version, flags & FLAG_BYTES, data.index_layout) == (2, FLAG_BYTES, "bytes")
        assert data.bit_depth == 8 * byte_width(k)
        assert data.version == 2 and data.to_dict()["index_layout"] == "bytes"


def test_byte_layout_payload_is_the_indices_as_bytes():
    # K = 300: two bytes per index, big-endian like the 16-bit packed order.
    labels, palette = random_codes(300, (5, 7), seed=3)
    blob = encode_kvq(labels, palette, index_layout="bytes")
    head = header_size(2) + palette.nbytes
    assert zlib.decompress(blob[head:]) == labels.astype(">u2").tobytes()
    labels, palette = random_codes(5, (5, 7), seed=3)
    blob = encode_kvq(labels, palette, index_layout="bytes")
    head = header_size(2) + palette.nbytes
    assert zlib.decompress(blob[head:]) == labels.astype(np.uint8).tobytes()


@pytest.mark.parametrize("k", [*KS, 5, 8, 64, 128, 1024, 5000, 65536])
def test_auto_layout_is_chosen_by_k(k):
    labels, palette = random_codes(k, (9, 11), seed=k)
    b = (k - 1).bit_length()
    expected = "packed" if b in (0, 1, 2, 4, 8, 16) else "bytes"
    assert auto_index_layout(k) == expected
    data = decode_kvq(encode_kvq(labels, palette))
    assert data.index_layout == expected and np.array_equal(data.labels, labels)
    assert data.version == (2 if expected == "bytes" else 1)


def test_auto_layout_is_the_smaller_file_on_the_slide(ihc):
    # The rule stands for a measurement: on real labels it picks the smaller of the two
    # layouts at every b, and byte-aligned indices pay off where packed ones straddle bytes.
    smaller = 0
    for k in (2, 4, 8, 16, 32, 64, 128, 256):
        labels = quantize(ihc, k).labels
        palette = np.zeros((k, 3), dtype=np.uint8)
        packed = encode_kvq(labels, palette, index_layout="packed")
        bytes_ = encode_kvq(labels, palette, index_layout="bytes")
        auto = encode_kvq(labels, palette)
        assert len(auto) == min(len(packed), len(bytes_)), k
        smaller += len(auto) < len(packed)
        assert np.array_equal(decode_kvq(auto).labels, labels)
    assert smaller >= 3  # b = 3, 5, 6, 7: the reason the byte-aligned layout exists


def test_one_deflate_per_file_at_the_default_level(monkeypatch):
    calls = []
    compress = zlib.compress

    def counting(data, level=-1):
        calls.append(level)
        return compress(data, level)

    monkeypatch.setattr(zlib, "compress", counting)
    for k in (2, 5, 16, 40, 300):
        labels, palette = random_codes(k, (30, 40), seed=k)
        calls.clear()
        blob = encode_kvq(labels, palette)
        assert calls == [DEFAULT_LEVEL] == [6]
        assert np.array_equal(decode_kvq(blob).labels, labels)
        calls.clear()
        encode_kvq(labels, palette, level=1)
        assert calls == [1]
    monkeypatch.undo()
    labels, palette = random_codes(6, (64, 64), seed=1)
    assert decode_kvq(encode_kvq(labels, palette, level=0)).deflated  # stored, still valid


def test_index_layout_choices_are_checked():
    labels, palette = random_codes(5, (4, 4))
    with pytest.raises(ValueError, match="index_layout must be one of"):
        encode_kvq(labels, palette, index_layout="nibbles")
    with pytest.raises(ValueError, match="needs deflate=True"):
        encode_kvq(labels, palette, deflate=False, index_layout="bytes")
    # Undeflated files ignore "auto": always packed, always the formula's size.
    blob = encode_kvq(labels, palette, deflate=False)
    assert len(blob) == kvq_size((4, 4), 5) and decode_kvq(blob).index_layout == "packed"


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("shape", [(7,), (5, 9), (3, 4, 5), (2, 3, 2, 5)])
@pytest.mark.parametrize("layout", ["auto", "packed"])
def test_uncompressed_size_is_header_palette_and_packed_bits(k, shape, layout):
    labels, palette = random_codes(k, shape, seed=len(shape))
    blob = encode_kvq(labels, palette, deflate=False, index_layout=layout)
    n = math.prod(shape)
    b = (k - 1).bit_length()
    expected = header_size(len(shape)) + palette.nbytes + math.ceil(n * b / 8)
    assert len(blob) == expected == kvq_size(shape, k, 3, 1)
    assert header_size(len(shape)) == 40 + 8 * len(shape)


def test_size_matches_the_seed_bit_count():
    # The seed's worked example: 100 x 100 pixels at K = 16 is 40,384 bits.
    labels, palette = random_codes(16, (100, 100))
    blob = encode_kvq(labels, palette, deflate=False)
    report = bit_report(100 * 100, 16)
    assert len(blob) - header_size(2) == report.total_bits // 8 == 5048


@pytest.mark.parametrize("k", KS)
def test_nd_quantization_round_trip(tmp_path, k):
    # A stack of 3 tiles sharing one codebook, as quantize makes it for nD input.
    rng = np.random.default_rng(k)
    image = rng.integers(0, 256, size=(3, 20, 24, 3), dtype=np.uint8)
    q = quantize(image, k, n_init=1, max_iter=20)
    path = save(tmp_path / "stack.kvq", q)
    back = load(path)
    assert back.labels.shape == (3, 20, 24)
    assert np.array_equal(back.labels, q.labels)
    assert np.array_equal(back.palette, q.palette)
    assert np.array_equal(back.reconstruction, q.reconstruction)


def test_real_image_round_trip_and_deflate_smaller(tmp_path, ihc):
    q = quantize(ihc, 16)
    raw = save(tmp_path / "raw.kvq", q, deflate=False)
    packed = save(tmp_path / "packed.kvq", q)
    assert raw.stat().st_size == header_size(2) + 16 * 3 + 512 * 512 * 4 // 8
    assert packed.stat().st_size < 0.7 * raw.stat().st_size
    for path in (raw, packed):
        back = load(path)
        assert np.array_equal(back.reconstruction, q.reconstruction)
        assert back.report.total_bits == q.report.total_bits


@pytest.mark.parametrize(
    "dtype", ["uint8", "uint16", "uint32", "int8", "int16", "int64", "float16", "float32"]
)
def test_palette_dtypes(dtype):
    rng = np.random.default_rng(0)
    palette = (rng.random((5, 2)) * 100).astype(dtype)
    labels = rng.integers(0, 5, size=(6, 7))
    back = decode_kvq(encode_kvq(labels, palette))
    assert back.palette.dtype == np.dtype(dtype)
    assert np.array_equal(back.palette, palette)


def test_scalar_images(tmp_path):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 65536, size=(30, 40), dtype=np.uint16)
    q = quantize(image, 5, channel_axis=None)
    back = load(save(tmp_path / "grey.kvq", q))
    assert back.scalar and back.shape == (30, 40)
    assert back.reconstruction.dtype == np.uint16
    assert np.array_equal(back.reconstruction, q.reconstruction)


def test_float_image(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.random((16, 16, 3)).astype(np.float32)
    q = quantize(image, 7)
    back = load(save(tmp_path / "f.kvq", q))
    assert back.dtype == np.float32
    assert np.array_equal(back.reconstruction, q.reconstruction)


def test_rgba_ignored_alpha_warns(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(10, 10, 4), dtype=np.uint8)
    q = quantize(image, 3)
    with pytest.warns(UserWarning, match="alpha"):
        back = load(save(tmp_path / "a.kvq", q))
    assert back.palette.shape == (3, 3)


# ---------------------------------------------------------------------------------------------
# bad input when writing


def test_write_rejects_bad_input():
    palette = np.zeros((4, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"labels must be codeword indices 0 \.\. 3"):
        encode_kvq(np.array([[0, 4]]), palette)
    with pytest.raises(ValueError, match="labels must be codeword indices"):
        encode_kvq(np.array([[0, -1]]), palette)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        encode_kvq(np.zeros((2, 2)), palette)
    with pytest.raises(TypeError, match="palette must be"):
        encode_kvq(np.zeros((2, 2), dtype=int), np.zeros((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="palette must have shape"):
        encode_kvq(np.zeros((2, 2), dtype=int), np.zeros((65537, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="non-empty"):
        encode_kvq(np.zeros((0, 2), dtype=int), palette)
    with pytest.raises(ValueError, match="scalar=True"):
        encode_kvq(np.zeros((2, 2), dtype=int), palette, scalar=True)
    with pytest.raises(TypeError, match="palette"):
        save("x.kvq", np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="suffix"):
        save("x.bmp", np.zeros((2, 2), dtype=int), palette)


# ---------------------------------------------------------------------------------------------
# bad files: each check, then fuzzing


@pytest.fixture(scope="module")
def valid_file() -> bytes:
    labels, palette = random_codes(6, (9, 11), seed=5)
    return encode_kvq(labels, palette, deflate=False)


@pytest.fixture(scope="module")
def valid_deflated() -> bytes:
    labels, palette = random_codes(17, (9, 11), seed=6)
    return encode_kvq(labels, palette, deflate=True, index_layout="packed")


@pytest.fixture(scope="module")
def valid_bytes() -> bytes:
    labels, palette = random_codes(6, (9, 11), seed=7)
    return encode_kvq(labels, palette, index_layout="bytes")


def _edit(blob: bytes, offset: int, fmt: str, *values) -> bytes:
    patched = bytearray(blob)
    struct.pack_into(fmt, patched, offset, *values)
    return resign(bytes(patched))


def test_error_type_is_a_value_error():
    assert issubclass(KVQError, ValueError)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"GIF89a" + b[6:], "not a .kvq file"),
        (lambda b: b"", "not a .kvq file"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: _edit(b, 8, "<H", 4), "version 4 is not supported"),
        (lambda b: _edit(b, 8, "<H", 0), "version 0 is not supported"),
        (lambda b: _edit(b, 10, "<H", 8), "unknown flags"),
        (lambda b: _edit(b, 15, "<B", 1), "reserved"),
        (lambda b: _edit(b, 12, "<B", 0), "ndim 0"),
        (lambda b: _edit(b, 13, "<B", 99), "dtype code 99"),
        (lambda b: _edit(b, 14, "<B", 4), "does not match K"),
        (lambda b: _edit(b, 16, "<H", 0), "channels 0"),
        (lambda b: _edit(b, 20, "<I", 70000), "K = 70000"),
        (lambda b: _edit(b, 40, "<Q", 0), "empty axis"),
        (lambda b: _edit(b, 40, "<Q", 2**40), "over the limit"),
        (lambda b: _edit(_edit(b, 40, "<Q", 2**33), 48, "<Q", 4), "over the limit"),
        (lambda b: _edit(b, 40, "<Q", 10), "110 indices of 3 bits need 42"),
        (lambda b: _edit(b, 24, "<Q", 10**12), "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 0x10]), "checksum mismatch"),
        (lambda b: b[:60] + bytes([b[60] ^ 1]) + b[61:], "checksum mismatch"),
    ],
)
def test_each_bad_file_is_named(valid_file, mutate, message):
    with pytest.raises(KVQError, match=message):
        decode_kvq(mutate(valid_file))


def test_byte_layout_checks(valid_bytes):
    assert struct.unpack_from("<HH", valid_bytes, 8) == (2, FLAG_DEFLATE | FLAG_BYTES)
    # Flag bit 2 is unknown to version 1 (its readers refuse it).
    with pytest.raises(KVQError, match="unknown flags for version 1"):
        decode_kvq(_edit(valid_bytes, 8, "<H", 1))
    # Byte-aligned indices only ever come deflated.
    with pytest.raises(KVQError, match="need a deflated payload"):
        decode_kvq(_edit(valid_bytes, 10, "<H", FLAG_BYTES))
    # A version 2 reader still reads the packed layout, and packed payloads in version 2.
    packed = encode_kvq(*random_codes(6, (9, 11), seed=7), index_layout="packed")
    assert np.array_equal(decode_kvq(_edit(packed, 8, "<H", 2)).labels, decode_kvq(packed).labels)
    # Reading a packed file as byte-aligned: the lengths disagree.
    with pytest.raises(KVQError, match="not the declared"):
        decode_kvq(_edit(packed, 8, "<HH", 2, FLAG_DEFLATE | FLAG_BYTES))
    # Byte values up to 255 fit in a byte but K = 6: caught.
    labels, palette = random_codes(6, (2, 3), seed=1)
    blob = bytearray(encode_kvq(labels, palette, index_layout="bytes"))
    head = header_size(2) + palette.nbytes
    payload = zlib.compress(bytes([0, 1, 2, 3, 4, 200]))
    blob = blob[:head] + payload
    struct.pack_into("<Q", blob, 24, len(payload))
    with pytest.raises(KVQError, match="an index is 200, not below K = 6"):
        decode_kvq(resign(bytes(blob)))


def test_index_beyond_k_is_caught():
    # K = 6 needs 3 bits, so 6 and 7 fit in the packing but are not codewords.
    labels, palette = random_codes(8, (4, 4), seed=7)
    labels[1, 1] = 7
    blob = bytearray(encode_kvq(labels, palette, deflate=False))
    struct.pack_into("<I", blob, 20, 6)  # claim K = 6, keep b = 3, drop two colours
    head = header_size(2)
    blob = blob[: head + 18] + blob[head + 24 :]
    with pytest.raises(KVQError, match="an index is 7, not below K = 6"):
        decode_kvq(resign(bytes(blob)))


def test_nonzero_padding_is_caught():
    labels, palette = random_codes(8, (3,), seed=8)  # 9 bits: 7 padding bits
    blob = bytearray(encode_kvq(labels, palette, deflate=False))
    blob[-1] |= 1
    with pytest.raises(KVQError, match="padding"):
        decode_kvq(resign(bytes(blob)))


def test_bad_deflate_streams(valid_deflated):
    head = header_size(2) + 17 * 3
    payload = valid_deflated[head:]
    garbage = valid_deflated[:head] + bytes(len(payload))
    with pytest.raises(KVQError, match="does not inflate"):
        decode_kvq(resign(garbage))
    # A valid stream of the wrong length.
    short = zlib.compress(b"\0" * 10)
    blob = bytearray(valid_deflated[:head] + short)
    struct.pack_into("<Q", blob, 24, len(short))
    with pytest.raises(KVQError, match="inflates to 10"):
        decode_kvq(resign(bytes(blob)))


def test_declared_size_is_bounded_before_allocating(valid_deflated):
    # A tiny deflated payload that claims 2**33 pixels: refused by the deflate ratio bound,
    # without inflating or allocating anything the size of the declared image.
    blob = bytearray(valid_deflated)
    struct.pack_into("<Q", blob, 40, 2**16)
    struct.pack_into("<Q", blob, 48, 2**17)
    with pytest.raises(KVQError, match="over the limit of 268,435,456 pixels"):
        decode_kvq(resign(bytes(blob)))
    with pytest.raises(KVQError, match=r"more than \d+ deflated bytes can hold"):
        decode_kvq(resign(bytes(blob)), max_pixels=2**40)
    # And the caller's own limit.
    with pytest.raises(KVQError, match="over the limit of 10 "):
        decode_kvq(valid_deflated, max_pixels=10)


def test_one_colour_image_costs_no_index_bytes():
    blob = encode_kvq(np.zeros((1000, 1000), dtype=np.uint8), np.array([[1, 2, 3]], np.uint8))
    assert len(blob) == header_size(2) + 3 + len(zlib.compress(b""))
    data = decode_kvq(blob)
    assert data.labels.shape == (1000, 1000) and not data.labels.any()


@settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    which=st.sampled_from(["raw", "deflated", "bytes"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
    extra=st.binary(max_size=8),
    fix_crc=st.booleans(),
)
def test_fuzz_reader_raises_only_kvq_error(
    valid_file, valid_deflated, valid_bytes, which, edits, cut, extra, fix_crc
):
    files = {"raw": valid_file, "deflated": valid_deflated, "bytes": valid_bytes}
    blob = bytearray(files[which])
    for position, xor in edits:
        blob[position % len(blob)] ^= xor
    if cut is not None:
        del blob[cut % (len(blob) + 1) :]
    blob += extra
    if fix_crc and len(blob) >= 36:
        # Also reach the checks behind the checksum.
        blob = bytearray(resign(bytes(blob)))
    try:
        data = decode_kvq(bytes(blob))
    except KVQError:
        return
    # Whatever survives decodes to something self-consistent.
    assert data.labels.max() < data.n_colors
    assert data.reconstruction.shape[: data.labels.ndim] == data.labels.shape


# ---------------------------------------------------------------------------------------------
# files on disk


def test_load_sniffs_format_and_rejects_others(tmp_path):
    other = tmp_path / "x.kvq"
    other.write_bytes(b"hello world, not an image")
    with pytest.raises(KVQError, match=r"not a \.kvq file or a PNG"):
        load(other)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.kvq")
    assert MAGIC == b"\x89KVQ\r\n\x1a\n"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.kvq"

    def pieces():
        yield b"first part"
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, pieces())
    assert os.listdir(tmp_path) == []
    # An existing file survives a failed overwrite untouched.
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        atomic_write(target, pieces())
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.kvq"]


def test_save_refuses_to_overwrite_when_asked(tmp_path):
    labels, palette = random_codes(4, (3, 3))
    path = save(tmp_path / "a.kvq", labels, palette)
    with pytest.raises(FileExistsError):
        save(path, labels, palette, overwrite=False)
    save(path, labels, palette)  # overwrite=True is the default
    assert np.array_equal(load(path).labels, labels)
