"""The ``napari-kmeans-vq`` argument parser: options, their checks and their help; nothing else.

Imports only argparse and the package's constants, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import math

PROG = "napari-kmeans-vq"
#: The seed tutorial's comparison.
SEED_KS = (2, 3, 6, 16)
#: ``napari_kmeans_vq.core.colorspace.COLOR_SPACES``, written out so ``--help`` imports no
#: numpy (a test checks they agree).
COLOR_SPACES = ("rgb", "lab", "oklab", "od", "hed", "hdab", "stains")
#: ``napari_kmeans_vq.core.tissue.DEFAULT_THRESHOLD`` (a test checks they agree).
TISSUE_THRESHOLD = 0.15
#: ``napari_kmeans_vq._limits.MAX_FIT_COLORS`` (a test checks they agree).
MAX_FIT_COLORS = 4096


def _k_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"K must be a whole number, got {text!r}") from None
    if not 1 <= value <= MAX_FIT_COLORS:
        raise argparse.ArgumentTypeError(f"K must be between 1 and {MAX_FIT_COLORS}, got {value}")
    return value


def _k_or_auto(text: str) -> int | str:
    return "auto" if text == "auto" else _k_value(text)


def _positive(text: str) -> float:
    return _number(text, "the target must be a number > 0", positive=True)


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


def _number(text: str, what: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    return value


def _threshold(text: str) -> float:
    return _number(text, "the tissue threshold must be an optical density >= 0", positive=False)


def _pixel_size(text: str) -> float | tuple[float, float]:
    what = "the pixel size must be a number > 0, or ROW,COLUMN sides such as 0.5,0.5"
    parts = [p for p in text.replace(",", " ").split() if p]
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    sides = tuple(_number(p, what, positive=True) for p in parts)
    return sides[0] if len(sides) == 1 else sides


def _threads(text: str) -> int:
    return _whole_number(text, "--threads must be a whole number >= 1", 1)


def _min_region(text: str) -> int:
    return _whole_number(text, "--min-region must be a whole number of pixels >= 0", 0)


def _stain_vectors(text: str) -> list[list[float]]:
    """``"r,g,b;r,g,b[;r,g,b]"``: two or three optical-density vectors."""
    what = (
        "--stain-vectors takes 2 or 3 vectors of 3 numbers, such as "
        "'0.65,0.70,0.29;0.27,0.57,0.78'"
    )
    vectors = [v for v in text.split(";") if v.strip()]
    if len(vectors) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    out = []
    for vector in vectors:
        parts = [p for p in vector.replace(",", " ").split() if p]
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
        out.append(values)
    return out


def _names(text: str) -> list[str]:
    """``"a,b,c"``: class names, one per colour (commas separate them)."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"--names takes one non-empty name per class, comma-separated, got {text!r}"
        )
    return names


def _template(text: str) -> str:
    """An output name template: ``{stem}`` (the input's name without its suffix),
    ``{name}`` (with it) and ``{k}``; the suffix says the format."""
    try:
        text.format(stem="x", name="x", k=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            f"--name takes a template such as '{{stem}}.kvq' (fields {{stem}}, {{name}}, "
            f"{{k}}), got {text!r} ({exc})"
        ) from None
    if "{stem}" not in text and "{name}" not in text:
        raise argparse.ArgumentTypeError(
            f"--name must contain {{stem}} or {{name}} so that each input gets its own "
            f"output, got {text!r}"
        )
    if "/" in text or "\\" in text:
        raise argparse.ArgumentTypeError(f"--name is a file name, not a path: {text!r}")
    return text


def _max_pixels(text: str) -> int:
    return _whole_number(text.replace(",", ""), "--max-pixels must be a whole number >= 1", 1)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )
    common.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    common.add_argument(
        "--threads",
        type=_threads,
        metavar="N",
        help=(
            "threads for the work (default: the cores this process may use, within "
            "$OMP_NUM_THREADS); streamed inputs run N blocks at once"
        ),
    )
    common.add_argument(
        "--max-pixels",
        type=_max_pixels,
        metavar="N",
        help=(
            "the most pixels an image may have to be decoded into memory (default "
            "268435456 = 2**28, or $NAPARI_KMEANS_VQ_MAX_PIXELS); larger TIFF, zarr and "
            ".npy inputs are streamed"
        ),
    )

    fit = argparse.ArgumentParser(add_help=False)
    fit.add_argument("--seed", type=_seed, default=None, help="random seed (default 0)")
    fit.add_argument(
        "--space",
        choices=COLOR_SPACES,
        default=None,
        help=(
            "colour space to cluster in (default rgb): rgb, lab, oklab, od (optical "
            "density), hed (H&E deconvolution), hdab (hematoxylin-DAB), stains (give "
            "--stain-vectors); the palette and J stay in the image's RGB"
        ),
    )
    fit.add_argument(
        "--stain-vectors",
        type=_stain_vectors,
        metavar="R,G,B;R,G,B",
        help="--space stains: the stains' optical-density vectors, 2 or 3, ';'-separated",
    )
    seg = argparse.ArgumentParser(add_help=False)
    seg.add_argument(
        "--mask",
        metavar="auto|FILE",
        help=(
            "segment only the tissue: 'auto' (optical density summed over RGB above "
            "--tissue-threshold) or a mask image of the input's height and width "
            "(non-zero = tissue); the other pixels get label 0 and count nowhere"
        ),
    )
    seg.add_argument(
        "--tissue-threshold",
        type=_threshold,
        metavar="T",
        help=f"--mask auto: the optical density above which a pixel is tissue (default "
        f"{TISSUE_THRESHOLD})",
    )
    cleanup = argparse.ArgumentParser(add_help=False)
    cleanup.add_argument(
        "--min-region",
        type=_min_region,
        default=0,
        metavar="N",
        help=(
            "spatial clean-up: connected regions under N pixels take their neighbours' "
            "majority label (default 0, off); J and the bits describe the labels produced"
        ),
    )
    fit.add_argument(
        "--restarts",
        type=_restarts,
        default=None,
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
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "compress",
        parents=[common, fit, seg, cleanup],
        help="quantize an image to K colours and report bits and bytes",
        description=(
            "Quantize IMAGE to K colours and print the report: the seed's formula bits, the "
            "real bytes of the .kvq file (packed and deflated) and of the indexed PNG, and "
            "ratios against the raw 24-bit image and against the input file. With -o, "
            "also write the .kvq, indexed PNG or OME-Zarr labels. A .zarr input, a tiled "
            "or pyramidal TIFF (a slide), an input over --max-pixels, or --lazy streams the "
            "image block by block (bounded memory); over --max-pixels it is written only as "
            "OME-Zarr labels (-o OUT.ome.zarr). Several inputs (files, globs, folders) are "
            "compressed one by one, each to its own output in --out-dir, with one --summary "
            "table; a failing input is reported and the others still run (exit status 1)."
        ),
    )
    p.add_argument(
        "images",
        metavar="IMAGE",
        nargs="+",
        help=(
            "PNG, JPEG... (Pillow), TIFF (tifffile), .npy, or a zarr / OME-Zarr directory; "
            "several, a glob ('slides/*.tif') or a folder of images; - reads standard input"
        ),
    )
    p.add_argument(
        "-k",
        "--colors",
        type=_k_or_auto,
        metavar="K|auto",
        help=(
            f"colours, 1 .. {MAX_FIT_COLORS} (not needed with --codebook); auto: the "
            "smallest K that meets --target-psnr or --target-j"
        ),
    )
    p.add_argument(
        "--target-psnr",
        type=_positive,
        metavar="DB",
        help="-k auto: the PSNR (dB) to reach; the smallest K found that reaches it is used",
    )
    p.add_argument(
        "--target-j",
        type=_positive,
        metavar="J",
        help="-k auto: the largest J (mean squared error per pixel) accepted",
    )
    p.add_argument(
        "--k-max",
        type=_k_value,
        metavar="N",
        help="-k auto: the largest K tried (default 256, what an indexed PNG holds)",
    )
    p.add_argument(
        "--codebook",
        metavar="FILE",
        help=(
            "apply the codebook in FILE (written by the fit command or save_codebook) "
            "without fitting: K, the colour space and the class names are the file's"
        ),
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help=(
            "write OUT.kvq, OUT.png (indexed; 2D, K <= 256) or OUT.ome.zarr (OME-Zarr "
            "labels); - writes the file (--format) to standard output; one input only"
        ),
    )
    p.add_argument(
        "--format",
        choices=("kvq", "png"),
        help="the format written to standard output with -o - (default kvq)",
    )
    p.add_argument(
        "--out-dir",
        metavar="DIR",
        help="write one output per input into DIR (created if missing), named by --name",
    )
    p.add_argument(
        "--name",
        type=_template,
        default=None,
        metavar="TEMPLATE",
        help=(
            "--out-dir: the output's name, with {stem} (input name without suffix), {name} "
            "and {k}; its suffix (.kvq, .png, .ome.zarr) is the format (default {stem}.kvq)"
        ),
    )
    p.add_argument(
        "--summary",
        metavar="OUT.csv|OUT.json",
        help=(
            "write one table for all inputs, a row per image and class: pixels, share, area "
            "(with --pixel-size), J, PSNR, bits and bytes written; failed inputs with their "
            "error"
        ),
    )
    p.add_argument(
        "--names",
        type=_names,
        metavar="A,B,...",
        help="class names, one per colour, for --table and --summary (default the codebook's)",
    )
    p.add_argument(
        "--lazy",
        action="store_true",
        help="stream a zarr, TIFF or .npy input block by block, whatever its size",
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
    p.add_argument(
        "--table",
        metavar="OUT.csv",
        help=(
            "write the class table as CSV: label, name, colour, pixels, share of the "
            "segmented area, area (with --pixel-size), mean stains (stain spaces)"
        ),
    )
    p.add_argument(
        "--pixel-size",
        type=_pixel_size,
        metavar="S",
        help="--table: a pixel's side (or ROW,COLUMN sides) in --unit, for the area column",
    )
    p.add_argument(
        "--unit", metavar="U", help="the unit of --pixel-size (default um); the column is area_U2"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument(
        "--resume",
        action="store_true",
        help=(
            "OME-Zarr output: finish the incomplete store an interrupted run left (the "
            "blocks written are kept; refused if the input, K, seed or options differ)"
        ),
    )

    p = sub.add_parser(
        "fit",
        parents=[common, fit, seg],
        help="fit one codebook on several images (a cohort) and write it",
        description=(
            "Fit one K-colour codebook on all the distinct colours of all the IMAGEs together "
            "(each weighted by its pixels; with --mask, only the tissue's) and write it as a "
            "codebook file, to apply with compress --codebook FILE: the same colour then gets "
            "the same class in every image."
        ),
    )
    p.add_argument(
        "images",
        metavar="IMAGE",
        nargs="+",
        help="images read into memory (files, globs or folders); one dtype and channel count",
    )
    p.add_argument(
        "-k",
        "--colors",
        type=_k_value,
        required=True,
        metavar="K",
        help=f"colours, 1 .. {MAX_FIT_COLORS}",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="CODEBOOK.json",
        required=True,
        help="the codebook file to write (- for standard output)",
    )
    p.add_argument("--names", type=_names, metavar="A,B,...", help="class names, one per colour")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing codebook file")

    p = sub.add_parser(
        "decompress",
        parents=[common],
        help="decode a .kvq (or indexed PNG) to an ordinary image",
        description=(
            "Decode IN (.kvq or indexed PNG) and write its reconstruction, palette[labels], "
            "as OUT: .png and other Pillow formats for 8-bit images, .npy for any image."
        ),
    )
    p.add_argument("input", metavar="IN", help="a .kvq file or an indexed PNG (- for stdin)")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        required=True,
        help="OUT.png, OUT.npy...; - writes a PNG (or --format) to standard output",
    )
    p.add_argument(
        "--format",
        choices=("png", "npy", "tiff"),
        help="the format written to standard output with -o - (default png)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing output")

    p = sub.add_parser(
        "info",
        parents=[common],
        help="describe a .kvq file (or indexed PNG)",
        description="Check IN fully (header, sizes, checksum, indices) and describe it.",
    )
    p.add_argument("input", metavar="IN", help="a .kvq file or an indexed PNG (- for stdin)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")

    p = sub.add_parser(
        "sweep",
        parents=[common, fit, seg, cleanup],
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


class _Version(argparse.Action):
    """``--version``: the package's version, then its engine's build and threads (the engine
    is imported only here, so the parser itself stays light)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS,
            help="show the version, the engine's build and its threads, and exit",
        )  # fmt: skip

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            from ..core._threads import describe

            engine = describe()
        except ImportError as exc:  # a broken install: say so instead of failing
            engine = f"engine: not loaded ({exc})"
        print(f"{parser.prog} {_version()}\n{engine}")
        parser.exit()


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("napari-kmeans-vq")
    except Exception:  # not installed: running from a source tree
        return "unknown"
