"""Every Python example in the docs runs, and so do the library's doctests.

* Each ``docs/*.md`` file (and the README) is one test: its ```` ```python ```` blocks run in
  order in one namespace, in a temporary working directory, so a later block may use what
  an earlier one defined.
* Blocks that need a napari viewer carry a class in their fence, ```` ```python {.napari} ````
  (``python napari`` is accepted too, but MkDocs does not render it, see
  :func:`test_fences_render_in_mkdocs`). They run in a second test per file, marked
  ``napari``, when napari and a display are available (CI runs the suite under xvfb-run);
  ``napari.run()`` is a no-op there and every viewer is closed afterwards.
* Blocks marked ```` ```python {.norun} ```` are shown only (for example, code that needs
  data outside the repository); keep them rare.
* The doctests of every library module (everything but ``napari_kmeans_vq.napari``, which
  imports napari) run through :mod:`doctest`.
"""

from __future__ import annotations

import doctest
import importlib
import os
import pkgutil
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import napari_kmeans_vq

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

# Pages written by others whose examples fail for reasons outside the docs (for example a
# feature that has not landed yet): page name -> reason. Their failures become xfails.
KNOWN_FAILURES: dict[str, str] = {}
# Library modules whose doctests fail for a reason their owner is fixing: module -> reason.
KNOWN_DOCTEST_FAILURES: dict[str, str] = {}

USES_NAPARI = re.compile(
    r"^\s*(import napari\b(?!_)|from napari(\.|\s+import\b))|\bnapari\.(Viewer|run)\b", re.M
)
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


@dataclass
class Block:
    page: str
    line: int
    info: str
    code: str

    @property
    def language(self) -> str:
        info = self.info.strip()
        if info.startswith("{"):  # {.python .napari}
            classes = re.findall(r"\.([\w-]+)", info)
            return classes[0] if classes else ""
        return info.split()[0] if info else ""

    @property
    def tags(self) -> set[str]:
        words = re.findall(r"[\w-]+", self.info)
        return {w for w in words if w != self.language}

    @property
    def is_python(self) -> bool:
        return self.language in ("python", "py")

    @property
    def needs_napari(self) -> bool:
        # Tagged, or untagged but plainly driving napari: running such a block without a
        # display would abort the whole test process inside Qt, not just fail.
        return "napari" in self.tags or bool(USES_NAPARI.search(self.code))

    @property
    def runs(self) -> bool:
        return self.is_python and "norun" not in self.tags


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with their info strings."""
    out, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent, start = m["fence"], len(m["indent"]), i
        body = []
        i += 1
        while i < len(lines) and not re.match(
            rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[i]
        ):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        out.append(Block(path.name, start + 1, m["info"], "\n".join(body) + "\n"))
        i += 1
    return out


def napari_available() -> str | None:
    """None if a napari viewer can be made here, else why not."""
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        return f"napari is not importable ({exc})"
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if not has_display and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        return "no display (run the tests under xvfb-run)"
    return None


def run_page(path: Path, tmp_path: Path, monkeypatch, *, with_napari: bool) -> int:
    """Run a page's Python blocks in order; return how many ran."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    ran, skipped_napari = 0, False
    for block in blocks(path):
        if not block.runs or (block.needs_napari and not with_napari):
            skipped_napari |= block.runs
            continue
        code = compile(block.code, f"{path.name}:{block.line}", "exec")
        try:
            exec(code, namespace)
        except Exception as exc:
            if isinstance(exc, NameError) and skipped_napari:
                continue  # uses a viewer or layer made by a napari block that did not run
            if path.name in KNOWN_FAILURES:
                pytest.xfail(f"{KNOWN_FAILURES[path.name]}: {type(exc).__name__}: {exc}")
            raise AssertionError(
                f"the code block at {path.name}:{block.line} failed: {type(exc).__name__}: {exc}"
            ) from exc
        ran += 1
    return ran


def _ids(paths):
    return [p.name for p in paths]


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_page_examples_run(page, tmp_path, monkeypatch):
    if not any(b.runs and not b.needs_napari for b in blocks(page)):
        pytest.skip(f"{page.name} has no Python examples to run without napari")
    run_page(page, tmp_path, monkeypatch, with_napari=False)


NAPARI_PAGES = [p for p in PAGES if any(b.runs and b.needs_napari for b in blocks(p))]


@pytest.mark.napari
@pytest.mark.parametrize("page", NAPARI_PAGES, ids=_ids(NAPARI_PAGES))
def test_page_napari_examples_run(page, tmp_path, monkeypatch, request):
    reason = napari_available()
    if reason:
        pytest.skip(reason)
    qtbot = request.getfixturevalue("qtbot")  # pytest-qt; only asked for when napari runs
    import napari
    from qtpy.QtCore import QThreadPool

    monkeypatch.setattr(napari, "run", lambda *args, **kwargs: None)
    try:
        run_page(page, tmp_path, monkeypatch, with_napari=True)
        # Let thread workers an example started (a widget's Run) finish before closing.
        qtbot.waitUntil(
            lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60_000
        )
        qtbot.wait(50)
    finally:
        napari.Viewer.close_all()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_examples_that_do_not_run_still_compile(page):
    """Blocks shown only (they need a cluster or packages CI has not) are at least valid."""
    for block in blocks(page):
        if block.is_python and not block.runs:
            compile(block.code, f"{block.page}:{block.line}", "exec")


def test_fences_render_in_mkdocs():
    """MkDocs' superfences drops a fence whose info string has a bare second word (the block
    becomes inline text); tags must be classes: ```python {.napari}."""
    bad = [
        f"{b.page}:{b.line}: ```{b.info.strip()}"
        for page in sorted(DOCS.glob("*.md"))
        for b in blocks(page)
        if len(b.info.split()) > 1 and not b.info.split()[1].startswith(("{", "title=", "hl_"))
    ]
    assert not bad, "write tags as classes, e.g. ```python {.napari}:\n" + "\n".join(bad)


def test_block_parser_reads_tags():
    page = DOCS / "getting-started.md"
    found = [b for b in blocks(page) if b.is_python]
    assert found, "getting-started.md should have Python examples"
    assert any(b.needs_napari for b in found)
    assert any(not b.needs_napari for b in found)


# -- doctests of the library -------------------------------------------------------------


def library_modules() -> list[str]:
    """Every module of the package except the napari plugin (which needs napari and Qt)."""
    names = ["napari_kmeans_vq"]
    for info in pkgutil.walk_packages(napari_kmeans_vq.__path__, "napari_kmeans_vq."):
        if info.name == "napari_kmeans_vq.napari" or info.name.startswith(
            "napari_kmeans_vq.napari."
        ):
            continue
        names.append(info.name)
    return names


def doctests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    found = doctest.DocTestFinder(exclude_empty=True).find(module, module_name)
    return [t for t in found if t.examples]


DOCTEST_MODULES = [name for name in library_modules() if doctests(name)]


def test_doctests_are_collected():
    """The modules with examples in their docstrings are found (and none of the plugin's)."""
    for name in (
        "napari_kmeans_vq.core.bits",
        "napari_kmeans_vq.core.quantize",
        "napari_kmeans_vq.core.tutorial",
    ):
        assert name in DOCTEST_MODULES
    assert not [name for name in DOCTEST_MODULES if ".napari." in name]


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_library_doctests(module_name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tests = doctests(module_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    if result.failed and module_name in KNOWN_DOCTEST_FAILURES:
        pytest.xfail(KNOWN_DOCTEST_FAILURES[module_name])
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctests failed"
