import math

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, FewColorsWarning, quantize
from napari_kmeans_vq.core.histogram import ColorHistogram
from napari_kmeans_vq.core.kmeans import weighted_kmeans


def measured_j(image, reconstruction):
    diff = image.astype(np.float64) - reconstruction.astype(np.float64)
    return float((diff**2).sum(axis=-1).mean())


def test_seed_example_through_quantize():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
    q = quantize(image, 16)
    assert q.report.total_bits == 40_384
    assert round(q.report.ratio, 3) == 0.168
    assert q.report.original_bits == 240_000


@pytest.mark.parametrize("k", [1, 2, 6, 16, 64])
def test_reconstruction_and_reported_quality(ihc, k):
    q = quantize(ihc, k)
    assert q.labels.shape == ihc.shape[:2]
    assert q.labels.dtype == np.uint8
    assert q.palette.shape == (k, 3) and q.palette.dtype == np.uint8
    assert q.labels.max() < k
    np.testing.assert_array_equal(q.reconstruction, q.palette[q.labels])
    assert q.reconstruction.dtype == ihc.dtype
    assert q.distortion == pytest.approx(measured_j(ihc, q.reconstruction), rel=1e-12)
    assert q.psnr == pytest.approx(10 * math.log10(255**2 / (q.distortion / 3)))
    assert q.cluster_sizes.sum() == ihc.shape[0] * ihc.shape[1]
    np.testing.assert_array_equal(q.cluster_sizes, np.bincount(q.labels.ravel(), minlength=k))
    counts = q.cluster_sizes[q.cluster_sizes > 0]
    p = counts / counts.sum()
    assert q.report.entropy_bits == pytest.approx(-(counts * np.log2(p)).sum())


@pytest.mark.parametrize("k", [1, 3, 4])
def test_quantize_reports_the_figures_of_fit_and_encode(k):
    rng = np.random.default_rng(k)
    image = (rng.normal(128, 50, (240, 200, 3)).clip(0, 255)).astype(np.uint8)
    q = quantize(image, k)
    book = Codebook(k).fit(image)
    assert (
        book.inertia_
        == q.codebook.inertia_
        == pytest.approx(
            measured_j(image, q.reconstruction) * image.shape[0] * image.shape[1], rel=1e-12
        )
    )
    np.testing.assert_array_equal(q.labels, book.encode(image))
    np.testing.assert_array_equal(q.cluster_sizes, book.cluster_sizes_)
    np.testing.assert_array_equal(q.cluster_sizes, np.bincount(q.labels.ravel(), minlength=k))
    assert q.cluster_sizes.dtype == np.int64


def test_palette_is_the_rounded_mean_and_every_pixel_has_its_nearest_codeword(ihc_crop):
    q = quantize(ihc_crop, 12)
    pixels = ihc_crop.reshape(-1, 3).astype(np.float64)
    d2 = ((pixels[:, None, :] - q.palette[None].astype(np.float64)) ** 2).sum(axis=2)
    chosen = d2[np.arange(len(pixels)), q.labels.ravel()]
    np.testing.assert_allclose(chosen, d2.min(axis=1))
    np.testing.assert_array_equal(np.clip(np.rint(q.centroids), 0, 255), q.palette)


def test_more_distortion_with_fewer_colours(ihc):
    js = [quantize(ihc, k).distortion for k in (2, 3, 6, 16)]
    assert js == sorted(js, reverse=True)


def test_labels_widen_to_uint16_above_256_colours(ihc):
    q = quantize(ihc, 300)
    assert q.labels.dtype == np.uint16
    assert q.n_colors == 300
    assert q.labels.max() > 255
    np.testing.assert_array_equal(q.reconstruction, q.palette[q.labels])
    assert q.distortion == pytest.approx(measured_j(ihc, q.reconstruction), rel=1e-12)
    assert q.report.bits_per_index == 9


def test_histogram_fit_matches_scikit_learn_on_all_pixels(ihc_crop):
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    pixels = ihc_crop.reshape(-1, 3).astype(np.float64)
    init, _ = sklearn_cluster.kmeans_plusplus(pixels, 8, random_state=5)
    ref = sklearn_cluster.KMeans(8, init=init, n_init=1, tol=0, max_iter=500).fit(pixels)
    hist = ColorHistogram.from_pixels(ihc_crop.reshape(-1, 3))
    assert hist.colors.shape[0] < pixels.shape[0]  # the fit really ran on fewer points
    ours = weighted_kmeans(hist.colors, hist.counts, 8, init=init, tol=0, max_iter=500)
    assert ours.converged
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-9)
    np.testing.assert_allclose(
        np.sort(ours.centers, axis=0), np.sort(ref.cluster_centers_, axis=0), atol=1e-6
    )


def test_quality_against_scikit_learn_seed_recipe(ihc_crop):
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    pixels = ihc_crop.reshape(-1, 3).astype(np.float64)
    for k in (4, 16):
        ref = sklearn_cluster.KMeans(k, n_init="auto", random_state=42).fit(pixels)
        palette = np.clip(np.rint(ref.cluster_centers_), 0, 255)
        ref_j = measured_j(ihc_crop, palette[ref.labels_].reshape(ihc_crop.shape))
        assert quantize(ihc_crop, k).distortion <= 1.02 * ref_j


def test_deterministic(ihc):
    a = quantize(ihc, 16, random_state=3)
    b = quantize(ihc.copy(), 16, random_state=3)
    np.testing.assert_array_equal(a.palette, b.palette)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.distortion == b.distortion


def test_restarts_never_hurt(ihc_crop):
    one = quantize(ihc_crop, 8, n_init=1)
    many = quantize(ihc_crop, 8, n_init=4)
    assert many.info["n_init"] == 4
    assert many.distortion <= one.distortion + 1e-9


def test_stack_shares_one_codebook(ihc):
    stack = np.stack([ihc[:128, :128], ihc[200:328, 300:428]])
    q = quantize(stack, 8)
    assert q.labels.shape == (2, 128, 128)
    np.testing.assert_array_equal(q.reconstruction, q.palette[q.labels])
    # the same codebook encodes each slice of the stack to the same labels
    np.testing.assert_array_equal(q.codebook.encode(stack[1]), q.labels[1])


def test_one_channel_and_scalar_images(ihc):
    gray = ihc[..., 1]
    q = quantize(gray, 4, channel_axis=None)
    assert q.labels.shape == gray.shape
    assert q.reconstruction.shape == gray.shape
    assert q.palette.shape == (4, 1)
    q1 = quantize(gray[..., None], 4)
    np.testing.assert_array_equal(q1.labels, q.labels)
    assert q1.reconstruction.shape == (*gray.shape, 1)
    assert q.psnr == pytest.approx(10 * math.log10(255**2 / q.distortion))


def test_channel_axis_first(ihc):
    planar = np.moveaxis(ihc, -1, 0)
    q = quantize(planar, 6, channel_axis=0)
    assert q.labels.shape == ihc.shape[:2]
    assert q.reconstruction.shape == planar.shape
    np.testing.assert_array_equal(q.labels, quantize(ihc, 6).labels)


def test_rgba_alpha_ignored_or_quantized(ihc_crop):
    alpha = np.linspace(0, 255, ihc_crop.shape[1]).astype(np.uint8)
    rgba = np.dstack([ihc_crop, np.broadcast_to(alpha, ihc_crop.shape[:2])])
    q = quantize(rgba, 6)
    assert q.palette.shape == (6, 3)
    np.testing.assert_array_equal(q.reconstruction[..., 3], rgba[..., 3])
    np.testing.assert_array_equal(q.reconstruction[..., :3], q.palette[q.labels])
    np.testing.assert_array_equal(q.labels, quantize(ihc_crop, 6).labels)
    q4 = quantize(rgba, 6, alpha="quantize")
    assert q4.palette.shape == (6, 4)
    np.testing.assert_array_equal(q4.reconstruction, q4.palette[q4.labels])
    assert q4.distortion == pytest.approx(measured_j(rgba, q4.reconstruction))


def test_float_and_uint16_images(ihc_crop):
    as_float = ihc_crop / 255.0
    qf = quantize(as_float, 6)
    assert qf.palette.dtype == np.float64 and qf.reconstruction.dtype == np.float64
    np.testing.assert_array_equal(qf.reconstruction, qf.palette[qf.labels])
    assert qf.distortion == pytest.approx(measured_j(as_float, qf.reconstruction))
    assert qf.psnr == pytest.approx(10 * math.log10(1.0 / (qf.distortion / 3)))
    q16 = quantize(ihc_crop.astype(np.uint16) * 257, 6)
    assert q16.palette.dtype == np.uint16
    assert q16.report.bits_per_channel == 16
    # scaling by 257 scales the clustering; only rounding the palette differs slightly
    assert (q16.labels == quantize(ihc_crop, 6).labels).mean() > 0.98
    np.testing.assert_array_equal(q16.reconstruction, q16.palette[q16.labels])


def test_lab_space_keeps_palette_and_distortion_in_rgb(ihc):
    q = quantize(ihc, 8, color_space="lab")
    assert q.palette.dtype == np.uint8 and q.palette.shape == (8, 3)
    assert q.centroids.shape == (8, 3)
    assert q.centroids[:, 0].max() <= 100  # L* of CIELAB, not 0..255
    np.testing.assert_array_equal(q.reconstruction, q.palette[q.labels])
    assert q.distortion == pytest.approx(measured_j(ihc, q.reconstruction))
    assert q.info["color_space"] == "lab"
    assert q.labels.max() < 8
    rgb = quantize(ihc, 8)
    assert not np.array_equal(rgb.labels, q.labels)


def test_fewer_distinct_colours_than_k():
    colours = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    image = colours[np.random.default_rng(0).integers(0, 5, size=(20, 30))]
    with pytest.warns(FewColorsWarning, match="only 5 distinct colours"):
        q = quantize(image, 16)
    assert q.n_colors == 5
    assert len(np.unique(q.palette, axis=0)) == 5
    assert q.distortion == 0 and math.isinf(q.psnr)
    np.testing.assert_array_equal(q.reconstruction, image)
    assert q.report.n_colors == 5 and q.report.bits_per_index == 3
    assert q.to_dict()["psnr"] is None


def test_codebook_fitted_on_one_tile_encodes_another(ihc):
    a, b = ihc[:256, :256], ihc[256:, 256:]
    cb = Codebook(n_colors=6).fit(a)
    labels_b = cb.encode(b)
    pixels = b.reshape(-1, 3).astype(np.float64)
    d2 = ((pixels[:, None] - cb.palette_[None].astype(np.float64)) ** 2).sum(axis=2)
    np.testing.assert_allclose(d2[np.arange(len(pixels)), labels_b.ravel()], d2.min(axis=1))
    np.testing.assert_array_equal(cb.decode(labels_b), cb.palette_[labels_b])
    both = Codebook(n_colors=6).fit([a, b])
    assert both.cluster_sizes_.sum() == a.shape[0] * a.shape[1] + b.shape[0] * b.shape[1]


def test_codebook_errors(ihc_crop):
    cb = Codebook(4)
    with pytest.raises(RuntimeError, match="not fitted"):
        cb.encode(ihc_crop)
    cb.fit(ihc_crop)
    with pytest.raises(ValueError, match="fitted on 3"):
        cb.encode(ihc_crop[..., :2])
    with pytest.raises(ValueError, match=r"0 \.\. 3"):
        cb.decode(np.array([0, 4]))
    with pytest.raises(TypeError, match="integer"):
        cb.decode(np.array([0.5]))
    with pytest.raises(ValueError, match="one kind"):
        Codebook(4).fit([ihc_crop, ihc_crop.astype(np.uint16)])
    assert "fitted K=4" in repr(cb)


@pytest.mark.parametrize(
    ("image", "kwargs", "error", "match"),
    [
        (np.array([["a", "b", "c"]]), {}, TypeError, "dtype"),
        (np.zeros((4, 4, 3), dtype=object), {}, TypeError, "dtype"),
        (np.zeros(12, dtype=np.uint8), {}, ValueError, "no colour axis"),
        (np.zeros((64, 64), dtype=np.uint8), {}, ValueError, "channel_axis=None"),
        (np.zeros((0, 4, 3), dtype=np.uint8), {}, ValueError, "empty"),
        (np.full((2, 2, 3), np.nan), {}, ValueError, "NaN"),
        (np.full((2, 2, 3), np.inf), {}, ValueError, "infinite"),
        (np.zeros((2, 2, 3), np.uint8), {"n_colors": 0}, ValueError, "n_colors"),
        (np.zeros((2, 2, 3), np.uint8), {"n_colors": 2.0}, TypeError, "n_colors"),
        (np.zeros((2, 2, 3), np.uint8), {"n_colors": 65_537}, ValueError, "65,536"),
        (np.zeros((2, 2, 3), np.uint8), {"color_space": "hsv"}, ValueError, "color_space"),
        (np.zeros((2, 2, 2), np.uint8), {"color_space": "lab"}, ValueError, "lab"),
        (np.zeros((2, 2, 4), np.uint8), {"alpha": "drop"}, ValueError, "alpha"),
        (np.zeros((2, 2, 3), np.uint8), {"n_init": 0}, ValueError, "n_init"),
        (np.zeros((2, 2, 3), np.uint8), {"max_iter": 0}, ValueError, "max_iter"),
        (np.zeros((2, 2, 3), np.uint8), {"tol": -1}, ValueError, "tol"),
        (np.full((2, 2, 3), -3, np.int16), {}, ValueError, "negative"),
        ([[1, 2, 3]], {}, TypeError, "numpy array"),
    ],
)
def test_bad_input_gets_a_clear_error(image, kwargs, error, match):
    kwargs.setdefault("n_colors", 2)
    with pytest.raises(error, match=match):
        quantize(image, **kwargs)


def test_callers_array_is_not_modified(ihc_crop):
    image = ihc_crop.copy()
    before = image.copy()
    quantize(image, 5)
    quantize(image, 5, color_space="lab")
    np.testing.assert_array_equal(image, before)
    # and nothing is written through a read-only view
    image.setflags(write=False)
    quantize(image, 5)


def test_to_dict_is_json_serialisable(ihc_crop):
    import json

    q = quantize(ihc_crop, 4)
    d = json.loads(json.dumps(q.to_dict()))
    assert d["report"]["total_bits"] == q.report.total_bits
    assert len(d["palette"]) == 4
    assert d["info"]["n_colors_requested"] == 4


def test_progress_reports_every_stage_and_can_cancel(ihc):
    seen = []
    quantize(ihc, 8, progress=lambda stage, fraction: seen.append((stage, fraction)))
    stages = [s for s, _ in seen]
    assert stages[0] == "histogram" and stages[-1] == "encode" and "fit" in stages
    assert all(0 <= f <= 1 for _, f in seen)
    fit = [f for s, f in seen if s == "fit"]
    assert fit == sorted(fit)

    class Cancelled(Exception):
        pass

    def cancel(stage, fraction):
        if stage == "fit":
            raise Cancelled

    with pytest.raises(Cancelled):
        quantize(ihc, 8, progress=cancel)


def test_dask_and_multiscale_inputs_go_lazy(ihc):
    da = pytest.importorskip("dask.array")
    lazy = quantize(da.from_array(ihc, chunks=(128, 128, 3)), 8)
    eager = quantize(ihc, 8)
    assert isinstance(lazy.labels, da.Array)
    np.testing.assert_array_equal(lazy.palette, eager.palette)
    np.testing.assert_array_equal(lazy.labels.compute(), eager.labels)
    from napari_kmeans_vq.large import encode_lazy

    np.testing.assert_array_equal(
        encode_lazy(eager.codebook, da.from_array(ihc)).compute(), eager.labels
    )
    # The in-memory codebook never loads a chunked array whole behind the user's back.
    with pytest.raises(TypeError, match="block by block"):
        eager.codebook.encode(da.from_array(ihc))
    pyramid = quantize([ihc, ihc[::2, ::2]], 8)
    np.testing.assert_array_equal(pyramid.palette, eager.palette)
    assert [level.shape for level in pyramid.levels] == [(512, 512), (256, 256)]
