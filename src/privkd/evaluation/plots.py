"""The report's figures (matplotlib, Agg backend), one function per figure.

Every function takes plain arrays and mappings (the loading lives in
:mod:`privkd.report`) and returns a :class:`~matplotlib.figure.Figure`, or ``None``
when it is given nothing to draw, so that the report skips a figure whose data the run lacks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from privkd.optional import require

# imported when the report draws its first figure (this module is loaded only then): a missing
# matplotlib is a one-line error naming the report extra, not a traceback
matplotlib = require("matplotlib", "report", "the report's figures (privkd report)")
matplotlib.use("Agg")  # headless: the report never opens a window

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p")
SIMILARITY_FRACTIONS = (0.0, 0.5, 0.75, 1.0)
"""Training progress at which the student's similarity matrix is shown (MT-PKDOT Fig. 4)."""


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` × ``height`` inches, its panels laid out to fit (constrained layout).
    Figure() directly (not pyplot): no global state, nothing to close, safe in threads."""
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _class_name(names: Sequence[str] | None, k: int) -> str:
    return str(names[k]) if names is not None and 0 <= k < len(names) else str(k)


def _is_classes(labels: np.ndarray) -> bool:
    """Integer class ids (not regression targets)."""
    labels = np.asarray(labels)
    return labels.ndim == 1 and (np.issubdtype(labels.dtype, np.integer) or bool(np.all(np.mod(labels, 1) == 0)))


def _class_blocks(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """``(start, end, class)`` of each run of equal labels in a class-sorted probe batch; none
    for regression targets, nor past 30 classes, whose names could not be read on the axes."""
    if not _is_classes(labels) or len(np.unique(labels)) > 30:
        return []
    starts = np.r_[0, np.flatnonzero(np.diff(labels)) + 1].astype(int)
    ends = np.r_[starts[1:], len(labels)].astype(int)
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, ends, strict=True)]


def _mark_classes(ax, blocks: Sequence[tuple[int, int, int]], class_names: Sequence[str] | None, *, y: bool) -> None:
    """Thin lines between the class blocks of a similarity matrix and each block's class name at
    its centre (on the y-axis too when ``y``), so that a reader sees which classes agree."""
    for start, _, _ in blocks[1:]:
        ax.axhline(start - 0.5, color="white", lw=0.6)
        ax.axvline(start - 0.5, color="white", lw=0.6)
    centres = [(start + end - 1) / 2 for start, end, _ in blocks]
    names = [_class_name(class_names, k) for _, _, k in blocks]
    ax.set_xticks(centres, names, rotation=90, fontsize=7)
    ax.set_yticks(centres, names if y else [], fontsize=7)
    ax.tick_params(length=0)


def similarity_epochs(n_epochs: int, fractions: Sequence[float] = SIMILARITY_FRACTIONS) -> list[int]:
    """Indices into the student stack (0 = before training, ``n_epochs`` = after the last
    epoch) at the given fractions of training, without repeats."""
    return sorted({round(f * n_epochs) for f in fractions})


def similarity_evolution(teacher: np.ndarray, student: np.ndarray, labels: np.ndarray, row: str,
                         class_names: Sequence[str] | None = None) -> Figure | None:
    """MT-PKDOT Fig. 4: the teacher's cosine-similarity matrix on the probe batch beside the
    student's before training and at 50 %, 75 % and 100 % of its epochs (top), and under each
    student panel its difference map ``|S_teacher - S_student|`` with its mean (bottom): the
    matrices look alike at a glance, the differences are what distillation changes. Each class
    block is named on the axes (``class_names``, else the class id)."""
    if student is None or len(student) == 0:
        return None
    labels = np.asarray(labels)
    labels = labels if labels.ndim == 1 else labels.reshape(len(labels), -1)[:, 0]
    shown = similarity_epochs(len(student) - 1)
    blocks = _class_blocks(labels)
    fig = new_figure(2.6 * (len(shown) + 1) + 0.6, 5.6 + (1.0 if blocks else 0.0))
    axes = fig.subplots(2, len(shown) + 1)
    panels = [("teacher", teacher)] + [(f"student, epoch {e}" + (" (init)" if e == 0 else ""), student[e]) for e in shown]
    differences = [np.abs(np.asarray(teacher) - np.asarray(student[e])) for e in shown]
    largest = max(float(d.max()) for d in differences) or 1.0
    image = difference = None
    for ax, (title, matrix) in zip(axes[0], panels, strict=True):
        image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="viridis", interpolation="nearest")
        _mark_classes(ax, blocks, class_names, y=ax is axes[0][0])
        ax.set_title(title, fontsize=9)
    axes[1][0].axis("off")
    for ax, gap, e in zip(axes[1][1:], differences, shown, strict=True):
        difference = ax.imshow(gap, vmin=0, vmax=largest, cmap="magma", interpolation="nearest")
        _mark_classes(ax, blocks, class_names, y=ax is axes[1][1])
        ax.set_title(f"|teacher - epoch {e}|, mean {gap.mean():.3f}", fontsize=8)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="cosine similarity")
    fig.colorbar(difference, ax=list(axes[1]), shrink=0.8, label="absolute difference")
    order = "class" if _is_classes(labels) else "first target"
    fig.suptitle(f"{row}: joint-embedding similarity on the validation probe batch (sorted by {order})", fontsize=10)
    return fig


def _tsne(blocks: Sequence[np.ndarray], random_state: int) -> list[np.ndarray]:
    """A 2-D t-SNE of the stacked blocks (one shared map), split back per block."""
    from sklearn.manifold import TSNE

    stacked = np.concatenate(blocks).astype(np.float64)
    perplexity = float(max(2.0, min(30.0, (len(stacked) - 1) / 3)))
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", max_iter=500,
                  random_state=random_state).fit_transform(stacked)
    return np.split(points, np.cumsum([len(b) for b in blocks])[:-1])


def alignment_tsne(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray], labels: np.ndarray,
                   class_names: Sequence[str] | None = None, random_state: int = 0) -> Figure | None:
    """MT-PKDOT Fig. 5 (in 2-D): t-SNE of the teacher's joint embedding and each adapter's view
    of the probe batch before (left) and after (right) training with adapter alignment.
    Colour = view, marker = class (for regression targets: tercile of the first target); each
    side is one t-SNE map of all its views."""
    if not before or not after or len(labels) < 5:
        return None
    labels = np.asarray(labels)
    if _is_classes(labels):
        labels = labels.astype(int)
        group_name = lambda c: _class_name(class_names, int(c))
    else:  # regression: terciles of the first target
        first = labels.reshape(len(labels), -1)[:, 0].astype(float)
        labels = np.digitize(first, np.quantile(first, [1 / 3, 2 / 3]))
        group_name = lambda c: f"first target: {('low', 'middle', 'high')[int(c)]} third"
    views = [v for v in before if v in after]
    fig = new_figure(11, 5)
    axes = fig.subplots(1, 2)
    colours = {v: f"C{i}" for i, v in enumerate(views)}
    classes = np.unique(labels)
    for ax, (title, source) in zip(axes, (("before alignment", before), ("after alignment", after)), strict=True):
        maps = _tsne([np.asarray(source[v]) for v in views], random_state)
        for view, pts in zip(views, maps, strict=True):
            for k, cls in enumerate(classes):
                sel = labels == cls
                ax.scatter(pts[sel, 0], pts[sel, 1], s=18, c=colours[view], marker=MARKERS[k % len(MARKERS)],
                           alpha=0.75, linewidths=0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], ls="", marker="o", color=colours[v], label=f"view: {v}") for v in views]
    handles += [Line2D([], [], ls="", marker=MARKERS[k % len(MARKERS)], color="0.3", label=group_name(c))
                for k, c in enumerate(classes)]
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    fig.suptitle(f"Teacher representations (t-SNE, random_state={random_state}), validation probe batch")
    return fig


def teacher_selection(counts: Mapping[str, Mapping[str, float]]) -> Figure | None:
    """MT-PKDOT Fig. 6: share of training batches on which each teacher (joint or a modality
    adapter) was selected, per MT-PKDOT row, summed over epochs and folds."""
    counts = {row: c for row, c in counts.items() if sum(c.values()) > 0}
    if not counts:
        return None
    teachers = list(dict.fromkeys(t for c in counts.values() for t in c))
    fig = new_figure(max(5.0, 1.6 * len(teachers) * max(1, len(counts)) ** 0.5), 3.8)
    ax = fig.subplots()
    width = 0.8 / len(counts)
    x = np.arange(len(teachers))
    for i, (row, c) in enumerate(counts.items()):
        total = sum(c.values())
        shares = [100.0 * c.get(t, 0) / total for t in teachers]
        bars = ax.bar(x + (i - (len(counts) - 1) / 2) * width, shares, width, label=f"{row} ({int(total)} batches)")
        ax.bar_label(bars, fmt="%.1f%%", fontsize=7)
    ax.set_xticks(x, teachers)
    ax.set_ylabel("batches where selected (%)")
    ax.set_ylim(0, 110)
    ax.legend(fontsize=8)
    ax.set_title("Teacher selection (all epochs and folds)")
    return fig


def _numeric(values: Sequence) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sweep_curves(points: Sequence[Mapping], parameters: Sequence[str], row: str, metric: str) -> Figure | None:
    """MT-PKDOT Fig. 7: the row's test ``metric`` (mean over folds) against one swept parameter,
    one line per value of the other; with two parameters, one panel per choice of x-axis.
    Further parameters are averaged over (said in the title)."""
    points = [p for p in points if metric in p.get("test", {}).get(row, {})]
    if not points or not parameters:
        return None
    axes_params = list(parameters[:2])
    fig = new_figure(5.2 * len(axes_params), 3.8)
    axes = np.atleast_1d(fig.subplots(1, len(axes_params)))
    for ax, x_key in zip(axes, axes_params, strict=True):
        others = [k for k in axes_params if k != x_key]
        line_key = others[0] if others else None
        xs = list(dict.fromkeys(p["params"].get(x_key) for p in points))
        numeric = _numeric(xs)
        xs = sorted(xs) if numeric else xs
        lines = list(dict.fromkeys(p["params"].get(line_key) for p in points)) if line_key else [None]
        lines = sorted(lines) if _numeric(lines) else lines
        for line in lines:
            ys = []
            for x in xs:
                vals = [p["test"][row][metric] for p in points
                        if p["params"].get(x_key) == x and (line_key is None or p["params"].get(line_key) == line)]
                ys.append(float(np.mean(vals)) if vals else math.nan)
            pos = xs if numeric else list(range(len(xs)))
            ax.plot(pos, ys, marker="o", label=f"{line_key} = {line}" if line_key else row)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 8:
            ax.set_xscale("log", base=2)
        if numeric:
            ax.set_xticks(xs, [str(x) for x in xs])
        else:
            ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_xlabel(x_key)
        ax.set_ylabel(f"test {metric} (mean over folds)")
        ax.legend(fontsize=8)
    extra = [k for k in parameters if k not in axes_params]
    note = f"; averaged over {', '.join(extra)}" if extra else ""
    fig.suptitle(f"Sweep: {row} test {metric}{note} (points chosen on validation, not on this)", fontsize=10)
    return fig


def amid_gap(histories: Mapping[str, Sequence[Sequence[Mapping[str, float]]]]) -> Figure | None:
    """AMID Fig. 4: teacher − student training accuracy per epoch for every AMID row (left),
    and the two accuracies themselves (right); mean over the folds that reached each epoch.
    ``histories[row]`` holds one per-epoch list of ``{"teacher", "student", ...}`` per fold."""
    histories = {row: [f for f in folds if f] for row, folds in histories.items()}
    histories = {row: folds for row, folds in histories.items() if folds}
    if not histories:
        return None
    fig = new_figure(11, 3.8)
    gap_ax, acc_ax = fig.subplots(1, 2)
    for i, (row, folds) in enumerate(histories.items()):
        length = max(len(f) for f in folds)
        grid = {key: np.full((len(folds), length), np.nan) for key in ("teacher", "student")}
        for j, fold in enumerate(folds):
            for e, record in enumerate(fold):
                for key, values in grid.items():
                    values[j, e] = record.get(key, math.nan)
        epochs = np.arange(1, length + 1)
        teacher, student = (np.nanmean(grid[k], axis=0) for k in ("teacher", "student"))
        colour = f"C{i}"
        gap_ax.plot(epochs, teacher - student, marker="o", ms=3, color=colour, label=row)
        acc_ax.plot(epochs, teacher, color=colour, label=f"{row} teacher")
        acc_ax.plot(epochs, student, color=colour, ls="--", label=f"{row} student")
    from matplotlib.ticker import MaxNLocator

    for ax in (gap_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    gap_ax.axhline(0, color="0.5", lw=0.8)
    gap_ax.set_xlabel("epoch")
    gap_ax.set_ylabel("teacher − student accuracy")
    gap_ax.set_title("Training-accuracy gap")
    gap_ax.legend(fontsize=8)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("training accuracy")
    acc_ax.set_title("Teacher (solid) and student (dashed)")
    acc_ax.legend(fontsize=7)
    n_folds = max(len(f) for f in histories.values())
    fig.suptitle(f"AMID teacher-student gap (mean over {n_folds} fold(s))", fontsize=10)
    return fig


def _predicted_classes(outputs: np.ndarray) -> np.ndarray:
    outputs = np.asarray(outputs)
    return outputs.argmax(axis=1) if outputs.ndim == 2 else (outputs > 0).astype(int).reshape(-1)


def class_recalls(outputs: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy within each true class (correct / samples of the class); NaN for a class with no sample."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    pred = _predicted_classes(outputs)
    return np.array([float((pred[labels == k] == k).mean()) if (labels == k).any() else math.nan for k in range(n_classes)])


def per_class_accuracy(predictions: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
                       class_names: Sequence[str] | None = None) -> Figure | None:
    """Accuracy on each class (recall: correct / samples of that class), one bar per row: the
    mean over the test folds that hold the class, with error bars of one sample std over them
    (a class seen by few subjects varies most), cut at 0 and 1, which no accuracy passes. ``predictions[row]`` = one ``(outputs (n, C),
    labels (n,))`` per fold."""
    if not predictions:
        return None
    n_classes = max(int(np.asarray(o).shape[1]) if np.asarray(o).ndim == 2 else 2 for folds in predictions.values() for o, _ in folds)
    fig = new_figure(max(7.0, 0.25 * n_classes * len(predictions) + 2), 4.0)
    ax = fig.subplots()
    width = 0.85 / len(predictions)
    x = np.arange(n_classes)
    for i, (row, folds) in enumerate(predictions.items()):
        per_fold = np.stack([class_recalls(outputs, labels, n_classes) for outputs, labels in folds])
        seen = (~np.isnan(per_fold)).sum(axis=0)
        mean = np.array([np.nanmean(per_fold[:, k]) if seen[k] else math.nan for k in range(n_classes)])
        std = np.array([np.nanstd(per_fold[:, k], ddof=1) if seen[k] > 1 else 0.0 for k in range(n_classes)])
        clipped = np.vstack([np.minimum(std, mean), np.minimum(std, 1.0 - mean)])  # an accuracy stays in [0, 1]
        ax.bar(x + (i - (len(predictions) - 1) / 2) * width, mean, width, yerr=clipped, capsize=2,
               error_kw={"elinewidth": 0.8}, label=row)
    ax.set_xticks(x, [_class_name(class_names, k) for k in range(n_classes)], rotation=30 if n_classes > 8 else 0)
    ax.set_ylabel("accuracy within class (mean ± std over folds)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, ncols=min(len(predictions), 5), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return fig


MAX_WIDTH_IN = 11.5
"""The widest a figure of panels is drawn: the report page shows a figure at 100 px per inch up
to about this width and shrinks a wider one, every letter with it."""

CELL_IN = 0.6
"""Inches per confusion-matrix cell, room for a two-decimal share in :data:`CELL_FONT` points."""

CELL_FONT = 11


def _confusion_layout(n_rows: int, n_classes: int) -> tuple[float, int, bool]:
    """Panel size (inches), panels per line, and whether the shares are written in the cells:
    cells of :data:`CELL_IN` while a panel and the colour bar fit :data:`MAX_WIDTH_IN`, else
    smaller cells in colour alone (many classes)."""
    margin, room = 1.6, MAX_WIDTH_IN - 1.0  # tick labels, axis labels and title; the colour bar
    numbers = margin + CELL_IN * n_classes <= room
    panel = margin + CELL_IN * n_classes if numbers else room
    return panel, max(1, min(n_rows, int(room // panel))), numbers


def confusion_matrices(predictions: Mapping[str, tuple[np.ndarray, np.ndarray]],
                       class_names: Sequence[str] | None = None) -> Figure | None:
    """Row-normalised confusion matrix (rows = true class, summing to 1) per row, folds pooled;
    the figure grows with the class count so that each share stays legible on the page."""
    if not predictions:
        return None
    n = len(predictions)
    n_classes = max(int(np.asarray(o).shape[1]) if np.asarray(o).ndim == 2 else 2 for o, _ in predictions.values())
    panel, cols, numbers = _confusion_layout(n, n_classes)
    rows = math.ceil(n / cols)
    fig = new_figure(panel * cols + 1.0, panel * rows + 0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    ticks = [_class_name(class_names, k) for k in range(n_classes)]
    image = None
    for ax, (row, (outputs, labels)) in zip(axes, predictions.items(), strict=False):
        labels = np.asarray(labels).astype(int).reshape(-1)
        pred = _predicted_classes(outputs)
        matrix = np.zeros((n_classes, n_classes))
        np.add.at(matrix, (labels, pred), 1)
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
        if numbers:
            for (i, j), v in np.ndenumerate(matrix):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=CELL_FONT,
                        color="white" if v > 0.5 else "black")
        ax.set_title(row, fontsize=11)
        ax.set_xticks(range(n_classes), ticks, rotation=90, fontsize=9)
        ax.set_yticks(range(n_classes), ticks, fontsize=9)
        ax.set_xlabel("predicted", fontsize=10)
        ax.set_ylabel("true", fontsize=10)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes[:n]), shrink=0.6, label="share of the true class")
    return fig


def _ccc(x: np.ndarray, y: np.ndarray) -> float:
    """The CCC the runs report (:func:`privkd.losses.task.concordance_cc`), of pooled points."""
    if len(x) < 2:
        return math.nan
    import torch

    from privkd.losses.task import concordance_cc

    return float(concordance_cc(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)))


def regression_scatter(predictions: Mapping[str, tuple[np.ndarray, np.ndarray]], target_names: Sequence[str] | None = None,
                       max_points: int = 2000, seed: int = 0) -> Figure | None:
    """Predicted against true value per row (rows of panels) and target (columns), folds pooled,
    with the identity line and the pooled CCC; at most ``max_points`` random points per panel."""
    if not predictions:
        return None
    first = np.asarray(next(iter(predictions.values()))[0])
    n_targets = 1 if first.ndim == 1 else first.shape[1]
    n = len(predictions)
    fig = new_figure(3.6 * n_targets + 0.5, 2.9 * n)
    axes = np.asarray(fig.subplots(n, n_targets, squeeze=False))
    rng = np.random.default_rng(seed)
    for r, (row, (outputs, labels)) in enumerate(predictions.items()):
        outputs = np.asarray(outputs, dtype=float).reshape(len(outputs), -1)
        labels = np.asarray(labels, dtype=float).reshape(len(labels), -1)
        keep = rng.permutation(len(outputs))[:max_points]
        for t in range(n_targets):
            ax = axes[r, t]
            x, y = labels[:, t], outputs[:, t]
            ax.scatter(x[keep], y[keep], s=4, alpha=0.4)
            lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
            ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
            name = target_names[t] if target_names is not None and t < len(target_names) else f"target {t}"
            ax.set_title(f"{row}: {name}\npooled CCC {_ccc(x, y):.3f}", fontsize=8)
            ax.set_xlabel("true", fontsize=8)
            ax.set_ylabel("predicted", fontsize=8)
    return fig
