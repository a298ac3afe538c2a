"""Output paths that would destroy what a command reads are refused before any work.

Every command that writes a file (``data import``, ``predict``, ``export``, ``report``) calls
:func:`refuse_output_onto_inputs` with its output path and the paths it reads. Paths are
compared after :meth:`~pathlib.Path.resolve` (symbolic links followed) and, for files that
exist, by inode (hard links), so ``privkd data import table X.csv X.csv`` no longer replaces the
CSV with HDF5 and then fails reading it back, and ``privkd predict S data.h5 --out data.h5`` no
longer overwrites the data it scores.

An output is refused when it resolves to

- one of the command's input files or folders;
- an existing file inside an input *folder* (an importer's source tree), unless that file is
  an HDF5 file (an earlier output of the same import, which it may replace);
- anything inside a saved student directory (``student.json``) or a run directory
  (``environment.json`` and ``folds.json``), whether given as input or not, except the
  files the command itself keeps there (``report.md`` / ``report.html`` of the reported run).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from privkd.errors import PrivkdError

__all__ = ["refuse_output_onto_inputs", "saved_directory"]

STUDENT_MARKER = "student.json"
"""A directory holding this file is a saved student (:mod:`privkd.deploy.student`)."""
RUN_MARKERS = ("environment.json", "folds.json")
"""A directory holding both is a run directory (:mod:`privkd.training.run_dir`)."""


def _resolved(path: str | Path) -> Path:
    """``path`` made absolute with every symbolic link followed (also when it does not exist)."""
    return Path(path).expanduser().resolve(strict=False)


def _same_file(a: Path, b: Path) -> bool:
    """Same resolved path, or (both existing) the same inode: a hard link."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def saved_directory(path: str | Path) -> tuple[str, Path] | None:
    """``("saved student", dir)`` or ``("run", dir)`` when ``path`` lies in (or is) one, else ``None``.

    ``path`` is resolved first; the nearest enclosing saved directory is returned."""
    resolved = _resolved(path)
    for directory in (resolved, *resolved.parents):
        try:
            if (directory / STUDENT_MARKER).is_file():
                return "saved student", directory
            if all((directory / marker).is_file() for marker in RUN_MARKERS):
                return "run", directory
        except OSError:  # unreadable directory: not one of ours
            continue
    return None


def _is_hdf5(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _usage(argument: str) -> str:
    """How the path is given on the command line: ``--out PATH``, or PATH alone for an argument."""
    return f"{argument} " if argument.startswith("-") else ""


def _other(source: Path, example: str | None) -> str:
    """A file name beside ``source`` that is not ``source``."""
    return example if example and example != source.name else f"out_{source.name}"


def refuse_output_onto_inputs(argument: str, output: str | Path, inputs: Iterable[tuple[str, str | Path | None]] = (),
                              *, own: Iterable[str | Path] = (), example: str | None = None) -> Path:
    """Return ``output`` unchanged, or raise a :class:`PrivkdError` when writing it would
    overwrite what the command reads or a saved student / run directory.

    ``argument`` names the output on the command line (``DST``, ``--out``, ``--onnx``);
    ``inputs`` pairs each input's argument name with its path (``None`` entries are skipped);
    ``own`` lists files the command may replace although they lie in a run directory (the
    report's ``report.md`` and ``report.html``); ``example`` is a file name the fix suggests.
    """
    target = _resolved(output)
    own_files = {_resolved(p) for p in own}
    shown = f"{output}" if target == Path(output) else f"{output} (which resolves to {target})"
    for name, path in inputs:
        if path is None:
            continue
        source = _resolved(path)
        if _same_file(target, source):
            raise PrivkdError(f"{argument} {shown} is the input {name} ({path}): writing it would destroy what "
                              "this command reads",
                              f"give {argument} another path, e.g. {_usage(argument)}{source.parent / _other(source, example)}")
        if source.is_dir() and target.is_relative_to(source) and target.exists() and target not in own_files \
                and saved_directory(source) is None and not _is_hdf5(target):
            raise PrivkdError(f"{argument} {shown} is an existing file inside the input {name} ({path}): writing it "
                              "would replace a file this command reads",
                              f"give {argument} a path outside {source}")
    if target in own_files:
        return Path(output)
    saved = saved_directory(target)
    if saved is not None:
        what, directory = saved
        given = next((name for name, path in inputs if path is not None and _same_file(_resolved(path), directory)), None)
        as_input = f", given as {given}" if given else ""
        raise PrivkdError(f"{argument} {shown} lies inside the {what} directory {directory}{as_input}: privkd never "
                          f"writes into a {what} directory, so that it stays what was saved",
                          f"give {argument} a path outside {directory}")
    return Path(output)
