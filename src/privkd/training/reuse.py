"""Finished rows of earlier runs taken over when nothing they depend on differs.

A sweep point that changes only PKDOT's ``beta`` would otherwise retrain every fold's
baseline and teacher, whose results cannot change: a row's training reads only the shared
sections (data, folds, model, training), its method's own sections, the seed, and the
network of the row it distils from. :func:`fingerprint` hashes exactly that (the teacher's
fingerprint included), every finished row records it in its ``metrics.json``, and
:func:`take_over` copies a finished (fold, row) of an earlier run with the same fingerprint
into the new run before training starts. The new run then finds it finished, as a resumed
run does, and loads a reused teacher from its saved weights: the results equal retraining
it (``tests/test_reuse.py``), because every row is seeded by itself, not by the rows before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from privkd.config.parse import config_to_dict
from privkd.config.schema import RunConfig
from privkd.training.run_dir import finished_record

__all__ = ["fingerprint", "take_over"]

TRAINING_SECTIONS = ("data", "evaluation", "model", "training")
"""Sections every row's training reads (folds, network, optimiser); a method adds its own
(``MethodSpec.sections``: the teachers' ``teacher``, PKDOT's ``pkdot`` and ``structural``, ...).
The other shared sections (``teacher``, ``study``) reach a row only through its method's."""


NOT_RESULTS = {"training": ("jobs",)}
"""Keys of those sections that cannot change a row's result: how many rows train side by side
(:mod:`privkd.training.workers`; the threads each has do count, and stay in)."""


def fingerprint(row_cfg: RunConfig, method: str, sections: Sequence[str], teacher: str | None) -> str:
    """What a row's result depends on, hashed: ``row_cfg`` is the row's own config (variant
    applied, ``auto`` resolved), ``teacher`` the fingerprint of the row it distils from."""
    values = config_to_dict(row_cfg)
    for section, keys in NOT_RESULTS.items():
        values[section] = {key: value for key, value in values[section].items() if key not in keys}
    depends = {"method": method, "seed": row_cfg.seed, "teacher": teacher,
               **{name: values[name] for name in (*TRAINING_SECTIONS, *sections) if name in values}}
    return hashlib.sha256(json.dumps(depends, sort_keys=True, default=str).encode()).hexdigest()[:20]


def take_over(directory: Path, row_fingerprint: str, sources: Iterable[Path]) -> Path | None:
    """Copy the first finished ``sources`` row directory whose fingerprint is ``row_fingerprint``
    to ``directory`` (which must not be finished); returns the source used, else ``None``.

    The copy is made beside ``directory`` and renamed into place, so an interrupted copy never
    looks finished."""
    for source in sources:
        record = finished_record(source)
        if record is None or record.get("fingerprint") != row_fingerprint:
            continue
        staging = directory.with_name(f".{directory.name}.reused")
        shutil.rmtree(staging, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, staging)
        if directory.exists():  # an unfinished earlier attempt of this row: the copy replaces it
            shutil.rmtree(directory)
        os.replace(staging, directory)
        return source
    return None
