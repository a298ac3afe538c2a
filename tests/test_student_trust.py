"""A saved student is checked against what it was trained on, and its student.json is untrusted input.

Issue 31, items 2 and 6: ``privkd predict`` refuses an input modality of another kind, sampling
rate or channel / column order than the training data's (unless ``--allow-mismatch``); a
student records every feature column name of a wide table; student.json is checked against a
strict schema before anything is built or allocated, and the weights checksum cannot be
skipped; names and dataset text are escaped in model_card.md. Tiny untrained networks only.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

import privkd.deploy.student as student_module
from privkd.cli import app
from privkd.config.loading import config_from_dict
from privkd.data import read_info, write_dataset
from privkd.deploy import load_student, predict_file, save_student
from privkd.deploy.predict import InputWarning
from privkd.deploy.student import CARD_FILE, STUDENT_FILE, WEIGHTS_FILE
from privkd.errors import DatasetError, PrivkdError
from privkd.models.build import build_net

SMALL_MODEL = {"embed_dim": 8, "fusion_dim": 8, "tnet_hidden": 8, "tnet_bottleneck": 4}
CHANNELS = ["x", "y", "z"]
N = 12


# ------------------------------------------------------------------------------- helpers


def _config(prevalent=("accelerometer",), privileged=("gyroscope",)):
    return config_from_dict({"methods": ["pkdot"], "data": {"prevalent": list(prevalent), "privileged": list(privileged)},
                             "model": dict(SMALL_MODEL)})


def _signal_h5(path, *, rate=50.0, channels=CHANNELS, kind="signal", class_names=("a", "b"), description="", seed=0):
    rng = np.random.default_rng(seed)
    acc = rng.normal(size=(N, 3, 20)).astype(np.float32)
    return write_dataset(path, modalities={"accelerometer": acc, "gyroscope": rng.normal(size=(N, 3, 20))},
                         labels=[i % len(class_names) for i in range(N)], subjects=[f"s{i % 3}" for i in range(N)],
                         task="classification", class_names=list(class_names),
                         modality_kinds={"accelerometer": kind, "gyroscope": "signal"},
                         sampling_rates={"accelerometer": rate, "gyroscope": 50.0},
                         channel_names={"accelerometer": list(channels), "gyroscope": ["u", "v", "w"]} if channels
                         else None, description=description)


def _save(directory, info, cfg=None, seed=0, role="student", method="pkdot", row=None):
    cfg = cfg or _config()
    torch.manual_seed(seed)
    net = build_net(role, cfg, info).eval()
    with torch.no_grad():
        net.head.weight.mul_(10)  # spread the logits, so that predictions depend on the input
    save_student(directory, net, cfg, info, row=row or method, method=method, role=role, fold=0,
                 test_metrics={"accuracy": 0.5}, train_subjects=["s0", "s1"])
    return net, directory


@pytest.fixture()
def signal_student(tmp_path):
    """A student trained on 50 Hz accelerometer windows with channels [x, y, z]."""
    info = read_info(_signal_h5(tmp_path / "train.h5"))
    net, directory = _save(tmp_path / "student", info)
    return net, directory


def _one_line_error(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ------------------------------------------------------------------------------- (a) what the student was trained on


def test_student_records_kind_rate_and_channels_of_every_input(signal_student):
    card = json.loads((signal_student[1] / STUDENT_FILE).read_text())
    assert card["inputs"]["accelerometer"] == {"kind": "signal", "sample_shape": [3, 20], "sampling_rate": 50.0,
                                               "channel_names": CHANNELS}


@pytest.mark.parametrize(("change", "field", "given", "trained"), [
    ({"rate": 100.0}, "sampling_rate", "100 Hz", "50 Hz"),
    ({"channels": ["z", "y", "x"]}, "channel_names", "[z, y, x]", "[x, y, z]"),
    ({"kind": "features", "rate": None}, "kind", "'features'", "'signal'"),
])
def test_predict_refuses_another_rate_channel_order_or_kind(tmp_path, signal_student, change, field, given, trained):
    _, directory = signal_student
    data = _signal_h5(tmp_path / "new.h5", seed=1, **change)
    out = tmp_path / "pred.csv"
    with pytest.raises(DatasetError) as err:
        predict_file(directory, data, out)
    message = _one_line_error(err)
    assert err.value.field == f"/modalities/accelerometer@{field}"
    assert "'accelerometer'" in message and given in message and trained in message and "--allow-mismatch" in message
    assert not out.exists()

    with pytest.warns(InputWarning, match=re.escape(field)):
        predict_file(directory, data, out, allow_mismatch=True)  # scored anyway, with a warning
    assert len(pd.read_csv(out)) == N


def test_predict_accepts_the_training_rate_and_channels_and_an_unnamed_file(tmp_path, signal_student):
    _, directory = signal_student
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        predict_file(directory, _signal_h5(tmp_path / "same.h5", seed=1), tmp_path / "a.csv")
        predict_file(directory, _signal_h5(tmp_path / "unnamed.h5", seed=1, channels=None), tmp_path / "b.csv")
    assert len(pd.read_csv(tmp_path / "a.csv")) == N and len(pd.read_csv(tmp_path / "b.csv")) == N


def test_cli_predict_refuses_a_mismatch_in_one_line_and_allow_mismatch_warns(tmp_path, signal_student):
    _, directory = signal_student
    data = _signal_h5(tmp_path / "fast.h5", rate=100.0, seed=1)
    runner = CliRunner()
    refused = runner.invoke(app, ["predict", str(directory), str(data), "--out", str(tmp_path / "p.csv")])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    output = " ".join(refused.output.split())  # (rich wraps at 240 columns)
    assert output.count("error:") == 1 and output.startswith("error:") and "100 Hz" in output and "50 Hz" in output
    assert not (tmp_path / "p.csv").exists()

    allowed = runner.invoke(app, ["predict", str(directory), str(data), "--out", str(tmp_path / "p.csv"),
                                  "--allow-mismatch"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning:" in allowed.output and "sampling rate is 100 Hz" in allowed.output
    assert len(pd.read_csv(tmp_path / "p.csv")) == N


def _wide_table(path, n_rows, n_features, seed):
    rng = np.random.default_rng(seed)
    columns = {f"eda.feature_{i:04d}": rng.normal(i % 7, 1 + i % 3, n_rows) for i in range(n_features)}
    frame = pd.DataFrame({"subject": [f"s{i % 3}" for i in range(n_rows)], **columns,
                          "ecg.hr": rng.normal(70, 10, n_rows), "label": [["a", "b"][i % 2] for i in range(n_rows)]})
    frame.to_csv(path, index=False)
    return frame


def test_a_wide_table_student_records_every_column_and_reads_them_by_name(tmp_path):
    from privkd.data.importers.table import import_table

    n_features = 600  # the description lists about 530 such names (8000 characters), then "... (n more)"
    _wide_table(tmp_path / "train.csv", 12, n_features, seed=0)
    info = read_info(import_table(tmp_path / "train.csv", tmp_path / "train.h5", progress=False))
    assert "more)" in info.description  # the human listing is cut short
    _, directory = _save(tmp_path / "student", info, _config(prevalent=("eda",), privileged=("ecg",)))
    names = [f"eda.feature_{i:04d}" for i in range(n_features)]
    assert json.loads((directory / STUDENT_FILE).read_text())["inputs"]["eda"]["feature_columns"] == names

    new = _wide_table(tmp_path / "new.csv", 9, n_features, seed=1)
    new[["subject", *reversed(names)]].to_csv(tmp_path / "reversed.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)  # names known: nothing left unchecked
        ordered = pd.read_csv(predict_file(directory, tmp_path / "new.csv", tmp_path / "a.csv"))
        reordered = pd.read_csv(predict_file(directory, tmp_path / "reversed.csv", tmp_path / "b.csv"))
    probabilities = [c for c in ordered.columns if c.startswith("prob_")]
    np.testing.assert_allclose(reordered[probabilities].to_numpy(), ordered[probabilities].to_numpy(), atol=1e-6)
    assert "(588 more)" in (directory / CARD_FILE).read_text()  # the card lists the first 12


def test_a_features_h5_with_other_column_order_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    columns = ["eda.mean", "eda.slope", "eda.peaks"]

    def h5(path, names):
        return write_dataset(path, modalities={"eda": rng.normal(size=(N, 3)), "ecg": rng.normal(size=(N, 2))},
                             labels=[i % 2 for i in range(N)], subjects=[f"s{i % 3}" for i in range(N)],
                             task="classification", class_names=["a", "b"],
                             modality_kinds={"eda": "features", "ecg": "features"}, channel_names={"eda": names})

    info = read_info(h5(tmp_path / "train.h5", columns))
    _, directory = _save(tmp_path / "student", info, _config(prevalent=("eda",), privileged=("ecg",)))
    assert json.loads((directory / STUDENT_FILE).read_text())["inputs"]["eda"]["feature_columns"] == columns
    with pytest.raises(DatasetError, match=r"feature columns are \[eda.peaks, eda.slope, eda.mean\] in this file "
                                           r"\(the same names in another order\), but this student was trained on "
                                           r"\[eda.mean, eda.slope, eda.peaks\]"):
        predict_file(directory, h5(tmp_path / "new.h5", columns[::-1]), tmp_path / "p.csv")


def test_a_table_for_a_student_without_column_names_is_scored_with_a_warning(tmp_path):
    rng = np.random.default_rng(0)
    data = write_dataset(tmp_path / "train.h5", modalities={"eda": rng.normal(size=(N, 2)), "ecg": rng.normal(size=(N, 2))},
                         labels=[i % 2 for i in range(N)], subjects=[f"s{i % 3}" for i in range(N)],
                         task="classification", class_names=["a", "b"],
                         modality_kinds={"eda": "features", "ecg": "features"})
    _, directory = _save(tmp_path / "student", read_info(data), _config(prevalent=("eda",), privileged=("ecg",)))
    pd.DataFrame({"eda.a": [1.0, 2.0], "eda.b": [0.0, 1.0]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.warns(InputWarning, match="records no feature column names .* table order"):
        predict_file(directory, tmp_path / "t.csv", tmp_path / "p.csv")


# ------------------------------------------------------------------------------- (b) student.json is untrusted


def _edit(directory, change):
    path = directory / STUDENT_FILE
    card = json.loads(path.read_text())
    change(card)
    path.write_text(json.dumps(card))


def _other_weights(tmp_path, directory):
    """Copy the weights of another student of the same architecture (other seed) into ``directory``."""
    info = read_info(tmp_path / "train.h5")
    _, other = _save(tmp_path / "other", info, seed=7)
    shutil.copy(other / WEIGHTS_FILE, directory / WEIGHTS_FILE)


@pytest.mark.parametrize("weights", ["weights.pt", None, {"file": "weights.pt"}, {"file": "weights.pt", "sha256": None},
                                     {"file": "weights.pt", "sha256": 0}, {"file": "other.pt", "sha256": "0" * 64},
                                     ["weights.pt"]])
def test_the_checksum_cannot_be_skipped_by_reshaping_the_weights_record(tmp_path, signal_student, weights):
    _, directory = signal_student
    _other_weights(tmp_path, directory)

    def change(card):
        card["weights"] = weights

    _edit(directory, change)
    with pytest.raises(PrivkdError) as err:
        load_student(directory)
    message = _one_line_error(err)
    assert "'weights" in message and str(directory / STUDENT_FILE) in message


def test_a_recorded_checksum_still_refuses_other_weights(tmp_path, signal_student):
    _, directory = signal_student
    _other_weights(tmp_path, directory)
    with pytest.raises(PrivkdError, match="comes from another model .*checksum"):
        load_student(directory)


@pytest.fixture()
def no_real_build(monkeypatch):
    """Fail the test if a network is built anywhere but on the meta device (no memory)."""
    real = student_module.build_net
    devices = []

    def spy(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        if devices[-1] != "meta":
            raise AssertionError("a network was allocated before student.json and weights.pt were checked")
        return real(*args, **kwargs)

    monkeypatch.setattr(student_module, "build_net", spy)
    return devices


@pytest.mark.parametrize(("key", "value"), [("embed_dim", 4_000_000), ("fusion_dim", 10**9), ("tnet_hidden", 0),
                                            ("tokens", 100_000), ("attention_heads", -1), ("embed_dim", "8")])
def test_sizes_out_of_bounds_are_refused_before_anything_is_built(signal_student, no_real_build, key, value):
    _, directory = signal_student
    _edit(directory, lambda card: card["config"]["model"].__setitem__(key, value))
    with pytest.raises(PrivkdError, match=f"config.model.{key}") as err:
        load_student(directory)
    _one_line_error(err)
    assert no_real_build == []


def test_a_network_larger_than_its_weights_file_is_refused_before_it_is_allocated(signal_student, no_real_build):
    _, directory = signal_student

    def change(card):
        card["config"]["model"].update(embed_dim=4096, fusion_dim=4096)  # within bounds, ~100 MB of tensors
        del card["weights"]["parameters"]  # (optional; else the parameter count differs first)

    _edit(directory, change)
    with pytest.raises(PrivkdError, match=r"comes from another model \(the network described in student.json takes "
                                          r"\d+ bytes, more than the \d+ bytes of this file") as err:
        load_student(directory)
    _one_line_error(err)
    assert no_real_build == ["meta"]


def _deep(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(("text", "expected"), [
    ('{"format": "privkd-student", "x": ' + _deep(200_000) + "}", "nested more than"),
    ('{"format": "privkd-student", "x": ' + _deep(40) + "}", "nested more than"),
    ('{"format": "privkd-student", "format": "privkd-student"}', "appears twice"),
    ('{"format": "privkd-student", "format_version": NaN}', "NaN is not JSON"),
    ("[]", "not a privkd student description"),
    ('"privkd-student"', "not a privkd student description"),
    (b"\xff\xfe{}", "unreadable student description"),
], ids=["deep", "nested", "twice", "nan", "list", "string", "not-utf8"])
def test_malformed_json_is_one_error_line(signal_student, text, expected):
    _, directory = signal_student
    path = directory / STUDENT_FILE
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(PrivkdError, match=expected) as err:
        load_student(directory)
    _one_line_error(err)


def test_a_student_json_beyond_the_size_limit_is_not_read(signal_student, monkeypatch):
    from privkd.deploy import schema

    monkeypatch.setattr(schema, "MAX_JSON_BYTES", 1000)
    with pytest.raises(PrivkdError, match="larger than"):
        load_student(signal_student[1])


def _set(path, value):
    def change(card):
        *parents, last = path
        target = card
        for key in parents:
            target = target[key]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return change


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "field"), [
    (("inputs",), [], "inputs"),
    (("inputs",), {}, "inputs"),
    (("inputs",), "accelerometer", "inputs"),
    (("inputs", "accelerometer"), [3, 20], "inputs.accelerometer"),
    (("inputs", "accelerometer", "kind"), "audio", "inputs.accelerometer.kind"),
    (("inputs", "accelerometer", "sample_shape"), [3, -20], "inputs.accelerometer.sample_shape[1]"),
    (("inputs", "accelerometer", "sample_shape"), [3, 2.5], "inputs.accelerometer.sample_shape[1]"),
    (("inputs", "accelerometer", "sample_shape"), [1 << 20, 1 << 20], "inputs.accelerometer.sample_shape"),
    (("inputs", "accelerometer", "sample_shape"), [[3], 20], "inputs.accelerometer.sample_shape[0]"),
    (("inputs", "accelerometer", "sampling_rate"), "50", "inputs.accelerometer.sampling_rate"),
    (("inputs", "accelerometer", "sampling_rate"), None, "inputs.accelerometer.sampling_rate"),
    (("inputs", "accelerometer", "channel_names"), ["x", "y"], "inputs.accelerometer.channel_names"),
    (("inputs", "accelerometer", "channel_names"), ["x", "x", "z"], "inputs.accelerometer.channel_names"),
    (("inputs", "accelerometer", "extra"), 1, "inputs.accelerometer"),
    (("inputs", "gyroscope"), {"kind": "signal", "sample_shape": [3, 20], "sampling_rate": 50.0}, "privileged"),
    (("class_names",), "ab", "class_names"),
    (("class_names",), [], "class_names"),
    (("class_names",), [1, 2], "class_names[0]"),
    (("class_names",), ["a"] * 200_000, "class_names"),
    (("task",), "ranking", "task"),
    (("row",), ["pkdot"], "row"),
    (("format_version",), "1", None),
    (("format_version",), True, None),
    (("role",), "teacher", None),
    (("config",), [], "config"),
    (("config", "model", "fusion"), "mixer", "config.model.fusion"),
    (("config", "model", "embed_dim"), _DELETE, None),  # a default is fine: the weights then do not fit
    (("config", "data", "prevalent"), ["gyroscope"], "config.data.prevalent"),
    (("training",), "train.h5", "training"),
    (("training", "fold"), "0", "training.fold"),
    (("test_metrics",), {"accuracy": "high"}, "test_metrics.accuracy"),
    (("weights", "parameters"), 3, "weights.parameters"),
    (("surprise",), 1, "<root>"),
    (("inputs", "accelerometer", "sample_shape"), [3, 20, 1, 1, 1], "inputs.accelerometer.sample_shape"),
])
def test_every_field_is_checked_before_the_network_is_built(signal_student, path, value, field):
    _, directory = signal_student
    _edit(directory, _set(path, value))
    with pytest.raises(PrivkdError) as err:
        load_student(directory)
    message = _one_line_error(err)
    if field is not None:
        assert f"field '{field}'" in message
    assert err.value.fix


def test_cli_reports_a_damaged_student_json_in_one_line(tmp_path, signal_student):
    _, directory = signal_student
    _edit(directory, _set(("inputs",), []))
    data = _signal_h5(tmp_path / "new.h5", seed=1)
    result = CliRunner().invoke(app, ["predict", str(directory), str(data), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("error:") == 1 and result.output.startswith("error:")  # (rich wraps at 240 columns)
    assert "field 'inputs'" in result.output


# ------------------------------------------------------------------------------- (c) the model card escapes names


def test_model_card_escapes_class_names_and_dataset_text(tmp_path):
    classes = ["<script>alert(1)</script>", "two\n# Injected heading", "[click](http://evil.example)", "a|b", "__init__"]
    description = "Recorded at home.\n\n## Fake section\n<img src=x onerror=alert(1)>\n| x | y |"
    info = read_info(_signal_h5(tmp_path / "evil.h5", class_names=classes, description=description))
    _, directory = _save(tmp_path / "student", info, method="pkdot", row="pkdot\n---\nlicense: mit")
    text = (directory / CARD_FILE).read_text()
    lines = text.splitlines()

    assert "<script>" not in text and "<img" not in text and not re.search(r"(?<!\\)\]\(", text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not any(line.startswith(("# Injected", "## Fake", "| x | y |", "license: mit")) for line in lines)
    assert "0. &lt;script&gt;alert(1)&lt;/script&gt;" in lines and "1. two # Injected heading" in lines
    assert "2. \\[click\\](http://evil.example)" in lines and "3. a\\|b" in lines and "4. \\_\\_init\\_\\_" in lines
    assert any(line.startswith("- Description: Recorded at home. ## Fake section &lt;img") for line in lines)
    assert "# privkd student: pkdot --- license: mit (cross-validation fold 0)" in lines
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "other" and header["library_name"] == "privkd"
    assert load_student(directory).class_names == classes  # the names themselves are kept as they are


def test_model_card_front_matter_quotes_names_that_yaml_would_read_otherwise(tmp_path):
    info = read_info(_signal_h5(tmp_path / "data 'x'.h5"))
    _, directory = _save(tmp_path / "student", info, method="pkdot]\nlicense: mit")
    text = (directory / CARD_FILE).read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["license"] == "other"
    assert header["tags"] == ["privileged-knowledge-distillation", "pkdot]\nlicense: mit", "classification"]
    assert header["datasets"] == ["data 'x'.h5"]
    assert "- Method: `pkdot] license: mit`" in text
