"""The method registry: what the rest of privkd needs to know about each method.

A method is one module that defines its LightningModule and registers it with
:func:`register_method`, declaring its facts beside the code: the teacher it distils from,
the network role of what it trains (hence whether its row deploys without privileged
inputs), the tasks it supports, the config sections it reads, whether it is a reference row
of the results table and the report figures it contributes. Config validation, the
experiment runner, deployment and the report ask this registry; none of them names a method.

Importing this module imports its package first, :mod:`privkd.methods`, which registers the
built-in methods in their training order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from privkd.config.fitted import require_resolved
from privkd.config.parse import config_to_dict
from privkd.config.schema import RunConfig, register_section
from privkd.evaluation.artifacts import FigureSpec
from privkd.models.build import DEPLOYABLE_ROLES, ROLES
from privkd.plugins import load_plugins, unknown_part

if TYPE_CHECKING:
    from privkd.data.h5format import DatasetInfo
    from privkd.methods.base import PrivkdModule
    from privkd.models.network import PrivilegedNet

__all__ = ["TASKS", "MethodSpec", "bound_row", "build_module", "method_names", "method_spec", "register_method", "specs"]

TASKS = ("classification", "regression")

TeacherNeed = str | None | Callable[[RunConfig], "str | None"]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: the method's name in configs (``methods: [...]``) and results rows.
        module: its :class:`~privkd.methods.base.PrivkdModule` subclass, built by
            ``module.from_config(cfg, info, teacher=..., method=name)``.
        role: the :data:`~privkd.models.build.ROLES` entry of the network the row keeps
            (``module.net``): its weights are saved as the row's model, and a role that sees
            no privileged modality makes the row deployable as a student; or
            :data:`REFERENCE_ROLE` for a reference model fitted directly.
        teacher: the method whose network, trained earlier in the same fold, this one
            distils from; ``None`` for none; or a function of the row's config (a method
            that trains its own teacher online unless told to use a fixed one).
        provides_teacher: other rows distil from this row's network, so it is trained before
            them, once per fold, and cannot be a variant (its network is shared).
        tasks: the task kinds it supports.
        sections: the config sections it reads besides the shared ones; a variant of it may
            set keys of these. ``structural`` means it compares anchored similarity
            structures, so batches must hold more samples than anchors.
        needs_privileged: it cannot run without a privileged modality.
        bound: ``lower`` / ``upper`` when its row is the reference the gap closed is
            measured from / to (the prevalent-only baseline, the multimodal teacher).
        figures: report figures drawn from what its rows record.
        paper: the settings that make it its paper's method (``section.key: value``); a row
            whose config departs from them is named as a departure in the results.
        implicit: trained by a config that lists no ``methods``; reference rows that only fit
            some data (the linear ones) are added by their own switch instead.
    """

    name: str
    module: type[PrivkdModule]
    role: str
    teacher: TeacherNeed = None
    provides_teacher: bool = False
    tasks: tuple[str, ...] = TASKS
    sections: tuple[str, ...] = ()
    needs_privileged: bool = False
    bound: Literal["lower", "upper"] | None = None
    figures: tuple[FigureSpec, ...] = ()
    paper: Mapping[str, Any] = field(default_factory=dict)
    implicit: bool = True

    def teacher_for(self, cfg: RunConfig) -> str | None:
        """The method whose fold network a row of this method with config ``cfg`` distils from."""
        return self.teacher(cfg) if callable(self.teacher) else self.teacher

    def departures(self, cfg: RunConfig) -> dict[str, dict[str, Any]]:
        """The paper settings a row with config ``cfg`` does not keep: ``{key: {"used", "paper"}}``."""
        values = config_to_dict(cfg)
        used = {key: _lookup(values, key) for key in self.paper}
        return {key: {"used": used[key], "paper": paper} for key, paper in self.paper.items() if used[key] != paper}

    @property
    def deployable(self) -> bool:
        """Whether the row's network runs on the prevalent modalities alone."""
        return self.role in DEPLOYABLE_ROLES

    @property
    def uses_anchors(self) -> bool:
        return "structural" in self.sections


def _lookup(values: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        values = values[part]
    return values


REFERENCE_ROLE = "reference"
"""The role of a row whose model is not one of the networks of :data:`~privkd.models.build.ROLES`
(a linear reference fitted directly): never deployed, never a teacher."""

_METHODS: dict[str, MethodSpec] = {}

M = TypeVar("M", bound="type[PrivkdModule]")


def register_method(
    name: str,
    *,
    role: str,
    teacher: TeacherNeed = None,
    provides_teacher: bool = False,
    tasks: tuple[str, ...] = TASKS,
    sections: tuple[str, ...] = (),
    needs_privileged: bool = False,
    bound: Literal["lower", "upper"] | None = None,
    figures: tuple[FigureSpec, ...] = (),
    settings: type | None = None,
    paper: Mapping[str, Any] | None = None,
    implicit: bool = True,
) -> Callable[[M], M]:
    """Class decorator registering a method under ``name`` (see :class:`MethodSpec`).

    Stack it to register one class under several names (its ``from_config`` receives the
    name). Registration order is the training order within a fold, after the teachers a
    row needs. ``settings``, a frozen dataclass, gives a method defined outside privkd its
    own config section, named after the method and read with ``cfg.section(name)``."""
    if role not in ROLES and role != REFERENCE_ROLE:
        raise ValueError(f"unknown network role {role!r}; use one of {sorted(ROLES)} or {REFERENCE_ROLE!r}")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task kind(s) {unknown}; use some of {TASKS}")
    if name in _METHODS:
        raise ValueError(f"a method named {name!r} is already registered")

    def add(module: M) -> M:
        if settings is not None:
            register_section(name, settings)
        _METHODS[name] = MethodSpec(name, module, role, teacher, provides_teacher, tasks,
                                    (name, *sections) if settings is not None else sections, needs_privileged, bound, figures,
                                    dict(paper or {}), implicit)
        return module

    return add


def method_names(implicit_only: bool = False) -> list[str]:
    """Registered methods, in training order, those of installed plugins included
    (:mod:`privkd.plugins`; ``implicit_only``: those a config without a ``methods`` list trains)."""
    load_plugins()
    return [name for name, spec in _METHODS.items() if spec.implicit or not implicit_only]


def specs() -> list[MethodSpec]:
    load_plugins()
    return list(_METHODS.values())


def method_spec(name: str, key: str = "methods") -> MethodSpec:
    """The spec of method ``name``, or an :class:`~privkd.errors.UnknownPartError` on config key ``key``."""
    load_plugins()
    if name not in _METHODS:
        raise unknown_part("method", name, key, _METHODS)
    return _METHODS[name]


def bound_row(bound: Literal["lower", "upper"]) -> str | None:
    """The method whose row is the lower (baseline) or upper (teacher) reference of a table."""
    return next((spec.name for spec in _METHODS.values() if spec.bound == bound), None)


def build_module(method: str, cfg: RunConfig, info: DatasetInfo, teacher: PrivilegedNet | None = None) -> PrivkdModule:
    """The module a row of ``method`` trains with config ``cfg``; ``teacher`` is the fold's
    trained network of the method it distils from (see :meth:`MethodSpec.teacher_for`)."""
    require_resolved(cfg)
    spec = method_spec(method)
    if spec.teacher_for(cfg) is not None and teacher is None:
        raise ValueError(f"{method} needs the fold's trained {spec.teacher_for(cfg)}")
    return spec.module.from_config(cfg, info, teacher=teacher, method=method)
