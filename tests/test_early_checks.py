"""Values that used to be checked too late (issue 31, section 4).

Each of them passed the config checks, made a run directory, and then failed every row at
training time (exit 3), where ``--resume`` could not help because ``config.yaml`` keeps the
bad value. Each is now refused before the run directory exists: exit 2, one message naming the
config key and the fix, and nothing under ``--out``. The config values are checked by
:func:`privkd.config.validation.validate` (every numeric key of the schema has a range), the
ones only the dataset reveals (backbones, weights files, classes, modality names) where the
dataset's description is first read (:func:`privkd.training.experiment.check_before_run`).
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.accelerators import AcceleratorRegistry
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import config_from_dict
from privkd.config.rows import set_key
from privkd.config.schema import RunConfig
from privkd.data import write_dataset
from privkd.errors import ConfigError

# ---------------------------------------------------------------------------------- helpers


def dataset(path: Path, *, modalities: tuple[str, ...] = ("acc", "gyro"), classes: int = 2,
            kind: str = "signal") -> Path:
    """A small valid classification dataset: 6 subjects of 8 samples, every modality of ``kind``."""
    rng = np.random.default_rng(0)
    n = 48
    shape = (3, 32) if kind == "signal" else (12,)
    return write_dataset(path, modalities={m: rng.normal(size=(n, *shape)).astype(np.float32) for m in modalities},
                         labels=np.arange(n) % classes, subjects=[f"s{i // 8}" for i in range(n)],
                         task="classification", class_names=[f"c{i}" for i in range(classes)],
                         modality_kinds={m: kind for m in modalities},
                         sampling_rates={m: 32.0 for m in modalities} if kind == "signal" else None)


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("data") / "data.h5")


def config(data: Path, **changes: Any) -> dict[str, Any]:
    """A quick one-fold baseline on ``data``, with ``changes`` (``"section.key": value``) applied."""
    values: dict[str, Any] = {
        "name": "early", "methods": ["baseline"],
        "data": {"path": str(data), "prevalent": ["acc"], "privileged": ["gyro"]},
        "evaluation": {"n_folds": 3, "max_folds": 1},
        "training": {"epochs": 1, "batch_size": 16, "progress_bar": False},
        "structural": {"k": 5},
    }
    for key, value in changes.items():
        set_key(values, key.split("."), value)
    return values


def invoke(tmp_path: Path, values: dict[str, Any], command: str = "run", *extra: str):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return CliRunner().invoke(app, [command, str(path), "--out", str(tmp_path / "runs"), *extra])


def assert_refused_before_the_run_dir(result, tmp_path: Path, key: str) -> None:
    """Exit 2, one ``error: config key '<key>': ... Fix: ...`` message, and nothing under ``--out``."""
    message = " ".join(result.output.split())
    assert result.exit_code == 2, (result.exit_code, message, result.exception)
    assert "Traceback" not in result.output
    assert f"config key '{key}'" in message and "Fix:" in message, message
    out = tmp_path / "runs"
    assert not out.exists() or not any(out.iterdir()), sorted(out.rglob("*"))


# ------------------------------------------------------------------- values of the config


NEWLY_CHECKED: list[tuple[str, Any]] = [
    ("model.dropout", 1.5),
    ("model.dropout", 1.0),
    ("model.dropout", -0.1),
    ("model.fusion_dim", 0),
    ("model.tnet_hidden", -5),
    ("model.tnet_bottleneck", 0),
    ("training.num_workers", -1),
    ("training.limit_train_batches", 0),
    ("training.limit_train_batches", -1),
    ("training.devices", 0),
    ("training.num_nodes", 0),
    ("training.accelerator", "foo"),
    ("training.strategy", "foo"),
    ("seed", 2**32),
    ("seed", 2**32 - 1),  # the folds are seeded seed + 1000 x fold: the last ones would be out of range
    ("seed", -1),
    ("teacher.tnet_weight", -1.0),
    ("teacher.tnet_refit_epochs", -1),
    ("teacher.tnet_refit_lr", 0.0),
    ("teacher.align_weight", -1.0),
    ("teacher.adapter_task_weight", -1.0),
    ("pkdot.beta", -0.5),
    ("mtpkdot.alpha", -1.0),
    ("mtpkdot.beta", -1.0),
    ("mtpkdot.gamma", -1.0),
    ("p2p.beta", -1.0),
    ("p2p.temperature", 0.0),
    ("p2p.temperature", -4.0),
    ("p2p.task_weight", -1.0),
    ("amid.alpha_mi_s", -1.0),
    ("amid.alpha_mi_a", -1.0),
    ("amid.alpha_adv", -1.0),
    ("amid.tau", 0.0),
    ("amid.warmup_epochs", -1),
    ("amid.discriminator_lr", 0.0),
    ("study.seeds", 0),
]
"""Values the config checks let through before issue 31's fix (each made a run directory)."""


@pytest.mark.parametrize(("key", "value"), NEWLY_CHECKED, ids=[f"{k}={v}" for k, v in NEWLY_CHECKED])
def test_a_bad_value_is_refused_before_the_run_directory(key, value, shared_data, tmp_path):
    result = invoke(tmp_path, config(shared_data, **{key: value}))
    assert_refused_before_the_run_dir(result, tmp_path, key)


@pytest.mark.parametrize(("key", "known", "unknown"), [
    ("training.accelerator", ["auto", "cpu", "gpu", "cuda", "mps"], ["foo", "CPU", "ddp"]),
    ("training.strategy", ["auto", "ddp", "DDP", "ddp_spawn", "fsdp", "single_device"], ["foo", "cpu", "dp"]),
])
def test_accelerator_and_strategy_names_are_the_ones_lightning_takes(key, known, unknown, shared_data):
    for name in known:  # whether the machine has the accelerator is checked when a run starts
        config_from_dict(config(shared_data, **{key: name}))
    for name in unknown:
        with pytest.raises(ConfigError, match=f"{key}.*{name}.*Lightning") as refused:
            config_from_dict(config(shared_data, **{key: name}))
        assert refused.value.key == key


def test_the_largest_seed_whose_folds_stay_in_range_passes(shared_data):
    n_folds = 3
    config_from_dict(config(shared_data, seed=2**32 - 1 - 1000 * n_folds))
    with pytest.raises(ConfigError, match="seed"):
        config_from_dict(config(shared_data, seed=2**32 - 1000 * n_folds))


BAD_VALUE: dict[str, Any] = {
    "seed": -1,
    "data.train_fraction": 0.0,
    "evaluation.n_folds": 1,
    "evaluation.n_val_subjects": 0,
    "evaluation.val_share": 1.0,
    "evaluation.min_val_samples": 0,
    "evaluation.max_folds": 0,
    "model.embed_dim": 0,
    "model.fusion_dim": 0,
    "model.dropout": 1.5,
    "model.tokens": 0,
    "model.attention_heads": 0,
    "model.tnet_hidden": -5,
    "model.tnet_bottleneck": 0,
    "training.epochs": 0,
    "training.batch_size": 0,
    "training.min_steps": 0,
    "training.lr": 0.0,
    "training.weight_decay": -1.0,
    "training.patience": 0,
    "training.num_workers": -1,
    "training.limit_train_batches": 0,
    "training.devices": 0,
    "training.num_nodes": 0,
    "training.lr_warmup_epochs": -1,
    "training.lr_step_epochs": 0,
    "training.lr_step_gamma": 0.0,
    "training.grad_clip": 0.0,
    "training.jobs": 0,
    "training.threads": 0,
    "teacher.tnet_weight": -1.0,
    "teacher.tnet_refit_epochs": -1,
    "teacher.tnet_refit_lr": 0.0,
    "teacher.align_weight": -1.0,
    "teacher.adapter_task_weight": -1.0,
    "student.tnet_crossfit": -1,
    "structural.k": 0,
    "structural.epsilon": 0.0,
    "pkdot.beta": -1.0,
    "mtpkdot.alpha": -1.0,
    "mtpkdot.beta": -1.0,
    "mtpkdot.gamma": -1.0,
    "p2p.beta": -1.0,
    "p2p.temperature": 0.0,
    "p2p.task_weight": -1.0,
    "amid.alpha_mi_s": -1.0,
    "amid.alpha_mi_a": -1.0,
    "amid.alpha_adv": -1.0,
    "amid.tau": 0.0,
    "amid.warmup_epochs": -1,
    "amid.discriminator_lr": 0.0,
    "study.seeds": 0,
}
"""One out-of-range value for every numeric key of the schema."""


def _is_numeric(tp: Any) -> bool:
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) else (tp,)
    return any(option in (int, float) for option in options)


def numeric_keys() -> list[str]:
    keys = []
    for name, tp in typing.get_type_hints(RunConfig).items():
        if dataclasses.is_dataclass(tp):
            keys += [f"{name}.{key}" for key, inner in typing.get_type_hints(tp).items() if _is_numeric(inner)]
        elif _is_numeric(tp):
            keys.append(name)
    return keys


def test_every_numeric_key_of_the_schema_has_a_range(shared_data):
    """A numeric key added to the schema without a range check (and a case here) fails this test."""
    keys = numeric_keys()
    assert "model.dropout" in keys and "seed" in keys and "training.limit_train_batches" in keys
    assert sorted(set(keys) - set(BAD_VALUE)) == [], "give the new key a range in privkd.config.validation and a case here"
    unchecked = []
    for key in keys:
        try:
            config_from_dict(config(shared_data, **{key: BAD_VALUE[key]}))
        except ConfigError as err:
            assert err.key == key, (key, str(err))
        else:
            unchecked.append(key)
    assert unchecked == [], f"out-of-range values accepted for {unchecked}"


# ----------------------------------------------------------- what only the dataset reveals


def test_an_unknown_backbone_is_refused_before_the_run_directory(shared_data, tmp_path):
    result = invoke(tmp_path, config(shared_data, **{"model.backbones": {"acc": "no_such_net"}}))
    assert_refused_before_the_run_dir(result, tmp_path, "model.backbones.acc")


@pytest.mark.parametrize("backbone", ["resnet18", "r3d_18"])
def test_a_backbone_of_another_modality_kind_is_refused_before_the_run_directory(backbone, shared_data, tmp_path):
    result = invoke(tmp_path, config(shared_data, **{"model.backbones": {"gyro": backbone}}))
    assert_refused_before_the_run_dir(result, tmp_path, "model.backbones.gyro")
    assert "signal" in result.output


def test_a_signal_backbone_on_feature_vectors_is_refused_before_the_run_directory(tmp_path):
    data = dataset(tmp_path / "features.h5", kind="features")
    result = invoke(tmp_path, config(data, **{"model.backbones": {"acc": "signal_cnn"}}))
    assert_refused_before_the_run_dir(result, tmp_path, "model.backbones.acc")


def test_a_missing_backbone_weights_file_is_refused_before_the_run_directory(shared_data, tmp_path):
    result = invoke(tmp_path, config(shared_data, **{"model.backbone_weights": {"acc": str(tmp_path / "nowhere.pt")}}))
    assert_refused_before_the_run_dir(result, tmp_path, "model.backbone_weights.acc")


def test_backbone_weights_of_another_architecture_are_refused_before_the_run_directory(shared_data, tmp_path):
    torch.save(torch.nn.Linear(3, 4).state_dict(), tmp_path / "linear.pt")
    result = invoke(tmp_path, config(shared_data, **{"model.backbone_weights": {"gyro": str(tmp_path / "linear.pt")}}))
    assert_refused_before_the_run_dir(result, tmp_path, "model.backbone_weights.gyro")


def test_a_one_class_dataset_is_refused_before_the_run_directory(tmp_path):
    result = invoke(tmp_path, config(dataset(tmp_path / "one.h5", classes=1)))
    assert_refused_before_the_run_dir(result, tmp_path, "data.path")
    assert "c0" in result.output


@pytest.mark.parametrize(("name", "role"), [("training", "prevalent"), ("forward", "privileged")])  # '.': the format
def test_a_modality_name_that_cannot_name_a_module_is_refused_before_the_run_directory(name, role, tmp_path):
    other = "gyro" if role == "prevalent" else "acc"
    data = dataset(tmp_path / "names.h5", modalities=(name, other))
    roles = {"prevalent": [name], "privileged": [other]} if role == "prevalent" else {"prevalent": [other], "privileged": [name]}
    result = invoke(tmp_path, config(data, **{f"data.{key}": value for key, value in roles.items()}))
    assert_refused_before_the_run_dir(result, tmp_path, f"data.{role}")
    assert name in result.output


def test_an_accelerator_this_machine_lacks_is_refused_before_the_run_directory(shared_data, tmp_path):
    missing = sorted(name for name in AcceleratorRegistry.available_accelerators()
                     if not AcceleratorRegistry[name]["accelerator"].is_available())
    if not missing:
        pytest.skip("every accelerator Lightning knows is available here")
    result = invoke(tmp_path, config(shared_data, **{"training.accelerator": missing[0]}))
    assert_refused_before_the_run_dir(result, tmp_path, "training.accelerator")


@pytest.mark.parametrize("command", [["study"], ["sweep", "--grid", "training.lr=0.001,0.01"]], ids=["study", "sweep"])
def test_a_study_or_sweep_refuses_what_the_dataset_reveals_before_its_directory(command, tmp_path):
    values = config(dataset(tmp_path / "data.h5"), **{"study.seeds": 2, "model.backbones": {"acc": "resnet18"}})
    result = invoke(tmp_path, values, *command)
    assert_refused_before_the_run_dir(result, tmp_path, "model.backbones.acc")
