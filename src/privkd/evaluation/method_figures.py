"""The figures methods declare in their registration (MT-PKDOT Fig. 4-6, AMID Fig. 4).

Each :class:`~privkd.evaluation.artifacts.FigureSpec` reads what the rows of its methods
recorded and draws it with :mod:`privkd.evaluation.plots` (imported only when a figure is
drawn, so that registering a method never loads matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence

from privkd.evaluation.artifacts import FigureContext, FigureSpec, RowArtifacts

__all__ = ["ALIGNMENT_TSNE", "AMID_GAP", "SIMILARITY_EVOLUTION", "TEACHER_SELECTION"]


def _similarity(rows: Sequence[RowArtifacts], context: FigureContext):
    from privkd.evaluation import plots

    (row,) = rows
    recorded = row.arrays("similarity.npz")
    if not recorded:
        return None
    first = recorded[0]
    return plots.similarity_evolution(first["teacher"], first["student"], first["labels"], row.row, context.class_names)


SIMILARITY_EVOLUTION = FigureSpec(
    key="similarity",
    title="Similarity matrices",
    caption=("Cosine similarity of joint embeddings on a fixed validation probe batch sorted by class (regression: by "
             "the first target; first fold with the record), each class block named on the axes: the teacher, then the student before training and at "
             "50 %, 75 % and 100 % of its epochs (cf. MT-PKDOT Fig. 4)."),
    draw=_similarity,
    absent="no similarity.npz recorded",
    per_row=True,
)


def _alignment(rows: Sequence[RowArtifacts], context: FigureContext):
    from privkd.evaluation import plots

    recorded = next((arrays for row in rows for arrays in row.arrays("alignment.npz")), None)
    if recorded is None:
        return None
    before = {k.split("/", 1)[1]: v for k, v in recorded.items() if k.startswith("before/")}
    after = {k.split("/", 1)[1]: v for k, v in recorded.items() if k.startswith("after/")}
    return plots.alignment_tsne(before, after, recorded["labels"], context.class_names)


ALIGNMENT_TSNE = FigureSpec(
    key="alignment_tsne",
    title="Teacher alignment (t-SNE)",
    caption=("2-D t-SNE (random_state = 0) of the teacher's joint embedding and each modality adapter's view of the "
             "validation probe batch (first fold), before and after training with the alignment loss; colour = view, "
             "marker = class (regression: tercile of the first target); each side is one shared map (cf. MT-PKDOT "
             "Fig. 5, there in 3-D)."),
    draw=_alignment,
    absent="no alignment.npz (a teacher without modality adapters), or fewer than 5 probe samples",
)


def _selection(rows: Sequence[RowArtifacts], context: FigureContext):
    from privkd.evaluation import plots

    counts: dict[str, dict[str, float]] = {}
    for row in rows:
        for record in row.records():
            for epoch in record.get("teacher_selection") or []:
                for teacher, count in epoch.items():
                    counts.setdefault(row.row, {}).setdefault(teacher, 0)
                    counts[row.row][teacher] += count
    return plots.teacher_selection(counts) if counts else None


TEACHER_SELECTION = FigureSpec(
    key="teacher_selection",
    title="Teacher selection (MT-PKDOT)",
    caption=("Share of training batches on which each teacher (joint or modality adapter) was the one distilled from, "
             "summed over epochs and folds (cf. MT-PKDOT Fig. 6)."),
    draw=_selection,
    absent="no batches counted",
)


def _gap(rows: Sequence[RowArtifacts], context: FigureContext):
    from privkd.evaluation import plots

    gaps = {row.row: [record.get("teacher_student_gap") or [] for record in row.records()] for row in rows}
    gaps = {row: folds for row, folds in gaps.items() if any(folds)}
    return plots.amid_gap(gaps) if gaps else None


AMID_GAP = FigureSpec(
    key="amid_gap",
    title="AMID teacher-student gap",
    caption=("Training accuracy of AMID's online teacher and of the student per epoch and their difference, mean over "
             "the folds that reached each epoch (cf. AMID Fig. 4)."),
    draw=_gap,
    absent="no epochs recorded",
)
