"""OME-Zarr images as inputs: NGFF puts the channel axis before the spatial ones, and
bioformats2raw nests the image in a series group; both read with the colour axis last."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import quantize

large = pytest.importorskip("napari_kmeans_vq.large")
zarr = pytest.importorskip("zarr")
dask_base = pytest.importorskip("dask.base")


def _axes(names: str) -> list[dict]:
    kinds = {"t": "time", "c": "channel"}
    return [{"name": n, "type": kinds.get(n, "space")} for n in names]


def _ngff(path, levels, names: str, *, series: bool = False):
    """An NGFF 0.4 image of ``levels`` (stored axes ``names``); with ``series``, inside
    the group "0" of a bioformats2raw-like root."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    group = root
    if series:
        root.attrs["bioformats2raw.layout"] = 3
        group = root.create_group("0")
    datasets = []
    for i, data in enumerate(levels):
        chunks = tuple(
            min(s, 1 if n in "tcz" else 128) for s, n in zip(data.shape, names, strict=True)
        )
        group.create_array(str(i), shape=data.shape, dtype=data.dtype, chunks=chunks)[:] = data
        scale = [2.0**i if n in "yx" else 1.0 for n in names]
        transform = {"type": "scale", "scale": scale}
        datasets.append({"path": str(i), "coordinateTransformations": [transform]})
    group.attrs["multiscales"] = [{"version": "0.4", "axes": _axes(names), "datasets": datasets}]


def test_the_package_own_store_with_its_image_quantizes_as_the_image(tmp_path, ihc):
    from napari_kmeans_vq.io import save_ome_zarr

    eager = quantize(ihc, 4)
    save_ome_zarr(tmp_path / "w.ome.zarr", eager, image=ihc, chunk=128)
    levels = large.open_image(tmp_path / "w.ome.zarr")
    assert all(isinstance(lv, large.inputs.LevelView) for lv in levels)
    assert levels[0].shape == ihc.shape and np.array_equal(np.asarray(levels[0]), ihc)
    q = quantize(str(tmp_path / "w.ome.zarr"), 4)
    assert np.array_equal(q.palette, eager.palette)
    assert np.array_equal(q.labels[0].compute(), eager.labels)


def test_a_bioformats2raw_series_reads_as_rows_columns_colours(tmp_path, ihc):
    tczyx = np.moveaxis(ihc, -1, 0)[None, :, None]
    _ngff(tmp_path / "b.zarr", [tczyx, tczyx[..., ::2, ::2]], "tczyx", series=True)
    levels = large.open_image(tmp_path / "b.zarr")
    assert [lv.shape for lv in levels] == [(512, 512, 3), (256, 256, 3)]
    assert levels[0].chunks == (128, 128, 1)
    assert np.array_equal(np.asarray(levels[1]), ihc[::2, ::2])
    assert np.array_equal(levels[0][100:300, 7:9], ihc[100:300, 7:9])
    assert np.array_equal(levels[0][..., 1:], ihc[..., 1:])
    with pytest.raises(IndexError, match="slices"):
        levels[0][3]
    again = large.open_image(tmp_path / "b.zarr")
    assert dask_base.tokenize(levels[0]) == dask_base.tokenize(again[0])
    assert dask_base.tokenize(levels[0]) != dask_base.tokenize(levels[1])
    q = quantize(levels, 4)
    assert np.array_equal(q.labels[0].compute(), quantize(ihc, 4).labels)


def test_a_stack_keeps_its_axes_and_channels_last_stay_as_stored(tmp_path, ihc):
    stack = np.stack([ihc, ihc[::-1]])  # z, y, x, c: two planes
    zcyx = np.moveaxis(stack, -1, 1)
    _ngff(tmp_path / "z.zarr", [zcyx], "zcyx")
    (level,) = large.open_image(tmp_path / "z.zarr")
    assert level.shape == (2, 512, 512, 3) and np.array_equal(np.asarray(level), stack)
    # Axes dropped are those of length 1 at full resolution, from every level alike.
    czyx = np.moveaxis(ihc, -1, 0)[:, None]
    _ngff(tmp_path / "one.zarr", [czyx, czyx[:, :, ::2, ::2]], "czyx")
    assert [lv.shape for lv in large.open_image(tmp_path / "one.zarr")] == [
        (512, 512, 3),
        (256, 256, 3),
    ]
    two = np.concatenate([czyx, czyx], axis=1)
    _ngff(tmp_path / "two.zarr", [two, two[:, :1, ::2, ::2]], "czyx")
    assert [lv.shape for lv in large.open_image(tmp_path / "two.zarr")] == [
        (2, 512, 512, 3),
        (1, 256, 256, 3),
    ]
    _ngff(tmp_path / "last.zarr", [ihc], "yxc")
    (plain,) = large.open_image(tmp_path / "last.zarr")
    assert isinstance(plain, zarr.Array)
