"""Repository safety: no credentials in the sources, and no unsafe deserialisation in ``src/``.

Credentials: ruff's flake8-bandit rules (:data:`CREDENTIAL_RULES`), a maintained detector,
run over the Python sources of ``src/``, ``tests/``, ``benchmarks/`` and ``.ci/`` with the
file selection ruff makes itself (``.gitignore`` respected, ``.venv`` and caches skipped), and
its hard-coded ``/tmp`` rule (:data:`TEMP_FILE_RULES`) over ``src/``.
Unsafe loading: an AST check of ``src/`` (``torch.load`` without ``weights_only=True``,
unrestricted unpickling, ``yaml.load``, ``eval`` ...), which no linter rule covers as a whole.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("src", "tests", "benchmarks", ".ci")
ALWAYS_SKIPPED = {".git", ".hypothesis", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache",
                  ".mypy_cache", "node_modules"}


# ============================================================================ which files


def _ignore_patterns() -> list[str]:
    """The simple (non-negated) patterns of the top-level .gitignore, trailing slashes dropped."""
    gitignore = ROOT / ".gitignore"
    if not gitignore.is_file():
        return []
    lines = (line.strip() for line in gitignore.read_text(encoding="utf-8", errors="replace").splitlines())
    return [line.strip("/") for line in lines if line and not line.startswith(("#", "!"))]


def _ignored(relative: Path, patterns: list[str]) -> bool:
    if any(part in ALWAYS_SKIPPED for part in relative.parts):
        return True
    text = relative.as_posix()
    return any(fnmatch.fnmatch(part, p) for part in relative.parts for p in patterns) or any(
        fnmatch.fnmatch(text, p) for p in patterns
    )


# ============================================================================ credentials

CREDENTIAL_RULES = "S105,S106,S107"
"""flake8-bandit (ruff ``S``): a password, token or secret as a string literal assigned to a
name (S105), passed as an argument (S106) or as a parameter default (S107). Checked everywhere."""
TEMP_FILE_RULES = "S108"
"""A hard-coded path under ``/tmp`` (predictable, shared with other users). Checked in ``src/``
only: tests name such paths on purpose (a directory that must not be written to)."""


def _ruff() -> str:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is missing: install the test extra (pip install -e '.[test]')")
    return ruff


def ruff_findings(rules: str, *paths: Path | str, cwd: Path = ROOT) -> list[str]:
    """``file:line: CODE message`` for every finding of ruff's ``rules`` in ``paths``."""
    result = subprocess.run([_ruff(), "check", "--no-cache", "--select", rules, "--output-format", "json",
                             *map(str, paths)], check=False, cwd=cwd, capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr  # 1: findings; anything else: ruff itself failed
    return [f"{os.path.relpath(f['filename'], cwd)}:{f['location']['row']}: {f['code']} {f['message']}"
            for f in json.loads(result.stdout)]


def _source_dirs() -> list[str]:
    return [name for name in SOURCE_DIRS if (ROOT / name).is_dir()]


def test_ruff_scans_the_sources() -> None:
    result = subprocess.run([_ruff(), "check", "--no-cache", "--show-files", *_source_dirs()], check=True, cwd=ROOT,
                            capture_output=True, text=True)
    files = {Path(line).resolve().relative_to(ROOT).as_posix() for line in result.stdout.split()}
    for expected in ("src/privkd/__init__.py", "src/privkd/data/embedded.py", "tests/test_safety.py",
                     "tests/conftest.py"):
        assert expected in files, f"{expected} is not scanned"
    assert not any(".venv" in f or "egg-info" in f or "__pycache__" in f for f in files), "ignored files are scanned"


PLANTED = [
    ('password = "hunter2"\n', "S105"),
    ('DB_PASSWORD: str = "correct-horse-battery"\n', "S105"),
    ('config = {}\nconfig["api_token"] = "A1b2C3d4E5f6G7h8J9k0"\n', "S105"),
    ('login(user="me", password="hunter2")\n', "S106"),
    ('def connect(secret="A1b2C3d4E5f6G7h8J9k0"):\n    return secret\n', "S107"),
    ('LOG = open("/tmp/privkd.log", "w")\n', "S108"),
]


@pytest.mark.parametrize("source, code", PLANTED)
def test_ruff_catches_planted_credentials(tmp_path: Path, source: str, code: str) -> None:
    (tmp_path / "planted.py").write_text(source)
    found = ruff_findings(f"{CREDENTIAL_RULES},{TEMP_FILE_RULES}", "planted.py", cwd=tmp_path)
    assert len(found) == 1 and f" {code} " in found[0] and found[0].startswith("planted.py:"), found


def test_ruff_ignores_credentials_read_at_run_time(tmp_path: Path) -> None:
    (tmp_path / "safe.py").write_text('import getpass\nimport os\n\ntoken = os.environ["HF_TOKEN"]\n'
                                      'password = getpass.getpass("Password: ")\nn_tokens = len("a b")\n'
                                      'if token == password:\n    api_key = None\n')
    assert ruff_findings(f"{CREDENTIAL_RULES},{TEMP_FILE_RULES}", "safe.py", cwd=tmp_path) == []


def test_no_credentials_in_the_sources() -> None:
    found = ruff_findings(CREDENTIAL_RULES, *_source_dirs()) + ruff_findings(TEMP_FILE_RULES, "src")
    assert not found, "credentials in the sources (read them from the environment / a secrets store):\n" + "\n".join(found)


# ============================================================================ safe loading

SRC = ROOT / "src"
# The one sanctioned unpickler: numpy arrays and plain containers only (the embedded dataset).
RESTRICTED_UNPICKLER = ("src/privkd/data/embedded.py", "_NumpyOnlyUnpickler")
PICKLE_MODULES = ("pickle", "_pickle", "cPickle", "dill", "cloudpickle")
UNPICKLERS = {f"{m}.{n}" for m in PICKLE_MODULES for n in ("Unpickler", "_Unpickler")}
FORBIDDEN_CALLS = {
    **{f"{m}.{n}": "unpickles arbitrary objects" for m in PICKLE_MODULES for n in ("load", "loads", "_load", "_loads")},
    **{u: "an unrestricted unpickler" for u in UNPICKLERS},
    **{f"yaml.{n}": "yaml can construct arbitrary objects; use yaml.safe_load"
       for n in ("load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all")},
    "joblib.load": "unpickles arbitrary objects",
    "pandas.read_pickle": "unpickles arbitrary objects",
    "marshal.load": "loads code objects",
    "marshal.loads": "loads code objects",
    "shelve.open": "unpickles arbitrary objects",
    "eval": "runs arbitrary code",
    "exec": "runs arbitrary code",
    "builtins.eval": "runs arbitrary code",
    "builtins.exec": "runs arbitrary code",
}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted import path (``np`` -> ``numpy``, ``load`` -> ``torch.load``)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value, aliases)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _keyword_is(call: ast.Call, name: str, value: object) -> bool | None:
    """Whether keyword ``name`` is the literal ``value``; ``None`` when it is not passed at all."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return isinstance(keyword.value, ast.Constant) and keyword.value.value is value
        if keyword.arg is None:  # **kwargs: cannot be verified
            return False
    return None


def unsafe_loading(source: str, relative: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Offences (``file:line: what``) in one module, and the unpickler subclasses it defines."""
    tree = ast.parse(source, filename=relative)
    aliases = _aliases(tree)
    offences: list[str] = []
    subclasses: list[tuple[str, str]] = []
    sanctioned_bases: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if _dotted(base, aliases) in UNPICKLERS:
                    subclasses.append((relative, node.name))
                    if (relative, node.name) == RESTRICTED_UNPICKLER:
                        sanctioned_bases.add(id(base))
                    else:
                        offences.append(f"{relative}:{node.lineno}: class {node.name} subclasses an unpickler")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        where = f"{relative}:{node.lineno}"
        name = _dotted(node.func, aliases)
        if name in ("torch.load", "torch.serialization.load"):
            if _keyword_is(node, "weights_only", True) is not True:
                offences.append(f"{where}: torch.load without a literal weights_only=True")
        elif any(keyword.arg == "ckpt_path" for keyword in node.keywords):  # Lightning's fit/validate/test resume
            if _keyword_is(node, "weights_only", True) is not True:
                offences.append(f"{where}: a Lightning checkpoint read without a literal weights_only=True")
        elif name in ("numpy.load", "numpy.lib.npyio.load"):
            if _keyword_is(node, "allow_pickle", False) is False:
                offences.append(f"{where}: numpy.load with allow_pickle not the literal False")
        elif name in FORBIDDEN_CALLS and id(node.func) not in sanctioned_bases:
            offences.append(f"{where}: {name}() ({FORBIDDEN_CALLS[name]})")
    return offences, subclasses


def _src_modules() -> Iterator[tuple[str, str]]:
    patterns = _ignore_patterns()
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if _ignored(relative, patterns):
            continue
        try:
            yield relative.as_posix(), path.read_text(encoding="utf-8")
        except OSError:
            continue


@pytest.mark.parametrize("source, problem", [
    ("import torch\ntorch.load(p)", "torch.load"),
    ("import torch\ntorch.load(p, weights_only=False)", "torch.load"),
    ("import torch\ntorch.load(p, **options)", "torch.load"),
    ("from torch import load as tl\ntl(p)", "torch.load"),
    ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "yaml.load"),
    ("import yaml\nyaml.unsafe_load(text)", "yaml.unsafe_load"),
    ("import pickle\npickle.loads(data)", "pickle.loads"),
    ("from pickle import load\nload(f)", "pickle.load"),
    ("import pickle as pk\npk.Unpickler(f).load()", "pickle.Unpickler"),
    ("import pickle\nclass Free(pickle.Unpickler):\n    pass", "subclasses an unpickler"),
    ("trainer.fit(module, loader, ckpt_path=path)", "Lightning checkpoint"),
    ("trainer.fit(module, ckpt_path=path, weights_only=False)", "Lightning checkpoint"),
    ("import numpy as np\nnp.load(p, allow_pickle=True)", "numpy.load"),
    ("import numpy\nnumpy.load(p, allow_pickle=flag)", "numpy.load"),
    ("eval(text)", "eval"),
    ("exec(code, {})", "exec"),
])
def test_the_loader_check_catches_planted_unsafe_calls(source: str, problem: str) -> None:
    offences, _ = unsafe_loading(source, "src/privkd/planted.py")
    assert len(offences) == 1 and problem in offences[0] and offences[0].startswith("src/privkd/planted.py:")


def test_the_loader_check_accepts_safe_calls() -> None:
    source = ("import torch, yaml, numpy as np\n"
              "torch.load(p, map_location='cpu', weights_only=True)\nyaml.safe_load(text)\n"
              "np.load(p)\nnp.load(p, allow_pickle=False, mmap_mode='r')\nmodel.eval()\nnet.train().eval()\n"
              "trainer.fit(module, ckpt_path=path, weights_only=True)\n")
    assert unsafe_loading(source, "src/privkd/planted.py") == ([], [])


def test_no_unsafe_loading_in_src() -> None:
    """torch.load always with weights_only=True, yaml only via safe_load, no pickle loads except the
    embedded dataset's restricted unpickler, no numpy allow_pickle=True, no eval/exec."""
    offences: list[str] = []
    subclasses: list[tuple[str, str]] = []
    for relative, source in _src_modules():
        found, classes = unsafe_loading(source, relative)
        offences += found
        subclasses += classes
    assert not offences, "unsafe loading in src/:\n" + "\n".join(offences)
    assert subclasses == [RESTRICTED_UNPICKLER], f"unpickler subclasses in src/: {subclasses}"


class _Harmless:
    """Pickles to a call of ``os.getpid``: what a malicious pickle does with ``os.system``."""

    def __reduce__(self):
        return os.getpid, ()


def test_the_sanctioned_unpickler_is_restricted() -> None:
    """The one exception really is an allow-list unpickler: numpy and containers in, code out."""
    from privkd.data import embedded

    cls = embedded._NumpyOnlyUnpickler
    assert issubclass(cls, pickle.Unpickler) and "find_class" in vars(cls)
    assert {module for module, _ in embedded._ALLOWED_GLOBALS} <= {"numpy", "numpy.core.multiarray",
                                                                    "numpy._core.multiarray", "_codecs"}
    for protocol in (2, 3, 4):
        data = {"X": [np.arange(6.0).reshape(2, 3)], "y": np.array([1, 2]), "name": "watch", "n": (1, 2.5, None)}
        loaded = embedded.restricted_loads(pickle.dumps(data, protocol=protocol))
        assert loaded.keys() == data.keys() and loaded["name"] == "watch" and loaded["n"] == (1, 2.5, None)
        np.testing.assert_array_equal(loaded["X"][0], data["X"][0])
        np.testing.assert_array_equal(loaded["y"], data["y"])
        for payload in (_Harmless(), [np.zeros(2), _Harmless()]):
            with pytest.raises(pickle.UnpicklingError, match="refusing"):
                embedded.restricted_loads(pickle.dumps(payload, protocol=protocol))


def test_the_embedded_npy_loader_uses_the_restricted_unpickler(tmp_path: Path) -> None:
    """``load_watch_recordings`` reads a pickled .npy without ``np.load(allow_pickle=True)``."""
    from privkd.data.embedded import load_watch_recordings

    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.array({"X": [np.ones((4, 6))], "y": [1]}, dtype=object), allow_pickle=True)
    np.save(bad, np.array({"X": [_Harmless()]}, dtype=object), allow_pickle=True)
    assert load_watch_recordings(good)["X"][0].shape == (4, 6)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_watch_recordings(bad)
