"""The scikit-learn estimators of :mod:`privkd.sklearn` on BasicMotions-shaped arrays: fit,
predict, predict_proba and score with string labels, GridSearchCV with GroupKFold, and the
scikit-learn estimator checks that apply to an estimator trained by privkd.run."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.utils import estimator_checks

from privkd.sklearn import DistilledClassifier, DistilledRegressor, ModalityArrays

CLASSES = np.array(["Standing", "Running", "Walking", "Badminton"])
RATES = {"accelerometer": 10, "gyroscope": 10}
FAST = {"model": {"embed_dim": 8, "fusion_dim": 8},
        "training": {"threads": 1, "batch_size": 16, "limit_train_batches": 2}}


def basic_motions(n: int = 48, subjects: int = 8, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Accelerometer and gyroscope windows (3 axes x 20 steps), 4 string classes, ``subjects`` ids."""
    rng = np.random.default_rng(seed)
    y = CLASSES[np.arange(n) % len(CLASSES)]
    level = np.searchsorted(np.sort(CLASSES), y)[:, None, None]
    X = {"accelerometer": rng.normal(size=(n, 3, 20)) + level, "gyroscope": rng.normal(size=(n, 3, 20)) + level}
    return X, y, np.asarray([f"s{i % subjects}" for i in range(n)])


def classifier(**params) -> DistilledClassifier:
    return DistilledClassifier(privileged=["gyroscope"], epochs=1, sampling_rates=RATES, config=FAST, **params)


def test_classifier_fits_on_modalities_and_predicts_from_the_prevalent_ones(tmp_path):
    X, y, subjects = basic_motions()
    model = classifier(out=tmp_path / "runs").fit(X, y, groups=subjects)
    assert list(model.classes_) == sorted(CLASSES) and model.modalities_ == ["accelerometer"]
    assert (model.run_dir_ / "summary.json").is_file()  # out= keeps the privkd run

    prevalent = {"accelerometer": X["accelerometer"]}  # no gyroscope after fit
    predicted = model.predict(prevalent)
    assert predicted.shape == (48,) and set(predicted) <= set(CLASSES)
    probabilities = model.predict_proba(prevalent)
    assert probabilities.shape == (48, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_[probabilities.argmax(axis=1)], predicted)
    assert model.score(prevalent, y) == np.mean(predicted == y)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict_proba(prevalent), probabilities)

    with pytest.raises(ValueError, match="lacks the modality 'accelerometer'"):
        model.predict({"gyroscope": X["gyroscope"]})
    with pytest.raises(ValueError, match="privileged modality 'eda' is not in X"):
        clone(model).set_params(privileged=["eda"]).fit(X, y, groups=subjects)


def test_regressor_predicts_one_value_per_sample():
    X, y, subjects = basic_motions(n=24, subjects=6)
    target = np.searchsorted(np.sort(CLASSES), y).astype(float)
    model = DistilledRegressor(privileged=["gyroscope"], epochs=1, sampling_rates=RATES, config=FAST)
    model.fit(X, target, groups=subjects)
    predicted = model.predict({"accelerometer": X["accelerometer"]})
    assert predicted.shape == (24,) and np.isfinite(predicted).all()
    assert np.isfinite(model.score({"accelerometer": X["accelerometer"]}, target))


def test_grid_search_with_group_k_fold_keeps_subjects_apart():
    X, y, subjects = basic_motions()
    with sklearn.config_context(enable_metadata_routing=True):  # groups reach fit as well as the splitter
        search = GridSearchCV(classifier().set_fit_request(groups=True), {"lr": [1e-3, 3e-3]}, cv=GroupKFold(2))
        search.fit(ModalityArrays(X), y, groups=subjects)
    assert search.best_params_["lr"] in (1e-3, 3e-3) and len(search.cv_results_["mean_test_score"]) == 2
    assert set(search.predict({"accelerometer": X["accelerometer"]})) <= set(CLASSES)


def test_modality_arrays_take_rows_of_every_modality():
    X, _, _ = basic_motions(n=8)
    arrays = ModalityArrays(X)
    assert arrays.shape == (8,) and sorted(arrays) == ["accelerometer", "gyroscope"]
    rows = arrays[np.array([0, 5])]
    np.testing.assert_array_equal(rows["gyroscope"], X["gyroscope"][[0, 5]])
    with pytest.raises(Exception, match="different numbers of samples"):
        ModalityArrays({"accelerometer": X["accelerometer"], "gyroscope": X["gyroscope"][:3]})


# scikit-learn's own checks: those that apply to an estimator whose fit is a privkd run. The
# others are left out because they ask what privkd refuses by design: sample weights, a class
# with one sample or fitting on 1-3 samples (privkd needs training and validation samples of
# every class), sparse or non-finite input (privkd datasets hold finite dense arrays), or
# identical predictions after pickling a fit made with a different thread count.
CHECKS = [
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    "check_estimators_unfitted", "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_fit_check_is_fitted",
]


@pytest.mark.parametrize(("estimator_class", "check"), [
    *((DistilledClassifier, check) for check in [*CHECKS, "check_classifiers_regression_target"]),
    *((DistilledRegressor, check) for check in CHECKS),
])
def test_scikit_learn_estimator_checks(estimator_class, check):
    """On a plain 2-D ``X`` (one prevalent modality, nothing privileged: the baseline method)."""
    estimator = estimator_class(method="baseline", epochs=1, config=FAST)
    getattr(estimator_checks, check)(estimator_class.__name__, estimator)


def test_fit_refuses_a_method_without_a_deployable_student_before_training():
    X, y, subjects = basic_motions(n=8)
    with pytest.raises(ValueError, match="'teacher' makes no student"):
        classifier(method="teacher").fit(X, y, groups=subjects)
    with pytest.raises(Exception, match="unknown method 'pkdt'"):
        classifier(method="pkdt").fit(X, y, groups=subjects)
