"""Draw the tutorial's pictures from scikit-image's immunohistochemistry slide.

Run from the repository root (no display, no network; about ten seconds)::

    python docs/scripts/make_tutorial_figures.py

It writes ``docs/images/tutorial_*.png``:

* ``tutorial_gallery.png``: a crop of the slide and its reconstructions at K = 2, 3, 6, 16,
  each with its palette and bit count;
* ``tutorial_spatial.png``: the K = 3 segmentation as it comes out of k-means, and three ways
  of making it spatially coherent (smoothing before, a majority filter after, superpixels);
* ``tutorial_rgb_lab.png``: K = 4 clustered in RGB and in CIELAB.

Everything is drawn with Pillow, so matplotlib is not needed. The numbers printed in the
pictures are the ones ``docs/tutorial.md`` computes in its code blocks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage import data, filters, measure, morphology, segmentation

from napari_kmeans_vq import quantize

OUT = Path(__file__).resolve().parents[1] / "images"
CROP = (slice(200, 456), slice(200, 456))  # a gland and the stroma around it
SEED = 0
# Distinct colours for segment maps, so that fragments stand out; clusters are ordered by
# lightness first so that the same colour means "darkest", "next darkest"... in every panel.
SEGMENT_COLORS = np.array(
    [(40, 40, 140), (220, 60, 60), (250, 200, 40), (60, 170, 90), (150, 60, 170), (90, 200, 230)],
    dtype=np.uint8,
)
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)


def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def lightness_order(palette: np.ndarray) -> np.ndarray:
    """Rank of every cluster by the luma of its palette colour (0 = darkest)."""
    luma = palette[:, :3].astype(float) @ np.array([0.299, 0.587, 0.114])
    order = np.argsort(luma, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank


def segment_image(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    return SEGMENT_COLORS[lightness_order(palette)[labels]]


def count_regions(labels: np.ndarray) -> int:
    """Connected regions (4-connectivity) of equal label."""
    return int(measure.label(labels.astype(np.int32) + 1, connectivity=1, background=0).max())


def panel(pixels: np.ndarray, lines: list[str], swatches=None, scale: int = 1) -> Image.Image:
    """An image with caption lines under it and, optionally, a row of colour swatches."""
    img = Image.fromarray(np.ascontiguousarray(pixels))
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    line_h, sw_h = 20, 22 if swatches is not None else 0
    out = Image.new("RGB", (img.width, img.height + 8 + sw_h + line_h * len(lines)), BACKGROUND)
    out.paste(img, (0, 0))
    draw = ImageDraw.Draw(out)
    y = img.height + 6
    if swatches is not None:
        width = img.width / len(swatches)
        for i, (fill, outline) in enumerate(swatches):
            x0, x1 = round(i * width), round((i + 1) * width) - 2
            draw.rectangle([x0, y, x1, y + sw_h - 6], fill=fill, outline=outline, width=3)
        y += sw_h
    for i, text in enumerate(lines):
        draw.text((2, y + i * line_h), text, fill=INK, font=font(15 if i == 0 else 13))
    return out


def row(panels: list[Image.Image], gap: int = 12) -> Image.Image:
    height = max(p.height for p in panels)
    width = sum(p.width for p in panels) + gap * (len(panels) + 1)
    out = Image.new("RGB", (width, height + 2 * gap), BACKGROUND)
    x = gap
    for p in panels:
        out.paste(p, (x, gap))
        x += p.width + gap
    return out


def plain_swatches(palette: np.ndarray) -> list[tuple]:
    return [(tuple(int(v) for v in c[:3]), (160, 160, 160)) for c in palette]


def gallery(image: np.ndarray) -> Image.Image:
    crop = image[CROP]
    panels = [panel(crop, ["original", f"{image.shape[0]} x {image.shape[1]} px, 24 bits/px"])]
    for k in (2, 3, 6, 16):
        q = quantize(image, k, random_state=SEED)
        order = np.argsort(lightness_order(q.palette))
        r = q.report
        panels.append(
            panel(
                q.reconstruction[CROP],
                [
                    f"K = {k}",
                    f"{r.total_bits:,} bits ({100 * r.ratio:.1f}%)",
                    f"PSNR {q.psnr:.1f} dB",
                ],
                swatches=plain_swatches(q.palette[order]),
            )
        )
    return row(panels)


def spatial(image: np.ndarray) -> Image.Image:
    q = quantize(image, 3, random_state=SEED)
    raw = q.labels

    smooth = filters.gaussian(image, sigma=2, channel_axis=-1, preserve_range=True)
    before = q.codebook.encode(np.clip(np.rint(smooth), 0, 255).astype(np.uint8))

    after = filters.rank.majority(raw, morphology.disk(3))

    superpixels = segmentation.slic(image, n_segments=2000, compactness=10, start_label=0)
    counts = np.bincount(superpixels.ravel())
    means = np.stack(
        [np.bincount(superpixels.ravel(), image[..., c].ravel()) / counts for c in range(3)], -1
    )
    slic = q.codebook.encode(np.rint(means).astype(np.uint8)[superpixels])

    panels = []
    for title, labels in [
        ("k-means labels", raw),
        ("smoothed before", before),
        ("majority filter after", after),
        ("SLIC superpixels", slic),
    ]:
        changed = 100 * np.mean(labels != raw)
        lines = [
            title,
            f"{count_regions(labels):,} regions in the slide",
            f"{changed:.1f}% relabelled",
        ]
        panels.append(panel(segment_image(labels, q.palette)[CROP], lines, scale=1))
    return row(panels)


def rgb_lab(image: np.ndarray) -> Image.Image:
    panels = [panel(image[CROP], ["original", "IHC: DAB brown, hematoxylin blue"])]
    for space in ("rgb", "lab"):
        q = quantize(image, 4, random_state=SEED, color_space=space)
        rank = lightness_order(q.palette)
        order = np.argsort(rank)
        swatches = [
            (tuple(int(v) for v in q.palette[i]), tuple(int(v) for v in SEGMENT_COLORS[rank[i]]))
            for i in order
        ]
        lines = [f"K = 4 in {space.upper()}", f"PSNR {q.psnr:.1f} dB (measured in RGB)"]
        panels.append(panel(segment_image(q.labels, q.palette)[CROP], lines, swatches))
    return row(panels)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNG files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    image = data.immunohistochemistry()
    for name, make in [("gallery", gallery), ("spatial", spatial), ("rgb_lab", rgb_lab)]:
        path = args.out / f"tutorial_{name}.png"
        make(image).save(path, optimize=True)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
