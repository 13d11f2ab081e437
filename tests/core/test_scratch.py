"""Scratch memory reused between calls (_scratch): nothing a caller keeps may share it."""

import collections
import gc
import threading
import warnings

import numpy as np
import pytest

from napari_kmeans_vq import FewColorsWarning, quantize
from napari_kmeans_vq.core import _lloyd_kernel, _scratch


def test_a_buffer_given_back_is_handed_out_again(monkeypatch):
    monkeypatch.setattr(_scratch, "_spare", [])  # (none left by other tests)
    monkeypatch.setattr(_scratch, "_returned", collections.deque())
    first = _scratch.take((1000, 3), np.float64)
    address = first.__array_interface__["data"][0]
    _scratch.give(first)
    del first
    again = _scratch.take((500, 3), np.float64)  # smaller: fits in the same buffer
    assert again.__array_interface__["data"][0] == address
    assert again.shape == (500, 3) and again.dtype == np.float64
    _scratch.give(again)
    huge = _scratch.take(((_scratch._MAX_BYTES // 8) + 1,), np.float64)
    _scratch.give(huge)
    assert all(b.nbytes <= _scratch._MAX_BYTES for b in _scratch._returned)


def test_a_large_buffer_is_kept_for_large_requests(monkeypatch):
    # Small runs alive at once (the coarse stage) must not take the buffers that the runs
    # over every colour need next: a request smaller than a quarter of a buffer gets
    # fresh memory, and the large buffer is still there for the next large request.
    monkeypatch.setattr(_scratch, "_spare", [])
    monkeypatch.setattr(_scratch, "_returned", collections.deque())
    large = _scratch.take(100_000, np.float64)
    address = large.__array_interface__["data"][0]
    _scratch.give(large)
    del large
    small = _scratch.take(100_000 // (_scratch._SLACK + 1), np.float64)
    assert small.__array_interface__["data"][0] != address
    again = _scratch.take(100_000, np.float64)
    assert again.__array_interface__["data"][0] == address
    _scratch.give(small, again)


def test_results_do_not_share_scratch_memory(ihc):
    # A fit borrows its points and runs' arrays; what it returns must stay as it was
    # when later fits reuse that memory.
    few = ihc[:2, :2]  # 4 pixels: fewer colours than K, the codebook is the colours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewColorsWarning)
        q_few = quantize(few, 8)
    q = quantize(ihc, 6)
    kept = [a.copy() for a in (q_few.centroids, q.centroids, q.labels, q.palette)]
    gc.collect()
    for seed in range(3):
        quantize(ihc[::2, ::2], 6, random_state=seed)
        quantize(few, 3, random_state=seed)
    for now, before in zip((q_few.centroids, q.centroids, q.labels, q.palette), kept, strict=True):
        np.testing.assert_array_equal(now, before)


def test_a_run_collected_while_the_scratch_lock_is_held_does_not_deadlock():
    # Cyclic garbage can be collected at any allocation, even in a thread that holds the
    # lock: giving a run's arrays back must not need it.
    if not _lloyd_kernel.available():
        pytest.skip("the C extension was not built")
    x = np.random.default_rng(0).random((100, 3))
    run = _lloyd_kernel.KernelRun(x, np.ones(100), x[:2])
    run.cycle = run
    del run

    def collect_with_the_lock_held():
        with _scratch._lock:
            gc.collect()

    worker = threading.Thread(target=collect_with_the_lock_held, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive()
    assert _scratch.take(100, np.int32).shape == (100,)
