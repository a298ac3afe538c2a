"""Portable CPU kernels: the same float results on every x86-64 processor with AVX2.

On CPU, oneDNN (PyTorch's convolution library) picks its kernels by the processor's widest
vector instructions, and its AVX-512 and AVX2 convolutions round differently: the same
commit, config and seed train to different weights on an AVX-512 Xeon and on an AVX2-only
EPYC, about a point apart after a full run. :data:`PORTABLE_ENV` pins every library that
dispatches on the instruction set to its AVX2 kernels (oneDNN, ATen's vectorised kernels,
MKL's conditional numerical reproducibility), which every such processor has. The settings
are read when the libraries load, so they must be in the environment before ``torch`` is
imported: ``PRIVKD_PORTABLE=1`` (read when ``privkd`` is imported) or ``privkd --portable``.
Measurements and what was and was not verified: ``docs/portability.md``.
"""

from __future__ import annotations

import os
import sys

__all__ = ["PORTABLE_ENV", "enable_portable_kernels", "portable_kernels"]

PORTABLE_ENV = {"DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def enable_portable_kernels() -> None:
    """Pin the kernels to AVX2 for this process and its children (data-parallel workers).

    Raises ``RuntimeError`` if torch is already imported: its libraries have chosen by then."""
    if "torch" in sys.modules and not portable_kernels():
        raise RuntimeError("portable kernels must be chosen before torch is imported: set PRIVKD_PORTABLE=1 in the "
                           "environment, or pass privkd --portable")
    os.environ.update(PORTABLE_ENV)


def portable_kernels() -> bool:
    """Whether this process runs with :data:`PORTABLE_ENV` (as the run's ``environment.json`` records)."""
    return all(os.environ.get(key) == value for key, value in PORTABLE_ENV.items())
