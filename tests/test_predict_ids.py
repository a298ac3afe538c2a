"""``privkd predict --split`` and the predictions CSV's sample ids and true labels (issue 32 item 5)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import config_from_dict
from privkd.data import from_arrays, read_info
from privkd.deploy import save_student
from privkd.errors import DatasetError
from privkd.models.build import build_net

CLASSES = ["Badminton", "Running", "Standing", "Walking"]


@pytest.fixture
def split_data(tmp_path):
    """12 BasicMotions-shaped windows, the last 4 the official test split, and an (untrained) student of them."""
    rng = np.random.default_rng(0)
    labels = np.array(CLASSES * 3)
    dataset = from_arrays(tmp_path / "motions.h5", {"accelerometer": rng.normal(size=(12, 3, 20)),
                                                    "gyroscope": rng.normal(size=(12, 3, 20))},
                          labels, subjects=[f"p{i % 6}" for i in range(12)], splits=["train"] * 8 + ["test"] * 4,
                          sampling_rates={"accelerometer": 10, "gyroscope": 10})
    info = read_info(dataset)
    cfg = config_from_dict({"methods": ["pkdot"], "data": {"prevalent": ["accelerometer"], "privileged": ["gyroscope"]},
                            "model": {"embed_dim": 8, "fusion_dim": 8}})
    student = save_student(tmp_path / "student", build_net("student", cfg, info).eval(), cfg, info, row="pkdot",
                           method="pkdot", role="student", fold=0, test_metrics={}, train_subjects=["p0"])
    return dataset, labels, student


def predict(*args: object):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def test_predict_split_writes_the_rows_ids_and_true_labels_of_that_part(split_data, tmp_path):
    dataset, labels, student = split_data
    out = tmp_path / "test.csv"
    result = predict(student, dataset, "--out", out, "--split", "test")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame.columns[:5]) == ["row", "subject", "split", "true_label", "predicted"]
    assert frame.row.tolist() == [8, 9, 10, 11] and set(frame.split) == {"test"}
    assert frame.true_label.tolist() == labels[8:].tolist()
    assert frame.subject.tolist() == [f"p{i % 6}" for i in range(8, 12)]
    assert predict(student, dataset, "--out", tmp_path / "all.csv").exit_code == 0
    everything = pd.read_csv(tmp_path / "all.csv")
    assert len(everything) == 12
    np.testing.assert_allclose(everything.iloc[8:][[f"prob_{c}" for c in CLASSES]].to_numpy(),
                               frame[[f"prob_{c}" for c in CLASSES]].to_numpy(), atol=1e-6)

    result = predict(student, dataset, "--out", tmp_path / "x.csv", "--split", "validation")
    assert result.exit_code == 2 and "no sample is in split 'validation' (splits: train, test)" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_a_table_keeps_its_sample_ids_split_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    table = pd.DataFrame({"sample": [f"w{i:03d}" for i in range(10)], "subject": [f"0{i % 5}" for i in range(10)],
                          "split": ["train"] * 6 + ["test"] * 4, "label": (["sit", "walk"] * 5),
                          **{f"hr.f{j}": rng.normal(size=10) for j in range(3)},
                          **{f"eda.f{j}": rng.normal(size=10) for j in range(2)}})
    info = read_info(from_arrays(tmp_path / "t.h5", {"hr": table.filter(like="hr.").to_numpy(),
                                                     "eda": table.filter(like="eda.").to_numpy()},
                                 table.label.to_numpy(), subjects=table.subject, splits=table.split,
                                 channel_names={"hr": ["hr.f0", "hr.f1", "hr.f2"], "eda": ["eda.f0", "eda.f1"]}))
    cfg = config_from_dict({"methods": ["pkdot"], "data": {"prevalent": ["hr"], "privileged": ["eda"]},
                            "model": {"embed_dim": 8, "fusion_dim": 8}})
    student = save_student(tmp_path / "student", build_net("student", cfg, info).eval(), cfg, info, row="pkdot",
                           method="pkdot", role="student", fold=0, test_metrics={}, train_subjects=["00"])
    table.drop(columns=[c for c in table if c.startswith("eda.")]).to_csv(tmp_path / "new.csv", index=False)
    result = predict(student, tmp_path / "new.csv", "--out", tmp_path / "p.csv", "--split", "test")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "p.csv", dtype={"subject": str})
    assert list(frame.columns[:6]) == ["row", "sample", "subject", "split", "true_label", "predicted"]
    assert frame["sample"].tolist() == ["w006", "w007", "w008", "w009"] and frame.subject.tolist() == ["01", "02", "03", "04"]
    assert frame.true_label.tolist() == ["sit", "walk", "sit", "walk"]
    with pytest.raises(DatasetError, match="no column split"):
        from privkd.deploy import predict_file

        table.drop(columns=["split"]).to_csv(tmp_path / "nosplit.csv", index=False)
        predict_file(student, tmp_path / "nosplit.csv", tmp_path / "q.csv", split="test")


def test_importing_a_table_without_labels_names_the_cli_option_and_predict(tmp_path):
    pd.DataFrame({"subject": ["a", "b"], "hr.mean": [60.0, 70.0]}).to_csv(tmp_path / "new.csv", index=False)
    result = CliRunner().invoke(app, ["data", "import", "table", str(tmp_path / "new.csv"), str(tmp_path / "new.h5")])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "--label on the command line" in message and "privkd predict" in message


def test_predict_reads_an_unlabelled_ts_file_for_a_student_of_a_ts_import(tmp_path):
    from test_import_ts import basic_motions_lines, write_ts

    from privkd.data.importers.ts import import_ts

    train = write_ts(tmp_path / "M_TRAIN.ts", basic_motions_lines(8, seed=0))
    dataset = import_ts(train, tmp_path / "m.h5", sampling_rate=10, no_subject_ids=True, progress=False,
                        modalities={"accelerometer": [0, 1, 2], "gyroscope": [3, 4, 5]})
    info = read_info(dataset)
    cfg = config_from_dict({"methods": ["pkdot"], "data": {"prevalent": ["gyroscope"], "privileged": ["accelerometer"]},
                            "model": {"embed_dim": 8, "fusion_dim": 8}})
    student = save_student(tmp_path / "student", build_net("student", cfg, info).eval(), cfg, info, row="pkdot",
                           method="pkdot", role="student", fold=0, test_metrics={}, train_subjects=["r0"])
    lines = basic_motions_lines(5, seed=2)
    header, cases = lines[:-5], lines[-5:]
    unlabelled = [("@classLabel false" if line.startswith("@classLabel") else line) for line in header]
    write_ts(tmp_path / "new.ts", unlabelled + [case.rsplit(":", 1)[0] for case in cases])
    assert predict(student, tmp_path / "new.ts", "--out", tmp_path / "new.csv").exit_code == 0
    frame = pd.read_csv(tmp_path / "new.csv")
    assert list(frame.columns[:2]) == ["row", "predicted"] and len(frame) == 5

    # the same cases from the dataset give the same probabilities; a labelled file adds true_label
    write_ts(tmp_path / "labelled.ts", lines)
    assert predict(student, tmp_path / "labelled.ts", "--out", tmp_path / "l.csv").exit_code == 0
    labelled = pd.read_csv(tmp_path / "l.csv")
    assert labelled.true_label.tolist() == [case.rsplit(":", 1)[1] for case in cases]
    np.testing.assert_allclose(labelled.filter(like="prob_").to_numpy(), frame.filter(like="prob_").to_numpy())


def test_predict_refuses_a_ts_file_for_a_student_not_trained_on_one(split_data, tmp_path):
    from test_import_ts import basic_motions_lines, write_ts

    _, _, student = split_data
    write_ts(tmp_path / "new.ts", basic_motions_lines(4, seed=0))
    result = predict(student, tmp_path / "new.ts", "--out", tmp_path / "p.csv")
    assert result.exit_code == 2 and "was not imported from a .ts file" in " ".join(result.output.split())
