"""Paper-ready report output (issue 32, item 6): every figure as PDF, SVG and a 300 dpi PNG, a
booktabs LaTeX table with the paired tests, legible confusion matrices, per-class error bars
inside [0, 1], training curves of every fold, class names on the similarity axes, the gap
closed only where the teacher clears the fold noise, and ``--out`` taking everything.

The run directories here are written by hand (no training): the real run's report is checked
in tests/test_report.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from matplotlib.container import BarContainer
from PIL import Image

from privkd.evaluation import plots
from privkd.report import build_report, tables
from privkd.report.curves import training_curves
from privkd.report.figures import PNG_DPI, render
from privkd.report.latex import tex_escape
from privkd.report.render import DISPLAY_DPI

FOLDS = 3
ROWS = {"baseline": [0.60, 0.70, 0.65], "teacher": [0.80, 0.85, 0.90], "pkdot": [0.70, 0.72, 0.80]}
"""Macro-F1 per fold of a hand-written run: the teacher clears the baseline by far more than the folds scatter."""


def _entry(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=min(1, len(values) - 1))), "per_fold": values}


def _summary(rows: dict[str, list[float]]) -> dict:
    return {"task": "classification", "metric": "f1", "folds": len(next(iter(rows.values()))),
            "class_names": ["walk", "run", "sit"], "methods": {row: {"f1": _entry(v)} for row, v in rows.items()}}


def _hand_written_run(root: Path) -> Path:
    """Three folds of three rows, each with test predictions and a per-epoch log."""
    run = root / "run"
    rng = np.random.default_rng(0)
    for fold in range(FOLDS):
        for row in ROWS:
            directory = run / f"fold_{fold}" / row
            (directory / "logs").mkdir(parents=True)
            (directory / "metrics.json").write_text(json.dumps({"fold": fold, "row": row, "method": row}))
            labels = rng.integers(0, 3, 30)
            outputs = np.eye(3)[np.where(rng.random(30) < 0.7, labels, rng.integers(0, 3, 30))] * 4
            np.savez_compressed(directory / "test_predictions.npz", outputs=outputs, labels=labels,
                                indices=np.arange(30), subjects=np.repeat([f"s{fold}a", f"s{fold}b"], 15))
            (directory / "logs" / "metrics.csv").write_text(
                "epoch,train/loss,val/f1\n0,1.0,\n0,,0.5\n1,0.8,\n1,,0.6\n2,0.7,\n2,,0.55\n")
    (run / "summary.json").write_text(json.dumps(_summary(ROWS)))
    return run


@pytest.fixture(scope="module")
def report_elsewhere(tmp_path_factory) -> tuple[Path, Path]:
    """A hand-written run and its report written with ``out_dir`` (the CLI's ``--out``) elsewhere."""
    root = tmp_path_factory.mktemp("paper")
    run = _hand_written_run(root)
    build_report(run, out_dir=root / "out")
    return run, root / "out"


# --------------------------------------------------------------------------- formats and --out


def test_every_figure_is_a_300_dpi_png_with_a_pdf_and_an_svg_beside_it(report_elsewhere):
    _, out = report_elsewhere
    pngs = sorted((out / "report").glob("*.png"))
    assert {"per_class_accuracy", "confusion_matrices", "training_curves"} <= {p.stem for p in pngs}
    for png in pngs:
        dpi = Image.open(png).info["dpi"]
        assert dpi == pytest.approx((PNG_DPI, PNG_DPI), abs=0.01) and PNG_DPI == 300
        assert png.with_suffix(".pdf").read_bytes().startswith(b"%PDF-")
        assert ElementTree.parse(png.with_suffix(".svg")).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert sorted(p.name for p in (out / "report").iterdir()) == sorted(
        [f"{p.stem}.{fmt}" for p in pngs for fmt in ("pdf", "png", "svg")] + ["results.tex"])


def test_the_same_figure_gives_the_same_bytes_in_every_format():
    """No creation date, no random SVG ids: a rerun report can be compared file by file."""
    def draw() -> dict[str, bytes]:
        return render(plots.confusion_matrices({"a": (np.eye(3)[[0, 1, 2, 1]], np.array([0, 1, 2, 2]))}))

    first = draw()
    assert list(first) == ["png", "pdf", "svg"] and first == draw()
    assert b"/Type /Font" in first["pdf"] and b"/Subtype /Type3" not in first["pdf"]  # TrueType: publishers refuse Type 3


def test_out_takes_the_markdown_html_figures_and_latex_and_leaves_the_run_alone(report_elsewhere):
    run, out = report_elsewhere
    assert not (run / "report").exists() and not (run / "report.md").exists()
    md = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert "report/results.tex" in links and "report/confusion_matrices.png" in links
    assert "report/confusion_matrices.pdf" in links and "report/confusion_matrices.svg" in links
    assert all((out / link).is_file() for link in links)
    page = (out / "report.html").read_text()
    assert "\\toprule" in page and page.count('src="data:image/png;base64,') == len(list((out / "report").glob("*.png")))


# --------------------------------------------------------------------------- LaTeX table


def test_the_latex_table_is_a_booktabs_tabular_of_the_reports_rows_and_p_values(report_elsewhere):
    _, out = report_elsewhere
    tex = (out / "report" / "results.tex").read_text()
    assert tex.isascii()
    spec = re.search(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", tex, flags=re.DOTALL)
    assert spec, tex
    body = spec.group(2)
    assert [m.start() for m in re.finditer(r"\\(toprule|midrule|bottomrule)", body)] == sorted(
        body.index(rule) for rule in ("\\toprule", "\\midrule", "\\bottomrule"))
    lines = [line for line in body.splitlines() if line.endswith("\\\\")]
    assert all(len(re.split(r"(?<!\\)&", line)) == len(spec.group(1)) for line in lines)  # every row fills the columns
    header, *rows = lines
    assert "Wilcoxon p" in header and "corrected t-test p" in header
    assert [row.split("&")[0].strip() for row in rows] == list(ROWS)
    _, comparison, stats = tables.results_table(_summary(ROWS), baseline="baseline", teacher="teacher")
    p_values = [c for row in comparison.rows for c in row[-2:] if c != "—"]
    assert len(p_values) == 4 and all(tex_escape(p) in tex for p in p_values)
    assert all(f"{s.metrics['f1'][0]:.4f} $\\pm$ {s.metrics['f1'][1]:.4f}" in tex for s in stats)
    assert "Gap closed is shown only where the teacher beats the baseline by more than the fold noise" in tex


def test_tex_escape_writes_specials_and_symbols_as_latex():
    assert tex_escape("50.0 % †") == r"50.0 \% $^\dagger$"
    assert tex_escape("0.81 ± 0.02") == r"0.81 $\pm$ 0.02"
    assert tex_escape("<0.001") == r"$<$0.001" and tex_escape("a_b & c") == r"a\_b \& c"
    assert tex_escape("Δ F1 — s²") == r"$\Delta$ F1 --- s$^2$" and tex_escape("é") == "?"


# --------------------------------------------------------------------------- gap closed and the fold noise


def test_the_gap_closed_is_shown_only_where_the_teacher_clears_the_fold_noise():
    # teacher − baseline per fold: +0.30, −0.20, +0.20 → mean 0.10 (over MIN_TEACHER_GAP), std 0.26: noise
    noisy = _summary({"baseline": [0.50, 0.70, 0.60], "teacher": [0.80, 0.50, 0.80], "pkdot": [0.60, 0.60, 0.70]})
    _, table, stats = tables.results_table(noisy, baseline="baseline", teacher="teacher")
    gap = table.header.index("Gap closed (Macro-F1)")
    assert [row[gap] for row in table.rows] == ["—", "—", "—"]
    assert not math.isnan(stats[2].gap_closed)  # the statistics still have it; the table does not show it
    check = tables.gap_check(noisy, stats[2], baseline="baseline", teacher="teacher")
    assert check.difference == pytest.approx(0.1) and check.noise == pytest.approx(np.std([0.3, -0.2, 0.2], ddof=1))
    notes = tables.notes(noisy, stats, baseline="baseline", teacher="teacher")
    assert "pkdot: gap closed not shown (—): the teacher − baseline difference on Macro-F1, +0.1000, is not larger " \
           "than the fold noise (std 0.2646)." in notes
    assert any(n.startswith("Gap closed is shown only where") and "sample std" in n for n in notes)
    _, table, stats = tables.results_table(_summary(ROWS), baseline="baseline", teacher="teacher")
    assert table.rows[2][gap] == f"{stats[2].gap_closed:.1f} %"  # mean 0.20 against a std of 0.05: shown
    single = _summary({"baseline": [0.5], "teacher": [0.8], "pkdot": [0.6]})
    _, table, stats = tables.results_table(single, baseline="baseline", teacher="teacher")
    assert table.rows[2][gap] == "—"
    assert any("a single pair" in n for n in tables.notes(single, stats, baseline="baseline", teacher="teacher"))


# --------------------------------------------------------------------------- figures


def _readable_px(text, fig) -> float:
    """Height in screen pixels of ``text`` as the report page shows ``fig`` (DISPLAY_DPI, within the page)."""
    fig.canvas.draw()
    scale = min(1.0, 1150 / (fig.get_size_inches()[0] * DISPLAY_DPI))
    return text.get_window_extent().height * DISPLAY_DPI / fig.dpi * scale


@pytest.mark.parametrize("n_classes", [3, 12])
def test_confusion_matrix_shares_are_legible_and_the_figure_grows_with_the_classes(n_classes):
    labels = np.arange(60) % n_classes
    predictions = {row: (np.eye(n_classes)[labels[::-1]], labels) for row in ("baseline", "teacher", "pkdot")}
    fig = plots.confusion_matrices(predictions)
    shares = [t for ax in fig.axes for t in ax.texts]
    assert len(shares) == 3 * n_classes**2
    assert min(_readable_px(t, fig) for t in shares) >= 12  # the numbers were about 6 px high
    assert fig.get_size_inches()[0] * DISPLAY_DPI <= 1150  # shown at full size, not shrunk to fit the page
    small = plots.confusion_matrices({"a": predictions["baseline"]}) if n_classes == 12 else None
    if small is not None:
        three = plots.confusion_matrices({"a": (np.eye(3)[[0, 1, 2]], np.array([0, 1, 2]))})
        assert small.get_size_inches()[0] > three.get_size_inches()[0] + 4


def test_per_class_error_bars_never_leave_zero_to_one():
    perfect, half = np.eye(2)[[0, 0, 1, 1]] * 5, np.eye(2)[[0, 1, 1, 0]] * 5
    labels = np.array([0, 0, 1, 1])
    fig = plots.per_class_accuracy({"row": [(perfect, labels), (half, labels), (perfect, labels)]})
    (bars,) = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    means = [b.get_height() for b in bars]
    assert means == pytest.approx([5 / 6, 5 / 6])  # std 0.29: unclipped, the bars would reach 1.12
    for segment in bars.errorbar.lines[2][0].get_segments():
        (_, low), (_, high) = segment
        assert 0.0 <= low and high <= 1.0
        assert high == pytest.approx(1.0) and low == pytest.approx(5 / 6 - np.std([1, 0.5, 1], ddof=1))


def test_training_curves_draw_one_curve_per_fold_with_titles_inside_the_figure():
    def log(level: float) -> dict:
        return {"epoch": [0, 1, 2], "train/loss": [level, level - 0.2, level - 0.3], "val/selection": [0.5, 0.7, 0.6]}

    fig = training_curves({"pkdot": {0: log(1.0), 1: log(1.2), 4: log(0.9)}, "baseline": {1: log(0.8)}}, "val/f1")
    (pk_loss, pk_val), (base_loss, _) = np.asarray(fig.axes[:4]).reshape(2, 2)
    assert [line.get_label() for line in pk_loss.lines] == ["fold 0", "fold 1", "fold 4"]
    assert [line.get_label() for line in base_loss.lines] == ["fold 1"]
    assert sum(line.get_marker() == "*" for line in pk_val.lines) == 3  # each fold's selected epoch
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["fold 0", "fold 1", "fold 4"]
    fig.canvas.draw()
    box = fig.bbox
    for ax in fig.axes:
        extent = ax.title.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1, ax.get_title()


def test_the_report_reads_the_training_log_of_every_fold(report_elsewhere, monkeypatch):
    from privkd.report import figures

    run, _ = report_elsewhere
    drawn = {}
    monkeypatch.setattr(figures, "training_curves", lambda logs, label: drawn.update(logs))
    collector = figures.FigureCollector()
    figures._training_curves(collector, sorted(run.glob("fold_*")), list(ROWS), "classification")
    assert {row: sorted(folds) for row, folds in drawn.items()} == {row: [0, 1, 2] for row in ROWS}


def test_similarity_axes_name_each_class_block():
    labels = np.array([0, 0, 1, 1, 1, 2])
    teacher, student = np.eye(6), np.stack([np.eye(6)] * 3)
    fig = plots.similarity_evolution(teacher, student, labels, "pkdot", ["walk", "run", "sit"])
    top = fig.axes[0]
    assert [t.get_text() for t in top.get_xticklabels()] == ["walk", "run", "sit"]
    assert [t.get_text() for t in top.get_yticklabels()] == ["walk", "run", "sit"]
    assert list(top.get_xticks()) == [0.5, 3.0, 5.0]  # the centre of each block
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["", "", ""]  # y names on the first panel only
    targets = np.random.default_rng(0).normal(size=(6, 2))  # regression: no class to name
    plain = plots.similarity_evolution(teacher, student, targets, "pkdot", ["walk"])
    assert len(plain.axes[0].get_xticks()) == 0
