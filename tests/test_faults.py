"""Every fault ends cleanly (issue 31, sections 4, 5 and item 7).

A NaN loss stops its row with a message naming the term; the Python API refuses arguments of
the wrong type before anything is written; a full disk, too many threads or a hand-edited
results file end with one line and a non-zero exit, keeping what was finished and leaving no
lock behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_early_checks import config, dataset, invoke

import privkd
from privkd.methods.base import PrivkdModule


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return dataset(tmp_path_factory.mktemp("data") / "data.h5")


def quick(data: Path, **changes) -> dict:
    """A one-fold baseline trained in this process (so that a monkeypatch reaches it)."""
    return config(data, **{"training.jobs": 1, "training.threads": 1, **changes})


# ----------------------------------------------------------------------------- NaN losses


def test_a_nan_loss_stops_the_row_naming_the_term(data, tmp_path, monkeypatch):
    real = PrivkdModule.task_loss
    monkeypatch.setattr(PrivkdModule, "task_loss", lambda self, outputs, targets: real(self, outputs, targets) * torch.nan)
    result = invoke(tmp_path, quick(data))
    assert result.exit_code == 3, (result.exit_code, result.output, result.exception)
    message = " ".join(result.output.split())
    assert "NonFiniteLoss" in message and "['task', 'loss']" in message and "epoch 0" in message, message
    assert "Traceback" not in result.output


def test_a_finite_loss_trains_as_before(data, tmp_path):
    result = invoke(tmp_path, quick(data))
    assert result.exit_code == 0, (result.output, result.exception)


# ------------------------------------------------------------------ Python API argument types


@pytest.mark.parametrize(("arguments", "named"), [
    ({"config": 123}, "config"),
    ({"out": 5}, "out"),
    ({"progress": 5}, "progress"),
    ({"overrides": "training.epochs=1"}, "overrides"),
    ({"overrides": ["training.epochs=1", 2]}, "overrides"),
    ({"loggers": "csv"}, "loggers"),
    ({"loggers": ["csv"]}, "loggers"),
    ({"callbacks": [object()]}, "callbacks"),
    ({"callbacks": object()}, "callbacks"),
    ({"resume": 7, "config": None}, "resume"),
], ids=lambda value: str(value)[:40])
def test_the_python_api_refuses_wrong_argument_types_before_any_directory(arguments, named, data, tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)  # out=5 must not make ./5, nor the default ./runs
    values = {"config": quick(data), "out": tmp_path / "runs", **arguments}
    config_arg = values.pop("config")
    with pytest.raises(TypeError, match=f"privkd.run: (each item of )?{named} must be") as refused:
        privkd.run(config_arg, **values)
    assert "Traceback" not in str(refused.value)
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_an_overrides_string_says_to_wrap_it_in_a_list(data, tmp_path):
    with pytest.raises(TypeError, match=r"overrides=\['training.epochs=1'\]"):
        privkd.run(quick(data), tmp_path / "runs", overrides="training.epochs=1")
