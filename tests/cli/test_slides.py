"""Slides are routed by what they are: a JPEG-tiled pyramidal TIFF, small on disk but far
over Pillow's limit, streams through ``compress`` block by block (issue 21).

The slide is 8,192 x 8,192 here (67 Mpx) to keep the test short; set
``NAPARI_KMEANS_VQ_SLIDE_SIDE=16384`` for the 268 Mpx slide of the issue.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")  # tifffile's JPEG codec
pytest.importorskip("zarr")

SIDE = int(os.environ.get("NAPARI_KMEANS_VQ_SLIDE_SIDE", "8192"))
TILE = 256
CLI = [sys.executable, "-m", "napari_kmeans_vq.cli"]


def write_slide(path: Path, tile: np.ndarray, side: int) -> int:
    """A JPEG-tiled pyramidal TIFF as scanners write them (full resolution, then halved
    levels as SubIFDs), from one tile repeated; returns the number of levels."""
    sides = [side]
    while sides[-1] // 2 >= TILE:
        sides.append(sides[-1] // 2)

    def tiles(s):
        for _ in range((s // TILE) ** 2):
            yield tile

    options = {"tile": (TILE, TILE), "compression": "jpeg", "photometric": "rgb"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(
            tiles(side), shape=(side, side, 3), dtype="uint8", subifds=len(sides) - 1, **options
        )
        for s in sides[1:]:
            tw.write(tiles(s), shape=(s, s, 3), dtype="uint8", subfiletype=1, **options)
    return len(sides)


@pytest.fixture(scope="module")
def slide(tmp_path_factory, ihc) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    levels = write_slide(path, np.ascontiguousarray(ihc[:TILE, :TILE]), SIDE)
    return path, levels


def run_measured(*args) -> tuple[subprocess.CompletedProcess, int]:
    """The command line in a new Python, and its peak resident memory in bytes."""
    code = (
        "import resource, sys\n"
        "from napari_kmeans_vq.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(f'PEAK {peak * (1 if sys.platform == \"darwin\" else 1024)}', file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=600
    )
    peak = int(result.stderr.rsplit("PEAK ", 1)[-1].split()[0])
    return result, peak


def test_jpeg_tiled_pyramid_streams_through_compress(slide, tmp_path):
    from napari_kmeans_vq.io import leftovers
    from napari_kmeans_vq.io.images import streams, tiff_layout
    from napari_kmeans_vq.io.omezarr import read_labels

    path, n_levels = slide
    layout = tiff_layout(path)
    assert layout["tiled"] and layout["levels"] == n_levels
    assert layout["pixels"] == SIDE * SIDE > 178_956_970 // 4  # Pillow's error limit is 179 M
    assert streams(path)  # routed by what it is: the file is small on disk
    out = tmp_path / "slide.ome.zarr"
    result, peak = run_measured("compress", path, "-k", 16, "-o", out, "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    raw = SIDE * SIDE * 3
    print(
        f"{SIDE} x {SIDE} JPEG-tiled pyramid ({path.stat().st_size:,} bytes on disk, "
        f"{raw:,} bytes decoded): streamed in {report['seconds']:.1f} s fit, peak RSS "
        f"{peak:,} bytes"
    )
    assert report["input"]["streamed"] is True and report["input"]["levels"] == n_levels
    assert report["fit"] == "exact" and report["n_colors"] == 16
    # Memory holds blocks, never the image: well under the decoded slide.
    assert peak < max(raw, 600 * 2**20)
    levels, meta = read_labels(out)
    assert len(levels) >= n_levels and len(meta["colors"]) == 16
    # One tile repeated: every tile of the labels is the first one's.
    top = np.asarray(levels[0][: 2 * TILE, : 2 * TILE])
    first = top[:TILE, :TILE]
    assert first.min() >= 1 and first.max() <= 16
    for y in (0, TILE):
        for x in (0, TILE):
            assert np.array_equal(top[y : y + TILE, x : x + TILE], first)
    last = np.asarray(levels[0][SIDE - TILE :, SIDE - TILE :])
    assert np.array_equal(last, first)
    assert leftovers(out) == []


def test_slide_over_the_limit_is_not_written_in_memory(slide, tmp_path):
    """A .kvq output needs the labels in memory: over --max-pixels it is a usage error,
    said before anything is fitted; within it, the streamed fit is written as .kvq."""
    path, _ = slide
    out = tmp_path / "s.kvq"
    limit = str(SIDE * SIDE - 1)
    result = subprocess.run(
        [*CLI, "compress", str(path), "-k", "4", "-o", str(out), "--max-pixels", limit],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr
    assert "over the limit" in result.stderr and "OME-Zarr" in result.stderr
    assert "quantizing" not in result.stderr and not out.exists()
