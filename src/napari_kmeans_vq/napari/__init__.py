"""The napari side of napari-kmeans-vq: widget, sample data, reader and writer.

Everything that imports napari or Qt lives in this subpackage; napari loads it through the
manifest (``napari.yaml``), so ``import napari_kmeans_vq`` never pulls it in.
"""
