"""The .kvq metadata section (version 3): class names travel with the labels, checked on read."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from napari_kmeans_vq.io import KVQError, decode_kvq, encode_kvq, header_size, load, save
from napari_kmeans_vq.io.kvq import FLAG_DEFLATE, FLAG_META, MAX_METADATA, class_metadata


def resign(blob: bytes) -> bytes:
    crc = zlib.crc32(blob[36:], zlib.crc32(blob[:32]))
    return blob[:32] + struct.pack("<I", crc) + blob[36:]


def codes(k: int, shape=(9, 11), seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=shape).astype(np.uint8)
    labels.flat[0] = k - 1
    return labels, rng.integers(0, 256, size=(k, 3)).astype(np.uint8)


NAMES = ["nuclei", "stroma", "Hintergrund (Glas)", "红细胞"]


@pytest.mark.parametrize("deflate", [True, False])
@pytest.mark.parametrize("layout", ["packed", "bytes"])
def test_names_round_trip_at_version_3(deflate, layout):
    if layout == "bytes" and not deflate:
        pytest.skip("byte-aligned indices are deflated only")
    labels, palette = codes(4 if layout == "packed" else 6)
    names = [f"{n} {i}" for i, n in enumerate(NAMES * 2)][: len(palette)]
    meta = class_metadata(names, colors=palette, n_colors=len(palette), note={"a": 1})
    blob = encode_kvq(labels, palette, deflate=deflate, index_layout=layout, metadata=meta)
    version, flags = struct.unpack_from("<HH", blob, 8)
    assert version == 3 and flags & FLAG_META
    (length,) = struct.unpack_from("<I", blob, 36)
    start = header_size(2) + palette.nbytes
    assert json.loads(blob[start : start + length].decode("utf-8")) == meta
    back = decode_kvq(blob)
    assert back.names == names and back.version == 3
    assert back.extra["metadata"]["note"] == {"a": 1}
    assert back.extra["metadata"]["colors"][0] == "#{:02x}{:02x}{:02x}".format(*palette[0])
    assert np.array_equal(back.labels, labels) and np.array_equal(back.palette, palette)


def test_files_without_names_are_unchanged():
    labels, palette = codes(6)
    plain = encode_kvq(labels, palette)
    assert encode_kvq(labels, palette, metadata=None) == plain
    assert encode_kvq(labels, palette, metadata={}) == plain
    assert struct.unpack_from("<HHI", plain, 8)[:2][0] in (1, 2)
    assert struct.unpack_from("<I", plain, 36) == (0,)
    assert decode_kvq(plain).names is None


def test_save_and_load_carry_names(tmp_path, ihc):
    from napari_kmeans_vq import quantize

    q = quantize(ihc[:64, :80], 4)
    path = save(tmp_path / "named.kvq", q, names=NAMES)
    assert load(path).names == NAMES
    assert load(save(tmp_path / "plain.kvq", q)).names is None
    # A loaded file saves again with its names.
    again = save(tmp_path / "again.kvq", load(path))
    assert again.read_bytes() == path.read_bytes()


def test_bad_metadata_is_refused_when_writing():
    labels, palette = codes(4)
    with pytest.raises(ValueError, match="one per class"):
        encode_kvq(labels, palette, metadata={"names": ["a", "b"]})
    with pytest.raises(ValueError, match="list of strings"):
        encode_kvq(labels, palette, metadata={"names": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match="JSON object"):
        encode_kvq(labels, palette, metadata=["a"])
    with pytest.raises(ValueError, match="JSON-serialisable"):
        encode_kvq(labels, palette, metadata={"x": object()})
    with pytest.raises(ValueError, match=r"over the \.kvq limit"):
        encode_kvq(labels, palette, metadata={"x": "y" * MAX_METADATA})


def _named() -> tuple[bytes, int]:
    labels, palette = codes(4)
    blob = encode_kvq(labels, palette, deflate=True, metadata={"names": list("abcd")})
    return blob, header_size(2) + palette.nbytes


def _meta(blob: bytes, start: int, text: bytes) -> bytes:
    """The file with its metadata section replaced by ``text``, sizes and CRC made right."""
    (old,) = struct.unpack_from("<I", blob, 36)
    out = bytearray(blob[:start] + text + blob[start + old :])
    struct.pack_into("<I", out, 36, len(text))
    return resign(bytes(out))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b, s: _meta(b, s, b'{"names": ["a"'), "metadata section is not valid JSON"),
        (lambda b, s: _meta(b, s, b'["a", "b"]'), "JSON object"),
        (lambda b, s: _meta(b, s, b'{"names": ["a"]}'), "expected one per class"),
        (lambda b, s: _meta(b, s, b'{"colors": [1, 2, 3, 4]}'), "'#rrggbb'"),
        (lambda b, s: _meta(b, s, b'{"n": ' + b"[" * 40 + b"]" * 40 + b"}"), "nested"),
        (lambda b, s: _meta(b, s, b'{"names": ["\xff", "b", "c", "d"]}'), "not valid JSON"),
        (lambda b, s: resign(b[:36] + struct.pack("<I", 0) + b[40:]), "outside 2 .."),
        (lambda b, s: resign(b[:36] + struct.pack("<I", 2**30) + b[40:]), "outside 2 .."),
        (lambda b, s: resign(b[:36] + struct.pack("<I", 30) + b[40:]), "describes"),
        (lambda b, s: resign(b[:8] + struct.pack("<H", 2) + b[10:]), "unknown flags"),
        (
            lambda b, s: resign(b[:10] + struct.pack("<H", FLAG_DEFLATE) + b[12:]),
            "reserved",
        ),
        (lambda b, s: b[: s + 3] + bytes([b[s + 3] ^ 1]) + b[s + 4 :], "checksum mismatch"),
    ],
)
def test_damaged_metadata_is_named(mutate, message):
    blob, start = _named()
    with pytest.raises(KVQError, match=message):
        decode_kvq(mutate(blob, start))


def test_metadata_length_is_checked_from_the_header_alone(tmp_path):
    from napari_kmeans_vq.io.kvq import read_header

    blob, _ = _named()
    head = blob[: header_size(2)]
    assert read_header(head, len(blob)).meta_len == struct.unpack_from("<I", blob, 36)[0]
    with pytest.raises(KVQError, match="describes"):
        read_header(head, len(blob) + 5)
    (tmp_path / "x.kvq").write_bytes(blob[:-3])
    with pytest.raises(KVQError, match="truncated"):
        load(tmp_path / "x.kvq")
