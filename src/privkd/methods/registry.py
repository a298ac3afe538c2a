"""Builds each method's network and LightningModule from a config and a dataset description."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from privkd.config import METHOD_NAMES, STUDENT_METHODS, RunConfig
from privkd.data.h5format import DatasetInfo
from privkd.errors import ConfigError
from privkd.losses.structural import StructuralOTLoss
from privkd.methods.amid import AMIDModule
from privkd.methods.base import PrivkdModule
from privkd.methods.mt_pkdot import MTPKDOTModule
from privkd.methods.pkdot import PKDOTModule
from privkd.methods.point_to_point import PointToPointModule
from privkd.methods.teacher import TeacherModule
from privkd.models.backbones import (
    DEFAULT_BACKBONE_FOR_KIND,
    Backbone,
    backbone_names,
    build_backbone,
    load_backbone_weights,
)
from privkd.models.network import ModalitySpec, PrivilegedNet


def modality_specs(cfg: RunConfig, info: DatasetInfo, names: Sequence[str]) -> list[ModalitySpec]:
    """Encoder specifications for ``names``, with the configured or kind-default backbone."""
    specs = []
    for name in names:
        modality = info.modalities[name]
        backbone = cfg.model.backbones.get(name) or DEFAULT_BACKBONE_FOR_KIND.get(modality.kind)
        if backbone is None or backbone not in backbone_names():
            raise ConfigError(
                f"model.backbones.{name}",
                f"no backbone for modality kind {modality.kind!r}" if backbone is None else f"unknown backbone {backbone!r}",
                f"use one of {backbone_names()}",
            )
        specs.append(ModalitySpec(name, tuple(modality.sample_shape), backbone))
    return specs


ROLES = {
    # role: (sees prevalent, sees privileged, fuses privileged, T-Net, adapters, fusion layers)
    "baseline": (True, False, False, False, False, 1),
    "teacher": (True, True, True, True, True, 1),
    "student": (True, False, True, True, False, 1),
    "amid_teacher": (True, True, True, False, False, 2),
    "auxiliary": (False, True, True, False, False, 1),
}
"""Which modalities each kind of network sees and fuses, and what it carries."""


def build_net(role: str, cfg: RunConfig, info: DatasetInfo) -> PrivilegedNet:
    """The network for ``role`` (see :data:`ROLES`): ``baseline`` sees and fuses the prevalent
    modalities; ``teacher`` sees and fuses all and owns the T-Net and one adapter per
    modality; ``student`` sees the prevalent ones and fuses all via the T-Net; AMID's
    ``amid_teacher`` fuses all through a 2-layer MLP and its ``auxiliary`` model sees the
    privileged ones."""
    sees_prevalent, sees_privileged, fuses_privileged, tnet, adapters, layers = ROLES[role]
    prevalent, privileged = list(cfg.data.prevalent), list(cfg.data.privileged)
    seen = (prevalent if sees_prevalent else []) + (privileged if sees_privileged else [])
    fused = (prevalent if sees_prevalent else []) + (privileged if fuses_privileged else [])
    with_tnet = tnet and bool(privileged)
    with_adapters = adapters and (cfg.teacher.align_weight > 0 or cfg.teacher.adapter_task_weight > 0)
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
        fusion_layers=layers,
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


def build_amid(cfg: RunConfig, info: DatasetInfo, teacher: PrivilegedNet | None, common: dict) -> AMIDModule:
    """AMID's three models with shared extractors and classifier, or, for the fixed-teacher
    ablation, a fresh student against the fold's pre-trained teacher."""
    student = build_net("baseline", cfg, info)
    if not cfg.amid.online_teacher:
        if teacher is None:
            raise ValueError("AMID with a fixed teacher needs the fold's trained teacher")
        return AMIDModule(student, teacher, None, settings=cfg.amid, **common)
    online_teacher = build_net("amid_teacher", cfg, info)
    student.share_modules(online_teacher)
    auxiliary = build_net("auxiliary", cfg, info)
    auxiliary.share_modules(online_teacher, head=False)
    return AMIDModule(student, online_teacher, auxiliary, settings=cfg.amid, **common)


def build_module(method: str, cfg: RunConfig, info: DatasetInfo, teacher: PrivilegedNet | None = None) -> PrivkdModule:
    """The LightningModule that trains ``method``; students need the fold's trained ``teacher``."""
    common = dict(task=info.task, n_outputs=info.n_outputs, lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    if method == "baseline":
        return PrivkdModule(build_net("baseline", cfg, info), **common)
    if method == "teacher":
        t = cfg.teacher
        return TeacherModule(
            build_net("teacher", cfg, info),
            tnet_loss=t.tnet_loss,
            tnet_weight=t.tnet_weight,
            align_weight=t.align_weight,
            adapter_task_weight=t.adapter_task_weight,
            **common,
        )
    if method == "amid":
        return build_amid(cfg, info, teacher, common)
    if method not in STUDENT_METHODS:
        raise ConfigError("methods", f"unknown method {method!r}", f"use one of {list(METHOD_NAMES)}")
    if teacher is None:
        raise ValueError(f"{method} needs the fold's trained teacher")
    student = build_net("student", cfg, info)
    if cfg.student.init_from_teacher:
        student.load_shared_weights(teacher)
    ot_loss = StructuralOTLoss(k=cfg.structural.k, epsilon=cfg.structural.epsilon, mode=cfg.structural.ot_mode)
    if method == "pkdot":
        return PKDOTModule(student, teacher, ot_loss=ot_loss, beta=cfg.pkdot.beta, **common)
    if method == "mtpkdot":
        m = cfg.mtpkdot
        if not teacher.adapters:
            raise ConfigError("teacher.align_weight", "mtpkdot needs a teacher with modality adapters", "set align_weight > 0")
        return MTPKDOTModule(student, teacher, ot_loss=ot_loss, alpha=m.alpha, beta=m.beta, gamma=m.gamma, **common)
    return PointToPointModule(student, teacher, kind=method.removeprefix("p2p_"), beta=cfg.p2p.beta, temperature=cfg.p2p.temperature, **common)
