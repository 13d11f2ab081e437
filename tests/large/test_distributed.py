"""The same calls on a dask cluster (issue 19, item 5): a two-process LocalCluster fits,
encodes and writes a pyramidal TIFF slide's OME-Zarr labels to the same bytes as dask's
local scheduler, and finishes a store that a local run left incomplete.

The workers are separate processes: the slide levels, the label table and the zarr
arrays reach them pickled, and each block's task writes its own chunks and marker, so
nothing in the write depends on the process that built the graph.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")
pytest.importorskip("zarr")

from napari_kmeans_vq.io import omezarr  # noqa: E402
from napari_kmeans_vq.io._atomic import leftovers  # noqa: E402
from napari_kmeans_vq.io.files import incomplete_store, save_ome_zarr  # noqa: E402
from napari_kmeans_vq.large import quantize_lazy  # noqa: E402


def _helpers():
    # tests/large/test_resume.py's slide maker and store reader, loaded under another name.
    path = Path(__file__).with_name("test_resume.py")
    spec = importlib.util.spec_from_file_location("resume_helpers_for_cluster", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_h = _helpers()
BLOCK, CHUNK = _h.BLOCK, _h.CHUNK


@pytest.fixture(scope="module")
def slide(tmp_path_factory, ihc) -> Path:
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    _h.write_pyramid(path, ihc)
    return path


@pytest.fixture(scope="module")
def local(slide, tmp_path_factory):
    """The slide's labels written with dask's local (threaded) scheduler."""
    q = quantize_lazy(str(slide), 8, block_pixels=BLOCK)
    out = tmp_path_factory.mktemp("local") / "labels.ome.zarr"
    save_ome_zarr(out, q, chunk=CHUNK, image="reconstruction")
    return q, _h.store_bytes(out)


@pytest.fixture
def client(two_process_cluster):
    with two_process_cluster() as client:
        yield client


def test_cluster_writes_the_same_bytes(tmp_path, slide, local, client):
    q_local, expected = local
    # The fit too runs on the workers: the same codebook.
    q = quantize_lazy(str(slide), 8, block_pixels=BLOCK)
    assert np.array_equal(q.palette, q_local.palette)
    assert q.labels[0].name == q_local.labels[0].name  # the same graph, named alike
    out = tmp_path / "cluster.ome.zarr"
    with distributed.get_task_stream(client) as stream:
        save_ome_zarr(out, q, chunk=CHUNK, image="reconstruction")
    # The blocks were stored by both worker processes.
    writers = {t["worker"] for t in stream.data if "_store_block" in str(t["key"])}
    assert len(writers) == 2
    assert _h.store_bytes(out) == expected
    assert leftovers(out) == []


def test_cluster_finishes_a_store_a_local_run_left(
    tmp_path, monkeypatch, slide, local, two_process_cluster
):
    q_local, expected = local
    out = tmp_path / "labels.ome.zarr"
    store = omezarr._store_block
    lock, begun, finished = threading.Lock(), [], []

    class Interrupt(BaseException):
        pass

    def stopping(block, target, marker_dir, level, block_info=None):
        with lock:
            if len(begun) >= 30:
                raise Interrupt
            begun.append(level)
        out = store(block, target, marker_dir, level, block_info=block_info)
        finished.append(level)
        return out

    monkeypatch.setattr(omezarr, "_store_block", stopping)
    with pytest.raises(Interrupt):
        save_ome_zarr(out, q_local, chunk=CHUNK, image="reconstruction")
    deadline = time.monotonic() + 30
    while len(finished) < len(begun) and time.monotonic() < deadline:
        time.sleep(0.01)
    monkeypatch.undo()
    assert incomplete_store(out)[1]["done"] == 30

    with two_process_cluster():
        q = quantize_lazy(str(slide), 8, block_pixels=BLOCK)
        save_ome_zarr(out, q, chunk=CHUNK, image="reconstruction", resume=True)
    assert _h.store_bytes(out) == expected
    assert leftovers(out) == []
