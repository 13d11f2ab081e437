"""Every relative link and image of the README and the docs points to a file that exists,
and no page of the site links to a file the site does not publish; the API reference
names every public name.

External links (``https://...``) are not followed: CI runs offline.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import napari_kmeans_vq

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# The site's docs_dir leaves these out (mkdocs.yml's exclude_docs): a link to them 404s.
UNPUBLISHED = ("scripts/",)

INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.I)
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def targets(page: Path) -> list[str]:
    """Relative link and image targets of a page, outside code."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub("", text)
    found = INLINE.findall(text) + HTML.findall(text) + REFERENCE.findall(text)
    return [t for t in found if not re.match(r"^[a-z][a-z0-9+.-]*:|^#|^//", t, re.I)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_images_exist(page):
    missing = []
    for target in targets(page):
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", [p for p in PAGES if p.parent == DOCS], ids=lambda p: p.name)
def test_site_pages_link_only_to_published_files(page):
    """mkdocs leaves docs/scripts/ out of the site: name such files as text instead."""
    bad = [t for t in targets(page) if t.split("#", 1)[0].startswith(UNPUBLISHED)]
    bad += [t for t in targets(page) if t.startswith("../")]  # outside docs_dir: 404 on the site
    assert not bad, f"{page.name} links to files the site does not publish: {bad}"


def test_every_image_is_used():
    used = {
        (page.parent / t.split("#", 1)[0]).resolve()
        for page in PAGES
        for t in targets(page)
        if t.split("#", 1)[0]
    }
    images = [p for p in (DOCS / "images").iterdir() if p.is_file()]
    unused = [p.name for p in images if p.resolve() not in used]
    assert not unused, f"images no page shows (use or delete them): {unused}"


def test_link_parser_finds_links():
    sample = DOCS / "getting-started.md"
    assert "images/widget.png" in targets(sample)
    assert "napari-guide.md" in targets(sample)


def test_api_reference_names_every_public_name():
    """Every name of ``napari_kmeans_vq.__all__`` is named on the API page."""
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [n for n in napari_kmeans_vq.__all__ if not re.search(rf"\b{re.escape(n)}\b", api)]
    assert not missing, f"docs/api.md does not mention: {missing}"


def _directives(api: str) -> dict[str, list[str] | None]:
    """``::: module`` directives of the API page and their explicit members (None: all of
    the module's public names, its ``__all__``)."""
    out = {}
    for m in re.finditer(r"^::: (\S+)\n((?:    .*\n?)*)", api, re.M):
        members = re.search(r"members:\n((?:\s+- .*\n?)+)", m[2])
        out[m[1]] = re.findall(r"- (\S+)", members[1]) if members else None
    return out


@pytest.mark.parametrize("package", ["core", "large", "io"])
def test_api_reference_covers_the_layers_public_names(package):
    """The public names of ``core``, ``large`` and ``io`` (their ``__all__``) are rendered:
    by a directive on the package, or on the module each comes from."""
    import importlib

    api = (DOCS / "api.md").read_text(encoding="utf-8")
    directives = _directives(api)
    pkg = importlib.import_module(f"napari_kmeans_vq.{package}")
    missing = []
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        source = getattr(obj, "__module__", None) if callable(obj) else None
        covered = pkg.__name__ in directives and directives[pkg.__name__] is None
        if source in directives:
            members = directives[source]
            covered |= members is None or name in members
        if not covered and not re.search(rf"\b{re.escape(name)}\b", api):
            missing.append(name)
    assert not missing, f"docs/api.md renders none of napari_kmeans_vq.{package}.{missing}"
