"""Repository safety: no credentials in the sources, and no unsafe deserialisation in ``src/``.

Files scanned: the project's own sources as git would track them, i.e. ``src/``, ``tests/``,
``benchmarks/``, ``.ci/`` and the top-level files (README, Makefile, pyproject.toml, ...),
minus what ``.gitignore`` ignores (``*.egg-info``, ``.venv``, caches). Found by walking the
tree rather than ``git ls-files`` so the test also runs from an sdist or a copy without ``.git``.

The credential patterns are assembled from pieces (``"AK" + "IA"``), so this file, which is
scanned like any other, does not match its own patterns.
"""

from __future__ import annotations

import ast
import fnmatch
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("src", "tests", "benchmarks", ".ci")
ALWAYS_SKIPPED = {".git", ".hypothesis", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache",
                  ".mypy_cache", "node_modules"}
MAX_BYTES = 2 * 2**20


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


def _repository_files() -> list[Path]:
    """Relative paths of the files to scan (sorted)."""
    patterns = _ignore_patterns()
    found: list[Path] = [p.relative_to(ROOT) for p in ROOT.iterdir() if p.is_file()]
    for name in SOURCE_DIRS:
        for dirpath, dirnames, filenames in os.walk(ROOT / name):
            here = Path(dirpath).relative_to(ROOT)
            dirnames[:] = [d for d in dirnames if not _ignored(here / d, patterns)]
            found += [here / f for f in filenames]
    return sorted(p for p in found if not _ignored(p, patterns))


def _text_lines(relative: Path) -> list[str] | None:
    """The lines of a text file; ``None`` for binary, oversized or vanished files."""
    try:
        data = (ROOT / relative).read_bytes()
    except OSError:  # deleted by someone else mid-scan
        return None
    if len(data) > MAX_BYTES or b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace").splitlines()


def test_the_scan_covers_the_sources() -> None:
    files = {p.as_posix() for p in _repository_files()}
    for expected in ("README.md", "Makefile", "pyproject.toml", "src/privkd/__init__.py", "tests/test_safety.py",
                     "src/privkd/data/embedded.py"):
        assert expected in files, f"{expected} is not scanned"
    assert any(f.startswith("src/privkd/configs/") and f.endswith(".yaml") for f in files), "configs not scanned"
    assert not any("egg-info" in f or "__pycache__" in f for f in files), "ignored build output is scanned"


# ============================================================================ credentials

# A literal secret value: 16+ characters without quotes or whitespace.
_VALUE = r"[^\s\"'`]{16,}"
# Names whose value is a secret: api_key / apikey / WANDB_API_KEY / secret_key / access_key /
# auth_token / hf_token / password / passwd, with any prefix ("comet_ml.api_key", "WANDB_").
_KEY = (r"(?<![A-Za-z0-9])(?:[A-Za-z0-9]+[_.-])*(?:api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?key"
        r"|auth[_-]?token|" + "to" + r"ken|" + "pass" + r"(?:word|wd))")
# `=` or `:` (not `==`), optionally after a type annotation (`api_key: str = ...`) or a closing quote.
_ASSIGN = r"[\"']?\s*(?::\s*[A-Za-z_][\w\[\], |.]*?\s*)?(?<![=!<>])(?:=(?!=)|:)\s*"

SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "AWS access key id": re.compile(r"(?<![A-Z0-9])(?:" + "AK" + "IA|" + "AS" + r"IA)[0-9A-Z]{16}(?![A-Z0-9])"),
    "private key block": re.compile("-----" + "BEGIN" + r"(?: [A-Z0-9]+)* " + "PRIVATE" + r" KEY-----"),
    "GitHub token": re.compile(r"(?<![A-Za-z0-9])(?:" + "gh" + r"[pousr]_[A-Za-z0-9]{20,}|" + "github" +
                               r"_pat_[A-Za-z0-9_]{20,})"),
    "Slack token": re.compile(r"(?<![A-Za-z0-9])" + "xo" + r"x[baprs]-[A-Za-z0-9-]{10,}"),
    "OpenAI-style key": re.compile(r"(?<![A-Za-z0-9-])" + "s" + r"k-(?:proj-)?[A-Za-z0-9]{20,}"),
    "hard-coded secret (quoted)": re.compile(r"(?i)" + _KEY + _ASSIGN + r"([\"'])(" + _VALUE + r")\1"),
}
# Outside Python an unquoted value is a literal too (YAML, .env, shell, Makefile, TOML, INI);
# in Python it is an expression (`token = os.environ[...]`), so this one skips .py files.
UNQUOTED_SECRET = re.compile(r"(?i)" + _KEY + _ASSIGN + r"(" + _VALUE + r")\s*(?:$|[#,;])")


def _placeholder(value: str) -> bool:
    """Templated or obviously fake values: `${VAR}`, `$VAR`, `{{ x }}`, `<your key>`, `xxxx...`, `...`."""
    return (value.startswith(("$", "{", "<", "%(")) or "..." in value or len(set(value)) <= 2
            or not any(c.isalnum() for c in value))


def find_secrets(text: str, name: str) -> list[tuple[int, str]]:
    """``(line number, kind)`` of every key-like string in ``text`` (a file called ``name``)."""
    hits = []
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in SECRET_PATTERNS.items():
            for match in pattern.finditer(line):
                if kind.startswith("hard-coded") and _placeholder(match.group(2)):
                    continue
                hits.append((number, kind))
        if not name.endswith(".py"):
            for match in UNQUOTED_SECRET.finditer(line):
                value = match.group(1)
                # An unquoted literal secret mixes letters and digits; words and numbers are config.
                if not _placeholder(value) and re.search(r"\d", value) and re.search(r"[A-Za-z]", value):
                    hits.append((number, "hard-coded secret (unquoted)"))
    return hits


def _planted() -> list[tuple[str, str]]:
    """(file name, text) pairs that must each be caught; assembled so this file holds none of them."""
    body = "A1b2C3d4E5f6G7h8J9k0"
    return [
        ("a.py", "aws = '" + "AK" + "IA" + "ABCDEFGHIJKLMNOP" + "'"),
        ("key.pem", "-----" + "BEGIN RSA " + "PRIVATE" + " KEY-----"),
        ("k.txt", "-----" + "BEGIN " + "PRIVATE" + " KEY-----"),
        ("a.py", "gh = '" + "gh" + "p_" + body * 2 + "'"),
        ("a.py", "gh = '" + "github" + "_pat_" + body + "_" + body + "'"),
        ("a.sh", "SLACK=" + "xo" + "xb-" + "123456789012-" + body),
        ("a.py", "client = OpenAI(" + "api_key='" + "s" + "k-" + body + "')"),
        ("a.py", "api" + "_key = '" + body + "'"),
        ("a.py", "api" + "_key: str = \"" + body + "\""),
        ("a.py", "comet_ml.init(project_name='x', " + "api" + "_key=\"" + body + "\")"),
        ("c.yaml", "comet_ml:\n  " + "api" + "_key: " + body),
        ("c.yaml", "to" + "ken: '" + body + "'"),
        ("c.json", "{\"" + "to" + "ken\": \"" + body + "\"}"),
        ("a.py", "login(" + "pass" + "word=\"" + body + "\")"),
        (".env", "pass" + "word=" + body),
        (".env", "export WANDB_API" + "_KEY=" + body.lower()),
        ("Makefile", "HF_TO" + "KEN = " + body),
    ]


NOT_SECRETS = [
    ("a.py", "token = os.environ['HF_" + "TOKEN']"),
    ("a.py", "api" + "_key = None"),
    ("a.py", "password = getpass.getpass('Password: ')"),
    ("a.py", "if token == '" + "A1b2C3d4E5f6G7h8J9k0" + "':"),
    ("a.py", "n_tokens = len(tokenizer_for_the_model_2)"),
    ("a.py", "model.eval()  # see the ghp_ and sk- prefixes"),
    ("c.yaml", "max_tokens: 300000000000000000"),
    ("c.yaml", "tokenizer: bert-base-uncased-v2-large"),
    ("c.yaml", "api" + "_key: ${WANDB_API_KEY_FROM_ENVIRONMENT}"),
    ("c.yaml", "api" + "_key: <your-api-key-goes-here-123>"),
    ("README.md", "pip install scikit-learn-intelex-2024"),
]


@pytest.mark.parametrize("name, text", _planted())
def test_the_detector_catches_planted_secrets(name: str, text: str) -> None:
    assert find_secrets(text, name), f"not detected: {text!r}"


@pytest.mark.parametrize("name, text", NOT_SECRETS)
def test_the_detector_ignores_ordinary_code_and_config(name: str, text: str) -> None:
    assert find_secrets(text, name) == []


def test_no_credentials_in_the_repository() -> None:
    found = []
    for relative in _repository_files():
        lines = _text_lines(relative)
        if lines is not None:
            found += [f"{relative.as_posix()}:{n}: {kind}" for n, kind in find_secrets("\n".join(lines), relative.name)]
    assert not found, "key-like strings (move them to the environment / a secrets store):\n" + "\n".join(found)


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
              "np.load(p)\nnp.load(p, allow_pickle=False, mmap_mode='r')\nmodel.eval()\nnet.train().eval()\n")
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
