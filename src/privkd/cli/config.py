"""``privkd config list`` and ``privkd config show NAME``: which configs ship with privkd, and
every key a config resolves to with what the key does, without reading the schema's source."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from privkd.cli.console import console

__all__ = ["config_app"]

config_app = typer.Typer(no_args_is_help=True, help="List the shipped configs and show what a config sets.")


@config_app.command("list")
def list_configs() -> None:
    """The configs shipped with privkd (privkd run NAME), each with its description."""
    from privkd.config.catalog import shipped_configs

    table = Table(title="Shipped configs (privkd run NAME; privkd config show NAME for their keys)")
    table.add_column("name", no_wrap=True)
    table.add_column("description")
    for name, description in shipped_configs().items():
        table.add_row(escape(name), escape(description))
    console.print(table)


def _inline(value: object) -> str:
    """A value as it would be written in a YAML config, on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


@config_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A shipped config name (privkd config list) or a YAML file.")],
    set_only: Annotated[bool, typer.Option("--set-only", help="Only the keys the config file sets.")] = False,
) -> None:
    """Every key of a config as a run uses it (the file's values over the defaults), with its documentation."""
    from privkd.config.catalog import config_keys

    keys = [k for k in config_keys(name) if k.set_in_file or not set_only]
    table = Table(title=f"{name}: keys marked * are set by the config, the others are privkd's defaults")
    for column, options in (("key", {"no_wrap": True}), ("value", {"overflow": "fold"}), ("documentation", {})):
        table.add_column(column, **options)
    for key in keys:
        table.add_row(escape(key.key + (" *" if key.set_in_file else "")), escape(_inline(key.value)), escape(key.doc))
    console.print(table)
