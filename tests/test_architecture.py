"""The shape docs/architecture.md describes holds: imports run one way, no import loop, small files."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import privkd

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 450


def test_import_contracts_hold():
    """import-linter's layers and acyclic-siblings contracts in pyproject.toml."""
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if linter is None:
        pytest.fail("lint-imports is missing: install the test extra (pip install -e '.[test]')")
    result = subprocess.run([linter, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_source_file_is_over_450_lines():
    package = Path(privkd.__file__).parent
    long = {str(p.relative_to(package)): n for p in package.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
