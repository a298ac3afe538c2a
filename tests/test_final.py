"""``privkd run --final``: after cross-validation, the baseline and the students trained once more
on every subject (validation subjects choosing the epoch as in the folds), saved as deployable
students whose cards quote the cross-validated estimate."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from test_bad_input import config_file, small_dataset
from typer.testing import CliRunner

from privkd.cli import app
from privkd.deploy import load_student


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same config and seed run without and with ``--final``, and with ``--final`` in two
    worker processes (one thread each, as every run here)."""
    tmp = tmp_path_factory.mktemp("final")
    data = small_dataset(tmp / "data.h5", subjects=8)
    config = config_file(tmp, data, methods=["baseline", "teacher", "pkdot"], evaluation={"n_folds": 4, "max_folds": 2},
                         training={"epochs": 3, "patience": 3, "batch_size": 8, "threads": 1}, teacher={"tnet_refit_epochs": 3},
                         student={"hallucinate": True})  # a student that carries the final teacher's T-Net
    dirs = {}
    for name, extra in (("plain", []), ("final", ["--final"]), ("workers", ["--final", "--set", "training.jobs=2"])):
        result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp / name), *extra])
        assert result.exit_code == 0, result.output
        (dirs[name],) = (tmp / name).iterdir()
        dirs[f"{name}_output"] = " ".join(result.output.split())
    return {"data": data, **dirs}


def test_the_cross_validated_results_are_those_of_a_run_without_final(runs):
    assert (runs["final"] / "summary.json").read_text() == (runs["plain"] / "summary.json").read_text()
    assert not (runs["plain"] / "final").exists()


def test_every_subject_trains_but_the_validation_ones_which_are_as_many_as_in_a_fold(runs):
    final = json.loads((runs["final"] / "final" / "final.json").read_text())
    with h5py.File(runs["data"]) as h5:
        subjects = sorted({s.decode() if isinstance(s, bytes) else str(s) for s in h5["subjects"][()]})
    assert sorted(final["train_subjects"] + final["val_subjects"]) == subjects
    assert not set(final["train_subjects"]) & set(final["val_subjects"])
    folds = json.loads((runs["final"] / "folds.json").read_text())
    assert len(final["val_subjects"]) == len(folds[0]["val"])
    assert final["students"] == {"baseline": "final/baseline/student", "pkdot": "final/pkdot/student"}  # no teacher
    assert "trained on every subject: pkdot ->" in runs["final_output"]


def test_the_final_student_distils_from_the_final_teacher_and_its_refitted_tnet(runs):
    teacher = torch.load(runs["final"] / "final" / "teacher" / "model.pt", weights_only=True)
    student = torch.load(runs["final"] / "final" / "pkdot" / "model.pt", weights_only=True)
    tnet_keys = [key for key in teacher if key.startswith("tnet.")]
    assert tnet_keys
    for key in tnet_keys:
        torch.testing.assert_close(student[key], teacher[key], rtol=0, atol=0)
    assert "tnet" in json.loads((runs["final"] / "final" / "teacher" / "metrics.json").read_text())  # it was refitted
    fold_teacher = torch.load(runs["final"] / "fold_0" / "teacher" / "model.pt", weights_only=True)
    assert not torch.equal(fold_teacher[tnet_keys[0]], teacher[tnet_keys[0]])


def test_the_card_quotes_the_cross_validated_estimate_and_the_student_predicts(runs):
    summary = json.loads((runs["final"] / "summary.json").read_text())
    student = load_student(runs["final"] / "final" / "pkdot" / "student")
    f1 = summary["methods"]["pkdot"]["f1"]
    assert student.card["training"]["fold"] is None and student.card["test_metrics"] == {}
    assert student.card["cross_validated"]["f1"] == {"mean": f1["mean"], "std": f1["std"], "folds": 2.0}
    card = (runs["final"] / "final" / "pkdot" / "student" / "model_card.md").read_text()
    assert "# privkd student: pkdot (trained on every subject)" in card
    assert f"| f1 | {f1['mean']:.4f} ± {f1['std']:.4f} |" in card
    assert "split: 'cross-validated mean over 2 subject-independent test folds'" in card
    with h5py.File(runs["data"]) as h5:
        acc = h5["modalities/acc"][()]
    probabilities = student.predict_proba({"acc": acc})
    assert probabilities.shape == (len(acc), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)


def test_final_rows_trained_side_by_side_equal_those_trained_one_after_the_other(runs):
    def final_files(run_dir):
        return {str(path.relative_to(run_dir)): path.read_bytes() for path in sorted((run_dir / "final").rglob("*"))
                if path.name in ("final.json", "metrics.json", "model.pt")}

    files = final_files(runs["final"])
    assert len(files) == 1 + 3 * 2  # final.json; each row's record and weights
    assert final_files(runs["workers"]) == files
    for row in ("baseline", "pkdot"):  # a student's weights file names its temporary file inside: compare the tensors
        side_by_side, one_process = (torch.load(run / "final" / row / "student" / "weights.pt", weights_only=True)
                                     for run in (runs["workers"], runs["final"]))
        assert side_by_side.keys() == one_process.keys()
        assert all(torch.equal(side_by_side[key], one_process[key]) for key in one_process)
    assert "final (every subject but the validation ones): pkdot finished" in runs["workers_output"]
