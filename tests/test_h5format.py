"""The privkd HDF5 dataset format: round trip, validation errors, description."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from privkd.data.h5format import (
    FORMAT_NAME,
    describe,
    read_info,
    validate_dataset,
    write_dataset,
)
from privkd.errors import DatasetError

N = 12


def _classification_kwargs(**overrides: Any) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    kwargs: dict[str, Any] = dict(
        modalities={"eda": rng.normal(size=(N, 1, 40)), "video": rng.normal(size=(N, 3, 2, 4, 4)).astype(np.float32)},
        labels=np.arange(N) % 3,
        subjects=[f"{i // 4:02d}" for i in range(N)],
        task="classification",
        class_names=["no pain", "low", "high"],
        modality_kinds={"eda": "signal", "video": "video"},
        sampling_rates={"eda": 4.0, "video": 25.0},
        channel_names={"eda": ["eda"]},
        groups=[f"rec{i // 2}" for i in range(N)],
        description="toy",
        source="unit test",
    )
    kwargs.update(overrides)
    return kwargs


def _write(path: Path, **overrides: Any) -> Path:
    return write_dataset(path, **_classification_kwargs(**overrides))


def _assert_error(exc: pytest.ExceptionInfo[DatasetError], path: Path, field: str) -> None:
    message = str(exc.value)
    assert str(path) in message
    assert f"field '{field}'" in message
    assert "Fix:" in message
    assert exc.value.file == path and exc.value.field == field and exc.value.fix


def test_classification_round_trip(tmp_path: Path) -> None:
    kwargs = _classification_kwargs()
    path = _write(tmp_path / "toy.h5")
    info = validate_dataset(path)
    assert info.path == path and info.task == "classification" and info.n_samples == N
    assert info.class_names == ["no pain", "low", "high"] and info.n_classes == 3 and info.target_names is None
    assert info.subjects == ["00", "01", "02"]
    assert info.description == "toy" and info.source == "unit test"
    eda, video = info.modalities["eda"], info.modalities["video"]
    assert (eda.kind, eda.sampling_rate, eda.sample_shape, eda.channel_names) == ("signal", 4.0, (1, 40), ("eda",))
    assert (video.kind, video.sampling_rate, video.sample_shape, video.channel_names) == ("video", 25.0, (3, 2, 4, 4), None)
    with h5py.File(path) as h5:
        assert h5.attrs["format"] == FORMAT_NAME and h5.attrs["format_version"] == 1
        assert json.loads(h5.attrs["class_names"]) == ["no pain", "low", "high"]
        assert h5["modalities/eda"].dtype == np.float32 and h5["modalities/eda"].chunks is not None
        np.testing.assert_array_equal(h5["modalities/eda"][()], kwargs["modalities"]["eda"].astype(np.float32))
        np.testing.assert_array_equal(h5["modalities/video"][()], kwargs["modalities"]["video"])
        assert h5["labels"].dtype == np.int64
        np.testing.assert_array_equal(h5["labels"][()], np.arange(N) % 3)
        assert h5["subjects"].asstr()[()].tolist() == kwargs["subjects"]
        assert h5["groups"].asstr()[()].tolist() == kwargs["groups"]
        assert "splits" not in h5
    assert read_info(path) == info


def test_regression_round_trip_with_two_targets(tmp_path: Path) -> None:
    targets = np.linspace(-1, 1, 2 * N).reshape(N, 2)
    path = write_dataset(
        tmp_path / "affect.h5",
        modalities={"features": np.ones((N, 8))},
        labels=targets,
        subjects=[f"071309_w_{i % 5}" for i in range(N)],
        task="regression",
        target_names=["valence", "arousal"],
        modality_kinds={"features": "features"},
        splits=["train"] * 8 + ["validation"] * 4,
    )
    info = validate_dataset(path)
    assert info.task == "regression" and info.target_names == ["valence", "arousal"]
    assert info.class_names is None and info.n_classes is None
    assert info.modalities["features"].sampling_rate is None
    assert info.subjects == [f"071309_w_{i}" for i in range(5)]
    with h5py.File(path) as h5:
        assert h5["labels"].dtype == np.float32 and h5["labels"].shape == (N, 2)
        np.testing.assert_allclose(h5["labels"][()], targets, rtol=1e-6)
        assert h5["splits"].asstr()[()].tolist() == ["train"] * 8 + ["validation"] * 4
    text = describe(info)
    assert "valence: min -1, mean" in text and "arousal" in text


def test_describe_lists_classes_counts_and_subjects(tmp_path: Path) -> None:
    info = read_info(_write(tmp_path / "toy.h5", labels=np.array([0] * 6 + [1] * 4 + [2] * 2)))
    text = describe(info)
    assert "Task: classification" in text and "Samples: 12" in text
    assert "eda: signal, per-sample shape (1, 40), 4 Hz, channels eda" in text
    lines = text.splitlines()
    assert "  0 no pain  6" in lines and "  1 low      4" in lines and "  2 high     2" in lines
    assert "Subjects: 3, 4 samples per subject" in lines and "  ids: 00, 01, 02" in lines
    assert "Groups: 6, 2 samples per group" in lines and not any(line.startswith("Splits") for line in lines)


def test_describe_summarises_many_subjects_in_a_bounded_number_of_lines(tmp_path: Path) -> None:
    counts = {f"s{k}": (7 * k) % 11 + 1 for k in range(1, 31)}  # 1..11 samples: min 1 (s11), median 6, max 11 (s3)
    subjects = [s for s, c in counts.items() for _ in range(c)]
    subjects = np.random.default_rng(0).permutation(subjects).tolist()  # written in no particular order
    n = len(subjects)
    assert n == 183
    path = write_dataset(tmp_path / "many.h5", modalities={"features": np.ones((n, 4))}, labels=np.arange(n) % 2,
                         subjects=subjects, task="classification", class_names=["b", "a"],  # label order kept
                         modality_kinds={"features": "features"}, groups=[f"g{i // 3}" for i in range(n)],
                         splits=["train"] * 100 + ["test"] * 83)
    lines = describe(read_info(path)).splitlines()
    few = describe(read_info(_write(tmp_path / "few.h5"))).splitlines()
    assert len(lines) <= len(few) + 1 <= 20  # one modality less, one splits line more: no line per subject
    assert "Subjects: 30, samples per subject min 1 (s11) / median 6 / max 11 (s3)" in lines
    assert "  ids: s1, s2, s3, s4, s5, s6, ..., s29, s30" in lines  # natural order, not s1, s10, s11, ...
    assert not any("s17" in line for line in lines)
    assert lines.index("Classes (2, samples per class):") + 1 == lines.index("  0 b  92")
    assert "Groups: 61, 3 samples per group" in lines  # all equal: no min / median / max
    assert "Splits (2): train 100, test 83" in lines


def test_natural_key_compares_numbers_inside_ids_as_numbers() -> None:
    from privkd.data.h5format.summary import natural_key

    ids = ["s10", "s2", "10", "02", "s1", "p3_t12", "p3_t2", "S1", "2"]
    assert sorted(ids, key=natural_key) == ["02", "2", "10", "p3_t2", "p3_t12", "S1", "s1", "s2", "s10"]


def _edit(path: Path, edit: Any) -> None:
    with h5py.File(path, "a") as h5:
        edit(h5)


def _replace(h5: h5py.File, name: str, data: Any, **kwargs: Any) -> None:
    """Swap an array for ``data``, keeping its attributes."""
    attrs = dict(h5[name].attrs)
    del h5[name]
    h5.create_dataset(name, data=data, **kwargs).attrs.update(attrs)


def _set_value(name: str, index: tuple[int, ...], value: float) -> Any:
    def edit(h5: h5py.File) -> None:
        h5[name][index] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "field", "words"),
    [
        (lambda h5: h5.__delitem__("modalities"), "/modalities", "no /modalities group"),
        (lambda h5: _replace(h5, "modalities/eda", np.zeros((N + 1, 1, 40), np.float32)), "/labels",
         "12 labels but 13 samples in /modalities/eda"),
        (lambda h5: _replace(h5, "subjects", ["a"] * (N - 1), dtype=h5py.string_dtype()), "/subjects",
         "shape (11,) but there are 12 labels"),
        (lambda h5: h5.__delitem__("labels"), "/labels", "no /labels"),
        (_set_value("modalities/eda", (5, 0, 7), np.nan), "/modalities/eda", "NaN value in sample 5"),
        (_set_value("modalities/video", (9, 0, 1, 2, 3), -np.inf), "/modalities/video", "inf value in sample 9"),
        (_set_value("labels", (3,), 3), "/labels", "label 3 at sample 3 is outside [0, 3)"),
        (lambda h5: h5.attrs.__setitem__("format", "something-else"), "/@format", "'something-else'"),
        (lambda h5: h5.attrs.__delitem__("class_names"), "/@class_names", "without class_names"),
        (lambda h5: h5["modalities/eda"].attrs.__setitem__("kind", "smell"), "/modalities/eda@kind", "'smell'"),
    ],
    ids=["no-modalities", "label-count", "subject-count", "no-labels", "nan", "inf", "label-range",
         "format", "class-names", "kind"],
)
def test_malformed_file_raises_naming_file_field_and_fix(tmp_path: Path, edit: Any, field: str, words: str) -> None:
    path = _write(tmp_path / "bad.h5")
    _edit(path, edit)
    with pytest.raises(DatasetError) as exc:
        validate_dataset(path)
    _assert_error(exc, path, field)
    assert words in str(exc.value)


def test_value_scan_is_skipped_by_read_info(tmp_path: Path) -> None:
    path = _write(tmp_path / "nan.h5")
    _edit(path, _set_value("modalities/eda", (0, 0, 0), np.nan))
    assert read_info(path).n_samples == N
    with pytest.raises(DatasetError, match="NaN"):
        validate_dataset(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "cut.h5")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError) as exc:
        validate_dataset(path)
    _assert_error(exc, path, "/")
    assert "truncated" in str(exc.value)


def test_not_hdf5_and_missing_file(tmp_path: Path) -> None:
    text_file = tmp_path / "data.csv"
    text_file.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError) as exc:
        validate_dataset(text_file)
    _assert_error(exc, text_file, "/")
    assert "not an HDF5 file" in str(exc.value)
    missing = tmp_path / "missing.h5"
    with pytest.raises(DatasetError) as exc:
        read_info(missing)
    _assert_error(exc, missing, "/")
    assert "does not exist" in str(exc.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"labels": np.arange(N - 1) % 3}, "/labels"),
        ({"labels": np.full(N, 0.5)}, "/labels"),
        ({"subjects": list(range(N))}, "/subjects"),
        ({"modalities": {"eda": np.full((N, 1, 40), np.inf)}, "modality_kinds": {"eda": "signal"},
          "sampling_rates": {"eda": 4.0}, "channel_names": None}, "/modalities/eda"),
        ({"modalities": {"eda": np.full((N, 1, 40), 1e39)}, "modality_kinds": {"eda": "signal"},
          "sampling_rates": {"eda": 4.0}, "channel_names": None}, "/modalities/eda"),
        ({"sampling_rates": {"eda": 4.0}}, "/modalities/video@sampling_rate"),
        ({"modality_kinds": {"eda": "signal", "video": "video", "ecg": "signal"}}, "/modalities/ecg"),
        ({"class_names": None}, "/@class_names"),
        ({"task": "ranking"}, "/@task"),
        ({"modalities": {}, "modality_kinds": {}, "sampling_rates": {}, "channel_names": None}, "/modalities"),
    ],
    ids=["label-count", "float-class-labels", "int-subjects", "inf", "float32-overflow", "missing-rate",
         "kind-typo", "no-class-names", "task", "no-modalities"],
)
def test_write_rejects_bad_input_and_leaves_no_file(tmp_path: Path, overrides: dict[str, Any], field: str) -> None:
    path = tmp_path / "out.h5"
    with pytest.raises(DatasetError) as exc:
        _write(path, **overrides)
    _assert_error(exc, path, field)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_existing_file_atomically(tmp_path: Path) -> None:
    path = _write(tmp_path / "toy.h5")
    _write(path, labels=np.zeros(N, dtype=np.int32))
    with h5py.File(path) as h5:
        assert h5["labels"][()].tolist() == [0] * N
    assert [p.name for p in tmp_path.iterdir()] == ["toy.h5"]
