"""How quickly the napari widget answers: Run to layers, Run to file sizes, and Cancel.

Run under a display (a virtual one is fine)::

    xvfb-run -a python benchmarks/bench_widget.py [--size 2048] [--k 16] [--repeats 3]

On a generated H&E-like RGB image (``stain_patches``) in a shown napari window, the widget
docked, it prints:

- the runs: *Run->layers* ends when the layers are in the viewer and the report shows
  (the widget's main-thread step is done), *Run->sizes* when the real file sizes are in
  the report too (the run is over). *engine* is the engine's own seconds; *main step* the
  widget's one main-thread step (adding the layers, the report), of which *napari
  add/update* is spent in napari adding or updating the two layers; *then busy* how long
  napari's event loop stays busy after the step (napari slicing and drawing the new
  layers); *longest pause* the longest gap of a 5 ms timer on napari's event loop during
  the run (how long napari could not answer). The first run adds the layers;
  later runs update them in place. The first run of a session also pays napari's one-off
  cost of its first Labels layer (numba compiles the direct label colormap, pandas is
  imported for the features table), printed on its own line.
- cancel latency: Cancel is pressed (``widget.cancel()`` on the main thread) as soon as
  the engine reports a stage. *to idle* is when the widget is idle again, with nothing
  more to add; *worker stopped* when the worker thread has ended, i.e. the engine really
  stopped (the size measurement is one library call, so its worker runs it to the end,
  its result thrown away); *stopped in* is the stage the engine raised in. The 4-million-
  colour noise image shows the engine's longest stretch without a progress report (the
  k-means++ seeding, between the histogram and the first Lloyd iteration).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image height and width")
    parser.add_argument("--k", type=int, default=16, help="K, the number of colours")
    parser.add_argument("--repeats", type=int, default=3, help="runs to time")
    parser.add_argument(
        "--markdown", metavar="OUT", help="also write the printout into OUT's bench-widget block"
    )
    args = parser.parse_args()
    printed = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, printed)):
        _run(args)
    if args.markdown:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "scripts"))
        from generate import write_block

        machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical cores"
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
        write_block(
            Path(args.markdown),
            "bench-widget",
            f"`xvfb-run -a python benchmarks/bench_widget.py`, run on {date.today()} "
            f"({machine}; load average {load} at the end), as printed:\n\n"
            f"```text\n{printed.getvalue().rstrip()}\n```",
        )


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self):
        for s in self.streams:
            s.flush()


def _run(args) -> None:

    import napari
    import qtpy
    from napari.layers import Layer
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_kmeans_vq.napari.sample_data import stain_patches

    app = QApplication.instance() or napari.qt.get_qapp()
    viewer = napari.Viewer(show=True)
    image = stain_patches(args.size, seed=1)
    source = viewer.add_image(image, name="stain", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget(
        "napari-kmeans-vq", "K-Means colour quantization"
    )
    widget.image.value = source
    widget.n_colors.value = args.k

    def pump(seconds=0.0, until=None, timeout=120.0):
        """Run napari's event loop for ``seconds``, or until ``until()`` is true."""
        end = time.perf_counter() + (timeout if until else seconds)
        while time.perf_counter() < end and not (until and until()):
            app.processEvents()
            time.sleep(0.001)

    pump(0.5)  # the window's first paints

    # Instruments: the main-thread step that adds the layers, napari's part of it, and
    # napari's layer constructors (the first Labels layer of a session is slow).
    marks: dict = {}
    timed_put, created = [], []
    on_yielded, put, create = widget._on_yielded, widget._put, Layer.create

    def yielded(*a, **kw):
        marks.setdefault("step", time.perf_counter())
        on_yielded(*a, **kw)
        marks.setdefault("layers", time.perf_counter())

    def put_layer(*a, **kw):
        start = time.perf_counter()
        try:
            return put(*a, **kw)
        finally:
            timed_put.append(time.perf_counter() - start)

    def create_layer(data, meta=None, layer_type="image"):
        start = time.perf_counter()
        try:
            return create(data, meta, layer_type)
        finally:
            created.append((layer_type, time.perf_counter() - start))

    widget._on_yielded, widget._put = yielded, put_layer
    Layer.create = create_layer

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()

    runs = []
    for repeat in range(args.repeats):
        marks.clear()
        timed_put.clear()
        created.clear()
        pump(0.3)
        ticks.clear()
        start = time.perf_counter()
        assert widget.run() is not None
        pump(until=lambda: not widget.running)
        end = time.perf_counter()
        window = [start, *[t for t in ticks if start <= t <= end], end]
        after = [t for t in window if t > marks["layers"]]
        runs.append(
            {
                "run": "first (adds)" if repeat == 0 else "again (updates)",
                "layers": marks["layers"] - start,
                "sizes": end - start,
                "engine": widget.last_result and widget._last_q.info["seconds"],
                "step": marks["layers"] - marks["step"],
                "napari": sum(timed_put),
                "redraw": after[0] - marks["layers"] if after else float("nan"),
                "labels_create": sum(s for kind, s in created if kind == "labels"),
                "pause_ms": 1000 * float(np.max(np.diff(window))),
                "status": widget.status.value,
            }
        )
    timer.stop()
    widget._on_yielded, widget._put = on_yielded, put
    Layer.create = create

    # Cancel latency: press Cancel when the engine first reports a stage.
    rng = np.random.default_rng(0)
    noise = viewer.add_image(
        rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8), name="noise"
    )
    noise.visible = False
    cancels = []
    moments = [
        (source, "histogram", 0),
        (source, "fit", 0),
        (source, "encode", 0),
        (source, "sizes", 0),
        (noise, "histogram", 10),  # the histogram is done: the seeding starts
        (noise, "fit", 50),
    ]
    for layer, stage, percent in moments:
        pump(0.3)
        pressed = {}

        def press(run_id, reported, at, stage=stage, percent=percent, pressed=pressed):
            if reported == stage and at >= percent and not pressed and widget.running:
                pressed["run"] = widget._run
                pressed["at"] = time.perf_counter()
                widget.cancel()
                pressed["idle"] = time.perf_counter()

        widget.relay.progressed.connect(press)
        worker = widget.run(layer=layer)
        finished: list[float] = []
        worker.finished.connect(lambda finished=finished: finished.append(time.perf_counter()))
        pump(until=lambda finished=finished: bool(finished) and not widget.running)
        stopped = finished[0]
        widget.relay.progressed.disconnect(press)
        name = "stain" if layer is source else "noise (4M colours)"
        if not pressed:
            cancels.append((name, stage, None, None, "run ended first"))
            continue
        run = pressed["run"]
        where = run.reporter.stopped_in or ("size_report" if stage == "sizes" else "a step")
        cancels.append(
            (
                name,
                f"{stage} {percent}%" if percent else stage,
                1000 * (pressed["idle"] - pressed["at"]),
                1000 * (stopped - pressed["at"]),
                where,
            )
        )

    print(
        f"napari {napari.__version__} ({qtpy.API_NAME}), Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; image {args.size} x {args.size} RGB uint8 "
        f"(stain_patches), K = {args.k}"
    )
    print()
    header = (
        f"{'run':<16} {'Run->layers s':>13} {'Run->sizes s':>12} {'engine s':>9} "
        f"{'main step ms':>12} {'napari add/update ms':>20} {'then busy ms':>12} "
        f"{'longest pause ms':>16}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        print(
            f"{r['run']:<16} {r['layers']:>13.3f} {r['sizes']:>12.3f} {r['engine']:>9.3f} "
            f"{1000 * r['step']:>12.1f} {1000 * r['napari']:>20.1f} "
            f"{1000 * r['redraw']:>12.1f} {r['pause_ms']:>16.1f}"
        )
    print(
        f"napari's first Labels layer of the session (numba-compiled colormap, pandas for "
        f"features): {runs[0]['labels_create']:.3f} s of the first run's napari time; "
        f"{runs[-1]['labels_create']:.3f} s later"
    )
    print(f"last status: {runs[-1]['status']}")
    print()
    header = (
        f"{'image':<19} {'Cancel during':<14} {'to idle ms':>10} {'worker stopped ms':>17}  "
        f"stopped in"
    )
    print(header)
    print("-" * len(header))
    for name, moment, idle, stopped, where in cancels:
        if idle is None:
            print(f"{name:<19} {moment:<14} {'-':>10} {'-':>17}  {where}")
        else:
            print(f"{name:<19} {moment:<14} {idle:>10.1f} {stopped:>17.1f}  {where}")
    viewer.close()


if __name__ == "__main__":
    main()
