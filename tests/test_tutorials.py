"""The tutorials run as written. The README's quick start: import a table, write the config, run
with --final, report, predict from the prevalent columns alone, export to ONNX; the paper-recipe
tutorial on a miniature layout; the own-data page's arrays written as a dataset; and the "add a
method" page's code, which registers a method from a script and trains it.

The commands are read from each page's bash block and run in order in a fresh directory; only
``privkd run`` gets settings that make it a smoke run (one fold, one epoch of one batch), so a
command renamed, an option dropped or a path the run no longer writes fails here. The quick
start's table is scikit-learn's breast-cancer table, as in the README.
"""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pandas as pd
from layouts import breast_cancer_table, make_features_layout
from sklearn.datasets import load_breast_cancer
from typer.testing import CliRunner

from privkd.cli import app
from privkd.config import schema
from privkd.methods import registry

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SMOKE_RUN = ["--only", "baseline", "--only", "teacher", "--only", "pkdot",
             "--set", "evaluation.max_folds=1", "--set", "training.epochs=1",
             "--set", "training.limit_train_batches=1", "--set", "teacher.tnet_refit_epochs=1",
             "--set", "training.progress_bar=false", "--set", "training.jobs=1"]


def bash_steps(markdown: str, heading: str) -> list[str | tuple[str, str]]:
    """The steps of the first bash block under ``heading``: a command line, or a ``(file, text)``
    a heredoc writes."""
    section = markdown.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    steps: list[str | tuple[str, str]] = []
    lines = iter(block.splitlines())
    for line in lines:
        heredoc = re.fullmatch(r"cat > (\S+) <<'(\w+)'", line.strip())
        if heredoc:
            name, end = heredoc.groups()
            steps.append((name, "".join(f"{body}\n" for body in iter(lines.__next__, end))))
        else:
            steps.append(line.split("  #")[0].strip())
    return steps


def run_steps(steps: list[str | tuple[str, str]], smoke_run: list[str]) -> None:
    """Each step in the current directory, through the CLI; ``privkd run`` gets ``smoke_run``
    after its own arguments, an import ``--no-progress``."""
    for step in steps:
        if isinstance(step, tuple):
            Path(step[0]).write_text(step[1])
            continue
        args = [match for word in shlex.split(step)[1:] for match in (sorted(glob.glob(word)) or [word])]
        args += smoke_run if args[0] == "run" else ["--no-progress"] if args[:2] == ["data", "import"] else []
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{step}\n{result.output}"


def write_tables(root: Path) -> None:
    """``bc.csv`` as the README describes it (60 people of each class, for speed) and
    ``new.csv`` with the prevalent ``mean.*`` columns alone."""
    data = load_breast_cancer(as_frame=True).frame.groupby("target").head(60).reset_index(drop=True)
    table = breast_cancer_table(data)
    table.to_csv(root / "bc.csv", index=False)
    table.filter(like="mean.").head(10).to_csv(root / "new.csv", index=False)


def test_the_readme_quick_start_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tables(tmp_path)
    steps = bash_steps(README.read_text(), "## Quick start")
    assert [s.split()[:2] for s in steps if isinstance(s, str)] == [
        ["privkd", "data"], ["privkd", "run"], ["privkd", "report"], ["privkd", "predict"], ["privkd", "export"]]
    run_steps(steps, SMOKE_RUN)
    run_dir = next((tmp_path / "runs").glob("*-bc"))
    assert (run_dir / "report.html").is_file() and (run_dir / "final" / "pkdot" / "student").is_dir()
    assert len(pd.read_csv("predictions.csv")) == 10 and Path("pkdot.onnx").stat().st_size > 0


def test_the_recipe_tutorial_runs_on_a_miniature_layout(tmp_path, monkeypatch):
    """The recipe page's commands on IEMOCAP-style features of 5 sessions x 4 utterances; both
    runs made smoke runs (one fold, AMID's warm-up one epoch, as the miniature allows)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    make_features_layout(tmp_path / "feats")
    steps = bash_steps((ROOT / "docs" / "guide" / "recipes.md").read_text(), "## Tutorial: reproduce a recipe")
    run_steps(steps, ["--set", "evaluation.max_folds=1", "--set", "training.epochs=1", "--set", "amid.warmup_epochs=1",
                      "--set", "training.limit_train_batches=1", "--set", "training.progress_bar=false"])
    (run_dir,) = (tmp_path / "runs").glob("*-iemocap_amid")
    assert (run_dir / "report.html").is_file() and next((tmp_path / "checks").glob("*-iemocap_amid/summary.json"))


def test_the_add_a_method_tutorial_runs(tmp_path, monkeypatch, watch_path):
    """The tutorial's code block registers RKD-D from a script, and a run trains it beside the
    baseline; the registration is undone afterwards so no other test sees the method."""
    page = ROOT / "docs" / "guide" / "add-a-method.md"
    code = re.search(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL).group(1)
    monkeypatch.setenv("PRIVKD_CACHE", str(watch_path.parent))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(code, str(page), "exec"), namespace)  # noqa: S102 - the tutorial's own code
    finally:
        registry._METHODS.pop("rkd_distance", None)
        schema.EXTENSION_SECTIONS.pop("rkd_distance", None)
    run = namespace["run"]
    assert list(run.summary["methods"]) == ["baseline", "teacher", "rkd_distance"] and not run.failures
    assert run.config.section("rkd_distance").weight == 2.0
    assert (run.dir / "fold_0" / "rkd_distance" / "student" / "model_card.md").is_file()


def test_the_own_data_page_writes_a_valid_dataset(tmp_path, monkeypatch, capsys):
    """The "From NumPy arrays in Python" block as written: it writes a file that reads back."""
    page = ROOT / "docs" / "guide" / "own-data.md"
    section = page.read_text().split("## From NumPy arrays in Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(page), "exec"), {})  # noqa: S102 - the page's own code
    assert capsys.readouterr().out.strip() == "40 ['eda', 'face'] ['no pain', 'pain']"
