"""Builds the two C extensions; everything else is in pyproject.toml.

The extensions are optional: where they cannot be compiled (no C compiler), the install
goes on without them and the package runs its numpy paths instead (see _lloyd_kernel.py
and histogram.py).
"""

import os

from setuptools import Extension, setup

# Two threads share heavy passes (POSIX threads; one thread elsewhere). No fused
# multiply-adds: the C code must round as numpy does (see _ckmeans.c).
flags = ["-pthread", "-ffp-contract=off"] if os.name == "posix" else []


def extension(name: str) -> Extension:
    return Extension(
        f"napari_kmeans_vq.core.{name}",
        [f"src/napari_kmeans_vq/core/{name}.c"],
        depends=["src/napari_kmeans_vq/core/_cbuffer.h"],
        extra_compile_args=flags,
        extra_link_args=flags,
        optional=True,
    )


setup(ext_modules=[extension("_ckmeans"), extension("_ccolors")])
