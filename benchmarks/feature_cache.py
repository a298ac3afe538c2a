"""Per-epoch training time with a frozen R3D-18: cached backbone tokens vs recomputing them.

Usage: ``python benchmarks/feature_cache.py [--clips N] [--frames T] [--size S] [--epochs E]``

A clip dataset is generated (random uint8 video, 4 subjects, 2 classes) and a baseline
video-only network with a frozen R3D-18 is trained for ``E`` epochs twice, measured in the
same run: once pushing every clip through the backbone at every step (``cache_features:
false``), once reading the tokens computed once and cached on disk (``cache_features: true``).
Printed: the one-off cache build time, the median epoch time of each, their ratio, and after
how many epochs the cache has paid for itself. Defaults are sized for a 2-core CPU; the
papers' clips are ``--frames 16 --size 112``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from privkd.config.loading import config_from_dict
from privkd.data import read_info, write_streamed_dataset
from privkd.data.loaders import make_loader
from privkd.data.opening import open_dataset
from privkd.methods.registry import build_module
from privkd.training.feature_cache import frozen_backbone_tokens
from privkd.training.fit import seed_everything


def clip_dataset(path: Path, clips: int, frames: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    return write_streamed_dataset(
        path, sample_shapes={"video": (3, frames, size, size)},
        samples=({"video": rng.integers(0, 256, (3, frames, size, size), dtype=np.uint8)} for _ in range(clips)),
        labels=[i % 2 for i in range(clips)], subjects=[f"s{i % 4}" for i in range(clips)], task="classification",
        class_names=["BL1", "PA4"], modality_kinds={"video": "video"}, uint8_modalities=["video"],
        sampling_rates={"video": 25.0},
    )


def epoch_times(data: Path, cache: bool, epochs: int, batch_size: int) -> tuple[float, list[float]]:
    """Seconds to open the dataset (building the cache when asked) and of each training epoch."""
    cfg = config_from_dict({
        "methods": ["baseline"], "data": {"path": str(data), "prevalent": ["video"], "privileged": []},
        "model": {"backbones": {"video": "r3d_18"}, "frozen_backbones": ["video"], "cache_features": cache},
        "training": {"batch_size": batch_size, "progress_bar": False},
    })
    info = read_info(data)
    start = time.perf_counter()
    dataset = open_dataset(cfg, info, data, frozen_backbone_tokens(cfg, info, data, progress=lambda _: None))
    opened = time.perf_counter() - start
    seed_everything(0)
    module = build_module("baseline", cfg, info)
    module.train()
    optimizer = module.configure_optimizers()
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        for batch in make_loader(dataset, cfg.training, train=True, seed=epoch):
            loss = module.weighted_total(module.loss_terms(batch))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return opened, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PRIVKD_CACHE"] = str(Path(tmp) / "cache")
        data = clip_dataset(Path(tmp) / "clips.h5", args.clips, args.frames, args.size)
        _, recomputed = epoch_times(data, cache=False, epochs=args.epochs, batch_size=args.batch_size)
        build, cached = epoch_times(data, cache=True, epochs=args.epochs, batch_size=args.batch_size)
    slow, fast = statistics.median(recomputed), statistics.median(cached)
    print(f"R3D-18 frozen, {args.clips} clips of 3x{args.frames}x{args.size}x{args.size}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, median of {args.epochs} epochs")
    print(f"  epoch, recomputing the backbone : {slow:8.3f} s")
    print(f"  epoch, reading cached tokens    : {fast:8.3f} s")
    print(f"  one-off cache build             : {build:8.3f} s")
    print(f"  ratio recomputed / cached       : {slow / fast:8.1f}x")
    print(f"  cache pays for itself after     : {build / max(slow - fast, 1e-9):8.2f} epochs")


if __name__ == "__main__":
    main()
