"""Ordinary image files in and out (Pillow, tifffile, numpy), and which inputs open lazily."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from napari_kmeans_vq.io import KVQError, encode_image, limits, read_image
from napari_kmeans_vq.io.images import streams, tiff_layout


def test_png_jpeg_and_npy_round_trip(tmp_path, ihc_crop):
    png = tmp_path / "crop.png"
    png.write_bytes(encode_image(ihc_crop, png))
    assert np.array_equal(read_image(png), ihc_crop)
    npy = tmp_path / "crop.npy"
    npy.write_bytes(encode_image(ihc_crop.astype(np.float32) / 255, ".npy"))
    assert np.allclose(read_image(npy) * 255, ihc_crop)
    jpeg = tmp_path / "crop.jpg"
    jpeg.write_bytes(encode_image(ihc_crop, jpeg))
    back = read_image(jpeg)
    assert back.shape == ihc_crop.shape and back.dtype == np.uint8


def test_pillow_modes_become_plain_arrays(tmp_path):
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255]
    im = Image.fromarray(labels, mode="P")
    im.putpalette(palette)
    im.save(tmp_path / "p.png")
    rgb = read_image(tmp_path / "p.png")
    assert rgb.shape == (3, 4, 3) and rgb[0, 1].tolist() == [0, 255, 0]
    grey16 = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    (tmp_path / "g.png").write_bytes(encode_image(grey16, ".png"))
    back = read_image(tmp_path / "g.png")
    assert back.dtype == np.uint16 and np.array_equal(back, grey16)
    Image.fromarray(labels > 0).save(tmp_path / "bits.png")
    assert read_image(tmp_path / "bits.png").dtype == np.uint8


def test_tiff_through_tifffile_any_dtype(tmp_path):
    pytest.importorskip("tifffile")
    rgb16 = np.random.default_rng(0).integers(0, 65535, (6, 7, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.tif"
    path.write_bytes(encode_image(rgb16, path))
    assert np.array_equal(read_image(path), rgb16)


def test_tiff_without_tifffile_uses_pillow(tmp_path, monkeypatch, ihc_crop):
    import sys

    monkeypatch.setitem(sys.modules, "tifffile", None)  # import now raises ImportError
    path = tmp_path / "crop.tif"
    path.write_bytes(encode_image(ihc_crop, path))
    with Image.open(path) as im:
        assert im.format == "TIFF"
    assert np.array_equal(read_image(path), ihc_crop)


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(KVQError, match=r"cannot read .*notes\.png as an image"):
        read_image(tmp_path / "notes.png")
    (tmp_path / "bad.npy").write_bytes(b"junk")
    with pytest.raises(KVQError, match=r"bad\.npy: cannot read it as a numpy array"):
        read_image(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="cannot be written as an ordinary image"):
        encode_image(np.zeros((4, 4, 2), dtype=np.uint8), ".png")
    with pytest.raises(ValueError, match="unknown image type"):
        encode_image(np.zeros((4, 4), dtype=np.uint8), "x.nope")


def test_which_inputs_stream(tmp_path, ihc_crop):
    """Inputs are routed by what they are (tiled, pyramidal, over the pixel limit), never
    by their size on disk."""
    tifffile = pytest.importorskip("tifffile")
    junk_tif = tmp_path / "junk.tif"
    junk_tif.write_bytes(b"II*\0")
    (tmp_path / "slide.zarr").mkdir()
    assert streams(tmp_path / "slide.zarr") and streams(tmp_path / "missing.zarr")
    assert not streams(junk_tif) and streams(junk_tif, lazy=True)
    assert not streams(tmp_path / "x.png")
    with pytest.raises(ValueError, match="opens lazily"):
        streams(tmp_path / "x.png", lazy=True)
    # A plain (striped) TIFF is read whole; a tiled one or a pyramid is streamed, however
    # small; any TIFF over the pixel limit too.
    plain, tiled, pyramid = (tmp_path / f"{n}.tif" for n in ("plain", "tiled", "pyramid"))
    tifffile.imwrite(plain, ihc_crop, photometric="rgb")
    tifffile.imwrite(tiled, ihc_crop, photometric="rgb", tile=(32, 32))
    with tifffile.TiffWriter(pyramid) as tw:
        tw.write(ihc_crop, photometric="rgb", subifds=1)
        tw.write(ihc_crop[::2, ::2], photometric="rgb", subfiletype=1)
    assert tiff_layout(plain) == {
        "tiled": False,
        "levels": 1,
        "shape": ihc_crop.shape,
        "dtype": "uint8",
        "pixels": 96 * 128,
    }
    assert tiff_layout(tiled)["tiled"] and tiff_layout(pyramid)["levels"] == 2
    assert not streams(plain) and streams(tiled) and streams(pyramid)
    assert streams(plain, max_pixels=96 * 128 - 1) and not streams(plain, max_pixels=96 * 128)
    # .npy: memory-mapped when over the limit (or asked to).
    npy = tmp_path / "a.npy"
    np.save(npy, ihc_crop)
    assert not streams(npy) and streams(npy, lazy=True) and streams(npy, max_pixels=100)
    mapped = read_image(npy, lazy=True)
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, ihc_crop)


def test_pixel_limit_before_reading(tmp_path, ihc_crop, monkeypatch):
    """Every in-memory read checks the declared pixels first; the message says how to
    raise the limit, which is one setting for all readers."""
    tifffile = pytest.importorskip("tifffile")
    paths = {
        ".png": encode_image(ihc_crop, ".png"),
        ".npy": encode_image(ihc_crop, ".npy"),
        ".tif": encode_image(ihc_crop, ".tif"),
    }
    for suffix, blob in paths.items():
        (tmp_path / f"crop{suffix}").write_bytes(blob)
    for suffix in paths:
        path = tmp_path / f"crop{suffix}"
        with pytest.raises(KVQError, match=r"12,288 pixels, over the limit of 12,287") as info:
            read_image(path, max_pixels=96 * 128 - 1)
        assert "--max-pixels" in str(info.value) and "MAX_PIXELS" in str(info.value)
        assert read_image(path, max_pixels=96 * 128).shape == ihc_crop.shape
        monkeypatch.setattr(limits, "MAX_PIXELS", 1000)  # the process-wide setting
        with pytest.raises(KVQError, match="over the limit of 1,000"):
            read_image(path)
        monkeypatch.undo()
    # A zarr directory read whole is limited too.
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=ihc_crop.shape, dtype="u1")
    z[:] = ihc_crop
    with pytest.raises(KVQError, match="over the limit of 10 "):
        read_image(tmp_path / "c.zarr", max_pixels=10)
    assert tifffile  # used above through encode_image


def test_npy_header_is_checked_against_the_file(tmp_path):
    """A .npy whose header claims more than the file holds is refused before numpy
    allocates for it; objects are never unpickled."""
    path = tmp_path / "liar.npy"
    blob = bytearray(encode_image(np.zeros((4, 4), np.uint8), ".npy"))
    blob[blob.index(b"(4, 4)") : blob.index(b"(4, 4)") + 6] = b"(9, 9)"
    path.write_bytes(bytes(blob))
    with pytest.raises(KVQError, match=r"header describes .* the file has"):
        read_image(path)
    np.save(tmp_path / "objects.npy", np.array([{}, []], dtype=object), allow_pickle=True)
    with pytest.raises(KVQError, match="never unpickled"):
        read_image(tmp_path / "objects.npy")


def test_non_regular_files_are_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it for reading would wait forever for a writer
    with pytest.raises(KVQError, match="FIFO"):
        read_image(fifo)
    with pytest.raises(KVQError, match="character device"):
        read_image("/dev/zero")


def test_lazy_zarr_reads_nothing_until_asked(tmp_path, ihc_crop):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "crop.zarr"
    z = zarr.create_array(str(path), shape=ihc_crop.shape, chunks=(32, 32, 3), dtype="u1")
    z[:] = ihc_crop
    lazy = read_image(path, lazy=True)
    assert isinstance(lazy, zarr.Array) and lazy.shape == ihc_crop.shape
    assert np.array_equal(read_image(path), ihc_crop)  # a directory read whole
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(KVQError, match=r"cannot read .* as a zarr array or TIFF"):
        read_image(tmp_path / "empty.zarr", lazy=True)
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        read_image(tmp_path / "missing.zarr", lazy=True)


def test_encode_image_writes_what_pillow_reads(ihc_crop):
    blob = encode_image(ihc_crop)
    with Image.open(io.BytesIO(blob)) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), ihc_crop)
