"""Dataset facts checked before a run directory exists (issue 31, section 4, the dataset part).

Each case used to train (or fail at training time) without a word: a NaN in a file read
lazily, ``evaluation.group_average`` on a file without ``/groups``, a constant regression
target, modality names privkd cannot use, regression labels with no target, a one-class table.
Each is now refused: by the dataset format (the writer, every importer and the reader share its
rules), by ``privkd data import table``, or by the run's checks, with exit 2 and nothing under
``--out``.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from test_early_checks import assert_refused_before_the_run_dir, config, dataset, invoke
from typer.testing import CliRunner

from privkd.cli import app
from privkd.data import read_info, validate_dataset, write_dataset
from privkd.data.importers.table import import_table
from privkd.errors import DatasetError


def regression_dataset(path: Path, targets: np.ndarray) -> Path:
    """A small regression dataset (6 subjects of 8 samples) with the given (48, T) targets."""
    rng = np.random.default_rng(0)
    n = len(targets)
    return write_dataset(path, modalities={m: rng.normal(size=(n, 12)).astype(np.float32) for m in ("acc", "gyro")},
                         labels=targets.astype(np.float32), subjects=[f"s{i // 8}" for i in range(n)],
                         task="regression", target_names=[f"t{i}" for i in range(targets.shape[1])],
                         modality_kinds={"acc": "features", "gyro": "features"})


def assert_refused_by_data_info(path: Path, field: str) -> None:
    result = CliRunner().invoke(app, ["data", "info", str(path)])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output and field in result.output, result.output


# ------------------------------------------------------------------------ values read lazily


def test_a_nan_in_a_lazily_read_file_is_refused_before_the_run_directory(tmp_path):
    data = dataset(tmp_path / "data.h5")
    with h5py.File(data, "a") as h5:  # written by hand, as a file of another tool would be
        h5["modalities/gyro"][17, 1, 5] = np.nan
    result = invoke(tmp_path, config(data, **{"data.in_memory": False}))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "/modalities/gyro" in result.output and "NaN" in result.output and "sample 17" in result.output
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_an_inf_in_a_lazily_read_modality_is_named_with_its_sample(tmp_path):
    from privkd.data.h5format.validation import scan_modality_values

    data = dataset(tmp_path / "data.h5")
    with h5py.File(data, "a") as h5:
        h5["modalities/acc"][40, 0, 0] = np.inf
    scan_modality_values(data, ["gyro"])  # only the modalities a run uses are read
    with pytest.raises(DatasetError, match="inf value in sample 40"):
        scan_modality_values(data, ["gyro", "acc"])


# ------------------------------------------------------------------------ groups and targets


def test_group_average_without_groups_is_refused_before_the_run_directory(tmp_path):
    targets = np.random.default_rng(1).normal(size=(48, 1))
    values = config(regression_dataset(tmp_path / "reg.h5", targets), **{"evaluation.group_average": True})
    assert_refused_before_the_run_dir(invoke(tmp_path, values), tmp_path, "evaluation.group_average")


@pytest.mark.parametrize("constant_column", [0, 1])
def test_a_constant_regression_target_is_refused_before_the_run_directory(constant_column, tmp_path):
    targets = np.random.default_rng(1).normal(size=(48, 2))
    targets[:, constant_column] = 0.5
    result = invoke(tmp_path, config(regression_dataset(tmp_path / "reg.h5", targets)))
    assert_refused_before_the_run_dir(result, tmp_path, "data.path")
    assert f"t{constant_column}" in result.output


def test_regression_labels_without_a_target_are_refused_by_the_writer_and_the_reader(tmp_path):
    with pytest.raises(DatasetError, match="no target"):
        regression_dataset(tmp_path / "none.h5", np.zeros((48, 0)))
    data = regression_dataset(tmp_path / "reg.h5", np.random.default_rng(1).normal(size=(48, 1)))
    with h5py.File(data, "a") as h5:
        del h5["labels"]
        h5["labels"] = np.zeros((48, 0), np.float32)
        h5.attrs["target_names"] = "[]"
    with pytest.raises(DatasetError, match="no target"):
        read_info(data)
    assert_refused_by_data_info(data, "/labels")


# ---------------------------------------------------------------------------- modality names


@pytest.mark.parametrize("name", ["acc.x", "acc@tokens"])
def test_a_modality_name_privkd_uses_internally_is_refused_by_the_writer_and_the_reader(name, tmp_path):
    with pytest.raises(DatasetError, match="rename it"):
        dataset(tmp_path / "written.h5", modalities=(name, "gyro"))
    data = dataset(tmp_path / "data.h5")
    with h5py.File(data, "a") as h5:
        h5.move("modalities/acc", f"modalities/{name}")
    with pytest.raises(DatasetError, match="rename it"):
        read_info(data)
    assert_refused_by_data_info(data, f"/modalities/{name}")


def test_a_tokens_named_modality_beside_its_namesake_is_refused(tmp_path):
    """``acc@tokens`` beside ``acc`` would stand in for ``acc``'s cached backbone tokens."""
    with pytest.raises(DatasetError, match="acc@tokens"):
        dataset(tmp_path / "data.h5", modalities=("acc", "acc@tokens"))


def test_the_table_importer_refuses_a_modality_pattern_name_with_a_dot(tmp_path):
    frame = pd.DataFrame({"subject": ["a", "a", "b", "b"], "label": ["x", "y", "x", "y"],
                          "f1": [0.1, 0.2, 0.3, 0.4]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DatasetError, match="rename it"):
        import_table(tmp_path / "t.csv", tmp_path / "t.h5", modality_patterns={"eda.raw": "^f"}, progress=False)
    assert not (tmp_path / "t.h5").exists()


# ----------------------------------------------------------------------------- one-class tables


def test_data_import_table_refuses_a_one_class_table(tmp_path):
    frame = pd.DataFrame({"subject": [f"s{i // 2}" for i in range(8)], "label": ["pain"] * 8,
                          "eda.mean": np.arange(8.0)})
    frame.to_csv(tmp_path / "one.csv", index=False)
    result = CliRunner().invoke(app, ["data", "import", "table", str(tmp_path / "one.csv"), str(tmp_path / "one.h5")])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output and "label" in result.output and "pain" in result.output
    assert not (tmp_path / "one.h5").exists()


def test_a_two_class_table_still_imports(tmp_path):
    frame = pd.DataFrame({"subject": [f"s{i // 2}" for i in range(8)], "label": ["pain", "none"] * 4,
                          "eda.mean": np.arange(8.0)})
    frame.to_csv(tmp_path / "two.csv", index=False)
    assert validate_dataset(import_table(tmp_path / "two.csv", tmp_path / "two.h5", progress=False)).n_classes == 2
