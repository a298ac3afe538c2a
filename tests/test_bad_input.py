"""The catalogue of bad input: each case reaches the CLI as one message naming the file, field
or key and the fix, a non-zero exit code, no Python traceback, and no output left behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import config_from_dict
from privkd.data import read_info, write_dataset
from privkd.deploy import save_student
from privkd.models.build import build_net


def small_dataset(path: Path, *, subjects: int = 6, per_subject: int = 8, classes: int = 2,
                  mutate: Callable | None = None) -> Path:
    """A valid two-modality dataset (acc prevalent, gyro privileged), ``mutate``-d before writing."""
    rng = np.random.default_rng(0)
    n = subjects * per_subject
    arrays = {"acc": rng.normal(size=(n, 3, 32)).astype(np.float32), "gyro": rng.normal(size=(n, 3, 32)).astype(np.float32)}
    labels = np.arange(n) % classes
    subject_ids = [f"s{i // per_subject}" for i in range(n)]
    if mutate is not None:
        mutate(arrays, labels, subject_ids)
    return write_dataset(path, modalities=arrays, labels=labels, subjects=subject_ids, task="classification",
                         class_names=[f"c{i}" for i in range(classes)], modality_kinds={"acc": "signal", "gyro": "signal"},
                         sampling_rates={"acc": 32.0, "gyro": 32.0})


def config_file(tmp: Path, dataset: Path | str, **sections) -> Path:
    values = {"name": "bad", "methods": ["baseline", "teacher", "pkdot"],
              "data": {"path": str(dataset), "prevalent": ["acc"], "privileged": ["gyro"]},
              "evaluation": {"n_folds": 3, "max_folds": 1},
              "training": {"epochs": 1, "batch_size": 16, "progress_bar": False}, "structural": {"k": 5}}
    for section, update in sections.items():
        values[section] = {**values.get(section, {}), **update} if isinstance(update, dict) else update
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def run_args(tmp: Path, config: Path, *extra: str) -> list[str]:
    return ["run", str(config), "--out", str(tmp / "runs"), *extra]


# -------------------------------------------------------------------------------- the cases


def missing_dataset(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, tmp / "nowhere.h5"))


def not_hdf5(tmp: Path) -> list[str]:
    (tmp / "notes.h5").write_text("not a dataset")
    return run_args(tmp, config_file(tmp, tmp / "notes.h5"))


def truncated_hdf5(tmp: Path) -> list[str]:
    path = small_dataset(tmp / "data.h5")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return run_args(tmp, config_file(tmp, path))


def modality_missing(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), data={"prevalent": ["camera"]}))


def count_mismatch(tmp: Path) -> list[str]:
    path = small_dataset(tmp / "data.h5")
    with h5py.File(path, "a") as h5:
        subjects = h5["subjects"].asstr()[()][:-3]
        del h5["subjects"]
        h5.create_dataset("subjects", data=subjects.astype(object), dtype=h5py.string_dtype())
    return run_args(tmp, config_file(tmp, path))


def nan_in_signal(tmp: Path) -> list[str]:
    path = small_dataset(tmp / "data.h5")
    with h5py.File(path, "a") as h5:  # the writer refuses NaN; a file edited afterwards must be caught at run time
        h5["modalities/acc"][5, 1, 7] = np.nan
    return run_args(tmp, config_file(tmp, path))


def constant_channel(tmp: Path) -> list[str]:
    def flatten(arrays, labels, subjects):
        arrays["acc"][:, 2, :] = 0.25

    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5", mutate=flatten)))


def label_outside_classes(tmp: Path) -> list[str]:
    path = small_dataset(tmp / "data.h5")
    with h5py.File(path, "a") as h5:
        h5["labels"][3] = 7
    return run_args(tmp, config_file(tmp, path))


def too_few_validation_samples(tmp: Path) -> list[str]:
    def thin(arrays, labels, subjects):
        for i in range(len(subjects)):  # subject s5 keeps one sample; the rest of its rows go to s4
            if subjects[i] == "s5" and i % 8:
                subjects[i] = "s4"

    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5", mutate=thin), evaluation={"n_folds": 5, "max_folds": None, "n_val_subjects": 1}))


def fewer_subjects_than_folds(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), evaluation={"n_folds": 10}))


def class_absent_from_training(tmp: Path) -> list[str]:
    def isolate(arrays, labels, subjects):
        labels[:] = 0
        labels[[i for i, s in enumerate(subjects) if s == "s5"]] = 1  # class c1 only in subject s5

    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5", mutate=isolate),
                                     evaluation={"n_folds": 3, "max_folds": None}))


def batch_smaller_than_anchors(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), structural={"k": 30}))


def unknown_config_key(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), training={"epocs": 3}))


def wrong_config_type(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), training={"epochs": "many"}))


def overlapping_roles(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), data={"privileged": ["acc"]}))


def unknown_privileged_modality(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), data={"privileged": ["eda"]}))


def output_not_writable(tmp: Path) -> list[str]:
    (tmp / "taken").write_text("a file where the output directory should go")
    return ["run", str(config_file(tmp, small_dataset(tmp / "data.h5"))), "--out", str(tmp / "taken" / "runs")]


def missing_config_file(tmp: Path) -> list[str]:
    return run_args(tmp, tmp / "nosuch.yaml")


def invalid_yaml(tmp: Path) -> list[str]:
    (tmp / "broken.yaml").write_text("training: [epochs: 3\n")
    return run_args(tmp, tmp / "broken.yaml")


def resume_not_a_run(tmp: Path) -> list[str]:
    (tmp / "somewhere").mkdir()
    return ["run", "--resume", str(tmp / "somewhere")]


def trained_student(tmp: Path) -> Path:
    data = small_dataset(tmp / "data.h5")
    cfg = config_from_dict(yaml.safe_load(config_file(tmp, data).read_text()))
    info = read_info(data)
    net = build_net("student", cfg, info)
    return save_student(tmp / "student", net, cfg, info, row="pkdot", method="pkdot", role="student", fold=0,
                        test_metrics={"accuracy": 0.5}, train_subjects=("s0",))


def predict_without_prevalent_modality(tmp: Path) -> list[str]:
    student = trained_student(tmp)
    rng = np.random.default_rng(1)
    only_gyro = write_dataset(tmp / "gyro_only.h5", modalities={"gyro": rng.normal(size=(4, 3, 32))}, labels=[0, 1, 0, 1],
                              subjects=["x"] * 4, task="classification", class_names=["c0", "c1"],
                              modality_kinds={"gyro": "signal"}, sampling_rates={"gyro": 32.0})
    return ["predict", str(student), str(only_gyro), "--out", str(tmp / "out" / "predictions.csv")]


def checkpoint_from_another_model(tmp: Path) -> list[str]:
    student = trained_student(tmp)
    torch.save({"layer.weight": torch.zeros(2, 2)}, student / "weights.pt")
    return ["predict", str(student), str(tmp / "data.h5"), "--out", str(tmp / "out" / "predictions.csv")]


def table_without_subject_column(tmp: Path) -> list[str]:
    pd.DataFrame({"eda.mean": [0.1, 0.2], "label": ["a", "b"]}).to_csv(tmp / "table.csv", index=False)
    return ["data", "import", "table", str(tmp / "table.csv"), str(tmp / "out" / "table.h5"), "--no-progress"]


def sweep_unknown_key(tmp: Path) -> list[str]:
    return ["sweep", str(config_file(tmp, small_dataset(tmp / "data.h5"))), "--grid", "structural.kk=5,10",
            "--out", str(tmp / "runs")]


CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    # case: (set-up returning the CLI arguments, words the message must contain)
    "missing dataset file": (missing_dataset, ["nowhere.h5", "does not exist"]),
    "file is not HDF5": (not_hdf5, ["notes.h5", "not an HDF5 file"]),
    "truncated HDF5": (truncated_hdf5, ["data.h5", "truncated"]),
    "config names a modality the dataset lacks": (modality_missing, ["data.prevalent", "camera", "acc"]),
    "samples / subjects count mismatch": (count_mismatch, ["data.h5", "/subjects"]),
    "NaN in a signal": (nan_in_signal, ["data.h5", "/modalities/acc", "NaN"]),
    "constant channel": (constant_channel, ["data.h5", "/modalities/acc", "constant"]),
    "label outside the declared classes": (label_outside_classes, ["data.h5", "/labels"]),
    "subject with too few samples for its fold": (too_few_validation_samples, ["validation", "n_val_subjects"]),
    "fewer subjects than folds": (fewer_subjects_than_folds, ["10 folds", "n_folds"]),
    "class absent from a training fold": (class_absent_from_training, ["c1", "no training sample"]),
    "batch smaller than the anchors": (batch_smaller_than_anchors, ["structural.k", "batch_size"]),
    "unknown config key": (unknown_config_key, ["training.epocs", "unknown key"]),
    "wrong config type": (wrong_config_type, ["training.epochs", "expected an int or 'auto'"]),
    "prevalent and privileged overlap": (overlapping_roles, ["data.privileged", "both prevalent and privileged"]),
    "privileged names an unknown modality": (unknown_privileged_modality, ["data.privileged", "eda"]),
    "output directory not writable": (output_not_writable, ["taken", "--out"]),
    "config file missing": (missing_config_file, ["nosuch.yaml", "not found"]),
    "config is not valid YAML": (invalid_yaml, ["broken.yaml", "YAML"]),
    "resume a directory that is not a run": (resume_not_a_run, ["somewhere", "config.yaml"]),
    "student asked to predict without its prevalent modality": (predict_without_prevalent_modality, ["gyro_only.h5", "acc"]),
    "weights from another model": (checkpoint_from_another_model, ["weights.pt", "another model"]),
    "table without its subject column": (table_without_subject_column, ["table.csv", "subject"]),
    "sweep over an unknown key": (sweep_unknown_key, ["structural.kk", "unknown key"]),
}


def outputs(tmp: Path) -> set[Path]:
    """Everything a command could have left behind: run directories, outputs, temporary files."""
    return {p for p in tmp.rglob("*") if "runs" in p.parts or "out" in p.parts or p.name.endswith(".tmp")}


def assert_refused_cleanly(case: str, cases: dict, tmp_path: Path, monkeypatch) -> None:
    """``cases[case]`` ends with exit 2, one ``error: ... Fix: ...`` naming its words, no traceback, nothing written."""
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    set_up, words = cases[case]
    args = set_up(tmp_path)
    before = outputs(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (case, result.output, result.exception)
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "error:" in message and "Fix:" in message, message
    for word in words:
        assert word in message, (case, word, message)
    assert outputs(tmp_path) == before, f"{case} left {sorted(outputs(tmp_path) - before)}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_clear_message_and_leaves_nothing(case, tmp_path, monkeypatch):
    assert_refused_cleanly(case, CASES, tmp_path, monkeypatch)


def test_the_catalogue_covers_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(app, ["--debug", *missing_dataset(tmp_path)])
    assert result.exit_code != 0 and result.exception is not None
