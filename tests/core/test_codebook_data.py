"""A codebook as data (to_dict / from_dict / from_palette) and scikit-learn's conventions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, quantize


@pytest.mark.parametrize("space", ["rgb", "lab", "hdab"])
def test_saved_codebook_encodes_every_image_alike(ihc, space):
    cb = Codebook(8, color_space=space).fit(ihc[:256])
    again = Codebook.from_dict(json.loads(json.dumps(cb.to_dict())))
    assert np.array_equal(again.palette_, cb.palette_)
    assert again.palette_.dtype == cb.palette_.dtype
    # The other half of the slide, never seen by the fit: the same labels.
    assert np.array_equal(again.encode(ihc[256:]), cb.encode(ihc[256:]))
    assert np.array_equal(again.decode(again.encode(ihc)), cb.decode(cb.encode(ihc)))


def test_sixteen_bit_and_float_codebooks_round_trip(ihc_crop):
    for image in (ihc_crop.astype(np.uint16) * 257, ihc_crop / 255.0):
        cb = Codebook(5).fit(image)
        again = Codebook.from_dict(json.loads(json.dumps(cb.to_dict())))
        assert np.array_equal(again.encode(image), cb.encode(image))


def test_a_cohort_codebook_gives_one_label_per_colour(ihc):
    tiles = [ihc[:256, :256], ihc[256:, 256:], ihc[:256, 256:]]
    cb = Codebook(6).fit(tiles)
    labels = [cb.encode(t) for t in tiles]
    colours = np.concatenate([t.reshape(-1, 3) for t in tiles])
    flat = np.concatenate([lab.ravel() for lab in labels])
    keys = (colours.astype(np.int64) * [65536, 256, 1]).sum(1)
    _, first = np.unique(keys, return_index=True)
    per_colour = dict(zip(keys[first], flat[first], strict=True))
    assert all(per_colour[key] == lab for key, lab in zip(keys, flat, strict=True))


def test_a_cohort_fitted_from_merged_histograms_equals_the_fit_on_the_images(ihc):
    # One image in memory at a time (the CLI's fit command): the same codebook.
    from napari_kmeans_vq.core.histogram import ColorHistogram

    tiles = [ihc[:256, :256], ihc[256:, 256:], ihc[:256, 256:]]
    masks = [None, ihc[256:, 256:, 0] > 100, None]
    whole = Codebook(6, color_space="hdab").fit(tiles, mask=masks)
    streamed = Codebook(6, color_space="hdab")
    hists = [streamed.histogram(t, mask=m) for t, m in zip(tiles, masks, strict=True)]
    streamed.fit_histogram(ColorHistogram.merge(hists), np.dtype(np.uint8))
    np.testing.assert_array_equal(streamed.palette_, whole.palette_)
    np.testing.assert_array_equal(streamed.centroids_, whole.centroids_)
    assert sum(h.n_pixels for h in hists) == 2 * 256 * 256 + int(masks[1].sum())


def test_from_palette_encodes_to_the_nearest_given_colour(ihc_crop):
    palette = np.array([[255, 255, 255], [120, 80, 50], [80, 80, 160]], dtype=np.uint8)
    cb = Codebook.from_palette(palette)
    labels = cb.encode(ihc_crop)
    d2 = ((ihc_crop[..., None, :].astype(int) - palette.astype(int)) ** 2).sum(-1)
    assert np.array_equal(labels, d2.argmin(-1))
    with pytest.raises(ValueError, match="needs RGB"):
        Codebook.from_palette([[1, 2], [3, 4]], color_space="lab")


def test_bad_codebook_data_is_refused_clearly(ihc_crop):
    good = Codebook(3).fit(ihc_crop).to_dict()
    with pytest.raises(ValueError, match="not a napari-kmeans-vq codebook"):
        Codebook.from_dict({"palette": []})
    with pytest.raises(ValueError, match="version"):
        Codebook.from_dict({**good, "version": 99})
    with pytest.raises(ValueError, match="disagree"):
        Codebook.from_dict({**good, "centroids": good["centroids"][:2]})
    with pytest.raises(ValueError, match="incomplete"):
        Codebook.from_dict({k: v for k, v in good.items() if k != "fit"})


def test_scikit_learn_clone_and_params(ihc_crop):
    base = pytest.importorskip("sklearn.base")
    cb = Codebook(4, color_space="lab", effort=3)
    twin = base.clone(cb)
    assert twin is not cb and twin.get_params() == cb.get_params()
    assert cb.set_params(n_colors=5) is cb and cb.n_colors == 5
    with pytest.raises(ValueError, match="not a parameter"):
        cb.set_params(colours=5)
    q = quantize(ihc_crop, 4, color_space="lab", effort=3)
    assert np.array_equal(twin.fit_predict(ihc_crop), q.labels)
    assert np.array_equal(twin.predict(ihc_crop), q.labels)
