"""Builds the network of each role from a run config and a dataset description.

A *role* says which modalities a network sees and fuses and what it carries besides (a
T-Net, modality adapters). Methods pick roles; nothing here knows about methods, so a saved
student can be rebuilt (``privkd predict``) without importing the training stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from privkd.config.schema import RunConfig
from privkd.data.h5format import DatasetInfo
from privkd.errors import ConfigError
from privkd.models.backbones import (
    DEFAULT_BACKBONE_FOR_KIND,
    Backbone,
    backbone_names,
    build_backbone,
    load_backbone_weights,
)
from privkd.models.network import ModalitySpec, PrivilegedNet
from privkd.plugins import unknown_part

__all__ = ["DEPLOYABLE_ROLES", "ROLES", "Role", "build_net", "modality_specs", "reference_backbone"]


@dataclass(frozen=True)
class Role:
    """What a network of this role sees, fuses and carries.

    ``fusion_layers`` is the depth of a concatenation fusion's MLP (AMID's teacher M fuses
    through two layers, Sec. 4.2)."""

    sees_prevalent: bool
    sees_privileged: bool
    fuses_privileged: bool
    tnet: bool = False
    adapters: bool = False
    fusion_layers: int = 1


ROLES = {
    "baseline": Role(sees_prevalent=True, sees_privileged=False, fuses_privileged=False),
    "teacher": Role(sees_prevalent=True, sees_privileged=True, fuses_privileged=True, tnet=True),
    "mt_teacher": Role(sees_prevalent=True, sees_privileged=True, fuses_privileged=True, tnet=True, adapters=True),
    "student": Role(sees_prevalent=True, sees_privileged=False, fuses_privileged=True, tnet=True),
    "amid_teacher": Role(sees_prevalent=True, sees_privileged=True, fuses_privileged=True, fusion_layers=2),
    "auxiliary": Role(sees_prevalent=False, sees_privileged=True, fuses_privileged=True),
}
"""``baseline`` sees and fuses the prevalent modalities; ``teacher`` sees and fuses all and owns
the T-Net (PKDOT's teacher); ``mt_teacher`` is that teacher with one adapter per modality
(MT-PKDOT's self-distilled teacher); ``student`` sees the prevalent ones and fuses all via the
T-Net; AMID's ``amid_teacher`` fuses all through a 2-layer MLP and its ``auxiliary`` model sees
the privileged ones."""

DEPLOYABLE_ROLES = tuple(name for name, role in ROLES.items() if not role.sees_privileged)
"""Roles whose network needs nothing but the prevalent modalities at test time."""


def modality_specs(cfg: RunConfig, info: DatasetInfo, names: Sequence[str]) -> list[ModalitySpec]:
    """Encoder specifications for ``names``, with the configured or kind-default backbone."""
    specs = []
    for name in names:
        modality = info.modalities[name]
        backbone = cfg.model.backbones.get(name) or DEFAULT_BACKBONE_FOR_KIND.get(modality.kind)
        if backbone is None:
            raise ConfigError(f"model.backbones.{name}", f"no backbone for modality kind {modality.kind!r}",
                              f"use one of {backbone_names()}")
        if backbone not in backbone_names():
            raise unknown_part("backbone", backbone, f"model.backbones.{name}", backbone_names())
        specs.append(ModalitySpec(name, tuple(modality.sample_shape), backbone))
    return specs


def build_net(role: str, cfg: RunConfig, info: DatasetInfo) -> PrivilegedNet:
    """The network of ``role`` (see :data:`ROLES`) for the run's modalities and model settings.

    A role that fuses privileged modalities it cannot see hallucinates them through its T-Net,
    unless ``student.hallucinate`` is false: it then fuses the prevalent ones only, the
    baseline's network."""
    spec = ROLES[role]
    prevalent, privileged = list(cfg.data.prevalent), list(cfg.data.privileged)
    would_hallucinate = spec.fuses_privileged and not spec.sees_privileged
    keeps_privileged = cfg.student.hallucinate or not would_hallucinate
    seen = (prevalent if spec.sees_prevalent else []) + (privileged if spec.sees_privileged else [])
    fused = (prevalent if spec.sees_prevalent else []) + (privileged if spec.fuses_privileged and keeps_privileged else [])
    with_tnet = spec.tnet and bool(privileged) and keeps_privileged
    with_adapters = spec.adapters and (cfg.teacher.align_weight > 0 or cfg.teacher.adapter_task_weight > 0)
    net = PrivilegedNet(
        modality_specs(cfg, info, seen),
        fused,
        info.n_outputs,
        embed_dim=cfg.model.embed_dim,
        fusion=cfg.model.fusion,
        fusion_dim=cfg.model.fusion_dim,
        dropout=cfg.model.dropout,
        tnet_inputs=prevalent if with_tnet else (),
        tnet_outputs=privileged if with_tnet else (),
        tnet_hidden=cfg.model.tnet_hidden,
        tnet_bottleneck=cfg.model.tnet_bottleneck,
        adapted=seen if with_adapters else (),
        fusion_layers=spec.fusion_layers,
        tokens=cfg.model.tokens,
        heads=cfg.model.attention_heads,
    )
    for name, encoder in net.encoders.items():
        if name in cfg.model.frozen_backbones:
            encoder.backbone.load_state_dict(reference_backbone(cfg, info, name).state_dict())
        elif name in cfg.model.backbone_weights:
            load_backbone_weights(encoder.backbone, cfg.model.backbone_weights[name], f"model.backbone_weights.{name}")
    net.freeze_backbones(cfg.model.frozen_backbones)
    return net


FROZEN_BACKBONE_SEED = 20240126
"""Seed of a frozen backbone without a weights file: one fixed random feature extractor."""


def reference_backbone(cfg: RunConfig, info: DatasetInfo, name: str) -> Backbone:
    """The backbone every network of a run uses for the frozen modality ``name``: the user's
    weights, else a fixed-seed initialisation. All networks (baseline, teacher, students,
    every fold) thus share one frozen extractor, and one feature cache."""
    spec = modality_specs(cfg, info, [name])[0]
    with torch.random.fork_rng():
        torch.manual_seed(FROZEN_BACKBONE_SEED)
        backbone = build_backbone(spec.backbone, spec.sample_shape)
    if name in cfg.model.backbone_weights:
        load_backbone_weights(backbone, cfg.model.backbone_weights[name], f"model.backbone_weights.{name}")
    return backbone.requires_grad_(False).eval()
