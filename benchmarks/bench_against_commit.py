"""Time the installed engine against the engine of an earlier commit of this repository.

The earlier commit is exported from the repository's git history (``git archive``) into a
scratch directory and its extensions are built there in place with the running interpreter
(``setup.py build_ext --inplace``). Both engines then quantize the same 4096 x 4096 mosaic
(the one ``bench_quantize.py --big`` uses) in fresh processes, one per engine and round, the
two taking turns in alternating order so that drift of a shared machine touches both alike.
Each process times ``quantize(mosaic, K)`` end to end (uint8 image in, result out), best of
``--repeat`` runs after one warm-up run per K.

The table gives, per K: each engine's best time over every round, the ratio of those bests,
the ratio in each round (ours / theirs of that round's bests), their median, and the
distortion J each engine reached. The verdict compares the median round with ``--bound``.

The default commit is the last one with the former C engine (two hand-written C extensions,
POSIX threads), the engine the Cython rewrite was held to: no slower than 1.25x at
K = 16-256.

Example (the docs block)::

    python benchmarks/bench_against_commit.py --shared-data ../shared/data \\
        --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from bench_quantize import (  # noqa: E402
    BIG_SIDE,
    _loadavg,
    build_mosaic,
    load_rgb,
    machine_info,
)

FORMER_C_ENGINE = "3c24ee7a9a4659335bbf634534bde5130fc9d955"

# Runs in a fresh interpreter: times quantize on the mosaic and reports where the package
# came from and which compiled modules it loaded.
WORKER = r"""
import json, sys, time
import numpy as np
import napari_kmeans_vq
from napari_kmeans_vq import quantize

mosaic = np.load(sys.argv[1])
ks = [int(k) for k in sys.argv[2].split(",")]
repeat = int(sys.argv[3])
out = {"package": napari_kmeans_vq.__file__, "k": {}}
for k in ks:
    q = quantize(mosaic, k)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        quantize(mosaic, k)
        times.append(time.perf_counter() - t)
    out["k"][str(k)] = {"best": min(times), "J": float(q.distortion)}
out["compiled"] = sorted(
    name for name, mod in sys.modules.items()
    if name.startswith("napari_kmeans_vq") and str(getattr(mod, "__file__", "")).endswith(
        (".so", ".pyd"))
)
print(json.dumps(out))
"""


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True).stdout


def build_commit(commit: str, where: Path) -> tuple[str, Path]:
    """Export ``commit`` into ``where`` and build its extensions in place; returns the
    commit's full hash and its ``src`` directory."""
    try:
        full = _git("rev-parse", "--verify", f"{commit}^{{commit}}").decode().strip()
        archive = _git("archive", "--format=tar", full)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"cannot export commit {commit!r}: this needs a git checkout of the repository"
            f" with its history ({exc})"
        ) from exc
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=where, capture_output=True, text=True,
    )  # fmt: skip
    if build.returncode != 0:
        raise SystemExit(f"building {full[:10]} failed:\n{build.stderr[-3000:]}")
    return full, where / "src"


def run_worker(mosaic: Path, ks: str, repeat: int, src: Path | None) -> dict:
    """One fresh process: the installed package (``src=None``) or the one under ``src``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(mosaic), ks, str(repeat)],
        cwd=mosaic.parent, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the timing process failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    where = Path(out["package"]).resolve()
    if src is not None and not where.is_relative_to(src.resolve()):
        raise SystemExit(f"the earlier engine was not the one imported: {where}")
    if not out["compiled"]:
        raise SystemExit(f"no compiled module was loaded from {where.parent}")
    return out


def measure(mosaic: Path, ks: str, rounds: int, repeat: int, src: Path) -> dict:
    runs = {"ours": [], "theirs": []}
    for path in (None, src):  # untimed: files into the page cache, caches warm
        run_worker(mosaic, str(min(int(k) for k in ks.split(","))), 1, path)
    for r in range(rounds):
        order = [("ours", None), ("theirs", src)]
        for name, path in order if r % 2 == 0 else order[::-1]:
            runs[name].append(run_worker(mosaic, ks, repeat, path))
            print(f"round {r + 1}/{rounds}: {name} done", file=sys.stderr, flush=True)
    return runs


def render(runs: dict, ks: list[int], bound: float) -> list[str]:
    lines = [
        "| K | ours, best (s) | earlier, best (s) | best / best | per round | median round"
        " | J ours | J earlier | median <= bound |",
        "|---:|---:|---:|---:|:---|---:|---:|---:|:---|",
    ]
    worst = (0.0, 0)
    for k in ks:
        ours = [run["k"][str(k)] for run in runs["ours"]]
        theirs = [run["k"][str(k)] for run in runs["theirs"]]
        per_round = [a["best"] / b["best"] for a, b in zip(ours, theirs, strict=True)]
        median = statistics.median(per_round)
        best_o, best_t = min(a["best"] for a in ours), min(b["best"] for b in theirs)
        holds = median <= bound
        worst = max(worst, (median, k))
        lines.append(
            f"| {k} | {best_o:.3f} | {best_t:.3f} | {best_o / best_t:.2f} |"
            f" {', '.join(f'{x:.2f}' for x in per_round)} | {median:.2f} |"
            f" {ours[0]['J']:.2f} | {theirs[0]['J']:.2f} | {'yes' if holds else 'NO'} |"
        )
    lines += [
        "",
        f"Worst median round over K: {worst[0]:.2f} (K = {worst[1]}); bound {bound:.2f}.",
    ]
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time the installed engine against an earlier commit's on the mosaic.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument(
        "--commit",
        default=FORMER_C_ENGINE,
        help="the earlier commit (default: the last with the former C engine)",
    )
    p.add_argument("--shared-data", required=True, help="folder of the mosaic's PNG photos")
    p.add_argument("--k", default="16,32,64,128,256", help="comma-separated K values")
    p.add_argument("--rounds", type=int, default=5, help="processes per engine")
    p.add_argument("--repeat", type=int, default=3, help="best of N runs per process and K")
    p.add_argument("--bound", type=float, default=1.25, help="target: ours / earlier")
    p.add_argument("--markdown", metavar="OUT", help="also write the report to this file")
    p.add_argument("--block", default="bench-against-commit", help="the block of --markdown")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    ks = [int(k) for k in args.k.split(",")]
    from skimage import data

    images = [np.ascontiguousarray(data.immunohistochemistry())]
    images += [load_rgb(p) for p in sorted(Path(args.shared_data).rglob("*.png"))]
    load_start = _loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mosaic = tmp / "mosaic.npy"
        np.save(mosaic, build_mosaic(images))
        full, src = build_commit(args.commit, tmp / "earlier")
        when = _git("log", "-1", "--format=%cs", full).decode().strip()
        runs = measure(mosaic, args.k, args.rounds, args.repeat, src)
    table = render(runs, ks, args.bound)
    ours_pkg = Path(runs["ours"][0]["package"]).parent
    out = [
        f"Command: `python benchmarks/bench_against_commit.py --commit {full[:10]}"
        f" --k {args.k} --rounds {args.rounds} --repeat {args.repeat}`",
        "",
        f"- ours: the installed package ({ours_pkg}), compiled modules"
        f" {', '.join(runs['ours'][0]['compiled'])}",
        f"- earlier: commit {full[:10]} of {when}"
        f"{' (the last with the former C engine)' if full == FORMER_C_ENGINE else ''}, built here with"
        f" `setup.py build_ext --inplace`; compiled modules"
        f" {', '.join(runs['theirs'][0]['compiled'])}",
        f"- image: the {BIG_SIDE} x {BIG_SIDE} mosaic of {len(images)} images;"
        f" `quantize(mosaic, K)` with default settings; {args.rounds} rounds, each a fresh"
        f" process per engine in alternating order, best of {args.repeat} after a warm-up",
        machine_info(os.cpu_count() or 1)[0],
        f"- load average at start (1/5/15 min): {load_start}",
        "",
        *table,
        "",
        f"Load average at the end (1/5/15 min): {_loadavg()}.",
    ]
    print("\n".join(out), flush=True)
    if args.markdown:
        sys.path.insert(0, str(ROOT / "docs" / "scripts"))
        from generate import write_block

        body = [f"Run on {date.today()}. " + out[0], *out[1:]]
        write_block(Path(args.markdown), args.block, "\n".join(body).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
