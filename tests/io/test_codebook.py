"""Codebook files: save -> load -> encode gives the saved codebook's labels; bad files fail
with one clear KVQError; writes are atomic."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_kmeans_vq import Codebook, KVQError, load_codebook, quantize, save_codebook
from napari_kmeans_vq.io.codebook import CODEBOOK_FORMAT, CODEBOOK_VERSION, read_codebook
from napari_kmeans_vq.io.samples import stain_patches


@pytest.fixture(scope="module")
def tile() -> np.ndarray:
    return stain_patches(96)


@pytest.mark.parametrize("space", ["rgb", "lab", "hed"])
def test_round_trip_encodes_the_same_labels(tmp_path, ihc_crop, tile, space):
    codebook = Codebook(8, color_space=space).fit([ihc_crop, tile])
    path = save_codebook(codebook, tmp_path / "cohort.json")
    loaded = load_codebook(path)
    for image in (ihc_crop, tile, ihc_crop[::-1]):
        assert np.array_equal(loaded.encode(image), codebook.encode(image))
    assert np.array_equal(loaded.palette_, codebook.palette_)
    assert loaded.palette_.dtype == codebook.palette_.dtype
    assert loaded.get_params() == codebook.get_params()


def test_quantization_codebook_round_trip_with_names(tmp_path, ihc_crop):
    q = quantize(ihc_crop, 4, color_space="hdab")
    names = ["background", "nuclei", "DAB", "stroma"]
    save_codebook(q.codebook, tmp_path / "c.json", names=names)
    read = read_codebook(tmp_path / "c.json")
    assert read.names == tuple(names)
    assert len(read.colors) == 4 and all(c.startswith("#") for c in read.colors)
    assert np.array_equal(read.codebook.encode(ihc_crop), q.labels)
    document = json.loads((tmp_path / "c.json").read_text())
    assert document["format"] == CODEBOOK_FORMAT and document["version"] == CODEBOOK_VERSION
    assert document["channels"] == 3 and document["params"]["color_space"] == "hdab"
    assert [c["label"] for c in document["classes"]] == [1, 2, 3, 4]


def test_stain_vectors_are_kept(tmp_path, tile):
    vectors = [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]]
    codebook = Codebook(3, color_space="stains", stain_vectors=vectors).fit(tile)
    loaded = load_codebook(save_codebook(codebook, tmp_path / "s.json"))
    assert np.allclose(loaded.stain_vectors, vectors)
    assert np.array_equal(loaded.encode(tile), codebook.encode(tile))


def test_user_palette_file(tmp_path, tile):
    palette = [[255, 255, 255], [120, 60, 160], [230, 140, 190]]
    path = tmp_path / "palette.json"
    path.write_text(json.dumps({"format": CODEBOOK_FORMAT, "version": 1, "palette": palette}))
    loaded = load_codebook(path)
    expected = Codebook.from_palette(np.array(palette, np.uint8))
    assert np.array_equal(loaded.encode(tile), expected.encode(tile))
    # A palette codebook saves (its inertia is unknown: null, not NaN) and loads again.
    again = load_codebook(save_codebook(loaded, tmp_path / "again.json"))
    assert np.array_equal(again.encode(tile), expected.encode(tile))
    json.loads((tmp_path / "again.json").read_text())  # strict JSON


def test_refuses_to_overwrite_unless_asked(tmp_path, tile):
    codebook = Codebook(2).fit(tile)
    path = save_codebook(codebook, tmp_path / "c.json")
    with pytest.raises(FileExistsError):
        save_codebook(codebook, path)
    save_codebook(Codebook(3).fit(tile), path, overwrite=True)
    assert load_codebook(path).n_colors_ == 3


def test_bad_arguments(tmp_path, tile):
    with pytest.raises(RuntimeError, match="not fitted"):
        save_codebook(Codebook(2), tmp_path / "c.json")
    with pytest.raises(TypeError, match="Codebook"):
        save_codebook(np.zeros((2, 3)), tmp_path / "c.json")
    with pytest.raises(ValueError, match="names"):
        save_codebook(Codebook(2).fit(tile), tmp_path / "c.json", names=["one"])
    assert not os.listdir(tmp_path)


def _doc(**changes):
    doc = {"format": CODEBOOK_FORMAT, "version": 1, "palette": [[0, 0, 0], [255, 255, 255]]}
    return json.dumps({**doc, **changes})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json at all", "not a codebook file"),
        ("[1, 2]", "not a codebook file"),
        ('{"format": "something else"}', "not a codebook file"),
        (_doc(version=2), "version 2"),
        (_doc(palette=[]), "palette"),
        (_doc(palette=[[1, 2, 3], [4, 5]]), "row 1"),
        (_doc(palette=[[1, 2, "x"]]), "not a finite number"),
        (_doc(palette=[[300, 0, 0]]), "range"),
        (_doc(palette=[[0.5, 0, 0]]), "whole numbers"),
        (_doc(dtype="object"), "dtype"),
        (_doc(channels=4), "channels"),
        (_doc(params={"color_space": "xyz"}), "not a valid codebook"),
        (_doc(classes=[{"label": 1, "name": "a"}]), "one entry per colour"),
        (_doc(classes=[{"label": 1, "color": "red"}, {"label": 2}]), "#rrggbb"),
        (_doc(centroids=[[0, 0, 0]]), "not a valid codebook"),
        ('{"a":' * 100 + "1" + "}" * 100, "nested"),
    ],
)
def test_bad_files_fail_with_one_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(KVQError, match=message) as info:
        load_codebook(path)
    assert str(path) in str(info.value)


def test_fifo_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_codebook(tmp_path / "missing.json")
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(KVQError, match="FIFO"):
            load_codebook(tmp_path / "fifo")
