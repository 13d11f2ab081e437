"""What the command line shows: progress on stderr, tables, JSON and CSV on stdout, and the
sweep's gallery picture. Nothing here computes a result; it only lays one out."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from .parser import PROG

# ---------------------------------------------------------------------------------------------
# progress


class Progress:
    """Progress lines on stderr, each with the seconds since the command started; silenced
    by ``--quiet``."""

    def __init__(
        self, quiet: bool, prefix: str = "", start: float | None = None, stages: bool = True
    ):
        self.quiet = quiet
        self.prefix = prefix
        self.show_stages = stages
        self.start = time.perf_counter() if start is None else start

    def __call__(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self.start
            print(f"{PROG}: [{elapsed:6.2f}s] {self.prefix}{message}", file=sys.stderr, flush=True)

    def child(self, prefix: str, quiet: bool = False) -> Progress:
        """The same clock, each line starting with ``prefix`` (one input of a batch)."""
        return Progress(self.quiet or quiet, prefix, self.start, stages=False)

    def stages(self):
        """A ``progress(stage, fraction)`` callback (as ``quantize`` and ``write_labels``
        call it) printing a line per stage and per 10 %; None for one input of a batch
        (its steps are enough)."""
        if not self.show_stages:
            return None
        state = {"stage": None, "next": 0.0}

        def report(stage: str, fraction: float) -> None:
            if stage != state["stage"]:
                state["stage"], state["next"] = stage, 0.0
            if fraction >= state["next"] or fraction >= 1.0:
                self(f"{stage}: {100 * fraction:3.0f}%")
                state["next"] = math.floor(fraction * 10 + 1) / 10
                if fraction >= 1.0:
                    state["next"] = math.inf

        return report


def note(message: str) -> None:
    """A note on stderr that ``--quiet`` does not silence."""
    print(f"{PROG}: note: {message}", file=sys.stderr)


class BatchProgress:
    """A batch's progress: a bar (tqdm) over the inputs when stderr is a terminal, else a
    line per step of each input (``[2/5] slide.png: ...``); nothing with ``--quiet``."""

    def __init__(self, total: int, progress: Progress):
        self.total = total
        self.progress = progress
        self.bar = None
        if not progress.quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:  # the lines instead
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, file=sys.stderr, unit="image", leave=True)

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def step(self, index: int, label: str) -> Progress:
        """The progress of input ``index`` (silent under a bar)."""
        if self.bar is not None:
            self.bar.set_description_str(Path(label).name)
        return self.progress.child(f"[{index}/{self.total}] {label}: ", self.bar is not None)

    def say(self, message: str) -> None:
        """A line that always shows (an input's failure), above the bar if there is one."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def done(self, entry: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)


# ---------------------------------------------------------------------------------------------
# JSON and CSV


def jsonable(value):
    """Numpy scalars and arrays, paths and non-finite floats as plain JSON values."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def print_json(data) -> None:
    print(json.dumps(jsonable(data), indent=2, allow_nan=False))


def print_csv(rows: list[dict]) -> None:
    import csv

    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


# ---------------------------------------------------------------------------------------------
# text


def _fmt_int(value) -> str:
    return "-" if value is None else f"{value:,}"


def _fmt_pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def shape_text(shape, dtype) -> str:
    return " x ".join(str(s) for s in shape) + f" {dtype}"


def size_table(report, sizes: dict) -> list[str]:
    """The compress report's rows: the raw image, the formula and each file's bytes."""
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
        (
            f"raw image ({report.bits_per_channel * report.channels}-bit)",
            report.original_bits,
            raw,
        ),
        ("formula (seed: indices + codebook)", report.total_bits, -(-report.total_bits // 8)),
        (".kvq packed", None, files["kvq_raw"]),
        (kvq_name, None, files["kvq_deflated"]),
        (png_name, None, files["png"]),
    ]
    if files.get("ome_zarr") is not None:
        rows.append(("OME-Zarr labels (store)", None, files["ome_zarr"]))
    out = [f"{'':36}{'bits':>14}{'bytes':>12}{'vs raw':>10}{'vs input':>10}"]
    for name, bits, size in rows:
        vs_raw = None if size is None else size / raw
        vs_in = None if size is None or not input_bytes else size / input_bytes
        out.append(
            f"{name:36}{_fmt_int(bits):>14}{_fmt_int(size):>12}{_fmt_pct(vs_raw):>10}"
            f"{_fmt_pct(vs_in):>10}"
        )
    return out


def mask_text(record: dict) -> str:
    """The mask line: where it came from and the pixels it segments."""
    if record["source"] == "auto":
        source = f"auto (tissue: optical density > {record['threshold']:g})"
    else:
        source = record["source"]
    share = record["pixels"] / record["total"]
    return (
        f"mask       {source}: {record['pixels']:,} of {record['total']:,} pixels "
        f"({100 * share:.2f}%) segmented"
    )


def print_compress(args, label: str, record: dict) -> None:
    """compress's report: the image, the mask, the codebook, the quality, the size table."""
    q, sizes, written = record["q"], record["sizes"], record["output"]
    mask, table = record["mask"], record["table"]
    report = q.report
    fit = q.info.get("fit", "exact")
    if args.codebook:
        origin = f"from {args.codebook}, {args.space}"
    else:
        origin = f"seed {args.seed}, {args.space}" + ("" if fit == "exact" else f", {fit} fit")
    if "auto" in q.info:
        target = q.info["auto"]["target"]
        goal = (
            f"PSNR >= {target['psnr']:g} dB"
            if "psnr" in target
            else f"J <= {target['distortion']:g}"
        )
        origin += f", K chosen for {goal}"
    lines = [f"image      {label}: {record['image_line']}"]
    if mask is not None:
        lines.append(mask_text(mask))
    if args.min_region:
        lines.append(f"clean-up   regions under {args.min_region:,} pixels merged")
    lines += [
        f"codebook   K = {q.n_colors} ({report.bits_per_index} bits per index), {origin}",
        f"quality    J = {q.distortion:.2f}, PSNR = {q.psnr:.2f} dB",
        "",
        *size_table(report, sizes),
    ]
    if written:
        where = "standard output" if written["path"] == "-" else written["path"]
        lines += ["", f"wrote {where} ({written['bytes']:,} bytes)"]
    if table:
        lines += [f"wrote {table['path']} ({table['classes']} classes, {table['bytes']:,} bytes)"]
    print("\n".join(lines))


def print_info(path, data) -> None:
    """info's description of a loaded ``.kvq`` file or indexed PNG."""
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
        f"file         {path}: {kind}{version}, {data.file_size:,} bytes, checks passed",
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


_TABLE = (
    ("K", "K", "{:d}"),
    ("b", "bits_per_index", "{:d}"),
    ("formula bits", "total_bits", "{:,}"),
    ("ratio", "ratio", "{:.2%}"),
    ("packed B", "kvq_bytes", "{:,}"),
    ("deflated B", "kvq_deflated_bytes", "{:,}"),
    ("PNG B", "png_bytes", "{:,}"),
    ("best/raw", "best_vs_raw", "{:.2%}"),
    ("best/input", "best_vs_input", "{:.2%}"),
    ("J", "J", "{:.1f}"),
    ("PSNR dB", "psnr", "{:.2f}"),
    ("s", "seconds", "{:.2f}"),
)


# The demo writes the deflated .kvq and the PNG: its table shows those files' sizes only.
_WRITTEN = {"packed B": None, "deflated B": ".kvq B"}


def print_table(rows: list[dict], raw_bytes: int, input_bytes, *, written: bool = False) -> None:
    """The sweep's (or, ``written``, the demo's) table, one row per K, right-aligned, with
    a note on the units."""
    columns = _TABLE
    if written:
        columns = tuple(
            (_WRITTEN.get(title, title), key, fmt)
            for title, key, fmt in _TABLE
            if _WRITTEN.get(title, title) is not None
        )
    cells = [[title for title, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None or value == math.inf else fmt.format(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    text = f"raw image {raw_bytes:,} bytes"
    if input_bytes:
        text += f"; input file {input_bytes:,} bytes"
    print(text)
    if written:
        units = "B = bytes of the file written (.kvq deflated, indexed PNG)"
    else:
        units = "B = bytes of each file as it would be written (packed = .kvq not deflated)"
    print(f"ratio = formula bits / raw bits; {units}; best = smaller file")


# ---------------------------------------------------------------------------------------------
# the gallery


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
            raise ValueError(f"a gallery needs a 2D grey or colour image, not {array.shape}")
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


# ---------------------------------------------------------------------------------------------
# batches


def batch_entry(label: str, record: dict) -> dict:
    """One input's line of a batch: its figures and its classes."""
    q, written = record["q"], record["output"]
    classes = record["classes"]
    return {
        "image": label,
        "status": "ok",
        "error": None,
        "output": None if written is None else written["path"],
        "K": q.n_colors,
        "J": q.distortion,
        "psnr": q.psnr if math.isfinite(q.psnr) else None,
        "bits": q.report.total_bits,
        "bytes": None if written is None else written["bytes"],
        "classes": None if classes is None else [dict(row) for row in classes.rows],
    }


def kept_entry(label: str, kept: dict, table) -> dict:
    """A batch's line for an input whose output was complete already (--resume keeps it):
    its output, size, K and classes (``table``); no J, PSNR or bits (nothing was
    fitted)."""
    return {"image": label, "status": "kept", "error": None, "output": kept["path"],
            "K": len(table), "J": None, "psnr": None, "bits": None, "bytes": kept["bytes"],
            "classes": [dict(row) for row in table.rows]}  # fmt: skip


_IMAGE_COLUMNS = ("image", "status", "error", "output", "K", "J", "psnr", "bits", "bytes")


def summary_rows(results: list[dict]) -> list[dict]:
    """The summary as a flat table: a row per image and class (one row for a failure),
    the image's J, PSNR, bits and bytes repeated on each of its classes."""
    rows = []
    for entry in results:
        image = {key: entry.get(key) for key in _IMAGE_COLUMNS}
        for row in entry.get("classes") or [{}]:
            rows.append(image | row)
    return rows


def summary_bytes(results: list[dict], suffix: str) -> bytes:
    """The summary file's content: JSON (images with their classes) or CSV (flat)."""
    import csv
    import io

    if suffix == ".json":
        text = json.dumps({"images": jsonable(results)}, indent=2, allow_nan=False)
        return (text + "\n").encode()
    rows = summary_rows(results)
    columns = list(_IMAGE_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in jsonable(row).items()})
    return buffer.getvalue().encode()


def print_batch(results: list[dict], summary, summary_bytes_written) -> None:
    """A batch's table: a line per input, its K, J, PSNR and output (or its error)."""
    cells = [["image", "K", "J", "PSNR dB", "bytes", "output"]]
    for entry in results:
        if entry["status"] == "failed":
            cells.append([entry["image"], "-", "-", "-", "-", f"failed: {entry['error']}"])
            continue
        if entry["status"] == "kept":
            output = f"{entry['output']} (complete already: kept)"
            cells.append(
                [entry["image"], str(entry["K"]), "-", "-", _fmt_int(entry["bytes"]), output]
            )
            continue
        psnr = "inf" if entry["psnr"] is None else f"{entry['psnr']:.2f}"
        cells.append(
            [
                entry["image"],
                str(entry["K"]),
                f"{entry['J']:.2f}",
                psnr,
                _fmt_int(entry["bytes"]),
                entry["output"] or "-",
            ]
        )
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]) - 1)]
    for line in cells:
        left, right = line[0].ljust(widths[0]), line[1:-1]
        numbers = "  ".join(c.rjust(w) for c, w in zip(right, widths[1:], strict=True))
        print(f"{left}  {numbers}  {line[-1]}")
    failed = sum(entry["status"] == "failed" for entry in results)
    print(f"{len(results) - failed} of {len(results)} images done")
    if summary is not None:
        print(f"wrote {summary} ({summary_bytes_written:,} bytes)")


def print_fit(report: dict) -> None:
    """fit's report: the cohort, the fit and each class with its name and colour."""
    n = len(report["images"])
    lines = [
        f"images     {n} ({report['pixels']:,} pixels, {report['distinct_colors']:,} distinct "
        "colours)",
        f"codebook   K = {report['n_colors']}, {report['color_space']}, J = "
        f"{report['distortion']:.2f} over the pixels fitted",
        f"wrote      {report['output']['path']} ({report['output']['bytes']:,} bytes)",
        "",
        f"{'label':>5}  {'colour':7}  {'palette':24}  name",
    ]
    for entry, colour in zip(report["classes"], report["palette"], strict=True):
        lines.append(f"{entry['label']:>5}  {entry['color']:7}  {colour!s:24}  {entry['name']}")
    print("\n".join(lines))
