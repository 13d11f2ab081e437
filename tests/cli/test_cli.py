"""The napari-kmeans-vq command line, run as users run it: in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CLI, one_line_error, run
from PIL import Image

from napari_kmeans_vq import bit_report, quantize
from napari_kmeans_vq.cli import main
from napari_kmeans_vq.io import load, png_bit_depth, write_store


@pytest.fixture(scope="module")
def photo(tmp_path_factory, request) -> Path:
    """A real crop of the IHC slide as a PNG file."""
    skimage_data = pytest.importorskip("skimage.data")
    image = np.ascontiguousarray(skimage_data.immunohistochemistry()[200:296, 150:278])
    path = tmp_path_factory.mktemp("cli") / "crop.png"
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def photo_array(photo) -> np.ndarray:
    with Image.open(photo) as im:
        return np.asarray(im)


def test_help_imports_no_napari_qt_pillow_dask_or_zarr():
    code = (
        "import sys\n"
        "from napari_kmeans_vq.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "finally:\n"
        "    heavy = ('napari', 'qtpy', 'PyQt5', 'PIL', 'dask', 'zarr', 'tifffile')\n"
        "    print('HEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0
    assert "HEAVY []" in result.stdout
    for command in ("compress", "decompress", "info", "sweep", "demo"):
        assert command in result.stdout


def test_every_subcommand_has_help(capsys):
    # In-process (the same main() the console script calls), to keep the suite fast.
    for command in ("compress", "decompress", "info", "sweep", "demo"):
        assert main([command, "--help"]) == 0
        assert f"usage: napari-kmeans-vq {command}" in capsys.readouterr().out
    assert main(["--version"]) == 0


def test_version_names_the_engine_build_and_its_threads(capsys):
    from napari_kmeans_vq.core import engine_info

    assert main(["--version"]) == 0
    first, engine = capsys.readouterr().out.strip().splitlines()
    info = engine_info()
    assert first.startswith("napari-kmeans-vq ")
    assert engine.startswith("engine: Cython, ") and info["compiler"] in engine
    assert engine.endswith(f", {info['threads']} thread" + "s" * (info["threads"] != 1))


def test_threads_option_gives_the_same_file_and_refuses_zero(photo, photo_array, tmp_path):
    out = tmp_path / "one.kvq"
    result = run("compress", photo, "-k", 6, "-o", out, "--threads", 1)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(load(out).labels, quantize(photo_array, 6).labels)
    bad = run("compress", photo, "-k", 6, "-o", tmp_path / "x.kvq", "--threads", 0)
    assert bad.returncode == 2 and "--threads must be a whole number >= 1" in bad.stderr


def test_compress_writes_kvq_and_prints_the_report(photo, photo_array, tmp_path):
    out = tmp_path / "crop.kvq"
    result = run("compress", photo, "-k", 6, "-o", out)
    assert result.returncode == 0, result.stderr
    q = quantize(photo_array, 6)
    data = load(out)
    assert np.array_equal(data.labels, q.labels) and np.array_equal(data.palette, q.palette)
    assert "formula" in result.stdout and ".kvq deflated" in result.stdout
    assert f"{q.report.total_bits:,}" in result.stdout
    assert "quantizing" in result.stderr  # progress goes to stderr


def test_compress_writes_the_bytes_it_measured(photo, photo_array, tmp_path):
    # One encoding per format: the file written is the one measured, and its size is
    # read back from the disk.
    from napari_kmeans_vq.io import size_report

    out = tmp_path / "crop.kvq"
    report = json.loads(run("compress", photo, "-k", 6, "-o", out, "--json", "-q").stdout)
    files = report["sizes"]["files"]
    assert files["kvq_deflated"] == report["output"]["bytes"] == out.stat().st_size
    assert files["kvq_index_layout"] == load(out).index_layout == "bytes"  # b = 3
    expected = size_report(quantize(photo_array, 6), input_bytes=photo.stat().st_size)
    assert files == expected["files"] and report["sizes"]["ratios"] == expected["ratios"]

    raw = tmp_path / "raw.kvq"
    report = json.loads(
        run("compress", photo, "-k", 6, "-o", raw, "--no-deflate", "--json").stdout
    )
    assert report["output"]["bytes"] == raw.stat().st_size == report["sizes"]["files"]["kvq_raw"]


def test_compress_reads_a_16_bit_colour_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    image = np.random.default_rng(0).integers(0, 4000, (40, 50, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", image, photometric="rgb")
    out = tmp_path / "deep.kvq"
    assert main(["compress", str(tmp_path / "deep.tif"), "-k", "5", "-o", str(out), "-q"]) == 0
    data = load(out)
    assert data.palette.dtype == np.uint16 and data.labels.shape == (40, 50)
    assert np.array_equal(data.labels, quantize(image, 5).labels)


def test_runs_as_a_module():
    result = subprocess.run(
        [sys.executable, "-m", "napari_kmeans_vq.cli", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: napari-kmeans-vq" in result.stdout


def test_compress_json(photo, tmp_path):
    out = tmp_path / "crop.png"
    result = run("compress", photo, "-k", 3, "-o", out, "--json", "--seed", 1, "--space", "lab")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_colors"] == 3 and report["seed"] == 1 and report["color_space"] == "lab"
    formula = report["sizes"]["formula"]
    assert formula["total_bits"] == bit_report(96 * 128, 3).total_bits
    assert report["output"]["bytes"] == out.stat().st_size
    assert report["sizes"]["input_bytes"] == photo.stat().st_size
    assert report["sizes"]["raw_bytes"] == 96 * 128 * 3
    ratios = report["sizes"]["ratios"]
    assert ratios["vs_raw"]["formula"] == pytest.approx(formula["formula_bytes"] / (96 * 128 * 3))
    assert set(ratios["vs_input"]) == {"formula", "kvq_raw", "kvq_deflated", "png"}
    assert png_bit_depth(out.read_bytes()) in (2, 8)
    assert load(out).n_colors == 3


def test_compress_without_output_writes_nothing(photo, tmp_path):
    result = run("compress", photo, "-k", 2, "-q", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_without_force(photo, tmp_path):
    out = tmp_path / "x.kvq"
    out.write_bytes(b"precious")
    result = run("compress", photo, "-k", 2, "-o", out)
    assert result.returncode == 1
    assert "use --force" in one_line_error(result)
    assert out.read_bytes() == b"precious"
    assert run("compress", photo, "-k", 2, "-o", out, "--force", "-q").returncode == 0
    assert load(out).n_colors == 2


@pytest.mark.parametrize(
    "args",
    [
        ["compress", "IMAGE", "-k", "0"],
        ["compress", "IMAGE", "-k", "many"],
        ["compress", "IMAGE"],
        ["compress", "IMAGE", "-k", "4", "-o", "out.jpg"],
        ["compress", "IMAGE", "-k", "4", "--space", "hsv"],
        ["sweep", "IMAGE", "--csv", "--json"],
        ["sweep", "IMAGE", "-k", "2,x"],
        ["sweep", "IMAGE", "--gallery", "g.jpg"],
        ["decompress", "in.kvq"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(photo, tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    args = [str(photo) if a == "IMAGE" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_usage_error_exit_2_in_a_subprocess(photo, tmp_path):
    for args in (["compress", photo, "-k", "0"], ["compress", photo, "-k", 4, "-o", "out.jpg"]):
        result = run(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert "usage: napari-kmeans-vq compress" in result.stderr
        assert "Traceback" not in result.stderr


def test_failures_exit_1_with_one_line_and_debug_shows_traceback(photo, tmp_path):
    result = run("compress", tmp_path / "missing.png", "-k", 3)
    assert result.returncode == 1
    assert "no such file" in one_line_error(result)
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    result = run("compress", not_image, "-k", 3)
    assert result.returncode == 1 and "cannot read" in one_line_error(result)
    result = run("compress", photo, "-k", 300, "-o", tmp_path / "big.png")
    assert result.returncode == 1 and "256 colours" in one_line_error(result)
    assert not (tmp_path / "big.png").exists()
    result = run("compress", tmp_path / "missing.png", "-k", 3, "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_decompress_and_info(photo, photo_array, tmp_path):
    kvq = tmp_path / "c.kvq"
    assert run("compress", photo, "-k", 16, "-o", kvq, "-q").returncode == 0
    q = quantize(photo_array, 16)

    png = tmp_path / "c.png"
    result = run("decompress", kvq, "-o", png)
    assert result.returncode == 0, result.stderr
    with Image.open(png) as im:
        assert np.array_equal(np.asarray(im), q.reconstruction)
    npy = tmp_path / "c.npy"
    assert run("decompress", kvq, "-o", npy, "-q").returncode == 0
    assert np.array_equal(np.load(npy, allow_pickle=False), q.reconstruction)
    assert run("decompress", kvq, "-o", npy, "-q").returncode == 1  # exists

    result = run("info", kvq)
    assert result.returncode == 0
    assert "K = 16" in result.stdout and "checks passed" in result.stdout
    summary = json.loads(run("info", kvq, "--json").stdout)
    assert summary["n_colors"] == 16 and summary["bits_per_index"] == 4
    assert summary["file_size"] == kvq.stat().st_size
    assert summary["report"]["total_bits"] == q.report.total_bits
    assert summary["palette"] == q.palette.tolist()


def test_damaged_file_fails_cleanly(photo, tmp_path):
    kvq = tmp_path / "d.kvq"
    assert run("compress", photo, "-k", 4, "-o", kvq, "-q").returncode == 0
    blob = bytearray(kvq.read_bytes())
    blob[-3] ^= 0x40
    kvq.write_bytes(bytes(blob))
    for args in (["info", kvq], ["decompress", kvq, "-o", tmp_path / "d.png"]):
        result = run(*args)
        assert result.returncode == 1
        assert "checksum mismatch" in one_line_error(result)
    assert not (tmp_path / "d.png").exists()
    result = run("info", photo)
    assert result.returncode == 1 and "not an indexed" in one_line_error(result)


def test_sweep_csv_json_and_gallery(photo, photo_array, tmp_path):
    gallery = tmp_path / "g.png"
    result = run("sweep", photo, "-k", "2,3,6,16", "--csv", "--gallery", gallery)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["K"]) for r in rows] == [2, 3, 6, 16]
    for row in rows:
        k = int(row["K"])
        assert int(row["total_bits"]) == bit_report(96 * 128, k).total_bits
        assert int(row["kvq_bytes"]) == 56 + 3 * k + (96 * 128 * (k - 1).bit_length() + 7) // 8
        assert int(row["kvq_deflated_bytes"]) < int(row["kvq_bytes"])
    assert "[4/4]" in result.stderr
    with Image.open(gallery) as im:
        assert im.width > 5 * 128 and im.height > 96  # original + 4 tiles side by side

    data = json.loads(run("sweep", photo, "-k", "4 8", "--json", "-q").stdout)
    assert [row["K"] for row in data["rows"]] == [4, 8]
    assert data["rows"][0]["J"] == pytest.approx(quantize(photo_array, 4).distortion)

    table = run("sweep", photo, "-k", "2", "-q").stdout
    assert "formula bits" in table and "PSNR" in table


def test_demo_writes_the_files_and_the_table(tmp_path):
    pytest.importorskip("skimage")
    out = tmp_path / "demo"
    result = run("demo", "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["image"] == "ihc" and summary["shape"] == [512, 512, 3]
    assert [row["K"] for row in summary["rows"]] == [2, 3, 6, 16]
    names = sorted(p.name for p in out.iterdir())
    expected = ["gallery.png", "ihc.png"]
    expected += [f"ihc-k{k}.{ext}" for k in (2, 3, 6, 16) for ext in ("kvq", "png")]
    assert names == sorted(expected)
    for row in summary["rows"]:
        k = row["K"]
        assert (out / f"ihc-k{k}.kvq").stat().st_size == row["kvq_deflated_bytes"]
        assert (out / f"ihc-k{k}.png").stat().st_size == row["png_bytes"]
        assert row["total_bits"] == bit_report(512 * 512, k).total_bits
    again = run("demo", "--out", out)
    assert again.returncode == 1 and "--force" in one_line_error(again)


def test_no_deflate_writes_exactly_the_formula_plus_header(photo, tmp_path, capsys):
    out = tmp_path / "raw.kvq"
    assert main(["compress", str(photo), "-k", "6", "-o", str(out), "--no-deflate", "-q"]) == 0
    n = 96 * 128
    assert out.stat().st_size == 56 + 6 * 3 + (n * 3 + 7) // 8
    assert not load(out).deflated
    capsys.readouterr()


def test_demo_falls_back_to_a_generated_image_without_scikit_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # import now raises ImportError
    assert main(["demo", "--out", str(tmp_path / "d"), "--json", "-q"]) == 0
    captured = capsys.readouterr()
    assert "scikit-image is not installed" in captured.err
    summary = json.loads(captured.out)
    assert summary["image"] == "generated" and summary["shape"] == [256, 256, 3]
    assert (tmp_path / "d" / "generated-k16.kvq").exists()


# ---------------------------------------------------------------------------------------------
# streamed inputs and OME-Zarr outputs


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    """A real 160 x 224 crop of the IHC slide."""
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.immunohistochemistry()[100:260, 120:344])


@pytest.fixture(scope="module")
def zarr_input(tmp_path_factory, tile) -> Path:
    zarr = pytest.importorskip("zarr")
    path = tmp_path_factory.mktemp("zin") / "tile.zarr"
    z = zarr.open_array(
        str(path), mode="w", shape=tile.shape, chunks=(64, 64, 3), dtype=tile.dtype,
        zarr_format=2,
    )  # fmt: skip
    z[:] = tile
    return path


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_store(path: Path):
    """Stored label values and the palette colours, through omezarr.read_labels."""
    omezarr = pytest.importorskip("napari_kmeans_vq.io.omezarr")
    levels, meta = omezarr.read_labels(path)
    labels = np.asarray(levels[0].compute())
    colours = {c["label-value"]: c["rgba"] for c in meta["colors"]}
    return labels, colours, meta


def test_compress_zarr_streams_ome_zarr_labels(zarr_input, tile, tmp_path):
    out = tmp_path / "tile.ome.zarr"
    result = run("compress", zarr_input, "-k", 8, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    q = quantize(tile, 8)
    labels, colours, _ = read_store(out)
    # Label value i + 1 is codeword i (0 is NGFF's background).
    assert np.array_equal(labels - 1, q.labels)
    assert np.array_equal(np.array(report["palette"]), q.palette)
    assert sorted(colours) == list(range(1, 9))
    assert [colours[i + 1] for i in range(8)] == [[*map(int, c), 255] for c in q.palette]
    assert report["input"]["streamed"] is True and report["fit"] == "exact"
    assert report["output"]["format"] == "ome-zarr"
    assert report["output"]["bytes"] == tree_bytes(out) == report["sizes"]["files"]["ome_zarr"]
    assert report["sizes"]["formula"]["total_bits"] == q.report.total_bits
    assert report["sizes"]["input_bytes"] == tree_bytes(zarr_input)
    assert report["distortion"] == pytest.approx(q.distortion)
    # Progress, stage by stage, on stderr; no temporary directories left behind.
    assert "histogram:" in result.stderr and "write: 100%" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["tile.ome.zarr"]


def test_ome_zarr_output_reads_with_ome_zarr_py(zarr_input, tile, tmp_path):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    out = tmp_path / "with-image.ome.zarr"
    result = run("compress", zarr_input, "-k", 6, "-o", out, "--with-image", "original", "-q")
    assert result.returncode == 0, result.stderr
    q = quantize(tile, 6)
    nodes = list(Reader(parse_url(str(out)))())  # NGFF 0.5, told from the store itself
    image = next(n for n in nodes if n.load(Multiscales) and not n.load(Label))
    label = next(n for n in nodes if n.load(Label))
    assert np.array_equal(np.asarray(image.data[0]), np.moveaxis(tile, -1, 0))
    assert np.array_equal(np.asarray(label.data[0]) - 1, q.labels)
    colors = label.metadata["color"]
    assert np.allclose(np.array([colors[i][:3] for i in range(1, 7)]) * 255, q.palette)


def test_compress_tiled_tiff_lazily(tile, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    source = tmp_path / "tile.tif"
    tifffile.imwrite(source, tile, tile=(64, 64))
    out = tmp_path / "tiff.ome.zarr"
    result = run("compress", source, "-k", 5, "--lazy", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "streamed" in result.stdout and "OME-Zarr labels (store)" in result.stdout
    assert f"wrote {out} ({tree_bytes(out):,} bytes)" in result.stdout
    labels, colours, _ = read_store(out)
    q = quantize(tile, 5)
    assert np.array_equal(labels - 1, q.labels)
    assert [colours[i + 1][:3] for i in range(5)] == q.palette.tolist()


def test_small_input_to_ome_zarr_keeps_the_in_memory_report(photo, photo_array, tmp_path):
    out = tmp_path / "crop.zarr"
    result = run("compress", photo, "-k", 4, "-o", out, "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    files = report["sizes"]["files"]
    assert files["kvq_deflated"] and files["png"]  # encoded in memory as before
    assert files["ome_zarr"] == tree_bytes(out) == report["output"]["bytes"]
    labels, _, _ = read_store(out)
    assert np.array_equal(labels - 1, quantize(photo_array, 4).labels)


def test_ome_zarr_store_needs_force_and_failures_leave_nothing(zarr_input, tmp_path):
    out = tmp_path / "s.ome.zarr"
    assert run("compress", zarr_input, "-k", 4, "-o", out, "-q").returncode == 0
    result = run("compress", zarr_input, "-k", 3, "-o", out)
    assert result.returncode == 1 and "use --force" in one_line_error(result)
    assert read_store(out)[0].max() == 4
    # A failure part-way through writing (here raised after some files are in): nothing
    # new appears and the old store is kept.
    before = sorted(p.name for p in tmp_path.iterdir())

    def fails_midway(tmp):
        (tmp / "half").write_text("written before the failure")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_store(out, fails_midway, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert read_store(out)[0].max() == 4
    # --force replaces the store once the new one is complete.
    result = run("compress", zarr_input, "-k", 3, "-o", out, "--force", "-q")
    assert result.returncode == 0, result.stderr
    assert read_store(out)[0].max() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_force_replaces_only_a_store_it_recognises(zarr_input, tmp_path):
    """--force never deletes an arbitrary *.zarr folder, nor replaces a file with a store."""
    folder = tmp_path / "data.zarr"
    folder.mkdir()
    (folder / "precious").write_text("keep me")
    result = run("compress", zarr_input, "-k", 3, "-o", folder, "--force")
    assert result.returncode == 1
    assert "not an OME-Zarr store napari-kmeans-vq writes" in one_line_error(result)
    # A zarr array someone else wrote is not a labels store either.
    zarr = pytest.importorskip("zarr")
    other = tmp_path / "array.zarr"
    zarr.open_array(str(other), mode="w", shape=(4, 4), dtype="u1")[:] = 7
    result = run("compress", zarr_input, "-k", 3, "-o", other, "--force")
    assert result.returncode == 1 and "refusing to replace it" in one_line_error(result)
    assert (folder / "precious").read_text() == "keep me"
    assert np.asarray(zarr.open_array(str(other), mode="r")).max() == 7
    plain = tmp_path / "plain.ome.zarr"
    plain.write_text("a file")
    result = run("compress", zarr_input, "-k", 3, "-o", plain, "--force")
    assert result.returncode == 1 and "not a directory" in one_line_error(result)
    # An empty folder, or a store this tool wrote (NGFF 0.5, labels alone), is replaced.
    empty = tmp_path / "empty.ome.zarr"
    empty.mkdir()
    assert run("compress", zarr_input, "-k", 3, "-o", empty, "--force", "-q").returncode == 0
    assert read_store(empty)[0].max() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "array.zarr",
        "data.zarr",
        "empty.ome.zarr",
        "plain.ome.zarr",
    ]


def test_grey_image_stored_with_its_labels(tmp_path):
    zarr = pytest.importorskip("zarr")
    grey = tmp_path / "grey.zarr"
    values = np.add.outer(np.arange(40), np.arange(50)).astype(np.uint8)
    zarr.open_array(str(grey), mode="w", shape=(40, 50), chunks=(16, 16), dtype="u1")[:] = values
    for with_image in ("original", "reconstruction"):
        out = tmp_path / f"{with_image}.ome.zarr"
        result = run("compress", grey, "-k", 4, "-o", out, "--with-image", with_image, "-q")
        assert result.returncode == 0, result.stderr
        root = zarr.open_group(str(out), mode="r")
        attrs = root.attrs.asdict()
        axes = [axis["name"] for axis in attrs.get("ome", attrs)["multiscales"][0]["axes"]]
        assert axes == ["c", "y", "x"] and root["0"].shape == (1, 40, 50)
        labels = read_store(out)[0] - 1
        if with_image == "original":
            np.testing.assert_array_equal(root["0"][0], values)
        else:
            # One grey level per cluster, the same wherever the label is the same.
            stored = root["0"][0]
            for k in range(4):
                assert len(np.unique(stored[labels == k])) == 1


def test_streamed_input_bad_paths_and_combinations(zarr_input, photo, tmp_path):
    for bad in (tmp_path / "missing.zarr", tmp_path / "missing.tif"):
        result = run("compress", bad, "-k", 3, "--lazy", "-o", tmp_path / "o.ome.zarr")
        assert result.returncode == 1
        assert "no such file" in one_line_error(result)
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    result = run("compress", empty, "-k", 3)
    assert result.returncode == 1 and "cannot read" in one_line_error(result)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\0 this is not a TIFF")
    result = run("compress", junk, "-k", 3, "--lazy")
    assert result.returncode == 1 and "cannot read" in one_line_error(result)
    # Usage errors: a streamed input over the in-memory limit written as .kvq, --lazy on
    # a PNG, --with-image without an OME-Zarr output.
    for args in (
        [zarr_input, "-k", 3, "-o", tmp_path / "x.kvq", "--max-pixels", 1000],
        [photo, "-k", 3, "--lazy"],
        [photo, "-k", 3, "--with-image", "original"],
    ):
        result = run("compress", *args)
        assert result.returncode == 2, result.stderr
        assert "usage: napari-kmeans-vq compress" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.zarr", "junk.tif"]


def test_streamed_input_over_the_limit_without_output_is_fitted_and_reported(zarr_input):
    result = run("compress", zarr_input, "-k", 3, "--max-pixels", 1000, "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_colors"] == 3 and report["input"]["streamed"] and report["output"] is None


def test_small_streamed_input_written_as_kvq(zarr_input, tile, tmp_path):
    """A streamed input within the in-memory limit is fitted block by block, then its
    labels computed in memory: any output, and the full report."""
    out = tmp_path / "tile.kvq"
    result = run("compress", zarr_input, "-k", 6, "-o", out, "--json", "-q")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input"]["streamed"] is True
    assert report["sizes"]["files"]["kvq_deflated"] == out.stat().st_size
    assert np.array_equal(load(out).labels, quantize(tile, 6).labels)


def test_streamed_input_without_output_prints_the_formula(zarr_input, tile):
    result = run("compress", zarr_input, "-k", 16, "-q")
    assert result.returncode == 0 and result.stderr == ""
    assert f"{bit_report(tile.shape[0] * tile.shape[1], 16).total_bits:,}" in result.stdout


def test_info_and_decompress_on_hostile_inputs(tmp_path):
    """Issues 21 and 22: info on a FIFO hung forever, on /dev/zero grew to 3.8 GB; a .kvq
    claiming 2**31 - 1 pixels made decompress allocate 6 GiB; nested JSON raised
    RecursionError. Each is now one line and exit status 1."""
    import struct
    import zlib

    from napari_kmeans_vq.io import encode_indexed_png
    from napari_kmeans_vq.io.kvq import MAGIC

    fifo = tmp_path / "pipe.kvq"
    os.mkfifo(fifo)
    result = run("info", fifo)  # run() has a timeout: a hang fails the test
    assert result.returncode == 1 and "FIFO" in one_line_error(result)
    result = run("info", "/dev/zero")
    assert result.returncode == 1 and "character device" in one_line_error(result)

    def one_colour(n: int, channels: int) -> bytes:
        payload = zlib.compress(b"")
        fields = (MAGIC, 1, 1, 1, 1, 0, 0, channels, 0, 1, len(payload), 0, 0)
        head = struct.pack("<8sHHBBBBHHIQII", *fields) + struct.pack("<Q", n)
        blob = head + bytes(channels) + payload
        crc = zlib.crc32(blob[36:], zlib.crc32(blob[:32]))
        return blob[:32] + struct.pack("<I", crc) + blob[36:]

    huge = tmp_path / "huge.kvq"
    huge.write_bytes(one_colour(2**31 - 1, 3))
    result = run("decompress", huge, "-o", tmp_path / "huge.npy")
    message = one_line_error(result)
    assert result.returncode == 1 and "2,147,483,647 pixels, over the limit" in message
    assert "--max-pixels" in message and not (tmp_path / "huge.npy").exists()
    # Raising the limit lets the labels be read, but the decoded image is bounded too:
    # at most 4 values a pixel of the limit (16 channels here).
    huge.write_bytes(one_colour(2**24, 16))
    result = run("decompress", huge, "-o", tmp_path / "huge.npy", "--max-pixels", 2**24)
    assert result.returncode == 1 and "4 x the limit" in one_line_error(result)
    assert not (tmp_path / "huge.npy").exists()
    png = bytearray(encode_indexed_png(np.zeros((2, 2), np.uint8), np.eye(3, dtype=np.uint8)))
    at = png.index(b"tEXt") - 4
    (length,) = struct.unpack(">I", png[at : at + 4])
    body = b"tEXtnapari-kmeans-vq\0" + b"[" * 100_000
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    nested = tmp_path / "nested.png"
    nested.write_bytes(bytes(png[:at]) + chunk + bytes(png[at + 12 + length :]))
    result = run("info", nested)
    assert result.returncode == 1 and "nested 100000 deep" in one_line_error(result)


def test_npy_over_the_limit_is_memory_mapped_and_streamed(tile, tmp_path):
    """A .npy over --max-pixels is not refused: it is streamed block by block from a
    memory map, to OME-Zarr, with the labels the in-memory fit gives."""
    source = tmp_path / "tile.npy"
    np.save(source, tile)
    out = tmp_path / "tile.ome.zarr"
    result = run("compress", source, "-k", 6, "-o", out, "--max-pixels", 1000, "--json", "-q")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["input"]["streamed"] is True
    assert np.array_equal(read_store(out)[0] - 1, quantize(tile, 6).labels)


def test_limit_from_the_environment(tmp_path, photo):
    """NAPARI_KMEANS_VQ_MAX_PIXELS sets the one limit for the process; --max-pixels wins."""
    out = tmp_path / "x.kvq"
    assert run("compress", photo, "-k", 3, "-o", out, "-q").returncode == 0
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "NAPARI_KMEANS_VQ_MAX_PIXELS": "1000"}
    result = subprocess.run(
        [*CLI, "info", str(out)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 1 and "over the limit of 1,000" in one_line_error(result)
    result = subprocess.run(
        [*CLI, "info", str(out), "--max-pixels", "20000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_threads_option_needs_no_dask(monkeypatch):
    import sys

    from napari_kmeans_vq.large.fit import dask_workers

    monkeypatch.setitem(sys.modules, "dask", None)  # as if not installed
    with dask_workers(2):
        pass
