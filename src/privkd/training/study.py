"""``privkd study``: every method tuned on validation subjects only, over several seeds.

For each seed the config is run once with every candidate setting of ``study.search`` as an
extra row (a variant of its method). Inside each (seed, fold), each method's setting is the
candidate with the best *validation* score on that fold's validation subjects; its test score
on the fold's unseen subjects is then read once. Test subjects therefore never influence any
choice: not the epoch (validation), not the hyper-parameters (validation). The study's
``summary.json`` has one value per (seed, fold) for every method (``per_run``), which the
report turns into mean ± std, gap closed and paired tests across folds × seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from privkd.config.parse import config_to_dict
from privkd.config.schema import LEAKS, RunConfig, VariantConfig
from privkd.config.validation import validate
from privkd.errors import ConfigError
from privkd.evaluation.metrics import resolve_metric
from privkd.evaluation.stats import (
    describe_paired_tests,
    format_p,
    format_percent,
    holdout_ratio,
    row_stats,
)
from privkd.evaluation.subjects import subject_scores
from privkd.evaluation.summary import (
    DEPARTURE_MARK,
    departure_lines,
    leak_line,
    marked_row,
    metric_label,
    scored_on,
)
from privkd.methods.registry import bound_row
from privkd.training.experiment import check_before_run, run_experiment
from privkd.training.run_dir import create_run_dir, write_json_atomic, write_text_atomic

ProgressCallback = Callable[[str], None]


def candidate_name(method: str, setting: Mapping[str, Any]) -> str:
    return f"{method}[" + ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in setting.items()) + "]"


def candidate_variants(cfg: RunConfig) -> dict[str, VariantConfig]:
    """One variant per point of each method's search grid (``study.search.<method>.<key>: [values]``)."""
    variants = {}
    for method, grid in cfg.study.search.items():
        if method not in cfg.methods:
            raise ConfigError(f"study.search.{method}", "not one of this config's methods", f"use some of {list(cfg.methods)}")
        for values in itertools.product(*grid.values()):
            setting = dict(zip(grid, values))
            variants[candidate_name(method, setting)] = VariantConfig(method=method, set=setting)
    return variants


def seed_run_dir(study_dir: Path, seed: int) -> Path:
    """The run directory of one seed (``seed_<s>/<timestamp>-<name>``)."""
    runs = sorted(p for p in (study_dir / f"seed_{seed}").glob("*") if (p / "summary.json").is_file())
    if not runs:
        raise ConfigError(str(study_dir), f"seed {seed} has no finished run", "run the study again (or wait for it to finish)")
    return runs[-1]


def fold_records(run_dir: Path) -> list[dict[str, dict]]:
    """Per fold (in order), every trained row's ``metrics.json``, keyed by row name in the order
    of the run's summary (the rows it trained, those its switches added included)."""
    rows = list(json.loads((run_dir / "summary.json").read_text())["methods"])
    folds = sorted(run_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    return [{row: json.loads((fold / row / "metrics.json").read_text())
             for row in rows if (fold / row / "metrics.json").is_file()} for fold in folds]


def choose(records: list[dict[str, dict]], metric: str, candidates: Mapping[str, VariantConfig]) -> dict[str, list[dict]]:
    """Per row and fold: among the row and its search ``candidates``, the one with the best
    validation score, with its test metrics and held-out diagnostics. A config's own variants
    are rows of their own (a control such as ``beta = 0`` must not compete with its method's
    candidates)."""
    key = f"val/{metric}"
    chosen: dict[str, list[dict]] = {}
    for fold in records:
        by_row: dict[str, list[dict]] = {}
        for row, record in fold.items():  # the row's own defaults come first and win ties
            by_row.setdefault(candidates[row].method if row in candidates else row, []).append(record)
        for row, options in by_row.items():
            best = max(options, key=lambda r: r["validation"][key])
            chosen.setdefault(row, []).append({"fold": best["fold"], "row": best["row"], "validation": best["validation"][key],
                                               "test": best["test"], **{k: best[k] for k in DIAGNOSTICS if k in best}})
    return chosen


def study_summary(task: str, seeds: list[int], picks: Mapping[int, Mapping[str, list[dict]]]) -> dict:
    """A ``summary.json`` over (seed, fold) runs: ``per_run`` values and their mean ± std."""
    methods: dict[str, dict[str, dict]] = {}
    for method in picks[seeds[0]]:
        runs = [pick for seed in seeds for pick in picks[seed].get(method, [])]
        for metric in runs[0]["test"]:
            values = np.array([run["test"][metric] for run in runs], dtype=float)
            methods.setdefault(method, {})[metric] = {
                "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "per_run": values.tolist(), "runs": [f"seed {seed}, fold {p['fold']}" for seed in seeds
                                                     for p in picks[seed].get(method, [])]}
    return {"task": task, "seeds": seeds, "methods": methods}


def run_study(cfg: RunConfig, out_root: str | Path, progress: ProgressCallback = lambda _: None) -> Path:
    """Run every seed, then choose each method's setting per fold on validation scores and write the study.

    Every seed's config is checked, on its own and against the dataset, before the study
    directory exists: a search key that names no row, or a backbone that does not take its
    modality, fails here, not after an empty study directory was made."""
    seeds = study_seeds(cfg)
    seed_configs = [seed_config(cfg, seed) for seed in seeds]
    for seed_cfg in seed_configs:  # against the dataset too (a synthetic task draws one per seed)
        check_before_run(seed_cfg)
    study_dir = create_run_dir(out_root, f"{cfg.name}-study")
    write_text_atomic(study_dir / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    for number, (seed, seed_cfg) in enumerate(zip(seeds, seed_configs), start=1):
        progress(f"seed {seed} ({number}/{len(seeds)})")
        run_experiment(seed_cfg, study_dir / f"seed_{seed}", progress)
    write_study(study_dir, cfg)
    return study_dir


def study_seeds(cfg: RunConfig) -> list[int]:
    return [cfg.seed + i for i in range(cfg.study.seeds)]


def seed_config(cfg: RunConfig, seed: int) -> RunConfig:
    """The run of one seed: the config with every search candidate as an extra row."""
    return validate(dataclasses.replace(cfg, seed=seed, variants={**cfg.variants, **candidate_variants(cfg)}))


def write_study(study_dir: Path, cfg: RunConfig) -> None:
    """``summary.json``, ``choices.json`` and ``study.md`` from the seeds' finished runs on disk
    (so a study's tables can be written again by newer code without training anything)."""
    candidates = candidate_variants(cfg)
    seeds = study_seeds(cfg)
    records: dict[int, list[dict[str, dict]]] = {}
    run_dirs = {seed: seed_run_dir(study_dir, seed) for seed in seeds}
    run_summaries = {seed: json.loads((run_dir / "summary.json").read_text()) for seed, run_dir in run_dirs.items()}
    task, teachers, ratios, folds = "classification", {}, [], None
    for seed, run_summary in run_summaries.items():
        task, teachers = run_summary["task"], {**run_summary.get("teachers", {}), **teachers}
        folds = run_summary.get("folds", folds)
        ratios.append(holdout_ratio(run_summary))
        records[seed] = fold_records(run_dirs[seed])
    metric = resolve_metric(cfg.evaluation.metric, task)
    picks = {seed: choose(records[seed], metric, candidates) for seed in seeds}
    summary = study_summary(task, seeds, picks)
    summary["metric"] = metric
    summary["folds"] = folds
    summary["independence"] = run_summary.get("independence")  # one dataset: the same in every seed's run
    summary["holdout_ratio"] = None if None in ratios else float(np.mean(ratios))
    summary["leaks"] = run_summaries[seeds[0]].get("leaks", [])  # the same evaluation settings in every seed
    summary["departures"] = chosen_departures({seed: run_summaries[seed].get("departures", {}) for seed in seeds}, picks)
    # a dataset drawn anew for every seed (synthetic:<setup>): the seeds' runs share no sample, so they are
    # independent (the corrected t-test's overlap term is 0) and subjects of one name are not one person
    summary["independent_datasets"] = len({data_file(run_dir) for run_dir in run_dirs.values()}) > 1
    if summary["independent_datasets"]:
        summary["holdout_ratio"] = 0.0
    # folds over samples test every subject in every fold: there is no one score per subject and seed
    shared = LEAKS["sample_folds"] in summary["leaks"] or summary["independent_datasets"]
    summary["subjects"] = {} if shared else subject_means({seed: subject_picks(run_dirs[seed], picks[seed], task, metric)
                                                           for seed in seeds})
    # each run's own record: rows its switches added (the teacher_init control) are in no config's variants
    summary["teachers"] = {row: teachers.get(row) for row in summary["methods"]}
    write_json_atomic(study_dir / "summary.json", summary)
    write_json_atomic(study_dir / "choices.json", {str(seed): picks[seed] for seed in seeds})
    write_text_atomic(study_dir / "study.md", study_markdown(cfg, summary, picks, records))


def data_file(run_dir: Path) -> str | None:
    """The data file a run read (its ``environment.json``), None when it did not record one."""
    try:
        return json.loads((run_dir / "environment.json").read_text()).get("data_path")
    except (OSError, ValueError):
        return None


def chosen_departures(departures: Mapping[int, Mapping[str, Mapping[str, dict]]],
                      picks: Mapping[int, Mapping[str, list[dict]]]) -> dict[str, dict[str, dict]]:
    """Per study row, its paper's settings that any row chosen for it departs from, in the run
    summaries' form (``{key: {"used", "paper"}}``, as the method registry's
    :meth:`~privkd.methods.registry.MethodSpec.departures` gives them), ``used`` listing every
    value the chosen rows used."""
    used: dict[str, dict[str, dict[str, Any]]] = {}
    for seed, by_method in picks.items():
        for method, chosen in by_method.items():
            for pick in chosen:
                for key, departure in departures[seed].get(pick["row"], {}).items():
                    entry = used.setdefault(method, {}).setdefault(key, {"used": [], "paper": departure["paper"]})
                    if departure["used"] not in entry["used"]:
                        entry["used"].append(departure["used"])
    return {method: {key: {"used": entry["used"][0] if len(entry["used"]) == 1 else entry["used"], "paper": entry["paper"]}
                     for key, entry in by_key.items()} for method, by_key in used.items()}


def subject_picks(run_dir: Path, picks: Mapping[str, list[dict]], task: str, metric: str) -> dict[str, dict[str, float]]:
    """Per method, per subject: the headline ``metric`` on that subject's test samples, from the
    row chosen (:func:`choose`) in the fold of ``run_dir`` that tested the subject; a subject whose
    chosen row kept no test predictions is absent."""
    rows = sorted({pick["row"] for chosen in picks.values() for pick in chosen})
    scores = subject_scores(run_dir, rows, task, metric)
    out: dict[str, dict[str, float]] = {}
    for method, chosen in picks.items():
        for pick in chosen:
            for subject, (fold, value) in scores.get(pick["row"], {}).items():
                if fold == pick["fold"]:
                    out.setdefault(method, {})[subject] = value
    return out


def subject_means(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Per method, per subject: the mean of the subject's scores over the seeds that scored it
    (NaN scores left out), so that a subject tested once per seed counts once in a paired test
    across subjects (:func:`privkd.evaluation.stats.row_stats`)."""
    collected: dict[str, dict[str, list[float]]] = {}
    for by_method in per_seed.values():
        for method, by_subject in by_method.items():
            for subject, value in by_subject.items():
                collected.setdefault(method, {}).setdefault(subject, []).append(value)
    return {method: {subject: float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
                     for subject, values in sorted(by_subject.items())}
            for method, by_subject in collected.items()}


DIAGNOSTICS = ("tnet_test", "structure_test")
"""Held-out diagnostics a run records per (fold, row), carried into the study's choices."""


def study_markdown(cfg: RunConfig, summary: Mapping, picks: Mapping[int, Mapping[str, list[dict]]],
                   records: Mapping[int, list[dict[str, dict]]]) -> str:
    stats = row_stats(summary, baseline=bound_row("lower"), teacher=bound_row("upper"))
    metric = stats[0].headline if stats else "accuracy"
    n = len(next(iter(summary["methods"].values()))[metric]["per_run"]) if summary["methods"] else 0
    lines = [f"# Study: {cfg.name}", "",
             (f"{len(summary['seeds'])} seed(s) × {n // max(len(summary['seeds']), 1)} fold(s), scored on "
              f"{scored_on(summary)}. Each method's setting was chosen per fold on the validation part only; the "
              "test part was scored once with the chosen setting."), "",
             *([leak_line(summary["leaks"]), ""] if summary.get("leaks") else []),
             (f"| method | {metric_label(metric)} (mean ± std over runs) | gap closed | Wilcoxon p "
              f"({'runs' if summary.get('independent_datasets') else 'subjects'}) | corrected t-test p | settings chosen |"),
             "|---|---|---|---|---|---|"]
    for row in stats:
        mean, std, _ = row.metrics[metric]
        counts = Counter(pick["row"] for seed in picks for pick in picks[seed].get(row.row, []))
        chosen = ", ".join(f"{name} ×{count}" for name, count in counts.most_common())
        wilcoxon_test = row.test if summary.get("independent_datasets") else row.subject_test
        wilcoxon = format_p(wilcoxon_test.wilcoxon_p) if wilcoxon_test else "—"
        ttest = format_p(row.test.corrected_p) if row.test else "—"
        lines.append(f"| {marked_row(summary, row.row)} | {mean:.4f} ± {std:.4f} | {format_percent(row.gap_closed)} "
                     f"| {wilcoxon} | {ttest} | {chosen} |")
    departures = departure_lines(summary)
    lines += ["", describe_paired_tests(summary, stats)]
    if departures:
        lines += ["", f"{DEPARTURE_MARK} Departs from its paper's settings:", "", *[f"- {line}" for line in departures]]
    lines += ["", *candidate_lines(picks, records, metric), "", *diagnostic_lines(picks)]
    return "\n".join(lines) + "\n"


def candidate_lines(picks: Mapping[int, Mapping[str, list[dict]]], records: Mapping[int, list[dict[str, dict]]],
                    metric: str) -> list[str]:
    """Every trained row: its mean validation score (what the choice saw) and, for transparency
    only, its mean test score had it always been chosen, with how often it was chosen."""
    key = f"val/{metric}"
    validation: dict[str, list[float]] = {}
    test: dict[str, list[float]] = {}
    for folds in records.values():
        for fold in folds:
            for row, record in fold.items():
                validation.setdefault(row, []).append(record["validation"][key])
                test.setdefault(row, []).append(record["test"][metric])
    chosen = Counter(pick["row"] for seed in picks for rows in picks[seed].values() for pick in rows)
    lines = ["## Every candidate", "",
             ("Mean over (seed, fold) runs. The choice saw only the validation column; the test column is shown "
              "so a reader can see what tuning cost or gained, and was never used."), "",
             f"| row | validation {metric_label(metric)} | test {metric_label(metric)} | chosen |", "|---|---|---|---|"]
    lines += [f"| {row} | {np.mean(validation[row]):.4f} | {np.mean(test[row]):.4f} | {chosen[row]}/{len(test[row])} |"
              for row in validation]
    return lines


def diagnostic_lines(picks: Mapping[int, Mapping[str, list[dict]]]) -> list[str]:
    """T-Net fidelity and the teacher-student structure gap of the chosen runs, on test
    subjects; nothing when no chosen run has either (a study of baselines and AMID)."""
    def mean(values: list[float]) -> str:
        return f"{np.mean(values):.4f}" if values else "—"

    runs: dict[str, list[dict]] = {}
    for seed in picks:
        for row, chosen in picks[seed].items():
            runs.setdefault(row, []).extend(chosen)
    rows = []
    for row, chosen in runs.items():
        tnet = [run["tnet_test"] for run in chosen if "tnet_test" in run]
        gaps = [run["structure_test"] for run in chosen if "structure_test" in run]
        if tnet:
            rows.append(f"| {row} | — | — | — | — | {mean([t['r2'] for t in tnet])} | {mean([t['cosine'] for t in tnet])} |")
        if gaps:
            cells = [mean([g[when][key] for g in gaps]) for key in ("anchor_mad", "ot") for when in ("before", "after")]
            rows.append(f"| {row} | " + " | ".join(cells) + " | — | — |")
    if not rows:
        return []
    header = ["## Diagnostics (test subjects, chosen runs)", "",
              "| row | anchor MAD before | anchor MAD after | OT before | OT after | T-Net R² | T-Net cosine |",
              "|---|---|---|---|---|---|---|"]
    legend = ("Anchor MAD: mean absolute teacher − student difference of the anchored similarity rows; OT: the structural "
              "loss on test batches; before = the student as initialised (from random weights, or the teacher's "
              "with student.init_from_teacher: true), after = as trained.")
    return [*header, *rows, "", legend]
