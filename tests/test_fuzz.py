"""Property-based fuzzing of ``privkd run`` (issue 31, item 8).

Hypothesis draws a small HDF5 dataset (valid, or with one of the faults files from other tools
have: a NaN, one class, a constant target, no target column, a module-attribute or dotted
modality name, a missing column) and a config whose values are drawn from every type (valid
ones, out-of-range numbers, NaN, text, lists, null). Whatever is drawn, ``privkd run`` must
either train (exit 0) or refuse it with one ``error:`` line (exit 2): never a traceback, never
a run that fails every row later (exit 3), and nothing written outside ``--out``.

Kept small (25 examples, 1 epoch of at most one batch on a few dozen samples) so that it runs
with the suite; ``database=None`` keeps ``.hypothesis/`` out of the working tree.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.rows import set_key
from privkd.data import write_dataset

ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0, -1, 10**6, 2**40]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["auto", "", "x", "1e-3", "[1]"]),
    st.lists(st.integers(0, 3), max_size=2),
)
"""A config value of any type and size: most keys refuse most of these."""

PLAUSIBLE: dict[str, list[Any]] = {
    "seed": [0, 7], "model.embed_dim": [8, 16], "model.fusion_dim": [8], "model.dropout": [0.0, 0.5],
    "model.tokens": [1, 2], "model.tnet_hidden": [8], "training.lr": [0.001, 0.1], "training.batch_size": [4, "auto"],
    "training.weight_decay": [0.0], "training.grad_clip": [None, 1.0], "training.patience": [1, "auto"],
    "training.class_weights": ["balanced", "none"], "training.limit_train_batches": [None, 1],
    "training.threads": [1, "auto"], "training.accelerator": ["cpu", "auto"], "evaluation.n_folds": [2, 3],
    "evaluation.n_val_subjects": [1, "auto"], "evaluation.val_share": [0.3], "evaluation.metric": ["auto"],
    "evaluation.group_average": [False], "structural.k": [3, "auto"], "pkdot.beta": [0.5], "p2p.temperature": [2.0],
    "data.in_memory": [True, False, "auto"],
}
"""Keys a run reads, each with values it should accept: a drawn key takes one of them or any value."""

METHODS = ("baseline", "teacher", "pkdot", "p2p_kl", "mtpkdot", "amid", "linear")

FAULTS = ("none", "nan", "one_class", "constant_target", "no_target", "module_name", "dotted_name", "no_subjects",
          "no_groups_but_averaged")


def write_data(path: Path, fault: str, task: str, n_subjects: int, per_subject: int) -> None:
    """A small dataset with modalities ``acc`` and ``gyro`` (feature vectors) and one ``fault``
    put in by hand, as another tool would write it (``write_dataset`` refuses most of them)."""
    rng = np.random.default_rng(n_subjects * 10 + per_subject)
    n = n_subjects * per_subject
    names = ("training", "gyro") if fault == "module_name" else ("acc", "gyro")
    labels = rng.normal(size=n).astype(np.float32) if task == "regression" else np.arange(n) % 2
    write_dataset(path, modalities={m: rng.normal(size=(n, 4)).astype(np.float32) for m in names}, labels=labels,
                  subjects=[f"s{i // per_subject}" for i in range(n)], task=task,
                  class_names=["a", "b"] if task == "classification" else None,
                  modality_kinds=dict.fromkeys(names, "features"))
    with h5py.File(path, "a") as h5:
        if fault == "nan":
            h5["modalities/gyro"][n // 2, 1] = np.nan
        elif fault == "one_class" and task == "classification":
            h5["labels"][...] = 0
            h5.attrs["class_names"] = '["a"]'
        elif fault == "constant_target" and task == "regression":
            h5["labels"][...] = 1.5
        elif fault == "no_target" and task == "regression":
            del h5["labels"]
            h5["labels"] = np.zeros((n, 0), np.float32)
        elif fault == "dotted_name":
            h5.move("modalities/gyro", "modalities/gy.ro")
        elif fault == "no_subjects":
            del h5["subjects"]


@st.composite
def runs(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], str]:
    """A dataset's description (written by :func:`write_data`), the methods and a config's
    changes: half the datasets are valid and most values plausible, so that many runs train."""
    data = {"fault": draw(st.one_of(st.just("none"), st.sampled_from(FAULTS))),
            "task": draw(st.sampled_from(["classification", "regression"])),
            "n_subjects": draw(st.integers(2, 6)), "per_subject": draw(st.integers(1, 8))}
    methods = draw(st.lists(st.sampled_from(METHODS), min_size=1, max_size=2, unique=True))
    pairs = st.sampled_from(sorted(PLAUSIBLE)).flatmap(
        lambda key: st.tuples(st.just(key), st.one_of(st.sampled_from(PLAUSIBLE[key]), ANY_VALUE)))
    changes = dict(draw(st.lists(pairs, max_size=3, unique_by=lambda pair: pair[0])))
    if data["fault"] == "no_groups_but_averaged":
        changes["evaluation.group_average"] = True
    return data, methods, yaml.safe_dump(changes)


def files_under(root: Path) -> set[Path]:
    return {path.relative_to(root) for path in root.rglob("*")}


@settings(max_examples=25, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(runs())
def test_privkd_run_trains_or_refuses_and_writes_only_under_out(drawn: tuple[dict[str, Any], list[str], str]) -> None:
    data, methods, changes_yaml = drawn
    changes = yaml.safe_load(changes_yaml) or {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "work").mkdir()
        write_data(root / "data.h5", **data)
        values: dict[str, Any] = {
            "name": "fuzz", "methods": methods,
            "data": {"path": str(root / "data.h5"), "prevalent": ["training" if data["fault"] == "module_name" else
                                                                   "acc"],
                     "privileged": ["gy.ro" if data["fault"] == "dotted_name" else "gyro"]},
            "evaluation": {"n_folds": 2, "max_folds": 1, "n_val_subjects": 1},
            "training": {"epochs": 1, "batch_size": 8, "limit_train_batches": 1, "jobs": 1, "threads": 1,
                         "progress_bar": False},
        }
        for key, value in changes.items():
            set_key(values, key.split("."), value)
        (root / "config.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        before = files_under(root)
        cwd = os.getcwd()
        os.chdir(root / "work")  # a relative path written by mistake would land here
        try:
            result = CliRunner().invoke(app, ["run", str(root / "config.yaml"), "--out", str(root / "out")])
        finally:
            os.chdir(cwd)
        shown = f"data {data}, methods {methods}, changes {changes}: exit {result.exit_code}\n{result.output}"
        event(f"exit {result.exit_code}")  # pytest --hypothesis-show-statistics: how many trained
        assert result.exit_code in (0, 2), shown
        assert result.exception is None or isinstance(result.exception, SystemExit), (shown, result.exception)
        assert "Traceback" not in result.output, shown
        if result.exit_code == 2:
            assert result.output.count("error:") == 1 and "Fix:" in result.output, shown
        outside = {path for path in files_under(root) - before if path.parts[0] != "out"}
        assert outside == set(), (shown, sorted(outside))
