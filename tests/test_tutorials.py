"""The tutorials run as written. The README's quick start: import a table, write the config, run
with --final, report, predict from the prevalent columns alone, export to ONNX; and the "add a
method" page's code, which registers a method from a script and trains it.

The commands are read from the README's "Quick start" block and run in order in a fresh
directory; only ``privkd run`` gets settings that make it a smoke run (one fold, one epoch of
one batch, three rows), so a command renamed, an option dropped or a path the run no longer
writes fails here. The table is scikit-learn's breast-cancer table, as in the README.
"""

from __future__ import annotations

import glob
import re
import shlex
from pathlib import Path

import pandas as pd
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


def quick_start() -> list[str | tuple[str, str]]:
    """The quick start's steps: a command line, or a ``(file, text)`` a heredoc writes."""
    section = README.read_text().split("## Quick start", 1)[1]
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


def write_tables(root: Path) -> None:
    """``bc.csv`` as the README describes it (60 people of each class, for speed) and
    ``new.csv`` with the prevalent ``mean.*`` columns alone."""
    data = load_breast_cancer(as_frame=True).frame.groupby("target").head(60).reset_index(drop=True)
    table = pd.DataFrame({"subject": [f"p{i}" for i in range(len(data))],
                          "label": data["target"].map({0: "malignant", 1: "benign"})})
    for column in data.columns:
        if column.startswith(("mean ", "worst ")):
            kind, name = column.split(" ", 1)
            table[f"{kind}.{name.replace(' ', '_')}"] = data[column]
    table.to_csv(root / "bc.csv", index=False)
    table.filter(like="mean.").head(10).to_csv(root / "new.csv", index=False)


def test_the_readme_quick_start_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tables(tmp_path)
    steps = quick_start()
    assert [s.split()[:2] for s in steps if isinstance(s, str)] == [
        ["privkd", "data"], ["privkd", "run"], ["privkd", "report"], ["privkd", "predict"], ["privkd", "export"]]
    for step in steps:
        if isinstance(step, tuple):
            Path(step[0]).write_text(step[1])
            continue
        args = [match for word in shlex.split(step)[1:] for match in (sorted(glob.glob(word)) or [word])]
        args += SMOKE_RUN if args[0] == "run" else ["--no-progress"] if args[:2] == ["data", "import"] else []
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{step}\n{result.output}"
    run_dir = next((tmp_path / "runs").glob("*-bc"))
    assert (run_dir / "report.html").is_file() and (run_dir / "final" / "pkdot" / "student").is_dir()
    assert len(pd.read_csv("predictions.csv")) == 10 and Path("pkdot.onnx").stat().st_size > 0


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
