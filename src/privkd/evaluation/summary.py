"""Results tables: per-fold metrics → mean ± std over subject- (or recording-) independent folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from privkd.data.h5format.spec import independent

METRIC_LABELS = {"accuracy": "Accuracy", "ua": "UA", "f1": "Macro-F1", "auroc": "AUROC", "ap": "AP", "ccc": "CCC",
                 "recall@1": "R@1", "recall@5": "R@5"}

INITIAL_GAP_WARNING = 0.10
"""Training minus validation score of a row as initialised above which a classification run
warns (:func:`privkd.evaluation.diagnostics.initial_fit`, :mod:`privkd.training.initial`)."""


def leans_on_training_set(task: str, train: float, val: float) -> bool:
    """Whether a row as initialised scores more than :data:`INITIAL_GAP_WARNING` higher on its
    training samples than on its validation samples: its start already fits the training set
    through an input that does not generalise. Classification only: a network that leans on
    nothing scores near chance on both parts, so a gap of points is the leak itself; CCC has no
    chance level and rewards an output's scale as well as its correlation, so a regression
    row's scores are reported without a rule."""
    return task == "classification" and train - val > INITIAL_GAP_WARNING


def metric_label(name: str) -> str:
    """Column title: ``teacher_accuracy`` → ``Teacher Accuracy``, ``ccc_valence`` → ``CCC valence``."""
    if name.startswith("teacher_"):
        return "Teacher " + metric_label(name.removeprefix("teacher_"))
    head, _, rest = name.partition("_")
    return f"{METRIC_LABELS.get(head, head)} {rest}".strip() if head in METRIC_LABELS else METRIC_LABELS.get(name, name)


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
    """Header and rows (``mean ± std``) of the summary table, one row per method (marked when it
    departs from its paper, :func:`marked_row`); a ``Teacher`` column says which row each
    distilled row learnt from."""
    methods = summary["methods"]
    teachers = summary.get("teachers")
    metric_names = list(dict.fromkeys(name for metrics in methods.values() for name in metrics))
    header = ["Method", *(["Teacher"] if teachers else []), "Folds"] + [metric_label(m) for m in metric_names]
    rows = []
    for method, metrics in methods.items():
        n_folds = len(next(iter(metrics.values()))["per_fold"])
        cells = [f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}" if m in metrics else "—" for m in metric_names]
        rows.append([marked_row(summary, method), *([teachers.get(method) or "—"] if teachers else []), str(n_folds),
                     *cells])
    return header, rows


def warning_lines(summary: Mapping) -> list[str]:
    """What makes a row's numbers mean less than they seem: collapsed models, a teacher with
    nothing to teach."""
    lines = []
    for row, folds in (summary.get("degenerate") or {}).items():
        where = "; ".join(f"fold {f['fold']} {part}: {f[part]}" for f in folds for part in ("validation", "test") if part in f)
        lines.append(f"{row} is degenerate ({where}). Likely causes: {folds[0]['hint']}.")
    for row, start in (summary.get("initial_fit") or {}).items():
        if leans_on_training_set(summary.get("task", "classification"), start["train"], start["val"]):
            lines.append(f"{row} scored {start['train']:.4f} on its training samples and {start['val']:.4f} on its "
                         f"validation samples before its first step (mean over folds): its start already fits the "
                         "training set through something that does not generalise (the teacher's head and fusion, "
                         "the frozen T-Net's hallucinations of the training samples), so it learns little from them.")
    margin = summary.get("teacher_margin")
    if margin is not None and margin <= 0:
        lines.append(f"The teacher does not beat the baseline on the validation subjects (mean margin {margin:+.4f} "
                     f"{metric_label(summary.get('metric', ''))}): the distilled rows have nothing to distil.")
    return lines


DEPARTURE_MARK = "‡"
"""Follows the name of a row whose settings depart from its paper's, in every table."""


def marked_row(summary: Mapping, row: str) -> str:
    """``row``, followed by :data:`DEPARTURE_MARK` when the summary lists departures for it."""
    return f"{row} {DEPARTURE_MARK}" if (summary.get("departures") or {}).get(row) else row


def leak_line(leaks: Sequence[str]) -> str:
    """The line every table of a run with leaking ``leaks`` (:data:`privkd.config.schema.LEAKS`'
    words) carries above it; empty without leaks."""
    return f"**LEAKING, for reproducing published numbers only: {'; '.join(leaks)}.**" if leaks else ""


def scored_on(summary: Mapping) -> str:
    """What the summary's test scores were measured on: held-out folds, every sample of another
    corpus, or folds over samples."""
    if summary.get("test_corpus"):
        return f"every sample of another dataset, {summary['test_corpus']} (cross-corpus)"
    if "subjects shared between training and test" in (summary.get("leaks") or []):
        return "test folds over samples (subjects shared between training and test)"
    return f"{independent(summary.get('independence'))} test folds"


def initial_fit_lines(summary: Mapping) -> list[str]:
    """One line per row with its score as initialised on its training and validation samples
    (mean over folds), the comparison that shows a start leaning on the training set."""
    return [f"{row}: {start['train']:.4f} training, {start['val']:.4f} validation"
            for row, start in (summary.get("initial_fit") or {}).items()]


def departure_lines(summary: Mapping) -> list[str]:
    """One line per row that departs from its method's paper settings, naming each departure."""
    return [f"{row}: " + "; ".join(f"{key} = {d['used']} (paper: {d['paper']})" for key, d in departures.items())
            for row, departures in summary.get("departures", {}).items() if departures]


def summary_markdown(summary: Mapping, title: str) -> str:
    header, rows = summary_rows(summary)
    lines = [f"# {title}", "", f"Task: {summary['task']}; mean ± std over {scored_on(summary)}.", ""]
    if summary.get("leaks"):
        lines += [leak_line(summary["leaks"]), ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    warnings = warning_lines(summary)
    if warnings:
        lines += ["", "**Warnings**:", ""] + [f"- {line}" for line in warnings]
    initial = initial_fit_lines(summary)
    if initial:
        lines += ["", (f"Before the first training step ({metric_label(summary.get('metric', ''))}, mean over folds; "
                       "a start far better on the training samples leans on an input that does not generalise):"), ""]
        lines += [f"- {line}" for line in initial]
    departures = departure_lines(summary)
    if departures:
        lines += ["", (f"{DEPARTURE_MARK} Departures from the papers' settings (options privkd offers beside the "
                       "papers' methods):"), ""]
        lines += [f"- {line}" for line in departures]
    failed = summary.get("failed", [])
    if failed:
        lines += ["", f"**{len(failed)} (fold, method) results failed** and are left out of the means above "
                  "(details in each `failed.json`; `privkd run --resume RUN_DIR` retries them):", ""]
        lines += [f"- fold {f['fold']}, {f['row']}: {f['error']}" for f in failed]
    return "\n".join(lines) + "\n"
