"""The ``napari-kmeans-vq`` command line: compress, decompress, inspect, sweep, demo.

Each command checks its arguments, calls the library (``napari_kmeans_vq.quantize``,
:mod:`napari_kmeans_vq.io`) and hands the result to :mod:`.render`. It imports neither
napari nor Qt, and imports the engine only when a command runs, so ``--help`` answers at
once. Results go to stdout (a table, CSV or ``--json``); progress and errors go to stderr.
Exit status: 0 on success, 2 on a usage error, 1 on a failure (with a one-line message;
``--debug`` shows the traceback). Existing outputs are never overwritten without
``--force``, and every file is written once, to a temporary name renamed into place.

See ``docs/cli.md`` for the reference with examples.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import render
from .parser import PROG, SEED_KS, build_parser

#: Suffix of the OME-Zarr output (``.ome.zarr`` by convention).
_ZARR_SUFFIX = ".zarr"


class CLIError(Exception):
    """A failure to report in one line with exit status 1."""


class UsageError(Exception):
    """A usage error found after parsing: exit status 2 with the parser's usage line."""


# ---------------------------------------------------------------------------------------------
# shared steps


def _fit_options(args, mask=None) -> dict:
    """``quantize``'s options from the fit and segmentation options (and a mask made)."""
    options = {"random_state": args.seed, "color_space": args.space, "n_init": args.restarts}
    if args.stain_vectors is not None:
        options["stain_vectors"] = args.stain_vectors
    if mask is not None:
        options["mask"] = mask
    if args.min_region:
        options["min_region"] = args.min_region
    return options


def _check_fit_args(args) -> None:
    """Options that only make sense together: usage errors, before anything is read."""
    if args.space == "stains" and args.stain_vectors is None:
        raise UsageError("--space stains needs --stain-vectors R,G,B;R,G,B (2 or 3 vectors)")
    if args.stain_vectors is not None and args.space != "stains":
        raise UsageError(f"--stain-vectors goes with --space stains, not --space {args.space}")
    if args.tissue_threshold is not None and args.mask != "auto":
        raise UsageError("--tissue-threshold goes with --mask auto")
    if args.mask is not None and not args.mask.strip():
        raise UsageError("--mask takes 'auto' or a mask image file")


def _make_mask(args, image):
    """The ``--mask``: ``(bool array, its record for the report)``, or ``(None, None)``.

    ``auto`` is :func:`napari_kmeans_vq.core.tissue.tissue_mask`; a file is read with the
    project's reader, non-zero (in any colour channel, alpha aside) being tissue.
    """
    import numpy as np

    if args.mask is None:
        return None, None
    scalar = image.ndim == 2
    expected = tuple(image.shape if scalar else image.shape[:-1])
    if args.mask == "auto":
        from ..core.tissue import DEFAULT_THRESHOLD, tissue_mask

        threshold = DEFAULT_THRESHOLD if args.tissue_threshold is None else args.tissue_threshold
        if scalar:
            raise CLIError("--mask auto needs an RGB image; this one has no colour axis")
        try:
            mask = tissue_mask(image, threshold)
        except (TypeError, ValueError) as exc:
            raise CLIError(f"--mask auto: {exc}") from None
        record = {"source": "auto", "threshold": float(threshold)}
        if not mask.any():
            raise CLIError(
                f"--mask auto found no tissue (optical density > {threshold}); lower "
                "--tissue-threshold"
            )
    else:
        from ..io import read_image

        path = Path(args.mask)
        _align_pillow_limit()
        try:
            values = np.asarray(read_image(path))
        except (OSError, ValueError) as exc:
            raise CLIError(f"--mask {path}: {exc}") from None
        if values.dtype.kind not in "biuf":
            raise CLIError(f"--mask {path}: a mask must hold numbers, not {values.dtype}")
        if values.ndim == len(expected) + 1 and values.shape[-1] in (1, 2, 3, 4):
            # grey (+ alpha) or RGB(A): the colour channels, not the alpha.
            values = values[..., :1] if values.shape[-1] <= 2 else values[..., :3]
            values = values.any(axis=-1)
        if values.shape != expected:
            have = " x ".join(map(str, values.shape))
            want = " x ".join(map(str, expected))
            raise CLIError(
                f"--mask {path} is {have} pixels, the image {want}; a mask must have the "
                "image's height and width"
            )
        mask = values != 0
        record = {"source": str(path), "threshold": None}
        if not mask.any():
            raise CLIError(f"--mask {path} selects no pixels (it has no non-zero value)")
    record |= {"pixels": int(mask.sum()), "total": int(mask.size)}
    return mask, record


def _refuse_streamed_segmentation(args, source) -> None:
    """The library fits streamed (lazy) inputs without a mask or a clean-up."""
    given = [
        name for name, value in (("--mask", args.mask), ("--min-region", args.min_region)) if value
    ]
    if given:
        raise UsageError(
            f"{' and '.join(given)} need the image in memory; {source} is streamed (a zarr "
            "store, a tiled or pyramidal TIFF, --lazy, or over --max-pixels)"
        )


def _exists(path: Path) -> bool:
    """Whether anything is at ``path``: a dangling symbolic link counts."""
    return os.path.lexists(path)


def _tidy(path: Path) -> None:
    """Remove what interrupted writes to ``path`` left beside it (and put back a store
    whose replacement was interrupted), before ``path`` is looked at."""
    from ..io import clean_leftovers

    clean_leftovers(path)


def _check_output(path: Path, force: bool) -> None:
    _tidy(path)
    if _exists(path) and not force:
        raise CLIError(f"{path} exists; use --force to overwrite it")
    if path.is_dir() and not path.is_symlink():
        raise CLIError(f"{path} is a directory")
    if not path.parent.exists():
        raise CLIError(f"the directory {path.parent} does not exist")


def _check_store_output(path: Path, force: bool) -> None:
    from ..io.omezarr import replaceable_store

    _tidy(path)
    if _exists(path) and not force:
        raise CLIError(f"{path} exists; use --force to overwrite it")
    if _exists(path) and not path.is_symlink():
        if not path.is_dir():
            raise CLIError(f"{path} exists and is not a directory (an OME-Zarr store)")
        if not replaceable_store(path):
            raise CLIError(
                f"{path} is a folder that is not an OME-Zarr store {PROG} writes; refusing to "
                "replace it, even with --force (remove it yourself if it should go)"
            )
    if not path.parent.exists():
        raise CLIError(f"the directory {path.parent} does not exist")


def _read_image(path: Path, *, lazy: bool = False):
    from ..io import read_image

    _align_pillow_limit()
    try:
        return read_image(path, lazy=lazy)
    except (OSError, ValueError) as exc:
        raise CLIError(str(exc)) from None


def _align_pillow_limit() -> None:
    """Pillow's own decompression-bomb limit follows ours in this process (it refuses
    more than twice its ``MAX_IMAGE_PIXELS``, which our check then never reaches)."""
    from PIL import Image

    from ..io import limits

    Image.MAX_IMAGE_PIXELS = limits.MAX_PIXELS


def _load(path):
    from ..io import KVQError, load

    try:
        return load(path)
    except KVQError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None


def _quantize(image, k: int, options: dict, progress=None):
    """``napari_kmeans_vq.quantize``: in memory for an array, block by block for a lazy
    (zarr, TIFF, multiscale) input."""
    from ..large import is_lazy_input, quantize

    first = image[0] if isinstance(image, list) else image
    streamed = is_lazy_input(image) or type(image).__name__ == "memmap"
    # A 2D array has no colour axis: quantize its values (scalar quantization).
    channel_axis = None if len(first.shape) == 2 else -1
    try:
        if type(image).__name__ == "memmap":  # a streamed .npy: block by block
            from ..large import as_dask

            # as_dask puts the colour axis last (a scalar image gets one of length 1).
            image = as_dask(image, channel_axis=channel_axis)
            if channel_axis is None:
                image = image[..., 0]
        return quantize(image, k, channel_axis=channel_axis, progress=progress, **options)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot quantize this image: {exc}") from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        if not streamed:
            raise
        # A block that cannot be read or decoded while streaming (zarr, tifffile and the
        # codecs raise many types): one line, as for any unreadable input.
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise CLIError(f"cannot read a block of the image while streaming it: {message}") from None


def _write(path: Path, content: bytes, *, force: bool, progress) -> int:
    """Write ``content`` to ``path`` once (atomically); the size of the file written."""
    from ..io import atomic_write

    try:
        atomic_write(path, content, overwrite=force)
    except FileExistsError:
        raise CLIError(f"{path} exists; use --force to overwrite it") from None
    except IsADirectoryError:
        raise CLIError(f"{path} is a directory") from None
    size = path.stat().st_size
    progress(f"wrote {path} ({size:,} bytes)")
    return size


# ---------------------------------------------------------------------------------------------
# compress


def _compress_output(args) -> tuple[Path | None, str | None]:
    """The output path and its format (``kvq``, ``png``, ``ome-zarr``), checked."""
    from ..io import format_for_path

    if not args.output:
        if args.with_image != "none":
            raise UsageError("--with-image needs an OME-Zarr output (-o OUT.ome.zarr)")
        return None, None
    out = Path(args.output)
    if out.name.lower().endswith(_ZARR_SUFFIX):
        _check_store_output(out, args.force)
        return out, "ome-zarr"
    try:
        out_format = format_for_path(out)
    except ValueError:
        raise UsageError(f"-o must name a .kvq, .png or .ome.zarr output, got {out}") from None
    if args.with_image != "none":
        raise UsageError("--with-image needs an OME-Zarr output (-o OUT.ome.zarr)")
    _check_output(out, args.force)
    return out, out_format


def _save_store(out: Path, q, image, args, progress) -> dict:
    """Write ``q``'s labels as an OME-Zarr store at ``out``; the ``output`` record."""
    from ..io import save_ome_zarr, tree_size

    extra = {"original": image, "reconstruction": "reconstruction"}.get(args.with_image)
    progress(f"writing OME-Zarr labels to {out}")
    try:
        save_ome_zarr(out, q, image=extra, overwrite=args.force, progress=progress.stages())
    except FileExistsError as exc:
        if args.force:
            raise CLIError(str(exc)) from None
        raise CLIError(f"{out} exists; use --force to overwrite it") from None
    size, allocated = tree_size(out)
    progress(f"wrote {out} ({size:,} bytes)")
    return {
        "path": str(out),
        "format": "ome-zarr",
        "bytes": size,
        "disk_bytes": allocated,
        "with_image": args.with_image,
    }


def _save_file(out: Path, out_format: str, q, contents: dict, files: dict, args, progress):
    """Write the ``.kvq`` or PNG measured for the report (or, with --no-deflate, the
    undeflated ``.kvq``); the ``output`` record and the entry of ``files`` it sizes."""
    from ..io import encode

    if out_format == "kvq" and args.no_deflate:
        content, key = encode(q, format="kvq", deflate=False), "kvq_raw"
    else:
        content = contents.get(out_format)
        key = "kvq_deflated" if out_format == "kvq" else "png"
        if content is None:  # no indexed PNG for this image: the report says why
            raise CLIError(f"cannot write {out}: {files.get('png_reason', 'not possible')}")
    size = _write(out, content, force=args.force, progress=progress)
    return {"path": str(out), "format": out_format, "bytes": size}, key


def _table_output(args, out: Path | None) -> Path | None:
    """The ``--table`` path, checked, or None (``--pixel-size`` and ``--unit`` need it)."""
    if args.table is None:
        for name, value in (("--pixel-size", args.pixel_size), ("--unit", args.unit)):
            if value is not None:
                raise UsageError(f"{name} goes with --table OUT.csv")
        return None
    if args.unit is not None and (not args.unit.strip() or any(c in args.unit for c in " ,\n")):
        raise UsageError(f"--unit must be a word such as um or mm, got {args.unit!r}")
    table = Path(args.table)
    if out is not None and table.resolve() == out.resolve():
        raise UsageError(f"--table and -o name the same file, {table}")
    _check_output(table, args.force)
    return table


def _write_table(table: Path, q, args, progress) -> dict:
    """Write the class table as CSV; its record for the report."""
    unit = args.unit or "um"
    try:
        classes = q.class_table(pixel_size=args.pixel_size, unit=unit)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot make the class table: {exc}") from None
    size = _write(table, classes.to_csv().encode(), force=args.force, progress=progress)
    return {"path": str(table), "bytes": size, "classes": len(classes)}


def cmd_compress(args, progress) -> int:
    from ..io import limits, size_report, sizes_with_ratios, tree_size
    from ..io.images import streams

    _check_fit_args(args)
    out, out_format = _compress_output(args)
    table = _table_output(args, out)
    source = Path(args.image)
    try:
        streamed = streams(source, args.lazy)
    except ValueError:
        raise UsageError(
            f"--lazy reads a .zarr directory, a TIFF or a .npy file, not {source}"
        ) from None
    if streamed:
        _refuse_streamed_segmentation(args, source)
    progress(f"opening {source} lazily" if streamed else f"reading {source}")
    image = _read_image(source, lazy=streamed)
    levels = image if isinstance(image, list) else [image]
    full = levels[0]
    # A 2D image is scalar (no colour axis), as _quantize reads it.
    pixels = limits.pixel_count(full.shape, channels=len(full.shape) > 2)
    mask, mask_record = (None, None) if streamed else _make_mask(args, image)
    # A streamed input small enough for memory is fitted block by block, then its labels
    # are computed in memory, for the full report and any output; a larger one goes to
    # OME-Zarr, block by block, or is only reported.
    in_memory = not streamed or (out_format != "ome-zarr" and pixels <= limits.MAX_PIXELS)
    if not in_memory and out_format in ("kvq", "png"):
        raise UsageError(
            f"{source} has {pixels:,} pixels, over the limit of {limits.MAX_PIXELS:,} decoded "
            f"into memory (--max-pixels): it is streamed and written as OME-Zarr labels, "
            f"give -o OUT.ome.zarr, not {out}"
        )
    if not in_memory and table is not None:
        raise UsageError(
            f"--table needs the labels in memory; {source} is streamed to OME-Zarr labels "
            f"({pixels:,} pixels, limit {limits.MAX_PIXELS:,}: --max-pixels)"
        )
    input_bytes = tree_size(source)[0]
    shape = render.shape_text(full.shape, full.dtype)
    more = f", {len(levels)} levels" if len(levels) > 1 else ""
    how = ", block by block" if streamed else ""
    progress(f"quantizing {shape}{more} to K = {args.colors}{how}")
    if mask_record is not None:
        progress(f"mask: {mask_record['pixels']:,} of {mask_record['total']:,} pixels")
    q = _quantize(image, args.colors, _fit_options(args, mask), progress.stages())
    fit = f" ({q.info['fit']} fit)" if "fit" in q.info else ""
    seconds = q.info.get("seconds", 0)
    then = "; encoding files in memory" if in_memory else ""
    progress(f"K = {q.n_colors}{fit} in {seconds:.2f} s{then}")
    if streamed and in_memory:
        q = q.compute()  # the full-resolution labels, within the in-memory limit

    # One encoding per format measures the files (none for a streamed image), and the
    # file asked for is written from those same bytes; its size is then read back.
    contents: dict = {}
    files = size_report(q, input_bytes=input_bytes, contents=contents)["files"]
    written = None
    if out_format == "ome-zarr":
        written = _save_store(out, q, image, args, progress)
        files["ome_zarr"] = written["bytes"]
    elif out is not None:
        written, key = _save_file(out, out_format, q, contents, files, args, progress)
        files[key] = written["bytes"]
    sizes = sizes_with_ratios(q.report, files, input_bytes)
    table_written = None if table is None else _write_table(table, q, args, progress)

    # The pixels segmented (the mask's, when there is one) are the report's.
    n_pixels = q.report.n_pixels if mask is None else int(mask.size)
    input_info = {"path": str(args.image), "shape": list(full.shape), "dtype": str(full.dtype)}
    if streamed:
        input_info |= {"levels": len(levels), "streamed": True}
        image_line = f"{shape}{more}, {n_pixels:,} pixels, {input_bytes:,} bytes on disk "
        image_line += "(streamed)"
    else:
        image_line = f"{shape}, {n_pixels:,} pixels, file {input_bytes:,} bytes"
    if args.json:
        render.print_json(
            {
                "input": input_info,
                "n_colors": q.n_colors,
                "n_colors_requested": args.colors,
                "seed": args.seed,
                "color_space": args.space,
                "stain_vectors": args.stain_vectors,
                "mask": mask_record,
                "min_region": args.min_region,
                "n_pixels": q.report.n_pixels,
                "fit": q.info.get("fit", "exact"),
                "distortion": q.distortion,
                "psnr": q.psnr,
                "seconds": q.info.get("seconds"),
                "sizes": sizes,
                "output": written,
                "table": table_written,
                "classes": _classes(q, args),
                "palette": q.palette.tolist(),
            }
        )
    else:
        render.print_compress(args, q, image_line, sizes, written, mask_record, table_written)
    return 0


def _classes(q, args) -> list | None:
    """The class table's rows for the JSON report (None for labels left on disk)."""
    if not hasattr(q, "class_table"):
        return None
    classes = q.class_table(pixel_size=args.pixel_size, unit=args.unit or "um")
    return list(classes.rows)


# ---------------------------------------------------------------------------------------------
# decompress and info


def cmd_decompress(args, progress) -> int:
    from ..io import encode_image

    out = Path(args.output)
    _check_output(out, args.force)
    progress(f"reading {args.input}")
    data = _load(args.input)
    _check_reconstruction(data)
    progress(f"decoding {data.n_pixels:,} pixels, K = {data.n_colors}")
    try:
        content = encode_image(data.reconstruction, out)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    _write(out, content, force=args.force, progress=progress)
    return 0


def _check_reconstruction(data) -> None:
    """The decoded image holds N x C values: at most 4 per pixel of the limit (an RGBA
    image at the limit), however many channels the file's palette has."""
    from ..io import limits

    values = data.n_pixels * data.channels
    if values > 4 * limits.MAX_PIXELS:
        raise CLIError(
            f"{data.n_pixels:,} pixels of {data.channels} channels would decode to "
            f"{values:,} values, over 4 x the limit of {limits.MAX_PIXELS:,} pixels; raise "
            "it with --max-pixels"
        )


def cmd_info(args, progress) -> int:
    data = _load(args.input)
    if args.json:
        render.print_json({"path": str(args.input), **data.to_dict()})
    else:
        render.print_info(args.input, data)
    return 0


# ---------------------------------------------------------------------------------------------
# sweep and demo


def _quantize_each(image, ks, options, input_bytes, progress, *, keep_files=False) -> list:
    """One quantization per K and its sizes: ``[(k, q, sizes, contents), ...]``;
    ``contents`` holds the encoded files when ``keep_files``."""
    from ..io import size_report

    results = []
    for step, k in enumerate(ks, 1):
        progress(f"[{step}/{len(ks)}] K = {k}: quantizing")
        q = _quantize(image, k, options)
        progress(f"[{step}/{len(ks)}] K = {k}: encoding files in memory")
        contents: dict | None = {} if keep_files else None
        sizes = size_report(q, input_bytes=input_bytes, contents=contents)
        results.append((k, q, sizes, contents))
    return results


def _row(k: int, q, sizes: dict, input_bytes) -> dict:
    """One row of the sweep's table."""
    files, report = sizes["files"], q.report
    best = min(v for v in (files["kvq_deflated"], files["png"]) if v)
    return {
        "K": q.n_colors,
        "K_requested": k,
        "bits_per_index": report.bits_per_index,
        "total_bits": report.total_bits,
        "ratio": report.ratio,
        "formula_bytes": sizes["formula"]["formula_bytes"],
        "kvq_bytes": files["kvq_raw"],
        "kvq_deflated_bytes": files["kvq_deflated"],
        "png_bytes": files["png"],
        "png_bit_depth": files["png_bit_depth"],
        "raw_bytes": sizes["raw_bytes"],
        "input_bytes": input_bytes,
        "best_vs_raw": best / sizes["raw_bytes"],
        "best_vs_input": best / input_bytes if input_bytes else None,
        "J": q.distortion,
        "psnr": q.psnr,
        "seconds": q.info.get("seconds"),
    }


def cmd_sweep(args, progress) -> int:
    from ..io import tree_size

    gallery = None
    if args.gallery:
        gallery = Path(args.gallery)
        if gallery.suffix.lower() != ".png":
            raise UsageError(f"--gallery writes a PNG; give a .png name, not {gallery}")
        _check_output(gallery, args.force)
    _check_fit_args(args)
    source = Path(args.image)
    progress(f"reading {source}")
    image = _read_image(source)
    if isinstance(image, list) or not hasattr(image, "ndim"):
        raise CLIError(f"sweep reads an image into memory; {source} is not one")
    mask, mask_record = _make_mask(args, image)
    input_bytes = tree_size(source)[0]
    options = _fit_options(args, mask)
    results = _quantize_each(image, args.colors, options, input_bytes, progress)
    rows = [_row(k, q, sizes, input_bytes) for k, q, sizes, _ in results]
    if gallery is not None:
        picture = render.gallery_png(image, [q for _, q, _, _ in results])
        _write(gallery, picture, force=args.force, progress=progress)
    if args.json:
        render.print_json(
            {
                "image": str(args.image),
                "shape": list(image.shape),
                "color_space": args.space,
                "mask": mask_record,
                "min_region": args.min_region,
                "rows": rows,
            }
        )
    elif args.csv:
        render.print_csv(rows)
    else:
        render.print_table(rows, rows[0]["raw_bytes"], input_bytes)
        if mask_record is not None:
            print(render.mask_text(mask_record))
    return 0


def cmd_demo(args, progress) -> int:
    from ..io import encode_image
    from ..io.samples import demo_image

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out} exists and is not a directory")
    image, name, note = demo_image()
    if note:
        render.note(note)
    paths = {"source": out / f"{name}.png", "gallery": out / "gallery.png"}
    for k in SEED_KS:
        paths[f"k{k}.kvq"] = out / f"{name}-k{k}.kvq"
        paths[f"k{k}.png"] = out / f"{name}-k{k}.png"
    existing = [str(p) for p in paths.values() if _exists(p)]
    if existing and not args.force:
        raise CLIError(
            f"{len(existing)} output file(s) exist in {out} (such as {existing[0]}); use "
            "--force to overwrite them"
        )
    out.mkdir(parents=True, exist_ok=True)
    source_bytes = _write(
        paths["source"], encode_image(image, ".png"), force=True, progress=progress
    )
    options = {"random_state": args.seed}
    results = _quantize_each(
        image, list(SEED_KS), options, source_bytes, progress, keep_files=True
    )
    files = {"source": str(paths["source"])}
    rows = []
    for k, q, sizes, contents in results:
        # Each file is written from the bytes measured, and the table shows its real size.
        for fmt, key in (("kvq", "kvq_deflated"), ("png", "png")):
            if fmt in contents:
                path = paths[f"k{k}.{fmt}"]
                sizes["files"][key] = _write(path, contents[fmt], force=True, progress=progress)
                files[f"K={k} {fmt}"] = str(path)
        rows.append(_row(k, q, sizes, source_bytes))
    picture = render.gallery_png(image, [q for _, q, _, _ in results])
    _write(paths["gallery"], picture, force=True, progress=progress)
    files["gallery"] = str(paths["gallery"])
    if args.json:
        render.print_json(
            {"image": name, "shape": list(image.shape), "out": str(out), "files": files,
             "rows": rows, "note": note}
        )  # fmt: skip
        return 0
    shape = render.shape_text(image.shape, image.dtype)
    print(f"{name}: {shape} (source PNG {source_bytes:,} bytes), files in {out}")
    render.print_table(rows, rows[0]["raw_bytes"], source_bytes)
    return 0


# ---------------------------------------------------------------------------------------------
# main


_COMMANDS = {
    "compress": cmd_compress,
    "decompress": cmd_decompress,
    "info": cmd_info,
    "sweep": cmd_sweep,
    "demo": cmd_demo,
}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2)
        return int(exc.code or 0)
    progress = render.Progress(args.quiet)
    if getattr(args, "max_pixels", None) is not None:
        from ..io import limits

        limits.MAX_PIXELS = args.max_pixels
    try:
        return _COMMANDS[args.command](args, progress)
    except UsageError as exc:
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
