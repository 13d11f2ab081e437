"""Builds the engine's two Cython extensions; everything else is in pyproject.toml.

The extensions are required: without a C compiler (or without Cython, which the build
backend installs from ``build-system.requires``) the build stops with an error that says
so. Wheels for Linux, macOS and Windows carry them compiled (see docs/building.md).

Flags, by compiler:

* OpenMP: ``-fopenmp`` (gcc, clang on Linux), ``/openmp`` (MSVC), ``-Xpreprocessor
  -fopenmp`` with ``-lomp`` (Apple clang: needs libomp, e.g. ``brew install libomp``).
  If the compiler cannot build an OpenMP program the engine is built without it and runs
  on one thread (``napari_kmeans_vq.core.engine_info()`` says so); ``NKVQ_NO_OPENMP=1``
  asks for that explicitly.
* No fused multiply-add contraction (``-ffp-contract=off``; MSVC's default ``/fp:precise``
  does not contract): every CPU then rounds a distance the same way, and the same image
  gives the same palette and labels everywhere.
"""

import os
import shlex
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError as exc:  # pragma: no cover - the build backend installs Cython
    raise SystemExit(
        "napari-kmeans-vq's engine is written in Cython, which is missing. Build with pip "
        "(it installs Cython from pyproject.toml's build-system.requires) or install "
        "Cython>=3.0 first."
    ) from exc

MODULES = ["_kmeans", "_colors"]
OPENMP_TEST = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
    }
    """
)


def openmp_flags(compiler_type: str) -> tuple[list[str], list[str]]:
    """(compile, link) flags for OpenMP with this compiler."""
    if compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        return ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
    return ["-fopenmp"], ["-fopenmp"]


class BuildEngine(build_ext):
    """build_ext with per-compiler flags, OpenMP when the compiler has it, and a clear
    error when there is no compiler."""

    def build_extensions(self):
        kind = self.compiler.compiler_type
        common = [] if kind == "msvc" else ["-ffp-contract=off"]
        omp_compile, omp_link = openmp_flags(kind)
        use_openmp = os.environ.get("NKVQ_NO_OPENMP", "") in ("", "0") and self._compiles(
            omp_compile, omp_link
        )
        if not use_openmp:
            if os.environ.get("NKVQ_REQUIRE_OPENMP", "") not in ("", "0"):
                raise SystemExit(
                    "napari-kmeans-vq: NKVQ_REQUIRE_OPENMP is set, but the engine would build "
                    "without OpenMP (NKVQ_NO_OPENMP is set, or this compiler cannot build and "
                    "link an OpenMP program; see docs/building.md for the flags)"
                )
            print("napari-kmeans-vq: building the engine WITHOUT OpenMP (one thread)")
            omp_compile, omp_link = [], []
        for ext in self.extensions:
            ext.extra_compile_args = common + omp_compile + ext.extra_compile_args
            ext.extra_link_args = omp_link + ext.extra_link_args
        try:
            super().build_extensions()
        except Exception as exc:
            raise SystemExit(
                f"napari-kmeans-vq: compiling the engine failed ({exc}). It needs a C "
                "compiler (gcc or clang; MSVC Build Tools on Windows) and Python's headers; "
                "or install a prebuilt wheel from PyPI."
            ) from exc

    def _compiles(self, compile_args, link_args) -> bool:
        """Whether a small OpenMP program compiles and links with these flags."""
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "omp_test.c")
            with open(source, "w") as f:
                f.write(OPENMP_TEST)
            try:
                objects = self.compiler.compile(
                    [source], output_dir=tmp, extra_postargs=compile_args
                )
                # (LDFLAGS too: a sanitizer build's CFLAGS need their runtime to link)
                extra = shlex.split(os.environ.get("LDFLAGS", ""))
                self.compiler.link_executable(
                    objects, "omp_test", output_dir=tmp, extra_postargs=link_args + extra
                )
            except Exception:
                return False
        return True


extensions = [
    Extension(f"napari_kmeans_vq.core.{name}", [f"src/napari_kmeans_vq/core/{name}.pyx"])
    for name in MODULES
]

setup(
    ext_modules=cythonize(extensions, language_level=3, quiet=True),
    cmdclass={"build_ext": BuildEngine},
)
