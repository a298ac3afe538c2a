"""What ``privkd config list`` and ``privkd config show NAME`` print: the configs shipped with
privkd, each with the first sentence of its leading comment, and a config resolved against the
defaults, key by key, with the documentation the schema gives each key.

A key's documentation is read from :mod:`privkd.config.schema` itself (the string under a
field, and the sentences of its section's docstring that name the key as ````key````), so it
cannot drift from the code that applies the key.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from privkd.config import schema
from privkd.config.loading import SHIPPED_CONFIGS, load_config, resolve_config_path
from privkd.config.parse import config_to_dict

__all__ = ["ConfigKey", "config_keys", "key_documentation", "shipped_configs"]

# A sentence does not end after these (``Lopez-Paz et al. (ICLR 2016, Sec. 4.1)``).
_ABBREVIATIONS = ("al.", "e.g.", "i.e.", "Eq.", "Fig.", "Sec.", "vs.", "cf.")


def _sentences(text: str) -> list[str]:
    """The sentences of ``text`` (a docstring or a comment), each on one line."""
    pieces: list[str] = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        for piece in re.split(r"(?<=[.!?])\s+(?=[A-Za-z`(])", " ".join(paragraph.split())):
            if pieces and pieces[-1].endswith(_ABBREVIATIONS):
                pieces[-1] += " " + piece
            elif piece:
                pieces.append(piece)
    return pieces


def _description(path: Path) -> str:
    """The first sentence of a YAML file's leading comment block ('' without one)."""
    comment = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text:
            break
        comment.append(text)
    sentences = _sentences(" ".join(comment))
    return sentences[0] if sentences else ""


def shipped_configs() -> dict[str, str]:
    """Every config shipped with privkd (``privkd run NAME`` takes the name) -> its description."""
    return {path.stem: _description(path) for path in sorted(SHIPPED_CONFIGS.glob("*.yaml"))}


def _field_docstrings(cls: type) -> dict[str, str]:
    """The string literal written under each field of a schema dataclass."""
    tree = ast.parse(inspect.getsource(schema))
    body = next(node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == cls.__name__)
    return {field.target.id: " ".join(str(doc.value.value).split())
            for field, doc in itertools.pairwise(body)
            if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
            and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)}


@cache
def key_documentation() -> dict[str, str]:
    """``"training.epochs"`` (or a top-level ``"seed"``) -> what the schema says about the key,
    reST ``code`` marks turned into plain backquotes."""
    sections = {f.name: f.default_factory for f in dataclasses.fields(schema.RunConfig)
                if dataclasses.is_dataclass(f.default_factory)}
    owners = [("", schema.RunConfig), *((f"{name}.", cls) for name, cls in sections.items())]
    docs = {}
    for prefix, cls in owners:
        sentences = _sentences(cls.__doc__ or "")
        under = _field_docstrings(cls)
        for f in dataclasses.fields(cls):
            if f.name in sections and not prefix:
                continue
            about = [s for s in sentences if re.search(rf"``{re.escape(f.name)}(``|:)", s)]
            text = " ".join([*about, *([under[f.name]] if f.name in under else [])])
            docs[prefix + f.name] = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return docs


@dataclass(frozen=True)
class ConfigKey:
    """One key of a resolved config: its value, whether the config file sets it, its documentation."""

    key: str
    value: Any
    set_in_file: bool
    doc: str


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"epochs": 5}}`` -> ``{"training.epochs": 5}``, one level of sections deep
    (a section's own mappings, such as ``variants`` or ``model.backbones``, stay whole)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if not prefix and isinstance(value, Mapping) and key != "variants":
            flat.update(_flat(value, f"{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_keys(config: str | Path) -> list[ConfigKey]:
    """Every key of ``config`` (a shipped name or a YAML file) as a run would use it: the file's
    values over the defaults, validated (``auto`` stays ``auto``: it is sized when a run starts)."""
    path = resolve_config_path(config)
    written = _flat(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    resolved = _flat(config_to_dict(load_config(path)))
    docs = key_documentation()
    return [ConfigKey(key, value, key in written, docs.get(key, "")) for key, value in resolved.items()]
