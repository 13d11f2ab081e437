"""``compress --resume`` (issue 19, item 4): a compress killed with SIGKILL while writing
OME-Zarr labels leaves an incomplete store beside the destination; the same command with
``--resume`` finishes it to the same bytes as an uninterrupted run, and nothing else
mixes two runs.

The command runs in a new Python that stores small blocks (so that a small slide has
many) and, when asked, kills itself with SIGKILL once some blocks are stored: a real kill,
at a moment when other blocks are being computed and written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tifffile")
pytest.importorskip("imagecodecs")
pytest.importorskip("zarr")
pytest.importorskip("dask")

from napari_kmeans_vq.io._atomic import leftovers
from napari_kmeans_vq.io.files import incomplete_store


def _library_tests():
    """tests/large/test_resume.py's slide maker and store reader (loaded by path: two test
    modules may not share a name)."""
    path = Path(__file__).resolve().parents[1] / "large" / "test_resume.py"
    spec = importlib.util.spec_from_file_location("large_resume_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_helpers = _library_tests()
store_bytes, write_pyramid = _helpers.store_bytes, _helpers.write_pyramid

RUNNER = textwrap.dedent("""
    import os, signal, sys, threading
    from napari_kmeans_vq.io import omezarr
    from napari_kmeans_vq.large import lazy

    # Small blocks and chunks: many blocks on a small slide.
    lazy.quantize_lazy.__kwdefaults__["block_pixels"] = 128 * 128
    omezarr.write_labels.__kwdefaults__["chunk"] = 128
    kill_after = int(os.environ.get("KVQ_KILL_AFTER", "0"))
    store = omezarr._store_block
    stored = []
    lock = threading.Lock()

    def storing(block, target, marker_dir, level, block_info=None):
        out = store(block, target, marker_dir, level, block_info=block_info)
        with lock:
            stored.append(level)
            if kill_after and len(stored) >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        return out

    omezarr._store_block = storing
    from napari_kmeans_vq.cli import main
    status = main(sys.argv[1:])
    print(f"STORED {len(stored)}", file=sys.stderr)
    sys.exit(status)
""")


def compress(tmp_path, *args, kill_after: int = 0) -> subprocess.CompletedProcess:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    env = {**os.environ, "KVQ_KILL_AFTER": str(kill_after), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(runner), "compress", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def stored_count(result) -> int:
    return int(result.stderr.rsplit("STORED ", 1)[-1].split()[0])


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def slide(tmp_path_factory, ihc) -> Path:
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    write_pyramid(path, ihc)
    return path


def test_killed_compress_resumes_to_the_same_bytes(tmp_path, slide):
    ref = tmp_path / "ref.ome.zarr"
    result = compress(tmp_path, slide, "-k", 8, "-o", ref, "-q")
    assert result.returncode == 0, result.stderr
    total = stored_count(result)
    assert total > 40

    out = tmp_path / "out.ome.zarr"
    killed = compress(tmp_path, slide, "-k", 8, "-o", out, "-q", kill_after=25)
    assert killed.returncode == -signal.SIGKILL
    # Never the destination: an incomplete store beside it, marked so.
    assert not out.exists()
    partial, record = incomplete_store(out)
    assert 25 <= record["done"] < total == record["total"]

    # Without --resume: said, with both ways out; the store is kept.
    again = compress(tmp_path, slide, "-k", 8, "-o", out, "-q")
    assert again.returncode == 1
    message = error_line(again)
    assert "incomplete" in message and "--resume" in message and "--force" in message
    assert partial.exists()

    # Another K, seed or option with --resume: refused, naming what differs.
    for args, what in (
        (["-k", 6], "K"),
        (["-k", 8, "--seed", 3], "the seed"),
        (["-k", 8, "--with-image", "reconstruction"], "--with-image"),
    ):
        refused = compress(tmp_path, slide, *args, "-o", out, "-q", "--resume")
        assert refused.returncode == 1, refused.stderr
        message = error_line(refused)
        assert "differs" in message and what in message and "--force" in message, message
        assert partial.exists() and not out.exists()

    resumed = compress(tmp_path, slide, "-k", 8, "-o", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"of {total:,} blocks already written" in resumed.stderr
    # Only the missing blocks were stored, and the store is the same bytes.
    assert stored_count(resumed) == total - record["done"]
    assert store_bytes(out) == store_bytes(ref)
    assert leftovers(out) == []


def test_a_killed_batch_resumes_keeping_the_outputs_it_finished(tmp_path, slide, ihc):
    """A batch killed while writing its second slide: rerun with --resume, the first
    output is kept, the second finished, the third written; all as an uninterrupted run."""
    other = tmp_path / "other.tif"
    write_pyramid(other, ihc[::-1].copy())
    third = tmp_path / "third.tif"
    write_pyramid(third, ihc[:, ::-1].copy())
    batch = [slide, other, third, "-k", 8, "--name", "{stem}.ome.zarr", "-q"]
    ref = compress(tmp_path, *batch, "--out-dir", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    first = compress(tmp_path, slide, "-k", 8, "-o", tmp_path / "one.ome.zarr", "-q")
    per_slide = stored_count(first)

    out = tmp_path / "out"
    killed = compress(tmp_path, *batch, "--out-dir", out, kill_after=per_slide + 10)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "slide.ome.zarr").is_dir() and incomplete_store(out / "other.ome.zarr")
    summary = tmp_path / "summary.json"
    resumed = compress(tmp_path, *batch, "--out-dir", out, "--resume", "--summary", summary)
    assert resumed.returncode == 0, resumed.stderr
    assert stored_count(resumed) < 2 * per_slide  # the first slide was not written again
    entries = json.loads(summary.read_text())["images"]
    assert [entry["status"] for entry in entries] == ["kept", "ok", "ok"]
    # The kept output's classes are those the store counted: as an uninterrupted run's.
    done = compress(tmp_path, slide, "-k", 8, "-o", tmp_path / "two.ome.zarr", "--json")
    assert entries[0]["K"] == 8 and entries[0]["classes"] == json.loads(done.stdout)["classes"]
    for name in ("slide", "other", "third"):
        store = f"{name}.ome.zarr"
        assert store_bytes(out / store) == store_bytes(tmp_path / "ref" / store)
    assert all(leftovers(out / f"{n}.ome.zarr") == [] for n in ("slide", "other", "third"))
    # Without --resume the finished outputs are not replaced.
    again = compress(tmp_path, *batch, "--out-dir", out)
    assert again.returncode == 1 and "--force" in error_line(again)
    # A finished store of another K is not kept: refused before anything is written.
    other_k = compress(tmp_path, *batch[:3], "-k", 6, *batch[5:], "--out-dir", out, "--resume")
    assert other_k.returncode == 1 and "another K" in error_line(other_k)
    assert store_bytes(out / "slide.ome.zarr") == store_bytes(tmp_path / "ref/slide.ome.zarr")


def test_resume_keeps_a_single_finished_output_and_tables_it(tmp_path, slide):
    out, table = tmp_path / "out.ome.zarr", tmp_path / "classes.csv"
    first = compress(tmp_path, slide, "-k", 8, "-o", out, "--table", table, "-q")
    assert first.returncode == 0, first.stderr
    written, before = table.read_text(), store_bytes(out)
    table.unlink()  # as if killed between the store and its table
    kept = compress(tmp_path, slide, "-k", 8, "-o", out, "--table", table, "--resume")
    assert kept.returncode == 0, kept.stderr
    assert "complete already" in kept.stdout and stored_count(kept) == 0
    assert table.read_text() == written and store_bytes(out) == before
    # An empty folder is no finished store: not kept, left for --force to replace.
    empty = tmp_path / "empty.ome.zarr"
    empty.mkdir()
    refused = compress(tmp_path, slide, "-k", 8, "-o", empty, "--resume", "-q")
    assert refused.returncode == 1 and "--force" in error_line(refused)
    assert "complete" not in refused.stdout and not any(empty.iterdir())


def test_a_tiff_read_through_tifffile_zarr_view_resumes_too(tmp_path, ihc):
    """A stack (a layout TiffLevel does not read) is named by its file in every process,
    so a killed write resumes in another one."""
    import tifffile

    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([ihc, ihc[::-1]]), tile=(128, 128), photometric="rgb",
                     compression="zlib")  # fmt: skip
    ref = tmp_path / "ref.ome.zarr"
    assert compress(tmp_path, stack, "-k", 4, "-o", ref, "-q").returncode == 0
    out = tmp_path / "out.ome.zarr"
    killed = compress(tmp_path, stack, "-k", 4, "-o", out, "-q", kill_after=6)
    assert killed.returncode == -signal.SIGKILL and incomplete_store(out)
    resumed = compress(tmp_path, stack, "-k", 4, "-o", out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert store_bytes(out) == store_bytes(ref)


def test_force_discards_an_incomplete_store(tmp_path, slide):
    out = tmp_path / "out.ome.zarr"
    killed = compress(tmp_path, slide, "-k", 4, "-o", out, "-q", kill_after=5)
    assert killed.returncode == -signal.SIGKILL
    partial, _ = incomplete_store(out)
    result = compress(tmp_path, slide, "-k", 4, "-o", out, "-q", "--force")
    assert result.returncode == 0, result.stderr
    assert not partial.exists() and leftovers(out) == [] and out.is_dir()


def test_resume_is_for_ome_zarr_outputs(tmp_path, slide):
    result = compress(tmp_path, slide, "-k", 4, "-o", tmp_path / "out.kvq", "--resume")
    assert result.returncode == 2
    assert "--resume" in result.stderr and "OME-Zarr" in result.stderr
