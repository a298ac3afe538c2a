"""The embedded smartwatch dataset: windowing, labels, subjects, caching and safe loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from privkd.data import embedded
from privkd.data.embedded import (
    build_watch_dataset,
    embedded_dataset_path,
    load_watch_recordings,
    restricted_loads,
    watch_recordings_path,
)
from privkd.data.h5format import validate_dataset


@pytest.fixture(scope="module")
def raw() -> dict:
    """The raw recordings, read here with numpy's own unrestricted loader as an independent reference."""
    return np.load(watch_recordings_path(), allow_pickle=True).item()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_watch_dataset(tmp_path_factory.mktemp("embedded") / "watch.h5")


def _expected_windows(raw: dict) -> list[int]:
    return [(len(x) - 100) // 50 + 1 for x in raw["X"]]


def test_constants() -> None:
    assert embedded.WINDOW_SECONDS == 2.0 and embedded.OVERLAP == 0.5
    assert embedded.WINDOW == 100 and embedded.HOP == 50


def test_restricted_loader_matches_numpy(raw: dict) -> None:
    safe = load_watch_recordings()
    assert sorted(safe) == sorted(raw) == ["X", "X_labels", "side", "subject", "y", "y_labels"]
    assert len(safe["X"]) == 140
    np.testing.assert_array_equal(safe["X"][17], raw["X"][17])
    np.testing.assert_array_equal(safe["y"], raw["y"])
    np.testing.assert_array_equal(safe["subject"], raw["subject"])


def test_restricted_loader_refuses_code() -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    payload = pickle.dumps({"X": Exploit()})
    with pytest.raises(pickle.UnpicklingError, match="system"):
        restricted_loads(payload)


def test_built_dataset_structure(built: Path, raw: dict) -> None:
    info = validate_dataset(built)
    n = sum(_expected_windows(raw))
    assert n == 4677
    assert info.n_samples == n and info.task == "classification"
    assert info.class_names == ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    assert info.subjects == [f"{i:02d}" for i in range(1, 11)]
    for name, channels in (("accelerometer", ("ax", "ay", "az")), ("gyroscope", ("wx", "wy", "wz"))):
        modality = info.modalities[name]
        assert modality.kind == "signal" and modality.sampling_rate == 50.0
        assert modality.sample_shape == (3, 100) and modality.channel_names == channels
    assert "arXiv:1802.01489" in info.source


def test_windows_labels_subjects_and_groups_follow_the_recordings(built: Path, raw: dict) -> None:
    counts = _expected_windows(raw)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    with h5py.File(built) as h5:
        acc, gyro = h5["modalities/accelerometer"], h5["modalities/gyroscope"]
        assert acc.shape == gyro.shape == (4677, 3, 100)
        np.testing.assert_allclose(acc[0], raw["X"][0][:100, :3].T.astype(np.float32))
        np.testing.assert_allclose(gyro[0], raw["X"][0][:100, 3:].T.astype(np.float32))
        r, k = 5, 3  # window k of recording r starts at row 50 k
        np.testing.assert_allclose(acc[starts[r] + k], raw["X"][r][50 * k:50 * k + 100, :3].T.astype(np.float32))
        labels = h5["labels"][()]
        subjects = h5["subjects"].asstr()[()]
        groups = h5["groups"].asstr()[()]
    np.testing.assert_array_equal(labels, np.repeat(raw["y"], counts))
    assert subjects.tolist() == [f"{s:02d}" for s in np.repeat(raw["subject"], counts)]
    assert groups.tolist() == [f"rec{r:03d}" for r in np.repeat(np.arange(140), counts)]
    assert len(set(groups.tolist())) == 140


def test_cache_is_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = embedded_dataset_path(tmp_path)
    assert first.parent == tmp_path and "w100-h50" in first.name
    mtime = first.stat().st_mtime_ns
    assert embedded_dataset_path(tmp_path) == first and first.stat().st_mtime_ns == mtime
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path))
    assert embedded_dataset_path() == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_damaged_cache_is_rebuilt(tmp_path: Path) -> None:
    path = embedded_dataset_path(tmp_path)
    path.write_bytes(b"garbage")
    assert embedded_dataset_path(tmp_path) == path
    assert validate_dataset(path).n_samples == 4677
