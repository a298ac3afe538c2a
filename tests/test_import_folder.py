"""Any user's folder of .npy files + manifest: kinds by rank, rates, streamed values, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from privkd.data import MultimodalDataset, validate_dataset
from privkd.data.importers.folder import import_folder
from privkd.errors import DatasetError

N = 10
RATES = {"eeg": 128.0, "spec": 8.0, "video": 25.0}


def _layout(root: Path) -> tuple[pd.DataFrame, dict[str, list[np.ndarray]]]:
    """eeg (2, 16) signal, feat (5,) features, spec (2, 3, 4) spectrogram, video (3, 2, 4, 4) uint8."""
    rng = np.random.default_rng(3)
    manifest = pd.DataFrame({
        "sample": [f"s{i:03d}" for i in range(N)],
        "subject": [f"{i % 5:02d}" for i in range(N)],
        "label": [["rest", "task"][i % 2] for i in range(N)],
        "group": [f"rec{i // 2}" for i in range(N)],
        "split": ["train"] * 7 + ["validation"] * 3,
        "valence": rng.normal(size=N),
        "arousal": rng.normal(size=N),
    })
    arrays = {"eeg": [rng.normal(size=(2, 16)) for _ in range(N)],
              "feat": [rng.normal(size=5).astype(np.float32) for _ in range(N)],
              "spec": [rng.normal(size=(2, 3, 4)) for _ in range(N)],
              "video": [rng.integers(0, 256, size=(3, 2, 4, 4), dtype=np.uint8) for _ in range(N)]}
    for modality, samples in arrays.items():
        (root / modality).mkdir(parents=True)
        for name, array in zip(manifest["sample"], samples):
            np.save(root / modality / f"{name}.npy", array)
    (root / "notes").mkdir()  # a subfolder without .npy files is not a modality
    (root / "notes" / "readme.txt").write_text("not data")
    manifest.to_csv(root / "manifest.csv", index=False)
    return manifest, arrays


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "folder"
    manifest, arrays = _layout(root)
    return root, manifest, arrays


def _assert_no_output(dst: Path) -> None:
    assert not dst.exists()
    assert not list(dst.parent.glob(".*.tmp"))


def test_import_kinds_rates_values(layout, tmp_path):
    root, manifest, arrays = layout
    dst = import_folder(root, tmp_path / "out" / "ds.h5", sampling_rates=RATES, progress=False)
    info = validate_dataset(dst)
    assert list(info.modalities) == ["eeg", "feat", "spec", "video"]
    expected = {"eeg": ("signal", (2, 16), 128.0), "feat": ("features", (5,), None),
                "spec": ("spectrogram", (2, 3, 4), 8.0), "video": ("video", (3, 2, 4, 4), 25.0)}
    for name, (kind, shape, rate) in expected.items():
        m = info.modalities[name]
        assert (m.kind, m.sample_shape, m.sampling_rate) == (kind, shape, rate)
    assert info.task == "classification" and info.class_names == ["rest", "task"]
    with h5py.File(dst) as h5:
        assert h5["modalities/video"].dtype == np.uint8  # uint8 video stays uint8
        assert h5["splits"].asstr()[()].tolist() == manifest.split.tolist()

    ds = MultimodalDataset(dst)
    for i in (0, 6, 9):
        inputs = ds[i].inputs
        for name in ("eeg", "feat", "spec"):
            np.testing.assert_allclose(inputs[name].numpy(), arrays[name][i], rtol=1e-6)
        np.testing.assert_allclose(inputs["video"].numpy(), arrays["video"][i] / 255.0, rtol=1e-6)
        assert info.class_names[int(ds[i].label)] == manifest.label[i]
    assert ds.subjects.tolist() == manifest.subject.tolist()
    assert ds.groups.tolist() == manifest.group.tolist()


def test_regression_targets_and_kind_override(layout, tmp_path):
    root, manifest, arrays = layout
    dst = import_folder(root, tmp_path / "reg.h5", label_columns=["valence", "arousal"],
                        kinds={"eeg": "features", "spec": "features", "video": "features"}, progress=True)
    ds = MultimodalDataset(dst)
    assert ds.info.task == "regression" and ds.info.target_names == ["valence", "arousal"]
    np.testing.assert_allclose(ds.labels, manifest[["valence", "arousal"]].to_numpy(), rtol=1e-6)
    assert {m.kind for m in ds.info.modalities.values()} == {"features"}
    np.testing.assert_allclose(ds[4].inputs["eeg"].numpy(), arrays["eeg"][4], rtol=1e-6)
    np.testing.assert_allclose(ds[4].inputs["video"].numpy(), arrays["video"][4], rtol=1e-6)  # float copy


def test_missing_manifest(layout, tmp_path):
    root, _, _ = layout
    (root / "manifest.csv").unlink()
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match="manifest file not found") as err:
        import_folder(root, dst, sampling_rates=RATES, progress=False)
    assert err.value.file == root / "manifest.csv"
    _assert_no_output(dst)


def test_manifest_lacks_column(layout, tmp_path):
    root, manifest, _ = layout
    manifest.drop(columns="subject").to_csv(root / "manifest.csv", index=False)
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match=r"no column 'subject' \(columns present: sample, label, group") as err:
        import_folder(root, dst, sampling_rates=RATES, progress=False)
    assert err.value.file == root / "manifest.csv" and err.value.field == "column subject"
    manifest.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(DatasetError, match="no column 'dominance'.*label_columns="):
        import_folder(root, dst, label_columns=["valence", "dominance"], sampling_rates=RATES, progress=False)
    _assert_no_output(dst)


def test_missing_npy_names_expected_path(layout, tmp_path):
    root, _, _ = layout
    missing = root / "spec" / "s004.npy"
    missing.unlink()
    (root / "spec" / "s007.npy").unlink()
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match=r"sample 's004' \(manifest.csv row 4 \(line 6\)\) has no 'spec' array; "
                                           r"2 of 10") as err:
        import_folder(root, dst, sampling_rates=RATES, progress=False)
    assert err.value.file == missing
    _assert_no_output(dst)


def test_shape_mismatch_names_file_and_both_shapes(layout, tmp_path):
    root, _, _ = layout
    bad = root / "eeg" / "s006.npy"
    np.save(bad, np.zeros((2, 15)))
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match=r"shape \(2, 15\) differs from shape \(2, 16\) of .*s000.npy") as err:
        import_folder(root, dst, sampling_rates=RATES, progress=False)
    assert err.value.file == bad
    _assert_no_output(dst)


@pytest.mark.parametrize("modality", ["eeg", "spec", "video"])
def test_missing_rate_names_modality_and_option(layout, tmp_path, modality):
    root, _, _ = layout
    rates = {k: v for k, v in RATES.items() if k != modality}
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match=f"modality '{modality}' is a .* modality but has no sampling rate") as err:
        import_folder(root, dst, sampling_rates=rates, progress=False)
    assert f"sampling_rates={{'{modality}': <Hz>}}" in str(err.value)
    _assert_no_output(dst)


def test_non_finite_value_mid_stream_leaves_no_output(layout, tmp_path):
    root, _, arrays = layout
    bad = root / "spec" / "s008.npy"  # late sample: earlier ones were already written to the temporary file
    values = arrays["spec"][8].copy()
    values[1, 2, 3] = np.nan
    np.save(bad, values)
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match=r"NaN value at index \(1, 2, 3\)") as err:
        import_folder(root, dst, sampling_rates=RATES, progress=False)
    assert err.value.file == bad
    _assert_no_output(dst)


def test_option_typos_and_bad_kind_shape(layout, tmp_path):
    root, _, _ = layout
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match=r"sampling_rates names \['EEG'\]"):
        import_folder(root, dst, sampling_rates={**RATES, "EEG": 1.0}, progress=False)
    with pytest.raises(DatasetError, match=r"a signal sample must have shape \(channels, time\)") as err:
        import_folder(root, dst, kinds={"spec": "signal"}, sampling_rates=RATES, progress=False)
    assert err.value.file.parent == root / "spec"
    _assert_no_output(dst)


def test_duplicate_sample_and_missing_subject(layout, tmp_path):
    root, manifest, _ = layout
    duplicated = manifest.copy()
    duplicated.loc[5, "sample"] = "s002"
    duplicated.to_csv(root / "manifest.csv", index=False)
    dst = tmp_path / "out" / "ds.h5"
    with pytest.raises(DatasetError, match="sample 's002' is listed twice"):
        import_folder(root, dst, sampling_rates=RATES, progress=False)
    blank = manifest.copy()
    blank.loc[3, "subject"] = None
    blank.to_csv(root / "manifest.csv", index=False)
    with pytest.raises(DatasetError, match=r"missing value in subject column 'subject' at row 3 \(line 5\)"):
        import_folder(root, dst, sampling_rates=RATES, progress=False)
    _assert_no_output(dst)
