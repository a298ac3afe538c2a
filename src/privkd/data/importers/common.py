"""What every importer shares: a progress bar, and errors that name the offending source file.

Importers read layouts they do not control, so every problem is reported against the
source file (and, where it applies, the column or line) with what to do about it, and the
output file is written atomically by :func:`~privkd.data.h5format.write_dataset` or
:func:`~privkd.data.h5format.write_streamed_dataset`, so a failed import leaves nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from pathlib import Path
from typing import TypeVar

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from privkd.errors import DatasetError

T = TypeVar("T")


def progress(items: Iterable[T], description: str, *, total: int | None = None, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (count, bar, time left) when ``enabled``."""
    if not enabled:
        yield from items
        return
    if total is None and isinstance(items, Sized):
        total = len(items)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(escape(description), total=total)  # file names may hold [...]
        for item in items:
            yield item
            bar.advance(task)


def source_error(file: str | Path, problem: str, fix: str, field: str = "/") -> DatasetError:
    """A :class:`DatasetError` about a source file of the layout being imported (not the output)."""
    return DatasetError(file, field, problem, fix)


def require_dir(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a directory, or an error saying which part of the layout is missing."""
    path = Path(path)
    if not path.is_dir():
        raise source_error(path, f"{what} folder not found", fix)
    return path


def require_file(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a file, or an error saying which part of the layout is missing."""
    path = Path(path)
    if not path.is_file():
        raise source_error(path, f"{what} file not found", fix)
    return path
