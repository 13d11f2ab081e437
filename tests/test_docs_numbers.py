"""Every number the docs print from running the code is what the code gives now.

Pages mark such numbers as generated blocks (``<!-- generated: NAME ... -->`` ...
``<!-- /generated -->``), written by ``docs/scripts/generate.py``. This test regenerates the
fast blocks of every page in memory and fails, showing the difference, when a page differs:
run ``python docs/scripts/generate.py`` to update the pages. Timing blocks (benchmark
tables, labelled with machine and date) and blocks that need data outside the repository
are exempt; nothing is cached between runs.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "scripts" / "generate.py"


def _load():
    spec = importlib.util.spec_from_file_location("docs_generate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = _load()
PAGES = gen.pages()


@pytest.fixture(scope="module")
def context():
    pytest.importorskip("skimage")
    return gen.Context()


def test_pages_have_generated_blocks():
    names = {b.name for page in PAGES for b in gen.blocks(page)}
    for expected in (
        "ihc", "tutorial-k-table", "rate-distortion", "bench-quantize", "k-curve-table",
        "k-curve", "cli", "cli-value", "he", "he-table", "he-csv", "tissue",
    ):  # fmt: skip
        assert expected in names, f"no page uses the {expected!r} generator"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_markers_are_well_formed(page):
    """Balanced markers, known generators, key=value arguments."""
    for block in gen.blocks(page):
        assert block.kind in ("fast", "slow", "timing")
        block.args  # noqa: B018 - raises on a malformed argument


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if any(b.kind == "fast" for b in gen.blocks(p))],
    ids=lambda p: p.name,
)
def test_generated_numbers_match_the_code(page, context):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff = gen.stale(page, context, {"fast"})
    assert not diff, (
        f"{page.name} prints numbers the code no longer gives; run "
        f"`python docs/scripts/generate.py` and review the change:\n{diff}"
    )


def test_a_number_edited_by_hand_is_caught(context, tmp_path):
    """The check itself: change one digit inside a fast block and it must report it."""
    page = ROOT / "docs" / "tutorial.md"
    text = page.read_text(encoding="utf-8")
    block = next(b for b in gen.blocks(page, text) if b.name == "tutorial-k-table")
    body = text[block.start : block.end]
    digit = re.search(r"\d(?=\.\d \|)", body)  # a J or PSNR value's units digit
    assert digit, "the tutorial's K table has no decimal numbers"
    i = block.start + digit.start()
    edited = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]
    copy = tmp_path / "tutorial.md"
    copy.write_text(edited, encoding="utf-8")
    assert gen.regenerate(copy, context, {"fast"}, edited) != edited
    assert gen.regenerate(page, context, {"fast"}, text) == text


@pytest.mark.parametrize(
    ("page", "name"),
    [
        ("napari-guide.md", "ihc"),
        ("choosing-k.md", "k-curve"),
        ("cli.md", "cli"),
        ("he-walkthrough.md", "he-table"),
        ("he-walkthrough.md", "he"),
    ],
)
def test_an_edited_transcript_or_table_is_caught(page, name, context):
    """A digit changed in a CLI transcript, a class table or a prose figure is reported."""
    path = ROOT / "docs" / page
    text = path.read_text(encoding="utf-8")
    block = next(b for b in gen.blocks(path, text) if b.name == name and re.search(r"\d", b.body))
    i = text.index("-->", block.start) + len("-->")  # where the body starts
    i += re.search(r"\d", block.body).start()
    edited = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1 :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gen.regenerate(path, context, {"fast"}, edited) != edited


def test_timing_columns_are_left_out_of_transcripts():
    def row(*cells):  # right-aligned, as the CLI prints its tables
        return "".join(f"{c:>{w}}" for c, w in zip(cells, (2, 8, 9, 7), strict=True))

    table = [row("K", "J", "PSNR dB", "s"), row(2, 9.5, 20.18, 0.06), row(16, 1.5, 30.87, 12.34)]
    text = "\n".join(["demo: header", *table, "raw image 786,432 bytes; input 468,806"])
    assert gen._drop_column(text, "s").splitlines() == [
        "demo: header", " K       J  PSNR dB", " 2     9.5    20.18", "16     1.5    30.87",
        "raw image 786,432 bytes; input 468,806",
    ]  # fmt: skip


def test_write_block_replaces_only_its_block(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\nprose 1\n\n<!-- generated: bench-quantize -->\nold\n<!-- /generated -->\n"
        "\nprose 2 <!-- generated: bits n=100 k=16 show=total_bits -->1<!-- /generated -->\n",
        encoding="utf-8",
    )
    gen.write_block(page, "bench-quantize", "new table\n")
    text = page.read_text(encoding="utf-8")
    assert "new table" in text and "old" not in text
    assert text.startswith("# Title\n\nprose 1\n") and "prose 2" in text
    assert gen.read_block(page, "bench-quantize") == "new table"
    # inline blocks stay inline
    fresh = gen.regenerate(page, gen.Context(), {"fast"})
    assert "prose 2 <!-- generated: bits n=100 k=16 show=total_bits -->" in fresh
    assert "-->784<!-- /generated -->" in fresh  # 100 x 4 + 16 x 24


def test_unbalanced_or_unknown_markers_are_refused(tmp_path):
    page = tmp_path / "bad.md"
    for text in (
        "<!-- generated: ihc show=J -->160",  # never closed
        "<!-- generated: no-such-thing -->x<!-- /generated -->",
    ):
        with pytest.raises(ValueError):
            gen.blocks(page, text)
