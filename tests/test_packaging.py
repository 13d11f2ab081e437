"""The packaging metadata: project URLs, Python classifiers that match what is built and
supported, the dependencies the code imports, a MANIFEST.in that names only files that
exist, and a wheel that carries the compiled engine but none of its C or Cython sources."""

from __future__ import annotations

import glob
import re
import sysconfig
from pathlib import Path

import pytest

import napari_kmeans_vq

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

pytestmark = pytest.mark.skipif(not PYPROJECT.exists(), reason="needs the source tree")


@pytest.fixture(scope="module")
def project():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def test_project_urls(project):
    urls = project["project"].get("urls", {})
    for key in ("Homepage", "Source", "Issues", "Documentation", "Changelog"):
        assert urls.get(key, "").startswith("https://"), f"[project.urls] {key}"


def test_python_classifiers_match_requires_python_and_the_wheels(project):
    meta = project["project"]
    minimum = re.fullmatch(r">=\s*3\.(\d+)", meta["requires-python"])
    assert minimum, meta["requires-python"]
    classified = sorted(
        int(m[1]) for c in meta["classifiers"] if (m := re.fullmatch(r".* :: 3\.(\d+)", c))
    )
    assert classified, "no 'Programming Language :: Python :: 3.x' classifiers"
    assert classified[0] == int(minimum[1]), "the lowest classifier is not requires-python's"
    assert classified == list(range(classified[0], classified[-1] + 1)), "gaps in the versions"
    built = sorted(
        int(v) for v in re.findall(r"cp3(\d+)-", project["tool"]["cibuildwheel"]["build"])
    )
    assert built == classified, "the wheels built (cibuildwheel) and the classifiers differ"


def test_base_dependencies(project):
    names = {
        re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower()
        for d in project["project"]["dependencies"]
    }
    for needed in ("numpy", "scipy", "scikit-learn", "pillow", "threadpoolctl", "tqdm"):
        assert needed in names, f"{needed} is not a base dependency"


def test_manifest_names_only_existing_files():
    """Each include line of MANIFEST.in matches a file (else the sdist build warns)."""
    missing = []
    for line in (ROOT / "MANIFEST.in").read_text(encoding="utf-8").splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        command, args = words[0], words[1:]
        if command in ("include", "exclude"):
            for pattern in args:
                if not glob.glob(str(ROOT / pattern)) and command == "include":
                    missing.append(line)
        elif command in ("recursive-include", "recursive-exclude"):
            folder, patterns = ROOT / args[0], args[1:]
            for pattern in patterns:
                if command == "recursive-include" and not list(folder.rglob(pattern)):
                    missing.append(f"{line}: {pattern}")
        elif command in ("graft", "prune"):
            if command == "graft" and not (ROOT / args[0]).is_dir():
                missing.append(line)
        elif command not in ("global-include", "global-exclude"):
            missing.append(f"unknown command: {line}")
    assert not missing, f"MANIFEST.in names files that do not exist: {missing}"


def test_installed_wheel_carries_no_sources():
    """Run against an installed wheel (as CI does): the compiled engine is there, its .c,
    .h, .pyx and .pxd sources are not."""
    package = Path(napari_kmeans_vq.__file__).parent
    if not str(package).startswith(sysconfig.get_path("purelib")) and not str(package).startswith(
        sysconfig.get_path("platlib")
    ):
        pytest.skip("the package is not installed from a wheel here (editable or src/ on path)")
    sources = [p.name for ext in ("*.c", "*.h", "*.pyx", "*.pxd") for p in package.rglob(ext)]
    assert not sources, f"the wheel ships sources it does not need: {sources}"
    assert list((package / "core").glob("_kmeans*.*")), "no compiled engine in the wheel"
    assert (package / "napari.yaml").exists(), "the npe2 manifest is missing from the wheel"
