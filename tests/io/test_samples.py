"""The sample images: one generator for the generated tile, shared by the CLI and napari."""

from __future__ import annotations

import sys

import numpy as np

from napari_kmeans_vq.io.samples import demo_image, stain_patches


def test_stain_patches_is_deterministic_and_stain_like():
    tile = stain_patches(128, seed=3)
    assert tile.shape == (128, 128, 3) and tile.dtype == np.uint8
    assert np.array_equal(tile, stain_patches(128, seed=3))
    assert not np.array_equal(tile, stain_patches(128, seed=4))
    assert len(np.unique(tile.reshape(-1, 3), axis=0)) > 1000  # many colours, few stains


def test_demo_image_is_the_slide_or_the_generated_tile(monkeypatch):
    image, name, note = demo_image()
    if name == "ihc":
        assert image.shape == (512, 512, 3) and note is None
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # import now raises ImportError
    image, name, note = demo_image()
    assert name == "generated" and image.shape == (256, 256, 3)
    assert "scikit-image is not installed" in note
    assert np.array_equal(image, stain_patches(256))


def test_napari_samples_are_wiring_over_io_samples():
    # Importing the module needs no napari: it only builds layer data tuples.
    from napari_kmeans_vq.napari import sample_data

    ((data, meta, kind),) = sample_data.stain_patches_sample()
    assert kind == "image" and meta["rgb"] and np.array_equal(data, stain_patches())
    assert sample_data.stain_patches is stain_patches
