"""napari reader for ``.kvq`` files: the reconstruction and the cluster-labels layer.

The layers are the ones the widget makes (see :func:`napari_kmeans_vq.layers.coded_layer_data`):
an image layer with ``palette[labels]``, and a labels layer with label = codeword index + 1,
coloured with exactly the palette through a direct label colormap, with a per-cluster
``features`` table. No napari import is needed to build them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["get_reader", "read_kvq_layers"]


def get_reader(path):
    """npe2 reader contribution: a reader function for one ``.kvq`` path, else None.

    Parameters
    ----------
    path : str or list of str
        What napari asks to open. A list is accepted when it holds a single path.

    Returns
    -------
    callable or None
        :func:`read_kvq_layers`, or None when the path is not a ``.kvq`` file (so napari
        asks another reader).
    """
    if isinstance(path, list | tuple):
        if len(path) != 1:
            return None
        path = path[0]
    if not isinstance(path, str | Path) or not str(path).lower().endswith(".kvq"):
        return None
    return read_kvq_layers


def read_kvq_layers(path) -> list[tuple]:
    """Read a ``.kvq`` file as napari layer data tuples.

    Parameters
    ----------
    path : str, Path or list of one of them

    Returns
    -------
    list of (data, meta, layer_type)
        ``[(reconstruction, meta, "image"), (labels + 1, meta, "labels")]``; both layers'
        ``metadata["napari_kmeans_vq"]`` hold the file's path, size and the bit report.

    Raises
    ------
    napari_kmeans_vq.storage.KVQError
        The file is damaged or not a ``.kvq`` file (napari shows the message).
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
    )
