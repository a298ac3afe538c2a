"""The results rows of a run: its methods and its variants (a method with some keys overridden)."""

from __future__ import annotations

import dataclasses

from privkd.config.schema import RunConfig
from privkd.errors import ConfigError

__all__ = ["restrict_rows", "row_method", "set_key"]


def row_method(cfg: RunConfig, name: str) -> str:
    """The method behind a results row (a method name, or a variant's method)."""
    return cfg.variants[name].method if name in cfg.variants else name


def restrict_rows(cfg: RunConfig, rows: list[str]) -> RunConfig:
    """Keep only the named methods and variants (all when ``rows`` is empty)."""
    if not rows:
        return cfg
    known = list(cfg.methods) + list(cfg.variants)
    unknown = [row for row in rows if row not in known]
    if unknown:
        raise ConfigError("--only", f"{unknown[0]!r} is not a row of this config", f"use some of {known}")
    return dataclasses.replace(
        cfg,
        methods=tuple(m for m in cfg.methods if m in rows),
        variants={name: v for name, v in cfg.variants.items() if name in rows},
    )


def set_key(values: dict, path: list[str], value: object) -> None:
    """Set ``values[path[0]][path[1]]... = value`` in place, creating sections as needed."""
    node = values
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(".".join(path), f"'{part}' is not a section", "override a key inside a section")
    node[path[-1]] = value
