"""Deployment of trained students: saved directory + model card, predictions on new data, ONNX export, CLI."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import config_from_dict
from privkd.data import read_info, write_dataset
from privkd.deploy import export_onnx, load_student, onnx_metadata, predict_file, save_student
from privkd.deploy.student import CARD_FILE, STUDENT_FILE, WEIGHTS_FILE
from privkd.errors import DatasetError, PrivkdError
from privkd.methods.registry import method_spec
from privkd.models.build import build_net

N_SAMPLES = 40
SMALL_MODEL = {"embed_dim": 16, "fusion_dim": 24, "tnet_hidden": 32, "tnet_bottleneck": 8}


# ------------------------------------------------------------------------------- helpers


def _config(prevalent=("accelerometer",), privileged=("gyroscope",), **model):
    return config_from_dict({"methods": ["pkdot"], "data": {"prevalent": list(prevalent), "privileged": list(privileged)},
                             "model": {**SMALL_MODEL, **model},
                             "student": {"hallucinate": True}})  # a student with a T-Net: the most a saved student carries


def _net(role, cfg, info, seed=0, fit=None):
    """A randomly initialised net whose standardisation statistics are not the identity: fitted
    on ``fit`` ({modality: samples}) where given, else random, so that outputs depend on the
    preprocessing travelling with the weights."""
    torch.manual_seed(seed)
    net = build_net(role, cfg, info)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, encoder in net.encoders.items():
            if fit is not None and name in fit:
                encoder.standardize.fit([torch.from_numpy(np.asarray(fit[name], dtype=np.float32))])
            else:
                shape = encoder.standardize.mean.shape
                encoder.standardize.mean.copy_(4 * torch.rand(shape, generator=generator) - 2)
                encoder.standardize.std.copy_(0.5 + 2 * torch.rand(shape, generator=generator))
        net.head.weight.mul_(10)  # spread the logits, so that argmax varies between samples
    return net.eval()


def _save(tmp_path, role, cfg, info, seed=0, name="student", method="pkdot", fit=None):
    net = _net(role, cfg, info, seed, fit)
    directory = save_student(tmp_path / name, net, cfg, info, row=method, method=method, role=role, fold=2,
                             test_metrics={"accuracy": 0.8125, "macro_f1": 0.75}, train_subjects=["s01", "s02", "s03"])
    return net, directory


@pytest.fixture(scope="module")
def watch(watch_path):
    """The embedded dataset's description and its first samples."""
    info = read_info(watch_path)
    rows = np.linspace(0, info.n_samples - 1, N_SAMPLES).astype(int)  # across subjects and exercises
    with h5py.File(watch_path, "r") as h5:
        arrays = {name: np.asarray(h5["modalities"][name][()][rows], dtype=np.float32) for name in info.modalities}
        labels = np.asarray(h5["labels"][()][rows])
        subjects = np.asarray(h5["subjects"].asstr()[()][rows], dtype=str)
        groups = np.asarray(h5["groups"].asstr()[()][rows], dtype=str)
    return info, arrays, labels, subjects, groups


def _write_h5(path, watch, modalities, shape_cut=None):
    info, arrays, labels, subjects, groups = watch
    chosen = {m: arrays[m][..., :shape_cut] if shape_cut else arrays[m] for m in modalities}
    return write_dataset(path, modalities=chosen, labels=labels, subjects=list(subjects), groups=list(groups),
                         task="classification", class_names=info.class_names,
                         modality_kinds={m: "signal" for m in modalities},
                         sampling_rates={m: 50.0 for m in modalities})


def _outputs(net, inputs):
    with torch.no_grad():
        return net({name: torch.from_numpy(np.asarray(x, dtype=np.float32)) for name, x in inputs.items()}).logits


# ------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("role", ["student", "baseline"])
def test_save_load_reproduces_outputs_with_only_prevalent_inputs(tmp_path, watch, role):
    info, arrays, *_ = watch
    cfg = _config()
    net, directory = _save(tmp_path, role, cfg, info, fit=arrays)
    assert sorted(p.name for p in directory.iterdir()) == sorted([CARD_FILE, STUDENT_FILE, WEIGHTS_FILE])

    student = load_student(directory)
    assert not student.net.training
    assert student.prevalent == ["accelerometer"] and student.privileged == ["gyroscope"]
    assert student.task == "classification" and student.class_names == info.class_names
    assert set(student.net.encoders) == {"accelerometer"}  # no encoder for the privileged modality
    assert (student.net.tnet is not None) == (role == "student")
    loaded_std = student.net.encoders["accelerometer"].standardize.std
    assert torch.equal(loaded_std, net.encoders["accelerometer"].standardize.std)
    assert not torch.equal(loaded_std, torch.ones_like(loaded_std))  # the preprocessing travelled with the weights

    only_prevalent = {"accelerometer": arrays["accelerometer"]}  # the gyroscope is never given
    expected, got = _outputs(net, only_prevalent), _outputs(student.net, only_prevalent)
    assert got.shape == (N_SAMPLES, 7)
    assert torch.equal(got, expected)
    # and the standardisation matters: identity statistics would give other outputs
    student.net.encoders["accelerometer"].standardize.std.fill_(1.0)
    assert not torch.allclose(_outputs(student.net, only_prevalent), expected, atol=1e-3)

    card = json.loads((directory / STUDENT_FILE).read_text())
    assert card["role"] == role and card["inputs"]["accelerometer"]["sample_shape"] == [3, 100]
    assert card["training"]["train_subjects"] == ["s01", "s02", "s03"] and card["training"]["fold"] == 2
    assert card["test_metrics"] == {"accuracy": 0.8125, "macro_f1": 0.75}


def test_model_card_describes_inputs_and_what_is_never_needed(tmp_path, watch):
    info = watch[0]
    _, directory = _save(tmp_path, "student", _config(), info)
    text = (directory / CARD_FILE).read_text()
    assert "**accelerometer**: signal, shape per sample (3, 100)" in text
    assert "50 Hz" in text and "ax, ay, az" in text
    assert "per-channel standardisation" in text and "training subjects" in text
    never = text[text.index("## Never needed"):text.index("## Outputs")]
    assert "**gyroscope**" in never and "not needed" in never
    assert "gyroscope" not in text[text.index("## Inputs"):text.index("## Never needed")]
    assert all(name in text for name in info.class_names)
    assert "s01, s02, s03" in text and "| macro_f1 | 0.7500 |" in text
    assert f"privkd predict {directory.name} " in text and f"privkd export {directory.name} " in text
    assert str(tmp_path) not in text  # no path of the training machine
    header = text[: text.index("# privkd student")]
    assert header.startswith("---\nlibrary_name: privkd\n") and "datasets: [" in header
    assert "{name: macro_f1, value: 0.7500" in header
    assert "## Intended use" in text and "## Limitations" in text and "one fold's, not a population estimate" in text


def test_weights_from_another_model_are_refused(tmp_path, watch):
    info = watch[0]
    cfg = _config()
    _, directory = _save(tmp_path, "student", cfg, info)
    _, other_architecture = _save(tmp_path, "baseline", cfg, info, name="baseline")
    _, other_weights = _save(tmp_path, "student", cfg, info, seed=7, name="student_seed7")

    shutil.copy(other_architecture / WEIGHTS_FILE, directory / WEIGHTS_FILE)
    with pytest.raises(PrivkdError) as err:
        load_student(directory)
    message = str(err.value)
    assert str(directory / WEIGHTS_FILE) in message and "comes from another model" in message
    assert "tensors missing" in message and "tnet" in message and "Fix:" in message

    shutil.copy(other_weights / WEIGHTS_FILE, directory / WEIGHTS_FILE)  # same architecture, other weights
    with pytest.raises(PrivkdError, match="comes from another model .*checksum"):
        load_student(directory)

    (directory / WEIGHTS_FILE).write_bytes(b"not a torch file")
    with pytest.raises(PrivkdError, match="not a readable weights file") as err:
        load_student(directory)
    assert "weights_only=False" not in str(err.value)


def test_unusable_student_directories_are_refused(tmp_path, watch):
    with pytest.raises(PrivkdError, match="no such student directory"):
        load_student(tmp_path / "missing")
    _, directory = _save(tmp_path, "student", _config(), watch[0])
    (directory / STUDENT_FILE).write_text('{"format": "privkd-student", ')
    with pytest.raises(PrivkdError, match="unreadable student description") as err:
        load_student(directory)
    assert err.value.fix
    (directory / STUDENT_FILE).unlink()
    with pytest.raises(PrivkdError, match="student.json: file not found"):
        load_student(directory)


def test_save_refuses_networks_that_need_privileged_inputs_or_another_role(tmp_path, watch):
    info = watch[0]
    cfg = _config()
    with pytest.raises(PrivkdError, match="cannot be deployed"):
        save_student(tmp_path / "t", build_net("teacher", cfg, info), cfg, info, row="teacher", method="teacher",
                     role="teacher", fold=0, test_metrics={}, train_subjects=[])
    with pytest.raises(ValueError, match="does not match build_net"):
        save_student(tmp_path / "b", build_net("baseline", cfg, info), cfg, info, row="pkdot", method="pkdot",
                     role="student", fold=0, test_metrics={}, train_subjects=[])
    assert [method_spec(m).role if method_spec(m).deployable else None
            for m in ("baseline", "teacher", "pkdot", "mtpkdot", "p2p_kl", "amid")] == \
        ["baseline", None, "student", "student", "student", "baseline"]


# ------------------------------------------------------------------------------- predict


def test_predict_h5_without_privileged_modality(tmp_path, watch):
    info, arrays, _, subjects, groups = watch
    net, directory = _save(tmp_path, "student", _config(), info, fit=arrays)
    only_acc = _write_h5(tmp_path / "acc_only.h5", watch, ["accelerometer"])
    out = predict_file(directory, only_acc, tmp_path / "out" / "pred.csv", batch_size=16)  # 3 batches, last partial

    frame = pd.read_csv(out, dtype={"subject": str, "group": str})
    assert list(frame.columns) == ["row", "subject", "group", "true_label", "predicted",
                                   *[f"prob_{c}" for c in info.class_names]]
    assert frame.true_label.tolist() == [info.class_names[c] for c in watch[2]]
    assert frame.row.tolist() == list(range(N_SAMPLES))
    assert frame.subject.tolist() == subjects.tolist() and frame.group.tolist() == groups.tolist()
    logits = _outputs(net, {"accelerometer": arrays["accelerometer"]})
    expected = torch.softmax(logits.double(), dim=-1).numpy()
    np.testing.assert_allclose(frame[[f"prob_{c}" for c in info.class_names]].to_numpy(), expected, atol=1e-6, rtol=0)
    assert frame.predicted.tolist() == [info.class_names[i] for i in logits.argmax(dim=1).tolist()]
    assert len(set(frame.predicted)) > 1  # non-trivial predictions
    assert not list(out.parent.glob(".*.tmp"))


def test_predict_refuses_missing_or_misshaped_prevalent_modality(tmp_path, watch):
    _, directory = _save(tmp_path, "student", _config(), watch[0])
    out = tmp_path / "pred.csv"
    gyro_only = _write_h5(tmp_path / "gyro_only.h5", watch, ["gyroscope"])
    with pytest.raises(DatasetError) as err:
        predict_file(directory, gyro_only, out)
    assert str(gyro_only) in str(err.value) and "accelerometer" in str(err.value) and "(3, 100)" in str(err.value)
    short = _write_h5(tmp_path / "short.h5", watch, ["accelerometer", "gyroscope"], shape_cut=50)
    with pytest.raises(DatasetError, match=r"accelerometer.*\(3, 50\).*expects .*\(3, 100\)") as err:
        predict_file(directory, short, out)
    assert str(short) in str(err.value)
    assert not out.exists()


def _table(n, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "subject": [f"{i % 4:02d}" for i in range(n)],
        "eda.mean": rng.normal(2, 1, n), "eda.slope": rng.normal(-1, 3, n),
        "eda.peaks": rng.normal(5, 2, n), "eda.tonic": rng.normal(0, 1, n),
        "ecg.hr": rng.normal(70, 10, n), "ecg.hrv": rng.normal(40, 5, n),
        "label": [["pain", "none", "low"][i % 3] for i in range(n)],
    })


def test_predict_table_for_a_feature_student(tmp_path):
    from privkd.data.importers.table import import_table

    train = tmp_path / "train.csv"
    _table(30, seed=0).to_csv(train, index=False)
    dataset = import_table(train, tmp_path / "train.h5", progress=False)
    info = read_info(dataset)
    cfg = _config(prevalent=("eda",), privileged=("ecg",))
    net, directory = _save(tmp_path, "student", cfg, info)
    assert load_student(directory).inputs["eda"].sample_shape == (4,)
    feature_order = ["eda.mean", "eda.slope", "eda.peaks", "eda.tonic"]
    assert json.loads((directory / STUDENT_FILE).read_text())["inputs"]["eda"]["feature_columns"] == feature_order

    new = _table(11, seed=1)
    expected = _outputs(net, {"eda": new[feature_order].to_numpy()})
    # columns in another order, without the privileged ecg columns and without labels
    shuffled = new[["eda.tonic", "subject", "eda.peaks", "eda.mean", "eda.slope"]]
    shuffled.to_csv(tmp_path / "new.csv", index=False)
    shuffled.to_parquet(tmp_path / "new.parquet")
    for name in ("new.csv", "new.parquet"):
        frame = pd.read_csv(predict_file(directory, tmp_path / name, tmp_path / f"{name}.pred.csv"), dtype={"subject": str})
        assert frame.subject.tolist() == new.subject.tolist()
        probabilities = frame[[f"prob_{c}" for c in info.class_names]].to_numpy()
        np.testing.assert_allclose(probabilities, torch.softmax(expected.double(), -1).numpy(), atol=1e-6, rtol=0)

    new.drop(columns=["eda.peaks"]).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(DatasetError, match="eda.peaks") as err:
        predict_file(directory, tmp_path / "missing.csv", tmp_path / "p.csv")
    assert str(tmp_path / "missing.csv") in str(err.value)
    with pytest.raises(DatasetError, match="table can only feed 1-D feature vectors"):
        _, signal_student = _save(tmp_path, "student", _config(), read_info(_write_h5_signal(tmp_path)), name="sig")
        predict_file(signal_student, tmp_path / "new.csv", tmp_path / "p.csv")


def _write_h5_signal(tmp_path):
    rng = np.random.default_rng(0)
    return write_dataset(tmp_path / "sig.h5", modalities={"accelerometer": rng.normal(size=(6, 3, 100)),
                                                          "gyroscope": rng.normal(size=(6, 3, 100))},
                         labels=[0, 1] * 3, subjects=["a", "b", "c"] * 2, task="classification", class_names=["x", "y"],
                         modality_kinds={"accelerometer": "signal", "gyroscope": "signal"},
                         sampling_rates={"accelerometer": 50.0, "gyroscope": 50.0})


def test_predict_regression_table_without_stored_feature_names(tmp_path):
    rng = np.random.default_rng(3)
    dataset = write_dataset(tmp_path / "reg.h5", modalities={"eda": rng.normal(size=(20, 4)), "ecg": rng.normal(size=(20, 2))},
                            labels=rng.normal(size=(20, 2)), subjects=[f"s{i % 5}" for i in range(20)],
                            task="regression", target_names=["valence", "arousal"],
                            modality_kinds={"eda": "features", "ecg": "features"})
    info = read_info(dataset)
    net, directory = _save(tmp_path, "student", _config(prevalent=("eda",), privileged=("ecg",)), info)
    new = _table(9, seed=2)
    new.to_csv(tmp_path / "new.csv", index=False)  # eda.* columns taken in table order
    frame = pd.read_csv(predict_file(directory, tmp_path / "new.csv", tmp_path / "pred.csv"))
    assert list(frame.columns) == ["row", "subject", "valence", "arousal"]
    expected = _outputs(net, {"eda": new[["eda.mean", "eda.slope", "eda.peaks", "eda.tonic"]].to_numpy()}).numpy()
    np.testing.assert_allclose(frame[["valence", "arousal"]].to_numpy(), expected, atol=1e-6)

    new.drop(columns=["eda.tonic"]).to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(DatasetError, match=r"3 feature columns of modality 'eda', but this student expects 4"):
        predict_file(directory, tmp_path / "three.csv", tmp_path / "pred.csv")


# ------------------------------------------------------------------------------- ONNX


def test_onnx_export_matches_pytorch_with_dynamic_batch(tmp_path, watch):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    info, arrays, *_ = watch
    cfg = _config(fusion="multimodal_transformer", tokens=4, attention_heads=2)
    net, directory = _save(tmp_path, "student", cfg, info, fit=arrays)
    path = export_onnx(directory, tmp_path / "onnx" / "student.onnx")
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))
    meta = onnx_metadata(path)
    assert meta["privkd.exporter"] == "dynamo"
    assert json.loads(meta["privkd.output_names"]) == info.class_names

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["accelerometer"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (7, 1):  # exported at batch 2
        x = arrays["accelerometer"][:batch]
        got = session.run(None, {"accelerometer": x})[0]
        np.testing.assert_allclose(got, _outputs(net, {"accelerometer": x}).numpy(), atol=1e-4, rtol=0)


def test_onnx_torchscript_fallback(tmp_path, watch, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    import privkd.deploy.export as export_module

    monkeypatch.setattr(export_module, "EXPORTERS", ("torchscript",))  # as when the dynamo exporter fails
    info, arrays, *_ = watch
    net, directory = _save(tmp_path, "baseline", _config(), info, fit=arrays)
    path = export_onnx(directory, tmp_path / "b.onnx")
    assert onnx_metadata(path)["privkd.exporter"] == "torchscript"
    x = arrays["accelerometer"][:5]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"accelerometer": x})[0]
    np.testing.assert_allclose(got, _outputs(net, {"accelerometer": x}).numpy(), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------- CLI


def test_cli_predict_and_export(tmp_path, watch):
    runner = CliRunner()
    _, directory = _save(tmp_path, "student", _config(), watch[0])
    only_acc = _write_h5(tmp_path / "acc.h5", watch, ["accelerometer"])

    result = runner.invoke(app, ["predict", str(directory), str(only_acc), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert f"predicted {N_SAMPLES} samples" in result.output and len(pd.read_csv(tmp_path / "p.csv")) == N_SAMPLES

    gyro_only = _write_h5(tmp_path / "gyro.h5", watch, ["gyroscope"])
    result = runner.invoke(app, ["predict", str(directory), str(gyro_only), "--out", str(tmp_path / "q.csv")])
    assert result.exit_code == 2 and "accelerometer" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "q.csv").exists()

    result = runner.invoke(app, ["export", str(tmp_path / "nowhere"), "--onnx", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "no such student directory" in result.output
