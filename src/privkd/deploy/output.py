"""Checking an output file path before the work that produces it.

A path that names a directory, lies under a file or in an unwritable place would otherwise
fail only at the final write, as an ``IsADirectoryError`` or ``FileExistsError``, or be
blamed on the ONNX exporter.
"""

from __future__ import annotations

import os
from pathlib import Path

from privkd.errors import PrivkdError

__all__ = ["check_output_file"]


def check_output_file(path: Path, option: str, example: str) -> Path:
    """``path`` if a file can be written there (missing parent directories are created),
    else a :class:`PrivkdError` naming ``option`` and a path such as ``example``."""
    if path.is_dir():
        raise PrivkdError(f"{path}: {option} names a directory, not a file", f"give a file path, e.g. {option} {path / example}")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise PrivkdError(f"{path}: {option} lies under {existing}, which is a file, not a directory",
                          f"give a path inside a directory, e.g. {option} {existing.parent / example}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PrivkdError(f"{path}: cannot write there ({existing} is not writable)",
                          f"give {option} a path in a directory you can write to")
    return path
