"""What training one row of a split (a cross-validation fold, or the final split of
``--final``) asks of a :class:`~privkd.training.workers.RowTrainer`, whichever split it is.

The run's loop holds one trainer and each worker process a copy. A student distils from its
split's teacher: from this trainer's memory when the same trainer trained it, else from the
weights the teacher's finished row saved (equal; ``tests/test_workers.py``). A row that fails
is recorded beside its results and the others go on; a :class:`DatasetError` (the data's
fault, which every other row would meet too) ends the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from privkd.config.schema import RunConfig
from privkd.data import Fold, MultimodalDataset
from privkd.data.h5format import DatasetInfo
from privkd.errors import DatasetError, is_disk_full
from privkd.methods.base import FoldData
from privkd.models.network import PrivilegedNet
from privkd.training.row import Tracking, load_finished_teacher, row_spec
from privkd.training.run_dir import record_failure
from privkd.training.workers import RowOutcome, RowTask

__all__ = ["SplitTrainer"]


@dataclass
class SplitTrainer(ABC):
    """Trains a task's row on its split, keeping the split's data subsets and the teachers it
    trained while tasks of the same split follow one another."""

    cfg: RunConfig
    info: DatasetInfo
    dataset: MultimodalDataset
    run_dir: Path
    tracking: Tracking = field(default_factory=Tracking)
    _split: tuple[int, FoldData] | None = field(default=None, init=False, repr=False)
    _teachers: dict[str, PrivilegedNet] = field(default_factory=dict, init=False, repr=False)
    """The current split's teachers this trainer trained."""

    primary = True
    """Whether this process writes results (a data-parallel rank other than the first does not)."""

    @abstractmethod
    def split(self, task: RowTask) -> Fold:
        """The split ``task`` trains on."""

    @abstractmethod
    def directory(self, split: Fold, row: str) -> Path:
        """Where ``row`` of ``split`` keeps its results."""

    @abstractmethod
    def fit(self, row: str, split: Fold, data: FoldData, teacher: PrivilegedNet | None,
            directory: Path) -> tuple[dict, PrivilegedNet]:
        """Train, score and save ``row``; its record and trained network."""

    def split_data(self, split: Fold) -> FoldData:
        """The split's training, validation and test subsets."""
        return FoldData(*(self.dataset.subset(idx) for idx in (split.train, split.val, split.test)), self.cfg.training)

    def train(self, task: RowTask) -> RowOutcome:
        split = self.split(task)
        directory = self.directory(split, task.row)
        try:
            data = self._data(split)
            teacher = None
            if task.teacher is not None:
                teacher = self._teachers.get(task.teacher) or load_finished_teacher(
                    self.directory(split, task.teacher), row_spec(self.cfg, task.teacher), self.cfg, self.info)
            record, net = self.fit(task.row, split, data, teacher, directory)
        except DatasetError:
            raise
        except Exception as error:  # one failed row must not lose the others
            if is_disk_full(error):  # every later row would fail too, and recording this failure with them
                raise
            return RowOutcome(failure=record_failure(directory, split, task.row, error, self.primary))
        if task.provides_teacher:
            self._teachers[task.row] = net
        return RowOutcome(record=record)

    def fail(self, task: RowTask, reason: str) -> RowOutcome:
        split = self.split(task)
        return RowOutcome(failure=record_failure(self.directory(split, task.row), split, task.row,
                                                 RuntimeError(reason), self.primary))

    def _data(self, split: Fold) -> FoldData:
        if self._split is None or self._split[0] != split.index:
            self._teachers.clear()
            self._split = (split.index, self.split_data(split))
        return self._split[1]

    def __getstate__(self) -> dict:  # a worker starts with no split data and no teachers
        return {**self.__dict__, "_split": None, "_teachers": {}}
