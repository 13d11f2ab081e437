"""The packages are layers: each imports only those below it, and no modules import each other.

_limits <- core <- large <- io <- napari, cli (napari and cli never import each other). Every
import counts, also those inside functions, since a cycle there is still a cycle to a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_kmeans_vq"
LAYERS = {"_limits": 0, "core": 1, "large": 2, "io": 3, "napari": 4, "cli": 4}


def module_name(path: Path) -> str:
    parts = ["napari_kmeans_vq", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
# Compiled modules import nothing of the package.
COMPILED = {module_name(p) for pattern in ("*.c", "*.pyx") for p in PACKAGE.rglob(pattern)}
KNOWN = MODULES.keys() | COMPILED


def imported(name: str, path: Path) -> set[str]:
    """The package's own modules that the module ``name`` imports, anywhere in it."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from pkg import mod`` imports the module; ``from pkg import name``, pkg itself.
            targets = [
                f"{stem}.{alias.name}"
                if f"{stem}.{alias.name}" in MODULES.keys() | COMPILED
                else stem
                for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


GRAPH = {name: imported(name, path) for name, path in MODULES.items()}


def layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_walk_sees_the_packages_and_their_imports():
    assert {layer(name) for name in MODULES} >= set(LAYERS) | {None}
    assert "napari_kmeans_vq.core.codebook" in GRAPH["napari_kmeans_vq.core.quantize"]
    assert "napari_kmeans_vq.core.quantize" in GRAPH["napari_kmeans_vq.large.lazy"]


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer(n)))
def test_no_module_imports_a_higher_layer(name):
    own = LAYERS[layer(name)]
    higher = sorted(
        target
        for target in GRAPH[name]
        if layer(target) and layer(target) != layer(name) and LAYERS[layer(target)] >= own
    )
    assert not higher, f"{name} imports {higher}, which are not below its layer"


def test_no_import_cycles():
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(GRAPH[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [])


def test_only_the_napari_package_imports_napari_qt_or_magicgui():
    outside = []
    for name, path in MODULES.items():
        if layer(name) == "napari":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            roots = {n.split(".")[0] for n in names}
            if roots & {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui"}:
                outside.append(name)
    assert not outside
