"""Rate-distortion: K-colour files (.kvq deflated, indexed PNG) against JPEG, bytes and PSNR.

For every image and K in 4, 8, ..., 256 this quantizes the image, stores it both ways and
measures the real bytes on disk; it also encodes the image with Pillow's JPEG at every
quality (1-100, chroma subsampling 4:2:0 and 4:4:4) and, for each K, picks the smallest JPEG
whose PSNR is at least the K-colour PSNR. It prints one markdown table per image and draws
every image's curves into one PNG with Pillow (no matplotlib).

Built-in images (always run, no files needed): scikit-image's immunohistochemistry slide, a
generated flat-colour drawing and a generated segmentation label map. Photographs are passed
by path, for example::

    python benchmarks/rate_distortion.py ../shared/data/he_tile_584x438.png \\
        ../shared/data/cq100/*.png --plot docs/images/rate_distortion.png

PSNR is the project's: ``10 log10(255^2 / MSE)`` with the MSE per channel over R, G and B.
Alpha channels are dropped (the H&E tile's alpha is opaque everywhere).
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFile, ImageFont

from napari_kmeans_vq import quantize
from napari_kmeans_vq.io import save

K_VALUES = (4, 8, 16, 32, 64, 128, 256)
# Optimized Huffman tables need the whole file in Pillow's buffer; the default is too small
# for some image widths ("Suspension not allowed here").
ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, 1 << 24)
SUBSAMPLING = {0: "4:4:4", 2: "4:2:0"}


# -- measuring ---------------------------------------------------------------------------


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass
class JpegPoint:
    quality: int
    subsampling: str
    nbytes: int
    psnr: float


def jpeg_curve(image: np.ndarray) -> list[JpegPoint]:
    """Every quality at both subsamplings: bytes of the file and PSNR of its decoding."""
    pil = Image.fromarray(image)
    points = []
    for sub, sub_name in SUBSAMPLING.items():
        for quality in range(1, 101):
            buf = io.BytesIO()
            pil.save(buf, "JPEG", quality=quality, subsampling=sub, optimize=True)
            decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            points.append(JpegPoint(quality, sub_name, buf.tell(), psnr(image, decoded)))
    return points


def pareto(points: list[JpegPoint]) -> list[JpegPoint]:
    """The JPEG points no other point beats on both bytes and PSNR, by increasing bytes."""
    best, out = -math.inf, []
    for p in sorted(points, key=lambda p: (p.nbytes, -p.psnr)):
        if p.psnr > best:
            out.append(p)
            best = p.psnr
    return out


def smallest_jpeg_at_least(points: list[JpegPoint], target: float) -> JpegPoint | None:
    ok = [p for p in points if p.psnr >= target]
    return min(ok, key=lambda p: p.nbytes) if ok else None


def file_bytes(path: Path, q) -> int:
    """Write a quantization with the project's storage API and measure the file."""
    if path.suffix == ".kvq":
        save(path, q, deflate=True)
    else:
        save(path, q)  # indexed PNG at the bit depth that deflates smallest
    return path.stat().st_size


@dataclass
class Row:
    k: int
    n_colors: int
    psnr: float
    formula_bytes: int
    kvq_bytes: int
    png_bytes: int
    jpeg: JpegPoint | None


@dataclass
class Result:
    name: str
    shape: tuple
    source_bytes: int | None
    rows: list[Row] = field(default_factory=list)
    jpeg_front: list[JpegPoint] = field(default_factory=list)

    @property
    def n_pixels(self) -> int:
        return self.shape[0] * self.shape[1]


def measure(name: str, image: np.ndarray, k_values, source_bytes=None) -> Result:
    res = Result(name, image.shape, source_bytes)
    points = jpeg_curve(image)
    res.jpeg_front = pareto(points)
    seen = set()
    with tempfile.TemporaryDirectory() as tmp:
        for k in k_values:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # fewer colours than K is expected here
                q = quantize(image, k, random_state=0)
            if q.n_colors in seen:
                continue  # the image has fewer colours than K: the same file again
            seen.add(q.n_colors)
            kvq = file_bytes(Path(tmp) / f"k{k}.kvq", q)
            png = file_bytes(Path(tmp) / f"k{k}.png", q)
            res.rows.append(
                Row(
                    k=k,
                    n_colors=q.n_colors,
                    psnr=q.psnr,
                    formula_bytes=math.ceil(q.report.total_bits / 8),
                    kvq_bytes=kvq,
                    png_bytes=png,
                    jpeg=smallest_jpeg_at_least(points, q.psnr),
                )
            )
            print(f"  {name}: K={q.n_colors} done", file=sys.stderr)
    return res


# -- images ------------------------------------------------------------------------------


def flat_drawing(width: int = 768, height: int = 512) -> np.ndarray:
    """A chart-like picture: flat fills, hard edges, eight colours (no antialiasing)."""
    colors = [(250, 250, 245), (30, 30, 30), (214, 39, 40), (31, 119, 180), (44, 160, 44),
              (255, 187, 0), (148, 103, 189), (120, 120, 120)]  # fmt: skip
    img = Image.new("RGB", (width, height), colors[0])
    draw = ImageDraw.Draw(img)
    draw.rectangle([40, 40, width - 40, height - 40], outline=colors[1], width=3)
    heights = [120, 260, 190, 330, 90, 280, 220]
    for i, h in enumerate(heights):
        x = 80 + i * 90
        draw.rectangle([x, height - 60 - h, x + 60, height - 60], fill=colors[2 + i % 5])
    draw.ellipse([560, 70, 700, 210], fill=colors[7], outline=colors[1], width=2)
    for y in range(100, height - 60, 60):
        draw.line([60, y, width - 60, y], fill=colors[7], width=1)
    arr = np.asarray(img)
    # Pillow may blend edge pixels; snap every pixel to its nearest drawing colour.
    pal = np.array(colors, dtype=np.int32)
    idx = np.argmin(((arr[..., None, :].astype(np.int32) - pal) ** 2).sum(-1), axis=-1)
    return pal[idx].astype(np.uint8)


def label_map(image: np.ndarray) -> np.ndarray:
    """A segmentation as users save it: K = 3 colour clusters of the IHC slide, cleaned by a
    majority filter, shown in three distinct colours."""
    from skimage import filters, morphology

    q = quantize(image, 3, random_state=0)
    labels = filters.rank.majority(q.labels, morphology.disk(3))
    colors = np.array([(228, 26, 28), (55, 126, 184), (255, 255, 255)], dtype=np.uint8)
    return colors[labels]


def builtin_images() -> list[tuple[str, np.ndarray, int | None]]:
    from skimage import data

    ihc = data.immunohistochemistry()
    return [
        ("IHC slide (skimage)", ihc, None),
        ("flat-colour drawing", flat_drawing(), None),
        ("segmentation label map", label_map(ihc), None),
    ]


def load(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# -- reporting ---------------------------------------------------------------------------


def fmt_psnr(value: float) -> str:
    return "lossless" if math.isinf(value) else f"{value:.2f}"


def markdown(res: Result) -> str:
    h, w = res.shape[:2]
    raw = res.n_pixels * 3
    src = f", source file {res.source_bytes:,} B" if res.source_bytes else ""
    lines = [
        f"**{res.name}**: {w} x {h} px, raw 24-bit {raw:,} B{src}",
        "",
        "| K | PSNR dB | formula B | .kvq deflated B | indexed PNG B | JPEG q (sub) | JPEG B "
        "| JPEG PSNR | JPEG / best K-colour |",
        "| ---: | ---: | ---: | ---: | ---: | :--- | ---: | ---: | ---: |",
    ]
    for r in res.rows:
        best = min(r.kvq_bytes, r.png_bytes)
        if r.jpeg is None:  # lossless: show the best JPEG can do instead
            top = max(res.jpeg_front, key=lambda p: p.psnr)
            jq = f"{top.quality} ({top.subsampling}), best"
            jb, jp = f"{top.nbytes:,}", f"{top.psnr:.2f}"
            ratio = f"never lossless ({top.nbytes / best:.1f}x the bytes)"
        else:
            jq = f"{r.jpeg.quality} ({r.jpeg.subsampling})"
            jb, jp = f"{r.jpeg.nbytes:,}", f"{r.jpeg.psnr:.2f}"
            ratio = f"{r.jpeg.nbytes / best:.2f}"
        lines.append(
            f"| {r.n_colors} | {fmt_psnr(r.psnr)} | {r.formula_bytes:,} | {r.kvq_bytes:,} "
            f"| {r.png_bytes:,} | {jq} | {jb} | {jp} | {ratio} |"
        )
    return "\n".join(lines)


# -- plotting with Pillow ----------------------------------------------------------------

X_MIN, X_MAX = 0.005, 24.0  # bits per pixel, log scale
Y_MIN, Y_MAX = 15.0, 55.0  # PSNR dB; lossless is drawn above the top
COLORS = {"kvq": (31, 100, 200), "png": (230, 120, 20), "jpeg": (60, 60, 60)}


def _font(size):
    return ImageFont.load_default(size=size)


def draw_panel(res: Result, width=440, height=320) -> Image.Image:
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    left, right, top, bottom = 52, width - 12, 40, height - 42

    def sx(bpp):
        bpp = min(max(bpp, X_MIN), X_MAX)
        t = (math.log10(bpp) - math.log10(X_MIN)) / (math.log10(X_MAX) - math.log10(X_MIN))
        return left + t * (right - left)

    def sy(db):
        db = Y_MAX + 3 if math.isinf(db) else min(max(db, Y_MIN), Y_MAX + 3)
        return bottom - (db - Y_MIN) / (Y_MAX + 3 - Y_MIN) * (bottom - top)

    d.text((left, 4), res.name, fill="black", font=_font(15))
    for bpp in (0.01, 0.03, 0.1, 0.3, 1, 3, 10):
        x = sx(bpp)
        d.line([x, top, x, bottom], fill=(225, 225, 225))
        d.text((x - 10, bottom + 4), f"{bpp:g}", fill="black", font=_font(11))
    for db in range(20, int(Y_MAX) + 1, 10):
        y = sy(db)
        d.line([left, y, right, y], fill=(225, 225, 225))
        d.text((left - 22, y - 6), f"{db}", fill="black", font=_font(11))
    y_inf = sy(math.inf)
    d.line([left, y_inf, right, y_inf], fill=(200, 230, 200))
    d.text((right - 52, y_inf + 2), "lossless", fill=(60, 130, 60), font=_font(11))
    d.rectangle([left, top, right, bottom], outline="black")
    d.text((left + 80, bottom + 20), "bits per pixel on disk (log scale)", fill="black",
           font=_font(12))  # fmt: skip
    d.text((4, top - 18), "PSNR dB", fill="black", font=_font(11))

    n = res.n_pixels
    front = [(sx(p.nbytes * 8 / n), sy(p.psnr)) for p in res.jpeg_front]
    if len(front) > 1:
        d.line(front, fill=COLORS["jpeg"], width=2)
    for key, attr, shape in (("png", "png_bytes", "square"), ("kvq", "kvq_bytes", "circle")):
        pts = [(sx(getattr(r, attr) * 8 / n), sy(r.psnr)) for r in res.rows]
        d.line(pts, fill=COLORS[key], width=1)
        for x, y in pts:
            box = [x - 4, y - 4, x + 4, y + 4]
            if shape == "circle":
                d.ellipse(box, fill=COLORS[key])
            else:
                d.rectangle(box, outline=COLORS[key], width=2)
    return img


def legend(width: int) -> Image.Image:
    img = Image.new("RGB", (width, 30), "white")
    d = ImageDraw.Draw(img)
    x = 20
    items = [("kvq", ".kvq deflated (K = 4 ... 256)"), ("png", "indexed PNG (same K)"),
             ("jpeg", "Pillow JPEG, best of all qualities and subsamplings")]  # fmt: skip
    for key, text in items:
        if key == "jpeg":
            d.line([x, 15, x + 24, 15], fill=COLORS[key], width=2)
        elif key == "kvq":
            d.ellipse([x + 8, 11, x + 16, 19], fill=COLORS[key])
        else:
            d.rectangle([x + 8, 11, x + 16, 19], outline=COLORS[key], width=2)
        d.text((x + 30, 8), text, fill="black", font=_font(12))
        x += 50 + int(d.textlength(text, font=_font(12)))
    return img


def plot(results: list[Result], path: Path, columns: int = 3) -> None:
    panels = [draw_panel(r) for r in results]
    pw, ph = panels[0].size
    rows = math.ceil(len(panels) / columns)
    out = Image.new("RGB", (pw * columns, ph * rows + 30), "white")
    out.paste(legend(pw * columns), (0, 0))
    for i, p in enumerate(panels):
        out.paste(p, ((i % columns) * pw, 30 + (i // columns) * ph))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("images", nargs="*", type=Path, help="more images (PNG, JPEG...)")
    parser.add_argument("--k", default=",".join(map(str, K_VALUES)), help="K values, comma list")
    parser.add_argument("--no-builtin", action="store_true", help="skip the built-in images")
    parser.add_argument("--plot", type=Path, help="write the curves to this PNG")
    args = parser.parse_args(argv)
    k_values = [int(k) for k in args.k.split(",")]

    todo = [] if args.no_builtin else builtin_images()
    for path in args.images:
        todo.append((path.name, load(path), path.stat().st_size))
    results = []
    for name, image, source_bytes in todo:
        print(f"measuring {name} ...", file=sys.stderr)
        results.append(measure(name, image, k_values, source_bytes))
        print(markdown(results[-1]) + "\n", flush=True)
    if args.plot and results:
        plot(results, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
