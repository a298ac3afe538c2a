"""More of the catalogue of bad input (:mod:`test_bad_input`): config values that used to pass
the checks or end in a traceback, damaged run directories and data files, and output paths
that cannot be written. Each reaches the CLI as exit 2, one message naming the file or key and
the fix, no traceback, and nothing written."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from test_bad_input import (
    assert_refused_cleanly,
    config_file,
    outputs,
    run_args,
    small_dataset,
    trained_student,
)
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import config_from_dict, load_config
from privkd.config.parse import config_to_dict
from privkd.data import read_info, write_dataset
from privkd.deploy import save_student
from privkd.models.build import build_net


def with_config(**sections) -> Callable[[Path], list[str]]:
    return lambda tmp: run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5"), **sections))


def variant(changes: dict) -> Callable[[Path], list[str]]:
    return with_config(variants={"v": {"method": "pkdot", "set": changes}})


def bad_override(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5")), "--set", "training.epochs=[1, 2")


def markup_in_a_path(tmp: Path) -> list[str]:
    return run_args(tmp, config_file(tmp, tmp / "x[" / "bold]nowhere.h5"))


def markup_in_a_modality_name(tmp: Path) -> list[str]:
    pd.DataFrame({"subject": ["s0", "s1"], "label": ["a", "b"], "[/x].mean": [0.1, 0.2]}).to_csv(tmp / "table.csv", index=False)
    return ["data", "import", "table", str(tmp / "table.csv"), str(tmp / "out" / "table.h5"), "--no-progress"]


def one_subject(tmp: Path) -> list[str]:
    def merge(arrays, labels, subjects):
        subjects[:] = ["s0"] * len(subjects)

    return run_args(tmp, config_file(tmp, small_dataset(tmp / "data.h5", mutate=merge)))


def huge_value(tmp: Path) -> list[str]:
    path = small_dataset(tmp / "data.h5")
    with h5py.File(path, "a") as h5:  # the writer refuses it; a file edited afterwards must be caught at run time
        h5["modalities/acc"][5, 1, 7] = 1e30
    return run_args(tmp, config_file(tmp, path))


def corrupted_chunk(tmp: Path) -> list[str]:
    path = small_dataset(tmp / "data.h5")
    with h5py.File(path, "r") as h5:
        chunk = h5["modalities/acc"].id.get_chunk_info(0)
    with path.open("r+b") as handle:  # same size, compressed bytes overwritten
        handle.seek(chunk.byte_offset + 16)
        handle.write(b"\xff" * min(64, chunk.size - 16))
    return run_args(tmp, config_file(tmp, path))


def table_with_repeated_column(tmp: Path) -> list[str]:
    (tmp / "table.csv").write_text("subject,label,eda.mean,eda.mean\ns0,a,0.1,0.2\ns1,b,0.3,0.4\n")
    return ["data", "import", "table", str(tmp / "table.csv"), str(tmp / "out" / "table.h5"), "--no-progress"]


def feature_student(tmp: Path) -> Path:
    """A student on a 4-feature ``eda`` vector (privileged ``ppg``), as a table import makes."""
    rng = np.random.default_rng(0)
    n = 24
    data = write_dataset(tmp / "features.h5", modalities={"eda": rng.normal(size=(n, 4)), "ppg": rng.normal(size=(n, 3))},
                         labels=np.arange(n) % 2, subjects=[f"s{i // 4}" for i in range(n)], task="classification",
                         class_names=["a", "b"], modality_kinds={"eda": "features", "ppg": "features"})
    values = yaml.safe_load(config_file(tmp, data, data={"prevalent": ["eda"], "privileged": ["ppg"]}).read_text())
    cfg, info = config_from_dict(values), read_info(data)
    return save_student(tmp / "student", build_net("student", cfg, info), cfg, info, row="pkdot", method="pkdot",
                        role="student", fold=0, test_metrics={"accuracy": 0.5}, train_subjects=("s0",))


def prediction_table_with_repeated_column(tmp: Path) -> list[str]:
    student = feature_student(tmp)
    (tmp / "new.csv").write_text("subject,eda.f0,eda.f0,eda.f1,eda.f2\nx,0.1,0.2,0.3,0.4\n")
    return ["predict", str(student), str(tmp / "new.csv"), "--out", str(tmp / "out" / "predictions.csv")]


def predict_huge_value(tmp: Path) -> list[str]:
    student = trained_student(tmp)
    with h5py.File(tmp / "data.h5", "a") as h5:
        h5["modalities/acc"][3, 0, 0] = 1e30
    return ["predict", str(student), str(tmp / "data.h5"), "--out", str(tmp / "out" / "predictions.csv")]


def predict_into_a_directory(tmp: Path) -> list[str]:
    student = trained_student(tmp)
    (tmp / "out").mkdir()
    return ["predict", str(student), str(tmp / "data.h5"), "--out", str(tmp / "out")]


def predict_under_a_file(tmp: Path) -> list[str]:
    student = trained_student(tmp)
    (tmp / "notes.txt").write_text("a file")
    return ["predict", str(student), str(tmp / "data.h5"), "--out", str(tmp / "notes.txt" / "out" / "predictions.csv")]


def export_into_a_directory(tmp: Path) -> list[str]:
    student = trained_student(tmp)
    (tmp / "out").mkdir()
    return ["export", str(student), "--onnx", str(tmp / "out")]


def export_under_a_file(tmp: Path) -> list[str]:
    student = trained_student(tmp)
    (tmp / "notes.txt").write_text("a file")
    return ["export", str(student), "--onnx", str(tmp / "notes.txt" / "out" / "model.onnx")]


def interrupted_run(tmp: Path) -> Path:
    """A run directory as an interrupted `privkd run` leaves it: its config, one finished row."""
    config = config_file(tmp, small_dataset(tmp / "data.h5"))
    run_dir = tmp / "runs" / "20260101-000000-bad"
    (run_dir / "fold_0" / "baseline").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(load_config(config)), sort_keys=False))
    record = {"fold": 0, "row": "baseline", "test": {"accuracy": 0.5}}
    (run_dir / "fold_0" / "baseline" / "metrics.json").write_text(json.dumps(record))
    return run_dir


def resume_with(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def set_up(tmp: Path) -> list[str]:
        run_dir = interrupted_run(tmp)
        damage(run_dir)
        return ["run", "--resume", str(run_dir)]

    return set_up


def control_character(run_dir: Path) -> None:
    (run_dir / "fold_0" / "baseline" / "metrics.json").write_text('{"fold": 0, "row": "base\x01line", "test": {}}')


def truncated_record(run_dir: Path) -> None:
    path = run_dir / "fold_0" / "baseline" / "metrics.json"
    path.write_text(path.read_text()[:20])


def link_out_of_the_run(run_dir: Path) -> None:
    (run_dir.parent.parent / "elsewhere").mkdir()
    (run_dir / "fold_0" / "pkdot").symlink_to(run_dir.parent.parent / "elsewhere")


def report_through_a_link(tmp: Path) -> list[str]:
    run_dir = interrupted_run(tmp)
    (tmp / "elsewhere").mkdir()
    (run_dir / "report").symlink_to(tmp / "elsewhere")
    return ["report", str(run_dir)]


CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    # case: (set-up returning the CLI arguments, words the message must contain)
    "no attention heads": (with_config(model={"attention_heads": 0}), ["model.attention_heads", ">= 1"]),
    "run name with a slash": (with_config(name="a/b"), ["'name'", "a/b", "plain name"]),
    "run name '..'": (with_config(name=".."), ["'name'", "plain name"]),
    "run name an absolute path": (with_config(name="/tmp/elsewhere"), ["'name'", "/tmp/elsewhere", "plain name"]),
    "variant name with a slash": (with_config(variants={"../v": {"method": "pkdot"}}), ["variants.../v", "plain name"]),
    "--set value that is not YAML": (bad_override, ["training.epochs", "not valid YAML", "[1, 2"]),
    "markup in a path": (markup_in_a_path, ["x[/bold]nowhere.h5", "does not exist"]),
    "markup in a modality name": (markup_in_a_modality_name, ["[/x]", "cannot name a modality"]),
    "misspelt key in a variant": (variant({"training.epocs": 3}), ["variants.v.set.training.epocs", "unknown key"]),
    "variant sets a top-level key": (variant({"seed.x": 1}), ["variants.v.set.seed.x", "training.epochs"]),
    "variant sets variants": (variant({"variants.w": {"method": "pkdot"}}), ["variants.v.set.variants.w"]),
    "variant with a bad value": (variant({"training.lr": -1.0}), ["variants.v.set.training.lr", "> 0"]),
    "learning rate NaN": (with_config(training={"lr": float("nan")}), ["training.lr", "finite"]),
    "learning rate negative": (with_config(training={"lr": -0.1}), ["training.lr", "> 0"]),
    "learning rate infinite (string)": (with_config(training={"lr": "inf"}), ["training.lr", "finite"]),
    "epsilon NaN": (with_config(structural={"epsilon": float("nan")}), ["structural.epsilon", "finite"]),
    "no folds to train": (with_config(evaluation={"max_folds": 0}), ["evaluation.max_folds", "null"]),
    "negative max_folds": (with_config(evaluation={"max_folds": -1}), ["evaluation.max_folds", "null"]),
    "one subject": (one_subject, ["1 subject", "more subjects"]),
    "value near float32's limit": (huge_value, ["data.h5", "/modalities/acc", "1e+30", "sample 5", "rescale"]),
    "corrupted compressed chunk": (corrupted_chunk, ["data.h5", "/modalities/acc", "corrupted", "write it again"]),
    "table with a repeated column": (table_with_repeated_column, ["table.csv", "eda.mean", "more than once"]),
    "prediction table with a repeated column": (prediction_table_with_repeated_column, ["new.csv", "eda.f0", "more than once"]),
    "prediction input near float32's limit": (predict_huge_value, ["data.h5", "/modalities/acc", "sample 3", "1e+30"]),
    "predict --out is a directory": (predict_into_a_directory, ["--out", "directory", "predictions.csv"]),
    "predict --out under a file": (predict_under_a_file, ["notes.txt", "which is a file"]),
    "export --onnx is a directory": (export_into_a_directory, ["--onnx", "directory", "model.onnx"]),
    "export --onnx under a file": (export_under_a_file, ["notes.txt", "which is a file"]),
    "resume: control character in metrics.json": (resume_with(control_character), ["metrics.json", "delete"]),
    "resume: truncated metrics.json": (resume_with(truncated_record), ["metrics.json", "damaged", "delete"]),
    "resume: a link out of the run": (resume_with(link_out_of_the_run), ["pkdot", "symbolic link", "outside the run"]),
    "report: figure directory is a link": (report_through_a_link, ["report", "symbolic link", "rm"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gets_one_clear_message_and_leaves_nothing(case, tmp_path, monkeypatch):
    assert_refused_cleanly(case, CASES, tmp_path, monkeypatch)


def deny_writing(monkeypatch, where: Path) -> None:
    """Make ``where`` read-only for privkd's checks (tests run as root, whom chmod does not stop)."""
    real = os.access

    def access(path, mode, **kwargs):
        inside = Path(path).resolve().is_relative_to(where.resolve())
        return False if inside and mode & os.W_OK else real(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("target", ["resume", "export"])
def test_unwritable_places_are_refused_before_any_work(target, tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    if target == "resume":
        run_dir = interrupted_run(tmp_path)
        args, words = ["run", "--resume", str(run_dir)], ["not writable", "chmod -R u+w"]
    else:
        run_dir = tmp_path / "locked"
        run_dir.mkdir()
        args, words = ["export", str(trained_student(tmp_path)), "--onnx", str(run_dir / "model.onnx")], ["cannot write there"]
    deny_writing(monkeypatch, run_dir)
    before = outputs(tmp_path) | set(run_dir.rglob("*"))
    result = CliRunner().invoke(app, args)
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, message
    assert all(word in message for word in words) and "report the failing module" not in message, message
    assert outputs(tmp_path) | set(run_dir.rglob("*")) == before


def test_a_corrupted_chunk_read_lazily_stops_the_run_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    args = corrupted_chunk(tmp_path)
    config_file(tmp_path, tmp_path / "data.h5", data={"in_memory": False})  # rows read sample by sample while training
    result = CliRunner().invoke(app, args)
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, message
    # the streaming value scan before training reads the damaged chunk first and names the array
    assert "data.h5: field '/modalities/acc':" in message and "corrupted" in message and "Fix:" in message
    assert "failed:" not in message  # one message, not one failed row after another
