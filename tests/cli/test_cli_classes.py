"""The command line's segmentation options, run as users run them (in a subprocess) on the
IHC sample: --space (every colour space), --stain-vectors, --mask auto|FILE,
--tissue-threshold, --min-region and compress's --table with --pixel-size and --unit."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_kmeans_vq import quantize
from napari_kmeans_vq._limits import MAX_FIT_COLORS
from napari_kmeans_vq.cli.parser import COLOR_SPACES as CLI_SPACES
from napari_kmeans_vq.cli.parser import MAX_FIT_COLORS as CLI_MAX_FIT_COLORS
from napari_kmeans_vq.cli.parser import TISSUE_THRESHOLD
from napari_kmeans_vq.core.colorspace import COLOR_SPACES
from napari_kmeans_vq.core.tissue import DEFAULT_THRESHOLD, tissue_mask
from napari_kmeans_vq.io import load

#: scikit-image's H-DAB vectors (hematoxylin, DAB), as a user would type them.
HDAB = "0.650,0.704,0.286;0.268,0.570,0.776"


from cli_helpers import one_line_error, run  # noqa: E402


def usage_error(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "error:" in last
    return last


@pytest.fixture(scope="module")
def slide(tmp_path_factory, ihc) -> Path:
    path = tmp_path_factory.mktemp("classes") / "ihc.png"
    Image.fromarray(ihc).save(path)
    return path


@pytest.fixture(scope="module")
def square_mask(ihc) -> np.ndarray:
    mask = np.zeros(ihc.shape[:2], dtype=bool)
    mask[100:400, 150:450] = True
    return mask


@pytest.fixture(scope="module")
def mask_png(tmp_path_factory, square_mask) -> Path:
    path = tmp_path_factory.mktemp("masks") / "mask.png"
    Image.fromarray(square_mask.astype(np.uint8) * 255).save(path)
    return path


def compress_json(*args) -> dict:
    result = run("compress", *args, "--json", "-q")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------------------------
# the parser agrees with the library


def test_parser_constants_are_the_librarys():
    assert CLI_SPACES == COLOR_SPACES
    assert TISSUE_THRESHOLD == DEFAULT_THRESHOLD
    assert CLI_MAX_FIT_COLORS == MAX_FIT_COLORS


@pytest.mark.parametrize("space", COLOR_SPACES)
def test_every_colour_space(slide, ihc, space):
    extra = ["--stain-vectors", HDAB] if space == "stains" else []
    report = compress_json(slide, "-k", "3", "--space", space, *extra)
    assert report["color_space"] == space
    vectors = [[float(v) for v in s.split(",")] for s in HDAB.split(";")]
    q = quantize(ihc, 3, color_space=space, stain_vectors=vectors if space == "stains" else None)
    assert report["palette"] == q.palette.tolist()
    assert report["distortion"] == pytest.approx(q.distortion)


def test_help_lists_every_space_and_option():
    result = run("compress", "--help")
    for word in (*COLOR_SPACES, "--stain-vectors", "--mask", "--tissue-threshold",
                 "--min-region", "--table", "--pixel-size", "--unit"):  # fmt: skip
        assert word in result.stdout
    sweep = run("sweep", "--help").stdout
    for word in ("--mask", "--min-region", "--stain-vectors"):
        assert word in sweep


# ---------------------------------------------------------------------------------------------
# masks


def test_mask_auto_reports_the_tissue_pixels(slide, ihc):
    tissue = tissue_mask(ihc)
    n = int(tissue.sum())
    assert 0 < n < tissue.size
    report = compress_json(slide, "-k", "4", "--mask", "auto")
    assert report["mask"] == {
        "source": "auto", "threshold": DEFAULT_THRESHOLD, "pixels": n, "total": tissue.size
    }  # fmt: skip
    assert report["n_pixels"] == n
    assert report["sizes"]["raw_bytes"] == 3 * n
    assert sum(row["pixels"] for row in report["classes"]) == n
    q = quantize(ihc, 4, mask=tissue)
    assert report["palette"] == q.palette.tolist()
    # The text report says so too.
    text = run("compress", slide, "-k", "4", "--mask", "auto", "-q").stdout
    assert f"{n:,} of {tissue.size:,} pixels" in text
    assert "512 x 512 x 3 uint8, 262,144 pixels" in text


def test_tissue_threshold(slide, ihc):
    n = int(tissue_mask(ihc, 0.4).sum())
    assert n != int(tissue_mask(ihc).sum())
    report = compress_json(slide, "-k", "3", "--mask", "auto", "--tissue-threshold", "0.4")
    assert report["mask"]["pixels"] == report["n_pixels"] == n
    assert report["mask"]["threshold"] == 0.4


def test_mask_file(slide, ihc, mask_png, square_mask, tmp_path):
    out = tmp_path / "masked.kvq"
    report = compress_json(slide, "-k", "3", "--mask", mask_png, "-o", out)
    n = int(square_mask.sum())
    assert report["mask"]["source"] == str(mask_png)
    assert report["n_pixels"] == report["mask"]["pixels"] == n
    q = quantize(ihc, 3, mask=square_mask)
    assert report["palette"] == q.palette.tolist()
    assert report["distortion"] == pytest.approx(q.distortion)
    assert np.array_equal(load(out).labels, q.labels)
    # An RGB mask image: non-zero in any colour channel is tissue.
    rgb = tmp_path / "mask-rgb.png"
    Image.fromarray(np.repeat(square_mask[..., None].astype(np.uint8) * 200, 3, -1)).save(rgb)
    assert compress_json(slide, "-k", "3", "--mask", rgb)["n_pixels"] == n


def test_mask_of_the_wrong_shape_writes_nothing(slide, square_mask, tmp_path):
    bad = tmp_path / "small.png"
    Image.fromarray(square_mask[:100].astype(np.uint8)).save(bad)
    out, table = tmp_path / "out.kvq", tmp_path / "classes.csv"
    result = run("compress", slide, "-k", "3", "--mask", bad, "-o", out, "--table", table)
    assert result.returncode == 1
    line = one_line_error(result)
    assert "--mask" in line and "100 x 512" in line and "512 x 512" in line
    assert result.stdout == ""
    assert not out.exists() and not table.exists()


def test_empty_and_missing_masks(slide, ihc, tmp_path):
    empty = tmp_path / "empty.png"
    Image.fromarray(np.zeros(ihc.shape[:2], np.uint8)).save(empty)
    result = run("compress", slide, "-k", "3", "--mask", empty)
    assert result.returncode == 1
    assert "selects no pixels" in one_line_error(result)
    result = run("compress", slide, "-k", "3", "--mask", tmp_path / "nope.png")
    assert result.returncode == 1
    assert "--mask" in one_line_error(result)
    result = run("compress", slide, "-k", "3", "--mask", "auto", "--tissue-threshold", "99")
    assert result.returncode == 1
    assert "no tissue" in one_line_error(result)


# ---------------------------------------------------------------------------------------------
# clean-up and stains


def test_min_region(slide, ihc):
    plain = compress_json(slide, "-k", "6", "--space", "hdab")
    clean = compress_json(slide, "-k", "6", "--space", "hdab", "--min-region", "64")
    q = quantize(ihc, 6, color_space="hdab", min_region=64)
    assert clean["min_region"] == 64
    assert clean["distortion"] == pytest.approx(q.distortion)
    assert clean["distortion"] > plain["distortion"]  # the labels changed, J says so
    assert [r["pixels"] for r in clean["classes"]] == q.cluster_sizes.tolist()
    text = run("compress", slide, "-k", "6", "--min-region", "64", "-q").stdout
    assert "regions under 64 pixels merged" in text


def test_stain_options_are_checked(slide):
    usage = usage_error(run("compress", slide, "-k", "3", "--space", "stains"))
    assert "--stain-vectors" in usage
    usage = usage_error(run("compress", slide, "-k", "3", "--stain-vectors", HDAB))
    assert "--space stains" in usage
    for bad in ("1,2;3,4", "1,2,3", "a,b,c;1,2,3", "1,2,3;4,5,6;7,8,9;1,1,1"):
        usage = usage_error(
            run("compress", slide, "-k", "3", "--space", "stains", "--stain-vectors", bad)
        )
        assert "--stain-vectors" in usage
    result = run("compress", slide, "-k", "3", "--space", "stains", "--stain-vectors",
                 "1,1,1;2,2,2")  # fmt: skip
    assert result.returncode == 1
    assert "--stain-vectors" in one_line_error(result)  # the CLI's flag, not the parameter
    usage = usage_error(run("compress", slide, "-k", "3", "--tissue-threshold", "0.2"))
    assert "--mask auto" in usage
    usage = usage_error(run("compress", slide, "-k", "3", "--min-region", "-1"))
    assert "--min-region" in usage


def test_streamed_inputs_refuse_mask_and_min_region(tmp_path, ihc):
    npy = tmp_path / "ihc.npy"
    np.save(npy, np.asarray(ihc))
    for option in (["--mask", "auto"], ["--min-region", "10"]):
        usage = usage_error(run("compress", npy, "-k", "3", "--lazy", *option))
        assert option[0] in usage and "streamed" in usage


# ---------------------------------------------------------------------------------------------
# the class table


def test_table_csv(slide, ihc, tmp_path):
    table = tmp_path / "classes.csv"
    result = run("compress", slide, "-k", "3", "--space", "hdab", "--mask", "auto",
                 "--table", table, "--pixel-size", "0.5", "--unit", "um", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {table} (3 classes" in result.stdout
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    q = quantize(ihc, 3, color_space="hdab", mask=tissue_mask(ihc))
    expected = q.class_table(pixel_size=0.5, unit="um")
    assert list(rows[0]) == list(expected.columns)
    assert list(expected.columns) == [
        "label", "name", "color", "pixels", "share", "area_um2",
        "mean_hematoxylin", "mean_DAB", "mean_residual",
    ]  # fmt: skip
    assert len(rows) == 3
    for row, want in zip(rows, expected.rows, strict=True):
        assert int(row["label"]) == want["label"]
        assert row["name"] == want["name"]
        assert row["color"] == want["color"]
        assert int(row["pixels"]) == want["pixels"]
        assert float(row["area_um2"]) == pytest.approx(0.25 * want["pixels"])
        assert float(row["mean_DAB"]) == pytest.approx(want["mean_DAB"])
    assert sum(int(r["pixels"]) for r in rows) == int(tissue_mask(ihc).sum())
    assert sum(float(r["share"]) for r in rows) == pytest.approx(1.0)
    # DAB (brown) is one class: the one with the most DAB is brownest (red over blue).
    brown = max(rows, key=lambda r: float(r["mean_DAB"]))
    colour = bytes.fromhex(brown["color"][1:])
    assert colour[0] > colour[2]


def test_table_pixel_size_per_axis_and_unit(slide, tmp_path):
    table = tmp_path / "mm.csv"
    result = run("compress", slide, "-k", "2", "--table", table, "--pixel-size", "0.002,0.001",
                 "--unit", "mm", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert "area_mm2" in rows[0] and "mean_DAB" not in rows[0]
    for row in rows:
        assert float(row["area_mm2"]) == pytest.approx(2e-6 * int(row["pixels"]))
    assert sum(int(r["pixels"]) for r in rows) == 512 * 512


def test_table_errors(slide, tmp_path):
    table = tmp_path / "t.csv"
    usage = usage_error(run("compress", slide, "-k", "3", "--pixel-size", "0.5"))
    assert "--table" in usage
    usage = usage_error(run("compress", slide, "-k", "3", "--unit", "mm"))
    assert "--table" in usage
    for bad in ("0", "-1", "x", "1,2,3"):
        usage = usage_error(
            run("compress", slide, "-k", "3", "--table", table, "--pixel-size", bad)
        )
        assert "pixel size" in usage
    assert not table.exists()
    table.write_text("keep me")
    result = run("compress", slide, "-k", "3", "--table", table)
    assert result.returncode == 1
    assert "--force" in one_line_error(result)
    assert table.read_text() == "keep me"
    assert run("compress", slide, "-k", "3", "--table", table, "--force", "-q").returncode == 0
    assert table.read_text().startswith("label,name,color,pixels,share")
    same = tmp_path / "same.kvq"
    usage = usage_error(run("compress", slide, "-k", "3", "-o", same, "--table", same))
    assert "same file" in usage


def test_streamed_to_zarr_tables_the_classes_the_store_counted(tmp_path, ihc):
    npy = tmp_path / "ihc.npy"
    np.save(npy, np.asarray(ihc))
    table, summary = tmp_path / "t.csv", tmp_path / "s.csv"
    out = tmp_path / "o.ome.zarr"
    result = run("compress", npy, "-k", "3", "--max-pixels", "1000", "-o", out,
                 "--table", table, "--pixel-size", "0.5", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    q = quantize(ihc, 3)
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [int(r["pixels"]) for r in rows] == q.cluster_sizes.tolist()
    assert [float(r["area_um2"]) for r in rows] == (q.cluster_sizes * 0.25).tolist()
    again = tmp_path / "again.npy"
    again.write_bytes(npy.read_bytes())
    batch = run("compress", npy, again, "-k", "3", "--max-pixels", "1000", "--out-dir",
                tmp_path / "b", "--name", "{stem}.ome.zarr", "--summary", summary)  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    pixels = [int(r["pixels"]) for r in csv.DictReader(io.StringIO(summary.read_text()))]
    assert pixels == 2 * q.cluster_sizes.tolist()
    # Streamed and only reported: no store counts the classes.
    usage = usage_error(run("compress", npy, "-k", "3", "--max-pixels", "1000", "--table",
                            tmp_path / "u.csv"))  # fmt: skip
    assert "--table" in usage and "-o OUT.ome.zarr" in usage
    assert not (tmp_path / "u.csv").exists()


# ---------------------------------------------------------------------------------------------
# sweep


def test_sweep_with_mask_and_space(slide, ihc, mask_png, square_mask):
    result = run("sweep", slide, "-k", "2,4", "--mask", mask_png, "--space", "oklab",
                 "--min-region", "16", "--json", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    n = int(square_mask.sum())
    assert report["mask"]["pixels"] == n and report["color_space"] == "oklab"
    assert [row["raw_bytes"] for row in report["rows"]] == [3 * n, 3 * n]
    q = quantize(ihc, 4, color_space="oklab", mask=square_mask, min_region=16)
    assert report["rows"][1]["J"] == pytest.approx(q.distortion)
    text = run("sweep", slide, "-k", "2", "--mask", "auto", "-q").stdout
    assert f"{int(tissue_mask(ihc).sum()):,} of 262,144 pixels" in text
