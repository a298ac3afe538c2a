"""The report's training-curve figure: every fold of every method, drawn with the report's
other figures' conventions (:mod:`privkd.evaluation.plots`).

It lives with the report, not with the method figures, because only the report reads the
per-epoch logs it draws (:func:`privkd.report.reading.read_epoch_log`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from privkd.evaluation import plots

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["training_curves"]


def _fold_colours(folds: Sequence[int]) -> dict[int, tuple]:
    """One colour per fold, the same in every panel: distinct hues up to ten folds, a
    sequential map beyond (where telling each fold apart matters less than the spread)."""
    many = len(folds) > 10
    cmap = plots.matplotlib.colormaps["viridis" if many else "tab10"]
    return {fold: cmap(i / (len(folds) - 1) if many else i) for i, fold in enumerate(folds)}


def _fold_curves(loss_ax, val_ax, log: Mapping[str, Sequence[float]], colour: tuple, label: str) -> None:
    """One fold's training loss (validation loss dotted) and validation selection metric, its
    selected epoch starred: the first best, the one the checkpoint keeps."""
    style = {"color": colour, "marker": "o", "ms": 2.5, "lw": 1.0, "label": label}
    epochs = np.asarray(log["epoch"]) + 1
    if log.get("train/loss") is not None:
        loss_ax.plot(epochs, log["train/loss"], **style)
    val_loss = np.asarray(log.get("val/loss") or [], dtype=float)
    if len(val_loss) == len(epochs) and np.isfinite(val_loss).any():
        loss_ax.plot(epochs, val_loss, **{**style, "ls": ":", "marker": None, "label": f"_{label} (validation)"})
    if log.get("val/selection") is not None:
        scores = np.asarray(log["val/selection"], dtype=float)
        val_ax.plot(epochs, scores, **style)
        if np.isfinite(scores).any():
            best = int(np.nanargmax(scores))
            val_ax.plot(epochs[best], scores[best], marker="*", ms=10, color=colour, ls="none", label="_selected")


def training_curves(logs: Mapping[str, Mapping[int, Mapping[str, Sequence[float]]]],
                    selection_label: str = "val/selection") -> Figure | None:
    """One row of panels per method, one curve per fold in each: the training loss, the
    validation loss dotted where logged (left), and the validation selection metric with each
    fold's selected epoch starred (right). ``logs[row][fold]`` maps ``"epoch"``, ``"train/loss"``,
    ``"val/loss"`` (optional) and ``"val/selection"`` to per-epoch lists. A method per row
    because each trains on its own objective, whose levels do not compare across methods."""
    logs = {row: {f: log for f, log in folds.items() if log.get("epoch")} for row, folds in logs.items()}
    logs = {row: folds for row, folds in logs.items() if folds}
    if not logs:
        return None
    colours = _fold_colours(sorted({f for folds in logs.values() for f in folds}))
    fig = plots.new_figure(11, 2.4 * len(logs) + 0.8)
    axes = np.asarray(fig.subplots(len(logs), 2, squeeze=False))
    from matplotlib.ticker import MaxNLocator

    for (loss_ax, val_ax), (row, folds) in zip(axes, logs.items(), strict=True):
        for fold, log in sorted(folds.items()):
            _fold_curves(loss_ax, val_ax, log, colours[fold], f"fold {fold}")
        loss_ax.set_title(f"{row}: training loss (validation dotted)", fontsize=9)
        val_ax.set_title(f"{row}: {selection_label} (★ selected epoch)", fontsize=9)
        loss_ax.set_ylabel("loss (epoch mean)", fontsize=8)
        val_ax.set_ylabel(selection_label, fontsize=8)
        for ax in (loss_ax, val_ax):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    handles = {label: line for ax in axes.ravel() for line, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    shown = [f"fold {fold}" for fold in colours if f"fold {fold}" in handles]
    fig.legend([handles[label] for label in shown], shown, fontsize=7, loc="outside right center")
    return fig
