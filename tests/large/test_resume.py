"""Resumable OME-Zarr writes (issue 19, item 4): an interrupted write leaves an incomplete
store beside the destination, never the destination; ``resume=True`` finishes it, skipping
the blocks stored, and the finished store is the same bytes as an uninterrupted write.

The input is a small JPEG-tiled pyramidal TIFF of real tissue (the IHC sample, flipped and
rotated per tile), read lazily as scanners' slides are.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")
pytest.importorskip("zarr")
da = pytest.importorskip("dask.array")

from napari_kmeans_vq.io import omezarr  # noqa: E402
from napari_kmeans_vq.io._atomic import PARTIAL_RECORD, leftovers  # noqa: E402
from napari_kmeans_vq.io.files import (  # noqa: E402
    IncompleteStoreError,
    incomplete_store,
    save_ome_zarr,
)
from napari_kmeans_vq.large import quantize_lazy  # noqa: E402

SIDE, TILE = 1024, 128
BLOCK = TILE * TILE  # pixels per dask block: many blocks on a small slide
CHUNK = 128


def write_pyramid(path: Path, tissue: np.ndarray, side: int = SIDE, tile: int = TILE) -> None:
    """A JPEG-tiled pyramidal TIFF (full resolution, then halved levels as SubIFDs) whose
    tiles are the tissue's tiles, flipped and rotated by position."""
    rng = np.random.default_rng(7)
    n = side // tile
    src = tissue.shape[0] // tile
    tiles = []
    for i in range(n * n):
        r, c = rng.integers(0, src, 2)
        t = tissue[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]
        tiles.append(np.ascontiguousarray(np.rot90(t[:: 1 - 2 * (i % 2)], i % 4)))
    full = _assemble(tiles, n, tile)
    sides = [side]
    while sides[-1] // 2 >= tile:
        sides.append(sides[-1] // 2)
    options = {"tile": (tile, tile), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(path) as tw:
        tw.write(full, subifds=len(sides) - 1, **options)
        level = full
        for _ in sides[1:]:
            level = level[::2, ::2]
            tw.write(np.ascontiguousarray(level), subfiletype=1, **options)


def _assemble(tiles, n: int, tile: int) -> np.ndarray:
    out = np.empty((n * tile, n * tile, 3), dtype=np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, n)
        out[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] = t
    return out


def store_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a store, by its path inside it."""
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(Path(path).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def slide(tmp_path_factory, ihc) -> Path:
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    write_pyramid(path, ihc)
    return path


@pytest.fixture(scope="module")
def q(slide):
    return quantize_lazy(str(slide), 8, block_pixels=BLOCK)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, q) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("ref") / "ref.ome.zarr"
    save_ome_zarr(out, q, chunk=CHUNK)
    return store_bytes(out)


class Interrupt(BaseException):
    """Stands for Ctrl-C (or any stop) in the middle of the blocks."""


def interrupt_after(monkeypatch, n: int):
    """Make the writer stop after ``n`` blocks are stored; returns a function that waits
    until the blocks begun are stored."""
    store = omezarr._store_block
    stored = []
    lock = threading.Lock()  # dask's threads store blocks at once: exactly n get through

    finished = []

    def stopping(block, target, marker_dir, level, block_info=None):
        with lock:
            if len(stored) >= n:
                raise Interrupt
            stored.append(level)
        out = store(block, target, marker_dir, level, block_info=block_info)
        finished.append(level)
        return out

    def settle():
        # dask raises as soon as a task fails; blocks other threads were storing finish
        # a moment later.
        deadline = time.monotonic() + 30
        while len(finished) < len(stored) and time.monotonic() < deadline:
            time.sleep(0.01)

    monkeypatch.setattr(omezarr, "_store_block", stopping)
    return settle


def count_blocks(monkeypatch) -> list:
    store = omezarr._store_block
    stored = []

    def counting(block, target, marker_dir, level, block_info=None):
        stored.append(level)  # list.append is atomic
        return store(block, target, marker_dir, level, block_info=block_info)

    monkeypatch.setattr(omezarr, "_store_block", counting)
    return stored


def test_the_slide_writes_many_blocks(q, reference):
    assert q.multiscale and len(q.levels) == 4
    assert q.levels[0].numblocks == (SIDE // TILE, SIDE // TILE)
    assert any(name.startswith("0/") for name in reference)


def test_interrupted_write_leaves_an_incomplete_store_that_resume_finishes(
    tmp_path, monkeypatch, q, reference
):
    out = tmp_path / "labels.ome.zarr"
    settle = interrupt_after(monkeypatch, 20)
    with pytest.raises(Interrupt):
        save_ome_zarr(out, q, chunk=CHUNK)
    settle()
    monkeypatch.undo()
    # The destination never names an incomplete store; the one beside it says so.
    assert not out.exists()
    partial, record = incomplete_store(out)
    assert (partial / PARTIAL_RECORD).is_file()
    assert record["done"] == 20 and record["total"] > 20
    with pytest.raises(omezarr.ResumeError, match="incomplete"):
        omezarr.read_labels(partial)
    # Without resume (or overwrite), the leftover is reported, and kept.
    with pytest.raises(IncompleteStoreError, match=r"resume=True.*overwrite=True") as caught:
        save_ome_zarr(out, q, chunk=CHUNK)
    assert caught.value.partial == partial and partial.exists()
    stored = count_blocks(monkeypatch)
    save_ome_zarr(out, q, chunk=CHUNK, resume=True)
    # Only the missing blocks were written, and the store is the same bytes.
    assert len(stored) == record["total"] - 20
    assert store_bytes(out) == reference
    assert leftovers(out) == []


def test_resume_twice_interrupted(tmp_path, monkeypatch, q, reference):
    out = tmp_path / "labels.ome.zarr"
    for n in (5, 11):
        settle = interrupt_after(monkeypatch, n)
        with pytest.raises(Interrupt):
            save_ome_zarr(out, q, chunk=CHUNK, resume=True)
        settle()
        monkeypatch.undo()
    assert incomplete_store(out)[1]["done"] == 16
    save_ome_zarr(out, q, chunk=CHUNK, resume=True)
    assert store_bytes(out) == reference


def test_resume_with_another_k_seed_input_or_option_is_refused(
    tmp_path, monkeypatch, slide, ihc, q
):
    out = tmp_path / "labels.ome.zarr"
    settle = interrupt_after(monkeypatch, 3)
    with pytest.raises(Interrupt):
        save_ome_zarr(out, q, chunk=CHUNK)
    settle()
    monkeypatch.undo()
    partial, before = incomplete_store(out)
    other_slide = tmp_path / "other.tif"
    write_pyramid(other_slide, ihc[::-1].copy())
    others = {
        "K": (quantize_lazy(str(slide), 6, block_pixels=BLOCK), {}),
        "the seed": (quantize_lazy(str(slide), 8, block_pixels=BLOCK, random_state=5), {}),
        "the input image": (quantize_lazy(str(other_slide), 8, block_pixels=BLOCK), {}),
        "the output options": (q, {"name": "other"}),
    }
    for what, (other, options) in others.items():
        with pytest.raises(omezarr.ResumeError, match=what) as caught:
            save_ome_zarr(out, other, chunk=CHUNK, resume=True, **options)
        assert "never mixes two runs" in str(caught.value)
        # Refused before any block: the incomplete store is kept as it was.
        assert incomplete_store(out) is not None and not out.exists()
    assert incomplete_store(out)[1]["done"] == before["done"]
    # overwrite=True starts again: the incomplete store goes, the new one is complete.
    save_ome_zarr(out, others["K"][0], chunk=CHUNK, overwrite=True)
    assert not partial.exists() and leftovers(out) == []
    _, meta = omezarr.read_labels(out)
    assert len(meta["colors"]) == 6


def test_resume_replaces_an_existing_store_only_with_overwrite(
    tmp_path, monkeypatch, q, reference
):
    out = tmp_path / "labels.ome.zarr"
    save_ome_zarr(out, q, chunk=CHUNK, name="first")
    first = store_bytes(out)
    settle = interrupt_after(monkeypatch, 7)
    with pytest.raises(Interrupt):
        save_ome_zarr(out, q, chunk=CHUNK, overwrite=True)
    settle()
    monkeypatch.undo()
    assert store_bytes(out) == first  # the old store stays whole meanwhile
    with pytest.raises(FileExistsError):
        save_ome_zarr(out, q, chunk=CHUNK, resume=True)
    save_ome_zarr(out, q, chunk=CHUNK, resume=True, overwrite=True)
    assert store_bytes(out) == reference


def test_resume_with_nothing_to_resume_writes_from_the_start(tmp_path, q, reference):
    out = tmp_path / "labels.ome.zarr"
    save_ome_zarr(out, q, chunk=CHUNK, resume=True)
    assert store_bytes(out) == reference


def test_a_failure_before_any_record_leaves_nothing(tmp_path, q):
    out = tmp_path / "labels.ome.zarr"
    with pytest.raises(ValueError, match="chunk"):
        save_ome_zarr(out, q, chunk=0)
    assert leftovers(out) == [] and not out.exists()


def test_write_labels_in_place_resumes_too(tmp_path, monkeypatch, q, reference):
    """write_labels writes in place: an interrupted one leaves the incomplete store at the
    path itself, marked so, and resume=True finishes it there."""
    out = tmp_path / "labels.ome.zarr"
    settle = interrupt_after(monkeypatch, 9)
    with pytest.raises(Interrupt):
        omezarr.write_labels(out, q, chunk=CHUNK)
    settle()
    monkeypatch.undo()
    assert omezarr.read_partial(out)["done"] == 9
    assert omezarr.replaceable_store(out)  # an incomplete store of ours may be replaced
    with pytest.raises(FileExistsError):
        omezarr.write_labels(out, q, chunk=CHUNK)
    omezarr.write_labels(out, q, chunk=CHUNK, resume=True)
    assert omezarr.read_partial(out) is None
    assert store_bytes(out) == reference
    with pytest.raises(omezarr.ResumeError, match="nothing to resume"):
        omezarr.write_labels(out, q, chunk=CHUNK, resume=True)


def test_in_memory_result_resumes_to_the_same_bytes(tmp_path, monkeypatch, ihc):
    from napari_kmeans_vq import quantize

    eager = quantize(ihc, 5)
    ref = tmp_path / "ref.ome.zarr"
    save_ome_zarr(ref, eager, chunk=64, image="reconstruction")
    out = tmp_path / "out.ome.zarr"
    settle = interrupt_after(monkeypatch, 4)
    with pytest.raises(Interrupt):
        save_ome_zarr(out, eager, chunk=64, image="reconstruction")
    settle()
    monkeypatch.undo()
    with pytest.raises(omezarr.ResumeError, match="the input image"):
        save_ome_zarr(
            out, quantize(ihc[::-1].copy(), 5), chunk=64, image="reconstruction", resume=True
        )
    save_ome_zarr(out, eager, chunk=64, image="reconstruction", resume=True)
    assert store_bytes(out) == store_bytes(ref)
    assert leftovers(out) == []
