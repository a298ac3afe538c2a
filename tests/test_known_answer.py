"""The known-answer datasets (Lopez-Paz et al., ICLR 2016, Sec. 4.1) and the rows measured on them:
the generators follow the paper's equations, and the linear generalized-distillation reference
fits the soft-target objective it claims to."""

import json

import numpy as np
import pytest
import yaml
from scipy.optimize import minimize
from scipy.special import ndtr
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from privkd.cli import app
from privkd.data import read_info
from privkd.data.dataset import MultimodalDataset
from privkd.data.synthetic import (
    SyntheticSpec,
    parse_synthetic,
    synthetic_arrays,
    synthetic_dataset_path,
)
from privkd.errors import ConfigError
from privkd.evaluation.summary import warning_lines
from privkd.methods.linear import LinearNet, LinearReferenceModule


def test_relevant_features_are_three_columns_of_x_and_decide_the_label():
    x, x_star, y = synthetic_arrays(SyntheticSpec("relevant_features", d=20, n_train=50, n_val=10, n_test=100), seed=3)
    columns = [int(np.flatnonzero((x == x_star[:, [j]]).all(axis=0))[0]) for j in range(3)]
    assert len(set(columns)) == 3 and x_star.shape == (160, 3)
    # y is a linear threshold of x*: a separating hyperplane exists (a nearly unregularised fit is exact)
    separating = LogisticRegression(C=1e6, max_iter=10_000).fit(x_star, y)
    assert separating.score(x_star, y) == 1.0


def test_clean_labels_are_a_noisy_threshold_of_a_linear_score():
    x, x_star, y = synthetic_arrays(SyntheticSpec("clean_labels", d=10, n_train=2000, n_val=10, n_test=10), seed=0)
    _, residual, *_ = np.linalg.lstsq(x.astype(np.float64), x_star[:, 0].astype(np.float64), rcond=None)
    assert residual[0] < 1e-6  # x* = <a, x> exactly
    # y = 1[x* + e > 0] with e ~ N(0, 1): y agrees with the sign of x* with probability Phi(|x*|)
    agreement = np.mean(y == (x_star[:, 0] > 0))
    assert agreement == pytest.approx(np.mean(ndtr(np.abs(x_star[:, 0]))), abs=0.03)


def test_clean_features_are_the_privileged_ones_plus_unit_noise():
    x, x_star, y = synthetic_arrays(SyntheticSpec("clean_features", d=8, n_train=4000, n_val=10, n_test=10), seed=1)
    noise = x - x_star
    assert noise.mean() == pytest.approx(0, abs=0.02) and noise.std() == pytest.approx(1, abs=0.02)
    assert LogisticRegression(C=1e6, max_iter=10_000).fit(x_star, y).score(x_star, y) > 0.999  # separable but for float rounding


def test_the_training_samples_do_not_depend_on_the_test_size():
    small = synthetic_arrays(SyntheticSpec("relevant_features", d=8, n_train=20, n_val=5, n_test=10), seed=2)
    large = synthetic_arrays(SyntheticSpec("relevant_features", d=8, n_train=20, n_val=5, n_test=500), seed=2)
    for part_small, part_large in zip(small, large):
        np.testing.assert_array_equal(part_small[:25], part_large[:25])


def test_a_synthetic_path_builds_one_cached_file_per_setting(tmp_path):
    path = "synthetic:clean_labels?d=5&n_train=20&n_val=10&n_test=30&per_subject=5"
    first = synthetic_dataset_path(path, run_seed=7, cache_dir=tmp_path)
    assert synthetic_dataset_path(path, run_seed=7, cache_dir=tmp_path) == first
    assert synthetic_dataset_path(path + "&seed=8", run_seed=7, cache_dir=tmp_path) != first
    info = read_info(first)
    assert info.task == "classification" and info.modalities["x"].sample_shape == (5,)
    dataset = MultimodalDataset(first, modalities=["x", "x_star"])
    assert dataset.splits.tolist() == ["train"] * 20 + ["validation"] * 10 + ["test"] * 30
    _, per_subject = np.unique(dataset.subjects, return_counts=True)
    assert set(per_subject.tolist()) == {5} and len(per_subject) == 12
    _, _, y = synthetic_arrays(parse_synthetic(path), seed=7)
    np.testing.assert_array_equal(dataset.labels, y)


@pytest.mark.parametrize(("path", "problem"), [
    ("synthetic:noisy", "unknown synthetic setup"),
    ("synthetic:clean_labels?dim=3", "unknown synthetic setting 'dim'"),
    ("synthetic:clean_labels?d=three", "is not a whole number"),
    ("synthetic:clean_labels?n_val=0", "must be at least 1"),
])
def test_a_wrong_synthetic_path_names_the_key_and_the_fix(path, problem):
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_synthetic(path)
    assert caught.value.key == "data.path"


def soft_logistic_coefficients(x, soft, c):
    """The minimiser of C * sum_i CE(soft_i, sigmoid(w.x_i + b)) + |w|^2 / 2 by scipy (binary)."""
    def objective(theta):
        z = x @ theta[:-1] + theta[-1]
        loss = soft * np.logaddexp(0, -z) + (1 - soft) * np.logaddexp(0, z)
        return c * loss.sum() + 0.5 * theta[:-1] @ theta[:-1]

    return minimize(objective, np.zeros(x.shape[1] + 1), method="BFGS", options={"gtol": 1e-9}).x


def test_linear_gd_fits_the_soft_target_cross_entropy():
    """A student of soft targets (each sample once per class, weighted by its probability) is the
    minimiser of the soft-target logistic objective, found here independently by scipy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 3))
    soft = 1 / (1 + np.exp(-(x @ [1.0, -2.0, 0.5] + rng.standard_normal(60))))
    module = LinearReferenceModule(LinearNet(["x"], 3, 2), task="classification", n_outputs=2, lr=1e-3,
                                   weight_decay=0.0)
    model = module._fit(x, np.stack([1 - soft, soft], axis=1), c=0.5)
    expected = soft_logistic_coefficients(x, soft, 0.5)
    np.testing.assert_allclose(model.coef_[0], expected[:-1], atol=1e-3)  # lbfgs stops at its tol 1e-4
    assert model.intercept_[0] == pytest.approx(expected[-1], abs=1e-3)


def test_linear_generalized_distillation_beats_logistic_regression_on_relevant_features(tmp_path, monkeypatch):
    """The known answer, on the linear reference rows: generalized distillation from a teacher on x*
    gains several points over logistic regression on x (about 7 in the paper's setting)."""
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    config = {"name": "ka", "methods": ["linear", "linear_gd"],
              "data": {"path": "synthetic:relevant_features?n_test=2000", "prevalent": ["x"], "privileged": ["x_star"]},
              "evaluation": {"protocol": "splits", "metric": "accuracy"}}
    gains = []
    for seed in (0, 1):
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({**config, "seed": seed}))
        result = CliRunner().invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / f"runs{seed}")])
        assert result.exit_code == 0, result.output
        (run_dir,) = (tmp_path / f"runs{seed}").iterdir()
        methods = json.loads((run_dir / "summary.json").read_text())["methods"]
        gains.append(methods["linear_gd"]["accuracy"]["mean"] - methods["linear"]["accuracy"]["mean"])
        record = json.loads((run_dir / "fold_0" / "linear_gd" / "metrics.json").read_text())["validation"]
        assert record["imitation"] in (0.0, 0.25, 0.5, 0.75, 1.0) and record["teacher_val/accuracy"] > 0.9
    assert np.mean(gains) > 0.03, gains


def test_a_student_that_starts_fitting_its_training_set_is_named():
    summary = {"initial_fit": {"pkdot": {"train": 0.93, "val": 0.78, "gap": 0.15},
                               "p2p_kl": {"train": 0.55, "val": 0.52, "gap": 0.03}}}
    (line,) = warning_lines(summary)
    assert line.startswith("pkdot scored 0.9300 on its training samples and 0.7800 on its validation samples")


def test_the_known_answer_config_loads():
    from privkd.config.loading import load_config

    cfg = load_config("known_answer")
    assert cfg.data.path == "synthetic:relevant_features" and cfg.evaluation.protocol == "splits"
    assert {"linear_gd", "p2p_kl", "pkdot", "mtpkdot"} <= set(cfg.methods)


def known_answer_gains(tmp_path, setup: str, seeds: tuple[int, ...]) -> dict[str, float]:
    """Mean test-accuracy gain over the baseline of the teacher and two students on ``setup``,
    over ``seeds`` (a reduced known-answer study: 4,000 test samples, the default settings)."""
    config = {"name": "ka", "methods": ["baseline", "teacher", "p2p_kl", "pkdot"],
              "data": {"path": f"synthetic:{setup}?n_test=4000", "prevalent": ["x"], "privileged": ["x_star"]},
              "evaluation": {"protocol": "splits", "metric": "accuracy", "linear_reference": False},
              "training": {"progress_bar": False}}
    gains: dict[str, list[float]] = {}
    for seed in seeds:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({**config, "seed": seed}))
        out = tmp_path / f"{setup}{seed}"
        result = CliRunner().invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(out)])
        assert result.exit_code == 0, result.output
        (run_dir,) = out.iterdir()
        methods = json.loads((run_dir / "summary.json").read_text())["methods"]
        for row in ("teacher", "p2p_kl", "pkdot"):
            gains.setdefault(row, []).append(methods[row]["accuracy"]["mean"] - methods["baseline"]["accuracy"]["mean"])
    return {row: float(np.mean(values)) for row, values in gains.items()}


CONTROL_TOLERANCE = 0.02
"""How far Hinton's student may move from the baseline on clean_features over two seeds (the full
study: within 1.5 points over five)."""
PKDOT_CONTROL_FLOOR = -0.05
"""How far PKDOT may fall below the baseline on clean_features over two seeds before it counts as
a collapse: it is within 1.1 points over the study's five seeds, but one of them (seed 0, the
test's first) falls 5.9 points (docs/known-answer-study.md), so the two-seed mean sits near −3."""


@pytest.mark.slow
def test_students_learn_what_the_teacher_knows_and_nothing_where_it_knows_nothing(tmp_path, monkeypatch):
    """Known answer: on relevant_features privileged information provably helps 200 samples, and
    Hinton's loss must close a clear share of the teacher-baseline gap (58 % in the 5-seed study,
    55 and 66 % on these two seeds); on clean_features (the negative control) no student may move
    far from the baseline."""
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    helps = known_answer_gains(tmp_path, "relevant_features", (0, 1))
    assert helps["teacher"] > 0.08 and helps["p2p_kl"] > 0.4 * helps["teacher"], helps
    control = known_answer_gains(tmp_path, "clean_features", (0, 1))
    assert abs(control["p2p_kl"]) < CONTROL_TOLERANCE and control["pkdot"] > PKDOT_CONTROL_FLOOR, control
