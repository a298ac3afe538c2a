"""``benchmarks/gpu_check.py`` runs its checks with the CPU as the device (what CI can run), prints one
table, and exits non-zero when a comparison is outside its tolerance."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def gpu_check(tmp_path, monkeypatch, *args: str) -> subprocess.CompletedProcess:
    monkeypatch.setenv("PRIVKD_CACHE", str(tmp_path / "cache"))
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--workdir", str(tmp_path),
                           *args], check=False, capture_output=True, text=True, timeout=1500)


@pytest.mark.slow
def test_every_check_runs_on_the_cpu_and_passes(tmp_path, monkeypatch):
    result = gpu_check(tmp_path, monkeypatch)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith("check ") and "status" in out.splitlines()[0]
    for row in ("cuda available", "sinkhorn float32", "sinkhorn float64", "structural loss bf16",
                "demo baseline val/loss vs cpu", "ddp, 1 device", "r3d_18 train step", "peak resident memory"):
        assert row in out, row
    assert "FAIL" not in out and "0 failed" in out
    assert "On a GPU these rows compare" in out  # says what it would compare with CUDA


def test_a_comparison_outside_its_tolerance_exits_non_zero(tmp_path, monkeypatch):
    """bf16 autocast moves the structural loss a little on any device, so a zero tolerance fails it."""
    result = gpu_check(tmp_path, monkeypatch, "--checks", "sinkhorn,structural", "--tolerance", "0")
    assert result.returncode == 1, result.stdout + result.stderr
    failing = [line for line in result.stdout.splitlines() if line.endswith("FAIL")]
    assert [line.split()[0] for line in failing] == ["structural"]
    assert "1 failed" in result.stdout


def test_unknown_check_is_refused(tmp_path, monkeypatch):
    result = gpu_check(tmp_path, monkeypatch, "--checks", "sinkhorn,warp")
    assert result.returncode == 2 and "unknown checks ['warp']" in result.stderr
