"""Sample images for napari's File > Open Sample menu: wiring over :mod:`..io.samples`."""

from __future__ import annotations

from ..io.samples import ihc_image, stain_patches

__all__ = ["ihc_sample", "stain_patches", "stain_patches_sample"]


def ihc_sample() -> list[tuple]:
    """napari sample: scikit-image's immunohistochemistry slide (see
    :func:`~napari_kmeans_vq.io.samples.ihc_image`)."""
    return [(ihc_image(), {"name": "immunohistochemistry", "rgb": True}, "image")]


def stain_patches_sample() -> list[tuple]:
    """napari sample: a generated 512 x 512 H&E-like tile (see
    :func:`~napari_kmeans_vq.io.samples.stain_patches`)."""
    return [(stain_patches(), {"name": "stain patches", "rgb": True}, "image")]
