"""A user's own table runs sensibly from the data path and the two modality lists alone.

The case: scikit-learn's breast-cancer table, one row per person (569 people, 212 malignant /
357 benign), the ten "mean" features as the prevalent modality and the ten "worst" features
as the privileged one, imported with ``privkd data import table``.
"""

import json

import numpy as np
import pytest
import torch
import yaml
from layouts import breast_cancer_table
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import config_from_dict
from privkd.data import read_info
from privkd.data.dataset import MultimodalDataset
from privkd.data.folds import Fold
from privkd.evaluation.metrics import score
from privkd.evaluation.sanity import collapse
from privkd.losses.task import balanced_class_weights, task_loss
from privkd.training.auto import (
    resolve_rows,
    resolve_training,
    resolve_validation_subjects,
)


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory):
    root = tmp_path_factory.mktemp("bc")
    data = load_breast_cancer(as_frame=True).frame
    table = breast_cancer_table(data)
    table.to_csv(root / "bc.csv", index=False)
    result = CliRunner().invoke(app, ["data", "import", "table", str(root / "bc.csv"), str(root / "bc.h5"), "--no-progress"])
    assert result.exit_code == 0, result.output
    return root / "bc.h5"


def own_config(path, **sections):
    return {"name": "own", "data": {"path": str(path), "prevalent": ["mean"], "privileged": ["worst"]}, **sections}


def test_defaults_fit_a_one_row_per_person_table(breast_cancer):
    info = read_info(breast_cancer)
    cfg = config_from_dict(own_config(breast_cancer))
    cfg, rows = resolve_rows(cfg, info)
    assert cfg.methods[-2:] == ("linear", "linear_teacher") and rows[0].line().startswith("methods + linear, linear_teacher")
    cfg, resolved = resolve_validation_subjects(cfg, np.asarray(info.subjects))  # one row per person
    # 569 subjects, 5 folds: 455 left after the largest test fold; a fifth of them validate
    assert cfg.evaluation.n_val_subjects == 91 and resolved[0].line().startswith("evaluation.n_val_subjects auto -> 91")
    fold = Fold(0, np.arange(364), np.arange(364, 455), np.arange(455, 569), (), (), ())
    cfg, resolved = resolve_training(cfg, [fold])
    assert (cfg.training.batch_size, cfg.training.epochs, cfg.training.patience, cfg.structural.k) == (32, 69, 18, 8)
    assert [r.key for r in resolved] == ["training.batch_size", "training.epochs", "training.patience", "structural.k"]


def test_explicit_values_win_and_the_embedded_data_keeps_its_settings(watch_path):
    info = read_info(watch_path)
    explicit = config_from_dict({"evaluation": {"n_val_subjects": 1}, "training": {"batch_size": 64, "epochs": 3}})
    assert resolve_validation_subjects(explicit, np.asarray(info.subjects)) == (explicit, [])
    cfg, resolved = resolve_training(explicit, [Fold(0, np.arange(3000), np.arange(10), np.arange(10), (), (), ())])
    assert (cfg.training.batch_size, cfg.training.epochs) == (64, 3) and [r.key for r in resolved] == ["training.patience",
                                                                                                       "structural.k"]
    auto = config_from_dict({})
    cfg, _ = resolve_training(auto, [Fold(0, np.arange(3300), np.arange(10), np.arange(10), (), (), ())])
    assert (cfg.training.batch_size, cfg.training.epochs, cfg.training.patience, cfg.structural.k) == (128, 30, 8, 30)
    assert resolve_rows(auto, info)[0].methods == auto.methods  # signals: no linear reference


def test_auto_validation_counts_the_samples_of_each_subject(watch_path):
    """The embedded data has hundreds of windows per subject: 30 validation samples need one
    subject, and a fifth of the 8 non-test subjects is 2. Counting the unique subject ids (one
    each) asked for 30 subjects and left fold 0 a single training subject."""
    dataset = MultimodalDataset(watch_path, modalities=["accelerometer"])
    _, counts = np.unique(dataset.subjects, return_counts=True)
    cfg, resolved = resolve_validation_subjects(config_from_dict({}), dataset.subjects)
    assert cfg.evaluation.n_val_subjects == 2
    assert f"a median of {np.median(counts):g} per subject need 1" in resolved[0].why


def test_auto_validation_under_official_splits_counts_the_train_split_only():
    """50 train-split subjects with 5 samples each and 1000 test subjects with 10: a fifth of the
    50 validate (10); the test split's subjects are not candidates and do not set the median."""
    subjects = np.array([f"tr{i // 5}" for i in range(250)] + [f"te{i // 10}" for i in range(10_000)])
    splits = np.array(["train"] * 250 + ["test"] * 10_000)
    cfg = config_from_dict({"evaluation": {"protocol": "splits"}})
    cfg, resolved = resolve_validation_subjects(cfg, subjects, splits)
    assert cfg.evaluation.n_val_subjects == 10
    assert resolved[0].why.startswith("0.2 of the 50 subjects in the train split is 10; 30 validation samples at a "
                                      "median of 5 per subject need 6")
    official = np.where(np.arange(len(splits)) < 200, splits, np.where(np.arange(len(splits)) < 250, "validation", splits))
    cfg, resolved = resolve_validation_subjects(config_from_dict({"evaluation": {"protocol": "splits"}}), subjects, official)
    assert cfg.evaluation.n_val_subjects == 10 and "own validation split" in resolved[0].why  # tr40..tr49 select


def test_balanced_class_weights_by_hand():
    labels = torch.tensor([0, 0, 0, 1])
    weights = balanced_class_weights(labels, 2)
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 4 / 2]))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])
    per_sample = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    expected = (weights[labels] * per_sample).sum() / weights[labels].sum()
    torch.testing.assert_close(task_loss("classification", logits, labels, weights), expected)


def test_binary_tasks_report_auroc_and_average_precision():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    logits = np.stack([np.zeros(200), labels * 1.5 + rng.normal(size=200)], axis=1)
    positive = 1 / (1 + np.exp(-logits[:, 1]))
    metrics = score("classification", torch.tensor(logits), torch.tensor(labels), n_outputs=2)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, positive), abs=1e-6)
    assert metrics["ap"] == pytest.approx(average_precision_score(labels, positive), abs=1e-6)
    assert "auroc" not in score("classification", torch.randn(10, 3), torch.arange(10) % 3, n_outputs=3)


def test_a_collapsed_model_is_recognised():
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0, 0, 1])
    majority = torch.tensor([[3.0, 0.0]] * 10)
    assert "predicts class 0 for 100%" in collapse("classification", majority, labels)
    assert collapse("classification", torch.nn.functional.one_hot(labels, 2).float(), labels) is None
    targets = torch.linspace(0, 1, 10)[:, None]
    assert "constant" in collapse("regression", torch.full((10, 1), 0.3), targets)
    assert collapse("regression", targets * 2, targets) is None


def test_the_linear_row_is_scikit_learns_model(breast_cancer, tmp_path):
    """Its test predictions are the probabilities of a LogisticRegression at the chosen C, fitted on
    the standardised prevalent features of the training subjects."""
    cfg = own_config(breast_cancer, methods=["linear"], evaluation={"max_folds": 1})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = json.loads((run_dir / "fold_0" / "linear" / "metrics.json").read_text())
    folds = json.loads((run_dir / "folds.json").read_text())[0]
    info = read_info(breast_cancer)
    from privkd.data import MultimodalDataset

    data = MultimodalDataset(breast_cancer, ["mean"], in_memory=True)
    x, y = np.stack([data[i].inputs["mean"].double().numpy() for i in range(len(data))]), data.labels
    train = np.isin(data.subjects, folds["train"])
    mean, std = x[train].mean(0), x[train].std(0, ddof=1)
    model = LogisticRegression(C=record["validation"]["regularisation_c"], max_iter=5000).fit((x[train] - mean) / std, y[train])
    saved = np.load(run_dir / "fold_0" / "linear" / "test_predictions.npz")
    probabilities = torch.softmax(torch.as_tensor(saved["outputs"]).double(), dim=1).numpy()
    expected = model.predict_proba((x[saved["indices"]] - mean) / std)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert info.class_names[1] == "malignant" and 0.9 < record["test"]["auroc"] <= 1


def test_a_starved_run_is_flagged_as_degenerate(breast_cancer, tmp_path):
    cfg = own_config(breast_cancer, methods=["baseline"], evaluation={"max_folds": 1, "linear_reference": False},
                     training={"epochs": 1, "limit_train_batches": 1, "batch_size": 128, "lr": 1.0, "progress_bar": False})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.output and "baseline is degenerate" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    flagged = summary["degenerate"]["baseline"][0]
    assert flagged["fold"] == 0 and "predicts class malignant" in flagged["test"]
    assert flagged["hint"].startswith("1 optimiser steps (1 per epoch x 1 epochs)")
    assert "degenerate" in (run_dir / "summary.md").read_text()


def run_own(breast_cancer, tmp_path, **sections):
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(own_config(breast_cancer, **sections)))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "own.yaml"), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    return result, json.loads((run_dir / "summary.json").read_text())


def check_sane(result, summary):
    assert "auroc" in summary["methods"]["baseline"] and "ap" in summary["methods"]["baseline"]
    assert not summary["degenerate"] and "warning:" not in result.output  # no row collapsed
    baseline, linear = (summary["methods"][row]["auroc"]["mean"] for row in ("baseline", "linear"))
    assert abs(baseline - linear) < 0.02, (baseline, linear)  # the network is as good as the linear reference


def test_the_baseline_on_a_users_table_is_sane(breast_cancer, tmp_path):
    """Only the data, the modalities and the baseline: the defaults fit the table (2 of the 5 folds)."""
    result, summary = run_own(breast_cancer, tmp_path, methods=["baseline"], evaluation={"max_folds": 2},
                              training={"progress_bar": False})
    assert list(summary["methods"]) == ["baseline", "linear", "linear_teacher"]
    check_sane(result, summary)


@pytest.mark.slow
def test_every_row_on_a_users_table_is_sane(breast_cancer, tmp_path):
    """The config names only the data and the modalities: every method of the three papers trains."""
    result, summary = run_own(breast_cancer, tmp_path)
    check_sane(result, summary)
