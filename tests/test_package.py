"""The package's promises: a napari-free import, a valid manifest found through the entry point."""

import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_library_import_does_not_import_napari_or_qt():
    code = (
        "import sys, napari_kmeans_vq; "
        "bad = [m for m in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', "
        "'sklearn') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd="/")


def test_manifest_entry_point_finds_the_top_level_manifest():
    npe2 = pytest.importorskip("npe2")
    eps = [
        ep
        for ep in metadata.entry_points(group="napari.manifest")
        if ep.name == "napari-kmeans-vq"
    ]
    assert len(eps) == 1
    manifest = npe2.PluginManifest._from_entrypoint(eps[0], eps[0].dist)
    assert manifest.name == "napari-kmeans-vq"
    # the installed manifest is the top-level napari.yaml, byte for byte
    top = npe2.PluginManifest.from_file(ROOT / "napari.yaml")
    assert manifest.contributions == top.contributions
    package_dir = Path(importlib.util.find_spec("napari_kmeans_vq").origin).parent
    assert (package_dir / "napari.yaml").read_bytes() == (ROOT / "napari.yaml").read_bytes()


def test_manifest_validates_and_its_commands_import():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-kmeans-vq")
    manifest.validate_imports()
    ids = {c.id for c in manifest.contributions.commands}
    assert "napari-kmeans-vq.make_quantize_widget" in ids
