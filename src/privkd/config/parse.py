"""Plain data (parsed YAML) to schema dataclasses and back, checking every key and type.

A typo or a wrong type fails here with the key, what was wrong and the allowed values,
before any cross-key rule (:mod:`privkd.config.validation`) or any training runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal

from privkd.config.schema import EXTENSION_SECTIONS, RunConfig
from privkd.errors import ConfigError

__all__ = ["build_config", "config_to_dict"]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _describe(tp: Any) -> str:
    """How an error message names one alternative of a union: ``an int``, ``'auto'``."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return "a list"
    name = _type_name(tp)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert YAML shapes (lists → tuples)."""
    _require_finite(key, value)
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}", f"write '{key}:' followed by indented keys")
        return _build(tp, value, prefix=f"{key}.")
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"{value!r} is not allowed", f"use one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(key, value, inner[0])
        for alternative in inner:  # e.g. int | Literal["auto"]: the first that takes the value
            try:
                return _coerce(key, value, alternative)
            except ConfigError:
                continue
        expected = " or ".join(_describe(a) for a in inner)
        raise ConfigError(key, f"expected {expected}, got {value!r}", f"give {expected}")
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}", "write a YAML list, e.g. [a, b]")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}", "write key: value pairs")
        return {str(k): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            number = float(value)  # YAML reads 1e-3 (no dot) as a string
        except ValueError:
            pass
        else:
            _require_finite(key, number)
            return number
    if tp in (int, bool, str, float):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        article = "an" if _type_name(tp)[0] in "aeiou" else "a"
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r} ({type(value).__name__})", f"give {article} {_type_name(tp)}")
    raise TypeError(f"unsupported annotation {tp} for {key}")  # a schema bug, not a user error


def _require_finite(key: str, value: Any) -> None:
    """NaN and infinity pass every ``<`` / ``>`` range rule, then fail (or poison the losses)
    only once training runs: refuse them for every numeric key, whatever its section."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number, got {value}", "give an ordinary number (not .nan or .inf)")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "extensions"]
    if cls is RunConfig:
        names += list(EXTENSION_SECTIONS)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}", "unknown key", f"allowed keys here: {names}")
    kwargs = {name: _coerce(f"{prefix}{name}", values[name], hints.get(name) or EXTENSION_SECTIONS[name])
              for name in names if name in values}
    if cls is RunConfig:  # every extension section in one mapping, with its defaults when the config omits it
        kwargs["extensions"] = {name: kwargs.pop(name) if name in kwargs else settings()
                                for name, settings in EXTENSION_SECTIONS.items()}
    return cls(**kwargs)


def build_config(values: dict[str, Any]) -> RunConfig:
    """A :class:`RunConfig` from plain data, every key and type checked, no cross-key rule
    applied (that is :func:`privkd.config.loading.config_from_dict`'s job)."""
    if not isinstance(values, dict):
        raise ConfigError("<root>", f"expected a mapping, got {type(values).__name__}", "the file must hold key: value pairs")
    return _build(RunConfig, values)


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain, YAML-safe data for a config (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    values = plain(dataclasses.asdict(cfg))
    extensions = values.pop("extensions")
    return {**values, **extensions}
