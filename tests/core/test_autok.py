"""n_colors="auto": the K chosen meets the target and K - 1 does not."""

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, quantize
from napari_kmeans_vq.core.autok import DEFAULT_K_MAX, choose_k
from napari_kmeans_vq.core.tissue import tissue_mask
from napari_kmeans_vq.io.samples import ihc_image, stain_patches


@pytest.fixture(scope="module")
def ihc():
    return ihc_image()


@pytest.fixture(scope="module")
def patches():
    return stain_patches(256)


def test_auto_psnr_on_the_ihc_sample(ihc):
    q = quantize(ihc, "auto", target_psnr=30)
    k = q.n_colors
    assert q.psnr >= 30
    assert quantize(ihc, k - 1).psnr < 30
    # The result is the fit of that K, encoded from the search's histogram.
    direct = quantize(ihc, k)
    np.testing.assert_array_equal(q.labels, direct.labels)
    np.testing.assert_array_equal(q.palette, direct.palette)
    assert q.distortion == direct.distortion and q.report == direct.report
    auto = q.info["auto"]
    assert auto["target"] == {"psnr": 30.0} and auto["k_max"] == DEFAULT_K_MAX
    assert auto["n_colors"] == k and {k - 1, k} <= set(auto["tried"])
    assert q.info["n_colors_requested"] == "auto"
    by_k = {t["n_colors"]: t for t in auto["trials"]}
    assert by_k[k]["meets"] and not by_k[k - 1]["meets"]
    assert by_k[k]["psnr"] == pytest.approx(q.psnr)


def test_auto_j_on_the_stain_patches(patches):
    # A target that K = 8 meets: the answer is at most 8.
    target = quantize(patches, 8).distortion
    k, search = choose_k(patches, target_j=target)
    assert 1 <= k <= 8
    assert quantize(patches, k).distortion <= target
    if k > 1:
        assert quantize(patches, k - 1).distortion > target
    assert search.codebook.n_colors_ == k
    np.testing.assert_array_equal(search.codebook.palette_, Codebook(k).fit(patches).palette_)
    curve = search.curve
    assert [t.n_colors for t in curve] == sorted(search.tried)
    bits = [t.bits_per_pixel for t in curve]
    assert bits == sorted(bits)


def test_auto_in_a_stain_space_with_a_tissue_mask(ihc):
    mask = tissue_mask(ihc)
    q = quantize(ihc, "auto", target_psnr=28, color_space="hdab", mask=mask)
    k = q.n_colors
    assert q.psnr >= 28
    assert (q.labels[~mask] == 0).all()
    if k > 1:
        assert quantize(ihc, k - 1, color_space="hdab", mask=mask).psnr < 28


def test_lossless_target_gives_the_distinct_colours():
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    image = palette[np.random.default_rng(0).integers(0, 5, size=(40, 30))]
    q = quantize(image, "auto", target_j=0)
    assert q.n_colors == 5 and q.distortion == 0
    np.testing.assert_array_equal(q.reconstruction, image)


def test_progress_reports_the_search_and_can_stop_it(patches):
    seen = []
    choose_k(patches, target_psnr=25, progress=lambda stage, f: seen.append((stage, f)))
    assert seen and {s for s, _ in seen} == {"search"}
    assert all(0 <= f <= 1 for _, f in seen)

    class Stop(Exception):
        pass

    def stop(stage, fraction):
        raise Stop

    with pytest.raises(Stop):
        choose_k(patches, target_psnr=25, progress=stop)


def test_errors_name_the_parameter(patches):
    with pytest.raises(ValueError, match="not both"):
        quantize(patches, "auto", target_psnr=30, target_j=10)
    with pytest.raises(ValueError, match="not neither"):
        quantize(patches, "auto")
    with pytest.raises(ValueError, match="k_max=2"):
        quantize(patches, "auto", target_psnr=45, k_max=2)
    with pytest.raises(ValueError, match="target_j must be >= 0"):
        choose_k(patches, target_j=-1)
    with pytest.raises(ValueError, match="target_psnr must be a finite number"):
        choose_k(patches, target_psnr=float("nan"))
    with pytest.raises(ValueError, match="k_max must be from 1"):
        choose_k(patches, target_psnr=30, k_max=0)
    with pytest.raises(ValueError, match="are for n_colors='auto'"):
        quantize(patches, 8, target_psnr=30)
    with pytest.raises(TypeError, match="n_colors must be an integer"):
        quantize(patches, "many")
