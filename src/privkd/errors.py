"""Errors a user can act on.

Every privkd error says *where* the problem is (a file and field, or a config
key), *what* is wrong, and *how to fix it*, because the people running
distillation experiments are rarely the people who wrote the importer or the
config schema. The constructor arguments are kept as attributes (and as
``args``, so the errors survive pickling across DataLoader workers and
processes) so that callers such as the CLI can format them their own way.
"""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = ["ConfigError", "DatasetError", "PrivkdError", "SplitError", "disk_full_error", "is_disk_full"]


def _sentence(text: str) -> str:
    """End ``text`` with a full stop unless it already ends a sentence."""
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


class PrivkdError(Exception):
    """Base of all privkd errors: a problem statement plus an optional fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix

    def _where(self) -> str:
        """Location prefix (file, field, key); empty for location-free errors."""
        return ""

    def __str__(self) -> str:
        where = self._where()
        text = f"{where}: {_sentence(self.problem)}" if where else _sentence(self.problem)
        return f"{text} Fix: {_sentence(self.fix)}" if self.fix else text


class DatasetError(PrivkdError):
    """A dataset file (or the data about to be written to one) is unusable.

    ``field`` is the HDF5 path of the offending object; attributes are written
    ``<object>@<attribute>`` (e.g. ``/@format``), and ``/`` stands for the
    file as a whole (missing, not HDF5, unreadable).
    """

    def __init__(self, file: str | Path, field: str, problem: str, fix: str) -> None:
        Exception.__init__(self, file, field, problem, fix)
        self.file = Path(file)
        self.field = field
        self.problem = problem
        self.fix = fix

    def _where(self) -> str:
        return f"{self.file}: field '{self.field}'"


class ConfigError(PrivkdError):
    """A configuration value is missing, of the wrong type or inconsistent."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        Exception.__init__(self, key, problem, fix)
        self.key = key
        self.problem = problem
        self.fix = fix

    def _where(self) -> str:
        return f"config key '{self.key}'"


class UnknownPartError(ConfigError):
    """A backbone or method name that no registry knows, built-in or plugin
    (:mod:`privkd.plugins`): its fix says how a package provides it, not that a file is damaged."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
"""The errors of a write that found no space left: the disk is full, or the user's quota spent."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write that found no space left (:data:`NO_SPACE`)."""
    return isinstance(error, OSError) and error.errno in NO_SPACE


def disk_full_error(error: OSError, run_dir: Path | None = None) -> PrivkdError:
    """One message for a write that found no space left: which file, and how to go on (with a
    run directory: that its finished (fold, row) results are kept and how to finish it), instead
    of a traceback from wherever the write happened."""
    where = f"writing {error.filename}" if error.filename else "writing"
    fix = "free disk space (or write elsewhere), then run the command again"
    if run_dir is not None:  # a library's temporary file (torch, numpy) is named by its run instead
        if not (error.filename and Path(str(error.filename)).resolve().is_relative_to(Path(run_dir).resolve())):
            where = f"writing the results of {run_dir}"
        fix = (f"free disk space, then finish the run with: privkd run --resume {run_dir} (the finished (fold, row) "
               "results in it are kept)")
    return PrivkdError(f"no space left on the device while {where} ({error.strerror or error})", fix)


class SplitError(PrivkdError, ValueError):
    """Cross-validation folds cannot be formed from the given subjects.

    Also a ``ValueError``, since it is raised for an impossible argument
    combination (too few subjects for the requested folds).
    """
