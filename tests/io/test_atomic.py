"""Writes that complete or leave nothing, overwrites as cp/mv users expect, and the debris
of killed writers (real SIGKILLs) removed by the next write to the same destination."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import (
    atomic_write,
    clean_leftovers,
    leftovers,
    save,
    save_ome_zarr,
    write_store,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and permissions")


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_kmeans_vq.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def killed_at_marker(code: str, tmp_path: Path) -> None:
    """Run ``code`` in a new Python, wait until it prints MARK (it then sleeps), and kill
    it with SIGKILL: no cleanup handler of any kind runs."""
    script = tmp_path / "victim.py"
    script.write_text(textwrap.dedent(code))
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline()
        assert line.strip() == "MARK", process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def q():
    rng = np.random.default_rng(0)
    return quantize(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), 4)


# ---------------------------------------------------------------------------------------------
# overwrite semantics


def test_replaced_file_keeps_its_permissions(tmp_path, q):
    """Issue 22: --force reset a 0600 file to 0644."""
    out = tmp_path / "private.kvq"
    save(out, q)
    os.chmod(out, 0o600)
    save(out, q, deflate=False)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    os.chmod(out, 0o640)
    atomic_write(out, b"x")
    assert stat.S_IMODE(out.stat().st_mode) == 0o640 and out.read_bytes() == b"x"
    # Through the command line too.
    save(out, q)
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"")
    os.chmod(picture, 0o604)
    result = cli("decompress", out, "-o", picture, "--force", "-q")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(picture.stat().st_mode) == 0o604
    # A new file gets the usual mode (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    atomic_write(tmp_path / "new.bin", b"y")
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o666 & ~umask


def test_dangling_symlink_needs_force_and_is_replaced_not_followed(tmp_path, q):
    """Issue 22: a dangling symlink as output was replaced without --force."""
    link = tmp_path / "out.kvq"
    target = tmp_path / "elsewhere" / "target.kvq"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        atomic_write(link, b"data", overwrite=False)
    with pytest.raises(FileExistsError):
        save(link, q, overwrite=False)
    result = cli("compress", _png(tmp_path), "-k", 3, "-o", link)
    assert result.returncode == 1 and "exists; use --force" in result.stderr
    assert link.is_symlink()
    result = cli("compress", _png(tmp_path), "-k", 3, "-o", link, "--force", "-q")
    assert result.returncode == 0, result.stderr
    assert not link.is_symlink() and link.is_file() and not target.parent.exists()
    # A link to an existing file: replaced as mv would, the file it pointed to untouched.
    kept = tmp_path / "kept.kvq"
    kept.write_bytes(b"keep")
    link2 = tmp_path / "link2.kvq"
    link2.symlink_to(kept)
    save(link2, q)
    assert not link2.is_symlink() and kept.read_bytes() == b"keep"
    # A directory is never replaced by a file.
    (tmp_path / "dir.kvq").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write(tmp_path / "dir.kvq", b"x")


def test_no_clobber_holds_even_if_the_path_appears_while_writing(tmp_path):
    """overwrite=False is checked again, atomically, when the file is put in place."""
    out = tmp_path / "late.bin"

    def pieces():
        yield b"first "
        out.write_bytes(b"someone else's")  # appears while ours is being written
        yield b"second"

    with pytest.raises(FileExistsError):
        atomic_write(out, pieces(), overwrite=False)
    assert out.read_bytes() == b"someone else's" and names(tmp_path) == ["late.bin"]


def test_store_replaced_only_if_recognised(tmp_path, q):
    out = tmp_path / "labels.ome.zarr"
    save_ome_zarr(out, q)
    with pytest.raises(FileExistsError, match="exists"):
        save_ome_zarr(out, q)
    save_ome_zarr(out, q, overwrite=True)  # ours: replaced
    folder = tmp_path / "notes.zarr"
    folder.mkdir()
    (folder / "readme.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="did not write"):
        save_ome_zarr(folder, q, overwrite=True)
    from napari_kmeans_vq.io import omezarr

    with pytest.raises(FileExistsError, match="not an OME-Zarr store"):
        omezarr.write_labels(folder, q, overwrite=True)
    assert (folder / "readme.txt").read_text() == "mine"
    # A symbolic link (dangling or not) is replaced by the store, never followed.
    link = tmp_path / "link.ome.zarr"
    link.symlink_to(folder)
    with pytest.raises(FileExistsError):
        save_ome_zarr(link, q)
    save_ome_zarr(link, q, overwrite=True)
    assert link.is_dir() and not link.is_symlink()
    assert (folder / "readme.txt").read_text() == "mine"
    assert names(tmp_path) == ["labels.ome.zarr", "link.ome.zarr", "notes.zarr"]


# ---------------------------------------------------------------------------------------------
# killed writers


def test_killed_file_write_leaves_debris_the_next_write_removes(tmp_path):
    out = tmp_path / "out.kvq"
    out.write_bytes(b"old")
    killed_at_marker(
        f"""
        import time
        from napari_kmeans_vq.io import atomic_write

        def pieces():
            yield b"half of the new file"
            print("MARK", flush=True)
            time.sleep(600)
            yield b"never"

        atomic_write({str(out)!r}, pieces())
        """,
        tmp_path,
    )
    debris = leftovers(out)
    assert len(debris) == 1 and debris[0].name.startswith(".out.kvq.")
    assert debris[0].name.endswith(".tmp") and out.read_bytes() == b"old"
    atomic_write(out, b"new")
    assert out.read_bytes() == b"new" and leftovers(out) == []
    assert names(tmp_path) == ["out.kvq", "victim.py"]


def test_a_running_writer_is_left_alone(tmp_path):
    """Cleaning removes only what no living writer holds (the lock tells)."""
    out = tmp_path / "busy.bin"
    seen = {}

    def pieces():
        yield b"a"
        # Another write to the same destination meanwhile: our temporary file is locked.
        seen["cleaned"] = clean_leftovers(out)
        seen["during"] = leftovers(out)
        yield b"b"

    atomic_write(out, pieces())
    assert seen["cleaned"] == {"removed": [], "restored": None}
    assert len(seen["during"]) == 1 and out.read_bytes() == b"ab"


def test_killed_store_write_leaves_debris_the_next_write_removes(tmp_path):
    out = tmp_path / "s.ome.zarr"
    killed_at_marker(
        f"""
        import time
        from pathlib import Path
        from napari_kmeans_vq.io import write_store

        def write(tmp):
            (tmp / "zarr.json").write_text("{{}}")
            print("MARK", flush=True)
            time.sleep(600)

        write_store(Path({str(out)!r}), write, overwrite=False)
        """,
        tmp_path,
    )
    debris = leftovers(out)
    assert [p.suffix for p in debris] == [".tmp"] and debris[0].is_dir()
    write_store(out, lambda tmp: (tmp / "zarr.json").write_text("{}"), overwrite=False)
    assert leftovers(out) == [] and names(tmp_path) == ["s.ome.zarr", "victim.py"]


def test_compress_killed_while_writing_ome_zarr(tmp_path):
    """Issue 21: a compress killed with SIGKILL while writing OME-Zarr left hidden
    .out.ome.zarr.*.tmp folders; the next compress to the same destination removes them."""
    pytest.importorskip("zarr")
    source = tmp_path / "in.npy"
    np.save(source, np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8))
    out = tmp_path / "out.ome.zarr"
    # Killed once the first pyramid level's array exists in the temporary store.
    killed_at_marker(
        f"""
        import sys, time
        from napari_kmeans_vq.io import omezarr
        from napari_kmeans_vq.cli import main

        create = omezarr._create_level

        def create_then_stop(*args, **kwargs):
            made = create(*args, **kwargs)
            print("MARK", flush=True)
            time.sleep(600)
            return made

        omezarr._create_level = create_then_stop
        sys.exit(main(["compress", {str(source)!r}, "-k", "4", "-o", {str(out)!r}, "-q"]))
        """,
        tmp_path,
    )
    debris = leftovers(out)
    assert len(debris) == 1 and debris[0].name.startswith(".out.ome.zarr.")
    assert not out.exists()
    result = cli("compress", source, "-k", 4, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    assert leftovers(out) == [] and names(tmp_path) == ["in.npy", "out.ome.zarr", "victim.py"]


SWAP_VICTIM = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from napari_kmeans_vq.io import _atomic, save_ome_zarr
    from napari_kmeans_vq import quantize
    import numpy as np

    out = Path({out!r})
    {patch}
    image = np.random.default_rng(2).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    save_ome_zarr(out, quantize(image, 3), overwrite=True)
""")


def test_interrupted_swap_without_atomic_exchange_is_undone(tmp_path, q):
    """Issue 22: killed between moving the old store aside and renaming the new one in,
    no destination was left and the old store stayed hidden as .NAME.<hex>.old. Where the
    system has no atomic exchange, the next write puts the old store back first."""
    out = tmp_path / "labels.ome.zarr"
    save_ome_zarr(out, q)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    patch = """
    _atomic._exchange = lambda src, dst: False  # a system without renameat2
    rename = os.rename

    def rename_then_die(src, dst):
        rename(src, dst)
        if str(src) == str(out):  # the old store has just been moved aside
            print("MARK", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    os.rename = rename_then_die
    """
    killed_at_marker(SWAP_VICTIM.format(out=str(out), patch=textwrap.dedent(patch)), tmp_path)
    assert not out.exists()
    assert sorted(p.suffix for p in leftovers(out)) == [".old", ".tmp"]
    # The next run (here the command line, which tidies before it checks its output):
    # the old store is back, so replacing it needs --force as before the interrupted run.
    result = cli("compress", _png(tmp_path), "-k", 3, "-o", out)
    assert result.returncode == 1 and "use --force" in result.stderr
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before
    assert leftovers(out) == []
    result = cli("compress", _png(tmp_path), "-k", 3, "-o", out, "--force", "-q")
    assert result.returncode == 0, result.stderr
    assert leftovers(out) == [] and names(tmp_path) == ["labels.ome.zarr", "pic.png", "victim.py"]


def test_swap_is_one_atomic_exchange_where_the_system_has_one(tmp_path, q):
    """On Linux the old and the new store change places in one renameat2 call; killed
    right after it, the destination is the new store and the old one is debris that the
    next write removes."""
    if not sys.platform.startswith("linux"):
        pytest.skip("renameat2 is Linux's")
    out = tmp_path / "labels.ome.zarr"
    save_ome_zarr(out, q)
    patch = """
    exchange = _atomic._exchange

    def exchange_then_die(src, dst):
        assert exchange(src, dst)  # the system has it
        print("MARK", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    _atomic._exchange = exchange_then_die
    """
    killed_at_marker(SWAP_VICTIM.format(out=str(out), patch=textwrap.dedent(patch)), tmp_path)
    from napari_kmeans_vq.io.omezarr import read_labels

    _, meta = read_labels(out)
    assert len(meta["colors"]) == 3  # the new store (K = 3), whole
    assert [p.suffix for p in leftovers(out)] == [".tmp"]
    save_ome_zarr(out, q, overwrite=True)
    assert leftovers(out) == [] and names(tmp_path) == ["labels.ome.zarr", "victim.py"]


def _png(folder: Path) -> Path:
    path = folder / "pic.png"
    if not path.exists():
        from napari_kmeans_vq.io import encode_image

        rng = np.random.default_rng(3)
        path.write_bytes(encode_image(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)))
    return path
