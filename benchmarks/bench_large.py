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

Slide mode (``--slide``): a pyramidal JPEG-tiled TIFF as scanners write them, made by
``benchmarks/make_slide.py`` (``--make-slide SIDE``) or any slide given. Each figure comes
from a fresh process with the same dask threaded scheduler and ``--threads`` threads:

* decode only: every tile of the full-resolution level read and decoded once, through the
  same reader and blocks as the run (nothing else done with the pixels);
* ours: ``napari_kmeans_vq.quantize(open_image(slide), K)`` (the exact fit: every tile
  decoded for the colour histogram, then k-means), then ``save_ome_zarr``: labels encoded
  block by block (every tile decoded again) and written as multiscale OME-Zarr labels with
  palette colours, class properties and a pyramid subsampled from the full-resolution
  labels;
* labels only, and labels + zstd, each in a process of its own: the same fit, then the
  full-resolution labels made block by block as the writer stores them and dropped, or
  also compressed in chunks as the writer does and dropped. With them the printout splits
  the run's time into fit, labelling, zstd and the rest (pyramid, class counts, files,
  scheduling), each as a multiple of decode only;
* the ratio of ours to decode only, and the run's peak resident memory (its RSS
  high-water mark).

Each phase is timed from the opened slide, its modules imported: imports and opening
weigh in none of them.

``--fit-level N`` fits on pyramid level N instead (what a user may ask for: the fit then
decodes that level's tiles, not the full resolution's).

Usage::

    python benchmarks/bench_large.py --make-slide 16384                 # 0.27 Gpx
    python benchmarks/bench_large.py --make-slide 65536 --keep          # 4.3 Gpx
    python benchmarks/bench_large.py --slide slide.svs --markdown docs/large-images.md
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
from datetime import date
from pathlib import Path

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


def _threads(threads: int):
    import dask

    return dask.config.set(scheduler="threads", num_workers=threads)


def _open_slide(src: str):
    """The slide opened, and every module the slide phases use imported (dask.array,
    distributed when installed, as dask's compute looks for it, zarr): each phase is timed
    from the opened slide, so that imports weigh in none of them."""
    import importlib.util

    import dask.array  # noqa: F401
    import zarr  # noqa: F401

    from napari_kmeans_vq.large.inputs import open_image

    if importlib.util.find_spec("distributed") is not None:
        import distributed  # noqa: F401
    return open_image(src)


def slide_decode(src: str, threads: int) -> dict:
    """Decode every tile of the slide's full-resolution level once: the floor of any
    exact pass over the pixels. Runs in its own process."""
    from napari_kmeans_vq.large.inputs import as_dask

    opened = _open_slide(src)
    level = opened[0] if isinstance(opened, list) else opened
    x = as_dask(level)
    with PeakRSS() as mem, _threads(threads):
        t0, c0 = time.perf_counter(), time.process_time()
        x.map_blocks(lambda b: np.zeros((1,) * b.ndim, np.uint8), chunks=(1,) * x.ndim).compute()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "decode_seconds": seconds,
        "decode_cpu_seconds": cpu,
        "tiles_read": getattr(level, "tiles_read", None),
        "peak_rss_sampled_mib": mem.peak / 2**20,
        "peak_rss_getrusage_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _stored_block(labels, k: int, chunk: int) -> np.ndarray:
    """A block of labels made as the writer stores it (codeword + 1, in the labels' dtype)
    and dropped; with ``chunk``, also cut into chunk x chunk pieces (edge pieces padded
    with the fill value 0), each compressed with the writer's default zstd. The bytes made,
    as a 1 x 1 block."""
    from napari_kmeans_vq._limits import label_dtype
    from napari_kmeans_vq.io.omezarr import default_compressor

    stored = labels.astype(label_dtype(k)) + 1
    size = 0
    if not chunk:
        return np.full((1,) * labels.ndim, size, dtype=np.int64)
    codec = default_compressor("0.4")  # the numcodecs Zstd: the same settings as 0.5's
    for r in range(0, stored.shape[0], chunk):
        for c in range(0, stored.shape[1], chunk):
            piece = stored[r : r + chunk, c : c + chunk]
            if piece.shape != (chunk, chunk):
                full = np.zeros((chunk, chunk), dtype=stored.dtype)
                full[: piece.shape[0], : piece.shape[1]] = piece
                piece = full
            size += len(codec.encode(np.ascontiguousarray(piece)))
    return np.full((1,) * labels.ndim, size, dtype=np.int64)


def slide_labels(src: str, k: int, threads: int, fit_level: int, chunk: int = 0) -> dict:
    """The same fit as the run, then the full-resolution labels made block by block as the
    writer stores them, and dropped; with ``chunk``, compressed in chunks first (no counts,
    pyramid or files). Runs in its own process, so that the pass finds the fit's lookup
    table as the run's writing does (a fit on another level leaves colours to look up)."""
    from napari_kmeans_vq import quantize

    levels = _open_slide(src)
    with _threads(threads):
        t0 = time.perf_counter()
        q = quantize(levels, k, fit_level=fit_level)
        t1 = time.perf_counter()
        labels = q.levels[0]
        sizes = labels.map_blocks(
            _stored_block, k, chunk, chunks=(1,) * labels.ndim, dtype=np.int64
        )
        size = int(sizes.sum().compute())
        t2 = time.perf_counter()
    return {"fit_seconds": t1 - t0, "pass_seconds": t2 - t1, "compressed_bytes": size}


def slide_run(src: str, out: str, k: int, chunk: int, threads: int, fit_level: int = 0) -> dict:
    """Slide to multiscale OME-Zarr labels: exact fit, then encode and write. Runs in its
    own process."""
    from napari_kmeans_vq import quantize
    from napari_kmeans_vq.io import save_ome_zarr
    from napari_kmeans_vq.io.omezarr import read_labels

    levels = _open_slide(src)
    with PeakRSS() as mem, _threads(threads):
        t0, c0 = time.perf_counter(), time.process_time()
        q = quantize(levels, k, fit_level=fit_level)
        t1 = time.perf_counter()
        # As the command line does: the label pyramid is subsampled from the
        # full-resolution labels as they are written (the slide's lower levels are not read).
        save_ome_zarr(out, q, chunk=chunk, overwrite=True)
        t2, c2 = time.perf_counter(), time.process_time()
    label_levels, meta = read_labels(out)
    level0 = levels[0] if isinstance(levels, list) else levels
    return {
        "fit_seconds": t1 - t0,
        "kmeans_seconds": q.codebook.fit_seconds_,
        "write_seconds": t2 - t1,
        "total_seconds": t2 - t0,
        "total_cpu_seconds": c2 - c0,
        "fit": q.info["fit"],
        "fit_level": q.info["fit_level"],
        "tiles_read": getattr(level0, "tiles_read", None),
        "n_distinct_colors": q.codebook.n_distinct_colors_,
        "psnr": q.psnr,
        "n_levels": len(label_levels),
        "n_properties": len(meta.get("properties", [])),
        "peak_rss_sampled_mib": mem.peak / 2**20,
        "baseline_rss_mib": mem.baseline / 2**20,
        "peak_rss_getrusage_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def describe_slide(src: str) -> dict:
    import tifffile

    with tifffile.TiffFile(src) as tif:
        series = tif.series[0]
        page = series.levels[0].pages[0]
        return {
            "shape": list(series.levels[0].shape),
            "levels": len(series.levels),
            "tile": list(page.chunks[:2]),
            "tiles": len(page.dataoffsets),
            "compression": page.compression.name,
            "bytes": os.path.getsize(src),
        }


def slide_main(args) -> int:
    me = os.path.abspath(__file__)
    workdir = args.workdir or tempfile.mkdtemp(prefix="kvq-slide-", dir=os.getcwd())
    os.makedirs(workdir, exist_ok=True)
    src = args.slide
    made = None
    if src is None:
        sys.path.insert(0, os.path.dirname(me))
        import make_slide

        src = os.path.join(workdir, f"slide_{args.make_slide}.tif")
        if not os.path.exists(src):
            made = make_slide.write_slide(src, args.make_slide, workers=args.threads)
    out = os.path.join(workdir, f"{os.path.basename(src)}_labels.ome.zarr")
    common = ["--threads", str(args.threads), "--src", src]
    try:
        figures = {"input": describe_slide(src)}
        for phase, extra in (
            ("decode", []),
            ("labels", ["--k", str(args.k), "--fit-level", str(args.fit_level)]),
            (
                "zstd",
                [
                    *("--k", str(args.k), "--fit-level", str(args.fit_level)),
                    *("--chunk", str(args.chunk)),
                ],
            ),
            (
                "slide",
                [
                    *("--k", str(args.k), "--chunk", str(args.chunk), "--out", out),
                    *("--fit-level", str(args.fit_level)),
                ],
            ),
        ):
            done = subprocess.run(
                [sys.executable, me, "--phase", phase, *common, *extra],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            figures[phase] = json.loads(done.stdout.strip().splitlines()[-1])
        figures["output_mib"] = du(out) / 2**20
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            if made is not None:
                os.remove(src)
            if not args.workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    info, d, run_ = figures["input"], figures["decode"], figures["slide"]
    rows, cols = info["shape"][:2]
    ratio = run_["total_seconds"] / d["decode_seconds"]
    lab, zst = figures["labels"], figures["zstd"]
    # The run's time in stages: labelling and zstd from the passes of the labels and zstd
    # processes (after their fits), the rest what the run took past its fit and those two
    # (from other processes: noise may move a stage by a few hundredths either way).
    labelling, zstd = lab["pass_seconds"], zst["pass_seconds"] - lab["pass_seconds"]
    stages = {
        "fit": run_["fit_seconds"],
        "labelling": labelling,
        "zstd": zstd,
        "the rest": run_["total_seconds"] - run_["fit_seconds"] - labelling - zstd,
    }
    lines = [
        f"# bench_large --slide: K={args.k}, {args.threads} threads (dask threaded "
        f"scheduler), {os.cpu_count()} CPUs, Python {platform.python_version()}",
        f"slide            {rows:,} x {cols:,} RGB ({rows * cols / 1e9:.2f} Gpx), "
        f"{info['levels']} levels, {info['tiles']:,} {info['compression']} tiles of "
        f"{info['tile'][0]} x {info['tile'][1]}, {info['bytes'] / 2**20:,.0f} MiB",
        f"decode only      {d['decode_seconds']:8.1f} s  (every full-resolution tile "
        f"decoded once; CPU {d['decode_cpu_seconds']:.1f} s; peak RSS "
        f"{d['peak_rss_getrusage_mib']:.0f} MiB)",
        f"ours             {run_['total_seconds']:8.1f} s  ({run_['fit']} fit"
        + (f" on level {run_['fit_level']}" if run_["fit_level"] else "")
        + " "
        f"{run_['fit_seconds']:.1f} s of which k-means {run_['kmeans_seconds']:.1f} s; "
        f"encode + write {run_['write_seconds']:.1f} s; CPU {run_['total_cpu_seconds']:.1f} s)",
        f"labels only      {lab['pass_seconds']:8.1f} s  (after the same fit in a process of "
        f"its own, the full-resolution labels made block by block as stored, and dropped)",
        f"labels + zstd    {zst['pass_seconds']:8.1f} s  (the same in another process, the "
        f"labels also compressed in {args.chunk} x {args.chunk} chunks as written, and "
        f"dropped: {zst['compressed_bytes'] / 2**20:,.0f} MiB at full resolution)",
        f"ratio            {ratio:8.2f}  (of CPU times "
        f"{run_['total_cpu_seconds'] / d['decode_cpu_seconds']:.2f}, less swayed by other work)",
        "stages           "
        + " + ".join(f"{name} {t / d['decode_seconds']:.2f}" for name, t in stages.items())
        + f" = {ratio:.2f}  (as times decode only; labelling: decoding the tiles"
        + (" again" if not run_["fit_level"] else "")
        + " and looking the labels up; zstd: compressing the full-resolution labels; the "
        + "rest: the pyramid, "
        + ("class counts, " if run_["fit_level"] else "")
        + "files, scheduling)",
        f"peak memory      {run_['peak_rss_getrusage_mib']:8.0f} MiB  (RSS high-water mark "
        f"of the run's process; {run_['baseline_rss_mib']:.0f} MiB after imports and opening)",
        f"output           {run_['n_levels']} label levels, {run_['n_properties']} classes "
        f"with colours and properties, {figures['output_mib']:,.0f} MiB; "
        f"{run_['n_distinct_colors']:,} distinct colours, PSNR {run_['psnr']:.2f} dB; "
        f"full-resolution tiles decoded {run_['tiles_read']:,} ({info['tiles']:,} tiles)",
    ]
    text = "\n".join(lines)
    print(text)
    if args.json:
        print(json.dumps(figures))
    if args.markdown:
        write_markdown(
            args,
            (f"--make-slide {args.make_slide}" if args.slide is None else "--slide SLIDE")
            + (f" --fit-level {args.fit_level}" if args.fit_level else ""),
            text,
        )
    return 0


def write_markdown(args, options: str, text: str) -> None:
    """The printout ``text`` into the generated block ``args.block`` of ``args.markdown``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))
    from generate import write_block

    write_block(
        Path(args.markdown),
        args.block,
        f"`python benchmarks/bench_large.py {options}`, run on {date.today()} (load average "
        f"{' / '.join(f'{v:.2f}' for v in os.getloadavg())} at the end), as printed:"
        f"\n\n```text\n{text}\n```",
    )


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
    slide = parser.add_mutually_exclusive_group()
    slide.add_argument("--slide", help="slide mode: a (pyramidal, tiled) TIFF to measure")
    slide.add_argument(
        "--make-slide",
        type=int,
        metavar="SIDE",
        help="slide mode on a SIDE x SIDE slide from benchmarks/make_slide.py (kept in "
        "--workdir and reused when there)",
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="dask threads (all CPUs)"
    )
    parser.add_argument(
        "--fit-level",
        type=int,
        default=0,
        help="slide mode: the pyramid level the (exact) fit reads (default 0: full resolution)",
    )
    parser.add_argument(
        "--markdown",
        metavar="OUT",
        help="write the printout into OUT's generated block (--block)",
    )
    parser.add_argument(
        "--block", default="bench-large", help="the generated block --markdown writes"
    )
    parser.add_argument(
        "--phase",
        choices=["run", "check", "decode", "labels", "zstd", "slide"],
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.phase == "run":
        print(json.dumps(run(args.src, args.out, args.k, args.chunk)))
        return 0
    if args.phase == "check":
        print(json.dumps(check_crop(args.src, args.k, args.crop)))
        return 0
    if args.phase == "decode":
        print(json.dumps(slide_decode(args.src, args.threads)))
        return 0
    if args.phase in ("labels", "zstd"):
        chunk = args.chunk if args.phase == "zstd" else 0
        print(json.dumps(slide_labels(args.src, args.k, args.threads, args.fit_level, chunk)))
        return 0
    if args.phase == "slide":
        print(
            json.dumps(
                slide_run(args.src, args.out, args.k, args.chunk, args.threads, args.fit_level)
            )
        )
        return 0
    if args.slide or args.make_slide:
        return slide_main(args)

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
    c = f["check"]
    lines = [
        f"# bench_large: {f['size']:,} x {f['size']:,} RGB uint8 ({f['size'] ** 2 / 1e9:.3f} "
        f"Gpx), K={f['k']}, colours from {f['tile']}, {f['cpus']} CPUs, threaded dask "
        f"scheduler, Python {f['python']}",
        f"input zarr     {f['input_mib']:9.1f} MiB (raw {f['raw_mib']:.0f} MiB, blosc-lz4), "
        f"generated in {f['generate_seconds']:.1f} s",
        f"distinct colours {f['n_distinct_colors']:,}; k-means {f['n_iter']} iterations, "
        f"{f['kmeans_seconds']:.1f} s; PSNR {f['psnr']:.2f} dB",
        f"fit (histogram + k-means)  {f['fit_seconds']:7.1f} s",
        f"encode + write OME-Zarr    {f['write_seconds']:7.1f} s  ({f['n_levels']} levels, "
        f"chunks {f['chunk']}, {f['output_mib']:.1f} MiB)",
        f"end to end                 {f['total_seconds']:7.1f} s",
        f"peak RSS (sampled)         {f['peak_rss_sampled_mib']:7.0f} MiB "
        f"(baseline after imports {f['baseline_rss_mib']:.0f} MiB)",
        f"peak RSS (getrusage)       {f['peak_rss_getrusage_mib']:7.0f} MiB",
        f"crop {c['crop']:,} x {c['crop']:,}: chunked fit == in-memory exact fit: "
        f"palette {c['palette_equal']}, centroids {c['centroids_equal']}, labels "
        f"{c['labels_equal']} (chunked {c['chunked_seconds']:.1f} s, in memory "
        f"{c['in_memory_seconds']:.1f} s)",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        options = " ".join(
            f"--{name} {value}"
            for name, value in (("size", args.size), ("k", args.k), ("chunk", args.chunk))
        )
        write_markdown(args, options + (" --tile TILE" if args.tile else ""), text)
    if args.json:
        print(json.dumps({key: v for key, v in f.items() if key != "palette"}))
    ok = c["palette_equal"] and c["labels_equal"]
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
