"""What a results row leaves in a run directory, and the report figures drawn from it.

A run keeps each (fold, row) in ``fold_<i>/<row>/``: ``metrics.json`` (its record), and the
arrays its method chose to record (``similarity.npz``, ``alignment.npz``...). A method
declares the figures its rows can feed (:class:`FigureSpec`, in its registration), and the
report hands each figure the :class:`RowArtifacts` of those rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FigureContext", "FigureSpec", "RowArtifacts", "fold_dirs", "read_npz"]


def fold_dirs(run_dir: Path) -> list[Path]:
    """``fold_<i>`` directories in fold order."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("fold_*")
             if p.is_dir() and (m := re.fullmatch(r"fold_(\d+)", p.name))]
    return [p for _, p in sorted(found)]


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of an ``.npz`` file (never unpickling), or ``None`` when it is absent."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@dataclass
class RowArtifacts:
    """One results row of a run: its directory in every fold that has one, in fold order."""

    row: str
    dirs: list[Path]

    @classmethod
    def of(cls, run_dir: Path, row: str) -> RowArtifacts:
        return cls(row, [fold / row for fold in fold_dirs(run_dir) if (fold / row).is_dir()])

    def records(self) -> list[dict]:
        """Each fold's ``metrics.json`` (unreadable ones skipped: a figure is a nicety)."""
        records = []
        for directory in self.dirs:
            try:
                records.append(json.loads((directory / "metrics.json").read_text()))
            except (OSError, json.JSONDecodeError):
                continue
        return records

    def method(self) -> str | None:
        """The method the row trained, as its records say."""
        return next((record.get("method") for record in self.records()), None)

    def arrays(self, name: str) -> list[dict[str, np.ndarray]]:
        """The arrays file ``name`` of every fold that recorded it."""
        return [arrays for directory in self.dirs if (arrays := read_npz(directory / name)) is not None]


@dataclass(frozen=True)
class FigureContext:
    """What every figure may need besides the rows: the task and the output names."""

    task: str
    class_names: list[str] | None = None
    target_names: list[str] | None = None


@dataclass(frozen=True)
class FigureSpec:
    """A figure a method's rows feed.

    ``draw(rows, context)`` returns a matplotlib figure, or ``None`` when the rows hold
    nothing to draw (the report then lists the figure as not drawn, saying ``absent``). With
    ``per_row`` the figure is drawn once per row (key ``<key>_<row>``, title
    ``<title>: <row>``), else once for all rows of the methods that declare it."""

    key: str
    title: str
    caption: str
    draw: Callable[[Sequence[RowArtifacts], FigureContext], Figure | None]
    absent: str
    per_row: bool = False
