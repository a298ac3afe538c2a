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

from privkd.config import RunConfig, VariantConfig, row_method
from privkd.errors import ConfigError
from privkd.evaluation.metrics import SELECTION_METRIC
from privkd.evaluation.stats import format_p, format_percent, row_stats
from privkd.evaluation.summary import metric_label
from privkd.training.crossval import rows_to_train, run_experiment
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


def choose(run_dir: Path, cfg: RunConfig, task: str) -> dict[str, list[dict]]:
    """Per method and fold: the candidate row with the best validation score, and its test metrics."""
    key = f"val/{SELECTION_METRIC[task]}"
    chosen: dict[str, list[dict]] = {}
    for fold_dir in sorted(run_dir.glob("fold_*"), key=lambda p: int(p.name.split("_")[1])):
        by_method: dict[str, list[dict]] = {}
        for row in rows_to_train(cfg):  # the method's own row (its defaults) comes first and wins ties
            path = fold_dir / row / "metrics.json"
            if path.is_file():
                by_method.setdefault(row_method(cfg, row), []).append(json.loads(path.read_text()))
        for method, records in by_method.items():
            best = max(records, key=lambda r: r["validation"][key])
            chosen.setdefault(method, []).append({"fold": best["fold"], "row": best["row"],
                                                  "validation": best["validation"][key], "test": best["test"]})
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
    """Run every seed, choose each method's setting per fold on validation scores, write the study."""
    variants = candidate_variants(cfg)
    study_dir = create_run_dir(out_root, f"{cfg.name}-study")
    seeds = [cfg.seed + i for i in range(cfg.study.seeds)]
    picks: dict[int, dict[str, list[dict]]] = {}
    task = "classification"
    for seed in seeds:
        progress(f"seed {seed} ({seeds.index(seed) + 1}/{len(seeds)})")
        seed_cfg = dataclasses.replace(cfg, seed=seed, variants={**cfg.variants, **variants})
        result = run_experiment(seed_cfg, study_dir / f"seed_{seed}", progress)
        task = result.summary["task"]
        picks[seed] = choose(result.run_dir, seed_cfg, task)
    summary = study_summary(task, seeds, picks)
    write_json_atomic(study_dir / "summary.json", summary)
    write_json_atomic(study_dir / "choices.json", {str(seed): picks[seed] for seed in seeds})
    write_text_atomic(study_dir / "study.md", study_markdown(cfg, summary, picks))
    return study_dir


def study_markdown(cfg: RunConfig, summary: Mapping, picks: Mapping[int, Mapping[str, list[dict]]]) -> str:
    stats = row_stats(summary)
    metric = stats[0].headline if stats else "accuracy"
    n = len(next(iter(summary["methods"].values()))[metric]["per_run"]) if summary["methods"] else 0
    lines = [f"# Study: {cfg.name}", "",
             f"{len(summary['seeds'])} seed(s) × {n // max(len(summary['seeds']), 1)} subject-independent fold(s). "
             "Each method's setting was chosen per fold on the validation subjects only; test subjects were "
             "scored once with the chosen setting.", "",
             f"| method | {metric_label(metric)} (mean ± std over runs) | gap closed | Wilcoxon p | t-test p | settings chosen |",
             "|---|---|---|---|---|---|"]
    for row in stats:
        mean, std, _ = row.metrics[metric]
        counts = Counter(pick["row"] for seed in picks for pick in picks[seed].get(row.row, []))
        chosen = ", ".join(f"{name} ×{count}" for name, count in counts.most_common())
        wilcoxon = format_p(row.test.wilcoxon_p) if row.test else "—"
        ttest = format_p(row.test.ttest_p) if row.test else "—"
        lines.append(f"| {row.row} | {mean:.4f} ± {std:.4f} | {format_percent(row.gap_closed)} | {wilcoxon} | {ttest} | {chosen} |")
    lines += ["", "Paired tests against the baseline across (seed, fold) runs, two-sided, not corrected for multiple comparisons."]
    return "\n".join(lines) + "\n"
