"""What the command line says, in its own terms: library messages with the CLI's flags,
warnings as one-line notices (each once), and the extra to install when one is missing."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import warnings

from .parser import PROG


class CLIError(Exception):
    """A failure to report in one line with exit status 1."""


#: What ``pip install`` needs for streamed inputs and OME-Zarr outputs.
LARGE_EXTRA = 'pip install "napari-kmeans-vq[large]"'

# Library parameters -> the command line's flags (the CLI always ignores an alpha channel).
_TERMS = (
    (re.compile(r"color_space=['\"]?(\w+)['\"]?"), r"--space \1"),
    (re.compile(r"\bcolor_space\b"), "--space"),
    (re.compile(r"n_colors=(\d+)"), r"-k \1"),
    (re.compile(r"\bn_colors\b"), "-k"),
    (re.compile(r"\bstain_vectors\b"), "--stain-vectors"),
    (re.compile(r"\bmin_region\b"), "--min-region"),
    (re.compile(r"\brandom_state\b"), "--seed"),
    (re.compile(r"\bn_init\b"), "--restarts"),
    (re.compile(r"\btarget_psnr=([\d.]+)"), r"--target-psnr \1"),
    (re.compile(r"\btarget_j=([\d.eE+-]+)"), r"--target-j \1"),
    (re.compile(r"\bk_max=(\d+)"), r"--k-max \1"),
    (re.compile(r"\btarget_psnr\b"), "--target-psnr"),
    (re.compile(r"\btarget_j\b"), "--target-j"),
    (re.compile(r"\bk_max\b"), "--k-max"),
    (re.compile(r"\bn_colors_ is set to that number"), "K is that number"),
    (re.compile(r"\(3 channels, or RGBA with alpha='ignore'\)"), "(3 channels, or 4 with alpha)"),
    (re.compile(r"\s*\(an alpha channel kept with alpha='ignore' is not\)"), ""),
    (re.compile(r"alpha='ignore'"), "the alpha channel ignored"),
)


def cli_terms(message: str) -> str:
    """A library message with its parameter names replaced by the CLI's flags."""
    for pattern, replacement in _TERMS:
        message = pattern.sub(replacement, message)
    return message


def notice(message: str) -> None:
    """A one-line note on stderr (``--quiet`` does not silence it)."""
    print(f"{PROG}: note: {' '.join(message.split())}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def warnings_as_notices():
    """Warnings raised while a command runs become one-line notes in the CLI's terms,
    each said once (Python would print its source line, and once per place it is raised)."""
    said: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = cli_terms(str(message).strip())
        if text.startswith("the reconstruction has 4 channels but the palette 3"):
            return  # compress said so when it read the image
        if text not in said:
            said.add(text)
            notice(text)

    with warnings.catch_warnings():  # the filters in force (PYTHONWARNINGS, -W) still apply
        warnings.showwarning = show
        yield


def require_large_extra(what: str) -> None:
    """Fail with the install command when dask or zarr (the ``large`` extra) is missing."""
    missing = [name for name in ("dask", "zarr") if importlib.util.find_spec(name) is None]
    if missing:
        raise CLIError(f"{what} needs {' and '.join(missing)}: {LARGE_EXTRA}")
