"""quantize(image, codebook=...): a fitted codebook applied without refitting."""

import math

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, quantize
from napari_kmeans_vq.io.samples import stain_patches


def measured_j(image, reconstruction, where=None):
    diff = image.astype(np.float64) - reconstruction.astype(np.float64)
    err = (diff**2).sum(axis=-1)
    return float(err.mean() if where is None else err[where].mean())


@pytest.fixture(scope="module")
def patches():
    return stain_patches(192, seed=3)


@pytest.mark.parametrize("space", ["rgb", "lab", "hed"])
def test_applying_the_fitted_codebook_gives_the_fit_result(ihc, space):
    fitted = quantize(ihc, 12, color_space=space)
    applied = quantize(ihc, codebook=fitted.codebook)
    np.testing.assert_array_equal(applied.labels, fitted.labels)
    np.testing.assert_array_equal(applied.reconstruction, fitted.reconstruction)
    np.testing.assert_array_equal(applied.palette, fitted.palette)
    np.testing.assert_array_equal(applied.cluster_sizes, fitted.cluster_sizes)
    assert applied.distortion == pytest.approx(fitted.distortion, rel=1e-12)
    assert applied.psnr == pytest.approx(fitted.psnr, rel=1e-12)
    assert applied.report == fitted.report
    assert applied.n_colors == fitted.n_colors
    assert applied.codebook is fitted.codebook
    assert applied.info["codebook"] == "applied"
    assert applied.info["color_space"] == space


def test_a_codebook_applied_to_another_image_encodes_and_measures_it(ihc, patches):
    cb = Codebook(8).fit(ihc)
    before = cb.palette_.copy(), cb.cluster_sizes_.copy()
    q = quantize(patches, codebook=cb)
    np.testing.assert_array_equal(q.labels, cb.encode(patches))
    np.testing.assert_array_equal(q.reconstruction, cb.palette_[q.labels])
    assert q.distortion == pytest.approx(measured_j(patches, q.reconstruction), rel=1e-12)
    assert q.psnr == pytest.approx(10 * math.log10(255**2 / (q.distortion / 3)))
    np.testing.assert_array_equal(q.cluster_sizes, np.bincount(q.labels.ravel(), minlength=8))
    table = q.class_table()
    assert [row["pixels"] for row in table.rows] == q.cluster_sizes.tolist()
    # The codebook itself is not refitted.
    np.testing.assert_array_equal(cb.palette_, before[0])
    np.testing.assert_array_equal(cb.cluster_sizes_, before[1])


def test_n_colors_equal_to_the_codebook_is_accepted(ihc_crop):
    cb = Codebook(5).fit(ihc_crop)
    q = quantize(ihc_crop, 5, codebook=cb)
    assert q.n_colors == 5


def test_mask_and_min_region_with_a_codebook(patches):
    cb = Codebook(6).fit(patches)
    mask = np.zeros(patches.shape[:2], dtype=bool)
    mask[20:150, 30:170] = True
    q = quantize(patches, codebook=cb, mask=mask)
    assert (q.labels[~mask] == 0).all()
    np.testing.assert_array_equal(q.reconstruction[~mask], patches[~mask])
    np.testing.assert_array_equal(q.labels[mask], cb.encode(patches)[mask])
    assert q.distortion == pytest.approx(measured_j(patches, q.reconstruction, mask), rel=1e-12)
    assert q.cluster_sizes.sum() == mask.sum()
    cleaned = quantize(patches, codebook=cb, min_region=30)
    np.testing.assert_array_equal(cleaned.reconstruction, cb.palette_[cleaned.labels])
    assert cleaned.distortion == pytest.approx(
        measured_j(patches, cleaned.reconstruction), rel=1e-12
    )
    np.testing.assert_array_equal(
        cleaned.cluster_sizes, np.bincount(cleaned.labels.ravel(), minlength=6)
    )


def test_rgba_alpha_is_kept_and_a_grey_codebook_applies_to_grey_images(ihc_crop):
    alpha = np.arange(ihc_crop.shape[0] * ihc_crop.shape[1], dtype=np.uint8)
    rgba = np.dstack([ihc_crop, alpha.reshape(ihc_crop.shape[:2])])
    cb = Codebook(4).fit(ihc_crop)
    q = quantize(rgba, codebook=cb)
    np.testing.assert_array_equal(q.reconstruction[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(q.labels, cb.encode(ihc_crop))
    grey = ihc_crop[..., 1]
    gcb = Codebook(3, channel_axis=None).fit(grey)
    g = quantize(grey, codebook=gcb, channel_axis=None)
    assert g.reconstruction.shape == grey.shape
    np.testing.assert_array_equal(g.labels, gcb.encode(grey))
    # The call says how this image is laid out: an RGB image is refused, not read as grey.
    with pytest.raises(ValueError, match="3 colour channel"):
        quantize(ihc_crop, codebook=gcb)


def test_float_images_and_palette_codebooks(ihc_crop):
    image = ihc_crop.astype(np.float32) / 255
    cb = Codebook(4).fit(image)
    q = quantize(image, codebook=cb)
    np.testing.assert_array_equal(q.labels, cb.encode(image))
    assert q.distortion == pytest.approx(measured_j(image, q.reconstruction), rel=1e-6)
    palette = np.array([[255, 255, 255], [120, 60, 30], [60, 60, 160]], dtype=np.uint8)
    user = Codebook.from_palette(palette)
    p = quantize(ihc_crop, codebook=user)
    np.testing.assert_array_equal(p.labels, user.encode(ihc_crop))
    used = {tuple(c) for c in np.unique(p.reconstruction.reshape(-1, 3), axis=0).tolist()}
    assert used <= {tuple(c) for c in palette.tolist()}


def test_errors_name_what_is_wrong(ihc_crop):
    cb = Codebook(4).fit(ihc_crop)
    with pytest.raises(ValueError, match="n_colors=5 but the codebook has 4"):
        quantize(ihc_crop, 5, codebook=cb)
    with pytest.raises(ValueError, match="not fitted"):
        quantize(ihc_crop, codebook=Codebook(4))
    with pytest.raises(ValueError, match="1 colour channel"):
        quantize(ihc_crop[..., :1], codebook=cb)
    with pytest.raises(ValueError, match="uint16"):
        quantize(ihc_crop.astype(np.uint16), codebook=cb)
    with pytest.raises(ValueError, match="color_space='lab' cannot change"):
        quantize(ihc_crop, codebook=cb, color_space="lab")
    with pytest.raises(ValueError, match="n_colors is required"):
        quantize(ihc_crop)
    with pytest.raises(TypeError, match="codebook must be a Codebook"):
        quantize(ihc_crop, codebook=cb.palette_)
    # The codebook's own values are accepted when repeated.
    assert quantize(ihc_crop, codebook=cb, color_space="rgb", random_state=0).n_colors == 4
