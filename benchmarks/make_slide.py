"""Write a deterministic benchmark slide: a pyramidal, JPEG-tiled TIFF made from tissue tiles.

The slide is laid out as scanners write them (Aperio SVS, generic tiled TIFF): the full
resolution image in JPEG tiles (YCbCr, 2 x 2 chroma subsampling, BigTIFF), and a pyramid
of 2x reduced levels as SubIFDs, each tiled the same way. A name ending in ``.ome.tif``
writes an OME-TIFF. The default is 65,536 x 65,536 pixels (4.3 Gpx); ``--side 4096``
makes a small one for tests.

Where the tissue comes from:

* ``skimage.data.immunohistochemistry()``: a real IHC field (colon, haematoxylin and
  DAB), shipped with scikit-image;
* ``napari_kmeans_vq.io.samples.stain_patches``: H&E-like tiles *generated* by a documented
  stain model (Beer-Lambert mixtures of the haematoxylin and eosin vectors, smooth stain
  fields, nuclei, lumens and grain). They are not a real H&E scan.

Each source is recoloured a few times in optical density (its stains unmixed with
scikit-image's H/E/DAB vectors, each stain vector jittered slightly and its amount scaled
by 0.85-1.15, then mixed again). Each tile of the slide is then one of those, flipped and
rotated (one of the 8 symmetries of the square), with grain added (one of a bank of noise
fields, itself flipped and rotated). A coarse tissue mask leaves about 40% of the tiles
as near-white glass, as on a real slide. Every choice is drawn from a generator seeded by
``(seed, row, column)``, so the file's pixels depend only on the arguments.

Streaming: tiles are made in order and handed to ``tifffile.TiffWriter.write`` as an
iterator, compressed by its thread pool; nothing holds more than a few tiles of the full
resolution level. Each level's tiles are halved (2 x 2 means, rounded) as they are made
into a temporary raw file beside the output (a quarter of the level's size, written and
read with pwrite/pread, deleted afterwards) from which the next level's tiles are then
read: the pyramid is made from the tiles written, never by decoding the file. The file
appears under its name only when complete.

Usage::

    python benchmarks/make_slide.py slide.tif                  # 65,536^2, a few minutes
    python benchmarks/make_slide.py small.tif --side 4096      # 16.8 Mpx, seconds
    python benchmarks/make_slide.py slide.ome.tif --side 16384 --tile 256
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import tempfile
import time
from collections.abc import Iterator

import numpy as np

SOURCE_SIDE = 512
N_RECOLOURS = 6
N_NOISE = 8
NOISE_SD = 3.0
GLASS = np.array([241, 240, 236], dtype=np.int16)
TISSUE_FRACTION = 0.6


def sources(seed: int = 0) -> list[np.ndarray]:
    """The source tiles (512 x 512 RGB uint8): the real IHC field and three generated
    H&E-like tiles (``stain_patches``, a stain model, not a scan)."""
    from skimage.data import immunohistochemistry

    from napari_kmeans_vq.io.samples import stain_patches

    return [immunohistochemistry()] + [stain_patches(SOURCE_SIDE, seed=seed + s) for s in range(3)]


def recolour(tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``tile`` with its stains' vectors jittered and amounts scaled, in optical density."""
    from skimage.color import rgb_from_hed

    stains = np.asarray(rgb_from_hed, dtype=np.float64)
    jittered = stains + rng.normal(0.0, 0.015, size=stains.shape)
    jittered = np.abs(jittered) / np.linalg.norm(jittered, axis=1, keepdims=True)
    amounts = rng.uniform(0.85, 1.15, size=3)
    # OD' = (OD @ inv(S)) * amounts @ S': unmix, scale each stain, mix with the new vectors.
    mixing = np.linalg.inv(stains) @ (amounts[:, None] * jittered)
    od = -np.log(np.maximum(tile.astype(np.float64), 1.0) / 255.0)
    out = 255.0 * np.exp(-np.clip(od @ mixing, 0.0, None))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _symmetry(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square (a view)."""
    a = np.rot90(a, k % 4)
    return a[:, ::-1] if k >= 4 else a


class SlideMaker:
    """Makes the full-resolution tiles of the benchmark slide, deterministically.

    Parameters
    ----------
    side : int
        Height and width of the slide in pixels (a multiple of ``tile``).
    tile : int
        Tile side (a multiple of 16, at most 512).
    seed : int
    """

    def __init__(self, side: int, tile: int = 512, seed: int = 0):
        if tile % 16 or not 16 <= tile <= SOURCE_SIDE:
            raise ValueError(f"tile must be a multiple of 16 between 16 and 512, got {tile}")
        if side < tile or side % tile:
            raise ValueError(f"side must be a positive multiple of the tile ({tile}), got {side}")
        self.side, self.tile, self.seed = side, tile, seed
        self.grid = side // tile
        rng = np.random.default_rng((seed, 1))
        self.variants = [[recolour(src, rng) for _ in range(N_RECOLOURS)] for src in sources(seed)]
        self.noise = [
            np.clip(np.rint(rng.normal(0.0, NOISE_SD, (tile, tile, 3))), -127, 127).astype(
                np.int16
            )
            for _ in range(N_NOISE)
        ]
        self.tissue = self._tissue_mask(rng)

    def _tissue_mask(self, rng) -> np.ndarray:
        """Which tiles hold tissue: a smooth random field at the tile grid, thresholded."""
        from scipy.ndimage import zoom

        cell = max(self.grid // 6, 1)
        coarse = rng.random((self.grid // cell + 2, self.grid // cell + 2))
        field = zoom(coarse, cell, order=1)[: self.grid, : self.grid]
        return field >= np.quantile(field, 1.0 - TISSUE_FRACTION)

    def tile_at(self, row: int, col: int) -> np.ndarray:
        """The tile at grid position (row, col), (tile, tile, 3) uint8."""
        t = self.tile
        rng = np.random.default_rng((self.seed, row, col))
        noise = _symmetry(self.noise[rng.integers(N_NOISE)], int(rng.integers(8)))
        if not self.tissue[row, col]:
            base = np.broadcast_to(GLASS + rng.integers(-2, 3, size=3), (t, t, 3))
        else:
            source = self.variants[rng.integers(len(self.variants))]
            base = _symmetry(source[rng.integers(N_RECOLOURS)], int(rng.integers(8)))
            y, x = (int(v) for v in rng.integers(0, SOURCE_SIDE - t + 1, size=2))
            base = base[y : y + t, x : x + t]
        out = base + noise  # int16
        np.clip(out, 0, 255, out=out)
        return out.astype(np.uint8)

    def _tile_and_half(self, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        tile = self.tile_at(row, col)
        return tile, halve(tile)

    def tiles(self, workers: int = 2) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """Every tile in row-major order with its halved copy, made by ``workers`` threads a
        few tiles ahead."""
        order = [(r, c) for r in range(self.grid) for c in range(self.grid)]
        ahead = max(4 * workers, 8)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            pending = []
            for index in order:
                pending.append((index, pool.submit(self._tile_and_half, *index)))
                if len(pending) >= ahead:
                    (r, c), future = pending.pop(0)
                    yield r, c, *future.result()
            for (r, c), future in pending:
                yield r, c, *future.result()


def halve(tile: np.ndarray) -> np.ndarray:
    """2 x 2 means (rounded half up) of an even-sided (h, w, 3) uint8 array."""
    s = tile[0::2, 0::2].astype(np.uint16)
    s += tile[1::2, 0::2]
    s += tile[0::2, 1::2]
    s += tile[1::2, 1::2]
    s += 2
    s >>= 2
    return s.astype(np.uint8)


def level_sides(side: int, tile: int) -> list[int]:
    """The side of each pyramid level: halved until one tile holds it."""
    sides = [side]
    while sides[-1] > tile:
        sides.append(-(-sides[-1] // 2))
    return sides


def write_slide(
    path,
    side: int = 65_536,
    *,
    tile: int = 512,
    quality: int = 90,
    seed: int = 0,
    workers: int = 2,
    compression: str = "jpeg",
    log=None,
) -> dict:
    """Write the benchmark slide to ``path`` (see the module's docstring).

    Parameters
    ----------
    path : str or os.PathLike
        ``.tif`` / ``.tiff`` (``.ome.tif`` for an OME-TIFF); replaced when complete.
    side, tile, seed
        As for :class:`SlideMaker`.
    quality : int
        JPEG quality (ignored for other compressions).
    workers : int
        Threads making tiles, and threads compressing them.
    compression : str
        ``"jpeg"`` (the default, as scanners write) or another tifffile compression,
        e.g. ``"zlib"`` (deflate).
    log : callable, optional
        Called with a line of text per level written.

    Returns
    -------
    dict
        ``shapes`` of the levels, ``bytes`` of the file, ``seconds``.
    """
    import tifffile

    start = time.perf_counter()
    path = os.fspath(path)
    maker = SlideMaker(side, tile, seed)
    sides = level_sides(side, tile)
    ome = path.lower().endswith((".ome.tif", ".ome.tiff"))
    folder = os.path.dirname(os.path.abspath(path))
    options = {
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": compression,
        "maxworkers": workers,
        # Tiles compressed per pass: a few dozen, not tifffile's default of hundreds of MB.
        "buffersize": 32 * 2**20,
        # 0.25 um a pixel, as a 40x scan.
        "resolution": (1e4 / 0.25, 1e4 / 0.25),
        "resolutionunit": "CENTIMETER",
    }
    if compression == "jpeg":
        options["compressionargs"] = {"level": quality}
    fd, tmp = tempfile.mkstemp(suffix=".tif", prefix=".slide-", dir=folder)
    os.close(fd)
    try:
        with (
            tempfile.TemporaryDirectory(prefix=".slide-levels-", dir=folder) as scratch,
            tifffile.TiffWriter(tmp, bigtiff=True, ome=ome) as writer,
        ):
            _write_levels(writer, maker, sides, scratch, options, ome, workers, log)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return {
        "shapes": [(s, s, 3) for s in sides],
        "bytes": os.path.getsize(path),
        "seconds": time.perf_counter() - start,
    }


class _Spill:
    """The next pyramid level, kept tile by tile in a raw file beside the output.

    Written with ``os.pwrite`` and read with ``os.pread`` (no memory map), so its pages stay
    in the system's file cache and out of this process. Each tile of the level is stored
    as its four quadrants, each the halved copy of one tile of the level above, one after
    the other: a quadrant is one write and a tile one read. Quadrants never written (past
    an odd edge) read as zeros.
    """

    def __init__(self, path: str, grid: int, tile: int):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.grid, self.tile = grid, tile
        self.quadrant = (tile // 2) ** 2 * 3

    def put(self, row: int, col: int, half: np.ndarray) -> None:
        """Store the halved tile (row, col) of the level above."""
        index = ((row // 2) * self.grid + col // 2) * 4 + (row % 2) * 2 + col % 2
        os.pwrite(self.fd, np.ascontiguousarray(half).tobytes(), index * self.quadrant)

    def tile_at(self, row: int, col: int) -> np.ndarray:
        """Tile (row, col) of this level."""
        size = 4 * self.quadrant
        data = os.pread(self.fd, size, (row * self.grid + col) * size).ljust(size, b"\0")
        t = self.tile // 2
        quads = np.frombuffer(data, np.uint8).reshape(2, 2, t, t, 3)
        return quads.transpose(0, 2, 1, 3, 4).reshape(self.tile, self.tile, 3)

    def close(self) -> None:
        os.close(self.fd)


def _write_levels(writer, maker, sides, scratch, options, ome, workers, log) -> None:
    """Write level 0 from the maker's tiles, then each level from the halved tiles of the
    one before (spilled to a raw file in ``scratch``)."""
    tile = maker.tile
    below = None
    for level, level_side in enumerate(sides):
        t0 = time.perf_counter()
        grid = -(-level_side // tile)
        above, below = below, None
        if level + 1 < len(sides):
            path = os.path.join(scratch, f"level{level + 1}.raw")
            below = _Spill(path, -(-sides[level + 1] // tile), tile)
        if level == 0:
            made = maker.tiles(workers)
        else:
            made = ((r, c, above.tile_at(r, c), None) for r in range(grid) for c in range(grid))
        writer.write(
            _feed(made, below),
            shape=(level_side, level_side, 3),
            dtype=np.uint8,
            subifds=len(sides) - 1 if level == 0 else None,
            subfiletype=1 if level else 0,
            metadata={"axes": "YXS"} if ome and level == 0 else None,
            **options,
        )
        if above is not None:
            above.close()
            os.remove(os.path.join(scratch, f"level{level}.raw"))
        if log is not None:
            log(
                f"level {level}: {level_side:,} x {level_side:,} in {grid * grid:,} tiles, "
                f"{time.perf_counter() - t0:.1f} s"
            )


def _feed(made, below) -> Iterator[np.ndarray]:
    """The tiles of ``made`` for the writer; each also halved into ``below``."""
    for r, c, data, half in made:
        if below is not None:
            below.put(r, c, halve(data) if half is None else half)
        yield data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="output .tif (or .ome.tif)")
    parser.add_argument("--side", type=int, default=65_536, help="side in pixels (65536)")
    parser.add_argument("--tile", type=int, default=512, help="tile side (512)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (90)")
    parser.add_argument("--compression", default="jpeg", help="jpeg (default) or zlib")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="threads (2)")
    args = parser.parse_args(argv)
    free = os.statvfs(os.path.dirname(os.path.abspath(args.path)))
    need = args.side**2 * 3 // 3  # a quarter of raw for level 1, and the file itself
    if free.f_bavail * free.f_frsize < need:
        print(f"not enough free disk for a {args.side}^2 slide (~{need / 2**30:.1f} GiB)")
        return 1
    done = write_slide(
        args.path,
        args.side,
        tile=args.tile,
        quality=args.quality,
        seed=args.seed,
        workers=args.workers,
        compression=args.compression,
        log=lambda line: print(line, flush=True),
    )
    gpx = args.side**2 / 1e9
    print(
        f"wrote {args.path}: {args.side:,} x {args.side:,} RGB ({gpx:.2f} Gpx), "
        f"{len(done['shapes'])} levels, {done['bytes'] / 2**20:,.0f} MiB, "
        f"{done['seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
