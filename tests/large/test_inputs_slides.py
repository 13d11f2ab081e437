"""Slides as scanners write them: a pyramidal, JPEG-tiled TIFF read lazily tile by tile.

The slide is made by ``benchmarks/make_slide.py`` (real IHC and generated H&E-like tissue,
recoloured, flipped and rotated), 2,048 x 2,048 in 256-pixel tiles: 4 Mpx, 4 levels.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_kmeans_vq import quantize

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")  # tifffile's JPEG codec
pytest.importorskip("skimage")
da = pytest.importorskip("dask.array")
large = pytest.importorskip("napari_kmeans_vq.large")

from napari_kmeans_vq.large.inputs import TiffLevel, as_dask  # noqa: E402

SIDE, TILE = 2048, 256
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "make_slide.py"


def _make_slide_module():
    spec = importlib.util.spec_from_file_location("make_slide", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def make_slide():
    return _make_slide_module()


@pytest.fixture(scope="module", params=[("slide.tif", "jpeg"), ("slide.ome.tif", "zlib")])
def slide(request, tmp_path_factory, make_slide) -> Path:
    name, compression = request.param
    path = tmp_path_factory.mktemp("slide") / name
    make_slide.write_slide(path, SIDE, tile=TILE, compression=compression)
    return path


@pytest.fixture(scope="module")
def jpeg_slide(tmp_path_factory, make_slide) -> Path:
    path = tmp_path_factory.mktemp("jpeg") / "slide.tif"
    make_slide.write_slide(path, SIDE, tile=TILE)
    return path


@pytest.fixture(scope="module")
def decoded(jpeg_slide) -> list[np.ndarray]:
    """Every level decoded whole by tifffile, for comparison."""
    with tifffile.TiffFile(jpeg_slide) as tif:
        return [level.asarray() for level in tif.series[0].levels]


@pytest.fixture(scope="module")
def eager8(decoded):
    return quantize(decoded[0], 8)


def test_the_slide_is_what_scanners_write(slide, make_slide):
    with tifffile.TiffFile(slide) as tif:
        series = tif.series[0]
        page = series.levels[0].pages[0]
        assert page.is_tiled and page.chunks[:2] == (TILE, TILE)
        assert page.is_subifd is False and len(series.levels) == 4
        assert [lv.shape for lv in series.levels] == [
            (s, s, 3) for s in make_slide.level_sides(SIDE, TILE)
        ]
        expected = "jpeg" if slide.name == "slide.tif" else "adobe_deflate"
        assert page.compression.name.lower() == expected
        assert tif.is_ome == slide.name.endswith(".ome.tif")


def test_make_slide_is_deterministic(make_slide):
    one = make_slide.SlideMaker(1024, 256, seed=3)
    two = make_slide.SlideMaker(1024, 256, seed=3)
    for index in [(0, 0), (1, 2), (3, 3)]:
        assert np.array_equal(one.tile_at(*index), two.tile_at(*index))
    assert one.tissue.any() and not one.tissue.all()  # tissue and glass


def test_opens_as_multiscale_without_reading_pixels(slide):
    levels = large.open_image(slide)
    with tifffile.TiffFile(slide) as tif:
        shapes = [lv.shape for lv in tif.series[0].levels]
    assert [lv.shape for lv in levels] == shapes
    assert all(isinstance(lv, TiffLevel) and lv.chunks == (TILE, TILE, 3) for lv in levels)
    # Opening decodes one tile of the smallest level, to check the codec, and nothing else.
    assert [lv.tiles_read for lv in levels] == [0, 0, 0, 1]
    assert large.is_lazy_input(levels) and large.is_lazy_input(levels[0])
    assert large.is_lazy_input(str(slide)) and large.is_lazy_input(slide)
    # Blocks are whole tiles, about block_pixels each.
    x = as_dask(levels[0], block_pixels=TILE * TILE * 4)
    assert x.chunksize == (2 * TILE, 2 * TILE, 3)
    assert all(c % TILE == 0 for axis in x.chunks[:2] for c in axis[:-1])


def test_reads_what_tifffile_decodes(slide):
    levels = large.open_image(slide)
    with tifffile.TiffFile(slide) as tif:
        full = tif.series[0].levels[0].asarray()
        small = tif.series[0].levels[2].asarray()
    level = levels[0]
    # Regions across tile edges, single rows, steps, the colour axis.
    assert np.array_equal(level[100:700, 250:260], full[100:700, 250:260])
    assert np.array_equal(level[513], full[513])
    assert np.array_equal(level[::7, 5:900:3, 1], full[::7, 5:900:3, 1])
    assert np.array_equal(level[..., 2], full[..., 2])
    assert np.array_equal(np.asarray(levels[2]), small)
    # Pickled by path (process and distributed schedulers reopen the file).
    again = pickle.loads(pickle.dumps(level))
    assert np.array_equal(again[300:400, 1000:1100], full[300:400, 1000:1100])


def test_exact_fit_reads_each_full_resolution_tile_once(decoded, eager8, jpeg_slide):
    levels = large.open_image(jpeg_slide)
    q = quantize(levels, 8)
    assert isinstance(q, large.LazyQuantization) and q.multiscale
    assert q.info["fit"] == "exact" and q.info["fit_level"] == 0
    tiles = (SIDE // TILE) ** 2
    # The fit decoded every tile of level 0 once, and no other level (beyond the check).
    assert [lv.tiles_read for lv in levels] == [tiles, 0, 0, 1]
    assert np.array_equal(q.palette, eager8.palette)
    assert np.array_equal(q.centroids, eager8.centroids)
    assert np.array_equal(q.cluster_sizes, eager8.cluster_sizes)
    assert q.distortion == eager8.distortion


def test_written_pyramid_comes_from_full_resolution_labels(eager8, jpeg_slide, tmp_path):
    """The label pyramid of a multiscale result is subsampled from its full-resolution
    labels as they are written (as NGFF label pyramids are made), at the slide's level
    shapes: the slide's lower levels are never decoded, and level 0 once more."""
    from napari_kmeans_vq.io.omezarr import read_labels, write_labels

    levels = large.open_image(jpeg_slide)
    q = quantize(levels, 8)
    tiles = (SIDE // TILE) ** 2
    write_labels(tmp_path / "p.ome.zarr", q, chunk=256)
    assert [lv.tiles_read for lv in levels] == [2 * tiles, 0, 0, 1]
    stored, meta = read_labels(tmp_path / "p.ome.zarr")
    assert [tuple(lv.shape) for lv in stored[: len(levels)]] == [lv.shape[:2] for lv in levels]
    for i, level in enumerate(stored):
        step = 2**i
        assert np.array_equal(np.asarray(level) - 1, eager8.labels[::step, ::step])
        assert meta["scales"][i] == [float(step), float(step)]


def test_the_slide_written_with_its_labels_is_read_once_block_by_block(jpeg_slide, tmp_path):
    """With the slide as the store's image, each of its levels is decoded once for the
    image (level 0 also once for the fit and once for the labels), never whole."""
    from napari_kmeans_vq.io.omezarr import write_labels

    levels = large.open_image(jpeg_slide)
    q = quantize(levels, 8)
    write_labels(tmp_path / "p.ome.zarr", q, chunk=256, image=levels)
    tiles = [math.prod(-(-s // TILE) for s in lv.shape[:2]) for lv in levels]
    tiles[0] *= 2
    tiles[-1] += 1  # open_image decodes one tile of the smallest level, as a check
    assert [lv.tiles_read for lv in levels] == tiles


def test_lazy_labels_equal_in_memory_encoding(decoded, eager8, jpeg_slide):
    q = quantize(str(jpeg_slide), 8)  # a path goes block by block too
    assert isinstance(q, large.LazyQuantization)
    labels = da.compute(*q.labels)
    assert np.array_equal(labels[0], eager8.labels)
    for level, lab in zip(decoded[1:], labels[1:], strict=True):
        assert np.array_equal(lab, eager8.codebook.encode(level))
    assert np.array_equal(q.reconstruction[1].compute(), eager8.palette[labels[1]])


def test_lower_level_or_sample_only_when_asked(jpeg_slide):
    levels = large.open_image(jpeg_slide)
    q = quantize(levels, 8, fit_level=2)
    assert q.info["fit_level"] == 2 and q.info["fit_pixels"] == (SIDE // 4) ** 2
    assert levels[0].tiles_read == 0 and levels[2].tiles_read == (SIDE // 4 // TILE) ** 2
    sampled = quantize(levels, 8, fit="sample", n_samples=50_000)
    assert sampled.info["fit"] == "sample" and sampled.info["n_samples"] <= 50_000


@pytest.mark.parametrize("options", [{}, {"fit_level": 2}, {"fit": "sample", "n_samples": 9_999}])
def test_class_pixels_are_those_of_the_full_resolution_labels(jpeg_slide, options):
    """A lazy result's class table, and the in-memory result it computes, count the
    full-resolution labels, whatever pixels the fit counted."""
    q = quantize(large.open_image(jpeg_slide), 8, **options)
    computed = q.compute()
    counts = np.bincount(computed.labels.ravel(), minlength=8)
    assert np.array_equal(computed.cluster_sizes, counts)
    assert np.array_equal(computed.class_table().column("pixels"), counts)
    table = q.class_table(pixel_size=0.5)
    assert np.array_equal(table.column("pixels"), counts)
    assert np.allclose(table.column("area_um2"), counts * 0.25)
    fitted_here = not options
    assert np.array_equal(q.cluster_sizes, counts) == fitted_here


def test_cli_writes_ome_zarr_labels_that_ome_zarr_py_reads(jpeg_slide, eager8, tmp_path):
    reader = pytest.importorskip("ome_zarr.reader")
    io = pytest.importorskip("ome_zarr.io")
    out = tmp_path / "labels.ome.zarr"
    cli = [sys.executable, "-m", "napari_kmeans_vq.cli"]
    done = subprocess.run(
        [*cli, "compress", str(jpeg_slide), "-k", "8", "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["input"]["streamed"] is True and report["input"]["levels"] == 4
    assert report["fit"] == "exact"
    nodes = list(reader.Reader(io.parse_url(str(out)))())
    data = nodes[0].data
    assert len(data) >= 2 and tuple(data[0].shape) == (SIDE, SIDE)
    assert np.array_equal(np.asarray(data[0]) - 1, eager8.labels)
    colours = nodes[0].metadata["color"]
    assert np.allclose(np.array([colours[i + 1][:3] for i in range(8)]) * 255, eager8.palette)
    properties = nodes[0].metadata["properties"]
    counts = np.bincount(eager8.labels.ravel(), minlength=8)
    assert [properties[i + 1]["pixel-count"] for i in range(8)] == counts.tolist()
