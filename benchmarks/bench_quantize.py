"""Benchmark :func:`napari_kmeans_vq.quantize` against peer colour quantizers.

For every image and every K the script runs this project and each peer on the same uint8 RGB
image and prints, side by side, the wall-clock time, the distortion J and the PSNR. Every method
is timed from the uint8 image to the uint8 reconstruction a decoder would produce (palette
rounded to uint8, indexed by the labels), and J and PSNR are computed by this script, identically
for every method, from that reconstruction:

    J    = mean over pixels of the squared error summed over R, G and B (uint8 vs uint8)
    PSNR = 10 log10(255^2 / (J / 3))

Peers (each optional; a missing package prints ``n/a``):

``seed``        scikit-learn ``KMeans(n_clusters=K, n_init="auto", random_state=42)`` fitted on
                every pixel (float64), ``labels_`` with the centroids rounded to uint8 (the seed
                tutorial's recipe; the tutorial truncates, we round so it is judged fairly).
``gallery``     the recipe of scikit-learn's former gallery example "Color Quantization using
                K-Means" (no longer in its current gallery): ``KMeans(n_init="auto",
                random_state=0)`` fitted on 1,000 pixels drawn with
                ``sklearn.utils.shuffle(random_state=0)``, then ``predict`` on every pixel.
``mediancut``   Pillow ``Image.quantize(K, method=MEDIANCUT, dither=NONE)``.
``octree``      Pillow ``Image.quantize(K, method=FASTOCTREE, dither=NONE)``.
``imagequant``  libimagequant through PyPI ``imagequant``, ``dithering_level=0``. We call its
                ``quantize_raw_rgba_bytes`` with the image's bytes: ``quantize_pil_image`` builds
                its input with a per-byte Python loop that would dominate the timing.
``faiss``       ``faiss.Kmeans(3, K, seed=0)`` with its default iterations and training-set
                subsampling, trained on float32 pixels, every pixel assigned by ``index.search``.
``celebi``      ``materialyoucolor.quantize.QuantizeCelebi`` (Wu initialisation + weighted
                sort-means in CIELAB). It takes a list of ``[r, g, b]`` lists and returns a
                palette only, so each pixel is then assigned to its nearest palette colour (RGB
                Euclidean, computed once per distinct colour through a 2^24 lookup table); the
                list conversion and the assignment are timed as part of the peer.

Targets checked per row (the verdict column):

``Q``   quality: J(ours) <= 1.005 x the lowest J of any peer;
``S``   speed: ours is faster than every peer whose J <= 1.01 x J(ours);
``S5``  stretch: ours is faster than every peer whose J <= 1.05 x J(ours).

Memory: the peak extra memory of ``quantize`` on a 4096 x 4096 RGB uint8 image is measured in
fresh subprocesses, with tracemalloc (numpy reports its buffers to it) and as the growth of the
peak resident set size, and compared with 4x the image's bytes.

Examples
--------
Everything, tables also written into docs/benchmarks.md's generated block::

    python benchmarks/bench_quantize.py --shared-data ../shared/data --big \
        --markdown docs/benchmarks.md

A quick look at two K values and three peers::

    python benchmarks/bench_quantize.py --k 4,16 --peers faiss,imagequant,gallery --no-memory
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_K = (4, 16, 64, 256)
QUALITY_SLACK = 1.005
SPEED_SLACK = 1.01
STRETCH_SLACK = 1.05
BIG_SIDE = 4096
MOSAIC_CELL = 512


# --------------------------------------------------------------------------------------------
# Methods: each takes a (H, W, 3) uint8 image and K and returns the (H, W, 3) uint8
# reconstruction. Everything they do is timed.
# --------------------------------------------------------------------------------------------


def _round_palette(centres: np.ndarray) -> np.ndarray:
    """Round float centroids to the uint8 palette a decoder stores."""
    return np.clip(np.rint(centres), 0, 255).astype(np.uint8)


def _ours(image: np.ndarray, k: int) -> np.ndarray:
    from napari_kmeans_vq import quantize

    return quantize(image, k, random_state=0).reconstruction


def _seed(image: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    pixels = image.reshape(-1, 3).astype(np.float64)
    km = KMeans(n_clusters=k, n_init="auto", random_state=42).fit(pixels)
    return _round_palette(km.cluster_centers_)[km.labels_].reshape(image.shape)


def _gallery(image: np.ndarray, k: int) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.utils import shuffle

    # The gallery example scales to [0, 1] floats; k-means does not care about the scale.
    pixels = image.reshape(-1, 3).astype(np.float64) / 255.0
    sample = shuffle(pixels, random_state=0, n_samples=min(1_000, len(pixels)))
    km = KMeans(n_clusters=k, n_init="auto", random_state=0).fit(sample)
    labels = km.predict(pixels)
    return _round_palette(km.cluster_centers_ * 255.0)[labels].reshape(image.shape)


def _pillow(image: np.ndarray, k: int, method_name: str) -> np.ndarray:
    from PIL import Image

    method = getattr(Image.Quantize, method_name)
    indexed = Image.fromarray(image, mode="RGB").quantize(
        colors=k, method=method, dither=Image.Dither.NONE
    )
    return np.asarray(indexed.convert("RGB"))


def _mediancut(image: np.ndarray, k: int) -> np.ndarray:
    return _pillow(image, k, "MEDIANCUT")


def _octree(image: np.ndarray, k: int) -> np.ndarray:
    return _pillow(image, k, "FASTOCTREE")


def _imagequant(image: np.ndarray, k: int) -> np.ndarray:
    import imagequant

    h, w = image.shape[:2]
    rgba = np.empty((h, w, 4), dtype=np.uint8)
    rgba[..., :3] = image
    rgba[..., 3] = 255
    indices, palette = imagequant.quantize_raw_rgba_bytes(
        rgba.tobytes(), w, h, dithering_level=0.0, max_colors=k
    )
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 4)[:, :3]
    return palette[np.frombuffer(indices, dtype=np.uint8)].reshape(image.shape)


def _faiss(image: np.ndarray, k: int) -> np.ndarray:
    import faiss

    pixels = np.ascontiguousarray(image.reshape(-1, 3), dtype=np.float32)
    km = faiss.Kmeans(3, k, seed=0)
    km.train(pixels)
    _, nearest = km.index.search(pixels, 1)
    return _round_palette(km.centroids)[nearest[:, 0]].reshape(image.shape)


def _nearest_palette_index(image: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette colour for every pixel (squared RGB distance).

    The distances are computed once per distinct colour (found with a 2^24 presence table, no
    sort) and spread to the pixels by a lookup, which is the fastest plain-numpy way to assign
    and so treats the palette-only peer generously.
    """
    flat = image.reshape(-1, 3)
    code = (
        (flat[:, 0].astype(np.int32) << 16)
        | (flat[:, 1].astype(np.int32) << 8)
        | flat[:, 2].astype(np.int32)
    )
    seen = np.zeros(1 << 24, dtype=bool)
    seen[code] = True
    distinct = np.flatnonzero(seen)
    rgb = np.stack([(distinct >> 16) & 255, (distinct >> 8) & 255, distinct & 255], axis=1)
    rgb = rgb.astype(np.float32)
    pal = palette.astype(np.float32)
    pal_sq = (pal * pal).sum(axis=1)
    lut = np.zeros(1 << 24, dtype=np.uint16)
    # All terms are integers below 2^24, so float32 distances are exact.
    step = 65_536
    for start in range(0, len(distinct), step):
        block = rgb[start : start + step]
        dist = pal_sq[None, :] - 2.0 * (block @ pal.T)
        lut[distinct[start : start + step]] = np.argmin(dist, axis=1)
    return lut[code]


def _celebi(image: np.ndarray, k: int) -> np.ndarray:
    from materialyoucolor.quantize import QuantizeCelebi

    result = QuantizeCelebi(image.reshape(-1, 3).tolist(), k)
    argb = np.fromiter(result.keys(), dtype=np.int64, count=len(result))
    palette = np.stack([(argb >> 16) & 255, (argb >> 8) & 255, argb & 255], axis=1)
    palette = palette.astype(np.uint8)
    return palette[_nearest_palette_index(image, palette)].reshape(image.shape)


def _ref10(image: np.ndarray, k: int) -> np.ndarray:
    """The quality reference: scikit-learn's best of 10 k-means++ restarts on the distinct
    colours weighted by their pixel counts (exactly k-means on every pixel)."""
    from sklearn.cluster import KMeans

    colors, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    km = KMeans(n_clusters=min(k, len(colors)), n_init=10, random_state=0)
    km.fit(colors.astype(np.float64), sample_weight=counts.astype(np.float64))
    palette = _round_palette(km.cluster_centers_)
    # every pixel to its nearest rounded codeword, as ours encodes
    return palette[_nearest_palette_index(image, palette)].reshape(image.shape)


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    func: object
    module: str  # the optional package it needs
    max_k: int | None = None


METHODS = (
    Method("ours", "ours", _ours, "napari_kmeans_vq"),
    Method("seed", "seed (sklearn all px)", _seed, "sklearn"),
    Method("gallery", "sklearn gallery (1k px)", _gallery, "sklearn"),
    Method("mediancut", "Pillow median cut", _mediancut, "PIL", 256),
    Method("octree", "Pillow fast octree", _octree, "PIL", 256),
    Method("imagequant", "libimagequant", _imagequant, "imagequant", 256),
    Method("faiss", "faiss k-means", _faiss, "faiss"),
    Method("celebi", "Celebi (materialyoucolor)", _celebi, "materialyoucolor.quantize", 256),
    Method("ref10", "sklearn best of 10 (distinct colours)", _ref10, "sklearn"),
)
METHOD_BY_KEY = {m.key: m for m in METHODS}

METHODS_MD = [
    "Methods (columns):",
    "",
    "- ours: `napari_kmeans_vq.quantize(image, K, random_state=0).reconstruction`.",
    "- seed: scikit-learn `KMeans(n_clusters=K, n_init='auto', random_state=42)` fitted on every"
    " pixel (float64); `labels_` decoded with the centroids rounded to uint8.",
    "- sklearn gallery: the recipe of scikit-learn's former gallery example *Color Quantization"
    " using K-Means* (no longer in its current gallery):"
    " `KMeans(n_clusters=K, n_init='auto', random_state=0)` fitted on 1,000"
    " pixels drawn by `sklearn.utils.shuffle(random_state=0)`, `predict` on every pixel.",
    "- Pillow median cut / fast octree: `Image.quantize(K, method=MEDIANCUT | FASTOCTREE,"
    " dither=Dither.NONE)`, converted back to RGB.",
    "- libimagequant: PyPI `imagequant`, `quantize_raw_rgba_bytes(..., dithering_level=0.0,"
    " max_colors=K)` on the image's RGBA bytes (its `quantize_pil_image` converts pixels in a"
    " per-byte Python loop, which would dominate the time).",
    "- faiss k-means: `faiss.Kmeans(3, K, seed=0)` with faiss defaults (25 iterations, training"
    " set subsampled to 256 K points), float32 pixels, every pixel assigned by `index.search`.",
    "- Celebi: `materialyoucolor.quantize.QuantizeCelebi(pixels.tolist(), K)` (Wu"
    " initialisation, then weighted sort-means in CIELAB); it returns a palette only, so every"
    " pixel is assigned to the nearest palette colour in RGB (computed once per distinct"
    " colour via a 2^24 lookup table). The list conversion and the assignment are timed.",
    "- sklearn best of 10 (the quality reference): `KMeans(n_clusters=K, n_init=10,"
    " random_state=0)` fitted on the distinct colours with their pixel counts as"
    " `sample_weight` (k-means on every pixel), centroids rounded to uint8, every pixel"
    " decoded to its nearest rounded codeword (as ours is). The table's last section gives"
    " the worst J(ours) / J(reference) over all images and K.",
]


def _available(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # any import failure means "not available"
        return False
    return True


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def distortion(original: np.ndarray, reconstruction: np.ndarray) -> float:
    """J: mean over pixels of the squared error summed over the channels, exact in int64."""
    if reconstruction.shape != original.shape or reconstruction.dtype != np.uint8:
        raise ValueError(
            f"reconstruction has shape {reconstruction.shape} and dtype {reconstruction.dtype};"
            f" expected {original.shape} uint8"
        )
    a = original.reshape(-1, original.shape[-1])
    b = reconstruction.reshape(-1, original.shape[-1])
    total = 0
    step = 1 << 20
    for start in range(0, len(a), step):
        d = a[start : start + step].astype(np.int32) - b[start : start + step]
        total += int(np.einsum("ij,ij->", d, d, dtype=np.int64))
    return total / len(a)


def psnr(j: float, channels: int = 3) -> float:
    return math.inf if j == 0 else 10.0 * math.log10(255.0**2 / (j / channels))


@dataclass
class Cell:
    seconds: float | None = None  # None: not run
    j: float | None = None
    psnr: float | None = None
    note: str = ""  # "n/a", "skipped", "error: ..."


def run_method(method: Method, image: np.ndarray, k: int, repeat: int, slow: float) -> Cell:
    """Best wall-clock time of ``repeat`` calls after one untimed warm-up call; a call
    slower than ``slow`` s is not repeated (then the first call is the time).

    The warm-up matters for fast methods: whichever method first runs on an image grows
    the process's heap, and the fresh pages it touches cost it milliseconds that the
    methods run after it do not pay (measured: 5,500 page faults, about 8 ms, on the first
    call on a 768 x 512 photo, none a few calls later)."""
    best = math.inf
    recon = None
    for attempt in range(max(1, repeat) + 1):
        gc.collect()
        t0 = time.perf_counter()
        recon = method.func(image, k)
        elapsed = time.perf_counter() - t0
        if attempt > 0 or elapsed > slow:  # (the warm-up counts only when it is slow)
            best = min(best, elapsed)
        if elapsed > slow:
            break
    j = distortion(image, recon)
    return Cell(best, j, psnr(j))


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        # RGBA -> RGB drops alpha (the H&E tile is fully opaque).
        return np.array(im.convert("RGB"), dtype=np.uint8)


def build_mosaic(images: list[np.ndarray], side: int = BIG_SIDE, cell: int = MOSAIC_CELL):
    """A deterministic ``side`` x ``side`` mosaic of ``cell``-sized crops of the given images.

    Cells take the images in turn; each crop starts at a different, fixed offset (images
    smaller than a cell are mirrored to size first), so the mosaic holds the union of the
    images' colours in roughly equal shares.
    """
    out = np.empty((side, side, 3), dtype=np.uint8)
    n_cells = side // cell
    for r in range(n_cells):
        for c in range(n_cells):
            src = images[(r * n_cells + c) % len(images)]
            ph, pw = max(0, cell - src.shape[0]), max(0, cell - src.shape[1])
            if ph or pw:
                src = np.pad(src, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
            y = (r * 131 + c * 71) % (src.shape[0] - cell + 1)
            x = (r * 53 + c * 97) % (src.shape[1] - cell + 1)
            out[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = src[
                y : y + cell, x : x + cell
            ]
    return out


def collect_images(args) -> list[tuple[str, np.ndarray]]:
    images = []
    if not args.no_ihc:
        from skimage import data

        images.append(("immunohistochemistry", np.ascontiguousarray(data.immunohistochemistry())))
    paths = [Path(p) for p in args.image]
    if args.shared_data:
        paths += sorted(Path(args.shared_data).rglob("*.png"))
    seen = set()
    for p in paths:
        if p.resolve() in seen:
            continue
        seen.add(p.resolve())
        images.append((p.stem, load_rgb(p)))
    if not images:
        raise SystemExit("no images: drop --no-ihc or pass --image / --shared-data")
    return images


# --------------------------------------------------------------------------------------------
# Memory (subprocess worker)
# --------------------------------------------------------------------------------------------


def _proc_status_bytes(name: str) -> int:
    """A ``kB`` field of /proc/self/status, in bytes (psutil's RSS where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.Process().memory_info().rss


def _memory_worker(npy: str, k: int, mode: str) -> None:
    """Run in a fresh interpreter: print JSON with the peak extra bytes of one quantize call."""
    from napari_kmeans_vq import quantize

    image = np.load(npy)
    # One full call first: what is measured is a call's own memory, not the one-time
    # import of the libraries it loads lazily (such as scipy's k-d tree). Large K: a
    # small call loads the same code without doubling a run of minutes.
    cold = mode == "rss-cold"
    mode = "rss" if cold else mode
    quantize(image[:16, :16] if cold else image, 2 if cold else k, random_state=0)
    gc.collect()
    out = {"mode": mode, "k": k, "image_bytes": image.nbytes}
    if mode == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        q = quantize(image, k, random_state=0)
        out["seconds"] = time.perf_counter() - t0
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out["peak_extra"] = peak - base
        out["retained"] = current - base
    else:
        # Peak RSS of this process during the call: the kernel's high-water mark (VmHWM),
        # reset just before the call; where that is not possible, RSS polled every ms.
        rss0 = _proc_status_bytes("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            hwm = True
        except OSError:
            hwm = False
        stop, samples = threading.Event(), [rss0]
        if not hwm:
            import psutil

            proc = psutil.Process()

            def poll():
                while not stop.is_set():
                    samples.append(proc.memory_info().rss)
                    time.sleep(0.001)

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
        t0 = time.perf_counter()
        q = quantize(image, k, random_state=0)
        out["seconds"] = time.perf_counter() - t0
        if hwm:
            peak = _proc_status_bytes("VmHWM")
        else:
            stop.set()
            poller.join()
            peak = max(samples)
        out["mode"] = "rss (VmHWM)" if hwm else "rss (polled)"
        out["peak_extra"] = peak - rss0
        out["retained"] = _proc_status_bytes("VmRSS") - rss0
    del q
    print(json.dumps(out))


def measure_memory(
    image: np.ndarray, ks: list[int], threads: int, modes=("tracemalloc", "rss")
) -> list[dict]:
    rows = []
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, "big.npy")
        np.save(npy, image)
        for k in ks:
            for mode in modes:
                cmd = [sys.executable, __file__, "--_memory-worker", npy, str(k), mode]
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    err = res.stderr.strip().splitlines()[-1:] or ["?"]
                    rows.append({"mode": mode, "k": k, "error": err[0]})
                else:
                    rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def fmt_cell(cell: Cell) -> str:
    if cell.seconds is None:
        return cell.note or "n/a"
    p = "inf" if math.isinf(cell.psnr) else f"{cell.psnr:.2f}"
    return f"{cell.seconds:.3f} / {cell.j:.1f} / {p}"


def verdict(row: dict[str, Cell]) -> tuple[str, list[str]]:
    """Short verdict for the table and long lines (with peer numbers) for the failure list."""
    ours = row.get("ours")
    if ours is None or ours.seconds is None:
        return "-", []
    peers = {k: c for k, c in row.items() if k != "ours" and c.seconds is not None}
    if not peers:
        return "-", []
    parts, details = [], []
    best_key = min(peers, key=lambda key: peers[key].j)
    best_j = peers[best_key].j
    excess = ours.j / best_j - 1.0 if best_j > 0 else (0.0 if ours.j == 0 else math.inf)
    if ours.j <= QUALITY_SLACK * best_j:
        parts.append("Q ok")
    else:
        parts.append(f"Q FAIL +{100 * excess:.2f}%")
        details.append(
            f"quality: J {ours.j:.2f} is {100 * excess:.2f}% above {best_key}'s {best_j:.2f}"
            f" (limit +{100 * (QUALITY_SLACK - 1):.1f}%)"
        )
    listed = set()
    for tag, slack in (("S", SPEED_SLACK), ("S5", STRETCH_SLACK)):
        rivals = {k: c for k, c in peers.items() if c.j <= slack * ours.j}
        beaten = {k: c for k, c in rivals.items() if c.seconds <= ours.seconds}
        if not beaten:
            parts.append(f"{tag} ok")
            continue
        fastest = min(beaten, key=lambda key: beaten[key].seconds)
        parts.append(f"{tag} FAIL x{ours.seconds / beaten[fastest].seconds:.1f} ({fastest})")
        for key, c in sorted(beaten.items(), key=lambda kv: kv[1].seconds):
            if key in listed:  # already reported under the 1% target
                continue
            listed.add(key)
            details.append(
                f"{'speed' if tag == 'S' else 'stretch'}: {key} {c.seconds:.3f} s,"
                f" J {c.j:.2f} ({100 * (c.j / ours.j - 1):+.2f}%) vs ours"
                f" {ours.seconds:.3f} s, J {ours.j:.2f}: ours {ours.seconds / c.seconds:.2f}x"
                " slower"
            )
    return ", ".join(parts), details


def render_image_table(name, shape, results, keys) -> tuple[list[str], list[str]]:
    """Markdown table for one image; returns (lines, failure lines)."""
    h, w = shape[:2]
    lines = [
        f"## {name} ({w} x {h}, {results['distinct']:,} distinct colours)",
        "",
        "Cells: time s / J / PSNR dB.",
        "",
    ]
    header = ["K"] + [METHOD_BY_KEY[k].label for k in keys] + ["verdict"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---:"] + ["---:"] * len(keys) + [":---"]) + "|")
    failures = []
    for k, row in results["rows"].items():
        v, details = verdict(row)
        cells = [str(k)] + [fmt_cell(row[key]) for key in keys] + [v]
        lines.append("| " + " | ".join(cells) + " |")
        failures += [f"- {name}, K={k}: {d}" for d in details]
    lines.append("")
    return lines, failures


def render_reference(rows) -> list[str]:
    """The worst ratio J(ours) / J(sklearn best of 10) over every image and K."""
    ratios = [
        (row["ours"].j / row["ref10"].j, name, k)
        for name, k, row in rows
        if row["ours"].j is not None and row["ref10"].j  # (J = 0: both lossless)
    ]
    if not ratios:
        return []
    worst = max(ratios)
    over = [r for r in ratios if r[0] > QUALITY_SLACK]
    return [
        "## Quality against the reference",
        "",
        f"J(ours) / J(sklearn best of 10) over {len(ratios)} image x K cells: worst"
        f" {worst[0]:.4f} ({worst[1]}, K={worst[2]}), median"
        f" {sorted(r[0] for r in ratios)[len(ratios) // 2]:.4f}; cells above"
        f" {QUALITY_SLACK}: {len(over)}"
        + (
            ": " + ", ".join(f"{n} K={k} ({r:.4f})" for r, n, k in sorted(over)[::-1])
            if over
            else ""
        )
        + ".",
        "",
    ]


def count_distinct(image: np.ndarray) -> int:
    flat = image.reshape(-1, 3).astype(np.int32)
    seen = np.zeros(1 << 24, dtype=bool)
    seen[(flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]] = True
    return int(seen.sum())


def large_k_images(images) -> list[tuple[str, np.ndarray]]:
    """The large-K cases: every pixel a colour of its own (the most points a fit can have
    for its size), and the first image given."""
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    return [("uniform noise 512x512", noise), *list(images[:1])]


def render_large_k(cases: list[tuple[str, np.ndarray, list[dict]]], heading=True) -> list[str]:
    lines = ["## Large K", ""] if heading else [""]
    lines += [
        "One `quantize(image, K)` call each, in a fresh process (after a small call that loads"
        " the code): wall time, and the peak resident memory the call added (VmHWM). K up to"
        " 4,096 is what the fit takes (`MAX_FIT_COLORS`).",
        "",
        "| image | pixels | distinct colours | K | time (s) | peak extra memory (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, image, rows in cases:
        pixels = image.shape[0] * image.shape[1]
        for r in rows:
            if "error" in r:
                cells = f"error: {r['error']} | "
            else:
                cells = f"{r['seconds']:.1f} | {r['peak_extra'] / 2**20:.0f}"
            lines.append(
                f"| {name} | {pixels:,} | {count_distinct(image):,} | {r['k']:,} | {cells} |"
            )
    return [*lines, ""]


def histogram_rows(images, repeat: int) -> list[dict]:
    """Time ``ColorHistogram.from_pixels`` against ``np.unique`` on packed 24-bit keys
    (packing not timed) on uniform noise (every pixel nearly a colour of its own) and the
    images given; best of ``repeat`` after a warm-up, both results checked equal."""
    from napari_kmeans_vq.core.histogram import ColorHistogram

    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)
    rows = []
    for name, image in [("uniform noise 2048x2048", noise), *images]:
        pixels = image.reshape(-1, 3)
        p32 = pixels.astype(np.uint32)
        packed = p32[:, 0] | p32[:, 1] << 8 | p32[:, 2] << 16
        del p32
        times = {}
        for key, func in (
            ("ours", lambda px=pixels: ColorHistogram.from_pixels(px)),
            ("unique", lambda k=packed: np.unique(k, return_counts=True)),
        ):
            best = math.inf
            for attempt in range(repeat + 1):
                gc.collect()
                t0 = time.perf_counter()
                result = func()
                if attempt:
                    best = min(best, time.perf_counter() - t0)
            times[key] = (best, result)
        hist, (keys, counts) = times["ours"][1], times["unique"][1]
        if not (np.array_equal(hist.keys, keys) and np.array_equal(hist.counts, counts)):
            raise AssertionError(f"{name}: the histogram differs from np.unique's")
        rows.append(
            {
                "image": name,
                "pixels": len(pixels),
                "distinct": len(keys),
                "ours": times["ours"][0],
                "unique": times["unique"][0],
            }
        )
    return rows


def render_histogram(rows: list[dict]) -> list[str]:
    lines = [
        "## Colour histogram",
        "",
        "The distinct colours and their pixel counts, which every fit starts from:"
        " `ColorHistogram.from_pixels(pixels)` (default threads) against"
        " `np.unique(keys, return_counts=True)` on the same pixels packed into 24-bit keys"
        " beforehand (the packing is not timed). Best of the repeats after a warm-up; both"
        " give the same keys and counts (checked).",
        "",
        "| image | pixels | distinct colours | ours (ms) | np.unique (ms) | np.unique / ours |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['image']} | {r['pixels']:,} | {r['distinct']:,} | {1e3 * r['ours']:.1f} |"
            f" {1e3 * r['unique']:.1f} | {r['unique'] / r['ours']:.2f} |"
        )
    return [*lines, ""]


def render_memory(rows: list[dict]) -> list[str]:
    lines = [
        "## Memory: peak extra memory of `quantize` on a 4096 x 4096 RGB uint8 image",
        "",
        "Target: <= 4x the image's bytes (4 x 48 MiB = 192 MiB). Each row is a fresh"
        " interpreter that loads the image and makes one full call first (so that the one-time"
        " import of lazily loaded libraries, such as scipy's k-d tree, is not"
        " counted as the call's memory), then measures a second call: the tracemalloc peak over the traced memory before it (numpy reports its"
        " buffers), or the peak RSS (kernel high-water mark VmHWM, reset just before the call)"
        " over the RSS before it, which also counts allocator slack and library buffers. The"
        " call's outputs (labels, reconstruction) are part of the peak; 'retained' is what is"
        " still held after it.",
        "",
        "| K | measure | time s | peak extra MiB | x image bytes | retained MiB | target |",
        "|---:|:---|---:|---:|---:|---:|:---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['k']} | {r['mode']} | - | error: {r['error']} | | | |")
            continue
        ratio = r["peak_extra"] / r["image_bytes"]
        mark = "ok" if ratio <= 4 else f"FAIL (+{100 * (ratio / 4 - 1):.0f}%)"
        lines.append(
            f"| {r['k']} | {r['mode']} | {r['seconds']:.2f} | {r['peak_extra'] / 2**20:.1f} |"
            f" {ratio:.2f} | {r['retained'] / 2**20:.1f} | {mark} |"
        )
    lines.append("")
    return lines


def machine_info(threads: int) -> list[str]:
    from threadpoolctl import threadpool_info

    def version(dist):
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as dist_version

        try:
            return dist_version(dist)
        except PackageNotFoundError:
            return "n/a"

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pools = sorted(
        {f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info()},
    )
    mods = [
        ("python", platform.python_version()),
        ("numpy", version("numpy")),
        ("scikit-learn", version("scikit-learn")),
        ("pillow", version("pillow")),
        ("imagequant", version("imagequant")),
        ("faiss-cpu", version("faiss-cpu")),
        ("materialyoucolor", version("materialyoucolor")),
        ("napari-kmeans-vq", version("napari-kmeans-vq")),
    ]
    return [
        f"- machine: {platform.system()} {platform.machine()}, {cpu},"
        f" {os.cpu_count()} logical cores",
        f"- threads: {threads} for every pool (threadpoolctl: {', '.join(pools)};"
        f" faiss OpenMP set to {threads})",
        "- versions: " + ", ".join(f"{n} {v}" for n, v in mods),
        f"- load average at start (1/5/15 min): {_loadavg()} (other work on the machine"
        " inflates times)",
    ]


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time, J and PSNR of napari_kmeans_vq.quantize and peer quantizers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="methods: " + ", ".join(m.key for m in METHODS),
    )
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="PATH",
        help="an image file (PNG etc., RGBA is converted to RGB); repeatable",
    )
    p.add_argument(
        "--shared-data", metavar="DIR", help="add every *.png under DIR (e.g. ../shared/data)"
    )
    p.add_argument(
        "--no-ihc", action="store_true", help="leave out skimage.data.immunohistochemistry()"
    )
    p.add_argument(
        "--big", action="store_true", help="also run a 4096 x 4096 mosaic built from the images"
    )
    p.add_argument(
        "--k",
        default=",".join(map(str, DEFAULT_K)),
        help="comma-separated K values (default 4,16,64,256)",
    )
    p.add_argument("--big-k", help="K values for the big image (default: --k)")
    p.add_argument(
        "--peers",
        default=",".join(m.key for m in METHODS[1:]),
        help="comma-separated peers (default: all)",
    )
    p.add_argument(
        "--big-skip",
        default="",
        help="peers to skip on the big image: PEER (every K) or PEER@K, e.g. seed@64,seed@256",
    )
    p.add_argument(
        "--big-only", action="store_true", help="run only the big mosaic (implies --big)"
    )
    p.add_argument("--no-ours", action="store_true", help="run the peers only")
    p.add_argument("--repeat", type=int, default=3, help="best of N runs (small images)")
    p.add_argument("--big-repeat", type=int, default=1, help="best of N runs (big image)")
    p.add_argument(
        "--slow",
        type=float,
        default=5.0,
        help="a run slower than this many seconds is not repeated (default 5)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads for BLAS/OpenMP pools and faiss (default: all cores)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--memory-k", default="16,256", help="K values for the memory table")
    p.add_argument(
        "--large-k",
        default="",
        metavar="K,K",
        help="also time large K (e.g. 1024,4096) on uniform noise and the first image",
    )
    p.add_argument(
        "--large-k-only", action="store_true", help="only the large-K table (needs --large-k)"
    )
    p.add_argument(
        "--histogram-only",
        action="store_true",
        help="only the colour-histogram table (ours against np.unique; --big adds the mosaic)",
    )
    p.add_argument("--markdown", metavar="OUT", help="also write the report to this file")
    p.add_argument(
        "--block",
        default="bench-quantize",
        help="the generated block of --markdown to replace (default bench-quantize)",
    )
    p.add_argument("--_memory-worker", nargs=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _int_list(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _key_list(text: str) -> list[str]:
    keys = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [k for k in keys if k not in METHOD_BY_KEY or k == "ours"]
    if unknown:
        raise SystemExit(
            f"unknown peer(s) {unknown}; choose from " + ", ".join(m.key for m in METHODS[1:])
        )
    return keys


def _skip_list(text: str) -> set[str]:
    """Parse ``PEER`` / ``PEER@K`` items."""
    items = {t.strip() for t in text.split(",") if t.strip()}
    _key_list(",".join(sorted({t.split("@", 1)[0] for t in items})))
    return items


def main(argv=None) -> int:
    args = parse_args(argv)
    if args._memory_worker:
        npy, k, mode = args._memory_worker
        _memory_worker(npy, int(k), mode)
        return 0

    ks = _int_list(args.k)
    big_ks = _int_list(args.big_k) if args.big_k else ks
    peers = _key_list(args.peers)
    big_skip = _skip_list(args.big_skip)
    keys = ([] if args.no_ours else ["ours"]) + peers
    available = {k: _available(METHOD_BY_KEY[k].module) for k in keys}

    # Import every library first, then limit all thread pools they brought (OpenBLAS copies of
    # numpy, scipy and faiss, and faiss's OpenMP) to the same count.
    from threadpoolctl import threadpool_limits

    limiter = threadpool_limits(limits=args.threads)  # noqa: F841 - stays in force
    if available.get("faiss"):
        import faiss

        faiss.omp_set_num_threads(args.threads)

    images = collect_images(args)
    jobs = []
    if args.large_k_only or args.histogram_only:
        args.no_memory, args.big_only = True, False
        args.big = args.big and args.histogram_only
        keys = ["ours"]
    elif not args.big_only:
        jobs = [(name, img, ks, args.repeat, set()) for name, img in images]
    mosaic = None
    if args.big or args.big_only or not args.no_memory:
        mosaic = build_mosaic([img for _, img in images])
    if (args.big or args.big_only) and not args.histogram_only:
        jobs.append((f"mosaic {BIG_SIDE}x{BIG_SIDE}", mosaic, big_ks, args.big_repeat, big_skip))

    command = "python " + " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:]))
    out = [
        "# Colour quantization benchmark",
        "",
        f"Command: `{command}`",
        "",
        *machine_info(args.threads),
        "",
        "Every method is timed (wall clock, best of the repeats) from the uint8 RGB image to the"
        " uint8 reconstruction a decoder would produce: k-means centroids are rounded to uint8"
        " before decoding. J (mean squared error summed over R, G, B per pixel) and PSNR ="
        " 10 log10(255^2 / (J/3)) are computed by the benchmark itself, identically for every"
        " method. Verdict: Q = J(ours) <= 1.005 x best peer J; S = ours faster than every peer"
        " with J <= 1.01 x J(ours); S5 = the same for peers within 5%."
        f" Repeats: best of {args.repeat} (small images), {args.big_repeat} (big image),"
        " after one untimed warm-up call of each method on each image and K; a run slower"
        f" than {args.slow:g} s is neither repeated nor warmed up for (its time is the first"
        " call's).",
        "",
        *METHODS_MD,
        "",
    ]
    if args.large_k_only or args.histogram_only:
        out = out[:6]
    if (args.big or args.big_only) and not args.histogram_only:
        out += [
            f"The big image is a deterministic {BIG_SIDE} x {BIG_SIDE} mosaic of"
            f" {MOSAIC_CELL} x {MOSAIC_CELL} crops of the images above, taken in turn.",
            "",
        ]
    print("\n".join(out), flush=True)
    failures = []
    all_rows = []
    for name, img, kk, repeat, skip in jobs:
        results = {"distinct": count_distinct(img), "rows": {}}
        for k in kk:
            row = {}
            for key in keys:
                m = METHOD_BY_KEY[key]
                if not available[key]:
                    row[key] = Cell(note="n/a")
                elif m.max_k is not None and k > m.max_k:
                    row[key] = Cell(note=f"n/a (K>{m.max_k})")
                elif key in skip or f"{key}@{k}" in skip:
                    row[key] = Cell(note="skipped")
                else:
                    try:
                        row[key] = run_method(m, img, k, repeat, args.slow)
                    except Exception as exc:  # report, keep benchmarking
                        row[key] = Cell(note=f"error: {type(exc).__name__}")
                        print(f"[{name} K={k} {key}] {exc!r}", file=sys.stderr)
                print(f"  [{name} K={k}] {key}: {fmt_cell(row[key])}", file=sys.stderr, flush=True)
            results["rows"][k] = row
        all_rows += [(name, k, row) for k, row in results["rows"].items()]
        lines, fails = render_image_table(name, img.shape, results, keys)
        failures += fails
        out += lines
        print("\n".join(lines), flush=True)

    if not args.no_memory and not args.no_ours and available.get("ours"):
        print("  [memory] measuring in subprocesses ...", file=sys.stderr, flush=True)
        lines = render_memory(measure_memory(mosaic, _int_list(args.memory_k), args.threads))
        out += lines
        print("\n".join(lines), flush=True)

    if args.large_k and not args.no_ours:
        print("  [large K] measuring in subprocesses ...", file=sys.stderr, flush=True)
        cases = [
            (name, img, measure_memory(img, _int_list(args.large_k), args.threads, ("rss-cold",)))
            for name, img in large_k_images(images)
        ]
        lines = render_large_k(cases, heading=not args.large_k_only)
        out += lines
        print("\n".join(lines), flush=True)

    if args.histogram_only:
        cases = list(images) + ([(f"mosaic {BIG_SIDE}x{BIG_SIDE}", mosaic)] if args.big else [])
        lines = render_histogram(histogram_rows(cases, args.repeat))
        out += lines
        print("\n".join(lines), flush=True)

    if "ours" in keys and "ref10" in keys:
        lines = render_reference(all_rows)
        out += lines
        print("\n".join(lines), flush=True)

    if "ours" in keys and available.get("ours") and not (args.large_k_only or args.histogram_only):
        lines = ["## Targets missed", ""] + (failures or ["- none"]) + [""]
        out += lines
        print("\n".join(lines), flush=True)

    lines = [f"Load average at the end (1/5/15 min): {_loadavg()}.", ""]
    out += lines
    print("\n".join(lines), flush=True)

    if args.markdown:
        # Only the page's <!-- generated: bench-quantize --> block (docs/scripts/generate.py);
        # the title stays the page's own, the run's date labels the timings.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))
        from datetime import date

        from generate import write_block

        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        body = [f"Run on {date.today()}. " + out[2], *out[3:]]
        write_block(Path(args.markdown), args.block, "\n".join(body).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
