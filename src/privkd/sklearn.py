"""scikit-learn estimators: :class:`DistilledClassifier` and :class:`DistilledRegressor`.

``fit(X, y, groups=subjects)`` trains a privkd method (PKDOT by default) where ``X`` maps each
modality name to an array whose first axis is the sample; the modalities named in
``privileged`` teach the student during ``fit`` and are never needed again: ``predict``,
``predict_proba`` and ``score`` take the prevalent modalities alone. Labels may be of any type
(strings such as ``"Standing"``, integers, booleans): they are mapped to class ids inside and
back in ``predict``.

Nothing is trained here that :func:`privkd.run` does not train: ``fit`` writes the arrays as a
privkd dataset (:func:`privkd.data.from_arrays`), runs the method on one fold, the
official-split protocol, whose training part is every group but ``val_share`` of them (those
select the epoch, as privkd's validation subjects do), and loads the fold's saved student
(:func:`privkd.deploy.load_student`). The run directory is temporary unless ``out`` names
where to keep it (its curves, model card and student directory).

In :class:`~sklearn.model_selection.GridSearchCV` or :func:`~sklearn.model_selection.cross_val_score`,
wrap ``X`` in :class:`ModalityArrays` (so scikit-learn can take rows of every modality at once),
and pass ``groups`` to the splitter (``GroupKFold``). scikit-learn hands ``groups`` to
``fit`` only with metadata routing on (``sklearn.set_config(enable_metadata_routing=True)`` and
``estimator.set_fit_request(groups=True)``); without it ``fit`` sees no groups and selects its
epoch on held-out recordings (samples) instead of held-out subjects.

A plain 2-D array ``X`` is one prevalent ``features`` modality named ``"X"``: with nothing
privileged there is nothing to distil, so it suits ``method="baseline"`` (and scikit-learn's
own estimator checks).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from privkd.errors import PrivkdError

__all__ = ["DistilledClassifier", "DistilledRegressor", "ModalityArrays"]

ARRAY_MODALITY = "X"
"""The modality name of a plain array ``X``."""


class ModalityArrays(Mapping[str, np.ndarray]):
    """``{modality: array}`` with a sample axis scikit-learn can index: ``shape`` is ``(n,)`` and
    ``X[rows]`` (integer or boolean rows) takes those samples of every modality; ``X["name"]``
    is one modality's array, as in a dict."""

    def __init__(self, arrays: Mapping[str, Any]) -> None:
        self._arrays = {str(name): np.asarray(array) for name, array in arrays.items()}
        counts = {name: len(array) for name, array in self._arrays.items()}
        if not counts or len(set(counts.values())) != 1:
            raise PrivkdError(f"the modalities hold different numbers of samples ({counts})" if counts
                              else "no modality given", "pass {modality: array} with one row per sample in every array")
        self.shape = (next(iter(counts.values())),)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._arrays[key]
        return ModalityArrays({name: array[key] for name, array in self._arrays.items()})

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        """The number of modalities (a Mapping's length); the sample count is ``shape[0]``."""
        return len(self._arrays)

    def __repr__(self) -> str:
        return "ModalityArrays({" + ", ".join(f"{k!r}: {v.dtype}{v.shape}" for k, v in self._arrays.items()) + "})"


def _modalities(X: Any) -> ModalityArrays:
    """``X`` as :class:`ModalityArrays`: a mapping as it is, a 2-D array as the one modality ``"X"``."""
    if isinstance(X, ModalityArrays):
        return X
    if isinstance(X, Mapping):
        return ModalityArrays(X)
    array = np.asarray(X)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"X is a {type(X).__name__} of shape {array.shape} and dtype {array.dtype}: pass "
                         "{modality: array} (privileged modalities included for fit) or a 2-D numeric array")
    return ModalityArrays({ARRAY_MODALITY: array})


def _validation_groups(groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Which groups select the epoch: ``share`` of them (at least one, never all), drawn with ``seed``."""
    unique = np.unique(groups)
    if len(unique) < 2:
        raise ValueError(f"groups holds {len(unique)} distinct value(s); fit needs at least 2 (one to train on, one "
                         "to select the epoch on)")
    count = min(max(1, round(share * len(unique))), len(unique) - 1)
    return np.random.default_rng(seed).permutation(unique)[:count]


class _DistilledEstimator(BaseEstimator):
    """What both estimators share: parameters, ``fit`` through :func:`privkd.run`, the student's outputs.

    Parameters (stored as given, as scikit-learn requires):

    ``method``: the privkd method the student is trained with (``"pkdot"``, ``"mtpkdot"``,
    ``"p2p_kl"``, ``"amid"``, ... or ``"baseline"``: no teacher). ``privileged``: the modality names of
    ``X`` seen only during ``fit``. ``epochs``, ``batch_size``, ``lr``: ``training.*`` settings
    (None keeps privkd's defaults). ``config``: any other privkd settings as nested sections,
    e.g. ``{"model": {"embed_dim": 16}, "training": {"threads": 1}}``. ``sampling_rates``: Hz
    per time-based modality (``(n, channels, time)`` arrays are signals and need one).
    ``val_share``: the share of groups (or samples, without groups) that select the epoch.
    ``random_state``: privkd's ``seed`` and the draw of those groups. ``out``: a directory to
    keep each fit's privkd run in (default: a temporary one, removed after ``fit``); the
    dataset file a fit writes is temporary either way.
    """

    _task = "classification"

    def __init__(self, method: str = "pkdot", *, privileged: Sequence[str] = (), epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None, config: Mapping[str, Any] | None = None,
                 sampling_rates: Mapping[str, float] | None = None, val_share: float = 0.2, random_state: int = 0,
                 out: str | Path | None = None) -> None:
        self.method = method
        self.privileged = privileged
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.config = config
        self.sampling_rates = sampling_rates
        self.val_share = val_share
        self.random_state = random_state
        self.out = out

    # -------------------------------------------------------------------------------- fit

    def _labels(self, y: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        """The labels privkd stores and the target names (regression); classifiers override it."""
        raise NotImplementedError

    def _run_config(self, data: Path, prevalent: list[str], privileged: list[str]) -> dict[str, Any]:
        values: dict[str, Any] = {section: dict(keys) for section, keys in (self.config or {}).items()}
        training = {key: value for key, value in (("epochs", self.epochs), ("batch_size", self.batch_size),
                                                  ("lr", self.lr)) if value is not None}
        values["name"] = f"sklearn-{self.method}"
        values["seed"] = self.random_state
        values["methods"] = [self.method]
        values["data"] = {**values.get("data", {}), "path": str(data), "prevalent": prevalent, "privileged": privileged}
        values["evaluation"] = {**values.get("evaluation", {}), "protocol": "splits", "linear_reference": False,
                                "final": False}
        values["training"] = {"jobs": 1, "progress_bar": False, **values.get("training", {}), **training}
        return values

    def fit(self, X: Any, y: Any, groups: Any = None) -> _DistilledEstimator:
        """Train the student on ``X`` (every modality, privileged ones included) and ``y``;
        ``groups`` (subject ids) keep each subject's samples on one side of the epoch selection."""
        from privkd.api import run
        from privkd.data.importers.arrays import from_arrays
        from privkd.deploy import load_student
        from privkd.methods.registry import method_spec

        if not method_spec(self.method, "method").deployable:
            raise ValueError(f"method {self.method!r} makes no student that runs on the prevalent modalities alone; "
                             "use a distillation method such as 'pkdot', or 'baseline'")
        arrays = _modalities(X)
        y = np.asarray(y)
        n = arrays.shape[0]
        if len(y) != n:
            raise ValueError(f"X holds {n} samples but y {len(y)} labels")
        labels, target_names = self._labels(y)
        privileged = [str(name) for name in self.privileged]
        missing = [name for name in privileged if name not in arrays]
        if missing:
            raise ValueError(f"privileged modality {missing[0]!r} is not in X (modalities: {list(arrays)})")
        prevalent = [name for name in arrays if name not in privileged]
        if not prevalent:
            raise ValueError(f"every modality of X is privileged ({privileged}): the student needs at least one other")
        ids = np.asarray([str(g) for g in groups], dtype=object) if groups is not None else None
        if ids is not None and len(ids) != n:
            raise ValueError(f"groups holds {len(ids)} ids for {n} samples")
        held = ids if ids is not None else np.asarray([f"recording-{i}" for i in range(n)], dtype=object)
        validation = np.isin(held, _validation_groups(held, self.val_share, self.random_state))
        # the run's test split repeats the validation samples: privkd scores a test split, the
        # estimator scores nothing on it (score() is for the caller's own held-out data)
        rows = np.concatenate([np.arange(n), np.flatnonzero(validation)])
        splits = [("validation" if v else "train") for v in validation] + ["test"] * int(validation.sum())

        with tempfile.TemporaryDirectory(prefix="privkd-sklearn-") as scratch:
            data = from_arrays(Path(scratch) / "data.h5", {name: arrays[name][rows] for name in arrays}, labels[rows],
                               subjects=None if ids is None else ids[rows], no_subject_ids=ids is None,
                               task=self._task, sampling_rates=self.sampling_rates, target_names=target_names,
                               splits=splits, source="privkd.sklearn")
            result = run(self._run_config(data, prevalent, privileged), self.out or Path(scratch) / "runs")
            if result.failures:
                failure = result.failures[0]
                raise PrivkdError(f"training {failure['row']} failed: {failure['error']}",
                                  "see the error above; pass out= to keep the run directory and its logs")
            self.student_ = load_student(result.dir / "fold_0" / self.method / "student")
        self.run_dir_ = result.dir if self.out else None
        self.modalities_ = prevalent
        return self

    # -------------------------------------------------------------------------------- outputs

    def _outputs(self, X: Any) -> np.ndarray:
        """The student's raw outputs (logits, or regression values) for the prevalent modalities of ``X``."""
        from privkd.deploy import predict_arrays

        check_is_fitted(self, "student_")
        arrays = _modalities(X)
        missing = [name for name in self.modalities_ if name not in arrays]
        if missing:
            raise ValueError(f"X lacks the modality {missing[0]!r}; the student needs {self.modalities_}")
        n, step = arrays.shape[0], 256
        outputs = [predict_arrays(self.student_, {name: arrays[name][i:i + step] for name in self.modalities_})
                   for i in range(0, n, step)]
        return np.concatenate(outputs) if outputs else np.empty((0, len(self.student_.output_names)), np.float32)


class DistilledClassifier(ClassifierMixin, _DistilledEstimator):
    """A privileged-knowledge-distilled classifier; see the module docstring and
    :class:`_DistilledEstimator` for the parameters. ``classes_`` holds the labels in the
    order of ``predict_proba``'s columns."""

    _task = "classification"

    def _labels(self, y: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        if y.ndim != 1:
            raise ValueError(f"y has shape {y.shape}; a classifier takes one label per sample")
        check_classification_targets(y)
        self.classes_, ids = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y holds one class ({self.classes_[0]!r}); a classifier needs at least 2")
        return ids.astype(np.int64), None

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``, columns in :attr:`classes_` order."""
        outputs = self._outputs(X).astype(np.float64)
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sample, as a label of ``y``'s type."""
        outputs = self._outputs(X)  # first: it says NotFittedError before fit
        return self.classes_[outputs.argmax(axis=1)]


class DistilledRegressor(RegressorMixin, _DistilledEstimator):
    """A privileged-knowledge-distilled regressor: ``y`` of shape ``(n,)`` or ``(n, targets)``;
    ``score`` is R² as for any scikit-learn regressor."""

    _task = "regression"

    def _labels(self, y: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
        if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
            raise ValueError(f"y has shape {y.shape} and dtype {y.dtype}; a regressor takes numbers, (n,) or (n, targets)")
        self.n_targets_ = 1 if y.ndim == 1 else y.shape[1]
        return y.astype(np.float64), None if y.ndim == 1 else [f"target_{j}" for j in range(y.shape[1])]

    def predict(self, X: Any) -> np.ndarray:
        """Predicted targets, ``(n,)`` for a 1-D ``y`` at fit, else ``(n, targets)``."""
        outputs = self._outputs(X).astype(np.float64)
        return outputs[:, 0] if self.n_targets_ == 1 else outputs
