"""Resume compares before it trusts (issue 31, item 3): ``privkd run --resume`` refuses, before
any training, a run whose data file or ``config.yaml`` changed since it started, or whose
finished rows record another fingerprint than the resume would give them; an unchanged resume
finishes as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
import yaml
from test_bad_input import config_file, small_dataset
from test_resume_matrix import row_records
from typer.testing import CliRunner

from privkd.cli import app

INTERRUPTED_ROW = Path("fold_0") / "pkdot"


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny finished run (1 fold, 1 epoch) on its own data file, and that file's bytes."""
    tmp = tmp_path_factory.mktemp("resume_checks")
    data = small_dataset(tmp / "data.h5")
    config = config_file(tmp, data, methods=["baseline", "teacher", "pkdot"])
    result = invoke("run", config, "--out", tmp / "runs")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp / "runs").iterdir()
    return {"run_dir": run_dir, "data": data, "bytes": data.read_bytes()}


@pytest.fixture
def interrupted(finished, tmp_path):
    """A copy of the run as if stopped before fold 0's PKDOT student trained; the data file is
    put back as it was afterwards."""
    run_dir = tmp_path / finished["run_dir"].name
    shutil.copytree(finished["run_dir"], run_dir)
    shutil.rmtree(run_dir / INTERRUPTED_ROW)
    for name in ("summary.json", "summary.md"):
        (run_dir / name).unlink()
    yield run_dir
    finished["data"].write_bytes(finished["bytes"])


def refused(run_dir: Path) -> str:
    """The resume's one-line message, after checking it trained nothing and exited 2."""
    result = invoke("run", "--resume", run_dir)
    message = one_line(result.output)
    assert result.exit_code == 2, message
    assert "Traceback" not in message and "privkd run CONFIG` without --resume" in message
    assert not (run_dir / INTERRUPTED_ROW).exists() and not (run_dir / "summary.json").exists()
    return message


def test_resume_after_the_data_file_is_rewritten_is_refused_naming_it(finished, interrupted):
    with h5py.File(finished["data"], "r+") as file:  # rewritten in place: every label flipped
        file["labels"][...] = 1 - file["labels"][()]
    message = refused(interrupted)
    assert f"the data file {finished['data']} has other contents" in message


def test_resume_after_config_yaml_is_edited_is_refused_naming_the_key(interrupted):
    path = interrupted / "config.yaml"
    values = yaml.safe_load(path.read_text())
    assert values["training"]["lr"] == 0.001
    values["training"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    message = refused(interrupted)
    assert f"{path} was edited since the run started (training.lr: 0.001 -> 0.5)" in message
    assert "data file" not in message


def test_a_finished_row_trained_under_other_settings_is_refused(interrupted):
    path = interrupted / "fold_0" / "teacher" / "metrics.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "fingerprint": "0" * 20}))
    message = refused(interrupted)
    assert "the finished rows fold_0/teacher were trained under other settings" in message


def test_an_unchanged_resume_finishes_with_the_uninterrupted_summary(finished, interrupted):
    assert json.loads((interrupted / "inputs.json").read_text())["data"]["path"] == str(finished["data"])
    result = invoke("run", "--resume", interrupted)
    assert result.exit_code == 0, result.output
    assert row_records(interrupted) == row_records(finished["run_dir"])
    for name in ("summary.json", "summary.md"):
        assert (interrupted / name).read_text() == (finished["run_dir"] / name).read_text()
