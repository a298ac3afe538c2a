"""Any user's CSV / Parquet table: modality grouping, labels and task detection, errors naming column and row."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from privkd.data import MultimodalDataset, validate_dataset
from privkd.data.importers.table import import_table
from privkd.errors import DatasetError

N = 12


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "subject": [f"{i // 3:02d}" for i in range(N)],  # "00".."03": zero padding must survive
        "eda.mean": rng.normal(size=N),
        "label": [["pain", "no pain", "low"][i % 3] for i in range(N)],
        "eda.slope": rng.normal(size=N),
        "face.au12": rng.normal(size=N),
        "face.au04.r": rng.normal(size=N),  # only the first '.' separates the modality
        "video": [f"v{i // 2}" for i in range(N)],
        "fold": ["train"] * 8 + ["validation"] * 4,
    })


def _assert_no_output(dst: Path) -> None:
    assert not dst.exists()
    assert not list(dst.parent.glob(".*.tmp"))


def test_csv_classification_by_prefix(tmp_path):
    frame = _frame()
    frame.to_csv(tmp_path / "table.csv", index=False)
    dst = import_table(tmp_path / "table.csv", tmp_path / "out.h5", group_column="video", split_column="fold",
                       progress=False)
    info = validate_dataset(dst)
    assert list(info.modalities) == ["eda", "face"]
    assert info.modalities["eda"].sample_shape == (2,)
    assert info.modalities["face"].sample_shape == (2,)
    assert {m.kind for m in info.modalities.values()} == {"features"}
    assert info.task == "classification"
    assert info.class_names == ["low", "no pain", "pain"]
    assert "eda = [eda.mean, eda.slope]; face = [face.au12, face.au04.r]" in info.description

    ds = MultimodalDataset(dst)
    for i in (0, 5, 11):
        item = ds[i]
        np.testing.assert_allclose(item.inputs["eda"].numpy(), frame.loc[i, ["eda.mean", "eda.slope"]].to_numpy(
            dtype=float), rtol=1e-6)
        np.testing.assert_allclose(item.inputs["face"].numpy(),
                                   frame.loc[i, ["face.au12", "face.au04.r"]].to_numpy(dtype=float), rtol=1e-6)
        assert info.class_names[int(item.label)] == frame.label[i]
    assert ds.subjects.tolist() == frame.subject.tolist()
    assert ds.groups.tolist() == frame.video.tolist()
    with h5py.File(dst) as h5:
        assert h5["splits"].asstr()[()].tolist() == frame.fold.tolist()


def test_integer_labels_sorted_numerically(tmp_path):
    frame = _frame().drop(columns=["video", "fold"])
    frame["label"] = [[10, 2, 1][i % 3] for i in range(N)]
    frame.to_csv(tmp_path / "t.csv", index=False)
    ds = MultimodalDataset(import_table(tmp_path / "t.csv", tmp_path / "out.h5", progress=False))
    assert ds.info.class_names == ["1", "2", "10"]
    assert ds.labels.tolist() == [[2, 1, 0][i % 3] for i in range(N)]
    assert ds.groups is None


def test_parquet_regression_several_targets_and_patterns(tmp_path):
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({
        "participant": [f"p{i % 4}" for i in range(N)],
        "gsr_phasic": rng.normal(size=N), "au12": rng.normal(size=N), "gsr_tonic": rng.normal(size=N),
        "valence": rng.normal(size=N), "arousal": rng.normal(size=N),
    })
    frame.to_parquet(tmp_path / "t.parquet")
    dst = import_table(tmp_path / "t.parquet", tmp_path / "out.h5", subject_column="participant",
                       label_columns=["valence", "arousal"], modality_patterns={"eda": r"^gsr_", "face": r"^au"},
                       progress=False)
    ds = MultimodalDataset(dst)
    assert ds.info.task == "regression"
    assert ds.info.target_names == ["valence", "arousal"]
    assert ds.labels.shape == (N, 2)
    np.testing.assert_allclose(ds.labels, frame[["valence", "arousal"]].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(ds[3].inputs["eda"].numpy(), frame.loc[3, ["gsr_phasic", "gsr_tonic"]].to_numpy(
        dtype=float), rtol=1e-6)
    np.testing.assert_allclose(ds[3].inputs["face"].numpy(), [frame.au12[3]], rtol=1e-6)
    assert ds.subjects.tolist() == frame.participant.tolist()


def test_float_label_is_regression_and_task_can_be_forced(tmp_path):
    frame = _frame().drop(columns=["video", "fold"])
    frame["label"] = np.linspace(0, 1, N)
    frame.to_csv(tmp_path / "t.csv", index=False)
    ds = MultimodalDataset(import_table(tmp_path / "t.csv", tmp_path / "reg.h5", progress=False))
    assert ds.info.task == "regression" and ds.info.target_names == ["label"]
    np.testing.assert_allclose(ds.labels[:, 0], frame.label, rtol=1e-6)

    frame["label"] = [i % 4 for i in range(N)]
    frame.to_csv(tmp_path / "t.csv", index=False)
    forced = MultimodalDataset(import_table(tmp_path / "t.csv", tmp_path / "forced.h5", task="regression",
                                            progress=False))
    assert forced.info.task == "regression"
    np.testing.assert_allclose(forced.labels[:, 0], frame.label)


@pytest.mark.parametrize("suffix", [".xlsx", ".tsv"])
def test_unsupported_suffix(tmp_path, suffix):
    path = tmp_path / f"t{suffix}"
    path.write_text("x")
    with pytest.raises(DatasetError, match="unsupported table type") as err:
        import_table(path, tmp_path / "out.h5", progress=False)
    assert err.value.file == path
    _assert_no_output(tmp_path / "out.h5")


@pytest.mark.parametrize("column, option", [("subject", "subject_column="), ("label", "label_columns=")])
def test_missing_subject_or_label_column(tmp_path, column, option):
    path = tmp_path / "t.csv"
    _frame().drop(columns=column).to_csv(path, index=False)
    dst = tmp_path / "out" / "t.h5"
    with pytest.raises(DatasetError, match=f"no column '{column}'") as err:
        import_table(path, dst, progress=False)
    assert err.value.file == path and err.value.field == f"column {column}"
    assert option in str(err.value) and "eda.mean" in str(err.value)  # lists the present columns
    _assert_no_output(dst)


def test_non_numeric_feature_names_column_and_row(tmp_path):
    frame = _frame().astype({"face.au12": object})
    frame.loc[7, "face.au12"] = "n/a?"
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    dst = tmp_path / "out" / "t.h5"
    with pytest.raises(DatasetError, match="'face.au12' is not numeric") as err:
        import_table(path, dst, group_column="video", split_column="fold", progress=False)
    assert err.value.file == path
    assert err.value.field == "column face.au12, row 7 (line 9)"
    _assert_no_output(dst)


@pytest.mark.parametrize("column", ["eda.slope", "label"])
def test_missing_value_names_column_and_first_row(tmp_path, column):
    frame = _frame()
    frame.loc[[4, 9], column] = None
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    dst = tmp_path / "out" / "t.h5"
    with pytest.raises(DatasetError, match=f"missing value.* column '{column}' at row 4") as err:
        import_table(path, dst, group_column="video", split_column="fold", progress=False)
    assert err.value.file == path and err.value.field == f"column {column}, row 4"
    _assert_no_output(dst)


def test_column_without_dot_says_rename_or_patterns(tmp_path):
    path = tmp_path / "t.csv"
    _frame().to_csv(path, index=False)  # 'video' and 'fold' are not named as group/split columns
    dst = tmp_path / "out" / "t.h5"
    with pytest.raises(DatasetError, match="column 'video' has no modality prefix") as err:
        import_table(path, dst, progress=False)
    message = str(err.value)
    assert err.value.field == "column video"
    assert "'eda.video'" in message and "modality_patterns" in message and "group_column" in message
    _assert_no_output(dst)


def test_pattern_errors(tmp_path):
    path = tmp_path / "t.csv"
    _frame().to_csv(path, index=False)
    dst = tmp_path / "out" / "t.h5"
    with pytest.raises(DatasetError, match=r"'eda.mean' matches the patterns of several modalities: \['a', 'b'\]"):
        import_table(path, dst, modality_patterns={"a": r"^eda", "b": r"mean$", "c": r"^face"},
                     group_column="video", split_column="fold", progress=False)
    with pytest.raises(DatasetError, match=r"2 feature column\(s\) match no modality pattern: \['face.au12', "
                                           r"'face.au04.r'\]") as err:
        import_table(path, dst, modality_patterns={"eda": r"^eda\."}, group_column="video", split_column="fold",
                     progress=False)
    assert err.value.file == path
    _assert_no_output(dst)


def _voice_table(path: Path, n: int = N) -> pd.DataFrame:
    """Columns chosen by regular expression; names start lowercase (as rich markup tags would)."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"subject": [f"s{i % 4 + 1}" for i in range(n)], "label": ["a", "b"] * (n // 2)})
    for column in ["voice_jitter", "mfcc_1", "voice_shimmer", "F0_mean", "mfcc_2", "mfcc_3"]:
        frame[column] = rng.normal(size=n)
    frame.to_csv(path, index=False)
    return frame


def test_regex_grouping_is_described_and_parsed_back(tmp_path):
    from privkd.data.importers.table import grouping_lines, table_modalities
    from privkd.deploy.student import _feature_columns

    patterns = {"voice": r"^(voice_|F0)", "mfcc": r"^mfcc_"}
    frame = _voice_table(tmp_path / "t.csv")
    info = validate_dataset(import_table(tmp_path / "t.csv", tmp_path / "out.h5", modality_patterns=patterns,
                                         progress=False))
    expected = {"voice": ["voice_jitter", "voice_shimmer", "F0_mean"], "mfcc": ["mfcc_1", "mfcc_2", "mfcc_3"]}
    assert ("Feature columns: voice = [voice_jitter, voice_shimmer, F0_mean]; mfcc = [mfcc_1, mfcc_2, mfcc_3]"
            in info.description)
    assert "grouped by regular expression: voice 3 columns (^(voice_|F0)), mfcc 3 columns (^mfcc_)" in info.description
    assert {name: _feature_columns(info, m) for name, m in info.modalities.items()} == expected
    ds = MultimodalDataset(info.path)
    np.testing.assert_allclose(ds[5].inputs["voice"].numpy(), frame.loc[5, expected["voice"]].to_numpy(dtype=float),
                               rtol=1e-6)

    assert table_modalities(tmp_path / "t.csv", modality_patterns=patterns) == expected
    assert grouping_lines(expected, patterns) == [
        "Modality grouping by regular expression (2 modalities):",
        "  voice: 3 columns (voice_jitter, voice_shimmer, F0_mean), pattern ^(voice_|F0)",
        "  mfcc: 3 columns (mfcc_1, mfcc_2, mfcc_3), pattern ^mfcc_"]
    wide = {"voice": [f"voice_{i}" for i in range(12)], "f0": ["f0"]}
    assert grouping_lines(wide)[1:] == ["  voice: 12 columns (voice_0, voice_1, voice_2, ...)", "  f0: 1 column (f0)"]


def test_prefix_grouping_is_described(tmp_path):
    _frame().to_csv(tmp_path / "t.csv", index=False)
    info = validate_dataset(import_table(tmp_path / "t.csv", tmp_path / "out.h5", group_column="video",
                                         split_column="fold", progress=False))
    assert "grouped by the prefix before the first '.': eda 2 columns, face 2 columns." in info.description


def test_very_long_column_name_is_still_listed(tmp_path):
    from privkd.deploy.student import _feature_columns

    long = "eda." + "x" * 4100  # longer than the per-modality listing budget (8000 characters / 2 modalities)
    frame = _frame().drop(columns=["video", "fold"]).rename(columns={"eda.mean": long})
    frame.to_csv(tmp_path / "t.csv", index=False)
    info = validate_dataset(import_table(tmp_path / "t.csv", tmp_path / "out.h5", progress=False))
    assert f"eda = [{long}, ... (1 more)]" in info.description  # was "eda = [, ... (2 more)]"
    assert _feature_columns(info, info.modalities["eda"]) is None  # cut short: not a full listing
    assert _feature_columns(info, info.modalities["face"]) == ["face.au12", "face.au04.r"]
