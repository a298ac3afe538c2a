"""Portable CPU kernels: pinned before torch loads, and they change which kernels run."""

import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from privkd.cli import app
from privkd.portable import PORTABLE_ENV

# A few training steps of a small conv network: their weights' hash and the ISA torch runs.
STEPS = """
import hashlib, privkd, torch
from torch import nn
torch.manual_seed(0); torch.set_num_threads(1)
net = nn.Sequential(nn.Conv1d(3, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(), nn.Conv1d(32, 32, 5, padding=2),
                    nn.Flatten(), nn.Linear(32 * 100, 7))
opt = torch.optim.Adam(net.parameters(), 1e-3)
x, y = torch.randn(128, 3, 100), torch.randint(0, 7, (128,))
for _ in range(5):
    loss = nn.functional.cross_entropy(net(x), y); opt.zero_grad(); loss.backward(); opt.step()
print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest(),
      torch.backends.cpu.get_cpu_capability())
"""


def steps(**env: str) -> tuple[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in (*PORTABLE_ENV, "PRIVKD_PORTABLE")}
    done = subprocess.run([sys.executable, "-c", STEPS], env={**clean, **env}, capture_output=True, text=True,
                          timeout=300, check=True)
    digest, capability = done.stdout.split()
    return digest, capability


def test_privkd_portable_pins_the_kernels_before_torch_loads():
    portable = steps(PRIVKD_PORTABLE="1")
    assert portable == steps(**PORTABLE_ENV)  # the same kernels as pinning them by hand
    assert portable[1] == "AVX2"


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="needs an AVX-512 processor")
def test_on_an_avx512_processor_the_default_kernels_round_differently():
    """The cross-processor difference, reproduced on one machine: AVX-512 kernels against AVX2 ones."""
    assert steps()[0] != steps(PRIVKD_PORTABLE="1")[0]


def test_portable_after_torch_is_loaded_is_refused_with_the_fix():
    result = CliRunner().invoke(app, ["--portable", "data", "info", "embedded"])
    assert result.exit_code == 2 and "PRIVKD_PORTABLE=1" in result.output
