"""size_report for every kind of result, sizes on disk, and stores written whole or not at all."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import (
    encode,
    load,
    save,
    save_ome_zarr,
    size_report,
    sizes_with_ratios,
    tree_size,
)


def test_report_sizes_are_the_saved_files(tmp_path, ihc_crop):
    q = quantize(ihc_crop, 16)
    contents = {}
    report = size_report(q, input_bytes=5000, contents=contents)
    kvq = save(tmp_path / "q.kvq", q)
    png = save(tmp_path / "q.png", q)
    assert report["files"]["kvq_deflated"] == kvq.stat().st_size == len(contents["kvq"])
    assert report["files"]["png"] == png.stat().st_size == len(contents["png"])
    assert kvq.read_bytes() == contents["kvq"] and png.read_bytes() == contents["png"]
    # A level is one encoding at that level, the same for save, encode and the report.
    fast = size_report(q, level=1)["files"]
    assert fast["kvq_deflated"] == len(encode(q, level=1))
    assert save(tmp_path / "fast.kvq", q, level=1).stat().st_size == fast["kvq_deflated"]
    assert np.array_equal(load(tmp_path / "fast.kvq").labels, q.labels)


def test_ratios_follow_the_files(ihc_crop):
    q = quantize(ihc_crop, 4)
    report = size_report(q, input_bytes=1000)
    files = {**report["files"], "ome_zarr": 4321}
    again = sizes_with_ratios(q.report, files, 1000)
    assert again["ratios"]["vs_raw"]["ome_zarr"] == 4321 / report["raw_bytes"]
    assert again["ratios"]["vs_input"]["ome_zarr"] == 4.321
    assert "ome_zarr" not in report["ratios"]["vs_raw"]


def test_lazy_result_reports_the_formula_without_encoding(ihc_crop):
    pytest.importorskip("dask")
    from napari_kmeans_vq.large import quantize_lazy

    lazy = quantize_lazy(ihc_crop, 8)
    report = size_report(lazy, input_bytes=100)
    eager = size_report(quantize(ihc_crop, 8), input_bytes=100)
    assert report["formula"] == eager["formula"]
    assert report["files"]["kvq_raw"] == eager["files"]["kvq_raw"]
    assert report["files"]["kvq_deflated"] is None and report["files"]["png"] is None
    assert "streamed" in report["files"]["png_reason"]
    with pytest.raises(TypeError):
        size_report(lazy, np.zeros((8, 3), np.uint8))


def test_tree_size_of_a_file_and_a_directory(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "b").write_bytes(b"y" * 10)
    (tmp_path / "d" / "e" / "c").write_bytes(b"z" * 5)
    assert tree_size(tmp_path / "a")[0] == 1000
    size, allocated = tree_size(tmp_path / "d")
    assert size == 15 and allocated >= 15
    with pytest.raises(FileNotFoundError):
        tree_size(tmp_path / "missing")


def test_save_ome_zarr_is_atomic(tmp_path, ihc_crop):
    pytest.importorskip("zarr")
    pytest.importorskip("dask")
    from napari_kmeans_vq.io.omezarr import read_labels

    q = quantize(ihc_crop, 5)
    out = tmp_path / "q.ome.zarr"
    stages = []
    save_ome_zarr(out, q, progress=lambda stage, fraction: stages.append(stage))
    levels, _ = read_labels(out)
    assert np.array_equal(np.asarray(levels[0]) - 1, q.labels) and "write" in stages
    with pytest.raises(FileExistsError):
        save_ome_zarr(out, q)
    save_ome_zarr(out, quantize(ihc_crop, 3), overwrite=True)
    assert np.asarray(read_labels(out)[0][0]).max() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.ome.zarr"]  # no temporaries
