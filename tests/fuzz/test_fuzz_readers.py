"""The standing fuzz harness, briefly: a fixed, derandomised set of mutated files through
every reader and the command line (``fuzz_readers.py`` beside this file runs it longer)."""

from __future__ import annotations

import pytest

pytest.importorskip("tifffile")
pytest.importorskip("zarr")

import fuzz_readers  # tests/fuzz is on the path (pytest inserts the rootdir of a test file)

#: Cases of the CI run: the same files on every run (seed 0), about 10-20 s here.
CASES = 1500


def test_readers_raise_only_documented_errors_within_bounded_memory(tmp_path, capsys):
    stats = fuzz_readers.fuzz(cases=CASES, seed=0, cli=True, process_every=100, out=tmp_path)
    with capsys.disabled():
        print("\nfuzz:", stats.summary().replace("\n", "\nfuzz: "))
    assert stats.cases == CASES
    # Every kind of reader ran, and both outcomes occurred for each: the mutations reach
    # past the first checks.
    for target in (
        "io.load",
        "io.read_image",
        "io.read_indexed_png",
        "io.tiff.read_labels_tiff",
        "large.open_image",
        "cli info",
        "cli decompress",
    ):
        counts = stats.runs[target]
        assert counts["ok"] > 0 and counts["refused"] > 0, (target, counts)
    assert stats.failures == [], "\n".join(map(str, stats.failures))


def test_the_same_seed_makes_the_same_cases():
    import random

    seeds = fuzz_readers.make_seeds()
    first = [fuzz_readers.mutate(random.Random(7), s, seeds) for s in seeds]
    second = [fuzz_readers.mutate(random.Random(7), s, seeds) for s in seeds]
    assert [c.data for c in first] == [c.data for c in second]
    assert [c.files for c in first] == [c.files for c in second]
