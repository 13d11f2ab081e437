"""The ``napari-kmeans-vq`` command line: compress, decompress, inspect, sweep, demo.

It imports neither napari nor Qt, and imports numpy and the engine only when a command runs,
so ``--help`` answers at once. Results go to stdout (a table, CSV or ``--json``); progress
and errors go to stderr. Exit status: 0 on success, 2 on a usage error, 1 on a failure (with
a one-line message; ``--debug`` shows the traceback). Existing outputs are never overwritten
without ``--force``.

See ``docs/cli.md`` for the reference with examples.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from ..io._atomic import write_store

PROG = "napari-kmeans-vq"
#: The seed tutorial's comparison.
SEED_KS = (2, 3, 6, 16)
#: TIFF inputs larger than this many bytes are streamed (opened lazily, quantized block by
#: block) rather than read whole; ``--lazy`` streams any zarr or TIFF input.
LAZY_TIFF_BYTES = 256 * 2**20
#: Suffixes read through tifffile when streaming.
_TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi")
#: Suffixes of the OME-Zarr output (``.ome.zarr`` by convention).
_ZARR_SUFFIX = ".zarr"


class CLIError(Exception):
    """A failure to report in one line with exit status 1."""


# ---------------------------------------------------------------------------------------------
# argument parsing


def _k_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K must be a whole number, got {text!r}") from None
    if not 1 <= value <= 65536:
        raise argparse.ArgumentTypeError(f"K must be between 1 and 65536, got {value}")
    return value


def _k_list(text: str) -> list[int]:
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise argparse.ArgumentTypeError("give K values such as 2,3,6,16")
    values: list[int] = []
    for part in parts:
        value = _k_value(part)
        if value not in values:
            values.append(value)
    return values


def _whole_number(text: str, what: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{what}, got {value}")
    return value


def _seed(text: str) -> int:
    return _whole_number(text, "the seed must be a whole number >= 0", 0)


def _restarts(text: str) -> int | str:
    if text == "auto":
        return text
    return _whole_number(text, "restarts must be 'auto' or >= 1", 1)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    fit = argparse.ArgumentParser(add_help=False)
    fit.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    fit.add_argument(
        "--space",
        choices=("rgb", "lab"),
        default="rgb",
        help="colour space to cluster in (default rgb)",
    )
    fit.add_argument(
        "--restarts",
        type=_restarts,
        default="auto",
        metavar="N",
        help="k-means++ seedings to try, keeping the best (default auto)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "K-Means vector quantization of colour images: compress to K colours, write "
            "real .kvq and indexed PNG files, and compare the seed tutorial's bit counts "
            "with the bytes on disk."
        ),
        epilog="Exit status: 0 success, 1 failure, 2 usage error. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "compress",
        parents=[common, fit],
        help="quantize an image to K colours and report bits and bytes",
        description=(
            "Quantize IMAGE to K colours and print the report: the seed's formula bits, the "
            "real bytes of the .kvq file (packed and deflated) and of the indexed PNG, and "
            "ratios against the raw 24-bit image and against the input file. With -o, "
            "also write the .kvq, indexed PNG or OME-Zarr labels. A .zarr input, a TIFF "
            f"over {LAZY_TIFF_BYTES // 2**20} MiB, or --lazy streams the image block by "
            "block (bounded memory) and writes OME-Zarr labels (-o OUT.ome.zarr)."
        ),
    )
    p.add_argument(
        "image",
        metavar="IMAGE",
        help="PNG, JPEG, TIFF... (Pillow), .npy, or a zarr / OME-Zarr directory",
    )
    p.add_argument(
        "-k", "--colors", type=_k_value, required=True, metavar="K", help="colours, 1 .. 65536"
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="write OUT.kvq, OUT.png (indexed; 2D, K <= 256) or OUT.ome.zarr (OME-Zarr labels)",
    )
    p.add_argument(
        "--lazy",
        action="store_true",
        help="stream a zarr or TIFF input block by block, whatever its size",
    )
    p.add_argument(
        "--with-image",
        choices=("none", "original", "reconstruction"),
        default="none",
        help="OME-Zarr output: also store the original or quantized image (default none)",
    )
    p.add_argument(
        "--no-deflate", action="store_true", help=".kvq: store the packed indices as they are"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")

    p = sub.add_parser(
        "decompress",
        parents=[common],
        help="decode a .kvq (or indexed PNG) to an ordinary image",
        description=(
            "Decode IN (.kvq or indexed PNG) and write its reconstruction, palette[labels], "
            "as OUT: .png and other Pillow formats for 8-bit images, .npy for any image."
        ),
    )
    p.add_argument("input", metavar="IN", help="a .kvq file or an indexed PNG")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="OUT.png, OUT.npy...")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")

    p = sub.add_parser(
        "info",
        parents=[common],
        help="describe a .kvq file (or indexed PNG)",
        description="Check IN fully (header, sizes, checksum, indices) and describe it.",
    )
    p.add_argument("input", metavar="IN", help="a .kvq file or an indexed PNG")
    p.add_argument("--json", action="store_true", help="print the description as JSON")

    p = sub.add_parser(
        "sweep",
        parents=[common, fit],
        help="the seed's comparison: one quantization per K, as a table",
        description=(
            "Quantize IMAGE at each K and print K against bits, ratio, real bytes, J and "
            "PSNR; optionally write the reconstructions side by side as a picture."
        ),
    )
    p.add_argument("image", metavar="IMAGE", help="PNG, JPEG, TIFF... (Pillow) or .npy")
    p.add_argument(
        "-k",
        "--colors",
        type=_k_list,
        default=list(SEED_KS),
        metavar="K,K,...",
        help="K values (default 2,3,6,16)",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="print the table as CSV")
    fmt.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--gallery", metavar="OUT.png", help="write the side-by-side picture")
    p.add_argument("--force", action="store_true", help="overwrite an existing gallery")

    p = sub.add_parser(
        "demo",
        parents=[common],
        help="run the seed's comparison on the built-in sample and write the files",
        description=(
            "Quantize scikit-image's immunohistochemistry slide at K = 2, 3, 6 and 16, write "
            "the source, each .kvq and indexed PNG, and a side-by-side gallery into DIR, and "
            "print the table."
        ),
    )
    p.add_argument("--out", metavar="DIR", default="kvq-demo", help="(default ./kvq-demo)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.add_argument("--force", action="store_true", help="overwrite existing files in DIR")
    for name, subparser in sub.choices.items():
        subparser.set_defaults(parser_=subparser, command=name)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("napari-kmeans-vq")
    except Exception:  # not installed: running from a source tree
        return "unknown"


# ---------------------------------------------------------------------------------------------
# helpers


class _Progress:
    """Progress lines on stderr, silenced by --quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            print(f"{PROG}: [{elapsed:6.2f}s] {message}", file=sys.stderr, flush=True)


def _jsonable(value):
    """Numpy scalars and arrays, paths and non-finite floats as plain JSON values."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _print_json(data) -> None:
    print(json.dumps(_jsonable(data), indent=2, allow_nan=False))


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CLIError(f"{path} exists; use --force to overwrite it")
    if path.exists() and path.is_dir():
        raise CLIError(f"{path} is a directory")
    if not path.parent.exists():
        raise CLIError(f"the directory {path.parent} does not exist")


def read_image(path) -> tuple:
    """An image file as an array, and its size in bytes.

    ``.npy`` files load without pickle. Everything else goes through Pillow: palette images
    become RGB (RGBA with transparency), 16-bit greys uint16, 1-bit images 8-bit grey, CMYK
    and other spaces RGB.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise CLIError(f"cannot read {path}: no such file")
    size = path.stat().st_size
    if path.suffix.lower() == ".npy":
        try:
            image = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise CLIError(f"cannot read {path} as a numpy array: {exc}") from None
        return image, size
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode == "1":
                im = im.convert("L")
            elif im.mode.startswith("I;16"):
                return np.asarray(im).astype(np.uint16), size
            elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
                im = im.convert("RGB")
            return np.asarray(im), size
    except (UnidentifiedImageError, OSError) as exc:
        raise CLIError(f"cannot read {path} as an image: {exc}") from None


def _to_pil(image):
    """An 8-bit (or 16-bit grey) array as a Pillow image, or a CLIError saying why not."""
    import numpy as np
    from PIL import Image

    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2 and image.dtype == np.uint16:
        return Image.fromarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))
    ):
        raise CLIError(
            f"a {image.dtype} image of shape {image.shape} cannot be written as an ordinary "
            "image file; write .npy instead"
        )
    return Image.fromarray(image)


def _encode_image(image, path: Path) -> bytes:
    """The bytes of an ordinary image file for ``path``'s suffix (.npy for any array)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    if path.suffix.lower() == ".npy":
        np.save(buffer, image, allow_pickle=False)
        return buffer.getvalue()
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise CLIError(f"unknown image type {path.suffix!r} for {path}; use .png or .npy")
    _to_pil(image).save(buffer, format=fmt)
    return buffer.getvalue()


def _fit_options(args) -> dict:
    return {"random_state": args.seed, "color_space": args.space, "n_init": args.restarts}


def _quantize(image, k: int, options: dict):
    from .. import quantize

    # A 2D array has no colour axis: quantize its values (scalar quantization).
    channel_axis = None if image.ndim == 2 else -1
    try:
        return quantize(image, k, channel_axis=channel_axis, **options)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot quantize this image: {exc}") from None


def _bits_label(report) -> str:
    return f"{report.bits_per_channel * report.channels}-bit"


def _fmt_int(value) -> str:
    return "-" if value is None else f"{value:,}"


def _fmt_pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _shape_text(image) -> str:
    return " x ".join(str(s) for s in image.shape) + f" {image.dtype}"


# ---------------------------------------------------------------------------------------------
# commands


def _is_zarr_output(path: Path) -> bool:
    return path.name.lower().endswith(_ZARR_SUFFIX)


def _streams(path: Path, lazy: bool) -> bool:
    """Whether the input is read lazily: a zarr directory, a large TIFF, or --lazy."""
    suffix = path.suffix.lower()
    if path.is_dir() or suffix == _ZARR_SUFFIX:
        return True
    if suffix in _TIFF_SUFFIXES:
        return lazy or (path.is_file() and path.stat().st_size > LAZY_TIFF_BYTES)
    if lazy:
        raise _UsageError(f"--lazy reads a .zarr directory or a TIFF file, not {path}")
    return False


def _tree_bytes(path: Path) -> tuple[int, int]:
    """Bytes of the files under ``path`` (or of the file), and the bytes allocated on disk."""
    import os

    if path.is_file():
        stat = path.stat()
        return stat.st_size, getattr(stat, "st_blocks", 0) * 512 or stat.st_size
    size = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            size += stat.st_size
            allocated += getattr(stat, "st_blocks", 0) * 512 or stat.st_size
    return size, allocated


def _check_store_output(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise CLIError(f"{path} exists; use --force to overwrite it")
    if path.exists() and not path.is_dir():
        raise CLIError(f"{path} exists and is not a directory (an OME-Zarr store)")
    if not path.parent.exists():
        raise CLIError(f"the directory {path.parent} does not exist")


def _fraction_progress(progress):
    """A ``progress(stage, fraction)`` callback printing a line per stage and per 10%."""
    state = {"stage": None, "next": 0.0}

    def report(stage: str, fraction: float) -> None:
        if stage != state["stage"]:
            state["stage"], state["next"] = stage, 0.0
        if fraction >= state["next"] or fraction >= 1.0:
            progress(f"{stage}: {100 * fraction:3.0f}%")
            state["next"] = math.floor(fraction * 10 + 1) / 10
            if fraction >= 1.0:
                state["next"] = math.inf

    return report


def _write_ome_zarr(out: Path, q, args, progress, image=None) -> dict:
    """Write ``q``'s labels as OME-Zarr at ``out`` (atomically); the ``output`` record."""
    from ..io import omezarr

    extra = None
    if args.with_image == "reconstruction":
        extra = "reconstruction"
    elif args.with_image == "original":
        extra = image
    progress(f"writing OME-Zarr labels to {out}")
    stage = _fraction_progress(progress)

    def write(tmp: Path) -> None:
        omezarr.write_labels(tmp, q, image=extra, progress=stage)

    try:
        write_store(out, write, overwrite=args.force)
    except FileExistsError:
        raise CLIError(f"{out} exists; use --force to overwrite it") from None
    size, allocated = _tree_bytes(out)
    progress(f"wrote {out} ({size:,} bytes)")
    return {
        "path": str(out),
        "format": "ome-zarr",
        "bytes": size,
        "disk_bytes": allocated,
        "with_image": args.with_image,
    }


def _open_lazy(path: Path):
    """The input opened lazily (zarr array or list of levels), never reading its pixels."""
    if not path.exists():
        raise CLIError(f"cannot read {path}: no such file or directory")
    import logging

    from ..large import open_image

    # tifffile logs what it finds wrong with a damaged file; the one-line error says it.
    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        image = open_image(path)
    except Exception as exc:  # zarr, tifffile and OS errors alike: one line
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise CLIError(f"cannot read {path} as a zarr array or TIFF: {message}") from None
    finally:
        logger.setLevel(level)
    return image


def _add_store_size(sizes: dict, written: dict | None) -> None:
    if written is None:
        return
    sizes["files"]["ome_zarr"] = written["bytes"]
    sizes["ratios"]["vs_raw"]["ome_zarr"] = written["bytes"] / sizes["raw_bytes"]
    if sizes["input_bytes"]:
        sizes["ratios"]["vs_input"]["ome_zarr"] = written["bytes"] / sizes["input_bytes"]


def _lazy_sizes(q, input_bytes: int) -> dict:
    """:func:`size_report`'s layout for a streamed image: the formula and the computed
    undeflated ``.kvq`` size (nothing is encoded in memory)."""
    from ..io import kvq_size
    from ..io.files import sizes_with_ratios

    palette = q.palette if q.palette.ndim == 2 else q.palette[:, None]
    shape = q.levels[0].shape
    files = {
        "kvq_raw": kvq_size(shape, palette.shape[0], palette.shape[1], palette.itemsize),
        "kvq_deflated": None,
        "kvq_index_layout": None,
        "png": None,
        "png_bit_depth": None,
        "png_reason": "not encoded for a streamed image",
    }
    return sizes_with_ratios(q.report, files, input_bytes)


def _compress_lazy(args, progress, out: Path | None) -> int:
    """compress for a zarr or large TIFF input: fit block by block, stream labels out."""
    from ..large import quantize_lazy

    source = Path(args.image)
    progress(f"opening {source} lazily")
    image = _open_lazy(source)
    levels = list(image) if isinstance(image, list) else [image]
    full = levels[0]
    input_bytes = _tree_bytes(source)[0]
    shape_text = " x ".join(map(str, full.shape)) + f" {full.dtype}"
    more = f", {len(levels)} levels" if len(levels) > 1 else ""
    progress(f"quantizing {shape_text}{more} to K = {args.colors}, block by block")
    channel_axis = None if len(full.shape) == 2 else -1
    try:
        q = quantize_lazy(
            image,
            args.colors,
            channel_axis=channel_axis,
            progress=_fraction_progress(progress),
            **_fit_options(args),
        )
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot quantize this image: {exc}") from None
    progress(f"K = {q.n_colors} ({q.info.get('fit')} fit) in {q.info.get('seconds', 0):.2f} s")
    sizes = _lazy_sizes(q, input_bytes)
    written = None
    if out is not None:
        original = image if args.with_image == "original" else None
        written = _write_ome_zarr(out, q, args, progress, image=original)
        _add_store_size(sizes, written)
    input_info = {
        "path": str(args.image),
        "shape": list(full.shape),
        "dtype": str(full.dtype),
        "levels": len(levels),
        "streamed": True,
    }
    image_line = f"{shape_text}{more}, {q.report.n_pixels:,} pixels, " + (
        f"{input_bytes:,} bytes on disk (streamed)"
    )
    return _finish_compress(args, q, input_info, image_line, sizes, written)


def _finish_compress(args, q, input_info: dict, image_line: str, sizes, written) -> int:
    """Print what compress did: JSON with --json, else the report and the size table."""
    fit = q.info.get("fit", "exact")
    if args.json:
        _print_json(
            {
                "input": input_info,
                "n_colors": q.n_colors,
                "n_colors_requested": args.colors,
                "seed": args.seed,
                "color_space": args.space,
                "fit": fit,
                "distortion": q.distortion,
                "psnr": q.psnr,
                "seconds": q.info.get("seconds"),
                "sizes": sizes,
                "output": written,
                "palette": q.palette.tolist(),
            }
        )
        return 0
    report = q.report
    lines = [
        f"image      {args.image}: {image_line}",
        f"codebook   K = {q.n_colors} ({report.bits_per_index} bits per index), seed "
        f"{args.seed}, {args.space}" + ("" if fit == "exact" else f", {fit} fit"),
        f"quality    J = {q.distortion:.2f}, PSNR = {q.psnr:.2f} dB",
        "",
    ]
    lines += _size_table(report, sizes)
    if written:
        lines += ["", f"wrote {written['path']} ({written['bytes']:,} bytes)"]
    print("\n".join(lines))
    return 0


def cmd_compress(args, progress) -> int:
    from ..io import atomic_write, encode, format_for_path, size_report

    out = None
    out_format = None
    if args.output:
        out = Path(args.output)
        if _is_zarr_output(out):
            out_format = "ome-zarr"
            _check_store_output(out, args.force)
        else:
            try:
                out_format = format_for_path(out)
            except ValueError:
                raise _UsageError(
                    f"-o must name a .kvq, .png or .ome.zarr output, got {out}"
                ) from None
            _check_output(out, args.force)
    if args.with_image != "none" and out_format != "ome-zarr":
        raise _UsageError("--with-image needs an OME-Zarr output (-o OUT.ome.zarr)")
    if _streams(Path(args.image), args.lazy):
        if out_format not in (None, "ome-zarr"):
            raise _UsageError(
                f"a streamed input (a .zarr directory, a TIFF over "
                f"{LAZY_TIFF_BYTES // 2**20} MiB, or --lazy) is written as OME-Zarr labels: "
                f"give -o OUT.ome.zarr, not {out}"
            )
        return _compress_lazy(args, progress, out)
    progress(f"reading {args.image}")
    image, input_bytes = read_image(args.image)
    progress(f"quantizing {_shape_text(image)} to K = {args.colors}")
    q = _quantize(image, args.colors, _fit_options(args))
    progress(f"K = {q.n_colors} in {q.info.get('seconds', 0):.2f} s; encoding files in memory")
    contents: dict = {}
    sizes = size_report(q, input_bytes=input_bytes, contents=contents)
    written = None
    if out_format == "ome-zarr":
        written = _write_ome_zarr(out, q, args, progress, image=image)
        _add_store_size(sizes, written)
    elif out is not None:
        # Reuse the bytes encoded for the report when they are the ones asked for.
        content = contents.get(out_format) if not args.no_deflate else None
        if content is None:
            try:
                content = encode(q, format=out_format, deflate=not args.no_deflate)
            except (TypeError, ValueError) as exc:
                raise CLIError(f"cannot write {out}: {exc}") from None
        try:
            atomic_write(out, content, overwrite=args.force)
        except FileExistsError:
            raise CLIError(f"{out} exists; use --force to overwrite it") from None
        written = {"path": str(out), "format": out_format, "bytes": len(content)}
        progress(f"wrote {out} ({len(content):,} bytes)")
    input_info = {"path": str(args.image), "shape": list(image.shape), "dtype": str(image.dtype)}
    image_line = f"{_shape_text(image)}, {q.report.n_pixels:,} pixels, file {input_bytes:,} bytes"
    return _finish_compress(args, q, input_info, image_line, sizes, written)


def _size_table(report, sizes) -> list[str]:
    files = sizes["files"]
    raw = sizes["raw_bytes"]
    input_bytes = sizes["input_bytes"]
    png_name = (
        f"indexed PNG ({files['png_bit_depth']}-bit)" if files["png"] else "indexed PNG (n/a)"
    )
    kvq_name = ".kvq deflated" + (
        " (byte-aligned)" if files.get("kvq_index_layout") == "bytes" else ""
    )
    rows = [
        (f"raw image ({_bits_label(report)})", report.original_bits, raw),
        ("formula (seed: indices + codebook)", report.total_bits, -(-report.total_bits // 8)),
        (".kvq packed", None, files["kvq_raw"]),
        (kvq_name, None, files["kvq_deflated"]),
        (png_name, None, files["png"]),
    ]
    if files.get("ome_zarr") is not None:
        rows.append(("OME-Zarr labels (store)", None, files["ome_zarr"]))
    header = f"{'':36}{'bits':>14}{'bytes':>12}{'vs raw':>10}{'vs input':>10}"
    out = [header]
    for name, bits, size in rows:
        vs_raw = None if size is None else size / raw
        vs_in = None if size is None or not input_bytes else size / input_bytes
        out.append(
            f"{name:36}{_fmt_int(bits):>14}{_fmt_int(size):>12}{_fmt_pct(vs_raw):>10}"
            f"{_fmt_pct(vs_in):>10}"
        )
    return out


def cmd_decompress(args, progress) -> int:
    from ..io import KVQError, atomic_write, load

    out = Path(args.output)
    _check_output(out, args.force)
    progress(f"reading {args.input}")
    try:
        data = load(args.input)
    except KVQError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot read {args.input}: {exc.strerror or exc}") from None
    progress(f"decoding {data.n_pixels:,} pixels, K = {data.n_colors}")
    content = _encode_image(data.reconstruction, out)
    try:
        atomic_write(out, content, overwrite=args.force)
    except FileExistsError:
        raise CLIError(f"{out} exists; use --force to overwrite it") from None
    progress(f"wrote {out} ({len(content):,} bytes)")
    return 0


def cmd_info(args, progress) -> int:
    from ..io import KVQError, load

    try:
        data = load(args.input)
    except KVQError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot read {args.input}: {exc.strerror or exc}") from None
    summary = {"path": str(args.input), **data.to_dict()}
    if args.json:
        _print_json(summary)
        return 0
    report = data.report
    kind = ".kvq" if data.format == "kvq" else "indexed PNG"
    version = f" version {data.version}" if data.format == "kvq" else ""
    stored = (
        f"{data.bit_depth} bits per index"
        + (" (byte-aligned)" if data.index_layout == "bytes" else "")
        + (", deflated" if data.deflated else ", not deflated")
        + f", {data.payload_bytes:,} payload bytes"
    )
    lines = [
        f"file         {args.input}: {kind}{version}, {data.file_size:,} bytes, checks passed",
        f"image        {' x '.join(map(str, data.shape))} {data.dtype}"
        + (" (no colour axis)" if data.scalar else f" ({data.channels} channels)"),
        f"pixels       {data.n_pixels:,}",
        f"codebook     K = {data.n_colors}, ceil(log2 K) = {data.bits_per_index} bits",
        f"stored       {stored}",
        f"formula      {report.total_bits:,} bits = {report.index_bits:,} index + "
        f"{report.codebook_bits:,} codebook ({100 * report.ratio:.2f}% of "
        f"{report.original_bits:,} raw bits)",
        f"on disk      {data.file_size:,} bytes = "
        f"{100 * data.file_size * 8 / report.original_bits:.2f}% of the raw image",
    ]
    shown = min(data.n_colors, 16)
    lines.append(f"palette      first {shown} of {data.n_colors}:")
    for index in range(shown):
        lines.append(f"  {index:5d}  {data.palette[index].tolist()}")
    print("\n".join(lines))
    return 0


def _sweep_rows(image, ks, options, input_bytes, progress) -> tuple[list[dict], list]:
    from ..io import size_report

    rows, results = [], []
    for step, k in enumerate(ks, 1):
        progress(f"[{step}/{len(ks)}] K = {k}: quantizing")
        q = _quantize(image, k, options)
        progress(f"[{step}/{len(ks)}] K = {k}: encoding files in memory")
        contents: dict = {}
        sizes = size_report(q, input_bytes=input_bytes, contents=contents)
        report = q.report
        best = min(v for v in (sizes["files"]["kvq_deflated"], sizes["files"]["png"]) if v)
        rows.append(
            {
                "K": q.n_colors,
                "K_requested": k,
                "bits_per_index": report.bits_per_index,
                "total_bits": report.total_bits,
                "ratio": report.ratio,
                "formula_bytes": sizes["formula"]["formula_bytes"],
                "kvq_bytes": sizes["files"]["kvq_raw"],
                "kvq_deflated_bytes": sizes["files"]["kvq_deflated"],
                "png_bytes": sizes["files"]["png"],
                "png_bit_depth": sizes["files"]["png_bit_depth"],
                "raw_bytes": sizes["raw_bytes"],
                "input_bytes": input_bytes,
                "best_vs_raw": best / sizes["raw_bytes"],
                "best_vs_input": best / input_bytes if input_bytes else None,
                "J": q.distortion,
                "psnr": q.psnr,
                "seconds": q.info.get("seconds"),
            }
        )
        results.append((q, contents))
    return rows, results


_TABLE = (
    ("K", "K", "{:d}"),
    ("b", "bits_per_index", "{:d}"),
    ("formula bits", "total_bits", "{:,}"),
    ("ratio", "ratio", "{:.2%}"),
    (".kvq B", "kvq_bytes", "{:,}"),
    ("deflated B", "kvq_deflated_bytes", "{:,}"),
    ("PNG B", "png_bytes", "{:,}"),
    ("best/raw", "best_vs_raw", "{:.2%}"),
    ("best/input", "best_vs_input", "{:.2%}"),
    ("J", "J", "{:.1f}"),
    ("PSNR dB", "psnr", "{:.2f}"),
    ("s", "seconds", "{:.2f}"),
)


def _print_table(rows: list[dict], raw_bytes: int, input_bytes) -> None:
    cells = [[title for title, _, _ in _TABLE]]
    for row in rows:
        line = []
        for _, key, fmt in _TABLE:
            value = row.get(key)
            line.append("-" if value is None or value == math.inf else fmt.format(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(_TABLE))]
    for line in cells:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    note = f"raw image {raw_bytes:,} bytes"
    if input_bytes:
        note += f"; input file {input_bytes:,} bytes"
    print(note)
    print("ratio = formula bits / raw bits; B = bytes on disk; best = smaller real file")


def _print_csv(rows: list[dict]) -> None:
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def gallery_png(image, results, *, max_side: int = 512) -> bytes:
    """A side-by-side picture: the image, then each reconstruction, captioned with K.

    Tiles are shrunk (nearest neighbour, so palette colours stay exact) to ``max_side``.
    """
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    def as_rgb(array):
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise CLIError(f"a gallery needs a 2D grey or colour image, not {array.shape}")
        if array.dtype == np.uint16:
            array = (array // 257).astype(np.uint8)
        elif array.dtype.kind == "f":
            array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
        elif array.dtype != np.uint8:
            array = np.clip(array, 0, 255).astype(np.uint8)
        tile = Image.fromarray(array).convert("RGB")
        tile.thumbnail((max_side, max_side), Image.Resampling.NEAREST)
        return tile

    tiles = [("original", as_rgb(image))]
    tiles += [(f"K = {q.n_colors}", as_rgb(q.reconstruction)) for q in results]
    caption, gap = 22, 8
    width = sum(t.width for _, t in tiles) + gap * (len(tiles) + 1)
    height = max(t.height for _, t in tiles) + caption + 2 * gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = gap
    for title, tile in tiles:
        canvas.paste(tile, (x, gap + caption))
        draw.text((x, gap + 4), title, fill="black")
        x += tile.width + gap
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def cmd_sweep(args, progress) -> int:
    from ..io import atomic_write

    gallery = None
    if args.gallery:
        gallery = Path(args.gallery)
        if gallery.suffix.lower() != ".png":
            raise _UsageError(f"--gallery writes a PNG; give a .png name, not {gallery}")
        _check_output(gallery, args.force)
    progress(f"reading {args.image}")
    image, input_bytes = read_image(args.image)
    rows, results = _sweep_rows(image, args.colors, _fit_options(args), input_bytes, progress)
    if gallery is not None:
        content = gallery_png(image, [q for q, _ in results])
        try:
            atomic_write(gallery, content, overwrite=args.force)
        except FileExistsError:
            raise CLIError(f"{gallery} exists; use --force to overwrite it") from None
        progress(f"wrote {gallery} ({len(content):,} bytes)")
    if args.json:
        _print_json({"image": str(args.image), "shape": list(image.shape), "rows": rows})
    elif args.csv:
        _print_csv(rows)
    else:
        _print_table(rows, rows[0]["raw_bytes"], input_bytes)
    return 0


def demo_image() -> tuple:
    """The built-in sample: scikit-image's immunohistochemistry slide, or a generated one.

    Returns ``(image, name, note)``; ``note`` says when the fallback was used.
    """
    try:
        from skimage.data import immunohistochemistry

        return immunohistochemistry(), "ihc", None
    except ImportError:
        return (
            generated_image(),
            "generated",
            "scikit-image is not installed (pip install 'napari-kmeans-vq[samples]'); "
            "using a generated 256 x 256 stain-like image instead",
        )


def generated_image(size: int = 256, seed: int = 0):
    """A deterministic RGB test picture: pink background, blue and brown blobs, grain."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.empty((size, size, 3))
    image[:] = (235, 190, 215)
    image += 15 * np.sin(6 * xx + 3 * yy)[..., None]
    for colour in ((70, 60, 150), (150, 95, 50)):
        for cy, cx, r in rng.random((12, 3)):
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (0.02 + 0.05 * r) ** 2
            image[mask] = colour
    image += rng.normal(0, 6, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def cmd_demo(args, progress) -> int:
    from ..io import atomic_write

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out} exists and is not a directory")
    image, name, note = demo_image()
    if note:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    paths = {"source": out / f"{name}.png", "gallery": out / "gallery.png"}
    for k in SEED_KS:
        paths[f"k{k}.kvq"] = out / f"{name}-k{k}.kvq"
        paths[f"k{k}.png"] = out / f"{name}-k{k}.png"
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.force:
        raise CLIError(
            f"{len(existing)} output file(s) exist in {out} (such as {existing[0]}); use "
            "--force to overwrite them"
        )
    out.mkdir(parents=True, exist_ok=True)
    source = _encode_image(image, paths["source"])
    atomic_write(paths["source"], source)
    progress(f"wrote {paths['source']} ({len(source):,} bytes)")
    options = {"random_state": args.seed}
    rows, results = _sweep_rows(image, list(SEED_KS), options, len(source), progress)
    files = {"source": str(paths["source"])}
    for k, (_, contents) in zip(SEED_KS, results, strict=True):
        for fmt in ("kvq", "png"):
            path = paths[f"k{k}.{fmt}"]
            content = contents[fmt]
            atomic_write(path, content)
            files[f"K={k} {fmt}"] = str(path)
            progress(f"wrote {path} ({len(content):,} bytes)")
    gallery = gallery_png(image, [q for q, _ in results])
    atomic_write(paths["gallery"], gallery)
    files["gallery"] = str(paths["gallery"])
    progress(f"wrote {paths['gallery']} ({len(gallery):,} bytes)")
    if args.json:
        _print_json(
            {"image": name, "shape": list(image.shape), "out": str(out), "files": files,
             "rows": rows, "note": note}
        )  # fmt: skip
        return 0
    print(f"{name}: {_shape_text(image)} (source PNG {len(source):,} bytes), files in {out}")
    _print_table(rows, rows[0]["raw_bytes"], len(source))
    return 0


_COMMANDS = {
    "compress": cmd_compress,
    "decompress": cmd_decompress,
    "info": cmd_info,
    "sweep": cmd_sweep,
    "demo": cmd_demo,
}


class _UsageError(Exception):
    """A usage error found after parsing: exit status 2 with the parser's usage line."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return int(exc.code or 0)
    progress = _Progress(args.quiet)
    try:
        return _COMMANDS[args.command](args, progress)
    except _UsageError as exc:
        args.parser_.print_usage(sys.stderr)
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: stdout went away; not our failure
        sys.stderr.close()
        return 0
    except Exception as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, CLIError | ValueError | TypeError | OSError):
            message = f"{type(exc).__name__}: {message}"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
