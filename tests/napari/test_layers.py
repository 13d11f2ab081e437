"""layer_data() and friends: napari layer-data tuples, built and checked without a viewer."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from napari_kmeans_vq import bit_report, quantize
from napari_kmeans_vq._limits import label_dtype
from napari_kmeans_vq.core.colorspace import palette_rgba
from napari_kmeans_vq.napari.layers import (
    METADATA_KEY,
    PixelSize,
    class_table_for,
    class_table_view,
    cluster_features,
    coded_layer_data,
    default_names,
    label_colormap,
    layer_data,
    merge_classes,
    merge_names,
    parse_k_list,
    pixel_size,
    quantization_layer_data,
    spatial_kwargs,
    sweep_layer_data,
)


def test_layer_data_on_ihc(ihc):
    before = ihc.copy()
    (recon, rmeta, rkind), (labels, lmeta, lkind) = layer_data(ihc, 16)
    assert (rkind, lkind) == ("image", "labels")
    assert recon.dtype == np.uint8 and recon.shape == ihc.shape and rmeta["rgb"] is True
    assert labels.dtype == np.uint8 and labels.shape == ihc.shape[:2]
    assert labels.min() == 1 and labels.max() == 16  # no cluster is the background 0

    summary = lmeta["metadata"][METADATA_KEY]
    assert summary["role"] == "labels"
    assert rmeta["metadata"][METADATA_KEY] == {**summary, "role": "reconstruction"}
    palette = np.array(summary["palette"], dtype=np.uint8)
    np.testing.assert_array_equal(recon, palette[labels - 1])

    # Colours: exactly palette / 255, background and unknown labels transparent.
    cmap = lmeta["colormap"]
    assert cmap[None] == (0, 0, 0, 0) and cmap[0] == (0, 0, 0, 0)
    assert sorted(k for k in cmap if k is not None) == list(range(17))
    for i, colour in enumerate(palette):
        assert cmap[i + 1] == (*(colour / 255).tolist(), 1.0)

    # The report is the formula's, plus the entropy bound.
    n = 512 * 512
    report = summary["report"]
    expected = bit_report(n, 16).to_dict()
    assert {k: report[k] for k in expected if k != "entropy_bits"} == {
        k: v for k, v in expected.items() if k != "entropy_bits"
    }
    assert report["total_bits"] == 4 * n + 24 * 16
    assert 0 < report["entropy_bits"] <= report["index_bits"]
    assert summary["seed"] == 0 and summary["color_space"] == "rgb"
    assert summary["n_colors"] == summary["n_colors_requested"] == 16
    assert summary["psnr"] > 25

    features = lmeta["features"]
    assert list(features["index"]) == list(range(1, 17))
    assert list(features["cluster"]) == list(range(16))
    np.testing.assert_array_equal(features["pixels"], np.bincount(labels.ravel())[1:])
    assert features["share"].sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(
        np.stack([features["R"], features["G"], features["B"]], axis=1), palette
    )
    assert features["hex"][0] == "#{:02x}{:02x}{:02x}".format(*palette[0])
    np.testing.assert_array_equal(ihc, before)


def test_names_and_spatial_metadata_from_source_layer(ihc_crop):
    source = SimpleNamespace(
        name="slide",
        scale=(0.5, 0.25),
        translate=(10.0, -3.0),
        rotate=np.eye(2),
        shear=(0.0,),
        affine=SimpleNamespace(affine_matrix=np.eye(3)),
        units=("micrometer", "micrometer"),
        axis_labels=("y", "x"),
        unique_id="abc",
    )
    tuples = layer_data(ihc_crop, 6, source_layer=source, random_state=3, color_space="lab")
    names = [meta["name"] for _, meta, _ in tuples]
    assert names == ["slide K=6 reconstruction", "slide K=6 labels"]
    for _, meta, _ in tuples:
        assert meta["scale"] == (0.5, 0.25) and meta["translate"] == (10.0, -3.0)
        np.testing.assert_array_equal(meta["affine"], np.eye(3))
        assert meta["units"] == ("micrometer", "micrometer")
        assert meta["axis_labels"] == ("y", "x")
        summary = meta["metadata"][METADATA_KEY]
        assert summary["source"] == "slide" and summary["source_id"] == "abc"
        assert summary["seed"] == 3 and summary["color_space"] == "lab"


def test_source_layer_read_defensively(ihc_crop):
    class Awkward:
        name = "odd"

        @property
        def scale(self):
            raise RuntimeError("no scale here")

    tuples = layer_data(ihc_crop, 2, source_layer=Awkward())
    assert tuples[0][1]["name"] == "odd K=2 reconstruction"
    assert "scale" not in tuples[0][1]
    assert spatial_kwargs(None) == {}


@pytest.mark.parametrize(("k", "dtype"), [(1, np.uint8), (255, np.uint8), (256, np.uint16)])
def test_labels_dtype_holds_index_plus_one(k, dtype):
    assert label_dtype(k) == dtype


def test_labels_dtype_edges():
    assert label_dtype(65535) == np.uint16
    assert label_dtype(65536) == np.uint32


def test_k_300_gives_uint16_labels(ihc_crop):
    (recon, _, _), (labels, meta, _) = layer_data(ihc_crop, 300)
    assert labels.dtype == np.uint16 and labels.max() == 300
    palette = np.array(meta["metadata"][METADATA_KEY]["palette"], dtype=np.uint8)
    np.testing.assert_array_equal(recon, palette[labels - 1])
    assert len(meta["colormap"]) == 302


def test_k_256_label_256_does_not_wrap():
    # 256 distinct colours exactly: label 256 must not wrap to the background 0.
    image = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    (_, _, _), (labels, _, _) = layer_data(image, 256)
    assert labels.dtype == np.uint16
    assert labels.min() == 1 and labels.max() == 256


def test_single_channel_and_channel_axis(ihc_crop):
    grey = np.ascontiguousarray(ihc_crop[..., 0])
    (recon, rmeta, _), (labels, lmeta, _) = layer_data(grey, 4, channel_axis=None)
    assert recon.shape == grey.shape and rmeta["rgb"] is False
    palette = np.array(lmeta["metadata"][METADATA_KEY]["palette"]).reshape(-1)
    np.testing.assert_array_equal(recon, palette[labels - 1])
    colour = lmeta["colormap"][1]
    assert colour[0] == colour[1] == colour[2] == palette[0] / 255
    assert "value" in lmeta["features"]

    # Channel first: the reconstruction comes out colour-last, as napari shows RGB.
    planar = np.moveaxis(ihc_crop, -1, 0).copy()
    (recon2, rmeta2, _), (labels2, _, _) = layer_data(planar, 4, channel_axis=0)
    assert recon2.shape == ihc_crop.shape and rmeta2["rgb"] is True
    assert labels2.shape == ihc_crop.shape[:2]


def test_rgba_alpha_kept(ihc_crop):
    alpha = np.linspace(0, 255, ihc_crop.shape[0] * ihc_crop.shape[1]).astype(np.uint8)
    rgba = np.dstack([ihc_crop, alpha.reshape(ihc_crop.shape[:2])])
    (recon, rmeta, _), (labels, lmeta, _) = layer_data(rgba, 5)
    assert recon.shape == rgba.shape and rmeta["rgb"] is True
    np.testing.assert_array_equal(recon[..., 3], rgba[..., 3])
    palette = np.array(lmeta["metadata"][METADATA_KEY]["palette"], dtype=np.uint8)
    np.testing.assert_array_equal(recon[..., :3], palette[labels - 1])
    assert lmeta["colormap"][1][3] == 1.0  # an ignored alpha does not dim the labels


def test_float_and_uint16_colours():
    palette16 = np.array([[0, 65535, 32768]], dtype=np.uint16)
    np.testing.assert_allclose(palette_rgba(palette16)[0], [0, 1, 32768 / 65535, 1])
    palettef = np.array([[0.25, 1.5, -0.1]])
    np.testing.assert_allclose(palette_rgba(palettef)[0], [0.25, 1.0, 0.0, 1.0])
    two = np.array([[10, 30]], dtype=np.uint8)
    np.testing.assert_allclose(palette_rgba(two)[0], [20 / 255, 20 / 255, 20 / 255, 1])


def test_coded_layer_data_from_labels_and_palette():
    # What a file reader has: indices and a palette, no Quantization.
    labels = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    (recon, rmeta, _), (coded, lmeta, _) = coded_layer_data(
        labels, palette, name="file", metadata={"source": "file.kvq"}
    )
    np.testing.assert_array_equal(recon, palette[labels])
    np.testing.assert_array_equal(coded, labels + 1)
    assert rmeta["name"] == "file K=3 reconstruction"
    assert list(lmeta["features"]["pixels"]) == [1, 2, 1]
    assert lmeta["features"]["hex"].tolist() == ["#ff0000", "#00ff00", "#0000ff"]
    assert lmeta["metadata"][METADATA_KEY]["source"] == "file.kvq"
    assert lmeta["metadata"][METADATA_KEY]["palette"] == palette.tolist()
    with pytest.raises(TypeError, match="labels"):
        coded_layer_data(labels.astype(float), palette)
    with pytest.raises(ValueError, match="palette"):
        coded_layer_data(labels, np.zeros((0, 3), np.uint8))
    with pytest.raises(ValueError, match="counts"):
        cluster_features(palette, [1, 2])


def test_quantization_layer_data_matches_layer_data(ihc_crop):
    q = quantize(ihc_crop, 7, random_state=5)
    direct = quantization_layer_data(q)
    via = layer_data(ihc_crop, 7, random_state=5)
    for (a, ma, ka), (b, mb, kb) in zip(direct, via, strict=True):
        np.testing.assert_array_equal(a, b)
        assert ka == kb and ma["name"] == mb["name"]
        assert ma["metadata"][METADATA_KEY]["palette"] == mb["metadata"][METADATA_KEY]["palette"]


def test_bad_input_raises_from_the_engine(ihc_crop):
    with pytest.raises(ValueError, match="n_colors"):
        layer_data(ihc_crop, 0)
    with pytest.raises(ValueError, match="n_colors"):
        layer_data(ihc_crop, 70000)


def test_parse_k_list():
    assert parse_k_list("2, 3, 6, 16") == [2, 3, 6, 16]
    assert parse_k_list("4 4,8;2") == [4, 8, 2]
    assert parse_k_list([3, 5]) == [3, 5]
    for bad, match in [("", "at least one"), ("2, x", "whole number"), ("0", "range")]:
        with pytest.raises(ValueError, match=match):
            parse_k_list(bad)
    with pytest.raises(ValueError, match="range"):
        parse_k_list("65537")


def test_sweep_layer_data(ihc_crop):
    layers, rows = sweep_layer_data(ihc_crop, "2, 3, 6", source_layer=SimpleNamespace(name="s"))
    assert [meta["name"] for _, meta, _ in layers] == [f"s K={k} sweep" for k in (2, 3, 6)]
    assert all(kind == "image" for _, _, kind in layers)
    assert {meta["metadata"][METADATA_KEY]["role"] for _, meta, _ in layers} == {"sweep"}
    n = ihc_crop.shape[0] * ihc_crop.shape[1]
    for row, (data, _, _) in zip(rows, layers, strict=True):
        assert row["total_bits"] == bit_report(n, row["K"]).total_bits
        assert len(np.unique(data.reshape(-1, 3), axis=0)) == row["K"]
    assert rows[0]["J"] > rows[1]["J"] > rows[2]["J"]


def test_label_colormap_is_accepted_by_napari(ihc_crop):
    """napari turns the meta into a direct colormap with exactly the palette colours."""
    napari_layers = pytest.importorskip("napari.layers")
    (recon, rmeta, rkind), (labels, lmeta, lkind) = layer_data(ihc_crop, 5)
    image_layer = napari_layers.Layer.create(recon, rmeta, rkind)
    labels_layer = napari_layers.Layer.create(labels, lmeta, lkind)
    assert image_layer.rgb and labels_layer.data.dtype == np.uint8
    palette = np.array(lmeta["metadata"][METADATA_KEY]["palette"], dtype=np.uint8)
    colours = labels_layer.colormap.map(np.arange(0, 6, dtype=np.uint8))
    assert colours[0, 3] == 0  # background transparent
    np.testing.assert_allclose(colours[1:, :3], palette / 255, atol=1e-7)
    assert list(labels_layer.features["index"]) == [1, 2, 3, 4, 5]
    assert type(labels_layer.colormap).__name__ == "DirectLabelColormap"
    cmap = label_colormap(palette)
    assert len(cmap) == 7


def test_layers_module_never_imports_napari_or_qt():
    code = (
        "import sys, numpy as np\n"
        "from napari_kmeans_vq.napari import layers\n"
        "layers.layer_data(np.zeros((4, 4, 3), np.uint8) + 7, 1)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy', 'magicgui')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _counting_callback():
    """A dask callback counting tasks run: zero means nothing was computed."""
    from dask.callbacks import Callback

    ran = []
    return Callback(pretask=lambda key, dsk, state: ran.append(key)), ran


def test_lazy_multiscale_quantization_layer_data(ihc):
    da = pytest.importorskip("dask.array")
    top = np.concatenate([ihc, ihc[:, ::-1]], axis=1)
    full = np.ascontiguousarray(np.concatenate([top, top[::-1]], axis=0))  # 1024 x 1024
    levels = [da.from_array(full[:: 2**i, :: 2**i], chunks=(256, 256, 3)) for i in range(3)]
    q = quantize(levels, 8)
    assert q.multiscale

    callback, ran = _counting_callback()
    with callback:
        (recon, rmeta, rkind), (labels, lmeta, lkind) = quantization_layer_data(q)
    assert ran == []  # nothing computed: the levels stay lazy
    assert (rkind, lkind) == ("image", "labels")
    assert rmeta["multiscale"] is True and lmeta["multiscale"] is True and rmeta["rgb"]
    assert all(isinstance(lv, da.Array) for lv in [*recon, *labels])
    assert [lv.shape for lv in labels] == [lv.shape[:2] for lv in levels]
    assert all(lv.dtype == label_dtype(8) for lv in labels)

    eager = quantize(full, 8)
    np.testing.assert_array_equal(labels[0].compute() - 1, eager.labels)
    np.testing.assert_array_equal(recon[0].compute(), eager.reconstruction)
    for i in (1, 2):
        np.testing.assert_array_equal(
            labels[i].compute() - 1, eager.codebook.encode(np.asarray(levels[i]))
        )
    summary = lmeta["metadata"][METADATA_KEY]
    np.testing.assert_array_equal(np.array(summary["palette"], np.uint8), eager.palette)
    np.testing.assert_array_equal(lmeta["features"]["pixels"], eager.cluster_sizes)
    assert lmeta["colormap"] == label_colormap(eager.palette)
    assert summary["info"]["n_levels"] == 3
    assert summary["report"]["total_bits"] == eager.report.total_bits


def test_lazy_single_array_and_k_300_labels():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    (_, rmeta, _), (labels, lmeta, _) = layer_data(da.from_array(image, chunks=32), 300)
    assert isinstance(labels, da.Array) and "multiscale" not in lmeta
    assert "multiscale" not in rmeta
    assert labels.dtype == np.uint16
    eager = quantize(image, 300)
    np.testing.assert_array_equal(labels.compute() - 1, eager.labels)
    assert int(labels.max().compute()) == 300


def test_lazy_scalar_multiscale_gets_contrast_limits(ihc):
    da = pytest.importorskip("dask.array")
    # Float pixels: no fixed full scale, so the limits come from the palette, not the data.
    grey = ihc[..., 0] / 255.0
    levels = [da.from_array(grey), da.from_array(grey[::2, ::2])]
    q = quantize(levels, 4, channel_axis=None)
    (recon, rmeta, _), (labels, _, _) = quantization_layer_data(q, channel_axis=None)
    assert rmeta["rgb"] is False and recon[0].shape == grey.shape
    palette = q.palette.reshape(-1)
    assert rmeta["contrast_limits"] == (float(palette.min()), float(palette.max()))
    np.testing.assert_array_equal(recon[0].compute(), palette[labels[0].compute() - 1])


def test_masked_pixels_are_napari_background(ihc_crop):
    mask = np.zeros(ihc_crop.shape[:2], dtype=bool)
    mask[10:50, 20:90] = True
    q = quantize(ihc_crop, 3, mask=mask)
    (_, _, _), (labels, _, kind) = quantization_layer_data(q)
    assert kind == "labels"
    assert (labels[~mask] == 0).all() and (labels[mask] >= 1).all()
    assert np.array_equal(labels[mask] - 1, q.labels[mask])


# -- classes: names, areas, merges -----------------------------------------------------------


def test_names_reach_features_and_metadata(ihc_crop):
    q = quantize(ihc_crop, 3)
    (_, rmeta, _), (_, lmeta, _) = quantization_layer_data(q, names=["nuclei", None, "stroma"])
    assert list(lmeta["features"]["name"]) == ["nuclei", "class 2", "stroma"]
    for meta in (rmeta, lmeta):
        summary = meta["metadata"][METADATA_KEY]
        assert summary["names"] == ["nuclei", "class 2", "stroma"]
        assert [row["name"] for row in summary["classes"]] == summary["names"]
        assert [row["pixels"] for row in summary["classes"]] == q.cluster_sizes.tolist()
    # Default names, and the reader's path (labels and palette only) has them too.
    (_, _, _), (_, meta, _) = coded_layer_data(q.labels, q.palette)
    assert meta["metadata"][METADATA_KEY]["names"] == default_names(3)
    assert list(cluster_features(q.palette, q.cluster_sizes)["name"]) == default_names(3)
    with pytest.raises(ValueError, match="names"):
        quantization_layer_data(q, names=["a", "b"])


def test_pixel_size_from_scale_and_units():
    size = pixel_size(SimpleNamespace(scale=(0.5, 0.25), units=("micrometer", "micrometer")))
    assert size == PixelSize((0.5, 0.25), "um", "µm")
    # The column axis converted to the row axis' unit.
    mixed = pixel_size(SimpleNamespace(scale=(1.0, 0.5, 250.0), units=("s", "um", "nm")))
    assert mixed.unit == "um" and mixed.sides == pytest.approx((0.5, 0.25))
    # napari's default unit (pixel), no units, or nonsense: no physical size.
    assert pixel_size(SimpleNamespace(scale=(2.0, 2.0), units=("pixel", "pixel"))) is None
    assert pixel_size(SimpleNamespace(scale=(2.0, 2.0))) is None
    assert pixel_size(SimpleNamespace(scale=(0.0, 1.0), units=("um", "um"))) is None
    assert pixel_size(SimpleNamespace(scale=(1.0, 1.0), units=("banana", "um"))) is None
    assert pixel_size(None) is None


def test_class_table_areas_from_the_source_layer(ihc_crop):
    q = quantize(ihc_crop, 4, color_space="hdab")
    source = SimpleNamespace(name="tile", scale=(0.5, 0.25), units=("micrometer",) * 2)
    table = class_table_for(q, names=["a", "b", "c", "d"], source_layer=source)
    assert "area_um2" in table.columns and "mean_DAB" in table.columns
    assert table.column("area_um2") == pytest.approx(list(q.cluster_sizes * 0.125))
    header, rows = class_table_view(table)
    assert header[:4] == ["class", "name", "share", "area (µm²)"]
    assert header[4:] == ["hematoxylin", "DAB", "residual"]
    assert rows[0][:2] == ["1", "a"] and rows[0][2].endswith("%")
    assert rows[0][3] == f"{q.cluster_sizes[0] * 0.125:,.1f}"
    # Without a physical pixel size the area is the pixel count.
    header, rows = class_table_view(class_table_for(quantize(ihc_crop, 2)))
    assert header == ["class", "name", "share", "area (pixels)"]
    assert rows[1][3] == f"{quantize(ihc_crop, 2).cluster_sizes[1]:,}"


def test_lazy_class_table_scales_a_coarse_fit(ihc):
    da = pytest.importorskip("dask.array")
    levels = [da.from_array(ihc[:: 2**i, :: 2**i], chunks=(128, 128, 3)) for i in range(2)]
    lazy = quantize(levels, 3, fit_level=1)
    table = class_table_for(lazy)
    assert sum(table.column("pixels")) == pytest.approx(512 * 512, abs=3)
    assert table.column("share") == pytest.approx(
        list(lazy.cluster_sizes / lazy.cluster_sizes.sum()), abs=1e-4
    )
    with pytest.raises(ValueError, match="in memory"):
        merge_classes(lazy, [1, 2], ihc)


def _direct_j(image, q):
    inside = np.ones(q.labels.shape, bool) if q.mask is None else q.mask
    diff = image[inside].astype(float) - q.reconstruction[inside].astype(float)
    return (diff**2).sum(axis=1).mean()


def test_merge_classes_weighted_colour_and_exact_j(ihc_crop):
    mask = np.zeros(ihc_crop.shape[:2], dtype=bool)
    mask[5:90, 10:120] = True
    q = quantize(ihc_crop, 5, color_space="hdab", mask=mask)
    merged = merge_classes(q, [4, 2], ihc_crop)
    assert merged.n_colors == 4 and merged.info["merges"] == [[2, 4]]
    sizes = q.cluster_sizes
    # Class 2 is the union, class 3 stays, old class 5 is now 4.
    assert merged.cluster_sizes.tolist() == [sizes[0], sizes[1] + sizes[3], sizes[2], sizes[4]]
    weights = sizes[[1, 3]] / sizes[[1, 3]].sum()
    np.testing.assert_array_equal(
        merged.palette[1], np.rint(weights @ q.palette[[1, 3]].astype(float)).astype(np.uint8)
    )
    np.testing.assert_allclose(merged.centroids[1], weights @ q.centroids[[1, 3]])
    np.testing.assert_array_equal(merged.palette[[0, 2, 3]], q.palette[[0, 2, 4]])
    lut = np.array([0, 1, 2, 1, 3])
    np.testing.assert_array_equal(merged.labels[mask], lut[q.labels[mask]])
    assert (merged.labels[~mask] == 0).all()
    # The reconstruction: the palette inside the mask, the image outside; J measured again.
    np.testing.assert_array_equal(merged.reconstruction[mask], merged.palette[merged.labels[mask]])
    np.testing.assert_array_equal(merged.reconstruction[~mask], ihc_crop[~mask])
    assert merged.distortion == pytest.approx(_direct_j(ihc_crop, merged), rel=1e-12)
    assert merged.distortion > q.distortion
    assert merged.report.n_colors == 4 and merged.report.n_pixels == int(mask.sum())
    table = merged.class_table()
    assert table.column("pixels") == merged.cluster_sizes.tolist()
    assert q.n_colors == 5 and q.labels.max() == 4  # the input is left as it was


def test_merge_classes_scalar_image_and_refusals(ihc_crop):
    grey = np.ascontiguousarray(ihc_crop[..., 1])
    q = quantize(grey, 4, channel_axis=None)
    merged = merge_classes(q, [1, 2, 3, 4], grey, channel_axis=None)
    assert merged.n_colors == 1 and (merged.labels == 0).all()
    assert merged.reconstruction.shape == grey.shape
    np.testing.assert_array_equal(merged.reconstruction, merged.palette[0, 0])
    assert merged.distortion == pytest.approx(grey.astype(float).var(), rel=1e-3)
    for bad, match in (([2], "at least two"), ([0, 1], "1 to 4"), ([3, 5], "1 to 4")):
        with pytest.raises(ValueError, match=match):
            merge_classes(q, bad, grey, channel_axis=None)
    with pytest.raises(TypeError, match="labels"):
        merge_classes(q, ["a", "b"], grey, channel_axis=None)
    with pytest.raises(ValueError, match="image"):
        merge_classes(q, [1, 2], grey[:10], channel_axis=None)


def test_merge_names():
    names = [None, "nuclei", None, "stroma"]
    assert merge_names(names, [3, 4]) == [None, "nuclei", "stroma"]
    assert merge_names(names, [4, 2]) == [None, "nuclei", None]
    assert merge_names(names, [1, 3]) == [None, "nuclei", "stroma"]
