"""A mutation fuzzer for every reader of napari-kmeans-vq and for the command line.

It writes its own seed files (``.kvq`` in each layout, indexed PNGs, an ordinary PNG, palette,
striped and tiled TIFFs, ``.npy``, a zarr store), mutates them, and runs on each case:

- ``napari_kmeans_vq.io.load`` and ``read_indexed_png`` (``.kvq`` and PNG),
- ``napari_kmeans_vq.io.read_image`` (PNG, TIFF, ``.npy``, zarr read whole),
- ``napari_kmeans_vq.io.tiff.read_labels_tiff`` (TIFF),
- ``napari_kmeans_vq.large.open_image`` (TIFF and zarr, opened lazily, one block read),
- the command line's ``info`` and ``decompress`` (``.kvq`` and PNG), in this process and,
  every so often, in a new one (a hang or a crash would show there).

It asserts only what is documented: a reader returns, or raises ``KVQError`` (``ValueError``
for ``large.open_image``); the command line exits 0 or 1 with one line of error, never a
traceback nor an exception type it does not know; no case hangs; and the peak memory traced
during a read stays within 4 times the file's size plus 3 times the arrays it returned (the
image it truly holds) plus 4 MiB.

Mutations: bit flips, byte edits, words set to extreme values (0, 1, 2**31 - 1, 2**64 - 1...),
truncation, insertions, duplicated slices, splices of two seeds; and, aware of each format:
``.kvq`` header fields with the CRC fixed up, PNG chunks with their CRCs fixed up (IHDR sizes,
deep, huge or badly encoded JSON in the text chunk), TIFF tag values and counts, and zarr
metadata values replaced by extremes, wrong types or deep nesting.

Usage (from the repository)::

    python tests/fuzz/fuzz_readers.py --seconds 600 --seed random   # a long run
    python tests/fuzz/fuzz_readers.py --cases 2000 --seed 0         # what CI runs, about

Failing inputs are written to ``--out`` (default ``fuzz-failures/``) with the error. The
exit status is 1 when any case failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import tracemalloc
import zlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

MiB = 2**20
#: Seconds one case may take before it counts as a hang.
CASE_SECONDS = 60
EXTREMES = [0, 1, 2, 3, 7, 8, 15, 16, 127, 128, 255, 256, 32767, 65535, 65536, 2**31 - 1]
EXTREMES += [2**31, 2**32 - 1, 2**32, 2**34, 2**40, 2**53, 2**62, 2**63 - 1, 2**64 - 1]


# ---------------------------------------------------------------------------------------------
# seeds


@dataclass
class Seed:
    name: str
    kind: str  # "kvq", "png", "image", "tiff", "npy", "zarr"
    data: bytes = b""  # the file (empty for a zarr store)
    files: dict = field(default_factory=dict)  # zarr: relative path -> bytes
    offsets: list = field(default_factory=list)  # TIFF: (offset, size) of tag fields


def _quantized(rng: np.random.Generator, k: int, shape=(24, 32, 3), dtype=np.uint8):
    from napari_kmeans_vq import quantize

    image = rng.integers(0, 256, shape, dtype=np.uint8).astype(dtype)
    if dtype == np.uint16:
        image = image * np.uint16(257)
    return quantize(image, k, random_state=0, channel_axis=None if len(shape) == 2 else -1)


def make_seeds() -> list[Seed]:
    """Small valid files of every kind the readers take."""
    from napari_kmeans_vq.io import encode, encode_image
    from napari_kmeans_vq.io.tiff import encode_labels_tiff

    rng = np.random.default_rng(2024)
    seeds = []
    q6 = _quantized(rng, 6)
    q4 = _quantized(rng, 4)
    for name, data in (
        ("kvq-bytes-k6", encode(q6)),  # version 2, byte-aligned, deflated
        ("kvq-packed-k4", encode(q4)),
        ("kvq-raw-k6", encode(q6, deflate=False)),
        ("kvq-named-k6", encode(q6, names=[f"class {c}" for c in "abcdef"])),  # version 3
        ("kvq-k1", encode(np.zeros((5, 7), np.uint8), np.array([[9, 8, 7]], np.uint8))),
        ("kvq-u16-k300", encode(_quantized(rng, 300, (20, 20, 3), np.uint16))),
        (
            "kvq-scalar-f32",
            encode(np.arange(60).reshape(6, 10) % 5, rng.random((5, 1)), scalar=True),
        ),
        ("png-k6", encode(q6, format="png")),
        (
            "png-k4-rgba",
            encode(q4.labels, np.c_[q4.palette, [0, 80, 160, 255]].astype(np.uint8), format="png"),
        ),
        ("png-grey", encode(_quantized(rng, 3, (16, 16)), format="png", scalar=True)),
    ):
        kind = "kvq" if name.startswith("kvq") else "png"
        seeds.append(Seed(name, kind, bytes(data)))
    seeds.append(Seed("image-rgb", "image", encode_image(q6.reconstruction, ".png")))
    try:
        import tifffile
    except ImportError:  # pragma: no cover - the large extra
        tifffile = None
    if tifffile is not None:
        tiffs = {
            "tiff-labels": encode_labels_tiff(q6.labels, q6.palette, names=list("abcdef")),
            "tiff-plain": encode_image(q6.reconstruction, ".tif"),
        }
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, q4.reconstruction, tile=(16, 16), photometric="rgb")
        tiffs["tiff-tiled"] = buffer.getvalue()
        for name, data in tiffs.items():
            seeds.append(Seed(name, "tiff", data, offsets=_tiff_fields(tifffile, data)))
    seeds.append(Seed("npy", "npy", encode_image(q4.reconstruction, ".npy")))
    try:
        import zarr
    except ImportError:  # pragma: no cover
        zarr = None
    if zarr is not None:
        with tempfile.TemporaryDirectory() as folder:
            store = Path(folder) / "s.zarr"
            z = zarr.create_array(str(store), shape=(24, 32, 3), chunks=(16, 16, 3), dtype="u1")
            z[:] = q6.reconstruction
            files = {
                str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()
            }
        seeds.append(Seed("zarr", "zarr", files=files))
    return seeds


def _tiff_fields(tifffile, data: bytes) -> list[tuple[int, int]]:
    """Offsets and sizes of the tag count and value fields of a TIFF's first page."""
    out = []
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        for tag in tif.pages.first.tags.values():
            size = {1: 1, 2: 1, 3: 2, 4: 4, 5: 4, 16: 8}.get(tag.dtype, 4)
            out.append((tag.offset + 4, 4 if not tif.is_bigtiff else 8))  # count
            out.append((tag.valueoffset, size))
    return out


# ---------------------------------------------------------------------------------------------
# mutations


def _extreme(rnd: random.Random, size: int) -> bytes:
    value = rnd.choice(EXTREMES) & ((1 << (8 * size)) - 1)
    return value.to_bytes(size, rnd.choice(["little", "big"]))


def mutate_bytes(rnd: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """One to three generic mutations."""
    blob = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        if not blob:
            blob += rnd.randbytes(rnd.randint(1, 64))
            continue
        op = rnd.randrange(8)
        at = rnd.randrange(len(blob))
        if op == 0:  # flip bits
            for _ in range(rnd.randint(1, 8)):
                i = rnd.randrange(len(blob))
                blob[i] ^= 1 << rnd.randrange(8)
        elif op == 1:  # random bytes
            for _ in range(rnd.randint(1, 4)):
                blob[rnd.randrange(len(blob))] = rnd.randrange(256)
        elif op == 2:  # a word set to an extreme value
            size = rnd.choice([1, 2, 4, 8])
            blob[at : at + size] = _extreme(rnd, size)
        elif op == 3:  # truncate
            del blob[at:]
        elif op == 4:  # insert
            blob[at:at] = rnd.randbytes(rnd.randint(1, 32))
        elif op == 5:  # duplicate a slice
            end = min(len(blob), at + rnd.randint(1, 256))
            blob[at:at] = blob[at:end] * rnd.randint(1, 8)
        elif op == 6:  # splice with another seed of the kind
            other = rnd.choice(others) if others else bytes(blob)
            cut = rnd.randrange(len(other) + 1)
            blob = blob[:at] + bytearray(other[cut:])
        else:  # delete a slice
            del blob[at : at + rnd.randint(1, 64)]
    return bytes(blob)


_KVQ_FIELDS = [(8, 2), (10, 2), (12, 1), (13, 1), (14, 1), (15, 1), (16, 2), (18, 2)]
_KVQ_FIELDS += [(20, 4), (24, 8), (36, 4), (40, 8), (48, 8)]


def kvq_resign(blob: bytes) -> bytes:
    if len(blob) < 40:
        return blob
    crc = zlib.crc32(blob[36:], zlib.crc32(blob[:32]))
    return blob[:32] + struct.pack("<I", crc) + blob[36:]


def _kvq_meta_span(data: bytes) -> tuple[int, int] | None:
    """Where a version 3 file's metadata section is (start, length), if it has one."""
    if len(data) < 40 or not struct.unpack_from("<H", data, 10)[0] & 8:
        return None
    ndim, code, channels, k = data[12], data[13], *struct.unpack_from("<HxxI", data, 16)
    size = {1: 1, 2: 2, 3: 4, 4: 8, 5: 1, 6: 2, 7: 4, 8: 8, 9: 2, 10: 4, 11: 8}[code]
    return 40 + 8 * ndim + k * channels * size, struct.unpack_from("<I", data, 36)[0]


def mutate_kvq(rnd: random.Random, data: bytes) -> bytes:
    span = _kvq_meta_span(data)
    if span is not None and rnd.random() < 0.3:  # hostile metadata, sizes kept consistent
        start, length = span
        text = _hostile_json(rnd) if rnd.random() < 0.7 else b'{"names": [1, 2]}'
        data = data[:start] + text + data[start + length :]
        data = data[:36] + struct.pack("<I", len(text)) + data[40:]
    blob = bytearray(data)
    for _ in range(rnd.randint(1, 2)):
        offset, size = rnd.choice(_KVQ_FIELDS)
        if offset + size <= len(blob):
            blob[offset : offset + size] = (
                _extreme(rnd, size)[::-1]
                if rnd.random() < 0.1
                else ((rnd.choice(EXTREMES) & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
            )
    if rnd.random() < 0.3 and len(blob) > 60:  # damage the payload too
        i = rnd.randrange(56, len(blob))
        blob[i] ^= 1 << rnd.randrange(8)
    return kvq_resign(bytes(blob)) if rnd.random() < 0.8 else bytes(blob)


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, length, type) of each chunk of a well-formed PNG."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append((pos, length, data[pos + 4 : pos + 8]))
        pos += 12 + length
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _hostile_json(rnd: random.Random) -> bytes:
    choice = rnd.randrange(7)
    depth = rnd.choice([33, 1000, 100_000])
    if choice == 0:
        return b"[" * depth + b"]" * depth * rnd.randint(0, 1)
    if choice == 1:
        return b'{"a":' * depth + b"1" + b"}" * depth
    if choice == 2:
        return json.dumps({"channels": 3, "n_colors": rnd.choice(EXTREMES)}).encode()
    if choice == 3:
        return b'{"channels": "' + b"x" * rnd.choice([10, 10**5]) + b'"}'
    if choice == 4:
        return rnd.randbytes(rnd.randint(0, 64))  # not JSON, not UTF-8
    if choice == 5:
        return b'{"n_colors": ' + b"9" * rnd.choice([20, 5000]) + b"}"
    return json.dumps({"channels": rnd.choice([0, 1, 2, 3, 4, [3], None, 1e308])}).encode()


def mutate_png(rnd: random.Random, data: bytes) -> bytes:
    chunks = _png_chunks(data)
    if not chunks:
        return data
    pos, length, kind = rnd.choice(chunks)
    body = bytearray(data[pos + 8 : pos + 8 + length])
    op = rnd.randrange(4)
    if kind == b"tEXt" and op < 2:
        body = bytearray(b"napari-kmeans-vq\0" + _hostile_json(rnd))
    elif kind == b"IHDR" and op < 3:
        field_at = rnd.choice([0, 4, 8, 9, 10, 11, 12])
        size = 4 if field_at < 8 else 1
        body[field_at : field_at + size] = (rnd.choice(EXTREMES) & ((1 << 8 * size) - 1)).to_bytes(
            size, "big"
        )
    elif body:
        body = bytearray(mutate_bytes(rnd, bytes(body), []))
    new = _chunk(kind, bytes(body))
    if rnd.random() < 0.1:  # a wrong length field, CRC kept
        new = struct.pack(">I", rnd.choice(EXTREMES) & 0xFFFFFFFF) + new[4:]
    return data[:pos] + new + data[pos + 12 + length :]


def mutate_tiff(rnd: random.Random, seed: Seed) -> bytes:
    blob = bytearray(seed.data)
    for _ in range(rnd.randint(1, 3)):
        offset, size = rnd.choice(seed.offsets)
        if offset + size <= len(blob):
            blob[offset : offset + size] = (
                rnd.choice(EXTREMES) & ((1 << (8 * size)) - 1)
            ).to_bytes(size, "little" if blob[:2] == b"II" else "big")
    if rnd.random() < 0.3:
        blob = bytearray(mutate_bytes(rnd, bytes(blob), []))
    return bytes(blob)


def _replace_somewhere(rnd: random.Random, node, replacement):
    """``node`` with one value somewhere inside replaced."""
    if isinstance(node, dict) and node:
        key = rnd.choice(list(node))
        if rnd.random() < 0.4:
            return {**node, key: replacement}
        return {**node, key: _replace_somewhere(rnd, node[key], replacement)}
    if isinstance(node, list) and node:
        i = rnd.randrange(len(node))
        out = list(node)
        out[i] = (
            replacement if rnd.random() < 0.4 else _replace_somewhere(rnd, node[i], replacement)
        )
        return out
    return replacement


DEEP = "<deeply nested list>"


def mutate_zarr(rnd: random.Random, seed: Seed) -> dict:
    files = dict(seed.files)
    metas = [
        name for name in files if os.path.basename(name) in ("zarr.json", ".zarray", ".zattrs")
    ]
    chunks = [name for name in files if name not in metas]
    if metas and rnd.random() < 0.75:
        name = rnd.choice(metas)
        if rnd.random() < 0.6:
            parsed = json.loads(files[name])
            replacement = rnd.choice(
                [rnd.choice(EXTREMES), -rnd.choice(EXTREMES), "x" * 100, None, [], {}, 1e308, DEEP]
            )
            text = json.dumps(_replace_somewhere(rnd, parsed, replacement))
            depth = rnd.choice([5, 40, 3000])
            text = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
            files[name] = text.encode()
        else:
            files[name] = mutate_bytes(rnd, files[name], [])
    elif chunks:
        name = rnd.choice(chunks)
        files[name] = mutate_bytes(rnd, files[name], [])
    return files


def mutate(rnd: random.Random, seed: Seed, seeds: list[Seed]) -> Seed:
    others = [s.data for s in seeds if s.kind == seed.kind and s is not seed]
    if seed.kind == "zarr":
        return Seed(seed.name, "zarr", files=mutate_zarr(rnd, seed))
    roll = rnd.random()
    if seed.kind == "kvq" and roll < 0.5:
        data = mutate_kvq(rnd, seed.data)
    elif seed.kind in ("png", "image") and roll < 0.5:
        data = mutate_png(rnd, seed.data)
    elif seed.kind == "tiff" and roll < 0.5:
        data = mutate_tiff(rnd, seed)
    else:
        data = mutate_bytes(rnd, seed.data, others)
    return Seed(seed.name, seed.kind, data)


# ---------------------------------------------------------------------------------------------
# targets


class Failure(Exception):
    """A case broke a documented promise."""


def _nbytes(result) -> int:
    """Bytes of the arrays a reader returned: the image it truly holds."""
    if result is None:
        return 0
    if isinstance(result, np.ndarray):
        return 0 if isinstance(result, np.memmap) else int(result.nbytes)
    if isinstance(result, list | tuple):
        return sum(_nbytes(r) for r in result)
    labels = getattr(result, "labels", None)
    if labels is not None:
        return _nbytes(labels) + _nbytes(getattr(result, "palette", None))
    return 0


def _open_lazily(path):
    from napari_kmeans_vq.large import open_image

    open_image(path)  # reads metadata and one chunk, nothing else
    return None


def targets_for(kind: str):
    """(name, function(path), the errors documented for it) for a kind of input."""
    from napari_kmeans_vq.io import KVQError, load, read_image
    from napari_kmeans_vq.io.png import read_indexed_png

    out = []
    if kind in ("kvq", "png"):
        out.append(("io.load", load, (KVQError,)))
    if kind == "png":
        out.append(("io.read_indexed_png", read_indexed_png, (KVQError,)))
    if kind in ("png", "image", "tiff", "npy", "zarr"):
        out.append(("io.read_image", read_image, (KVQError,)))
    if kind == "tiff":
        from napari_kmeans_vq.io.tiff import read_labels_tiff

        out.append(("io.tiff.read_labels_tiff", read_labels_tiff, (KVQError,)))
    if kind in ("tiff", "zarr"):
        out.append(("large.open_image", _open_lazily, (ValueError,)))
    return out


class Hang(BaseException):
    """A case took too long. A BaseException, so that no reader's ``except Exception``
    can turn it into a refusal."""


@contextlib.contextmanager
def _deadline(seconds: int):
    """Raise :class:`Hang` in this (main) thread after ``seconds``."""
    if not hasattr(signal, "SIGALRM"):  # pragma: no cover - Windows
        yield
        return

    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_reader(function, path: Path, *, allowed, size: int) -> str:
    """Run one reader; 'ok' or 'refused', or raise Failure."""
    tracemalloc.reset_peak()
    before, _ = tracemalloc.get_traced_memory()
    try:
        with _deadline(CASE_SECONDS):
            result = function(path)
    except allowed:
        outcome, result = "refused", None
    except (Exception, Hang) as exc:
        raise Failure(f"undocumented {type(exc).__name__}: {exc}") from exc
    else:
        outcome = "ok"
    _, peak = tracemalloc.get_traced_memory()
    extra = peak - before
    bound = 4 * size + 3 * _nbytes(result) + 4 * MiB
    del result
    if extra > bound:
        raise Failure(f"peak {extra:,} bytes over the bound {bound:,} for a {size:,}-byte file")
    return outcome


def run_cli(command: list[str], after: list[str] | tuple = (), *, path: Path) -> str:
    """The command line in this process: exit 0, or 1 with one documented line."""
    from napari_kmeans_vq.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            _deadline(CASE_SECONDS),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            status = main([*command, str(path), *after, "-q"])
    except Hang as exc:
        raise Failure(str(exc)) from exc
    return _check_cli(status, err.getvalue())


def run_cli_process(command: list[str], path: Path) -> str:
    """The command line as users run it, in a new Python (a crash or hang shows here)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "napari_kmeans_vq.cli", *command, str(path), "-q"],
            capture_output=True,
            text=True,
            timeout=CASE_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise Failure(f"the command line did not answer within {CASE_SECONDS} s") from exc
    return _check_cli(done.returncode, done.stderr)


_KNOWN_TYPES = ("RecursionError", "MemoryError", "KeyError", "IndexError", "AttributeError")


def _check_cli(status: int, stderr: str) -> str:
    if status == 0:
        return "ok"
    lines = [line for line in stderr.splitlines() if line.strip()]
    if status != 1 or len(lines) != 1 or "Traceback" in stderr:
        raise Failure(f"exit status {status}, stderr:\n{stderr}")
    message = lines[0].removeprefix("napari-kmeans-vq: error: ")
    if message.split(":", 1)[0] in _KNOWN_TYPES or message.startswith(("Runtime", "Overflow")):
        raise Failure(f"an unexpected exception reached the command line: {lines[0]}")
    return "refused"


# ---------------------------------------------------------------------------------------------
# the loop


@dataclass
class Stats:
    cases: int = 0
    runs: dict = field(default_factory=dict)  # target -> {"ok": n, "refused": n}
    failures: list = field(default_factory=list)

    def count(self, target: str, outcome: str) -> None:
        self.runs.setdefault(target, {"ok": 0, "refused": 0})[outcome] += 1

    def summary(self) -> str:
        total = sum(sum(v.values()) for v in self.runs.values())
        lines = [f"{self.cases:,} mutated files, {total:,} reader runs"]
        for target, counts in sorted(self.runs.items()):
            lines.append(
                f"  {target:28} {counts['ok'] + counts['refused']:6,} runs: "
                f"{counts['ok']:6,} read, {counts['refused']:6,} refused"
            )
        lines.append(f"{len(self.failures)} failures")
        return "\n".join(lines)


def _write_case(seed: Seed, folder: Path, index: int) -> Path:
    suffix = {"kvq": ".kvq", "png": ".png", "image": ".png", "tiff": ".tif", "npy": ".npy"}
    if seed.kind == "zarr":
        path = folder / f"case{index}.zarr"
        for name, data in seed.files.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return path
    path = folder / f"case{index}{suffix[seed.kind]}"
    path.write_bytes(seed.data)
    return path


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def fuzz(
    *,
    cases: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    cli: bool = True,
    process_every: int = 50,
    out: Path | None = None,
    log=print,
) -> Stats:
    """Run the fuzzer for ``cases`` cases or ``seconds`` seconds (whichever ends first).

    ``seed`` fixes the cases (the same seed, the same files); ``cli`` runs ``info`` and
    ``decompress`` on ``.kvq`` and PNG cases, in a new process every ``process_every``-th
    such case (0: never). Failures are saved to ``out`` when given.
    """
    import logging

    if cases is None and seconds is None:
        raise ValueError("give cases or seconds")
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    rnd = random.Random(seed)
    seeds = make_seeds()
    stats = Stats()
    start = time.monotonic()
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    cli_cases = 0
    try:
        with tempfile.TemporaryDirectory(prefix="kvq-fuzz-") as scratch:
            folder = Path(scratch)
            while (cases is None or stats.cases < cases) and (
                seconds is None or time.monotonic() - start < seconds
            ):
                original = seeds[stats.cases % len(seeds)]
                case = mutate(rnd, original, seeds)
                path = _write_case(case, folder, stats.cases)
                stats.cases += 1
                size = _size(path)
                runs = [
                    (name, partial(run_reader, function, allowed=allowed, size=size))
                    for name, function, allowed in targets_for(case.kind)
                ]
                if cli and case.kind in ("kvq", "png"):
                    cli_cases += 1
                    decoded = str(folder / f"out{stats.cases}.npy")
                    runs.append(("cli info", partial(run_cli, ["info"])))
                    runs.append(
                        ("cli decompress", partial(run_cli, ["decompress"], ["-o", decoded]))
                    )
                    if process_every and cli_cases % process_every == 1:
                        runs.append(("cli info (process)", partial(run_cli_process, ["info"])))
                for name, run in runs:
                    try:
                        stats.count(name, run(path=path))
                    except Failure as exc:
                        stats.failures.append((name, original.name, str(exc)))
                        _save_failure(out, stats, name, original, path, exc, log)
                for leftover in folder.iterdir():
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink()
    finally:
        if started_tracing:
            tracemalloc.stop()
    return stats


def _save_failure(out, stats, target, original, path, exc, log) -> None:
    log(f"FAILURE {target} on a mutated {original.name}: {exc}")
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    name = f"{len(stats.failures):04d}-{original.name}-{target.replace(' ', '-')}"
    destination = out / (name + (path.suffix if path.is_file() else ".zarr"))
    if path.is_dir():
        shutil.copytree(path, destination, dirs_exist_ok=True)
    else:
        shutil.copyfile(path, destination)
    cause = exc.__cause__ or exc
    text = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    (out / (name + ".txt")).write_text(f"{target} on {original.name}\n{exc}\n\n{text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, help="stop after this many mutated files")
    parser.add_argument("--seconds", type=float, help="stop after this long (default 60)")
    parser.add_argument(
        "--seed", default="0", help="an integer (the same cases each time) or 'random'"
    )
    parser.add_argument("--out", default="fuzz-failures", help="where failing inputs go")
    parser.add_argument("--no-cli", action="store_true", help="readers only")
    parser.add_argument(
        "--process-every", type=int, default=50, help="run the CLI in a new process every N"
    )
    args = parser.parse_args(argv)
    seed = int.from_bytes(os.urandom(4), "little") if args.seed == "random" else int(args.seed)
    seconds = args.seconds if args.seconds is not None or args.cases is not None else 60.0
    print(f"fuzzing with seed {seed}")
    began = time.monotonic()
    stats = fuzz(
        cases=args.cases,
        seconds=seconds,
        seed=seed,
        cli=not args.no_cli,
        process_every=args.process_every,
        out=Path(args.out),
    )
    print(stats.summary())
    print(f"{time.monotonic() - began:.1f} s, seed {seed}")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
