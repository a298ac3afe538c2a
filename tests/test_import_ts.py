"""UEA/UCR ``.ts`` import (``privkd data import ts``), ``privkd.data.from_arrays``, and data
without subject ids described as recording-independent in tables, reports and model cards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import privkd
from privkd.cli import app
from privkd.data import from_arrays, read_info
from privkd.data.importers.ts import import_ts, read_ts
from privkd.errors import DatasetError
from privkd.report import build_report

CLASSES = ["Standing", "Running", "Walking", "Badminton"]
DIMS, STEPS = 6, 20


def basic_motions_lines(n: int, seed: int, problem: str = "BasicMotions") -> list[str]:
    """A miniature BasicMotions: 6 dimensions (accelerometer x, y, z then gyroscope x, y, z),
    ``n`` cases cycling through the 4 classes, whose mean level tells the class apart."""
    rng = np.random.default_rng(seed)
    lines = [f"# miniature of the UEA {problem} problem", f"@problemName {problem}", "@timeStamps false",
             "@missing false", "@univariate false", f"@dimensions {DIMS}", "@equalLength true",
             f"@seriesLength {STEPS}", f"@classLabel true {' '.join(CLASSES)}", "@data"]
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        series = rng.normal(loc=CLASSES.index(label), size=(DIMS, STEPS))
        lines.append(":".join(",".join(f"{v:.4f}" for v in dim) for dim in series) + f":{label}")
    return lines


def write_ts(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def archive(tmp_path) -> Path:
    """BasicMotions_TRAIN.ts (16 cases) beside BasicMotions_TEST.ts (8 cases)."""
    write_ts(tmp_path / "BasicMotions_TEST.ts", basic_motions_lines(8, seed=1))
    return write_ts(tmp_path / "BasicMotions_TRAIN.ts", basic_motions_lines(16, seed=0))


def import_cli(*args: object):
    return CliRunner().invoke(app, ["data", "import", "ts", *map(str, args)])


SENSORS = ["--modality", "accelerometer=0-2", "--modality", "gyroscope=3,4,5", "--sampling-rate", "10"]


def test_ts_import_maps_dimensions_to_modalities_and_keeps_the_official_split(archive, tmp_path):
    dst = tmp_path / "motions.h5"
    result = import_cli(archive, dst, *SENSORS, "--no-subject-ids", "--no-progress")
    assert result.exit_code == 0, result.output
    info = read_info(dst)
    assert info.independence == "recording" and info.task == "classification" and info.n_samples == 24
    assert info.class_names == sorted(CLASSES)
    for name, dims in (("accelerometer", (0, 1, 2)), ("gyroscope", (3, 4, 5))):
        modality = info.modalities[name]
        assert (modality.kind, modality.sample_shape, modality.sampling_rate) == ("signal", (3, STEPS), 10.0)
        assert modality.channel_names == tuple(f"dim_{d}" for d in dims)
    import h5py

    with h5py.File(dst) as h5:
        splits = h5["splits"].asstr()[()].tolist()
        labels = h5["labels"][()]
        gyroscope = h5["modalities/gyroscope"][()]
    assert splits == ["train"] * 16 + ["test"] * 8
    assert [info.class_names[c] for c in labels[:4]] == CLASSES
    parsed = read_ts(archive)
    np.testing.assert_allclose(gyroscope[:16], parsed.values[:, 3:], atol=1e-6)
    assert "Recordings: 24" in result.output and "recording-independent" in result.output


def test_ts_import_needs_an_explicit_choice_about_subject_ids(archive, tmp_path):
    dst = tmp_path / "motions.h5"
    result = import_cli(archive, dst, *SENSORS)
    assert result.exit_code == 2 and "--subjects" in result.output and "--no-subject-ids" in result.output
    assert not dst.exists()
    ids = tmp_path / "subjects.txt"
    ids.write_text("\n".join(f"p{i % 6}" for i in range(24)) + "\n")
    assert import_cli(archive, dst, *SENSORS, "--subjects", ids, "--no-progress").exit_code == 0
    info = read_info(dst)
    assert info.independence == "subject" and info.subjects == [f"p{i}" for i in range(6)]
    ids.write_text("p0\np1\n")
    with pytest.raises(DatasetError, match="2 subject ids for 24 cases"):
        import_ts(archive, tmp_path / "other.h5", sampling_rate=10, subjects=["p0", "p1"], progress=False)


@pytest.mark.parametrize(("change", "message"), [
    (lambda lines: lines[:-1] + [lines[-1].replace(",", ",?,", 1)], "'?' is not a number"),
    (lambda lines: lines[:-1] + [lines[-1].replace(",", ",NaN,", 1)], "missing or infinite value"),
    (lambda lines: lines[:-1] + [lines[-1].split(",", 1)[1]], "equal-length"),
    (lambda lines: lines[:-1] + [lines[-1].rsplit(":", 1)[0] + ":Jumping"], "'Jumping' is not declared"),
    (lambda lines: [line.replace("@timeStamps false", "@timeStamps true") for line in lines], "time-stamped"),
])
def test_ts_import_refuses_what_a_dataset_cannot_hold(tmp_path, change, message):
    src = write_ts(tmp_path / "X.ts", change(basic_motions_lines(4, seed=0)))
    with pytest.raises(DatasetError, match=message) as error:
        import_ts(src, tmp_path / "x.h5", sampling_rate=10, no_subject_ids=True, progress=False)
    assert str(src) in str(error.value)
    assert not (tmp_path / "x.h5").exists()


def test_ts_import_refuses_dimensions_out_of_range_or_twice(archive, tmp_path):
    for grouping, message in (({"a": [0, 6]}, "dimension 6"), ({"a": [0, 1], "b": [1]}, "both 'a' and 'b'")):
        with pytest.raises(DatasetError, match=message):
            import_ts(archive, tmp_path / "x.h5", sampling_rate=10, modalities=grouping, no_subject_ids=True,
                      progress=False)


def test_from_arrays_takes_any_labels_and_subject_ids(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array(["walk", "run", "sit"] * 4)
    dst = from_arrays(tmp_path / "a.h5", {"acc": rng.normal(size=(12, 3, 8)), "hr": rng.normal(size=(12, 2))}, labels,
                      subjects=np.arange(12) % 4, sampling_rates={"acc": 50})
    info = read_info(dst)
    assert info.class_names == ["run", "sit", "walk"] and info.subjects == ["0", "1", "2", "3"]
    assert info.modalities["acc"].kind == "signal" and info.modalities["hr"].kind == "features"
    assert read_info(from_arrays(tmp_path / "r.h5", {"hr": rng.normal(size=(12, 2))}, rng.normal(size=12),
                                 subjects=np.arange(12) % 4)).task == "regression"
    with pytest.raises(DatasetError, match="no_subject_ids=True"):
        from_arrays(tmp_path / "b.h5", {"hr": rng.normal(size=(12, 2))}, labels)
    with pytest.raises(DatasetError, match=r"sampling_rates=\{'acc': HZ\}"):
        from_arrays(tmp_path / "b.h5", {"acc": rng.normal(size=(12, 3, 8))}, labels, no_subject_ids=True)
    assert not (tmp_path / "b.h5").exists()


def test_results_of_data_without_subject_ids_are_called_recording_independent(archive, tmp_path):
    """Tables, the report and the model card of a run on the official split of a .ts import."""
    dataset = import_ts(archive, tmp_path / "motions.h5", sampling_rate=10, no_subject_ids=True, progress=False,
                        modalities={"accelerometer": [0, 1, 2], "gyroscope": [3, 4, 5]})
    config = {"name": "motions", "methods": ["pkdot"],
              "data": {"path": str(dataset), "prevalent": ["accelerometer"], "privileged": ["gyroscope"]},
              "evaluation": {"protocol": "splits", "n_val_subjects": 4, "linear_reference": False},
              "model": {"embed_dim": 8, "fusion_dim": 8},
              "training": {"epochs": 1, "batch_size": 8, "threads": 1, "jobs": 1, "progress_bar": False}}
    run = privkd.run(config, tmp_path / "runs")
    assert not run.failures and run.summary["independence"] == "recording"
    assert "recording-independent test folds" in (run.dir / "summary.md").read_text()
    paths = build_report(run.dir)
    for path in (paths.markdown, paths.html):
        text = path.read_text()
        assert "recording-independent test fold" in text and "subject-independent" not in text
        assert "Per-subject scores" not in text  # one sample per recording: all-or-nothing scores
        assert "Scores are on test recordings never seen" in text
    card = next(run.dir.rglob("model_card.md")).read_text()
    assert "recording-independent" in card and "subject-independent" not in card
    student = json.loads(next(run.dir.rglob("student.json")).read_text())
    assert student["training"]["independence"] == "recording"


def test_a_regression_ts_file_becomes_a_regression_dataset(tmp_path):
    """``@targetLabel true`` (as Covid3Month): one float target after each univariate series."""
    rng = np.random.default_rng(0)
    cases = [",".join(f"{v:.3f}" for v in rng.normal(size=12)) + f":{t:.4f}" for t in rng.uniform(size=10)]
    src = write_ts(tmp_path / "Covid_TRAIN.ts", ["@problemname Covid", "@timestamps false", "@univariate true",
                                                  "@equallength true", "@targetlabel true", "@data", *cases])
    info = read_info(import_ts(src, tmp_path / "c.h5", sampling_rate=1, no_subject_ids=True, progress=False))
    assert info.task == "regression" and info.target_names == ["target"]
    assert info.modalities["series"].sample_shape == (1, 12) and "1 dimension of 12 steps" in info.description
