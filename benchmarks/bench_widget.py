"""How long the widget takes from Run to layers on screen, and how long napari freezes meanwhile.

Run under a display (a virtual one is fine)::

    xvfb-run -a python benchmarks/bench_widget.py [--size 2048] [--k 16] [--repeats 3] [--wait 0.2]

A QTimer ticks every 5 ms on napari's event loop; the longest gap between ticks while a run
is in progress is the longest time napari could not respond (the target is under 100 ms).
"Run to layers" ends when the output layers are in the viewer and shown; "run to sizes" when
the real file sizes (a .kvq and an indexed PNG encoded in memory, after the layers) are in
the report; "run to drawn" when the canvas has then finished drawing them. "add/update" is
the main-thread time spent adding or updating layers (the only part of a run on napari's
thread; one layer per event-loop turn), "longest step" the longest of those. "full GC" is
time spent in Python's full garbage collections during the run (the widget keeps the
objects that existed at Run out of them while it runs). The first run adds the
layers; later runs update the same layers in place. ``--wait`` is how long the user looks
at the dock before the first Run: the widget warms up in the background meanwhile (imports
and caches of a session's first run), and the longest pause of that wait is printed too.
"""

from __future__ import annotations

import argparse
import gc
import platform
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="image height and width")
    parser.add_argument("--k", type=int, default=16, help="K, the number of colours")
    parser.add_argument("--repeats", type=int, default=3, help="runs to time")
    parser.add_argument(
        "--wait", type=float, default=0.2, help="seconds from opening the dock to the first Run"
    )
    args = parser.parse_args()

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_kmeans_vq.napari.sample_data import stain_patches

    app = QApplication.instance() or napari.qt.get_qapp()
    viewer = napari.Viewer(show=True)
    image = stain_patches(args.size, seed=1)
    viewer.add_image(image, name="bench", rgb=True)
    settle = time.perf_counter() + 0.5  # the viewer's first paints, before the dock opens
    while time.perf_counter() < settle:
        app.processEvents()
        time.sleep(0.001)
    _, widget = viewer.window.add_plugin_dock_widget(
        "napari-kmeans-vq", "K-Means colour quantization"
    )
    widget.n_colors.value = args.k
    ticks = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    opened = time.perf_counter()
    while time.perf_counter() < opened + args.wait:
        app.processEvents()
        time.sleep(0.001)
    wait_gaps = np.diff([opened, *ticks]) if ticks else np.array([args.wait])

    # Time spent in the main-thread result callback.
    main_thread = []
    original = widget._put

    def timed_apply(*a, **kw):
        t = time.perf_counter()
        original(*a, **kw)
        main_thread.append(time.perf_counter() - t)

    widget._put = timed_apply

    # Canvas draws, to know when the layers are on screen.
    draws = []
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    canvas.events.draw.connect(lambda _event: draws.append(time.perf_counter()))

    # Full (generation 2) garbage collections: with napari's large object graph each one
    # stops the interpreter for a few hundred ms, whoever triggered it.
    gc_pauses = []
    gc_started = []

    def on_gc(phase, info):
        if info["generation"] == 2:
            if phase == "start":
                gc_started.append(time.perf_counter())
            elif gc_started:
                gc_pauses.append((gc_started[-1], time.perf_counter() - gc_started[-1]))

    gc.callbacks.append(on_gc)

    rows = []
    for repeat in range(args.repeats):
        ticks.clear()
        draws.clear()
        n_main = len(main_thread)
        start = time.perf_counter()
        worker = widget.run()
        assert worker is not None
        # The layers go in first; the real file sizes for the report follow.
        while widget.running and not widget._layers_done:
            app.processEvents()
            time.sleep(0.001)
        added = time.perf_counter()
        # Wait for the canvas to draw the new layers.
        deadline = time.perf_counter() + 0.5
        while not [d for d in draws if d >= added] and time.perf_counter() < deadline:
            app.processEvents()
            time.sleep(0.001)
        drawn_at = [d for d in draws if d >= added]
        # Layers added step by step may already be drawn before the last step ends.
        drawn = drawn_at[0] if drawn_at else added
        while widget.running:
            app.processEvents()
            time.sleep(0.001)
        measured = time.perf_counter()
        # Let the loop settle, then measure pauses over the whole run.
        settle = time.perf_counter() + 0.1
        while time.perf_counter() < settle:
            app.processEvents()
            time.sleep(0.001)
        end = max(drawn, measured)
        window = [t for t in ticks if start <= t <= end + 0.05]
        gaps = np.diff([start, *window]) if window else np.array([np.nan])
        engine = widget.last_result and viewer.layers[-1].metadata["napari_kmeans_vq"]["seconds"]
        rows.append(
            {
                "run": "add" if repeat == 0 else "update",
                "to_layers": added - start,
                "to_drawn": drawn - start,
                "to_sizes": measured - start,
                "engine": engine,
                "main": sum(main_thread[n_main:]),
                "longest_step": max(main_thread[n_main:], default=float("nan")),
                "max_pause_ms": 1000 * float(np.max(gaps)),
                "ticks": len(window),
                "gc_ms": 1000 * sum(d for t, d in gc_pauses if start <= t <= end),
            }
        )
    timer.stop()
    gc.callbacks.remove(on_gc)

    print(
        f"napari {napari.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, image {args.size} x {args.size} RGB uint8, K = {args.k}"
    )
    print(
        f"dock open -> first Run {args.wait:.1f} s: longest pause "
        f"{1000 * float(np.max(wait_gaps)):.1f} ms"
    )
    header = (
        f"{'run':<7} {'Run->layers s':>13} {'Run->drawn s':>12} {'Run->sizes s':>12} "
        f"{'engine s':>9} "
        f"{'add/update s':>12} {'longest step ms':>15} {'longest pause ms':>16} "
        f"{'full GC ms':>10} {'ticks':>6}"
    )
    print(header)
    print("-" * len(header))
    rows.sort(key=lambda r: r["run"] != "add")
    for r in rows:
        print(
            f"{r['run']:<7} {r['to_layers']:>13.3f} {r['to_drawn']:>12.3f} "
            f"{r['to_sizes']:>12.3f} {r['engine']:>9.3f} "
            f"{r['main']:>12.3f} {1000 * r['longest_step']:>15.1f} {r['max_pause_ms']:>16.1f} "
            f"{r['gc_ms']:>10.0f} {r['ticks']:>6d}"
        )
    viewer.close()


if __name__ == "__main__":
    main()
