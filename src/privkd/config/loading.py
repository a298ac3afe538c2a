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
    "absolute_paths",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "load_stored_config",
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
    """Read a YAML config with ``yaml.safe_load``, apply ``--set`` overrides and validate.

    The file paths it holds (:func:`absolute_paths`) are taken from the config file's own
    directory, so ``privkd run sub/cfg.yaml`` with ``data.path: data.h5`` reads
    ``sub/data.h5`` from wherever it is started; a shipped config's from the current
    directory, where the user's data is. ``--set`` values are typed where the command runs, so
    they are taken from the current directory. Every path of the returned config is absolute,
    and so is every path of the ``config.yaml`` a run stores from it."""
    path = resolve_config_path(path)
    values = _read_yaml(path)
    own_directory = Path.cwd() if path.resolve().parent == SHIPPED_CONFIGS else path.resolve().parent
    return config_from_dict(absolute_paths(apply_overrides(absolute_paths(values, own_directory), overrides or []),
                                           Path.cwd()))


def load_stored_config(path: str | Path) -> RunConfig:
    """A run's stored ``config.yaml`` (``privkd run --resume``), validated, its paths as stored:
    absolute, or, in runs started before privkd made them so, relative to where the run was
    started, as that run read them; a resume compares this config with what the run recorded."""
    return config_from_dict(_read_yaml(Path(path)))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"not valid YAML ({err})", "fix the YAML syntax") from err


def absolute_paths(values: Any, base: Path) -> Any:
    """``values`` (a parsed config) with its relative file paths made absolute against ``base``:
    ``data.path`` and ``data.test_path`` unless they name a dataset privkd provides (no
    directory and no file extension, like ``embedded``, or a ``scheme:`` like
    ``synthetic:clean_labels``), and every ``model.backbone_weights`` file. Anything that is
    not a string is left for validation to name."""
    if not isinstance(values, dict):
        return values
    result = copy.deepcopy(values)
    data, model = result.get("data"), result.get("model")
    if isinstance(data, dict):
        for key in ("path", "test_path"):
            if isinstance(data.get(key), str) and not _names_a_dataset(data[key]):
                data[key] = _absolute(data[key], base)
    if isinstance(model, dict) and isinstance(model.get("backbone_weights"), dict):
        model["backbone_weights"] = {name: _absolute(file, base) if isinstance(file, str) else file
                                     for name, file in model["backbone_weights"].items()}
    return result


def _names_a_dataset(value: str) -> bool:
    path = Path(value)
    return (":" in value and not path.is_absolute()) or (path.name == value and path.suffix == "")


def _absolute(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base / path)


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
