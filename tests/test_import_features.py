"""IEMOCAP-style pre-extracted features importer: pooling, padding, labels, sessions as subjects, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from layouts import LABELS, SESSIONS, make_features_layout

from privkd.data import MultimodalDataset, subject_folds, validate_dataset
from privkd.data.importers.features import import_features
from privkd.errors import DatasetError


@pytest.fixture
def layout(tmp_path):
    root = tmp_path / "iemocap"
    frame, arrays = make_features_layout(root)
    return root, frame, arrays


def _assert_no_output(dst: Path) -> None:
    assert not dst.exists()
    assert not list(dst.parent.glob(".*.tmp"))  # no half-written temporary file either


def test_mean_pooling_labels_subjects_groups(layout, tmp_path):
    root, frame, arrays = layout
    dst = import_features(root, tmp_path / "out" / "iemocap.h5", progress=False)
    info = validate_dataset(dst)
    assert list(info.modalities) == ["audio", "text", "visual"]
    assert {m.kind for m in info.modalities.values()} == {"features"}
    assert info.modalities["audio"].sample_shape == (4,)
    assert info.modalities["text"].sample_shape == (6,)
    assert info.modalities["visual"].sample_shape == (3,)
    assert info.modalities["audio"].sampling_rate is None
    assert info.class_names == sorted(LABELS)

    ds = MultimodalDataset(dst)
    assert len(ds) == len(frame) == 20
    for i in (0, 7, 19):
        uid = frame.utterance_id[i]
        item = ds[i]
        np.testing.assert_allclose(item.inputs["audio"].numpy(), arrays["audio"][uid].mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(item.inputs["text"].numpy(), arrays["text"][uid], rtol=1e-6)
        np.testing.assert_allclose(item.inputs["visual"].numpy(), arrays["visual"][uid].mean(axis=0), rtol=1e-6)
        assert info.class_names[int(item.label)] == frame.label[i]
        assert item.subject == frame.session[i]
    assert ds.subjects.tolist() == frame.session.tolist()
    assert ds.groups.tolist() == frame.speaker.tolist()


def test_five_sessions_give_leave_one_session_out_folds(layout, tmp_path):
    root, _, _ = layout
    ds = MultimodalDataset(import_features(root, tmp_path / "out.h5", progress=False))
    assert sorted(set(ds.subjects)) == SESSIONS
    folds = subject_folds(ds.subjects, n_folds=5, n_val_subjects=1)
    assert sorted(f.test_subjects for f in folds) == [(s,) for s in SESSIONS]
    for fold in folds:
        assert set(ds.subjects[fold.test]) == set(fold.test_subjects)
        assert len(fold.test) == 4  # 2 speakers x 2 utterances per session


def test_pad_and_crop_to_length(layout, tmp_path):
    root, frame, arrays = layout
    dst = import_features(root, tmp_path / "pad.h5", modalities=["audio", "visual"], sequence="pad", length=5,
                          progress=False)
    info = validate_dataset(dst)
    assert list(info.modalities) == ["audio", "visual"]
    audio = info.modalities["audio"]
    assert (audio.kind, audio.sample_shape, audio.sampling_rate) == ("signal", (4, 5), 1.0)
    assert info.modalities["visual"].sample_shape == (3, 5)
    assert "nominal" in info.description
    ds = MultimodalDataset(dst)
    short, long = 0, 4  # T = 3 (padded) and T = 7 (cropped)
    for i in (short, long):
        source = arrays["audio"][frame.utterance_id[i]]
        stored = ds[i].inputs["audio"].numpy()
        t = min(5, len(source))
        np.testing.assert_allclose(stored[:, :t], source[:t].T, rtol=1e-6)
        assert np.all(stored[:, t:] == 0)
    assert len(arrays["audio"][frame.utterance_id[short]]) == 3
    assert len(arrays["audio"][frame.utterance_id[long]]) == 7


def test_pad_default_length_is_longest_sequence(layout, tmp_path):
    root, frame, arrays = layout
    dst = import_features(root, tmp_path / "pad.h5", modalities=["audio"], sequence="pad", progress=False)
    assert validate_dataset(dst).modalities["audio"].sample_shape == (4, 7)
    stored = MultimodalDataset(dst)[4].inputs["audio"].numpy()
    np.testing.assert_allclose(stored, arrays["audio"][frame.utterance_id[4]].T, rtol=1e-6)


def test_merge_then_keep_four_classes(layout, tmp_path):
    root, frame, _ = layout
    dst = import_features(root, tmp_path / "four.h5", classes=["neu", "hap", "ang", "sad"], merge={"exc": "hap"},
                          progress=False)
    ds = MultimodalDataset(dst)
    merged = frame.label.replace({"exc": "hap"})
    kept = frame[merged.isin(["neu", "hap", "ang", "sad"])]
    assert ds.info.class_names == ["ang", "hap", "neu", "sad"]
    assert len(ds) == len(kept) == 17  # 20 minus the 3 'fru'
    names = [ds.info.class_names[i] for i in ds.labels]
    assert names == merged[kept.index].tolist()
    assert ds.subjects.tolist() == kept.session.tolist()


def test_labels_csv_missing(layout, tmp_path):
    root, _, _ = layout
    (root / "labels.csv").unlink()
    dst = tmp_path / "out.h5"
    with pytest.raises(DatasetError, match="labels CSV file not found") as err:
        import_features(root, dst, progress=False)
    assert err.value.file == root / "labels.csv"
    _assert_no_output(dst)


def test_labels_csv_lacks_column(layout, tmp_path):
    root, frame, _ = layout
    frame.drop(columns="session").to_csv(root / "labels.csv", index=False)
    dst = tmp_path / "out.h5"
    with pytest.raises(DatasetError) as err:
        import_features(root, dst, progress=False)
    assert err.value.file == root / "labels.csv"
    assert err.value.field == "column session"
    assert "utterance_id, speaker, label" in str(err.value)  # the columns present
    assert "subject_column=" in str(err.value)
    _assert_no_output(dst)


def test_missing_npy_names_expected_path(layout, tmp_path):
    root, frame, _ = layout
    missing = root / "visual" / f"{frame.utterance_id[5]}.npy"
    missing.unlink()
    dst = tmp_path / "out.h5"
    with pytest.raises(DatasetError, match="no 'visual' features") as err:
        import_features(root, dst, progress=False)
    assert err.value.file == missing
    assert "line 7" in str(err.value)
    _assert_no_output(dst)


def test_inconsistent_dimension_names_file(layout, tmp_path):
    root, frame, _ = layout
    bad = root / "audio" / f"{frame.utterance_id[9]}.npy"
    np.save(bad, np.zeros((4, 5)))
    dst = tmp_path / "out.h5"
    with pytest.raises(DatasetError, match="feature dimension 5") as err:
        import_features(root, dst, progress=False)
    assert err.value.file == bad
    assert "dimension 4" in str(err.value)
    _assert_no_output(dst)


def test_non_finite_value_names_file_and_leaves_no_output(layout, tmp_path):
    root, frame, arrays = layout
    bad = root / "text" / f"{frame.utterance_id[18]}.npy"  # late: earlier samples were already streamed
    values = arrays["text"][frame.utterance_id[18]].copy()
    values[2] = np.inf
    np.save(bad, values)
    dst = tmp_path / "out" / "iemocap.h5"
    with pytest.raises(DatasetError, match="inf value") as err:
        import_features(root, dst, progress=False)
    assert err.value.file == bad
    _assert_no_output(dst)


def test_pad_with_vectors_says_use_mean(layout, tmp_path):
    root, _, _ = layout
    dst = tmp_path / "out.h5"
    with pytest.raises(DatasetError, match="sequence='mean'") as err:
        import_features(root, dst, modalities=["text"], sequence="pad", progress=False)
    assert err.value.file.parent == root / "text"
    _assert_no_output(dst)


def test_unknown_class_and_explicit_group_column(layout, tmp_path):
    root, _, _ = layout
    dst = tmp_path / "out.h5"
    with pytest.raises(DatasetError, match=r"classes \['happy'\] have no utterance"):
        import_features(root, dst, classes=["happy", "sad"], progress=False)
    with pytest.raises(DatasetError, match="no column 'actor'"):
        import_features(root, dst, group_column="actor", progress=False)
    _assert_no_output(dst)


def test_without_speaker_column_no_groups(layout, tmp_path):
    root, frame, _ = layout
    frame.drop(columns="speaker").to_csv(root / "labels.csv", index=False)
    ds = MultimodalDataset(import_features(root, tmp_path / "out.h5", progress=True))
    assert ds.groups is None
    assert len(ds) == 20
