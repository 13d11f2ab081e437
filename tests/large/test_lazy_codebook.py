"""napari_kmeans_vq.quantize(dask_or_zarr, codebook=...): a fitted codebook applied lazily."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, LazyQuantization, quantize
from napari_kmeans_vq.io.samples import stain_patches

da = pytest.importorskip("dask.array")
large = pytest.importorskip("napari_kmeans_vq.large")


@pytest.fixture(scope="module")
def ihc_dask(ihc):
    return da.from_array(ihc, chunks=(150, 120, 3))


def test_a_dask_image_with_a_codebook_equals_the_in_memory_apply(ihc, ihc_dask):
    cb = Codebook(10, color_space="lab").fit(stain_patches(128))
    eager = quantize(ihc, codebook=cb)
    lazy = quantize(ihc_dask, codebook=cb)
    assert isinstance(lazy, LazyQuantization)
    assert lazy.info["codebook"] == "applied" and lazy.info["fit"] == "exact"
    computed = lazy.compute()
    np.testing.assert_array_equal(computed.labels, eager.labels)
    np.testing.assert_array_equal(computed.reconstruction, eager.reconstruction)
    np.testing.assert_array_equal(lazy.cluster_sizes, eager.cluster_sizes)
    assert lazy.distortion == pytest.approx(eager.distortion, rel=1e-12)
    assert lazy.report == eager.report
    assert lazy.codebook is cb


def test_a_zarr_image_and_a_multiscale_list(ihc, tmp_path):
    zarr = pytest.importorskip("zarr")
    cb = Codebook(6).fit(ihc)
    z = zarr.open_array(
        tmp_path / "im.zarr", mode="w", shape=ihc.shape, chunks=(128, 128, 3), dtype=ihc.dtype
    )
    z[:] = ihc
    q = quantize(z, codebook=cb)
    np.testing.assert_array_equal(np.asarray(q.labels), cb.encode(ihc))
    pyramid = [ihc, np.ascontiguousarray(ihc[::2, ::2])]
    m = large.quantize_lazy(pyramid, codebook=cb)
    assert m.multiscale
    np.testing.assert_array_equal(np.asarray(m.levels[1]), cb.encode(pyramid[1]))


def test_a_sampled_measure_leaves_the_labels_exact(ihc, ihc_dask):
    cb = Codebook(6).fit(ihc)
    q = quantize(ihc_dask, codebook=cb, fit="sample", n_samples=5_000)
    assert q.info["fit"] == "sample" and q.info["n_samples"] >= 5_000
    np.testing.assert_array_equal(np.asarray(q.labels), cb.encode(ihc))
    assert q.cluster_sizes.sum() == q.info["n_samples"]


def test_errors(ihc, ihc_dask):
    cb = Codebook(6).fit(ihc)
    with pytest.raises(ValueError, match="n_colors=7 but the codebook has 6"):
        quantize(ihc_dask, 7, codebook=cb)
    with pytest.raises(ValueError, match="not fitted"):
        quantize(ihc_dask, codebook=Codebook(6))
    with pytest.raises(ValueError, match="uint16"):
        quantize(ihc_dask.astype(np.uint16), codebook=cb)
    with pytest.raises(ValueError, match="color_space='lab' cannot change"):
        quantize(ihc_dask, codebook=cb, color_space="lab")
    with pytest.raises(ValueError, match="n_colors is required"):
        quantize(ihc_dask)


def test_auto_k_on_a_dask_image_equals_the_in_memory_choice(ihc, ihc_dask):
    eager = quantize(ihc, "auto", target_psnr=30)
    lazy = quantize(ihc_dask, "auto", target_psnr=30)
    assert lazy.n_colors == eager.n_colors
    assert lazy.info["auto"]["tried"] == eager.info["auto"]["tried"]
    np.testing.assert_array_equal(lazy.compute().labels, eager.labels)
    assert lazy.psnr == pytest.approx(eager.psnr, rel=1e-12)
    sampled = quantize(ihc_dask, "auto", target_psnr=30, fit="sample", n_samples=20_000)
    assert sampled.info["fit"] == "sample" and sampled.info["auto"]["n_colors"] >= 1
    with pytest.raises(ValueError, match="are for n_colors='auto'"):
        quantize(ihc_dask, 8, target_psnr=30)
