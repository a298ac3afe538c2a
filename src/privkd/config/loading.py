"""Configs from YAML files, shipped names, plain data and ``--set`` overrides, validated."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from privkd.config.parse import build_config, config_to_dict
from privkd.config.rows import set_key
from privkd.config.schema import RunConfig
from privkd.config.validation import validate
from privkd.errors import ConfigError
from privkd.methods.registry import method_names

__all__ = [
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "packaged_config_path",
    "parse_override",
    "resolve_config_path",
    "variant_config",
]

SHIPPED_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain data (e.g. parsed YAML); a config
    that lists no ``methods`` trains every registered one."""
    if isinstance(values, dict) and "methods" not in values:
        values = {**values, "methods": method_names(implicit_only=True)}
    return validate(build_config(values))


def variant_config(cfg: RunConfig, name: str) -> RunConfig:
    """The config a results row is trained with: the run's, plus the variant's overrides."""
    if name not in cfg.variants:
        return cfg
    values = config_to_dict(cfg)
    values["variants"] = {}
    for key, value in cfg.variants[name].set.items():
        set_key(values, key.split("."), value)
    return config_from_dict(values)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into the key path and a YAML-parsed value (so ``1e-3``, ``[a, b]`` work)."""
    if "=" not in item:
        raise ConfigError(item, "override without '='", "write --set key.sub=value, e.g. --set training.epochs=5")
    key, raw = item.split("=", 1)
    try:
        return key.strip().split("."), yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(key.strip(), f"--set value {raw!r} is not valid YAML ({problem})",
                          f"write a complete YAML value (close every bracket and quote), e.g. --set '{key.strip()}=[1, 2]'") from err


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``values`` with every ``key.path=value`` override applied."""
    result = copy.deepcopy(values)
    for item in overrides:
        set_key(result, *parse_override(item))
    return result


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config with ``yaml.safe_load``, apply ``--set`` overrides and validate."""
    path = resolve_config_path(path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML ({err})", "fix the YAML syntax") from err
    return config_from_dict(apply_overrides(values, overrides or []))


def _shipped() -> list[str]:
    return sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))


def resolve_config_path(arg: str | Path) -> Path:
    """A YAML file path, or the name of a config shipped with privkd (``demo``, ``compare``...)."""
    path = Path(arg)
    if path.is_file():
        return path
    if path.suffix == "" and (SHIPPED_CONFIGS / f"{path.name}.yaml").is_file():
        return packaged_config_path(path.name)
    raise ConfigError(str(arg), "config file not found", f"pass an existing YAML file or a shipped config name: {_shipped()}")


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped inside the package (e.g. ``demo``)."""
    path = SHIPPED_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(name, "no such shipped config", f"use one of {_shipped()}")
    return path
