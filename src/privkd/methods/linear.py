"""Linear reference rows: is a network needed at all on this table?

On tabular data (one feature vector per modality) a regularised linear model is the first
thing a reader compares with: if the prevalent-only network does not beat logistic (or ridge)
regression on the same folds, its numbers, and what distillation adds to them, mean little.
``linear`` fits scikit-learn's model on the standardised prevalent features, ``linear_teacher``
on all features (a linear upper bound), ``linear_privileged`` on the privileged ones alone, and
``linear_gd`` is generalized distillation
(Lopez-Paz et al., ICLR 2016, Eq. 3-4) in its linear form: a teacher fitted on the privileged
features alone, and a student on the prevalent ones fitted to a mix of the labels and the
teacher's temperature-softened outputs; the reference a distilling network is measured
against. The regularisation strength (and ``linear_gd``'s imitation weight and temperature)
is chosen, like every epoch of every other row, on the validation subjects by the run's
selection metric; the chosen model's coefficients are copied into a linear layer so the row
is scored, stored and reported exactly like the others.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from privkd.config.schema import RunConfig
from privkd.data.h5format import DatasetInfo
from privkd.errors import ConfigError
from privkd.evaluation.metrics import score
from privkd.methods.base import FoldData, PrivkdModule, common_arguments
from privkd.methods.registry import register_method
from privkd.models.network import NetOutput, PrivilegedNet

REGULARISATION_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
"""Inverse regularisation C of the logistic model (ridge: alpha = 1 / C), searched on validation."""

IMITATION_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
TEMPERATURE_GRID = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
"""``linear_gd``'s imitation weights lambda and temperatures T, the grids of Lopez-Paz et al. Sec. 4.1."""


class LinearNet(nn.Module):
    """Standardisation and one linear layer over the concatenated feature vectors of ``modalities``."""

    def __init__(self, modalities: list[str], n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.modalities = modalities
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.linear = nn.Linear(n_features, n_outputs)

    def features(self, inputs: dict[str, Tensor]) -> Tensor:
        return (torch.cat([inputs[m].flatten(1) for m in self.modalities], dim=1) - self.mean) / self.std

    def forward(self, inputs: dict[str, Tensor]) -> NetOutput:
        standardised = self.features(inputs)
        return NetOutput(self.linear(standardised), standardised)

    def frozen_backbones(self) -> dict[str, nn.Module]:
        """None: asked by :meth:`PrivkdModule.train`, which ``eval()`` calls too, of every trained network."""
        return {}


def _arrays(dataset: Dataset, modalities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batches = list(DataLoader(dataset, batch_size=1024))
    x = torch.cat([torch.cat([b.inputs[m].flatten(1) for m in modalities], dim=1) for b in batches]).double().numpy()
    return x, torch.cat([b.label for b in batches]).numpy()


class LinearReferenceModule(PrivkdModule):
    """A scikit-learn linear model fitted directly (no gradient descent, no Lightning)."""

    def __init__(self, net: LinearNet, *, privileged: list[str] | None = None, **kwargs: object) -> None:
        super().__init__(net, **kwargs)  # type: ignore[arg-type]  # a LinearNet answers like a PrivilegedNet
        self.privileged = privileged
        """``linear_gd``: the modalities its teacher is fitted on; ``None`` for the other rows."""

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> PrivkdModule:
        modalities = {"linear_teacher": [*cfg.data.prevalent, *cfg.data.privileged],
                      "linear_privileged": list(cfg.data.privileged)}.get(method, list(cfg.data.prevalent))
        privileged = list(cfg.data.privileged) if method == "linear_gd" else None
        wrong = [m for m in modalities + (privileged or [])
                 if info.modalities[m].kind != "features" or len(info.modalities[m].sample_shape) != 1]
        if wrong:
            raise ConfigError("methods", f"{method} fits feature vectors, but {wrong[0]!r} is a "
                              f"{info.modalities[wrong[0]].kind} modality", f"drop {method} from methods")
        width = sum(info.modalities[m].sample_shape[0] for m in modalities)
        return cls(LinearNet(modalities, width, info.n_outputs), privileged=privileged, **common_arguments(cfg, info))

    def fit_directly(self, fold: FoldData) -> dict[str, float]:
        x, y, x_val, y_val, mean, std = _standardised(fold, self.net.modalities)
        if self.privileged is None:
            value, model, c = self._best_model(x, y, x_val, y_val)
            self._load(model, mean, std)
            return {f"val/{self.selection_metric}": value, "epochs_trained": 0, "regularisation_c": c}
        return self._fit_distilled(fold, x, y, x_val, y_val, mean, std)

    def _fit_distilled(self, fold: FoldData, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
        """Generalized distillation (Lopez-Paz et al. Eq. 3-4): the teacher on the privileged
        features, then the student on ``(1 - lambda) * labels + lambda * softmax(teacher / T)``,
        every choice (the teacher's C; the student's lambda, T and C) made on validation."""
        assert self.privileged is not None
        xs, _, xs_val, ys_val, _, _ = _standardised(fold, self.privileged)
        teacher_value, teacher, teacher_c = self._best_model(xs, y, xs_val, ys_val)
        teacher_outputs = self._outputs(teacher, xs)
        best: tuple[float, object, float, float, float] | None = None
        for imitation in IMITATION_GRID:
            for temperature in TEMPERATURE_GRID if self.task == "classification" and imitation > 0 else (1.0,):
                target = self._imitation_target(y, teacher_outputs, imitation, temperature)
                value, model, c = self._best_model(x, target, x_val, y_val)
                if best is None or value > best[0]:
                    best = (value, model, c, imitation, temperature)
        value, model, c, imitation, temperature = best
        self._load(model, mean, std)
        return {f"val/{self.selection_metric}": value, "epochs_trained": 0, "regularisation_c": c,
                "imitation": imitation, "temperature": temperature, "teacher_regularisation_c": teacher_c,
                f"teacher_val/{self.selection_metric}": teacher_value}

    def _imitation_target(self, y: np.ndarray, teacher_outputs: Tensor, imitation: float, temperature: float) -> np.ndarray:
        """The student's target: class probabilities ``(n, classes)`` mixing one-hot labels with
        the teacher's softened ones, or (regression) the mixed values."""
        if self.task == "regression":
            return (1 - imitation) * y.reshape(len(y), -1) + imitation * teacher_outputs.numpy()
        soft = torch.softmax(teacher_outputs / temperature, dim=1).numpy()
        return (1 - imitation) * np.eye(self.n_outputs)[y] + imitation * soft

    def _best_model(self, x: np.ndarray, target: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> tuple[float, object, float]:
        """The model of :data:`REGULARISATION_GRID` with the best validation score, ties broken
        by the lower validation task loss (accuracy on 50 samples moves in steps of 0.02, so
        ties are common, and the first of them is an arbitrary choice): ``(score, model, C)``."""
        best: tuple[tuple[float, float], object, float] | None = None
        labels = torch.as_tensor(y_val)
        for c in REGULARISATION_GRID:
            model = self._fit(x, target, c)
            outputs = self._outputs(model, x_val).float()
            value = score(self.task, outputs, labels, n_outputs=self.n_outputs)[self.selection_metric]
            rank = (float(value), -float(self.task_loss(outputs, labels)))
            if best is None or rank > best[0]:
                best = (rank, model, c)
        assert best is not None
        return best[0][0], best[1], best[2]

    def _fit(self, x: np.ndarray, target: np.ndarray, c: float) -> object:
        """Logistic regression on class ids or on class probabilities ``(n, classes)`` (each sample
        once per class, weighted by its probability: the same cross-entropy), or ridge regression."""
        from sklearn.linear_model import LogisticRegression, Ridge

        if self.task == "regression":
            return Ridge(alpha=1.0 / c).fit(x, target)
        weights = self.class_weights.numpy() if self.class_weights is not None else np.ones(self.n_outputs)
        if target.ndim == 1:
            return LogisticRegression(C=c, max_iter=5000).fit(x, target, sample_weight=weights[target])
        classes = np.arange(self.n_outputs)
        sample_weight = (target * weights).ravel()
        keep = sample_weight > 0
        return LogisticRegression(C=c, max_iter=5000).fit(np.repeat(x, len(classes), axis=0)[keep],
                                                          np.tile(classes, len(x))[keep], sample_weight=sample_weight[keep])

    def _outputs(self, model: object, x: np.ndarray) -> Tensor:
        """Class logits of a fitted logistic model (its decision function, with a 0 column for
        the first class when there are two: softmax then gives its sigmoid), or ridge predictions."""
        if self.task == "regression":
            return torch.as_tensor(model.predict(x)).reshape(len(x), -1)
        decision = torch.as_tensor(model.decision_function(x))
        return torch.stack([torch.zeros_like(decision), decision], dim=1) if decision.dim() == 1 else decision

    def _load(self, model: object, mean: np.ndarray, std: np.ndarray) -> None:
        coef, intercept = np.atleast_2d(model.coef_), np.atleast_1d(model.intercept_)
        if self.task == "classification" and coef.shape[0] == 1:  # binary: logit 0 for the first class
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        with torch.no_grad():
            self.net.mean.copy_(torch.as_tensor(mean))
            self.net.std.copy_(torch.as_tensor(std))
            self.net.linear.weight.copy_(torch.as_tensor(coef))
            self.net.linear.bias.copy_(torch.as_tensor(intercept))


def _standardised(fold: FoldData, modalities: list[str]) -> tuple[np.ndarray, ...]:
    """Training and validation features of ``modalities``, standardised with the training
    statistics: ``(x, y, x_val, y_val, mean, std)``."""
    x, y = _arrays(fold.train, modalities)
    x_val, y_val = _arrays(fold.val, modalities)
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    std[~(std > 0)] = 1.0
    return (x - mean) / std, y, (x_val - mean) / std, y_val, mean, std


register_method("linear", role="reference", implicit=False)(LinearReferenceModule)
register_method("linear_teacher", role="reference", needs_privileged=True, implicit=False)(LinearReferenceModule)
register_method("linear_privileged", role="reference", needs_privileged=True, implicit=False)(LinearReferenceModule)
register_method("linear_gd", role="reference", needs_privileged=True, implicit=False)(LinearReferenceModule)
