"""Backbones and methods from other packages, found through entry points.

A package makes its parts usable everywhere privkd names them (``privkd run``, ``predict``,
``export``, a saved student loaded in a new process) by declaring the module that registers
them as an entry point, in its ``pyproject.toml``::

    [project.entry-points."privkd.backbones"]
    my_gru = "my_package.backbones"      # a module whose import runs @register_backbone("my_gru")

    [project.entry-points."privkd.methods"]
    my_method = "my_package.methods"     # a module whose import runs @register_method("my_method")

privkd imports them the first time it looks a name up (not when privkd itself is imported, so
a plugin may import privkd freely). A name no registry knows after that is refused with an
:class:`~privkd.errors.UnknownPartError` that says how a plugin provides it.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points

from privkd.errors import PrivkdError, UnknownPartError

__all__ = ["PLUGIN_GROUPS", "load_plugins", "unknown_part"]

PLUGIN_GROUPS = {"backbone": "privkd.backbones", "method": "privkd.methods"}
"""Entry-point group of each kind of part."""

_loaded = False


def load_plugins() -> None:
    """Import every installed plugin module once per process; a module that fails to import is
    refused with the entry point and the package to fix or uninstall."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # before importing: a plugin that looks a name up while importing must not recurse
    for group in PLUGIN_GROUPS.values():
        for point in entry_points(group=group):
            try:
                point.load()
            except Exception as exc:
                package = point.dist.name if point.dist is not None else "the package that declares it"
                raise PrivkdError(f"plugin {point.name!r} ({point.value}, entry point group {group!r}) failed to "
                                  f"import: {type(exc).__name__}: {exc}", f"fix or uninstall {package}") from exc


def unknown_part(kind: str, name: str, key: str, known: Iterable[str]) -> UnknownPartError:
    """The error for a ``kind`` (``backbone`` or ``method``) called ``name`` that no registry
    knows, at config ``key``: the known names, and how a plugin would provide it."""
    return UnknownPartError(key, f"unknown {kind} {name!r}",
                            f"use one of {sorted(known)}; a {kind} from another package needs that package installed "
                            f"with {name!r} under the entry point group {PLUGIN_GROUPS[kind]!r} (or its module "
                            "imported before privkd looks the name up)")
