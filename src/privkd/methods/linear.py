"""Linear reference rows: is a network needed at all on this table?

On tabular data (one feature vector per modality) a regularised linear model is the first
thing a reader compares with: if the prevalent-only network does not beat logistic (or ridge)
regression on the same folds, its numbers, and what distillation adds to them, mean little.
``linear`` fits scikit-learn's model on the standardised prevalent features, ``linear_teacher``
on all features (a linear upper bound). The regularisation strength is chosen, like every
epoch of every other row, on the validation subjects by the run's selection metric; the
chosen model's coefficients are copied into a linear layer so the row is scored, stored and
reported exactly like the others.
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


def _arrays(dataset: Dataset, modalities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batches = list(DataLoader(dataset, batch_size=1024))
    x = torch.cat([torch.cat([b.inputs[m].flatten(1) for m in modalities], dim=1) for b in batches]).double().numpy()
    return x, torch.cat([b.label for b in batches]).numpy()


class LinearReferenceModule(PrivkdModule):
    """A scikit-learn linear model fitted directly (no gradient descent, no Lightning)."""

    def __init__(self, net: LinearNet, **kwargs: object) -> None:
        super().__init__(net, **kwargs)  # type: ignore[arg-type]  # a LinearNet answers like a PrivilegedNet

    @classmethod
    def from_config(cls, cfg: RunConfig, info: DatasetInfo, *, teacher: PrivilegedNet | None, method: str) -> PrivkdModule:
        modalities = list(cfg.data.prevalent) + (list(cfg.data.privileged) if method == "linear_teacher" else [])
        wrong = [m for m in modalities if info.modalities[m].kind != "features" or len(info.modalities[m].sample_shape) != 1]
        if wrong:
            raise ConfigError("methods", f"{method} fits feature vectors, but {wrong[0]!r} is a "
                              f"{info.modalities[wrong[0]].kind} modality", f"drop {method} from methods")
        width = sum(info.modalities[m].sample_shape[0] for m in modalities)
        return cls(LinearNet(modalities, width, info.n_outputs), **common_arguments(cfg, info))

    def fit_directly(self, fold: FoldData) -> dict[str, float]:
        from sklearn.linear_model import LogisticRegression, Ridge

        x, y = _arrays(fold.train, self.net.modalities)
        x_val, y_val = _arrays(fold.val, self.net.modalities)
        mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
        std[~(std > 0)] = 1.0
        x, x_val = (x - mean) / std, (x_val - mean) / std
        weights = dict(enumerate(self.class_weights.tolist())) if self.class_weights is not None else None
        best: tuple[float, object, float] | None = None
        for c in REGULARISATION_GRID:
            if self.task == "classification":
                model = LogisticRegression(C=c, max_iter=5000, class_weight=weights).fit(x, y)
                logits = self._logits(model, x_val)
            else:
                model = Ridge(alpha=1.0 / c).fit(x, y)
                logits = torch.as_tensor(model.predict(x_val)).reshape(len(x_val), -1)
            value = score(self.task, logits.float(), torch.as_tensor(y_val), n_outputs=self.n_outputs)[self.selection_metric]
            if best is None or value > best[0]:
                best = (value, model, c)
        value, model, c = best
        self._load(model, mean, std)
        return {f"val/{self.selection_metric}": float(value), "epochs_trained": 0, "regularisation_c": c}

    def _logits(self, model: object, x: np.ndarray) -> Tensor:
        """Class logits of a fitted logistic model: its decision function, with a 0 column
        for the first class when there are two (softmax then gives its sigmoid)."""
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


register_method("linear", role="reference", implicit=False)(LinearReferenceModule)
register_method("linear_teacher", role="reference", needs_privileged=True, implicit=False)(LinearReferenceModule)
