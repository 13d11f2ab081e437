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

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from . import inputs, messages, render
from .messages import CLIError
from .parser import PROG, SEED_KS, build_parser

#: Suffix of the OME-Zarr output (``.ome.zarr`` by convention).
_ZARR_SUFFIX = ".zarr"


class UsageError(Exception):
    """A usage error found after parsing: exit status 2 with the parser's usage line."""


# ---------------------------------------------------------------------------------------------
# shared steps


def _fit_options(args, mask=None, codebook=None) -> dict:
    """``quantize``'s options from the fit and segmentation options (and a mask made);
    with a codebook, the codebook instead of the fit's options."""
    if codebook is not None:
        options = {"codebook": codebook}
    else:
        options = {"random_state": args.seed, "color_space": args.space, "n_init": args.restarts}
        if args.stain_vectors is not None:
            options["stain_vectors"] = args.stain_vectors
        if getattr(args, "colors", None) == "auto":
            options |= {"target_psnr": args.target_psnr, "target_j": args.target_j}
            if args.k_max is not None:
                options["k_max"] = args.k_max
    options["n_threads"] = args.threads  # (None: the default)
    if mask is not None:
        options["mask"] = mask
    if getattr(args, "min_region", 0):
        options["min_region"] = args.min_region
    return options


def _check_fit_args(args, codebook=None) -> None:
    """Options that only make sense together: usage errors, before anything is read. Then
    the fit options' defaults are filled in (with ``codebook``, they are the codebook's)."""
    if codebook is not None:
        _check_codebook_args(args, codebook)
    if args.space is None:
        args.space = "rgb"
    if args.space == "stains" and args.stain_vectors is None:
        raise UsageError("--space stains needs --stain-vectors R,G,B;R,G,B (2 or 3 vectors)")
    if args.stain_vectors is not None and args.space != "stains" and codebook is None:
        raise UsageError(f"--stain-vectors goes with --space stains, not --space {args.space}")
    if args.tissue_threshold is not None and args.mask != "auto":
        raise UsageError("--tissue-threshold goes with --mask auto")
    if args.mask is not None and not args.mask.strip():
        raise UsageError("--mask takes 'auto' or a mask image file")
    if args.seed is None:
        args.seed = 0
    if args.restarts is None:
        args.restarts = "auto"


def _check_auto_args(args, codebook) -> None:
    """-k auto and its target: one target, and only with -k auto."""
    targets = [f for f, v in (("--target-psnr", args.target_psnr), ("--target-j", args.target_j))
               if v is not None]  # fmt: skip
    if args.colors == "auto":
        if codebook is not None:
            raise UsageError("-k auto chooses K for a fit; --codebook has its own K")
        if len(targets) != 1:
            raise UsageError(
                "-k auto needs one target: --target-psnr DB (higher is better) or --target-j J "
                "(lower is better)" + (", not both" if targets else "")
            )
    elif targets or args.k_max is not None:
        flag = targets[0] if targets else "--k-max"
        raise UsageError(f"{flag} goes with -k auto")


def _check_codebook_args(args, codebook) -> None:
    """With --codebook: K, the colour space and the stains are the codebook's; options
    that only steer a fit are refused rather than silently ignored."""
    k = codebook.n_colors_
    if args.colors is not None and args.colors != k:
        raise UsageError(
            f"-k {args.colors} differs from the codebook's K = {k}; leave -k out with --codebook"
        )
    space = codebook.color_space.lower()
    if args.space is not None and args.space != space:
        raise UsageError(
            f"--space {args.space} differs from the codebook's colour space ({space}); leave "
            "--space out with --codebook"
        )
    given = [
        flag
        for flag, value in (
            ("--seed", args.seed),
            ("--restarts", args.restarts),
            ("--stain-vectors", args.stain_vectors),
        )
        if value is not None
    ]
    if given:
        raise UsageError(
            f"{' and '.join(given)}: options of a fit; --codebook applies a fitted codebook "
            "as it is (its stain vectors included)"
        )
    args.colors, args.space = k, space
    seed = codebook.random_state
    args.seed = seed if isinstance(seed, int) else None
    args.stain_vectors = (
        None
        if codebook.stain_vectors is None
        else [[float(v) for v in row] for row in codebook.stain_vectors]
    )


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


def _check_store_output(path: Path, force: bool, resume: bool = False) -> None:
    messages.require_large_extra("-o OUT.ome.zarr (OME-Zarr labels)")
    from ..io.omezarr import replaceable_store

    _tidy(path)
    _check_incomplete(path, force, resume)
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


def _finished_store(path: Path) -> dict | None:
    """The label metadata of an OME-Zarr store this package finished at ``path`` (a store
    is swapped in whole), with no interrupted write to it left beside it; else None."""
    from ..io.files import incomplete_store
    from ..io.omezarr import read_labels, read_partial, replaceable_store

    if not path.is_dir() or path.is_symlink() or not any(path.iterdir()):
        return None
    if not replaceable_store(path) or read_partial(path) is not None:
        return None
    if incomplete_store(path) is not None:
        return None
    try:
        return read_labels(path)[1]
    except (OSError, ValueError):
        return None


def _kept(args, job) -> dict | None:
    """With --resume, an OME-Zarr output already complete is kept and its input skipped
    (a rerun of an interrupted batch finishes what was left): its label metadata. A
    finished store made with another K, --names or --with-image is refused, not kept."""
    if not (args.resume and not args.force and job.out_format == "ome-zarr"):
        return None
    if not isinstance(job.out, Path):
        return None
    meta = _finished_store(job.out)
    if meta is None:
        return None
    found = {"K": len(meta["properties"]), "--names": meta["names"],
             "--with-image": (job.out / "labels").is_dir()}  # fmt: skip
    wanted = {"K": args.colors if isinstance(args.colors, int) else found["K"],
              "--names": list(args.names) if args.names is not None else found["--names"],
              "--with-image": args.with_image != "none"}  # fmt: skip
    differ = [key for key in found if found[key] != wanted[key]]
    if differ:
        raise CLIError(
            f"{job.out} is complete but was made with another {', '.join(differ)}; --resume "
            "keeps only outputs of the same run: use --force to make it again"
        )
    return meta


def _kept_entry(job, meta: dict, args) -> tuple[dict, object]:
    """The report's entry for a kept output, and its class table: its size, K and classes
    as the store counted them (the J and PSNR of its fit are not stored)."""
    from ..io import tree_size

    table = _store_class_table(meta, args)
    kept = {"path": str(job.out), "bytes": tree_size(job.out)[0]}
    return render.kept_entry(job.label, kept, table), table


def _store_class_table(meta: dict, args):
    """The class table of a finished store's labels: palette, pixels and names as the
    store records them."""
    from ..core.classes import class_table
    from ..io.omezarr import label_counts, label_palette

    try:
        return class_table(label_palette(meta), label_counts(meta), names=meta["names"],
                           pixel_size=args.pixel_size, unit=args.unit or "um")  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot make the class table: {messages.cli_terms(str(exc))}") from None


def _check_incomplete(path: Path, force: bool, resume: bool) -> None:
    """An incomplete store an interrupted run left for ``path`` is finished (--resume) or
    discarded (--force), never ignored."""
    if force or resume:
        return
    from ..io.files import IncompleteStoreError, incomplete_store

    found = incomplete_store(path)
    if found is not None:
        raise CLIError(_flags(str(IncompleteStoreError(path, *found))))


def _flags(message: str) -> str:
    """A library message about a store in the command line's flags."""
    return message.replace("resume=True", "--resume").replace("overwrite=True", "--force")


def _source_identity(source: Path) -> str:
    """The input file for a resumed store's fingerprint: its path, size and modification
    time (a folder store: its path and bytes)."""
    from ..io import tree_size

    try:
        if source.is_dir():
            return f"{source.resolve()} {tree_size(source)[0]}"
        info = source.stat()
    except OSError:
        return str(source)
    return f"{source.resolve()} {info.st_size} {info.st_mtime_ns}"


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
        with inputs.local_file(path) as local:
            return load(local)
    except KVQError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot read {path}: {exc.strerror or exc}") from None


def _quantize(image, k: int | None, options: dict, progress=None):
    """``napari_kmeans_vq.quantize``: in memory for an array, block by block for a lazy
    (zarr, TIFF, multiscale) input; ``k`` None with ``options["codebook"]``."""
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
        if "codebook" in options:
            k = None
        return quantize(image, k, channel_axis=channel_axis, progress=progress, **options)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot quantize this image: {messages.cli_terms(str(exc))}") from None
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


@dataclass
class _Job:
    """One input of compress and what it writes."""

    source: Path | str  # a path, or "-" for standard input
    out: Path | str | None = None  # a path, "-" for standard output, or None
    out_format: str | None = None  # "kvq", "png", "tiff", "geojson" or "ome-zarr"
    table: Path | None = None

    @property
    def label(self) -> str:
        return "(standard input)" if self.source == inputs.STDIO else str(self.source)


def _output_format(out: Path, flag: str = "-o") -> str:
    """The format an output path names: ``kvq``, ``png``, ``tiff`` (labels with the palette,
    for Fiji and QuPath), ``geojson`` (class outlines for QuPath) or ``ome-zarr``."""
    from ..io import SAVE_FORMATS, format_for_path

    if out.name.lower().endswith(_ZARR_SUFFIX):
        return "ome-zarr"
    try:
        return format_for_path(out, formats=SAVE_FORMATS)
    except ValueError:
        raise UsageError(
            f"{flag} must name a .kvq, .png, .tif, .geojson or .ome.zarr output, got {out}"
        ) from None


def _check_png_k(k: int | None, out) -> None:
    """A PNG holds at most 256 colours: said before anything is read or fitted."""
    if k is not None and k > 256:
        raise CLIError(
            f"cannot write {out}: an indexed PNG holds at most 256 colours, and K = {k}; "
            "write a .kvq (or .ome.zarr) instead, or use -k 256 or fewer"
        )


def _check_png_image(shape, dtype, out) -> None:
    """What an indexed PNG can hold, checked on the image before the fit."""
    import numpy as np

    scalar = len(shape) == 2
    channels = 1 if scalar else shape[-1]
    why = None
    if len(shape) > 3:
        why = f"an indexed PNG is 2D, and this image is {render.shape_text(shape, dtype)}"
    elif np.dtype(dtype) != np.uint8:
        why = f"an indexed PNG stores 8-bit colours, and this image is {dtype}"
    elif channels not in (1, 3, 4):
        why = f"an indexed PNG stores grey, RGB or RGBA colours, not {channels} channels"
    if why:
        raise CLIError(f"cannot write {out}: {why}; write a .kvq (or .ome.zarr) instead")


def _plan(args, sources: list, k: int | None) -> tuple[list[_Job], Path | None]:
    """Each input's outputs, all checked before any input is read; and the summary path."""
    if args.format and args.output != inputs.STDIO:
        raise UsageError("--format goes with -o - (the file written to standard output)")
    if args.name and not args.out_dir:
        raise UsageError("--name goes with --out-dir DIR")
    if args.table and len(sources) > 1:
        raise UsageError("--table writes one image's classes; with several inputs use --summary")
    jobs = [_Job(source) for source in sources]
    if args.output:
        if len(sources) > 1:
            raise UsageError(
                "-o names one output; with several inputs give --out-dir DIR (and --name)"
            )
        if args.out_dir:
            raise UsageError("-o and --out-dir: give one of them")
        job = jobs[0]
        if args.output == inputs.STDIO:
            job.out, job.out_format = inputs.STDIO, args.format or "kvq"
        else:
            job.out = Path(args.output)
            job.out_format = _output_format(job.out)
    elif args.out_dir:
        folder = Path(args.out_dir)
        if _exists(folder) and not folder.is_dir():
            raise CLIError(f"--out-dir {folder} exists and is not a folder")
        template = args.name or "{stem}.kvq"
        seen: dict[str, str] = {}
        for job in jobs:
            name = inputs.output_name(template, job.source, k)
            if name in seen:
                raise UsageError(
                    f"{seen[name]} and {job.label} would both be written to {folder / name}; "
                    "use {name} in --name, or rename an input"
                )
            seen[name] = job.label
            job.out = folder / name
            job.out_format = _output_format(job.out, "--name")
    for job in jobs:
        if job.out is None:
            continue
        if job.out_format != "ome-zarr" and args.with_image != "none":
            raise UsageError("--with-image needs an OME-Zarr output (-o OUT.ome.zarr)")
        if job.out_format == "png":
            _check_png_k(args.k_max if k == "auto" else k, job.out)
        stdio = inputs.STDIO in (job.out, job.source)
        if not stdio and Path(job.source).resolve() == Path(job.out).resolve():
            raise UsageError(f"{job.source} is both an input and an output")
    if args.resume and not any(job.out_format == "ome-zarr" for job in jobs):
        raise UsageError("--resume finishes an OME-Zarr output (-o OUT.ome.zarr)")
    if all(job.out is None for job in jobs) and args.with_image != "none":
        raise UsageError("--with-image needs an OME-Zarr output (-o OUT.ome.zarr)")
    if jobs[0].out_format == "ome-zarr" and jobs[0].out == inputs.STDIO:
        raise UsageError("an OME-Zarr store is a folder; it cannot go to standard output")
    _check_outputs(args, jobs)
    if len(jobs) == 1:
        jobs[0].table = _table_output(args, jobs[0].out)
    summary = _summary_output(args, jobs)
    return jobs, summary


def _check_outputs(args, jobs: list[_Job]) -> None:
    """No output is replaced without --force: all are checked before the first is written."""
    files = [job for job in jobs if isinstance(job.out, Path)]
    if not files:
        return
    if any(job.out_format == "ome-zarr" for job in files):
        messages.require_large_extra("-o OUT.ome.zarr (OME-Zarr labels)")
    files = [job for job in files if _kept(args, job) is None]
    if not files:
        return
    if len(files) == 1:
        job = files[0]
        if job.out.parent.exists() or not args.out_dir:
            if job.out_format == "ome-zarr":
                _check_store_output(job.out, args.force, args.resume)
            else:
                _check_output(job.out, args.force)
        return
    existing = []
    for job in files:
        if job.out.parent.exists():
            _tidy(job.out)
            if job.out_format == "ome-zarr":
                _check_incomplete(job.out, args.force, args.resume)
            if _exists(job.out):
                existing.append(str(job.out))
    if existing and not args.force:
        raise CLIError(
            f"{len(existing)} output(s) exist (such as {existing[0]}); use --force to "
            "overwrite them"
        )


def _summary_output(args, jobs: list[_Job]) -> Path | None:
    if args.summary is None:
        return None
    summary = Path(args.summary)
    if summary.suffix.lower() not in (".csv", ".json"):
        raise UsageError(f"--summary writes .csv or .json, not {summary}")
    for job in jobs:
        for other in (job.out, job.table):
            if isinstance(other, Path) and other.resolve() == summary.resolve():
                raise UsageError(f"--summary and an output name the same file, {summary}")
    made_later = args.out_dir and summary.parent.resolve() == Path(args.out_dir).resolve()
    if made_later and not summary.parent.exists():
        return summary  # in the --out-dir made for the outputs: nothing there yet
    _check_output(summary, args.force)
    return summary


def _read_codebook_arg(args):
    """The --codebook file: ``(codebook, names)``, or ``(None, None)``."""
    if not args.codebook:
        return None, None
    from ..io.codebook import read_codebook

    try:
        read = read_codebook(args.codebook)
    except FileNotFoundError:
        raise CLIError(f"--codebook {args.codebook}: no such file") from None
    except (OSError, ValueError) as exc:
        raise CLIError(f"--codebook {args.codebook}: {exc}") from None
    return read.codebook, list(read.names)


def _check_names(args, k: int | None, default=None) -> list[str] | None:
    """--names (or the codebook's names), one per class when K is known."""
    names = args.names if args.names is not None else default
    if args.names is not None and isinstance(k, int) and len(names) != k:
        raise UsageError(f"--names gives {len(names)} names for K = {k} classes")
    return names


def _save_store(out: Path, q, image, args, progress, names=None, source=None) -> dict:
    """Write ``q``'s labels as an OME-Zarr store at ``out``; the ``output`` record."""
    from ..io import save_ome_zarr, tree_size
    from ..io.files import IncompleteStoreError, incomplete_store
    from ..io.omezarr import ResumeError

    extra = {"original": image, "reconstruction": "reconstruction"}.get(args.with_image)
    out.parent.mkdir(parents=True, exist_ok=True)
    found = incomplete_store(out) if args.resume else None
    if found is not None:
        partial, record = found
        progress(
            f"resuming {partial}: {record['done']:,} of {record['total']:,} blocks already written"
        )
    progress(f"writing OME-Zarr labels to {out}")
    try:
        save_ome_zarr(
            out,
            q,
            image=extra,
            overwrite=args.force,
            resume=args.resume,
            progress=progress.stages(),
            names=names,
            source=None if source is None else _source_identity(Path(source)),
        )
    except (IncompleteStoreError, ResumeError) as exc:
        raise CLIError(_flags(str(exc))) from None
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


def _save_file(out, out_format: str, q, contents: dict, files: dict, args, progress, names=None):
    """Write the ``.kvq`` or PNG measured for the report (or, with --no-deflate, the
    undeflated ``.kvq``; with class names, the file that records them) to a file or standard
    output; the ``output`` record and the entry of ``files`` it sizes (the file written)."""
    from ..io import encode

    if out_format == "kvq" and args.no_deflate:
        content = encode(q, format="kvq", deflate=False, names=names)
        key = "kvq_raw"
    elif out_format in ("tiff", "geojson"):
        content = encode(q, format=out_format, names=names, pixel_size=_tiff_pixel_size(args))
        key = out_format
    elif names is not None and out_format in contents:
        content = encode(q, format=out_format, names=names)
        key = "kvq_deflated" if out_format == "kvq" else "png"
    else:
        content = contents.get(out_format)
        key = "kvq_deflated" if out_format == "kvq" else "png"
        if content is None:  # no indexed PNG for this image: the report says why
            reason = messages.cli_terms(files.get("png_reason", "not possible"))
            raise CLIError(f"cannot write {out}: {reason}")
    if out == inputs.STDIO:
        size = inputs.write_stdout(content)
        progress(f"wrote {size:,} bytes to standard output")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        size = _write(out, content, force=args.force, progress=progress)
    return {"path": str(out), "format": out_format, "bytes": size}, key


def _tiff_pixel_size(args) -> float | None:
    """The pixel side in micrometres a TIFF records (square pixels only)."""
    size, unit = args.pixel_size, (args.unit or "um").lower()
    if size is None:
        return None
    if isinstance(size, tuple):
        if size[0] != size[1]:
            raise UsageError("a TIFF records square pixels: give one --pixel-size")
        size = size[0]
    per_um = {"um": 1.0, "µm": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3}.get(unit)
    if per_um is None:
        raise UsageError(f"a TIFF records the pixel size in um, nm or mm; --unit is {unit}")
    return size * per_um


def _table_output(args, out) -> Path | None:
    """The ``--table`` path, checked, or None (``--pixel-size`` and ``--unit`` need it,
    --summary or a TIFF output, which records the pixel size)."""
    if args.unit is not None and (not args.unit.strip() or any(c in args.unit for c in " ,\n")):
        raise UsageError(f"--unit must be a word such as um or mm, got {args.unit!r}")
    tiff = isinstance(out, Path) and out.suffix.lower() in (".tif", ".tiff")
    if args.table is None:
        if args.summary is None and not tiff:
            for name, value in (("--pixel-size", args.pixel_size), ("--unit", args.unit)):
                if value is not None:
                    raise UsageError(f"{name} goes with --table OUT.csv or --summary")
        return None
    table = Path(args.table)
    if isinstance(out, Path) and table.resolve() == out.resolve():
        raise UsageError(f"--table and -o name the same file, {table}")
    _check_output(table, args.force)
    return table


def _class_rows(q, args, names, written=None):
    """The class table: from a result in memory; for labels streamed to an OME-Zarr store
    (``written``), with the classes' pixels as the store counted them; else None."""
    from ..core.quantize import Quantization, result_class_table

    options = {"pixel_size": args.pixel_size, "unit": args.unit or "um"}
    try:
        if isinstance(q, Quantization):
            return q.class_table(names, **options)
        if written is None or written.get("format") != "ome-zarr":
            return None
        return result_class_table(q, _store_counts(written["path"]), names=names, **options)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot make the class table: {messages.cli_terms(str(exc))}") from None


def _store_counts(path):
    """Pixels of each class of an OME-Zarr store this command wrote (its properties)."""
    from ..io.omezarr import label_counts, read_labels

    return label_counts(read_labels(path)[1])


def _write_table(table: Path, q, args, names, progress, written=None) -> dict:
    """Write the class table as CSV; its record for the report."""
    classes = _class_rows(q, args, names, written)
    size = _write(table, classes.to_csv().encode(), force=args.force, progress=progress)
    return {"path": str(table), "bytes": size, "classes": len(classes)}


def _compress_one(args, job: _Job, codebook, names, progress) -> dict:
    """Quantize one input and write its outputs: compress's one pipeline, for a single
    input as for each of a batch. Returns what the report and the summary need."""
    with inputs.local_file(job.source) as source:
        return _compress_file(args, job, source, codebook, names, progress)


def _compress_file(args, job: _Job, source: Path, codebook, names, progress) -> dict:
    from ..io import limits, size_report, sizes_with_ratios, tree_size
    from ..io.images import streams

    out, out_format = job.out, job.out_format
    try:
        streamed = streams(source, args.lazy)
    except ValueError:
        raise UsageError(
            f"--lazy reads a .zarr directory, a TIFF or a .npy file, not {job.label}"
        ) from None
    if streamed:
        _refuse_streamed_segmentation(args, job.label)
        messages.require_large_extra(f"streaming {job.label}")
    progress(f"opening {job.label} lazily" if streamed else f"reading {job.label}")
    image = _read_image(source, lazy=streamed)
    levels = image if isinstance(image, list) else [image]
    full = levels[0]
    if len(full.shape) > 2 and full.shape[-1] == 4:
        messages.notice(
            f"{job.label} has an alpha channel: only the colours are quantized and stored "
            "(.kvq and PNG files keep no alpha)"
        )
    if out_format == "png":
        _check_png_image(full.shape, full.dtype, out)
    # A 2D image is scalar (no colour axis), as _quantize reads it.
    pixels = limits.pixel_count(full.shape, channels=len(full.shape) > 2)
    mask, mask_record = (None, None) if streamed else _make_mask(args, image)
    # A streamed input small enough for memory is fitted block by block, then its labels
    # are computed in memory, for the full report and any output; a larger one goes to
    # OME-Zarr, block by block, or is only reported.
    in_memory = not streamed or (out_format != "ome-zarr" and pixels <= limits.MAX_PIXELS)
    if not in_memory and out is not None and out_format != "ome-zarr":
        raise UsageError(
            f"{job.label} has {pixels:,} pixels, over the limit of {limits.MAX_PIXELS:,} "
            f"decoded into memory (--max-pixels): it is streamed and written as OME-Zarr "
            f"labels, give -o OUT.ome.zarr, not {out}"
        )
    if out_format != "ome-zarr" and not in_memory and (job.table or args.summary is not None):
        flag = "--table" if job.table is not None else "--summary"
        raise UsageError(
            f"{flag} needs the classes' pixels: {job.label} is streamed ({pixels:,} pixels, "
            f"over --max-pixels {limits.MAX_PIXELS:,}), so write it as OME-Zarr labels "
            "(-o OUT.ome.zarr), which counts them"
        )
    input_bytes = tree_size(source)[0]
    shape = render.shape_text(full.shape, full.dtype)
    more = f", {len(levels)} levels" if len(levels) > 1 else ""
    how = ", block by block" if streamed else ""
    what = "applying the codebook" if codebook is not None else "quantizing"
    progress(f"{what} {shape}{more} to K = {args.colors}{how}")
    if mask_record is not None:
        progress(f"mask: {mask_record['pixels']:,} of {mask_record['total']:,} pixels")
    options = _fit_options(args, mask, codebook)
    q = _quantize(image, args.colors, options, progress.stages())
    fit = f" ({q.info['fit']} fit)" if "fit" in q.info else ""
    seconds = q.info.get("seconds", 0)
    then = "; encoding files in memory" if in_memory else ""
    if "auto" in q.info:
        tried = ", ".join(str(t["n_colors"]) for t in q.info["auto"]["trials"])
        fit += f" (chosen among K = {tried})"
    progress(f"K = {q.n_colors}{fit} in {seconds:.2f} s{then}")
    if streamed and in_memory:
        q = q.compute()  # the full-resolution labels, within the in-memory limit
    if names is not None and len(names) != q.n_colors:
        raise CLIError(f"--names gives {len(names)} names, but K = {q.n_colors} here")

    # One encoding per format measures the files (none for a streamed image), and the
    # file asked for is written from those same bytes; its size is then read back.
    contents: dict = {}
    files = size_report(q, input_bytes=input_bytes, contents=contents)["files"]
    written = None
    if out_format == "ome-zarr":
        written = _save_store(out, q, image, args, progress, names, source)
        files["ome_zarr"] = written["bytes"]
    elif out is not None:
        written, key = _save_file(out, out_format, q, contents, files, args, progress, names)
        files[key] = written["bytes"]
    sizes = sizes_with_ratios(q.report, files, input_bytes)
    table_written = None
    if job.table is not None:
        table_written = _write_table(job.table, q, args, names, progress, written)

    # The pixels segmented (the mask's, when there is one) are the report's.
    n_pixels = q.report.n_pixels if mask is None else int(mask.size)
    input_info = {"path": str(job.source), "shape": list(full.shape), "dtype": str(full.dtype)}
    if streamed:
        input_info |= {"levels": len(levels), "streamed": True}
        image_line = f"{shape}{more}, {n_pixels:,} pixels, {input_bytes:,} bytes on disk "
        image_line += "(streamed)"
    else:
        image_line = f"{shape}, {n_pixels:,} pixels, file {input_bytes:,} bytes"
    return {
        "q": q,
        "input": input_info,
        "image_line": image_line,
        "sizes": sizes,
        "output": written,
        "table": table_written,
        "mask": mask_record,
        "classes": _class_rows(q, args, names, written),
    }


def _report_json(args, record: dict) -> dict:
    """compress's JSON report of one input."""
    q = record["q"]
    classes = record["classes"]
    return {
        "input": record["input"],
        "n_colors": q.n_colors,
        "n_colors_requested": args.colors,
        "auto": q.info.get("auto"),
        "seed": args.seed,
        "color_space": args.space,
        "stain_vectors": args.stain_vectors,
        "codebook": args.codebook,
        "mask": record["mask"],
        "min_region": args.min_region,
        "n_pixels": q.report.n_pixels,
        "fit": q.info.get("fit", "exact"),
        "distortion": q.distortion,
        "psnr": q.psnr,
        "seconds": q.info.get("seconds"),
        "sizes": record["sizes"],
        "output": record["output"],
        "table": record["table"],
        "classes": None if classes is None else list(classes.rows),
        "palette": q.palette.tolist(),
    }


def cmd_compress(args, progress) -> int:
    codebook, codebook_names = _read_codebook_arg(args)
    if codebook is None and args.colors is None:
        raise UsageError("-k K is required (or --codebook FILE, whose K is used)")
    _check_auto_args(args, codebook)
    _check_fit_args(args, codebook)
    names = _check_names(args, args.colors, codebook_names)
    try:
        sources = inputs.expand(args.images)
    except inputs.InputError as exc:
        raise UsageError(str(exc)) from None
    jobs, summary = _plan(args, sources, args.colors)
    single = len(jobs) == 1 and summary is None and not args.out_dir
    if single:
        job = jobs[0]
        meta = _kept(args, job)
        if meta is not None:
            kept, table = _kept_entry(job, meta, args)
            if job.table is not None:
                _write(job.table, table.to_csv().encode(), force=args.force, progress=progress)
            if args.json:
                render.print_json(kept)
            else:
                print(f"kept {kept['output']} ({kept['bytes']:,} bytes): complete already")
            return 0
        record = _compress_one(args, job, codebook, names, progress)
        # With the file on standard output, the report goes to standard error.
        stream = sys.stderr if job.out == inputs.STDIO else sys.stdout
        with contextlib.redirect_stdout(stream):
            if args.json:
                render.print_json(_report_json(args, record))
            else:
                render.print_compress(args, job.label, record)
        return 0
    return _compress_batch(args, jobs, summary, codebook, names, progress)


def _compress_batch(args, jobs, summary, codebook, names, progress) -> int:
    """Each input through :func:`_compress_one`; a failure is reported and the rest run.
    One summary table; exit status 1 when any input failed."""
    if args.out_dir:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    results = []
    with render.BatchProgress(len(jobs), progress) as bar:
        for index, job in enumerate(jobs, 1):
            step = bar.step(index, job.label)
            meta = _kept(args, job)
            if meta is not None:
                results.append(_kept_entry(job, meta, args)[0])
                bar.done(results[-1])
                continue
            try:
                record = _compress_one(args, job, codebook, names, step)
            except (KeyboardInterrupt, MemoryError):
                raise
            except UsageError as exc:  # this input cannot be handled so (too large...)
                results.append(_failure(job, str(exc)))
            except Exception as exc:
                if args.debug:
                    import traceback

                    traceback.print_exc()
                results.append(_failure(job, _one_line(exc)))
            else:
                results.append(render.batch_entry(job.label, record))
            entry = results[-1]
            if entry["status"] == "failed":
                bar.say(f"{PROG}: error: {job.label}: {entry['error']}")
            bar.done(entry)
    summary_written = None
    if summary is not None:
        content = render.summary_bytes(results, summary.suffix.lower())
        summary_written = _write(summary, content, force=args.force, progress=progress)
    if args.json:
        render.print_json({"images": results, "summary": summary and str(summary)})
    else:
        render.print_batch(results, summary, summary_written)
    failed = sum(entry["status"] == "failed" for entry in results)
    if failed:
        print(f"{PROG}: error: {failed} of {len(results)} inputs failed", file=sys.stderr)
        return 1
    return 0


def _failure(job: _Job, message: str) -> dict:
    return {"image": job.label, "status": "failed", "error": message}


def _one_line(exc: BaseException) -> str:
    message = messages.cli_terms(" ".join(str(exc).split())) or type(exc).__name__
    if not isinstance(exc, CLIError | ValueError | TypeError | OSError):
        message = f"{type(exc).__name__}: {message}"
    return message


# ---------------------------------------------------------------------------------------------
# fit: one codebook for a cohort


def cmd_fit(args, progress) -> int:
    """Fit one codebook on all the images together and write it as a codebook file."""
    import numpy as np

    from ..core.codebook import Codebook
    from ..io.codebook import codebook_document, codebook_json, save_codebook

    _check_fit_args(args)
    names = _check_names(args, args.colors)
    try:
        sources = inputs.expand(args.images)
    except inputs.InputError as exc:
        raise UsageError(str(exc)) from None
    if inputs.STDIO in sources:
        raise UsageError("fit reads image files; - (standard input) is not one")
    if args.mask not in (None, "auto") and len(sources) > 1:
        raise UsageError("--mask FILE fits one image; for several images use --mask auto")
    out = None if args.output == inputs.STDIO else Path(args.output)
    if out is not None:
        if out.suffix.lower() != ".json":
            raise UsageError(f"-o writes a codebook file, .json; got {out}")
        _check_output(out, args.force)
    # One image in memory at a time: each is reduced to its colour histogram, and the
    # codebook is fitted on the merged histograms (the same fit as on all the pixels).
    from ..core.histogram import ColorHistogram

    hists, first, codebook, pixels = [], None, None, 0
    for index, source in enumerate(sources, 1):
        progress(f"[{index}/{len(sources)}] reading {source}")
        image = _read_image(source)
        if isinstance(image, list) or not hasattr(image, "ndim"):
            raise CLIError(f"fit reads images into memory; {source} is not one")
        channels = image.shape[-1] if image.ndim > 2 else 1
        kind = (3 if channels == 4 else channels, image.dtype)  # alpha is not fitted
        if first is None:
            first = (source, kind)
            codebook = Codebook(
                args.colors,
                color_space=args.space,
                stain_vectors=args.stain_vectors,
                random_state=args.seed,
                n_init=args.restarts,
                channel_axis=None if image.ndim == 2 else -1,
                n_threads=args.threads,
            )
        elif kind != first[1]:
            raise CLIError(
                f"{source} has {kind[0]} colour channel(s) of {kind[1]}, but {first[0]} has "
                f"{first[1][0]} of {first[1][1]}; one codebook is fitted to images of one kind"
            )
        mask, record = _make_mask(args, image)
        if record is not None:
            progress(f"[{index}/{len(sources)}] mask: {record['pixels']:,} of {record['total']:,}")
        pixels += _pixel_count(image) if mask is None else int(mask.sum())
        try:
            hists.append(codebook.histogram(image, mask=mask))
        except (TypeError, ValueError) as exc:
            raise CLIError(f"cannot fit the codebook: {messages.cli_terms(str(exc))}") from None
        del image, mask
    progress(f"fitting K = {args.colors} on {len(hists)} image(s), {pixels:,} pixels")
    try:
        hist = hists[0] if len(hists) == 1 else ColorHistogram.merge(hists)
        codebook.fit_histogram(hist, hist.colors.dtype, progress=progress.stages())
    except (TypeError, ValueError) as exc:
        raise CLIError(f"cannot fit the codebook: {messages.cli_terms(str(exc))}") from None
    if names is not None and len(names) != codebook.n_colors_:
        raise CLIError(f"--names gives {len(names)} names, but K = {codebook.n_colors_}")
    document = codebook_document(codebook, names=names)
    if out is None:
        size = inputs.write_stdout(codebook_json(document).encode())
        progress(f"wrote {size:,} bytes to standard output")
    else:
        try:
            save_codebook(codebook, out, names=names, overwrite=args.force)
        except FileExistsError:
            raise CLIError(f"{out} exists; use --force to overwrite it") from None
        size = out.stat().st_size
        progress(f"wrote {out} ({size:,} bytes)")
    mean_error = codebook.inertia_ / pixels if pixels else float("nan")
    report = {
        "images": [str(s) for s in sources],
        "n_colors": codebook.n_colors_,
        "color_space": args.space,
        "pixels": pixels,
        "distinct_colors": codebook.n_distinct_colors_,
        "distortion": mean_error,
        "output": {"path": str(args.output), "bytes": size},
        "classes": document["classes"],
        "palette": np.asarray(codebook.palette_).tolist(),
    }
    with contextlib.redirect_stdout(sys.stderr if out is None else sys.stdout):
        if args.json:
            render.print_json(report)
        else:
            render.print_fit(report)
    return 0


def _pixel_count(image) -> int:
    return int(image.size if image.ndim == 2 else image.size // image.shape[-1])


# ---------------------------------------------------------------------------------------------
# decompress and info


def cmd_decompress(args, progress) -> int:
    from ..io import encode_image

    to_stdout = args.output == inputs.STDIO
    if args.format and not to_stdout:
        raise UsageError("--format goes with -o - (the image written to standard output)")
    out = Path(args.output)
    if not to_stdout:
        _check_output(out, args.force)
    progress(f"reading {args.input}")
    data = _load(args.input)
    _check_reconstruction(data)
    progress(f"decoding {data.n_pixels:,} pixels, K = {data.n_colors}")
    try:
        target = f".{args.format or 'png'}" if to_stdout else out
        content = encode_image(data.reconstruction, target)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if to_stdout:
        size = inputs.write_stdout(content)
        progress(f"wrote {size:,} bytes to standard output")
    else:
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
    options = {"random_state": args.seed, "n_threads": args.threads}
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
    render.print_table(rows, rows[0]["raw_bytes"], source_bytes, written=True)
    return 0


# ---------------------------------------------------------------------------------------------
# main


_COMMANDS = {
    "compress": cmd_compress,
    "fit": cmd_fit,
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
    workers = contextlib.nullcontext()
    if args.threads is not None:  # (every command takes --threads)
        from ..large.fit import dask_workers

        workers = dask_workers(args.threads)
    try:
        with messages.warnings_as_notices(), workers:
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
