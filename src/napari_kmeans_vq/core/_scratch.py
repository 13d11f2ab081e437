"""Scratch memory kept between calls, so that the engine's large temporaries do not page
fault.

Fresh memory costs a page fault per 4 KiB page on first touch: about 1.5 microseconds
each on the machines measured (0.5 ms of a 1.3 ms first Lloyd pass over 112k colours).
Buffers given back here are handed out again instead (at most six, of at most 4 MiB
each: 24 MiB kept at most). Lloyd's runs take their per-colour labels and bounds from here.

Only for arrays that nothing keeps once they are given back: views of one share its
memory with the next user.
"""

from __future__ import annotations

import collections
import threading

import numpy as np

_MAX_BUFFERS = 6  # two runs at once, three arrays each
_MAX_BYTES = 4 << 20
# A spare buffer serves requests of at least 1/_SLACK of its size: the coarse stage's
# small runs (several alive at once) took the large buffers that the runs over every
# colour then had to allocate afresh (the first 3-4 calls on the H&E tile faulted
# 200-450 pages each in those runs; now none from the second call on).
_SLACK = 4
_spare: list = []
_lock = threading.Lock()
# Buffers given back. give() only appends here, without the lock: it also runs from
# finalisers, which can run at any allocation, even in a thread that holds the lock.
_returned: collections.deque = collections.deque()


def take(shape, dtype) -> np.ndarray:
    """An uninitialised array, from a spare buffer when one is large enough (and not
    more than _SLACK times too large)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = None
    if 0 < nbytes <= _MAX_BYTES:
        with _lock:
            while _returned:
                _spare.append(_returned.popleft())
            while len(_spare) > _MAX_BUFFERS:
                _spare.pop(min(range(len(_spare)), key=lambda i: _spare[i].nbytes))
            fits = [i for i, b in enumerate(_spare) if nbytes <= b.nbytes <= _SLACK * nbytes]
            if fits:
                buffer = _spare.pop(min(fits, key=lambda i: _spare[i].nbytes))
    if buffer is None:
        buffer = np.empty(max(nbytes, 1), dtype=np.uint8)
    return buffer[:nbytes].view(dtype).reshape(shape)


def give(*arrays: np.ndarray) -> None:
    """Give back arrays from :func:`take`: their memory goes to the next one."""
    for array in arrays:
        buffer = array.base if array.base is not None else array
        if buffer.dtype == np.uint8 and buffer.nbytes <= _MAX_BYTES:
            _returned.append(buffer)
