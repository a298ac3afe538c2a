"""A study whose rows fail exits non-zero, and a sweep checks every grid value before it starts.

``privkd study`` printed an empty table and exited 0 when every row failed; ``privkd sweep``
checked only the first value of each ``--grid`` key, so a bad later value failed after the
earlier points had trained, leaving a half-made sweep.
"""

from __future__ import annotations

import torch
from test_early_checks import assert_refused_before_the_run_dir, config, dataset, invoke

from privkd.methods.base import PrivkdModule


def test_a_study_whose_rows_all_fail_exits_3(tmp_path, monkeypatch):
    real = PrivkdModule.task_loss
    monkeypatch.setattr(PrivkdModule, "task_loss", lambda self, outputs, targets: real(self, outputs, targets) * torch.nan)
    values = config(dataset(tmp_path / "data.h5"), **{"study.seeds": 1, "training.jobs": 1, "training.threads": 1})
    result = invoke(tmp_path, values, "study")
    message = " ".join(result.output.split())
    assert result.exit_code == 3, (result.exit_code, message, result.exception)
    assert "failed: seed_0, fold 0, baseline" in message and "NonFiniteLoss" in message, message
    assert "Traceback" not in result.output


def test_a_bad_later_grid_value_is_refused_before_the_sweep_directory(tmp_path):
    values = config(dataset(tmp_path / "data.h5"))
    result = invoke(tmp_path, values, "sweep", "--grid", "training.lr=0.001,-1")
    assert_refused_before_the_run_dir(result, tmp_path, "training.lr")


def test_a_later_grid_value_the_dataset_refuses_is_refused_before_the_sweep_directory(tmp_path):
    values = config(dataset(tmp_path / "data.h5"))  # no /groups: group_average cannot hold
    result = invoke(tmp_path, values, "sweep", "--grid", "evaluation.group_average=false,true")
    assert_refused_before_the_run_dir(result, tmp_path, "evaluation.group_average")


def test_grid_values_that_conflict_only_together_are_refused_before_the_sweep_directory(tmp_path):
    """Each value passes with the other key's first value; the point (batch 8, 12 anchors) does not."""
    values = config(dataset(tmp_path / "data.h5"), methods=["pkdot"])  # a method that uses anchors
    result = invoke(tmp_path, values, "sweep", "--grid", "training.batch_size=16,8", "--grid", "structural.k=5,12")
    assert_refused_before_the_run_dir(result, tmp_path, "structural.k")
