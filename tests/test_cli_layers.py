"""The CLI's layering: commands import downward only, one place turns errors into messages,
and the deployment commands never import the training stack."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

import privkd.cli
from privkd.cli import app
from privkd.errors import PrivkdError

CLI_DIR = Path(privkd.cli.__file__).parent
APP_MODULES = {"privkd.cli", "privkd.cli.main"}
"""The package (it re-exports the app) and the module that assembles the app."""


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (commands import lazily); for
    ``from X import Y`` both ``X`` and ``X.Y``, since Y may be a submodule."""
    package = "privkd.cli"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_command_modules_import_only_downward():
    modules = sorted(p for p in CLI_DIR.glob("*.py") if f"privkd.cli.{p.stem}" not in APP_MODULES and p.stem != "__init__")
    assert {p.stem for p in modules} >= {"console", "run", "data", "deploy", "report"}
    for path in modules:
        upward = sorted(m for m in _imports(path) if m in APP_MODULES)
        assert not upward, f"{path.name} imports {upward}: the app imports it, so that is an import loop"
        siblings = sorted(m for m in _imports(path) if m.startswith("privkd.cli.")
                          and m.split(".")[2] != "console")
        assert not siblings, f"{path.name} imports {siblings}: commands share only the console"


def test_help_imports_neither_torch_nor_the_training_stack():
    script = "import json, sys, privkd.cli; print(json.dumps([m for m in ('torch', 'lightning', 'privkd.training') if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# ------------------------------------------------------------------------------- errors


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("args", [
    ["run"],  # a top-level command: no CONFIG
    ["data", "info", "nowhere.h5"],  # a nested group's command: a missing dataset
    ["data", "import", "table", "t.csv", "t.h5", "--modality", "eda"],  # two levels down: a malformed option
], ids=["top-level", "data", "data-import"])
def test_a_privkd_error_is_one_message_and_exit_code_2(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = _error_lines(result.output)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix:" in lines[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["run"], ["data", "info", "nowhere.h5"]], ids=["top-level", "data"])
def test_debug_lets_the_error_through(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--debug", *args])
    assert isinstance(result.exception, PrivkdError) and result.exit_code == 1
    assert "error:" not in result.output
    # the flag is per invocation: the next one without it gets the message again
    assert CliRunner().invoke(app, args).exit_code == 2


# ------------------------------------------------------------------------------- deployment without Lightning


PREDICT_AND_EXPORT = textwrap.dedent("""
    import json, sys
    from typer.testing import CliRunner
    from privkd.cli import app

    student, data, out = sys.argv[1:4]
    codes = [CliRunner().invoke(app, args).exit_code for args in (
        ["predict", student, data, "--out", f"{out}/predictions.csv"],
        ["export", student, "--onnx", f"{out}/model.onnx"],
    )]
    print(json.dumps({"codes": codes, "lightning": sorted(m for m in sys.modules if "lightning" in m)}))
""")


def test_predict_and_export_do_not_import_lightning(tmp_path, watch_path):
    import torch

    from privkd.config.parse import build_config
    from privkd.data import read_info
    from privkd.deploy import save_student
    from privkd.models.build import build_net

    pytest.importorskip("onnx")
    info = read_info(watch_path)
    cfg = build_config({"methods": ["pkdot"], "data": {"prevalent": ["accelerometer"], "privileged": ["gyroscope"]},
                        "model": {"embed_dim": 16, "fusion_dim": 24, "tnet_hidden": 32, "tnet_bottleneck": 8}})
    torch.manual_seed(0)
    student = save_student(tmp_path / "student", build_net("student", cfg, info), cfg, info, row="pkdot", method="pkdot",
                           role="student", fold=0, test_metrics={"accuracy": 0.5}, train_subjects=["s01"])
    done = subprocess.run([sys.executable, "-c", PREDICT_AND_EXPORT, str(student), str(watch_path), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"codes": [0, 0], "lightning": []}, done.stdout
    assert (tmp_path / "predictions.csv").is_file() and (tmp_path / "model.onnx").is_file()
