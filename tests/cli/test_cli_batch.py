"""Cohort codebooks, batches, standard input and output, and the CLI's own messages, run as
users run the command (in a subprocess) on the package's sample images."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error, run
from PIL import Image

from napari_kmeans_vq import Codebook, load, load_codebook, quantize
from napari_kmeans_vq.cli import main
from napari_kmeans_vq.io.codebook import read_codebook
from napari_kmeans_vq.io.samples import demo_image, stain_patches


def _save(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, ihc) -> dict[str, np.ndarray]:
    """Six images from the samples: crops of the IHC slide, flips of one (the same colours
    elsewhere), the generated H&E tile and a crop of the demo image."""
    demo, _, _ = demo_image()
    crop = ihc[200:328, 150:278]
    return {
        "crop": crop,
        "crop_lr": crop[:, ::-1],
        "crop_ud": crop[::-1],
        "corner": ihc[:96, :160],
        "stains": stain_patches(128),
        "demo": demo[300:400, 50:150],
    }


@pytest.fixture(scope="module")
def folder(tmp_path_factory, cohort) -> Path:
    """The cohort as PNG files in a folder."""
    root = tmp_path_factory.mktemp("cohort") / "slides"
    root.mkdir()
    for name, image in cohort.items():
        _save(root / f"{name}.png", image)
    return root


def test_fit_writes_the_librarys_cohort_codebook(folder, cohort, tmp_path):
    out = tmp_path / "cohort.json"
    names = ",".join(f"c{i}" for i in range(6))
    result = run("fit", folder, "-k", 6, "-o", out, "--names", names, "-q")
    assert result.returncode == 0, result.stderr
    expected = Codebook(6).fit([cohort[k] for k in sorted(cohort)])  # the folder's order
    read = read_codebook(out)
    assert np.array_equal(read.codebook.palette_, expected.palette_)
    assert read.names == tuple(names.split(","))
    assert "wrote" in result.stdout and "c5" in result.stdout
    # The codebook's names travel into the files written with it, and --names wins.
    kvq = tmp_path / "crop.kvq"
    assert run("compress", folder / "crop.png", "--codebook", out, "-o", kvq).returncode == 0
    assert load(kvq).names == names.split(",")
    other = "u,v,w,x,y,z"
    png = tmp_path / "crop.png"
    result = run("compress", folder / "crop.png", "--codebook", out, "--names", other, "-o", png)
    assert result.returncode == 0 and load(png).names == other.split(",")


def test_cohort_codebook_gives_one_label_per_colour_in_every_image(folder, cohort, tmp_path):
    book = tmp_path / "cohort.json"
    assert run("fit", folder, "-k", 8, "-o", book, "--mask", "auto", "-q").returncode == 0
    out = tmp_path / "out"
    result = run("compress", folder, "--codebook", book, "--out-dir", out, "-q")
    assert result.returncode == 0, result.stderr
    codebook = load_codebook(book)
    label_of: dict[tuple, int] = {}
    shared = 0
    for name, image in cohort.items():
        data = load(out / f"{name}.kvq")
        assert np.array_equal(data.labels, codebook.encode(image))
        assert np.array_equal(data.palette, codebook.palette_)
        colours = image.reshape(-1, 3)
        labels = data.labels.reshape(-1)
        pairs = {tuple(c): int(v) for c, v in zip(colours, labels, strict=True)}
        for colour, label in pairs.items():
            if colour in label_of:
                shared += 1
                assert label_of[colour] == label, colour
            label_of[colour] = label
    assert shared > 1000  # the flips and crops share many colours with each other


def test_codebook_options_are_checked(folder, tmp_path):
    book = tmp_path / "c.json"
    assert run("fit", folder / "crop.png", "-k", 4, "--space", "lab", "-o", book).returncode == 0
    image = folder / "crop.png"
    for args, words in (
        (["-k", "5"], "-k 5 differs from the codebook's K = 4"),
        (["--space", "rgb"], "--space rgb differs"),
        (["--seed", "3"], "--seed"),
        (["--names", "a,b"], "--names gives 2 names for K = 4"),
    ):
        result = run("compress", image, "--codebook", book, *args)
        assert result.returncode == 2 and words in result.stderr, result.stderr
    assert run("compress", image).returncode == 2  # neither -k nor --codebook
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "napari-kmeans-vq codebook", "version": 9}')
    result = run("compress", image, "--codebook", bad)
    assert result.returncode == 1 and "version 9" in one_line_error(result)
    # The same K is fine; the report says where the codebook came from.
    result = run("compress", image, "--codebook", book, "-k", 4, "--space", "lab")
    assert result.returncode == 0 and f"from {book}" in result.stdout


def test_batch_on_a_folder_writes_every_output_and_one_summary(folder, cohort, tmp_path):
    # The acceptance test: at least 5 images and one corrupt file among them.
    slides = tmp_path / "slides"
    slides.mkdir()
    for path in folder.iterdir():
        (slides / path.name).write_bytes(path.read_bytes())
    (slides / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 20)
    out = tmp_path / "out"
    summary = out / "summary.csv"
    result = run("compress", slides, "-k", 6, "--out-dir", out, "--summary", summary)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 2, result.stderr  # the broken input, and the count at the end
    assert "broken.png" in errors[0] and "1 of 7 inputs failed" in errors[1]
    assert "Traceback" not in result.stderr
    rows = list(csv.DictReader(io.StringIO(summary.read_text())))
    assert {r["image"] for r in rows} == {str(slides / f"{n}.png") for n in [*cohort, "broken"]}
    for name, image in cohort.items():
        q = quantize(image, 6)
        written = out / f"{name}.kvq"
        assert np.array_equal(load(written).labels, q.labels)
        mine = [r for r in rows if r["image"] == str(slides / f"{name}.png")]
        assert len(mine) == q.n_colors and {r["status"] for r in mine} == {"ok"}
        assert sum(int(r["pixels"]) for r in mine) == q.report.n_pixels
        assert [int(r["pixels"]) for r in mine] == q.cluster_sizes.tolist()
        assert float(mine[0]["J"]) == pytest.approx(q.distortion)
        assert float(mine[0]["psnr"]) == pytest.approx(q.psnr)
        assert int(mine[0]["bits"]) == q.report.total_bits
        assert int(mine[0]["bytes"]) == written.stat().st_size
    (broken,) = [r for r in rows if r["status"] == "failed"]
    assert "broken.png" in broken["image"] and broken["error"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.kvq" for n in cohort] + ["summary.csv"]
    )
    assert "6 of 7 images done" in result.stdout


def test_batch_globs_templates_json_summary_and_names(folder, cohort, tmp_path):
    out = tmp_path / "png"
    summary = tmp_path / "summary.json"
    names = "a,b,c,d"
    result = run(
        "compress", str(folder / "crop*.png"), folder / "stains.png", "-k", 4,
        "--out-dir", out, "--name", "{stem}-k{k}.png", "--summary", summary,
        "--names", names, "--pixel-size", "0.5", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "crop-k4.png",
        "crop_lr-k4.png",
        "crop_ud-k4.png",
        "stains-k4.png",
    ]
    images = json.loads(summary.read_text())["images"]
    assert [Path(e["image"]).name for e in images] == [
        "crop.png",
        "crop_lr.png",
        "crop_ud.png",
        "stains.png",
    ]
    for entry in images:
        assert [c["name"] for c in entry["classes"]] == names.split(",")
        assert all(c["area_um2"] == c["pixels"] * 0.25 for c in entry["classes"])
        assert entry["bytes"] == Path(entry["output"]).stat().st_size
    # Outputs are not overwritten without --force, and nothing is written then.
    again = run("compress", folder / "crop.png", folder / "stains.png", "-k", 4,
                "--out-dir", out, "--name", "{stem}-k{k}.png")  # fmt: skip
    assert again.returncode == 1 and "--force" in one_line_error(again)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-o", "x.kvq"], "-o names one output"),
        (["--table", "t.csv", "--out-dir", "o"], "--summary"),
        (["--out-dir", "o", "--name", "same.kvq"], "{stem}"),
        (["--out-dir", "o", "--summary", "s.txt"], ".csv or .json"),
        (["--name", "{stem}.kvq"], "--name goes with --out-dir"),
        (["--format", "png"], "--format goes with -o -"),
    ],
)
def test_batch_usage_errors(folder, tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    images = [str(folder / "crop.png"), str(folder / "stains.png")]
    assert main(["compress", *images, "-k", "3", *args]) == 2
    assert words in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_inputs_naming_nothing_are_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("compress", tmp_path / "empty", "-k", 3)
    assert result.returncode == 2 and "holds no images" in result.stderr
    result = run("compress", str(tmp_path / "*.png"), "-k", 3)
    assert result.returncode == 2 and "matches no file" in result.stderr


def test_standard_input_and_output(folder, cohort, tmp_path):
    png = (folder / "crop.png").read_bytes()
    q = quantize(cohort["crop"], 5)
    result = run("compress", "-", "-k", 5, "-o", "-", stdin=png)
    assert result.returncode == 0, result.stderr
    (tmp_path / "from_stdin.kvq").write_bytes(result.stdout)
    data = load(tmp_path / "from_stdin.kvq")
    assert np.array_equal(data.labels, q.labels)
    assert b"(standard input)" in result.stderr  # the report goes to stderr
    as_png = run("compress", "-", "-k", 5, "-o", "-", "--format", "png", stdin=png)
    assert as_png.returncode == 0 and as_png.stdout.startswith(b"\x89PNG")
    info = run("info", "-", "--json", stdin=result.stdout)
    assert info.returncode == 0 and json.loads(info.stdout)["n_colors"] == 5
    decoded = run("decompress", "-", "-o", "-", stdin=result.stdout)
    assert decoded.returncode == 0
    with Image.open(io.BytesIO(decoded.stdout)) as im:
        assert np.array_equal(np.asarray(im), q.reconstruction)
    book = run("fit", folder / "crop.png", "-k", 5, "-o", "-", "-q")
    assert book.returncode == 0 and json.loads(book.stdout)["classes"][4]["label"] == 5
    result = run("compress", "-", folder / "crop.png", "-k", 5, stdin=b"")
    assert result.returncode == 2 and b"only input" in result.stderr


def test_rgba_input_gives_one_notice_not_a_python_warning(folder, cohort, tmp_path):
    rgba = np.dstack([cohort["stains"], np.full(cohort["stains"].shape[:2], 200, np.uint8)])
    path = _save(tmp_path / "rgba.png", rgba)
    result = run("compress", path, "-k", 4, "-o", tmp_path / "x.png", "-q", warnings=None)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("napari-kmeans-vq: note: ")
    assert "alpha" in lines[0] and "Warning" not in result.stderr


def test_png_limits_fail_before_reading_or_fitting(tmp_path):
    # The input does not even exist: the PNG's limit is said first.
    result = run("compress", tmp_path / "missing.png", "-k", 300, "-o", tmp_path / "x.png")
    assert result.returncode == 1
    message = one_line_error(result)
    assert "256 colours" in message and "K = 300" in message
    stack = np.zeros((2, 8, 8, 3), np.uint8)
    np.save(tmp_path / "stack.npy", stack)
    result = run("compress", tmp_path / "stack.npy", "-k", 2, "-o", tmp_path / "x.png")
    assert result.returncode == 1 and "2D" in one_line_error(result)
    assert "quantizing" not in result.stderr  # refused before the fit


def test_ome_zarr_without_the_large_extra_says_what_to_install(
    folder, tmp_path, monkeypatch, capsys
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "dask" else real(name, *a)
    )
    out = str(tmp_path / "x.ome.zarr")
    code = main(["compress", str(folder / "crop.png"), "-k", "3", "-o", out])
    assert code == 1
    err = capsys.readouterr().err
    assert 'pip install "napari-kmeans-vq[large]"' in err and "ModuleNotFoundError" not in err


def test_messages_use_the_clis_flags(tmp_path):
    grey = tmp_path / "grey.png"
    _save(grey, stain_patches(64)[..., 0])
    result = run("compress", grey, "-k", 3, "--space", "lab")
    assert result.returncode == 1
    message = one_line_error(result)
    assert "--space lab" in message and "color_space" not in message


def test_demo_table_shows_the_bytes_written(tmp_path):
    result = run("demo", "--out", tmp_path / "demo", "-q")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[1].split()
    assert ".kvq" in header and "deflated" not in header and "packed" not in header
    name = lines[0].split(":")[0]
    for line in lines[2:6]:
        cells = line.split()
        k = int(cells[0])
        kvq = (tmp_path / "demo" / f"{name}-k{k}.kvq").stat().st_size
        png = (tmp_path / "demo" / f"{name}-k{k}.png").stat().st_size
        assert int(cells[4].replace(",", "")) == kvq
        assert int(cells[5].replace(",", "")) == png
    assert "bytes of the file written" in result.stdout


def test_k_auto_is_the_librarys_choice(folder, cohort, tmp_path):
    result = run("compress", folder / "crop.png", "-k", "auto", "--target-psnr", 30, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    q = quantize(cohort["crop"], "auto", target_psnr=30)
    assert report["n_colors"] == q.n_colors and report["palette"] == q.palette.tolist()
    assert report["psnr"] >= 30 and report["auto"]["n_colors"] == q.n_colors
    for args, words in (
        (["-k", "auto"], "one target"),
        (["-k", "auto", "--target-psnr", "30", "--target-j", "9"], "not both"),
        (["-k", "8", "--target-j", "9"], "--target-j goes with -k auto"),
    ):
        result = run("compress", folder / "crop.png", *args)
        assert result.returncode == 2 and words in result.stderr
    # The library's refusal, in the command's flags.
    result = run("compress", folder / "crop.png", "-k", "auto", "--target-psnr", 90, "--k-max", 4)
    assert result.returncode != 0
    assert "--target-psnr 90" in result.stderr and "--k-max 4" in result.stderr
    assert "raise --k-max" in result.stderr and "_" not in result.stderr.split("error:")[-1]
