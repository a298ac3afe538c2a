"""The Python API: :func:`run` is ``privkd run`` for a notebook or a script.

It takes what the command line takes (a YAML file, a shipped config name, ``--set``
overrides, ``--resume``) and also a plain dict or a :class:`~privkd.config.schema.RunConfig`
built in code, plus Lightning loggers and callbacks of the caller's own. Training is imported
inside :func:`run`, so that ``import privkd`` stays quick and light (no torch, no Lightning).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privkd.config.schema import RunConfig

if TYPE_CHECKING:
    import lightning as L
    import pandas as pd
    from lightning.pytorch.loggers import Logger

__all__ = ["Run", "run"]


@dataclass(frozen=True)
class Run:
    """A finished run: its directory (absolute), ``summary.json`` as a dict and the config it ran
    with (as given, ``auto`` values included; ``resolved.json`` in :attr:`dir` says what they became)."""

    dir: Path
    summary: dict
    config: RunConfig

    @property
    def failures(self) -> list[dict]:
        """The (fold, row) pairs that failed, with their errors (empty when all trained)."""
        return self.summary.get("failed", [])

    def metrics(self, row: str) -> dict[str, float]:
        """Mean test score over the folds of each metric of ``row`` (a method or variant name)."""
        rows = self.summary["methods"]
        if row not in rows:
            raise KeyError(f"no row {row!r} in this run; its rows are {list(rows)}")
        return {name: values["mean"] for name, values in rows[row].items()}

    def table(self) -> pd.DataFrame:
        """Mean test scores over the folds, one row per results row, one column per metric."""
        import pandas as pd

        return pd.DataFrame({row: self.metrics(row) for row in self.summary["methods"]}).T


def _config(config: str | Path | Mapping[str, Any] | RunConfig, overrides: Sequence[str]) -> RunConfig:
    """The validated config of a YAML path, shipped name, plain dict or :class:`RunConfig`, with
    ``overrides`` (``"section.key=value"``, as ``--set`` takes them) applied."""
    from privkd.config.loading import apply_overrides, config_from_dict, load_config
    from privkd.config.parse import config_to_dict

    if isinstance(config, (str, Path)):
        return load_config(config, list(overrides))
    values = config_to_dict(config) if isinstance(config, RunConfig) else dict(config)
    return config_from_dict(apply_overrides(values, list(overrides)))


def _check_arguments(config: object, out: object, overrides: object, resume: object, loggers: object,
                     callbacks: object, progress: object) -> None:
    """Refuse arguments of the wrong type before anything is read or written: a wrong type used to
    fail only once the run directory existed (``progress=5`` at the first progress line, leaving a
    half-made run), or to be taken apart silently (an ``overrides`` string split into characters)."""
    import lightning as L
    from lightning.pytorch.loggers import Logger

    def refuse(name: str, wanted: str, value: object, fix: str = "") -> None:
        raise TypeError(f"privkd.run: {name} must be {wanted}, not {type(value).__name__} {value!r:.80}"
                        + (f"; {fix}" if fix else ""))

    paths = (str, PathLike)
    if config is not None and not isinstance(config, (*paths, Mapping, RunConfig)):
        refuse("config", "a YAML path, a shipped config name, a dict of sections or a RunConfig", config)
    if not isinstance(out, paths):
        refuse("out", "a directory path (str or pathlib.Path)", out)
    if resume is not None and not isinstance(resume, paths):
        refuse("resume", "a run directory path (str or pathlib.Path) or None", resume)
    by_name = "the built-in loggers are named in the config instead: overrides=['training.loggers=[csv,tensorboard]']"
    for name, value, kind, what in (("overrides", overrides, str, "'section.key=value' strings"),
                                    ("loggers", loggers or (), Logger, "Lightning loggers"),
                                    ("callbacks", callbacks, L.Callback, "Lightning callbacks")):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            fix = by_name if name == "loggers" and isinstance(value, str) else (
                f"wrap it in a list: {name}=[{value!r:.60}]" if isinstance(value, (str, kind)) else "")
            refuse(name, f"a list of {what}", value, fix)
        for item in value:
            if not isinstance(item, kind):
                refuse(f"each item of {name}", f"one of {what}", item, by_name if name == "loggers" else "")
    if progress is not None and not callable(progress):
        refuse("progress", "a function taking one line of text, or None", progress, "e.g. progress=print")


def run(
    config: str | Path | Mapping[str, Any] | RunConfig | None,
    out: str | Path = "runs",
    *,
    overrides: Sequence[str] = (),
    resume: str | Path | None = None,
    loggers: Sequence[Logger] | None = None,
    callbacks: Sequence[L.Callback] = (),
    progress: Callable[[str], None] | None = None,
) -> Run:
    """Train and score every row of ``config`` on every fold, as ``privkd run`` does, under a new
    directory in ``out``; return the finished :class:`Run`.

    ``config``: a YAML file, a shipped config name (``"demo"``, ``"compare"``), a dict of
    sections (``{"methods": ["baseline"], "training": {"epochs": 5}}``) or a ``RunConfig``;
    every key is checked as for the command line, and a bad one raises
    :class:`~privkd.errors.ConfigError` before anything is written. ``overrides``: ``--set``
    items (``"training.epochs=5"``). ``resume``: finish an interrupted run in its own
    directory, with its own ``config.yaml`` (pass ``config=None``). ``loggers`` and
    ``callbacks``: Lightning objects added to every (fold, row) training (the same objects each
    time). ``progress``: called with each progress line (nothing is printed otherwise).
    A (fold, row) that fails does not raise: it is listed in :attr:`Run.failures`.

    With ``training.jobs`` above 1 (the shipped ``demo`` and study configs say ``auto``) the
    rows train in spawned worker processes, which import the calling script again: a script
    must then call ``run`` under ``if __name__ == "__main__":``, as any Python program that
    starts processes must. ``loggers`` or ``callbacks`` keep ``auto`` in this process.
    """
    from privkd.config.loading import load_config, load_stored_config
    from privkd.errors import PrivkdError
    from privkd.training.experiment import Tracking, run_experiment
    from privkd.training.run_dir import run_config_path

    _check_arguments(config, out, overrides, resume, loggers, callbacks, progress)
    if resume is not None:
        if config is not None or overrides:
            raise PrivkdError("resume finishes a run exactly as it was configured",
                              "pass config=None and no overrides when resuming")
        cfg = load_stored_config(run_config_path(resume))
    elif config is None:
        raise PrivkdError("no config given", "pass a YAML file, a shipped config name, a dict or a RunConfig")
    else:
        cfg = _config(config, overrides)
    result = run_experiment(cfg, out, progress=progress or (lambda _: None), resume=resume,
                            tracking=Tracking(loggers=tuple(loggers or ()), callbacks=tuple(callbacks)))
    return Run(dir=Path(result.run_dir).resolve(), summary=result.summary, config=cfg)
