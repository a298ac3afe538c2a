"""A row's score before its first optimiser step (:mod:`privkd.training.initial`): the right
numbers, a warning for a start that leans on its training set and none for the baseline,
training unchanged by it, the first attempt's scores kept on resume, and the summary showing them."""

from __future__ import annotations

import dataclasses
import json
import warnings

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from configs import fitted_config
from lightning.pytorch.loggers import CSVLogger
from sklearn.metrics import f1_score
from test_bad_input import config_file, small_dataset
from typer.testing import CliRunner

from privkd.cli import app
from privkd.data import write_dataset
from privkd.data.dataset import Batch, MultimodalDataset
from privkd.data.folds import official_split_fold
from privkd.data.loaders import make_loader, modality_batches
from privkd.data.synthetic import synthetic_dataset_path
from privkd.evaluation.summary import summary_markdown, warning_lines
from privkd.methods.base import FoldData, random_state
from privkd.methods.baseline import BaselineModule
from privkd.methods.registry import build_module
from privkd.models.build import build_net
from privkd.models.network import NetOutput
from privkd.training import fit as fit_module
from privkd.training.fit import fit, seed_everything
from privkd.training.initial import (
    InitialFitWarning,
    initial_path,
    initial_scores,
    warn_if_leaning,
)

PATH = "synthetic:relevant_features?d=6&n_train=60&n_val=20&n_test=20&per_subject=4"


@pytest.fixture(scope="module")
def fold_and_config(tmp_path_factory):
    """A tiny known-answer fold (60 training, 20 validation samples) and a small network's config."""
    file = synthetic_dataset_path(PATH, run_seed=0, cache_dir=tmp_path_factory.mktemp("synthetic"))
    dataset = MultimodalDataset(file, modalities=["x", "x_star"])
    cfg = fitted_config({"data": {"path": str(file), "prevalent": ["x"], "privileged": ["x_star"]},
                         "model": {"embed_dim": 4, "fusion_dim": 8, "tnet_hidden": 8, "tnet_bottleneck": 4},
                         "training": {"batch_size": 16, "epochs": 2, "progress_bar": False},
                         "teacher": {"tnet_refit_epochs": 3}, "student": {"tnet_crossfit": 3, "hallucinate": True}})
    split = official_split_fold(dataset.subjects, dataset.splits)
    fold = FoldData(dataset.subset(split.train), dataset.subset(split.val), dataset.subset(split.test), cfg.training)
    return fold, cfg, dataset.info


def baseline(fold: FoldData, cfg, info, seed: int = 0) -> BaselineModule:
    """An untrained baseline with its standardisation fitted on the fold's training samples, as fit() starts it."""
    seed_everything(seed)
    module = build_module("baseline", cfg, info, teacher=None)
    module.net.fit_standardization(lambda name: modality_batches(fold.train, name))
    return module


def everything(dataset) -> Batch:
    """Every sample of ``dataset`` as one batch."""
    return next(iter(torch.utils.data.DataLoader(dataset, batch_size=len(dataset))))


def test_the_initial_scores_are_the_macro_f1_of_the_untrained_networks_predictions(fold_and_config, tmp_path):
    fold, cfg, info = fold_and_config
    module = baseline(fold, cfg, info)
    scores = initial_scores(module, fold.train, fold.val, cfg.training, tmp_path, resuming=False)
    module.net.eval()
    with torch.no_grad():
        expected = {part: f1_score(batch.label.numpy(), module.net(batch.inputs).logits.argmax(1).numpy(), average="macro")
                    for part, batch in (("train", everything(fold.train)), ("val", everything(fold.val)))}
    assert module.selection_metric == "f1"
    assert scores["train"] == pytest.approx(expected["train"], abs=1e-6)
    assert scores["val"] == pytest.approx(expected["val"], abs=1e-6)
    assert scores["gap"] == pytest.approx(expected["train"] - expected["val"], abs=1e-6)
    assert json.loads(initial_path(tmp_path).read_text()) == scores


def test_the_initial_validation_score_is_what_the_epoch_selection_computes(fold_and_config, tmp_path):
    """The same metric, on the same samples, through the module's own validation epoch."""
    fold, cfg, info = fold_and_config
    module = baseline(fold, cfg, info)
    scores = initial_scores(module, fold.train, fold.val, cfg.training, tmp_path, resuming=False)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (logged,) = trainer.validate(module, make_loader(fold.val, cfg.training, train=False), verbose=False)
    assert logged["val/selection"] == pytest.approx(scores["val"], abs=1e-6)


def ccc(p: np.ndarray, t: np.ndarray) -> float:
    """Eq. 8 with population moments."""
    mp, mt = p.mean(), t.mean()
    return float(2 * np.mean((p - mp) * (t - mt)) / (p.var() + t.var() + (mp - mt) ** 2))


def test_a_regression_rows_initial_scores_are_its_ccc_per_recording_group_as_selection_scores_it(tmp_path):
    """CCC of the untrained network, on the validation samples averaged over recording groups
    (``evaluation.group_average``) as the epoch selection does, on the training samples pooled."""
    rng = np.random.default_rng(0)
    n = 48
    file = write_dataset(tmp_path / "reg.h5", modalities={"x": rng.normal(size=(n, 5)).astype(np.float32),
                                                          "z": rng.normal(size=(n, 3)).astype(np.float32)},
                         labels=rng.normal(size=(n, 1)), subjects=[f"s{i // 8}" for i in range(n)], task="regression",
                         target_names=["v"], modality_kinds={"x": "features", "z": "features"},
                         groups=[f"g{i // 4}" for i in range(n)])
    dataset = MultimodalDataset(file, modalities=["x", "z"])
    cfg = fitted_config({"data": {"path": str(file), "prevalent": ["x"], "privileged": ["z"]},
                         "model": {"embed_dim": 4, "fusion_dim": 8}, "training": {"batch_size": 16, "epochs": 2}})
    train, val = dataset.subset(np.arange(32)), dataset.subset(np.arange(32, n))
    module = baseline(FoldData(train, val, val, cfg.training), cfg, dataset.info)
    module.validation_groups = dict(zip(val.rows.tolist(), val.groups.tolist()))
    scores = initial_scores(module, train, val, cfg.training, tmp_path, resuming=False)
    module.net.eval()
    with torch.no_grad():
        (train_out, train_y), (val_out, val_y) = ((module.net(b.inputs).logits[:, 0].numpy(), b.label[:, 0].numpy())
                                                  for b in (everything(train), everything(val)))
    groups = np.asarray(val.groups)
    grouped = np.mean([ccc(val_out[groups == g], val_y[groups == g]) for g in np.unique(groups)])
    assert module.selection_metric == "ccc"
    assert scores["train"] == pytest.approx(ccc(train_out, train_y), abs=1e-6)
    assert scores["val"] == pytest.approx(grouped, abs=1e-6) and abs(grouped - ccc(val_out, val_y)) > 1e-4


class Memoriser(BaselineModule):
    """A constructed leak: on its training samples the network is handed their labels (as a
    frozen T-Net that memorised the training set hands a student their answers)."""

    def training_output(self, batch: Batch) -> NetOutput:
        output = self.net(batch.inputs)
        return dataclasses.replace(output, logits=10.0 * torch.nn.functional.one_hot(batch.label, self.n_outputs).float())


def test_a_start_that_memorised_its_training_samples_warns_and_the_baseline_does_not(fold_and_config, tmp_path):
    fold, cfg, info = fold_and_config
    plain = baseline(fold, cfg, info)
    leaking = Memoriser(plain.net, task="classification", n_outputs=info.n_outputs, lr=1e-3, weight_decay=0.0)
    leaked = initial_scores(leaking, fold.train, fold.val, cfg.training, tmp_path / "leak", resuming=False)
    honest = initial_scores(plain, fold.train, fold.val, cfg.training, tmp_path / "plain", resuming=False)
    assert leaked["train"] == 1.0 and leaked["val"] == honest["val"] < 0.9
    with pytest.warns(InitialFitWarning) as caught:
        warn_if_leaning("pkdot", "fold_2", leaked, "classification", "f1")
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"pkdot, fold_2: before its first training step it scores 1.0000 Macro-F1 on its training "
                              f"samples and {leaked['val']:.4f} on its validation samples")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InitialFitWarning)
        warn_if_leaning("baseline", "fold_2", honest, "classification", "f1")
        warn_if_leaning("pkdot", "fold_2", leaked, "regression", "ccc")  # CCC: reported, no 10-point rule


def test_the_diagnostic_leaves_the_random_state_and_every_trained_weight_as_they_were(fold_and_config, tmp_path,
                                                                                       monkeypatch):
    """A student with dropout and cross-fitted T-Nets, trained twice from the same seed: with
    the diagnostic and with it replaced by constants. Bitwise the same weights."""
    fold, cfg, info = fold_and_config

    def trained(out_dir) -> dict[str, torch.Tensor]:
        seed_everything(3)
        teacher = build_net("teacher", cfg, info).eval()
        student = build_module("p2p_kl", cfg, info, teacher=teacher)
        student.prepare_fold(fold)
        return {k: v.clone() for k, v in fit(student, fold.train, fold.val, cfg.training, out_dir, 3).module.state_dict().items()}

    with_diagnostic = trained(tmp_path / "with")
    module = baseline(fold, cfg, info)
    before = random_state()
    initial_scores(module, fold.train, fold.val, cfg.training, tmp_path / "rng", resuming=False)
    after = random_state()
    assert before["python"] == after["python"] and before["numpy"] == after["numpy"]
    assert torch.equal(before["torch"], after["torch"]) and module.training

    monkeypatch.setattr(fit_module, "initial_scores", lambda *args: {"train": 0.0, "val": 0.0, "gap": 0.0})
    without = trained(tmp_path / "without")
    assert with_diagnostic.keys() == without.keys()
    for key, value in with_diagnostic.items():
        assert torch.equal(value, without[key]), key


def test_a_resumed_training_keeps_the_first_attempts_scores_and_trackers_get_them(fold_and_config, tmp_path):
    fold, cfg, info = fold_and_config
    first = {"train": 0.75, "val": 0.5, "gap": 0.25}
    initial_path(tmp_path).parent.mkdir(parents=True)
    initial_path(tmp_path).write_text(json.dumps(first))
    module = baseline(fold, cfg, info)
    assert initial_scores(module, fold.train, fold.val, cfg.training, tmp_path, resuming=True) == first
    assert initial_scores(module, fold.train, fold.val, cfg.training, tmp_path, resuming=False) != first  # a fresh start
    tracker = CSVLogger(tmp_path / "tracker", name="", version="")
    fitted = fit(module, fold.train, fold.val, cfg.training, tmp_path, 0, loggers=[tracker])
    assert fitted.initial != first
    assert not initial_path(tmp_path).exists()  # the row's record keeps them once training is over
    logged = pd.read_csv(tmp_path / "tracker" / "metrics.csv")
    (start,) = logged.dropna(subset=["initial/train"]).to_dict("records")
    assert start["step"] == 0 and (start["initial/train"], start["initial/val"]) == pytest.approx(
        (fitted.initial["train"], fitted.initial["val"]))


def test_the_summary_shows_every_rows_initial_scores_and_warns_for_classification_only():
    summary = {"task": "classification", "metric": "f1", "methods": {},
               "initial_fit": {"baseline": {"train": 0.34, "val": 0.33, "gap": 0.01},
                               "pkdot": {"train": 0.93, "val": 0.78, "gap": 0.15}}}
    text = summary_markdown(summary, "t")
    assert "Before the first training step (Macro-F1, mean over folds" in text
    assert "- baseline: 0.3400 training, 0.3300 validation" in text and "- pkdot: 0.9300 training, 0.7800 validation" in text
    (line,) = warning_lines(summary)
    assert line.startswith("pkdot scored 0.9300 on its training samples")
    assert warning_lines({**summary, "task": "regression", "metric": "ccc"}) == []


def leaking_gyro(arrays: dict[str, np.ndarray], labels: np.ndarray, subjects: list[str]) -> None:
    """The privileged modality carries the label; the prevalent one is noise a T-Net can only memorise."""
    arrays["gyro"][:] = (labels[:, None, None] * 2.0 - 1.0) * 3.0 + 0.1 * arrays["gyro"]


def test_a_run_warns_once_for_the_student_that_leans_on_a_memorising_tnet(tmp_path):
    """The issue's case: a student fusing a T-Net refitted on its own training samples, started
    from the teacher's head, scores far higher on them than on its validation samples at step 0."""
    config = config_file(tmp_path, small_dataset(tmp_path / "data.h5", mutate=leaking_gyro), methods=["baseline", "p2p_kl"],
                         training={"epochs": 3, "batch_size": 8}, teacher={"tnet_refit_epochs": 30},
                         student={"hallucinate": True, "init_from_teacher": True})
    with pytest.warns(InitialFitWarning) as caught:
        result = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = {row: json.loads((run_dir / "fold_0" / row / "metrics.json").read_text())["initial"]
               for row in ("baseline", "teacher", "p2p_kl")}
    student = records["p2p_kl"]
    assert student["train"] - student["val"] > 0.10 and abs(records["baseline"]["gap"]) <= 0.10
    (message,) = [str(w.message) for w in caught if issubclass(w.category, InitialFitWarning)]
    assert message.startswith(f"p2p_kl, fold_0: before its first training step it scores {student['train']:.4f} Macro-F1")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["initial_fit"]["p2p_kl"] == pytest.approx(student)
    assert f"- p2p_kl: {student['train']:.4f} training, {student['val']:.4f} validation" in (run_dir / "summary.md").read_text()
    assert not list(run_dir.rglob("initial.json"))
