"""The ``privkd`` app: every command registered on one group that owns the error handling.

Errors a user can fix (bad config, bad data, unwritable output) are :class:`PrivkdError`s;
:class:`PrivkdGroup` prints them as one ``error: ...`` line with exit code 2, or lets them
through with their traceback under ``--debug``. Commands just raise. A SIGTERM or Ctrl-C
ends any command with one ``stopped: ...`` line and exit code 128 + the signal's number.
"""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from rich.markup import escape
from typer.core import TyperGroup

from privkd.cli.config import config_app
from privkd.cli.console import console
from privkd.cli.data import data_app
from privkd.cli.deploy import export, predict
from privkd.cli.report import report
from privkd.cli.run import demo, run, study, sweep
from privkd.errors import PrivkdError, disk_full_error, is_disk_full
from privkd.interrupt import RunInterrupted, stop_on_signals
from privkd.portable import enable_portable_kernels

__all__ = ["PrivkdGroup", "app"]

DEBUG = "debug"
"""The top-level ``--debug`` flag's parameter name, read back by :meth:`PrivkdGroup.invoke`."""


def _hide_flag_types(command: click.Command) -> None:
    """Give every flag of ``command`` and its subcommands, ``--help`` included, an empty metavar:
    typer's help prints a flag's Python type (``--final <bool>``) although a flag takes no value."""
    for param in [*command.params, command.get_help_option(click.Context(command))]:
        if getattr(param, "is_flag", False) and param.metavar is None:  # typer's options are no click.Option
            param.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        _hide_flag_types(subcommand)


class PrivkdGroup(TyperGroup):
    """The top-level group. Every command, nested groups' ones included, runs inside its
    :meth:`invoke`, so it is the one place a :class:`PrivkdError` becomes a message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _hide_flag_types(self)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            with stop_on_signals():  # the training commands report their own stops, with the run to resume
                return super().invoke(ctx)
        except RunInterrupted as stop:
            console.print(f"[bold red]stopped:[/] {stop.signal_name}; nothing half-written is left (files are written "
                          "whole or not at all): run the command again", highlight=False)
            raise typer.Exit(code=stop.exit_code) from None
        except (PrivkdError, OSError) as err:
            if ctx.params.get(DEBUG) or not (isinstance(err, PrivkdError) or is_disk_full(err)):
                raise
            message = err if isinstance(err, PrivkdError) else disk_full_error(err)  # an import or a report
            console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False)  # paths may hold [...]
            raise typer.Exit(code=2) from None


app = typer.Typer(cls=PrivkdGroup, no_args_is_help=True, add_completion=False,
                  help="Privileged knowledge distillation (PKDOT, MT-PKDOT, AMID).")


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option(f"--{DEBUG}", help="Show Python tracebacks for errors.")] = False,
    portable: Annotated[bool, typer.Option("--portable", help="AVX2 kernels on every CPU: the same results on "
                                           "every x86-64 processor, see docs/portability.md.")] = False,
) -> None:
    """Declares the global options; :meth:`PrivkdGroup.invoke` reads ``--debug`` from its context."""
    if portable:
        try:
            enable_portable_kernels()
        except RuntimeError as err:
            raise PrivkdError(str(err), "start a new process with PRIVKD_PORTABLE=1 set") from None


app.command()(demo)  # registration order is the order of --help
app.command()(run)
app.command()(sweep)
app.command()(study)
app.command()(report)
app.command()(predict)
app.command()(export)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
