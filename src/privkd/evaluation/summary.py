"""Results tables: per-fold metrics → mean ± std over subject-independent folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

METRIC_LABELS = {"accuracy": "Accuracy", "f1": "Macro-F1"}


def aggregate(task: str, per_fold: Mapping[str, Sequence[Mapping[str, float]]]) -> dict:
    """``{"task", "methods": {method: {metric: {"mean", "std", "per_fold"}}}}``.

    The std is the sample standard deviation over folds (ddof=1; 0 for a single fold), the
    spread a reader expects next to a cross-validated mean.
    """
    methods = {}
    for method, folds in per_fold.items():
        if not folds:
            continue
        metrics = {}
        for metric in folds[0]:
            values = np.array([fold[metric] for fold in folds], dtype=float)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            metrics[metric] = {"mean": float(values.mean()), "std": std, "per_fold": values.tolist()}
        methods[method] = metrics
    return {"task": task, "methods": methods}


def summary_rows(summary: Mapping) -> tuple[list[str], list[list[str]]]:
    """Header and rows (``mean ± std``) of the summary table, one row per method."""
    methods = summary["methods"]
    metric_names = list(next(iter(methods.values())).keys()) if methods else []
    header = ["Method", "Folds"] + [METRIC_LABELS.get(m, m) for m in metric_names]
    rows = []
    for method, metrics in methods.items():
        n_folds = len(next(iter(metrics.values()))["per_fold"])
        rows.append([method, str(n_folds)] + [f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}" for m in metric_names])
    return header, rows


def summary_markdown(summary: Mapping, title: str) -> str:
    header, rows = summary_rows(summary)
    lines = [f"# {title}", "", f"Task: {summary['task']}; mean ± std over subject-independent test folds.", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
