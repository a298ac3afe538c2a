"""The optional extras: a missing package is privkd's one-line error naming the extra to install,
and the core (what `make demo` installs) imports none of them.

A package is made missing with ``sys.modules[name] = None``, which makes ``import name`` raise
``ImportError`` as if it were not installed.
"""

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privkd.cli import app
from privkd.errors import PrivkdError
from privkd.optional import EXTRAS, MissingDependencyError, require

ROOT = Path(__file__).resolve().parent.parent


def _missing(monkeypatch, *modules: str, forget: tuple[str, ...] = ()) -> None:
    """Make ``modules`` not installed, and the privkd modules in ``forget`` (which import one of
    them when they load) load again."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(f"{m}.") for m in (*modules, *forget)):
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:  # `from parent import child` reads the attribute first
                monkeypatch.delattr(sys.modules[parent], child, raising=False)
            monkeypatch.delitem(sys.modules, name)
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def _one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, (result.output, result.exception)
    assert "Traceback" not in result.output
    return lines[0]


def test_require_returns_the_module_or_names_the_extra(monkeypatch):
    assert require("json", "report", "anything") is sys.modules["json"]
    _missing(monkeypatch, "pyarrow")
    with pytest.raises(MissingDependencyError) as caught:
        require("pyarrow.parquet", "parquet", "reading a Parquet table")
    err = caught.value
    assert isinstance(err, PrivkdError) and isinstance(err, ImportError)
    assert str(err) == ("reading a Parquet table needs the 'pyarrow' package, which is not installed. Fix: install "
                        "privkd's parquet extra: pip install 'privkd[parquet]' (in a source checkout: pip install "
                        "-e '.[parquet]').")
    again = pickle.loads(pickle.dumps(err))  # crosses DataLoader workers and processes
    assert type(again) is MissingDependencyError and str(again) == str(err)


def test_pip_names_differ_from_import_names(monkeypatch):
    _missing(monkeypatch, "PIL")
    with pytest.raises(MissingDependencyError, match=r"'pillow' package.*privkd\[video\]"):
        require("PIL.Image", "video", "reading image frames")


def test_a_broken_install_is_not_reported_as_a_missing_extra(tmp_path, monkeypatch):
    (tmp_path / "half_installed").mkdir()
    (tmp_path / "half_installed" / "__init__.py").write_text("import privkd_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as caught:
        require("half_installed", "report", "the report")
    assert not isinstance(caught.value, MissingDependencyError)
    assert caught.value.name == "privkd_no_such_dependency"


def test_export_without_onnx_names_the_export_extra(tmp_path, monkeypatch):
    _missing(monkeypatch, "onnx")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "student"), "--onnx", str(tmp_path / "model.onnx")])
    line = _one_error_line(result)
    assert "'onnx' package" in line and "pip install 'privkd[export]'" in line, line
    assert not (tmp_path / "model.onnx").exists()


def test_report_without_matplotlib_names_the_report_extra(tmp_path, monkeypatch):
    import privkd.report  # noqa: F401  # torchmetrics (under it) imports matplotlib whenever its metadata is there

    _missing(monkeypatch, "matplotlib", forget=("privkd.report", "privkd.evaluation.plots"))
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    line = _one_error_line(result)
    assert "'matplotlib' package" in line and "pip install 'privkd[report]'" in line, line


def test_parquet_table_without_pyarrow_names_the_parquet_extra(tmp_path, monkeypatch):
    table = tmp_path / "features.parquet"
    table.write_bytes(b"PAR1")
    _missing(monkeypatch, "pyarrow")
    result = CliRunner().invoke(app, ["data", "import", "table", str(table), str(tmp_path / "out.h5")])
    line = _one_error_line(result)
    assert "'pyarrow' package" in line and "pip install 'privkd[parquet]'" in line, line
    assert not (tmp_path / "out.h5").exists()


def test_sweep_trials_without_optuna_fail_before_anything_is_written(tmp_path, monkeypatch):
    from privkd.training.sweep import run_sweep

    _missing(monkeypatch, "optuna")
    with pytest.raises(MissingDependencyError, match=r"privkd\[sweep\]"):
        run_sweep("demo", [], {"pkdot.beta": [0.3, 0.6]}, tmp_path / "runs", trials=2)
    assert not (tmp_path / "runs").exists()


def test_video_decoding_without_av_names_the_video_extra(tmp_path, monkeypatch):
    from privkd.data.importers.media import sample_video_frames

    _missing(monkeypatch, "av")
    with pytest.raises(MissingDependencyError, match=r"'av' package.*privkd\[video\]"):
        sample_video_frames(tmp_path / "clip.mp4", 4, 8)


def test_extras_match_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements):
        return {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
                for r in requirements}

    runtime = {k: names(v) for k, v in extras.items() if k not in ("all", "test", "docs")}  # docs: the site's tools
    assert runtime == {k: set(v) for k, v in EXTRAS.items()}
    assert extras["all"] == [f"privkd[{','.join(EXTRAS)}]"]
    assert "privkd[all,docs]" in extras["test"]
    optional = set().union(*map(set, EXTRAS.values())) - {"pillow"}  # pillow also comes with torchvision
    assert not optional & names(project["dependencies"])


def test_lock_pins_every_core_dependency():
    lock = {line.split("==")[0].strip().lower().replace("_", "-")
            for line in (ROOT / "requirements.lock").read_text().splitlines() if "==" in line and not line.startswith("#")}
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {r.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
              for r in [*project["dependencies"], *(r for k, v in project["optional-dependencies"].items()
                                                    for r in v if not r.startswith("privkd"))]}
    assert not wanted - lock, sorted(wanted - lock)
    assert "privkd" not in lock


BLOCKED = ("av", "onnx", "onnxscript", "onnxruntime", "optuna", "pyarrow", "matplotlib")
"""The optional distributions (pip names) that the core must do without."""

CORE_IMPORTS = textwrap.dedent("""
    import site, sys

    site.addsitedir(sys.argv[1])  # started with -S: the shadow site-packages is the only one
    import privkd, privkd.api, privkd.cli.main, privkd.training.experiment, privkd.deploy
    import privkd.data.importers.biovid, privkd.data.importers.affwild2, privkd.data.importers.table
    import privkd.data.importers.folder, privkd.data.importers.features, privkd.training.sweep
    from privkd.config.loading import load_config, packaged_config_path

    load_config(packaged_config_path("demo"), [])
    for name in sys.argv[2:]:
        try:
            __import__(name)
        except ImportError:
            continue
        raise SystemExit(f"{name} is still importable: the shadow site-packages leaks it")
    print("core ok")
""")


def _site_packages_without(distributions: tuple[str, ...], shadow: Path) -> Path:
    """A copy (of symlinks) of this environment's site-packages without ``distributions``' files
    and metadata, as if they had never been installed."""
    import importlib.metadata
    import sysconfig

    hidden: set[str] = set()
    for name in distributions:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        hidden |= {f.parts[0] for f in files}
    shadow.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name not in hidden:
            (shadow / entry.name).symlink_to(entry)
    return shadow


def test_the_core_imports_no_optional_package(tmp_path):
    """What `make demo` installs is enough to import the CLI, training, deployment and every importer."""
    shadow = _site_packages_without(BLOCKED, tmp_path / "site-packages")
    imports = ("av", "onnx", "onnxscript", "onnxruntime", "optuna", "pyarrow", "matplotlib")
    result = subprocess.run([sys.executable, "-S", "-c", CORE_IMPORTS, str(shadow), *imports],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "core ok" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
