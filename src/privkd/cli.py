"""The ``privkd`` command line: ``demo``, ``run``, ``sweep``, ``report``, ``predict``, ``export``, ``data info``
and ``data import``.

Errors a user can fix (bad config, bad data, unwritable output) are printed as one clear
message with a non-zero exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from privkd.config import RunConfig, load_config, packaged_config_path, restrict_rows
from privkd.deploy_cli import export as export_command
from privkd.deploy_cli import predict as predict_command
from privkd.errors import PrivkdError
from privkd.import_cli import import_app
from privkd.report_cli import report as report_command

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Privileged knowledge distillation (PKDOT, MT-PKDOT, AMID).")
data_app = typer.Typer(no_args_is_help=True, help="Inspect and prepare datasets.")
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")
console = Console(width=None if sys.stdout.isatty() else 240)  # logs and pipes get the whole table unwrapped


def show_progress(message: str) -> None:
    """One progress line; escaped, because row names such as ``pkdot[beta=6.0]`` look like rich markup."""
    console.print(f"[cyan]▶[/] {escape(message)}")


T = TypeVar("T")

QUICK_OVERRIDES = ["evaluation.max_folds=2", "training.epochs=3", "training.patience=3"]
"""``--quick``: the demo's code path on fewer folds and epochs, for a first look in under a minute."""

_state = {"debug": False}


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; turn a user-fixable error into a message and exit code 2."""
    if _state["debug"]:
        return action()
    try:
        return action()
    except PrivkdError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(code=2) from None


def print_summary(summary: dict, run_dir: Path, seconds: float) -> None:
    from privkd.evaluation.summary import summary_rows

    header, rows = summary_rows(summary)
    table = Table(title=f"{summary['task']}: mean ± std over {summary['folds']} subject-independent folds")
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"results in [bold]{run_dir}[/] ({seconds:.0f} s)")


def execute(cfg: RunConfig, out: Path, resume: Path | None = None) -> None:
    from privkd.training.crossval import (
        run_experiment,  # heavy imports only when training
    )

    start = time.perf_counter()
    from privkd.training.run_dir import is_primary_process

    result = run_experiment(cfg, out, progress=show_progress, resume=resume)
    if is_primary_process():  # data-parallel workers stay silent
        print_summary(result.summary, result.run_dir, time.perf_counter() - start)
    if result.failures:
        for failure in result.failures:
            console.print(f"[bold red]failed:[/] fold {failure['fold']}, {failure['row']}: {failure['error']}", highlight=False)
        console.print(f"finished results are kept; rerun the failed ones with: privkd run --resume {result.run_dir}")
        raise typer.Exit(code=3)


@app.command()
def demo(
    quick: Annotated[bool, typer.Option("--quick", help="2 folds, 3 epochs: same code path, under a minute.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Directory under which the run directory is created.")] = Path("runs"),
) -> None:
    """Baseline, teacher and PKDOT student on the embedded smartwatch data, 5 subject folds."""
    cfg = guarded(lambda: load_config(packaged_config_path("demo"), QUICK_OVERRIDES if quick else []))
    guarded(lambda: execute(cfg, out))


@app.command()
def run(
    config: Annotated[Path | None, typer.Argument(help="YAML config file, or a shipped config name (demo, compare).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a key, e.g. --set training.epochs=5.")] = [],  # noqa: B006
    only: Annotated[list[str], typer.Option("--only", help="Train only these rows (methods or variants); repeatable.")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", help="Directory under which the run directory is created.")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option("--resume", help="Finish an interrupted run in its own directory (reads its config.yaml).")] = None,
    devices: Annotated[int | None, typer.Option("--devices", help="Data-parallel processes per node (training.devices).")] = None,
    num_nodes: Annotated[int | None, typer.Option("--num-nodes", help="Nodes (training.num_nodes).")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="Lightning strategy, e.g. ddp (training.strategy).")] = None,
) -> None:
    """Run the experiment described by CONFIG, or finish an interrupted one with --resume RUN_DIR."""
    scale = {"training.devices": devices, "training.num_nodes": num_nodes, "training.strategy": strategy}
    overrides = list(set_) + [f"{key}={value}" for key, value in scale.items() if value is not None]

    def configure() -> RunConfig:
        if resume is None:
            if config is None:
                raise PrivkdError("no CONFIG given", "pass a YAML config (or a shipped name), or --resume RUN_DIR")
            return restrict_rows(load_config(config, overrides), list(only))
        if config is not None or overrides or only:
            raise PrivkdError("--resume finishes a run exactly as it was configured",
                              "drop CONFIG, --set, --only and the scale options when resuming")
        from privkd.training.crossval import run_config_path

        return load_config(run_config_path(resume))

    cfg = guarded(configure)
    guarded(lambda: execute(cfg, out, resume))


@app.command()
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

    def work() -> None:
        sweep_dir = run_sweep(config, list(set_), parse_grid(grid), out, row=row, trials=trials,
                              progress=show_progress)
        console.print((sweep_dir / "sweep.md").read_text(), highlight=False, markup=False)
        console.print(f"sweep in [bold]{sweep_dir}[/]")

    guarded(work)


@app.command()
def study(
    config: Annotated[Path, typer.Argument(help="YAML config with a study section, or a shipped config name.")],
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds to repeat the run with (study.seeds).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override a key.")] = [],  # noqa: B006
    out: Annotated[Path, typer.Option("--out", help="Directory under which the study directory is created.")] = Path("runs"),
) -> None:
    """Tune every method on validation subjects only, over several seeds; report test scores once."""
    from privkd.training.study import run_study

    def work() -> None:
        overrides = list(set_) + ([f"study.seeds={seeds}"] if seeds is not None else [])
        study_dir = run_study(load_config(config, overrides), out, progress=show_progress)
        console.print((study_dir / "study.md").read_text(), highlight=False, markup=False)
        console.print(f"study in [bold]{study_dir}[/] (privkd report {study_dir} draws its table)")

    guarded(work)


@data_app.command("info")
def data_info(path: Annotated[Path, typer.Argument(help="A privkd HDF5 dataset, or 'embedded'.")]) -> None:
    """Print a dataset's modalities, shapes, classes and subjects (after validating it)."""
    from privkd.data import describe, validate_dataset
    from privkd.data.embedded import embedded_dataset_path

    def show() -> None:
        resolved = embedded_dataset_path() if str(path) == "embedded" else path
        console.print(describe(validate_dataset(resolved)), highlight=False)

    guarded(show)


app.command("report")(report_command)
app.command("predict")(predict_command)
app.command("export")(export_command)
