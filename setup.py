"""Builds the one C extension; everything else is in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler), the install goes
on without it and the engine runs its numpy path instead (see _lloyd_kernel.py).
"""

import os

from setuptools import Extension, setup

# Two threads share heavy passes (POSIX threads; one thread elsewhere). No fused
# multiply-adds: the C code must round as numpy does (see _ckmeans.c).
flags = ["-pthread", "-ffp-contract=off"] if os.name == "posix" else []

setup(
    ext_modules=[
        Extension(
            "napari_kmeans_vq._ckmeans",
            ["src/napari_kmeans_vq/_ckmeans.c"],
            extra_compile_args=flags,
            extra_link_args=flags,
            optional=True,
        )
    ]
)
