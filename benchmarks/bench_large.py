"""Whole-slide benchmark: exact K-means fit and OME-Zarr labels for a gigapixel RGB zarr.

Builds a SIZE x SIZE RGB uint8 zarr (default 32,768: one gigapixel, 3 GiB raw) from real
tissue colours -- the H&E tile given with --tile, else scikit-image's IHC slide -- tiled
with deterministic variation (each 2,048-pixel block a flipped / transposed / shifted copy
with one of six stain intensities). Then, in a fresh process whose memory is measured:

1. ``quantize_lazy(zarr, K)``: the exact colour histogram block by block, and the fit;
2. ``write_labels(...)``: labels encoded block by block and written as OME-Zarr labels
   with a pyramid.

It prints wall time per phase, peak resident memory (sampled every 20 ms, and the
process's maximum RSS from getrusage), and then checks on an 8,192 x 8,192 crop (size/4
for smaller runs) that the chunked fit's codebook and labels equal the in-memory exact fit
on the same pixels. Inputs and outputs are deleted afterwards unless --keep.

Usage::

    python benchmarks/bench_large.py                       # full size, IHC colours
    python benchmarks/bench_large.py --tile /path/he.png   # H&E tile colours
    python benchmarks/bench_large.py --size 8192           # a quick try
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

BLOCK = 2048
GAINS = (1.0, 0.94, 1.06, 0.88, 0.97, 1.03)


def load_tile(path: str | None) -> np.ndarray:
    if path:
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))
    from skimage import data

    return data.immunohistochemistry()


def make_block(tile: np.ndarray, index: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """One block of the synthetic slide: the tile varied deterministically by its index."""
    rng = np.random.default_rng((2024, *index))
    t = tile
    if rng.random() < 0.5:
        t = t[::-1]
    if rng.random() < 0.5:
        t = t[:, ::-1]
    if rng.random() < 0.5:
        t = t.transpose(1, 0, 2)
    gain = GAINS[int(rng.integers(len(GAINS)))]
    # Stain intensity: darken or lighten the optical density, keeping white white.
    t = (255 - np.clip(np.rint((255 - t.astype(np.float32)) * gain), 0, 255)).astype(np.uint8)
    reps = (-(-shape[0] // t.shape[0]) + 1, -(-shape[1] // t.shape[1]) + 1, 1)
    big = np.tile(t, reps)
    dy, dx = (int(v) for v in rng.integers(0, t.shape[:2]))
    return np.ascontiguousarray(big[dy : dy + shape[0], dx : dx + shape[1]])


def generate(path: str, size: int, tile_path: str | None) -> None:
    import dask
    import dask.array as da
    import zarr

    tile = load_tile(tile_path)
    arr = zarr.create_array(
        path,
        shape=(size, size, 3),
        chunks=(BLOCK, BLOCK, 3),
        dtype="uint8",
        compressors=zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        overwrite=True,
    )

    def write(i, j):
        ys, xs = i * BLOCK, j * BLOCK
        shape = (min(BLOCK, size - ys), min(BLOCK, size - xs))
        arr[ys : ys + shape[0], xs : xs + shape[1]] = make_block(tile, (i, j), shape)

    n = -(-size // BLOCK)
    tasks = [dask.delayed(write)(i, j) for i in range(n) for j in range(n)]
    dask.compute(*tasks, scheduler="threads")
    del da


class PeakRSS:
    """Samples this process's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self.baseline = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run(src: str, out: str, k: int, chunk: int) -> dict:
    """The measured pipeline: fit and write. Runs in its own process."""
    import zarr

    from napari_kmeans_vq.io.omezarr import read_labels, write_labels
    from napari_kmeans_vq.large import quantize_lazy

    figures = {}
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        image = zarr.open_array(src, mode="r")
        q = quantize_lazy(image, k)
        t1 = time.perf_counter()
        write_labels(out, q, chunk=chunk, overwrite=True)
        t2 = time.perf_counter()
    figures.update(
        fit_seconds=t1 - t0,
        kmeans_seconds=q.codebook.fit_seconds_,
        write_seconds=t2 - t1,
        total_seconds=t2 - t0,
        peak_rss_sampled_mib=mem.peak / 2**20,
        baseline_rss_mib=mem.baseline / 2**20,
        # ru_maxrss is KiB on Linux: the whole life of this process (imports included).
        peak_rss_getrusage_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        n_distinct_colors=q.codebook.n_distinct_colors_,
        n_iter=q.codebook.n_iter_,
        psnr=q.psnr,
        palette=q.palette.tolist(),
        n_levels=len(read_labels(out)[0]),
    )
    return figures


def check_crop(src: str, k: int, crop: int) -> dict:
    """Chunked fit on a crop == in-memory exact fit on the same pixels (codebook and labels)."""
    import dask.array as da
    import zarr

    from napari_kmeans_vq import quantize
    from napari_kmeans_vq.large import quantize_lazy

    z = zarr.open_array(src, mode="r")
    lazy_in = da.from_zarr(z)[:crop, :crop]
    t0 = time.perf_counter()
    lazy = quantize_lazy(lazy_in, k)
    lazy_labels = lazy.labels.compute()
    t1 = time.perf_counter()
    pixels = np.asarray(z[:crop, :crop])
    eager = quantize(pixels, k)
    t2 = time.perf_counter()
    return {
        "crop": crop,
        "palette_equal": bool(np.array_equal(lazy.palette, eager.palette)),
        "centroids_equal": bool(np.array_equal(lazy.centroids, eager.centroids)),
        "labels_equal": bool(np.array_equal(lazy_labels, eager.labels)),
        "chunked_seconds": t1 - t0,
        "in_memory_seconds": t2 - t1,
    }


def du(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32_768, help="side in pixels (default 32768)")
    parser.add_argument("--k", type=int, default=16, help="codebook size (default 16)")
    parser.add_argument("--tile", help="RGB image whose colours make the slide (default: IHC)")
    parser.add_argument("--chunk", type=int, default=1024, help="OME-Zarr chunk side")
    parser.add_argument("--crop", type=int, default=None, help="check crop side (8192)")
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the zarr files")
    parser.add_argument("--json", action="store_true", help="also print one JSON line")
    parser.add_argument("--phase", choices=["run", "check"], help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase == "run":
        print(json.dumps(run(args.src, args.out, args.k, args.chunk)))
        return 0
    if args.phase == "check":
        print(json.dumps(check_crop(args.src, args.k, args.crop)))
        return 0

    crop = args.crop or min(8192, max(BLOCK, args.size // 4))
    workdir = args.workdir or tempfile.mkdtemp(prefix="kvq-bench-", dir=os.getcwd())
    os.makedirs(workdir, exist_ok=True)
    raw = args.size * args.size * 3
    free = shutil.disk_usage(workdir).free
    if free < raw * 1.2:
        print(
            f"not enough disk: {free / 2**30:.1f} GiB free in {workdir}, need up to "
            f"{raw * 1.2 / 2**30:.1f} GiB",
            file=sys.stderr,
        )
        return 1
    src = os.path.join(workdir, f"slide_{args.size}.zarr")
    out = os.path.join(workdir, f"slide_{args.size}_labels.ome.zarr")
    me = os.path.abspath(__file__)
    try:
        t = time.perf_counter()
        generate(src, args.size, args.tile)
        gen_seconds = time.perf_counter() - t
        cmd = [sys.executable, me, "--k", str(args.k), "--chunk", str(args.chunk), "--src", src]
        done = subprocess.run(
            [*cmd, "--phase", "run", "--out", out], capture_output=True, text=True
        )
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        done = subprocess.run(
            [*cmd, "--phase", "check", "--crop", str(crop)], capture_output=True, text=True
        )
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        check = json.loads(done.stdout.strip().splitlines()[-1])
        figures.update(
            size=args.size,
            k=args.k,
            tile=args.tile or "skimage IHC",
            chunk=args.chunk,
            generate_seconds=gen_seconds,
            input_mib=du(src) / 2**20,
            output_mib=du(out) / 2**20,
            raw_mib=raw / 2**20,
            check=check,
            cpus=os.cpu_count(),
            python=platform.python_version(),
        )
    finally:
        if not args.keep:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    f = figures
    print(
        f"# bench_large: {f['size']} x {f['size']} RGB uint8 ({f['size'] ** 2 / 1e9:.3f} Gpx), "
        f"K={f['k']}, colours from {f['tile']}, {f['cpus']} CPUs, threaded dask scheduler"
    )
    print(
        f"input zarr     {f['input_mib']:9.1f} MiB (raw {f['raw_mib']:.0f} MiB, blosc-lz4), "
        f"generated in {f['generate_seconds']:.1f} s"
    )
    print(
        f"distinct colours {f['n_distinct_colors']:,}; k-means {f['n_iter']} iterations, "
        f"{f['kmeans_seconds']:.1f} s; PSNR {f['psnr']:.2f} dB"
    )
    print(f"fit (histogram + k-means)  {f['fit_seconds']:7.1f} s")
    print(
        f"encode + write OME-Zarr    {f['write_seconds']:7.1f} s  ({f['n_levels']} levels, "
        f"chunks {f['chunk']}, {f['output_mib']:.1f} MiB)"
    )
    print(f"end to end                 {f['total_seconds']:7.1f} s")
    print(
        f"peak RSS (sampled)         {f['peak_rss_sampled_mib']:7.0f} MiB "
        f"(baseline after imports {f['baseline_rss_mib']:.0f} MiB)"
    )
    print(f"peak RSS (getrusage)       {f['peak_rss_getrusage_mib']:7.0f} MiB")
    c = f["check"]
    print(
        f"crop {c['crop']} x {c['crop']}: chunked fit == in-memory exact fit: "
        f"palette {c['palette_equal']}, centroids {c['centroids_equal']}, labels "
        f"{c['labels_equal']} (chunked {c['chunked_seconds']:.1f} s, in memory "
        f"{c['in_memory_seconds']:.1f} s)"
    )
    if args.json:
        print(json.dumps({key: v for key, v in f.items() if key != "palette"}))
    ok = c["palette_equal"] and c["labels_equal"]
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
