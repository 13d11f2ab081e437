"""Every ``napari-kmeans-vq`` command shown in the docs runs, as written, on sample inputs.

The shell blocks of the command-line reference and the README name files such as
``slide.png``, ``slide.zarr`` and ``slide.ome.tif``; the test makes them from the IHC sample
in a temporary folder and runs each page's commands in order there (later commands read
what earlier ones wrote). A pipe into ``jq`` is replaced by parsing the JSON in Python, so
the test needs no jq.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "cli.md", ROOT / "README.md"]


def shown_commands(page: Path) -> list[str]:
    """The ``napari-kmeans-vq`` lines of the page's bash blocks, comments removed."""
    out, in_bash = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if in_bash and line.startswith("napari-kmeans-vq"):
            out.append(re.sub(r"\s+#.*$", "", line).strip())
    return out


@pytest.fixture
def inputs(tmp_path, ihc):
    from PIL import Image

    Image.fromarray(ihc).save(tmp_path / "slide.png")
    zarr = pytest.importorskip("zarr")
    store = zarr.create_array(
        str(tmp_path / "slide.zarr"), shape=ihc.shape, chunks=(256, 256, 3), dtype="uint8"
    )
    store[:] = ihc
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "slide.ome.tif", np.ascontiguousarray(ihc), tile=(256, 256))
    return tmp_path


def test_pages_show_commands():
    assert all(shown_commands(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_shown_commands_run(page, inputs):
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for command in shown_commands(page):
        expect_json = "| jq" in command
        command = command.split("|")[0].strip()
        redirect = None
        if ">" in command:
            command, target = (part.strip() for part in command.split(">", 1))
            redirect = inputs / target
        result = subprocess.run(
            shlex.split(command),
            cwd=inputs,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{page.name}: {command}\n{result.stderr}"
        if expect_json:
            json.loads(result.stdout)
        if redirect is not None:
            redirect.write_text(result.stdout)
            assert redirect.stat().st_size > 0
