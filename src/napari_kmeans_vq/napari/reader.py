"""napari reader for files this plugin writes: the reconstruction and the labels layer.

``.kvq`` files, and the indexed PNGs and palette TIFFs the plugin (or
:func:`napari_kmeans_vq.io.save`) writes, open as the layers the widget makes (see
:func:`napari_kmeans_vq.napari.layers.coded_layer_data`): an image layer with
``palette[labels]``, and a labels layer with label = codeword index + 1, coloured with
exactly the palette through a direct label colormap, with a per-cluster ``features`` table
whose ``name`` column holds the class names the file records. A PNG or TIFF that this
package did not write (an ordinary photograph, a slide) is not claimed: :func:`get_reader`
returns None and napari's own reader opens it. No napari import is needed to build them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["get_reader", "read_kvq_layers", "read_label_store"]

_TIFF_SUFFIXES = (".tif", ".tiff")


def get_reader(path):
    """npe2 reader contribution: a reader function for one file of ours, else None.

    Parameters
    ----------
    path : str or list of str
        What napari asks to open. A list is accepted when it holds a single path.

    Returns
    -------
    callable or None
        :func:`read_kvq_layers` for a ``.kvq`` path, or for a PNG or TIFF that this
        package wrote (an indexed PNG with its text chunk, a palette TIFF with its
        description; told from the file's first bytes and tags); None otherwise, so napari
        asks another reader.
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | Path):
        return None
    suffix = Path(path).suffix.lower()
    if suffix == ".zarr":
        return read_label_store if _label_store_here(path) else None
    if suffix == ".kvq":
        return read_kvq_layers
    if suffix == ".png":
        from ..io.png import written_here

        return read_kvq_layers if written_here(path) else None
    if suffix in _TIFF_SUFFIXES:
        from ..io.tiff import written_here

        return read_kvq_layers if written_here(path) else None
    return None


def read_kvq_layers(path) -> list[tuple]:
    """Read a ``.kvq`` file, or an indexed PNG or palette TIFF of ours, as layer data tuples.

    Parameters
    ----------
    path : str, Path or list of one of them

    Returns
    -------
    list of (data, meta, layer_type)
        ``[(reconstruction, meta, "image"), (labels + 1, meta, "labels")]``; both layers'
        ``metadata["napari_kmeans_vq"]`` hold the file's path, size, format and the bit
        report, and the labels layer's ``features["name"]`` the class names (the file's,
        else ``"class 1"`` .. ``"class K"``).

    Raises
    ------
    napari_kmeans_vq.io.KVQError
        The file is damaged or not one of these formats (napari shows the message).
    """
    from ..io import load
    from .layers import coded_layer_data

    if isinstance(path, list | tuple):
        path = path[0]
    path = Path(path)
    data = load(path)
    report = data.report
    metadata = {
        "file": str(path),
        "format": data.format,
        "file_size": data.file_size,
        "deflated": data.deflated,
        "dtype": str(data.dtype),
        "scalar": data.scalar,
        "report": report.to_dict(),
    }
    return coded_layer_data(
        data.labels,
        data.palette,
        reconstruction=data.reconstruction,
        name=path.stem,
        metadata=metadata,
        dtype=data.dtype,
        names=data.names,
    )


def _label_store_here(path) -> bool:
    """An OME-Zarr labels store this package wrote (complete), not any zarr folder."""
    from ..io.omezarr import read_partial, replaceable_store

    try:
        return (
            bool(replaceable_store(path))
            and read_partial(path) is None
            and any(Path(path).iterdir())
        )
    except OSError:
        return False


def read_label_store(path) -> list[tuple]:
    """Read an OME-Zarr labels store written by this package as a multiscale labels layer
    (lazily, chunk by chunk), coloured with its palette, with its class table and names
    (see :func:`napari_kmeans_vq.napari.layers.ome_zarr_labels_layer_data`).

    Parameters
    ----------
    path : str, Path or list of one of them

    Returns
    -------
    list of (data, meta, "labels")
    """
    from .layers import ome_zarr_labels_layer_data

    if isinstance(path, list | tuple):
        path = path[0]
    return [ome_zarr_labels_layer_data(path)]
