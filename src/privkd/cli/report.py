"""``privkd report RUN_DIR [--sweep SWEEP_DIR] [--out DIR]``: the results report of a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from privkd.cli.console import console

__all__ = ["report"]


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `privkd run` (holds summary.json).")],
    sweep: Annotated[Path | None, typer.Option("--sweep", help="Sweep directory written by `privkd sweep` (holds sweep.json): "
                                                "adds the batch-size / anchors figure.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for the whole report (default: RUN_DIR): report.md, "
                                              "report.html, and under report/ the figures (PNG, PDF, SVG) and results.tex.")] = None,
) -> None:
    """Write report.md, a self-contained report.html, every figure as PNG/PDF/SVG and a LaTeX results table."""
    from privkd.report import (
        build_report,  # matplotlib and the run's results, only when reporting
    )

    paths = build_report(run_dir, sweep_dir=sweep, out_dir=out)
    console.print(f"report: [bold]{escape(str(paths.markdown))}[/]", highlight=False)
    console.print(f"report: [bold]{escape(str(paths.html))}[/]", highlight=False)
    if paths.latex is not None:
        console.print(f"report: [bold]{escape(str(paths.latex))}[/]", highlight=False)
