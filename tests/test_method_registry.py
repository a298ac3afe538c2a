"""A method is one file plus one registration: the rest of privkd asks the registry.

The test registers a small method of its own, with its own config section, and runs it
through ``privkd run`` next to a built-in one, as a user adding a method would.
"""

import ast
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from configs import fitted_config
from typer.testing import CliRunner

import privkd
from privkd.cli import app
from privkd.config import schema
from privkd.config.loading import config_from_dict
from privkd.errors import ConfigError
from privkd.losses.task import task_loss
from privkd.methods import registry
from privkd.methods.base import PrivkdModule, common_arguments
from privkd.models.build import build_net


@dataclass(frozen=True)
class LogitPenaltyConfig:
    weight: float = 0.1


class LogitPenaltyModule(PrivkdModule):
    """Task loss plus ``weight`` times the mean squared logit: a prevalent-only regulariser."""

    @classmethod
    def from_config(cls, cfg, info, *, teacher, method):
        module = cls(build_net("baseline", cfg, info), **common_arguments(cfg, info))
        module.weights["penalty"] = cfg.section(method).weight
        return module

    def loss_terms(self, batch):
        logits = self.net(batch.inputs).logits
        return {"task": task_loss(self.task, logits, batch.label), "penalty": logits.pow(2).mean()}


@pytest.fixture
def logit_penalty():
    """``logit_penalty`` registered for this test only (removed from the registry and the schema after)."""
    registry.register_method("logit_penalty", role="baseline", settings=LogitPenaltyConfig)(LogitPenaltyModule)
    try:
        yield "logit_penalty"
    finally:
        del registry._METHODS["logit_penalty"], schema.EXTENSION_SECTIONS["logit_penalty"]


def test_a_method_registered_in_a_test_runs_through_privkd_run(logit_penalty, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({
        "name": "mine", "methods": ["baseline", logit_penalty], "logit_penalty": {"weight": 0.5},
        "variants": {"strong_penalty": {"method": logit_penalty, "set": {"logit_penalty.weight": 5.0}}},
        "evaluation": {"max_folds": 1}, "training": {"epochs": 1, "progress_bar": False},
    }))
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["methods"]) == ["baseline", "logit_penalty", "strong_penalty"]
    for row in ("logit_penalty", "strong_penalty"):
        record = json.loads((run_dir / "fold_0" / row / "metrics.json").read_text())
        assert record["method"] == "logit_penalty" and 0 <= record["test"]["accuracy"] <= 1
        assert (run_dir / "fold_0" / row / "student" / "weights.pt").is_file()  # a prevalent-only role deploys
        assert "train/penalty" in (run_dir / "fold_0" / row / "logs" / "metrics.csv").read_text()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["logit_penalty"] == {"weight": 0.5}  # the section sits at the top level, like a built-in one
    assert config_from_dict(saved).section("logit_penalty") == LogitPenaltyConfig(0.5)

    resumed = CliRunner().invoke(app, ["run", "--resume", str(run_dir)])
    assert resumed.exit_code == 0, resumed.output  # the saved config reads back as the same run


def test_the_section_of_a_registered_method_is_checked_like_a_built_in_one(logit_penalty):
    with pytest.raises(ConfigError, match=r"logit_penalty\.wieght"):
        config_from_dict({"methods": [logit_penalty], "logit_penalty": {"wieght": 1.0}})
    with pytest.raises(ConfigError, match=r"logit_penalty\.weight.*expected float"):
        config_from_dict({"methods": [logit_penalty], "logit_penalty": {"weight": "heavy"}})
    assert config_from_dict({"methods": [logit_penalty]}).section(logit_penalty) == LogitPenaltyConfig()


def test_the_registration_is_gone_after_the_test():
    assert "logit_penalty" not in registry.method_names()
    assert "logit_penalty" not in schema.EXTENSION_SECTIONS


def test_registered_facts_of_the_built_in_methods():
    specs = {spec.name: spec for spec in registry.specs()}
    linear = ["linear", "linear_teacher", "linear_privileged", "linear_gd"]
    assert list(specs) == ["baseline", *linear, "teacher", "mt_teacher", "pkdot", "mtpkdot", "p2p_cosine", "p2p_mse",
                           "p2p_kl", "amid_teacher", "amid"]
    teachers = ["teacher", "mt_teacher", "amid_teacher"]
    assert [name for name, spec in specs.items() if spec.provides_teacher] == teachers
    assert [name for name, spec in specs.items() if spec.role == registry.REFERENCE_ROLE] == linear
    assert [name for name, spec in specs.items() if not spec.deployable] == [*linear, *teachers]
    assert (registry.bound_row("lower"), registry.bound_row("upper")) == ("baseline", "teacher")
    assert [name for name, spec in specs.items() if spec.tasks == ("classification",)] == ["p2p_kl", "amid_teacher", "amid"]
    online, fixed = (config_from_dict({"amid": {"online_teacher": flag}}) for flag in (True, False))
    assert specs["amid"].teacher_for(online) is None and specs["amid"].teacher_for(fixed) == "amid_teacher"
    with pytest.raises(ValueError, match="already registered"):
        registry.register_method("pkdot", role="student")(PrivkdModule)


METHOD_NAMES = {"baseline", "teacher", "mt_teacher", "amid_teacher", "pkdot", "mtpkdot", "amid", "p2p_cosine", "p2p_mse",
                "p2p_kl"}
METHOD_CLASSES = {"BaselineModule", "TeacherModule", "SelfDistilledTeacherModule", "AMIDTeacherModule", "PKDOTModule",
                  "MTPKDOTModule", "AMIDModule", "PointToPointModule", "StudentModule"}


def test_no_source_file_outside_methods_tests_for_a_method():
    """Outside ``methods/`` no code compares with a method's name or checks a method's class:
    what differs between methods is asked from the registry."""
    package = Path(privkd.__file__).parent
    offences = []
    for path in package.rglob("*.py"):
        if path.relative_to(package).parts[0] == "methods":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                constants = [c.value for c in (node.left, *node.comparators) if isinstance(c, ast.Constant)]
                constants += [e.value for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                              for e in c.elts if isinstance(e, ast.Constant)]
                offences += [f"{path.name}:{node.lineno} compares with {c!r}" for c in constants if c in METHOD_NAMES]
            if isinstance(node, ast.Name) and node.id in METHOD_CLASSES:
                offences.append(f"{path.name}:{node.lineno} uses {node.id}")
    assert not offences, offences


def test_the_structural_loss_of_a_registered_student_follows_its_row_config():
    info = type("Info", (), {"modalities": {m: type("M", (), {"kind": "signal", "sample_shape": (3, 20)})()
                                            for m in ("accelerometer", "gyroscope")}, "n_outputs": 3, "task": "classification"})()
    cfg = fitted_config({"model": {"embed_dim": 8, "fusion_dim": 8}, "structural": {"k": 5, "ot_mode": "paper"},
                         "student": {"hallucinate": True}})
    teacher = build_net("teacher", cfg, info)
    module = registry.build_module("pkdot", cfg, info, teacher=teacher)
    assert (module.structure.k, module.structure.mode) == (5, "paper")
    assert not torch.equal(module.net.head.weight, teacher.head.weight)  # from random weights by default
    assert torch.equal(module.net.tnet.encoder[0].weight, teacher.tnet.encoder[0].weight)  # but the teacher's T-Net
    started = registry.build_module("pkdot", dataclasses.replace(cfg, student=schema.StudentConfig(init_from_teacher=True, hallucinate=True)),
                                    info, teacher=teacher)
    assert torch.equal(started.net.head.weight, teacher.head.weight)
    with pytest.raises(ValueError, match="needs the fold's trained teacher"):
        registry.build_module("pkdot", cfg, info)


def test_point_to_point_task_weight_reaches_generalized_distillations_pure_imitation():
    """``p2p.task_weight: 0`` (Lopez-Paz et al.'s lambda = 1) leaves the task loss out of the total."""
    info = type("Info", (), {"modalities": {m: type("M", (), {"kind": "signal", "sample_shape": (3, 20)})()
                                            for m in ("accelerometer", "gyroscope")}, "n_outputs": 3, "task": "classification"})()
    cfg = fitted_config({"model": {"embed_dim": 8, "fusion_dim": 8}, "p2p": {"task_weight": 0.0, "beta": 1.0}})
    module = registry.build_module("p2p_kl", cfg, info, teacher=build_net("teacher", cfg, info))
    assert module.weights == {"task": 0.0, "match": 1.0}
    terms = {"task": torch.tensor(5.0), "match": torch.tensor(0.25)}
    assert float(module.weighted_total(terms)) == 0.25


def test_a_student_that_does_not_hallucinate_is_the_baselines_network():
    """``student.hallucinate: false``: no T-Net, the prevalent modalities fused alone, so the
    student's parameters are the baseline's one for one; starting it from the teacher is refused."""
    info = type("Info", (), {"modalities": {m: type("M", (), {"kind": "signal", "sample_shape": (3, 20)})()
                                            for m in ("accelerometer", "gyroscope")}, "n_outputs": 3, "task": "classification"})()
    cfg = fitted_config({"model": {"embed_dim": 8, "fusion_dim": 8}, "student": {"hallucinate": False}})
    module = registry.build_module("p2p_kl", cfg, info, teacher=build_net("teacher", cfg, info))
    assert module.net.tnet is None and module.net.fused == ["accelerometer"]
    baseline = build_net("baseline", cfg, info)
    assert {k: v.shape for k, v in module.net.state_dict().items()} == {k: v.shape for k, v in baseline.state_dict().items()}
    assert build_net("teacher", cfg, info).tnet is not None  # the teacher still trains its T-Net
    with pytest.raises(ConfigError, match="student.init_from_teacher"):
        fitted_config({"student": {"hallucinate": False, "init_from_teacher": True}})
