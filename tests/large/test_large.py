"""Whole-slide scale: chunked exact fits, lazy encoding, multiscale, distributed, OME-Zarr."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, quantize

da = pytest.importorskip("dask.array")
chunked = pytest.importorskip("napari_kmeans_vq.large")


@pytest.fixture(scope="module")
def ihc_dask(ihc):
    # Irregular blocks on purpose: 512 = 3 * 150 + 62 rows, 4 * 120 + 32 columns.
    return da.from_array(ihc, chunks=(150, 120, 3))


@pytest.fixture(scope="module")
def lazy16(ihc_dask):
    return chunked.quantize_lazy(ihc_dask, 16)


@pytest.fixture(scope="module")
def eager16(ihc):
    return quantize(ihc, 16)


def test_import_does_not_import_dask():
    code = "import sys, napari_kmeans_vq; print('dask' in sys.modules, 'zarr' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_chunked_histogram_equals_in_memory(ihc, ihc_dask):
    from napari_kmeans_vq.core.histogram import ColorHistogram

    hist = chunked.color_histogram(ihc_dask)
    ref = ColorHistogram.from_pixels(ihc.reshape(-1, 3))
    assert np.array_equal(hist.keys, ref.keys)
    assert np.array_equal(hist.colors, ref.colors)
    assert np.array_equal(hist.counts, ref.counts)
    assert hist.n_pixels == ihc.shape[0] * ihc.shape[1]


def test_block_histograms_counted_in_a_table_or_sorted_equal_in_memory(ihc, monkeypatch):
    import dask.array as da

    from napari_kmeans_vq.core import histogram

    counted = []
    real = histogram.distinct_in_table
    monkeypatch.setattr(histogram, "distinct_in_table", lambda *a: counted.append(1) or real(*a))
    # Blocks of 1024 x 1024 (one pixel per 16 entries of the 2**24 table: counted in it)
    # and of 256 x 256 (sorted); RGBA, of which the colours are a slice of each block.
    big = np.dstack([np.tile(ihc, (2, 3, 1)), np.full((1024, 1536), 255, np.uint8)])
    ref = histogram.ColorHistogram.from_pixels(big[..., :3].reshape(-1, 3))
    for side, table in ((1024, True), (256, False)):
        counted.clear()
        hist = chunked.color_histogram(da.from_array(big, chunks=(side, side, 4))[..., :3])
        assert bool(counted) == table
        # The tables (64 MiB each) are let go once the blocks are counted.
        assert not [kind for kind in histogram._pool if kind[0] == "counts"]
        assert np.array_equal(hist.keys, ref.keys)
        assert np.array_equal(hist.colors, ref.colors)
        assert np.array_equal(hist.counts, ref.counts)


def test_chunked_fit_equals_in_memory_fit(ihc, ihc_dask, lazy16, eager16):
    assert lazy16.info["fit"] == "exact"
    assert np.array_equal(lazy16.palette, eager16.palette)
    assert np.array_equal(lazy16.centroids, eager16.centroids)
    assert np.array_equal(lazy16.cluster_sizes, eager16.cluster_sizes)
    assert lazy16.distortion == eager16.distortion
    assert lazy16.psnr == eager16.psnr
    assert lazy16.report == eager16.report
    cb = chunked.fit_chunked(ihc_dask, 16, color_space="lab")
    ref = Codebook(16, color_space="lab").fit(ihc)
    assert np.array_equal(cb.palette_, ref.palette_)
    same = chunked.fit_codebook(Codebook(16, color_space="lab"), ihc_dask)
    assert np.array_equal(same.palette_, ref.palette_)
    assert same.n_distinct_colors_ == ref.n_distinct_colors_


def test_lazy_labels_equal_eager_labels(ihc, lazy16, eager16):
    assert isinstance(lazy16.labels, da.Array)
    assert isinstance(lazy16.reconstruction, da.Array)
    assert lazy16.labels.numblocks == (4, 5)
    labels = lazy16.labels.compute()
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, eager16.labels)
    assert np.array_equal(lazy16.reconstruction.compute(), eager16.reconstruction)
    eager = lazy16.compute()
    assert np.array_equal(eager.labels, eager16.labels)
    assert lazy16.to_dict()["shape"] == [512, 512]


def test_encode_lazy_equals_codebook_encode(ihc, eager16):
    other = np.ascontiguousarray(ihc[::-1, ::2])  # a different image, same kind
    labels = chunked.encode_lazy(eager16.codebook, da.from_array(other, chunks=(100, 100, 3)))
    assert np.array_equal(labels.compute(), eager16.codebook.encode(other))
    decoded = chunked.decode_lazy(eager16.codebook, labels).compute()
    assert np.array_equal(decoded, eager16.codebook.decode(eager16.codebook.encode(other)))


def test_colours_the_fit_never_saw_go_to_the_nearest_codeword_and_are_remembered(ihc):
    from dask.base import tokenize

    from napari_kmeans_vq.core.histogram import ColorHistogram, KeyCodec
    from napari_kmeans_vq.large.lazy import LabelTable

    top = ihc[:256]  # the fit sees the top half only, as a fit on a coarser level would
    codebook = Codebook(8).fit(top)
    hist = ColorHistogram.from_pixels(top.reshape(-1, 3))
    table = LabelTable(codebook, hist, codebook.label_colors(hist.colors))
    token = tokenize(table)
    pixels = ihc.reshape(-1, 3)
    keys = KeyCodec(np.uint8, 3).keys(pixels)
    assert (table.table[keys] == table.unknown).mean() > 0.05
    expected = codebook.encode(ihc).reshape(-1)
    assert np.array_equal(table(pixels), expected)
    assert not (table.table[keys] == table.unknown).any()  # remembered
    assert np.array_equal(table(pixels), expected)
    assert tokenize(table) == token  # the graph's names do not change


def test_numpy_and_zarr_inputs(ihc, tmp_path, eager16):
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(tmp_path / "in.zarr", shape=ihc.shape, chunks=(64, 64, 3), dtype="u1")
    z[:] = ihc
    for image in (ihc, z, str(tmp_path / "in.zarr")):
        q = chunked.quantize_lazy(image, 16, block_pixels=128 * 128)
        assert q.labels.numblocks == (4, 4)
        assert np.array_equal(q.palette, eager16.palette)
        assert np.array_equal(q.labels.compute(), eager16.labels)


def test_rgba_channel_first_and_grey_match_eager(ihc):
    alpha = (np.arange(512 * 512) % 251).astype(np.uint8).reshape(512, 512, 1)
    rgba = np.concatenate([ihc, alpha], axis=-1)
    for kwargs, image in [
        ({"alpha": "ignore"}, rgba),
        ({"channel_axis": 0}, np.moveaxis(ihc, -1, 0)),
        ({"channel_axis": None}, ihc[..., 1]),
    ]:
        ref = quantize(image, 8, **kwargs)
        q = chunked.quantize_lazy(image, 8, block_pixels=100 * 100, **kwargs)
        assert q.labels.numblocks != (1, 1)
        assert np.array_equal(q.labels.compute(), ref.labels)
        recon = q.reconstruction.compute()
        assert recon.shape == image.shape
        assert np.array_equal(recon, ref.reconstruction)


def test_other_dtypes_sampled_fit_is_deterministic(ihc):
    image = ihc.astype(np.uint16) * 257
    q1 = chunked.quantize_lazy(image, 8, n_samples=20_000, block_pixels=128 * 128)
    q2 = chunked.quantize_lazy(
        da.from_array(image, chunks=(128, 128, 3)), 8, n_samples=20_000, random_state=0
    )
    assert q1.info["fit"] == "sample" and q1.info["n_samples"] == 20_000
    assert np.array_equal(q1.palette, q2.palette)
    labels = q1.labels.compute()
    # Encoding is exact nearest-codeword encoding whatever the fit.
    assert np.array_equal(labels, q1.codebook.encode(image))
    # A sample of 8% of the pixels fits nearly as well as all of them.
    assert q1.psnr > quantize(image, 8).psnr - 0.5
    exact = chunked.quantize_lazy(image, 8, fit="exact", block_pixels=128 * 128)
    assert np.array_equal(exact.palette, quantize(image, 8).palette)


def test_multiscale_in_multiscale_out(ihc, eager16):
    pyramid = [ihc, ihc[::2, ::2], ihc[::4, ::4]]
    q = chunked.quantize_lazy(pyramid, 16)
    assert q.multiscale
    assert [lv.shape for lv in q.labels] == [(512, 512), (256, 256), (128, 128)]
    assert [r.shape for r in q.reconstruction] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
    assert np.array_equal(q.palette, eager16.palette)
    for level, labels in zip(pyramid, q.labels, strict=True):
        assert np.array_equal(labels.compute(), eager16.codebook.encode(level))
    assert q.to_dict()["shapes"] == [[512, 512], [256, 256], [128, 128]]
    # A coarse level fits faster and gives nearly the same codebook.
    coarse = chunked.quantize_lazy(pyramid, 16, fit_level=1)
    assert coarse.info["fit_level"] == 1
    full = coarse.labels[0].compute()
    error = ((ihc.astype(float) - coarse.palette[full]) ** 2).sum(axis=-1).mean()
    # (either fit may land in the better local optimum: only closeness is promised)
    assert abs(error - eager16.distortion) < 0.05 * eager16.distortion
    labels = chunked.encode_lazy(eager16.codebook, pyramid)
    assert isinstance(labels, list) and len(labels) == 3


def test_is_lazy_input(ihc, ihc_dask):
    assert chunked.is_lazy_input(ihc_dask)
    assert chunked.is_lazy_input([ihc, ihc[::2, ::2]])
    assert not chunked.is_lazy_input(ihc)
    assert not chunked.is_lazy_input([[1, 2, 3]])


def test_bad_input_names_the_parameter(ihc):
    with pytest.raises(ValueError, match="fit must be one of"):
        chunked.quantize_lazy(ihc, 4, fit="fast")
    with pytest.raises(ValueError, match="fit_level"):
        chunked.quantize_lazy([ihc], 4, fit_level=2)
    with pytest.raises(ValueError, match="n_colors"):
        chunked.quantize_lazy(ihc, 0)
    with pytest.raises(TypeError, match="dtype"):
        chunked.quantize_lazy(np.zeros((4, 4, 3), dtype=complex), 2)
    with pytest.raises(ValueError, match="colour axis"):
        chunked.quantize_lazy(np.zeros(5, dtype=np.uint8), 2)
    with pytest.raises(ValueError, match="negative"):
        chunked.quantize_lazy(np.full((4, 4, 3), -1, dtype=np.int16), 2)
    with pytest.raises(ValueError, match="fitted on"):
        chunked.encode_lazy(Codebook(2).fit(ihc), ihc.astype(np.uint16))


def test_caller_array_is_not_modified(ihc):
    image = ihc.copy()
    q = chunked.quantize_lazy(image, 4, block_pixels=64 * 64)
    q.reconstruction.compute()
    assert np.array_equal(image, ihc)


def test_distributed_client_gives_identical_results(
    tmp_path, ihc, lazy16, eager16, two_process_cluster
):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    with two_process_cluster() as client:
        q = chunked.quantize_lazy(da.from_array(ihc, chunks=(150, 120, 3)), 16)
        assert np.array_equal(q.palette, eager16.palette)
        labels, recon = client.compute([q.labels, q.reconstruction], sync=True)
        # The workers write the OME-Zarr chunks themselves.
        path = omezarr.write_labels(tmp_path / "d.ome.zarr", q, chunk=128)
        assert len(client.scheduler_info()["workers"]) == 2
    assert np.array_equal(labels, eager16.labels)
    levels, _ = omezarr.read_labels(path)
    assert np.array_equal(levels[0].compute() - 1, eager16.labels)
    assert np.array_equal(recon, eager16.reconstruction)


def test_ome_zarr_labels_round_trip(tmp_path, lazy16, eager16):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    pytest.importorskip("zarr")
    path = omezarr.write_labels(tmp_path / "out.ome.zarr", lazy16, chunk=128)
    levels, meta = omezarr.read_labels(path)
    assert [lv.shape for lv in levels] == [(512, 512), (256, 256), (128, 128)]
    stored = levels[0].compute()
    assert stored.dtype == np.uint8 and stored.min() >= 1
    assert np.array_equal(stored - 1, eager16.labels)
    assert np.array_equal(levels[1].compute() - 1, eager16.labels[::2, ::2])
    rgba = [c["rgba"] for c in meta["colors"]]
    assert [c["label-value"] for c in meta["colors"]] == list(range(1, 17))
    assert np.array_equal(np.array(rgba)[:, :3], eager16.palette)
    assert all(c["rgba"][3] == 255 for c in meta["colors"])
    counts = [p["pixel-count"] for p in meta["properties"]]
    assert counts == np.bincount(eager16.labels.ravel(), minlength=16).tolist()
    assert sum(p["share"] for p in meta["properties"]) == pytest.approx(1.0)
    assert meta["properties"][0]["color"] == "#{:02x}{:02x}{:02x}".format(*eager16.palette[0])
    # Labels alone: the label image is the root; NGFF 0.5 is zarr v3, chunked, compressed.
    meta = json.loads((tmp_path / "out.ome.zarr/zarr.json").read_text())
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5" and "image-label" in ome
    scales = [
        d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]
    ]
    assert scales == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    array = json.loads((tmp_path / "out.ome.zarr/0/zarr.json").read_text())
    assert array["chunk_grid"]["configuration"]["chunk_shape"] == [128, 128]
    assert array["dimension_names"] == ["y", "x"]
    assert any(codec["name"] == "zstd" for codec in array["codecs"])
    with pytest.raises(FileExistsError):
        omezarr.write_labels(path, lazy16)


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("with_image", [False, True])
def test_ome_zarr_output_is_valid_ngff_that_ome_zarr_py_reads(
    tmp_path, ihc, lazy16, eager16, version, with_image
):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    models = pytest.importorskip("ome_zarr_models")
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    path = omezarr.write_labels(
        tmp_path / "v.ome.zarr",
        lazy16,
        chunk=256,
        ngff_version=version,
        image=ihc if with_image else None,
    )
    group = models.open_ome_zarr(path)  # validates the metadata against the NGFF models
    assert type(group).__name__ == ("Image" if with_image else "ImageLabel")
    assert group.ome_zarr_version == version
    labels = [n for n in Reader(parse_url(str(path)))() if n.load(Label)]
    assert len(labels) == 1
    assert np.array_equal(np.asarray(labels[0].data[0]) - 1, eager16.labels)
    assert sorted(labels[0].metadata["color"]) == list(range(1, 17))
    if version == "0.4":
        zarray = json.loads((tmp_path / "v.ome.zarr/0/.zarray").read_text())
        assert zarray["compressor"]["id"] == "zstd"
        assert zarray["dimension_separator"] == "/"


def test_ome_zarr_reads_with_ome_zarr_py(tmp_path, ihc, lazy16, eager16):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    pytest.importorskip("ome_zarr")
    from ome_zarr.format import FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path = omezarr.write_labels(tmp_path / "o.ome.zarr", lazy16, chunk=256, image=ihc)
    nodes = list(Reader(parse_url(str(path), fmt=FormatV04()))())
    image = next(n for n in nodes if n.load(Multiscales) and not n.load(Label))
    label = next(n for n in nodes if n.load(Label))
    assert image.data[0].shape == (3, 512, 512)
    assert np.array_equal(np.asarray(image.data[0]), np.moveaxis(ihc, -1, 0))
    assert np.array_equal(np.asarray(label.data[0]) - 1, eager16.labels)
    colors = label.metadata["color"]
    assert sorted(colors) == list(range(1, 17))
    assert np.allclose(np.array([colors[i][:3] for i in range(1, 17)]) * 255, eager16.palette)
    assert label.metadata["properties"][1]["pixel-count"] == eager16.cluster_sizes[0]


def test_ome_zarr_sampled_fit_counts_written_labels(tmp_path, ihc):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    image = ihc.astype(np.uint16) * 257
    q = chunked.quantize_lazy(image, 300, n_samples=30_000)
    path = omezarr.write_labels(tmp_path / "s.ome.zarr", q, chunk=256, n_levels=1)
    levels, meta = omezarr.read_labels(path)
    assert len(levels) == 1 and levels[0].dtype == np.uint16  # K = 300 > 255
    labels = q.labels.compute()
    counts = np.bincount(labels.ravel(), minlength=q.n_colors)
    assert [p["pixel-count"] for p in meta["properties"]] == counts.tolist()
    # uint16 palette scaled to 0-255 for display.
    assert np.array_equal(
        np.array([c["rgba"][:3] for c in meta["colors"]]),
        np.rint(q.palette / 257).astype(int),
    )


def test_labels_are_counted_as_they_are_stored_not_read_back(tmp_path, ihc, monkeypatch):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    q = chunked.quantize_lazy(ihc, 8, fit="sample", n_samples=20_000)
    expected = np.bincount(q.labels.compute().ravel(), minlength=8)

    def read_back(*args):
        raise AssertionError("the stored labels were read back")

    monkeypatch.setattr(omezarr, "_counts", read_back)
    path = omezarr.write_labels(tmp_path / "a.ome.zarr", q, chunk=128, n_levels=2)
    _, meta = omezarr.read_labels(path)
    assert [p["pixel-count"] for p in meta["properties"]] == expected.tolist()
    # Markers without counts (a store begun by an earlier version), or missing, are not
    # trusted: the stored labels are then counted.
    markers = tmp_path / "markers"
    markers.mkdir()
    (markers / "0-0.0").write_bytes(np.array([0, 5, 6], "<i8").tobytes())
    (markers / "1-0.0").write_bytes(b"")  # (another level's: ignored)
    assert omezarr._marker_counts(str(markers), 2, 1).tolist() == [5, 6]
    assert omezarr._marker_counts(str(markers), 2, 2) is None
    (markers / "0-0.1").write_bytes(b"")
    assert omezarr._marker_counts(str(markers), 2, 2) is None


def test_pyramidal_tiff_and_ome_zarr_paths(tmp_path, ihc, eager16):
    tifffile = pytest.importorskip("tifffile")
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    path = tmp_path / "slide.ome.tif"
    with tifffile.TiffWriter(path) as tw:
        options = {"tile": (128, 128), "photometric": "rgb", "compression": "zlib"}
        tw.write(ihc, subifds=1, **options)
        tw.write(ihc[::2, ::2], subfiletype=1, **options)
    levels = chunked.open_image(path)
    assert [lv.shape for lv in levels] == [(512, 512, 3), (256, 256, 3)]
    q = chunked.quantize_lazy(path, 16, block_pixels=256 * 256)
    assert q.multiscale and q.labels[0].numblocks == (2, 2)
    assert np.array_equal(q.labels[0].compute(), eager16.labels)
    # An OME-Zarr image written with the labels (stored channel-first, as NGFF orders
    # axes) opens as its pyramid, colours last.
    out = omezarr.write_labels(tmp_path / "o.ome.zarr", q, image=ihc, chunk=128)
    image = chunked.open_image(out)
    assert [lv.shape for lv in image] == [(512, 512, 3), (256, 256, 3), (128, 128, 3)]
    assert [lv.array.shape for lv in image] == [(3, 512, 512), (3, 256, 256), (3, 128, 128)]
    again = chunked.quantize_lazy(image, 16)
    assert np.array_equal(again.labels[0].compute(), eager16.labels)


def test_multiscale_levels_that_are_no_subsample_keep_their_own_labels(tmp_path, ihc):
    """Written levels of a multiscale result come from level 0 when they are every n-th
    pixel of it (here every 3rd, the last row and column dropped), with exactly n times its
    pixel size whatever the size ratio; a level of another shape keeps its own labels and
    its size ratio."""
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    pyramid = [ihc, np.ascontiguousarray(ihc[::3, ::3][:170, :170]), ihc[:100, :100]]
    q = chunked.quantize_lazy(pyramid, 8)
    omezarr.write_labels(tmp_path / "m.ome.zarr", q, chunk=128, n_levels=4)
    stored, meta = omezarr.read_labels(tmp_path / "m.ome.zarr")
    full = q.labels[0].compute()
    assert np.array_equal(np.asarray(stored[1]) - 1, full[::3, ::3][:170, :170])
    assert np.array_equal(np.asarray(stored[2]) - 1, q.labels[2].compute())
    assert not np.array_equal(full[::5, ::5][:100, :100], q.labels[2].compute())
    ratio = [s / 100 for s in ihc.shape[:2]]
    assert meta["scales"][:3] == [[1.0, 1.0], [3.0, 3.0], ratio]
    assert meta["scales"][3] == [2 * r for r in ratio]


def _tree_bytes(path) -> dict:
    import os

    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, "rb") as handle:
                out[os.path.relpath(full, path)] = handle.read()
    return out


@pytest.mark.parametrize("version", ["0.5", "0.4"])
@pytest.mark.parametrize("k", [16, 300])
def test_label_chunks_written_directly_are_zarrs_bytes(tmp_path, monkeypatch, ihc, version, k):
    """Label chunks written straight to their files (edge chunks padded) are the files
    zarr writes, in both NGFF versions, for uint8 and uint16 labels."""
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    image = ihc if k <= 255 else ihc.astype(np.uint16) * 257
    q = chunked.quantize_lazy(da.from_array(image, chunks=(200, 200, 3)), k, n_samples=20_000)
    direct = omezarr.write_labels(tmp_path / "d.ome.zarr", q, chunk=200, ngff_version=version)
    calls = []
    real = omezarr._direct_codec
    monkeypatch.setattr(omezarr, "_direct_codec", lambda t: calls.append(real(t)))
    by_zarr = omezarr.write_labels(tmp_path / "z.ome.zarr", q, chunk=200, ngff_version=version)
    assert calls and all(c is not None for c in calls)  # the direct path was taken before
    assert _tree_bytes(direct) == _tree_bytes(by_zarr)
    levels, _ = omezarr.read_labels(direct)
    assert np.array_equal(np.asarray(levels[0]) - 1, q.labels.compute())


def test_progress_and_cancel(ihc_dask):
    seen = []
    with chunked.dask_progress(lambda done, total: seen.append((done, total))):
        q = chunked.quantize_lazy(ihc_dask, 4)
    assert seen and seen[-1][0] == seen[-1][1] > 1
    assert all(done <= total for done, total in seen)
    polls = []
    with (
        pytest.raises(chunked.Cancelled),
        chunked.dask_progress(should_stop=lambda: polls.append(1) or len(polls) > 3),
    ):
        q.labels.compute()
    assert len(polls) == 4


def test_progress_callable_like_quantize(tmp_path, ihc_dask):
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    calls = []
    q = chunked.quantize_lazy(ihc_dask, 8, progress=lambda stage, f: calls.append((stage, f)))
    stages = [s for s, _ in calls]
    assert "histogram" in stages and "fit" in stages
    assert all(0.0 <= f <= 1.0 for _, f in calls)
    assert max(f for s, f in calls if s == "histogram") == 1.0
    writes = []
    omezarr.write_labels(
        tmp_path / "p.ome.zarr", q, chunk=128, progress=lambda *a: writes.append(a)
    )
    assert writes and writes[-1] == ("write", 1.0)

    class Stop(Exception):
        pass

    def stop(stage, fraction):
        raise Stop(stage)

    with pytest.raises(Stop, match="histogram"):
        chunked.quantize_lazy(ihc_dask, 8, progress=stop)


def test_read_labels_refuses_what_is_not_labels_in_one_error(tmp_path, ihc):
    """Foreign stores and files give KVQError saying what was wrong; labels under another
    name are listed."""
    zarr = pytest.importorskip("zarr")
    from napari_kmeans_vq.io import KVQError
    from napari_kmeans_vq.io.omezarr import read_labels, write_labels

    q = chunked.quantize_lazy(ihc, 4)
    write_labels(tmp_path / "named.ome.zarr", q, name="tissue", image=ihc, chunk=128)
    with pytest.raises(KVQError, match=r"no label image named 'kmeans'.*'tissue'"):
        read_labels(tmp_path / "named.ome.zarr")
    levels, _ = read_labels(tmp_path / "named.ome.zarr", name="tissue")
    assert np.array_equal(np.asarray(levels[0]) - 1, q.labels.compute())
    zarr.create_array(str(tmp_path / "plain.zarr"), shape=(4, 4), dtype="u1")
    (tmp_path / "slide.tif").write_bytes(b"II*\x00" + bytes(64))
    for path in ("plain.zarr", "slide.tif"):
        with pytest.raises(KVQError, match="as OME-Zarr labels"):
            read_labels(tmp_path / path)
    with pytest.raises(FileNotFoundError):
        read_labels(tmp_path / "missing.ome.zarr")


def test_options_of_the_writer_and_lazy_fit_are_checked(tmp_path, ihc):
    from napari_kmeans_vq.io.omezarr import read_labels, write_labels

    with pytest.raises(TypeError, match="mask and min_region need the image in memory"):
        chunked.quantize_lazy(ihc, 4, mask=np.ones(ihc.shape[:2], bool), min_region=5)
    q = chunked.quantize_lazy(ihc, 4, min_region=0, mask=None)  # the defaults pass
    write_labels(tmp_path / "a.ome.zarr", q, chunk=np.int64(128), n_levels=np.int64(2),
                 pixel_size=0.25)  # fmt: skip
    levels, meta = read_labels(tmp_path / "a.ome.zarr")
    assert len(levels) == 2 and levels[0].chunksize == (128, 128)
    assert meta["scales"] == [[0.25, 0.25], [0.5, 0.5]]
    for bad in ({"chunk": 2.7}, {"chunk": True}, {"n_levels": 1.5}, {"pixel_size": float("nan")},
                {"pixel_size": (1.0, 0.0)}, {"pixel_size": -1}, {"pixel_size": (1, 2, 3)},
                {"pixel_size": "big"}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            write_labels(tmp_path / "b.ome.zarr", q, **bad)
        assert not (tmp_path / "b.ome.zarr").exists()
