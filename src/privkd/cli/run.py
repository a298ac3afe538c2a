"""``privkd demo``, ``run``, ``sweep`` and ``study``: the commands that train.

Training (torch, Lightning, the method registry behind config loading) is imported inside
each command, so that ``privkd --help`` and the other commands start quickly.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from privkd.cli.console import console, show_progress
from privkd.config import RunConfig
from privkd.config.rows import restrict_rows
from privkd.errors import PrivkdError

if TYPE_CHECKING:
    from privkd.interrupt import RunInterrupted

__all__ = ["QUICK_OVERRIDES", "demo", "run", "study", "sweep"]

QUICK_OVERRIDES = ["evaluation.max_folds=2", "training.epochs=3", "training.patience=3"]
"""``--quick``: the demo's code path on fewer folds and epochs, for a first look in under a minute."""


def _print_summary(summary: dict, run_dir: Path, seconds: float) -> None:
    from privkd.evaluation.summary import (
        departure_lines,
        leak_line,
        scored_on,
        summary_rows,
        warning_lines,
    )

    header, rows = summary_rows(summary)
    table = Table(title=f"{summary['task']}: mean ± std over {summary['folds']} fold(s) of {scored_on(summary)}")
    for column in header:
        table.add_column(escape(column))
    for row in rows:
        table.add_row(*map(escape, row))  # row names such as pkdot[beta=6.0] are not markup
    if summary.get("leaks"):
        console.print(f"[bold red]{escape(leak_line(summary['leaks']).strip('*'))}[/]", highlight=False)
    console.print(table)
    for line in warning_lines(summary):
        console.print(f"[bold yellow]warning:[/] {escape(line)}", highlight=False)
    for line in departure_lines(summary):
        console.print(f"departs from its paper: {escape(line)}", highlight=False)
    console.print(f"results in [bold]{escape(str(run_dir))}[/] ({seconds:.0f} s)")


def _execute(cfg: RunConfig, out: Path, resume: Path | None = None) -> None:
    """Run the experiment, print its table, and exit 3 when some folds or rows failed."""
    from privkd.training.experiment import run_experiment
    from privkd.training.run_dir import is_primary_process

    start = time.perf_counter()
    with _stops_reported():
        result = run_experiment(cfg, out, progress=show_progress, resume=resume)
    if is_primary_process():  # data-parallel workers stay silent
        _print_summary(result.summary, result.run_dir, time.perf_counter() - start)
        for row, student in (result.final or {}).get("students", {}).items():
            console.print(f"trained on every subject: {escape(row)} -> [bold]{escape(str(result.run_dir / student))}[/]",
                          highlight=False)
    if result.failures:
        for failure in result.failures:
            console.print(f"[bold red]failed:[/] fold {failure['fold']}, {escape(str(failure['row']))}: "
                          f"{escape(str(failure['error']))}", highlight=False)
        console.print(f"finished results are kept; rerun the failed ones with: {escape(resume_command(result.run_dir))}",
                      highlight=False)
        raise typer.Exit(code=3)


@contextmanager
def _stops_reported() -> Iterator[None]:
    """Training commands end on SIGTERM or SIGINT with :func:`_report_stop`."""
    from privkd.interrupt import RunInterrupted, stop_on_signals

    try:
        with stop_on_signals():
            yield
    except RunInterrupted as stop:
        _report_stop(stop)


def _report_stop(stop: RunInterrupted) -> NoReturn:
    """A SIGTERM (a scheduler's pre-emption) or Ctrl-C: what happened and how to go on, then
    exit 128 + the signal's number (143, 130), never 0."""
    where = stop.run_dir
    if where is None:
        console.print(f"[bold red]stopped:[/] {stop.signal_name} before a run directory was made; nothing to resume",
                      highlight=False)
    else:
        console.print(f"[bold red]stopped:[/] {stop.signal_name}; the finished (fold, row) results are kept in "
                      f"{escape(str(where))}. Resume with: {escape(resume_command(where))}", highlight=False)
    raise typer.Exit(code=stop.exit_code)


def resume_command(run_dir: Path) -> str:
    """The command that finishes ``run_dir``, with its absolute path quoted for the shell, so
    that it can be pasted in any directory, whatever the path holds (spaces, quotes)."""
    return f"privkd run --resume {shlex.quote(str(Path(run_dir).absolute()))}"


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="2 folds, 3 epochs: same code path, under a minute.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Directory under which the run directory is created.")] = Path("runs"),
) -> None:
    """Baseline, teacher and PKDOT student on the embedded smartwatch data, 5 subject folds."""
    from privkd.config.loading import load_config, packaged_config_path

    _execute(load_config(packaged_config_path("demo"), QUICK_OVERRIDES if quick else []), out)


def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config file, or a shipped config name (demo, compare).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a key, e.g. --set training.epochs=5.")] = [],  # noqa: B006
    only: Annotated[list[str], typer.Option("--only", help="Train only these rows (methods or variants); repeatable.")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", help="Directory under which the run directory is created.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option("--resume", help="Finish an interrupted run in its own directory (reads its config.yaml).")] = None,
    jobs: Annotated[str | None, typer.Option("--jobs", help="(fold, row) pairs trained side by side in worker processes, "
                                             "or auto: one per CPU core (training.jobs).")] = None,
    devices: Annotated[int | None, typer.Option("--devices", help="Data-parallel processes per node (training.devices).")] = None,
    num_nodes: Annotated[int | None, typer.Option("--num-nodes", help="Nodes (training.num_nodes).")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="Lightning strategy, e.g. ddp (training.strategy).")] = None,
    final: Annotated[bool, typer.Option("--final", help="After the folds, train the baseline and students on every subject "
                                        "for deployment, under RUN_DIR/final/ (evaluation.final).")] = False,
) -> None:
    """Run the experiment described by CONFIG, or finish an interrupted one with --resume RUN_DIR."""
    from privkd.config.loading import load_config, load_stored_config

    scale = {"training.jobs": jobs, "training.devices": devices, "training.num_nodes": num_nodes, "training.strategy": strategy}
    overrides = list(set_) + [f"{key}={value}" for key, value in scale.items() if value is not None]
    overrides += ["evaluation.final=true"] if final else []
    if resume is None:
        if config is None:
            raise PrivkdError("no CONFIG given", "pass a YAML config (or a shipped name), or --resume RUN_DIR")
        cfg = restrict_rows(load_config(config, overrides), list(only))
    else:
        if config is not None or overrides or only:
            raise PrivkdError("--resume finishes a run exactly as it was configured",
                              "drop CONFIG, --set, --only, --final and the scale options when resuming")
        from privkd.training.run_dir import run_config_path

        cfg = load_stored_config(run_config_path(resume))
    _execute(cfg, out, resume)


def sweep(
    config: Annotated[Path, typer.Argument(help="YAML config file, or a shipped config name.")],
    grid: Annotated[list[str], typer.Option("--grid", help="KEY=V1,V2,... values to try; repeatable (the grid is their product).")],
    trials: Annotated[int | None, typer.Option("--trials", help="Optuna TPE trials over the grid's values instead of the full grid.")] = None,
    row: Annotated[str | None, typer.Option("--row", help="Row whose validation score is maximised (default: the only distilled row).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a key for every point.")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", help="Directory under which the sweep directory is created.")] = Path("runs"),
) -> None:
    """Run CONFIG for every grid point; choose on validation subjects; write sweep.json and sweep.md."""
    from privkd.training.sweep import parse_grid, run_sweep

    with _stops_reported():
        sweep_dir = run_sweep(config, list(set_), parse_grid(grid), out, row=row, trials=trials, progress=show_progress)
    console.print((sweep_dir / "sweep.md").read_text(), highlight=False, markup=False)
    console.print(f"sweep in [bold]{escape(str(sweep_dir))}[/]")


def study(
    config: Annotated[Path, typer.Argument(help="YAML config with a study section, or a shipped config name.")],
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds to repeat the run with (study.seeds).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a key.")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", help="Directory under which the study directory is created.")] = Path("runs"),
) -> None:
    """Tune every method on validation subjects only, over several seeds; report test scores once."""
    from privkd.config.loading import load_config
    from privkd.training.study import run_study

    overrides = list(set_) + ([f"study.seeds={seeds}"] if seeds is not None else [])
    with _stops_reported():
        study_dir = run_study(load_config(config, overrides), out, progress=show_progress)
    console.print((study_dir / "study.md").read_text(), highlight=False, markup=False)
    console.print(f"study in [bold]{escape(str(study_dir))}[/] (privkd report {escape(str(study_dir))} draws its table)")
    _exit_on_study_failures(study_dir)


def _exit_on_study_failures(study_dir: Path) -> None:
    """Exit 3, as ``privkd run`` does, when a (seed, fold, row) failed: a study whose every row
    failed used to print an empty table and exit 0."""
    import json

    failures = [(path.parent.parent.name, failure) for path in sorted(study_dir.glob("seed_*/*/summary.json"))
                for failure in json.loads(path.read_text()).get("failed", [])]
    if not failures:
        return
    for seed, failure in failures:
        console.print(f"[bold red]failed:[/] {escape(seed)}, fold {failure['fold']}, {escape(str(failure['row']))}: "
                      f"{escape(str(failure['error']))}", highlight=False)
    console.print(f"{len(failures)} (seed, fold, row) trainings failed; the study's table holds only the finished ones",
                  highlight=False)
    raise typer.Exit(code=3)
