"""Draw the "choosing K" curve and write its table into docs/choosing-k.md.

Quantizes scikit-image's immunohistochemistry sample at every K from 2 to 64 (RGB, seed 0,
the library's defaults), measures J, PSNR, the formula's bits per pixel and the real
deflated ``.kvq`` file's, and writes

* ``docs/images/k_curve.svg``: PSNR against K (left) and bits per pixel against K (right),
  K on a log2 axis; an SVG drawn by hand (no matplotlib needed);
* the table of selected K values into ``docs/choosing-k.md``: its
  ``<!-- generated: k-curve-table -->`` block, which ``docs/scripts/generate.py`` also
  fills (and ``tests/test_docs_numbers.py`` checks), as do the figures of its prose
  (``generate.py``'s ``k-curve`` generator).

Run from the repository root::

    python docs/scripts/make_k_curve.py            # all of K = 2 .. 64 (about a minute)
    python docs/scripts/make_k_curve.py --svg-only # the figure only (generate.py --all)
    python docs/scripts/make_k_curve.py --check    # fail if the page's table is stale
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "choosing-k.md"
SVG = ROOT / "docs" / "images" / "k_curve.svg"
KS = range(2, 65)
TABLE_KS = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def measure(ks=KS, quantize=None, sizes=None) -> list[dict]:
    """One row per K: J, PSNR, bits per pixel (formula and deflated .kvq).

    ``quantize(k)`` and ``sizes(k)`` may be given by a caller that already holds these
    quantizations (``generate.py`` shares them between its blocks); by default the IHC
    sample is quantized here with ``random_state=0``.
    """
    from napari_kmeans_vq.io import size_report

    if quantize is None:
        from skimage import data

        from napari_kmeans_vq import quantize as _quantize

        image = data.immunohistochemistry()

        def quantize(k):
            return _quantize(image, k, random_state=0)

    rows = []
    for k in ks:
        q = quantize(k)
        n = q.report.n_pixels
        files = (sizes(k) if sizes is not None else size_report(q))["files"]
        rows.append(
            {
                "K": q.n_colors,
                "b": q.report.bits_per_index,
                "J": q.distortion,
                "psnr": q.psnr,
                "formula_bpp": q.report.total_bits / n,
                "kvq_bpp": 8 * files["kvq_deflated"] / n,
            }
        )
        print(f"K = {k:2d}: J = {q.distortion:8.1f}, PSNR = {q.psnr:5.2f} dB", file=sys.stderr)
    return rows


# ---------------------------------------------------------------------------------------------
# the SVG


def _panel(x0, y0, w, h, rows, series, y_label, y_ticks, title) -> list[str]:
    """One plot: K (log2) across, the series up; axes, ticks, grid, labels, legend."""
    lo, hi = y_ticks[0], y_ticks[-1]

    def px(k):
        return x0 + w * (math.log2(k) - 1) / (math.log2(64) - 1)

    def py(v):
        return y0 + h - h * (v - lo) / (hi - lo)

    out = [f'<text x="{x0 + w / 2}" y="{y0 - 14}" class="title">{title}</text>']
    for k in (2, 4, 8, 16, 32, 64):
        x = px(k)
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + h}" class="grid"/>')
        out.append(
            f'<line x1="{x:.1f}" y1="{y0 + h}" x2="{x:.1f}" y2="{y0 + h + 5}" class="axis"/>'
        )
        out.append(f'<text x="{x:.1f}" y="{y0 + h + 19}" class="tick">{k}</text>')
    for v in y_ticks:
        y = py(v)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<line x1="{x0 - 5}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" class="axis"/>')
        out.append(f'<text x="{x0 - 8}" y="{y + 4:.1f}" class="ytick">{v:g}</text>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" class="frame"/>')
    out.append(
        f'<text x="{x0 + w / 2}" y="{y0 + h + 40}" class="label">K (colours, log scale)</text>'
    )
    cx, cy = x0 - 44, y0 + h / 2
    out.append(
        f'<text x="{cx}" y="{cy}" class="label" transform="rotate(-90 {cx} {cy})">{y_label}</text>'
    )
    for i, (key, colour, name, dash) in enumerate(series):
        points = " ".join(f"{px(r['K']):.1f},{py(r[key]):.1f}" for r in rows)
        style = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{points}" stroke="{colour}" class="line"{style}/>')
        for r in rows:
            if r["K"] in (2, 4, 8, 16, 32, 64):
                out.append(
                    f'<circle cx="{px(r["K"]):.1f}" cy="{py(r[key]):.1f}" r="3" fill="{colour}"/>'
                )
        ly = y0 + 16 + 18 * i
        lx = x0 + 12 if key != "psnr" else x0 + w - 150
        out.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" stroke="{colour}" '
            f'class="line"{style}/>'
        )
        out.append(f'<text x="{lx + 28}" y="{ly}" class="legend">{name}</text>')
    return out


def svg(rows: list[dict]) -> str:
    width, height = 900, 380
    psnr_hi = 5 * math.ceil(max(r["psnr"] for r in rows) / 5)
    psnr_lo = 5 * math.floor(min(r["psnr"] for r in rows) / 5)
    bpp_hi = math.ceil(max(max(r["formula_bpp"], r["kvq_bpp"]) for r in rows))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        "<style>"
        ".grid{stroke:#e4e4e4;stroke-width:1}.axis{stroke:#333;stroke-width:1}"
        ".frame{fill:none;stroke:#333;stroke-width:1}.line{fill:none;stroke-width:2}"
        ".tick{font-size:12px;text-anchor:middle;fill:#333}"
        ".ytick{font-size:12px;text-anchor:end;fill:#333}"
        ".label{font-size:13px;text-anchor:middle;fill:#111}"
        ".title{font-size:14px;font-weight:bold;text-anchor:middle;fill:#111}"
        ".legend{font-size:12px;fill:#111}"
        "</style>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    parts += _panel(
        80, 40, 330, 270, rows, [("psnr", "#1f5fa8", "PSNR", "")], "PSNR (dB)",
        list(range(psnr_lo, psnr_hi + 1, 5)),
        "Quality: PSNR against K (IHC sample, RGB)",
    )  # fmt: skip
    parts += _panel(
        530, 40, 330, 270, rows,
        [("formula_bpp", "#b5532a", "formula: ceil(log2 K) + codebook", ""),
         ("kvq_bpp", "#2a8a4a", "deflated .kvq file", "6 4")],
        "bits per pixel", list(range(0, bpp_hi + 1)),
        "Rate: bits per pixel against K",
    )  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# the table


def table(rows: list[dict]) -> str:
    by_k = {r["K"]: r for r in rows}
    first = by_k[2]
    lines = [
        "| K | b | J | PSNR (dB) | J / J(K=2) | formula bits/pixel | .kvq bits/pixel |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k in TABLE_KS:
        r = by_k[k]
        lines.append(
            f"| {k} | {r['b']} | {r['J']:,.1f} | {r['psnr']:.2f} | {r['J'] / first['J']:.1%} "
            f"| {r['formula_bpp']:.3f} | {r['kvq_bpp']:.3f} |"
        )
    return "\n".join(lines)


def page_with(text: str, body: str) -> str:
    generated = re.search(
        r"<!-- generated: k-curve-table -->.*?<!-- /generated -->", text, re.DOTALL
    )
    if not generated:
        raise SystemExit(f"{PAGE}: no <!-- generated: k-curve-table --> block")
    region = f"<!-- generated: k-curve-table -->\n{body}\n<!-- /generated -->"
    return text[: generated.start()] + region + text[generated.end() :]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    parser.add_argument("--svg-only", action="store_true", help="write the figure only")
    args = parser.parse_args(argv)
    rows = measure()
    if args.svg_only:
        SVG.write_text(svg(rows), encoding="utf-8")
        print(f"wrote {SVG.relative_to(ROOT)}")
        return 0
    page = PAGE.read_text(encoding="utf-8")
    new_page = page_with(page, table(rows))
    new_svg = svg(rows)
    if args.check:
        stale = [p for p, new in ((PAGE, new_page), (SVG, new_svg))
                 if not p.exists() or p.read_text(encoding="utf-8") != new]  # fmt: skip
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)}", file=sys.stderr)
        return 1 if stale else 0
    SVG.write_text(new_svg, encoding="utf-8")
    PAGE.write_text(new_page, encoding="utf-8")
    print(f"wrote {SVG.relative_to(ROOT)} and the table in {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
