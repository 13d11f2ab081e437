"""Running the installed command in a subprocess, as a user would, for the CLI tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


def _command() -> list[str]:
    """The installed console script, or the module when running from a source tree."""
    script = Path(sys.executable).with_name("napari-kmeans-vq")
    if script.exists():
        return [str(script)]
    found = shutil.which("napari-kmeans-vq")
    return [found] if found else [sys.executable, "-m", "napari_kmeans_vq.cli"]


CLI = _command()


def run(*args, cwd=None, stdin=None, warnings="ignore") -> subprocess.CompletedProcess:
    """Run the command; ``stdin`` bytes make both streams bytes (for ``-``); ``warnings``
    None leaves Python's default warning filters (as a user has them)."""
    env = dict(os.environ)
    env.pop("PYTHONWARNINGS", None)
    if warnings is not None:
        env["PYTHONWARNINGS"] = warnings
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=stdin is None,
        input=stdin,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def one_line_error(result) -> str:
    """The failure message: exactly one non-progress line on stderr, and no traceback."""
    lines = [line for line in result.stderr.splitlines() if "] " not in line.split(":", 1)[-1]]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("napari-kmeans-vq: error: ")
    return lines[0]
