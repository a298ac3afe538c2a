"""The Python API: ``privkd.run``, ``Run``, ``load_student(...).predict_proba`` and ``privkd.losses``."""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import privkd
from privkd.config.loading import config_from_dict
from privkd.config.schema import AMIDConfig, PointToPointConfig, StructuralConfig
from privkd.data import read_info, write_dataset
from privkd.deploy import load_student, predict_arrays, save_student
from privkd.errors import ConfigError, PrivkdError
from privkd.models.build import build_net

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {"name": "tiny", "methods": ["baseline"], "evaluation": {"max_folds": 1, "n_val_subjects": 1},
        "training": {"epochs": 2, "limit_train_batches": 2, "batch_size": 64, "progress_bar": False}}


def python_api_example() -> str:
    """The first Python code block of the README's "Python API" section."""
    section = README.read_text().split("### Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the Python API section has no python code block"
    return blocks[0]


def test_the_readme_python_api_example_runs(tmp_path, monkeypatch, watch_path, capsys):
    """The example as written, run in a fresh directory (its ``runs/`` lands there)."""
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_api_example(), str(README), "exec"), namespace)  # noqa: S102 - the README's own example
    run, probabilities = namespace["run"], namespace["probabilities"]
    assert run.dir.parent == tmp_path / "runs" and (run.dir / "summary.json").is_file()
    assert list(run.summary["methods"]) == ["baseline", "teacher", "pkdot"] and not run.failures
    assert probabilities.shape == (4, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    printed = capsys.readouterr().out
    assert "(4, 7) [1. 1. 1. 1.]" in printed and f"{run.metrics('pkdot')['f1']}" in printed


def test_import_privkd_loads_no_training_stack():
    code = "import sys, privkd; print(sorted(m for m in ('torch', 'lightning', 'numpy', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert privkd.Run is privkd.api.Run and privkd.__version__ == "0.1.0"


def test_run_takes_a_dict_and_returns_its_results(tmp_path, monkeypatch, watch_path):
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    lines: list[str] = []
    run = privkd.run(TINY, tmp_path, overrides=["training.lr=2e-3"], progress=lines.append)
    assert run.config.training.lr == 2e-3 and run.config.methods == ("baseline",)
    assert run.summary == json.loads((run.dir / "summary.json").read_text())
    f1 = run.summary["methods"]["baseline"]["f1"]["mean"]
    assert run.metrics("baseline")["f1"] == f1 and 0 < f1 <= 1
    assert run.table().loc["baseline", "accuracy"] == run.summary["methods"]["baseline"]["accuracy"]["mean"]
    assert "fold 1/1: baseline" in lines
    with pytest.raises(KeyError, match="pkdot"):
        run.metrics("pkdot")

    # a RunConfig (as returned) takes overrides too, checked as any config is
    with pytest.raises(ConfigError, match="training.grad_clip"):
        privkd.run(run.config, tmp_path, overrides=["training.grad_clip=nan"])
    assert sorted(tmp_path.iterdir()) == [run.dir]


def test_run_refuses_a_bad_config_before_writing_anything(tmp_path):
    with pytest.raises(ConfigError, match="training.epocs"):
        privkd.run({"training": {"epocs": 3}}, tmp_path / "runs")
    with pytest.raises(ConfigError, match="training.grad_clip"):
        privkd.run("demo", tmp_path / "runs", overrides=["training.grad_clip=-1"])
    with pytest.raises(PrivkdError, match="resume"):
        privkd.run("demo", tmp_path / "runs", resume=tmp_path)
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------------ predict_proba


@pytest.fixture
def classification_student(tmp_path, watch_path):
    """A saved (untrained) student of the embedded data and 12 real accelerometer windows."""
    import h5py

    info = read_info(watch_path)
    cfg = config_from_dict({"methods": ["pkdot"], "model": {"embed_dim": 16, "fusion_dim": 24}})
    torch.manual_seed(0)
    net = build_net("student", cfg, info).eval()
    directory = save_student(tmp_path / "student", net, cfg, info, row="pkdot", method="pkdot", role="student", fold=0,
                             test_metrics={"accuracy": 0.5}, train_subjects=["a"])
    with h5py.File(watch_path, "r") as h5:
        windows = np.asarray(h5["modalities"]["accelerometer"][:12], dtype=np.float32)
    return load_student(directory), windows


def test_predict_proba_is_the_softmax_of_the_students_outputs(classification_student):
    student, windows = classification_student
    probabilities = student.predict_proba({"accelerometer": windows, "gyroscope": np.zeros(1)}, batch_size=5)
    assert probabilities.shape == (12, len(student.output_names)) == (12, 7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-12)
    logits = torch.from_numpy(predict_arrays(student, {"accelerometer": windows})).double()
    np.testing.assert_allclose(probabilities, torch.softmax(logits, dim=-1).numpy(), atol=1e-6)


def test_predict_proba_refuses_missing_or_misshaped_inputs(classification_student):
    student, windows = classification_student
    with pytest.raises(PrivkdError, match="no input 'accelerometer'"):
        student.predict_proba({"gyroscope": windows})
    with pytest.raises(PrivkdError, match=r"shaped \(3, 50\), this student expects \(3, 100\)"):
        student.predict_proba({"accelerometer": windows[..., :50]})


def test_predict_proba_refuses_a_regression_student(tmp_path):
    rng = np.random.default_rng(0)
    dataset = write_dataset(tmp_path / "reg.h5", modalities={"eda": rng.normal(size=(20, 4)), "ecg": rng.normal(size=(20, 2))},
                            labels=rng.normal(size=(20, 2)), subjects=[f"s{i % 5}" for i in range(20)], task="regression",
                            target_names=["valence", "arousal"], modality_kinds={"eda": "features", "ecg": "features"})
    info = read_info(dataset)
    cfg = config_from_dict({"methods": ["pkdot"], "data": {"prevalent": ["eda"], "privileged": ["ecg"]}})
    directory = save_student(tmp_path / "student", build_net("student", cfg, info), cfg, info, row="pkdot",
                             method="pkdot", role="student", fold=0, test_metrics={}, train_subjects=["s0"])
    with pytest.raises(PrivkdError, match="regression student predicts values, not class probabilities"):
        load_student(directory).predict_proba({"eda": rng.normal(size=(3, 4))})


# ------------------------------------------------------------------------------------ losses


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_the_exported_losses_default_to_the_config():
    from privkd import losses
    from privkd.training.auto import PAPER_ANCHORS, PAPER_BATCH, resolve_training

    structural = StructuralConfig()
    loss = losses.StructuralOTLoss()
    assert (loss.mode, loss.epsilon, loss.options.epsilon) == (structural.ot_mode, structural.epsilon, structural.epsilon)
    # the config's k is "auto": the papers' 30 anchors at batch 128, which is the class's default
    assert structural.k == "auto" and loss.k == PAPER_ANCHORS == 30
    sized, _ = resolve_training(config_from_dict({"methods": ["pkdot"], "training": {"batch_size": PAPER_BATCH}}), 3600)
    assert sized.structural.k == loss.k
    amid = AMIDConfig()
    assert _default(losses.label_aware_contrastive_mi, "tau") == _default(losses.info_nce, "tau") == amid.tau
    assert _default(losses.label_aware_contrastive_mi, "reduction") == amid.mi_reduction
    assert _default(losses.softened_kl, "temperature") == PointToPointConfig().temperature
    for name in ("sinkhorn_divergence", "task_loss", "concordance_cc", "cosine_matching", "mse_matching",
                 "centroid_loss", "jensen_shannon", "amid_adversarial_loss", "amid_discriminator_loss"):
        assert callable(getattr(losses, name)), name
    # the default reduction is the config's mean, not Eq. 8's sum: they differ on a real batch
    generator = torch.Generator().manual_seed(0)
    a, b, labels = torch.randn(8, 4, generator=generator), torch.randn(8, 4, generator=generator), torch.arange(8) % 3
    mean = losses.label_aware_contrastive_mi(a, b, labels)
    assert mean == losses.label_aware_contrastive_mi(a, b, labels, 0.6, reduction="mean")
    assert mean < losses.label_aware_contrastive_mi(a, b, labels, 0.6, reduction="sum")
