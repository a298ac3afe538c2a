"""The contract every registered method keeps, checked over ``registry.specs()``.

The runner trains, saves, resumes and deploys rows without naming their method, so what it
relies on must hold for each of them, and for a method added from outside privkd through the
same :func:`~privkd.methods.registry.register_method`: it builds from a config, one training
step gives finite loss terms whose gradients reach only parameters it optimises (never a
frozen teacher or T-Net), its state survives a ``weights_only`` checkpoint round trip, and a
deployable row's network runs, saved and loaded as a student, on the prevalent modalities
alone. An RKD-style method (relational distances, Park et al. CVPR 2019) defined below is
held to the same contract, trained through the same machinery as the built-in ones.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from configs import fitted_config
from torch import Tensor

from privkd.config import schema
from privkd.config.schema import RunConfig
from privkd.data import MultimodalDataset, read_info
from privkd.data.dataset import Batch
from privkd.data.h5format import DatasetInfo, write_dataset
from privkd.data.loaders import make_loader
from privkd.data.synthetic import SyntheticSpec, build_synthetic_dataset, synthetic_arrays
from privkd.deploy.student import load_student, save_student
from privkd.errors import ConfigError
from privkd.methods import linear, registry
from privkd.methods.base import FoldData, PrivkdModule
from privkd.methods.student import StudentModule, build_student, student_arguments
from privkd.models.network import NetOutput, PrivilegedNet
from privkd.training.fit import epoch_log_path, fit, seed_everything

MODALITIES = ["accelerometer", "gyroscope"]

TINY = {
    "model": {"embed_dim": 8, "fusion_dim": 8, "tnet_hidden": 8, "tnet_bottleneck": 4},
    "training": {"epochs": 1, "batch_size": 16, "patience": 1, "progress_bar": False, "limit_train_batches": 1},
    "structural": {"k": 4},
    "teacher": {"tnet_refit_epochs": 2},
    "amid": {"warmup_epochs": 0},  # a warm-up step would leave AMID's MI and adversarial terms out of the check
}
"""Networks and a schedule small enough for one step in well under a second per method."""


@dataclass(frozen=True)
class RKDConfig:
    """The ``rkd_distance`` section: the weight of the relational distance term."""

    weight: float = 1.0


def relational_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-D (Park et al., Eq. 4-5): Huber loss between the pairwise distance matrices of the
    batch's student and teacher embeddings, each divided by its mean distance, so that only
    the relations between samples are distilled, not the teacher's scale."""

    def normalised(embedding: Tensor) -> Tensor:
        distances = torch.cdist(embedding, embedding)
        return distances / distances[distances > 0].mean()

    return F.smooth_l1_loss(normalised(student), normalised(teacher.detach()))


class RKDModule(StudentModule):
    """A distilled student with the task loss plus ``weight`` times RKD-D on joint embeddings."""

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None,
                    method: str) -> "RKDModule":
        module = cls(build_student(cfg, info, teacher), teacher, **student_arguments(cfg, info))
        module.weights["relational"] = cfg.section(method).weight
        return module

    def distillation_terms(self, batch: Batch, teacher: NetOutput, student: NetOutput) -> dict[str, Tensor]:
        return {"relational": relational_distance_loss(student.embedding, teacher.embedding)}


RKD = "rkd_distance"
METHODS = [spec.name for spec in registry.specs()] + [RKD]


@pytest.fixture(params=METHODS)
def spec(request) -> Iterator[registry.MethodSpec]:
    """Each registered method's spec, and the RKD method's, registered for the test only."""
    if request.param != RKD:
        yield registry.method_spec(request.param)
        return
    registry.register_method(RKD, role="student", teacher="teacher", sections=("student",),
                             needs_privileged=True, settings=RKDConfig)(RKDModule)
    try:
        yield registry.method_spec(RKD)
    finally:
        del registry._METHODS[RKD], schema.EXTENSION_SECTIONS[RKD]


@pytest.fixture(scope="module")
def datasets(watch_path, tmp_path_factory) -> dict[str, tuple[DatasetInfo, MultimodalDataset, dict]]:
    """Feature vectors (a small known-answer task, which every method fits, the linear ones
    included), the same as a regression task, and signals (the embedded data, with the
    convolutional encoders), each with the config keys that name its modalities."""
    directory = tmp_path_factory.mktemp("contract")
    features = build_synthetic_dataset(SyntheticSpec("relevant_features", d=8, n_train=64, n_val=32, n_test=32), 0,
                                       directory / "features.h5")
    x, x_star, _ = synthetic_arrays(SyntheticSpec("relevant_features", d=8, n_train=96, n_val=0, n_test=0), 1)
    regression = write_dataset(directory / "regression.h5", modalities={"x": x, "x_star": x_star},
                               labels=x_star.sum(axis=1), subjects=[f"s{i // 8}" for i in range(len(x))],
                               task="regression", target_names=["score"],
                               modality_kinds={"x": "features", "x_star": "features"})
    modalities = {"prevalent": ["x"], "privileged": ["x_star"]}
    return {"features": (read_info(features), MultimodalDataset(features, in_memory=True), modalities),
            "regression": (read_info(regression), MultimodalDataset(regression, in_memory=True), modalities),
            "signals": (read_info(watch_path), MultimodalDataset(watch_path, modalities=MODALITIES, in_memory=True),
                        {"prevalent": MODALITIES[:1], "privileged": MODALITIES[1:]})}


@pytest.fixture
def short_linear_searches(monkeypatch) -> None:
    """The linear references' validation searches cut to a value or two per choice: the
    contract is about the row they fit, and ``linear_gd``'s full grid takes 210 fits."""
    monkeypatch.setattr(linear, "REGULARISATION_GRID", (1.0,))
    monkeypatch.setattr(linear, "IMITATION_GRID", (0.0, 0.5))
    monkeypatch.setattr(linear, "TEMPERATURE_GRID", (2.0,))


def fold_data(dataset: MultimodalDataset, cfg: RunConfig) -> FoldData:
    """Small training, validation and test parts spread over the file (so over its classes)."""
    rows = np.linspace(0, len(dataset) - 1, 96).astype(int)
    return FoldData(dataset.subset(rows[0::3]), dataset.subset(rows[1::3]), dataset.subset(rows[2::3]), cfg.training)


def build(spec: registry.MethodSpec, cfg: RunConfig, info: DatasetInfo, seed: int = 0) -> PrivkdModule | None:
    """The method's module, with a freshly built network of the teacher it distils from; or
    ``None`` when the method refuses the data, as it must, with a config error on ``methods``
    (a linear reference on signals)."""
    seed_everything(seed)
    teacher_name = spec.teacher_for(cfg)
    try:
        teacher = registry.build_module(teacher_name, cfg, info).net.eval() if teacher_name is not None else None
        seed_everything(seed + 1)
        return registry.build_module(spec.name, cfg, info, teacher=teacher)
    except ConfigError as err:
        assert err.key == "methods", err
        return None


def contract_config(modalities: dict, **values: dict) -> RunConfig:
    """The tiny config on the data's modalities, with ``values`` besides."""
    return fitted_config({**TINY, "data": modalities, **values})


def optimised_parameters(module: PrivkdModule) -> set[int]:
    """Ids of the parameters the method's optimisers step, in any form ``configure_optimizers`` returns."""
    configured = module.configure_optimizers()
    if isinstance(configured, dict):
        configured = configured["optimizer"]
    if isinstance(configured, tuple):
        configured = configured[0]
    optimizers = configured if isinstance(configured, list) else [configured]
    return {id(p) for optimizer in optimizers for group in optimizer.param_groups for p in group["params"]}


def first_batch(dataset: MultimodalDataset, cfg: RunConfig, train: bool) -> Batch:
    return next(iter(make_loader(dataset, cfg.training, train=train)))


CASES = {"features": ("features", False), "features-hallucinating": ("features", True),
         "regression-hallucinating": ("regression", True), "signals-hallucinating": ("signals", True)}
"""Data and ``student.hallucinate`` of each case: a student that hallucinates holds a T-Net
that must stay frozen, the strictest case, and the one checked on the other data too."""


@pytest.mark.parametrize("case", CASES)
def test_one_step_has_finite_terms_whose_gradients_reach_only_what_the_method_optimises(spec, datasets, case):
    kind, hallucinate = CASES[case]
    info, dataset, modalities = datasets[kind]
    if info.task not in spec.tasks:
        return  # a run on this task refuses it before training (training.checks.check_against_dataset)
    cfg = contract_config(modalities, student={"hallucinate": hallucinate})
    module = build(spec, cfg, info)
    if module is None:
        return
    module.train()
    terms = module.loss_terms(first_batch(fold_data(dataset, cfg).train, cfg, train=True))
    assert terms and all(torch.isfinite(value).all() for value in terms.values()), terms
    module.weighted_total(terms).backward()

    names = {id(p): name for name, p in module.named_parameters()}
    reached = {id(p) for p in module.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    frozen = {id(p) for part in module.frozen_modules() for p in part.parameters()}
    frozen |= {id(p) for p in module.parameters() if not p.requires_grad}
    assert not [names[p] for p in reached & frozen], "a frozen part received gradients"
    unstepped = [names[p] for p in reached - optimised_parameters(module)]
    assert not unstepped, "gradients reach parameters no optimiser steps"
    assert reached & {id(p) for p in module.net.parameters()}, "the row's network learns nothing from the step"


def test_a_trained_step_survives_a_checkpoint_round_trip_and_deploys_without_privileged_inputs(spec, datasets, tmp_path,
                                                                                              short_linear_searches):
    """Trained as the runner trains a row, on feature vectors, which every method fits."""
    info, dataset, modalities = datasets["features"]
    cfg = contract_config(modalities)
    module = build(spec, cfg, info)
    if module is None:
        return
    fold = fold_data(dataset, cfg)
    module.prepare_fold(fold)
    validation = module.fit_directly(fold)  # the runner's order (training.row.fit_row): directly, else by descent
    if validation is None:
        fitted = fit(module, fold.train, fold.val, cfg.training, tmp_path / "row", seed=0)
        module, validation = fitted.module, fitted.validation
        logged = pd.read_csv(epoch_log_path(tmp_path / "row"))
        terms = logged[[c for c in logged.columns if c.startswith("train/")]].dropna(how="all")
        assert not terms.empty and np.isfinite(terms.to_numpy(dtype=float)).all(), terms
    assert all(np.isfinite(value) for value in validation.values()), validation

    batch = first_batch(fold.val, cfg, train=False)
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": module.state_dict(), "method": module.training_state()}, path)
    restored = build(spec, cfg, info, seed=7)  # other random weights, overwritten by the checkpoint
    saved = torch.load(path, weights_only=True)
    restored.load_state_dict(saved["state_dict"])
    restored.load_training_state(saved["method"])
    module.eval(), restored.eval()
    with torch.no_grad():
        outputs = module(batch.inputs)
        assert torch.isfinite(outputs).all() and torch.equal(restored(batch.inputs), outputs)
    assert restored.training_state() == module.training_state()

    if spec.deployable:
        prevalent = {m: batch.inputs[m] for m in cfg.data.prevalent}
        with torch.no_grad():
            assert torch.equal(module.net(prevalent).logits, outputs)  # the privileged inputs were never read
        directory = save_student(tmp_path / "student", module.net, cfg, info, row=spec.name, method=spec.name,
                                 role=spec.role, fold=0, test_metrics={},
                                 train_subjects=sorted(set(fold.train.subjects)))
        with torch.no_grad():
            torch.testing.assert_close(load_student(directory).net(prevalent).logits, outputs)  # rebuilt, not copied


def test_the_rkd_method_is_gone_after_the_tests():
    assert RKD not in registry.method_names() and RKD not in schema.EXTENSION_SECTIONS


def test_the_relational_distance_loss_ignores_scale_and_sees_relations():
    torch.manual_seed(0)
    teacher = torch.randn(8, 4)
    assert float(relational_distance_loss(3.0 * teacher, teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(relational_distance_loss(torch.randn(8, 4), teacher)) > 0.01

