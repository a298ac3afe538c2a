"""``privkd report``: statistics against hand computations, the report files of a tiny real run,
and the HTML rendered in headless Chromium (every image loads, one table row per method)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from privkd.errors import PrivkdError
from privkd.evaluation import plots, stats
from privkd.report.curves import training_curves
from privkd.report.render import CSS

# --------------------------------------------------------------------------- statistics (hand-computed)


def test_mean_std_is_sample_std_and_ignores_nan():
    assert stats.mean_std([0.7, 0.8, 0.9]) == pytest.approx((0.8, 0.1, 3))
    assert stats.mean_std([0.5]) == (0.5, 0.0, 1)
    mean, std, n = stats.mean_std([0.7, math.nan, 0.9])
    assert (mean, std, n) == pytest.approx((0.8, math.sqrt(0.02), 2))
    assert stats.mean_std([math.nan])[2] == 0


def test_run_values_prefers_per_run_over_per_fold():
    assert stats.run_values({"mean": 1.0, "per_fold": [1, 2], "per_run": [1, 2, 3, 4, 5, 6]}).tolist() == [1, 2, 3, 4, 5, 6]
    assert stats.run_values({"mean": 1.5, "per_fold": [1, 2]}).tolist() == [1, 2]


def test_gap_closed_by_hand():
    assert stats.gap_closed(0.75, 0.70, 0.80) == pytest.approx(50.0)
    assert stats.gap_closed(0.85, 0.70, 0.80) == pytest.approx(150.0)
    assert stats.gap_closed(0.65, 0.70, 0.80) == pytest.approx(-50.0)
    assert math.isnan(stats.gap_closed(0.75, 0.70, 0.70))  # teacher no better than the baseline
    assert math.isnan(stats.gap_closed(0.6, 0.70, 0.65))  # teacher below the baseline: no gap to close
    assert math.isnan(stats.gap_closed(0.7050, 0.7000, 0.7035))  # a gap of 0.35 points is noise, not 143 %
    assert stats.gap_closed(0.7100, 0.7000, 0.7200) == pytest.approx(50.0)  # two points: a gap
    per_fold = stats.gap_closed_per_fold([0.6, 0.9, 0.5], [0.5, 0.8, 0.5], [0.7, 1.0, 0.5])
    assert per_fold[:2] == pytest.approx([50.0, 50.0]) and math.isnan(per_fold[2])


def test_wilcoxon_exact_p_by_hand():
    # 5 positive differences: only the all-positive sign pattern (and its mirror) is as extreme, p = 2 / 2**5
    test = stats.paired_test([1.1, 1.2, 1.3, 1.4, 1.5], [1.0, 1.0, 1.0, 1.0, 1.0])
    assert test.wilcoxon_p == pytest.approx(0.0625)
    assert not test.can_reach_alpha and any("unreachable" in n for n in test.notes)
    assert stats.min_wilcoxon_p(5) == 0.0625 and stats.min_wilcoxon_p(6) == 0.03125
    assert stats.min_wilcoxon_p(2000) == 0.0  # a study of 2000 subjects: 2 / 2**2000 is below any float
    # differences 1, -2, 3, 4, 5, 6: W- = 2; rank subsets with sum <= 2 are {}, {1}, {2} → p = 2 · 3 / 64
    d = np.array([1, -2, 3, 4, 5, 6], dtype=float)
    test = stats.paired_test(d, np.zeros(6))
    assert test.wilcoxon_p == pytest.approx(2 * 3 / 64)
    assert test.can_reach_alpha and test.n == 6


def test_paired_t_test_by_hand():
    # df = 1 (Cauchy): differences 1, 3 → t = 2 / (√2 / √2) = 2, p = 1 − (2/π)·atan(2)
    test = stats.paired_test([1.0, 3.0], [0.0, 0.0])
    assert test.t_statistic == pytest.approx(2.0)
    assert test.ttest_p == pytest.approx(1 - 2 / math.pi * math.atan(2.0))
    # df = 2: differences 1, 2, 3 → t = 2 / (1 / √3), p = 1 − t / √(2 + t²)
    test = stats.paired_test([1.5, 2.5, 3.5], [0.5, 0.5, 0.5])
    t = 2 * math.sqrt(3)
    assert test.t_statistic == pytest.approx(t)
    assert test.ttest_p == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert test.mean_difference == pytest.approx(2.0)


def test_corrected_resampled_t_by_hand():
    """Nadeau & Bengio (2003) / Bouckaert & Frank (2004): t = mean(d) / √((1/J + n_test/n_train) · s²), df = J − 1.

    d = 0.02, 0.04, 0.00, 0.06, 0.03: mean 0.03, squared deviations 1, 1, 9, 9, 0 (× 1e-4), s² = 20e-4 / 4 = 5e-4.
    With n_test/n_train = 1/4: (1/5 + 1/4) · 5e-4 = 2.25e-4, √ = 0.015, t = 2. For df = 4 and θ = atan(t / 2),
    P(|T| < t) = sin θ (1 + cos² θ / 2); t = 2 gives θ = 45°, so p = 1 − (√2/2)(1 + 1/4) = 1 − 5√2/8.
    The naive t-test (no 1/4 term): √(5e-4 / 5) = 0.01, t = 3, tan θ = 3/2, p = 1 − (3/√13)(1 + 2/13).
    """
    d = [0.02, 0.04, 0.00, 0.06, 0.03]
    t, p = stats.corrected_resampled_t(d, 0.25)
    assert t == pytest.approx(2.0) and p == pytest.approx(1 - 5 * math.sqrt(2) / 8)
    test = stats.paired_test(np.array(d) + 0.5, np.full(5, 0.5), ratio=0.25)
    assert test.corrected_t == pytest.approx(2.0) and test.corrected_p == pytest.approx(1 - 5 * math.sqrt(2) / 8)
    assert test.t_statistic == pytest.approx(3.0) and test.ttest_p == pytest.approx(1 - 3 / math.sqrt(13) * 15 / 13)
    assert test.ttest_p < 0.05 < test.corrected_p  # the naive test calls a difference the corrected one does not
    assert all(math.isnan(v) for v in stats.corrected_resampled_t([0.1, 0.1, 0.1], 0.25))  # no variance, no test
    assert math.isnan(stats.paired_test(d, np.zeros(5)).corrected_p)  # no ratio given: not computed


def test_naive_p_shrinks_with_repeated_folds_the_corrected_one_stays_above_it():
    """Three seeds that re-draw five folds test each subject three times: the naive paired
    t-test counts 15 independent values and its p collapses, though no new subject was tested."""
    rng = np.random.default_rng(0)
    once = rng.normal(0.01, 0.03, 5)
    repeated = np.concatenate([once + rng.normal(0, 0.005, 5) for _ in range(3)])  # the same subjects, re-drawn folds
    baseline = np.full(15, 0.7)
    single = stats.paired_test(0.7 + once, baseline[:5], ratio=0.25)
    three = stats.paired_test(0.7 + repeated, baseline, ratio=0.25)
    assert three.ttest_p < single.ttest_p  # repetition alone makes the naive test more confident
    assert three.ttest_p < three.corrected_p and single.ttest_p < single.corrected_p


def test_holdout_ratio_from_the_run_or_its_folds():
    assert stats.holdout_ratio({"holdout_ratio": 0.3, "folds": 5}) == 0.3
    assert stats.holdout_ratio({"folds": 5}) == 0.25  # k-fold: 1 / (k − 1), for summaries written before the ratio
    assert stats.holdout_ratio({"folds": 1}) is None and stats.holdout_ratio({}) is None


def test_paired_tests_never_crash_on_degenerate_input():
    same = stats.paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.wilcoxon_p == 1.0 and same.ttest_p == 1.0 and same.mean_difference == 0.0
    constant = stats.paired_test([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])  # t undefined (zero variance)
    assert math.isnan(constant.ttest_p) and any("all equal" in n for n in constant.notes)
    assert constant.wilcoxon_p == pytest.approx(0.25)  # 3 positive differences: 2 / 2**3
    with_nan = stats.paired_test([0.6, math.nan, 0.8, 0.9], [0.5, 0.6, math.nan, 0.7])
    assert with_nan.n == 2 and any("dropped" in n for n in with_nan.notes)
    empty = stats.paired_test([math.nan], [0.5])
    assert empty.n == 0 and math.isnan(empty.wilcoxon_p) and stats.format_p(empty.wilcoxon_p) == "n/a"
    single = stats.paired_test([0.6], [0.5])
    assert single.wilcoxon_p == 1.0 and math.isnan(single.ttest_p)


def test_row_stats_on_a_summary():
    def entry(values):
        return {"mean": float(np.mean(values)), "std": 0.0, "per_fold": values}

    summary = {"task": "classification", "metric": "accuracy", "folds": 3, "methods": {
        "baseline": {"accuracy": entry([0.6, 0.6, 0.7]), "f1": entry([0.5, 0.5, 0.5])},
        "teacher": {"accuracy": entry([0.8, 0.8, 0.9])},
        "pkdot": {"accuracy": entry([0.7, 0.7, 0.8])},
    }}
    rows = {r.row: r for r in stats.row_stats(summary, baseline="baseline", teacher="teacher")}
    assert list(rows) == ["baseline", "teacher", "pkdot"]
    assert rows["baseline"].test is None and math.isnan(rows["baseline"].gap_closed)
    assert rows["pkdot"].gap_closed == pytest.approx(50.0)
    assert rows["pkdot"].gap_closed_per_fold == pytest.approx([50.0, 50.0, 50.0])
    assert rows["pkdot"].test.mean_difference == pytest.approx(0.1)
    assert math.isnan(rows["teacher"].gap_closed) and rows["teacher"].test is not None
    assert rows["pkdot"].metrics["accuracy"] == pytest.approx((0.7333333, 0.0577350, 3))
    assert stats.headline_metric({"task": "regression", "methods": {"a": {"ccc": {}}}}) == "ccc"


def test_gap_against_amids_own_teacher_without_a_teacher_row():
    def entry(values):
        return {"mean": float(np.mean(values)), "std": 0.0, "per_fold": values}

    summary = {"task": "classification", "methods": {
        "baseline": {"accuracy": entry([0.6, 0.7])},
        "amid": {"accuracy": entry([0.7, 0.8]), "teacher_accuracy": entry([0.8, 0.9])},
    }}
    amid = stats.row_stats(summary, baseline="baseline", teacher="teacher")[1]
    assert amid.gap_reference == "teacher_accuracy" and amid.gap_closed == pytest.approx(50.0)


# --------------------------------------------------------------------------- figures on synthetic data


def test_figures_without_data_are_skipped():
    assert plots.teacher_selection({}) is None
    assert plots.amid_gap({"amid": [[]]}) is None
    assert plots.sweep_curves([], ["a", "b"], "mtpkdot", "accuracy") is None
    assert plots.per_class_accuracy({}) is None
    assert training_curves({}) is None and training_curves({"pkdot": {0: {"epoch": []}}}) is None


def test_training_curves_star_the_selected_epoch_and_show_validation_loss():
    log = {"epoch": [0, 1, 2, 3], "train/loss": [1.0, 0.8, 0.6, 0.5], "val/loss": [1.1, 0.9, 0.95, 1.0],
           "val/selection": [0.5, 0.7, 0.7, 0.6]}
    fig = training_curves({"pkdot": {0: log}})
    loss_ax, val_ax = fig.axes[:2]
    (star,) = [line for line in val_ax.lines if line.get_marker() == "*"]
    assert list(star.get_xdata()) == [2] and list(star.get_ydata()) == [0.7]  # epoch 2 (1-based): the first of the ties
    dotted = [line for line in loss_ax.lines if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and list(dotted[0].get_ydata()) == log["val/loss"]


def test_similarity_figure_maps_the_teacher_student_differences():
    rng = np.random.default_rng(0)
    teacher, student = rng.uniform(-1, 1, (6, 6)), rng.uniform(-1, 1, (5, 6, 6))
    fig = plots.similarity_evolution(teacher, student, np.arange(6) % 2, "pkdot")
    maps = [ax.images[0].get_array() for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "magma"]
    shown = plots.similarity_epochs(4)
    assert len(maps) == len(shown)
    np.testing.assert_allclose(maps[-1], np.abs(teacher - student[shown[-1]]))


def test_sweep_amid_and_regression_figures():
    points = [{"params": {"training.batch_size": b, "structural.k": k}, "objective": 0.5,
               "test": {"mtpkdot": {"accuracy": 0.5 + b / 1000 + k / 100}}} for b in (16, 32, 64) for k in (5, 10)]
    fig = plots.sweep_curves(points, ["training.batch_size", "structural.k"], "mtpkdot", "accuracy")
    assert fig is not None and len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    gap = [{"teacher": 0.5 + e / 10, "student": 0.4 + e / 10, "lambda_1": 1.0, "lambda_2": 0.0} for e in range(4)]
    assert plots.amid_gap({"amid": [gap, gap[:3]]}) is not None
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(50, 2))
    assert plots.regression_scatter({"baseline": (truth + 0.1, truth)}, ["valence", "arousal"]) is not None
    assert plots.similarity_epochs(10) == [0, 5, 8, 10] and plots.similarity_epochs(1) == [0, 1]
    targets = rng.normal(size=(12, 2))  # regression probe: markers by tercile of the first target
    views = {v: rng.normal(size=(12, 8)) for v in ("joint", "accelerometer")}
    assert plots.alignment_tsne(views, views, targets) is not None
    sim = np.eye(12)
    assert plots.similarity_evolution(sim, np.stack([sim] * 3), targets, "pkdot") is not None


def test_results_table_marks_the_reference_rows_it_is_given():
    from privkd.report import tables

    def entry(values):
        return {"mean": float(np.mean(values)), "std": 0.0, "per_fold": values}

    summary = {"task": "classification", "methods": {
        "low": {"accuracy": entry([0.6, 0.7])}, "high": {"accuracy": entry([0.8, 0.9])},
        "student": {"accuracy": entry([0.7, 0.8])},
    }}
    _, table, _ = tables.results_table(summary, baseline="low", teacher="high")
    gap = table.header.index("Gap closed (Accuracy)")
    assert [row[gap] for row in table.rows] == ["—", "—", "50.0 %"]
    online = {"task": "classification", "methods": {
        "low": {"accuracy": entry([0.6, 0.7])},
        "student": {"accuracy": entry([0.7, 0.8]), "teacher_accuracy": entry([0.8, 0.9])},
    }}
    _, table, row_stats = tables.results_table(online, baseline="low", teacher="high")
    assert table.rows[1][table.header.index("Gap closed (Accuracy)")] == "50.0 % †"
    assert any(n.startswith("No teacher row") and "teacher_accuracy" in n
               for n in tables.notes(online, row_stats, baseline="low", teacher="high"))
    assert any(n.startswith("No baseline row") for n in tables.notes(online, row_stats, baseline=None, teacher=None))


def _hand_written_run(root: Path, methods: dict[str, str]) -> Path:
    """A finished run of one fold with no arrays: each row's ``metrics.json`` names its method."""
    run = root / "run"
    for row, method in methods.items():
        (run / "fold_0" / row).mkdir(parents=True)
        (run / "fold_0" / row / "metrics.json").write_text(json.dumps({"fold": 0, "row": row, "method": method}))
    scores = {"accuracy": {"mean": 0.5, "std": 0.0, "per_fold": [0.5]}}
    (run / "summary.json").write_text(json.dumps({"task": "classification", "folds": 1,
                                                  "methods": {row: scores for row in methods}}))
    return run


def test_a_registered_methods_figures_are_drawn_for_its_rows(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from privkd.evaluation.artifacts import FigureSpec
    from privkd.methods import registry
    from privkd.methods.base import PrivkdModule
    from privkd.report import build_report

    registry.specs()  # the built-in methods register before the registry is swapped for a copy
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    drawn_for = []

    def draw(rows, context):
        drawn_for.append(([row.row for row in rows], [row.method() for row in rows], context.task))
        fig = Figure(figsize=(2, 2))
        fig.add_subplot().plot([0, 1], [0, 1])
        return fig

    together = FigureSpec("probe_all", "Probe figure", "Both probe rows.", draw, "nothing to draw")
    each = FigureSpec("probe", "Probe per row", "One probe row.", draw, "nothing to draw", per_row=True)
    empty = FigureSpec("probe_empty", "Probe nothing", "Never drawn.", lambda rows, context: None,
                       "the probe recorded nothing")
    orphan = FigureSpec("orphan", "Orphan figure", "No row feeds it.", draw, "no orphan records")
    registry.register_method("report_test_probe", role="baseline", figures=(together, each, empty))(PrivkdModule)
    registry.register_method("report_test_orphan", role="baseline", figures=(orphan,))(PrivkdModule)
    run = _hand_written_run(tmp_path, {"probe_a": "report_test_probe", "other": "not_registered",
                                       "probe_b": "report_test_probe"})

    paths = build_report(run)
    md = paths.markdown.read_text()
    probe = ["report_test_probe"]
    assert drawn_for == [(["probe_a", "probe_b"], probe * 2, "classification"),
                         (["probe_a"], probe, "classification"), (["probe_b"], probe, "classification")]
    assert {p.name for p in paths.figures} == {"probe_all.png", "probe_probe_a.png", "probe_probe_b.png"}
    for title in ("Probe figure", "Probe per row: probe_a", "Probe per row: probe_b"):
        assert f"### {title}" in md
    not_drawn = md.split("### Figures not drawn", 1)[1]
    assert "- Probe nothing: the probe recorded nothing" in not_drawn and "### Probe nothing" not in md
    assert "- Orphan figure: no orphan records (no report_test_orphan row in the run)" in not_drawn
    assert paths.html.read_text().count('src="data:image/png;base64,') == 3


# --------------------------------------------------------------------------- a tiny real run

METHODS = ["baseline", "teacher", "mt_teacher", "pkdot", "mtpkdot"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, watch_path) -> Path:
    from privkd.config.loading import config_from_dict
    from privkd.training.experiment import run_experiment

    cfg = config_from_dict({
        "name": "tiny-report", "methods": METHODS, "evaluation": {"max_folds": 2},
        "training": {"epochs": 2, "progress_bar": False, "limit_train_batches": 2, "batch_size": 64},
        "model": {"embed_dim": 16, "fusion_dim": 32},  # small and few batches: the report, not the scores, is tested
        "teacher": {"tnet_refit_epochs": 1},
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRIVKD_CACHE", str(watch_path.parent))
        return run_experiment(cfg, tmp_path_factory.mktemp("runs")).run_dir


@pytest.fixture(scope="module")
def report_out(tiny_run, tmp_path_factory) -> Path:
    """The report written through the CLI command into a separate directory."""
    from typer.testing import CliRunner

    from privkd.cli import app

    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["report", str(tiny_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "report.md" in result.output and "report.html" in result.output
    return out


def test_report_files(tiny_run, report_out):
    md = (report_out / "report.md").read_text()
    page = (report_out / "report.html").read_text()
    assert not (tiny_run / "report").exists()  # --out takes the figures too
    pngs = sorted((report_out / "report").glob("*.png"))
    names = {p.stem for p in pngs}
    assert {"per_class_accuracy", "confusion_matrices", "similarity_pkdot", "similarity_mtpkdot", "alignment_tsne",
            "teacher_selection", "training_curves"} <= names
    for method in METHODS:
        assert re.search(rf"^\| {method} \|", md, flags=re.MULTILINE)
    assert "Runs of cross-validation are not independent samples" in md and "Gap closed (Macro-F1)" in md
    for png in pngs:  # markdown links resolve from the report's own directory
        link = re.search(rf"\]\(([^)]*{png.name})\)", md).group(1)
        assert (report_out / link).resolve() == png.resolve()
    # self-contained: every image inline, nothing fetched from anywhere
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert not re.search(r'(src|href)="(?!data:)', page) and "<link" not in page
    assert not list(report_out.glob(".*.tmp")) and not list((report_out / "report").glob(".*.tmp"))


def test_a_real_runs_report_has_print_figures_and_a_latex_table_of_its_results(report_out):
    from PIL import Image

    from privkd.report.latex import tex_escape

    for png in (report_out / "report").glob("*.png"):
        assert Image.open(png).info["dpi"] == pytest.approx((300, 300), abs=0.01)
        assert png.with_suffix(".pdf").is_file() and png.with_suffix(".svg").is_file()
    tex = (report_out / "report" / "results.tex").read_text()
    md = (report_out / "report.md").read_text()
    comparison = md.split("### Against the baseline", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in comparison.splitlines()[2:]]
    assert [row[0].split()[0] for row in rows] == METHODS
    for method, *_, wilcoxon, corrected in rows:  # the report's own cells: name, ..., the two p-values
        (line,) = [line for line in tex.splitlines() if line.startswith(tex_escape(method) + " &")]
        assert line.endswith(f"& {tex_escape(wilcoxon)} & {tex_escape(corrected)} \\\\")
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert "](report/results.tex)" in md


def test_diagnostics_table_averages_each_folds_record(tiny_run, report_out):
    import json

    import numpy as np

    md = (report_out / "report.md").read_text()
    records = [json.loads(p.read_text()) for p in sorted(tiny_run.glob("fold_*/pkdot/metrics.json"))]
    before = np.mean([r["structure_test"]["before"]["anchor_mad"] for r in records])
    after = np.mean([r["structure_test"]["after"]["ot"] for r in records])
    row = re.search(r"^\| structure: pkdot \|(.*)\|$", md, flags=re.MULTILINE).group(1).split("|")
    assert float(row[0]) == pytest.approx(before, abs=5e-5) and float(row[3]) == pytest.approx(after, abs=5e-5)
    r2 = np.mean([json.loads(p.read_text())["tnet_test"]["r2"] for p in tiny_run.glob("fold_*/teacher/metrics.json")])
    assert re.search(rf"^\| T-Net \(teacher\) \|.*\| {r2:.4f} \|", md, flags=re.MULTILINE)
    assert 'id="diagnostics"' in (report_out / "report.html").read_text()


def test_a_study_draws_figures_from_its_first_seeds_run(tmp_path, tiny_run):
    from privkd.report import build_report, figure_run

    study = tmp_path / "study"
    for seed in (10, 2):  # numeric order, not the order of names
        shutil.copytree(tiny_run, study / f"seed_{seed}" / tiny_run.name)
    summary = json.loads((tiny_run / "summary.json").read_text())
    (study / "summary.json").write_text(json.dumps({**summary, "seeds": [2, 10]}))
    assert figure_run(study) == study / "seed_2" / tiny_run.name and figure_run(tiny_run) == tiny_run
    md = build_report(study).markdown.read_text()
    assert "seeds [2, 10]" in md and "### Similarity matrices: pkdot" in md and "| structure: pkdot |" in md


def test_missing_or_incomplete_run_dir(tmp_path, tiny_run):
    from typer.testing import CliRunner

    from privkd.cli import app
    from privkd.report import build_report

    with pytest.raises(PrivkdError, match="not found"):
        build_report(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_run / "fold_0" / "baseline", partial / "fold_0" / "baseline",
                    ignore=shutil.ignore_patterns("*.pt", "*.ckpt"))
    with pytest.raises(PrivkdError, match=r"summary\.json is missing: the run is incomplete") as err:
        build_report(partial)
    assert "Fix:" in str(err.value)
    with pytest.raises(PrivkdError, match=r"sweep\.json is missing"):
        build_report(tiny_run, sweep_dir=tmp_path)
    result = CliRunner().invoke(app, ["report", str(partial)])
    assert result.exit_code == 2 and "summary.json" in result.output


# --------------------------------------------------------------------------- headless Chromium

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless-capable Chromium; installed with apt (Debian package ``chromium``) when missing."""
    found = _find_chromium()
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("Chromium is not installed and cannot be installed here (needs root and apt-get): "
                    "install the Debian package `chromium` to run the browser check")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = ""
    for command in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
            log = done.stderr[-500:]
        except (OSError, subprocess.TimeoutExpired) as err:
            log = str(err)
        if command[1] == "install" and _find_chromium():
            return _find_chromium()
    pytest.skip(f"Chromium is not installed and `apt-get install -y chromium` failed: {log.strip()}")


CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var rows = Array.prototype.slice.call(document.querySelectorAll("#results tbody tr"));
  var result = {
    images: images.length,
    loaded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    broken: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; }),
    shown: images.map(function (i) { return [i.alt, i.clientWidth, Number(i.getAttribute("width"))]; }),
    rows: rows.map(function (r) { return r.getAttribute("data-method"); }),
    overflowing: Array.prototype.slice.call(document.querySelectorAll("table"))
      .filter(function (t) { return t.scrollWidth > t.clientWidth + 1; }).map(function (t) { return t.id; }),
    width: window.innerWidth,
    resources: performance.getEntriesByType("resource").map(function (e) { return e.name; })
      .filter(function (n) { return n.indexOf("data:") !== 0; })
  };
  var out = document.createElement("pre");
  out.id = "privkd-check";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


WIDTH = 1300
"""The browser window the report must fit: every table readable without a horizontal scrollbar."""


def render_check(chromium: str, page: Path, work: Path) -> dict:
    """Load ``page`` (with a checking script appended) in headless Chromium and return what the
    script found after ``window.onload``: image counts, results-table rows, external requests."""
    probe = work / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    command = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=10000", f"--window-size={WIDTH},1000", "--dump-dom", probe.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="privkd-check">(.*?)</pre>', done.stdout, flags=re.DOTALL)
    assert found, f"no check result in the dumped DOM (exit {done.returncode}): {done.stderr[-1000:]}"
    import html

    return json.loads(html.unescape(found.group(1)))


def test_report_renders_in_headless_chromium(chromium, tiny_run, report_out, tmp_path):
    start = time.perf_counter()
    result = render_check(chromium, report_out / "report.html", tmp_path)
    seconds = time.perf_counter() - start
    n_figures = len(list((report_out / "report").glob("*.png")))
    assert result["images"] == n_figures > 0
    assert result["loaded"] == result["images"], f"images that did not load: {result['broken']}"
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert result["rows"] == list(summary["methods"]) == METHODS
    assert result["resources"] == []
    assert result["width"] == WIDTH and result["overflowing"] == []  # the p-value columns are in sight
    assert seconds < 60
    shown = {alt: (width, intended) for alt, width, intended in result["shown"]}
    width, intended = shown["Confusion matrices"]
    assert width == intended > 0  # at 100 px per inch, not shrunk: the 11-pt shares are about 15 px on screen


def test_chromium_check_detects_a_table_wider_than_the_window(chromium, tmp_path):
    page = tmp_path / "wide.html"
    cells = "".join(f"<td>{'0.8021 ± 0.0534 ' * 3}</td>" for _ in range(12))
    page.write_text(f'<!DOCTYPE html><html><head><style>{CSS}</style></head><body><table id="wide"><tbody><tr>{cells}'
                    "</tr></tbody></table></body></html>")
    assert render_check(chromium, page, tmp_path)["overflowing"] == ["wide"]


def test_chromium_check_detects_a_broken_image(chromium, tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><table id="results"><tbody><tr data-method="a"></tr></tbody></table>'
                    '<img alt="bad" src="data:image/png;base64,AAAA"></body></html>')
    result = render_check(chromium, page, tmp_path)
    result.pop("shown")
    assert result == {"images": 1, "loaded": 0, "broken": ["bad"], "rows": ["a"], "overflowing": [], "width": WIDTH,
                      "resources": []}


@pytest.mark.parametrize("n_classes", [2, 4])
def test_per_subject_metrics_from_counts_match_score_subject_by_subject(n_classes):
    """The per-group confusion counts give each subject what one score() call on its samples gives,
    subjects lacking a class or predicting one that is absent included."""
    import torch

    from privkd.evaluation.metrics import per_group_metric, score

    generator = torch.Generator().manual_seed(n_classes)
    outputs = torch.randn(60, n_classes, generator=generator)
    labels = torch.randint(0, n_classes, (60,), generator=generator)
    subjects = np.repeat([f"s{i}" for i in range(12)], 5)
    for metric in ("accuracy", "ua", "f1"):
        got = per_group_metric("classification", outputs, labels, subjects, metric, n_classes)
        for subject in np.unique(subjects):
            mask = torch.as_tensor(subjects == subject)
            expected = score("classification", outputs[mask], labels[mask], n_outputs=n_classes)[metric]
            assert got[subject] == pytest.approx(expected, abs=1e-6), (metric, subject)
