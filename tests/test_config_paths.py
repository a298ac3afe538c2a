"""Paths are the config file's, not the shell's: a config runs, a run resumes and a report is
written from any directory, and a moved run keeps its class names without its dataset."""

import json
import re
import shlex
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import load_config, load_stored_config
from privkd.data.synthetic import SyntheticSpec, build_synthetic_dataset
from privkd.interrupt import RunInterrupted
from privkd.report.reading import dataset_names
from privkd.training import experiment


@pytest.fixture(scope="module")
def features_file(tmp_path_factory) -> Path:
    """A small known-answer dataset (feature vectors, classes ``negative`` and ``positive``)."""
    return build_synthetic_dataset(SyntheticSpec("relevant_features", d=4, n_train=40, n_val=20, n_test=20), 0,
                                   tmp_path_factory.mktemp("paths") / "features.h5")


def write_config(path: Path, values: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def test_relative_paths_of_a_config_file_are_taken_from_its_directory(tmp_path, monkeypatch):
    sub = tmp_path / "project" / "sub"
    write_config(sub / "cfg.yaml", {"data": {"path": "data.h5"},
                                    "model": {"backbone_weights": {"accelerometer": "../weights/acc.pt"}}})
    for start, given in ((tmp_path / "project", "sub/cfg.yaml"), (tmp_path, str(sub / "cfg.yaml")), (sub, "cfg.yaml")):
        monkeypatch.chdir(start)
        cfg = load_config(given)
        assert cfg.data.path == str(sub / "data.h5")
        assert cfg.model.backbone_weights == {"accelerometer": str(sub / "../weights/acc.pt")}


def test_names_absolute_paths_shipped_configs_and_set_values_keep_their_meaning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("embedded", "embedded-regression", "synthetic:clean_labels?d=5&seed=3", "/data/absolute.h5"):
        config = write_config(tmp_path / "sub" / "cfg.yaml", {"data": {"path": name}})
        assert load_config(config).data.path == name
    # a value typed on the command line is the shell's: taken from the current directory
    assert load_config(config, ["data.path=mine.h5"]).data.path == str(tmp_path / "mine.h5")
    assert load_config(config, ["data.path=embedded"]).data.path == "embedded"
    # a shipped config names the user's file, which is in the current directory, not inside privkd
    assert load_config("affwild2_mtpkdot").data.path == str(tmp_path / "affwild2.h5")
    assert load_config("demo").data.path == "embedded"


def test_a_stored_config_is_read_as_it_was_stored(tmp_path, monkeypatch):
    """A run made before paths were made absolute stored them relative to where it started: a
    resume started there reads them as that run did (and its config still equals the record)."""
    stored = write_config(tmp_path / "runs" / "old" / "config.yaml", {"data": {"path": "data.h5"}})
    monkeypatch.chdir(tmp_path)
    assert load_stored_config(stored).data.path == "data.h5"


def test_a_run_started_elsewhere_resumes_from_anywhere_and_its_moved_report_keeps_class_names(
        tmp_path, monkeypatch, features_file):
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    shutil.copy(features_file, project / "sub" / "data.h5")
    write_config(project / "sub" / "cfg.yaml", {
        "name": "paths", "methods": ["baseline"],
        "data": {"path": "data.h5", "prevalent": ["x"], "privileged": ["x_star"]},
        "evaluation": {"protocol": "splits"}, "training": {"epochs": 1, "batch_size": 8, "progress_bar": False}})

    def interrupted(*args, **kwargs):
        raise RunInterrupted(signal.SIGTERM)

    with monkeypatch.context() as patch:  # stopped after the run directory was made, as by a scheduler
        patch.setattr(experiment, "_train_every_row", interrupted)
        patch.chdir(project)
        stopped = CliRunner().invoke(app, ["run", "sub/cfg.yaml", "--out", "runs"])
    assert stopped.exit_code == 128 + signal.SIGTERM, stopped.output
    (run_dir,) = (project / "runs").iterdir()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["path"] == str(project / "sub" / "data.h5")

    printed = re.search(r"Resume with: (privkd run --resume .+)$", " ".join(stopped.output.split()))
    assert printed is not None, stopped.output
    command = shlex.split(printed.group(1))
    assert command[:3] == ["privkd", "run", "--resume"] and Path(command[3]) == run_dir
    monkeypatch.chdir(tmp_path / "..")  # neither where it started nor where its config is
    resumed = CliRunner().invoke(app, command[1:])
    assert resumed.exit_code == 0, resumed.output

    moved = shutil.move(run_dir, tmp_path / "archive")
    shutil.rmtree(project)  # the dataset is gone with the project
    assert dataset_names(Path(moved)) == (["negative", "positive"], None)


def test_the_resume_command_names_the_run_absolutely_and_quoted_for_the_shell(tmp_path, monkeypatch):
    from privkd.cli.run import resume_command

    monkeypatch.chdir(tmp_path)
    command = shlex.split(resume_command(Path("my runs") / "20260101-000000-it's"))
    assert command == ["privkd", "run", "--resume", str(tmp_path / "my runs" / "20260101-000000-it's")]


def test_the_report_takes_class_names_from_the_summary_not_the_dataset(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "environment.json").write_text('{"data_path": "gone.h5"}')
    (run_dir / "summary.json").write_text(json.dumps({"task": "classification", "class_names": ["cat", "dog"],
                                                      "target_names": None}))
    assert dataset_names(run_dir) == (["cat", "dog"], None)
