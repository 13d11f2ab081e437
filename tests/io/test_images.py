"""Ordinary image files in and out (Pillow, tifffile, numpy), and which inputs open lazily."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from napari_kmeans_vq.io import encode_image, read_image
from napari_kmeans_vq.io import images as images_module
from napari_kmeans_vq.io.images import LAZY_TIFF_BYTES, streams


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
    with pytest.raises(ValueError, match=r"cannot read .*notes\.png as an image"):
        read_image(tmp_path / "notes.png")
    (tmp_path / "bad.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"cannot read .*bad\.npy as a numpy array"):
        read_image(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match="cannot be written as an ordinary image"):
        encode_image(np.zeros((4, 4, 2), dtype=np.uint8), ".png")
    with pytest.raises(ValueError, match="unknown image type"):
        encode_image(np.zeros((4, 4), dtype=np.uint8), "x.nope")


def test_which_inputs_stream(tmp_path, monkeypatch):
    small_tif = tmp_path / "small.tif"
    small_tif.write_bytes(b"II*\0")
    (tmp_path / "slide.zarr").mkdir()
    assert streams(tmp_path / "slide.zarr") and streams(tmp_path / "missing.zarr")
    assert not streams(small_tif) and streams(small_tif, lazy=True)
    assert not streams(tmp_path / "x.png")
    with pytest.raises(ValueError, match="opens lazily"):
        streams(tmp_path / "x.png", lazy=True)
    assert LAZY_TIFF_BYTES == 256 * 2**20
    monkeypatch.setattr(images_module, "LAZY_TIFF_BYTES", 2)
    assert streams(small_tif)  # over the threshold now


def test_lazy_zarr_reads_nothing_until_asked(tmp_path, ihc_crop):
    zarr = pytest.importorskip("zarr")
    path = tmp_path / "crop.zarr"
    z = zarr.create_array(str(path), shape=ihc_crop.shape, chunks=(32, 32, 3), dtype="u1")
    z[:] = ihc_crop
    lazy = read_image(path, lazy=True)
    assert isinstance(lazy, zarr.Array) and lazy.shape == ihc_crop.shape
    assert np.array_equal(read_image(path), ihc_crop)  # a directory read whole
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ValueError, match=r"cannot read .* as a zarr array or TIFF"):
        read_image(tmp_path / "empty.zarr", lazy=True)
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        read_image(tmp_path / "missing.zarr", lazy=True)


def test_encode_image_writes_what_pillow_reads(ihc_crop):
    blob = encode_image(ihc_crop)
    with Image.open(io.BytesIO(blob)) as im:
        assert im.format == "PNG" and np.array_equal(np.asarray(im), ihc_crop)
