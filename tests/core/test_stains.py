"""Stain-aware clustering, tissue masks, class tables and spatial clean-up, on real stains."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, quantize
from napari_kmeans_vq.core.colorspace import (
    optical_density,
    rgb_to_oklab,
    stain_amounts,
    stain_matrix,
    stain_space,
)
from napari_kmeans_vq.core.regions import merge_small_regions, regions
from napari_kmeans_vq.core.tissue import tissue_mask
from napari_kmeans_vq.io.samples import stain_patches

skimage_color = pytest.importorskip("skimage.color")
filters = pytest.importorskip("skimage.filters")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def otsu_mask(channel: np.ndarray) -> np.ndarray:
    return channel > filters.threshold_otsu(channel)


def test_hdab_classes_match_the_dab_and_hematoxylin_channels(ihc):
    """IHC at K = 3 in H-DAB: the DAB class and the hematoxylin class agree with Otsu
    thresholds of scikit-image's colour deconvolution (rgb2hed)."""
    hed = skimage_color.rgb2hed(ihc)
    q = quantize(ihc, 3, color_space="hdab")
    table = q.class_table()
    dab_class = int(np.argmax(table.column("mean_DAB")))
    nuclei_class = int(np.argmax(table.column("mean_hematoxylin")))
    assert dab_class != nuclei_class
    assert dice(q.labels == dab_class, otsu_mask(hed[..., 2])) >= 0.8
    assert dice(q.labels == nuclei_class, otsu_mask(hed[..., 0])) >= 0.7
    # The codebook encodes new pixels in the same (scaled) stain space.
    assert np.array_equal(q.codebook.encode(ihc), q.labels)


def test_hed_nuclei_class_on_a_generated_he_image():
    """stain_patches follows Beer-Lambert with Ruifrok and Johnston's H&E vectors."""
    image = stain_patches(256)
    hed = skimage_color.rgb2hed(image)
    q = quantize(image, 4, color_space="hed")
    nuclei = int(np.argmax(q.class_table().column("mean_hematoxylin")))
    assert dice(q.labels == nuclei, otsu_mask(hed[..., 0])) >= 0.7


def test_stain_amounts_follow_scikit_image(ihc):
    ours = stain_amounts(ihc.reshape(-1, 3), stain_space("hdab")[0], 255)
    theirs = skimage_color.rgb2hed(ihc).reshape(-1, 3)
    # Same stains, other scaling and clipping: the amounts rise and fall together.
    assert np.corrcoef(ours[:, 0], theirs[:, 0])[0, 1] > 0.9
    assert np.corrcoef(ours[:, 1], theirs[:, 2])[0, 1] > 0.99


def test_colour_space_formulas():
    assert np.allclose(rgb_to_oklab(np.array([1.0, 1.0, 1.0])), [1, 0, 0], atol=1e-6)
    assert np.allclose(optical_density(np.array([255.0, 25.5]), 255), [0, 1])
    m = stain_matrix([[1, 0, 0], [0, 2, 0]])
    assert np.allclose(m, np.eye(3))
    # Beer-Lambert: two stains mixed give back their amounts.
    he = stain_space("hed")[0]
    rgb = 255 * 10 ** -(np.array([0.3, 0.5, 0.0]) @ he)
    assert np.allclose(stain_amounts(rgb, he, 255), [0.3, 0.5, 0.0], atol=1e-9)


@pytest.mark.parametrize("space", ["lab", "oklab", "od", "hed", "hdab"])
def test_every_space_keeps_the_palette_in_rgb(ihc_crop, space):
    q = quantize(ihc_crop, 6, color_space=space)
    assert q.palette.dtype == np.uint8 and q.palette.shape == (6, 3)
    assert np.array_equal(q.reconstruction, q.palette[q.labels])
    err = ((ihc_crop.astype(float) - q.reconstruction) ** 2).sum(-1).mean()
    assert q.distortion == pytest.approx(err)


def test_custom_stain_vectors_and_bad_ones(ihc_crop):
    q = quantize(
        ihc_crop, 3, color_space="stains", stain_vectors=[[0.65, 0.7, 0.29], [0.27, 0.57, 0.78]]
    )
    assert "mean_stain 1" in q.class_table().columns
    for vectors, match in [
        ([[1, 1, 1], [2, 2, 2]], "singular"),
        ([[1, 1]], "2 or 3"),
        ([[0, 0, 0], [1, 0, 0]], "zero"),
        ([[-1, 0, 0], [0, 1, 0]], "non-negative"),
    ]:
        with pytest.raises(ValueError, match=match):
            quantize(ihc_crop, 3, color_space="stains", stain_vectors=vectors)
    with pytest.raises(ValueError, match="needs stain_vectors"):
        quantize(ihc_crop, 3, color_space="stains")
    with pytest.raises(ValueError, match="stain_vectors are for the stain spaces"):
        quantize(ihc_crop, 3, stain_vectors=[[1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="needs RGB"):
        quantize(ihc_crop[..., 0], 3, color_space="hed", channel_axis=None)


def test_mask_fits_and_reports_only_the_tissue(ihc):
    mask = tissue_mask(ihc)
    assert 0.5 < mask.mean() < 0.99  # glass between the glands is left out
    q = quantize(ihc, 4, mask=mask)
    alone = quantize(ihc[mask][:, np.newaxis, :], 4)
    assert np.array_equal(q.palette, alone.palette)
    assert np.array_equal(q.labels[mask], alone.labels[:, 0])
    assert (q.labels[~mask] == 0).all()
    assert np.array_equal(q.reconstruction[~mask], ihc[~mask])  # untouched outside
    assert q.report.n_pixels == int(mask.sum())
    assert q.distortion == pytest.approx(alone.distortion)
    assert int(q.cluster_sizes.sum()) == int(mask.sum())
    assert q.class_table().column("share") == pytest.approx(list(q.cluster_sizes / mask.sum()))
    cb = Codebook(4).fit(ihc, mask=mask)
    assert np.array_equal(cb.palette_, q.palette)


def test_bad_masks_are_refused_clearly(ihc_crop):
    with pytest.raises(ValueError, match="shape"):
        quantize(ihc_crop, 3, mask=np.ones((5, 5), dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        quantize(ihc_crop, 3, mask=np.ones(ihc_crop.shape[:2], dtype=np.uint8))
    with pytest.raises(ValueError, match="no pixels"):
        quantize(ihc_crop, 3, mask=np.zeros(ihc_crop.shape[:2], dtype=bool))
    with pytest.raises(ValueError, match="threshold"):
        tissue_mask(ihc_crop, threshold=-1.0)
    with pytest.raises(ValueError, match="RGB"):
        tissue_mask(ihc_crop[..., :2])


def test_class_table_areas_from_the_pixel_size(ihc, tmp_path):
    q = quantize(ihc, 4)
    table = q.class_table(["a", "b", "c", "d"], pixel_size=0.5, unit="um")
    assert table.column("name") == ["a", "b", "c", "d"]
    assert table.column("label") == [1, 2, 3, 4]
    assert table.column("area_um2") == pytest.approx(list(q.cluster_sizes * 0.25))
    assert sum(table.column("share")) == pytest.approx(1.0)
    assert table.column("color")[0] == "#{:02x}{:02x}{:02x}".format(*q.palette[0])
    text = table.to_csv(tmp_path / "classes.csv")
    assert (tmp_path / "classes.csv").read_text() == text
    assert text.splitlines()[0] == "label,name,color,pixels,share,area_um2"
    rectangular = q.class_table(pixel_size=(0.5, 2.0))
    assert rectangular.column("area_um2") == pytest.approx(list(q.cluster_sizes * 1.0))
    with pytest.raises(ValueError, match="names"):
        q.class_table(["just one"])
    with pytest.raises(ValueError, match="pixel_size"):
        q.class_table(pixel_size=0)


def test_min_region_removes_speckle_and_reports_the_labels_made(ihc):
    raw = quantize(ihc, 4, color_space="lab")
    clean = quantize(ihc, 4, color_space="lab", min_region=30)
    numbered, count = regions(clean.labels)
    assert np.bincount(numbered.ravel())[1:].min() >= 30
    assert count < regions(raw.labels)[1] / 4
    assert np.array_equal(clean.palette, raw.palette)
    assert np.array_equal(clean.reconstruction, clean.palette[clean.labels])
    err = ((ihc.astype(float) - clean.reconstruction) ** 2).sum(-1).mean()
    assert clean.distortion == pytest.approx(err) and clean.distortion > raw.distortion
    assert np.array_equal(clean.cluster_sizes, np.bincount(clean.labels.ravel(), minlength=4))


def test_merge_small_regions_by_majority_and_within_a_mask():
    labels = np.zeros((6, 6), dtype=np.uint8)
    labels[2, 2] = 1  # an island in 0
    labels[0:2, 4:6] = 3  # a corner block of 4 pixels
    out = merge_small_regions(labels, 3)
    assert out[2, 2] == 0 and (out[0:2, 4:6] == 3).all()
    mask = np.ones(labels.shape, dtype=bool)
    mask[2, 2] = False
    assert merge_small_regions(labels, 3, mask=mask)[2, 2] == 1  # outside: untouched
    assert np.array_equal(merge_small_regions(labels, 0), labels)
    with pytest.raises(ValueError, match="min_size"):
        merge_small_regions(labels, -1)
