"""Every shipped paper recipe runs end to end on a miniature copy of its dataset's layout:
``privkd data import`` through the CLI, then ``privkd run RECIPE`` for one batch per epoch on
one fold, with the recipe's own backbones, fusion, anchors and loss weights."""

import json

import pytest
from layouts import make_affwild2_layout, make_biovid_layout, make_features_layout
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config.loading import load_config
from privkd.data import read_info
from privkd.training.auto import resolve_rows
from privkd.training.experiment import rows_to_train

SMOKE = ["training.epochs=1", "training.limit_train_batches=1", "training.batch_size=4", "structural.k=2",
         "training.progress_bar=false",
         "evaluation.max_folds=1", "teacher.tnet_refit_epochs=1"]


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Each miniature layout imported once through ``privkd data import``."""
    root = tmp_path_factory.mktemp("layouts")
    biovid = make_biovid_layout(root / "biovid")
    affwild2 = make_affwild2_layout(root / "affwild2")
    make_features_layout(root / "iemocap")
    small_video = ["--frames", "4", "--frame-size", "16", "--no-progress"]
    invoke("data", "import", "biovid", biovid, root / "biovid_b.h5", "--signals", "emg_corrugator", *small_video)
    invoke("data", "import", "biovid", biovid, root / "biovid_a.h5", "--signals", "eda", "--signal-format", "raw", *small_video)
    invoke("data", "import", "affwild2", affwild2, root / "affwild2.h5", "--clip-frames", "2", "--frame-size", "16",
           "--n-mels", "32", "--no-progress")
    invoke("data", "import", "features", root / "iemocap", root / "iemocap.h5", "--classes", "neu,hap,ang,sad",
           "--merge", "exc=hap", "--no-progress")
    return root


RECIPES = {
    # recipe: (dataset file, overrides the miniature layout needs: it has 3 BioVid subjects, 2 training videos)
    "biovid_b_pkdot": ("biovid_b.h5", ["evaluation.n_folds=3", "evaluation.n_val_subjects=1"]),
    "biovid_b_mtpkdot": ("biovid_b.h5", ["evaluation.n_folds=3", "evaluation.n_val_subjects=1"]),
    "biovid_a_mtpkdot": ("biovid_a.h5", ["evaluation.n_folds=3", "evaluation.n_val_subjects=1"]),
    "affwild2_mtpkdot": ("affwild2.h5", ["evaluation.n_val_subjects=1"]),
    "iemocap_amid": ("iemocap.h5", ["amid.warmup_epochs=1"]),
}


# `make test` runs the cheapest recipe; the others (30-60 s each) run under `make test-slow`.
@pytest.mark.parametrize("recipe", [pytest.param(name, marks=() if name == "biovid_b_pkdot" else pytest.mark.slow)
                                    for name in sorted(RECIPES)])
def test_recipe_runs_one_step_per_epoch_on_its_miniature_layout(recipe, imported, tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    data, overrides = RECIPES[recipe]
    settings = [f"data.path={imported / data}", *SMOKE, *overrides]
    invoke("run", recipe, "--out", tmp_path, *[arg for item in settings for arg in ("--set", item)])
    (run_dir,) = tmp_path.glob(f"*-{recipe}")
    summary = json.loads((run_dir / "summary.json").read_text())
    cfg, _ = resolve_rows(load_config(recipe), read_info(imported / data))  # feature data: + the linear references
    assert list(summary["methods"]) == rows_to_train(cfg)
    metric = "accuracy" if summary["task"] == "classification" else "ccc"
    for row in summary["methods"].values():
        assert len(row[metric]["per_fold"]) == 1
